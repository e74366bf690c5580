"""Baseline imatrix: ggml's quantizer with llama.cpp's importance vector, E[x_j^2] per input column
(``CalibStats.imatrix``), one vector shared by every row, exactly what llama-quantize passes."""

from __future__ import annotations

import numpy as np

from omnimodel.gguf.encoders import encode
from omnimodel.gguf.types import GGMLType, parse_type

from .ggmlq import decode_cols, ggml_encode, padded_width, weighted_error
from .scales import FLOAT_TYPES, TensorQuant


def quantize_imatrix(
    w: np.ndarray, t: GGMLType | str | int, imatrix: np.ndarray, importance: np.ndarray | None = None
) -> TensorQuant:
    """``importance`` (default: the imatrix itself) only scores the result."""
    t = parse_type(t)
    w = np.asarray(w, np.float32)
    n = w.shape[1]
    col = np.asarray(imatrix, np.float32).reshape(-1)
    if col.shape[0] != n:
        raise ValueError(f"imatrix has {col.shape[0]} columns, the matrix {n}")
    if t in FLOAT_TYPES:
        data, method = encode(w, t), "float"
    else:
        # a dead input column (E[x^2] = 0) still needs a sliver of weight: ggml divides by these sums
        floor = 1e-6 * (float(col.mean()) or 1.0)
        data, method = ggml_encode(w, t, col + floor), "ggml-imatrix"
    score = col if importance is None else importance
    err = weighted_error(w, decode_cols(data, t, n), score)
    return TensorQuant(t, data, n if t in FLOAT_TYPES else padded_width(n, t), method, {method: err})


__all__ = ["quantize_imatrix"]
