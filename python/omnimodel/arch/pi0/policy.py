"""End-to-end pi0 / pi0.5 policy: raw observation -> un-normalised action chunk.

    policy = load_policy("path/to/pi05_checkpoint")          # tokenizer= if the directory has none
    actions = predict_action(policy, [base_rgb, wrist_rgb], "pick up the cube", state, seed=0)
    # actions: (chunk_size, action_dim) float32; LeRobot executes the first n_action_steps

The pipeline is LeRobot's pre-processor + ``predict_action_chunk`` + post-processor: normalise the state
(``normalization.py``), build and tokenise the prompt (pi0.5 writes the discretised state into it),
images to [-1, 1] (``preprocess.py``), pad the state to ``max_state_dim`` (pi0), draw the initial noise
(chunk_size, max_action_dim), run the prefix once and the Euler loop, cut to ``action_dim`` and
un-normalise.

The noise comes from ``gaussian_noise(seed, shape)``, a generator simple enough to be reproduced
bit-for-bit outside PyTorch (a C runtime must draw the same noise for the same seed): SplitMix64 over
the counter, two 53-bit uniforms per pair, Box-Muller in float64, rounded to float32. Runs with the same
seed repeat exactly; ``noise=`` overrides it (e.g. to feed another implementation's draw).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .checkpoint import LoadedCheckpoint, load_checkpoint
from .config import Pi0Config, prompt_format
from .modeling import Pi0Model
from .normalization import NormStats
from .preprocess import prepare_images
from .tokenizer import PaliGemmaTokenizer, TokenizedPrompt

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def _splitmix64(counter: np.ndarray, seed: int) -> np.ndarray:
    """Output ``i`` of SplitMix64 seeded with ``seed``: mix(seed + (i + 1) * golden), all mod 2^64."""
    with np.errstate(over="ignore"):
        z = np.uint64(seed & 0xFFFFFFFFFFFFFFFF) + (counter.astype(np.uint64) + np.uint64(1)) * _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _MIX1
        z = (z ^ (z >> np.uint64(27))) * _MIX2
        return z ^ (z >> np.uint64(31))


def gaussian_noise(seed: int, shape: Sequence[int]) -> torch.Tensor:
    """Standard normal float32 noise of ``shape`` from ``seed``, reproducible in any language.

    For pair k (elements 2k and 2k+1, row-major): u1, u2 = outputs 2k, 2k+1 of SplitMix64 shifted right by
    11 and scaled by 2^-53 (uniform in [0, 1)); r = sqrt(-2 ln(1 - u1)); element 2k = r cos(2 pi u2),
    element 2k+1 = r sin(2 pi u2) (float64, then rounded to float32; an odd count drops the last sine).
    """
    if not isinstance(seed, (int, np.integer)) or int(seed) < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    n = int(np.prod(shape))
    pairs = (n + 1) // 2
    bits = _splitmix64(np.arange(2 * pairs), int(seed))
    u = (bits >> np.uint64(11)).astype(np.float64) * (2.0 ** -53)
    u1, u2 = u[0::2], u[1::2]
    r = np.sqrt(-2.0 * np.log1p(-u1))
    z = np.empty(2 * pairs, dtype=np.float64)
    z[0::2], z[1::2] = r * np.cos(2.0 * np.pi * u2), r * np.sin(2.0 * np.pi * u2)
    return torch.from_numpy(z[:n].astype(np.float32).reshape(tuple(shape)))


@dataclass
class Pi0Policy:
    config: Pi0Config
    model: Pi0Model
    tokenizer: PaliGemmaTokenizer
    norm_stats: NormStats

    @classmethod
    def from_checkpoint(cls, loaded: LoadedCheckpoint) -> Pi0Policy:
        return cls(loaded.config, loaded.model, loaded.tokenizer, loaded.norm_stats)


def load_policy(checkpoint_dir: str | Path, **kwargs) -> Pi0Policy:
    """``load_checkpoint`` (same keyword arguments) wrapped as a policy."""
    return Pi0Policy.from_checkpoint(load_checkpoint(checkpoint_dir, **kwargs))


@dataclass
class PolicyInputs:
    """Exactly what the network is fed for one observation (a runtime under test gets the same)."""

    images: torch.Tensor  # (1, cameras, 3, S, S) float32 in [-1, 1], LeRobot's camera order
    image_mask: torch.Tensor  # (1, cameras) bool
    prompt: TokenizedPrompt
    tokens: torch.Tensor  # (1, L) int64
    token_mask: torch.Tensor  # (1, L) bool
    normalized_state: torch.Tensor  # (state_dim,) float32
    state: torch.Tensor | None  # (1, max_state_dim) float32 for pi0's state token, None for pi0.5
    noise: torch.Tensor  # (1, chunk, max_action_dim) float32


@dataclass
class PolicyOutput:
    actions: np.ndarray  # (chunk, action_dim) float32, un-normalised
    normalized_actions: np.ndarray  # (chunk, action_dim) float32, what the flow produced
    inputs: PolicyInputs


def prepare_inputs(policy: Pi0Policy, images: Sequence[np.ndarray | None], instruction: str, state: np.ndarray,
                   *, seed: int = 0, noise: torch.Tensor | None = None, pad_prompt: bool = False) -> PolicyInputs:
    cfg = policy.config
    prepared = prepare_images(images, len(cfg.camera_keys), cfg.image_size)
    s = np.asarray(state, dtype=np.float32).reshape(-1)
    if s.shape[0] != cfg.state_dim:
        raise ValueError(f"state has {s.shape[0]} values, the policy expects {cfg.state_dim}")
    if not np.isfinite(s).all():
        raise ValueError(f"state contains non-finite values at indices {np.flatnonzero(~np.isfinite(s)).tolist()}")
    norm_state = policy.norm_stats.state.normalize(torch.from_numpy(s))
    prompt = policy.tokenizer.tokenize(prompt_format(cfg), instruction, norm_state.numpy() if cfg.is_pi05 else None,
                                       max_length=cfg.tokenizer_max_length, pad=pad_prompt)
    padded = None
    if not cfg.is_pi05:
        padded = torch.zeros(1, cfg.max_state_dim, dtype=torch.float32)
        padded[0, : cfg.state_dim] = norm_state
    shape = (1, cfg.chunk_size, cfg.max_action_dim)
    if noise is None:
        noise = gaussian_noise(seed, shape)
    elif tuple(noise.shape) != shape:
        raise ValueError(f"noise must have shape {shape}, got {tuple(noise.shape)}")
    return PolicyInputs(
        images=prepared.pixels[None],
        image_mask=prepared.mask[None],
        prompt=prompt,
        tokens=torch.tensor([prompt.ids], dtype=torch.int64),
        token_mask=torch.tensor([prompt.mask], dtype=torch.bool),
        normalized_state=norm_state,
        state=padded,
        noise=noise.to(torch.float32),
    )


@torch.no_grad()
def run_policy(policy: Pi0Policy, images: Sequence[np.ndarray | None], instruction: str, state: np.ndarray, *,
               seed: int = 0, noise: torch.Tensor | None = None, num_steps: int | None = None,
               pad_prompt: bool = False) -> PolicyOutput:
    """``predict_action`` with its inputs returned too. ``pad_prompt`` pads the ids to
    ``tokenizer_max_length`` as upstream does (same actions; the default runs on the valid ids only)."""
    cfg = policy.config
    x = prepare_inputs(policy, images, instruction, state, seed=seed, noise=noise, pad_prompt=pad_prompt)
    out = policy.model(x.images, x.image_mask, x.tokens, x.token_mask, x.state, x.noise, num_steps)
    normalized = out[0, :, : cfg.action_dim].to(torch.float32)
    actions = policy.norm_stats.action.unnormalize(normalized)
    return PolicyOutput(actions=actions.numpy(), normalized_actions=normalized.numpy(), inputs=x)


def predict_action(policy: Pi0Policy, images: Sequence[np.ndarray | None], instruction: str, state: np.ndarray,
                   seed: int = 0, **kwargs) -> np.ndarray:
    """Camera frames (uint8 (H, W, 3) in ``config.camera_keys`` order, ``None`` for a missing camera), the
    instruction, the raw robot state and a noise seed -> (chunk_size, action_dim) un-normalised actions."""
    return run_policy(policy, images, instruction, state, seed=seed, **kwargs).actions


__all__ = [
    "Pi0Policy",
    "PolicyInputs",
    "PolicyOutput",
    "gaussian_noise",
    "load_policy",
    "prepare_inputs",
    "predict_action",
    "run_policy",
]
