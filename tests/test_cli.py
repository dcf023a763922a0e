"""The certify command: exit codes, error paths and output channels.

Most tests run `main([...])` in-process with run_file replaced by hand-built Results (see
tests/test_report.py), so they need no engine; the syntax-error tests go through the real
pipeline (its parse stage) and one runs `python -m certifier` in a subprocess.
"""
from __future__ import annotations

import importlib.util
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

import certifier
from certifier import cli, pipeline, runs
from certifier.diagnostics import Diagnostic, Span, SpecError
from certifier.progress import DeadlineReporter, NullReporter, RichReporter, make_reporter
from certifier.report.json import field_order
from certifier.report.text import render_plain

ROOT = Path(__file__).resolve().parent.parent


def _load_samples():
    spec = importlib.util.spec_from_file_location("_certify_report_samples",
                                                  Path(__file__).with_name("test_report.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


samples = _load_samples()

BAD_SPEC = 'spec "broken"\ndata {\n  x = [1, 2\n}\n'


def run(capsys, *argv):
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def spec_file(tmp_path):
    path = tmp_path / "ok.rq"
    path.write_text('spec "ok"\n')
    return str(path)


@pytest.fixture
def fake_engine(monkeypatch):
    """Replace run_file: `fake_engine.result = ...` or `fake_engine.exc = ...`; calls are recorded."""

    class Fake:
        result = None
        exc = None
        calls: list = []

        def __call__(self, path, options=None):
            self.calls.append((path, options))
            if self.exc is not None:
                raise self.exc
            return self.result

    fake = Fake()
    fake.calls = []
    monkeypatch.setattr(pipeline, "run_file", fake)
    return fake


# --- reading the spec ----------------------------------------------------------------------------

def test_missing_file(capsys, tmp_path):
    path = str(tmp_path / "x.rq")
    code, out, err = run(capsys, path)
    assert code == 2
    assert err == f"certify: error: cannot read '{path}': No such file or directory\n"
    assert out == ""


def test_missing_file_relative_path(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capsys, "x.rq")
    assert (code, err) == (2, "certify: error: cannot read 'x.rq': No such file or directory\n")


def test_missing_file_json(capsys, tmp_path):
    path = str(tmp_path / "x.rq")
    code, out, err = run(capsys, path, "--format", "json")
    assert code == 2
    data = json.loads(out)
    assert data["verdict"] == "error" and data["sound"] is False and data["estimate"] is True
    assert data["diagnostics"][0]["code"] == "E201"
    assert "No such file or directory" in data["diagnostics"][0]["message"]
    assert "cannot read" in err


def test_directory_without_specs(capsys, tmp_path):
    """A directory means every *.rq below it; none is a spec error (exit 2), not a crash."""
    code, out, err = run(capsys, str(tmp_path))
    assert code == 2
    assert err == f"certify: error: no .rq spec under '{tmp_path}'\n"
    assert "Traceback" not in err


# --- spec errors -----------------------------------------------------------------------------------

def test_syntax_error_text(capsys, tmp_path):
    path = tmp_path / "bad.rq"
    path.write_text(BAD_SPEC)
    code, out, err = run(capsys, str(path))
    assert code == 2
    assert out == ""
    assert "Traceback" not in err
    assert f"{path}:4:1: error[E001]: unexpected '}}'" in err   # brackets survive (no rich markup)
    assert "4 | }" in err
    assert "  | ^" in err


def test_syntax_error_json(capsys, tmp_path):
    path = tmp_path / "bad.rq"
    path.write_text(BAD_SPEC)
    code, out, err = run(capsys, str(path), "--format", "json")
    assert code == 2
    data = json.loads(out)          # one object, nothing else on stdout
    assert list(data) == field_order()
    assert data["verdict"] == "error" and data["sound"] is False and data["estimate"] is True
    assert data["mu"] is None and data["rate"] is None and data["witness"] is None
    (diag,) = data["diagnostics"]
    assert diag["code"] == "E001" and diag["line"] == 4 and diag["column"] == 1
    assert err == ""


def test_invalid_utf8_is_a_spec_error(capsys, tmp_path):
    path = tmp_path / "latin1.rq"
    path.write_bytes('spec "caf\xe9"\n'.encode("latin-1"))
    code, out, err = run(capsys, str(path))
    assert code == 2
    assert "error[E003]" in err and "Traceback" not in err
    assert f"{path}:1:10: error[E003]: the spec file is not valid UTF-8 text (byte 0xe9)" in err


def test_run_file_locates_the_first_byte_that_is_not_utf8(tmp_path):
    # line 3: "# é caf" is 7 characters (8 bytes) before the Latin-1 é: column 8
    path = tmp_path / "mixed.rq"
    path.write_bytes('spec "ok"\n# café\n# é caf'.encode("utf-8") + b"\xe9\n")
    with pytest.raises(SpecError) as info:
        pipeline.run_file(str(path))
    (d,) = info.value.diagnostics
    assert d.code == "E003" and d.path == str(path) and "0xe9" in d.message
    assert (d.span.line, d.span.column) == (3, 8)


def test_max_memory_refuses_at_the_documented_estimate(capsys, tmp_path, monkeypatch):
    """--max-memory against check/memory.py's estimate, computed here from its formula in
    docs/language.md: 8·(3·D + 12·m) + min(8·n·k·m, 1 GiB) + 320 MiB, for D = 8·2 + 8 data entries,
    m = 2 parameters, n = 8 samples, k = 1 output."""
    import numpy as np

    monkeypatch.chdir(tmp_path)
    x = np.random.default_rng(0).standard_normal((8, 2))
    np.savez("d.npz", x=x, y=x @ np.array([1.0, -0.5]))
    Path("tiny.rq").write_text('spec "tiny"\ndata from "d.npz"\nparams { w : [2] = zeros() }\n'
                               'model f(x) = w @ x\nloss least_squares\nmethod sampled(samples=64, seed=0)\n')
    need = 8 * (3 * 24 + 12 * 2) + min(8 * 8 * 1 * 2, 2**30) + 320 * 2**20
    code, out, err = run(capsys, "tiny.rq", "--no-cache", "-q", "--max-memory", str(need - 1))
    assert code == 2 and f"error[E205]: the run would need about 0.3 GiB ({need:,} bytes)" in err
    assert f"more than the limit of 0.3 GiB ({need - 1:,} bytes)" in err
    code, out, err = run(capsys, "tiny.rq", "--no-cache", "-q", "--max-memory", str(need))
    assert code == 0 and "E205" not in err


def test_syntax_error_subprocess(tmp_path):
    path = tmp_path / "bad.rq"
    path.write_text(BAD_SPEC)
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-m", "certifier", str(path)], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=120)
    assert proc.returncode == 2
    assert "error[E001]" in proc.stderr and "^" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""


def test_spec_error_diagnostics_printed_plainly(capsys, spec_file, fake_engine):
    source = Path(spec_file).read_text()
    fake_engine.exc = SpecError([
        Diagnostic("E101", "undefined name [bold]w[/bold]", Span(1, 6, 1, 10), "define it", spec_file),
        Diagnostic("E205", "too many parameters", None, None, spec_file),
    ])
    code, out, err = run(capsys, spec_file)
    assert code == 2 and out == ""
    assert f"{spec_file}:1:6: error[E101]: undefined name [bold]w[/bold]" in err
    assert source.splitlines()[0] in err and "^^^^" in err
    assert "  = hint: define it" in err
    assert f"{spec_file}: error[E205]: too many parameters" in err
    assert "\x1b[" not in err


# --- verdicts and exit codes -----------------------------------------------------------------------

@pytest.mark.parametrize("name,expected", [("certified", 0), ("refuted", 1), ("inconclusive", 3)])
def test_exit_codes_and_text(capsys, spec_file, fake_engine, name, expected):
    fake_engine.result = samples.RESULTS[name]()
    code, out, err = run(capsys, spec_file)
    assert code == expected
    assert f"Verdict  {name} · ESTIMATE (not a proof) · exit {expected}\n" in out
    # plain and stable when captured: no colour codes, 100 columns, no trailing blanks
    assert "\x1b[" not in out
    report, last = out[:-1].rsplit("\n", 1)
    assert all(len(line) <= 100 for line in report.splitlines())
    assert all(line == line.rstrip() for line in out.splitlines())
    # the report, then the verdict once more on the last line (on screen when the run ends)
    assert report + "\n" == render_plain(samples.RESULTS[name](), 100, source=Path(spec_file).read_text()) + "\n"
    assert last.split()[:3] == [spec_file, name, "estimate"] and last.endswith(f"exit {expected}")
    assert err == ""


@pytest.mark.parametrize("name,expected", [("certified", 0), ("refuted", 1), ("inconclusive", 3)])
def test_exit_codes_json(capsys, spec_file, fake_engine, name, expected):
    fake_engine.result = samples.RESULTS[name]()
    code, out, err = run(capsys, spec_file, "--format", "json")
    assert code == expected
    data = json.loads(out)
    assert data["verdict"] == name and data["estimate"] is True
    assert "NaN" not in out and "Infinity" not in out


def test_options_reach_the_engine(capsys, spec_file, fake_engine):
    fake_engine.result = samples.certified_result()
    run(capsys, spec_file, "--max-params", "1000", "--device", "cpu", "--quiet")
    ((path, options),) = fake_engine.calls
    assert path == spec_file
    assert isinstance(options, pipeline.RunOptions)
    assert options.max_params == 1000 and options.device == "cpu"
    # the CLI wraps the reporter to know the running phase (and, with --budget, the deadline)
    assert isinstance(options.reporter, DeadlineReporter) and options.reporter.deadline is None
    assert isinstance(options.reporter.inner, NullReporter)


def test_default_options(capsys, spec_file, fake_engine):
    fake_engine.result = samples.certified_result()
    run(capsys, spec_file)
    ((_, options),) = fake_engine.calls
    assert options.max_params == pipeline.RunOptions().max_params
    assert isinstance(options.reporter.inner, NullReporter)   # stderr is not a terminal here
    assert options.deadline is None and options.allow_python is False


def test_internal_error(capsys, spec_file, fake_engine):
    fake_engine.exc = RuntimeError("boom")
    code, out, err = run(capsys, spec_file)
    assert code == 4
    assert err == ("certify: internal error: RuntimeError: boom\n"
                   "please report this; rerun with --debug for the traceback\n")
    assert "Traceback" not in err


def test_internal_error_debug_reraises(capsys, spec_file, fake_engine):
    fake_engine.exc = RuntimeError("boom")
    with pytest.raises(RuntimeError, match="boom"):
        cli.main([spec_file, "--debug"])


def test_interrupted(capsys, spec_file, fake_engine):
    fake_engine.exc = KeyboardInterrupt()
    code, out, err = run(capsys, spec_file)
    assert code == 130
    assert "interrupted" in err and "Traceback" not in err


# --- usage -----------------------------------------------------------------------------------------

def test_version(capsys):
    code, out, err = run(capsys, "--version")
    assert code == 0
    assert out == f"certify {certifier.__version__}\n"


@pytest.mark.parametrize("argv", [[], ["a.rq", "--format", "xml"], ["a.rq", "--max-params", "0"],
                                  ["a.rq", "--max-params", "many"], ["a.rq", "--device", "tpu"],
                                  ["a.rq", "--bogus"]])
def test_usage_errors_exit_2(capsys, argv):
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert "usage: certify" in err


def test_help(capsys):
    code, out, err = run(capsys, "--help")
    assert code == 0
    assert "exit codes" in out
    # the subcommands, the sound mode, the general rate and every exit code
    assert "certify check CERT" in out and "certify study SPEC..." in out
    assert "method interval(boxes=N)" in out and "theorem" in out
    assert "φ⁻¹(φ(L0) − K·t)" in out
    assert "In this version μ is a sampled estimate" not in out
    for code_text in ("0 certified", "1 refuted", "2 spec or usage error", "3 inconclusive", "4 internal error",
                      "130 interrupted", "143 terminated"):
        assert code_text in out, code_text


def test_help_does_not_import_torch():
    code = "import sys; from certifier import cli; cli.main(['--help']); assert 'torch' not in sys.modules"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert proc.returncode == 0, proc.stderr


# --- progress --------------------------------------------------------------------------------------

def test_null_reporter():
    reporter = NullReporter()
    with reporter.phase("a", total=3) as advance:
        advance()
        advance(2)
        with reporter.phase("b") as inner:
            inner()


def test_make_reporter(capsys):
    assert isinstance(make_reporter(False), NullReporter)
    assert isinstance(make_reporter(True), NullReporter)   # stderr captured: not a terminal


def test_make_reporter_on_a_terminal(monkeypatch):
    class Tty(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setattr(sys, "stderr", Tty())
    assert isinstance(make_reporter(True), RichReporter)
    assert isinstance(make_reporter(False), NullReporter)


def test_rich_reporter_nested_and_sequential_phases():
    buf = io.StringIO()
    reporter = RichReporter(Console(file=buf, force_terminal=True, width=80))
    with reporter.phase("outer", total=2) as advance:
        with reporter.phase("inner spinner") as inner:
            inner()
            inner(5)
        advance(2)
    with reporter.phase("second", total=None) as advance:
        advance()
    with pytest.raises(ValueError):
        with reporter.phase("failing", total=1):
            raise ValueError("x")
    assert reporter._progress is None and reporter._depth == 0
    assert "outer" in buf.getvalue()


# --- --device and --scheduler that cannot be used here: usage errors (exit 2) in every command -----
NO_CUDA = "--device cuda: no CUDA device is available (use --device cpu)\n"


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the error where there is no CUDA device")
@pytest.mark.parametrize("argv, prog", [(["specs/two_layer_floor.rq", "--device", "cuda"], "certify"),
                                        (["check", "cert.json", "--device", "cuda"], "certify check"),
                                        (["study", "specs/two_layer_floor.rq", "--device", "cuda"], "certify study")])
def test_device_cuda_without_a_device_is_a_usage_error_everywhere(capsys, argv, prog):
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == ""
    assert err == f"{prog}: error: {NO_CUDA}"


def test_unreachable_scheduler_is_a_usage_error_before_any_spec_runs(capsys, monkeypatch):
    pytest.importorskip("dask.distributed")
    from certifier.analyse import parallel

    monkeypatch.setattr(parallel, "CONNECT_TIMEOUT", 1)
    ran = []
    monkeypatch.setattr(runs, "run_one", lambda *a, **k: ran.append(a))
    code, out, err = run(capsys, "specs/two_layer_floor.rq", "--scheduler", "tcp://127.0.0.1:1")
    assert code == 2 and out == "" and ran == []
    assert err.startswith("certify: error: cannot reach the dask scheduler at 'tcp://127.0.0.1:1' within 1 s (")


# --- output modes over real specs: one line per spec, reports for the failures --------------------

FAST = {
    "a_refuted.rq": "linear_nonrealizable.rq",         # a critical point above the floor: refuted
    "b_certified.rq": "linear_underparameterized.rq",  # realizable: certified
}


@pytest.fixture
def two_specs(tmp_path, monkeypatch):
    from helpers import spec_text

    monkeypatch.chdir(tmp_path)
    (tmp_path / "specs").mkdir()
    for name, source in FAST.items():
        (tmp_path / "specs" / name).write_text(spec_text(source, **{"samples=2048": "samples=64"}))
    return tmp_path


def _rows(out: str) -> list[list[str]]:
    return [line.split()[:3] for line in out.splitlines() if line.startswith("specs/") and line.split()[0].endswith(".rq")]


def test_several_specs_default_one_line_each_and_reports_of_failures(capsys, two_specs):
    code, out, err = run(capsys, "specs", "--cache-dir", "cache")
    assert code == 1
    assert out.count("Verdict  ") == 1 and "Verdict  refuted" in out      # only the failure's report
    assert "Failure: critical-point" in out
    lines = out.splitlines()
    assert _rows(out) == [["specs/a_refuted.rq", "refuted", "estimate"],
                          ["specs/b_certified.rq", "certified", "estimate"]]
    assert [line.split()[:3] for line in lines[-4:-2]] == _rows(out)
    assert "critical-point" in lines[-4] and lines[-4].endswith("exit 1")
    assert lines[-3].split()[3] == "μ" and lines[-3].endswith("exit 0")
    assert lines[-2] == "estimate: a sampled verdict is an ESTIMATE, not a proof"
    # the run's verdict is the last line
    assert lines[-1] == "2 specs · 1 certified · 1 refuted · exit 1 (the worst: refuted; 4 > 2 > 1 > 3 > 0)"
    # the report of the refuted spec, a blank line, the two lines, the estimate note and the totals
    report = out[:out.index("\nspecs/a_refuted.rq")]
    assert len(lines) == len(report.splitlines()) + 1 + 2 + 1 + 1
    assert err == ""

    # full reports for all: --report full and -v
    for flags in (["--report", "full"], ["-v"]):
        code, full, _ = run(capsys, "specs", "--cache-dir", "cache", *flags)
        assert code == 1 and full.count("Verdict  ") == 2 and "Verdict  certified" in full
        assert _rows(full) == _rows(out) and full.splitlines()[-1] == lines[-1]
    # no report at all: the lines, the note and the totals
    code, none, _ = run(capsys, "specs", "--cache-dir", "cache", "--report", "none")
    assert code == 1 and len(none.splitlines()) == 4 and "Verdict" not in none
    # -q: the failure only, one line
    code, quiet, _ = run(capsys, "specs", "--cache-dir", "cache", "-q")
    assert code == 1 and len(quiet.splitlines()) == 1
    assert quiet.split()[:3] == ["specs/a_refuted.rq", "refuted", "estimate"] and "critical-point" in quiet


def test_quiet_prints_nothing_when_everything_certifies(capsys, two_specs):
    code, out, err = run(capsys, "specs/b_certified.rq", "-q", "--no-cache")
    assert (code, out, err) == (0, "", "")


def test_summary_never_breaks_a_long_path(capsys, two_specs):
    deep = two_specs / "specs" / ("a_rather_long_folder_name_for_a_spec_" * 3)
    deep.mkdir()
    (deep / "b_certified.rq").write_text((two_specs / "specs" / "b_certified.rq").read_text())
    code, out, _ = run(capsys, "specs", "--cache-dir", "cache", "--report", "none")
    path = f"specs/{deep.name}/b_certified.rq"
    assert len(path) > 100
    assert [line for line in out.splitlines() if path in line][0].startswith(path + "  certified")


# --- -o, -, --color, --completion -------------------------------------------------------------------

def test_output_file_is_written_instead_of_stdout(capsys, spec_file, fake_engine, tmp_path):
    fake_engine.result = samples.certified_result()
    code, expected, _ = run(capsys, spec_file)
    target = tmp_path / "report.txt"
    target.write_text("old")
    code2, out, err = run(capsys, spec_file, "-o", str(target))
    assert (code2, out, err) == (code, "", "")
    assert target.read_text(encoding="utf-8") == expected
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ok.rq", "report.txt"]   # no temporary left
    code3, out, _ = run(capsys, spec_file, "--format", "json", "--output-file", str(target))
    assert code3 == 0 and out == "" and json.loads(target.read_text())["verdict"] == "certified"


def test_output_file_in_a_missing_folder_is_a_usage_error(capsys, spec_file, tmp_path):
    code, out, err = run(capsys, spec_file, "-o", str(tmp_path / "no" / "r.txt"))
    assert code == 2 and out == "" and "--output-file: no directory" in err


def test_dash_reads_the_spec_from_stdin_with_data_beside_the_working_directory(capsys, tmp_path, monkeypatch):
    import numpy as np

    monkeypatch.chdir(tmp_path)
    x = np.random.default_rng(0).standard_normal((8, 2))
    np.savez(tmp_path / "d.npz", x=x, y=x @ np.array([1.0, -0.5]))
    spec = ('spec "from stdin"\ndata from "d.npz"\nparams { w : [2] = zeros() }\nmodel f(x) = w @ x\n'
            'loss least_squares\nregion ball(center=init, radius=auto)\nmethod sampled(samples=64, seed=0)\n'
            'certify rate(floor=0, horizon=100)\n')
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(spec.encode())))
    code, out, err = run(capsys, "-", "--format", "json")
    data = json.loads(out)
    assert code == 0 and data["verdict"] == "certified" and data["title"] == "from stdin"
    assert data["spec"] == "<stdin>"


def test_color_never_always_and_the_environment(capsys, spec_file, fake_engine, monkeypatch):
    fake_engine.result = samples.refuted_result()
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    _, plain, _ = run(capsys, spec_file)
    _, never, _ = run(capsys, spec_file, "--color", "never")
    _, always, _ = run(capsys, spec_file, "--color", "always")
    # the same text but for the seconds (the first run of a process reads the installed versions)
    assert "\x1b[" not in plain and re.sub(r"\d+\.\d+ s\b", "_ s", never) == re.sub(r"\d+\.\d+ s\b", "_ s", plain)
    assert "\x1b[" in always and "refuted" in always
    monkeypatch.setenv("FORCE_COLOR", "1")
    assert "\x1b[" in run(capsys, spec_file)[1]
    assert "\x1b[" not in run(capsys, spec_file, "--color", "never")[1]
    monkeypatch.setenv("NO_COLOR", "1")       # NO_COLOR before FORCE_COLOR; the flag before both
    assert "\x1b[" not in run(capsys, spec_file)[1]
    assert "\x1b[" in run(capsys, spec_file, "--color", "always")[1]


def test_completion_scripts(capsys, tmp_path):
    code, bash, _ = run(capsys, "--completion", "bash")
    assert code == 0 and "--output-file" in bash and "--report" in bash and "failures" in bash
    script = tmp_path / "certify.bash"
    script.write_text(bash)
    proc = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    code, zsh, _ = run(capsys, "--completion", "zsh")
    assert code == 0 and zsh.startswith("#compdef certify") and "--fail-on" in zsh
    # the subcommands as first words, then their own options (_certify_dispatch)
    assert 'check\\:"re-verify a certificate' in zsh and 'study\\:"gradient descent' in zsh
    assert "compdef _certify_dispatch -N certify" in zsh and '"--plot[' in zsh
    assert '"*:spec files, directories (every' in zsh          # every SPEC word, not the first only
    if shutil.which("zsh"):
        (tmp_path / "_certify").write_text(zsh)
        proc = subprocess.run(["zsh", "-n", str(tmp_path / "_certify")], capture_output=True, text=True, timeout=30)
        assert proc.returncode == 0, proc.stderr
    code, fish, _ = run(capsys, "--completion", "fish")
    assert code == 0 and "complete -c certify -l format -x -a 'text json jsonl sarif junit github'" in fish
    assert "-a 'check'" in fish and "-a 'study'" in fish


def test_bash_completion_offers_the_subcommands_then_their_options(capsys, tmp_path):
    """The bash script, sourced, asked as bash asks it (COMP_WORDS, COMP_CWORD): check and study
    as the first word beside the files, the subcommand's options after it, files for later SPECs."""
    code, bash, _ = run(capsys, "--completion", "bash")
    assert code == 0 and "_shtab_certify_subparsers=(check study)" in bash
    (tmp_path / "certify.bash").write_text(bash)
    (tmp_path / "stuff.rq").write_text("")
    probe = """source ./certify.bash
ask() { COMP_WORDS=("$@"); COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 )); COMPREPLY=(); _shtab_certify
        echo "${COMPREPLY[*]}"; }
ask certify ''; ask certify st; ask certify check --d; ask certify study --pl; ask certify stuff.rq ''
ask certify stuff.rq --rep
"""
    proc = subprocess.run(["bash", "-c", probe], capture_output=True, text=True, cwd=tmp_path, timeout=30)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert set(lines[0].split()) == {"check", "study", "certify.bash", "stuff.rq"}
    assert set(lines[1].split()) == {"study", "stuff.rq"}
    assert [set(line.split()) for line in lines[2:]] == [{"--device", "--debug"}, {"--plot"},
                                                         {"certify.bash", "stuff.rq"}, {"--report"}]


def test_lines_on_a_narrow_terminal_keep_paths_whole():
    import re as _re

    from certifier.report.outcome import Outcome
    from certifier.report.summary import render_summary

    path = "specs/" + "a_long_folder_name/" * 4 + "spec.rq"
    outcomes = [Outcome(path, samples.certified_result(), seconds=1.0),
                Outcome("specs/b.rq", samples.refuted_result(), seconds=2.0)]
    buf = io.StringIO()
    render_summary(outcomes, Console(file=buf, width=40, force_terminal=True, color_system="standard"))
    text = _re.sub(r"\x1b\[[0-9;]*m", "", buf.getvalue())
    assert "\x1b[" in buf.getvalue()
    lines = text.splitlines()
    assert lines[0].startswith(path + "  certified  estimate  μ 0.125") and lines[0].endswith("exit 0")
    assert lines[1].startswith("specs/b.rq") and lines[1].endswith("exit 1")
    assert lines[-1].startswith("2 specs · 1 certified · 1 refuted · exit 1")


def test_progress_one_line_per_spec_on_a_terminal(capsys, tmp_path, fake_engine, monkeypatch):
    class Tty(io.StringIO):
        def isatty(self):
            return True

    fake_engine.result = samples.certified_result()
    for name in ("a.rq", "b.rq"):
        (tmp_path / name).write_text('spec "ok"\n')
    stderr = Tty()
    monkeypatch.setattr(sys, "stderr", stderr)
    monkeypatch.setattr(runs, "make_reporter", lambda enabled: NullReporter())
    code = cli.main([str(tmp_path), "--no-cache"])
    lines = stderr.getvalue().splitlines()
    assert code == 0 and [line.split()[:3] for line in lines] == [
        ["[1/2]", str(tmp_path / "a.rq"), "certified"], ["[2/2]", str(tmp_path / "b.rq"), "certified"]]
    stderr.seek(0)
    stderr.truncate()
    assert cli.main([str(tmp_path), "--no-cache", "-q"]) == 0 and stderr.getvalue() == ""
