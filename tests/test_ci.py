"""certify in CI: several specs per run, exit-code precedence, --fail-on, the formats json (array),
jsonl, sarif, junit and github over hand-built Results (tests/test_report.py), --explain,
--budget and Ctrl-C. Snapshots live in tests/snapshots/ci.* (CERTIFY_UPDATE_SNAPSHOTS=1 rewrites
them; check the diff by eye)."""
from __future__ import annotations

import importlib.util
import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from certifier import cli, pipeline
from certifier.diagnostics import CODES, Diagnostic, Span
from certifier.explain import EXPLANATIONS, FAILING_KINDS, OTHER_KINDS, lookup
from certifier.progress import BudgetExceeded, DeadlineReporter
from certifier.report.github import command, escape_data, escape_property, render_github
from certifier.report.json import outcomes_json, outcomes_jsonl
from certifier.report.junit import render_junit
from certifier.report.outcome import Outcome, run_exit_code
from certifier.report.sarif import rule_ids, to_sarif
from certifier.report.summary import summary_plain


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"_certify_{name}", Path(__file__).with_name(f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


samples = _load("test_report")
check_snapshot = samples.check_snapshot
FIXTURES = Path(__file__).parent / "fixtures"


def junit_errors(text: str) -> list[str]:
    """The reasons the XML is invalid against the Jenkins xUnit plugin's JUnit schema (junit-10.xsd,
    vendored in tests/fixtures/, the schema pytest's own XML is tested against)."""
    xmlschema = pytest.importorskip("xmlschema")
    schema = xmlschema.XMLSchema(str(FIXTURES / "junit-10.xsd"))
    return [f"{e.path}: {e.reason}" for e in schema.iter_errors(text)]


def sarif_errors(log: dict) -> list[str]:
    """The errors of the log against the OASIS SARIF 2.1.0 JSON schema (tests/fixtures/, draft-04)."""
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads((FIXTURES / "sarif-schema-2.1.0.json").read_text(encoding="utf-8"))
    validator = jsonschema.Draft4Validator(schema)
    return [f"{list(e.absolute_path)}: {e.message[:200]}" for e in validator.iter_errors(log)]

# a spec text whose statements sit at the lines the hand-built results point to (refuted: 17)
SOURCE = "\n".join([
    'spec "sample"',                                  # 1
    "data {",                                         # 2
    "  x = normal(shape=[8, 3], seed=0)",             # 3
    "  y = x[:, 0]",                                  # 4
    "}",                                              # 5
    "params {",                                       # 6
    "  W : [16, 3] = normal(seed=1)",                 # 7
    "  a : [16] = normal(seed=2)",                    # 8
    "}",                                              # 9
    "",                                               # 10
    "model f(x) = a @ tanh(W @ x)   # one sample",    # 11
    "",                                               # 12
    "loss least_squares",                             # 13
    "region ball(center=init, radius=auto)",          # 14
    "",                                               # 15
    "# the method",                                   # 16
    "method sampled(samples=256, seed=0)",            # 17
    "certify rate(floor=0, horizon=100)",             # 18
]) + "\n"

BAD = 'spec "broken"\ndata {\n  x = [1, 2\n}\n'


def outcomes() -> list[Outcome]:
    error = Outcome("specs/bad.rq", diagnostics=[
        Diagnostic("E001", "unexpected '}'; expected ',' or ']'", Span(4, 1, 4, 2), None, "specs/bad.rq")],
        source=BAD, seconds=0.01)
    return [
        Outcome("specs/two_layer_tanh.rq", samples.certified_result(), source=SOURCE, seconds=4.25),
        Outcome("specs/stall.rq", samples.refuted_result(), source=SOURCE, seconds=0.75, cached=True),
        Outcome("specs/linear_underparameterized.rq", samples.inconclusive_result(), source=SOURCE, seconds=1.5),
        error,
    ]


# --- exit codes -----------------------------------------------------------------------------------

def _o(code: int) -> Outcome:
    if code == 4:
        return Outcome("x.rq", internal="RuntimeError: boom")
    if code == 2:
        return Outcome("x.rq", diagnostics=[Diagnostic("E001", "x")])
    name = {0: "certified", 1: "refuted", 3: "inconclusive"}[code]
    return Outcome("x.rq", samples.RESULTS[name]())


@pytest.mark.parametrize("codes,default,refuted_only", [
    ([], 0, 0), ([0], 0, 0), ([0, 3], 3, 0), ([3, 1, 0], 1, 1), ([3, 2], 2, 2), ([1, 2, 3], 2, 2),
    ([0, 1, 4, 2], 4, 4), ([3, 3], 3, 0),
])
def test_exit_code_precedence(codes, default, refuted_only):
    outs = [_o(c) for c in codes]
    assert run_exit_code(outs) == default
    assert run_exit_code(outs, "inconclusive") == default
    assert run_exit_code(outs, "refuted") == refuted_only


# --- the CLI over several specs (the engine replaced by hand-built results) -------------------------

@pytest.fixture
def specs(tmp_path, monkeypatch):
    """specs/a_certified.rq, b_refuted.rq, c_inconclusive.rq, sub/d_bad.rq (a syntax error)
    in tmp_path (the working directory); the engine returns the hand-built result named in the
    file name, and the real parser runs for d_bad."""
    monkeypatch.chdir(tmp_path)
    d = tmp_path / "specs"
    (d / "sub").mkdir(parents=True)
    for name in ("a_certified", "b_refuted", "c_inconclusive"):
        (d / f"{name}.rq").write_text(f'spec "{name}"\n')
    (d / "sub" / "d_bad.rq").write_text(BAD)
    (d / "notes.txt").write_text("not a spec")
    calls = []

    def fake(path, options=None):
        calls.append(path)
        stem = Path(path).stem
        if stem == "d_bad":
            return pipeline.run_text(Path(path).read_text(), path, options)
        r = samples.RESULTS[stem.split("_")[1]]()
        r.spec = path
        return r

    monkeypatch.setattr(pipeline, "run_file", fake)
    return calls


def run(capsys, *argv):
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_directory_runs_every_spec_sorted_and_errors_do_not_stop_the_others(capsys, specs):
    code, out, err = run(capsys, "specs", "--format", "json")
    assert code == 2                                  # the spec error wins: 2 > 1 > 3 > 0
    data = json.loads(out)
    assert [d["spec"] for d in data] == ["specs/a_certified.rq", "specs/b_refuted.rq",
                                         "specs/c_inconclusive.rq", "specs/sub/d_bad.rq"]
    assert [d["verdict"] for d in data] == ["certified", "refuted", "inconclusive", "error"]
    assert data[3]["diagnostics"][0]["code"] == "E001" and data[3]["diagnostics"][0]["line"] == 4
    assert specs == ["specs/a_certified.rq", "specs/b_refuted.rq", "specs/c_inconclusive.rq",
                     "specs/sub/d_bad.rq"]


@pytest.mark.parametrize("argv,code", [
    (["specs/a_certified.rq"], 0), (["specs/c_inconclusive.rq"], 3),
    (["specs/c_inconclusive.rq", "--fail-on", "refuted"], 0),
    (["specs/a_certified.rq", "specs/c_inconclusive.rq"], 3),
    (["specs/a_certified.rq", "specs/c_inconclusive.rq", "--fail-on", "refuted"], 0),
    (["specs/c_inconclusive.rq", "specs/b_refuted.rq", "--fail-on", "refuted"], 1),
    (["specs/*_*.rq"], 1), (["specs/**/*.rq", "--fail-on", "refuted"], 2),
    (["specs/c_inconclusive.rq", "specs/nothing/*.rq"], 2),
])
def test_exit_codes_over_several_specs(capsys, specs, argv, code):
    assert run(capsys, *argv, "--format", "jsonl")[0] == code


def test_one_file_prints_one_object_and_a_glob_an_array(capsys, specs):
    code, out, _ = run(capsys, "specs/a_certified.rq", "--format", "json")
    assert isinstance(json.loads(out), dict) and code == 0
    code, out, _ = run(capsys, "specs/a_*.rq", "--format", "json")
    assert [d["verdict"] for d in json.loads(out)] == ["certified"]


def test_jsonl_one_object_per_line(capsys, specs):
    code, out, _ = run(capsys, "specs", "--format", "jsonl")
    lines = out.splitlines()
    assert len(lines) == 4
    assert [json.loads(line)["verdict"] for line in lines] == ["certified", "refuted", "inconclusive", "error"]


def test_text_summary_after_the_reports(capsys, specs):
    code, out, err = run(capsys, "specs")
    assert code == 2
    assert out.count("Verdict  ") == 2           # the reports of the specs that did not certify
    rows = [line.split()[:2] for line in out.splitlines() if line.startswith("specs/") and line.split()[0].endswith(".rq")]
    assert rows == [["specs/a_certified.rq", "certified"], ["specs/b_refuted.rq", "refuted"],
                    ["specs/c_inconclusive.rq", "inconclusive"], ["specs/sub/d_bad.rq", "error"]]
    assert out.splitlines()[-1].startswith("4 specs · 1 certified · 1 refuted · 1 inconclusive · 1 error · exit 2")
    assert "specs/sub/d_bad.rq:4:1: error[E001]" in err


def test_summary_snapshot():
    check_snapshot("ci.summary.txt", summary_plain(outcomes()))
    text = summary_plain(outcomes(), fail_on="refuted")
    assert "3→0" in text and "--fail-on refuted: inconclusive counts as 0" in text


# --- formats: snapshots and structure ------------------------------------------------------------------

def test_json_array_snapshot():
    text = outcomes_json(outcomes())
    check_snapshot("ci.json", text + "\n")
    assert [d["verdict"] for d in json.loads(text)] == ["certified", "refuted", "inconclusive", "error"]


def test_jsonl_snapshot():
    text = outcomes_jsonl(outcomes())
    check_snapshot("ci.jsonl", text + "\n")
    assert all(json.loads(line) for line in text.splitlines())
    assert "NaN" not in text and "Infinity" not in text


def test_github_snapshot():
    text = render_github(outcomes())
    check_snapshot("ci.github.txt", text + "\n")
    lines = text.splitlines()
    assert lines[0].startswith("::notice file=specs/two_layer_tanh.rq,line=18,col=1,endLine=18,endColumn=35,"
                               "title=certify certified (estimate)::certified (estimate): mu = 0.125")
    assert lines[1].startswith("::error file=specs/stall.rq,line=17,col=1,endLine=17,endColumn=30,"
                               "title=certify refuted (estimate)%3A witness::gradient descent")
    assert lines[3].startswith("::warning file=specs/linear_underparameterized.rq,line=14,")
    assert lines[4] == ("::error file=specs/bad.rq,line=4,col=1,endLine=4,endColumn=2,title=certify E001::"
                        "unexpected '}'; expected ',' or ']'")
    assert "::notice file=specs/linear_underparameterized.rq" in render_github(outcomes(), "refuted")


def test_github_escaping():
    assert escape_data("100% done\r\nnext") == "100%25 done%0D%0Anext"
    assert escape_property("a:b,c%\n") == "a%3Ab%2Cc%25%0A"
    line = command("error", "bad: 50%\nline2", "dir/a,b.rq", Span(3, 2, 3, 9), "t: x, y")
    assert line == "::error file=dir/a%2Cb.rq,line=3,col=2,endLine=3,endColumn=9,title=t%3A x%2C y::bad: 50%25%0Aline2"


def test_junit_snapshot_and_structure():
    text = render_junit(outcomes())
    check_snapshot("ci.junit.xml", text + "\n")
    root = ET.fromstring(text)
    assert root.tag == "testsuites"
    # the schema's <testsuites> has no `skipped`; the suite below carries it
    assert root.attrib == {"name": "certify", "tests": "4", "failures": "2", "errors": "1", "time": "6.510"}
    (suite,) = root
    assert suite.attrib == {"name": "certify", "tests": "4", "failures": "2", "errors": "1", "skipped": "0",
                            "time": "6.510"}
    cases = {c.attrib["name"]: c for c in suite}
    assert list(cases) == [o.spec for o in outcomes()]
    assert cases["specs/two_layer_tanh.rq"].find("failure") is None
    assert cases["specs/two_layer_tanh.rq"].attrib["time"] == "4.250"
    assert cases["specs/stall.rq"].find("failure").attrib["type"] == "refuted/witness"
    assert cases["specs/linear_underparameterized.rq"].find("failure").attrib["type"] == "inconclusive/no-radius"
    assert cases["specs/bad.rq"].find("error").attrib["type"] == "E001"
    assert "4 | }" in cases["specs/bad.rq"].find("error").text
    assert all("file" not in c.attrib for c in suite)     # not in the schema: the name is the spec's path
    assert junit_errors(text) == []


def test_junit_is_valid_against_the_jenkins_schema_in_every_mode():
    for fail_on in ("inconclusive", "refuted"):
        assert junit_errors(render_junit(outcomes(), fail_on)) == [], fail_on
    assert junit_errors(render_junit([])) == []
    # an internal error, and text that XML 1.0 cannot hold (a control character in a message)
    odd = [Outcome("x.rq", internal="RuntimeError: boom\x1b[0m"),
           Outcome("y.rq", diagnostics=[Diagnostic("E001", "bad \x00 byte", None, None, "y.rq")])]
    text = render_junit(odd)
    assert junit_errors(text) == []
    assert "\ufffd" in ET.fromstring(text)[0][1].find("error").attrib["message"]


def test_the_junit_schema_check_notices_errors():
    assert junit_errors('<testsuites skipped="1"><testsuite name="s" tests="1" failures="0" errors="0">'
                        '<testcase name="a" file="a.rq"/></testsuite></testsuites>') != []


def test_junit_inconclusive_is_skipped_with_fail_on_refuted():
    suite = ET.fromstring(render_junit(outcomes(), "refuted"))[0]
    case = [c for c in suite if c.attrib["name"] == "specs/linear_underparameterized.rq"][0]
    assert case.find("failure") is None and case.find("skipped") is not None
    assert (suite.attrib["failures"], suite.attrib["skipped"]) == ("1", "1")


# SARIF 2.1.0: the required properties of the schema's objects that certify writes
# (sarifLog: version, runs; run: tool; tool: driver; toolComponent: name; reportingDescriptor: id;
# result: message; message: text; physicalLocation / artifactLocation; region lines >= 1)
def assert_sarif_structure(log: dict) -> None:
    assert log["version"] == "2.1.0" and isinstance(log["runs"], list) and log["$schema"].endswith("sarif-2.1.0.json")
    for run_ in log["runs"]:
        driver = run_["tool"]["driver"]
        assert isinstance(driver["name"], str) and driver["name"]
        assert re.match(r"^https?://", driver["informationUri"])
        rule_ids_ = [r["id"] for r in driver["rules"]]
        assert len(set(rule_ids_)) == len(rule_ids_)
        for rule in driver["rules"]:
            for key in ("shortDescription", "fullDescription", "help"):
                assert isinstance(rule[key]["text"], str) and rule[key]["text"], (rule["id"], key)
            assert rule["defaultConfiguration"]["level"] in ("none", "note", "warning", "error")
        for res in run_["results"]:
            assert isinstance(res["message"]["text"], str) and res["message"]["text"]
            assert res["level"] in ("none", "note", "warning", "error")
            assert rule_ids_[res["ruleIndex"]] == res["ruleId"]
            (loc,) = res["locations"]
            art = loc["physicalLocation"]["artifactLocation"]
            assert art["uri"] and not art["uri"].startswith("/")
            assert art.get("uriBaseId", "%SRCROOT%") == "%SRCROOT%"
            region = loc["physicalLocation"]["region"]
            assert region["startLine"] >= 1 and region.get("startColumn", 1) >= 1
            assert region.get("endLine", region["startLine"]) >= region["startLine"]
            assert all(isinstance(v, str) for v in res["partialFingerprints"].values())


def test_sarif_snapshot_and_structure():
    log = to_sarif(outcomes(), root="/repo")
    text = json.dumps(log, indent=2, ensure_ascii=False)
    check_snapshot("ci.sarif.json", text + "\n")
    assert_sarif_structure(log)
    assert sarif_errors(log) == []
    sarif_pydantic = pytest.importorskip("sarif_pydantic")
    sarif_pydantic.Sarif.model_validate(log)     # the 2.1.0 object model (types, enums)


def test_sarif_certified_specs_are_run_properties_not_results():
    """GitHub code scanning shows every result as an alert: a certified spec is no problem, so it is
    listed in the run's properties with its rate, and only problems are results."""
    (run_,) = to_sarif(outcomes(), root="/repo")["runs"]
    assert "certified" not in [r["ruleId"] for r in run_["results"]]
    assert {r["level"] for r in run_["results"]} == {"error", "warning"}
    (certified,) = run_["properties"]["certified"]
    assert certified == {"spec": "specs/two_layer_tanh.rq", "uri": "specs/two_layer_tanh.rq",
                         "verdict": "certified", "sound": False, "estimate": True, "mu": 0.125,
                         "rate": samples.certified_result().rate["formula"],
                         "asymptotic": samples.certified_result().rate.get("asymptotic")}
    empty = to_sarif([], root="/repo")
    assert empty["runs"][0]["properties"] == {"certified": []} and sarif_errors(empty) == []


def test_the_sarif_schema_check_notices_errors():
    log = to_sarif(outcomes(), root="/repo")
    log["runs"][0]["results"][0]["level"] = "fatal"
    del log["runs"][0]["tool"]["driver"]["name"]
    assert len(sarif_errors(log)) == 2


def test_sarif_rules_cover_every_code_and_kind():
    assert rule_ids() == list(CODES) + list(FAILING_KINDS) + list(OTHER_KINDS)
    driver = to_sarif([], root="/repo")["runs"][0]["tool"]["driver"]
    rules = {r["id"]: r for r in driver["rules"]}
    assert rules["E103"]["shortDescription"]["text"] == "shape mismatch"
    assert rules["witness"]["fullDescription"]["text"] == EXPLANATIONS["witness"].summary
    assert "Fix:" in rules["critical-point"]["help"]["text"]


def test_sarif_results_levels_locations():
    results = to_sarif(outcomes(), root="/repo")["runs"][0]["results"]
    summary = [(r["ruleId"], r["level"], r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"],
                r["locations"][0]["physicalLocation"]["region"]["startLine"]) for r in results]
    assert summary == [("witness", "error", "specs/stall.rq", 17),
                       ("E109", "warning", "specs/stall.rq", 4),
                       ("no-radius", "warning", "specs/linear_underparameterized.rq", 14),
                       ("E001", "error", "specs/bad.rq", 4)]


def test_sarif_fingerprints_ignore_numbers_and_follow_the_statement():
    def fingerprints(outs):
        return [r["partialFingerprints"]["certify/v1"] for r in to_sarif(outs, root="/repo")["runs"][0]["results"]]

    first = fingerprints(outcomes())
    changed = outcomes()
    changed[1].result.mu = 0.75
    changed[1].result.failing_region.message = "gradient descent from θ0 has L = 0.52 at t = 0.9"
    changed[1].result.failing_region.numbers = {"t": 0.9}
    assert fingerprints(changed) == first                            # numbers do not count
    import hashlib
    assert first[0] == hashlib.sha256("witness\0specs/stall.rq\0method sampled(samples=256, seed=0)".encode()).hexdigest()
    edited = outcomes()
    edited[1].source = SOURCE.replace("samples=256", "samples=512")
    assert fingerprints(edited)[0] != first[0]                       # the statement does


def test_sarif_paths_outside_the_root_are_file_uris(tmp_path):
    o = Outcome(str(tmp_path / "x.rq"), diagnostics=[Diagnostic("E002", "the spec is empty", None, None,
                                                                str(tmp_path / "x.rq"))])
    res = to_sarif([o], root="/somewhere/else")["runs"][0]["results"][0]
    art = res["locations"][0]["physicalLocation"]["artifactLocation"]
    assert art == {"uri": (tmp_path / "x.rq").as_uri()}
    o2 = Outcome("a b/x.rq", diagnostics=[Diagnostic("E002", "empty", None, None, "a b/x.rq")])
    art = to_sarif([o2], root="/r")["runs"][0]["results"][0]["locations"][0]["physicalLocation"]["artifactLocation"]
    assert art == {"uri": "a%20b/x.rq", "uriBaseId": "%SRCROOT%"}


def test_cli_sarif_junit_github(capsys, specs):
    code, out, _ = run(capsys, "specs", "--format", "sarif")
    assert code == 2
    log = json.loads(out)
    assert_sarif_structure(log)
    assert sarif_errors(log) == []
    assert [r["ruleId"] for r in log["runs"][0]["results"]] == ["witness", "E109", "no-radius", "E001"]
    assert [c["spec"] for c in log["runs"][0]["properties"]["certified"]] == ["specs/a_certified.rq"]
    code, out, _ = run(capsys, "specs", "--format", "junit")
    assert ET.fromstring(out)[0].attrib["tests"] == "4"
    assert junit_errors(out) == []
    code, out, _ = run(capsys, "specs", "--format", "github")
    assert [line.split(" ")[0] for line in out.splitlines()] == ["::notice", "::error", "::warning", "::warning", "::error"]


# --- --explain ------------------------------------------------------------------------------------------

def test_every_code_and_kind_is_explained():
    from certifier.explain import MISSING

    assert not MISSING, f"add a paragraph, an example and a fix for {sorted(MISSING)} to certifier/explain.py"
    for ident in list(CODES) + list(FAILING_KINDS) + list(OTHER_KINDS):
        e = EXPLANATIONS.get(ident)
        assert e is not None, ident
        assert len(e.text) > 40 and e.example and e.fix, ident
    assert lookup("e103") is EXPLANATIONS["E103"] and lookup("Critical-Point") is EXPLANATIONS["critical-point"]


def test_cli_explain(capsys):
    code, out, err = run(capsys, "--explain", "E301")
    assert code == 0
    assert out.startswith("E301: python code not allowed\n\n")
    assert "Example:\n    model torch(" in out and "Fix: rerun with certify --allow-python" in out
    code, out, err = run(capsys, "--explain", "no-radius")
    assert code == 0 and out.startswith("no-radius: no self-consistent radius\n")
    code, out, err = run(capsys, "--explain", "E999")
    assert code == 2 and out == "" and "unknown code or kind 'E999'" in err


def test_no_spec_is_a_usage_error(capsys):
    code, out, err = run(capsys)
    assert code == 2 and "give at least one SPEC" in err


# --- --budget and Ctrl-C --------------------------------------------------------------------------------

def _slow_engine(monkeypatch, stop=None):
    def engine(path, options=None):
        with options.reporter.phase("searching ball r=1", total=10**9) as advance:
            for i in range(10**7):
                if stop is not None and i == 50:
                    raise stop
                advance()
        raise AssertionError("the deadline never passed")

    monkeypatch.setattr(pipeline, "run_file", engine)


def test_budget_gives_inconclusive_with_the_phase(capsys, tmp_path, monkeypatch):
    spec = tmp_path / "slow.rq"
    spec.write_text('spec "slow"\nmethod sampled(samples=10)\n')
    _slow_engine(monkeypatch)
    code, out, err = run(capsys, str(spec), "--budget", "0.3", "--format", "json")
    assert code == 3
    data = json.loads(out)
    assert data["verdict"] == "inconclusive" and data["title"] == "slow"
    f = data["failing_region"]
    assert f["kind"] == "budget" and f["message"] == "the budget of 0.3 s ran out during 'searching ball r=1'"
    assert f["span"] == {"line": 2, "column": 1, "end_line": 2, "end_column": 27}
    assert 0.1 <= f["numbers"]["seconds"] <= 0.3 + 1   # the budget counts from main(), a little before the spec


def test_budget_on_the_real_engine(capsys, tmp_path):
    spec = tmp_path / "s.rq"
    spec.write_text("data {\n  x = normal(shape=[8, 2], seed=0)\n  y = x[:, 0]\n}\nparams { w : [2] = zeros() }\n"
                    "model f(x) = w @ x\nloss least_squares\n")
    code, out, err = run(capsys, str(spec), "--budget", "1e-6", "--no-cache")
    assert code == 3
    assert "Failure: budget" in out and "the budget of 1e-06 s ran out" in out


def test_deadline_reporter():
    import time

    rep = DeadlineReporter(None, time.monotonic() + 3600)
    with rep.phase("a", total=2) as advance:
        advance()
        assert rep.current == "a"
    assert rep.completed == ["a"] and rep.current is None
    rep = DeadlineReporter(None, time.monotonic() - 1, budget=2.0)
    with pytest.raises(BudgetExceeded) as info:
        with rep.phase("b") as advance:
            pass
    assert info.value.phase is None and info.value.budget == 2.0


def test_ctrl_c_prints_the_partial_report_and_exits_130(capsys, specs, monkeypatch):
    done = pipeline.run_file

    def engine(path, options=None):
        if "c_inconclusive" in path:
            with options.reporter.phase("witness descent", total=10) as advance:
                advance()
                raise KeyboardInterrupt
        return done(path, options)

    monkeypatch.setattr(pipeline, "run_file", engine)
    code, out, err = run(capsys, "specs", "--format", "json")
    assert code == 130
    assert "certify: interrupted" in err
    data = json.loads(out)
    assert [d["verdict"] for d in data] == ["certified", "refuted", "inconclusive"]
    assert data[2]["failing_region"]["kind"] == "interrupted"
    assert data[2]["failing_region"]["message"].startswith("interrupted during 'witness descent' after ")
