"""The 3-layer MLP's engine (its generic path) against what a user would write, alone: a user's
torch.autograd.grad loop and hand-batched torch (bench/models.py), in interleaved rounds in one
process, and across commits in alternating processes (issue 21; docs/performance.md, "The generic
path: the model over the data").

    python -m bench.baselines --threads 1                 # this checkout, one thread
    python -m bench.baselines --ab /tmp/wt --pairs 3      # a checkout of an older commit
                                                          # (git worktree add -f /tmp/wt REV) and this
                                                          # one in turn, 3 processes each, then the table

One thread is timed by process CPU time, more by wall time; --quiet 0.15 starts each round of
more threads only once the machine's other work uses under 15 % of its CPUs (at most 90 s of
waiting). Each turn runs a candidate 5 times on its batch (the engine's batch, its mean counts).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

CALLS = 5


def busy(window: float = 0.3) -> float:
    """The fraction of the machine's CPU time not idle over `window` seconds (/proc/stat)."""
    def read():
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        return sum(v), v[3] + v[4]
    t0, i0 = read()
    time.sleep(window)
    t1, i1 = read()
    return 1.0 - (i1 - i0) / max(1, t1 - t0)


def wait_quiet(limit: float, give_up: float = 90.0) -> float:
    start = time.monotonic()
    while True:
        b = busy()
        if b < limit or time.monotonic() - start > give_up:
            return b


def measure(root: str, threads: int, rounds: int, quiet: float | None, quick: bool = False) -> dict:
    """R/s of the engine, the autograd loop and hand-batched torch on the bench's MLP, the engine
    (certifier) imported from `root`."""
    sys.path.insert(0, root)
    import torch

    import certifier
    from bench.models import BASELINES, DEEP, QUICK_DEEP
    from bench.run import perturbed, problem_of
    from certifier.compile.batched import BatchedEvaluator

    if not certifier.__file__.startswith(str(Path(root).resolve())):
        raise SystemExit(f"certifier comes from {certifier.__file__}, not {root}")
    torch.set_num_threads(threads)
    clock = time.process_time if threads == 1 else time.perf_counter
    model = QUICK_DEEP if quick else DEEP
    problem = problem_of(model)
    ev = BatchedEvaluator(problem)
    batch = ev.chunk_size()
    thetas = perturbed(problem, batch)
    loop_n = min(batch, 8)
    user = {k: BASELINES[k](model, problem.x, problem.y) for k in ("autograd_loop", "hand_batched")}
    fns = {"engine": lambda: ev.points(thetas), "autograd_loop": lambda: user["autograd_loop"](thetas[:loop_n]),
           "hand_batched": lambda: user["hand_batched"](thetas)}
    count = {"engine": batch, "autograd_loop": loop_n, "hand_batched": batch}
    for fn in fns.values():
        fn()
    times: dict = {k: [] for k in fns}
    quiet_seen = []
    for _ in range(rounds):
        if quiet is not None and threads > 1:
            quiet_seen.append(wait_quiet(quiet))
        for k, fn in fns.items():
            t = clock()
            for _ in range(CALLS):
                fn()
            times[k].append((clock() - t) / CALLS)
    return {"threads": threads, "path": ev.path, "batch": batch, "busy_before_rounds": quiet_seen,
            **{k: {"median": count[k] / statistics.median(v), "best": count[k] / min(v)} for k, v in times.items()}}


def table(rows: list[dict]) -> str:
    out = ["| checkout | path, B | engine R/s | autograd loop | hand-batched | engine / loop | engine / hand |",
           "|---|---|---:|---:|---:|---:|---:|"]
    for label in dict.fromkeys(r["label"] for r in rows):
        rs = [r for r in rows if r["label"] == label]
        med = {k: statistics.median(r[k]["median"] for r in rs) for k in ("engine", "autograd_loop", "hand_batched")}
        ratios = [", ".join(f"{r['engine']['median'] / r[k]['median']:.2f}" for r in rs) for k in ("autograd_loop", "hand_batched")]
        out.append(f"| {label} | {rs[0]['path']}, {rs[0]['batch']} | {med['engine']:.1f} | {med['autograd_loop']:.1f} | "
                   f"{med['hand_batched']:.1f} | {ratios[0]} | {ratios[1]} |")
    loads = [round(r["load"][0], 2) for r in rows]
    out.append(f"(the median over {len(rows) // max(1, len(set(r['label'] for r in rows)))} processes each; "
               f"1-minute load averages {min(loads)} to {max(loads)})")
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.baselines", description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--quiet", type=float, default=None, help="wait for the machine's other work to fall under this "
                    "fraction of its CPUs before each round (more than one thread)")
    ap.add_argument("--root", default=None, help="the checkout whose engine to time (default: this one)")
    ap.add_argument("--label", default=None)
    ap.add_argument("--json", action="store_true", help="print one JSON line (the --ab mode's processes)")
    ap.add_argument("--ab", default=None, metavar="OLD_ROOT", help="alternate processes of OLD_ROOT and this checkout")
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="the tiny MLP (checks the harness)")
    args = ap.parse_args(argv)
    here = str(Path(__file__).resolve().parent.parent)
    if args.ab:
        rows = []
        for _ in range(args.pairs):
            for root, label in ((args.ab, "before"), (here, "now")):
                cmd = [sys.executable, "-m", "bench.baselines", "--root", root, "--label", label, "--json",
                       "--threads", str(args.threads), "--rounds", str(args.rounds)]
                if args.quiet is not None:
                    cmd += ["--quiet", str(args.quiet)]
                if args.quick:
                    cmd.append("--quick")
                proc = subprocess.run(cmd, cwd=here, capture_output=True, text=True, check=True)
                rows.append(json.loads(proc.stdout))
                print(proc.stdout.strip(), file=sys.stderr, flush=True)
        print(table(rows))
        return 0
    root = str(Path(args.root).resolve()) if args.root else here
    row = {"label": args.label or root, "load": os.getloadavg(),
           **measure(root, args.threads, args.rounds, args.quiet, args.quick)}
    row["load_end"] = os.getloadavg()
    print(json.dumps(row) if args.json else table([row]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
