"""Speedup of --workers.

    python -m bench.workers [--workers 2] [--rounds 3] [--cells 16x1024,16x4096] [--out bench/workers.json]
    python -m bench.workers --in-process [--quick] [--rounds 3] [--out FILE]

Whole runs (the default; issue 21): `certify SPEC` against `certify --workers N SPEC`, each a fresh
process, start-up, worker start and every phase included, on two-layer tanh networks of the
given n x width (bench/whole.py's spec), in interleaved rounds; wall time, CPU time and peak RSS
by os.wait4 (bench/whole.py). A third candidate forces the workers on (CERTIFY_WORKERS=always,
analyse/parallel.py) to show what they cost where the estimate does not use them.
The figures are the ratios of one process's wall time to each candidate's, per round; the report's
note on the workers is kept.

--in-process: the sampled engine's region search and the sound mode's branch and bound, in this
process against N local worker processes, on the same work, after a warm-up run that starts the
worker processes and builds their problem: these figures exclude process start-up (reported
separately) and are not what a run gains. Every run's numbers are compared with one process's:
records (sampled) and mu, boxes and proof tree (sound) must be equal.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from .models import Model
from .run import machine, problem_of

ROOT = Path(__file__).resolve().parent.parent
SAMPLED = Model("two-layer tanh (width 1024, d 32, n 256)", "two_layer", n=256, d=32, h=1024)
QUICK_SAMPLED = Model("two-layer tanh (width 256, d 16, n 64)", "two_layer", n=64, d=16, h=256)
SOUND_SPEC = "specs/two_layer_tanh_sound.rq"


def sampled_search(problem, executor, samples: int) -> tuple[float, list]:
    """One search of a ball around theta0 (analyse/sampled.search_region); seconds and records."""
    from certifier.analyse.records import Records
    from certifier.analyse.regions import Ball
    from certifier.analyse.sampled import Budget, search_region
    from certifier.analyse.trajectory import SearchContext

    p0 = problem.point(problem.theta0)
    region = Ball(problem.theta0, 0.05 * float(problem.theta0.norm()))
    records = Records()
    ctx = SearchContext(gen=torch.Generator().manual_seed(0), eta=0.5 / problem.hessian_top_eigenvalue(problem.theta0),
                  noise=1e-16 * p0.loss, advance=lambda n=1: None, floor=0.0, executor=executor)
    t0 = time.perf_counter()
    search_region(problem, region, records, Budget(samples), ctx, 0.0)
    return time.perf_counter() - t0, list(zip(records.source, records.loss, records.value))


def sound_bnb(problem, executor, budget: int) -> tuple[float, tuple]:
    """Branch and bound on the sound spec's region (no target: tightening until `budget` boxes)."""
    from certifier.analyse.regions import Box
    from certifier.analyse.sound.engine import bound_mu

    size = float(problem.checked.region.options.get("halfwidth"))
    out = bound_mu(problem, Box(problem.theta0, size), 0.0, None, budget, seed=0, executor=executor)
    return out.bnb_seconds, (out.status, out.mu, out.boxes_evaluated, json.dumps(out.proof, sort_keys=True,
                                                                                  default=str))


def compare(name: str, fn, problem, workers: int, rounds: int) -> dict:
    from certifier.analyse.parallel import PoolExecutor

    t0 = time.perf_counter()
    pool = PoolExecutor(problem.checked, workers, "cpu", torch.get_num_threads())
    try:
        fn(problem, pool)                      # warm-up: starts the processes, builds their problem
        startup = time.perf_counter() - t0
        one, many, same = [], [], True
        for _ in range(rounds):
            s1, r1 = fn(problem, None)
            sn, rn = fn(problem, pool)
            one.append(s1)
            many.append(sn)
            same = same and r1 == rn
    finally:
        pool.close()
    return {"what": name, "workers": workers, "one_process_seconds": min(one), "workers_seconds": min(many),
            "speedup": min(one) / min(many), "startup_and_first_run_seconds": startup, "same_numbers": same,
            "rounds": rounds}




def whole(cells: list[tuple[int, int]], workers: int, rounds: int) -> list[dict]:
    import sys
    import tempfile

    from .whole import TWO_LAYER, measured

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n, h in cells:
            path = Path(tmp) / f"n{n}_width{h}.rq"
            path.write_text(TWO_LAYER.format(h=h, d=32, n=n))
            base = ["--no-cache", "-q", "--format", "json"]
            run = [sys.executable, "-m", "certifier", *base]
            argvs = {"one process": (run + [str(path)], None),
                     f"--workers {workers}": (run + ["--workers", str(workers), str(path)], None),
                     f"--workers {workers}, forced on": (run + ["--workers", str(workers), str(path)],
                                                         {"CERTIFY_WORKERS": "always"})}
            seen: dict = {k: [] for k in argvs}
            notes, mus = {}, {}
            for _ in range(rounds):
                for key, (argv, env) in argvs.items():
                    wall, cpu, rss, text, code = measured(argv, env)
                    doc = json.loads(text)
                    doc = doc[0] if isinstance(doc, list) else doc
                    said = [x for x in doc.get("notes", []) if x.startswith("--workers")]
                    seen[key].append({"wall": round(wall, 3), "cpu": round(cpu, 3), "rss_mb": round(rss, 1),
                                      "note": said[0] if said else None})
                    notes[key] = said
                    mus[key] = (doc["verdict"], doc.get("mu"))
            one = seen["one process"]
            row = {"n": n, "width": h, "d": 32, "parameters": 33 * h, "rounds": seen, "notes": notes,
                   "verdict_and_mu": mus,
                   "speedup_rounds": {k: [round(a["wall"] / b["wall"], 3) for a, b in zip(one, v)]
                                      for k, v in seen.items() if k != "one process"},
                   "cpu_ratio_rounds": {k: [round(a["cpu"] / b["cpu"], 3) for a, b in zip(one, v)]
                                        for k, v in seen.items() if k != "one process"}}
            rows.append(row)
            print(f"n={n} width={h}: " + "; ".join(
                f"{k}: {min(r['wall'] for r in v):.1f} s wall, {min(r['cpu'] for r in v):.1f} s CPU"
                for k, v in seen.items()) + f"; speedups per round {row['speedup_rounds']}; notes {notes}", flush=True)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.workers", description=__doc__.split("\n\n")[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="small sizes (seconds)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="torch threads per process (default 1; --in-process)")
    ap.add_argument("--cells", default="16x1024,16x4096", help="whole runs: n x width cells")
    ap.add_argument("--in-process", action="store_true", help="the searches alone, start-up excluded")
    ap.add_argument("--out", default=str(ROOT / "bench" / "workers.json"))
    args = ap.parse_args(argv)
    if not args.in_process:
        load = os.getloadavg()
        cells = [tuple(int(v) for v in c.split("x")) for c in args.cells.split(",")]
        rows = whole(cells, args.workers, args.rounds)
        out = {"machine": machine(torch.get_num_threads()), "what": "whole runs, start-up included",
               "load_before": load, "load_after": os.getloadavg(), "rows": rows}
        Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
        return 0
    torch.set_num_threads(args.threads)
    load = os.getloadavg()[0]
    model = QUICK_SAMPLED if args.quick else SAMPLED
    samples = 256 if args.quick else 1024
    problem = problem_of(model)
    from certifier.analyse.parallel import rows_per_unit

    rows = []
    row = compare(f"sampled search_region, {model.name}, samples={samples}",
                  lambda p, ex: sampled_search(p, ex, samples), problem, args.workers, args.rounds)
    row["rows_per_unit"] = rows_per_unit(problem)
    rows.append(row)
    from certifier import check
    from certifier.compile.problem import Problem
    from certifier.parse import parse

    path = ROOT / SOUND_SPEC
    sound_problem = Problem(check.check(parse(path.read_text(encoding="utf-8"), str(path))), "cpu")
    budget = 100 if args.quick else 600
    rows.append(compare(f"sound branch and bound, {SOUND_SPEC}, {budget} boxes",
                        lambda p, ex: sound_bnb(p, ex, budget), sound_problem, args.workers, args.rounds))
    out = {"machine": machine(args.threads), "load_before": load, "load_after": os.getloadavg()[0],
           "threads_per_process": args.threads, "rows": rows}
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    for r in rows:
        print(f"{r['what']}: 1 process {r['one_process_seconds']:.2f} s, {r['workers']} workers "
              f"{r['workers_seconds']:.2f} s, speedup {r['speedup']:.2f}x, same numbers: {r['same_numbers']} "
              f"(start-up and first run {r['startup_and_first_run_seconds']:.1f} s)")
    print(f"load average {load:.2f} before, {out['load_after']:.2f} after; written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
