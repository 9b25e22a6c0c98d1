"""Search-index benchmark: multi-index hashing vs numpy brute force vs FAISS IndexBinaryFlat.

Anchor: FAISS ``IndexBinaryFlat`` (exhaustive SIMD Hamming scan), single-threaded like the other
two. All three answer the same queries on the same data, interleaved query by query (the order
rotates), and every answer is checked against the brute-force reference: a mismatch aborts the
run. FAISS's binary ``range_search`` keeps distances strictly below its radius, so it is asked
for ``radius + 1``.

Data sets:
* uniform: 1M and 10M random 64-bit hashes (MIH's best case: balanced buckets);
* real dhash: dhash64 of photo-like images from the test corpus generator
  (``tests/support/corpus.py``) and of 13 transforms of each (re-encodes, resizes, crops,
  brightness, contrast, blur, rotation, overlay, flip): clustered and skewed like real data.

Queries: half are stored hashes with 0..radius random bit flips (near-duplicates, hits), half
unrelated (uniform: random values; real: transforms of photos that are not in the index).

    python bench/bench_search.py [--sizes 1000000,10000000] [--queries 200] [--real-bases 12000]
                                 [--results bench/RESULTS.md]   (writes only its own section)
"""

from __future__ import annotations

import argparse
import gc
import io
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import faiss
import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "src"), str(REPO)]

from tests.support.corpus import realistic_photo  # noqa: E402

from dhash_service.hashing import hash_image  # noqa: E402
from dhash_service.index import BruteForceIndex, MultiIndexHashing, Neighbors  # noqa: E402

RADII = (4, 10)
SECTION = "## Search index (`make bench-search`)"

Searcher = Callable[[int, int], list[tuple[int, int]]]  # (id, distance) sorted by id


# --- the three contenders ------------------------------------------------------------------------


def _sorted_pairs(ids: np.ndarray, distances: np.ndarray) -> list[tuple[int, int]]:
    """(id, distance) pairs sorted by id: the same cheap normalisation for every contender."""
    return sorted(zip(ids.tolist(), distances.tolist(), strict=True))


def _from_neighbors(found: Neighbors) -> list[tuple[int, int]]:
    return _sorted_pairs(found.ids, found.distances)


@dataclass
class Contenders:
    mih: MultiIndexHashing
    brute: BruteForceIndex
    faiss_index: faiss.IndexBinaryFlat
    build_seconds: dict[str, float]

    @classmethod
    def build(cls, hashes: np.ndarray) -> Contenders:
        ids = np.arange(hashes.size, dtype=np.int64)
        seconds: dict[str, float] = {}
        start = time.perf_counter()
        mih = MultiIndexHashing(min_tail=0)  # everything in the static table, none in the tail
        mih.add(ids, hashes)
        seconds["mih"] = time.perf_counter() - start
        brute = BruteForceIndex(64)
        brute.add(ids, hashes)
        start = time.perf_counter()
        flat = faiss.IndexBinaryFlat(64)
        flat.add(hashes.view(np.uint8).reshape(-1, 8))
        seconds["faiss"] = time.perf_counter() - start
        return cls(mih, brute, flat, seconds)

    def searchers(self) -> dict[str, Searcher]:
        def faiss_search(value: int, radius: int) -> list[tuple[int, int]]:
            query = np.array([value], dtype=np.uint64).view(np.uint8).reshape(1, 8)
            _, distances, labels = self.faiss_index.range_search(query, radius + 1)
            return _sorted_pairs(labels.astype(np.int64), distances.astype(np.int64))

        return {
            "faiss_flat": faiss_search,
            "mih": lambda v, r: _from_neighbors(self.mih.search(v, r)),
            "numpy_brute": lambda v, r: _from_neighbors(self.brute.search(v, r)),
        }

    def mih_bytes_per_hash(self) -> float:
        return self.mih.nbytes / len(self.mih)

    def mih_layout(self) -> tuple[int, ...]:
        table = self.mih._snapshot.table
        assert table is not None
        return table.layout.widths


# --- data ----------------------------------------------------------------------------------------


def uniform_hashes(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 2**64, size=n, dtype=np.uint64)


def _jpeg(image: Image.Image, quality: int) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    buffer.seek(0)
    return Image.open(buffer)


def _crop(image: Image.Image, share: float, *, centred: bool = True) -> Image.Image:
    w, h = image.size
    dx, dy = round(w * share), round(h * share)
    return image.crop((dx, dy, w - dx, h - dy) if centred else (dx, dy, w, h))


def _overlay(image: Image.Image) -> Image.Image:
    marked = image.copy()
    w, h = marked.size
    ImageDraw.Draw(marked).rectangle((w * 0.7, h * 0.8, w * 0.95, h * 0.95), fill=(255, 255, 255))
    return marked


LIBRARY_TRANSFORMS: tuple[Callable[[Image.Image], Image.Image], ...] = (
    lambda im: im,
    lambda im: _jpeg(im, 40),
    lambda im: _jpeg(im, 85),
    lambda im: im.resize((im.width // 2, im.height // 2), Image.Resampling.BILINEAR),
    lambda im: im.resize((im.width * 3 // 2, im.height * 3 // 2), Image.Resampling.BICUBIC),
    lambda im: _crop(im, 0.04),
    lambda im: _crop(im, 0.08, centred=False),
    lambda im: ImageEnhance.Brightness(im).enhance(1.15),
    lambda im: ImageEnhance.Contrast(im).enhance(0.8),
    lambda im: im.filter(ImageFilter.GaussianBlur(1.0)),
    lambda im: im.rotate(2, resample=Image.Resampling.BILINEAR),
    _overlay,
    lambda im: im.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
    lambda im: im.convert("L"),
)
QUERY_TRANSFORMS: tuple[Callable[[Image.Image], Image.Image], ...] = (
    lambda im: _jpeg(_crop(im, 0.03), 30),
    lambda im: ImageEnhance.Brightness(im.resize((im.width * 4 // 5, im.height * 4 // 5))).enhance(
        0.9
    ),
)


@dataclass
class RealData:
    hashes: np.ndarray
    near_queries: list[int]  # transforms of indexed photos that are not themselves indexed
    other_queries: list[int]  # photos that are not in the index at all
    seconds: float
    low_information_share: float


def real_dhash_data(bases: int, queries: int, seed: int) -> RealData:
    start = time.perf_counter()
    values: list[int] = []
    low = 0
    near: list[int] = []
    other: list[int] = []
    for n in range(bases + queries):
        photo = realistic_photo(96, 72, seed + n)
        if n >= bases:  # held out: never indexed
            other.append(hash_image(QUERY_TRANSFORMS[n % 2](photo)).value)
            continue
        for transform in LIBRARY_TRANSFORMS:
            h = hash_image(transform(photo))
            values.append(h.value)
            low += h.low_information
        if n < queries:
            near.append(hash_image(QUERY_TRANSFORMS[n % 2](photo)).value)
    return RealData(
        hashes=np.array(values, dtype=np.uint64),
        near_queries=near,
        other_queries=other,
        seconds=time.perf_counter() - start,
        low_information_share=low / len(values),
    )


def near_duplicate_queries(
    hashes: np.ndarray, count: int, radius: int, rng: np.random.Generator
) -> list[int]:
    """Stored hashes with 0..radius random bits flipped."""
    out = []
    for stored in hashes[rng.integers(0, hashes.size, count)].tolist():
        flips = rng.choice(64, size=int(rng.integers(0, radius + 1)), replace=False).tolist()
        out.append(stored ^ sum(1 << bit for bit in flips))
    return out


# --- measurement ---------------------------------------------------------------------------------


@dataclass
class Row:
    dataset: str
    n: int
    radius: int
    queries: int
    steady_ms: dict[str, float] = field(default_factory=dict)  # thread CPU time
    steady_wall_ms: dict[str, float] = field(default_factory=dict)
    cold_ms: dict[str, float] = field(default_factory=dict)  # thread CPU time
    mean_hits: float = 0.0


Timings = dict[str, list[float]]


def _timed_answers(
    searchers: dict[str, Searcher], queries: Sequence[int], radius: int, block: int
) -> tuple[Timings, Timings, dict[str, list[list[tuple[int, int]]]]]:
    """Run every searcher on every query, ``block`` queries at a time per searcher.

    The searcher order rotates from block to block. ``block=1`` alternates searchers query by
    query, so each MIH query runs right after a full scan has flushed the CPU caches;
    ``block=10`` lets each contender run a few queries in a row, as a service does.
    Returns thread CPU times (immune to the scheduler handing the core to another engineer's
    process mid-scan), wall times, and the answers.
    """
    names = list(searchers)
    times: Timings = {name: [] for name in names}
    walls: Timings = {name: [] for name in names}
    answers: dict[str, list[list[tuple[int, int]]]] = {name: [] for name in names}
    for b, first in enumerate(range(0, len(queries), block)):
        chunk = queries[first : first + block]
        for k in range(len(names)):
            name = names[(b + k) % len(names)]
            search = searchers[name]
            for value in chunk:
                cpu, wall = time.thread_time(), time.perf_counter()
                answer = search(value, radius)
                walls[name].append(time.perf_counter() - wall)
                times[name].append(time.thread_time() - cpu)
                answers[name].append(answer)
    return times, walls, answers


def measure(
    dataset: str, contenders: Contenders, queries: Sequence[int], radius: int, warmup: int = 5
) -> Row:
    searchers = contenders.searchers()
    for value in queries[:warmup]:
        for search in searchers.values():
            search(value, radius)
    row = Row(dataset, len(contenders.mih), radius, len(queries))
    for block, into, wall_into in ((10, row.steady_ms, row.steady_wall_ms), (1, row.cold_ms, {})):
        times, walls, answers = _timed_answers(searchers, queries, radius, block)
        reference = answers["numpy_brute"]
        for name, answer in answers.items():
            for i, (got, want) in enumerate(zip(answer, reference, strict=True)):
                if got != want:
                    raise SystemExit(
                        f"NOT EXACT: {name} differs from brute force on {dataset} "
                        f"n={row.n} radius={radius} query={queries[i]:016x}"
                    )
        into.update({name: statistics.median(t) * 1e3 for name, t in times.items()})
        wall_into.update({name: statistics.median(t) * 1e3 for name, t in walls.items()})
        row.mean_hits = sum(len(a) for a in reference) / len(queries)
    return row


def bucket_skew(contenders: Contenders) -> float:
    """Largest 16-bit bucket's share of the data across chunks (uniform: ~1/65536)."""
    table = contenders.mih._snapshot.table
    assert table is not None
    sizes = np.diff(table.offsets)
    return float(sizes.max() / table.size)


# --- report --------------------------------------------------------------------------------------


def table(rows: list[Row]) -> list[str]:
    lines = [
        "| data | hashes | radius | hits/query | FAISS flat ms | numpy brute ms | MIH ms "
        "| **MIH vs FAISS** | MIH vs brute | MIH vs FAISS, wall clock "
        "| MIH ms, cache-cold | MIH vs FAISS, cache-cold |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        m, w, c = r.steady_ms, r.steady_wall_ms, r.cold_ms
        lines.append(
            f"| {r.dataset} | {r.n:,} | {r.radius} | {r.mean_hits:.1f} "
            f"| {m['faiss_flat']:.3f} | {m['numpy_brute']:.3f} | {m['mih']:.4f} "
            f"| **{m['faiss_flat'] / m['mih']:.1f}x** | {m['numpy_brute'] / m['mih']:.1f}x "
            f"| {w['faiss_flat'] / w['mih']:.1f}x "
            f"| {c['mih']:.4f} | {c['faiss_flat'] / c['mih']:.1f}x |"
        )
    return lines


def write_section(path: Path, body: list[str]) -> None:
    text = path.read_text()
    start = text.index(SECTION)
    end = text.find("\n## ", start + len(SECTION))
    end = len(text) if end == -1 else end + 1
    text = text[:start] + "\n".join([SECTION, "", *body, ""]) + "\n" + text[end:].lstrip("\n")
    path.write_text(text)


def real_dhash_rows(bases: int, count: int, notes: list[str]) -> list[Row]:
    real = real_dhash_data(bases, count, seed=10_000)
    contenders = Contenders.build(real.hashes)
    distinct = np.unique(real.hashes).size
    notes.append(
        f"- real dhash: {real.hashes.size:,} hashes ({distinct:,} distinct, "
        f"{real.low_information_share:.1%} low-information) of {bases:,} photo-like "
        f"96x72 images x {len(LIBRARY_TRANSFORMS)} transforms, generated and hashed in "
        f"{real.seconds:.0f} s; the largest 16-bit bucket holds {bucket_skew(contenders):.2%} of "
        f"the hashes (uniform: {1 / 65536:.4%}); queries: {count // 2} unseen transforms of "
        f"indexed photos + {count - count // 2} photos not in the index"
    )
    rows = []
    for radius in RADII:
        half = count // 2
        queries = real.near_queries[:half] + real.other_queries[: count - half]
        rows.append(measure("real dhash", contenders, queries, radius))
        print("\n".join(table(rows[-1:])[2:]), flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--sizes", default="1000000,10000000")
    parser.add_argument("--queries", type=int, default=200, help="per data set and radius")
    parser.add_argument("--real-bases", type=int, default=12000, help="photos for the real set")
    parser.add_argument(
        "--results",
        type=Path,
        default=REPO / "bench" / "RESULTS.md",
        help="rewrite this file's Search index section ('' to skip)",
    )
    args = parser.parse_args(argv)
    # One query per call: one OpenMP thread does the work, more only spin (see RESULTS.md).
    faiss.omp_set_num_threads(1)
    load_at_start = os.getloadavg()[0]
    sizes = [int(s) for s in args.sizes.split(",") if s]
    rng = np.random.default_rng(2024)
    rows: list[Row] = []
    notes: list[str] = []
    started = time.perf_counter()

    for n in sizes:
        hashes = uniform_hashes(n, seed=n)
        contenders = Contenders.build(hashes)
        notes.append(
            f"- uniform {n:,}: MIH build {contenders.build_seconds['mih']:.2f} s "
            f"({contenders.mih_bytes_per_hash():.1f} bytes/hash incl. ids and offsets, "
            f"chunks {'+'.join(map(str, contenders.mih_layout()))} bits), "
            f"FAISS add {contenders.build_seconds['faiss']:.2f} s; queries: half stored hashes "
            "with 0..radius bits flipped, half random"
        )
        for radius in RADII:
            half = args.queries // 2
            queries = near_duplicate_queries(hashes, half, radius, rng) + [
                int(v) for v in rng.integers(0, 2**64, args.queries - half, dtype=np.uint64)
            ]
            rows.append(measure("uniform", contenders, queries, radius))
            print("\n".join(table(rows[-1:])[2:]), flush=True)
        del contenders, hashes
        gc.collect()

    if args.real_bases:
        rows.extend(real_dhash_rows(args.real_bases, args.queries, notes))

    body = [
        "Per-query median thread CPU time in ms (the machine is shared, so wall time also "
        "counts other engineers' processes; the wall-clock ratio is shown too), one thread each "
        "(FAISS `omp_set_num_threads(1)`), all "
        "three on the same data and queries, interleaved in blocks of 10 queries with the order "
        "rotating; every answer is checked equal to the brute-force reference (the run aborts "
        "otherwise). MIH is `dhash_service.index.MultiIndexHashing`, the class the service "
        "uses; numpy brute is `BruteForceIndex` (XOR + `bitwise_count`); FAISS is "
        "`IndexBinaryFlat.range_search` (asked for radius + 1: its bound is strict). Ratios are "
        "FAISS (or brute) time / MIH time. The cache-cold columns alternate the contenders "
        "query by query, so every MIH query runs right after a full scan has flushed the CPU "
        "caches (the interpreter's and numpy's own code and data included).",
        "",
        *table(rows),
        "",
        *notes,
        f"- whole run: {time.perf_counter() - started:.0f} s on the shared 2-core machine, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} "
        f"(load average {load_at_start:.1f} at the start, {os.getloadavg()[0]:.1f} at the end; "
        f"FAISS OpenMP threads {faiss.omp_get_max_threads()}); faiss-cpu {faiss.__version__}, "
        f"numpy {np.__version__}",
    ]
    print("\n".join(body))
    if args.results and str(args.results) not in ("", "."):
        write_section(args.results, body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
