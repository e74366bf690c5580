"""omnimodel's GEMM for the 4-bit types Q4_0, IQ4_NL, Q4_K and IQ4_XS (cpp/src/gemm_kquant.cpp decoders,
cpp/src/gemm_lowbit.cpp engine, the `gemm = omni` knob), through the runtime.

The kernel rounds the activations to the weight's ggml vec_dot type (Q8_0 or Q8_K) with ggml-cpu's own
from_float and sums exact per-32 integer dot products in F32, so it is held to float64 arithmetic on the
rounded activations within the summation bound of its per-32 F32 terms, and to ggml's own matmul of the
same weights (gemm=ggml: ggml's tiled / repacked kernels) within twice that. Q4_K's terms are d sc q and
dmin m separately (its mins are a second F32 term per 32 weights), so its bound is taken over both.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from omnimodel import _runtime
from omnimodel.arch import omni_mlp
from omnimodel.cpu import runs_omni_gemm
from omnimodel.gguf.encoders import encode
from omnimodel.gguf.types import GGMLType
from omnimodel.gguf.writer import GGUFModelWriter

from gemm_check import check_sums, expected_kernel, run_linear, weight_kernels

BLOCK = {"Q4_0": 32, "IQ4_NL": 32, "Q4_K": 256, "IQ4_XS": 256}

# (type, real row width K, output rows M, tokens): the real-width rows (576 Llama, 1152 SigLIP, 1536 Llama
# FFN, 4304 SigLIP FFN, 4096 DINOv2 FFN / Llama-2), zero-padded where the block does not divide them
# (576 -> 768 and 1152 -> 1280 for the 256-blocks, 4304 -> 4320 / 4352); M not a multiple of the
# 32-row tile where it can be; 1, 7 and 522 tokens
CASES = [
    ("Q4_K", 576, 1536, 7),
    ("Q4_K", 4096, 37, 1),
    ("Q4_K", 1536, 100, 522),
    ("Q4_0", 4304, 96, 7),
    ("Q4_0", 576, 50, 522),
    ("IQ4_NL", 1152, 4304, 1),
    ("IQ4_NL", 4096, 33, 7),
    ("IQ4_XS", 1152, 576, 7),
    ("IQ4_XS", 4304, 40, 1),
]




def _padded(k: int, t: str) -> int:
    return -(-k // BLOCK[t]) * BLOCK[t]


def _write(path, w: np.ndarray, bias: np.ndarray, t: str, gemm: str) -> np.ndarray:
    """A one-layer omni-mlp GGUF whose matrix is w (zero-padded to whole blocks, recorded as such); returns
    the encoded blocks."""
    m, k = w.shape
    wp = np.zeros((m, _padded(k, t)), np.float32)
    wp[:, :k] = w
    blocks = encode(wp, t)
    with GGUFModelWriter(path, omni_mlp.ARCH) as out:
        out.add_uint32(f"{omni_mlp.ARCH}.block_count", 1)
        out.add_string(f"{omni_mlp.ARCH}.norm", "layer")
        out.add_float32(f"{omni_mlp.ARCH}.norm_eps", 1e-5)
        out.add_string(f"{omni_mlp.ARCH}.activation", "none")
        if gemm != "ggml":
            out.add_string(f"{omni_mlp.ARCH}.gemm", gemm)
        out.add_encoded("layers.0.weight", blocks, t, wp.shape, real_width=k if k != wp.shape[1] else None)
        out.add_tensor("layers.0.bias", bias, "F32")
        out.add_tensor("layers.0.norm.weight", np.ones(m, np.float32), "F32")
        out.add_tensor("layers.0.norm.bias", np.zeros(m, np.float32), "F32")
    return blocks


def _f16(b: np.ndarray) -> np.ndarray:
    return b.copy().view(np.float16).astype(np.float64).reshape(b.shape[:-1])


def _q4_k_terms(blocks: np.ndarray, m: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Q4_K's two terms per weight, d sc_j q and dmin m_j (w is their difference), from the 144-byte blocks
    (ggml-common.h: F16 d and dmin, 12 bytes of 6-bit scales and mins, 128 bytes of nibbles)."""
    b = np.asarray(blocks, np.uint8).reshape(m, k // 256, 144)
    d, dmin, s, qs = _f16(b[..., 0:2]), _f16(b[..., 2:4]), b[..., 4:16].astype(np.int64), b[..., 16:]
    sc = np.empty(b.shape[:2] + (8,), np.int64)
    mn = np.empty_like(sc)
    sc[..., :4], mn[..., :4] = s[..., 0:4] & 63, s[..., 4:8] & 63
    sc[..., 4:] = (s[..., 8:12] & 15) | ((s[..., 0:4] >> 6) << 4)
    mn[..., 4:] = (s[..., 8:12] >> 4) | ((s[..., 4:8] >> 6) << 4)
    q = np.empty(b.shape[:2] + (4, 2, 32), np.int64)  # per 64 weights: the low nibbles, then the high
    chunks = qs.reshape(b.shape[:2] + (4, 32)).astype(np.int64)
    q[..., 0, :], q[..., 1, :] = chunks & 15, chunks >> 4
    q = q.reshape(b.shape[:2] + (8, 32))
    pos = (d[..., None] * sc)[..., None] * q
    neg = np.broadcast_to((dmin[..., None] * mn)[..., None], q.shape)
    return pos.reshape(m, k), neg.reshape(m, k)


@pytest.mark.parametrize("t,k,m,tokens", CASES)
def test_kquant_gemm_rounds_like_ggml_and_sums_in_f32(tmp_path, t, k, m, tokens) -> None:
    if not runs_omni_gemm():
        pytest.skip("no AVX512-VNNI/VBMI: gemm=omni falls back to ggml's matmul")
    rng = np.random.default_rng(k + m + tokens)
    w = (rng.standard_normal((m, k)) / np.sqrt(k)).astype(np.float32)
    bias = (0.1 * rng.standard_normal(m)).astype(np.float32)
    x = rng.standard_normal((tokens, k)).astype(np.float32)
    # token 0: halves with 127 first in every 256 values, so x / d lands on .5 ties (Q8_K's -127 / max is -1
    # exactly): the packing must round them half to even, as ggml's nearest_int does
    x[0] = rng.integers(-254, 255, k) / 2.0
    x[0, ::256] = 127.0
    blocks = _write(tmp_path / "omni.gguf", w, bias, t, "omni")
    _write(tmp_path / "ggml.gguf", w, bias, t, "ggml")
    kp = _padded(k, t)
    wd = _runtime.ggml_dequantize(int(GGMLType[t]), np.ascontiguousarray(blocks), kp).astype(np.float64)
    if t == "Q4_K":
        pos, neg = _q4_k_terms(blocks, m, kp)
        assert np.array_equal(pos - neg, wd)  # the two terms are the stored weights' decomposition
        mag, n_terms = pos + neg, 2 * kp // 32 + 3
    else:
        mag, n_terms = np.abs(wd), kp // 32 + 3
    # the values ggml's from_float for the vec_dot type makes of the (zero-padded) input: the rounding point
    xp = np.zeros((tokens, kp), np.float32)
    xp[:, :k] = x
    xr = _runtime.round_activations(int(GGMLType[t]), xp).astype(np.float64)
    want = xr @ wd.T + bias
    scale = np.abs(xr) @ mag.T + np.abs(bias)
    ref, _ = run_linear(tmp_path / "ggml.gguf", x, 2)
    check_sums(tmp_path / "omni.gguf", ref, x, want, scale, n_terms, t)


def test_kquant_gemm_is_the_knob(tmp_path) -> None:
    """gemm=omni: omnimodel's kernel for the 4-bit types where the CPU has AVX512-VNNI; gemm=ggml: ggml's MUL_MAT."""
    rng = np.random.default_rng(0)
    w, bias = rng.standard_normal((64, 256)).astype(np.float32), np.zeros(64, np.float32)
    for t in BLOCK:
        for gemm in ("omni", "ggml"):
            _write(tmp_path / f"{t}-{gemm}.gguf", w, bias, t, gemm)
            _, prof = run_linear(tmp_path / f"{t}-{gemm}.gguf", np.ones((3, 256), np.float32), 1, profile=True)
            assert weight_kernels(prof) == [expected_kernel(gemm)], (t, gemm)


@pytest.mark.parametrize("t", ["Q4_K", "IQ4_NL"])
def test_whole_model_at_4_bits_passes_parity(tmp_path, t) -> None:
    """The demo policy with every matrix at t (RTN, `--allocation '*=T'`), gemm=omni by default: the
    validator's parity passes, and the quantized matmuls run this kernel (nothing left to ggml)."""
    from omnimodel.bench import bench
    from omnimodel.cli.main import main

    alloc = tmp_path / "alloc.txt"
    alloc.write_text(f"*={t}\n")
    out = tmp_path / "out"
    assert main(["convert", "openvla-oft", "--allocation", str(alloc), "--method", "rtn", "--out", str(out)]) == 0
    rep = json.loads((out / "validation_report.json").read_text())
    assert rep["passed"] and rep["reference_weights"] == "gguf"
    assert main(["validate", str(out)]) == 0
    if not runs_omni_gemm():
        return
    prof = bench(out, runs=1, warmup=0, torch_dtypes=(), profile=True, memory=False)["runtime"]["profile"]
    cats = {r["category"] for r in prof["by_op"]}
    assert f"GEMM(omni) w={t.lower()}" in cats, cats
    # ggml multiplies only the float matrices the allocation leaves (the patch embeddings' F16 kernels)
    assert not any(c.startswith("MUL_MAT w=") and c[len("MUL_MAT w="):] not in ("f32", "f16", "bf16") for c in cats), cats
