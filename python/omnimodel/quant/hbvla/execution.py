"""How the runtime computes W x from the stored planes, in numpy, and how far ggml's rounding can move it.

``apply(q, x)`` follows cpp/src/hbvla.cpp step by step: z = the Haar-domain activation (gather by the
permutation, pair sums and differences), one product per Q1_0 plane, the means times segment sums of z,
and the salient residual (decoded in the graph to an F32 [out, k] matrix) times the gathered salient
inputs. With ``act=None`` every step is exact (float64) and the result is x W_hat^T; with
``act=q8_0_round`` the inputs of the Q1_0 products are rounded as ggml's CPU matmul rounds them (Q1_0's
vec_dot type is Q8_0: per 32 values d = max|z| / 127 stored as fp16, q = round(z / d)).

The means and the salient part are multiplied in F32 by the runtime, so only the main plane products
see activation rounding. Per element, |z - fp16(d) q| <= d/2 + 127 |d - fp16(d)|
<= (0.5 + 127 * 2^-11) d < 0.563 max|z_block| / 127, so for output r

    |y_r(runtime) - y_r(exact)| <= sum over planes i and positions j of |d_i[r, block(j)]| * 0.563 * amax_32(z_j) / 127

plus float32 accumulation error (``rounding_bound``): about 0.44% of the block maxima, weighted by the
plane scales -- the same rounding every Q1_0 / Q4_K / Q8_0 matmul in ggml applies to its activations.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .haar import QK, activation
from .method import HbvlaMatrix

Q8_BLOCK = 32
_Q8_ERR = 0.5 + 127 * 2.0**-11  # per-element rounding error of Q8_0 in units of d = amax / 127


def q8_0_round(z: np.ndarray) -> np.ndarray:
    """ggml's quantize_row_q8_0 then dequantize, per row in blocks of 32 (rows a multiple of 32)."""
    z = np.asarray(z, np.float32)
    rows, n = z.shape
    b = z.reshape(rows, n // Q8_BLOCK, Q8_BLOCK)
    amax = np.abs(b).max(-1, keepdims=True)
    d = amax / np.float32(127)
    with np.errstate(divide="ignore"):
        inv = np.where(d > 0, np.float32(1) / d, np.float32(0)).astype(np.float32)
    q = np.rint(b * inv)
    return (d.astype(np.float16).astype(np.float32) * q).reshape(rows, n)


def _plane_products(planes, z: np.ndarray) -> np.ndarray:
    """sum_i (d_i * b_i) z for (tokens, width) activations -> (tokens, rows)."""
    y = 0.0
    for i in range(planes.n_planes):
        d = np.repeat(planes.scales[i].astype(np.float64), QK, axis=1)
        y = y + z @ np.where(planes.signs[i], d, -d).T
    return y


def _mean_products(planes, z_exact: np.ndarray) -> np.ndarray:
    if planes.means is None:
        return 0.0
    seg = planes.segments
    n_seg = planes.means.shape[1]
    sums = np.stack([z_exact[:, seg == s].sum(1) for s in range(n_seg)], 1)  # (tokens, n_seg)
    return sums @ planes.means.astype(np.float64).T


def apply(q: HbvlaMatrix, x: np.ndarray, act: Callable[[np.ndarray], np.ndarray] | None = None) -> np.ndarray:
    """(tokens, in) -> (tokens, out), the runtime's order of operations."""
    x = np.asarray(x, np.float64)
    rnd = (lambda a: a) if act is None else (lambda a: np.asarray(act(a), np.float64))
    z = activation(x, q.perm, q.layout)
    y = _plane_products(q.main, rnd(z)) + _mean_products(q.main, z)
    if q.salient is not None:
        y = y + x[:, q.salient_idx] @ q.salient_weight().T
    return y


def rounding_delta(q: HbvlaMatrix, x: np.ndarray, act: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """(tokens, in) -> (tokens, out): what rounding the plane products' input z by ``act`` adds to the
    exact x W_hat^T (``apply(q, x, act) - apply(q, x)``, computed without the exact part). The emulating
    reference adds it to an HBVLA matrix's exact output: the runtime rounds z, not x."""
    z = activation(np.asarray(x, np.float64), q.perm, q.layout)
    return _plane_products(q.main, np.asarray(act(z), np.float64) - z)


def _plane_bound(planes, z: np.ndarray) -> np.ndarray:
    """(tokens, rows): sum_i sum_j |d_i[r, blk(j)]| * err_j with err_j the a-priori Q8_0 bound."""
    tok, width = z.shape
    amax = np.abs(z).reshape(tok, width // Q8_BLOCK, Q8_BLOCK).max(-1)  # (tok, width/32)
    err_blk = (_Q8_ERR * amax / 127.0).reshape(tok, width // QK, QK // Q8_BLOCK).sum(-1) * Q8_BLOCK  # per Q1_0 block
    return sum(err_blk @ np.abs(planes.scales[i].astype(np.float64)).T for i in range(planes.n_planes))


def rounding_bound(q: HbvlaMatrix, x: np.ndarray, rel: float = 1e-5) -> np.ndarray:
    """A bound on |runtime - exact| per (token, output): the Q8_0 activation rounding of every plane
    product (above) plus ``rel`` times the sum of absolute terms for float32 accumulation."""
    x = np.asarray(x, np.float64)
    z = activation(x, q.perm, q.layout)
    b = _plane_bound(q.main, z) + rel * np.abs(z) @ np.abs(q.main.values()).T
    if q.salient is not None:
        b = b + rel * np.abs(x[:, q.salient_idx]) @ np.abs(q.salient_weight()).T
    return b


__all__ = ["apply", "q8_0_round", "rounding_bound", "rounding_delta"]
