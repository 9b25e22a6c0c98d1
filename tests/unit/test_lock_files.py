"""The lock files pin every dependency with hashes, agree with each other and with pyproject.toml,
and are what this environment runs (so a fresh machine next year installs the same set)."""

from __future__ import annotations

import importlib.metadata
import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]
RUNTIME = REPO / "requirements/runtime.lock"
DEV = REPO / "requirements/dev.lock"
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)")


def parse_lock(text: str) -> dict[str, tuple[str, list[str]]]:
    """``name -> (version, hashes)`` of a pip-compile lock (``name==version \\`` then hashes)."""
    pins: dict[str, tuple[str, list[str]]] = {}
    current = ""
    for line in text.splitlines():
        stripped = line.strip()
        if match := _PIN.match(line):
            current = canonicalize_name(match.group(1))
            pins[current] = (match.group(2), [])
        elif stripped.startswith("--hash=sha256:") and current:
            pins[current][1].append(stripped.removeprefix("--hash=sha256:").rstrip(" \\"))
        elif stripped and not stripped.startswith("#"):
            raise AssertionError(f"unexpected lock line {line!r}")
    return pins


def names(requirements: list[str]) -> set[str]:
    return {canonicalize_name(Requirement(r).name) for r in requirements}


def test_parse_lock_reads_pins_and_hashes_and_refuses_a_loose_line() -> None:
    text = "a-b==1.0 \\\n    --hash=sha256:aa \\\n    --hash=sha256:bb\n    # via x\nc>=2\n"
    try:
        parse_lock(text)
    except AssertionError as exc:
        assert "c>=2" in str(exc)
    else:
        raise AssertionError("a loose requirement was accepted")
    assert parse_lock(text.replace("c>=2\n", "")) == {"a-b": ("1.0", ["aa", "bb"])}


def test_every_locked_package_has_an_exact_version_and_sha256_hashes() -> None:
    for lock in (RUNTIME, DEV):
        pins = parse_lock(lock.read_text(encoding="utf-8"))
        assert pins, lock
        for name, (_version, hashes) in pins.items():
            assert hashes, f"{lock.name}: {name} has no hash"
            assert all(re.fullmatch(r"[0-9a-f]{64}", h) for h in hashes), name


def test_runtime_lock_covers_every_declared_dependency_within_its_range() -> None:
    pins = parse_lock(RUNTIME.read_text(encoding="utf-8"))
    for text in PROJECT["dependencies"]:
        requirement = Requirement(text)
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{name} is declared but not locked: run make lock"
        assert requirement.specifier.contains(pins[name][0]), (name, pins[name][0])


def test_dev_lock_adds_the_extras_at_the_runtime_versions() -> None:
    runtime = parse_lock(RUNTIME.read_text(encoding="utf-8"))
    dev = parse_lock(DEV.read_text(encoding="utf-8"))
    extras = names(
        PROJECT["optional-dependencies"]["dev"] + PROJECT["optional-dependencies"]["bench"]
    )
    assert extras <= dev.keys(), extras - dev.keys()
    for name, (version, _hashes) in runtime.items():
        assert dev.get(name, ("missing",))[0] == version, f"{name}: dev.lock differs from runtime"


def test_the_locked_pillow_keeps_the_major_the_hashes_were_checked_with() -> None:
    pins = (REPO / "requirements/pins.txt").read_text(encoding="utf-8")
    wanted = SpecifierSet(re.search(r"^pillow(\S+)", pins, re.M).group(1))  # type: ignore[union-attr]
    locked = parse_lock(RUNTIME.read_text(encoding="utf-8"))["pillow"][0]
    assert wanted.contains(locked), (locked, wanted)


def test_this_environment_runs_the_locked_versions() -> None:
    drift = {}
    for name, (version, _hashes) in parse_lock(DEV.read_text(encoding="utf-8")).items():
        try:
            installed = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            installed = "not installed"
        if installed != version:
            drift[name] = (version, installed)
    assert not drift, f"locked vs installed (rebuild the venv with make): {drift}"
