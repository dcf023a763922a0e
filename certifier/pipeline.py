"""parse -> check -> compile -> analyse -> compose -> report: the whole run of one spec."""
from __future__ import annotations

from dataclasses import dataclass, field

from .progress import NullReporter


@dataclass
class RunOptions:
    max_params: int = 10**8          # refuse larger problems before allocating (E205)
    reporter: object = field(default_factory=NullReporter)  # progress on stderr
    device: str = "cpu"


def run_text(source: str, path: str = "<string>", options: RunOptions | None = None):
    raise NotImplementedError  # filled in by the engine work


def run_file(path: str, options: RunOptions | None = None):
    raise NotImplementedError
