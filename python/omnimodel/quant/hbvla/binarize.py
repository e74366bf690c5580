"""The binarization primitive: rows of coefficients -> sign planes with a scale per Q1_0 block, plus means.

Every row is cut into blocks of 128 positions (Q1_0's block; the last ones may hold padding). A block's
values are

    u ~ mean(position) + sum_i d_i * b_i,        b_i = +-1,  d_i one fp16 scale per plane and block

which is exactly what Q1_0 planes (``b ? +d : -d``) plus a small mean tensor store, so the runtime's
binary matmuls compute with these numbers and no others.

Groupings (METHODS 2.3):

* ``block``: one plane, ``u ~ mu + alpha * s`` with s = sign(u - mu) and alpha = mean |u - mu| over the
  block (the least-squares optimum for those signs).
* ``element``: the paper's dense/sparse split. Within a block the coefficients are split at the
  magnitude |u - mu| that minimises the squared error (exact search over every split point, from sorted
  prefix sums), giving alpha_dense and alpha_sparse. Stored as two planes: s (scale (a_d + a_s)/2) and
  s * g with g = +1 sparse / -1 dense (scale (a_s - a_d)/2), so dense values are mu +- a_d and sparse
  ones mu +- a_s; the second plane is the membership bitmap, one bit per coefficient.

Means: ``shared`` one mean per row and segment (a Haar band, or the whole row), shared by the groups,
refined by alternating with the signs and scales (each step is a least-squares optimum, so the error
does not grow); ``group`` a mean per group: per block for ``block`` grouping, and for ``element`` a third
plane g with scale (mu_s - mu_d)/2 over a per-block mean (mu_d + mu_s)/2; ``none`` no mean.

All stored numbers are fp16 and the signs are taken against the fp16 means, so the error reported is
the error of the values stored.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .haar import QK, padded

MEAN_NONE, MEAN_SEGMENTS, MEAN_BLOCK = 0, 1, 2


def fp16(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, np.float64).astype(np.float16)


@dataclass
class BinaryPlanes:
    """rows x width values (width a multiple of 128; positions >= n_valid are padding)."""

    signs: np.ndarray  # (n_planes, rows, width) bool, True = +1
    scales: np.ndarray  # (n_planes, rows, width // 128) float16: Q1_0's d per block
    means: np.ndarray | None  # (rows, n_segments) float16
    segments: np.ndarray  # (width,) segment of each position for the means; -1: padding / no mean
    n_valid: int
    mean_kind: int  # MEAN_NONE | MEAN_SEGMENTS | MEAN_BLOCK

    @property
    def rows(self) -> int:
        return self.signs.shape[1]

    @property
    def width(self) -> int:
        return self.signs.shape[2]

    @property
    def n_planes(self) -> int:
        return self.signs.shape[0]

    def values(self) -> np.ndarray:
        """(rows, width) float64: the exact value of every stored coefficient (padding included)."""
        d = np.repeat(self.scales.astype(np.float64), QK, axis=2)
        out = (np.where(self.signs, d, -d)).sum(0)
        if self.means is not None:
            seg = self.segments
            mu = np.where(seg >= 0, self.means.astype(np.float64)[:, np.maximum(seg, 0)], 0.0)
            out = out + mu
        return out


def _blocked(a: np.ndarray) -> np.ndarray:
    rows, width = a.shape
    return a.reshape(rows, width // QK, QK)


def _valid(width: int, n_valid: int) -> np.ndarray:
    return (np.arange(width) < n_valid).reshape(width // QK, QK)


def _mean_over(a: np.ndarray, mask: np.ndarray, axis: int = -1) -> np.ndarray:
    n = mask.sum(axis)
    return np.where(n > 0, np.where(mask, a, 0.0).sum(axis) / np.maximum(n, 1), 0.0)


def _block_fit(v: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Block grouping on centred values v (rows, nb, QK): signs (one plane) and fp16 alpha per block."""
    alpha = fp16(_mean_over(np.abs(v), valid))
    return (v >= 0)[None], alpha[None]


def _best_split(v: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per block: the dense/sparse split of |v| with the least squared error. Returns sparse membership
    (rows, nb, QK) bool and the two mean magnitudes (rows, nb)."""
    a = np.where(valid, np.abs(v), np.inf)
    order = np.argsort(a, axis=-1, kind="stable")
    s = np.take_along_axis(a, order, -1)
    n = valid.sum(-1)  # (nb,)
    s = np.where(np.isfinite(s), s, 0.0)
    zero = np.zeros(s.shape[:-1] + (1,))
    c1 = np.concatenate([zero, np.cumsum(s, -1)], -1)  # (rows, nb, QK + 1): sums of the k smallest
    c2 = np.concatenate([zero, np.cumsum(s * s, -1)], -1)
    k = np.arange(QK + 1)
    t1 = np.take_along_axis(c1, np.broadcast_to(n[None, :, None], c1.shape[:-1] + (1,)), -1)
    t2 = np.take_along_axis(c2, np.broadcast_to(n[None, :, None], c2.shape[:-1] + (1,)), -1)
    nk = n[None, :, None] - k
    with np.errstate(divide="ignore", invalid="ignore"):
        sse = (c2 - np.where(k > 0, c1 * c1 / k, 0.0)) + (
            (t2 - c2) - np.where(nk > 0, (t1 - c1) ** 2 / nk, 0.0)
        )
    sse = np.where(k <= n[None, :, None], sse, np.inf)
    kbest = np.argmin(sse, -1)  # dense = the kbest smallest
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.broadcast_to(k[:QK], order.shape), -1)
    sparse = (rank >= kbest[..., None]) & valid
    c1k = np.take_along_axis(c1, kbest[..., None], -1)[..., 0]
    t1k = t1[..., 0]
    nn = np.broadcast_to(n[None, :], kbest.shape)
    a_d = np.where(kbest > 0, c1k / np.maximum(kbest, 1), 0.0)
    a_s = np.where(nn > kbest, (t1k - c1k) / np.maximum(nn - kbest, 1), a_d)
    a_d = np.where(kbest > 0, a_d, a_s)
    return sparse, a_d, a_s


def _element_fit(v: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Element grouping on centred values: planes (s, s*g) and their fp16 scales."""
    sparse, a_d, a_s = _best_split(v, valid)
    s = v >= 0
    A, D = fp16(0.5 * (a_d + a_s)), fp16(0.5 * (a_s - a_d))
    return np.stack([s, s == sparse]), np.stack([A, D])


def _magnitude(signs: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """sum_i d_i b_i for blocked planes (n, rows, nb, QK) and scales (n, rows, nb)."""
    d = scales.astype(np.float64)[..., None]
    return np.where(signs, d, -d).sum(0)


def _fit_blocks(v: np.ndarray, valid: np.ndarray, grouping: str) -> tuple[np.ndarray, np.ndarray]:
    return _block_fit(v, valid) if grouping == "block" else _element_fit(v, valid)


def fit_centred(u: np.ndarray, center: np.ndarray, n_valid: int, grouping: str) -> tuple[np.ndarray, np.ndarray]:
    """Signs and scales for (rows, width) coefficients around a fixed (rows, width) centre (the stored
    means at each position). Returns signs (n, rows, width) and scales (n, rows, width // 128)."""
    rows, width = u.shape
    valid = _valid(width, n_valid)
    sg, sc = _fit_blocks(_blocked(u - center), valid, grouping)
    return sg.reshape(sg.shape[0], rows, width), sc


def _segment_means(r: np.ndarray, seg: np.ndarray, n_seg: int) -> np.ndarray:
    out = np.zeros((r.shape[0], n_seg))
    for g in range(n_seg):
        cols = seg == g
        if cols.any():
            out[:, g] = r[:, cols].mean(1)
    return out


def _spread(means: np.ndarray, seg: np.ndarray) -> np.ndarray:
    return np.where(seg >= 0, means[:, np.maximum(seg, 0)], 0.0)


def binarize(
    u: np.ndarray,
    n_valid: int,
    *,
    grouping: str = "block",
    mean: str = "shared",
    segments: np.ndarray | None = None,
    refine: int = 2,
) -> BinaryPlanes:
    """Binarize (rows, width) coefficients (width = padded(n_valid); padding ignored).

    ``mean="shared"`` needs ``segments`` (width,): the segment id of each valid position (a Haar band or
    0 for the whole row); ``"group"`` and ``"none"`` ignore it."""
    u = np.asarray(u, np.float64)
    rows, width = u.shape
    if width != padded(n_valid) or not 0 < n_valid <= width:
        raise ValueError(f"{width} positions do not hold {n_valid} values padded to a multiple of {QK}")
    valid_pos = np.arange(width) < n_valid
    if mean == "none":
        sg, sc = fit_centred(u, np.zeros_like(u), n_valid, grouping)
        return BinaryPlanes(sg, sc, None, np.full(width, -1), n_valid, MEAN_NONE)
    if mean == "group":
        return _binarize_group_means(u, n_valid, grouping)
    if mean != "shared":
        raise ValueError(f"mean must be 'shared', 'group' or 'none', got {mean!r}")
    if segments is None or np.shape(segments) != (width,):
        raise ValueError("shared means need a segment id for every position")
    seg = np.where(valid_pos, np.asarray(segments), -1)
    n_seg = int(seg.max()) + 1
    mu = _segment_means(u, seg, n_seg)
    for _ in range(refine):
        sg, sc = fit_centred(u, _spread(mu, seg), n_valid, grouping)
        mag = _magnitude(_blocked_planes(sg), sc).reshape(rows, width)
        mu = _segment_means(u - mag, seg, n_seg)  # the least-squares mean for these signs and scales
    mu16 = fp16(mu)
    sg, sc = fit_centred(u, _spread(mu16.astype(np.float64), seg), n_valid, grouping)
    return BinaryPlanes(sg, sc, mu16, seg, n_valid, MEAN_SEGMENTS)


def _blocked_planes(sg: np.ndarray) -> np.ndarray:
    n, rows, width = sg.shape
    return sg.reshape(n, rows, width // QK, QK)


def _binarize_group_means(u: np.ndarray, n_valid: int, grouping: str) -> BinaryPlanes:
    rows, width = u.shape
    nb = width // QK
    valid = _valid(width, n_valid)
    ub = _blocked(u)
    seg = np.where(np.arange(width) < n_valid, np.arange(width) // QK, -1)
    if grouping == "block":
        mu16 = fp16(_mean_over(ub, valid))  # (rows, nb)
        sg, sc = _block_fit(ub - mu16.astype(np.float64)[..., None], valid)
        return BinaryPlanes(sg.reshape(1, rows, width), sc, mu16, seg, n_valid, MEAN_BLOCK)
    # element: split around the block mean, then each group its own mean and alpha
    c = _mean_over(ub, valid)[..., None]
    sparse, _, _ = _best_split(ub - c, valid)
    dense = valid & ~sparse
    mu_d = np.where(dense.any(-1), _mean_over(ub, dense), _mean_over(ub, sparse))
    mu_s = np.where(sparse.any(-1), _mean_over(ub, sparse), mu_d)
    mbar, delta = fp16(0.5 * (mu_d + mu_s)), fp16(0.5 * (mu_s - mu_d))
    g = np.where(sparse, 1.0, -1.0)
    centre = mbar.astype(np.float64)[..., None] + delta.astype(np.float64)[..., None] * g
    v = ub - centre
    s = v >= 0
    a_d = _mean_over(np.abs(v), dense)
    a_s = np.where(sparse.any(-1), _mean_over(np.abs(v), sparse), a_d)
    a_d = np.where(dense.any(-1), a_d, a_s)
    A, D = fp16(0.5 * (a_d + a_s)), fp16(0.5 * (a_s - a_d))
    signs = np.stack([sparse, s, s == sparse]).reshape(3, rows, width)
    scales = np.stack([delta, A, D])
    assert scales.shape == (3, rows, nb)
    return BinaryPlanes(signs, scales, mbar, seg, n_valid, MEAN_BLOCK)


__all__ = [
    "MEAN_BLOCK",
    "MEAN_NONE",
    "MEAN_SEGMENTS",
    "BinaryPlanes",
    "binarize",
    "fit_centred",
    "fp16",
]
