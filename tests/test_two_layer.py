"""The batched evaluator's two-layer fast path (compile/two_layer.py, issue 7): which models
it recognises (and which it must leave to the generic path), and that every row equals
Problem.point (autograd through the vmapped model: an independent computation of the same
quantities) to rounding, for points and for the second derivatives of log R."""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from certifier.check import check
from certifier.compile.batched import BatchedEvaluator
from certifier.compile.kernel import lambda_min
from certifier.compile.problem import Problem
from certifier.compile.two_layer import ACTIVATIONS, TwoLayer
from certifier.language.evaluate import FUNCTIONS
from certifier.parse import parse

pytestmark = pytest.mark.usefixtures("one_thread")     # tests/conftest.py


def spec(model: str, params: str, loss: str = "least_squares", y: str = "sin(x[:, 0]) + 0.3 * x[:, 1]",
         data: str = "", n: int = 12, d: int = 3) -> str:
    return (f'spec "fast path"\ndata {{\n  x = normal(shape=[{n}, {d}], seed=0)\n  y = {y}\n{data}}}\n'
            f"params {{\n{params}\n}}\nmodel f(x) = {model}\nloss {loss}\n"
            "region ball(center=init, radius=auto)\nmethod sampled(samples=64, seed=0)\n"
            "certify rate(floor=0, horizon=100)\n")


W_HD = "  W : [16, 3] = normal(std=0.6, seed=1)"
W_DH = "  W : [3, 16] = normal(std=0.6, seed=1)"
A = "  a : [16] = normal(std=0.25, seed=2)"
BIAS = "  b : [16] = normal(std=0.3, seed=3)"
C = "  c : [] = 0.2"

RECOGNISED = {
    "sum(a * tanh(W @ x))": (W_HD, A),
    "sum(tanh(W @ x) * a)": (W_HD, A),
    "a @ tanh(W @ x)": (W_HD, A),
    "sum(a * tanh(x @ W))": (W_DH, A),
    "a @ tanh(W @ x + b) + c": (W_HD, BIAS, A, C),
    "c + sum(a * tanh(b + x @ W))": (C, BIAS, W_DH, A),
    # a parameter the model does not use: its gradient is 0
    "sum(a * tanh(W @ x)) ": (W_HD, A, "  unused : [2] = normal(seed=4)"),
    # a constant scale of the output layer (the NTK parameterisation), with and without + c
    "a @ tanh(W @ x) / sqrt(16)": (W_HD, A),
    "sum(a * tanh(W @ x + b)) / 4 + c": (W_HD, BIAS, A, C),
    "2 * sum(a * tanh(x @ W))": (W_DH, A),
    "c + a @ relu(W @ x) * (1 / sqrt(16))": (C, W_HD, A),
    # the other activations of the table
    "sum(a * sigmoid(W @ x))": (W_HD, A),
    "a @ relu(W @ x + b) + c": (W_HD, BIAS, A, C),
    "sum(relu(x @ W) * a)": (W_DH, A),
    "sum(a * exp(x @ W + b))": (W_DH, BIAS, A),
    # derivatives from the pre-activation Z, kept beside T
    "sum(a * softplus(W @ x))": (W_HD, A),
    "a @ sin(W @ x + b) + c": (W_HD, BIAS, A, C),
    "sum(cos(x @ W) * a)": (W_DH, A),
    "sum(a * abs(W @ x))": (W_HD, A),
    # a positive pre-activation for sqrt and log: a bias of 10 (abs(W @ x) stays below it here)
    "sum(a * sqrt(W @ x + b))": (W_HD, "  b : [16] = 10.0 + 0.3 * normal(seed=3)", A),
    "sum(a * log(W @ x + b))": (W_HD, "  b : [16] = 10.0 + 0.3 * normal(seed=3)", A),
}


def activation_of(model: str) -> str:
    """The function applied to W @ x (or x @ W) in the model's text."""
    return re.search(r"(\w+)\([^()]*(?:W @ x|x @ W)", model).group(1)


def problem(text: str) -> Problem:
    return Problem(check(parse(text, "<test>")), "cpu")


def rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(a), abs(b), 1e-300)


def assert_rows_equal_pointwise(p: Problem, ev: BatchedEvaluator, count: int = 5, scale: float = 0.3):
    gen = torch.Generator().manual_seed(7)
    thetas = p.theta0 + scale * torch.randn(count, p.m, generator=gen, dtype=torch.float64)
    for theta, q, (L, log_r, dlog, smax) in zip(thetas, ev.points(thetas), ev.log_rayleigh_and_grad(thetas)):
        ref = p.point(theta)
        assert rel(q.loss, ref.loss) <= 1e-12 and rel(q.rayleigh, ref.rayleigh) <= 1e-12
        assert rel(q.grad_sqnorm, ref.grad_sqnorm) <= 1e-12
        assert float((q.grad - ref.grad).norm()) <= 1e-12 * float(ref.grad.norm())
        assert rel(q.sample_max, ref.sample_max) <= 1e-12
        rL, r_log_r, rd, rsmax = p.log_rayleigh_and_grad(theta)
        assert rel(L, rL) <= 1e-12 and abs(log_r - r_log_r) <= 1e-11 and rel(smax, rsmax) <= 1e-12
        assert float((dlog - rd).norm()) <= 1e-10 * float(rd.norm())


@pytest.mark.parametrize("model", list(RECOGNISED), ids=lambda m: m.strip())
def test_the_transposed_layout_gives_problem_points_gradient(model):
    """The witness's layout (BatchedEvaluator.transposed: W's block holds W^T): offered for W @ x
    only; inner and outer are each other's inverse, keep every other block (an unused parameter's
    too), and the gradient at inner(theta) is Problem.point's at theta, in that layout."""
    p = problem(spec(model, "\n".join(RECOGNISED[model])))
    ev = BatchedEvaluator(p)
    t = ev.transposed()
    if "x @ W" in model:
        assert t is None
        return
    gen = torch.Generator().manual_seed(11)
    theta = p.theta0 + 0.3 * torch.randn(p.m, generator=gen, dtype=torch.float64)
    inner = t.inner(theta)
    assert torch.equal(t.outer(inner), theta)
    W = p.unflatten(theta)["W"]
    assert torch.equal(p.unflatten(inner)["W"].reshape(-1), W.T.reshape(-1))      # W^T, row-major
    other = torch.ones(p.m, dtype=torch.bool)
    other[ev._fast.slices["W"]] = False
    assert torch.equal(inner[other], theta[other])
    ref = p.point(theta)
    q = t.gradient(inner)
    assert rel(q.loss, ref.loss) <= 1e-12 and rel(q.grad_sqnorm, ref.grad_sqnorm) <= 1e-12
    assert float((t.outer(q.grad) - ref.grad).norm()) <= 1e-12 * float(ref.grad.norm())


@pytest.mark.parametrize("model", list(RECOGNISED), ids=lambda m: m.strip())
def test_recognised_models_give_problem_points_values(model):
    p = problem(spec(model, "\n".join(RECOGNISED[model])))
    ev = BatchedEvaluator(p)
    assert ev.path == f"two-layer {activation_of(model)}", ev.reason
    assert_rows_equal_pointwise(p, ev)
    if "unused" in "".join(RECOGNISED[model]):
        (q,) = ev.points(p.theta0[None])
        assert float(q.grad[-2:].abs().max()) == 0.0


@pytest.mark.parametrize("loss", ["logistic", "exponential"])
def test_other_losses_take_the_fast_path_with_the_tables_derivative(loss):
    y = "(x[:, 0] + 0.1) / abs(x[:, 0] + 0.1)"         # labels +-1
    p = problem(spec("sum(a * tanh(W @ x))", "\n".join((W_HD, A)), loss=loss, y=y))
    ev = BatchedEvaluator(p)
    assert ev.path == "two-layer tanh", ev.reason
    assert_rows_equal_pointwise(p, ev)


NOT_RECOGNISED = {
    # an activation of activations, a power
    "tanh of sigmoid": ("sum(a * tanh(sigmoid(W @ x)))", (W_HD, A), ""),
    "square": ("sum(a * (W @ x) ** 2)", (W_HD, A), ""),
    "scaled by a parameter": ("k * sum(a * tanh(W @ x))", (W_HD, A, "  k : [] = 2.0"), ""),
    "scaled inside the sum": ("sum(2 * a * tanh(W @ x))", (W_HD, A), ""),
    "sum with an axis": ("sum(a * tanh(W @ x), axis=0)", (W_HD, A), ""),
    "a from the data": ("sum(a * tanh(W @ x))", (W_HD,), "  a = normal(shape=[16], seed=5)\n"),
    "two outputs": ("A @ tanh(W @ x)", (W_HD, "  A : [2, 16] = normal(seed=2)"), ""),
    "a vector added": ("sum(a * tanh(W @ x + a))", (W_HD, A), ""),
    "deeper": ("sum(a * tanh(V @ tanh(W @ x)))", (W_HD, "  V : [16, 16] = normal(std=0.25, seed=6)", A), ""),
}


@pytest.mark.parametrize("key", list(NOT_RECOGNISED))
def test_other_models_keep_the_generic_path(key):
    model, params, data = NOT_RECOGNISED[key]
    y = "normal(shape=[12, 2], seed=9)" if key == "two outputs" else "sin(x[:, 0]) + 0.3 * x[:, 1]"
    p = problem(spec(model, "\n".join(params), y=y, data=data))
    assert TwoLayer.match(p, p.checked) is None
    ev = BatchedEvaluator(p)
    assert ev.path == "vmap", ev.reason
    assert_rows_equal_pointwise(p, ev)


def test_a_wrong_fast_path_is_caught_by_the_first_use_check(monkeypatch):
    p = problem(spec("sum(a * tanh(W @ x))", "\n".join((W_HD, A))))
    real = TwoLayer.forward_backward

    def wrong(self, th, x, losses_of):
        F, losses, G = real(self, th, x, losses_of)
        return F, losses, G * (1 + 1e-6)

    monkeypatch.setattr(TwoLayer, "forward_backward", wrong)
    ev = BatchedEvaluator(p)
    assert ev.path == "vmap"          # the fast path was dropped, the generic one checked and kept
    assert_rows_equal_pointwise(p, ev)


def test_float32_fast_path_is_an_estimate():
    p = problem(spec("sum(a * tanh(W @ x))", "\n".join((W_HD, A))))
    thetas = p.theta0 + 0.05 * torch.randn(3, p.m, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    ev32 = BatchedEvaluator(p, dtype=torch.float32)
    assert ev32.path == "two-layer tanh"
    for q32, theta in zip(ev32.points(thetas), thetas):
        assert rel(q32.rayleigh, p.point(theta).rayleigh) < 1e-4


def test_batch_size_does_not_change_a_fast_rows_values_beyond_rounding():
    p = problem(spec("sum(a * tanh(W @ x))", "\n".join((W_HD, A)), n=40))
    ev = BatchedEvaluator(p)
    thetas = p.theta0 + 0.05 * torch.randn(7, p.m, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    whole = ev.points(thetas)
    parts = ev.points(thetas[:3]) + ev.points(thetas[3:])
    for a, b in zip(whole, parts):
        assert rel(a.rayleigh, b.rayleigh) <= 1e-13 and rel(a.loss, b.loss) <= 1e-14


@pytest.mark.parametrize("act", ["tanh", "sigmoid"])
def test_saturated_units_keep_the_gradient_accurate(act):
    """Large weights push tanh to +-1 (sigmoid to 0 and 1), where the derivative is small: the fast
    path forms 1 - T^2 (and (1 - T) T) per element as autograd's backward does, so the gradient
    keeps its accuracy."""
    p = problem(spec(f"sum(a * {act}(W @ x))", "  W : [16, 3] = normal(std=8, seed=1)\n" + A))
    ev = BatchedEvaluator(p)
    assert ev.path == f"two-layer {act}"
    assert_rows_equal_pointwise(p, ev, scale=1.0)
    # saturated units are there: some derivatives below 1e-8
    W = p.theta0[:48].reshape(16, 3)
    T = getattr(torch, act)(p.x @ W.T)
    assert float((T * (1 - T) if act == "sigmoid" else 1 - T * T).min()) < 1e-8


def test_relu_at_a_zero_preactivation_has_autograds_derivative():
    """A hidden unit with W's row 0 has pre-activation exactly 0 on every sample: relu's backward
    takes its derivative there as 0 (threshold_backward on the result), and so must the fast path:
    that row of the gradient is 0 in both."""
    p = problem(spec("sum(a * relu(W @ x))", "\n".join((W_HD, A))))
    ev = BatchedEvaluator(p)
    assert ev.path == "two-layer relu"
    theta = p.theta0.clone()
    theta[:3] = 0.0                         # W's first row
    (q,) = ev.points(theta[None])
    ref = p.point(theta)
    assert float(ref.grad[:3].abs().max()) == 0.0 and float(q.grad[:3].abs().max()) == 0.0
    assert float((q.grad - ref.grad).norm()) <= 1e-12 * float(ref.grad.norm())
    assert rel(q.rayleigh, ref.rayleigh) <= 1e-12


@pytest.mark.parametrize("act", sorted(ACTIVATIONS))
def test_each_activations_derivative_is_autograds_bitwise(act):
    """The table's s'(Z), formed from the output T in T's memory, is the derivative autograd forms
    for the generic path, to the last bit (tanh: to rounding, its T is computed another way):
    saturated, zero and negative pre-activations included."""
    Z = torch.cat([torch.linspace(-40, 40, 801, dtype=torch.float64), torch.zeros(3, dtype=torch.float64),
                   torch.randn(200, generator=torch.Generator().manual_seed(0), dtype=torch.float64)])
    if act in ("sqrt", "log"):
        Z = Z.abs() + 1e-3                    # their domain
    Zg = Z.clone().requires_grad_(True)
    (expected,) = torch.autograd.grad(FUNCTIONS[act](Zg).sum(), Zg)
    entry = ACTIVATIONS[act]
    if entry.from_output and act == "tanh":
        # the fast path's tanh is 2 sigmoid(2 Z) - 1 (faster): within 3 ulp of 1 of numpy's
        # tanh, and its derivative (autograd's kernel for 1 - T^2, on that T) within 1e-15 of
        # autograd's on the generic path
        T = Z.clone()
        entry.apply_(T)
        assert float((T - torch.from_numpy(np.tanh(Z.numpy()))).abs().max()) <= 3.5e-16
        assert float((entry.derivative(T) - expected).abs().max()) <= 1e-15
    elif entry.from_output:
        T = Z.clone()
        entry.apply_(T)
        assert torch.equal(T, FUNCTIONS[act](Z))
        assert torch.equal(entry.derivative(T), expected)
    else:
        assert torch.equal(entry.derivative(Z.clone()), expected)


def test_the_table_covers_the_languages_elementwise_functions():
    """Every function the shape checker types as elementwise has a fast-path entry."""
    from certifier.check.shapes import _ELEMENTWISE, SHAPE_RULES

    assert set(ACTIVATIONS) == {k for k, rule in SHAPE_RULES.items() if rule is _ELEMENTWISE}


@pytest.mark.parametrize("model", ["sum(a * tanh(W @ x))", "a @ relu(W @ x + b) + c", "sum(a * softplus(x @ W))"])
def test_the_evaluators_one_theta_point_is_problem_points(model):
    """BatchedEvaluator.point (the sequential descent from theta0 calls it) takes the fast path once
    the first-use check has passed: Problem.point's values to rounding."""
    params = {"sum(a * tanh(W @ x))": (W_HD, A), "a @ relu(W @ x + b) + c": (W_HD, BIAS, A, C),
              "sum(a * softplus(x @ W))": (W_DH, A)}[model]
    p = problem(spec(model, "\n".join(params)))
    ev = BatchedEvaluator(p)
    gen = torch.Generator().manual_seed(3)
    for theta in p.theta0 + 0.3 * torch.randn(4, p.m, generator=gen, dtype=torch.float64):
        q, ref = ev.point(theta), p.point(theta)
        assert rel(q.loss, ref.loss) <= 1e-12 and rel(q.rayleigh, ref.rayleigh) <= 1e-12
        assert rel(q.grad_sqnorm, ref.grad_sqnorm) <= 1e-12 and rel(q.sample_max, ref.sample_max) <= 1e-12
        assert float((q.grad - ref.grad).norm()) <= 1e-12 * float(ref.grad.norm())
        # the witness's step: the same forward and backward, without R
        s = ev.gradient(theta)
        assert (s.loss, s.grad_sqnorm) == (q.loss, q.grad_sqnorm) and torch.equal(s.grad, q.grad)
    assert ev.path.startswith("two-layer ")


def test_the_evaluators_one_theta_point_off_the_fast_path_is_problem_point_itself():
    p = problem(spec("sum(a * tanh(V @ tanh(W @ x)))", "\n".join((W_HD, "  V : [16, 16] = normal(std=0.25, seed=6)", A))))
    ev = BatchedEvaluator(p)
    q, ref = ev.point(p.theta0), p.point(p.theta0)
    assert ev.path == "vmap"
    s = ev.gradient(p.theta0)
    assert (s.loss, s.rayleigh, s.grad_sqnorm) == (ref.loss, ref.rayleigh, ref.grad_sqnorm)
    assert (q.loss, q.rayleigh, q.grad_sqnorm, q.sample_max) == (ref.loss, ref.rayleigh, ref.grad_sqnorm, ref.sample_max)
    assert torch.equal(q.grad, ref.grad)


@pytest.mark.parametrize("model", list(RECOGNISED), ids=lambda m: m.strip())
def test_written_out_jacobian_and_kernel_products_are_autograds(model):
    """J, J^T v and J w of the fast path against torch.func.jacrev of the model's own outputs."""
    p = problem(spec(model, "\n".join(RECOGNISED[model])))
    fast = BatchedEvaluator(p).two_layer()
    assert fast is not None
    gen = torch.Generator().manual_seed(11)
    theta = p.theta0 + 0.2 * torch.randn(p.m, generator=gen, dtype=torch.float64)
    ref = torch.func.jacrev(lambda t: p.outputs(t).reshape(-1))(theta)
    J = fast.jacobian(theta, p.x)
    assert J.shape == ref.shape == (p.n, p.m)
    assert float((J - ref).abs().max()) <= 1e-13 * (1 + float(ref.abs().max()))
    jt, j = fast.kernel_products(theta, p.x)
    v = torch.randn(p.n, generator=gen, dtype=torch.float64)
    w = torch.randn(p.m, generator=gen, dtype=torch.float64)
    assert torch.allclose(jt(v), ref.T @ v, rtol=1e-12, atol=1e-13)
    assert torch.allclose(j(w), ref @ w, rtol=1e-12, atol=1e-13)
    K = fast.gram(theta, p.x)                                      # J J^T without J
    assert torch.allclose(K, ref @ ref.T, rtol=1e-12, atol=1e-12 * float((ref @ ref.T).abs().max()))
    lam = float(torch.linalg.eigvalsh(ref @ ref.T / p.n)[0])
    assert abs(lambda_min(p, theta, "formed") - lam) <= 1e-10 * float((ref @ ref.T / p.n).abs().max())


def test_the_fast_paths_tangent_kernel_imports_no_sympy():
    """The flow's J and the kernel's lambda_min on the fast path need no autograd with
    grad_outputs, whose first call imports torch.fx's symbolic shapes and sympy (issue 21)."""
    import subprocess
    import sys
    code = ("import sys\nfrom certifier.check import check\nfrom certifier.parse import parse\n"
            "from certifier.compile.problem import Problem\n"
            "from certifier.compile.kernel import lambda_min, jacobian\n"
            f"p = Problem(check(parse({spec('a @ tanh(W @ x + b) + c', chr(10).join((W_HD, BIAS, A, C)))!r}, 't')), 'cpu')\n"
            "jacobian(p, p.theta0); lambda_min(p, p.theta0, 'formed'); lambda_min(p, p.theta0, 'lanczos')\n"
            "print('sympy' in sys.modules, 'torch.fx.experimental.symbolic_shapes' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


@pytest.mark.parametrize("model", [m for m in RECOGNISED if activation_of(m) in
                                   ("tanh", "sigmoid", "relu", "exp", "softplus", "sin", "cos")],
                         ids=lambda m: m.strip())
def test_the_written_out_gradient_of_log_r_is_autograds(model, monkeypatch):
    """log R and its gradient by the written-out Hessian-vector product (TwoLayer.log_rayleigh_grad)
    against autograd's double backward through the same batch, far from theta0 too."""
    from certifier.compile.two_layer import SECOND
    p = problem(spec(model, "\n".join(RECOGNISED[model])))
    ev = BatchedEvaluator(p)
    assert activation_of(model) in SECOND and ev.two_layer() is not None
    calls = []
    real = ev._fast_log_rayleigh
    monkeypatch.setattr(ev, "_fast_log_rayleigh", lambda th: calls.append(1) or real(th))
    gen = torch.Generator().manual_seed(5)
    thetas = p.theta0 + 0.8 * torch.randn(4, p.m, generator=gen, dtype=torch.float64)
    for theta, (L, log_r, d, _) in zip(thetas, ev.log_rayleigh_and_grad(thetas)):
        rL, r_log_r, rd, _ = p.log_rayleigh_and_grad(theta)
        assert rel(L, rL) <= 1e-12 and abs(log_r - r_log_r) <= 1e-11
        assert float((d - rd).norm()) <= 1e-10 * float(rd.norm())
    assert calls


@pytest.mark.parametrize("model", ["a @ tanh(W @ x + b) + c", "sum(a * softplus(W @ x))", "sum(a * tanh(x @ W))"])
def test_work_buffers_are_reused_and_no_result_is_one_of_them(model):
    """The fast path's [B, n, h] work buffers (TwoLayer.work) are taken once, at the largest batch,
    and reused by smaller ones; what a call returns is its own: a later call leaves it unchanged,
    and it equals a fresh evaluator's bitwise."""
    text = spec(model, "\n".join(RECOGNISED[model]), n=40)
    p = problem(text)
    ev = BatchedEvaluator(p)
    fast = ev.two_layer()
    gen = torch.Generator().manual_seed(3)
    thetas = p.theta0 + 0.3 * torch.randn(7, p.m, generator=gen, dtype=torch.float64)
    points, logs = ev.points(thetas), ev.log_rayleigh_and_grad(thetas)
    kept = [(q.grad.clone(), d.clone()) for q, (_, _, d, _) in zip(points, logs)]
    buffers = {tag: t.data_ptr() for tag, t in fast.work.flat.items()}
    assert {"Z", "G", "P"} <= set(buffers)
    ev.points(thetas[:3])
    ev.log_rayleigh_and_grad(thetas[2:6])
    ev.points(-thetas[:1])
    assert {tag: t.data_ptr() for tag, t in fast.work.flat.items()} == buffers
    for q, (_, _, d, _), (g0, d0) in zip(points, logs, kept):
        assert torch.equal(q.grad, g0) and torch.equal(d, d0)
    fresh = BatchedEvaluator(problem(text))
    for q, r in zip(points, fresh.points(thetas)):
        assert (q.loss, q.rayleigh) == (r.loss, r.rayleigh) and torch.equal(q.grad, r.grad)


def test_threads_sharing_an_evaluator_each_have_their_own_buffers():
    """dask's threads share one problem (and its evaluator): two threads evaluating different
    batches at once give the values each gives alone."""
    import threading

    p = problem(spec("a @ tanh(W @ x + b) + c", "\n".join(RECOGNISED["a @ tanh(W @ x + b) + c"]), n=64))
    ev = BatchedEvaluator(p)
    assert ev.two_layer() is not None
    gen = torch.Generator().manual_seed(4)
    batches = [p.theta0 + s * torch.randn(5, p.m, generator=gen, dtype=torch.float64) for s in (0.2, 1.0)]
    alone = [[q.rayleigh for q in ev.points(t)] + [lr for _, lr, _, _ in ev.log_rayleigh_and_grad(t)] for t in batches]
    out: dict[int, list] = {}

    def work(k: int) -> None:
        out[k] = [[q.rayleigh for q in ev.points(batches[k])]
                  + [lr for _, lr, _, _ in ev.log_rayleigh_and_grad(batches[k])] for _ in range(30)]

    threads = [threading.Thread(target=work, args=(k,)) for k in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(rows == alone[k] for k in (0, 1) for rows in out[k])
