"""The greedy pairing-and-chaining column order (the paper's Algorithm 1).

The one-level Haar high band of a pair of columns is half their difference, so its energy is
1/4 * sum_k ||w_pi(2k) - w_pi(2k+1)||^2 (the paper's Eq. 14): pairing similar columns makes the high band
small. Pairing: take the unpaired column of largest norm, pair it with its nearest unpaired column, repeat.
Chaining: start from the first pair, then repeatedly append the remaining pair with a member nearest
the current tail, nearer member first. Distances are squared l2 (``"l2"``) or l1 (``"l1"``); the pick order
uses the matching column norm. With an odd column count the last unpaired column goes to the end.
"""

from __future__ import annotations

import numpy as np

_GRAM_LIMIT = 128 << 20  # bytes: above this the l2 distances are computed a row at a time


class _Distances:
    def __init__(self, w: np.ndarray, metric: str) -> None:
        if metric not in ("l2", "l1"):
            raise ValueError(f"metric must be 'l2' or 'l1', got {metric!r}")
        self.metric = metric
        self.w = np.ascontiguousarray(np.asarray(w, np.float32).T)  # (m, d): one row per column of W
        m = self.w.shape[0]
        if metric == "l2":
            self.sq = (self.w.astype(np.float64) ** 2).sum(1)
            self.gram = self.w @ self.w.T if m * m * 4 <= _GRAM_LIMIT else None
            self.norm = np.sqrt(self.sq)
        else:
            self.norm = np.abs(self.w).sum(1, dtype=np.float64)

    def row(self, i: int) -> np.ndarray:
        if self.metric == "l1":
            return np.abs(self.w - self.w[i]).sum(1, dtype=np.float64)
        dots = self.gram[i] if self.gram is not None else self.w @ self.w[i]
        return np.maximum(self.sq[i] + self.sq - 2.0 * dots.astype(np.float64), 0.0)


def pair_and_chain(w: np.ndarray, metric: str = "l2") -> np.ndarray:
    """Column order pi (length n_in) of the (rows, n_in) matrix ``w``: pairs (pi[2k], pi[2k+1])."""
    w = np.asarray(w)
    m = w.shape[1]
    dist = _Distances(w, metric)
    free = np.ones(m, bool)
    pairs: list[tuple[int, int]] = []
    for i in np.argsort(-dist.norm, kind="stable"):
        if not free[i]:
            continue
        free[i] = False
        if not free.any():
            free[i] = True  # no partner left: the leftover of an odd width
            break
        d = np.where(free, dist.row(int(i)), np.inf)
        j = int(np.argmin(d))
        free[j] = False
        pairs.append((int(i), j))
    leftover = np.flatnonzero(free).tolist()
    if not pairs:
        return np.array(leftover, np.int64)

    order = [pairs[0][0], pairs[0][1]]
    a = np.array([p[0] for p in pairs])
    b = np.array([p[1] for p in pairs])
    remaining = np.ones(len(pairs), bool)
    remaining[0] = False
    tail = pairs[0][1]
    for _ in range(len(pairs) - 1):
        dt = dist.row(tail)
        da, db = dt[a], dt[b]
        cost = np.where(remaining, np.minimum(da, db), np.inf)
        q = int(np.argmin(cost))
        u, v = (a[q], b[q]) if da[q] <= db[q] else (b[q], a[q])
        order += [int(u), int(v)]
        tail = int(v)
        remaining[q] = False
    return np.array(order + leftover, np.int64)


def high_band_energy(w: np.ndarray, perm: np.ndarray) -> float:
    """||W P H_hi||_F^2 = 1/4 sum_k ||w_pi(2k) - w_pi(2k+1)||^2 (Eq. 14), over the complete pairs."""
    wp = np.asarray(w, np.float64)[:, perm]
    n = wp.shape[1] // 2 * 2
    return float(0.25 * ((wp[:, 0:n:2] - wp[:, 1:n:2]) ** 2).sum())


__all__ = ["high_band_energy", "pair_and_chain"]
