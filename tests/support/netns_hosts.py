"""Real SSH hosts on this machine: one network namespace per host, a veth pair from it to a
bridge in the root namespace, and Debian's ``sshd`` listening on the host's own address.

Each host gets a private subnet address (10.213.S.10+i, S picked per run and checked free),
its own directory (``root``: its release root, its sshd config, host key and pid file) and
accepts one client key, made for the run. Everything is removed on exit, also after a failure:
the sshd processes are killed and waited for, the namespaces deleted (which deletes their veth
ends and so the pairs) and the bridge deleted. Needs root (CAP_NET_ADMIN), as CI has.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

SSHD = "/usr/sbin/sshd"


def available() -> str | None:
    """Why namespace hosts cannot be made here, or None when they can."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if not (shutil.which("ip") and Path(SSHD).exists() and shutil.which("ssh-keygen")):
        return "needs iproute2 and openssh-server (scripts/dev/system-deps.sh)"
    return None


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@dataclass(frozen=True)
class NsHost:
    name: str
    namespace: str
    address: str
    root: Path  # the host's own directory: its release root lives under it
    device: str  # its end of the veth pair (down: the host is cut off, as if it died)

    def run(self, *argv: str, **kwargs: object) -> subprocess.CompletedProcess[bytes]:
        """Run a command inside the host's namespace (the test's view, not the engine's)."""
        return subprocess.run(
            ["ip", "netns", "exec", self.namespace, *argv],
            check=False, capture_output=True, **kwargs,  # type: ignore[call-overload]
        )  # fmt: skip


def cut_off(host: NsHost, *, down: bool = True) -> None:
    """Take the host's link down (or back up): nothing reaches its sshd or its service."""
    _ip("-n", host.namespace, "link", "set", host.device, "down" if down else "up")


@dataclass(frozen=True)
class Fleet:
    hosts: tuple[NsHost, ...]
    bridge: str
    gateway: str  # the root namespace's address on the bridge (where HAProxy sits)
    client_key: Path  # the private key every host accepts for root


def _free_subnet() -> int:
    used = subprocess.run(["ip", "-o", "addr"], capture_output=True, text=True, check=True).stdout
    for offset in range(250):
        subnet = (os.getpid() + offset) % 250 + 1
        if f" 10.213.{subnet}." not in used:
            return subnet
    raise RuntimeError("no free 10.213.x.0/24 subnet for the test hosts")


def _wait_port(address: str, port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((address, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _sshd_config(host_dir: Path, address: str, authorized: Path) -> Path:
    key = host_dir / "ssh_host_ed25519_key"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)],
        check=True, capture_output=True,
    )  # fmt: skip
    config = host_dir / "sshd_config"
    config.write_text(
        "\n".join(
            [
                f"ListenAddress {address}",
                "Port 22",
                f"HostKey {key}",
                f"PidFile {host_dir / 'sshd.pid'}",
                f"AuthorizedKeysFile {authorized}",
                "PermitRootLogin prohibit-password",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "UsePAM no",
                "StrictModes no",
                "MaxStartups 50",
                "LogLevel ERROR",
                "Subsystem sftp internal-sftp",
            ]
        )
        + "\n"
    )
    return config


@contextmanager
def namespace_fleet(tmp: Path, names: list[str]) -> Iterator[Fleet]:
    """Make the hosts ``names``, each an sshd in its own namespace, and remove them on exit."""
    reason = available()
    if reason:
        raise RuntimeError(reason)
    subnet = _free_subnet()
    tag = f"{os.getpid() % 100000:05d}"
    bridge = f"dhbr{tag}"
    gateway = f"10.213.{subnet}.1"
    client_key = tmp / "client_key"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(client_key)],
        check=True, capture_output=True,
    )  # fmt: skip
    authorized = tmp / "authorized_keys"
    authorized.write_text(Path(f"{client_key}.pub").read_text())
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation dir
    with ExitStack() as stack:
        _ip("link", "add", bridge, "type", "bridge")
        stack.callback(subprocess.run, ["ip", "link", "del", bridge], check=False)
        _ip("addr", "add", f"{gateway}/24", "dev", bridge)
        _ip("link", "set", bridge, "up")
        hosts: list[NsHost] = []
        for i, name in enumerate(names):
            namespace = f"dh{tag}{name}"
            outer, inner = f"vh{tag}{i}", f"vn{tag}{i}"
            address = f"10.213.{subnet}.{10 + i}"
            _ip("netns", "add", namespace)
            stack.callback(subprocess.run, ["ip", "netns", "del", namespace], check=False)
            _ip("link", "add", outer, "type", "veth", "peer", "name", inner)
            _ip("link", "set", inner, "netns", namespace)
            _ip("link", "set", outer, "master", bridge)
            _ip("link", "set", outer, "up")
            _ip("-n", namespace, "addr", "add", f"{address}/24", "dev", inner)
            _ip("-n", namespace, "link", "set", inner, "up")
            _ip("-n", namespace, "link", "set", "lo", "up")
            _ip("-n", namespace, "route", "add", "default", "via", gateway)
            host_dir = tmp / "hosts" / name
            (host_dir / "srv").mkdir(parents=True)
            config = _sshd_config(host_dir, address, authorized)
            log = (host_dir / "sshd.log").open("wb")
            stack.callback(log.close)
            sshd = subprocess.Popen(
                ["ip", "netns", "exec", namespace, SSHD, "-D", "-e", "-f", str(config)],
                stdout=log, stderr=log,
            )  # fmt: skip
            stack.callback(_stop, sshd)
            hosts.append(NsHost(name, namespace, address, host_dir / "srv", inner))
        for host in hosts:
            _wait_port(host.address, 22)
        yield Fleet(tuple(hosts), bridge, gateway, client_key)


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.kill()
    process.wait(timeout=10)
