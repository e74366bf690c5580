"""pi0 / pi0.5's calibration adapter: what ``quant.calibrate`` needs to know about this network.

    prepare(policy, sample, device, dtype)  a calibration sample -> (flow-matching loss arguments, normalised
                                            target chunk)
    forward(policy, args)                   one joint prefix + suffix pass at a noise level t: the per-element
                                            squared velocity error (openpi ``compute_loss``)
    losses(policy, out, target)             L_act = that error's mean over the real action dimensions; no L_CE
                                            (no LM pathway to the actions: lambda = 1, METHODS 1c)
    predict_normalized(policy, args)        the normalised chunk the Euler loop produces from the same noise
    blocks / input_modules / domain_of / uses_per_sample   as for OpenVLA-OFT (quant/calibrate.py)

Training draws a fresh (noise, t) per step; calibration must repeat exactly, so each sample's pair comes
from a seed hashed from the sample itself: the noise from ``gaussian_noise`` and t from openpi's
distribution Beta(1.5, 1) * 0.999 + 0.001, whose inverse CDF is u^(2/3).
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from omnimodel.quant.calib_check import PolicyInputs

from .config import NormMode, Pi0Config
from .normalization import FeatureStats, NormStats
from .policy import Pi0Policy, _splitmix64, prepare_inputs

# A LeRobot checkpoint holds one set of statistics; it is named so for messages and --unnorm-key.
STATS_KEY = "default"

# openpi ``sample_time``: t ~ Beta(1.5, 1), squeezed into [0.001, 1)
_T_SCALE, _T_OFFSET, _T_ALPHA = 0.999, 0.001, 1.5

_VISION = "paligemma_with_expert.paligemma.model.vision_tower."
_EXPERT = "paligemma_with_expert.gemma_expert."


def sample_seed(sample) -> int:
    """A seed that depends only on the sample's content (its target chunk and instruction)."""
    actions = np.ascontiguousarray(np.asarray(sample.actions, dtype=np.float64))
    return zlib.crc32(sample.instruction.encode(), zlib.crc32(actions.tobytes()))


def noise_level(seed: int) -> float:
    """t for ``seed``: the first SplitMix64 output of ``seed`` as a uniform in [0, 1) (as ``gaussian_noise``
    makes its uniforms), through Beta(1.5, 1)'s inverse CDF."""
    u = float(_splitmix64(np.zeros(1, dtype=np.uint64), seed)[0] >> np.uint64(11)) * 2.0**-53
    return _T_SCALE * u ** (1.0 / _T_ALPHA) + _T_OFFSET


@dataclass(frozen=True)
class StatBounds:
    """A feature's statistics as the calibration-data check reads them: the range the normaliser maps to
    [-1, 1] (bounds) or mean +- 2 std (z-score), and which dimensions are normalised."""

    low: np.ndarray
    high: np.ndarray
    mask: np.ndarray


def stat_bounds(stats: FeatureStats) -> StatBounds | None:
    if stats.mode is NormMode.IDENTITY:
        return None
    if stats.mode is NormMode.MEAN_STD:
        mean, std = stats.stats["mean"].numpy(), stats.stats["std"].numpy()
        low, high = mean - 2.0 * std, mean + 2.0 * std
    else:
        lo, hi = stats._bounds()
        low, high = lo.numpy(), hi.numpy()
    return StatBounds(low.astype(np.float64), high.astype(np.float64), np.ones(low.shape[0], dtype=bool))


def policy_inputs(config: Pi0Config, norm_stats: NormStats, source: str, stats_key: str,
                  stats_keys: Sequence[str] = ()) -> PolicyInputs:
    """What a pi0 / pi0.5 checkpoint takes per step, for ``quant.calib_check``: its cameras in
    ``camera_keys`` order, the state as proprio, the statistics entry (an openpi asset id, or LeRobot's one)."""
    return PolicyInputs(source, len(config.camera_keys), int(config.image_size), int(config.state_dim),
                        int(config.action_dim), stats_key, stat_bounds(norm_stats.action),
                        stat_bounds(norm_stats.state), tuple(stats_keys))


class Pi0Calibration:
    """The adapter object (stateless; ``Architecture.calibration()`` returns one)."""

    lm_pathway = False  # the actions come from the expert's flow, not from the LM head

    def policy_inputs(self, policy: Pi0Policy) -> PolicyInputs:
        return policy_inputs(policy.config, policy.norm_stats, "the policy", STATS_KEY)

    def chunk_size(self, policy: Pi0Policy) -> int:
        return int(policy.config.chunk_size)

    def prepare(self, policy: Pi0Policy, s, device: torch.device, dtype: torch.dtype):
        cfg = policy.config
        if s.proprio is None:
            raise ValueError("pi0 / pi0.5 calibration needs the robot state (proprio) in every sample")
        seed = sample_seed(s)
        x = prepare_inputs(policy, s.images, s.instruction, np.asarray(s.proprio, dtype=np.float32), seed=seed)
        raw = np.asarray(s.actions, dtype=np.float32)
        if raw.shape != (cfg.chunk_size, cfg.action_dim):
            raise ValueError(f"calibration target chunk has shape {raw.shape}, the policy predicts "
                             f"{(cfg.chunk_size, cfg.action_dim)}")
        target = policy.norm_stats.action.normalize(torch.from_numpy(raw)).to(torch.float32)
        padded = torch.zeros(1, cfg.chunk_size, cfg.max_action_dim, dtype=torch.float32)
        padded[0, :, : cfg.action_dim] = target
        t = torch.tensor([noise_level(seed)], dtype=torch.float32)
        state = None if x.state is None else x.state.to(device, dtype)
        args = (x.images.to(device, dtype), x.image_mask.to(device), x.tokens.to(device), x.token_mask.to(device),
                state, padded.to(device, dtype), x.noise.to(device, dtype), t.to(device, dtype))
        return args, target.numpy()

    def forward(self, policy: Pi0Policy, args):
        return policy.model.flow_matching_loss(*args)

    def losses(self, policy: Pi0Policy, out, target: np.ndarray) -> tuple[torch.Tensor, None]:
        return out[..., : policy.config.action_dim].float().mean(), None

    def predict_normalized(self, policy: Pi0Policy, args) -> np.ndarray:
        images, image_mask, tokens, token_mask, state, _actions, noise, _t = args
        out = policy.model(images, image_mask, tokens, token_mask, state, noise)
        return out[0, :, : policy.config.action_dim].float().cpu().numpy()

    def blocks(self, policy: Pi0Policy) -> list[nn.Module]:
        """SigLIP's encoder layers and both Gemma stacks' layers (for the Gemma layers, the part after the
        joint attention: o_proj, norms and the MLP, which hold most of the activations)."""
        prefix, expert = policy.model.paligemma_with_expert.stacks
        vision = policy.model.paligemma_with_expert.paligemma.model.vision_tower.vision_model.encoder.layers
        return [*vision, *prefix.layers, *expert.layers]

    def input_modules(self, policy: Pi0Policy) -> dict[str, nn.Module]:
        """SigLIP's embedded patches, the prefix stack's input sequence, the expert's suffix embeddings."""
        prefix, expert = policy.model.paligemma_with_expert.stacks
        vision = policy.model.paligemma_with_expert.paligemma.model.vision_tower.vision_model.encoder.layers
        return {"vision": vision[0], "llm": prefix.layers[0], "expert": expert.layers[0]}

    def domain_of(self, name: str) -> str:
        if name.startswith(_VISION):
            return "vision"
        if name.startswith(_EXPERT):
            return "expert"
        return "llm"

    def uses_per_sample(self, policy: Pi0Policy, name: str) -> int:
        """SigLIP runs once per camera slot (a missing camera's is masked out of attention, not skipped)."""
        return len(policy.config.camera_keys) if self.domain_of(name) == "vision" else 1


__all__ = ["STATS_KEY", "Pi0Calibration", "StatBounds", "noise_level", "policy_inputs", "sample_seed", "stat_bounds"]
