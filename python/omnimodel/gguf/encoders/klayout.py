"""Byte layouts of the K-quant super-blocks (QK_K = 256), as ggml-common.h declares them.

Codes are (rows, n_blocks, 256) in element order; scales are the BlockScales fields. Every function is the
exact inverse of its partner, and the dequantizers repeat ggml's fp32 operation order so the values match
``dequantize_row_q*_K`` bit for bit.
"""

from __future__ import annotations

import numpy as np

from ..types import GGMLType
from .codec import f16_bytes, f16_from_bytes, f32_mul
from .scales import BlockScales


def _pack_2bit(low: np.ndarray) -> np.ndarray:
    # element 128h + 32j + l sits in byte 32h + l at bit 2j
    v = low.astype(np.uint8).reshape(low.shape[:-1] + (2, 4, 32))
    out = v[..., 0, :] | (v[..., 1, :] << 2) | (v[..., 2, :] << 4) | (v[..., 3, :] << 6)
    return out.reshape(low.shape[:-1] + (64,))


def _unpack_2bit(qs: np.ndarray) -> np.ndarray:
    v = qs.reshape(qs.shape[:-1] + (2, 1, 32))
    shifts = np.array([0, 2, 4, 6], dtype=np.uint8).reshape(4, 1)
    return ((v >> shifts) & 3).reshape(qs.shape[:-1] + (256,))


def _pack_bitplane(bits: np.ndarray) -> np.ndarray:
    # element 32k + l sits in byte l at bit k (Q3_K hmask, Q5_K qh)
    v = bits.astype(np.uint8).reshape(bits.shape[:-1] + (8, 32))
    return (v << np.arange(8, dtype=np.uint8).reshape(8, 1)).sum(-2, dtype=np.uint8)


def _unpack_bitplane(b: np.ndarray) -> np.ndarray:
    v = b.reshape(b.shape[:-1] + (1, 32))
    return ((v >> np.arange(8, dtype=np.uint8).reshape(8, 1)) & 1).reshape(b.shape[:-1] + (256,))


def _pack_nibbles64(low4: np.ndarray) -> np.ndarray:
    # Q4_K/Q5_K: element 64p + 32hi + l sits in byte 32p + l, nibble hi
    v = low4.astype(np.uint8).reshape(low4.shape[:-1] + (4, 2, 32))
    return (v[..., 0, :] | (v[..., 1, :] << 4)).reshape(low4.shape[:-1] + (128,))


def _unpack_nibbles64(qs: np.ndarray) -> np.ndarray:
    v = qs.reshape(qs.shape[:-1] + (4, 1, 32))
    return ((v >> np.array([0, 4], dtype=np.uint8).reshape(2, 1)) & 15).reshape(qs.shape[:-1] + (256,))


def _pack_scales_k4(ls: np.ndarray, lm: np.ndarray) -> np.ndarray:
    """Q4_K/Q5_K 12-byte field of eight 6-bit scales and eight 6-bit mins (get_scale_min_k4's inverse)."""
    ls = ls.astype(np.uint8)
    lm = lm.astype(np.uint8)
    out = np.empty(ls.shape[:-1] + (12,), dtype=np.uint8)
    out[..., 0:4] = ls[..., 0:4] | ((ls[..., 4:8] >> 4) << 6)
    out[..., 4:8] = lm[..., 0:4] | ((lm[..., 4:8] >> 4) << 6)
    out[..., 8:12] = (ls[..., 4:8] & 15) | ((lm[..., 4:8] & 15) << 4)
    return out


def _unpack_scales_k4(b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    b = b.astype(np.int16)
    ls = np.concatenate([b[..., 0:4] & 63, (b[..., 8:12] & 15) | ((b[..., 0:4] >> 6) << 4)], axis=-1)
    lm = np.concatenate([b[..., 4:8] & 63, (b[..., 8:12] >> 4) | ((b[..., 4:8] >> 6) << 4)], axis=-1)
    return ls, lm


def _pack_scales_q3(sc: np.ndarray) -> np.ndarray:
    """Q3_K 12-byte field of sixteen 6-bit scales stored with a +32 offset."""
    u = (sc + 32).astype(np.uint8)
    out = np.empty(sc.shape[:-1] + (12,), dtype=np.uint8)
    out[..., 0:8] = (u[..., 0:8] & 15) | ((u[..., 8:16] & 15) << 4)
    hi = (u >> 4).reshape(sc.shape[:-1] + (4, 4))  # [k, i] for s = 4k + i
    out[..., 8:12] = (hi << (2 * np.arange(4, dtype=np.uint8)).reshape(4, 1)).sum(-2, dtype=np.uint8)
    return out


def _unpack_scales_q3(b: np.ndarray) -> np.ndarray:
    b = b.astype(np.int16)
    low = np.concatenate([b[..., 0:8] & 15, b[..., 0:8] >> 4], axis=-1)
    hi = (b[..., None, 8:12] >> (2 * np.arange(4)).reshape(4, 1)) & 3  # [k, i] -> s = 4k + i
    return (low | (hi.reshape(b.shape[:-1] + (16,)) << 4)) - 32


def _sub_broadcast(v: np.ndarray, sublen: int) -> np.ndarray:
    return np.repeat(v, sublen, axis=-1)


def pack(t: GGMLType, codes: np.ndarray, s: BlockScales) -> np.ndarray:
    lead = codes.shape[:-1]
    if t == GGMLType.Q2_K:
        out = np.empty(lead + (84,), dtype=np.uint8)
        out[..., 0:16] = s.sc.astype(np.uint8) | (s.m.astype(np.uint8) << 4)
        out[..., 16:80] = _pack_2bit(codes)
        out[..., 80:82] = f16_bytes(s.d)
        out[..., 82:84] = f16_bytes(s.dmin)
    elif t == GGMLType.Q3_K:
        u = codes + 4
        out = np.empty(lead + (110,), dtype=np.uint8)
        out[..., 0:32] = _pack_bitplane(u >> 2)
        out[..., 32:96] = _pack_2bit(u & 3)
        out[..., 96:108] = _pack_scales_q3(s.sc)
        out[..., 108:110] = f16_bytes(s.d)
    elif t == GGMLType.Q4_K:
        out = np.empty(lead + (144,), dtype=np.uint8)
        out[..., 0:2] = f16_bytes(s.d)
        out[..., 2:4] = f16_bytes(s.dmin)
        out[..., 4:16] = _pack_scales_k4(s.sc, s.m)
        out[..., 16:144] = _pack_nibbles64(codes)
    elif t == GGMLType.Q5_K:
        out = np.empty(lead + (176,), dtype=np.uint8)
        out[..., 0:2] = f16_bytes(s.d)
        out[..., 2:4] = f16_bytes(s.dmin)
        out[..., 4:16] = _pack_scales_k4(s.sc, s.m)
        out[..., 16:48] = _pack_bitplane(codes >> 4)
        out[..., 48:176] = _pack_nibbles64(codes & 15)
    elif t == GGMLType.Q6_K:
        u = (codes + 32).astype(np.uint8).reshape(lead + (2, 4, 32))  # [h, j, l] for e = 128h + 32j + l
        nib, hi2 = u & 15, u >> 4
        out = np.empty(lead + (210,), dtype=np.uint8)
        out[..., 0:128] = (nib[..., 0:2, :] | (nib[..., 2:4, :] << 4)).reshape(lead + (128,))
        qh = hi2[..., 0, :] | (hi2[..., 1, :] << 2) | (hi2[..., 2, :] << 4) | (hi2[..., 3, :] << 6)
        out[..., 128:192] = qh.reshape(lead + (64,))
        out[..., 192:208] = s.sc.astype(np.int8).view(np.uint8)
        out[..., 208:210] = f16_bytes(s.d)
    else:
        raise ValueError(f"{t.name} is not a K-quant")
    return out


def unpack(t: GGMLType, raw: np.ndarray) -> tuple[np.ndarray, BlockScales]:
    lead = raw.shape[:-1]
    if t == GGMLType.Q2_K:
        sb = raw[..., 0:16].astype(np.int16)
        codes = _unpack_2bit(raw[..., 16:80]).astype(np.int16)
        s = BlockScales(t, f16_from_bytes(raw[..., 80:82]), f16_from_bytes(raw[..., 82:84]), sb & 15, sb >> 4)
    elif t == GGMLType.Q3_K:
        high = _unpack_bitplane(raw[..., 0:32]).astype(np.int16)
        low = _unpack_2bit(raw[..., 32:96]).astype(np.int16)
        codes = low + 4 * high - 4
        s = BlockScales(t, f16_from_bytes(raw[..., 108:110]), sc=_unpack_scales_q3(raw[..., 96:108]))
    elif t in (GGMLType.Q4_K, GGMLType.Q5_K):
        ls, lm = _unpack_scales_k4(raw[..., 4:16])
        if t == GGMLType.Q4_K:
            codes = _unpack_nibbles64(raw[..., 16:144]).astype(np.int16)
        else:
            codes = _unpack_nibbles64(raw[..., 48:176]).astype(np.int16)
            codes |= _unpack_bitplane(raw[..., 16:48]).astype(np.int16) << 4
        s = BlockScales(t, f16_from_bytes(raw[..., 0:2]), f16_from_bytes(raw[..., 2:4]), ls, lm)
    elif t == GGMLType.Q6_K:
        ql = raw[..., 0:128].reshape(lead + (2, 2, 32))  # [h, j%2, l]
        nib = np.concatenate([ql & 15, ql >> 4], axis=-2)  # [h, j, l]
        qh = raw[..., 128:192].reshape(lead + (2, 1, 32))
        hi2 = (qh >> (2 * np.arange(4, dtype=np.uint8)).reshape(4, 1)) & 3
        codes = (nib.astype(np.int16) | (hi2.astype(np.int16) << 4)).reshape(lead + (256,)) - 32
        sc = np.ascontiguousarray(raw[..., 192:208]).view(np.int8).astype(np.int16)
        s = BlockScales(t, f16_from_bytes(raw[..., 208:210]), sc=sc)
    else:
        raise ValueError(f"{t.name} is not a K-quant")
    return codes, s


def sub_scales(t: GGMLType, s: BlockScales) -> tuple[np.ndarray, np.ndarray | None]:
    """Decoded fp32 sub-block scale fp32(d*sc) and offset fp32(dmin*m), shaped (rows, n_blocks, n_sub)."""
    S = f32_mul(s.d.astype(np.float32)[..., None], s.sc.astype(np.float32))
    M = None if s.dmin is None else f32_mul(s.dmin.astype(np.float32)[..., None], s.m.astype(np.float32))
    return S, M


def values(t: GGMLType, codes: np.ndarray, s: BlockScales) -> np.ndarray:
    S, M = sub_scales(t, s)
    sublen = 256 // S.shape[-1]
    q = codes.astype(np.float32)
    y = _sub_broadcast(S, sublen) * q
    if M is not None:
        y = y - _sub_broadcast(M, sublen)
    return y.astype(np.float32, copy=False)
