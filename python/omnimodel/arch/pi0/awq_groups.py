"""Where AWQ's 1/s folds in pi0 / pi0.5 (``quant.awq``; ``Architecture.awq_scale_groups``):

    SigLIP   q,k,v   <- layer_norm1 (weight, bias)      fc1 <- layer_norm2 (weight, bias)
             out_proj <- v_proj rows (weight, bias)
    Gemma    q,k,v   <- input_layernorm                 gate,up <- post_attention_layernorm
             down    <- up_proj rows (GeGLU: gelu(gate x) * (up x) is linear in up's rows)

Gemma's RMSNorm multiplies by (1 + w), so dividing its output by s sets w' = (1 + w) / s - 1. pi0.5's
expert norms are adaptive: normed * (1 + scale) + shift with (scale, shift, gate) = dense(cond); dividing
the output by s divides the scale rows of ``dense`` by s with bias' = (1 + bias) / s - 1, and the shift
rows (weight and bias) by s. o_proj reads the attention output, a mix over heads of v; with MQA (one K/V
head for eight query heads) no per-channel fold into v reaches it, so it is left unscaled, as are fc2
(after GELU) and weights not quantized (the prefix's last-layer queries, whose output nothing reads).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from omnimodel.quant.awq import ScaleGroup, fold_norm, fold_rows
from omnimodel.quant.targets import quantized_linears

from .modeling import GemmaRMSNorm, Pi0Model


def fold_gemma_norm(norm: GemmaRMSNorm) -> Callable[[torch.Tensor], None]:
    """Divide a Gemma RMSNorm's output by s, fixed (1 + w) or adaptive (its ``dense`` modulation)."""
    if not norm.adaptive:
        def fold(s: torch.Tensor) -> None:
            w = norm.weight
            w.copy_((1.0 + w) / s.to(w.dtype) - 1.0)

        return fold

    def fold_adaptive(s: torch.Tensor) -> None:
        d = s.shape[0]
        weight, bias = norm.dense.weight, norm.dense.bias
        st = s.to(weight.dtype)
        weight[:d].div_(st[:, None])
        weight[d:2 * d].div_(st[:, None])
        if bias is not None:
            bias[:d].copy_((1.0 + bias[:d]) / st - 1.0)
            bias[d:2 * d].div_(st)

    return fold_adaptive


def scale_groups(model: Pi0Model) -> list[ScaleGroup]:
    quantized = set(quantized_linears(model))
    groups: list[ScaleGroup] = []

    def add(key: str, members: list[str], fold: Callable[[torch.Tensor], None], folds_into: str | None = None) -> None:
        kept = tuple(m for m in members if m in quantized)
        if kept and (folds_into is None or folds_into in quantized):
            groups.append(ScaleGroup(key, kept, fold, folds_into))

    pg = model.paligemma_with_expert
    vision = pg.paligemma.model.vision_tower.vision_model.encoder
    vp = "paligemma_with_expert.paligemma.model.vision_tower.vision_model.encoder.layers"
    for i, layer in enumerate(vision.layers):
        p, a = f"{vp}.{i}", f"{vp}.{i}.self_attn"
        add(f"{p}.layer_norm1", [f"{a}.{x}_proj.weight" for x in "qkv"], fold_norm(layer.layer_norm1))
        add(f"{p}.layer_norm2", [f"{p}.mlp.fc1.weight"], fold_norm(layer.layer_norm2))
        add(f"{a}.v_proj", [f"{a}.out_proj.weight"], fold_rows(layer.self_attn.v_proj), f"{a}.v_proj.weight")

    prefix, expert = pg.stacks
    stacks = (("paligemma_with_expert.paligemma.model.language_model.layers", prefix),
              ("paligemma_with_expert.gemma_expert.model.layers", expert))
    for root, stack in stacks:
        for i, layer in enumerate(stack.layers):
            p, a, m = f"{root}.{i}", f"{root}.{i}.self_attn", f"{root}.{i}.mlp"
            add(f"{p}.input_layernorm", [f"{a}.{x}_proj.weight" for x in "qkv"], fold_gemma_norm(layer.input_layernorm))
            add(f"{p}.post_attention_layernorm", [f"{m}.gate_proj.weight", f"{m}.up_proj.weight"],
                fold_gemma_norm(layer.post_attention_layernorm))
            add(f"{m}.up_proj", [f"{m}.down_proj.weight"], fold_rows(layer.mlp.up_proj), f"{m}.up_proj.weight")
            if layer.self_attn.num_kv_heads == layer.self_attn.num_heads:
                add(f"{a}.v_proj", [f"{a}.o_proj.weight"], fold_rows(layer.self_attn.v_proj), f"{a}.v_proj.weight")
    return groups


__all__ = ["fold_gemma_norm", "scale_groups"]
