"""The result cache, `.certify_cache/` (docs/output.md, "The cache").

An entry is keyed by the sha256 of: the cache format, the certify, torch and numpy versions, the
spec's text, the bytes of every file the spec loads (data, params and weights files, and the
source of an imported Python model), and the run options that can change the numbers or the
outcome (device, threads, max_params, allow_python). It holds the Result as a dictionary
(Result.to_dict(), with inf and nan kept) and the rate's parameters, from which bound(t) is
rebuilt (report.load). Partial results (budget, interrupted) are never stored.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

from .check.files import base_dir
from .diagnostics import SpecError
from .language.ast import DataFrom, ParamsFrom
from .language.torch_modules import module_file
from .parse import parse
from .report.json import clean
from .report.load import rate_parameters, result_from_dict
from .result import Result
from .version import __version__

CACHE_DIR = ".certify_cache"
FORMAT = 1
PARTIAL_KINDS = ("budget", "interrupted")


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def loaded_files(spec_path: str, source: str, allow_python: bool = False) -> list[tuple[str, Path]] | None:
    """(name as written in the spec, path) of every file the spec loads, in spec order; None when
    that cannot be known without running it (a syntax error, a missing file)."""

    try:
        spec = parse(source, spec_path)
    except SpecError:
        return None
    names: list[str] = []
    if isinstance(spec.data, DataFrom):
        names += [p for p, _ in spec.data.paths]
    if isinstance(spec.params, ParamsFrom):
        names.append(spec.params.path)
    out = []
    for name in names:
        path = base_dir(spec_path) / name
        if not path.is_file():
            return None
        out.append((name, path))
    target = getattr(spec.model, "target", None)
    if target is not None and allow_python:

        path = module_file(target, base_dir(spec_path))
        if path is None:
            return None
        out.append((f"python:{target.split(':')[0]}", Path(path)))
    return out


def key_material(spec_path: str, source: str, options: dict) -> dict | None:
    import numpy
    import torch

    files = loaded_files(spec_path, source, bool(options.get("allow_python")))
    if files is None:
        return None
    try:
        digests = [{"name": name, "sha256": sha256_file(path)} for name, path in files]
    except OSError:
        return None
    return {"format": FORMAT, "certify": __version__, "torch": torch.__version__, "numpy": numpy.__version__,
            "spec_sha256": sha256_bytes(source.encode("utf-8")), "files": digests,
            "options": {k: options[k] for k in sorted(options)}}


def key_of(material: dict) -> str:
    return sha256_bytes(json.dumps(material, sort_keys=True).encode("utf-8"))


class Cache:
    def __init__(self, directory: str | os.PathLike = CACHE_DIR):
        self.directory = Path(directory)

    def _path(self, key: str) -> Path:
        return self.directory / key[:2] / f"{key}.json"

    def load(self, material: dict) -> Result | None:
        key = key_of(material)
        try:
            entry = json.loads(self._path(key).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if entry.get("key") != material:
            return None
        try:
            return result_from_dict(entry["result"], entry.get("rate"))
        except Exception:
            return None

    def store(self, material: dict, result: Result) -> bool:
        """Write the entry (atomically); False when the result is partial or its bound cannot be
        described (nothing is written then)."""
        f = result.failing_region
        if f is not None and f.kind in PARTIAL_KINDS:
            return False
        try:
            rate = rate_parameters(result)
        except ValueError:
            return False
        entry = {"key": material, "result": clean(result.to_dict(), finite=False), "rate": clean(rate, finite=False)}
        path = self._path(key_of(material))
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(entry, fh, allow_nan=True)
            os.replace(tmp, path)
        except OSError:
            return False
        gitignore = self.directory / ".gitignore"
        if not gitignore.exists():
            try:
                gitignore.write_text("# written by certify: the result cache\n*\n")
            except OSError:
                pass
        return True
