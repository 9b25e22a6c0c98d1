"""Schema facts read from the database and from a release's migrations, and the migration run
with a release's own code (the only code that knows its revisions)."""

from __future__ import annotations

import ast
import inspect
import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dhash_rollout.environments import Environment, environments_file
from dhash_rollout.releases import Release
from dhash_service.errors import CheckFailed, Unavailable

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine


def database_exists(database_url: str) -> bool:
    """False only for a SQLite file that is not there yet (a server database is assumed)."""
    from sqlalchemy.engine import make_url

    url = make_url(database_url)
    if url.get_backend_name() != "sqlite":
        return True
    return bool(url.database) and Path(str(url.database)).exists()


def database_revision(database_url: str) -> str | None:
    """The schema revision stamped in the database, or None for a new/empty database.

    Read straight from ``alembic_version`` so it works for revisions this toolkit does not ship.
    A SQLite file that does not exist yet is reported as empty without creating it.
    """
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import SQLAlchemyError

    url = make_url(database_url)
    if url.get_backend_name() == "sqlite" and (not url.database or not Path(url.database).exists()):
        return None
    engine = create_engine(url)
    try:
        conn = _connect(engine)
        with conn:
            rows = conn.execute(text("SELECT version_num FROM alembic_version")).fetchall()
    except SQLAlchemyError as exc:
        if "alembic_version" in str(exc):
            return None
        raise CheckFailed(
            f"cannot read the schema revision of {_shown(engine)}: {_cause(exc)}"
        ) from None
    finally:
        engine.dispose()
    return str(rows[0][0]) if rows else None


def database_readable(database_url: str) -> bool:
    """A quick integrity probe: SQLite ``PRAGMA quick_check``, else a trivial query."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import SQLAlchemyError

    url = make_url(database_url)
    if not database_exists(database_url):
        return True  # nothing there to be damaged (and probing must not create the file)
    engine = create_engine(url)
    try:
        conn = _connect(engine)  # unreachable is not damaged: that raises, naming the database
        with conn:
            if url.get_backend_name() == "sqlite":
                result = conn.execute(text("PRAGMA quick_check")).scalar()
                return result == "ok"
            conn.execute(text("SELECT 1"))
            return True
    except SQLAlchemyError:
        return False
    finally:
        engine.dispose()


def _shown(engine: Engine) -> str:
    return str(engine.url.render_as_string(hide_password=True))


def _cause(exc: BaseException) -> str:
    """The driver's own first line (connection refused, authentication failed...)."""
    inner = getattr(exc, "orig", None) or exc
    text = str(inner).strip().splitlines()
    return f"{type(inner).__name__}: {text[0]}" if text else type(inner).__name__


def _connect(engine: Engine) -> Connection:
    """Connect, or raise ``Unavailable`` naming the database (no password) and the cause: a
    database that does not answer must not read as a damaged one (which means a restore)."""
    from sqlalchemy.exc import SQLAlchemyError

    try:
        return engine.connect()
    except SQLAlchemyError as exc:
        raise Unavailable(f"the database {_shown(engine)} is unreachable: {_cause(exc)}") from None


def release_migrations_dir(release: Release) -> Path:
    pyver = f"python{sys.version_info.major}.{sys.version_info.minor}"
    return release.venv / "lib" / pyver / "site-packages" / "dhash_service" / "store" / "migrations"


def _script_directory(release: Release) -> Any:
    from alembic.script import ScriptDirectory

    location = release_migrations_dir(release)
    if not (location / "env.py").exists():
        raise CheckFailed(f"release {release.version} ships no migrations at {location}")
    return ScriptDirectory(str(location))


def release_head(release: Release) -> str | None:
    """The head revision of the migrations a release ships."""
    heads = _script_directory(release).get_heads()
    if len(heads) > 1:
        raise CheckFailed(f"release {release.version} has several migration heads: {heads}")
    return str(heads[0]) if heads else None


def release_revisions(release: Release) -> set[str]:
    """Every revision a release's migrations know."""
    return {str(s.revision) for s in _script_directory(release).walk_revisions()}


def _downgrade_refuses(module: Any) -> bool:
    """A migration is irreversible when it says so or its downgrade only raises."""
    if getattr(module, "irreversible", False):
        return True
    downgrade = getattr(module, "downgrade", None)
    if downgrade is None:
        return True
    try:
        tree = ast.parse(inspect.getsource(downgrade).strip())
    except (OSError, TypeError, SyntaxError):
        return False
    func = tree.body[0]
    body = [
        n
        for n in getattr(func, "body", [])
        if not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant))
    ]
    return len(body) == 1 and isinstance(body[0], ast.Raise)


def downgrade_reversible(release: Release, current: str | None, target: str | None) -> bool:
    """Whether ``release``'s migrations can take the schema from ``current`` down to ``target``."""
    if current == target or current is None:
        return True
    scripts = _script_directory(release)
    try:
        revisions = list(scripts.iterate_revisions(current, target or "base"))
    except Exception:  # alembic raises several types for an unknown revision path
        return False
    return not any(_downgrade_refuses(rev.module) for rev in revisions if rev.revision != target)


def release_cli(
    release: Release, env: Environment, base: Path, *args: str, timeout: float = 900.0
) -> str:
    """Run ``dhash <args>`` with the release's own code (its migrations, its settings schema)."""
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("DHASH_")}
    child_env["DHASH_ENVIRONMENTS_FILE"] = str(environments_file(base).resolve())
    command = [str(release.dhash), *args]
    try:
        done = subprocess.run(
            command,
            cwd=base,
            env=child_env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            # Its own session: a Ctrl-C at the operator's terminal stops the run at the next
            # phase boundary (runs/interrupt.py) instead of killing a migration half-way.
            start_new_session=True,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise CheckFailed(f"release {release.version}: `dhash {' '.join(args)}`: {exc}") from exc
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-10:])
        raise CheckFailed(
            f"release {release.version}: `dhash {' '.join(args)}` exited {done.returncode}: {tail}"
        )
    return done.stdout


def migrate_with(release: Release, env: Environment, base: Path, revision: str | None) -> None:
    """Upgrade to the release's head (``revision=None``) or downgrade to ``revision``."""
    if revision is None:
        release_cli(release, env, base, "migrate", "--env", env.name)
    else:
        release_cli(
            release, env, base, "migrate", "--env", env.name, "--downgrade", revision or "base"
        )


def pending_migrations(release: Release, current: str | None) -> list[tuple[str, str]]:
    """``(revision, source)`` of each migration of ``release`` above ``current``, oldest first:
    what upgrading the database to the release's head would run."""
    scripts = _script_directory(release)
    head = release_head(release)
    if head is None or head == current:
        return []
    try:
        revisions = list(scripts.iterate_revisions(head, current or "base"))
    except Exception as exc:  # alembic raises several types for an unknown revision path
        raise CheckFailed(
            f"release {release.version} cannot upgrade from revision {current}: {exc}"
        ) from exc
    out = []
    for rev in reversed(revisions):
        if rev.revision == current:
            continue
        out.append((str(rev.revision), Path(rev.path).read_text(encoding="utf-8")))
    return out


def pending_migration_steps(release: Release, current: str | None) -> list[tuple[str, bool]]:
    """The revisions a release would run from ``current`` to its head, oldest first, each with
    whether it is a *contract* step (``contract = True`` in its module: it drops or narrows
    what an older release still reads). A fleet deploy runs the expand ones before its first
    wave and the contract ones after its last (``deploy/waves.split_migrations``)."""
    scripts = _script_directory(release)
    head = release_head(release)
    if head is None or head == current:
        return []
    try:
        chain = list(scripts.iterate_revisions(head, current or "base"))
    except Exception as exc:  # alembic's own errors name the revisions it could not connect
        raise CheckFailed(
            f"release {release.version}'s migrations do not lead from {current} to {head}: {exc}"
        ) from exc
    return [
        (str(script.revision), bool(getattr(script.module, "contract", False)))
        for script in reversed(chain)
    ]
