"""Matrix sampling: ``make test`` runs a per-run sample of the heaviest parametrized matrices,
``make test-full`` (and a plain ``pytest``) runs every case.

A test marked ``@pytest.mark.matrix(keep=N)`` is one *matrix*: all its parametrized cases share
one group (the node id without its ``[...]``). With ``DHASH_TEST_SAMPLE`` set, each matrix keeps
``N`` of its cases, chosen from the seed, and the rest are deselected and listed in the summary;
every case is still in the full run, and which ones run changes from run to run, so coverage
accumulates instead of shrinking. The seed is printed in the header; ``DHASH_TEST_SAMPLE=<seed>``
runs the same sample again (to reproduce a failure seen in one).

``DHASH_TEST_SAMPLE``: unset, empty or ``all``: everything runs; ``auto``: a new seed per run;
an integer: that seed. A case named on the command line (``file.py::test[case]``) always runs.

It never empties a run: each matrix keeps at least one case, so a collection that had a test still
has one (pytest's exit 5, "no tests collected", stays visible to make and CI).
"""

from __future__ import annotations

import os
import random
import secrets
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence

import pytest

ENV = "DHASH_TEST_SAMPLE"
_SEED_KEY = pytest.StashKey[int | None]()
_DESELECTED_KEY = pytest.StashKey[list[str]]()


def parse_sample(value: str | None) -> int | None:
    """The seed ``DHASH_TEST_SAMPLE`` asks for, or None for the full run."""
    text = (value or "").strip().lower()
    if text in ("", "all"):
        return None
    if text == "auto":
        return 1 + secrets.randbelow(2**31 - 1)
    if not text.isdigit():
        raise pytest.UsageError(
            f"{ENV} must be all, auto or a positive integer seed, not {value!r}"
        )
    return int(text)


def matrix_group(nodeid: str) -> str:
    """One matrix per test function: its node id without the parametrization."""
    return nodeid.split("[", 1)[0]


def choose(cases: Sequence[str], keep: int, seed: int, group: str) -> set[str]:
    """``keep`` of ``cases`` (at least one), the same for the same seed and group."""
    ordered = sorted(cases)
    count = max(1, min(keep, len(ordered)))
    return set(random.Random(f"{seed}:{group}").sample(ordered, count))


def sample(
    items: Iterable[tuple[str, int]],
    seed: int,
    named: Iterable[str] = (),
    group_of: Mapping[str, str] | None = None,
) -> tuple[set[str], list[str]]:
    """``(kept, deselected)`` node ids of the ``(nodeid, keep)`` matrix cases; ``named`` ones
    (given on the command line) are always kept. ``group_of`` puts a case in a named matrix
    (``matrix(keep=1, group="...")``: several test functions of a module, e.g. scenarios that
    share one costly site, of which a run keeps ``keep``)."""
    groups: dict[str, list[str]] = defaultdict(list)
    keeps: dict[str, int] = {}
    for nodeid, keep in items:
        group = (group_of or {}).get(nodeid) or matrix_group(nodeid)
        groups[group].append(nodeid)
        keeps[group] = min(keep, keeps.get(group, keep))
    named_ids = set(named)
    kept: set[str] = set()
    for group, cases in groups.items():
        kept |= choose(cases, keeps[group], seed, group)
        kept |= named_ids & set(cases)
    deselected = sorted(
        nodeid for cases in groups.values() for nodeid in cases if nodeid not in kept
    )
    return kept, deselected


def subset(group: str, cases: Sequence[str], keep: int, always: Iterable[str] = ()) -> list[str]:
    """For a scenario that walks its cases in one test (each step builds on the last, so they
    cannot be parametrized): the ``always`` cases plus ``keep`` of the others, in their order,
    drawn from the run's seed like a matrix; every case when the run is not sampled."""
    value = os.environ.get(ENV, "")  # pytest_configure has turned "auto" into its seed
    if not value.isdigit():
        return list(cases)
    seed, fixed = int(value), set(always)
    optional = [case for case in cases if case not in fixed]
    chosen = choose(optional, keep, seed, group) if optional else set()
    return [case for case in cases if case in fixed or case in chosen]


def _keep(item: pytest.Item) -> int | None:
    marker = item.get_closest_marker("matrix")
    if marker is None:
        return None
    keep = marker.kwargs.get("keep", marker.args[0] if marker.args else 1)
    if not isinstance(keep, int) or keep < 1:
        raise pytest.UsageError(f"{item.nodeid}: matrix(keep=...) must be a positive integer")
    return keep


def _group(item: pytest.Item) -> str | None:
    """A named matrix is per module: ``<file>::<group>``."""
    marker = item.get_closest_marker("matrix")
    group = marker.kwargs.get("group") if marker is not None else None
    if group is None:
        return None
    if not isinstance(group, str) or not group:
        raise pytest.UsageError(f"{item.nodeid}: matrix(group=...) must be a non-empty string")
    return f"{item.nodeid.split('::', 1)[0]}::{group}"


def _named_on_command_line(config: pytest.Config) -> set[str]:
    root = config.rootpath
    named = set()
    for arg in config.args:
        if "::" not in arg or "[" not in arg:
            continue
        path, _, rest = arg.partition("::")
        try:
            relative = os.path.relpath(os.path.abspath(path), root)
        except ValueError:
            continue
        named.add(f"{relative}::{rest}")
    return named


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "matrix(keep=1, group=None): a parametrized matrix (or, with group, the module's tests "
        "of that group) that make test samples (keep cases per run) and make test-full runs whole",
    )
    seed = parse_sample(os.environ.get(ENV))
    if seed is not None and not hasattr(config, "workerinput"):
        # pytest-xdist's workers start after this and inherit the environment: every worker
        # must draw the same sample, or xdist refuses the differing collections.
        os.environ[ENV] = str(seed)
    config.stash[_SEED_KEY] = seed
    config.stash[_DESELECTED_KEY] = []


def pytest_report_header(config: pytest.Config) -> str:
    seed = config.stash[_SEED_KEY]
    if seed is None:
        return f"matrix sample: off, every case runs ({ENV}=auto to sample)"
    return f"matrix sample: seed {seed} (again: {ENV}={seed}; every case: make test-full)"


@pytest.hookimpl(trylast=True)  # after -m/-k deselection: sample what would really run
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    seed = config.stash[_SEED_KEY]
    if seed is None or not items:
        return
    matrix = [(item.nodeid, keep) for item in items if (keep := _keep(item)) is not None]
    if not matrix:
        return
    group_of = {item.nodeid: group for item in items if (group := _group(item)) is not None}
    _kept, deselected = sample(matrix, seed, _named_on_command_line(config), group_of)
    if not deselected:
        return
    dropped = set(deselected)
    remaining = [item for item in items if item.nodeid not in dropped]
    if not remaining:  # cannot happen (each matrix keeps one case); never hide exit 5 anyway
        raise pytest.UsageError("matrix sampling would deselect every collected test")
    config.hook.pytest_deselected(items=[item for item in items if item.nodeid in dropped])
    items[:] = remaining
    config.stash[_DESELECTED_KEY] = deselected


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    deselected = terminalreporter.config.stash[_DESELECTED_KEY]
    if not deselected:
        return
    seed = terminalreporter.config.stash[_SEED_KEY]
    terminalreporter.section(f"matrix sample (seed {seed}): {len(deselected)} cases not run")
    by_group: dict[str, list[str]] = defaultdict(list)
    for nodeid in deselected:
        by_group[matrix_group(nodeid)].append(nodeid[len(matrix_group(nodeid)) :])
    for group, cases in sorted(by_group.items()):
        terminalreporter.write_line(f"{group} {' '.join(cases)}")
