"""Where the two-layer fast path's time goes: milliseconds per theta of each of its steps.

    python -m bench.steps [--threads N] [--batches 40] [--quick] [--activation relu]

The reference network of `python -m bench` (width 1024, d 32, n 256) at the engine's batch:
compile/two_layer.py's forward_backward with a clock read after each step (its `mark` hook),
then the rows' values (compile/batched.py), medians over the batches; and the whole evaluator
(BatchedEvaluator.points) timed on the same batch. docs/performance.md quotes a run.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time

import torch

from certifier.compile.two_layer import ACTIVATIONS

from .models import QUICK_REFERENCE, REFERENCE
from .run import perturbed, problem_of

MFLOP = {"forward product": lambda m: 2 * m.n * m.d * m.h / 1e6, "F = T a": lambda m: 2 * m.n * m.h / 1e6,
         "da = T^T r": lambda m: 2 * m.n * m.h / 1e6, "backward product": lambda m: 2 * m.n * m.d * m.h / 1e6}


def steps(model, batches: int) -> dict:
    from certifier.compile.batched import BatchedEvaluator

    problem = problem_of(model)
    ev = BatchedEvaluator(problem)
    if not ev.path.startswith("two-layer "):
        raise SystemExit(f"the model takes the {ev.path} path, not the fast path")
    B = ev.chunk_size()
    th = perturbed(problem, B)
    times: dict[str, list[float]] = {}

    def once():
        last = [time.perf_counter()]

        def mark(step):
            now = time.perf_counter()
            times.setdefault(step, []).append(now - last[0])
            last[0] = now
        F, L, G = ev._fast.forward_backward(th, ev.x, ev._losses, mark, derivative=ev._derivative)
        ev._row_facts(F, L, G)
        mark("the rows' values")

    once()
    times.clear()
    for _ in range(batches):
        once()
    ms = {k: statistics.median(v) / B * 1e3 for k, v in times.items()}
    for _ in range(3):
        ev.points(th)
    whole = []
    for _ in range(batches):
        t0 = time.perf_counter()
        ev.points(th)
        whole.append(time.perf_counter() - t0)
    per_theta = statistics.median(whole) / B * 1e3
    return {"model": model.name, "batch": B, "threads": torch.get_num_threads(), "ms_per_theta": ms,
            "mflop": {k: f(model) for k, f in MFLOP.items()}, "sum_of_steps_ms": sum(ms.values()),
            "points_ms_per_theta": per_theta, "counted_mflop_per_R": model.flops_per_rayleigh() / 1e6}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.steps", description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batches", type=int, default=40)
    ap.add_argument("--quick", action="store_true", help="the small network of python -m bench --quick")
    ap.add_argument("--json", action="store_true", help="print the numbers as JSON")
    ap.add_argument("--activation", default="tanh", choices=sorted(set(ACTIVATIONS) - {"sqrt", "log"}),
                    help="the hidden layer's activation (default tanh, the reference network; not sqrt "
                         "or log, whose W @ x would need a positive bias)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    base = QUICK_REFERENCE if args.quick else REFERENCE
    model = dataclasses.replace(base, name=base.name.replace("tanh", args.activation), activation=args.activation)
    out = steps(model, args.batches)
    if args.json:
        print(json.dumps(out, indent=1))
        return 0
    print(f"{out['model']}, B = {out['batch']}, {out['threads']} thread(s): ms per theta (median of {args.batches})")
    for k, v in out["ms_per_theta"].items():
        mf = out["mflop"].get(k)
        print(f"  {k:18s} {v:7.3f}" + (f"   {mf:5.1f} MFLOP, {mf / v:6.1f} GFLOP/s" if mf else ""))
    print(f"  {'sum of the steps':18s} {out['sum_of_steps_ms']:7.3f}")
    print(f"  {'BatchedEvaluator.points':18s} {out['points_ms_per_theta']:7.3f}   "
          f"({out['counted_mflop_per_R']:.1f} counted MFLOP per R: "
          f"{out['counted_mflop_per_R'] / out['points_ms_per_theta']:.1f} GFLOP/s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
