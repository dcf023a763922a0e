"""Population losses (data gaussian): the closed form of E (f - y)^2 for sums of ReLU neurons against
Monte Carlo and against autograd of the plain formula, its guards (no NaN at degenerate angles or
at a neuron at 0), Problem on a population, the toy cases of the single-neuron problem against
their closed forms and an independent ODE solve, and the diagnostics."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import single_neuron_oracle as oracle
import torch

from certifier.check import check
from certifier.compile.population import arccos_gram
from certifier.compile.problem import Problem
from certifier.diagnostics import SpecError
from certifier.parse import parse

ROOT = Path(__file__).resolve().parent.parent
V5 = np.array([1.0, 0.0, 0.0, 0.0, 0.0])


def spec_text(W, v=V5, model="sum(relu(W @ x))", target="relu(v @ x)", extra="", params_extra=""):
    rows = ", ".join("[" + ", ".join(repr(float(x)) for x in row) + "]" for row in np.atleast_2d(W))
    return (f"data gaussian(d={len(v)}) {{\n  v = [{', '.join(repr(float(x)) for x in v)}]\n{extra}}}\n"
            f"params {{\n  W : [{len(np.atleast_2d(W))}, {len(v)}] = [{rows}]\n{params_extra}}}\n"
            f"model f(x) = {model}\ntarget {target}\nloss least_squares\n")


def problem_of(text: str) -> Problem:
    return Problem(check(parse(text, "pop.rq")))


def naive_gram(U, V):
    """The arc-cosine kernel as written in the theory note, through arccos (autograd-able away
    from degenerate angles)."""
    a, b = U.norm(dim=1), V.norm(dim=1)
    c = ((U @ V.T) / (a[:, None] * b[None, :])).clamp(-1, 1)
    t = torch.arccos(c)
    return a[:, None] * b[None, :] * (torch.sin(t) + (math.pi - t) * c) / (2 * math.pi)


def naive_loss(W, v):
    P = torch.cat([W, v[None, :]])
    c = torch.cat([torch.ones(len(W), dtype=W.dtype), -torch.ones(1, dtype=W.dtype)])
    total = 0.5 * (c * c * (P * P).sum(dim=1)).sum()   # the diagonal: arccos at 1 would give NaN
    for i in range(len(P)):
        for j in range(len(P)):
            if i != j:
                total = total + c[i] * c[j] * naive_gram(P[i:i + 1], P[j:j + 1])[0, 0]
    return total


# --- the closed form -------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", [0, 1])
def test_loss_and_gradient_match_monte_carlo(seed):
    """1e6 samples of x ~ N(0, I_5): the closed form's L and dL/dW within 5 standard errors (a
    Monte Carlo estimate: the bound is statistical, about 6e-7 two-sided per comparison)."""
    rng = np.random.default_rng(seed)
    W = 0.5 * rng.standard_normal((3, 5))
    p = problem_of(spec_text(W))
    point = p.point(p.theta0)
    L_mc, L_se, G_mc, G_se = oracle.monte_carlo(W, V5, 1_000_000, seed=100 + seed)
    assert abs(point.loss - L_mc) <= 5 * L_se
    G = point.grad.numpy().reshape(3, 5)
    assert np.all(np.abs(G - G_mc) <= 5 * G_se + 1e-12)


def test_trainable_second_layer_and_a_sum_of_teachers_match_monte_carlo():
    """f = a @ relu(W @ x) with a trainable, y = b @ relu(V @ x): L against Monte Carlo."""
    rng = np.random.default_rng(3)
    W, V, a, b = rng.standard_normal((4, 3)), rng.standard_normal((2, 3)), rng.standard_normal(4), [1.0, -0.5]
    text = (f"data gaussian(d=3) {{\n  V = {V.tolist()}\n  b = {b}\n}}\n"
            f"params {{\n  W : [4, 3] = {W.tolist()}\n  a : [4] = {a.tolist()}\n}}\n"
            "model f(x) = a @ relu(W @ x)\ntarget b @ relu(V @ x)\nloss least_squares\n")
    p = problem_of(text)
    x = np.random.default_rng(4).standard_normal((1_000_000, 3))
    r = np.maximum(x @ W.T, 0) @ a - np.maximum(x @ V.T, 0) @ np.asarray(b)
    L_mc, L_se = float(np.mean(r * r)), float(np.std(r * r) / 1000)
    assert abs(float(p.loss(p.theta0)) - L_mc) <= 5 * L_se
    # and against the oracle's closed form
    assert float(p.loss(p.theta0)) == pytest.approx(oracle.loss(W, None, a, V, b), rel=1e-12)


def test_closed_form_equals_the_oracle_and_autograd_of_the_plain_formula():
    rng = np.random.default_rng(5)
    for _ in range(5):
        W = rng.standard_normal((3, 5))
        p = problem_of(spec_text(W))
        point = p.point(p.theta0)
        assert point.loss == pytest.approx(oracle.loss(W, V5), rel=1e-12, abs=1e-15)
        np.testing.assert_allclose(point.grad.numpy().reshape(3, 5), oracle.grad(W, V5), rtol=1e-10, atol=1e-13)
        Wt = torch.tensor(W, requires_grad=True)
        (g,) = torch.autograd.grad(naive_loss(Wt, torch.tensor(V5)), Wt)
        np.testing.assert_allclose(point.grad.numpy().reshape(3, 5), g.numpy(), rtol=1e-10, atol=1e-13)


def test_hessian_matches_autograd_of_the_plain_formula():
    """Double backward goes through the closed-form gradient (adversarial search, smoothness)."""
    rng = np.random.default_rng(6)
    U, V = torch.tensor(rng.standard_normal((3, 4))), torch.tensor(rng.standard_normal((2, 4)))
    G = torch.tensor(rng.standard_normal((3, 2)))
    theta = torch.cat([U.reshape(-1), V.reshape(-1)])

    def f(gram):
        return lambda th: (gram(th[:12].reshape(3, 4), th[12:].reshape(2, 4)) * G).sum()

    H = torch.autograd.functional.hessian(f(arccos_gram), theta)
    H_naive = torch.autograd.functional.hessian(f(naive_gram), theta)
    torch.testing.assert_close(H, H_naive, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("angle", [1e-3, 1e-5, 1e-7, math.pi - 1e-3, math.pi - 1e-6])
def test_near_degenerate_angles(angle):
    """Two students at a tiny angle (or nearly opposite): the value equals the oracle, the gradient
    equals autograd of the plain formula where that is still accurate and a central difference of
    the value otherwise, and nothing is NaN."""
    w2 = np.array([math.cos(angle), math.sin(angle), 0.0, 0.0, 0.0]) * 0.6
    W = np.array([[0.5, 0.0, 0.0, 0.0, 0.0], w2])
    p = problem_of(spec_text(W, v=np.array([0.3, 0.7, 0.2, 0.0, 0.0])))
    point = p.point(p.theta0)
    assert math.isfinite(point.loss) and torch.isfinite(point.grad).all()
    assert point.loss == pytest.approx(oracle.loss(W, p.constants["v"].numpy()), rel=1e-12)
    # gradient against a central difference of the (accurate) value, in high precision
    eps = 1e-6
    fd = np.array([(float(p.loss(p.theta0 + eps * e)) - float(p.loss(p.theta0 - eps * e))) / (2 * eps)
                   for e in torch.eye(p.m, dtype=torch.float64)])
    np.testing.assert_allclose(point.grad.numpy(), fd, atol=1e-8)
    # second derivatives are finite and match a central difference of the gradient
    _, _, dlogr, _ = p.log_rayleigh_and_grad(p.theta0)
    assert torch.isfinite(dlogr).all()
    th = p.theta0.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(p.loss(th), th, create_graph=True)
    u = torch.linspace(-1, 1, p.m, dtype=torch.float64)
    (hv,) = torch.autograd.grad(g @ u, th)
    fd_hv = (p.point(p.theta0 + 1e-6 * u).grad - p.point(p.theta0 - 1e-6 * u).grad) / 2e-6
    torch.testing.assert_close(hv, fd_hv, rtol=1e-5, atol=1e-6)


def test_exactly_degenerate_configurations_are_finite_with_the_stated_conventions():
    """Parallel, opposite and coincident students, one equal to the teacher, one at exactly 0:
    L, grad L and Hessian-vector products are finite. At w = 0 the gradient is the one of
    relu'(0) = 1/2: dL/dw = E[(f - y) x] = sum_j c_j p_j / 2."""
    v = np.array([1.0, 0.0, 0.0])
    W = np.array([[1.0, 0, 0], [2.0, 0, 0], [-1.0, 0, 0], [0.0, 0, 0], [1.0, 0, 0]])
    p = problem_of(spec_text(W, v=v))
    point = p.point(p.theta0)
    # f = 4 relu(x1) + relu(-x1), y = relu(x1): f - y = 3 relu(x1) + relu(-x1)
    assert point.loss == pytest.approx(9 / 2 + 1 / 2, rel=1e-14)
    G = point.grad.numpy().reshape(5, 3)
    np.testing.assert_allclose(G[0], [3.0, 0, 0], atol=1e-14)      # 2 E[3 relu(x1) x1 1{x1>0}] = 3
    np.testing.assert_allclose(G[2], [-1.0, 0, 0], atol=1e-14)     # 2 E[relu(-x1) x 1{x1<0}]
    np.testing.assert_allclose(G[3], [(3 - 1) / 2, 0, 0], atol=1e-14)   # w = 0: E[(f - y) x]
    _, _, d, _ = p.log_rayleigh_and_grad(p.theta0)
    assert torch.isfinite(d).all()
    assert math.isfinite(p.hessian_top_eigenvalue(p.theta0))
    # at the optimum (one student equal to the teacher) L = 0 up to rounding, gradient 0
    q = problem_of(spec_text(np.array([[1.0, 0.0, 0.0]]), v=v))
    assert abs(float(q.loss(q.theta0))) < 1e-15 and float(q.point(q.theta0).grad.norm()) < 1e-15


@pytest.mark.parametrize("model,params", [
    ("sum(relu(W @ x))", "  a : [4] = 1\n"),
    ("a @ relu(W @ x)", "  a : [4] = [0.5, -1.0, 2.0, 0.3]\n"),
    ("3 * sum(relu(W @ x) * a * s) - 2 * relu(x @ u)", "  a : [4] = [0.5, -1.0, 2.0, 0.3]\n  s : [1] = 0.7\n"),
    ("relu(u @ x) * 2 + sum(c * relu(W @ x))", "  a : [4] = 1\n"),
    ("s * (a @ relu(W @ x)) / 2", "  a : [4] = [0.5, -1.0, 2.0, 0.3]\n  s : [] = 0.7\n"),   # autograd path
])
def test_numpy_fast_path_equals_autograd(model, params):
    """Problem.point uses the numpy closed form when the neuron groups are bare names; it must agree
    with autograd of the torch closed form (and fall back to autograd otherwise)."""
    rng = np.random.default_rng(8)
    text = (f"data gaussian(d=3) {{\n  V = {rng.standard_normal((2, 3)).tolist()}\n  b = [1.0, -0.5]\n"
            f"  u = [0.1, 0.2, 0.3]\n  c = [1, 2, 3, 4]\n}}\n"
            f"params {{\n  W : [4, 3] = {rng.standard_normal((4, 3)).tolist()}\n{params}}}\n"
            f"model f(x) = {model}\ntarget b @ relu(V @ x)\nloss least_squares\n")
    p = problem_of(text)
    assert p._closed_form.fast == ("s * (" not in model)
    for _ in range(3):
        theta = p.theta0 + 0.1 * torch.tensor(rng.standard_normal(p.m))
        th = theta.clone().requires_grad_(True)
        L = p.loss(th)
        (g,) = torch.autograd.grad(L, th)
        point = p.point(theta)
        assert point.loss == pytest.approx(float(L.detach()), rel=1e-13, abs=1e-15)
        torch.testing.assert_close(point.grad, g, rtol=1e-12, atol=1e-14)


def test_problem_on_a_population():
    p = problem_of(spec_text(np.full((2, 5), 0.3)))
    point = p.point(p.theta0)
    assert point.rayleigh == pytest.approx(point.grad_sqnorm / (4 * point.loss))
    assert not p.kernel_applicable() and p.n == 0
    assert math.isnan(point.sample_max)
    assert 0 < p.loss_rounding < 1e-13
    with pytest.raises(TypeError, match="population"):
        p.outputs(p.theta0)


# --- the toy cases of Xu & Du, in certify's convention L = E (f - y)^2 ---------------------------

def test_parallel_students_decay_like_exp_minus_2nt():
    """w_i = c_i v: L(t) = (S0 - 1)^2 |v|^2 / 2 exp(-2 n t) (exp(-n t) in the 1/2 convention),
    against an independent solve_ivp flow of the oracle, and certify's gradient along it."""
    v = np.array([1.0, 0.0, 0.0])
    c0 = np.array([0.1, 0.2, 0.3])
    W0 = c0[:, None] * v
    times = np.array([0.0, 0.1, 0.5, 1.0, 2.0, 3.0])
    path = oracle.flow(W0, v, times)
    exact = oracle.parallel_loss(c0, v, times)
    ode = np.array([oracle.loss(W, v) for W in path])
    np.testing.assert_allclose(ode, exact, rtol=1e-7)
    p = problem_of(spec_text(W0, v=v))
    for W in path[1:]:
        theta = torch.tensor(W.ravel())
        point = p.point(theta)
        assert point.loss == pytest.approx(oracle.loss(W, v), rel=1e-9)
        np.testing.assert_allclose(point.grad.numpy(), oracle.grad(W, v).ravel(), rtol=1e-9, atol=1e-15)
        assert point.rayleigh == pytest.approx(3 / 2, rel=1e-6)     # R = n / 2 on the parallel set
    # certify's own gradient descent with a small step follows the flow
    theta, eta = p.theta0.clone(), 1e-3
    for _ in range(1000):
        theta = theta - eta * p.point(theta).grad
    assert float(p.loss(theta)) == pytest.approx(float(oracle.parallel_loss(c0, v, 1.0)), rel=1e-2)


def test_symmetric_balanced_students_decay_like_pi2_over_24_t3():
    """Two students reflection-symmetric about v: L t^3 -> pi^2 / 24 (pi^2 / 6 in the 1/2
    convention), by an independent ODE solve; certify's gradient agrees along the path."""
    v = np.array([1.0, 0.0, 0.0])
    W0 = np.array([[0.3, 0.4, 0.0], [0.3, -0.4, 0.0]])
    times = np.array([0.0, 10.0, 100.0, 1000.0, 3000.0])
    path = oracle.flow(W0, v, times)
    scaled = [oracle.loss(W, v) * t ** 3 for W, t in zip(path[1:], times[1:])]
    assert scaled[-1] == pytest.approx(oracle.SYMMETRIC_CONSTANT, rel=3e-3)
    assert scaled[-2] == pytest.approx(oracle.SYMMETRIC_CONSTANT, rel=1e-2)
    p = problem_of(spec_text(W0, v=v))
    for W in path[1:]:
        point = p.point(torch.tensor(W.ravel()))
        assert point.loss == pytest.approx(oracle.loss(W, v), rel=1e-6, abs=1e-15)
        np.testing.assert_allclose(point.grad.numpy(), oracle.grad(W, v).ravel(), rtol=1e-6, atol=1e-13)
    # R falls like L^(1/3) along the path: no constant mu, R / L^(1/3) stays bounded
    ratios = [p.point(torch.tensor(W.ravel())).rayleigh / oracle.loss(W, v) ** (1 / 3) for W in path[2:]]
    assert max(ratios) / min(ratios) < 1.5


# --- the language ----------------------------------------------------------------------------------

def errors(text: str) -> list[str]:
    from certifier.diagnostics import render_text

    with pytest.raises(SpecError) as info:
        check(parse(text, "pop.rq"))
    return [render_text(d, text) for d in info.value.diagnostics]


BASE = spec_text(np.full((2, 5), 0.3))


def test_no_closed_form_is_a_located_diagnostic():
    (message,) = errors(BASE.replace("sum(relu(W @ x))", "sum(tanh(W @ x))"))
    assert message.startswith("pop.rq:7:18: error[E112]: no closed form for the population loss (in the "
                              "model): tanh(...) of x has no closed-form expectation under x ~ N(0, I)")
    assert "\n  |                  ^^^^^^^^^^^\n" in message and "= hint: closed forms exist for sums of ReLU neurons" in message


@pytest.mark.parametrize("model,where", [
    ("sum(relu(W @ x + 1))", "relu of a linear function of x without a bias"),
    ("sum(relu(W @ x)) + 1", "constant offset"),
    ("sum(relu(W @ x)) * sum(relu(W @ x))", "a product of two functions of x"),
])
def test_models_without_closed_form(model, where):
    (message,) = errors(BASE.replace("sum(relu(W @ x))", model))
    assert "error[E112]" in message and where in message


FORMS = {   # model -> f as a function of h = relu(x @ W.T) and x1 = relu(x[:, 0])
    "relu(W[0] @ x) + 2 * relu(W[1] @ x)": lambda h, x1: h[:, 0] + 2 * h[:, 1],
    "mean(relu(W @ x))": lambda h, x1: h.mean(axis=1),
    "c @ relu(W @ x)": lambda h, x1: h[:, 0] - h[:, 1],
    "sum(relu(W @ x) * c / 2)": lambda h, x1: (h[:, 0] - h[:, 1]) / 2,
    "-(relu(x @ v) - sum(relu(W @ x))) / 2": lambda h, x1: (h.sum(axis=1) - x1) / 2,
}


@pytest.mark.parametrize("model", sorted(FORMS))
def test_recognised_forms_match_monte_carlo(model):
    W = np.array([[0.3, 0.1, 0, 0, 0], [-0.2, 0.5, 0.1, 0, 0]])
    p = problem_of(spec_text(W, extra="  c = [1, -1]\n").replace("sum(relu(W @ x))", model))
    x = np.random.default_rng(0).standard_normal((400_000, 5))
    x1 = np.maximum(x[:, 0], 0)
    r2 = (FORMS[model](np.maximum(x @ W.T, 0), x1) - x1) ** 2
    assert abs(float(p.loss(p.theta0)) - r2.mean()) <= 5 * r2.std() / math.sqrt(len(x))


def test_population_diagnostics():
    assert "error[E005]: the spec has no 'target' statement" in errors(BASE.replace("target relu(v @ x)\n", ""))[0]
    finite = "data {\n  x = normal(shape=[4, 2], seed=0)\n  y = x[:, 0]\n}\nparams { w : [2] = 1 }\n" \
             "model f(x) = w @ x\ntarget relu(x[0])\nloss least_squares\n"
    assert "error[E112]: a target statement needs a population" in errors(finite)[0]
    assert "cannot read the parameter 'W'" in errors(BASE.replace("target relu(v @ x)", "target relu(W[0] @ x)"))[0]
    assert "E112" in errors(BASE.replace("loss least_squares", "loss logistic"))[0]
    # method interval takes populations since issue 17 (tests/test_sound_population.py)
    assert check(parse(BASE + "method interval(boxes=10)\n", "pop.rq")).population is not None
    assert "unknown data distribution 'gauss'" in errors(BASE.replace("gaussian(d=5)", "gauss(d=5)"))[0]
    assert "gaussian needs d=" in errors(BASE.replace("gaussian(d=5)", "gaussian()"))[0]
    assert "must be positive" in errors(BASE.replace("gaussian(d=5)", "gaussian(d=0)"))[0]
    assert "'x' is defined by the population" in errors(BASE.replace("  v = ", "  x = 1\n  v = "))[0]
    assert "the target has shape [2]" in errors(BASE.replace("target relu(v @ x)", "target relu(x[0:2])"))[0]


def test_cli_exit_code_2_for_a_spec_without_closed_form(tmp_path, capsys):
    from certifier.cli import main

    path = tmp_path / "tanh.rq"
    path.write_text(BASE.replace("sum(relu(W @ x))", "sum(tanh(W @ x))"))
    assert main([str(path), "--no-cache"]) == 2
    err = capsys.readouterr().err
    assert f"{path}:7:18: error[E112]" in err and "^^^^" in err and "hint:" in err
