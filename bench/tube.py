"""The sound trajectory tube's first segments, timed in fresh processes (issue 18).

    python -m bench.tube SPEC [--segments 30] [--rounds 2] [--against DIR] [--tolerance 0.001]

Each round builds the tube of SPEC (`method interval(route=trajectory)`, least squares) for
--segments segments in a fresh process at one thread, and reports the process's CPU seconds for the
tube (time.process_time) and where it ended (T, the tube radius, the loss bound). With --against DIR
(a checkout or `git worktree add DIR REV`) the same is run with DIR's certifier, interleaved round by
round, so the two builds share the machine's load. Results go to bench/tube.json (--out).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from .run import machine

ROOT = Path(__file__).resolve().parent.parent

SNIPPET = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
from certifier.check import check
from certifier.parse import parse
from certifier.compile.interval_model import IntervalModel
import certifier.analyse.sound.tube as T
assert T.__file__.startswith(sys.argv[1]), T.__file__
path, segments, tol = sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
model = IntervalModel(check(parse(open(path).read(), path)))
t0 = time.process_time()
tube = T.build(model, T.BallModel(model), cap=0.02, target_loss=0.0, max_segments=segments, h0=1 / 16,
               local_tol=tol)
print(json.dumps({"cpu": time.process_time() - t0, "segments": len(tube.segments), "T": tube.end_time,
                  "radius": tube.end_e, "loss_upper": tube.end_loss}))
"""


def one(root: Path, spec: Path, segments: int, tol: float) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", SNIPPET, str(root), str(spec.resolve()), str(segments), repr(tol)],
                         capture_output=True, text=True, env=env, cwd=root, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.tube", description=__doc__.split("\n")[0])
    ap.add_argument("spec")
    ap.add_argument("--segments", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--tolerance", type=float, default=0.001, help="the per-segment error (route tolerance)")
    ap.add_argument("--against", default=None, help="another checkout (e.g. a git worktree of an older commit)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "tube.json"))
    args = ap.parse_args(argv)
    builds = {"this": ROOT}
    if args.against:
        builds["against"] = Path(args.against).resolve()
    runs = {name: [] for name in builds}
    for r in range(args.rounds):
        for name, root in builds.items():
            res = one(root, Path(args.spec), args.segments, args.tolerance)
            runs[name].append(res)
            print(f"round {r + 1} {name} ({root}): {res['cpu']:.2f} s CPU, {res['segments']} segments to "
                  f"T = {res['T']:.4g}, radius {res['radius']:.5g}, L <= {res['loss_upper']:.5g}", flush=True)
    doc = {"machine": machine(1), "spec": args.spec, "segments": args.segments, "tolerance": args.tolerance,
           "builds": {name: str(root) for name, root in builds.items()}, "runs": runs}
    doc["machine"]["load_average_at_end"] = os.getloadavg()
    Path(args.out).write_text(json.dumps(doc, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
