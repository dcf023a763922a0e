"""The sampled engine against independent computations (tests/oracles.py): exact eigenvalues
and closed-form flows for linear models, a solve_ivp gradient flow for the network."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import oracles
import pytest

from certifier.pipeline import run_file, run_text

SPECS = Path(__file__).resolve().parent.parent / "specs"


@pytest.fixture(scope="module")
def results():
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = run_file(str(SPECS / f"{name}.rq"))
        return cache[name]
    return get


def flow_times(result, count=40):
    """Times at which to compare: up to where the bound reaches 1e-12 of L0 (or the horizon)."""
    t_end = result.rate["times_to_fraction"].get("1e-6") or result.rate["horizon"]
    return np.linspace(0.0, 2.0 * t_end, count)


def test_underparameterized_linear_mu_is_lambda_min(results):
    r = results("linear_underparameterized")
    _, lam, *_ = oracles.linear_facts(*oracles.linear_data(noise=False))
    assert r.verdict == "certified" and r.sound is False
    # every sampled R is >= inf R = lambda_min(Sigma); the search must also reach it
    assert r.mu <= lam[0] * (1 + 1e-9)
    assert r.mu >= lam[0] * (1 - 1e-6)
    assert lam[0] == pytest.approx(0.47786950357, rel=1e-9)


def test_underparameterized_linear_bound_above_exact_flow(results):
    r = results("linear_underparameterized")
    x, y = oracles.linear_data(noise=False)
    ts = flow_times(r)
    exact = oracles.linear_flow_loss(x, y, np.zeros(4), ts)
    assert exact[0] == pytest.approx(r.loss["initial"], rel=1e-12)
    for t, value in zip(ts, exact):
        assert value <= r.bound(t) * (1 + 1e-9), (t, value, r.bound(t))
    # the rate is nearly tight: late in the flow L(t) ~ C exp(-4 lambda_min t)
    assert exact[-1] / r.bound(ts[-1]) > 1e-3


def test_underparameterized_linear_confinement(results):
    r = results("linear_underparameterized")
    x, y = oracles.linear_data(noise=False)
    L0 = float(np.mean(y**2))
    assert r.region["path_length_bound"] == pytest.approx(math.sqrt(L0 / r.mu), rel=1e-12)
    assert r.region["path_length_bound"] <= r.region["radius"]
    # the exact flow's path ends at w*; its length is below rho
    _, _, _, w_star, _ = oracles.linear_facts(x, y)
    assert np.linalg.norm(w_star) <= r.region["path_length_bound"]


def test_nonrealizable_floor_zero_is_never_certified(results):
    r = results("linear_nonrealizable")
    x, y = oracles.linear_data(noise=True)
    *_, l_star = oracles.linear_facts(x, y)
    assert r.verdict == "refuted" and r.exit_code == 1
    assert r.failing_region.kind == "critical-point"
    # the failing point is (numerically) the minimiser: its loss is L*
    assert r.failing_region.points[0].loss == pytest.approx(l_star, rel=1e-9)
    assert "floor" in r.failing_region.suggestion


@pytest.mark.parametrize("seed", [1, 7])
def test_nonrealizable_floor_zero_refuted_for_other_seeds(seed):
    text = (SPECS / "linear_nonrealizable.rq").read_text().replace(
        "method sampled(samples=2048, seed=0)", f"method sampled(samples=512, seed={seed})")
    r = run_text(text, str(SPECS / "linear_nonrealizable.rq"))
    assert r.verdict != "certified"


def test_nonrealizable_with_floor_matches_closed_form(results):
    r = results("linear_nonrealizable_floor")
    x, y = oracles.linear_data(noise=True)
    _, lam, _, _, l_star = oracles.linear_facts(x, y)
    floor = 0.3
    exact_inf = lam[0] * (1 - l_star / floor)   # inf of R on {L >= floor}, attained inside U
    assert r.verdict == "certified"
    assert r.mu >= exact_inf * (1 - 1e-9)        # no sampled R is below the true infimum
    assert r.mu <= exact_inf * 1.01              # and the search gets within 1% of it
    assert r.rate["times_to_fraction"]["1e-1"] is None   # 0.1 L0 is below the floor: not claimed
    ts = np.linspace(0, 30.0, 61)
    exact = oracles.linear_flow_loss(x, y, np.zeros(4), ts)
    for t, value in zip(ts, exact):
        assert value <= r.bound(t) * (1 + 1e-9)
    assert r.bound(1e6) == pytest.approx(floor)


def test_two_layer_network_bound_above_solve_ivp_flow(results):
    r = results("two_layer_tanh")
    # mu is the smallest R sampled; the kernel's lambda_min is reported beside it, never sets it
    assert r.verdict == "certified" and r.mu_source != "tangent-kernel"
    x, y, W, a = oracles.two_layer_problem()
    L0 = oracles.two_layer_loss_grad(np.concatenate([W.ravel(), a]), x, y)[0]
    assert r.loss["initial"] == pytest.approx(L0, rel=1e-12)
    ts = np.linspace(0.0, 8.0, 33)
    flow = oracles.two_layer_flow_loss(ts)
    for t, value in zip(ts, flow):
        assert value <= r.bound(t) * (1 + 1e-7), (t, value, r.bound(t))


def test_two_layer_network_mu_between_kernel_and_r_at_theta0(results):
    """lambda_min(K) <= R(theta0), from a hand-written Jacobian; mu is a minimum of sampled R that
    includes theta0, so mu <= R(theta0); on this small ball R stays near the kernel's bound."""
    r = results("two_layer_tanh")
    x, y, W, a = oracles.two_layer_problem()
    h = np.tanh(x @ W.T)
    # J for sample i: d f_i / d W_jk = a_j (1 - h_ij^2) x_ik ; d f_i / d a_j = h_ij
    JW = ((a[None, :] * (1 - h**2))[:, :, None] * x[:, None, :]).reshape(16, -1)
    J = np.concatenate([JW, h], axis=1)
    lam0 = np.linalg.eigvalsh(J @ J.T / 16)[0]
    res = h @ a - y
    grad = 2 / 16 * J.T @ res
    R0 = float(grad @ grad) / (4 * np.mean(res**2))
    assert lam0 <= R0
    assert r.mu <= R0 * (1 + 1e-9)
    assert r.mu >= 0.5 * lam0
    kernel = next(s for s in r.mu_sources if s.source == "tangent-kernel")
    assert kernel.minimum <= lam0 * (1 + 1e-6)     # the lowest over the points it was computed at


def test_fixed_radius_too_small_is_refuted_with_both_numbers():
    text = (SPECS / "linear_underparameterized.rq").read_text().replace(
        "region ball(center=init, radius=auto)", "region ball(center=init, radius=0.5)")
    r = run_text(text, "small.rq")
    assert r.verdict == "refuted" and r.failing_region.kind == "confinement"
    x, y = oracles.linear_data(noise=False)
    _, lam, *_ = oracles.linear_facts(x, y)
    L0 = float(np.mean(y**2))
    mu = r.failing_region.numbers["mu"]
    rho = r.failing_region.numbers["path_length_bound"]
    assert r.failing_region.numbers["radius"] == 0.5
    assert mu >= lam[0] * (1 - 1e-9)                      # mu over the small ball >= inf over all
    assert rho == pytest.approx(math.sqrt(L0 / mu), rel=1e-12)
    assert 0.5 < rho <= math.sqrt(L0 / lam[0]) * (1 + 1e-9)
    assert "r = 0.5" in r.failing_region.message and f"rho = {rho:.4g}" in r.failing_region.message


def test_witness_refutes_an_optimistic_bound():
    """A bound with twice the true rate must be caught by the witness descent."""
    from certifier import check as check_stage
    from certifier.analyse.regions import Ball
    from certifier.analyse.witness import run_witness
    from certifier.compile.problem import Problem
    from certifier.parse import parse

    path = SPECS / "linear_underparameterized.rq"
    problem = Problem(check_stage.check(parse(path.read_text(), str(path))))
    x, y = oracles.linear_data(noise=False)
    _, lam, *_ = oracles.linear_facts(x, y)
    L0 = float(np.mean(y**2))
    beta = 2 * lam[-1]
    w = run_witness(problem, 0.25 / beta, 100.0, lambda t: L0 * math.exp(-4 * 2 * lam[0] * t),
                    1e-16 * L0, Ball(problem.theta0, 10.0), 20000)
    assert w.violation is not None
    t = w.violation["t"]
    assert w.violation["loss"] > w.violation["bound"]
    # and the true flow violates the same bound at that time too
    assert oracles.linear_flow_loss(x, y, np.zeros(4), [t])[0] > L0 * math.exp(-8 * lam[0] * t)
