"""`model torch("mod:Net")` is found where a user puts mod.py: beside the spec, or in the working
directory, with no PYTHONPATH set — run as the user runs it, in a fresh `certify` process."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

NET = '''import torch


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))

    def forward(self, x):
        return x @ self.w
'''
SPEC = ('spec "user module"\ndata from "d.npz"\nmodel torch("{module}:Net")\nloss least_squares\n'
        "region ball(center=init, radius=auto)\nmethod sampled(samples=64, seed=0)\n"
        "certify rate(floor=0, horizon=100)\n")


def write_problem(folder: Path, module: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    x = np.random.default_rng(0).standard_normal((8, 2))
    np.savez(folder / "d.npz", x=x, y=x @ np.array([1.0, -0.5]))
    spec = folder / "net.rq"
    spec.write_text(SPEC.format(module=module))
    return spec


def certify(args, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([sys.executable, "-m", "certifier", "--no-cache", "-q", "--allow-python",
                           "--format", "json", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


@pytest.mark.parametrize("where", ["spec-folder", "working-directory"])
def test_module_beside_the_spec_or_in_the_working_directory(tmp_path, where):
    spec = write_problem(tmp_path / "specs", "usernet_" + where.replace("-", "_"))
    home = spec.parent if where == "spec-folder" else tmp_path
    (home / f"usernet_{where.replace('-', '_')}.py").write_text(NET)
    out = certify([str(spec)], cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["verdict"] == "certified"
    # f = x @ w from w = 0: L0 = mean((f - y)^2) = mean(y^2), computed from the data directly
    data = np.load(spec.parent / "d.npz")
    assert result["loss"]["initial"] == pytest.approx(np.mean(data["y"] ** 2), rel=1e-12)


def test_a_missing_module_names_where_it_was_looked_for(tmp_path):
    spec = write_problem(tmp_path, "no_such_usernet")
    out = certify([str(spec)], cwd=tmp_path)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    (diagnostic,) = json.loads(out.stdout)["diagnostics"]
    assert diagnostic["code"] == "E302"
    assert diagnostic["message"].startswith("cannot import 'no_such_usernet': ModuleNotFoundError")
    assert diagnostic["hint"] == ("the module must be importable from the spec's folder, the working directory "
                                  "or PYTHONPATH")
