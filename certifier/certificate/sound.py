"""Certificates of the sound mode: `certify SPEC --emit CERT.json` on a `method interval` result
writes the proof, `certify check CERT.json` replays it WITHOUT search (docs/output.md,
"Certificates of the sound mode").

Evidence kinds (registered in certificate.VERIFIERS):

- `sound-proof` (exactly one): the region (kind, radius), the floor, L0↑ (an upper bound on
  L(θ0)), μ (rounded down), ρ↑ (rounded up), the elementary-function mode, the root box and the
  split tree: every split as [path, coordinate, point], a path being the string of child indices
  from the root ('0' the lower half [lo, point], '1' the upper half [point, hi] along the
  coordinate). For a refutation it says so instead.
- `sound-leaf` (one per leaf of the split tree): its path, its box (lo and hi per parameter), its
  status (`proven` with the rule, its bound and numbers, or `dropped` with the reason: entirely
  below the floor, or outside the ball).
- `sound-refutation`: the verified point θ* (and the numbers verified there).

Every float the proof rests on is written with float.hex (bit-exact round trip); the readable
copies (`value`, `numbers`) are informative.

The replay: the root box is recomputed from the spec (θ0 and the radius, rounded outward as the
engine does); walking the split tree from it gives every leaf's box exactly, and each must be the
recorded one, every path of the tree must end at exactly one leaf and every leaf must lie on the
tree (so the leaves cover the region: each split cuts [lo, hi] into [lo, a] ∪ [a, hi] with
lo < a < hi). Each proven leaf's rule is re-run on its box (one interval evaluation and one rule,
no search) and must give at least the recorded bound (1e-9 relative, for other BLAS builds) and at
least μ (exactly: this is the proof); each dropped leaf's reason is re-checked. μ ≤ the smallest
recorded bound, L0↑ ≥ the recomputed interval bound on L(θ0), ρ↑ recomputed with outward
rounding ≤ the radius, and the rate L(t) ≤ max(φ⁻¹(φ(L0↑) − cμt), floor) (least squares:
L0↑ e^{−4μt}; φ and c of the loss, c recomputed, docs/theory.md 10.8) rebuilt and compared with
the recorded formula and curve. A refutation is re-verified by interval evaluation at θ* against the
μ that confinement needs, recomputed from the spec.
"""
from __future__ import annotations

import math
from types import SimpleNamespace

from ..analyse.sound.ball import BallModel, ball_rule
from ..analyse.sound.bnb import _jsonable
from ..analyse.sound.evidence import SoundEvidence
from ..analyse.sound.region import SoundRegion, verify_point
from ..analyse.sound.rules import RULES, RuleContext, subspace_facts
from ..analyse.sound.smoothness import smoothness_bound
from ..compile.interval import NotSupported
from ..compile.interval_model import IntervalModel
from ..compile.rounding import down, elementary, up
from ..compose.sound import (
    ZERO_MU,
    auto_from_profile,
    band_edges,
    gradient_bound,
    meets,
    needed_mu_lower,
    phi_supported,
    profile_rate,
    profile_rho,
    rho_step_upper,
    rho_upper,
    sound_constant,
    sound_rate,
)
from ..language.desingularizers import make
from ..language.losses import LOSSES
from . import tube as tube_cert
from .base import CertificateError, VerifyContext, evidence_digest, header

NOTE = ("a valid sound certificate is a proof for the model and data as stored: the leaves cover the "
        "region and each leaf's rule was re-run on its box (or the ball rule on the whole ball), and mu, rho "
        "and the rate follow with outward rounding (elementary functions as the method's functions= mode says)")
NOTE_REFUTED = ("a valid sound refutation: the recorded point, re-verified by interval evaluation, lies in the "
                "region with L >= floor and R below the mu that confinement needs there (docs/theory.md 10.1)")
RELATIVE = 1e-9          # a re-run rule may differ from the recorded bound by this much (other BLAS)


def hx(x) -> str:
    return float(x).hex()


def unhex(s) -> float:
    if not isinstance(s, str):
        raise ValueError(f"{s!r} is not a float.hex string")
    return float.fromhex(s)


def _hexes(a) -> list[str]:
    return [float(v).hex() for v in a]


def _unhexes(values, m: int):
    import numpy as np

    if not isinstance(values, list) or len(values) != m:
        raise ValueError(f"{len(values) if isinstance(values, list) else 'no'} entries, the spec has {m} parameters")
    return np.array([unhex(v) for v in values], dtype=np.float64)


# --- emit -----------------------------------------------------------------------------------------

def build_sound(result, spec_path: str, source: str, allow_python: bool = False, device: str = "cpu") -> dict:
    ev = result._records
    if not isinstance(ev, SoundEvidence):
        raise CertificateError("the result has no evidence (it was not computed in this run)")
    if getattr(ev, "tube", None) is not None:        # the trajectory route (certificate/tube.py)
        return tube_cert.build(result, spec_path, source, allow_python)
    if result.verdict not in ("certified", "refuted"):
        kind = result.failing_region.kind if result.failing_region is not None else result.verdict
        raise CertificateError(f"the sound result is {result.verdict} ({kind}): nothing is proved, "
                               "there is nothing to certify")
    outcome = ev.outcome
    proof = {"kind": "sound-proof", "region": ev.region, "radius": hx(ev.radius) if ev.radius is not None else None,
             "floor": hx(ev.floor), "L0_upper": hx(ev.L0_upper), "functions": ev.functions}
    evidence = [proof]
    rate_params, formula, curve = None, None, []
    if result.verdict == "certified" and outcome is None:
        proof["initial_below_floor"] = True
        rate_params = {"kind": "constant", "value": hx(ev.L0_upper)}
    elif result.verdict == "certified" and outcome.tree.get("ball") is not None:
        bound = outcome.tree["ball"]
        proof.update(mu=hx(ev.mu), rho=hx(ev.rho), ball=True, leaves=0)
        evidence.append({"kind": "sound-ball", "radius": hx(ev.radius), "rule": bound.rule, "bound": hx(bound.value),
                         "value": float(bound.value), "numbers": _jsonable(bound.numbers)})
    elif result.verdict == "certified":
        tree = outcome.tree
        if ev.sample_bound is not None:      # M of the rate's c, >= every proven leaf's per-sample bound
            proof["sample_bound"] = hx(ev.sample_bound)
        proof.update(mu=hx(ev.mu), rho=hx(ev.rho), boxes_evaluated=outcome.boxes_evaluated,
                     root={"lo": _hexes(tree["lo"]), "hi": _hexes(tree["hi"])},
                     splits=[[path, int(j), hx(at)] for path, j, at in tree["splits"]],
                     leaves=len(tree["leaves"]))
        for path, node in tree["leaves"]:
            leaf = {"kind": "sound-leaf", "path": path, "lo": _hexes(node.lo), "hi": _hexes(node.hi),
                    "status": node.status}
            if node.status == "dropped":
                leaf["reason"] = node.note
            else:
                leaf.update(rule=node.bound.rule, bound=hx(node.bound.value), value=float(node.bound.value),
                            numbers=_jsonable(node.bound.numbers))
            evidence.append(leaf)
    if ev.step is not None and result.verdict == "certified" and outcome is not None:
        # gradient descent: the step and the proved bounds over the region the replay recomputes
        proof.update(step=hx(ev.step), smoothness=hx(ev.smoothness), kernel_bound=hx(ev.kernel_bound))
    if ev.profile is not None and result.verdict == "certified" and outcome is not None:
        # the loss-level profile: the band edges and each band's proved mu (docs/theory.md 10.11)
        proof["profile"] = {"edges": _hexes(ev.profile["edges"]), "mu": _hexes(ev.profile["mu"])}
        if ev.profile.get("auto") is not None:
            # `desingularizer auto`'s choice from the proved profile; the replay re-derives it
            auto = ev.profile["auto"]
            proof["profile"]["auto"] = {"alpha": hx(auto["alpha"]) if auto["alpha"] is not None else None,
                                        "kept": auto["kept"], "exponent": auto["exponent"]}
        rate_params = {"kind": "sound", "profile": True, "L0_upper": hx(ev.L0_upper), "mu": hx(ev.mu),
                       "floor": hx(ev.floor), "horizon": float(ev.horizon)}
        rate = ev.profile.get("rate")
        if rate is None:
            c = (result.loss or {})["constant"]
            rate = profile_rate(ev.profile["edges"], ev.profile["mu"], c, ev.phi or LOSSES[(result.loss or {})["name"]]
                                .natural_phi(), ev.L0_upper, ev.floor)
        formula, curve = rate.formula(), rate.curve(ev.horizon)
    elif result.verdict == "certified" and outcome is not None:
        rate_params = {"kind": "sound", "L0_upper": hx(ev.L0_upper), "mu": hx(ev.mu), "floor": hx(ev.floor),
                       "horizon": float(ev.horizon)}
        if ev.step is not None:
            rate_params.update(step=hx(ev.step), smoothness=hx(ev.smoothness))
        rate = sound_rate((result.loss or {})["name"], ev.L0_upper, ev.mu, ev.floor, (result.loss or {})["constant"],
                          ev.step, ev.smoothness, ev.phi)
        formula, curve = rate.formula(), rate.curve(ev.horizon)
    elif result.verdict == "refuted":
        point = outcome.failing_points[0]
        proof.update(refutation=True, needed=hx(ev.refute_below))
        evidence.append({"kind": "sound-refutation", "theta": _hexes(outcome.refutation_theta),
                         **{k: point[k] for k in ("distance", "loss_lower", "loss_upper", "rayleigh_upper",
                                                  "needed_mu", "min_loss_lower", "claim_false") if k in point}})
    loss = result.loss or {}
    radius = ev.radius if ev.radius is not None else 0.0
    return {
        **header(result, spec_path, source, allow_python),
        "numbers": {"L0": float(loss["initial"]), "L0_upper": ev.L0_upper, "mu": ev.mu, "floor": ev.floor,
                    "radius": radius, "region": ev.region, "rho": ev.rho, "horizon": ev.horizon},
        "rate": {"parameters": rate_params, "formula": formula, "curve": curve},
        "evidence_count": len(evidence),
        "evidence_digest": evidence_digest(evidence),
        "evidence": evidence,
        "note": NOTE,
    }


# --- check ----------------------------------------------------------------------------------------

def _state(ctx: VerifyContext) -> dict:
    """The replay's shared state (built once per check from the spec and the sound-proof entry)."""
    st = ctx.state.get("sound")
    if st is not None:
        return st
    st = {"ok": False, "leaves": {}, "rule_evaluations": 0, "boxes": 0, "refutations": 0}
    ctx.state["sound"] = st
    proofs = [e for e in ctx.cert.get("evidence") or [] if isinstance(e, dict) and e.get("kind") == "sound-proof"]
    if len(proofs) != 1:
        ctx.reject(f"sound: {len(proofs)} sound-proof entries; a sound certificate has exactly one")
        return st
    proof = proofs[0]
    try:
        _setup(st, proof, ctx)
    except (KeyError, TypeError, ValueError) as exc:
        ctx.reject(f"sound-proof: malformed entry ({type(exc).__name__}: {exc})")
        st["ok"] = False
    return st


def _setup(st: dict, proof: dict, ctx: VerifyContext) -> None:
    checked = ctx.problem.checked
    method, claim, region = checked.method, checked.claim.options, checked.region
    if method.name != "interval":
        ctx.reject(f"sound-proof: the spec's method is '{method.name}', not interval")
        return
    functions = str(method.options.get("functions") or "margin")
    if proof.get("functions") != functions:
        ctx.reject(f"sound-proof: elementary functions '{proof.get('functions')}', the spec says '{functions}'")
        return
    floor = float(claim.get("floor", 0.0))
    if unhex(proof["floor"]) != floor:
        ctx.reject(f"sound-proof: floor {unhex(proof['floor'])!r}, the spec's floor is {floor!r}")
        return
    if proof.get("region") != region.name:
        ctx.reject(f"sound-proof: region '{proof.get('region')}', the spec's region is '{region.name}'")
        return
    given = region.options.get("radius") if region.name == "ball" else region.options.get("halfwidth")
    auto = given == "auto"
    with elementary(functions):
        try:
            model = IntervalModel(checked)
        except NotSupported as exc:
            ctx.reject(f"sound-proof: {exc.message}: not supported in the sound mode")
            return
        enc0 = model.at_point(model.theta0, False)
    st.update(proof=proof, functions=functions, floor=floor, model=model, auto=auto, m=model.m,
              L0_up=float(enc0.L.hi), L0_lo=float(enc0.L.lo), horizon=float(claim.get("horizon", 1e4)))
    if proof.get("initial_below_floor"):
        st["ok"] = True
        return
    radius = unhex(proof["radius"])
    if not auto and radius != float(given):
        ctx.reject(f"sound-proof: radius {radius!r}, the spec's is {float(given)!r}")
        return
    if not (radius > 0 and math.isfinite(radius)):
        ctx.reject(f"sound-proof: radius {radius!r} is not a positive number")
        return
    reg = SoundRegion(SimpleNamespace(kind=region.name, center=model.theta0, radius=radius, halfwidth=radius))
    with elementary(functions):
        rctx = RuleContext(model, floor, subspace_facts(model), dict(model.blocks))
    step = claim.get("step")
    st["step"] = float(step) if step is not None else None
    if st["step"] is not None:
        with elementary(functions):
            smooth = smoothness_bound(model, reg.lo, reg.hi)
        if isinstance(smooth, str):
            ctx.reject(f"sound-proof: the spec's step needs a smoothness bound: {smooth}")
            return
        st["smooth"] = smooth
    st.update(radius=radius, reg=reg, rctx=rctx,
              needed_lower=needed_mu_lower(st["L0_lo"], floor, radius, *_natural(model, floor, st["L0_up"])), ok=True)


def verify_proof(entry: dict, ctx: VerifyContext) -> None:
    """The region, floor and functions against the spec; builds the replay's model (its numbers are
    checked by check_sound after every leaf)."""
    _state(ctx)


def verify_leaf(entry: dict, ctx: VerifyContext) -> None:
    """Re-run the leaf's rule on its box (or re-check why it was dropped)."""
    import numpy as np


    st = _state(ctx)
    if not st["ok"]:
        return
    path = entry.get("path")
    name = f"leaf {path!r}"
    if not isinstance(path, str) or set(path) - {"0", "1"}:
        ctx.reject(f"{name}: its path is not a string of 0 and 1")
        return
    if path in st["leaves"]:
        ctx.reject(f"{name}: two leaves have this path")
        return
    try:
        lo, hi = _unhexes(entry.get("lo"), st["m"]), _unhexes(entry.get("hi"), st["m"])
    except ValueError as exc:
        ctx.reject(f"{name}: its box is malformed ({exc})")
        return
    if not np.all(lo <= hi):
        ctx.reject(f"{name}: its box has lo > hi")
        return
    st["leaves"][path] = {"lo": lo, "hi": hi, "status": entry.get("status")}
    st["boxes"] += 1
    ctx.checked_points += 1
    model, floor = st["model"], st["floor"]
    status = entry.get("status")
    with elementary(st["functions"]):
        if status == "dropped":
            reason = entry.get("reason")
            if reason == "outside the ball":
                if not st["reg"].outside(lo, hi):
                    ctx.reject(f"{name}: dropped as outside the ball, but its box meets the ball")
            elif reason == "entirely below the floor":
                L_hi = float(model.over_box(lo, hi).L.hi)
                if not L_hi < floor:
                    ctx.reject(f"{name}: dropped as entirely below the floor, but max L over it is only bounded "
                               f"by {L_hi!r} >= floor {floor!r}")
            elif reason == "entirely above the initial loss":
                # the flow never leaves {L <= L(theta0)}: min L over the box above L0's upper bound
                L_lo = float(model.over_box(lo, hi).L.lo)
                if not L_lo > st["L0_up"]:
                    ctx.reject(f"{name}: dropped as entirely above the initial loss, but min L over it is only "
                               f"bounded by {L_lo!r} <= {st['L0_up']!r} >= L(theta0)")
            else:
                ctx.reject(f"{name}: dropped for an unknown reason {reason!r}")
            return
        if status != "proven":
            ctx.reject(f"{name}: status {status!r}; a leaf of a proof is proven or dropped")
            return
        rule = RULES.get(entry.get("rule"))
        try:
            recorded = unhex(entry.get("bound"))
        except ValueError as exc:
            ctx.reject(f"{name}: its bound is malformed ({exc})")
            return
        if rule is None:
            ctx.reject(f"{name}: unknown rule {entry.get('rule')!r}")
            return
        enc = model.over_box(lo, hi)
        bound = rule(st["rctx"], enc)
        st["rule_evaluations"] += 1
        st["leaves"][path]["loss"] = (float(enc.L.lo), float(enc.L.hi))    # for a loss-level profile
        if enc.per_sample is not None:       # the largest per-sample bound over the proven leaves
            st["sample_max"] = max(st.get("sample_max", -math.inf), float(max(enc.per_sample.hi)))
    value = None if bound is None or math.isnan(bound.value) else max(float(bound.value), 0.0)
    st["leaves"][path]["recorded"] = recorded
    st["leaves"][path]["value"] = value
    if value is None:
        ctx.reject(f"{name}: the rule '{entry.get('rule')}' does not apply to its box")
    elif value < recorded - RELATIVE * abs(recorded):
        ctx.reject(f"{name}: the rule '{entry.get('rule')}' re-run on its box gives {value!r}, "
                   f"below the recorded bound {recorded!r}")
    if entry.get("value") is not None and entry.get("value") != recorded:
        ctx.reject(f"{name}: its readable value {entry.get('value')!r} is not its bound {recorded!r}")


def verify_ball(entry: dict, ctx: VerifyContext) -> None:
    """Re-run the ball rule (ball.py) on the whole ball B(theta0, radius)."""

    st = _state(ctx)
    if not st["ok"]:
        return
    if "reg" not in st or st["reg"].kind != "ball":
        ctx.reject("sound-ball: the region is not a ball")
        return
    try:
        radius, recorded = unhex(entry.get("radius")), unhex(entry.get("bound"))
    except ValueError as exc:
        ctx.reject(f"sound-ball: malformed entry ({exc})")
        return
    if radius != st["radius"]:
        ctx.reject(f"sound-ball: radius {radius!r}, the region's is {st['radius']!r}")
        return
    with elementary(st["functions"]):
        bm = BallModel(st["model"])
        if bm.unsupported is not None:
            ctx.reject(f"sound-ball: the ball rule does not apply ({bm.unsupported})")
            return
        bound = ball_rule(st["model"], bm, st["model"].theta0, radius)
    st["rule_evaluations"] += 1
    st["boxes"] += 1
    ctx.checked_points += 1
    value = max(float(bound.value), 0.0)
    st["ball"] = {"recorded": recorded, "value": value}
    if value < recorded - RELATIVE * abs(recorded):
        ctx.reject(f"sound-ball: the ball rule re-run gives {value!r}, below the recorded bound {recorded!r}")


def verify_refutation(entry: dict, ctx: VerifyContext) -> None:
    """Re-verify the refuting point by interval evaluation."""

    st = _state(ctx)
    if not st["ok"]:
        return
    if "reg" not in st:
        ctx.reject("sound-refutation: the certificate has no region to refute")
        return
    try:
        theta = _unhexes(entry.get("theta"), st["m"])
    except ValueError as exc:
        ctx.reject(f"sound-refutation: theta is malformed ({exc})")
        return
    ctx.checked_points += 1
    with elementary(st["functions"]):
        out = verify_point(st["model"], st["reg"], theta, st["floor"], st["needed_lower"], st["rctx"].subspace)
    if out is None:
        ctx.reject("sound-refutation: the point does not verify (interval evaluation there does not show it in "
                   f"the region with L >= floor and R < {st['needed_lower']!r}, the mu confinement needs)")
        return
    # only a counterexample the flow can meet is a verdict: a proof that min L > floor, or a
    # near-critical point in the sublevel set {L <= L(theta0)}
    decisive = bool(out.get("claim_false")) or (out["rayleigh_upper"] <= ZERO_MU * (ctx.r0 or math.inf)
                                                and out["loss_upper"] <= st["L0_lo"])
    if not decisive:
        ctx.reject(f"sound-refutation: a refutation needs R <= {ZERO_MU:g} R(theta0) at a point proved in the "
                   f"sublevel set L <= L(theta0) (or a proof that min L > floor); there R <= "
                   f"{out['rayleigh_upper']!r} and L <= {out['loss_upper']!r}")
        return
    st["refutations"] += 1


def check_sound(cert: dict, ctx: VerifyContext) -> None:
    """The proof's numbers: coverage by the split tree, mu, rho, the rate; or the refutation."""

    if tube_cert.is_tube(cert):                      # the trajectory route (certificate/tube.py)
        return tube_cert.check(cert, ctx)
    st = _state(ctx)
    ctx.state["note"] = NOTE
    if not cert.get("sound"):
        ctx.reject("a method interval certificate must be sound")
    if not st["ok"]:
        return
    proof, n, verdict = st["proof"], ctx.numbers, cert.get("verdict")
    try:
        L0_up = unhex(proof["L0_upper"])
    except (KeyError, ValueError) as exc:
        ctx.reject(f"sound-proof: L0_upper is malformed ({exc})")
        return
    if not L0_up >= st["L0_up"]:
        ctx.reject(f"L0_upper = {L0_up!r} is below the recomputed interval bound {st['L0_up']!r} on L(theta0)")
    if n.get("L0_upper") != L0_up:
        ctx.reject(f"numbers: L0_upper {n.get('L0_upper')!r} is not the proof's {L0_up!r}")
    if n.get("floor") != st["floor"] or n.get("horizon") != st["horizon"]:
        ctx.reject(f"numbers: floor {n.get('floor')!r} or horizon {n.get('horizon')!r} is not the spec's "
                   f"({st['floor']!r}, {st['horizon']!r})")
    if "radius" in st and n.get("radius") != st["radius"]:
        ctx.reject(f"numbers: radius {n.get('radius')!r} is not the proof's {st['radius']!r}")
    kind = cert.get("failing_kind")
    if verdict in ("certified", "refuted") and kind != {"certified": None, "refuted": "critical-point"}[verdict]:
        ctx.reject(f"failing kind {kind!r}: a sound certificate is certified (no failing kind) or refuted "
                   "(critical-point)")
    if verdict == "refuted":
        ctx.state["note"] = NOTE_REFUTED
        if not proof.get("refutation"):
            ctx.reject("a refuted sound certificate needs a sound-proof entry with refutation: true")
        if st["refutations"] != 1:
            ctx.reject(f"a refuted sound certificate needs one verified sound-refutation point ({st['refutations']})")
        ctx.state["summary"] = f"{ctx.checked_points} refuting point re-verified, no search"
        return
    if verdict != "certified":
        ctx.reject(f"verdict {verdict!r}: a sound certificate is certified or refuted")
        return
    rate = cert.get("rate") or {}
    if proof.get("initial_below_floor"):
        if not st["L0_up"] <= st["floor"]:
            ctx.reject(f"initial_below_floor: the recomputed bound {st['L0_up']!r} on L(theta0) exceeds the floor")
        if st["leaves"]:
            ctx.reject("initial_below_floor: a certificate without a region has no leaves")
        if (rate.get("parameters") or {}).get("kind") != "constant":
            ctx.reject("initial_below_floor: the rate must be the constant L0_upper")
        ctx.state["summary"] = "L(theta0) <= floor re-verified, no search"
        ctx.state["vacuous"] = (f"the spec's floor {st['floor']!r} is at or above L0 (L0_upper = {L0_up!r}): the "
                                "bound holds from t = 0 and says nothing about convergence")
        return
    try:
        mu, rho_rec = unhex(proof["mu"]), unhex(proof["rho"])
    except (KeyError, ValueError) as exc:
        ctx.reject(f"sound-proof: mu or rho is malformed ({exc})")
        return
    if proof.get("ball"):                       # the ball rule on the whole ball: no cover to check
        ball = st.get("ball")
        if ball is None:
            ctx.reject("a ball-rule proof needs its verified sound-ball entry")
            return
        proven, checked = [ball], [("ball", ball)]
    else:
        _check_cover(st, proof, ctx)
        proven = [leaf for leaf in st["leaves"].values() if leaf["status"] == "proven"]
        checked = [(path, leaf) for path, leaf in st["leaves"].items() if leaf["status"] == "proven"]
    if proof.get("leaves") != len(st["leaves"]):
        ctx.reject(f"sound-proof: {proof.get('leaves')} leaves, the certificate has {len(st['leaves'])} "
                   "(a leaf was removed or added)")
    if proof.get("profile") is not None:
        _check_profile(st, proof, cert, ctx, L0_up, mu, rho_rec)
        return
    recorded = min((leaf.get("recorded", -math.inf) for leaf in proven), default=math.inf)
    if not mu <= recorded:
        ctx.reject(f"mu = {mu!r} is above the smallest leaf bound {recorded!r}")
    weak = [(leaf.get("value"), path) for path, leaf in checked
            if not (leaf.get("value") is not None and leaf["value"] >= mu)]
    if weak:
        value, path = weak[0]
        ctx.reject(f"leaf {path!r}: its re-run rule gives {value!r} < mu = {mu!r} ({len(weak)} such leaves)")
    if not mu > 0:
        ctx.reject(f"mu = {mu!r}: a certified certificate needs mu > 0")
        return
    M = None
    if proof.get("sample_bound") is not None:
        try:
            M = unhex(proof["sample_bound"])
        except ValueError as exc:
            ctx.reject(f"sound-proof: sample_bound is malformed ({exc})")
            return
        if proof.get("ball") or not M >= st.get("sample_max", math.inf):
            ctx.reject(f"sound-proof: sample_bound M = {M!r} is not above every proven leaf's per-sample loss "
                       f"bound (recomputed: {st.get('sample_max')!r})")
            return
    phi, c = _natural(st["model"], st["floor"], L0_up, M)   # c recomputed from the spec (M = n L0_up, or M)
    step, beta = st.get("step"), None
    if step is None and proof.get("step") is not None:
        ctx.reject("sound-proof: a step is recorded, but the spec claims gradient flow (no step=)")
        return
    if step is not None:
        try:
            rec_step, beta, lam = unhex(proof["step"]), unhex(proof["smoothness"]), unhex(proof["kernel_bound"])
        except (KeyError, ValueError) as exc:
            ctx.reject(f"sound-proof: the spec has step={step!r}, but the proof's step, smoothness or kernel_bound "
                       f"is missing or malformed ({exc})")
            return
        smooth = st["smooth"]
        if rec_step != step:
            ctx.reject(f"sound-proof: step {rec_step!r}, the spec's is {step!r}")
        if not (beta >= smooth.beta and lam >= smooth.lam):
            ctx.reject(f"sound-proof: smoothness {beta!r} or kernel bound {lam!r} is below the recomputed proved "
                       f"bounds over the region ({smooth.beta!r}, {smooth.lam!r})")
        if not float(up(step * beta)) <= 1.0:
            ctx.reject(f"sound-proof: step {step!r} exceeds 1/beta with beta = {beta!r}: no descent-lemma rate")
            return
        G = gradient_bound(L0_up, lam, st["model"].loss.name, st["model"].n)
        rho = rho_step_upper(L0_up, st["floor"], mu, phi, c, step, beta, G, st["horizon"])
    else:
        rho = rho_upper(L0_up, st["floor"], mu, phi, c)
    _check_rho(st, ctx, mu, rho, rho_rec, "recomputed with outward rounding")
    params = rate.get("parameters") or {}
    try:
        same = (params.get("kind") == "sound" and unhex(params.get("L0_upper")) == L0_up
                and unhex(params.get("mu")) == mu and unhex(params.get("floor")) == st["floor"])
        if step is not None:
            same = same and unhex(params.get("step")) == step and unhex(params.get("smoothness")) == beta
    except ValueError:
        same = False
    if not same:
        ctx.reject("rate: its parameters are not the proof's L0_upper, mu and floor" +
                   (", step and smoothness" if step is not None else ""))
    rebuilt = sound_rate(st["model"].loss, L0_up, mu, st["floor"], c, step, beta, phi)
    if rate.get("formula") != rebuilt.formula():
        ctx.reject(f"rate: the formula {rate.get('formula')!r} is not the rebuilt {rebuilt.formula()!r}")
    if [list(map(float, p)) for p in rate.get("curve") or []] != rebuilt.curve(st["horizon"]):
        ctx.reject("rate: the recorded curve is not the rebuilt bound max(phi^-1(phi(L0_upper) - c mu t), floor)")
    ctx.state["summary"] = ("the ball rule re-run on the whole ball, no search" if proof.get("ball") else
                            f"{st['boxes']} leaf boxes re-proved by {st['rule_evaluations']} rule evaluations, "
                            f"no search")
    ctx.state["counts"] = {"leaves": st["boxes"], "rule_evaluations": st["rule_evaluations"]}


def _check_profile(st: dict, proof: dict, cert: dict, ctx: VerifyContext, L0_up: float, mu: float,
                   rho_rec: float) -> None:
    """The loss-level profile (docs/theory.md 10.11): the band edges recomputed from the floor and L0_up,
    each band's mu at most the smallest re-run bound of the proven leaves whose recomputed loss
    enclosure meets it, rho summed over the bands with outward rounding, and the rate rebuilt."""
    if st.get("step") is not None or proof.get("step") is not None:
        ctx.reject("sound-proof: a loss-level profile proves a gradient-flow rate; the spec claims a step")
        return
    try:
        edges = [unhex(v) for v in proof["profile"]["edges"]]
        band_mu = [unhex(v) for v in proof["profile"]["mu"]]
    except (KeyError, TypeError, ValueError) as exc:
        ctx.reject(f"sound-proof: the profile is malformed ({exc})")
        return
    if edges != band_edges(st["floor"], L0_up) or len(band_mu) != len(edges) - 1:
        ctx.reject("sound-proof: the profile's band edges are not the half-decades between the floor and L0_upper")
        return
    proven = [leaf for leaf in st["leaves"].values() if leaf["status"] == "proven"]
    for (a, b), m in zip(zip(edges[:-1], edges[1:]), band_mu):
        values = [leaf.get("value") for leaf in proven if leaf.get("loss") is not None
                  and meets(leaf["loss"][0], leaf["loss"][1], a, b)]
        if any(v is None for v in values):
            ctx.reject(f"band [{a!r}, {b!r}]: a leaf that meets it has no re-run bound")
            return
        low = min(values, default=math.inf)
        if not (m <= low and m > 0):
            ctx.reject(f"band [{a!r}, {b!r}]: mu = {m!r}, but the re-run bounds of the leaves that meet it give "
                       f"{low!r} (and mu must be positive)")
            return
    finite = [m for m in band_mu if m != math.inf]
    if not finite or mu != min(finite):
        ctx.reject(f"mu = {mu!r} is not the smallest band mu {min(finite, default=None)!r}")
    phi, c = _natural(st["model"], st["floor"], L0_up)
    Ks = [math.inf if m == math.inf else float(down(c * m)) for m in band_mu]
    rho = profile_rho(edges, Ks, phi)
    _check_rho(st, ctx, mu, rho, rho_rec, "recomputed band by band with outward rounding")
    rate = cert.get("rate") or {}
    params = rate.get("parameters") or {}
    try:
        same = (params.get("kind") == "sound" and params.get("profile") is True
                and unhex(params.get("L0_upper")) == L0_up and unhex(params.get("mu")) == mu
                and unhex(params.get("floor")) == st["floor"])
    except ValueError:
        same = False
    if not same:
        ctx.reject("rate: its parameters are not the proof's L0_upper, mu and floor (a profile rate)")
    rebuilt = profile_rate(edges, band_mu, c, phi, L0_up, st["floor"])
    recorded_auto = proof["profile"].get("auto")
    if st["model"].checked.desingularizer.name == "auto":
        # auto's choice re-derived from the proved mu_k (docs/sound.md, "The loss-level profile"): the recorded one must match
        choice = auto_from_profile(st["model"].loss, edges, band_mu, c, L0_up, st["floor"], st["horizon"])
        derived = {"alpha": hx(choice["alpha"]) if choice["alpha"] is not None else None, "kept": choice["kept"]}
        if not isinstance(recorded_auto, dict) or {k: recorded_auto.get(k) for k in derived} != derived:
            ctx.reject(f"sound-proof: auto's choice {recorded_auto!r} is not the one re-derived from the proved "
                       f"profile {derived!r}")
        rebuilt = choice["rate"]
    elif recorded_auto is not None:
        ctx.reject("sound-proof: a choice of `desingularizer auto` is recorded, but the spec names its desingularizer")
    if rate.get("formula") != rebuilt.formula():
        ctx.reject(f"rate: the formula {rate.get('formula')!r} is not the rebuilt {rebuilt.formula()!r}")
    if [list(map(float, p)) for p in rate.get("curve") or []] != rebuilt.curve(st["horizon"]):
        ctx.reject("rate: the recorded curve is not the rebuilt band-by-band bound")
    ctx.state["summary"] = (f"{st['boxes']} leaf boxes re-proved by {st['rule_evaluations']} rule evaluations, "
                            f"{len(band_mu)} loss bands, no search")
    ctx.state["counts"] = {"leaves": st["boxes"], "rule_evaluations": st["rule_evaluations"]}


def _check_rho(st: dict, ctx: VerifyContext, mu: float, rho: float, rho_rec: float, how: str) -> None:
    """The proof's rho against rho recomputed (rounded up; how: the words for how), that rho against the
    radius, and the numbers' mu, rho, radius and floor against the proof's exact values."""
    if rho != rho_rec:
        ctx.reject(f"rho = {rho_rec!r}, {how}: {rho!r}")
    if not rho <= st["radius"]:
        ctx.reject(f"rho = {rho!r} (rounded up) exceeds the radius {st['radius']!r}")
    n = ctx.numbers
    if n.get("mu") != mu or n.get("rho") != rho_rec or n.get("radius") != st["radius"] or n.get("floor") != st["floor"]:
        ctx.reject("numbers: mu, rho, radius or floor differ from the proof's exact values")


def _natural(model, floor: float, L0_up: float, M: float | None = None) -> tuple:
    """(phi, c) of the spec's loss and desingularizer (auto: the loss's natural one; a power: c recomputed
    as the minimum of phi'(L) G(L) over the loss band), in rho_upper's argument order."""
    choice = model.checked.desingularizer
    phi = None
    if choice.name != "auto":
        phi = make(choice.name, **dict(choice.options or {}))
        if not phi_supported(model.loss, phi):
            raise ValueError(f"the desingularizer {choice.name} with loss {model.loss.name} has no sound constant")
    c, phi, _ = sound_constant(model.loss, model.n, floor, L0_up, M, phi)
    return phi, c


def _check_cover(st: dict, proof: dict, ctx: VerifyContext) -> None:
    """The leaves are exactly the leaves of the split tree rooted at the region's box."""
    import numpy as np

    reg, m, leaves = st["reg"], st["m"], st["leaves"]
    try:
        root_lo, root_hi = _unhexes(proof["root"]["lo"], m), _unhexes(proof["root"]["hi"], m)
    except (KeyError, TypeError, ValueError) as exc:
        ctx.reject(f"sound-proof: the root box is malformed ({exc})")
        return
    if not (np.array_equal(root_lo, reg.lo) and np.array_equal(root_hi, reg.hi)):
        ctx.reject("sound-proof: the root box is not the region's box (theta0 -/+ radius, rounded outward)")
        return
    splits: dict[str, tuple[int, float]] = {}
    for item in proof.get("splits") or []:
        try:
            path, j, at = item
            j, at = int(j), unhex(at)
            if not isinstance(path, str) or set(path) - {"0", "1"} or not 0 <= j < m:
                raise ValueError(item)
        except (TypeError, ValueError):
            ctx.reject(f"sound-proof: malformed split {item!r}")
            return
        if path in splits:
            ctx.reject(f"sound-proof: two splits at path {path!r}")
            return
        splits[path] = (j, at)
    visited, used = set(), set()
    stack = [("", reg.lo.copy(), reg.hi.copy())]
    missing = []
    while stack:
        path, lo, hi = stack.pop()
        if path in splits:
            used.add(path)
            j, at = splits[path]
            if not lo[j] < at < hi[j]:
                ctx.reject(f"sound-proof: the split at path {path!r} (coordinate {j} at {at!r}) does not cut its box")
                return
            if path in leaves:
                ctx.reject(f"leaf {path!r}: its box is split further (it is not a leaf)")
            lower_hi, upper_lo = hi.copy(), lo.copy()     # [lo, at] and [at, hi] along j
            lower_hi[j] = at
            upper_lo[j] = at
            stack.append((path + "1", upper_lo, hi))
            stack.append((path + "0", lo, lower_hi))
        elif path in leaves:
            visited.add(path)
            leaf = leaves[path]
            if not (np.array_equal(leaf["lo"], lo) and np.array_equal(leaf["hi"], hi)):
                ctx.reject(f"leaf {path!r}: its box is not the box the split tree gives at that path")
        else:
            missing.append(path)
    if missing:
        ctx.reject(f"the leaves do not cover the region: no leaf at path(s) {', '.join(map(repr, missing[:5]))}"
                   + (f" and {len(missing) - 5} more" if len(missing) > 5 else ""))
    stray = sorted(set(leaves) - visited)
    if stray:
        ctx.reject(f"leaf {stray[0]!r} is not a leaf of the split tree ({len(stray)} such)")
    unused = sorted(set(splits) - used)
    if unused:
        ctx.reject(f"sound-proof: the split at path {unused[0]!r} is not on the tree ({len(unused)} such)")


VERIFIERS = {"sound-proof": verify_proof, "sound-leaf": verify_leaf, "sound-ball": verify_ball, "sound-refutation": verify_refutation,
             **tube_cert.VERIFIERS}
