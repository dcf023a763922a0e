"""The options of `certify SPEC...` (its parser) and which specs its arguments name: light to
import (no torch), so that --help, --version and --explain answer at once."""
from __future__ import annotations

import argparse
import glob
import os
import re
import shlex
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


SIZE_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
SIZE_HELP = "a size in bytes, or with K, M, G or T (powers of 1024: KiB, MiB, GiB, TiB), e.g. 8G or 512M"


def memory_size(text: str) -> int:
    """Bytes from '8G', '512M', '1.5GiB', '4096' (K, M, G, T are powers of 1024; config.py's
    max-memory reads the same, tests/test_config.py checks both)."""
    cleaned = str(text).strip().replace(" ", "")
    number = cleaned.rstrip("KkMmGgTtIiBb")
    unit = cleaned[len(number):].upper()
    if unit.endswith("IB"):
        unit = unit[:-2]
    elif unit == "B":
        unit = ""
    try:
        value = float(number) * SIZE_UNITS[unit]
    except (KeyError, ValueError):
        hint = "; MB, GB are ambiguous: write M or MiB" if unit.endswith("B") else ""
        raise argparse.ArgumentTypeError(f"expected {SIZE_HELP}, got {text!r}{hint}") from None
    if not 1 <= value < float(1 << 60):
        raise argparse.ArgumentTypeError(f"expected a positive size, got {text!r}")
    return int(value)


USAGE = """certify [options] SPEC...
       certify check CERT.json [--device cpu|cuda]
       certify study SPEC... --plot FILE
       certify --explain CODE|KIND
       certify --completion bash|zsh|fish"""

DESCRIPTION = """\
Certify a gradient-flow convergence rate L(θt) ≤ φ⁻¹(φ(L0) − K·t)
(least squares: L0·exp(−4μt)) for the model, data, loss and region of .rq
specs, or refute it with a counterexample.

commands:
  certify SPEC...       run the specs (the options below)
  certify check CERT    re-verify a certificate written by --emit, no search
  certify study SPEC... gradient descent beyond the witness: loss curves
                        against the bounds (certify study --help)"""

EPILOG = """\
soundness: the default method, sampled, gives an ESTIMATE (μ found by
searching the region, not a proof). `method interval(boxes=N)` is the sound
mode: μ is proved by interval arithmetic and branch and bound, and a certified
verdict with sound: true is a theorem (docs/sound.md).

output: one spec prints its full report and its verdict again on the last
line; several print the reports of the specs that did not certify and one
line per spec (--report, -q, -v).

configuration: [tool.certify] in pyproject.toml or certify.toml (the nearest
above the working directory) over ~/.config/certify/config.toml; flags
override both (docs/output.md, "Configuration files").

exit codes: 0 certified, 1 refuted, 2 spec or usage error, 3 inconclusive,
4 internal error, 130 interrupted (Ctrl-C), 143 terminated (SIGTERM); with
several specs the worst by 4 > 2 > 1 > 3 > 0; --fail-on refuted counts
inconclusive as 0 (docs/output.md, "Exit codes")."""


def build_parser(formats: tuple[str, ...] = ("text",)) -> argparse.ArgumentParser:
    """The options of `certify SPEC...`; `formats` are the names of --format (the CLI's renderers).
    Defaults that a configuration file may set are applied by the CLI with set_defaults."""
    p = argparse.ArgumentParser(prog="certify", usage=USAGE, description=DESCRIPTION, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    specs = p.add_argument("specs", metavar="SPEC", nargs="*",
                           help="spec files, directories (every *.rq below, sorted), globs, or - (stdin)")
    specs.complete = {"bash": "_shtab_compgen_files", "zsh": "_files", "tcsh": "f"}  # shtab: complete files
    p.add_argument("--format", choices=formats, default="text",
                   help="report format on stdout (default: text)")
    p.add_argument("--report", choices=("full", "failures", "none"), default=None,
                   help="text reports: full for every spec, only for the specs that did not certify, or "
                        "none (one line each); default: full for one spec, failures for several")
    p.add_argument("-o", "--output-file", default=None, metavar="FILE",
                   help="write the report to FILE (replaced atomically at the end) instead of stdout")
    p.add_argument("--color", choices=("auto", "always", "never"), default=None,
                   help="colour in the text report (default auto: on a terminal, unless NO_COLOR is set; "
                        "FORCE_COLOR forces it)")
    p.add_argument("--fail-on", choices=("inconclusive", "refuted"), default="inconclusive",
                   help="inconclusive (default): refuted exits 1 and inconclusive 3; refuted: "
                        "inconclusive results exit 0")
    p.add_argument("--budget", type=positive_float, default=None, metavar="SECONDS",
                   help="time per spec; when it runs out the verdict is inconclusive")
    p.add_argument("--cache", action=argparse.BooleanOptionalAction, default=True,
                   help="read and write the result cache (.certify_cache/); --no-cache: neither")
    p.add_argument("--cache-dir", default=None, metavar="DIR",
                   help="where the cache lives (default: $CERTIFY_CACHE_DIR or ./.certify_cache)")
    p.add_argument("--emit", default=None, metavar="CERT",
                   help="write the certificate of the (single) spec to CERT (JSON); see `certify check`")
    p.add_argument("--allow-python", action="store_true",
                   help="allow model torch(\"package.module:Name\") to import Python code (never from a "
                        "project's configuration file)")
    p.add_argument("--explain", default=None, metavar="ID",
                   help="explain a diagnostic code (E103) or a failing-region kind (critical-point)")
    p.add_argument("--quiet", "-q", action="store_true",
                   help="only the specs that did not certify, one line each; no progress on stderr")
    p.add_argument("--verbose", "-v", action="store_true", help="the full report of every spec")
    p.add_argument("--max-params", type=positive_int, default=None, metavar="N",
                   help="refuse problems with more than N parameters (default: 10^8)")
    p.add_argument("--max-memory", type=memory_size, default=None, metavar="SIZE",
                   help="refuse a run whose memory estimate passes SIZE, e.g. 8G or 512M (powers of 1024; "
                        "default: 8 GiB, or 3/4 of the machine's memory when less); E205")
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
    p.add_argument("--isolated", action="store_true", help="ignore every configuration file")
    p.add_argument("--completion", choices=("bash", "zsh", "fish"), default=None,
                   help="print a shell completion script (e.g. certify --completion bash > "
                        "~/.local/share/bash-completion/completions/certify)")
    p.add_argument("--debug", action="store_true", help="show the traceback of internal errors")
    p.add_argument("--version", action="version", version=f"certify {__version__}")
    return p


SUBCOMMANDS = {"check": "re-verify a certificate written by --emit",
               "study": "gradient descent beyond the witness, loss curves and bounds"}

# bash: the SPEC words complete files, and the first word also the subcommands (shtab completes a
# positional by one function; "_files" in its name makes bash show file names as such)
_BASH_PREAMBLE = """\
# $1: the word being completed: a file, or (as the first word) a subcommand of certify
_shtab_certify_spec_files() {
  if [[ ${COMP_CWORD:-0} -eq 1 ]]; then
    compgen -W "%s" -- "$1"
  fi
  compgen -f -- "$1"
}
"""
# zsh: the same, by _alternative (CURRENT is 2 on the first word after `certify`); after `check`
# or `study` the subcommand's own options (shtab writes their arrays, and its own dispatch is for
# parsers without positionals); the guards keep shtab from adding its default positional specs
_ZSH_PREAMBLE = """\
# the SPEC words complete files, and the first word also the subcommands of certify
_certify_spec_files() {
  if (( CURRENT == 2 )); then
    _alternative 'subcommands:subcommand:((%s))' 'files:spec:_files'
  else
    _files
  fi
}

# certify check ..., certify study ...: the subcommand's options; else certify's
_certify_dispatch() {
  if (( CURRENT > 2 )) && [[ $words[2] == (%s) ]]; then
    local name=$words[2]
    words=("$words[1]" "${(@)words[3,-1]}")
    (( CURRENT-- ))
    _arguments -C -s "${(@P)${:-_shtab_certify_${name}_options}}"
  else
    _shtab_certify "$@"
  fi
}
%s
"""
# shtab's zsh spec of a positional with nargs * or + is "(*)::" / "(*):", one word only: the spec
# files are every remaining word
_ZSH_REST = re.compile(r'^(\s*)"\(\*\)::?', re.MULTILINE)


def completion_script(parser: argparse.ArgumentParser, shell: str,
                      subcommands: dict[str, argparse.ArgumentParser] | None = None) -> str:
    """A completion script generated from `parser` (shtab for bash and zsh; fish by hand from its
    actions, which shtab does not write), with the subcommands check and study as first words;
    `subcommands` (their parsers, by name) give their own options after them in bash and zsh."""
    if shell == "fish":
        return _fish_script(parser)
    import shtab

    for action in parser._actions:
        if action.dest == "specs":
            action.complete = {"bash": "_shtab_certify_spec_files", "zsh": "_certify_spec_files", "tcsh": "f"}
    if subcommands:
        # for the script only (the command dispatches check and study before its parser runs)
        sub = parser.add_subparsers(dest="_subcommand", metavar="COMMAND")
        for name, sub_parser in subcommands.items():
            added = sub.add_parser(name, parents=[sub_parser], add_help=False, help=SUBCOMMANDS.get(name))
            for action in added._actions:
                if not action.option_strings and not action.choices:
                    action.complete = shtab.FILE      # CERT, SPEC: files
    if shell == "bash":
        return shtab.complete(parser, shell=shell, preamble={shell: _BASH_PREAMBLE % " ".join(SUBCOMMANDS)})
    if shell != "zsh":
        return shtab.complete(parser, shell=shell)
    guards = "".join(f"_shtab_certify{'_' + name if name else ''}_defaults_added=1\n"
                     for name in ("", *(subcommands or {})))
    preamble = _ZSH_PREAMBLE % (" ".join(f'{name}\\:"{text}"' for name, text in SUBCOMMANDS.items()),
                                "|".join(subcommands or SUBCOMMANDS), guards)
    script = _ZSH_REST.sub(r'\1"*:', shtab.complete(parser, shell=shell, preamble={shell: preamble}))
    script = script.replace("compdef _shtab_certify -N certify", "compdef _certify_dispatch -N certify")
    return script.replace('\n  _shtab_certify "$@"\n', '\n  _certify_dispatch "$@"\n')


def _fish_script(parser: argparse.ArgumentParser) -> str:
    lines = ["# fish completion for certify, generated from its argument parser",
             "complete -c certify -f -n '__fish_use_subcommand' -a 'check' -d 're-verify a certificate'",
             "complete -c certify -f -n '__fish_use_subcommand' -a 'study' -d 'loss curves and bounds'",
             "complete -c certify -F -a '(__fish_complete_suffix .rq)'"]
    for action in parser._actions:
        if not action.option_strings:
            continue
        parts = ["complete -c certify"]
        for option in action.option_strings:
            parts.append(f"-l {option[2:]}" if option.startswith("--") else f"-s {option[1:]}")
        if action.choices:
            parts.append("-x -a " + shlex.quote(" ".join(map(str, action.choices))))
        elif action.nargs != 0:
            parts.append("-r")
        if action.help and action.help != argparse.SUPPRESS:
            parts.append("-d " + shlex.quote(action.help.split(";")[0].split("(")[0].strip()[:60]))
        lines.append(" ".join(parts))
    return "\n".join(lines) + "\n"


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
