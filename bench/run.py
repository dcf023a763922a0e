"""certify's performance benchmarks, side by side on the machine they run on.

    python -m bench                      # full run (a few minutes on 2 cores), bench/results.json
    python -m bench --quick              # tiny sizes: checks that the harness works (seconds)
    python -m bench --compile            # also time torch.compile of the batched evaluator (slow to compile)
    python -m bench --out FILE --threads N
    python -m bench --engine-only --out FILE   # the peak and the evaluators only (about a minute)
    python -m bench --engine-only --model mlp3  # ... of the 3-layer MLP only

What it measures (docs/performance.md has the figures and how to read them):
- the machine's matrix-multiply rate: torch.matmul of large squares, float64 and float32 (best of
  several sizes and repetitions): the "peak" the engine is compared with;
- Rayleigh quotients per second of the sampled engine's evaluator (compile/batched.py: the model
  over the data vmapped over a batch of thetas, one backward pass of the summed losses, or for a
  large model on one thread one theta at a time; for the two-layer
  network its fast path, compile/two_layer.py) on a two-layer tanh network (width 1024, d 32,
  n 256) and a 3-layer tanh MLP (width 256), against the generic path, a loop over
  Problem.point (the engine before batching), vmap over theta of torch.func.grad, float32, and
  optionally torch.compile; FLOPs counted analytically (bench/models.py), as a fraction of peak;
- the same quotient through a naive full-Jacobian tangent kernel: J by jacrev, K = J J^T / n,
  R = g^T K g / g^T g; the speedup of the engine over it;
- the search units of the engine (analyse/units.py): batched trajectories, adversarial descent
  (second derivatives), random points, records per second;
- lambda_min of the kernel: Lanczos with kernel-vector products against eigvalsh of the formed K;
- interval boxes per second of the sound mode's branch and bound (bound_mu) on the sound specs;
- log-log slopes of the engine's cost per R against n and against the parameter count m (and of
  the naive approach against n).
Every figure is measured in this run; nothing is copied from elsewhere.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from .models import BASELINES, DEEP, QUICK_DEEP, QUICK_REFERENCE, REFERENCE, Model

ROOT = Path(__file__).resolve().parent.parent


# --- helpers ------------------------------------------------------------------------------------

def best_time(fn, reps: int = 3, warmup: int = 1) -> float:
    """Smallest wall time of `reps` calls after `warmup` calls (the machine may be shared)."""
    for _ in range(warmup):
        fn()
    best = math.inf
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


BLOCK = 5   # calls of an evaluator per turn in interleaved rounds (its time: their mean)


def interleaved(fns: dict, rounds: int, clock=time.perf_counter, warmup: int = 1, block: dict | None = None) -> dict:
    """Smallest time of each callable over `rounds` rounds, the callables taking turns within a
    round: on a machine shared with other work every candidate gets the same chances at the quiet
    moments, so ratios between them (and with the matmul peak) are fair.

    block[key] = k: in its turn the callable runs k times back to back and its time is the mean of
    the k (the first call included). That is the engine's steady state: its searches evaluate
    batch after batch, while a single call after another candidate (a 2048 x 2048 product streams
    100 MB) finds the caches cold: 20 to 25 % slower on the reference network here."""
    block = block or {}
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    best = {k: math.inf for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            calls = block.get(k, 1)
            t = clock()
            for _ in range(calls):
                fn()
            best[k] = min(best[k], (clock() - t) / calls)
    return best


def problem_of(model: Model, device: str = "cpu"):
    from certifier import check
    from certifier.compile.problem import Problem
    from certifier.parse import parse

    return Problem(check.check(parse(model.spec(), f"<bench {model.kind}>")), device)


def machine(threads: int) -> dict:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        cpu = platform.processor()
    try:
        load = os.getloadavg()
    except OSError:
        load = None
    return {"cpu": cpu, "cores": os.cpu_count(), "torch": torch.__version__, "threads": threads,
            "python": platform.python_version(), "numpy": np.__version__,
            "blas": "MKL" if torch.backends.mkl.is_available() else "other",
            "cuda": torch.cuda.is_available(), "load_average_at_start": load,
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}


def fma_peak(cores: int) -> dict | None:
    """The nominal float64/float32 FMA peak of `cores` cores at the clock /proc/cpuinfo reports
    ('cpu MHz': a guest's figure, boost not counted), from the vector units of the CPU family:
    flops per cycle and core = 2 (an FMA) x lanes x FMA pipes. None where the family is not known."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    field = {}
    for line in info.splitlines():
        if ":" in line:
            k, v = (t.strip() for t in line.split(":", 1))
            field.setdefault(k, v)
    flags = set(field.get("flags", "").split())
    vendor, family = field.get("vendor_id", ""), int(field.get("cpu family", "0") or 0)
    # float64 FMAs per cycle and core
    if vendor == "AuthenticAMD" and family == 25:      # Zen 3 and 4: 2 FMA pipes of 256 bits (AVX-512 in 2 halves)
        fmas, what = 8, "Zen 3/4: 2 FMA pipes of 256 bits"
    elif vendor == "AuthenticAMD" and family == 26:    # Zen 5: 512-bit data paths
        fmas, what = 16, "Zen 5: 2 FMA pipes of 512 bits"
    elif vendor == "GenuineIntel" and "avx512f" in flags:
        fmas, what = 16, "Intel AVX-512: 2 FMA units of 512 bits assumed (some parts have one)"
    elif "fma" in flags and "avx2" in flags:
        fmas, what = 8, "AVX2: 2 FMA units of 256 bits assumed"
    else:
        return None
    try:
        ghz = float(field["cpu MHz"]) / 1e3
    except (KeyError, ValueError):
        return None
    f64 = cores * ghz * fmas * 2
    return {"float64": f64, "float32": 2 * f64, "ghz": ghz, "cores": cores, "float64_fmas_per_cycle": fmas,
            "what": what}


def slope(xs, ys) -> float:
    lx, ly = np.log(np.asarray(xs, float)), np.log(np.asarray(ys, float))
    return float(np.polyfit(lx, ly, 1)[0])


# --- measurements -------------------------------------------------------------------------------

def matmul_peak(dtype: torch.dtype, sizes: list[int], reps: int) -> dict:
    rows = []
    for n in sizes:
        a = torch.randn(n, n, dtype=dtype)
        b = torch.randn(n, n, dtype=dtype)
        t = best_time(lambda: torch.matmul(a, b), reps)
        rows.append({"size": n, "seconds": t, "gflops": 2.0 * n ** 3 / t / 1e9})
    best = max(rows, key=lambda r: r["gflops"])
    return {"gflops": best["gflops"], "size": best["size"], "sizes": rows}


def perturbed(problem, count: int, scale: float = 0.01, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randn(count, problem.m, generator=gen, dtype=problem.theta0.dtype)
    return problem.theta0 + scale * noise * float(problem.theta0.norm()) / math.sqrt(problem.m)


def engine(problem, model: Model, reps: int, compile_too: bool, peak_size: int) -> dict:
    """R/s of the evaluators, timed in interleaved rounds together with float64 and float32
    matrix products of size peak_size (whose rates are returned as the peak of the same rounds)."""
    from torch.func import grad_and_value, vmap

    from certifier.compile.batched import BatchedEvaluator

    flops = model.flops_per_rayleigh()
    ev = BatchedEvaluator(problem)
    batch = ev.chunk_size()
    thetas = perturbed(problem, batch)
    out: dict = {"batch": batch, "batched_ok": ev.batched, "path": ev.path, "flops_per_R": flops}
    loop_n = max(2, min(batch, 8))
    generic = BatchedEvaluator(problem, fast=False)      # the generic path, where a fast path exists
    out["generic_path"] = generic.path
    has_fast = ev.path.startswith("two-layer")
    ev32 = BatchedEvaluator(problem, dtype=torch.float32)
    th32 = thetas.to(torch.float32)
    vg = vmap(grad_and_value(problem.loss))
    a64, b64 = torch.randn(peak_size, peak_size, dtype=torch.float64), torch.randn(peak_size, peak_size, dtype=torch.float64)
    a32, b32 = a64.float(), b64.float()
    user = {k: make(model, problem.x, problem.y) for k, make in BASELINES.items()}
    fns = {"loop": lambda: [problem.point(th) for th in thetas[:loop_n]],
           "batched": lambda: ev.points(thetas),
           "autograd_loop": lambda: user["autograd_loop"](thetas[:loop_n]),
           "vmap_grad_user": lambda: user["vmap_grad_user"](thetas),
           "hand_batched": lambda: user["hand_batched"](thetas),
           "vmap_grad": lambda: vg(thetas),
           "batched_float32": lambda: ev32.points(th32),
           "peak_float64": lambda: torch.matmul(a64, b64),
           "peak_float32": lambda: torch.matmul(a32, b32)}
    b_generic = generic.chunk_size()            # the generic path's own batch size
    th_generic = perturbed(problem, b_generic)
    if has_fast:
        fns["batched_generic"] = lambda: generic.points(th_generic)
    for b in sorted({1, 2} - {batch}):
        if b < batch:
            fns[f"batched_{b}"] = (lambda b=b: ev.points(thetas[:b]))
    compiled = None
    if compile_too:
        try:
            losses = _compiled_losses(problem)
            th = thetas.detach()
            t0 = time.perf_counter()
            _grads(losses, th)
            out["compile_seconds"] = time.perf_counter() - t0
            L1, _ = _grads(losses, th)
            ref = ev.points(thetas)
            out["compiled_max_rel_diff_L"] = max(abs(float(L1[i]) - ref[i].loss) / abs(ref[i].loss)
                                                 for i in range(batch))
            compiled = lambda: _grads(losses, th)   # noqa: E731
        except Exception as exc:   # noqa: BLE001
            out["compiled"] = {"error": f"{type(exc).__name__}: {str(exc)[:300]}"}
    steady = {k: BLOCK for k in fns if not k.startswith("peak")}
    best = interleaved(fns, reps, block=steady)
    if compiled is not None:
        # in rounds of its own (after compiled code ran, small eager batches were measured slower),
        # with the eager batch again for the ratio
        more = interleaved({"compiled": compiled, "batched_again": fns["batched"]}, reps,
                           block={"compiled": BLOCK, "batched_again": BLOCK})
        best["compiled"] = more["compiled"]
        out["batched_again_R_per_s"] = batch / more["batched_again"]
    count = {"loop": loop_n, "batched": batch, "batched_generic": b_generic, "vmap_grad": batch,
             "batched_float32": batch, "compiled": batch, "autograd_loop": loop_n, "vmap_grad_user": batch,
             "hand_batched": batch}
    what = {"loop": "a loop over Problem.point (one theta at a time)",
            "batched": (f"BatchedEvaluator.points over {batch} thetas, "
                        + (f"the {ev.path} fast path (compile/two_layer.py)" if has_fast
                           else f"the generic path ({ev.path})")),
            "batched_generic": f"BatchedEvaluator(fast=False): the generic path ({generic.path}) over {b_generic} thetas",
            "vmap_grad": "vmap over theta of torch.func.grad of the loss",
            "batched_float32": "the same in float32",
            "compiled": "torch.compile of the vmapped losses (inductor, C++ on CPU), float64",
            "autograd_loop": "a user's loop: one theta at a time, torch.autograd.grad of the loss (bench/models.py)",
            "vmap_grad_user": "a user's torch.func vmap(grad_and_value) of the loss of a flat theta",
            "hand_batched": "a user's hand-batched torch: batched weights, bmm, one autograd.grad of the summed losses"}
    for key, c in count.items():
        if key in best:
            out[key] = {"R_per_s": c / best[key], "gflops": c / best[key] * flops / 1e9, "what": what[key], "batch": c}
    if "compiled" in out and "R_per_s" in out["compiled"]:
        out["compiled"]["compile_seconds"] = out.pop("compile_seconds")
        out["compiled"]["max_rel_diff_L"] = out.pop("compiled_max_rel_diff_L")
    out["batched_by_size"] = {b: b / best[f"batched_{b}"] for b in (1, 2) if f"batched_{b}" in best}
    out["batched_by_size"][batch] = out["batched"]["R_per_s"]
    out["peak_same_rounds"] = {k: 2.0 * peak_size ** 3 / best[f"peak_{k}"] / 1e9 for k in ("float64", "float32")}
    # the user's baselines give the engine's R (least squares: R = |grad L|^2 / 4L)
    ref = torch.tensor([p.rayleigh for p in ev.points(thetas)], dtype=torch.float64)
    out["baselines_max_rel_diff_R"] = {
        k: float(((fn(thetas[:loop_n] if k == "autograd_loop" else thetas).detach() - ref[:loop_n if k == "autograd_loop"
                   else batch]).abs() / ref[:loop_n if k == "autograd_loop" else batch].abs()).max())
        for k, fn in user.items()}
    out["engine_speedup_over"] = {k: out["batched"]["R_per_s"] / out[k]["R_per_s"]
                                  for k in ("autograd_loop", "vmap_grad_user", "hand_batched", "vmap_grad", "loop")}
    p64, p32 = ev.points(thetas), ev32.points(th32)
    out["batched_float32"]["max_rel_diff_R_vs_float64"] = max(abs(a.rayleigh - b.rayleigh) / abs(a.rayleigh)
                                                              for a, b in zip(p64, p32))
    return out


# the fast path's other activations (tanh: the reference): from the output, then from Z kept beside T
ACTIVATIONS = ("sigmoid", "relu", "exp", "softplus", "sin")


def activations(quick: bool, reps: int, peak_size: int) -> dict:
    """The reference network (the quick one with --quick) with the fast path's other activations:
    R/s of the fast path and of the generic vmap path in interleaved rounds with the float64 peak
    of the same rounds."""
    from certifier.compile.batched import BatchedEvaluator

    base = QUICK_REFERENCE if quick else REFERENCE
    a64, b64 = torch.randn(peak_size, peak_size, dtype=torch.float64), torch.randn(peak_size, peak_size, dtype=torch.float64)
    fns, sizes, models = {"peak_float64": lambda: torch.matmul(a64, b64)}, {}, {}
    for act in ACTIVATIONS:
        model = Model(base.name.replace("tanh", act), "two_layer", n=base.n, d=base.d, h=base.h, activation=act)
        problem = problem_of(model)
        models[act] = (model, problem.m)
        for key, ev in (("fast", BatchedEvaluator(problem)), ("generic", BatchedEvaluator(problem, fast=False))):
            th = perturbed(problem, ev.chunk_size())
            fns[f"{act}_{key}"] = (lambda ev=ev, th=th: ev.points(th))
            sizes[(act, key)] = (ev.chunk_size(), ev.path)
    best = interleaved(fns, reps, block={k: BLOCK for k in fns if not k.startswith("peak")})
    peak = 2.0 * peak_size ** 3 / best["peak_float64"] / 1e9
    out: dict = {"peak_float64_same_rounds": peak}
    for act, (model, m) in models.items():
        row: dict = {"name": model.name, "parameters": m}
        for key in ("fast", "generic"):
            b, path = sizes[(act, key)]
            r = b / best[f"{act}_{key}"]
            row[key] = {"path": path, "batch": b, "R_per_s": r, "gflops": r * model.flops_per_rayleigh() / 1e9}
        row["speedup"] = row["fast"]["R_per_s"] / row["generic"]["R_per_s"]
        out[act] = row
    return out


def _compiled_losses(problem):
    from torch.func import vmap

    batched = vmap(problem._outputs, in_dims=(0, None))
    loss = problem.loss_def

    def losses(th):
        F = batched(th, problem.x)
        return vmap(lambda f: loss.value(f, problem.y))(F)

    return torch.compile(losses)


def _grads(losses, th):
    th = th.detach().requires_grad_(True)
    L = losses(th)
    (g,) = torch.autograd.grad(L.sum(), th)
    return L.detach(), g


def naive(problem, reps: int) -> dict:
    """R through the formed tangent kernel: J by jacrev (all n k rows at once), K = J J^T / n,
    g the functional gradient (n dL/dF), R = g^T K g / g^T g."""
    from torch.func import jacrev

    theta = problem.theta0

    def once():
        J = jacrev(problem.outputs)(theta).reshape(problem.n * problem.k, problem.m)
        K = (J @ J.T) / problem.n
        F = problem.outputs(theta).detach().requires_grad_(True)
        (dF,) = torch.autograd.grad(problem.loss_def.value(F, problem.y), F)
        g = (problem.n * dF).reshape(-1)
        return float(g @ (K @ g) / (g @ g))

    t = best_time(once, reps, warmup=1)
    R = once()
    R_engine = problem.point(theta).rayleigh
    return {"R_per_s": 1.0 / t, "seconds_per_R": t, "R": R, "R_engine": R_engine,
            "rel_diff": abs(R - R_engine) / abs(R_engine)}


def search_units(problem, model: Model, reps: int, quick: bool) -> dict:
    """Records per second of the engine's units (analyse/units.py) against the one-at-a-time
    sources (bench/serial.py) they replace, on the same points."""
    from bench import serial as sources
    from certifier.analyse import units
    from certifier.analyse.records import Records
    from certifier.analyse.regions import Ball
    from certifier.analyse.trajectory import SearchContext

    region = Ball(problem.theta0, 0.05 * float(problem.theta0.norm()))
    gen = torch.Generator().manual_seed(0)
    starts = region.sample(gen, 4 if quick else 8)
    steps = 4 if quick else 8
    p0 = problem.point(problem.theta0)
    eta = 0.5 / max(problem.hessian_top_eigenvalue(problem.theta0, iterations=10), 1e-12)
    noise = 1e-16 * p0.loss
    ctx = SearchContext(gen=gen, eta=eta, noise=noise, advance=lambda n=1: None, floor=0.0)
    adv = starts[: 2 if quick else 4]
    pts = region.sample(gen, 16 if quick else 64)
    fns = {"trajectories": lambda: units.trajectories(problem, starts, region.center, region, steps, eta, noise, 0.0),
           "trajectories_old": lambda: [sources.trajectory(problem, s, region.center, region, steps, ctx, Records())
                                        for s in starts],
           "adversarial": lambda: units.adversarial(problem, adv, region, steps, noise, 0.0),
           "adversarial_old": lambda: [sources.adversarial(problem, s, region, steps, ctx, Records()) for s in adv],
           "random": lambda: units.random_points(problem, pts, region),
           "random_old": lambda: [problem.point(th) for th in pts]}
    best = interleaved(fns, reps)
    counts = {"trajectories": sum(b.evaluations for b in fns["trajectories"]()),
              "adversarial": sum(b.evaluations for b in fns["adversarial"]()), "random": len(pts)}
    rows = {k: {"evaluations": c, "batched_per_s": c / best[k], "one_at_a_time_per_s": c / best[k + "_old"]}
            for k, c in counts.items()}
    rows["adversarial"]["note"] = ("second derivatives (log R and its gradient); the inner line search adds "
                                   "evaluations that are not records")
    for row in rows.values():
        row["speedup"] = row["batched_per_s"] / row["one_at_a_time_per_s"]
    return rows


def kernel(models: list[Model], reps: int) -> list[dict]:
    from certifier.compile.kernel import lambda_min_formed, lambda_min_lanczos

    out = []
    for model in models:
        problem = problem_of(model)
        theta = problem.theta0
        t_f = best_time(lambda: lambda_min_formed(problem, theta), reps, 1)
        lam_f = lambda_min_formed(problem, theta)
        t0 = time.perf_counter()
        lam_l, products = lambda_min_lanczos(problem, theta)
        t_l = time.perf_counter() - t0
        out.append({"model": model.name, "n": model.n, "nk": problem.n * problem.k, "m": problem.m,
                    "formed_seconds": t_f, "formed_lambda_min": lam_f,
                    "lanczos_seconds": t_l, "lanczos_lambda_min": lam_l, "lanczos_products": products,
                    "rel_diff": abs(lam_l - lam_f) / abs(lam_f),
                    "jacobian_bytes": problem.n * problem.k * problem.m * 8})
    return out


SPEC_UNITS = ["specs/two_layer_tanh.rq", "specs/two_layer_floor.rq", "specs/softmax_separable.rq"]
SOUND_SPECS = ["specs/two_layer_tanh_sound.rq", "specs/one_neuron_sound.rq", "specs/linear_underparameterized_sound.rq"]


def sound(budget: int) -> list[dict]:
    """Boxes per second of branch and bound (engine.bound_mu) on the sound specs: the whole region
    as one box, no target (any positive bound), then tightening until `budget` boxes."""
    from certifier import check
    from certifier.analyse.regions import Ball, Box
    from certifier.analyse.sound.engine import bound_mu
    from certifier.compile.problem import Problem
    from certifier.parse import parse

    out = []
    for rel in SOUND_SPECS:
        path = ROOT / rel
        if not path.exists():
            continue
        checked = check.check(parse(path.read_text(encoding="utf-8"), str(path)))
        problem = Problem(checked, "cpu")
        opts = checked.region.options
        size = opts.get("halfwidth") or opts.get("radius")
        if not isinstance(size, (int, float)):
            out.append({"spec": rel, "skipped": "radius=auto"})
            continue
        region = Box(problem.theta0, float(size)) if checked.region.name == "box" else Ball(problem.theta0, float(size))
        floor = float(checked.claim.options.get("floor", 0.0))
        res = bound_mu(problem, region, floor, None, budget, seed=0, seconds=60)
        out.append({"spec": rel, "parameters": problem.m, "samples": problem.n, "status": res.status,
                    "boxes": res.boxes_evaluated, "bnb_seconds": res.bnb_seconds,
                    "boxes_per_s": res.boxes_evaluated / res.bnb_seconds if res.bnb_seconds > 0 else None})
    return out


def slopes(quick: bool, reps: int) -> dict:
    """Seconds per R of the batched evaluator against n (width fixed) and against m (n fixed);
    and of the naive kernel against n."""
    from certifier.compile.batched import BatchedEvaluator

    if quick:
        ns, hs, h_fixed, n_fixed, naive_ns, naive_h = [16, 32, 64], [32, 64, 128], 64, 32, [8, 16, 32], 32
    else:
        ns, hs, h_fixed, n_fixed, naive_ns, naive_h = [64, 128, 256, 512, 1024], [128, 256, 512, 1024, 2048], 1024, 256, \
            [32, 64, 128, 256], 256

    def per_r(model):
        p = problem_of(model)
        ev = BatchedEvaluator(p)
        b = ev.chunk_size()
        th = perturbed(p, b)
        return best_time(lambda: ev.points(th), reps) / b, p.m

    rows_n = []
    for n in ns:
        s, m = per_r(Model("", "two_layer", n=n, d=32 if not quick else 8, h=h_fixed))
        rows_n.append({"n": n, "m": m, "seconds_per_R": s})
    rows_m = []
    for h in hs:
        s, m = per_r(Model("", "two_layer", n=n_fixed, d=32 if not quick else 8, h=h))
        rows_m.append({"h": h, "m": m, "seconds_per_R": s})
    rows_naive = []
    for n in naive_ns:
        p = problem_of(Model("", "two_layer", n=n, d=32 if not quick else 8, h=naive_h))
        rows_naive.append({"n": n, "m": p.m, "seconds_per_R": naive(p, 1)["seconds_per_R"]})
    return {"engine_vs_n": {"rows": rows_n, "slope": slope([r["n"] for r in rows_n], [r["seconds_per_R"] for r in rows_n]),
                            "width": h_fixed},
            "engine_vs_m": {"rows": rows_m, "slope": slope([r["m"] for r in rows_m], [r["seconds_per_R"] for r in rows_m]),
                            "n": n_fixed},
            "naive_vs_n": {"rows": rows_naive,
                           "slope": slope([r["n"] for r in rows_naive], [r["seconds_per_R"] for r in rows_naive]),
                           "width": naive_h}}


# --- the run ------------------------------------------------------------------------------------

def run(quick: bool = False, compile_too: bool = False, threads: int | None = None, out: str | None = None,
        log=print, engine_only: bool = False, models: list[str] | None = None) -> dict:
    """models: the kinds of network to time ('two_layer', 'mlp3'); None: both (and the two-layer
    network's other activations)."""
    threads = threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    reps = 1 if quick else 5
    results: dict = {"command": "python -m bench" + (" --quick" if quick else "") + (" --compile" if compile_too else "")
                     + (" --engine-only" if engine_only else "")
                     + "".join(f" --model {k}" for k in models or ()),
                     "machine": machine(threads), "quick": quick, "engine_only": engine_only,
                     "evaluator_calls_per_turn": BLOCK}
    sizes = [256, 512] if quick else [1024, 2048, 3072]
    t_start = time.perf_counter()

    log("matmul peak ...")
    peak = {"float64": matmul_peak(torch.float64, sizes, reps), "float32": matmul_peak(torch.float32, sizes, reps)}
    results["peak"] = peak
    results["fma_peak"] = fma_peak(threads)

    peak_size = sizes[-2] if len(sizes) > 1 else sizes[-1]
    results["models"] = {}
    chosen = [m for m in ([QUICK_REFERENCE, QUICK_DEEP] if quick else [REFERENCE, DEEP]) if not models or m.kind in models]
    for model in chosen:
        log(f"engine: {model.name} ...")
        problem = problem_of(model)
        row = {"name": model.name, "kind": model.kind, "n": model.n, "d": model.d, "width": model.h,
               "parameters": problem.m}
        row["engine"] = engine(problem, model, reps, compile_too, peak_size)
        for key in ("float64", "float32"):       # a peak seen in the engine's rounds counts too
            seen = row["engine"]["peak_same_rounds"][key]
            if seen > peak[key]["gflops"]:
                peak[key] = dict(peak[key], gflops=seen, size=peak_size)
        if not engine_only:
            log(f"naive kernel: {model.name} ...")
            row["naive"] = naive(problem, 1 if quick else 2)
            row["speedup_over_naive"] = row["engine"]["batched"]["R_per_s"] / row["naive"]["R_per_s"]
            log(f"search units: {model.name} ...")
            row["units"] = search_units(problem, model, 1 if quick else 3, quick)
        results["models"][model.kind] = row

    if not models or "two_layer" in models:
        log("the fast path's other activations ...")
        results["activations"] = activations(quick, reps, peak_size)
        seen = results["activations"]["peak_float64_same_rounds"]      # a peak seen here counts too
        if seen > peak["float64"]["gflops"]:
            peak["float64"] = dict(peak["float64"], gflops=seen, size=peak_size)

    # one thread, timed by process CPU time: on a machine shared with other work the all-core
    # figures vary with the load, a single thread's CPU time much less
    if threads > 1:
        log("one thread ...")
        torch.set_num_threads(1)
        from certifier.compile.batched import BatchedEvaluator

        n1 = sizes[-2] if len(sizes) > 1 else sizes[-1]
        a64, b64 = torch.randn(n1, n1, dtype=torch.float64), torch.randn(n1, n1, dtype=torch.float64)
        a32, b32 = a64.float(), b64.float()
        fns = {"peak_float64": lambda: torch.matmul(a64, b64), "peak_float32": lambda: torch.matmul(a32, b32)}
        batches, paths = {}, {}
        for model in chosen:
            problem = problem_of(model)
            for key, dtype in (("float64", torch.float64), ("float32", torch.float32)):
                ev = BatchedEvaluator(problem, dtype=dtype)
                b = ev.chunk_size()
                th = perturbed(problem, b).to(dtype)
                fns[f"{model.kind}_{key}"] = (lambda ev=ev, th=th: ev.points(th))
                batches[(model.kind, key)] = (b, model)
                paths[(model.kind, key)] = ev.path
                if key == "float64":             # the user's baselines, same rounds
                    thb = perturbed(problem, b)
                    for name, make in BASELINES.items():
                        if name == "vmap_grad_user":
                            continue
                        fn, cnt = make(model, problem.x, problem.y), (min(b, 8) if name == "autograd_loop" else b)
                        fns[f"{model.kind}_{name}"] = (lambda fn=fn, th=thb[:cnt]: fn(th))
                        batches[(model.kind, name)] = (cnt, model)
                if key == "float64" and ev.path.startswith("two-layer "):    # the generic path, same rounds
                    gen = BatchedEvaluator(problem, fast=False)
                    bg = gen.chunk_size()
                    fns[f"{model.kind}_generic"] = (lambda ev=gen, th=perturbed(problem, bg): ev.points(th))
                    batches[(model.kind, "generic")] = (bg, model)
                    paths[(model.kind, "generic")] = gen.path
        best = interleaved(fns, reps, clock=time.process_time, block={k: BLOCK for k in fns if not k.startswith("peak")})
        one = {"clock": "process CPU time", "matmul_size": n1, "models": {}}
        for key in ("float64", "float32"):
            one[f"peak_{key}"] = {"gflops": 2.0 * n1 ** 3 / best[f"peak_{key}"] / 1e9, "size": n1}
        for (kind, key), (b, model) in batches.items():
            r = b / best[f"{kind}_{key}"]
            row = {"R_per_s": r, "gflops": r * model.flops_per_rayleigh() / 1e9, "batch": b}
            if (kind, key) in paths:
                row["path"] = paths[(kind, key)]
            row["fraction_of_peak"] = row["gflops"] / one[f"peak_{'float32' if key == 'float32' else 'float64'}"]["gflops"]
            one["models"].setdefault(kind, {})[key] = row
        # the elementwise work the FLOP count leaves out: tanh per element, next to a product
        x64 = torch.randn(1 << 20, dtype=torch.float64)
        x32 = x64.float()
        el = interleaved({"tanh_float64": lambda: torch.tanh(x64), "tanh_float32": lambda: torch.tanh(x32),
                          "exp_float64": lambda: torch.exp(x64), "mul_float64": lambda: x64 * x64},
                         reps, clock=time.process_time)
        one["ns_per_element"] = {k: v / x64.numel() * 1e9 for k, v in el.items()}
        results["one_thread"] = one
        log("search units on the spec problems (one thread, as the pipeline runs them) ...")
        results["spec_units"] = {}
        for rel in ([] if engine_only else SPEC_UNITS):
            from certifier import check
            from certifier.compile.problem import Problem
            from certifier.parse import parse

            path = ROOT / rel
            problem = Problem(check.check(parse(path.read_text(encoding="utf-8"), str(path))), "cpu")
            results["spec_units"][rel] = search_units(problem, None, 1 if quick else 3, quick)
        torch.set_num_threads(threads)

    # the peak again at the end (the largest rate seen in the run is the peak)
    for dt, key in ((torch.float64, "float64"), (torch.float32, "float32")):
        again = matmul_peak(dt, sizes[-1:], reps)
        if again["gflops"] > peak[key]["gflops"]:
            peak[key] = dict(again, sizes=peak[key]["sizes"] + again["sizes"])
    # fractions of the peak measured in the evaluators' own rounds (issue 21: not the best product
    # seen anywhere in the run); the run's largest and the nominal FMA peak are reported beside it
    for row in results["models"].values():
        e = row["engine"]
        same = e["peak_same_rounds"]
        for key in ("loop", "batched", "batched_generic", "vmap_grad", "compiled", "autograd_loop",
                    "vmap_grad_user", "hand_batched"):
            if key in e and "gflops" in e[key]:
                e[key]["fraction_of_peak"] = e[key]["gflops"] / same["float64"]
                e[key]["fraction_of_fma_peak"] = (e[key]["gflops"] / results["fma_peak"]["float64"]
                                                  if results["fma_peak"] else None)
        e["batched_float32"]["fraction_of_peak"] = e["batched_float32"]["gflops"] / same["float32"]
        row["fraction_of_peak_float64"] = e["batched"]["fraction_of_peak"]
        row["fraction_of_peak_float32"] = e["batched_float32"]["fraction_of_peak"]
    for act in ACTIVATIONS if "activations" in results else ():
        for key in ("fast", "generic"):
            r = results["activations"][act][key]
            r["fraction_of_peak"] = r["gflops"] / results["activations"]["peak_float64_same_rounds"]

    if not engine_only:
        log("kernel lambda_min: Lanczos vs eigvalsh ...")
        kmodels = [QUICK_REFERENCE] if quick else [REFERENCE, Model("two-layer tanh (width 1024, d 32, n 512)",
                                                                      "two_layer", n=512, d=32, h=1024)]
        results["kernel_lambda_min"] = kernel(kmodels, 1)
        log("sound mode boxes per second ...")
        results["sound"] = sound(40 if quick else 400)
        log("slopes ...")
        results["slopes"] = slopes(quick, 1 if quick else 2)
    results["machine"]["load_average_at_end"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    results["seconds"] = time.perf_counter() - t_start
    path = Path(out) if out else Path(__file__).resolve().parent / "results.json"
    path.write_text(json.dumps(results, indent=1, default=float) + "\n", encoding="utf-8")
    results["_path"] = str(path)
    return results


def table(results: dict) -> str:
    m = results["machine"]
    lines = [f"machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']}, {m['threads']} threads, "
             f"load {m.get('load_average_at_start')}",
             f"matmul peak: float64 {results['peak']['float64']['gflops']:.1f} GFLOP/s "
             f"(n={results['peak']['float64']['size']}), float32 {results['peak']['float32']['gflops']:.1f} GFLOP/s "
             f"(n={results['peak']['float32']['size']}), the largest seen in the run; fractions below are of the "
             "peak measured in the evaluators' own rounds"
             + (f"; nominal FMA peak float64 {results['fma_peak']['float64']:.1f} GFLOP/s "
                f"({results['fma_peak']['what']}, {results['fma_peak']['ghz']:.2f} GHz)" if results.get("fma_peak") else ""),
             ""]
    lines.append("| model | m | evaluator | R/s | GFLOP/s | of peak |")
    lines.append("|---|---:|---|---:|---:|---:|")
    for row in results["models"].values():
        e = row["engine"]
        for key, label, peak in (("loop", "loop over Problem.point", "float64"),
                                 ("batched", f"batched (B={e['batch']}, {e.get('path', 'vmap')}), float64", "float64"),
                                 ("batched_generic", f"batched (B={e.get('batched_generic', {}).get('batch')}, generic "
                                                     f"{e.get('generic_path', 'vmap')} path), "
                                                     "float64", "float64"),
                                 ("vmap_grad", "vmap(grad) over theta", "float64"),
                                 ("batched_float32", "batched, float32", "float32"),
                                 ("compiled", "torch.compile, float64", "float64"),
                                 ("autograd_loop", "user: torch.autograd.grad loop", "float64"),
                                 ("vmap_grad_user", "user: torch.func vmap(grad)", "float64"),
                                 ("hand_batched", "user: hand-batched torch", "float64")):
            r = e.get(key)
            if not r or "R_per_s" not in r:
                if r and "error" in r:
                    lines.append(f"| {row['name']} | {row['parameters']} | {label} | error: {r['error'][:60]} | | |")
                continue
            frac = r["gflops"] / e["peak_same_rounds"][peak]
            lines.append(f"| {row['name']} | {row['parameters']} | {label} | {r['R_per_s']:.1f} | "
                         f"{r['gflops']:.2f} | {100 * frac:.0f}% |")
        nv = row.get("naive")
        if nv:
            lines.append(f"| {row['name']} | {row['parameters']} | naive: J, K = JJᵀ/n, gᵀKg/gᵀg | "
                         f"{nv['R_per_s']:.3f} | | |")
    lines.append("")
    for row in results["models"].values():
        if "naive" not in row:
            continue
        lines.append(f"{row['name']}: engine / " + ", ".join(
            f"{k} {v:.2f}x" for k, v in row["engine"]["engine_speedup_over"].items()))
        lines.append(f"{row['name']}: engine / naive = {row['speedup_over_naive']:.0f}x "
                     f"(R agrees to {row['naive']['rel_diff']:.1e}); float32 R within "
                     f"{row['engine']['batched_float32']['max_rel_diff_R_vs_float64']:.1e} of float64")
        for name, u in row["units"].items():
            lines.append(f"  unit {name}: {u['batched_per_s']:.1f} records/s batched vs "
                         f"{u['one_at_a_time_per_s']:.1f} one at a time ({u['speedup']:.1f}x)")
    acts = results.get("activations")
    if acts:
        lines.append("")
        for act in ACTIVATIONS:
            r = acts[act]
            lines.append(f"{r['name']}: fast path (B={r['fast']['batch']}) {r['fast']['R_per_s']:.1f} R/s "
                         f"({100 * r['fast']['fraction_of_peak']:.0f}% of peak), generic (B={r['generic']['batch']}) "
                         f"{r['generic']['R_per_s']:.1f} R/s ({100 * r['generic']['fraction_of_peak']:.0f}%): "
                         f"{r['speedup']:.1f}x")
    one = results.get("one_thread")
    if one:
        lines.append("")
        lines.append(f"one thread: matmul peak float64 {one['peak_float64']['gflops']:.1f}, "
                     f"float32 {one['peak_float32']['gflops']:.1f} GFLOP/s")
        for kind, row in one["models"].items():
            name = results["models"][kind]["name"]
            lines.append(f"  {name}: batched float64 {row['float64']['R_per_s']:.1f} R/s "
                         f"({100 * row['float64']['fraction_of_peak']:.0f}% of peak), float32 "
                         f"{row['float32']['R_per_s']:.1f} R/s ({100 * row['float32']['fraction_of_peak']:.0f}%)"
                         + (f"; generic {row['generic'].get('path', 'vmap')} path float64 {row['generic']['R_per_s']:.1f} R/s "
                            f"({100 * row['generic']['fraction_of_peak']:.0f}%)" if "generic" in row else ""))
            users = [(k, row[k]["R_per_s"]) for k in ("autograd_loop", "hand_batched") if k in row]
            if users:
                lines.append(f"    path {row['float64'].get('path', '?')}; user: " + ", ".join(
                    f"{k} {r:.1f} R/s (engine {row['float64']['R_per_s'] / r:.2f}x)" for k, r in users))
    if one and "ns_per_element" in one:
        ns = one["ns_per_element"]
        lines.append("  ns per element (one thread): " + ", ".join(f"{k} {v:.2f}" for k, v in ns.items()))
    for rel, rows in (results.get("spec_units") or {}).items():
        lines.append(f"  {rel} (one thread): " + ", ".join(
            f"{k} {u['batched_per_s']:.0f} vs {u['one_at_a_time_per_s']:.0f} records/s ({u['speedup']:.1f}x)"
            for k, u in rows.items()))
    if "kernel_lambda_min" not in results:          # --engine-only
        lines.append(f"total {results['seconds']:.0f} s; written to {results.get('_path')}")
        return "\n".join(lines)
    lines.append("")
    lines.append("| kernel λ_min | nk | m | formed (jacrev + eigvalsh) | Lanczos (eigsh, K·v products) | rel. diff |")
    lines.append("|---|---:|---:|---:|---:|---:|")
    for k in results["kernel_lambda_min"]:
        lines.append(f"| {k['model']} | {k['nk']} | {k['m']} | {k['formed_seconds']:.2f} s | "
                     f"{k['lanczos_seconds']:.2f} s ({k['lanczos_products']} products) | {k['rel_diff']:.1e} |")
    lines.append("")
    for s in results["sound"]:
        if "boxes_per_s" in s:
            lines.append(f"sound {s['spec']} (m={s['parameters']}, n={s['samples']}): {s['boxes']} boxes, "
                         f"{s['boxes_per_s']:.1f} boxes/s ({s['status']})")
    sl = results["slopes"]
    lines.append("")
    lines.append(f"slopes (log-log, seconds per R): engine vs n {sl['engine_vs_n']['slope']:.2f} "
                 f"(width {sl['engine_vs_n']['width']}), engine vs m {sl['engine_vs_m']['slope']:.2f} "
                 f"(n {sl['engine_vs_m']['n']}), naive vs n {sl['naive_vs_n']['slope']:.2f} "
                 f"(width {sl['naive_vs_n']['width']})")
    lines.append(f"total {results['seconds']:.0f} s; written to {results.get('_path')}")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes (checks the harness)")
    ap.add_argument("--compile", action="store_true", help="also time torch.compile (slow to compile on CPU)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    ap.add_argument("--out", default=None, help="where to write the JSON (default bench/results.json)")
    ap.add_argument("--engine-only", action="store_true",
                    help="only the peak and the evaluators' R/s (all cores and one thread): about a minute")
    ap.add_argument("--model", action="append", choices=("two_layer", "mlp3"), default=None,
                    help="time only this network (repeatable): two_layer (the reference) or mlp3 (the 3-layer MLP)")
    args = ap.parse_args(argv)
    results = run(args.quick, args.compile, args.threads, args.out,
                  log=lambda s: print(s, file=sys.stderr, flush=True), engine_only=args.engine_only,
                  models=args.model)
    print(table(results))
    return 0
