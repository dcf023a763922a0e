"""The descent from theta0 by the linearised flow (analyse/trajectory.flow_path) against
independent flows: the closed-form flow of a linear model (where the tangent model is the
model: exact) and solve_ivp on the two-layer network (tight tolerances)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import oracles
import torch
from helpers import problem_of
from scipy.integrate import solve_ivp

from certifier.analyse.records import Records
from certifier.analyse.trajectory import SearchContext, flow_applicable, flow_path

ROOT = Path(__file__).resolve().parents[1]


def run_flow(name: str, floor_ratio: float = 1e-16):
    p = problem_of((ROOT / "specs" / name).read_text(), name)
    assert flow_applicable(p)
    L0 = p.point(p.theta0).loss
    eta = 0.5 / p.hessian_top_eigenvalue(p.theta0)
    records, times = Records(ceiling=L0), []
    ctx = SearchContext(gen=torch.Generator().manual_seed(0), eta=eta, noise=floor_ratio * L0,
                        advance=lambda n=1: None)
    steps = flow_path(p, p.theta0, ctx, records, times=times)
    return p, records, np.array(times), steps, eta


def test_linear_model_points_lie_on_the_closed_form_flow():
    p, records, times, steps, eta = run_flow("linear_underparameterized.rq")
    x, y = oracles.linear_data(noise=False)
    exact = oracles.linear_flow_loss(x, y, np.zeros(4), times)
    assert len(times) == records.count() >= 20
    for L, e in zip(records.loss, exact):
        assert abs(L - e) <= 1e-9 * e + 1e-15 * exact[0]
    # down to the rounding level: at most FLOW_RATIO of L per step, so about 3 steps a decade
    assert records.loss[-1] <= 1e-15 * records.loss[0]
    assert steps <= 80


def two_layer_flow_profile(t_end: float):
    """(L, R) along the two-layer network's gradient flow by solve_ivp (RK45, tight tolerances),
    R = ||grad L||^2 / (4 L) (least squares)."""
    x, y, W, a = oracles.two_layer_problem()
    theta0 = np.concatenate([W.ravel(), a])
    ts = np.concatenate([[0.0], np.geomspace(1e-4, t_end, 600)])
    sol = solve_ivp(lambda t, th: -oracles.two_layer_loss_grad(th, x, y)[1], (0.0, t_end), theta0,
                    t_eval=ts, rtol=1e-10, atol=1e-12, method="RK45")
    assert sol.success, sol.message
    values = [oracles.two_layer_loss_grad(sol.y[:, i], x, y) for i in range(len(ts))]
    L = np.array([v[0] for v in values])
    R = np.array([float(v[1] @ v[1]) / (4 * v[0]) for v in values])
    return ts, L, R


def test_two_layer_network_points_follow_solve_ivp():
    p, records, times, steps, eta = run_flow("two_layer_tanh.rq", 1e-10)
    ts, L, R = two_layer_flow_profile(8.0)
    ours_L, ours_R = np.array(records.loss), np.array(records.value)
    keep = ours_L >= L[-1]
    assert keep.sum() >= 15
    # the recorded points are points of the flow's path: R at each loss level is the flow's
    flow_R = np.exp(np.interp(np.log(ours_L[keep]), np.log(L[::-1]), np.log(R[::-1])))
    assert np.max(np.abs(ours_R[keep] - flow_R) / flow_R) <= 0.01
    # and the flow time of each is the flow's to 1 %
    flow_L = np.interp(times[keep], ts, L)
    assert np.max(np.abs(np.log(ours_L[keep] / flow_L)) / np.maximum(times[keep], 1e-9)) <= 0.01 * 4 * R.min() + 1e-12
    # every half-decade band of loss between L0 and the end holds a recorded point
    bands = {int(np.floor(2 * np.log10(v))) for v in records.loss}
    assert bands >= set(range(int(np.floor(2 * np.log10(records.loss[-1]))) + 1,
                              int(np.floor(2 * np.log10(records.loss[0])))))
