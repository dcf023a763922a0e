"""A rigorous, independent oracle for the sound mode's tests (micrograd style).

Expressions are evaluated at ONE double parameter point with python-flint's arb balls (200 bits)
on numpy object arrays of scalar dual numbers (value, derivative along one direction), one pass
per parameter coordinate. Nothing here uses certifier's interval code: the only shared pieces are
the parsed expression tree and the meaning of each operator. An arb ball contains the exact real
value, so "ball inside the enclosure" is an exact test of an enclosure.
"""
from __future__ import annotations

import math

import flint
import numpy as np

flint.ctx.prec = 200
arb = flint.arb


class Undefined(Exception):
    """The point is where the function is undefined or not differentiable (log of x <= 0, relu
    exactly at 0, ...): the tests skip such points."""


class D:
    __slots__ = ("v", "d")

    def __init__(self, v, d=None):
        self.v = v if isinstance(v, arb) else arb(v)
        self.d = arb(0) if d is None else (d if isinstance(d, arb) else arb(d))

    @staticmethod
    def lift(x):
        return x if isinstance(x, D) else D(arb(float(x)) if not isinstance(x, arb) else x)

    def __add__(self, o):
        o = D.lift(o)
        return D(self.v + o.v, self.d + o.d)

    __radd__ = __add__

    def __sub__(self, o):
        o = D.lift(o)
        return D(self.v - o.v, self.d - o.d)

    def __rsub__(self, o):
        return D.lift(o) - self

    def __mul__(self, o):
        o = D.lift(o)
        return D(self.v * o.v, self.d * o.v + self.v * o.d)

    __rmul__ = __mul__

    def __truediv__(self, o):
        o = D.lift(o)
        if not (o.v > 0 or o.v < 0):
            raise Undefined("division by a ball containing 0")
        q = self.v / o.v
        return D(q, (self.d - q * o.d) / o.v)

    def __rtruediv__(self, o):
        return D.lift(o) / self

    def __neg__(self):
        return D(-self.v, -self.d)


def _sign(x: arb) -> int:
    if x > 0:
        return 1
    if x < 0:
        return -1
    raise Undefined("at a kink")


def f_exp(x: D) -> D:
    e = x.v.exp()
    return D(e, e * x.d)


def f_log(x: D) -> D:
    if not x.v > 0:
        raise Undefined("log of x <= 0")
    return D(x.v.log(), x.d / x.v)


def f_tanh(x: D) -> D:
    t = x.v.tanh()
    return D(t, (1 - t * t) * x.d)


def f_sigmoid(x: D) -> D:
    s = 1 / (1 + (-x.v).exp())
    return D(s, s * (1 - s) * x.d)


def f_softplus(x: D) -> D:
    s = 1 / (1 + (-x.v).exp())
    return D(x.v.exp().log1p(), s * x.d)


def f_relu(x: D) -> D:
    return x if _sign(x.v) > 0 else D(0, 0)


def f_abs(x: D) -> D:
    return x if _sign(x.v) > 0 else -x


def f_sin(x: D) -> D:
    return D(x.v.sin(), x.v.cos() * x.d)


def f_cos(x: D) -> D:
    return D(x.v.cos(), -x.v.sin() * x.d)


def f_sqrt(x: D) -> D:
    if not x.v > 0:
        raise Undefined("sqrt at x <= 0")
    s = x.v.sqrt()
    return D(s, x.d / (2 * s))


UNARY = {"exp": f_exp, "log": f_log, "tanh": f_tanh, "sigmoid": f_sigmoid, "softplus": f_softplus,
         "relu": f_relu, "abs": f_abs, "sin": f_sin, "cos": f_cos, "sqrt": f_sqrt}


def _vec(fn):
    return np.vectorize(fn, otypes=[object])


def _pow(a, b):
    """Integer exponents exactly; otherwise exp(b log a)."""
    a, b = np.broadcast_arrays(np.asarray(a, dtype=object), np.asarray(b, dtype=object))
    out = np.empty(a.shape, dtype=object)
    for idx in np.ndindex(a.shape):
        x, p = D.lift(a[idx]), D.lift(b[idx])
        pv = p.v
        if p.d == 0 and pv.is_exact() and float(pv.mid()) == math.floor(float(pv.mid())) \
                and abs(float(pv.mid())) <= 64:
            n = int(float(pv.mid()))
            if n == 0:
                out[idx] = D(1, 0)
                continue
            base = x if n > 0 else D(1) / x
            k = abs(n)
            val = D(1, 0)
            for _ in range(k):
                val = val * base
            out[idx] = val
        else:
            out[idx] = f_exp(p * f_log(x))
    return out


def _reduce(fn_name):
    def rule(x, axis=None):
        x = np.asarray(x, dtype=object)
        if x.ndim == 0:
            return x
        s = np.sum(x, axis=axis)
        if fn_name == "mean":
            count = x.size if axis is None else x.shape[axis]
            s = _vec(lambda z: z / count)(s) if np.ndim(s) else s / count
        return s
    return rule


def _softmax(x, axis=-1):
    x = np.asarray(x, dtype=object)
    if x.ndim == 0:
        return np.asarray(D(1, 0), dtype=object)
    e = _vec(f_exp)(x)
    tot = np.sum(e, axis=axis, keepdims=True)
    return _vec(lambda a, b: a / b)(e, tot)


def _logsumexp(x, axis=-1):
    x = np.asarray(x, dtype=object)
    if x.ndim == 0:
        return x
    e = _vec(f_exp)(x)
    return _vec(f_log)(np.sum(e, axis=axis))


FUNCS = {**{k: _vec(v) for k, v in UNARY.items()},
         "sum": _reduce("sum"), "mean": _reduce("mean"), "softmax": _softmax, "logsumexp": _logsumexp}

OPS = {
    "add": lambda a, b: np.asarray(a, dtype=object) + np.asarray(b, dtype=object),
    "sub": lambda a, b: np.asarray(a, dtype=object) - np.asarray(b, dtype=object),
    "mul": lambda a, b: np.asarray(a, dtype=object) * np.asarray(b, dtype=object),
    "div": lambda a, b: _vec(lambda p, q: D.lift(p) / D.lift(q))(a, b),
    "neg": lambda a: -np.asarray(a, dtype=object),
    "pow": _pow,
    "matmul": lambda a, b: np.matmul(np.asarray(a, dtype=object), np.asarray(b, dtype=object)),
}

CONSTANTS = {"pi": math.pi}   # the double, as certify reads it


def _const_int(e) -> int:
    if e.op == "neg":
        return -_const_int(e.args[0])
    return int(e.attrs["value"])


def evaluate(e, env):
    op = e.op
    if op == "number":
        return np.asarray(D(float(e.attrs["value"])), dtype=object)
    if op == "name":
        name = e.attrs["id"]
        return env[name] if name in env else np.asarray(D(CONSTANTS[name]), dtype=object)
    if op == "index":
        value = np.asarray(evaluate(e.args[0], env), dtype=object)
        subs = []
        for s in e.args[1:]:
            if s.op == "slice":
                lo, hi = (None if a.op == "none" else _const_int(a) for a in s.args)
                subs.append(slice(lo, hi))
            else:
                subs.append(_const_int(s))
        return value[tuple(subs)]
    if op == "call":
        args = [evaluate(a, env) for a in e.args]
        kwargs = {k: _const_int(v) for k, v in e.kwargs.items()}
        return FUNCS[e.attrs["func"]](*args, **kwargs)
    return OPS[op](*(evaluate(a, env) for a in e.args))


def lift_array(a, direction=None):
    a = np.asarray(a, dtype=np.float64)
    out = np.empty(a.shape, dtype=object)
    for idx in np.ndindex(a.shape):
        out[idx] = D(arb(float(a[idx])), 0 if direction is None else arb(float(direction[idx])))
    return out


def model_at(body, arg, x, y, params: dict, constants: dict, theta: np.ndarray):
    """Rigorous F [n, k], J [n k, m], L, grad L and R at the double point theta (balls)."""
    names = list(params)
    shapes = [np.shape(params[k]) for k in names]
    sizes = [int(np.prod(s)) if s else 1 for s in shapes]
    m = sum(sizes)
    n = x.shape[0]
    columns = []
    F = None
    for j in range(m):
        direction = np.zeros(m)
        direction[j] = 1.0
        env = {k: lift_array(v) for k, v in constants.items()}
        off = 0
        for name, shape, size in zip(names, shapes, sizes):
            env[name] = lift_array(theta[off:off + size].reshape(shape), direction[off:off + size].reshape(shape))
            off += size
        outs = []
        for i in range(n):
            env[arg] = lift_array(x[i])
            outs.append(np.asarray(evaluate(body, env), dtype=object).reshape(-1))
        out = np.stack(outs)                       # [n, k] of D
        if F is None:
            F = np.vectorize(lambda z: z.v, otypes=[object])(out)
        columns.append(np.vectorize(lambda z: z.d, otypes=[object])(out).reshape(-1))
    J = np.stack(columns, axis=1)                  # [n k, m]
    r = F - np.asarray(y, dtype=np.float64).reshape(F.shape).astype(object)
    r = np.vectorize(lambda z: z if isinstance(z, arb) else arb(float(z)), otypes=[object])(r)
    L = sum((z * z for z in r.reshape(-1)), arb(0)) / n
    rv = r.reshape(-1)
    grad = np.array([sum((J[i, j] * rv[i] for i in range(len(rv))), arb(0)) * 2 / n for j in range(m)],
                    dtype=object)
    gsq = sum((g * g for g in grad), arb(0))
    R = gsq / (4 * L) if L > 0 else None
    return F, J, L, grad, R


def inside(ball: arb, lo: float, hi: float) -> bool:
    """The ball lies in [lo, hi] (certainly)."""
    return bool(arb(float(lo)) <= ball) and bool(ball <= arb(float(hi)))


def all_inside(balls, lo, hi) -> tuple[bool, tuple | None]:
    balls = np.asarray(balls, dtype=object)
    lo = np.broadcast_to(np.asarray(lo, dtype=np.float64), balls.shape)
    hi = np.broadcast_to(np.asarray(hi, dtype=np.float64), balls.shape)
    for idx in np.ndindex(balls.shape):
        if not inside(balls[idx], lo[idx], hi[idx]):
            return False, (idx, balls[idx], lo[idx], hi[idx])
    return True, None
