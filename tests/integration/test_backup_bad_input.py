"""Bad input to ``dhash backup``, ``dhash restore`` and ``dhash migrate``: a one-line error and
the right exit code, never a traceback, and nothing written.

Run in-process through ``dhash_rollout.cli.main`` (which lets anything but a ``DhashError``
escape, so a traceback would fail the test), plus real processes where only a process can show
it (the shell shims, a directory the caller may not read).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from dhash_rollout.backup import list_backups
from dhash_rollout.cli import main
from tests.integration.backup_support import (
    DHASH,
    REPO,
    assert_restores,
    cli_env,
    make_sqlite_db,
    sqlite_content,
    write_environments,
)


@pytest.fixture
def checkout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A directory like the guide's checkout root: environments file, production database."""
    for key in [k for k in os.environ if k.startswith("DHASH_")]:
        monkeypatch.delenv(key)
    write_environments(tmp_path, {"production": None})
    make_sqlite_db(tmp_path / "var/production/shared/data/dhash.sqlite3", rows=50)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize(
    ("argv", "code", "says"),
    [
        (["backup", "prune", "--older-than", "99999999999999999999d"], 2, "at most 36500 days"),
        (["backup", "prune", "--older-than", "999999d"], 2, "at most 36500 days"),
        (["backup", "create", "--env", "production", "--retention-days", "999999"], 2, "36500"),
        (["backup", "list", "--backup-dir", "dhash-environments.toml"], 1, "Not a directory"),
        (["backup", "verify", "dhash-environments.toml"], 4, "checksum file"),
        (["restore", "--backup", "dhash-environments.toml", "--env", "production"], 4, "refusing"),
        (["migrate", "--env", "production", "--dry-run", "--log", "var"], 2, "is a directory"),
        (["migrate", "downgrade", "", "--env", "production"], 2, "revision is required"),
    ],
)
def test_bad_input_is_a_one_line_error_and_writes_nothing(
    checkout: Path, capsys: pytest.CaptureFixture[str], argv: list[str], code: int, says: str
) -> None:
    db = checkout / "var/production/shared/data/dhash.sqlite3"
    before = sqlite_content(db)

    assert main(argv) == code

    err = capsys.readouterr().err
    assert says in err and err.count("dhash: error:") == 1
    assert list_backups(checkout / "backups") == []
    assert not (checkout / "migrate-dryrun.log").exists()
    assert sqlite_content(db) == before


@pytest.mark.parametrize(
    ("url", "says"),
    [("garbage", "invalid database URL"), ("mysql://u@127.0.0.1/x", "not mysql")],
)
def test_migrate_refuses_a_database_url_it_cannot_run_on(
    checkout: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    url: str,
    says: str,
) -> None:
    monkeypatch.setenv("DHASH_DATABASE_URL", url)
    for argv in (
        ["migrate", "status"],
        ["migrate", "--dry-run"],
        ["migrate"],
        ["migrate", "downgrade", "base"],
    ):
        assert main(argv) == 2, argv
        assert says in capsys.readouterr().err
    assert not (checkout / "migrate-dryrun.log").exists()


def test_migrate_against_an_unreachable_server_says_so_not_rolled_back(
    checkout: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DHASH_DATABASE_URL", "postgresql+psycopg://u:secret@127.0.0.1:1/x")
    for argv in (["migrate"], ["migrate", "downgrade", "base"], ["migrate", "--dry-run"]):
        assert main(argv) == 1, argv
        err = capsys.readouterr().err
        assert "cannot reach" in err and "rolled back" not in err and "secret" not in err


def test_create_with_out_of_range_retention_writes_no_backup(checkout: Path) -> None:
    """Refused before the dump: a valid backup followed by a crash in retention would look
    like a failed run that nonetheless left a file."""
    assert main(["backup", "create", "--env", "production", "--retention-days", "0"]) == 2
    assert main(["backup", "create", "--env", "production", "--retention-days", "40000"]) == 2
    assert list_backups(checkout / "backups") == []
    assert main(["backup", "create", "--env", "production", "--retention-days", "14"]) == 0
    [made] = list_backups(checkout / "backups")
    db = checkout / "var/production/shared/data/dhash.sqlite3"
    assert_restores(made.path, sqlite_content(db), checkout / "scratch", "production")


@pytest.mark.parametrize("script", ["backup_dhash.sh", "migrate_dhash.sh"])
def test_shell_shims_give_usage_errors_without_a_traceback(checkout: Path, script: str) -> None:
    done = subprocess.run(
        [str(REPO / "scripts" / script), "--no-such-flag"],
        cwd=checkout,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2 and "No such option" in done.stderr
    assert "Traceback" not in done.stderr


def test_unreadable_backup_directory_is_a_clear_error(checkout: Path) -> None:
    assert main(["backup", "create", "--env", "production"]) == 0
    backups = checkout / "backups"
    [made] = list_backups(backups)
    command = [DHASH, "backup", "list"]
    if os.geteuid() == 0:
        if not shutil.which("setpriv"):
            pytest.skip("root without setpriv: cannot drop CAP_DAC_OVERRIDE to get EACCES")
        caps = "-dac_override,-dac_read_search"
        command = ["setpriv", f"--inh-caps={caps}", f"--bounding-set={caps}", "--", *command]
    backups.chmod(0)
    try:
        done = subprocess.run(
            command, cwd=checkout, env=cli_env(), capture_output=True, text=True, check=False
        )
    finally:
        backups.chmod(0o755)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "Permission denied" in done.stderr and str(backups) in done.stderr
    db = checkout / "var/production/shared/data/dhash.sqlite3"
    assert_restores(made.path, sqlite_content(db), checkout / "scratch", "production")


def test_backup_before_the_first_deploy_says_there_is_nothing_to_back_up_yet(
    checkout: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The guide backs up before every deploy, the first one included: the operator is told
    why nothing was saved and that the first deploy goes without, and no file is left."""
    (checkout / "var/production/shared/data/dhash.sqlite3").unlink()

    assert main(["backup", "create", "--env", "production"]) == 1

    err = capsys.readouterr().err
    assert "nothing to back up yet" in err and "never deployed" in err
    assert err.count("dhash: error:") == 1 and "Traceback" not in err
    assert list(checkout.joinpath("backups").glob("*.zip*")) == []
    assert list(checkout.joinpath("backups").glob(".dhash_*")) == []


def test_backup_list_keeps_each_name_on_one_line_and_says_what_to_do_when_empty(
    checkout: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The listed name is what goes into ``rollback --backup``: never wrapped, even in a pipe."""
    assert main(["backup", "list", "--env", "production"]) == 0
    assert "(make one: ./scripts/backup_dhash.sh --env production)" in capsys.readouterr().out
    assert main(["backup", "list", "--env", "prod"]) == 2
    assert "unknown environment 'prod'" in capsys.readouterr().err

    assert main(["backup", "create", "--env", "production"]) == 0
    capsys.readouterr()
    assert main(["backup", "list"]) == 0
    [made] = list_backups(checkout / "backups")
    assert any(made.path.name in line for line in capsys.readouterr().out.splitlines())
