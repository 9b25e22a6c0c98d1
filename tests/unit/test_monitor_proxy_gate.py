"""``proxyErrorRate`` as a case table: what the fleet's clients got through the proxy, and the
gate's rules over it (the same ``step`` as every window gate)."""

from __future__ import annotations

import pytest

from dhash_rollout.monitor.gates import (
    GateState,
    Measurement,
    ProxyWindow,
    Status,
    conclude,
    proxy_error_rate,
    step,
)
from dhash_rollout.monitor.gates_config import Gate, GateName
from dhash_rollout.runs.monitoring import Verdict

PROXY = GateName.PROXY_ERROR_RATE
CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx", "other")


def window(ok: float = 0, e4: float = 0, e5: float = 0, **kw: object) -> ProxyWindow:
    counts = dict.fromkeys(CLASSES, 0.0) | {"2xx": ok, "4xx": e4, "5xx": e5}
    return ProxyWindow(counts, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("seen", "value", "samples", "detail"),
    [
        # nothing through the proxy: no data, never 0 %
        (None, None, 0, "no responses through the proxy"),
        (window(), None, 0, "no responses through the proxy"),
        # a host answering 500 to half the requests
        (window(15, e5=15, server_5xx={"web2": 15, "web1": 0}), 50.0, 30,
         "15 5xx of 30 responses (web2 15); connection errors 0"),
        # the proxy's own 503s with no server up: 5xx once, and said as connection errors
        (window(15, e5=27, connection_errors=12, server_5xx={"web2": 15}), 64.2857, 42,
         "27 5xx of 42 responses (web2 15); connection errors 12"),
        # refused connections retried on another server: the clients got 200s
        (window(30, retries=4, redispatches=30), 0.0, 30, "retries 4, redispatches 30"),
        # 4xx are the clients' mistakes, not the fleet's errors (but they are responses)
        (window(10, e4=10), 0.0, 20, "0 5xx of 20 responses; connection errors 0"),
        # fractional (extrapolated) counts round for the sample count
        (window(19.6, e5=0.4), 2.0, 20, "0.4 5xx of 20 responses"),
    ],
)  # fmt: skip
def test_the_proxy_error_rate_is_5xx_over_responses(
    seen: ProxyWindow | None, value: float | None, samples: int, detail: str
) -> None:
    m = proxy_error_rate(seen, 60.0)
    assert m.value == (None if value is None else pytest.approx(value, abs=1e-4))
    assert m.samples == samples and m.window_s == 60.0 and m.error is None
    assert detail in m.detail


@pytest.mark.parametrize(
    ("rates", "statuses"),
    [
        ([0.0, 0.0, 0.0], [Status.OK, Status.OK, Status.OK]),
        ([4.0, 0.0], [Status.WARN, Status.OK]),  # over warn 3, under threshold 5
        ([9.0, 0.0, 9.0], [Status.BREACH, Status.OK, Status.BREACH]),  # never 2 in a row
        ([9.0, 9.0], [Status.BREACH, Status.FAIL]),  # sustained: 2 polls
        ([None, None], [Status.NO_DATA, Status.NO_DATA]),  # no traffic through the proxy
    ],
)
def test_the_proxy_gate_follows_the_window_gates_rules(
    rates: list[float | None], statuses: list[Status]
) -> None:
    gate = Gate.model_validate({"threshold": 5.0, "warn": 3.0, "timeWindow": 10, "minSamples": 20})
    state, seen = GateState(), []
    for i, rate in enumerate(rates):
        m = Measurement(rate, samples=0 if rate is None else 100)
        state, ev = step(PROXY, gate, state, m, at=30.0 * (i + 1), counting_window_s=600,
                         error_limit=4)  # fmt: skip
        seen.append(ev.status)
    assert seen == statuses


def test_too_few_responses_through_the_proxy_is_no_data_not_a_pass() -> None:
    gate = Gate.model_validate({"threshold": 5.0, "timeWindow": 10, "minSamples": 20})
    m = proxy_error_rate(window(5, e5=5), 60.0)  # 50 %, but 10 responses < minSamples 20
    state, ev = step(PROXY, gate, GateState(), m, at=30.0, counting_window_s=600, error_limit=4)
    assert ev.status is Status.NO_DATA and ev.value is None and ev.raw == 50.0
    assert conclude([(PROXY, gate)], {PROXY: state}).verdict is Verdict.INCONCLUSIVE
