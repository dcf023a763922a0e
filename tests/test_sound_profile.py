"""Desingularizers other than the loss's natural one in the sound mode: `power(alpha)` for least
squares (and the exponential loss), with c = min over the loss band of phi'(L) G(L) computed in arb,
checked against closed forms (mpmath), the exact linear flow, and the certificate replay
(docs/theory.md 10.10)."""
from __future__ import annotations

import json
import math
import os

import mpmath
import numpy as np
import oracles
import pytest
from helpers import SPECS, spec_text

from certifier import cli
from certifier.certificate import evidence_digest, verify
from certifier.compose.sound import path_bounds, power_constant, rho_upper
from certifier.diagnostics import SpecError
from certifier.language.desingularizers import make
from certifier.language.losses import LOSSES
from certifier.pipeline import run_text

mpmath.mp.dps = 50
LINEAR = "linear_underparameterized_sound.rq"
POWER = {"loss least_squares\n": "loss least_squares\ndesingularizer power(alpha=0.75)\n",
         "halfwidth=2.5": "halfwidth=5"}


@pytest.mark.parametrize("alpha", [0.5 + 1e-9, 0.6, 2 / 3, 0.75, 0.9, 1.0])
@pytest.mark.parametrize("L0", [1e-6, 0.3, 2.4, 1e4])
def test_power_constant_is_the_closed_form_minimum_rounded_down(alpha, L0):
    phi = make("power", alpha=alpha)
    # least squares: phi'(L) 4 L = 4 L^(1 - 2 alpha), decreasing: its minimum is at L0
    c = power_constant(LOSSES["least_squares"], phi, 1e-12, L0)
    exact = 4 * mpmath.mpf(L0) ** (1 - 2 * mpmath.mpf(alpha))
    assert c <= exact and c >= exact * (1 - 1e-15)
    # exponential: phi'(L) L^2 = L^(2 - 2 alpha), increasing for alpha < 1: the minimum is at the floor
    floor = L0 / 10
    c = power_constant(LOSSES["exponential"], phi, floor, L0)
    exact = mpmath.mpf(floor) ** (2 - 2 * mpmath.mpf(alpha))
    assert c <= exact and c >= exact * (1 - 1e-15)
    if alpha < 1:
        assert power_constant(LOSSES["exponential"], phi, 0.0, L0) == 0.0     # no KL constant down to 0


@pytest.mark.parametrize("alpha", [0.55, 2 / 3, 0.75, 0.99])
@pytest.mark.parametrize("low,high", [(0.0, 2.4), (1e-12, 2.4), (0.5, 7.0)])
def test_power_path_integral_encloses_the_closed_form(alpha, low, high):
    lo, hi = path_bounds(make("power", alpha=alpha), low, high)
    a = 1 - mpmath.mpf(alpha)
    exact = (mpmath.mpf(high) ** a - mpmath.mpf(low) ** a) / a
    assert lo <= exact <= hi and hi <= exact * (1 + 1e-15)


@pytest.fixture(scope="module")
def power_result():
    return run_text(spec_text(LINEAR, **POWER), "lin_pow.rq")


def test_power_rate_for_least_squares_is_certified_above_the_exact_flow(power_result):
    r = power_result
    assert r.verdict == "certified" and r.sound
    x, y = oracles.linear_data(noise=False)
    _, lam, *_ = oracles.linear_facts(x, y)
    L0 = float(np.mean(y ** 2))
    assert lam[0] * (1 - 1e-6) <= r.mu <= lam[0]
    K = r.rate["kl_constant"]
    assert K <= 4 * r.mu * L0 ** -0.5 and K >= 4 * lam[0] * (1 - 1e-6) * L0 ** -0.5 * (1 - 1e-9)
    # rho = int_floor^L0 u^-3/4 / sqrt(K) = 4 (L0^1/4 - floor^1/4) / sqrt(K): twice the log rho here
    rho = 4 * (L0 ** 0.25 - 1e-12 ** 0.25) / math.sqrt(K)
    assert rho <= r.region["path_length_bound"] <= rho * (1 + 1e-12) <= 5
    assert r.region["path_length_bound"] > rho_upper(L0, 1e-12, r.mu)
    ts = np.linspace(0, 50, 201)
    flow = oracles.linear_flow_loss(x, y, np.zeros(4), ts)
    for f, t in zip(flow, ts):
        exact_bound = max((L0 ** -0.5 + 0.5 * K * t) ** -2, 1e-12)
        assert f <= exact_bound * (1 + 1e-9)
        assert exact_bound <= r.bound(t) * (1 + 1e-12)
    assert "t^-2" in r.rate["asymptotic"]


def test_power_for_logistic_is_a_diagnostic():
    text = (SPECS / "logistic_nonseparable_sound.rq").read_text().replace(
        "loss logistic", "loss logistic\ndesingularizer power(alpha=0.75)")
    with pytest.raises(SpecError) as info:
        run_text(text)
    assert info.value.diagnostics[0].code == "E111"


def test_power_one_needs_a_floor_for_least_squares():
    text = spec_text(LINEAR, **{"loss least_squares\n": "loss least_squares\ndesingularizer power(alpha=1)\n",
                                "floor=1e-12": "floor=0"})
    with pytest.raises(SpecError) as info:
        run_text(text)
    assert "diverges at 0" in info.value.diagnostics[0].message


@pytest.fixture(scope="module")
def power_cert(tmp_path_factory):
    folder = tmp_path_factory.mktemp("power_cert")
    (folder / "s.rq").write_text(spec_text(LINEAR, **POWER))
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        assert cli.main(["s.rq", "--quiet", "--emit", "s.json", "--no-cache"]) == 0
    finally:
        os.chdir(cwd)
    return folder


def _problems(folder, edit=None, spec=None) -> list[str]:
    cert = json.loads((folder / "s.json").read_text())
    if edit is not None:
        edit(cert)
        cert["evidence_count"] = len(cert["evidence"])
        cert["evidence_digest"] = evidence_digest(cert["evidence"])
    (folder / "t.json").write_text(json.dumps(cert))
    if spec is not None:
        (folder / "s.rq").write_text(spec)
    try:
        report = verify(str(folder / "t.json"))
    finally:
        (folder / "s.rq").write_text(spec_text(LINEAR, **POWER))
    return report.problems if not report.ok else []


def test_power_certificate_is_accepted_and_rejected_when_tampered(power_cert):
    assert verify(str(power_cert / "s.json")).ok

    def formula(c):
        c["rate"]["formula"] = c["rate"]["formula"].replace("^(-0.5)", "^(-0.4)")
    assert any("is not the rebuilt" in p for p in _problems(power_cert, formula))

    def rho(c):
        c["evidence"][0]["rho"] = (float.fromhex(c["evidence"][0]["rho"]) / 2).hex()
    assert any("recomputed with outward rounding" in p for p in _problems(power_cert, rho))
    # the same certificate against the spec with its natural phi (log): the spec no longer matches
    assert _problems(power_cert, spec=spec_text(LINEAR, **{"halfwidth=2.5": "halfwidth=5"}))
