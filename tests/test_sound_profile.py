"""Desingularizers other than the loss's natural one in the sound mode: `power(alpha)` for least
squares (and the exponential loss), with c = min over the loss band of phi'(L) G(L) computed in arb,
checked against closed forms (mpmath), the exact linear flow, and the certificate replay
(docs/theory.md 10.10); and the proved loss-level profile (10.11) against closed-form band infima, the
exact flow, solve_ivp and an mpmath piecewise oracle."""
from __future__ import annotations

import json
import math

import mpmath
import numpy as np
import oracles
import pytest
from helpers import SPECS, emit_certificate, reforged, spec_text

from certifier.certificate import evidence_digest, verify
from certifier.compose.sound import path_bounds, power_constant, rho_upper
from certifier.diagnostics import SpecError
from certifier.language.desingularizers import make
from certifier.language.losses import LOSSES
from certifier.pipeline import run_text


@pytest.fixture(autouse=True)
def _digits():
    """mpmath at 50 digits for this module's oracles only (mpmath's precision is global state)."""
    with mpmath.workdps(50):
        yield

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
    return emit_certificate(tmp_path_factory.mktemp("power_cert"), spec_text(LINEAR, **POWER))


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


# --- the loss-level profile (docs/theory.md 10.11) -----------------------------------------------------
CUBIC = "cubic_weight_profile_sound.rq"
M2 = 2.5                          # mean x^2 of the cubic spec's data
W0 = 0.5


def cubic_loss(t):
    """The exact flow of L(w) = m w^6: dw/dt = -6 m w^5, so w(t) = (w0^-4 + 24 m t)^(-1/4)."""
    w = (W0 ** -4 + 24 * M2 * np.asarray(t, dtype=float)) ** -0.25
    return M2 * w ** 6


@pytest.fixture(scope="module")
def cubic():
    return run_text((SPECS / CUBIC).read_text(), str(SPECS / CUBIC))


def test_profile_certifies_where_one_mu_cannot(cubic):
    r = cubic
    assert r.verdict == "certified" and r.sound
    assert any("loss-level profile" in n for n in r.notes)
    # one mu over the region above the floor is at most inf R there = R at L = floor: rho would be
    # sqrt(L0 / mu) = 5.7 > the halfwidth 1
    L0 = M2 * W0 ** 6
    mu_floor = 9 * M2 ** (1 / 3) * 1e-6 ** (2 / 3)
    assert math.sqrt(L0 / mu_floor) > 5
    path = W0 - (1e-6 / M2) ** (1 / 6)                   # the flow's path to the floor, exactly
    assert path <= r.region["path_length_bound"] <= 1


def test_profile_bands_are_below_the_closed_form_infimum(cubic):
    bands = cubic.rate["profile"]["bands"]
    assert len(bands) >= 8
    for b in bands:
        # R = 9 m^(1/3) L^(2/3) at every point (both signs of w): its infimum on the band is at the lower edge
        exact = 9 * M2 ** (1 / 3) * b["low"] ** (2 / 3)
        assert 0.3 * exact <= b["mu"] <= exact * (1 + 1e-12), b
    mus = [b["mu"] for b in bands]
    assert mus == sorted(mus)                           # R grows with L, and so do the proved bands
    assert 0.5 <= cubic.rate["profile"]["exponent"] <= 0.8   # about 2/3


def test_profile_rate_lies_above_the_exact_flow_and_solve_ivp(cubic):
    from scipy.integrate import solve_ivp

    r = cubic
    ts = np.concatenate([[0.0], np.logspace(-3, 4, 300)])
    exact = cubic_loss(ts)
    sol = solve_ivp(lambda t, w: -6 * M2 * w ** 5, (0, ts[-1]), [W0], method="DOP853", t_eval=ts,
                    rtol=1e-12, atol=1e-15)
    for t, L, w in zip(ts, exact, sol.y[0]):
        assert abs(M2 * w ** 6 - L) <= 1e-9 * L
        assert L <= r.bound(t) * (1 + 1e-12) or L <= 1e-6, t
    # times to each level are at least the exact times
    for key, t in r.rate["times_to_fraction"].items():
        level = float(key) * M2 * W0 ** 6
        if t is None:
            assert level < 1e-6
            continue
        w = (level / M2) ** (1 / 6)
        assert t >= (w ** -4 - W0 ** -4) / (24 * M2) * (1 - 1e-12)


def test_profile_with_floor_zero_is_never_certified():
    text = (SPECS / CUBIC).read_text().replace("floor=1e-6", "floor=0")
    r = run_text(text)
    assert r.verdict != "certified" and not r.sound
    assert any("needs a floor > 0" in n for n in r.notes)


def test_profile_out_of_budget_is_inconclusive_and_says_where():
    r = run_text((SPECS / CUBIC).read_text().replace("boxes=2000", "boxes=40"))
    assert r.verdict == "inconclusive" and not r.sound
    assert any("loss-level profile: the profile's branch and bound did not finish" in n for n in r.notes)


def test_profile_rate_against_a_piecewise_exact_solution():
    """ProfileRate (log phi) against the exact piecewise solution of dL/dt = -K_band L (mpmath): the
    slowest flow the bands allow."""
    from certifier.compose.rate import ProfileRate

    bands = ((1e-4, 1e-3, 0.01), (1e-3, 1e-2, 0.1), (1e-2, 0.05, 1.0))
    rate = ProfileRate(make("log"), bands, 0.05, 1e-4)

    def slowest(t):
        L, t = mpmath.mpf(0.05), mpmath.mpf(t)
        for a, b, K in reversed(bands):
            need = mpmath.log(L / a) / K
            if t <= need:
                return L * mpmath.exp(-K * t)
            t -= need
            L = mpmath.mpf(a)
        return mpmath.mpf(1e-4)
    for t in [0, 0.1, 1, 1.6, 5, 20, 23.1, 50, 100, 300, 500, 1e4]:
        assert rate.bound(t) >= slowest(t) * (1 - 1e-15)
        assert rate.bound(t) <= slowest(t) * (1 + 1e-12) + 1e-300
    exact = mpmath.log(5) / 1 + mpmath.log(10) / 0.1          # 0.05 -> 0.01 at K = 1, then -> 1e-3 at 0.1
    assert exact <= rate.time_to(1e-3) <= exact * (1 + 1e-12)


@pytest.fixture(scope="module")
def cubic_cert(tmp_path_factory):
    return emit_certificate(tmp_path_factory.mktemp("profile_cert"), (SPECS / CUBIC).read_text())


def _cubic_problems(folder, edit) -> list[str]:
    problems = reforged(folder / "s.json", edit, folder / "t.json")
    assert problems
    return problems


def test_profile_certificate_is_accepted_and_rejected_when_tampered(cubic_cert):
    report = verify(str(cubic_cert / "s.json"))
    assert report.ok, report.problems

    def raise_band(c):
        mus = c["evidence"][0]["profile"]["mu"]
        mus[-1] = (float.fromhex(mus[-1]) * 1.5).hex()
    assert any("the re-run bounds of the leaves that meet it" in p for p in _cubic_problems(cubic_cert, raise_band))

    def edges(c):
        e = c["evidence"][0]["profile"]["edges"]
        e[1] = (float.fromhex(e[1]) * 1.01).hex()
    assert any("band edges" in p for p in _cubic_problems(cubic_cert, edges))

    def rho(c):
        c["evidence"][0]["rho"] = (float.fromhex(c["evidence"][0]["rho"]) * 0.9).hex()
    assert any("recomputed band by band" in p for p in _cubic_problems(cubic_cert, rho))


def test_profile_certificate_is_refused_for_a_spec_with_a_step(cubic_cert):
    (cubic_cert / "s.rq").write_text((SPECS / CUBIC).read_text().replace("horizon=100)", "horizon=100, step=0.01)"))
    try:
        report = verify(str(cubic_cert / "s.json"))
    finally:
        (cubic_cert / "s.rq").write_text((SPECS / CUBIC).read_text())
    assert not report.ok


# --- `desingularizer auto` chooses from the proved profile (docs/sound.md, "The loss-level profile") -------
def test_auto_chooses_the_power_the_closed_form_implies(cubic):
    """R = 9 m^(1/3) L^(2/3) on the cubic spec: the proved lower envelope falls like L^(2/3), so auto picks
    phi'(u) = u^-(1 + 2/3), i.e. power(alpha = 5/6) in certify's convention phi'(u) = u^(-2 alpha)
    (2 alpha = 1 + beta for least squares); the flow is then phi(L) = -(3/2) L^(-2/3) falling at the
    constant rate 36 m^(1/3) (checked here), the t^(-3/2) kind."""
    r = cubic
    assert r.desingularizer["requested"] == "auto"
    auto = r.rate["profile"]["auto"]
    assert auto["alpha"] == pytest.approx(5 / 6, abs=1e-15) and auto["chosen"].startswith("power(")
    assert 0.6 <= auto["exponent"] <= 0.72
    # the closed form: d/dt phi(L) = -phi'(L) ||grad L||^2 = -L^(-5/3) 4 L R = -36 m^(1/3), for every L
    for L in [1e-6, 1e-4, 0.03]:
        R = 9 * M2 ** (1 / 3) * L ** (2 / 3)
        assert L ** (-5 / 3) * 4 * L * R == pytest.approx(36 * M2 ** (1 / 3), rel=1e-12)
    # with one proved mu per band the natural log is never worse, band by band: it is kept, and says so
    assert auto["kept"] == "natural" and r.desingularizer["name"] == "log"
    assert "power(alpha=5/6)" in r.desingularizer["reason"] and "natural log kept" in r.desingularizer["reason"]
    assert any(n.startswith("auto from the proved loss-level profile") for n in r.notes)
    for key, t in auto["candidate_times_to_fraction"].items():
        mine = r.rate["times_to_fraction"][key]
        assert (t is None) == (mine is None) and (t is None or t >= mine)


def test_auto_rates_lie_above_the_exact_flow_and_solve_ivp(cubic):
    """Both the kept rate and auto's power rate against the closed-form flow and a DOP853 solve."""
    from scipy.integrate import solve_ivp

    auto = cubic.rate["profile"]["auto"]
    kept = [[t, cubic.bound(t)] for t in np.concatenate([[0.0], np.logspace(-3, 4, 200)])]
    for curve in (kept, auto["candidate_curve"]):
        ts = np.array([t for t, _ in curve])
        sol = solve_ivp(lambda t, w: -6 * M2 * w ** 5, (0, ts[-1]), [W0], method="DOP853", t_eval=ts,
                        rtol=1e-12, atol=1e-15)
        for (t, bound), L, w in zip(curve, cubic_loss(ts), sol.y[0]):
            assert abs(M2 * w ** 6 - L) <= 1e-9 * L
            assert L <= bound * (1 + 1e-12) or L <= 1e-6, t
            assert M2 * w ** 6 <= bound * (1 + 1e-9) or L <= 1e-6, t
    for key, t in auto["candidate_times_to_fraction"].items():
        if t is not None:
            w = (float(key) * M2 * W0 ** 6 / M2) ** (1 / 6)
            assert t >= (w ** -4 - W0 ** -4) / (24 * M2) * (1 - 1e-12)


def _slowest(bands, L0, t):
    """The slowest flow a proved profile allows (mpmath): dL/dt = -4 mu_k L on band k (least squares,
    R = mu_k there), from L0 down."""
    L, t = mpmath.mpf(L0), mpmath.mpf(t)
    for a, b, mu in reversed(bands):
        if L <= a:
            continue
        need = mpmath.log(L / a) / (4 * mu)
        if t <= need:
            return L * mpmath.exp(-4 * mu * t)
        t -= need
        L = mpmath.mpf(a)
    return L


@pytest.mark.parametrize("beta,alpha", [(1 / 3, 2 / 3), (2 / 3, 5 / 6), (1.0, 1.0)])
def test_auto_from_a_proved_power_profile_against_the_slowest_flow(beta, alpha):
    """mu_k = 2 a_k^beta on the half-decades from 1e-6 to 0.05: auto picks 2 alpha = 1 + beta; both rates
    lie above the slowest flow the bands allow, and the power's never below the natural one's."""
    from certifier.compose.sound import auto_from_profile, band_edges

    floor, L0 = 1e-6, 0.05
    edges = band_edges(floor, L0)
    mus = [2 * a ** beta for a in edges[:-1]]
    choice = auto_from_profile("least_squares", edges, mus, 4.0, L0, floor, 1e3)
    assert choice["alpha"] == pytest.approx(alpha, abs=1e-15)
    assert choice["exponent"] == pytest.approx(beta, rel=1e-9)
    cand, kept = choice["candidate"], choice["rate"]
    assert choice["kept"] == "natural" and kept.phi.name == "log"
    bands = list(zip(edges[:-1], edges[1:], mus))
    for t in [0, 1e-3, 0.1, 1, 10, 50, 100, 300, 1e3]:
        slow = _slowest(bands, L0, t)
        assert kept.bound(t) >= slow * (1 - 1e-15) and cand.bound(t) >= slow * (1 - 1e-15)
        assert cand.bound(t) >= kept.bound(t) * (1 - 1e-12)


def test_auto_keeps_the_natural_phi_without_a_vanishing_profile():
    from certifier.compose.sound import auto_from_profile, band_edges

    # the two-student spec's range (floor 3e-2, L0 0.041): far fewer than 4 decades
    edges = band_edges(3e-2, 0.041)
    choice = auto_from_profile("least_squares", edges, [0.17] * (len(edges) - 1), 4.0, 0.041, 3e-2, 1e3)
    assert choice["alpha"] is None and choice["kept"] == "natural" and choice["candidate"] is None
    assert "natural log" in choice["reason"]
    # a flat profile over 5 decades: R does not vanish with L
    edges = band_edges(1e-6, 0.05)
    choice = auto_from_profile("least_squares", edges, [0.3] * (len(edges) - 1), 4.0, 0.05, 1e-6, 1e3)
    assert choice["alpha"] is None and "does not vanish" in choice["reason"]
    # the exponential loss: a power phi follows R ~ L^beta for least squares only
    mus = [2 * a ** 0.5 for a in edges[:-1]]
    choice = auto_from_profile("exponential", edges, mus, 1.0, 0.05, 1e-6, 1e3)
    assert choice["alpha"] is None and "least squares only" in choice["reason"]


def test_two_students_with_auto_never_get_a_linear_rate_to_zero():
    """specs/single_neuron_n2_sound.rq with auto and floor 0 (L ~ t^-3): never certified, whatever auto
    chooses (the profile needs a floor > 0, and log's one mu is not proved)."""
    text = (SPECS / "single_neuron_n2_sound.rq").read_text()
    text = (text.replace("desingularizer power(alpha=2/3)", "desingularizer auto")
            .replace("floor=3e-2", "floor=0").replace("boxes=3000", "boxes=200"))
    r = run_text(text)
    assert r.verdict != "certified" and not r.sound
    assert r.desingularizer["requested"] == "auto"


def test_auto_choice_replays_and_a_tampered_choice_is_rejected(cubic_cert):
    assert verify(str(cubic_cert / "s.json")).ok
    auto = json.loads((cubic_cert / "s.json").read_text())["evidence"][0]["profile"]["auto"]
    assert float.fromhex(auto["alpha"]) == pytest.approx(5 / 6, abs=1e-15) and auto["kept"] == "natural"

    def alpha(c):
        c["evidence"][0]["profile"]["auto"]["alpha"] = (2 / 3).hex()
    assert any("auto's choice" in p for p in _cubic_problems(cubic_cert, alpha))

    def kept(c):
        c["evidence"][0]["profile"]["auto"]["kept"] = "power"
    assert any("auto's choice" in p for p in _cubic_problems(cubic_cert, kept))

    def dropped(c):
        del c["evidence"][0]["profile"]["auto"]
    assert any("auto's choice" in p for p in _cubic_problems(cubic_cert, dropped))
    # the certificate against the same spec naming log: no longer the certified spec
    (cubic_cert / "s.rq").write_text((SPECS / CUBIC).read_text().replace("loss least_squares",
                                                                         "loss least_squares\ndesingularizer log"))
    try:
        report = verify(str(cubic_cert / "s.json"))
    finally:
        (cubic_cert / "s.rq").write_text((SPECS / CUBIC).read_text())
    assert not report.ok
