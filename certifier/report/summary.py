"""The summary table printed after the reports of a run over several specs:
one row per spec (spec, verdict, μ, time), then the run's exit code and why."""
from __future__ import annotations

import io

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from .outcome import Outcome, effective_code, run_exit_code
from .text import VERDICT_STYLE, num

_WORD = {0: "certified", 1: "refuted", 2: "error", 3: "inconclusive", 4: "internal error"}


def verdict_cell(outcome: Outcome) -> str:
    if outcome.internal is not None:
        return "internal error"
    if outcome.result is None:
        codes = sorted({d.code for d in outcome.diagnostics})
        return "error" + (f" {', '.join(codes)}" if codes else "")
    r = outcome.result
    return r.verdict + ("" if r.sound else " (estimate)")


def render_summary(outcomes: list[Outcome], console: Console, fail_on: str = "inconclusive") -> None:
    code = run_exit_code(outcomes, fail_on)
    console.print()
    console.rule(Text(f"Summary · {len(outcomes)} spec{'s' if len(outcomes) != 1 else ''} · exit {code}",
                      style="bold"), align="left")
    t = Table(box=box.SIMPLE_HEAD, show_edge=False, padding=(0, 1), header_style="bold")
    t.add_column("spec", justify="left", overflow="fold")
    t.add_column("verdict", justify="left", no_wrap=True)
    t.add_column("failure", justify="left", no_wrap=True)
    t.add_column("μ", justify="right", no_wrap=True)
    t.add_column("time", justify="right", no_wrap=True)
    t.add_column("exit", justify="right", no_wrap=True)
    for o in outcomes:
        mu = o.result.mu if o.result is not None else None
        time = "cached" if o.cached else f"{o.seconds:.2f} s"
        eff = effective_code(o, fail_on)
        exit_text = str(o.exit_code) if eff == o.exit_code else f"{o.exit_code}→{eff}"
        t.add_row(Text(o.spec), Text(verdict_cell(o), style=VERDICT_STYLE.get(o.verdict, "")),
                  Text(o.failing_kind or ""), Text(num(mu)), Text(time), Text(exit_text))
    console.print(t)
    counts: dict[str, int] = {}
    for o in outcomes:
        key = "internal error" if o.internal is not None else o.verdict
        counts[key] = counts.get(key, 0) + 1
    order = ("certified", "refuted", "inconclusive", "error", "internal error")
    console.print(Text(" · ".join(f"{counts[k]} {k}" for k in order if k in counts)))
    why = f"exit {code}"
    if outcomes:
        why += f": {_WORD.get(code, str(code))} is the worst outcome (precedence 4 > 2 > 1 > 3 > 0)"
    console.print(Text(why, style="dim"))
    if fail_on == "refuted":
        console.print(Text("--fail-on refuted: inconclusive counts as 0", style="dim"))
    if any(o.result is not None and not o.result.sound for o in outcomes):
        console.print(Text("(estimate): sampled verdicts are ESTIMATES, not proofs", style="dim"))


def summary_plain(outcomes: list[Outcome], width: int = 100, fail_on: str = "inconclusive") -> str:
    console = Console(file=io.StringIO(), width=width, color_system=None, force_terminal=False,
                      highlight=False, emoji=False, record=True)
    render_summary(outcomes, console, fail_on)
    return "\n".join(line.rstrip() for line in console.export_text().splitlines()) + "\n"
