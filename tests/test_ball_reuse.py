"""The ball rule (certifier/analyse/sound/ball.py) on models that use a parameter more than once.

Property tests (hypothesis): random small models in the spec language that reuse parameters in every
way the language allows, random balls (centers, radii); at random points and pairs of points of each
ball every proved bound must be above the sampled value (value enclosure: the arb oracle
tests/arb_oracle.py and torch float64; g_e >= ||grad F_e||, H_e >= ||Hess F_e||_2 and Lip_J >= the
norm of the stacked Hessians, by torch.func in float64; the same constants against differences over
pairs), and every disjoint-slice claim S_p of every node must hold for the node's Jacobian sparsity.
Then a regression: a W @ W model that the sound mode used to certify with a false bound.

Audit (theory.md section 9: every way a parameter can occur more than once). S_p claims, for each
block p, axes u such that entries whose u-th index differ depend on disjoint slices of p (whatever
their other indices: the claims are kept by sums over other axes). A claim is only ever made for a
block that a node reaches through ONE node (a parameter name): two different nodes that both depend
on p give S_p = {} (_combine_S), so every reuse below that goes through two nodes is conservative.

  case                                          where                     result
  ----------------------------------------------------------------------------------------------------
  W @ W (one node, both operands of a matmul)   ball._matmul              UNSOUND, fixed: k was kept in
      (also W ** 1 @ W and +W @ W: the same       (_matmul_same_S)        S_W (k = i and k = j terms
      node, through pow 1 / unary plus)                                   share W[i, j]); the gradient
                                                                          was combined in l2, the Hessian
                                                                          by max. Now only axes that are
                                                                          the same axis of W in both index
                                                                          maps are kept: the batch axes of
                                                                          T @ T, and k for v @ v
  v @ v (vector dot itself)                     ball._matmul              sound: terms v_k^2 depend on v_k
                                                                          only; k kept (justified there)
  T @ T (batched, T : [2, 3, 3])                ball._matmul              sound: batch axis kept, i, k, j
                                                                          dropped
  W * W, W + W, W - W (one node, entrywise)     _mul, _add_like           sound: entry e reads W at e in
                                                                          both operands, S_W kept
  W * tanh(W), W * W[0], W[0:2] * W[1:3],       _combine_S                sound: two nodes, S_W = {}
  v[0] * v[-3], W[0] @ W[:, 0], -W @ W
  W @ (W @ x), v @ W @ v, W @ W @ W             _matmul                   sound: the inner product is a
                                                                          new node, S = {}
  x / x, W / W (a name divided by itself)       _div -> _mul(a, 1/b)      sound: 1/b is a new node,
                                                                          S = {}; bounds by the product
                                                                          rule (triangle)
  a / constant                                  _div                      sound: a scaling, S of a
                                                                          (broadcast)
  powers a ** n (n = 1 returns a itself)        _pow, _chain, _recip      sound: chain rule; a ** 1 is a
                                                                          (so a ** 1 @ a is the same node:
                                                                          the matmul fix covers it);
                                                                          a ** b with b not an integer
                                                                          constant: exp(b log a), b and
                                                                          log a are different nodes
  sum / mean over an axis, over all axes        _reduce, _sum, _mean      sound: l2 / max only along an
                                                                          axis in S_p; S minus the axis
                                                                          keeps the claim (the strong form
                                                                          above); mean scales by 1/count
  sum(s) * s for a scalar (identity returns)    _sum (nd 0 returns x)     sound: same node, S = {}
  broadcasting (a parameter repeated along an   _bcast_S, _align          sound: repeated axes dropped;
      axis; samples: axis 0 is never in S)                                sample axis never claimed
  indexing: integer, negative index, slices     _index (_subscript)       sound: the checker allows only
      with negative bounds (v[-2:], W[:-1])                               integer constants and
                                                                          slices start:stop (no step, no
                                                                          lists), so a kept axis maps to
                                                                          distinct indices; an integer
                                                                          drops its axis
  a parameter and its transpose               (none)                    the language has no transpose:
                                                                          a row against a column is
                                                                          W[0] @ W[:, 0] (above)
  overlapping / repeated index expressions      _index twice              sound: two nodes, S = {}
      (v[0:2] * v[1:3], W[0, 1] * W[1, 0])
  a reused data name or "let"                   grammar, check            none in the language: data
                                                                          names are constants (no
                                                                          parameter) and the model is
                                                                          one expression; only parameter
                                                                          names (and x) are shared nodes
  interval forward rules (compile/interval.py)  iv_mul, iv_matmul, _div,  sound: each occurrence is
      under dependency (W * W, W @ W, x / x)    _pow, the Dual rules      enclosed separately (wider,
                                                                          never narrower); the derivative
                                                                          rules are the product /
                                                                          quotient / chain rules on
                                                                          enclosures; x ** n uses the
                                                                          tight single-occurrence power
"""
from __future__ import annotations

import math
import random

import arb_oracle as oracle
import numpy as np
import pytest
import torch
from arb_oracle import Undefined, all_inside
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch.func import hessian, jacrev, vmap

from certifier import check
from certifier.analyse.sound.ball import BallModel
from certifier.compile.interval_model import IntervalModel
from certifier.compile.problem import Problem
from certifier.language.evaluate import evaluate
from certifier.parse import parse
from certifier.pipeline import run_text

SETTINGS = dict(deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.filter_too_much])

PARAMS = """  W : [3, 3] = normal(seed=1)
  T : [2, 3, 3] = normal(seed=2)
  v : [3] = normal(seed=3)
  s : [] = 0.5"""
SIZES = {"W": (0, 9), "T": (9, 27), "v": (27, 30), "s": (30, 31)}      # the declaration order


def spec(model: str, params: str = PARAMS, n: int = 2, y: str = "sin(x[:, 0])",
         region: str = "ball(center=init, radius=0.1)", method: str = "interval(boxes=50, seed=0)",
         certify: str = "rate(floor=0, horizon=10)") -> str:
    return f"""spec "ball reuse"
data {{
  x = normal(shape=[{n}, 3], seed=0)
  y = {y}
}}
params {{
{params}
}}
model f(x) = {model}
loss least_squares
region {region}
method {method}
certify {certify}
"""


def compiled(text: str):
    checked = check.check(parse(text, "b.rq"))
    return IntervalModel(checked), Problem(checked), checked


# --- random models that reuse parameters -----------------------------------------------------------
S0, S2, S3, SM, ST = (), (2,), (3,), (3, 3), (2, 3, 3)
I3 = ["0", "1", "2", "-1", "-3"]
I2 = ["0", "1", "-1"]
C = ["0.5", "2", "1.5", "0.25"]

LEAVES = {
    S0: ["s", "v[{i}]", "W[{i}, {j}]", "x[{i}]", "T[{b}, {i}, {j}]", "{c}"],
    S2: ["v[0:2]", "v[1:3]", "v[-2:]", "v[:-1]", "W[{i}, 1:]", "W[:2, {j}]", "x[0:2]", "T[:, {i}, {j}]"],
    S3: ["v", "x", "W[{i}]", "W[:, {j}]", "T[{b}, {i}]", "T[{b}, :, {j}]"],
    SM: ["W", "T[{b}]"],
    ST: ["T"],
}
REUSE = {   # a parameter used twice or more, directly: the same node, or two nodes of one block
    S0: ["v @ v", "s * s", "s / s", "s ** 2 * s", "sum(s) * s", "v[0] * v[-3]", "W[0, 1] * W[1, 0]",
         "sum(W @ W)", "(W @ W)[{i}, {j}]", "(+W @ W)[{i}, {j}]", "(W ** 1 @ W)[{i}, {j}]",
         "sum(W * tanh(W))", "W[{i}] @ W[:, {j}]", "v @ W @ v", "sum(T @ T)", "(T @ T)[{b}, {i}, {j}]",
         "sum(v / v)", "sum(W @ W @ x)", "v[0:2] @ v[1:3]", "mean(W @ W, axis={a})[{i}]",
         "sum((W @ W) ** 2)", "(v @ v) ** 2"],
    S2: ["v[0:2] * v[1:3]", "(W @ W)[{i}, 1:]", "(T @ T)[:, {i}, {j}]", "v[:-1] * v[-2:]",
         "(W @ W @ x)[0:2]"],
    S3: ["W @ W @ x", "W @ W @ v", "v @ W @ W", "(W @ W)[{i}]", "(W @ W)[:, {j}]", "W @ v * v",
         "v * tanh(v)", "T[0] @ T[1] @ v", "W @ (W @ x)", "W[{i}] * W[:, {j}]", "(T @ T)[{b}, {i}]",
         "sum(W @ W, axis={a})", "v * v", "(W @ W) @ (W @ x)"],
    SM: ["W @ W", "W * W", "W + W", "W * tanh(W)", "W @ W @ W", "W * v", "W / W", "T[0] @ T[-2]",
         "W ** 1 @ W", "-W @ W", "W @ T[{b}]"],
    ST: ["T @ T", "T @ W", "W @ T", "T * W", "T * T"],
}
ANY = ["({a}) + ({b})", "({a}) - ({b})", "({a}) * ({b})", "({a}) * ({z})", "{f}({a})", "({a}) ** 2",
       "({a}) ** 3", "({a}) / (1 + ({b}) ** 2)", "-({a})", "log(1 + ({a}) ** 2)", "sqrt(0.5 + ({a}) ** 2)",
       "({a}) / {c}", "({a}) ** -1"]
SHAPED = {
    S0: ["sum({any})", "mean({any})", "({v3}) @ ({v3b})", "({v2}) @ ({v2b})", "({m})[{i}, {j}]", "({v3})[{i}]"],
    S2: ["({v3})[0:2]", "({v3})[1:]", "({t})[:, {i}, {j}]", "({m})[{i}, -2:]"],
    S3: ["({m}) @ ({v3})", "({v3}) @ ({m})", "sum({m}, axis={a})", "mean({m}, axis={a})", "({m})[{i}]",
         "({m})[:, {j}]", "sum({t}, axis=0)[{i}]"],
    SM: ["({m}) @ ({m2})", "({m}) * ({v3})", "sum({t}, axis=0)", "({t})[{b}]"],
    ST: ["({t}) @ ({t2})", "({t}) @ ({m})", "({m}) @ ({t})", "({t}) * ({m})"],
}
FUNCS = ["tanh", "sigmoid", "softplus", "sin", "cos", "exp"]


def _expr(rng: random.Random, shape: tuple, depth: int) -> str:
    """A random expression of per-sample shape `shape`, nested at most `depth` deep."""
    kind = rng.choice(["leaf", "reuse", "reuse", "any", "any", "shaped", "shaped"] if depth > 0
                      else ["leaf", "reuse"])
    sub = {"i": rng.choice(I3), "j": rng.choice(I3), "b": rng.choice(I2), "a": rng.choice(["0", "1", "-1"]),
           "c": rng.choice(C), "f": rng.choice(FUNCS)}
    if kind == "leaf":
        return rng.choice(LEAVES[shape]).format(**sub)
    if kind == "reuse":
        return rng.choice(REUSE[shape]).format(**sub)
    template = rng.choice(ANY if kind == "any" else SHAPED[shape])
    if kind == "any":
        # sometimes the same text twice: two nodes of the same value (a / a, a - a among them)
        a = _expr(rng, shape, depth - 1)
        sub["a"] = a
        sub["b"] = a if rng.random() < 0.3 else _expr(rng, shape, depth - 1)
        sub["z"] = _expr(rng, S0, depth - 1)
        if template == "{f}({a})" and sub["f"] == "exp":
            template = rng.choice(["exp(0.5 * tanh({a}))", "exp(0.3 * ({a}))"])
        return template.format(**sub)
    need = {"any": rng.choice([S0, S2, S3, SM]), "v3": S3, "v3b": S3, "v2": S2, "v2b": S2,
            "m": SM, "m2": SM, "t": ST, "t2": ST}
    for key, sh in need.items():
        if "{" + key + "}" in template:
            sub[key] = _expr(rng, sh, depth - 1)
    for key, first in (("v3b", "v3"), ("v2b", "v2"), ("m2", "m"), ("t2", "t")):
        if "{" + key + "}" in template and rng.random() < 0.3:
            sub[key] = sub[first]
    return template.format(**sub)


def random_model(seed: int, max_depth: int) -> tuple[str, tuple]:
    rng = random.Random(seed)
    shape = rng.choice([S0, S0, S2, S3])
    return _expr(rng, shape, rng.randint(1, max_depth)), shape


@st.composite
def models(draw, max_depth: int = 2):
    """(model text, output shape), from a seed: every example is a different model (hypothesis's
    own choices, derandomized, repeat small trees); the text is in every failure message."""
    return random_model(draw(st.integers(0, 2**32 - 1)), max_depth)


@st.composite
def balls(draw):
    """(seed, scale, identity, radius): center = scale * normal + (identity on W and T[b])."""
    return (draw(st.integers(0, 2**16)), draw(st.sampled_from([0.3, 0.8, 1.5])),
            draw(st.booleans()), draw(st.sampled_from([0.01, 0.05, 0.2, 0.5])))


def _center(seed: int, scale: float, identity: bool) -> np.ndarray:
    c = np.random.default_rng(seed).standard_normal(31) * scale
    if identity:
        c[0:9] += np.eye(3).reshape(-1)
        c[9:27] += np.stack([np.eye(3)] * 2).reshape(-1)
    return c


def _in_ball(rng, c, r, surface):
    u = rng.standard_normal(c.size)
    scale = r if surface else r * rng.random() ** (1 / c.size)
    return c + u * (scale / np.linalg.norm(u))


class Recording(BallModel):
    """The ball rule, keeping (expression, node) for every node it forms."""

    def _eval(self, e):
        node = super()._eval(e)
        self.seen.append((e, node))
        return node

    def evaluate(self, center, radius):
        self.seen = []
        return super().evaluate(center, radius)


def _sub_outputs(problem, checked, body):
    arg = checked.spec.model.arg

    def one(theta, xi):
        env = dict(problem.constants)
        env.update(problem.unflatten(theta))
        env[arg] = xi
        return evaluate(body, env)
    return vmap(one, in_dims=(None, 0))


def _check_claims(model, problem, checked, bm: Recording, theta: np.ndarray, text: str) -> int:
    """Every node's S_p against the sparsity of its Jacobian at theta (a nonzero entry is a
    dependence): entries whose index along a claimed axis differs share no column of block p."""
    claims = 0
    done = set()
    for e, node in bm.seen:
        if not any(node.S.values()) or id(e) in done:
            continue
        done.add(id(e))
        fn = _sub_outputs(problem, checked, e)
        J = jacrev(lambda t: fn(t, problem.x))(torch.tensor(theta)).numpy()     # (n, *s, m)
        if not np.all(np.isfinite(J)):
            continue
        for p, axes in node.S.items():
            a, b = model.blocks[model.names[p]]
            support = np.abs(J[..., a:b]) > 0
            for w in axes:
                assert w >= 1, (text, e, node.S)
                if w >= support.ndim - 1 or support.shape[w] == 1:
                    continue
                claims += 1
                other = tuple(ax for ax in range(support.ndim - 1) if ax != w)
                per_index = np.any(support, axis=other)            # (len along w, block size)
                assert np.all(per_index.sum(axis=0) <= 1), (text, str(e), model.names[p], w, node.S)
    return claims


def _derivatives(problem, theta: np.ndarray):
    t = torch.tensor(theta)
    f = lambda z: problem.outputs(z).reshape(-1)                       # noqa: E731
    return f(t).detach().numpy(), jacrev(f)(t).numpy(), hessian(f)(t).numpy()


TARGETS = {S0: "sin(x[:, 0])", S2: "tanh(x[:, 0:2])", S3: "tanh(x)"}


def check_model(model_text: str, shape: tuple, ball: tuple, points: int, use_arb: bool) -> None:
    text = spec(model_text, y=TARGETS[shape])
    model, problem, checked = compiled(text)
    bm = Recording(model)
    assert bm.unsupported is None, (text, bm.unsupported)
    seed, scale, identity, r = ball
    c = _center(seed, scale, identity)
    L = bm.lipschitz(c, r)
    H, grad, lip, node = L["H"], L["grad"], L["lip_jacobian"], L["node"]
    vshape = (model.n,) + model.out_shape
    vlo = np.broadcast_to(node.v.lo, vshape).reshape(-1)
    vhi = np.broadcast_to(node.v.hi, vshape).reshape(-1)
    rng = np.random.default_rng(seed + 1)
    pts = [c] + [_in_ball(rng, c, r, surface=i % 2 == 0) for i in range(points)]
    values = []
    for i, t in enumerate(pts):
        F, J, Hs = _derivatives(problem, t)
        if not (np.all(np.isfinite(F)) and np.all(np.isfinite(J)) and np.all(np.isfinite(Hs))):
            values.append(None)
            continue
        values.append((t, F, J))
        slack = 1e-9 * (1 + np.abs(F))
        assert np.all(vlo - slack <= F) and np.all(F <= vhi + slack), (model_text, ball, F, vlo, vhi)
        rows = np.linalg.norm(J, axis=1)
        assert np.all(rows <= grad * (1 + 1e-9) + 1e-12), (model_text, ball, "gradient", rows, grad)
        hn = np.linalg.norm(Hs, 2, axis=(1, 2))
        assert np.all(hn <= H * (1 + 1e-9) + 1e-12), (model_text, ball, "Hessian", hn, H)
        stacked = np.linalg.norm(Hs.reshape(-1, Hs.shape[-1]), 2)        # the local Lipschitz constant of J
        assert stacked <= lip * (1 + 1e-9) + 1e-12, (model_text, ball, "Lip_J", stacked, lip)
        if use_arb and i == 1:
            try:
                Fa, Ja, _, _, _ = oracle.model_at(checked.spec.model.body, checked.spec.model.arg, model.x,
                                                  model.y, checked.params, checked.constants, t)
            except Undefined:
                continue
            ok, where = all_inside(Fa.reshape(-1), vlo, vhi)
            assert ok, (model_text, ball, "value (arb)", where)
            for e in range(Ja.shape[0]):
                sq = sum((z * z for z in Ja[e]), oracle.arb(0))
                assert not bool(sq > oracle.arb(float(grad[e])) ** 2), (model_text, ball, "gradient (arb)", e)
    for i in range(1, len(pts) - 1):          # pairs: consecutive points, and antipodes through c
        for a, b in ((values[i], values[i + 1]), (values[i], None)):
            if a is None:
                continue
            if b is None:
                t2 = 2 * c - a[0]
                F2, J2, _ = _derivatives(problem, t2)
                if not (np.all(np.isfinite(F2)) and np.all(np.isfinite(J2))):
                    continue
                b = (t2, F2, J2)
            dist = np.linalg.norm(a[0] - b[0])
            if dist == 0:
                continue
            assert np.all(np.abs(a[1] - b[1]) <= grad * dist * (1 + 1e-9) + 1e-12), (model_text, ball)
            assert np.all(np.linalg.norm(a[2] - b[2], axis=1) <= H * dist * (1 + 1e-9) + 1e-12), \
                (model_text, ball)
            assert np.linalg.norm(a[2] - b[2]) <= lip * dist * (1 + 1e-9) + 1e-12, (model_text, ball)
    _check_claims(model, problem, checked, bm, pts[1], text)


@settings(max_examples=40, **SETTINGS)
@given(models(), balls())
def test_bounds_hold_on_models_that_reuse_parameters(model, ball):
    check_model(*model, ball, points=4, use_arb=True)


@pytest.mark.slow
@settings(max_examples=600, **SETTINGS)
@given(models(max_depth=3), balls())
def test_bounds_hold_on_models_that_reuse_parameters_slow(model, ball):
    check_model(*model, ball, points=16, use_arb=True)


# --- the shared-operand matmul, directly ------------------------------------------------------------
SHARED = [   # (model, W at the center): the k = i and k = j terms of (W @ W)[i, j] share W[i, j]
    ("(W @ W)[0, 1]", "identity"),
    ("(W @ W)[0, 1] ** 2 + s", "identity"),
    ("sum(W @ W @ x)", "identity"),
    ("(W ** 1 @ W)[1, 2]", "identity"),
    ("(+W @ W)[2, 0] * s", "identity"),
    ("sum((T @ T)[:, 0, 1])", "identity"),
    ("v @ v", "normal"),
    ("sum(T @ T)", "normal"),
]


@pytest.mark.parametrize("model_text, start", SHARED)
def test_shared_operand_matmul_bounds_hold_at_the_center(model_text, start):
    """At W = I, (W @ W)[0, 1] = W00 W01 + W01 W11 + W02 W21 has d/dW01 = W00 + W11 = 2, which
    combining the terms k = 0 and k = 1 in l2 bounds by sqrt(2); its square has Hessian 2 g g^T,
    norm 8, which the max over k bounded by about 4."""
    for seed, r in ((0, 1e-3), (1, 0.05)):
        c = _center(seed, 0.02 if start == "identity" else 1.0, start == "identity")
        check_model_at(model_text, c, r)


def check_model_at(model_text: str, c: np.ndarray, r: float) -> None:
    model, problem, _ = compiled(spec(model_text))
    L = BallModel(model).lipschitz(c, r)
    F, J, Hs = _derivatives(problem, c)
    assert np.all(np.linalg.norm(J, axis=1) <= L["grad"] * (1 + 1e-9)), (model_text, J, L["grad"])
    hn = np.linalg.norm(Hs, 2, axis=(1, 2))
    assert np.all(hn <= L["H"] * (1 + 1e-9)), (model_text, hn, L["H"])
    assert np.linalg.norm(Hs.reshape(-1, Hs.shape[-1]), 2) <= L["lip_jacobian"] * (1 + 1e-9), model_text


def test_a_vector_dotted_with_itself_keeps_its_sharp_constant():
    """v @ v = sum v_k^2: the terms depend on disjoint entries, so its Hessian bound is max 2 = 2
    (not 2 * 3) and its gradient bound 2 ||v|| (the l2 combination), as for sum(v * v)."""
    model, _, _ = compiled(spec("v @ v"))
    c = _center(3, 1.0, False)
    for other in ("sum(v * v)",):
        m2, _, _ = compiled(spec(other))
        a, b = BallModel(model).lipschitz(c, 0.1), BallModel(m2).lipschitz(c, 0.1)
        assert np.allclose(a["H"], b["H"]) and np.allclose(a["grad"], b["grad"])
    assert BallModel(model).lipschitz(c, 0.1)["H"][0] == pytest.approx(2.0)


def test_a_matrix_squared_is_bounded_as_two_different_nodes():
    """With the fix W @ W is bounded as W @ (W + 0) (two nodes, no disjointness claim)."""
    c = _center(5, 0.02, True)
    for text in ("sum((W @ W @ x) ** 2)", "(W @ W)[0, 1] ** 2 + s"):
        a, _, _ = compiled(spec(text))
        b, _, _ = compiled(spec(text.replace("W @ W", "W @ (W + 0)")))
        la, lb = BallModel(a).lipschitz(c, 0.05), BallModel(b).lipschitz(c, 0.05)
        assert np.allclose(la["H"], lb["H"]) and np.allclose(la["grad"], lb["grad"]), text


# --- end to end: the spec the sound mode used to certify with a false Lipschitz constant -------------
def _eye(h: int) -> str:
    return "[" + ", ".join("[" + ", ".join("1" if i == j else "0" for j in range(h)) + "]" for i in range(h)) + "]"


def square_of_w_w(radius: float) -> str:
    """W = I (9 x 9; 84 parameters, more than boxes handle, so only the ball rule can prove): the
    Hessian of ((W @ W)[0, 1])^2 at W = I is 2 g g^T with g = d (W @ W)[0, 1] / dW, |g| = 2 (its
    entry W01: W00 + W11), norm 8, the same for each of the 3 samples: Lip_J >= sqrt(3) 8 = 13.9.
    Combining the terms of (W @ W)[0, 1] as disjoint bounded |g| by sqrt(2), and Lip_J by 7.3 to 8.2
    at these radii: the old ball rule certified radius 0.02 and 0.03 on that false constant."""
    return f"""spec "W @ W inside a square"
data {{
  x = normal(shape=[3, 3], seed=0)
  y = x @ [0.4, -0.2, 0.7] + 0.001 * sin(x[:, 1])
}}
params {{
  W : [9, 9] = {_eye(9)}
  v : [3] = [0.4, -0.2, 0.7]
}}
model f(x) = ((W @ W)[0, 1]) ** 2 + v @ x
loss least_squares
region ball(center=init, radius={radius})
method interval(boxes=100, seed=0)
certify rate(floor=0, horizon=20)
"""


def _true_lip_at_center(text: str) -> float:
    _, problem, checked = compiled(text)
    theta0 = torch.cat([torch.as_tensor(np.asarray(checked.params[k], dtype=np.float64)).reshape(-1)
                        for k in checked.params])
    Hs = hessian(lambda z: problem.outputs(z).reshape(-1))(theta0).numpy()
    return float(np.linalg.norm(Hs.reshape(-1, Hs.shape[-1]), 2))


@pytest.mark.parametrize("radius", [0.02, 0.03])
def test_w_times_w_in_a_square_is_no_longer_certified(radius):
    text = square_of_w_w(radius)
    r = run_text(text, "w.rq")
    true_lip = _true_lip_at_center(text)
    assert true_lip == pytest.approx(8 * math.sqrt(3), rel=1e-9)
    assert r.verdict != "certified" and not r.sound, (r.verdict, r.failing_region)   # it was "certified"
    lip = r.proof["facts"]["ball"]["lip_jacobian"]
    assert lip >= true_lip, (lip, true_lip)         # the old rule proved 7.74 (0.02), 8.19 (0.03)


def test_w_times_w_in_a_square_certified_on_a_smaller_ball_is_above_the_flow():
    """Where the fixed rule still certifies (a smaller ball), the certified bound is above the gradient
    flow (solve_ivp, rtol 1e-10, the gradient by torch autograd)."""
    from scipy.integrate import solve_ivp

    text = square_of_w_w(0.005)
    r = run_text(text, "w.rq")
    assert r.verdict == "certified" and r.sound and r.mu_source == "ball", (r.verdict, r.failing_region)
    lip = r.proof["facts"]["ball"]["lip_jacobian"]
    assert lip >= _true_lip_at_center(text)
    _, problem, checked = compiled(text)
    theta0 = np.concatenate([np.asarray(checked.params[k], dtype=np.float64).reshape(-1) for k in checked.params])

    def loss_grad(theta):
        t = torch.tensor(theta, requires_grad=True)
        L = problem.loss(t)
        (g,) = torch.autograd.grad(L, t)
        return float(L), g.numpy()

    ts = np.linspace(0.0, 20.0, 81)
    sol = solve_ivp(lambda t, th: -loss_grad(th)[1], (0.0, 20.0), theta0, t_eval=ts, rtol=1e-10, atol=1e-14)
    assert sol.success, sol.message
    for i, t in enumerate(ts):
        assert np.linalg.norm(sol.y[:, i] - theta0) <= 0.005                 # the flow stays in the ball
        value = loss_grad(sol.y[:, i])[0]
        assert value <= r.bound(t) * (1 + 1e-7) + 1e-300, (t, value, r.bound(t))
