"""Certificates of the sound mode: `--emit` writes the split tree and its leaves (exact boxes, rules,
bounds), `certify check` replays them without search; tampered certificates are rejected.
Also functions=arb against the default margin."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from certifier import cli
from certifier.certificate import VERIFIERS, CertificateError, build, evidence_digest, verify
from certifier.compile.interval_model import IntervalModel
from certifier.pipeline import run_text

# one weight, two points: near the minimiser w = 0.7 the direct rule is weak, so branch and bound
# drops the boxes that lie entirely below the floor (21 boxes evaluated, 11 leaves, 3 dropped)
SPEC = """\
spec "one tanh weight, a floor: sound certificate"
data {
  x = [[-1.0], [2.0]]
  y = tanh(0.7 * x[:, 0])
}
params { w : [] = 0.9 }
model f(x) = tanh(w * x[0])
loss least_squares
region box(center=init, halfwidth=0.3)
method interval(boxes=200, seed=0)
certify rate(floor=0.00204, horizon=10)
"""
# a linear model on data it cannot fit: a verified point proves min L >= 0.196 above the floor 0.01
# (a refutation by a point on a region too small for confinement is only inconclusive: the flow need
# not meet it)
REFUTED = (SPEC.replace("y = tanh(0.7 * x[:, 0])", "y = [0.3, 0.8]").replace("tanh(w * x[0])", "w * x[0]")
           .replace("floor=0.00204", "floor=0.01"))


class _Counter:
    """Counts IntervalModel.over_box calls (one per box the interval forward mode encloses)."""

    def __init__(self, monkeypatch):
        self.calls = 0
        original = IntervalModel.over_box

        def counted(model, lo, hi):
            self.calls += 1
            return original(model, lo, hi)
        monkeypatch.setattr(IntervalModel, "over_box", counted)


@pytest.fixture(scope="module")
def emitted(tmp_path_factory):
    """Both specs run once with --emit: (folder, over_box calls of the certified run)."""
    folder = tmp_path_factory.mktemp("sound_emitted")
    (folder / "s.rq").write_text(SPEC)
    (folder / "r.rq").write_text(REFUTED)
    cwd = os.getcwd()
    os.chdir(folder)
    mp = pytest.MonkeyPatch()
    try:
        counter = _Counter(mp)
        assert cli.main(["s.rq", "--quiet", "--emit", "s.json", "--no-cache"]) == 0
        run_calls = counter.calls
        mp.undo()
        assert cli.main(["r.rq", "--quiet", "--emit", "r.json", "--no-cache"]) == 1
    finally:
        mp.undo()
        os.chdir(cwd)
    return folder, run_calls


@pytest.fixture
def sound(emitted, tmp_path, monkeypatch, capsys):
    folder, run_calls = emitted
    for name in ("s.rq", "r.rq", "s.json", "r.json"):
        shutil.copy(folder / name, tmp_path / name)
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    return tmp_path, run_calls


def _load(path: Path) -> dict:
    return json.loads(path.read_text())


def _save(path: Path, cert: dict, forge: bool = True) -> None:
    if forge:                                   # a consistent count and digest: the replay must notice
        cert["evidence_count"] = len(cert["evidence"])
        cert["evidence_digest"] = evidence_digest(cert["evidence"])
    path.write_text(json.dumps(cert))


def _problems(path: Path) -> str:
    report = verify(str(path))
    assert not report.ok
    return "\n".join(report.problems)


def _leaves(cert: dict) -> list[dict]:
    return [e for e in cert["evidence"] if e["kind"] == "sound-leaf"]


# --- a valid certificate ------------------------------------------------------------------------------

def test_sound_certificate_holds_the_exact_split_tree(sound):
    folder, _ = sound
    c = _load(folder / "s.json")
    assert c["verdict"] == "certified" and c["sound"] and c["method"]["name"] == "interval"
    proof = c["evidence"][0]
    assert proof["kind"] == "sound-proof" and proof["functions"] == "margin"
    leaves = _leaves(c)
    assert len(leaves) == proof["leaves"] == len(proof["splits"]) + 1 == (proof["boxes_evaluated"] + 1) // 2
    assert {e["status"] for e in leaves} == {"proven", "dropped"}
    assert any(e.get("reason") == "entirely below the floor" for e in leaves)
    # exact floats: float.hex round trips, and the readable numbers are the same doubles
    assert float.fromhex(proof["mu"]) == c["numbers"]["mu"] > 0
    assert float.fromhex(proof["rho"]) == c["numbers"]["rho"] <= c["numbers"]["radius"] == 0.3
    assert min(float.fromhex(e["bound"]) for e in leaves if e["status"] == "proven") == c["numbers"]["mu"]
    for e in leaves:
        assert all(float.fromhex(a) <= float.fromhex(b) for a, b in zip(e["lo"], e["hi"]))
    assert {"sound-proof", "sound-leaf", "sound-refutation"} <= set(VERIFIERS)


def test_check_replays_without_search(sound, capsys):
    folder, run_calls = sound
    c = _load(folder / "s.json")
    proven = sum(1 for e in _leaves(c) if e["status"] == "proven")
    code = cli.main(["check", "s.json"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert out.startswith("certificate valid: s.rq: certified (11 leaf boxes re-proved by 8 rule evaluations, "
                          "no search")
    assert "is a proof for the model and data as stored" in out
    # the work: one enclosure per leaf and one rule per proven leaf; the run enclosed every box of
    # the search (and evaluated every rule on each), searched for counterexamples and ran a witness
    import pytest as _pytest
    mp = _pytest.MonkeyPatch()
    try:
        counter = _Counter(mp)
        report = verify("s.json")
    finally:
        mp.undo()
    assert report.ok and report.counts == {"leaves": 11, "rule_evaluations": proven}
    assert counter.calls == 11 < run_calls == c["method"]["boxes_evaluated"] == 21


def test_refuted_sound_certificate_is_verified(sound):
    folder, _ = sound
    c = _load(folder / "r.json")
    assert c["verdict"] == "refuted" and c["failing_kind"] == "critical-point"
    assert [e["kind"] for e in c["evidence"]] == ["sound-proof", "sound-refutation"]
    report = verify(str(folder / "r.json"))
    assert report.ok, report.problems
    # a point moved out of the region (box [0.6, 1.2]) no longer refutes
    c["evidence"][1]["theta"] = [float(2.0).hex()]
    _save(folder / "r.json", c)
    assert "sound-refutation: the point does not verify" in _problems(folder / "r.json")


# --- tampering --------------------------------------------------------------------------------------------

def test_check_rejects_a_larger_mu(sound, capsys):
    folder, _ = sound
    c = _load(folder / "s.json")
    mu = c["numbers"]["mu"] * 1.01
    c["numbers"]["mu"] = mu
    c["evidence"][0]["mu"] = c["rate"]["parameters"]["mu"] = mu.hex()
    _save(folder / "s.json", c)
    code = cli.main(["check", "s.json"])
    out = capsys.readouterr().out
    assert code == 1 and out.startswith("certificate REJECTED: s.rq\n")
    assert "is above the smallest leaf bound" in out and "gives" in out


def test_check_rejects_a_raised_leaf_bound(sound):
    folder, _ = sound
    c = _load(folder / "s.json")
    leaf = next(e for e in _leaves(c) if e["status"] == "proven")
    raised = float.fromhex(leaf["bound"]) * 1.001
    leaf["bound"], leaf["value"] = raised.hex(), raised
    _save(folder / "s.json", c)
    assert f"leaf {leaf['path']!r}: the rule '{leaf['rule']}' re-run on its box gives" in _problems(folder / "s.json")


def test_check_rejects_a_missing_leaf(sound):
    folder, _ = sound
    c = _load(folder / "s.json")
    gone = _leaves(c)[3]
    c["evidence"].remove(gone)
    _save(folder / "s.json", c)
    problems = _problems(folder / "s.json")
    assert f"the leaves do not cover the region: no leaf at path(s) {gone['path']!r}" in problems
    assert "(a leaf was removed or added)" in problems
    c["evidence"][0]["leaves"] -= 1                      # even with the count fixed
    _save(folder / "s.json", c)
    assert "do not cover the region" in _problems(folder / "s.json")


def test_check_rejects_a_leaf_that_no_longer_covers(sound):
    folder, _ = sound
    c = _load(folder / "s.json")
    leaf = next(e for e in _leaves(c) if e["status"] == "proven")
    lo, hi = float.fromhex(leaf["lo"][0]), float.fromhex(leaf["hi"][0])
    leaf["hi"][0] = (lo + 0.5 * (hi - lo)).hex()          # shrunk: a gap opens in the cover
    _save(folder / "s.json", c)
    assert f"leaf {leaf['path']!r}: its box is not the box the split tree gives" in _problems(folder / "s.json")


def test_check_rejects_a_moved_split_or_root(sound):
    folder, _ = sound
    c = _load(folder / "s.json")
    path, j, at = c["evidence"][0]["splits"][0]
    c["evidence"][0]["splits"][0][2] = (float.fromhex(at) + 1e-3).hex()
    _save(folder / "s.json", c)
    assert "its box is not the box the split tree gives" in _problems(folder / "s.json")
    c = _load(folder / "s.json")
    c["evidence"][0]["splits"][0][2] = "0x1.0p+9"        # outside the box: not a cut
    _save(folder / "s.json", c)
    assert "does not cut its box" in _problems(folder / "s.json")
    c = _load(folder / "s.json")
    c["evidence"][0]["root"]["hi"][0] = (float.fromhex(c["evidence"][0]["root"]["hi"][0]) * 0.9).hex()
    _save(folder / "s.json", c)
    assert "the root box is not the region's box" in _problems(folder / "s.json")


def test_check_rejects_a_false_drop(sound):
    folder, _ = sound
    c = _load(folder / "s.json")
    leaf = next(e for e in _leaves(c) if e["status"] == "proven")
    for key in ("rule", "bound", "value", "numbers"):
        leaf.pop(key)
    leaf["status"], leaf["reason"] = "dropped", "entirely below the floor"
    _save(folder / "s.json", c)
    assert "dropped as entirely below the floor, but max L over it" in _problems(folder / "s.json")
    leaf["reason"] = "outside the ball"
    _save(folder / "s.json", c)
    assert "dropped as outside the ball, but its box meets the ball" in _problems(folder / "s.json")


def test_check_rejects_changed_rho_l0_functions_or_spec(sound):
    folder, _ = sound
    base = _load(folder / "s.json")
    c = json.loads(json.dumps(base))
    c["evidence"][0]["rho"] = (float.fromhex(c["evidence"][0]["rho"]) * 0.5).hex()
    _save(folder / "s.json", c)
    assert "recomputed with outward rounding" in _problems(folder / "s.json")
    c = json.loads(json.dumps(base))
    c["evidence"][0]["L0_upper"] = (float.fromhex(c["evidence"][0]["L0_upper"]) * 0.999).hex()
    _save(folder / "s.json", c)
    assert "is below the recomputed interval bound" in _problems(folder / "s.json")
    c = json.loads(json.dumps(base))
    c["evidence"][0]["functions"] = "arb"
    _save(folder / "s.json", c)
    assert "elementary functions 'arb', the spec says 'margin'" in _problems(folder / "s.json")
    _save(folder / "s.json", base)
    (folder / "s.rq").write_text(SPEC.replace("0.7 * x", "0.71 * x"))     # other data
    assert "is not the certified spec" in _problems(folder / "s.json")


def test_inconclusive_sound_result_has_no_certificate():
    result = run_text(SPEC.replace("boxes=200", "boxes=3"), "s.rq")
    assert result.verdict == "inconclusive"
    with pytest.raises(CertificateError, match="nothing is proved"):
        build(result, "s.rq", SPEC)


# --- functions=arb ------------------------------------------------------------------------------------

def test_arb_functions_certify_with_the_margin_mu(sound):
    folder, _ = sound
    margin = _load(folder / "s.json")["numbers"]["mu"]
    text = SPEC.replace("seed=0)", "seed=0, functions=arb)")
    (folder / "a.rq").write_text(text)
    assert cli.main(["a.rq", "--quiet", "--emit", "a.json", "--no-cache"]) == 0
    c = _load(folder / "a.json")
    assert c["method"]["functions"] == "arb" and "arb" in c["method"]["elementary_functions"]
    assert c["numbers"]["mu"] == pytest.approx(margin, rel=1e-9)
    assert verify(str(folder / "a.json")).ok          # the replay uses arb too


def test_functions_option_accepts_margin_or_arb_only():
    from certifier import check
    from certifier.diagnostics import SpecError
    from certifier.parse import parse

    assert check.check(parse(SPEC, "s.rq")).method.options["functions"] == "margin"
    for value, hint in (("marign", "did you mean 'margin'?"), ("2", None)):
        with pytest.raises(SpecError) as info:
            check.check(parse(SPEC.replace("seed=0)", f"seed=0, functions={value})"), "s.rq"))
        d = info.value.diagnostics[0]
        assert d.code == "E109" and d.message.startswith("functions must be margin or arb")
        assert hint is None or hint in d.hint


def test_a_point_below_the_needed_mu_is_no_refutation():
    """On a box too small for confinement a verified point with R below the mu confinement needs
    shows only that no certificate of this kind exists there: the flow from theta0 need not meet
    it, so the verdict is inconclusive (it used to be refuted)."""
    text = SPEC.replace("halfwidth=0.3", "halfwidth=0.25").replace("floor=0.00204", "floor=0.000815")
    result = run_text(text, "c.rq")
    assert result.verdict == "inconclusive" and result.failing_region.kind == "confinement"
    assert "no counterexample to the rate itself" in result.failing_region.message
