"""A full release installs from the lock its wheel carries: reading that lock out of a wheel,
and naming the packages pip's hash-checking mode refused."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from dhash_rollout.releases import WHEEL_LOCK, BuildError, hash_mismatches, wheel_lock

LOCK = (
    "alembic==1.20.1 \\\n"
    "    --hash=sha256:83490def1f723413db5096591f7609ac52544805be93849170088ed04f5a2e0b\n"
    "    # via dhash-service (pyproject.toml)\n"
)

# pip 25's own output for a lock whose idna hashes were changed (captured on this machine).
PIP_REFUSAL = """\
WARNING: Location 'file:///opt/pypi-more/simple/idna/' is ignored: it is neither a file nor a directory.
ERROR: THESE PACKAGES DO NOT MATCH THE HASHES FROM THE REQUIREMENTS FILE. If you have updated the package versions, please update the hashes. Otherwise, examine the package contents carefully; someone may have tampered with them.
    idna==3.20 from file:///opt/pypi/files/idna-3.20-py3-none-any.whl#sha256=ab7ae7122974553370f0bdb919e1a960b2cd1bc1ef0276416d896db81c14582c (from -r /tmp/hm/bad.lock (line 1)):
        Expected sha256 0000000025b95ded1eae8a46181a1a6c56c92c96f0e2b005d9ff8dc0210cab44
        Expected     or 000000002974553370f0bdb919e1a960b2cd1bc1ef0276416d896db81c14582c
             Got        ab7ae7122974553370f0bdb919e1a960b2cd1bc1ef0276416d896db81c14582c
    pillow==12.0.0 from file:///opt/pypi/files/pillow-12.0.0-cp311-cp311-manylinux_2_28_x86_64.whl#sha256=aa (from -r x (line 9)):
        Expected sha256 00
             Got        aa
"""  # noqa: E501


@pytest.mark.parametrize(
    ("output", "refused"),
    [
        (PIP_REFUSAL, ["idna==3.20", "pillow==12.0.0"]),
        ("ERROR: No matching distribution found for idna==3.20\n", []),
        ("    idna==3.20 from file:///x (from -r y (line 1)):\n", []),  # no header: not a refusal
        ("", []),
    ],
)
def test_hash_mismatches_names_what_pip_refused(output: str, refused: list[str]) -> None:
    assert hash_mismatches(output) == refused


def _wheel(tmp: Path, members: dict[str, str]) -> Path:
    path = tmp / "dhash_service-9.9.9-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        for name, text in members.items():
            archive.writestr(name, text)
    return path


def test_the_lock_a_wheel_carries_is_read_from_it(tmp_path: Path) -> None:
    wheel = _wheel(tmp_path, {"dhash_service/__init__.py": "", WHEEL_LOCK: LOCK})
    assert wheel_lock(wheel) == LOCK


@pytest.mark.parametrize(
    ("members", "message"),
    [
        ({"dhash_service/__init__.py": ""}, "carries no dhash_service/runtime.lock"),
        ({WHEEL_LOCK: "# nothing here\n"}, "pins no package"),
        ({WHEEL_LOCK: "alembic==1.20.1\n"}, "has no sha256 hashes"),
    ],
)
def test_a_wheel_without_a_usable_lock_is_refused(
    tmp_path: Path, members: dict[str, str], message: str
) -> None:
    with pytest.raises(BuildError, match=message):
        wheel_lock(_wheel(tmp_path, members))


def test_a_file_that_is_not_a_wheel_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "dhash_service-9.9.9-py3-none-any.whl"
    bad.write_text("not a zip")
    with pytest.raises(BuildError, match=r"cannot read dhash_service/runtime\.lock"):
        wheel_lock(bad)
