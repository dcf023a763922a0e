"""The ball table of a two-layer network from its structure (the tube's and the ball rule's constants).

BallModel.lipschitz gives, over a ball B(c, R), per output entry F_i: H_i >= sup ||Hess F_i||_2,
g_i >= sup ||grad F_i||, Lip_J = sqrt(sum_i H_i^2) and an enclosure of F_i. Its generic rule table
works on any expression but costs most of a tube segment on wide networks (elementwise outward
rounding of [n, h, ...] arrays per node, docs/performance.md). For F(x) = s sum_j a_j act(w_j . x~) + c
(curvature.match's form; x~ = (x, 1) with biases, or x times the layer's constant) the Hessian of F_i is block diagonal
over the hidden units, unit j's block in (w_j, b_j, a_j) being

    s [[a_j act''(z_ij) x~_i x~_i^T, act'(z_ij) x~_i], [act'(z_ij) x~_i^T, 0]],

of norm s (A + sqrt(A^2 + 4 B^2)) / 2 with A = |a_j act''(z_ij)| |x~_i|^2, B = |act'(z_ij)| |x~_i| (the
block acts on the span of x~_i and a_j's axis), so H_i = s max_j of that (increasing in A and B), with a_j
within R of its centre value and z_ij within R |x~_i| of its centre value (|(w_j, b_j) change| <= R).
The rest follows from H_i and the interval Jacobian at the centre (reverse mode): by the mean-value
theorem on the convex ball, ||grad F_i(theta)|| <= ||grad F_i(c)|| + H_i R and
|F_i(theta) - F_i(c)| <= ||grad F_i(c)|| R + H_i R^2 / 2. Every operation is rounded outward.

The form is curvature.match's (with its input scale and k outputs, the data x~ enclosed there);
anything else keeps the generic table.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...compile.interval_hessian import derivative_magnitudes
from ...compile.iv import Iv, iv_mag, iv_matmul, iv_of
from ...compile.rounding import down, nonneg_sum_upper, up
from .curvature import TwoLayerCurvature


@dataclass
class Node:
    """What the tube reads of BallModel's output node: the value enclosure over the ball."""
    v: Iv


class TwoLayerBall:
    def __init__(self, model, curvature: TwoLayerCurvature):
        self.model = model
        self.cv = curvature                 # its data x~ (an enclosure), |x~_i|, the scale s, the units
        mag = iv_mag(curvature.xt)
        self.xsq = np.asarray(nonneg_sum_upper(up(mag * mag), 1))          # >= |x~_i|^2

    @classmethod
    def of(cls, model) -> "TwoLayerBall | None":
        """The structured table for a two-layer model (curvature.match's form), else None."""
        if not hasattr(model, "_two_layer_ball"):
            cv = TwoLayerCurvature.of(model)
            model._two_layer_ball = cls(model, cv) if cv is not None else None
        return model._two_layer_ball

    def hessians(self, center: np.ndarray, radius: float) -> np.ndarray:
        """H [n k] (sample-major): H_ic >= sup over B(center, radius) of ||Hess F_ic||_2. Unit j's
        block of Hess F_ic over (w_j, b_j, A_1j..A_kj) is s [[A_cj act'' x~_i x~_i^T, act' x~_i e_c^T], [.., 0]]."""
        cv = self.cv
        Wt, A = cv._units(np.asarray(center, dtype=np.float64))               # [h, dt], [k, h]
        Z = iv_matmul(cv.xt, Iv(np.ascontiguousarray(Wt.T)))                 # [n, h] at the centre
        dz = up(cv.xnorm * radius)[:, None]
        z = iv_of(down(Z.lo - dz), up(Z.hi + dz))
        F1, F2 = derivative_magnitudes(cv.form.activation, z)                # the ball rule's own bounds
        second = up(F2 * self.xsq[:, None])                                   # [n, h]
        first = up(F1 * cv.xnorm[:, None])
        amag = up(np.abs(A) + radius)                                         # >= |A_cj| on the ball
        n, k = second.shape[0], A.shape[0]
        H = np.empty((n, k))
        B4 = up(4.0 * up(first * first))
        for c in range(k):
            # on span(x~_i, e_A) the block is [[A, B], [B, 0]], A = |A_cj act''| |x~_i|^2, B = |act'| |x~_i|:
            # norm (A + sqrt(A^2 + 4 B^2)) / 2
            Ac = up(second * amag[c][None, :])
            H[:, c] = np.max(up(up(Ac + up(np.sqrt(up(up(Ac * Ac) + B4)))) * 0.5), axis=1)
        H = H.reshape(-1)
        return np.where(np.isfinite(H), up(H * cv.scale), np.inf)

    def _at_center(self, center: np.ndarray):
        """F(c) and row norms >= ||grad F_i(c)|| from the interval Jacobian at c; the last centre is
        kept (a tube tries several radii around one checkpoint)."""
        key = center.tobytes()
        if getattr(self, "_last", None) is None or self._last[0] != key:
            F, J = self.model.outputs(center, None, True)
            Jmag = iv_mag(J)
            self._last = (key, F, up(np.sqrt(nonneg_sum_upper(up(Jmag * Jmag), 1))))
        return self._last[1], self._last[2]

    def prime(self, center: np.ndarray, F: Iv, rows: np.ndarray) -> None:
        """Take F(c) and the row norms from a caller that already has the Jacobian at c (the tube's
        checkpoint), so that the table around it does not form it again."""
        self._last = (np.asarray(center, dtype=np.float64).tobytes(), F, rows)

    def table(self, center: np.ndarray, radius: float) -> dict:
        """BallModel.lipschitz's dict: H, grad, lip_jacobian and a node whose v encloses F on the ball."""
        model = self.model
        center = np.asarray(center, dtype=np.float64)
        F, rows = self._at_center(center)
        H = self.hessians(center, float(radius))
        grad = up(rows + up(H * radius))
        dev = up(up(rows * radius) + up(up(H * up(radius * radius)) * 0.5))
        shape = (model.n,) + tuple(model.out_shape)
        v = Iv(down(F.lo.reshape(-1) - dev).reshape(shape), up(F.hi.reshape(-1) + dev).reshape(shape))
        lip = float(up(np.sqrt(nonneg_sum_upper(up(H * H), None))))
        return {"H": H, "grad": grad, "lip_jacobian": lip, "node": Node(v)}
