"""Reading an untrusted certificate: the file (a regular file of at most MAX_BYTES, its JSON nested
at most MAX_DEPTH deep, both checked before parsing) and its structure (types, finite numbers,
known names), checked before any of it is used (docs/output.md, "Certificates"). Every failure is
a CertificateError with one line saying where (`evidence[3].delta[0]`) and what; `certify check`
prints it and exits 2. No dependency: the schema is the small table of checkers below."""
from __future__ import annotations

import json
import math
import os
import re
import stat
from typing import Callable

from .base import FORMAT, CertificateError

MAX_BYTES = 64 << 20       # certificates are a few hundred KiB; refused above this, before reading
MAX_DEPTH = 32             # certify writes at most 7 levels; json's own recursion would traceback
VERDICTS = ("certified", "refuted", "inconclusive")
REGIONS = ("ball", "box")


class Malformed(Exception):
    def __init__(self, where: str, what: str):
        super().__init__(f"{where}: {what}" if where else what)


# --- the file --------------------------------------------------------------------------------------

def read_regular(path: str, what: str, limit: int = MAX_BYTES) -> bytes:
    """The bytes of a regular file of at most `limit` bytes. O_NONBLOCK so that opening a FIFO does
    not wait for a writer; fstat on the opened file (a symlink to /dev/zero is a device)."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOCTTY", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise CertificateError(f"cannot read {what} '{path}': {exc.strerror or exc}") from None
    info = os.fstat(fd)          # before fdopen, which refuses a directory with its own error
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise CertificateError(f"{what} '{path}' is not a regular file")
    if info.st_size > limit:
        os.close(fd)
        raise CertificateError(f"{what} '{path}' is {info.st_size:,} bytes, more than the limit of {limit:,}")
    with os.fdopen(fd, "rb") as fh:
        try:
            data = fh.read(limit + 1)
        except OSError as exc:
            raise CertificateError(f"cannot read {what} '{path}': {exc.strerror or exc}") from None
    if len(data) > limit:             # it grew after fstat
        raise CertificateError(f"{what} '{path}' is more than the limit of {limit:,} bytes")
    return data


_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.S)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")


def nesting_depth(text: str) -> int:
    """The deepest nesting of [ and { outside strings (unbalanced text: json.loads reports it)."""
    import numpy as np

    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text)).encode("ascii")
    steps = np.zeros(256, dtype=np.int8)
    steps[[ord("["), ord("{")]] = 1
    steps[[ord("]"), ord("}")]] = -1
    codes = np.frombuffer(brackets, dtype=np.uint8)
    depth, deepest, chunk = 0, 0, 1 << 20    # chunks bound the cumsum's memory
    for i in range(0, len(codes), chunk):
        levels = depth + np.cumsum(steps[codes[i:i + chunk]], dtype=np.int64)
        deepest = max(deepest, int(levels.max()))
        depth = int(levels[-1])
    return deepest


def _no_constant(token: str):
    raise Malformed("", f"the JSON token {token} is not a number certify writes (it writes null for "
                        "a non-finite number)")


def load(path: str) -> dict:
    """The certificate at `path` as a dict whose structure validate() accepted."""
    data = read_regular(path, "certificate")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CertificateError(f"'{path}' is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    depth = nesting_depth(text)
    if depth > MAX_DEPTH:
        raise CertificateError(f"'{path}' nests JSON {depth} levels deep, more than the limit of {MAX_DEPTH}")
    try:
        cert = json.loads(text, parse_constant=_no_constant)
    except Malformed as exc:
        raise CertificateError(f"'{path}' is malformed: {exc}") from None
    except (ValueError, RecursionError) as exc:
        raise CertificateError(f"'{path}' is not JSON: {exc}") from None
    if not isinstance(cert, dict) or cert.get("format") != FORMAT:
        raise CertificateError(f"'{path}' is not a certify certificate ({FORMAT})")
    try:
        validate(cert)
    except Malformed as exc:
        raise CertificateError(f"'{path}' is malformed: {exc}") from None
    return cert


# --- checkers: each takes (value, where) and raises Malformed ---------------------------------------

Check = Callable[[object, str], None]


def _kind(value) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", str: "a string", list: "a list", dict: "an object"}.get(
        type(value), "a number" if isinstance(value, (int, float)) else type(value).__name__)


def number(value, where: str) -> None:
    # bool is an int in Python, never a number here; 1e400 parses as inf
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise Malformed(where, f"expected a finite number, got {_kind(value)}")
    if not math.isfinite(value):
        raise Malformed(where, f"expected a finite number, got {value!r}")


def nonneg(value, where: str) -> None:
    number(value, where)
    if value < 0:
        raise Malformed(where, f"expected a number >= 0, got {value!r}")


def positive(value, where: str) -> None:
    number(value, where)
    if not value > 0:
        raise Malformed(where, f"expected a number > 0, got {value!r}")


def count(value, where: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        shown = value if isinstance(value, int) and not isinstance(value, bool) else _kind(value)
        raise Malformed(where, f"expected a whole number >= 0, got {shown}")


def string(value, where: str) -> None:
    if not isinstance(value, str):
        raise Malformed(where, f"expected a string, got {_kind(value)}")


def boolean(value, where: str) -> None:
    if not isinstance(value, bool):
        raise Malformed(where, f"expected true or false, got {_kind(value)}")


def sha256(value, where: str) -> None:
    if not (isinstance(value, str) and re.fullmatch(r"[0-9a-f]{64}", value)):
        raise Malformed(where, "expected a sha256 digest (64 hex digits)")


def hexfloat(value, where: str) -> None:
    """A float written with float.hex, finite."""
    string(value, where)
    try:
        x = float.fromhex(value)
    except (ValueError, OverflowError):
        raise Malformed(where, f"expected a float.hex string, got {value[:40]!r}") from None
    if not math.isfinite(x):
        raise Malformed(where, f"expected a finite float.hex string, got {value[:40]!r}")


def anything(value, where: str) -> None:
    """Informative JSON (its depth is bounded by MAX_DEPTH)."""


def null_or(check: Check) -> Check:
    def c(value, where):
        if value is not None:
            check(value, where)
    return c


def one_of(*names) -> Check:
    def c(value, where):
        if not (isinstance(value, str) and value in names):
            shown = repr(value[:40]) if isinstance(value, str) else _kind(value)
            raise Malformed(where, f"expected one of {', '.join(names)}, got {shown}")
    return c


def list_of(check: Check, length: int | None = None) -> Check:
    def c(value, where):
        if not isinstance(value, list):
            raise Malformed(where, f"expected a list, got {_kind(value)}")
        if length is not None and len(value) != length:
            raise Malformed(where, f"expected {length} entries, got {len(value)}")
        for i, item in enumerate(value):
            check(item, f"{where}[{i}]")
    return c


def tuple_of(*checks: Check) -> Check:
    def c(value, where):
        if not isinstance(value, list) or len(value) != len(checks):
            got = f"a list of {len(value)}" if isinstance(value, list) else _kind(value)
            raise Malformed(where, f"expected a list of {len(checks)} entries, got {got}")
        for i, (item, check) in enumerate(zip(value, checks)):
            check(item, f"{where}[{i}]")
    return c


def obj(fields: dict[str, tuple[Check, bool]], closed: bool = False) -> Check:
    """An object: name -> (checker, required). `closed`: other keys are refused (where they would
    reach a constructor); otherwise ignored."""
    def c(value, where):
        if not isinstance(value, dict):
            raise Malformed(where, f"expected an object, got {_kind(value)}")
        for name, (check, required) in fields.items():
            if name in value:
                check(value[name], f"{where}.{name}" if where else name)
            elif required:
                raise Malformed(where or "certificate", f"the field '{name}' is missing")
        if closed:
            extra = sorted(set(value) - set(fields))
            if extra:
                raise Malformed(where, f"unknown field '{extra[0][:40]}'")
    return c


def req(check: Check) -> tuple[Check, bool]:
    return check, True


def opt(check: Check) -> tuple[Check, bool]:
    return check, False


# --- the schema ------------------------------------------------------------------------------------

def _desingularizer(value, where: str) -> None:
    from ..language.desingularizers import RULES

    obj({"name": req(one_of(*RULES)), "params": opt(obj({}))})(value, where)
    params = value.get("params") or {}
    if value["name"] == "power":
        obj({"alpha": req(number)}, closed=True)(params, f"{where}.params")
        if not 0.5 < params["alpha"] <= 1.0:
            raise Malformed(f"{where}.params.alpha", f"expected 1/2 < alpha <= 1, got {params['alpha']!r}")
    elif params:
        raise Malformed(f"{where}.params", f"the {value['name']} desingularizer has no parameters")


RATE_FIELDS = obj({"phi": req(obj({"desingularizer": req(_desingularizer)}, closed=True)),
                   "K": req(number), "initial": req(number), "floor": req(nonneg),
                   "step": opt(null_or(positive)), "smoothness": opt(null_or(positive)),
                   "outward": opt(boolean), "K_text": opt(null_or(string))}, closed=True)


def _rate_parameters(value, where: str) -> None:
    if value is None:
        return
    obj({"kind": req(one_of("rate", "constant", "sound"))})(value, where)
    kind = value["kind"]
    if kind == "rate":
        obj({"fields": req(RATE_FIELDS)})(value, where)
    elif kind == "constant":                 # a float (sampled) or its float.hex (sound)
        v = value.get("value")
        (hexfloat if isinstance(v, str) else number)(v, f"{where}.value")
    else:
        obj({"L0_upper": req(hexfloat), "mu": req(hexfloat), "floor": req(hexfloat),
             "horizon": req(positive)})(value, where)


POINT = {"source": req(string), "roles": opt(list_of(one_of("mu", "K"))), "distance": req(nonneg),
         "loss": req(number), "rayleigh": req(null_or(number)), "value": req(number),
         "delta": req(list_of(number)), "sample_max": opt(number)}
VIOLATION = obj({"t": req(number), "loss": req(number), "bound": req(number)})

# evidence kind -> the checker of its entry; a kind not here is refused
EVIDENCE: dict[str, Check] = {
    "sampled-point": obj(POINT),
    "kernel-point": obj({**POINT, "lambda_min": req(number)}),
    "witness": obj({"method": opt(string), "step": req(positive), "steps": req(count), "time": req(nonneg),
                    "curve": req(list_of(tuple_of(number, number))), "max_distance": req(nonneg),
                    "path_length": req(nonneg), "checked_until": req(number),
                    "violation": opt(null_or(VIOLATION)), "left_region_at": opt(null_or(number)),
                    "settled_at": opt(null_or(number)), "horizon": opt(null_or(number))}),
    "sound-proof": obj({"region": req(one_of(*REGIONS)), "radius": opt(null_or(hexfloat)),
                        "floor": req(hexfloat), "L0_upper": req(hexfloat), "functions": req(string),
                        "mu": opt(hexfloat), "rho": opt(hexfloat), "ball": opt(boolean), "leaves": opt(count),
                        "boxes_evaluated": opt(count),
                        "root": opt(obj({"lo": req(list_of(hexfloat)), "hi": req(list_of(hexfloat))})),
                        "splits": opt(list_of(tuple_of(string, count, hexfloat))),
                        "refutation": opt(boolean), "needed": opt(hexfloat),
                        "initial_below_floor": opt(boolean)}),
    "sound-leaf": obj({"path": req(string), "lo": req(list_of(hexfloat)), "hi": req(list_of(hexfloat)),
                       "status": req(one_of("proven", "dropped")), "reason": opt(string), "rule": opt(string),
                       "bound": opt(hexfloat), "value": opt(null_or(number)), "numbers": opt(anything)}),
    "sound-ball": obj({"radius": req(hexfloat), "rule": req(string), "bound": req(hexfloat),
                       "value": opt(null_or(number)), "numbers": opt(anything)}),
    "sound-tube": obj({"floor": req(hexfloat), "L0_upper": req(hexfloat), "functions": req(string),
                       "segments": req(count), "end_time": req(hexfloat),
                       "terminal": req(null_or(obj({"radius": req(hexfloat), "mu": req(hexfloat)}))),
                       "loss_upper_end": opt(number), "tube_radius_end": opt(number)}),
    "sound-checkpoint": obj({"index": req(count), "t": req(hexfloat), "h": opt(hexfloat), "rho": opt(hexfloat),
                             "theta": req(list_of(hexfloat)), "tube_radius": opt(number),
                             "loss_upper": opt(number)}),
    "sound-refutation": obj({"theta": req(list_of(hexfloat)), "distance": opt(null_or(number)),
                             "loss_lower": opt(null_or(number)), "loss_upper": opt(null_or(number)),
                             "rayleigh_upper": opt(null_or(number)), "needed_mu": opt(null_or(number)),
                             "min_loss_lower": opt(null_or(number)), "claim_false": opt(boolean)}),
}


def _evidence(value, where: str) -> None:
    obj({"kind": req(string)})(value, where)
    check = EVIDENCE.get(value["kind"])
    if check is None:
        raise Malformed(f"{where}.kind", f"unknown evidence kind {value['kind'][:40]!r} "
                                         f"(known: {', '.join(EVIDENCE)})")
    check(value, where)


# method name -> the checker of `numbers`
NUMBERS: dict[str, Check] = {
    "sampled": obj({"L0": req(nonneg), "mu": req(null_or(number)), "c": opt(null_or(number)),
                    "K": opt(null_or(number)), "floor": req(nonneg), "floor_effective": opt(nonneg),
                    "floor_claimed": opt(null_or(nonneg)), "sample_bound": opt(null_or(number)),
                    "radius": req(positive), "region": req(one_of(*REGIONS)), "rho": req(null_or(nonneg)),
                    "horizon": req(null_or(positive))}),
    "interval": obj({"L0": req(nonneg), "L0_upper": req(null_or(number)), "mu": req(null_or(number)),
                     "floor": req(nonneg), "radius": req(nonneg), "region": req(null_or(one_of(*REGIONS))),
                     "rho": req(null_or(nonneg)), "horizon": req(null_or(positive))}),
}

TOP = obj({
    "format": req(one_of(FORMAT)), "certify_version": opt(string),
    # optional: certificates written before the published schemas have none
    "schema_version": opt(string),
    "spec": req(obj({"path": req(string), "sha256": req(sha256)})),
    "files": req(list_of(obj({"name": req(string), "sha256": req(sha256)}))),
    "allow_python": req(boolean), "verdict": req(one_of(*VERDICTS)), "sound": req(boolean),
    "failing_kind": req(null_or(string)), "method": req(obj({"name": req(one_of(*NUMBERS))})),
    "numbers": req(anything),            # by method, below
    "rate": req(obj({"parameters": req(_rate_parameters), "formula": req(null_or(string)),
                     "curve": req(list_of(tuple_of(number, number)))})),
    "evidence": req(list_of(_evidence)), "evidence_count": req(count), "evidence_digest": req(string),
    "note": opt(string),
})


def validate(cert: dict) -> None:
    """Raises Malformed (where, what) for the first field that is not as certify writes it."""
    TOP(cert, "")
    NUMBERS[cert["method"]["name"]](cert["numbers"], "numbers")
    if not cert["spec"]["path"]:
        raise Malformed("spec.path", "expected the spec's path, got an empty string")
