"""The evaluate rule table: each primitive of language/primitives.py -> its torch implementation.

One table per analysis (JAX-interpreter style): shapes live in certifier.check.shapes,
interval enclosures in the sound engine. All evaluation is in the dtype of the inputs
(float64 by default). Data blocks evaluate whole arrays; the model evaluates one sample
and is vectorised over the data by torch.func.vmap.
"""
from __future__ import annotations

import math
from typing import Callable

import torch

from .ast import Expr

DTYPE = torch.float64

CONSTANTS = {"pi": math.pi}


def _reduce(fn):
    def rule(x, axis=None):
        return fn(x) if axis is None else fn(x, dim=int(axis))
    return rule


def _softmax(x, axis=-1):
    return torch.softmax(x, dim=int(axis))


def _logsumexp(x, axis=-1):
    return torch.logsumexp(x, dim=int(axis))


# Built-in functions: name -> rule(*tensors, **keyword constants).
FUNCTIONS: dict[str, Callable] = {
    "tanh": torch.tanh,
    "relu": torch.relu,
    "sigmoid": torch.sigmoid,
    "softplus": torch.nn.functional.softplus,
    "exp": torch.exp,
    "log": torch.log,
    "sin": torch.sin,
    "cos": torch.cos,
    "sqrt": torch.sqrt,
    "abs": torch.abs,
    "sum": _reduce(torch.sum),
    "mean": _reduce(torch.mean),
    "softmax": _softmax,
    "logsumexp": _logsumexp,
}

# Binary and unary operators.
OPERATORS: dict[str, Callable] = {
    "add": torch.add,
    "sub": torch.sub,
    "mul": torch.mul,
    "div": torch.div,
    "pow": torch.pow,
    "matmul": torch.matmul,
    "neg": torch.neg,
}



def constant_int(e: Expr) -> int:
    """Value of an integer literal (optionally negated); the checker guarantees the form."""
    if e.op == "neg":
        return -constant_int(e.args[0])
    return int(e.attrs["value"])


def subscript(e: Expr):
    """An index expression's subscript: an int or a slice of constant ints."""
    if e.op == "slice":
        lo, hi = (None if a.op == "none" else constant_int(a) for a in e.args)
        return slice(lo, hi)
    return constant_int(e)


def evaluate(e: Expr, env: dict[str, torch.Tensor]) -> torch.Tensor:
    """Evaluate an expression; names are looked up in env, then CONSTANTS."""
    op = e.op
    if op == "number":
        return torch.tensor(float(e.attrs["value"]), dtype=DTYPE)
    if op == "name":
        name = e.attrs["id"]
        if name in env:
            return env[name]
        return torch.tensor(CONSTANTS[name], dtype=DTYPE)
    if op == "index":
        value = evaluate(e.args[0], env)
        return value[tuple(subscript(s) for s in e.args[1:])]
    if op == "call":
        fn = FUNCTIONS[e.attrs["func"]]
        args = [evaluate(a, env) for a in e.args]
        kwargs = {k: constant_int(v) for k, v in e.kwargs.items()}
        return fn(*args, **kwargs)
    rule = OPERATORS[op]
    return rule(*(evaluate(a, env) for a in e.args))


def is_constant(e: Expr, env_names: set[str] = frozenset()) -> bool:
    """True when the expression uses no names other than CONSTANTS (and env_names)."""
    if e.op == "name":
        return e.attrs["id"] in CONSTANTS or e.attrs["id"] in env_names
    return all(is_constant(a, env_names) for a in e.args) and all(
        is_constant(v, env_names) for v in e.kwargs.values())
