"""The demo's judge: exit 0 only when every promise of the story held; each broken promise alone
fails the demo and is named."""

from __future__ import annotations

from dataclasses import replace

import pytest

from dhash_rollout.demo.outcome import PIPELINE, Expected, RunFacts, judge

EXPECTED = Expected(good_version="0.1.0+a", bad_version="0.1.0+b", gate="p95HashTime")

GOOD = RunFacts(
    a_served=True,
    library=16,
    backup_verified=True,
    phases=dict.fromkeys(PIPELINE, "done") | {"monitor": "failed", "auto_rollback": "done"},
    verdict="failed",
    failed_gate="p95HashTime",
    rolled_back=True,
    serving_after="0.1.0+a",
    report_exists=True,
    notices_file=5,
    notices_webhook=5,
    requests=900,
    failed_requests=0,
    load_covered=True,
    acked_writes=120,
    acked_while_b=40,
    lost_writes=0,
    decisions=2,
    lost_decisions=0,
)


def test_a_run_that_did_everything_passes_with_exit_0() -> None:
    judgement = judge(GOOD, EXPECTED)
    assert judgement.ok and judgement.exit_code == 0
    assert judgement.failed == ()
    assert len(judgement.checks) == 13


@pytest.mark.parametrize(
    ("change", "failed_check"),
    [
        ({"a_served": False}, "release A (0.1.0+a) served first"),
        ({"library": 0}, "library ingested"),
        ({"backup_verified": False}, "backup created and verified"),
        ({"phases": {p: "done" for p in PIPELINE if p != "backup"}},
         "B went through the whole guarded pipeline"),
        ({"phases": dict.fromkeys(PIPELINE, "done") | {"smoke": "skipped"}},
         "B went through the whole guarded pipeline"),
        ({"verdict": "passed", "failed_gate": None}, "the monitor caught B by p95HashTime"),
        ({"verdict": "inconclusive", "failed_gate": None}, "the monitor caught B by p95HashTime"),
        ({"failed_gate": "healthFailures"}, "the monitor caught B by p95HashTime"),
        ({"rolled_back": False}, "rolled back automatically"),
        ({"serving_after": "0.1.0+b"}, "A (0.1.0+a) serving again"),
        ({"serving_after": None}, "A (0.1.0+a) serving again"),
        ({"report_exists": False}, "HTML report written"),
        ({"notices_webhook": 0}, "notices sent to both channels"),
        ({"notices_file": 0}, "notices sent to both channels"),
        ({"webhook_rejected": 1}, "notices sent to both channels"),
        ({"failed_requests": 1}, "no failed request"),
        ({"requests": 0}, "no failed request"),
        ({"load_covered": False}, "the load spanned the whole deploy"),
        ({"lost_writes": 1}, "no acknowledged write lost"),
        ({"acked_writes": 0, "acked_while_b": 0}, "no acknowledged write lost"),
        ({"acked_while_b": 0}, "no acknowledged write lost"),
        ({"decisions": 0}, "every review decision kept"),
        ({"lost_decisions": 1}, "every review decision kept"),
    ],
)  # fmt: skip
def test_each_broken_promise_alone_fails_the_demo_and_is_named(
    change: dict[str, object], failed_check: str
) -> None:
    judgement = judge(replace(GOOD, **change), EXPECTED)  # type: ignore[arg-type]
    assert judgement.exit_code == 1
    assert [c.name for c in judgement.failed] == [failed_check]


def test_nothing_observed_fails_every_check() -> None:
    judgement = judge(RunFacts(), EXPECTED)
    assert judgement.exit_code == 1
    assert judgement.failed == judgement.checks


@pytest.mark.parametrize(
    ("facts", "check", "detail"),
    [
        (GOOD, "no acknowledged write lost",
         "120 of 120 acknowledged ingests kept (40 acknowledged while B served)"),
        (replace(GOOD, lost_writes=3), "no acknowledged write lost",
         "117 of 120 acknowledged ingests kept (40 acknowledged while B served)"),
        (replace(GOOD, failed_requests=2), "no failed request", "2 of 900 failed"),
        (replace(GOOD, failed_gate="healthFailures"), "the monitor caught B by p95HashTime",
         "verdict failed, failed gate healthFailures (expected: failed by p95HashTime)"),
        (replace(GOOD, phases={"preflight": "done", "backup": "failed"}),
         "B went through the whole guarded pipeline",
         "backup failed; install not run; migrate not run; activate not run; health not run; "
         "smoke not run"),
        (replace(GOOD, backup_verified=False), "backup created and verified",
         "no backup passed sha256sum -c"),
    ],
)  # fmt: skip
def test_the_evidence_says_what_was_seen(facts: RunFacts, check: str, detail: str) -> None:
    found = {c.name: c.detail for c in judge(facts, EXPECTED).checks}
    assert found[check] == detail
