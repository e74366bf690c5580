"""Writing a model to a GGUF file, one tensor at a time, atomically.

GGUF puts every tensor's info (and so its offset) in the header, before the data. Two writers share the
metadata, provenance and atomic-replace logic:

* ``GGUFStreamWriter`` (what the exporters use): every tensor is *declared* first (name, GGML type,
  shape; its byte size follows from the type, so all offsets are known), then the header is written and
  each tensor's data goes straight into the output file in declaration order. Nothing is spooled or
  copied, and a caller can produce each tensor just before it is written (a quantizer working one
  matrix at a time) and drop it right after.
* ``GGUFModelWriter``: tensors are added with their data, in any number, before the header is known;
  each is encoded at once and appended to a spool file laid out as the data section, which ``finish()``
  copies after the header. Convenient for small files and tools; it needs the data section twice on disk.

Both write into a temporary file next to the destination and ``os.replace`` it onto the destination only
when complete. Anything that fails removes the temporaries, so a crash never leaves a half-written model
where a good one is expected.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Self

import gguf
import numpy as np

import omnimodel
from omnimodel.errors import GGUFWriteError
from omnimodel.gguf import provenance
from omnimodel.gguf.types import GGMLType, parse_type, type_info
from omnimodel.gguf.values import GGUFValueType, TypedValue, typed_value

#: GGML_MAX_NAME is 64 including the terminating NUL.
MAX_TENSOR_NAME_BYTES = 63
#: GGML_MAX_DIMS.
MAX_DIMS = 4
DEFAULT_ALIGNMENT = gguf.GGUF_DEFAULT_ALIGNMENT

_KEY_ARCHITECTURE = "general.architecture"
_KEY_ALIGNMENT = "general.alignment"
_KEY_FILE_TYPE = "general.file_type"
_KEY_QUANT_VERSION = "general.quantization_version"

#: Keys the writer derives itself; setting them by hand would let the file contradict its own tensors.
RESERVED_KEYS: frozenset[str] = frozenset(
    {_KEY_ARCHITECTURE, _KEY_ALIGNMENT, _KEY_FILE_TYPE, _KEY_QUANT_VERSION} | provenance.PROVENANCE_KEYS
)

# With `raw_dtype` set, gguf-py reinterprets a uint8 shape as bytes per row; any other dtype tells it the
# shape we pass is already in elements. That also lets us store types gguf-py has no enum member for (Q2_0).
_ELEMENT_SHAPE_DTYPE = np.dtype(np.float32)


@dataclass(frozen=True)
class WrittenTensor:
    """One tensor as stored: `shape` is in PyTorch order, ggml's `ne` is its reverse."""

    name: str
    ggml_type: GGMLType
    shape: tuple[int, ...]
    n_elements: int
    n_bytes: int
    offset: int  # from the start of the data section
    real_width: int | None = None  # rows stored zero-padded: the real row width (shape[-1] is the stored one)

    @property
    def n_weights(self) -> int:
        """Real weights: n_elements less the zero padding of a padded matrix."""
        return provenance.real_weights(self.n_elements, self.shape, self.real_width)

    @property
    def bpw(self) -> float:
        return 8.0 * self.n_bytes / self.n_weights if self.n_weights else 0.0


class _GGUFWriterBase:
    """Metadata, provenance, tensor records and the atomic write shared by the two writers."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        arch: str,
        *,
        alignment: int = DEFAULT_ALIGNMENT,
        method: str = "none",
        target_bpw: float | None = None,
    ) -> None:
        if not isinstance(arch, str) or not arch:
            raise GGUFWriteError(f"architecture must be a non-empty string, got {arch!r}")
        if not isinstance(alignment, int) or alignment <= 0 or alignment & (alignment - 1):
            raise GGUFWriteError(f"alignment must be a positive power of two, got {alignment!r}")
        self.path = Path(path)
        self.arch = arch
        self.alignment = alignment
        self.method = method
        self.target_bpw = target_bpw
        self._metadata: dict[str, TypedValue] = {}
        self._tensors: dict[str, WrittenTensor] = {}
        self._state = "open"  # open -> (writing ->) finished | aborted | broken
        directory = self.path.parent
        if not directory.is_dir():
            raise GGUFWriteError(f"cannot write {self.path}: directory {directory} does not exist")
        self._temps = _Temporaries()
        # Leaves no temporaries behind even if the caller drops the writer without finishing it.
        self._cleanup = weakref.finalize(self, self._temps.discard)

    @property
    def method(self) -> str:
        """`omnimodel.method`: how the weights were quantized ("none", "rtn", "actquant", ...)."""
        return self._method

    @method.setter
    def method(self, value: str) -> None:
        if not isinstance(value, str) or not value:
            raise GGUFWriteError(f"method must be a non-empty string, got {value!r}")
        self._method = value

    @property
    def target_bpw(self) -> float | None:
        """`omnimodel.target_bpw`: the bits-per-weight budget asked for, if there was one."""
        return self._target_bpw

    @target_bpw.setter
    def target_bpw(self, value: float | None) -> None:
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf
        ):
            raise GGUFWriteError(f"target_bpw must be a positive number or None, got {value!r}")
        self._target_bpw = None if value is None else float(value)

    # ------------------------------------------------------------------ context manager

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is not None:
            self.abort()
        elif self._state in ("open", "writing"):
            self.finish()

    # ------------------------------------------------------------------ metadata

    def add_metadata(
        self,
        key: str,
        value: Any,
        value_type: GGUFValueType | int | str | None = None,
        *,
        element_type: GGUFValueType | int | str | None = None,
    ) -> None:
        """Store a metadata value. Without `value_type`: bool -> bool, int -> int32 (int64/uint64 when
        out of range), float -> float32, str -> string, list/tuple/1-D array -> array of the inferred
        element type; numpy scalars and arrays keep their dtype. Pass `value_type` (and `element_type`
        for arrays), as a GGUFValueType or a name such as "uint32", where the reader expects a width."""
        self._check_open(f"metadata key {key!r}")
        if not isinstance(key, str) or not key:
            raise GGUFWriteError(f"metadata keys must be non-empty strings, got {key!r}")
        if key in RESERVED_KEYS:
            raise GGUFWriteError(f"metadata key {key!r} is written by GGUFModelWriter itself; {_reserved_hint(key)}")
        if key in self._metadata:
            raise GGUFWriteError(f"metadata key {key!r} was already added")
        try:
            self._metadata[key] = typed_value(value, value_type, element_type)
        except (TypeError, ValueError) as e:
            raise GGUFWriteError(f"metadata key {key!r}: {e}") from e

    def add_string(self, key: str, value: str) -> None:
        self.add_metadata(key, value, GGUFValueType.STRING)

    def add_bool(self, key: str, value: bool) -> None:
        self.add_metadata(key, value, GGUFValueType.BOOL)

    def add_uint8(self, key: str, value: int) -> None:
        self.add_metadata(key, value, GGUFValueType.UINT8)

    def add_int8(self, key: str, value: int) -> None:
        self.add_metadata(key, value, GGUFValueType.INT8)

    def add_uint16(self, key: str, value: int) -> None:
        self.add_metadata(key, value, GGUFValueType.UINT16)

    def add_int16(self, key: str, value: int) -> None:
        self.add_metadata(key, value, GGUFValueType.INT16)

    def add_uint32(self, key: str, value: int) -> None:
        self.add_metadata(key, value, GGUFValueType.UINT32)

    def add_int32(self, key: str, value: int) -> None:
        self.add_metadata(key, value, GGUFValueType.INT32)

    def add_uint64(self, key: str, value: int) -> None:
        self.add_metadata(key, value, GGUFValueType.UINT64)

    def add_int64(self, key: str, value: int) -> None:
        self.add_metadata(key, value, GGUFValueType.INT64)

    def add_float32(self, key: str, value: float) -> None:
        self.add_metadata(key, value, GGUFValueType.FLOAT32)

    def add_float64(self, key: str, value: float) -> None:
        self.add_metadata(key, value, GGUFValueType.FLOAT64)

    def add_array(
        self, key: str, values: Sequence[Any] | np.ndarray, element_type: GGUFValueType | int | str | None = None
    ) -> None:
        self.add_metadata(key, values, GGUFValueType.ARRAY, element_type=element_type)

    # ------------------------------------------------------------------ tensors

    @property
    def tensors(self) -> list[WrittenTensor]:
        return list(self._tensors.values())

    def provenance(self) -> dict[str, TypedValue]:
        """The `omnimodel.*` keys finish() will write, from the tensors added so far."""
        tensors = self.tensors
        out = {
            provenance.KEY_VERSION: TypedValue(omnimodel.__version__, GGUFValueType.STRING),
            provenance.KEY_METHOD: TypedValue(self.method, GGUFValueType.STRING),
        }
        if self.target_bpw is not None:
            out[provenance.KEY_TARGET_BPW] = TypedValue(self.target_bpw, GGUFValueType.FLOAT32)
        padded = [t for t in tensors if t.real_width is not None]
        if padded:
            out[provenance.KEY_PADDED_NAMES] = TypedValue(
                [t.name for t in padded], GGUFValueType.ARRAY, GGUFValueType.STRING
            )
            out[provenance.KEY_PADDED_WIDTHS] = TypedValue(
                [int(t.real_width) for t in padded], GGUFValueType.ARRAY, GGUFValueType.UINT32
            )
        bpw = provenance.bpw_figures(tensors)  # one vocabulary: see provenance's docstring
        out[provenance.KEY_ACHIEVED_BPW] = TypedValue(bpw.matrices, GGUFValueType.FLOAT32)
        out[provenance.KEY_ACHIEVED_BPW_TOTAL] = TypedValue(bpw.file, GGUFValueType.FLOAT32)
        if bpw.quantized is not None:
            out[provenance.KEY_QUANTIZED_BPW] = TypedValue(bpw.quantized, GGUFValueType.FLOAT32)
        return out

    # ------------------------------------------------------------------ finishing

    def finish(self) -> Path:
        raise NotImplementedError

    def abort(self) -> None:
        """Drop everything written so far; the destination is left as it was. Safe to call twice."""
        if self._state in ("open", "writing", "broken"):
            self._state = "aborted"
        self._temps.discard()

    # ------------------------------------------------------------------ internals

    def _check_open(self, what: str) -> None:
        if self._state == "open":
            return
        reason = {
            "finished": "has already finished",
            "aborted": "was aborted",
            "broken": "failed to write its data earlier",
            "writing": "is already writing tensor data (declare everything first)",
        }[self._state]
        raise GGUFWriteError(f"cannot add {what}: the writer for {self.path} {reason}")

    def _check_new_tensor(self, name: str) -> None:
        self._check_open(f"tensor {name!r}")
        if not isinstance(name, str) or not name:
            raise GGUFWriteError(f"tensor names must be non-empty strings, got {name!r}")
        n = len(name.encode("utf-8"))
        if n > MAX_TENSOR_NAME_BYTES:
            raise GGUFWriteError(
                f"tensor name {name!r} is {n} bytes long; ggml allows at most {MAX_TENSOR_NAME_BYTES}"
            )
        if name in self._tensors:
            raise GGUFWriteError(f"tensor {name!r} was already added")

    @staticmethod
    def _parse_type(name: str, ggml_type: GGMLType | int | str) -> GGMLType:
        try:
            return parse_type(ggml_type)
        except ValueError as e:
            raise GGUFWriteError(f"tensor {name!r}: {e}") from e

    def _record(
        self, name: str, gt: GGMLType, shape: tuple[int, ...], n_bytes: int, offset: int, real_width: int | None
    ) -> WrittenTensor:
        record = WrittenTensor(name, gt, shape, math.prod(shape), int(n_bytes), offset, real_width)
        self._tensors[name] = record
        return record

    def _padded(self, n_bytes: int) -> int:
        return n_bytes + (-n_bytes % self.alignment)

    def _open_output(self) -> tuple[Any, BinaryIO, int]:
        """A temporary file next to the destination holding the header (metadata, tensor infos) and the
        padding up to the data section: (gguf-py writer to close, the open file, data section offset)."""
        tensors = self.tensors
        w = gguf.GGUFWriter(path=None, arch=self.arch)
        if self.alignment != DEFAULT_ALIGNMENT:
            w.add_custom_alignment(self.alignment)
        w.add_file_type(provenance.llama_file_type(tensors))
        if any(type_info(t.ggml_type).block_size > 1 for t in tensors):
            w.add_quantization_version(gguf.GGML_QUANT_VERSION)
        for key, tv in {**self._metadata, **self.provenance()}.items():
            w.add_key_value(key, tv.value, tv.vtype, sub_type=tv.element_type)
        for t in tensors:
            w.add_tensor_info(t.name, t.shape, _ELEMENT_SHAPE_DTYPE, t.n_bytes, raw_dtype=_gguf_py_type(t.ggml_type))

        fd, tmp_name = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp")
        os.close(fd)
        tmp = Path(tmp_name)
        self._temps.paths.append(tmp)
        try:
            w.open_output_file(tmp)
            assert w.fout is not None
            self._temps.files.append(w.fout[0])
            w.write_header_to_file()
            w.write_kv_data_to_file()
            w.write_ti_data_to_file()
            out = w.fout[0]
            out.write(bytes(-out.tell() % self.alignment))
        except BaseException:
            w.close()
            raise
        return w, out, out.tell()

    def _commit(self, w: Any, out: BinaryIO, data_offset: int) -> None:
        """Flush and close the temporary file, check its size against the tensor table, move it into place."""
        try:
            out.flush()
            size = out.tell()
            os.fsync(out.fileno())
        finally:
            w.close()
        data_size = sum(self._padded(t.n_bytes) for t in self._tensors.values())
        if size != data_offset + data_size:
            raise GGUFWriteError(f"internal error writing {self.path}: size {size} != {data_offset} + {data_size}")
        tmp = Path(out.name)
        os.chmod(tmp, _default_file_mode())
        os.replace(tmp, self.path)
        self._temps.forget(tmp, out)


class GGUFStreamWriter(_GGUFWriterBase):
    """Declare every tensor, then write their data in that order straight into the output file.

        with GGUFStreamWriter(path, "openvla-oft") as w:
            w.add_uint32("openvla-oft.image_size", 224)            # metadata: any time before the data
            for name, shape, gt in layout:
                w.declare(name, gt, shape)                          # offsets follow from the types
            for name, ... in layout:
                w.write_tensor(name, array)  /  w.write_encoded(name, blocks)

    The first data write writes the header; from then on only data may follow, in declaration order.
    Leaving the ``with`` block normally calls ``finish()`` (an error if a declared tensor was never
    written), leaving it with an exception calls ``abort()``."""

    def __init__(self, path: str | os.PathLike[str], arch: str, **kwargs: Any) -> None:
        super().__init__(path, arch, **kwargs)
        self._out: BinaryIO | None = None
        self._gguf_writer: Any = None
        self._data_offset = 0
        self._next = 0  # index of the next tensor to write, in declaration order
        self._offset = 0  # running offset of the next declared tensor

    def declare(
        self,
        name: str,
        ggml_type: GGMLType | int | str,
        shape: Sequence[int],
        *,
        real_width: int | None = None,
    ) -> WrittenTensor:
        """Reserve a tensor: `shape` in PyTorch order as stored (blocks run along the last dimension, which
        must be a multiple of the type's block size). `real_width`: the rows are zero-padded from this
        many columns to shape[-1] (see ``GGUFModelWriter.add_encoded``)."""
        self._check_new_tensor(name)
        gt = self._parse_type(name, ggml_type)
        shape_t = _check_shape(name, tuple(int(d) for d in shape))
        real_width = _check_real_width(name, gt, shape_t, real_width)
        n_bytes = _data_bytes(name, gt, shape_t)
        record = self._record(name, gt, shape_t, n_bytes, self._offset, real_width)
        self._offset += self._padded(n_bytes)
        return record

    def write_tensor(
        self, name: str, array: Any, *, importance: np.ndarray | None = None, scales: np.ndarray | None = None
    ) -> None:
        """Encode a float tensor (the declared shape) in its declared type and write it."""
        t = self._expect(name)
        shape, data = _encode_float(name, t.ggml_type, array, importance, scales)
        if shape != t.shape:
            raise GGUFWriteError(f"tensor {name!r}: declared with shape {list(t.shape)}, got {list(shape)}")
        self._write(t, data)

    def write_encoded(self, name: str, data: np.ndarray | bytes) -> None:
        """Write bytes already in the declared type's block layout (exactly the declared size)."""
        t = self._expect(name)
        raw = _as_bytes(name, data)
        if raw.nbytes != t.n_bytes:
            raise GGUFWriteError(
                f"tensor {name!r}: {t.ggml_type.name} with shape {list(t.shape)} takes {t.n_bytes} bytes, "
                f"got {raw.nbytes}"
            )
        self._write(t, raw)

    def finish(self) -> Path:
        """Write the header if no data came yet, check every declared tensor was written, move the file
        into place. Returns the destination path."""
        if self._state == "open":
            self._start()
        if self._state != "writing":
            self._check_open("finish()")
        try:
            missing = [t.name for t in self.tensors[self._next :]]
            if missing:
                raise GGUFWriteError(
                    f"cannot finish {self.path}: {len(missing)} declared tensor(s) never written, first {missing[0]!r}"
                )
            assert self._out is not None
            self._commit(self._gguf_writer, self._out, self._data_offset)
        except BaseException:
            self.abort()
            raise
        self._state = "finished"
        self._out = self._gguf_writer = None
        return self.path

    def _expect(self, name: str) -> WrittenTensor:
        if self._state == "open":
            self._start()
        if self._state != "writing":
            self._check_open(f"data for tensor {name!r}")
        tensors = self.tensors
        if self._next >= len(tensors):
            raise GGUFWriteError(f"tensor {name!r}: every declared tensor has been written already")
        t = tensors[self._next]
        if name != t.name:
            known = "was declared" if name in self._tensors else "was never declared"
            raise GGUFWriteError(f"tensor {name!r} {known}; the next to write is {t.name!r} (declaration order)")
        return t

    def _start(self) -> None:
        try:
            self._gguf_writer, self._out, self._data_offset = self._open_output()
        except BaseException:
            self.abort()
            raise
        self._state = "writing"

    def _write(self, t: WrittenTensor, data: np.ndarray) -> None:
        assert self._out is not None
        try:
            self._out.write(np.ascontiguousarray(data).data)
            pad = -data.nbytes % self.alignment
            if pad:
                self._out.write(bytes(pad))
        except BaseException:
            self._state = "broken"
            self.abort()
            raise
        self._next += 1


class GGUFModelWriter(_GGUFWriterBase):
    """Collects metadata and tensors (with their data, as they come), then writes one GGUF file.

    Use as a context manager: leaving the block normally calls `finish()`, leaving it with an exception
    calls `abort()`. Without a `with`, call `finish()` (or `abort()`) yourself. The tensor data waits in a
    spool file until the header is known; ``GGUFStreamWriter`` avoids that when the layout is known first.
    """

    def __init__(self, path: str | os.PathLike[str], arch: str, **kwargs: Any) -> None:
        super().__init__(path, arch, **kwargs)
        fd, spool_name = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".data.tmp")
        self._spool: BinaryIO = os.fdopen(fd, "w+b")
        self._temps.paths.append(Path(spool_name))
        self._temps.files.append(self._spool)

    def add_tensor(
        self,
        name: str,
        array: Any,
        ggml_type: GGMLType | int | str,
        *,
        importance: np.ndarray | None = None,
        scales: np.ndarray | None = None,
    ) -> WrittenTensor:
        """Encode a float tensor in PyTorch layout (nn.Linear weight = [out, in]) as `ggml_type` and
        append it. Rows are all leading dimensions flattened; blocks run along the last dimension, which
        therefore must be a multiple of the type's block size. `importance` / `scales` go to the encoder."""
        self._check_new_tensor(name)
        gt = self._parse_type(name, ggml_type)
        shape, data = _encode_float(name, gt, array, importance, scales)
        return self._append(name, gt, shape, data)

    def add_encoded(
        self,
        name: str,
        data: np.ndarray | bytes,
        ggml_type: GGMLType | int | str,
        shape: Sequence[int],
        *,
        real_width: int | None = None,
    ) -> WrittenTensor:
        """Append bytes that are already in `ggml_type`'s block layout; `shape` is the element shape in
        PyTorch order as stored and must account for exactly `len(data)` bytes. `real_width`: the rows
        are zero-padded from this many columns to shape[-1] (recorded in the file, and bits per weight
        are counted over the real columns); the runtime pads the activation to match."""
        self._check_new_tensor(name)
        gt = self._parse_type(name, ggml_type)
        shape_t = _check_shape(name, tuple(int(d) for d in shape))
        real_width = _check_real_width(name, gt, shape_t, real_width)
        expected = _data_bytes(name, gt, shape_t)
        raw = _as_bytes(name, data)
        if raw.nbytes != expected:
            raise GGUFWriteError(
                f"tensor {name!r}: {gt.name} with shape {list(shape_t)} takes {expected} bytes, got {raw.nbytes}"
            )
        return self._append(name, gt, shape_t, raw, real_width)

    def finish(self) -> Path:
        """Write the file and move it into place. Returns the destination path."""
        self._check_open("finish()")
        try:
            w, out, data_offset = self._open_output()
            try:
                self._spool.flush()
                self._spool.seek(0)
                shutil.copyfileobj(self._spool, out, 16 << 20)
            except BaseException:
                w.close()
                raise
            self._commit(w, out, data_offset)
        except BaseException:
            self.abort()
            raise
        self._state = "finished"
        self._temps.discard()  # the spool
        return self.path

    def _append(
        self, name: str, gt: GGMLType, shape: tuple[int, ...], data: np.ndarray, real_width: int | None = None
    ) -> WrittenTensor:
        offset = self._spool.tell()
        try:
            self._spool.write(np.ascontiguousarray(data).data)
            pad = -data.nbytes % self.alignment
            if pad:
                self._spool.write(bytes(pad))
        except BaseException:
            # A partial write leaves the spool out of step with the tensor table; refuse to go on.
            self._state = "broken"
            raise
        return self._record(name, gt, shape, data.nbytes, offset, real_width)


# ---------------------------------------------------------------------- helpers


def _encode_float(
    name: str, gt: GGMLType, array: Any, importance: np.ndarray | None, scales: np.ndarray | None
) -> tuple[tuple[int, ...], np.ndarray]:
    """(stored shape, uint8 (rows, row_bytes) blocks) of a float tensor encoded as `gt`."""
    x = _as_float32(name, array)
    shape = _check_shape(name, x.shape)
    n_per_row = shape[-1]
    rows = math.prod(shape[:-1])
    try:
        row_bytes = type_info(gt).row_bytes(n_per_row)
    except ValueError as e:
        raise GGUFWriteError(f"tensor {name!r} with shape {list(shape)}: {e}") from e

    from omnimodel.gguf.encoders import encode  # noqa: PLC0415  (encoders may pull in the runtime)

    try:
        data = encode(x.reshape(rows, n_per_row), gt, importance=importance, scales=scales)
    except ValueError as e:
        raise GGUFWriteError(f"tensor {name!r} ({gt.name}, shape {list(shape)}): {e}") from e
    data = np.asarray(data)
    if data.dtype != np.uint8 or data.shape != (rows, row_bytes):
        raise GGUFWriteError(
            f"tensor {name!r}: the {gt.name} encoder returned {data.dtype} {data.shape}, "
            f"expected uint8 {(rows, row_bytes)}"
        )
    return shape, data


def _check_real_width(name: str, gt: GGMLType, shape: tuple[int, ...], real_width: int | None) -> int | None:
    """None when the rows are not padded; else the real width, which must round up to the stored one."""
    if real_width is None:
        return None
    bs = type_info(gt).block_size
    if not 0 < real_width <= shape[-1] or shape[-1] != -(-real_width // bs) * bs:
        raise GGUFWriteError(
            f"tensor {name!r}: rows of {real_width} pad to {-(-real_width // bs) * bs} for {gt.name}, not {shape[-1]}"
        )
    return None if real_width == shape[-1] else real_width


def _data_bytes(name: str, gt: GGMLType, shape: tuple[int, ...]) -> int:
    try:
        return math.prod(shape[:-1]) * type_info(gt).row_bytes(shape[-1])
    except ValueError as e:
        raise GGUFWriteError(f"tensor {name!r} with shape {list(shape)}: {e}") from e


def _as_bytes(name: str, data: np.ndarray | bytes) -> np.ndarray:
    raw = np.frombuffer(data, dtype=np.uint8) if isinstance(data, (bytes, bytearray, memoryview)) else np.asarray(data)
    if raw.dtype != np.uint8:
        raise GGUFWriteError(f"tensor {name!r}: encoded data must be uint8, got {raw.dtype}")
    return raw


def _as_float32(name: str, array: Any) -> np.ndarray:
    if hasattr(array, "detach") and hasattr(array, "cpu"):  # torch.Tensor, without importing torch
        array = array.detach().cpu().float().numpy()
    x = np.asarray(array)
    if x.dtype.kind not in "fiu":
        raise GGUFWriteError(f"tensor {name!r}: expected a real-valued array, got dtype {x.dtype}")
    return np.ascontiguousarray(x, dtype=np.float32)


def _check_shape(name: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    if len(shape) == 0:
        return (1,)  # a scalar parameter is stored as a one-element vector, as ggml has no 0-D tensors
    if len(shape) > MAX_DIMS:
        raise GGUFWriteError(f"tensor {name!r} has {len(shape)} dimensions {list(shape)}; ggml supports at most {MAX_DIMS}")
    if any(d <= 0 for d in shape):
        raise GGUFWriteError(f"tensor {name!r} has an empty or negative dimension: shape {list(shape)}")
    return tuple(int(d) for d in shape)


def _gguf_py_type(gt: GGMLType) -> Any:
    """gguf-py's enum member when it has one; the bare id otherwise (it is only packed as a u32)."""
    try:
        return gguf.GGMLQuantizationType(int(gt))
    except ValueError:
        return int(gt)


def _reserved_hint(key: str) -> str:
    if key == provenance.KEY_METHOD:
        return "pass method= to the writer"
    if key == provenance.KEY_TARGET_BPW:
        return "pass target_bpw= to the writer"
    if key == _KEY_ALIGNMENT:
        return "pass alignment= to the writer"
    if key == _KEY_ARCHITECTURE:
        return "pass arch= to the writer"
    return "it is computed from the tensors"


def _default_file_mode() -> int:
    # mkstemp creates 0600 files; give the result the permissions a plain open() would have.
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _remove_quietly(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


class _Temporaries:
    """Files a writer has open and temporaries it has on disk; ``discard`` closes and removes them all.
    Holds no reference to the writer, so ``weakref.finalize`` can call it when a writer is dropped."""

    def __init__(self) -> None:
        self.paths: list[Path] = []
        self.files: list[BinaryIO] = []

    def forget(self, path: Path, file: BinaryIO) -> None:
        """``path`` became the destination (and ``file`` is closed): no longer ours to remove."""
        self.paths = [p for p in self.paths if p != path]
        self.files = [f for f in self.files if f is not file]

    def discard(self) -> None:
        files, paths = self.files, self.paths
        self.files, self.paths = [], []
        try:
            for f in files:
                try:
                    f.close()
                except OSError:
                    pass
        finally:
            for p in paths:
                _remove_quietly(p)
