"""One spec's failure never stops the others (issue 20), and user code that calls sys.exit() is a
diagnostic wherever it runs: in `--workers` processes, in `certify study`, in `certify check`.
SIGTERM and Ctrl-C print the partial report and exit 143 and 130, and the report says so."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from certifier import cli, runs

ROOT = Path(__file__).resolve().parent.parent


def _env(**extra) -> dict:
    """The environment now (conftest's private cache key and folder included), certifier importable."""
    return {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""), **extra}


TINY = """\
spec "tiny {name}"
data from "d.npz"
{model}
loss least_squares
region ball(center=init, radius=auto)
method sampled(samples=64, seed=0)
certify rate(floor=0, horizon=100)
"""
LINEAR = "params { w : [2] = zeros() }\nmodel f(x) = w @ x"

# A torch model that calls sys.exit(0) where the environment says: in worker processes only, in
# its forward pass after ISOLATION_EXIT_AFTER calls of one instance, or never.
NET = '''\
import multiprocessing
import os
import pathlib
import sys
import time

import torch


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(2, 1, bias=False)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        pathlib.Path(__file__).with_name("started.marker").touch()
        if os.environ.get("ISOLATION_EXIT_IN_WORKERS") and multiprocessing.current_process().name != "MainProcess":
            sys.exit(0)
        after = os.environ.get("ISOLATION_EXIT_AFTER")
        if after is not None and self.calls > int(after):
            sys.exit(0)
        time.sleep(float(os.environ.get("ISOLATION_SLEEP", "0")))   # a run that lasts (SIGTERM)
        return self.fc(x)
'''


def _folder(folder: Path, module: str) -> Path:
    (folder / f"{module}.py").write_text(NET)
    x = np.random.default_rng(0).standard_normal((8, 2))
    np.savez(folder / "d.npz", x=x, y=x @ np.array([1.0, -0.5]))
    spec = folder / "net.rq"
    spec.write_text(TINY.format(name="net", model=f'model torch("{module}:Net")'))
    return spec


def _certify(args: list[str], cwd: Path, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "certifier", *args], capture_output=True, text=True, cwd=cwd,
                          env=_env(**env), timeout=300)


# --- SIGTERM and Ctrl-C: the partial report, with the code the process exits with ----------------------

@pytest.mark.parametrize("sig, code, fmt", [(signal.SIGTERM, 143, "json"), (signal.SIGINT, 130, "text")])
def test_a_signal_prints_the_partial_report_and_its_exit_code(tmp_path, sig, code, fmt):
    spec = _folder(tmp_path, "isolation_slow_net")
    proc = subprocess.Popen([sys.executable, "-m", "certifier", str(spec), "--allow-python", "--no-cache",
                             "--format", fmt], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=tmp_path, env=_env(ISOLATION_SLEEP="0.05"))
    marker = tmp_path / "started.marker"
    deadline = time.monotonic() + 120
    while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)        # until the model has run once: torch is imported, the run has begun
    time.sleep(1.0)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err[-2000:]
    assert "certify: interrupted" in err and "Traceback" not in err
    if fmt == "json":
        result = json.loads(out)
        f = result["failing_region"]
        assert result["verdict"] == "inconclusive" and f["kind"] == "interrupted"
        assert f["numbers"]["exit_code"] == code and f["message"].startswith("interrupted during '")
    else:     # the report prints the code the process exits with, not inconclusive's 3
        assert f"Verdict  inconclusive · ESTIMATE (not a proof) · exit {code}\n" in out, out
        assert "Failure: interrupted" in out and "exit 3" not in out


# --- sys.exit() in user code, wherever it runs ----------------------------------------------------------

def test_sys_exit_in_worker_processes_is_E302(tmp_path):
    spec = _folder(tmp_path, "isolation_worker_net")
    proc = _certify([str(spec), "--allow-python", "--no-cache", "-q", "--workers", "2"], tmp_path,
                    ISOLATION_EXIT_IN_WORKERS="1", CERTIFY_WORKERS="always")   # used, however small
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "net.rq:3:13: error[E302]: 'isolation_worker_net:Net' called sys.exit(0) during the analysis\n" \
        in proc.stderr
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr


def test_sys_exit_in_study_descent_is_E302(tmp_path, monkeypatch, capsys):
    """The analysis comes from the cache (run first without the exit); study's own descent then
    builds the model again, and its forward pass exits."""
    spec = _folder(tmp_path, "isolation_study_net")
    monkeypatch.chdir(tmp_path)
    cache = str(tmp_path / "cache")
    assert _certify([str(spec), "--allow-python", "-q", "--cache-dir", cache], tmp_path).returncode == 0
    monkeypatch.setenv("ISOLATION_EXIT_AFTER", "0")
    monkeypatch.delitem(sys.modules, "isolation_study_net", raising=False)
    code = cli.main(["study", str(spec), "--allow-python", "-q", "--cache-dir", cache])
    out, err = capsys.readouterr()
    sys.modules.pop("isolation_study_net", None)
    assert code == 2, err
    assert "error[E302]: " in err and "called sys.exit(0)" in err and "Traceback" not in err
    assert "net.rq  certified" in out and "spec error" in out   # the table: the run's verdict, the descent's error


@pytest.fixture
def certificate(tmp_path):
    """A certificate of the torch spec (written in its own process, no exit), in the working folder."""
    spec = _folder(tmp_path, "isolation_check_net")
    done = _certify([spec.name, "--allow-python", "--no-cache", "-q", "--emit", "cert.json"], tmp_path)
    assert (tmp_path / "cert.json").exists(), done.stderr
    return tmp_path / "cert.json"


@pytest.mark.parametrize("after, stage", [("0", "check"), ("1", "replay")])
def test_sys_exit_in_certify_check_is_E302(certificate, monkeypatch, capsys, after, stage):
    """0: the check stage's forward pass exits (E302 from the check); 1: a later forward pass,
    while the evidence is replayed (a bare SystemExit reaches the command)."""
    monkeypatch.chdir(certificate.parent)
    monkeypatch.setenv("ISOLATION_EXIT_AFTER", after)
    monkeypatch.delitem(sys.modules, "isolation_check_net", raising=False)
    code = cli.main(["check", str(certificate), "--allow-python"])
    out, err = capsys.readouterr()
    sys.modules.pop("isolation_check_net", None)
    assert code == 2, out + err
    assert out == "" and "error[E302]: " in err and "sys.exit(0)" in err and "Traceback" not in err


# --- one spec's internal error: the others, the summary and the machine formats go on ------------------

@pytest.fixture
def three(tmp_path, monkeypatch):
    """a.rq and c.rq certified, b.rq broken by an internal error in the cache key's computation."""
    x = np.random.default_rng(0).standard_normal((8, 2))
    np.savez(tmp_path / "d.npz", x=x, y=x @ np.array([1.0, -0.5]))
    for name in "abc":
        (tmp_path / f"{name}.rq").write_text(TINY.format(name=name, model=LINEAR))
    real = runs.key_material

    def key_material(path, source, options):
        if path.endswith("b.rq"):
            raise RuntimeError("boom in the cache key")
        return real(path, source, options)

    monkeypatch.setattr(runs, "key_material", key_material)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_an_internal_error_in_one_spec_leaves_the_others(three, capsys):
    specs = ["a.rq", "b.rq", "c.rq"]
    code = cli.main([*specs, "--cache-dir", "cache", "--format", "json"])
    out, err = capsys.readouterr()
    assert code == 4, err                     # the worst: 4 > 2 > 1 > 3 > 0
    data = json.loads(out)
    assert [d["spec"] for d in data] == specs
    assert [d["verdict"] for d in data] == ["certified", "error", "certified"]
    assert "certify: internal error: RuntimeError: boom in the cache key\n" in err and "Traceback" not in err

    code = cli.main([*specs, "--cache-dir", "cache", "--format", "sarif"])   # a and c from the cache now
    out, err = capsys.readouterr()
    assert code == 4
    log = json.loads(out)
    uris = {loc["physicalLocation"]["artifactLocation"]["uri"]
            for r in log["runs"][0]["results"] for loc in r.get("locations", [])}
    assert "b.rq" in uris and "boom in the cache key" in out

    code = cli.main([*specs, "--cache-dir", "cache"])                     # text: the summary at the end
    out, err = capsys.readouterr()
    assert code == 4
    assert out.count("certified") >= 2 and "exit 4" in out


def test_a_sys_exit_outside_user_code_is_an_internal_error(three, monkeypatch, capsys):
    """SystemExit where no torch model ran is certify's bug: exit 4 and a one-line message, never 0."""
    real = runs.pipeline.run_file

    def run_file(path, options=None):
        if path.endswith("a.rq"):
            raise SystemExit(0)
        return real(path, options)

    monkeypatch.setattr(runs.pipeline, "run_file", run_file)
    code = cli.main(["a.rq", "c.rq", "--no-cache", "--format", "json"])
    out, err = capsys.readouterr()
    assert code == 4
    assert [d["verdict"] for d in json.loads(out)] == ["error", "certified"]
    assert "certify: internal error: SystemExit: exit(0) called during the run\n" in err
    assert "please report this" in err
