"""Releases A and B for the demo: two real wheels of this checkout, told apart by version.

Both are the code you have checked out, built by the toolkit's own builder (the one ``dhash
deploy --source DIR`` uses). They differ only in their version (``<version>+a``, ``<version>+b``)
so they install side by side; what makes B bad is not in the wheel but in its release settings
at deploy time (a ``DHASH_FAULT_*`` setting, see ``dhash_service/faults.py``), exactly as a
misconfigured or regressed release reaches production.
"""

from __future__ import annotations

import re
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from dhash_rollout.releases import build_wheel, source_version
from dhash_service.errors import ConfigError

# What a wheel build reads: the sources, the project file, its readme and the lock it carries.
TREE = ("src", "pyproject.toml", "README.md", "requirements/runtime.lock")
VERSION_FILE = Path("src/dhash_service/__init__.py")


@dataclass(frozen=True)
class Build:
    label: str  # "A" or "B"
    version: str
    wheel: Path


def checkout_root() -> Path:
    """The checkout this module runs from (``make demo`` runs from a clone)."""
    root = Path(__file__).resolve().parents[3]
    if not (root / "pyproject.toml").is_file() or not (root / VERSION_FILE).is_file():
        raise ConfigError(
            f"the rollout demo builds its releases from a checkout; {root} is not one "
            "(run `make demo` from a clone of the repository)"
        )
    return root


def _copy_tree(checkout: Path, dest: Path, version: str) -> None:
    shutil.rmtree(dest, ignore_errors=True)
    for name in TREE:
        source = checkout / name
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, target)
    init = dest / VERSION_FILE
    text = init.read_text(encoding="utf-8")
    init.write_text(
        re.sub(r'^__version__ = "[^"]+"', f'__version__ = "{version}"', text, flags=re.M),
        encoding="utf-8",
    )


def build(checkout: Path, work: Path, label: str, version: str) -> Build:
    tree = work / f"src-{label.lower()}"
    _copy_tree(checkout, tree, version)
    wheel = build_wheel(tree, work / f"wheel-{label.lower()}")
    return Build(label, version, wheel)


def build_releases(checkout: Path, work: Path) -> tuple[Build, Build]:
    """A and B, built side by side (each build is a ``pip wheel`` child process)."""
    base = source_version(checkout)
    with ThreadPoolExecutor(max_workers=2) as pool:
        a = pool.submit(build, checkout, work, "A", f"{base}+a")
        b = pool.submit(build, checkout, work, "B", f"{base}+b")
        return a.result(), b.result()
