"""Writing a model to a GGUF file, one tensor at a time, atomically.

GGUF puts every tensor's info (and so its offset) in the header, before the data. To avoid holding a
whole encoded model in memory until the header can be written, each tensor is encoded as soon as it is
added and appended to a spool file already laid out as the GGUF data section. `finish()` writes the
header with gguf-py's `GGUFWriter` into a temporary file next to the destination, copies the spool after
it, and only then `os.replace`s it onto the destination. Anything that fails removes both temporaries, so
a crash never leaves a half-written model where a good one is expected.
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
from typing import Any, BinaryIO

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


class GGUFModelWriter:
    """Collects metadata and tensors, then writes one GGUF file.

    Use as a context manager: leaving the block normally calls `finish()`, leaving it with an exception
    calls `abort()`. Without a `with`, call `finish()` (or `abort()`) yourself.
    """

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
        self._state = "open"  # open -> finished | aborted | broken

        directory = self.path.parent
        if not directory.is_dir():
            raise GGUFWriteError(f"cannot write {self.path}: directory {directory} does not exist")
        fd, spool_name = tempfile.mkstemp(dir=directory, prefix=f".{self.path.name}.", suffix=".data.tmp")
        self._spool_path = Path(spool_name)
        self._spool: BinaryIO = os.fdopen(fd, "w+b")
        self._header_tmp: Path | None = None
        # Leaves no temporaries behind even if the caller drops the writer without finishing it.
        self._cleanup = weakref.finalize(self, _discard, self._spool, [self._spool_path])

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

    def __enter__(self) -> GGUFModelWriter:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is not None:
            self.abort()
        elif self._state == "open":
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
        x = _as_float32(name, array)
        shape = _check_shape(name, x.shape)
        n_per_row = shape[-1]
        rows = math.prod(shape[:-1])
        info = type_info(gt)
        try:
            row_bytes = info.row_bytes(n_per_row)
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
        if real_width is not None:
            bs = type_info(gt).block_size
            if not 0 < real_width <= shape_t[-1] or shape_t[-1] != -(-real_width // bs) * bs:
                raise GGUFWriteError(
                    f"tensor {name!r}: rows of {real_width} pad to {-(-real_width // bs) * bs} for {gt.name}, "
                    f"not {shape_t[-1]}"
                )
            if real_width == shape_t[-1]:
                real_width = None
        try:
            expected = math.prod(shape_t[:-1]) * type_info(gt).row_bytes(shape_t[-1])
        except ValueError as e:
            raise GGUFWriteError(f"tensor {name!r} with shape {list(shape_t)}: {e}") from e
        raw = np.frombuffer(data, dtype=np.uint8) if isinstance(data, (bytes, bytearray, memoryview)) else np.asarray(data)
        if raw.dtype != np.uint8:
            raise GGUFWriteError(f"tensor {name!r}: encoded data must be uint8, got {raw.dtype}")
        if raw.nbytes != expected:
            raise GGUFWriteError(
                f"tensor {name!r}: {gt.name} with shape {list(shape_t)} takes {expected} bytes, got {raw.nbytes}"
            )
        return self._append(name, gt, shape_t, raw, real_width)

    # ------------------------------------------------------------------ finishing

    def finish(self) -> Path:
        """Write the file and move it into place. Returns the destination path."""
        self._check_open("finish()")
        try:
            self._write_file()
        except BaseException:
            self.abort()
            raise
        self._state = "finished"
        self._cleanup()
        return self.path

    def abort(self) -> None:
        """Drop everything written so far; the destination is left as it was. Safe to call twice."""
        if self._state in ("open", "broken"):
            self._state = "aborted"
        self._cleanup()
        if self._header_tmp is not None:
            _remove_quietly(self._header_tmp)
            self._header_tmp = None

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

    # ------------------------------------------------------------------ internals

    def _check_open(self, what: str) -> None:
        if self._state == "open":
            return
        reason = {
            "finished": "has already finished",
            "aborted": "was aborted",
            "broken": "failed to write its spool file earlier",
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
        record = WrittenTensor(name, gt, shape, math.prod(shape), int(data.nbytes), offset, real_width)
        self._tensors[name] = record
        return record

    def _write_file(self) -> None:
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
        self._header_tmp = Path(tmp_name)
        try:
            w.open_output_file(self._header_tmp)
            w.write_header_to_file()
            w.write_kv_data_to_file()
            w.write_ti_data_to_file()
            assert w.fout is not None
            out = w.fout[0]
            out.write(bytes(-out.tell() % self.alignment))
            data_offset = out.tell()
            self._spool.flush()
            self._spool.seek(0)
            shutil.copyfileobj(self._spool, out, 16 << 20)
            out.flush()
            size = out.tell()
            os.fsync(out.fileno())
        finally:
            w.close()
        spool_size = self._spool.tell()
        if size != data_offset + spool_size:
            raise GGUFWriteError(f"internal error writing {self.path}: size {size} != {data_offset} + {spool_size}")
        os.chmod(self._header_tmp, _default_file_mode())
        os.replace(self._header_tmp, self.path)
        self._header_tmp = None


# ---------------------------------------------------------------------- helpers


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


def _discard(spool: BinaryIO, paths: list[Path]) -> None:
    try:
        spool.close()
    finally:
        for p in paths:
            _remove_quietly(p)
