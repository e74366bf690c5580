"""Baseline GPTQ (METHODS 3): error feedback with H = E[x x^T], in GGML block types.

GGML blocks run along the input dimension and their scales depend on the whole block, so the column
loop of GPTQ runs one block of columns at a time: the (rows, block) slice is encoded jointly by ggml's
quantizer (importance = diag(H), i.e. the imatrix), and its error is pushed onto the columns not yet
quantized with the exact group form of the OBS update,

    Err = E_b U_bb^-1,   W_rest -= Err U_b,rest        (H^-1 = U^T U, U upper triangular)

which reduces to GPTQ's per-column rule for a block of one. Within a block there is no feedback (the
block's codes are chosen together). A block's bytes are the same whether it is encoded alone or as part
of its row, so the per-block encodings concatenate into the row layout.
"""

from __future__ import annotations

import numpy as np

from omnimodel.gguf.encoders import encode
from omnimodel.gguf.types import GGMLType, parse_type, type_info

from .ggmlq import decode_cols, ggml_encode, pad_cols, padded_width, weighted_error
from .scales import FLOAT_TYPES, TensorQuant


def _upper_inverse_cholesky(H: np.ndarray, damp: float) -> np.ndarray:
    """U with H^-1 = U^T U (upper triangular), after GPTQ's dampening of the diagonal."""
    H = np.array(H, dtype=np.float64)
    d = np.diag(H).copy()
    dead = d <= 0
    H[dead, :] = 0.0
    H[:, dead] = 0.0
    H[dead, dead] = 1.0  # a dead input: its column can take any value, it never meets an activation
    H += damp * float(np.mean(np.diag(H))) * np.eye(len(H))
    Hinv = np.linalg.inv(H)
    Hinv = 0.5 * (Hinv + Hinv.T)
    return np.linalg.cholesky(Hinv).T


def quantize_gptq(
    w: np.ndarray, t: GGMLType | str | int, H: np.ndarray, importance: np.ndarray | None = None, *, damp: float = 0.01
) -> TensorQuant:
    """``importance`` only scores the result; errors['h'] is the output-error proxy tr(D H D^T)."""
    t = parse_type(t)
    w = np.asarray(w, np.float32)
    n = w.shape[1]
    if t in FLOAT_TYPES:
        data = encode(w, t)
        return TensorQuant(t, data, n, "float", {"float": weighted_error(w, decode_cols(data, t, n), importance)})
    bs = type_info(t).block_size
    width = padded_width(n, t)
    Hp = np.eye(width)
    Hp[:n, :n] = np.asarray(H, np.float64)
    U = _upper_inverse_cholesky(Hp, damp)
    col_imp = np.maximum(np.diag(Hp), 0.0)
    col_imp = (col_imp + 1e-6 * (col_imp.mean() or 1.0)).astype(np.float32)
    W = pad_cols(w.astype(np.float64), width)
    parts = []
    for j in range(0, width, bs):
        blk = W[:, j : j + bs]
        raw = ggml_encode(blk.astype(np.float32), t, col_imp[j : j + bs])
        parts.append(raw)
        E = blk - decode_cols(raw, t, bs).astype(np.float64)
        if j + bs < width:
            Err = np.linalg.solve(U[j : j + bs, j : j + bs].T, E.T).T  # Err @ U_bb = E
            W[:, j + bs :] -= Err @ U[j : j + bs, j + bs :]
    data = np.ascontiguousarray(np.concatenate(parts, axis=1))
    w_hat = decode_cols(data, t, n).astype(np.float64)
    D = w.astype(np.float64) - w_hat
    errors = {"gptq": weighted_error(w, w_hat, importance), "h": float(((D @ np.asarray(H, np.float64)) * D).sum())}
    return TensorQuant(t, data, width, "gptq", errors)


def h_error(w: np.ndarray, w_hat: np.ndarray, H: np.ndarray) -> float:
    """tr((W - W_hat) H (W - W_hat)^T): the mean squared output error over the calibration tokens."""
    D = np.asarray(w, np.float64) - np.asarray(w_hat, np.float64)
    return float(((D @ np.asarray(H, np.float64)) * D).sum())


__all__ = ["h_error", "quantize_gptq"]
