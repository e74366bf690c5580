"""The GGUF layout of one HBVLA matrix: stock Q1_0 sign planes plus small tensors, run natively.

A matrix whose PyTorch weight is ``<base>.weight`` (out x in) is stored as these tensors (shapes in
PyTorch order, ggml's ``ne`` reversed) instead of the weight:

* ``<base>.hb.hdr`` I32 [8]: version 1, in, out, haar (0/1), main mean kind (0 none, 1 per band,
  2 per block), salient count k, salient column Haar (0/1), salient mean (0/1);
* ``<base>.hb.perm`` I16 [in] (I32 when in > 32767): the column order pi, pair k = (pi[2k], pi[2k+1]);
* ``<base>.hb.p0`` .. ``p2`` Q1_0 [out, W]: 1 to 3 sign planes over the Haar-domain row, W = in rounded up
  to 128; each 128-block's fp16 ``d`` is that plane's scale there;
* ``<base>.hb.mu`` F16 [out, S]: the means, S = 2 (lo, hi band) or 1 (no Haar) for kind 1, W/128 for
  kind 2; absent for kind 0;
* ``<base>.hb.sidx`` I16 [k]: the salient columns, ascending (absent when k = 0);
* ``<base>.hb.s0``, ``s1`` Q1_0 [k, O]: the salient residual's signs, one row per salient column over its
  column-Haar coefficients (row pairs (2i, 2i+1) -> lo, hi, in ``haar.row_layout(out)`` positions),
  O = out rounded up to 128; each block's ``d`` is the column factor beta;
* ``<base>.hb.sa`` F16 [P, out]: the row factor alpha of each salient stage (P = 1 or 2);
* ``<base>.hb.smu`` F16 [out]: the salient residual's mean per Haar row.

Row r of the Haar-domain weight is ``mu[r, seg(p)] + sum_i d_i[r, p/128] * (bit_i[r, p] ? 1 : -1)``;
positions follow ``haar.row_layout`` (128-pair chunks: a chunk's lo coefficients, then its hi ones).
The runtime (cpp/src/hbvla.cpp) computes W x as: gather x by pi and form pair sums / differences (the
activation-side Haar), one ``ggml_mul_mat`` per plane (stock Q1_0 kernels), the means as an F32 matmul
of segment sums; the salient part is decoded into an F32 [out, k] matrix in the graph (get_rows on its k
Q1_0 rows, times alpha, plus the means, the column Haar undone by a gather) and multiplied with the k
gathered inputs in F32 (``salient.py`` has its math).

Why this layout (reference section 7.1): it is exact (every stored number is a Q1_0 ``d`` or an fp16
mean or factor, the decoded weight is those numbers and signs, with no requantization), uses only stock ggml
types and ops (so it runs on every backend that has Q1_0 matmuls, CPU and CUDA, with no custom op, no
host-buffer restriction and no ggml fork), and with ``block`` grouping it is as small as the information:
one sign bit per coefficient and one fp16 scale per 128 (what the method fits) -- the only waste is
zero padding of rows to 128 (11% at in = 576, 0% at 1024 and 1536). An opaque tensor with a custom CPU
op would save only that padding (and the I16/I32 rounding of indices), at the cost of a CPU-only
hand-written kernel. ``element`` grouping's membership bits are a second plane; a per-group mean a third.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from omnimodel.gguf.encoders.codec import f16_bytes, f16_from_bytes
from omnimodel.gguf.types import GGMLType

from .binarize import MEAN_BLOCK, MEAN_NONE, MEAN_SEGMENTS, BinaryPlanes
from .haar import QK, padded, row_layout
from .method import HbvlaMatrix
from .salient import SalientPlanes

VERSION = 1
HEADER_LEN = 8
MAX_PLANES = 3
MAX_SALIENT_PLANES = 2
SUFFIXES = ("hdr", "perm", "p0", "p1", "p2", "mu", "sidx", "s0", "s1", "sa", "smu")
_INFIX = ".hb."
MAX_NAME_BYTES = 63  # GGML_MAX_NAME - 1


class HbvlaFormatError(ValueError):
    """A stored HBVLA matrix is inconsistent; the message names the tensor and the problem."""


@dataclass(frozen=True)
class StoredTensor:
    name: str
    ggml_type: GGMLType
    shape: tuple[int, ...]  # PyTorch order
    data: np.ndarray  # uint8, the tensor's bytes
    role: str  # what its bits are, for the bit count: header, perm, plane, mean, salient_idx, ...

    @property
    def n_bytes(self) -> int:
        return int(self.data.nbytes)


def base_name(weight_name: str) -> str:
    """``x.y.weight`` -> ``x.y`` (the prefix the HBVLA tensors hang off)."""
    return weight_name[: -len(".weight")] if weight_name.endswith(".weight") else weight_name


def tensor_name(base: str, suffix: str) -> str:
    if suffix not in SUFFIXES:
        raise ValueError(f"unknown HBVLA tensor suffix {suffix!r}")
    name = f"{base}{_INFIX}{suffix}"
    if len(name.encode()) > MAX_NAME_BYTES:
        raise ValueError(f"HBVLA tensor name {name!r} is longer than ggml's {MAX_NAME_BYTES} bytes")
    return name


def hbvla_bases(names: Iterable[str]) -> list[str]:
    """The bases of the HBVLA matrices among tensor ``names`` (those with a header tensor)."""
    tail = _INFIX + "hdr"
    return [n[: -len(tail)] for n in names if n.endswith(tail)]


def hbvla_base_of(name: str) -> str | None:
    """The base of the HBVLA matrix a tensor belongs to, or None."""
    i = name.rfind(_INFIX)
    return name[:i] if i >= 0 and name[i + len(_INFIX) :] in SUFFIXES else None


# ------------------------------------------------------------------------------------------ planes


def pack_q1_0(signs: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """(rows, width) bool and (rows, width/128) fp16 -> Q1_0 bytes (rows, width/128 * 18)."""
    rows, width = signs.shape
    nb = width // QK
    out = np.empty((rows, nb, 18), np.uint8)
    out[..., :2] = f16_bytes(np.asarray(scales, np.float16).reshape(rows, nb))
    out[..., 2:] = np.packbits(signs.reshape(rows, nb, QK), axis=-1, bitorder="little")
    return out.reshape(rows, nb * 18)


def unpack_q1_0(raw: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    rows = raw.shape[0]
    nb = width // QK
    blocks = np.asarray(raw, np.uint8).reshape(rows, nb, 18)
    scales = f16_from_bytes(blocks[..., :2])
    bits = np.unpackbits(blocks[..., 2:], axis=-1, bitorder="little").astype(bool)
    return bits.reshape(rows, width), scales


def _index_type(n: int) -> tuple[GGMLType, str]:
    return (GGMLType.I16, "<i2") if n <= 32767 else (GGMLType.I32, "<i4")


def _raw(a: np.ndarray, dtype: str) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(a).astype(dtype)).view(np.uint8).ravel()


def _mean_code(p: BinaryPlanes, n_bands: int) -> int:
    """0 none, 1 per band (``n_bands`` segments), 2 per Q1_0 block."""
    if p.mean_kind == MEAN_NONE or p.means is None:
        return 0
    if p.mean_kind == MEAN_BLOCK:
        return 2
    if p.means.shape[1] != n_bands:
        raise ValueError(f"band means: {p.means.shape[1]} segments, expected {n_bands}")
    return 1


def encode_matrix(q: HbvlaMatrix, base: str) -> list[StoredTensor]:
    """The tensors that store ``q`` under ``base``, in the order they are written."""
    out_dim, n_in = q.shape
    k = len(q.salient_idx)
    main, sal = q.main, q.salient
    if main.width != padded(n_in) or main.rows != out_dim:
        raise ValueError(f"main planes are {main.rows}x{main.width}, expected {out_dim}x{padded(n_in)}")
    if not 1 <= main.n_planes <= MAX_PLANES:
        raise ValueError(f"{main.n_planes} main planes; the layout holds 1 to {MAX_PLANES}")
    if k and (sal is None or not 1 <= sal.order <= MAX_SALIENT_PLANES):
        raise ValueError(f"a salient part needs 1 to {MAX_SALIENT_PLANES} planes")
    if k and (sal.k != k or sal.width != padded(out_dim) or sal.n_rows != out_dim):
        raise ValueError(f"salient planes are {sal.k}x{sal.width}, expected {k}x{padded(out_dim)}")
    main_mean = _mean_code(main, row_layout(n_in, q.haar).n_bands)
    col_haar = bool(k and sal.col_haar)
    sal_mean = int(bool(k and sal.means is not None))
    hdr = np.array([VERSION, n_in, out_dim, int(q.haar), main_mean, k, int(col_haar), sal_mean], np.int32)
    it, idt = _index_type(n_in)
    t = [
        StoredTensor(tensor_name(base, "hdr"), GGMLType.I32, (HEADER_LEN,), _raw(hdr, "<i4"), "header"),
        StoredTensor(tensor_name(base, "perm"), it, (n_in,), _raw(q.perm, idt), "permutation"),
    ]
    for i in range(main.n_planes):
        role = "signs" if i == 0 else "group_bits"
        t.append(StoredTensor(tensor_name(base, f"p{i}"), GGMLType.Q1_0, (out_dim, main.width),
                              pack_q1_0(main.signs[i], main.scales[i]).ravel(), role))
    if main_mean:
        t.append(StoredTensor(tensor_name(base, "mu"), GGMLType.F16, tuple(main.means.shape),
                              _raw(main.means, "<f2"), "means"))
    if k:
        t.append(StoredTensor(tensor_name(base, "sidx"), it, (k,), _raw(q.salient_idx, idt), "salient_idx"))
        for i in range(sal.order):
            t.append(StoredTensor(tensor_name(base, f"s{i}"), GGMLType.Q1_0, (k, sal.width),
                                  pack_q1_0(sal.signs[i], sal.col_scales[i]).ravel(), "salient_signs"))
        t.append(StoredTensor(tensor_name(base, "sa"), GGMLType.F16, (sal.order, out_dim),
                              _raw(sal.row_scales, "<f2"), "salient_row_scales"))
        if sal_mean:
            t.append(StoredTensor(tensor_name(base, "smu"), GGMLType.F16, (out_dim,), _raw(sal.means, "<f2"),
                                  "salient_means"))
    return t


def write_matrix(writer, weight_name: str, q: HbvlaMatrix) -> list:
    """Add ``q``'s tensors to an open ``GGUFModelWriter`` (as raw, already-encoded bytes)."""
    base = base_name(weight_name)
    return [writer.add_encoded(s.name, s.data, s.ggml_type, s.shape) for s in encode_matrix(q, base)]


# ------------------------------------------------------------------------------------------ reading


def _fail(name: str, why: str) -> HbvlaFormatError:
    return HbvlaFormatError(f"HBVLA tensor {name!r}: {why}")


def decode_matrix(tensors: Mapping[str, tuple[GGMLType, tuple[int, ...], np.ndarray]], base: str) -> HbvlaMatrix:
    """Rebuild the matrix from ``{name: (type, shape, bytes)}``; every shape and index is checked."""

    def get(suffix: str, required: bool = True):
        name = tensor_name(base, suffix)
        if name not in tensors:
            if required:
                raise _fail(name, "is missing")
            return None
        gt, shape, data = tensors[name]
        return name, GGMLType(gt), tuple(int(s) for s in shape), np.asarray(data, np.uint8).ravel()

    name, gt, shape, data = get("hdr")
    if gt != GGMLType.I32 or shape != (HEADER_LEN,):
        raise _fail(name, f"expected I32 [{HEADER_LEN}], got {gt.name} {list(shape)}")
    version, n_in, out_dim, haar, main_mean, k, col_haar, sal_mean = (int(v) for v in data.view("<i4"))
    if version != VERSION:
        raise _fail(name, f"layout version {version}, this reader knows {VERSION}")
    if n_in <= 0 or out_dim <= 0 or haar not in (0, 1) or main_mean not in (0, 1, 2) or not 0 <= k <= n_in:
        raise _fail(name, f"inconsistent header {data.view('<i4').tolist()}")
    if (haar and n_in % 2) or (col_haar and out_dim % 2) or sal_mean not in (0, 1):
        raise _fail(name, f"inconsistent header {data.view('<i4').tolist()}")
    width = padded(n_in)
    layout = row_layout(n_in, bool(haar))

    def indices(suffix: str, n: int, limit: int) -> np.ndarray:
        name, gt, shape, data = get(suffix)
        dt = {GGMLType.I16: "<i2", GGMLType.I32: "<i4"}.get(gt)
        if dt is None or shape != (n,):
            raise _fail(name, f"expected I16/I32 [{n}], got {gt.name} {list(shape)}")
        v = data.view(dt).astype(np.int64)
        if v.min(initial=0) < 0 or v.max(initial=0) >= limit or len(np.unique(v)) != n:
            raise _fail(name, f"is not a set of distinct indices below {limit}")
        return v

    perm = indices("perm", n_in, n_in)

    def planes(prefix: str, n_max: int, rows: int, w: int) -> tuple[np.ndarray, np.ndarray]:
        signs, scales = [], []
        for i in range(n_max):
            got = get(f"{prefix}{i}", required=i == 0)
            if got is None:
                break
            name, gt, shape, data = got
            if gt != GGMLType.Q1_0 or shape != (rows, w):
                raise _fail(name, f"expected Q1_0 [{rows}, {w}], got {gt.name} {list(shape)}")
            s, d = unpack_q1_0(data.reshape(rows, -1), w)
            signs.append(s)
            scales.append(d)
        return np.stack(signs), np.stack(scales)

    def f16(suffix: str, shape_want: tuple[int, ...]) -> np.ndarray:
        name, gt, shape, data = get(suffix)
        if gt != GGMLType.F16 or shape != shape_want:
            raise _fail(name, f"expected F16 {list(shape_want)}, got {gt.name} {list(shape)}")
        return data.view("<f2").reshape(shape_want).astype(np.float16)

    def means(suffix: str, rows: int, n_seg: int) -> np.ndarray:
        return f16(suffix, (rows, n_seg))

    sg, sc = planes("p", MAX_PLANES, out_dim, width)
    seg = np.full(width, -1)
    mu = None
    if main_mean == 1:
        seg[:n_in] = layout.band
        mu = means("mu", out_dim, layout.n_bands)
    elif main_mean == 2:
        seg[:n_in] = np.arange(n_in) // QK
        mu = means("mu", out_dim, width // QK)
    kind = {0: MEAN_NONE, 1: MEAN_SEGMENTS, 2: MEAN_BLOCK}[main_mean]
    main = BinaryPlanes(sg, sc, mu, seg, n_in, kind)

    sal_idx = np.zeros(0, np.int64)
    sal = None
    if k:
        sal_idx = indices("sidx", k, n_in)
        if np.any(np.diff(sal_idx) <= 0):
            raise _fail(tensor_name(base, "sidx"), "is not ascending")
        ssg, ssc = planes("s", MAX_SALIENT_PLANES, k, padded(out_dim))
        alpha = f16("sa", (len(ssg), out_dim))
        smu = f16("smu", (out_dim,)) if sal_mean else None
        sal = SalientPlanes(ssg, ssc, alpha, smu, out_dim, bool(col_haar))
    return HbvlaMatrix((out_dim, n_in), perm, bool(haar), main, sal_idx, sal)


def read_matrix(gguf_file, weight_name: str) -> HbvlaMatrix:
    """Decode a stored HBVLA matrix from a GGUF file (path or ``omnimodel.gguf.GGUFFile``)."""
    from omnimodel.gguf.reader import GGUFFile, load_raw, read_gguf  # noqa: PLC0415

    gf = gguf_file if isinstance(gguf_file, GGUFFile) else read_gguf(os.fspath(gguf_file))
    base = base_name(weight_name)
    found = {}
    for t in gf.tensors:
        if hbvla_base_of(t.name) == base:
            found[t.name] = (t.ggml_type, t.shape, load_raw(gf, t.name))
    return decode_matrix(found, base)


def stored_tensors(q: HbvlaMatrix, weight_name: str) -> dict[str, tuple[GGMLType, tuple[int, ...], np.ndarray]]:
    """encode_matrix as the mapping decode_matrix reads (a round trip without a file)."""
    return {s.name: (s.ggml_type, s.shape, s.data) for s in encode_matrix(q, base_name(weight_name))}


__all__ = [
    "HbvlaFormatError",
    "StoredTensor",
    "base_name",
    "decode_matrix",
    "encode_matrix",
    "hbvla_base_of",
    "hbvla_bases",
    "pack_q1_0",
    "read_matrix",
    "stored_tensors",
    "tensor_name",
    "unpack_q1_0",
    "write_matrix",
]
