"""Reading GGUF files without trusting them.

The whole header is parsed here, with every length and count checked against the bytes actually left in
the file before anything is allocated or sliced, so a truncated download or a corrupt file produces a
`GGUFFormatError` that says what is wrong and where, instead of a struct.error, an IndexError, a
multi-gigabyte allocation or garbage tensors. gguf-py is only used afterwards, to dequantize tensor data
whose location and size this module has already checked. It cannot read types newer than it (Q2_0), which
is one more reason not to parse headers with its GGUFReader.

Layout (GGUF v2/v3, little-endian): magic "GGUF", u32 version, u64 n_tensors, u64 n_kv; n_kv x (string key,
u32 value type, value); n_tensors x (string name, u32 n_dims, n_dims x u64 ne, u32 type, u64 offset);
padding to the alignment; the data section. Strings are u64 length + UTF-8 bytes; arrays are u32 element
type + u64 count + elements.
"""

from __future__ import annotations

import mmap
import os
import struct
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from omnimodel.errors import GGUFFormatError, OmnimodelError, TensorNotFoundError
from omnimodel.gguf import provenance
from omnimodel.gguf.provenance import KEY_PADDED_NAMES, KEY_PADDED_WIDTHS
from omnimodel.gguf.types import GGMLType, type_info
from omnimodel.gguf.values import SCALAR_FORMATS, GGUFValueType, value_type_label

GGUF_MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32
MAX_TENSOR_NAME_BYTES = 63  # GGML_MAX_NAME - 1
MAX_DIMS = 4  # GGML_MAX_DIMS
_MAX_ARRAY_DEPTH = 4  # ggml rejects nested arrays outright; gguf-py can write them, so allow a little
_INT64_MAX = 2**63 - 1

# Smallest possible encodings, used to reject counts that cannot fit in the rest of the file.
_MIN_KV_BYTES = 8 + 4 + 1  # empty key, value type, 1-byte value
_MIN_TENSOR_INFO_BYTES = 8 + 4 + 4 + 8  # empty name, n_dims = 0, type, offset
_MIN_VALUE_BYTES: dict[GGUFValueType, int] = {vt: struct.calcsize(f) for vt, f in SCALAR_FORMATS.items()}
_MIN_VALUE_BYTES[GGUFValueType.STRING] = 8
_MIN_VALUE_BYTES[GGUFValueType.ARRAY] = 4 + 8


@dataclass(frozen=True)
class TensorRecord:
    """A tensor's entry in the file. `shape` is in PyTorch order (ggml's `ne` reversed); `offset` is
    relative to the start of the data section."""

    name: str
    ggml_type: GGMLType
    shape: tuple[int, ...]
    n_elements: int
    n_bytes: int
    offset: int
    real_width: int | None = None  # zero-padded rows (omnimodel.padded.*): the real row width

    @property
    def ne(self) -> tuple[int, ...]:
        return tuple(reversed(self.shape))

    @property
    def n_weights(self) -> int:
        """Real weights: n_elements less the zero padding of a padded matrix."""
        return provenance.real_weights(self.n_elements, self.shape, self.real_width)

    @property
    def bpw(self) -> float:
        return 8.0 * self.n_bytes / self.n_weights if self.n_weights else 0.0


@dataclass
class GGUFFile:
    path: Path
    version: int
    metadata: dict[str, Any]
    tensors: list[TensorRecord]
    alignment: int
    data_offset: int
    file_size: int
    #: Short type label per key ("u32", "str", "arr[str]") for display.
    metadata_types: dict[str, str] = field(default_factory=dict)

    @property
    def architecture(self) -> str | None:
        arch = self.metadata.get("general.architecture")
        return arch if isinstance(arch, str) else None

    def tensor(self, name: str) -> TensorRecord:
        for t in self.tensors:
            if t.name == name:
                return t
        raise TensorNotFoundError(f"{self.path}: no tensor named {name!r}")


# ---------------------------------------------------------------------- parsing


class _Cursor:
    """Bounds-checked little-endian reads over the file, naming what was being read when it runs out."""

    def __init__(self, buf: mmap.mmap | bytes, path: Path) -> None:
        self.buf = buf
        self.size = len(buf)
        self.pos = 0
        self.path = path

    def fail(self, reason: str) -> GGUFFormatError:
        return GGUFFormatError(self.path, reason)

    @property
    def remaining(self) -> int:
        return self.size - self.pos

    def need(self, n: int, what: str) -> None:
        if n > self.remaining:
            raise self.fail(
                f"truncated file: {what} needs {n} bytes at offset {self.pos} but only {self.remaining} "
                f"remain (file is {self.size} bytes)"
            )

    def unpack(self, fmt: str, what: str) -> Any:
        n = struct.calcsize(fmt)
        self.need(n, what)
        (value,) = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += n
        return value

    def u32(self, what: str) -> int:
        return self.unpack("<I", what)

    def u64(self, what: str) -> int:
        return self.unpack("<Q", what)

    def raw(self, n: int, what: str) -> bytes:
        self.need(n, what)
        out = self.buf[self.pos : self.pos + n]
        self.pos += n
        return bytes(out)

    def string_bytes(self, what: str) -> bytes:
        n = self.u64(f"the length of {what}")
        if n > self.remaining:
            raise self.fail(
                f"{what} claims a length of {n} bytes at offset {self.pos - 8}, more than the "
                f"{self.remaining} bytes left in the file (truncated or corrupt)"
            )
        return self.raw(n, what)

    def check_count(self, count: int, min_each: int, what: str, at: int) -> None:
        if count * min_each > self.remaining:
            raise self.fail(
                f"{what} count {count} (at offset {at}) cannot fit in the {self.remaining} bytes left in the "
                f"file (truncated or corrupt)"
            )


def read_gguf(path: str | os.PathLike[str]) -> GGUFFile:
    """Parse and validate a GGUF file's header, metadata and tensor table (not the tensor data)."""
    p = Path(path)
    with open(p, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size < 4:
            raise GGUFFormatError(p, f"not a GGUF file: only {size} bytes long")
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            return _parse(_Cursor(mm, p))


def read_gguf_bytes(data: bytes, name: str | os.PathLike[str] = "<memory>") -> GGUFFile:
    """`read_gguf` for a file already in memory; `name` stands in for the path in messages."""
    p = Path(name)
    if len(data) < 4:
        raise GGUFFormatError(p, f"not a GGUF file: only {len(data)} bytes long")
    return _parse(_Cursor(bytes(data), p))


def _parse(cur: _Cursor) -> GGUFFile:
    magic = cur.raw(4, "the magic")
    if magic != GGUF_MAGIC:
        raise cur.fail(f"not a GGUF file: bad magic {magic!r} (expected {GGUF_MAGIC!r})")
    version = cur.u32("the version")
    if version not in SUPPORTED_VERSIONS:
        if version & 0xFFFF == 0 and (version >> 24) in SUPPORTED_VERSIONS:
            raise cur.fail("big-endian GGUF files are not supported")
        raise cur.fail(f"unsupported GGUF version {version} (this reader handles versions 2 and 3)")
    at = cur.pos
    n_tensors = cur.u64("the tensor count")
    n_kv = cur.u64("the metadata count")
    cur.check_count(n_kv, _MIN_KV_BYTES, "metadata", at + 8)
    cur.check_count(n_tensors, _MIN_TENSOR_INFO_BYTES, "tensor", at)

    metadata: dict[str, Any] = {}
    labels: dict[str, str] = {}
    raw_types: dict[str, tuple[GGUFValueType, GGUFValueType | None]] = {}
    for i in range(n_kv):
        key_bytes = cur.string_bytes(f"metadata key #{i}")
        try:
            key = key_bytes.decode("utf-8")
        except UnicodeDecodeError:
            raise cur.fail(f"metadata key #{i} is not valid UTF-8: {key_bytes[:40]!r}") from None
        if key in metadata:
            raise cur.fail(f"metadata key {key!r} appears twice")
        what = f"metadata {key!r}"
        vtype = _value_type(cur, cur.u32(f"the value type of {what}"), what)
        value, element_type = _read_value(cur, vtype, what, depth=0)
        metadata[key] = value
        labels[key] = value_type_label(vtype, element_type)
        raw_types[key] = (vtype, element_type)

    alignment = _alignment(cur, metadata, raw_types)

    tensors: list[TensorRecord] = []
    seen: set[str] = set()
    for i in range(n_tensors):
        t = _read_tensor_info(cur, i, alignment)
        if t.name in seen:
            raise cur.fail(f"tensor {t.name!r} appears twice in the tensor table")
        seen.add(t.name)
        tensors.append(t)

    data_offset = _align_up(cur.pos, alignment)
    _check_data(cur, tensors, data_offset)
    tensors = _with_padding(cur, tensors, metadata)
    return GGUFFile(
        path=cur.path,
        version=version,
        metadata=metadata,
        tensors=tensors,
        alignment=alignment,
        data_offset=data_offset,
        file_size=cur.size,
        metadata_types=labels,
    )


def _with_padding(cur: _Cursor, tensors: list[TensorRecord], metadata: dict[str, Any]) -> list[TensorRecord]:
    """Attach the real row widths omnimodel records for zero-padded matrices (checked against the table)."""
    names = metadata.get(KEY_PADDED_NAMES)
    widths = metadata.get(KEY_PADDED_WIDTHS)
    if names is None and widths is None:
        return tensors
    if not isinstance(names, list) or not isinstance(widths, list) or len(names) != len(widths):
        raise cur.fail(f"{KEY_PADDED_NAMES} and {KEY_PADDED_WIDTHS} must be arrays of the same length")
    # Element types before values: a crafted file may hold floats (NaN, inf), strings or nested arrays here.
    if not all(isinstance(n, str) for n in names):
        raise cur.fail(f"{KEY_PADDED_NAMES} must be an array of strings")
    if not all(isinstance(w, int) and not isinstance(w, bool) for w in widths):
        raise cur.fail(f"{KEY_PADDED_WIDTHS} must be an array of integers")
    real = dict(zip(names, widths))
    by_name = {t.name for t in tensors}
    for n, wdt in real.items():
        if n not in by_name:
            raise cur.fail(f"{KEY_PADDED_NAMES} names {n!r}, which is not in the tensor table")
    out = []
    for t in tensors:
        if t.name in real:
            wdt = int(real[t.name])
            if not t.shape or not 0 < wdt <= t.shape[-1]:
                raise cur.fail(f"tensor {t.name!r}: padded from {wdt} columns, but it stores {t.shape[-1:]}")
            t = replace(t, real_width=wdt)
        out.append(t)
    return out


def _value_type(cur: _Cursor, raw: int, what: str) -> GGUFValueType:
    try:
        return GGUFValueType(raw)
    except ValueError:
        raise cur.fail(f"{what} has unknown value type id {raw}") from None


def _read_value(cur: _Cursor, vtype: GGUFValueType, what: str, depth: int) -> tuple[Any, GGUFValueType | None]:
    if vtype == GGUFValueType.STRING:
        # Values are shown, not matched on, so a stray invalid byte should not make a file unreadable.
        return cur.string_bytes(what).decode("utf-8", errors="replace"), None
    if vtype != GGUFValueType.ARRAY:
        value = cur.unpack(SCALAR_FORMATS[vtype], what)
        return (bool(value) if vtype == GGUFValueType.BOOL else value), None

    if depth >= _MAX_ARRAY_DEPTH:
        raise cur.fail(f"{what} nests arrays more than {_MAX_ARRAY_DEPTH} deep")
    etype = _value_type(cur, cur.u32(f"the element type of {what}"), what)
    at = cur.pos
    count = cur.u64(f"the element count of {what}")
    cur.check_count(count, _MIN_VALUE_BYTES[etype], f"{what} element", at)
    if etype in SCALAR_FORMATS:
        # One numpy call instead of a Python loop: tokenizer score arrays have ~10^5 entries.
        fmt = SCALAR_FORMATS[etype]
        nbytes = count * struct.calcsize(fmt)
        arr = np.frombuffer(cur.raw(nbytes, what), dtype=np.dtype(fmt))
        values = arr.astype(bool).tolist() if etype == GGUFValueType.BOOL else arr.tolist()
        return values, etype
    if etype == GGUFValueType.STRING:
        return _read_strings(cur, count, what), etype
    items = [_read_value(cur, etype, f"{what}[{j}]", depth + 1)[0] for j in range(count)]
    return items, etype


def _read_strings(cur: _Cursor, count: int, what: str) -> list[str]:
    """A string array (vocabularies, merges: 10^5 entries) in one tight loop, bounds checked as
    string_bytes does; the element is named only when it is bad."""
    buf, size, pos = cur.buf, cur.size, cur.pos
    out = []
    unpack = struct.unpack_from
    for j in range(count):
        if pos + 8 > size:
            cur.pos = pos
            cur.need(8, f"the length of {what}[{j}]")
        (n,) = unpack("<Q", buf, pos)
        pos += 8
        if n > size - pos:
            cur.pos = pos
            raise cur.fail(
                f"{what}[{j}] claims a length of {n} bytes at offset {pos - 8}, more than the "
                f"{size - pos} bytes left in the file (truncated or corrupt)"
            )
        out.append(bytes(buf[pos : pos + n]).decode("utf-8", errors="replace"))
        pos += n
    cur.pos = pos
    return out


def _alignment(
    cur: _Cursor, metadata: dict[str, Any], raw_types: dict[str, tuple[GGUFValueType, GGUFValueType | None]]
) -> int:
    if "general.alignment" not in metadata:
        return DEFAULT_ALIGNMENT
    vtype, _ = raw_types["general.alignment"]
    value = metadata["general.alignment"]
    if vtype != GGUFValueType.UINT32:
        raise cur.fail(f"general.alignment must be a u32, found {value_type_label(vtype)}")
    if value == 0 or value & (value - 1):
        raise cur.fail(f"general.alignment must be a non-zero power of two, found {value}")
    return value


def _read_tensor_info(cur: _Cursor, index: int, alignment: int) -> TensorRecord:
    name_bytes = cur.string_bytes(f"the name of tensor #{index}")
    try:
        name = name_bytes.decode("utf-8")
    except UnicodeDecodeError:
        raise cur.fail(f"the name of tensor #{index} is not valid UTF-8: {name_bytes[:40]!r}") from None
    if len(name_bytes) > MAX_TENSOR_NAME_BYTES:
        raise cur.fail(
            f"tensor #{index} name {name[:80]!r} is {len(name_bytes)} bytes; ggml allows at most {MAX_TENSOR_NAME_BYTES}"
        )
    what = f"tensor {name!r}"
    n_dims = cur.u32(f"the dimension count of {what}")
    if n_dims > MAX_DIMS:
        raise cur.fail(f"{what} has {n_dims} dimensions; ggml supports at most {MAX_DIMS}")
    ne = [cur.u64(f"dimension {d} of {what}") for d in range(n_dims)]
    n_elements = 1
    for d in ne:
        n_elements *= d
        if n_elements > _INT64_MAX:
            raise cur.fail(f"{what} has absurd dimensions {ne} (more than 2^63 elements)")
    type_id = cur.u32(f"the type of {what}")
    try:
        gt = GGMLType(type_id)
    except ValueError:
        raise cur.fail(f"{what} has unknown GGML type id {type_id}") from None
    info = type_info(gt)
    ne0 = ne[0] if ne else 1
    if ne0 % info.block_size:
        raise cur.fail(
            f"{what} is {gt.name} but its rows hold {ne0} elements, not a multiple of the {info.block_size}-element block"
        )
    n_bytes = (n_elements // ne0 * info.row_bytes(ne0)) if ne0 else 0
    offset = cur.u64(f"the data offset of {what}")
    if offset % alignment:
        raise cur.fail(f"{what} data offset {offset} is not a multiple of the alignment {alignment}")
    return TensorRecord(name, gt, tuple(reversed(ne)), n_elements, n_bytes, offset)


def _check_data(cur: _Cursor, tensors: list[TensorRecord], data_offset: int) -> None:
    size = cur.size
    for t in tensors:
        start = data_offset + t.offset
        end = start + t.n_bytes
        if end > size:
            available = max(0, size - start)
            raise cur.fail(
                f"tensor {t.name!r} data runs past the end of the file: needs {t.n_bytes} bytes at offset "
                f"{start} but only {available} are available (file is {size} bytes; truncated?)"
            )
    ordered = sorted(tensors, key=lambda t: t.offset)
    for a, b in zip(ordered, ordered[1:]):
        if a.offset + a.n_bytes > b.offset:
            raise cur.fail(f"tensors {a.name!r} and {b.name!r} overlap in the data section")


def _align_up(x: int, n: int) -> int:
    return (x + n - 1) // n * n


# ---------------------------------------------------------------------- tensor data


def load_raw(file: GGUFFile | str | os.PathLike[str], name: str) -> np.ndarray:
    """A tensor's stored bytes as uint8 of shape (rows, row_bytes), rows being all but the last PyTorch dim."""
    gf = file if isinstance(file, GGUFFile) else read_gguf(file)
    t = gf.tensor(name)
    with open(gf.path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size != gf.file_size:
            raise GGUFFormatError(gf.path, f"file changed since it was read ({gf.file_size} -> {size} bytes)")
        f.seek(gf.data_offset + t.offset)
        data = f.read(t.n_bytes)
    if len(data) != t.n_bytes:
        raise GGUFFormatError(gf.path, f"tensor {name!r}: read {len(data)} of {t.n_bytes} bytes")
    n_per_row = t.shape[-1] if t.shape else 1
    rows = t.n_elements // n_per_row if n_per_row else 0
    return np.frombuffer(data, dtype=np.uint8).reshape(rows, -1 if rows else 0)


_PLAIN_DTYPES: dict[GGMLType, str] = {
    GGMLType.F32: "<f4",
    GGMLType.F16: "<f2",
    GGMLType.F64: "<f8",
    GGMLType.I8: "i1",
    GGMLType.I16: "<i2",
    GGMLType.I32: "<i4",
    GGMLType.I64: "<i8",
}


def load_tensor(file: GGUFFile | str | os.PathLike[str], name: str) -> np.ndarray:
    """A tensor dequantized to float32, in its PyTorch shape (a zero-padded matrix without its padding)."""
    gf = file if isinstance(file, GGUFFile) else read_gguf(file)
    t = gf.tensor(name)
    raw = load_raw(gf, name)
    out = _dequantize(gf, t, raw).reshape(t.shape).astype(np.float32, copy=False)
    return out if t.real_width is None else np.ascontiguousarray(out[..., : t.real_width])


def _dequantize(gf: GGUFFile, t: TensorRecord, raw: np.ndarray) -> np.ndarray:
    if t.ggml_type in _PLAIN_DTYPES:
        return raw.view(np.dtype(_PLAIN_DTYPES[t.ggml_type])).astype(np.float32)
    if t.ggml_type == GGMLType.BF16:
        return (raw.view("<u2").astype(np.uint32) << 16).view(np.float32)

    import gguf  # noqa: PLC0415  (only needed for tensor data)
    from gguf.quants import dequantize  # noqa: PLC0415

    try:
        return np.asarray(dequantize(raw, gguf.GGMLQuantizationType(int(t.ggml_type))), dtype=np.float32)
    except (ValueError, NotImplementedError):
        pass  # types gguf-py does not know or cannot dequantize (Q1_0, Q2_0): our own decoders

    from omnimodel.gguf.encoders import decode  # noqa: PLC0415

    n_per_row = t.shape[-1] if t.shape else 1
    try:
        return np.asarray(decode(raw, t.ggml_type, n_per_row), dtype=np.float32)
    except (ValueError, NotImplementedError) as e:
        raise OmnimodelError(f"{gf.path}: cannot dequantize tensor {t.name!r} ({t.ggml_type.name}): {e}") from e
