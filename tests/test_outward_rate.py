"""The outward-rounded rate (the sound mode's) against mpmath at 60 digits, an oracle that
shares no code with python-flint: every bound is >= the exact value and within a few ulps of it."""
from __future__ import annotations

import mpmath
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from certifier.compose.rate import Rate, proved_rate
from certifier.language.desingularizers import make

mpmath.mp.dps = 60
PHIS = [make("log"), make("power", alpha=2 / 3), make("power", alpha=0.75), make("power", alpha=1.0),
        make("lambert")]


def exact_phi(phi, u):
    u = mpmath.mpf(u)
    if phi.name == "log":
        return mpmath.log(u)
    if phi.name == "power":
        q = 2 * mpmath.mpf(phi.params["alpha"]) - 1
        return -u ** (-q) / q
    e = mpmath.expm1(u)
    return mpmath.log(e) - 1 / e


def exact_descend(phi, start, s):
    """phi^-1(phi(start) - s) from the closed forms of the theory note's table."""
    start, s = mpmath.mpf(start), mpmath.mpf(s)
    if phi.name == "log":
        return start * mpmath.exp(-s)
    if phi.name == "power":
        q = 2 * mpmath.mpf(phi.params["alpha"]) - 1
        return (start ** (-q) + q * s) ** (-1 / q)
    w = mpmath.lambertw(mpmath.exp(s - exact_phi(phi, start)))
    return mpmath.log(1 + 1 / w.real)


ORACLE = mpmath.mpf(10) ** -45   # the oracle's own rounding at 60 digits


def close_above(value: float, exact, rel: float = 1e-14) -> bool:
    return value >= exact * (1 - ORACLE) and (value - exact) <= rel * exact + 1e-320


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(PHIS), st.floats(min_value=1e-8, max_value=50.0), st.floats(min_value=0.0, max_value=1e4))
def test_descend_up_bounds_the_exact_inverse(phi, start, s):
    exact = exact_descend(phi, start, s)
    assert close_above(phi.descend_up(start, s), exact)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(PHIS), st.floats(min_value=1e-8, max_value=50.0), st.floats(min_value=1e-8, max_value=50.0))
def test_gap_up_bounds_the_exact_gap(phi, a, b):
    high, low = max(a, b), min(a, b)
    exact = exact_phi(phi, high) - exact_phi(phi, low)
    value = phi.gap_up(high, low)
    # arb's error is relative to phi's values, not to their difference
    slack = 1e-14 * abs(exact) + 1e-30 * (abs(exact_phi(phi, high)) + abs(exact_phi(phi, low)))
    assert value >= exact - ORACLE * abs(exact) and value - exact <= slack


def test_underflow_stays_an_upper_bound():
    log = make("log")
    # L0 exp(-800) is below the smallest double: the bound is the smallest positive double, not 0
    assert log.descend_up(1.0, 800.0) == 5e-324
    assert log.descend(1.0, 800.0) == 0.0
    lam = make("lambert")
    exact = exact_descend(lam, 2.0, 1e6)   # ~ 1/(1e6): W0 of e^(1e6) far past a double's range
    assert close_above(lam.descend_up(2.0, 1e6), exact)


@pytest.mark.parametrize("phi", PHIS, ids=lambda p: f"{p.name}{p.params or ''}")
def test_outward_rate_bounds_the_exact_curve_and_times(phi):
    K, L0, floor = 0.37, 1.7, 1e-9
    rate = Rate(phi, K, L0, floor, outward=True)
    for t in (0.0, 1e-6, 0.5, 3.0, 40.0, 700.0):
        exact = max(exact_descend(phi, L0, mpmath.mpf(K) * t), floor) if t > 0 else L0
        assert close_above(rate.bound(t), exact)
    for level in (1.0, 1e-2, 1e-5):
        exact = (exact_phi(phi, L0) - exact_phi(phi, level)) / mpmath.mpf(K)
        assert close_above(rate.time_to(level), exact)


def test_outward_descent_speed_rounds_down():
    rate = Rate(make("log"), 0.3, 1.0, 0.0, step=0.1, smoothness=7.0, outward=True)
    exact = mpmath.mpf(0.1) * (1 - mpmath.mpf(7.0) * mpmath.mpf(0.1) / 2) * mpmath.mpf(0.3)
    assert rate.speed <= exact and exact - rate.speed <= 1e-15 * exact


def test_proved_rate_is_the_sound_modes_bound():
    L0, mu, floor, c = 0.0123, 0.0456, 1e-7, 4.0
    rate = proved_rate(L0, mu, floor, c)
    assert rate.formula() == f"L(t) <= max({L0!r} * exp(-4 * {mu!r} * t), {floor!r})"
    for t, value in rate.curve(100.0):
        exact = max(mpmath.mpf(L0) * mpmath.exp(-4 * mpmath.mpf(mu) * mpmath.mpf(t)), floor)
        assert close_above(value, exact)
    assert close_above(rate.time_to(1e-4), mpmath.log(mpmath.mpf(L0) / mpmath.mpf(1e-4)) / (4 * mpmath.mpf(mu)))
