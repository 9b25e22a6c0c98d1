"""Matrix sampling keeps a seeded, reproducible sample of each marked matrix, at least one case
each, lists what it left out, and never turns a run into "no tests" (tests/support)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.matrix_sampling import ENV, choose, matrix_group, parse_sample, sample, subset

REPO = Path(__file__).resolve().parents[2]
CASES = [f"t.py::test_m[{n}]" for n in "abcd"]

SUITE = """
import pytest

@pytest.mark.matrix(keep=1)
@pytest.mark.parametrize("case", ["a", "b", "c", "d"])
def test_m(case):
    pass

@pytest.mark.matrix(keep=2)
@pytest.mark.parametrize("case", ["x", "y", "z"])
def test_two(case):
    pass

def test_plain():
    pass
"""


@pytest.mark.parametrize(
    ("value", "seed"), [(None, None), ("", None), ("all", None), (" ALL ", None), ("42", 42)]
)
def test_parse_sample_reads_all_or_a_seed(value: str | None, seed: int | None) -> None:
    assert parse_sample(value) == seed


def test_parse_sample_auto_picks_a_fresh_positive_seed_and_refuses_garbage() -> None:
    seeds = {parse_sample("auto") for _ in range(5)}
    assert all(isinstance(s, int) and s > 0 for s in seeds) and len(seeds) > 1
    with pytest.raises(pytest.UsageError, match="DHASH_TEST_SAMPLE"):
        parse_sample("some")


def test_one_matrix_per_function_whatever_its_parameters() -> None:
    assert matrix_group("a/t.py::test_m[x-[y]]") == "a/t.py::test_m"
    assert matrix_group("a/t.py::C::test_m") == "a/t.py::C::test_m"


def test_choose_is_reproducible_keeps_at_least_one_and_never_more_than_there_are() -> None:
    assert choose(CASES, 1, 7, "g") == choose(list(reversed(CASES)), 1, 7, "g")
    assert len(choose(CASES, 0, 7, "g")) == 1
    assert choose(CASES, 9, 7, "g") == set(CASES)


def test_different_seeds_rotate_through_every_case() -> None:
    seen = set().union(*(choose(CASES, 1, seed, "g") for seed in range(1, 40)))
    assert seen == set(CASES)


def test_sample_keeps_cases_named_on_the_command_line() -> None:
    kept, deselected = sample([(c, 1) for c in CASES], 3, named=[CASES[0], CASES[1]])
    assert {CASES[0], CASES[1]} <= kept
    assert len(kept) in (2, 3) and set(deselected) == set(CASES) - kept


def test_a_named_group_samples_several_test_functions_as_one_matrix() -> None:
    scenarios = ["m.py::test_resume", "m.py::test_bad_release"]
    group_of = dict.fromkeys(scenarios, "m.py::scenario")
    for seed in range(1, 20):
        kept, deselected = sample([(n, 1) for n in scenarios], seed, group_of=group_of)
        assert len(kept) == 1 and len(deselected) == 1
    # Without the group each function is its own matrix of one case: both always run.
    kept, deselected = sample([(n, 1) for n in scenarios], 5)
    assert kept == set(scenarios) and deselected == []


def _pytest(tmp_path: Path, sample_env: str, *args: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "conftest.py").write_text('pytest_plugins = ["tests.support.matrix_sampling"]\n')
    (tmp_path / "test_suite.py").write_text(SUITE)
    env = {**os.environ, "PYTHONPATH": str(REPO), "DHASH_TEST_SAMPLE": sample_env}
    env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"  # the suite needs none of the installed plugins
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rN", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


def test_a_sampled_run_deselects_and_lists_the_rest_and_the_same_seed_repeats_it(
    tmp_path: Path,
) -> None:
    first = _pytest(tmp_path, "11", "-v")
    assert first.returncode == 0, first.stdout
    assert "matrix sample: seed 11" in first.stdout
    assert "4 passed, 4 deselected" in first.stdout  # 1 of 4, 2 of 3, the plain test
    assert "matrix sample (seed 11): 4 cases not run" in first.stdout
    again = _pytest(tmp_path, "11", "-v")
    ran = sorted(line.split()[0] for line in first.stdout.splitlines() if " PASSED" in line)
    assert ran == sorted(line.split()[0] for line in again.stdout.splitlines() if " PASSED" in line)


def test_the_full_run_runs_every_case(tmp_path: Path) -> None:
    done = _pytest(tmp_path, "all")
    assert done.returncode == 0, done.stdout
    assert "8 passed" in done.stdout and "deselected" not in done.stdout


def test_a_case_named_on_the_command_line_runs_even_when_sampled(tmp_path: Path) -> None:
    done = _pytest(tmp_path, "11", "test_suite.py::test_m[a]", "test_suite.py::test_m[b]")
    assert done.returncode == 0, done.stdout
    assert "2 passed" in done.stdout and "deselected" not in done.stdout


def test_no_tests_left_by_a_filter_is_still_exit_5(tmp_path: Path) -> None:
    done = _pytest(tmp_path, "11", "-k", "no_such_test")
    assert done.returncode == 5, done.stdout


STEPS = ("a", "b", "c", "d", "e", "f")


@pytest.mark.parametrize(
    ("value", "kept"),
    [("", 6), ("all", 6), ("7", 4), ("123456", 4)],
    ids=["unset", "all", "s7", "s123456"],
)
def test_a_scenario_subset_keeps_its_fixed_steps_in_order(
    monkeypatch: pytest.MonkeyPatch, value: str, kept: int
) -> None:
    monkeypatch.setenv(ENV, value)
    steps = subset("scenario", STEPS, keep=2, always=("b", "e"))
    assert len(steps) == kept
    assert {"b", "e"} <= set(steps)
    assert steps == [s for s in STEPS if s in steps]  # the scenario's order
    assert steps == subset("scenario", STEPS, keep=2, always=("b", "e"))  # same seed, same steps
