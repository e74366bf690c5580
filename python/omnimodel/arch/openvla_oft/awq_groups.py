"""Where AWQ's 1/s folds in OpenVLA-OFT (``quant.awq``; ``Architecture.awq_scale_groups``):

    Llama   q,k,v <- input_layernorm.weight      gate,up <- post_attention_layernorm.weight
            down  <- up_proj rows                 o_proj  <- v_proj rows (when kv heads == heads)
    ViT     qkv   <- norm1 (weight, bias)         fc1     <- norm2 (weight, bias)
            proj  <- the v rows of qkv (weight, bias)
    fc2 reads GELU(fc1 x), which does not commute with scaling: it is left unscaled.
"""

from __future__ import annotations

from omnimodel.quant.awq import ScaleGroup, fold_norm, fold_rows

from .modeling import OpenVLAOFT


def scale_groups(model: OpenVLAOFT) -> list[ScaleGroup]:
    groups: list[ScaleGroup] = []
    for tower in ("featurizer", "fused_featurizer"):
        vit = getattr(model.vision_backbone, tower)
        for i in range(vit.cfg.feature_block_index + 1):  # the blocks OFT runs
            b = vit.blocks[i]
            p = f"vision_backbone.{tower}.blocks.{i}"
            d = vit.cfg.embed_dim
            groups += [
                ScaleGroup(f"{p}.norm1", (f"{p}.attn.qkv.weight",), fold_norm(b.norm1)),
                ScaleGroup(f"{p}.norm2", (f"{p}.mlp.fc1.weight",), fold_norm(b.norm2)),
                ScaleGroup(
                    f"{p}.attn.v", (f"{p}.attn.proj.weight",), fold_rows(b.attn.qkv, 2 * d), f"{p}.attn.qkv.weight"
                ),
            ]
    for i, layer in enumerate(model.language_model.model.layers):
        p = f"language_model.model.layers.{i}"
        a = f"{p}.self_attn"
        groups += [
            ScaleGroup(
                f"{p}.input_layernorm", tuple(f"{a}.{x}_proj.weight" for x in "qkv"), fold_norm(layer.input_layernorm)
            ),
            ScaleGroup(
                f"{p}.post_attention_layernorm",
                (f"{p}.mlp.gate_proj.weight", f"{p}.mlp.up_proj.weight"),
                fold_norm(layer.post_attention_layernorm),
            ),
            ScaleGroup(
                f"{p}.mlp.up_proj",
                (f"{p}.mlp.down_proj.weight",),
                fold_rows(layer.mlp.up_proj),
                f"{p}.mlp.up_proj.weight",
            ),
        ]
        if layer.self_attn.num_kv_heads == layer.self_attn.num_heads:
            groups.append(
                ScaleGroup(
                    f"{a}.v_proj", (f"{a}.o_proj.weight",), fold_rows(layer.self_attn.v_proj), f"{a}.v_proj.weight"
                )
            )
    return groups


__all__ = ["scale_groups"]
