"""--workers N (issue 21): local workers are started once per run and reused by every search of
it, and used only when a measured estimate says they pay for their start (a note says which); the
random points of a region are drawn, evaluated and recorded in chunks of bounded memory, the same
points as one draw. Figures are measured by bench/workers.py and bench/whole.py, not here."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from certifier import pipeline
from certifier.analyse import parallel, sampled
from certifier.analyse.records import Records
from certifier.analyse.regions import Ball, Box, chunk_rows
from certifier.analyse.sampled import Budget, parallel_work, search_region
from certifier.analyse.trajectory import SearchContext
from certifier.check import check
from certifier.compile.problem import Problem
from certifier.parse import parse

ROOT = Path(__file__).resolve().parent.parent
SMALL = ROOT / "specs" / "logistic_nonseparable.rq"


pytestmark = pytest.mark.usefixtures("one_thread")     # tests/conftest.py


def net(n=16, d=4, h=64, samples=64) -> str:
    return (f'spec "net"\ndata {{\n  x = normal(shape=[{n}, {d}], seed=0)\n  y = sin(x[:, 0])\n}}\n'
            f"params {{\n  W : [{h}, {d}] = normal(std=1/sqrt({d}), seed=1)\n"
            f"  a : [{h}] = normal(std=1/sqrt({h}), seed=2)\n}}\n"
            "model f(x) = sum(a * tanh(W @ x))\nloss least_squares\nregion ball(center=init, radius=auto)\n"
            f"method sampled(samples={samples}, seed=0)\ncertify rate(floor=0, horizon=100)\n")


def summary(result) -> tuple:
    return (result.verdict, result.mu, result.rate["kl_constant"], result.region["radius"],
            result.method["evaluations"], [(s.source, s.minimum, s.points) for s in result.mu_sources])


# --- the decision ---------------------------------------------------------------------------------

def test_parallel_work_counts_the_units_and_batches_of_a_search():
    budget = Budget(4096)        # 8 starts of 128 steps each source, 512 random points
    assert (budget.starts, budget.trajectory_steps, budget.random_points) == (8, 128, 512)
    assert parallel_work(budget, 10) == [(1, 128, 8), (1, 128, 8), (52, 1, 10)]
    assert parallel_work(budget, 3) == [(3, 128, 3), (3, 128, 3), (171, 1, 3)]


def test_plan_weighs_the_measured_batch_against_the_worker_start():
    work = [(3, 128, 3), (3, 128, 3), (171, 1, 3)]     # 939 batches of 3 rows
    fast = lambda problem, rows: 0.003              # noqa: E731
    slow = lambda problem, rows: 0.040              # noqa: E731
    # 2 workers save the batches of one unit of 3 in each descent source and 85 of the 171 random
    # units: 128 + 128 + 85 = 341 batches of 3 ms = 1.02 s < a start of 1.9 s
    use, note = parallel.plan(None, 2, 1, work, 3, start_seconds=1.9, cores=2, measure=fast)
    assert not use
    assert note == ("--workers 2: not used: the problem is too small (one batch of 3 points 3 ms, 939 batches a "
                    "search (2.82 s), worker start 1.9 s; estimated)")
    # 341 batches of 40 ms = 13.6 s saved > 1.9 s
    use, note = parallel.plan(None, 2, 1, work, 3, start_seconds=1.9, cores=2, measure=slow)
    assert use and note.startswith("--workers 2: used (one batch of 3 points 40 ms") and "saving 13.6 s a search" in note
    # every torch thread of the main process busy: no core left for a second worker
    use, note = parallel.plan(None, 2, 2, work, 3, start_seconds=0.0, cores=2, measure=slow)
    assert not use and note == "--workers 2: not used: this run's 2 torch threads already use the 2 cores"
    # one unit per source: nothing to share, whatever a batch costs
    use, note = parallel.plan(None, 2, 1, [(1, 128, 8), (1, 128, 8), (1, 1, 8)], 10, start_seconds=0.5,
                              cores=2, measure=slow)
    assert not use and "its searches form one unit each" in note


def test_the_environment_can_force_the_workers_on(monkeypatch):
    monkeypatch.setenv("CERTIFY_WORKERS", "always")
    assert parallel.plan(None, 3, 2, [], 1, cores=1) == (True, "--workers 3: used (CERTIFY_WORKERS=always)")


def test_a_small_problem_runs_in_one_process_and_says_why(monkeypatch):
    monkeypatch.delenv("CERTIFY_WORKERS", raising=False)
    def no_pool(*args, **kwargs):
        raise AssertionError("no worker process should start for a small problem")
    monkeypatch.setattr(parallel, "PoolExecutor", no_pool)
    one = pipeline.run_file(str(SMALL), pipeline.RunOptions())
    many = pipeline.run_file(str(SMALL), pipeline.RunOptions(workers=2))
    assert summary(many) == summary(one)
    said = [n for n in many.notes if n.startswith("--workers 2")]
    assert len(said) == 1 and said[0].startswith("--workers 2: not used: the problem is too small (one batch of ")
    assert not any(n.startswith("--workers") for n in one.notes)


def test_workers_start_once_per_run_and_serve_every_search(monkeypatch):
    """Forced on (the plan measured as worth it): one pool per run, started before the first unit,
    the same two processes for every search of the radius fixed point; one process's numbers."""
    pools, seen = [], []

    class Counted(parallel.PoolExecutor):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            pools.append(self)

        def map(self, problem, fn, arglist, advance):
            out = super().map(problem, fn, arglist, advance)
            seen.append(frozenset(self.pool._processes))
            return out

    monkeypatch.setattr(parallel, "PoolExecutor", Counted)
    monkeypatch.setattr(parallel, "plan", lambda problem, workers, *a, **k: (True, f"--workers {workers}: used (forced)"))
    text = net(h=32, samples=64)
    one = pipeline.run_text(text, "net.rq")
    many = pipeline.run_text(text, "net.rq", pipeline.RunOptions(workers=2))
    assert summary(many) == summary(one)
    assert len(pools) == 1 and len(seen) >= 3            # a run: one pool, several maps (3 sources a search)
    assert len(set(seen)) == 1 and len(seen[0]) == 2     # the same two processes throughout
    assert pools[0].ready_seconds() is not None and pools[0].ready_seconds() > 0
    note = [n for n in many.notes if n.startswith("--workers 2")]
    assert len(note) == 1 and note[0].startswith("--workers 2: used (forced); the workers were ready ")


# --- random points in chunks of bounded memory -----------------------------------------------------

@pytest.mark.parametrize("m", [33, 64, 1001, 4096])
@pytest.mark.parametrize("make", [Ball, Box])
def test_chunked_points_are_the_points_of_one_draw(make, m):
    region = make(torch.linspace(-1, 1, m, dtype=torch.float64), 0.3)
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    whole = region.sample(g1, 100)
    rows = chunk_rows(m, 7, multiple=3)
    assert rows % 3 == 0 and (rows * m) % 16 == 0 and rows <= max(7, 48)
    parts = list(region.sample_chunks(g2, 100, rows))
    assert [len(p) for p in parts[:-1]] == [rows] * (len(parts) - 1) and len(parts) > 1
    assert torch.equal(torch.cat(parts), whole)
    # the generator is left where one draw leaves it: the next draws agree too
    assert torch.equal(torch.randn(5, generator=g1), torch.randn(5, generator=g2))
    assert all(region.contains(p) for p in whole)


def test_chunks_that_ignore_the_alignment_would_draw_other_points():
    """Why chunk_rows aligns: a chunk of 5 rows of 33 floats (165, not a multiple of 16) does not
    continue torch's stream as one draw does (so the alignment is needed, not decoration)."""
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    whole = torch.randn(10, 33, generator=g1, dtype=torch.float64)
    parts = torch.cat([torch.randn(5, 33, generator=g2, dtype=torch.float64) for _ in range(2)])
    assert not torch.equal(parts, whole)


def test_the_points_of_a_large_ball_are_drawn_in_bounded_chunks(monkeypatch):
    """m = 278 528 (issue 21's network): no draw holds more than the memory budget's rows, where
    one draw of the 512 random points was [512, m] (1.1 GB, 8.3 GB with its temporaries)."""
    m = 278_528
    shapes = []
    real = torch.randn

    def randn(*size, **kwargs):
        shapes.append(tuple(size))
        return real(*size, **kwargs)
    monkeypatch.setattr(torch, "randn", randn)
    rows = chunk_rows(m, sampled.POINTS_BYTES // (8 * m), 2)
    assert rows * m * 8 <= sampled.POINTS_BYTES
    region = Ball(torch.zeros(m, dtype=torch.float64), 1.0)
    count = 0
    for part in region.sample_chunks(torch.Generator().manual_seed(0), 64, rows):
        count += len(part)
        assert part.shape == (min(rows, 64 - count + len(part)), m)
    assert count == 64
    assert shapes and max(s[0] for s in shapes) == rows and all(s[1] == m for s in shapes)


def test_a_search_in_chunks_records_what_one_draw_records(monkeypatch):
    p = Problem(check(parse(net(h=64), "net.rq")), "cpu")
    region = Ball(p.theta0, 0.3 * (1 + float(p.theta0.norm())))
    L0 = p.point(p.theta0).loss
    eta = 0.5 / p.hessian_top_eigenvalue(p.theta0)
    shapes = []
    real = Ball.sample_chunks

    def recorded(self, gen, count, rows):
        for part in real(self, gen, count, rows):
            shapes.append(len(part))
            yield part
    monkeypatch.setattr(Ball, "sample_chunks", recorded)
    monkeypatch.setattr(sampled, "rows_per_unit", lambda problem: 4)    # units of 4 rows, both runs
    out = []
    for budget_bytes in (2**40, 8 * p.m * 5):       # one chunk; chunks of about 5 points
        monkeypatch.setattr(sampled, "POINTS_BYTES", budget_bytes)
        shapes.clear()
        records = Records()
        ctx = SearchContext(gen=torch.Generator().manual_seed(3), eta=eta, noise=1e-16 * L0,
                            advance=lambda n=1: None)
        search_region(p, region, records, Budget(512), ctx, 1e-16 * L0)
        out.append((records, list(shapes)))
    (one, one_shapes), (chunked, chunk_shapes) = out
    assert one_shapes == [64] and len(chunk_shapes) > 3 and max(chunk_shapes) < 64
    assert one.source == chunked.source and one.value == chunked.value and one.loss == chunked.loss
    assert sorted(one.thetas) == sorted(chunked.thetas)
    assert math.isfinite(one.minimum(region.radius, 0.0)[0])
