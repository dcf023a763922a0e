"""The practitioners' networks of issue 16 (specs/practice/): the verdict a user should get, and each
bound compared with independent computations: scipy's solve_ivp on the model written by hand in
numpy (tests/oracles.py), and plain gradient descent in numpy. The data and theta0 are read from
the compiled spec (they are inputs, not what is tested)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import oracles
import pytest
from helpers import problem_of

from certifier.pipeline import run_file

PRACTICE = Path(__file__).resolve().parents[1] / "specs" / "practice"


def inputs(name):
    path = PRACTICE / f"{name}.rq"
    problem = problem_of(path.read_text(), str(path))
    return problem, problem.x.numpy(), problem.y.numpy(), problem.theta0.numpy().copy()


def test_tanh_network_on_64_points_is_certified_to_its_floor_above_the_flow():
    problem, x, y, theta0 = inputs("tanh_64_points")
    r = run_file(str(PRACTICE / "tanh_64_points.rq"))
    # mu is R along the sampled residuals, not the kernel's lambda_min (4e-11 here): certified
    assert r.verdict == "certified" and r.sound is False
    assert r.mu_source != "tangent-kernel"
    kernel = next(s for s in r.mu_sources if s.source == "tangent-kernel")
    assert kernel.minimum < 1e-3 * r.mu
    L0, g0 = oracles.tanh_loss_grad(theta0, x, y, 64)
    assert r.loss["initial"] == pytest.approx(L0, rel=1e-12)
    assert r.mu <= float(g0 @ g0) / (4 * L0) * (1 + 1e-9)      # mu <= R(theta0) = |grad L|^2 / (4 L)

    def lg(th):
        return oracles.tanh_loss_grad(th, x, y, 64)
    # up to the time the bound reaches the floor 0.01, and beyond
    t_floor = next(t for t in np.linspace(0, 2000, 4001) if r.bound(t) <= 0.01 * (1 + 1e-12))
    ts = np.linspace(0.0, 1.5 * t_floor, 31)
    flow = oracles.flow_loss(lg, theta0, ts)
    for t, value in zip(ts, flow):
        assert value <= r.bound(t) * (1 + 1e-7), (t, value, r.bound(t))
    eta = r.witness.step
    steps = int(ts[-1] / eta)
    descent = oracles.descent_loss(lg, theta0, eta, steps)
    for k in range(0, steps + 1, max(1, steps // 50)):
        assert descent[k] <= r.bound(k * eta) * (1 + 1e-7)


@pytest.mark.slow     # 32 s on a quiet 2-core EPYC (64 s loaded); .ci/run runs the slow suite too
def test_relu_mlp_is_never_refuted_by_a_point_the_flow_cannot_reach():
    problem, x, y, theta0 = inputs("relu_mlp")
    r = run_file(str(PRACTICE / "relu_mlp.rq"))
    L0 = oracles.relu_mlp_loss_grad(theta0, x, y, (32, 32))[0]
    assert r.loss["initial"] == pytest.approx(L0, rel=1e-12)
    if r.verdict == "refuted":
        # a refutation must be real: the descent from theta0 itself (or the witness) shows it
        f = r.failing_region
        assert f.kind in ("critical-point", "confinement", "witness")
        for p in f.points:
            assert p.source == "descent from theta0" and p.loss <= L0 * (1 + 1e-12)
    else:
        assert r.verdict in ("certified", "inconclusive")
        for p in (r.failing_region.points if r.failing_region else []):
            assert p.loss <= L0 * (1 + 1e-12)        # in the sublevel set the flow lives in
    if r.verdict == "certified":
        def lg(th):
            return oracles.relu_mlp_loss_grad(th, x, y, (32, 32))
        eta = r.witness.step
        descent = oracles.descent_loss(lg, theta0, eta, 2000)
        for k in range(0, 2001, 40):
            assert descent[k] <= r.bound(k * eta) * (1 + 1e-7)


@pytest.mark.slow
def test_wide_tanh_network_on_16_points_is_certified_to_floor_zero_above_the_flow():
    problem, x, y, theta0 = inputs("wide_tanh_16_points")
    r = run_file(str(PRACTICE / "wide_tanh_16_points.rq"))
    assert r.verdict == "certified" and r.loss["floor"] == 0.0
    assert r.mu_source != "tangent-kernel"

    def lg(th):
        return oracles.tanh_loss_grad(th, x, y, 2048, bias=False)
    L0 = lg(theta0)[0]
    assert r.loss["initial"] == pytest.approx(L0, rel=1e-12)
    ts = np.linspace(0.0, 60.0, 13)
    flow = oracles.flow_loss(lg, theta0, ts)
    for t, value in zip(ts, flow):
        assert value <= r.bound(t) * (1 + 1e-7), (t, value, r.bound(t))


@pytest.mark.slow     # about 47 s; .ci/run runs the slow suite too
def test_relu_mlp_in_a_small_ball_is_refuted_only_because_descent_really_leaves_it():
    problem, x, y, theta0 = inputs("relu_mlp_radius_1")
    r = run_file(str(PRACTICE / "relu_mlp_radius_1.rq"))
    assert r.verdict == "refuted" and r.failing_region.kind == "confinement"
    left = r.witness.left_region_at
    assert left is not None
    # plain numpy descent at the witness's step leaves the unit ball then, its loss above the floor 0
    eta = r.witness.step
    theta = theta0.copy()
    for k in range(int(round(left / eta)) + 1):
        L, g = oracles.relu_mlp_loss_grad(theta, x, y, (32, 32))
        if np.linalg.norm(theta - theta0) > 1.0:
            break
        theta = theta - eta * g
    assert np.linalg.norm(theta - theta0) > 1.0 and L > 1e-3
    assert k * eta == pytest.approx(left, rel=1e-9)


def test_a_fast_then_slow_profile_is_said_with_its_band_by_band_times():
    """floor 0 with R small only on the lowest bands: the single-K rate is slow everywhere, the
    report says the profile (fast to a level, slow below). Times against the closed form of the
    log desingularizer: (log(top) - log(bottom)) / K on each band."""
    import math

    from certifier.compose.rate import Rate
    from certifier.compose.sampled import _fast_then_slow
    from certifier.language.desingularizers import LOG

    edges = [10.0 ** (-j / 2) for j in range(0, 21)]            # 1 ... 1e-10, half decades
    bands = [{"low": lo, "high": hi, "kl_constant": 1.0 if lo >= 1e-5 else 1e-4, "points": 3}
             for hi, lo in zip(edges, edges[1:])]
    rate = Rate(LOG, 1e-4, 1.0, 1e-10, None, None)
    times = {"1e-2": math.log(100) / 1.0, "1e-6": math.log(1e5) / 1.0 + math.log(10) / 1e-4}
    (note,) = _fast_then_slow({"bands": bands, "times_to_fraction": times}, rate)
    assert "1e-2·L0 by t = 4.605" in note
    assert f"single-K bound needs t = {math.log(100) / 1e-4:.4g}" in note
    assert "below L ≈ 1e-05" in note and "1e-6·L0 by t = 2.304e+04" in note
    # one K on every band: nothing to say
    flat = [dict(b, kl_constant=1e-4) for b in bands]
    assert _fast_then_slow({"bands": flat, "times_to_fraction": {"1e-2": math.log(100) / 1e-4}}, rate) == []
