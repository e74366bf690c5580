"""Image augmentation for training the demo policies (every family's trainer uses it)."""

from __future__ import annotations

import numpy as np


def random_shift(image: np.ndarray, pad: int, rng: np.random.Generator) -> np.ndarray:
    """(H, W, 3) uint8 -> same shape, content moved by up to ``pad`` px each way (edges replicated)."""
    h, w = image.shape[:2]
    padded = np.pad(image, ((pad, pad), (pad, pad), (0, 0)), mode="edge")
    dy, dx = (int(v) for v in rng.integers(0, 2 * pad + 1, size=2))
    return np.ascontiguousarray(padded[dy : dy + h, dx : dx + w])


__all__ = ["random_shift"]
