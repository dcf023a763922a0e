"""Configuration files of `certify SPEC...`: defaults for its options, torch-free.

Where they come from, lowest precedence first (the command line overrides all of them):

1. the user's own file: $CERTIFY_CONFIG, else $XDG_CONFIG_HOME/certify/config.toml
   (~/.config/certify/config.toml); top-level keys;
2. the project's file: walking up from the working directory, the first directory with a
   `certify.toml` (top-level keys) or a `pyproject.toml` with a `[tool.certify]` table; in one
   directory `certify.toml` wins and the pyproject is not read (as ruff does with ruff.toml).

`allow-python` is read from the user's file only: a project file comes with the checked-out tree,
and a repository must not be able to turn on the import of its own Python code (docs/output.md).
"""
from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:                                   # Python 3.10: the same parser, from PyPI
    import tomli as tomllib

FORMATS = ("text", "json", "jsonl", "sarif", "junit", "github")
REPORTS = ("full", "failures", "none")
COLORS = ("auto", "always", "never")


class ConfigError(Exception):
    """A configuration file that cannot be used; the message names the file (and line)."""


def _choice(options):
    def check(value):
        if not isinstance(value, str) or value not in options:
            raise ValueError(f"expected one of {', '.join(options)}")
        return value
    return check


def _positive_int(value):
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError("expected a positive integer")
    return value


def _positive_number(value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < float("inf"):
        raise ValueError("expected a positive number of seconds")
    return float(value)


def _bool(value):
    if not isinstance(value, bool):
        raise ValueError("expected true or false")
    return value


def _string(value):
    if not isinstance(value, str) or not value:
        raise ValueError("expected a non-empty string")
    return value


SIZE_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def _size(value):
    """Bytes, from an integer or a string like "8G", "512M", "1.5GiB" (powers of 1024): the
    grammar of --max-memory (arguments.memory_size, which this module may not import: the two
    sit side by side in the bottom layer; tests/test_config.py checks that they agree)."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError("expected a size such as \"8G\" or \"512M\" (powers of 1024), or a number of bytes")
    cleaned = str(value).strip().replace(" ", "")
    number = cleaned.rstrip("KkMmGgTtIiBb")
    unit = cleaned[len(number):].upper()
    unit = unit[:-2] if unit.endswith("IB") else ("" if unit == "B" else unit)
    try:
        size = float(number) * SIZE_UNITS[unit]
    except (KeyError, ValueError):
        raise ValueError("expected a size such as \"8G\" or \"512M\" (powers of 1024: K, M, G, T or "
                         "KiB, MiB, GiB, TiB), or a number of bytes") from None
    if not 1 <= size < float(1 << 60):
        raise ValueError("expected a positive size")
    return int(size)


# key in the file -> (the argparse destination, its check)
KEYS = {
    "format": ("format", _choice(FORMATS)),
    "fail-on": ("fail_on", _choice(("inconclusive", "refuted"))),
    "budget": ("budget", _positive_number),
    "cache": ("cache", _bool),
    "cache-dir": ("cache_dir", _string),
    "workers": ("workers", _positive_int),
    "threads": ("threads", _positive_int),
    "max-params": ("max_params", _positive_int),
    "max-memory": ("max_memory", _size),
    "report": ("report", _choice(REPORTS)),
    "color": ("color", _choice(COLORS)),
    "allow-python": ("allow_python", _bool),
}
USER_ONLY = {"allow-python"}


@dataclass
class Config:
    values: dict = field(default_factory=dict)     # argparse destination -> value
    files: list = field(default_factory=list)      # the files read, lowest precedence first


def user_config_path() -> Path | None:
    explicit = os.environ.get("CERTIFY_CONFIG")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    path = Path(base) / "certify" / "config.toml"
    return path if path.is_file() else None


def find_project_config(start: Path | None = None) -> tuple[Path, tuple[str, ...]] | None:
    """(file, the table holding the keys) of the nearest project config above `start`."""
    here = (start or Path.cwd()).resolve()
    for directory in (here, *here.parents):
        candidate = directory / "certify.toml"
        if candidate.is_file():
            return candidate, ()
        candidate = directory / "pyproject.toml"
        if candidate.is_file():
            try:
                data = tomllib.loads(candidate.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
                continue                  # not ours to judge: a broken pyproject without [tool.certify]
            if isinstance(data.get("tool"), dict) and "certify" in data["tool"]:
                return candidate, ("tool", "certify")
    return None


def _line_of(text: str, table: tuple[str, ...], key: str) -> int | None:
    """The line of `key = ...` inside `table` (tomllib keeps no positions): a plain scan of the
    table's lines, enough for the flat tables this file format has."""
    header = "[" + ".".join(table) + "]" if table else None
    inside = header is None
    pattern = re.compile(r"""^\s*(?:"%s"|'%s'|%s)\s*=""" % ((re.escape(key),) * 3))
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if stripped.startswith("["):
            inside = stripped.split("#")[0].strip().replace(" ", "") == header
            continue
        if inside and pattern.match(line):
            return number
    return None


def _where(path: Path, text: str, table: tuple[str, ...], key: str) -> str:
    line = _line_of(text, table, key)
    return f"{path}:{line}" if line is not None else str(path)


def read_config(path: Path, table: tuple[str, ...] = (), trusted: bool = False) -> dict:
    """The options of one file as {argparse destination: value}; ConfigError names file:line."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the configuration: {getattr(exc, 'strerror', None) or exc}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    for part in table:
        data = data.get(part, {})
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: [{'.'.join(table)}] must be a table")
    out = {}
    for key, value in data.items():
        where = _where(path, text, table, key)
        if key not in KEYS:
            raise ConfigError(f"{where}: unknown key '{key}' (known: {', '.join(KEYS)})")
        if key in USER_ONLY and not trusted:
            raise ConfigError(f"{where}: '{key}' is not allowed in a project's configuration (a repository "
                              f"must not turn on code execution); pass --allow-python or set it in "
                              f"your own {user_config_hint()}")
        dest, check = KEYS[key]
        try:
            value = check(value)
        except ValueError as exc:
            raise ConfigError(f"{where}: '{key}': {exc}, got {value!r}") from None
        if key == "cache-dir":           # relative to the file that names it, as ruff resolves paths
            value = str((path.parent / value).resolve()) if not os.path.isabs(value) else value
        out[dest] = value
    return out


def user_config_hint() -> str:
    return "~/.config/certify/config.toml (or $CERTIFY_CONFIG)"


def load_config(start: Path | None = None) -> Config:
    """The defaults from the user's file, overridden by the project's (CLI flags override both)."""
    config = Config()
    user = user_config_path()
    if user is not None:
        if not user.is_file():
            raise ConfigError(f"{user}: $CERTIFY_CONFIG names no file")
        config.values.update(read_config(user, (), trusted=True))
        config.files.append(str(user))
    project = find_project_config(start)
    if project is not None:
        path, table = project
        if user is None or path.resolve() != user.resolve():
            config.values.update(read_config(path, table, trusted=False))
            config.files.append(str(path))
    return config
