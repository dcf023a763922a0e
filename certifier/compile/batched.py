"""Batched evaluation: L, grad L and R for B parameter vectors at once.

Problem.point evaluates one theta (the model over the whole data at once, compile/model.py). Here
the model is also vectorised over a batch of thetas, torch.func.vmap(outputs, in_dims=(0, None)),
so that W @ x for B stacked weight matrices becomes one large matrix product, and a single
backward pass of sum_b L(theta_b) gives every gradient at once: the losses of different thetas
are independent, so the gradient of the sum with respect to the stacked thetas has row b =
grad L(theta_b). (vmap over theta of torch.func.grad was also measured; bench/ reports both.)

Where one theta's activations are large and torch runs on one thread, the generic path takes the
batch one theta at a time instead (`rows`, Problem.point's own values): its operations are then
already large, and batching them only spreads each over B times the memory (docs/performance.md,
"The generic path: the model over the data").

Everything after the model's outputs uses Problem.point's functions (the loss table's value,
||g||_D^2 and per-sample losses, vmapped over the rows; g . g a dot per row), so a row differs from
Problem.point only in the order of its sums (tests/test_performance.py checks 1e-12); where vmap
cannot take a loss function, rows are computed one by one. The evaluator checks itself against
Problem.point at its first use and falls back to a loop over Problem.point for a model it cannot
batch (a population loss in closed form, a Python model vmap cannot trace, or a mismatch).

Memory: a batch keeps the autograd activations of B thetas. The activations of one theta are
measured once (saved_tensors_hooks) and the batch is cut into chunks that fit MEMORY bytes.

Two-layer networks (sum(a * tanh(W @ x)) and its variants, with any elementwise function of the
language in place of tanh; compile/two_layer.py) take a fast path: the forward and the backward
written out as batched matrix products with two elementwise passes (s and s', for tanh
1 - tanh^2) instead of autograd's graph of the vmapped model; the loss and its
derivative in F stay the table's. The first-use check covers it, and a mismatch turns it off
(the generic path is then checked in its turn). `path` says which path a batch takes.
"""
from __future__ import annotations

import math
import threading
from dataclasses import dataclass

import torch
from torch.func import vmap

from .model import model_outputs
from .problem import MIN_NORMAL, Point, gnorm_factors, log_rayleigh, plain_quotient, rayleigh_quotient
from .two_layer import TwoLayer

MEMORY = 64 * 2**20      # bytes per chunk (about 3 times the saved tensors, and the gradients): larger
MAX_CHUNK = 64           # chunks were slower in bench/ once the activations left the CPU caches
CHECK_TOLERANCE = 1e-9   # relative agreement with Problem.point required at the first use
ROWS_FROM = 768 * 2**10  # bytes of one theta's activations from which the generic path goes by rows
ROWS_THREADS = 1         # ... on at most this many torch threads


@dataclass
class Gradient:
    """L, grad L and |grad L|^2 at one theta: a Point without R and the per-sample losses."""

    loss: float
    grad: torch.Tensor
    grad_sqnorm: float


class _Cast:
    """The attributes of a Problem that compile/model.py reads, with tensors in another dtype."""

    def __init__(self, problem, dtype):
        self.constants = {k: v.to(dtype) if v.is_floating_point() else v for k, v in problem.constants.items()}
        self.unflatten = problem.unflatten
        self.device = problem.device
        self.theta0, self.x = problem.theta0.to(dtype), problem.x.to(dtype)   # model.py's check of its evaluation


class BatchedEvaluator:
    """points(thetas [B, m]) -> list of Point, log_rayleigh_and_grad(thetas) -> list of tuples,
    the same values as Problem.point / Problem.log_rayleigh_and_grad row by row.

    dtype: float64 (the default, the engine's) or float32 (bench/ only: R is then an estimate with
    relative errors around 1e-6, which the rounding-noise rules of the engine do not account for).
    fast=False keeps the generic path for a model the two-layer fast path recognises (bench/)."""

    def __init__(self, problem, dtype: torch.dtype | None = None, memory: int = MEMORY, fast: bool = True):
        self.problem = problem
        self.dtype = dtype or problem.theta0.dtype
        self.memory = memory
        self._lock = threading.Lock()
        self._checked: bool | None = None      # None: not yet checked; False: falls back to the loop
        self._chunk: int | None = None
        self.reason = ""                        # why batching is off, when it is
        self._batched = None
        self._fast: TwoLayer | None = None   # the two-layer fast path, when the model is one
        self._rows = False                   # the generic path one theta at a time (_by_rows)
        self._transposed: Transposed | None = None   # transposed(), made once
        # the loss, ||g||_D^2 and the per-sample losses of every row at once (loss functions
        # vmapped over the rows; row by row where vmap cannot take them, found at the first use)
        loss = problem.loss_def
        self._row_value = vmap(loss.value, in_dims=(0, None))
        self._row_per_sample = vmap(loss.per_sample, in_dims=(0, None))
        self._row_grad_sqnorm = vmap(loss.grad_sqnorm, in_dims=(0, None, 0))
        self._vector_rows = True
        # dL/dF of every row in closed form where the loss table declares it (the fast path)
        self._derivative = (lambda F: loss.derivative(F, self.y)) if loss.derivative is not None else None
        if getattr(problem, "_closed_form", None) is not None or getattr(problem, "_outputs", None) is None:
            self._checked, self.reason = False, "the loss is evaluated in closed form (no per-sample outputs)"
            return
        try:
            if self.dtype == problem.theta0.dtype:
                outputs = problem._outputs
                self.x, self.y = problem.x, problem.y
            else:
                if getattr(problem.checked, "model_module", None) is not None:
                    raise TypeError("a Python model is evaluated in float64 only")
                outputs = model_outputs(_Cast(problem, self.dtype), problem.checked)
                self.x, self.y = problem.x.to(self.dtype), problem.y.to(self.dtype)
            # the spec's model has a form for vmap over theta (torch's tanh: compile/model.py)
            self._batched = vmap(getattr(outputs, "over_theta", outputs), in_dims=(0, None))
            self._fast = TwoLayer.match(problem, problem.checked) if fast else None
        except Exception as exc:   # noqa: BLE001 - any failure means: evaluate point by point
            self._checked, self.reason = False, f"{type(exc).__name__}: {exc}"

    # ------------------------------------------------------------------------------------------
    @property
    def batched(self) -> bool:
        """True when batches are evaluated as such (after the first-use check)."""
        self._ensure_checked()
        return bool(self._checked)

    @property
    def path(self) -> str:
        """'two-layer tanh' (the fast path, named by its activation: 'two-layer relu', ...), 'vmap'
        (the model vmapped over theta), 'rows' (the generic path one theta at a time, _by_rows) or
        'loop' (one Problem.point per theta: batching is off)."""
        if not self.batched:
            return "loop"
        if self._fast is not None:
            return f"two-layer {self._fast.activation}"
        return "rows" if self._rows else "vmap"

    def two_layer(self) -> TwoLayer | None:
        """The two-layer fast path when batches take it (after the first-use check), else None."""
        if self._fast is None or not self.batched or self.dtype != self.problem.theta0.dtype:
            return None
        return self._fast

    def chunk_size(self) -> int:
        """How many thetas one batch evaluates (from the measured activations of one theta; on the
        fast path, from the bytes of its hidden activations)."""
        self._ensure_checked()
        return self._chunk or 1

    def activation_bytes(self) -> int:
        """Bytes autograd saves for one theta (0 when not measured)."""
        self._ensure_checked()
        return int(getattr(self, "_saved", 0))

    def points(self, thetas: torch.Tensor) -> list[Point]:
        thetas = self._as_batch(thetas)
        if not self.batched:
            return [self.problem.point(t) for t in thetas]
        out: list[Point] = []
        for chunk in torch.split(thetas, self.chunk_size()):
            out.extend(self._points(chunk))
        return out

    def point(self, theta: torch.Tensor) -> Point:
        """One theta, Problem.point's values. On the fast path (once the first-use check has passed)
        by its written-out forward and backward with the loss functions called on the one row, not
        vmapped over rows: faster than Problem.point on the two-layer example specs, and the
        sequential descent from theta0 calls it thousands of times (docs/performance.md, "The
        descent from θ0 on the fast path"). Elsewhere Problem.point itself (its batch-of-one
        overhead would make ours slower)."""
        if self._fast is None or not self.batched or self.dtype != self.problem.theta0.dtype:
            return self.problem.point(theta)
        loss = self.problem.loss_def
        F, L, G = self._one(theta)
        Fd, g = F[0], G[0]
        gnorm, gsq = float(loss.grad_sqnorm(Fd, self.y, L[0])), float(g @ g)
        R = rayleigh_quotient(g, gsq, gnorm, lambda: gnorm_factors(loss, Fd, self.y, L[0]))
        return Point(float(L[0]), R, g, gsq, float(loss.per_sample(Fd, self.y).max()))

    def gradient(self, theta: torch.Tensor) -> Gradient | Point:
        """L and grad L at one theta, for a descent that needs no more (the witness): on the fast
        path point()'s forward and backward without R and the per-sample losses (docs/performance.md,
        "The witness's step"); elsewhere Problem.point itself."""
        if self._fast is None or not self.batched or self.dtype != self.problem.theta0.dtype:
            return self.problem.point(theta)
        return self._gradient(theta)

    def transposed(self) -> "Transposed | None":
        """gradient() over thetas in the fast path's transposed layout (TwoLayer.transposed: W's
        block holds W^T), for a long descent from one theta, or None off the fast path and where
        W's own layout is already the faster one (x @ W)."""
        if self._fast is None or not self.batched or self.dtype != self.problem.theta0.dtype \
                or not self._fast.w_first:
            return None
        if self._transposed is None:     # kept: its work buffers (per thread) serve every later descent
            self._transposed = Transposed(self, self._fast.transposed())
        return self._transposed

    def _gradient(self, theta: torch.Tensor, fast: TwoLayer | None = None) -> Gradient:
        _, L, G = self._one(theta, fast)
        g = G[0]
        return Gradient(float(L[0]), g, float(g @ g))

    def _one(self, theta: torch.Tensor, fast: TwoLayer | None = None):
        """The fast path's (F, L, G) at one theta, the loss called on the one row (not vmapped)."""
        loss = self.problem.loss_def
        return (fast or self._fast).forward_backward(self._as_batch(theta), self.x,
                                                     lambda F: loss.value(F[0], self.y).reshape(1),
                                                     derivative=self._derivative)

    def log_rayleigh_and_grad(self, thetas: torch.Tensor) -> list[tuple[float, float, torch.Tensor, float]]:
        thetas = self._as_batch(thetas)
        if not self.batched:
            return [self.problem.log_rayleigh_and_grad(t) for t in thetas]
        out = []
        # the second derivative keeps about twice the activations
        for chunk in torch.split(thetas, max(1, self.chunk_size() // 2)):
            out.extend(self._log_rayleigh(chunk))
        return out

    # ------------------------------------------------------------------------------------------
    def _as_batch(self, thetas) -> torch.Tensor:
        if isinstance(thetas, (list, tuple)):
            thetas = torch.stack(list(thetas)) if thetas else torch.empty(0, self.problem.m)
        return thetas.detach().to(device=self.problem.device, dtype=self.dtype).reshape(-1, self.problem.m)

    def _forward(self, th: torch.Tensor, fast: bool = False):
        F = self._fast.outputs(th, self.x) if fast and self._fast is not None else self._batched(th, self.x)
        return F, self._losses(F)

    def _losses(self, F: torch.Tensor) -> torch.Tensor:
        """[B]: the loss of each row, loss.value(F[b], y) (vmapped over the rows, or row by row
        where the loss functions cannot be vmapped)."""
        if self._vector_rows:
            return self._row_value(F, self.y)
        loss = self.problem.loss_def
        return torch.stack([loss.value(F[b], self.y) for b in range(F.shape[0])])

    def _row_facts(self, Fd: torch.Tensor, L: torch.Tensor, G: torch.Tensor):
        """Per row: ||g||_D^2, g . g and the largest per-sample loss, as Python floats."""
        loss = self.problem.loss_def
        if self._vector_rows:
            gnorm = self._row_grad_sqnorm(Fd, self.y, L).tolist()
            smax = self._row_per_sample(Fd, self.y).reshape(Fd.shape[0], -1).amax(dim=1).tolist()
        else:
            gnorm = [float(loss.grad_sqnorm(Fd[b], self.y, L[b])) for b in range(Fd.shape[0])]
            smax = [float(loss.per_sample(Fd[b], self.y).max()) for b in range(Fd.shape[0])]
        # g . g row by row, as Problem.point (one BLAS dot each: no [B, m] temporary; faster than
        # vecdot on the bench's batches, docs/performance.md)
        return gnorm, [float(g @ g) for g in G], smax

    def _points(self, thetas: torch.Tensor, fast: TwoLayer | None = None) -> list[Point]:
        """fast: the fast path to take in place of self._fast (Transposed's layout)."""
        fast = fast or self._fast
        if fast is None and self._rows:
            return [self.problem.point(t) for t in thetas]
        if fast is not None:
            F, L, G = fast.forward_backward(thetas.detach(), self.x, self._losses, derivative=self._derivative)
        else:
            th = thetas.detach().requires_grad_(True)
            F, L = self._forward(th)
            (G,) = torch.autograd.grad(L.sum(), th)
        L, Fd = L.detach(), F.detach()
        gnorm, gsq, smax = self._row_facts(Fd, L, G)
        loss = self.problem.loss_def
        # Problem.point's quotient: the plain gs / gn, scaled where it over- or underflows
        return [Point(Lb, rayleigh_quotient(G[b], gs, gn, lambda b=b: gnorm_factors(loss, Fd[b], self.y, L[b])),
                      G[b], gs, sm)
                for b, (Lb, gn, gs, sm) in enumerate(zip(L.tolist(), gnorm, gsq, smax))]

    def _log_rayleigh(self, thetas: torch.Tensor):
        loss = self.problem.loss_def
        if self._fast is None and self._rows:
            return [self.problem.log_rayleigh_and_grad(t) for t in thetas]
        if self._fast is not None and self._fast.has_second and self._vector_rows:
            out = self._fast_log_rayleigh(thetas.detach())
            if out is not None:
                return out
        th = thetas.detach().requires_grad_(True)
        F, L = self._forward(th, fast=True)
        (G,) = torch.autograd.grad(L.sum(), th, create_graph=True)
        if self._vector_rows:
            gnorm = self._row_grad_sqnorm(F, self.y, L)
        else:
            gnorm = torch.stack([loss.grad_sqnorm(F[b], self.y, L[b]) for b in range(F.shape[0])])
        gg = torch.linalg.vecdot(G, G)
        logs = torch.log(gg) - torch.log(gnorm)
        bad = [b for b, (gs, gn) in enumerate(zip(gg.detach().tolist(), gnorm.detach().tolist()))
               if not plain_quotient(gs, gn, G[b])]
        if bad:   # rows whose ||grad L||^2 or ||g||_D^2 over- or underflows: Problem's scaled log R
            logs = torch.stack([log_rayleigh(G[b], gnorm[b], lambda b=b: gnorm_factors(loss, F[b], self.y, L[b]))
                                if b in bad else logs[b] for b in range(G.shape[0])])
        (D,) = torch.autograd.grad(logs.sum(), th)
        _, _, smax = self._row_facts(F.detach(), L.detach(), D)
        return [(Lb, lr, D[b], sm) for b, (Lb, lr, sm) in enumerate(zip(L.detach().tolist(), logs.detach().tolist(), smax))]

    def _fast_log_rayleigh(self, th: torch.Tensor, fast: TwoLayer | None = None):
        """The two-layer fast path's written-out log R and gradient (compile/two_layer.py), or None
        where a row's quotient over- or underflows (autograd's path then scales it)."""
        F, L, gsq, gn, logs, D = (fast or self._fast).log_rayleigh_grad(
            th, self.x, self._losses, lambda F, L: self._row_grad_sqnorm(F, self.y, L))
        if not all(math.isfinite(a) and math.isfinite(b) and a >= MIN_NORMAL and b >= MIN_NORMAL
                   for a, b in zip(gsq.tolist(), gn.tolist())):
            return None
        _, _, smax = self._row_facts(F, L, D)
        return [(Lb, lr, D[b], sm) for b, (Lb, lr, sm) in enumerate(zip(L.tolist(), logs.tolist(), smax))]

    # ------------------------------------------------------------------------------------------
    def _ensure_checked(self) -> None:
        if self._checked is not None:
            return
        with self._lock:
            if self._checked is not None:
                return
            try:
                self._chunk = self._measure_chunk()
                self._vector_rows = self._rows_can_be_vmapped()
                self._rows = self._by_rows()
                ok, why = self._self_check()
                if not ok and self._fast is not None:     # the generic path in its turn
                    self._fast = None
                    ok, why = self._self_check()
                if ok and self._fast is not None:
                    self._chunk = self._fast.chunk(self.problem.n, self.x.element_size(), self.memory, MAX_CHUNK)
                self._chunk = whole_rounds(self._chunk, self.problem.device)
            except Exception as exc:   # noqa: BLE001
                ok, why = False, f"{type(exc).__name__}: {exc}"
            self._checked, self.reason = ok, why

    def _measure_chunk(self) -> int:
        """Bytes of the tensors autograd saves for one theta -> thetas per chunk. Measured on the
        generic path (the fast path keeps less), so that activation_bytes, and with it the
        Jacobian's chunks (compile/kernel.py), do not depend on the fast path."""
        saved = [0]

        def pack(t):
            saved[0] += t.numel() * t.element_size()
            return t

        th = self.problem.theta0.detach().to(self.dtype).reshape(1, -1).requires_grad_(True)
        loss = self.problem.loss_def
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            F = self._batched(th, self.x)
            losses = loss.value(F[0], self.y)
        del F, losses
        self._saved = saved[0]
        per_theta = 3 * saved[0] + 8 * self.problem.m * 4 + 1
        return int(max(1, min(MAX_CHUNK, self.memory // per_theta)))

    def _by_rows(self) -> bool:
        """Whether the generic path evaluates a batch one theta at a time (Problem.point's own
        values): where one theta's activations are large (ROWS_FROM bytes) and torch runs on
        ROWS_THREADS threads or fewer. There batching over theta only spreads each operation over
        B times the memory (the caches miss) and a batched product of B matrices runs no faster
        than B products (docs/performance.md, "The generic path: the model over the data")."""
        if self.dtype != self.problem.theta0.dtype or self.problem.device.type != "cpu":
            return False
        return self._saved >= ROWS_FROM and torch.get_num_threads() <= ROWS_THREADS

    def _rows_can_be_vmapped(self) -> bool:
        """Whether the loss functions run under vmap over rows (the first-use check then compares
        the values with Problem.point's)."""
        try:
            with torch.no_grad():
                F = self._batched(self.problem.theta0.detach().to(self.dtype).reshape(1, -1), self.x)
                L = self._row_value(F, self.y)
                self._row_grad_sqnorm(F, self.y, L)
                self._row_per_sample(F, self.y)
            return True
        except Exception:   # noqa: BLE001 - a loss vmap cannot take: row by row
            return False

    def _self_check(self) -> tuple[bool, str]:
        """The batch [theta0, theta0 + a small perturbation] against Problem.point."""
        p = self.problem
        gen = torch.Generator().manual_seed(12345)
        delta = torch.randn(p.m, generator=gen, dtype=p.theta0.dtype).to(p.device)
        scale = 1e-3 * (1.0 + float(p.theta0.norm())) / math.sqrt(p.m)
        pair = torch.stack([p.theta0, p.theta0 + scale * delta]).to(self.dtype)
        try:
            batch = self._points(pair)
        except Exception as exc:   # noqa: BLE001 - the fast path failing: the generic one is tried
            if self._fast is None:
                raise
            return False, f"{type(exc).__name__}: {exc}"
        tol = CHECK_TOLERANCE if self.dtype == p.theta0.dtype else 1e-3
        if self._fast is not None:
            # the differentiable forward (second derivatives) against the one checked below
            with torch.no_grad():
                F1 = self._fast.outputs(pair, self.x)
                F2 = self._fast.forward_backward(pair, self.x, self._losses, derivative=self._derivative)[0]
            if not bool(torch.isfinite(F1).all()) or float((F1 - F2).abs().max()) > tol * max(float(F2.abs().max()), 1e-300):
                return False, "the fast path's two forwards differ"
        for theta, q in zip(pair, batch):
            ref = p.point(theta.to(p.theta0.dtype))
            for a, b in ((q.loss, ref.loss), (q.rayleigh, ref.rayleigh)):
                if not (math.isfinite(a) and math.isfinite(b)):
                    if not (a == b or (math.isnan(a) and math.isnan(b))):
                        return False, f"batched value {a} differs from the pointwise {b}"
                    continue
                if abs(a - b) > tol * max(abs(a), abs(b), 1e-300):
                    return False, f"batched value {a} differs from the pointwise {b}"
            dg = float((q.grad.to(ref.grad.dtype) - ref.grad).norm())
            if dg > tol * max(float(ref.grad.norm()), 1e-300):
                return False, "the batched gradient differs from the pointwise one"
        return True, ""


class Transposed:
    """The evaluator over thetas in TwoLayer.transposed()'s layout (W's block holds W^T), for
    descents of many steps (the witness, the search's trajectories and adversarial descents):
    inner(theta) takes a theta there, outer(theta) back (each a transposed copy of W's block);
    gradient, points and log_rayleigh_and_grad are the evaluator's, their gradients in the same
    layout. Distances and norms are the same in both (up to the order of their sums)."""

    def __init__(self, ev: BatchedEvaluator, fast: TwoLayer):
        self._ev, self._fast = ev, fast
        self.inner, self.outer = ev._fast.flip, fast.flip

    def gradient(self, theta: torch.Tensor) -> Gradient:
        return self._ev._gradient(theta, self._fast)

    def points(self, thetas: torch.Tensor) -> list[Point]:
        ev = self._ev
        out: list[Point] = []
        for chunk in torch.split(ev._as_batch(thetas), ev.chunk_size()):
            out.extend(ev._points(chunk, self._fast))
        return out

    def log_rayleigh_and_grad(self, thetas: torch.Tensor) -> list[tuple[float, float, torch.Tensor, float]]:
        ev = self._ev
        out = []
        for chunk in torch.split(ev._as_batch(thetas), max(1, ev.chunk_size() // 2)):
            rows = ev._fast_log_rayleigh(chunk.detach(), self._fast) if ev._vector_rows and self._fast.has_second \
                else None
            if rows is None:     # a quotient that over- or underflows: the evaluator's own path
                rows = [(L, lr, self.inner(D), sm) for L, lr, D, sm in ev._log_rayleigh(self.outer(chunk))]
            out.extend(rows)
        return out


def whole_rounds(chunk: int, device) -> int:
    """A chunk of at least as many thetas as torch has CPU threads, rounded up to a multiple of
    them: the batched matrix products hand whole matrices of the batch to the threads, so a batch
    of 3 on 2 threads runs 2 rounds with one thread idle in the second (bench, 3-layer MLP on 2
    threads: B = 3 419 R/s, B = 4 508). Smaller chunks (large activations) are kept: one product
    of such a theta is already split between the threads. Not on a GPU."""
    threads = torch.get_num_threads() if torch.device(device).type == "cpu" else 1
    if threads <= 1 or chunk < threads:
        return chunk
    rounded = -(-chunk // threads) * threads
    return rounded if rounded <= MAX_CHUNK else max(threads, MAX_CHUNK // threads * threads)


def evaluator(problem) -> BatchedEvaluator:
    """The problem's float64 evaluator, made once and kept on the problem."""
    ev = getattr(problem, "_batched_evaluator", None)
    if ev is None:
        ev = BatchedEvaluator(problem)
        problem._batched_evaluator = ev
    return ev
