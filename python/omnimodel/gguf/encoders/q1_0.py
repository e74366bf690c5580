"""Q1_0: 128 sign bits and one fp16 magnitude per block, ``y = bit ? +d : -d``.

For a fixed d the best bit is the sign agreement with x, and for those bits the weighted error is a
quadratic in d minimised by the weighted mean of |x|; the nearest fp16 value of that mean is therefore
the exact optimum. (ggml's quantizer takes the plain mean and ignores the imatrix.)
"""

from __future__ import annotations

import numpy as np

from ..types import GGMLType
from .codec import BlockCodec, f16_bytes, f16_from_bytes
from .scales import BlockScales
from .search import fp16, safe_div


class Q1_0Codec(BlockCodec):
    ggml_type = GGMLType.Q1_0
    work_factor = 6

    def fit(self, x: np.ndarray, w: np.ndarray) -> BlockScales:
        d = safe_div((w * np.abs(x)).sum(-1), w.sum(-1))
        return BlockScales(self.ggml_type, fp16(d).astype(np.float16))

    def codes(self, x: np.ndarray, scales: BlockScales) -> np.ndarray:
        # codes are +-1 (the sign the decoder applies to d); ties at x == 0 take +1 like ggml's x >= 0.
        neg_d = (scales.d < 0)[..., None]
        plus = np.where(neg_d, x <= 0, x >= 0)
        return np.where(plus, 1, -1).astype(np.int16)

    def values(self, codes: np.ndarray, scales: BlockScales) -> np.ndarray:
        d = scales.d.astype(np.float32)[..., None]
        return np.where(codes > 0, d, -d).astype(np.float32)

    def pack(self, codes: np.ndarray, scales: BlockScales) -> np.ndarray:
        out = np.empty(codes.shape[:2] + (18,), dtype=np.uint8)
        out[..., 0:2] = f16_bytes(scales.d)
        out[..., 2:] = np.packbits(codes > 0, axis=-1, bitorder="little")
        return out

    def unpack(self, raw: np.ndarray) -> tuple[np.ndarray, BlockScales]:
        d = f16_from_bytes(raw[..., 0:2])
        bits = np.unpackbits(raw[..., 2:], axis=-1, bitorder="little")
        return np.where(bits > 0, 1, -1).astype(np.int16), BlockScales(self.ggml_type, d)
