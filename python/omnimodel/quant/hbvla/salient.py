"""The salient residual: a few columns binarized row-wise in the column-Haar domain.

R = W - W_hat_nonsal on the k salient columns (out x k). Its column-wise Haar pairs rows (2i, 2i+1) into
a low and a high band (``haar.row_layout(out)`` positions p, applied to R^T). Each Haar row p is binarized
across its k salient values, as HBLLM does, with its own mean and scale; the scale is a product
alpha_p * beta_(j, block(p)) of a per-row factor and a per-column factor for every 128 Haar rows:

    V_hat[p, j] = mu_p + sum_i alpha_i[p] * beta_i[j, block(p)] * s_i[p, j]        (i < order)

``order`` 2 binarizes the first stage's residual again (BiLLM's salient treatment). With a handful of
salient columns the per-row mean and scale make the salient residual nearly exact (two values per row
are exact), which is what protects the outlier input channels.

Storage (``storage.py``): the signs as k Q1_0 rows of length padded(out) -- one row per salient column,
so k is never padded -- whose block scales ``d`` are the column factors beta; alpha (F16 [order, out])
and mu (F16 [out]). The runtime decodes this small [out, k] matrix in the graph and multiplies it with
the k gathered inputs in F32.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .binarize import fp16
from .haar import QK, RowLayout, from_coefficients, row_layout, to_coefficients


@dataclass
class SalientPlanes:
    signs: np.ndarray  # (order, k, width) bool: True = +1; width = padded(out)
    col_scales: np.ndarray  # (order, k, width // 128) float16: beta, the Q1_0 d of each block
    row_scales: np.ndarray  # (order, out) float16: alpha per Haar row
    means: np.ndarray | None  # (out,) float16: mu per Haar row
    n_rows: int  # out
    col_haar: bool

    @property
    def order(self) -> int:
        return self.signs.shape[0]

    @property
    def k(self) -> int:
        return self.signs.shape[1]

    @property
    def width(self) -> int:
        return self.signs.shape[2]

    @property
    def layout(self) -> RowLayout:
        return row_layout(self.n_rows, self.col_haar)

    def coefficients(self) -> np.ndarray:
        """(k, width) float64: the stored Haar-domain values V_hat^T (padding positions zero)."""
        d = self.n_rows
        out = np.zeros((self.k, self.width))
        for i in range(self.order):
            beta = np.repeat(self.col_scales[i].astype(np.float64), QK, axis=1)[:, :d]
            mag = self.row_scales[i].astype(np.float64)[None, :] * beta
            out[:, :d] += np.where(self.signs[i][:, :d], mag, -mag)
        if self.means is not None:
            out[:, :d] += self.means.astype(np.float64)[None, :]
        return out

    def weight(self) -> np.ndarray:
        """(out, k): the residual these bits stand for, in the original row order."""
        return from_coefficients(self.coefficients(), np.arange(self.n_rows), self.layout).T


def _rank1_scales(a: np.ndarray, n_blocks: int, iters: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """fp16 alpha (d,) and beta (k, n_blocks) minimising sum (a[p, j] - alpha_p beta_{j, blk(p)})^2 for
    a >= 0 of shape (d, k), rows p in blocks of 128: alternating least squares, then beta refitted to
    the rounded alpha before it is rounded itself."""
    d, k = a.shape
    blk = np.arange(d) // QK

    def fit_beta(alpha: np.ndarray) -> np.ndarray:
        num = np.zeros((n_blocks, k))
        den = np.zeros(n_blocks)
        np.add.at(num, blk, alpha[:, None] * a)
        np.add.at(den, blk, alpha * alpha)
        return np.where(den[None, :] > 0, num.T / np.maximum(den, 1e-300)[None, :], 1.0)

    beta = np.ones((k, n_blocks))
    alpha = a.mean(1)
    for _ in range(iters):
        bp = beta[:, blk].T  # (d, k)
        den = (bp * bp).sum(1)
        alpha = np.where(den > 0, (a * bp).sum(1) / np.maximum(den, 1e-300), 0.0)
        beta = fit_beta(alpha)
    s = float(np.abs(beta).mean()) or 1.0  # the magnitude in alpha, beta near 1
    alpha16 = fp16(alpha * s)
    return alpha16, fp16(fit_beta(alpha16.astype(np.float64)))


def _stage(c: np.ndarray, n_blocks: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One binarization of centred values c (d, k): signs (d, k), alpha, beta and the decoded values."""
    s = c >= 0
    alpha, beta = _rank1_scales(np.abs(c), n_blocks)
    mag = alpha.astype(np.float64)[:, None] * beta.astype(np.float64)[:, np.arange(len(c)) // QK].T
    return s, alpha, beta, np.where(s, mag, -mag)


def binarize_salient(r: np.ndarray, order: int = 1, col_haar: bool = True, refine: int = 2) -> SalientPlanes:
    """Binarize the (out, k) salient residual (column Haar when ``col_haar`` and out is even)."""
    r = np.asarray(r, np.float64)
    d, k = r.shape
    col_haar = col_haar and d % 2 == 0
    lay = row_layout(d, col_haar)
    v = to_coefficients(r.T, np.arange(d), lay)[:, :d].T  # (d, k): Haar rows x salient columns
    nb = lay.width // QK

    def stages(mu: np.ndarray):
        rest = v - mu[:, None]
        out = []
        for _ in range(order):
            s, alpha, beta, dec = _stage(rest, nb)
            rest = rest - dec
            out.append((s, alpha, beta))
        return out, rest

    mu = v.mean(1)
    for _ in range(refine):
        _, rest = stages(mu)
        mu = mu + rest.mean(1)  # the least-squares mean for those signs and scales
    mu16 = fp16(mu)
    fitted, _ = stages(mu16.astype(np.float64))  # signs against the mean as stored
    signs = np.zeros((order, k, lay.width), bool)
    for i, (s, _, _) in enumerate(fitted):
        signs[i, :, :d] = s.T
    return SalientPlanes(signs, np.stack([b for _, _, b in fitted]), np.stack([a for _, a, _ in fitted]), mu16, d,
                         col_haar)


__all__ = ["SalientPlanes", "binarize_salient"]
