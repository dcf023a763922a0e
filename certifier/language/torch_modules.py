"""Models written in Python: `model torch("package.module:Name")` (docs/language.md, "Python models").

`Name` is an attribute of the module (dots reach nested attributes): a torch.nn.Module instance,
or a callable (a class, a factory) that returns one when called without arguments. The module
is moved to float64 and evaluation mode; its forward takes the whole batch x (shape [n, ...])
and returns [n] or [n, k] (or [n, 1] for y of shape [n]). Its parameters come from
module.named_parameters(), or from `params from "weights.pt" | "weights.safetensors" |
"weights.npz"` (a state dict, read by check/weights.py and check/files.py: shapes from the headers
first, torch.load(weights_only=True), never arbitrary unpickling).

Importing runs the module's code: the check stage does it only with --allow-python.
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import sys
from pathlib import Path

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


def source_digest(module_name: str) -> str | None:
    """sha256 of an imported module's source file (the file the cache key hashes,
    certifier/cache.py), read right after the import; None when it has none.

    The module itself is imported by Python's import system, not executed from these bytes: the
    import also reads its packages, sibling modules and bytecode caches, which no digest covers,
    so running the one hashed file would promise more than it gives. --allow-python trusts that
    code; what this digest guards is the cache: a source edited during the run (and left edited)
    stores no entry (docs/output.md, "The cache")."""
    module = sys.modules.get(module_name)
    origin = getattr(getattr(module, "__spec__", None), "origin", None) or getattr(module, "__file__", None)
    try:
        if not origin or not Path(origin).is_file():
            return None
        return hashlib.sha256(Path(origin).read_bytes()).hexdigest()
    except OSError:
        return None
