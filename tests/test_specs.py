"""Every example spec end to end through the CLI: verdict, exit code and the JSON fields."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXPECTED = {   # spec -> (verdict, exit code, loss, desingularizer chosen by auto)
    "two_layer_tanh": ("certified", 0, "least_squares", "log"),
    "linear_underparameterized": ("certified", 0, "least_squares", "log"),
    "linear_nonrealizable": ("refuted", 1, "least_squares", "log"),
    "linear_nonrealizable_floor": ("certified", 0, "least_squares", "log"),
    "softmax_separable": ("certified", 0, "cross_entropy", "lambert"),
    "logistic_nonseparable": ("certified", 0, "logistic", "lambert"),
    "two_layer_floor": ("certified", 0, "least_squares", "log"),
    "exponential_separable": ("certified", 0, "exponential", "power"),
}


def run_json(spec: str):
    proc = subprocess.run([sys.executable, "-m", "certifier", str(ROOT / "specs" / f"{spec}.rq"),
                           "--format", "json", "--no-cache"], capture_output=True, text=True, timeout=600)
    return proc.returncode, json.loads(proc.stdout), proc.stderr


@pytest.fixture(scope="module")
def outputs():
    return {name: run_json(name) for name in EXPECTED}


def test_every_sampled_spec_in_specs_has_an_expectation():
    """(the sound-mode specs, `method interval`, are tested in tests/test_sound.py, the single-neuron
    population specs in tests/test_single_neuron.py)"""
    sampled = {p.stem for p in (ROOT / "specs").glob("*.rq") if "method interval" not in p.read_text()
               and not p.stem.startswith("single_neuron_")}
    assert sampled == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_verdict_and_exit_code(outputs, name):
    code, obj, stderr = outputs[name]
    verdict, exit_code, _, _ = EXPECTED[name]
    assert (obj["verdict"], code) == (verdict, exit_code)
    assert "Traceback" not in stderr


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_json_fields(outputs, name):
    _, obj, _ = outputs[name]
    assert obj["sound"] is False and obj["estimate"] is True
    assert obj["method"]["name"] == "sampled"
    _, _, loss, phi = EXPECTED[name]
    assert obj["loss"]["name"] == loss and obj["loss"]["initial"] > 0
    assert obj["desingularizer"]["name"] == phi and obj["desingularizer"]["reason"].startswith("auto")
    assert obj["region"]["kind"] == "ball" and obj["region"]["radius"] > 0
    assert isinstance(obj["diagnostics"], list)
    assert obj["witness"]["curve"][0][0] == 0.0
    assert obj["witness"]["curve"][0][1] == pytest.approx(obj["loss"]["initial"])
    if obj["verdict"] == "certified":
        assert obj["mu"] > 0 and obj["mu_source"] in {"trajectory", "adversarial", "random", "tangent-kernel"}
        assert obj["region"]["path_length_bound"] <= obj["region"]["radius"]
        assert obj["rate"]["formula"].startswith("L(t) <= ")
        assert obj["rate"]["asymptotic"] and obj["rate"]["kl_constant"] > 0
        if phi == "lambert":
            assert "W0(" in obj["rate"]["formula"]
        curve = obj["rate"]["curve"]
        assert curve[0] == [0.0, obj["loss"]["initial"]]
        assert all(b2 <= b1 for (_, b1), (_, b2) in zip(curve, curve[1:]))   # non-increasing
        assert curve[-1][0] == pytest.approx(obj["rate"]["horizon"])
        assert obj["failing_region"] is None
        # the witness lies below the bound at every compared time
        assert obj["witness"]["violation"] is None
    else:
        assert obj["failing_region"]["points"], obj["failing_region"]
        assert obj["failing_region"]["suggestion"]


def test_text_report_labels_the_estimate():
    proc = subprocess.run([sys.executable, "-m", "certifier", str(ROOT / "specs" / "linear_underparameterized.rq")],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0
    verdict_lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("Verdict")]
    assert verdict_lines and all("ESTIMATE (not a proof)" in ln for ln in verdict_lines)
    assert proc.stderr == ""   # no progress bars when stderr is not a terminal, no warnings


def test_python_api_matches_cli(outputs):
    import certifier

    result = certifier.certify(str(ROOT / "specs" / "linear_underparameterized.rq"))
    _, obj, _ = outputs["linear_underparameterized"]
    # same seeds, same numbers: to rounding (a separate process may sum in another order)
    assert result.mu == pytest.approx(obj["mu"], rel=1e-12)
    assert result.bound(0.0) == pytest.approx(obj["loss"]["initial"], rel=1e-12)
    t, b = obj["rate"]["curve"][30]
    assert result.bound(t) == pytest.approx(b, rel=1e-12)
