"""Backup and restore of a 1M-image PostgreSQL database: ours vs raw pg_dump / pg_restore.

Same server, same database, same run, interleaved repetitions (the order alternates):

* backup:  ``create_backup`` (pg_dump -Fc streamed into the zip, manifest with row counts and
  content hashes of the dumped snapshot, ``.sha256``, then full verification from disk)
  vs ``pg_dump -Fc -f FILE`` + ``sha256sum FILE``.
* restore: ``restore_backup`` (verify, new database, pg_restore streamed from the zip, row-count
  check, rename swap) vs ``CREATE DATABASE`` + ``pg_restore`` of the raw dump file, same flags.

Targets: backup + verify within 1.3x of pg_dump + sha256sum; restore within 1.2x of pg_restore.
The database has the real schema (the service's Alembic migrations at head), filled with COPY:
250k contents, 1M images, 1M hashes, 1M library members. Run with ``make bench-backup``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.postgres import PostgresServer, running_postgres  # noqa: E402

from dhash_rollout import migrate  # noqa: E402
from dhash_rollout.backup import create_backup, restore_backup  # noqa: E402
from dhash_rollout.backup.postgres_db import tool  # noqa: E402
from dhash_rollout.environments import Environment  # noqa: E402

IMAGES_PER_CONTENT = 4
CHUNK_ROWS = 50_000


def _copy(conn: psycopg.Connection[tuple[object, ...]], sql: str, lines: Iterator[str]) -> None:
    with conn.cursor().copy(sql) as copy:  # type: ignore[arg-type]
        batch: list[str] = []
        for line in lines:
            batch.append(line)
            if len(batch) >= CHUNK_ROWS:
                copy.write("".join(batch))
                batch.clear()
        if batch:
            copy.write("".join(batch))


def fill(server: PostgresServer, database: str, images: int) -> None:
    """The service's schema at head, then rows with COPY (not row inserts)."""
    url = server.url(database)
    migrate.upgrade(url)
    contents = images // IMAGES_PER_CONTENT
    when = "2024-01-01 00:00:00+00"
    with psycopg.connect(server.dsn(database)) as conn:
        _copy(
            conn,
            "COPY contents (id, sha256, input_kind, size_bytes, filename, source, failures, "
            "created_at) FROM STDIN",
            (
                f"{c}\t{c:064x}\timage\t{50_000 + c % 900_000}\tupload-{c}.jpg\tbench\t[]\t{when}\n"
                for c in range(1, contents + 1)
            ),
        )
        _copy(
            conn,
            "COPY images (id, content_id, locator, kind, width, height, decision, confidence, "
            "created_at) FROM STDIN",
            (
                f"{i}\t{(i - 1) // IMAGES_PER_CONTENT + 1}\tpage/{(i - 1) % IMAGES_PER_CONTENT}"
                f"\timage\t{320 + i % 1600}\t{240 + i % 1200}\tnew\t{(i % 1000) / 1000}\t{when}\n"
                for i in range(1, images + 1)
            ),
        )
        _copy(
            conn,
            "COPY hashes (id, image_id, algorithm, bits, value, wide, low_information) FROM STDIN",
            (
                f"{i}\t{i}\tdhash64\t64\t{((i * 0x9E3779B97F4A7C15) % (1 << 64)) - (1 << 63)}"
                f"\t\\N\t{'t' if i % 97 == 0 else 'f'}\n"
                for i in range(1, images + 1)
            ),
        )
        _copy(
            conn,
            "COPY library_members (id, image_id, added_at) FROM STDIN",
            (f"{i}\t{i}\t{when}\n" for i in range(1, images + 1)),
        )
        conn.execute("ANALYZE")


def timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def run(cmd: list[str]) -> None:
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="dhash-bench-backup-"))
    results: dict[str, list[float]] = {
        k: [] for k in ("ours_backup", "raw_backup", "ours_restore", "raw_restore")
    }
    try:
        with running_postgres() as server:
            live = server.create_database("bench")
            t = timed(lambda: fill(server, live, args.images))
            print(f"filled {args.images} images (real schema, COPY) in {t:.1f}s", flush=True)
            env = Environment(
                name="production",
                root=work / "env",
                port=1,
                url="http://127.0.0.1:1",
                database_url=server.url(live),
            )
            pg_dump, pg_restore = tool("pg_dump"), tool("pg_restore")
            base = ["-h", "127.0.0.1", "-p", str(server.port), "-U", server.user]
            raw_file = work / "raw.dump"
            backups = work / "backups"
            latest: list[Path] = []

            def ours_backup() -> None:
                info = create_backup(env, backups, verify=True)
                latest.append(info.path)

            def raw_backup() -> None:
                run([pg_dump, *base, "--format=custom", f"--file={raw_file}", live])
                run(["sha256sum", str(raw_file)])

            def raw_restore_timed() -> float:
                # CREATE DATABASE is part of both (ours creates its new database too); DROP is not.
                target_holder: list[str] = []
                started = time.perf_counter()
                target_holder.append(server.create_database("raw"))
                run(
                    [
                        pg_restore,
                        *base,
                        "--no-owner",
                        "--no-privileges",
                        "--exit-on-error",
                        f"--dbname={target_holder[0]}",
                        str(raw_file),
                    ]
                )
                elapsed = time.perf_counter() - started
                server.drop_database(target_holder[0])
                return elapsed

            def ours_restore_timed() -> float:
                started = time.perf_counter()
                result = restore_backup(latest[-1], env)
                elapsed = time.perf_counter() - started
                assert result.snapshot is not None
                server.drop_database(result.snapshot.rsplit("/", 1)[-1])
                return elapsed

            for rep in range(args.repeat):
                pair = [("ours_backup", ours_backup), ("raw_backup", raw_backup)]
                for name, fn in pair if rep % 2 == 0 else reversed(pair):
                    results[name].append(timed(fn))
                    print(f"  rep {rep + 1} {name}: {results[name][-1]:.2f}s", flush=True)
                for old in latest[:-1]:
                    old.unlink(missing_ok=True)
                    Path(f"{old}.sha256").unlink(missing_ok=True)
                restores = [
                    ("raw_restore", raw_restore_timed),
                    ("ours_restore", ours_restore_timed),
                ]
                for name, fn in restores if rep % 2 == 0 else reversed(restores):
                    results[name].append(fn())
                    print(f"  rep {rep + 1} {name}: {results[name][-1]:.2f}s", flush=True)
            zip_size = latest[-1].stat().st_size
            raw_size = raw_file.stat().st_size
    finally:
        shutil.rmtree(work, ignore_errors=True)

    med = {k: statistics.median(v) for k, v in results.items()}
    backup_ratio = med["ours_backup"] / med["raw_backup"]
    restore_ratio = med["ours_restore"] / med["raw_restore"]
    rows = [
        ("raw `pg_dump -Fc` + `sha256sum`", med["raw_backup"], 1.0, ""),
        ("`dhash backup create` (incl. verify)", med["ours_backup"], backup_ratio, "<= 1.30"),
        ("raw `createdb` + `pg_restore`", med["raw_restore"], 1.0, ""),
        ("`dhash restore` (verify, load, swap)", med["ours_restore"], restore_ratio, "<= 1.20"),
    ]
    print(
        f"\n| {args.images:,} images, {args.repeat} interleaved reps | median s | ratio | target |"
    )
    print("|---|---|---|---|")
    for label, seconds, ratio, target in rows:
        print(f"| {label} | {seconds:.2f} | {ratio:.2f} | {target} |")
    print(f"\narchive {zip_size / 1e6:.1f} MB, raw dump {raw_size / 1e6:.1f} MB")
    print(f"cpus={os.cpu_count()}; all runs (s): {results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
