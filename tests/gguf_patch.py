"""Byte-level surgery on GGUF files, for tests that need precisely broken inputs."""

from __future__ import annotations

import struct
from pathlib import Path


def tensor_info_offset(path: Path, tensor_name: str) -> int:
    """Byte offset just after a tensor's name in its tensor-info record (where n_dims starts)."""
    data = Path(path).read_bytes()
    needle = struct.pack("<Q", len(tensor_name)) + tensor_name.encode()
    pos = data.find(needle)
    if pos < 0:
        raise ValueError(f"tensor info for {tensor_name!r} not found")
    return pos + len(needle)


def patch_tensor_type(path: Path, tensor_name: str, type_id: int) -> None:
    data = bytearray(Path(path).read_bytes())
    p = tensor_info_offset(path, tensor_name)
    (n_dims,) = struct.unpack_from("<I", data, p)
    struct.pack_into("<I", data, p + 4 + 8 * n_dims, type_id)
    Path(path).write_bytes(bytes(data))


def patch_tensor_offset(path: Path, tensor_name: str, offset: int) -> None:
    data = bytearray(Path(path).read_bytes())
    p = tensor_info_offset(path, tensor_name)
    (n_dims,) = struct.unpack_from("<I", data, p)
    struct.pack_into("<Q", data, p + 4 + 8 * n_dims + 4, offset)
    Path(path).write_bytes(bytes(data))
