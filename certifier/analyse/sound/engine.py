"""The sound engine: a proved lower bound on inf R over a region above a floor, or a point that
shows the needed bound is false, or an honest "unresolved".

    bound_mu(problem, region, floor, needed_mu, budget, reporter) -> SoundOutcome

- proven: every box of a cover of the region (minus boxes entirely below the floor or outside a
  ball) has a rule bound >= needed_mu; mu = the minimum of those bounds (rounded down) is a
  theorem: R(theta) >= mu for every theta in the region with L(theta) >= floor, for the model and
  data as stored (float64 values read as exact reals; docs/theory.md section 10).
- refuted: a point theta (a double vector) in the region with L(theta) >= floor and
  R(theta) < needed_mu, both verified by interval evaluation at the point. Then no mu >= needed_mu
  is a lower bound of R on the region: the certificate asked for cannot exist on this region.
- unresolved: the budget ended first (the unresolved boxes are reported).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from decimal import ROUND_FLOOR, Context, Decimal
from typing import Callable

import numpy as np
import torch

from ...compile.interval import NotSupported, enclose
from ...compile.interval_model import IntervalModel
from ...compile.rounding import elementary_mode
from ...progress import NullReporter
from .ball import BallModel, ball_rule
from .bnb import BranchAndBound, Node, _jsonable, box_dict
from .boxes import BoxSpec, Session, evaluate_boxes
from .region import SoundRegion, _numpy, verify_point
from .rules import RuleContext, subspace_facts

MEMORY_LIMIT = 2 * 2**30        # bytes: refuse boxes whose forward-mode arrays would exceed this
TIGHTEN_RATIO = 0.9             # after proving, refine until mu >= this fraction of min R seen
CANDIDATE_STEPS = 300           # gradient-descent steps from theta0 searched for a refutation
BALL_FROM = 8                   # balls in more dimensions try the ball rule (no splitting) first
BOXES_UP_TO = 64                # ... and above this dimension do not fall back to boxes



def shown_down(x: float, digits: int = 6) -> str:
    """A proved lower bound written with `digits` significant digits, rounded down so that the
    text is still a lower bound (".6g" rounds to nearest, which may be above it)."""
    if not math.isfinite(x):
        return f"{x}"
    if x <= 0:
        return "0"
    return f"{Context(prec=digits, rounding=ROUND_FLOOR).plus(Decimal(float(x))):g}"

@dataclass
class SoundOutcome:
    status: str                       # 'proven' | 'refuted' | 'unresolved'
    mu: float | None                  # sound lower bound on inf R (rounded down); None if none
    proof: dict | None                # JSON-able tree: rule, box, numbers per leaf
    failing_boxes: list[dict] = field(default_factory=list)
    failing_points: list[dict] = field(default_factory=list)
    boxes_evaluated: int = 0
    seconds: float = 0.0
    message: str = ""
    min_rayleigh_seen: float | None = None   # smallest float R at evaluated points (an upper estimate)
    bnb_seconds: float = 0.0          # time spent in branch and bound (boxes per second = boxes / this)
    rules_used: dict = field(default_factory=dict)
    facts: dict = field(default_factory=dict)
    # for certificates (certificate/sound.py): the split tree with exact boxes, and the refuting point
    tree: dict | None = field(default=None, repr=False)
    refutation_theta: np.ndarray | None = field(default=None, repr=False)
    # the largest per-sample loss bound over the proven leaves (every point above the floor that
    # the flow can meet lies in one of them); None: not computed (the ball rule)
    sample_max: float | None = None

    def to_dict(self) -> dict:
        return {"status": self.status, "mu": self.mu, "message": self.message,
                "boxes_evaluated": self.boxes_evaluated, "seconds": self.seconds,
                "bnb_seconds": self.bnb_seconds,
                "min_rayleigh_seen": self.min_rayleigh_seen, "rules_used": self.rules_used,
                "facts": self.facts, "failing_boxes": self.failing_boxes,
                "failing_points": self.failing_points, "proof": self.proof}


def _estimate_memory(model: IntervalModel) -> int:
    """Bytes of the largest forward-mode array (lo and hi, P = m coordinates) times a few
    temporaries, from the value sizes of every subexpression at theta0."""
    sizes = [model.n * model.k, model.m]
    env = model._env(model.theta0, model.theta0, False)

    def walk(e):
        if e.op in ("number", "name", "none", "slice", "list", "string"):
            return
        sizes.append(enclose(e, env).v.lo.size)
        for a in e.args:
            walk(a)

    walk(model.body)
    return int(max(sizes)) * model.m * 8 * 2 * 6


def ball_applicable(model: IntervalModel, kind: str) -> bool:
    """Whether a `region ball` is handled by the ball rule (ball.py) for this model."""
    return kind == "ball" and BallModel(model).unsupported is None


def size_problem(model: IntervalModel) -> str | None:
    """Why the model is too large for the interval forward mode, or None."""
    memory = _estimate_memory(model)
    if memory <= MEMORY_LIMIT:
        return None
    return (f"the interval forward mode needs about {memory / 2**30:.1f} GiB per box for this model "
            f"({model.m} parameters, {model.n} samples; the limit is {MEMORY_LIMIT / 2**30:.0f} GiB): "
            f"the sound mode handles small models only")


def bound_mu(problem, region, floor: float, needed_mu: float | None, budget: int,
             reporter=None, *, seed: int = 0, seconds: float | None = None, tighten: bool = True,
             candidates: list | None = None, refute_below: float | None = None,
             executor=None, ceiling: float = math.inf,
             band_target: Callable[[float, float], float] | None = None) -> SoundOutcome:
    """A sound lower bound on inf{R(theta) : theta in region, L(theta) >= floor}.

    needed_mu: the bound the caller needs (e.g. for confinement); None: any positive bound, then
    as tight as the budget allows. budget: the number of boxes evaluated at most.
    refute_below: a point refutes only when R < refute_below is verified there (default
    needed_mu). A caller whose needed_mu is rounded up passes the exact need rounded down, so that
    a refutation never rests on the rounding.
    ceiling: an upper bound on L(theta0); boxes with min L above it are dropped (the flow never
    leaves {L <= L(theta0)}), and mu then bounds R on the region above the floor and below L(theta0).
    executor: where the boxes of each round are evaluated (analyse/parallel.py); None: here. The
    result is the same whoever evaluates them (bnb.py, rounds).
    band_target (the loss-level profile, docs/theory.md 10.11): a box whose loss enclosure is [lo, hi]
    needs a bound >= band_target(lo, hi) instead of needed_mu; `proven` then means every leaf met its
    own target (mu is the smallest leaf bound, possibly 0 for boxes no band asks anything of)."""
    t0 = time.perf_counter()
    reporter = reporter or NullReporter()
    floor = float(floor)
    target = float(needed_mu) if needed_mu is not None and needed_mu > 0 else float(np.finfo(float).tiny)
    refute = min(target, float(refute_below)) if refute_below is not None else target
    try:
        model = IntervalModel(problem.checked)
    except NotSupported as exc:
        return SoundOutcome("unresolved", None, None, message=f"{exc.message}: not supported in the sound mode",
                            seconds=time.perf_counter() - t0)
    too_large = size_problem(model)
    reg = SoundRegion(region)
    ball_model = BallModel(model) if reg.kind == "ball" and (model.m > BALL_FROM or too_large) \
        and band_target is None else None
    use_ball = ball_model is not None and ball_model.unsupported is None
    if too_large and not use_ball:
        why = f"; the ball rule does not apply: {ball_model.unsupported}" if ball_model is not None else ""
        return SoundOutcome("unresolved", None, None, seconds=time.perf_counter() - t0, message=too_large + why)
    ctx = RuleContext(model, floor, subspace_facts(model), dict(model.blocks))
    facts = {"affine": model.affine, "parameters": model.m, "samples": model.n, "outputs": model.k}
    if ctx.subspace is not None:
        facts["subspace"] = ctx.subspace.numbers
    seen = {"min_r": math.inf, "refutation": None}
    rules_used: dict[str, int] = {}

    # --- refutation candidates: a point with R < target, verified --------------------------------
    def consider(theta: np.ndarray, source: str, r_float: float | None = None) -> bool:
        if seen["refutation"] is not None:
            return True
        if r_float is None:
            p = problem.point(torch.as_tensor(theta, dtype=torch.float64))
            if not p.loss >= floor:
                return False
            r_float = p.rayleigh
        if reg.contains(theta) and r_float < seen["min_r"]:
            seen["min_r"] = r_float
        if not r_float < refute:
            return False
        verdict = verify_point(model, reg, theta, floor, refute, ctx.subspace, ceiling)
        if verdict is not None:
            verdict["source"] = source
            seen["refutation"] = verdict
            seen["theta"] = np.array(theta, dtype=np.float64)
            return True
        return False

    with reporter.phase("sound: searching for a counterexample", total=None) as advance:
        pool = []
        for theta in list(_descent_candidates(problem, reg, floor)) + \
                [reg.project(_numpy(t)) for t in (candidates or [])]:
            p = problem.point(torch.as_tensor(theta, dtype=torch.float64))
            advance()
            if p.loss >= floor and math.isfinite(p.rayleigh):
                pool.append((p.rayleigh, theta))
        pool.sort(key=lambda item: item[0])
        for r_float, theta in pool[:8]:            # the lowest R first: the strongest counterexample
            if consider(theta, "descent from theta0", r_float):
                break
    if seen["refutation"] is not None:
        return _refuted(seen, facts, rules_used, 0, time.perf_counter() - t0)

    # --- the ball rule: the whole ball at once, without splitting (wide models; ball.py) ------------
    if use_ball:
        with reporter.phase("sound: ball rule", total=None):
            tb = time.perf_counter()
            ball = ball_rule(model, ball_model, reg.center, reg.size)
            ball_seconds = time.perf_counter() - tb
        rules_used["ball"] = 1
        facts["ball"] = _jsonable(ball.numbers)
        leaf = {"ball": {"center": "init", "radius": reg.size}, "status": "proven" if ball.value >= target else "open",
                "rule": "ball", "bound": ball.value, "reason": ball.reason, "numbers": _jsonable(ball.numbers)}
        proof = {"region": {"kind": reg.kind, "size": reg.size, "box": None}, "floor": floor, "target": target,
                 "root": leaf, "stop": "proven" if ball.value >= target else "ball rule"}
        common = dict(boxes_evaluated=1, seconds=time.perf_counter() - t0, bnb_seconds=ball_seconds,
                      min_rayleigh_seen=seen["min_r"] if math.isfinite(seen["min_r"]) else None,
                      rules_used=rules_used, facts=facts)
        if ball.value >= target:
            return SoundOutcome("proven", float(ball.value), proof,
                                message=f"the ball rule proves R >= {shown_down(ball.value)} on the whole ball",
                                tree={"kind": "ball", "size": reg.size, "ball": ball}, **common)
        if too_large or model.m > BOXES_UP_TO:
            return SoundOutcome(
                "unresolved", float(ball.value) if ball.value > 0 else None, proof,
                failing_boxes=[{"box": {"ball": True, "radius": reg.size}, "bound": ball.value, "rule": "ball",
                                "reason": ball.reason, "loss": None}],
                message=(f"the ball rule proves R >= {shown_down(ball.value)} on the whole ball, below {target:.6g} needed "
                         f"(sigma_min(Jc) >= {ball.numbers.get('sigma_center_lower', 0):.4g}, Lip_J r = "
                         f"{ball.numbers.get('drift', math.inf):.4g}); in {model.m} dimensions boxes cannot do "
                         f"better: shrink the radius (Lip_J r falls with it) or widen the model"), **common)

    # --- branch and bound: rounds of boxes, evaluated here or by workers (boxes.py) -------------
    spec = BoxSpec(reg.kind, reg.center, reg.size, floor, refute, seed, elementary_mode(), float(ceiling))
    ses = Session(problem, spec, model, ctx)

    rounds = {"evaluated": 0, "per_box": None, "seconds": 0.0}     # for a lazily started pool's estimate

    def evaluate(nodes: list[Node]) -> None:
        boxes = [(n.id, n.lo, n.hi) for n in nodes]
        remote = executor is not None and executor.workers > 1
        if remote and hasattr(executor, "decide"):
            remote = rounds["per_box"] is not None and executor.decide(budget - rounds["evaluated"], rounds["per_box"],
                                                                       rounds["seconds"])
        rounds["evaluated"] += len(boxes)
        if not remote:
            tr = time.perf_counter()
            results = [evaluate_boxes(problem, spec, boxes, advance=lambda k=0: advance(0), ses=ses)]
            rounds["seconds"] += time.perf_counter() - tr
            rounds["per_box"] = (time.perf_counter() - tr) / max(1, len(boxes))
        else:
            per_unit = -(-len(boxes) // executor.workers)
            units = [(spec, boxes[i:i + per_unit]) for i in range(0, len(boxes), per_unit)]
            results = executor.map(problem, evaluate_boxes, units, lambda k=0: advance(0))
        for node, res in zip(nodes, (r for unit in results for r in unit)):
            node.loss, node.bound, node.score = res.loss, res.bound, res.score
            node.sample_max = res.sample_max
            if res.status is not None:
                node.status, node.note = res.status, res.note
            if res.bound is not None:
                rules_used[res.bound.rule] = rules_used.get(res.bound.rule, 0) + 1
            for source, theta, r_float, inside, verdict in res.points:
                if seen["refutation"] is not None:
                    break
                if inside and r_float < seen["min_r"]:
                    seen["min_r"] = r_float
                if verdict is not None:
                    verdict["source"] = source
                    seen["refutation"], seen["theta"] = verdict, theta
        if seen["refutation"] is not None:
            bnb.state.refutation = seen["refutation"]

    tighten_to = (lambda: TIGHTEN_RATIO * seen["min_r"]) if tighten else None
    with reporter.phase("sound: branch and bound", total=budget) as advance:
        node_target = None
        if band_target is not None:
            def node_target(node: Node) -> float:
                return band_target(*node.loss) if node.loss is not None else target
            tighten_to = None
        bnb = BranchAndBound(evaluate, target, budget, seconds, tighten_to, advance, node_target=node_target)
        bnb.add_root(reg.lo.copy(), reg.hi.copy())
        state = bnb.run()
    elapsed = time.perf_counter() - t0
    if state.refutation is not None:
        return _refuted(seen, facts, rules_used, state.evaluated, elapsed,
                        proof=bnb.tree(0, reg.center))

    mu = bnb.mu()
    open_leaves = [n for n in bnb.leaves() if n.status in ("open", "unsplittable")]
    proof = {"region": {"kind": reg.kind, "size": reg.size, "box": box_dict(reg.lo, reg.hi)},
             "floor": floor, "target": target, "root": bnb.tree(0, reg.center),
             "stop": state.stop_reason}
    common = dict(boxes_evaluated=state.evaluated, seconds=elapsed, bnb_seconds=state.seconds,
                  min_rayleigh_seen=seen["min_r"] if math.isfinite(seen["min_r"]) else None,
                  rules_used=rules_used, facts=facts)
    if not open_leaves and math.isfinite(mu) and (mu >= target or band_target is not None):
        above = "above the floor" if not math.isfinite(ceiling) else "above the floor and below L(theta0)"
        sample = [n.sample_max for n in bnb.leaves() if n.status == "proven"]
        common["sample_max"] = max(sample) if sample and None not in sample else None
        return SoundOutcome("proven", max(float(mu), 0.0), proof,
                            message=f"every box is proven: R >= {shown_down(mu)} on the region {above}",
                            tree=split_tree(bnb, reg), **common)
    if not open_leaves and not math.isfinite(mu):
        # every box dropped: the region lies entirely below the floor, nothing is asked
        return SoundOutcome("proven", math.inf, proof,
                            message="the whole region lies below the floor", tree=split_tree(bnb, reg), **common)
    open_leaves.sort(key=lambda n: n.bound.value if n.bound is not None else -math.inf)
    failing = [{"box": box_dict(n.lo, n.hi, reg.center),
                "bound": n.bound.value if n.bound is not None else None,
                "rule": n.bound.rule if n.bound is not None else None,
                "reason": n.bound.reason if n.bound is not None else None,
                "loss": list(n.loss) if n.loss else None} for n in open_leaves[:5]]
    why = {"budget": f"the budget of {budget} boxes ended", "time": "the time limit ended",
           "unsplittable": "a box could not be split further (its width is one ulp)"}.get(
        state.stop_reason, state.stop_reason)
    if reg.kind == "ball" and reg.center.size > 8:
        why += (f"; the ball is covered by boxes, starting from its bounding box, whose corners lie "
                f"sqrt(m) = {math.sqrt(reg.center.size):.3g} radii away: in dimension {reg.center.size} "
                f"the cover is coarse (a box region is the natural one for the sound mode)")
    return SoundOutcome(
        "unresolved", float(mu) if math.isfinite(mu) and mu > 0 else None, proof,
        failing_boxes=failing,
        message=(f"{why} with {len(open_leaves)} unresolved box(es) below the targets of their loss bands"
                 if band_target is not None else
                 f"{why} with {len(open_leaves)} unresolved box(es); the weakest has a sound bound "
                 f"{failing[0]['bound'] if failing[0]['bound'] is not None else 'none'} < {target:.6g} needed"),
        **common)


def split_tree(bnb: BranchAndBound, reg: SoundRegion) -> dict:
    """The cover as an exact split tree (for certificates, certificate/sound.py): the root box, every split
    (path, coordinate, point) and every leaf (path, node); a path is the string of child indices
    ('0' lower half, '1' upper half) from the root."""
    splits, leaves = [], []
    stack = [(0, "")]
    while stack:
        nid, path = stack.pop()
        node = bnb.state.nodes[nid]
        if node.children:
            splits.append((path, node.split["coordinate"], float(node.split["at"])))
            for i, c in reversed(list(enumerate(node.children))):
                stack.append((c, path + str(i)))
        else:
            leaves.append((path, node))
    return {"kind": reg.kind, "size": reg.size, "lo": reg.lo.copy(), "hi": reg.hi.copy(),
            "splits": splits, "leaves": leaves}


def _refuted(seen, facts, rules_used, evaluated, elapsed, proof=None) -> SoundOutcome:
    point = seen["refutation"]
    return SoundOutcome(
        "refuted", None, proof, failing_points=[point], boxes_evaluated=evaluated, seconds=elapsed,
        refutation_theta=seen.get("theta"),
        message=(f"a point at distance {point['distance']:.4g} from theta0 has L >= {point['loss_lower']:.6g} "
                 f"(>= floor) and R <= {point['rayleigh_upper']:.3g} < {point['needed_mu']:.6g} needed "
                 f"(verified by interval evaluation)"),
        min_rayleigh_seen=seen["min_r"] if math.isfinite(seen["min_r"]) else None,
        rules_used=rules_used, facts=facts)


def _descent_candidates(problem, reg: SoundRegion, floor: float):
    """Points of gradient descent from theta0 (projected onto the region), where R is usually
    smallest (docs/theory.md section 6)."""
    theta = torch.as_tensor(reg.center, dtype=torch.float64).clone()
    try:
        beta = problem.hessian_top_eigenvalue(theta)
    except Exception:   # noqa: BLE001 - a heuristic only
        beta = 0.0
    eta = 0.5 / beta if beta > 0 else 0.1
    for step in range(CANDIDATE_STEPS):
        p = problem.point(theta)
        if not math.isfinite(p.loss) or p.loss < floor:
            return                   # the previous point was the last one above the floor
        if step < 20 or step % 5 == 0:
            yield theta.numpy().copy()
        if p.grad_sqnorm == 0:
            return
        nxt = reg.project((theta - eta * p.grad).numpy())
        theta = torch.as_tensor(nxt, dtype=torch.float64)
    yield theta.numpy().copy()
