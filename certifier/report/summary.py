"""One line per spec, and the run's totals: the summary printed after the reports of a run over
several specs, and the verdict line printed last after the report of a single spec.

    specs/two_layer_tanh.rq   certified     estimate  μ 0.125 · L ~ exp(-0.5 t)  4.25 s  exit 0

Numbers as in the report (report/text.py): 6 significant digits, μ rounded down in the sound mode.

Lines are plain columns (padded, never wrapped): a path is never broken, whatever the width of
the terminal, so it can be copied and grepped."""
from __future__ import annotations

import io
import re

from rich.console import Console
from rich.text import Text

from .outcome import Outcome, effective_code, run_exit_code
from .text import DIGITS, VERDICT_STYLE, asymptotic_text, lower_text, num, sound_mode

_WORD = {0: "certified", 1: "refuted", 2: "error", 3: "inconclusive", 4: "internal error"}
PATH_WIDTH = 48
ORDER = ("certified", "refuted", "inconclusive", "error", "internal error")


def verdict_cell(outcome: Outcome) -> str:
    if outcome.internal is not None:
        return "internal error"
    if outcome.result is None:
        codes = sorted({d.code for d in outcome.diagnostics})
        return "error" + (f" {', '.join(codes)}" if codes else "")
    r = outcome.result
    return r.verdict + ("" if r.sound else " (sound mode)" if sound_mode(r) else " (estimate)")


def _detail(outcome: Outcome) -> str:
    """The rate of a certified result, else what failed."""
    if outcome.internal is not None:
        return outcome.internal.split(":")[0]          # the exception's type; the message is on stderr
    r = outcome.result
    if r is None:                                      # the codes; the diagnostics are on stderr
        return ", ".join(sorted({d.code for d in outcome.diagnostics}))
    if r.verdict == "certified":
        rate = asymptotic_text(r) or ""
        rate = rate.split(", i.e. ")[-1]               # "L ~ (3 * K * t)^(-0.33), i.e. L ~ t^-3": the short form
        rate = re.sub(r" \([a-z ]+\)$", "", rate)      # "(linear rate)" says nothing the form does not
        floor = (r.loss or {}).get("floor")
        text = f"μ {lower_text(r)}" + (f" · {rate}" if rate else "")
        if isinstance(floor, (int, float)) and floor > 0:
            text += f" to floor {num(floor, DIGITS, 'up' if sound_mode(r) else None)}"
        return text
    return outcome.failing_kind or "—"


def row(outcome: Outcome, fail_on: str = "inconclusive") -> list[str]:
    """spec, verdict, sound|estimate, rate or failure, seconds, exit code."""
    r = outcome.result
    verdict = "internal error" if outcome.internal is not None else outcome.verdict
    status = "" if r is None else ("sound" if r.sound else "sound mode" if sound_mode(r) else "estimate")
    seconds = "cached" if outcome.cached else f"{outcome.seconds:.2f} s"
    eff = effective_code(outcome, fail_on)
    exit_text = f"exit {outcome.exit_code}" + ("" if eff == outcome.exit_code else f"→{eff}")
    return [outcome.spec, verdict, status, _detail(outcome), seconds, exit_text]


def _lines(rows: list[list[str]]) -> list[list[str]]:
    """The cells padded to their column's width (the last column unpadded)."""
    if not rows:
        return []
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    widths[0] = min(widths[0], PATH_WIDTH)             # one deep path does not push every row right
    right = {4}                                          # seconds, right-aligned
    out = []
    for r in rows:
        cells = [(c.rjust(w) if i in right else c.ljust(w)) for i, (c, w) in enumerate(zip(r, widths))]
        cells[-1] = r[-1]
        out.append(cells)
    return out


def _styled(cells: list[str], outcome: Outcome) -> Text:
    text = Text()
    for i, cell in enumerate(cells):
        if i:
            text.append("  ")
        style = VERDICT_STYLE.get(outcome.verdict, "bold red") if i == 1 else ("magenta" if cell.strip() ==
                                                                               "estimate" else "")
        text.append(cell, style=style)
    text.rstrip()
    return text


def failed(outcome: Outcome, fail_on: str = "inconclusive") -> bool:
    return effective_code(outcome, fail_on) != 0


def totals(outcomes: list[Outcome], fail_on: str = "inconclusive") -> str:
    """`4 specs · 1 certified · 1 refuted · 1 inconclusive · 1 error · exit 2 (...)`."""
    code = run_exit_code(outcomes, fail_on)
    counts: dict[str, int] = {}
    for o in outcomes:
        key = "internal error" if o.internal is not None else o.verdict
        counts[key] = counts.get(key, 0) + 1
    parts = [f"{len(outcomes)} spec{'s' if len(outcomes) != 1 else ''}"]
    parts += [f"{counts[k]} {k}" for k in ORDER if k in counts]
    why = f"exit {code}"
    if code != 0:
        why += f" (the worst: {_WORD.get(code, str(code))}; 4 > 2 > 1 > 3 > 0)"
    return " · ".join(parts + [why])


def render_lines(outcomes: list[Outcome], console: Console, fail_on: str = "inconclusive",
                 only_failures: bool = False) -> None:
    """One line per spec (only those that did not pass with `only_failures`), never wrapped."""
    chosen = [o for o in outcomes if failed(o, fail_on)] if only_failures else outcomes
    for cells, o in zip(_lines([row(o, fail_on) for o in chosen]), chosen):
        console.print(_styled(cells, o), soft_wrap=True)


def render_summary(outcomes: list[Outcome], console: Console, fail_on: str = "inconclusive") -> None:
    """The lines of every spec, the notes, and the totals with the run's exit code last."""
    render_lines(outcomes, console, fail_on)
    if any(o.result is not None and not sound_mode(o.result) for o in outcomes):
        console.print(Text("estimate: a sampled verdict is an ESTIMATE, not a proof", style="dim"), soft_wrap=True)
    if fail_on == "refuted":
        console.print(Text("--fail-on refuted: inconclusive counts as 0", style="dim"), soft_wrap=True)
    code = run_exit_code(outcomes, fail_on)
    console.print(Text(totals(outcomes, fail_on), style="bold green" if code == 0 else "bold"), soft_wrap=True)


def _plain(draw) -> str:
    console = Console(file=io.StringIO(), width=100, color_system=None, force_terminal=False,
                      highlight=False, emoji=False, record=True)
    draw(console)
    return "\n".join(line.rstrip() for line in console.export_text().splitlines()) + "\n"


def summary_plain(outcomes: list[Outcome], width: int = 100, fail_on: str = "inconclusive") -> str:
    """The summary as plain text (`width` is kept for callers: lines are never wrapped)."""
    return _plain(lambda console: render_summary(outcomes, console, fail_on))


def lines_plain(outcomes: list[Outcome], fail_on: str = "inconclusive", only_failures: bool = False) -> str:
    return _plain(lambda console: render_lines(outcomes, console, fail_on, only_failures))
