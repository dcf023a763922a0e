"""Branch and bound over boxes of parameters.

Every box of the cover is either
- dropped: entirely below the floor (max L over the box < floor: nothing is asked there), or
  entirely outside the ball region (its distance from the center exceeds the radius);
- proven: a rule's sound bound on R over the box is >= the target;
- open: not (yet) proven; the weakest open boxes are split next, each in two halves along the
  coordinate with the widest contribution (box width times the column of the Jacobian enclosure).
The run stops when no open box is left (proven), when `refute` reports a point (refuted) or when
the budget of boxes or seconds ends (unresolved). mu is the minimum of the leaves' bounds over the
boxes that were not dropped: a sound lower bound on inf R over the region above the floor.

Rounds. Each step splits the ROUND weakest leaves at once (the weakest decides whether to go on;
the others join while their bound is below the bar: the target while a leaf is open, the
tightening goal after) and evaluates their children as one batch, `evaluate(nodes)`, which may
hand the boxes to workers (analyse/parallel.py). A box's evaluation depends on the box alone, and
the rounds on the results alone, so the tree, mu and the verdict are the same whoever evaluates
the boxes. ROUND is a constant, not the number of workers, for that reason.
"""
from __future__ import annotations

import heapq
import math
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .rules import Bound

BOX_LISTS_UP_TO = 32    # boxes are written out coordinate by coordinate up to this dimension
ROUND = 8               # leaves split per round (their 2 * ROUND children are evaluated as one batch)
STALL = 1e-12           # tightening stops after rounds of 2m splits in a row that gained nothing on the weakest leaf


@dataclass
class Node:
    id: int
    lo: np.ndarray
    hi: np.ndarray
    depth: int
    status: str = "open"            # open | proven | split | dropped | unsplittable
    bound: Bound | None = None
    children: list[int] = field(default_factory=list)
    split: dict | None = None
    note: str | None = None
    loss: tuple[float, float] | None = None
    sample_max: float | None = None  # an upper bound of the per-sample losses over the box
    score: np.ndarray | None = None  # per-coordinate split scores
    parent_bound: float | None = None


@dataclass
class SearchState:
    nodes: dict[int, Node] = field(default_factory=dict)
    evaluated: int = 0
    seconds: float = 0.0
    refutation: dict | None = None
    stop_reason: str = ""


class BranchAndBound:
    def __init__(self, evaluate: Callable[[list[Node]], None], target: float, budget: int,
                 seconds: float | None = None, tighten_to: Callable[[], float] | None = None,
                 advance=None, width: int = ROUND, node_target: Callable[[Node], float] | None = None):
        """evaluate(nodes) fills, for each node, node.status ('open'/'proven' is decided here from
        node.bound, 'dropped' by evaluate), node.bound, node.score; it may set state.refutation.
        node_target (the loss-level profile): each node's own target, from its loss enclosure; the
        weakest leaf is then the one with the smallest bound / target, and a leaf is proven when that
        ratio is >= 1 (tighten_to is not used then)."""
        self.evaluate = evaluate
        self.target = target
        self.node_target = node_target
        self._bar = 1.0 if node_target is not None else target
        self.budget = budget
        self.seconds = seconds
        self.tighten_to = tighten_to
        self.advance = advance or (lambda k=1: None)
        self.width = max(1, int(width))
        self.state = SearchState()
        self._heap: list[tuple[float, float, int]] = []
        self._stalls = 0
        self._next = 0

    # -----------------------------------------------------------------------------------------
    def add_root(self, lo: np.ndarray, hi: np.ndarray) -> Node:
        node = self._new(lo, hi, 0)
        self._visit([node])
        return node

    def _new(self, lo, hi, depth) -> Node:
        node = Node(self._next, lo, hi, depth)
        self.state.nodes[node.id] = node
        self._next += 1
        return node

    def _visit(self, nodes: list[Node]) -> None:
        self.evaluate(nodes)
        for node in nodes:
            self.state.evaluated += 1
            self.advance(1)
            if node.status == "dropped":
                continue
            value = node.bound.value if node.bound is not None else -math.inf
            key = self._key(node, value)
            node.status = "proven" if key >= self._bar else "open"
            width = float(np.max(node.hi - node.lo)) if node.lo.size else 0.0
            heapq.heappush(self._heap, (key, -width, node.id))

    def _key(self, node: Node, value: float) -> float:
        """The heap key: the bound itself, or (profile) the bound over the node's own target."""
        if self.node_target is None:
            return value
        need = self.node_target(node)
        if not need > 0:
            return math.inf if value >= 0 else -math.inf
        return value / need

    def run(self) -> SearchState:
        start = time.perf_counter()
        state = self.state
        while True:
            if state.refutation is not None:
                state.stop_reason = "refuted"
                break
            weakest = self._weakest()
            if weakest is None:
                state.stop_reason = "empty"
                break
            value = self._heap[0][0]        # the bound (or, for a profile, bound / target)
            bar = self._bar
            if value >= self._bar:
                # every leaf is proven; optionally tighten mu while the budget lasts, unless the
                # weakest leaf gained (almost) nothing over its parent: splitting does not help it
                goal = self.tighten_to() if self.tighten_to is not None else -math.inf
                if weakest.parent_bound is not None and value <= weakest.parent_bound * (1 + STALL) + 1e-300:
                    self._stalls += self.width     # a round splits up to `width` leaves
                else:
                    self._stalls = 0
                if not value < goal or self._stalls > 2 * weakest.lo.size:
                    state.stop_reason = "proven"
                    break
                bar = goal
            if state.evaluated + 2 > self.budget:
                state.stop_reason = "budget"
                break
            if self.seconds is not None and time.perf_counter() - start > self.seconds:
                state.stop_reason = "time"
                break
            plans = self._round(bar)
            if not plans:
                if value >= self._bar:
                    state.stop_reason = "proven"
                    break
                weakest.status = "unsplittable"
                state.stop_reason = "unsplittable"
                break
            self._split(plans)
        state.seconds = time.perf_counter() - start
        return state

    def _weakest(self) -> Node | None:
        while self._heap:
            value, _, nid = self._heap[0]
            node = self.state.nodes[nid]
            if node.status in ("open", "proven"):
                return node
            heapq.heappop(self._heap)
        return None

    def _round(self, bar: float) -> list[tuple[Node, int, float]]:
        """The leaves split this round, weakest first, with their split (coordinate, point): the
        weakest leaf, then up to ROUND - 1 more whose bound is below `bar`, within the budget.
        Empty when the weakest leaf cannot be split (it stays on the heap)."""
        room = min(self.width, (self.budget - self.state.evaluated) // 2)
        plans, back = [], []
        while self._heap and len(plans) < room:
            entry = heapq.heappop(self._heap)
            node = self.state.nodes[entry[2]]
            if node.status not in ("open", "proven"):
                continue
            if plans and not entry[0] < bar:
                back.append(entry)
                break
            plan = _plan(node)
            if plan is None:
                back.append(entry)
                if not plans:
                    break
                continue
            plans.append((node, *plan))
        for entry in back:
            heapq.heappush(self._heap, entry)
        return plans

    def _split(self, plans: list[tuple[Node, int, float]]) -> None:
        children = []
        for node, j, mid in plans:
            node.status = "split"
            node.split = {"coordinate": int(j), "at": float(mid)}
            for lo_j, hi_j in ((node.lo[j], mid), (mid, node.hi[j])):
                lo, hi = node.lo.copy(), node.hi.copy()
                lo[j], hi[j] = lo_j, hi_j
                child = self._new(lo, hi, node.depth + 1)
                child.parent_bound = node.bound.value if node.bound is not None else None
                node.children.append(child.id)
                children.append(child)
        self._visit(children)

    # -----------------------------------------------------------------------------------------
    def leaves(self) -> list[Node]:
        return [n for n in self.state.nodes.values() if not n.children and n.status != "split"]

    def mu(self) -> float:
        values = [n.bound.value if n.bound is not None else -math.inf
                  for n in self.leaves() if n.status != "dropped"]
        return min(values) if values else math.inf

    def tree(self, root: int = 0, center: np.ndarray | None = None) -> dict:
        return self._tree(self.state.nodes[root], center)

    def _tree(self, node: Node, center) -> dict:
        out: dict = {"box": box_dict(node.lo, node.hi, center), "status": node.status}
        if node.loss is not None:
            out["loss"] = [node.loss[0], node.loss[1]]
        if node.bound is not None:
            out["rule"] = node.bound.rule
            out["bound"] = node.bound.value
            if not node.children:
                out["reason"] = node.bound.reason
                out["numbers"] = _jsonable(node.bound.numbers)
        if node.note:
            out["note"] = node.note
        if node.children:
            out["split"] = node.split
            out["children"] = [self._tree(self.state.nodes[c], center) for c in node.children]
        return out


def _plan(node: Node) -> tuple[int, float] | None:
    """Where to split a box: the coordinate with the largest score (then the widest) whose
    midpoint lies strictly inside; None when no coordinate can be split."""
    width = node.hi - node.lo
    score = node.score if node.score is not None else width
    for j in np.argsort(-score, kind="stable"):
        if not score[j] > 0 and not width[j] > 0:
            break
        mid = 0.5 * node.lo[j] + 0.5 * node.hi[j]
        if node.lo[j] < mid < node.hi[j]:
            return int(j), float(mid)
    return None


def box_dict(lo: np.ndarray, hi: np.ndarray, center: np.ndarray | None = None) -> dict:
    if lo.size <= BOX_LISTS_UP_TO:
        return {"lo": lo.tolist(), "hi": hi.tolist()}
    out = {"dimension": int(lo.size), "max_width": float(np.max(hi - lo))}
    if center is not None:
        mid = 0.5 * lo + 0.5 * hi
        out["center_distance"] = float(np.linalg.norm(mid - center))
    return out


def _jsonable(numbers: dict) -> dict:
    out = {}
    for k, v in numbers.items():
        if isinstance(v, (np.floating, np.integer)):
            v = v.item()
        if isinstance(v, float) and not math.isfinite(v):
            v = None
        out[k] = v
    return out
