"""The published JSON schemas (certifier/schemas/*.schema.json, draft 2020-12) against what certify
writes: the snapshots, the JSON and JSON-lines output of the example specs (the cheaper ones here,
every spec under specs/ with -m slow), certificates of a sampled and a sound spec, and
`certify check --format json` (docs/output.md, "Schemas")."""
from __future__ import annotations

import copy
import json
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest

from certifier.report.json import SCHEMA_VERSION
from certifier.report.junit import render_junit
from certifier.report.load import diagnostic_from_dict, result_from_dict
from certifier.report.outcome import Outcome
from certifier.report.sarif import to_sarif

jsonschema = pytest.importorskip("jsonschema")

ROOT = Path(__file__).resolve().parent.parent
SNAPSHOTS = Path(__file__).parent / "snapshots"
NAMES = ("result", "certificate", "check")
# a second or two each: a certified, a refuted and the population case of the sampled mode, and the
# sound mode's certified, refuted and floor cases
CHEAP = ["linear_nonrealizable", "linear_underparameterized", "logistic_nonseparable", "single_neuron_n1",
         "linear_nonrealizable_sound", "linear_underparameterized_sound", "one_neuron_sound"]


def schema(name: str) -> dict:
    """The schema as the installed package ships it."""
    return json.loads(resources.files("certifier").joinpath(f"schemas/{name}.schema.json").read_text("utf-8"))


def errors(name: str, instance) -> list[str]:
    validator = jsonschema.Draft202012Validator(schema(name))
    return [f"{list(e.absolute_path)}: {e.message[:200]}" for e in validator.iter_errors(instance)]


def certify(*argv: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "certifier", *argv], capture_output=True, text=True, cwd=cwd,
                          timeout=900)


# --- the schema files ------------------------------------------------------------------------------

@pytest.mark.parametrize("name", NAMES)
def test_schema_files_are_draft_2020_12_and_versioned(name):
    s = schema(name)
    jsonschema.Draft202012Validator.check_schema(s)
    assert s["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert s["$id"] == f"urn:certify:schemas:{name}:{SCHEMA_VERSION.split('.')[0]}"
    version = s["$defs"]["schema_version"]
    assert jsonschema.Draft202012Validator(version).is_valid(SCHEMA_VERSION)
    assert not jsonschema.Draft202012Validator(version).is_valid("2.0")


def test_docs_name_the_schema_files():
    doc = (ROOT / "docs" / "output.md").read_text(encoding="utf-8")
    for name in NAMES:
        assert f"certifier/schemas/{name}.schema.json" in doc
        assert (ROOT / "certifier" / "schemas" / f"{name}.schema.json").is_file()
    assert "schema_version" in doc


# --- the result object -----------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["certified", "refuted", "inconclusive", "error"])
def test_snapshot_objects_are_valid(name):
    data = json.loads((SNAPSHOTS / f"{name}.json").read_text(encoding="utf-8"))
    assert data["schema_version"] == SCHEMA_VERSION
    assert errors("result", data) == []


def test_snapshot_array_and_lines_are_valid():
    array = json.loads((SNAPSHOTS / "ci.json").read_text(encoding="utf-8"))
    assert [d["verdict"] for d in array] == ["certified", "refuted", "inconclusive", "error"]
    assert errors("result", array) == []
    lines = (SNAPSHOTS / "ci.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 4
    for line in lines:
        assert errors("result", json.loads(line)) == []


def test_the_result_schema_refuses_what_certify_never_writes():
    good = json.loads((SNAPSHOTS / "certified.json").read_text(encoding="utf-8"))
    error = json.loads((SNAPSHOTS / "error.json").read_text(encoding="utf-8"))
    cases = []
    for edit in (lambda d: d.pop("schema_version"),                     # no version
                 lambda d: d.update(schema_version="2.0"),              # an unknown major version
                 lambda d: d.update(sound=True, verdict="inconclusive", failing_region=None),
                 lambda d: d.update(estimate=False),                    # estimate is `not sound`
                 lambda d: d.update(mu="0.1"),
                 lambda d: d.update(extra=1),                           # a field the schema does not know
                 lambda d: d["rate"].pop("formula"),
                 lambda d: d["witness"].update(steps=-1)):
        bad = copy.deepcopy(good)
        edit(bad)
        cases.append(bad)
    for edit in (lambda d: d.update(mu=0.5), lambda d: d.update(diagnostics=[]),
                 lambda d: d["diagnostics"][0].update(severity="fatal")):
        bad = copy.deepcopy(error)
        edit(bad)
        cases.append(bad)
    for i, bad in enumerate(cases):
        assert errors("result", bad), i


def _run_json(specs: list[str], tmp_path: Path, fmt: str = "json", *flags: str) -> tuple[int, str]:
    proc = certify(*specs, "--format", fmt, "--no-cache", "--quiet", *flags)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.returncode, proc.stdout


def test_the_cheaper_specs_json_and_jsonl_are_valid(tmp_path):
    bad = tmp_path / "bad.rq"
    bad.write_text('spec "broken"\ndata {\n  x = [1, 2\n}\n')
    specs = [f"specs/{name}.rq" for name in CHEAP] + [str(bad), str(tmp_path / "missing.rq")]
    code, out = _run_json(specs, tmp_path)
    assert code == 2                                      # the spec errors win
    data = json.loads(out)
    assert [d["verdict"] for d in data] == ["refuted", "certified", "certified", "certified", "refuted",
                                            "certified", "certified", "error", "error"]
    assert [d["diagnostics"][0]["code"] for d in data[-2:]] == ["E001", "E201"]
    assert {d["sound"] for d in data[4:7]} == {True}
    assert errors("result", data) == []
    for obj in data:                                      # each object alone, as one spec prints it
        assert obj["schema_version"] == SCHEMA_VERSION and errors("result", obj) == [], obj["spec"]
    # the same results as SARIF and JUnit, rebuilt from their objects: valid against the vendored schemas
    ci = _load_test_ci()
    outcomes = [_outcome(d) for d in data]
    log = to_sarif(outcomes, root=ROOT)
    assert ci.sarif_errors(log) == []
    assert [r["ruleId"] for r in log["runs"][0]["results"]] == ["critical-point", "critical-point", "E001", "E201"]
    assert len(log["runs"][0]["properties"]["certified"]) == 5
    assert ci.junit_errors(render_junit(outcomes)) == []
    code, out = _run_json(["specs/linear_underparameterized.rq", str(bad)], tmp_path, "jsonl")
    lines = out.splitlines()
    assert code == 2 and len(lines) == 2
    assert [errors("result", json.loads(line)) for line in lines] == [[], []]


def _load_test_ci():
    import importlib.util

    spec = importlib.util.spec_from_file_location("_certify_test_ci", Path(__file__).with_name("test_ci.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _outcome(obj: dict) -> Outcome:
    if obj["verdict"] == "error":
        return Outcome(obj["spec"], diagnostics=[diagnostic_from_dict(d) for d in obj["diagnostics"]])
    source = (ROOT / obj["spec"]).read_text(encoding="utf-8")
    return Outcome(obj["spec"], result_from_dict(obj), source=source, seconds=obj["timing"]["total"])


def test_a_partial_result_is_valid(tmp_path):
    """--budget cuts the run: an inconclusive result with empty method, region and rate objects."""
    proc = certify("specs/two_layer_tanh.rq", "--format", "json", "--no-cache", "--budget", "1e-6")
    assert proc.returncode == 3
    data = json.loads(proc.stdout)
    assert data["failing_region"]["kind"] == "budget"
    assert errors("result", data) == []


# specs whose run takes longer than the whole slow suite (docs/sound.md gives their runs): their
# JSON is the trajectory route's, which the goal network's spec covers here
LONG = {"specs/practice/wide_tanh_64_points_sound.rq"}


@pytest.mark.slow
def test_every_spec_json_is_valid(tmp_path):
    specs = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "specs").rglob("*.rq") if str(p.relative_to(ROOT)) not in LONG)
    assert LONG <= {str(p.relative_to(ROOT)) for p in (ROOT / "specs").rglob("*.rq")}
    code, out = _run_json(specs, tmp_path, "json", "--allow-python")   # specs/practice has a torch module
    data = json.loads(out)
    assert [d["spec"] for d in data] == specs
    assert "error" not in {d["verdict"] for d in data}
    assert errors("result", data) == []


# --- certificates and certify check --format json ------------------------------------------------------

@pytest.fixture(scope="module")
def certificates(tmp_path_factory):
    """Certificates of a sampled and a sound spec, emitted once."""
    out = tmp_path_factory.mktemp("certs")
    paths = {}
    for kind, spec in (("sampled", "specs/linear_underparameterized.rq"),
                       ("sound", "specs/linear_underparameterized_sound.rq")):
        path = out / f"{kind}.json"
        proc = certify(spec, "--no-cache", "--quiet", "--emit", str(path))
        assert proc.returncode == 0, proc.stderr
        paths[kind] = path
    return paths


@pytest.mark.parametrize("kind", ["sampled", "sound"])
def test_certificates_are_valid(certificates, kind):
    cert = json.loads(certificates[kind].read_text(encoding="utf-8"))
    assert cert["schema_version"] == SCHEMA_VERSION and cert["sound"] is (kind == "sound")
    assert errors("certificate", cert) == []
    bad = copy.deepcopy(cert)
    bad["evidence"][0]["kind"] = "made-up"
    bad["numbers"]["floor"] = -1
    assert len(errors("certificate", bad)) >= 2


@pytest.mark.parametrize("kind", ["sampled", "sound"])
def test_the_trust_boundary_reads_certificates_with_and_without_schema_version(certificates, kind):
    from certifier.certificate import schema as trust

    cert = json.loads(certificates[kind].read_text(encoding="utf-8"))
    trust.validate(cert)
    old = {k: v for k, v in cert.items() if k != "schema_version"}       # written before the schemas
    trust.validate(old)
    with pytest.raises(trust.Malformed, match="schema_version"):
        trust.validate({**cert, "schema_version": 1})


@pytest.mark.parametrize("kind", ["sampled", "sound"])
def test_check_json_valid(certificates, kind):
    proc = certify("check", str(certificates[kind]), "--format", "json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert errors("check", data) == []
    assert (data["check"], data["exit_code"], data["messages"]) == ("valid", 0, [])
    assert data["schema_version"] == SCHEMA_VERSION and data["verdict"] == "certified"
    cert = json.loads(certificates[kind].read_text(encoding="utf-8"))
    claims = data["claims"]
    assert claims["method"] == cert["method"]["name"] and claims["rate"] == cert["rate"]["formula"]
    assert claims["numbers"]["floor"] == cert["numbers"]["floor"]
    assert claims["numbers"]["radius"] == cert["numbers"]["radius"]
    assert claims["numbers"]["L0"] == pytest.approx(cert["numbers"]["L0"], rel=1e-9)   # recomputed
    assert data["evidence_points"] >= 1


def test_check_json_invalid_and_error(certificates, tmp_path):
    cert = json.loads(certificates["sampled"].read_text(encoding="utf-8"))
    cert["numbers"]["floor"] = 0.5                        # not the spec's floor: rejected
    forged = tmp_path / "forged.json"
    forged.write_text(json.dumps(cert))
    proc = certify("check", str(forged), "--format", "json")
    data = json.loads(proc.stdout)
    assert proc.returncode == 1 and data["check"] == "invalid" and data["exit_code"] == 1
    assert any("floor" in m for m in data["messages"])
    assert errors("check", data) == []
    garbage = tmp_path / "garbage.json"
    garbage.write_text("{not json")
    proc = certify("check", str(garbage), "--format", "json")
    data = json.loads(proc.stdout)
    assert proc.returncode == 2 and (data["check"], data["claims"]) == ("error", None)
    assert "is not JSON" in data["messages"][0] and "certify check: error:" in proc.stderr
    assert errors("check", data) == []
    proc = certify("check", str(certificates["sampled"]))              # text stays the default
    assert proc.returncode == 0 and proc.stdout.startswith("certificate valid: ")
