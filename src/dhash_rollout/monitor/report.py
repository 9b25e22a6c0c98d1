"""The one-page HTML report: "why did it roll back?" answered offline, no script, no CDN.

Drawn from the ledger only: the verdict and its evidence first, then one inline-SVG plot per
gate over the window with its threshold and warn lines, the failing poll marked, and the
rollback marked when the controller passes :class:`RollbackMark` (it rewrites the report after
acting, with the same ledger).
"""

from __future__ import annotations

import html
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dhash_rollout.monitor.ledger import read_rows

WIDTH, HEIGHT, PAD = 640, 180, 40


@dataclass(frozen=True)
class RollbackMark:
    at: float  # epoch seconds the rollback started
    outcome: str  # done / failed
    detail: str = ""


def _when(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds")


def _num(value: object) -> str:
    return "—" if value is None else f"{float(value):.4g}"  # type: ignore[arg-type]


def _plot(
    gate: str,
    points: Sequence[dict[str, Any]],
    t0: float,
    t1: float,
    rollback: RollbackMark | None,
) -> str:
    values = [float(p["value"]) for p in points if p.get("value") is not None]
    threshold = float(points[-1]["threshold"]) if points else 0.0
    warn = points[-1].get("warn") if points else None
    top = max([*values, threshold * 1.25, 1e-9])
    span = max(t1 - t0, 1e-9)

    def x(t: float) -> float:
        return PAD + (WIDTH - 2 * PAD) * (t - t0) / span

    def y(v: float) -> float:
        return float(HEIGHT - PAD / 2 - (HEIGHT - PAD) * (v / top))

    parts = [
        f'<svg viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" '
        f'role="img" aria-label="{html.escape(gate)}">',
        f'<rect x="{PAD}" y="{PAD / 2}" width="{WIDTH - 2 * PAD}" '
        f'height="{HEIGHT - PAD}" fill="#fafafa" stroke="#ccc"/>',
    ]
    parts.append(
        f'<line class="threshold" x1="{PAD}" x2="{WIDTH - PAD}" y1="{y(threshold):.1f}" '
        f'y2="{y(threshold):.1f}" stroke="#c00" stroke-dasharray="6 3"/>'
        f'<text x="{WIDTH - PAD + 2}" y="{y(threshold):.1f}" font-size="10" fill="#c00">'
        f"{threshold:g}</text>"
    )
    if warn is not None:
        parts.append(
            f'<line class="warn" x1="{PAD}" x2="{WIDTH - PAD}" y1="{y(float(warn)):.1f}" '
            f'y2="{y(float(warn)):.1f}" stroke="#e90" stroke-dasharray="3 3"/>'
            f'<text x="{WIDTH - PAD + 2}" y="{y(float(warn)):.1f}" font-size="10" '
            f'fill="#e90">{float(warn):g}</text>'
        )
    line = [(x(p["at"]), y(p["value"])) for p in points if p.get("value") is not None]
    if line:
        path = " ".join(f"{px:.1f},{py:.1f}" for px, py in line)
        parts.append(f'<polyline fill="none" stroke="#06c" stroke-width="1.5" points="{path}"/>')
    for p in points:
        px = x(p["at"])
        if p.get("value") is None:
            parts.append(
                f'<circle cx="{px:.1f}" cy="{HEIGHT - PAD / 2:.1f}" r="2" fill="#999">'
                f"<title>{html.escape(p['status'])}</title></circle>"
            )
            continue
        colour = {"fail": "#c00", "breach": "#f60", "warn": "#e90"}.get(p["status"], "#06c")
        radius = 5 if p["status"] == "fail" else 2.5
        cls = ' class="violation"' if p["status"] == "fail" else ""
        parts.append(
            f'<circle{cls} cx="{px:.1f}" cy="{y(p["value"]):.1f}" r="{radius}" fill="{colour}">'
            f"<title>{_num(p['value'])} ({html.escape(p['status'])})</title></circle>"
        )
    if rollback is not None:
        rx = x(min(max(rollback.at, t0), t1))
        parts.append(
            f'<line class="rollback" x1="{rx:.1f}" x2="{rx:.1f}" y1="{PAD / 2}" '
            f'y2="{HEIGHT - PAD / 2}" stroke="#609" stroke-width="2"/>'
            f'<text x="{rx + 3:.1f}" y="{PAD / 2 + 10}" font-size="10" fill="#609">rollback</text>'
        )
    parts.append(
        f'<text x="{PAD}" y="{HEIGHT - 4}" font-size="10">t+0</text>'
        f'<text x="{WIDTH - PAD - 30}" y="{HEIGHT - 4}" font-size="10">t+{t1 - t0:.0f}s</text>'
    )
    parts.append("</svg>")
    return "".join(parts)


def render_report(ledger_path: Path, rollback: RollbackMark | None = None) -> str:
    rows = read_rows(ledger_path)
    start = next((r for r in rows if r.get("kind") == "start"), {})
    polls = [r for r in rows if r.get("kind") == "poll"]
    verdict = next((r for r in reversed(rows) if r.get("kind") == "verdict"), None)
    notices = [r for r in rows if r.get("kind") == "notice"]
    acted = [r for r in rows if r.get("kind") == "rollback"]
    if rollback is None and acted:  # the controller's rollback, as the ledger recorded it
        last = acted[-1]
        outcome = "done" if last.get("ok") else "failed"
        rollback = RollbackMark(float(last["at"]), outcome, str(last.get("detail", "")))
    t0 = float(start.get("window_start", polls[0]["at"] if polls else 0.0))
    t1 = float(start.get("window_end", polls[-1]["at"] if polls else t0 + 1))
    by_gate: dict[str, list[dict[str, Any]]] = {}
    for poll in polls:
        for ev in poll["evaluations"]:
            by_gate.setdefault(ev["gate"], []).append(ev)
    title = f"dhash monitor — {start.get('environment', '?')} {start.get('version', '')}"
    e = html.escape
    out = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{e(title)}</title><style>body{{font:14px system-ui,sans-serif;margin:2em;"
        "max-width:760px}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;"
        "padding:3px 6px;text-align:left}}.failed{{color:#c00}}.passed{{color:#070}}"
        ".inconclusive,.interrupted{{color:#a60}}</style></head><body>",
        f"<h1>{e(title)}</h1>",
    ]
    if verdict is not None:
        out.append(
            f"<h2 class='{e(verdict['verdict'])}'>Verdict: {e(verdict['verdict'].upper())}</h2>"
            f"<p>{e(verdict.get('reason', ''))}</p>"
        )
        if verdict.get("failed_gate"):
            last = by_gate.get(verdict["failed_gate"], [{}])[-1]
            out.append(
                f"<p>Evidence: <b>{e(verdict['failed_gate'])}</b> = {_num(last.get('value'))} "
                f"over a window of {_num(last.get('window_s'))} s, {last.get('samples', 0)} "
                f"samples, threshold {_num(last.get('threshold'))}, at poll "
                f"{last.get('poll', '?')} ({_when(float(last.get('at', t0)))}): "
                f"{e(str(last.get('detail', '')))}</p>"
            )
    else:
        out.append("<h2>Monitoring in progress (no verdict yet)</h2>")
    if rollback is not None:
        out.append(
            f"<p class='rollback'>Rollback at {_when(rollback.at)}: {e(rollback.outcome)} "
            f"{e(rollback.detail)}</p>"
        )
    out.append(
        f"<p>Window {_when(t0)} → {_when(t1)}; source {e(str(start.get('source', '?')))}; "
        f"time scale {e(str(start.get('time_scale', 1)))}; {len(polls)} polls; "
        f"run {e(str(start.get('run_id', '?')))}.</p>"
    )
    out.append(
        "<table><tr><th>gate</th><th>last value</th><th>threshold</th><th>warn</th>"
        "<th>samples</th><th>status</th></tr>"
    )
    for gate, points in by_gate.items():
        last = points[-1]
        out.append(
            f"<tr><td>{e(gate)}</td><td>{_num(last.get('value'))}</td>"
            f"<td>{_num(last['threshold'])}</td><td>{_num(last.get('warn'))}</td>"
            f"<td>{last.get('samples', 0)}</td><td>{e(last['status'])}</td></tr>"
        )
    out.append("</table>")
    for gate, points in by_gate.items():
        out.append(f"<h3>{e(gate)}</h3>{_plot(gate, points, t0, t1, rollback)}")
    if notices:
        out.append("<h3>Notices</h3><ul>")
        out.extend(f"<li>{e(n.get('severity', ''))}: {e(n.get('title', ''))}</li>" for n in notices)
        out.append("</ul>")
    out.append(f"<p><small>ledger: {e(str(ledger_path))}</small></p></body></html>\n")
    return "".join(out)


def write_report(ledger_path: Path, out_path: Path, rollback: RollbackMark | None = None) -> Path:
    """Written to a temporary name and renamed: never a half-written page that looks valid."""
    text = render_report(ledger_path, rollback)
    tmp = out_path.with_name(f".{out_path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, out_path)
    return out_path
