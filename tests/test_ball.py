"""The ball rule (certifier/analyse/sound/ball.py): per-node Lipschitz constants of the value and of
the Jacobian over a ball, checked against sampled pairs of points (the oracle: torch float64
Jacobians, ||J(t1) - J(t2)||_2 <= Lip_J ||t1 - t2|| for many random pairs); their 1/sqrt(width)
scale on wide networks; a wide network certified on a small ball, with its certificate."""
from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
import torch

from certifier import check, cli
from certifier.analyse.sound.ball import BallModel
from certifier.certificate import evidence_digest, verify
from certifier.compile.interval_model import IntervalModel
from certifier.compile.kernel import jacobian
from certifier.compile.problem import Problem
from certifier.parse import parse
from certifier.pipeline import run_text


def spec(model: str, params: str, d: int = 3, n: int = 4, region: str = "ball(center=init, radius=0.3)",
         y: str = "sin(x[:, 0])") -> str:
    return f"""spec "ball rule"
data {{
  x = normal(shape=[{n}, {d}], seed=0)
  y = {y}
}}
params {{
{params}
}}
model f(x) = {model}
loss least_squares
region {region}
method interval(boxes=50, seed=0)
certify rate(floor=0, horizon=10)
"""


def compiled(text: str):
    checked = check.check(parse(text, "b.rq"))
    return IntervalModel(checked), Problem(checked)


def in_ball(rng, c: np.ndarray, r: float, surface: bool = False) -> np.ndarray:
    u = rng.standard_normal(c.size)
    scale = r if surface else r * rng.random() ** (1 / c.size)
    return c + u * (scale / np.linalg.norm(u))


TWO_LAYER = ("W : [16, 3] = normal(seed=1)\n  a : [16] = normal(seed=2)", "a @ tanh(W @ x) / 4")
MODELS = {
    "two-layer": TWO_LAYER,
    "sum form, bias": ("W : [3, 12] = normal(seed=1)\n  a : [12] = normal(seed=2)\n  b : [12] = normal(seed=3)",
                       "sum(a * tanh(x @ W + b)) / sqrt(12)"),
    "sigmoid, softplus": ("W : [8, 3] = normal(seed=1)\n  v : [8] = normal(seed=2)",
                          "v @ sigmoid(W @ x) + mean(softplus(W @ x))"),
    "exp, sin, cos": ("w : [3] = normal(std=0.5, seed=1)\n  c : [] = 0.3",
                      "exp(w @ x / 3) + c * sin(w @ x) - cos(c * x[0])"),
    "division, powers, sqrt": ("w : [3] = normal(seed=1)\n  s : [] = 1.5",
                               "(w @ x) ** 3 / (1 + s ** 2) + sqrt(1 + (w @ x) ** 2) + log(2 + s * s)"),
    "shared parameter (no disjointness)": ("W : [6, 3] = normal(seed=1)\n  a : [6] = normal(seed=2)",
                                           "a @ tanh(W @ x) * sum(a) + sum(W * W) + a[1] * a[2]"),
    # few parameters, so that random pairs come close to the worst directions; sums over axes along
    # which the entries share a parameter (a broadcast scalar): the l2 / max combinations would be
    # wrong here, and these pairs show it
    "broadcast scalars": ("s : [] = 0.7\n  t : [] = -0.4\n  v : [3] = normal(seed=1)",
                          "sum(s * exp(x)) + sum(s * s * exp(x)) + t * sum(t * exp(x)) + sum(v * s * exp(x))"),
    "overlapping slices": ("v : [3] = normal(seed=5)",
                           "sum(v[0:2] * v[1:3]) * (1 + x[0] * x[0]) + sum(v[0:2] * v[0:2])"),
    "two outputs, index": ("W : [5, 3] = normal(seed=1)\n  A : [2, 5] = normal(seed=2)",
                           "A @ tanh(W @ x) + W[0, 1:3] * x[2] - A[:, 0] * W[1, 1]"),
}
TARGETS = {"two outputs, index": "tanh(x[:, 0:2])"}


@pytest.mark.parametrize("name", list(MODELS))
def test_lipschitz_bounds_hold_on_sampled_pairs(name):
    params, model_text = MODELS[name]
    text = spec(model_text, "  " + params, y=TARGETS.get(name, "sin(x[:, 0])"))
    model, problem = compiled(text)
    bm = BallModel(model)
    assert bm.unsupported is None
    rng = np.random.default_rng(7)
    c = model.theta0
    for r in (0.05, 0.3):
        L = bm.lipschitz(c, r)
        H, grad, lip = L["H"], L["grad"], L["lip_jacobian"]
        node = L["node"]
        vlo = np.broadcast_to(node.v.lo, (model.n,) + model.out_shape).reshape(-1)
        vhi = np.broadcast_to(node.v.hi, (model.n,) + model.out_shape).reshape(-1)
        worst = 0.0
        for i in range(40):
            t1 = in_ball(rng, c, r, surface=i % 2 == 0)
            t2 = 2 * c - t1 if i % 3 == 0 else in_ball(rng, c, r)      # antipodal pairs too
            T1, T2 = torch.tensor(t1), torch.tensor(t2)
            F1 = problem.outputs(T1).detach().numpy().reshape(-1)
            F2 = problem.outputs(T2).detach().numpy().reshape(-1)
            J1, J2 = jacobian(problem, T1).numpy(), jacobian(problem, T2).numpy()
            dist = np.linalg.norm(t1 - t2)
            slack = 1e-12 * (1 + np.abs(F1))
            assert np.all(vlo - slack <= F1) and np.all(F1 <= vhi + slack), name
            assert np.all(np.abs(F1 - F2) <= grad * dist * (1 + 1e-9) + 1e-12), name
            rows = np.linalg.norm(J1 - J2, axis=1)
            assert np.all(rows <= H * dist * (1 + 1e-9) + 1e-12), name
            ratio = np.linalg.norm(J1 - J2, 2) / dist
            assert ratio <= lip * (1 + 1e-9) + 1e-12, (name, ratio, lip)
            worst = max(worst, ratio / lip)
        assert worst > 1e-3, (name, worst)          # the bound is not vacuous


def test_relu_is_not_supported_by_the_ball_rule():
    model, _ = compiled(spec("a @ relu(W @ x)", "  " + TWO_LAYER[0]))
    assert "relu" in BallModel(model).unsupported


def test_jacobian_lipschitz_constant_falls_like_one_over_sqrt_width():
    lips = {}
    for h in (16, 256):
        params = f"  W : [{h}, 3] = normal(seed=1)\n  a : [{h}] = normal(seed=2)"
        model, _ = compiled(spec(f"a @ tanh(W @ x) / sqrt({h})", params))
        lips[h] = BallModel(model).lipschitz(model.theta0, 0.1)["lip_jacobian"]
    # width x16: the sharp (disjoint-slice) combination gives about 1/4 (the triangle inequality
    # would give a constant growing like sqrt(h)); max_i |a_i| grows slowly with h
    assert 0.2 < lips[256] / lips[16] < 0.45, lips


WIDE = """spec "wide two-layer tanh network near a teacher: the ball rule"
data {
  x = normal(shape=[4, 3], seed=0)
  W1 = normal(shape=[3, 256], seed=1) + 0.01 * normal(shape=[3, 256], seed=3)
  a1 = normal(shape=[256], seed=2) + 0.01 * normal(shape=[256], seed=4)
  y = tanh(x @ W1) @ a1 / 16
}
params {
  W : [3, 256] = normal(seed=1)
  a : [256] = normal(seed=2)
}
model f(x) = a @ tanh(x @ W) / 16
loss least_squares
region ball(center=init, radius=0.15)
method interval(boxes=100, seed=0)
certify rate(floor=0, horizon=100)
"""


def test_wide_network_is_certified_on_a_small_ball_with_a_certificate(tmp_path, capsys):
    os.chdir(tmp_path)
    (tmp_path / "w.rq").write_text(WIDE)
    assert cli.main(["w.rq", "--quiet", "--no-cache", "--emit", "w.json", "--format", "json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["verdict"] == "certified" and r["sound"] and r["problem"]["parameters"] == 1024
    assert r["mu_source"] == "ball" and r["method"]["boxes_evaluated"] == 1
    numbers = r["proof"]["facts"]["ball"]
    assert numbers["drift"] < numbers["sigma_center_lower"]
    assert r["mu"] <= (numbers["sigma_center_lower"] - numbers["drift"]) ** 2 / 4
    assert r["region"]["path_length_bound"] <= 0.15
    # the flow (fine gradient descent) stays under the bound
    assert r["witness"]["violation"] is None
    report = verify("w.json")
    assert report.ok, report.problems
    assert report.summary.startswith("the ball rule re-run on the whole ball")
    c = json.loads((tmp_path / "w.json").read_text())
    assert [e["kind"] for e in c["evidence"]] == ["sound-proof", "sound-ball"]
    ball = c["evidence"][1]
    ball["bound"] = (float.fromhex(ball["bound"]) * 1.01).hex()
    c["evidence_digest"] = evidence_digest(c["evidence"])
    (tmp_path / "w.json").write_text(json.dumps(c))
    report = verify("w.json")
    assert not report.ok and any("the ball rule re-run gives" in p for p in report.problems)


def test_ball_rule_that_falls_short_is_inconclusive_in_high_dimension():
    text = WIDE.replace("radius=0.15", "radius=3")
    r = run_text(text, "w.rq")
    assert r.verdict == "inconclusive" and not r.sound
    assert "the ball rule proves" in r.failing_region.message and "shrink the radius" in r.failing_region.message
    assert math.isfinite(r.proof["facts"]["ball"]["lip_jacobian"])


DISJOINT = {   # two outputs per sample; the S sets of the output node are checked against autograd
    "A @ tanh(W @ x)": "W : [5, 3] = normal(seed=1)\n  A : [2, 5] = normal(seed=2)",
    "v[0:2] * v[1:3]": "v : [3] = normal(seed=5)",
    "W @ x[0:2] + W * W @ x[1:3]": "W : [2, 2] = normal(seed=1)",
    "u * tanh(u * x[0:2]) + B @ x[0:3]": "u : [2] = normal(seed=1)\n  B : [2, 3] = normal(seed=2)",
    "s * x[0:2] + t": "s : [] = 0.5\n  t : [2] = normal(seed=3)",
    "u[0:1] * x[0:2]": "u : [2] = normal(seed=1)",
}


@pytest.mark.parametrize("model_text", list(DISJOINT))
def test_disjoint_slice_claims_match_the_jacobian_sparsity(model_text):
    """S_p says: output entries that differ along an axis in S_p depend on disjoint slices of p. At a
    random point a nonzero Jacobian entry means dependence, so two such entries must never share a
    nonzero column of block p."""
    model, problem = compiled(spec(model_text, "  " + DISJOINT[model_text], y="tanh(x[:, 0:2])"))
    bm = BallModel(model)
    node = bm.evaluate(model.theta0, 0.1)
    theta = model.theta0 + np.random.default_rng(3).standard_normal(model.m) * 0.3
    J = jacobian(problem, torch.tensor(theta)).numpy().reshape(model.n, 2, model.m)
    claims = 0
    for p, axes in node.S.items():
        a, b = model.blocks[model.names[p]]
        support = np.abs(J[:, :, a:b]) > 0                  # (sample, output, block columns)
        for w in axes:
            assert w == 1                                   # the output axis (never the sample axis 0)
            claims += 1
            for s1 in range(model.n):
                for s2 in range(model.n):
                    assert not np.any(support[s1, 0] & support[s2, 1]), (model_text, model.names[p])
    expected = {"A @ tanh(W @ x)": 1, "v[0:2] * v[1:3]": 0, "W @ x[0:2] + W * W @ x[1:3]": 0,
                "u * tanh(u * x[0:2]) + B @ x[0:3]": 1, "s * x[0:2] + t": 1,
                "u[0:1] * x[0:2]": 0}   # u: two nodes, so no claim
    assert claims == expected[model_text], (model_text, node.S)
