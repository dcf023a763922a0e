"""The `hessian` rule (analyse/sound/hessian_rule.py) and its second-order interval forward mode
(compile/interval_hessian.py), against independent computations:

- F, its gradient and its Hessian in theta, and Hess L, for a @ tanh(W @ x + b) + c: enclosures over random
  boxes contain the closed forms evaluated in arb (python-flint, 200 bits; hand-derived derivatives, no
  certify code) at sampled points (hypothesis); hessian_lower is below the arb Hessian's lambda_min there;
- the other rules of the table (sigmoid, sin, cos, exp, products, powers, sum, mean, index, division by a
  constant): the enclosures at points of a box contain torch.func.hessian's Hessian of L;
- specs/two_layer_floor_sound.rq: certified with the hessian rule; the bound lies above a DOP853 flow and
  above real gradient descent (numpy gradient written here), the flow stays in the box; a floor below
  the minimum (and floor 0) is never certified; `certify check` accepts the certificate and rejects it
  tampered.
"""
from __future__ import annotations

import json
import math

import flint
import numpy as np
import pytest
import torch
from helpers import BOX_PROOF_TAMPERS, SPECS, emit_certificate, problem_of, reforged_beside, sound_proof, spec_text
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.integrate import solve_ivp

from certifier.analyse.sound.hessian_rule import facts, hessian_lower
from certifier.compile.interval_hessian import loss_hessian, output_derivatives
from certifier.compile.interval_model import IntervalModel
from certifier.pipeline import run_file, run_text

SPEC = SPECS / "two_layer_floor_sound.rq"


class _prec:
    def __init__(self, bits):
        self.bits = bits

    def __enter__(self):
        self.old = flint.ctx.prec
        flint.ctx.prec = self.bits

    def __exit__(self, *exc):
        flint.ctx.prec = self.old


def _arb_two_layer(theta: np.ndarray, x: np.ndarray, h: int, d: int, with_c: bool):
    """F_e, dF_e/dtheta, d2F_e/dtheta2 in arb for f = a . tanh(W x + b) (+ c), theta = (W, b, a[, c])."""
    A = flint.arb
    th = [A(float(v)) for v in theta]
    W = [[th[j * d + k] for k in range(d)] for j in range(h)]
    b = th[h * d:h * d + h]
    a = th[h * d + h:h * d + 2 * h]
    m = theta.size
    out = []
    for xe in x:
        xs = [A(float(v)) for v in xe]
        F = th[-1] if with_c else A(0)
        g = [A(0)] * m
        H = [[A(0)] * m for _ in range(m)]
        for j in range(h):
            z = sum((W[j][k] * xs[k] for k in range(d)), b[j])
            t = z.tanh()
            t1 = 1 - t * t
            t2 = -2 * t * t1
            F = F + a[j] * t
            # dz/dtheta: W[j][k] -> x_k, b[j] -> 1
            dz = {j * d + k: xs[k] for k in range(d)}
            dz[h * d + j] = A(1)
            ia = h * d + h + j
            g[ia] = t
            for p, zp in dz.items():
                g[p] = a[j] * t1 * zp
                H[ia][p] = H[p][ia] = t1 * zp
                for q, zq in dz.items():
                    H[p][q] = a[j] * t2 * zp * zq
        if with_c:
            g[m - 1] = A(1)
        out.append((F, g, H))
    return out


def _inside(ball, lo, hi) -> bool:
    return bool(ball.lower() >= lo and ball.upper() <= hi)


TWO_LAYER = """spec "t"
data {
  x = normal(shape=[6, 2], seed=0)
  y = sin(x[:, 0]) + 0.5 * x[:, 1]
}
params {
  W : [2, 2] = normal(seed=1)
  b : [2] = normal(std=0.3, seed=2)
  a : [2] = normal(seed=3)
  c : [] = 0.1
}
model f(x) = a @ tanh(W @ x + b) + c
loss least_squares
region box(center=init, halfwidth=0.1)
method interval(boxes=20, seed=0, hessian=on)
certify rate(floor=0.1, horizon=10)
"""


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 10**6), width=st.sampled_from([0.0, 1e-6, 1e-3, 0.05, 0.3]))
def test_two_layer_enclosures_contain_arb(seed, width):
    p = problem_of(TWO_LAYER)
    model = IntervalModel(p.checked)
    rng = np.random.default_rng(seed)
    center = model.theta0 + rng.normal(scale=0.5, size=model.m)
    lo, hi = center - width * rng.random(model.m), center + width * rng.random(model.m)
    F, J, H = output_derivatives(model, lo, hi)
    HL = loss_hessian(model, lo, hi)
    a_lower, _ = hessian_lower(model, lo, hi)
    x, y = model.x, model.y
    with _prec(200):
        for _ in range(3):
            theta = lo + (hi - lo) * rng.random(model.m)
            parts = _arb_two_layer(theta, x, 2, 2, True)
            total = [[flint.arb(0)] * model.m for _ in range(model.m)]
            for e, (Fe, ge, He) in enumerate(parts):
                assert _inside(Fe, F.lo[e], F.hi[e])
                r = Fe - flint.arb(float(y[e]))
                for p_ in range(model.m):
                    assert _inside(ge[p_], J.lo[e, p_], J.hi[e, p_])
                    for q in range(model.m):
                        assert _inside(He[p_][q], H.lo[e, p_, q], H.hi[e, p_, q])
                        total[p_][q] = total[p_][q] + 2 * (ge[p_] * ge[q] + r * He[p_][q]) / len(parts)
            for p_ in range(model.m):
                for q in range(model.m):
                    assert _inside(total[p_][q], HL.lo[p_, q], HL.hi[p_, q])
            if a_lower is not None:
                mid = np.array([[float(total[i][j].mid()) for j in range(model.m)] for i in range(model.m)])
                assert a_lower <= np.linalg.eigvalsh(mid)[0] + 1e-12


OTHER_MODELS = [
    "sum(sigmoid(W @ x) * sin(W @ x))",
    "mean(exp(0.3 * (W @ x))) + cos(W[0, 1] * x[0])",
    "(W[0] @ x) ** 2 + W[1, 0] * W[1, 1] / 3",
    "sum(tanh(W @ x) * (W @ x)) - W[0, 0] ** 3",
]


@pytest.mark.parametrize("body", OTHER_MODELS)
def test_other_rules_contain_torch_hessians(body):
    text = f"""spec "t"
data {{
  x = normal(shape=[5, 2], seed=0)
  y = x[:, 0]
}}
params {{
  W : [2, 2] = normal(std=0.7, seed=4)
}}
model f(x) = {body}
loss least_squares
region box(center=init, halfwidth=0.1)
method interval(boxes=20, seed=0, hessian=on)
certify rate(floor=0.1, horizon=10)
"""
    p = problem_of(text)
    model = IntervalModel(p.checked)
    rng = np.random.default_rng(0)
    lo, hi = model.theta0 - 0.05, model.theta0 + 0.05
    HL = loss_hessian(model, lo, hi)
    for theta in [model.theta0] + [lo + (hi - lo) * rng.random(model.m) for _ in range(6)]:
        Ht = torch.func.hessian(p.loss)(torch.as_tensor(theta, dtype=torch.float64)).numpy()
        slack = 1e-12 * (1 + np.abs(Ht))
        assert np.all(HL.lo <= Ht + slack) and np.all(Ht - slack <= HL.hi)
        Hp = loss_hessian(model, theta, theta)           # at a point: tight
        assert np.all(Hp.lo <= Ht + slack) and np.all(Ht - slack <= Hp.hi)
        assert np.max(Hp.hi - Hp.lo) <= 1e-8 * (1 + np.max(np.abs(Ht)))


def test_relu_has_no_hessian_rule():
    text = TWO_LAYER.replace("tanh(W @ x + b)", "relu(W @ x + b)")
    model = IntervalModel(problem_of(text).checked)
    f = facts(model)
    assert f.star is None and "relu" in f.reason


# --- the spec -----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def result():
    return run_file(str(SPEC))


def _numpy_parts(text):
    p = problem_of(text)
    x = np.asarray(p.checked.x, dtype=np.float64)
    y = np.asarray(p.checked.y, dtype=np.float64)

    def loss_grad(theta):
        W, b, a = theta[:4].reshape(2, 2), theta[4:6], theta[6:8]
        z = x @ W.T + b
        t = np.tanh(z)
        r = t @ a - y
        n = len(y)
        dt = (1 - t ** 2) * a                         # dF/dz_j
        gW = 2 / n * (r[:, None, None] * dt[:, :, None] * x[:, None, :]).sum(0)
        gb = 2 / n * (r[:, None] * dt).sum(0)
        ga = 2 / n * (r[:, None] * t).sum(0)
        return float(np.mean(r ** 2)), np.concatenate([gW.ravel(), gb, ga])
    return p.theta0.numpy().copy(), loss_grad


def test_spec_is_certified_by_the_hessian_rule(result):
    r = result
    assert r.verdict == "certified" and r.sound
    assert {s.source for s in r.mu_sources} == {"hessian"}
    assert 0 < r.mu < 1e-6


def test_bound_lies_above_the_flow_and_descent(result):
    r = result
    theta0, loss_grad = _numpy_parts(SPEC.read_text())
    h = 0.003
    sol = solve_ivp(lambda t, th: -loss_grad(th)[1], (0, 400), theta0, method="DOP853", rtol=1e-12, atol=1e-15,
                    dense_output=True)
    assert sol.success
    for t in np.concatenate([np.linspace(0, 5, 26), np.linspace(5, 400, 80)]):
        th = sol.sol(t)
        assert np.max(np.abs(th - theta0)) <= h
        assert loss_grad(th)[0] <= r.bound(t) * (1 + 1e-12)
    th, eta = theta0.copy(), 0.05
    for k in range(1, 4001):
        th = th - eta * loss_grad(th)[1]
        if k % 50 == 0:
            assert loss_grad(th)[0] <= r.bound(k * eta) * (1 + 1e-12)
    # the bound reaches the floor, and the flow's loss stays above the minimum the rule used
    assert r.bound(1e4) == pytest.approx(0.00635504)
    assert loss_grad(sol.sol(400))[0] >= facts(IntervalModel(problem_of(SPEC.read_text()).checked)).loss_star_upper \
        * (1 - 1e-9)


@pytest.mark.parametrize("floor", ["0.00635", "0"])
def test_floor_below_the_minimum_is_never_certified(floor):
    """L* = 0.0063549 (proved above 0.006354 on the box by strong convexity): floors below it are false."""
    r = run_text(spec_text("two_layer_floor_sound.rq", **{"floor=0.00635504": f"floor={floor}"}), "f.rq")
    assert r.verdict != "certified" and not (r.verdict == "certified" and r.sound)


@pytest.fixture(scope="module")
def emitted(tmp_path_factory):
    return emit_certificate(tmp_path_factory.mktemp("hessian_emitted"), SPEC.read_text(), "e")


def test_check_accepts_the_hessian_certificate(emitted, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert reforged_beside(emitted, tmp_path, lambda cert: None) == []
    cert = json.loads((emitted / "e.json").read_text())
    assert {e["rule"] for e in cert["evidence"] if e["kind"] == "sound-leaf" and e["status"] == "proven"} == \
        {"hessian"}


def test_check_rejects_a_tampered_hessian_certificate(emitted, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    for change in BOX_PROOF_TAMPERS:
        assert reforged_beside(emitted, tmp_path, change), change.__name__
    assert math.isfinite(float.fromhex(sound_proof(json.loads((emitted / "e.json").read_text()))["mu"]))
