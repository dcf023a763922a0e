"""parse -> check -> compile -> analyse -> compose -> report: the whole run of one spec."""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import check as _check_stage
from .analyse.parallel import connect
from .check.torch_model import exit_diagnostic
from .compose.build import build_result
from .diagnostics import SpecError
from .parse import decode, parse
from .progress import BudgetExceeded, NullReporter
from .result import Result


@dataclass
class RunOptions:
    max_params: int = 10**8          # refuse larger problems before allocating (E205)
    max_memory: int | None = None    # bytes by check/memory.py's estimate (E205 beyond); None: its default
    reporter: object = field(default_factory=NullReporter)  # progress on stderr
    device: str = "cpu"
    threads: int | None = None       # torch intra-op threads; None: analyse.threads.choose decides
    deadline: float | None = None    # time.monotonic() value: past it, reporter.advance() raises progress.BudgetExceeded
    allow_python: bool = False       # model torch("pkg.mod:Net") imports Python code only when True (E301)
    workers: int = 1                 # sampled batches and sound boxes in this many local processes (analyse/parallel.py)
    scheduler: str | None = None     # or on a dask.distributed scheduler at this address


def run_text(source: str, path: str = "<string>", options: RunOptions | None = None) -> Result:
    options = options or RunOptions()
    # a named phase, so that a --budget running out in heavy data expressions says where
    # (the check stage's operations are estimated and refused against it: check/costs.py)
    with options.reporter.phase("checking the spec", total=None):
        spec = parse(source, path)
        checked = _check_stage.check(spec, max_params=options.max_params, allow_python=options.allow_python,
                                     max_memory=options.max_memory)
    return certify_checked(checked, options)


def run_file(path: str, options: RunOptions | None = None) -> Result:
    # E003 at the first byte that is not UTF-8 (parse.decode)
    return run_text(decode(Path(path).read_bytes(), path), path, options)


# each engine: (checked spec, options) -> (the problem it compiled, its Evidence), as
# "module:function" under certifier/, imported when a spec names it: a sampled run does not load
# the interval engine's modules (about 67 ms of imports, `python -X importtime`), nor a sound run
# the sampled engine's
ENGINES = {"sampled": "compose.sampled:certify_sampled", "interval": "compose.sound:certify_sound"}
# what a --budget stop suggests, by engine, where the engine gave no hint of its own (the tube does)
BUDGET_HINTS = {"sampled": "raise --budget, lower samples= in the method statement, or shrink the problem",
                "interval": "raise --budget, lower boxes= in the method statement, or shrink the region"}


def certify_checked(checked, options: RunOptions) -> Result:
    """A checked spec's Result, by the engine its method statement names (sampled or interval)."""
    check_device(options.device)
    try:
        return build_result(checked, *engine(checked.method.name)(checked, options))
    except BudgetExceeded as exc:
        if exc.suggestion is None:
            exc.suggestion = BUDGET_HINTS[checked.method.name]
        raise
    except SystemExit as exc:   # a torch model's own sys.exit(): E302, not a silent exit 0
        if getattr(checked, "model_module", None) is None:
            raise
        raise SpecError([exit_diagnostic(checked.spec, exc)]) from None


def engine(name: str):
    """The function of ENGINES[name], its module imported now."""
    module, function = ENGINES[name].split(":")
    return getattr(importlib.import_module(f"{__package__}.{module}"), function)


def check_device(device: str) -> None:
    """A clear error for a device torch cannot use here (the CLI refuses --device cuda earlier)."""
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device '{device}': no CUDA device is available (torch {torch.__version__}; "
                           f"use device='cpu')")


def environment_problem(device: str = "cpu", scheduler: str | None = None) -> str | None:
    """Why --device or --scheduler cannot be used on this machine (a usage error, exit 2), or None.
    The scheduler is reached once here, before any spec runs."""
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            return "--device cuda: no CUDA device is available (use --device cpu)"
    if scheduler:

        try:
            connect(scheduler).close()
        except RuntimeError as exc:
            return str(exc)
    return None
