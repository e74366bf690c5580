"""Importance-aware numpy encoders for GGML block types, byte-exact to ggml's layouts.

Public API::

    encode(x, ggml_type, importance=None, scales=None) -> uint8 (rows, row_bytes)
    decode(data, ggml_type, n_per_row) -> float32 (rows, n_per_row)
    fit_scales(x, ggml_type, importance=None) -> BlockScales
    quantize(x, ggml_type, importance=None, scales=None) -> Quantized   # the fields before packing

``x`` is (rows, n_per_row) with n_per_row the contiguous ggml ne[0] (the PyTorch input dimension).
``importance`` is a non-negative per-column vector (n_per_row,) or a full (rows, n_per_row) matrix; the
numpy encoders minimise sum(importance * (x - x_hat)^2) (plain MSE when it is None). IQ types go to
ggml's own quantizer through ``omnimodel._runtime``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np

from ..types import GGML_ENCODED, NUMPY_ENCODED, GGMLType, parse_type, type_info
from . import floats, ggml_backed, kquants
from .codec import BlockCodec
from .legacy import Q4_0Codec, Q8_0Codec
from .q1_0 import Q1_0Codec
from .q2_0 import Q2_0Codec
from .scales import SCALE_LAYOUTS, BlockScales, validate_scales

__all__ = ["BlockScales", "Quantized", "decode", "encode", "fit_scales", "quantize", "SCALE_LAYOUTS"]

_FLOAT_TYPES = frozenset({GGMLType.F32, GGMLType.F16, GGMLType.BF16})

_CODECS: dict[GGMLType, BlockCodec] = {
    GGMLType.Q8_0: Q8_0Codec(),
    GGMLType.Q4_0: Q4_0Codec(),
    GGMLType.Q1_0: Q1_0Codec(),
    GGMLType.Q2_0: Q2_0Codec(),
    **kquants.make_codecs(),
}

#: Elements per chunk of rows: bounds the float64 temporaries of a fit to a few tens of MB.
CHUNK_ELEMENTS = 1 << 18

# Zero-importance elements still get a sliver of weight so fully masked groups get sane, finite scales.
_IMPORTANCE_FLOOR = 1e-6


@dataclass(frozen=True)
class Quantized:
    """The fields an encoder chose, before packing: element codes (rows, n_per_row) and stored scales."""

    ggml_type: GGMLType
    codes: np.ndarray
    scales: BlockScales

    def _blocked(self) -> np.ndarray:
        rows, n = self.codes.shape
        return self.codes.reshape(rows, -1, type_info(self.ggml_type).block_size)

    def values(self) -> np.ndarray:
        """float32 (rows, n_per_row) exactly as ggml's to_float decodes the packed bytes."""
        v = _CODECS[self.ggml_type].values(self._blocked(), self.scales)
        return v.reshape(self.codes.shape)

    def to_bytes(self) -> np.ndarray:
        raw = _CODECS[self.ggml_type].pack(self._blocked(), self.scales)
        return raw.reshape(self.codes.shape[0], -1)


# ------------------------------------------------------------------------------------------------------
# input checks


def _check_x(x: object, t: GGMLType) -> np.ndarray:
    arr = np.asarray(x)
    if arr.ndim != 2:
        raise ValueError(f"x must be 2-D (rows, n_per_row), got shape {arr.shape}")
    if arr.dtype.kind != "f":
        raise ValueError(f"x must be a float array, got dtype {arr.dtype}")
    bs = type_info(t).block_size
    if arr.shape[1] % bs:
        raise ValueError(
            f"{t.name} has blocks of {bs} elements: n_per_row must be a multiple of {bs}, got {arr.shape[1]}"
        )
    if t not in _FLOAT_TYPES and not np.all(np.isfinite(arr)):
        raise ValueError(f"x has non-finite values (NaN or inf); {t.name} cannot encode them")
    return arr


def _check_importance(importance: object, shape: tuple[int, int]) -> np.ndarray | None:
    if importance is None:
        return None
    imp = np.asarray(importance)
    if imp.dtype.kind not in "fiu":
        raise ValueError(f"importance must be numeric, got dtype {imp.dtype}")
    rows, n = shape
    if imp.shape not in ((n,), (rows, n)):
        raise ValueError(f"importance must have shape ({n},) or ({rows}, {n}), got {imp.shape}")
    imp = imp.astype(np.float64)
    if not np.all(np.isfinite(imp)):
        raise ValueError("importance has non-finite values")
    if np.any(imp < 0):
        raise ValueError("importance must be non-negative")
    return imp


def _codec(t: GGMLType) -> BlockCodec:
    if t not in _CODECS:
        raise ValueError(f"{t.name} has no numpy encoder (numpy types: {sorted(x.name for x in NUMPY_ENCODED)})")
    return _CODECS[t]


def _chunks(rows: int, n: int) -> Iterator[tuple[int, int]]:
    step = max(1, CHUNK_ELEMENTS // max(n, 1))
    for r0 in range(0, rows, step):
        yield r0, min(rows, r0 + step)


def _weights(imp: np.ndarray | None, r0: int, r1: int, n: int) -> np.ndarray:
    if imp is None:
        return np.ones((r1 - r0, n))
    w = np.broadcast_to(imp if imp.ndim == 1 else imp[r0:r1], (r1 - r0, n))
    mean = w.mean(-1, keepdims=True)
    return w + _IMPORTANCE_FLOOR * np.where(mean > 0, mean, 1.0)


def _blocked(a: np.ndarray, bs: int) -> np.ndarray:
    return a.reshape(a.shape[0], -1, bs)


# ------------------------------------------------------------------------------------------------------
# public API


def fit_scales(x: object, ggml_type: GGMLType | int | str, importance: object = None) -> BlockScales:
    """The block scales ``encode`` would store for this tensor (numpy-encoded block types only)."""
    t = parse_type(ggml_type)
    if t in _FLOAT_TYPES or t in GGML_ENCODED:
        raise ValueError(f"{t.name} has no scales to fit here")
    codec = _codec(t)
    arr = _check_x(x, t)
    imp = _check_importance(importance, arr.shape)
    rows, n = arr.shape
    bs = codec.block_size
    parts = []
    for r0, r1 in _chunks(rows, n):
        xc = np.asarray(arr[r0:r1], dtype=np.float64)
        parts.append(codec.fit(_blocked(xc, bs), _blocked(_weights(imp, r0, r1, n), bs)))
    if not parts:
        return _empty_scales(t, n)
    return BlockScales.concat(parts)


def _empty_scales(t: GGMLType, n: int) -> BlockScales:
    lay = SCALE_LAYOUTS[t]
    nb = n // type_info(t).block_size
    d = np.zeros((0, nb), dtype=np.float16)
    sub = np.zeros((0, nb, lay.n_sub), dtype=np.int16) if lay.n_sub else None
    return BlockScales(t, d, d if lay.has_min else None, sub, sub if lay.has_min else None)


def quantize(
    x: object, ggml_type: GGMLType | int | str, importance: object = None, scales: BlockScales | None = None
) -> Quantized:
    """Codes and scales for a numpy-encoded block type; ``encode`` is ``quantize(...).to_bytes()``."""
    t = parse_type(ggml_type)
    codec = _codec(t)
    arr = _check_x(x, t)
    rows, n = arr.shape
    imp = _check_importance(importance, arr.shape)
    if scales is not None:
        scales = validate_scales(scales, t, rows, n)
    bs = codec.block_size
    codes = np.empty((rows, n), dtype=np.int16)
    parts = []
    for r0, r1 in _chunks(rows, n):
        xc = _blocked(np.asarray(arr[r0:r1], dtype=np.float64), bs)
        if scales is None:
            sc = codec.fit(xc, _blocked(_weights(imp, r0, r1, n), bs))
        else:
            sc = scales.row_slice(r0, r1)
        codes[r0:r1] = codec.codes(xc, sc).reshape(r1 - r0, n)
        parts.append(sc)
    all_scales = scales if scales is not None else (BlockScales.concat(parts) if parts else _empty_scales(t, n))
    return Quantized(t, codes, all_scales)


def encode(
    x: object, ggml_type: GGMLType | int | str, importance: object = None, scales: BlockScales | None = None
) -> np.ndarray:
    """Encode (rows, n_per_row) floats into ggml block bytes, uint8 (rows, row_bytes)."""
    t = parse_type(ggml_type)
    if t in _FLOAT_TYPES:
        arr = _check_x(x, t)
        _check_importance(importance, arr.shape)
        if scales is not None:
            raise ValueError(f"{t.name} has no scales; pass scales=None")
        return floats.encode_float(arr, t)
    if t in GGML_ENCODED:
        arr = _check_x(x, t)
        imp = _check_importance(importance, arr.shape)
        if scales is not None:
            raise ValueError(f"{t.name} is encoded by ggml, which chooses its own scales; pass scales=None")
        if arr.shape[0] == 0:
            return np.zeros((0, type_info(t).row_bytes(arr.shape[1])), dtype=np.uint8)
        return ggml_backed.encode_ggml(arr, t, imp)
    codec = _codec(t)
    arr = _check_x(x, t)
    rows, n = arr.shape
    imp = _check_importance(importance, arr.shape)
    if scales is not None:
        scales = validate_scales(scales, t, rows, n)
    bs = codec.block_size
    out = np.empty((rows, type_info(t).row_bytes(n)), dtype=np.uint8)
    for r0, r1 in _chunks(rows, n):
        xc = _blocked(np.asarray(arr[r0:r1], dtype=np.float64), bs)
        if scales is None:
            sc = codec.fit(xc, _blocked(_weights(imp, r0, r1, n), bs))
        else:
            sc = scales.row_slice(r0, r1)
        out[r0:r1] = codec.pack(codec.codes(xc, sc), sc).reshape(r1 - r0, -1)
    return out


def decode(data: object, ggml_type: GGMLType | int | str, n_per_row: int) -> np.ndarray:
    """Decode ggml block bytes to float32 (rows, n_per_row) with our own numpy decoders.

    IQ types are decoded by gguf-py (``gguf.quants.dequantize``), which is bit-exact against ggml.
    """
    t = parse_type(ggml_type)
    info = type_info(t)
    row_bytes = info.row_bytes(int(n_per_row))
    raw = np.asarray(data)
    if raw.dtype != np.uint8:
        raise ValueError(f"data must be uint8 bytes, got dtype {raw.dtype}")
    if raw.size % max(row_bytes, 1) or (raw.ndim == 2 and raw.shape[1] != row_bytes):
        raise ValueError(
            f"{t.name} rows of {n_per_row} elements take {row_bytes} bytes; got data of shape {raw.shape}"
        )
    raw = raw.reshape(-1, row_bytes)
    if t in _FLOAT_TYPES:
        return floats.decode_float(raw, t, int(n_per_row))
    if t in GGML_ENCODED:
        import gguf
        import gguf.quants

        values = gguf.quants.dequantize(raw, gguf.GGMLQuantizationType(int(t)))
        return np.asarray(values, dtype=np.float32).reshape(raw.shape[0], int(n_per_row))
    codec = _codec(t)
    codes, scales = codec.unpack(raw.reshape(raw.shape[0], -1, info.type_size))
    return codec.values(codes, scales).reshape(raw.shape[0], int(n_per_row))
