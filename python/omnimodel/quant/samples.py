"""Calibration samples: one observation plus the demonstrated action chunk that followed it.

The adapter turns episodes in the project's format (``simbench/episodes.py``) into samples the way OFT is
trained: the target chunk at step t is actions t .. t+chunk-1, the last action repeating past the end.
Targets stay raw here; ``calibrate`` normalises them with the checkpoint's action statistics, because the
L1 head regresses normalised actions.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class CalibSample:
    images: list[np.ndarray]  # uint8 (H, W, 3) per camera, third-person first
    instruction: str
    proprio: np.ndarray | None  # raw robot state (P,), or None for checkpoints without proprio
    actions: np.ndarray  # raw target chunk (chunk, action_dim), float64


def chunk_targets(actions: np.ndarray, t: int, chunk: int) -> np.ndarray:
    """actions[t : t+chunk], padded by repeating the last action (as OFT training does)."""
    T = actions.shape[0]
    idx = np.minimum(np.arange(t, t + chunk), T - 1)
    return np.asarray(actions[idx], dtype=np.float64)


def samples_from_episodes(
    episodes: Iterable, chunk: int, *, steps_per_episode: int = 4, seed: int = 0, max_samples: int | None = None
) -> list[CalibSample]:
    """``steps_per_episode`` evenly spaced steps of each episode (deterministic for a ``seed``, which sets the phase).

    Evenly spaced rather than consecutive steps: neighbouring frames are near-duplicates, and HSIC and the
    Fisher both gain more from diverse samples than from more of the same scene.
    """
    rng = np.random.default_rng(seed)
    out: list[CalibSample] = []
    for ep in episodes:
        T = int(ep.num_steps)
        k = max(1, min(steps_per_episode, T))
        # one random phase u per episode on a stride of T/k >= 1: the k steps are distinct and spread out
        u = rng.uniform()
        for t in (int((i + u) * T / k) for i in range(k)):
            images, proprio = ep.observation(t)
            # Copies, not views: a view would keep the whole episode's pixels alive with the sample.
            out.append(
                CalibSample([np.array(im) for im in images], ep.instruction, np.array(proprio),
                            chunk_targets(ep.actions, t, chunk))
            )
            if max_samples is not None and len(out) >= max_samples:
                return out
    return out


def select(samples: Sequence[CalibSample], n: int) -> list[CalibSample]:
    return list(samples[:n])


__all__ = ["CalibSample", "chunk_targets", "samples_from_episodes", "select"]
