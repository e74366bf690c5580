"""Run the PyTorch reference on the runtime's exact inputs and collect its intermediates by name.

The runtime names each intermediate after the PyTorch module that computes it (``projector``,
``language_model.model.layers.0``, ...), so most references are plain forward-hook outputs. A few runtime
names have no module of their own; they are rebuilt from hooks here (``DERIVED``) so that every tensor
the runtime exposes can be checked, not only the convenient ones:

    <tower>.embed                     input of the tower's block 0 (patch + position embedding + prefix)
    <tower>.blocks.{i}.attn_residual  block input + ls1 output (the residual after attention)
    inputs_embeds                     input of language_model.model (assembled sequence)
    action_hidden_states / normalized_actions / actions   what run_policy returned

Layout: a module called several times in one forward pass (each ViT tower runs once per camera image)
has its outputs concatenated on dim 0, which is how the runtime batches images. Leading size-1 batch
dimensions are left in; ``compare`` drops them on both sides before checking shapes.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from omnimodel.arch.openvla_oft import OpenVLAOFTPolicy, PolicyOutput, run_policy
from omnimodel.arch.openvla_oft.policy import swapped_weights
from omnimodel.arch.openvla_oft.export import runtime_inputs

DEFAULT_INSTRUCTION = "put the black bowl on the plate"
DEFAULT_SEED = 3

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


@dataclass
class ReferenceRun:
    """The reference's result for one observation."""

    inputs: dict[str, np.ndarray]  # what the runtime must be fed (pixel values, token ids, proprio)
    tensors: dict[str, np.ndarray]  # name -> intermediate, in PyTorch execution order (first call)
    output: PolicyOutput
    dtype: str
    action_span: np.ndarray | None = None  # per action dim: the range errors of ``actions`` are relative to
    notes: list[str] = field(default_factory=list)


def parity_observation(policy: OpenVLAOFTPolicy, seed: int = DEFAULT_SEED) -> tuple[list[np.ndarray], np.ndarray | None]:
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


def _collect(policy: OpenVLAOFTPolicy) -> tuple[dict[str, list[torch.Tensor]], list]:
    seen: dict[str, list[torch.Tensor]] = {}
    block_inputs: dict[str, list[torch.Tensor]] = {}
    handles = []

    def keep(name: str, value: torch.Tensor) -> None:
        seen.setdefault(name, []).append(value.detach().to(torch.float64).cpu().clone())

    model = policy.model
    for name, module in model.named_modules():
        if not name:
            continue
        handles.append(module.register_forward_hook(lambda _m, _i, out, name=name: keep(name, out)))

    for tower in ("featurizer", "fused_featurizer"):
        prefix = f"vision_backbone.{tower}"
        vit = getattr(model.vision_backbone, tower)
        for i, block in enumerate(vit.blocks):
            bname = f"{prefix}.blocks.{i}"

            def pre(_m, args, bname=bname, first=(i == 0), prefix=prefix):
                block_inputs.setdefault(bname, []).append(args[0].detach())
                if first:
                    keep(f"{prefix}.embed", args[0])

            def after_ls1(_m, _i, out, bname=bname):
                keep(f"{bname}.attn_residual", block_inputs[bname][-1] + out)

            handles.append(block.register_forward_pre_hook(pre))
            handles.append(block.ls1.register_forward_hook(after_ls1))

    handles.append(
        model.language_model.model.register_forward_pre_hook(lambda _m, args: keep("inputs_embeds", args[0]))
    )
    return seen, handles


@torch.no_grad()
def run_reference(
    policy: OpenVLAOFTPolicy,
    images: Sequence[np.ndarray],
    instruction: str,
    proprio: np.ndarray | None,
    *,
    dtype: str = "float32",
) -> ReferenceRun:
    """``run_policy`` with every intermediate recorded (as float64 arrays).

    ``dtype="float64"`` runs a float64 copy of the model: a tighter truth for small models, at twice
    the memory; the policy passed in is left in its own dtype.
    """
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
    model_dtype = next(policy.model.parameters()).dtype
    run_on = policy
    if _DTYPES[dtype] != model_dtype:
        import copy

        run_on = copy.copy(policy)
        run_on.model = copy.deepcopy(policy.model).to(_DTYPES[dtype])
    seen, handles = _collect(run_on)
    try:
        out = run_policy(run_on, images, instruction, proprio)
    finally:
        for h in handles:
            h.remove()
    tensors = {k: torch.cat(v, 0).numpy() for k, v in seen.items()}
    tensors["action_hidden_states"] = out.action_hidden_states.to(torch.float64).numpy()
    tensors["normalized_actions"] = np.asarray(out.normalized_actions, np.float64)
    tensors["actions"] = np.asarray(out.actions, np.float64)
    return ReferenceRun(
        inputs=runtime_inputs(out), tensors=tensors, output=out, dtype=dtype, action_span=action_span(policy)
    )


__all__ = ["ReferenceRun", "run_reference", "gguf_weights", "parity_observation", "action_span", "DEFAULT_INSTRUCTION", "DEFAULT_SEED"]


def gguf_weights(policy: OpenVLAOFTPolicy, gguf_path: str | os.PathLike[str]) -> contextlib.AbstractContextManager[None]:
    """Within the block the policy holds the weights decoded from ``gguf_path`` (every tensor the GGUF
    stores under a state_dict name, padding dropped); its own weights are restored afterwards.

    This is the reference for a quantized conversion: PyTorch then runs exactly the values the runtime
    multiplies with, so parity isolates the runtime's arithmetic from the quantizer's choices."""
    from omnimodel.gguf.reader import load_tensor, read_gguf

    gf = read_gguf(gguf_path)
    names = set(dict(policy.model.named_parameters())) | set(dict(policy.model.named_buffers()))
    values = {t.name: torch.from_numpy(load_tensor(gf, t.name)) for t in gf.tensors if t.name in names}
    return swapped_weights(policy.model, values)
