"""Q2_K, Q3_K, Q4_K, Q5_K, Q6_K encoders: super-blocks of 256 with two-level scales.

Fitting runs in three stages, all vectorised over every sub-block of a chunk:

1. each sub-block gets its own continuous scale (and min) by a weighted grid search with LS refits
   and Lloyd polishing (``search.fit_affine`` / ``search.fit_symmetric``);
2. the super-block's fp16 ``d`` (and ``dmin``) is searched so the sub-block values land close to integer
   multiples of it, weighting each sub-block by how much its scale error costs (sum w q^2 for the scale,
   sum w for the min) rather than by a fixed proxy;
3. coordinate descent on the stored fields: integer sub-block codes given (d, dmin), a joint 2x2 LS
   refit of (d, dmin) given the codes (both fp16 neighbours scored), and exact re-rounding of the element
   codes against the stored scales; the best stored state seen per super-block is kept.

Because the element codes are always re-derived from the stored scales, ``codes()`` applied to the fitted
scales reproduces the encoder's output, which is what makes ``encode(..., scales=fit_scales(...))``
byte-identical to ``encode(...)``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..types import GGMLType
from . import klayout
from .codec import BlockCodec, f32_mul
from .scales import SCALE_LAYOUTS, BlockScales
from .search import (
    Data,
    Moments,
    RunningBest,
    fit_affine,
    fit_symmetric,
    fp16_pair,
    ls_affine,
    round_affine,
    round_symmetric,
    safe_div,
    span_offsets,
    super_scale_search,
)


class _KCodec(BlockCodec):
    def __init__(self, ggml_type: GGMLType) -> None:
        self.ggml_type = ggml_type
        self.layout = SCALE_LAYOUTS[ggml_type]
        self.n_sub = self.layout.n_sub
        self.sublen = 256 // self.n_sub

    def _sub(self, a: np.ndarray) -> np.ndarray:
        return a.reshape(a.shape[:-1] + (self.n_sub, self.sublen))

    @staticmethod
    def _stored(d: np.ndarray, codes: np.ndarray) -> np.ndarray:
        """The sub-block value ggml decodes: fp32(d*code), as float64."""
        return f32_mul(d[..., None], codes).astype(np.float64)

    def pack(self, codes: np.ndarray, scales: BlockScales) -> np.ndarray:
        return klayout.pack(self.ggml_type, codes, scales)

    def unpack(self, raw: np.ndarray) -> tuple[np.ndarray, BlockScales]:
        return klayout.unpack(self.ggml_type, raw)

    def values(self, codes: np.ndarray, scales: BlockScales) -> np.ndarray:
        return klayout.values(self.ggml_type, codes, scales)


class AffineKCodec(_KCodec):
    """Q2_K, Q4_K, Q5_K: ``y = fp32(d*sc)*q - fp32(dmin*m)`` with q in [0, qhi]."""

    def __init__(
        self,
        ggml_type: GGMLType,
        qhi: int,
        ranges: Sequence[tuple[float, float]],
        n_lloyd: int,
        super_levels: Sequence[float],
        n_iter: int,
        polish: bool = True,
    ) -> None:
        super().__init__(ggml_type)
        self.polish = polish
        self.qhi = qhi
        self.K = self.layout.sc_range[1]
        self.ranges = ranges
        self.n_lloyd = n_lloyd
        self.super_levels = super_levels
        self.n_iter = n_iter

    def _pick(self, mom: Moments, d: np.ndarray, dmin: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Integer (sc, m) per sub-block for fixed element codes and fixed (d, dmin).

        For a given sc the best m is the rounded continuous optimum (a 1-D convex quadratic), so trying
        the three sc codes around the continuous scale covers the joint optimum in practice.
        """
        S_opt, _, _ = ls_affine(mom)
        d_ = d[..., None]
        dm_ = dmin[..., None]
        r = np.rint(safe_div(S_opt, np.broadcast_to(d_, S_opt.shape)))
        best = RunningBest(np.full(S_opt.shape, np.inf), np.zeros(S_opt.shape), np.zeros(S_opt.shape))
        for k in (0.0, -1.0, 1.0):
            ls = np.clip(r + k, 0, self.K)
            S = d_ * ls
            M = np.maximum(mom.best_min(S), 0.0)
            lm = np.clip(np.rint(safe_div(M, np.broadcast_to(dm_, M.shape))), 0, self.K)
            best.offer(mom.error(S, dm_ * lm), ls, lm)
        return best.params[0], best.params[1]

    @staticmethod
    def _total(mom: Moments, d: np.ndarray, dmin: np.ndarray, ls: np.ndarray, lm: np.ndarray) -> np.ndarray:
        return mom.error(d[..., None] * ls, dmin[..., None] * lm).sum(-1)

    def _refit(
        self, mom: Moments, ls: np.ndarray, lm: np.ndarray, d: np.ndarray, dmin: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Joint LS of (d, dmin) for fixed codes; the four fp16 neighbour pairs and the old pair compete."""
        A = (ls * ls * mom.sqq).sum(-1)
        C = (ls * lm * mom.sq).sum(-1)
        B = (lm * lm * mom.sw).sum(-1)
        P = (ls * mom.sxq).sum(-1)
        Q = (lm * mom.sx).sum(-1)
        det = A * B - C * C
        ok = det > 1e-9 * A * B
        d_new = np.where(ok, safe_div(P * B - C * Q, det), safe_div(P + C * dmin, A))
        dmin_new = np.where(ok, safe_div(C * P - A * Q, det), dmin)
        best = RunningBest(self._total(mom, d, dmin, ls, lm), d, dmin)
        for dc in fp16_pair(d_new):
            for dmc in fp16_pair(dmin_new):
                best.offer(self._total(mom, dc, dmc, ls, lm), dc, dmc)
        return best.params[0], best.params[1]

    def fit(self, x: np.ndarray, w: np.ndarray) -> BlockScales:
        sub = Data.of(self._sub(x), self._sub(w))
        S, M, _ = fit_affine(sub, self.qhi, self.ranges, self.n_lloyd)
        mom = sub.moments(round_affine(sub.x, S, M, self.qhi))
        d = super_scale_search(S, mom.sqq, 0, self.K, self.super_levels)
        dmin = super_scale_search(M, mom.sw, 0, self.K, self.super_levels)

        # all-zero scales (error = energy) are the fallback every stored state must beat
        zd, zs = np.zeros(d.shape), np.zeros(S.shape)
        best = RunningBest(sub.x2.sum(-1), zd, zd, zs, zs)
        for _ in range(self.n_iter):
            ls, lm = self._pick(mom, d, dmin)
            d, dmin = self._refit(mom, ls, lm, d, dmin)
            ls, lm = self._pick(mom, d, dmin)
            S_st, M_st = self._stored(d, ls), self._stored(dmin, lm)
            mom = sub.moments(round_affine(sub.x, S_st, M_st, self.qhi))
            best.offer(mom.error(S_st, M_st).sum(-1), d, dmin, ls, lm)
        d, dmin, ls, lm = best.params
        if self.polish:
            ls, lm = self._polish(sub, d, dmin, ls, lm)
        return BlockScales(
            self.ggml_type, d.astype(np.float16), dmin.astype(np.float16), ls.astype(np.int16), lm.astype(np.int16)
        )

    def _polish(
        self, sub: Data, d: np.ndarray, dmin: np.ndarray, ls: np.ndarray, lm: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Neighbouring (sc, m) codes per sub-block scored by their true error after re-rounding.

        The quadratic model used so far holds the element codes fixed; re-rounding them can favour a
        neighbouring code pair. Sub-blocks are independent once (d, dmin) are fixed, so this is exact.
        """
        best = RunningBest(np.full(ls.shape, np.inf), ls, lm)
        for i in (0.0, -1.0, 1.0):
            for j in (0.0, -1.0, 1.0):
                ls_c = np.clip(ls + i, 0, self.K)
                lm_c = np.clip(lm + j, 0, self.K)
                S_st, M_st = self._stored(d, ls_c), self._stored(dmin, lm_c)
                best.offer(sub.moments(round_affine(sub.x, S_st, M_st, self.qhi)).error(S_st, M_st), ls_c, lm_c)
        return best.params[0], best.params[1]

    def codes(self, x: np.ndarray, scales: BlockScales) -> np.ndarray:
        S, M = klayout.sub_scales(self.ggml_type, scales)
        xs = self._sub(np.asarray(x, dtype=np.float64))
        q = round_affine(xs, S.astype(np.float64), M.astype(np.float64), self.qhi)
        return q.reshape(x.shape).astype(np.int16)


class SymmetricKCodec(_KCodec):
    """Q3_K, Q6_K: ``y = fp32(d*sc)*q`` with signed q in [qlo, qhi] and signed sc."""

    def __init__(
        self,
        ggml_type: GGMLType,
        qlo: int,
        qhi: int,
        levels: Sequence[float],
        n_lloyd: int,
        super_levels: Sequence[float],
        n_iter: int,
        polish: bool = True,
    ) -> None:
        super().__init__(ggml_type)
        self.polish = polish
        self.qlo, self.qhi = qlo, qhi
        self.slo, self.shi = self.layout.sc_range
        self.levels = levels
        self.n_lloyd = n_lloyd
        self.super_levels = super_levels
        self.n_iter = n_iter

    def _pick(self, mom: Moments, d: np.ndarray) -> np.ndarray:
        # the error is a 1-D convex quadratic in the sub-block scale: the nearest code is optimal
        S_opt = safe_div(mom.sxq, mom.sqq)
        return np.clip(np.rint(safe_div(S_opt, np.broadcast_to(d[..., None], S_opt.shape))), self.slo, self.shi)

    def _refit(self, mom: Moments, sc: np.ndarray, d: np.ndarray) -> np.ndarray:
        d_new = safe_div((sc * mom.sxq).sum(-1), (sc * sc * mom.sqq).sum(-1))
        best = RunningBest(mom.error(d[..., None] * sc).sum(-1), d)
        for dc in fp16_pair(d_new):
            best.offer(mom.error(dc[..., None] * sc).sum(-1), dc)
        return best.params[0]

    def fit(self, x: np.ndarray, w: np.ndarray) -> BlockScales:
        sub = Data.of(self._sub(x), self._sub(w))
        S, _ = fit_symmetric(sub, self.qlo, self.qhi, self.levels, self.n_lloyd)
        mom = sub.moments(round_symmetric(sub.x, S, self.qlo, self.qhi))
        d = super_scale_search(S, mom.sqq, self.slo, self.shi, self.super_levels)

        best = RunningBest(sub.x2.sum(-1), np.zeros(d.shape), np.zeros(S.shape))
        for _ in range(self.n_iter):
            sc = self._pick(mom, d)
            d = self._refit(mom, sc, d)
            sc = self._pick(mom, d)
            S_st = self._stored(d, sc)
            mom = sub.moments(round_symmetric(sub.x, S_st, self.qlo, self.qhi))
            best.offer(mom.error(S_st).sum(-1), d, sc)
        best_d, best_sc = best.params
        if self.polish:
            best_sc = self._polish(sub, best_d, best_sc)
        return BlockScales(self.ggml_type, best_d.astype(np.float16), sc=best_sc.astype(np.int16))

    def _polish(self, sub: Data, d: np.ndarray, sc: np.ndarray) -> np.ndarray:
        """sc +- 1 per sub-block scored by the true error after re-rounding (see AffineKCodec._polish)."""
        best = RunningBest(np.full(sc.shape, np.inf), sc)
        for i in (0.0, -1.0, 1.0):
            sc_c = np.clip(sc + i, self.slo, self.shi)
            S_st = self._stored(d, sc_c)
            best.offer(sub.moments(round_symmetric(sub.x, S_st, self.qlo, self.qhi)).error(S_st), sc_c)
        return best.params[0]

    def codes(self, x: np.ndarray, scales: BlockScales) -> np.ndarray:
        S, _ = klayout.sub_scales(self.ggml_type, scales)
        q = round_symmetric(self._sub(np.asarray(x, dtype=np.float64)), S.astype(np.float64), self.qlo, self.qhi)
        return q.reshape(x.shape).astype(np.int16)


def _affine_levels(K: int) -> list[float]:
    return [K, K + 0.45, K - 0.5, K - 1.0, K - 2.0, K + 1.0]


def _offsets(qhi: int, half_width: float, n: int) -> list[tuple[float, float]]:
    # offset 0 (the plain min..max mapping) first, so exact ties keep it
    grid = np.linspace(-half_width, half_width, n)
    return span_offsets(qhi, np.concatenate([[0.0], grid[grid != 0.0]]))


def _ranges_2d(los: Sequence[float], his: Sequence[float]) -> list[tuple[float, float]]:
    # With only 4 levels, where the low end sits matters as much as the span, so Q2_K searches both.
    return [(a, b) for a in los for b in his]


def make_codecs() -> dict[GGMLType, BlockCodec]:
    return {
        GGMLType.Q2_K: AffineKCodec(
            GGMLType.Q2_K,
            3,
            _ranges_2d(np.linspace(0.0, 0.16, 5), np.linspace(0.0, -0.16, 5)),
            n_lloyd=3,
            super_levels=_affine_levels(15),
            n_iter=3,
        ),
        GGMLType.Q4_K: AffineKCodec(
            GGMLType.Q4_K, 15, _offsets(15, 1.5, 16), n_lloyd=2, super_levels=_affine_levels(63), n_iter=2
        ),
        GGMLType.Q5_K: AffineKCodec(
            GGMLType.Q5_K, 31, _offsets(31, 1.5, 11), n_lloyd=2, super_levels=_affine_levels(63), n_iter=2
        ),
        GGMLType.Q3_K: SymmetricKCodec(
            GGMLType.Q3_K,
            -4,
            3,
            np.concatenate([[-4.0], -np.linspace(2.5, 5.0, 11), np.linspace(2.5, 3.5, 5)]),
            n_lloyd=4,
            super_levels=[-32.0, -32.45, -31.5, -31.0, -30.0, 31.45, 31.0, 30.0],
            n_iter=4,
        ),
        GGMLType.Q6_K: SymmetricKCodec(
            GGMLType.Q6_K,
            -32,
            31,
            np.concatenate([[-32.0], -np.linspace(29.0, 33.5, 10), np.linspace(29.0, 31.5, 6)]),
            n_lloyd=3,
            super_levels=[-128.0, -128.45, -127.5, -127.0, -126.0, 127.45, 127.0, 126.0],
            n_iter=3,
        ),
    }
