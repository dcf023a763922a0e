"""Progress reporting (placeholder interface; the CLI work replaces the body, keeping the API).

    with reporter.phase("searching", total=N) as advance:
        advance(1)
"""
from __future__ import annotations

from contextlib import contextmanager


class NullReporter:
    @contextmanager
    def phase(self, description: str, total: int | None = None):
        yield lambda n=1: None
