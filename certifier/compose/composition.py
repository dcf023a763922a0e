"""Composition of a loss's KL fact with the Rayleigh estimates (docs/theory.md, section 3).

For a desingularizer phi, every record (a point with L and R, or a lower bound on R) gives
    phi'(L) ||grad L||^2 = phi'(L) R ||g||_D^2 >= R phi'(L) G(L),
with G(L) <= ||g||_D^2 the loss's declared lower bound (language.losses). The KL constant K of
the region is the minimum of R phi'(L) G(L) over the records; for the loss's natural phi,
phi'(L) G(L) = c is constant and K = c mu with mu = min R.

When R tends to 0 with L (no constant mu), the loss-level profile shows it: the minimum of R on
loss bands falls like L^beta; `auto` then picks phi'(u) = u^(-2 alpha) with 2 alpha = 1 + beta
(least squares), for which K = 4 min R / L^beta.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..analyse.records import Records
from ..language.desingularizers import Desingularizer, make
from ..language.losses import Loss

BANDS_PER_DECADE = 2
POWER_SLOPE = 0.1      # a fitted profile exponent above this means "R falls with L"
DECADES = 1e-4         # ... provided the sampled losses span at least this ratio
TAIL_DECADES = 4       # the exponent that governs L -> 0 is fitted on the lowest 4 decades of bands


@dataclass
class Composition:
    phi: Desingularizer
    reason: str                       # why this phi (auto's choice, or requested)
    exponent: float | None            # fitted beta of the envelope R >= mu_beta L^beta
    profile: list[dict] = field(default_factory=list)   # [{low, high, mu, points}] per loss band


def kl_constant(records: Records, radius: float, floor: float, loss: Loss, phi: Desingularizer,
                to_zero: bool = False) -> tuple[float, int | None, float]:
    """(K, index of the record that gives it, M) over the records within radius and above floor.

    The loss's bound G(L, M) holds at each point with M its own largest per-sample loss, so K is
    the minimum of R phi'(L) G(L, M(theta)) over the records. M returned: the largest per-sample
    loss seen within radius (reported; losses without the need give inf).

    `to_zero` (a claim with floor 0): the records stop at the rounding-noise level, but the claim
    speaks for every level down to 0. If the band minima of R phi'(L) G(L) fall with L across
    the lowest decades (vanishing_exponent), the minimum over the records is no estimate of the
    infimum below them, which is 0: K = 0, given by the record of lowest loss. This is what keeps
    `desingularizer log` from certifying a linear rate where R ~ L^(1/3) (docs/theory.md 11)."""
    if to_zero and vanishing_exponent(loss_profile(records, radius, floor, loss, phi)) is not None:
        lowest = min(records.eligible(radius, floor), key=lambda i: records.loss[i], default=None)
        M = records.max_sample_loss(radius) if loss.needs_sample_bound else math.inf
        return 0.0, lowest, M
    best, arg = math.inf, None
    for i in records.eligible(radius, floor):
        L = records.loss[i]
        M = records.sample_max[i] if loss.needs_sample_bound else math.inf
        k = records.value[i] * phi.dphi(L) * loss.floor_g(L, M)
        if k < best:
            best, arg = k, i
    M = records.max_sample_loss(radius) if loss.needs_sample_bound else math.inf
    return best, arg, M


def loss_profile(records: Records, radius: float, floor: float, loss: Loss | None = None,
                 phi: Desingularizer | None = None) -> list[dict]:
    """The loss-level profile: on each loss band [10^(j/2), 10^((j+1)/2)) that holds records, the
    minimum of R (mu) and, given a loss and phi, the band's own KL constant K (the minimum of
    R phi'(L) G(L, M(theta)) over the band's records)."""
    bands: dict[int, list[int]] = {}
    for i in records.eligible(radius, floor):
        L = records.loss[i]
        if L <= 0:
            continue
        bands.setdefault(math.floor(math.log10(L) * BANDS_PER_DECADE), []).append(i)
    out = []
    for j, idx in sorted(bands.items()):
        band = {"low": 10 ** (j / BANDS_PER_DECADE), "high": 10 ** ((j + 1) / BANDS_PER_DECADE),
                "mu": min(records.value[i] for i in idx), "points": len(idx)}
        if loss is not None and phi is not None:
            band["kl_constant"] = min(
                records.value[i] * phi.dphi(records.loss[i]) *
                loss.floor_g(records.loss[i], records.sample_max[i] if loss.needs_sample_bound else math.inf)
                for i in idx)
        out.append(band)
    return out


def piecewise_time(profile: list[dict], phi: Desingularizer, initial: float, level: float) -> float | None:
    """Flow time to go from L0 down to `level` assembled band by band: on each band the
    phi-decrease rate is at least that band's K, so the time spent there is at most
    (phi(top) - phi(bottom)) / K_band. None when a band between level and L0 holds no record."""
    if level >= initial:
        return 0.0
    total, covered = 0.0, level
    for band in sorted(profile, key=lambda b: b["low"]):
        top, bottom = min(band["high"], initial), max(band["low"], level)
        if top <= bottom:
            continue
        if bottom > covered * (1 + 1e-12):
            return None     # a gap with no sampled point
        if not band.get("kl_constant", 0) > 0:
            return None
        total += phi.gap(top, bottom) / band["kl_constant"]
        covered = top
    return total if covered >= initial * (1 - 1e-12) else None


def fit_exponent(profile: list[dict], key: str = "mu") -> float | None:
    """Slope beta of log(min R) against log L over the bands (the lower envelope R ~ L^beta),
    by least squares on the band minima; None with fewer than three bands. key="kl_constant"
    fits the bands' KL constants instead."""
    if len(profile) < 3:
        return None
    x = np.log([b["low"] for b in profile])
    y = np.log([max(b[key], 1e-300) for b in profile])
    slope = float(np.polyfit(x, y, 1)[0])
    return slope


def tail(profile: list[dict], decades: float = TAIL_DECADES) -> list[dict]:
    """The bands within `decades` of the lowest one: where the behaviour as L -> 0 shows. Higher
    bands hold the transient (far from a minimiser R may fall faster or slower)."""
    if not profile:
        return []
    lowest = profile[0]["low"]
    return [b for b in profile if b["low"] <= lowest * 10 ** decades * (1 + 1e-9)]


def vanishing_exponent(profile: list[dict]) -> float | None:
    """The fitted exponent of the bands' KL constants against L over the lowest TAIL_DECADES, when
    they fall toward 0 (exponent above POWER_SLOPE) and the profile spans that many decades; None
    otherwise. Needs a profile built with a loss and a phi (band["kl_constant"])."""
    low = tail(profile)
    if not low or "kl_constant" not in low[0] or low[-1]["high"] < low[0]["low"] / DECADES:
        return None
    gamma = fit_exponent(low, "kl_constant")
    return gamma if gamma is not None and gamma > POWER_SLOPE else None


def auto_power(loss_name: str, profile: list[dict]) -> tuple[float | None, float | None]:
    """(beta, alpha) of `auto` from a loss-level profile ([{low, high, mu}] ascending in L, sampled or
    proved): beta the slope of log mu against log L over the lowest TAIL_DECADES of bands (all bands
    when those are fewer than three), alpha = (1 + b) / 2 with b = beta rounded to a twelfth, when the
    loss is least squares, POWER_SLOPE < beta <= 1 and the bands span DECADES (R vanishes as L -> 0,
    not R collapsing at one loss level); alpha None otherwise (the natural phi)."""
    beta = fit_exponent(profile)
    # the exponent that matters as L -> 0 is that of the lowest decades (the single neuron with
    # n = 2 students: 0.333 there, 0.376 over all bands, whose upper part is the transient)
    beta_tail = fit_exponent(tail(profile))
    if beta_tail is not None:
        beta = beta_tail
    spans_decades = bool(profile) and profile[0]["low"] <= DECADES * profile[-1]["high"]
    if not (loss_name == "least_squares" and beta is not None and POWER_SLOPE < beta <= 1.0 and spans_decades):
        return beta, None
    b = min(round(beta * 12) / 12, 1.0)   # a nearby fraction (1/3 stays 1/3), at most 1
    b = max(b, 1 / 12)
    return beta, (1 + b) / 2             # R falls like L^beta: phi'(u) = u^-(1+b)


def choose(loss: Loss, requested: str, params: dict, records: Records, radius: float, floor: float
           ) -> Composition:
    profile = loss_profile(records, radius, floor)
    beta, alpha = auto_power(loss.name, profile)
    if requested != "auto":
        return Composition(make(requested, **params), "requested in the spec", beta, profile)
    natural = loss.natural_phi()
    if alpha is not None:
        return Composition(make("power", alpha=alpha),
                           f"auto: min R on the lowest loss bands falls like L^{beta:.3g} (no constant mu): "
                           f"power with 2 alpha = 1 + {2 * alpha - 1:.4g}", beta, profile)
    return Composition(natural, f"auto: the natural desingularizer of {loss.name}", beta, profile)
