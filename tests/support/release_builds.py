"""Real release builds for the rollout tests: wheels of copies of this checkout.

``wheel_for("2.0.0", migration=True)`` copies ``src/``, ``pyproject.toml`` and ``README.md`` to a
temporary tree, sets ``__version__``, optionally adds one more Alembic revision on top of the
checkout's head (a nullable column with its downgrade, or an irreversible one), and builds the
wheel with ``pip wheel``. Wheels are built once per test process and shared by every test, and
kept across processes (xdist workers, later runs) in a cache keyed by the SHA-256 of the exact
tree they are built from: a changed file is a new key, so a cached wheel is always the build of
that content.

Also: environments files on free ports, and a child-process environment for ``dhash``.
"""

from __future__ import annotations

import atexit
import hashlib
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from dhash_rollout.releases import build_wheel

CHECKOUT = Path(__file__).resolve().parents[2]
VERSIONS_DIR = Path("src/dhash_service/store/migrations/versions")
PROBE_COLUMN = "rollout_probe"

_lock = threading.Lock()
_cache: dict[tuple[str, str], Path] = {}
_work = Path(tempfile.mkdtemp(prefix="dhash-test-wheels-"))
atexit.register(shutil.rmtree, _work, ignore_errors=True)
_shared = Path(tempfile.gettempdir()) / f"dhash-test-wheel-cache-{os.getuid()}"


def _tree_digest(tree: Path) -> str:
    """The SHA-256 of every file of ``tree`` (relative path and bytes), in path order."""
    digest = hashlib.sha256()
    for path in sorted(p for p in tree.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(tree)).encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def _cached_build(tree: Path, out: Path) -> Path:
    """The wheel of ``tree``: from the shared cache when that exact tree was built before, else
    built with the toolkit's own builder and published there (a rename: a concurrent builder of
    the same tree loses the race harmlessly and uses the winner's wheel)."""
    home = _shared / _tree_digest(tree)
    found = sorted(home.glob("*.whl")) if home.is_dir() else []
    if found:
        return found[0]
    wheel = build_wheel(tree, out)  # the toolkit's own builder, as `dhash deploy` uses it
    _shared.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=_shared))
    shutil.copy2(wheel, staging / wheel.name)
    try:
        staging.rename(home)
    except OSError:  # another process published the same tree first
        shutil.rmtree(staging, ignore_errors=True)
    found = sorted(home.glob("*.whl"))
    return found[0] if found else wheel


def checkout_head() -> str:
    """The head revision of the checkout's migrations (the one no other revision revises)."""
    revisions: dict[str, str | None] = {}
    for path in (CHECKOUT / VERSIONS_DIR).glob("*.py"):
        text = path.read_text(encoding="utf-8")
        rev = re.search(r'^revision(?:: str)? = "([^"]+)"', text, re.M)
        down = re.search(r'^down_revision(?:: [^=]+)? = "?([^"\n]+)"?', text, re.M)
        if rev:
            revisions[rev.group(1)] = down.group(1) if down and down.group(1) != "None" else None
    heads = set(revisions) - {d for d in revisions.values() if d}
    assert len(heads) == 1, heads
    return heads.pop()


def _migration(kind: str, down: str) -> tuple[str, str]:
    revision = f"9001_{kind}_probe"
    body_up = (
        f'    with op.batch_alter_table("contents") as batch:\n'
        f'        batch.add_column(sa.Column("{PROBE_COLUMN}", sa.String(64), nullable=True))\n'
    )
    if kind == "reversible":
        body_down = (
            f'    with op.batch_alter_table("contents") as batch:\n'
            f'        batch.drop_column("{PROBE_COLUMN}")\n'
        )
        flag = ""
    else:
        body_down = '    raise NotImplementedError("this migration cannot be undone")\n'
        flag = "irreversible = True\n"
    text = (
        f'"""Rollout test revision ({kind}): a nullable column on contents."""\n\n'
        "import sqlalchemy as sa\nfrom alembic import op\n\n"
        f'revision = "{revision}"\ndown_revision = "{down}"\n'
        "branch_labels = None\ndepends_on = None\n"
        f"{flag}\n\n"
        f"def upgrade() -> None:\n{body_up}\n\n"
        f"def downgrade() -> None:\n{body_down}"
    )
    return revision, text


def wheel_for(version: str, migration: str = "", *, broken: bool = False) -> Path:
    """A wheel of this checkout at ``version``; ``migration``: "", "reversible", "irreversible";
    ``broken``: the app factory raises, so the release installs and migrates but cannot serve."""
    key = (version, migration + ("-broken" if broken else ""))
    with _lock:
        if key in _cache:
            return _cache[key]
        label = key[1] or "plain"
        tree = _work / f"src-{version}-{label}"
        shutil.rmtree(tree, ignore_errors=True)
        tree.mkdir(parents=True)
        shutil.copytree(
            CHECKOUT / "src", tree / "src", ignore=shutil.ignore_patterns("__pycache__")
        )
        for name in ("pyproject.toml", "README.md", "requirements/runtime.lock"):
            (tree / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(CHECKOUT / name, tree / name)
        init = tree / "src/dhash_service/__init__.py"
        init.write_text(
            re.sub(r'__version__ = "[^"]+"', f'__version__ = "{version}"', init.read_text()),
            encoding="utf-8",
        )
        if migration:
            revision, text = _migration(migration, checkout_head())
            (tree / VERSIONS_DIR / f"{revision}.py").write_text(text, encoding="utf-8")
        if broken:
            with (tree / "src/dhash_service/api/app.py").open("a", encoding="utf-8") as app:
                app.write(
                    "\n\ndef create_app(*_args: object, **_kwargs: object) -> None:\n"
                    '    raise RuntimeError("this build cannot serve (rollout test)")\n'
                )
        out = _work / "wheels" / f"{version}-{label}"
        out.mkdir(parents=True, exist_ok=True)
        wheel = _cached_build(tree, out)
        _cache[key] = wheel
        return wheel


def tree_for(version: str, migration: str = "") -> Path:
    """The source tree ``wheel_for(version, migration)`` built its wheel from (the wheel itself
    may come from the shared cache, far from the tree)."""
    wheel_for(version, migration)
    return _work / f"src-{version}-{migration or 'plain'}"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_environments(
    base: Path, env: str = "production", port: int | None = None, **extra: object
) -> int:
    """A ``dhash-environments.toml`` in ``base``: root under ``base/var``, a free port, shared
    dependencies (release venvs layered on this interpreter's packages), preflight as warnings.
    """
    port = port or free_port()
    values: dict[str, object] = {
        "port": port,
        "root": f"var/{env}",
        "release_deps": "shared",
        "preflight": "warn",
        "shutdown_grace_seconds": 5,
        "channels": ["file"],
        **extra,
    }
    lines = [f"[{env}]"]
    for key, value in values.items():
        if isinstance(value, str):
            lines.append(f'{key} = "{value}"')
        elif isinstance(value, list):
            lines.append(f"{key} = [{', '.join(repr(v).replace(chr(39), chr(34)) for v in value)}]")
        else:
            lines.append(f"{key} = {value}")
    (base / "dhash-environments.toml").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return port


def dhash_env(base: Path) -> dict[str, str]:
    """The environment a ``dhash`` child runs with: no DHASH_* leaking in from the caller."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DHASH_")}
    env["DHASH_ENVIRONMENTS_FILE"] = str(base / "dhash-environments.toml")
    return env


def dhash_bin() -> str:
    return str(Path(sys.executable).parent / "dhash")


def run_in(base: Path, argv: list[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run a command (``dhash`` or a guide shim) from ``base`` as an operator would there."""
    return subprocess.run(
        argv,
        cwd=base,
        env=dhash_env(base),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
