"""The check stage: one golden test per diagnostic code, values of materialised arrays, file
round trips, and robustness (check raises SpecError and nothing else)."""
from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from certifier.check import Checked, check
from certifier.check.shapes import SHAPE_RULES
from certifier.diagnostics import CODES, SpecError, render_text
from certifier.language.evaluate import FUNCTIONS, OPERATORS
from certifier.parse import parse

DATA = """\
data {
  x = normal(shape=[8, 3], seed=0)
  w = [1, -1, 0.5]
  y = tanh(x @ w)
}
"""
PARAMS = """\
params {
  W : [16, 3] = normal(seed=1)
  a : [16] = normal(std=1/sqrt(16), seed=2)
}
"""
MODEL = "model f(x) = a @ tanh(W @ x)\n"
LOSS = "loss least_squares\n"


def spec(data=DATA, params=PARAMS, model=MODEL, loss=LOSS, extra="") -> str:
    return data + params + model + loss + extra


def run(source: str, path: str = "spec.rq", **limits) -> Checked:
    return check(parse(source, path), **limits)


def errors(source: str, path: str = "spec.rq", **limits) -> list[str]:
    with pytest.raises(SpecError) as info:
        run(source, path, **limits)
    return [render_text(d, source) for d in info.value.diagnostics]


def error(source: str, **kw) -> str:
    (only,) = errors(source, **kw)
    return only


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    """Run in tmp_path, with the spec at tmp_path/spec.rq (so paths resolve against tmp_path)."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


# --- a valid spec ----------------------------------------------------------------------------

def test_valid_spec_builds_checked():
    c = run(spec(extra="region box(center=init, halfwidth=1/sqrt(16))\nmethod sampled(samples=100)\n"
                       "desingularizer log\ncertify rate(floor=0.01)\n"))
    assert c.x.shape == (8, 3) and c.y.shape == (8,) and c.n == 8
    assert list(c.constants) == ["w"] and c.constants["w"].tolist() == [1, -1, 0.5]
    assert list(c.params) == ["W", "a"] and c.parameter_count == 64
    assert c.params["W"].dtype == np.float64 and c.x.dtype == np.float64
    assert c.output_shape == ()
    assert (c.loss.name, c.loss.options) == ("least_squares", {})
    assert (c.region.name, c.region.options) == ("box", {"center": "init", "halfwidth": 0.25})
    assert (c.method.name, c.method.options) == ("sampled", {"samples": 100, "seed": 0})
    assert isinstance(c.method.options["samples"], int)
    assert (c.desingularizer.name, c.desingularizer.options) == ("log", {})
    assert (c.claim.name, c.claim.options) == ("rate", {"floor": 0.01, "horizon": 1e4, "step": None})
    assert c.claim.span is not None and set(c.claim.option_spans) == {"floor"}
    assert c.param_spans["W"].line == 7
    assert np.allclose(c.y, np.tanh(c.x @ np.array([1, -1, 0.5])))


def test_defaults_when_statements_are_absent():
    c = run(spec())
    assert (c.region.name, c.region.options, c.region.span) == ("ball", {"center": "init", "radius": "auto"}, None)
    assert (c.method.name, c.method.options, c.method.span) == ("sampled", {"samples": 4096, "seed": 0}, None)
    assert (c.desingularizer.name, c.desingularizer.span) == ("auto", None)
    assert (c.claim.name, c.claim.options, c.claim.span) == ("rate", {"floor": 0.0, "horizon": 1e4, "step": None}, None)


def test_ball_radius_number_and_option_spans():
    c = run(spec(extra="region ball(radius=0.5)\n"))
    assert c.region.options == {"center": "init", "radius": 0.5}
    assert c.region.option_spans["radius"].column == 20


def test_scalar_samples_from_1d_x():
    c = run('data {\n  x = uniform(shape=[5], low=-1, high=1, seed=3)\n  y = 2 * x\n}\n'
            'params { w : [] = 0.5  b : [] = 0 }\nmodel f(u) = w * u + b\nloss least_squares\n')
    assert c.x.shape == (5,) and c.output_shape == ()
    assert c.params["w"].shape == () and float(c.params["w"]) == 0.5


def test_vector_targets():
    c = run('data {\n  x = normal(shape=[6, 3], seed=0)\n  y = softmax(x, axis=1)\n}\n'
            'params { W : [3, 3] = 0 }\nmodel f(x) = softmax(W @ x)\nloss least_squares\n')
    assert c.y.shape == (6, 3) and c.output_shape == (3,)


# --- values of materialised arrays ----------------------------------------------------------

def test_generator_values():
    c = run("""data {
  x = normal(shape=[4, 2], seed=0)
  u = uniform(shape=[3], low=-2, high=5, seed=7)
  s = normal(shape=[3], mean=1, std=0.5, seed=4)
  z = zeros(shape=[2]) + ones(shape=[2])
  y = x[:, 0]
}
params {
  W : [3, 2] = normal(seed=1)
  b : [3] = normal()
  c : [2, 2] = 0.5
  d : [2] = [1, 2]
  e : [2] = uniform(low=-1, high=1, seed=9) * 2
}
model f(x) = sum(W @ x + b) + sum(c @ x) + d @ x + e @ x
loss least_squares
""")
    assert np.array_equal(c.x, np.random.default_rng(0).standard_normal((4, 2)))
    assert np.array_equal(c.y, c.x[:, 0])
    assert np.array_equal(c.constants["u"], np.random.default_rng(7).uniform(-2, 5, size=3))
    assert np.allclose(c.constants["s"], 1 + 0.5 * np.random.default_rng(4).standard_normal(3))
    assert c.constants["z"].tolist() == [1, 1]
    assert np.array_equal(c.params["W"], np.random.default_rng(1).standard_normal((3, 2)))
    # no seed: crc32 of the parameter's name
    assert np.array_equal(c.params["b"], np.random.default_rng(zlib.crc32(b"b")).standard_normal(3))
    assert c.params["c"].tolist() == [[0.5, 0.5], [0.5, 0.5]]
    assert c.params["d"].tolist() == [1, 2]
    assert np.allclose(c.params["e"], 2 * np.random.default_rng(9).uniform(-1, 1, size=2))


def test_data_default_seed_is_crc32_of_the_name():
    c = run('data {\n  x = normal(shape=[3, 2])\n  y = x[:, 1]\n}\nparams { W : [2] = 1 }\n'
            'model f(x) = W @ x\nloss least_squares\n')
    assert np.array_equal(c.x, np.random.default_rng(zlib.crc32(b"x")).standard_normal((3, 2)))


def test_data_from_npz(in_tmp):
    x, y = np.arange(12.0).reshape(4, 3), np.array([1, 0, 1, 0], dtype=np.int64)
    np.savez(in_tmp / "train.npz", x=x, y=y, extra=np.ones(2))
    c = run(spec(data='data from "train.npz"\n'))
    assert np.array_equal(c.x, x) and np.array_equal(c.y, y) and c.y.dtype == np.float64
    assert c.constants == {}


def test_data_from_npy_pair(in_tmp):
    (in_tmp / "d").mkdir()
    x, y = np.random.default_rng(0).standard_normal((5, 3)), np.arange(5.0)
    np.save(in_tmp / "d" / "x.npy", x)
    np.save(in_tmp / "d" / "y.npy", y)
    c = run(spec(data='data from "d/x.npy", "d/y.npy"\n'))
    assert np.array_equal(c.x, x) and np.array_equal(c.y, y)


def test_data_from_csv_with_and_without_header(in_tmp):
    (in_tmp / "h.csv").write_text("a,b,c,target\n1,2,3,4\n5,6,7,8\n\n")
    (in_tmp / "n.csv").write_text("1,2,3,4\n5,6,7,8.5\n")
    c = run(spec(data='data from "h.csv"\n'))
    assert c.x.tolist() == [[1, 2, 3], [5, 6, 7]] and c.y.tolist() == [4, 8]
    c = run(spec(data='data from "n.csv"\n'))
    assert c.x.shape == (2, 3) and c.y.tolist() == [4, 8.5]


def test_paths_are_relative_to_the_spec(tmp_path):
    (tmp_path / "sub").mkdir()
    np.savez(tmp_path / "sub" / "train.npz", x=np.ones((2, 3)), y=np.ones(2))
    c = run(spec(data='data from "train.npz"\n'), path=str(tmp_path / "sub" / "spec.rq"))
    assert c.x.shape == (2, 3)


def test_params_from_npz_keeps_file_order(in_tmp):
    np.savez(in_tmp / "theta0.npz", a=np.full(16, 0.25), W=np.ones((16, 3)))
    c = run(spec(params='params from "theta0.npz"\n'))
    assert list(c.params) == ["a", "W"]
    assert c.params["W"].shape == (16, 3) and c.params["a"][0] == 0.25
    assert c.param_spans["W"].line == 6


# --- one golden test per code ---------------------------------------------------------------

def test_E002_empty():
    assert error("# nothing here\n") == (
        "spec.rq:1:1: error[E002]: the spec is empty\n"
        "  |\n"
        "1 | # nothing here\n"
        "  | ^\n"
        "  = hint: a spec needs at least data, params, model and loss statements; see docs/language.md")


def test_E003_binary():
    assert error("loss least_squares\x00") == (
        "spec.rq:1:19: error[E003]: the spec file is binary, not text\n"
        "  |\n"
        "1 | loss least_squares\u2400\n"
        "  |                   ^\n"
        "  = hint: certify reads .rq spec files written in UTF-8; this is the first NUL byte")


def test_E004_duplicate_statement():
    assert error(spec(extra="model g(x) = 0\n")) == (
        "spec.rq:12:7: error[E004]: 'model' appears more than once\n"
        "   |\n"
        "12 | model g(x) = 0\n"
        "   |       ^\n"
        "  = hint: the first one is at line 10; keep one")


def test_E005_missing_statements():
    assert errors(spec(model="", loss="")) == [
        "spec.rq:1:1: error[E005]: the spec has no 'model' statement\n"
        "  |\n"
        "1 | data {\n"
        "  | ^\n"
        "  = hint: add `model f(x) = ...`, written for one sample x",
        "spec.rq:1:1: error[E005]: the spec has no 'loss' statement\n"
        "  |\n"
        "1 | data {\n"
        "  | ^\n"
        "  = hint: add `loss least_squares`"]


def test_E005_data_without_y():
    assert error(spec(data="data {\n  x = ones(shape=[4, 3])\n}\n")) == (
        "spec.rq:1:1: error[E005]: the data block does not define 'y'\n"
        "  |\n"
        "1 | data {\n"
        "  | ^^^^\n"
        "  = hint: define the targets: `y = ...`")


def test_E101_undefined_name_did_you_mean():
    source = spec(params="params {\n  weights : [16, 3] = normal(seed=1)\n  a : [16] = 0\n}\n",
                  model="model f(x) = a @ tanh(weigths @ x)\n")
    assert error(source) == (
        "spec.rq:10:23: error[E101]: undefined name 'weigths'\n"
        "   |\n"
        "10 | model f(x) = a @ tanh(weigths @ x)\n"
        "   |                       ^^^^^^^\n"
        "  = hint: did you mean 'weights'?")


def test_E101_model_cannot_read_y():
    assert error(spec(model="model f(x) = a @ tanh(W @ x) - y\n")) == (
        "spec.rq:10:32: error[E101]: 'y' cannot be used in the model\n"
        "   |\n"
        "10 | model f(x) = a @ tanh(W @ x) - y\n"
        "   |                                ^\n"
        "  = hint: the model cannot read the targets")


def test_E101_defined_later():
    source = spec(data="data {\n  x = normal(shape=[8, 3], seed=0)\n  y = tanh(x @ w)\n  w = [1, -1, 0.5]\n}\n")
    assert error(source) == (
        "spec.rq:3:16: error[E101]: undefined name 'w'\n"
        "  |\n"
        "3 |   y = tanh(x @ w)\n"
        "  |                ^\n"
        "  = hint: 'w' is defined later, at line 4; data statements are evaluated in order")


def test_E102_duplicate_definition():
    source = spec(params="params {\n  W : [16, 3] = normal(seed=1)\n  a : [16] = 1\n  W : [3] = 0\n}\n")
    assert error(source) == (
        "spec.rq:9:3: error[E102]: the parameter 'W' is declared twice\n"
        "  |\n"
        "9 |   W : [3] = 0\n"
        "  |   ^\n"
        "  = hint: the first declaration is at line 7; rename one of them")


def test_E102_parameter_shadows_data():
    source = spec(params="params {\n  W : [16, 3] = normal(seed=1)\n  w : [16] = 0\n}\n",
                  model="model f(x) = w @ tanh(W @ x)\n")
    assert error(source) == (
        "spec.rq:8:3: error[E102]: 'w' is both a data array and a parameter\n"
        "  |\n"
        "8 |   w : [16] = 0\n"
        "  |   ^\n"
        "  = hint: the data array is defined at line 3; rename one of them")


def test_E103_matmul_mismatch():
    assert error(spec(model="model f(x) = a @ tanh(W @ x[0:2])\n")) == (
        "spec.rq:10:23: error[E103]: shape mismatch in '@': [16, 3] @ [2]\n"
        "   |\n"
        "10 | model f(x) = a @ tanh(W @ x[0:2])\n"
        "   |                       ^^^^^^^^^^\n"
        "  = hint: the inner dimensions must agree (3 \u2260 2)")


def test_E103_output_shape():
    assert error(spec(model="model f(x) = tanh(W @ x)\n")) == (
        "spec.rq:10:14: error[E103]: the model returns shape [16] for one sample, but each target "
        "has shape []\n"
        "   |\n"
        "10 | model f(x) = tanh(W @ x)\n"
        "   |              ^^^^^^^^^^^\n"
        "  = hint: y has shape [8], so the model must return one number per sample")


def test_E103_sample_counts_differ():
    source = spec(data="data {\n  x = normal(shape=[8, 3], seed=0)\n  y = zeros(shape=[7])\n}\n")
    assert error(source) == (
        "spec.rq:3:3: error[E103]: x has 8 samples but y has 7\n"
        "  |\n"
        "3 |   y = zeros(shape=[7])\n"
        "  |   ^\n"
        "  = hint: the first dimension counts the samples: x is [8, 3], y is [7]")


def test_E103_index_and_axis_out_of_range():
    source = spec(model="model f(x) = sum(a * tanh(W @ x), axis=1) + x[3]\n")
    assert errors(source) == [
        "spec.rq:10:40: error[E103]: axis 1 is out of range for shape [16]\n"
        "   |\n"
        "10 | model f(x) = sum(a * tanh(W @ x), axis=1) + x[3]\n"
        "   |                                        ^\n"
        "  = hint: the axis must be between -1 and 0",
        "spec.rq:10:47: error[E103]: index 3 is out of range for a dimension of size 3\n"
        "   |\n"
        "10 | model f(x) = sum(a * tanh(W @ x), axis=1) + x[3]\n"
        "   |                                               ^\n"
        "  = hint: indices run from 0 to 2 (or -3 to -1 from the end)"]


def test_E103_broadcast_and_too_many_indices():
    source = spec(data="data {\n  x = normal(shape=[8, 3], seed=0)\n  y = x[0, 1, 2] + x @ [1, 2]\n}\n")
    assert errors(source) == [
        "spec.rq:3:15: error[E103]: too many indices: 3 for shape [8, 3]\n"
        "  |\n"
        "3 |   y = x[0, 1, 2] + x @ [1, 2]\n"
        "  |               ^\n"
        "  = hint: an array of shape [8, 3] takes at most 2 indices",
        "spec.rq:3:20: error[E103]: shape mismatch in '@': [8, 3] @ [2]\n"
        "  |\n"
        "3 |   y = x[0, 1, 2] + x @ [1, 2]\n"
        "  |                    ^^^^^^^^^^\n"
        "  = hint: the inner dimensions must agree (3 \u2260 2)"]


def test_E104_argument_count():
    assert error(spec(model="model f(x) = a @ tanh(W @ x, 2)\n")) == (
        "spec.rq:10:30: error[E104]: 'tanh' takes 1 argument, got 2\n"
        "   |\n"
        "10 | model f(x) = a @ tanh(W @ x, 2)\n"
        "   |                              ^\n"
        "  = hint: write tanh(a)")


def test_E104_unknown_keyword():
    assert error(spec(model="model f(x) = sum(a * tanh(W @ x), dim=0)\n")) == (
        "spec.rq:10:35: error[E104]: 'sum' has no keyword 'dim'\n"
        "   |\n"
        "10 | model f(x) = sum(a * tanh(W @ x), dim=0)\n"
        "   |                                   ^^^\n"
        "  = hint: 'sum' takes the keyword axis")


def test_E104_positional_option():
    assert error(spec(extra="region ball(1)\n")) == (
        "spec.rq:12:13: error[E104]: 'ball' takes keyword arguments only\n"
        "   |\n"
        "12 | region ball(1)\n"
        "   |             ^\n"
        "  = hint: write ball(center=init, radius=auto)")


def test_E105_unknown_function():
    assert error(spec(model="model f(x) = a @ tahn(W @ x)\n")) == (
        "spec.rq:10:18: error[E105]: unknown function 'tahn'\n"
        "   |\n"
        "10 | model f(x) = a @ tahn(W @ x)\n"
        "   |                  ^^^^\n"
        "  = hint: did you mean 'tanh'? the functions are: abs, cos, exp, log, logsumexp, mean, relu, "
        "sigmoid, sin, softmax, softplus, sqrt, sum, tanh")


def test_E105_generator_in_model():
    assert error(spec(model="model f(x) = a @ tanh(W @ x) + normal(shape=[1])\n")) == (
        "spec.rq:10:32: error[E105]: the generator 'normal' cannot be used in the model\n"
        "   |\n"
        "10 | model f(x) = a @ tanh(W @ x) + normal(shape=[1])\n"
        "   |                                ^^^^^^\n"
        "  = hint: generators (normal, uniform, zeros, ones) belong in data or params blocks")


def test_E106_unknown_loss():
    assert error(spec(loss="loss least_square\n")) == (
        "spec.rq:11:6: error[E106]: unknown loss 'least_square'\n"
        "   |\n"
        "11 | loss least_square\n"
        "   |      ^^^^^^^^^^^^\n"
        "  = hint: did you mean 'least_squares'? the losses are: cross_entropy, exponential, least_squares, logistic")


def test_E107_unknown_method():
    assert error(spec(extra="method exact\n")) == (
        "spec.rq:12:8: error[E107]: unknown method 'exact'\n"
        "   |\n"
        "12 | method exact\n"
        "   |        ^^^^^\n"
        "  = hint: the methods are: interval, sampled")


def test_E108_unknown_region():
    assert error(spec(extra="region sphere(radius=1)\n")) == (
        "spec.rq:12:8: error[E108]: unknown region 'sphere'\n"
        "   |\n"
        "12 | region sphere(radius=1)\n"
        "   |        ^^^^^^\n"
        "  = hint: the regions are: ball, box")


def test_E109_non_positive_radius():
    assert error(spec(extra="region ball(center=init, radius=-0.5)\n")) == (
        "spec.rq:12:33: error[E109]: the radius must be positive, got -0.5\n"
        "   |\n"
        "12 | region ball(center=init, radius=-0.5)\n"
        "   |                                 ^^^^\n"
        "  = hint: write a positive number, or radius=auto to let certify choose")


def test_E109_shape_dimension_and_samples():
    source = spec(params="params {\n  W : [16, 0] = normal(seed=1)\n  a : [16] = 0\n}\n",
                  extra="method sampled(samples=0.5 * 3)\n")
    assert errors(source) == [
        "spec.rq:7:12: error[E109]: a shape dimension must be positive, got 0\n"
        "  |\n"
        "7 |   W : [16, 0] = normal(seed=1)\n"
        "  |            ^\n"
        "  = hint: dimensions are whole numbers of at least 1, as in [512, 3]",
        "spec.rq:12:24: error[E109]: samples must be a whole number, got 1.5\n"
        "   |\n"
        "12 | method sampled(samples=0.5 * 3)\n"
        "   |                        ^^^^^^^\n"
        "  = hint: the number of sampled points, such as samples=4096"]


def test_E109_no_samples(in_tmp):
    (in_tmp / "empty.csv").write_text("a,b,y\n")
    assert error(spec(data='data from "empty.csv"\n')) == (
        "spec.rq:1:11: error[E109]: the data has no samples\n"
        "  |\n"
        '1 | data from "empty.csv"\n'
        "  |           ^^^^^^^^^^^\n"
        "  = hint: x and y need at least one row")


def test_E110_unknown_claim():
    assert error(spec(extra="certify speed(floor=0)\n")) == (
        "spec.rq:12:9: error[E110]: unknown claim 'speed'\n"
        "   |\n"
        "12 | certify speed(floor=0)\n"
        "   |         ^^^^^\n"
        "  = hint: the claims are: rate")


def test_E111_unknown_desingularizer():
    assert error(spec(extra="desingularizer lambertw\n")) == (
        "spec.rq:12:16: error[E111]: unknown desingularizer 'lambertw'\n"
        "   |\n"
        "12 | desingularizer lambertw\n"
        "   |                ^^^^^^^^\n"
        "  = hint: did you mean 'lambert'? the desingularizers are: auto, lambert, log, power")


def test_E112_no_closed_form():
    source = ("data gaussian(d=3) { v = [1, 0, 0] }\nparams { W : [2, 3] = 0.5 }\n"
              "model f(x) = sum(tanh(W @ x))\ntarget relu(v @ x)\nloss least_squares\n")
    assert error(source) == (
        "spec.rq:3:18: error[E112]: no closed form for the population loss (in the model): tanh(...) "
        "of x has no closed-form expectation under x ~ N(0, I)\n"
        "  |\n"
        "3 | model f(x) = sum(tanh(W @ x))\n"
        "  |                  ^^^^^^^^^^^\n"
        "  = hint: closed forms exist for sums of ReLU neurons of the input: sum(relu(W @ x)), "
        "a @ relu(W @ x), relu(v @ x), and sums and scalar multiples of these; for any other model use "
        "finite data, e.g. data { x = normal(shape=[4096, d], seed=0)  y = ... } (then L is the mean "
        "over that sample, not the expectation)")


def test_E201_file_not_found(in_tmp):
    assert error(spec(data='data from "train.npz"\n')) == (
        "spec.rq:1:11: error[E201]: file not found: 'train.npz'\n"
        "  |\n"
        '1 | data from "train.npz"\n'
        "  |           ^^^^^^^^^^^\n"
        f"  = hint: paths are relative to the spec's directory; looked for {in_tmp / 'train.npz'}")


def test_E202_unreadable_file(in_tmp):
    (in_tmp / "train.npz").write_text("not a zip archive")
    (in_tmp / "t.csv").write_text("a,b\n1,2\n3,oops\n")
    assert error(spec(data='data from "train.npz"\n')) == (
        "spec.rq:1:11: error[E202]: 'train.npz' is not a .npz archive\n"
        "  |\n"
        '1 | data from "train.npz"\n'
        "  |           ^^^^^^^^^^^\n"
        "  = hint: write it with numpy.savez(path, x=..., y=...)")
    assert error(spec(data='data from "t.csv"\n')) == (
        "spec.rq:1:11: error[E202]: line 3, column 2 of 't.csv' is not a number\n"
        "  |\n"
        '1 | data from "t.csv"\n'
        "  |           ^^^^^^^\n"
        "  = hint: only the first row may be a header; the rest must be numbers")


def test_E202_no_pickles(in_tmp):
    np.savez(in_tmp / "obj.npz", x=np.array([1, "a"], dtype=object), y=np.ones(2))
    assert error(spec(data='data from "obj.npz"\n')) == (
        "spec.rq:1:11: error[E202]: 'obj.npz' holds Python objects, which certify does not read\n"
        "  |\n"
        '1 | data from "obj.npz"\n'
        "  |           ^^^^^^^^^\n"
        "  = hint: save plain numeric arrays (pickles are never loaded)")


def test_E203_non_finite(in_tmp):
    np.savez(in_tmp / "train.npz", x=np.array([[1.0, np.nan], [np.inf, 2.0]]), y=np.ones(2))
    assert error(spec(data='data from "train.npz"\n')) == (
        "spec.rq:1:11: error[E203]: the array 'x' in 'train.npz' has 2 non-finite entries (NaN or infinite)\n"
        "  |\n"
        '1 | data from "train.npz"\n'
        "  |           ^^^^^^^^^^^\n"
        "  = hint: remove or fill in those entries; certify needs finite data")


def test_E203_non_finite_computed():
    source = spec(data="data {\n  x = normal(shape=[8, 3], seed=0)\n  y = log(x[:, 0])\n}\n")
    (text,) = errors(source)
    assert text.startswith("spec.rq:3:3: error[E203]: 'y' has ")
    assert text.endswith("  = hint: look for the log or sqrt of a negative number, or a division by zero")


def test_E204_missing_array(in_tmp):
    np.savez(in_tmp / "train.npz", x=np.ones((2, 3)), target=np.ones(2))
    assert error(spec(data='data from "train.npz"\n')) == (
        "spec.rq:1:11: error[E204]: 'train.npz' has no array 'y'\n"
        "  |\n"
        '1 | data from "train.npz"\n'
        "  |           ^^^^^^^^^^^\n"
        "  = hint: it holds: target, x; write it with numpy.savez(path, x=..., y=...)")


def test_E205_too_many_parameters():
    assert error(spec(), max_params=63) == (
        "spec.rq:6:1: error[E205]: the parameters have 64 entries, more than the limit of 63\n"
        "  |\n"
        "6 | params {\n"
        "  | ^^^^^^\n"
        "  = hint: raise the limit with --max-params N")


def test_E205_refused_before_allocating():
    n = 10**12  # 32 TB of float64: must be refused, not attempted
    source = spec(params=f"params {{\n  W : [{n}, 3] = normal(seed=1)\n  a : [{n}] = 0\n}}\n")
    (text,) = errors(source)
    assert "error[E205]: the parameters have 4,000,000,000,000 entries" in text


def test_E205_data_generator():
    source = spec(data="data {\n  x = normal(shape=[100000, 3000], seed=0)\n  y = x[:, 0]\n}\n")
    assert error(source) == (
        "spec.rq:2:20: error[E205]: this array would have shape [100000, 3000]: 300,000,000 entries, "
        "more than the limit of 100,000,000\n"
        "  |\n"
        "2 |   x = normal(shape=[100000, 3000], seed=0)\n"
        "  |                    ^^^^^^^^^^^^^^\n"
        "  = hint: use smaller shapes: the limit keeps certify from running out of memory")


def test_E206_initial_loss_not_finite():
    """Raised where the analysis starts (L at theta0), not by check: the spec is well formed."""
    from certifier.pipeline import run_text

    source = spec(data="data {\n  x = normal(shape=[8, 3], seed=0)\n  y = 2e200 * x[:, 0]\n}\n",
                  extra="region ball(center=init, radius=auto)\nmethod sampled(samples=16, seed=0)\n"
                        "certify rate(floor=0, horizon=1)\n")
    run(source)                                   # check accepts it
    with pytest.raises(SpecError) as info:
        run_text(source, "spec.rq")
    (d,) = info.value.diagnostics
    assert render_text(d, source) == (
        "spec.rq:10:6: error[E206]: the initial loss L(theta0) = inf is not finite (the largest |target| "
        "is 4.65e+200 and the largest |F(theta0)| is 0.431)\n"
        "   |\n"
        "10 | loss least_squares\n"
        "   |      ^^^^^^^^^^^^^\n"
        "  = hint: rescale the data or the initial parameters (e.g. divide the targets by a power of ten): "
        "L(theta0), its gradient and ||grad L||^2 / ||g||_D^2 must be finite float64 numbers")


def test_every_check_code_has_a_test():
    tested = {name.split("_")[1] for name in globals() if name.startswith("test_E")}
    wanted = {c for c in CODES if c != "E001"}
    assert wanted <= tested, sorted(wanted - tested)


# --- several errors at once ----------------------------------------------------------------

def test_all_errors_reported_at_once():
    source = spec(data="data {\n  x = normal(shape=[8, 3], seed=0)\n  y = tanh(x @ v)\n}\n",
                  model="model f(x) = b @ tanh(W @ x)\n", loss="loss least_square\n",
                  extra="region ball(radius=0)\nmethod sampled(samples=-1)\n")
    codes = [text.split("error[")[1][:4] for text in errors(source)]
    assert codes == ["E101", "E101", "E106", "E109", "E109"]
    lines = [int(text.split(":")[1]) for text in errors(source)]
    assert lines == sorted(lines)


def test_errors_do_not_cascade():
    source = spec(data="data {\n  x = normal(shape=[8, 3], sed=0)\n  y = tanh(x @ [1, 2, 3])\n}\n")
    assert [t.split("\n")[0] for t in errors(source)] == [
        "spec.rq:2:28: error[E104]: 'normal' has no keyword 'sed'"]


# --- tables ----------------------------------------------------------------------------------

def test_shape_table_mirrors_evaluate_table():
    assert set(SHAPE_RULES) == set(FUNCTIONS) | set(OPERATORS)


# --- robustness: SpecError or Checked, never anything else -----------------------------------

MALFORMED = [
    "data { x = 1 y = 2 }\nparams { W : [] = 1 }\nmodel f(x) = W * x\nloss least_squares\n",
    "data { x = [1, 2] y = [1, 2] }\nparams { W : [] = 1 }\nmodel f(x) = W * x[0]\nloss least_squares\n",
    spec(model="model f(x) = W[0:0] @ x\n"),
    spec(model="model f(x) = a @ x[1:2:3]\n".replace("1:2:3", "1:2")),
    spec(model="model f(x) = a @ (W @ x)[99]\n"),
    spec(model="model f(x) = sum(x, axis=x)\n"),
    spec(model='model f(x) = "text"\n'),
    spec(model="model f(x) = pi(3)\n"),
    spec(params="params { W : [2**70] = 0 a : [16] = 0 }\n"),
    spec(params="params { W : [1e400] = 0 a : [16] = 0 }\n"),
    spec(params="params { W : [16, 3] = normal(std=-1) a : [16] = log(0) }\n"),
    spec(params="params { W : [16, 3] = normal(shape=[3, 16], seed=1.5) a : [16] = W }\n"),
    spec(params="params { W : [16, 3] = [[1, 2, 3]] a : [16] = [] }\n"),
    spec(data="data { x = normal(shape=[8]) y = x / 0 }\n"),
    spec(data="data { x = normal(shape=3) y = uniform(shape=[3], low=1, high=0) }\n"),
    spec(data="data { x = normal(shape=[8, 3], mean=x) y = x }\n"),
    spec(data="data { x = zeros(1, shape=[2, 2]) y = zeros(shape=[]) }\n"),
    spec(data="data { x = ones(shape=[3]) y = [x, x] }\n"),
    spec(data="data { x = ones(shape=[3]) y = x[0] }\n"),
    spec(data='data from "missing.npy", "also.npy"\n'),
    spec(data='data from ""\n'),
    spec(extra="region box(center=init)\nmethod sampled(samples=auto, seed=-1)\n"),
    spec(extra="region ball(center=x, radius=1/0)\ncertify rate(floor=1, horizon=0)\n"),
    spec(extra="region ball(radius=sqrt(-1))\ndesingularizer log(1)\n"),
    spec(loss="loss least_squares(1)\n"),
    spec(extra="method sampled(samples=10**400)\n"),
    spec(model="model f(W) = W\n"),
    spec(model="model spec(x) = x\n"),
    spec(model="model f(x) = " + "-" * 300 + "a @ tanh(W @ x)\n"),
    spec(model="model f(x) = a @ tanh(W @ x) * 1e400 + " + "9" * 400 + "\n"),
    spec(extra="region ball(radius=1/" + "9" * 400 + ")\n"),
]


@pytest.mark.parametrize("source", MALFORMED)
def test_malformed_specs_raise_spec_error(source, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SpecError) as info:
        run(source)
    for d in info.value.diagnostics:
        assert d.code in CODES and d.hint and d.span is not None
        render_text(d, source)


def _mutations():
    base = spec(extra="region ball(center=init, radius=1/sqrt(16))\nmethod sampled(samples=64, seed=1)\n"
                      "certify rate(floor=0, horizon=1e3)\n")
    edit = st.tuples(st.sampled_from(["delete", "duplicate", "swap"]),
                     st.integers(0, len(base) - 1), st.integers(1, 4))
    return base, st.lists(edit, min_size=1, max_size=4)


_BASE, _EDITS = _mutations()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_EDITS)
def test_mutated_specs_give_checked_or_spec_error(edits):
    source = _BASE
    for kind, at, width in edits:
        at = at % max(1, len(source))
        piece = source[at:at + width]
        if kind == "delete":
            source = source[:at] + source[at + width:]
        elif kind == "duplicate":
            source = source[:at] + piece + piece + source[at + width:]
        else:
            other = (at * 7 + width) % max(1, len(source))
            source = source[:at] + source[other:other + width] + source[at + width:]
    try:
        result = check(parse(source, "m.rq"), max_params=10**5, max_elements=10**5)
    except SpecError as err:
        assert err.diagnostics and all(d.code in CODES for d in err.diagnostics)
        for d in err.diagnostics:
            render_text(d, source)
        return
    assert isinstance(result, Checked)
    assert result.output_shape == result.y.shape[1:]


# --- the shape table agrees with evaluation ---------------------------------------------------

SHAPES = {"a": (3,), "b": (2, 3), "c": (), "d": (3, 1), "e": (4, 2, 3)}

_leaf = st.sampled_from(sorted(SHAPES) + ["2", "0.5"])


def _grow(inner):
    binary = st.tuples(inner, st.sampled_from(["+", "-", "*", "/", "@"]), inner).map(
        lambda t: f"({t[0]} {t[1]} {t[2]})")
    power = inner.map(lambda s: f"({s}) ** 2")
    neg = inner.map(lambda s: f"-{s}")
    func = st.tuples(st.sampled_from(["tanh", "exp", "abs", "sum", "mean", "softmax", "logsumexp"]),
                     inner, st.one_of(st.none(), st.integers(-3, 2))).map(
        lambda t: f"{t[0]}({t[1]})" if t[2] is None else f"{t[0]}({t[1]}, axis={t[2]})")
    sub = st.one_of(st.integers(-4, 3).map(str),
                    st.tuples(st.integers(-4, 3), st.integers(-4, 4)).map(lambda t: f"{t[0]}:{t[1]}"),
                    st.just(":"))
    index = st.tuples(inner, st.lists(sub, min_size=1, max_size=3)).map(
        lambda t: f"({t[0]})[{', '.join(t[1])}]")
    return st.one_of(binary, power, neg, func, index)


@settings(max_examples=300, deadline=None)
@given(st.recursive(_leaf, _grow, max_leaves=6))
def test_shape_rules_agree_with_evaluate(text):
    import torch

    from certifier.check.expressions import Walker
    from certifier.check.names import Scope
    from certifier.diagnostics import Collector
    from certifier.language.evaluate import evaluate

    expr = parse(f"model f(x) = {text}\n").model.body
    collector = Collector("t")
    shape = Walker(collector, Scope(visible=dict(SHAPES)), "").shape(expr)
    if collector.items:
        assert shape is None and {d.code for d in collector.items} <= {"E103", "E104"}
        return
    env = {k: torch.rand(s, dtype=torch.float64) for k, s in SHAPES.items()}
    assert tuple(evaluate(expr, env).shape) == shape, text


# --- docs/language.md ------------------------------------------------------------------------

def _language_md() -> str:
    from pathlib import Path

    return (Path(__file__).resolve().parent.parent / "docs" / "language.md").read_text()


def test_language_doc_lists_every_code():
    text = _language_md()
    for code, (title, _) in CODES.items():
        assert f"| {code} | {title} |" in text, code


def test_language_doc_example_checks():
    text = _language_md()
    example = text.split("```\n", 2)[1]
    c = run(example)
    assert c.parameter_count == 512 * 16 + 512 and c.output_shape == ()


# --- model torch("package.module:Name") (more in tests/test_torch_model.py) ------------------------

TORCH_SPEC = DATA + 'model torch("certify_fixture_nets:Linear")\n' + LOSS


def test_E301_python_needs_allow_python():
    assert error(TORCH_SPEC) == (
        "spec.rq:6:13: error[E301]: model torch(\"certify_fixture_nets:Linear\") imports the Python module "
        "'certify_fixture_nets', which runs its code; certify does that only with --allow-python\n"
        "  |\n"
        "6 | model torch(\"certify_fixture_nets:Linear\")\n"
        "  |             ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^\n"
        "  = hint: rerun with --allow-python if you trust 'certify_fixture_nets'")


def test_E302_python_model_failed():
    assert error(TORCH_SPEC.replace("certify_fixture_nets:Linear", "no_such_module_for_certify:Net"),
                 allow_python=True).startswith(
        "spec.rq:6:13: error[E302]: cannot import 'no_such_module_for_certify': ModuleNotFoundError")


def test_E304_module_not_translated_in_the_sound_mode(monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parent / "fixtures"))   # more in test_torch_sound.py
    source = DATA + 'model torch("certify_fixture_sound_nets:LayerNormed")\n' + LOSS + "method interval\n"
    assert error(source, allow_python=True).startswith(
        "spec.rq:6:13: error[E304]: model torch(\"certify_fixture_sound_nets:LayerNormed\"): nn.LayerNorm at "
        "'features.1' is not supported by the sound mode (method interval)\n")


def test_E303_params_block_with_a_torch_model():
    assert error(DATA + PARAMS + 'model torch("certify_fixture_nets:Linear")\n' + LOSS,
                 allow_python=True).startswith(
        "spec.rq:6:1: error[E303]: a torch model takes its parameters from the module")
