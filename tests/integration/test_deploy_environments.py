"""``dhash-environments.toml`` mistakes are usage errors naming the setting, never a traceback
from deep inside a deploy."""

from __future__ import annotations

from pathlib import Path

import pytest

from dhash_rollout.environments import load_environment
from dhash_service.errors import ConfigError
from tests.support.release_builds import dhash_bin, run_in


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('port = "abc"', "port must be an integer, not 'abc'"),
        ("port = 70000", "port must be at most 65535"),
        ("port = true", "port must be an integer"),
        ("root = 5", "root must be text"),
        ('channels = "file"', "channels must be a list"),
        ('workers = "x"', "workers must be an integer"),
        ("shutdown_grace_seconds = -1", "shutdown_grace_seconds must be greater than 0"),
        ('preflight = "maybe"', "preflight must be enforce or warn"),
    ],
)
def test_a_mistyped_setting_is_refused_by_name(tmp_path: Path, line: str, message: str) -> None:
    (tmp_path / "dhash-environments.toml").write_text(f"[staging]\n{line}\n")
    with pytest.raises(ConfigError, match=message):
        load_environment("staging", tmp_path)


def test_well_typed_settings_load(tmp_path: Path) -> None:
    (tmp_path / "dhash-environments.toml").write_text(
        '[staging]\nport = 18999\nworkers = 2\nshutdown_grace_seconds = 2.5\nchannels = ["file"]\n'
    )
    env = load_environment("staging", tmp_path)
    assert (env.port, env.extra["workers"], env.channels) == (18999, 2, ("file",))


@pytest.mark.parametrize("command", [("release", "status"), ("rollback", "--reason", "x")])
def test_the_cli_reports_it_as_a_usage_error(tmp_path: Path, command: tuple[str, ...]) -> None:
    (tmp_path / "dhash-environments.toml").write_text("[staging]\nroot = 5\n")
    done = run_in(tmp_path, [dhash_bin(), *command, "--env", "staging"])
    assert done.returncode == 2
    assert "[staging] root must be text" in done.stderr and "Traceback" not in done.stderr


def test_release_status_and_logs_of_a_fresh_environment_say_what_is_there(
    tmp_path: Path,
) -> None:
    """docs/deploy.md: ``dhash release status`` shows the kernel setting; what does not exist
    yet is '-', never Python's None, and asking creates nothing."""
    (tmp_path / "dhash-environments.toml").write_text("[staging]\nport = 18997\n")
    done = run_in(tmp_path, [dhash_bin(), "release", "status", "--env", "staging"])
    assert done.returncode == 0, done.stderr
    assert "None" not in done.stdout
    assert "supervisord: not running" in done.stdout and "port: 18997" in done.stdout
    assert "net.ipv4.tcp_migrate_req: " in done.stdout
    assert "dhash-blue   ABSENT    -            -" in done.stdout
    logs = run_in(tmp_path, [dhash_bin(), "release", "logs", "--env", "staging"])
    assert logs.returncode == 0 and "no process output for staging yet" in logs.stdout
    assert not (tmp_path / "var").exists()


def test_rollback_to_a_release_that_is_not_installed_names_the_installed_ones(
    tmp_path: Path,
) -> None:
    done = run_in(
        tmp_path,
        [dhash_bin(), "rollback", "--env", "canary", "--reason", "x", "--to-release", "7.7.7"],
    )
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "release 7.7.7 is not installed" in done.stderr
    assert "(installed: none; see dhash release list --env canary)" in done.stderr


def test_an_unknown_key_is_refused_naming_the_key_and_the_file(tmp_path: Path) -> None:
    path = tmp_path / "dhash-environments.toml"
    path.write_text("[staging]\nport = 18999\nbackup_max_age = 60\n")
    with pytest.raises(
        ConfigError, match=r"\[staging\] backup_max_age is not a known setting"
    ) as err:
        load_environment("staging", tmp_path)
    assert str(path) in err.value.message


def test_hosts_and_canary_tables_are_accepted_and_typed(tmp_path: Path) -> None:
    (tmp_path / "dhash-environments.toml").write_text(
        '[canary]\ntarget = "fleet"\ncanary = { weight = 10 }\n'
        '[[canary.hosts]]\nname = "web1"\naddress = "10.0.0.5"\n'
        '[[canary.hosts]]\nname = "web2"\naddress = "10.0.0.6"\nssh_port = 2222\n'
        '[canary.proxy]\nruntime_api = "/run/haproxy/admin.sock"\n'
        '[canary.waves]\nsizes = [1, "50%"]\nmax_fail_percentage = 25\n'
    )
    env = load_environment("canary", tmp_path)
    hosts = env.settings.hosts
    assert hosts is not None
    assert [(h.name, h.address, h.ssh_port, h.root) for h in hosts] == [
        ("web1", "10.0.0.5", 22, "/srv/dhash"),
        ("web2", "10.0.0.6", 2222, "/srv/dhash"),
    ]
    assert hosts[0].url == "http://10.0.0.5:18080"
    assert env.settings.proxy is not None and env.settings.proxy.backend == "dhash"
    assert env.settings.waves is not None
    assert env.settings.waves.sizes == (1, "50%")
    assert env.settings.waves.max_fail_percentage == 25.0
    assert env.settings.canary == {"weight": 10}
    (tmp_path / "dhash-environments.toml").write_text("[canary]\nhosts = 5\n")
    with pytest.raises(ConfigError, match="hosts must be a list of host tables"):
        load_environment("canary", tmp_path)
