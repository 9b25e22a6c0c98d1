"""Releases installed for real: a venv per version, release.json last, idempotent, conflicts."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from dhash_rollout.releases import (
    LOCK_FILE,
    WHEEL_LOCK,
    BuildError,
    ReleaseSource,
    build_wheel,
    install_release,
    list_releases,
    normalize_version,
    read_release,
    sha256_file,
    source_version,
)
from dhash_service.errors import ConfigError, Conflict
from tests.support.release_builds import CHECKOUT, tree_for, wheel_for
from tests.unit.test_lock_files import parse_lock


def test_a_wheel_installs_as_a_versioned_release_that_runs(tmp_path: Path) -> None:
    wheel = wheel_for("1.0.0")
    release = install_release(tmp_path, ReleaseSource("wheel", str(wheel)), deps="shared")
    assert release.path == tmp_path / "releases" / "1.0.0"
    recorded = json.loads((release.path / "release.json").read_text())
    assert recorded["version"] == "1.0.0"
    assert recorded["wheel_sha256"] == sha256_file(wheel)
    assert recorded["source"] == f"wheel:{wheel}"
    assert {"created_at", "deps"} <= set(recorded)
    out = subprocess.run(
        [str(release.dhash), "version"], check=False, capture_output=True, text=True
    )
    assert out.stdout.strip() == "1.0.0"
    # The release runs its own copy of the code, not the checkout's.
    where = subprocess.run(
        [
            str(release.venv / "bin" / "python"),
            "-c",
            "import dhash_service; print(dhash_service.__file__)",
        ],
        check=False,
        capture_output=True,
        text=True,
    )
    assert where.stdout.startswith(str(release.venv))


def test_installing_the_same_build_again_reuses_it(tmp_path: Path) -> None:
    source = ReleaseSource("wheel", str(wheel_for("1.0.0")))
    first = install_release(tmp_path, source, deps="shared")
    again = install_release(tmp_path, source, deps="shared")
    assert again.created_at == first.created_at
    assert [r.version for r in list_releases(tmp_path)] == ["1.0.0"]


def test_a_different_build_under_the_same_version_is_refused(tmp_path: Path) -> None:
    install_release(tmp_path, ReleaseSource("wheel", str(wheel_for("1.0.0"))), deps="shared")
    other = wheel_for("1.0.0", migration="reversible")
    with pytest.raises(Conflict, match="bump the version"):
        install_release(tmp_path, ReleaseSource("wheel", str(other)), deps="shared")


def test_a_half_finished_install_is_redone(tmp_path: Path) -> None:
    source = ReleaseSource("wheel", str(wheel_for("1.0.0")))
    release = install_release(tmp_path, source, deps="shared")
    (release.path / "release.json").unlink()  # as if killed before the last write
    assert read_release(release.path) is None
    assert list_releases(tmp_path) == []
    again = install_release(tmp_path, source, deps="shared")
    assert read_release(again.path) is not None


def test_the_expected_version_must_match_the_build(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"builds version 1\.0\.0, not 2\.0\.0"):
        install_release(tmp_path, ReleaseSource("wheel", str(wheel_for("1.0.0"))), version="v2.0.0")


@pytest.mark.matrix(keep=1, group="built")  # make test: one of the two builds from source
def test_a_source_directory_is_built_into_a_release(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    shutil.copytree(tree_for("3.0.0"), tree)
    assert source_version(tree) == "3.0.0"
    release = install_release(tmp_path / "root", ReleaseSource("dir", str(tree)), deps="shared")
    assert release.version == "3.0.0"
    assert release.source == f"dir:{tree}"


@pytest.mark.matrix(keep=1, group="built")  # make test: one of the two builds from source
def test_a_git_ref_of_the_checkout_is_exported_and_built(tmp_path: Path) -> None:
    if not (CHECKOUT / ".git").exists():
        pytest.skip("not a git checkout")
    source = ReleaseSource.parse("git:HEAD", CHECKOUT)
    release = install_release(tmp_path, source, version=source_version(CHECKOUT), deps="shared")
    assert release.source == "git:HEAD"
    assert release.version == normalize_version(source_version(CHECKOUT))


def test_a_git_refs_version_is_read_without_building_and_a_bad_ref_is_refused() -> None:
    if not (CHECKOUT / ".git").exists():
        pytest.skip("not a git checkout")
    head = ReleaseSource.parse("git:HEAD", CHECKOUT).version()
    assert head is not None and normalize_version(head)  # the committed version
    with pytest.raises(ConfigError, match=r"git:no-such-ref-here: cannot read pyproject\.toml"):
        ReleaseSource.parse("git:no-such-ref-here", CHECKOUT).version()


def test_an_unknown_source_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a wheel, a directory or git:REF"):
        ReleaseSource.parse("nowhere/at/all", tmp_path)


@pytest.mark.parametrize("bad", ["../etc", "1.0/../../x", "", "v"])
def test_path_like_versions_are_refused(bad: str) -> None:
    with pytest.raises(ConfigError):
        normalize_version(bad)


def _pip_list(release_python: Path) -> dict[str, str]:
    """What is installed in a release venv (it has no pip of its own: the toolkit's pip)."""
    done = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(release_python), "list", "--format", "json"],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    return {canonical(p["name"]): p["version"] for p in json.loads(done.stdout)}


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@pytest.mark.slow
def test_a_full_release_installs_exactly_the_lock_its_wheel_carries(tmp_path: Path) -> None:
    wheel = wheel_for("1.0.0")
    with zipfile.ZipFile(wheel) as archive:
        carried = archive.read(WHEEL_LOCK).decode()
    release = install_release(tmp_path, ReleaseSource("wheel", str(wheel)), deps="full")
    assert (release.path / LOCK_FILE).read_text() == carried  # kept beside the venv
    assert not list(release.venv.glob("lib/python*/site-packages/_dhash_shared_deps.pth"))
    installed = _pip_list(release.venv / "bin" / "python")
    locked = {name: version for name, (version, _hashes) in parse_lock(carried).items()}
    assert {n: installed.get(n) for n in locked} == locked  # every pin, at its version
    assert set(installed) - set(locked) == {"dhash-service"}  # and nothing else
    out = subprocess.run(
        [str(release.dhash), "version"], check=True, capture_output=True, text=True
    )
    assert out.stdout.strip() == "1.0.0"


def _tampered_tree(tmp: Path, package: str) -> Path:
    """A copy of the 1.0.0 build tree whose lock pins ``package`` with hashes nothing has."""
    tree = tmp / "tree"
    shutil.copytree(tree_for("1.0.0"), tree)
    lock = tree / "requirements/runtime.lock"
    lines, inside = [], False
    for line in lock.read_text().splitlines():
        if re.match(r"^[A-Za-z0-9]", line):
            inside = line.startswith(f"{package}==")
        changed = inside and "--hash=sha256:" in line
        lines.append(
            re.sub(r"sha256:[0-9a-f]{64}", "sha256:" + "0" * 64, line) if changed else line
        )
    lock.write_text("\n".join(lines) + "\n")
    return tree


def test_a_tampered_lock_hash_refuses_the_release_and_leaves_nothing(tmp_path: Path) -> None:
    wheel = build_wheel(_tampered_tree(tmp_path, "idna"), tmp_path / "wheels")
    with pytest.raises(BuildError) as refused:
        install_release(tmp_path / "root", ReleaseSource("wheel", str(wheel)), deps="full")
    message = str(refused.value)
    assert message.startswith("refused: idna==") and "did not match the sha256 hashes" in message
    assert WHEEL_LOCK in message and "not installed" in message
    assert not (tmp_path / "root" / "releases" / "1.0.0").exists()  # no half-built release
    assert list_releases(tmp_path / "root") == []


def test_a_wheel_without_a_lock_is_refused_before_anything_is_made(tmp_path: Path) -> None:
    stripped = tmp_path / wheel_for("1.0.0").name
    with zipfile.ZipFile(wheel_for("1.0.0")) as src, zipfile.ZipFile(stripped, "w") as out:
        for item in src.infolist():
            if item.filename != WHEEL_LOCK:
                out.writestr(item, src.read(item))
    with pytest.raises(BuildError, match=f"carries no {WHEEL_LOCK}"):
        install_release(tmp_path / "root", ReleaseSource("wheel", str(stripped)), deps="full")
    assert not (tmp_path / "root" / "releases" / "1.0.0").exists()
