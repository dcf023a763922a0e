"""Second-order interval forward mode: enclosures of a spec model's outputs F, their gradients and their
Hessians in theta over a box, and from them the Hessian of the least-squares loss (docs/theory.md 10.13).

Every node carries (v, d, h): the value (B, *s), the first derivatives (P, B, *s) and the second
derivatives (P, P, B, *s), each an interval array (compile/iv.py, outward rounding), d or h None when
they vanish. For every theta in the box the exact value, gradient and Hessian of the subexpression lie
in them. Rules (the chain rule and the product rule, written with interval operations):

    a + b, a - b, -a    linear
    a * b, a @ b        d = a' b + a b',  h = a'' b + a b'' + a'_p b'_q + a'_q b'_p
    f(a)                d = f'(a) a',     h = f'(a) a'' + f''(a) a'_p a'_q      (tanh, sigmoid, exp, sin, cos)
    sum, mean, index    linear

with f'(a) and f''(a) enclosed through the value's enclosure t = f(a) (tanh: f' = 1 - t^2,
f'' = -2 t (1 - t^2), intersected with |f''| <= 4 / (3 sqrt 3); sigmoid: s (1 - s), s (1 - s)(1 - 2 s);
exp: t, t; sin/cos by the first-order rules' enclosures). Anything else (relu and abs have no second
derivative at their kink; division by a parameter; softmax) is NotSupported: the Hessian rule then does
not apply and the other rules carry on.

For least squares L = (1/n) sum_{i,j} r_ij^2 (r = F - y),

    Hess L = (2/n) (J^T J + sum_{i,j} r_ij Hess F_ij),

enclosed by the interval product of J's enclosure with its transpose and the interval sum of r times the
output Hessians.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..language.ast import Expr
from ..language.evaluate import CONSTANTS, constant_int, subscript
from .interval import INTERVAL_RULES, Dual, NotSupported, sigmoid_iv, unimodal_s1ms
from .iv import Iv, iv_add, iv_mag, iv_matmul, iv_mig, iv_mul, iv_neg, iv_of, iv_sub, iv_sum, monotone
from .rounding import INF, down, up

TANH2 = float(up(4.0 / (3.0 * math.sqrt(3.0)) * (1 + 1e-15)))     # sup |tanh''| = 4 / (3 sqrt 3)
SIGMOID2 = float(up(1.0 / (6.0 * math.sqrt(3.0)) * (1 + 1e-15)))  # sup |sigmoid''| = 1 / (6 sqrt 3)


@dataclass
class HD:
    v: Iv                 # (B, *s)
    d: Iv | None          # (P, B, *s)
    h: Iv | None          # (P, P, B, *s)
    nd: int               # per-sample ndim


def _expand(x: HD, nd: int) -> HD:
    k = nd - x.nd
    if k <= 0:
        return x
    ax = tuple(range(1, 1 + k))
    return HD(x.v.map(lambda z: np.expand_dims(z, ax)),
              None if x.d is None else x.d.map(lambda z: np.expand_dims(z, tuple(a + 1 for a in ax))),
              None if x.h is None else x.h.map(lambda z: np.expand_dims(z, tuple(a + 2 for a in ax))), nd)


def _add(p: Iv | None, q: Iv | None) -> Iv | None:
    if p is None:
        return q
    if q is None:
        return p
    return iv_add(p, q)


def _outer(p: Iv, q: Iv) -> Iv:
    """(P, 1, ...) x (1, P, ...): the products p_a q_b of two derivative arrays."""
    return iv_mul(p.map(lambda z: z[:, None]), q.map(lambda z: z[None, :]))


def _mul_like(a: HD, b: HD, op) -> HD:
    """A bilinear operation op (elementwise product or matmul) with the product rule."""
    v = op(a.v, b.v)
    d = _add(None if a.d is None else op(a.d, b.v), None if b.d is None else op(a.v, b.d))
    h = _add(None if a.h is None else op(a.h, b.v), None if b.h is None else op(a.v, b.h))
    if a.d is not None and b.d is not None:
        # d2(ab)/dp dq gains a_p b_q + a_q b_p
        cross = iv_add(op(a.d.map(lambda z: z[:, None]), b.d.map(lambda z: z[None, :])),
                       op(a.d.map(lambda z: z[None, :]), b.d.map(lambda z: z[:, None])))
        h = _add(h, cross)
    return HD(v, d, h, max(a.nd, b.nd))


def _binary(a: HD, b: HD) -> tuple[HD, HD, int]:
    nd = max(a.nd, b.nd)
    return _expand(a, nd), _expand(b, nd), nd


def _hd_add(a: HD, b: HD) -> HD:
    a, b, nd = _binary(a, b)
    return HD(iv_add(a.v, b.v), _add(a.d, b.d), _add(a.h, b.h), nd)


def _hd_neg(a: HD) -> HD:
    return HD(iv_neg(a.v), None if a.d is None else iv_neg(a.d), None if a.h is None else iv_neg(a.h), a.nd)


def _hd_sub(a: HD, b: HD) -> HD:
    return _hd_add(a, _hd_neg(b))


def _hd_mul(a: HD, b: HD) -> HD:
    a, b, nd = _binary(a, b)
    out = _mul_like(a, b, iv_mul)
    out.nd = nd
    return out


def _hd_div(a: HD, b: HD) -> HD:
    if b.d is not None:
        raise NotSupported("a division by a parameter-dependent value (the Hessian rule)", None)
    one = Iv(np.ones_like(b.v.lo))
    inv = INTERVAL_RULES["div"](Dual(one, None, b.nd), Dual(b.v, None, b.nd)).v
    return _hd_mul(a, HD(inv, None, None, b.nd))


def _hd_pow(a: HD, b: HD) -> HD:
    n = None
    if b.d is None and b.v.point and b.v.lo.size == 1:
        value = float(b.v.lo.reshape(-1)[0])
        if value == math.floor(value) and 0 <= value <= 8:
            n = int(value)
    if n is None:
        raise NotSupported("a power other than a small nonnegative integer (the Hessian rule)", None)
    out = HD(Iv(np.ones((1,) * (a.nd + 1))), None, None, a.nd)
    for _ in range(n):
        out = _hd_mul(out, a)
    return out


def _hd_matmul(a: HD, b: HD) -> HD:
    a_vec, b_vec = a.nd == 1, b.nd == 1

    def lift(x: HD, where) -> HD:
        return HD(x.v.map(lambda z: where(z)), None if x.d is None else x.d.map(where),
                  None if x.h is None else x.h.map(where), 2)
    if a_vec:
        a = lift(a, lambda z: z[..., None, :])
    if b_vec:
        b = lift(b, lambda z: z[..., :, None])
    nd = max(a.nd, b.nd)
    a, b = _expand(a, nd), _expand(b, nd)
    out = _mul_like(a, b, iv_matmul)
    out_nd = nd
    drop = []
    if b_vec:
        drop.append(lambda z: z[..., 0])
        out_nd -= 1
    if a_vec:
        drop.append((lambda z: z[..., 0, :]) if not b_vec else (lambda z: z[..., 0]))
        out_nd -= 1
    for f in drop:
        out = HD(out.v.map(f), None if out.d is None else out.d.map(f), None if out.h is None else out.h.map(f),
                 out_nd)
    out.nd = out_nd
    return out


def _chain(a: HD, v: Iv, f1: Iv, f2: Iv) -> HD:
    if a.d is None:
        return HD(v, None, None, a.nd)
    d = iv_mul(f1, a.d)
    h = iv_mul(f2, _outer(a.d, a.d))
    if a.h is not None:
        h = iv_add(h, iv_mul(f1, a.h))
    return HD(v, d, h, a.nd)


def _first(name: str, a: HD) -> tuple[Iv, Iv]:
    """The first-order rule table's value and first-derivative enclosures of f at a's value."""
    unit = Iv(np.ones((1,) + a.v.shape))
    out = INTERVAL_RULES[name](Dual(a.v, unit, a.nd))
    return out.v, Iv(out.d.lo[0], out.d.hi[0])


def activation_derivatives(name: str, z: Iv) -> tuple[Iv, Iv, Iv]:
    """(s, s', s'') enclosed over z for s = tanh, sigmoid or softplus (s' = sigmoid, s'' its
    derivative): the first-order rules' value and derivative, s'' from them as below."""
    a = HD(z, None, None, 0)
    if name == "softplus":
        v, _ = _first("softplus", a)
        f1, f2 = _first("sigmoid", a)
        return v, f1, f2
    v, f1 = _first(name, a)
    if name == "tanh":
        f2 = iv_mul(iv_mul(Iv(np.float64(-2.0)), v), f1)
        f2 = Iv(np.maximum(f2.lo, -TANH2), np.minimum(f2.hi, TANH2))
        return v, f1, Iv(f2.lo, np.maximum(f2.hi, f2.lo))
    if name == "sigmoid":
        return v, f1, iv_mul(f1, iv_sub(Iv(np.float64(1.0)), iv_mul(Iv(np.float64(2.0)), v)))
    raise NotSupported(f"the function '{name}' (no second derivative rule)", None)


def _up_nan(x):
    with np.errstate(over="ignore", invalid="ignore"):
        return np.where(np.isnan(x), INF, up(x))


def derivative_magnitudes(name: str, z: Iv) -> tuple[np.ndarray, np.ndarray]:
    """(F1, F2) >= (sup |s'|, sup |s''|) over z, entrywise, for s = tanh, sigmoid or softplus: from
    the monotone value enclosure (tanh' = 1 - tanh^2, tanh'' = -2 tanh tanh'; sigmoid' = s (1 - s),
    sigmoid'' = sigmoid' (1 - 2 s); softplus' = sigmoid), capped by the global maxima."""
    with np.errstate(over="ignore", invalid="ignore"):
        if name == "tanh":
            t = monotone("tanh", z)
            mig = iv_mig(t)
            F1 = np.clip(_up_nan(1.0 - down(mig * mig)), 0.0, 1.0)
            return F1, np.minimum(TANH2, _up_nan(_up_nan(2.0 * iv_mag(t)) * F1))
        s = sigmoid_iv(z)
        if name == "softplus":
            return s.hi, unimodal_s1ms(s).hi
        if name == "sigmoid":
            F1 = unimodal_s1ms(s).hi                                     # s (1 - s) <= 1/4
            one_minus_2s = np.maximum(np.abs(_up_nan(1.0 - down(2.0 * s.lo))), np.abs(down(1.0 - up(2.0 * s.hi))))
            return F1, np.minimum(SIGMOID2, _up_nan(F1 * _up_nan(one_minus_2s)))
    raise NotSupported(f"the function '{name}' (no second derivative rule)", None)


def _hd_tanh(a: HD) -> HD:
    return _chain(a, *activation_derivatives("tanh", a.v))


def _hd_sigmoid(a: HD) -> HD:
    return _chain(a, *activation_derivatives("sigmoid", a.v))


def _hd_exp(a: HD) -> HD:
    e, _ = _first("exp", a)
    return _chain(a, e, e, e)


def _hd_sin(a: HD) -> HD:
    s, c = _first("sin", a)
    return _chain(a, s, c, iv_neg(s))


def _hd_cos(a: HD) -> HD:
    c, ms = _first("cos", a)
    return _chain(a, c, ms, iv_neg(c))


def _axes(x: HD, axis):
    if x.nd == 0:
        return None, 0
    if axis is None:
        return tuple(range(1, x.nd + 1)), 0
    return (int(axis) % x.nd + 1,), x.nd - 1


def _hd_sum(x: HD, axis=None) -> HD:
    ax, nd = _axes(x, axis)
    if ax is None:
        return x
    return HD(iv_sum(x.v, ax), None if x.d is None else iv_sum(x.d, tuple(a + 1 for a in ax)),
              None if x.h is None else iv_sum(x.h, tuple(a + 2 for a in ax)), nd)


def _hd_mean(x: HD, axis=None) -> HD:
    ax, _ = _axes(x, axis)
    if ax is None:
        return x
    count = int(np.prod([x.v.shape[a] for a in ax]))
    s = _hd_sum(x, axis)

    def div(z: Iv | None):
        if z is None:
            return None
        with np.errstate(invalid="ignore"):
            return iv_of(down(z.lo / count), up(z.hi / count))
    return HD(div(s.v), div(s.d), div(s.h), s.nd)


RULES = {"add": _hd_add, "sub": _hd_sub, "mul": _hd_mul, "div": _hd_div, "pow": _hd_pow,
         "matmul": _hd_matmul, "neg": _hd_neg, "tanh": _hd_tanh, "sigmoid": _hd_sigmoid, "exp": _hd_exp,
         "sin": _hd_sin, "cos": _hd_cos, "sum": _hd_sum, "mean": _hd_mean}


def enclose2(e: Expr, env: dict[str, HD]) -> HD:
    op = e.op
    if op == "number":
        return HD(Iv(np.array(float(e.attrs["value"])).reshape(1)), None, None, 0)
    if op == "name":
        name = e.attrs["id"]
        if name in env:
            return env[name]
        return HD(Iv(np.array(CONSTANTS[name], dtype=np.float64).reshape(1)), None, None, 0)
    if op == "index":
        x = enclose2(e.args[0], env)
        subs = tuple(subscript(s) for s in e.args[1:])
        drop = sum(1 for s in subs if not isinstance(s, slice))
        return HD(x.v.map(lambda z: z[(slice(None),) + subs]),
                  None if x.d is None else x.d.map(lambda z: z[(slice(None),) * 2 + subs]),
                  None if x.h is None else x.h.map(lambda z: z[(slice(None),) * 3 + subs]), x.nd - drop)
    if op == "call":
        func = e.attrs["func"]
        rule = RULES.get(func)
        if rule is None:
            raise NotSupported(f"the function '{func}' in the Hessian rule (no second derivative rule)", e)
        kwargs = {k: constant_int(v) for k, v in e.kwargs.items()}
        return rule(*(enclose2(a, env) for a in e.args), **kwargs)
    rule = RULES.get(op)
    if rule is None:
        raise NotSupported(f"the operator '{op}' in the Hessian rule", e)
    try:
        return rule(*(enclose2(a, env) for a in e.args))
    except NotSupported as exc:
        raise NotSupported(exc.message, exc.expr or e) from None


def output_derivatives(model, lo: np.ndarray, hi: np.ndarray) -> tuple[Iv, Iv, Iv]:
    """(F [n k], J [n k, m], H [n k, m, m]) over the box [lo, hi] for an IntervalModel (compile/
    interval_model.py): values, gradients and Hessians of every output in theta."""
    m = model.m
    env: dict[str, HD] = {name: HD(Iv(value[None]), None, None, value.ndim)
                          for name, value in model.constants.items()}
    point = lo is hi
    for name, shape, off, size in zip(model.names, model.shapes, model.offsets, model.sizes):
        plo = lo[off:off + size].reshape((1,) + shape)
        v = Iv(plo) if point else Iv(plo, hi[off:off + size].reshape((1,) + shape))
        eye = np.zeros((m, size))
        eye[off + np.arange(size), np.arange(size)] = 1.0
        env[name] = HD(v, Iv(eye.reshape((m, 1) + shape)), None, len(shape))
    env[model.arg] = HD(Iv(model.x), None, None, model.x.ndim - 1)
    out = enclose2(model.body, env)
    n, k = model.n, model.k
    vshape = (n,) + tuple(model.out_shape)
    F = Iv(np.broadcast_to(out.v.lo, vshape).reshape(n * k), np.broadcast_to(out.v.hi, vshape).reshape(n * k))
    if out.d is None:
        J = Iv(np.zeros((n * k, m)))
    else:
        J = Iv(*(np.ascontiguousarray(np.broadcast_to(z, (m,) + vshape).reshape(m, n * k).T)
                 for z in (out.d.lo, out.d.hi)))
    if out.h is None:
        H = Iv(np.zeros((n * k, m, m)))
    else:
        H = Iv(*(np.ascontiguousarray(np.moveaxis(np.broadcast_to(z, (m, m) + vshape).reshape(m, m, n * k), -1, 0))
                 for z in (out.h.lo, out.h.hi)))
    return F, J, H


def loss_hessian_parts(model, lo: np.ndarray, hi: np.ndarray, F: Iv | None = None) -> tuple[Iv, Iv]:
    """(J, C) over [lo, hi] for least squares: the Jacobian enclosure (its mean-value form
    J(c) + Hess F(box)(theta - c) intersected with the forward mode's) and C = sum_e r_e Hess F_e, so that
    Hess L = (2/n)(J^T J + C). F: a (tighter) enclosure of the outputs, intersected with the forward mode's."""
    if not model.least_squares:
        raise NotSupported(f"the Hessian rule for loss '{model.loss.name}' (least squares only)", None)
    Fh, J, H = output_derivatives(model, lo, hi)
    y = Iv(model.yk.reshape(-1))
    mv = None
    if lo is not hi:
        # mean-value forms: J(c) + Hess F(box)(theta - c) for the Jacobian, and for C
        #   sum_e r_e(c) Hess F_e + sum_q (theta - c)_q sum_e J_eq Hess F_e,
        # where the sums over the samples keep their signs (cancellation) before the width enters
        c = np.minimum(np.maximum(0.5 * lo + 0.5 * hi, lo), hi)
        Fc, Jc, _ = output_derivatives(model, c, c)
        delta = Iv(down(lo - c), up(hi - c))
        Jmv = iv_add(Jc, iv_matmul(H, delta))
        Jn = Iv(np.maximum(J.lo, Jmv.lo), np.minimum(J.hi, Jmv.hi))
        rc = iv_sub(Fc, y)
        T = iv_sum(iv_mul(Iv(J.lo[:, :, None, None], J.hi[:, :, None, None]), H.map(lambda z: z[:, None])), 0)
        mv = iv_add(iv_sum(iv_mul(Iv(rc.lo[:, None, None], rc.hi[:, None, None]), H), 0),
                    iv_sum(iv_mul(Iv(delta.lo[:, None, None], delta.hi[:, None, None]), T), 0))
        J = Iv(Jn.lo, np.maximum(Jn.hi, Jn.lo))
    if F is not None:
        Ff = Iv(F.lo.reshape(-1), F.hi.reshape(-1))
        Fh = Iv(np.maximum(Fh.lo, Ff.lo), np.minimum(Fh.hi, Ff.hi))
        Fh = Iv(Fh.lo, np.maximum(Fh.hi, Fh.lo))
    r = iv_sub(Fh, y)
    C = iv_sum(iv_mul(Iv(r.lo[:, None, None], r.hi[:, None, None]), H), 0)
    if mv is not None:
        C = Iv(np.maximum(C.lo, mv.lo), np.minimum(C.hi, mv.hi))
        C = Iv(C.lo, np.maximum(C.hi, C.lo))
    return J, C


def loss_hessian(model, lo: np.ndarray, hi: np.ndarray, F: Iv | None = None) -> Iv:
    """An interval enclosure of Hess L over [lo, hi] for least squares: (2/n)(J^T J + sum_e r_e Hess F_e)."""
    J, C = loss_hessian_parts(model, lo, hi, F)
    JT = Iv(np.ascontiguousarray(J.lo.T), np.ascontiguousarray(J.hi.T))
    total = iv_add(iv_matmul(JT, J), C)
    n = model.n
    return iv_of(down(down(2.0 * total.lo) / n), up(up(2.0 * total.hi) / n))
