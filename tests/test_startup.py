"""A cache hit is answered without importing torch (nor numpy, for a report that never evaluates
the bound): the process that prints it is checked with `python -X importtime`, which lists every
module it imports. The timing itself is in docs/performance.md ("A cache hit")."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from test_cache_cert import SPEC  # the tiny spec of the cache tests

from certifier import cache as cache_module
from certifier import cli
from certifier.cache import key_material, key_of

OPTIONS = {"device": "cpu", "threads": None, "max_params": None, "max_memory": None, "allow_python": False,
           "spec_path": "tiny.rq"}


@pytest.fixture
def cached(tmp_path, monkeypatch):
    """tiny.rq run once, in this process, so that its result is in the cache."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny.rq").write_text(SPEC)
    x = np.random.default_rng(0).standard_normal((8, 2))
    np.savez(tmp_path / "d.npz", x=x, y=x @ np.array([1.0, -0.5]))
    assert cli.main(["tiny.rq", "-q"]) == 0
    assert len(list(Path(os.environ["CERTIFY_CACHE_DIR"]).glob("*/*.json"))) == 1
    return tmp_path


def imports_of(folder: Path, *argv: str) -> tuple[subprocess.CompletedProcess, set[str]]:
    """`certify ARGV` in a fresh interpreter under -X importtime: the process and the top-level
    packages it imported."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "certifier", *argv], cwd=folder,
                          capture_output=True, text=True, timeout=120, env=dict(os.environ))
    modules = {line.rsplit("|", 1)[1].strip().split(".")[0]
               for line in proc.stderr.splitlines() if line.startswith("import time:") and "|" in line}
    return proc, modules


def test_a_cache_hit_imports_neither_torch_nor_numpy(cached):
    proc, modules = imports_of(cached, "tiny.rq", "-v")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "read from the cache" in proc.stdout and "certified" in proc.stdout
    assert "certifier" in modules and "torch" not in modules          # the full report, bound(t) included
    proc, modules = imports_of(cached, "tiny.rq", "-q")
    assert proc.returncode == 0 and proc.stdout == ""
    assert not {"torch", "numpy", "scipy"} & modules
    proc, modules = imports_of(cached, "tiny.rq", "--format", "json")
    result = json.loads(proc.stdout)
    assert result["verdict"] == "certified" and result["notes"][-1].startswith("read from the cache")
    assert not {"torch", "numpy", "scipy"} & modules


def test_a_miss_still_runs_the_pipeline(cached):
    proc, modules = imports_of(cached, "tiny.rq", "-q", "--no-cache")
    assert proc.returncode == 0 and "torch" in modules


def test_the_key_holds_the_installed_torch_and_numpy(cached, monkeypatch):
    material = key_material("tiny.rq", SPEC, OPTIONS)
    assert material["torch"] == torch.__version__ and material["numpy"] == np.__version__
    key = key_of(material)
    real = cache_module.installed_version
    for package in ("torch", "numpy"):
        monkeypatch.setattr(cache_module, "installed_version",
                            lambda name, package=package: "0.0.1" if name == package else real(name))
        assert key_of(key_material("tiny.rq", SPEC, OPTIONS)) != key
    monkeypatch.setattr(cache_module, "installed_version", real)
    assert key_of(key_material("tiny.rq", SPEC, OPTIONS)) == key


def test_the_cache_resolves_paths_as_the_check_stage_does(tmp_path, monkeypatch):
    from certifier.check.files import base_dir

    monkeypatch.chdir(tmp_path)
    for path in ("<string>", "<stdin>", "", "tiny.rq", "specs/a/b.rq", str(tmp_path / "x.rq")):
        assert cache_module.base_dir(path) == base_dir(path)


def test_a_stored_rate_is_checked_against_the_fields_of_rate():
    import dataclasses

    from certifier.compose.rate import Rate
    from certifier.report.load import RATE_FIELDS, RATE_REQUIRED, LoadedBound

    fields = dataclasses.fields(Rate)
    assert RATE_FIELDS == tuple(f.name for f in fields)
    assert RATE_REQUIRED == tuple(f.name for f in fields if f.default is dataclasses.MISSING)
    phi = {"desingularizer": {"name": "log", "params": {}}}
    bound = LoadedBound({"kind": "rate", "fields": {"phi": phi, "K": 2.0, "initial": 3.0, "floor": 0.0}})
    assert bound(0.5) == pytest.approx(3.0 * np.exp(-1.0), rel=1e-15)    # log: L0 exp(-K t)
    with pytest.raises(ValueError):
        LoadedBound({"kind": "rate", "fields": {"phi": phi, "K": 2.0, "initial": 3.0, "floor": 0.0, "rho": 1}})
