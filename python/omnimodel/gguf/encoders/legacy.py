"""Q8_0 and Q4_0: one fp16 scale per block of 32 and signed integer codes, ``y = q*d``.

ggml's reference maps the largest-magnitude element to -8 (Q4_0) or +-127 (Q8_0) and rounds against the
unrounded scale. Here the scale is searched for the weighted objective, the signed code range is used on
whichever side helps (Q8_0 may store -128), and the codes are rounded against the stored fp16 scale.
"""

from __future__ import annotations

import numpy as np

from ..types import GGMLType
from .codec import BlockCodec, f16_bytes, f16_from_bytes
from .scales import BlockScales
from .search import Data, RunningBest, fit_symmetric, fp16, fp16_pair, ls_symmetric, round_symmetric


class SymmetricBlockCodec(BlockCodec):
    def __init__(
        self, ggml_type: GGMLType, qlo: int, qhi: int, levels: np.ndarray, n_lloyd: int, n_fp16_iter: int
    ) -> None:
        self.ggml_type = ggml_type
        self.qlo, self.qhi = qlo, qhi
        self.levels = levels
        self.n_lloyd = n_lloyd
        self.n_fp16_iter = n_fp16_iter

    def fit(self, x: np.ndarray, w: np.ndarray) -> BlockScales:
        data = Data.of(x, w)
        S, _ = fit_symmetric(data, self.qlo, self.qhi, self.levels, self.n_lloyd, project=fp16)
        # Alternate: fp16 scale (both neighbours scored on the codes they induce) -> exact codes -> LS scale.
        best = RunningBest(data.x2.copy(), np.zeros(S.shape), S)
        for _ in range(self.n_fp16_iter):
            for dc in fp16_pair(best.params[1]):
                mom = data.moments(round_symmetric(data.x, dc, self.qlo, self.qhi))
                best.offer(mom.error(dc), dc, ls_symmetric(mom)[0])
        return BlockScales(self.ggml_type, best.params[0].astype(np.float16))

    def codes(self, x: np.ndarray, scales: BlockScales) -> np.ndarray:
        d = scales.d.astype(np.float64)
        return round_symmetric(np.asarray(x, dtype=np.float64), d, self.qlo, self.qhi).astype(np.int16)

    def values(self, codes: np.ndarray, scales: BlockScales) -> np.ndarray:
        return codes.astype(np.float32) * scales.d.astype(np.float32)[..., None]


class Q8_0Codec(SymmetricBlockCodec):
    def __init__(self) -> None:
        # 8-bit rounding noise barely depends on the scale, so the candidates mostly pick the code the
        # extreme lands on; that choice still matters where fp16's precision of d dominates (flat blocks).
        levels = np.array([-128.0, 127.0, -127.0, 126.0, -126.0, 125.0, -125.0, -124.0])
        super().__init__(GGMLType.Q8_0, -128, 127, levels, n_lloyd=2, n_fp16_iter=2)

    def pack(self, codes: np.ndarray, scales: BlockScales) -> np.ndarray:
        out = np.empty(codes.shape[:2] + (34,), dtype=np.uint8)
        out[..., 0:2] = f16_bytes(scales.d)
        out[..., 2:] = codes.astype(np.int8).view(np.uint8)
        return out

    def unpack(self, raw: np.ndarray) -> tuple[np.ndarray, BlockScales]:
        d = f16_from_bytes(raw[..., 0:2])
        codes = np.ascontiguousarray(raw[..., 2:]).view(np.int8).astype(np.int16)
        return codes, BlockScales(self.ggml_type, d)


class Q4_0Codec(SymmetricBlockCodec):
    def __init__(self) -> None:
        levels = np.concatenate([[-8.0], -np.linspace(5.5, 9.5, 17), np.linspace(5.0, 7.5, 6)])
        super().__init__(GGMLType.Q4_0, -8, 7, levels, n_lloyd=4, n_fp16_iter=2)

    def pack(self, codes: np.ndarray, scales: BlockScales) -> np.ndarray:
        u = (codes + 8).astype(np.uint8)
        out = np.empty(codes.shape[:2] + (18,), dtype=np.uint8)
        out[..., 0:2] = f16_bytes(scales.d)
        out[..., 2:] = u[..., :16] | (u[..., 16:] << 4)
        return out

    def unpack(self, raw: np.ndarray) -> tuple[np.ndarray, BlockScales]:
        d = f16_from_bytes(raw[..., 0:2])
        qs = raw[..., 2:].astype(np.int16)
        codes = np.concatenate([qs & 15, qs >> 4], axis=-1) - 8
        return codes, BlockScales(self.ggml_type, d)
