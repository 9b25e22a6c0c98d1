"""The fleet's ``haproxy.cfg``, generated from the environment's proxy and hosts.

One frontend for the clients, one backend whose servers are the fleet's hosts (by their names:
the runtime API drains and weights them by name), health checked on ``/ready`` (a host that
is draining its index or has lost its store leaves rotation by itself), the runtime API at
``level admin`` (``ProxySettings.runtime_api``), and, with ``ProxySettings.metrics_address``,
HAProxy's own Prometheus exporter (``USE_PROMEX``, built into Debian's package: ``haproxy -vv``
says "Built with the Prometheus exporter as a service") on a stats frontend of its own, so
the exporter never answers on the clients' port and the fleet's gate reads what the proxy saw
(docs/deploy.md, "HAProxy's own metrics").

``retries`` and ``option redispatch``: a connection refused by a host that went down between
two checks is retried on another server, which the exporter counts (``retry_warnings``,
``redispatch_warnings``) and the client never sees.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from dhash_rollout.environments import HostSettings, ProxySettings


@dataclass(frozen=True)
class Server:
    name: str
    address: str
    port: int
    weight: int = 100


@dataclass(frozen=True)
class CheckTiming:
    """How often and how patiently servers are checked (HAProxy's ``inter``/``fall``/``rise``,
    ``timeout check``: without one a check must answer within ``inter``)."""

    inter: str = "2s"
    fall: int = 3
    rise: int = 2
    timeout: str | None = "2s"


def servers_of(hosts: Sequence[HostSettings]) -> list[Server]:
    return [Server(h.name, h.address, h.port, h.weight) for h in hosts]


def _runtime_socket(runtime_api: str) -> str:
    if runtime_api.startswith("tcp://"):
        return f"stats socket ipv4@{runtime_api.removeprefix('tcp://')} level admin"
    return f"stats socket {runtime_api} mode 600 level admin"


def render_config(
    proxy: ProxySettings,
    servers: Sequence[Server],
    *,
    bind: str,
    checks: CheckTiming | None = None,
) -> str:
    """The whole file; ``bind`` is where clients connect (``*:80``, ``127.0.0.1:18080``)."""
    checks = checks or CheckTiming()
    lines = [
        "global",
        f"    {_runtime_socket(proxy.runtime_api)}",
        "    stats timeout 10s",
        "defaults",
        "    mode http",
        "    timeout connect 2s",
        "    timeout client 10s",
        "    timeout server 10s",
        "    retries 2",
        "    option redispatch",
        "frontend web",
        f"    bind {bind}",
        f"    default_backend {proxy.backend}",
    ]
    if proxy.metrics_address is not None:
        lines += [
            "frontend prometheus",
            f"    bind {proxy.metrics_address}",
            "    http-request use-service prometheus-exporter if { path /metrics }",
            "    no log",
        ]
    lines += [
        f"backend {proxy.backend}",
        "    balance roundrobin",
        "    option httpchk GET /ready",
        f"    default-server inter {checks.inter} fall {checks.fall} rise {checks.rise}",
    ]
    if checks.timeout is not None:
        lines.append(f"    timeout check {checks.timeout}")
    lines += [f"    server {s.name} {s.address}:{s.port} check weight {s.weight}" for s in servers]
    return "\n".join(lines) + "\n"


def client_bind(proxy: ProxySettings, bind: str | None = None) -> str:
    """Where the clients' frontend binds: ``bind`` if given, else every address on the port of
    ``proxy.url`` (80 for ``http://lb.example``). ``ValueError`` when neither says."""
    if bind:
        return bind
    if not proxy.url:
        raise ValueError("the proxy has no url: say where clients connect with --bind ADDR:PORT")
    try:
        port = urlsplit(proxy.url).port or 80
    except ValueError as exc:
        raise ValueError(f"proxy.url {proxy.url!r}: {exc}") from None
    return f"*:{port}"
