"""Interval reverse mode: the model's Jacobian in theta at a POINT (the sound mode).

One forward pass records every node's value enclosure at the point (the value rules of
compile/interval.py, without derivatives); one backward pass then propagates interval adjoints
from the outputs to the parameters by a rule table keyed exactly like INTERVAL_RULES (a test
checks the keys): each rule maps the adjoint of a node to its arguments' adjoints.

Shapes. The model is written per sample and the data carry a leading sample axis, so a value is
(B, *s) with B the number of samples (1 when it does not depend on the sample). An adjoint is
(K, N, *s): K output entries seeded at once, N samples, and it keeps the sample axis even where the
value has none (a parameter's adjoint is its gradient for every sample separately). One backward
pass with the k output entries as seeds gives all n k rows of J: work O(n k m), where forward mode
at a point costs O(m) passes as large as the network.

Soundness. The exact Jacobian at theta is the chain rule evaluated at the exact intermediate
values: adjoint(argument) = sum over uses of adjoint(node) * (local derivative at the exact
values). Every exact value lies in its forward enclosure, so every local derivative lies in the
derivative enclosure taken over it (tanh' = 1 - tanh^2 over the enclosure of tanh, ..., the same
enclosures as the forward rules, from the same helpers), and each product, sum and quotient of
intervals below is rounded outward (compile/iv.py; compile/rounding.py states the facts of float64
arithmetic relied on). By induction from the seeds (exact zeros and ones) every computed adjoint
contains the exact one; at a kink of relu or abs, every element of the Clarke generalized Jacobian
(the derivative interval [0, 1] or [-1, 1] there).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..language.ast import Expr
from .interval import (
    INTERVAL_RULES,
    Dual,
    Walk,
    _clip01,
    _div_count,
    _integer_exponent,
    _softmax_iv,
    _trig,
    expand_axis,
    sigmoid_iv,
    unimodal_s1ms,
    walk,
)
from .iv import (
    Iv,
    iv_add,
    iv_div,
    iv_ipow,
    iv_matmul,
    iv_mul,
    iv_neg,
    iv_recip,
    iv_scale,
    iv_square,
    iv_sub,
    iv_sum,
)

REVERSE_CHUNK = 2 ** 22   # entries of the largest adjoint array per backward pass (samples x seeds chunked)


@dataclass(eq=False)
class Node:
    """One node of the forward pass: its value enclosure and whether it depends on theta."""

    op: str                    # a key of REVERSE_RULES, or "leaf" / "index"
    args: tuple = ()
    v: Iv | None = None        # value (B, *s)
    nd: int = 0                # per-sample ndim
    active: bool = False       # depends on theta
    kwargs: dict = field(default_factory=dict)
    name: str | None = None    # a parameter leaf's name
    extra: object = None       # index: the subscripts; pow: the integer exponent
    rows: tuple | None = None  # a parameter leaf in a column block: its leading-axis range (jacobian_blocks)


def leaf(v: Iv, nd: int, name: str | None = None) -> Node:
    return Node("leaf", v=v, nd=nd, active=name is not None, name=name)


def _const(value: float, nd: int = 0) -> Node:
    return leaf(Iv(np.full((1,) * (nd + 1), value, dtype=np.float64)), nd)


def _apply(op: str, args: tuple, kwargs: dict | None = None, extra=None) -> Node:
    """The node of a primitive: the forward rule's value enclosure (no derivative carried)."""
    kwargs = kwargs or {}
    out = INTERVAL_RULES[op](*(Dual(a.v, None, a.nd) for a in args), **kwargs)
    active = any(a.active for a in args)
    if op == "softmax" and args[0].nd == 0:       # softmax of a scalar is the constant 1
        active = False
    return Node(op, args, out.v, out.nd, active, kwargs, extra=extra)


# --- the forward pass ------------------------------------------------------------------------------
def trace(e: Expr, env: dict[str, Node]) -> Node:
    """The forward pass of an expression: names are looked up in env, then CONSTANTS (the walk of
    compile/interval.py's enclose, with a Node for each operator and function of REVERSE_RULES)."""
    return walk(e, env, _TRACE)


def _index(x: Node, subs: tuple, drop: int) -> Node:
    v = x.v.map(lambda z: z[(slice(None),) + subs])
    return Node("index", (x,), v, x.nd - drop, x.active, extra=subs)


def _operator(op: str, args: tuple) -> Node:
    if op == "pow":
        return _pow_node(*args)
    return _apply(op, args)


def _pow_node(a: Node, b: Node) -> Node:
    """As compile/interval.py's _pow: integer exponents (a constant) directly, negative ones as
    1 / a^-n, others as exp(b log a)."""
    n = None if b.active else _integer_exponent(Dual(b.v, None, b.nd))
    if n is None:
        return _apply("exp", (_apply("mul", (b, _apply("log", (a,)))),))
    nd = max(a.nd, b.nd)
    if n < 0:
        return _apply("div", (_const(1.0, nd), _pow_node(a, _const(float(-n)))))
    node = _apply("pow", (a, b), extra=n)
    node.active = a.active and n != 0
    return node


def covered(e: Expr) -> bool:
    """Whether every node of the expression has a reverse rule."""
    if e.op in ("number", "name"):
        return True
    if e.op == "index":
        return covered(e.args[0])
    key = e.attrs["func"] if e.op == "call" else e.op
    return key in REVERSE_RULES and all(covered(a) for a in e.args)


# --- the backward pass -----------------------------------------------------------------------------
def backward(node: Node, adj: Iv, grads: dict[str, Iv], live: set[int] | None = None) -> None:
    """Add the contributions of adj (the adjoint of node, (K, N, *s)) to the parameters' adjoints.
    live (ids of nodes): only these are entered (the subgraph above one column block's parameters);
    a leaf with rows keeps that range of its leading axis."""
    if not node.active or (live is not None and id(node) not in live):
        return
    if node.op == "leaf":
        if node.rows is not None and adj.shape[2] == node.v.shape[1]:   # not sliced by _matmul already
            r0, r1 = node.rows
            adj = adj.map(lambda z: z[:, :, r0:r1])
        grads[node.name] = adj if node.name not in grads else iv_add(grads[node.name], adj)
        return
    more = () if live is None else (live,)      # the three-argument call where no block is selected
    if node.op == "index":
        return backward(node.args[0], _scatter(adj, node), grads, *more)
    for arg, c in zip(node.args, REVERSE_RULES[node.op](node, adj)):
        if c is not None and arg.active:
            backward(arg, c, grads, *more)


def _scatter(adj: Iv, node: Node) -> Iv:
    x = node.args[0]
    shape = adj.shape[:2] + x.v.shape[1:]
    where = (slice(None), slice(None)) + node.extra

    def put(z):
        out = np.zeros(shape)
        out[where] = z
        return out
    return adj.map(put)


def _shape(node: Node, nd: int | None = None) -> tuple:
    """The per-sample shape of node's value, with length-1 axes in front up to nd dimensions."""
    s = tuple(node.v.shape[1:])
    return (1,) * ((nd or 0) - len(s)) + s


def _value(node: Node, nd: int) -> Iv:
    """node's value with per-sample axes inserted up to nd (as the forward rules broadcast)."""
    return expand_axis(Dual(node.v, None, node.nd), nd).v


def _unbroadcast(adj: Iv, shape: tuple) -> Iv:
    """Sum an adjoint (K, N, *s) down to (K, N, *shape), shape broadcast to s (numpy's rule: extra
    axes in front, length-1 axes stretched). Axes of length 1 are reshaped away, never summed (a
    sum of one term is exact, iv_sum would widen it)."""
    s = adj.shape[2:]
    extra = len(s) - len(shape)
    axes = tuple(2 + i for i in range(extra) if s[i] != 1)
    axes += tuple(2 + extra + i for i, (a, b) in enumerate(zip(shape, s[extra:])) if a == 1 and b != 1)
    if axes:
        adj = iv_sum(adj, axes)
    target = adj.shape[:2] + tuple(shape)
    return adj if adj.shape == target else adj.map(lambda z: z.reshape(target))


def _times(adj: Iv, factor: Iv, arg: Node) -> Iv | None:
    """adj * factor summed down to arg's shape (None when arg is constant)."""
    if not arg.active:
        return None
    return _unbroadcast(iv_mul(adj, factor), _shape(arg))


# --- the rules: node, adjoint -> the arguments' adjoints (None: not needed) --------------------------
def _add(node, adj):
    a, b = node.args
    return [_unbroadcast(adj, _shape(a)) if a.active else None,
            _unbroadcast(adj, _shape(b)) if b.active else None]


def _sub(node, adj):
    a, b = node.args
    return [_unbroadcast(adj, _shape(a)) if a.active else None,
            _unbroadcast(iv_neg(adj), _shape(b)) if b.active else None]


def _neg(node, adj):
    return [iv_neg(adj)]


def _mul(node, adj):
    a, b = node.args
    nd = node.nd
    return [_times(adj, _value(b, nd), a), _times(adj, _value(a, nd), b)]


def _div(node, adj):
    """q = a / b: dq/da = 1 / b, dq/db = -q / b (q enclosed by the node's value)."""
    a, b = node.args
    nd = node.nd
    bv = _value(b, nd)
    da = _unbroadcast(iv_div(adj, bv), _shape(a)) if a.active else None
    db = None
    if b.active:
        db = _times(adj, iv_neg(iv_div(node.v, bv)), b)
    return [da, db]


def _pow(node, adj):
    """a^n for an integer n >= 1 (the constant exponent): n a^(n-1)."""
    a, _ = node.args
    n = node.extra
    factor = iv_scale(iv_ipow(_value(a, node.nd), n - 1), float(n))
    return [_times(adj, factor, a), None]


def _swap(x: Iv) -> Iv:
    return x.map(lambda z: np.swapaxes(z, -1, -2))


def _matmul(node, adj):
    """Per-sample matmul: dA = adj B^T, dB = A^T adj (vectors promoted as the forward rule does;
    a contraction of length 1 is an outer product: one rounded product per entry)."""
    a, b = node.args
    a_vec, b_vec = a.nd == 1, b.nd == 1
    av, bv = a.v, b.v
    if a_vec:
        av = av.map(lambda z: z[..., None, :])
    if b_vec:
        bv = bv.map(lambda z: z[..., :, None])
    nd = max(a.nd + a_vec, b.nd + b_vec)
    av = expand_axis(Dual(av, None, a.nd + a_vec), nd).v
    bv = expand_axis(Dual(bv, None, b.nd + b_vec), nd).v
    if a_vec and b_vec:
        g = adj.map(lambda z: z[..., None, None])
    elif b_vec:
        g = adj.map(lambda z: z[..., None])
    elif a_vec:
        g = adj.map(lambda z: z[..., None, :])
    else:
        g = adj

    def product(p: Iv, q: Iv) -> Iv:
        if p.shape[-1] == 1:
            return iv_mul(p, q)
        return iv_matmul(p, q)
    da = db = None
    if a.op == "leaf" and a.rows is not None and a.nd == 2 and nd == 2:
        # W @ x with W in a column block of rows r0:r1: dW's rows need only those rows of the
        # output adjoint (the same entries as slicing the whole product afterwards)
        r0, r1 = a.rows
        da = _unbroadcast(product(g.map(lambda z: z[..., r0:r1, :]), _swap(bv)), (r1 - r0,) + a.v.shape[2:])
        a = None
    if a is not None and a.active:      # summed down to a's (promoted) shape, then a vector's axis removed again
        pa = ((1,) if a_vec else ()) + a.v.shape[1:]
        da = _unbroadcast(product(g, _swap(bv)), pa).map(lambda z: z.reshape(z.shape[:2] + a.v.shape[1:]))
    if b.active:
        pb = b.v.shape[1:] + ((1,) if b_vec else ())
        db = _unbroadcast(product(_swap(av), g), pb).map(lambda z: z.reshape(z.shape[:2] + b.v.shape[1:]))
    return [da, db]


def _elementwise(fprime: Callable[[Node, Node], Iv]):
    """A rule for f(a): adj * f'(a), with f' enclosed as the forward rule encloses it."""
    def rule(node, adj):
        a = node.args[0]
        return [iv_mul(adj, fprime(a, node))]
    return rule


def _relu_prime(a, y):
    return Iv((a.v.lo > 0).astype(np.float64), (a.v.hi >= 0).astype(np.float64))


def _abs_prime(a, y):
    return Iv(np.where(a.v.lo > 0, 1.0, -1.0), np.where(a.v.hi < 0, -1.0, 1.0))


def _reduced_axes(x: Node, axis) -> tuple[int, ...]:
    """The adjoint axes (K, N first) a reduction over a per-sample axis removes."""
    if axis is None:
        return tuple(range(2, 2 + x.nd))
    return (int(axis) % x.nd + 2,)


def _spread(adj: Iv, x: Node, axes: tuple[int, ...]) -> Iv:
    """adj with the reduced axes put back, broadcast to x's shape (exact)."""
    shape = adj.shape[:2] + _shape(x)
    return adj.map(lambda z: np.broadcast_to(np.expand_dims(z, axes), shape))


def _sum(node, adj):
    x = node.args[0]
    if x.nd == 0:
        return [adj]
    return [_spread(adj, x, _reduced_axes(x, node.kwargs.get("axis")))]


def _mean(node, adj):
    x = node.args[0]
    if x.nd == 0:
        return [adj]
    axes = _reduced_axes(x, node.kwargs.get("axis"))
    count = int(np.prod([x.v.shape[a - 1] for a in axes]))
    return [_spread(_div_count(adj, count), x, axes)]


def _softmax(node, adj):
    """s = softmax(x): dx_j = s_j (adj_j - sum_i adj_i s_i)."""
    x = node.args[0]
    ax = int(node.kwargs.get("axis", -1)) % max(x.nd, 1) + 2
    s = node.v
    dot = iv_sum(iv_mul(adj, s), ax).map(lambda z: np.expand_dims(z, ax))
    return [iv_mul(s, iv_sub(adj, dot))]


def _logsumexp(node, adj):
    """d logsumexp(x) / dx = softmax(x), enclosed as the forward rule encloses it."""
    x = node.args[0]
    if x.nd == 0:
        return [adj]
    ax = int(node.kwargs.get("axis", -1)) % max(x.nd, 1) + 2
    s = _softmax_iv(x.v, ax - 1)
    return [iv_mul(adj.map(lambda z: np.expand_dims(z, ax)), s)]


# The table. Keys: those of INTERVAL_RULES, exactly (tests/test_interval_reverse.py checks it).
REVERSE_RULES: dict[str, Callable[[Node, Iv], list]] = {
    # operators
    "add": _add,
    "sub": _sub,
    "mul": _mul,
    "div": _div,
    "pow": _pow,
    "matmul": _matmul,
    "neg": _neg,
    # functions: f' as the forward rules enclose it
    "tanh": _elementwise(lambda a, y: _clip01(iv_sub(Iv(np.float64(1.0)), iv_square(y.v)))),
    "relu": _elementwise(_relu_prime),
    "sigmoid": _elementwise(lambda a, y: unimodal_s1ms(y.v)),
    "softplus": _elementwise(lambda a, y: sigmoid_iv(a.v)),
    "exp": _elementwise(lambda a, y: y.v),
    "log": _elementwise(lambda a, y: iv_recip(a.v)),
    "sin": _elementwise(lambda a, y: _trig("cos", a.v)),
    "cos": _elementwise(lambda a, y: iv_neg(_trig("sin", a.v))),
    "sqrt": _elementwise(lambda a, y: iv_recip(iv_scale(y.v, 2.0))),
    "abs": _elementwise(_abs_prime),
    "sum": _sum,
    "mean": _mean,
    "softmax": _softmax,
    "logsumexp": _logsumexp,
}


_TRACE = Walk(REVERSE_RULES, _const, _index, call=_apply, operator=_operator)


# --- the Jacobian at a point ------------------------------------------------------------------------
def jacobian(body: Expr, env: Callable[[int, int], dict[str, Node]], n: int, out_shape: tuple,
             layout: list[tuple[str, tuple, int, int]], m: int) -> tuple[Iv, Iv] | None:
    """(F [n, k], J [n k, m]) at a point (None where the output's shape is not the declared one).
    env(i0, i1) gives the leaves for samples i0:i1 (parameters as active leaves); layout lists
    (name, shape, offset, size) of theta's blocks. Row i k + j of J is d F(x_i)_j / d theta."""
    k = int(np.prod(out_shape)) if out_shape else 1
    root = trace(body, env(0, n))
    if tuple(root.v.shape[1:]) != tuple(out_shape):
        return None                  # an output broadcast to the declared shape: forward mode
    vshape = (n,) + tuple(out_shape)
    F = Iv(np.broadcast_to(root.v.lo, vshape).reshape(n, k), np.broadcast_to(root.v.hi, vshape).reshape(n, k))
    Jlo, Jhi = np.zeros((n, k, m)), np.zeros((n, k, m))
    if not root.active:
        return F, Iv(Jlo.reshape(n * k, m), Jhi.reshape(n * k, m))
    largest = max(_largest(root), 1)
    seeds = max(1, min(k, REVERSE_CHUNK // largest))
    samples = max(1, min(n, REVERSE_CHUNK // (largest * seeds)))
    for i0 in range(0, n, samples):
        i1 = min(n, i0 + samples)
        node = root if (i0, i1) == (0, n) else trace(body, env(i0, i1))
        for j0 in range(0, k, seeds):
            j1 = min(k, j0 + seeds)
            seed = np.zeros((j1 - j0, i1 - i0, k))
            seed[np.arange(j1 - j0), :, np.arange(j0, j1)] = 1.0
            grads: dict[str, Iv] = {}
            backward(node, Iv(seed.reshape((j1 - j0, i1 - i0) + tuple(out_shape))), grads)
            for name, shape, off, size in layout:
                g = grads.get(name)
                if g is None:
                    continue
                full = (j1 - j0, i1 - i0) + tuple(shape)
                for dst, z in ((Jlo, g.lo), (Jhi, g.hi)):
                    dst[i0:i1, j0:j1, off:off + size] = np.broadcast_to(z, full).reshape(
                        j1 - j0, i1 - i0, size).transpose(1, 0, 2)
    return F, Iv(Jlo.reshape(n * k, m), Jhi.reshape(n * k, m))


def _largest(node: Node, params: bool = True) -> int:
    """The largest per-sample size among the active nodes (an adjoint's entries per seed and sample);
    params False: leaving out the parameter leaves (jacobian_blocks bounds those by the block)."""
    size = int(np.prod(node.v.shape[1:])) if node.active and (params or node.op != "leaf") else 0
    for a in node.args:
        size = max(size, _largest(a, params))
    return size


# --- the Jacobian at a point in column blocks ---------------------------------------------------------
def column_blocks(layout: list[tuple[str, tuple, int, int]], cols: int) -> list[list[tuple]]:
    """theta's columns in consecutive blocks of at most cols columns: lists of pieces (name, rows,
    c0, c1), rows None for a whole parameter, else the range of its leading axis that a parameter
    larger than cols is split into (one row at least, so a block may exceed cols by one row)."""
    blocks: list[list[tuple]] = []
    cur: list[tuple] = []
    used = 0
    for name, shape, off, size in layout:
        if size == 0:
            continue
        if used + size <= cols:
            cur.append((name, None, off, off + size))
            used += size
            continue
        if cur:
            blocks.append(cur)
            cur, used = [], 0
        if size <= cols or not shape:
            cur, used = [(name, None, off, off + size)], size
            continue
        per = size // shape[0]
        step = max(1, cols // per)
        for r0 in range(0, shape[0], step):
            r1 = min(shape[0], r0 + step)
            blocks.append([(name, (r0, r1), off + r0 * per, off + r1 * per)])
    if cur:
        blocks.append(cur)
    return blocks


def _mark(node: Node, rows: dict[str, tuple | None], seen: dict[int, bool]) -> bool:
    """Whether node depends on a parameter of the block (its id then goes into seen as True); sets
    the block's leading-axis ranges on the parameter leaves (None on the others)."""
    key = id(node)
    if key in seen:
        return seen[key]
    if node.op == "leaf":
        live = node.name is not None and node.name in rows
        node.rows = rows.get(node.name) if live else None
    else:
        live = False
        for a in node.args:
            live = _mark(a, rows, seen) or live
    seen[key] = live
    return live


def jacobian_blocks(body: Expr, env: Callable[[int, int], dict[str, Node]], n: int, out_shape: tuple,
                    layout: list[tuple[str, tuple, int, int]], cols: int):
    """(F [n, k], an iterator of (c0, c1, J[:, c0:c1])) at a point: as jacobian, but J in column blocks
    of column_blocks(layout, cols), so that no more than one block of J is held (None where the
    output's shape is not the declared one). Each block is its own backward passes entering only
    the nodes above the block's parameters, a large parameter's adjoint restricted to its rows
    (for W @ x, the matching rows of the output adjoint: _matmul). The entries are those of
    jacobian's J (the same rules on the same enclosures)."""
    k = int(np.prod(out_shape)) if out_shape else 1
    root = trace(body, env(0, n))
    if tuple(root.v.shape[1:]) != tuple(out_shape):
        return None
    vshape = (n,) + tuple(out_shape)
    F = Iv(np.broadcast_to(root.v.lo, vshape).reshape(n, k), np.broadcast_to(root.v.hi, vshape).reshape(n, k))
    shapes = {name: tuple(shape) for name, shape, _, _ in layout}
    inner = _largest(root, params=False)

    def blocks():
        for block in column_blocks(layout, cols):
            c0, c1 = block[0][2], block[-1][3]
            Jlo, Jhi = np.zeros((n, k, c1 - c0)), np.zeros((n, k, c1 - c0))
            if root.active:
                rows = {name: r for name, r, _, _ in block}
                largest = max(inner, c1 - c0, 1)
                seeds = max(1, min(k, REVERSE_CHUNK // largest))
                samples = max(1, min(n, REVERSE_CHUNK // (largest * seeds)))
                for i0 in range(0, n, samples):
                    i1 = min(n, i0 + samples)
                    node = root if (i0, i1) == (0, n) else trace(body, env(i0, i1))
                    seen: dict[int, bool] = {}
                    _mark(node, rows, seen)
                    live = {key for key, v in seen.items() if v}
                    for j0 in range(0, k, seeds):
                        j1 = min(k, j0 + seeds)
                        seed = np.zeros((j1 - j0, i1 - i0, k))
                        seed[np.arange(j1 - j0), :, np.arange(j0, j1)] = 1.0
                        grads: dict[str, Iv] = {}
                        backward(node, Iv(seed.reshape((j1 - j0, i1 - i0) + tuple(out_shape))), grads, live)
                        for name, r, a, b in block:
                            g = grads.get(name)
                            if g is None:
                                continue
                            shape = shapes[name] if r is None else (r[1] - r[0],) + shapes[name][1:]
                            full = (j1 - j0, i1 - i0) + shape
                            for dst, z in ((Jlo, g.lo), (Jhi, g.hi)):
                                dst[i0:i1, j0:j1, a - c0:b - c0] = np.broadcast_to(z, full).reshape(
                                    j1 - j0, i1 - i0, b - a).transpose(1, 0, 2)
            yield c0, c1, Iv(Jlo.reshape(n * k, c1 - c0), Jhi.reshape(n * k, c1 - c0))
    return F, blocks()
