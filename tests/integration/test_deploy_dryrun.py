"""``./scripts/deploy_dhash.sh --dry-run --env production``: plans every phase, executes none."""

from __future__ import annotations

from pathlib import Path

from dhash_rollout.checks.dryrun_logs import check_deploy_dryrun
from dhash_rollout.deploy.plan import DEPLOY_PHASES
from dhash_rollout.environments import load_environment
from dhash_rollout.releases import source_version
from tests.support.release_builds import CHECKOUT, run_in, write_environments


def _checkout_view(tmp_path: Path) -> Path:
    """A working directory that looks like the checkout (its scripts, sources and project)."""
    view = tmp_path / "checkout"
    view.mkdir()
    for name in ("scripts", "src", "requirements", "pyproject.toml", "README.md", ".venv"):
        (view / name).symlink_to(CHECKOUT / name)
    return view


def test_the_guides_dry_run_command_plans_all_phases_and_changes_nothing(tmp_path: Path) -> None:
    view = _checkout_view(tmp_path)
    write_environments(view)
    before = sorted(p.name for p in view.iterdir())
    done = run_in(
        view, ["./scripts/deploy_dhash.sh", "--dry-run", "--env", "production"], timeout=120
    )
    assert done.returncode == 0, done.stderr
    log = view / "deploy-dryrun.log"
    text = log.read_text(encoding="utf-8")
    version = source_version(CHECKOUT)
    assert text.splitlines()[0] == f"deploy production {version}: plan (nothing is executed)"
    for phase in DEPLOY_PHASES:
        assert f" {phase} " in text
    assert "watch the quality gates for the monitoring window" in text  # the guard will run
    # The preflight reads the same file back and accepts it as this environment's dry run.
    env = load_environment("production", view)
    assert check_deploy_dryrun(log, env).startswith(f"plan for {version} with 11 steps")
    # Nothing was executed: no release, no process manager, no journal, no backup, no database.
    after = sorted(p.name for p in view.iterdir())
    assert set(after) - set(before) == {"deploy-dryrun.log"}
    assert not (view / "var").exists()


def test_a_dry_run_of_an_unknown_environment_is_a_usage_error(tmp_path: Path) -> None:
    view = _checkout_view(tmp_path)
    done = run_in(view, ["./scripts/deploy_dhash.sh", "--dry-run", "--env", "nowhere"])
    assert done.returncode == 2
    assert "unknown environment 'nowhere'" in done.stderr
    assert "Traceback" not in done.stderr


def test_an_initiator_with_a_line_break_is_a_usage_error(tmp_path: Path) -> None:
    view = _checkout_view(tmp_path)
    write_environments(view)
    done = run_in(
        view, ["./scripts/deploy_dhash.sh", "--dry-run", "--env", "staging", "--initiator", "a\nb"]
    )
    assert done.returncode == 2, done.stderr
    assert "--initiator must be a single line" in done.stderr
    assert "Traceback" not in done.stderr
