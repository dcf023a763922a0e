"""The witness steps by the two-layer fast path but stays an independent computation: its values
are Problem.point's (the model through autograd) to rounding, and a fast path that disagrees is
caught by the periodic cross-check and the descent rerun by Problem.point."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from helpers import problem_of

from certifier.analyse import witness as witness_mod
from certifier.compile.batched import evaluator

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
    good = ev.point
    calls = []

    def wrong(theta):       # a fast path gone wrong by 1e-6 in its loss after the first check
        calls.append(1)
        p = good(theta)
        return dataclasses.replace(p, loss=p.loss * (1 + 1e-6)) if len(calls) > 1 else p
    monkeypatch.setattr(ev, "point", wrong)
    L0 = problem.point(problem.theta0).loss
    w = witness_mod.run_witness(problem, ETA, STEPS * ETA, lambda t: L0, 0.0, None, STEPS)
    ref = _run(problem, False)
    assert len(calls) > witness_mod.CROSS_CHECK      # the fast path ran, and was then dropped
    assert [c[1] for c in w.curve] == [c[1] for c in ref.curve]
