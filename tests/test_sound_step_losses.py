"""Gradient descent with a step in the sound mode for the logistic, exponential and cross-entropy losses
on linear models (analyse/sound/smoothness.py's weighted Gram bound, compile/interval_losses.py's
curvature, docs/theory.md 10.9):

- the proved beta is above the largest eigenvalue (numpy eigvalsh) of the exact Hessian, computed by
  torch.autograd from the loss written out in torch, at the box's corners and 300 random points, and
  below the closed-form ceiling (1/4 or 1/2) lambda_max(X^T X / n) (not vacuous);
- G = gradient_bound(...) is above ||grad L|| (torch) at every sampled point with L <= L0;
- specs/softmax_three_classes_step_sound.rq: certified, its bound above real gradient descent (numpy,
  the spec's step) at every step up to the horizon, the iterates' path below rho_eta, inside the box;
- steps in (1/beta, 2/beta) are refused and steps above 2/beta never certified;
- `certify check` accepts the certificate and rejects a smaller beta, a changed rho or step.
"""
from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch
from helpers import SPECS, problem_of, spec_text, tampered

from certifier.analyse.sound.smoothness import smoothness_bound
from certifier.certificate import verify
from certifier.compile.interval_model import IntervalModel
from certifier.compose.sound import gradient_bound
from certifier.pipeline import run_text

STEP_SPEC = "softmax_three_classes_step_sound.rq"   # conftest.py: step_result, step_cert_file
CASES = {   # spec, the closed-form ceiling's factor on lambda_max(X^T X / n)
    "logistic": ("logistic_nonseparable_sound.rq", 0.25),
    "exponential": ("exponential_separable_sound.rq", None),
    "cross_entropy": ("softmax_three_classes_sound.rq", 0.5),
}


def _torch_loss(name, x, y, k):
    """The loss as a function of theta, written out in torch (not certify's code)."""
    X = torch.tensor(x, dtype=torch.float64)
    if name == "cross_entropy":
        cls = torch.tensor(np.asarray(y, dtype=np.int64))
        rows = torch.arange(len(cls))

        def ce(t):
            F = X @ t.reshape(k, -1).T
            return torch.mean(torch.logsumexp(F, dim=1) - F[rows, cls])
        return ce
    Y = torch.tensor(y, dtype=torch.float64)
    if name == "logistic":
        return lambda t: torch.mean(torch.log1p(torch.exp(-Y * (X @ t))))
    return lambda t: torch.mean(torch.exp(-Y * (X @ t)))


def _setup(name):
    spec, factor = CASES[name]
    text = (SPECS / spec).read_text()
    p = problem_of(text)
    m = IntervalModel(p.checked)
    h = float(p.checked.region.options["halfwidth"])
    sm = smoothness_bound(m, m.theta0 - h, m.theta0 + h)
    x = np.asarray(p.checked.x, dtype=np.float64)
    y = np.asarray(p.checked.y, dtype=np.float64)
    return m, h, sm, x, y, factor


def _points(theta0, h, rng, count=300):
    m = theta0.size
    corners = [theta0 + h * np.array(s) for s in itertools.product((-1.0, 1.0), repeat=m)]
    return corners + list(theta0 + rng.uniform(-h, h, (count, m)))


@pytest.mark.parametrize("name", sorted(CASES))
def test_beta_is_above_the_exact_hessian_and_not_vacuous(name):
    m, h, sm, x, y, factor = _setup(name)
    assert not isinstance(sm, str), sm
    loss = _torch_loss(name, x, y, m.k)
    thetas = torch.tensor(np.array(_points(m.theta0, h, np.random.default_rng(0))), dtype=torch.float64)
    H = torch.func.vmap(torch.func.hessian(loss))(thetas).numpy()
    worst = float(np.max(np.abs(np.linalg.eigvalsh((H + np.swapaxes(H, 1, 2)) / 2))))
    assert 0 < worst <= sm.beta
    if factor is not None:       # l'' <= 1/4 (logistic), ||diag(p) - p p^T|| <= 1/2 (cross-entropy)
        ceiling = factor * np.linalg.eigvalsh(x.T @ x / x.shape[0])[-1]
        assert sm.beta <= ceiling * (1 + 1e-9)
        assert sm.beta < 2 * worst        # the sup over the box is not far below the ceiling here
    else:                        # exponential: l_i'' = l_i, at most e^{h ||x_i||_1} over the box
        bound = max(np.exp(h * np.abs(xi).sum()) for xi in x) * np.linalg.eigvalsh(x.T @ x / x.shape[0])[-1]
        assert sm.beta <= bound * (1 + 1e-9)


@pytest.mark.parametrize("name", sorted(CASES))
def test_gradient_bound_is_above_the_gradient_in_the_sublevel_set(name):
    m, h, sm, x, y, _ = _setup(name)
    loss = _torch_loss(name, x, y, m.k)
    L0 = float(loss(torch.tensor(m.theta0, dtype=torch.float64)))
    G = gradient_bound(L0 * (1 + 1e-12), sm.lam, name, m.n)
    seen = 0
    for theta in _points(m.theta0, h, np.random.default_rng(1), 2000):
        t = torch.tensor(theta, dtype=torch.float64, requires_grad=True)
        L = loss(t)
        if float(L.detach()) <= L0:
            (g,) = torch.autograd.grad(L, t)
            assert float(g.norm()) <= G
            seen += 1
    assert seen >= 10


def _ce_descent(x, cls, eta, steps, k=3):
    """Real gradient descent on mean cross-entropy of W @ x_i (numpy): losses and iterates (flattened W)."""
    n, d = x.shape
    W, losses, ws = np.zeros((k, d)), [], []
    onehot = np.eye(k)[cls]
    for _ in range(steps + 1):
        F = x @ W.T
        F = F - F.max(axis=1, keepdims=True)
        P = np.exp(F) / np.exp(F).sum(axis=1, keepdims=True)
        losses.append(float(-np.mean(np.log(P[np.arange(n), cls]))))
        ws.append(W.reshape(-1).copy())
        W = W - eta * (P - onehot).T @ x / n
    return np.array(losses), np.array(ws)


def test_step_spec_is_certified_and_lies_above_real_gradient_descent(step_result):
    r = step_result
    assert r.verdict == "certified" and r.sound
    eta, beta = r.rate["step"], r.rate["smoothness"]
    assert eta == 2 and eta * beta <= 1
    p = problem_of(spec_text(STEP_SPEC))
    x = np.asarray(p.checked.x, dtype=np.float64)
    cls = np.asarray(p.checked.y).astype(np.int64)
    losses, ws = _ce_descent(x, cls, eta, 100)
    assert losses[-1] < 0.1 < losses[0]                   # the floor is reached within the horizon
    for k, L in enumerate(losses):
        assert L <= r.bound(k) * (1 + 1e-12), k
    path = float(np.sum(np.linalg.norm(np.diff(ws, axis=0), axis=1)))
    assert np.max(np.abs(ws)) <= path <= r.region["path_length_bound"] <= 30


@pytest.mark.parametrize("factor", [1.5, 2.5])
def test_steps_above_one_over_beta_are_never_certified(step_result, factor):
    """A step in (1/beta, 2/beta) is refused (kind step-size); above 2/beta it is never certified."""
    beta = step_result.rate["smoothness"]
    r = run_text(spec_text(STEP_SPEC, **{"step=2": f"step={factor / beta!r}"}))
    assert r.verdict == "inconclusive" and not r.sound and r.failing_region.kind == "step-size"


@pytest.mark.parametrize("name", ["logistic", "exponential"])
def test_other_losses_above_two_over_beta_are_never_certified(name):
    m, h, sm, *_ = _setup(name)
    text = (SPECS / CASES[name][0]).read_text().replace("horizon=", f"step={2.2 / sm.beta!r}, horizon=", 1)
    r = run_text(text)
    assert r.verdict == "inconclusive" and not r.sound and r.failing_region.kind == "step-size"


# --- certificates -------------------------------------------------------------------------------------
def test_step_certificate_is_accepted(step_cert_file):
    report = verify(str(step_cert_file / "s.json"))
    assert report.ok, report.problems
    proof = json.loads((step_cert_file / "s.json").read_text())["evidence"][0]
    assert float.fromhex(proof["step"]) == 2.0


def test_step_certificate_rejects_tampering(step_cert_file):
    def smaller_beta(c):
        c["evidence"][0]["smoothness"] = (float.fromhex(c["evidence"][0]["smoothness"]) * 0.9).hex()
    assert any("below the recomputed proved bounds" in p for p in tampered(step_cert_file, smaller_beta))

    def smaller_rho(c):
        c["evidence"][0]["rho"] = (float.fromhex(c["evidence"][0]["rho"]) * 0.5).hex()
    assert any("recomputed with outward rounding" in p for p in tampered(step_cert_file, smaller_rho))

    def other_step(c):
        c["evidence"][0]["step"] = (2.5).hex()
    assert any("step 2.5, the spec's is 2.0" in p for p in tampered(step_cert_file, other_step))

    def smaller_kernel_bound(c):      # a smaller G would shrink rho_eta
        c["evidence"][0]["kernel_bound"] = (float.fromhex(c["evidence"][0]["kernel_bound"]) * 0.5).hex()
    assert any("below the recomputed proved bounds" in p for p in tampered(step_cert_file, smaller_kernel_bound))
