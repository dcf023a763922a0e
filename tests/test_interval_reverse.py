"""Interval reverse mode (certifier/compile/interval_reverse.py): the Jacobian at a point.

The enclosures are checked against torch.func.jacrev's float64 Jacobian of the spec's model (or
of the PyTorch module itself) at random points, against a rigorous arb evaluation at 200 bits
(tests/arb_oracle.py: 60 digits) on small models and on random expression trees, and their widths
against the forward mode's at the same points."""
from __future__ import annotations

import arb_oracle as oracle
import numpy as np
import pytest
import torch
from arb_oracle import Undefined, all_inside
from hypothesis import given, settings
from hypothesis import strategies as st
from test_interval import SETTINGS, X3, _call, expressions, fake_checked
from test_torch_sound import FIXTURES, NETS, checked_of, module_jacobian
from torch.func import jacrev, vmap

from certifier.compile import interval_reverse as R
from certifier.compile.interval import INTERVAL_RULES
from certifier.compile.interval_model import IntervalModel
from certifier.language.evaluate import evaluate


@pytest.fixture(autouse=True)
def fixtures_on_path(monkeypatch):
    monkeypatch.syspath_prepend(str(FIXTURES))


def test_the_table_has_a_rule_for_every_forward_rule():
    assert set(R.REVERSE_RULES) == set(INTERVAL_RULES)


DATA = "data {\n  x = normal(shape=[5, 3], std=0.6, seed=0)\n  y = sin(x[:, 0]) + 0.5 * x[:, 1]\n}\n"
DATA2 = "data {\n  x = normal(shape=[5, 3], std=0.6, seed=0)\n  y = sin(x[:, 0:2])\n}\n"

# name: (params, model body, data); the parameters' initial values are replaced by random points
ARCHITECTURES = {
    "tanh, no bias, NTK division": ("W : [16, 3] = 0\n a : [16] = 0", "sum(a * tanh(W @ x)) / sqrt(16)", DATA),
    "tanh, biases": ("W : [16, 3] = 0\n b : [16] = 0\n a : [16] = 0\n c : [] = 0",
                     "(a @ tanh(W @ x / sqrt(3) + b) + c) / sqrt(16)", DATA),
    "sigmoid, biases": ("W : [12, 3] = 0\n b : [12] = 0\n a : [12] = 0", "sum(a * sigmoid(W @ x + b)) / 4", DATA),
    "softplus, biases": ("W : [12, 3] = 0\n b : [12] = 0\n a : [12] = 0", "a @ softplus(W @ x + b) / 4", DATA),
    "tanh, k = 2": ("W : [10, 3] = 0\n b : [10] = 0\n V : [2, 10] = 0\n c : [2] = 0",
                    "V @ tanh(W @ x + b) / sqrt(10) + c", DATA2),
    "3-layer MLP, biases": ("W1 : [8, 3] = 0\n b1 : [8] = 0\n W2 : [8, 8] = 0\n b2 : [8] = 0\n w3 : [8] = 0\n"
                            " b3 : [] = 0",
                            "w3 @ tanh(W2 @ tanh(W1 @ x + b1) / sqrt(8) + b2) / sqrt(8) + b3", DATA),
    "division by an interval, powers, index": (
        "W : [6, 3] = 0\n a : [6] = 0\n c : [] = 0",
        "sum(a * tanh(W @ x)) / (1 + c ** 2) + x[0] ** 3 * c - (W @ x)[2] ** 2 / 4 + 1 / (2 + a[1] ** 2)", DATA),
    "exp, log, sqrt, sin, cos": (
        "W : [6, 3] = 0\n a : [6] = 0\n c : [] = 0",
        "sum(exp(-(W @ x) ** 2) * a) + log(1 + c ** 2) * sqrt(1 + x[1] ** 2) + sin(c * x[0]) * cos(a[0] + x[2])"
        " + mean(sqrt(1 + (W @ x) ** 2))", DATA),
    "relu, abs": ("W : [6, 3] = 0\n a : [6] = 0\n c : [] = 0", "sum(a * relu(W @ x)) + abs(c) * x[1]", DATA),
    "softmax, logsumexp, mean": ("W : [4, 3] = 0\n a : [4] = 0",
                                 "logsumexp(W @ x) + sum(softmax(W @ x) * a) + mean(a * x[0])", DATA),
    "matrix parameters, sums over axes": ("A : [3, 3] = 0\n B : [3, 2] = 0",
                                          "sum(sum(tanh(A @ B) * x[0:2], axis=1)) + sum(A * A, axis=0) @ x", DATA),
}

MODULES = {"tanh_bias": DATA, "sigmoid_bias": DATA, "softplus_bias": DATA, "tanh_two_outputs": DATA2,
           "tanh_3layer": DATA, "Sequential3": DATA2, "TanhNTK": DATA}


def _spec(params: str, body: str, data: str) -> str:
    return (f'spec "reverse"\n{data}params {{\n {params}\n}}\nmodel f(x) = {body}\nloss least_squares\n'
            "region ball(center=init, radius=0.1)\nmethod interval\ncertify rate(floor=0, horizon=10)\n")


def _split(c, theta):
    params, off = {}, 0
    for name, value in c.params.items():
        size = int(np.size(value))
        params[name] = theta[off:off + size].reshape(np.shape(value))
        off += size
    return params


def spec_jacobian(c, theta: np.ndarray) -> np.ndarray:
    """d F / d theta of the spec's model by torch.func.jacrev over language.evaluate, float64."""
    body, arg = c.spec.model.body, c.spec.model.arg
    x = torch.from_numpy(np.asarray(c.x, dtype=np.float64))

    def f(th):
        env = _split(c, th)
        return vmap(lambda xi: evaluate(body, {**env, arg: xi}))(x).reshape(-1)
    return jacrev(f)(torch.from_numpy(theta.copy())).numpy()


def _points(model, count, seed, scale=0.8):
    rng = np.random.default_rng(seed)
    return [rng.normal(0.0, scale, model.m) for _ in range(count)]


def _forward(model, theta):
    """The forward mode's enclosures at the point (the reverse mode switched off)."""
    model.reverse = False
    try:
        return model.outputs(theta, None, True)
    finally:
        model.reverse = True


def _contains(J, jac):
    return np.all(J.lo <= jac) and np.all(jac <= J.hi)


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_contains_jacrev_at_random_points_and_is_as_tight_as_forward_mode(name):
    c = checked_of(_spec(*ARCHITECTURES[name]), allow_python=False)
    model = IntervalModel(c)
    assert model.reverse
    ratios = []
    for theta in _points(model, 6, 3):
        F, J = model.outputs(theta, None, True)
        jac = spec_jacobian(c, theta)
        assert J.lo.shape == jac.shape
        assert _contains(J, jac), name
        Ff, Jf = _forward(model, theta)
        assert np.array_equal(F.lo, Ff.lo) and np.array_equal(F.hi, Ff.hi)
        wr, wf = J.hi - J.lo, Jf.hi - Jf.lo
        nz = wf > 0
        ratios.append(np.median(wr[nz] / wf[nz]))
        assert np.all(wr <= 4.0 * wf + 1e-300), name      # never much wider than forward mode
    assert np.median(ratios) <= 1.5, (name, ratios)


@pytest.mark.parametrize("target", sorted(MODULES))
def test_pytorch_modules_contain_the_modules_jacobian(target):
    c = checked_of(f'spec "m"\n{MODULES[target]}model torch("{NETS}:{target}")\nloss least_squares\n'
                   "region ball(center=init, radius=0.1)\nmethod interval\ncertify rate(floor=0, horizon=10)\n")
    model = IntervalModel(c)
    assert model.reverse
    for theta in [model.theta0] + [model.theta0 + t for t in _points(model, 3, 5, 0.3)]:
        _, J = model.outputs(theta, None, True)
        assert _contains(J, module_jacobian(c, theta)), target


def test_small_chunks_enclose_the_jacobian(monkeypatch):
    """Backward passes over one sample and one output seed at a time (the memory bound): the same
    values, and the Jacobian still enclosed."""
    c = checked_of(_spec(*ARCHITECTURES["tanh, k = 2"]), allow_python=False)
    model = IntervalModel(c)
    theta = _points(model, 1, 9)[0]
    calls = []
    backward = R.backward
    monkeypatch.setattr(R, "backward", lambda node, adj, grads: (calls.append(adj.shape[:2]),
                                                                 backward(node, adj, grads)))
    F, J = model.outputs(theta, None, True)
    whole, calls[:] = list(calls), []
    monkeypatch.setattr(R, "REVERSE_CHUNK", 10)
    F2, J2 = model.outputs(theta, None, True)
    assert set(whole) == {(model.k, model.n)} and set(calls) == {(1, 1)}
    assert len(calls) == model.n * model.k * len(whole)      # the same nodes, once per sample and seed
    assert np.array_equal(F.lo, F2.lo) and np.array_equal(F.hi, F2.hi)
    jac = spec_jacobian(c, theta)
    assert _contains(J, jac) and _contains(J2, jac)
    assert np.all(J2.hi - J2.lo <= 2.0 * (J.hi - J.lo))


@pytest.mark.parametrize("name", ["tanh, biases", "tanh, k = 2", "division by an interval, powers, index",
                                  "exp, log, sqrt, sin, cos", "softmax, logsumexp, mean"])
def test_contains_the_arb_jacobian(name):
    params, body, data = ARCHITECTURES[name]
    c = checked_of(_spec(params, body, data), allow_python=False)
    model = IntervalModel(c)
    theta = _points(model, 1, 17)[0]
    _, J = model.outputs(theta, None, True)
    x, y = np.asarray(c.x), np.asarray(c.y)
    _, Jr, *_ = oracle.model_at(c.spec.model.body, c.spec.model.arg, x, y, _split(c, theta), {}, theta)
    ok, bad = all_inside(Jr, J.lo, J.hi)
    assert ok, bad


@settings(max_examples=120, **SETTINGS)
@given(expr=expressions, seed=st.integers(0, 2**16))
def test_random_expressions_at_a_point_are_enclosed(expr, seed):
    kind, e = expr
    body = _call("sum", e) if kind == "v" else e
    rng = np.random.default_rng(seed)
    params = {"w": rng.standard_normal(3), "b": rng.standard_normal(())}
    model = IntervalModel(fake_checked(body, params, X3, np.zeros(2)))
    assert model.reverse
    F, J = model.outputs(model.theta0, None, True)
    try:
        Fr, Jr, *_ = oracle.model_at(body, "x", X3, np.zeros(2), params, {}, model.theta0)
    except Undefined:
        return
    ok, bad = all_inside(Fr, F.lo, F.hi)
    assert ok, ("value", bad)
    ok, bad = all_inside(Jr, J.lo, J.hi)
    assert ok, ("jacobian", bad)
