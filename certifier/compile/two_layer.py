"""A fast path of the batched evaluator for two-layer networks (issue 7).

Recognised models (the spec's own `model f(x) = ...`, never a Python module):

    sum(a * s(W @ x))   sum(s(W @ x) * a)   a @ s(W @ x)

for an activation s of the table ACTIVATIONS (every elementwise function of the language: tanh,
sigmoid, relu, softplus, exp, log, sin, cos, sqrt, abs), with `x @ W` (W of
shape [d, h]) in place of `W @ x` (W of shape [h, d]), an optional bias `W @ x + b` (b of shape
[h]), an optional constant scale of the output layer (`/ sqrt(h)`, `/ 16`, `2 * ...`: the NTK
parameterisation) and an optional scalar `+ c`; a, W, b, c parameters, x the model's argument, data x of shape
[n, d], one output per sample. Anything else returns None from `match` and the evaluator keeps
its generic path (the model vmapped over theta).

Why a fast path: on the reference network (width 1024, d = 32, n = 256) the generic path spends
most of its time in elementwise passes over the [B, n, h] hidden activations: tanh, tanh_backward,
`a * .` forward and backward, the sums. Here, for B thetas at once,

    forward    Z = x W^T (one batched product), T = s(Z), F = T a (matrix-vector)
    loss       r = d(sum_b L_b)/dF by autograd on F alone ([B, n], any loss of the table), or
               in closed form where the table declares it (least squares)
    backward   da = T^T r, S = s'(Z) (from T or Z), db = a * (S^T r), dc = sum r,
               dW = a * (x^T diag(r) S)^T  (one batched product, K = n)

so the only passes over [B, n, h] are s and s' (in place);
`a * .`, the sums and the activation's backward become matrix-vector products or disappear.
Each activation declares, in ACTIVATIONS, its forward and its derivative as autograd forms it
(tanh_backward's 1 - T^2, sigmoid_backward's (1 - T) T, relu's threshold_backward, exp's T,
softplus_backward, cos Z for sin, ...), in place: from the output T where autograd saves the
output, from Z (kept beside T, which doubles the memory of a batch) where it saves the input.
Only the summation order and tanh (computed as 2 sigmoid(2 Z) - 1, faster) differ from the
generic path (rows agree with Problem.point to about 1e-15; the evaluator's first-use check
still compares with Problem.point and falls back on any difference beyond 1e-9).

Second derivatives (log R and its gradient) use `outputs`, the same forward written with
differentiable operations (a matrix-vector product in place of `a * .` and the sum), and
autograd.
"""
from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field, replace
from typing import Callable

import torch

from ..language.ast import Expr
from ..language.evaluate import FUNCTIONS, evaluate, is_constant


@dataclass(frozen=True)
class Activation:
    """An activation s of the fast path and its derivative, formed as autograd's backward of s
    forms it with an incoming gradient of 1 (so the fast path's s' is autograd's, bitwise).

    from_output: `apply_(Z)` overwrites Z with T = s(Z) and `derivative(T)` overwrites T with
    s'(Z) (tanh, sigmoid, relu, exp, sqrt: autograd saves their result). Otherwise (softplus,
    sin, cos, abs, log: autograd saves the input) T = s(Z) is a new tensor and `derivative(Z)`
    overwrites Z. The differentiable s, for second derivatives, is the language's own
    (language/evaluate.py)."""
    derivative: Callable[[torch.Tensor], torch.Tensor]
    apply_: Callable[[torch.Tensor], torch.Tensor] | None = None    # None: s' needs Z, keep it

    @property
    def from_output(self) -> bool:
        return self.apply_ is not None


def _ones_like(T: torch.Tensor) -> torch.Tensor:
    return torch.ones((), dtype=T.dtype, device=T.device).expand_as(T)


def _backward_kernel(op, *args):
    """s' in place by autograd's own backward kernel `op(grad, saved, *args)`, grad = 1."""
    return lambda t: op(_ones_like(t), t, *args, grad_input=t)


def _tanh_(Z: torch.Tensor) -> torch.Tensor:
    """tanh in place as 2 sigmoid(2 Z) - 1 (an identity): this torch build's float64 tanh costs
    four times its sigmoid on the AMD EPYC of docs/performance.md, and the hidden activations'
    tanh was a third of each step of the descent from theta0. Error at most 3 ulp of 1 (3.3e-16
    absolute, measured against numpy's tanh); near Z = 0 that is large relative to T but small
    next to F's own rounding, which sums h such terms (rows still agree with Problem.point to
    about 1e-15, tests/test_two_layer.py)."""
    return Z.mul_(2.0).sigmoid_().mul_(2.0).sub_(1.0)


# Each entry: autograd's derivative formula of the function, on what autograd saves for it.
ACTIVATIONS: dict[str, Activation] = {
    "tanh": Activation(_backward_kernel(torch.ops.aten.tanh_backward.grad_input), _tanh_),   # 1 - T^2
    "sigmoid": Activation(_backward_kernel(torch.ops.aten.sigmoid_backward.grad_input), torch.Tensor.sigmoid_),  # (1 - T) T
    "relu": Activation(_backward_kernel(torch.ops.aten.threshold_backward.grad_input, 0.0), torch.Tensor.relu_),  # T > 0
    "exp": Activation(lambda T: T, torch.Tensor.exp_),                           # grad * result
    "sqrt": Activation(lambda T: T.mul_(2.0).reciprocal_(), torch.Tensor.sqrt_),  # grad / (2 result)
    # softplus with the language's beta = 1, threshold = 20 (torch's defaults, language/evaluate.py)
    "softplus": Activation(_backward_kernel(torch.ops.aten.softplus_backward.grad_input, 1.0, 20.0)),
    "sin": Activation(torch.Tensor.cos_),                                        # grad * cos(Z)
    "cos": Activation(lambda Z: Z.sin_().neg_()),                                 # grad * -sin(Z)
    "abs": Activation(torch.Tensor.sgn_),                                         # grad * sgn(Z)
    "log": Activation(torch.Tensor.reciprocal_),                                  # grad / Z
}


def _softplus_second(Z: torch.Tensor, T: torch.Tensor, buffer):
    S = torch.sigmoid(Z)                          # torch's softplus (beta 1, threshold 20): s = Z above 20
    S2 = S * (1.0 - S)
    above = Z > 20.0
    return S.masked_fill_(above, 1.0), S2.masked_fill_(above, 0.0)


def _tanh_second(Z, T, buffer):
    S = torch.mul(T, T, out=buffer("S")).neg_().add_(1.0)
    return S, torch.mul(T, S, out=buffer("S2")).mul_(-2.0)


def _sigmoid_second(Z, T, buffer):
    S = torch.neg(T, out=buffer("S")).add_(1.0).mul_(T)                  # (1 - T) T
    return S, torch.mul(T, -2.0, out=buffer("S2")).add_(1.0).mul_(S)     # (1 - 2 T) S


# (s'(Z), s''(Z)) from Z, T = s(Z) and buffer(tag) (a work buffer of Z's shape), for the
# written-out gradient of log R (log_rayleigh_grad); an activation missing here takes autograd's
# double backward
SECOND: dict[str, Callable] = {
    "tanh": _tanh_second,
    "sigmoid": _sigmoid_second,
    "relu": lambda Z, T, buffer: ((Z > 0).to(Z.dtype), torch.zeros_like(Z)),   # autograd's relu'' is 0
    "exp": lambda Z, T, buffer: (T, T),
    "softplus": _softplus_second,
    "sin": lambda Z, T, buffer: (torch.cos(Z), -T),
    "cos": lambda Z, T, buffer: (-torch.sin(Z), -T),
}


class _Work(threading.local):
    """The fast path's work buffers ([B, n, h] activations and their products), one set per
    thread (dask's threads share a problem), each a flat tensor that grows to the largest batch
    and is viewed at the size of each call. Allocating them afresh each call left the heap of a
    long search fragmented: the peak RSS of the same run varied 370-650 MB with Python's hash seed
    (n = 256, width 256; docs/performance.md). A view never leaves the call that takes it."""

    def __init__(self):
        self.flat: dict[str, torch.Tensor] = {}

    def get(self, tag: str, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        count = math.prod(shape)
        buf = self.flat.get(tag)
        if buf is None or buf.numel() < count or buf.dtype != like.dtype or buf.device != like.device:
            self.flat.pop(tag, None)
            buf = self.flat[tag] = torch.empty(count, dtype=like.dtype, device=like.device)
        return buf[:count].view(shape)


def _name(e: Expr) -> str | None:
    return e.attrs.get("id") if e.op == "name" else None


def _plain_call(e: Expr, func: str) -> Expr | None:
    """The single argument of `func(arg)` without keywords, else None."""
    if e.op == "call" and e.attrs.get("func") == func and len(e.args) == 1 and not e.kwargs:
        return e.args[0]
    return None


def _split_add(e: Expr, names: set[str]) -> tuple[Expr, str | None]:
    """e = core + p or p + core with p a name in `names` -> (core, p); else (e, None)."""
    if e.op == "add" and len(e.args) == 2:
        left, right = e.args
        if _name(right) in names and _name(left) not in names:
            return left, _name(right)
        if _name(left) in names and _name(right) not in names:
            return right, _name(left)
    return e, None


def _split_scale(e: Expr) -> tuple[Expr, str | None, float]:
    """e = core / k, core * k or k * core with k a constant expression -> (core, 'div' | 'mul', k);
    else (e, None, 1.0). k is evaluated as the model's evaluator evaluates it (a number: the model
    admits no lists, E109, so a constant expression there is a scalar)."""
    if e.op in ("div", "mul") and len(e.args) == 2:
        left, right = e.args
        if is_constant(right) and not is_constant(left):
            return left, e.op, float(evaluate(right, {}))
        if e.op == "mul" and is_constant(left) and not is_constant(right):
            return right, "mul", float(evaluate(left, {}))
    return e, None, 1.0


def _xw(x: torch.Tensor, W: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """x @ W_b for each b ([n, d] @ [B, d, h]) as one bmm on W's own strides: torch.matmul
    broadcasts x by copying W first (B = 8, n = 16, h = 4096, one thread: 1.76 against 1.16 ms)."""
    return torch.bmm(x.unsqueeze(0).expand(W.shape[0], -1, -1), W, out=out)


def _no_mark(step: str) -> None:
    """forward_backward's default: no timing."""


@dataclass
class TwoLayer:
    """F_b(x_i) = sum_j a_bj s((W_b x_i)_j + b_bj) + c_b for B parameter vectors theta_b."""

    slices: dict[str, slice]      # parameter role ('W', 'a', 'b', 'c') -> its slice of theta
    h: int
    d: int
    w_first: bool                 # W @ x (W [h, d]); False: x @ W (W [d, h])
    unused: tuple[slice, ...] = ()   # parameters the model does not use (their gradient is 0)
    activation: str = "tanh"      # a key of ACTIVATIONS
    scale: tuple[str, float] | None = None   # ('div', k): F = (T a) / k + c; ('mul', k): k (T a) + c
    work: _Work = field(default_factory=_Work, repr=False, compare=False)

    def _buffer(self, th: torch.Tensor, n: int):
        """buffer(tag) -> this thread's [B, n, h] work buffer `tag` for the batch th."""
        shape = (th.shape[0], n, self.h)
        return lambda tag: self.work.get(tag, shape, th)

    @property
    def _act(self) -> Activation:
        return ACTIVATIONS[self.activation]

    # --------------------------------------------------------------------------------------
    @classmethod
    def match(cls, problem, checked) -> "TwoLayer | None":
        """The fast path for this problem's model, or None when the model is not of the form."""
        if getattr(checked, "model_module", None) is not None or getattr(problem, "_closed_form", None) is not None:
            return None
        model = getattr(getattr(checked, "spec", None), "model", None)
        if model is None or tuple(getattr(checked, "output_shape", (None,))) != ():
            return None
        x = problem.x
        if x.dim() != 2 or problem.y.dim() != 1 or problem.y.shape[0] != x.shape[0]:
            return None
        arg = model.arg
        shapes = dict(zip(problem.names, problem.shapes))
        params = {k for k in shapes if k != arg}
        core, c = _split_add(model.body, {k for k in params if shapes[k] == ()})
        core, scale_op, k = _split_scale(core)
        # the output layer: sum(a * H), sum(H * a) or a @ H
        a = hidden = None
        inner = _plain_call(core, "sum")
        if inner is not None and inner.op == "mul" and len(inner.args) == 2:
            left, right = inner.args
            if _name(left) in params and _name(right) is None:
                a, hidden = _name(left), right
            elif _name(right) in params and _name(left) is None:
                a, hidden = _name(right), left
        elif core.op == "matmul" and len(core.args) == 2 and _name(core.args[0]) in params:
            a, hidden = _name(core.args[0]), core.args[1]
        if a is None or len(shapes[a]) != 1:
            return None
        h = shapes[a][0]
        act = next((f for f in ACTIVATIONS if _plain_call(hidden, f) is not None), None)
        if act is None:
            return None
        pre = _plain_call(hidden, act)
        pre, b = _split_add(pre, {k for k in params if shapes[k] == (h,)})
        if pre.op != "matmul" or len(pre.args) != 2:
            return None
        left, right = (_name(t) for t in pre.args)
        d = x.shape[1]
        if left in params and right == arg and shapes[left] == (h, d):
            W, w_first = left, True
        elif left == arg and right in params and shapes[right] == (d, h):
            W, w_first = right, False
        else:
            return None
        roles = {"W": W, "a": a, "b": b, "c": c}
        used = [v for v in roles.values() if v is not None]
        if len(set(used)) != len(used):
            return None
        offsets, i = {}, 0
        for name, size in zip(problem.names, problem.sizes):
            offsets[name] = slice(i, i + size)
            i += size
        unused = tuple(offsets[name] for name in problem.names if name not in used)
        return cls({role: offsets[name] for role, name in roles.items() if name is not None}, int(h), int(d), w_first,
                   unused, act, (scale_op, k) if scale_op else None)

    def chunk(self, n: int, itemsize: int, memory: int, most: int) -> int:
        """Thetas per batch: the hidden activations [n, h] of one theta three times (s and s' are in
        place; matrix products and copies around them), four times where Z is kept beside T, and
        four vectors of m (theta, its gradient, dW before it is copied in, a copy of W), within
        `memory` bytes: 9 on the reference network (n = 256, h = 1024, 64 MiB), 7 with Z kept,
        near the best batch bench/ measured (docs/performance.md, "Batch size of the fast path");
        11 at n = 16, h = 4096, where theta and its gradient dominate."""
        copies = 3 if self._act.from_output else 4
        m = sum(s.stop - s.start for s in (*self.slices.values(), *self.unused))
        return int(max(1, min(most, memory // (copies * n * self.h * itemsize + 4 * m * itemsize + 1))))

    # --------------------------------------------------------------------------------------
    def transposed(self) -> "TwoLayer":
        """The same network over thetas whose W block holds W's transpose (for W @ x, W^T [d, h]
        in place of W [h, d]: the model x @ W^T). Its products of W's gradient are in the faster
        orientation ([d, n] @ [n, h], 2 to 3 times faster than [h, n] @ [n, d] on this machine's
        float64 MKL; docs/performance.md, "The witness in W's transposed layout"); a descent that
        runs many steps from one theta pays two transposed copies (flip) for it."""
        return replace(self, w_first=not self.w_first, work=_Work())

    def flip(self, theta: torch.Tensor) -> torch.Tensor:
        """theta [m] (or [B, m]) with W's block transposed: from this layout to transposed()'s.
        A new tensor; the other blocks are copied as they are."""
        W = self.slices["W"]
        rows, cols = (self.h, self.d) if self.w_first else (self.d, self.h)
        out = theta.clone()
        lead = theta.shape[:-1]
        out[..., W] = theta[..., W].reshape(*lead, rows, cols).transpose(-1, -2).reshape(*lead, rows * cols)
        return out

    def _parts(self, th: torch.Tensor):
        B = th.shape[0]
        W = th[:, self.slices["W"]]
        W = W.reshape(B, self.h, self.d).transpose(1, 2) if self.w_first else W.reshape(B, self.d, self.h)
        a = th[:, self.slices["a"]]
        b = th[:, self.slices["b"]] if "b" in self.slices else None
        c = th[:, self.slices["c"]] if "c" in self.slices else None
        return W, a, b, c            # W as [B, d, h]: Z = x @ W

    def outputs(self, th: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """F [B, n], differentiable (autograd, second derivatives included)."""
        W, a, b, c = self._parts(th)
        Z = torch.matmul(x, W)
        if b is not None:
            Z = Z + b.unsqueeze(1)
        F = self._scaled(torch.bmm(a.unsqueeze(1), FUNCTIONS[self.activation](Z).transpose(1, 2)).squeeze(1))
        return F + c if c is not None else F

    def _scaled(self, t: torch.Tensor) -> torch.Tensor:
        """t / k or t * k as the model writes its scale: F from T a, and the chain rule's r / k,
        r k (autograd's backward of a division by a constant is grad / k)."""
        if self.scale is None:
            return t
        op, k = self.scale
        return t / k if op == "div" else t * k

    # --------------------------------------------------------------------------------------
    # J at one theta, written out: the flow's linearised steps and the tangent kernel need J, and
    # autograd's batched vector-Jacobian products (grad_outputs given) import torch.fx's symbolic
    # shapes and sympy on their first call (0.3 s of a small run, docs/performance.md).
    @torch.no_grad()
    def _hidden(self, theta: torch.Tensor, x: torch.Tensor):
        """(a [h], T = s(Z) [n, h], S = s'(Z) [n, h]) at one theta."""
        W, a, b, _ = self._parts(theta.reshape(1, -1))
        Z = torch.matmul(x, W[0])
        if b is not None:
            Z += b[0]
        act = self._act
        if act.from_output:
            T = act.apply_(Z)
            S = act.derivative(T.clone())
        else:
            T = FUNCTIONS[self.activation](Z)
            S = act.derivative(Z)
        return a[0], T, S

    @torch.no_grad()
    def jacobian(self, theta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """J [n, m] = dF/dtheta at one theta (F's scale applied as the model writes it)."""
        a, T, S = self._hidden(theta, x)
        n = x.shape[0]
        J = torch.zeros(n, theta.numel(), dtype=theta.dtype, device=theta.device)
        J[:, self.slices["a"]] = self._scaled(T)
        aS = self._scaled(S * a)                                    # dF/dZ, [n, h]
        if "b" in self.slices:
            J[:, self.slices["b"]] = aS
        if "c" in self.slices:
            J[:, self.slices["c"]] = 1.0
        JW = J[:, self.slices["W"]]
        if self.w_first:
            JW.view(n, self.h, self.d).copy_(aS.unsqueeze(2) * x.unsqueeze(1))
        else:
            JW.view(n, self.d, self.h).copy_(x.unsqueeze(2) * aS.unsqueeze(1))
        return J

    @torch.no_grad()
    def gram(self, theta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """J J^T [n, n] at one theta without forming J (n m doubles: 277 MB at n = 256 and
        m = 135 168, three times plain descent's whole footprint): row i of J is (s T_i for a,
        u_i = s a S_i for b, u_i x_i^T for W, 1 for c), so
        J J^T = s^2 T T^T + (u u^T) * (x x^T [+ 1 with b]) [+ 1 with c]."""
        a, T, S = self._hidden(theta, x)
        Ta, aS = self._scaled(T), self._scaled(S * a)
        G = x @ x.T
        if "b" in self.slices:
            G += 1.0
        K = (aS @ aS.T).mul_(G).add_(Ta @ Ta.T)
        if "c" in self.slices:
            K += 1.0
        return K

    def kernel_products(self, theta: torch.Tensor, x: torch.Tensor):
        """(J^T v, J w) as functions at one theta, J never formed (the tangent kernel's Lanczos)."""
        a, T, S = self._hidden(theta, x)
        aS = self._scaled(S * a)
        m = theta.numel()

        @torch.no_grad()
        def jt(v: torch.Tensor) -> torch.Tensor:            # J^T v, v [n]
            out = torch.zeros(m, dtype=theta.dtype, device=theta.device)
            out[self.slices["a"]] = self._scaled(T.T @ v)
            g = aS.T @ v if "b" in self.slices else None
            if g is not None:
                out[self.slices["b"]] = g
            if "c" in self.slices:
                out[self.slices["c"]] = v.sum()
            M = x.T @ (aS * v.unsqueeze(1))                   # [d, h]
            out[self.slices["W"]] = (M.T if self.w_first else M).reshape(-1)
            return out

        @torch.no_grad()
        def j(w: torch.Tensor) -> torch.Tensor:             # J w, w [m]
            Wd = w[self.slices["W"]]
            Wd = Wd.reshape(self.h, self.d).T if self.w_first else Wd.reshape(self.d, self.h)
            Zd = x @ Wd
            if "b" in self.slices:
                Zd = Zd + w[self.slices["b"]]
            out = self._scaled(T @ w[self.slices["a"]]) + (aS * Zd).sum(dim=1)
            if "c" in self.slices:
                out = out + w[self.slices["c"]]
            return out

        return jt, j

    # --------------------------------------------------------------------------------------
    # log R and its gradient written out (the adversarial search's step): autograd's double
    # backward through the [B, n, h] activations took 13 batched products and 19 multiplications
    # a call; this takes 4 products. With the loss's derivatives in F by autograd on F alone,
    #   g = J^T r,  Hg = J^T (d2l . Jg) + sum_i r_i (d2F_i) g,  log R = log|g|^2 - log||g||_D^2,
    #   grad log R = 2 Hg / |g|^2 - J^T q,   q = d log||g||_D^2 / dF.
    @property
    def has_second(self) -> bool:
        return self.activation in SECOND

    def log_rayleigh_grad(self, th: torch.Tensor, x: torch.Tensor, losses_of, gnorm_of):
        """(F [B, n], L [B], |g|^2 [B], ||g||_D^2 [B], log R [B], grad log R [B, m]) for B thetas;
        losses_of(F) -> [B] and gnorm_of(F, L) -> [B] are differentiable functions of F (the
        loss table's, vmapped over rows)."""
        W, a, b, c = self._parts(th)
        buffer = self._buffer(th, x.shape[0])
        with torch.no_grad():
            Z = _xw(x, W, out=buffer("Z"))                          # [B, n, h]
            if b is not None:
                Z += b.unsqueeze(1)
            # tanh's s' and s'' are functions of T alone: T takes Z's place
            T = _tanh_(Z) if self.activation == "tanh" else FUNCTIONS[self.activation](Z)
            S, S2 = SECOND[self.activation](Z, T, buffer)
            F = self._scaled(torch.bmm(a.unsqueeze(1), T.transpose(1, 2)).squeeze(1))
            if c is not None:
                F += c
        Fl = F.requires_grad_(True)
        losses = losses_of(Fl)
        (r,) = torch.autograd.grad(losses.sum(), Fl, create_graph=True)
        gn = gnorm_of(Fl, losses)
        with torch.no_grad():
            G, dW = self._jt(th, x, a, T, S, r.detach(), buffer)
            _, da, db, dc = self._parts(G)
            # |g|^2 a dot a block and row (no [B, m] temporary); unused blocks are 0
            gsq = torch.stack([dW[i].reshape(-1) @ dW[i].reshape(-1)
                               + sum(G[i, s] @ G[i, s] for k, s in self.slices.items() if k != "W")
                               for i in range(G.shape[0])])
            Zd = _xw(x, dW, out=buffer("Zd"))                       # J g, through Z
            if db is not None:
                Zd += db.unsqueeze(1)
            SZd = torch.mul(S, Zd, out=buffer("SZd"))
            Jg = self._scaled(torch.bmm(T, da.unsqueeze(2)).squeeze(2) + torch.bmm(SZd, a.unsqueeze(2)).squeeze(2))
            if dc is not None:
                Jg += dc
        (w,) = torch.autograd.grad((r * Jg).sum(), Fl, retain_graph=True)     # d2l . Jg
        (q,) = torch.autograd.grad(torch.log(gn).sum(), Fl)
        with torch.no_grad():
            inv = (2.0 / gsq).unsqueeze(1)
            u = inv * w - q                                          # J^T u: first-order part
            rho = self._scaled(inv * r.detach())                     # weights of the second-order part
            us = self._scaled(u)
            D = self._unset(th)
            D[:, self.slices["a"]] = (torch.bmm(us.unsqueeze(1), T) + torch.bmm(rho.unsqueeze(1), SZd)).squeeze(1)
            if "c" in self.slices:
                D[:, self.slices["c"]] = u.sum(dim=1, keepdim=True)
            # dF/dZ weights of both parts, so that W's gradient is one product: x^T P
            # (S2 may be S or T itself: exp's s'' = s' = s; never written in place)
            # (Zd and SZd are not read again: their buffers take the products)
            P = torch.mul(S, da.unsqueeze(1), out=buffer("P")).addcmul_(Zd.mul_(S2), a.unsqueeze(1))
            P.mul_(rho.unsqueeze(2)).addcmul_(torch.mul(S, us.unsqueeze(2), out=SZd), a.unsqueeze(1))   # [B, n, h]
            if b is not None:
                D[:, self.slices["b"]] = P.sum(dim=1)
            self._set_w(D, P, x)
            logs = torch.log(gsq) - torch.log(gn.detach())
        return F.detach(), losses.detach(), gsq, gn.detach(), logs, D

    def _unset(self, th, out=None):
        """A [B, m] gradient to be written block by block (new, or `out`): the unused parameters'
        blocks are 0, the others left for the caller (no pass zeroing the whole of it)."""
        out = torch.empty_like(th) if out is None else out
        for s in self.unused:
            out[:, s] = 0.0
        return out

    def _jt(self, th, x, a, T, S, v, buffer):
        """J^T v for B thetas, v [B, n] (T, S: s(Z) and s'(Z) of those thetas), in this thread's
        work buffers (not to leave log_rayleigh_grad): (out [B, m] with every block but W's, W's
        block as [B, d, h]). Only log_rayleigh_grad reads it, and only through x @ dW and |dW|^2,
        so W's block is formed as [B, d, h] whatever W's layout: for W [h, d] (W @ x) that product
        runs about twice as fast as one written in W's layout (docs/performance.md, "n = 16, width
        4096 once more")."""
        out = self._unset(th, self.work.get("G", tuple(th.shape), th))
        vs = self._scaled(v)
        out[:, self.slices["a"]] = torch.bmm(vs.unsqueeze(1), T).squeeze(1)
        if "c" in self.slices:
            out[:, self.slices["c"]] = v.sum(dim=1, keepdim=True)
        VS = torch.mul(S, vs.unsqueeze(2), out=buffer("VS")).mul_(a.unsqueeze(1))   # [B, n, h]: dF/dZ weights
        if "b" in self.slices:
            out[:, self.slices["b"]] = VS.sum(dim=1)
        B = th.shape[0]
        dW = self.work.get("GT", (B, self.d, self.h), th) if self.w_first else \
            out[:, self.slices["W"]].view(B, self.d, self.h)
        torch.bmm(x.T.unsqueeze(0).expand(B, -1, -1), VS, out=dW)
        return out, dW

    def _set_w(self, out, P, x):
        """out's W block = x^T P (P [B, n, h]) in W's own layout."""
        B = P.shape[0]
        GW = out[:, self.slices["W"]]
        if self.w_first:
            self._w_layout(P.transpose(1, 2), x.unsqueeze(0).expand(B, -1, -1), GW.view(B, self.h, self.d))
        else:
            torch.bmm(x.T.unsqueeze(0).expand(B, -1, -1), P, out=GW.view(B, self.d, self.h))

    def _w_layout(self, St: torch.Tensor, xr: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """out = St @ xr ([B, h, n] @ [B, n, d] -> [B, h, d], W [h, d]'s own layout; out may be
        W's block of a [B, m] gradient: bmm writes on its strides). With few samples the product in
        this orientation is faster; from about 32 samples (a one-off timing, one thread: n = 64,
        h = 1024, B = 8: 2.4 against 1.5 ms) the [B, d, h] product (in this thread's work buffer)
        and a transposed copy are."""
        if St.shape[2] < 32:
            return torch.bmm(St, xr, out=out)
        B, h, d = out.shape
        product = torch.bmm(xr.transpose(1, 2), St.transpose(1, 2), out=self.work.get("WT", (B, d, h), out))
        return out.copy_(product.transpose(1, 2))

    @torch.no_grad()
    def forward_backward(self, th: torch.Tensor, x: torch.Tensor, losses_of, mark=None, derivative=None):
        """(F [B, n], the row losses [B], gradients [B, m]) without autograd's graph over the
        hidden activations; losses_of(F) -> [B] is the loss of each row, derivative(F) -> [B, n]
        its derivative in F in closed form (the loss table's), else autograd's on F. mark(step),
        when given, is called after each step (bench/steps.py times them)."""
        mark = mark or _no_mark
        B = th.shape[0]
        W, a, b, c = self._parts(th)
        buffer = self._buffer(th, x.shape[0])
        # Z, then T and S in its place; with an activation whose s' needs Z, T is a new tensor
        Z = _xw(x, W, out=buffer("Z"))                              # [B, n, h]
        if b is not None:
            Z += b.unsqueeze(1)
        mark("forward product")
        act = self._act
        T = act.apply_(Z) if act.from_output else FUNCTIONS[self.activation](Z)
        mark("activation")
        F = self._scaled(torch.bmm(a.unsqueeze(1), T.transpose(1, 2)).squeeze(1))   # [B, n]
        if c is not None:
            F += c
        mark("F = T a")
        if derivative is not None:
            losses, r = losses_of(F), derivative(F)
        else:
            with torch.enable_grad():
                Fl = F.detach().requires_grad_(True)
                losses = losses_of(Fl)
                (r,) = torch.autograd.grad(losses.sum(), Fl)
        rc = r                                                       # dL/dc
        r = self._scaled(r)                                          # dL/d(T a)
        mark("loss and r")
        G = self._unset(th)
        G[:, self.slices["a"]] = torch.bmm(r.unsqueeze(1), T).squeeze(1)
        if c is not None:
            G[:, self.slices["c"]] = rc.sum(dim=1, keepdim=True)
        mark("da = T^T r")
        S = act.derivative(T if act.from_output else Z)             # s'(Z), in place
        mark("S = s'(Z)")
        if b is not None:
            G[:, self.slices["b"]] = torch.bmm(r.unsqueeze(1), S).squeeze(1) * a
        xr = x.T.unsqueeze(0) * r.unsqueeze(1)                       # [B, d, n]: x^T diag(r)
        GW = G[:, self.slices["W"]]
        # the product written into W's block of G on its strides (no [B, m] temporary and copy)
        if self.w_first:
            self._w_layout(S.transpose(1, 2), xr.transpose(1, 2), GW.view(B, self.h, self.d)).mul_(a.unsqueeze(2))
        else:
            torch.bmm(xr, S, out=GW.view(B, self.d, self.h)).mul_(a.unsqueeze(1))
        mark("backward product")
        return F, losses.detach(), G
