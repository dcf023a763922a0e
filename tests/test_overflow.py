"""Problems of huge scale: R = ||grad L||^2 / ||g||_D^2 where ||grad L||^2 overflows a double while L
is finite (compile/problem.py, rayleigh_quotient), and E206 where L(theta0) itself is not finite.

R is checked against exact rational arithmetic (fractions.Fraction on the stored float64 data) and
against the same problem scaled down by a power of two, which has the same R exactly: for a linear
model F = w . x, targets y S and theta0 = 0, L_S(S w) = S^2 L_1(w) and grad L_S(S w) = S grad L_1(w),
so R_S(S w) = R_1(w); with S = 2^k every scaled number is the small one's times a power of two."""
from __future__ import annotations

import math
import os
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch

from certifier.check import check
from certifier.compile.batched import BatchedEvaluator
from certifier.compile.problem import Problem, rayleigh_quotient
from certifier.diagnostics import CODES, SpecError
from certifier.parse import parse
from certifier.pipeline import run_text

ROOT = Path(__file__).resolve().parent.parent
S = float(2 ** 508)            # 8.4e152: targets ~ S give L0 ~ 1e306, ||grad L||^2 ~ 1e308 * 85 = inf


pytestmark = pytest.mark.usefixtures("one_thread")     # tests/conftest.py


def linear_spec(scale: float, method: str = "sampled(samples=256, seed=0)",
                region: str = "ball(center=init, radius=auto)") -> str:
    # x = 9 z: R(theta0) ~ 85, so ||grad L(theta0)||^2 = 4 R L0 overflows at L0 ~ 1e306
    return ('spec "linear least squares at a huge scale"\n'
            "data {\n"
            "  z = normal(shape=[32, 4], seed=0)\n"
            "  x = 9 * z\n"
            "  v = normal(shape=[4], seed=1)\n"
            f"  y = {scale!r} * (z @ v)\n"
            "}\n"
            "params {\n  w : [4] = zeros()\n}\n"
            "model f(x) = w @ x\n"
            "loss least_squares\n"
            f"region {region}\n"
            f"method {method}\n"
            "certify rate(floor=0, horizon=1e3)\n")


def problem_of(source: str) -> Problem:
    return Problem(check(parse(source, "spec.rq")))


def exact_linear(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> tuple[Fraction, list[Fraction], Fraction]:
    """(L, grad L, R) of L(w) = mean (x w - y)^2 in exact rational arithmetic."""
    X = [[Fraction(float(v)) for v in row] for row in x]
    Y = [Fraction(float(v)) for v in y]
    W = [Fraction(float(v)) for v in w]
    n = len(Y)
    r = [sum(a * b for a, b in zip(row, W)) - t for row, t in zip(X, Y)]
    L = sum(ri * ri for ri in r) / n
    grad = [2 * sum(r[i] * X[i][j] for i in range(n)) / n for j in range(len(W))]
    R = sum(g * g for g in grad) / (4 * L)
    return L, grad, R


def rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(a), abs(b))


# --- (a) least squares, L0 ~ 1e306: Problem.point, log R, the verdict --------------------------------

def test_linear_rayleigh_is_finite_and_exact_when_grad_sqnorm_overflows():
    big = problem_of(linear_spec(S))
    x, y = big.checked.x, big.checked.y
    gen = np.random.default_rng(0)
    thetas = [np.zeros(4), S * gen.normal(size=4) * 0.3]
    for w in thetas:
        p = big.point(torch.as_tensor(w))
        L, grad, R = exact_linear(x, y, w)
        assert 1e305 < p.loss < 1e308 and math.isinf(p.grad_sqnorm)   # the case of the report
        assert math.isfinite(p.rayleigh) and p.rayleigh > 1.0
        assert rel(p.rayleigh, float(R)) < 1e-14
        assert rel(p.loss, float(L)) < 1e-14
        assert max(rel(float(a), float(b)) for a, b in zip(p.grad, grad)) < 1e-13
    # the initial point: R(theta0) >= 79.6 (about 85), never "about 0"
    assert big.point(big.theta0).rayleigh > 79.6


def test_linear_rayleigh_is_scale_invariant():
    """R_S(S w) = R_1(w) and d log R_S / dw at S w = (d log R_1 / dw)(w) / S, on the plain path (small)
    and the scaled one (big)."""
    big, small = problem_of(linear_spec(S)), problem_of(linear_spec(1.0))
    gen = torch.Generator().manual_seed(3)
    for k in range(4):
        w = 0.02 * torch.randn(4, generator=gen, dtype=torch.float64) if k else torch.zeros(4, dtype=torch.float64)
        pb, ps = big.point(S * w), small.point(w)
        assert math.isinf(pb.grad_sqnorm) and math.isfinite(ps.grad_sqnorm)
        assert rel(pb.rayleigh, ps.rayleigh) < 1e-14
        assert rel(pb.loss, S * S * ps.loss) < 1e-15
        Lb, log_rb, db, _ = big.log_rayleigh_and_grad(S * w)
        Ls, log_rs, ds, _ = small.log_rayleigh_and_grad(w)
        assert math.isfinite(log_rb) and abs(log_rb - log_rs) < 1e-13
        assert bool(torch.isfinite(db).all())
        assert float((db * S - ds).norm()) < 1e-12 * float(ds.norm())


def test_plain_quotient_kept_bitwise_on_normal_problems():
    """Where ||grad L||^2 and ||g||_D^2 are finite normal doubles, R is their plain quotient."""
    small = problem_of(linear_spec(1.0))
    for w in (torch.zeros(4, dtype=torch.float64), torch.tensor([0.3, -0.2, 0.1, 0.5], dtype=torch.float64)):
        p = small.point(w)
        assert p.rayleigh == p.grad_sqnorm / (4.0 * p.loss)
    g = torch.tensor([3.0e160, -4.0e160], dtype=torch.float64)    # ||g||^2 = 2.5e321: inf as a double
    assert math.isinf(float(g @ g))
    # R = 2.5e321 / 4e20 = 6.25e300, formed without overflow (||g||_D^2 = 4e20 = 4 (1e10)^2)
    assert rayleigh_quotient(g, float(g @ g), 4e20, lambda: (4.0, 1e10)) == pytest.approx(6.25e300, rel=1e-15)
    tiny = torch.tensor([3e-170, 4e-170], dtype=torch.float64)  # ||g||^2 = 2.5e-339: underflows to 0
    assert float(tiny @ tiny) == 0.0
    assert rayleigh_quotient(tiny, float(tiny @ tiny), 4e-300, lambda: (4.0, 1e-150)) == pytest.approx(
        6.25e-40, rel=1e-14)


def test_linear_verdict_is_that_of_the_spec_scaled_down():
    big = run_text(linear_spec(S), "big.rq")
    small = run_text(linear_spec(1.0), "small.rq")
    assert small.verdict == "certified"
    assert big.verdict == small.verdict and big.failing_region is None
    assert big.loss["initial"] == pytest.approx(S * S * small.loss["initial"], rel=1e-15)
    assert big.mu == pytest.approx(small.mu, rel=1e-12) and big.mu > 30
    assert big.region["radius"] == pytest.approx(S * small.region["radius"], rel=1e-9)


# --- (b) L(theta0) = inf: E206 ------------------------------------------------------------------------

def test_E206_is_a_diagnostic_code():
    assert "E206" in CODES


def test_infinite_initial_loss_is_E206_in_the_cli(tmp_path):
    path = tmp_path / "inf.rq"
    path.write_text(linear_spec(2e200))
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-m", "certifier", str(path), "--no-cache"], capture_output=True,
                          text=True, env=env, cwd=tmp_path, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert f"{path}:12:6: error[E206]: the initial loss L(theta0) = inf is not finite" in proc.stderr
    assert "the largest |target| is" in proc.stderr and "hint: rescale the data" in proc.stderr
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr
    assert proc.stdout == ""


def test_infinite_initial_loss_is_E206_in_the_sound_mode():
    with pytest.raises(SpecError) as err:
        run_text(linear_spec(2e200, method="interval(boxes=20, seed=0)", region="box(center=init, halfwidth=1)"),
                 "sound.rq")
    (d,) = err.value.diagnostics
    assert d.code == "E206" and d.span is not None and (d.span.line, d.span.column) == (12, 6)
    assert "not finite" in d.message and d.hint


def test_finite_huge_initial_loss_is_not_E206():
    p = problem_of(linear_spec(S))
    p.initial_loss_check(p.point(p.theta0))     # no error: L0 ~ 1e306 is analysed


# --- (c) the batched evaluator and the two-layer fast path at a huge scale -----------------------------

K = 330                       # S2 = 2^330 = 2.2e99: L ~ S2^2, grad_W L ~ S2^2, ||grad L||^2 ~ S2^4 = inf
S2 = float(2 ** K)


def two_layer_spec(scale: float) -> str:
    return ('spec "two-layer tanh at a huge scale"\n'
            "data {\n  x = normal(shape=[12, 3], seed=0)\n"
            f"  y = {scale!r} * (sin(x[:, 0]) + 0.3 * x[:, 1])\n}}\n"
            "params {\n  W : [16, 3] = normal(std=0.6, seed=1)\n"
            f"  a : [16] = {scale!r} * normal(std=0.25, seed=2)\n}}\n"
            "model f(x) = sum(a * tanh(W @ x))\n"
            "loss least_squares\nregion ball(center=init, radius=auto)\n"
            "method sampled(samples=64, seed=0)\ncertify rate(floor=0, horizon=100)\n")


def two_layer_reference(small: Problem, theta: torch.Tensor) -> float:
    """R of the big problem at theta = (W, S2 a) from the small one at (W, a), exactly rescaled:
    F, y, r scale by S2, so L by S2^2, grad_a L by S2 and grad_W L by S2^2 (dF/dW carries a), and
    R = (||grad_a||^2 + S2^2 ||grad_W||^2) / (4 L) with the small problem's gradients (rationals)."""
    p = small.point(theta)
    gW = [Fraction(float(v)) for v in p.grad[:48]]
    ga = [Fraction(float(v)) for v in p.grad[48:]]
    s2 = Fraction(2) ** (2 * K)
    R = (sum(v * v for v in ga) + s2 * sum(v * v for v in gW)) / (4 * Fraction(p.loss))
    return float(R)


def test_fast_path_and_batched_rayleigh_at_a_huge_scale():
    big, small = problem_of(two_layer_spec(S2)), problem_of(two_layer_spec(1.0))
    gen = torch.Generator().manual_seed(5)
    smalls = [small.theta0 + 0.05 * torch.randn(small.m, generator=gen, dtype=torch.float64) for _ in range(5)]
    scale = torch.cat([torch.ones(48, dtype=torch.float64), torch.full((16,), S2, dtype=torch.float64)])
    bigs = torch.stack([t * scale for t in [small.theta0] + smalls])
    refs = [two_layer_reference(small, t) for t in [small.theta0] + smalls]
    fast, generic = BatchedEvaluator(big), BatchedEvaluator(big, fast=False)
    assert fast.path == "two-layer tanh", fast.reason      # the first-use check passed at this scale
    assert generic.path == "vmap", generic.reason
    for ev in (fast, generic):
        points = ev.points(bigs)
        for q, ref, theta in zip(points, refs, bigs):
            assert math.isinf(q.grad_sqnorm) and 1e190 < q.loss < 1e210
            assert math.isfinite(q.rayleigh) and rel(q.rayleigh, ref) < 1e-12
            assert rel(ev.point(theta).rayleigh, ref) < 1e-12
            assert rel(big.point(theta).rayleigh, ref) < 1e-12
        for (L, log_r, d, _), theta, ref in zip(ev.log_rayleigh_and_grad(bigs), bigs, refs):
            assert math.isfinite(log_r) and abs(log_r - math.log(ref)) < 1e-11
            _, log_p, d_p, _ = big.log_rayleigh_and_grad(theta)
            assert bool(torch.isfinite(d).all()) and abs(log_r - log_p) < 1e-11
            assert float((d - d_p).norm()) <= 1e-9 * float(d_p.norm())


def test_exponential_loss_scaled_norm():
    """||g||_D^2 = mean l_i^2 overflows from l = 1.3e154 on while L = mean l_i is finite."""
    src = ('spec "exponential"\ndata {\n  x = normal(shape=[16, 2], seed=0)\n  y = x[:, 0] / abs(x[:, 0])\n}\n'
           "params {\n  w : [2] = [-200.0, 0.0]\n}\nmodel f(x) = w @ x\nloss exponential\n"
           "region ball(center=init, radius=auto)\nmethod sampled(samples=64, seed=0)\n"
           "certify rate(floor=0.01, horizon=10)\n")
    p = problem_of(src)
    x, y = p.checked.x, p.checked.y
    gen = np.random.default_rng(1)
    for w in (np.array([-200.0, 0.0]), np.array([-220.0, 3.0]) + gen.normal(size=2)):
        q = p.point(torch.as_tensor(w))
        m = -y * (x @ w)                       # l_i = exp(m_i), as the engine computes them
        l = np.exp(m)
        assert math.isfinite(q.loss) and not math.isfinite(float(np.mean(l * l)))
        t = l.max()
        grad = -(y * (l / t)) @ x / len(y)     # grad L / t
        R = float(grad @ grad) / float(np.mean((l / t) ** 2))
        assert math.isfinite(q.rayleigh) and rel(q.rayleigh, R) < 1e-12
