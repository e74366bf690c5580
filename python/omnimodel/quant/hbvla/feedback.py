"""GPTQ-style error feedback for the Haar-domain binarization (``HbvlaConfig.error_feedback``).

HBLLM's code quantizes 128-column blocks and pushes each block's error onto the later columns. Here the
same OBS update runs at the granularity the Haar transform allows, one column pair at a time:

* the permuted columns are processed in the layout's chunks (128 pairs = one lo and one hi Q1_0 block);
  at the start of a chunk its scales (and block means) are fitted to the current, already-corrected
  weights; the shared band means stay those of a first pass over the whole row;
* then pair by pair: the pair's lo/hi coefficients take the nearest value their block's planes can
  express (every sign combination the planes allow), which fixes both columns; each column's error
  e = (w - w_hat) / U_cc is pushed onto the chunk's later columns, W[:, c+1:] -= e U[c, c+1:]
  (H^-1 = U^T U, upper triangular, in the permuted order); after the chunk the accumulated errors go to
  the remaining columns in one product (GPTQ's lazy batch).

The second column of a pair is decided together with the first, before the first one's feedback reaches
it: its own error then carries that difference forward. Salient columns are binarized from their filled
values and take no error here; their updated true values are returned so the salient residual targets
them.
"""

from __future__ import annotations

import itertools

import numpy as np

from .binarize import MEAN_BLOCK, BinaryPlanes, binarize, fit_centred
from .config import HbvlaConfig
from .haar import QK, RowLayout, padded, to_coefficients
from .saliency import damped_inverse


def _combos(n_planes: int, grouped_mean: bool) -> np.ndarray:
    """Sign combinations (n_combo, n_planes) the planes can express: all of them, except for the
    three planes of per-group means (g, s, s*g), where the third is the product of the first two."""
    if n_planes == 3 and grouped_mean:
        return np.array([(g, s, g * s) for g in (-1, 1) for s in (-1, 1)], np.float64)
    return np.array(list(itertools.product((-1, 1), repeat=n_planes)), np.float64)


def binarize_with_feedback(
    w_true: np.ndarray,
    w_fill: np.ndarray,
    is_salient: np.ndarray,
    H: np.ndarray,
    perm: np.ndarray,
    layout: RowLayout,
    cfg: HbvlaConfig,
    first: BinaryPlanes,
) -> tuple[BinaryPlanes, np.ndarray]:
    """``first`` is the plain binarization of the filled weights (its band means are kept). Returns the
    planes and the updated true weights in the original column order."""
    rows, n = w_true.shape
    Hp = np.asarray(H, np.float64)[np.ix_(perm, perm)]
    U = np.linalg.cholesky(damped_inverse(Hp, cfg.damp)).T
    Wp = np.asarray(w_true, np.float64)[:, perm].copy()
    fill = np.asarray(w_fill, np.float64)[:, perm]
    sal = np.asarray(is_salient)[perm]
    width = layout.width
    n_planes = first.n_planes
    block_mean = first.mean_kind == MEAN_BLOCK
    combos = _combos(n_planes, block_mean)
    signs = np.zeros((n_planes, rows, width), bool)
    scales = np.zeros((n_planes, rows, width // QK), np.float16)
    means = np.zeros((rows, width // QK), np.float16) if block_mean else first.means
    seg = first.segments
    centre = np.zeros((rows, width))
    if not block_mean and first.means is not None:
        centre = np.where(seg >= 0, first.means.astype(np.float64)[:, np.maximum(seg, 0)], 0.0)
    ident = np.arange(n)

    for p0, p1 in layout.chunks():
        b1 = padded(p1)
        cur = np.zeros((rows, n))
        cur[:, p0:p1] = np.where(sal[p0:p1], fill[:, p0:p1], Wp[:, p0:p1])
        u = to_coefficients(cur, ident, layout)[:, p0:b1]
        if block_mean:
            part = binarize(u, p1 - p0, grouping=cfg.grouping, mean="group")
            means[:, p0 // QK : b1 // QK] = part.means
            blk_mu = part.means.astype(np.float64)[:, np.maximum(part.segments, 0)]
            centre[:, p0:b1] = np.where(part.segments >= 0, blk_mu, 0.0)
            sc = part.scales
        else:
            _, sc = fit_centred(u, centre[:, p0:b1], p1 - p0, cfg.grouping)
        scales[:, :, p0 // QK : b1 // QK] = sc
        # values every combination takes, per row and block of the chunk: (rows, n_blocks, n_combo)
        table = np.einsum("ci,irb->rbc", combos, sc.astype(np.float64))

        def choose(pos: int, v: np.ndarray) -> np.ndarray:
            opts = centre[:, pos, None] + table[:, (pos - p0) // QK, :]
            c = np.argmin(np.abs(v[:, None] - opts), axis=1)
            signs[:, :, pos] = (combos[c] > 0).T
            return opts[np.arange(rows), c]

        E = np.zeros((rows, p1 - p0))

        def feed(col: int, w_hat: np.ndarray) -> None:
            if sal[col]:
                return
            e = (Wp[:, col] - w_hat) / U[col, col]
            E[:, col - p0] = e
            Wp[:, col + 1 : p1] -= np.outer(e, U[col, col + 1 : p1])

        if layout.haar:
            for k in range((p0 // 2), (p1 // 2)):
                c = 2 * k
                a = fill[:, c] if sal[c] else Wp[:, c]
                b = fill[:, c + 1] if sal[c + 1] else Wp[:, c + 1]
                q_lo = choose(int(layout.lo_pos[k]), 0.5 * (a + b))
                q_hi = choose(int(layout.hi_pos[k]), 0.5 * (a - b))
                feed(c, q_lo + q_hi)
                feed(c + 1, q_lo - q_hi)
        else:
            for c in range(p0, p1):
                feed(c, choose(c, fill[:, c] if sal[c] else Wp[:, c]))
        if p1 < n:
            Wp[:, p1:] -= E @ U[p0:p1, p1:]

    planes = BinaryPlanes(signs, scales, means, seg, layout.n_in, first.mean_kind)
    w_upd = np.empty_like(Wp)
    w_upd[:, perm] = Wp
    return planes, w_upd


__all__ = ["binarize_with_feedback"]
