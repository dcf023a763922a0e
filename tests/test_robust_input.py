"""No crash on any input (issue 20): every bad spec ends in located diagnostics (exit 2), never a
traceback or exit 4. Subprocess tests for the inputs that used to crash, in-process tests of the
limits, and a grammar-aware fuzz of the specs/ examples through parse and check.
CERTIFY_FUZZ_EXAMPLES=N runs the fuzz longer (200 examples in-process and 100 through the CLI by
default; 2000 through the CLI, not derandomized, with `pytest -m slow`)."""
from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from certifier.analyse.witness import step_count
from certifier.check import check
from certifier.check.shapes import count, show
from certifier.diagnostics import CODES, SpecError, render_text
from certifier.parse import parse
from certifier.parse.parser import MAX_DEPTH, MAX_DIGITS

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "specs"
N2 = (SPECS / "single_neuron_n2.rq").read_text()       # model on line 16, method 20, certify 21
LINEAR = (SPECS / "linear_nonrealizable.rq").read_text()


def _with(text: str, old: str, new: str) -> str:
    assert old in text, old
    return text.replace(old, new)


def _cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "certifier", *args, "--no-cache"], capture_output=True,
                          text=True, env=env, cwd=cwd, timeout=300)


# --- the measured crashes, through the CLI ----------------------------------------------------------

POW_CHAIN = "sum(relu(W @ x)) + " + " ** ".join(["x"] * 1000)
CRASHES = {   # name -> (spec text, expected `name.rq:line:col: error[CODE]: message` after the name)
    "pow_chain": (_with(N2, "sum(relu(W @ x))", POW_CHAIN),
                  f":16:{14 + len('sum(relu(W @ x)) + ') + 5 * (MAX_DEPTH - 1)}: error[E109]: "
                  f"this expression is nested deeper than {MAX_DEPTH} levels"),
    "deep_parens": (_with(N2, "sum(relu(W @ x))", "(" * 3000 + "x ** " * 1000 + "x" + ")" * 3000),
                    f":16:{14 + 3000 + 5 * MAX_DEPTH}: error[E109]: this expression is nested deeper "
                    f"than {MAX_DEPTH} levels"),
    "long_integer": (_with(N2, "seed=2)", "seed=" + "9" * 5000 + ")"),
                     f":13:59: error[E109]: this integer has 5000 digits, more than {MAX_DIGITS}"),
    "long_dimension": (_with(N2, "[2, 5]", "[" + "9" * 4300 + ", 5]"),
                       f":13:8: error[E109]: this integer has 4300 digits, more than {MAX_DIGITS}"),
    "many_dimensions": (_with(N2, "[2, 5]", "[" + ", ".join(["1e300"] * 16) + "]"),
                        ":12:1: error[E205]: the parameters have at least 10^4800 entries, more than "
                        "the limit of 100,000,000"),
    "huge_horizon": (_with(N2, "horizon=1e4", "horizon=1e308"),
                     ":21:34: error[E109]: the horizon must be at most 1e+15, got 1e+308"),
    "float_seed": (_with(N2, "seed=0)", "seed=1e30)"),
                   ":20:35: error[E109]: the seed must be at most 9223372036854775807, got ~1e30"),
    "power_seed": (_with(N2, "seed=0)", "seed=2**64)"),
                   ":20:35: error[E109]: the seed must be at most 9223372036854775807, got "
                   "18446744073709551616"),
    "generator_seed": (_with(N2, "seed=2)", "seed=2**64)"),
                       ":13:59: error[E109]: the seed must be at most 9223372036854775807, got "
                       "18446744073709551616"),
}


@pytest.fixture(scope="module")
def crash_run(tmp_path_factory):
    """One CLI run over every crash spec (one interpreter start instead of one per case)."""
    folder = tmp_path_factory.mktemp("crashes")
    for name, (text, _) in CRASHES.items():
        (folder / f"{name}.rq").write_text(text)
    return _cli([str(folder)], folder)


def test_crash_specs_exit_2_without_a_traceback(crash_run):
    assert crash_run.returncode == 2, crash_run.stderr[-2000:]
    assert "Traceback" not in crash_run.stderr
    assert "internal error" not in crash_run.stderr


@pytest.mark.parametrize("name", sorted(CRASHES))
def test_crash_spec_is_a_located_diagnostic(crash_run, name):
    expected = CRASHES[name][1]
    lines = [line for line in crash_run.stderr.splitlines() if re.search(rf"\b{name}\.rq:\d+:\d+: error", line)]
    assert lines, crash_run.stderr[-2000:]
    assert lines[0].endswith(f"{name}.rq{expected}"), lines[0]


EXIT_NETS = '''\
import sys
import torch


class Lin(torch.nn.Module):
    def __init__(self, exit_init=False, after=None):
        super().__init__()
        if exit_init:
            sys.exit(0)
        self.fc = torch.nn.Linear(2, 1, bias=False)
        self.after, self.calls = after, 0

    def forward(self, x):
        self.calls += 1
        if self.after is not None and self.calls > self.after:
            sys.exit(0)
        return self.fc(x)


def at_init():
    return Lin(exit_init=True)


def at_forward():
    return Lin(after=0)


def later():               # the check's forward pass succeeds; the analysis's second call exits
    return Lin(after=1)
'''

EXITS = {   # spec name -> (target, message)
    "exit_import": ("robust_exit_import:Net", "importing 'robust_exit_import' called sys.exit(0)"),
    "exit_init": ("robust_exit_nets:at_init", "building 'robust_exit_nets:at_init' called sys.exit(0)"),
    "exit_forward": ("robust_exit_nets:at_forward",
                     "the forward pass of 'robust_exit_nets:at_forward' called sys.exit(0)"),
    "exit_later": ("robust_exit_nets:later", "'robust_exit_nets:later' called sys.exit(0) during the analysis"),
}


def _exit_folder(folder: Path) -> None:
    (folder / "robust_exit_import.py").write_text("import sys\nsys.exit(0)\n")
    (folder / "robust_exit_nets.py").write_text(EXIT_NETS)
    x = np.random.default_rng(0).standard_normal((8, 2))
    np.savez(folder / "d.npz", x=x, y=x @ np.array([1.0, -0.5]))
    for name, (target, _) in EXITS.items():
        (folder / f"{name}.rq").write_text(
            f'spec "{name}"\ndata from "d.npz"\nmodel torch("{target}")\nloss least_squares\n'
            "method sampled(samples=64, seed=0)\ncertify rate(floor=0, horizon=100)\n")


def test_torch_module_calling_sys_exit_is_E302(tmp_path):
    _exit_folder(tmp_path)
    proc = _cli([str(tmp_path), "--allow-python"], tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr
    for name, (target, message) in EXITS.items():
        assert f"{name}.rq:3:13: error[E302]: {message}\n" in proc.stderr, proc.stderr[-3000:]
    assert proc.stderr.count("= hint: certify imports the module and calls it: it must not call sys.exit()") == 4


def test_sys_exit_in_process(tmp_path, monkeypatch):
    """check() turns the module's SystemExit into E302 at the target (module names unique to this test)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "robust_exit_inproc.py").write_text(EXIT_NETS)
    x = np.random.default_rng(0).standard_normal((8, 2))
    np.savez(tmp_path / "d.npz", x=x, y=x @ np.array([1.0, -0.5]))
    source = 'data from "d.npz"\nmodel torch("robust_exit_inproc:at_forward")\nloss least_squares\n'
    with pytest.raises(SpecError) as info:
        check(parse(source, str(tmp_path / "s.rq")), allow_python=True)
    (d,) = info.value.diagnostics
    assert (d.code, d.span.line, d.span.column) == ("E302", 2, 13)
    assert d.message == "the forward pass of 'robust_exit_inproc:at_forward' called sys.exit(0)"
    sys.modules.pop("robust_exit_inproc", None)


# --- the limits, in-process -------------------------------------------------------------------------

def _diagnostics(source: str, **kw) -> list:
    with pytest.raises(SpecError) as info:
        check(parse(source, "spec.rq"), **kw)
    return info.value.diagnostics


@pytest.mark.parametrize("depth, ok", [(MAX_DEPTH, True), (MAX_DEPTH + 1, False)])
def test_depth_limit_is_exact(depth, ok):
    # abs(...(w @ x)...): depth - 2 calls around matmul(w, x), 2 levels
    body = "abs(" * (depth - 2) + "w @ x" + ")" * (depth - 2)
    source = _with(LINEAR, "model f(x) = w @ x", "model f(x) = " + body)
    if ok:
        check(parse(source, "spec.rq"))
        return
    (d,) = _diagnostics(source)
    assert d.code == "E109" and d.message == f"this expression is nested deeper than {MAX_DEPTH} levels"
    assert d.hint.startswith(f"at most {MAX_DEPTH} levels (parentheses do not count)")
    assert (d.span.line, d.span.column) == (16, 14 + 4 * (depth - 2) + 4)   # at x, level 101


def test_deep_parentheses_alone_are_fine():
    source = _with(LINEAR, "model f(x) = w @ x", "model f(x) = " + "(" * 20000 + "w @ x" + ")" * 20000)
    check(parse(source, "spec.rq"))


def test_integer_digits_limit():
    ok = _with(LINEAR, "samples=2048, seed=0)", "samples=2048, seed=" + "0" * (MAX_DIGITS - 1) + "7)")
    assert check(parse(ok, "spec.rq")).method.options["seed"] == 7
    with pytest.raises(SpecError) as info:
        parse(_with(LINEAR, "samples=2048, seed=0)", "samples=2048, seed=" + "1" * (MAX_DIGITS + 1) + ")"),
              "spec.rq")
    (d,) = info.value.diagnostics
    assert d.code == "E109" and d.message == f"this integer has {MAX_DIGITS + 1} digits, more than {MAX_DIGITS}"
    assert (d.span.line, d.span.column, d.span.end_column - d.span.column) == (20, 35, MAX_DIGITS + 1)
    assert "scientific notation" in d.hint


@pytest.mark.parametrize("option, ok", [("seed=9223372036854775807", True), ("seed=2**63", False),
                                        ("seed=-1", False)])
def test_seed_range(option, ok):
    source = _with(LINEAR, "samples=2048, seed=0)", "samples=2048, " + option + ")")
    if ok:
        assert check(parse(source, "spec.rq")).method.options["seed"] == 2**63 - 1
    else:
        (d,) = _diagnostics(source)
        assert d.code == "E109" and (d.span.line, d.span.column) == (20, 35)


@pytest.mark.parametrize("value, ok", [("1e15", True), ("1.5e15", False), ("1e308", False), ("1e400", False)])
def test_horizon_range(value, ok):
    source = _with(LINEAR, "horizon=1e3", f"horizon={value}")
    if ok:
        assert check(parse(source, "spec.rq")).claim.options["horizon"] == 1e15
    else:
        (d,) = _diagnostics(source)
        assert d.code == "E109" and (d.span.line, d.span.column) == (21, 31)


def test_counts_and_shapes_of_any_size_print():
    assert count(123456789) == "123,456,789"
    assert count(10**5000) == "at least 10^5000"          # str() refuses over 4300 digits
    assert show((3, 10**300)) == "[3, ~1e300]"


def test_step_count_never_overflows():
    assert step_count(1e308, 1e-300, 1000) == 1000
    assert step_count(math.inf, 1.0, 5) == 5
    assert step_count(10.0, 0.3, 1000) == 34


# --- the fuzz ---------------------------------------------------------------------------------------

EXAMPLES = sorted(SPECS.rglob("*.rq"))
TOKEN = re.compile(r'"(?:[^"\\\n]|\\.)*"|#[^\n]*|\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?'
                   r"|[A-Za-z_]\w*|\*\*|\n|[ \t]+|.")
PUNCTUATION = list("()[]{},:=+-*/@#\"'.;\\") + ["**", "\n", "\t", "\x0c", "é"]
# characters that some line-splitting rules (str.splitlines) break at and lark does not, a NUL,
# a byte-order mark, tabs, carriage returns
CHARACTERS = ["\x0c", "\u2028", "\u2029", "\r", "\r\n", "\x00", "\t", "\x0b", "\x1c", "\x85", "\ufeff", "é"]
LONG = ["x + " * 1500 + "x", " " * 5000, "# " + "c" * 5000 + "\n", "n" * 5000, "(" * 300, "\t" * 200]
NUMBERS = ["0", "-1", "1e400", "1e-400", "9" * 5000, "9" * 300, "2**64", "2**63", "1e308", "1e15", "1e16",
           "0.5", "1e30", "-0", "10**10", "4300", "nan", "inf"]
KEYWORDS = ["spec", "data", "params", "model", "target", "loss", "region", "method", "desingularizer",
            "certify", "from", "auto", "init", "torch", "gaussian"]


def _tokens(text: str) -> list[str]:
    return TOKEN.findall(text)


def _mutate(draw, tokens: list[str]) -> list[str]:
    tokens = list(tokens) or [""]    # a truncation may leave nothing
    kind = draw(st.sampled_from(["swap", "delete", "duplicate", "punct", "number", "name",
                                 "line_delete", "line_duplicate", "nest", "character", "long", "truncate",
                                 "crlf", "tabs"]))
    solid = [i for i, t in enumerate(tokens) if not t.isspace()] or [0]
    i = draw(st.sampled_from(solid))
    if kind == "swap":
        j = draw(st.sampled_from(solid))
        tokens[i], tokens[j] = tokens[j], tokens[i]
    elif kind == "delete":
        del tokens[i]
    elif kind == "duplicate":
        tokens.insert(i, tokens[i])
    elif kind == "punct":
        tokens.insert(i, draw(st.sampled_from(PUNCTUATION)))
    elif kind == "number":
        numbers = [k for k, t in enumerate(tokens) if t[:1].isdigit()] or solid
        tokens[draw(st.sampled_from(numbers))] = draw(st.sampled_from(NUMBERS))
    elif kind == "name":
        names = sorted({t for t in tokens if t[:1].isalpha() or t[:1] == "_"}) + KEYWORDS
        tokens[i] = draw(st.sampled_from(names))
    elif kind in ("character", "long", "truncate"):    # at any character, inside tokens too
        text = "".join(tokens)
        k = draw(st.integers(0, len(text)))
        if kind == "truncate":
            text = text[:k]
        else:
            text = text[:k] + draw(st.sampled_from(CHARACTERS if kind == "character" else LONG)) + text[k:]
        tokens = _tokens(text)
    elif kind == "crlf":
        tokens = _tokens("".join(tokens).replace("\n", "\r\n"))
    elif kind == "tabs":
        tokens = _tokens("".join(tokens).replace("  ", "\t"))
    elif kind in ("line_delete", "line_duplicate"):
        lines = "".join(tokens).split("\n")
        k = draw(st.integers(0, len(lines) - 1))
        if kind == "line_delete":
            del lines[k]
        else:
            lines.insert(k, lines[k])
        tokens = _tokens("\n".join(lines))
    else:   # nest: parentheses (free), a ** chain or nested calls around a token (may pass the depth limit)
        n = draw(st.sampled_from([3, MAX_DEPTH - 2, MAX_DEPTH + 1, 1000]))
        form = draw(st.sampled_from(["paren", "pow", "call", "neg"]))
        t = tokens[i]
        tokens[i] = {"paren": "(" * n + t + ")" * n, "pow": f"{t} ** " + " ** ".join(["2"] * n),
                     "call": "abs(" * n + t + ")" * n, "neg": "- " * n + t}[form]
    return tokens


@st.composite
def mutated_specs(draw):
    path = draw(st.sampled_from(EXAMPLES))
    tokens = _tokens(path.read_text(encoding="utf-8"))
    for _ in range(draw(st.integers(1, 4))):
        tokens = _mutate(draw, tokens)
    return path, "".join(tokens)


def _assert_contract(path: Path, source: str) -> None:
    """parse and check in-process: accepted, or diagnostics that keep the contract (a known code, a
    location within the file as lark counts lines, a hint), and that render."""
    try:
        check(parse(source, str(path)), max_params=10**5, max_elements=10**6)
    except SpecError as exc:
        assert exc.diagnostics
        for d in exc.diagnostics:
            render_text(d, source)
        problems = contract_violations(path, source, 2, "", [d.to_dict() for d in exc.diagnostics],
                                       text_output=False)
        assert not problems, (problems, source[:3000])


class Accepted(BaseException):
    """Raised in place of the analysis: the front end accepted the spec (a BaseException, so that
    the CLI's handler of internal errors does not turn it into exit 4)."""


HEADER = re.compile(r"^(?P<path>.+?)(?::(?P<line>\d+):(?P<column>\d+))?: error\[(?P<code>[^\]]+)\]: ", re.M)


def front_end(path: Path, monkeypatch, capsys) -> tuple[int | None, str, list[dict]]:
    """The CLI on one spec file, in-process, with the analysis cut off: (exit code or None when the
    spec was accepted, the text output, the JSON diagnostics)."""
    from certifier import cli, pipeline

    def accept(checked, options):
        raise Accepted

    monkeypatch.setattr(pipeline, "certify_checked", accept)
    capsys.readouterr()
    try:
        rc = cli.main([str(path), "--no-cache", "--quiet", "--max-params", "100000"])
    except Accepted:
        return None, "", []
    out = capsys.readouterr()
    text = out.out + out.err
    json_rc = cli.main([str(path), "--no-cache", "--quiet", "--max-params", "100000", "--format", "json"])
    report = json.loads(capsys.readouterr().out)
    assert json_rc == rc
    return rc, text, report["diagnostics"]


def contract_violations(path: Path, source: str, rc: int | None, text: str, diagnostics: list[dict],
                        text_output: bool = True) -> list[str]:
    """What breaks the diagnostic contract: accepted, or exit 2 with diagnostics that each have a known
    code, a location within the file (lines split at \\n only, as lark counts them) and a hint,
    and no traceback anywhere."""
    if rc is None:
        return []
    problems = []
    if rc != 2:
        problems.append(f"exit {rc}")
    if "Traceback" in text or "internal error" in text:
        problems.append("a traceback or an internal error in the output")
    if not diagnostics:
        problems.append("no diagnostics")
    lines = [line.removesuffix("\r") for line in source.split("\n")]
    for d in diagnostics:
        where = f"{d['code']} {d['message']!r} at {d['line']}:{d['column']}"
        if d["code"] not in CODES:
            problems.append(f"unknown code: {where}")
        if not d.get("hint"):
            problems.append(f"no hint: {where}")
        if d["path"] != str(path):      # a location in a data file the spec names
            continue
        if d["line"] is None:
            problems.append(f"no location: {where}")
        elif not 1 <= d["line"] <= len(lines):
            problems.append(f"line past the file's {len(lines)}: {where}")
        elif not 1 <= d["column"] <= len(lines[d["line"] - 1]) + 1:
            problems.append(f"column past its line's {len(lines[d['line'] - 1])}: {where}")
    if not text_output:
        return problems
    headers = [m for m in HEADER.finditer(text) if m.group("path") == str(path)]
    if len(headers) != len(diagnostics):
        problems.append(f"{len(headers)} text diagnostics, {len(diagnostics)} in JSON")
    for m, d in zip(headers, diagnostics):
        if m.group("line") != (None if d["line"] is None else str(d["line"])):
            problems.append(f"text and JSON locations differ: {m.group(0)!r} against {d['line']}:{d['column']}")
        if m.group("line") is None or not 1 <= int(m.group("line")) <= len(lines):
            continue
        # the excerpt is the line named (shown whole when short and printable)
        number = m.group("line")
        shown = re.compile(rf"^{number} \| (.*)$", re.M).search(text, m.end())
        line = lines[int(number) - 1].expandtabs(1)
        if shown is None:
            problems.append(f"no excerpt of line {number}")
        elif len(line) <= 100 and line.isprintable() and shown.group(1) != line:
            problems.append(f"the excerpt shows another line than {number}: {shown.group(1)[:60]!r}")
    return problems


FUZZ_EXAMPLES = int(os.environ.get("CERTIFY_FUZZ_EXAMPLES", "200"))


@settings(max_examples=FUZZ_EXAMPLES, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(mutated_specs())
def test_fuzzed_specs_parse_and_check_or_give_located_diagnostics(case):
    path, source = case
    _assert_contract(path, source)


def _cli_fuzz(case, folder: Path, monkeypatch, capsys) -> None:
    original, source = case
    path = folder / original.name
    path.write_text(source, encoding="utf-8", newline="")
    rc, text, diagnostics = front_end(path, monkeypatch, capsys)
    problems = contract_violations(path, source, rc, text, diagnostics)
    assert not problems, (problems, source[:3000])


CLI_SETTINGS = dict(deadline=None, derandomize=True, suppress_health_check=[
    HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture])


@settings(max_examples=max(1, FUZZ_EXAMPLES // 2), **CLI_SETTINGS)
@given(case=mutated_specs())
def test_fuzzed_specs_through_the_cli_keep_the_diagnostic_contract(case, tmp_path, monkeypatch, capsys):
    """`certify SPEC` in-process, the analysis cut off: accepted, or exit 2 with diagnostics that each
    have a known code, a location within the file and a hint, in text and JSON, and no traceback."""
    _cli_fuzz(case, tmp_path, monkeypatch, capsys)


@pytest.mark.slow
@settings(max_examples=max(2000, FUZZ_EXAMPLES), **{**CLI_SETTINGS, "derandomize": False})
@given(case=mutated_specs())
def test_fuzzed_specs_through_the_cli_keep_the_diagnostic_contract_long(case, tmp_path, monkeypatch, capsys):
    _cli_fuzz(case, tmp_path, monkeypatch, capsys)


def test_every_example_passes_the_contract_unchanged():
    for path in EXAMPLES:
        _assert_contract(path, path.read_text(encoding="utf-8"))
