"""Tensors that are views of a memory-mapped safetensors file, not copies of it.

A safetensors file is an 8-byte little-endian header length, a JSON header (name -> dtype, shape, byte
range) and the raw data. Mapping the file copy-on-write (``MAP_PRIVATE``) and viewing each byte range as a
tensor means nothing is read until a tensor is used, what is read is page cache the kernel may drop and
re-read, and an in-place edit of a weight (AWQ's folds, a swap of decoded weights) changes only this
process's copy, never the file. ``safetensors.safe_open(...).get_tensor`` always copies into anonymous
memory, which is what a model held "in the checkpoint's dtype" must avoid at 7B.

The caller must not rewrite a mapped file in place while its tensors are alive (truncating it would make
reading them fault); replacing it by rename is safe.
"""

from __future__ import annotations

import json
import math
import mmap
import struct
from pathlib import Path

import torch

DTYPES: dict[str, torch.dtype] = {
    "BF16": torch.bfloat16,
    "F16": torch.float16,
    "F32": torch.float32,
    "F64": torch.float64,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}


class MappedFileError(ValueError):
    """The file's header does not describe its data (the message names the file and, if any, the tensor)."""


def mapped_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    """name -> tensor viewing the file's bytes (CPU, the stored dtype and shape).

    Tensors whose dtype has no torch equivalent here, or whose offset is not a multiple of their element
    size, are left out: the caller reads those with a copy (``safe_open``)."""
    path = Path(path)
    with open(path, "rb") as f:
        size = f.seek(0, 2)
        if size < 8:
            raise MappedFileError(f"{path.name}: too short for a safetensors file ({size} bytes)")
        f.seek(0)
        (n,) = struct.unpack("<Q", f.read(8))
        if 8 + n > size:
            raise MappedFileError(f"{path.name}: header of {n} bytes runs past the end of the file")
        try:
            header = json.loads(f.read(n))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise MappedFileError(f"{path.name}: header is not valid JSON ({exc})") from exc
        # the mapping outlives the file object: the tensors below keep it alive through their storage
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY) if size > 0 else None
    start = 8 + n
    out: dict[str, torch.Tensor] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype = DTYPES.get(str(info.get("dtype")))
        if dtype is None:
            continue
        shape = tuple(int(d) for d in info["shape"])
        begin, end = (int(x) for x in info["data_offsets"])
        count = math.prod(shape)
        itemsize = torch.empty((), dtype=dtype).element_size()
        if end - begin != count * itemsize or start + end > size or begin < 0:
            raise MappedFileError(
                f"{path.name}: tensor '{name}' claims bytes {begin}..{end} for {count} x {itemsize}-byte values "
                f"in a file of {size} bytes"
            )
        if (start + begin) % itemsize:
            continue
        if count == 0:
            out[name] = torch.empty(shape, dtype=dtype)
            continue
        out[name] = torch.frombuffer(mm, dtype=dtype, count=count, offset=start + begin).view(shape)
    return out


__all__ = ["DTYPES", "MappedFileError", "mapped_tensors"]
