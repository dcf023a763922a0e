"""The spec's model evaluated over the whole data at once (compile/model.py, issue 21): its outputs,
L, grad L and R against independent computations (a Python loop over the samples of the language's
per-sample evaluator, and torch.func.vmap of it, the evaluation this replaced), on MLPs with biases,
several outputs, every elementwise function, indexing, sums and data of several dimensions; the
batched evaluator's generic path (one theta at a time or vmapped over theta) against Problem.point;
the fallback to vmap where a rule is missing or wrong; and the generic path's Jacobian and tangent
kernel (compile/kernel.py) against torch.func.jacrev and eigvalsh, without importing sympy."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from certifier.check import check
from certifier.compile import kernel
from certifier.compile import model as model_module
from certifier.compile.batched import BatchedEvaluator
from certifier.compile.problem import Problem
from certifier.language.evaluate import evaluate
from certifier.parse import parse

ROOT = Path(__file__).resolve().parent.parent


pytestmark = pytest.mark.usefixtures("one_thread")     # tests/conftest.py


def spec(model: str, params: list[str], data: str = "", x: str = "normal(shape=[7, 3], seed=0)",
         y: str = "sin(x[:, 0])", loss: str = "least_squares") -> str:
    return (f'spec "over the data"\ndata {{\n  x = {x}\n  y = {y}\n{data}}}\nparams {{\n' + "\n".join(params)
            + f"\n}}\nmodel f(x) = {model}\nloss {loss}\nregion ball(center=init, radius=auto)\n"
            "method sampled(samples=64, seed=0)\ncertify rate(floor=0, horizon=100)\n")


def P(name: str, shape: str, seed: int, std: float = 0.5) -> str:
    return f"  {name} : {shape} = normal(std={std}, seed={seed})"


CASES = {
    "mlp with biases": spec("sum(a * tanh(W2 @ tanh(W1 @ x + b1) + b2))",
                            [P("W1", "[5, 3]", 1), P("b1", "[5]", 2), P("W2", "[4, 5]", 3), P("b2", "[4]", 4),
                             P("a", "[4]", 5)]),
    "3-layer relu mlp": spec("sum(a * relu(W3 @ relu(W2 @ relu(W1 @ x))))",
                             [P("W1", "[6, 3]", 1), P("W2", "[6, 6]", 2), P("W3", "[5, 6]", 3), P("a", "[5]", 4)]),
    "several outputs": spec("V @ sigmoid(W @ x) + c", [P("W", "[5, 3]", 1), P("V", "[3, 5]", 2), P("c", "[3]", 3)],
                            y="normal(shape=[7, 3], seed=9)"),
    "softmax classes": spec("W2 @ softplus(W @ x)", [P("W", "[5, 3]", 1), P("W2", "[3, 5]", 2)],
                            y="[0, 1, 2, 0, 1, 2, 0]", loss="cross_entropy"),
    "logistic": spec("a @ tanh(x @ W) + w @ x", [P("W", "[3, 6]", 1), P("a", "[6]", 2), P("w", "[3]", 3)],
                     y="[1, -1, 1, 1, -1, -1, 1]", loss="logistic"),
    "elementwise functions": spec(
        "sum(a * (exp(-abs(W @ x)) + sin(W @ x) * cos(x[0]) + sqrt(1 + relu(W @ x)) + log(2 + tanh(W @ x)))) / 3 - w ** 2",
        [P("W", "[5, 3]", 1), P("a", "[5]", 2), P("w", "[]", 3)]),
    "indexing": spec("w[0] * x[2] + sum(w[1:3] * x[0:2]) + tanh(W @ x)[1] * x[-1]", [P("w", "[4]", 1), P("W", "[3, 3]", 2)]),
    "sums over axes": spec("sum(mean(M * x, axis=1) * v) + logsumexp(M @ x) + sum(softmax(M @ x, axis=0) * v)",
                           [P("M", "[4, 3]", 1), P("v", "[4]", 2)]),
    "matrix samples": spec("sum(a * tanh(W @ x)) + sum(c * x[1]) + sum(x @ v) + sum(u @ x) + sum(W @ x @ v)",
                           [P("W", "[4, 2]", 1), P("a", "[4, 3]", 2), P("v", "[3]", 3), P("u", "[2]", 4)],
                           data="  c = normal(shape=[3], seed=5)\n", x="normal(shape=[7, 2, 3], seed=0)",
                           y="x[:, 0, 0]"),
    "stacked weights": spec("sum(T @ x) + sum(x @ S) + sum(a * sigmoid(W @ (x - mu)))",
                            [P("T", "[2, 4, 3]", 1), P("S", "[2, 3, 4]", 2), P("W", "[5, 3]", 3), P("a", "[5]", 4)],
                            data="  mu = normal(shape=[3], seed=6)\n"),
    "powers and quotients": spec("sum((W @ x) ** 2 / (1 + a * a)) - x[0] / (1 + w * w)",
                                 [P("W", "[4, 3]", 1), P("a", "[4]", 2), P("w", "[]", 3)]),
    "no sample dependence": spec("sum(w * w)", [P("w", "[3]", 1)]),
}


def problem(text: str) -> Problem:
    return Problem(check(parse(text, "<over the data>")), "cpu")


def thetas(p: Problem, count: int = 2, scale: float = 0.3) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(7)
    return [p.theta0] + [p.theta0 + scale * torch.randn(p.m, generator=gen, dtype=torch.float64)
                         for _ in range(count)]


def env_of(p: Problem, theta: torch.Tensor) -> dict:
    env = dict(p.constants)
    env.update(p.unflatten(theta))
    return env


def loop_outputs(p: Problem, theta: torch.Tensor) -> torch.Tensor:
    """The model one sample at a time by the language's evaluator: neither vmap nor over_data."""
    body, arg = p.checked.spec.model.body, p.checked.spec.model.arg
    env = env_of(p, theta)
    return torch.stack([evaluate(body, {**env, arg: p.x[i]}) for i in range(p.n)])


def vmap_outputs(p: Problem):
    """The evaluation this replaced: the per-sample model vmapped over the data."""
    body, arg = p.checked.spec.model.body, p.checked.spec.model.arg
    return torch.func.vmap(lambda th, xi: evaluate(body, {**env_of(p, th), arg: xi}), in_dims=(None, 0))


def reference_point(p: Problem, theta: torch.Tensor, outputs) -> tuple[float, torch.Tensor, float]:
    """L, grad L and R = ||grad L||^2 / ||g||_D^2 by autograd through `outputs` and the loss table."""
    th = theta.detach().requires_grad_(True)
    F = outputs(th)
    L = p.loss_def.value(F, p.y)
    (g,) = torch.autograd.grad(L, th)
    gnorm = float(p.loss_def.grad_sqnorm(F.detach(), p.y, L.detach()))
    return float(L.detach()), g, float(g @ g) / gnorm


def rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(a), abs(b), 1e-300)


def assert_point(q, L: float, g: torch.Tensor, R: float, tol: float = 1e-12) -> None:
    assert rel(q.loss, L) <= tol and rel(q.rayleigh, R) <= tol
    assert float((q.grad - g).norm()) <= tol * float(g.norm())


@pytest.mark.parametrize("name", CASES)
def test_outputs_over_the_data_equal_a_loop_over_the_samples(name):
    p = problem(CASES[name])
    assert p._outputs.how == "data", p._outputs.reason
    for theta in thetas(p):
        F, ref = p.outputs(theta), loop_outputs(p, theta)
        assert F.shape == ref.shape == (p.n,) + tuple(p.checked.output_shape)
        assert torch.allclose(F, ref, rtol=1e-12, atol=1e-14 * float(ref.abs().max()))


@pytest.mark.parametrize("name", CASES)
def test_point_equals_autograd_through_the_per_sample_evaluations(name):
    """Problem.point (the model over the data) against autograd through the loop over samples and
    through the per-sample model vmapped over the data (the previous evaluation), 1e-12."""
    p = problem(CASES[name])
    vmapped = vmap_outputs(p)
    for theta in thetas(p):
        q = p.point(theta)
        assert_point(q, *reference_point(p, theta, lambda t: loop_outputs(p, t)))
        assert_point(q, *reference_point(p, theta, lambda t: vmapped(t, p.x)))


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("rows", [False, True])
def test_generic_batched_path_equals_point(name, rows, monkeypatch):
    """The batched evaluator's generic path, one theta at a time (`rows`) or vmapped over theta,
    for points and for the gradient of log R, against Problem.point and autograd's log R."""
    from certifier.compile import batched

    monkeypatch.setattr(batched, "ROWS_FROM", 0 if rows else 2**62)
    p = problem(CASES[name])
    ev = BatchedEvaluator(p, fast=False)
    assert ev.path == ("rows" if rows else "vmap"), ev.reason
    th = torch.stack(thetas(p, 3))
    for theta, q, (L, log_r, d, smax) in zip(th, ev.points(th), ev.log_rayleigh_and_grad(th)):
        ref = p.point(theta)
        assert_point(q, ref.loss, ref.grad, ref.rayleigh)
        assert q.sample_max == pytest.approx(ref.sample_max, rel=1e-12)
        rL, r_log_r, rd, _ = p.log_rayleigh_and_grad(theta)
        assert rel(L, rL) <= 1e-12 and abs(log_r - r_log_r) <= 1e-12 * max(1.0, abs(r_log_r))
        assert float((d - rd).norm()) <= 1e-10 * float(rd.norm())


def test_rows_only_for_large_activations_on_one_thread():
    p = problem(spec("sum(a * tanh(W2 @ tanh(W1 @ x)))", [P("W1", "[128, 3]", 1), P("W2", "[128, 128]", 2),
                                                             P("a", "[128]", 3)], x="normal(shape=[512, 3], seed=0)"))
    ev = BatchedEvaluator(p)
    assert ev.activation_bytes() >= 768 * 2**10 and ev.path == "rows"
    torch.set_num_threads(2)
    assert BatchedEvaluator(p).path == "vmap"
    torch.set_num_threads(1)
    assert BatchedEvaluator(problem(CASES["mlp with biases"])).path == "vmap"     # small activations


def test_a_wrong_rule_is_caught_and_the_model_vmapped(monkeypatch):
    """A rule that is off (here: W @ x by a relative 1e-6) is caught at construction, at the
    perturbed point where theta0's zero output layer hides it, and the model is vmapped."""
    right = model_module._matmul
    monkeypatch.setattr(model_module, "_matmul", lambda a, ba, b, bb: (right(a, ba, b, bb)[0] * (1 + 1e-6), True)
                        if ba or bb else right(a, ba, b, bb))
    p = problem(spec("sum(a * tanh(W @ x))", [P("W", "[5, 3]", 1), "  a : [5] = 0"]))
    assert p._outputs.how == "vmap" and "differs" in p._outputs.reason
    theta = thetas(p)[1]
    assert torch.allclose(p.outputs(theta), loop_outputs(p, theta), rtol=1e-12, atol=1e-15)

    def missing(a, ba, b, bb):
        raise model_module.NoRule("operator matmul")
    monkeypatch.setattr(model_module, "_matmul", missing)
    p = problem(CASES["mlp with biases"])
    assert p._outputs.how == "vmap" and "no rule" in p._outputs.reason
    assert_point(p.point(theta := thetas(p)[1]), *reference_point(p, theta, lambda t: loop_outputs(p, t)))


def test_tanh_by_sigmoid_is_torchs_tanh_to_a_few_ulp_with_its_derivatives():
    """_Tanh (2 sigmoid(2 z) - 1, where the model is not vmapped over theta) against torch.tanh on
    tiny, moderate and saturated arguments: values within 4 ulp of 1, first derivatives (backward and
    forward mode) within 1e-15 and second derivatives (double backward, torch.func.hessian) within 4e-15
    and 1e-14."""
    tanh = model_module._Tanh.apply
    z = torch.cat([torch.tensor([0.0, 1e-300, -1e-12, 1e-8, 0.5, -3.0, 19.0, 20.0, -25.0, 400.0]),
                   torch.linspace(-8, 8, 1001)]).to(torch.float64)
    assert float((tanh(z) - torch.tanh(z)).abs().max()) <= 4 * 2.0**-52
    zr = z.clone().requires_grad_(True)
    (d1,) = torch.autograd.grad(tanh(zr).sum(), zr, create_graph=True)
    (d2,) = torch.autograd.grad(d1.sum(), zr)
    t = torch.tanh(z)
    assert torch.allclose(d1, 1 - t * t, rtol=0, atol=1e-15)
    assert torch.allclose(d2, -2 * t * (1 - t * t), rtol=0, atol=4e-15)
    _, forward = torch.func.jvp(tanh, (z,), (torch.ones_like(z),))
    assert torch.allclose(forward, 1 - t * t, rtol=0, atol=1e-15)
    w = torch.linspace(-1, 1, 7, dtype=torch.float64)
    H = torch.func.hessian(lambda v: tanh(v * z[10:17]).sum())(w)
    Hr = torch.func.hessian(lambda v: torch.tanh(v * z[10:17]).sum())(w)
    assert torch.allclose(H, Hr, rtol=0, atol=1e-14)


def test_the_form_vmapped_over_theta_gives_the_same_outputs():
    """The outputs the batched evaluator vmaps over theta (torch.tanh) against Problem's (_Tanh)."""
    p = problem(CASES["mlp with biases"])
    over_theta = p._outputs.over_theta
    assert over_theta is not p._outputs
    for theta in thetas(p):
        a, b = p.outputs(theta), over_theta(theta, p.x)
        assert torch.allclose(a, b, rtol=1e-13, atol=1e-15 * float(b.abs().max()))
    batched = torch.func.vmap(over_theta, in_dims=(0, None))(torch.stack(thetas(p)), p.x)
    assert torch.allclose(batched, torch.stack([loop_outputs(p, t) for t in thetas(p)]), rtol=1e-12, atol=1e-15)


def test_float32_evaluator_evaluates_over_the_data():
    p = problem(CASES["mlp with biases"])
    ev = BatchedEvaluator(p, dtype=torch.float32)
    th = torch.stack(thetas(p))
    assert ev.path == "vmap", ev.reason
    for q, theta in zip(ev.points(th), th):
        assert rel(q.rayleigh, p.point(theta).rayleigh) <= 1e-4


# --- the generic path's Jacobian and tangent kernel ------------------------------------------------

KERNEL_CASES = ["mlp with biases", "3-layer relu mlp", "several outputs", "softmax classes", "matrix samples"]


@pytest.mark.parametrize("name", KERNEL_CASES)
def test_jacobian_and_kernel_equal_jacrev_and_eigvalsh(name):
    """J row by row (scalar backward passes) against torch.func.jacrev of the per-sample model
    vmapped over the data; lambda_min of K = J J^T / n, formed and by Lanczos, against numpy's
    eigvalsh of that J's kernel; K v by the kernel operator against J (J^T v) / n."""
    from certifier.compile.kernel import KernelOperator, lambda_min_formed, lambda_min_lanczos

    p = problem(CASES[name].replace("[7, ", "[5, ").replace("[0, 1, 2, 0, 1, 2, 0]", "[0, 1, 2, 0, 1]")
                .replace("[1, -1, 1, 1, -1, -1, 1]", "[1, -1, 1, 1, -1]"))
    assert p.kernel_applicable() and evaluator_path(p) != "two-layer"
    vmapped = vmap_outputs(p)
    for theta in thetas(p, 1):
        ref = torch.func.jacrev(lambda t: vmapped(t, p.x).reshape(-1))(theta)
        J = kernel.jacobian(p, theta)
        assert torch.allclose(J, ref, rtol=1e-12, atol=1e-14 * float(ref.abs().max()))
        Jn = ref.numpy()
        eig = np.linalg.eigvalsh(Jn @ Jn.T / p.n)
        scale = float(eig[-1])
        assert lambda_min_formed(p, theta) == pytest.approx(eig[0], rel=1e-10, abs=1e-12 * scale)
        lam, products = lambda_min_lanczos(p, theta)
        assert products >= 1 and lam == pytest.approx(eig[0], rel=1e-8, abs=1e-11 * scale)
        v = torch.randn(p.n * p.k, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
        Kv = KernelOperator(p, theta).apply(v)
        assert torch.allclose(Kv, ref @ (ref.T @ v) / p.n, rtol=1e-12, atol=1e-13 * float(Kv.abs().max()))


def evaluator_path(p: Problem) -> str:
    from certifier.compile.batched import evaluator

    return evaluator(p).path.split(" ")[0]


MLP_SPEC = textwrap.dedent("""\
    spec "3-layer tanh MLP"
    data {
      x = normal(shape=[10, 3], seed=0)
      y = sin(x[:, 0]) + 0.5 * x[:, 1]
    }
    params {
      W1 : [12, 3]  = normal(std=1/sqrt(3), seed=1)
      W2 : [12, 12] = normal(std=1/sqrt(12), seed=2)
      a  : [12]     = normal(std=1/sqrt(12), seed=3)
    }
    model f(x) = sum(a * tanh(W2 @ tanh(W1 @ x)))
    loss least_squares
    region ball(center=init, radius=auto)
    method sampled(samples=256, seed=4)
    certify rate(floor=1e-3, horizon=1e4)
    """)


def test_a_run_on_a_non_two_layer_model_does_not_import_sympy(tmp_path):
    """A whole sampled run on a 3-layer MLP (the flow's Jacobian, the tangent kernel's lambda_min
    at theta0 and at the lowest points), then Lanczos' kernel products: no autograd call with a
    tensor grad_outputs, which imports torch.fx.experimental.symbolic_shapes and sympy (0.3 s)."""
    path = tmp_path / "mlp.rq"
    path.write_text(MLP_SPEC, encoding="utf-8")
    code = ("import sys; from certifier import pipeline; from certifier.compile import kernel; "
            "from certifier.compile.batched import evaluator; "
            "r = pipeline.run_file(sys.argv[1], pipeline.RunOptions(threads=1)); "
            "assert any(s.source == 'tangent-kernel' and s.points for s in r.mu_sources), r.mu_sources; "
            "from certifier.check import check; from certifier.parse import parse; "
            "from certifier.compile.problem import Problem; "
            "p = Problem(check(parse(open(sys.argv[1]).read(), sys.argv[1])), 'cpu'); "
            "assert evaluator(p).path in ('vmap', 'rows'), evaluator(p).path; "
            "kernel.lambda_min_lanczos(p, p.theta0); "
            "print(sorted(m for m in ('sympy', 'torch.fx.experimental.symbolic_shapes', 'torch._dynamo') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code, str(path)], cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
