"""Real A/A canaries: the judge on two `dhash serve` processes of this checkout on one port.

The few real runs beside bench_canary.py's generated streams: a stable process and a canary
process of the same code share the port (one SO_REUSEPORT group) and the database, the
weighted program gives the canary its steps (20 → 50 %), the load generator sends real
ingests, each release's own /metrics is read through the port at every poll, and the judge
decides. Same code on both sides, so every abort is a false abort.

    .venv/bin/python bench/bench_canary_real.py [runs] [polls per step] [seconds per poll]
"""

from __future__ import annotations

import contextlib
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.live_server import dhash_serve, free_port  # noqa: E402
from tests.support.load import LoadGenerator  # noqa: E402

from dhash_rollout.canary.judge import (  # noqa: E402
    Action,
    JudgeConfig,
    Poll,
    ReleasePoll,
    Step,
    observe,
    start,
)
from dhash_rollout.canary.metrics import increments, read_releases  # noqa: E402
from dhash_rollout.canary.quantiles import Histogram  # noqa: E402
from dhash_rollout.canary.traffic import answering_pid, map_members, set_weight  # noqa: E402
from dhash_rollout.targets.local.readiness import descends_from  # noqa: E402

TOKEN = "bench-canary-token-71c2"


WEIGHTS = (20.0, 50.0)  # a 5 % first step gets too few extractions in a 60 s load run here


def one_run(run: int, polls_per_step: int, poll_s: float) -> tuple[Action, int, int, int]:
    steps = tuple(Step(w, polls_per_step * poll_s) for w in WEIGHTS)
    config = JudgeConfig(steps=steps, min_samples=10, max_wait_seconds=20.0)
    with tempfile.TemporaryDirectory() as tmp_s, contextlib.ExitStack() as stack:
        tmp = Path(tmp_s)
        port = free_port()
        shared = {"DHASH_API_TOKENS": TOKEN, "DHASH_DATA_DIR": str(tmp / "data"),
                  "DHASH_SHUTDOWN_GRACE_SECONDS": "3"}  # fmt: skip
        procs = {}
        for name in ("stable", "canary"):
            (tmp / name).mkdir()
            procs[name] = stack.enter_context(dhash_serve(shared, tmp / name, port=port, name=name))
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                pid = answering_pid(port)
                if pid and descends_from(pid, procs[name].process.pid):
                    break

        def classify(pid: int) -> str | None:
            for name, served in procs.items():
                if descends_from(pid, served.process.pid):
                    return name
            return None

        members = map_members(port, classify, 2)
        set_weight(port, members, steps[0].weight)
        state = start(config)
        last = Action.CONTINUE
        n = 0
        t0 = time.monotonic()
        with LoadGenerator(port, TOKEN, threads=3, max_seconds=60, ingest_every=1,
                           seed_base=run * 1_000_000) as load:  # fmt: skip
            before = read_releases(port, classify)
            while state.done is None and time.monotonic() - t0 < 58:
                time.sleep(poll_s)
                now = read_releases(port, classify)
                poll = Poll(
                    time.monotonic() - t0,
                    increments(before.get("canary"), now["canary"], True)
                    if "canary" in now  # no answer this poll: nothing counted, not healthy
                    else ReleasePoll(0, 0, Histogram.empty(config.bounds), False),
                    increments(before.get("stable"), now["stable"], True),
                )  # fmt: skip
                before = {**before, **now}
                step = state.step
                state, j = observe(state, poll, config)
                last, n = j.action, n + 1
                if state.step != step and state.done is None:
                    set_weight(port, members, steps[state.step].weight)
        f = state.failures
        return last, n, f.canary_exposure, load.result.failed


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    polls_per_step = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    poll_s = float(sys.argv[3]) if len(sys.argv) > 3 else 1.0
    ends = []
    for r in range(runs):
        action, polls, canary_n, failed = one_run(r, polls_per_step, poll_s)
        ends.append(action)
        print(f"run {r + 1}: {action.value} after {polls} polls; {canary_n} canary extractions; "
              f"{failed} failed requests")  # fmt: skip
    aborts = sum(1 for a in ends if a is Action.ABORT)
    print(f"real A/A: {aborts}/{runs} aborted, "
          f"{sum(1 for a in ends if a is Action.PROMOTE)}/{runs} promoted")  # fmt: skip


if __name__ == "__main__":
    main()
