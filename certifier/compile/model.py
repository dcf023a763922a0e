"""The model abstraction Problem builds on: a function outputs(theta, x) -> [n, *output_shape]
of the flat parameter vector theta and the whole batch x.

Two kinds: the spec's own `model f(x) = expr` and a Python module, `model torch("package.module:Name")`
(language/torch_modules.py loads it, compile/torch_model.py runs it through
torch.func.functional_call). Problem's methods (point, grad, ...) and compile/kernel.py work on
either.

The spec's model is written for one sample. It is evaluated over the whole data at once
(`over_data`): every value carries whether it depends on the sample (then its last dimension is
the samples'), and each rule writes the per-sample operation as one operation on the data: a
per-sample `W @ x` becomes W X, one matrix product with the data's samples as columns, a
per-sample `sum(a * t)` the vector-matrix product a T, a per-sample `sum(v)` a sum over every
dimension but the last. torch.func.vmap over the samples gives the same values, but its products
of a weight matrix with the vmapped sample ran 2.5 times slower on the bench's 3-layer MLP
(docs/performance.md). Where a rule is missing or the two disagree at the check in ast_outputs,
the model is vmapped over the samples as before.
"""
from __future__ import annotations

import math

import torch
from torch.func import vmap

from ..language.evaluate import CONSTANTS, DTYPE, FUNCTIONS, OPERATORS, constant_int, evaluate, subscript
from ..language.primitives import ELEMENTWISE
from .torch_model import torch_outputs

# relative agreement of the two evaluations required at construction (their sums run in another
# order: about 1e-16 of the outputs' scale in float64)
AGREEMENT = {torch.float64: 1e-10}
AGREEMENT_OTHER = 1e-4


class _Tanh(torch.autograd.Function):
    """tanh(z) as 2 sigmoid(2 z) - 1 (an identity), the two-layer fast path's: this torch build's
    float64 tanh costs three times the four passes of this form on the AMD EPYC of
    docs/performance.md (0.34 against 0.12 ms for [256, 256], one thread), and it was a seventh
    of a 3-layer MLP's R. Error at most 3 ulp of 1 (compile/two_layer.py); near z = 0 that is
    large relative to tanh z but small next to the rounding of the sums the value enters. The
    derivative is autograd's own tanh_backward from the output. Used where the model is not
    vmapped over theta (there torch.tanh is faster: this Function's generated vmap rule costs
    more than it saves)."""
    generate_vmap_rule = True

    @staticmethod
    def forward(z):
        return z.mul(2.0).sigmoid_().mul_(2.0).sub_(1.0)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(output)
        ctx.save_for_forward(output)

    @staticmethod
    def backward(ctx, grad):
        (t,) = ctx.saved_tensors
        return torch.ops.aten.tanh_backward(grad, t)

    @staticmethod
    def jvp(ctx, tangent):
        (t,) = ctx.saved_tensors
        return torch.ops.aten.tanh_backward(tangent, t)


FAST_FUNCTIONS = {**FUNCTIONS, "tanh": _Tanh.apply}


class NoRule(Exception):
    """The data-batched evaluation has no rule for this operation (the model is then vmapped)."""


def _per_sample_rank(v: torch.Tensor, batched: bool) -> int:
    return v.dim() - 1 if batched else v.dim()


def _elementwise(rule, values):
    """An elementwise operation on per-sample values: an unbatched operand gets a trailing
    dimension of 1 for the samples' (a scalar broadcasts as it is); from the right, torch's
    broadcasting then pairs the per-sample dimensions as the per-sample operation would."""
    if not any(b for _, b in values):
        return rule(*(v for v, _ in values)), False
    return rule(*(v if b or v.dim() == 0 else v.unsqueeze(-1) for v, b in values)), True


def _matmul(a: torch.Tensor, ba: bool, b: torch.Tensor, bb: bool) -> tuple[torch.Tensor, bool]:
    """Per-sample a @ b, with torch.matmul's semantics for the per-sample shapes (1-D operands
    are vectors, leading dimensions broadcast)."""
    if not (ba or bb):
        return torch.matmul(a, b), False
    ra, rb = _per_sample_rank(a, ba), _per_sample_rank(b, bb)
    if ra == 0 or rb == 0:
        raise NoRule("'@' of a scalar")
    if not ba and rb == 1:
        # W @ x, w @ x for every sample: W X, w X with the samples as X's columns, one product
        return torch.matmul(a, b), True
    if not bb and ra == 1:
        # x @ w, x @ W for every sample: w X, W^T X
        return torch.matmul(b if rb == 1 else b.mT, a), True
    if ra == 1 and rb == 1:
        return (a * b).sum(0), True
    # per-sample matrices: the samples' dimension first, as torch.matmul's batch dimension
    out, _ = _matmul_first(a.movedim(-1, 0) if ba else a, ba, b.movedim(-1, 0) if bb else b, bb)
    return out.movedim(0, -1), True


def _lift(v: torch.Tensor, rank: int) -> torch.Tensor:
    """A value with the samples' dimension first, [n, *s], as [n, 1, ..., 1, *s] with `rank`
    per-sample dimensions (for torch.matmul's broadcasting of the leading dimensions)."""
    extra = rank - (v.dim() - 1)
    return v.reshape(v.shape[:1] + (1,) * extra + v.shape[1:]) if extra > 0 else v


def _matmul_first(a: torch.Tensor, ba: bool, b: torch.Tensor, bb: bool) -> tuple[torch.Tensor, bool]:
    """_matmul for operands with the samples' dimension first ([n, *s]), where one of them is a
    matrix or more for each sample."""
    ra, rb = _per_sample_rank(a, ba), _per_sample_rank(b, bb)
    if not ba:                                   # a weight times the sample
        return torch.matmul(a, _lift(b, ra)), True
    if not bb:                                   # the sample times a weight
        if ra == 1:
            return torch.matmul(a, b).movedim(-2, 0), True         # [..., n, r] -> [n, ..., r]
        return torch.matmul(_lift(a, rb), b), True
    if rb == 1:
        return torch.matmul(a, _lift(b.unsqueeze(-1), ra)).squeeze(-1), True
    if ra == 1:
        return torch.matmul(_lift(a.unsqueeze(-2), rb), b).squeeze(-2), True
    rank = max(ra, rb)
    return torch.matmul(_lift(a, rank), _lift(b, rank)), True


def _reduce(name: str, v: torch.Tensor, batched: bool, axis: int | None):
    if not batched:
        return FUNCTIONS[name](v, axis), False
    rank = v.dim() - 1
    if rank == 0:                                # a per-sample scalar: sum and mean keep it
        return v, True
    fn = torch.sum if name == "sum" else torch.mean
    return fn(v, dim=tuple(range(rank)) if axis is None else axis % rank), True


def _sum_of_product(u: tuple[torch.Tensor, bool], v: tuple[torch.Tensor, bool]):
    """Per-sample sum(a * T) of a weight a and a sample's T of a's shape: a T, one vector-matrix
    product over the data, instead of a product over [h, n] and a sum (two passes forward, two
    more backward)."""
    (a, ba), (b, bb) = u, v
    if ba and not bb:
        (a, ba), (b, bb) = (b, bb), (a, ba)
    if not ba and bb and a.dim() >= 1 and tuple(b.shape[:-1]) == tuple(a.shape):
        return torch.matmul(a.reshape(-1), b.reshape(-1, b.shape[-1])), True
    return _reduce("sum", *_elementwise(torch.mul, [u, v]), None)


def _softmax_family(name: str, v: torch.Tensor, batched: bool, axis: int):
    if not batched:
        return FUNCTIONS[name](v, axis), False
    rank = v.dim() - 1
    if rank == 0:                                # one entry per sample: softmax 1, logsumexp itself
        return (torch.ones_like(v) if name == "softmax" else v.clone()), True
    fn = torch.softmax if name == "softmax" else torch.logsumexp
    return fn(v, dim=axis % rank), True


def over_data(e, env: dict[str, torch.Tensor], batched: frozenset,
              functions: dict = FUNCTIONS) -> tuple[torch.Tensor, bool]:
    """Evaluate a per-sample expression for every sample at once. env maps names to tensors; the
    names in `batched` hold the samples' values along a last dimension ([*per-sample shape, n]:
    the data's samples as columns), the others are the same for every sample. Returns (value,
    whether it depends on the sample), a value that depends on it with the samples last. NoRule
    where an operation has no rule here. `functions`: the elementwise functions' torch
    implementations (FAST_FUNCTIONS: tanh by _Tanh)."""
    op = e.op
    if op == "number":
        return torch.tensor(float(e.attrs["value"]), dtype=DTYPE), False
    if op == "name":
        name = e.attrs["id"]
        if name in env:
            return env[name], name in batched
        return torch.tensor(CONSTANTS[name], dtype=DTYPE), False
    if op == "index":
        v, b = over_data(e.args[0], env, batched, functions)
        return v[tuple(subscript(s) for s in e.args[1:])], b      # the leading, per-sample dimensions
    if op == "call":
        func = e.attrs["func"]
        kwargs = {k: constant_int(v) for k, v in e.kwargs.items()}
        if func == "sum" and "axis" not in kwargs and e.args[0].op == "mul":
            return _sum_of_product(*(over_data(a, env, batched, functions) for a in e.args[0].args))
        args = [over_data(a, env, batched, functions) for a in e.args]
        if func in ELEMENTWISE:
            (v, b), = args
            return functions[func](v), b
        if func in ("sum", "mean"):
            return _reduce(func, *args[0], kwargs.get("axis"))
        if func in ("softmax", "logsumexp"):
            return _softmax_family(func, *args[0], kwargs.get("axis", -1))
        raise NoRule(f"function {func}")
    if op == "matmul":
        (a, ba), (b, bb) = (over_data(x, env, batched, functions) for x in e.args)
        return _matmul(a, ba, b, bb)
    if op in ("add", "sub", "mul", "div", "pow", "neg"):
        return _elementwise(OPERATORS[op], [over_data(a, env, batched, functions) for a in e.args])
    raise NoRule(f"operator {op}")


def _agree(a: torch.Tensor, b: torch.Tensor) -> bool:
    """The same shape and non-finite entries, the finite ones within AGREEMENT of b's scale."""
    if a.shape != b.shape:
        return False
    fa, fb = torch.isfinite(a), torch.isfinite(b)
    if not torch.equal(fa, fb):
        return False
    if not bool(fa.all()) and not torch.equal(a[~fa].nan_to_num(), b[~fb].nan_to_num()):
        return False
    if not bool(fa.any()):
        return True
    a, b = a[fa], b[fb]
    tol = AGREEMENT.get(b.dtype, AGREEMENT_OTHER)
    return float((a - b).abs().max()) <= tol * max(float(b.abs().max()), 1e-300)


def ast_outputs(problem, checked):
    """outputs(theta, x) of the spec's model: evaluated over the data at once (over_data) where
    that gives the per-sample model's values at theta0 and at a perturbed theta0 (checked once
    here, against torch.func.vmap of the per-sample evaluation), else that vmap. The function
    says which in its attribute `how` ('data' or 'vmap') and why in `reason`; its attribute
    `over_theta` is the same outputs for vmap over theta (torch's tanh, not _Tanh)."""
    body, arg = checked.spec.model.body, checked.spec.model.arg
    names = frozenset([arg])

    def env_of(theta: torch.Tensor, x: torch.Tensor) -> dict:
        env = dict(problem.constants)
        env.update(problem.unflatten(theta))
        env[arg] = x
        return env

    def one_sample(theta: torch.Tensor, xi: torch.Tensor) -> torch.Tensor:
        return evaluate(body, env_of(theta, xi))

    per_sample = vmap(one_sample, in_dims=(None, 0))

    def over(functions):
        def outputs(theta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
            # the samples as the last dimension: a per-sample W @ x is then W X, whose gradients
            # (G X^T for W, W^T G for X) come out in W's and X's own layouts, no strided copies
            value, depends = over_data(body, env_of(theta, x.movedim(0, -1)), names, functions)
            if not depends:           # the same outputs for every sample (vmap expands them too)
                return value.expand((x.shape[0],) + tuple(value.shape))
            return value.movedim(-1, 0)
        return outputs

    data = over(FAST_FUNCTIONS)
    reason = _check(problem, data, per_sample)
    if reason:
        per_sample.how, per_sample.reason, per_sample.over_theta = "vmap", reason, per_sample
        return per_sample
    data.how, data.reason, data.over_theta = "data", "", over(FUNCTIONS)
    return data


def _check(problem, data, per_sample) -> str:
    """'' when `data` gives per_sample's outputs at theta0 and at a perturbed theta0, else why not."""
    theta0, x = getattr(problem, "theta0", None), getattr(problem, "x", None)
    if theta0 is None or x is None:
        return "no theta0 to check the evaluation over the data"
    gen = torch.Generator().manual_seed(2024)
    delta = torch.randn(theta0.shape, generator=gen, dtype=torch.float64).to(theta0)
    scale = 0.1 * (1.0 + float(theta0.norm())) / math.sqrt(max(theta0.numel(), 1))
    try:
        with torch.no_grad():
            for theta in (theta0, theta0 + scale * delta):
                ref = per_sample(theta, x)
                try:
                    value = data(theta, x)
                except NoRule as exc:
                    return f"no rule over the data for {exc}"
                if not _agree(value, ref):
                    return "the evaluation over the data differs from the per-sample one"
    except Exception as exc:   # noqa: BLE001 - either evaluation failing: the per-sample vmap, as before
        return f"{type(exc).__name__}: {exc}"
    return ""


def model_outputs(problem, checked):
    """outputs(theta, x) for the checked spec's model, whichever its kind."""
    module = getattr(checked, "model_module", None)
    if module is not None:

        return torch_outputs(problem, module, checked.output_shape)
    return ast_outputs(problem, checked)
