"""model torch("mod:Net") in the sound mode: the module translated into the spec's model form
(certifier/check/torch_expr.py) against the module itself (its forward pass and torch.func
Jacobians at random points, the oracle here), the same proof as the hand-written spec, E304 for what
it cannot translate, --allow-python, and the certificate's replay. The modules are in
tests/fixtures/certify_fixture_sound_nets.py (tests/fixtures is put on sys.path here)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.func import functional_call, jacrev, vmap

from certifier import cli, pipeline
from certifier.certificate import evidence_digest
from certifier.check import check
from certifier.compile.interval_model import IntervalModel
from certifier.diagnostics import SpecError, render_text
from certifier.language.evaluate import evaluate
from certifier.parse import parse

FIXTURES = Path(__file__).resolve().parent / "fixtures"
NETS = "certify_fixture_sound_nets"

DATA = "data {\n  x = normal(shape=[4, 3], std=0.6, seed=0)\n  y = sin(x[:, 0]) + 0.5 * x[:, 1]\n}\n"
DATA2 = "data {\n  x = normal(shape=[4, 3], std=0.6, seed=0)\n  y = sin(x[:, 0:2])\n}\n"   # k = 2
DATA3 = DATA.replace("[4, 3]", "[3, 3]")     # the trajectory route closes on 3 points at width 32
TRAJECTORY = "method interval(route=trajectory)\n"


@pytest.fixture(autouse=True)
def fixtures_on_path(monkeypatch):
    monkeypatch.syspath_prepend(str(FIXTURES))


def spec(target: str, data: str = DATA, method: str = TRAJECTORY, model: str | None = None,
         region: str = "region ball(center=init, radius=auto)\n", floor: str = "0", params: str = "") -> str:
    model = model or f'model torch("{NETS}:{target}")\n'
    return (f'spec "torch {target}"\n' + data + params + model + "loss least_squares\n" + region + method
            + f"certify rate(floor={floor}, horizon=100)\n")


def checked_of(source: str, allow_python: bool = True):
    return check(parse(source, "spec.rq"), allow_python=allow_python)


def errors(source: str, allow_python: bool = True) -> list[str]:
    with pytest.raises(SpecError) as info:
        checked_of(source, allow_python)
    return [render_text(d, source) for d in info.value.diagnostics]


def module_outputs(checked, theta: np.ndarray) -> np.ndarray:
    """The module's own forward pass at the flat theta: [n, k]."""
    model = checked.model_module
    params, off = {}, 0
    for name, value in checked.params.items():
        params[name] = torch.from_numpy(theta[off:off + value.size].reshape(value.shape).copy())
        off += value.size
    with torch.no_grad():
        out = functional_call(model, params, (torch.from_numpy(np.asarray(checked.x)),))
    return out.reshape(checked.n, -1).numpy()


def module_jacobian(checked, theta: np.ndarray) -> np.ndarray:
    """d F / d theta of the module by torch.func.jacrev: [n k, m]."""
    names = list(checked.params)
    shapes = [checked.params[k].shape for k in names]
    sizes = [checked.params[k].size for k in names]
    x = torch.from_numpy(np.asarray(checked.x))

    def f(th):
        params, off = {}, 0
        for name, shape, size in zip(names, shapes, sizes):
            params[name] = th[off:off + size].reshape(shape)
            off += size
        return functional_call(checked.model_module, params, (x,)).reshape(-1)
    return jacrev(f)(torch.from_numpy(theta.copy())).numpy()


TRANSLATED = [("TanhNTK", DATA), ("Sequential3", DATA2), ("Functional", DATA), ("SoftplusNTK", DATA),
              ("Tied", DATA), ("Reshaped", DATA)]


# --- the translation is the module -------------------------------------------------------------------

@pytest.mark.parametrize("name,data", TRANSLATED, ids=[n for n, _ in TRANSLATED])
def test_translation_equals_the_forward_pass_at_random_theta(name, data):
    c = checked_of(spec(name, data))
    assert c.model_expr is not None and c.model_module is not None
    assert list(c.params) == [n for n, _ in c.model_module.named_parameters()]
    theta0 = np.concatenate([v.reshape(-1) for v in c.params.values()])
    rng = np.random.default_rng(7)
    x = torch.from_numpy(np.asarray(c.x))
    for _ in range(5):
        theta = theta0 + rng.normal(0.0, 0.5, theta0.shape)
        env, off = {}, 0
        for k, v in c.params.items():
            env[k] = torch.from_numpy(theta[off:off + v.size].reshape(v.shape).copy())
            off += v.size

        def one(xi):
            return evaluate(c.model_expr.body, {**env, c.model_expr.arg: xi})
        mine = vmap(one)(x).reshape(c.n, -1).numpy()
        np.testing.assert_allclose(mine, module_outputs(c, theta), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name,data", TRANSLATED, ids=[n for n, _ in TRANSLATED])
def test_interval_enclosures_contain_the_module_on_random_boxes(name, data):
    c = checked_of(spec(name, data))
    model = IntervalModel(c)
    rng = np.random.default_rng(11)
    y = model.yk
    for _ in range(4):
        center = model.theta0 + rng.normal(0.0, 0.3, model.m)
        half = rng.uniform(1e-3, 0.05, model.m)
        lo, hi = center - half, center + half
        F, J = model.outputs(lo, hi, True)
        enc = model.over_box(lo, hi)
        for _ in range(5):
            theta = lo + rng.uniform(0.0, 1.0, model.m) * (hi - lo)
            out = module_outputs(c, theta)
            assert np.all(F.lo <= out) and np.all(out <= F.hi)
            jac = module_jacobian(c, theta)
            assert np.all(J.lo <= jac) and np.all(jac <= J.hi)
            L = float(np.mean(np.sum((out - y) ** 2, axis=1)))
            assert enc.L.lo <= L <= enc.L.hi


# --- the same proof as the hand-written spec -----------------------------------------------------------

def test_trajectory_verdict_and_mu_equal_the_hand_written_spec():
    """The module TanhNTK and the same network written in the spec (same data and θ0): the same
    tube and terminal ball, hence the same certified rate."""
    hand = spec("hand", DATA3, params="params {\n  W : [32, 3] = normal(seed=1)\n  a : [32]    = normal(seed=2)\n}\n",
                model="model f(x) = sum(a * tanh(W @ x)) / sqrt(32)\n")
    a = pipeline.run_text(spec("TanhNTK", DATA3), "spec.rq", pipeline.RunOptions(allow_python=True))
    b = pipeline.run_text(hand, "spec.rq", pipeline.RunOptions())
    assert a.verdict == b.verdict == "certified" and a.sound is True and b.sound is True
    assert a.loss["initial"] == pytest.approx(b.loss["initial"], rel=1e-13)
    assert a.mu == pytest.approx(b.mu, rel=1e-9) and a.mu > 0
    for t in (0.0, 1.0, 5.0, 20.0, 80.0):
        assert a.bound(t) == pytest.approx(b.bound(t), rel=1e-9)
    # and the bound is above real gradient descent on the module itself (torch autograd, step 1e-2)
    c = checked_of(spec("TanhNTK", DATA3))
    theta = torch.from_numpy(np.concatenate([v.reshape(-1) for v in c.params.values()]).copy())
    y = torch.from_numpy(np.asarray(c.y))

    def loss(th):
        return torch.mean((torch.from_numpy(module_outputs(c, th.numpy())).reshape(-1) - y) ** 2)

    def grad(th):
        return torch.from_numpy(((2.0 / c.n) * (module_jacobian(c, th.numpy()).T
                                                @ (module_outputs(c, th.numpy()).reshape(-1) - y.numpy()))))
    eta = 1e-2
    for k in range(3001):
        if k % 250 == 0:
            assert float(loss(theta)) <= a.bound(k * eta) * (1 + 1e-9), k
        theta = theta - eta * grad(theta)


def test_box_proof_equals_the_hand_written_spec(tmp_path, monkeypatch):
    """A linear module (tests/fixtures/certify_fixture_nets.py) on a box: μ by the subspace rule,
    the same as for `w @ x`."""
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 2))
    np.savez(tmp_path / "d.npz", x=x, y=x @ np.array([1.0, -0.5]))
    tail = ("loss least_squares\nregion box(center=init, halfwidth=3)\nmethod interval(boxes=50)\n"
            "certify rate(floor=1e-12, horizon=100)\n")
    torch_spec = 'spec "l"\ndata from "d.npz"\nmodel torch("certify_fixture_nets:Linear")\n' + tail
    hand = 'spec "l"\ndata from "d.npz"\nparams { w : [1, 2] = zeros() }\nmodel f(x) = (w @ x)[0]\n' + tail
    a = pipeline.run_text(torch_spec, "spec.rq", pipeline.RunOptions(allow_python=True))
    b = pipeline.run_text(hand, "spec.rq", pipeline.RunOptions())
    assert a.verdict == b.verdict == "certified" and a.sound is True
    assert a.mu == b.mu and a.mu_source == b.mu_source == "subspace"
    # the closed form: mu = lambda_min(X^T X / n) (1 - L*/L), L* = 0 up to rounding (docs/theory.md 5)
    exact = np.linalg.eigvalsh(x.T @ x / 8).min()
    assert exact * (1 - 1e-6) <= a.mu <= exact


def test_three_layer_two_outputs_enclosures_equal_the_hand_written_model(tmp_path, monkeypatch):
    """Sequential3 (biases, tanh then sigmoid, k = 2) and the same network written in the spec
    with its weights from an .npz: the interval engine sees one model (equal enclosures)."""
    monkeypatch.chdir(tmp_path)
    c = checked_of(spec("Sequential3", DATA2))
    keys = ["A", "a", "B", "b", "C", "c"]
    np.savez(tmp_path / "w.npz", **{k: v for k, v in zip(keys, c.params.values())})
    hand = spec("hand", DATA2, params='params from "w.npz"\n',
                model="model f(x) = C @ sigmoid(B @ tanh(A @ x + a) + b) + c\n")
    h = check(parse(hand, str(tmp_path / "spec.rq")))
    mt, mh = IntervalModel(c), IntervalModel(h)
    assert mt.m == mh.m == 100 and mt.k == mh.k == 2
    np.testing.assert_array_equal(mt.theta0, mh.theta0)
    rng = np.random.default_rng(3)
    for _ in range(3):
        half = rng.uniform(1e-3, 0.05, mt.m)
        et, eh = mt.over_box(mt.theta0 - half, mt.theta0 + half), mh.over_box(mh.theta0 - half, mh.theta0 + half)
        for u, v in ((et.F, eh.F), (et.J, eh.J), (et.L, eh.L), (et.grad, eh.grad)):
            np.testing.assert_array_equal(u.lo, v.lo)
            np.testing.assert_array_equal(u.hi, v.hi)


# --- what it cannot translate ------------------------------------------------------------------------------

def test_unsupported_layer_is_E304_at_the_target(tmp_path, monkeypatch, capsys):
    source = spec("LayerNormed")
    (message,) = errors(source)
    target = f'"{NETS}:LayerNormed"'
    assert message == (
        f"spec.rq:6:13: error[E304]: model torch({target}): nn.LayerNorm at 'features.1' is not supported by "
        "the sound mode (method interval)\n"
        "  |\n"
        f"6 | model torch({target})\n"
        "  |             " + "^" * len(target) + "\n"
        "  = hint: the sound mode translates nn.Linear, nn.Tanh, nn.Sigmoid, nn.Softplus (beta=1, threshold=20), "
        "nn.ReLU, nn.Identity, nn.Dropout, nn.Flatten and nn.Sequential of them; torch.tanh, sigmoid, relu, "
        "softplus, exp, log, sin, cos, sqrt, abs, F.linear, @ by a parameter, + - * / ** with numbers or "
        "parameters, sum and mean over a sample's own axes, x[:, i], .squeeze(-1), .view(-1) of one output; use "
        "method sampled(...) for other modules")
    # the command line: exit 2, the diagnostic on stderr, no traceback
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.rq").write_text(source)
    code = cli.main(["s.rq", "--no-cache", "--allow-python"])
    out, err = capsys.readouterr()
    assert code == 2 and "error[E304]" in err and "nn.LayerNorm at 'features.1'" in err
    assert "Traceback" not in out + err


@pytest.mark.parametrize("name,data,text", [
    ("Conv", "data {\n  x = normal(shape=[4, 1, 2, 2], seed=0)\n  y = x[:, 0, 0, 0:1]\n}\n",
     "nn.Conv2d at 'features.0' is not supported by the sound mode (method interval)"),
    ("Branching", DATA, "the forward pass is not supported by the sound mode (method interval): torch.fx cannot "
                        "trace it (TraceError: symbolically traced variables cannot be used as inputs to control flow)"),
    ("Centred", DATA, "the method .mean() is not supported by the sound mode (method interval): over the sample "
                      "axis (dim=0) or all axes: it would mix samples"),
    ("SoftplusBeta", DATA, "nn.Softplus(beta=2.0, threshold=20.0) at 'act' is not supported by the sound mode "
                           "(method interval): the language's softplus is torch's with beta=1, threshold=20"),
    ("WithVectorBuffer", DATA, "the tensor 'shift' is not supported by the sound mode (method interval): the "
                               "sound mode reads parameters and scalar buffers"),
], ids=["Conv", "Branching", "Centred", "SoftplusBeta", "WithVectorBuffer"])
def test_what_is_not_translated_is_named(name, data, text):
    (message,) = errors(spec(name, data))
    assert f"error[E304]: model torch(\"{NETS}:{name}\"): {text}" in message


def test_weights_from_a_file_are_the_translated_models_theta0(tmp_path, monkeypatch):
    """params from "w.npz" with a module: θ0 is the file's, for the translation's check at θ0 and
    for the interval model, whose enclosure at θ0 holds the module's output there."""
    monkeypatch.chdir(tmp_path)
    module = checked_of(spec("TanhNTK")).model_module
    rng = np.random.default_rng(5)
    state = {k: v.detach().numpy() + rng.normal(0.0, 0.1, tuple(v.shape)) for k, v in module.named_parameters()}
    np.savez(tmp_path / "w.npz", **state)
    c = check(parse(spec("TanhNTK", params='params from "w.npz"\n'), str(tmp_path / "spec.rq")), allow_python=True)
    model = IntervalModel(c)
    theta = np.concatenate([state[k].reshape(-1) for k in c.params])
    np.testing.assert_array_equal(model.theta0, theta)
    F, _ = model.outputs(theta, None, False)
    out = module_outputs(c, theta)
    assert np.all(F.lo <= out) and np.all(out <= F.hi)
    assert np.all(F.hi - F.lo <= 1e-9 * (1 + np.abs(out)))      # a point: libm margins 2^-40 only


def test_the_sampled_mode_takes_any_module():
    source = spec("LayerNormed", method="method sampled(samples=64, seed=0)\n")
    c = checked_of(source)
    assert c.model_expr is None                     # no translation outside the sound mode
    r = pipeline.run_text(source, "spec.rq", pipeline.RunOptions(allow_python=True))
    assert r.verdict in ("certified", "refuted", "inconclusive") and r.sound is False


def test_without_allow_python_it_is_refused_and_nothing_imported():
    sys.modules.pop(NETS, None)
    (message,) = errors(spec("TanhNTK"), allow_python=False)
    assert "error[E301]: model torch(\"certify_fixture_sound_nets:TanhNTK\") imports the Python module" in message
    assert NETS not in sys.modules


# --- the certificate -----------------------------------------------------------------------------------------

def _check(capsys, path, *flags):
    code = cli.main(["check", str(path), *flags])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out + err


def test_certificate_replayed_and_tampering_rejected(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PYTHONPATH", str(FIXTURES))
    (tmp_path / "s.rq").write_text(spec("TanhNTK", DATA3))
    assert cli.main(["s.rq", "--quiet", "--no-cache", "--allow-python", "--emit", "cert.json"]) == 0
    capsys.readouterr()
    cert = json.loads((tmp_path / "cert.json").read_text())
    assert cert["verdict"] == "certified" and cert["sound"] is True and cert["allow_python"] is True
    assert cert["evidence"][0]["kind"] == "sound-tube"
    code, out = _check(capsys, tmp_path / "cert.json", "--allow-python")
    assert code == 0 and out.startswith("certificate valid"), out
    code, out = _check(capsys, tmp_path / "cert.json")          # the module is code: not run unasked
    assert code == 2 and "--allow-python" in out

    def tampered(change) -> Path:
        c = json.loads((tmp_path / "cert.json").read_text())
        change(c)
        c["evidence_count"], c["evidence_digest"] = len(c["evidence"]), evidence_digest(c["evidence"])
        path = tmp_path / "bad.json"
        path.write_text(json.dumps(c))
        return path

    def moved(c):                    # a checkpoint moved by 1e-2 in one coordinate
        th = c["evidence"][5]["theta"]
        th[3] = (float.fromhex(th[3]) + 1e-2).hex()
    code, out = _check(capsys, tampered(moved), "--allow-python")
    assert code == 1 and "does not close" in out, out

    def faster(c):                   # a larger mu for the terminal ball
        term = c["evidence"][0]["terminal"]
        term["mu"] = (float.fromhex(term["mu"]) * 1.5).hex()
    code, out = _check(capsys, tampered(faster), "--allow-python")
    assert code == 1 and "ball rule" in out, out


# --- the practice spec: a width-256 PyTorch module certified along its trajectory ---------------------------

@pytest.mark.slow
@pytest.mark.parametrize("name", ["torch_tanh_ntk_sound.rq",
                                  pytest.param("torch_wide_tanh_16_points_sound.rq", marks=pytest.mark.slow)])
def test_practice_torch_module_is_certified_above_the_flow_and_descent(monkeypatch, name):
    """specs/practice/torch_tanh_ntk_sound.rq (about 10 s on 2 shared cores) and issue 18's goal
    network as a module (about 4 minutes, slow): certified soundly, and the bound lies above an
    independent DOP853 solve of the module's gradient flow (rtol 1e-10) and above real gradient
    descent on the module (torch autograd)."""
    from scipy.integrate import solve_ivp

    path = Path(__file__).resolve().parents[1] / "specs" / "practice" / name
    monkeypatch.syspath_prepend(str(path.parent))
    r = pipeline.run_file(str(path), pipeline.RunOptions(allow_python=True))
    assert r.verdict == "certified" and r.sound is True and r.mu > 0
    c = check(parse(path.read_text(), str(path)), allow_python=True)
    names = list(c.params)
    shapes = [c.params[k].shape for k in names]
    x, y = torch.from_numpy(np.asarray(c.x)), torch.from_numpy(np.asarray(c.y))

    def loss(th):
        params, off = {}, 0
        for name, shape in zip(names, shapes):
            size = int(np.prod(shape))
            params[name] = th[off:off + size].reshape(shape)
            off += size
        return torch.mean((functional_call(c.model_module, params, (x,)).reshape(-1) - y) ** 2)

    def grad(th: np.ndarray) -> np.ndarray:
        t = torch.from_numpy(th.copy()).requires_grad_(True)
        (g,) = torch.autograd.grad(loss(t), t)
        return g.numpy()
    theta0 = np.concatenate([c.params[k].reshape(-1) for k in names])
    assert float(loss(torch.from_numpy(theta0))) == pytest.approx(r.loss["initial"], rel=1e-12)
    times = np.concatenate([np.linspace(0.0, 60.0, 25), np.linspace(80.0, 600.0, 14)])
    sol = solve_ivp(lambda _t, th: -grad(th), (0.0, float(times[-1])), theta0, method="DOP853",
                    rtol=1e-10, atol=1e-12, t_eval=times)
    assert sol.success
    for t, th in zip(sol.t, sol.y.T):
        assert float(loss(torch.from_numpy(th))) <= r.bound(float(t)), t
    eta, theta = 0.05, theta0.copy()
    for k in range(int(600 / eta) + 1):
        if k % 200 == 0:
            assert float(loss(torch.from_numpy(theta))) <= r.bound(k * eta), k * eta
        theta = theta - eta * grad(theta)
