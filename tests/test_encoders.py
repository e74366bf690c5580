"""Tests for omnimodel.gguf.encoders: byte exactness against ggml, quality against ggml's own quantizers,
precomputed scales, the ggml-backed IQ path, and input validation.

The comparisons with ggml go through ``omnimodel._runtime`` (ggml_quantize / ggml_dequantize); tests that
need it fail (rather than skip) when it is missing, since a silently skipped comparison proves nothing.
"""

from __future__ import annotations

import importlib

import gguf
import gguf.quants
import numpy as np
import pytest

import omnimodel.gguf.encoders as enc
from omnimodel.gguf.encoders import BlockScales, decode, encode, fit_scales, quantize
from omnimodel.gguf.types import GGML_ENCODED, REQUIRES_IMPORTANCE, GGMLType, type_info

K_QUANTS = ["Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"]
LEGACY = ["Q8_0", "Q4_0", "Q1_0", "Q2_0"]
SCALED = LEGACY + K_QUANTS
FLOATS = ["F32", "F16", "BF16"]
ROWS, COLS = 64, 1024

# Quality bars relative to ggml's own quantizer on its own error measure.
K_QUANT_MAX_RATIO = 1.02
LEGACY_MAX_RATIO = 1.0 + 1e-9  # "no worse"; Q1_0 without importance is the exact optimum, so ties are allowed


@pytest.fixture(scope="module")
def rt():
    return importlib.import_module("omnimodel._runtime")


def _weights(dist: str, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if dist == "gauss":
        return rng.standard_normal((ROWS, COLS)).astype(np.float32)
    return rng.standard_t(3, (ROWS, COLS)).astype(np.float32)


def _importance(seed: int = 1, n: int = COLS) -> np.ndarray:
    # per-column E[a^2] of heavy-tailed activations
    return (np.random.default_rng(seed).standard_t(3, n) ** 2).astype(np.float32)


def _bits(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)


def _fma_variant(q: enc.Quantized) -> np.ndarray | None:
    """Affine K-quants decoded with d*sc*q - dmin*m fused into one rounding (what a build with FP
    contraction, e.g. on aarch64, produces); None where the types have no such sum."""
    if q.scales.dmin is None:
        return None
    rows, n = q.codes.shape
    S = (q.scales.d.astype(np.float32)[..., None] * q.scales.sc.astype(np.float32)).astype(np.float64)
    M = (q.scales.dmin.astype(np.float32)[..., None] * q.scales.m.astype(np.float32)).astype(np.float64)
    sub = S.shape[-1]
    codes = q.codes.reshape(rows, -1, sub, n // (S.shape[1] * sub)).astype(np.float64)
    return (S[..., None] * codes - M[..., None]).astype(np.float32).reshape(rows, n)


# ----------------------------------------------------------------------------------------------------
# 1. ggml decodes our bytes to exactly the values we intended


@pytest.mark.parametrize("tname", SCALED)
@pytest.mark.parametrize("with_importance", [False, True])
def test_ggml_decodes_intended_values_exactly(rt, tname: str, with_importance: bool) -> None:
    t = GGMLType[tname]
    x = _weights("t3", seed=3)
    imp = _importance() if with_importance else None
    q = quantize(x, t, imp)
    data = encode(x, t, imp)
    assert data.dtype == np.uint8 and data.shape == (ROWS, type_info(t).row_bytes(COLS))
    np.testing.assert_array_equal(q.to_bytes(), data)

    intended = q.values()
    ggml_vals = rt.ggml_dequantize(int(t), data, COLS)
    same = _bits(ggml_vals) == _bits(intended)
    fused = _fma_variant(q)
    if fused is not None:
        same |= _bits(ggml_vals) == _bits(fused)
    assert same.all(), f"{tname}: {np.count_nonzero(~same)} values differ from ggml's to_float"
    np.testing.assert_array_equal(_bits(decode(data, t, COLS)), _bits(intended))

    if t not in (GGMLType.Q1_0, GGMLType.Q2_0):  # gguf-py 0.19 cannot dequantize Q1_0 / does not know Q2_0
        gq = gguf.quants.dequantize(data, gguf.GGMLQuantizationType(int(t)))
        np.testing.assert_array_equal(_bits(np.asarray(gq, dtype=np.float32)), _bits(intended))


@pytest.mark.parametrize("tname", FLOATS)
def test_float_types_match_ggml(rt, tname: str) -> None:
    t = GGMLType[tname]
    rng = np.random.default_rng(5)
    x = rng.standard_normal((8, 256)).astype(np.float32) * np.float32(1e3)
    specials = np.array([np.nan, -np.nan, np.inf, -np.inf, 1e6, 65519.0, 65520.0, 1e-8, -0.0, 3.4e38], np.float32)
    snan = np.array([0x7F800001, 0xFFC00001], dtype=np.uint32).view(np.float32)
    x[0, : specials.size] = specials
    x[1, :2] = snan
    data = encode(x, t)
    np.testing.assert_array_equal(data, rt.ggml_quantize(int(t), x, None))
    if t != GGMLType.F32:
        np.testing.assert_array_equal(_bits(decode(data, t, 256)), _bits(rt.ggml_dequantize(int(t), data, 256)))
    else:
        np.testing.assert_array_equal(_bits(decode(data, t, 256)), _bits(x))
    # wider inputs are rounded to float32 first, as ggml would receive them (finite rows only: a float64
    # round trip itself quiets signalling NaNs)
    np.testing.assert_array_equal(encode(x[2:].astype(np.float64), t), data[2:])


# ----------------------------------------------------------------------------------------------------
# 2. and 3. quality against ggml's own quantizer


def _ratio(rt, t: GGMLType, x: np.ndarray, imp: np.ndarray | None) -> float:
    w = np.ones(x.shape[1]) if imp is None else imp.astype(np.float64)
    ours = rt.ggml_dequantize(int(t), encode(x, t, imp), x.shape[1])
    ref = rt.ggml_dequantize(int(t), rt.ggml_quantize(int(t), x, imp), x.shape[1])
    e_ours = np.sum(w * (x - ours).astype(np.float64) ** 2)
    e_ref = np.sum(w * (x - ref).astype(np.float64) ** 2)
    return float(e_ours / e_ref)


@pytest.mark.parametrize("dist", ["gauss", "t3"])
@pytest.mark.parametrize("tname", SCALED)
def test_mse_vs_ggml_without_importance(rt, tname: str, dist: str) -> None:
    t = GGMLType[tname]
    ratio = _ratio(rt, t, _weights(dist), None)
    bar = K_QUANT_MAX_RATIO if tname in K_QUANTS else LEGACY_MAX_RATIO
    print(f"{tname} {dist} mse ratio {ratio:.4f}")
    assert ratio <= bar, f"{tname} {dist}: MSE {ratio:.4f}x ggml's"


@pytest.mark.parametrize("dist", ["gauss", "t3"])
@pytest.mark.parametrize("tname", SCALED)
def test_weighted_error_vs_ggml_with_importance(rt, tname: str, dist: str) -> None:
    t = GGMLType[tname]
    ratio = _ratio(rt, t, _weights(dist), _importance())
    bar = K_QUANT_MAX_RATIO if tname in K_QUANTS else LEGACY_MAX_RATIO
    print(f"{tname} {dist} weighted ratio {ratio:.4f}")
    assert ratio <= bar, f"{tname} {dist}: weighted error {ratio:.4f}x ggml's"


def test_full_importance_matrix_is_used() -> None:
    x = _weights("gauss")[:8]
    imp_rows = np.stack([_importance(seed=s) for s in range(8)])
    data = encode(x, "Q4_K", imp_rows)
    y = decode(data, "Q4_K", COLS)
    for r in range(8):
        own = np.sum(imp_rows[r] * (x[r] - y[r]) ** 2)
        y_other = decode(encode(x[r : r + 1], "Q4_K", imp_rows[(r + 1) % 8]), "Q4_K", COLS)[0]
        other = np.sum(imp_rows[r] * (x[r] - y_other) ** 2)
        assert own <= other
    # a row's own vector gives exactly what encoding that row alone with it gives
    np.testing.assert_array_equal(data[3:4], encode(x[3:4], "Q4_K", imp_rows[3]))


# ----------------------------------------------------------------------------------------------------
# 4. precomputed scales


@pytest.mark.parametrize("tname", SCALED)
@pytest.mark.parametrize("with_importance", [False, True])
def test_fit_scales_round_trip(tname: str, with_importance: bool) -> None:
    x = _weights("t3")[:16]
    imp = _importance() if with_importance else None
    s = fit_scales(x, tname, imp)
    assert isinstance(s, BlockScales)
    np.testing.assert_array_equal(encode(x, tname, imp, scales=s), encode(x, tname, imp))


def _bump_codes(a: np.ndarray, lohi: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    lo, hi = lohi
    return np.clip(a + rng.integers(-3, 4, a.shape), lo, hi).astype(np.int16)


@pytest.mark.parametrize("tname", SCALED)
def test_modified_scales_are_honoured_exactly(tname: str) -> None:
    t = GGMLType[tname]
    x = _weights("gauss")[:8]
    s = fit_scales(x, t)
    lay = enc.SCALE_LAYOUTS[t]
    rng = np.random.default_rng(7)
    d = (s.d.astype(np.float32) * np.float32(1.5)).astype(np.float16)
    mod = BlockScales(
        t,
        d,
        None if s.dmin is None else (s.dmin.astype(np.float32) * np.float32(0.75)).astype(np.float16),
        None if s.sc is None else _bump_codes(s.sc, lay.sc_range, rng),
        None if s.m is None else _bump_codes(s.m, lay.m_range, rng),
    )
    if mod.sc is not None:
        mod.sc[0, 0, 0] = 0  # a zero scale makes its sub-block constant
    data = encode(x, t, scales=mod)
    q = quantize(x, t, scales=mod)
    np.testing.assert_array_equal(q.to_bytes(), data)

    # the bytes carry exactly the given fields
    _, stored = enc._CODECS[t].unpack(data.reshape(8, -1, type_info(t).type_size))
    np.testing.assert_array_equal(stored.d.view(np.uint16), mod.d.view(np.uint16))
    for name in ("dmin", "sc", "m"):
        if getattr(mod, name) is not None:
            np.testing.assert_array_equal(getattr(stored, name), getattr(mod, name))
    y = decode(data, t, COLS)
    np.testing.assert_array_equal(_bits(y), _bits(q.values()))

    if mod.sc is not None:
        sub = type_info(t).block_size // lay.n_sub
        first = y[0, :sub]
        assert np.all(first == first[0])
        expected = 0.0 if mod.dmin is None else -np.float32(mod.dmin[0, 0]) * np.float32(mod.m[0, 0, 0])
        assert first[0] == np.float32(expected)

    # the codes are the best ones for these scales: no other code of the same sub-block is closer
    _assert_codes_optimal(t, x, q)


def _assert_codes_optimal(t: GGMLType, x: np.ndarray, q: enc.Quantized) -> None:
    rows, n = x.shape
    y = q.values().astype(np.float64)
    if t == GGMLType.Q1_0:
        d = np.repeat(q.scales.d.astype(np.float64), 128, axis=1)
        alt = np.minimum(np.abs(x - d), np.abs(x + d))
    else:
        lo, hi = {
            GGMLType.Q8_0: (-128, 127),
            GGMLType.Q4_0: (-8, 7),
            GGMLType.Q2_0: (-1, 2),
            GGMLType.Q2_K: (0, 3),
            GGMLType.Q3_K: (-4, 3),
            GGMLType.Q4_K: (0, 15),
            GGMLType.Q5_K: (0, 31),
            GGMLType.Q6_K: (-32, 31),
        }[t]
        if q.scales.sc is None:
            S = np.repeat(q.scales.d.astype(np.float64), type_info(t).block_size, axis=1)
            M = np.zeros_like(S)
        else:
            sub = 256 // q.scales.sc.shape[-1]
            S = np.repeat((q.scales.d[..., None].astype(np.float32) * q.scales.sc).reshape(rows, -1), sub, axis=1)
            M = np.zeros_like(S) if q.scales.m is None else np.repeat(
                (q.scales.dmin[..., None].astype(np.float32) * q.scales.m).reshape(rows, -1), sub, axis=1
            )
        levels = np.arange(lo, hi + 1, dtype=np.float64)
        alt = np.abs(x[..., None] - (S[..., None] * levels - M[..., None])).min(-1)
    assert np.all(np.abs(x - y) <= alt + 1e-6 * (np.abs(x) + 1e-3))


# ----------------------------------------------------------------------------------------------------
# Q2_0 specifics: ggml's bytes through our decoder, both signs of d, the full code range, exact fit


def test_q2_0_decodes_ggml_bytes_exactly(rt) -> None:
    x = _weights("t3", seed=4)[:8]
    data = rt.ggml_quantize(int(GGMLType.Q2_0), np.ascontiguousarray(x), None)
    ref = rt.ggml_dequantize(int(GGMLType.Q2_0), data, COLS)
    np.testing.assert_array_equal(_bits(decode(data, "Q2_0", COLS)), _bits(ref))
    codes, _ = enc._CODECS[GGMLType.Q2_0].unpack(data.reshape(8, -1, 18))
    assert codes.max() <= 1  # ggml's quantizer maps max|x| to d: it never uses the code +2


def test_q2_0_uses_negative_scales_and_the_whole_code_range(rt) -> None:
    x = _weights("gauss", seed=5)[:16]
    x[0, :64] = np.abs(x[0, :64])  # a one-sided block: the long side of the grid must point up ...
    x[1, :64] = -np.abs(x[1, :64])  # ... or down, through a negative d
    q = quantize(x, "Q2_0")
    d = q.scales.d.astype(np.float32)
    assert d[0, 0] > 0 and d[1, 0] < 0
    assert (d < 0).any() and (d > 0).any() and q.codes.min() == -1 and q.codes.max() == 2
    np.testing.assert_array_equal(
        _bits(rt.ggml_dequantize(int(GGMLType.Q2_0), q.to_bytes(), COLS)), _bits(q.values())
    )
    # the down-pointing block reaches -2|d|
    assert q.values()[1, :64].min() == np.float32(2.0) * d[1, 0]


@pytest.mark.parametrize("with_importance", [False, True])
def test_q2_0_fit_matches_a_dense_scale_search(with_importance: bool) -> None:
    x = _weights("t3", seed=6)[:4].astype(np.float64)
    w = _importance() if with_importance else np.ones(COLS)
    q = quantize(x.astype(np.float32), "Q2_0", w if with_importance else None)
    xb = x.reshape(4, -1, 64)
    wb = np.broadcast_to(w.astype(np.float64), x.shape).reshape(xb.shape)
    ours = (wb * (xb - q.values().reshape(xb.shape)) ** 2).sum(-1)
    amax = np.abs(xb).max(-1)
    dense = np.full(amax.shape, np.inf)
    for f in np.linspace(-1.2, 1.2, 2401):  # every fp16 d near +-f*max|x|, nearest codes
        d = (amax * f).astype(np.float16).astype(np.float64)
        c = np.clip(np.rint(xb / np.where(d == 0, 1.0, d)[..., None]), -1, 2)
        dense = np.minimum(dense, (wb * (xb - c * d[..., None]) ** 2).sum(-1))
    assert np.all(ours <= dense * (1 + 1e-9))


# ----------------------------------------------------------------------------------------------------
# 5. IQ types through ggml


IQ_TYPES = sorted(t.name for t in GGML_ENCODED)


@pytest.mark.parametrize("tname", IQ_TYPES)
def test_iq_types_match_ggml_with_shared_importance(rt, tname: str) -> None:
    t = GGMLType[tname]
    x = _weights("gauss")[:6, :512]
    imp = _importance(n=512)
    data = encode(x, t, imp)
    np.testing.assert_array_equal(data, rt.ggml_quantize(int(t), np.ascontiguousarray(x), imp))
    # the decode path for IQ types is gguf-py's, which must agree with ggml
    np.testing.assert_array_equal(_bits(decode(data, t, 512)), _bits(rt.ggml_dequantize(int(t), data, 512)))
    if t not in REQUIRES_IMPORTANCE:
        np.testing.assert_array_equal(encode(x, t), rt.ggml_quantize(int(t), np.ascontiguousarray(x), None))


@pytest.mark.parametrize("tname", ["IQ2_XXS", "IQ4_XS"])
def test_iq_types_take_per_row_importance(rt, tname: str) -> None:
    t = GGMLType[tname]
    x = _weights("t3")[:4, :512]
    imp = np.stack([_importance(seed=10 + r, n=512) for r in range(4)])
    data = encode(x, t, imp)
    for r in range(4):
        alone = rt.ggml_quantize(int(t), np.ascontiguousarray(x[r : r + 1]), imp[r])
        np.testing.assert_array_equal(data[r : r + 1], alone)
    shared = encode(x, t, imp[0])
    assert not np.array_equal(data[1:], shared[1:])


def test_iq_type_requiring_importance_raises_without_it() -> None:
    with pytest.raises(ValueError, match="IQ2_XXS.*importance"):
        encode(_weights("gauss")[:2, :256], "IQ2_XXS")


def test_iq_types_take_no_scales() -> None:
    with pytest.raises(ValueError, match="scales"):
        fit_scales(_weights("gauss")[:2, :256], "IQ4_XS")


# ----------------------------------------------------------------------------------------------------
# 6. bad input


def test_row_length_must_be_block_multiple() -> None:
    with pytest.raises(ValueError, match=r"Q4_K.*256"):
        encode(np.zeros((2, 300), np.float32), "Q4_K")
    with pytest.raises(ValueError, match=r"Q1_0.*128"):
        fit_scales(np.zeros((2, 96), np.float32), "Q1_0")
    with pytest.raises(ValueError, match=r"Q2_0.*64"):
        encode(np.zeros((2, 96), np.float32), "Q2_0")
    with pytest.raises(ValueError, match=r"IQ4_NL.*32"):
        encode(np.zeros((2, 48), np.float32), "IQ4_NL")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values_rejected(bad: float) -> None:
    x = np.zeros((2, 256), np.float32)
    x[1, 17] = bad
    with pytest.raises(ValueError, match="non-finite"):
        encode(x, "Q6_K")


def test_bad_importance_rejected() -> None:
    x = _weights("gauss")[:4, :256]
    with pytest.raises(ValueError, match="non-negative"):
        encode(x, "Q4_K", -np.ones(256))
    with pytest.raises(ValueError, match="shape"):
        encode(x, "Q4_K", np.ones(128))
    with pytest.raises(ValueError, match="shape"):
        encode(x, "Q4_K", np.ones((3, 256)))
    with pytest.raises(ValueError, match="non-finite"):
        encode(x, "Q8_0", np.full(256, np.nan))
    with pytest.raises(ValueError, match="non-negative"):
        encode(x, "IQ4_XS", -np.ones(256))


def test_bad_scales_rejected() -> None:
    x = _weights("gauss")[:4, :512]
    s = fit_scales(x, "Q4_K")
    with pytest.raises(ValueError, match="shape"):
        encode(x[:2], "Q4_K", scales=s)
    with pytest.raises(ValueError, match="Q5_K"):
        encode(x, "Q5_K", scales=s)
    with pytest.raises(ValueError, match=r"\[0, 63\]"):
        encode(x, "Q4_K", scales=BlockScales(s.ggml_type, s.d, s.dmin, s.sc + 64, s.m))
    with pytest.raises(ValueError, match="fp16"):
        off_grid = s.d.astype(np.float32) + np.float32(1e-5)
        encode(x, "Q4_K", scales=BlockScales(s.ggml_type, off_grid, s.dmin, s.sc, s.m))
    with pytest.raises(ValueError, match="integer"):
        encode(x, "Q4_K", scales=BlockScales(s.ggml_type, s.d, s.dmin, s.sc.astype(np.float32), s.m))
    with pytest.raises(ValueError, match="dmin"):
        encode(x, "Q4_K", scales=BlockScales(s.ggml_type, s.d, None, s.sc, None))
    with pytest.raises(ValueError, match="BlockScales"):
        encode(x, "Q4_K", scales={"d": s.d})
    with pytest.raises(ValueError, match="no scales"):
        encode(x, "F16", scales=s)
    with pytest.raises(ValueError, match="shape"):
        encode(x, "Q8_0", scales=BlockScales(GGMLType.Q8_0, np.zeros((4, 8), np.float16)))


def test_bad_x_and_type_rejected() -> None:
    with pytest.raises(ValueError, match="2-D"):
        encode(np.zeros(256, np.float32), "Q4_K")
    with pytest.raises(ValueError, match="float"):
        encode(np.zeros((2, 256), np.int32), "Q4_K")
    with pytest.raises(ValueError, match="unknown GGML type"):
        encode(np.zeros((2, 256), np.float32), "Q4_Z")
    with pytest.raises(ValueError, match="bytes"):
        decode(np.zeros((2, 100), np.uint8), "Q4_K", 256)


# ----------------------------------------------------------------------------------------------------
# plumbing


def test_type_may_be_enum_id_or_name() -> None:
    x = _weights("gauss")[:2, :256]
    a = encode(x, GGMLType.Q5_K)
    np.testing.assert_array_equal(a, encode(x, 13))
    np.testing.assert_array_equal(a, encode(x, "q5_k"))


def test_chunking_does_not_change_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    x = _weights("t3")[:12]
    imp = np.abs(_weights("gauss")[:12])
    full = {t: encode(x, t, imp) for t in ("Q2_K", "Q6_K", "Q4_0", "Q2_0")}
    monkeypatch.setattr(enc, "CHUNK_ELEMENTS", 3 * COLS)  # several chunks of three rows
    for t, data in full.items():
        np.testing.assert_array_equal(encode(x, t, imp), data)
        np.testing.assert_array_equal(fit_scales(x, t, imp).d, quantize(x, t, imp).scales.d)


def test_degenerate_blocks_decode_to_finite_values() -> None:
    rows = [
        np.zeros(512),
        np.full(512, -0.7),
        np.full(512, 3.0),
        np.r_[np.zeros(500), np.full(12, 1e4)],
        np.r_[np.full(256, 1e-7), np.full(256, -5e-8)],
    ]
    x = np.stack(rows).astype(np.float32)
    zero_imp = np.r_[np.zeros(256), np.ones(256)]
    for t in SCALED:
        for imp in (None, zero_imp):
            y = decode(encode(x, t, imp), t, 512)
            assert np.all(np.isfinite(y))
            assert np.all(y[0] == 0.0), t
