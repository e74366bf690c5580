"""GGUF metadata value types: how Python values map onto them and how each is laid out on disk.

Python has one int and one float, GGUF has eight integer widths and two float widths, and llama.cpp's
`gguf_get_val_*` accessors refuse a value stored with the wrong one. So the mapping is explicit: plain
ints become int32 (int64 / uint64 only when they do not fit), plain floats become float32 (what llama.cpp
reads), numpy scalars and arrays keep their own dtype, and callers pass a type where it matters.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from gguf import GGUFValueType

__all__ = [
    "GGUFValueType",
    "SCALAR_FORMATS",
    "TypedValue",
    "parse_value_type",
    "value_type_label",
    "typed_value",
]

#: struct format (little-endian) of every fixed-size value type.
SCALAR_FORMATS: dict[GGUFValueType, str] = {
    GGUFValueType.UINT8: "<B",
    GGUFValueType.INT8: "<b",
    GGUFValueType.UINT16: "<H",
    GGUFValueType.INT16: "<h",
    GGUFValueType.UINT32: "<I",
    GGUFValueType.INT32: "<i",
    GGUFValueType.FLOAT32: "<f",
    GGUFValueType.BOOL: "<?",
    GGUFValueType.UINT64: "<Q",
    GGUFValueType.INT64: "<q",
    GGUFValueType.FLOAT64: "<d",
}

_LABELS: dict[GGUFValueType, str] = {
    GGUFValueType.UINT8: "u8",
    GGUFValueType.INT8: "i8",
    GGUFValueType.UINT16: "u16",
    GGUFValueType.INT16: "i16",
    GGUFValueType.UINT32: "u32",
    GGUFValueType.INT32: "i32",
    GGUFValueType.FLOAT32: "f32",
    GGUFValueType.BOOL: "bool",
    GGUFValueType.STRING: "str",
    GGUFValueType.ARRAY: "arr",
    GGUFValueType.UINT64: "u64",
    GGUFValueType.INT64: "i64",
    GGUFValueType.FLOAT64: "f64",
}

_ALIASES: dict[str, GGUFValueType] = {label: vt for vt, label in _LABELS.items()}
_ALIASES.update({vt.name.lower(): vt for vt in GGUFValueType})
_ALIASES.update({"float": GGUFValueType.FLOAT32, "double": GGUFValueType.FLOAT64, "string": GGUFValueType.STRING})

_INT_RANGES: dict[GGUFValueType, tuple[int, int]] = {
    GGUFValueType.UINT8: (0, 2**8 - 1),
    GGUFValueType.INT8: (-(2**7), 2**7 - 1),
    GGUFValueType.UINT16: (0, 2**16 - 1),
    GGUFValueType.INT16: (-(2**15), 2**15 - 1),
    GGUFValueType.UINT32: (0, 2**32 - 1),
    GGUFValueType.INT32: (-(2**31), 2**31 - 1),
    GGUFValueType.UINT64: (0, 2**64 - 1),
    GGUFValueType.INT64: (-(2**63), 2**63 - 1),
}

_NUMPY_KINDS: dict[np.dtype[Any], GGUFValueType] = {
    np.dtype(np.uint8): GGUFValueType.UINT8,
    np.dtype(np.int8): GGUFValueType.INT8,
    np.dtype(np.uint16): GGUFValueType.UINT16,
    np.dtype(np.int16): GGUFValueType.INT16,
    np.dtype(np.uint32): GGUFValueType.UINT32,
    np.dtype(np.int32): GGUFValueType.INT32,
    np.dtype(np.uint64): GGUFValueType.UINT64,
    np.dtype(np.int64): GGUFValueType.INT64,
    np.dtype(np.float32): GGUFValueType.FLOAT32,
    np.dtype(np.float64): GGUFValueType.FLOAT64,
    np.dtype(np.bool_): GGUFValueType.BOOL,
}


def parse_value_type(t: GGUFValueType | int | str) -> GGUFValueType:
    """Accepts the enum, its id, its name ("uint32") or a short label ("u32", "f32", "str")."""
    if isinstance(t, GGUFValueType):
        return t
    if isinstance(t, str):
        try:
            return _ALIASES[t.strip().lower()]
        except KeyError:
            raise ValueError(f"unknown GGUF value type {t!r}") from None
    try:
        return GGUFValueType(int(t))
    except ValueError:
        raise ValueError(f"unknown GGUF value type id {t!r}") from None


def value_type_label(vtype: GGUFValueType, element_type: GGUFValueType | None = None) -> str:
    if vtype == GGUFValueType.ARRAY and element_type is not None:
        return f"arr[{_LABELS[element_type]}]"
    return _LABELS[vtype]


@dataclass(frozen=True, slots=True)
class TypedValue:
    """A metadata value normalised to plain Python, with the GGUF type it will be stored as."""

    value: Any
    vtype: GGUFValueType
    element_type: GGUFValueType | None = None  # arrays only


def typed_value(
    value: Any,
    vtype: GGUFValueType | int | str | None = None,
    element_type: GGUFValueType | int | str | None = None,
) -> TypedValue:
    """Type `value` (inferring what is not given) and check it fits, so bad values fail when added
    rather than halfway through writing the file. Raises ValueError / TypeError with the reason."""
    vt = parse_value_type(vtype) if vtype is not None else _infer_type(value)
    if vt == GGUFValueType.ARRAY:
        items = _as_sequence(value)
        if not items:
            # gguf-py cannot write an empty array, and an empty array says nothing a missing key does not.
            raise ValueError("empty arrays cannot be stored in GGUF metadata; leave the key out instead")
        et = parse_value_type(element_type) if element_type is not None else _infer_element_type(items)
        if et == GGUFValueType.ARRAY:
            raise ValueError("nested arrays are not supported (ggml's gguf loader rejects them)")
        return TypedValue([_check_scalar(v, et, index=i) for i, v in enumerate(items)], vt, et)
    if element_type is not None:
        raise ValueError(f"element_type only applies to arrays, not {vt.name.lower()}")
    return TypedValue(_check_scalar(value, vt), vt)


def _as_sequence(value: Any) -> list[Any]:
    if isinstance(value, np.ndarray):
        if value.ndim != 1:
            raise ValueError(f"only 1-D arrays can be stored in GGUF metadata, got shape {value.shape}")
        return list(value)
    if isinstance(value, (bytes, bytearray)):
        return list(value)
    if isinstance(value, Sequence) and not isinstance(value, str):
        return list(value)
    raise TypeError(f"expected a list, tuple or 1-D array for a GGUF array, got {type(value).__name__}")


def _infer_type(value: Any) -> GGUFValueType:
    if isinstance(value, (bool, np.bool_)):
        return GGUFValueType.BOOL
    if isinstance(value, np.generic):
        # Checked before int/float: np.float64 is a subclass of float and must stay 64-bit.
        try:
            return _NUMPY_KINDS[value.dtype]
        except KeyError:
            raise TypeError(f"numpy {value.dtype} has no GGUF value type") from None
    if isinstance(value, int):
        return _smallest_int_type([value])
    if isinstance(value, float):
        return GGUFValueType.FLOAT32
    if isinstance(value, str):
        return GGUFValueType.STRING
    if isinstance(value, (list, tuple, np.ndarray, bytes, bytearray)):
        return GGUFValueType.ARRAY
    raise TypeError(f"{type(value).__name__} cannot be stored as GGUF metadata")


def _infer_element_type(items: list[Any]) -> GGUFValueType:
    if isinstance(items[0], np.generic) and all(type(v) is type(items[0]) for v in items):
        return _infer_type(items[0])
    types = {_infer_type(v) for v in items}
    if len(types) == 1:
        (only,) = types
        if only in _INT_RANGES:
            return _smallest_int_type([int(v) for v in items])
        return only
    if types <= set(_INT_RANGES) | {GGUFValueType.FLOAT32, GGUFValueType.FLOAT64} and GGUFValueType.BOOL not in types:
        return GGUFValueType.FLOAT32
    names = sorted(t.name.lower() for t in types)
    raise TypeError(f"GGUF arrays hold one type, got a mix of {', '.join(names)}")


def _smallest_int_type(values: list[int]) -> GGUFValueType:
    lo, hi = min(values), max(values)
    for vt in (GGUFValueType.INT32, GGUFValueType.INT64, GGUFValueType.UINT64):
        vmin, vmax = _INT_RANGES[vt]
        if vmin <= lo and hi <= vmax:
            return vt
    raise ValueError(f"integer {lo if lo < 0 else hi} does not fit in 64 bits")


def _check_scalar(value: Any, vt: GGUFValueType, index: int | None = None) -> Any:
    where = f"element {index}: " if index is not None else ""
    if vt == GGUFValueType.STRING:
        if isinstance(value, (bytes, bytearray)):
            try:
                return bytes(value).decode("utf-8")
            except UnicodeDecodeError:
                raise ValueError(f"{where}GGUF strings must be UTF-8") from None
        if not isinstance(value, str):
            raise TypeError(f"{where}expected a str for a GGUF string, got {type(value).__name__}")
        return value
    if vt == GGUFValueType.BOOL:
        if not isinstance(value, (bool, np.bool_)):
            raise TypeError(f"{where}expected a bool, got {type(value).__name__}")
        return bool(value)
    if vt in (GGUFValueType.FLOAT32, GGUFValueType.FLOAT64):
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise TypeError(f"{where}expected a number for {vt.name.lower()}, got {type(value).__name__}")
        f = float(value)
        if vt == GGUFValueType.FLOAT32 and math.isfinite(f) and abs(f) > 3.4028234663852886e38:
            raise ValueError(f"{where}{f} overflows float32; store it as float64")
        return f
    if vt in _INT_RANGES:
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
            raise TypeError(f"{where}expected an int for {vt.name.lower()}, got {type(value).__name__}")
        i = int(value)
        vmin, vmax = _INT_RANGES[vt]
        if not vmin <= i <= vmax:
            raise ValueError(f"{where}{i} does not fit in {vt.name.lower()} [{vmin}, {vmax}]")
        return i
    raise ValueError(f"{vt.name.lower()} is not a scalar GGUF type")
