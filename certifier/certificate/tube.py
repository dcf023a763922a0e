"""Certificates of the trajectory route (`method interval(route=trajectory)`, analyse/sound/tube.py,
docs/theory.md 10.12).

Evidence: one `sound-tube` entry (floor, L0↑, the elementary-function mode, the number of segments,
the tube's end time T and the terminal ball's radius and μ, or none when the tube reached the
floor) and one `sound-checkpoint` entry per checkpoint θ_0 .. θ_N (its index, its time t_j, the
segment length h_j and the assumed radius ρ_j, with the row-space split also the assumed bounds
ρ_row,j and ρ_null,j of the error's components in and orthogonal to the row space of J(θ_j), θ_j;
readable copies of the proved tube radius and loss bound). Every float the proof rests on is written with float.hex.

The replay (`check`): θ_0 must be the spec's θ0, t_0 = 0 and t_{j+1} = t_j + h_j exactly; then
tube.replay re-proves every segment from the recorded checkpoints (the tangent-model curve, ℓ, the
defect, E_j < ρ_j, with the split the row and kernel bounds below ρ_row,j and ρ_null,j, the jump to
the next checkpoint, the loss bound over each cross-section), with no search; the ball rule is
re-run around θ_N at the recorded radius and must give at least the recorded μ (1e-9 relative),
and e_N + √(L_N/μ) ≤ r; the rate's curve is rebuilt from the recomputed bounds and must equal the
recorded one. A moved checkpoint, a shrunk radius or a lowered loss bound is rejected."""
from __future__ import annotations

import math

import numpy as np

from ..analyse.sound import tube as T
from ..analyse.sound.ball import BallModel, ball_rule
from ..compile.interval import NotSupported
from ..compile.interval_model import IntervalModel
from ..compile.rounding import elementary
from .base import CertificateError, VerifyContext, evidence_digest, header

NOTE = ("a valid trajectory certificate is a proof for the model and data as stored: every segment of the tube "
        "was re-proved from its recorded checkpoint (Gronwall with a one-sided Lipschitz bound), the loss bound over "
        "each cross-section recomputed, and the ball rule re-run around the tube's end")
RELATIVE = 1e-9


def is_tube(cert: dict) -> bool:
    return any(isinstance(e, dict) and e.get("kind") == "sound-tube" for e in cert.get("evidence") or [])


def _hexes(a) -> list[str]:
    return [float(v).hex() for v in a]


def build(result, spec_path: str, source: str, allow_python: bool = False) -> dict:
    ev = result._records
    tube = ev.tube
    if result.verdict != "certified":
        raise CertificateError(f"the trajectory result is {result.verdict}: nothing is proved for all t, there is "
                               "nothing to certify")
    term = tube.terminal
    evidence = [{"kind": "sound-tube", "floor": ev.floor.hex(), "L0_upper": float(ev.L0_upper).hex(),
                 "functions": ev.functions, "segments": len(tube.segments), "end_time": float(tube.end_time).hex(),
                 "terminal": ({"radius": float(term.radius).hex(), "mu": float(term.mu).hex()}
                              if term is not None else None),
                 "loss_upper_end": tube.end_loss, "tube_radius_end": tube.end_e}]
    for j, s in enumerate(tube.segments):
        entry = {"kind": "sound-checkpoint", "index": j, "t": float(s.t).hex(), "h": float(s.h).hex(),
                 "rho": float(s.rho).hex(), "theta": _hexes(s.theta), "tube_radius": s.e_in, "loss_upper": s.loss_upper}
        if s.rho_row is not None:        # the row-space split's assumed radii (docs/theory.md 10.12)
            entry.update(rho_row=float(s.rho_row).hex(), rho_null=float(s.rho_null).hex())
        evidence.append(entry)
    evidence.append({"kind": "sound-checkpoint", "index": len(tube.segments), "t": float(tube.end_time).hex(),
                     "theta": _hexes(tube.end_theta), "tube_radius": tube.end_e, "loss_upper": tube.end_loss})
    numbers = T.numbers_of(tube)
    loss = result.loss or {}
    return {
        **header(result, spec_path, source, allow_python),
        "numbers": {"L0": float(loss["initial"]), "L0_upper": ev.L0_upper, "mu": ev.mu, "floor": ev.floor,
                    "radius": ev.radius if ev.radius is not None else 0.0, "region": None, "rho": ev.rho,
                    "horizon": ev.horizon},
        "rate": {"parameters": None, "formula": (result.rate or {}).get("formula"),
                 "curve": T.curve_points(numbers, ev.horizon)},
        "evidence_count": len(evidence),
        "evidence_digest": evidence_digest(evidence),
        "evidence": evidence,
        "note": NOTE,
    }


# --- check ----------------------------------------------------------------------------------------
def verify_entry(entry: dict, ctx: VerifyContext) -> None:
    """Collected here; the replay is sequential (check below)."""
    key = "tube" if entry.get("kind") == "sound-tube" else "checkpoints"
    if key == "tube":
        ctx.state.setdefault("tube_entries", []).append(entry)
    else:
        ctx.state.setdefault("checkpoints", []).append(entry)
    ctx.checked_points += 1


def check(cert: dict, ctx: VerifyContext) -> None:
    ctx.state["note"] = NOTE
    try:
        _check(cert, ctx)
    except (KeyError, TypeError, ValueError) as exc:
        ctx.reject(f"sound-tube: {exc}")


def _check(cert: dict, ctx: VerifyContext) -> None:
    if not cert.get("sound") or cert.get("verdict") != "certified" or cert.get("failing_kind") is not None:
        ctx.reject("a trajectory certificate is sound and certified, with no failing kind")
    heads = ctx.state.get("tube_entries") or []
    if len(heads) != 1:
        ctx.reject(f"sound-tube: {len(heads)} entries, a trajectory certificate has exactly one")
        return
    head = heads[0]
    checked = ctx.problem.checked
    method, claim = checked.method, checked.claim.options
    if method.name != "interval" or method.options.get("route") != "trajectory":
        ctx.reject("sound-tube: the spec's method is not interval(route=trajectory)")
        return
    functions = str(method.options.get("functions") or "margin")
    if head["functions"] != functions:
        ctx.reject(f"sound-tube: elementary functions '{head['functions']}', the spec says '{functions}'")
        return
    floor = float(claim.get("floor", 0.0))
    horizon = float(claim.get("horizon", 1e4))
    if float.fromhex(head["floor"]) != floor:
        ctx.reject("sound-tube: the floor is not the spec's")
        return
    points = sorted(ctx.state.get("checkpoints") or [], key=lambda e: int(e["index"]))
    N = int(head["segments"])
    if [int(e["index"]) for e in points] != list(range(N + 1)):
        ctx.reject(f"sound-tube: the checkpoints are not numbered 0 .. {N} once each")
        return
    with elementary(functions):
        try:
            model = IntervalModel(checked)
        except NotSupported as exc:
            ctx.reject(f"sound-tube: {exc.message}: not supported in the sound mode")
            return
        bm = BallModel(model)
        thetas = [np.array([float.fromhex(v) for v in e["theta"]]) for e in points]
        if any(th.shape != (model.m,) for th in thetas):
            ctx.reject(f"sound-tube: a checkpoint does not have the spec's {model.m} parameters")
            return
        ts = [float.fromhex(e["t"]) for e in points]
        hs = [float.fromhex(e["h"]) for e in points[:-1]]
        rhos = [float.fromhex(e["rho"]) for e in points[:-1]]
        rho_rows = [float.fromhex(e["rho_row"]) if "rho_row" in e else None for e in points[:-1]]
        rho_nulls = [float.fromhex(e["rho_null"]) if "rho_null" in e else None for e in points[:-1]]
        if ts[0] != 0.0 or any(ts[j] + hs[j] != ts[j + 1] or ts[j + 1] - ts[j] != hs[j] for j in range(N)):
            ctx.reject("sound-tube: the checkpoint times are not t_0 = 0, t_{j+1} = t_j + h_j exactly")
            return
        try:
            out = T.replay(model, bm, thetas, hs, rhos, rho_rows, rho_nulls)
        except ValueError as exc:
            ctx.reject(f"sound-tube: the tube does not close: {exc}")
            return
        L0_up = float.fromhex(head["L0_upper"])
        enc0 = model.at_point(model.theta0, False)
        if not L0_up >= float(enc0.L.hi):
            ctx.reject(f"sound-tube: L0_upper = {L0_up!r} is below the recomputed bound on L(theta0)")
        if float.fromhex(head["end_time"]) != out["end_time"]:
            ctx.reject("sound-tube: the end time is not the checkpoints' last time")
        numbers = {"starts": [s["t"] for s in out["segments"]], "losses": [s["loss_upper"] for s in out["segments"]],
                   "end_time": out["end_time"], "end_loss": out["end_loss"], "mu": None}
        term = head.get("terminal")
        if term is None:
            if not out["end_loss"] <= floor:
                ctx.reject(f"sound-tube: no terminal ball, and the loss bound at the end {out['end_loss']!r} is "
                           f"above the floor {floor!r}")
        else:
            r, mu = float.fromhex(term["radius"]), float.fromhex(term["mu"])
            bound = ball_rule(model, bm, thetas[-1], r)
            if not (mu > 0 and float(bound.value) >= mu - RELATIVE * mu):
                ctx.reject(f"sound-tube: the ball rule around the tube's end gives {float(bound.value)!r}, below the "
                           f"recorded mu = {mu!r}")
            need = T.terminal_needed(out["end_e"], out["end_loss"], mu) if mu > 0 else math.inf
            if not need <= r:
                ctx.reject(f"sound-tube: the terminal ball of radius {r!r} does not hold the tube's end and the path "
                           f"from it (needed {need!r})")
            numbers["mu"] = mu
    rec = [list(map(float, p)) for p in (cert.get("rate") or {}).get("curve") or []]
    rebuilt = T.curve_points(numbers, horizon)
    if len(rec) != len(rebuilt) or any(a[0] != b[0] or not a[1] >= b[1] * (1 - RELATIVE)
                                       for a, b in zip(rec, rebuilt)):
        ctx.reject("rate: the recorded curve is not above the bound rebuilt from the replayed tube")
    ctx.state["summary"] = (f"{N} tube segments re-proved from their checkpoints and the terminal ball rule re-run, "
                            "no search")
    ctx.state["counts"] = {"segments": N, "rule_evaluations": N + 1}


VERIFIERS = {"sound-tube": verify_entry, "sound-checkpoint": verify_entry}
