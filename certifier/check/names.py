"""Name lookup: which names an expression may read, and helpful E101 hints when it may not."""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field

from ..diagnostics import Collector
from ..language.ast import Expr
from ..language.evaluate import CONSTANTS
from .shapes import Shape

# Reserved words of the language: they cannot name data arrays, parameters or the model.
KEYWORDS = ("spec", "data", "params", "model", "target", "loss", "region", "method", "desingularizer",
            "certify", "from")


def closest(name: str, candidates) -> str | None:
    """The closest candidate by difflib, or None when nothing is close."""
    matches = difflib.get_close_matches(name, sorted(set(candidates)), n=1, cutoff=0.6)
    if not matches:
        lowered = {c.lower(): c for c in candidates}
        return lowered.get(name.lower())
    return matches[0]


def did_you_mean(name: str, candidates) -> str | None:
    match = closest(name, candidates)
    return f"did you mean '{match}'?" if match else None


def join(*parts: str | None) -> str | None:
    """Hint parts joined with '; ' (after a question, a space)."""
    text = ""
    for part in parts:
        if part:
            text += ("" if not text else " " if text.endswith("?") else "; ") + part
    return text or None


def listing(names, limit: int = 20) -> str:
    names = sorted(set(names))
    if len(names) > limit:
        return ", ".join(names[:limit]) + f", ... ({len(names) - limit} more)"
    return ", ".join(names)


@dataclass
class Scope:
    """The names an expression may read, with their shapes (None: unknown after an earlier error).

    `blocked` holds names that exist but may not be read here: name -> (message, hint).
    `later` holds names defined further down the data block: name -> line.
    """

    visible: dict[str, Shape | None] = field(default_factory=dict)
    blocked: dict[str, tuple[str, str]] = field(default_factory=dict)
    later: dict[str, int] = field(default_factory=dict)
    hint: str | None = None  # added to every E101 of this scope
    defining: str | None = None  # the data name being defined (for "used in its own definition")

    def lookup(self, e: Expr, collector: Collector) -> tuple[bool, Shape | None]:
        """(found, shape). Reports E101 when the name may not be read here."""
        name = e.attrs["id"]
        if name in self.visible:
            return True, self.visible[name]
        if name in CONSTANTS:
            return True, ()
        if name in self.blocked:
            message, hint = self.blocked[name]
            collector.error("E101", message, e.span, hint)
            return False, None
        if name == self.defining or name in self.later:
            line = self.later.get(name, 0)
            if name == self.defining:
                hint = f"'{name}' is used in its own definition"
            else:
                hint = (f"'{name}' is defined later, at line {line}; "
                        "data statements are evaluated in order")
            collector.error("E101", f"undefined name '{name}'", e.span, hint)
            return False, None
        known = list(self.visible) + list(CONSTANTS)
        hint = join(did_you_mean(name, known), self.hint)
        if hint is None:
            hint = ("the names defined here are: " + listing(known) if known
                    else "no names are defined here; define it in a data or params statement")
        collector.error("E101", f"undefined name '{name}'", e.span, hint)
        return False, None
