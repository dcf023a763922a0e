"""The ball rule: a sound lower bound on lambda_min(K) over a whole ball B(c, r), without splitting
(docs/theory.md section 10.7). For wide models, where boxes are hopeless.

For every node of the model's expression and every entry e of its value (per sample), a second
rule table (OPERATORS, CALLS) propagates, over the ball,

    v   an interval enclosure of the value (intersected with v(c) +- l r),
    g_p >= sup ||grad_p v_e||_2        (p a parameter block: a named parameter),
    h_pq >= sup ||Hess_pq v_e||_2      (the (p, q) block of the Hessian in theta),

and, per block p, the set S_p of axes along which entries depend on DISJOINT slices of p (a
parameter W[h, d] itself: both axes; W @ x: the row axis). Sums over an axis in S_p combine the
gradients of block p in l2 (they are orthogonal) and the Hessian blocks by their maximum (they are
block diagonal); elsewhere the triangle inequality. This keeps the constants of a width-h
network at their true O(1/sqrt(h)) scale where the triangle inequality would lose a factor h.

For the model's outputs F_e (e = sample, output), H_e = ||[h_pq]||_2 (an upper bound on the norm of
the block matrix by the norm of the matrix of block norms) bounds sup ||Hess F_e||_2 on the ball,
so by the mean-value theorem on the convex ball ||grad F_e(t1) - grad F_e(t2)|| <= H_e ||t1 - t2||
and ||J(t1) - J(t2)||_2 <= ||J(t1) - J(t2)||_F <= Lip_J ||t1 - t2||, Lip_J = sqrt(sum_e H_e^2).
With Weyl, sigma_min(J(t)) >= sigma_min(J(c)) - Lip_J r on the ball, and

    R >= lambda_min(K) >= ((sigma_min(J_c) - ||J_c enclosure radius||_2 - Lip_J r)_+)^2 / n.

Every constant is a nonnegative upper bound rounded up (`up` after each operation; sums by
`nonneg_sum_upper`); values are interval enclosures (certifier/compile/interval.py). Functions
whose derivative is not Lipschitz (relu, abs) and softmax / logsumexp are not supported: the
ball rule then does not apply and the engine falls back to boxes.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ...compile.interval import INTERVAL_RULES, Dual, NotSupported, expand_axis
from ...compile.interval_hessian import derivative_magnitudes
from ...compile.interval_model import IntervalModel
from ...compile.iv import Iv, iv_mag, iv_mig, mid_rad
from ...compile.rounding import INF, down, elementary_mode, nonneg_sum_upper, point_bounds, up
from ...language.ast import Expr
from ...language.evaluate import CONSTANTS, subscript
from ...language.primitives import FUNCTION_NAMES
from .linalg import GramAccumulator, gram_lower, nonneg_norm2_upper, sqrt_down
from .rules import Bound
from .two_layer_ball import TwoLayerBall

DENSE_J_BYTES = 2 ** 28     # center_sigma: the whole J at once up to this size of one of its arrays, blocks above
BLOCK_J_BYTES = 2 ** 26     # and then column blocks of about this size (per array)
MAX_ENTRIES = 2 * 10**7     # entries of the largest expanded product (matmul) the rule forms


class BallNotSupported(NotSupported):
    pass


@dataclass
class BNode:
    v: Iv                    # value over the ball, (B, *s)
    c: Iv                    # value at the center
    g: np.ndarray | None     # (P, B, *s) gradient-norm bounds per block; None: constant
    h: np.ndarray | None     # (P, P, B, *s) Hessian-block norm bounds
    S: dict                  # block -> frozenset of array axes (batch axis 0 never)
    deps: frozenset
    nd: int


def _u(x):
    with np.errstate(over="ignore", invalid="ignore"):
        return np.where(np.isnan(x), INF, up(x))


def _umul(a, b):
    with np.errstate(over="ignore", invalid="ignore"):
        p = a * b
    return _u(np.where((a == 0) | (b == 0), 0.0, p))       # 0 * inf = 0: a zero bound is exact


def _uadd(a, b):
    with np.errstate(over="ignore", invalid="ignore"):
        return _u(a + b)


def _sqrt_sum_sq(x: np.ndarray, axis) -> np.ndarray:
    with np.errstate(over="ignore", invalid="ignore"):
        return _u(np.sqrt(nonneg_sum_upper(_umul(x, x), axis)))


class BallModel:
    """The ball rule for a checked spec's model (any loss: it bounds lambda_min(K), and
    ||grad L||^2 >= lambda_min(K) ||g||_D^2 whatever g is)."""

    def __init__(self, model: IntervalModel):
        self.model = model
        self.P = len(model.names)
        self.block = {name: i for i, name in enumerate(model.names)}
        self.unsupported = None
        self.too_large = False
        try:
            self._check(model.body)
        except BallNotSupported as exc:
            self.unsupported = exc.message
        if self.unsupported is None and TwoLayerBall.of(model) is None:
            try:    # the table's products are sized by the shapes alone: one evaluation finds one too large
                self.evaluate(np.asarray(model.theta0, dtype=np.float64), 0.0)
            except BallNotSupported as exc:
                self.unsupported, self.too_large = exc.message, True

    def _check(self, e: Expr) -> None:
        if e.op == "call" and e.attrs["func"] not in CALLS:
            raise BallNotSupported(f"the function '{e.attrs['func']}' (the ball rule needs a model with a "
                                   f"Lipschitz Jacobian: no {_WITHOUT_BALL_RULE})", e)
        for a in e.args:
            self._check(a)

    # --- propagation ------------------------------------------------------------------------------
    def evaluate(self, center: np.ndarray, radius: float) -> BNode:
        model = self.model
        self.r = float(radius)
        env: dict[str, BNode] = {}
        for name, value in model.constants.items():
            env[name] = _const_node(value[None], value.ndim)
        lo, hi = down(center - self.r), up(center + self.r)
        for name, shape, off, size in zip(model.names, model.shapes, model.offsets, model.sizes):
            p = self.block[name]
            c = Iv(center[off:off + size].reshape((1,) + shape))
            v = Iv(lo[off:off + size].reshape((1,) + shape), hi[off:off + size].reshape((1,) + shape))
            g = np.zeros((self.P, 1) + shape)
            g[p] = 1.0
            h = np.zeros((self.P, self.P, 1) + shape)
            env[name] = BNode(v, c, g, h, {p: frozenset(range(1, 1 + len(shape)))}, frozenset([p]), len(shape))
        env[model.arg] = _const_node(model.x, model.x.ndim - 1)
        self.env = env
        return self._eval(model.body)

    def _eval(self, e: Expr) -> BNode:
        op = e.op
        if op == "number":
            return _const_node(np.array(float(e.attrs["value"])).reshape(1), 0)
        if op == "name":
            name = e.attrs["id"]
            if name in self.env:
                return self.env[name]
            return _const_node(np.array(CONSTANTS[name], dtype=np.float64).reshape(1), 0)
        if op == "index":
            x = self._eval(e.args[0])
            subs = tuple(subscript(s) for s in e.args[1:])
            return _index(x, subs)
        if op == "call":
            func = e.attrs["func"]
            args = [self._eval(a) for a in e.args]
            kwargs = {k: int(subscript(v)) for k, v in e.kwargs.items()}
            return CALLS[func](self, *args, **kwargs)
        if op == "pow":
            return _pow(self, self._eval(e.args[0]), self._eval(e.args[1]), e)
        rule = OPERATORS.get(op)
        if rule is None:
            raise BallNotSupported(f"the operator '{op}'", e)
        return rule(self, *(self._eval(a) for a in e.args))

    def finish(self, node: BNode, v: Iv, c: Iv) -> BNode:
        """Intersect the value enclosure with c +- l r (l = sqrt(sum_p g_p^2) >= the gradient norm)."""
        if node.g is not None:
            ell = _sqrt_sum_sq(node.g, 0)
            rad = _umul(ell, np.float64(self.r))
            with np.errstate(invalid="ignore", over="ignore"):
                lo = np.maximum(v.lo, down(c.lo - rad))
                hi = np.minimum(v.hi, up(c.hi + rad))
            v = Iv(lo, hi)
        node.v, node.c = v, c
        return node

    def enclosure(self, center: np.ndarray, radius: float) -> Iv:
        """An enclosure of the model's outputs over B(center, radius) (the node's v)."""
        fast = TwoLayerBall.of(self.model)
        if fast is not None:
            return fast.table(center, radius)["node"].v
        return self.evaluate(np.asarray(center, dtype=np.float64), radius).v

    # --- the bound -----------------------------------------------------------------------------------
    def lipschitz(self, center: np.ndarray, radius: float) -> dict:
        """Per output entry: H_e (>= sup ||Hess F_e||_2 on the ball) and g_e (>= sup ||grad F_e||);
        Lip_J = sqrt(sum H_e^2). A two-layer network takes its structured table (two_layer_ball.py)."""
        fast = TwoLayerBall.of(self.model)
        if fast is not None:
            return fast.table(center, radius)
        model = self.model
        out = self.evaluate(np.asarray(center, dtype=np.float64), radius)
        vshape = (model.n,) + model.out_shape
        if out.g is None:
            return {"H": np.zeros(model.n * model.k), "grad": np.zeros(model.n * model.k), "lip_jacobian": 0.0,
                    "node": out}
        h = np.broadcast_to(out.h, (self.P, self.P) + vshape).reshape(self.P, self.P, -1)
        g = np.broadcast_to(out.g, (self.P,) + vshape).reshape(self.P, -1)
        H = np.array([nonneg_norm2_upper(np.ascontiguousarray(h[:, :, e])) for e in range(h.shape[2])])
        grad = _sqrt_sum_sq(g, 0)
        lip = float(_sqrt_sum_sq(H, None)) if H.size else 0.0
        return {"H": H, "grad": grad, "lip_jacobian": lip, "node": out}


def ball_rule(model: IntervalModel, ball_model: BallModel, center: np.ndarray, radius: float):
    """rules.Bound for the whole ball B(center, radius): lambda_min(K) >= ((s_c - D - Lip_J r)_+)^2 / n."""

    rows, cols = model.n * model.k, model.m
    if rows > cols or rows == 0:
        return Bound("ball", 0.0, f"more outputs (n k = {rows}) than parameters ({cols})", {})
    sigma_c, dnorm, info = center_sigma(model, center)
    if sigma_c is None:
        return Bound("ball", 0.0, "no positive lower bound on lambda_min(Jc Jc^T) at the center",
                     {"lambda_center_estimate": info.get("estimate")})
    lip = ball_model.lipschitz(center, radius)["lip_jacobian"]
    drift = float(_umul(np.float64(lip), np.float64(radius)))
    gap = float(down(down(sigma_c - dnorm) - drift))
    value = float(down(down(gap * gap) / model.n)) if gap > 0 else 0.0
    return Bound("ball", value,
                 "lambda_min(K) >= (sigma_min(Jc) - Lip_J r)^2 / n on the whole ball (Weyl; Lipschitz Jacobian)",
                 {"sigma_center_lower": sigma_c, "center_radius_norm": dnorm, "lip_jacobian": lip,
                  "radius": float(radius), "drift": drift})


_CENTERS: dict = {}      # (model data, center, elementary mode) -> (sigma_c, dnorm, info); radius=auto reuses it


def center_sigma(model: IntervalModel, center: np.ndarray, dense_bytes: int | None = None,
                 block_bytes: int | None = None):
    """(a lower bound on sigma_min(J(c)), an upper bound on the norm of the enclosure's radius, info)
    from the interval Jacobian at the center (reverse mode, docs/theory.md 10.3): the whole J and
    gram_lower up to dense_bytes per array of J; above, column blocks of about block_bytes through a
    GramAccumulator (J J^T summed over the blocks, linalg.py), so memory stays bounded at m ~ 10^6."""

    key = (id(model.checked), np.asarray(center, dtype=np.float64).tobytes(), elementary_mode())
    hit = _CENTERS.get(key)
    if hit is not None and hit[0] is model.checked:
        return hit[1]
    dense_bytes = DENSE_J_BYTES if dense_bytes is None else dense_bytes
    block_bytes = BLOCK_J_BYTES if block_bytes is None else block_bytes
    rows = model.n * model.k
    blocks = getattr(model, "jacobian_blocks", None)
    if blocks is None or 8 * rows * model.m <= dense_bytes:
        J = model.at_point(center, True).J
        Jm, Jr = mid_rad(J)
        lam_c, info = gram_lower(Jm)
        value = (sqrt_down(lam_c) if lam_c is not None else None, nonneg_norm2_upper(Jr), info)
    else:
        acc = GramAccumulator()
        count = 0
        for _, _, Jb in blocks(center, max(1, block_bytes // (8 * max(rows, 1)))):
            acc.add_iv(Jb)
            count += 1
        lam_c, info = acc.lambda_min_lower()
        info["blocks"] = count
        value = (sqrt_down(lam_c) if lam_c is not None else None, acc.radius_norm_upper(), info)
    if len(_CENTERS) >= 4:
        _CENTERS.clear()
    _CENTERS[key] = (model.checked, value)
    return value


# --- nodes and rules ---------------------------------------------------------------------------------
def _const_node(value: np.ndarray, nd: int) -> BNode:
    iv = Iv(np.asarray(value, dtype=np.float64))
    return BNode(iv, iv, None, None, {}, frozenset(), nd)


def _dual(x: BNode, center: bool = False) -> Dual:
    return Dual(x.c if center else x.v, None, x.nd)


def _value(name: str, *args: BNode, **kwargs) -> tuple[Iv, Iv]:
    v, c, _ = _value_nd(name, *args, **kwargs)
    return v, c


def _value_nd(name: str, *args: BNode, **kwargs) -> tuple[Iv, Iv, int]:
    """The interval rule's enclosures over the ball and at the center, and the result's ndim."""
    rule = INTERVAL_RULES[name]
    out = rule(*(_dual(a) for a in args), **kwargs)
    c = rule(*(_dual(a, True) for a in args), **kwargs).v
    return out.v, c, out.nd


def _align(x: BNode, nd: int) -> BNode:
    """Insert per-sample axes of length 1 after the batch axis (as interval.expand_axis)."""
    k = nd - x.nd
    if k <= 0:
        return x
    d = expand_axis(Dual(x.v, None, x.nd), nd)
    dc = expand_axis(Dual(x.c, None, x.nd), nd)
    g = None if x.g is None else np.expand_dims(x.g, tuple(range(2, 2 + k)))
    h = None if x.h is None else np.expand_dims(x.h, tuple(range(3, 3 + k)))
    S = {p: frozenset(a + k if a >= 1 else a for a in axes) for p, axes in x.S.items()}
    return BNode(d.v, dc.v, g, h, S, x.deps, nd)


def _bcast_S(x: BNode, shape: tuple) -> dict:
    """S of an operand broadcast to `shape`: axes along which it is repeated are dropped."""
    own = x.v.shape
    pad = len(shape) - len(own)
    rep = {a for a in range(len(shape)) if shape[a] > 1 and (a < pad or own[a - pad] == 1)}
    return {p: axes - rep for p, axes in x.S.items()}


def _zeros_g(P, shape):
    return np.zeros((P,) + shape)


def _gh(x: BNode, P: int, shape: tuple):
    g = np.broadcast_to(x.g, (P,) + shape) if x.g is not None else _zeros_g(P, shape)
    h = np.broadcast_to(x.h, (P, P) + shape) if x.h is not None else np.zeros((P, P) + shape)
    return g, h


def _combine_S(a: BNode, b: BNode, shape: tuple, same: bool) -> dict:
    """S of an entrywise combination of a and b broadcast to `shape`. A block in both operands keeps
    an axis only when `same`: the two operands are ONE node read at the same index (a * a, a + a),
    so that entry e depends on the slice of a_e alone; two different nodes may share entries of the
    block (W and W[0] + W, W and tanh(W)), and then no axis is kept. Callers that read one node at
    two different index maps (W @ W) must not pass same=True (see _matmul)."""
    Sa, Sb = _bcast_S(a, shape), _bcast_S(b, shape)
    out = {}
    for p in a.deps | b.deps:
        if p in a.deps and p in b.deps:
            out[p] = (Sa[p] & Sb[p]) if same else frozenset()
        else:
            out[p] = Sa[p] if p in a.deps else Sb[p]
    return out


def _add_like(bm: BallModel, a: BNode, b: BNode, name: str) -> BNode:
    same = a is b
    nd = max(a.nd, b.nd)
    a, b = _align(a, nd), _align(b, nd)
    v, c = _value(name, a, b)
    shape = v.shape
    if a.g is None and b.g is None:
        return BNode(v, c, None, None, {}, frozenset(), nd)
    ga, ha = _gh(a, bm.P, shape)
    gb, hb = _gh(b, bm.P, shape)
    node = BNode(v, c, _uadd(ga, gb), _uadd(ha, hb), _combine_S(a, b, shape, same), a.deps | b.deps, nd)
    return bm.finish(node, v, c)


def _add(bm, a, b):
    return _add_like(bm, a, b, "add")


def _sub(bm, a, b):
    return _add_like(bm, a, b, "sub")


def _neg(bm, a):
    v, c = _value("neg", a)
    return BNode(v, c, a.g, a.h, a.S, a.deps, a.nd)


def _mul_bounds(bm: BallModel, a: BNode, b: BNode, shape: tuple):
    """g and h of the product a b (entrywise) on `shape`."""
    P = bm.P
    ma = np.broadcast_to(iv_mag(a.v), shape)
    mb = np.broadcast_to(iv_mag(b.v), shape)
    ga, ha = _gh(a, P, shape)
    gb, hb = _gh(b, P, shape)
    g = _uadd(_umul(ma, gb), _umul(mb, ga))
    cross = _uadd(_umul(ga[:, None], gb[None, :]), _umul(gb[:, None], ga[None, :]))
    h = _uadd(_uadd(_umul(ma, hb), _umul(mb, ha)), cross)
    return g, h


def _mul(bm, a, b):
    same = a is b
    nd = max(a.nd, b.nd)
    a, b = _align(a, nd), _align(b, nd)
    v, c = _value("mul", a, b)
    if a.g is None and b.g is None:
        return BNode(v, c, None, None, {}, frozenset(), nd)
    shape = v.shape
    g, h = _mul_bounds(bm, a, b, shape)
    return bm.finish(BNode(v, c, g, h, _combine_S(a, b, shape, same), a.deps | b.deps, nd), v, c)


def _chain(bm: BallModel, a: BNode, v: Iv, c: Iv, F1: np.ndarray, F2: np.ndarray) -> BNode:
    """f(a) with sup |f'| <= F1 and sup |f''| <= F2 over a's value enclosure (entrywise):
    grad f(a) = f'(a) grad a, Hess f(a) = f''(a) grad a grad a^T + f'(a) Hess a."""
    if a.g is None:
        return BNode(v, c, None, None, {}, frozenset(), a.nd)
    F1 = np.broadcast_to(F1, v.shape)
    F2 = np.broadcast_to(F2, v.shape)
    g = _umul(F1, a.g)
    h = _uadd(_umul(F2, _umul(a.g[:, None], a.g[None, :])), _umul(F1, a.h))
    return bm.finish(BNode(v, c, g, h, dict(a.S), a.deps, a.nd), v, c)


def _tanh(bm, a):
    v, c = _value("tanh", a)
    return _chain(bm, a, v, c, *derivative_magnitudes("tanh", a.v))


def _sigmoid(bm, a):
    v, c = _value("sigmoid", a)
    return _chain(bm, a, v, c, *derivative_magnitudes("sigmoid", a.v))


def _softplus(bm, a):
    v, c = _value("softplus", a)                        # softplus' = sigmoid, softplus'' = s (1 - s)
    return _chain(bm, a, v, c, *derivative_magnitudes("softplus", a.v))


def _exp(bm, a):
    v, c = _value("exp", a)
    _, top = point_bounds("exp", a.v.hi)
    return _chain(bm, a, v, c, top, top)


def _log(bm, a):
    v, c = _value("log", a)
    lo = a.v.lo
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        F1 = np.where(lo > 0, up(1.0 / lo), INF)
        F2 = np.where(lo > 0, up(1.0 / down(lo * lo)), INF)
    return _chain(bm, a, v, c, F1, F2)


def _sqrt(bm, a):
    v, c = _value("sqrt", a)
    lo = a.v.lo
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        s = down(np.sqrt(np.maximum(lo, 0.0)))
        F1 = np.where((lo > 0) & (s > 0), up(0.5 / s), INF)
        F2 = np.where((lo > 0) & (s > 0), up(0.25 / down(s * lo)), INF)
    return _chain(bm, a, v, c, F1, F2)


def _sin(bm, a):
    v, c = _value("sin", a)
    return _chain(bm, a, v, c, np.float64(1.0), np.float64(1.0))


def _cos(bm, a):
    v, c = _value("cos", a)
    return _chain(bm, a, v, c, np.float64(1.0), np.float64(1.0))


def _recip(bm, b: BNode) -> BNode:
    one = _const_node(np.ones((1,) * (b.nd + 1)), b.nd)
    v, c = _value("div", one, b)
    mig = iv_mig(b.v)
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        m2 = down(mig * mig)
        F1 = np.where(mig > 0, up(1.0 / m2), INF)
        F2 = np.where(mig > 0, up(2.0 / down(m2 * mig)), INF)
    return _chain(bm, b, v, c, F1, F2)


def _div(bm, a, b):
    if b.g is None:                     # division by a constant: a scaling
        nd = max(a.nd, b.nd)
        a2, b2 = _align(a, nd), _align(b, nd)
        v, c = _value("div", a2, b2)
        if a2.g is None:
            return BNode(v, c, None, None, {}, frozenset(), nd)
        with np.errstate(divide="ignore"):
            inv = np.broadcast_to(_u(1.0 / np.maximum(down(iv_mig(b2.v)), 0.0)), v.shape)   # 1/0 = inf
        ga, ha = _gh(a2, bm.P, v.shape)
        return bm.finish(BNode(v, c, _umul(inv, ga), _umul(inv, ha), _bcast_S(a2, v.shape), a2.deps, nd), v, c)
    node = _mul(bm, a, _recip(bm, b))
    nd = max(a.nd, b.nd)
    v, c = _value("div", _align(a, nd), _align(b, nd))      # the direct quotient enclosure
    node.v = Iv(np.maximum(node.v.lo, v.lo), np.minimum(node.v.hi, v.hi))
    node.c = Iv(np.maximum(node.c.lo, c.lo), np.minimum(node.c.hi, c.hi))
    return node


def _pow(bm, a: BNode, b: BNode, e: Expr) -> BNode:
    if b.g is None and b.v.point and b.v.lo.size == 1:
        value = float(b.v.lo.reshape(-1)[0])
        if value == math.floor(value) and abs(value) <= 64:
            n = int(value)
            if n == 0 or a.g is None:
                v, c = _value("pow", a, b)
                return BNode(v, c, None, None, {}, frozenset(), max(a.nd, b.nd))
            if n < 0:
                return _recip(bm, _pow(bm, a, _const_node(np.array(-value).reshape(1), 0), e))
            if n == 1:
                return a
            v, c = _value("pow", a, b)
            mag = iv_mag(a.v)
            with np.errstate(over="ignore"):
                F1 = _umul(np.float64(n), _ipow_up(mag, n - 1))
                F2 = _umul(np.float64(n * (n - 1)), _ipow_up(mag, n - 2))
            return _chain(bm, a, v, c, F1, F2)
    # general exponent: a ** b = exp(b log a)
    return _exp(bm, _mul(bm, b, _log(bm, a)))


def _ipow_up(x: np.ndarray, n: int) -> np.ndarray:
    out = np.ones_like(x)
    for _ in range(n):
        out = _umul(out, x)
    return out


def _reduce(bm: BallModel, x: BNode, u: int) -> tuple[np.ndarray, np.ndarray, dict]:
    """g, h and S of the sum of x over array axis u (>= 1)."""
    P = bm.P
    shape = x.v.shape
    g, h = _gh(x, P, shape)
    gs = np.empty((P,) + shape[:u] + shape[u + 1:])
    for p in range(P):
        sharp = p in x.deps and u in x.S.get(p, frozenset())
        gs[p] = _sqrt_sum_sq(g[p], u) if sharp else nonneg_sum_upper(g[p], u)
    hs = np.empty((P, P) + shape[:u] + shape[u + 1:])
    for p in range(P):
        for q in range(P):
            sp = p in x.deps and u in x.S.get(p, frozenset())
            sq = q in x.deps and u in x.S.get(q, frozenset())
            if sp and sq:
                hs[p, q] = np.max(h[p, q], axis=u)           # block diagonal: the largest block
            elif sp or sq:
                hs[p, q] = _sqrt_sum_sq(h[p, q], u)          # disjoint rows (or columns)
            else:
                hs[p, q] = nonneg_sum_upper(h[p, q], u)
    S = {p: frozenset(a if a < u else a - 1 for a in axes if a != u) for p, axes in x.S.items()}
    return gs, hs, S


def _sum(bm, x: BNode, axis=None) -> BNode:
    if x.nd == 0:
        return x
    v, c = _value("sum", x) if axis is None else _value("sum", x, axis=axis)
    axes = list(range(1, x.nd + 1)) if axis is None else [int(axis) % x.nd + 1]
    if x.g is None:
        return BNode(v, c, None, None, {}, frozenset(), x.nd - len(axes))
    node = x
    for u in sorted(axes, reverse=True):
        g, h, S = _reduce(bm, node, u)
        shape = g.shape[1:]
        node = BNode(Iv(np.zeros(shape)), Iv(np.zeros(shape)), g, h, S, node.deps, node.nd - 1)
    return bm.finish(node, v, c)


def _mean(bm, x: BNode, axis=None) -> BNode:
    if x.nd == 0:
        return x
    node = _sum(bm, x, axis)
    v, c = _value("mean", x) if axis is None else _value("mean", x, axis=axis)
    axes = list(range(1, x.nd + 1)) if axis is None else [int(axis) % x.nd + 1]
    count = int(np.prod([x.v.shape[a] for a in axes]))
    if node.g is None:
        return BNode(v, c, None, None, {}, frozenset(), node.nd)
    inv = float(up(1.0 / count))
    return bm.finish(BNode(v, c, _umul(np.float64(inv), node.g), _umul(np.float64(inv), node.h), node.S,
                           node.deps, node.nd), v, c)


def _index(x: BNode, subs: tuple) -> BNode:
    v = x.v.map(lambda z: z[(slice(None),) + subs])
    c = x.c.map(lambda z: z[(slice(None),) + subs])
    drop = sum(1 for s in subs if not isinstance(s, slice))
    if x.g is None:
        return BNode(v, c, None, None, {}, frozenset(), x.nd - drop)
    g = x.g[(slice(None), slice(None)) + subs]
    h = x.h[(slice(None), slice(None), slice(None)) + subs]
    # kept axes are renumbered; an integer index removes its axis
    mapping, out = {0: 0}, 1
    for i in range(1, x.nd + 1):
        s = subs[i - 1] if i - 1 < len(subs) else slice(None)
        if isinstance(s, slice):
            mapping[i] = out
            out += 1
    S = {p: frozenset(mapping[a] for a in axes if a in mapping) for p, axes in x.S.items()}
    return BNode(v, c, g, h, S, x.deps, x.nd - drop)


def _matmul(bm, a: BNode, b: BNode) -> BNode:
    """Per-sample matmul: the product expanded entrywise over the contracted axis, then summed."""
    v, c, vnd = _value_nd("matmul", a, b)
    if a.g is None and b.g is None:
        return BNode(v, c, None, None, {}, frozenset(), vnd)
    same = a is b
    a_vec, b_vec = a.nd == 1, b.nd == 1
    if a_vec:
        a = _insert_axis(a, a.nd)          # (B, k) -> (B, 1, k)   (a new second-to-last axis)
    if b_vec:
        b = _insert_axis(b, b.nd + 1)      # (B, k) -> (B, k, 1)
    nd = max(a.nd, b.nd)
    a, b = _align(a, nd), _align(b, nd)
    A = _insert_axis(a, nd + 1)            # (B, ..., i, k, 1)
    Bm = _insert_axis(b, nd - 1)           # (B, ..., 1, k, j)
    shape = np.broadcast_shapes(A.v.shape, Bm.v.shape)
    if int(np.prod(shape)) * (1 + bm.P + bm.P * bm.P) > MAX_ENTRIES:
        raise BallNotSupported(f"a matrix product too large for the ball rule ({shape})")
    # magnitudes and bounds on the expanded product
    g, h = _mul_bounds(bm, A, Bm, shape)
    S = _combine_S(A, Bm, shape, False)
    if same:
        S.update(_matmul_same_S(A, Bm, shape, nd, a_vec and b_vec))
    prod = BNode(Iv(np.zeros(shape)), Iv(np.zeros(shape)), g, h, S, a.deps | b.deps, nd + 1)
    gs, hs, S = _reduce(bm, prod, nd)      # the contracted axis k
    shape2 = gs.shape[1:]
    out_nd = nd
    if b_vec:
        gs, hs = gs[..., 0], hs[..., 0]
        S = {p: axes - {len(shape2) - 1} for p, axes in S.items()}
        out_nd -= 1
        shape2 = shape2[:-1]
    if a_vec:
        gs, hs = gs[..., 0, :] if not b_vec else gs[..., 0], hs[..., 0, :] if not b_vec else hs[..., 0]
        ax = len(shape2) - (2 if not b_vec else 1)
        S = {p: frozenset(x if x < ax else x - 1 for x in axes if x != ax) for p, axes in S.items()}
        out_nd -= 1
    node = BNode(v, c, np.ascontiguousarray(np.broadcast_to(gs, (bm.P,) + v.shape)),
                 np.ascontiguousarray(np.broadcast_to(hs, (bm.P, bm.P) + v.shape)), S, a.deps | b.deps, out_nd)
    return bm.finish(node, v, c)


def _matmul_same_S(A: BNode, Bm: BNode, shape: tuple, nd: int, vec: bool) -> dict:
    """S of the expanded product A[..., i, k, 1] * B[..., 1, k, j] when both factors are ONE node a
    (W @ W, v @ v). The entry (..., i, k, j) depends on the slices of a at (..., i, k) and at
    (..., k, j): the same node at two different index maps, so along i the entries share a[k, j],
    along j they share a[i, k], and along k the terms k = j and k' = i share a[i, j] (W @ W is not a
    sum of disjoint terms). An axis u is kept only when it is the SAME axis w of a in both index maps
    and w is in S_a: two entries that differ along u then read a at indices that differ along w, in
    either factor, hence disjoint slices. Those axes are the leading (batch) axes 1 .. nd-2, and, for
    a vector dotted with itself (v @ v = sum_k v_k^2), the contracted axis nd (k is axis 1 of v in
    both factors)."""
    keep = set(range(1, nd - 1)) | ({nd} if vec else set())
    both = _combine_S(A, Bm, shape, True)
    return {p: axes & keep for p, axes in both.items() if p in A.deps and p in Bm.deps}


def _insert_axis(x: BNode, pos: int) -> BNode:
    """A new axis of length 1 at array position pos (>= 1) of the value."""
    v = x.v.map(lambda z: np.expand_dims(z, pos))
    c = x.c.map(lambda z: np.expand_dims(z, pos))
    g = None if x.g is None else np.expand_dims(x.g, pos + 1)
    h = None if x.h is None else np.expand_dims(x.h, pos + 2)
    S = {p: frozenset(a if a < pos else a + 1 for a in axes) for p, axes in x.S.items()}
    return BNode(v, c, g, h, S, x.deps, x.nd + 1)


OPERATORS = {"add": _add, "sub": _sub, "mul": _mul, "div": _div, "pow": None, "matmul": _matmul, "neg": _neg}
CALLS = {"tanh": _tanh, "sigmoid": _sigmoid, "softplus": _softplus, "exp": _exp, "log": _log, "sin": _sin,
         "cos": _cos, "sqrt": _sqrt, "sum": _sum, "mean": _mean}
# a function without a Lipschitz derivative can have no ball rule (tests/test_interval.py checks)
_WITHOUT_BALL_RULE = " or ".join(", ".join(n for n in FUNCTION_NAMES if n not in CALLS).rsplit(", ", 1))
