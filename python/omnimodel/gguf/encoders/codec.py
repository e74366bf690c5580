"""The contract every numpy block codec fulfils, so the public API can chunk and dispatch uniformly.

All arrays are blocked: elements are (rows, n_blocks, block_size), packed bytes (rows, n_blocks, type_size),
scales a :class:`BlockScales` over the same rows.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from ..types import GGMLType, type_info
from .scales import BlockScales


class BlockCodec(ABC):
    ggml_type: GGMLType

    @property
    def block_size(self) -> int:
        return type_info(self.ggml_type).block_size

    @property
    def type_size(self) -> int:
        return type_info(self.ggml_type).type_size

    #: Whether the type has scales (False only for the plain float types).
    has_scales: bool = True

    #: Roughly how many float64 temporaries of the chunk's size one step keeps alive; bounds the chunk.
    work_factor: int = 16

    @abstractmethod
    def fit(self, x: np.ndarray, w: np.ndarray) -> BlockScales:
        """Scales minimising sum w (x - x_hat)^2 (x, w float64 (rows, n_blocks, block_size))."""

    @abstractmethod
    def codes(self, x: np.ndarray, scales: BlockScales) -> np.ndarray:
        """Integer codes that minimise the error for the given stored scales (each element independently)."""

    @abstractmethod
    def values(self, codes: np.ndarray, scales: BlockScales) -> np.ndarray:
        """float32 values ggml's to_float produces for these fields, in ggml's float operation order."""

    @abstractmethod
    def pack(self, codes: np.ndarray, scales: BlockScales) -> np.ndarray:
        """ggml's block bytes, uint8 (rows, n_blocks, type_size)."""

    @abstractmethod
    def unpack(self, raw: np.ndarray) -> tuple[np.ndarray, BlockScales]:
        """Inverse of pack."""


def f32_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a*b rounded to float32, the way ggml forms d*sc before multiplying by the code."""
    return np.multiply(np.asarray(a, dtype=np.float32), np.asarray(b, dtype=np.float32), dtype=np.float32)


def f16_bytes(v: np.ndarray) -> np.ndarray:
    """(..., ) fp16 values as (..., 2) little-endian bytes."""
    return np.ascontiguousarray(v, dtype="<f2").view(np.uint8).reshape(v.shape + (2,))


def f16_from_bytes(b: np.ndarray) -> np.ndarray:
    """(..., 2) little-endian bytes as (...,) float16."""
    return np.ascontiguousarray(b).view("<f2")[..., 0].astype(np.float16)
