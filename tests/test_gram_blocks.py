"""sigma_min(J) verified from column blocks of J (linalg.GramAccumulator, the interval Jacobian in
blocks from compile/interval_reverse.jacobian_blocks, ball.center_sigma above its dense threshold).

The bounds are checked against numpy's float64 SVD of the same matrices (and of torch.func.jacrev's
Jacobian for the networks), for block sizes from one column to the whole matrix."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_interval_reverse import ARCHITECTURES, _points, _spec, spec_jacobian
from test_torch_sound import FIXTURES, checked_of

from certifier.analyse.sound import ball
from certifier.analyse.sound.linalg import GramAccumulator, gram_lower, nonneg_norm2_upper
from certifier.compile.interval_model import IntervalModel
from certifier.compile.iv import Iv, mid_rad

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def fixtures_on_path(monkeypatch):
    monkeypatch.syspath_prepend(str(FIXTURES))


def _accumulate(Jm, Jr, cols):
    acc = GramAccumulator()
    for c0 in range(0, Jm.shape[1], cols):
        acc.add(Jm[:, c0:c0 + cols], None if Jr is None else Jr[:, c0:c0 + cols])
    return acc


@pytest.mark.parametrize("shape", [(6, 40), (12, 300), (30, 31)])
@pytest.mark.parametrize("cols", [1, 7, 64, None])
def test_random_jacobians_bound_below_the_smallest_singular_value(shape, cols):
    rng = np.random.default_rng(shape[0] * 1000 + (cols or 0))
    Jm = rng.standard_normal(shape) * rng.uniform(0.5, 2.0, shape[1])
    Jr = np.abs(rng.standard_normal(shape)) * 1e-3
    acc = _accumulate(Jm, Jr, cols or shape[1])
    lam, info = acc.lambda_min_lower()
    smin2 = np.linalg.svd(Jm, compute_uv=False)[-1] ** 2
    assert lam is not None and lam < smin2
    assert lam > smin2 * (1 - 1e-6), (lam, smin2)
    rnorm = acc.radius_norm_upper()
    exact = np.linalg.norm(Jr, 2)
    assert exact <= rnorm <= 1.05 * exact


@pytest.mark.parametrize("shape", [(6, 40), (30, 31)])
def test_one_block_is_as_good_as_gram_lower(shape):
    """The same enclosure formula; the accumulator's products go through BLAS syrk, gram_lower's
    through gemm, so the two may differ in the last bits (here both are checked below numpy's)."""
    Jm = np.random.default_rng(1).standard_normal(shape)
    lam, _ = _accumulate(Jm, None, shape[1]).lambda_min_lower()
    dense, _ = gram_lower(Jm)
    assert lam >= dense * (1 - 1e-12)
    assert max(lam, dense) < np.linalg.svd(Jm, compute_uv=False)[-1] ** 2


def test_a_point_matrix_has_radius_zero_and_rank_deficiency_gives_none():
    rng = np.random.default_rng(2)
    Jm = rng.standard_normal((5, 3)) @ rng.standard_normal((3, 50))      # rank 3 < 5 rows
    acc = _accumulate(Jm, None, 4)
    assert acc.radius_norm_upper() == 0.0
    assert acc.lambda_min_lower()[0] is None


@pytest.mark.parametrize("name", ["tanh, biases", "tanh, k = 2", "3-layer MLP, biases",
                                  "matrix parameters, sums over axes"])
@pytest.mark.parametrize("cols", [1, 5, 40, 10**6])
def test_network_jacobian_blocks(name, cols):
    """The blocks enclose jacrev's Jacobian, and the accumulated bound is below numpy's sigma_min."""
    c = checked_of(_spec(*ARCHITECTURES[name]), allow_python=False)
    model = IntervalModel(c)
    for theta in _points(model, 2, 7):
        jac = spec_jacobian(c, theta)
        blocks = list(model.jacobian_blocks(theta, cols))
        assert [b[0] for b in blocks[1:]] == [b[1] for b in blocks[:-1]]
        assert blocks[0][0] == 0 and blocks[-1][1] == model.m
        acc = GramAccumulator()
        for c0, c1, Jb in blocks:
            assert Jb.lo.shape == (model.n * model.k, c1 - c0)
            assert np.all(Jb.lo <= jac[:, c0:c1]) and np.all(jac[:, c0:c1] <= Jb.hi)
            acc.add_iv(Jb)
        lam, _ = acc.lambda_min_lower()
        rnorm = acc.radius_norm_upper()
        J = Iv(np.concatenate([b[2].lo for b in blocks], 1), np.concatenate([b[2].hi for b in blocks], 1))
        Jm, Jr = mid_rad(J)
        assert rnorm >= np.linalg.norm(Jr, 2)
        smin = np.linalg.svd(jac, compute_uv=False)[-1]
        if np.linalg.svd(Jm, compute_uv=False)[-1] < 1e-6:      # (near) rank-deficient: nothing to prove
            continue
        assert lam is not None
        assert np.sqrt(lam) - rnorm <= smin
        assert np.sqrt(lam) >= smin * (1 - 1e-6) - rnorm


def test_center_sigma_in_blocks_matches_the_dense_path(monkeypatch):
    """A ball-rule spec (bench.tightness --ball at width 256): the centre's sigma bound from blocks
    (forced: no dense threshold, blocks of about 100 columns) no lower than the dense one less 1e-12
    relative, and no higher than 1e-10 relative (blocks have the smaller gamma_k of their own columns,
    so the sum's radius, subtracted by Weyl, is smaller)."""
    from bench.tightness import BALL_SPEC
    c = checked_of(BALL_SPEC.format(h=256, r=0.15, n=4), allow_python=False)
    model = IntervalModel(c)
    ball._CENTERS.clear()
    dense = ball.center_sigma(model, model.theta0)
    ball._CENTERS.clear()
    blocked = ball.center_sigma(model, model.theta0, dense_bytes=0, block_bytes=8 * model.n * 100)
    ball._CENTERS.clear()
    assert "blocks" not in dense[2] and blocked[2]["blocks"] >= 4
    assert dense[0] * (1 - 1e-12) <= blocked[0] <= dense[0] * (1 + 1e-10)
    jac = spec_jacobian(c, model.theta0)
    assert blocked[0] - blocked[1] <= np.linalg.svd(jac, compute_uv=False)[-1]
    Jm, Jr = mid_rad(model.at_point(model.theta0, True).J)
    assert blocked[1] >= np.linalg.norm(Jr, 2) and dense[1] >= np.linalg.norm(Jr, 2)


def test_center_sigma_below_the_threshold_is_unchanged():
    c = checked_of((ROOT / "specs" / "two_layer_tanh_sound.rq").read_text(), allow_python=False)
    model = IntervalModel(c)
    ball._CENTERS.clear()
    value = ball.center_sigma(model, model.theta0)
    ball._CENTERS.clear()
    Jm, Jr = mid_rad(model.at_point(model.theta0, True).J)
    lam, _ = gram_lower(Jm)
    assert value[0] == np.sqrt(lam) or value[0] == np.nextafter(np.sqrt(lam), -np.inf)
    assert value[1] == nonneg_norm2_upper(Jr)


@pytest.mark.parametrize("size", [1, 5, 40])
def test_lambda_max_upper_holds_and_is_tight(size):
    """linalg.lambda_max_upper: above lambda_max of symmetric matrices inside the enclosure (corners
    and random points, numpy's eigvalsh in float64 well inside the margin), and within 1e-9 of it (the
    tube's ||J||_2 and ||B||_2 read it: sym_norm_upper's shifts would add up to 1 %)."""
    from certifier.analyse.sound.linalg import lambda_max_upper
    rng = np.random.default_rng(size)
    for scale in (1e-8, 1.0, 1e6):
        X = rng.standard_normal((size, 3 * size)) * scale
        Gm = X @ X.T
        Gr = np.abs(rng.standard_normal((size, size))) * 1e-7 * scale * scale
        Gr = Gr + Gr.T
        bound = lambda_max_upper(Iv(Gm - Gr, Gm + Gr))
        for _ in range(20):
            E = Gr * rng.choice([-1.0, 1.0], Gr.shape)
            E = np.triu(E) + np.triu(E, 1).T
            assert float(np.linalg.eigvalsh(Gm + 0.999 * E)[-1]) <= bound
        top = float(np.linalg.eigvalsh(Gm)[-1])
        assert bound <= top + nonneg_norm2_upper(Gr) + 1e-9 * abs(top)
    assert lambda_max_upper(Iv(np.zeros((3, 3)))) <= 1e-100
