"""The GGUF layout of an HBVLA matrix: exact round trips, Q1_0 bytes ggml agrees with, honest bit counts."""

from __future__ import annotations

import numpy as np
import pytest

from omnimodel.gguf import GGUFModelWriter, read_gguf
from omnimodel.gguf.encoders import decode
from omnimodel.gguf.types import GGMLType
from omnimodel.quant.hbvla.config import billm_style, hbvla, hbvla_element
from omnimodel.quant.hbvla.method import quantize_matrix
from omnimodel.quant.hbvla.size import (
    BudgetError,
    count_bits,
    estimate_bits,
    fallback_type,
    model_bpw,
    solve,
    suits_hbvla,
)
from omnimodel.quant.hbvla.storage import (
    HbvlaFormatError,
    decode_matrix,
    encode_matrix,
    hbvla_base_of,
    hbvla_bases,
    pack_q1_0,
    read_matrix,
    stored_tensors,
    tensor_name,
    unpack_q1_0,
    write_matrix,
)

# Error feedback changes the values, not the layout: only the default preset keeps it, for speed.
_FAST = {"error_feedback": False}
CONFIGS = {
    "hbvla": hbvla(salient_cap=16),
    "element": hbvla_element(salient_cap=16, **_FAST),
    "group-mean": hbvla(mean="group", salient_cap=0, **_FAST),
    "element-group": hbvla_element(mean="group", salient_cap=4, **_FAST),
    "no-mean": hbvla(mean="none", salient_cap=4, **_FAST),
    "no-haar": hbvla(haar=False, salient_col_haar=False, salient_cap=4, **_FAST),
    "billm": billm_style(salient_cap=8),
}


def _matrix(out_dim=48, n_in=336, seed=0, cfg=None):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((out_dim, n_in)) * 0.05
    x = rng.standard_normal((n_in, 800))
    x[3] *= 20
    return w, quantize_matrix(w, x @ x.T / 800, cfg or hbvla(salient_cap=16))


def _same(a, b):
    assert a.shape == b.shape and a.haar == b.haar
    assert (a.salient is None) == (b.salient is None)
    if a.salient is not None:
        assert a.salient.col_haar == b.salient.col_haar
    np.testing.assert_array_equal(a.perm, b.perm)
    np.testing.assert_array_equal(a.salient_idx, b.salient_idx)
    np.testing.assert_array_equal(a.weight(), b.weight())  # bit-exact decode


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_round_trip_in_memory_is_exact(name):
    _, q = _matrix(cfg=CONFIGS[name])
    back = decode_matrix(stored_tensors(q, "blk.0.attn.qkv.weight"), "blk.0.attn.qkv")
    _same(q, back)
    a, b = q.main, back.main
    np.testing.assert_array_equal(a.signs, b.signs)
    np.testing.assert_array_equal(a.scales, b.scales)
    np.testing.assert_array_equal(a.segments, b.segments)
    assert (a.means is None) == (b.means is None) and a.mean_kind == b.mean_kind
    if a.means is not None:
        np.testing.assert_array_equal(a.means, b.means)
    if q.salient is not None:
        for f in ("signs", "col_scales", "row_scales", "means"):
            np.testing.assert_array_equal(getattr(q.salient, f), getattr(back.salient, f))


def test_round_trip_through_a_gguf_file(tmp_path):
    _, q1 = _matrix()
    _, q2 = _matrix(out_dim=33, n_in=256, seed=1, cfg=hbvla_element(salient_cap=8, error_feedback=False))
    assert not q2.salient.col_haar  # odd rows: no column Haar
    path = tmp_path / "m.gguf"
    with GGUFModelWriter(path, "omni-mlp") as w:
        written = write_matrix(w, "layers.0.weight", q1) + write_matrix(w, "layers.1.weight", q2)
    gf = read_gguf(path)
    assert sorted(hbvla_bases(t.name for t in gf.tensors)) == ["layers.0", "layers.1"]
    _same(q1, read_matrix(gf, "layers.0.weight"))
    _same(q2, read_matrix(path, "layers.1.weight"))
    # the file's bytes are what the bit count counts
    b1 = count_bits(encode_matrix(q1, "layers.0"), q1.shape)
    assert b1.total == 8 * sum(t.n_bytes for t in written if t.name.startswith("layers.0."))


def test_planes_are_q1_0_as_ggml_decodes_it():
    rng = np.random.default_rng(3)
    signs = rng.random((5, 256)) < 0.5
    scales = rng.standard_normal((5, 2)).astype(np.float16)
    raw = pack_q1_0(signs, scales)
    d = np.repeat(scales.astype(np.float32), 128, axis=1)
    np.testing.assert_array_equal(decode(raw, "Q1_0", 256), np.where(signs, d, -d))  # our decoder
    from omnimodel import _runtime

    got = np.asarray(_runtime.ggml_dequantize(int(GGMLType.Q1_0), raw, 256), np.float32).reshape(5, 256)
    np.testing.assert_array_equal(got, np.where(signs, d, -d))  # ggml's own
    s2, d2 = unpack_q1_0(raw, 256)
    np.testing.assert_array_equal(s2, signs)
    np.testing.assert_array_equal(d2, scales)


def test_decode_rejects_inconsistent_tensors():
    _, q = _matrix()
    good = stored_tensors(q, "m.weight")

    def broken(name, **change):
        t = dict(good)
        gt, shape, data = t[tensor_name("m", name)]
        t[tensor_name("m", name)] = (change.get("gt", gt), change.get("shape", shape), change.get("data", data))
        return t

    with pytest.raises(HbvlaFormatError, match="'m.hb.p0': is missing"):
        decode_matrix({k: v for k, v in good.items() if not k.endswith("p0")}, "m")
    with pytest.raises(HbvlaFormatError, match="distinct indices"):
        perm = good[tensor_name("m", "perm")][2].view("<i2").copy()
        perm[1] = perm[0]
        decode_matrix(broken("perm", data=perm.view(np.uint8)), "m")
    with pytest.raises(HbvlaFormatError, match=r"expected Q1_0 \[48, 384\]"):
        decode_matrix(broken("p0", gt=GGMLType.Q4_0), "m")
    with pytest.raises(HbvlaFormatError, match="layout version"):
        hdr = good[tensor_name("m", "hdr")][2].view("<i4").copy()
        hdr[0] = 9
        decode_matrix(broken("hdr", data=hdr.view(np.uint8)), "m")
    with pytest.raises(ValueError, match="longer than ggml"):
        tensor_name("x" * 60, "perm")
    assert hbvla_base_of("a.b.hb.smu") == "a.b" and hbvla_base_of("a.b.weight") is None


# ------------------------------------------------------------------------------------------ bits


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_estimate_matches_the_stored_bits(name):
    cfg = CONFIGS[name]
    _, q = _matrix(cfg=cfg)
    counted = count_bits(encode_matrix(q, "m"), q.shape)
    assert counted.total == 8 * sum(t.n_bytes for t in encode_matrix(q, "m"))
    est = estimate_bits(q.shape, cfg, n_salient=len(q.salient_idx))
    assert est.as_dict() == counted.as_dict()


def test_bit_breakdown_of_a_plain_hbvla_matrix():
    b = estimate_bits((576, 576), hbvla(salient_cap=0))
    assert b.signs == 576 * 576 and b.group_bits == 0
    assert b.scales == 576 * 5 * 16 and b.padding == 576 * 64
    assert b.means == 576 * 2 * 16 and b.permutation == 576 * 16 and b.header == 256
    assert b.bpw == pytest.approx((576 * 5 * 18 * 8 + 576 * 32 + 576 * 16 + 256) / 576**2)
    e = estimate_bits((1024, 1024), hbvla_element(salient_cap=128))
    assert e.group_bits == e.signs == 1024 * 1024 and e.salient_idx == 128 * 16
    assert e.salient_signs == 128 * 1024 and e.salient_scales == 128 * 8 * 16  # k rows over the outputs
    assert e.salient_row_scales == e.salient_means == 1024 * 16
    assert 2.2 < e.bpw < 2.5 < estimate_bits((1024, 1024), billm_style(salient_cap=128)).bpw


def test_fallback_for_shapes_that_do_not_suit():
    assert suits_hbvla((64, 576))[0] and suits_hbvla((8, 128))[0]
    for shape, why in (((64, 575), "odd"), ((64, 64), "fewer than one"), ((64, 130), "padding")):
        ok, reason = suits_hbvla(shape)
        assert not ok and why in reason
    assert fallback_type((8, 64)) == GGMLType.Q2_0 and fallback_type((8, 96)) == GGMLType.Q4_0
    assert fallback_type((8, 130)) == GGMLType.F16
    b = estimate_bits((8, 64), hbvla())
    assert b.fallback == "Q2_0" and b.bpw == pytest.approx(2.25)


def test_solver_meets_the_target_or_names_the_range():
    shapes = [(576, 576), (1536, 576), (576, 1536), (64, 64)]
    sol = solve(shapes, 3.0)
    assert sol.config.grouping == "element" and sol.config.salient_cap == 128 and sol.fallbacks == 1
    assert sol.bpw <= 3.0
    lo, hi = sol.feasible
    tight = solve(shapes, lo + 1e-6)
    assert tight.config.grouping == "block" and tight.config.salient_cap == 0
    assert model_bpw(shapes, tight.config)[0] == pytest.approx(lo)
    mid = solve(shapes, (lo + hi) / 2)
    assert lo <= mid.bpw <= (lo + hi) / 2
    with pytest.raises(BudgetError, match=rf"reach {lo:.3f} to {hi:.3f} bpw"):
        solve(shapes, lo - 0.01)


def test_a_renamed_weight_hangs_its_tensors_off_the_gguf_name() -> None:
    """An exporter that renames weights (pi0's abbreviated GGUF names, ggml's 63-byte limit) stores each
    matrix under that name: HBVLA planes and a fallback type alike."""
    from omnimodel.quant.hbvla.matrix import store_matrix

    rng = np.random.default_rng(3)
    long = "paligemma_with_expert.paligemma.model.vision_tower.vision_model.encoder.layers.0.mlp.fc2.weight"
    fits = store_matrix(long, rng.standard_normal((64, 256)) * 0.05, None, hbvla(salient_cap=4),
                        stored_as="siglip.encoder.layers.0.mlp.fc2.weight")
    assert fits.kind == "hbvla" and fits.name == long
    assert {t.name.split(".hb.")[0] for t in fits.tensors} == {"siglip.encoder.layers.0.mlp.fc2"}
    small = store_matrix(long, rng.standard_normal((96, 64)), None, hbvla(salient_cap=4), stored_as="short.weight")
    assert small.kind == "fallback" and [t.name for t in small.tensors] == ["short.weight"]
