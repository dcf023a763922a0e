"""Gradient descent with a step in the sound mode (`method interval` with `rate(step=...)`):
the proved smoothness beta against closed forms and the Hessian computed by torch at many points,
the certified bound against real gradient descent (numpy) with the spec's step, steps above 1/beta
refused and steps above 2/beta never certified, the path-length bound against the iterates, and the
certificate replayed and rejected when tampered (docs/theory.md 10.9)."""
from __future__ import annotations

import json
import math

import numpy as np
import oracles
import pytest
import torch
from helpers import SPECS, problem_of, spec_text, tampered

from certifier.certificate import verify
from certifier.compile.interval_model import IntervalModel
from certifier.compose.sound import gradient_bound, needed_mu_step, rho_step_upper, rho_upper
from certifier.language.desingularizers import LOG
from certifier.pipeline import run_text

STEP_SPEC = "linear_underparameterized_step_sound.rq"   # conftest.py: step_result, step_cert_file


def _beta(text: str):
    from certifier.analyse.sound.smoothness import smoothness_bound

    p = problem_of(text)
    m = IntervalModel(p.checked)
    h = float(p.checked.region.options["halfwidth"])
    return p, m, smoothness_bound(m, m.theta0 - h, m.theta0 + h)


def test_beta_is_above_the_closed_form_hessian_norm_of_a_linear_model():
    _, _, sm = _beta(spec_text(STEP_SPEC))
    x, _ = oracles.linear_data(noise=False)
    exact = 2 * np.linalg.eigvalsh(x.T @ x / x.shape[0])[-1]          # Hess L = 2 X^T X / n
    assert exact <= sm.beta <= exact * (1 + 1e-9)
    assert exact / 2 <= sm.lam <= exact / 2 * (1 + 1e-9)              # lambda_max(K) = lambda_max(Sigma)


def test_beta_is_above_the_hessian_at_sampled_points_of_a_tanh_neuron():
    p, m, sm = _beta((SPECS / "one_neuron_sound.rq").read_text())
    rng = np.random.default_rng(0)
    x = torch.tensor([-1.0, 2.0], dtype=torch.float64)
    y = 1.03 * torch.tanh(0.97 * x)

    def loss(t):
        return torch.mean((t[0] * torch.tanh(t[1] * x) - y) ** 2)
    worst = 0.0
    for theta in [m.theta0 + 0.3 * np.array(c) for c in ((1, 1), (1, -1), (-1, 1), (-1, -1))] + \
            list(m.theta0 + rng.uniform(-0.3, 0.3, (200, 2))):
        H = torch.autograd.functional.hessian(loss, torch.tensor(theta, dtype=torch.float64))
        worst = max(worst, float(torch.linalg.eigvalsh(H).abs().max()))
    assert 0 < worst <= sm.beta
    assert sm.beta < 10 * worst            # a bound of the right size, not a vacuous one


def _gd(x, y, w0, eta, steps):
    """Real gradient descent on L(w) = mean (x w - y)^2, in float64: losses and iterates."""
    w, losses, ws = w0.copy(), [], []
    for _ in range(steps + 1):
        r = x @ w - y
        losses.append(float(np.mean(r ** 2)))
        ws.append(w.copy())
        w = w - eta * (2 / x.shape[0]) * (x.T @ r)
    return np.array(losses), np.array(ws)


def test_step_spec_is_certified_and_lies_above_real_gradient_descent(step_result):
    r = step_result
    assert r.verdict == "certified" and r.sound
    x, y = oracles.linear_data(noise=False)
    _, lam, *_ = oracles.linear_facts(x, y)
    eta, beta = 0.3, r.rate["smoothness"]
    assert r.rate["step"] == eta and eta * beta <= 1
    # the phi-decrease per step is eta (1 - beta eta / 2) 4 mu, rounded down, and mu <= the closed form
    assert lam[0] * (1 - 1e-6) <= r.mu <= lam[0]
    speed = eta * (1 - beta * eta / 2) * 4 * r.mu
    import re

    coefficient = float(re.search(r"exp\(-([0-9.e-]+) \* k\)", r.rate["formula"]).group(1))
    assert speed * (1 - 1e-12) <= coefficient <= speed          # rounded down: a slower, still true rate
    losses, ws = _gd(x, y, np.zeros(4), eta, 200)
    for k, L in enumerate(losses):
        assert L <= r.bound(k) * (1 + 1e-12) + 1e-300, k
        assert L <= max(losses[0] * math.exp(-k * speed * (1 - 1e-9)), 1e-12) * (1 + 1e-9)
    # the iterates stay within the proved path-length bound, inside the box
    path = float(np.sum(np.linalg.norm(np.diff(ws, axis=0), axis=1)))
    assert np.max(np.linalg.norm(ws, axis=1)) <= path <= r.region["path_length_bound"] <= 6
    # the times to each fraction are whole steps, and real descent is there by then
    for key, k in r.rate["times_to_fraction"].items():
        assert k == int(k)
        assert losses[int(k)] <= float(key) * losses[0] * (1 + 1e-9)


def test_path_length_bound_against_its_formula():
    L0, floor, mu, eta, beta, lam, N = 2.4, 1e-12, 0.47, 0.3, 2.77, 1.385, 200.0
    G = gradient_bound(L0, lam)
    assert math.sqrt(4 * L0 * lam) <= G <= math.sqrt(4 * L0 * lam) * (1 + 1e-14)
    slack = 1 - beta * eta / 2
    exact = ((math.sqrt(L0) - math.sqrt(floor)) / math.sqrt(mu) + math.sqrt(floor) / math.sqrt(4 * mu)) / slack \
        + math.sqrt(N * eta * floor / slack) + eta * G
    got = rho_step_upper(L0, floor, mu, LOG, 4.0, eta, beta, G, N)
    assert exact <= got <= exact * (1 + 1e-13)
    assert got > rho_upper(L0, floor, mu)
    need = needed_mu_step(L0, floor, got, LOG, 4.0, eta, beta, G, N)
    assert rho_step_upper(L0, floor, need, LOG, 4.0, eta, beta, G, N) <= got
    assert mu * (1 - 1e-6) <= need <= mu * (1 + 1e-6)


@pytest.mark.parametrize("eta", [0.5, 0.9, 3.0])
def test_steps_above_one_over_beta_are_never_certified(eta):
    """beta = 2 lambda_max(X^T X / n) = 2.769 in closed form: 1/beta = 0.361, 2/beta = 0.722. A step
    between them is refused (the descent lemma with eta <= 1/beta is what certify proves); above 2/beta
    real gradient descent diverges, and certifying it would be false."""
    x, y = oracles.linear_data(noise=False)
    beta = 2 * np.linalg.eigvalsh(x.T @ x / x.shape[0])[-1]
    r = run_text(spec_text(STEP_SPEC, **{"step=0.3": f"step={eta}"}))
    assert r.verdict == "inconclusive" and not r.sound
    assert r.failing_region.kind == "step-size"
    assert r.failing_region.numbers["smoothness"] >= beta
    if eta > 2 / beta:
        losses, _ = _gd(x, y, np.zeros(4), eta, 60)
        assert losses[-1] > losses[0]           # descent diverges: no rate holds


def test_step_with_a_nonlinear_model_is_certified_above_real_descent():
    text = (SPECS / "one_neuron_sound.rq").read_text().replace(
        "certify rate(floor=0, horizon=100)", "certify rate(floor=0, horizon=2000, step=0.1)")
    r = run_text(text)
    assert r.verdict == "certified" and r.sound and r.rate["step"] == 0.1
    a, w = 1.0, 1.0
    x = np.array([-1.0, 2.0])
    y = 1.03 * np.tanh(0.97 * x)
    path = 0.0
    for k in range(2001):
        f = a * np.tanh(w * x)
        res = f - y
        L = float(np.mean(res ** 2))
        assert L <= r.bound(k) * (1 + 1e-9) + 1e-300, k
        ga = float(np.mean(2 * res * np.tanh(w * x)))
        gw = float(np.mean(2 * res * a * (1 - np.tanh(w * x) ** 2) * x))
        a, w = a - 0.1 * ga, w - 0.1 * gw
        path += 0.1 * math.hypot(ga, gw)
    assert path <= r.region["path_length_bound"] <= 0.3


def test_step_with_another_loss_needs_a_linear_model():
    """Other losses than least squares take a step on affine models only (their beta is the weighted Gram
    bound of tests/test_sound_step_losses.py): a tanh model with the logistic loss is E109."""
    from certifier.diagnostics import SpecError

    text = (SPECS / "logistic_nonseparable_sound.rq").read_text()
    text = text.replace("model f(x) = w @ x", "model f(x) = tanh(w @ x)").replace("horizon=", "step=0.01, horizon=", 1)
    with pytest.raises(SpecError) as e:
        run_text(text)
    d = e.value.diagnostics[0]
    assert d.code == "E109" and "not affine" in d.message


# --- certificates -------------------------------------------------------------------------------------
def test_step_certificate_is_accepted(step_cert_file):
    report = verify(str(step_cert_file / "s.json"))
    assert report.ok, report.problems
    cert = json.loads((step_cert_file / "s.json").read_text())
    proof = cert["evidence"][0]
    assert float.fromhex(proof["step"]) == 0.3
    x, _ = oracles.linear_data(noise=False)
    assert float.fromhex(proof["smoothness"]) >= 2 * np.linalg.eigvalsh(x.T @ x / 32)[-1]


def test_step_certificate_rejects_a_smaller_smoothness(step_cert_file):
    def edit(c):
        c["evidence"][0]["smoothness"] = (float.fromhex(c["evidence"][0]["smoothness"]) * 0.9).hex()
    assert any("below the recomputed proved bounds" in p for p in tampered(step_cert_file, edit))


def test_step_certificate_rejects_a_changed_rho_or_rate(step_cert_file):
    def edit(c):
        c["evidence"][0]["rho"] = (float.fromhex(c["evidence"][0]["rho"]) * 0.5).hex()
    assert any("recomputed with outward rounding" in p for p in tampered(step_cert_file, edit))

    def edit2(c):
        c["rate"]["parameters"]["smoothness"] = (1.0).hex()
    assert any("step and smoothness" in p for p in tampered(step_cert_file, edit2))


def test_step_certificate_rejects_a_changed_step(step_cert_file):
    def edit(c):
        c["evidence"][0]["step"] = (0.35).hex()
    assert any("step 0.35, the spec's is 0.3" in p for p in tampered(step_cert_file, edit))

    def drop(c):
        for key in ("step", "smoothness", "kernel_bound"):
            del c["evidence"][0][key]
    assert any("the proof's step, smoothness or kernel_bound is missing" in p for p in tampered(step_cert_file, drop))
