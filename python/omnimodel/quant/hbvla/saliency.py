"""Salient columns: which input columns matter most to the layer's output under the Hessian.

Element score w_ij^2 / [H^-1]_jj^2 (the OBS saliency with H the (rectified) Hessian, METHODS 2.2),
aggregated per column by the l2 norm over rows. The highest-scoring columns are the candidates; the
method then picks how many of them to treat as salient by reconstruction error (``method.py``).

A salient column leaves the non-salient part's Haar transform a hole; it is filled with the mean of its
nearest non-salient neighbours (up to ``window`` on each side) so that its pair stays smooth, and the
salient residual later corrects it.
"""

from __future__ import annotations

import numpy as np


def damped_inverse(H: np.ndarray, damp: float = 0.01) -> np.ndarray:
    """H^-1 after GPTQ's dampening (damp * mean diag added to the diagonal); dead inputs (zero diagonal)
    get a unit diagonal so they neither break the inverse nor look salient."""
    H = np.array(H, dtype=np.float64)
    if H.ndim != 2 or H.shape[0] != H.shape[1]:
        raise ValueError(f"the Hessian must be square, got shape {H.shape}")
    dead = np.diag(H) <= 0
    H[dead, :] = 0.0
    H[:, dead] = 0.0
    H[dead, dead] = 1.0
    mean = float(np.mean(np.diag(H))) or 1.0
    H += damp * mean * np.eye(len(H))
    Hinv = np.linalg.inv(H)
    return 0.5 * (Hinv + Hinv.T)


def column_saliency(w: np.ndarray, hinv_diag: np.ndarray) -> np.ndarray:
    """(in,) score per column: || w[:, j]^2 / [H^-1]_jj^2 ||_2."""
    w = np.asarray(w, np.float64)
    hd = np.asarray(hinv_diag, np.float64)
    if hd.shape != (w.shape[1],):
        raise ValueError(f"{hd.shape[0] if hd.ndim else 0} Hessian diagonal entries for {w.shape[1]} columns")
    return np.sqrt(((w * w) ** 2).sum(0)) / (hd * hd)


def salient_candidates(w: np.ndarray, hinv_diag: np.ndarray, cap: int) -> np.ndarray:
    """The ``cap`` highest-scoring columns, best first."""
    score = column_saliency(w, hinv_diag)
    return np.argsort(-score, kind="stable")[: min(cap, w.shape[1])]


def fill_salient(w: np.ndarray, salient: np.ndarray, window: int = 3) -> np.ndarray:
    """A copy of ``w`` whose salient columns hold the mean of the nearest non-salient columns, up to
    ``window`` on each side (the nearest one further out when none is that close)."""
    w = np.asarray(w, np.float64)
    out = w.copy()
    if len(salient) == 0:
        return out
    m = w.shape[1]
    keep = np.ones(m, bool)
    keep[salient] = False
    kept = np.flatnonzero(keep)
    if len(kept) == 0:
        out[:, salient] = 0.0
        return out
    for j in np.asarray(salient):
        near = kept[np.abs(kept - j) <= window]
        if len(near) == 0:
            near = kept[[np.argmin(np.abs(kept - j))]]
        out[:, j] = w[:, near].mean(1)
    return out


__all__ = ["column_saliency", "damped_inverse", "fill_salient", "salient_candidates"]
