"""ggml's own quantizer on whole matrices, with per-column or per-element importance and zero padding.

ggml_quantize_chunk takes one importance vector per call, shared by the call's rows; a per-element
importance (rows, in) is honoured by calling it one row at a time with that row's vector (METHODS 1d).
Rows whose width is not a multiple of the block size are zero-padded to the next multiple (the padded
columns carry zero importance); decoding drops the padding again.
"""

from __future__ import annotations

import numpy as np

from omnimodel.gguf.encoders import decode
from omnimodel.gguf.types import GGMLType, parse_type, type_info

_ROWS_PER_CALL = 256


def padded_width(n_in: int, t: GGMLType | str | int) -> int:
    bs = type_info(t).block_size
    return -(-n_in // bs) * bs


def fits(n_in: int, t: GGMLType | str | int) -> bool:
    return n_in % type_info(t).block_size == 0


def pad_cols(a: np.ndarray, width: int) -> np.ndarray:
    a = np.asarray(a)
    if a.shape[-1] == width:
        return a
    pad = [(0, 0)] * (a.ndim - 1) + [(0, width - a.shape[-1])]
    return np.pad(a, pad)


def ggml_encode(w: np.ndarray, t: GGMLType | str | int, importance: np.ndarray | None = None) -> np.ndarray:
    """(rows, in) float -> uint8 (rows, row_bytes) by ggml's quantizer; pads to the block size."""
    from omnimodel import _runtime

    t = parse_type(t)
    rows, n = w.shape
    width = padded_width(n, t)
    x = np.ascontiguousarray(pad_cols(np.asarray(w, dtype=np.float32), width))
    imp = None if importance is None else np.ascontiguousarray(pad_cols(np.asarray(importance, np.float32), width))
    parts = []
    if imp is not None and imp.ndim == 2:
        for r in range(rows):
            parts.append(_runtime.ggml_quantize(int(t), x[r : r + 1], imp[r]))
    else:
        for r0 in range(0, rows, _ROWS_PER_CALL):
            parts.append(_runtime.ggml_quantize(int(t), x[r0 : r0 + _ROWS_PER_CALL], imp))
    return np.concatenate(parts, axis=0)


def decode_cols(raw: np.ndarray, t: GGMLType | str | int, n_in: int) -> np.ndarray:
    """Decode (possibly padded) block bytes and drop the padding: float32 (rows, n_in)."""
    return decode(raw, t, padded_width(n_in, t))[:, :n_in]


def weighted_error(w: np.ndarray, w_hat: np.ndarray, importance: np.ndarray | None) -> float:
    """sum importance * (w - w_hat)^2 (importance (in,), (rows, in) or None for plain squared error)."""
    d = np.asarray(w, np.float64) - np.asarray(w_hat, np.float64)
    d2 = d * d
    return float(d2.sum() if importance is None else (np.broadcast_to(importance, d2.shape) * d2).sum())


__all__ = ["decode_cols", "fits", "ggml_encode", "pad_cols", "padded_width", "weighted_error"]
