"""Multi-index hashing returns exactly what the brute-force reference returns."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dhash_service.index import (
    BruteForceIndex,
    MultiIndexHashing,
    Neighbors,
    int_to_words,
    new_index,
    words_to_int,
)
from dhash_service.index.mih import NARROW, WIDE, Layout, probe_plan

U64 = st.integers(min_value=0, max_value=2**64 - 1)


def both(
    ids: list[int], values: list[int], *, min_tail: int = 0, layout: Layout | None = None
) -> tuple[MultiIndexHashing, BruteForceIndex]:
    mih, brute = MultiIndexHashing(min_tail=min_tail, layout=layout), BruteForceIndex(64)
    array = np.array(values, dtype=np.uint64)
    mih.add(np.array(ids, dtype=np.int64), array)
    brute.add(np.array(ids, dtype=np.int64), array)
    return mih, brute


def same(a: Neighbors, b: Neighbors) -> bool:
    return (
        a.ids.tolist() == b.ids.tolist()
        and a.distances.tolist() == b.distances.tolist()
        and a.values == b.values
    )


def reference(values: list[int], query: int, radius: int) -> list[tuple[int, int]]:
    """The definition, in plain Python: (distance, id) of every value within radius."""
    return sorted(
        ((v ^ query).bit_count(), i)
        for i, v in enumerate(values)
        if (v ^ query).bit_count() <= radius
    )


def flip_bits_per_chunk(
    value: int, flips: list[int], rng: np.random.Generator, layout: Layout = NARROW
) -> int:
    """Flip ``flips[c]`` distinct bits inside chunk ``c`` (the pigeonhole's boundary cases)."""
    for chunk, count in enumerate(flips):
        width = layout.widths[chunk]
        for bit in rng.choice(width, size=min(count, width), replace=False):
            value ^= 1 << (layout.shifts[chunk] + int(bit))
    return value


@settings(max_examples=150, deadline=None)
@given(
    values=st.lists(U64, max_size=200),
    queries=st.lists(U64, min_size=1, max_size=4),
    radius=st.integers(0, 16),
    min_tail=st.sampled_from([0, 50, 10_000]),
    layout=st.sampled_from([NARROW, WIDE]),
)
def test_mih_equals_brute_force_on_random_hashes(
    values: list[int], queries: list[int], radius: int, min_tail: int, layout: Layout
) -> None:
    mih, brute = both(list(range(len(values))), values, min_tail=min_tail, layout=layout)
    for query in [*queries, *values[:3]]:
        found = mih.search(query, radius)
        assert same(found, brute.search(query, radius))
        assert list(zip(found.distances.tolist(), found.ids.tolist(), strict=True)) == reference(
            values, query, radius
        )


@settings(max_examples=150, deadline=None)
@given(
    query=U64,
    radius=st.integers(0, 16),
    shapes=st.lists(
        st.lists(st.integers(0, 16), min_size=4, max_size=4),
        min_size=1,
        max_size=40,
    ),
    seed=st.integers(0, 2**32 - 1),
    layout=st.sampled_from([NARROW, WIDE]),
)
def test_mih_equals_brute_force_when_neighbours_sit_on_chunk_boundaries(
    query: int, radius: int, shapes: list[list[int]], seed: int, layout: Layout
) -> None:
    """Hashes whose differing bits are spread over chunks at, just inside and just past radius."""
    rng = np.random.default_rng(seed)
    chunks = layout.count
    values = [flip_bits_per_chunk(query, flips[:chunks], rng, layout) for flips in shapes]
    # Add the exact pigeonhole boundary: the radius split as evenly as the chunks allow.
    even = [radius // chunks + (1 if c < radius % chunks else 0) for c in range(chunks)]
    values += [
        flip_bits_per_chunk(query, even, rng, layout),
        flip_bits_per_chunk(query, even[::-1], rng, layout),
    ]
    mih, brute = both(list(range(len(values))), values, layout=layout)
    assert same(mih.search(query, radius), brute.search(query, radius))
    assert mih.search(query, radius).ids.tolist() == [
        i for _, i in reference(values, query, radius)
    ]


@pytest.mark.parametrize(
    ("radius", "layout"),
    [(r, NARROW) for r in range(17)] + [(r, WIDE) for r in (0, 1, 3, 4, 5, 7, 10, 16)],
)
def test_every_radius_on_a_dense_clustered_set(radius: int, layout: Layout) -> None:
    rng = np.random.default_rng(radius)
    centre = int(rng.integers(0, 2**63)) * 2 + 1
    values = [
        flip_bits_per_chunk(centre, list(rng.integers(0, 6, layout.count)), rng, layout)
        for _ in range(3000)
    ]
    mih, brute = both(list(range(len(values))), values, layout=layout)
    for query in (centre, values[0], values[-1]):
        assert same(mih.search(query, radius), brute.search(query, radius))


def test_duplicates_are_all_returned_ordered_by_id() -> None:
    mih, _ = both([30, 10, 20, 40], [7, 7, 7, 6])
    found = mih.search(7, 0)
    assert found.ids.tolist() == [10, 20, 30]
    assert found.values == [7, 7, 7]
    assert mih.search(7, 1).ids.tolist() == [10, 20, 30, 40]


def test_an_empty_index_finds_nothing() -> None:
    for index in (MultiIndexHashing(), BruteForceIndex(64), BruteForceIndex(256)):
        assert len(index) == 0
        assert len(index.search(0, 64)) == 0


def test_a_negative_radius_finds_nothing_and_radius_64_finds_everything() -> None:
    values = [0, 2**64 - 1, 12345]
    mih, _ = both([1, 2, 3], values)
    assert len(mih.search(0, -1)) == 0
    assert sorted(mih.search(0, 64).ids.tolist()) == [1, 2, 3]


def test_limit_keeps_the_nearest() -> None:
    mih, _ = both([1, 2, 3, 4], [0b1111, 0b0111, 0b0011, 0b0001])
    found = mih.search(0, 64, limit=2)
    assert found.ids.tolist() == [4, 3]
    assert found.distances.tolist() == [1, 2]


def test_incremental_adds_rebuild_the_table_and_stay_exact() -> None:
    rng = np.random.default_rng(7)
    mih, brute = MultiIndexHashing(min_tail=100), BruteForceIndex(64)
    for start in range(0, 2000, 250):
        ids = np.arange(start, start + 250, dtype=np.int64)
        batch = rng.integers(0, 2**64, 250, dtype=np.uint64)
        batch[:50] = batch[50:100] ^ np.uint64(1)  # near neighbours across batches
        mih.add(ids, batch)
        brute.add(ids, batch)
    assert len(mih) == 2000
    assert mih.tail_size <= 100
    for query in rng.integers(0, 2**64, 20, dtype=np.uint64).tolist():
        for radius in (0, 3, 10, 20):
            assert same(mih.search(int(query), radius), brute.search(int(query), radius))


def test_large_radius_takes_the_scan_path_and_stays_exact() -> None:
    rng = np.random.default_rng(3)
    values = rng.integers(0, 2**64, 5000, dtype=np.uint64)
    mih, brute = both(list(range(5000)), values.tolist())
    assert NARROW.probe_count(28) > 65536  # far more probes than hashes: the table scans instead
    assert probe_plan(4, WIDE).size == 2 * 22 + 1  # radius 1 in chunks 0 and 1, 0 in chunk 2
    query = int(values[0])
    assert same(mih.search(query, 28), brute.search(query, 28))


def test_mismatched_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="differ in length"):
        MultiIndexHashing().add(np.arange(2), np.zeros(3, np.uint64))
    with pytest.raises(ValueError, match="64-bit"):
        MultiIndexHashing(bits=256)


def test_wide_hashes_round_trip_and_search_exactly() -> None:
    rng = np.random.default_rng(11)
    values = [int.from_bytes(rng.bytes(32), "big") for _ in range(300)]
    values.append(values[0] ^ (1 << 255) ^ 1)  # differs in the top and bottom bits: distance 2
    for value in values[:5]:
        assert words_to_int(int_to_words(value, 256)) == value
    index = new_index("mih", 256)  # MIH covers 64-bit hashes only; 256-bit ones are scanned
    assert isinstance(index, BruteForceIndex)
    index.add(np.arange(len(values)), np.stack([int_to_words(v, 256) for v in values]))
    found = index.search(values[0], 40)
    assert found.ids.tolist() == [i for _, i in reference(values, values[0], 40)]
    assert found.values[:2] == [values[0], values[-1]]
    assert found.distances.tolist()[:2] == [0, 2]


def test_new_index_picks_mih_for_64_bits_unless_brute_is_asked_for() -> None:
    assert isinstance(new_index("mih", 64), MultiIndexHashing)
    assert isinstance(new_index("brute", 64), BruteForceIndex)
