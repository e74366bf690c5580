"""Weight repacking (ggml's CPU_REPACK buffer type, chosen per matrix at the first compute).

Repacked and plain weights feed ggml identical integer dot products of identically quantized
activations (Q8_0 blocks for Q4_0/IQ4_NL); only the order in which the per-block float terms d_w d_x
sum_i(q_w q_x) are added differs. So the two results differ by at most about 2 (K/32) u sum|w x|
(two different orders of K/32 float32 additions); the tests allow 4 (K/32) u sum|w x|.
"""

from __future__ import annotations

import numpy as np
import pytest

from omnimodel import _runtime
from omnimodel.arch import omni_mlp

U32 = 2.0**-24


def _has_repack() -> bool:
    return "CPU_REPACK" in _runtime.cpu_features().get("extra_buffer_types", [])


def _run(path, x, repack):
    with _runtime.Model(str(path), n_threads=2, repack=repack) as m:
        out = m.run({"x": x}, capture=["*"])
        return out, m.run_stats()


@pytest.mark.parametrize("wtype", ["Q4_0", "IQ4_NL"])
def test_repacked_weights_give_the_plain_results(tmp_path, wtype) -> None:
    if not _has_repack() or not _runtime.cpu_features().get("avx2"):
        pytest.skip("this CPU has no repack kernels for these types")
    cfg = omni_mlp.MLPConfig(widths=(512, 256, 64), norm="layer", activation="gelu")
    model = omni_mlp.random_mlp(cfg, wtype, seed=5)
    omni_mlp.write_gguf(model, tmp_path / "m.gguf")
    x = np.random.default_rng(6).standard_normal((29, 512)).astype(np.float32)
    packed, st = _run(tmp_path / "m.gguf", x, True)
    plain, st0 = _run(tmp_path / "m.gguf", x, False)
    assert st["n_repacked"] == 2 and 0 < st["repacked_bytes"] <= st["weight_bytes"], st
    assert st0["n_repacked"] == 0 and st0["repacked_bytes"] == 0
    w = model.stored_weights()
    k = cfg.widths[0]  # the first layer sees the same input in both runs
    scale = np.abs(x).astype(np.float64) @ np.abs(w["layers.0.weight"]).astype(np.float64).T
    d = np.abs(packed["layers.0.linear"].astype(np.float64) - plain["layers.0.linear"])
    assert (d <= 4 * (k / 32) * U32 * scale).all(), (d / scale).max()
    # downstream the differences stay at float32 level (a quantized activation would flip otherwise)
    np.testing.assert_allclose(packed["out"], plain["out"], rtol=1e-4, atol=1e-5)


def test_k_quants_stay_with_the_tiled_kernel(tmp_path) -> None:
    """On x86 ggml's tiled K-quant matmul beats the repacked Q4_K/Q2_K kernels (docs/benchmarks.md):
    those matrices are not repacked, so results equal a repack-off run exactly."""
    if not _has_repack() or not _runtime.cpu_features().get("avx2"):
        pytest.skip("x86 policy")
    cfg = omni_mlp.MLPConfig(widths=(512, 256, 64), norm="layer", activation="gelu")
    omni_mlp.write_gguf(omni_mlp.random_mlp(cfg, "Q4_K", seed=5), tmp_path / "k.gguf")
    x = np.random.default_rng(6).standard_normal((29, 512)).astype(np.float32)
    packed, st = _run(tmp_path / "k.gguf", x, True)
    plain, _ = _run(tmp_path / "k.gguf", x, False)
    assert st["n_repacked"] == 0
    for k in plain:
        np.testing.assert_array_equal(packed[k], plain[k])


def _has_kquant_gemm() -> bool:
    f = _runtime.cpu_features()
    return bool(f.get("avx512") and f.get("avx512_vnni") and f.get("avx512_vbmi"))


def _load_gemm_ggml_graph(plugin, tmp_path) -> None:
    """The miniature's graph with every module's `gemm` knob at ggml: Q4_0 matmuls are ggml's MUL_MAT."""
    from omnimodel.build import build_plugin
    from omnimodel.codegen.render import render
    from omnimodel.plan.skills import SKILLS

    plan = plugin.plan
    for m in plan.modules:
        if "gemm" in {k.name for k in SKILLS[m.skill].knobs}:
            plan = plan.with_knob(m.name, "gemm", "ggml")
    render(plan, tmp_path / "src")
    _runtime.load_plugin(build_plugin(tmp_path / "src", tmp_path / "build", verbose=False))


def test_only_matmul_weights_are_repacked_in_the_oft_graph(oft_generated_graph, tmp_path) -> None:
    """Every matrix of the OFT miniature as Q4_0, the token embedding too, with ggml's matmuls (gemm=ggml):
    the graph reads the embedding with GET_ROWS, which the repacked layout cannot serve, so it must stay
    as stored; the rest are repacked and the whole graph agrees with the plain run (every intermediate,
    same bound at the widest K). With omnimodel's GEMM (the default gemm=omni, on an AVX512-VNNI CPU) the
    Q4_0 matrices are read as stored by that GEMM, so nothing is repacked (no second copy in memory)."""
    if not _has_repack() or not _runtime.cpu_features().get("avx2"):
        pytest.skip("this CPU has no Q4_0 repack kernel")
    from omnimodel.arch.openvla_oft import export as oft_export
    from omnimodel.arch.openvla_oft import load_policy
    from omnimodel.gguf.types import GGMLType
    from omnimodel.validate.compare import cosine
    from omnimodel.validate.reference import parity_observation, run_reference

    policy = load_policy(oft_generated_graph.checkpoint)
    types = {n: GGMLType.Q4_0 for n, p in policy.model.named_parameters()
             if p.ndim == 2 and p.shape[1] % 32 == 0 and p.shape[0] % 8 == 0}
    assert "language_model.model.embed_tokens.weight" in types
    gguf = oft_export.write_gguf(policy, tmp_path / "q.gguf", "f32", types=types)
    images, proprio = parity_observation(policy, 0)
    inputs = run_reference(policy, images, "pick up the bowl", proprio).inputs
    if _has_kquant_gemm():
        with _runtime.Model(str(gguf), n_threads=2, repack=True) as m:
            m.run(inputs)
            assert m.run_stats()["n_repacked"] == 0
    _load_gemm_ggml_graph(oft_generated_graph, tmp_path)
    try:
        with _runtime.Model(str(gguf), n_threads=2, repack=True) as m:
            packed = m.run(inputs, capture=["*"])
            st = m.run_stats()
        with _runtime.Model(str(gguf), n_threads=2, repack=False) as m:
            plain = m.run(inputs, capture=["*"])
    finally:
        oft_generated_graph.reload()
    assert 0 < st["n_repacked"] < len(types), st
    np.testing.assert_array_equal(packed["language_model.model.embed_tokens"],
                                  plain["language_model.model.embed_tokens"])
    assert packed.keys() == plain.keys()
    worst = min(cosine(packed[k], plain[k]) for k in plain)
    assert worst >= 1 - 1e-9, worst
