"""What the parity check and the benchmark need from OpenVLA-OFT's reference (``validate.reference``
runs it; this module knows the network's layout).

    parity_observation(policy, seed)   deterministic images + raw proprio inside the statistics' range
    action_span(policy)                per action dim, the range errors of ``actions`` are relative to
    reference_hooks(model, put, keep)  the runtime-named intermediates that are no module's output:
        <tower>.embed                     input of the tower's block 0 (patch + position embedding + prefix)
        <tower>.blocks.{i}.attn_residual  block input + ls1 output (the residual after attention)
        inputs_embeds                     input of language_model.model (assembled sequence)
    reference_outputs(policy, x, out)  action_hidden_states / normalized_actions / actions
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from .normalization import unnormalize_actions
from .policy import OpenVLAOFTPolicy, PolicyInputs

Put = Callable[[str, torch.Tensor], None]


def parity_observation(policy: OpenVLAOFTPolicy, seed: int) -> tuple[list[np.ndarray], np.ndarray | None]:
    """Deterministic uint8 images at the model's input size and a raw proprio vector inside the
    dataset statistics' range. Parity is about numerics, so random content is as good as a camera frame."""
    cfg = policy.config
    rng = np.random.default_rng(seed)
    s = cfg.vision.image_size
    images = [rng.integers(0, 256, size=(s, s, 3), dtype=np.uint8) for _ in range(cfg.num_images)]
    proprio = None
    if cfg.use_proprio:
        b = policy.norm_stats.proprio
        lo, hi = np.asarray(b.low, np.float64), np.asarray(b.high, np.float64)
        proprio = lo + (hi - lo) * rng.uniform(0.05, 0.95, size=lo.shape)
    return images, proprio


def action_span(policy: OpenVLAOFTPolicy) -> np.ndarray:
    """Range of each un-normalised action dimension: high - low where normalised, else the
    normalised range 2 (those dimensions pass through unchanged)."""
    b = policy.norm_stats.action
    span = np.where(np.asarray(b.mask, bool), np.asarray(b.high, np.float64) - np.asarray(b.low, np.float64), 2.0)
    return np.where(span > 0, span, 2.0)


def reference_hooks(model: nn.Module, put: Put, keep: Callable[[str], bool]) -> list:
    block_inputs: dict[str, torch.Tensor] = {}
    handles = []
    for tower in ("featurizer", "fused_featurizer"):
        prefix = f"vision_backbone.{tower}"
        vit = getattr(model.vision_backbone, tower)
        for i, block in enumerate(vit.blocks):
            bname = f"{prefix}.blocks.{i}"

            def pre(_m, args, bname=bname, first=(i == 0), prefix=prefix):
                block_inputs[bname] = args[0].detach()
                if first:
                    put(f"{prefix}.embed", args[0])

            def after_ls1(_m, _i, out, bname=bname):
                if keep(f"{bname}.attn_residual"):
                    put(f"{bname}.attn_residual", block_inputs[bname] + out)

            handles.append(block.register_forward_pre_hook(pre))
            handles.append(block.ls1.register_forward_hook(after_ls1))

    handles.append(model.language_model.model.register_forward_pre_hook(lambda _m, args: put("inputs_embeds", args[0])))
    return handles


def model_args(model: nn.Module, x: PolicyInputs, dtype: torch.dtype) -> tuple:
    """``model(...)``'s arguments for prepared inputs: pixels and proprio in ``dtype``, ids on the model's device."""
    device = model.language_model.model.embed_tokens.weight.device
    proprio = x.proprio.to(dtype) if x.proprio is not None else None
    return x.pixel_values.to(dtype), x.prompt_ids.to(device), proprio


def reference_outputs(policy: OpenVLAOFTPolicy, out) -> dict[str, torch.Tensor]:
    normalized = out.normalized_actions[0].to(torch.float64)
    return {
        "action_hidden_states": out.action_hidden_states,
        "normalized_actions": normalized,
        "actions": torch.from_numpy(unnormalize_actions(normalized.cpu().numpy(), policy.norm_stats.action)),
    }


__all__ = ["action_span", "model_args", "parity_observation", "reference_hooks", "reference_outputs"]
