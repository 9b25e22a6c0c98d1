"""Real releases side by side: three `dhash serve` processes of this checkout on one port (a
stable one, a good canary and a canary whose extractions fail half the time, via the service's
fault settings), real traffic from the load generator, the weighted program steering the
canary's share, each release's own /metrics read through the port, and the judge on them."""

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
        "DHASH_SHUTDOWN_GRACE_SECONDS": "1",
    }
    with contextlib.ExitStack() as stack:
        out: dict[str, ServeProcess] = {}
        for name, faults in (
            ("stable", {}),
            ("good", {}),
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
    members = map_members(port, classify, members=3)
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
    assert members.canary == (2,) and members.stable == (0,)
    last = judgements[-1]
    assert last.action is Action.ABORT, [j.reason for j in judgements]
    assert any(e.check == "failures vs stable" and e.worse for e in last.evidence)
    # stable served every request it got; the failures are the canary's ingests
    assert load.result.requests > 0


def test_a_canary_like_stable_takes_each_step_without_a_failed_request(
    releases: dict[str, ServeProcess],
) -> None:
    config = JudgeConfig(
        steps=(Step(5, 2.0), Step(25, 2.0), Step(50, 2.0)), min_samples=3, max_wait_seconds=4.0
    )
    judgements, load, members = _judge(releases, "good", config, seconds=14.0)
    assert members.canary == (1,)
    actions = [j.action for j in judgements]
    assert Action.ABORT not in actions, [j.reason for j in judgements]
    assert actions.count(Action.ADVANCE) == 2 and actions[-1] is Action.PROMOTE, actions
    assert load.result.failed == 0, load.result.failures[:5]
    f = next(e for e in judgements[-1].evidence if e.check == "failures vs stable")
    assert "canary 0/" in f.detail  # real extractions were counted on both sides
