"""Array generators usable in data and params blocks: normal, uniform, zeros, ones.

Random generators use numpy's PCG64 (`numpy.random.default_rng(seed)`), so a spec gives the
same arrays on every machine. A parameter whose generator names no seed gets the seed
crc32(name) so that two parameters never share a stream by accident.
"""
from __future__ import annotations

import zlib

import numpy as np

# name -> allowed keywords (all optional; `shape` is required in data blocks and taken from the
# declaration in params blocks).
GENERATORS: dict[str, tuple[str, ...]] = {
    "normal": ("shape", "mean", "std", "seed"),
    "uniform": ("shape", "low", "high", "seed"),
    "zeros": ("shape",),
    "ones": ("shape",),
}


def default_seed(name: str) -> int:
    return zlib.crc32(name.encode())


def generate(kind: str, shape: tuple[int, ...], options: dict[str, float], name: str = "") -> np.ndarray:
    seed = int(options["seed"]) if "seed" in options else default_seed(name)
    if kind == "normal":
        rng = np.random.default_rng(seed)
        return options.get("mean", 0.0) + options.get("std", 1.0) * rng.standard_normal(shape)
    if kind == "uniform":
        rng = np.random.default_rng(seed)
        return rng.uniform(options.get("low", 0.0), options.get("high", 1.0), size=shape)
    if kind == "zeros":
        return np.zeros(shape)
    if kind == "ones":
        return np.ones(shape)
    raise KeyError(kind)
