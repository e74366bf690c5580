"""Analyzer and planner on the OpenVLA-OFT miniature: the description's variants and the plan's knobs/types."""

from __future__ import annotations

import json

import pytest

from omnimodel.analyze import analyze
from omnimodel.arch.openvla_oft import MiniatureSpec, write_miniature
from omnimodel.gguf.types import GGMLType
from omnimodel.plan import Plan, make_plan
from omnimodel.plan.skills import SKILLS


@pytest.fixture(scope="module")
def desc(tmp_path_factory):
    return analyze(write_miniature(tmp_path_factory.mktemp("mini") / "ckpt", MiniatureSpec(seed=0)))


def test_description_modules_and_variants(desc) -> None:
    assert desc.architecture == "openvla-oft"
    kinds = {m.name: m.kind for m in desc.modules}
    assert kinds == {
        "vision_backbone.featurizer": "vit_tower",
        "vision_backbone.fused_featurizer": "vit_tower",
        "projector": "projector",
        "proprio_projector": "proprio_projector",
        "language_model.model": "llama",
        "action_head": "l1_head",
    }
    dino, siglip = desc.module("vision_backbone.featurizer"), desc.module("vision_backbone.fused_featurizer")
    for tower in (dino, siglip):
        assert tower.variants["gelu"] == "erf" and tower.variants["norm"] == "layer"
        assert tower.variants["norm_eps"] == 1e-6 and tower.variants["attn_mask"] == "bidirectional"
        assert tower.variants["feature_block_index"] == tower.hparams["depth"] - 2
    assert dino.variants["layer_scale"] and dino.variants["class_token"] and dino.variants["reg_tokens"] == 4
    assert dino.variants["pos_embed"] == "patches_only"
    assert not siglip.variants["layer_scale"] and not siglip.variants["class_token"] and siglip.variants["reg_tokens"] == 0
    assert siglip.variants["image_mean"] == [0.5, 0.5, 0.5]
    llm = desc.module("language_model.model").variants
    assert llm == {"norm": "rms", "norm_eps": 1e-6, "rope": "neox", "rope_theta": 10000.0,
                   "attn_mask": "bidirectional", "act": "silu", "kv_heads": "grouped"}
    assert desc.module("action_head").variants["norm_eps"] == 1e-5
    assert desc.module("projector").variants["gelu"] == "erf"
    # unused tensors are not part of what the runtime reads
    names = {t.name for t in desc.tensors}
    assert not any(n.startswith("language_model.lm_head.") or ".attn_pool." in n for n in names)
    assert "action_head.model.fc1.weight" in names and "proprio_projector.fc1.weight" in names
    json.loads(desc.to_json())


def test_plan_types_and_knobs(desc) -> None:
    plan = make_plan(desc, "q8_0")
    t = plan.tensor_types()
    assert t["language_model.model.layers.0.self_attn.q_proj.weight"] == GGMLType.Q8_0
    assert t["vision_backbone.featurizer.pos_embed"] == GGMLType.F32
    assert t["vision_backbone.featurizer.blocks.0.norm1.weight"] == GGMLType.F32
    assert set(make_plan(desc).tensor_types().values()) == {GGMLType.F32}
    assert plan.module("vision_backbone.featurizer").skill == "vit_tower"
    assert plan.module("vision_backbone.featurizer").knobs["gelu"] == "erf"
    assert plan.module("language_model.model").knobs["attn_mask"] == "bidirectional"
    assert plan.module("projector").knobs == {"act": "gelu_erf", "gelu_impl": "fast", "gemm": "omni"}
    # speed knobs: the skills' defaults
    assert plan.module("vision_backbone.featurizer").knobs["attn"] == "omni"
    assert plan.module("language_model.model").knobs["gemm"] == "omni"


def test_plan_from_json_fills_speed_knobs_an_old_plan_lacks(desc) -> None:
    """A plan.json written before the speed knobs existed re-renders to the kernels it was validated
    with (naive attention, ggml's GELU and matmuls), not to today's defaults."""
    d = json.loads(make_plan(desc).to_json())
    for m in d["modules"]:
        for k in ("attn", "gelu_impl", "gemm"):
            m["knobs"].pop(k, None)
    old = Plan.from_json(json.dumps(d))
    assert old.module("vision_backbone.featurizer").knobs["attn"] == "naive"
    assert old.module("vision_backbone.featurizer").knobs["gelu_impl"] == "ggml"
    assert old.module("language_model.model").knobs["gemm"] == "ggml"
    assert old.module("action_head").knobs["gemm"] == "ggml"
    for m in old.modules:
        SKILLS[m.skill].validate(m.knobs)


def test_with_knob_is_immutable_and_checked(desc) -> None:
    plan = make_plan(desc)
    tanh = plan.with_knob("vision_backbone.featurizer", "gelu", "tanh")
    assert plan.module("vision_backbone.featurizer").knobs["gelu"] == "erf"
    assert tanh.module("vision_backbone.featurizer").knobs["gelu"] == "tanh"
    assert tanh.module("vision_backbone.fused_featurizer").knobs["gelu"] == "erf"
    with pytest.raises(ValueError):
        plan.with_knob("vision_backbone.featurizer", "gelu", "swish")
    with pytest.raises(KeyError):
        plan.with_knob("vision_backbone.featurizer", "no_such_knob", 1)
    assert Plan.from_json(tanh.to_json()) == tanh
    # what the checkpoint states survives the override, for the reflector to try first
    assert tanh.module("vision_backbone.featurizer").params["stated_knobs"]["gelu"] == "erf"


def test_module_for_tensor(desc) -> None:
    plan = make_plan(desc)
    assert plan.module_for_tensor("vision_backbone.featurizer.blocks.3").name == "vision_backbone.featurizer"
    assert plan.module_for_tensor("vision_backbone.fused_featurizer.blocks.0.mlp").name == "vision_backbone.fused_featurizer"
    assert plan.module_for_tensor("proprio_projector.fc1").name == "proprio_projector"  # not "projector"
    assert plan.module_for_tensor("projector").name == "projector"
    assert plan.module_for_tensor("language_model.model.layers.1").name == "language_model.model"
    # the architecture glue owns what it computes itself
    assert plan.module_for_tensor("inputs_embeds").skill == "openvla_oft_glue"
    assert plan.module_for_tensor("action_hidden_states").skill == "openvla_oft_glue"
    assert plan.module_for_tensor("no.such.tensor") is None


def test_skill_fixes() -> None:
    assert {"gelu": "tanh"} in SKILLS["vit_tower"].fixes
    assert {"attn_mask": "causal"} in SKILLS["llama_stack"].fixes and {"rope": "normal"} in SKILLS["llama_stack"].fixes
    cur = {"gelu": "erf", "norm_eps": 1e-6}
    alts = SKILLS["vit_tower"].alternatives(cur, extra={"norm_eps": [1e-6, 2e-6]})
    # the per-module candidates (what the config states) come first; no-ops are dropped
    assert {"gelu": "erf"} not in alts and alts[0] == {"norm_eps": 2e-6} and alts[1] == {"gelu": "tanh"}


def test_position_embedding_tables_stay_f32() -> None:
    """Hugging Face SigLIP's position embedding is an embedding table (``position_embedding.weight``), added to
    the patches like timm's ``pos_embed`` parameter: never quantized, whatever the outtype."""
    from omnimodel.plan.types import tensor_type

    for outtype in ("q8_0", "f16", "bf16"):
        assert tensor_type("siglip.embeddings.position_embedding.weight", (256, 1152), outtype) == GGMLType.F32
        assert tensor_type("vision_backbone.featurizer.pos_embed", (1, 257, 1024), outtype) == GGMLType.F32
    assert tensor_type("siglip.embeddings.patch_embedding.weight", (1152, 3, 14, 14), "f16") == GGMLType.F16
    assert tensor_type("language_model.embed_tokens.weight", (1024, 64), "q8_0") == GGMLType.Q8_0
