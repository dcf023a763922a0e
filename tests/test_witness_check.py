"""The witness steps by the two-layer fast path but stays an independent computation: its values
are Problem.point's (the model through autograd) to rounding, and a fast path that disagrees is
caught by the periodic cross-check and the descent rerun by Problem.point."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from helpers import problem_of

from certifier.analyse import witness as witness_mod
from certifier.compile.batched import Transposed, evaluator

SPEC = Path(__file__).resolve().parents[1] / "specs" / "two_layer_tanh.rq"
STEPS = 2500     # crosses CROSS_CHECK twice
ETA = 0.0125     # a step the loss never rises at; noise 0: the descent runs all STEPS


def _run(problem, fast):
    L0 = problem.point(problem.theta0).loss
    eta = ETA
    return witness_mod._run(problem, eta, STEPS * eta, lambda t: L0, 0.0, None, STEPS,
                            lambda n=1: None, 1e-9, 0.0, True, fast=fast)


def test_fast_witness_matches_problem_point():
    problem = problem_of(SPEC.read_text(), str(SPEC))
    assert evaluator(problem).path.startswith("two-layer")
    fast, slow = _run(problem, True), _run(problem, False)
    assert fast.steps == slow.steps == STEPS
    for (t1, l1), (t2, l2) in zip(fast.curve, slow.curve):
        assert t1 == t2
        assert l1 == pytest.approx(l2, rel=1e-9)


def test_a_disagreeing_fast_path_is_caught(monkeypatch):
    problem = problem_of(SPEC.read_text(), str(SPEC))
    ev = evaluator(problem)
    assert ev.transposed() is not None      # W @ x: the witness steps in W's transposed layout
    calls = []

    def wrong(good):        # a fast path gone wrong by 1e-6 in its loss after the first check
        def step(*args):
            calls.append(1)
            p = good(*args)
            return dataclasses.replace(p, loss=p.loss * (1 + 1e-6)) if len(calls) > 1 else p
        return step
    monkeypatch.setattr(ev, "gradient", wrong(ev.gradient))
    monkeypatch.setattr(Transposed, "gradient", wrong(Transposed.gradient))
    L0 = problem.point(problem.theta0).loss
    w = witness_mod.run_witness(problem, ETA, STEPS * ETA, lambda t: L0, 0.0, None, STEPS)
    ref = _run(problem, False)
    assert len(calls) > witness_mod.CROSS_CHECK      # the fast path ran, and was then dropped
    assert [c[1] for c in w.curve] == [c[1] for c in ref.curve]


WIDE = """data {
  x = normal(shape=[16, 32], seed=0)
  y = sin(x[:, 0]) + 0.5 * x[:, 1]
}
params {
  W : [4096, 32] = normal(std=1/sqrt(32), seed=1)
  a : [4096]     = normal(std=1/sqrt(4096), seed=2)
}
model f(x) = sum(a * tanh(W @ x))
loss least_squares
"""


def test_rounding_near_the_noise_floor_is_no_disagreement(monkeypatch):
    """Width 4096 descended to L ~ 1e-16, where the residuals have lost most digits: checked
    every 20 steps, the fast path is kept, and its losses are Problem.point's descent's to the
    rounding the residuals carry."""
    problem = problem_of(WIDE)
    assert evaluator(problem).path.startswith("two-layer")
    monkeypatch.setattr(witness_mod, "CROSS_CHECK", 20)
    slow_calls = []
    plain = problem.point

    def counted(theta):
        slow_calls.append(1)
        return plain(theta)
    monkeypatch.setattr(problem, "point", counted)
    eta = 0.0010732474406253828          # the witness's step on this network (bench/whole.py's grid)
    args = (problem, eta, 1200 * eta, None, 5e-17, None, 1200)
    fast = witness_mod.run_witness(*args)
    assert fast.curve[-1][1] < 1e-15                  # deep in the digits the residuals lose
    assert len(slow_calls) <= fast.steps // 20 + 2    # the cross-checks only: no rerun
    slow_calls.clear()
    slow = witness_mod._run(*args, lambda n=1: None, 1e-9, 0.0, True, fast=False)
    assert len(slow_calls) > fast.steps // 2
    assert abs(fast.steps - slow.steps) <= 2
    L0 = fast.curve[0][1]
    for (t1, l1), (t2, l2) in zip(fast.curve, slow.curve):
        assert t1 == t2
        assert abs(l1 - l2) <= 1e-6 * l2 + 1e-12 * L0


@pytest.mark.slow
def test_the_old_relative_allowance_was_a_false_alarm(monkeypatch):
    """n = 64, width 4096 (bench/whole.py's grid cell), the witness's own step to L ~ 1e-16: the
    two paths' grad L differ by more than 64 u sqrt(L0 / L) |grad L| (the allowance before, which
    reran this witness by Problem.point: 36 s instead of 12), and by at most 4 sqrt(m) u
    |grad L(theta0)|, which keeps the fast path."""
    problem = problem_of(WIDE.replace("[16, 32]", "[64, 32]"))
    ev = evaluator(problem)
    assert ev.path.startswith("two-layer")      # its first-use check done before the spies
    monkeypatch.setattr(witness_mod, "CROSS_CHECK", 250)
    pairs, last = [], []
    inner = ev.transposed()       # W @ x: the witness steps in W's transposed layout (kept)
    fast_point, plain = inner.gradient, problem.point

    def fast(theta):
        p = fast_point(theta)
        last[:] = [dataclasses.replace(p, grad=inner.outer(p.grad))]    # the spec's layout, as q's
        return p

    def checked(theta):
        q = plain(theta)
        pairs.append((last.pop(), q))
        return q
    monkeypatch.setattr(inner, "gradient", fast)
    monkeypatch.setattr(problem, "point", checked)
    eta = 0.001045269364920158
    w = witness_mod.run_witness(problem, eta, 9000 * eta, None, 5e-17, None, 9000)
    assert w.curve[-1][1] < 2e-16 and len(pairs) <= w.steps // 250 + 2     # no rerun
    u = 2.0**-53
    L0, g0 = pairs[0][1].loss, float(pairs[0][1].grad.norm())
    old = max(float((p.grad - q.grad).norm()) / (u * (L0 / q.loss) ** 0.5 * float(q.grad.norm()))
              for p, q in pairs)
    new = max(float((p.grad - q.grad).norm()) / (u * g0) for p, q in pairs)
    assert old > 64 and new < 4 * problem.m ** 0.5 / 8
