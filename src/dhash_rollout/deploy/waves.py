"""The fleet's wave plan: which hosts change together, how many may fail, and where the
database steps go. Pure: hosts and settings in, a :class:`WavePlan` out; the wave executor
runs it and the deploy's ``--dry-run`` prints it.

The waves follow Ansible's ``serial`` keyword, so an operator who knows one knows the other
(``lib/ansible/executor/playbook_executor.py::_get_serialized_batches`` and
``lib/ansible/utils/helpers.py::pct_to_int``):

- a size is a host count (``2``) or a share of the *whole* fleet (``"25%"``), the share
  rounded down and never below one host (``int(pct / 100 * total) or 1``);
- the sizes are taken in order and the last one repeats until every host is in a wave
  (``[1, "25%"]`` on 8 hosts: 1, 2, 2, 2, 1);
- ``max_fail_percentage`` is checked per wave and must be *exceeded* to stop the rollout
  (Ansible's linear strategy: ``failed / batch_size > max_fail_percentage / 100``; its
  documentation's case: a wave of 4 that must stop on 2 failures needs 49, not 50).

The database is shared by every host, so the backup and the migrations run once per deploy:
the expand migrations before the first wave (old and new releases then serve side by side on
the expanded schema), the contract ones only after the last wave, when no old release serves.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from fractions import Fraction

from dhash_rollout.environments import WaveSize
from dhash_service.errors import ConfigError


class HostState(StrEnum):
    """Where one host is in a fleet deploy (the journal's per-host record)."""

    PENDING = "pending"  # not touched: serves the old release, in service
    DRAINING = "draining"  # set to drain in the proxy, waiting for its sessions to end
    SWITCHING = "switching"  # the engine is installing / switching the release on the host
    CHECKING = "checking"  # switched; its own /health and /ready are being probed
    READY = "ready"  # back in service on the new release
    FAILED = "failed"  # a step on it failed (its reason is journaled beside)
    ROLLED_BACK = "rolled_back"  # back on the old release and back in service


# The states in which a host may not serve what it served before the deploy.
TOUCHED = frozenset(
    {HostState.DRAINING, HostState.SWITCHING, HostState.CHECKING, HostState.READY,
     HostState.FAILED}
)  # fmt: skip


@dataclass(frozen=True)
class Migration:
    """A pending revision of the shared database; ``contract`` ones drop or narrow what the
    old release still reads, so they may only run once no old release serves."""

    revision: str
    contract: bool = False


@dataclass(frozen=True)
class Wave:
    number: int  # 1-based, as the operator reads it (0: a fleet canary's own host)
    hosts: tuple[str, ...]
    tolerated_failures: int  # failures this wave absorbs before the rollout stops

    def breached(self, failed: int) -> bool:
        return failed > self.tolerated_failures


@dataclass(frozen=True)
class WavePlan:
    backup: bool
    expand: tuple[str, ...]  # revisions run before the first wave
    waves: tuple[Wave, ...]
    contract: tuple[str, ...]  # revisions run after the last wave
    skipped: tuple[str, ...]  # hosts already on the release (a resumed deploy)

    @property
    def hosts(self) -> tuple[str, ...]:
        return tuple(h for w in self.waves for h in w.hosts)

    def lines(self) -> list[str]:
        """The plan as the operator reads it in ``--dry-run`` and the run log."""
        out = ["backup the shared database" if self.backup else "no backup (none asked)"]
        if self.expand:
            out.append(f"migrate (expand) to {self.expand[-1]}: {', '.join(self.expand)}")
        for wave in self.waves:
            out.append(
                f"wave {wave.number}: {', '.join(wave.hosts)}"
                f" (stops after {wave.tolerated_failures + 1} failed)"
            )
        if self.contract:
            out.append(f"migrate (contract) to {self.contract[-1]}: {', '.join(self.contract)}")
        if self.skipped:
            out.append(f"already on the release: {', '.join(self.skipped)}")
        return out


def wave_size(size: WaveSize, total: int) -> int:
    """One ``serial`` entry as a host count against a fleet of ``total`` hosts."""
    if isinstance(size, int):
        return size
    return int(int(size.removesuffix("%")) / 100.0 * total) or 1


def batch_sizes(sizes: Sequence[WaveSize], total: int) -> list[int]:
    """The host count of every wave, in order, until ``total`` hosts are covered."""
    if not sizes:
        raise ConfigError("waves.sizes is empty")
    counts: list[int] = []
    left, index = total, 0
    while left > 0:
        count = min(wave_size(sizes[index], total), left)
        counts.append(count)
        left -= count
        index = min(index + 1, len(sizes) - 1)
    return counts


def tolerated_failures(size: int, max_fail_percentage: float) -> int:
    """The most failures a wave of ``size`` hosts may have without *exceeding* the
    percentage: the largest f with f / size <= pct / 100 (exact, no float rounding)."""
    share = Fraction(str(max_fail_percentage)) / 100
    return min(size, int(share * size))


def split_migrations(pending: Sequence[Migration]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Expand revisions (before the waves) and contract ones (after). Alembic runs a linear
    chain, so a contract revision followed by an expand one cannot be split: refused."""
    expand: list[str] = []
    contract: list[str] = []
    for migration in pending:
        if migration.contract:
            contract.append(migration.revision)
        elif contract:
            raise ConfigError(
                f"migration {migration.revision} (expand) follows contract migration "
                f"{contract[-1]}: the contract step must come after every expand step, or "
                "old hosts would serve on a contracted schema; reorder or split the release"
            )
        else:
            expand.append(migration.revision)
    return tuple(expand), tuple(contract)


def plan_waves(
    hosts: Sequence[str],
    sizes: Sequence[WaveSize],
    max_fail_percentage: float,
    *,
    pending: Sequence[Migration] = (),
    done: Iterable[str] = (),
    first: str | None = None,
    backup: bool = True,
) -> WavePlan:
    """The plan for deploying to ``hosts`` (in inventory order). The sizes are counted on the
    whole fleet, so a resumed deploy (``done``: hosts already on the release) keeps the waves
    it had, less the finished hosts, and their numbers (a wave left empty is skipped, not
    renumbered: the journal's ``wave:<n>`` and the gates' ``gate:<n>`` records and ledgers of
    a run stay one per wave across resumes); ``first`` puts a chosen host (the canary host)
    alone at the head of the order."""
    if not hosts:
        raise ConfigError("a fleet deploy needs at least one host")
    names = list(hosts)
    if len(set(names)) != len(names):
        raise ConfigError("a host is named twice in the fleet")
    if first is not None:
        if first not in names:
            raise ConfigError(f"the first host {first!r} is not in the fleet")
        names.remove(first)
        names.insert(0, first)
    finished = set(done)
    unknown = finished - set(names)
    if unknown:
        raise ConfigError(f"the journal names hosts the fleet no longer has: {sorted(unknown)}")
    waves: list[Wave] = []
    start = 0
    for number, count in enumerate(batch_sizes(sizes, len(names)), 1):
        members = tuple(h for h in names[start : start + count] if h not in finished)
        start += count
        if members:  # numbered as in the whole plan: a resumed run's "wave 2" is the same
            tolerated = tolerated_failures(count, max_fail_percentage)
            waves.append(Wave(number, members, min(tolerated, len(members))))
    expand, contract = split_migrations(pending)
    skipped = tuple(h for h in names if h in finished)
    return WavePlan(backup, expand, tuple(waves), contract, skipped)


def hosts_to_undo(states: Mapping[str, HostState]) -> tuple[str, ...]:
    """The hosts a stopped rollout must put back: every one it touched and has not already
    put back. Hosts never touched are left alone (they still serve the old release)."""
    return tuple(host for host, state in states.items() if state in TOUCHED)
