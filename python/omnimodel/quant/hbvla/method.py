"""HBVLA on one matrix: salient split, permutation, Haar-domain binarization, salient residual.

    q = quantize_matrix(W, H, hbvla())      # W (out, in) float, H (in, in) the (rectified) Hessian
    q.weight()                              # the decoded (out, in) weight the runtime computes with
    q.h_error, q.salient_idx, q.main, ...

Steps (METHODS 2, seed 000 section 3):
1. Salient candidates: the ``salient_cap`` columns with the highest w^2 / [H^-1]_jj^2 (l2 over rows).
2. How many are used: each count of ``cfg.trial_counts`` is tried on a fixed subset of rows (``salient_rows``), scored by the Hessian-weighted error tr(E H E^T); the best count wins.
3. Non-salient part: salient columns filled from their neighbours, columns ordered by pairing-and-
   chaining, row-wise Haar, binarized per row with the configured grouping and mean
   (``binarize.py``), optionally with GPTQ-style block error feedback (HBLLM's; see below).
4. Salient part: the residual W - W_hat_nonsal on the salient columns, column-wise Haar across row pairs,
   binarized per (Haar) row with its own mean, inverse Haar, added.

Error feedback (``error_feedback=True``) processes the Haar layout one chunk (128 column pairs, i.e. one
lo and one hi Q1_0 block) at a time in the permuted order: the chunk is binarized (means fixed from a
first pass, signs and scales from the current weights), and its error is pushed onto the columns not yet
processed with the group form of the OBS update, Err = E U_bb^-1, W_rest -= Err U_b,rest with
H^-1 = U^T U, as ``quant/gptq.py`` does for GGML blocks. Salient columns take no error during the loop
(their filled value is not their target); the salient residual is then taken against their updated
values, so earlier errors are compensated there too.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .binarize import MEAN_BLOCK, BinaryPlanes, binarize, binarize_residual, fit_centred
from .config import HbvlaConfig
from .haar import (
    QK,
    RowLayout,
    col_haar,
    col_haar_inverse,
    from_coefficients,
    padded,
    row_layout,
    to_coefficients,
)
from .permutation import pair_and_chain
from .saliency import damped_inverse, fill_salient, salient_candidates


@dataclass
class HbvlaMatrix:
    """One binarized matrix, in the form the GGUF layout stores (``storage.py``)."""

    shape: tuple[int, int]  # (out, in)
    perm: np.ndarray  # (in,) column order: pairs (perm[2k], perm[2k+1])
    haar: bool
    main: BinaryPlanes  # (out, padded(in)) coefficients in haar.row_layout(in, haar)
    salient_idx: np.ndarray  # (k,) sorted column indices
    salient_col_haar: bool
    salient: BinaryPlanes | None  # (out, padded(k)): rows [0, out/2) lo, [out/2, out) hi with col Haar
    config: HbvlaConfig | None = None
    stats: dict = field(default_factory=dict)

    @property
    def layout(self) -> RowLayout:
        return row_layout(self.shape[1], self.haar)

    def nonsalient_weight(self) -> np.ndarray:
        return from_coefficients(self.main.values(), self.perm, self.layout)

    def salient_weight(self) -> np.ndarray:
        """(out, k) the salient residual's contribution on the salient columns."""
        if self.salient is None:
            return np.zeros((self.shape[0], 0))
        r = self.salient.values()[:, : len(self.salient_idx)]
        return col_haar_inverse(r) if self.salient_col_haar else r

    def weight(self) -> np.ndarray:
        """(out, in) float64: the exact values the stored bits and scales stand for."""
        w = self.nonsalient_weight()
        if self.salient is not None:
            w[:, self.salient_idx] += self.salient_weight()
        return w


def h_error(w: np.ndarray, w_hat: np.ndarray, H: np.ndarray) -> float:
    """tr((W - W_hat) H (W - W_hat)^T)."""
    d = np.asarray(w, np.float64) - np.asarray(w_hat, np.float64)
    return float(((d @ np.asarray(H, np.float64)) * d).sum())


def _segments(layout: RowLayout) -> np.ndarray:
    seg = np.full(layout.width, -1)
    seg[: layout.n_in] = layout.band
    return seg


def _binarize_main(u: np.ndarray, layout: RowLayout, cfg: HbvlaConfig) -> BinaryPlanes:
    mean = {"band": "shared", "group": "group", "none": "none"}[cfg.mean]
    return binarize(u, layout.n_in, grouping=cfg.grouping, mean=mean, segments=_segments(layout),
                    refine=cfg.mean_refine)


def _binarize_main_feedback(
    w_true: np.ndarray, w_fill: np.ndarray, is_sal: np.ndarray, H: np.ndarray, perm: np.ndarray,
    layout: RowLayout, cfg: HbvlaConfig,
) -> tuple[BinaryPlanes, np.ndarray]:
    """Chunk-wise binarization with OBS error feedback. Returns the planes and the updated true weights
    (original column order), whose salient columns the residual then targets."""
    rows, n = w_true.shape
    first = _binarize_main(to_coefficients(w_fill, perm, layout), layout, cfg)  # fixes the shared means
    Hp = np.asarray(H, np.float64)[np.ix_(perm, perm)]
    U = np.linalg.cholesky(damped_inverse(Hp, cfg.damp)).T  # H^-1 = U^T U in the permuted order
    Wp = np.asarray(w_true, np.float64)[:, perm].copy()
    fill_p = np.asarray(w_fill, np.float64)[:, perm]
    sal_p = is_sal[perm]
    width = layout.width
    signs = np.zeros((first.n_planes, rows, width), bool)
    scales = np.zeros((first.n_planes, rows, width // QK), np.float16)
    means = first.means
    seg = first.segments
    centre_all = None
    if first.mean_kind != MEAN_BLOCK and means is not None:
        centre_all = np.where(seg >= 0, means.astype(np.float64)[:, np.maximum(seg, 0)], 0.0)
    block_means = np.zeros((rows, width // QK), np.float16) if first.mean_kind == MEAN_BLOCK else None
    for p0, p1 in layout.chunks():
        # a chunk's positions [p0, p1) hold exactly the permuted columns [p0, p1), and start a block
        cur = np.where(sal_p[p0:p1], fill_p[:, p0:p1], Wp[:, p0:p1])
        sub = np.zeros((rows, n))
        sub[:, p0:p1] = cur
        b1 = padded(p1)
        u = to_coefficients(sub, np.arange(n), layout)[:, p0:b1]
        if block_means is not None:
            part = binarize(u, p1 - p0, grouping=cfg.grouping, mean="group")
            block_means[:, p0 // QK : b1 // QK] = part.means
            vals = part.values()
        else:
            centre = centre_all[:, p0:b1] if centre_all is not None else np.zeros((rows, b1 - p0))
            sg, sc = fit_centred(u, centre, p1 - p0, cfg.grouping)
            part = BinaryPlanes(sg, sc, None, np.full(b1 - p0, -1), p1 - p0, 0)
            vals = part.values() + centre
        signs[:, :, p0:b1] = part.signs
        scales[:, :, p0 // QK : b1 // QK] = part.scales
        full = np.zeros((rows, width))
        full[:, p0:p1] = vals[:, : p1 - p0]
        w_hat = from_coefficients(full, np.arange(n), layout)[:, p0:p1]
        E = np.where(sal_p[p0:p1], 0.0, Wp[:, p0:p1] - w_hat)
        if p1 < n:
            Err = np.linalg.solve(U[p0:p1, p0:p1].T, E.T).T
            Wp[:, p1:] -= Err @ U[p0:p1, p1:]
    planes = BinaryPlanes(signs, scales, block_means if block_means is not None else means, seg, layout.n_in,
                          first.mean_kind)
    w_upd = np.empty_like(Wp)
    w_upd[:, perm] = Wp
    return planes, w_upd


def _binarize_salient(r: np.ndarray, cfg: HbvlaConfig, col_haar_on: bool) -> BinaryPlanes:
    k = r.shape[1]
    c = col_haar(r) if col_haar_on else np.asarray(r, np.float64)
    u = np.zeros((c.shape[0], padded(k)))
    u[:, :k] = c
    seg = np.where(np.arange(u.shape[1]) < k, 0, -1)
    return binarize_residual(u, k, cfg.salient_order, grouping=cfg.salient_grouping, segments=seg,
                             refine=cfg.mean_refine)


def _quantize_with(w: np.ndarray, H: np.ndarray, sal: np.ndarray, cfg: HbvlaConfig) -> HbvlaMatrix:
    rows, n = w.shape
    sal = np.sort(np.asarray(sal, np.int64))
    w_fill = fill_salient(w, sal, cfg.fill_window)
    perm = pair_and_chain(w_fill, cfg.permutation) if cfg.permutation else np.arange(n)
    layout = row_layout(n, cfg.haar)
    if cfg.error_feedback:
        is_sal = np.zeros(n, bool)
        is_sal[sal] = True
        main, w_target = _binarize_main_feedback(w, w_fill, is_sal, H, perm, layout, cfg)
    else:
        main = _binarize_main(to_coefficients(w_fill, perm, layout), layout, cfg)
        w_target = np.asarray(w, np.float64)
    q = HbvlaMatrix((rows, n), perm, cfg.haar, main, sal, False, None, cfg)
    if len(sal):
        col_h = cfg.salient_col_haar and rows % 2 == 0
        resid = w_target[:, sal] - q.nonsalient_weight()[:, sal]
        q.salient = _binarize_salient(resid, cfg, col_h)
        q.salient_col_haar = col_h
    return q


def _trial_rows(rows: int, n: int, seed: int) -> np.ndarray:
    """A fixed subset of row pairs (pairs, so the column-wise Haar still applies)."""
    if rows <= n:
        return np.arange(rows)
    rng = np.random.default_rng(seed)
    pairs = np.sort(rng.choice(rows // 2, n // 2, replace=False))
    return np.stack([2 * pairs, 2 * pairs + 1], 1).ravel()


def choose_salient_count(w: np.ndarray, H: np.ndarray, candidates: np.ndarray, cfg: HbvlaConfig) -> tuple[int, dict]:
    """The number of leading candidates (from ``cfg.trial_counts``) with the least Hessian-weighted error
    on a fixed row subset. Returns it and the error of every count tried."""
    counts = cfg.trial_counts(len(candidates))
    if counts == [0]:
        return 0, {0: float("nan")}
    rows = _trial_rows(w.shape[0], cfg.salient_rows, cfg.seed)
    ws = np.asarray(w, np.float64)[rows]
    trial_cfg = cfg.with_(error_feedback=False)  # the count is a property of the split, not the feedback
    errors = {}
    for k in counts:
        q = _quantize_with(ws, H, candidates[:k], trial_cfg)
        errors[k] = h_error(ws, q.weight(), H)
    best = min(errors, key=lambda k: (errors[k], k))
    return best, errors


def quantize_matrix(w: np.ndarray, H: np.ndarray | None, cfg: HbvlaConfig) -> HbvlaMatrix:
    """Binarize ``w`` (out, in). ``H`` (in, in) is the Hessian the salient scores and errors use (X X^T, or
    the policy-aware X S X^T); None means the identity (no calibration: magnitude saliency)."""
    w = np.asarray(w, np.float64)
    if w.ndim != 2:
        raise ValueError(f"expected a matrix, got shape {w.shape}")
    rows, n = w.shape
    if cfg.haar and n % 2:
        raise ValueError(f"HBVLA's row-wise Haar needs an even input width, got {n} (use the fallback type)")
    H = np.eye(n) if H is None else np.asarray(H, np.float64)
    if H.shape != (n, n):
        raise ValueError(f"the Hessian is {H.shape}, expected ({n}, {n})")
    stats: dict = {}
    sal = np.zeros(0, np.int64)
    if cfg.salient_cap > 0:
        hinv = damped_inverse(H, cfg.damp)
        cand = salient_candidates(w, np.diag(hinv), cfg.salient_cap)
        k, errs = choose_salient_count(w, H, cand, cfg)
        sal = cand[:k]
        stats["salient_trials"] = {int(a): b for a, b in errs.items()}
    q = _quantize_with(w, H, sal, cfg)
    w_hat = q.weight()
    stats["h_error"] = h_error(w, w_hat, H)
    stats["h_error_rel"] = stats["h_error"] / max(h_error(w, np.zeros_like(w), H), 1e-300)
    stats["frob_rel"] = float(np.linalg.norm(w - w_hat) / max(np.linalg.norm(w), 1e-300))
    stats["n_salient"] = int(len(sal))
    q.stats = stats
    return q


__all__ = ["HbvlaMatrix", "choose_salient_count", "h_error", "quantize_matrix"]
