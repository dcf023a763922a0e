"""Performance work (issue 7) without timed assertions: the batched evaluator gives Problem.point's
values, the batched search units give the one-at-a-time sources' records, Lanczos gives
eigvalsh's lambda_min, workers (local processes, dask) give one process's numbers, and the
device guard is clear. Speed is measured by `python -m bench` (docs/performance.md), not here."""
from __future__ import annotations

import json
import math
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from bench import serial as sources
from certifier import cli, pipeline
from certifier.analyse import units
from certifier.analyse.records import Records
from certifier.analyse.regions import Ball, Box
from certifier.analyse.sampled import Budget, search_region
from certifier.analyse.trajectory import SearchContext
from certifier.check import check
from certifier.compile import kernel
from certifier.compile.batched import BatchedEvaluator
from certifier.compile.kernel import lambda_min, lambda_min_formed, lambda_min_lanczos
from certifier.compile.problem import Problem
from certifier.parse import parse

ROOT = Path(__file__).resolve().parent.parent
SAMPLED_SPECS = sorted(p for p in (ROOT / "specs").glob("*.rq")
                       if "method sampled" in p.read_text(encoding="utf-8"))


pytestmark = pytest.mark.usefixtures("one_thread")     # tests/conftest.py


def problem_of(text: str, path: str = "<test>") -> Problem:
    return Problem(check(parse(text, path)), "cpu")


def spec_problem(path: Path) -> Problem:
    return problem_of(path.read_text(encoding="utf-8"), str(path))


def net(n=6, d=3, h=16, k=1, seed=0) -> str:
    out = f"[{k}, {h}]" if k > 1 else f"[{h}]"
    model = "A @ tanh(W @ x)" if k > 1 else "sum(A * tanh(W @ x))"
    y = f"normal(shape=[{n}, {k}], seed={seed + 9})" if k > 1 else "sin(x[:, 0])"
    return (f'spec "net"\ndata {{\n  x = normal(shape=[{n}, {d}], seed={seed})\n  y = {y}\n}}\n'
            f"params {{\n  W : [{h}, {d}] = normal(std=1/sqrt({d}), seed={seed + 1})\n"
            f"  A : {out} = normal(std=1/sqrt({h}), seed={seed + 2})\n}}\n"
            f"model f(x) = {model}\nloss least_squares\nregion ball(center=init, radius=auto)\n"
            "method sampled(samples=64, seed=0)\ncertify rate(floor=0, horizon=100)\n")


def rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(a), abs(b), 1e-300)


# --- the batched evaluator -----------------------------------------------------------------------

@pytest.mark.parametrize("path", SAMPLED_SPECS + [ROOT / "specs" / "two_layer_tanh_sound.rq"], ids=lambda p: p.name)
def test_batched_points_equal_pointwise(path):
    p = spec_problem(path)
    ev = BatchedEvaluator(p)
    # a population loss in closed form (data gaussian) has no per-sample outputs: the loop
    assert ev.batched == (getattr(p, "_closed_form", None) is None), ev.reason
    gen = torch.Generator().manual_seed(1)
    thetas = p.theta0 + 0.1 * torch.randn(5, p.m, generator=gen, dtype=torch.float64)
    for theta, q, (L, log_r, d, smax) in zip(thetas, ev.points(thetas), ev.log_rayleigh_and_grad(thetas)):
        ref = p.point(theta)
        assert rel(q.loss, ref.loss) <= 1e-12 and rel(q.rayleigh, ref.rayleigh) <= 1e-12
        assert float((q.grad - ref.grad).norm()) <= 1e-12 * float(ref.grad.norm())
        assert q.sample_max == pytest.approx(ref.sample_max, rel=1e-12, nan_ok=True)
        rL, r_log_r, rd, rsmax = p.log_rayleigh_and_grad(theta)
        assert rel(L, rL) <= 1e-12 and abs(log_r - r_log_r) <= 1e-10
        assert float((d - rd).norm()) <= 1e-9 * float(rd.norm())


def test_unflatten_by_split_gives_the_gradients_of_slicing_bitwise():
    """Problem.unflatten takes the parameters as one torch.split of theta (autograd assembles the
    gradient once) rather than a slice each (a zero-filled copy of theta per parameter, summed):
    the gradients must be the same numbers, a parameter the model does not use getting zeros."""
    import types

    def sliced(self, theta):
        out, i = {}, 0
        for name, shape, size in zip(self.names, self.shapes, self.sizes):
            out[name] = theta[i:i + size].reshape(shape)
            i += size
        return out

    text = net(n=12, d=3, h=16).replace("params {\n", "params {\n  u : [5] = normal(seed=7)\n", 1) \
        .replace("sum(A * tanh(W @ x))", "sum(A * tanh(W @ tanh(B @ x)))") \
        .replace("params {\n", "params {\n  B : [3, 3] = normal(std=0.5, seed=8)\n", 1)
    split, sliced_p = problem_of(text), problem_of(text)
    sliced_p.unflatten = types.MethodType(sliced, sliced_p)
    assert split.names == ["B", "u", "W", "A"]
    thetas = split.theta0 + 0.1 * torch.randn(3, split.m, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for theta in thetas:
        a, b = split.point(theta), sliced_p.point(theta)
        assert torch.equal(a.grad, b.grad) and (a.loss, a.rayleigh) == (b.loss, b.rayleigh)
        assert torch.equal(a.grad[9:14], torch.zeros(5, dtype=torch.float64))      # u is not used
        assert torch.equal(split.log_rayleigh_and_grad(theta)[2], sliced_p.log_rayleigh_and_grad(theta)[2])
    for qa, qb in zip(BatchedEvaluator(split).points(thetas), BatchedEvaluator(sliced_p).points(thetas)):
        assert torch.equal(qa.grad, qb.grad) and qa.rayleigh == qb.rayleigh


def test_batch_size_does_not_change_a_rows_values_beyond_rounding():
    p = problem_of(net(n=8, h=32))
    ev = BatchedEvaluator(p)
    thetas = p.theta0 + 0.05 * torch.randn(7, p.m, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    whole = ev.points(thetas)
    parts = ev.points(thetas[:3]) + ev.points(thetas[3:])
    for a, b in zip(whole, parts):
        assert rel(a.rayleigh, b.rayleigh) <= 1e-13


@pytest.mark.parametrize("threads, chunk, expect", [
    (1, 3, 3), (2, 1, 1), (2, 3, 4), (2, 4, 4), (2, 10, 10), (4, 3, 3), (4, 5, 8), (6, 64, 60), (3, 63, 63)])
def test_a_chunk_is_whole_rounds_of_the_cpu_threads(threads, chunk, expect):
    from certifier.compile.batched import MAX_CHUNK, whole_rounds

    torch.set_num_threads(threads)
    assert whole_rounds(chunk, "cpu") == expect <= max(chunk, MAX_CHUNK)
    assert whole_rounds(chunk, "cuda") == chunk


def test_the_evaluators_chunk_follows_the_threads_it_was_built_under():
    p = problem_of(net(n=8, h=32))
    memory = 3 * (3 * 8 * 32 * 8 + 4 * p.m * 8 + 1)   # three thetas: activations, theta, gradient, dW, W
    assert BatchedEvaluator(p, memory=memory).chunk_size() == 3
    torch.set_num_threads(2)
    ev = BatchedEvaluator(p, memory=memory)
    assert ev.path == "two-layer tanh" and ev.chunk_size() == 4
    thetas = p.theta0 + 0.05 * torch.randn(5, p.m, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    for q, theta in zip(ev.points(thetas), thetas):
        assert rel(q.rayleigh, p.point(theta).rayleigh) <= 1e-12


def test_fallback_when_the_model_cannot_be_batched():
    p = problem_of(net())
    p._closed_form = object()          # as for a population loss in closed form
    ev = BatchedEvaluator(p)
    assert not ev.batched and "closed form" in ev.reason
    del p._closed_form
    p2 = problem_of(net())
    ev2 = BatchedEvaluator(p2)
    ev2._batched = lambda th, x: (_ for _ in ()).throw(RuntimeError("vmap cannot trace this"))
    assert not ev2.batched and "vmap cannot trace this" in ev2.reason
    theta = p2.theta0 + 0.01
    (q,) = ev2.points(theta[None])
    assert q.rayleigh == p2.point(theta).rayleigh      # the loop over Problem.point


def test_torch_model_is_batched_with_the_same_values(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "tests" / "fixtures"))
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 2))
    np.savez(tmp_path / "d.npz", x=x, y=x @ np.array([1.0, -0.5]))
    text = ('spec "torch linear"\ndata from "d.npz"\nmodel torch("certify_fixture_nets:Linear")\n'
            "loss least_squares\nregion ball(center=init, radius=auto)\n"
            "method sampled(samples=64, seed=0)\ncertify rate(floor=0, horizon=100)\n")
    p = Problem(check(parse(text, "spec.rq"), allow_python=True), "cpu")
    ev = BatchedEvaluator(p)
    thetas = p.theta0 + torch.randn(3, p.m, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    for theta, q in zip(thetas, ev.points(thetas)):
        assert rel(q.rayleigh, p.point(theta).rayleigh) <= 1e-12


def test_float32_evaluator_is_an_estimate_of_the_float64_one():
    p = problem_of(net(n=16, h=64))
    thetas = p.theta0 + 0.05 * torch.randn(4, p.m, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    r64 = [q.rayleigh for q in BatchedEvaluator(p).points(thetas)]
    r32 = [q.rayleigh for q in BatchedEvaluator(p, dtype=torch.float32).points(thetas)]
    for a, b in zip(r64, r32):
        assert rel(a, b) < 1e-4


# --- the search units against the one-at-a-time sources -------------------------------------------

def old_search_region(problem, region, records, budget, ctx, floor):
    """search_region as it was before batching (bench/serial.py, one point at a time)."""
    center = region.center
    for start in region.sample(ctx.gen, budget.starts):
        sources.trajectory(problem, start, center, region, budget.trajectory_steps, ctx, records)
    lowest = [records.thetas[i] for i in records.lowest(region.inner_radius, floor, budget.starts)
              if i in records.thetas]
    adv_starts = [center] + lowest[: budget.starts // 2]
    adv_starts += list(region.sample(ctx.gen, max(0, budget.starts - len(adv_starts))))
    for start in adv_starts:
        sources.adversarial(problem, start, region, budget.adversarial_steps, ctx, records)
    sources.random_points(problem, region, budget.random_points, ctx, records)


@pytest.mark.parametrize("name,make,samples", [("two_layer_tanh.rq", "ball", 256),
                                               # the units' descents in W's transposed layout, a box
                                               ("two_layer_tanh.rq", "box", 256),
                                               ("linear_nonrealizable_floor.rq", "box", 1024),
                                               ("softmax_separable.rq", "ball", 1024)])
def test_batched_search_gives_the_records_of_the_old_search(name, make, samples):
    p = spec_problem(ROOT / "specs" / name)
    L0 = p.point(p.theta0).loss
    eta = 0.5 / p.hessian_top_eigenvalue(p.theta0)
    radius = 0.3 * (1 + float(p.theta0.norm()))
    region = Ball(p.theta0, radius) if make == "ball" else Box(p.theta0, radius)
    budget = Budget(samples)
    out = []
    for search in (old_search_region, search_region):
        records = Records()
        ctx = SearchContext(gen=torch.Generator().manual_seed(3), eta=eta, noise=1e-16 * L0, advance=lambda n=1: None)
        search(p, region, records, budget, ctx, 1e-16 * L0)
        out.append(records)
    old, new = out
    assert old.source == new.source and old.count() == new.count()
    assert all(rel(a, b) <= 1e-9 for a, b in zip(old.value, new.value) if abs(a) > 1e-300)
    assert all(rel(a, b) <= 1e-9 for a, b in zip(old.loss, new.loss))
    assert sorted(old.thetas) == sorted(new.thetas)
    # the units keep their iterates without a copy (Block.add's owned): none was written after
    assert all(float((old.thetas[k] - new.thetas[k]).norm()) <= 1e-9 * float(old.thetas[k].norm())
               for k in old.thetas)
    assert rel(old.minimum(radius, 0.0)[0], new.minimum(radius, 0.0)[0]) <= 1e-9


@pytest.mark.parametrize("make", [lambda c: Ball(c, 0.7), lambda c: Box(c, 0.25)])
def test_a_regions_measures_are_its_distance_containment_and_projection(make):
    """Region.measure and project_measured (one pass where the units made two or three) give the
    same floats as distance, contains and project, inside, outside and on the boundary."""
    gen = torch.Generator().manual_seed(0)
    center = torch.randn(300, generator=gen, dtype=torch.float64)
    region = make(center)
    for scale in (0.01, 0.05, 0.3, 1.0, 3.0):
        for _ in range(20):
            theta = center + scale * torch.randn(300, generator=gen, dtype=torch.float64)
            assert region.measure(theta) == (region.distance(theta), region.contains(theta))
            projected, distance = region.project_measured(theta.clone())
            assert torch.equal(projected, region.project(theta)) and distance == region.distance(projected)
    edge = center.clone()
    edge[0] += region.inner_radius
    assert region.measure(edge) == (region.distance(edge), True)


def test_the_adversarial_descents_run_their_whole_budget_on_the_floor_spec():
    """specs/two_layer_floor.rq's adversarial descents climb first and reach their lowest R in
    their last steps: two early-stop rules for them (4f6f33b, 94c4cdc; both reverted) raised the
    sampled mu from 0.0021734 to 0.0037414. An estimate of an infimum must not rise because the
    search stopped early: this pins the full search's level (the same budget and seed)."""
    result = pipeline.run_file(str(ROOT / "specs" / "two_layer_floor.rq"), pipeline.RunOptions())
    assert result.mu_source == "adversarial"
    assert result.mu <= 0.0022


def test_blocks_keep_every_theta_that_records_keeps():
    """The slimming rule of analyse/units.py against Records' own pruning, on random sequences
    with ties, split into random blocks."""
    rng = random.Random(0)
    for trial in range(120):
        count = rng.choice([50, 300, 700, 1500])
        values = [float(rng.choice(range(40))) if trial % 3 == 0 else rng.random() for _ in range(count)]
        values = [math.nan if rng.random() < 0.02 else v for v in values]
        direct = Records()
        for i, v in enumerate(values):
            direct.add("random", 0.0, 1.0, v, torch.tensor([float(i)]))
        blocks, i = [], 0
        while i < count:
            size = rng.choice([1, 5, 100, 400, 1000])
            block = units.Block()
            for j in range(i, min(count, i + size)):
                block.add("random", 0.0, 1.0, values[j], torch.tensor([float(j)]))
            blocks.append(block.finish())
            i += size
        flushed = Records()
        units.flush(blocks, flushed)           # raises if a dropped theta were kept
        assert sorted(flushed.thetas) == sorted(direct.thetas)
        assert all(torch.equal(flushed.thetas[k], direct.thetas[k]) for k in direct.thetas)


def test_a_units_blocks_keep_every_theta_that_records_keeps_and_a_bounded_number():
    """Blocks of one unit (analyse/units.group) filled in interleaved order, as trajectories
    advance together, with a small keep: the union of what they hold is what Records of that keep
    holds after adding them in order, and never more than about 5 keep thetas at once."""
    rng = random.Random(1)
    for trial in range(60):
        keep = rng.choice([1, 2, 3, 8])
        count = rng.choice([1, 2, 5, 8])
        ceiling = rng.choice([math.inf, 1.0])      # rows above Records' ceiling: no theta, not counted
        blocks = units.group(count, keep, ceiling)
        lengths = [rng.choice([0, 3, 20, 60]) for _ in range(count)]
        values = [[float(rng.choice(range(15))) if trial % 2 else rng.random() for _ in range(n)] for n in lengths]
        losses = [[2 * rng.random() for _ in range(n)] for n in lengths]
        most = 0
        for step in range(max(lengths, default=0)):
            for j, block in enumerate(blocks):
                if step < lengths[j]:
                    v = values[j][step]
                    v = math.nan if rng.random() < 0.03 else v
                    values[j][step] = v
                    block.add("random", 0.0, losses[j][step], v, torch.tensor([float(j), float(step)]))
            most = max(most, sum(1 for b in blocks for row in b.rows if row[4] is not None))
        if trial % 2 == 0:      # without ties (tied values below the 2K-th are all held)
            assert most <= 5 * keep
        blocks = [b.finish() for b in blocks]
        direct = Records(keep=keep, ceiling=ceiling)
        for j in range(count):
            for step, v in enumerate(values[j]):
                direct.add("random", 0.0, losses[j][step], v, torch.tensor([float(j), float(step)]))
        flushed = Records(keep=keep, ceiling=ceiling)
        units.flush(blocks, flushed)           # raises if a dropped theta were kept
        assert sorted(flushed.thetas) == sorted(direct.thetas)
        assert all(torch.equal(flushed.thetas[k], direct.thetas[k]) for k in direct.thetas)


def test_kept_thetas_are_bounded_in_bytes():
    from certifier.analyse.records import MAX_KEEP, MIN_KEEP, THETA_BYTES, theta_keep
    assert theta_keep(100) == MAX_KEEP and theta_keep(10**9) == MIN_KEEP
    for m in (8448, 33792, 135168, 278784):
        k = theta_keep(m)
        assert MIN_KEEP <= k <= MAX_KEEP and (k == MIN_KEEP or 5 * k * 8 * m <= THETA_BYTES)


# --- Lanczos ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("n,d,h,k,seed", [(3, 2, 8, 1, 0), (9, 3, 16, 1, 1), (12, 4, 32, 1, 2), (6, 3, 24, 2, 3),
                                         (30, 5, 64, 1, 4), (40, 3, 96, 1, 5)])
def test_lanczos_lambda_min_equals_eigvalsh(n, d, h, k, seed):
    p = problem_of(net(n=n, d=d, h=h, k=k, seed=seed))
    theta = p.theta0 + 0.2 * torch.randn(p.m, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    J = torch.func.jacrev(lambda t: p.outputs(t).reshape(-1))(theta)   # autograd's, not the fast path's
    assert torch.allclose(kernel.jacobian(p, theta), J, rtol=1e-12, atol=1e-14)
    exact = float(torch.linalg.eigvalsh(J @ J.T / p.n)[0])
    lam, products = lambda_min_lanczos(p, theta)
    assert lam == pytest.approx(exact, rel=1e-8, abs=1e-12 * float(torch.linalg.eigvalsh(J @ J.T / p.n)[-1]))
    assert products >= 1
    assert lambda_min_formed(p, theta) == pytest.approx(exact, rel=1e-12)
    assert kernel.lambda_min(p, theta, method="lanczos") == pytest.approx(exact, rel=1e-8)


def test_auto_uses_lanczos_when_the_jacobian_would_not_fit(monkeypatch):
    from certifier.compile import kernel

    p = problem_of(net(n=10, h=32))
    calls = []
    monkeypatch.setattr(kernel, "lambda_min_lanczos", lambda pr, th: calls.append("lanczos") or (1.0, 1))
    monkeypatch.setattr(kernel, "lambda_min_formed", lambda pr, th: calls.append("formed") or 1.0)
    lambda_min(p, p.theta0)
    monkeypatch.setattr(kernel, "JACOBIAN_MEMORY", 8)
    lambda_min(p, p.theta0)
    monkeypatch.setattr(kernel, "JACOBIAN_MEMORY", 2**30)
    monkeypatch.setattr(kernel, "LANCZOS_FROM", 10)        # n k = 10
    lambda_min(p, p.theta0)
    assert calls == ["formed", "lanczos", "lanczos"]
    with pytest.raises(ValueError):
        lambda_min(p, p.theta0, "qr")


@pytest.mark.parametrize("k", [1, 2])
def test_jacobian_by_rows_equals_jacrev(k):
    """J row by row (the gradient of each output, one scalar backward pass each) is torch.func.jacrev's
    J bitwise on the generic path, and to rounding on the fast path."""
    from torch.func import jacrev

    from certifier.compile import kernel

    p = problem_of(net(n=20, h=32, k=k))
    for theta in (p.theta0, p.theta0 + 0.3 * torch.randn(p.m, dtype=torch.float64, generator=torch.Generator().manual_seed(k))):
        full = jacrev(p.outputs)(theta).reshape(p.n * p.k, p.m)
        assert torch.equal(kernel.jacobian(p, theta, fast_path=False), full)
        assert torch.allclose(kernel.jacobian(p, theta), full, rtol=1e-12, atol=1e-14)


def test_a_run_does_not_import_torch_dynamo():
    """The formed kernel's J comes without torch.func.jacrev, whose first call imports torch._dynamo
    (0.74 s of a 5.6 s run of specs/two_layer_tanh.rq, whose search uses the tangent kernel)."""
    code = ("import sys; from certifier import pipeline; "
            "r = pipeline.run_file(sys.argv[1], pipeline.RunOptions()); "
            "assert any(s.source == 'tangent-kernel' and s.points for s in r.mu_sources), r.mu_sources; "
            "print('torch._dynamo' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code, str(ROOT / "specs" / "two_layer_tanh.rq")], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


# --- workers: the same numbers as one process ------------------------------------------------------

SMALL = ROOT / "specs" / "logistic_nonseparable.rq"


def summary(result) -> tuple:
    return (result.verdict, result.mu, result.rate["kl_constant"], result.region["radius"],
            result.method["evaluations"], [(s.source, s.minimum, s.points) for s in result.mu_sources])


def test_dask_scheduler_gives_the_numbers_of_one_process():
    distributed = pytest.importorskip("dask.distributed")
    one = pipeline.run_file(str(SMALL), pipeline.RunOptions())
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster:
        many = pipeline.run_file(str(SMALL), pipeline.RunOptions(scheduler=cluster.scheduler_address))
    assert summary(many) == summary(one)


# local worker processes (started once per run, used when they pay for their start): tests/test_workers.py


def test_cli_passes_workers_and_scheduler(monkeypatch, capsys):
    seen = []

    def fake_run_file(path, options):
        seen.append(options)
        raise KeyboardInterrupt   # stop before any work; the options are what is checked

    monkeypatch.setattr(pipeline, "run_file", fake_run_file)
    # the CLI reaches the scheduler once before any spec runs (an unreachable one is exit 2):
    # taken as reachable here, the options are what is checked
    monkeypatch.setattr(pipeline, "environment_problem", lambda device="cpu", scheduler=None: None)
    cli.main([str(SMALL), "--workers", "3", "--scheduler", "tcp://127.0.0.1:1", "--quiet", "--no-cache"])
    assert seen[0].workers == 3 and seen[0].scheduler == "tcp://127.0.0.1:1"
    assert cli.main([str(SMALL), "--workers", "0"]) == 2
    capsys.readouterr()


# --- device ----------------------------------------------------------------------------------------

@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error shown where there is no CUDA device")
def test_cuda_without_a_device_is_a_clear_error(capsys):
    with pytest.raises(RuntimeError, match="no CUDA device is available"):
        pipeline.run_file(str(SMALL), pipeline.RunOptions(device="cuda"))
    assert cli.main([str(SMALL), "--device", "cuda", "--no-cache"]) == 2
    assert "no CUDA device is available" in capsys.readouterr().err


# --- the bench harness -----------------------------------------------------------------------------

def test_bench_naive_kernel_quotient_equals_the_engines():
    from bench.models import Model
    from bench.run import naive, slope
    from bench.run import problem_of as bench_problem

    for kind in ("two_layer", "mlp3"):
        model = Model("tiny", kind, n=6, d=3, h=8)
        p = bench_problem(model)
        assert p.m == model.parameters
        row = naive(p, 1)
        assert row["rel_diff"] <= 1e-10
    assert slope([1, 2, 4, 8], [3, 6, 12, 24]) == pytest.approx(1.0)
    assert Model("x", "two_layer", n=256, d=32, h=1024).convention_flops() == 3 * 2 * 256 * (32 * 1024 + 1024)


@pytest.mark.parametrize("kind", ["two_layer", "mlp3"])
def test_bench_user_baselines_give_the_engines_rayleigh_quotient(kind):
    """The baselines a user would write (bench/models.py: an autograd.grad loop, vmap(grad), a
    hand-batched version), written in plain torch from the model's formula, against
    Problem.point on the spec the bench builds."""
    from bench.models import BASELINES, Model
    from bench.run import perturbed
    from bench.run import problem_of as bench_problem

    model = Model("tiny", kind, n=9, d=3, h=6)
    p = bench_problem(model)
    thetas = perturbed(p, 4, scale=0.3)
    want = [p.point(th).rayleigh for th in thetas]
    for name, make in BASELINES.items():
        got = make(model, p.x, p.y)(thetas).detach()
        assert max(rel(float(g), w) for g, w in zip(got, want)) <= 1e-12, name


@pytest.mark.parametrize("kind", ["two_layer", "mlp3"])
def test_bench_needed_flops_are_torchs_count_of_the_forward_and_weight_gradients(kind):
    """bench/models.py's count of what R needs against torch's FlopCounterMode on the products of
    a forward pass and torch.autograd.grad with respect to the weights only (the data need no
    gradient). The output layer is written as a product with a column so that torch counts it;
    its backward's outer product r a^T (2nh, elementwise work by the count's convention) is
    taken off."""
    from torch.utils.flop_counter import FlopCounterMode

    from bench.models import Model, _cut

    model = Model("x", kind, n=12, d=5, h=7)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(model.n, model.d, generator=gen, dtype=torch.float64)
    y = torch.randn(model.n, generator=gen, dtype=torch.float64)
    params = [p.detach().requires_grad_() for p in
              _cut(model, torch.randn(model.parameters, generator=gen, dtype=torch.float64))]
    with FlopCounterMode(display=False) as counter:
        if kind == "two_layer":
            W, a = params
            T = torch.tanh(x @ W.T)
        else:
            W1, W2, W3, a = params
            T = torch.tanh(torch.tanh(torch.tanh(x @ W1.T) @ W2.T) @ W3.T)
        F = (T @ a[:, None])[:, 0]
        L = ((F - y) ** 2).mean()
        torch.autograd.grad(L, params)
    outer = 2 * model.n * model.h
    assert counter.get_total_flops() - outer == model.flops_per_rayleigh()
    assert model.flops_per_rayleigh() < model.convention_flops()


@pytest.mark.slow
def test_bench_quick_run(tmp_path):
    import json

    from bench.run import run, table

    results = run(quick=True, out=str(tmp_path / "r.json"), log=lambda s: None)
    data = json.loads((tmp_path / "r.json").read_text())
    assert set(data["models"]) == {"two_layer", "mlp3"} and data["peak"]["float64"]["gflops"] > 0
    assert "engine / naive" in table(results)
    from bench.run import ACTIVATIONS

    assert {"relu", "softplus"} <= set(ACTIVATIONS)
    for act in ACTIVATIONS:                          # the fast path's other activations, against the generic path
        row = data["activations"][act]
        assert (row["fast"]["path"], row["generic"]["path"]) == (f"two-layer {act}", "vmap")
        assert row["speedup"] == pytest.approx(row["fast"]["R_per_s"] / row["generic"]["R_per_s"])


def test_bench_baselines_times_the_engine_and_the_users(capsys):
    """bench/baselines.py on the tiny MLP: one process's JSON line, and the --ab table of two."""
    import json

    from bench import baselines

    assert baselines.main(["--quick", "--rounds", "1", "--json"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["path"] == "vmap" and row["threads"] == 1
    assert all(row[k]["median"] > 0 for k in ("engine", "autograd_loop", "hand_batched"))
    text = baselines.table([dict(row, label="before"), dict(row, label="now")])
    assert "| before | vmap, " in text and "| now | vmap, " in text
    assert f"| {row['engine']['median'] / row['autograd_loop']['median']:.2f} |" in text


def test_interleaved_rounds_time_a_block_of_calls_by_its_mean():
    from bench.run import interleaved

    calls = {"a": 0, "b": 0}
    ticks = iter(range(0, 10**6, 7))

    def fn(k):
        calls[k] += 1
    best = interleaved({"a": lambda: fn("a"), "b": lambda: fn("b")}, rounds=2, clock=lambda: next(ticks),
                       block={"a": 3})
    assert calls == {"a": 1 + 2 * 3, "b": 1 + 2}      # a warm-up call each, then the rounds
    assert best == {"a": 7 / 3, "b": 7}                # one clock step per turn: a's time is the mean


def test_bench_device_harness_on_the_cpu(tmp_path, capsys):
    """python -m bench.device is the GPU benchmark; with --device cpu it runs here, and its numbers
    must be those of the engine: the rows equal the CPU's (the same device), the whole run is the
    pipeline's, and the FLOP rate is R/s times bench/models.py's count."""
    import json

    from bench import device
    from bench.models import QUICK_REFERENCE

    out = tmp_path / "d.json"
    assert device.main(["--device", "cpu", "--quick", "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    ref = data["models"][0]
    assert ref["path"] == "two-layer tanh" and ref["parameters"] == QUICK_REFERENCE.parameters
    assert ref["against_cpu"] == {"max_rel_diff_L": 0.0, "max_rel_diff_R": 0.0, "max_rel_diff_grad": 0.0}
    assert ref["naive"]["rel_diff"] <= 1e-10
    for row in ref["rows"].values():
        assert row["gflops"] == pytest.approx(row["R_per_s"] * QUICK_REFERENCE.flops_per_rayleigh() / 1e9)
    whole = data["whole_run"]
    direct = pipeline.run_file(str(ROOT / "specs" / "two_layer_tanh.rq"), pipeline.RunOptions())
    assert (whole["cpu"]["verdict"], whole["cpu"]["mu"]) == (direct.verdict, direct.mu) == ("certified", direct.mu)
    assert "matmul peak" in capsys.readouterr().out
    if not torch.cuda.is_available():
        assert device.main(["--device", "cuda", "--quick", "--out", str(out)]) == 2
        assert "no CUDA device is available" in capsys.readouterr().err


def test_bench_steps_times_every_step_of_the_fast_path():
    from bench.models import QUICK_REFERENCE
    from bench.steps import steps

    out = steps(QUICK_REFERENCE, 2)
    assert list(out["ms_per_theta"]) == ["forward product", "activation", "F = T a", "loss and r", "da = T^T r",
                                         "S = s'(Z)", "backward product", "the rows' values"]
    assert all(v > 0 for v in out["ms_per_theta"].values())
    m = QUICK_REFERENCE
    # the products' FLOPs, and the counted FLOPs of one R, are the bench's: 2 n d h each; the
    # forward and the weight gradients, 2 x forward (issue 21)
    assert out["mflop"]["forward product"] == out["mflop"]["backward product"] == 2 * m.n * m.d * m.h / 1e6
    assert out["counted_mflop_per_R"] * 1e6 == m.flops_per_rayleigh() == 2 * 2 * m.n * (m.d * m.h + m.h)


def test_the_sound_mode_computes_on_the_cpu_whatever_the_device(monkeypatch):
    """--device cuda on a sound spec: the interval arithmetic is numpy's, so its Problem stays on the
    CPU (the points it hands to the engine are CPU tensors); the result says the device was not used
    and is that of a CPU run. (CUDA is pretended available: nothing may touch it.)"""
    from certifier.compile.problem import problem_device

    spec = ROOT / "specs" / "one_neuron_sound.rq"
    cpu = pipeline.run_file(str(spec), pipeline.RunOptions())
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    made = []
    real_init = Problem.__init__

    def spy(self, checked, device="cpu"):
        made.append(str(device))
        real_init(self, checked, device)

    monkeypatch.setattr(Problem, "__init__", spy)
    cuda = pipeline.run_file(str(spec), pipeline.RunOptions(device="cuda"))
    assert made and set(made) == {"cpu"}
    assert (cuda.verdict, cuda.sound, cuda.mu) == (cpu.verdict, cpu.sound, cpu.mu) == ("certified", True, cpu.mu)
    assert cpu.mu > 0
    assert any("--device cuda: the sound mode computes on the CPU" in n for n in cuda.notes)
    assert not any("--device" in n for n in cpu.notes)
    sampled = check(parse((ROOT / "specs" / "two_layer_floor.rq").read_text(encoding="utf-8"), "s.rq"))
    assert problem_device(sampled, "cuda") == "cuda"


def test_bench_tube_times_the_first_segments_of_a_spec(tmp_path):
    """python -m bench.tube: a fresh process builds the spec's tube for --segments segments and the
    JSON holds its CPU time and where it ended (the test-size trajectory spec, 3 segments)."""
    from bench import tube

    spec = tmp_path / "t.rq"
    spec.write_text((ROOT / "specs" / "two_layer_tanh_random_init_sound.rq").read_text())
    out = tmp_path / "tube.json"
    assert tube.main([str(spec), "--segments", "3", "--rounds", "1", "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    (run,) = doc["runs"]["this"]
    assert run["segments"] == 3 and run["cpu"] > 0 and 0 < run["radius"] < 0.02 and run["T"] > 0
