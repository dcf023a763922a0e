"""The human-readable report: `render_text(result, console)` prints a Result with rich.

Sections, in order (docs/output.md describes each):
    header       title, spec path, method, problem size, the soundness label, the verdict
    Composition  desingularizer and why, loss (constant c when there is one), L0, floor, mu and
                 its source, the KL constant K (= c mu when c exists), region, rho vs radius
    mu sources   every source that estimated inf R over the region (sampled) or every interval rule
                 that bounded it (sound mode); the one that gave mu is marked
    Proof        the sound mode only: the branch and bound's outcome and its leaves by rule
    Rate         the formula, its asymptotic form, the step and smoothness (step mode), the
                 loss-level profile and its exponent, the times (or steps) to 1e-1 ... 1e-6 of L0
    Witness      gradient descent from theta0 next to the bound (at step k in step mode)
    Failure      what failed and where (refuted / inconclusive results)
    Diagnostics  warnings attached to the result
    notes, timing (dim)

Numbers: DIGITS (6) significant digits everywhere, the same in both modes. In the sound mode every
number that is part of a bound is shortened in the direction that keeps it a bound (L0, the floor,
rho, bound(t) and the times up; mu and K down; the exact doubles stay in the JSON), and the bound's
formula is rewritten that way too. A lower bound of R at or below 0 is shown as 0 (no positive lower
bound), never as a negative number.

Everything is built from rich Text objects (never markup strings), so brackets in user text and
diagnostics are printed as they are.
"""
from __future__ import annotations

import math
import re
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal

from rich import box
from rich.console import Console
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from ..diagnostics import render_text as render_diagnostic
from ..result import Result

ESTIMATE_LABEL = "ESTIMATE (not a proof)"
SOUND_LABEL = "sound"
SOUND_MODE_LABEL = "sound mode: nothing proved"   # method interval without a theorem: never an estimate
DIGITS = 6                                         # significant digits of every number in the report
NO_POSITIVE = "0 (no positive lower bound)"

VERDICT_STYLE = {"certified": "bold green", "refuted": "bold red", "inconclusive": "bold yellow",
                 "error": "bold red"}

# what the exit code means, for the sound mode (True) and for sampled (estimated) results; printed on
# the line under the verdict (these texts must not contain a verdict word)
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
# a run stopped from outside: what the line under the verdict says (no verdict word)
_STOPPED = {143: "the run was stopped by SIGTERM before a verdict; no rate is claimed",
            130: "the run was interrupted (Ctrl-C) before a verdict; no rate is claimed"}


# --- formatting -------------------------------------------------------------------------------

def num(x, digits: int = 4, way: str | None = None) -> str:
    """A number for people: None -> '—', non-finite -> '∞'/'nan', else `digits` significant digits,
    rounded to nearest, or with `way` "up" / "down" to the shortest text >= / <= x (exact decimal
    arithmetic: the text read back as a real is on that side of the double)."""
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
    if way in ("up", "down") and v != 0:
        short = repr(v)               # the double's own shortest text: exact, no rounding needed
        if len(short.split("e")[0].replace("-", "").replace(".", "").strip("0")) <= digits:
            return num(v, digits)
        return _directed(v, digits, way == "up")
    text = f"{v:.{digits}g}"
    if "e" in text:                      # 1e+04 -> 1e4, 1.25e-07 -> 1.25e-7
        mant, exp = text.split("e")
        text = f"{mant}e{int(exp)}"
    return text


def _directed(v: float, digits: int, up: bool) -> str:
    """v rounded up (or down) to `digits` significant digits, written as num writes numbers."""
    d = Decimal(v)                       # the double's exact value
    q = Decimal(1).scaleb(d.adjusted() - digits + 1)
    r = d.quantize(q, rounding=ROUND_CEILING if up else ROUND_FLOOR).normalize()
    e = r.adjusted()
    if -4 <= e < digits:
        return format(r, "f")
    mant = format(r.scaleb(-e).normalize(), "f")
    return f"{mant}e{e}"


def _n(x, way: str | None = None) -> str:
    """num() with the report's DIGITS."""
    return num(x, DIGITS, way)


def _lower(x, way: str | None = None) -> str:
    """A lower bound of R (mu, a rule's minimum): never negative, 0 says there is no positive one."""
    try:
        if x is not None and float(x) <= 0:
            return NO_POSITIVE if float(x) < 0 or way == "down" else "0"
    except (TypeError, ValueError):
        pass
    return _n(x, way)


def _words(text: str, mu: float | None = None) -> str:
    """Engine text in the report's names and numbers: θ0 for theta0, and a sound lower bound of R
    ("the weakest has a sound bound -8.37e-19") never negative and to DIGITS digits, rounded down
    (the JSON keeps the engine's text). With the proved `mu`: "R >= 0.0734065", the engine's μ
    rounded to nearest (above μ = 0.07340646...), is written with μ rounded down."""
    text = re.sub(r"\btheta0\b", "θ0", str(text))
    text = re.sub(r"(sound bound )(-?\d+(?:\.\d+)?(?:e[-+]?\d+)?)\b",
                  lambda m: m.group(1) + _lower(float(m.group(2)), "down"), text)
    if mu is not None and math.isfinite(mu) and mu > 0:
        def proved(m: re.Match) -> str:
            value = float(m.group(2))
            return m.group(1) + _n(mu, "down") if mu < value <= mu * (1 + 1e-3) else m.group(0)
        text = re.sub(r"(R >= )(\d+(?:\.\d+)?(?:e[-+]?\d+)?)\b", proved, text)
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
        return _n(x)
    if isinstance(x, (list, tuple)):
        return "[" + ", ".join(_n(v) for v in x[:4]) + (", …" if len(x) > 4 else "") + "]"
    return str(x)


def _options(d: dict | None, skip: tuple[str, ...] = ("name",)) -> str:
    if not d:
        return ""
    return ", ".join(f"{k}={_value(v)}" for k, v in d.items() if k not in skip and v is not None)


def _hanging(head: str, text: Text, style: str = "") -> Table:
    """`head text`, the text's wrapped lines indented under its start (a hanging indent)."""
    t = Table.grid(padding=(0, 1))
    t.add_column(no_wrap=True, style=style)
    t.add_column()
    t.add_row(Text(head, style=style), text)
    return t


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


def sound_mode(result: Result) -> bool:
    """The result comes from the sound mode (method interval): its numbers are proved bounds or
    nothing, never estimates, whatever its verdict."""
    return bool(result.sound) or (result.method or {}).get("name") == "interval" or result.proof is not None


def label(result: Result) -> str:
    """sound (a theorem), 'sound mode: nothing proved', or ESTIMATE_LABEL (every sampled result)."""
    if result.sound:
        return SOUND_LABEL
    return SOUND_MODE_LABEL if sound_mode(result) else ESTIMATE_LABEL


def _way(result: Result, way: str) -> str | None:
    """The rounding direction that keeps a bound a bound: only the sound mode rounds that way."""
    return way if sound_mode(result) else None


def _stopped(result: Result) -> str | None:
    """What stopped a partial run (Ctrl-C, SIGTERM, --budget before the engine's result), else None."""
    f = result.failing_region
    if f is None:
        return None
    if f.kind == "interrupted":
        return _STOPPED.get(result.exit_code, "the run was interrupted before a verdict; no rate is claimed")
    if f.kind == "budget" and result.witness is None and not result.rate and result.proof is None:
        return "the --budget ran out before a verdict; no rate is claimed"
    return None


def verdict_text(result: Result) -> Text:
    """The verdict line. A sampled (sound=False) result always carries ESTIMATE_LABEL; a sound-mode
    result never does."""
    text = Text("Verdict  ", style="bold")
    text.append(result.verdict, style=VERDICT_STYLE.get(result.verdict, "bold"))
    text.append(" · ")
    text.append(label(result), style="green" if result.sound else ("yellow" if sound_mode(result)
                                                                    else "bold magenta"))
    text.append(f" · exit {result.exit_code}")
    return text


def meaning_text(result: Result) -> Text:
    """What the exit code means, for the line under the verdict."""
    meaning = _stopped(result) or _MEANING.get((result.verdict, sound_mode(result)), "")
    return Text(f"         exit {result.exit_code}: {meaning}", style="dim")


# --- sections ---------------------------------------------------------------------------------

_SAMPLED_WORDS = {"evaluations": lambda v: f"R at {_n(v)} points",
                  "step": lambda v: f"search step {_n(v)}",
                  "smoothness_at_theta0": lambda v: f"smoothness at θ0 {_n(v)}"}


def _method_text(result: Result) -> Text:
    """`sampled (samples=2048, seed=0): R at 1292 points, ...` or `interval (boxes=200,
    functions=margin, rules: spectrum on 199 boxes)`: the spec's settings as written, the rest in
    words (the JSON's method object has them all)."""
    method = result.method or {}
    name = str(method.get("name", "—"))
    text = Text(name)
    if set(method) <= {"name"}:      # a partial result names the method only
        return text
    if name == "interval" and method.get("route") == "trajectory":
        spec = [f"{k}={_value(method[k])}" for k in ("route", "functions") if method.get(k) is not None]
        text.append(f" ({', '.join(spec)}: a validated tube around the flow, then the ball rule at its end)",
                    style="dim")
        return text
    if name == "interval":
        spec = [f"{k}={_value(method[k])}" for k in ("boxes", "functions") if method.get(k) is not None]
        rules = ((result.proof or {}).get("rules_used") or {}) or {s.source: s.points for s in result.mu_sources}
        used = ", ".join(f"{r} on {n} box{'es' if n != 1 else ''}" for r, n in sorted(rules.items()))
        text.append(f" ({', '.join(spec + ['rules: ' + (used or 'none')])})", style="dim")
        return text
    spec = [f"{k}={_value(method[k])}" for k in ("samples", "seed") if method.get(k) is not None]
    words = [(_SAMPLED_WORDS[k](v) if k in _SAMPLED_WORDS else f"{_words(k.replace('_', ' '))} {_value(v)}")
             for k, v in method.items() if k not in ("name", "samples", "seed") and v is not None]
    if spec or words:
        text.append(f" ({', '.join(spec)})" if spec else "", style="dim")
        if words:
            text.append(": " + ", ".join(words), style="dim")
    return text


def _header(result: Result, console: Console) -> None:
    title = result.title or "(untitled spec)"
    console.rule(Text(f"certify · {title}", style="bold"), align="left")
    head = _kv_table()
    head.add_row("spec", Text(str(result.spec)))
    if result.method:
        head.add_row("method", _method_text(result))
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
    if result.sound and result.verdict == "refuted":
        head.add_row("status", Text(SOUND_LABEL + ": the counterexample is verified by interval arithmetic",
                                    style="green"))
    elif result.sound and (result.method or {}).get("route") == "trajectory":
        head.add_row("status", Text(SOUND_LABEL + ": the loss is proved along a tube that holds the flow up to "
                                    "T, and μ is a proved lower bound of R on a ball around the tube's end",
                                    style="green"))
    elif result.sound:
        head.add_row("status", Text(SOUND_LABEL + ": μ is a proved lower bound of R over the region",
                                    style="green"))
    elif sound_mode(result):
        head.add_row("status", Text(SOUND_MODE_LABEL + ": the interval proof did not close, so no rate "
                                    "is claimed", style="yellow"))
    elif _stopped(result):
        head.add_row("status", Text(ESTIMATE_LABEL + ": the run stopped before any verdict; nothing is "
                                    "claimed", style="magenta"))
    else:
        head.add_row("status", Text(ESTIMATE_LABEL + ": μ is the smallest R found by sampling, "
                                    "not a proved lower bound", style="magenta"))
    console.print(head)
    console.print(verdict_text(result), no_wrap=True, overflow="ellipsis")
    console.print(meaning_text(result))


def _composition(result: Result, console: Console) -> None:
    desing = result.desingularizer or {}
    loss = result.loss or {}
    region = result.region or {}
    if not desing and not loss and not region and result.mu is None:
        return          # a run stopped before the analysis: nothing to show
    _heading(console, "Composition")
    t = _kv_table()
    up = _way(result, "up")
    dtext = Text(str(desing.get("phi") if desing.get("phi") is not None else "—"))
    dname = desing.get("name")
    if dname is not None:
        params = desing.get("params")
        extra = _options(params, skip=()) if isinstance(params, dict) else (_value(params) if params else "")
        dtext.append(f"  ({dname}{': ' + extra if extra else ''})", style="dim")
    t.add_row("desingularizer φ", dtext)
    if desing.get("reason"):
        t.add_row("  chosen", Text(_words(desing["reason"]), style="dim"))
    ltext = Text(str(loss.get("name", "—")))
    if loss.get("constant") is not None or loss.get("sample_bound") is None:
        ltext.append(f", constant c = {_n(loss.get('constant'), _way(result, 'down'))}")
    else:   # the loss's bound G(L, M) uses each point's largest per-sample loss: no single c
        ltext.append(f", bound G(L, M) with each point's largest per-sample loss M "
                     f"(largest seen {_n(loss.get('sample_bound'))})")
    t.add_row("loss", ltext)
    t.add_row("L0 = L(θ0)", Text(_n(loss.get("initial"), up)))
    t.add_row("floor", Text(_n(loss.get("floor"), up)))
    if loss.get("minimum_seen") is not None:
        t.add_row("min L seen", Text(_n(loss.get("minimum_seen"))))
    mtext = Text(_lower(result.mu, _way(result, "down")))
    if result.mu is None and sound_mode(result):
        mtext.append("  no lower bound proved", style="dim")
    if result.mu_source:
        mtext.append(f"  (from {result.mu_source})", style="dim")
    if not sound_mode(result):
        mtext.append("  estimate", style="magenta")
    t.add_row("μ", mtext)
    _kl_row(result, t)

    sym, scale = _region_scale(result)
    rparts = [str(region.get("kind", "—"))]
    center = region.get("center")
    if isinstance(center, str):
        rparts.append("center θ0" if center == "init" else f"center {center}")
    if scale is not None:
        rparts.append(f"{'radius' if sym == 'r' else 'halfwidth'} {sym} = {_n(scale)}")
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
        rtext = Text("ρ = —" + ("  (no positive μ)" if result.mu is None or (_finite(result.mu) or 0) <= 0
                                else ""))
    else:
        ok = _le(rho, scale) if scale is not None else None
        if scale is None:
            rtext = Text(f"ρ = {_n(rho, up)}")
        else:
            rel = "≤" if ok else (">" if ok is False else "vs")
            rtext = Text(f"ρ = {_n(rho, up)} {rel} {sym} = {_n(scale)} ")
            rtext.append(_check(ok), style="green" if ok else "red")
    t.add_row("path length bound", rtext)
    console.print(t)


def _finite(x) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _below_zero(x) -> bool:
    try:
        return float(x) < 0          # -inf included; None and nan are not
    except (TypeError, ValueError):
        return False


def _kl_row(result: Result, t: Table) -> None:
    """K, the constant of phi'(L) ||grad L||^2 >= K; written c·μ when the loss has a constant c."""
    K = (result.rate or {}).get("kl_constant")
    if K is None:
        return
    down = _way(result, "down")
    c = (result.loss or {}).get("constant")
    ktext = Text(_lower(K, down) if (_finite(K) or 0) <= 0 else _n(K, down))
    if c is not None and result.mu is not None and _same(K, float(c) * float(result.mu)):
        ktext.append(f" = c·μ = {_n(c, down)} · {_lower(result.mu, down)}")
    elif (result.loss or {}).get("sample_bound") is not None:
        ktext.append("  min of R·φ′(L)·G(L, M) over the points", style="dim")
    else:
        ktext.append("  min of R·φ′(L)·G(L) over the points", style="dim")
    if not sound_mode(result):
        ktext.append("  estimate", style="magenta")
    t.add_row("KL constant K", ktext)


def _mu_sources(result: Result, console: Console) -> None:
    if not result.mu_sources:
        return
    sound = sound_mode(result)
    _heading(console, "μ sources (lower bounds of R over the region, one per interval rule)" if sound
             else "μ sources (estimates of inf R over the region)")
    t = _data_table(("", "left"), ("source", "left"), ("description", "left"),
                    ("minimum", "right"), ("boxes" if sound else "points", "right"))
    clamped = False
    for s in result.mu_sources:
        chosen = result.mu_source is not None and s.source == result.mu_source
        negative = _below_zero(s.minimum)
        clamped |= negative
        minimum = "0" if negative else _n(s.minimum, _way(result, "down"))
        t.add_row(Text("→" if chosen else " ", style="bold"), Text(s.source, style="bold" if chosen else ""),
                  Text(_words(s.description)), Text(minimum), Text(num(s.points)))
    console.print(t)
    if clamped:
        console.print(Text("  0: no positive lower bound (a bound at or below 0 is shown as 0)", style="dim"))
    if result.mu_source:
        console.print(Text(f"  → μ is the minimum of '{result.mu_source}'", style="dim"))


def _leaves(node: dict, depth: int = 0, out: list | None = None) -> list:
    """The proof tree's leaves, as (node, depth)."""
    out = [] if out is None else out
    children = node.get("children") or []
    if not children:
        out.append((node, depth))
    for child in children:
        if isinstance(child, dict):
            _leaves(child, depth + 1, out)
    return out


def _proof(result: Result, console: Console) -> None:
    """The sound mode's proof: its outcome, the boxes, the μ confinement needs, and the leaves of the
    branch-and-bound tree grouped by status and rule with their smallest bound (JSON: `proof`)."""
    proof = result.proof
    if not isinstance(proof, dict):
        return
    _heading(console, "Proof (interval arithmetic, branch and bound over boxes)")
    method = result.method or {}
    t = _kv_table()
    status = str(proof.get("status") or "—")
    stext = Text(status, style="green" if status == "proven" else ("red" if status == "refuted" else "yellow"))
    if proof.get("message"):
        stext.append(f": {_words(proof['message'], _finite(result.mu))}")
    t.add_row("status", stext)
    evaluated = proof.get("boxes_evaluated", method.get("boxes_evaluated"))
    btext = f"{num(evaluated)}" + (f" of at most {num(method['boxes'])}" if method.get("boxes") is not None else "")
    btext += " evaluated"
    if method.get("boxes_per_second") is not None:
        btext += f", {num(method['boxes_per_second'], 3)} per second"
    t.add_row("boxes", Text(btext))
    if method.get("elementary_functions"):
        t.add_row("functions", Text(f"{method.get('functions', '—')}: {method['elementary_functions']}"))
    tree = proof.get("tree") if isinstance(proof.get("tree"), dict) else {}
    if tree.get("target") is not None:
        sym, scale = _region_scale(result)
        t.add_row("needed", Text(f"μ ≥ {_n(tree['target'], 'up')} for the path length bound ρ ≤ "
                                 f"{sym} = {_n(scale)}"))
    if proof.get("min_rayleigh_seen") is not None:
        t.add_row("min R seen", Text(f"{_n(proof['min_rayleigh_seen'])}  (R in float64 at points of the region: "
                                     f"inf R is at most about this)", style="dim"))
    root = tree.get("root")
    leaves = _leaves(root) if isinstance(root, dict) else []
    if leaves:
        depth = max(d for _, d in leaves)
        t.add_row("tree", Text(f"{len(leaves)} leaf box{'es' if len(leaves) != 1 else ''}, depth {depth}"
                               + (" (the region is one box)" if depth == 0 else "")))
    console.print(t)
    if not leaves:
        return
    groups: dict[tuple[str, str], list] = {}
    for node, _ in leaves:
        groups.setdefault((str(node.get("status", "—")), str(node.get("rule", "—"))), []).append(node)
    lt = _data_table(("leaves", "left"), ("rule", "left"), ("boxes", "right"), ("smallest bound on R", "right"))
    order = {"proven": 0, "open": 1, "unsplittable": 2, "dropped": 3}
    for (st, rule), nodes in sorted(groups.items(), key=lambda kv: (order.get(kv[0][0], 9), kv[0][1])):
        bounds = [float(n["bound"]) for n in nodes if _finite(n.get("bound")) is not None
                  or _below_zero(n.get("bound"))]
        smallest = "—" if st == "dropped" or not bounds else (
            "0" if min(bounds) < 0 else _n(min(bounds), "down"))
        lt.add_row(Text(st), Text(rule), Text(num(len(nodes))), Text(smallest))
    console.print(lt)
    if any(st == "dropped" for st, _ in groups):
        console.print(Text("  dropped: entirely below the floor, above the initial loss, or outside a ball",
                           style="dim"))


_NUM = r"\d+(?:\.\d+)?(?:e[-+]?\d+)?"
_SPEED = rf"{_NUM}(?: \* {_NUM})*"
# the bound formulas the rates write (compose/rate.py): phi = log, power (-1/u for alpha = 1), Lambert
_CORES = (rf"{_NUM} \* exp\(-{_SPEED} \* [tk]\)",
          rf"\({_NUM}\^\(-{_NUM}\) \+ {_SPEED} \* [tk]\)\^\(-{_NUM}\)",
          rf"log\(1 \+ 1/W0\(exp\({_SPEED} \* [tk] [-+] {_NUM}\)\)\)")
_FORMULA = re.compile(rf"(?:L\(t\)|L_k) <= (?:{'|'.join(_CORES)}|max\((?:{'|'.join(_CORES)}), {_NUM}\))")


def _significant(token: str) -> int:
    """The significant digits a number token is written with (trailing zeros not counted)."""
    digits = token.lower().split("e")[0].replace(".", "").lstrip("0").rstrip("0")
    return len(digits)


def bound_formula(formula: str) -> str:
    """A sound bound's formula with its exact doubles shortened to DIGITS significant digits, each
    in the direction that keeps the bound a bound: a factor of the speed (K, c, μ: the numbers
    multiplied by t or k) and a constant added to the speed rounded down, a constant subtracted from
    it (Lambert's φ(L0)) and every other number (L0, the floor) rounded up; exponents untouched. A
    formula of another shape is returned as it is (exact: long but true)."""
    if not _FORMULA.fullmatch(formula):
        return formula

    def one(m: re.Match) -> str:
        token, before, after = m.group(), formula[:m.start()], formula[m.end():]
        if (before and (before[-1].isalnum() or before[-1] in "._")) or _significant(token) <= DIGITS:
            return token                       # part of a name (W0, L0) or short already
        if before.endswith("^(-") or before.endswith("^("):
            return token                       # an exponent
        if re.match(rf"(?: \* {_NUM})* \* [tk]\b", after) or before.endswith("+ "):
            way = "down"
        else:
            way = "up"
        return num(float(token), DIGITS, way)
    return re.sub(_NUM, one, formula)


def _asymptotic(result: Result) -> str | None:
    """rate.asymptotic with its speed to DIGITS digits (rounded down in the sound mode), in the
    report's style; None when there is none."""
    rate = result.rate or {}
    text = rate.get("asymptotic")
    K = _finite(rate.get("kl_constant"))
    if not text or K is None:
        return text
    speed = K
    step, beta = _step(result), _finite(rate.get("smoothness"))
    if step is not None:
        if beta is None:
            return text
        speed = step * (1 - beta * step / 2) * K
    down = _way(result, "down")
    if down:
        speed *= 1 - 1e-12       # the float products above may round up: stay below the exact speed
    short = f"{speed:.3g}"

    def one(m: re.Match) -> str:
        if m.group(2) != short:
            return m.group(0)
        return m.group(1) + num(speed, DIGITS, down) + m.group(3)
    return re.sub(rf"(exp\(-|\* |1/\()({_NUM})( \* [tk]\)| [tk]\))", one, str(text), count=1)


def asymptotic_text(result: Result) -> str | None:
    """The rate's asymptotic form as the report writes it (for the summary line)."""
    return _asymptotic(result)


def lower_text(result: Result) -> str:
    """μ as the report writes it (for the summary line): rounded down in the sound mode, never negative."""
    return _lower(result.mu, _way(result, "down"))


def _rate(result: Result, console: Console) -> None:
    rate = result.rate or {}
    if not rate:
        return
    step = _step(result)
    sound = sound_mode(result)
    up = _way(result, "up")
    _heading(console, "Rate" + (" (estimate)" if not sound else "")
             + (" · gradient descent, steps k" if step is not None else ""))
    t = _kv_table()
    formula = rate.get("formula")
    if formula:
        shown = bound_formula(str(formula)) if sound else str(formula)
        t.add_row("bound", Text(shown))
        if shown != formula:
            t.add_row("", Text(f"(the proved bound with its numbers rounded up, K and μ down, to {DIGITS} "
                               f"digits; exact doubles in the JSON)", style="dim"))
    else:
        t.add_row("bound", Text("none claimed"))
    asymptotic = _asymptotic(result)
    if asymptotic:
        t.add_row("asymptotic", Text(str(asymptotic)))
    if rate.get("horizon") is not None:
        t.add_row("horizon", Text(f"k ≤ {_n(rate['horizon'])} steps" if step is not None
                                  else f"t ≤ {_n(rate['horizon'])}"))
    if step is not None:
        _step_rows(result, rate, step, t)
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
            row = [Text(f"{k} · L0"), Text(_n(v, up) if v is not None else "not claimed")]
            if piecewise:
                w = piecewise.get(k)
                row.append(Text(_n(w) if w is not None else "—"))
            tt.add_row(*row)
        console.print(tt)
        if piecewise:
            console.print(Text("  band by band: the times with each loss band's own K in place of one K "
                               + ("(rate.profile; proved)" if (rate.get("profile") or {}).get("proved")
                                  else "(rate.profile; an estimate)"), style="dim"))
    if rate.get("convention"):
        console.print(Text(f"  {rate['convention']}", style="dim"))
    _profile(result, console)


def _step_rows(result: Result, rate: dict, step: float, t: Table) -> None:
    """Step mode: the step, the smoothness beta (estimated in the sampled mode, proved in the sound
    mode) with the check eta <= 1/beta, and the phi-decrease per step eta (1 - beta eta / 2) K."""
    beta = rate.get("smoothness")
    stext = Text(f"η = {_n(step)}")
    if beta is not None:
        stext.append(f", smoothness β = {_n(beta, _way(result, 'up'))} "
                     + ("(a proved bound of the Hessian on U)" if sound_mode(result)
                        else "(largest Hessian eigenvalue found on U, an estimate)"))
    t.add_row("step", stext)
    if beta is None:
        return
    try:
        beta = float(beta)
    except (TypeError, ValueError):
        return
    if beta > 0:
        ok = step <= 1 / beta
        ctext = Text(f"η = {_n(step)} {'≤' if ok else '>'} 1/β = {_n(1 / beta)} ")
        ctext.append(_check(ok), style="green" if ok else "red")
    else:
        ok = True
        ctext = Text("β = 0: every step satisfies η ≤ 1/β ")
        ctext.append(_check(True), style="green")
    t.add_row("η ≤ 1/β", ctext)
    K = rate.get("kl_constant")
    if ok and K is not None:
        decrease = step * (1 - beta * step / 2) * float(K)
        down = _way(result, "down")
        t.add_row("φ-decrease", Text(f"{_n(decrease * (1 - 1e-12) if down else decrease, down)} per step "
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
        where = "the proved μ of the loss bands" if profile.get("proved") else \
            "along the descent from θ0, min R on loss bands"
        t.add_row("exponent", Text(f"{_n(exponent)}: {where} falls like L^{_n(exponent)}"))
    alpha = _power_alpha(result)
    if alpha is not None and 2 * alpha - 1 > 0:
        var = "k" if _step(result) is not None else "t"
        t.add_row("power", Text(f"α = {_n(alpha)}, φ′(u) = u^-{_n(2 * alpha)}: predicts "
                                f"L ~ {var}^-{_n(1 / (2 * alpha - 1))}"))
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
               Text(_lower(b.get("mu"), _way(result, "down")))]
        if with_k:
            row.append(Text(_n(b.get("kl_constant"), _way(result, "down"))))
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
    up = _way(result, "up")
    # a rate to compare with: a bound function and a claimed formula (a refuted or inconclusive result
    # has none: the descent is then only shown)
    v = w.violation
    compared = bool((result.rate or {}).get("formula")) or bool(v)
    head = ("k", "witness L_k", "bound_k") if step is not None else ("t", "witness L(t)", "bound(t)")
    if compared:
        t = _data_table((head[0], "right"), (head[1], "right"), (head[2], "right"), ("L ≤ bound", "center"))
    else:
        t = _data_table((head[0], "right"), (head[1], "right"))
    curve = w.curve or []
    checked_until = w.checked_until if w.checked_until is not None else math.inf
    rows = [(curve[i][0], curve[i][1]) for i in _witness_indices(len(curve))]
    if v and v.get("t") is not None and all(tt != v["t"] for tt, _ in rows):
        rows = sorted(rows + [(v["t"], v.get("loss"))], key=lambda r: r[0])
    for tt, loss in rows:
        x = Text(_n(at(tt)))
        if not compared:
            t.add_row(x, Text(_n(loss)))
            continue
        b = result.bound(at(tt))
        if v and tt == v.get("t"):                           # the violation, as the engine found it
            t.add_row(x, Text(_n(loss)), Text(_n(v.get("bound", b), up)), Text("✗", style="bold red"))
        elif math.isnan(b):                                    # no bound at this time
            t.add_row(x, Text(_n(loss)), Text("—"), Text("—"))
        elif tt > checked_until:                             # bound below the noise level: not compared
            t.add_row(x, Text(_n(loss)), Text(_n(b, up)), Text("not checked", style="dim"))
        else:
            ok = _le(loss, b)
            t.add_row(x, Text(_n(loss)), Text(_n(b, up)),
                      Text(_check(ok), style="green" if ok else ("red" if ok is False else "")))
    if curve:
        console.print(t)

    info = _kv_table()
    info.add_row("step η", Text(f"{_n(w.step)}, {num(w.steps)} steps, time covered t = {_n(w.time)}"))
    where = (lambda tt: f"k = {_n(at(tt))}") if step is not None else (lambda tt: f"t = {_n(tt)}")
    if compared:
        if step is not None and w.checked_until is not None:
            info.add_row("checked until", Text(f"k = {_n(at(w.checked_until))} (t = {_n(w.checked_until)})"))
        else:
            info.add_row("checked until", Text(f"t = {_n(w.checked_until)}"))
    else:
        info.add_row("compared", Text("no: no rate is claimed, so there is no bound to check the descent "
                                      "against", style="dim"))
    sym, scale = _region_scale(result)
    dtext = Text(f"{_n(w.max_distance)}")
    if scale is not None:
        ok = _le(w.max_distance, scale)
        dtext.append(f" {'≤' if ok else '>'} {sym} = {_n(scale)} ")
        dtext.append(_check(ok), style="green" if ok else "red")
    info.add_row("max ‖θt − θ0‖", dtext)
    rho = (result.region or {}).get("path_length_bound")
    ptext = Text(f"{_n(w.path_length)}")
    if rho is not None:
        ok = _le(w.path_length, rho)
        ptext.append(f" {'≤' if ok else '>'} ρ = {_n(rho, up)} ")
        ptext.append(_check(ok), style="green" if ok else "red")
    info.add_row("path length", ptext)
    if w.left_region_at is not None:
        info.add_row("left region", Text(f"at {where(w.left_region_at)}", style="yellow"))
    if v:
        info.add_row("violation", Text(f"at {where(v.get('t'))}: L = {_n(v.get('loss'))} > "
                                       f"bound = {_n(v.get('bound'), up)}", style="bold red"))
    elif compared:
        info.add_row("violation", Text("none", style="green"))
    console.print(info)


def _number_text(result: Result, key: str, value) -> str:
    """A failure's number: a lower bound of R (mu…) never negative; in the sound mode *_lower rounded
    down and *_upper (and needed…) up."""
    if key.startswith("mu") or key in ("kl_constant",):
        return _lower(value, _way(result, "down"))
    if key.endswith("_lower"):
        return _n(value, _way(result, "down"))
    if key.endswith("_upper") or key.startswith("needed"):
        return _n(value, _way(result, "up"))
    return _n(value)


def _failure(result: Result, console: Console) -> None:
    f = result.failing_region
    if f is None:
        return
    _heading(console, f"Failure: {f.kind}")
    msg = Text(_words(f.message))
    if f.span:
        msg.append(f"  (line {f.span.get('line')}, column {f.span.get('column')})", style="dim")
    console.print(Padding(msg, (0, 0, 0, 2)))          # wrapped lines keep the indent
    if f.points:
        t = _data_table(("‖θ − center‖", "right"), ("L(θ)", "right"), ("R(θ)", "right"), ("source", "left"))
        for p in f.points:
            t.add_row(Text(_n(p.distance)), Text(_n(p.loss)), Text(_n(p.rayleigh)), Text(_words(p.source)))
        console.print(t)
    numbers = {k: v for k, v in (f.numbers or {}).items() if k != "exit_code"}
    if numbers:
        nums = _kv_table()
        for k, v in numbers.items():
            nums.add_row(Text(_words(str(k))), Text(_number_text(result, str(k), v)))
        console.print(nums)
    if f.suggestion:
        console.print(_hanging("  suggestion:", Text(_words(f.suggestion), style="yellow"), "yellow"))


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
        console.print(_hanging("note:", Text(_words(note), style="dim"), "dim"))
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
    _proof(result, console)
    _rate(result, console)
    _witness(result, console)
    _failure(result, console)
    _diagnostics(result, console, source)
    _footer(result, console)
