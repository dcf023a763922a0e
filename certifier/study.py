"""`certify study SPEC... [--plot FILE.png|FILE.svg]`: run each spec as `certify` does (with the
result cache), then real gradient descent from its theta0 for longer than the witness, and draw
the loss curves on log-log axes with each spec's certified bound (docs/output.md, "certify study").

The descent is evidence, not proof, as the witness is (docs/theory.md, section 7): it uses the
witness's step (0.25 / beta at theta0, halved while the loss rises), compares the certified
bound with it wherever both are above the rounding-noise level, and reports the first violation.
The late log-log slope of its curve is fitted over its last decade of time above the noise level.

Exit codes: 0 when every spec ran and the plot (if asked) was written, whatever the verdicts
(certify SPEC... gives the verdicts' exit codes); 2 for a spec or usage error (a torch model that
calls sys.exit() included: E302); 4 for an internal error; 130 when interrupted (143 for SIGTERM).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from . import check as check_stage
from .analyse.levels import NOISE
from .analyse.threads import choose as choose_threads
from .analyse.witness import run_witness
from .arguments import build_parser as certify_parser
from .arguments import expand_specs
from .arguments import positive_float as _positive_float
from .arguments import positive_int as _positive_int
from .check.torch_model import exit_diagnostic
from .compile.problem import Problem
from .diagnostics import SpecError
from .diagnostics import render_text as render_diagnostic
from .parse import parse
from .pipeline import environment_problem
from .progress import interrupt_exit_code, terminate_as_interrupt
from .runs import Interrupted, run_one
from .runs import cache_for as _cache_for

EXIT_USAGE = 2
EXIT_INTERNAL = 4
EXIT_INTERRUPTED = 130
DEFAULT_STEPS = 20000
TITLE = "Over-parameterization exponentially slows down gradient descent"
FORMATS = ("text", "json")


@dataclass
class Descent:
    step: float
    steps: int
    time: float
    curve: list[list[float]]            # [t, L] at log-spaced steps
    noise: float
    slope: float | None                 # late log-log slope of L against t
    checked_until: float | None = None  # the bound held along the descent up to this time
    violation: dict | None = None       # {t, loss, bound}: the descent above the certified bound


@dataclass
class Entry:
    spec: str
    outcome: object                     # report.outcome.Outcome
    descent: Descent | None = None
    error: str | None = None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="certify study",
        description="Run each spec, then gradient descent from its θ0 beyond the witness, and draw "
                    "the loss curves on log-log axes with the certified bounds (sampled estimates, "
                    "not proofs).")
    p.add_argument("specs", metavar="SPEC", nargs="+", help="spec files, directories or globs")
    p.add_argument("--plot", metavar="FILE", default=None,
                   help="write the figure: FILE.png or FILE.svg (matplotlib: pip install 'certify[plot]')")
    p.add_argument("--steps", type=_positive_int, default=DEFAULT_STEPS, metavar="N",
                   help=f"gradient-descent steps per spec (default {DEFAULT_STEPS})")
    p.add_argument("--title", default=TITLE, help="the figure's title")
    p.add_argument("--format", choices=FORMATS, default="text", help="the table on stdout")
    p.add_argument("--budget", type=_positive_float, default=None, metavar="SECONDS",
                   help="time per spec for the analysis")
    p.add_argument("--no-cache", action="store_true", help="neither read nor write .certify_cache/")
    p.add_argument("--cache-dir", default=None, metavar="DIR")
    p.add_argument("--allow-python", action="store_true")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress display on stderr")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--debug", action="store_true", help="show the traceback of internal errors")
    return p


def _err(message: str) -> None:
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


# --- the descent ------------------------------------------------------------------------------------

def late_slope(curve: list[list[float]], noise: float) -> float | None:
    """Least-squares slope of log L against log t over the last decade of t above the noise level
    (at least 5 points); None when there are too few."""
    pts = [(t, L) for t, L in curve if t > 0 and L > noise]
    if len(pts) < 5:
        return None
    t_end = pts[-1][0]
    late = [(t, L) for t, L in pts if t >= t_end / 10]
    if len(late) < 5:
        return None
    import numpy as np

    x = np.log([t for t, _ in late])
    y = np.log([L for _, L in late])
    return float(np.polyfit(x, y, 1)[0])


def descend(path: str, source: str, result, steps: int, allow_python: bool, device: str) -> Descent:
    """Gradient descent from theta0 with the witness's step, `steps` steps at most; the bound of a
    certified result is compared along it."""


    checked = check_stage.check(parse(source, path), allow_python=allow_python)
    problem = Problem(checked, device)
    choose_threads(problem)
    L0 = float(problem.loss(problem.theta0))
    noise = max(NOISE * L0, getattr(problem, "loss_rounding", 0.0))
    eta = None
    if result is not None and result.witness is not None and result.witness.step:
        eta = float(result.witness.step)
    if eta is None:
        beta = problem.hessian_top_eigenvalue(problem.theta0)
        eta = 0.25 / beta if beta > 0 else 0.1
    # the witness's own loop: restarts with half the step while the loss rises, stops at the noise
    # level or once stalled (there is no bound here, so a stall ends it)
    w = run_witness(problem, eta, steps * eta, None, noise, None, steps, floor=0.0, restart=True)
    curve = [[float(t), float(L)] for t, L in w.curve]
    d = Descent(step=w.step, steps=w.steps, time=w.time, curve=curve, noise=noise,
                slope=late_slope(curve, noise))
    if result is not None and result.verdict == "certified" and result._bound is not None:
        d.checked_until = 0.0
        for t, L in curve:
            b = result.bound(t)
            if not (b >= noise and L >= noise):
                continue
            if L > b * (1 + 1e-9):
                d.violation = {"t": t, "loss": L, "bound": b}
                break
            d.checked_until = t
    return d


# --- the figure -------------------------------------------------------------------------------------

def summary(entry: Entry) -> str:
    """What certify said about one spec, in a few words for the legend."""
    r = entry.outcome.result
    if r is None:
        return "not run"
    phi = (r.desingularizer or {}).get("name", "?")
    requested = (r.desingularizer or {}).get("requested")
    forced = f"desingularizer {phi}: " if requested not in (None, "auto") else ""
    if r.verdict != "certified" or r._bound is None:
        kind = r.failing_region.kind if r.failing_region is not None else None
        why = {"no-kl-constant": "K -> 0 as L -> 0, no linear rate" if phi == "log" else "no KL constant",
               "unsampled-levels": "levels not reached"}.get(kind, kind or "")
        return f"{forced}{r.verdict}" + (f" ({why})" if why else "")
    asym = (r.rate or {}).get("asymptotic") or ""
    form = asym.split(", i.e. ")[-1].replace("L ~ ", "").replace(" (linear rate)", "") if asym else ""
    floor = (r.loss or {}).get("floor") or 0
    return f"{forced}certified {form}" + (f" to floor {floor:.0e}" if floor else "")


def _math(text: str) -> str:
    """t^-3 -> $t^{-3}$ and exp(-1.37 t) -> $e^{-1.37 t}$ for matplotlib's mathtext."""
    import re

    text = re.sub(r"exp\((-[0-9.e+-]+) t\)", r"$e^{\1\,t}$", text)
    text = re.sub(r"t\^(-?[0-9.]+)", r"$t^{\1}$", text)
    return text.replace("->", "→")


def plot(entries: list[Entry], path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.lines import Line2D

    fig, ax = plt.subplots(figsize=(9, 8), dpi=110)
    colors = plt.get_cmap("tab10").colors
    lows, ends, t_max = [], [], 0.0
    drawn: list[tuple[list, int]] = []          # (curve, legend index): a repeated curve is drawn once
    handles, labels = [], []
    for entry in (e for e in entries if e.descent is not None):
        d, r = entry.descent, entry.outcome.result
        name = (r.title if r is not None else None) or Path(entry.spec).stem
        same = next((k for curve, k in drawn if curve == d.curve), None)
        if same is not None:                    # the same problem from theta0 (another claim on it)
            labels[same] += f"; {_math(summary(entry))}"
            color = handles[same].get_color()
        else:
            color = colors[len(handles) % len(colors)]
            pts = [(t, L) for t, L in d.curve if t > 0 and L > d.noise]
            if not pts:
                continue
            t, L = np.array(pts).T
            ax.loglog(t, L, "-", color=color, lw=2.2)
            lows.append(L.min())
            ends.append((t.max(), L[-1]))
            t_max = max(t_max, t.max())
            handles.append(Line2D([], [], color=color, lw=2.2))
            labels.append(f"{name}: {_math(summary(entry))}")
            drawn.append((d.curve, len(handles) - 1))
        if r is not None and r.verdict == "certified" and r._bound is not None:
            pts = [t for t, _ in d.curve if t > 0]
            tb = np.logspace(math.log10(min(pts)), math.log10(max(pts)), 200)
            b = np.array([r.bound(x) for x in tb])
            keep = b > d.noise
            ax.loglog(tb[keep], b[keep], "--", color=color, lw=1.4)
        if d.violation is not None:
            ax.plot([d.violation["t"]], [d.violation["loss"]], "x", color=color, ms=10, mew=2)
    style = [Line2D([], [], color="0.2", lw=2.2), Line2D([], [], color="0.2", lw=1.4, ls="--")]
    style_labels = ["gradient descent from θ0 (real)", "certified bound (a sampled estimate, not a proof)"]
    slow = [(t, L) for t, L in ends if t >= t_max / 2]     # the curves still falling at the end
    if slow:
        # a guide of slope -3 ending a little below the slowest curves' ends
        t_end, L_end = min(slow, key=lambda p: p[1])
        tg = np.logspace(math.log10(t_end) - 1.5, math.log10(t_end), 20)
        ax.loglog(tg, L_end / 8 * (tg / t_end) ** -3, ":", color="0.35", lw=1.5)
        style.append(Line2D([], [], color="0.35", lw=1.5, ls=":"))
        style_labels.append("slope −3, i.e. L ∝ t⁻³ (guide)")
    if lows:
        ax.set_ylim(max(min(lows) / 3, 1e-16), None)
    ax.set_xlabel("gradient-flow time t   (gradient descent: t = k·η)")
    ax.set_ylabel("population loss  L(θ_t) = E[(f(x) − y(x))²]")
    ax.set_title(title, fontsize=13.5, pad=24)
    ax.text(0.5, 1.015, "teacher relu(v·x), students Σᵢ relu(wᵢ·x), x ~ N(0, I): the exact loss, in closed form",
            transform=ax.transAxes, ha="center", va="bottom", fontsize=9, color="0.3")
    ax.grid(True, which="major", color="0.88", lw=0.8)
    fig.legend(handles + style, labels + style_labels, fontsize=8.6, loc="lower center", frameon=False,
               bbox_to_anchor=(0.5, 0.01))
    fig.tight_layout(rect=(0, 0.03 + 0.028 * (len(handles) + len(style)), 1, 1))
    fig.savefig(path)
    plt.close(fig)


# --- output -----------------------------------------------------------------------------------------

def _num(x, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "—"
    return f"{x:.{digits}g}"


def table_text(entries: list[Entry]) -> str:
    rows = [("spec", "verdict", "φ", "certified rate", "descent: t, L(t)", "late slope", "bound vs descent")]
    for e in entries:
        r = e.outcome.result
        if r is None:
            rows.append((Path(e.spec).name, e.outcome.verdict, "", e.error or "", "", "", ""))
            continue
        phi = (r.desingularizer or {}).get("name", "")
        if phi == "power":
            phi += f"(a={_num(r.desingularizer['params'].get('alpha'))})"
        rate = (r.rate or {}).get("asymptotic") or "—"
        floor = (r.loss or {}).get("floor") or 0
        if floor and rate != "—":
            rate += f" (floor {floor:g})"
        d = e.descent
        desc = slope = check = ""
        if d is not None:
            last = d.curve[-1] if d.curve else [0, math.nan]
            desc = f"t = {_num(last[0])}, L = {_num(last[1])}"
            slope = _num(d.slope)
            if d.violation is not None:
                check = f"VIOLATED at t = {_num(d.violation['t'])}"
            elif d.checked_until is not None:
                check = f"holds to t = {_num(d.checked_until)}"
        elif e.error:                 # the descent failed (a spec error, or an internal error)
            desc = e.error
        rows.append((Path(e.spec).name, r.verdict, phi, rate, desc, slope, check))
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("─" * w for w in widths))
    lines.append("")
    lines.append("rates and bounds are sampled estimates (not proofs); the descent is real gradient descent "
                 "from θ0 with the witness's step; late slope: of log L against log t over the last decade")
    return "\n".join(lines) + "\n"


def table_json(entries: list[Entry]) -> str:
    out = []
    for e in entries:
        r = e.outcome.result
        item = {"spec": e.spec, "verdict": e.outcome.verdict, "error": e.error}
        if r is not None:
            item.update({"title": r.title, "desingularizer": r.desingularizer, "rate": {
                k: (r.rate or {}).get(k) for k in ("formula", "asymptotic", "kl_constant", "horizon")},
                "loss": r.loss, "mu": r.mu})
        if e.descent is not None:
            d = e.descent
            item["descent"] = {"step": d.step, "steps": d.steps, "time": d.time, "noise": d.noise,
                               "late_slope": d.slope, "checked_until": d.checked_until,
                               "violation": d.violation, "curve": d.curve}
        out.append(item)
    return json.dumps(out, indent=2, allow_nan=False, default=lambda x: None)


# --- main -------------------------------------------------------------------------------------------

def main_study(argv: list[str]) -> int:
    try:
        with terminate_as_interrupt():      # SIGTERM stops the study as Ctrl-C does (exit 143)
            return _main_study(argv)
    except Interrupted as stop:             # run_one's partial result: study has no partial table
        _err("certify study: interrupted")
        return stop.exit_code
    except KeyboardInterrupt as exc:
        _err("certify study: interrupted")
        return interrupt_exit_code(exc)


def _descent_error(path: str, source: str, exc: BaseException) -> list:
    """The diagnostics of a descent stopped by the spec's own code: E302 for a torch model's
    sys.exit(), the check's diagnostics for a SpecError; [] otherwise (an internal error, or a
    SystemExit where no torch model ran: certify's own bug, not the spec's)."""
    if isinstance(exc, SpecError):
        return list(exc.diagnostics)
    if not isinstance(exc, SystemExit):
        return []
    try:
        spec = parse(source, path)
    except Exception:
        return []
    if getattr(spec.model, "target", None) is None:   # not a model torch("mod:Net"): no user code ran
        return []
    return [exit_diagnostic(spec, exc)]


def _main_study(argv: list[str]) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else EXIT_USAGE)
    problem = environment_problem(args.device)
    if problem is not None:
        _err(f"certify study: error: {problem}")
        return EXIT_USAGE
    if args.plot is not None and Path(args.plot).suffix.lower() not in (".png", ".svg"):
        _err(f"certify study: error: --plot writes a .png or .svg file, not '{args.plot}'")
        return EXIT_USAGE
    if args.plot is not None:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            _err("certify study: error: --plot needs matplotlib: pip install 'certify[plot]'")
            return EXIT_USAGE
    specs, _ = expand_specs(args.specs)
    # the options of a plain `certify SPEC` run (every default of its parser), with ours on top

    run_args = certify_parser().parse_args([])
    for name in ("budget", "quiet", "device", "allow_python", "debug", "no_cache", "cache_dir"):
        setattr(run_args, name, getattr(args, name))
    cache = _cache_for(run_args)
    entries: list[Entry] = []
    code = 0
    try:
        for path, problem in specs:
            if problem is not None:
                _err(f"certify study: error: {problem}")
                code = max(code, EXIT_USAGE)
                continue
            t0 = time.perf_counter()
            outcome = run_one(path, run_args, cache)
            entry = Entry(path, outcome)
            entries.append(entry)
            if outcome.result is None:
                if outcome.internal is not None:
                    code = EXIT_INTERNAL
                    entry.error = outcome.internal
                    continue
                code = max(code, EXIT_USAGE)
                blocks = [render_diagnostic(dg, outcome.source if dg.path in (path, "<spec>") else None)
                          for dg in outcome.diagnostics]
                _err("\n\n".join(blocks))
                entry.error = "spec error"
                continue
            try:
                entry.descent = descend(path, outcome.source, outcome.result, args.steps, args.allow_python,
                                        args.device)
            except (Exception, SystemExit) as exc:  # the analysis ran; report the descent's failure, keep going
                if args.debug and isinstance(exc, SystemExit):   # a traceback, never the exit code of exc
                    raise RuntimeError(f"exit({exc.code!r}) called during the descent") from exc
                if args.debug:
                    raise
                diagnostics = _descent_error(path, outcome.source, exc)
                if diagnostics:       # the spec's own code (sys.exit in its torch model): E302, exit 2
                    _err("\n\n".join(render_diagnostic(dg, outcome.source) for dg in diagnostics))
                    entry.error = "spec error"
                    code = max(code, EXIT_USAGE)
                else:
                    entry.error = f"descent failed: {type(exc).__name__}: {exc}"
                    _err(f"certify study: internal error: {path}: {entry.error}")
                    _err("please report this; rerun with --debug for the traceback")
                    code = EXIT_INTERNAL
            if not args.quiet:
                _err(f"certify study: {path}: {outcome.verdict} ({time.perf_counter() - t0:.1f} s)")
    except KeyboardInterrupt as exc:
        _err("certify study: interrupted")
        return interrupt_exit_code(exc)
    sys.stdout.write(table_text(entries) if args.format == "text" else table_json(entries) + "\n")
    sys.stdout.flush()
    if args.plot is not None and any(e.descent is not None for e in entries):
        try:
            plot(entries, args.plot, args.title)
        except Exception as exc:
            if args.debug:
                raise
            _err(f"certify study: internal error while plotting: {type(exc).__name__}: {exc}")
            return EXIT_INTERNAL
        if not args.quiet:
            _err(f"certify study: wrote {os.path.abspath(args.plot)}")
    return code
