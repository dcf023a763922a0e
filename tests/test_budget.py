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
    assert re.fullmatch(r"the budget of 4 s ran out (during '[^']+'(: .+)?|after '.+'|"
                        r"while reading, checking and compiling the spec)", message), message
    assert wall <= budget + max(0.1 * budget, 2.0), wall


def test_sigterm_is_handled_as_ctrl_c(big, tmp_path):
    proc = subprocess.Popen([*CERTIFY, str(big)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=tmp_path)
    time.sleep(6.0)   # past start-up (torch's import), into the descent from theta0
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 143         # 128 + SIGTERM, as a shell reports a process it killed
    assert "certify: interrupted" in err and "Traceback" not in err
    result = json.loads(out)
    assert result["verdict"] == "inconclusive" and result["failing_region"]["kind"] == "interrupted"
    assert result["failing_region"]["numbers"]["exit_code"] == 143


# --- the check stage: heavy data expressions are estimated and refused (check/costs.py) ------------------

# 50 products of 4000 x 4000 matrices: about 1.3 s each on the 2-core development machine unloaded,
# over a minute in all without a budget (each one torch call that SIGALRM cannot interrupt)
HEAVY = """spec "heavy data"
data {
  x = normal(shape=[4000, 4000], seed=0)
  y = sum(""" + " @ ".join(["x"] * 50) + """, axis=1)
}
params {
  w : [4000] = normal(seed=1)
}
model f(x) = w @ x
loss least_squares
method sampled(samples=64, seed=3)
"""


def test_budget_bounds_heavy_data_expressions(tmp_path):
    path = tmp_path / "heavy.rq"
    path.write_text(HEAVY)
    budget = 3.0
    # what the machine spends anyway: start-up (torch's import) and teardown, the budget spent at once
    t0 = time.monotonic()
    subprocess.run([*CERTIFY, "--budget", "0.001", str(path)], capture_output=True, cwd=tmp_path, timeout=300)
    baseline = time.monotonic() - t0
    t0 = time.monotonic()
    out = subprocess.run([*CERTIFY, "--budget", str(budget), str(path)], capture_output=True, text=True,
                         cwd=tmp_path, timeout=300)
    wall = time.monotonic() - t0
    assert out.returncode == 3, out.stderr[-2000:]
    f = json.loads(out.stdout)["failing_region"]
    assert f["kind"] == "budget"
    # on a loaded machine the start-up (torch's import) alone may spend the budget
    assert re.fullmatch(r"the budget of 3 s ran out (during 'checking the spec'(: computing '[xy]': .+)?|"
                        r"while reading, checking and compiling the spec)", f["message"]), f["message"]
    # stopped before any engine ran: no engine's knob is suggested
    assert f["suggestion"] == "raise --budget, or shrink the problem (its data and parameters)"
    # the unbounded run takes over a minute; 2-core CI machines start torch in 1.5 to 5 s
    assert wall < max(budget, baseline) + 3.0, (wall, baseline)


def _check_with_deadline(text: str, seconds: float):
    from certifier.check import check
    from certifier.parse import parse
    from certifier.progress import active

    reporter = DeadlineReporter(None, time.monotonic() + seconds, seconds)
    with active(reporter), reporter.phase("checking the spec"):
        return check(parse(text, "s.rq"))


def test_an_operation_that_cannot_finish_is_not_started(monkeypatch):
    from certifier.check import costs

    monkeypatch.setitem(costs._measured, "matmul", 1e9)     # 1 Gflop/s: the product would take 108 s
    t0 = time.monotonic()
    with pytest.raises(BudgetExceeded) as info:
        _check_with_deadline(HEAVY.replace("4000", "3000"), 30.0)
    assert time.monotonic() - t0 < 10.0    # drawing x (9e6 entries) only; no product ran
    assert info.value.phase == "checking the spec"
    assert re.fullmatch(r"computing 'y': the product \[3000, 3000\] @ \[3000, 3000\] \(5\.4e\+10 flop\) would take "
                        r"about 54 s, [0-9.]+ s were left", info.value.detail), info.value.detail


def test_the_budgeted_check_computes_the_same_data():
    """Evaluated one operation at a time under a deadline, or in one call without: the same bits."""
    from certifier.check import check
    from certifier.parse import parse

    text = """data {
  x = normal(shape=[64, 8], seed=0)
  v = uniform(shape=[8], low=-1, high=1, seed=2)
  y = tanh(x @ v) + 2 * x[:, 0] ** 2 - sum(x * v, axis=1) / 3 + mean(softmax(x, axis=1) @ [1, 2, 3, 4, 5, 6, 7, 8])
}
params { w : [8] = normal(std=0.1, seed=1) }
model f(x) = w @ x
loss least_squares
"""
    plain = check(parse(text, "s.rq"))
    budgeted = _check_with_deadline(text, 3600.0)
    for a, b in ((plain.x, budgeted.x), (plain.y, budgeted.y), (plain.params["w"], budgeted.params["w"])):
        assert a.tobytes() == b.tobytes()


@pytest.mark.parametrize("spec, hint", [("specs/linear_underparameterized.rq", "lower samples="),
                                        ("specs/linear_underparameterized_sound.rq", "lower boxes=")])
def test_a_budget_stop_suggests_the_engines_own_knob(spec, hint):
    """A sampled run is made cheaper by samples=, a sound one by boxes= (never the other's knob)."""
    from pathlib import Path

    from certifier.check import check
    from certifier.parse import parse
    from certifier.pipeline import RunOptions, certify_checked

    path = Path(__file__).resolve().parent.parent / spec
    checked = check(parse(path.read_text(), str(path)))
    past = time.monotonic() - 1.0        # the first progress step raises
    with pytest.raises(BudgetExceeded) as info:
        certify_checked(checked, RunOptions(reporter=DeadlineReporter(None, past), deadline=past))
    assert hint in info.value.suggestion and info.value.suggestion.startswith("raise --budget")
