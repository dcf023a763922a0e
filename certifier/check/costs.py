"""--budget in the check stage: data and parameter expressions evaluated one operation at a time,
each first estimated from its operands' shapes and refused when it cannot finish before the
deadline (progress.BudgetExceeded, the run's partial result of kind `budget`).

Why an estimate: progress.alarm raises only between Python bytecodes, so one torch call runs to
its end whatever the deadline (a 10000 x 10000 matrix product takes about 20 s on 2 cores). The
estimate is the work (flop for a product, entries otherwise) over a rate measured on this
machine (below). Operations are not split into pieces to make them interruptible: a product
computed in row blocks need not round as the whole product does, and the data must be the same
with and without --budget.

Without an active deadline (no --budget) the expression is evaluated by language.evaluate in one
call: the same torch operations in the same order, so the values are the same either way.
"""
from __future__ import annotations

import dataclasses
import math
import time

import torch

from .. import progress
from ..language.ast import Expr
from ..language.evaluate import evaluate
from ..language.generators import generate

# The rate of each kind of work is measured on this machine, under its present load, the first
# time a deadline needs it (`_probe`: about 40 ms in all, unloaded), and replaced by the rate of each
# operation of that kind that ran for at least MEASURED_MIN seconds. For reference, on the 2-core
# development machine unloaded (torch 2, float64): a 4000 x 4000 product 9.5e10 flop/s on 2
# threads, elementwise 1e8 (pow) to 2.5e8 (add) entries/s, normal() 4.7e7 entries/s; loaded
# (5 processes on its 2 cores) a 6.4e7-entry normal() ran 2.5 times slower than a small probe.
MEASURED_MIN = 0.02               # seconds: a shorter operation says little about the rate
SMALL_WORK = 1e6                  # flop or entries: run without an estimate (well under 0.1 s)
SAFETY = 1.5                      # an operation starts only when 1.5 x its estimate fits the time left
PROBE_MATMUL = 800                # an 800 x 800 product: 1e9 flop (smaller ones run below the BLAS's rate)
PROBE_ENTRIES = 2**20             # tanh of, and normal() drawing, this many entries (8 MB: not in cache)
AFTER_PASSES = 1                  # data.py then copies the result and counts its non-finite entries:
                                  # together about one tanh over it

_measured: dict[str, float] = {}  # kind -> the last rate measured in this process


def _probe(kind: str) -> float:
    """Work per second of `kind` measured now: the slowest common case of its kind (tanh, not add)."""
    if kind == "matmul":
        a = torch.ones(PROBE_MATMUL, PROBE_MATMUL, dtype=torch.float64)
        a @ a                                  # the thread pool's start-up is not the rate
        work, run = 2.0 * PROBE_MATMUL ** 3, lambda: a @ a
    elif kind == "generate":
        work, run = float(PROBE_ENTRIES), lambda: generate("normal", (PROBE_ENTRIES,), {}, "probe")
    else:
        x = torch.ones(PROBE_ENTRIES, dtype=torch.float64)
        work, run = float(PROBE_ENTRIES), lambda: torch.tanh(x)
    t0 = time.perf_counter()
    run()
    return work / max(time.perf_counter() - t0, 1e-6)


def rate(kind: str) -> float:
    if kind not in _measured:
        _measured[kind] = _probe(kind)
    return _measured[kind]


def _timed(kind: str, work: float, what: str, run):
    """Run `run()` unless `work` at this kind's rate cannot finish before the deadline."""
    if work < SMALL_WORK:
        return run()
    seconds = work / rate(kind)
    progress.checkpoint(SAFETY * seconds, f"{what} would take about {seconds:.3g} s, "
                                          f"{max(progress.left(), 0.0):.3g} s were left")
    t0 = time.perf_counter()
    out = run()
    elapsed = time.perf_counter() - t0
    if elapsed >= MEASURED_MIN and work > 0:
        _measured[kind] = work / elapsed
    return out


def _shape(t: torch.Tensor) -> str:
    return "[" + ", ".join(str(d) for d in t.shape) + "]"


def matmul_flops(a: torch.Tensor, b: torch.Tensor) -> float:
    """2 k n m (times the broadcast batch) for a (..., n, k) @ (..., k, m); vectors as n = 1, m = 1."""
    k = a.shape[-1] if a.dim() else 1
    n = a.shape[-2] if a.dim() >= 2 else 1
    m = b.shape[-1] if b.dim() >= 2 else 1
    try:
        batch = math.prod(torch.broadcast_shapes(a.shape[:-2], b.shape[:-2]))
    except RuntimeError:   # torch.matmul itself reports it
        batch = 1
    return 2.0 * k * n * m * batch


def _entries(args: list[torch.Tensor]) -> float:
    try:
        return float(math.prod(torch.broadcast_shapes(*(a.shape for a in args))))
    except RuntimeError:
        return float(max((a.numel() for a in args), default=1))


def evaluate_within_budget(e: Expr, env: dict[str, torch.Tensor], name: str = "") -> torch.Tensor:
    """language.evaluate(e, env), with the deadline checked before each operation and an operation
    refused when its estimate exceeds what is left of the budget."""
    if not progress.deadline_set():
        return evaluate(e, env)
    local = dict(env)
    where = f"computing '{name}': " if name else ""

    def bind(value: torch.Tensor) -> Expr:
        key = f"#b{len(local)}"
        local[key] = value
        return Expr("name", attrs={"id": key}, span=None)

    def step(x: Expr) -> torch.Tensor:
        progress.checkpoint()
        if not x.args or x.op in ("number", "name", "string", "none"):
            return evaluate(x, local)
        if x.op == "index":    # a view, or a copy no larger than its operand
            base = step(x.args[0])
            return evaluate(dataclasses.replace(x, args=(bind(base),) + tuple(x.args[1:])), local)
        args = [step(a) for a in x.args]
        node = dataclasses.replace(x, args=tuple(bind(a) for a in args))
        if x.op == "matmul" and len(args) == 2:
            kind, work = "matmul", matmul_flops(*args)
            what = f"{where}the product {_shape(args[0])} @ {_shape(args[1])} ({work:.3g} flop)"
        else:
            kind, work = "elementwise", _entries(args)
            op = x.attrs.get("func", x.op) if x.op == "call" else x.op
            what = f"{where}{op} over {work:.3g} entries"
        return _timed(kind, work, what, lambda: evaluate(node, local))

    out = step(e)
    _after(out, name)
    return out


def _after(out: torch.Tensor, name: str) -> None:
    """The statement's result is copied and checked for non-finite entries next (check/data.py):
    passes over all its entries that no estimate above covered."""
    entries = float(out.numel())
    if entries < SMALL_WORK:
        return
    seconds = AFTER_PASSES * entries / rate("elementwise")
    where = f"computing '{name}': " if name else ""
    progress.checkpoint(SAFETY * seconds, f"{where}storing and checking its {entries:.3g} entries would take "
                                          f"about {seconds:.3g} s, {max(progress.left(), 0.0):.3g} s were left")


def generate_within_budget(kind: str, shape: tuple[int, ...], options: dict, name: str = ""):
    """language.generators.generate, refused when its estimate exceeds what is left of the budget."""
    if not progress.deadline_set():
        return generate(kind, shape, options, name)
    entries = float(math.prod(shape)) if shape else 1.0
    where = f"computing '{name}': " if name else ""
    return _timed("generate", entries, f"{where}{kind}(shape={list(shape)})",
                  lambda: generate(kind, shape, options, name))
