"""The pi0 / pi0.5 analyzer: checkpoint directory -> ModelDescription, without loading the weights.

It reads what ``arch.pi0.checkpoint.read_checkpoint_header`` reads (config.json, the safetensors headers,
the normalisation statistics); the numerical variants come from the published implementation where the
checkpoint states nothing (each variant's source is recorded). Module and tensor names are the GGUF's
(``arch.pi0.names``: the PyTorch paths with their wrapper prefixes abbreviated).
"""

from __future__ import annotations

from pathlib import Path

from omnimodel.arch.pi0.checkpoint import read_checkpoint_header
from omnimodel.arch.pi0.config import GemmaConfig, Pi0Config
from omnimodel.arch.pi0.modeling import unused_parameter_prefixes
from omnimodel.arch.pi0.names import EXPERT, GEMMA, PROJECTOR, SIGLIP, gguf_name

from .description import ModelDescription, ModuleDesc, TensorDesc

_GEMMA_SOURCES = {
    "norm_eps": "openpi gemma.RMSNorm / LeRobot PiGemmaRMSNorm eps 1e-6",
    "norm_weight": "Gemma RMSNorm scales by (1 + weight)",
    "gelu": "Gemma hidden_activation gelu_pytorch_tanh",
    "rope": "transformers Gemma rotate_half",
    "rope_theta": "Gemma rope_theta 10000",
}


def _gemma(name: str, kind: str, g: GemmaConfig, variant: str, **extra) -> ModuleDesc:
    variants = {"norm_eps": g.rms_norm_eps, "norm_weight": "one_plus", "gelu": "tanh", "rope": "neox",
                "rope_theta": g.rope_theta, **extra}
    sources = {**_GEMMA_SOURCES, **{k: "openpi pi0.5 adaRMS (LeRobot PI05: use_adarms on the expert)"
                                    for k in extra}}
    return ModuleDesc(
        name=name,
        kind=kind,
        hparams={"variant": variant, "width": g.width, "depth": g.depth, "mlp_dim": g.mlp_dim,
                 "num_heads": g.num_heads, "num_kv_heads": g.num_kv_heads, "head_dim": g.head_dim},
        variants=variants,
        sources=sources,
    )


def modules(cfg: Pi0Config) -> tuple[ModuleDesc, ...]:
    v = cfg.vision
    siglip = ModuleDesc(
        name=SIGLIP,
        kind="siglip_tower",
        hparams={"hidden_size": v.hidden_size, "depth": v.num_hidden_layers, "num_heads": v.num_attention_heads,
                 "intermediate_size": v.intermediate_size, "patch_size": v.patch_size, "image_size": v.image_size},
        variants={"gelu": "tanh" if v.activation == "gelu_tanh" else "erf", "norm_eps": v.layer_norm_eps,
                  "attn_mask": "bidirectional"},
        sources={"gelu": "SiglipVisionConfig hidden_act gelu_pytorch_tanh", "norm_eps": "SiglipVisionConfig layer_norm_eps",
                 "attn_mask": "SigLIP attention (no mask)"},
    )
    projector = ModuleDesc(name=PROJECTOR, kind="projector", hparams={"layers": ["linear"]},
                           variants={"gelu": "none"}, sources={"gelu": "PaliGemma projector: one Linear"})
    gemma = _gemma(GEMMA, "gemma_prefix", cfg.paligemma, cfg.paligemma_variant, embed_scale="sqrt_width")
    gemma.sources["embed_scale"] = "Gemma scales the token embedding by sqrt(width)"
    expert = _gemma(EXPERT, "gemma_expert", cfg.action_expert, cfg.action_expert_variant, adarms=cfg.is_pi05,
                    adarms_chunks="scale_shift_gate", suffix_mask="blockwise")
    expert.sources["suffix_mask"] = "big_vision make_attn_mask over the suffix's ar flags (openpi embed_suffix)"
    return siglip, projector, gemma, expert


def analyze_pi0(checkpoint_dir: str | Path, *, unnorm_key: str | None = None) -> ModelDescription:
    """``unnorm_key``: an openpi checkpoint's asset id (its ``assets/<id>/norm_stats.json``)."""
    header = read_checkpoint_header(checkpoint_dir, asset_id=unnorm_key)
    cfg = header.config
    skip = tuple(unused_parameter_prefixes(cfg))
    tensors = tuple(TensorDesc(gguf_name(k), tuple(r.shape)) for k, r in sorted(header.refs.items())
                    if not k.startswith(skip))
    return ModelDescription(
        architecture=cfg.kind,
        checkpoint=str(checkpoint_dir),
        modules=modules(cfg),
        tensors=tensors,
        globals={
            "num_cameras": len(cfg.camera_keys),
            "image_size": cfg.image_size,
            "chunk_size": cfg.chunk_size,
            "max_state_dim": cfg.max_state_dim,
            "max_action_dim": cfg.max_action_dim,
            "action_dim": cfg.action_dim,
            "num_inference_steps": cfg.num_inference_steps,
            "layout": cfg.layout.value,
        },
    )
