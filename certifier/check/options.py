"""Statement-level choices: loss, region, method, desingularizer, certify.

Each is `name` or `name(keyword=value, ...)`; values are numeric constant expressions or the
bare names `auto` / `init` where the table allows them."""
from __future__ import annotations

from ..diagnostics import Collector
from ..language.ast import Call
from ..language.losses import LOSSES
from .checked import Choice
from .expressions import spanning
from .names import did_you_mean, join, listing
from .values import MAX_SEED, SEED_HINT, number

REQUIRED = object()
MAX_HORIZON = 1e15   # below 2^53: with step=, every step count k <= horizon is exact in a double

# statement -> choice -> keyword -> (default, kind). Kinds: init, auto|positive, positive,
# nonneg, posint, seed, horizon, samples, alpha, functions, route, onoff.
FORMS: dict[str, dict[str, dict[str, tuple[object, str]]]] = {
    "region": {
        "ball": {"center": ("init", "init"), "radius": ("auto", "auto|positive")},
        "box": {"center": ("init", "init"), "halfwidth": (REQUIRED, "positive")},
    },
    "method": {"sampled": {"samples": (4096, "samples"), "seed": (0, "seed")},
               "interval": {"boxes": (2000, "posint"), "seed": (0, "seed"),
                            "functions": ("margin", "functions"), "route": ("region", "route"),
                            "hessian": ("off", "onoff"), "tolerance": (0.004, "positive"),
                            "segments": (None, "posint")}},
    "desingularizer": {"auto": {}, "log": {}, "lambert": {}, "power": {"alpha": (REQUIRED, "alpha")}},
    "certify": {"rate": {"floor": (0.0, "nonneg"), "horizon": (1e4, "horizon"), "step": (None, "positive")}},
}

DEFAULTS = {"region": "ball", "method": "sampled", "desingularizer": "auto", "certify": "rate"}

EXAMPLES = {"ball": "ball(center=init, radius=auto)", "box": "box(center=init, halfwidth=0.1)",
            "sampled": "sampled(samples=4096, seed=0)", "interval": "interval(boxes=2000, seed=0, functions=margin, route=region)",
            "rate": "rate(floor=0, horizon=1e4)", "power": "power(alpha=2/3)"}

# statement -> (code, noun) for unknown names.
UNKNOWN = {"loss": ("E106", "loss"), "region": ("E108", "region"), "method": ("E107", "method"),
           "desingularizer": ("E111", "desingularizer"), "certify": ("E110", "claim")}

LATER: dict[tuple[str, str], str] = {}

WHAT = {
    "radius": ("the radius", "write a positive number, or radius=auto to let certify choose"),
    "halfwidth": ("the halfwidth", "the box spans init ± halfwidth in every coordinate; write a "
                  "positive number"),
    "samples": ("samples", "the number of sampled points, such as samples=4096"),
    "boxes": ("boxes", "the budget of boxes the sound interval method may evaluate, such as boxes=2000"),
    "seed": ("the seed", SEED_HINT),
    "functions": ("functions", "how the sound mode bounds exp, log, tanh, sin, cos, ...: margin (the "
                  "library's result widened by 2^-40 relative, fast) or arb (python-flint's rigorous "
                  "ball arithmetic, slower)"),
    "route": ("route", "how the sound mode confines the flow: region (a bound on R over the whole region) "
              "or trajectory (a validated tube around the numerical flow from theta0, then the ball rule "
              "around its end; docs/sound.md)"),
    "hessian": ("hessian", "the `hessian` rule of the sound mode (least squares with fewer parameters than outputs: "
                "strong convexity from an interval Hessian near a minimiser, docs/sound.md): on or off"),
    "tolerance": ("tolerance", "with route=trajectory, the error each segment of the tube may add, as a "
                  "fraction of the tube's radius cap 0.02, such as tolerance=0.001 (smaller: more, shorter "
                  "segments and a thinner tube; docs/sound.md)"),
    "segments": ("segments", "with route=trajectory, the most segments the tube may take before the "
                 "run ends inconclusive, such as segments=3000 (default 400, times 0.004/tolerance)"),
    "floor": ("the floor", "the floor is a loss level, zero or more, such as floor=0"),
    "horizon": ("the horizon", "the gradient-flow time the claim covers (with step=, a number of "
                "steps), such as horizon=1e4; at most 1e15"),
    "step": ("the step", "the gradient-descent step size eta, such as step=0.01; leave it out for "
             "gradient flow"),
    "alpha": ("alpha", "the Lojasiewicz exponent: phi'(u) = u^(-2 alpha) with 1/2 < alpha <= 1, "
              "such as power(alpha=2/3)"),
}


def forms(statement: str) -> dict[str, dict[str, tuple[object, str]]]:
    if statement == "loss":
        return {name: {} for name in LOSSES}
    return FORMS[statement]


def default(statement: str) -> Choice:
    name = DEFAULTS[statement]
    return Choice(name, {k: d for k, (d, _) in FORMS[statement][name].items()}, None)


def check_choice(statement: str, call: Call | None, collector: Collector, source: str) -> Choice | None:
    """The validated choice; the default when the statement is absent; None after an error."""
    if call is None:
        return default(statement) if statement in DEFAULTS else None
    table = forms(statement)
    if call.name not in table:
        code, noun = UNKNOWN[statement]
        plural = "losses" if noun == "loss" else noun + "s"
        hint = join(LATER.get((statement, call.name)), did_you_mean(call.name, table),
                    f"the {plural} are: {listing(table)}")
        collector.error(code, f"unknown {noun} '{call.name}'", call.span, hint)
        return None
    keywords = table[call.name]
    example = EXAMPLES.get(call.name, call.name)
    ok = True
    if not keywords and (call.args or call.kwargs):
        first = call.args[0].span if call.args else next(iter(call.kwargs.values())).span
        last = max([a.span for a in call.args] + [k.value.span for k in call.kwargs.values()],
                   key=lambda s: (s.end_line, s.end_column))
        collector.error("E104", f"'{call.name}' takes no arguments", spanning(first, last),
                        f"write `{statement} {call.name}`")
        return None
    if call.args:
        ok = False
        collector.error("E104", f"'{call.name}' takes keyword arguments only",
                        spanning(call.args[0].span, call.args[-1].span), f"write {example}")
    options: dict[str, object] = {}
    spans = {}
    for key, kw in call.kwargs.items():
        if key not in keywords:
            ok = False
            collector.error("E104", f"'{call.name}' has no option '{key}'", kw.span,
                            join(did_you_mean(key, keywords), f"its options are: {listing(keywords)}"))
            continue
        value = _value(key, keywords[key][1], kw.value, collector, source)
        if value is None:
            ok = False
            continue
        options[key] = value
        spans[key] = kw.value.span
    for key, (fallback, _) in keywords.items():
        if key in options or key in call.kwargs:
            continue
        if fallback is REQUIRED:
            ok = False
            collector.error("E104", f"'{call.name}' needs {key}=", call.span, f"write {example}")
            continue
        options[key] = fallback
    if not ok:
        return None
    return Choice(call.name, {k: options[k] for k in keywords}, call.span, spans)


def _value(key: str, kind: str, e, collector: Collector, source: str):
    what, hint = WHAT.get(key, (key, None))
    bare = e.attrs.get("id") if e.op == "name" else None
    if kind == "init":
        if bare != "init":
            collector.error("E109", f"the {key} must be init", e.span,
                            "only regions centred at the initial parameters are available in this "
                            "version: write center=init")
            return None
        return "init"
    if kind == "functions":
        if bare not in ("margin", "arb"):
            collector.error("E109", "functions must be margin or arb" + (f", not '{bare}'" if bare else ""),
                            e.span, join(did_you_mean(bare, ("margin", "arb")) if bare else None,
                                         "write functions=margin or functions=arb; " + hint))
            return None
        return bare
    if kind == "route":
        if bare not in ("region", "trajectory"):
            collector.error("E109", "route must be region or trajectory" + (f", not '{bare}'" if bare else ""),
                            e.span, join(did_you_mean(bare, ("region", "trajectory")) if bare else None,
                                         "write route=region or route=trajectory; " + hint))
            return None
        return bare
    if kind == "onoff":
        if bare not in ("on", "off"):
            collector.error("E109", f"{key} must be on or off" + (f", not '{bare}'" if bare else ""),
                            e.span, join(did_you_mean(bare, ("on", "off")) if bare else None,
                                         f"write {key}=on or {key}=off; " + hint))
            return None
        return bare
    if kind == "auto|positive" and bare == "auto":
        return "auto"
    if kind in ("auto|positive", "positive"):
        return number(e, collector, source, what, minimum=0, strict=True, hint=hint)
    if kind == "nonneg":
        return number(e, collector, source, what, minimum=0, hint=hint)
    if kind == "posint":
        return number(e, collector, source, what, minimum=0, strict=True, integer=True, hint=hint)
    if kind == "samples":
        return number(e, collector, source, what, minimum=0, strict=True, integer=True, hint=hint,
                      maximum=10**7)
    if kind == "alpha":
        return number(e, collector, source, what, minimum=0.5, strict=True, maximum=1.0, hint=hint)
    if kind == "seed":
        return number(e, collector, source, what, minimum=0, integer=True, hint=hint, maximum=MAX_SEED)
    if kind == "horizon":
        return number(e, collector, source, what, minimum=0, strict=True, hint=hint, maximum=MAX_HORIZON)
    raise KeyError(kind)
