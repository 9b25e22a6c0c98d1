"""Row counts and content hashes: the evidence that a restored database equals the backed-up one.

Content hashes are order-independent (a sum of per-row 64-bit hashes) so they can be computed
in one sequential scan, without sorting, on both the source snapshot and the restored copy.
"""

from __future__ import annotations

from dhash_rollout.backup.manifest import TableStats


def compare_tables(
    expected: dict[str, TableStats], actual: dict[str, TableStats], *, content: bool = True
) -> list[str]:
    """Human-readable differences between two table sets; empty when they match."""
    problems: list[str] = []
    for name in sorted(expected.keys() - actual.keys()):
        problems.append(f"table {name} is missing")
    for name in sorted(actual.keys() - expected.keys()):
        problems.append(f"table {name} is unexpected")
    for name in sorted(expected.keys() & actual.keys()):
        want, got = expected[name], actual[name]
        if want.rows != got.rows:
            problems.append(f"table {name}: {got.rows} rows, expected {want.rows}")
        elif content and want.content_hash != got.content_hash:
            problems.append(f"table {name}: content hash differs")
    return problems
