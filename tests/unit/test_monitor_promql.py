"""The PromQL math against golden cases in promqltest format, checked by promtool as well."""

from __future__ import annotations

import math
import subprocess
from pathlib import Path

import pytest

from dhash_rollout.monitor.promql import Bucket, Point, bucket_quantile, increase
from tests.support.prometheus_bin import need
from tests.support.promqltest import Case, Eval, evaluate, parse, to_promtool

GOLDEN = Path(__file__).parent / "promql" / "golden.test"
CASES = parse(GOLDEN.read_text(encoding="utf-8"))
EVALS = [(case, e) for case in CASES for e in case.evals]


def _same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


@pytest.mark.parametrize(("case", "ev"), EVALS, ids=[f"{e.expr} @{e.at_text}" for _, e in EVALS])
def test_golden_case_is_computed_exactly(case: Case, ev: Eval) -> None:
    got = sorted(evaluate(case, ev.expr, ev.at_s), key=lambda r: sorted(r[0].items()))
    want = sorted(ev.expected, key=lambda r: sorted(r[0].items()))
    assert [labels for labels, _ in got] == [labels for labels, _ in want]
    assert all(_same(g, w) for (_, g), (_, w) in zip(got, want, strict=True)), (got, want)


def test_the_real_promtool_agrees_with_every_golden_value(tmp_path: Path) -> None:
    # promtool compares floats exactly and NaN never equals NaN, so NaN cases stay ours only.
    finite = [
        Case(c.series, [e for e in c.evals if not any(math.isnan(v) for _, v in e.expected)],
             c.interval_text)
        for c in CASES
    ]  # fmt: skip
    path = tmp_path / "golden.yml"
    path.write_text(to_promtool([c for c in finite if c.evals]), encoding="utf-8")
    done = subprocess.run(
        [need("promtool"), "test", "rules", str(path)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


@pytest.mark.parametrize(
    ("points", "expected"),
    [
        ([], None),
        ([Point(0, 3)], None),
        ([Point(0, 0), Point(60, 6), Point(120, 12)], 12.0),
        ([Point(0, 0), Point(60, 6), Point(120, 2)], 8.0),  # a reset: 6 before the drop
    ],
)
def test_increase_over_a_full_range(points: list[Point], expected: float | None) -> None:
    assert increase(points, 0, 120) == expected


@pytest.mark.parametrize(
    ("q", "expected"),
    [(-0.1, -math.inf), (1.5, math.inf), (0.0, 0.0), (1.0, 1.0)],
)
def test_quantile_outside_and_at_the_ends(q: float, expected: float) -> None:
    buckets = [Bucket(0.5, 2), Bucket(1.0, 4), Bucket(math.inf, 4)]
    assert bucket_quantile(q, buckets) == expected


def test_quantile_of_buckets_with_equal_bounds_coalesces_them() -> None:
    split = [Bucket(1.0, 1), Bucket(1.0, 1), Bucket(2.0, 4), Bucket(math.inf, 4)]
    assert bucket_quantile(0.5, split) == bucket_quantile(0.5, [Bucket(1.0, 2), Bucket(2.0, 4),
                                                                Bucket(math.inf, 4)])  # fmt: skip
