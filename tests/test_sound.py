"""The sound mode end to end: proved mu against closed forms and rigorous point evaluations,
certified rates against independent gradient-flow integrations, known-false claims never certified,
refutations with verified points, branch and bound, budgets and diagnostics."""
from __future__ import annotations

import json
import math

import arb_oracle as oracle
import numpy as np
import oracles
import pytest
from helpers import SPECS, problem_of, spec_text
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.integrate import solve_ivp

from certifier import check
from certifier.analyse.regions import Ball, Box
from certifier.analyse.sound.engine import bound_mu
from certifier.compose.sound import needed_mu, needed_mu_lower, rho_upper
from certifier.diagnostics import SpecError
from certifier.parse import parse
from certifier.pipeline import run_file, run_text
from certifier.report.json import to_json


# --- confinement arithmetic ----------------------------------------------------------------------------
@settings(max_examples=200, deadline=None, derandomize=True)
@given(L0=st.floats(1e-12, 1e6), frac=st.floats(0, 0.99), radius=st.floats(1e-6, 1e3))
def test_needed_mu_closes_the_confinement_after_rounding(L0, frac, radius):
    floor = L0 * frac
    mu = needed_mu(L0, floor, radius)
    assert rho_upper(L0, floor, mu) <= radius
    exact = (math.sqrt(L0) - math.sqrt(floor)) ** 2 / radius ** 2
    assert exact <= mu <= exact * (1 + 1e-9) + 1e-300
    assert exact * (1 - 1e-9) <= needed_mu_lower(L0, floor, radius) <= exact


# --- linear specs: proved mu equals the closed form (from below) ---------------------------------------
def test_realizable_linear_is_certified_with_the_closed_form_mu():
    r = run_file(str(SPECS / "linear_underparameterized_sound.rq"))
    x, y = oracles.linear_data(noise=False)
    _, lam, *_ = oracles.linear_facts(x, y)
    assert r.verdict == "certified" and r.sound and not r.estimate
    assert lam[0] * (1 - 1e-6) <= r.mu <= lam[0] * (1 + 1e-12)
    assert r.region["path_length_bound"] <= 2.5
    assert r.proof["facts"]["subspace"]["min_loss_upper"] < 1e-20
    # the exact flow (closed form) lies under the certified bound
    ts = np.linspace(0, 30, 301)
    flow = oracles.linear_flow_loss(x, y, np.zeros(4), ts)
    assert all(f <= r.bound(t) * (1 + 1e-12) for f, t in zip(flow, ts))
    json.loads(to_json(r))            # JSON-able, no NaN


def test_nonrealizable_floor_is_certified_with_the_attained_infimum():
    r = run_file(str(SPECS / "linear_nonrealizable_floor_sound.rq"))
    x, y = oracles.linear_data(noise=True)
    _, lam, _, w_star, l_star = oracles.linear_facts(x, y)
    exact = lam[0] * (1 - l_star / 0.3)               # inf R on {L >= 0.3}, attained
    assert r.verdict == "certified" and r.sound
    assert exact * (1 - 1e-6) <= r.mu <= exact * (1 + 1e-12)
    ts = np.linspace(0, 10, 201)
    flow = oracles.linear_flow_loss(x, y, np.zeros(4), ts)
    assert all(f <= r.bound(t) * (1 + 1e-12) for f, t in zip(flow, ts))


def test_box_containing_the_minimiser_is_refuted_with_that_point():
    r = run_file(str(SPECS / "linear_nonrealizable_sound.rq"))
    x, y = oracles.linear_data(noise=True)
    _, lam, _, w_star, l_star = oracles.linear_facts(x, y)
    assert r.verdict == "refuted" and r.sound and r.mu is None
    pt = r.proof["failing_points"][0]
    assert np.linalg.norm(np.array(pt["theta"]) - w_star) < 1e-6
    assert pt["claim_false"] and 0 < pt["min_loss_lower"] <= l_star <= pt["loss_upper"]
    # the point, evaluated rigorously by the oracle: L >= floor and R below the needed mu
    body = parse(spec_text("linear_nonrealizable_sound.rq"), "s.rq").model.body
    _, _, L, _, R = oracle.model_at(body, "x", x, y, {"w": np.zeros(4)}, {}, np.array(pt["theta"]))
    assert L >= 0 and oracle.arb(float(pt["rayleigh_upper"])) >= R


@pytest.mark.parametrize("floor", ["0.2", "0.22"])
def test_floor_below_the_true_minimum_is_never_certified(floor):
    # L* = 0.2215: the loss never reaches these floors
    r = run_text(spec_text("linear_nonrealizable_floor_sound.rq", **{"floor=0.3": f"floor={floor}"}), "f.rq")
    assert r.verdict == "refuted" and r.sound
    assert r.proof["failing_points"][0]["min_loss_lower"] > float(floor)


def test_floor_zero_with_float_data_is_never_certified():
    # y = x @ v rounded to float64 is not exactly realizable: the rate to 0 is false for the stored data
    r = run_text(spec_text("linear_underparameterized_sound.rq",
                           **{"floor=1e-12": "floor=0", "boxes=200": "boxes=30"}), "z.rq")
    assert r.verdict == "inconclusive" and r.mu is None
    assert "floor" in r.failing_region.suggestion


def test_ball_region_in_low_dimension():
    r = run_text(spec_text("linear_nonrealizable_floor_sound.rq",
                           **{"box(center=init, halfwidth=3.5)": "ball(center=init, radius=3.5)"}), "b.rq")
    x, y = oracles.linear_data(noise=True)
    _, lam, _, _, l_star = oracles.linear_facts(x, y)
    assert r.verdict == "certified" and r.mu <= lam[0] * (1 - l_star / 0.3) * (1 + 1e-12)


# --- the two-layer network: certified, and above an independent flow -----------------------------------
def _network_flow(checked, ts):
    x, y = checked.x, checked.y
    W0, a0 = checked.params["W"], checked.params["a"]
    n, (d, w) = x.shape[0], W0.shape

    def loss_grad(theta):
        W, a = theta[: d * w].reshape(d, w), theta[d * w:]
        h = np.tanh(x @ W)
        r = h @ a - y
        ga = 2.0 / n * h.T @ r
        gW = 2.0 / n * x.T @ (r[:, None] * (1 - h ** 2) * a[None, :])
        return float(np.mean(r ** 2)), np.concatenate([gW.ravel(), ga])

    theta0 = np.concatenate([W0.ravel(), a0])
    sol = solve_ivp(lambda t, th: -loss_grad(th)[1], (0.0, float(ts[-1])), theta0, t_eval=ts,
                    rtol=1e-11, atol=1e-14, method="DOP853")
    assert sol.success
    losses = np.array([loss_grad(sol.y[:, i])[0] for i in range(len(ts))])
    dist = np.max(np.abs(sol.y - theta0[:, None]), axis=0)
    return losses, dist


def test_two_layer_network_is_certified_and_the_flow_obeys_the_bound():
    path = SPECS / "two_layer_tanh_sound.rq"
    r = run_file(str(path))
    assert r.verdict == "certified" and r.sound
    assert r.proof["rules_used"].get("spectrum", 0) + r.proof["rules_used"].get("block", 0) >= 1
    assert r.region["path_length_bound"] <= 0.01
    checked = check.check(parse(path.read_text(), str(path)))
    ts = np.linspace(0, 60, 121)
    losses, dist = _network_flow(checked, ts)
    assert np.all(dist <= 0.01)                            # the flow stays in the box, as proved
    assert all(L <= r.bound(t) * (1 + 1e-9) for L, t in zip(losses, ts))
    # mu is below R at points of the box (rigorous evaluation)
    rng = np.random.default_rng(0)
    body = checked.spec.model.body
    theta0 = np.concatenate([checked.params["W"].ravel(), checked.params["a"]])
    for k in range(3):
        theta = theta0 + (0 if k == 0 else rng.uniform(-0.01, 0.01, theta0.size))
        *_, R = oracle.model_at(body, "x", checked.x, checked.y, dict(checked.params), {}, theta)
        assert oracle.arb(r.mu) <= R


# --- branch and bound on a small nonlinear model --------------------------------------------------------
NEURON = '''spec "one neuron, two points"
data {
  x = [[-1.0], [2.0]]
  y = 1.03 * tanh(0.97 * x[:, 0])
}
params {
  a : [] = 1.0
  w : [] = 1.0
}
model f(x) = a * tanh(w * x[0])
loss least_squares
region box(center=init, halfwidth=HW)
method interval(boxes=BOXES, seed=0)
certify rate(floor=0, horizon=100)
'''


def test_branch_and_bound_splits_and_every_leaf_is_proven():
    text = NEURON.replace("HW", "0.3").replace("BOXES", "400")
    r = run_text(text, "neuron.rq")
    assert r.verdict == "certified" and r.sound
    tree = r.proof["tree"]["root"]
    leaves, splits = [], []

    def walk(node):
        if "children" in node:
            splits.append(node)
            for c in node["children"]:
                walk(c)
        else:
            leaves.append(node)
    walk(tree)
    assert splits and len(leaves) == len(splits) + 1
    target = r.proof["tree"]["target"]
    assert all(leaf["bound"] >= target for leaf in leaves if leaf["status"] != "dropped")
    assert r.mu == min(leaf["bound"] for leaf in leaves if leaf["status"] != "dropped")
    # every leaf box lies in the region and they cover it (total volume)
    vol = sum(np.prod(np.array(l["box"]["hi"]) - np.array(l["box"]["lo"])) for l in leaves)
    assert vol == pytest.approx(0.6 ** 2, rel=1e-9)
    # rigorous check of mu on a grid of the region
    checked = check.check(parse(text, "neuron.rq"))
    body = checked.spec.model.body
    for a in np.linspace(0.7, 1.3, 7):
        for w in np.linspace(0.7, 1.3, 7):
            *_, R = oracle.model_at(body, "x", checked.x, checked.y,
                                    {"a": np.array(1.0), "w": np.array(1.0)}, {}, np.array([a, w]))
            if R is not None:
                assert oracle.arb(r.mu) <= R


def test_budget_exhaustion_is_inconclusive_with_the_open_boxes():
    r = run_text(NEURON.replace("HW", "0.3").replace("BOXES", "3"), "neuron.rq")
    assert r.verdict == "inconclusive" and not r.sound
    assert r.failing_region.kind == "budget"
    assert r.proof["status"] == "unresolved" and r.proof["failing_boxes"]


def test_bound_mu_api():
    text = NEURON.replace("HW", "0.2").replace("BOXES", "100")
    pr = problem_of(text)
    out = bound_mu(pr, Box(pr.theta0, 0.2), 0.0, 0.005, 200, None, tighten=False)
    assert out.status == "proven" and out.mu >= 0.005 and out.boxes_evaluated >= 1
    json.dumps(out.to_dict(), allow_nan=False)
    ball = bound_mu(pr, Ball(pr.theta0, 0.2), 0.0, 0.005, 200, None, tighten=False)
    assert ball.status == "proven" and ball.mu >= out.mu * (1 - 1e-12)


# --- diagnostics ----------------------------------------------------------------------------------------------
def test_unsupported_settings_are_diagnostics_at_their_span():
    with pytest.raises(SpecError) as info:
        # a step needs a proved smoothness bound: none for relu (its derivative jumps)
        run_text(NEURON.replace("HW", "0.2").replace("BOXES", "10").replace("horizon=100", "horizon=100, step=0.1")
                 .replace("a * tanh(w * x[0])", "a * relu(w * x[0])"), "neuron.rq")
    (diag,) = info.value.diagnostics
    assert "not supported in the sound mode" in diag.message and diag.span is not None
    with pytest.raises(SpecError) as info:
        run_text(NEURON.replace("HW", "0.2").replace("BOXES", "10") + "desingularizer lambert\n",
                 "neuron.rq")
    assert "not supported in the sound mode" in info.value.diagnostics[0].message


def test_method_interval_options_are_checked():
    with pytest.raises(SpecError) as info:
        run_text(NEURON.replace("HW", "0.2").replace("BOXES", "0"), "neuron.rq")
    assert "boxes" in str(info.value.diagnostics[0].message)


def test_models_too_large_for_the_forward_mode_are_a_size_diagnostic():
    # boxes need the forward mode with m directions; a ball goes to the ball rule (test_ball.py)
    # unless the model has no Lipschitz Jacobian (relu)
    text = spec_text("two_layer_tanh.rq", **{"method sampled(samples=4096, seed=3)": "method interval(boxes=10)",
                                              "region ball(center=init, radius=auto)":
                                              "region box(center=init, halfwidth=0.01)"})
    with pytest.raises(SpecError) as info:
        run_text(text, "big.rq")
    assert info.value.diagnostics[0].code == "E205" and "ball region" in info.value.diagnostics[0].hint
    text = spec_text("two_layer_tanh.rq", **{"method sampled(samples=4096, seed=3)": "method interval(boxes=10)",
                                              "tanh(W @ x)": "relu(W @ x)"})
    with pytest.raises(SpecError) as info:
        run_text(text, "big.rq")
    assert info.value.diagnostics[0].code == "E205"
