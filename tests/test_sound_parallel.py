"""Branch and bound in rounds, and its boxes evaluated by workers (--workers, --scheduler).

The rounds are checked against an oracle (a function whose exact minimum over any box is known:
the leaves must partition the region and mu must be that minimum); workers are checked to give
the tree, mu, refutations and verdicts of one process."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
from helpers import problem_of, spec_text, untimed
from hypothesis import given, settings
from hypothesis import strategies as st

from certifier.analyse.parallel import LazyPoolExecutor, PoolExecutor
from certifier.analyse.regions import Box
from certifier.analyse.sound.bnb import BranchAndBound
from certifier.analyse.sound.engine import bound_mu
from certifier.analyse.sound.rules import Bound
from certifier.pipeline import RunOptions, run_text
from certifier.report.json import to_json


# --- rounds against an oracle ----------------------------------------------------------------------
def quadratic_min(c: np.ndarray, w: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> float:
    """The exact minimum of sum_i w_i (x_i - c_i)^2 + 0.1 over the box [lo, hi]."""
    nearest = np.clip(c, lo, hi)
    return float(np.sum(w * (nearest - c) ** 2) + 0.1)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(dim=st.integers(1, 3), width=st.sampled_from([1, 2, 8]), budget=st.integers(3, 120),
       seed=st.integers(0, 10_000), target=st.floats(0.05, 0.6))
def test_rounds_partition_the_region_and_mu_is_the_exact_minimum(dim, width, budget, seed, target):
    rng = np.random.default_rng(seed)
    c, w = rng.uniform(-1.5, 1.5, dim), rng.uniform(0.1, 3.0, dim)
    lo, hi = -np.ones(dim), np.ones(dim)
    batches = []

    def evaluate(nodes):
        batches.append(len(nodes))
        for n in nodes:
            n.bound = Bound("exact", quadratic_min(c, w, n.lo, n.hi), "oracle")

    bnb = BranchAndBound(evaluate, target, budget, width=width)
    bnb.add_root(lo, hi)
    state = bnb.run()
    leaves = bnb.leaves()
    assert state.evaluated == sum(batches) == len(bnb.state.nodes) <= max(budget, 1)
    assert max(batches) <= 2 * width
    # the leaves partition the root box: total volume, and every leaf inside it
    assert sum(np.prod(n.hi - n.lo) for n in leaves) == pytest.approx(2.0 ** dim, rel=1e-12)
    assert all(np.all(n.lo >= lo) and np.all(n.hi <= hi) for n in leaves)
    # mu is the minimum of the leaves' bounds, hence the exact minimum over the region
    exact = quadratic_min(c, w, lo, hi)
    assert bnb.mu() == pytest.approx(exact, rel=1e-12)
    if state.stop_reason == "proven":
        assert all(n.bound.value >= target for n in leaves)
    else:
        # unsplittable: a weak leaf as small as a box can get (the minimum just below the target)
        assert state.stop_reason in ("budget", "unsplittable") and any(n.bound.value < target for n in leaves)


def test_a_round_splits_the_weakest_leaves_first():
    # R(x) = 0.1 + x^2 on [-1, 1] with target 0.6: the boxes near 0 are the weak ones
    split_at = []

    def evaluate(nodes):
        for n in nodes:
            n.bound = Bound("exact", quadratic_min(np.zeros(1), np.ones(1), n.lo, n.hi), "oracle")

    bnb = BranchAndBound(evaluate, 0.6, 1000, width=2)
    bnb.add_root(-np.ones(1), np.ones(1))
    bnb.run()
    for n in bnb.state.nodes.values():
        if n.split is not None:
            split_at.append((n.depth, n.lo[0], n.hi[0]))
    # every split box has a bound below the target, and contains or touches 0 or lies within
    # the band where 0.1 + x^2 < 0.6 (|x| < sqrt(0.5))
    assert split_at and all(min(abs(a), abs(b)) < math.sqrt(0.5) or a <= 0 <= b for _, a, b in split_at)
    assert bnb.mu() == pytest.approx(0.1)


# --- workers give the numbers of one process ----------------------------------------------------------
def outcome_summary(out) -> tuple:
    return (out.status, out.mu, out.boxes_evaluated, out.rules_used, out.min_rayleigh_seen,
            out.proof, [{k: v for k, v in p.items()} for p in out.failing_points])


@pytest.fixture(scope="module")
def neuron():
    return problem_of(spec_text("one_neuron_sound.rq"))


@pytest.fixture(scope="module")
def pool(neuron):
    ex = PoolExecutor(neuron.checked, 2, "cpu", 1)
    yield ex
    ex.close()


# need: proved (tightening), refuted at a box center, refuted at a box corner (no descent point
# of the one-neuron problem has R below 0.0277; its minimum on the box is about 0.01385)
@pytest.mark.parametrize("need, status, source", [(0.005, "proven", None), (0.025, "refuted", "box center"),
                                                  (0.013855, "refuted", "box corner")])
def test_local_worker_processes_give_the_boxes_of_one_process(neuron, pool, need, status, source):
    region = Box(neuron.theta0, 0.3)
    one = bound_mu(neuron, region, 0.0, need, 400, None, tighten=status == "proven")
    many = bound_mu(neuron, region, 0.0, need, 400, None, tighten=status == "proven", executor=pool)
    assert one.status == status and one.boxes_evaluated > 16     # several rounds
    if source is not None:
        assert one.failing_points[0]["source"] == source
        assert one.failing_points[0]["rayleigh_upper"] < need
    assert outcome_summary(many) == outcome_summary(one)


def test_dask_scheduler_gives_the_sound_verdict_of_one_process():
    distributed = pytest.importorskip("dask.distributed")
    text = spec_text("one_neuron_sound.rq")
    one = run_text(text, "neuron.rq")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster:
        many = run_text(text, "neuron.rq", RunOptions(scheduler=cluster.scheduler_address))
    assert one.verdict == "certified" and one.sound and one.method["boxes_evaluated"] > 16
    assert (many.verdict, many.mu, many.method["boxes_evaluated"]) == \
        (one.verdict, one.mu, one.method["boxes_evaluated"])
    assert untimed(json.loads(to_json(many))) == untimed(json.loads(to_json(one)))


# --- --workers in the sound mode: started only when a measured estimate says they pay ---------------
def test_a_lazy_pool_stays_unstarted_where_the_boxes_are_cheap(neuron, monkeypatch):
    monkeypatch.delenv("CERTIFY_WORKERS", raising=False)
    region = Box(neuron.theta0, 0.3)
    one = bound_mu(neuron, region, 0.0, 0.005, 400, None, tighten=True)
    lazy = LazyPoolExecutor(neuron.checked, 2, "cpu", 1, cores=2, start_seconds=30.0)
    try:
        many = bound_mu(neuron, region, 0.0, 0.005, 400, None, tighten=True, executor=lazy)
        assert lazy.pool is None
        assert lazy.note().startswith("--workers 2: not used: the boxes left are too few (a box ")
    finally:
        lazy.close()
    assert outcome_summary(many) == outcome_summary(one)


def test_a_lazy_pool_starts_after_a_timed_round_where_it_pays(neuron, monkeypatch):
    monkeypatch.delenv("CERTIFY_WORKERS", raising=False)
    region = Box(neuron.theta0, 0.3)
    one = bound_mu(neuron, region, 0.0, 0.025, 400, None)
    lazy = LazyPoolExecutor(neuron.checked, 2, "cpu", 1, cores=2, start_seconds=0.0)
    try:
        many = bound_mu(neuron, region, 0.0, 0.025, 400, None, executor=lazy)
        assert lazy.pool is not None and "used from a round of the branch and bound" in lazy.note()
    finally:
        lazy.close()
    assert one.status == "refuted" and outcome_summary(many) == outcome_summary(one)


def test_the_lazy_pools_estimate():
    lazy = LazyPoolExecutor(None, 2, "cpu", 1, cores=2, start_seconds=2.0)
    assert not lazy.decide(100, 0.01, 5.0)                # saves 0.5 s against a 2 s start
    assert "too few" in lazy.note() and lazy.pool is None
    assert not lazy.decide(10**4, 0.01, 1.0)              # would pay, but 1 s here < the 2 s start so far
    assert "took less than starting" in lazy.note() and lazy.pool is None
    busy = LazyPoolExecutor(None, 2, "cpu", 2, cores=2, start_seconds=0.0)
    assert not busy.decide(10**6, 1.0, 100.0) and "already use the 2 cores" in busy.note()
