"""The human-readable report: `render_text(result, console)` prints a Result with rich.

Sections, in order (docs/output.md describes each):
    header       title, spec path, method, problem size, the soundness label, the verdict
    Composition  desingularizer and why, loss (constant c when there is one), L0, floor, mu and
                 its source, the KL constant K (= c mu when c exists), region, rho vs radius
    mu sources   every source that estimated inf R over the region; the one that gave mu is marked
    Rate         the formula, its asymptotic form, the step and smoothness (step mode), the
                 loss-level profile and its exponent, the times (or steps) to 1e-1 ... 1e-6 of L0
    Witness      gradient descent from theta0 next to the bound (at step k in step mode)
    Failure      what failed and where (refuted / inconclusive results)
    Diagnostics  warnings attached to the result
    notes, timing (dim)

Everything is built from rich Text objects (never markup strings), so brackets in user text and
diagnostics are printed as they are.
"""
from __future__ import annotations

import math

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from ..diagnostics import render_text as render_diagnostic
from ..result import Result

ESTIMATE_LABEL = "ESTIMATE (not a proof)"
SOUND_LABEL = "sound"

VERDICT_STYLE = {"certified": "bold green", "refuted": "bold red", "inconclusive": "bold yellow",
                 "error": "bold red"}

# what the exit code means, for sound and for sampled (estimated) results; printed on the line
# under the verdict (these texts must not contain a verdict word)
_MEANING = {
    ("certified", True): "the rate is proved on the region",
    ("certified", False): "the rate held at every sampled point and along the witness",
    ("refuted", True): "a counterexample violates the claimed rate",
    ("refuted", False): "a sampled point or the witness contradicts the claimed rate",
    ("inconclusive", True): "the rate was neither proved nor contradicted",
    ("inconclusive", False): "the rate was neither confirmed nor contradicted",
    ("error", True): "the spec has errors",
    ("error", False): "the spec has errors",
}

FRACTIONS = ("1e-1", "1e-2", "1e-3", "1e-4", "1e-5", "1e-6")
WITNESS_ROWS = 6
PROFILE_ROWS = 10    # loss bands shown (the lowest and highest halves when there are more)


# --- formatting -------------------------------------------------------------------------------

def num(x, digits: int = 4) -> str:
    """A number for people: None -> '—', non-finite -> '∞'/'nan', else `digits` significant digits."""
    if x is None:
        return "—"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int):
        return str(x)
    try:
        v = float(x)
    except (TypeError, ValueError):
        return str(x)
    if math.isnan(v):
        return "nan"
    if math.isinf(v):
        return "∞" if v > 0 else "-∞"
    text = f"{v:.{digits}g}"
    if "e" in text:                      # 1e+04 -> 1e4, 1.25e-07 -> 1.25e-7
        mant, exp = text.split("e")
        text = f"{mant}e{int(exp)}"
    return text


def _check(ok: bool | None) -> str:
    return "—" if ok is None else ("✓" if ok else "✗")


def _le(a, b) -> bool | None:
    try:
        a, b = float(a), float(b)
    except (TypeError, ValueError):
        return None
    if math.isnan(a) or math.isnan(b):
        return None
    return a <= b


def _value(x) -> str:
    """An option value: numbers via num(), lists shortened, the rest as text."""
    if isinstance(x, (int, float)) and not isinstance(x, bool):
        return num(x)
    if isinstance(x, (list, tuple)):
        return "[" + ", ".join(num(v) for v in x[:4]) + (", …" if len(x) > 4 else "") + "]"
    return str(x)


def _options(d: dict | None, skip: tuple[str, ...] = ("name",)) -> str:
    if not d:
        return ""
    return ", ".join(f"{k}={_value(v)}" for k, v in d.items() if k not in skip and v is not None)


def _heading(console: Console, title: str) -> None:
    console.print()
    console.print(Text(title, style="bold"))


def _kv_table() -> Table:
    t = Table(box=None, show_header=False, padding=(0, 2, 0, 2), pad_edge=False)
    t.add_column(style="cyan", no_wrap=True)
    t.add_column()
    return t


def _data_table(*columns: tuple[str, str]) -> Table:
    t = Table(box=box.SIMPLE_HEAD, show_edge=False, padding=(0, 1), header_style="bold")
    for name, justify in columns:
        t.add_column(name, justify=justify, no_wrap=(justify == "right"))
    return t


def _region_scale(result: Result) -> tuple[str, float | None]:
    """The region's size symbol and value: ('r', radius) for balls, ('h', halfwidth) for boxes."""
    region = result.region or {}
    if region.get("halfwidth") is not None:
        return "h", region["halfwidth"]
    if region.get("radius") is not None:
        return "r", region["radius"]
    return "r", None


def _step(result: Result) -> float | None:
    """eta when the claim is about gradient descent with a step (rate(step=...)), else None."""
    step = (result.rate or {}).get("step")
    try:
        step = float(step) if step is not None else None
    except (TypeError, ValueError):
        return None
    return step if step is not None and step > 0 and math.isfinite(step) else None


def _same(a, b) -> bool:
    try:
        a, b = float(a), float(b)
    except (TypeError, ValueError):
        return False
    return math.isfinite(a) and math.isfinite(b) and abs(a - b) <= 1e-9 * max(abs(a), abs(b))


def verdict_text(result: Result) -> Text:
    """The verdict line. A sampled (sound=False) result always carries ESTIMATE_LABEL."""
    label = SOUND_LABEL if result.sound else ESTIMATE_LABEL
    text = Text("Verdict  ", style="bold")
    text.append(result.verdict, style=VERDICT_STYLE.get(result.verdict, "bold"))
    text.append(" · ")
    text.append(label, style="bold magenta" if not result.sound else "green")
    text.append(f" · exit {result.exit_code}")
    return text


def meaning_text(result: Result) -> Text:
    """What the exit code means, for the line under the verdict."""
    meaning = _MEANING.get((result.verdict, bool(result.sound)), "")
    return Text(f"         exit {result.exit_code}: {meaning}", style="dim")


# --- sections ---------------------------------------------------------------------------------

def _header(result: Result, console: Console) -> None:
    title = result.title or "(untitled spec)"
    console.rule(Text(f"certify · {title}", style="bold"), align="left")
    head = _kv_table()
    head.add_row("spec", Text(str(result.spec)))
    method = result.method or {}
    mtext = Text(str(method.get("name", "—")))
    opts = _options(method)
    if opts:
        mtext.append(f" ({opts})", style="dim")
    head.add_row("method", mtext)
    problem = result.problem or {}
    if problem:
        parts = []
        for key, sym in (("parameters", "m"), ("samples", "n"), ("outputs", "k")):
            if problem.get(key) is not None:
                word = key[:-1] if problem[key] == 1 else key
                parts.append(f"{sym} = {num(problem[key])} {word}")
        parts += [f"{k} = {_value(v)}" for k, v in problem.items()
                  if k not in ("parameters", "samples", "outputs")]
        head.add_row("problem", Text(" · ".join(parts)))
    if result.sound:
        head.add_row("status", Text(SOUND_LABEL + ": μ is a proved lower bound of R over the region",
                                    style="green"))
    else:
        head.add_row("status", Text(ESTIMATE_LABEL + ": μ is the smallest R found by sampling, "
                                    "not a proved lower bound", style="magenta"))
    console.print(head)
    console.print(verdict_text(result), no_wrap=True, overflow="ellipsis")
    console.print(meaning_text(result))


def _composition(result: Result, console: Console) -> None:
    _heading(console, "Composition")
    t = _kv_table()
    desing = result.desingularizer or {}
    dtext = Text(str(desing.get("phi") if desing.get("phi") is not None else "—"))
    dname = desing.get("name")
    if dname is not None:
        params = desing.get("params")
        extra = _options(params, skip=()) if isinstance(params, dict) else (_value(params) if params else "")
        dtext.append(f"  ({dname}{': ' + extra if extra else ''})", style="dim")
    t.add_row("desingularizer φ", dtext)
    if desing.get("reason"):
        t.add_row("  chosen", Text(str(desing["reason"]), style="dim"))
    loss = result.loss or {}
    ltext = Text(str(loss.get("name", "—")))
    if loss.get("constant") is not None or loss.get("sample_bound") is None:
        ltext.append(f", constant c = {num(loss.get('constant'))}")
    else:   # the loss's bound G(L, M) uses each point's largest per-sample loss: no single c
        ltext.append(f", bound G(L, M) with each point's largest per-sample loss M "
                     f"(largest seen {num(loss.get('sample_bound'))})")
    t.add_row("loss", ltext)
    t.add_row("L0 = L(θ0)", Text(num(loss.get("initial"))))
    t.add_row("floor", Text(num(loss.get("floor"))))
    if loss.get("minimum_seen") is not None:
        t.add_row("min L seen", Text(num(loss.get("minimum_seen"))))
    mtext = Text(num(result.mu))
    if result.mu_source:
        mtext.append(f"  (from {result.mu_source})", style="dim")
    if not result.sound:
        mtext.append("  estimate", style="magenta")
    t.add_row("μ", mtext)
    _kl_row(result, t)

    region = result.region or {}
    sym, scale = _region_scale(result)
    rparts = [str(region.get("kind", "—"))]
    center = region.get("center")
    if isinstance(center, str):
        rparts.append("center θ0" if center == "init" else f"center {center}")
    if scale is not None:
        rparts.append(f"{'radius' if sym == 'r' else 'halfwidth'} {sym} = {num(scale)}")
    if "radius_auto" in region and region.get("radius") is not None:
        rparts.append("auto" if region.get("radius_auto") else "fixed")
    if region.get("dimension") is not None:
        rparts.append(f"dimension {num(region['dimension'])}")
    t.add_row("region", Text(", ".join(rparts)))
    search = region.get("radius_search")
    if region.get("radius_auto") and isinstance(search, list) and search:
        t.add_row("radius search", Text(f"{len(search)} {'radius' if len(search) == 1 else 'radii'} tried"))

    rho = region.get("path_length_bound")
    if rho is None:
        rtext = Text("ρ = —")
    else:
        ok = _le(rho, scale) if scale is not None else None
        if scale is None:
            rtext = Text(f"ρ = {num(rho)}")
        else:
            rel = "≤" if ok else (">" if ok is False else "vs")
            rtext = Text(f"ρ = {num(rho)} {rel} {sym} = {num(scale)} ")
            rtext.append(_check(ok), style="green" if ok else "red")
    t.add_row("path length bound", rtext)
    console.print(t)


def _kl_row(result: Result, t: Table) -> None:
    """K, the constant of phi'(L) ||grad L||^2 >= K; written c·μ when the loss has a constant c."""
    K = (result.rate or {}).get("kl_constant")
    if K is None:
        return
    c = (result.loss or {}).get("constant")
    ktext = Text(num(K))
    if c is not None and result.mu is not None and _same(K, float(c) * float(result.mu)):
        ktext.append(f" = c·μ = {num(c)} · {num(result.mu)}")
    elif (result.loss or {}).get("sample_bound") is not None:
        ktext.append("  min of R·φ′(L)·G(L, M) over the points", style="dim")
    else:
        ktext.append("  min of R·φ′(L)·G(L) over the points", style="dim")
    if not result.sound:
        ktext.append("  estimate", style="magenta")
    t.add_row("KL constant K", ktext)


def _mu_sources(result: Result, console: Console) -> None:
    if not result.mu_sources:
        return
    _heading(console, "μ sources (estimates of inf R over the region)" if not result.sound
             else "μ sources (lower bounds of R over the region)")
    t = _data_table(("", "left"), ("source", "left"), ("description", "left"),
                    ("minimum", "right"), ("points", "right"))
    for s in result.mu_sources:
        chosen = result.mu_source is not None and s.source == result.mu_source
        t.add_row(Text("→" if chosen else " ", style="bold"), Text(s.source, style="bold" if chosen else ""),
                  Text(s.description), Text(num(s.minimum)), Text(num(s.points)))
    console.print(t)
    if result.mu_source:
        console.print(Text(f"  → μ is the minimum of '{result.mu_source}'", style="dim"))


def _rate(result: Result, console: Console) -> None:
    rate = result.rate or {}
    if not rate:
        return
    step = _step(result)
    _heading(console, "Rate" + (" (estimate)" if not result.sound else "")
             + (" · gradient descent, steps k" if step is not None else ""))
    t = _kv_table()
    t.add_row("bound", Text(str(rate.get("formula") or "none claimed")))
    if rate.get("asymptotic"):
        t.add_row("asymptotic", Text(str(rate["asymptotic"])))
    if rate.get("horizon") is not None:
        t.add_row("horizon", Text(f"k ≤ {num(rate['horizon'])} steps" if step is not None
                                  else f"t ≤ {num(rate['horizon'])}"))
    if step is not None:
        _step_rows(rate, step, t)
    console.print(t)
    times = rate.get("times_to_fraction") or {}
    if times:
        piecewise = ((rate.get("profile") or {}).get("times_to_fraction") or {}) \
            if isinstance(rate.get("profile"), dict) else {}
        # band-by-band times are gradient-flow times t, also for a claim with a step: not shown
        # next to step counts
        piecewise = piecewise if step is None and any(v is not None for v in piecewise.values()) else {}
        unit = ("L_k ≤", "after k steps") if step is not None else ("L(t) ≤", "at time t")
        columns = [(unit[0], "left"), (unit[1], "right")]
        if piecewise:
            columns.append(("band by band", "right"))
        tt = _data_table(*columns)
        keys = [k for k in FRACTIONS if k in times] + [k for k in times if k not in FRACTIONS]
        for k in keys:
            v = times[k]
            row = [Text(f"{k} · L0"), Text(num(v) if v is not None else "not claimed")]
            if piecewise:
                w = piecewise.get(k)
                row.append(Text(num(w) if w is not None else "—"))
            tt.add_row(*row)
        console.print(tt)
        if piecewise:
            console.print(Text("  band by band: each loss band with its own K (rate.profile; an estimate)",
                               style="dim"))
    if rate.get("convention"):
        console.print(Text(f"  {rate['convention']}", style="dim"))
    _profile(result, console)


def _step_rows(rate: dict, step: float, t: Table) -> None:
    """Step mode: the step, the estimated smoothness beta with the check eta <= 1/beta, and the
    phi-decrease per step eta (1 - beta eta / 2) K."""
    beta = rate.get("smoothness")
    stext = Text(f"η = {num(step)}")
    if beta is not None:
        stext.append(f", smoothness β = {num(beta)} (largest Hessian eigenvalue found on U, an estimate)")
    t.add_row("step", stext)
    if beta is None:
        return
    try:
        beta = float(beta)
    except (TypeError, ValueError):
        return
    if beta > 0:
        ok = step <= 1 / beta
        ctext = Text(f"η = {num(step)} {'≤' if ok else '>'} 1/β = {num(1 / beta)} ")
        ctext.append(_check(ok), style="green" if ok else "red")
    else:
        ok = True
        ctext = Text("β = 0: every step satisfies η ≤ 1/β ")
        ctext.append(_check(True), style="green")
    t.add_row("η ≤ 1/β", ctext)
    K = rate.get("kl_constant")
    if ok and K is not None:
        t.add_row("φ-decrease", Text(f"{num(step * (1 - beta * step / 2) * float(K))} per step "
                                     f"= η(1 − βη/2)·K"))


def _power_alpha(result: Result) -> float | None:
    d = result.desingularizer or {}
    if d.get("name") != "power" or not isinstance(d.get("params"), dict):
        return None
    try:
        return float(d["params"].get("alpha"))
    except (TypeError, ValueError):
        return None


def _profile(result: Result, console: Console) -> None:
    """The loss-level profile: min R on half-decade loss bands, the fitted exponent of min R
    against L and, for a power desingularizer, the asymptotic rate it predicts."""
    rate = result.rate or {}
    profile = rate.get("profile")
    if not isinstance(profile, dict):
        return
    bands = profile.get("bands") or []
    exponent = profile.get("exponent")
    if exponent is None and not bands:
        return
    _heading(console, "Loss-level profile" + (" (estimate)" if not result.sound else ""))
    t = _kv_table()
    if exponent is None:
        t.add_row("exponent", Text("— (not fitted: the descent from θ0 crossed fewer than 3 loss bands)"))
    else:
        t.add_row("exponent", Text(f"{num(exponent, 3)}: along the descent from θ0, min R on loss bands "
                                   f"falls like L^{num(exponent, 3)}"))
    alpha = _power_alpha(result)
    if alpha is not None and 2 * alpha - 1 > 0:
        var = "k" if _step(result) is not None else "t"
        t.add_row("power", Text(f"α = {num(alpha)}, φ′(u) = u^-{num(2 * alpha)}: predicts "
                                f"L ~ {var}^-{num(1 / (2 * alpha - 1), 3)}"))
    console.print(t)
    if not bands:
        return
    with_k = any("kl_constant" in b for b in bands)
    columns = [("loss band", "left"), ("points", "right"), ("min R", "right")]
    if with_k:
        columns.append(("K on band", "right"))
    pt = _data_table(*columns)
    shown = list(range(len(bands)))
    if len(bands) > PROFILE_ROWS:
        half = PROFILE_ROWS // 2
        shown = shown[:half] + [-1] + shown[-half:]
    for i in shown:
        if i < 0:
            pt.add_row(*[Text("…")] * len(columns))
            continue
        b = bands[i]
        row = [Text(f"[{num(b.get('low'), 3)}, {num(b.get('high'), 3)})"), Text(num(b.get("points"))),
               Text(num(b.get("mu")))]
        if with_k:
            row.append(Text(num(b.get("kl_constant"))))
        pt.add_row(*row)
    console.print(pt)


def _witness_indices(n: int, rows: int = WITNESS_ROWS) -> list[int]:
    if n <= 0:
        return []
    if n <= rows:
        return list(range(n))
    return sorted({round(i * (n - 1) / (rows - 1)) for i in range(rows)})


def _witness(result: Result, console: Console) -> None:
    w = result.witness
    if w is None:
        return
    _heading(console, f"Witness ({w.method} from θ0)")
    # step mode: the witness uses the spec's step and is compared with the bound at step k = t/eta
    # (the witness records flow time t = k eta; the rate's bound takes k)
    step = _step(result) if w.step else None
    at = (lambda tt: tt / w.step) if step is not None else (lambda tt: tt)
    head = ("k", "witness L_k", "bound_k") if step is not None else ("t", "witness L(t)", "bound(t)")
    t = _data_table((head[0], "right"), (head[1], "right"), (head[2], "right"), ("L ≤ bound", "center"))
    curve = w.curve or []
    checked_until = w.checked_until if w.checked_until is not None else math.inf
    rows = [(curve[i][0], curve[i][1]) for i in _witness_indices(len(curve))]
    v = w.violation
    if v and v.get("t") is not None and all(tt != v["t"] for tt, _ in rows):
        rows = sorted(rows + [(v["t"], v.get("loss"))], key=lambda r: r[0])
    for tt, loss in rows:
        b = result.bound(at(tt))
        x = Text(num(at(tt)))
        if v and tt == v.get("t"):                           # the violation, as the engine found it
            t.add_row(x, Text(num(loss)), Text(num(v.get("bound", b))), Text("✗", style="bold red"))
        elif math.isnan(b):                                    # no rate: nothing to compare with
            t.add_row(x, Text(num(loss)), Text("—"), Text("—"))
        elif tt > checked_until:                             # bound below the noise level: not compared
            t.add_row(x, Text(num(loss)), Text(num(b)), Text("not checked", style="dim"))
        else:
            ok = _le(loss, b)
            t.add_row(x, Text(num(loss)), Text(num(b)),
                      Text(_check(ok), style="green" if ok else ("red" if ok is False else "")))
    if curve:
        console.print(t)

    info = _kv_table()
    info.add_row("step η", Text(f"{num(w.step)}, {num(w.steps)} steps, time covered t = {num(w.time)}"))
    if step is not None and w.checked_until is not None:
        info.add_row("checked until", Text(f"k = {num(at(w.checked_until))} (t = {num(w.checked_until)})"))
    else:
        info.add_row("checked until", Text(f"t = {num(w.checked_until)}"))
    sym, scale = _region_scale(result)
    dtext = Text(f"{num(w.max_distance)}")
    if scale is not None:
        ok = _le(w.max_distance, scale)
        dtext.append(f" {'≤' if ok else '>'} {sym} = {num(scale)} ")
        dtext.append(_check(ok), style="green" if ok else "red")
    info.add_row("max ‖θt − θ0‖", dtext)
    rho = (result.region or {}).get("path_length_bound")
    ptext = Text(f"{num(w.path_length)}")
    if rho is not None:
        ok = _le(w.path_length, rho)
        ptext.append(f" {'≤' if ok else '>'} ρ = {num(rho)} ")
        ptext.append(_check(ok), style="green" if ok else "red")
    info.add_row("path length", ptext)
    where = (lambda tt: f"k = {num(at(tt))}") if step is not None else (lambda tt: f"t = {num(tt)}")
    if w.left_region_at is not None:
        info.add_row("left region", Text(f"at {where(w.left_region_at)}", style="yellow"))
    if w.violation:
        v = w.violation
        info.add_row("violation", Text(f"at {where(v.get('t'))}: L = {num(v.get('loss'))} > "
                                       f"bound = {num(v.get('bound'))}", style="bold red"))
    else:
        info.add_row("violation", Text("none", style="green"))
    console.print(info)


def _failure(result: Result, console: Console) -> None:
    f = result.failing_region
    if f is None:
        return
    _heading(console, f"Failure: {f.kind}")
    msg = Text(f"  {f.message}")
    if f.span:
        msg.append(f"  (line {f.span.get('line')}, column {f.span.get('column')})", style="dim")
    console.print(msg)
    if f.points:
        t = _data_table(("‖θ − center‖", "right"), ("L(θ)", "right"), ("R(θ)", "right"), ("source", "left"))
        for p in f.points:
            t.add_row(Text(num(p.distance)), Text(num(p.loss)), Text(num(p.rayleigh)), Text(p.source))
        console.print(t)
    if f.numbers:
        nums = _kv_table()
        for k, v in f.numbers.items():
            nums.add_row(Text(str(k)), Text(num(v)))
        console.print(nums)
    if f.suggestion:
        console.print(Text(f"  suggestion: {f.suggestion}", style="yellow"))


def _diagnostics(result: Result, console: Console, source: str | None) -> None:
    if not result.diagnostics:
        return

    _heading(console, "Diagnostics")
    for d in result.diagnostics:
        console.print(Text(render_diagnostic(d, source)))


def _footer(result: Result, console: Console) -> None:
    if not result.notes and not result.timing:
        return
    console.print()
    for note in result.notes:
        console.print(Text(f"note: {note}", style="dim"))
    if result.timing:
        parts = []
        for k, v in result.timing.items():
            try:
                parts.append(f"{k} {float(v):.2f} s")
            except (TypeError, ValueError):
                parts.append(f"{k} {v}")
        console.print(Text("timing: " + " · ".join(parts), style="dim"))


def render_plain(result: Result, width: int = 100, source: str | None = None) -> str:
    """The report as plain text (no colour, `width` columns, no trailing blanks): what the CLI
    prints when stdout is not a terminal."""
    import io

    console = Console(file=io.StringIO(), width=width, color_system=None, force_terminal=False,
                      highlight=False, emoji=False, record=True)
    render_text(result, console, source=source)
    return "\n".join(line.rstrip() for line in console.export_text().splitlines()) + "\n"


def render_text(result: Result, console: Console, source: str | None = None) -> None:
    """Print the report of `result` on `console`. `source` (the spec text), when given, lets the
    diagnostics attached to the result show their source line."""
    _header(result, console)
    _composition(result, console)
    _mu_sources(result, console)
    _rate(result, console)
    _witness(result, console)
    _failure(result, console)
    _diagnostics(result, console, source)
    _footer(result, console)
