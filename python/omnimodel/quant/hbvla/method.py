"""HBVLA on one matrix: salient split, permutation, Haar-domain binarization, salient residual.

    q = quantize_matrix(W, H, hbvla())      # W (out, in) float, H (in, in) the (rectified) Hessian
    q.weight()                              # the decoded (out, in) weight the runtime computes with
    q.h_error, q.salient_idx, q.main, ...

Steps (METHODS 2, seed 000 section 3):
1. Salient candidates: the ``salient_cap`` columns with the highest w^2 / [H^-1]_jj^2 (l2 over rows).
2. How many are used: each count of ``cfg.trial_counts`` is tried on a fixed subset of rows
   (``salient_rows``), scored by the Hessian-weighted error tr(E H E^T); the best count wins.
3. Non-salient part: salient columns filled from their neighbours, columns ordered by pairing-and-
   chaining, row-wise Haar, binarized per row with the configured grouping and mean
   (``binarize.py``), optionally with GPTQ-style block error feedback (HBLLM's; see below).
4. Salient part: the residual R = W - W_hat_nonsal on the salient columns, column-wise Haar across row
   pairs, binarized row-wise (each Haar row's k values around their own mean and scale), inverse Haar,
   added (``salient.py``).

Error feedback (``error_feedback=True``): GPTQ's OBS updates, a column pair at a time (``feedback.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .binarize import BinaryPlanes, binarize
from .config import HbvlaConfig
from .feedback import binarize_with_feedback
from .haar import (
    RowLayout,
    from_coefficients,
    row_layout,
    to_coefficients,
)
from .permutation import pair_and_chain
from .salient import SalientPlanes, binarize_salient
from .saliency import damped_inverse, fill_salient, salient_candidates


@dataclass
class HbvlaMatrix:
    """One binarized matrix, in the form the GGUF layout stores (``storage.py``)."""

    shape: tuple[int, int]  # (out, in)
    perm: np.ndarray  # (in,) column order: pairs (perm[2k], perm[2k+1])
    haar: bool
    main: BinaryPlanes  # (out, padded(in)) coefficients in haar.row_layout(in, haar)
    salient_idx: np.ndarray  # (k,) sorted column indices
    salient: SalientPlanes | None
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
        return self.salient.weight()

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


def _quantize_with(w: np.ndarray, H: np.ndarray, sal: np.ndarray, cfg: HbvlaConfig) -> HbvlaMatrix:
    rows, n = w.shape
    sal = np.sort(np.asarray(sal, np.int64))
    w_fill = fill_salient(w, sal, cfg.fill_window)
    perm = pair_and_chain(w_fill, cfg.permutation) if cfg.permutation else np.arange(n)
    layout = row_layout(n, cfg.haar)
    if cfg.error_feedback:
        is_sal = np.zeros(n, bool)
        is_sal[sal] = True
        first = _binarize_main(to_coefficients(w_fill, perm, layout), layout, cfg)
        main, w_target = binarize_with_feedback(w, w_fill, is_sal, H, perm, layout, cfg, first)
    else:
        main = _binarize_main(to_coefficients(w_fill, perm, layout), layout, cfg)
        w_target = np.asarray(w, np.float64)
    q = HbvlaMatrix((rows, n), perm, cfg.haar, main, sal, None, cfg)
    if len(sal):
        resid = w_target[:, sal] - q.nonsalient_weight()[:, sal]
        q.salient = binarize_salient(resid, cfg.salient_order, cfg.salient_col_haar, cfg.mean_refine)
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


def quantize_matrix(
    w: np.ndarray, H: np.ndarray | None, cfg: HbvlaConfig, *, H_saliency: np.ndarray | None = None
) -> HbvlaMatrix:
    """Binarize ``w`` (out, in). ``H`` (in, in) is the Hessian of the error feedback and the reported
    errors (X X^T); None means the identity (no calibration: magnitude saliency). ``H_saliency`` (default
    ``H``) is the one the salient split uses, candidates and count: the paper uses its policy-aware
    rectified X S X^T for the attention projections there."""
    w = np.asarray(w, np.float64)
    if w.ndim != 2:
        raise ValueError(f"expected a matrix, got shape {w.shape}")
    rows, n = w.shape
    if cfg.haar and n % 2:
        raise ValueError(f"HBVLA's row-wise Haar needs an even input width, got {n} (use the fallback type)")
    H = np.eye(n) if H is None else np.asarray(H, np.float64)
    Hs = H if H_saliency is None else np.asarray(H_saliency, np.float64)
    for name, h in (("the Hessian", H), ("the saliency Hessian", Hs)):
        if h.shape != (n, n):
            raise ValueError(f"{name} is {h.shape}, expected ({n}, {n})")
    stats: dict = {}
    sal = np.zeros(0, np.int64)
    if cfg.salient_cap > 0:
        hinv = damped_inverse(Hs, cfg.damp)
        cand = salient_candidates(w, np.diag(hinv), cfg.salient_cap)
        k, errs = choose_salient_count(w, Hs, cand, cfg)
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
