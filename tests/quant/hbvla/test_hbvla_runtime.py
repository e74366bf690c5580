"""HBVLA matrices run natively by the C++ runtime (cpp/src/hbvla.cpp) on toy omni-mlp GGUFs.

The runtime never forms the weight: it gathers and adds/subtracts the activation and runs stock Q1_0
matmuls. Its output must equal x W_hat^T (W_hat: the numpy decode of the same stored bits) up to the
Q8_0 rounding ggml's matmul applies to the activations (execution.rounding_bound), and match a numpy
emulation of that rounding much more tightly.
"""

from __future__ import annotations

import numpy as np
import pytest

from omnimodel import _runtime
from omnimodel.gguf import GGUFModelWriter
from omnimodel.gguf.types import GGMLType
from omnimodel.quant.hbvla.config import billm_style, hbvla, hbvla_element
from omnimodel.quant.hbvla.execution import apply, q8_0_round, rounding_bound
from omnimodel.quant.hbvla.method import quantize_matrix
from omnimodel.quant.hbvla.storage import encode_matrix, write_matrix

N_TOK = 5

_FAST = {"error_feedback": False}  # feedback changes the values, not what the runtime computes with
CASES = {
    "hbvla": (hbvla(salient_cap=32), (96, 576)),
    "element": (hbvla_element(salient_cap=16, **_FAST), (64, 336)),
    "group-mean": (hbvla(mean="group", salient_cap=8, **_FAST), (64, 256)),
    "element-group": (hbvla_element(mean="group", salient_cap=8, **_FAST), (32, 384)),
    "no-mean": (hbvla(mean="none", salient_cap=4, **_FAST), (32, 256)),
    "no-haar": (hbvla(haar=False, salient_col_haar=False, salient_cap=8, **_FAST), (48, 300)),
    "billm-style": (billm_style(salient_cap=8), (32, 256)),
    "odd-rows": (hbvla(salient_cap=8, **_FAST), (33, 128)),  # no column Haar on the salient part
    "wide": (hbvla(salient_cap=200, salient_counts=(150,), **_FAST), (64, 1024)),  # 150 salient rows
    "one-salient": (hbvla(salient_cap=1, salient_counts=(1,), **_FAST), (64, 128)),  # [1, O] planes: 1-D in ggml
}


def _quantized(cfg, shape, seed):
    rng = np.random.default_rng(seed)
    out_dim, n_in = shape
    w = rng.standard_normal(shape) * 0.05 + 0.01
    x = rng.standard_normal((n_in, 600))
    x[: n_in // 16] *= 8
    return quantize_matrix(w, x @ x.T / 600, cfg)


def _write(path, layers, final_bias=True, gemm=None):
    with GGUFModelWriter(path, "omni-mlp", method="hbvla") as w:
        w.add_uint32("omni-mlp.block_count", len(layers))
        w.add_string("omni-mlp.activation", "none")
        if gemm is not None:
            w.add_string("omni-mlp.gemm", gemm)
        for i, (q, bias) in enumerate(layers):
            write_matrix(w, f"layers.{i}.weight", q)
            if bias is not None:
                w.add_tensor(f"layers.{i}.bias", bias, "F32")


def _input(n_in, seed):
    x = np.random.default_rng(seed).standard_normal((N_TOK, n_in)).astype(np.float32)
    x[:, ::7] *= 5  # a few larger channels, like real activations
    return x


@pytest.mark.parametrize("name", sorted(CASES))
def test_runtime_matches_the_decoded_weight(tmp_path, name):
    cfg, shape = CASES[name]
    q = _quantized(cfg, shape, seed=len(name))
    bias = np.linspace(-1, 1, shape[0]).astype(np.float32)
    path = tmp_path / f"{name}.gguf"
    _write(path, [(q, bias)])
    x = _input(shape[1], 1)
    with _runtime.Model(str(path), n_threads=2) as m:
        names = {t["name"] for t in m.tensors()}
        got = m.run({"x": x})["out"].astype(np.float64)
    assert "layers.0.weight" not in names and "layers.0.hb.p0" in names
    w_hat = q.weight()
    exact = x.astype(np.float64) @ w_hat.T + bias
    # the step-by-step numpy model of the runtime is the decoded weight, exactly
    np.testing.assert_allclose(apply(q, x) + bias, exact, rtol=1e-9, atol=1e-9)
    bound = rounding_bound(q, x)
    err = np.abs(got - exact)
    assert (err <= bound).all(), f"worst excess {np.max(err - bound)}"
    assert err.max() > 0  # activations really are rounded: the bound is not vacuous
    # and against ggml's rounding emulated: equal to float32 accumulation
    emulated = apply(q, x, q8_0_round) + bias
    scale = np.abs(x).astype(np.float64) @ np.abs(w_hat).T
    assert np.abs(got - emulated).max() <= 5e-6 * scale.max()


@pytest.mark.parametrize("name", ["hbvla", "element-group"])
def test_omni_gemm_runs_the_planes(tmp_path, name):
    """gemm=omni: the Q1_0 plane matmuls run omnimodel's Q1_0 GEMM (a CUSTOM op per plane), which rounds
    the activations as ggml's matmul does, so the result holds the same emulation to float32 sums."""
    f = _runtime.cpu_features()
    if not (f.get("avx512") and f.get("avx512_vnni") and f.get("avx512_vbmi")):
        pytest.skip("no AVX512-VNNI/VBMI: gemm=omni falls back to ggml's matmul")
    cfg, shape = CASES[name]
    q = _quantized(cfg, shape, seed=len(name))
    bias = np.linspace(-1, 1, shape[0]).astype(np.float32)
    x = _input(shape[1], 1)
    q1_0 = int(GGMLType.Q1_0)
    emulated = apply(q, x, q8_0_round) + bias
    scale = np.abs(x).astype(np.float64) @ np.abs(q.weight()).T
    for gemm, kernel in (("omni", "CUSTOM"), ("ggml", "MUL_MAT")):
        path = tmp_path / f"{name}-{gemm}.gguf"
        _write(path, [(q, bias)], gemm=gemm)
        with _runtime.Model(str(path), n_threads=2) as m:
            m.set_profile(True)
            got = m.run({"x": x})["out"].astype(np.float64)
            ops = [n["op"] for n in m.profile()
                   if n["src0_is_weight"] and n["src_type"][0] == q1_0 and n["op"] in ("CUSTOM", "MUL_MAT")]
        assert ops and set(ops) == {kernel}, (gemm, ops)
        assert np.abs(got - emulated).max() <= 5e-6 * scale.max(), gemm


def test_a_stack_with_batched_tokens(tmp_path):
    q0 = _quantized(hbvla(salient_cap=16, **_FAST), (256, 576), 3)
    q1 = _quantized(hbvla_element(salient_cap=4, **_FAST), (64, 256), 4)
    path = tmp_path / "stack.gguf"
    _write(path, [(q0, None), (q1, np.ones(64, np.float32))])
    x = _input(576, 2)
    with _runtime.Model(str(path), n_threads=2) as m:
        got = m.run({"x": x}, capture=["layers.0.linear"])
    h = got["layers.0.linear"].astype(np.float64)
    ref0 = x @ q0.weight().T
    assert (np.abs(h - ref0) <= rounding_bound(q0, x)).all()
    ref1 = h @ q1.weight().T + 1.0  # layer 1 from the runtime's own layer-0 output
    assert (np.abs(got["out"] - ref1) <= rounding_bound(q1, h)).all()


def test_mixed_hbvla_and_fallback_layers(tmp_path):
    """store_matrix: a shape that suits becomes HBVLA, one that does not its documented fallback type;
    both run in one graph and both are counted."""
    from omnimodel.quant.hbvla.matrix import store_matrix, write_stored

    rng = np.random.default_rng(6)
    ws = [rng.standard_normal((64, 256)) * 0.05, rng.standard_normal((96, 64)) * 0.1, rng.standard_normal((8, 96))]
    stored = [store_matrix(f"layers.{i}.weight", w, None, hbvla(salient_cap=4)) for i, w in enumerate(ws)]
    assert [s.kind for s in stored] == ["hbvla", "fallback", "fallback"]
    assert stored[1].fallback.name == "Q2_0" and stored[2].fallback.name == "Q4_0"
    assert "fewer than one Q1_0 block" in stored[1].reason
    path = tmp_path / "mixed.gguf"
    with GGUFModelWriter(path, "omni-mlp") as w:
        w.add_uint32("omni-mlp.block_count", 3)
        written = [t for s in stored for t in write_stored(w, s)]
    assert 8 * sum(t.n_bytes for t in written) == sum(s.bits.total for s in stored)
    x = _input(256, 4)
    with _runtime.Model(str(path), n_threads=2) as m:
        got = m.run({"x": x}, capture=["layers.0.linear", "layers.1.linear"])
    h0 = got["layers.0.linear"].astype(np.float64)
    assert (np.abs(h0 - x @ stored[0].weight().T) <= rounding_bound(stored[0].hbvla, x)).all()
    h1 = h0 @ stored[1].weight().T  # Q2_0 (ggml rounds its activation to Q8_0 too)
    np.testing.assert_allclose(got["layers.1.linear"], h1, rtol=0, atol=0.02 * np.abs(h1).max())
    np.testing.assert_allclose(got["out"], got["layers.1.linear"] @ stored[2].weight().T, rtol=0,
                               atol=0.02 * np.abs(got["out"]).max())


def _corrupt(tmp_path, q, name, mutate):
    path = tmp_path / "bad.gguf"
    tensors = encode_matrix(q, "layers.0")
    with GGUFModelWriter(path, "omni-mlp") as w:
        w.add_uint32("omni-mlp.block_count", 1)
        for t in tensors:
            data = mutate(t.data.copy()) if t.name == name else t.data
            if data is not None:
                w.add_encoded(t.name, data, t.ggml_type, t.shape)
    return path


def test_corrupt_storage_is_an_error_not_a_crash(tmp_path):
    q = _quantized(hbvla(salient_cap=8, **_FAST), (32, 256), 5)
    x = _input(256, 3)

    def dup_perm(d):
        v = d.view("<i2")
        v[1] = v[0]
        return d

    def bad_version(d):
        d.view("<i4")[0] = 7
        return d

    for name, mutate, match, code in (
        ("layers.0.hb.perm", dup_perm, "not a set of distinct indices", 3),
        ("layers.0.hb.hdr", bad_version, "unsupported or inconsistent header", 3),
        ("layers.0.hb.p0", lambda d: None, "layers.0.hb.p0' is missing", 6),
    ):
        path = _corrupt(tmp_path, q, name, mutate)
        with _runtime.Model(str(path), n_threads=1) as m:
            with pytest.raises(_runtime.RuntimeStatusError, match=match) as ei:
                m.run({"x": x})
            assert ei.value.code == code
    path = tmp_path / "ok.gguf"
    _write(path, [(q, np.zeros((2, 16), np.float32))])  # a bias of the right size but not a vector
    with _runtime.Model(str(path), n_threads=1) as m:
        with pytest.raises(_runtime.RuntimeStatusError, match="expects inputs of width 256") as ei:
            m.run({"x": np.zeros((2, 100), np.float32)})
        assert ei.value.code == 5
        with pytest.raises(_runtime.RuntimeStatusError, match=r"bias 'layers.0.bias' has shape \[16, 2\]") as ei:
            m.run({"x": x})
        assert ei.value.code == 5


def test_a_deep_stack_outgrowing_the_base_graph_size(tmp_path):
    """500 HBVLA layers build a graph of more tensors than the runtime's base capacity (16384): the
    capacity grows with the file's HBVLA matrices (runtime.cpp graph_size_for) instead of ggml aborting.
    Run in a child process, so a regression is a failed test, not a crashed test session."""
    import subprocess
    import sys

    q = _quantized(hbvla(salient_cap=4, **_FAST), (128, 128), seed=7)
    assert len(q.salient_idx) > 0  # about 48 graph tensors per layer with a salient part: 24k in all
    path = tmp_path / "deep.gguf"
    _write(path, [(q, None)] * 500, final_bias=False)
    code = ("import numpy as np, omnimodel._runtime as r\n"
            f"m = r.Model({str(path)!r}, n_threads=1)\n"
            "y = m.run({'x': np.zeros((2, 128), np.float32)})['out']\n"  # the graph is the point, not the values
            "print('ok', y.shape, bool(np.isfinite(y).all()))\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0 and "ok (2, 128) True" in res.stdout, res.stderr[-2000:]
