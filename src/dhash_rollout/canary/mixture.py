"""One-sided beta mixtures of binomial likelihood ratios: the e-values the canary tests share.

For Bernoulli trials with success probability θ, the likelihood ratio of θ1 against θ0 after
``x`` successes and ``y`` failures, ``(θ1/θ0)^x ((1-θ1)/(1-θ0))^y``, is a non-negative martingale
under θ0; so is any mixture of them over θ1. Ville's inequality then bounds the chance that the
mixture *ever* reaches ``1/α`` by α: the test may be checked after every trial, or every poll,
and stopped whenever (Lindon & Malek, "Anytime-Valid Inference for Multinomial Count Data",
NeurIPS 2022, section 2; Howard, Ramdas, McAuliffe & Sekhon, "Time-uniform, nonparametric,
nonasymptotic confidence sequences", Ann. Statist. 2021, the beta-binomial mixture).

The mixing prior here is a Beta(kθ0, k(1-θ0)) truncated to θ1 ≥ θ0: a one-sided test, since
the canary is aborted for being *worse*, never for being better. For the one-sided null
θ ≤ θ0 the same statistic is a supermartingale (the binomial family has monotone likelihood
ratio), so the guarantee covers the whole null. Its value is the closed form

    BF = B(a+x, b+y) (1 - I_θ0(a+x, b+y)) / [B(a, b) (1 - I_θ0(a, b)) θ0^x (1-θ0)^y]

(``I`` the regularized incomplete beta function), which is the Dirichlet-multinomial Bayes
factor of Lindon & Malek restricted to one side. It is computed as a finite mixture on a fixed
grid in log-odds, with weights normalized to one: a finite mixture of likelihood-ratio
martingales is itself one, so the guarantee holds *exactly* for the number computed, and the
grid only decides how closely it tracks the closed form (tests/unit/test_canary_mixture.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

GRID_POINTS = 4000
GRID_SPAN = 20.0  # log-odds above θ0 that the grid covers; past it the prior mass is negligible
DEFAULT_CONCENTRATION = 10.0

Floats = NDArray[np.float64]


def _logit(p: float) -> float:
    return math.log(p) - math.log1p(-p)


@dataclass(frozen=True)
class Grid:
    """The mixture's nodes θ_j ≥ θ0 and their log prior weights (normalized)."""

    theta0: float
    log_theta: Floats = field(repr=False)
    log_1m_theta: Floats = field(repr=False)
    log_weight: Floats = field(repr=False)


def grid(theta0: float, concentration: float = DEFAULT_CONCENTRATION) -> Grid:
    """The one-sided grid above ``theta0`` for a Beta(kθ0, k(1-θ0)) prior truncated there."""
    if not 0.0 < theta0 < 1.0:
        raise ValueError(f"theta0 must be strictly between 0 and 1, got {theta0}")
    if concentration <= 0:
        raise ValueError(f"concentration must be positive, got {concentration}")
    a, b = concentration * theta0, concentration * (1.0 - theta0)
    # Nodes u = logit θ0 + SPAN s² for s uniform on (0, 1]: dense next to θ0, where the mass of
    # a posterior under (or near) the null sits, sparse far out where it is smooth.
    s = np.linspace(0.0, 1.0, GRID_POINTS + 1)[1:]
    u = _logit(theta0) + GRID_SPAN * s * s
    log_theta = -np.logaddexp(0.0, -u)  # log σ(u)
    log_1m_theta = -np.logaddexp(0.0, u)  # log (1 - σ(u))
    # The Beta density in s: θ^a (1-θ)^b (dθ/du = θ(1-θ)) times du/ds = 2 SPAN s, up to a
    # constant; the last node is a trapezoid end.
    log_w = a * log_theta + b * log_1m_theta + np.log(s)
    log_w[-1] -= math.log(2.0)
    log_w -= float(logsumexp(log_w[None, :])[0])
    return Grid(theta0, log_theta, log_1m_theta, log_w)


def log_e_value(g: Grid, successes: float, failures: float) -> float:
    """log BF of ``successes`` and ``failures`` against θ0 (0 when there are no trials)."""
    if successes < 0 or failures < 0:
        raise ValueError("counts cannot be negative")
    terms = g.log_weight + successes * g.log_theta + failures * g.log_1m_theta
    null = successes * math.log(g.theta0) + failures * math.log1p(-g.theta0)
    return float(logsumexp(terms[None, :])[0]) - null


def log_e_values(g: Grid, successes: Floats, failures: Floats) -> Floats:
    """:func:`log_e_value` for many count pairs at once (one per row)."""
    terms = (
        g.log_weight[None, :]
        + successes[:, None] * g.log_theta[None, :]
        + failures[:, None] * g.log_1m_theta[None, :]
    )
    null = successes * math.log(g.theta0) + failures * math.log1p(-g.theta0)
    out: Floats = logsumexp(terms) - null
    return out


def logsumexp(rows: Floats) -> Floats:
    """log Σ exp over each row, shifted by the row's maximum so nothing overflows."""
    top = rows.max(axis=1)
    out: Floats = top + np.log(np.exp(rows - top[:, None]).sum(axis=1))
    return out
