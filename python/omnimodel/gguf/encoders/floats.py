"""F32, F16 and BF16 rows as little-endian bytes, converted the way ggml_quantize_chunk converts them.

ggml receives float32, so wider inputs are first rounded to float32 (a float64 -> float16 cast would
round once instead of twice and could differ from ggml in the last bit). Non-finite values pass through
with ggml's semantics: F16 overflows to inf and turns every NaN into the canonical sign|0x7E00, BF16 keeps
a NaN's payload but forces it quiet by setting bit 6; decoding F16 quiets NaN payloads like ggml's
bit-twiddling fp16 -> fp32 conversion does.
"""

from __future__ import annotations

import numpy as np

from ..types import GGMLType


def fp32_to_bf16_bits(x32: np.ndarray) -> np.ndarray:
    """ggml_compute_fp32_to_bf16: round to nearest even on the upper 16 bits, NaN forced quiet."""
    u = np.ascontiguousarray(x32, dtype=np.float32).view(np.uint32).astype(np.uint64)
    is_nan = (u & 0x7FFFFFFF) > 0x7F800000
    rounded = (u + (0x7FFF + ((u >> 16) & 1))) >> 16
    quiet = (u >> 16) | 64
    return np.where(is_nan, quiet, rounded).astype(np.uint16)


def encode_float(x: np.ndarray, t: GGMLType) -> np.ndarray:
    with np.errstate(over="ignore", invalid="ignore"):
        x32 = np.ascontiguousarray(x, dtype=np.float32)
    rows = x32.shape[0]
    if t == GGMLType.F32:
        out = x32.astype("<f4")
    elif t == GGMLType.F16:
        with np.errstate(over="ignore", invalid="ignore"):
            bits = x32.astype("<f2").view("<u2")
        sign = (x32.view(np.uint32) >> 16).astype(np.uint16) & np.uint16(0x8000)
        out = np.where(np.isnan(x32), sign | np.uint16(0x7E00), bits).astype("<u2")
    elif t == GGMLType.BF16:
        out = fp32_to_bf16_bits(x32).astype("<u2")
    else:
        raise ValueError(f"{t.name} is not a float type")
    return np.ascontiguousarray(out).view(np.uint8).reshape(rows, -1)


def decode_float(data: np.ndarray, t: GGMLType, n_per_row: int) -> np.ndarray:
    rows = data.shape[0]
    raw = np.ascontiguousarray(data)
    if t == GGMLType.F32:
        return raw.view("<f4").reshape(rows, n_per_row).astype(np.float32)
    if t == GGMLType.F16:
        y = raw.view("<f2").reshape(rows, n_per_row).astype(np.float32)
        bits = y.view(np.uint32)
        return np.where(np.isnan(y), bits | np.uint32(0x00400000), bits).view(np.float32)
    if t == GGMLType.BF16:
        bits = raw.view("<u2").reshape(rows, n_per_row).astype(np.uint32) << 16
        return bits.view(np.float32)
    raise ValueError(f"{t.name} is not a float type")
