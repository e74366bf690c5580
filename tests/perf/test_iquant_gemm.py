"""omnimodel's GEMM for Q2_K and the 1- to 3-bit grid quants IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS, IQ3_S and IQ1_M
(cpp/src/gemm_iquant.cpp decoders, cpp/src/gemm_lowbit.cpp engine, the `gemm = omni` knob), through the
runtime.

Like the 4-bit kernels (test_kquant_gemm.py), the kernel rounds the activations to Q8_K with ggml-cpu's own
from_float and sums exact integer dot products per sub-block (16 weights for IQ2_XS, IQ2_S and IQ1_M, 32 for
the others; Q2_K's whole 256-blocks with its scales folded into the codes, its mins per 16) in F32. So it is held to float64 arithmetic on the rounded activations and ggml's
dequantized weights (to_float) within the summation bound of its F32 terms, and to ggml's own matmul of
the same weights (gemm=ggml) within twice that. The blocks are ggml's encodings of random weights, and
random bytes (every grid index, sign pattern and scale; only the F16 super-scales kept finite), so every
grid entry the decoder reads from ggml's dequantizer is exercised.
"""

from __future__ import annotations

import numpy as np
import pytest

from omnimodel import _runtime
from omnimodel.arch import omni_mlp
from omnimodel.cpu import runs_omni_gemm
from omnimodel.gguf.encoders import encode
from omnimodel.gguf.types import GGMLType
from omnimodel.gguf.writer import GGUFModelWriter

from gemm_check import check_sums, expected_kernel, run_linear, weight_kernels

SUB = {"Q2_K": 16,  # the bound counts Q2_K's mins per 16 (its scale terms, one per 256, are fewer)
       "IQ2_XXS": 32, "IQ2_XS": 16, "IQ2_S": 16, "IQ3_XXS": 32, "IQ3_S": 32, "IQ1_M": 16}
BYTES = {"Q2_K": 84, "IQ2_XXS": 66, "IQ2_XS": 74, "IQ2_S": 82, "IQ3_XXS": 98, "IQ3_S": 110, "IQ1_M": 56}

# (type, real row width K, output rows M, tokens): real-width rows (576 Llama, 1152 SigLIP, 1024 DINOv2,
# 1536 Llama FFN, 4304 SigLIP FFN, 4096 DINOv2 FFN), zero-padded to whole 256-blocks where needed; M not a
# multiple of the 32-row tile where it can be; 1, 7 and 300 tokens
CASES = [
    ("IQ1_M", 1024, 100, 300),
    ("IQ1_M", 576, 37, 7),
    ("IQ3_S", 1152, 96, 7),
    ("IQ3_S", 4304, 33, 1),
    ("Q2_K", 1536, 70, 300),
    ("Q2_K", 1024, 40, 1),
    ("IQ2_S", 4096, 64, 7),
    ("IQ3_XXS", 576, 50, 7),
    ("IQ2_XXS", 1152, 40, 7),
    ("IQ2_XS", 1024, 45, 7),
]




def _padded(k: int) -> int:
    return -(-k // 256) * 256


def _write(path, blocks: np.ndarray, shape: tuple[int, int], k: int, t: str, gemm: str) -> None:
    """A one-layer omni-mlp GGUF whose matrix is `blocks` (rows zero-padded past k, recorded as such)."""
    m = shape[0]
    with GGUFModelWriter(path, omni_mlp.ARCH) as out:
        out.add_uint32(f"{omni_mlp.ARCH}.block_count", 1)
        out.add_string(f"{omni_mlp.ARCH}.norm", "layer")
        out.add_float32(f"{omni_mlp.ARCH}.norm_eps", 1e-5)
        out.add_string(f"{omni_mlp.ARCH}.activation", "none")
        if gemm != "ggml":
            out.add_string(f"{omni_mlp.ARCH}.gemm", gemm)
        out.add_encoded("layers.0.weight", blocks, t, shape, real_width=k if k != shape[1] else None)
        out.add_tensor("layers.0.bias", np.zeros(m, np.float32), "F32")
        out.add_tensor("layers.0.norm.weight", np.ones(m, np.float32), "F32")
        out.add_tensor("layers.0.norm.bias", np.zeros(m, np.float32), "F32")


def _random_blocks(rng, blocks: np.ndarray, t: str) -> np.ndarray:
    """Random bytes in ggml's block layout of t, keeping `blocks`' F16 super-scales (so they stay finite)."""
    b = np.asarray(blocks, np.uint8).reshape(blocks.shape[0], -1, BYTES[t])
    r = rng.integers(0, 256, b.shape, dtype=np.uint8)
    if t == "Q2_K":
        r[..., 80:84] = b[..., 80:84]  # d, dmin
    elif t == "IQ1_M":
        for i in (49, 51, 53, 55):  # d's nibbles: the top 4 bits of the four 16-bit scale words
            r[..., i] = (r[..., i] & 0x0F) | (b[..., i] & 0xF0)
    else:
        r[..., 0:2] = b[..., 0:2]
    return r.reshape(blocks.shape)


def _f16(b: np.ndarray) -> np.ndarray:
    return b.copy().view(np.float16).astype(np.float64).reshape(b.shape[:-1])


def _magnitudes(blocks: np.ndarray, wd: np.ndarray, t: str) -> np.ndarray:
    """|each F32 term| of a weight: |w|, except Q2_K's two terms d sc q and dmin m (w is their difference)."""
    if t != "Q2_K":
        return np.abs(wd)
    m = wd.shape[0]
    b = np.asarray(blocks, np.uint8).reshape(m, -1, 84)
    d, dmin, sc = _f16(b[..., 80:82]), _f16(b[..., 82:84]), b[..., :16].astype(np.int64)
    mins = np.repeat(np.abs(dmin[..., None] * (sc >> 4)), 16, axis=-1).reshape(m, -1)
    return np.abs(wd + mins) + mins  # d sc q = w + dmin m


@pytest.mark.parametrize("t,k,m,tokens", CASES)
def test_iquant_gemm_rounds_like_ggml_and_sums_in_f32(tmp_path, t, k, m, tokens) -> None:
    if not runs_omni_gemm():
        pytest.skip("no AVX512-VNNI/VBMI: gemm=omni falls back to ggml's matmul")
    rng = np.random.default_rng(k + m + tokens)
    kp = _padded(k)
    w = np.zeros((m, kp), np.float32)
    w[:, :k] = rng.standard_normal((m, k)) / np.sqrt(k)
    encoded = encode(w, t, importance=np.ones_like(w))
    x = rng.standard_normal((tokens, k)).astype(np.float32)
    # token 0: halves with 127 first in every 256 values, so x / d lands on .5 ties (Q8_K's -127 / max is -1
    # exactly): the packing must round them half to even, as ggml's nearest_int does
    x[0] = rng.integers(-254, 255, k) / 2.0
    x[0, ::256] = 127.0
    xp = np.zeros((tokens, kp), np.float32)
    xp[:, :k] = x
    xr = _runtime.round_activations(int(GGMLType[t]), xp).astype(np.float64)
    n_terms = (2 if t == "Q2_K" else 1) * kp // SUB[t] + 3
    # the random blocks fill the rows' padding too: the runtime pads x with zeros, so it contributes nothing
    for name, blocks in (("encoded", encoded), ("random", _random_blocks(rng, encoded, t))):
        _write(tmp_path / f"{name}-omni.gguf", blocks, (m, kp), k, t, "omni")
        _write(tmp_path / f"{name}-ggml.gguf", blocks, (m, kp), k, t, "ggml")
        wd = _runtime.ggml_dequantize(int(GGMLType[t]), np.ascontiguousarray(blocks), kp).astype(np.float64)
        wd = wd.reshape(m, kp)
        want = xr @ wd.T
        scale = np.abs(xr) @ _magnitudes(blocks, wd, t).T
        ref, _ = run_linear(tmp_path / f"{name}-ggml.gguf", x, 2)
        check_sums(tmp_path / f"{name}-omni.gguf", ref, x, want, scale, n_terms, (t, name))


def test_iquant_gemm_is_the_knob(tmp_path) -> None:
    """gemm=omni: omnimodel's kernel for these types where the CPU has AVX512-VNNI; gemm=ggml: ggml's MUL_MAT."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((64, 256)).astype(np.float32)
    for t in SUB:
        blocks = encode(w, t, importance=np.ones_like(w))
        for gemm in ("omni", "ggml"):
            _write(tmp_path / f"{t}-{gemm}.gguf", blocks, w.shape, 256, t, gemm)
            _, prof = run_linear(tmp_path / f"{t}-{gemm}.gguf", np.ones((3, 256), np.float32), 1, profile=True)
            assert weight_kernels(prof) == [expected_kernel(gemm)], (t, gemm)
