"""Desingularizers against closed forms (theory note, section 3), ODE solves of the extremal
flow, and properties (hypothesis): phi^-1(phi(u)) = u, monotone, non-negative, stable."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.integrate import solve_ivp
from scipy.special import lambertw

from certifier.compose.rate import Rate
from certifier.language.desingularizers import make, w0_exp

PHIS = [make("log"), make("power", alpha=2 / 3), make("power", alpha=0.75), make("power", alpha=1.0),
        make("lambert")]
levels = st.floats(min_value=1e-6, max_value=50.0)
speeds = st.floats(min_value=1e-4, max_value=1e3)
times = st.floats(min_value=0.0, max_value=1e4)


# --- closed forms written independently from the theory note's table -------------------
def closed_form(phi, L0, K, t):
    if phi.name == "log":
        return L0 * math.exp(-K * t)
    if phi.name == "power":
        a = phi.params["alpha"]
        q = 2 * a - 1
        return (L0 ** (-q) + q * K * t) ** (-1 / q)
    c0 = math.log(math.exp(L0) - 1) - 1 / (math.exp(L0) - 1)
    return math.log(1 + 1 / lambertw(math.exp(K * t - c0)).real)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(PHIS), st.floats(min_value=0.01, max_value=20.0), st.floats(min_value=1e-3, max_value=10.0),
       st.floats(min_value=0.0, max_value=30.0))
def test_rate_matches_the_closed_form(phi, L0, K, t):
    expected = closed_form(phi, L0, K, t)
    assert Rate(phi, K, L0, 0.0).bound(t) == pytest.approx(expected, rel=1e-9, abs=1e-300)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(PHIS), levels, st.floats(min_value=0.0, max_value=1.0))
def test_inverse_of_phi(phi, u, fraction):
    """phi^-1(phi(u)) = u, and descending by gap(u, v) from u lands on v."""
    assert phi.descend(u, 0.0) == u
    v = u * fraction
    if v <= 0 or v >= u:
        return
    s = phi.gap(u, v)
    assert s >= 0
    assert phi.descend(u, s) == pytest.approx(v, rel=1e-7, abs=1e-300)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(PHIS), levels, speeds, times, times)
def test_rates_monotone_and_non_negative(phi, L0, K, t1, t2):
    rate = Rate(phi, K, L0, 0.0)
    lo, hi = sorted((t1, t2))
    b_lo, b_hi = rate.bound(lo), rate.bound(hi)
    assert 0.0 <= b_hi <= b_lo <= L0
    assert math.isfinite(b_lo) and math.isfinite(b_hi)


@pytest.mark.parametrize("phi", PHIS, ids=lambda p: f"{p.name}{p.params.get('alpha', '')}")
@pytest.mark.parametrize("L0", [1e-12, 1e-3, 1.0, 30.0, 1e6])
@pytest.mark.parametrize("t", [0.0, 1e-9, 1.0, 1e6, 1e15])
def test_stable_at_the_extremes(phi, L0, t):
    """No overflow, no log of a negative, no NaN: huge L0, tiny losses, huge t."""
    b = Rate(phi, 2.0, L0, 0.0).bound(t)
    assert math.isfinite(b) and 0.0 <= b <= L0


@pytest.mark.parametrize("phi", PHIS, ids=lambda p: f"{p.name}{p.params.get('alpha', '')}")
def test_bound_is_the_solution_of_the_extremal_flow(phi):
    """The bound solves dL/dt = -K / phi'(L) (the slowest flow the KL inequality allows)."""
    L0, K = 2.5, 0.7
    ts = np.linspace(0, 8, 33)
    sol = solve_ivp(lambda t, L: [-K / phi.dphi(L[0])], (0, 8), [L0], t_eval=ts, rtol=1e-12, atol=1e-14)
    rate = Rate(phi, K, L0, 0.0)
    for t, L in zip(ts, sol.y[0]):
        assert rate.bound(t) == pytest.approx(L, rel=1e-7)


def test_lambert_w_of_huge_and_tiny_arguments():
    for x in [-700.0, -50.0, 0.0, 10.0, 699.0, 701.0, 1e4, 1e8]:
        w = w0_exp(x)
        assert w > 0
        assert w + math.log(w) == pytest.approx(x, rel=1e-12, abs=1e-12)   # w e^w = e^x
    # below about -745, e^x underflows: the level reached is still exact, L = log1p(w) + w - x
    phi = make("lambert")
    assert phi.descend(800.0, 1e-6) == pytest.approx(800.0 - 1e-6, rel=1e-15)   # phi'(800) = 1


@pytest.mark.parametrize("phi", PHIS, ids=lambda p: f"{p.name}{p.params.get('alpha', '')}")
def test_path_integral_against_quadrature(phi):
    from scipy.integrate import quad

    lo, hi = 0.05, 3.0
    expected, _ = quad(lambda u: math.sqrt(phi.dphi(u)), lo, hi, epsabs=1e-13, epsrel=1e-12)
    assert phi.path_integral(lo, hi) == pytest.approx(expected, rel=1e-9)


def test_floor_and_discrete_steps():
    phi = make("log")
    rate = Rate(phi, 2.0, 1.0, 0.1, step=0.1, smoothness=4.0)
    assert rate.speed == pytest.approx(0.1 * (1 - 4.0 * 0.1 / 2) * 2.0)
    assert rate.bound(1e9) == 0.1                       # never below the floor
    assert rate.time_to(0.05) is None                   # below the floor: not claimed
    k = rate.time_to(0.5)                               # steps, rounded up
    assert k == math.ceil(math.log(2) / rate.speed) and rate.bound(k) <= 0.5 < rate.bound(k - 1)
