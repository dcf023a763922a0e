"""model torch("package.module:Name"): --allow-python, weights from .pt / .safetensors / .npz,
the same numbers as the same model written in the spec. The modules are in
tests/fixtures/certify_fixture_nets.py (tests/fixtures is put on sys.path here)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from certifier import cli, pipeline
from certifier.check import check
from certifier.diagnostics import SpecError, render_text
from certifier.parse import parse

FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture(autouse=True)
def fixtures_on_path(monkeypatch):
    monkeypatch.syspath_prepend(str(FIXTURES))


DATA = 'data from "d.npz"\n'
TAIL = ("loss least_squares\nregion ball(center=init, radius=auto)\n"
        "method sampled(samples=64, seed=0)\ncertify rate(floor=0, horizon=100)\n")
TORCH = 'spec "torch linear"\n' + DATA + 'model torch("certify_fixture_nets:Linear")\n' + TAIL
NATIVE = 'spec "torch linear"\n' + DATA + "params { w : [2] = zeros() }\nmodel f(x) = w @ x\n" + TAIL


@pytest.fixture
def folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 2))
    np.savez(tmp_path / "d.npz", x=x, y=x @ np.array([1.0, -0.5]))
    return tmp_path


def checked(source: str, allow_python: bool = True):
    return check(parse(source, "spec.rq"), allow_python=allow_python)


def errors(source: str, allow_python: bool = True) -> list[str]:
    with pytest.raises(SpecError) as info:
        checked(source, allow_python)
    return [render_text(d, source) for d in info.value.diagnostics]


def test_without_allow_python_nothing_is_imported(folder):
    sys.modules.pop("certify_fixture_nets", None)
    (message,) = errors(TORCH, allow_python=False)
    assert message.startswith("spec.rq:3:13: error[E301]: model torch(\"certify_fixture_nets:Linear\") "
                              "imports the Python module 'certify_fixture_nets', which runs its code; "
                              "certify does that only with --allow-python")
    assert "3 | model torch(\"certify_fixture_nets:Linear\")\n  |             " + "^" * 29 + "\n" in message
    assert message.endswith("= hint: rerun with --allow-python if you trust 'certify_fixture_nets'")
    assert "certify_fixture_nets" not in sys.modules


def test_parameters_come_from_the_module(folder):
    c = checked(TORCH)
    assert list(c.params) == ["fc.weight"] and c.params["fc.weight"].shape == (1, 2)
    assert c.output_shape == () and isinstance(c.model_module, torch.nn.Module)
    assert next(c.model_module.parameters()).dtype == torch.float64


def test_same_numbers_as_the_native_model(folder):
    a = pipeline.run_text(TORCH, "spec.rq", pipeline.RunOptions(allow_python=True))
    b = pipeline.run_text(NATIVE, "spec.rq", pipeline.RunOptions())
    assert a.verdict == b.verdict == "certified"
    assert a.loss["initial"] == pytest.approx(b.loss["initial"], rel=1e-12)
    assert a.mu == pytest.approx(b.mu, rel=1e-9)
    assert a.problem == {"parameters": 2, "samples": 8, "outputs": 1}
    for t in (0.5, 5.0):
        assert a.bound(t) == pytest.approx(b.bound(t), rel=1e-9)


def test_cli_allow_python(folder, capsys):
    (folder / "t.rq").write_text(TORCH)
    code = cli.main(["t.rq", "--format", "json", "--no-cache"])
    out, err = capsys.readouterr()
    assert code == 2 and json.loads(out)["diagnostics"][0]["code"] == "E301"
    code = cli.main(["t.rq", "--format", "json", "--no-cache", "--allow-python"])
    out, err = capsys.readouterr()
    assert code == 0 and json.loads(out)["verdict"] == "certified"


W = np.array([[0.5, 0.25]])


def _expected_L0(folder) -> float:
    d = np.load(folder / "d.npz")
    return float(np.mean((d["x"] @ W[0] - d["y"]) ** 2))


@pytest.mark.parametrize("suffix", [".pt", ".safetensors", ".npz"])
def test_weights_files(folder, suffix):
    name = f"w{suffix}"
    state = {"fc.weight": torch.tensor(W)}
    if suffix == ".pt":
        torch.save(state, folder / name)
    elif suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(folder / name))
    else:
        np.savez(folder / name, **{"fc.weight": W})
    source = TORCH.replace("model torch", f'params from "{name}"\nmodel torch')
    c = checked(source)
    assert np.array_equal(c.params["fc.weight"], W)
    r = pipeline.run_text(source, "spec.rq", pipeline.RunOptions(allow_python=True)) if suffix == ".pt" else None
    if r is not None:
        assert r.loss["initial"] == pytest.approx(_expected_L0(folder), rel=1e-12)


def test_pickled_objects_are_never_loaded(folder):
    class Evil:
        def __reduce__(self):
            return (print, ("unpickled!",))

    torch.save({"fc.weight": torch.tensor(W), "extra": Evil()}, folder / "w.pt")
    source = TORCH.replace("model torch", 'params from "w.pt"\nmodel torch')
    (message,) = errors(source)
    assert "error[E202]: cannot read 'w.pt'" in message and "never unpickles" in message


def test_buffers_load_and_extra_entries_are_refused(folder):
    torch.save({"fc.weight": torch.tensor(W), "scale": torch.tensor(2.0)}, folder / "w.pt")
    source = TORCH.replace("model torch", 'params from "w.pt"\nmodel torch').replace(":Linear", ":WithBuffer")
    c = checked(source)
    assert float(c.model_module.scale) == 2.0 and list(c.params) == ["fc.weight"]
    (message,) = errors(source.replace(":WithBuffer", ":Linear"))
    assert "error[E303]: 'w.pt' has entries the module does not have: 'scale'" in message


@pytest.mark.parametrize("target,code,text", [
    ("nope_module_xyz:Net", "E302", "cannot import 'nope_module_xyz': ModuleNotFoundError"),
    ("certify_fixture_nets:Nte", "E302", "'certify_fixture_nets' has no attribute 'Nte'"),
    ("certify_fixture_nets:NOT_A_MODULE", "E302", "is neither a torch.nn.Module nor callable"),
    ("certify_fixture_nets:Mismatched", "E302", "the forward pass of 'certify_fixture_nets:Mismatched' on x"),
    ("certify_fixture_nets:TwoOutputs", "E103", "the module returns shape [8, 2] for x of shape [8, 2], "
                                                "but y has shape [8]"),
    ("no-colon", "E302", "'no-colon' is not a \"package.module:Name\" target"),
])
def test_model_errors(folder, target, code, text):
    (message,) = errors(TORCH.replace("certify_fixture_nets:Linear", target))
    assert f"spec.rq:3:13: error[{code}]: " in message and text in message


def test_factory_and_unknown_kind(folder):
    assert list(checked(TORCH.replace(":Linear", ":make_linear")).params) == ["fc.weight"]
    (message,) = errors(TORCH.replace("model torch", "model jax"))
    assert "spec.rq:3:7: error[E302]: unknown model kind 'jax'" in message


def test_params_block_is_refused(folder):
    source = TORCH.replace("model torch", "params { w : [2] = 0 }\nmodel torch")
    (message,) = errors(source)
    assert "spec.rq:3:1: error[E303]: a torch model takes its parameters from the module" in message
