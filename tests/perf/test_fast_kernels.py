"""omnimodel's own CPU kernels, through the runtime: the vectorised exact-erf GELU and the AVX512-BF16 GEMM.

Both are held to float64 arithmetic with bounds derived from what they compute (docs/parity.md,
"Runtime numerics"), and to ggml's kernels for the same op.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from omnimodel import _runtime
from omnimodel.arch import omni_mlp

U32 = 2.0**-24  # unit roundoff of float32


def _run(path, x, threads=2) -> dict[str, np.ndarray]:
    with _runtime.Model(str(path), n_threads=threads) as m:
        return m.run({"x": x}, capture=["*"])


def _gelu64(v: np.ndarray) -> np.ndarray:
    erf = np.vectorize(math.erf)
    v = v.astype(np.float64)
    return 0.5 * v * (1.0 + erf(v / math.sqrt(2.0)))


def _bf16(a: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 (round to nearest even) -> float32, as ggml_compute_fp32_to_bf16."""
    u = np.ascontiguousarray(a, np.float32).view(np.uint32).astype(np.uint64)
    return (((u + 0x7FFF + ((u >> 16) & 1)) >> 16) << 16).astype(np.uint32).view(np.float32)


@pytest.mark.parametrize("activation", ["gelu_erf_fast", "gelu"])
def test_gelu_is_within_its_bound_of_float64(tmp_path, activation) -> None:
    """The fast GELU (and ggml's, for comparison) against float64 on what the runtime fed it: inputs
    spread over [-9, 9] by the layer norm's scale, all three branches of the fast erf taken."""
    cfg = omni_mlp.MLPConfig(widths=(48, 4096, 8), norm="layer", activation=activation)
    model = omni_mlp.random_mlp(cfg, "F32", seed=0)
    model.weights["layers.0.norm.weight"] *= 3.0
    omni_mlp.write_gguf(model, tmp_path / "g.gguf")
    x = np.random.default_rng(2).standard_normal((37, 48)).astype(np.float32)
    got = _run(tmp_path / "g.gguf", x)
    pre, post = got["layers.0.norm"].ravel(), got["layers.0.act"].ravel().astype(np.float64)
    a = np.abs(pre) / math.sqrt(2)
    assert (a < 1).any() and ((a >= 1) & (a < 4)).any() and (a >= 4).any() and (pre < 0).any()
    want = _gelu64(pre)
    err = np.abs(post - want)
    big = np.abs(want) > 1e-3
    # the fast erf: 4e-7 absolute (about half an ulp of |x| <= 8), 1e-6 relative where |gelu| > 1e-3;
    # libm's 1 + erff(u) loses relative accuracy where gelu is small (cancellation): 5e-5
    assert err.max() <= 1e-6
    assert (err[big] / np.abs(want[big])).max() <= (2e-6 if activation == "gelu_erf_fast" else 1e-4)


def _gemm_model(tmp_path, widths, gemm, seed=0):
    cfg = omni_mlp.MLPConfig(widths=widths, norm="layer", activation="gelu", gemm=gemm)
    model = omni_mlp.random_mlp(cfg, "BF16", seed=seed)
    path = tmp_path / f"bf16-{gemm}.gguf"
    omni_mlp.write_gguf(model, path)
    return model, path


@pytest.mark.parametrize("widths,rows", [((1024, 520, 64), 100), ((100, 37, 6), 53), ((36, 61, 10), 1)])
def test_bf16_gemm_rounds_like_ggml_and_sums_in_f32(tmp_path, widths, rows) -> None:
    """gemm=omni: activations rounded to BF16 (nearest even, as ggml's from_float), exact products,
    F32 sums; so within the sequential-summation bound K u sum|w x| of float64 on the rounded
    activations, and within twice that of ggml's BF16 matmul. Odd sizes: 37 and 61 output rows (not a
    multiple of the 8-row tile), 53 and 1 tokens (not a multiple of the 48-token panel)."""
    if not _runtime.cpu_features().get("avx512_bf16"):
        pytest.skip("no AVX512-BF16: gemm=omni falls back to ggml's matmul")
    omni, omni_path = _gemm_model(tmp_path, widths, "omni")
    _, ggml_path = _gemm_model(tmp_path, widths, "ggml")
    x = np.random.default_rng(1).standard_normal((rows, widths[0])).astype(np.float32)
    got, ref = _run(omni_path, x), _run(ggml_path, x)
    w = omni.stored_weights()
    for il in range(len(widths) - 1):
        p = f"layers.{il}."
        xin = x if il == 0 else got[f"layers.{il - 1}.act"]
        xr = _bf16(xin).astype(np.float64)
        want = xr @ w[p + "weight"].astype(np.float64).T + w[p + "bias"]
        scale = np.abs(xr) @ np.abs(w[p + "weight"]).astype(np.float64).T + np.abs(w[p + "bias"])
        k = widths[il]
        err = np.abs(got[p + "linear"] - want)
        assert (err <= (k + 1) * U32 * scale + 1e-30).all(), (p, (err / scale).max())
    # same inputs to the first layer: ggml's BF16 matmul rounds the activations identically
    d = np.abs(got["layers.0.linear"] - ref["layers.0.linear"])
    xr = _bf16(x).astype(np.float64)
    scale = np.abs(xr) @ np.abs(w["layers.0.weight"]).astype(np.float64).T
    assert (d <= 2 * (widths[0] + 1) * U32 * scale + 1e-30).all()


def test_bf16_gemm_is_used_and_odd_widths_fall_back(tmp_path) -> None:
    """The profile shows omnimodel's GEMM (a CUSTOM op reading the weight) where it applies; an odd K
    (37) keeps ggml's MUL_MAT for that layer."""
    if not _runtime.cpu_features().get("avx512_bf16"):
        pytest.skip("no AVX512-BF16")
    _, path = _gemm_model(tmp_path, (64, 37, 8), "omni")
    with _runtime.Model(str(path), n_threads=1) as m:
        m.set_profile(True)
        m.run({"x": np.ones((5, 64), np.float32)})
        nodes = m.profile()
    weight_ops = [n["op"] for n in nodes if n["src0_is_weight"] and n["src_type"][0] == 30]  # BF16
    assert weight_ops == ["CUSTOM", "MUL_MAT"], weight_ops
