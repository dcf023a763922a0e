"""Helpers shared by several test modules (no test module imports another)."""
from __future__ import annotations

from pathlib import Path

from certifier import check
from certifier.compile.problem import Problem
from certifier.parse import parse

SPECS = Path(__file__).resolve().parent.parent / "specs"


def spec_text(name: str, **replace) -> str:
    """The text of specs/NAME, with each `old=new` replacement applied (old must occur)."""
    text = (SPECS / name).read_text(encoding="utf-8")
    for old, new in replace.items():
        assert old in text, old
        text = text.replace(old, new)
    return text


def problem_of(text: str, path: str = "t.rq") -> Problem:
    return Problem(check.check(parse(text, path)))


def untimed(value):
    """The JSON document without its wall-clock figures."""
    if isinstance(value, dict):
        return {k: untimed(v) for k, v in value.items()
                if k not in ("timing", "seconds", "bnb_seconds", "boxes_per_second")}
    if isinstance(value, list):
        return [untimed(v) for v in value]
    return value
