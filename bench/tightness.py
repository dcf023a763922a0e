"""Tightness of the sound mode: sound mu / sampled mu per spec, and boxes per second.

    python -m bench.tightness specs/*_sound*.rq specs/practice/*_sound.rq --allow-python [--samples 2048]

Each spec is run as written (`method interval(...)`) and with its method line replaced by
`method sampled(samples=N, seed=0)`. The sampled mu is the engine's estimate (it may hold a
tangent-kernel lambda_min(K) <= R); "min R sampled" is the smallest R itself among the sampled
points, an upper bound of inf R; sound mu <= inf R, so sound / min R <= 1 measures what the proof
loses.
`--allow-python` lets specs with `model torch(...)` import their module (both runs). The first line
printed names the machine; the last column is the 1-minute load average when the row finished.
The table is docs/sound.md's. `--ball` prints the ball rule's table (wide networks, docs/sound.md).
"""
from __future__ import annotations

import argparse
import os
import platform
import re
import time
from pathlib import Path

from certifier.compile.kernel import jacobian
from certifier.pipeline import RunOptions, run_text


def machine() -> str:
    """The CPU's model name, core count and Python/numpy versions (for the table's caption)."""
    import numpy

    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores, Python {platform.python_version()}, numpy {numpy.__version__}"


def measure(path: str, samples: int = 2048, allow_python: bool = False) -> dict:
    text = Path(path).read_text(encoding="utf-8")
    options = (lambda: RunOptions(allow_python=True)) if allow_python else (lambda: None)
    t0 = time.perf_counter()
    sound = run_text(text, path, options())
    t_sound = time.perf_counter() - t0
    sampled_text, count = re.subn(r"(?m)^method\s+interval\b.*$", f"method sampled(samples={samples}, seed=0)", text)
    sampled = None
    if count:
        t1 = time.perf_counter()
        sampled = run_text(sampled_text, path, options())
        t_sampled = time.perf_counter() - t1
    row = {"spec": path, "parameters": sound.problem.get("parameters"), "samples": sound.problem.get("samples"),
           "verdict": sound.verdict, "sound_mu": sound.mu,
           "sampled_mu": sampled.mu if sampled is not None else None,
           "sampled_verdict": sampled.verdict if sampled is not None else None,
           # the smallest R itself among the sampled points (tangent-kernel records hold lambda_min(K) <= R)
           "sampled_min_R": min((s.minimum for s in sampled.mu_sources
                                 if s.source != "tangent-kernel" and s.minimum is not None), default=None)
           if sampled is not None else None,
           "boxes": sound.method.get("boxes_evaluated"), "boxes_per_second": sound.method.get("boxes_per_second"),
           "seconds_sound": t_sound, "seconds_sampled": t_sampled if sampled is not None else None}
    if row["sound_mu"] and row["sampled_mu"]:
        row["ratio"] = row["sound_mu"] / row["sampled_mu"]
    row["box_min_R"] = (sound.proof or {}).get("min_rayleigh_seen")
    if row["sound_mu"] and row["box_min_R"]:
        row["ratio_box"] = row["sound_mu"] / row["box_min_R"]
    if row["sound_mu"] and row["sampled_min_R"]:
        row["ratio_R"] = row["sound_mu"] / row["sampled_min_R"]
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("specs", nargs="*")
    ap.add_argument("--samples", type=int, default=2048)
    ap.add_argument("--ball", action="store_true", help="the ball rule's table on wide networks instead")
    ap.add_argument("--allow-python", action="store_true", help="let model torch(...) specs import their module")
    args = ap.parse_args(argv)
    if args.ball:
        main_ball()
        return 0
    print(f"machine: {machine()}; load average at the start {os.getloadavg()[0]:.2f}")
    print("| spec | m | n | verdict (sound) | sound μ | sampled μ | sound / sampled | min R sampled | sound / min R "
          "| min R in the sound run | sound / that | boxes | boxes/s | seconds (sound / sampled) | load |")
    print("|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for path in args.specs:
        r = measure(path, args.samples, args.allow_python)
        fmt = lambda v, f="{:.6g}": "—" if v is None else f.format(v)   # noqa: E731
        n = r["samples"] if r["samples"] is not None else "population"
        print(f"| {Path(path).name} | {r['parameters']} | {n} | {r['verdict']} | {fmt(r['sound_mu'])} | "
              f"{fmt(r['sampled_mu'])} | {fmt(r.get('ratio'), '{:.3f}')} | {fmt(r['sampled_min_R'])} | "
              f"{fmt(r.get('ratio_R'), '{:.3f}')} | {fmt(r['box_min_R'])} | {fmt(r.get('ratio_box'), '{:.3f}')} | "
              f"{fmt(r['boxes'], '{}')} | "
              f"{fmt(r['boxes_per_second'], '{:.0f}')} | {r['seconds_sound']:.1f} / "
              f"{fmt(r['seconds_sampled'], '{:.1f}')} | {os.getloadavg()[0]:.1f} |", flush=True)
    return 0



# --- the ball rule on wide networks (docs/sound.md, "The ball rule") ----------------------------------
BALL_SPEC = """spec "wide two-layer tanh network near a teacher (width {h})"
data {{
  x = normal(shape=[{n}, 3], seed=0)
  W1 = normal(shape=[3, {h}], seed=1) + 0.01 * normal(shape=[3, {h}], seed=3)
  a1 = normal(shape=[{h}], seed=2) + 0.01 * normal(shape=[{h}], seed=4)
  y = tanh(x @ W1) @ a1 / sqrt({h})
}}
params {{
  W : [3, {h}] = normal(seed=1)
  a : [{h}] = normal(seed=2)
}}
model f(x) = a @ tanh(x @ W) / sqrt({h})
loss least_squares
region ball(center=init, radius={r})
method interval(boxes=100, seed=0)
certify rate(floor=0, horizon=100)
"""


def measure_ball(h: int, r: float = 0.15, n: int = 4, pairs: int = 100, seed: int = 0) -> dict:
    """The ball rule on the width-h teacher-student network: its numbers, against sampled pairs (the
    largest ||J(t1) - J(t2)||_2 / ||t1 - t2|| seen, a lower bound of the true Lipschitz constant) and
    sampled points (the smallest lambda_min(K) seen, an upper bound of its infimum on the ball)."""
    import numpy as np
    import torch

    from certifier import check
    from certifier.compile.problem import Problem
    from certifier.parse import parse
    from certifier.pipeline import run_text

    text = BALL_SPEC.format(h=h, r=r, n=n)
    t0 = time.perf_counter()
    result = run_text(text, f"wide{h}.rq")
    seconds = time.perf_counter() - t0
    ball = (result.proof or {}).get("facts", {}).get("ball", {})
    problem = Problem(check.check(parse(text, f"wide{h}.rq")))
    rng = np.random.default_rng(seed)
    c = problem.theta0.numpy()

    def point():
        u = rng.standard_normal(c.size)
        return c + u * (r * rng.random() ** (1 / c.size) / np.linalg.norm(u))
    worst, lam = 0.0, np.inf
    for _ in range(pairs):
        t1, t2 = point(), point()
        J1 = jacobian(problem, torch.tensor(t1)).numpy()
        J2 = jacobian(problem, torch.tensor(t2)).numpy()
        worst = max(worst, np.linalg.norm(J1 - J2, 2) / np.linalg.norm(t1 - t2))
        lam = min(lam, float(np.linalg.eigvalsh(J1 @ J1.T / problem.n)[0]))
    return {"width": h, "parameters": problem.m, "verdict": result.verdict, "mu": result.mu,
            "sigma_center": ball.get("sigma_center_lower"), "lip": ball.get("lip_jacobian"),
            "drift": ball.get("drift"), "lip_sampled": worst, "lambda_sampled": lam,
            "rho": result.region.get("path_length_bound"), "seconds": seconds}


def main_ball(widths=(64, 256, 1024, 4096)) -> None:
    print("| width h | m | verdict | σ_min(J_c) ≥ | Lip_J | Lip_J · √h | largest sampled ratio | Lip_J / sampled "
          "| Lip_J r | μ (ball rule) | min λ_min(K) sampled | μ / that | ρ | seconds |")
    print("|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for h in widths:
        r = measure_ball(h)
        ratio = r["mu"] / r["lambda_sampled"] if r["mu"] else None
        print(f"| {h} | {r['parameters']} | {r['verdict']} | {r['sigma_center']:.4g} | {r['lip']:.4g} | "
              f"{r['lip'] * h ** 0.5:.3g} | {r['lip_sampled']:.4g} | {r['lip'] / r['lip_sampled']:.1f} | "
              f"{r['drift']:.4g} | {r['mu'] if r['mu'] is None else format(r['mu'], '.4g')} | "
              f"{r['lambda_sampled']:.4g} | {'—' if ratio is None else format(ratio, '.3f')} | "
              f"{'—' if r['rho'] is None else format(r['rho'], '.4g')} | {r['seconds']:.1f} |", flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
