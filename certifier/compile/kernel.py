"""lambda_min of the tangent kernel K = J J^T / n, formed or by Lanczos.

- formed: J row by row, each row the gradient of one output (one backward pass through one
  saved forward pass), K = J J^T / n, torch.linalg.eigvalsh. Memory n k m for J.
  (torch.func.jacrev gives the same J bitwise; but its first call imports torch._dynamo: 0.74 s
  of a 5.6 s `certify specs/two_layer_tanh.rq`, on every run of a spec whose search uses the
  kernel.)
- lanczos: scipy.sparse.linalg.eigsh (ARPACK, implicitly restarted Lanczos) on the operator
  u -> J (J^T u) / n, never forming J or K. J^T u is a backward pass through one saved forward
  pass; J w is a backward pass through that backward pass (linear in u, so its vector-Jacobian
  product with respect to u is J w). Memory O(m + n k) besides the saved activations.
- On the two-layer fast path (compile/two_layer.py) J, J^T v and J w are written out instead:
  exact, cheaper.

Every backward pass here starts from a scalar: a row of J is the gradient of the output F_i,
J^T v that of F . v, J w that of (J^T u) . w. torch.autograd.grad with a tensor `grad_outputs`
(and its batched form, is_grads_batched) imports torch.fx.experimental.symbolic_shapes and sympy
on its first call (0.3 s of a run's start, docs/performance.md); the scalar's backward seeds F with
1.0 * v, the same numbers.

Which is faster depends on how many products Lanczos needs (the small eigenvalues of a tangent
kernel are clustered) against the n k backward passes and the O((n k)^3) eigvalsh of forming.
On the two-layer reference network of bench/ Lanczos needs about 220 products and overtakes
forming near n k = 512 (the timings: docs/performance.md, "λ_min of the tangent kernel"). So
`auto` forms the kernel up to n k < LANCZOS_FROM and while J fits in JACOBIAN_MEMORY bytes, and
uses Lanczos beyond.
"""
from __future__ import annotations

import numpy as np
import torch

from ..progress import checkpoint
from .batched import evaluator

JACOBIAN_MEMORY = 2**30        # bytes of J (n k x m float64) above which `auto` uses Lanczos
LANCZOS_FROM = 512             # n k from which `auto` uses Lanczos (the measured crossover)
LANCZOS_TOL = 1e-10            # ARPACK's relative residual tolerance
LANCZOS_NCV = 64               # Lanczos basis size (more: fewer restarts, more memory)
SMALL = 8                      # n k at most this: K from n k products, then eigvalsh


def jacobian(problem, theta: torch.Tensor, fast_path: bool = True) -> torch.Tensor:
    """J [n k, m] at theta: row i is the gradient of output i, one backward pass of that scalar
    through one forward pass (one row at a time: no batched grad_outputs, and on one thread
    faster than the batched backward passes it replaced, docs/performance.md). On the two-layer
    fast path (unless fast_path=False), written out."""
    fast = evaluator(problem).two_layer() if fast_path else None
    if fast is not None:
        return fast.jacobian(theta.detach(), problem.x)
    t = theta.detach().requires_grad_(True)
    F = problem.outputs(t).reshape(-1)
    nk = F.shape[0]
    J = torch.zeros(nk, problem.m, dtype=t.dtype, device=t.device)
    if not F.requires_grad:                 # outputs that do not depend on theta
        return J
    for i in range(nk):
        checkpoint()                        # --budget: n k backward passes of a large model take long
        (g,) = torch.autograd.grad(F[i], t, retain_graph=i + 1 < nk, allow_unused=True)
        if g is not None:
            J[i] = g
    return J


def lambda_min_formed(problem, theta: torch.Tensor) -> float:
    fast = evaluator(problem).two_layer()
    if fast is not None:            # J J^T from the hidden activations, J never formed
        K = fast.gram(theta.detach(), problem.x) / problem.n
        return float(torch.linalg.eigvalsh(K)[0])
    J = jacobian(problem, theta)
    K = (J @ J.T) / problem.n
    return float(torch.linalg.eigvalsh(K)[0])


class KernelOperator:
    """u -> K u = J (J^T u) / n at theta, from one saved forward pass (float64 numpy in and out)."""

    def __init__(self, problem, theta: torch.Tensor):
        self.problem = problem
        self.products = 0
        fast = evaluator(problem).two_layer()
        self._fast = None if fast is None else fast.kernel_products(theta.detach(), problem.x)
        if self._fast is not None:
            self.size = problem.n
            self.F = theta          # dtype and device only
            return
        self.th = theta.detach().clone().requires_grad_(True)
        self.F = problem.outputs(self.th).reshape(-1)
        self.size = self.F.numel()
        self.u = torch.zeros(self.size, dtype=self.F.dtype, device=self.F.device, requires_grad=True)
        (self.JTu,) = torch.autograd.grad(self.F @ self.u, self.th, create_graph=True)   # J^T u, linear in u

    def apply(self, v: torch.Tensor) -> torch.Tensor:
        if self._fast is not None:
            jt, j = self._fast
            self.products += 1
            return j(jt(v)) / self.problem.n
        (w,) = torch.autograd.grad(self.F @ v, self.th, retain_graph=True)          # J^T v
        (Jw,) = torch.autograd.grad(self.JTu @ w, self.u, retain_graph=True)       # J w
        self.products += 1
        return Jw / self.problem.n

    def matvec(self, v) -> np.ndarray:
        t = torch.as_tensor(np.asarray(v, dtype=np.float64).reshape(-1), dtype=self.F.dtype, device=self.F.device)
        return self.apply(t).detach().cpu().numpy()


def lambda_min_lanczos(problem, theta: torch.Tensor, tol: float = LANCZOS_TOL) -> tuple[float, int]:
    """(lambda_min(K), number of kernel-vector products) by ARPACK's Lanczos, deterministic start."""
    from scipy.sparse.linalg import LinearOperator, eigsh

    op = KernelOperator(problem, theta)
    nk = op.size
    if nk <= SMALL:
        # ARPACK needs a basis larger than one vector: a tiny kernel is formed from nk products
        K = np.stack([op.matvec(e) for e in np.eye(nk)], axis=1)
        return float(np.linalg.eigvalsh(0.5 * (K + K.T))[0]), op.products
    lin = LinearOperator((nk, nk), matvec=op.matvec, dtype=np.float64)
    v0 = np.random.default_rng(0).standard_normal(nk)
    vals = eigsh(lin, k=1, which="SA", tol=tol, ncv=min(nk, LANCZOS_NCV), v0=v0,
                 return_eigenvectors=False, maxiter=max(1000, 20 * nk))
    return float(vals[0]), op.products


def lambda_min(problem, theta: torch.Tensor, method: str = "auto") -> float:
    """lambda_min(J J^T / n) at theta. method: 'auto' | 'formed' | 'lanczos'."""
    if method == "auto":
        nk = problem.n * problem.k
        method = "lanczos" if nk >= LANCZOS_FROM or nk * problem.m * 8 > JACOBIAN_MEMORY else "formed"
    if method == "formed":
        return lambda_min_formed(problem, theta)
    if method == "lanczos":
        return lambda_min_lanczos(problem, theta)[0]
    raise ValueError(f"unknown kernel method {method!r}")
