"""Whole runs of certify on the large networks of issue 16, against the training loop a user would
write for the same descent.

    python -m bench.whole [--only NAME] [--rounds 1] [--out bench/whole.json]

Each spec is written to a temporary folder and run as `python -m certifier --no-cache -q --format
json SPEC` in a fresh process: the wall time is the whole process (start-up, imports, parse, the
run, the report), with the verdict, mu and the report's own phase timings. The baseline is plain
torch gradient descent by autograd (`loss.backward()` on the model written in torch) for as many
steps as certify's witness took, at its step: what training the same network to the same point
costs without certify. Rounds alternate certify and the baseline; the smallest time of each is kept.
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
t0 = time.perf_counter()
for _ in range(steps):
    loss = ((torch.tanh(x @ W.T) @ a - y) ** 2).mean()
    W.grad = a.grad = None
    loss.backward()
    with torch.no_grad():
        W -= eta * W.grad
        a -= eta * a.grad
print(time.perf_counter() - t0, float(loss))
"""


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
    loop, loss = (float(v) for v in out.stdout.split())
    return wall, loop, loss


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.whole", description=__doc__.split("\n")[0])
    ap.add_argument("--only", choices=sorted(SPECS), default=None)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--out", default=str(ROOT / "bench" / "whole.json"))
    args = ap.parse_args(argv)
    results = {"machine": machine(torch_threads()), "runs": {}}
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
