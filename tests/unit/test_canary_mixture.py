"""The one-sided beta mixture against its closed form, and Ville's guarantee computed exactly.

The closed form is the Dirichlet-multinomial Bayes factor of Lindon & Malek (NeurIPS 2022)
restricted to θ ≥ θ0 (docstring of dhash_rollout.canary.mixture); with integer prior
parameters the incomplete beta function is a finite binomial sum, so the reference values below
need nothing but the standard library.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from dhash_rollout.canary.mixture import grid, log_e_value, log_e_values


def _log_beta(p: float, q: float) -> float:
    return math.lgamma(p) + math.lgamma(q) - math.lgamma(p + q)


def _log_upper_regularized(p: int, q: int, z: float) -> float:
    """log(1 - I_z(p, q)) for integers p, q: log P(Binomial(p + q - 1, z) < p), summed in logs."""
    n = p + q - 1
    terms = [
        math.log(math.comb(n, j)) + j * math.log(z) + (n - j) * math.log1p(-z) for j in range(p)
    ]
    top = max(terms)
    return top + math.log(sum(math.exp(t - top) for t in terms))


def closed_form(theta0: float, a: int, b: int, x: int, y: int) -> float:
    return (
        _log_beta(a + x, b + y)
        + _log_upper_regularized(a + x, b + y, theta0)
        - _log_beta(a, b)
        - _log_upper_regularized(a, b, theta0)
        - x * math.log(theta0)
        - y * math.log1p(-theta0)
    )


# (θ0, concentration k): the prior Beta(kθ0, k(1-θ0)) has integer parameters in each row.
PRIORS = [(0.1, 10), (0.5, 2), (0.05, 20), (0.25, 4), (0.95, 20)]
COUNTS = [(0, 0), (1, 0), (0, 1), (3, 5), (10, 20), (30, 100), (5, 300), (200, 800), (60, 2)]


@pytest.mark.parametrize(("theta0", "k"), PRIORS)
@pytest.mark.parametrize(("x", "y"), COUNTS)
def test_the_grid_mixture_matches_the_closed_form(theta0: float, k: int, x: int, y: int) -> None:
    expected = closed_form(theta0, round(k * theta0), round(k * (1 - theta0)), x, y)
    assert log_e_value(grid(theta0, k), x, y) == pytest.approx(expected, abs=5e-4, rel=1e-6)


def test_uniform_prior_with_only_successes_is_the_textbook_integral() -> None:
    # a = b = 1: BF = ∫_θ0^1 θ^x dθ / ((1 - θ0) θ0^x) = (1 - θ0^(x+1)) / ((x+1)(1-θ0) θ0^x)
    g = grid(0.5, 2.0)
    for x in (1, 4, 9):
        expected = (1 - 0.5 ** (x + 1)) / ((x + 1) * 0.5 * 0.5**x)
        assert math.exp(log_e_value(g, x, 0)) == pytest.approx(expected, rel=1e-6)


def test_the_vector_form_agrees_with_the_scalar_one() -> None:
    g = grid(0.05, 20)
    xs = np.array([0.0, 3.0, 40.0])
    ys = np.array([10.0, 50.0, 100.0])
    many = log_e_values(g, xs, ys)
    assert many.tolist() == pytest.approx(
        [log_e_value(g, x, y) for x, y in zip(xs, ys, strict=True)]
    )


@pytest.mark.parametrize("theta0", [0.05, 0.3, 0.95])
def test_more_successes_never_lower_the_e_value(theta0: float) -> None:
    g = grid(theta0)
    values = [log_e_value(g, x, 100 - x) for x in range(101)]
    assert all(b >= a for a, b in itertools.pairwise(values))


@pytest.mark.parametrize(("theta0", "alpha"), [(0.05, 0.05), (0.5, 0.1), (0.2, 0.0125)])
def test_the_chance_of_ever_crossing_one_over_alpha_under_the_null_is_at_most_alpha(
    theta0: float, alpha: float
) -> None:
    """Ville's inequality, computed exactly (no simulation): the probability mass of every
    Bernoulli(θ0) path that reaches 1/α within 300 trials, by dynamic programming over the
    success count with the crossing paths removed as they cross."""
    g = grid(theta0)
    need = math.log(1 / alpha)
    alive = np.array([1.0])  # P(x successes so far, not crossed yet)
    crossed = 0.0
    for t in range(1, 301):
        nxt = np.zeros(t + 1)
        nxt[:-1] += alive * (1 - theta0)
        nxt[1:] += alive * theta0
        # the e-value grows with x (test above), so the crossing paths are x >= first
        lo, hi = 0, t + 1
        while lo < hi:
            mid = (lo + hi) // 2
            if log_e_value(g, mid, t - mid) >= need:
                hi = mid
            else:
                lo = mid + 1
        crossed += float(nxt[lo:].sum())
        nxt[lo:] = 0.0
        alive = nxt
    assert 0.0 < crossed <= alpha


@pytest.mark.parametrize(
    ("theta0", "k", "message"),
    [(0.0, 10, "theta0"), (1.0, 10, "theta0"), (0.5, 0, "concentration")],
)
def test_a_degenerate_null_or_prior_is_refused(theta0: float, k: float, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        grid(theta0, k)


def test_negative_counts_are_refused() -> None:
    with pytest.raises(ValueError, match="negative"):
        log_e_value(grid(0.5), -1, 3)
