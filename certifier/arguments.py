"""The options of `certify SPEC...` (its parser) and which specs its arguments name: light to
import (no torch), so that --help, --version and --explain answer at once."""
from __future__ import annotations

import argparse
import glob
import os
import sys
import time
from pathlib import Path

from .version import __version__

EXIT_USAGE = 2
# about the process's start (this module loads before torch): the first spec's --budget counts from here
STARTED = time.monotonic()
def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return value


def build_parser(formats: tuple[str, ...] = ("text",)) -> argparse.ArgumentParser:
    """The options of `certify SPEC...`; `formats` are the names of --format (the CLI's renderers)."""
    p = argparse.ArgumentParser(
        prog="certify",
        description="Certify a gradient-flow convergence rate L(θt) ≤ L0·exp(−4μt) for the model, "
                    "data, loss and region described by .rq specs. `certify check CERT.json` "
                    "re-verifies a certificate written by --emit.",
        epilog="exit codes: 0 certified, 1 refuted, 2 spec or usage error, 3 inconclusive, "
               "4 internal error, 130 interrupted; with several specs, the worst: "
               "4 > 2 > 1 > 3 > 0. In this version μ is a sampled estimate: "
               "results are labelled ESTIMATE (not a proof).",
    )
    p.add_argument("specs", metavar="SPEC", nargs="*",
                   help="spec files, directories (every *.rq below, sorted) or globs")
    p.add_argument("--format", choices=formats, default="text",
                   help="report format on stdout (default: text)")
    p.add_argument("--fail-on", choices=("inconclusive", "refuted"), default="inconclusive",
                   help="inconclusive (default): refuted exits 1 and inconclusive 3; refuted: "
                        "inconclusive results exit 0")
    p.add_argument("--budget", type=positive_float, default=None, metavar="SECONDS",
                   help="time per spec; when it runs out the verdict is inconclusive")
    p.add_argument("--no-cache", action="store_true", help="neither read nor write .certify_cache/")
    p.add_argument("--cache-dir", default=None, metavar="DIR",
                   help="where the cache lives (default: $CERTIFY_CACHE_DIR or ./.certify_cache)")
    p.add_argument("--emit", default=None, metavar="CERT",
                   help="write the certificate of the (single) spec to CERT (JSON); see `certify check`")
    p.add_argument("--allow-python", action="store_true",
                   help="allow model torch(\"package.module:Name\") to import Python code")
    p.add_argument("--explain", default=None, metavar="ID",
                   help="explain a diagnostic code (E103) or a failing-region kind (critical-point)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress display on stderr")
    p.add_argument("--max-params", type=positive_int, default=None, metavar="N",
                   help="refuse problems with more than N parameters (default: 10^8)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                   help="where to evaluate the model (default: cpu)")
    p.add_argument("--threads", type=positive_int, default=None, metavar="N",
                   help="torch intra-op threads (default: 1 for small problems, else the faster of 1 and all, "
                        "measured at the start)")
    p.add_argument("--workers", type=positive_int, default=1, metavar="N",
                   help="evaluate the sampled engine's batches and the sound mode's boxes in N local processes "
                        "(same numbers as one)")
    p.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="evaluate them on a dask.distributed scheduler, e.g. tcp://host:8786 "
                        "(pip install 'dask[distributed]')")
    p.add_argument("--debug", action="store_true", help="show the traceback of internal errors")
    p.add_argument("--version", action="version", version=f"certify {__version__}")
    return p


def err(message: str) -> None:
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


_GLOB = set("*?[")


def _hidden(path: Path, root: Path) -> bool:
    try:
        parts = path.relative_to(root).parts
    except ValueError:
        parts = path.parts
    return any(part.startswith(".") and part not in (".", "..") for part in parts[:-1])


def expand_specs(arguments: list[str]) -> tuple[list[tuple[str, str | None]], bool]:
    """[(path, problem)] in order (problem: why nothing was found for an argument), and whether
    the command names several specs (a directory, a glob or more than one argument): then json
    prints an array and text a summary table."""
    out: list[tuple[str, str | None]] = []
    seen: set[str] = set()
    multi = len(arguments) > 1

    def add(path: str) -> None:
        key = os.path.normcase(os.path.abspath(path))
        if key not in seen:
            seen.add(key)
            out.append((path, None))

    for arg in arguments:
        if os.path.isdir(arg):
            multi = True
            root = Path(arg)
            found = sorted(str(p) for p in root.rglob("*.rq") if p.is_file() and not _hidden(p, root))
            if not found:
                out.append((arg, f"no .rq spec under '{arg}'"))
            for path in found:
                add(path)
        elif _GLOB & set(arg) and not os.path.exists(arg):
            multi = True
            found = sorted(p for p in glob.glob(arg, recursive=True) if os.path.isfile(p))
            if not found:
                out.append((arg, f"no spec matches '{arg}'"))
            for path in found:
                add(path)
        else:
            add(arg)
    return out, multi
