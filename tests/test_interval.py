"""Soundness of the interval domain (certifier/compile/interval.py, rounding.py).

Every check compares an enclosure with a rigorous arb evaluation (tests/arb_oracle.py) at points
of the box: the exact value must lie inside the enclosure, for values, Jacobians, L, grad L, and
R must lie above every rule's bound."""
from __future__ import annotations

import math
from types import SimpleNamespace

import arb_oracle as oracle
import numpy as np
import pytest
from arb_oracle import Undefined, all_inside, arb, inside
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from certifier.analyse.sound import ball as ball_domain
from certifier.check.shapes import SHAPE_RULES
from certifier.compile import degree as DEG
from certifier.compile import interval as I
from certifier.compile import interval_model as IM
from certifier.compile import iv as IV
from certifier.compile import rounding as rd
from certifier.compile.two_layer import ACTIVATIONS
from certifier.language.ast import Expr
from certifier.language.evaluate import FUNCTIONS, OPERATORS
from certifier.language.primitives import ELEMENTWISE, FUNCTION_KEYWORDS, FUNCTION_NAMES, OPERATOR_NAMES, PRIMITIVES
from certifier.parse import parse

SETTINGS = dict(deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])


# --- the tables ---------------------------------------------------------------------------------------
def test_every_interpretation_has_a_rule_for_every_primitive():
    assert set(OPERATORS) == set(OPERATOR_NAMES) and set(FUNCTIONS) == set(FUNCTION_NAMES)
    keys = set(PRIMITIVES)
    assert set(I.INTERVAL_RULES) == keys
    assert set(DEG.DEGREE_RULES) == keys
    assert set(SHAPE_RULES) == keys
    # the ball domain: a rule for every operator, none for a function without a Lipschitz derivative
    assert set(ball_domain.OPERATORS) == set(OPERATOR_NAMES)
    assert set(ball_domain.CALLS) <= {n for n in FUNCTION_NAMES if PRIMITIVES[n].lipschitz_derivative}
    # the two-layer fast path takes every elementwise function as its activation
    assert set(ACTIVATIONS) == set(ELEMENTWISE)


def test_flags_derive_the_tables_as_they_were_written():
    """The derived entries are those the tables listed by hand before the registry."""
    assert ELEMENTWISE == ("tanh", "relu", "sigmoid", "softplus", "exp", "log", "sin", "cos", "sqrt", "abs")
    assert FUNCTION_KEYWORDS == {f: ("axis",) for f in ("sum", "mean", "softmax", "logsumexp")}
    assert {n for n, r in DEG.DEGREE_RULES.items() if r is DEG._deg_linear} == {"add", "sub", "neg", "sum", "mean"}
    assert ball_domain._WITHOUT_BALL_RULE == "relu, abs, softmax or logsumexp"
    x = Expr("name", attrs={"id": "x"})
    assert DEG.degree(Expr("call", (x,), {"func": "tanh"}), {"x"}) == DEG.NONLINEAR
    assert DEG.degree(Expr("call", (x,), {"func": "sum"}), {"x"}) == DEG.AFFINE


def test_unknown_operator_is_a_diagnostic_at_its_span():
    from certifier.diagnostics import Span
    e = Expr("call", (Expr("number", attrs={"value": 1.0}),), {"func": "erf"}, Span(3, 5, 3, 11))
    with pytest.raises(I.NotSupported) as info:
        I.enclose(e, {})
    diag = info.value.diagnostic("m.rq")
    assert "not supported in the sound mode" in diag.message and diag.span == Span(3, 5, 3, 11)


def test_environment_is_round_to_nearest():
    rd.check_environment()


def _bits(rng, count):
    """Doubles from random bit patterns: every binade, subnormals, infinities and NaNs (also
    signalling ones)."""
    return np.frombuffer(rng.integers(0, 2**64, count, dtype=np.uint64).tobytes(), dtype=np.float64).copy()


def _same(p, q):
    nan = np.isnan(p)
    return np.array_equal(nan, np.isnan(q)) and np.array_equal(p[~nan].view(np.int64), q[~nan].view(np.int64))


def test_up_and_down_are_nextafter_bit_for_bit():
    """rounding.up / down step the bit patterns of large arrays: numpy's nextafter exactly (the sign
    of zero included), on random bit patterns, the edges, and non-contiguous and broadcast arrays."""
    rng = np.random.default_rng(1)
    tiny, big = 2.0**-1074, np.finfo(np.float64).max
    edges = np.array([0.0, -0.0, tiny, -tiny, 2.0**-1022, -2.0**-1022, 1.0, -1.0, big, -big, np.inf, -np.inf,
                      np.nan, -np.nan] * 20
                     + list(np.array([0x7FFFFFFFFFFFFFFF, 0xFFFFFFFFFFFFFFFF, 0x7FF0000000000001, 0xFFF0000000000001],
                                     dtype=np.uint64).view(np.float64)) * 70)
    matrix = _bits(rng, 300 * 400).reshape(300, 400)
    cases = [edges, _bits(rng, 200_000), matrix, matrix.T, matrix[:, ::3], np.broadcast_to(edges[:5], (100, 5))]
    with np.errstate(invalid="ignore", over="ignore"):
        for x in cases:
            assert x.size >= rd._BITS_MIN
            assert _same(rd.up(x), np.nextafter(x, np.inf)) and _same(rd.down(x), np.nextafter(x, -np.inf))
            assert rd.up(x).shape == x.shape
        assert _same(rd.up(edges[:10]), np.nextafter(edges[:10], np.inf))            # short arrays: nextafter


# --- elementary functions: the documented margin against arb ----------------------------------------
def _points(name: str) -> np.ndarray:
    rng = np.random.default_rng(0)
    base = np.concatenate([rng.standard_normal(400), rng.standard_normal(200) * 30,
                           rng.uniform(-1e-8, 1e-8, 50), [0.0, -0.0, 1e-300, -1e-300, 5e-324]])
    if name == "exp":
        extra = [-745.0, -744.5, -708.0, 700.0, 709.7, 709.78]
    elif name in ("log", "log1p"):
        base = np.abs(base) + (0 if name == "log" else -0.999999)
        extra = [1.0, 1 + 2**-52, 1 - 2**-53, 1e-308, 5e-324, 1e300, 0.5, 2.0]
        if name == "log1p":
            extra += [-1 + 2**-53, -0.5, 1e-17]
    elif name in ("sin", "cos"):
        extra = [k * math.pi for k in range(-300, 301)] + [k * math.pi / 2 for k in range(-300, 301, 2)]
        extra += [1023.9, -1023.9, 1e5, 355.0, 103993.0 / 33102]
    else:
        extra = [19.0, 20.0, 40.0, -40.0, 400.0]
    return np.concatenate([base, np.asarray(extra, dtype=np.float64)])


@pytest.mark.parametrize("name", ["exp", "log", "log1p", "tanh", "sin", "cos"])
def test_elementary_point_bounds_contain_arb(name):
    import flint
    xs = _points(name)
    lo, hi = rd.point_bounds(name, xs)
    old, flint.ctx.prec = flint.ctx.prec, 1200      # tanh(-89) = -1 + 2e-77 needs the bits
    try:
        _check_points(name, xs, lo, hi)
    finally:
        flint.ctx.prec = old


def _check_points(name, xs, lo, hi):
    for x, l, h in zip(xs, lo, hi):
        a = arb(float(x))
        if name in ("log", "log1p") and not (a > (0 if name == "log" else -1)):
            continue
        ref = {"exp": a.exp, "log": a.log, "log1p": a.log1p, "tanh": a.tanh, "sin": a.sin, "cos": a.cos}[name]()
        if not inside(ref, l, h):
            # arb cannot always separate f(x) from a range bound (cos(1e-300) = 1 - 5e-601): an
            # endpoint equal to the function's range bound is right by the range itself
            clipped = (name in ("tanh", "sin", "cos") and (l == -1.0 or h == 1.0)) or \
                      (name == "exp" and l == 0.0)
            assert clipped and (bool(arb(float(l)) <= ref) or l in (-1.0, 0.0)) and \
                (bool(ref <= arb(float(h))) or h == 1.0), (name, x, l, h, ref)
        # and the margin is not absurd: at most about 2^-39 relative plus the absolute slack
        if math.isfinite(l) and math.isfinite(h) and abs(x) <= 1000:
            assert h - l <= 2**-38 * max(abs(l), abs(h)) + 2**-48


def test_arb_mode_agrees():
    xs = np.array([-3.0, -0.1, 0.0, 0.7, 5.0])
    try:
        rd.set_elementary("arb")
        for name in ("exp", "tanh", "sin", "cos"):
            lo, hi = rd.point_bounds(name, xs)
            for x, l, h in zip(xs, lo, hi):
                a = arb(float(x))
                assert inside(getattr(a, name)(), l, h)
                assert h - l <= 1e-15 * max(1.0, abs(h))
    finally:
        rd.set_elementary("margin")


# --- elementary interval operations ---------------------------------------------------------------------
def _rand_iv(rng, shape, scale=3.0, point=False):
    a = rng.standard_normal(shape) * scale
    if point:
        return IV.Iv(a)
    b = a + np.abs(rng.standard_normal(shape)) * rng.choice([0.0, 1e-12, 0.1, 2.0], size=shape)
    return IV.Iv(a, b)


def _sample(iv: IV.Iv, rng):
    t = rng.random(iv.shape)
    pts = iv.lo + t * (iv.hi - iv.lo)
    return np.clip(pts, iv.lo, iv.hi)


@pytest.mark.parametrize("op", ["add", "sub", "mul", "div", "square", "ipow3", "ipow4", "recip"])
def test_elementwise_interval_ops(op):
    rng = np.random.default_rng(1)
    for trial in range(40):
        a = _rand_iv(rng, (6,), point=trial % 5 == 0)
        b = _rand_iv(rng, (6,), point=trial % 7 == 0)
        fn = {"add": lambda: IV.iv_add(a, b), "sub": lambda: IV.iv_sub(a, b), "mul": lambda: IV.iv_mul(a, b),
              "div": lambda: IV.iv_div(a, b), "square": lambda: IV.iv_square(a),
              "ipow3": lambda: IV.iv_ipow(a, 3), "ipow4": lambda: IV.iv_ipow(a, 4),
              "recip": lambda: IV.iv_recip(a)}[op]
        out = fn()
        for _ in range(20):
            xa, xb = _sample(a, rng), _sample(b, rng)
            for i in range(6):
                p, q = arb(float(xa[i])), arb(float(xb[i]))
                if op in ("div", "recip") and not (q > 0 or q < 0) and op == "div":
                    continue
                if op == "recip" and not (p > 0 or p < 0):
                    continue
                ref = {"add": p + q, "sub": p - q, "mul": p * q, "div": None, "square": p * p,
                       "ipow3": p * p * p, "ipow4": p * p * p * p, "recip": None}[op]
                if op == "div":
                    ref = p / q
                if op == "recip":
                    ref = 1 / p
                assert inside(ref, out.lo[i], out.hi[i]), (op, xa[i], xb[i], out.lo[i], out.hi[i])


def test_interval_matmul_contains_exact_products():
    rng = np.random.default_rng(2)
    for trial in range(20):
        A = _rand_iv(rng, (3, 5), point=trial % 3 == 0)
        B = _rand_iv(rng, (5, 2), point=trial % 4 == 0)
        C = IV.iv_matmul(A, B)
        for _ in range(10):
            a, b = _sample(A, rng), _sample(B, rng)
            exact = np.array([[sum((arb(float(a[i, k])) * arb(float(b[k, j])) for k in range(5)), arb(0))
                               for j in range(2)] for i in range(3)], dtype=object)
            ok, bad = all_inside(exact, C.lo, C.hi)
            assert ok, bad


def test_sum_bounds_are_outward():
    rng = np.random.default_rng(3)
    for _ in range(50):
        x = rng.standard_normal(1000) * 10.0 ** rng.integers(-5, 5, 1000)
        lo, hi = rd.sum_bounds(x, x)
        exact = sum((arb(float(v)) for v in x), arb(0))
        assert inside(exact, lo, hi)


# --- random expression trees: value and derivative enclosures -----------------------------------------
def _num(v):
    return Expr("number", attrs={"value": float(v)})


def _name(n):
    return Expr("name", attrs={"id": n})


def _call(f, *args, **kw):
    return Expr("call", tuple(args), {"func": f}, None, {k: _num(v) for k, v in kw.items()})


UNARY = ["tanh", "relu", "sigmoid", "softplus", "exp", "log", "sin", "cos", "sqrt", "abs"]

leaf = st.sampled_from([("v", _name("w")), ("s", _name("b")), ("v", _name("x")), ("s", _name("pi"))]) | \
    st.floats(-3, 3, allow_nan=False).map(lambda v: ("s", _num(round(v, 3))))


def _extend(children):
    def unary(c, f):
        return (c[0], _call(f, c[1]))

    def binary(a, b, op):
        return ("v" if "v" in (a[0], b[0]) else "s", Expr(op, (a[1], b[1])))

    def power(c, p):
        return (c[0], Expr("pow", (c[1], _num(p))))

    def reduce(c, f):
        if c[0] == "s":
            return c
        if f == "softmax":
            return ("v", _call("softmax", c[1]))
        if f == "dot":
            return ("s", Expr("matmul", (c[1], _name("x"))))
        return ("s", _call(f, c[1]))

    return (st.builds(unary, children, st.sampled_from(UNARY))
            | st.builds(binary, children, children, st.sampled_from(["add", "sub", "mul", "div"]))
            | st.builds(power, children, st.sampled_from([-2, -1, 0, 1, 2, 3, 0.5]))
            | st.builds(lambda c: (c[0], Expr("neg", (c[1],))), children)
            | st.builds(reduce, children, st.sampled_from(["sum", "mean", "logsumexp", "softmax", "dot"])))


expressions = st.recursive(leaf, _extend, max_leaves=7)


def fake_checked(body: Expr, params: dict, x: np.ndarray, y: np.ndarray, constants=None, out_shape=()):
    return SimpleNamespace(
        loss=SimpleNamespace(name="least_squares"),
        spec=SimpleNamespace(model=SimpleNamespace(body=body, arg="x")),
        params={k: np.asarray(v, dtype=np.float64) for k, v in params.items()},
        x=np.asarray(x, dtype=np.float64), y=np.asarray(y, dtype=np.float64),
        constants=constants or {}, output_shape=out_shape)


X3 = np.array([[0.3, -1.2, 0.8], [1.1, 0.4, -0.5]])


EXPRESSION_ARGS = dict(expr=expressions, seed=st.integers(0, 2**16), width=st.sampled_from([0.0, 1e-6, 0.05, 0.4]))


@settings(max_examples=120, **SETTINGS)
@given(**EXPRESSION_ARGS)
def test_random_expressions_are_enclosed(expr, seed, width):
    _check_expression(expr, seed, width)


@pytest.mark.slow
@settings(max_examples=2000, **SETTINGS)
@given(**EXPRESSION_ARGS)
def test_random_expressions_are_enclosed_many(expr, seed, width):
    _check_expression(expr, seed, width)


def _check_expression(expr, seed, width):
    kind, e = expr
    body = _call("sum", e) if kind == "v" else e
    rng = np.random.default_rng(seed)
    params = {"w": rng.standard_normal(3), "b": rng.standard_normal(())}
    model = IM.IntervalModel(fake_checked(body, params, X3, np.zeros(2)))
    theta0 = model.theta0
    lo, hi = rd.down(theta0 - width), rd.up(theta0 + width)
    F, J = model.outputs(lo, hi)
    points = [theta0, lo, hi] + [lo + rng.random(4) * (hi - lo) for _ in range(6)]
    checked = 0
    for theta in points:
        theta = np.clip(theta, lo, hi)
        try:
            Fr, Jr, *_ = oracle.model_at(body, "x", X3, np.zeros(2), params, {}, theta)
        except Undefined:
            continue
        checked += 1
        ok, bad = all_inside(Fr, F.lo, F.hi)
        assert ok, ("value", bad)
        ok, bad = all_inside(Jr, J.lo, J.hi)
        assert ok, ("jacobian", bad)


# --- model families: F, J, L, grad L, R against every rule ------------------------------------------------
FAMILIES = {
    "linear": ("w @ x + b", {"w": (3,), "b": ()}),
    "tanh": ("sum(a * tanh(W @ x + c))", {"W": (3, 3), "c": (3,), "a": (3,)}),
    "relu": ("sum(a * relu(W @ x))", {"W": (3, 3), "a": (3,)}),
    "sigmoid": ("sum(a * sigmoid(W @ x)) + b", {"W": (2, 3), "a": (2,), "b": ()}),
    "softplus-sin": ("sum(a * softplus(W @ x)) + sin(b) * x[0] ** 2", {"W": (2, 3), "a": (2,), "b": ()}),
    "two-output": ("W2 @ tanh(W @ x)", {"W": (3, 3), "W2": (2, 3)}),
}


def _family(name, rng):
    text, shapes = FAMILIES[name]
    src = f"""data {{ x = normal(shape=[2, 3], seed=0)\n y = normal(shape=[2{', 2' if name == 'two-output' else ''}], seed=1) }}
params {{ {' '.join(f'{k} : [{", ".join(map(str, s))}] = 0' for k, s in shapes.items())} }}
model f(x) = {text}
loss least_squares
"""
    body = parse(src, "family.rq").model.body
    params = {k: rng.standard_normal(s) for k, s in shapes.items()}
    x = np.random.default_rng(0).standard_normal((2, 3))
    y = np.random.default_rng(1).standard_normal((2, 2) if name == "two-output" else (2,))
    out_shape = (2,) if name == "two-output" else ()
    return body, params, x, y, out_shape


FAMILY_ARGS = dict(name=st.sampled_from(sorted(FAMILIES)), seed=st.integers(0, 2**16),
                   width=st.sampled_from([0.0, 1e-4, 0.02, 0.2]), floor=st.sampled_from([0.0, 0.1]))


@settings(max_examples=36, **SETTINGS)
@given(**FAMILY_ARGS)
def test_model_families_are_enclosed_and_rules_hold(name, seed, width, floor):
    _check_family(name, seed, width, floor)


@pytest.mark.slow
@settings(max_examples=400, **SETTINGS)
@given(**FAMILY_ARGS)
def test_model_families_are_enclosed_and_rules_hold_many(name, seed, width, floor):
    _check_family(name, seed, width, floor)


def _check_family(name, seed, width, floor):
    from certifier.analyse.sound.rules import RULES, RuleContext, subspace_facts
    rng = np.random.default_rng(seed)
    body, params, x, y, out_shape = _family(name, rng)
    model = IM.IntervalModel(fake_checked(body, params, x, y, out_shape=out_shape))
    ctx = RuleContext(model, floor, subspace_facts(model), dict(model.blocks))
    lo, hi = rd.down(model.theta0 - width), rd.up(model.theta0 + width)
    enc = model.over_box(lo, hi)
    bounds = [b for b in (rule(ctx, enc) for rule in RULES.values()) if b is not None]
    for k in range(30):
        theta = model.theta0 if k == 0 else np.clip(lo + rng.random(model.m) * (hi - lo), lo, hi)
        try:
            F, J, L, grad, R = oracle.model_at(body, "x", x, y, params, {}, theta)
        except Undefined:
            continue
        for what, ball, iv in (("F", F, enc.F), ("J", J, enc.J), ("grad", grad, enc.grad)):
            ok, bad = all_inside(ball, iv.lo, iv.hi)
            assert ok, (name, what, bad)
        assert inside(L, enc.L.lo, enc.L.hi), (name, "L", L, enc.L.lo, enc.L.hi)
        if R is not None and L >= floor:
            for b in bounds:
                assert arb(float(b.value)) <= R, (name, b.rule, b.value, R)


def test_mid_rad_of_large_arrays_is_the_plain_formula_bit_for_bit():
    """iv.mid_rad fuses its passes over cache-sized chunks for large arrays: the same doubles as the
    plain formula (m = lo/2 + hi/2, r = max(up(hi - m), up(m - lo)), m = 0 and r = inf where either is
    not finite), on random bit patterns, narrow and inverted intervals, zeros and the edges."""
    from certifier.compile.iv import Iv, _mid_rad_plain, mid_rad
    rng = np.random.default_rng(2)
    tiny, big = 2.0**-1074, np.finfo(np.float64).max
    edges = np.array([0.0, -0.0, tiny, -tiny, 2.0**-1022, 1.0, -1.0, big, -big, np.inf, -np.inf, np.nan])
    x = rng.standard_normal(300_000) * np.exp(rng.uniform(-40, 40, 300_000))
    w = np.abs(x) * 2.0**-40 * rng.uniform(0, 1, x.size)
    cases = [(x - w, x + w), (x, x.copy()), (np.zeros(100_000), -np.zeros(100_000))]
    lo, hi = x - w, x + w
    lo[::997] = rng.choice(edges, lo[::997].size)             # a few odd entries in some chunks
    hi[::1999] = rng.choice(edges, hi[::1999].size)
    cases += [(lo, hi), (hi, lo), (np.sort(np.stack([_bits(rng, 100_000), _bits(rng, 100_000)]), axis=0)[0],
                                   np.sort(np.stack([_bits(rng, 100_000), _bits(rng, 100_000)]), axis=0)[1])]
    big_lo = np.full(70_000, -big)
    cases += [(big_lo, -big_lo), (lo.reshape(600, 500)[:, ::2], hi.reshape(600, 500)[:, ::2])]
    with np.errstate(invalid="ignore", over="ignore"):
        for lo, hi in cases:
            m, r = mid_rad(Iv(lo, hi))
            m0, r0 = _mid_rad_plain(lo, hi)
            assert m.shape == lo.shape and _same(m, m0) and _same(r, r0)
