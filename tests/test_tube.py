"""The trajectory route's tube (certifier/analyse/sound/tube.py, docs/theory.md 10.9) against
independent computations: a high-accuracy solve_ivp solution of the gradient flow (rtol 1e-10),
real gradient descent, torch Hessians for the one-sided Lipschitz bound, and a tampered replay."""
from __future__ import annotations

import contextlib
import json
import os
import re

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp

from certifier import cli
from certifier.analyse.sound import tube as T
from certifier.analyse.sound.ball import BallModel
from certifier.certificate import evidence_digest
from certifier.check import check
from certifier.compile.interval_model import IntervalModel
from certifier.diagnostics import SpecError
from certifier.parse import parse
from certifier.progress import BudgetExceeded

SPEC = """spec "small NTK tanh network from a random initialisation"
data {
  x = normal(shape=[3, 3], std=0.6, seed=0)
  y = sin(x[:, 0]) + 0.5 * x[:, 1]
}
params {
  W : [32, 3] = normal(seed=1)
  a : [32]    = normal(seed=2)
}
model f(x) = sum(a * tanh(W @ x)) / sqrt(32)
loss least_squares
region ball(center=init, radius=auto)
method interval(route=trajectory)
certify rate(floor=0, horizon=100)
"""


@pytest.fixture(scope="module")
def setup():
    checked = check(parse(SPEC, "tube.rq"))
    model = IntervalModel(checked)
    bm = BallModel(model)
    tube = T.build(model, bm, cap=0.02, target_loss=0.0, max_segments=12, h0=1 / 16)
    return checked, model, bm, tube


def _torch_fns(model):
    x = torch.tensor(model.x)
    y = torch.tensor(model.yk.reshape(-1))
    h = 32

    def F(theta):
        W = theta[:h * 3].reshape(h, 3)
        a = theta[h * 3:]
        return (torch.tanh(x @ W.T) @ a) / np.sqrt(h)

    def L(theta):
        return torch.mean((F(theta) - y) ** 2)
    return F, L


def _flow(model, t_end, times):
    _, L = _torch_fns(model)

    def rhs(_t, th):
        v = torch.tensor(th, requires_grad=True)
        (g,) = torch.autograd.grad(L(v), v)
        return -g.numpy()
    sol = solve_ivp(rhs, (0.0, t_end), model.theta0, method="DOP853", rtol=1e-10, atol=1e-12, t_eval=times)
    assert sol.success
    return sol.y.T, L


def test_order_of_parameters(setup):
    _, model, _, _ = setup
    assert model.names == ["W", "a"]


def test_tube_contains_the_flow_and_bounds_the_loss(setup):
    _, model, bm, tube = setup
    assert len(tube.segments) == 12
    c = 2.0 / model.n
    times, centres, radii = [], [], []
    for s in tube.segments:
        tg = T.tangent(model, s.theta)
        for frac in (0.0, 0.25, 0.5, 0.75, 1.0):
            tau = frac * s.h
            phi, _ = T.phi_end(tg, c, tau) if tau > 0 else (np.zeros_like(tg.ur), None)
            times.append(s.t + tau)
            centres.append(tg.theta + tg.B @ phi)
            radii.append(s.e_out if frac > 0 else s.e_in)
    grid, index = np.unique(np.array(times), return_inverse=True)
    flow, L = _flow(model, float(grid[-1]), grid)
    exact = flow[index]
    bound = T.bound_function(tube)
    for t, th, cen, rad in zip(times, exact, centres, radii):
        dist = float(np.linalg.norm(th - cen))
        assert dist <= rad, (t, dist, rad)
        loss = float(L(torch.tensor(th)))
        assert loss <= bound(t) * (1 + 1e-12), (t, loss, bound(t))
    # the tube is informative: its radius stays far below the distance travelled
    assert tube.end_e < 0.1 * float(np.linalg.norm(flow[-1] - model.theta0))


def test_loss_bound_above_gradient_descent(setup):
    _, model, _, tube = setup
    _, L = _torch_fns(model)
    bound = T.bound_function(tube)
    theta = torch.tensor(model.theta0, requires_grad=True)
    eta = 1e-3
    steps = int(tube.end_time / eta)
    for k in range(steps + 1):
        loss = L(theta)
        value = float(loss.detach())
        assert value <= bound(k * eta), (k * eta, value, bound(k * eta))
        (g,) = torch.autograd.grad(loss, theta)
        theta = (theta - eta * g).detach().requires_grad_(True)


def test_one_sided_lipschitz_bound_against_torch_hessian(setup):
    _, model, bm, tube = setup
    _, L = _torch_fns(model)
    rng = np.random.default_rng(0)
    for s in tube.segments[::4]:
        tg = T.tangent(model, s.theta)
        nums = T.segment_numbers(model, bm, tg, s.h, s.rho)
        R = nums["ball_radius"]
        for _ in range(3):
            u = rng.normal(size=model.m)
            u *= R * rng.uniform() ** (1 / model.m) / np.linalg.norm(u)
            H = torch.autograd.functional.hessian(L, torch.tensor(s.theta + u)).numpy()
            lam_min = float(np.linalg.eigvalsh(H)[0])
            assert -lam_min <= nums["ell"], (lam_min, nums["ell"])


def _exact_jacobian(model, theta, mpmath):
    """J and r = F - y at theta in mpmath (40 digits): the spec's model, sum(a * tanh(W @ x)) / sqrt(32)."""
    h, d = 32, model.x.shape[1]
    W = [[mpmath.mpf(float(v)) for v in row] for row in theta[:h * d].reshape(h, d)]
    a = [mpmath.mpf(float(v)) for v in theta[h * d:]]
    s = 1 / mpmath.sqrt(32)
    J = mpmath.matrix(model.n, model.m)
    r = mpmath.matrix(model.n, 1)
    for i, xi in enumerate(model.x):
        x = [mpmath.mpf(float(v)) for v in xi]
        F = 0
        for j in range(h):
            t = mpmath.tanh(mpmath.fsum(W[j][c] * x[c] for c in range(d)))
            F += a[j] * t * s
            for c in range(d):
                J[i, j * d + c] = a[j] * (1 - t * t) * x[c] * s
            J[i, h * d + j] = t * s
        r[i] = F - mpmath.mpf(float(model.yk.reshape(-1)[i]))
    return J, r


def _mp(A, mpmath):
    return mpmath.matrix([[mpmath.mpf(float(v)) for v in row] for row in np.atleast_2d(A)])


def test_checkpoint_bounds_against_high_precision(setup):
    """tangent's bounds, formed from the Gram matrix of the midpoint and the radius's norms, hold for the
    exact Jacobian (mpmath, 40 digits): ||J||_2, the row norms, sigma_min, ||B||_2 and B's column norms,
    |J B| <= JB entrywise,
    C >= |J^T r - B ur|, M >= ||J^T J B - B diag(lam)||_2, and jacobian_distance >= ||J' - J||_2; and
    ||J||_2, sigma_min and the distance are tight (the signed norms, not the magnitudes')."""
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.dps = 40
    _, model, _, tube = setup
    segs = tube.segments
    for s, nxt in ((segs[0], segs[1]), (segs[7], segs[8])):
        tg, tn = T.tangent(model, s.theta), T.tangent(model, nxt.theta)
        J, r = _exact_jacobian(model, s.theta, mpmath)
        sv = mpmath.svd_r(J, compute_uv=False)
        top, low = max(sv), min(sv)
        assert top <= tg.Jnorm <= top * (1 + 1e-9), (tg.Jnorm, top)
        assert tg.sigma is not None and low * (1 - 1e-9) <= tg.sigma <= low, (tg.sigma, low)
        for i in range(model.n):
            assert mpmath.norm(J[i, :]) <= tg.rows[i]
        B = _mp(tg.Jm, mpmath).T * _mp(tg.U, mpmath)             # B = Jm^T U exactly (never formed)
        assert max(mpmath.svd_r(B, compute_uv=False)) <= tg.Bnorm
        for k in range(B.cols):
            assert mpmath.norm(B[:, k]) <= tg.Bcols[k]
        JB = J * B
        for i in range(JB.rows):
            for k in range(JB.cols):
                assert abs(JB[i, k]) <= tg.JB[i, k]
        ur = _mp(tg.ur.reshape(-1, 1), mpmath)
        assert mpmath.norm(J.T * r - B * ur) <= tg.C
        Mx = J.T * (J * B) - B * mpmath.diag([mpmath.mpf(float(v)) for v in tg.lam])
        assert max(mpmath.svd_r(Mx, compute_uv=False)) <= tg.M
        Jn, _ = _exact_jacobian(model, nxt.theta, mpmath)
        dist = max(mpmath.svd_r(Jn - J, compute_uv=False))
        bound = T.jacobian_distance(tg, tn)
        assert dist <= bound <= dist * (1 + 1e-6), (bound, dist)


def test_replay_accepts_and_rejects_tampering(setup):
    _, model, bm, tube = setup
    segs = tube.segments[:4]
    thetas = [s.theta for s in segs] + [tube.segments[4].theta]
    hs = [s.h for s in segs]
    rhos = [s.rho for s in segs]
    out = T.replay(model, bm, thetas, hs, rhos)
    assert out["end_e"] == pytest.approx(tube.segments[4].e_in, rel=1e-9)
    moved = [t.copy() for t in thetas]
    moved[2][5] += 1e-2
    with pytest.raises(ValueError):
        T.replay(model, bm, moved, hs, rhos)
    shrunk = list(rhos)
    shrunk[1] = shrunk[1] / 10
    with pytest.raises(ValueError):
        T.replay(model, bm, thetas, hs, shrunk)


# --- the row-space split (docs/theory.md 10.12) ------------------------------------------------------

@pytest.fixture(scope="module")
def long_tube(setup):
    """The route's whole tube (tube and terminal ball proved, about 90 segments): the split contracts
    (alpha > 0) once the loss is small."""
    _, model, bm, _ = setup
    return T.route(model, floor=0.0)


def test_split_bounds_hold_the_flow_components(setup, long_tube):
    """|P e| and |(1 - P) e| of the true error (DOP853 flow minus the comparison curve, P from numpy's
    SVD of the torch Jacobian at the checkpoint) lie below the proved a_sup and b_sup."""
    _, model, _, _ = setup
    tube = long_tube
    assert tube.terminal is not None
    segs = [s for s in tube.segments if s.rho_row is not None]
    contracting = [s for s in segs if s.alpha > 0 and s.a_sup < 0.95 * s.e_out]
    assert len(contracting) >= 5                         # the split is strictly better there
    F, _ = _torch_fns(model)
    c = 2.0 / model.n
    picks = segs[::6] + contracting[-3:]
    times, centres, rows = [], [], []
    for s in picks:
        tg = T.tangent(model, s.theta)
        J = torch.autograd.functional.jacobian(F, torch.tensor(s.theta)).numpy()
        V = np.linalg.svd(J, full_matrices=False)[2]         # orthonormal basis of the row space
        for frac in (0.5, 1.0):
            times.append(s.t + frac * s.h)
            centres.append(tg.theta + tg.B @ T.phi_end(tg, c, frac * s.h)[0])
            rows.append((V, s))
    grid, index = np.unique(np.array(times), return_inverse=True)
    flow, _ = _flow(model, float(grid[-1]), grid)
    for th, cen, (V, s) in zip(flow[index], centres, rows):
        e = th - cen
        a = float(np.linalg.norm(V @ e))
        b = float(np.linalg.norm(e - V.T @ (V @ e)))
        assert a <= s.a_sup and b <= s.b_sup, (s.t, a, s.a_sup, b, s.b_sup)
        assert float(np.linalg.norm(e)) <= s.e_out


def test_comparison_system_against_solve_ivp():
    """bounds(): the sups and ends are above the solution of the linear Metzler system
    a' = -alpha a + beta b + d, b' = beta a + ell b + d (scipy, rtol 1e-12) with the same data."""
    rng = np.random.default_rng(3)
    for _ in range(20):
        alpha, beta, ell = rng.uniform(-0.05, 0.2), rng.uniform(0, 0.05), rng.uniform(0, 0.05)
        d, h = rng.uniform(0, 1e-3), float(2.0 ** rng.integers(-4, 2))
        a0, b0 = rng.uniform(0, 0.01), rng.uniform(0, 0.01)
        M = np.array([[-alpha, beta], [beta, ell]])
        sol = solve_ivp(lambda _t, u: M @ u + d, (0.0, h), [a0, b0], method="DOP853", rtol=1e-12, atol=1e-15,
                        dense_output=True)
        path = sol.sol(np.linspace(0.0, h, 201))
        a_max, b_max = path[0].max(), path[1].max()
        nums = {"ell": ell, "defect": d, "alpha": alpha, "beta": beta}
        # assumptions at the true sups (times 1 + 1e-9): the bounds must lie above the solution (e_in = 1
        # keeps the Gronwall bound on |e|, valid for the flow but not for this synthetic system, out of the min)
        out = T.bounds(nums, h, 1.0, a0, b0, 10.0, a_max * (1 + 1e-9) + 1e-300, b_max * (1 + 1e-9) + 1e-300)
        assert out["E_gronwall"] > 1.0
        assert out["a_sup"] >= a_max * (1 - 1e-12) and out["b_sup"] >= b_max * (1 - 1e-12)
        assert out["a_end"] >= path[0][-1] * (1 - 1e-12) and out["b_end"] >= path[1][-1] * (1 - 1e-12)
        sup_norm = float(np.hypot(path[0], path[1]).max())
        assert out["E"] >= sup_norm * (1 - 1e-12)


def test_contract_against_the_closed_form():
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.dps = 40
    for alpha, g, a0, h in [(0.03, 1e-4, 0.004, 1.0), (2.0, 0.5, 0.0, 0.25), (1e-6, 1e-3, 1.0, 8.0),
                            (0.5, 0.0, 0.01, 0.0625)]:
        sup, end = T.contract(alpha, g, a0, h)
        A, G, X, H = map(mpmath.mpf, (alpha, g, a0, h))
        exact = X * mpmath.exp(-A * H) + G * (1 - mpmath.exp(-A * H)) / A
        assert end >= exact and end <= exact * (1 + 1e-8)      # tight (1 - e^-x by exp loses digits at small x)
        assert sup >= max(X, exact)


def test_a_split_too_thin_is_rejected(setup, long_tube):
    _, model, bm, _ = setup
    segs = long_tube.segments
    j = next(i for i, s in enumerate(segs) if s.rho_row is not None and s.alpha > 0 and s.a_sup < 0.95 * s.e_out)
    segs = segs[:j + 2]
    thetas = [s.theta for s in segs] + [long_tube.segments[j + 2].theta]
    hs, rhos = [s.h for s in segs], [s.rho for s in segs]
    rr, rn = [s.rho_row for s in segs], [s.rho_null for s in segs]
    out = T.replay(model, bm, thetas, hs, rhos, rr, rn)
    assert out["end_e"] == long_tube.segments[j + 2].e_in
    assert out["end_row"] == long_tube.segments[j + 2].a_in < out["end_e"]
    thin = list(rr)
    thin[j] = segs[j].a_sup / 2                     # below the row component's proved sup
    with pytest.raises(ValueError, match="not below the assumed radius"):
        T.replay(model, bm, thetas, hs, rhos, thin, rn)
    thin = list(rn)
    thin[j] = segs[j].b_sup / 2
    with pytest.raises(ValueError, match="not below the assumed radius"):
        T.replay(model, bm, thetas, hs, rhos, rr, thin)


# --- the certificate: emitted, replayed by `certify check`, tampering rejected --------------------------

def _tamper(path, change):
    c = json.loads(path.read_text())
    change(c)
    c["evidence_count"], c["evidence_digest"] = len(c["evidence"]), evidence_digest(c["evidence"])  # a forger's
    path.write_text(json.dumps(c))


def _check(capsys, path):
    code = cli.main(["check", str(path)])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out


@pytest.fixture(scope="module")
def emitted(tmp_path_factory):
    """A certificate of SPEC written by `certify --emit` (once for the module)."""
    root = tmp_path_factory.mktemp("tube_cert")
    (root / "s.rq").write_text(SPEC)
    cwd = os.getcwd()
    os.chdir(root)
    try:
        assert cli.main(["s.rq", "--quiet", "--no-cache", "--emit", "cert.json"]) == 0
    finally:
        os.chdir(cwd)
    return root, (root / "cert.json").read_text()


def _tampered(emitted, tmp_path, change):
    root, base = emitted
    (tmp_path / "s.rq").write_text(SPEC)
    path = tmp_path / "cert.json"
    path.write_text(base)
    if change is not None:
        _tamper(path, change)
    return path


def test_certificate_replayed_and_a_moved_checkpoint_rejected(emitted, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    cert = json.loads(emitted[1])
    assert cert["verdict"] == "certified" and cert["sound"]
    kinds = [e["kind"] for e in cert["evidence"]]
    assert kinds[0] == "sound-tube" and kinds.count("sound-checkpoint") == cert["evidence"][0]["segments"] + 1
    assert jsonschema_errors(cert) == []
    code, out = _check(capsys, _tampered(emitted, tmp_path, None))
    assert code == 0 and out.startswith("certificate valid"), out

    def moved(c):                    # a checkpoint moved by 1e-2 in one coordinate
        th = c["evidence"][5]["theta"]
        th[3] = (float.fromhex(th[3]) + 1e-2).hex()
    code, out = _check(capsys, _tampered(emitted, tmp_path, moved))
    assert code == 1 and "does not close" in out, out

    def thin(c):                     # the row-space split's assumed radius shrunk tenfold
        e = next(e for e in c["evidence"][1:] if "rho_row" in e and e["index"] > 2)
        e["rho_row"] = (float.fromhex(e["rho_row"]) / 10).hex()
    code, out = _check(capsys, _tampered(emitted, tmp_path, thin))
    assert code == 1 and "not below the assumed radius" in out, out


@pytest.mark.slow
def test_certificate_tampering_rejected(emitted, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()

    def shrunk(c):                   # an assumed radius shrunk tenfold
        e = c["evidence"][3]
        e["rho"] = (float.fromhex(e["rho"]) / 10).hex()
    code, out = _check(capsys, _tampered(emitted, tmp_path, shrunk))
    assert code == 1 and "not below the assumed radius" in out, out

    def lower(c):                    # a lowered point of the proved curve
        c["rate"]["curve"][3][1] /= 2
    code, out = _check(capsys, _tampered(emitted, tmp_path, lower))
    assert code == 1 and "curve" in out, out

    def faster(c):                   # a larger mu for the terminal ball
        term = c["evidence"][0]["terminal"]
        term["mu"] = (float.fromhex(term["mu"]) * 1.5).hex()
    code, out = _check(capsys, _tampered(emitted, tmp_path, faster))
    assert code == 1 and "ball rule" in out, out


def jsonschema_errors(cert):
    jsonschema = pytest.importorskip("jsonschema")
    from importlib import resources
    s = json.loads(resources.files("certifier").joinpath("schemas/certificate.schema.json").read_text("utf-8"))
    return [e.message for e in jsonschema.Draft202012Validator(s).iter_errors(cert)]


def test_route_option_is_checked():
    bad = SPEC.replace("route=trajectory", "route=trajectry")
    with pytest.raises(SpecError) as info:
        check(parse(bad, "bad.rq"))
    d = info.value.diagnostics[0]
    assert d.code == "E109" and "route must be region or trajectory" in d.message and "trajectory" in d.hint


def test_the_tolerance_option_thins_the_tube(tmp_path):
    """method interval(route=trajectory, tolerance=...): a smaller per-segment error takes more,
    shorter segments and ends with a thinner tube; still certified. A non-positive value is E109."""
    from certifier.pipeline import run_text
    default = run_text(SPEC, "t.rq")
    thin = run_text(SPEC.replace("route=trajectory)", "route=trajectory, tolerance=0.001)"), "t.rq")
    assert default.verdict == thin.verdict == "certified" and default.sound and thin.sound
    a, b = default.rate["tube"], thin.rate["tube"]
    assert b["segments"] > 1.5 * a["segments"], (a["segments"], b["segments"])
    at = [c["tube_radius"] for c in a["checkpoints"] if c["t"] <= 5.0][-1]
    bt = [c["tube_radius"] for c in b["checkpoints"] if c["t"] <= 5.0][-1]
    assert bt < 0.6 * at, (at, bt)
    path = tmp_path / "bad.rq"
    path.write_text(SPEC.replace("route=trajectory)", "route=trajectory, tolerance=0)"))
    with pytest.raises(SpecError) as info:
        run_text(path.read_text(), str(path))
    assert [d.code for d in info.value.diagnostics] == ["E109"] and "tolerance" in info.value.diagnostics[0].message


def test_the_segments_option_is_the_tubes_budget(tmp_path):
    """method interval(route=trajectory, segments=N): the tube takes at most N segments; a run that
    uses them up ends inconclusive with the loss bound it proved and a suggestion naming segments=.
    Enough segments certify as by default. Zero or a fraction is E109."""
    from certifier.pipeline import run_text
    short = run_text(SPEC.replace("route=trajectory)", "route=trajectory, segments=5)"), "t.rq")
    assert short.verdict == "inconclusive" and short.failing_region.numbers["segments"] == 5
    assert "segments=N) above the 5 of this run, which it used up" in short.failing_region.suggestion
    assert short.failing_region.numbers["loss_upper_at_end"] < run_text(SPEC, "t.rq").rate["tube"]["checkpoints"][0][
        "loss_upper"]
    default = run_text(SPEC, "t.rq")
    enough = run_text(SPEC.replace("route=trajectory)", f"route=trajectory, segments={default.rate['tube']['segments']})"),
                      "t.rq")
    assert enough.verdict == "certified" and enough.mu == default.mu
    for bad in ("0", "2.5"):
        path = tmp_path / "bad.rq"
        path.write_text(SPEC.replace("route=trajectory)", f"route=trajectory, segments={bad})"))
        with pytest.raises(SpecError) as info:
            run_text(path.read_text(), str(path))
        assert [d.code for d in info.value.diagnostics] == ["E109"] and "segments" in info.value.diagnostics[0].message


class _StopAfter:
    """A reporter whose 'trajectory tube' phase raises BudgetExceeded at its k-th advance (the
    deadline passing between two segments), as progress.DeadlineReporter does."""

    def __init__(self, k):
        self.k = k

    @contextlib.contextmanager
    def phase(self, description, total=None):
        calls = [0]

        def advance(n=1):
            calls[0] += 1
            if description.startswith("trajectory tube") and calls[0] >= self.k:
                raise BudgetExceeded(description)
        yield advance


def test_a_budget_stop_in_the_tube_reports_the_bound_it_had_proved(setup):
    """--budget running out after 4 segments: the partial report gives the tube's loss bound at its
    end, which holds for every later t (L falls along the flow): above a DOP853 solve of the flow
    there and at later times."""
    from certifier.pipeline import RunOptions, run_text
    _, model, _, _ = setup
    with pytest.raises(BudgetExceeded) as info:
        run_text(SPEC, "t.rq", RunOptions(reporter=_StopAfter(4)))
    detail = info.value.detail
    assert "(4 of at most 400 segments" in detail and "no rate is claimed" in detail
    assert info.value.suggestion.startswith("raise --budget")
    bound = float(re.search(r"L\(t\) <= ([0-9.e+-]+) for every t >= ([0-9.e+-]+)", detail).group(1))
    T_end = float(re.search(r"for every t >= ([0-9.e+-]+) ", detail).group(1))
    times = [T_end, 2 * T_end, 10 * T_end]
    path, L = _flow(model, times[-1], times)
    for th in path:
        assert float(L(torch.tensor(th))) <= bound
    assert bound < float(L(torch.tensor(model.theta0)))


def test_the_terminal_ball_is_tried_once_more_where_the_tube_ends(setup):
    """Tries are made at every halving of the loss bound; a tube that ends (its budget, its cap)
    tries once more at its end if the bound fell since, and that try can close it."""
    _, model, bm, _ = setup
    calls = []

    def at_the_end(tube):
        calls.append((len(tube.segments), tube.end_loss))
        return "closed" if len(tube.segments) == 7 else None
    tube = T.build(model, bm, cap=0.02, target_loss=0.0, max_segments=7, h0=1 / 16, try_terminal=at_the_end)
    assert calls[-1][0] == 7 and tube.terminal == "closed" and not tube.budget_spent
    assert tube.message == "tube and terminal ball proved"
    assert all(later[1] <= 0.5 * earlier[1] for earlier, later in zip(calls[:-2], calls[1:-1]))
    assert calls[-1][1] < calls[-2][1]
    never = []
    tube = T.build(model, bm, cap=0.02, target_loss=0.0, max_segments=7, h0=1 / 16,
                   try_terminal=lambda tube: never.append(len(tube.segments)))
    assert never[-1] == 7 and tube.terminal is None and tube.budget_spent


def test_terminal_ball_takes_about_the_largest_mu(setup, long_tube):
    """The terminal ball closes (e + sqrt(L_T / mu) <= r) and its mu is within 10 % of the largest mu
    among the radii of an independent grid that also close (each a fresh ball rule)."""
    _, model, bm, _ = setup
    term = long_tube.terminal
    assert T.terminal_needed(term.e, term.loss_upper, term.mu) <= term.radius
    assert float(T.ball_rule(model, bm, long_tube.end_theta, term.radius).value) == term.mu
    best = 0.0
    for r in np.linspace(term.e * 1.01, 3.0 * term.radius, 25):
        mu = float(T.ball_rule(model, bm, long_tube.end_theta, float(r)).value)
        if mu > 0 and T.terminal_needed(term.e, term.loss_upper, mu) <= r:
            best = max(best, mu)
    assert best > 0 and best <= 1.1 * term.mu, (best, term.mu)


def test_a_model_too_large_for_the_ball_tables_is_E205_not_an_internal_error(monkeypatch, tmp_path, capsys):
    """A 3-layer network whose ball-rule table would form a product above ball.MAX_ENTRIES (here made
    small; a 1024 x 1024 network on 16 points hits the real one): a located E205 with a hint, exit 2."""
    from certifier import cli
    from certifier.analyse.sound import ball

    monkeypatch.setattr(ball, "MAX_ENTRIES", 50)
    spec = tmp_path / "deep.rq"
    spec.write_text(SPEC.replace("a : [32]    = normal(seed=2)", "a : [32]    = normal(seed=2)\n  V : [32, 32] = normal(seed=3)")
                    .replace("sum(a * tanh(W @ x)) / sqrt(32)", "sum(a * tanh(V @ tanh(W @ x) / 32)) / sqrt(32)"))
    code = cli.main(["--no-cache", str(spec)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "error[E205]" in err and "the ball rule's tables" in err and "hint: use method sampled" in err
    assert "internal error" not in err and "Traceback" not in err
