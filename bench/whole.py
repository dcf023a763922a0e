"""Whole runs of certify against the training loop a user would write for the same descent.

    python -m bench.whole [--only NAME] [--rounds 1] [--out bench/whole.json]   # issue 16's two networks
    python -m bench.whole --grid small [--rounds 2]     # n in {16, 64} x width in {256, 1024} (minutes)
    python -m bench.whole --grid full                   # n in {16, 64, 256} x width in {256, 1024, 4096} (hours)
    python -m bench.whole --cells 16x1024,64x256        # chosen cells, n x width

Each spec is written to a temporary folder and run as `python -m certifier --no-cache -q --format
json SPEC` in a fresh process: the wall time is the whole process (start-up, imports, parse, the
run, the report), with the verdict, mu and the report's own phase timings; its CPU time (user +
system) and peak resident memory come from os.wait4 on that process (the rusage of the process
and of the children it waited for: ru_maxrss is the peak of the largest one of them, not their
sum). The baseline is plain torch gradient descent by autograd (`loss.backward()` on the model
written in torch), in a fresh process measured the same way. Issue 16's runs take as many steps
as certify's witness took, at its step; the grid's run until the loss is at most the loss
certify's witness reached (the last point of its curve), at the witness's step, with at most 20
times its steps: the training a user would run to the same loss. Rounds alternate certify and
the baseline (interleaved: both see the same load); the smallest of each figure is kept.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .run import machine

ROOT = Path(__file__).resolve().parent.parent

TWO_LAYER = """spec "width {h}, d = {d}, n = {n}"
data {{
  x = normal(shape=[{n}, {d}], seed=0)
  y = sin(x[:, 0]) + 0.5 * x[:, 1]
}}
params {{
  W : [{h}, {d}] = normal(std=1/sqrt({d}), seed=1)
  a : [{h}]     = normal(std=1/sqrt({h}), seed=2)
}}
model f(x) = sum(a * tanh(W @ x))
loss least_squares
region ball(center=init, radius=auto)
method sampled(samples=4096, seed=3)
certify rate(floor=0, horizon=1e4)
"""
SPECS = {"width1024_n256": dict(h=1024, d=32, n=256),    # the README's benchmark size
         "width4096_n64": dict(h=4096, d=32, n=64)}
GOALS = {"width1024_n256": 180.0, "width4096_n64": 300.0}
GRID_N, GRID_WIDTH = (16, 64, 256), (256, 1024, 4096)
GRIDS = {"full": [(n, h) for n in GRID_N for h in GRID_WIDTH],
         "small": [(n, h) for n in (16, 64) for h in (256, 1024)]}

BASELINE = r"""
import sys, time, torch
from certifier.check import check
from certifier.compile.problem import Problem
from certifier.parse import parse
text = open(sys.argv[1]).read()
steps, eta = int(sys.argv[2]), float(sys.argv[3])
problem = Problem(check(parse(text, sys.argv[1])))     # the same data and theta0
x, y = problem.x, problem.y
start = problem.unflatten(problem.theta0)
W, a = (start[k].detach().clone().requires_grad_() for k in ("W", "a"))
target = float(sys.argv[4]) if len(sys.argv) > 4 else -1.0   # stop at this loss (the grid)
if len(sys.argv) > 5:
    torch.set_num_threads(int(sys.argv[5]))
t0 = time.perf_counter()
taken = 0
for _ in range(steps):
    loss = ((torch.tanh(x @ W.T) @ a - y) ** 2).mean()
    if loss.item() <= target:
        break
    W.grad = a.grad = None
    loss.backward()
    with torch.no_grad():
        W -= eta * W.grad
        a -= eta * a.grad
    taken += 1
print(time.perf_counter() - t0, loss.item(), taken)
"""


def measured(argv: list[str], env: dict | None = None) -> tuple[float, float, float, str, int]:
    """Run argv in a fresh process: wall seconds, CPU seconds (user + system) and peak RSS in MB
    (os.wait4's rusage: the process and the children it waited for), its stdout, its exit code."""
    with tempfile.TemporaryFile() as out:
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.DEVNULL, cwd=ROOT,
                                env=None if env is None else {**os.environ, **env})
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        text = out.read().decode()
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, text, proc.returncode


def certify_measured(path: Path, extra: list[str] = ()) -> dict:
    wall, cpu, rss, text, code = measured([sys.executable, "-m", "certifier", "--no-cache", "-q", "--format",
                                           "json", *extra, str(path)])
    doc = json.loads(text)
    doc = doc[0] if isinstance(doc, list) else doc
    return {"wall": wall, "cpu": cpu, "rss_mb": rss, "exit": code, "doc": doc}


def baseline_measured(path: Path, steps: int, eta: float, target: float) -> dict:
    """Plain GD at one torch thread and at all cores (torch's default), the faster of the two
    (by wall time): a user who tried both."""
    runs = []
    for threads in sorted({1, os.cpu_count() or 1}):
        wall, cpu, rss, text, code = measured([sys.executable, "-c", BASELINE, str(path), str(steps), str(eta),
                                               repr(target), str(threads)])
        loop, loss, taken = text.split()
        runs.append({"wall": wall, "cpu": cpu, "rss_mb": rss, "loop": float(loop), "loss": float(loss),
                     "steps": int(taken), "threads": threads})
    best = min(runs, key=lambda r: r["wall"])
    return dict(best, walls_by_threads={r["threads"]: round(r["wall"], 3) for r in runs})


def grid(cells: list[tuple[int, int]], rounds: int, tmp: str) -> dict:
    """Each cell: certify against plain GD to the loss certify's witness reached, interleaved."""
    out = {}
    for n, h in cells:
        name = f"n{n}_width{h}"
        path = Path(tmp) / f"{name}.rq"
        path.write_text(TWO_LAYER.format(h=h, d=32, n=n))
        runs, bases = [], []
        for _ in range(rounds):
            c = certify_measured(path)
            runs.append(c)
            w = c["doc"].get("witness") or {}
            curve = w.get("curve") or []
            target = curve[-1][1] if curve else 0.0
            bases.append(baseline_measured(path, 20 * max(1, int(w.get("steps") or 1)), float(w.get("step") or 0.0),
                                           target))
        doc = runs[-1]["doc"]
        w = doc.get("witness") or {}
        best = {k: min(r[k] for r in runs) for k in ("wall", "cpu", "rss_mb")}
        base = {k: min(b[k] for b in bases) for k in ("wall", "cpu", "rss_mb", "loop")}
        row = {"n": n, "width": h, "d": 32, "parameters": 33 * h, "verdict": doc["verdict"], "mu": doc.get("mu"),
               "certify": {k: round(v, 3) for k, v in best.items()},
               "certify_rounds": [{k: round(r[k], 3) for k in ("wall", "cpu", "rss_mb")} for r in runs],
               "phases": {k: round(v, 2) for k, v in (doc.get("timing") or {}).items()},
               "witness_steps": w.get("steps"), "witness_final_loss": (w.get("curve") or [[0, None]])[-1][1],
               "gd": {k: round(v, 3) for k, v in base.items()},
               "gd_rounds": [{k: round(b[k], 3) for k in ("wall", "cpu", "rss_mb")} for b in bases],
               "gd_steps": bases[-1]["steps"], "gd_final_loss": bases[-1]["loss"],
               "gd_walls_by_threads": [b["walls_by_threads"] for b in bases],
               # ratios of the same round (interleaved), then their smallest and largest
               "cpu_ratio_rounds": [round(r["cpu"] / b["cpu"], 3) for r, b in zip(runs, bases)],
               "rss_ratio": round(best["rss_mb"] / base["rss_mb"], 3)}
        out[name] = row
        print(f"{name}: certify {row['verdict']} mu={row['mu']:.4g}: {best['wall']:.1f} s wall, {best['cpu']:.1f} s CPU, "
              f"{best['rss_mb']:.0f} MB peak RSS; plain GD to loss {row['witness_final_loss']:.3g} "
              f"({row['gd_steps']} steps): {base['wall']:.1f} s wall, {base['cpu']:.1f} s CPU, {base['rss_mb']:.0f} MB; "
              f"CPU ratio per round {row['cpu_ratio_rounds']}", flush=True)
    return out


def certify(path: Path) -> tuple[float, dict]:
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "certifier", "--no-cache", "-q", "--format", "json", str(path)],
                         capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - t0
    doc = json.loads(out.stdout)
    return wall, doc[0] if isinstance(doc, list) else doc


def baseline(path: Path, steps: int, eta: float) -> tuple[float, float, float]:
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", BASELINE, str(path), str(steps), str(eta)],
                         capture_output=True, text=True, cwd=ROOT, check=True)
    wall = time.perf_counter() - t0
    loop, loss, _ = (float(v) for v in out.stdout.split())
    return wall, loop, loss


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.whole", description=__doc__.split("\n")[0])
    ap.add_argument("--only", choices=sorted(SPECS), default=None)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--grid", choices=sorted(GRIDS), default=None,
                    help="the grid of n x width against plain GD to the same loss (small: minutes; full: hours)")
    ap.add_argument("--cells", default=None, help="grid cells, e.g. 16x1024,64x256 (n x width)")
    ap.add_argument("--out", default=None, help="default bench/whole.json (bench/whole_grid.json with --grid/--cells)")
    args = ap.parse_args(argv)
    results = {"machine": machine(torch_threads()), "runs": {}}
    if args.grid or args.cells:
        cells = GRIDS[args.grid] if args.grid else [tuple(int(v) for v in c.split("x")) for c in args.cells.split(",")]
        with tempfile.TemporaryDirectory() as tmp:
            results["grid"] = grid(cells, args.rounds, tmp)
        results["machine"]["load_average_at_end"] = os.getloadavg()
        Path(args.out or ROOT / "bench" / "whole_grid.json").write_text(json.dumps(results, indent=2) + "\n")
        return 0
    args.out = args.out or str(ROOT / "bench" / "whole.json")
    with tempfile.TemporaryDirectory() as tmp:
        for name, size in SPECS.items():
            if args.only and name != args.only:
                continue
            path = Path(tmp) / f"{name}.rq"
            path.write_text(TWO_LAYER.format(**size))
            best, base, doc = None, None, None
            for _ in range(args.rounds):
                wall, doc = certify(path)
                best = wall if best is None else min(best, wall)
                w = doc.get("witness") or {}
                b = baseline(path, int(w.get("steps", 0)), float(w.get("step", 0.0)))
                base = b if base is None or b[0] < base[0] else base
            run = {"spec": size, "whole_seconds": round(best, 2), "goal_seconds": GOALS[name],
                   "verdict": doc["verdict"], "mu": doc.get("mu"), "mu_source": doc.get("mu_source"),
                   "phases": {k: round(v, 2) for k, v in (doc.get("timing") or {}).items()},
                   "witness_steps": (doc.get("witness") or {}).get("steps"),
                   "baseline_whole_seconds": round(base[0], 2), "baseline_loop_seconds": round(base[1], 2),
                   "baseline_final_loss": base[2]}
            results["runs"][name] = run
            print(f"{name}: {run['verdict']} mu={run['mu']:.4g} in {run['whole_seconds']} s whole "
                  f"(goal {GOALS[name]:.0f} s; phases {run['phases']}); plain torch GD for the witness's "
                  f"{run['witness_steps']} steps: {run['baseline_whole_seconds']} s whole, "
                  f"{run['baseline_loop_seconds']} s in the loop", flush=True)
    results["machine"]["load_average_at_end"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    return 0


def torch_threads() -> int:
    import torch
    return torch.get_num_threads()


if __name__ == "__main__":
    raise SystemExit(main())
