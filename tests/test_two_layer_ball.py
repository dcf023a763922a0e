"""The structured ball table of two-layer networks (analyse/sound/two_layer_ball.py) against torch:
per-output Hessian norms, gradient norms and values over balls, and against the generic rule table."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from translated_nets import translated

from certifier.analyse.sound.ball import BallModel
from certifier.analyse.sound.two_layer_ball import TwoLayerBall
from certifier.check import check
from certifier.compile.interval_model import IntervalModel
from certifier.parse import parse

ROOT = Path(__file__).resolve().parent.parent

WRITTEN = """spec "t"
data {{
  x = normal(shape=[4, 3], std=0.6, seed=0)
  y = {y}
}}
params {{
{params}
}}
model f(x) = {body}
loss least_squares
region ball(center=init, radius=auto)
method interval(route=trajectory)
certify rate(floor=0, horizon=100)
"""
SPECS = {
    "tanh, W @ x / sqrt(h)": ("  W : [12, 3] = normal(seed=1)\n  a : [12] = normal(seed=2)",
                              "sum(a * tanh(W @ x)) / sqrt(12)", "sin(x[:, 0])"),
    "sigmoid, x @ W + b, + c": ("  W : [3, 10] = normal(seed=1)\n  a : [10] = normal(seed=2)\n"
                                "  b : [10] = normal(std=0.5, seed=3)\n  c : [] = 0.1",
                                "a @ sigmoid(x @ W + b) / 10 + c", "sin(x[:, 0])"),
    "softplus, 0.5 *": ("  W : [8, 3] = normal(seed=1)\n  a : [8] = normal(seed=2)",
                        "0.5 * sum(softplus(W @ x) * a)", "sin(x[:, 0])"),
}
MODULES = {"tanh_bias": 1, "sigmoid_bias": 1, "softplus_bias": 1, "tanh_two_outputs": 2}


def _functional(model, module_or_body):
    """F(theta) [n k] by torch: the module through functional_call, or the written model by hand."""
    x = torch.tensor(model.x)
    shapes = dict(zip(model.names, model.shapes))

    def split(theta):
        return {name: theta[int(o):int(o) + int(z)].reshape(tuple(shapes[name]))
                for name, o, z in zip(model.names, model.offsets, model.sizes)}
    if isinstance(module_or_body, torch.nn.Module):
        return lambda theta: torch.func.functional_call(module_or_body, split(theta), (x,)).reshape(-1)
    act = {"tanh": torch.tanh, "sigmoid": torch.sigmoid, "softplus": torch.nn.functional.softplus}

    def F(theta):
        p = split(theta)
        if module_or_body.startswith("tanh"):
            return act["tanh"](x @ p["W"].T) @ p["a"] / np.sqrt(12.0)
        if module_or_body.startswith("sigmoid"):
            return act["sigmoid"](x @ p["W"] + p["b"]) @ p["a"] / 10.0 + p["c"]
        return 0.5 * (act["softplus"](x @ p["W"].T) @ p["a"])
    return F


def _written(name):
    params, body, y = SPECS[name]
    model = IntervalModel(check(parse(WRITTEN.format(params=params, body=body, y=y), "t.rq")))
    return model, _functional(model, name)


CASES = [("written", n) for n in SPECS] + [("module", t) for t in MODULES]


def _case(kind, name):
    return _written(name) if kind == "written" else translated(name, k=MODULES[name])


@pytest.mark.parametrize("kind,name", CASES)
def test_the_table_holds_over_the_ball(kind, name):
    """At random points of balls (radii 1e-3 to 0.5, interior and boundary): every output's Hessian
    norm (torch.func.hessian, eigvalsh) <= H_e, its gradient norm <= g_e, its value in v."""
    model, F = _case(kind, name)
    fast = TwoLayerBall.of(model)
    assert fast is not None
    theta0 = model.theta0
    rng = np.random.default_rng(5)
    for radius in (1e-3, 0.1, 0.5):
        table = fast.table(theta0, radius)
        H, g, v = table["H"], table["grad"], table["node"].v
        lo, hi = v.lo.reshape(-1), v.hi.reshape(-1)
        for j in range(6):
            u = rng.normal(size=model.m)
            u *= radius * (1.0 if j % 2 else rng.uniform(0.0, 1.0)) / np.linalg.norm(u)
            theta = torch.tensor(theta0 + u)
            values = F(theta).detach().numpy()
            assert np.all(lo <= values) and np.all(values <= hi), (radius, values, lo, hi)
            grads = torch.func.jacrev(F)(theta).numpy()
            assert np.all(np.linalg.norm(grads, axis=1) <= g), radius
            hess = torch.func.hessian(F)(theta).numpy()
            for e in range(hess.shape[0]):
                assert float(np.abs(np.linalg.eigvalsh(hess[e])).max()) <= H[e], (radius, e)


@pytest.mark.parametrize("kind,name", CASES)
def test_the_table_is_no_looser_than_the_generic_one(kind, name):
    """The structured H_e, Lip_J and gradient bounds against the generic rule table's on the same
    balls: never above it (but for rounding, 1e-9 relative); near a point H_e within 2.2x torch's ||Hess F_e|| at the centre."""
    model, F = _case(kind, name)
    fast = TwoLayerBall.of(model)
    generic_model, _ = _case(kind, name)
    generic_model._two_layer_ball = None                 # BallModel then takes its rule table
    generic = BallModel(generic_model)
    theta0 = model.theta0
    for radius in (1e-3, 0.1, 0.5):
        ours, theirs = fast.table(theta0, radius), generic.lipschitz(theta0, radius)
        assert np.all(ours["H"] <= theirs["H"] * (1 + 1e-9)), radius
        assert ours["lip_jacobian"] <= theirs["lip_jacobian"] * (1 + 1e-9)
    hess = torch.func.hessian(F)(torch.tensor(theta0)).numpy()
    true = np.array([np.abs(np.linalg.eigvalsh(h)).max() for h in hess])
    H = fast.table(theta0, 1e-6)["H"]
    assert np.all(H <= 2.2 * true), (H, true)


def test_ball_model_uses_it_and_tube_agrees():
    """BallModel.lipschitz and .enclosure take the structured table for a two-layer model; models it
    does not match keep the rule table (a 3-layer net)."""
    model, _ = _written("tanh, W @ x / sqrt(h)")
    bm = BallModel(model)
    assert bm.lipschitz(model.theta0, 0.1)["H"] is not None
    assert TwoLayerBall.of(model) is not None
    v = bm.enclosure(model.theta0, 0.1)
    assert np.array_equal(v.lo, TwoLayerBall.of(model).table(model.theta0, 0.1)["node"].v.lo)
    deep = IntervalModel(check(parse(WRITTEN.format(
        params="  W : [6, 3] = normal(seed=1)\n  V : [6, 6] = normal(seed=3)\n  a : [6] = normal(seed=2)",
        body="sum(a * tanh(V @ tanh(W @ x))) / 6", y="sin(x[:, 0])"), "d.rq")))
    assert TwoLayerBall.of(deep) is None
    assert BallModel(deep).lipschitz(deep.theta0, 0.1)["lip_jacobian"] > 0
