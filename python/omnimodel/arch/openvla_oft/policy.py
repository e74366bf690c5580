"""End-to-end OFT policy: raw observation -> un-normalised action chunk (upstream ``get_vla_action``).

    policy = load_policy("path/to/openvla-7b-oft-finetuned-libero-10")
    actions = predict_action(policy, [third_person_rgb, wrist_rgb], "put the bowl on the plate", state)
    # actions: (chunk, action_dim) float64, e.g. (8, 7) for LIBERO

``run_policy`` returns every intermediate input (token ids, pixel values, normalised proprio, layout)
so a runtime under test can be fed exactly what the reference saw.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from omnimodel.arch.weights import swapped_weights  # re-exported: it lived here

from .checkpoint import LoadedCheckpoint, load_checkpoint
from .config import OpenVLAOFTConfig
from .modeling import OpenVLAOFT, SequenceLayout
from .normalization import DatasetNormStats, normalize_proprio, unnormalize_actions
from .preprocess import images_to_pixel_values
from .tokenizer import PromptTokenizer


@dataclass
class OpenVLAOFTPolicy:
    config: OpenVLAOFTConfig
    model: OpenVLAOFT
    tokenizer: PromptTokenizer
    norm_stats: DatasetNormStats

    @classmethod
    def from_checkpoint(cls, loaded: LoadedCheckpoint) -> OpenVLAOFTPolicy:
        return cls(loaded.config, loaded.model, loaded.tokenizer, loaded.norm_stats)


def load_policy(checkpoint_dir: str | Path, **kwargs) -> OpenVLAOFTPolicy:
    """``load_checkpoint`` (same keyword arguments) wrapped as a policy."""
    return OpenVLAOFTPolicy.from_checkpoint(load_checkpoint(checkpoint_dir, **kwargs))


@dataclass
class PolicyOutput:
    actions: np.ndarray  # (chunk, action_dim) float64, un-normalised
    normalized_actions: np.ndarray  # (chunk, action_dim) float32 as the head produced them
    prompt_ids: torch.Tensor  # (1, L): BOS .. "▁"
    input_ids: torch.Tensor  # (1, L + A + 1): with action placeholders and the stop token
    pixel_values: torch.Tensor  # (1, 6 * num_images, S, S)
    proprio: torch.Tensor | None  # (1, P) normalised, as fed to the proprio projector
    layout: SequenceLayout
    action_hidden_states: torch.Tensor  # (1, A, D)


def _prepare_proprio(policy: OpenVLAOFTPolicy, proprio: np.ndarray | None, normalized: bool) -> torch.Tensor | None:
    cfg = policy.config
    if not cfg.use_proprio:
        if proprio is not None:
            raise ValueError("this checkpoint has no proprio projector: pass proprio=None")
        return None
    if proprio is None:
        raise ValueError(f"this checkpoint needs a {cfg.proprio_projector.proprio_dim}-D proprio state")
    p = np.asarray(proprio, dtype=np.float64).reshape(-1)
    if p.shape[0] != cfg.proprio_projector.proprio_dim:
        raise ValueError(f"proprio has {p.shape[0]} values, the checkpoint expects {cfg.proprio_projector.proprio_dim}")
    if not np.isfinite(p).all():
        raise ValueError(f"proprio contains non-finite values at indices {np.flatnonzero(~np.isfinite(p)).tolist()}")
    if not normalized:
        p = normalize_proprio(p, policy.norm_stats.proprio)
    # upstream: torch.Tensor(normalized numpy) -> float32, then cast to the model dtype
    return torch.tensor(p, dtype=torch.float32)[None]


@dataclass
class PolicyInputs:
    """What the network is fed for one observation (no forward pass needed to know it)."""

    prompt_ids: torch.Tensor  # (1, L): BOS .. "▁"
    input_ids: torch.Tensor  # (1, L + A + 1)
    pixel_values: torch.Tensor  # (1, 6 * num_images, S, S)
    proprio: torch.Tensor | None  # (1, P) normalised


def prepare_inputs(
    policy: OpenVLAOFTPolicy,
    images: Sequence[np.ndarray],
    instruction: str,
    proprio: np.ndarray | None = None,
    *,
    proprio_is_normalized: bool = False,
) -> PolicyInputs:
    cfg = policy.config
    pixel_values = images_to_pixel_values(images, cfg.vision, cfg.num_images)
    proprio_t = _prepare_proprio(policy, proprio, proprio_is_normalized)
    prompt_ids = torch.tensor([policy.tokenizer.encode_prompt(instruction)], dtype=torch.long)
    return PolicyInputs(prompt_ids, policy.model.full_input_ids(prompt_ids), pixel_values, proprio_t)


@torch.no_grad()
def run_policy(
    policy: OpenVLAOFTPolicy,
    images: Sequence[np.ndarray],
    instruction: str,
    proprio: np.ndarray | None = None,
    *,
    proprio_is_normalized: bool = False,
) -> PolicyOutput:
    x = prepare_inputs(policy, images, instruction, proprio, proprio_is_normalized=proprio_is_normalized)
    device = policy.model.language_model.model.embed_tokens.weight.device
    out = policy.model(x.pixel_values, x.prompt_ids.to(device), x.proprio)
    normalized = out.normalized_actions[0].float().cpu().numpy()
    return PolicyOutput(
        actions=unnormalize_actions(normalized, policy.norm_stats.action),
        normalized_actions=normalized,
        prompt_ids=x.prompt_ids,
        input_ids=x.input_ids,
        pixel_values=x.pixel_values,
        proprio=x.proprio,
        layout=out.layout,
        action_hidden_states=out.action_hidden_states.cpu(),
    )


def predict_action(
    policy: OpenVLAOFTPolicy,
    images: Sequence[np.ndarray],
    instruction: str,
    proprio: np.ndarray | None = None,
    *,
    proprio_is_normalized: bool = False,
) -> np.ndarray:
    """Images (uint8 (H, W, 3), third-person first), instruction, raw proprio -> (chunk, action_dim) actions."""
    return run_policy(policy, images, instruction, proprio, proprio_is_normalized=proprio_is_normalized).actions


__all__ = ["OpenVLAOFTPolicy", "PolicyInputs", "PolicyOutput", "load_policy", "prepare_inputs", "run_policy", "predict_action", "swapped_weights"]
