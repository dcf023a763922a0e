"""The single-neuron study (Xu & Du) end to end: the loss-level profile picks the power
desingularizer from the lowest decades, a KL constant that vanishes as L -> 0 never certifies a
linear rate to floor 0, the specs' verdicts (n = 1 linear; n >= 2 a T^-3 rate; log never
certified) and `certify study`. The spec runs are slow (tens of seconds each) except n = 1."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from certifier.analyse.records import Records
from certifier.compose.composition import choose, fit_exponent, kl_constant, loss_profile, vanishing_exponent
from certifier.compose.verdicts import Findings, judge
from certifier.language.desingularizers import LOG
from certifier.language.losses import LEAST_SQUARES
from certifier.pipeline import RunOptions, run_file

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "specs"


def power_law_records(beta_low: float, beta_high: float = None, knee: float = 1e-4,
                      lows: float = -8, highs: float = 0) -> Records:
    """R = L^beta_low below the knee and a continuous L^beta_high above it: a transient on top of
    the asymptotic law (the n = 2 profile: 0.333 below 1e-4, about 0.376 over all bands)."""
    records = Records()
    for L in torch.logspace(lows, highs, 161, dtype=torch.float64).tolist():
        if beta_high is None or L <= knee:
            R = L ** beta_low
        else:
            R = knee ** beta_low * (L / knee) ** beta_high
        records.add("trajectory", 0.1, L, R)
    return records


def test_power_exponent_is_fitted_on_the_lowest_decades():
    records = power_law_records(1 / 3, 0.6)
    full = fit_exponent(loss_profile(records, math.inf, 0.0))
    assert full > 0.375                      # would round to 5/12: a t^-2.4 rate
    comp = choose(LEAST_SQUARES, "auto", {}, records, math.inf, 0.0)
    assert comp.phi.name == "power" and comp.phi.params["alpha"] == pytest.approx(2 / 3)
    assert comp.exponent == pytest.approx(1 / 3, abs=1e-6)
    assert "lowest loss bands" in comp.reason


def test_flat_profile_keeps_the_natural_desingularizer():
    records = power_law_records(0.0, 0.5)      # R constant near the minimum, falling only far away
    comp = choose(LEAST_SQUARES, "auto", {}, records, math.inf, 0.0)
    assert comp.phi.name == "log"


def test_vanishing_kl_constant_gives_zero_with_floor_zero_only():
    records = power_law_records(1 / 3)
    K, arg, _ = kl_constant(records, math.inf, 0.0, LEAST_SQUARES, LOG)
    assert K == pytest.approx(4 * 1e-8 ** (1 / 3))
    K0, arg0, _ = kl_constant(records, math.inf, 0.0, LEAST_SQUARES, LOG, to_zero=True)
    assert K0 == 0.0 and records.loss[arg0] == pytest.approx(1e-8)
    gamma = vanishing_exponent(loss_profile(records, math.inf, 0.0, LEAST_SQUARES, LOG))
    assert gamma == pytest.approx(1 / 3, abs=1e-3)
    # a constant R (the linear rate is real) and a profile over fewer than 4 decades do not vanish
    assert kl_constant(power_law_records(0.0), math.inf, 0.0, LEAST_SQUARES, LOG, to_zero=True)[0] == pytest.approx(4.0)
    short = power_law_records(1 / 3, lows=-3)
    assert kl_constant(short, math.inf, 0.0, LEAST_SQUARES, LOG, to_zero=True)[0] > 0


def test_vanishing_kl_constant_is_inconclusive_with_the_lowest_points():
    records = power_law_records(1 / 3)
    f = Findings(L0=1.0, R0=1.0, lowest_sampled=1e-8, sampled_target=1e-12, K=0.0, K0=4.0, mu=1e-8 ** (1 / 3),
                 rho=math.inf, radius=1.0, found=False, auto=True, floor=0.0, floor_eff=1e-16, history=[],
                 records=records, zero=1e-9, step=None, smoothness=None, claim_span=None, region_span=None,
                 method_span=None, vanishing=1 / 3)
    verdict, failing, _ = judge(f)
    assert verdict == "inconclusive" and failing.kind == "no-kl-constant"
    assert "vanishes as L -> 0" in failing.message and "L^0.333" in failing.message
    assert failing.points[0].loss == pytest.approx(1e-8)        # the failing points approach the optimum


# --- the specs ---------------------------------------------------------------------------------------

EXPECTED = {   # spec -> (verdict, desingularizer, alpha)
    "single_neuron_n1": ("certified", "log", None),
    "single_neuron_n2": ("certified", "power", 2 / 3),
    "single_neuron_n3": ("certified", "power", 2 / 3),
    "single_neuron_n4": ("certified", "power", 2 / 3),
    "single_neuron_n5": ("certified", "power", 2 / 3),
    "single_neuron_n3_log": ("inconclusive", "log", None),
    "single_neuron_symmetric": ("certified", "power", 2 / 3),
}
SLOW = sorted(set(EXPECTED) - {"single_neuron_n1"})


def test_every_single_neuron_spec_has_an_expectation():
    # (the sound-mode ones, method interval, are tests/test_sound_population.py's)
    assert {p.stem for p in SPECS.glob("single_neuron_*.rq") if "method interval" not in p.read_text()} == set(EXPECTED)


def check_expected(name: str):
    r = run_file(str(SPECS / f"{name}.rq"), RunOptions())
    verdict, phi, alpha = EXPECTED[name]
    assert r.verdict == verdict and r.sound is False
    assert r.desingularizer["name"] == phi
    if alpha is not None:
        assert r.desingularizer["params"]["alpha"] == pytest.approx(alpha)
    assert r.problem["population"].startswith("gaussian(d=") and r.problem["samples"] is None
    assert "closed form, not Monte Carlo" in r.rate["convention"]
    if verdict == "certified":
        assert r.witness.violation is None and r.witness.checked_until > 0
    return r


def test_one_student_certifies_a_linear_rate():
    r = check_expected("single_neuron_n1")
    assert r.rate["asymptotic"].endswith("(linear rate)")
    assert 0.25 < r.mu <= 0.5 + 1e-9          # R -> 1/2 at the teacher (Hessian I, L ~ |w - v|^2 / 2)


@pytest.mark.slow
@pytest.mark.parametrize("name", SLOW)
def test_over_parameterized_specs(name):
    r = check_expected(name)
    if name.endswith("_log"):
        # never a linear rate: the KL constant of phi = log vanishes toward the optimum
        assert r.failing_region.kind == "no-kl-constant" and r.rate["formula"] is None
        assert r.failing_region.points[0].loss < 1e-10
        assert 0.28 < r.failing_region.numbers["exponent"] < 0.4
    else:
        assert r.rate["asymptotic"].endswith("L ~ t^-3")
        assert 0.3 < r.rate["profile"]["exponent"] < 0.37       # R ~ L^(1/3): 2 alpha = 1 + beta
        assert r.loss["floor"] == 1e-8


@pytest.mark.slow
@pytest.mark.parametrize("n", [2, 4, 5])
def test_log_is_never_certified_with_two_or_more_students(n):
    """A false linear rate must never be certified: the n >= 2 specs with desingularizer log and
    floor 0 (the n = 3 one is a spec of its own)."""
    from certifier.pipeline import run_text

    text = (SPECS / f"single_neuron_n{n}.rq").read_text()
    text = text.replace("certify rate(floor=1e-8", "desingularizer log\ncertify rate(floor=0")
    r = run_text(text, f"n{n}_log.rq")
    assert r.verdict != "certified" and r.rate["formula"] is None
    assert r.failing_region.kind in ("no-kl-constant", "unsampled-levels")


# --- certify study -----------------------------------------------------------------------------------

def test_study_writes_a_plot_and_a_table(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    from certifier.cli import main

    png, svg = tmp_path / "study.png", tmp_path / "study.svg"
    spec = str(SPECS / "single_neuron_n1.rq")
    assert main(["study", spec, "--plot", str(png), "--steps", "400", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "single_neuron_n1.rq" in out and "certified" in out and "exp(-" in out and "holds to t =" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
    assert main(["study", spec, "--plot", str(svg), "--steps", "400", "--quiet", "--format", "json"]) == 0
    import json

    (item,) = json.loads(capsys.readouterr().out)
    assert item["verdict"] == "certified" and item["descent"]["violation"] is None
    assert item["descent"]["curve"][0] == [0.0, pytest.approx(item["loss"]["initial"])]
    assert svg.read_text().lstrip().startswith("<?xml") and "Over-parameterization" in svg.read_text()
    assert main(["study", spec, "--plot", str(tmp_path / "x.pdf")]) == 2
    assert main(["study", str(tmp_path / "missing.rq"), "--quiet"]) == 2


def test_late_slope():
    from certifier.study import late_slope

    curve = [[t, 0.4 / t ** 3] for t in torch.logspace(0, 3, 50).tolist()]
    assert late_slope(curve, 1e-16) == pytest.approx(-3.0)
    assert late_slope(curve[:3], 1e-16) is None
