"""What the monitor shows and leaves behind: plain lines, the Rich table, the HTML report."""

from __future__ import annotations

import io
import json
from pathlib import Path

from dhash_rollout.monitor.gates import Evaluation, Status
from dhash_rollout.monitor.gates_config import GateName
from dhash_rollout.monitor.report import RollbackMark, render_report, write_report
from dhash_rollout.monitor.view import PlainView, RichView, make_view, plain_line


def _ev(gate: GateName, value: float | None, status: Status, at: float = 30.0) -> Evaluation:
    return Evaluation(
        gate=gate,
        at=at,
        poll=1,
        value=value,
        raw=value,
        samples=42,
        window_s=600.0,
        threshold=5.0,
        warn=3.0,
        status=status,
    )


def test_a_plain_line_names_each_gate_value_status_and_samples() -> None:
    line = plain_line(30.0, 3570.0, [_ev(GateName.EXTRACTION_FAILURE_RATE, 1.5, Status.OK)])
    assert line == "t+   30.0s left  3570.0s | extractionFailureRate=1.5% ok (n=42)"


def test_a_pipe_or_file_gets_plain_lines() -> None:
    assert isinstance(make_view("auto", "t", io.StringIO()), PlainView)


def test_the_rich_table_renders_each_gate_and_its_trend() -> None:
    out = io.StringIO()
    view = RichView("dhash monitor production", out)
    view.poll(30.0, 3570.0, [_ev(GateName.P95_HASH_TIME, 900.0, Status.OK)])
    view.poll(60.0, 3540.0, [_ev(GateName.P95_HASH_TIME, 2100.0, Status.BREACH, 60.0)])
    view.close()
    text = out.getvalue()
    assert "p95HashTime" in text and "2100 ms" in text and "breach" in text


def _ledger(tmp: Path) -> Path:
    evs = [
        _ev(GateName.EXTRACTION_FAILURE_RATE, v, s, 30.0 * n).to_row()
        for n, (v, s) in enumerate(
            [(1.0, Status.OK), (7.0, Status.BREACH), (8.0, Status.FAIL)], start=1
        )
    ]
    rows = [
        {
            "kind": "start",
            "environment": "production",
            "version": "1.2.0",
            "run_id": "r",
            "window_start": 0.0,
            "window_end": 3600.0,
            "source": "scrape",
            "time_scale": 1.0,
        }
    ]
    rows += [{"kind": "poll", "offset": e["at"], "at": e["at"], "evaluations": [e]} for e in evs]
    rows.append(
        {
            "kind": "verdict",
            "verdict": "failed",
            "reason": "extractionFailureRate = 8",
            "failed_gate": "extractionFailureRate",
        }
    )
    path = tmp / "ledger.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"torn": ')
    return path


def test_the_report_answers_why_it_rolled_back_on_one_offline_page(tmp_path: Path) -> None:
    page = render_report(_ledger(tmp_path), RollbackMark(95.0, "done", "to 1.1.0"))
    assert page.index("Verdict: FAILED") < page.index("<svg")  # the verdict first
    assert "Evidence: <b>extractionFailureRate</b> = 8" in page
    assert 'class="threshold"' in page and 'class="warn"' in page
    assert 'class="violation"' in page and 'class="rollback"' in page
    assert "<script" not in page and "://" not in page


def test_the_report_is_written_whole_or_not_at_all(tmp_path: Path) -> None:
    out = write_report(_ledger(tmp_path), tmp_path / "report.html")
    assert out.read_text().endswith("</html>\n")
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
