"""The demo's judge: from what the run really observed to one verdict, exit 0 or 1.

Pure (no I/O): ``rollout.py`` gathers :class:`RunFacts` from the journal, the monitor's ledger,
the notification log, the webhook receiver, the load generator and the service itself; this
module only decides. ``make demo`` is also a check, so every promise of the story is one
:class:`Check` here, and the demo exits 0 only when all of them hold: A served, the library and
a verified backup, B through the whole pipeline, the breach caught by the expected gate, the
automatic rollback, A serving again, the report and the notices, no failed request and no
acknowledged write or decision lost.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

# The deploy phases the issue names: preflight, backup, migrate, the zero-downtime switch
# (activate), smoke; install and health sit between them. ``skipped`` is not good enough: the
# story promises each of them ran against release B.
PIPELINE = ("preflight", "backup", "install", "migrate", "activate", "health", "smoke")


@dataclass(frozen=True)
class Expected:
    good_version: str  # release A
    bad_version: str  # release B
    gate: str  # the gate B's regression must trip


@dataclass(frozen=True)
class RunFacts:
    """What the run observed; a fact that could not be observed keeps its failing default."""

    a_served: bool = False  # /health answered with A's version before B was deployed
    library: int = 0  # reference images stored before the deploy
    backup_verified: bool = False  # `sha256sum -c` accepted the backup's checksum file
    phases: Mapping[str, str] = field(default_factory=dict)  # deploy phase -> status
    verdict: str | None = None  # the monitor's verdict
    failed_gate: str | None = None
    rolled_back: bool = False  # the deploy's automatic rollback finished ok
    serving_after: str | None = None  # the version /health reports at the end
    report_exists: bool = False
    notices_file: int = 0  # notices the file channel recorded during the run
    notices_webhook: int = 0  # Slack-format notices the loopback receiver accepted
    webhook_rejected: int = 0  # posts the receiver refused as not Slack-format
    requests: int = 0
    failed_requests: int = 0
    load_covered: bool = False  # the load ran from before the deploy until after it ended
    acked_writes: int = 0  # ingests acknowledged (201) during the whole run
    acked_while_b: int = 0  # of those, acknowledged while B served
    lost_writes: int = 0  # acknowledged image ids missing after the rollback
    decisions: int = 0  # review decisions the API acknowledged while B served
    lost_decisions: int = 0  # of those, missing or changed after the rollback


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


@dataclass(frozen=True)
class Judgement:
    checks: tuple[Check, ...]

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    @property
    def failed(self) -> tuple[Check, ...]:
        return tuple(c for c in self.checks if not c.ok)

    @property
    def exit_code(self) -> int:
        return 0 if self.ok else 1


def _pipeline(phases: Mapping[str, str]) -> Check:
    missing = [f"{p} {phases.get(p, 'not run')}" for p in PIPELINE if phases.get(p) != "done"]
    detail = "every phase done" if not missing else "; ".join(missing)
    return Check("B went through the whole guarded pipeline", not missing, detail)


def _caught(facts: RunFacts, expected: Expected) -> Check:
    caught = facts.verdict == "failed" and facts.failed_gate == expected.gate
    detail = f"verdict {facts.verdict or '-'}, failed gate {facts.failed_gate or '-'}"
    if not caught:
        detail += f" (expected: failed by {expected.gate})"
    return Check(f"the monitor caught B by {expected.gate}", caught, detail)


def _notices(facts: RunFacts) -> Check:
    ok = facts.notices_file > 0 and facts.notices_webhook > 0 and facts.webhook_rejected == 0
    detail = f"{facts.notices_file} in the file channel, {facts.notices_webhook} Slack-format"
    if facts.webhook_rejected:
        detail += f", {facts.webhook_rejected} refused by the receiver as malformed"
    return Check("notices sent to both channels", ok, detail)


def _writes(facts: RunFacts) -> Check:
    ok = facts.acked_writes > 0 and facts.acked_while_b > 0 and facts.lost_writes == 0
    detail = (
        f"{facts.acked_writes - facts.lost_writes} of {facts.acked_writes} acknowledged ingests "
        f"kept ({facts.acked_while_b} acknowledged while B served)"
    )
    return Check("no acknowledged write lost", ok, detail)


def _decisions(facts: RunFacts) -> Check:
    ok = facts.decisions > 0 and facts.lost_decisions == 0
    detail = f"{facts.decisions - facts.lost_decisions} of {facts.decisions} made while B served"
    return Check("every review decision kept", ok, detail)


def _flag(name: str, ok: bool, yes: str, no: str) -> Check:
    return Check(name, ok, yes if ok else no)


def judge(facts: RunFacts, expected: Expected) -> Judgement:
    good = expected.good_version
    checks = (
        _flag(
            f"release A ({good}) served first",
            facts.a_served,
            f"/health answered {good}",
            f"/health never answered {good}",
        ),
        _flag(
            "library ingested",
            facts.library > 0,
            f"{facts.library} reference images",
            "no reference image stored",
        ),
        _flag(
            "backup created and verified",
            facts.backup_verified,
            "sha256sum -c: OK",
            "no backup passed sha256sum -c",
        ),
        _pipeline(facts.phases),
        _caught(facts, expected),
        _flag(
            "rolled back automatically",
            facts.rolled_back,
            "the deploy's own automatic rollback finished",
            "no automatic rollback finished",
        ),
        Check(
            f"A ({good}) serving again",
            facts.serving_after == good,
            f"/health reports {facts.serving_after or 'nothing'}",
        ),
        _flag(
            "HTML report written",
            facts.report_exists,
            "the monitor's report exists",
            "no monitor report",
        ),
        _notices(facts),
        Check(
            "no failed request",
            facts.requests > 0 and facts.failed_requests == 0,
            f"{facts.failed_requests} of {facts.requests} failed",
        ),
        _flag(
            "the load spanned the whole deploy",
            facts.load_covered,
            "from before the deploy began to after it ended",
            "the load did not run through the whole deploy",
        ),
        _writes(facts),
        _decisions(facts),
    )
    return Judgement(checks)
