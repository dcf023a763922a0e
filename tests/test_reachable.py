"""Soundness first: no rate below the levels sampled, refutations the flow can meet, and a witness
or replay that contradicts a sound bound is an internal error, never a verdict.

Each spec is compared with an independent computation: the linear problems' exact minimum and
closed-form flow (tests/oracles.py), the deep linear model's flow by solve_ivp."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import oracles
import pytest

from certifier import cli
from certifier.analyse.records import Records
from certifier.compose import sound as sound_verdict
from certifier.pipeline import run_text

LINEAR = """
spec "linear least squares, {what}"
data {{
  z = normal(shape=[32, 4], seed=0)
  x = z * [1, 1, 1, {scale}]
  v = normal(shape=[4], seed=1)
  e = normal(shape=[32], seed=2)
  y = x @ v + {eps} * e
}}
params {{ w : [4] = zeros() }}
model f(x) = w @ x
loss least_squares
region ball(center=init, radius=auto)
method sampled(samples=2048, seed=0)
certify rate(floor=0, horizon=1e4)
"""


def linear_oracle(scale: float, eps: float):
    z = oracles.rng(0).standard_normal((32, 4))
    x = z * np.array([1, 1, 1, scale])
    y = x @ oracles.rng(1).standard_normal(4) + eps * oracles.rng(2).standard_normal(32)
    return x, y


def test_ill_conditioned_problem_with_a_tiny_positive_minimum_is_never_certified_to_zero():
    """min L = 3.3e-13 L0 (above the noise level 1e-16 L0, below the 1e-12 L0 sampling target): main
    certified L <= (L0^-1/3 + K t / 3)^-3 to floor 0, which falls below the minimum for large t. The
    descent from theta0 now goes on while it gains a decade per block and reaches the minimum."""
    x, y = linear_oracle(0.04, 5.2e-7)
    *_, l_star = oracles.linear_facts(x, y)
    L0 = float(np.mean(y**2))
    assert 1e-13 < l_star / L0 < 1e-12          # the regime of the report
    r = run_text(LINEAR.format(what="tiny minimum", scale=0.04, eps=5.2e-7), "tiny.rq")
    assert r.verdict == "refuted" and r.failing_region.kind == "critical-point"
    pt = r.failing_region.points[0]
    assert pt.source == "descent from theta0"          # a point the flow meets
    assert l_star <= pt.loss <= l_star * (1 + 1e-6)    # it is the minimum, computed independently


def test_minimum_below_the_noise_level_is_certified_only_down_to_the_levels_reached():
    """min L = 1e-17-ish of L0, below the rounding-noise level: certified, but to an effective floor
    at or above the lowest loss reached (never 0), and the bound lies above the exact flow."""
    x, y = linear_oracle(1.0, 2e-9)
    *_, l_star = oracles.linear_facts(x, y)
    L0 = float(np.mean(y**2))
    assert l_star / L0 < 1e-16
    r = run_text(LINEAR.format(what="minimum below the noise", scale=1, eps=2e-9), "noise.rq")
    assert r.verdict == "certified"
    floor = r.loss["effective_floor"]
    assert floor is not None and floor >= max(1e-16 * L0, r.loss["minimum_seen"]) * (1 - 1e-12)
    assert floor > l_star
    assert "max(" in r.rate["formula"]
    ts = np.linspace(0.0, 200.0, 401)
    exact = oracles.linear_flow_loss(x, y, np.zeros(4), ts)
    assert all(r.bound(t) >= L * (1 - 1e-9) for t, L in zip(ts, exact))
    assert r.bound(1e9) >= l_star
    # the witness ran until its loss reached that floor: every later time is covered
    assert r.witness.settled_at is not None
    assert any("held along it at every time" in n for n in r.notes)


def test_records_above_the_initial_loss_take_no_part():
    """The flow lives in {L <= L(theta0)}: a near-critical point above L0 is no counterexample."""
    rec = Records(ceiling=1.0)
    rec.add("trajectory", 0.0, 1.0, 0.5)
    rec.path = 1
    rec.add("random", 3.5, 1.4, 0.0)     # all units dead, L above L0: never reached by the flow
    rec.add("random", 0.2, 0.8, 0.3)
    assert rec.minimum(10.0, 0.0) == (0.3, 2)
    assert rec.lowest(10.0, 0.0, 5) == [2, 0]
    assert rec.lowest(10.0, 0.0, 5, on_path=True) == [0]
    assert rec.lowest_loss(10.0) == 0.8


RELU = """
spec "relu network to a floor"
data {
  x = normal(shape=[64, 2], seed=0)
  y = sin(2 * x[:, 0]) * cos(x[:, 1])
}
params {
  W : [8, 2] = normal(seed=1)
  b : [8]    = normal(std=0.1, seed=3)
  a : [8]    = normal(std=0.25, seed=2)
}
model f(x) = a @ relu(W @ x + b)
loss least_squares
region ball(center=init, radius=auto)
method sampled(samples=1024, seed=0)
certify rate(floor=0.1, horizon=1e4)
"""


def _relu_loss_grad(theta, x, y):
    W, b, a = theta[:16].reshape(8, 2), theta[16:24], theta[24:32]
    z = x @ W.T + b
    h = np.maximum(z, 0.0)
    r = h @ a - y
    n = len(y)
    s = (r[:, None] * (z > 0)) * a[None, :]
    grad = np.concatenate([(2 / n * s.T @ x).ravel(), 2 / n * s.sum(axis=0), 2 / n * h.T @ r])
    return float(np.mean(r**2)), grad


def test_relu_network_is_not_refuted_by_dead_units_the_flow_never_meets():
    """main refuted this network by a point 2.64 from theta0 where units are dead (R = 0, found by the
    adversarial search), while gradient descent from theta0 reaches the floor. That point is a reason
    the region is too large for one mu, not a counterexample: inconclusive, with a smaller radius."""
    x = oracles.rng(0).standard_normal((64, 2))
    y = np.sin(2 * x[:, 0]) * np.cos(x[:, 1])
    theta0 = np.concatenate([oracles.rng(1).standard_normal((8, 2)).ravel(),
                             0.1 * oracles.rng(3).standard_normal(8), 0.25 * oracles.rng(2).standard_normal(8)])
    r = run_text(RELU, "relu.rq")
    assert r.loss["initial"] == pytest.approx(_relu_loss_grad(theta0, x, y)[0], rel=1e-12)   # the same problem
    assert r.verdict == "inconclusive" and r.failing_region.kind == "region-too-large"
    pt = r.failing_region.points[0]
    assert pt.source != "descent from theta0" and pt.rayleigh < 1e-8      # off the path; R about 0
    assert 0.1 < pt.loss <= r.loss["initial"]          # in the sublevel set, above the floor
    assert r.failing_region.numbers["smallest_R_on_descent"] > 1e-3
    assert "radius below" in r.failing_region.suggestion
    # independent: plain gradient descent from theta0 (hand-written numpy gradient) reaches the floor,
    # so the flow does not stall at that point's level
    gd = oracles.descent_loss(lambda th: _relu_loss_grad(th, x, y), theta0, 0.02, 3000)
    assert gd.min() < 0.1 and np.all(np.diff(gd) <= 1e-12)


DEEP = """
spec "deep linear scalar model"
data {
  x = normal(shape=[16, 1], seed=0)
  y = 0.5 * x[:, 0]
}
params {
  a : [] = 0.2
  b : [] = 0.15
  c : [] = 0.25
}
model f(x) = a * b * c * x[0]
loss least_squares
region ball(center=init, radius=auto)
method sampled(samples=2048, seed=0)
certify rate(floor=0, horizon=1e3)
"""


def _deep_loss_grad(theta, x):
    a, b, c = theta
    s = float(np.mean(x * x))
    r = a * b * c - 0.5                   # L = mean((abc - 0.5)^2 x^2) = r^2 s
    g = 2 * r * s * np.array([b * c, a * c, a * b])
    return r * r * s, g


def test_deep_linear_model_is_not_refuted_by_the_saddle_it_never_approaches():
    """main refuted a b c x from (0.2, 0.15, 0.25) by the saddle at 0 (L(0) > L0): the flow converges
    linearly. Now certified, with the bound above the solve_ivp flow and real descent."""
    r = run_text(DEEP, "deep.rq")
    assert r.verdict == "certified", r.failing_region
    x = oracles.rng(0).standard_normal((16, 1))[:, 0]
    theta0 = np.array([0.2, 0.15, 0.25])
    ts = np.linspace(0.0, 400.0, 201)
    flow = oracles.flow_loss(lambda th: _deep_loss_grad(th, x), theta0, ts)
    assert all(r.bound(t) >= L * (1 - 1e-7) for t, L in zip(ts, flow))
    eta = 0.5
    gd = oracles.descent_loss(lambda th: _deep_loss_grad(th, x), theta0, eta, 800)
    assert all(r.bound(k * eta) >= L * (1 - 1e-7) for k, L in enumerate(gd))


def test_fixed_radius_that_the_flow_never_leaves_is_not_refuted():
    """rho > r alone is no counterexample: refuted for confinement only when the witness leaves."""
    text = DEEP.replace("radius=auto", "radius=0.5")
    r = run_text(text, "deep_small.rq")
    assert r.verdict != "refuted" or r.witness.left_region_at is not None
    if r.verdict == "refuted":
        assert r.witness.max_distance > 0.5


# --- the sound mode: a witness that contradicts a proof is a bug, exit 4 ---------------------------
def _sound_text():
    return (Path(__file__).resolve().parent.parent / "specs" / "linear_underparameterized_sound.rq").read_text()


def _wrong_rate(monkeypatch, factor):
    real = sound_verdict._rate

    def wrong(L0_up, mu, floor, horizon, c, *phi):
        return real(L0_up, mu * factor, floor, horizon, c, *phi)
    monkeypatch.setattr(sound_verdict, "_rate", wrong)


def test_a_sound_bound_contradicted_by_descent_is_an_internal_error(monkeypatch, tmp_path, capsys):
    """A proof made wrong on purpose (mu 20 times too large) must never print certified."""
    _wrong_rate(monkeypatch, 20.0)
    with pytest.raises(sound_verdict.SoundnessViolation, match="contradicts a sound certificate"):
        run_text(_sound_text(), "wrong.rq")
    spec = tmp_path / "wrong.rq"
    spec.write_text(_sound_text())
    code = cli.main([str(spec), "--no-cache", "--format", "json"])
    assert code == 4
    err = capsys.readouterr().err
    assert "internal error" in err and "bug in certify" in err and "Traceback" not in err


def test_a_true_sound_bound_passes_the_finer_recheck(monkeypatch):
    """The recheck itself does not reject a correct proof: with the true mu the run is certified."""
    r = run_text(_sound_text(), "right.rq")
    assert r.verdict == "certified" and r.sound
    x, y = oracles.linear_data(noise=False)
    ts = np.linspace(0.0, 20.0, 81)
    exact = oracles.linear_flow_loss(x, y, np.zeros(4), ts)
    assert all(r.bound(t) >= L for t, L in zip(ts, exact))


def test_sound_refutation_needs_a_point_in_the_sublevel_set():
    decisive = sound_verdict._decisive
    r0, L0_lo = 1.0, 2.0
    critical_inside = {"rayleigh_upper": 1e-12, "loss_upper": 1.5}
    critical_above = {"rayleigh_upper": 1e-12, "loss_upper": 2.5}
    slow_point = {"rayleigh_upper": 0.1, "loss_upper": 1.0}
    assert decisive(critical_inside, r0, L0_lo)
    assert not decisive(critical_above, r0, L0_lo)
    assert not decisive(slow_point, r0, L0_lo)
    assert decisive({"claim_false": True, "rayleigh_upper": 0.5, "loss_upper": 9.0}, r0, L0_lo)
    assert math.isfinite(L0_lo)


def test_a_contradicted_certificate_names_where_in_steps_or_time():
    from types import SimpleNamespace
    above = SimpleNamespace(violation={"loss": 2.0, "bound": 1.0, "t": 3.0}, left_region_at=None)
    out = SimpleNamespace(violation=None, left_region_at=1.5)
    with pytest.raises(sound_verdict.SoundnessViolation,
                       match=r"step 0\.5 contradicts a sound certificate \(L = 2 above the proved bound 1 at step 6\)"):
        sound_verdict._violation(above, None, "s.rq", 0.5)
    with pytest.raises(sound_verdict.SoundnessViolation, match=r"leaves the proved region at step 3\)"):
        sound_verdict._violation(out, None, "s.rq", 0.5)
    with pytest.raises(sound_verdict.SoundnessViolation,
                       match=r"from theta0 contradicts a sound certificate \(L = 2 above the proved bound 1 at t = 3; "
                             r"step 0\.01\).*rules used: none"):
        sound_verdict._contradiction(above, None, "s.rq", "gradient descent from theta0", None, "; step 0.01")
