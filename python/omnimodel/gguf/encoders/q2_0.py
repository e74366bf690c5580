"""Q2_0: one fp16 scale per block of 64 and 2-bit codes, ``y = (q - 1)*d`` with q in 0..3.

The stored code q - 1 is a signed code in [-1, 2], so a block is the symmetric model ``x ~ d*c`` with an
asymmetric code range. d may be negative (it is a plain fp16 that ggml multiplies by), which mirrors the
grid to {-2, -1, 0, 1}*|d|: the longer side of the range can go to whichever side of zero the block needs.

ggml's reference stores d = max|x| and rounds x/d, so it never uses the code +2 (a ternary grid) and
ignores the imatrix. Here the scale is fitted to the weighted objective, over both signs of d:

* exact continuous search: for d > 0 every element's nearest code is a step function of d with at most
  two steps (at x/1.5 and 2x for x > 0, at -2x for x < 0), so the weighted error of nearest-code
  rounding is a continuous piecewise quadratic in d whose pieces are delimited by those breakpoints.
  Sorting them and accumulating the moment changes gives every piece's LS optimum clipped to the piece,
  hence the global optimum (d < 0 is the same search on -x). Both fp16 neighbours of the optimum of each
  sign are scored on the codes they induce;
* the grid of :class:`SymmetricBlockCodec` (anchor -> code candidates incl. ggml's own d = +-max|x|,
  LS refits, Lloyd polishing, fp16 neighbours), which guarantees the result is never worse than a
  ggml-like fit even where fp16 rounding is coarse.

The better per block is stored.
"""

from __future__ import annotations

import numpy as np

from ..types import GGMLType
from .codec import f16_bytes, f16_from_bytes
from .legacy import SymmetricBlockCodec
from .scales import BlockScales
from .search import Data, RunningBest, fp16_pair, round_symmetric

#: Code values the anchor element is mapped to by the grid: ggml's own choice (1: the extreme is a plain
#: +-d), the long (+2) side with and without clipping, and the short (-1) side. The exact search does the
#: real work; the grid is the never-worse-than-ggml backstop, so it is kept small.
_LEVELS = np.array([1.0, 2.0, 2.5, 3.0, -1.0, -1.5])


class Q2_0Codec(SymmetricBlockCodec):
    def __init__(self) -> None:
        super().__init__(GGMLType.Q2_0, -1, 2, _LEVELS, n_lloyd=2, n_fp16_iter=2)

    def fit(self, x: np.ndarray, w: np.ndarray) -> BlockScales:
        grid = super().fit(x, w)
        data = Data.of(x, w)
        d0 = grid.d.astype(np.float64)
        best = RunningBest(data.moments(round_symmetric(data.x, d0, -1, 2)).error(d0), d0)
        for sign in (1.0, -1.0):
            d_opt = sign * _optimal_positive_scale(sign * data.x, data.w)
            for dc in fp16_pair(d_opt):
                best.offer(data.moments(round_symmetric(data.x, dc, -1, 2)).error(dc), dc)
        return BlockScales(self.ggml_type, best.params[0].astype(np.float16))

    def pack(self, codes: np.ndarray, scales: BlockScales) -> np.ndarray:
        # element j sits in byte j // 4 at bit offset (j % 4) * 2
        u = (codes + 1).astype(np.uint8)
        out = np.empty(codes.shape[:2] + (18,), dtype=np.uint8)
        out[..., 0:2] = f16_bytes(scales.d)
        out[..., 2:] = u[..., 0::4] | (u[..., 1::4] << 2) | (u[..., 2::4] << 4) | (u[..., 3::4] << 6)
        return out

    def unpack(self, raw: np.ndarray) -> tuple[np.ndarray, BlockScales]:
        d = f16_from_bytes(raw[..., 0:2])
        qs = raw[..., 2:].astype(np.int16)
        codes = np.stack([(qs >> s) & 3 for s in (0, 2, 4, 6)], axis=-1).reshape(qs.shape[:-1] + (64,)) - 1
        return codes.astype(np.int16), BlockScales(self.ggml_type, d)


def _optimal_positive_scale(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """The d > 0 minimising sum w (x - d*c)^2 with c = clip(rint(x/d), -1, 2) (unrounded), per group.

    Returns 0 for groups with no positive-d fit better than all-zero codes (e.g. all-zero groups).
    """
    pos, neg = x > 0, x < 0
    ax = np.abs(x)
    # codes as d -> 0+: +2 for x > 0, -1 for x < 0
    c0 = np.where(pos, 2.0, np.where(neg, -1.0, 0.0))
    wx = w * x
    sxq0 = (wx * c0).sum(-1)
    sqq0 = (w * c0 * c0).sum(-1)
    x2 = (wx * x).sum(-1)
    # events: (breakpoint, change of sum w x c, change of sum w c^2); no event -> breakpoint inf
    bp = np.concatenate([np.where(pos, x / 1.5, np.inf), np.where(pos | neg, 2.0 * ax, np.inf)], axis=-1)
    dsxq = np.concatenate([np.where(pos, -wx, 0.0), np.where(pos, -wx, wx)], axis=-1)
    dsqq = np.concatenate([np.where(pos, -3.0 * w, 0.0), np.where(pos | neg, -w, 0.0)], axis=-1)
    order = np.argsort(bp, axis=-1, kind="stable")
    bp = np.take_along_axis(bp, order, -1)
    sxq = np.concatenate([sxq0[..., None], sxq0[..., None] + np.cumsum(np.take_along_axis(dsxq, order, -1), -1)], -1)
    sqq = np.concatenate([sqq0[..., None], sqq0[..., None] + np.cumsum(np.take_along_axis(dsqq, order, -1), -1)], -1)
    lo = np.concatenate([np.zeros(bp.shape[:-1] + (1,)), bp], axis=-1)
    hi = np.concatenate([bp, np.full(bp.shape[:-1] + (1,), np.inf)], axis=-1)
    # pieces with sqq <= 0 have every code 0 (cumsum noise aside): their error is x2 whatever d is
    live = (sqq > 1e-12 * np.maximum(sqq0, 1e-300)[..., None]) & np.isfinite(lo)
    d = np.clip(np.where(live, sxq / np.where(live, sqq, 1.0), 0.0), lo, hi)
    d = np.where(live, d, 0.0)
    err = np.where(live, x2[..., None] - 2.0 * d * sxq + d * d * sqq, np.inf)
    k = np.argmin(err, axis=-1)[..., None]
    d_best = np.take_along_axis(d, k, -1)[..., 0]
    e_best = np.take_along_axis(err, k, -1)[..., 0]
    return np.where(e_best < x2, d_best, 0.0)
