"""The sampled engine on a device (--device cuda) next to this machine's CPU, in one run.

    python -m bench.device [--device cuda] [--quick] [--out bench/device.json]

On DEVICE, timed with the device synchronised after each call, in interleaved rounds:
- the matrix-multiply peak (float64 and float32 squares), the engine's FLOP rate's reference;
- R/s of the batched evaluator (compile/batched.py; the two-layer network takes its fast path,
  compile/two_layer.py) on the reference two-layer tanh network and the 3-layer MLP of
  `python -m bench`: at the engine's own batch (sized for the CPU's caches) and at larger batches
  (which a GPU needs to fill itself), float64 (the engine's) and float32 (an estimate);
- the naive full-Jacobian tangent kernel's R/s, on the device;
- how far the device's rows are from the CPU's (L, R, the gradient; the same thetas);
- whole runs of specs/two_layer_tanh.rq (`certify SPEC --device D` through the pipeline) on the
  CPU and on the device: seconds, verdict and mu.
With `--device cpu` it measures the CPU in the same way, which checks the harness anywhere
(tests/test_performance.py). FLOPs are counted as in bench/models.py.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from .models import DEEP, QUICK_DEEP, QUICK_REFERENCE, REFERENCE
from .run import ROOT, interleaved, machine, naive, perturbed, problem_of

SPEC = "specs/two_layer_tanh.rq"


def _clock(device: str):
    if device.startswith("cuda"):
        def clock():
            torch.cuda.synchronize()
            return time.perf_counter()
        return clock
    return time.perf_counter


def _peak(device: str, size: int, rounds: int, clock) -> dict:
    mats = {k: torch.randn(size, size, dtype=dt, device=device) for k, dt in (("float64", torch.float64),
                                                                             ("float32", torch.float32))}
    best = interleaved({k: (lambda a=a: a @ a) for k, a in mats.items()}, rounds, clock=clock)
    return {k: {"gflops": 2.0 * size ** 3 / t / 1e9, "size": size} for k, t in best.items()}


def _rows_against_cpu(cpu_problem, problem, thetas) -> dict:
    from certifier.compile.batched import BatchedEvaluator

    a = BatchedEvaluator(cpu_problem).points(thetas)
    b = BatchedEvaluator(problem).points(thetas.to(problem.device))
    rel = lambda x, y: abs(x - y) / max(abs(x), abs(y), 1e-300)   # noqa: E731
    return {"max_rel_diff_L": max(rel(p.loss, q.loss) for p, q in zip(a, b)),
            "max_rel_diff_R": max(rel(p.rayleigh, q.rayleigh) for p, q in zip(a, b)),
            "max_rel_diff_grad": max(float((p.grad - q.grad.cpu()).norm() / p.grad.norm()) for p, q in zip(a, b))}


def evaluators(model, device: str, batches: list[int], rounds: int, clock) -> dict:
    from certifier.compile.batched import BatchedEvaluator

    problem = problem_of(model, device)
    flops = model.flops_per_rayleigh()
    ev64, ev32 = BatchedEvaluator(problem), BatchedEvaluator(problem, dtype=torch.float32)
    for ev in (ev64, ev32):     # the first-use check against Problem.point, before _points is timed
        if not ev.batched:
            raise SystemExit(f"{model.name}: the evaluator does not batch on {device} ({ev.reason})")
    own = ev64.chunk_size()
    sizes = sorted({own, *batches})
    fns, count = {}, {}
    for b in sizes:
        th = perturbed(problem, b).to(device)
        # _points: one batch of exactly b thetas (points() would cut it into the engine's chunks)
        fns[f"float64_B{b}"] = (lambda th=th: ev64._points(th))
        fns[f"float32_B{b}"] = (lambda th=th.float(): ev32._points(th))
        count[f"float64_B{b}"] = count[f"float32_B{b}"] = b
    best = interleaved(fns, rounds, clock=clock)
    rows = {k: {"batch": count[k], "R_per_s": count[k] / t, "gflops": count[k] / t * flops / 1e9} for k, t in best.items()}
    return {"name": model.name, "parameters": problem.m, "path": ev64.path, "engine_batch": own, "flops_per_R": flops,
            "rows": rows, "naive": naive(problem, 1),
            "against_cpu": _rows_against_cpu(problem_of(model, "cpu"), problem, perturbed(problem_of(model), 4))}


def whole_runs(device: str) -> dict:
    from certifier import pipeline

    out = {}
    for dev in dict.fromkeys(("cpu", device)):
        t0 = time.perf_counter()
        r = pipeline.run_file(str(ROOT / SPEC), pipeline.RunOptions(device=dev))
        out[dev] = {"seconds": time.perf_counter() - t0, "verdict": r.verdict, "mu": r.mu,
                    "evaluations": r.method.get("evaluations")}
    return {"spec": SPEC, **out}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.device", description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--quick", action="store_true", help="small sizes (seconds): checks the harness")
    ap.add_argument("--rounds", type=int, default=None)
    ap.add_argument("--out", default=str(ROOT / "bench" / "device.json"))
    args = ap.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(f"python -m bench.device: error: --device {args.device}: no CUDA device is available", file=sys.stderr)
        return 2
    clock = _clock(args.device)
    rounds = args.rounds or (1 if args.quick else 5)
    models = [QUICK_REFERENCE, QUICK_DEEP] if args.quick else [REFERENCE, DEEP]
    batches = [4, 16] if args.quick else [64, 256, 1024]
    info = machine(torch.get_num_threads())
    if args.device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(torch.device(args.device))
    out = {"command": "python -m bench.device " + " ".join(argv if argv is not None else sys.argv[1:]),
           "device": args.device, "machine": info,
           "peak": _peak(args.device, 512 if args.quick else 8192, rounds, clock),
           "models": [evaluators(m, args.device, batches, rounds, clock) for m in models],
           "whole_run": whole_runs(args.device)}
    Path(args.out).write_text(json.dumps(out, indent=1, default=float) + "\n", encoding="utf-8")
    p64, p32 = out["peak"]["float64"]["gflops"], out["peak"]["float32"]["gflops"]
    print(f"{args.device} ({info.get('gpu', info['cpu'])}): matmul peak float64 {p64:.0f}, float32 {p32:.0f} GFLOP/s")
    for m in out["models"]:
        print(f"{m['name']} ({m['path']}, engine batch {m['engine_batch']}; naive {m['naive']['R_per_s']:.2f} R/s; "
              f"rows against the CPU: R {m['against_cpu']['max_rel_diff_R']:.1e}, "
              f"grad {m['against_cpu']['max_rel_diff_grad']:.1e})")
        for k, r in m["rows"].items():
            peak = p32 if k.startswith("float32") else p64
            print(f"  {k:14s} {r['R_per_s']:10.1f} R/s {r['gflops']:9.1f} GFLOP/s {100 * r['gflops'] / peak:5.1f}% of peak")
    w = out["whole_run"]
    for dev in dict.fromkeys(("cpu", args.device)):
        print(f"{w['spec']} on {dev}: {w[dev]['seconds']:.1f} s, {w[dev]['verdict']}, mu {w[dev]['mu']!r}, "
              f"{w[dev]['evaluations']} evaluations")
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
