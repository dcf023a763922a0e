"""The trajectory route's bounds on the architectures of issue 18, each a PyTorch module translated
into the spec's model form (tests/fixtures/certify_fixture_sound_nets.py, NTK parameterisation,
width 32 or 24): two-layer tanh, sigmoid and softplus networks with biases, a 3-layer tanh MLP,
two outputs. Every bound is compared with the module itself: torch.func Hessians and Jacobians at
random points of the ball (H_e, Lip_J, the one-sided Lipschitz bound ell), numpy's SVD (sigma_min),
a DOP853 solve of the module's gradient flow (rtol 1e-10) and real gradient descent (the tube and
its loss bound); a replay with a tube made too thin, or a moved checkpoint, is rejected."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp
from torch.func import functional_call, hessian, jacrev

from certifier.analyse.sound import tube as T
from certifier.analyse.sound.ball import BallModel, center_sigma
from certifier.check import check
from certifier.compile.interval_model import IntervalModel
from certifier.parse import parse

FIXTURES = Path(__file__).resolve().parent / "fixtures"
ARCHS = ["tanh_bias", "sigmoid_bias", "softplus_bias", "tanh_3layer", "tanh_two_outputs"]


def _spec(arch: str) -> str:
    y = "sin(x[:, 0:2])" if arch == "tanh_two_outputs" else "sin(x[:, 0]) + 0.5 * x[:, 1]"
    return (f'spec "{arch}"\ndata {{\n  x = normal(shape=[3, 3], std=0.6, seed=0)\n  y = {y}\n}}\n'
            f'model torch("certify_fixture_sound_nets:{arch}")\nloss least_squares\n'
            "region ball(center=init, radius=auto)\nmethod interval(route=trajectory)\n"
            "certify rate(floor=0, horizon=100)\n")


class Case:
    """A checked module spec, its interval model, ball model, an 8-segment tube, and the module as
    functions of the flat theta (the oracle)."""

    def __init__(self, arch: str):
        self.checked = check(parse(_spec(arch), f"{arch}.rq"), allow_python=True)
        self.model = IntervalModel(self.checked)
        self.bm = BallModel(self.model)
        assert self.bm.unsupported is None
        self.tube = T.build(self.model, self.bm, cap=0.02, target_loss=0.0, max_segments=8, h0=1 / 16)
        c = self.checked
        self.names = list(c.params)
        self.shapes = [c.params[k].shape for k in self.names]
        self.x = torch.from_numpy(np.asarray(c.x))
        self.y = torch.from_numpy(self.model.yk.reshape(-1).copy())

    def F(self, th: torch.Tensor) -> torch.Tensor:
        params, off = {}, 0
        for name, shape in zip(self.names, self.shapes):
            size = int(np.prod(shape))
            params[name] = th[off:off + size].reshape(shape)
            off += size
        return functional_call(self.checked.model_module, params, (self.x,)).reshape(-1)

    def L(self, th: torch.Tensor) -> torch.Tensor:
        return torch.sum((self.F(th) - self.y) ** 2) / self.model.n

    def grad(self, th: np.ndarray) -> np.ndarray:
        return jacrev(self.L)(torch.from_numpy(np.array(th))).numpy()


_CASES: dict = {}


@pytest.fixture(params=ARCHS)
def case(request, monkeypatch):
    monkeypatch.syspath_prepend(str(FIXTURES))
    if request.param not in _CASES:
        _CASES[request.param] = Case(request.param)
    return _CASES[request.param]


def _in_ball(rng, center, radius):
    u = rng.normal(size=center.shape)
    return center + u * radius * rng.uniform() ** (1 / center.size) / np.linalg.norm(u)


def test_hessian_and_lipschitz_bounds_above_the_module(case):
    rng = np.random.default_rng(0)
    r = 0.1
    lip = case.bm.lipschitz(case.model.theta0, r)
    H, G = np.asarray(lip["H"]), np.asarray(lip["grad"])
    points = [_in_ball(rng, case.model.theta0, r) for _ in range(4)]
    for th in points:
        hess = hessian(case.F)(torch.from_numpy(th)).numpy()               # (n k, m, m)
        for e in range(hess.shape[0]):
            assert np.abs(np.linalg.eigvalsh(hess[e])).max() <= H[e], e
        jac = jacrev(case.F)(torch.from_numpy(th)).numpy()
        assert np.all(np.linalg.norm(jac, axis=1) <= G)
    jacs = [jacrev(case.F)(torch.from_numpy(th)).numpy() for th in points]
    for i in range(len(points)):
        for j in range(i):
            ratio = np.linalg.norm(jacs[i] - jacs[j], 2) / np.linalg.norm(points[i] - points[j])
            assert ratio <= lip["lip_jacobian"]


def test_sigma_min_bound_below_numpys_singular_value(case):
    rng = np.random.default_rng(1)
    for th in [case.model.theta0] + [_in_ball(rng, case.model.theta0, 0.3) for _ in range(2)]:
        sigma, _, _ = center_sigma(case.model, th)
        exact = np.linalg.svd(jacrev(case.F)(torch.from_numpy(th)).numpy(), compute_uv=False).min()
        assert sigma is not None and 0 < sigma <= exact


def test_one_sided_lipschitz_bound_against_torch_hessians(case):
    rng = np.random.default_rng(2)
    for s in case.tube.segments[::3]:
        nums = T.segment_numbers(case.model, case.bm, T.tangent(case.model, s.theta), s.h, s.rho)
        for _ in range(2):
            th = _in_ball(rng, s.theta, nums["ball_radius"])
            lam_min = float(np.linalg.eigvalsh(hessian(case.L)(torch.from_numpy(th)).numpy())[0])
            assert -lam_min <= nums["ell"]


def test_tube_holds_the_flow_and_its_loss_bound_is_above_flow_and_descent(case):
    tube, model = case.tube, case.model
    assert len(tube.segments) == 8
    c = 2.0 / model.n
    times, centres, radii, parts = [], [], [], []
    for s in tube.segments:
        tg = T.tangent(model, s.theta)
        V = np.linalg.svd(jacrev(case.F)(torch.from_numpy(s.theta)).numpy(), full_matrices=False)[2]   # row space
        for frac in (0.0, 0.5, 1.0):
            tau = frac * s.h
            phi = T.phi_end(tg, c, tau)[0] if tau > 0 else np.zeros_like(tg.ur)
            times.append(s.t + tau)
            centres.append(tg.theta + tg.B @ phi)
            radii.append(s.e_out if frac > 0 else s.e_in)
            parts.append((V, s.a_sup, s.b_sup) if frac > 0 else (V, s.a_in, s.b_in))
    grid, index = np.unique(np.array(times), return_inverse=True)
    sol = solve_ivp(lambda _t, th: -case.grad(th), (0.0, float(grid[-1])), model.theta0, method="DOP853",
                    rtol=1e-10, atol=1e-12, t_eval=grid)
    assert sol.success
    bound = T.bound_function(tube)
    for t, th, cen, rad, (V, a, b) in zip(times, sol.y.T[index], centres, radii, parts):
        e = th - cen
        assert np.linalg.norm(e) <= rad, t
        # the row-space split: |P e| <= a, |(1 - P) e| <= b (P from numpy's SVD of the module's Jacobian)
        assert np.linalg.norm(V @ e) <= a * (1 + 1e-9) + 1e-15 and np.linalg.norm(e - V.T @ (V @ e)) <= b * (1 + 1e-9) + 1e-15, t
        assert float(case.L(torch.from_numpy(th))) <= bound(t), t
    eta, theta = 1e-3, model.theta0.copy()
    for k in range(int(tube.end_time / eta) + 1):
        if k % 10 == 0:
            assert float(case.L(torch.from_numpy(theta))) <= bound(k * eta), k * eta
        theta = theta - eta * case.grad(theta)


def test_a_tube_too_thin_or_moved_is_rejected(case):
    segs = case.tube.segments[:4]
    thetas = [s.theta for s in segs] + [case.tube.segments[4].theta]
    hs, rhos = [s.h for s in segs], [s.rho for s in segs]
    out = T.replay(case.model, case.bm, thetas, hs, rhos)
    assert [round(s["e_out"], 12) for s in out["segments"]] == [round(s.e_out, 12) for s in segs]
    thin = list(rhos)
    thin[1] = rhos[1] / 10
    with pytest.raises(ValueError, match="not below the assumed radius"):
        T.replay(case.model, case.bm, thetas, hs, thin)
    moved = [th.copy() for th in thetas]
    moved[2][0] += 0.05
    with pytest.raises(ValueError):
        T.replay(case.model, case.bm, moved, hs, rhos)
    # the row-space split's assumed radii: replayed as built, rejected when shrunk
    rr, rn = [s.rho_row for s in segs], [s.rho_null for s in segs]
    assert all(r is not None for r in rr)
    out = T.replay(case.model, case.bm, thetas, hs, rhos, rr, rn)
    assert out["end_e"] == case.tube.segments[4].e_in and out["end_row"] == case.tube.segments[4].a_in
    for which in (0, 1):
        thin = [list(rr), list(rn)]
        thin[which][2] /= 10
        with pytest.raises(ValueError, match="not below the assumed radius"):
            T.replay(case.model, case.bm, thetas, hs, rhos, *thin)
