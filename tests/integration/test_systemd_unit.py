"""The example systemd unit (docs/systemd/dhash.service) is valid for systemd, stops within its
own bound, and its ExecStart with its environment really serves and drains on its KillSignal."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from dhash_service.server import KILL_WAIT_SECONDS
from tests.support.live_server import free_port

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "docs/systemd/dhash.service"
RELEASE_DHASH = "/srv/dhash/current/venv/bin/dhash"
DHASH = str(Path(sys.executable).parent / "dhash")


def unit_entries(text: str) -> dict[str, list[str]]:
    """``"Section.Key" -> [values]`` of a unit file (keys may repeat, as Environment= does)."""
    entries: dict[str, list[str]] = {}
    section = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        entries.setdefault(f"{section}.{key.strip()}", []).append(value.strip())
    return entries


def one(entries: dict[str, list[str]], key: str) -> str:
    values = entries.get(key, [])
    assert len(values) == 1, f"{key}: {values}"
    return values[0]


def environment(entries: dict[str, list[str]]) -> dict[str, str]:
    return dict(value.split("=", 1) for value in entries["Service.Environment"])


ENTRIES = unit_entries(UNIT.read_text(encoding="utf-8"))


def test_unit_parser_keeps_repeated_keys_per_section() -> None:
    parsed = unit_entries("[A]\n# c\nX=1\nX=2\n[B]\nX = 3\n")
    assert parsed == {"A.X": ["1", "2"], "B.X": ["3"]}


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not here")
def test_unit_passes_systemd_analyze_verify_without_a_single_warning(tmp_path: Path) -> None:
    # verify needs ExecStart to exist; point it at this environment's dhash, nothing else changes
    unit = tmp_path / "dhash.service"
    unit.write_text(UNIT.read_text(encoding="utf-8").replace(RELEASE_DHASH, DHASH), "utf-8")
    done = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    # a mistyped value is only a warning ("Failed to parse ..., ignoring"), still exit 0
    assert str(unit) not in done.stderr + done.stdout, done.stderr


def test_unit_stops_the_supervisor_with_sigterm_and_waits_longer_than_its_drain() -> None:
    assert one(ENTRIES, "Service.KillSignal") == "SIGTERM"
    assert one(ENTRIES, "Service.KillMode") == "mixed"  # workers hear it from the supervisor
    grace = float(environment(ENTRIES)["DHASH_SHUTDOWN_GRACE_SECONDS"])
    assert float(one(ENTRIES, "Service.TimeoutStopSec")) > grace + KILL_WAIT_SECONDS


def test_unit_keeps_secrets_out_of_itself_and_is_hardened() -> None:
    assert one(ENTRIES, "Service.EnvironmentFile").startswith("/etc/")
    names = environment(ENTRIES)
    assert not {"DHASH_API_TOKENS", "DHASH_DATABASE_URL"} & names.keys()
    for key, value in {
        "Service.User": "dhash",
        "Service.Restart": "on-failure",
        "Service.NoNewPrivileges": "yes",
        "Service.ProtectSystem": "strict",
    }.items():
        assert one(ENTRIES, key) == value, key
    writable = one(ENTRIES, "Service.ReadWritePaths").split()
    assert sorted(writable) == sorted([names["DHASH_DATA_DIR"], names["DHASH_LOG_DIR"]])
    assert int(one(ENTRIES, "Service.LimitNOFILE")) >= 4096


@pytest.mark.slow  # two spawned workers start: ~6 s idle, ~15 s on a loaded machine
def test_units_exec_start_serves_with_its_environment_and_drains_on_its_kill_signal(
    tmp_path: Path,
) -> None:
    """What systemd would run, as it would run it: ExecStart, Environment= then the
    EnvironmentFile's secrets, in WorkingDirectory; stopped with KillSignal within
    TimeoutStopSec. Only the paths under /srv and the port are moved to this test's own."""
    srv = tmp_path / "srv"
    argv = one(ENTRIES, "Service.ExecStart").replace(RELEASE_DHASH, DHASH).split()
    env = {
        key: value.replace("/srv/dhash", str(srv)) for key, value in environment(ENTRIES).items()
    }
    port = free_port()
    env["DHASH_PORT"] = str(port)
    secrets = tmp_path / "dhash.env"  # the EnvironmentFile, as the docs say to fill it in
    database = srv / "shared/data/dhash.sqlite3"
    secrets.write_text(
        f"DHASH_API_TOKENS=unit-token-1\nDHASH_DATABASE_URL=sqlite:///{database}\n", "utf-8"
    )
    for line in secrets.read_text(encoding="utf-8").splitlines():
        key, _, value = line.partition("=")
        env[key] = value
    for path in (env["DHASH_DATA_DIR"], env["DHASH_LOG_DIR"]):
        Path(path).mkdir(parents=True)
    workdir = Path(one(ENTRIES, "Service.WorkingDirectory").replace("/srv/dhash", str(srv)))
    base_env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}  # systemd passes almost nothing
    migrated = subprocess.run(
        [DHASH, "migrate"], env={**base_env, **env}, cwd=workdir, capture_output=True, check=False
    )
    assert migrated.returncode == 0, migrated.stderr
    log = (tmp_path / "serve.log").open("wb")
    process = subprocess.Popen(
        argv, env={**base_env, **env}, cwd=workdir, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, (tmp_path / "serve.log").read_text()
            try:
                if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, (tmp_path / "serve.log").read_text()
            time.sleep(0.1)
        pids = {httpx.get(f"{url}/health", headers={"Connection": "close"}).json()["pid"]
                for _ in range(20)}  # fmt: skip
        assert len(pids) == int(env["DHASH_WORKERS"])
        process.send_signal(getattr(signal, one(ENTRIES, "Service.KillSignal")))
        assert process.wait(float(one(ENTRIES, "Service.TimeoutStopSec"))) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
        log.close()
