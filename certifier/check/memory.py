"""A rough estimate of the memory a run needs, checked before the data and the parameters are
allocated (E205 naming the estimate and the limit).

    bytes ≈ 8·(3·D + 12·m) + min(8·n·k·m, 1 GiB) + 320 MiB

D: entries of the data arrays (x, y and the constants), each held as numpy float64, as a torch
tensor and as model intermediates of the same order over the batch of samples (3 copies);
m: parameters, held as θ0 (numpy and torch), the current θ and its gradient, the witness's
iterates and the batched evaluator's 4 per θ (compile/batched.py: 8·m·4 bytes per θ), and the
region search's points (12 copies); n·k·m: the tangent kernel's Jacobian when it is formed, at
most compile/kernel.py's JACOBIAN_MEMORY (Lanczos beyond); 320 MiB: the engines' working memory,
compile/batched.py's chunks (MEMORY, 64 MiB), and 256 MiB for the tangent kernel's saved forward
pass and its backward passes (the size of the chunks of J's rows that compile/kernel.py once took;
it forms J one row at a time now and has no such constant). The constants are copied here because
check/ sits below compile/ (docs/architecture.md).

The limit: DEFAULT_LIMIT (8 GiB), or three quarters of the machine's physical memory when that
is smaller; check(max_memory=...) overrides it."""
from __future__ import annotations

import os

from ..diagnostics import Collector, Span

DEFAULT_LIMIT = 8 << 30
DATA_COPIES = 3
PARAM_COPIES = 12
JACOBIAN_BYTES = 1 << 30
WORKING_BYTES = (64 + 256) << 20
HINT = ("use a smaller data set or model; the estimate is 8·(3·data entries + 12·parameters) bytes "
        "plus the engines' working memory (docs/language.md, \"Size limits\")")


def default_limit() -> int:
    try:
        physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return DEFAULT_LIMIT
    return min(DEFAULT_LIMIT, physical * 3 // 4) if physical > 0 else DEFAULT_LIMIT


def estimate(data: int, params: int, n: int = 0, k: int = 1) -> int:
    return 8 * (DATA_COPIES * data + PARAM_COPIES * params) + min(8 * n * k * params, JACOBIAN_BYTES) + WORKING_BYTES


def gib(nbytes: int) -> str:
    return f"{nbytes / 2**30:.1f} GiB ({nbytes:,} bytes)"


class Memory:
    """What is known so far (data entries, parameters, samples n, outputs k per sample); admit()
    refuses, once, when the estimate passes the limit, at the spec statement of the larger part."""

    def __init__(self, limit: int, params: int = 0, params_span: Span | None = None):
        self.limit, self.params, self.params_span = limit, params, params_span
        self.data, self.n, self.k = 0, 0, 1
        self.data_span: Span | None = None
        self.refused = False

    def admit(self, collector: Collector, span: Span | None, *, data: int | None = None,
              params: int | None = None, n: int | None = None, k: int | None = None) -> bool:
        if self.refused:
            return False
        if data is not None:
            self.data, self.data_span = data, span
        if params is not None:
            self.params, self.params_span = params, span
        self.n = self.n if n is None else n
        self.k = self.k if k is None else k
        need = estimate(self.data, self.params, self.n, self.k)
        if need <= self.limit:
            return True
        self.refused = True
        where = self.params_span if PARAM_COPIES * self.params >= DATA_COPIES * self.data else self.data_span
        collector.error("E205", f"the run would need about {gib(need)} of memory for {self.data:,} data "
                        f"entries and {self.params:,} parameters, more than the limit of {gib(self.limit)}",
                        where or span, HINT)
        return False
