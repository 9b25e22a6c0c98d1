"""Rollback past a migration that cannot go down, and to a named backup: the data comes back
from the backup and every row written after it is kept. Run through the guide's shims."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from dhash_rollout.releases import source_version
from dhash_rollout.runs.schema import database_revision
from tests.support.release_builds import CHECKOUT, checkout_head, wheel_for
from tests.support.rollout_site import Site, assert_fully_on

pytestmark = pytest.mark.slow

CHECKOUT_VERSION = source_version(CHECKOUT)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    site = Site.create(tmp_path_factory.mktemp("rollback-site"))
    try:
        # The guide's command: no --version, so the checkout's own version, built from the
        # checkout directory itself (unguarded: these tests are about the data, not the gates).
        first = site.script("deploy_dhash.sh", "--env", "production", "--no-monitor")
        assert first.returncode == 0, first.stdout + first.stderr
        yield site
    finally:
        site.shutdown()


def test_a_rollback_with_nothing_before_the_current_release_fails_clearly(site: Site) -> None:
    made = site.run("backup", "create", "--env", "production")  # a backup does not change that
    assert made.returncode == 0, made.stdout + made.stderr
    records = len(list(site.journal.records()))
    notices = _notice_lines(site)
    try:
        for extra in ((), ("--dry-run",), ("--to-release", CHECKOUT_VERSION)):
            done = site.script(
                "rollback_dhash.sh", "--env", "production", "--reason", "nothing-there", *extra
            )
            assert done.returncode == 1, done.stdout + done.stderr
            assert "nothing to roll back to" in done.stderr
            assert "Traceback" not in done.stderr
        assert len(list(site.journal.records())) == records  # no run was started
        assert _notice_lines(site) == notices  # no notice
        assert_fully_on(site, CHECKOUT_VERSION)
    finally:  # the next deploy must make its own backup
        for path in (site.base / "backups").glob("dhash_production_*"):
            path.unlink()


def _notice_lines(site: Site) -> list[str]:
    logs = sorted((site.base / "logs").glob("notifications_*.log"))
    return [line for path in logs for line in path.read_text().splitlines()]


def test_a_backup_that_does_not_verify_is_refused_while_the_service_serves(site: Site) -> None:
    bad = site.base / "backups" / "dhash_production_20240101_000000.zip"
    bad.parent.mkdir(exist_ok=True)
    bad.write_bytes(b"not a zip")
    bad.with_name(bad.name + ".sha256").write_text(f"{'0' * 64}  {bad.name}\n")
    records = len(list(site.journal.records()))
    try:
        done = site.script(
            "rollback_dhash.sh", "--env", "production", "--backup", str(bad), "--reason", "bad"
        )
    finally:
        bad.unlink()
        bad.with_name(bad.name + ".sha256").unlink()
    assert done.returncode == 4, done.stdout + done.stderr
    assert "SHA-256 mismatch" in done.stderr and "Traceback" not in done.stderr
    assert "nothing was changed; the backups of production: dhash backup list" in done.stderr
    assert len(list(site.journal.records())) == records
    assert_fully_on(site, CHECKOUT_VERSION)  # never stopped


def test_rolling_back_past_an_irreversible_migration_restores_and_keeps_later_writes(
    site: Site,
) -> None:
    before_backup = [i for seed in range(3) for i in site.ingest(seed)]
    deployed = site.deploy(wheel_for("2.0.0", migration="irreversible"))
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    deploy = site.journal.last_run("deploy")
    assert deploy is not None and deploy.status_of("backup") == "done"
    after_backup = [i for seed in range(100, 103) for i in site.ingest(seed)]
    everything = site.image_ids()
    assert set(before_backup) | set(after_backup) <= everything
    _a_backup_past_the_irreversible_migration_is_refused_while_serving(site)

    # Killed at the worst moment: the backup is restored, the later rows not yet re-applied.
    args = ("--env", "production", "--reason", "emergency-rollback")
    lines = len(list(site.journal.records()))
    first = site.popen("rollback", *args)
    hit = site.wait_for_record(
        lambda r: r.phase == "reapply_writes" and r.status == "started", first, after=lines
    )
    assert hit is not None, "the rollback ended before re-applying"
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    assert not set(after_backup) <= site.image_ids()  # only in the exported file now

    done = site.script("rollback_dhash.sh", *args)  # run again: it resumes
    assert done.returncode == 0, done.stdout + done.stderr

    assert_fully_on(site, CHECKOUT_VERSION)
    assert database_revision(site.env.database_url) == checkout_head()
    assert site.image_ids() == everything  # nothing acknowledged was lost
    run = site.journal.last_run("rollback")
    assert run is not None and run.outcome == "done"
    assert run.deploy_id == hit.deploy_id  # the same rollback, resumed
    assert run.detail_of("export_writes").get("reused") is True
    assert run.params["reason"] == "emergency-rollback"
    assert run.params["trigger"] == "manual"
    assert run.params["backup"] == deploy.detail_of("backup")["path"]  # the deploy's backup
    assert run.status_of("downgrade") == "skipped"
    reapplied = run.detail_of("reapply_writes")
    assert reapplied["inserted"]["images"] >= len(after_backup)
    assert reapplied["dropped_columns"] == {"contents": ["rollout_probe"]}
    assert run.status_of("smoke") == "done"
    notices = "\n".join(p.read_text() for p in (site.base / "logs").glob("notifications_*.log"))
    rollback_notices = [
        json.loads(line)["notification"] for line in notices.splitlines() if run.deploy_id in line
    ]
    assert {n["phase"] for n in rollback_notices} == {"rollback", "rolled_back"}
    assert all(n["reason"] == "emergency-rollback" for n in rollback_notices)
    assert all(n["trigger"] == "manual" for n in rollback_notices)


def _a_backup_past_the_irreversible_migration_is_refused_while_serving(site: Site) -> None:
    """Issue 12 item 2: a backup taken after the irreversible migration cannot serve the
    release before it. It was swapped in after the stop, its downgrade failed and the service
    stayed down; now it is refused before anything changes, naming the backup that fits."""
    made = site.run("backup", "create", "--env", "production")
    assert made.returncode == 0, made.stdout + made.stderr
    newest = max((site.base / "backups").glob("dhash_production_*.zip"))
    records = len(list(site.journal.records()))
    try:
        done = site.script(
            "rollback_dhash.sh", "--env", "production", "--backup", str(newest), "--reason", "x"
        )
    finally:
        for path in (newest, newest.with_name(newest.name + ".sha256")):
            path.unlink()
    assert done.returncode == 1, done.stdout + done.stderr
    assert "cannot be restored" in done.stderr and "9001_irreversible_probe" in done.stderr
    assert "fits (--backup it)" in done.stderr and "nothing was changed" in done.stderr
    assert "Traceback" not in done.stderr
    assert len(list(site.journal.records())) == records
    assert_fully_on(site, "2.0.0")  # never stopped


def test_rolling_back_to_a_named_backup_keeps_the_writes_made_since(site: Site) -> None:
    deploy = next(
        r for r in reversed(site.journal.runs()) if r.kind == "deploy" and r.outcome == "done"
    )
    backup = deploy.detail_of("backup")["path"]
    later = [i for seed in range(200, 202) for i in site.ingest(seed)]
    everything = site.image_ids()
    _change_a_row_without_an_audit_record(site, min(everything))
    relative = str(site.base.joinpath(backup).relative_to(site.base))
    done = site.script(
        "rollback_dhash.sh",
        "--env",
        "production",
        "--backup",
        relative,
        "--reason",
        "specific-version-rollback",
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert_fully_on(site, CHECKOUT_VERSION)
    assert set(later) <= site.image_ids() == everything
    run = site.journal.last_run("rollback")
    assert run is not None and run.params["backup_requested"] is True
    assert run.status_of("restore") == "done"
    # Issue 12 item 3: what could not be carried over is said loudly, not "N rows kept".
    assert "NOT carried over in images: 1 row changed since the backup" in done.stdout
    notices = "\n".join(p.read_text() for p in (site.base / "logs").glob("notifications_*.log"))
    assert any(
        "NOT carried over: images" in line for line in notices.splitlines() if run.deploy_id in line
    )


def _change_a_row_without_an_audit_record(site: Site, image_id: int) -> None:
    import sqlite3

    db = Path(site.env.database_url.removeprefix("sqlite:///"))
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE images SET confidence = 0.123 WHERE id = ?", (image_id,))
    conn.close()


def test_a_damaged_database_is_restored_with_every_row_kept(site: Site) -> None:
    """The guide's "Database corruption": stop the service, roll back; the integrity check fails,
    so the latest verified backup is restored and the rows written since it re-applied."""
    import sqlite3

    later = [i for seed in range(300, 302) for i in site.ingest(seed)]
    everything = site.image_ids()
    stopped = site.run("release", "stop", "--env", "production")
    assert stopped.returncode == 0, stopped.stderr
    db = Path(site.env.database_url.removeprefix("sqlite:///"))
    with sqlite3.connect(db) as conn:
        (root,) = conn.execute(
            "SELECT rootpage FROM sqlite_master WHERE name = 'ix_review_items_status_id'"
        ).fetchone()
        page = conn.execute("PRAGMA page_size").fetchone()[0]
    conn.close()
    with db.open("r+b") as fh:  # an index page overwritten: the rows are still readable
        fh.seek((root - 1) * page)
        fh.write(os.urandom(page))
    done = site.script(
        "rollback_dhash.sh", "--env", "production", "--reason", "database-corruption"
    )
    assert done.returncode == 0, done.stdout + done.stderr
    run = site.journal.last_run("rollback")
    assert run is not None and run.params["database_ok"] is False
    assert run.status_of("restore") == "done" and run.status_of("activate") == "done"
    assert_fully_on(site, CHECKOUT_VERSION)
    assert set(later) <= site.image_ids() == everything
