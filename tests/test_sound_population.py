"""The sound mode on populations (data gaussian): compile/interval_population.py.

- every enclosure (L, grad L, the Hessian; over boxes and at points; through the spec's
  PopulationIntervalModel with its mean-value forms) contains the value of the plain arccos closed form
  evaluated by mpmath at 50 digits (the Hessian by central differences of mpmath's gradient), at sampled
  points of random boxes (hypothesis), including angles 1e-3 ... 1e-13 from parallel and opposite, exactly
  parallel neurons and boxes that reach a zero neuron;
- J(t) = sin t - t cos t and the directed arcsin against arb;
- the closed form against a Monte-Carlo average once;
- R at those points is above every rule bound of the box;
- specs/single_neuron_n1_sound.rq: certified, the bound above a DOP853 flow of the population ODE and
  above real gradient descent (the gradient of tests/single_neuron_oracle.py, not certify's), the flow
  inside the box; the certificate replays and is rejected when tampered;
- two students (specs/single_neuron_n2_sound.rq): a power(alpha=2/3) profile to floor 3e-2, every band's
  mu below the oracle's R in the box, the bound above a DOP853 flow and real descent; `desingularizer log`
  or auto with floor 0 (a linear rate to 0, false: L ~ t^-3) never certified; floor 1e-2 blocked.
"""
from __future__ import annotations

import json
import math

import flint
import mpmath as mp
import numpy as np
import pytest
import single_neuron_oracle as oracle
from helpers import BOX_PROOF_TAMPERS, SPECS, emit_certificate, problem_of, reforged_beside
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.integrate import solve_ivp

from certifier.analyse.sound.rules import RuleContext, best_bound
from certifier.compile.interval_model import IntervalModel
from certifier.compile.interval_population import (
    PopulationIntervalModel,
    enclose_closed_form,
    j_point_bounds,
)
from certifier.compile.iv import Iv
from certifier.compile.rounding import elementary, point_bounds
from certifier.diagnostics import SpecError
from certifier.pipeline import run_file, run_text

DIGITS = 50         # mpmath's precision inside the oracle (set per call, never globally)


def _digits(fn):
    def wrapped(*args, **kwargs):
        with mp.workdps(DIGITS):
            return fn(*args, **kwargs)
    return wrapped


class _prec:
    """flint's precision inside a block, restored after (no global state between test modules)."""

    def __init__(self, bits):
        self.bits = bits

    def __enter__(self):
        self.old, flint.ctx.prec = flint.ctx.prec, self.bits

    def __exit__(self, *exc):
        flint.ctx.prec = self.old
N1_SOUND = SPECS / "single_neuron_n1_sound.rq"


# --- the mpmath oracle: the plain arccos formulas at 50 digits ---------------------------------------------
def _mpv(a):
    return [mp.mpf(float(x)) for x in a]


def _dot(a, b):
    return mp.fsum(x * y for x, y in zip(a, b))


def _k(u, w):
    a, b = mp.sqrt(_dot(u, u)), mp.sqrt(_dot(w, w))
    if a == 0 or b == 0:
        return mp.mpf(0)
    c = max(min(_dot(u, w) / (a * b), mp.mpf(1)), mp.mpf(-1))
    t = mp.acos(c)
    return a * b * (mp.sin(t) + (mp.pi - t) * c) / (2 * mp.pi)


def _dk(u, w):
    a, b = mp.sqrt(_dot(u, u)), mp.sqrt(_dot(w, w))
    if b == 0:
        return [mp.mpf(0)] * len(u)
    c = max(min(_dot(u, w) / (a * b), mp.mpf(1)), mp.mpf(-1))
    t = mp.acos(c)
    return [((mp.pi - t) * wi + b * mp.sin(t) * ui / a) / (2 * mp.pi) for ui, wi in zip(u, w)]


@_digits
def mp_loss(P, c):
    N = len(P)
    return mp.fsum(c[i] * c[j] * (_dot(P[i], P[i]) / 2 if i == j else _k(P[i], P[j]))
                   for i in range(N) for j in range(N))


@_digits
def mp_grad(P, c, nvar):
    out = []
    for i in range(nvar):
        g = [c[i] * c[i] * x for x in P[i]]
        for j in range(len(P)):
            if j != i:
                dk = _dk(P[i], P[j])
                g = [gi + 2 * c[i] * c[j] * di for gi, di in zip(g, dk)]
        out.append(g)
    return out


@_digits
def mp_hessian(P, c, nvar, h=mp.mpf("1e-22")):
    """Central differences of the mpmath gradient (error ~ h^2 |g'''|, far below the enclosures' widths)."""
    d = len(P[0])
    m = nvar * d
    H = [[mp.mpf(0)] * m for _ in range(m)]
    for col in range(m):
        i, k = divmod(col, d)
        Pp = [list(r) for r in P]
        Pm = [list(r) for r in P]
        Pp[i][k] += h
        Pm[i][k] -= h
        gp = [x for r in mp_grad(Pp, c, nvar) for x in r]
        gm = [x for r in mp_grad(Pm, c, nvar) for x in r]
        for row in range(m):
            H[row][col] = (gp[row] - gm[row]) / (2 * h)
    return H


TOL = mp.mpf("1e-35")      # the oracle's own error allowance (50 digits; differences 1e-44)


@_digits
def _inside(value, lo, hi, what):
    assert mp.mpf(float(lo)) - TOL <= value <= mp.mpf(float(hi)) + TOL, (what, float(lo), float(value), float(hi))


# --- random boxes, near-degenerate angles included ---------------------------------------------------------
def _configuration(seed: int, kind: str, width: float):
    rng = np.random.default_rng(seed)
    d = int(rng.choice([2, 3, 5]))
    nvar = int(rng.integers(1, 4))
    ntar = int(rng.integers(1, 3))
    V = rng.standard_normal((ntar, d))
    W = rng.standard_normal((nvar, d)) * rng.choice([0.3, 1.0])
    eps = float(10.0 ** -rng.integers(3, 14))
    perp = rng.standard_normal(d)
    if kind == "parallel":        # a student at angle ~eps from a teacher (or exactly along it)
        W[0] = V[0] * rng.uniform(0.3, 1.5) + (0.0 if rng.random() < 0.3 else eps) * perp
    elif kind == "opposite":
        W[0] = -V[0] * rng.uniform(0.3, 1.5) + (0.0 if rng.random() < 0.3 else eps) * perp
    elif kind == "students":      # two students nearly parallel to each other
        if nvar > 1:
            W[1] = W[0] * rng.uniform(0.5, 2.0) + eps * perp
    elif kind == "zero":          # the box reaches w_0 = 0
        W[0] = rng.uniform(-0.5, 0.5, d) * width
    c = np.concatenate([rng.choice([1.0, 0.5, -0.7], nvar), -rng.choice([1.0, 2.0], ntar)])
    return W, V, c, width


def _points(W, width, rng, count=3):
    pts = [W]
    for _ in range(count):
        pts.append(W + rng.uniform(-width, width, W.shape))
    return pts


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10**6), st.sampled_from(["generic", "parallel", "opposite", "students", "zero"]),
       st.sampled_from([0.0, 1e-12, 1e-6, 1e-3, 0.05]))
def test_enclosures_contain_the_mpmath_closed_form(seed, kind, width):
    W, V, c, width = _configuration(seed, kind, width)
    if kind == "zero" and width == 0.0:
        width = 1e-3
        W[0] = 0.0
    nvar, d = W.shape
    lo = np.nextafter(W - width, -np.inf) if width else W
    hi = np.nextafter(W + width, np.inf) if width else W
    P = Iv(np.concatenate([lo, V]), np.concatenate([hi, V]))
    parts = enclose_closed_form(P, Iv(c), nvar)
    rng = np.random.default_rng(seed + 1)
    cm = _mpv(c)
    for Wp in _points(W, width, rng):
        Wp = np.clip(Wp, lo, hi)
        Pm = [_mpv(r) for r in np.concatenate([Wp, V])]
        _inside(mp_loss(Pm, cm), parts.L.lo, parts.L.hi, "L")
        if any(_dot(r, r) == 0 for r in Pm[:nvar]):
            continue        # not differentiable: the Clarke hull is checked by the points around it
        G = mp_grad(Pm, cm, nvar)
        for i in range(nvar):
            for k in range(d):
                _inside(G[i][k], parts.G.lo[i, k], parts.G.hi[i, k], ("grad", i, k))
        if parts.H is not None and width <= 1e-3:
            H = mp_hessian(Pm, cm, nvar)
            for a in range(nvar * d):
                for b in range(nvar * d):
                    _inside(H[a][b], parts.H.lo[a, b], parts.H.hi[a, b], ("H", a, b))
    if kind == "zero":
        assert parts.zero[0] and parts.H is None


def test_exact_teacher_point_is_enclosed_near_zero():
    """At w = v exactly the loss is proved 0 (not 1e-16 (E f^2 + E y^2)), and grad contains 0."""
    v = np.array([[1.0, 0.0, 0.0, 0.0, 0.0]])
    parts = enclose_closed_form(Iv(np.concatenate([v, v])), Iv(np.array([1.0, -1.0])), 1)
    assert parts.L.lo == 0.0 and parts.L.hi == 0.0      # s = 0 exactly, the J term <= 0: L = 0 proved
    assert np.all(parts.G.lo <= 0) and np.all(parts.G.hi >= 0) and np.max(parts.G.hi - parts.G.lo) < 1e-15
    # the Hessian at the teacher is I - (|v|/pi)(sin 0 ...) = I exactly, enclosed tightly
    assert np.allclose(parts.H.lo, np.eye(5), atol=1e-14) and np.allclose(parts.H.hi, np.eye(5), atol=1e-14)


def test_zero_is_proved_only_where_the_fit_is_exact():
    """s = sum c_a p_a = 0 exactly does not make L = 0 when two students (c_a c_b > 0) are apart: the J term
    of that pair is positive. Their L is enclosed, not claimed 0; one ulp off the teacher L > 0 likewise."""
    v = np.array([1.0, 0.0])
    for W in (np.array([[0.5, 1e-3], [0.5, -1e-3]]), np.array([[0.5, 0.25], [0.5, -0.25]])):
        parts = enclose_closed_form(Iv(np.concatenate([W, v[None]])), Iv(np.array([1.0, 1.0, -1.0])), 2)
        exact = mp_loss([_mpv(r) for r in np.concatenate([W, v[None]])], _mpv([1.0, 1.0, -1.0]))
        assert exact > 0 and parts.L.hi > 0
        _inside(exact, parts.L.lo, parts.L.hi, "L")
    w = np.array([[np.nextafter(1.0, 2.0), 0.0]])
    parts = enclose_closed_form(Iv(np.concatenate([w, v[None]])), Iv(np.array([1.0, -1.0])), 1)
    assert parts.L.hi > 0


@pytest.mark.parametrize("t", [0.0, 1e-300, 1e-12, 1e-6, 1e-3, 0.1, 0.5, 0.999, 1.0, 1.5, 3.0, math.pi])
def test_j_bounds_contain_arb(t):
    lo, hi = j_point_bounds(np.array([t]))
    with _prec(4000):       # sin t - t cos t cancels to t^3 / 3: 1e-900 at t = 1e-300
        a = flint.arb(t)
        exact = a.sin() - a * a.cos()
        assert bool(flint.arb(float(lo[0])) <= exact) and bool(exact <= flint.arb(float(hi[0])))
    if t > 0:
        assert hi[0] - lo[0] <= 1e-10 * float(exact.mid()) + 1e-300     # the libm margin 2^-40 (rounding.py)


@pytest.mark.parametrize("x", [0.0, 5e-324, 1e-300, 1e-8, 0.25, 0.5, 0.7071067811865476, 0.999999999999, 1.0])
def test_directed_arcsin_contains_arb(x):
    for mode in ("margin", "arb"):
        with elementary(mode):
            lo, hi = point_bounds("arcsin", np.array([x, -x]))
        with _prec(200):
            exact = flint.arb(x).asin()
            assert bool(flint.arb(float(lo[0])) <= exact) and bool(exact <= flint.arb(float(hi[0])))
            assert bool(flint.arb(float(lo[1])) <= -exact) and bool(-exact <= flint.arb(float(hi[1])))
    assert np.isnan(point_bounds("arcsin", np.array([1.0000000000000002]))[0][0])


def test_closed_form_against_monte_carlo():
    W = np.array([[0.9, 0.3, -0.1], [0.2, -0.5, 0.4]])
    v = np.array([1.0, 0.0, 0.5])
    parts = enclose_closed_form(Iv(np.concatenate([W, v[None]])), Iv(np.array([1.0, 1.0, -1.0])), 2)
    L, se, _, _ = oracle.monte_carlo(W, v, 400_000, seed=3)
    mid = 0.5 * (parts.L.lo + parts.L.hi)
    assert abs(mid - L) <= 5 * se, (mid, L, se)


# --- the spec's model: mean-value forms, the theta mapping, and R above every rule ------------------------
def _spec(W, v, floor=1e-12, halfwidth=0.05, a=None, extra=""):
    rows = ", ".join("[" + ", ".join(repr(float(x)) for x in r) + "]" for r in W)
    model = "sum(relu(W @ x))" if a is None else "a @ relu(W @ x)"
    consts = "" if a is None else f"  a = [{', '.join(repr(float(x)) for x in a)}]\n"
    return (f'spec "t"\ndata gaussian(d={len(v)}) {{\n  v = [{", ".join(repr(float(x)) for x in v)}]\n{consts}}}\n'
            f"params {{\n  W : [{len(W)}, {len(v)}] = [{rows}]\n}}\n"
            f"model f(x) = {model}\ntarget relu(v @ x)\nloss least_squares\n"
            f"region box(center=init, halfwidth={halfwidth})\nmethod interval(boxes=50, seed=0)\n{extra}"
            f"certify rate(floor={floor}, horizon=100)\n")


@settings(max_examples=12, deadline=None)
@given(st.integers(0, 10**6), st.sampled_from([1e-4, 1e-2, 0.05]))
def test_model_over_box_contains_mpmath_and_rules_are_below_R(seed, width):
    rng = np.random.default_rng(seed)
    d, n = int(rng.choice([2, 3])), int(rng.integers(1, 3))
    v = rng.standard_normal(d)
    W = v / n + 0.1 * rng.standard_normal((n, d))
    a = rng.choice([1.0, 0.5], n) if rng.random() < 0.5 else None
    model = IntervalModel(problem_of(_spec(W, v, a=a)).checked)
    assert isinstance(model, PopulationIntervalModel)
    theta = W.reshape(-1)
    lo, hi = np.nextafter(theta - width, -np.inf), np.nextafter(theta + width, np.inf)
    enc = model.over_box(lo, hi)
    bound, found = best_bound(RuleContext(model, 1e-12, None, dict(model.blocks)), enc)
    assert {b.rule for b in found} <= {"direct", "convex"}
    c = _mpv(np.concatenate([np.ones(n) if a is None else a, [-1.0]]))
    for _ in range(4):
        th = rng.uniform(lo, hi)
        Pm = [_mpv(r) for r in np.concatenate([th.reshape(n, d), v[None]])]
        L = mp_loss(Pm, c)
        _inside(L, enc.L.lo, enc.L.hi, "L")
        G = [x for r in mp_grad(Pm, c, n) for x in r]
        for j in range(n * d):
            _inside(G[j], enc.grad.lo[j], enc.grad.hi[j], ("grad", j))
        if L >= mp.mpf(1e-12):
            with mp.workdps(DIGITS):
                R = _dot(G, G) / (4 * L)
                for b in found:
                    assert mp.mpf(b.value) <= R, (b.rule, b.value, R)
        point = model.at_point(th)
        _inside(L, point.L.lo, point.L.hi, "L at a point")
        assert point.gsq.lo <= 4 * point.L.lo and point.gsq.hi >= 4 * point.L.hi


def test_a_trainable_second_layer_is_a_diagnostic():
    text = _spec(np.array([[0.6, 0.1], [0.4, -0.1]]), np.array([1.0, 0.0]))
    text = text.replace("  W : [2, 2]", "  a : [2] = [1, 1]\n  W : [2, 2]").replace("sum(relu(W @ x))", "a @ relu(W @ x)")
    with pytest.raises(SpecError) as info:
        run_text(text)
    d = info.value.diagnostics[0]
    assert d.code == "E105" and "second layer" in d.message and d.span is not None


def test_a_box_reaching_a_zero_neuron_is_split_with_a_reason():
    v = np.array([1.0, 0.0])
    model = IntervalModel(problem_of(_spec(np.array([[0.01, 0.0]]), v)).checked)
    enc = model.over_box(np.array([-0.02, -0.02]), np.array([0.04, 0.02]))
    assert enc.zero_neuron and enc.H is None
    bound, found = best_bound(RuleContext(model, 1e-12, None, dict(model.blocks)), enc)
    convex = next(b for b in found if b.rule == "convex")
    assert convex.value == 0.0 and "w_i = 0" in convex.reason


# --- the n = 1 spec: certified, above the flow and real descent, its certificate --------------------------
@pytest.fixture(scope="module")
def n1():
    return run_file(str(N1_SOUND))


def test_n1_sound_spec_is_certified_with_a_linear_rate(n1):
    r = n1
    assert r.verdict == "certified" and r.sound and not r.estimate
    assert 0.25 <= r.mu <= 0.5          # R -> 1/2 at the teacher; the proof gives away some
    assert r.rate["asymptotic"] and "exp" in r.rate["asymptotic"]
    assert r.region["path_length_bound"] <= 0.06


def test_n1_mu_is_below_R_everywhere_in_the_box(n1):
    """R = |grad L|^2 / (4 L) by the independent float oracle at 400 random points and the corners of the box
    (where L > 1e-12, so the float R is accurate to far better than the margin)."""
    theta0 = problem_of(N1_SOUND.read_text()).theta0.numpy()
    v = np.array([1.0, 0, 0, 0, 0])
    rng = np.random.default_rng(0)
    corners = np.array([[(b >> k) & 1 for k in range(5)] for b in range(32)]) * 0.12 - 0.06
    for d in np.concatenate([rng.uniform(-0.06, 0.06, (400, 5)), corners]):
        w = (theta0 + d).reshape(1, 5)
        L = oracle.loss(w, v)
        if L > 1e-12:
            g = oracle.grad(w, v)
            assert n1.mu <= float((g * g).sum()) / (4 * L) * (1 + 1e-6)


@pytest.mark.slow
def test_n1_functions_arb_agrees(n1):
    """functions=arb (no libm trusted for sin, cos, arcsin) proves the same mu to 1e-9."""
    text = N1_SOUND.read_text().replace("method interval(boxes=200, seed=0)",
                                        "method interval(boxes=200, seed=0, functions=arb)")
    r = run_text(text)
    assert r.verdict == "certified" and r.sound
    assert r.mu == pytest.approx(n1.mu, rel=1e-9)


@_digits
def _exact_loss(w, v) -> float:
    """L at the float point w, by mpmath at 50 digits (the float closed form's own rounding, about 1e-16,
    would hide the bound far below it: floor 0)."""
    return float(mp_loss([_mpv(r) for r in np.concatenate([w, v[None]])], _mpv([1.0] * len(w) + [-1.0])))


def test_n1_bound_lies_above_the_flow_and_descent(n1):
    r = n1
    problem = problem_of(N1_SOUND.read_text())
    W0 = problem.theta0.numpy().reshape(1, 5)
    v = np.array([1.0, 0, 0, 0, 0])
    sol = solve_ivp(lambda t, y: -oracle.grad(y.reshape(1, 5), v).ravel(), (0, 30), W0.ravel(), method="DOP853",
                    rtol=1e-12, atol=1e-15, dense_output=True)
    assert sol.success
    for t in np.concatenate([np.linspace(0, 2, 41), np.linspace(2, 30, 57)]):
        w = sol.sol(t).reshape(1, 5)
        assert np.max(np.abs(w - W0)) <= 0.06
        assert _exact_loss(w, v) <= r.bound(t) * (1 + 1e-9)
    w, eta = W0.copy(), 0.05
    for k in range(1, 601):
        w = w - eta * oracle.grad(w, v)
        if k % 20 == 0:
            assert _exact_loss(w, v) <= r.bound(k * eta) * (1 + 1e-9)
    # floor 0: L0_up exp(-4 mu t), no floor
    L0 = r.loss["initial_upper"]
    assert r.bound(50) == pytest.approx(L0 * math.exp(-4 * r.mu * 50), rel=1e-6) and r.bound(50) > 0


@pytest.fixture(scope="module")
def emitted(tmp_path_factory):
    return emit_certificate(tmp_path_factory.mktemp("pop_emitted"), N1_SOUND.read_text(), "e")


def test_check_accepts_the_population_certificate(emitted, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert reforged_beside(emitted, tmp_path, lambda cert: None) == []
    cert = json.loads((emitted / "e.json").read_text())
    assert {e["rule"] for e in cert["evidence"] if e["kind"] == "sound-leaf" and e["status"] == "proven"} == {"convex"}


def test_check_rejects_a_tampered_population_certificate(emitted, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    for change in BOX_PROOF_TAMPERS:
        assert reforged_beside(emitted, tmp_path, change), change.__name__


# --- two students: a linear rate to floor 0 is false (L ~ t^-3) and never certified ----------------------
def test_two_students_linear_rate_to_zero_is_never_certified():
    W = np.array([[0.55, 0.08], [0.45, -0.1]])
    text = _spec(W, np.array([1.0, 0.0]), floor=0, halfwidth=0.3, extra="desingularizer log\n")
    r = run_text(text)
    assert r.verdict != "certified" and not r.sound


N2_SOUND = SPECS / "single_neuron_n2_sound.rq"


def _n2_text(floor, desingularizer, boxes=200):
    text = N2_SOUND.read_text()
    assert "desingularizer power(alpha=2/3)" in text and "floor=3e-2" in text
    return (text.replace("desingularizer power(alpha=2/3)", desingularizer)
            .replace("floor=3e-2", f"floor={floor}").replace("boxes=3000", f"boxes={boxes}"))


@pytest.mark.parametrize("desingularizer", ["desingularizer log", "desingularizer auto"])
def test_two_students_spec_never_gets_a_linear_rate_to_zero(desingularizer):
    """specs/single_neuron_n2_sound.rq with floor 0: L ~ t^-3, so no linear rate (log, or auto's natural
    log for least squares) to 0 is true; certify must not certify it."""
    r = run_text(_n2_text(0, desingularizer))
    assert r.verdict != "certified" and not r.sound


def test_two_students_lower_floor_is_blocked_by_confinement():
    """Floor 1e-2 with halfwidth 0.2 (docs/sound.md): a verified point with R below the mu confinement
    needs: inconclusive, never certified."""
    text = _n2_text("1e-2", "desingularizer power(alpha=2/3)", boxes=400).replace("halfwidth=0.1", "halfwidth=0.2")
    r = run_text(text)
    assert r.verdict == "inconclusive" and not r.sound and r.failing_region.kind == "confinement"


@pytest.fixture(scope="module")
def n2():
    return run_file(str(N2_SOUND))


@pytest.mark.slow
def test_two_students_sound_spec_proves_a_power_profile(n2):
    """Certified by the loss-level profile with phi = power(alpha=2/3), L ~ t^-3 in form; every band's
    mu below R at 300 random points of the box (the independent numpy oracle), rho <= 0.1."""
    r = n2
    assert r.verdict == "certified" and r.sound
    assert r.desingularizer["name"] == "power" and r.desingularizer["params"]["alpha"] == pytest.approx(2 / 3)
    bands = r.rate["profile"]["bands"]
    assert len(bands) == 2 and all(b["mu"] > 0 for b in bands)
    assert "t^-3" in r.rate["asymptotic"]
    assert r.region["path_length_bound"] <= 0.1
    W0 = problem_of(N2_SOUND.read_text()).theta0.numpy().reshape(2, 2)
    v = np.array([1.0, 0.0])
    rng = np.random.default_rng(1)
    for d in rng.uniform(-0.1, 0.1, (300, 2, 2)):
        w = W0 + d
        L = oracle.loss(w, v)
        g = oracle.grad(w, v)
        R = float((g * g).sum()) / (4 * L)
        for b in bands:
            if b["low"] <= L <= b["high"]:
                assert b["mu"] <= R * (1 + 1e-9)


@pytest.mark.slow
def test_two_students_bound_lies_above_the_flow_and_descent(n2):
    """The profile's bound above a DOP853 flow of the population ODE (numpy oracle gradient) and real
    gradient descent, the flow inside the box until it crosses the floor."""
    r = n2
    W0 = problem_of(N2_SOUND.read_text()).theta0.numpy().reshape(2, 2)
    v = np.array([1.0, 0.0])
    sol = solve_ivp(lambda t, y: -oracle.grad(y.reshape(2, 2), v).ravel(), (0, 5), W0.ravel(), method="DOP853",
                    rtol=1e-12, atol=1e-15, dense_output=True)
    assert sol.success
    crossed = False
    for t in np.linspace(0, 5, 201):
        w = sol.sol(t).reshape(2, 2)
        L = oracle.loss(w, v)
        assert L <= r.bound(t) * (1 + 1e-9)
        crossed = crossed or L <= 3e-2
        assert crossed or np.max(np.abs(w - W0)) <= 0.1
    assert crossed
    w, eta = W0.copy(), 0.01
    for k in range(1, 501):
        w = w - eta * oracle.grad(w, v)
        assert oracle.loss(w, v) <= r.bound(k * eta) * (1 + 1e-9)
