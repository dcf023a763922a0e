"""The two-layer residual-curvature bound of the trajectory tube (analyse/sound/curvature.py) against
torch Hessians: sup over a ball and over signed residual intervals of ||sum_i r_i Hess f_i||_2."""
from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from certifier.analyse.sound.curvature import TwoLayerCurvature, match
from certifier.check import check
from certifier.compile.iv import Iv
from certifier.compile.rounding import down, up
from certifier.parse import parse

ROOT = Path(__file__).resolve().parent.parent

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
    op, k = form.scale or ("mul", 1.0)
    _, body, *_ = CASES[case]
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
        translated = IntervalModel(check(parse(path.read_text(), str(path)), allow_python=True))
    finally:
        sys.path.remove(str(ROOT / "specs" / "practice"))
    form = match(translated)        # (output.weight @ tanh(hidden.weight @ x)) / 16, its [0]
    assert form is not None and (form.h, form.d, form.scale) == (256, 4, ("div", 16.0))
    from certifier.compile.interval_model import IntervalModel
    refused = {
        "relu": "sum(a * relu(W @ x))",
        "3 layers": "sum(a * tanh(V @ tanh(W @ x)))",
        "input scaled inside": "sum(a * tanh(W @ (x / 2)))",
    }
    for name, body in refused.items():
        params = '  W : [6, 3] = normal(seed=1)\n  a : [6] = normal(seed=2)'
        if "V" in body:
            params += "\n  V : [6, 6] = normal(seed=4)"
        model = IntervalModel(check(parse(SPEC.format(n=4, d=3, params=params, body=body), "r.rq")))
        assert match(model) is None, name
