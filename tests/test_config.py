"""Configuration files: [tool.certify] in pyproject.toml, certify.toml, the user's own file; which
wins, what a project may not set (allow-python), and errors that name file:line (exit 2).

The runs replace run_file (no engine): what matters is which options reach it."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from certifier import cli, pipeline
from certifier.config import ConfigError, find_project_config, load_config

OK_SPEC = 'spec "ok"\n'


@pytest.fixture(autouse=True)
def no_user_config(tmp_path, monkeypatch):
    """No user config but the one a test writes; the project is the test's folder."""
    monkeypatch.delenv("CERTIFY_CONFIG", raising=False)
    monkeypatch.delenv("CERTIFY_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    project = tmp_path / "project"
    (project / "sub").mkdir(parents=True)
    (project / "sub" / "ok.rq").write_text(OK_SPEC)
    monkeypatch.chdir(project / "sub")
    return project


@pytest.fixture
def engine(monkeypatch):
    import importlib.util

    spec = importlib.util.spec_from_file_location("_certify_report_samples", Path(__file__).with_name("test_report.py"))
    samples = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(samples)
    calls = []

    def fake(path, options=None):
        calls.append(options)
        return samples.certified_result()

    monkeypatch.setattr(pipeline, "run_file", fake)
    return calls


def run(capsys, *argv):
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_no_file_no_defaults(no_user_config):
    assert find_project_config() is None or find_project_config()[0].parent not in (
        no_user_config, no_user_config / "sub")
    assert load_config(no_user_config / "sub").values == {}


def test_pyproject_table_found_walking_up(no_user_config, capsys, engine):
    (no_user_config / "pyproject.toml").write_text(
        '[project]\nname = "x"\n\n[tool.certify]\nformat = "json"\nmax-params = 1000\nworkers = 1\n'
        'fail-on = "refuted"\nbudget = 30\nthreads = 2\ncache = false\n')
    config = load_config()
    assert config.values == {"format": "json", "max_params": 1000, "workers": 1, "fail_on": "refuted",
                             "budget": 30.0, "threads": 2, "cache": False}
    assert config.files == [str(no_user_config / "pyproject.toml")]
    code, out, err = run(capsys, "ok.rq")
    assert code == 0 and json.loads(out)["verdict"] == "certified"
    (options,) = engine
    assert options.max_params == 1000 and options.threads == 2
    assert not (no_user_config / "sub" / ".certify_cache").exists()      # cache = false


def test_precedence_certify_toml_over_pyproject_nearest_first_flags_last(no_user_config, capsys, engine):
    (no_user_config / "pyproject.toml").write_text('[tool.certify]\nformat = "json"\nmax-params = 1000\n')
    (no_user_config / "certify.toml").write_text('format = "jsonl"\n')
    # in one folder certify.toml wins and the pyproject is not read (no merging, as ruff does)
    assert load_config().values == {"format": "jsonl"}
    # the nearest folder wins
    (no_user_config / "sub" / "pyproject.toml").write_text('[tool.certify]\nmax-params = 7\n')
    assert load_config().values == {"max_params": 7}
    # a pyproject without [tool.certify] is passed over
    (no_user_config / "sub" / "pyproject.toml").write_text('[project]\nname = "x"\n')
    assert load_config().values == {"format": "jsonl"}
    # the command line overrides the file
    code, out, _ = run(capsys, "ok.rq")
    assert json.loads(out.splitlines()[0])["verdict"] == "certified"
    code, out, _ = run(capsys, "ok.rq", "--format", "text")
    assert "Verdict  certified" in out
    # --isolated reads no file
    code, out, _ = run(capsys, "ok.rq", "--isolated")
    assert "Verdict  certified" in out


def test_user_config_under_the_project(no_user_config, tmp_path, monkeypatch, capsys, engine):
    user = tmp_path / "xdg" / "certify" / "config.toml"
    user.parent.mkdir(parents=True)
    user.write_text('format = "json"\nmax-params = 50\nallow-python = true\n')
    assert load_config().values == {"format": "json", "max_params": 50, "allow_python": True}
    (no_user_config / "certify.toml").write_text('max-params = 60\n')
    assert load_config().values == {"format": "json", "max_params": 60, "allow_python": True}
    code, out, err = run(capsys, "ok.rq")
    assert code == 0 and json.loads(out)["verdict"] == "certified"
    (options,) = engine
    assert options.max_params == 60 and options.allow_python is True
    # $CERTIFY_CONFIG names the user's file explicitly
    other = tmp_path / "mine.toml"
    other.write_text('report = "none"\n')
    monkeypatch.setenv("CERTIFY_CONFIG", str(other))
    assert load_config().values == {"report": "none", "max_params": 60}


@pytest.mark.parametrize("name,text,line", [
    ("certify.toml", "format = 'json'\nallow-python = true\n", 2),
    ("pyproject.toml", "[tool.black]\nx = 1\n\n[tool.certify]\nallow-python = true\n", 5),
])
def test_a_project_cannot_allow_python(no_user_config, capsys, engine, name, text, line):
    path = no_user_config / name
    path.write_text(text)
    with pytest.raises(ConfigError):
        load_config()
    code, out, err = run(capsys, "ok.rq")
    assert code == 2 and out == "" and engine == []
    assert err.startswith(f"certify: error: {path}:{line}: 'allow-python' is not allowed in a project's "
                          f"configuration (a repository must not turn on code execution)")
    assert "--allow-python" in err and "~/.config/certify/config.toml" in err


def test_unknown_key_names_file_and_line(no_user_config, capsys, engine):
    path = no_user_config / "pyproject.toml"
    path.write_text('[tool.other]\ncolour = 1\n\n[tool.certify]\nformat = "json"\n\n"colour" = "never"\n')
    code, out, err = run(capsys, "ok.rq")
    assert code == 2 and out == "" and engine == []
    assert err.startswith(f"certify: error: {path}:7: unknown key 'colour' (known: format, fail-on, ")


@pytest.mark.parametrize("text,message", [
    ("workers = 0\n", "1: 'workers': expected a positive integer, got 0"),
    ("format = 'xml'\n", "1: 'format': expected one of text, json, jsonl, sarif, junit, github, got 'xml'"),
    ("\nbudget = -1\n", "2: 'budget': expected a positive number of seconds, got -1"),
    ("cache = 'no'\n", "1: 'cache': expected true or false, got 'no'"),
    ("format = \n", "invalid TOML"),
])
def test_bad_values_are_usage_errors(no_user_config, capsys, text, message):
    path = no_user_config / "certify.toml"
    path.write_text(text)
    code, out, err = run(capsys, "ok.rq")
    assert code == 2 and out == ""
    assert err.startswith(f"certify: error: {path}:") and message in err


def test_cache_dir_is_relative_to_the_file(no_user_config, capsys, engine, monkeypatch):
    from certifier import runs

    (no_user_config / "certify.toml").write_text('cache-dir = "build/cache"\n')
    assert load_config().values == {"cache_dir": str(no_user_config / "build" / "cache")}
    opened = []
    monkeypatch.setattr(runs, "Cache", lambda folder: opened.append(str(folder)))
    code, _, _ = run(capsys, "ok.rq")
    assert code == 0 and opened == [str(no_user_config / "build" / "cache")]
    # the environment beats the file, the flag beats both
    monkeypatch.setenv("CERTIFY_CACHE_DIR", "from-env")
    run(capsys, "ok.rq")
    run(capsys, "ok.rq", "--cache-dir", "from-flag")
    assert opened[1:] == ["from-env", "from-flag"]


def test_report_and_color_from_the_file(no_user_config, capsys, engine):
    (no_user_config / "certify.toml").write_text('report = "none"\ncolor = "always"\n')
    code, out, _ = run(capsys, "ok.rq")
    assert code == 0 and "Verdict" not in out and "\x1b[" in out and "certified" in out
    assert len(out.splitlines()) == 1
    # flags override: -v means full reports, --color never no escape codes
    code, out, _ = run(capsys, "ok.rq", "-v", "--color", "never")
    assert "Verdict  certified" in out and "\x1b[" not in out


def test_help_and_version_ignore_a_broken_file(no_user_config, capsys):
    (no_user_config / "certify.toml").write_text("nonsense = 1\n")
    assert run(capsys, "--version")[0] == 0
    assert run(capsys, "--help")[0] == 0
    assert run(capsys, "--explain", "E001")[0] == 0


# --- max-memory: the file's key and --max-memory, one grammar ------------------------------------------

SIZES = {"8G": 8 * 2**30, "512M": 512 * 2**20, "1.5GiB": 3 * 2**29, "4096": 4096, "2KiB": 2048, "1T": 2**40,
         "64B": 64, " 16 G ": 16 * 2**30}
BAD_SIZES = ["8GB", "512MB", "0", "-1G", "G", "x", "nanG", "infG", "", "1e30T"]


def test_max_memory_sizes_are_powers_of_1024_in_both_readers():
    import argparse

    from certifier.arguments import memory_size
    from certifier.config import _size

    for text, expected in SIZES.items():
        assert memory_size(text) == expected and _size(text) == expected
    for text in BAD_SIZES:
        with pytest.raises(argparse.ArgumentTypeError):
            memory_size(text)
        with pytest.raises(ValueError):
            _size(text)
    assert _size(1 << 30) == 1 << 30       # TOML: an integer is bytes
    for value in (True, 1.5, [1], 0):
        with pytest.raises(ValueError):
            _size(value)


def test_max_memory_from_the_file_and_the_flag_reaches_the_check(no_user_config, capsys, engine):
    (no_user_config / "certify.toml").write_text('max-memory = "16G"\n')
    assert load_config().values == {"max_memory": 16 * 2**30}
    code, _, _ = run(capsys, "ok.rq")
    assert code == 0 and engine[-1].max_memory == 16 * 2**30
    code, _, _ = run(capsys, "ok.rq", "--max-memory", "512M", "--no-cache")
    assert code == 0 and engine[-1].max_memory == 512 * 2**20
    (no_user_config / "certify.toml").write_text('\nmax-memory = "8GB"\n')
    code, out, err = run(capsys, "ok.rq")
    assert code == 2 and out == "" and f"{no_user_config / 'certify.toml'}:2: 'max-memory': expected a size" in err
    code, out, err = run(capsys, "ok.rq", "--isolated", "--max-memory", "lots")
    assert code == 2 and "--max-memory: expected a size" in err
