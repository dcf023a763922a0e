"""The result cache, `.certify_cache/` (docs/output.md, "The cache").

An entry is keyed by the sha256 of: the cache format, the certify, torch and numpy versions (as
installed, read from their package metadata: a hit never imports them, docs/performance.md), the
spec's text, the bytes of every file the spec loads (data, params and weights files, and the
source of an imported Python model), and the run options that can change the numbers or the
outcome (device, threads, max_params, allow_python). It holds the Result as a dictionary
(Result.to_dict(), with inf and nan kept) and the rate's parameters, from which bound(t) is
rebuilt (report.load). Partial results (budget, interrupted) are never stored.

Trust (issue 20): the cache directory may sit in a checked-out tree that others write, and its
key is a hash of public material, so an entry is believed only when it carries an HMAC-SHA256
under a key kept outside the repository: $CERTIFY_CACHE_KEY, default ~/.cache/certify/cache-key
(32 random bytes, created on first use, mode 0600). An entry is read only from a regular file
(no symlink followed, no FIFO opened for blocking) of at most MAX_ENTRY_BYTES; anything else is a
miss.

Load what you hashed: the key hashes each file before the run; the check stage reads each file
once, parses it from the bytes it hashed and records their sha256 (check/files.py,
`record_loads`). A result is stored only when those digests are exactly the key's: a file
changed between the key and the load, even changed back since, stores nothing.
"""
from __future__ import annotations

import functools
import hashlib
import hmac
import json
import os
import secrets
import stat
import tempfile
from pathlib import Path

from .language.ast import DataFrom, ParamsFrom
from .parse import parse
from .report.json import clean
from .report.load import rate_parameters, result_from_dict
from .result import Result
from .version import __version__

CACHE_DIR = ".certify_cache"
FORMAT = 2                       # 2: entries carry an HMAC (format 1 entries are never read)
MAX_ENTRY_BYTES = 32 << 20       # the largest entry read; results are a few hundred KiB
PARTIAL_KINDS = ("budget", "interrupted")

# record_loads is re-exported: runs.py opens a run's journal of loaded files through the cache
__all__ = ["Cache", "key_material", "key_of", "loaded_as_keyed", "record_loads"]
# the packages whose versions can change the numbers: their installed versions are in the key
VERSIONED = ("torch", "numpy")


def record_loads() -> list[tuple[str, str]]:
    """check/files.py's journal of the files a run reads (imported here, on a miss: importing the
    check stage imports torch, and a cache hit never needs it)."""
    from .check.files import record_loads as start

    return start()


def base_dir(spec_path: str) -> Path:
    """check/files.py's base_dir, without importing the check stage: paths in a spec are relative
    to its directory (the working directory for a spec given as text, "<string>"). Were the two
    ever to differ, the key would hash other files than the run reads, and `loaded_as_keyed`
    would store nothing (tests/test_startup.py checks that they agree)."""
    if not spec_path or spec_path.startswith("<"):
        return Path.cwd()
    return Path(spec_path).parent


@functools.lru_cache(maxsize=None)
def installed_version(package: str) -> str:
    """The installed version of `package` from its metadata (no import: importing torch takes
    about 1 s); its __version__ where no metadata says (a source tree on sys.path)."""
    from importlib import metadata

    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        import importlib

        return str(importlib.import_module(package).__version__)


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
    except Exception:      # a spec that cannot be parsed is reported by the run, not here
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
        # imports torch: only for a Python model
        from .language.torch_modules import module_file

        path = module_file(target, base_dir(spec_path))
        if path is None:
            return None
        out.append((f"python:{target.split(':')[0]}", Path(path)))
    return out


def key_material(spec_path: str, source: str, options: dict) -> dict | None:
    files = loaded_files(spec_path, source, bool(options.get("allow_python")))
    if files is None:
        return None
    try:
        digests = [{"name": name, "sha256": sha256_file(path)} for name, path in files]
    except OSError:
        return None
    return {"format": FORMAT, "certify": __version__, **{name: installed_version(name) for name in VERSIONED},
            "spec_sha256": sha256_bytes(source.encode("utf-8")), "files": digests,
            "options": {k: options[k] for k in sorted(options)}}


def loaded_as_keyed(loaded: list[tuple[str, str]] | None, material: dict) -> bool:
    """Whether the files a run read, as (name, sha256) of the bytes it parsed, are exactly the
    files of its cache key: each keyed file read, each with the keyed digest, nothing else."""
    keyed = {(f["name"], f["sha256"]) for f in material.get("files", [])}
    return loaded is not None and set(loaded) == keyed


def key_of(material: dict) -> str:
    return sha256_bytes(json.dumps(material, sort_keys=True).encode("utf-8"))


def key_file() -> Path:
    configured = os.environ.get("CERTIFY_CACHE_KEY")
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "certify" / "cache-key"


def secret_key(create: bool) -> bytes | None:
    """The user's cache key; None when there is none and `create` is false, or it cannot be read
    or made (then the cache is off: nothing is read, nothing written)."""
    path = key_file()
    try:
        data = _read_regular(path, 4096)
        if data is not None and len(data) >= 32:
            return data
        if not create or data is not None:
            return None
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(secrets.token_bytes(32))
        return _read_regular(path, 4096)
    except OSError:
        return None


def _read_regular(path: Path, limit: int) -> bytes | None:
    """The bytes of a regular file of at most `limit` bytes, or None (missing, a symlink, a FIFO,
    a device, too large). O_NONBLOCK: opening a FIFO must not wait for a writer."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as fh:
        info = os.fstat(fh.fileno())
        if not stat.S_ISREG(info.st_mode) or info.st_size > limit:
            return None
        data = fh.read(limit + 1)
    return data if len(data) <= limit else None


def _mac(key: bytes, entry: dict) -> str:
    body = {k: entry[k] for k in ("key", "result", "rate")}
    return hmac.new(key, json.dumps(body, sort_keys=True, allow_nan=True).encode("utf-8"), hashlib.sha256).hexdigest()


class Cache:
    def __init__(self, directory: str | os.PathLike = CACHE_DIR):
        self.directory = Path(directory)

    def _path(self, key: str) -> Path:
        return self.directory / key[:2] / f"{key}.json"

    def load(self, material: dict) -> Result | None:
        """The cached Result, or None: no entry, or one this user's key did not sign."""
        secret = secret_key(create=False)
        if secret is None:
            return None
        raw = _read_regular(self._path(key_of(material)), MAX_ENTRY_BYTES)
        if raw is None:
            return None
        try:
            entry = json.loads(raw.decode("utf-8"))
            if not isinstance(entry, dict) or not hmac.compare_digest(str(entry.get("mac")), _mac(secret, entry)):
                return None
        except (ValueError, KeyError, TypeError, RecursionError):
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
        secret = secret_key(create=True)
        if secret is None:
            return False
        entry = {"key": material, "result": clean(result.to_dict(), finite=False), "rate": clean(rate, finite=False)}
        # the MAC is over the entry as it will be read back (a JSON round trip)
        entry = json.loads(json.dumps(entry, allow_nan=True))
        entry["mac"] = _mac(secret, entry)
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
