"""The checked spec's model and loss as interval functions of theta over boxes and at points
(IntervalModel, BoxEnclosure): the forward rules of compile/interval.py applied to the model over
boxes, and at a point the reverse rules of compile/interval_reverse.py for the Jacobian."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..language.ast import Expr
from ..language.losses import LOSSES
from .degree import AFFINE, degree
from .interval import Dual, NotSupported, enclose, param_layout
from .interval_losses import INTERVAL_LOSSES, LossEnclosure
from .interval_reverse import covered, jacobian, jacobian_blocks, leaf
from .iv import Iv, iv_add, iv_intersect, iv_matmul, iv_mul, iv_of, iv_sum
from .rounding import (
    check_environment,
    down,
    up,
)

POINT_CHUNK = 256   # forward mode at a point: parameter directions per pass (IntervalModel)


# --- the compiled model over boxes ---------------------------------------------------------------------
@dataclass
class BoxEnclosure:
    """Enclosures over one box of parameters (all sound)."""

    lo: np.ndarray            # the box
    hi: np.ndarray
    center: np.ndarray        # a double point in the box
    F: Iv                     # outputs [n, k]
    J: Iv | None              # Jacobian [n k, m] (row (i, j) = d F(x_i)_j / d theta)
    r: Iv                     # the functional gradient / its exact scale (least squares: the residual F - y) [n, k]
    L: Iv                     # loss (scalar arrays)
    grad: Iv | None           # grad L [m]
    F_center: Iv              # outputs at the center
    L_center: Iv
    gsq: Iv | None = None     # ||g||_D^2 (scalar), the denominator of R
    per_sample: Iv | None = None   # the per-sample losses [n]


class IntervalModel:
    """The checked spec's model and loss as interval functions of theta (a loss of the table with an
    interval rule in compile/interval_losses.py). A population spec (data gaussian) gets the closed form's
    enclosures instead: compile/interval_population.PopulationIntervalModel, the same interface (duck-typed:
    it does not import this module)."""

    def __new__(cls, checked=None, *args, **kwargs):
        if cls is IntervalModel and getattr(checked, "population", None) is not None:
            from .interval_population import PopulationIntervalModel
            return PopulationIntervalModel(checked)      # not an IntervalModel: __init__ is not run again
        return object.__new__(cls)

    def __init__(self, checked):
        check_environment()
        loss = LOSSES[checked.loss.name]
        if not loss.sound or loss.name not in INTERVAL_LOSSES:
            sound = ", ".join(n for n, l in LOSSES.items() if l.sound and n in INTERVAL_LOSSES)
            raise NotSupported(f"the loss '{checked.loss.name}' (the sound mode handles {sound})", None)
        self.loss = loss
        self.iloss = INTERVAL_LOSSES[loss.name]
        self.least_squares = loss.name == "least_squares"   # the subspace rule and its refutation need it
        # a model torch(...) comes translated into the same form (check/torch_expr.py)
        model = getattr(checked, "model_expr", None) or getattr(checked.spec, "model", None)
        if model is None or not isinstance(getattr(model, "body", None), Expr):
            raise NotSupported("a model that is not a spec expression (e.g. a Python model)", None)
        self.checked = checked
        param_layout(self, checked)
        self.x = np.asarray(checked.x, dtype=np.float64)
        self.y = np.asarray(checked.y, dtype=np.float64)
        self.n = int(self.x.shape[0])
        self.out_shape = tuple(checked.output_shape)
        self.k = int(np.prod(self.out_shape)) if self.out_shape else 1
        self.constants = {k: np.asarray(v, dtype=np.float64) for k, v in checked.constants.items()}
        self.body = model.body
        self.arg = model.arg
        if loss.targets == "class" and self.y.ndim == 1 and self.k > 1:    # class indices -> one-hot rows
            self.y = np.eye(self.k)[self.y.astype(np.int64)]
        self.yk = self.y.reshape(self.n, self.k)
        self.affine = degree(self.body, set(self.names)) <= AFFINE
        self.blocks = {name: (int(o), int(o) + s) for name, o, s in zip(self.names, self.offsets, self.sizes)}
        self.reverse = covered(self.body)           # the Jacobian at a point by reverse mode (interval_reverse.py)
        self.outputs(self.theta0, None, False)      # raises NotSupported (with its span) now, not mid-search

    # environment ---------------------------------------------------------------------------
    def _env(self, lo: np.ndarray, hi: np.ndarray, derivatives: bool) -> dict[str, Dual]:
        env: dict[str, Dual] = {}
        for name, value in self.constants.items():
            env[name] = Dual(Iv(value[None]), None, value.ndim)
        point = lo is hi
        for name, shape, off, size in zip(self.names, self.shapes, self.offsets, self.sizes):
            plo = lo[off:off + size].reshape((1,) + shape)
            v = Iv(plo) if point else Iv(plo, hi[off:off + size].reshape((1,) + shape))
            d = None
            if derivatives:
                eye = np.zeros((self.m, size))
                eye[off + np.arange(size), np.arange(size)] = 1.0
                d = Iv(eye.reshape((self.m, 1) + shape))
            env[name] = Dual(v, d, len(shape))
        env[self.arg] = Dual(Iv(self.x), None, self.x.ndim - 1)
        return env

    def outputs(self, lo: np.ndarray, hi: np.ndarray | None = None,
                derivatives: bool = True) -> tuple[Iv, Iv | None]:
        """(F [n, k], J [n k, m] or None) over the box [lo, hi] (hi None: the point lo)."""
        hi = lo if hi is None else hi
        if derivatives and lo is hi and self.reverse:
            out = self._outputs_reverse(lo)
            if out is not None:
                return out
        if derivatives and lo is hi and self.m > POINT_CHUNK:
            return self._outputs_chunked(lo)
        out = enclose(self.body, self._env(lo, hi, derivatives))
        vshape = (self.n,) + self.out_shape
        F = Iv(np.broadcast_to(out.v.lo, vshape).reshape(self.n, self.k),
               np.broadcast_to(out.v.hi, vshape).reshape(self.n, self.k))
        if not derivatives:
            return F, None
        if out.d is None:
            J = Iv(np.zeros((self.n * self.k, self.m)))
        else:
            dshape = (self.m,) + vshape
            dlo = np.broadcast_to(out.d.lo, dshape).reshape(self.m, self.n * self.k)
            dhi = np.broadcast_to(out.d.hi, dshape).reshape(self.m, self.n * self.k)
            J = Iv(np.ascontiguousarray(dlo.T), np.ascontiguousarray(dhi.T))
        return F, J

    def _reverse_env(self, theta: np.ndarray):
        layout = list(zip(self.names, self.shapes, self.offsets, self.sizes))

        def env(i0: int, i1: int):
            nodes = {name: leaf(Iv(value[None]), value.ndim) for name, value in self.constants.items()}
            for name, shape, off, size in layout:
                nodes[name] = leaf(Iv(theta[off:off + size].reshape((1,) + shape)), len(shape), name)
            nodes[self.arg] = leaf(Iv(self.x[i0:i1]), self.x.ndim - 1)
            return nodes
        return env, layout

    def _outputs_reverse(self, theta: np.ndarray) -> tuple[Iv, Iv] | None:
        """(F, J) at a point by interval reverse mode: one backward pass seeded with every output entry
        of every sample (fewer at a time where an adjoint would be large; compile/interval_reverse.py),
        the same value enclosures F as forward mode; None where it does not apply."""
        env, layout = self._reverse_env(theta)
        return jacobian(self.body, env, self.n, self.out_shape, layout, self.m)

    def jacobian_blocks(self, theta: np.ndarray, cols: int):
        """The interval Jacobian at the point theta in column blocks: an iterator of (c0, c1, J[:, c0:c1])
        covering 0..m in order, no more than one block held at a time. Reverse mode: blocks of about
        cols columns (compile/interval_reverse.jacobian_blocks); otherwise forward mode's chunks of
        POINT_CHUNK directions (or the whole J for m <= POINT_CHUNK)."""
        theta = np.asarray(theta, dtype=np.float64)
        if self.reverse:
            env, layout = self._reverse_env(theta)
            out = jacobian_blocks(self.body, env, self.n, self.out_shape, layout, max(1, int(cols)))
            if out is not None:
                yield from out[1]
                return
        if self.m > POINT_CHUNK:
            for start, stop, _, lo, hi in self._forward_chunks(theta):
                yield start, stop, Iv(np.ascontiguousarray(lo), np.ascontiguousarray(hi))
            return
        _, J = self.outputs(theta, None, True)
        yield 0, self.m, J

    def _outputs_chunked(self, theta: np.ndarray) -> tuple[Iv, Iv]:
        """(F, J) at a point by forward mode over POINT_CHUNK parameter directions at a time (the
        same enclosures, in bounded memory: wide models have m in the thousands)."""
        F, los, his = None, [], []
        for _, _, Fc, lo, hi in self._forward_chunks(theta):
            F = Fc if F is None else F
            los.append(lo)
            his.append(hi)
        return F, Iv(np.ascontiguousarray(np.concatenate(los, axis=1)),
                     np.ascontiguousarray(np.concatenate(his, axis=1)))

    def _forward_chunks(self, theta: np.ndarray):
        """(start, stop, F, J[:, start:stop] lo, hi) by forward mode over POINT_CHUNK directions."""
        vshape = (self.n,) + self.out_shape
        F = None
        for start in range(0, self.m, POINT_CHUNK):
            stop = min(self.m, start + POINT_CHUNK)
            env = self._env(theta, theta, False)
            for name, shape, off, size in zip(self.names, self.shapes, self.offsets, self.sizes):
                a, b = max(off, start), min(off + size, stop)
                if a < b:
                    eye = np.zeros((stop - start, size))
                    idx = np.arange(a, b)
                    eye[idx - start, idx - off] = 1.0
                    env[name] = Dual(env[name].v, Iv(eye.reshape((stop - start, 1) + shape)), len(shape))
            out = enclose(self.body, env)
            if F is None:
                F = Iv(np.broadcast_to(out.v.lo, vshape).reshape(self.n, self.k),
                       np.broadcast_to(out.v.hi, vshape).reshape(self.n, self.k))
            P = stop - start
            if out.d is None:
                z = np.zeros((self.n * self.k, P))
                yield start, stop, F, z, z
            else:
                yield (start, stop, F, np.broadcast_to(out.d.lo, (P,) + vshape).reshape(P, -1).T,
                       np.broadcast_to(out.d.hi, (P,) + vshape).reshape(P, -1).T)

    def loss_enclosure(self, F: Iv) -> LossEnclosure:
        """Per-sample losses, L, g / g_scale and ||g||_D^2 (compile/interval_losses.py)."""
        return self.iloss.enclose(F, self.yk)

    def loss_of(self, F: Iv) -> tuple[Iv, Iv]:
        """(g / g_scale, L): for least squares (r = F - y, L = mean_i sum_j r_ij^2)."""
        enc = self.loss_enclosure(F)
        return enc.g, enc.L

    def grad_of(self, J: Iv, r: Iv, scale: float = 2.0) -> Iv:
        """grad L = (scale / n) J^T r, r = g / scale (an exact power of two; division by n rounded
        outward)."""
        JT = Iv(J.lo.T, J.hi.T) if not J.point else Iv(J.lo.T)
        g = iv_matmul(JT, Iv(r.lo.reshape(-1), r.hi.reshape(-1)) if not r.point else Iv(r.lo.reshape(-1)))
        return iv_of(down(scale * g.lo / self.n), up(scale * g.hi / self.n))

    def at_point(self, theta: np.ndarray, derivatives: bool = True) -> BoxEnclosure:
        theta = np.asarray(theta, dtype=np.float64)
        F, J = self.outputs(theta, None, derivatives)
        le = self.loss_enclosure(F)
        grad = self.grad_of(J, le.g, le.g_scale) if J is not None else None
        return BoxEnclosure(theta, theta, theta, F, J, le.g, le.L, grad, F, le.L, le.gsq, le.per_sample)

    def over_box(self, lo: np.ndarray, hi: np.ndarray) -> BoxEnclosure:
        """Enclosures over [lo, hi]: the naive forward-mode enclosure of F intersected with the
        mean-value form F(c) + J(box)(box - c); L likewise with L(c) + grad L(box).(box - c)."""
        c = np.minimum(np.maximum(0.5 * lo + 0.5 * hi, lo), hi)
        F, J = self.outputs(lo, hi, True)
        Fc, _ = self.outputs(c, None, False)
        delta = Iv(down(lo - c), up(hi - c))                 # theta - c
        Fmv = iv_add(Fc, Iv(*(z.reshape(self.n, self.k) for z in _lohi(iv_matmul(J, delta)))))
        F = iv_intersect(F, Fmv)
        le = self.loss_enclosure(F)
        grad = self.grad_of(J, le.g, le.g_scale)
        Lc = self.loss_enclosure(Fc).L
        dot = iv_sum(iv_mul(grad, delta), None)
        Lmv = iv_add(Lc, dot)
        L = iv_intersect(le.L, Iv(np.maximum(Lmv.lo, 0.0), Lmv.hi))
        le = self.iloss.refine(le, L)
        return BoxEnclosure(lo, hi, c, F, J, le.g, L, grad, Fc, Lc, le.gsq, le.per_sample)


def _lohi(a: Iv):
    return a.lo, a.hi
