"""Render -> build -> load: the generated OpenVLA-OFT graph against PyTorch, a wrong knob, plugin errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from omnimodel.arch.openvla_oft import load_policy, random_observation, run_policy, MiniatureSpec
from omnimodel.arch.openvla_oft.export import runtime_inputs, write_gguf
from omnimodel.build import PluginBuildError, build_plugin
from omnimodel.codegen.render import render, render_source

from omnimodel import _runtime  # a broken build must fail these tests, not skip them


def cosine(a, b) -> float:
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.fixture(scope="module")
def reference(generated_oft_plugin, tmp_path_factory):
    """Hooked reference outputs, the F32 GGUF (from the plan's types) and the runtime inputs."""
    torch.set_num_threads(1)
    policy = load_policy(generated_oft_plugin.checkpoint)
    images, proprio = random_observation(MiniatureSpec(seed=0), seed=3)
    seen: dict[str, list[torch.Tensor]] = {}
    hooks = [mod.register_forward_hook(lambda _m, _i, o, n=n: seen.setdefault(n, []).append(o.detach().float()))
             for n, mod in policy.model.named_modules() if n]
    try:
        out = run_policy(policy, images, "Put the black bowl on the plate", proprio)
    finally:
        for h in hooks:
            h.remove()
    gguf = write_gguf(policy, tmp_path_factory.mktemp("gguf") / "oft.gguf", "f32",
                      types=generated_oft_plugin.plan.tensor_types())
    return {k: torch.cat(v, 0).numpy() for k, v in seen.items()}, gguf, runtime_inputs(out)


def run(gguf, inputs):
    with _runtime.Model(str(gguf), n_threads=1) as m:
        return m.run(inputs, capture=["*"])


def test_rendering_is_deterministic(generated_oft_plugin, tmp_path) -> None:
    plan = generated_oft_plugin.plan
    assert render_source(plan) == render_source(plan)
    a, b = render(plan, tmp_path / "a"), render(plan, tmp_path / "b")
    assert [p.read_bytes() for p in a] == [p.read_bytes() for p in b]
    src = (tmp_path / "a" / "openvla_oft.cpp").read_text()
    # knobs are baked in as constants, with the module named in a comment
    assert "// ---- vision_backbone.featurizer (skill vit_tower)" in src
    assert "act_kind::gelu_erf_fast;  // knobs gelu, gelu_impl = fast" in src
    assert "hp.causal     = false;  // knob attn_mask" in src and "attn_impl::omni;  // knob attn" in src
    tanh = render_source(plan.with_knob("vision_backbone.featurizer", "gelu", "tanh"))
    assert tanh != src and "act_kind::gelu_tanh;  // knobs gelu, gelu_impl = fast" in tanh
    libm = render_source(plan.with_knob("vision_backbone.featurizer", "gelu_impl", "ggml"))
    assert "act_kind::gelu_erf;  // knobs gelu, gelu_impl = ggml" in libm


def test_generated_graph_matches_pytorch_at_f32(generated_oft_plugin, reference) -> None:
    hooks, gguf, inputs = reference
    generated_oft_plugin.reload()
    assert _runtime.graph_source("openvla-oft") == f"plugin:{generated_oft_plugin.library.resolve()}"
    with _runtime.Model(str(gguf), n_threads=1) as m:
        assert m.graph_source == f"plugin:{generated_oft_plugin.library.resolve()}"
    res = run(gguf, inputs)
    cos = {n: cosine(v, hooks[n]) for n, v in res.items() if n in hooks}
    assert len(cos) >= 30
    assert all(f"vision_backbone.featurizer.blocks.{i}" in cos for i in range(2))
    bad = {n: c for n, c in cos.items() if not c >= 0.99999}
    assert not bad, bad


def test_wrong_gelu_knob_mismatches_in_that_towers_first_block(generated_oft_plugin, reference, tmp_path) -> None:
    """tanh GELU in the DINOv2 tower: renders, builds, and its first block measurably disagrees while the
    other tower stays exact -- what the validator's fault injection relies on."""
    hooks, gguf, inputs = reference
    plan = generated_oft_plugin.plan.with_knob("vision_backbone.featurizer", "gelu", "tanh")
    render(plan, tmp_path / "src")
    lib = build_plugin(tmp_path / "src", tmp_path / "build", verbose=False)
    assert lib != generated_oft_plugin.library
    try:
        _runtime.load_plugin(lib)
        res = run(gguf, inputs)
    finally:
        generated_oft_plugin.reload()
    bad = "vision_backbone.featurizer.blocks.0"
    assert np.abs(res[bad] - hooks[bad]).max() > 1e-4
    assert np.abs(res[f"{bad}.mlp"] - hooks[f"{bad}.mlp"]).max() > 1e-4
    assert np.abs(res[f"{bad}.attn"] - hooks[f"{bad}.attn"]).max() < 1e-5  # before the GELU: still exact
    assert cosine(res["vision_backbone.fused_featurizer"], hooks["vision_backbone.fused_featurizer"]) >= 0.99999
    assert plan.module_for_tensor(bad).name == "vision_backbone.featurizer"
    # and the correct graph is back
    assert cosine(run(gguf, inputs)[bad], hooks[bad]) >= 0.99999


def test_plugin_load_errors_are_clean(tmp_path) -> None:
    with pytest.raises(_runtime.RuntimeStatusError, match="cannot load plugin") as e:
        _runtime.load_plugin(tmp_path / "missing.so")
    assert e.value.status == "i/o error"
    # a real shared library without the entry point: the Python extension itself
    with pytest.raises(_runtime.RuntimeStatusError, match="omnimodel_plugin_register") as e:
        _runtime.load_plugin(_runtime.__file__)
    assert e.value.status == "unsupported"
    with pytest.raises(_runtime.RuntimeStatusError):
        _runtime.load_plugin("")


def test_build_errors_carry_the_compiler_output(generated_oft_plugin, tmp_path) -> None:
    render(generated_oft_plugin.plan, tmp_path / "src")
    cpp = tmp_path / "src" / "openvla_oft.cpp"
    cpp.write_text(cpp.read_text().replace("hp.n_embd      =", "hp.n_embd_typo =", 1))
    with pytest.raises(PluginBuildError, match="n_embd_typo"):
        build_plugin(tmp_path / "src", tmp_path / "build", verbose=False)
    with pytest.raises(PluginBuildError, match="plugin.json"):
        build_plugin(tmp_path, tmp_path / "build2", verbose=False)
