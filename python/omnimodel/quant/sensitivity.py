"""HSIC sensitivity per matrix (METHODS 1a, paper Eq. 2 and 5).

    HSIC(U, V) = (n-1)^-2 tr(K H L H),   RBF kernels, bandwidth by the median heuristic
    S_l = beta * HSIC(Z_l, A) - alpha * HSIC(X, Z_l)

Choices left open by the paper, made here (all options):

* a sample's token sequence becomes one vector by mean-pooling, then a fixed Gaussian projection
  (``calibrate``); HSIC only needs pairwise distances, which the projection preserves;
* ``normalized=True`` (default) uses the normalised HSIC (CKA, HSIC(U,V)/sqrt(HSIC(U,U) HSIC(V,V)), in
  [0, 1]) so the two terms share one scale and alpha = beta = 1 is a meaningful default; with
  ``normalized=False`` alpha/beta must rebalance the raw scales themselves;
* a possibly negative S_l becomes a positive weight by ``weight = exp(S_l / tau)`` (``tau`` defaults to the
  spread of S over the model), monotone in S_l and scale free; the allocator multiplies errors by it.

The estimator is the biased V-statistic on N x N Gram matrices: O(N^2 d) per matrix, trivial on a CPU for
the 50-500 samples calibration uses.
"""

from __future__ import annotations

import numpy as np

from .calibrate import CalibStats


def rbf_gram(u: np.ndarray, bandwidth: float | None = None) -> np.ndarray:
    """RBF Gram matrix of the rows of ``u`` (n, d); bandwidth = median pairwise distance by default."""
    u = np.asarray(u, dtype=np.float64).reshape(u.shape[0], -1)
    sq = (u * u).sum(1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * u @ u.T, 0.0)
    if bandwidth is None:
        off = d2[~np.eye(len(u), dtype=bool)]
        med = float(np.median(np.sqrt(off))) if off.size else 0.0
        bandwidth = med if med > 0 else 1.0
    return np.exp(-d2 / (2.0 * bandwidth * bandwidth))


def _center(k: np.ndarray) -> np.ndarray:
    return k - k.mean(0, keepdims=True) - k.mean(1, keepdims=True) + k.mean()


def hsic(K: np.ndarray, L: np.ndarray) -> float:
    """(n-1)^-2 tr(K H L H) for precomputed Gram matrices."""
    n = K.shape[0]
    if n < 2:
        raise ValueError("HSIC needs at least two samples")
    return float((_center(K) * L).sum() / (n - 1) ** 2)  # tr(KHLH) = sum(HKH * L), H idempotent


def cka(K: np.ndarray, L: np.ndarray) -> float:
    num = hsic(K, L)
    den = np.sqrt(max(hsic(K, K), 0.0) * max(hsic(L, L), 0.0))
    return float(num / den) if den > 0 else 0.0


def sensitivity_terms(stats: CalibStats, *, normalized: bool = True) -> dict[str, tuple[float, float]]:
    """The two terms of S_l per matrix, unweighted: (relevance HSIC(Z_l, A), redundancy HSIC(X, Z_l)), so a
    diagnosis can say which of them makes a matrix look (in)sensitive (benchmarks/hsic_sensitivity.py)."""
    measure = cka if normalized else hsic
    L_a = rbf_gram(stats.actions)
    grams_x = {dom: rbf_gram(x) for dom, x in stats.inputs.items()}
    out: dict[str, tuple[float, float]] = {}
    for name, z in stats.features.items():
        K_z = rbf_gram(z)
        out[name] = (measure(K_z, L_a), measure(grams_x[stats.domains[name]], K_z))
    return out


def sensitivities(
    stats: CalibStats, *, alpha: float = 1.0, beta: float = 1.0, normalized: bool = True
) -> dict[str, float]:
    """S_l per matrix (raw, may be negative)."""
    return {name: beta * rel - alpha * red
            for name, (rel, red) in sensitivity_terms(stats, normalized=normalized).items()}


def default_tau(s: dict[str, float]) -> float:
    """The weights' temperature when none is given: the spread (std) of S over the model, 1 if flat."""
    return float(np.std(list(s.values()))) or 1.0


def sensitivity_weights(s: dict[str, float], tau: float | None = None) -> dict[str, float]:
    """Positive weights exp(S / tau), normalised to mean 1 (only ratios matter to the allocator)."""
    if not s:
        return {}
    v = np.array(list(s.values()), dtype=np.float64)
    if tau is None:
        tau = default_tau(s)
    w = np.exp((v - v.max()) / tau)
    w = w / w.mean()
    return dict(zip(s.keys(), w.tolist()))


__all__ = ["cka", "default_tau", "hsic", "rbf_gram", "sensitivities", "sensitivity_terms", "sensitivity_weights"]
