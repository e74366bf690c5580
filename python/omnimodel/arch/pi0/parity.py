"""What the parity check and the benchmark need from the pi0 / pi0.5 reference (``validate.reference``
runs it). Every runtime intermediate is a module's (or a ``Probe``'s) output under its GGUF name, so
no extra hooks are needed: modules that run once per denoising step fire once per step and the
validator stacks the runtime's ``X@<step>`` the same way.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .policy import Pi0Policy, PolicyInputs


def parity_observation(policy: Pi0Policy, seed: int) -> tuple[list[np.ndarray], np.ndarray]:
    """Deterministic uint8 frames at the model's input size (every camera present) and a raw state near
    the statistics' centre. Parity is about numerics: random content is as good as a camera frame."""
    cfg = policy.config
    rng = np.random.default_rng(seed)
    s = cfg.image_size
    images = [rng.integers(0, 256, size=(s, s, 3), dtype=np.uint8) for _ in cfg.camera_keys]
    state = policy.norm_stats.state.unnormalize(
        torch.from_numpy(rng.uniform(-0.5, 0.5, size=cfg.state_dim).astype(np.float32))).numpy()
    return images, state


def model_args(model: nn.Module, x: PolicyInputs, dtype: torch.dtype) -> tuple:
    """``model(...)``'s arguments in ``dtype``. The model is cast to ``dtype`` too: its forward casts
    activations to its modules' stored dtypes (upstream's mixed-precision casts), which must be the dtype
    the validator's just-in-time weights take (float32 <-> float64 is exact for a float32 policy). bfloat16
    is LeRobot's mixed precision (``Pi0Model.apply_precision``: SigLIP, projector and norms stay float32),
    what bench compares against as PyTorch bf16."""
    if dtype == torch.bfloat16:
        model.apply_precision("bfloat16")
    else:
        model.to(dtype)
    state = x.state.to(dtype) if x.state is not None else None
    return x.images.to(dtype), x.image_mask, x.tokens, x.token_mask, state, x.noise.to(dtype)


def action_span(policy: Pi0Policy) -> np.ndarray:
    """The runtime's output is normalised (un-normalising is predict_action's): the normalised range 2."""
    return np.full(policy.config.action_dim, 2.0)


__all__ = ["action_span", "model_args", "parity_observation"]
