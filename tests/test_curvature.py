"""The two-layer residual-curvature bound of the trajectory tube (analyse/sound/curvature.py) against
torch Hessians: sup over a ball and over signed residual intervals of ||sum_i r_i Hess f_i||_2."""
from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from translated_nets import translated

from certifier.analyse.sound.curvature import (
    ThreeLayerCurvature,
    TwoLayerCurvature,
    chain,
    match,
    residual_curvature,
)
from certifier.check import check
from certifier.compile.iv import Iv
from certifier.compile.rounding import down, up
from certifier.parse import parse

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _torch_on_one_thread(one_thread):
    """The torch Hessians here are small: intra-op threads only slow them (conftest's one_thread)."""
    yield

SPEC = """spec "curvature"
data {{
  x = normal(shape=[{n}, {d}], std=0.6, seed=0)
  y = sin(x[:, 0]) + 0.5 * x[:, 1]
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

W_FIRST = '  W : [{h}, {d}] = normal(seed=1)\n  a : [{h}] = normal(seed=2)'
X_FIRST = ('  W : [{d}, {h}] = normal(seed=1)\n  a : [{h}] = normal(seed=2)\n  b : [{h}] = normal(std=0.5, seed=3)\n'
           '  c : [] = 0.1')
CASES = {
    "tanh, W @ x, sqrt scale": (W_FIRST, "sum(a * tanh(W @ x)) / sqrt({h})", "tanh", 5, 3, 24),
    "sigmoid, x @ W with biases": (X_FIRST, "a @ sigmoid(x @ W + b) / {h} + c", "sigmoid", 6, 2, 16),
    "softplus, W @ x, times a constant": (W_FIRST, "0.5 * sum(softplus(W @ x) * a)", "softplus", 4, 3, 12),
}


def _model(case):
    from certifier.compile.interval_model import IntervalModel
    params, body, _, n, d, h = CASES[case]
    text = SPEC.format(n=n, d=d, params=params.format(h=h, d=d), body=body.format(h=h))
    return IntervalModel(check(parse(text, "curvature.rq")))


def _torch_F(model, case):
    form = match(model)
    x = torch.tensor(model.x)
    real_scale = {"tanh, W @ x, sqrt scale": 1 / math.sqrt(form.h), "sigmoid, x @ W with biases": 1 / form.h,
                  "softplus, W @ x, times a constant": 0.5}[case]
    act = getattr(torch, form.activation) if form.activation != "softplus" else torch.nn.functional.softplus

    def F(theta):
        W = theta[form.slices["W"]]
        W = W.reshape(form.h, form.d) if form.w_first else W.reshape(form.d, form.h).T
        z = x @ W.T
        if "b" in form.slices:
            z = z + theta[form.slices["b"]]
        out = real_scale * (act(z) @ theta[form.slices["a"]])
        return out + theta[-1] if "biases" in case else out        # c, the last parameter
    return F


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_bound_holds_over_the_ball_and_the_residual_intervals(case):
    model = _model(case)
    curvature = TwoLayerCurvature.of(model)
    assert curvature is not None and curvature.form.activation == CASES[case][2]
    F = _torch_F(model, case)
    rng = np.random.default_rng(1)
    theta0 = model.theta0
    assert torch.allclose(F(torch.tensor(theta0)), torch.tensor(np.asarray(model.outputs(theta0, None, False)[0].lo)
                                                                .reshape(-1)), atol=1e-12)
    for radius in (1e-3, 0.05, 0.3):
        r0 = rng.normal(size=model.n) * 0.3
        width = rng.uniform(0, 0.05, size=model.n)
        r = Iv(down(r0 - width), up(r0 + width))
        bound = curvature.bound(theta0, radius, r)
        worst = 0.0
        for _ in range(6):
            u = rng.normal(size=model.m)
            u *= radius * rng.uniform(0.5, 1.0) / np.linalg.norm(u)
            rho = torch.tensor(rng.uniform(r.lo, r.hi))
            H = torch.func.hessian(lambda t: (rho * F(t)).sum())(torch.tensor(theta0 + u)).numpy()
            worst = max(worst, float(np.abs(np.linalg.eigvalsh(H)).max()))
        assert worst <= bound, (radius, worst, bound)
        if radius == 1e-3:       # near a point the bound is close to the true norm (Frobenius: <= sqrt(d + 2))
            assert bound <= 3.0 * worst, (worst, bound)


def test_the_sum_keeps_signs_below_the_sum_of_magnitudes():
    """With residuals of both signs the bound is below sum_i |r_i| ||Hess f_i||, the general form
    (each ||Hess f_i|| from torch at theta0, so the comparison is with that form's best case)."""
    case = "tanh, W @ x, sqrt scale"
    model = _model(case)
    F = _torch_F(model, case)
    r0 = np.array([0.3, -0.25, 0.2, -0.3, 0.28])
    theta = torch.tensor(model.theta0)
    general = sum(abs(ri) * float(np.abs(np.linalg.eigvalsh(
        torch.func.hessian(lambda t, i=i: F(t)[i])(theta).numpy())).max()) for i, ri in enumerate(r0))
    bound = TwoLayerCurvature.of(model).bound(model.theta0, 1e-6, Iv(down(r0), up(r0)))
    assert bound < 0.75 * general, (bound, general)


def test_the_forms_it_takes_and_refuses():
    sys.path.insert(0, str(ROOT / "specs" / "practice"))
    try:
        from certifier.compile.interval_model import IntervalModel
        path = ROOT / "specs" / "practice" / "torch_tanh_ntk_sound.rq"
        from_module = IntervalModel(check(parse(path.read_text(), str(path)), allow_python=True))
    finally:
        sys.path.remove(str(ROOT / "specs" / "practice"))
    form = match(from_module)        # (output.weight @ tanh(hidden.weight @ x)) / 16, its [0]
    assert form is not None and (form.h, form.d, form.scale) == (256, 4, (("div", 16.0),))
    from certifier.compile.interval_model import IntervalModel
    refused = {
        "relu": "sum(a * relu(W @ x))",
        "3 layers": "sum(a * tanh(V @ tanh(W @ x)))",
        "bias scaled with the matmul": "sum(a * tanh((W @ x + b) / 2))",
        "a parameter twice": "sum(a * tanh(W @ (x * a[0:3])))",
    }
    for name, body in refused.items():
        params = '  W : [6, 3] = normal(seed=1)\n  a : [6] = normal(seed=2)\n  b : [6] = normal(seed=3)'
        if "V" in body:
            params += "\n  V : [6, 6] = normal(seed=4)"
        model = IntervalModel(check(parse(SPEC.format(n=4, d=3, params=params, body=body), "r.rq")))
        assert match(model) is None, name


# --- the torch translation's forms (tests/fixtures/certify_fixture_sound_nets.py MLP) -------------



def _worst_over_ball(F, theta0, radius, r, rng, points=6):
    """The largest ||sum_i rho_i Hess f_i|| seen at random points of the ball, rho in r."""
    worst = 0.0
    for _ in range(points):
        u = rng.normal(size=theta0.size)
        u *= radius * rng.uniform(0.5, 1.0) / np.linalg.norm(u)
        rho = torch.tensor(rng.uniform(r.lo, r.hi))
        worst = max(worst, _hessian_norm(lambda t: (rho * F(t)).sum(), theta0 + u))
    return worst


def _hessian_norm(phi, theta: np.ndarray) -> float:
    """||Hess phi(theta)||_2 from torch (dense: the nets here have at most 721 parameters; torch's
    eigvalsh, on torch's threads: numpy's multi-threaded LAPACK crawls on a busy machine)."""
    return float(torch.linalg.eigvalsh(torch.func.hessian(phi)(torch.tensor(theta))).abs().max())


@pytest.mark.parametrize("target,k", [("tanh_bias", 1), ("sigmoid_bias", 1), ("softplus_bias", 1),
                                      ("tanh_two_outputs", 2)])
def test_the_translated_mlp_forms_are_bounded_over_the_ball(target, k):
    """h <- act(W (x / sqrt(d)) + b), W_out (h / sqrt(h)) + b_out with its [0] (k = 1) or k = 2
    outputs: the scaled data enclosed, the output's scale and bias taken."""
    model, F = translated(target, k=k)
    curvature = TwoLayerCurvature.of(model)
    assert curvature is not None and curvature.form.k == k and curvature.form.x_scale
    theta0 = model.theta0
    ours = np.asarray(model.outputs(theta0, None, False)[0].lo).reshape(-1)
    assert np.allclose(F(torch.tensor(theta0)).numpy(), ours, atol=1e-12)
    rng = np.random.default_rng(2)
    for radius in (1e-3, 0.1, 0.5):
        r0 = rng.normal(size=model.n * k) * 0.3
        width = rng.uniform(0, 0.05, size=model.n * k)
        r = Iv(down(r0 - width), up(r0 + width))
        bound = curvature.bound(theta0, radius, r)
        worst = _worst_over_ball(F, theta0, radius, r, rng)
        assert worst <= bound, (radius, worst, bound)
        if radius == 1e-3:
            assert bound <= 3.0 * worst, (worst, bound)


def test_two_outputs_are_the_sample_major_residual():
    """r [n k] is sample-major: the bound with r_ic for output c only equals the one-output bound
    of that output's weights (the other output's rows meet no residual)."""
    model, F = translated("tanh_two_outputs", k=2)
    curvature = TwoLayerCurvature.of(model)
    n = model.n
    rng = np.random.default_rng(3)
    r0 = rng.normal(size=n) * 0.3
    for c in (0, 1):
        flat = np.zeros(n * 2)
        flat[c::2] = r0
        bound = curvature.bound(model.theta0, 1e-4, Iv(down(flat), up(flat)))
        rho = torch.tensor(flat)
        H = torch.func.hessian(lambda t: (rho * F(t)).sum())(torch.tensor(model.theta0)).numpy()
        true = float(np.abs(np.linalg.eigvalsh(H)).max())
        assert true <= bound <= 3.0 * true, (c, true, bound)


# --- ||M_j||_F from the Gram matrix of the outer products (curvature._gram_frob) -------------------
def _factor(factors) -> float:
    v = 1.0
    for op, k in factors:
        v = v / k if op == "div" else v * k
    return v


def _blocks_at(cv, theta: np.ndarray, rho: np.ndarray) -> float:
    """s max_j (||M_j||_F + ||V_j||_F) at a float point theta and float residuals rho [n k], the
    matrices M_j formed entry by entry (numpy): what bound() bounds, without the Gram matrix."""
    Wt, A = cv._units(theta)
    xt = 0.5 * cv.xt.lo + 0.5 * cv.xt.hi               # the data x~ (inside its enclosure)
    z = xt @ Wt.T
    act = cv.form.activation
    if act == "tanh":
        t = np.tanh(z)
        d1, d2 = 1 - t * t, -2 * t * (1 - t * t)
    else:
        sg = 1 / (1 + np.exp(-z))
        d1, d2 = (sg * (1 - sg), sg * (1 - sg) * (1 - 2 * sg)) if act == "sigmoid" else (sg, sg * (1 - sg))
    rho = rho.reshape(xt.shape[0], cv.k)
    M = np.einsum("ij,ip,iq->jpq", (rho @ A) * d2, xt, xt)
    V = np.einsum("ic,ij,ip->jpc", rho, d1, xt)
    worst = np.linalg.norm(M.reshape(cv.h, -1), axis=1) + np.linalg.norm(V.reshape(cv.h, -1), axis=1)
    return abs(_factor(cv.form.scale)) * float(worst.max())


def _matrix_frob(xt: Iv):
    """The form before the Gram matrix (the oracle): M = C2^T [x~_i x~_i^T] as an interval product
    [h, dt^2], then the Frobenius norms of its magnitudes."""
    from certifier.compile.iv import iv_mag, iv_matmul, iv_mul
    from certifier.compile.rounding import nonneg_sum_upper
    n, dt = xt.shape
    o = iv_mul(Iv(xt.lo[:, :, None], xt.hi[:, :, None]), Iv(xt.lo[:, None, :], xt.hi[:, None, :]))
    outer = Iv(o.lo.reshape(n, dt * dt), o.hi.reshape(n, dt * dt))

    def frob(_gram, beta):
        m = iv_mag(iv_matmul(Iv(np.ascontiguousarray(beta.lo.T), np.ascontiguousarray(beta.hi.T)), outer))
        return up(np.sqrt(nonneg_sum_upper(up(m * m), 1)))
    return frob


def _gram_instances():
    """(name, curvature, centre): two spec forms, the translated two-output MLP, and a wider one
    built directly (the data scaled inside the matmul, so x~ is an enclosure; n 12, d 8, h 64)."""
    from certifier.analyse.sound.curvature import Form
    for case in ("tanh, W @ x, sqrt scale", "sigmoid, x @ W with biases"):
        model = _model(case)
        yield case, TwoLayerCurvature.of(model), model.theta0
    model = translated("tanh_two_outputs", k=2)[0]
    yield "tanh_two_outputs", TwoLayerCurvature.of(model), model.theta0
    h, d = 64, 8
    form = Form({"W": slice(0, h * d), "a": slice(h * d, h * d + h)}, h, d, True, "softplus",
                (("div", 8.0),), (("div", 3.0),))
    rng = np.random.default_rng(7)
    yield "softplus, n 12 d 8 h 64", TwoLayerCurvature(form, rng.normal(size=(12, d))), rng.normal(size=h * d + h)


def test_the_gram_form_bounds_the_blocks_and_is_below_the_matrix_form(monkeypatch):
    """bound() >= s max_j (||M_j||_F + ||V_j||_F) at points of the ball and residuals in their
    intervals (the matrices formed), and <= the bound from the interval product with the outer
    products that it replaced (each of its terms is at most its counterpart there). Measured:
    new / old 0.89-1.0 over these instances (1.0 at radius 1e-6 and point residuals)."""
    import certifier.analyse.sound.curvature as C
    rng = np.random.default_rng(6)
    ratios = []
    for name, cv, theta0 in _gram_instances():
        n = cv.xt.shape[0]
        for radius, width in ((1e-6, 0.0), (1e-3, 0.01), (0.1, 0.05), (0.3, 0.2)):
            r0 = rng.normal(size=n * cv.k) * 0.3
            w = rng.uniform(0, width, size=r0.size)
            r = Iv(down(r0 - w), up(r0 + w))
            new = cv.bound(theta0, radius, r)
            with monkeypatch.context() as m:
                m.setattr(C, "_gram_frob", _matrix_frob(cv.xt))
                old = cv.bound(theta0, radius, r)
            worst = 0.0
            for _ in range(5):
                u = rng.normal(size=theta0.size)
                u *= radius * rng.uniform(0.5, 1.0) / np.linalg.norm(u)
                worst = max(worst, _blocks_at(cv, theta0 + u, rng.uniform(r.lo, r.hi)))
            assert worst <= new <= old * (1 + 1e-12), (name, radius, worst, new, old)
            ratios.append(new / old)
    assert 0.8 < min(ratios) and max(ratios) <= 1 + 1e-12, ratios


def test_the_gram_form_when_the_samples_cancel():
    """Each sample twice with opposite residuals: at the centre every M_j and V_j is 0, so the signed
    quadratic form is 0 up to rounding; the bound stays above the blocks' norms near the centre
    (the residuals a little off cancelling) and is small where they cancel exactly."""
    model = _model("tanh, W @ x, sqrt scale")
    cv = TwoLayerCurvature(match(model), np.concatenate([model.x, model.x]))
    n0 = model.n
    r0 = np.random.default_rng(8).normal(size=n0) * 0.3
    exact = np.concatenate([r0, -r0])
    tight = cv.bound(model.theta0, 0.0, Iv(exact))
    assert 0.0 <= tight <= 1e-6, tight
    rng = np.random.default_rng(9)
    for radius, off in ((1e-6, 1e-9), (1e-3, 1e-4)):
        rho = exact + np.concatenate([np.zeros(n0), np.full(n0, off)])
        r = Iv(down(rho - off), up(rho + off))
        bound = cv.bound(model.theta0, radius, r)
        for _ in range(5):
            u = rng.normal(size=model.m)
            u *= radius / np.linalg.norm(u)
            assert _blocks_at(cv, model.theta0 + u, rng.uniform(r.lo, r.hi)) <= bound
    unbounded = np.concatenate([exact[:-1], [np.inf]])
    assert cv.bound(model.theta0, 1e-3, Iv(down(exact), unbounded)) == math.inf


# --- two hidden layers (ThreeLayerCurvature) -------------------------------------------------------
SPEC3 = SPEC.replace("certify rate", "certify rate").replace("y = sin(x[:, 0]) + 0.5 * x[:, 1]", "y = {y}")
CASES3 = {
    "sigmoid, k = 2, x @ W, biases": (
        "  W : [3, 7] = normal(seed=1)\n  b : [7] = normal(std=0.5, seed=2)\n  V : [5, 7] = normal(seed=3)\n"
        "  c : [5] = normal(std=0.5, seed=4)\n  A : [2, 5] = normal(seed=5)\n  e : [2] = 0.1",
        "A @ (sigmoid(V @ (sigmoid(x @ W + b) / 2.0) + c) / 3.0) + e", "sin(x[:, 0:2])", 2),
    "softplus, no biases, constants outside": (
        "  W : [7, 3] = normal(seed=1)\n  V : [5, 7] = normal(seed=3)\n  a : [5] = normal(seed=5)",
        "0.5 * sum(a * softplus((V @ softplus(W @ (x * 0.8))) / 2.5))", "sin(x[:, 0]) + 0.5 * x[:, 1]", 1),
}


def _model3(case):
    from certifier.compile.interval_model import IntervalModel
    params, body, y, _ = CASES3[case]
    return IntervalModel(check(parse(SPEC3.format(n=4, d=3, params=params, body=body, y=y), "c3.rq")))


def _torch_chain(model):
    """F(theta) [n k] in torch from the parsed layers (checked against the model's own outputs)."""
    c = chain(model)
    sl = {name: slice(int(o), int(o) + int(z)) for name, o, z in zip(model.names, model.offsets, model.sizes)}
    x = torch.tensor(model.x)
    acts = {"tanh": torch.tanh, "sigmoid": torch.sigmoid, "softplus": torch.nn.functional.softplus}

    def value(factors):
        v = 1.0
        for op, k in factors:
            v = v / k if op == "div" else v * k
        return v

    def F(theta):
        g = x
        for layer in c.layers:
            W = theta[sl[layer.W]]
            W = W.reshape(layer.h, layer.fan_in) if layer.w_first else W.reshape(layer.fan_in, layer.h).T
            z = value(layer.scale) * (g @ W.T)
            if layer.b is not None:
                z = z + theta[sl[layer.b]]
            g = acts[layer.activation](z)
        A = theta[sl[c.A]].reshape(c.k, -1)
        out = value(c.scale) * (g @ A.T)
        return (out + theta[sl[c.bias]] if c.bias is not None else out).reshape(-1)
    return F


def _three_layer_case(name):
    if name in CASES3:
        model = _model3(name)
        return model, _torch_chain(model)
    return translated("tanh_3layer", n=3)


@pytest.mark.parametrize("name", sorted(CASES3) + ["MLP fixture tanh 24 x 24"])
def test_three_layers_bounded_over_the_ball_and_the_residual_intervals(name):
    model, F = _three_layer_case(name)
    curvature = residual_curvature(model)
    assert isinstance(curvature, ThreeLayerCurvature) and TwoLayerCurvature.of(model) is None, name
    theta0 = model.theta0
    rng = np.random.default_rng(4)
    for theta in (theta0, theta0 + rng.normal(size=model.m) * 0.1):
        ours = np.asarray(model.outputs(theta, None, False)[0].lo).reshape(-1)
        assert np.allclose(F(torch.tensor(theta)).numpy(), ours, atol=1e-12), name
    for radius in (1e-3, 0.1, 0.4):
        r0 = rng.normal(size=model.n * model.k) * 0.3
        width = rng.uniform(0, 0.05, size=r0.size)
        r = Iv(down(r0 - width), up(r0 + width))
        bound = curvature.bound(theta0, radius, r)
        worst = _worst_over_ball(F, theta0, radius, r, rng, points=4 if model.m < 300 else 1)
        assert worst <= bound, (name, radius, worst, bound)
        if radius == 1e-3:
            assert bound <= 4.0 * worst, (name, worst, bound)


def test_three_layers_below_the_general_bound():
    """Against (the tube's general form) sum_i |r_i| H_i, H_i >= sup ||Hess f_i|| from ball.py."""
    from certifier.analyse.sound.ball import BallModel
    model, _ = translated("tanh_3layer", n=3)
    r0 = np.array([0.3, -0.25, 0.2])
    r = Iv(down(r0), up(r0))
    for radius in (1e-3, 0.05):
        H = np.asarray(BallModel(model).lipschitz(model.theta0, radius)["H"])
        general = float(np.sum(np.abs(r0) * H))
        assert ThreeLayerCurvature.of(model).bound(model.theta0, radius, r) < general / 1.2, radius


def test_the_symmetric_norm_bound_is_above_numpys_eigenvalues():
    """sym_norm_upper (the (W1, W1) block at the centre, ||W2||) against numpy's eigenvalues of
    symmetric matrices inside the interval it is given, and within a few per cent of them."""
    from certifier.analyse.sound.curvature import spectral_upper, sym_norm_upper
    from certifier.compile.iv import iv_matmul
    rng = np.random.default_rng(5)
    for size in (3, 40, 120):
        A = rng.normal(size=(size, size))
        Hm = A + A.T
        Hr = np.abs(rng.normal(size=(size, size))) * 1e-3
        Hr = Hr + Hr.T
        bound = sym_norm_upper(Hm, Hr)
        for _ in range(3):
            E = rng.uniform(-1, 1, size=(size, size)) * Hr
            H = Hm + (E + E.T) / 2
            assert np.abs(np.linalg.eigvalsh(H)).max() <= bound
        assert bound <= 1.05 * np.abs(np.linalg.eigvalsh(Hm)).max() + 2 * np.abs(Hr).sum(1).max()
        W = rng.normal(size=(size, size + 2))
        w = spectral_upper(iv_matmul(Iv(W), Iv(np.ascontiguousarray(W.T))))
        assert np.linalg.norm(W, 2) <= w <= 1.02 * np.linalg.norm(W, 2)
