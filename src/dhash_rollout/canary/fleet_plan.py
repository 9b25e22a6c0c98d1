"""The fleet canary's decisions, pure: which host is the canary, which HAProxy weights give it
the canary's share, what the stable hosts' metrics sum to, and whether an interrupted canary
can go on. No I/O: :mod:`dhash_rollout.canary.fleet` reads the hosts and the proxy and acts.

On a fleet the canary's share is a proxy weight: HAProxy's ``roundrobin`` sends each server
its weight's share of the new requests, so one canary host of weight ``w`` beside stable
hosts of total weight ``S`` takes ``w / (w + S)``. The stable hosts keep their configured
weights where a weight of at most 256 (HAProxy's largest) gives the share; above that (a big
share on a big fleet) they are scaled down together, never below 1.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction

from dhash_rollout.canary.judge import ReleasePoll
from dhash_rollout.canary.quantiles import Histogram
from dhash_service.errors import ConfigError

MAX_WEIGHT = 256  # HAProxy's largest server weight


def canary_host(hosts: Sequence[str], configured: str | None = None) -> str:
    """The configured canary host, else the first host of the first wave (the inventory's
    first: ``plan_waves`` puts no other host ahead of it)."""
    if len(hosts) < 2:
        raise ConfigError(
            "a canary on a fleet needs at least two hosts: one canary, and stable beside it"
        )
    if configured is None:
        return hosts[0]
    if configured not in hosts:
        raise ConfigError(
            f"the canary host {configured!r} is not in the fleet ({', '.join(hosts)})"
        )
    return configured


@dataclass(frozen=True)
class Weights:
    """Every host's HAProxy weight for a canary share, and the share they really give."""

    weights: dict[str, int]
    share_pct: float  # the canary host's share of the stable + canary weight


def share_of(weights: Mapping[str, int], canary: str) -> float:
    total = sum(weights.values())
    return 100.0 * weights[canary] / total if total else 0.0


def canary_weights(share_pct: float, canary: str, normal: Mapping[str, int]) -> Weights:
    """The weights that send the canary host ``share_pct`` % of new requests; ``normal``: every
    host's configured weight (the canary host's own is not used: its weight is the share's)."""
    if canary not in normal:
        raise ConfigError(f"the canary host {canary!r} is not in the fleet")
    if not 0 <= share_pct < 100:
        raise ConfigError(f"a canary's share on a fleet is 0 to below 100 %, not {share_pct:g}")
    stable = {h: w for h, w in normal.items() if h != canary}
    total = sum(stable.values())
    if total == 0:
        raise ConfigError("the stable hosts' weights are all 0: nothing would serve stable")
    if share_pct == 0:
        return Weights({h: 0 if h == canary else w for h, w in normal.items()}, 0.0)
    ratio = Fraction(str(share_pct)) / (100 - Fraction(str(share_pct)))  # canary : stable
    wanted = ratio * total
    if wanted <= MAX_WEIGHT:
        weights = {**stable, canary: max(1, round(wanted))}
    else:  # the stable hosts scaled down so the canary's weight fits
        scale = MAX_WEIGHT / wanted
        weights = {h: max(1, round(w * scale)) if w else 0 for h, w in stable.items()}
        weights[canary] = max(1, min(MAX_WEIGHT, round(ratio * sum(weights.values()))))
    ordered = {h: weights[h] for h in normal}
    return Weights(ordered, share_of(ordered, canary))


def changed_weights(now: Mapping[str, int | None], wanted: Mapping[str, int]) -> dict[str, int]:
    """The hosts whose weight must be set (the rest already have it)."""
    return {h: w for h, w in wanted.items() if now.get(h) != w}


def summed(polls: Sequence[ReleasePoll], bounds: Sequence[float]) -> ReleasePoll:
    """The stable hosts as one release: their increments added (PromQL's ``sum(increase)``,
    as the fleet's gate counts), healthy only if every one of them answered."""
    hist = Histogram.empty(bounds)
    for p in polls:
        hist = hist.plus(p.hash_times)
    healthy = bool(polls) and all(p.healthy is not False for p in polls)
    return ReleasePoll(
        sum(p.extractions for p in polls), sum(p.failures for p in polls), hist, healthy
    )


def resume_problem(
    served: Mapping[str, str | None], canary: str, version: str, stable: str
) -> str | None:
    """Why an interrupted fleet canary cannot go on (None: it can): its host must still serve
    the candidate and every other host the stable release."""
    if served.get(canary) != version:
        return f"the canary host {canary} serves {served.get(canary) or 'nothing'}, not {version}"
    others = {h: v for h, v in served.items() if h != canary and v != stable}
    if others:
        named = ", ".join(f"{h} ({v or 'nothing'})" for h, v in others.items())
        return f"stable hosts no longer serve {stable}: {named}"
    return None
