"""The API token of an environment: named in the environments file, or in the service's own
settings file, or, for a local non-production environment only, generated on first activation
and read back by the checks. Production never gets a made-up one: its deploy is refused."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from dhash_rollout.environments import api_token, load_environment, provision_api_token
from dhash_rollout.targets.local import LocalTarget
from tests.support.release_builds import dhash_bin, dhash_env, free_port, wheel_for


def _site(base: Path, name: str, *lines: str) -> int:
    port = free_port()
    table = [
        f"[{name}]",
        f"port = {port}",
        f'root = "var/{name}"',
        'release_deps = "shared"',
        'preflight = "warn"',
        "shutdown_grace_seconds = 3",
        'channels = ["file"]',
        *lines,
    ]
    (base / "dhash-environments.toml").write_text("\n".join(table) + "\n", encoding="utf-8")
    return port


def _dhash(base: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [dhash_bin(), *args],
        cwd=base,
        env=dhash_env(base),
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )


def test_a_local_environment_gets_one_private_token_made_once(tmp_path: Path) -> None:
    _site(tmp_path, "staging")
    env = load_environment("staging", tmp_path)
    assert api_token(env) is None
    token, made = provision_api_token(env)
    assert made and token and len(token) >= 40
    assert oct(env.generated_token_file.stat().st_mode & 0o777) == "0o600"
    assert provision_api_token(env) == (token, False)  # read back, never replaced
    assert api_token(env) == token
    assert LocalTarget(env).service_environment()["DHASH_API_TOKENS"] == token


def test_production_is_never_given_a_made_up_token(tmp_path: Path) -> None:
    _site(tmp_path, "production")
    env = load_environment("production", tmp_path)
    assert provision_api_token(env) == (None, False)
    assert not env.generated_token_file.exists()
    assert "DHASH_API_TOKENS" not in LocalTarget(env).service_environment()


def test_a_named_token_wins_and_the_service_settings_file_is_read(tmp_path: Path) -> None:
    _site(tmp_path, "production")
    env = load_environment("production", tmp_path)
    env.service_config_file.parent.mkdir(parents=True)
    env.service_config_file.write_text('api_tokens = ["from-service-settings-1"]\n')
    assert provision_api_token(env) == ("from-service-settings-1", False)
    served = LocalTarget(env).service_environment()
    assert "DHASH_API_TOKENS" not in served  # the service reads its own file
    assert served["DHASH_CONFIG_FILE"] == str(env.service_config_file)
    _site(tmp_path, "production", 'api_token = "named-in-environments"')
    named = load_environment("production", tmp_path)
    assert api_token(named) == "named-in-environments"
    assert LocalTarget(named).service_environment()["DHASH_API_TOKENS"] == "named-in-environments"


def test_a_production_deploy_without_a_token_is_refused_before_anything_changes(
    tmp_path: Path,
) -> None:
    _site(tmp_path, "production")
    wheel = str(wheel_for("1.0.0"))
    done = _dhash(tmp_path, "deploy", "--env", "production", "--no-monitor", "--source", wheel)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "names no API token" in done.stderr and "Traceback" not in done.stderr
    root = tmp_path / "var" / "production"
    assert not (root / "releases").exists() and not (root / "current").exists()
    planned = _dhash(tmp_path, "deploy", "--dry-run", "--env", "production", "--source", wheel)
    assert "warning: production names no API token" in planned.stdout


@pytest.mark.slow
def test_a_plain_local_environment_deploys_and_passes_its_smoke_tests(tmp_path: Path) -> None:
    _site(tmp_path, "staging")
    try:
        wheel = str(wheel_for("1.0.0"))
        done = _dhash(tmp_path, "deploy", "--env", "staging", "--no-monitor", "--source", wheel)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "generated the API token of staging" in done.stdout
        smoke = _dhash(tmp_path, "smoke", "--env", "staging", "--timeout", "60", "--json")
        assert smoke.returncode == 0, smoke.stdout + smoke.stderr
        token = api_token(load_environment("staging", tmp_path))
        assert token is not None
        for log in (tmp_path / "logs").glob("*.log"):
            assert token not in log.read_text(encoding="utf-8"), log
    finally:
        LocalTarget(load_environment("staging", tmp_path)).shutdown()
