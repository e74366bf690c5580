"""One-level Haar transforms and the coefficient layout the stored planes use.

Row-wise (non-salient part). The columns are first put in the permutation's order pi; pair k is the
columns (pi[2k], pi[2k+1]), and with the paper's kernels [1/2, 1/2] and [1/2, -1/2]

    lo_k = (w[pi[2k]] + w[pi[2k+1]]) / 2,   hi_k = (w[pi[2k]] - w[pi[2k+1]]) / 2
    w[pi[2k]] = lo_k + hi_k,                w[pi[2k+1]] = lo_k - hi_k

so W x = sum_k lo_k (x[pi[2k]] + x[pi[2k+1]]) + hi_k (x[pi[2k]] - x[pi[2k+1]]): the transform moves onto
the activation as a gather and adds/subtracts (``activation``), and the binary matmul runs on it.

Coefficient positions. Pairs are taken in chunks of ``CHUNK`` = 128; chunk c (r pairs) occupies positions
[2*128*c, 2*128*c + 2r): its r low-band coefficients, then its r high-band ones. A full chunk is thus one
Q1_0 block of lo and one of hi, so the blocks a scale is fitted on never mix bands except in the last,
partial chunk, and error feedback can process a chunk at a time. Rows are zero-padded to a multiple of
128 (Q1_0's block); a padding position multiplies a zero activation.

Without the Haar transform position p simply holds column pi[p].

Column-wise (salient residual): rows (2i, 2i+1) pair up; low-band row i is their half-sum and goes to
row i, the high-band row to row d/2 + i. The output side undoes it: y[2i] = a_i + b_i, y[2i+1] = a_i - b_i.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

QK = 128  # Q1_0's block: the unit of a stored scale
CHUNK = 128  # pairs per chunk of the interleaved layout


def padded(n: int) -> int:
    return -(-n // QK) * QK


@dataclass(frozen=True)
class RowLayout:
    """Where each coefficient of a row lives. For position p < n_in: ``first[p]`` and ``second[p]`` index
    the permuted column order (second = -1 without Haar), ``sign[p]`` is +1 (lo) or -1 (hi), ``band[p]``
    0 (lo, or the only band) or 1 (hi). Positions n_in..width-1 are padding."""

    n_in: int
    haar: bool
    first: np.ndarray
    second: np.ndarray
    sign: np.ndarray
    band: np.ndarray
    lo_pos: np.ndarray  # Haar only: position of pair k's lo / hi coefficient
    hi_pos: np.ndarray

    @property
    def width(self) -> int:
        return padded(self.n_in)

    @property
    def n_bands(self) -> int:
        return 2 if self.haar else 1

    def chunks(self) -> list[tuple[int, int]]:
        """Position ranges [start, stop) that error feedback processes one at a time (block-aligned)."""
        if not self.haar:
            return [(s, min(s + QK, self.n_in)) for s in range(0, self.n_in, QK)]
        n_pairs = self.n_in // 2
        return [(2 * c, 2 * min(c + CHUNK, n_pairs)) for c in range(0, n_pairs, CHUNK)]


def row_layout(n_in: int, haar: bool) -> RowLayout:
    if haar and n_in % 2:
        raise ValueError(f"the row-wise Haar transform pairs columns: {n_in} columns is odd")
    if not haar:
        p = np.arange(n_in)
        none = np.zeros(0, np.int64)
        return RowLayout(n_in, False, p, np.full(n_in, -1), np.ones(n_in, np.int8), np.zeros(n_in, np.int8), none, none)
    first = np.empty(n_in, np.int64)
    second = np.empty(n_in, np.int64)
    sign = np.empty(n_in, np.int8)
    band = np.empty(n_in, np.int8)
    n_pairs = n_in // 2
    lo_pos = np.empty(n_pairs, np.int64)
    hi_pos = np.empty(n_pairs, np.int64)
    for c0 in range(0, n_pairs, CHUNK):
        r = min(CHUNK, n_pairs - c0)
        k = np.arange(c0, c0 + r)
        lo = 2 * c0 + np.arange(r)
        hi = lo + r
        for pos, s, b in ((lo, 1, 0), (hi, -1, 1)):
            first[pos], second[pos], sign[pos], band[pos] = 2 * k, 2 * k + 1, s, b
        lo_pos[k], hi_pos[k] = lo, hi
    return RowLayout(n_in, True, first, second, sign, band, lo_pos, hi_pos)


def to_coefficients(w: np.ndarray, perm: np.ndarray, layout: RowLayout) -> np.ndarray:
    """(rows, n_in) weights -> (rows, width) coefficients in the layout (padding zero)."""
    wp = np.asarray(w, np.float64)[:, perm]
    out = np.zeros((wp.shape[0], layout.width))
    if layout.haar:
        a, b = wp[:, layout.first], wp[:, layout.second]
        out[:, : layout.n_in] = 0.5 * (a + layout.sign * b)
    else:
        out[:, : layout.n_in] = wp
    return out


def from_coefficients(u: np.ndarray, perm: np.ndarray, layout: RowLayout) -> np.ndarray:
    """Inverse of to_coefficients: (rows, width) -> (rows, n_in) weights in the original column order."""
    u = np.asarray(u, np.float64)[:, : layout.n_in]
    wp = np.zeros_like(u)
    if layout.haar:
        lo, hi = u[:, layout.lo_pos], u[:, layout.hi_pos]
        wp[:, 0::2] = lo + hi
        wp[:, 1::2] = lo - hi
    else:
        wp = u
    out = np.empty_like(wp)
    out[:, perm] = wp
    return out


def activation(x: np.ndarray, perm: np.ndarray, layout: RowLayout) -> np.ndarray:
    """(tokens, n_in) activations -> (tokens, width) in the layout, so that W x = U z (the runtime's gather
    and adds/subtracts)."""
    xp = np.asarray(x, np.float64)[:, perm]
    z = np.zeros((xp.shape[0], layout.width))
    if layout.haar:
        z[:, : layout.n_in] = xp[:, layout.first] + layout.sign * xp[:, layout.second]
    else:
        z[:, : layout.n_in] = xp
    return z


def col_haar(r: np.ndarray) -> np.ndarray:
    """(d, k) -> (d, k): rows [0, d/2) the low band of row pairs, [d/2, d) the high band."""
    r = np.asarray(r, np.float64)
    if r.shape[0] % 2:
        raise ValueError(f"the column-wise Haar transform pairs rows: {r.shape[0]} rows is odd")
    a, b = r[0::2], r[1::2]
    return np.concatenate([0.5 * (a + b), 0.5 * (a - b)], axis=0)


def col_haar_inverse(c: np.ndarray) -> np.ndarray:
    c = np.asarray(c, np.float64)
    h = c.shape[0] // 2
    out = np.empty_like(c)
    out[0::2] = c[:h] + c[h:]
    out[1::2] = c[:h] - c[h:]
    return out


__all__ = [
    "CHUNK",
    "QK",
    "RowLayout",
    "activation",
    "col_haar",
    "col_haar_inverse",
    "from_coefficients",
    "padded",
    "row_layout",
    "to_coefficients",
]
