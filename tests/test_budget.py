"""--budget bounds the wall time a user sees (start-up included), also inside long computations
that report no progress; SIGTERM is handled as Ctrl-C. Run as the user runs certify: a process."""
from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time

import pytest

from certifier.progress import BudgetExceeded, DeadlineReporter, alarm

# the README's benchmark size: one descent step takes tens of milliseconds, the run many minutes
BIG = """spec "width 1024, d = 32, n = 256"
data {
  x = normal(shape=[256, 32], seed=0)
  y = sin(x[:, 0]) + 0.5 * x[:, 1]
}
params {
  W : [1024, 32] = normal(std=1/sqrt(32), seed=1)
  a : [1024]     = normal(std=1/sqrt(1024), seed=2)
}
model f(x) = sum(a * tanh(W @ x))
loss least_squares
region ball(center=init, radius=auto)
method sampled(samples=4096, seed=3)
certify rate(floor=0, horizon=1e4)
"""
CERTIFY = [sys.executable, "-m", "certifier", "--no-cache", "-q", "--format", "json"]


@pytest.fixture
def big(tmp_path):
    path = tmp_path / "big.rq"
    path.write_text(BIG)
    return path


def test_alarm_stops_a_computation_that_never_reports_progress():
    reporter = DeadlineReporter(None, None)
    t0 = time.monotonic()
    with pytest.raises(BudgetExceeded):
        with alarm(reporter, t0 + 0.2, 0.2):
            while True:       # no advance() call: only the alarm can end it
                pass
    assert 0.19 <= time.monotonic() - t0 < 1.0
    with alarm(reporter, time.monotonic() + 0.05, 0.05):
        pass                  # finished in time: the alarm is cancelled on exit
    time.sleep(0.1)


def test_budget_ends_within_ten_percent_or_two_seconds(big, tmp_path):
    budget = 4.0
    t0 = time.monotonic()
    out = subprocess.run([*CERTIFY, "--budget", str(budget), str(big)], capture_output=True, text=True,
                         cwd=tmp_path, timeout=120)
    wall = time.monotonic() - t0
    assert out.returncode == 3
    result = json.loads(out.stdout)
    assert result["verdict"] == "inconclusive" and result["failing_region"]["kind"] == "budget"
    message = result["failing_region"]["message"]
    # where it stopped depends on the machine's speed; it is always named
    assert re.fullmatch(r"the budget of 4 s ran out (during '.+'|after '.+'|"
                        r"while reading, checking and compiling the spec)", message), message
    assert wall <= budget + max(0.1 * budget, 2.0), wall


def test_sigterm_is_handled_as_ctrl_c(big, tmp_path):
    proc = subprocess.Popen([*CERTIFY, str(big)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=tmp_path)
    time.sleep(6.0)   # past start-up (torch's import), into the descent from theta0
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert "certify: interrupted" in err and "Traceback" not in err
    result = json.loads(out)
    assert result["verdict"] == "inconclusive" and result["failing_region"]["kind"] == "interrupted"
