"""The canary: a candidate release beside the stable one, judged against it on the same traffic.

The judgement is pure and anytime-valid (an operator may look at every poll without inflating
false aborts); see docs/canary.md:

* ``mixture``: one-sided beta mixtures of binomial likelihood ratios, the e-value machinery;
* ``counts``: extraction failures as two Poisson processes, the rate-ratio test of Lindon &
  Malek (2022) with the exposure of each poll;
* ``quantiles``: confidence sequences for the P95 hash time of each release from its histogram
  (Howard & Ramdas 2022) and their comparison;
* ``judge``: one poll's increments in, the running evidence and the decision (continue,
  advance, promote, abort, inconclusive) out.
"""
