"""Policies the evaluator can run: the interface, the PyTorch OFT reference, and the GGUF hook.

The interface is one call (a ``typing.Protocol``; any callable of this shape works):

    policy(images, instruction, proprio) -> actions      # float (chunk, action_dim), un-normalised

``images`` are uint8 (H, W, 3), third-person first; ``proprio`` is the raw (un-normalised) state. A
policy may also define ``begin_episode(sim)`` (called after every reset; only privileged baselines such
as the scripted expert use it) and ``describe() -> dict`` (recorded in the evaluation JSON).

``load_eval_policy(spec)`` turns a command-line ``--policy`` into one:

    expert                 Meta-World's scripted expert (privileged; a sanity baseline)
    DIR with config.json   an OpenVLA-OFT checkpoint, run by the PyTorch reference
    FILE.gguf / DIR with model.gguf
                           a converted policy run by the compiled runtime: the hook below,
                           ``GGUFRuntimePolicy``, is where it plugs in (not wired yet)
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from omnimodel.errors import UsageError


@runtime_checkable
class Policy(Protocol):
    def __call__(self, images: Sequence[np.ndarray], instruction: str, proprio: np.ndarray) -> np.ndarray: ...


def describe_policy(policy: Any) -> dict[str, Any]:
    describe = getattr(policy, "describe", None)
    if callable(describe):
        return dict(describe())
    return {"kind": type(policy).__name__}


class OFTTorchPolicy:
    """An OpenVLA-OFT checkpoint directory run by ``omnimodel.arch.openvla_oft`` (float32, CPU)."""

    def __init__(
        self, checkpoint_dir: str | os.PathLike[str], *, threads: int = 1, unnorm_key: str | None = None
    ) -> None:
        import torch

        from omnimodel.arch.openvla_oft import load_policy

        torch.set_num_threads(max(1, int(threads)))
        self.checkpoint_dir = Path(checkpoint_dir)
        self.threads = threads
        self.policy = load_policy(self.checkpoint_dir, unnorm_key=unnorm_key)
        cfg = self.policy.config
        self.num_images = cfg.num_images
        self.chunk = cfg.num_actions_chunk
        self.action_dim = cfg.action_dim

    def __call__(self, images: Sequence[np.ndarray], instruction: str, proprio: np.ndarray) -> np.ndarray:
        from omnimodel.arch.openvla_oft import predict_action

        if len(images) < self.num_images:
            raise ValueError(f"the policy takes {self.num_images} images, the observation has {len(images)}")
        p = proprio if self.policy.config.use_proprio else None
        return predict_action(self.policy, list(images[: self.num_images]), instruction, p)

    def describe(self) -> dict[str, Any]:
        cfg = self.policy.config
        return {
            "kind": "openvla-oft-pytorch",
            "checkpoint": str(self.checkpoint_dir),
            "dataset_key": self.policy.norm_stats.key,
            "platform": cfg.platform.name,
            "chunk": cfg.num_actions_chunk,
            "action_dim": cfg.action_dim,
            "num_images": cfg.num_images,
            "image_size": cfg.vision.image_size,
            "parameters": int(sum(p.numel() for p in self.policy.model.parameters())),
            "threads": self.threads,
        }


class GGUFRuntimePolicy:
    """HOOK: a converted GGUF policy run by the compiled runtime, behind the same interface.

    To wire it: preprocess exactly as ``omnimodel.arch.openvla_oft.run_policy`` does (pixel values,
    prompt ids with action slots, normalised proprio -- the checkpoint's tokenizer and statistics), run
    the runtime's OFT graph on them, and un-normalise its action output with the statistics. Nothing
    else in the evaluator changes: it only calls ``__call__`` and ``describe``.
    """

    def __init__(self, path: str | os.PathLike[str], *, threads: int = 1) -> None:
        self.path = Path(path)
        self.threads = threads
        raise UsageError(
            f"{self.path}: running a converted GGUF policy in the simulator is not wired yet "
            "(hook: omnimodel.simbench.policies.GGUFRuntimePolicy); evaluate the PyTorch checkpoint for now"
        )

    def __call__(self, images: Sequence[np.ndarray], instruction: str, proprio: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        return {"kind": "gguf-runtime", "path": str(self.path), "threads": self.threads}


def load_eval_policy(spec: str, *, threads: int = 1, unnorm_key: str | None = None) -> Any:
    """``--policy`` value -> policy object (see the module docstring)."""
    if spec == "expert":
        from .experts import ExpertPolicy

        return ExpertPolicy()
    path = Path(spec)
    if path.is_file() and path.suffix == ".gguf" or path.is_dir() and (path / "model.gguf").is_file():
        return GGUFRuntimePolicy(path, threads=threads)
    if path.is_dir() and (path / "config.json").is_file():
        return OFTTorchPolicy(path, threads=threads, unnorm_key=unnorm_key)
    raise UsageError(
        f"--policy {spec!r}: not 'expert', an OFT checkpoint directory (with config.json), a .gguf file "
        "or a convert output directory (with model.gguf)"
    )


__all__ = ["Policy", "describe_policy", "OFTTorchPolicy", "GGUFRuntimePolicy", "load_eval_policy"]
