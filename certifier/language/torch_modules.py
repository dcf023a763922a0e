"""Models written in Python: `model torch("package.module:Name")` (docs/language.md, "Python models").

`Name` is an attribute of the module (dots reach nested attributes): a torch.nn.Module instance,
or a callable (a class, a factory) that returns one when called without arguments. The module
is moved to float64 and evaluation mode; its forward takes the whole batch x (shape [n, ...])
and returns [n] or [n, k] (or [n, 1] for y of shape [n]). Its parameters come from
module.named_parameters(), or from `params from "weights.pt" | "weights.safetensors" |
"weights.npz"` (a state dict; torch.load(weights_only=True), never arbitrary unpickling).

Importing runs the module's code: the check stage does it only with --allow-python.
"""
from __future__ import annotations

import contextlib
import importlib
import importlib.util
import sys
from pathlib import Path

import numpy as np
import torch

WEIGHT_SUFFIXES = (".pt", ".pth", ".safetensors", ".npz")


class ModelProblem(Exception):
    def __init__(self, code: str, message: str, hint: str | None = None):
        super().__init__(message)
        self.code, self.message, self.hint = code, message, hint


EXIT_HINT = ("certify imports the module and calls it: it must not call sys.exit() or exit(); keep "
             "script code under `if __name__ == \"__main__\":`")


def exit_message(what: str, exc: SystemExit, when: str = "") -> str:
    """`importing 'mod' called sys.exit(0)`."""
    code = "" if exc.code is None else repr(exc.code)
    return f"{what} called sys.exit({code[:40]}){when}"


@contextlib.contextmanager
def no_exit(what: str):
    """The module's sys.exit() (a SystemExit, which `except Exception` lets through) becomes E302."""
    try:
        yield
    except SystemExit as exc:
        raise ModelProblem("E302", exit_message(what, exc), EXIT_HINT) from None


def split_target(target: str) -> tuple[str, str]:
    module, sep, attr = target.partition(":")
    names = module.split(".") + attr.split(".")
    if not sep or not module or not attr or not all(n.isidentifier() for n in names):
        raise ModelProblem("E302", f"'{target}' is not a \"package.module:Name\" target",
                           'write model torch("package.module:Name"), e.g. model torch("mypkg.nets:Net")')
    return module, attr


@contextlib.contextmanager
def import_path(spec_dir: Path | str | None):
    """Modules are found in the spec's folder, then the working directory, then sys.path (as
    `python -m` and pytest users expect); sys.path is restored afterwards."""
    extra = [str(Path(d).resolve()) for d in (spec_dir, Path.cwd()) if d is not None]
    extra = [d for i, d in enumerate(extra) if d not in extra[:i]]
    old = list(sys.path)
    sys.path[:0] = extra
    importlib.invalidate_caches()   # a module written since the last import is found
    try:
        yield
    finally:
        sys.path[:] = old


def module_file(target: str, spec_dir: Path | str | None = None) -> str | None:
    """The source file of the target's module (for the cache key); None when unknown. May import
    the parent packages (only called when Python code is allowed)."""
    try:
        with import_path(spec_dir):
            spec = importlib.util.find_spec(split_target(target)[0])
    except (ImportError, ValueError, ModelProblem, SystemExit):   # build_module reports it
        return None
    origin = getattr(spec, "origin", None) if spec is not None else None
    return origin if origin and Path(origin).is_file() else None


def build_module(target: str, spec_dir: Path | str | None = None) -> torch.nn.Module:
    """The target's module, imported from the spec's folder, the working directory or sys.path."""
    module_name, attr = split_target(target)
    try:
        with import_path(spec_dir), no_exit(f"importing '{module_name}'"):
            module = importlib.import_module(module_name)
    except ModelProblem:
        raise
    except Exception as exc:
        raise ModelProblem("E302", f"cannot import '{module_name}': {type(exc).__name__}: {exc}",
                           "the module must be importable from the spec's folder, the working directory or "
                           "PYTHONPATH") from None
    with no_exit(f"building '{target}'"):
        return _build(module, module_name, attr, target)


def _build(module, module_name: str, attr: str, target: str) -> torch.nn.Module:
    obj = module
    for name in attr.split("."):
        if not hasattr(obj, name):
            raise ModelProblem("E302", f"'{module_name}' has no attribute '{attr}'",
                               f"check the name after ':' in \"{target}\"")
        obj = getattr(obj, name)
    if not isinstance(obj, torch.nn.Module):
        if not callable(obj):
            raise ModelProblem("E302", f"'{target}' is neither a torch.nn.Module nor callable",
                               "name an nn.Module class, a factory function or a module instance")
        try:
            obj = obj()
        except Exception as exc:
            raise ModelProblem("E302", f"calling '{target}' raised {type(exc).__name__}: {exc}",
                               "the class or factory must build the module without arguments") from None
    if not isinstance(obj, torch.nn.Module):
        raise ModelProblem("E302", f"'{target}' gave a {type(obj).__name__}, not a torch.nn.Module",
                           "return an nn.Module")
    return obj.double().eval()


def load_weights(path: Path, name: str) -> dict[str, np.ndarray]:
    """A state dict from .pt/.pth (torch.load with weights_only=True), .safetensors or .npz,
    as float64 arrays. Never unpickles arbitrary objects."""
    suffix = path.suffix.lower()
    try:
        if suffix in (".pt", ".pth"):
            state = torch.load(path, map_location="cpu", weights_only=True)
            if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
                state = state["state_dict"]
        elif suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        elif suffix == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                state = {k: archive[k] for k in archive.files}
        else:
            raise ModelProblem("E303", f"'{name}' is not a weights file certify reads",
                               "save the state dict as .pt (torch.save), .safetensors or .npz")
    except ModelProblem:
        raise
    except Exception as exc:
        raise ModelProblem("E202", f"cannot read '{name}': {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
                           "save module.state_dict() with torch.save or safetensors (plain tensors only; "
                           "certify never unpickles objects)") from None
    if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
        raise ModelProblem("E202", f"'{name}' does not hold a dictionary of named tensors",
                           "save module.state_dict()")
    out = {}
    for key, value in state.items():
        if isinstance(value, torch.Tensor):
            value = value.detach().cpu().to(torch.float64).numpy() if value.is_floating_point() or \
                value.dtype in (torch.int64, torch.int32, torch.bool) else None
        elif isinstance(value, np.ndarray) and value.dtype.kind in "biuf":
            value = value.astype(np.float64)
        else:
            value = None
        if value is None:
            raise ModelProblem("E202", f"the entry '{key}' of '{name}' is not a numeric tensor",
                               "save module.state_dict()")
        out[key] = np.array(value, dtype=np.float64)
    return out
