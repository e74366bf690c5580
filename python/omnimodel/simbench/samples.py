"""Training samples for the demo trainers: every step of every episode, drawn one task per batch.

A batch holds samples of one task, so every prompt in it has the same instruction (OpenVLA-OFT's need no
padding at all). Families keep their own prepared arrays (targets, states, prompts) per episode and ask
this index which (episode, step) pairs a batch takes and for each one's camera views, randomly shifted.
The draws happen in a fixed order (task, then the steps, then each view's shift), so a seed gives the
same batches.
"""

from __future__ import annotations

import numpy as np

from .augment import random_shift
from .episodes import Episode


class TaskSamples:
    def __init__(self) -> None:
        self.images: list[np.ndarray] = []  # per episode (T, C, H, W, 3) uint8
        self.index: dict[str, list[tuple[int, int]]] = {}  # task -> (episode, t)
        self.tasks: list[str] = []

    def add(self, ep: Episode) -> int:
        """Index every step of ``ep``; returns its episode number."""
        e = len(self.images)
        self.images.append(ep.images)
        self.index.setdefault(ep.task, []).extend((e, t) for t in range(ep.num_steps))
        return e

    def close(self, split: str) -> None:
        if not self.images:
            raise ValueError(f"split '{split}' has no episodes")
        self.tasks = sorted(self.index)

    @property
    def num_samples(self) -> int:
        return sum(len(v) for v in self.index.values())

    def pick(self, rng: np.random.Generator, batch_size: int) -> tuple[str, list[tuple[int, int]]]:
        """A task, then ``batch_size`` of its (episode, step) pairs, with replacement."""
        task = self.tasks[int(rng.integers(len(self.tasks)))]
        pool = self.index[task]
        return task, [pool[i] for i in rng.integers(len(pool), size=batch_size)]

    def views(self, e: int, t: int, cameras: int, rng: np.random.Generator, shift: int) -> list[np.ndarray]:
        """The first ``cameras`` frames of step t, each shifted by up to ``shift`` px (0: as recorded)."""
        imgs = list(self.images[e][t][:cameras])
        return [random_shift(im, shift, rng) for im in imgs] if shift > 0 else imgs


__all__ = ["TaskSamples"]
