"""Extraction failures of canary and stable as two Poisson processes: is the canary's rate higher?

Lindon & Malek ("Anytime-Valid Inference for Multinomial Count Data", NeurIPS 2022, section 4,
the time-inhomogeneous Poisson processes of a software canary) observe that when two counting
processes share one unknown, time-varying baseline, ``λ_c(t) = ρ_c r λ(t)`` and
``λ_s(t) = ρ_s λ(t)``, the next event comes from the canary with probability
``θ = ρ_c r / (ρ_c r + ρ_s)`` whatever λ(t) does: traffic dips, diurnal load, a burst of bad
uploads that fail on both releases. The sequence of "which release failed" is then a Bernoulli
sequence, and a mixture of its likelihood ratios is an anytime-valid test of ``r``.

Here the exposure is each poll's extractions (``ρ_t = n_c / (n_c + n_s)``, the canary's share
of the work in that poll), so ``r`` is the ratio of the two failure *rates per extraction* and
the test holds through weight steps and load changes. The null is ``r ≤ margin`` (default 1:
the canary fails no more often than stable); the mixture is over ``r ≥ margin``, with the prior
of :mod:`dhash_rollout.canary.mixture` placed at a reference share (the configured weight).
Each poll multiplies every component by its own likelihood ratio, so the statistic stays a
finite mixture of test martingales even though ρ_t changes every poll, and when ρ_t never
changes it equals the one-sided closed form of the paper (tests).

Failures counted by a binomial (one per extraction) are Poisson in the limit of small rates;
the A/A runs of ``make bench-canary`` measure the false-abort rate at the rates we run at.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

from dhash_rollout.canary.mixture import DEFAULT_CONCENTRATION, Floats, grid, logsumexp


@dataclass(frozen=True)
class RateRatioTest:
    """The running test; :meth:`update` returns the next one (the old one is untouched)."""

    margin: float
    log_ratio: Floats = field(repr=False)  # log r_j of the mixture's nodes
    log_weight: Floats = field(repr=False)
    log_lr: Floats = field(repr=False)  # the accumulated log likelihood ratio of each node
    canary_failures: int = 0
    stable_failures: int = 0
    canary_exposure: int = 0
    stable_exposure: int = 0

    @classmethod
    def start(
        cls,
        reference_share: float,
        margin: float = 1.0,
        concentration: float = DEFAULT_CONCENTRATION,
    ) -> RateRatioTest:
        if not 0.0 < reference_share < 1.0:
            raise ValueError(f"the canary's share must be between 0 and 1, got {reference_share}")
        if margin <= 0:
            raise ValueError(f"the rate-ratio margin must be positive, got {margin}")
        rho = reference_share
        theta0 = rho * margin / (rho * margin + 1.0 - rho)
        g = grid(theta0, concentration)
        # θ = ρr / (ρr + 1 - ρ)  ⇔  r = θ (1 - ρ) / (ρ (1 - θ))
        log_ratio = g.log_theta - g.log_1m_theta + math.log1p(-rho) - math.log(rho)
        return cls(margin, log_ratio, g.log_weight, np.zeros_like(log_ratio))

    def update(
        self, canary_failures: int, canary_exposure: int, stable_failures: int, stable_exposure: int
    ) -> RateRatioTest:
        """Add one poll's increments: failures and extractions (the exposure) of each release."""
        for name, value in (
            ("canary failures", canary_failures),
            ("canary extractions", canary_exposure),
            ("stable failures", stable_failures),
            ("stable extractions", stable_exposure),
        ):
            if value < 0:
                raise ValueError(f"{name} cannot be negative ({value}): a counter went back")
        if canary_failures > canary_exposure or stable_failures > stable_exposure:
            raise ValueError("more failures than extractions in one poll")
        nxt = replace(
            self,
            canary_failures=self.canary_failures + canary_failures,
            stable_failures=self.stable_failures + stable_failures,
            canary_exposure=self.canary_exposure + canary_exposure,
            stable_exposure=self.stable_exposure + stable_exposure,
        )
        events = canary_failures + stable_failures
        if events == 0 or canary_exposure == 0 or stable_exposure == 0:
            # No failure, or one release saw no work: the poll says nothing about the ratio
            # (with one exposure zero, every failure is on the other side with probability 1).
            return nxt
        log_rho = math.log(canary_exposure) - math.log(canary_exposure + stable_exposure)
        log_1m_rho = math.log(stable_exposure) - math.log(canary_exposure + stable_exposure)

        def log_thetas(log_r: Floats | float) -> tuple[Floats, Floats]:
            num = log_rho + np.asarray(log_r, dtype=np.float64)
            den = np.logaddexp(num, log_1m_rho)
            return num - den, log_1m_rho - den

        lt, l1t = log_thetas(self.log_ratio)
        lt0, l1t0 = log_thetas(math.log(self.margin))
        step = canary_failures * (lt - lt0) + stable_failures * (l1t - l1t0)
        return replace(nxt, log_lr=self.log_lr + step)

    @property
    def log_e_value(self) -> float:
        return float(logsumexp((self.log_weight + self.log_lr)[None, :])[0])

    @property
    def ratio_estimate(self) -> float | None:
        """The observed rate ratio (canary per extraction over stable per extraction)."""
        if self.canary_exposure == 0 or self.stable_exposure == 0 or self.stable_failures == 0:
            return None
        canary = self.canary_failures / self.canary_exposure
        return canary / (self.stable_failures / self.stable_exposure)
