"""report: renderers of the one Result model (text for people, JSON for programs)."""
from ..result import EXIT_CODES, Result
from .json import error_json, to_json
from .text import render_text

__all__ = ["EXIT_CODES", "Result", "error_json", "render_text", "to_json"]
