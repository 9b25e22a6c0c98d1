"""A small reader of Prometheus's promqltest text format (``load`` / ``eval instant``), the
subset our golden cases use, evaluated with :mod:`dhash_rollout.monitor.promql`; and the same
cases written as a ``promtool test rules`` file, so the real Prometheus checks them too.

Supported: ``load <dur>`` blocks with ``name{l="v"} <values>`` (``a+bxn``, ``a-bxn``, ``_``,
plain numbers); ``eval instant at <dur> <expr>`` followed by ``{labels} value`` lines, where
``expr`` is ``increase(sel[d])``, ``rate(sel[d])``, ``histogram_quantile(q, sel)`` or
``histogram_quantile(q, increase|rate(sel[d]))``.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from dataclasses import dataclass, field

from dhash_rollout.monitor.promql import Bucket, Point, bucket_quantile, increase, rate

LOOKBACK_S = 300.0
Labels = frozenset[tuple[str, str]]


def duration(text: str) -> float:
    total = 0.0
    for amount, unit in re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", text):
        total += float(amount) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]
    return total


def parse_labels(text: str) -> dict[str, str]:
    return dict(re.findall(r'(\w+)="([^"]*)"', text))


def expand(values: str) -> list[float | None]:
    out: list[float | None] = []
    for token in values.split():
        if token == "_":
            out.append(None)
            continue
        m = re.fullmatch(r"(-?[\d.]+)([+-])([\d.]+)x(\d+)", token)
        if m:
            start, sign, step, n = float(m[1]), m[2], float(m[3]), int(m[4])
            delta = step if sign == "+" else -step
            out.extend(start + delta * i for i in range(n + 1))
        else:
            out.append(float(token))
    return out


@dataclass
class Series:
    name: str
    labels: dict[str, str]
    values: str
    interval_s: float

    def points(self) -> list[Point]:
        values = enumerate(expand(self.values))
        return [Point(i * self.interval_s, v) for i, v in values if v is not None]


@dataclass
class Eval:
    at_s: float
    at_text: str
    expr: str
    expected: list[tuple[dict[str, str], float]] = field(default_factory=list)


@dataclass
class Case:
    series: list[Series]
    evals: list[Eval]
    interval_text: str


def parse(text: str) -> list[Case]:
    """Each ``load`` starts a case; the ``eval``s after it run against its series."""
    cases: list[Case] = []
    mode = ""
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].rstrip()
        if not line.strip():
            continue
        if line.startswith("load "):
            interval = line.split()[1]
            cases.append(Case([], [], interval))
            mode = "load"
        elif line.startswith("eval instant at "):
            at, expr = line.removeprefix("eval instant at ").split(" ", 1)
            cases[-1].evals.append(Eval(duration(at), at, expr.strip()))
            mode = "eval"
        elif mode == "load":
            m = re.fullmatch(r"\s+(\w+)(\{[^}]*\})?\s+(.+)", line)
            assert m, f"bad series line: {line!r}"
            labels = parse_labels(m[2] or "")
            cases[-1].series.append(Series(m[1], labels, m[3], duration(cases[-1].interval_text)))
        else:
            m = re.fullmatch(r"\s+(\{[^}]*\})?\s*(\S+)", line)
            assert m, f"bad expected line: {line!r}"
            value = math.nan if m[2] == "NaN" else float(m[2])
            cases[-1].evals[-1].expected.append((parse_labels(m[1] or ""), value))
    return cases


def _select(case: Case, selector: str) -> list[Series]:
    m = re.fullmatch(r"(\w+)(\{[^}]*\})?", selector.strip())
    assert m, f"unsupported selector {selector!r}"
    want = parse_labels(m[2] or "")
    return [
        s for s in case.series
        if s.name == m[1] and all(s.labels.get(k) == v for k, v in want.items())
    ]  # fmt: skip


def _range_vector(case: Case, inner: str, at: float) -> list[tuple[dict[str, str], float]]:
    m = re.fullmatch(r"(increase|rate)\((.+)\[(\w+)\]\)", inner.strip())
    assert m, f"unsupported range function {inner!r}"
    fn = increase if m[1] == "increase" else rate
    out = []
    for series in _select(case, m[2]):
        value = fn(series.points(), at - duration(m[3]), at)
        if value is not None:
            out.append((series.labels, value))
    return out


def _instant_vector(case: Case, selector: str, at: float) -> list[tuple[dict[str, str], float]]:
    out = []
    for series in _select(case, selector):
        recent = [p for p in series.points() if at - LOOKBACK_S < p.t <= at]
        if recent:
            out.append((series.labels, recent[-1].v))
    return out


def evaluate(case: Case, expr: str, at: float) -> list[tuple[dict[str, str], float]]:
    m = re.fullmatch(r"histogram_quantile\(([\d.]+),\s*(.+)\)", expr)
    if not m:
        return _range_vector(case, expr, at)
    q, inner = float(m[1]), m[2]
    vector = _range_vector(case, inner, at) if "[" in inner else _instant_vector(case, inner, at)
    groups: dict[Labels, list[Bucket]] = defaultdict(list)
    for labels, value in vector:
        rest = frozenset((k, v) for k, v in labels.items() if k != "le")
        groups[rest].append(Bucket(float(labels["le"]), value))
    return [(dict(key), bucket_quantile(q, b)) for key, b in groups.items()]


def _quote(labels: dict[str, str]) -> str:
    return "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"


def to_promtool(cases: list[Case]) -> str:
    """The cases as a ``promtool test rules`` file (YAML written by hand: JSON is YAML)."""
    import json

    tests = []
    for case in cases:
        tests.append(
            {
                "interval": case.interval_text,
                "input_series": [
                    {"series": s.name + _quote(s.labels), "values": s.values} for s in case.series
                ],
                "promql_expr_test": [
                    {
                        "expr": e.expr,
                        "eval_time": e.at_text,
                        "exp_samples": [
                            {"labels": _quote(labels), "value": value}
                            for labels, value in e.expected
                        ],
                    }
                    for e in case.evals
                ],
            }
        )
    return json.dumps({"rule_files": [], "evaluation_interval": "1m", "tests": tests}, indent=1)
