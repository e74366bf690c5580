"""Baseline RTN: ggml's own quantizer with no importance (METHODS 3), in the allocation's GGML types.

IQ2_XXS, IQ2_XS and IQ1_S cannot be quantized by ggml without an importance vector; they get a uniform
one, which is ggml's plain-MSE search, the closest thing to "no importance" those types have.
"""

from __future__ import annotations

import numpy as np

from omnimodel.gguf.encoders import encode
from omnimodel.gguf.types import REQUIRES_IMPORTANCE, GGMLType, parse_type

from .ggmlq import decode_cols, ggml_encode, padded_width, weighted_error
from .scales import FLOAT_TYPES, TensorQuant


def quantize_rtn(w: np.ndarray, t: GGMLType | str | int, importance: np.ndarray | None = None) -> TensorQuant:
    """``importance`` only scores the result (so methods compare on one measure); it does not steer it."""
    t = parse_type(t)
    w = np.asarray(w, np.float32)
    n = w.shape[1]
    if t in FLOAT_TYPES:
        data, method = encode(w, t), "float"
    else:
        imp = np.ones(padded_width(n, t), np.float32)[:n] if t in REQUIRES_IMPORTANCE else None
        data, method = ggml_encode(w, t, imp), "ggml-rtn"
    err = weighted_error(w, decode_cols(data, t, n), importance)
    return TensorQuant(t, data, n if t in FLOAT_TYPES else padded_width(n, t), method, {method: err})


__all__ = ["quantize_rtn"]
