"""`certify check` on an untrusted certificate (issue 20): no Python imported without
--allow-python, every printed claim re-derived from the spec and the evidence, malformed files
refused with one `certify check: error:` line and exit 2, never a traceback. The certificates are
real ones, written by `python -m certifier --emit` on the tiny spec of tests/test_cache_cert.py."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_cache_cert import SPEC  # the tiny spec the certificates are written from

from certifier import cli
from certifier.certificate import VERIFIERS, evidence_digest, schema

ROOT = Path(__file__).resolve().parent.parent
NET = '''\
import pathlib

import torch

pathlib.Path(__file__).with_name("imported.marker").write_text("the module ran")


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(2, 1, bias=False)
        with torch.no_grad():
            self.fc.weight.zero_()

    def forward(self, x):
        return self.fc(x)
'''
TORCH_SPEC = SPEC.replace("params { w : [2] = zeros() }\nmodel f(x) = w @ x",
                          'model torch("trust_marker_net:Net")')


def _data(folder: Path, realizable: bool = True) -> None:
    rng = np.random.default_rng(0 if realizable else 1)
    x = rng.standard_normal((8, 2))
    y = x @ np.array([1.0, -0.5]) if realizable else x[:, 0] ** 2     # not linear: refuted
    np.savez(folder / "d.npz", x=x, y=y)


def _emit(folder: Path, spec: str, *flags: str) -> None:
    """`python -m certifier SPEC --emit cert.json` in its own process (so its imports stay there)."""
    (folder / "s.rq").write_text(spec)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "certifier", "s.rq", "--quiet", "--no-cache", *flags,
                           "--emit", "cert.json"], cwd=folder, env=env, capture_output=True, text=True, timeout=300)
    assert (folder / "cert.json").exists(), done.stderr


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """Folders with real certificates: certified (radius=auto), certified (radius=2.5), refuted."""
    out = {}
    for name, spec, realizable in (("auto", SPEC, True), ("fixed", SPEC.replace("radius=auto", "radius=2.5"), True),
                                   ("refuted", SPEC, False)):
        folder = tmp_path_factory.mktemp(name)
        _data(folder, realizable)
        _emit(folder, spec)
        out[name] = folder
    return out


@pytest.fixture
def copy(made, tmp_path, monkeypatch, capsys):
    """copy(name): a fresh copy of that folder as the working directory; returns its cert.json."""
    made_here = []

    def make(name: str) -> Path:
        made_here.append(name)
        folder = tmp_path / f"{name}{len(made_here)}"
        shutil.copytree(made[name], folder)
        monkeypatch.chdir(folder)
        capsys.readouterr()
        return folder / "cert.json"
    return make


def check(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(["check", *argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


def tamper(path: Path, change, digest: bool = True) -> None:
    c = json.loads(path.read_text())
    change(c)
    if digest:                                  # a forger recomputes the checksum
        c["evidence_count"], c["evidence_digest"] = len(c["evidence"]), evidence_digest(c["evidence"])
    path.write_text(json.dumps(c))


def rejected(capsys, path: Path) -> str:
    code, out, err = check(capsys, str(path))
    assert code == 1 and out.startswith("certificate REJECTED: s.rq\n"), out + err
    return out


def error(capsys, path: Path) -> str:
    code, out, err = check(capsys, str(path))
    assert code == 2 and out == "" and err.startswith("certify check: error: "), out + err
    assert err.count("\n") == 1                 # one line
    return err


# --- 1. no Python code without --allow-python ----------------------------------------------------------

def test_a_python_model_is_not_imported_without_allow_python(tmp_path, monkeypatch, capsys):
    (tmp_path / "trust_marker_net.py").write_text(NET)
    _data(tmp_path)
    _emit(tmp_path, TORCH_SPEC, "--allow-python")
    marker = tmp_path / "imported.marker"
    assert marker.exists() and json.loads((tmp_path / "cert.json").read_text())["allow_python"] is True
    marker.unlink()
    monkeypatch.chdir(tmp_path)
    monkeypatch.delitem(sys.modules, "trust_marker_net", raising=False)

    code, out, err = check(capsys, "cert.json")
    assert code == 2 and out == ""
    assert err == ("certify check: error: the certified spec's model torch(\"trust_marker_net:Net\") imports the "
                   "Python module 'trust_marker_net', which runs its code; certify check does that only with "
                   "--allow-python (rerun with --allow-python if you trust 'trust_marker_net')\n")
    assert not marker.exists() and "trust_marker_net" not in sys.modules

    # a certificate claiming it was written without Python: still nothing imported, even with the flag
    tamper(tmp_path / "cert.json", lambda c: c.update(allow_python=False), digest=False)
    code, out, _ = check(capsys, "cert.json", "--allow-python")
    assert code == 1 and "the certificate was written without --allow-python" in out
    assert not marker.exists() and "trust_marker_net" not in sys.modules

    tamper(tmp_path / "cert.json", lambda c: c.update(allow_python=True), digest=False)
    code, out, _ = check(capsys, "cert.json", "--allow-python")
    assert code == 0 and out.startswith("certificate valid: s.rq: certified (")
    assert marker.exists()                      # only now did the module run


def test_check_help_names_allow_python(capsys):
    assert cli.main(["check", "--help"]) == 0
    assert "--allow-python" in capsys.readouterr().out


# --- 2. every claim re-derived -----------------------------------------------------------------------------

def test_the_genuine_certificates_are_valid(copy, capsys):
    for name, verdict in (("auto", "certified"), ("fixed", "certified"), ("refuted", "refuted")):
        code, out, _ = check(capsys, str(copy(name)))
        assert code == 0 and out.startswith(f"certificate valid: s.rq: {verdict} ("), out
        assert "VACUOUS" not in out


@pytest.mark.parametrize("factor", [1e300 / 2.0, 1.5])
def test_an_auto_radius_larger_than_the_search_can_choose_is_rejected(copy, capsys, factor):
    path = copy("auto")
    tamper(path, lambda c: c["numbers"].update(radius=c["numbers"]["radius"] * factor))
    assert "(radius=auto) is larger than the search can have chosen" in rejected(capsys, path)


def test_a_fixed_radius_must_be_the_specs(copy, capsys):
    path = copy("fixed")
    tamper(path, lambda c: c["numbers"].update(radius=1e300))
    assert "numbers: radius 1e+300, the spec's is 2.5" in rejected(capsys, path)


def test_an_infinite_radius_is_malformed(copy, capsys):
    path = copy("auto")
    radius = json.loads(path.read_text())["numbers"]["radius"]
    text = path.read_text()
    for token, what in (("Infinity", "the JSON token Infinity is not a number certify writes"),
                        ("1e400", "numbers.radius: expected a finite number, got inf")):
        path.write_text(text.replace(f'"radius": {radius!r}', f'"radius": {token}'))
        assert what in error(capsys, path)


def _relabel(floor: float | None):
    def change(c):
        n = c["numbers"]
        c["verdict"], c["failing_kind"] = "certified", None
        if floor is not None:
            n["floor"] = n["floor_effective"] = n["floor_claimed"] = floor
            c["rate"]["parameters"] = {"kind": "constant", "value": n["L0"]}
    return change


def test_a_refuted_certificate_relabelled_certified_is_rejected(copy, capsys):
    path = copy("refuted")
    L0 = json.loads(path.read_text())["numbers"]["L0"]
    tamper(path, _relabel(None))
    assert "a certified certificate has no rate" in rejected(capsys, path)
    path = copy("refuted")
    tamper(path, _relabel(2 * L0))                 # floor raised to >= L0, digest recomputed
    out = rejected(capsys, path)
    assert f"numbers: floor {2 * L0!r}, the spec's floor is 0.0" in out


def test_a_floor_at_or_above_l0_is_said_to_be_vacuous(copy, capsys):
    """With the spec's floor raised too (the spec is the forger's as well) the certificate is what
    `certify` itself gives, certified; check says plainly that it claims nothing."""
    path = copy("refuted")
    L0 = json.loads(path.read_text())["numbers"]["L0"]
    spec = SPEC.replace("floor=0,", f"floor={2 * L0!r},")
    (path.parent / "s.rq").write_text(spec)
    import hashlib

    def change(c):
        _relabel(2 * L0)(c)
        c["spec"]["sha256"] = hashlib.sha256(spec.encode()).hexdigest()
    tamper(path, change)
    code, out, _ = check(capsys, str(path))
    assert code == 0 and out.startswith("certificate valid: s.rq: certified (")
    assert (f"\nVACUOUS: the spec's floor {2 * L0!r} is at or above L0 = {L0!r}: the bound L(t) <= max(..., floor) "
            "holds from t = 0 and says nothing about convergence\n") in out


def test_a_claimed_floor_at_or_above_l0_is_rejected(copy, capsys):
    path = copy("auto")

    def change(c):
        L0 = c["numbers"]["L0"]
        c["numbers"]["floor_claimed"] = c["rate"]["parameters"]["fields"]["floor"] = L0
    tamper(path, change)
    assert "at or above L0 = " in rejected(capsys, path) and "a vacuous claim" in rejected(capsys, path)


@pytest.mark.parametrize("change, message", [
    (lambda c: c.update(sound=True), "a sampled certificate is an estimate: its sound must be false"),
    (lambda c: c.update(failing_kind="witness"), "a certified certificate has no failing kind ('witness')"),
    (lambda c: c.update(verdict="refuted", failing_kind=None), "a refuted certificate claims no rate"),
    (lambda c: c["numbers"].update(horizon=1e9), "numbers: horizon 1000000000.0, the spec's horizon is 100.0"),
    (lambda c: c["evidence"].pop(), "a certified sampled certificate needs its witness"),
    (lambda c: c["rate"]["parameters"]["fields"].update(step=0.1, smoothness=1.0),
     "rate: its step 0.1 is not the spec's None"),
    (lambda c: c["method"].update(name="interval"), "numbers: the field 'L0_upper' is missing"),
])
def test_claims_that_do_not_follow_are_rejected(copy, capsys, change, message):
    path = copy("auto")
    tamper(path, change)
    code, out, err = check(capsys, str(path))
    assert code in (1, 2) and message in out + err, out + err


def test_a_refuted_certificate_without_a_failing_kind_is_rejected(copy, capsys):
    path = copy("refuted")
    tamper(path, lambda c: c.update(failing_kind=None))
    assert "a refuted certificate's failing kind is one of critical-point, witness, confinement" in \
        rejected(capsys, path)


# --- 3. malformed files: exit 2, one line, no traceback ----------------------------------------------------------

@pytest.mark.parametrize("change, message", [
    (lambda c: c["evidence"].__setitem__(0, 5), "evidence[0]: expected an object, got a number"),
    (lambda c: c["evidence"].__setitem__(0, "point"), "evidence[0]: expected an object, got a string"),
    (lambda c: c["evidence"][0].update(loss="0.1"), "evidence[0].loss: expected a finite number, got a string"),
    (lambda c: c["evidence"][0].update(loss=True), "evidence[0].loss: expected a finite number, got a boolean"),
    (lambda c: c["evidence"][0].update(delta=[[1.0], 2.0]), "evidence[0].delta[0]: expected a finite number, got a list"),
    (lambda c: c["evidence"][0].update(kind="magic"), "evidence[0].kind: unknown evidence kind 'magic'"),
    (lambda c: c["rate"]["parameters"]["fields"]["phi"]["desingularizer"].update(name="bogus"),
     "rate.parameters.fields.phi.desingularizer.name: expected one of log, power, lambert, got 'bogus'"),
    (lambda c: c["rate"]["parameters"]["fields"]["phi"]["desingularizer"].update(name="power", params={"alpha": 5}),
     "desingularizer.params.alpha: expected 1/2 < alpha <= 1, got 5"),
    (lambda c: c["rate"]["curve"].__setitem__(3, [1]), "rate.curve[3]: expected a list of 2 entries, got a list of 1"),
    (lambda c: c["evidence"][-1]["curve"].__setitem__(2, [1]), "].curve[2]: expected a list of 2 entries"),
    (lambda c: c["evidence"][-1].update(steps=-3), "].steps: expected a whole number >= 0, got -3"),
    (lambda c: c.update(spec="s.rq"), "spec: expected an object, got a string"),
    (lambda c: c.pop("numbers"), "certificate: the field 'numbers' is missing"),
    (lambda c: c["numbers"].update(L0=None), "numbers.L0: expected a finite number, got null"),
    (lambda c: c["files"].append({"name": "x", "sha256": "00"}), "files[1].sha256: expected a sha256 digest"),
    (lambda c: c["method"].update(name="magic"), "method.name: expected one of sampled, interval, got 'magic'"),
])
def test_malformed_fields_are_refused_with_one_line(copy, capsys, change, message):
    path = copy("auto")
    tamper(path, change)
    err = error(capsys, path)
    assert err.startswith(f"certify check: error: '{path}' is malformed: ") and message in err, err


@pytest.mark.parametrize("content, message", [
    (b"[" * 200000 + b"]" * 200000, "nests JSON 200000 levels deep, more than the limit of 32"),
    (b'{"format": "certify-certificate/1", "x": NaN}', "the JSON token NaN is not a number certify writes"),
    (b"\xff\xfe{}", "is not UTF-8 text"),
    (b"{not json", "is not JSON"),
    (b"[1, 2]", "is not a certify certificate"),
])
def test_malformed_files_are_refused(tmp_path, monkeypatch, capsys, content, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.json").write_bytes(content)
    assert message in error(capsys, tmp_path / "c.json")


def test_a_large_file_is_refused_before_it_is_read(tmp_path, monkeypatch, capsys):
    big = tmp_path / "big.json"
    with open(big, "wb") as fh:                 # sparse: nothing is written, nothing may be read
        fh.truncate(schema.MAX_BYTES + 1)
    err = error(capsys, big)
    assert f"is {schema.MAX_BYTES + 1:,} bytes, more than the limit of {schema.MAX_BYTES:,}" in err


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_fifos_devices_and_directories_are_refused(tmp_path, capsys):
    os.mkfifo(tmp_path / "fifo.json")           # opening must not wait for a writer
    (tmp_path / "zero.json").symlink_to("/dev/zero")
    for name in ("fifo.json", "zero.json"):
        assert f"certificate '{tmp_path / name}' is not a regular file" in error(capsys, tmp_path / name)
    assert f"certificate '{tmp_path}' is not a regular file" in error(capsys, tmp_path)     # a directory


def test_the_depth_scan_skips_strings():
    assert schema.nesting_depth('{"a": "[[[[{{{{", "b": [[1], {"c": "\\"]]"}]}') == 3
    assert schema.nesting_depth("[]" * 1000) == 1


def test_every_verified_evidence_kind_has_a_schema():
    assert set(VERIFIERS) == set(schema.EVIDENCE)


def test_a_malformed_sound_certificate_is_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    spec = ROOT / "specs" / "linear_nonrealizable_floor_sound.rq"
    assert cli.main([str(spec), "--quiet", "--no-cache", "--emit", "cert.json"]) == 0
    capsys.readouterr()
    path = tmp_path / "cert.json"
    base = path.read_text()
    assert check(capsys, str(path))[0] == 0
    tamper(path, lambda c: c["evidence"][1]["lo"].__setitem__(0, "0xzz"))
    assert "evidence[1].lo[0]: expected a float.hex string, got '0xzz'" in error(capsys, path)
    path.write_text(base)
    tamper(path, lambda c: c["numbers"].update(horizon=1e9))
    assert "horizon 1000000000.0 is not the spec's" in rejected_any(capsys, path)


def rejected_any(capsys, path: Path) -> str:
    code, out, err = check(capsys, str(path))
    assert code == 1 and out.startswith("certificate REJECTED: "), out + err
    return out
