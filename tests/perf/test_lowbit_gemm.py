"""omnimodel's Q1_0/Q2_0 GEMM (cpp/src/gemm_lowbit.cpp, the `gemm = omni` knob), through the runtime.

The kernel rounds the activations to Q8_0 with ggml-cpu's own from_float and sums exact per-32 integer
dot products in F32 (docs/parity.md, "Runtime numerics"): so it is held to float64 arithmetic on the
rounded activations within the sequential-summation bound of its K/32 block terms, and to ggml's own
Q1_0/Q2_0 matmul (gemm=ggml) within twice that.
"""

from __future__ import annotations

import numpy as np
import pytest

from omnimodel import _runtime
from omnimodel.arch import omni_mlp
from omnimodel.cpu import runs_omni_gemm
from omnimodel.gguf.types import GGMLType

U32 = 2.0**-24  # unit roundoff of float32

# (weight type, widths, tokens): K a multiple of the block (64 / 128), the last layer's 37 or 50 output
# rows not a multiple of the 32-row tile, tokens 1, 53 and 100 not multiples of the 6-token tile
CASES = [
    ("Q2_0", (256, 384, 37), 53),
    ("Q2_0", (192, 64, 50), 1),
    ("Q1_0", (256, 384, 37), 100),
    ("Q1_0", (384, 128, 50), 53),
]




def _model(tmp_path, weight_type, widths, gemm):
    cfg = omni_mlp.MLPConfig(widths=widths, norm="layer", activation="gelu", gemm=gemm)
    model = omni_mlp.random_mlp(cfg, weight_type, seed=0)
    path = tmp_path / f"{weight_type}-{gemm}.gguf"
    omni_mlp.write_gguf(model, path)
    return model, path


def _run(path, x, threads=2, profile=False):
    with _runtime.Model(str(path), n_threads=threads) as m:
        m.set_profile(profile)
        out = m.run({"x": x}, capture=["*"])
        return out, (m.profile() if profile else None)


@pytest.mark.parametrize("weight_type,widths,rows", CASES)
def test_lowbit_gemm_rounds_like_ggml_and_sums_in_f32(tmp_path, weight_type, widths, rows) -> None:
    if not runs_omni_gemm():
        pytest.skip("no AVX512-VNNI/VBMI: gemm=omni falls back to ggml's matmul")
    model, omni_path = _model(tmp_path, weight_type, widths, "omni")
    _, ggml_path = _model(tmp_path, weight_type, widths, "ggml")
    x = np.random.default_rng(1).standard_normal((rows, widths[0])).astype(np.float32)
    (got, prof), (ref, _) = _run(omni_path, x, profile=True), _run(ggml_path, x)
    w = model.stored_weights()
    tid = int(GGMLType[weight_type])
    for il in range(len(widths) - 1):
        p = f"layers.{il}."
        xin = x if il == 0 else got[f"layers.{il - 1}.act"].reshape(rows, widths[il])
        # the values ggml's from_float for Q8_0 makes of this input: the kernel's rounding point
        xr = _runtime.round_activations(tid, np.ascontiguousarray(xin, np.float32)).astype(np.float64)
        wd = w[p + "weight"].astype(np.float64)
        want = xr @ wd.T + w[p + "bias"]
        scale = np.abs(xr) @ np.abs(wd).T + np.abs(w[p + "bias"])
        n_terms = widths[il] // 32 + 1  # the K/32 block terms and the bias, each added with one rounding
        err = np.abs(got[p + "linear"].reshape(want.shape) - want)
        assert (err <= n_terms * U32 * scale + 1e-30).all(), (p, (err / scale).max())
    # the same input to the first layer: ggml's own Q1_0/Q2_0 matmul rounds it identically
    d = np.abs(got["layers.0.linear"] - ref["layers.0.linear"]).reshape(rows, widths[1])
    xr = _runtime.round_activations(tid, x).astype(np.float64)
    scale = np.abs(xr) @ np.abs(w["layers.0.weight"]).astype(np.float64).T
    assert (d <= 2 * (widths[0] // 32 + 2) * U32 * scale + 1e-30).all()
    # and it is this kernel that ran: a CUSTOM op reads each weight, no MUL_MAT does
    ops = [n["op"] for n in prof if n["src0_is_weight"]]
    assert ops == ["CUSTOM"] * (len(widths) - 1), ops


def test_lowbit_gemm_is_the_knob_and_falls_back_without_vnni_vbmi(tmp_path) -> None:
    """gemm=omni: omnimodel's kernel where the CPU has AVX512-VNNI and -VBMI, ggml's MUL_MAT where it has not;
    gemm=ggml: always ggml's MUL_MAT."""
    for gemm in ("omni", "ggml"):
        _, path = _model(tmp_path, "Q2_0", (128, 64, 8), gemm)
        _, prof = _run(path, np.ones((5, 128), np.float32), threads=1, profile=True)
        ops = [n["op"] for n in prof if n["src0_is_weight"]]
        kernel = "CUSTOM" if gemm == "omni" and runs_omni_gemm() else "MUL_MAT"
        assert ops == [kernel, kernel], (gemm, ops)
