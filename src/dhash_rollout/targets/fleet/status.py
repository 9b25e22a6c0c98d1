"""``dhash release status`` on a fleet: every host, the release it serves, and what HAProxy
says of it (status, weight, open sessions).

The release is read on the host through the engine (``current`` is the same symlink to
``releases/<version>`` as on the local target); the proxy's side comes from one ``show stat``.
Neither side failing hides the other: an unreachable host or proxy is shown as such.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from dhash_rollout.environments import HostSettings, ProxySettings
from dhash_rollout.targets.fleet.engine import EngineError, run_step
from dhash_rollout.targets.fleet.haproxy import HAProxyRuntime, ProxyError, ServerStat


@dataclass(frozen=True)
class HostStatus:
    name: str
    address: str
    release: str | None
    previous: str | None
    proxy_status: str  # HAProxy's status, or why it is not known
    weight: int | None
    sessions: int | None
    error: str | None = None  # why the host's release could not be read

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def _readlink(host: HostSettings) -> list[str]:
    root = host.root
    return [
        f'for link in current previous; do t=$(readlink "{root}/$link" 2>/dev/null); '
        'echo "$link=${t##*/}"; done'
    ]


def _parse(output: str) -> dict[str, str | None]:
    found: dict[str, str | None] = {"current": None, "previous": None}
    for line in output.splitlines():
        key, _, value = line.strip().partition("=")
        if key in found:
            found[key] = value or None
    return found


def fleet_status(
    hosts: Sequence[HostSettings], proxy: ProxySettings, *, known_hosts: Path
) -> list[HostStatus]:
    stats: dict[str, ServerStat] = {}
    proxy_error: str | None = None
    try:
        stats = {s.name: s for s in HAProxyRuntime(proxy.runtime_api).servers(proxy.backend)}
    except ProxyError as exc:
        proxy_error = exc.message
    try:
        results = run_step(
            hosts, {h.name: _readlink(h) for h in hosts}, step="status",
            known_hosts=known_hosts, parallel=len(hosts), connect_timeout=5,
        )  # fmt: skip
        errors = {n: (None if r.ok else r.error) for n, r in results.items()}
        outputs = {n: r.output for n, r in results.items()}
    except EngineError as exc:
        errors = dict.fromkeys((h.name for h in hosts), exc.message)
        outputs = {}
    out: list[HostStatus] = []
    for host in hosts:
        links = _parse(outputs.get(host.name, ""))
        stat = stats.get(host.name)
        weight: int | None
        sessions: int | None
        if stat is not None:
            shown, weight, sessions = stat.status, stat.weight, stat.sessions
        else:
            shown = f"unknown ({proxy_error})" if proxy_error else "not in the proxy's backend"
            weight = sessions = None
        out.append(
            HostStatus(
                host.name,
                host.address,
                links["current"],
                links["previous"],
                shown,
                weight,
                sessions,
                errors.get(host.name),
            )
        )
    return out


def status_lines(statuses: Sequence[HostStatus]) -> list[str]:
    lines = [f"{'host':<10} {'address':<16} {'release':<12} {'previous':<12} {'haproxy':<8} weight"]
    for s in statuses:
        release = s.release or ("unreachable" if s.error else "-")
        weight = "-" if s.weight is None else str(s.weight)
        lines.append(
            f"{s.name:<10} {s.address:<16} {release:<12} {s.previous or '-':<12} "
            f"{s.proxy_status:<8} {weight}"
        )
        if s.error:
            lines.append(f"  {s.name}: {s.error.splitlines()[-1] if s.error else ''}")
    return lines
