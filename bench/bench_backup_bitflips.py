"""Corruption sweep: 1,000+ random bit flips (plus truncations, appended bytes and every single
bit flip of the ``.sha256``) against a real backup; every one must be rejected.

Prints how many trials ran, how many were rejected (must be all) and the verify rate. The CI
suite runs 200 of the same trials (tests/integration/test_backup_integrity.py).
"""

from __future__ import annotations

import argparse
import random
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dhash_rollout.backup import create_backup, verify_backup  # noqa: E402
from dhash_rollout.environments import Environment  # noqa: E402
from dhash_service.errors import IntegrityError  # noqa: E402


def rejected(path: Path) -> bool:
    try:
        verify_backup(path)
    except IntegrityError as err:
        assert path.name in err.message, err.message
        return True
    return False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="dhash-bitflips-") as tmp:
        root = Path(tmp)
        db = root / "env" / "shared" / "data" / "dhash.sqlite3"
        db.parent.mkdir(parents=True)
        conn = sqlite3.connect(db)
        conn.execute("CREATE TABLE images (id INTEGER PRIMARY KEY, hash INTEGER, path TEXT)")
        conn.executemany(
            "INSERT INTO images (hash, path) VALUES (?, ?)",
            [(rng.getrandbits(63), f"/lib/{i:07d}.jpg") for i in range(2000)],
        )
        conn.commit()
        conn.close()
        env = Environment("production", root / "env", 1, "http://127.0.0.1:1", f"sqlite:///{db}")
        archive = create_backup(env, root / "backups").path
        sidecar = Path(f"{archive}.sha256")
        original, original_sidecar = archive.read_bytes(), sidecar.read_bytes()

        counts = {"trials": 0, "rejected": 0}
        started = time.perf_counter()

        def trial(data: bytes, side: bytes = original_sidecar) -> None:
            archive.write_bytes(data)
            sidecar.write_bytes(side)
            counts["trials"] += 1
            counts["rejected"] += rejected(archive)

        for _ in range(args.trials):
            data = bytearray(original)
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
            trial(bytes(data))
        for cut in (0, 1, len(original) // 2, len(original) - 1):
            trial(original[:cut])
        trial(original + b"\0")
        for position in range(len(original_sidecar)):
            for bit in range(8):
                side = bytearray(original_sidecar)
                side[position] ^= 1 << bit
                trial(original, bytes(side))
        elapsed = time.perf_counter() - started
        archive.write_bytes(original)
        sidecar.write_bytes(original_sidecar)
        verify_backup(archive)  # the pristine pair still passes

    accepted = counts["trials"] - counts["rejected"]
    print(
        f"archive {len(original)} bytes: {counts['trials']} corrupt variants "
        f"({args.trials} random archive bit flips, 5 truncations/appends, "
        f"{len(original_sidecar) * 8} .sha256 bit flips); rejected {counts['rejected']}, "
        f"accepted {accepted}; {counts['trials'] / elapsed:.0f} verifies/s"
    )
    return 0 if accepted == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
