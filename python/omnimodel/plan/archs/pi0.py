"""pi0 / pi0.5's arch spec: module kinds -> skills, description variants -> knobs.

What is not a reusable block -- the prefix assembly, the prefix-LM mask and positions from the camera
mask, the suffix (pi0's state token and action-time MLP, pi0.5's time MLP condition), the unrolled
flow-matching loop -- lives in the glue template ``templates/archs/pi0.cpp.j2`` (one for both kinds).
"""

from __future__ import annotations

from omnimodel.analyze.description import ModelDescription, ModuleDesc

from ..plan import OWNS, ModulePlan
from ..skills import SKILLS

ARCH_TEMPLATE = "archs/pi0.cpp.j2"


def _speed(skill: str, *knobs: str) -> dict:
    return {k: SKILLS[skill].knob(k).default for k in knobs}


def _gemma_knobs(v: dict) -> dict:
    return {"norm_eps": float(v["norm_eps"]), "norm_weight": v["norm_weight"], "gelu": v["gelu"], "rope": v["rope"],
            "rope_theta": float(v["rope_theta"])}


def _module_plan(m: ModuleDesc, meta: str) -> ModulePlan:
    v = m.variants
    if m.kind == "siglip_tower":
        return ModulePlan(m.name, "siglip_tower",
                          {"gelu": v["gelu"], "norm_eps": float(v["norm_eps"]), "attn_mask": v["attn_mask"],
                           **_speed("siglip_tower", "attn", "gelu_impl", "gemm")},
                          {"meta": f"{meta}vision."})
    if m.kind == "projector":
        return ModulePlan(m.name, "mlp_chain", {"act": "gelu_tanh", **_speed("mlp_chain", "gelu_impl", "gemm")},
                          {"layers": list(m.hparams["layers"])})
    if m.kind == "gemma_prefix":
        return ModulePlan(m.name, "gemma_stack",
                          {**_gemma_knobs(v), "embed_scale": v["embed_scale"], **_speed("gemma_stack", "gemm")},
                          {"meta": f"{meta}paligemma."})
    if m.kind == "gemma_expert":
        return ModulePlan(m.name, "gemma_expert",
                          {**_gemma_knobs(v), "adarms": bool(v["adarms"]), "adarms_chunks": v["adarms_chunks"],
                           "suffix_mask": v["suffix_mask"], **_speed("gemma_expert", "gemm")},
                          {"meta": f"{meta}expert."})
    raise ValueError(f"pi0: no skill for module '{m.name}' of kind '{m.kind}'")


def glue_tensors(kind: str, steps: int) -> list[str]:
    """The runtime intermediates the glue computes itself (``<module>@<step>`` for one step's call)."""
    # (time_embedding is a constant the glue computes on the host in float64: a graph input, not captured)
    per_step = ["action_in_proj", "action_out_proj"]
    per_step += ["time_mlp_in", "time_mlp_out", "adarms_cond"] if kind == "pi05" else \
        ["state_proj", "action_time_mlp_in", "action_time_mlp_out", "suffix_embeds"]
    calls = [f"{p}@{i}" for p in per_step for i in range(steps)]
    probes = [f"{p}.{i}" for p in ("noisy_actions", "velocity") for i in range(steps)]
    return ["prefix_embeds", *calls, *probes, "denoised_actions"]


def module_plans(desc: ModelDescription) -> tuple[ModulePlan, ...]:
    kind = desc.architecture
    meta = f"{kind}."
    by_kind = {m.kind: m.name for m in desc.modules}
    glue = ModulePlan(kind, "pi0_glue", {},
                      {"kind": kind, "gemma": by_kind["gemma_prefix"], "expert": by_kind["gemma_expert"],
                       OWNS: glue_tensors(kind, int(desc.globals["num_inference_steps"]))})
    return tuple(_module_plan(m, meta) for m in desc.modules) + (glue,)
