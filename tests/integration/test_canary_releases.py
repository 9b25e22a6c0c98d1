"""Real releases side by side: two `dhash serve` processes of this checkout on one port (a
stable one and a canary whose extractions fail half the time, via the service's fault
settings), real traffic from the load generator, the weighted program steering the canary's
share, each release's own /metrics read through the port, and the judge on them. (A good
canary stepped and promoted under load with no failed request: tests/e2e/test_canary_cli.py.)"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

import pytest

from dhash_rollout.canary.judge import Action, JudgeConfig, Judgement, Poll, Step, observe, start
from dhash_rollout.canary.metrics import increments, read_releases
from dhash_rollout.canary.traffic import Members, answering_pid, map_members, set_weight
from dhash_rollout.targets.local.readiness import descends_from
from tests.support.live_server import ServeProcess, dhash_serve, free_port
from tests.support.load import LoadGenerator

pytestmark = pytest.mark.slow
TOKEN = "canary-test-token-3f9a1c"


def _joined(served: ServeProcess, port: int, timeout: float = 30.0) -> None:
    """Until a fresh connection reaches the new process (the port already answers)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid = answering_pid(port)
        if pid and descends_from(pid, served.process.pid):
            return
    raise RuntimeError(f"the new dhash serve never answered:\n{served.log_text()}")


@pytest.fixture(scope="module")
def releases(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, ServeProcess]]:
    tmp = tmp_path_factory.mktemp("canary")
    port = free_port()
    shared = {
        "DHASH_API_TOKENS": TOKEN,
        "DHASH_DATA_DIR": str(tmp / "data"),  # one database, as canary and stable share
        "DHASH_SHUTDOWN_GRACE_SECONDS": "3",
    }
    with contextlib.ExitStack() as stack:
        out: dict[str, ServeProcess] = {}
        for name, faults in (
            ("stable", {}),
            ("bad", {"DHASH_FAULT_EXTRACTION_FAILURE_SHARE": "0.5"}),
        ):
            (tmp / name).mkdir()
            served = stack.enter_context(
                dhash_serve({**shared, **faults}, tmp / name, port=port, name=name)
            )
            _joined(served, port)
            out[name] = served
        yield out


def _classify(releases: dict[str, ServeProcess], canary: str):  # type: ignore[no-untyped-def]
    def which(pid: int) -> str | None:
        if descends_from(pid, releases["stable"].process.pid):
            return "stable"
        if descends_from(pid, releases[canary].process.pid):
            return "canary"
        return None

    return which


def _judge(
    releases: dict[str, ServeProcess], canary: str, config: JudgeConfig, seconds: float
) -> tuple[list[Judgement], LoadGenerator, Members]:
    port = releases["stable"].port
    classify = _classify(releases, canary)
    members = map_members(port, classify, members=2)
    state = start(config)
    judgements: list[Judgement] = []
    t0 = time.monotonic()
    with LoadGenerator(port, TOKEN, threads=3, max_seconds=seconds + 5, ingest_every=1,
                       seed_base=hash(canary) % 1000 * 10_000) as load:  # fmt: skip
        set_weight(port, members, config.steps[0].weight)
        before = read_releases(port, classify)
        while time.monotonic() - t0 < seconds and state.done is None:
            time.sleep(0.5)
            now = read_releases(port, classify)
            assert set(now) == {"canary", "stable"}, now
            poll = Poll(
                time.monotonic() - t0,
                increments(before.get("canary"), now["canary"], healthy=True),
                increments(before.get("stable"), now["stable"], healthy=True),
            )
            before = now
            previous = state.step
            state, j = observe(state, poll, config)
            judgements.append(j)
            if state.step != previous and state.done is None:
                set_weight(port, members, config.steps[state.step].weight)
        set_weight(port, members, 0)  # the canary out of rotation (abort or end of the test)
    return judgements, load, members


def test_a_failing_canary_is_aborted_on_its_own_metrics_while_stable_serves(
    releases: dict[str, ServeProcess],
) -> None:
    config = JudgeConfig(steps=(Step(30, 60.0),), min_samples=5, failure_rate_threshold_pct=None)
    judgements, load, members = _judge(releases, "bad", config, seconds=12.0)
    assert members.canary == (1,) and members.stable == (0,)
    last = judgements[-1]
    assert last.action is Action.ABORT, [j.reason for j in judgements]
    assert any(e.check == "failures vs stable" and e.worse for e in last.evidence)
    f = next(e for e in last.evidence if e.check == "failures vs stable")
    assert "stable 0/" in f.detail  # stable's own metrics: none of the injected failures
    assert load.result.requests > 0
