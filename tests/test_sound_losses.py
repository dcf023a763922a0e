"""The sound mode beyond least squares: the exponential loss.

Every enclosure (per-sample losses, L, g, ||g||_D^2, grad L and the rules' R bound) is checked against
python-flint's arb at points of random boxes; the certified rate of specs/exponential_separable_sound.rq
against an independent DOP853 integration of the flow and real gradient descent; known-false claims are
never certified; `certify check` accepts the certificate and rejects it tampered."""
from __future__ import annotations

import json
import math
import shutil

import arb_oracle as oracle
import flint
import numpy as np
import pytest
from helpers import SPECS, emit_certificate, problem_of, reforged
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.integrate import solve_ivp

from certifier import cli
from certifier.analyse.sound.rules import RuleContext, best_bound
from certifier.compile.interval_losses import INTERVAL_LOSSES
from certifier.compile.interval_model import IntervalModel
from certifier.compile.iv import Iv
from certifier.compose.sound import natural, needed_mu, needed_mu_lower, rho_upper
from certifier.diagnostics import SpecError
from certifier.language.losses import LOSSES
from certifier.pipeline import run_file, run_text

arb = flint.arb
SOUND_SPEC = SPECS / "exponential_separable_sound.rq"
X = np.array([[1.5, 0.5], [1.5, -0.5], [-1.2, 0.1]])
Y = np.array([1.0, 1.0, -1.0])


def test_every_sound_loss_has_an_interval_rule():
    sound = {name for name, loss in LOSSES.items() if loss.sound}
    assert sound == set(INTERVAL_LOSSES) and {"least_squares", "exponential"} <= sound


# --- enclosures against arb -----------------------------------------------------------------------------
@settings(max_examples=60, deadline=None, derandomize=True)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 6), scale=st.floats(0.01, 30.0))
def test_exponential_enclosures_contain_the_arb_values(seed, n, scale):
    rng = np.random.default_rng(seed)
    y = np.where(rng.random((n, 1)) < 0.5, -1.0, 1.0)
    c = rng.normal(size=(n, 1)) * scale
    w = np.abs(rng.normal(size=(n, 1))) * scale * rng.choice([0.0, 1e-6, 0.1, 1.0])
    enc = INTERVAL_LOSSES["exponential"].enclose(Iv(c - w, c + w), y)
    for _ in range(4):
        F = np.clip(c + w * rng.uniform(-1, 1, size=(n, 1)), c - w, c + w)
        l = [(-arb(float(y[i, 0])) * arb(float(F[i, 0]))).exp() for i in range(n)]
        L = sum(l, arb(0)) / n
        gsq = sum((v * v for v in l), arb(0)) / n
        assert oracle.all_inside(l, enc.per_sample.lo, enc.per_sample.hi)[0]
        assert oracle.inside(L, enc.L.lo, enc.L.hi) and oracle.inside(gsq, enc.gsq.lo, enc.gsq.hi)
        g = [-arb(float(y[i, 0])) * l[i] / enc.g_scale for i in range(n)]
        assert oracle.all_inside(g, enc.g.lo[:, 0], enc.g.hi[:, 0])[0]
        # the refinement by a tighter L keeps the enclosure (mean l^2 >= L^2)
        ref = INTERVAL_LOSSES["exponential"].refine(enc, enc.L)
        assert oracle.inside(gsq, ref.gsq.lo, ref.gsq.hi)


TANH = """\
spec "t"
data {
  x = [[1.0, -0.4], [0.3, 0.9], [-0.7, 0.2], [0.5, 0.5]]
  y = [1.0, -1.0, 1.0, -1.0]
}
params {
  a : [] = 1.0
  w : [2] = [0.5, -0.3]
}
model f(x) = a * tanh(w @ x)
loss exponential
region box(center=init, halfwidth=0.5)
method interval(boxes=20, seed=0)
certify rate(floor=0.1, horizon=10)
"""


def _arb_exponential(model: IntervalModel, theta: np.ndarray):
    """(L, grad L, ||g||_D^2, R) at theta in arb: l_i = exp(-y_i F_i), grad L = (1/n) J^T g."""
    params = {k: np.asarray(model.checked.params[k], dtype=np.float64) for k in model.names}
    F, J, *_ = oracle.model_at(model.body, model.arg, model.x, np.zeros((model.n, 1)), params, {}, theta)
    y = model.yk[:, 0]
    l = [(-arb(float(y[i])) * F[i, 0]).exp() for i in range(model.n)]
    g = [-arb(float(y[i])) * l[i] for i in range(model.n)]
    grad = [sum((J[i, j] * g[i] for i in range(model.n)), arb(0)) / model.n for j in range(model.m)]
    gsq = sum((v * v for v in l), arb(0)) / model.n
    L = sum(l, arb(0)) / model.n
    return L, grad, gsq, sum((v * v for v in grad), arb(0)) / gsq


@settings(max_examples=25, deadline=None, derandomize=True)
@given(seed=st.integers(0, 2**32 - 1), width=st.floats(1e-6, 0.5))
def test_interval_model_of_the_exponential_loss_encloses_arb(seed, width):
    model = IntervalModel(problem_of(TANH).checked)
    rng = np.random.default_rng(seed)
    center = model.theta0 + rng.normal(size=model.m) * 0.5
    lo, hi = center - width * rng.random(model.m), center + width * rng.random(model.m)
    enc = model.over_box(lo, hi)
    bound, _ = best_bound(RuleContext(model, 0.0, None, dict(model.blocks)), enc)
    for _ in range(3):
        theta = lo + (hi - lo) * rng.random(model.m)
        L, grad, gsq, R = _arb_exponential(model, theta)
        assert oracle.inside(L, enc.L.lo, enc.L.hi)
        assert oracle.all_inside(grad, enc.grad.lo, enc.grad.hi)[0]
        assert oracle.inside(gsq, enc.gsq.lo, enc.gsq.hi)
        assert bool(R >= arb(bound.value)), (bound, R)
        point = model.at_point(theta, True)
        assert oracle.inside(gsq, point.gsq.lo, point.gsq.hi)


# --- confinement and rate arithmetic, outward --------------------------------------------------------
@settings(max_examples=100, deadline=None, derandomize=True)
@given(L0=st.floats(1e-6, 1e6), frac=st.floats(1e-9, 0.99), radius=st.floats(1e-3, 1e3))
def test_exponential_confinement_closes_after_rounding(L0, frac, radius):
    c, phi = natural("exponential")
    floor = L0 * frac
    mu = needed_mu(L0, floor, radius, phi, c)
    assert rho_upper(L0, floor, mu, phi, c) <= radius
    exact = (arb(L0) / arb(floor)).log() ** 2 / arb(radius) ** 2       # (log(L0/floor) / r)^2
    assert bool(exact <= arb(mu)) and bool(arb(needed_mu_lower(L0, floor, radius, phi, c)) <= exact)
    assert bool(arb(rho_upper(L0, floor, 0.37, phi, c)) >= (arb(L0) / arb(floor)).log() / arb(0.37).sqrt())


# --- the spec: certified, above the flow and real descent ---------------------------------------------
@pytest.fixture(scope="module")
def certified():
    return run_file(str(SOUND_SPEC))


def _loss(w):
    return float(np.mean(np.exp(-Y * (X @ w))))


def _grad(w):
    l = np.exp(-Y * (X @ w))
    return X.T @ (-Y * l) / len(Y)


def test_exponential_spec_is_certified_with_the_power_rate(certified):
    r = certified
    assert r.verdict == "certified" and r.sound and not r.estimate
    assert r.loss["name"] == "exponential" and r.loss["constant"] == 1.0
    assert r.rate["asymptotic"] and "t^-1" in r.rate["asymptotic"]
    assert r.region["path_length_bound"] <= 5
    # mu is below R at every point of the box above the floor and below L0 (inf R is about 0.93)
    g = np.linspace(-5, 5, 201)
    W = np.stack(np.meshgrid(g, g), -1).reshape(-1, 2)
    l = np.exp(-(W @ X.T) * Y)
    L = l.mean(1)
    R = ((l * -Y) @ X / 3) ** 2
    R = R.sum(1) / (l ** 2).mean(1)
    keep = (L >= 0.05) & (L <= 1.0)
    assert 0 < r.mu <= R[keep].min()


def test_exponential_bound_lies_above_the_flow_and_descent(certified):
    r = certified
    sol = solve_ivp(lambda t, w: -_grad(w), (0, 200), np.zeros(2), method="DOP853", rtol=1e-11, atol=1e-13,
                    dense_output=True)
    ts = np.concatenate([np.linspace(0, 5, 101), np.logspace(0.7, np.log10(200), 60)])
    for t in ts:
        w = sol.sol(t)
        assert np.max(np.abs(w)) <= 5
        assert _loss(w) <= r.bound(t) * (1 + 1e-9)
        # the closed form of the rate: 1 / (1 / L0 + mu t), floored
        assert r.bound(t) >= max(1 / (1 + r.mu * t), 0.05) * (1 - 1e-12)
    w, eta = np.zeros(2), 0.01
    for k in range(1, 5001):
        w = w - eta * _grad(w)
        if k % 50 == 0:
            assert _loss(w) <= r.bound(k * eta) * (1 + 1e-9)
    assert r.bound(1000) == 0.05


def test_sound_results_carry_the_asymptotic_rate():
    r = run_file(str(SPECS / "linear_underparameterized_sound.rq"))
    assert r.verdict == "certified" and r.rate["asymptotic"].startswith("L ~ exp(")


# --- known-false claims are never certified -------------------------------------------------------------
NONSEPARABLE = """\
spec "exponential loss, classes that overlap"
data {
  x = [[1.0, 0.2], [1.0, -0.3], [0.1, -0.8]]
  y = [1.0, -1.0, 1.0]
}
params { w : [2] = zeros() }
model f(x) = w @ x
loss exponential
region box(center=init, halfwidth=HW)
method interval(boxes=300, seed=0)
certify rate(floor=FLOOR, horizon=100)
"""


def test_exponential_floor_zero_is_a_diagnostic():
    with pytest.raises(SpecError) as info:
        run_text(NONSEPARABLE.replace("HW", "2").replace("FLOOR", "0"), "n.rq")
    (diag,) = info.value.diagnostics
    assert diag.code == "E109" and "floor" in diag.message and diag.span is not None


@pytest.mark.parametrize("floor, hw", [("0.5", "1"), ("0.95", "1"), ("0.1", "3"), ("1e-3", "20")])
def test_a_floor_below_the_minimum_is_never_certified(floor, hw):
    # 0 lies in the convex hull of the y_i x_i, so min L > 0 (0.979 at w = (0.009, -0.440), L0 = 1): the claimed
    # floors lie below it, so no rate to them is true
    from scipy.optimize import minimize

    best = minimize(lambda w: float(np.mean(np.exp(-np.array([1.0, -1.0, 1.0]) *
                                                  (np.array([[1.0, 0.2], [1.0, -0.3], [0.1, -0.8]]) @ w)))),
                    np.zeros(2)).fun
    assert best > float(floor)
    r = run_text(NONSEPARABLE.replace("HW", hw).replace("FLOOR", floor), "n.rq")
    assert r.verdict != "certified"
    assert r.verdict == "refuted" and r.failing_region.kind == "critical-point"   # the minimiser, verified


# --- certificates -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def emitted(tmp_path_factory):
    return emit_certificate(tmp_path_factory.mktemp("exp_emitted"), SOUND_SPEC.read_text(), "e")


def _tampered(folder, tmp_path, change) -> list[str]:
    shutil.copy(folder / "e.rq", tmp_path / "e.rq")
    return reforged(folder / "e.json", change, tmp_path / "e.json")


def test_check_accepts_the_exponential_certificate(emitted, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert _tampered(emitted, tmp_path, lambda cert: None) == []
    cert = json.loads((emitted / "e.json").read_text())
    leaves = [e for e in cert["evidence"] if e["kind"] == "sound-leaf"]
    assert leaves and any(e["status"] == "dropped" and e["reason"] == "entirely above the initial loss"
                          for e in leaves)


def _proof(cert):
    return next(e for e in cert["evidence"] if e["kind"] == "sound-proof")


def test_check_rejects_a_tampered_exponential_certificate(emitted, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    def raise_mu(cert):
        mu = float.fromhex(_proof(cert)["mu"]) * 1.5
        _proof(cert)["mu"] = mu.hex()
        cert["numbers"]["mu"] = mu
        cert["rate"]["parameters"]["mu"] = mu.hex()

    def lower_l0(cert):
        L0 = float.fromhex(_proof(cert)["L0_upper"]) * 0.5
        _proof(cert)["L0_upper"] = L0.hex()
        cert["numbers"]["L0_upper"] = L0
        cert["rate"]["parameters"]["L0_upper"] = L0.hex()

    def false_drop(cert):
        leaf = next(e for e in cert["evidence"] if e["kind"] == "sound-leaf" and e["status"] == "proven")
        leaf["status"], leaf["reason"] = "dropped", "entirely above the initial loss"

    for change in (raise_mu, lower_l0, false_drop):
        assert _tampered(emitted, tmp_path, change), change.__name__


def test_path_integral_is_outward():
    c, phi = natural("exponential")
    assert (c, phi.name, phi.params) == (1.0, "power", {"alpha": 1.0})
    assert math.isinf(rho_upper(1.0, 0.0, 0.5, phi, c))


# --- logistic ------------------------------------------------------------------------------------------
LOGISTIC_SPEC = SPECS / "logistic_nonseparable_sound.rq"
XL = np.array([[2.0, 0.3], [-2.0, 0.6], [2.0, -0.5], [1.0, -0.05]])
YL = np.array([1.0, -1.0, 1.0, -1.0])


@settings(max_examples=60, deadline=None, derandomize=True)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 6), scale=st.floats(0.01, 60.0))
def test_logistic_enclosures_contain_the_arb_values(seed, n, scale):
    rng = np.random.default_rng(seed)
    y = np.where(rng.random((n, 1)) < 0.5, -1.0, 1.0)
    c = rng.normal(size=(n, 1)) * scale
    w = np.abs(rng.normal(size=(n, 1))) * scale * rng.choice([0.0, 1e-6, 0.1, 1.0])
    enc = INTERVAL_LOSSES["logistic"].enclose(Iv(c - w, c + w), y)
    old, flint.ctx.prec = flint.ctx.prec, 2048      # sigmoid(z) = 1 - 1e-200 must not round to a ball around 1
    try:
        _logistic_points(enc, rng, y, c, w, n)
    finally:
        flint.ctx.prec = old


def _logistic_points(enc, rng, y, c, w, n):
    for _ in range(4):
        F = np.clip(c + w * rng.uniform(-1, 1, size=(n, 1)), c - w, c + w)
        z = [-arb(float(y[i, 0])) * arb(float(F[i, 0])) for i in range(n)]
        l = [zi.exp().log1p() for zi in z]                       # log(1 + e^z), accurate for z << 0
        s = [1 / (1 + (-zi).exp()) for zi in z]                 # |g_i| = sigmoid(z_i)
        assert oracle.all_inside(l, enc.per_sample.lo, enc.per_sample.hi)[0]
        assert oracle.inside(sum(l, arb(0)) / n, enc.L.lo, enc.L.hi)
        assert oracle.inside(sum((v * v for v in s), arb(0)) / n, enc.gsq.lo, enc.gsq.hi)
        g = [-arb(float(y[i, 0])) * s[i] for i in range(n)]
        assert oracle.all_inside(g, enc.g.lo[:, 0], enc.g.hi[:, 0])[0]


def _lower_convex_envelope(us: np.ndarray, hs: np.ndarray) -> np.ndarray:
    """The lower convex hull of the points (us, hs) (Andrew's monotone chain), evaluated at us: an
    independent h_M on a grid."""
    hull = []
    for p in zip(us, hs):
        while len(hull) >= 2 and (hull[-1][0] - hull[-2][0]) * (p[1] - hull[-2][1]) - \
                (hull[-1][1] - hull[-2][1]) * (p[0] - hull[-2][0]) <= 0:
            hull.pop()
        hull.append(p)
    hx, hy = zip(*hull)
    return np.interp(us, hx, hy)


@pytest.mark.parametrize("M, low, high", [(0.5, 0.01, 0.5), (2.0, 0.05, 1.0), (2.77, 0.515, 0.6932),
                                          (10.0, 0.1, 2.0), (50.0, 0.01, 0.7)])
def test_logistic_constant_is_below_the_convex_minorant_ratio(M, low, high):
    from certifier.compose.sound import minorant_ratio_lower

    c = minorant_ratio_lower(M, low, high)
    us = np.linspace(0, M, 200001)
    h = np.expm1(-us) ** 2
    env = _lower_convex_envelope(us, h)
    keep = (us >= low) & (us <= high)
    # the envelope on a grid lies above the exact h_M by at most the grid's chord error (< 1e-9 here)
    assert c <= np.min(env[keep] / h[keep]) + 1e-9
    assert c >= 0.97 * np.min(env[keep] / h[keep])           # and is not needlessly small
    # the fact itself: two-valued per-sample losses in [0, M] with mean L in [low, high]
    rng = np.random.default_rng(0)
    a, b = rng.uniform(0, M, 20000), rng.uniform(0, M, 20000)
    lam = rng.uniform(0, 1, 20000)
    L = lam * a + (1 - lam) * b
    ok = (L >= low) & (L <= high)
    ratio = (lam * np.expm1(-a) ** 2 + (1 - lam) * np.expm1(-b) ** 2)[ok] / np.expm1(-L[ok]) ** 2
    assert c <= ratio.min() * (1 + 1e-12)


@pytest.fixture(scope="module")
def logistic():
    return run_file(str(LOGISTIC_SPEC))


def _loss_l(w):
    return float(np.mean(np.logaddexp(0, -YL * (XL @ w))))


def _grad_l(w):
    s = 1 / (1 + np.exp(YL * (XL @ w)))
    return XL.T @ (-YL * s) / len(YL)


def test_logistic_spec_is_certified_and_above_the_flow(logistic):
    r = logistic
    assert r.verdict == "certified" and r.sound and r.loss["name"] == "logistic"
    M = r.loss["sample_bound"]
    assert 0 < r.loss["constant"] < 1 and math.log(2) <= M <= 4 * math.log(2) * (1 + 1e-12)
    # M (from the proven boxes) bounds every per-sample loss where the flow can be above the floor
    g = np.linspace(-1.5, 1.5, 151)
    W = np.stack(np.meshgrid(g, g), -1).reshape(-1, 2)
    per = np.logaddexp(0, -(W @ XL.T) * YL)
    keep = (per.mean(1) >= 0.515) & (per.mean(1) <= math.log(2))
    assert per[keep].max() <= M
    # c against the convex minorant of h on [0, M] (independent hull, as above)
    us = np.linspace(0, M, 100001)
    env = _lower_convex_envelope(us, np.expm1(-us) ** 2)
    band = (us >= 0.515) & (us <= math.log(2))
    assert r.loss["constant"] <= np.min(env[band] / np.expm1(-us[band]) ** 2) + 1e-9
    assert r.rate["asymptotic"] and "W0(" in r.rate["formula"]
    sol = solve_ivp(lambda t, w: -_grad_l(w), (0, 100), np.zeros(2), method="DOP853", rtol=1e-11, atol=1e-13,
                    dense_output=True)
    for t in np.concatenate([np.linspace(0, 3, 61), np.linspace(3, 100, 40)]):
        w = sol.sol(t)
        assert np.max(np.abs(w)) <= 1.5
        assert _loss_l(w) <= r.bound(t) * (1 + 1e-9)
    w, eta = np.zeros(2), 0.01
    for k in range(1, 1001):
        w = w - eta * _grad_l(w)
        if k % 20 == 0:
            assert _loss_l(w) <= r.bound(k * eta) * (1 + 1e-9)


@pytest.mark.parametrize("floor", ["0.4", "0.41"])
def test_logistic_floor_below_the_minimum_is_never_certified(floor):
    # min L = 0.41512 (at w = (0.889, -1.092)): a floor below it is false
    from scipy.optimize import minimize

    assert minimize(_loss_l, np.zeros(2)).fun > float(floor)
    r = run_text(LOGISTIC_SPEC.read_text().replace("floor=0.515", f"floor={floor}").replace("halfwidth=1.5",
                                                                                          "halfwidth=2.5"), "l.rq")
    assert r.verdict != "certified"


def test_check_accepts_and_rejects_the_logistic_certificate(tmp_path, monkeypatch):
    shutil.copy(LOGISTIC_SPEC, tmp_path / "e.rq")
    monkeypatch.chdir(tmp_path)
    assert cli.main(["e.rq", "--quiet", "--emit", "e.json", "--no-cache"]) == 0
    folder = tmp_path / "orig"
    folder.mkdir()
    shutil.copy(tmp_path / "e.rq", folder / "e.rq")
    shutil.copy(tmp_path / "e.json", folder / "e.json")
    assert _tampered(folder, tmp_path, lambda cert: None) == []

    def raise_mu(cert):
        mu = float.fromhex(_proof(cert)["mu"]) * 1.2
        _proof(cert)["mu"] = mu.hex()
        cert["numbers"]["mu"] = mu
        cert["rate"]["parameters"]["mu"] = mu.hex()
    assert _tampered(folder, tmp_path, raise_mu)

    def lower_m(cert):              # a smaller M would give a larger c: it must be above every leaf's bound
        proof = _proof(cert)
        assert "sample_bound" in proof
        proof["sample_bound"] = (float.fromhex(proof["sample_bound"]) * 0.8).hex()
    assert _tampered(folder, tmp_path, lower_m)


# --- cross-entropy -------------------------------------------------------------------------------------
@settings(max_examples=60, deadline=None, derandomize=True)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 4), k=st.integers(2, 4), scale=st.floats(0.01, 40.0))
def test_cross_entropy_enclosures_contain_the_arb_values(seed, n, k, scale):
    rng = np.random.default_rng(seed)
    cls = rng.integers(0, k, size=n)
    y = np.eye(k)[cls]
    c = rng.normal(size=(n, k)) * scale
    w = np.abs(rng.normal(size=(n, k))) * scale * rng.choice([0.0, 1e-6, 0.1, 1.0])
    enc = INTERVAL_LOSSES["cross_entropy"].enclose(Iv(c - w, c + w), y)
    old, flint.ctx.prec = flint.ctx.prec, 2048      # p_y = 1 - 1e-200 must not round to a ball around 1
    try:
        for _ in range(4):
            F = np.clip(c + w * rng.uniform(-1, 1, size=(n, k)), c - w, c + w)
            ls, gsq = [], arb(0)
            for i in range(n):
                e = [arb(float(F[i, j])).exp() for j in range(k)]
                total = sum(e, arb(0))
                p = [v / total for v in e]
                ls.append(-(p[cls[i]].log()))
                g = [p[j] - (1 if j == cls[i] else 0) for j in range(k)]
                gsq += sum((v * v for v in g), arb(0))
                assert oracle.all_inside(g, enc.g.lo[i], enc.g.hi[i])[0]
            assert oracle.all_inside(ls, enc.per_sample.lo, enc.per_sample.hi)[0]
            assert oracle.inside(sum(ls, arb(0)) / n, enc.L.lo, enc.L.hi)
            assert oracle.inside(gsq / n, enc.gsq.lo, enc.gsq.hi)
    finally:
        flint.ctx.prec = old


SOFTMAX = SPECS / "softmax_three_classes_sound.rq"
XS = np.array([[1.0, 0.0, 0.2], [0.0, 1.0, 0.2], [0.3, 0.3, 1.0]])


def test_cross_entropy_is_certified_above_the_flow():
    r = run_file(str(SOFTMAX))
    lam = np.linalg.eigvalsh(XS @ XS.T / 3)[0]          # R >= lambda_min(K) = lambda_min(X X^T) / n
    assert r.verdict == "certified" and r.sound and r.mu <= lam and r.mu >= lam * (1 - 1e-6)
    assert 0 < r.loss["constant"] < 1

    def loss(W):
        F = XS @ W.reshape(3, 3).T
        return float(np.mean(np.log(np.exp(F).sum(1)) - F[np.arange(3), np.arange(3)]))

    def grad(W):
        F = XS @ W.reshape(3, 3).T
        p = np.exp(F - F.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        return ((p - np.eye(3)).T @ XS / 3).reshape(-1)
    sol = solve_ivp(lambda t, w: -grad(w), (0, 60), np.zeros(9), method="DOP853", rtol=1e-11, atol=1e-13,
                    dense_output=True)
    for t in np.linspace(0, 60, 121):
        w = sol.sol(t)
        assert np.max(np.abs(w)) <= 20 and loss(w) <= r.bound(t) * (1 + 1e-9)


# --- options --------------------------------------------------------------------------------------------
def test_natural_desingularizer_or_auto_only():
    text = SOUND_SPEC.read_text()
    r = run_text(text.replace("loss exponential", "loss exponential\ndesingularizer power(alpha=1)"), "e.rq")
    assert r.verdict == "certified" and r.desingularizer["name"] == "power"
    with pytest.raises(SpecError) as info:
        run_text(text.replace("loss exponential", "loss exponential\ndesingularizer log"), "e.rq")
    assert info.value.diagnostics[0].code == "E111" and "power(alpha=1)" in info.value.diagnostics[0].hint


def test_arb_functions_give_the_margin_mu_for_logistic(logistic):
    r = run_text(LOGISTIC_SPEC.read_text().replace("seed=0)", "seed=0, functions=arb)"), "l.rq")
    assert r.verdict == "certified" and r.method["functions"] == "arb"
    assert r.mu == pytest.approx(logistic.mu, rel=1e-9)


def test_certify_check_command_accepts_the_exponential_certificate(emitted, tmp_path, monkeypatch, capsys):
    shutil.copy(emitted / "e.rq", tmp_path / "e.rq")
    shutil.copy(emitted / "e.json", tmp_path / "e.json")
    monkeypatch.chdir(tmp_path)
    assert cli.main(["check", "e.json"]) == 0
    assert "certificate valid" in capsys.readouterr().out
