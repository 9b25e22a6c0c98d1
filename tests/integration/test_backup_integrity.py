"""Corrupt backups are rejected, each naming the file; zero corrupt backups are accepted.

The outer SHA-256 catches any change to the archive. The inner checks (manifest, member
digests, zip structure, member names) are tested separately with a *recomputed* ``.sha256``,
as if the corruption had happened before the checksum was written.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import stat
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from dhash_rollout.backup import create_backup, restore_backup, verify_backup
from dhash_rollout.backup.archive import open_archive
from dhash_rollout.backup.checksum import format_checksum_line
from dhash_service.errors import IntegrityError
from tests.integration.backup_support import (
    assert_restores,
    env_db,
    make_sqlite_db,
    run_cli,
    sqlite_content,
    sqlite_env,
)

BIT_FLIP_TRIALS = 200


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, bytes, bytes]]:
    """One real backup: its path, its bytes and its .sha256 bytes (restored after each test)."""
    base = tmp_path_factory.mktemp("integrity")
    env = sqlite_env(base / "var" / "production")
    make_sqlite_db(env_db(env), rows=300)
    info = create_backup(env, base / "backups")
    assert_restores(info.path, sqlite_content(env_db(env)), base / "scratch", "production")
    yield info.path, info.path.read_bytes(), Path(f"{info.path}.sha256").read_bytes()


@pytest.fixture
def backup(pristine: tuple[Path, bytes, bytes]) -> Iterator[Path]:
    path, data, checksum = pristine
    yield path
    path.write_bytes(data)
    Path(f"{path}.sha256").write_bytes(checksum)


def assert_rejected(path: Path) -> IntegrityError:
    with pytest.raises(IntegrityError) as err:
        verify_backup(path)
    assert str(path) in err.value.message or path.name in err.value.message
    assert err.value.exit_code == 4
    return err.value


def test_random_bit_flips_are_all_rejected(backup: Path) -> None:
    rng = random.Random(20240101)
    original = backup.read_bytes()
    accepted = 0
    for _ in range(BIT_FLIP_TRIALS):
        data = bytearray(original)
        data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        backup.write_bytes(bytes(data))
        try:
            verify_backup(backup)
            accepted += 1
        except IntegrityError as err:
            assert backup.name in err.message
    assert accepted == 0


def test_bit_flips_in_the_checksum_file_are_all_rejected(backup: Path) -> None:
    sidecar = Path(f"{backup}.sha256")
    original = sidecar.read_bytes()
    accepted = 0
    for position in range(len(original)):
        for bit in range(8):
            data = bytearray(original)
            data[position] ^= 1 << bit
            sidecar.write_bytes(bytes(data))
            try:
                verify_backup(backup)
                accepted += 1
            except IntegrityError:
                pass
    assert accepted == 0


@pytest.mark.parametrize("keep", [0, 1, 22, 0.5, -22, -1])
def test_truncated_archive_is_rejected(backup: Path, keep: float) -> None:
    data = backup.read_bytes()
    cut = int(len(data) * keep) if isinstance(keep, float) else keep % len(data) if keep else 0
    backup.write_bytes(data[:cut])
    assert_rejected(backup)


def test_appended_byte_is_rejected(backup: Path) -> None:
    backup.write_bytes(backup.read_bytes() + b"\n")
    assert_rejected(backup)


def test_same_length_replacement_is_rejected(backup: Path) -> None:
    data = bytearray(backup.read_bytes())
    rng = random.Random(7)
    for start in (0, len(data) // 3, len(data) - 16):
        replaced = bytearray(data)
        window = bytes(b ^ (1 + rng.randrange(255)) for b in data[start : start + 16])
        replaced[start : start + 16] = window
        assert len(replaced) == len(data)
        backup.write_bytes(bytes(replaced))
        assert_rejected(backup)


def test_missing_checksum_file_is_rejected(backup: Path) -> None:
    Path(f"{backup}.sha256").unlink()
    assert "missing" in assert_rejected(backup).message


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"\n",
        b"not a checksum\n",
        b"ABCDEF" * 10 + b"ABCD  backups/x.zip\n",  # uppercase hex: we only write lowercase
        b"0" * 63 + b"  {name}\n",
        b"0" * 65 + b"  {name}\n",
        b"{sha}{name}\n",
        b"{sha}\t{name}\n",
        b"{sha}  {name}\n{sha}  {name}\n",
        b"{sha}  \\{name}\n",
        b"\xff\xfe{sha}  {name}\n",
        b"{sha}  {name}" + b" " * 5000 + b"\n",
    ],
)
def test_malformed_checksum_file_is_rejected(backup: Path, content: bytes) -> None:
    sha = hashlib.sha256(backup.read_bytes()).hexdigest().encode()
    name = f"backups/{backup.name}".encode()
    Path(f"{backup}.sha256").write_bytes(content.replace(b"{sha}", sha).replace(b"{name}", name))
    assert_rejected(backup)


@pytest.mark.parametrize(
    "named",
    [
        "../x",
        "../backups/{name}",
        "backups/../backups/{name}",
        "./{name}",
        "other/{name}",
        "backups/dhash_production_20000101_000000.zip",
        "{name}.bak",
        "/etc/passwd",
        "/tmp/{name}",
    ],
)
def test_checksum_file_naming_another_file_is_rejected(backup: Path, named: str) -> None:
    sha = hashlib.sha256(backup.read_bytes()).hexdigest()
    Path(f"{backup}.sha256").write_text(f"{sha}  {named.format(name=backup.name)}\n")
    assert_rejected(backup)


@pytest.mark.parametrize("named", ["{name}", "backups/{name}", "{abs}"])
def test_checksum_file_may_name_the_archive_plainly_or_absolutely(backup: Path, named: str) -> None:
    sha = hashlib.sha256(backup.read_bytes()).hexdigest()
    line = f"{sha}  {named.format(name=backup.name, abs=backup.resolve())}\n"
    Path(f"{backup}.sha256").write_text(line)  # e.g. `shasum -a 256 x.zip > x.zip.sha256`
    assert verify_backup(backup).sha256 == sha


def test_cli_verify_exits_4_naming_the_file(backup: Path) -> None:
    backup.write_bytes(backup.read_bytes()[:-1])
    done = run_cli("backup", "verify", str(backup), cwd=backup.parent.parent)
    assert done.returncode == 4
    assert str(backup) in done.stderr and "Traceback" not in done.stderr
    env = backup.name.split("_")[1]
    assert f"(make a new one: ./scripts/backup_dhash.sh --env {env})" in done.stderr


# --- inner checks, with the .sha256 recomputed after tampering -------------------------------


def rewrite(
    backup: Path,
    edit: Callable[[dict[str, bytes], list[zipfile.ZipInfo]], list[tuple[zipfile.ZipInfo, bytes]]],
) -> None:
    """Rebuild the archive through ``edit`` and write a matching ``.sha256``."""
    with zipfile.ZipFile(backup) as zf:
        infos = zf.infolist()
        members = {i.filename: zf.read(i) for i in infos}
    entries = edit(members, infos)
    rebuilt = backup.with_name("rebuilt.zip")
    with zipfile.ZipFile(rebuilt, "w") as zf:
        for info, data in entries:
            zf.writestr(info, data)
    shutil.move(rebuilt, backup)
    sha = hashlib.sha256(backup.read_bytes()).hexdigest()
    Path(f"{backup}.sha256").write_text(format_checksum_line(sha, backup))


def same(
    members: dict[str, bytes], infos: list[zipfile.ZipInfo]
) -> list[tuple[zipfile.ZipInfo, bytes]]:
    return [(i, members[i.filename]) for i in infos]


def manifest_of(members: dict[str, bytes]) -> dict[str, object]:
    return json.loads(members["manifest.json"])


def with_manifest(
    members: dict[str, bytes], infos: list[zipfile.ZipInfo], manifest: dict[str, object]
) -> list[tuple[zipfile.ZipInfo, bytes]]:
    return [
        (i, json.dumps(manifest).encode() if i.filename == "manifest.json" else members[i.filename])
        for i in infos
    ]


def test_rebuilt_untampered_archive_still_verifies(backup: Path) -> None:
    rewrite(backup, same)
    verify_backup(backup)


def test_member_changed_behind_the_manifest_is_rejected(backup: Path) -> None:
    def edit(
        members: dict[str, bytes], infos: list[zipfile.ZipInfo]
    ) -> list[tuple[zipfile.ZipInfo, bytes]]:
        db = bytearray(members["database/dhash.sqlite3"])
        db[-100] ^= 0xFF
        members["database/dhash.sqlite3"] = bytes(db)
        return same(members, infos)

    rewrite(backup, edit)
    assert "database/dhash.sqlite3" in assert_rejected(backup).message


def test_manifest_digest_changed_is_rejected(backup: Path) -> None:
    def edit(
        members: dict[str, bytes], infos: list[zipfile.ZipInfo]
    ) -> list[tuple[zipfile.ZipInfo, bytes]]:
        manifest = manifest_of(members)
        manifest["members"]["database/dhash.sqlite3"]["sha256"] = "0" * 64  # type: ignore[index]
        return with_manifest(members, infos, manifest)

    rewrite(backup, edit)
    assert_rejected(backup)


@pytest.mark.parametrize(
    "change",
    [
        lambda m: m.pop("members"),
        lambda m: m.update(format="other/1"),
        lambda m: m["members"]["database/dhash.sqlite3"].update(size=-1),
        lambda m: m["members"]["database/dhash.sqlite3"].update(size=10**15),
        lambda m: m["members"].pop("database/dhash.sqlite3"),
        lambda m: m["members"].update({"../evil": {"sha256": "0" * 64, "size": 1}}),
        lambda m: m.update(env="staging"),
    ],
)
def test_inconsistent_manifest_is_rejected(backup: Path, change: Callable[[dict], object]) -> None:  # type: ignore[type-arg]
    def edit(
        members: dict[str, bytes], infos: list[zipfile.ZipInfo]
    ) -> list[tuple[zipfile.ZipInfo, bytes]]:
        manifest = manifest_of(members)
        change(manifest)
        return with_manifest(members, infos, manifest)

    rewrite(backup, edit)
    assert_rejected(backup)


def test_missing_or_unparsable_manifest_is_rejected(backup: Path) -> None:
    rewrite(
        backup,
        lambda members, infos: [
            (i, members[i.filename]) for i in infos if i.filename != "manifest.json"
        ],
    )
    assert "manifest.json is missing" in assert_rejected(backup).message


@pytest.mark.parametrize(
    "evil", ["../evil.sqlite3", "/etc/cron.d/evil", "a/../../b", "C:/evil", "a\\..\\b", "dir/"]
)
def test_unsafe_member_names_are_rejected_even_with_force(
    tmp_path: Path, backup: Path, evil: str
) -> None:
    def edit(
        members: dict[str, bytes], infos: list[zipfile.ZipInfo]
    ) -> list[tuple[zipfile.ZipInfo, bytes]]:
        return [*same(members, infos), (zipfile.ZipInfo(evil), b"x")]

    rewrite(backup, edit)
    assert (
        "unsafe member" in assert_rejected(backup).message
        or "not a regular file" in assert_rejected(backup).message
    )
    env = sqlite_env(tmp_path / "target")
    with pytest.raises(IntegrityError):
        restore_backup(backup, env, force=True, lock_dir=tmp_path)
    assert not env_db(env).exists()
    assert not (tmp_path / "evil.sqlite3").exists()


def test_symlink_member_is_rejected(backup: Path) -> None:
    def edit(
        members: dict[str, bytes], infos: list[zipfile.ZipInfo]
    ) -> list[tuple[zipfile.ZipInfo, bytes]]:
        link = zipfile.ZipInfo("database/link")
        link.create_system = 3
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        return [*same(members, infos), (link, b"/etc/passwd")]

    rewrite(backup, edit)
    assert "not a regular file" in assert_rejected(backup).message


def test_duplicate_member_is_rejected(backup: Path) -> None:
    def edit(
        members: dict[str, bytes], infos: list[zipfile.ZipInfo]
    ) -> list[tuple[zipfile.ZipInfo, bytes]]:
        return [*same(members, infos), (zipfile.ZipInfo("database/dhash.sqlite3"), b"other")]

    with pytest.warns(UserWarning, match="Duplicate name"):
        rewrite(backup, edit)
    assert "duplicate member" in assert_rejected(backup).message


def test_unlisted_extra_member_is_rejected(backup: Path) -> None:
    rewrite(
        backup,
        lambda members, infos: [*same(members, infos), (zipfile.ZipInfo("extra.txt"), b"hi")],
    )
    assert "unlisted" in assert_rejected(backup).message


def test_archive_renamed_to_another_environment_is_rejected(backup: Path) -> None:
    other = backup.with_name(backup.name.replace("production", "staging"))
    shutil.copyfile(backup, other)
    sha = hashlib.sha256(other.read_bytes()).hexdigest()
    Path(f"{other}.sha256").write_text(format_checksum_line(sha, other))
    try:
        assert "manifest says 'production'" in assert_rejected(other).message
    finally:
        other.unlink()
        Path(f"{other}.sha256").unlink()


def test_archive_expanding_beyond_the_size_bound_is_rejected_before_reading(backup: Path) -> None:
    declared = sum(i.file_size for i in zipfile.ZipFile(backup).infolist())
    with pytest.raises(IntegrityError, match="expands to more than") as err:
        open_archive(backup, max_uncompressed=declared - 1)
    assert str(backup) in err.value.message and err.value.exit_code == 4
    open_archive(backup, max_uncompressed=declared).zf.close()
