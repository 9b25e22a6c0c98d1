"""The canary's one-page HTML report: canary and stable side by side, from the poll ledger.

Like the monitor's report (``monitor/report.py``): offline, no script, no CDN, inline SVG. It is
drawn from what ``dhash canary status`` replays (the recorded polls and the judge's judgement
of each), so it shows exactly the evidence the controller acted on: the outcome and the last
judgement's checks first, then per poll each check's e-value against its abort line (1/(α/4)),
both releases' failure rate and P95 bucket bound so far, their extractions per poll and the
canary's weight, and a table of every poll. Pure: text in, text out; the controller writes it.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from dhash_rollout.canary.judge import JudgeConfig, Judgement, Poll
from dhash_rollout.canary.quantiles import Histogram

WIDTH, HEIGHT, PAD = 640, 200, 44
COLOURS = {"canary": "#c60", "stable": "#06c"}
CHECK_COLOURS = ("#c00", "#609", "#070", "#a60", "#555")


@dataclass(frozen=True)
class Header:
    version: str
    stable: str
    environment: str
    status: str
    reason: str
    run_id: str


def bucket_quantile(hist: Histogram, q: float) -> float | None:
    """The least bucket bound at or below which at least ``q`` of the observations fall (the
    histogram knows no more; None with no observation; ``inf`` past the last bound)."""
    total = hist.total
    if total == 0:
        return None
    need = q * total
    running = 0
    for bound, count in zip(hist.bounds, hist.counts, strict=False):
        running += count
        if running >= need:
            return bound
    return math.inf


Series = Mapping[str, Sequence[tuple[float, float]]]


def _plot(
    title: str, series: Series, *, colours: Mapping[str, str], hline: float | None = None,
    unit: str = "",
) -> str:  # fmt: skip
    """Lines over the canary's time (s), one per series; ``hline``: a dashed limit."""
    points = [p for s in series.values() for p in s if math.isfinite(p[1])]
    xs = [p[0] for p in points] or [0.0, 1.0]
    ys = [p[1] for p in points] + ([hline] if hline is not None else [])
    x0 = min(xs)
    x1 = max(*xs, x0 + 1e-9)
    y0, y1 = min([*ys, 0.0]), max([*ys, 0.0])
    y1 = y1 + (y1 - y0) * 0.08 if y1 - y0 > 1e-6 else y0 + 1.0  # all equal (e.g. no failure)

    def x(t: float) -> float:
        return PAD + (WIDTH - 2 * PAD) * (t - x0) / (x1 - x0)

    def y(v: float) -> float:
        return HEIGHT - PAD / 2 - (HEIGHT - PAD) * (v - y0) / (y1 - y0)

    e = html.escape
    out = [
        f'<svg viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" role="img" '
        f'aria-label="{e(title)}"><rect x="{PAD}" y="{PAD / 2}" width="{WIDTH - 2 * PAD}" '
        f'height="{HEIGHT - PAD}" fill="#fafafa" stroke="#ccc"/>'
    ]
    if hline is not None:
        out.append(
            f'<line class="limit" x1="{PAD}" x2="{WIDTH - PAD}" y1="{y(hline):.1f}" '
            f'y2="{y(hline):.1f}" stroke="#c00" stroke-dasharray="6 3"/>'
            f'<text x="{WIDTH - PAD + 2}" y="{y(hline):.1f}" font-size="10" fill="#c00">'
            f"{hline:.3g}{e(unit)}</text>"
        )
    for i, (name, pts) in enumerate(series.items()):
        finite = [(px, py) for px, py in pts if math.isfinite(py)]
        colour = colours.get(name, CHECK_COLOURS[i % len(CHECK_COLOURS)])
        if finite:
            path = " ".join(f"{x(px):.1f},{y(py):.1f}" for px, py in finite)
            out.append(
                f'<polyline class="series" data-series="{e(name)}" fill="none" '
                f'stroke="{colour}" stroke-width="1.5" points="{path}"/>'
            )
        out.append(
            f'<text x="{PAD + 4 + 150 * (i % 4)}" y="{PAD / 2 + 12 + 12 * (i // 4)}" '
            f'font-size="10" fill="{colour}">{e(name)}</text>'
        )
    out.append(
        f'<text x="{PAD}" y="{HEIGHT - 4}" font-size="10">t+{x0:.0f}s</text>'
        f'<text x="{WIDTH - PAD - 40}" y="{HEIGHT - 4}" font-size="10">t+{x1:.0f}s</text>'
        f'<text x="2" y="{PAD / 2 + 10}" font-size="10">{y1:.3g}{e(unit)}</text>'
        f'<text x="2" y="{HEIGHT - PAD / 2}" font-size="10">{y0:.3g}</text></svg>'
    )
    return "".join(out)


def _ms(value: float | None) -> str:
    if value is None:
        return "—"
    return "> last bucket" if math.isinf(value) else f"≤ {value * 1000:g} ms"


def render(
    header: Header, polls: Sequence[Poll], judgements: Sequence[Judgement], config: JudgeConfig
) -> str:
    e = html.escape
    title = f"dhash canary — {header.environment}: {header.version} beside {header.stable}"
    out = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{e(title)}</title><style>body{{font:14px system-ui,sans-serif;margin:2em;"
        "max-width:760px}table{border-collapse:collapse}td,th{border:1px solid #ccc;"
        "padding:3px 6px;text-align:left}.aborted,.rolled_back,.worse{color:#c00}"
        ".promoted{color:#070}.inconclusive,.interrupted,.running{color:#a60}</style>"
        "</head><body>",
        f"<h1>{e(title)}</h1>",
        f"<h2 class='{e(header.status)}'>{e(header.status.upper())}</h2>",
        f"<p>{e(header.reason)}</p>" if header.reason else "",
        f"<p>run {e(header.run_id)}; {len(polls)} polls; false-abort budget α = "
        f"{config.alpha:g} over the whole canary (α/4 per check); steps "
        + ", ".join(f"{s.weight:g}% for {s.seconds:g} s" for s in config.steps)
        + "</p>",
    ]
    last = judgements[-1] if judgements else None
    limit = 1.0 / config.check_alpha
    if last is not None:
        out.append(
            f"<h3>Last judgement (poll {len(judgements)}): {e(last.action.value)}</h3>"
            f"<p>{e(last.reason)}</p><table><tr><th>check</th><th>state</th><th>e-value</th>"
            f"<th>aborts at</th><th>evidence</th></tr>"
        )
        for ev in last.evidence:
            value = "—" if ev.e_value is None else f"{ev.e_value:.3g}"
            aborts = "—" if ev.e_value is None else f"{limit:g}"
            state = "WORSE" if ev.worse else "ok"
            out.append(
                f"<tr class='{'worse' if ev.worse else 'ok'}'><td>{e(ev.check)}</td>"
                f"<td>{state}</td><td>{value}</td><td>{aborts}</td><td>{e(ev.detail)}</td></tr>"
            )
        out.append("</table>")
    if polls:
        out.extend(_plots(polls, judgements, limit))
        out.append(_table(polls, judgements))
    else:
        out.append("<p>No poll recorded.</p>")
    out.append("</body></html>\n")
    return "".join(out)


def _plots(polls: Sequence[Poll], judgements: Sequence[Judgement], limit: float) -> list[str]:
    ats = [p.at for p in polls]
    checks: dict[str, list[tuple[float, float]]] = {}
    for at, j in zip(ats, judgements, strict=False):
        for ev in j.evidence:
            if ev.e_value is not None and ev.e_value > 0:
                checks.setdefault(ev.check, []).append((at, math.log10(ev.e_value)))
    rate: dict[str, list[tuple[float, float]]] = {"canary": [], "stable": []}
    p95: dict[str, list[tuple[float, float]]] = {"canary": [], "stable": []}
    seen: dict[str, list[tuple[float, float]]] = {"canary": [], "stable": []}
    sums = {"canary": [0, 0], "stable": [0, 0]}
    hists: dict[str, Histogram | None] = {"canary": None, "stable": None}
    for poll in polls:
        for name, rel in (("canary", poll.canary), ("stable", poll.stable)):
            sums[name][0] += rel.extractions
            sums[name][1] += rel.failures
            done, failed = sums[name]
            if done:
                rate[name].append((poll.at, 100.0 * failed / done))
            seen[name].append((poll.at, float(rel.extractions)))
            before = hists[name]
            hists[name] = rel.hash_times if before is None else before.plus(rel.hash_times)
            q = bucket_quantile(hists[name] or rel.hash_times, 0.95)
            if q is not None and math.isfinite(q):
                p95[name].append((poll.at, q * 1000.0))
    weight = {"canary weight": [(at, j.weight) for at, j in zip(ats, judgements, strict=False)]}
    return [
        "<h3>Evidence per check (log10 e-value; the dashed line aborts)</h3>",
        _plot("e-values", checks, colours={}, hline=math.log10(limit)),
        "<h3>Failure rate so far, canary and stable (%)</h3>",
        _plot("failure rate", rate, colours=COLOURS, unit="%"),
        "<h3>P95 hash time so far, canary and stable (bucket bound, ms)</h3>",
        _plot("p95", p95, colours=COLOURS, unit=" ms"),
        "<h3>Extractions per poll, canary and stable</h3>",
        _plot("extractions", seen, colours=COLOURS),
        "<h3>The canary's weight (% of new connections)</h3>",
        _plot("weight", weight, colours={"canary weight": COLOURS["canary"]}, unit="%"),
    ]


def _table(polls: Sequence[Poll], judgements: Sequence[Judgement]) -> str:
    e = html.escape
    rows = [
        "<h3>Every poll</h3><table><tr><th>#</th><th>t (s)</th><th>weight</th>"
        "<th>canary: extractions / failures / P95</th><th>stable: extractions / failures / P95"
        "</th><th>action</th></tr>"
    ]
    for n, (poll, j) in enumerate(zip(polls, judgements, strict=False), 1):
        cells = []
        for rel in (poll.canary, poll.stable):
            health = "" if rel.healthy is not False else " (no answer)"
            q = _ms(bucket_quantile(rel.hash_times, 0.95))
            cells.append(f"{rel.extractions} / {rel.failures} / {e(q)}{health}")
        rows.append(
            f"<tr><td>{n}</td><td>{poll.at:.1f}</td><td>{j.weight:g}%</td><td>{cells[0]}</td>"
            f"<td>{cells[1]}</td><td>{e(j.action.value)}</td></tr>"
        )
    rows.append("</table>")
    return "".join(rows)
