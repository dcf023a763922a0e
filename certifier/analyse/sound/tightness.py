"""Tightness of the sound mode: sound mu / sampled mu per spec, and boxes per second.

    python -m certifier.analyse.sound.tightness specs/*_sound*.rq [--samples 2048]

Each spec is run as written (`method interval(...)`) and with its method line replaced by
`method sampled(samples=N, seed=0)`. The sampled mu is the engine's estimate (it may hold a
tangent-kernel lambda_min(K) <= R); "min R sampled" is the smallest R itself among the sampled
points, an upper bound of inf R; sound mu <= inf R, so sound / min R <= 1 measures what the proof
loses.
The table is docs/sound.md's.
"""
from __future__ import annotations

import argparse
import re
import time
from pathlib import Path

from ...pipeline import run_text


def measure(path: str, samples: int = 2048) -> dict:
    text = Path(path).read_text(encoding="utf-8")
    t0 = time.perf_counter()
    sound = run_text(text, path)
    t_sound = time.perf_counter() - t0
    sampled_text, count = re.subn(r"(?m)^method\s+interval\b.*$", f"method sampled(samples={samples}, seed=0)", text)
    sampled = None
    if count:
        t1 = time.perf_counter()
        sampled = run_text(sampled_text, path)
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
    ap.add_argument("specs", nargs="+")
    ap.add_argument("--samples", type=int, default=2048)
    args = ap.parse_args(argv)
    print("| spec | m | n | verdict (sound) | sound μ | sampled μ | sound / sampled | min R sampled | sound / min R "
          "| min R in the sound run | sound / that | boxes | boxes/s | seconds (sound / sampled) |")
    print("|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for path in args.specs:
        r = measure(path, args.samples)
        fmt = lambda v, f="{:.6g}": "—" if v is None else f.format(v)   # noqa: E731
        print(f"| {Path(path).name} | {r['parameters']} | {r['samples']} | {r['verdict']} | {fmt(r['sound_mu'])} | "
              f"{fmt(r['sampled_mu'])} | {fmt(r.get('ratio'), '{:.3f}')} | {fmt(r['sampled_min_R'])} | "
              f"{fmt(r.get('ratio_R'), '{:.3f}')} | {fmt(r['box_min_R'])} | {fmt(r.get('ratio_box'), '{:.3f}')} | "
              f"{fmt(r['boxes'], '{}')} | "
              f"{fmt(r['boxes_per_second'], '{:.0f}')} | {r['seconds_sound']:.1f} / "
              f"{fmt(r['seconds_sampled'], '{:.1f}')} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
