"""Vectorised weighted least-squares building blocks shared by the block encoders.

Every routine works on arrays whose last axis holds the elements of one group (a block or a sub-block)
and whose leading axes are arbitrary, so one call handles every group of a chunk of rows at once.

Two group models cover all numpy-encoded types:

* symmetric ``x ~ S*q``      with integer ``q`` in ``[qlo, qhi]`` (Q8_0, Q4_0, Q3_K, Q6_K sub-blocks);
* affine    ``x ~ S*q - M``  with integer ``q`` in ``[0, qhi]`` and ``M >= 0`` (Q2_K, Q4_K, Q5_K sub-blocks).

For fixed codes ``q`` the weighted error of either model is a quadratic in ``(S, M)`` whose coefficients are
the six weighted moments in :class:`Moments`; scale searches therefore score candidates from the moments
instead of touching the elements again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

F16_MAX = 65504.0
_TINY = 1e-30


def fp16(v: np.ndarray) -> np.ndarray:
    """Nearest fp16 value (as float64), clipped to the finite range so a huge scale never becomes inf."""
    return np.clip(v, -F16_MAX, F16_MAX).astype(np.float16).astype(np.float64)


def fp16_pair(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The nearest fp16 value and its neighbour on the other side of ``v`` (both float64).

    A 1-D quadratic is minimised by the closer representable neighbour of its optimum, but once the
    objective couples two scales (d and dmin) the other neighbour can win, so callers score both.
    """
    h = np.clip(v, -F16_MAX, F16_MAX).astype(np.float16)
    toward = np.where(h.astype(np.float64) <= v, np.float16(np.inf), np.float16(-np.inf))
    other = np.nextafter(h, toward)
    other = np.where(np.isfinite(other), other, h)
    return h.astype(np.float64), other.astype(np.float64)


def safe_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a/b with 0 where b is 0 (empty or all-zero groups)."""
    b_ok = b != 0
    return np.where(b_ok, a / np.where(b_ok, b, 1.0), 0.0)


def wdot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Sum over the last axis of a*b; einsum is several times faster than (a*b).sum(-1) here."""
    return np.einsum("...i,...i->...", a, b)


def lastsum(a: np.ndarray) -> np.ndarray:
    """Sum over the (short) last axis; einsum beats ndarray.sum there by ~2.5x."""
    return np.einsum("...i->...", a)


@dataclass
class Moments:
    """Weighted moments of a group for fixed codes q (all float64, shaped like the group axes).

    sw = sum w, sx = sum w x, x2 = sum w x^2 depend on the data only; sq = sum w q, sqq = sum w q^2 and
    sxq = sum w x q depend on the codes.
    """

    sw: np.ndarray
    sx: np.ndarray
    x2: np.ndarray
    sq: np.ndarray
    sqq: np.ndarray
    sxq: np.ndarray

    def error(self, S: np.ndarray, M: np.ndarray | float = 0.0) -> np.ndarray:
        """sum w (x - (S q - M))^2 expanded in the moments."""
        return (
            self.x2
            - 2.0 * S * self.sxq
            + 2.0 * M * self.sx
            + S * S * self.sqq
            - 2.0 * S * M * self.sq
            + M * M * self.sw
        )

    def best_min(self, S: np.ndarray) -> np.ndarray:
        """Unconstrained minimiser of the error in M for a fixed S."""
        return safe_div(S * self.sq - self.sx, self.sw)


@dataclass
class Data:
    """Elements and weights of a set of groups, with the code-independent moments precomputed."""

    x: np.ndarray  # float64 (..., n)
    w: np.ndarray  # float64 (..., n)
    wx: np.ndarray
    sw: np.ndarray
    sx: np.ndarray
    x2: np.ndarray

    @classmethod
    def of(cls, x: np.ndarray, w: np.ndarray) -> "Data":
        x = np.asarray(x, dtype=np.float64)
        w = np.asarray(w, dtype=np.float64)
        wx = w * x
        return cls(x, w, wx, w.sum(-1), wx.sum(-1), wdot(wx, x))

    def moments(self, q: np.ndarray) -> Moments:
        q = q.astype(np.float64, copy=False)
        wq = self.w * q
        return Moments(self.sw, self.sx, self.x2, lastsum(wq), wdot(wq, q), wdot(self.wx, q))


# --------------------------------------------------------------------------------------------------------
# codes for fixed scales: the exact per-element optimum, because the objective is separable per element


def round_symmetric(x: np.ndarray, S: np.ndarray, qlo: int, qhi: int) -> np.ndarray:
    """Codes minimising (x - S q)^2 per element; S broadcasts over the last axis (0 where S == 0)."""
    inv = safe_div(np.ones_like(S, dtype=np.float64), S)
    q = np.multiply(x, inv[..., None])
    np.rint(q, out=q)
    return np.clip(q, qlo, qhi, out=q)


def round_affine(x: np.ndarray, S: np.ndarray, M: np.ndarray, qhi: int) -> np.ndarray:
    """Codes minimising (x - (S q - M))^2 per element, q in [0, qhi]."""
    inv = safe_div(np.ones_like(S, dtype=np.float64), S)
    q = np.add(x, M[..., None])
    q *= inv[..., None]
    np.rint(q, out=q)
    return np.clip(q, 0, qhi, out=q)


# --------------------------------------------------------------------------------------------------------
# least-squares refits for fixed codes


def ls_symmetric(m: Moments) -> tuple[np.ndarray, np.ndarray]:
    """Optimal S for fixed codes and the resulting error."""
    S = safe_div(m.sxq, m.sqq)
    return S, m.error(S)


def ls_affine(m: Moments) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Optimal (S >= 0, M >= 0) for fixed codes, and the resulting error.

    The unconstrained 2x2 solution is used where it is feasible; otherwise the best of the two boundary
    fits (M = 0, or S = 0 with the weighted mean as offset) is taken, which also covers groups whose
    codes are all equal.
    """
    D = m.sw * m.sqq - m.sq * m.sq
    ok = D > 1e-12 * np.maximum(m.sw * m.sqq, _TINY)
    S_free = safe_div(m.sw * m.sxq - m.sx * m.sq, np.where(ok, D, 0.0))
    M_free = safe_div(m.sq * m.sxq - m.sqq * m.sx, np.where(ok, D, 0.0))
    feasible = ok & (S_free >= 0) & (M_free >= 0)

    S_m0 = np.maximum(safe_div(m.sxq, m.sqq), 0.0)
    e_m0 = m.error(S_m0, 0.0)
    M_s0 = np.maximum(safe_div(-m.sx, m.sw), 0.0)
    e_s0 = m.error(0.0, M_s0)
    use_m0 = e_m0 <= e_s0
    S = np.where(feasible, S_free, np.where(use_m0, S_m0, 0.0))
    M = np.where(feasible, M_free, np.where(use_m0, 0.0, M_s0))
    return S, M, m.error(S, M)


# --------------------------------------------------------------------------------------------------------
# first-level fits: grid over inverse scales, LS refit per candidate, then Lloyd-style alternation


class _GridScratch:
    """Reusable buffers for scoring many candidate code sets of the same groups.

    The grid runs in float64: its errors come from a moment expansion whose individual terms (M^2 sum w,
    say) can exceed the error being ranked by many orders of magnitude, so float32 moments would let
    rounding noise pick degenerate candidates.
    """

    def __init__(self, data: Data) -> None:
        self.data = data
        self.q = np.empty_like(data.x)
        self.wq = np.empty_like(data.x)

    def codes(self, xs: np.ndarray, iscale: np.ndarray, qlo: int, qhi: int) -> np.ndarray:
        q = np.multiply(xs, iscale[..., None], out=self.q)
        np.rint(q, out=q)
        np.clip(q, qlo, qhi, out=q)
        return q

    def moments(self, q: np.ndarray) -> Moments:
        d = self.data
        wq = np.multiply(d.w, q, out=self.wq)
        return Moments(d.sw, d.sx, d.x2, lastsum(wq), wdot(wq, q), wdot(d.wx, q))


#: Elements below this fraction of their group's mean weight do not steer where the grid is anchored.
IMPORTANT_FRACTION = 0.1


def _important(data: Data) -> np.ndarray:
    return data.w >= IMPORTANT_FRACTION * (data.sw / data.w.shape[-1])[..., None]


def _signed_extreme(x: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    ax = np.abs(x) if mask is None else np.where(mask, np.abs(x), -1.0)
    return np.take_along_axis(x, ax.argmax(-1)[..., None], -1)[..., 0]


def symmetric_anchors(data: Data) -> list[np.ndarray]:
    """Signed extremes the grid maps onto the code range: the largest |x|, and, where it differs, the
    largest |x| among elements that carry weight (an outlier nobody cares about should not set the scale)."""
    ext = _signed_extreme(data.x)
    ext_w = _signed_extreme(data.x, _important(data))
    return [ext, ext_w] if np.any(ext_w != ext) else [ext]


def affine_anchors(data: Data) -> list[tuple[np.ndarray, np.ndarray]]:
    """(lo, span) ranges the grid maps onto [0, qhi]: of all elements, and, where it differs, of the
    elements that carry weight."""
    x = data.x
    out = []
    for mask in (None, _important(data)):
        lo = np.minimum(x.min(-1) if mask is None else np.where(mask, x, np.inf).min(-1), 0.0)
        hi = x.max(-1) if mask is None else np.where(mask, x, -np.inf).max(-1)
        out.append((lo, np.maximum(hi - lo, 0.0)))
    same = np.array_equal(out[0][0], out[1][0]) and np.array_equal(out[0][1], out[1][1])
    return out[:1] if same else out


#: A candidate must beat the incumbent by this fraction of the group's weighted energy to replace it, so
#: exact ties (e.g. a constant group, which every candidate fits) keep the first, most natural candidate
#: instead of whichever one rounding noise favours; differing choices across sub-blocks would otherwise
#: make their shared super-scale fit none of them exactly.
TIE_TOLERANCE = 1e-12


class RunningBest:
    """Running per-group minimum of an error together with the parameters that achieved it.

    Parameters may carry trailing axes beyond the error's (e.g. one code per sub-block of a super-block).
    """

    def __init__(self, err: np.ndarray, *params: np.ndarray, scale: np.ndarray | float = 0.0) -> None:
        self.err = np.asarray(err)
        self.params = [np.asarray(p) for p in params]
        self.tol = TIE_TOLERANCE * np.asarray(scale)

    def offer(self, err: np.ndarray, *params: np.ndarray) -> None:
        better = err < self.err - self.tol
        self.err = np.where(better, err, self.err)
        self.params = [
            np.where(better.reshape(better.shape + (1,) * (np.ndim(p) - better.ndim)), p, b)
            for p, b in zip(params, self.params)
        ]


def fit_symmetric(
    data: Data,
    qlo: int,
    qhi: int,
    levels: Sequence[float],
    n_lloyd: int,
    project: Callable[[np.ndarray], np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-group scale S for x ~ S q, q in [qlo, qhi]; returns (S, error).

    ``levels`` are the code values an anchor element (see :func:`symmetric_anchors`) is mapped to by each
    candidate (signed: negative levels use the longer negative side of the code range). Each candidate's
    codes get the exact LS scale; the winner is polished by alternating exact rounding and LS refits,
    every step of which can only lower the error. ``project`` maps a scale to the nearest storable one
    (fp16 for single-level types) so candidates are scored as they will be stored.
    """
    proj = project if project is not None else (lambda v: v)
    x = data.x
    grid = _GridScratch(data)
    best = RunningBest(data.x2.copy(), np.zeros(x.shape[:-1]), scale=data.x2)
    for ext in symmetric_anchors(data):
        inv_ext = safe_div(np.ones_like(ext), ext)
        for lev in levels:
            mom = grid.moments(grid.codes(x, lev * inv_ext, qlo, qhi))
            S = proj(ls_symmetric(mom)[0])
            best.offer(mom.error(S), S)
    (S,) = best.params
    mom = data.moments(round_symmetric(x, S, qlo, qhi))
    best = RunningBest(mom.error(S), S, scale=data.x2)
    for _ in range(n_lloyd):
        S = proj(ls_symmetric(mom)[0])
        mom = data.moments(round_symmetric(x, S, qlo, qhi))
        best.offer(mom.error(S), S)
    return best.params[0], best.err


def span_offsets(qhi: int, offsets: Sequence[float]) -> list[tuple[float, float]]:
    """Range candidates that keep the low end and map the span onto [0, qhi + offset] (ggml's grid)."""
    return [(0.0, qhi / (qhi + off) - 1.0) for off in offsets]


def fit_affine(
    data: Data, qhi: int, ranges: Sequence[tuple[float, float]], n_lloyd: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-group (S, M) for x ~ S q - M, q in [0, qhi], M >= 0; returns (S, M, error).

    Each candidate ``(a, b)`` maps ``[lo + a*span, hi + b*span]`` onto the codes [0, qhi], where
    ``[lo, hi]`` is an anchor range (see :func:`affine_anchors`); a > 0 or b < 0 clip the ends. Each
    candidate's codes get the exact weighted LS (S, M), and the winner is polished like in
    :func:`fit_symmetric`.
    """
    x = data.x
    grid = _GridScratch(data)
    S0, M0, e0 = ls_affine(data.moments(np.zeros_like(x)))
    best = RunningBest(e0, S0, M0, scale=data.x2)
    for lo, span in affine_anchors(data):
        for a, b in ranges:
            c_lo = lo + a * span
            width = span * (1.0 + b - a)
            iscale = safe_div(np.full_like(width, float(qhi)), width)
            xs = np.subtract(x, c_lo[..., None], out=grid.wq)  # wq is free until moments() is called
            S, M, e = ls_affine(grid.moments(grid.codes(xs, iscale, 0, qhi)))
            best.offer(e, S, M)
    S, M = best.params
    mom = data.moments(round_affine(x, S, M, qhi))
    best = RunningBest(mom.error(S, M), S, M, scale=data.x2)
    for _ in range(n_lloyd):
        S, M, _ = ls_affine(mom)
        mom = data.moments(round_affine(x, S, M, qhi))
        best.offer(mom.error(S, M), S, M)
    S, M = best.params
    return S, M, best.err


# --------------------------------------------------------------------------------------------------------
# second level: a shared fp16 super-scale times small integer codes per group


def super_scale_search(
    v: np.ndarray, a: np.ndarray, lo: int, hi: int, levels: Sequence[float]
) -> np.ndarray:
    """fp16 d (per row of v) minimising sum_j a_j (v_j - d l_j)^2 with integer l_j in [lo, hi].

    ``levels`` are the (signed) codes an anchor v_j (the largest, and the largest with weight) is mapped
    to by each candidate; every candidate's codes get an LS refit of d, rounded to fp16 (both neighbours
    tried), then re-coded. Returns float64 fp16 values.
    """
    important = a >= IMPORTANT_FRACTION * a.mean(-1, keepdims=True)
    ext = _signed_extreme(v)
    ext_w = _signed_extreme(v, important)
    anchors = [ext, ext_w] if np.any(ext_w != ext) else [ext]
    energy = (a * v * v).sum(-1)
    best = RunningBest(energy, np.zeros(v.shape[:-1]), scale=energy)
    for anchor in anchors:
        for lev in levels:
            l = round_symmetric(v, anchor / float(lev), lo, hi)
            d = fp16(safe_div((a * v * l).sum(-1), (a * l * l).sum(-1)))
            for dc in fp16_pair(d):
                l = round_symmetric(v, dc, lo, hi)
                r = v - dc[..., None] * l
                best.offer((a * r * r).sum(-1), dc)
    return best.params[0]
