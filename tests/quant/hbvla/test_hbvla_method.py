"""HBVLA's steps, each on its own, and the whole matrix quantizer."""

from __future__ import annotations

import numpy as np
import pytest

from omnimodel.quant.hbvla.binarize import binarize
from omnimodel.quant.hbvla.config import ABLATIONS, HbvlaConfig, billm_style, hbvla, hbvla_element, sign_alpha
from omnimodel.quant.hbvla.haar import (
    QK,
    activation,
    col_haar,
    col_haar_inverse,
    from_coefficients,
    row_layout,
    to_coefficients,
)
from omnimodel.quant.hbvla.method import h_error, quantize_matrix
from omnimodel.quant.hbvla.permutation import high_band_energy, pair_and_chain
from omnimodel.quant.hbvla.salient import binarize_salient
from omnimodel.quant.hbvla.saliency import column_saliency, damped_inverse, fill_salient, salient_candidates

RNG = np.random.default_rng


# ------------------------------------------------------------------------------------- Haar layout


@pytest.mark.parametrize("n", [2, 300, 576, 1024])
@pytest.mark.parametrize("haar", [True, False])
def test_haar_layout_round_trip_and_activation_identity(n, haar):
    rng = RNG(n)
    w = rng.standard_normal((6, n))
    perm = rng.permutation(n)
    lay = row_layout(n, haar)
    u = to_coefficients(w, perm, lay)
    assert u.shape == (6, -(-n // QK) * QK) and not u[:, n:].any()
    np.testing.assert_allclose(from_coefficients(u, perm, lay), w, atol=1e-12)
    x = rng.standard_normal((4, n))
    np.testing.assert_allclose(activation(x, perm, lay) @ u.T, x @ w.T, atol=1e-10)
    if haar:
        # pair k's lo coefficient is the half-sum of columns perm[2k], perm[2k+1]
        k = n // 2 - 1
        assert u[0, lay.lo_pos[k]] == pytest.approx(0.5 * (w[0, perm[2 * k]] + w[0, perm[2 * k + 1]]))
        # chunks start blocks; a full chunk is one lo and one hi block
        for p0, p1 in lay.chunks():
            assert p0 % QK == 0 and (p1 - p0 == 2 * QK or p1 == n)
        assert set(lay.band[: min(n, 2 * QK)][: min(n // 2, QK)]) == {0}


def test_haar_needs_even_widths():
    with pytest.raises(ValueError, match="odd"):
        row_layout(5, True)
    with pytest.raises(ValueError, match="odd"):
        col_haar(np.ones((3, 2)))
    r = RNG(0).standard_normal((8, 3))
    np.testing.assert_allclose(col_haar_inverse(col_haar(r)), r)


# ------------------------------------------------------------------------------------- permutation


@pytest.mark.parametrize("metric", ["l2", "l1"])
def test_pairing_recovers_planted_pairs(metric):
    rng = RNG(1)
    base = rng.standard_normal((16, 20)) * rng.uniform(0.1, 3, 20)
    w = np.concatenate([base, base + 1e-3 * rng.standard_normal(base.shape)], 1)
    shuffle = rng.permutation(40)
    w = w[:, shuffle]
    perm = pair_and_chain(w, metric)
    assert sorted(perm) == list(range(40))
    partner = {int(j): int(shuffle.tolist().index((shuffle[j] + 20) % 40)) for j in range(40)}
    assert all(partner[int(perm[2 * k])] == int(perm[2 * k + 1]) for k in range(20))
    assert high_band_energy(w, perm) < 1e-3 * high_band_energy(w, np.arange(40))


def test_pairing_lowers_high_band_energy_and_chains():
    rng = RNG(2)
    # columns from a few clusters, interleaved
    centres = rng.standard_normal((32, 4)) * 3
    w = centres[:, rng.integers(0, 4, 64)] + 0.3 * rng.standard_normal((32, 64))
    perm = pair_and_chain(w)
    assert high_band_energy(w, perm) < 0.25 * high_band_energy(w, np.arange(64))
    # odd widths: the leftover column comes last
    p = pair_and_chain(w[:, :9])
    assert sorted(p) == list(range(9)) and len(p) == 9
    with pytest.raises(ValueError, match="metric"):
        pair_and_chain(w, "cos")


# ------------------------------------------------------------------------------------- saliency


def test_saliency_prefers_columns_with_large_activations():
    rng = RNG(3)
    w = rng.standard_normal((32, 64))
    x = rng.standard_normal((64, 500))
    x[[7, 40]] *= 30
    hinv = damped_inverse(x @ x.T / 500)
    cand = salient_candidates(w, np.diag(hinv), 4)
    assert set(cand[:2]) == {7, 40}
    s = column_saliency(w, np.diag(hinv))
    np.testing.assert_allclose(s[3], np.sqrt((w[:, 3] ** 4).sum()) / hinv[3, 3] ** 2)


def test_damped_inverse_survives_dead_inputs():
    H = np.diag([4.0, 0.0, 1.0])
    inv = damped_inverse(H, 0.0)
    np.testing.assert_allclose(np.diag(inv), [0.25, 1.0, 1.0])


def test_fill_salient_uses_non_salient_neighbours():
    w = np.arange(10.0)[None, :].repeat(2, 0)
    f = fill_salient(w, np.array([4, 5]), window=1)
    assert f[0, 4] == 3.0 and f[0, 5] == 6.0 and f[0, 3] == 3.0


# ------------------------------------------------------------------------------------- binarizer


def _err(u, n, planes):
    return float(((u[:, :n] - planes.values()[:, :n]) ** 2).sum())


def test_block_binarizer_scales_are_least_squares_optimal():
    rng = RNG(4)
    n = 300
    u = np.zeros((5, 384))
    u[:, :n] = rng.standard_normal((5, n)) + 0.3
    seg = np.where(np.arange(384) < 150, 0, 1)
    p = binarize(u, n, grouping="block", mean="shared", segments=seg)
    assert p.n_planes == 1 and p.scales.dtype == np.float16 and p.means.dtype == np.float16
    assert p.means.shape == (5, 2)
    base = _err(u, n, p)
    # moving any stored scale by one fp16 step does not help
    for r, b in [(0, 0), (2, 1), (4, 2)]:
        for step in (np.inf, -np.inf):
            q = binarize(u, n, grouping="block", mean="shared", segments=seg)
            q.scales[0, r, b] = np.nextafter(q.scales[0, r, b], np.float16(step))
            assert _err(u, n, q) >= base - 1e-12
    # the refined shared mean never does worse than the plain one
    p0 = binarize(u, n, grouping="block", mean="shared", segments=seg, refine=0)
    assert base <= _err(u, n, p0) + 1e-9
    # padding positions are ignored
    u2 = u.copy()
    u2[:, n:] = 100.0
    assert _err(u2, n, binarize(u2, n, grouping="block", mean="shared", segments=seg)) == pytest.approx(base)


def test_element_split_is_the_best_threshold():
    rng = RNG(5)
    v = rng.standard_normal((3, 128)) * np.r_[np.ones(100), 6 * np.ones(28)]
    p = binarize(v, 128, grouping="element", mean="none")
    assert p.n_planes == 2
    got = _err(v, 128, p)
    for r in range(3):
        a = np.sort(np.abs(v[r]))
        best = min(
            sum(((g - g.mean()) ** 2).sum() for g in (a[:k], a[k:]) if len(g))
            for k in range(129)
        )
        row = ((v[r] - p.values()[r]) ** 2).sum()
        assert row == pytest.approx(best, rel=2e-3, abs=1e-6)  # fp16 scales
    one = binarize(v, 128, grouping="block", mean="none")
    assert got < 0.6 * _err(v, 128, one)


def test_group_means_and_residual_orders():
    rng = RNG(6)
    u = rng.standard_normal((4, 256)) * 2 + rng.standard_normal((4, 1))
    seg = np.zeros(256, int)
    shared = binarize(u, 256, grouping="element", mean="shared", segments=seg)
    group = binarize(u, 256, grouping="element", mean="group")
    assert group.n_planes == 3 and group.means.shape == (4, 2)
    assert _err(u, 256, group) < _err(u, 256, binarize(u, 256, grouping="block", mean="group"))
    assert _err(u, 256, shared) < _err(u, 256, binarize(u, 256, grouping="block", mean="shared", segments=seg))



@pytest.mark.parametrize("col_haar", [True, False])
def test_salient_residual_binarization(col_haar):
    rng = RNG(10)
    r = rng.standard_normal((300, 2)) * np.r_[1.0, 20.0]
    p = binarize_salient(r, 1, col_haar)
    assert p.col_haar == col_haar and p.signs.shape == (1, 2, 384) and p.row_scales.shape == (1, 300)
    # two values per (Haar) row: mean and scale make them exact, up to fp16
    np.testing.assert_allclose(p.weight(), r, rtol=3e-3, atol=3e-3 * np.abs(r).max())
    r = rng.standard_normal((64, 40)) * rng.uniform(0.1, 10, 40)
    e1 = ((binarize_salient(r, 1, col_haar).weight() - r) ** 2).sum()
    e2 = ((binarize_salient(r, 2, col_haar).weight() - r) ** 2).sum()
    plain = ((r - r.mean(1, keepdims=True)) ** 2).sum()
    assert e2 < 0.6 * e1 < 0.6 * plain
    # odd row counts: no column Haar
    assert not binarize_salient(rng.standard_normal((7, 3)), 1, True).col_haar


# ------------------------------------------------------------------------------------- the matrix


def _problem(rows=64, n=320, seed=7, hot=(11, 200), mix=0.0):
    rng = RNG(seed)
    w = rng.standard_normal((rows, n)) * 0.02
    x = rng.standard_normal((n, 3000))
    x[list(hot)] *= 25
    x = (np.eye(n) + mix * rng.standard_normal((n, n)) / np.sqrt(n)) @ x  # correlated inputs
    return w, x @ x.T / 3000


def test_quantize_matrix_decodes_and_reports():
    w, H = _problem()
    q = quantize_matrix(w, H, hbvla(salient_cap=16, error_feedback=False))
    w_hat = q.weight()
    assert w_hat.shape == w.shape
    assert q.stats["h_error"] == pytest.approx(h_error(w, w_hat, H))
    trials = q.stats["salient_trials"]
    assert set(trials) == {0, 1, 2, 4, 8, 16}
    assert q.stats["n_salient"] == min(trials, key=lambda k: (trials[k], k))
    # the planted hot inputs are salient and the salient residual shrinks their error a lot
    assert {11, 200} <= set(q.salient_idx.tolist()), trials
    q0 = quantize_matrix(w, H, hbvla(salient_cap=0, error_feedback=False))
    assert q.stats["h_error"] < 0.7 * q0.stats["h_error"]
    assert sorted(q.perm) == list(range(320))


def test_saliency_hessian_steers_only_the_split():
    w, H = _problem(hot=(11, 200))
    _, Hs = _problem(hot=(40, 41))
    q = quantize_matrix(w, H, hbvla(salient_cap=16, error_feedback=False), H_saliency=Hs)
    assert {40, 41} <= set(q.salient_idx.tolist()) and 11 not in q.salient_idx
    assert q.stats["h_error"] == pytest.approx(h_error(w, q.weight(), H))  # reported under H


def test_error_feedback_is_exact_without_correlation_and_helps_with_it():
    rng = RNG(8)
    w = rng.standard_normal((32, 512)) * 0.02
    H = np.diag(rng.uniform(0.5, 2.0, 512))
    a = quantize_matrix(w, H, hbvla(salient_cap=0, damp=0.0, error_feedback=False))
    b = quantize_matrix(w, H, hbvla(salient_cap=0, damp=0.0, error_feedback=True))
    np.testing.assert_allclose(a.weight(), b.weight())  # diagonal H: nothing to feed back
    w, H = _problem(rows=32, n=512, mix=0.5)
    for cfg in (hbvla(salient_cap=8), hbvla_element(salient_cap=8), hbvla(mean="group", salient_cap=0)):
        plain = quantize_matrix(w, H, cfg.with_(error_feedback=False))
        fed = quantize_matrix(w, H, cfg.with_(error_feedback=True))
        assert fed.main.n_planes == plain.main.n_planes
        assert fed.stats["h_error"] < plain.stats["h_error"]


@pytest.mark.parametrize("name", sorted(ABLATIONS))
def test_ablations_and_baseline_presets_run(name):
    w, H = _problem(rows=32, n=256)
    q = quantize_matrix(w, H, hbvla(**ABLATIONS[name]))
    assert np.isfinite(q.stats["h_error"]) and q.weight().shape == w.shape


def test_billm_style_and_element_presets():
    w, H = _problem(rows=32, n=256)
    b = quantize_matrix(w, H, billm_style(salient_cap=8))
    assert b.main.n_planes == 3 and not b.haar and (b.salient is None or b.salient.order == 2)
    e = quantize_matrix(w, H, hbvla_element(salient_cap=8))
    k = quantize_matrix(w, H, hbvla(salient_cap=8))
    assert e.main.n_planes == 2 and e.stats["h_error"] < k.stats["h_error"]


def test_sign_alpha_is_q1_0_rtn():
    from omnimodel.gguf.encoders import decode, encode

    w = RNG(9).standard_normal((16, 256)).astype(np.float32)
    q = quantize_matrix(w, None, sign_alpha())
    ggml_like = decode(encode(w, "Q1_0"), "Q1_0", 256)
    np.testing.assert_array_equal(q.weight(), ggml_like)
    assert q.main.n_planes == 1 and q.main.means is None and q.salient is None


def test_bad_inputs():
    with pytest.raises(ValueError, match="even input width"):
        quantize_matrix(np.ones((2, 5)), None, hbvla())
    with pytest.raises(ValueError, match="Hessian is"):
        quantize_matrix(np.ones((2, 4)), np.eye(3), hbvla())
    with pytest.raises(ValueError, match="saliency Hessian is"):
        quantize_matrix(np.ones((2, 4)), np.eye(4), hbvla(), H_saliency=np.eye(2))
    with pytest.raises(ValueError, match="grouping"):
        HbvlaConfig(grouping="rows")
