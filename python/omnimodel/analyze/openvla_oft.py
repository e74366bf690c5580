"""The OpenVLA-OFT analyzer: checkpoint directory -> ModelDescription, without loading the weights.

It reads what ``arch.openvla_oft.checkpoint.load_checkpoint`` reads before it instantiates the model
(config.json, preprocessor_config.json, dataset statistics, the small head / proprio ``.pt`` files)
and only the safetensors *headers* (names and shapes), so it is cheap on a 7B checkpoint. Variants
come from the parsed config where the checkpoint states them, and from the reference's documented
upstream behaviour where nothing is stored (the source of each is recorded).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omnimodel.arch.openvla_oft.checkpoint import CheckpointError, read_checkpoint_header, scan_vla_tensors
from omnimodel.arch.openvla_oft.config import OpenVLAOFTConfig, ViTConfig
from omnimodel.arch.openvla_oft.export import ARCH
from omnimodel.arch.openvla_oft.modeling import unused_parameter_prefixes

from .description import ModelDescription, ModuleDesc, TensorDesc

# timm ViT's act_layer default is nn.GELU (exact erf); config.py names it "gelu_erf".
_GELU_FLAVOUR = {"gelu_erf": "erf", "gelu": "erf", "gelu_tanh": "tanh"}


def _config_and_tensors(
    checkpoint_dir: Path, platform: str | None, unnorm_key: str | None
) -> tuple[OpenVLAOFTConfig, dict[str, tuple[int, ...]], dict[str, Any]]:
    h = read_checkpoint_header(checkpoint_dir, unnorm_key=unnorm_key, platform=platform)
    shapes = {k: r.shape for k, r in scan_vla_tensors(h.files).items()}
    shapes.update({"action_head." + k: tuple(v.shape) for k, v in h.head_state.items()})
    shapes.update({"proprio_projector." + k: tuple(v.shape) for k, v in h.proprio_state.items()})
    return h.config, shapes, h.hf_config


def _tower(name: str, vit: ViTConfig, norm, shapes: dict[str, tuple[int, ...]]) -> ModuleDesc:
    path = f"vision_backbone.{name}"
    # LayerScale is decided by the tensors present, not by the timm id table: a checkpoint is the truth.
    has_ls = any(k.startswith(f"{path}.blocks.") and ".ls1." in k for k in shapes)
    if has_ls != vit.layer_scale:
        raise CheckpointError(f"{path}: timm id {vit.timm_model_id} says layer_scale={vit.layer_scale} "
                              f"but the checkpoint {'has' if has_ls else 'lacks'} ls1/ls2 tensors")
    return ModuleDesc(
        name=path,
        kind="vit_tower",
        hparams={
            "timm_model_id": vit.timm_model_id,
            "image_size": vit.image_size,
            "patch_size": vit.patch_size,
            "embed_dim": vit.embed_dim,
            "depth": vit.depth,
            "num_heads": vit.num_heads,
            "mlp_hidden_dim": vit.mlp_hidden_dim,
        },
        variants={
            "gelu": _GELU_FLAVOUR[vit.activation],
            "norm": "layer",
            "norm_eps": vit.layer_norm_eps,
            "attn_mask": "bidirectional",
            "layer_scale": has_ls,
            "class_token": vit.class_token,
            "reg_tokens": vit.reg_tokens,
            "pos_embed": "patches_only" if vit.no_embed_class else "all_tokens",
            "feature_block_index": vit.feature_block_index,
            "image_mean": list(norm.mean),
            "image_std": list(norm.std),
        },
        sources={
            "gelu": "timm default act_layer (config.json timm_override_act_layers is null)",
            "norm_eps": "timm ViT LayerNorm default",
            "attn_mask": "timm ViT attention (no mask)",
            "layer_scale": "checkpoint tensors ls1/ls2.scale_factor",
            "class_token": f"timm model definition {vit.timm_model_id}",
            "reg_tokens": f"timm model definition {vit.timm_model_id}",
            "pos_embed": f"timm no_embed_class of {vit.timm_model_id}",
            "feature_block_index": "Prismatic get_intermediate_layers(n={depth - 2})",
            "image_mean": "preprocessor_config.json",
            "image_std": "preprocessor_config.json",
        },
    )


def analyze_openvla_oft(
    checkpoint_dir: str | Path, *, platform: str | None = None, unnorm_key: str | None = None
) -> ModelDescription:
    cfg, shapes, hf_config = _config_and_tensors(Path(checkpoint_dir), platform, unnorm_key)
    vis = cfg.vision
    modules = [
        _tower("featurizer", vis.featurizer, vis.normalization[0], shapes),
        _tower("fused_featurizer", vis.fused_featurizer, vis.normalization[1], shapes),
        ModuleDesc(
            name="projector",
            kind="projector",
            hparams={"layers": ["fc1", "fc2", "fc3"], "vision_dim": cfg.projector.vision_dim,
                     "hidden_dim": cfg.projector.hidden_dim, "llm_dim": cfg.projector.llm_dim},
            variants={"gelu": "erf"},
            sources={"gelu": f"arch_specifier {hf_config.get('arch_specifier', 'no-align+fused-gelu-mlp')}: nn.GELU()"},
        ),
    ]
    if cfg.proprio_projector is not None:
        modules.append(
            ModuleDesc(
                name="proprio_projector",
                kind="proprio_projector",
                hparams={"layers": ["fc1", "fc2"], "proprio_dim": cfg.proprio_projector.proprio_dim,
                         "llm_dim": cfg.proprio_projector.llm_dim},
                variants={"gelu": "erf"},
                sources={"gelu": "OFT ProprioProjector: nn.GELU()"},
            )
        )
    llm = cfg.llm
    modules.append(
        ModuleDesc(
            name="language_model.model",
            kind="llama",
            hparams={"num_hidden_layers": llm.num_hidden_layers, "hidden_size": llm.hidden_size,
                     "intermediate_size": llm.intermediate_size, "num_attention_heads": llm.num_attention_heads,
                     "num_key_value_heads": llm.num_key_value_heads, "vocab_size": llm.vocab_size},
            variants={"norm": "rms", "norm_eps": llm.rms_norm_eps, "rope": "neox", "rope_theta": llm.rope_theta,
                      "attn_mask": "bidirectional", "act": "silu", "kv_heads": "grouped"},
            sources={"norm_eps": "config.json text_config (LlamaConfig default when absent)",
                     "kv_heads": "HF Llama repeat_kv (repeat_interleave over the kv heads)",
                     "rope": "HF Llama rotate_half (half split)",
                     "rope_theta": "config.json text_config (LlamaConfig default when absent)",
                     "attn_mask": "OFT fork: no mask, is_causal=False",
                     "act": "config.json text_config hidden_act"},
        )
    )
    head = cfg.action_head
    modules.append(
        ModuleDesc(
            name="action_head",
            kind="l1_head",
            hparams={"num_blocks": head.num_blocks, "input_dim": head.input_dim, "hidden_dim": head.hidden_dim,
                     "action_dim": head.action_dim},
            variants={"norm": "layer", "norm_eps": head.layer_norm_eps, "act": "relu"},
            sources={"norm_eps": "torch nn.LayerNorm default (upstream sets none)", "act": "MLPResNet nn.ReLU"},
        )
    )
    skip = tuple(unused_parameter_prefixes(cfg))
    tensors = tuple(TensorDesc(k, tuple(s)) for k, s in sorted(shapes.items()) if not k.startswith(skip))
    return ModelDescription(
        architecture=ARCH,
        checkpoint=str(checkpoint_dir),
        modules=tuple(modules),
        tensors=tensors,
        globals={
            "num_images": cfg.num_images,
            "image_size": vis.image_size,
            "num_actions_chunk": cfg.num_actions_chunk,
            "action_dim": cfg.action_dim,
            "proprio_dim": cfg.proprio_projector.proprio_dim if cfg.proprio_projector else 0,
            "platform": cfg.platform.name,
        },
    )
