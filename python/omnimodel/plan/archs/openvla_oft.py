"""OpenVLA-OFT's arch spec: module kinds -> skills, description variants -> knobs.

Everything OFT-specific that is not a reusable block (the two-tower image split, the sequence
[BOS][patches][proprio][prompt][slots][EOS], the action-slot read and the un-normalisation) lives in
its glue template ``templates/archs/openvla_oft.cpp.j2``.
"""

from __future__ import annotations

from omnimodel.analyze.description import ModelDescription, ModuleDesc

from ..plan import OWNS, ModulePlan
from ..skills import SKILLS

ARCH_TEMPLATE = "archs/openvla_oft.cpp.j2"
META = "openvla-oft."


def _speed(skill: str, *knobs: str) -> dict:
    """The skill's defaults for knobs that choose kernels rather than semantics (attn, gelu_impl, gemm)."""
    return {k: SKILLS[skill].knob(k).default for k in knobs}


def _module_plan(m: ModuleDesc) -> ModulePlan:
    v = m.variants
    if m.kind == "vit_tower":
        tower = m.name.rsplit(".", 1)[-1]
        return ModulePlan(
            m.name,
            "vit_tower",
            {
                "gelu": v["gelu"],
                "norm_eps": float(v["norm_eps"]),
                "attn_mask": v["attn_mask"],
                "layer_scale": bool(v["layer_scale"]),
                "class_token": bool(v["class_token"]),
                "reg_tokens": int(v["reg_tokens"]),
                "pos_embed": v["pos_embed"],
                **_speed("vit_tower", "attn", "gelu_impl", "gemm"),
            },
            {"meta": f"{META}vision.{tower}."},
        )
    if m.kind in ("projector", "proprio_projector"):
        return ModulePlan(m.name, "mlp_chain", {"act": "gelu_" + v["gelu"], **_speed("mlp_chain", "gelu_impl", "gemm")},
                          {"layers": list(m.hparams["layers"])})
    if m.kind == "llama":
        return ModulePlan(
            m.name,
            "llama_stack",
            {"norm_eps": float(v["norm_eps"]), "rope": v["rope"], "rope_theta": float(v["rope_theta"]),
             "attn_mask": v["attn_mask"], "kv_heads": v["kv_heads"], **_speed("llama_stack", "attn", "gemm")},
            {"meta": f"{META}llm."},
        )
    if m.kind == "l1_head":
        return ModulePlan(m.name, "mlp_resnet_head", {"norm_eps": float(v["norm_eps"]), **_speed("mlp_resnet_head", "gemm")},
                          {"meta": f"{META}action_head.", "model": "model"})
    raise ValueError(f"openvla-oft: no skill for module '{m.name}' of kind '{m.kind}'")


# The runtime intermediates the glue template computes itself (not inside a module's block).
GLUE_TENSORS = ("vision_backbone", "inputs_embeds", "action_hidden_states", "actions")


def _glue(desc: ModelDescription) -> ModulePlan:
    # upstream predict_action reads hidden[NUM_PATCHES + NUM_PROMPT_TOKENS ...], one row before each slot
    return ModulePlan(desc.architecture, "openvla_oft_glue", {"action_rows": "before_slot"},
                      {OWNS: list(GLUE_TENSORS)})


def module_plans(desc: ModelDescription) -> tuple[ModulePlan, ...]:
    return tuple(_module_plan(m) for m in desc.modules) + (_glue(desc),)
