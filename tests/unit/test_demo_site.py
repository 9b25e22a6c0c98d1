"""The demo's site: an environments file the toolkit accepts as it is (unknown keys would be
refused), the checkout's gates, the service settings, and commands run from it with their output
streamed, no caller's DHASH_* leaking in, and a missing program told, not raised."""

from __future__ import annotations

from pathlib import Path

import pytest

from dhash_rollout.demo.site import ENV, GATES_FILE, Site
from dhash_service.config import Settings
from tests.support.release_builds import CHECKOUT

HOOK = "http://127.0.0.1:9/services/demo/x"


@pytest.fixture
def site(tmp_path: Path) -> Site:
    return Site.create(tmp_path / "rollout", HOOK, CHECKOUT / GATES_FILE)


def test_the_site_is_an_environment_the_toolkit_reads_as_written(site: Site) -> None:
    env = site.env
    assert env.name == ENV and env.port == site.port and env.api_token == site.token
    assert env.channels == ("file", "slack")
    assert env.database_url.startswith("sqlite:///")
    assert env.settings.backup_max_age_seconds == 0.0 and env.settings.release_deps == "shared"
    assert (site.base / GATES_FILE).read_bytes() == (CHECKOUT / GATES_FILE).read_bytes()


def test_the_service_settings_file_is_valid_for_the_service(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DHASH_CONFIG_FILE", str(site.env.service_config_file))
    settings = Settings()
    assert settings.request_time_budget_seconds == 5.0
    assert settings.extraction_concurrency == 4


def test_commands_stream_their_lines_without_the_callers_settings(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DHASH_FAULT_HEALTH_FAILING", "true")
    monkeypatch.setenv("TEAMS_WEBHOOK_URL", "https://example.invalid/hook")
    seen: list[str] = []
    done = site.run(["env"], on_line=seen.append)
    assert done.ok and list(done.lines) == seen
    assert f"SLACK_WEBHOOK_URL={HOOK}" in seen
    assert not [ln for ln in seen if ln.startswith(("DHASH_FAULT", "TEAMS_WEBHOOK_URL"))]
    version = site.run(["dhash", "--version"])
    assert version.ok and version.lines


def test_a_program_that_cannot_run_is_a_failed_step_not_a_traceback(site: Site) -> None:
    seen: list[str] = []
    done = site.run(["no-such-program-dhash-demo"], on_line=seen.append)
    assert done.returncode == 127
    assert seen == ["cannot run no-such-program-dhash-demo: No such file or directory"]


def test_a_new_site_replaces_the_previous_one(site: Site) -> None:
    (site.base / "leftover").write_text("x")
    again = Site.create(site.base, HOOK, CHECKOUT / GATES_FILE)
    assert not (again.base / "leftover").exists()
    assert again.token != site.token
