"""How many torch intra-op threads a run uses (docs/performance.md, "Threads").

Small products gain nothing from threads and lose much to oversubscription, so they run on one.
For larger ones the faster of one thread and all of them depends on the machine as it is: on a
loaded 2-core machine a descent step took 5.7 ms on one thread against 39 ms on two (issue 21),
on a quiet one 3.2 against 2.4 ms. So the choice is measured at the start of the run, on the step
the descents repeat thousands of times. Thread counts can change the last bits of reductions, as
the number of cores always could; verdicts do not depend on them.
"""
from __future__ import annotations

import math
import time

import torch
from threadpoolctl import threadpool_limits

from ..compile.batched import evaluator
from ..progress import checkpoint

SMALL = 4_000_000          # m n k below which one thread is always used
ALL_THREADS = torch.get_num_threads()   # at import, before any run sets it
ROUNDS, CALLS = 2, 3


def set_threads(count: int) -> None:
    """torch's intra-op threads and numpy's BLAS threads (threadpoolctl), the same count: numpy's
    OpenBLAS otherwise keeps one thread a core, which on a shared machine spin-waits against the
    other work (the sound mode's goal network, one busy process beside it: 93.5 s wall and 121 s
    CPU with two BLAS threads, 58.6 s and 58 s with one; docs/performance.md, "Threads")."""
    torch.set_num_threads(count)
    threadpool_limits(limits=count, user_api="blas")


def choose(problem, requested: int | None = None) -> tuple[int, str | None]:
    """Set torch's intra-op threads (and numpy's BLAS threads) for `problem`; returns the count and,
    when it was measured, a note saying what was measured."""
    threads, note = _choose(problem, requested)
    set_threads(threads)
    return threads, note


def _choose(problem, requested) -> tuple[int, str | None]:
    if requested:
        return requested, None
    if ALL_THREADS == 1 or problem.m * max(problem.n or 1, 1) * problem.k < SMALL:
        return 1, None
    if str(getattr(problem, "device", "cpu")) != "cpu":
        return ALL_THREADS, None
    try:
        point = evaluator(problem).point
        theta = problem.theta0
        best = {1: math.inf, ALL_THREADS: math.inf}
        for _ in range(ROUNDS):               # interleaved: both counts see the same load
            for count in best:
                checkpoint()                  # --budget: a large model's evaluations take long
                torch.set_num_threads(count)
                point(theta)                  # warm-up at this count
                t0 = time.perf_counter()
                for _ in range(CALLS):
                    point(theta)
                best[count] = min(best[count], (time.perf_counter() - t0) / CALLS)
    except Exception:                         # the run itself reports a model that cannot be evaluated
        return ALL_THREADS, None
    pick = 1 if best[1] < best[ALL_THREADS] else ALL_THREADS
    return pick, (f"torch threads: {pick} (one evaluation took {best[1] * 1e3:.3g} ms on 1 thread and "
                  f"{best[ALL_THREADS] * 1e3:.3g} ms on {ALL_THREADS}, measured at the start; --threads N sets it)")
