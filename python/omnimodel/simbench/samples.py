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
        self.task_probabilities: np.ndarray | None = None  # None: tasks drawn uniformly

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

    def set_task_weights(self, weights: dict[str, float]) -> None:
        """Draw tasks with these relative weights (a task not named weighs 1)."""
        unknown = sorted(set(weights) - set(self.tasks))
        if unknown:
            raise ValueError(f"task weights name tasks the data does not have: {', '.join(unknown)} "
                             f"(it has {', '.join(self.tasks)})")
        w = np.array([float(weights.get(t, 1.0)) for t in self.tasks])
        if not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
            raise ValueError(f"task weights must be finite, >= 0 and not all 0: {weights}")
        self.task_probabilities = w / w.sum()

    @property
    def num_samples(self) -> int:
        return sum(len(v) for v in self.index.values())

    def pick(self, rng: np.random.Generator, batch_size: int) -> tuple[str, list[tuple[int, int]]]:
        """A task, then ``batch_size`` of its (episode, step) pairs, with replacement."""
        if self.task_probabilities is None:  # the original draw, so earlier seeds give the same batches
            task = self.tasks[int(rng.integers(len(self.tasks)))]
        else:
            task = self.tasks[int(rng.choice(len(self.tasks), p=self.task_probabilities))]
        pool = self.index[task]
        return task, [pool[i] for i in rng.integers(len(pool), size=batch_size)]

    def views(self, e: int, t: int, cameras: int, rng: np.random.Generator, shift: int) -> list[np.ndarray]:
        """The first ``cameras`` frames of step t, each shifted by up to ``shift`` px (0: as recorded)."""
        imgs = list(self.images[e][t][:cameras])
        return [random_shift(im, shift, rng) for im in imgs] if shift > 0 else imgs


__all__ = ["TaskSamples"]
