"""Kurdyka-Lojasiewicz desingularizers. Each declares, in one place, phi, phi', the stable
inverse step u -> phi^-1(phi(u) - s), the gap phi(a) - phi(b), and the path-length integral
int sqrt(phi'(u)) du used by confinement (docs/theory.md, sections 3-4).

Composition (written once, in compose.rate): if phi'(L) ||grad L||^2 >= K on the region, then
L(theta_t) <= phi^-1(phi(L0) - K t) while the flow stays in the region.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Desingularizer:
    name: str
    params: dict = field(default_factory=dict)

    # phi and phi' ------------------------------------------------------------------
    def phi(self, u: float) -> float:
        return RULES[self.name].phi(u, **self.params)

    def dphi(self, u: float) -> float:
        return RULES[self.name].dphi(u, **self.params)

    def gap(self, high: float, low: float) -> float:
        """phi(high) - phi(low) >= 0 for high >= low > 0, computed without cancellation where possible."""
        return RULES[self.name].gap(high, low, **self.params)

    def descend(self, start: float, s: float) -> float:
        """phi^-1(phi(start) - s) for s >= 0: the level reached after a phi-decrease of s."""
        if s <= 0:
            return start
        if s == math.inf:
            return 0.0
        return min(RULES[self.name].descend(start, s, **self.params), start)   # never up by rounding

    # outward rounding (the sound mode): upper bounds for the exact reals given, by arb ----------
    def descend_up(self, start: float, s: float) -> float:
        """A float >= phi^-1(phi(start) - s) for the exact reals start > 0 and s >= 0."""
        if s <= 0:
            return start
        if s == math.inf:
            return 0.0
        with _arb() as arb:
            value = RULES[self.name].arb_descend(arb(start), arb(s), **self.params)
            return min(_float_up(value), start)   # phi^-1(phi(start) - s) <= start for s >= 0

    def gap_up(self, high: float, low: float) -> float:
        """A float >= phi(high) - phi(low) for the exact reals high >= low > 0."""
        if high == low:
            return 0.0
        with _arb() as arb:
            return _float_up(RULES[self.name].arb_gap(arb(high), arb(low), **self.params))

    def path_integral(self, low: float, high: float) -> float:
        """int_low^high sqrt(phi'(u)) du (infinite when it diverges)."""
        if high <= low:
            return 0.0
        return RULES[self.name].path(low, high, **self.params)

    # text ----------------------------------------------------------------------------
    @property
    def phi_text(self) -> str:
        return RULES[self.name].text(**self.params)

    def formula(self, L0: float, K: float, exact: bool = False, K_text: str | None = None) -> str:
        """The bound phi^-1(phi(L0) - K t) as text: numbers to 6 digits, or `exact` (repr, the
        doubles the sound mode computed with); K_text replaces K's number (e.g. "4 * mu")."""
        number = repr if exact else (lambda x: f"{x:.6g}")
        return RULES[self.name].formula(L0, K_text or number(K), number, **self.params)

    def asymptotic(self, K: float) -> str:
        return RULES[self.name].asymptotic(K, **self.params)


class _Log:
    """phi = log u: phi' = 1/u; L(t) = L0 exp(-K t)."""

    phi = staticmethod(math.log)
    dphi = staticmethod(lambda u: 1.0 / u)
    gap = staticmethod(lambda high, low: math.log(high / low))
    path = staticmethod(lambda low, high: 2.0 * (math.sqrt(high) - math.sqrt(low)))
    text = staticmethod(lambda: "phi(u) = log(u)")

    @staticmethod
    def descend(start, s):
        return start * math.exp(-s) if s < 745 + math.log(max(start, 1e-300)) else 0.0

    @staticmethod
    def arb_descend(start, s):
        return start * (-s).exp()

    @staticmethod
    def arb_gap(high, low):
        return (high / low).log()

    @staticmethod
    def formula(L0, K, number):
        return f"{number(L0)} * exp(-{K} * t)"

    @staticmethod
    def asymptotic(K):
        return f"L ~ exp(-{K:.3g} t) (linear rate)"


class _Power:
    """phi' = u^(-2a), 1/2 < a <= 1: phi = -u^(1-2a)/(2a-1) (a = 1: phi = -1/u);
    L(t) = (L0^(1-2a) + (2a-1) K t)^(-1/(2a-1))."""

    @staticmethod
    def phi(u, alpha):
        return -u ** (1 - 2 * alpha) / (2 * alpha - 1)

    @staticmethod
    def dphi(u, alpha):
        return u ** (-2 * alpha)

    @staticmethod
    def gap(high, low, alpha):
        q = 2 * alpha - 1
        try:
            return (low ** (-q) - high ** (-q)) / q
        except OverflowError:
            return math.inf

    @staticmethod
    def descend(start, s, alpha):
        q = 2 * alpha - 1
        # (start^-q + q s)^(-1/q), in logs so that neither huge s nor tiny start overflows
        a = -q * math.log(start)
        b = math.log(q) + math.log(s)   # s may be subnormal: q * s would underflow to 0
        return math.exp(-np.logaddexp(a, b) / q)

    @staticmethod
    def path(low, high, alpha):
        if alpha == 1:
            return math.log(high / low) if low > 0 else math.inf
        return (high ** (1 - alpha) - low ** (1 - alpha)) / (1 - alpha)

    @staticmethod
    def text(alpha):
        return f"phi(u) = -u^(1-2a)/(2a-1), a = {alpha:.4g}" if alpha != 1 else "phi(u) = -1/u (a = 1)"

    @staticmethod
    def arb_descend(start, s, alpha):
        q = 2 * _exact(alpha) - 1
        return (start ** (-q) + q * s) ** (-1 / q)

    @staticmethod
    def arb_gap(high, low, alpha):
        q = 2 * _exact(alpha) - 1
        return (low ** (-q) - high ** (-q)) / q

    @staticmethod
    def formula(L0, K, number, alpha):
        q = 2 * alpha - 1
        return f"({number(L0)}^(-{q:.4g}) + {q:.4g} * {K} * t)^(-{1 / q:.4g})"

    @staticmethod
    def asymptotic(K, alpha):
        q = 2 * alpha - 1
        return f"L ~ ({q:.3g} * {K:.3g} * t)^(-{1 / q:.3g}), i.e. L ~ t^-{1 / q:.3g}"


def w0_exp(x: float) -> float:
    """W0(e^x), the principal Lambert W of e^x, for any real x (no overflow; for x below about
    -745, e^x underflows and so does W0(e^x) ~ e^x: callers use log1p(w) + w - x, exact there)."""
    if x < 700:
        from scipy.special import lambertw  # here: scipy costs a cache hit's report ~0.2 s at start-up

        return float(lambertw(math.exp(x)).real)
    w = x - math.log(x)   # w + log w = x, by Newton from the asymptotic start
    for _ in range(50):
        step = (w + math.log(w) - x) / (1 + 1 / w)
        w -= step
        if abs(step) <= 1e-15 * w:
            break
    return w


def _log_expm1(u: float) -> float:
    """log(e^u - 1), stable for small and large u."""
    return u + math.log(-math.expm1(-u)) if u > 1 else math.log(math.expm1(u))


class _Lambert:
    """phi(u) = log(e^u - 1) - 1/(e^u - 1), phi' = 1/(1 - e^-u)^2 (the cross-entropy form);
    phi^-1(v) = log(1 + 1/W0(e^-v))."""

    @staticmethod
    def phi(u):
        inv = math.exp(-u) / -math.expm1(-u) if u > 1 else 1.0 / math.expm1(u)   # 1/(e^u - 1), no overflow
        return _log_expm1(u) - inv

    @staticmethod
    def dphi(u):
        return 1.0 / (-math.expm1(-u)) ** 2

    @staticmethod
    def gap(high, low):
        return _Lambert.phi(high) - _Lambert.phi(low)

    @staticmethod
    def descend(start, s):
        x = s - _Lambert.phi(start)          # phi(L) = phi(start) - s  <=>  L = log(1 + 1/W0(e^x))
        w = w0_exp(x)
        # w e^w = e^x, so log w = x - w: log(1 + 1/w) = log1p(w) + w - x, stable for small w
        return math.log1p(1.0 / w) if w > 1 else math.log1p(w) + w - x

    @staticmethod
    def path(low, high):
        if low <= 0:
            return math.inf
        return _log_expm1(high) - _log_expm1(low)

    @staticmethod
    def text():
        return "phi(u) = log(e^u - 1) - 1/(e^u - 1)"

    @staticmethod
    def arb_phi(u):
        e = u.expm1()
        return e.log() - 1 / e

    @staticmethod
    def arb_descend(start, s):
        # phi(L) = phi(start) - s  <=>  L = log(1 + 1/W0(e^x)), x = s - phi(start); arb's W0 is rigorous
        w = (s - _Lambert.arb_phi(start)).exp().lambertw()
        return (1 + 1 / w).log()

    @staticmethod
    def arb_gap(high, low):
        return _Lambert.arb_phi(high) - _Lambert.arb_phi(low)

    @staticmethod
    def formula(L0, K, number):
        c0 = _Lambert.phi(L0)
        sign = "-" if c0 >= 0 else "+"
        return f"log(1 + 1/W0(exp({K} * t {sign} {number(abs(c0))})))"

    @staticmethod
    def asymptotic(K):
        return f"L ~ 1/({K:.3g} t)"


@contextlib.contextmanager
def _arb():
    """python-flint's arb at 128 bits (a ball that contains the exact value: no libm trusted)."""
    import flint

    old = flint.ctx.prec
    flint.ctx.prec = 128
    try:
        yield flint.arb
    finally:
        flint.ctx.prec = old


def _float_up(value) -> float:
    """A double >= every point of the arb ball `value` (inf when it is not finite)."""
    hi = float(value.upper())
    if math.isnan(hi):
        return math.inf
    return float(np.nextafter(hi, math.inf))   # float() rounds the endpoint to nearest


def _exact(x: float):
    import flint

    return flint.arb(x)


RULES = {"log": _Log, "power": _Power, "lambert": _Lambert}

LOG = Desingularizer("log")


def make(name: str, **params) -> Desingularizer:
    if name == "power":
        alpha = float(params["alpha"])
        if not 0.5 < alpha <= 1.0:
            raise ValueError("power desingularizer needs 1/2 < alpha <= 1")
        return Desingularizer("power", {"alpha": alpha})
    return Desingularizer(name)


DESINGULARIZERS = {"log": LOG, "lambert": Desingularizer("lambert"), "power": None}
