"""Tensors that are views of a memory-mapped safetensors file, not copies of it.

A safetensors file is an 8-byte little-endian header length, a JSON header (name -> dtype, shape, byte
range) and the raw data. Mapping the file copy-on-write (``MAP_PRIVATE``) and viewing each byte range as a
tensor means nothing is read until a tensor is used, what is read is page cache the kernel may drop and
re-read, and an in-place edit of a weight (AWQ's folds, a swap of decoded weights) changes only this
process's copy, never the file. ``safetensors.safe_open(...).get_tensor`` always copies into anonymous
memory, which is what a model held "in the checkpoint's dtype" must avoid at 7B.

The caller must not rewrite a mapped file in place while its tensors are alive (truncating it would make
reading them fault); replacing it by rename is safe.

Pages a pass has read stay resident (and count in the process's RSS) until the kernel needs the memory,
so a pass over a 7B model would hold the whole file next to its working set. ``release_pages`` hands
the pages of given tensors -- or of every mapping -- back (``MADV_PAGEOUT``): a clean page is dropped
and read again from the file if used again, a page this process modified (an in-place edit made it
private, anonymous memory) is kept, so no value ever changes. ``released_after_use`` applies it to each
module's mapped parameters right after the module's forward, which bounds the resident part of the
file to the module being run. The kernel leaves alone pages another process maps at the same time (two
conversions of one checkpoint) and pages of a file still being written back (dirty): those stay.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import json
import math
import mmap
import struct
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

import torch
from torch import nn

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
    if mm is not None:
        base = torch.frombuffer(mm, dtype=torch.uint8, count=1).data_ptr()
        _MAPPINGS.append((base, size))
    return out


# (start address, length) of every mapping made above. Entries are never removed: a mapping lives as
# long as any tensor viewing it, and advising an address range that no longer maps a file is harmless
# (MADV_PAGEOUT never discards data; without swap anonymous pages are left alone).
_MAPPINGS: list[tuple[int, int]] = []
_MADV_PAGEOUT = 21  # linux/mman.h; Python's mmap module does not export it
_PAGE = mmap.PAGESIZE


def _madvise():
    if not sys.platform.startswith("linux"):  # MADV_PAGEOUT is Linux's; elsewhere nothing is released
        return None
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    fn = libc.madvise
    fn.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    fn.restype = ctypes.c_int
    return fn


_madvise_fn = None
_unsupported = False


def _page_out(start: int, end: int) -> int:
    """MADV_PAGEOUT over the whole pages of [start, end); bytes advised (0 where unsupported)."""
    global _madvise_fn, _unsupported
    if _unsupported:
        return 0
    if _madvise_fn is None:
        _madvise_fn = _madvise()
        if _madvise_fn is None:
            _unsupported = True
            return 0
    lo = start - start % _PAGE
    hi = -(-end // _PAGE) * _PAGE
    if hi <= lo:
        return 0
    if _madvise_fn(lo, hi - lo, _MADV_PAGEOUT) != 0:
        if ctypes.get_errno() == 22:  # EINVAL: a kernel before 5.4; releasing is an optimisation only
            _unsupported = True
        return 0
    return hi - lo


def _mapping_of(addr: int) -> tuple[int, int] | None:
    for base, size in _MAPPINGS:
        if base <= addr < base + size:
            return base, size
    return None


def release_pages(tensors: Iterable[torch.Tensor] | None = None) -> int:
    """Hand back the resident pages of ``tensors`` that view a mapped safetensors file (others are
    skipped), or of every mapping when ``tensors`` is None. Values are unaffected; returns the bytes
    advised (an upper bound on what was released)."""
    if tensors is None:
        return sum(_page_out(base, base + size) for base, size in _MAPPINGS)
    done = 0
    for t in tensors:
        if t is None or t.device.type != "cpu" or not t.numel():
            continue
        addr = t.data_ptr()
        owner = _mapping_of(addr)
        if owner is None:
            continue
        base, size = owner
        done += _page_out(addr, min(addr + t.numel() * t.element_size(), base + size))
    return done


def _direct_mapped(module: nn.Module) -> list[torch.Tensor]:
    if not _MAPPINGS:
        return []
    return [p for p in module.parameters(recurse=False) if p.device.type == "cpu" and _mapping_of(p.data_ptr())]


@contextlib.contextmanager
def released_after_use(model: nn.Module) -> Iterator[None]:
    """Within the block every module hands back its mapped parameters' pages after its forward, and
    again once a backward pass has used them: when the gradient of the module's input is complete (after
    the module's backward has multiplied by its weights), and for a weight that gets a gradient when that
    gradient is complete (a module whose input needs none, e.g. the first one, has no input gradient).
    Parameters' ``requires_grad`` must be set before entering. No effect on a model without mapped
    weights."""
    def after(mapped: list[torch.Tensor]):
        def used_by_backward(_grad: torch.Tensor) -> None:  # None: the gradient is left unchanged
            release_pages(mapped)

        def hook(_module, args, _out) -> None:  # returning a value would replace the module's output
            release_pages(mapped)
            x = args[0] if args and isinstance(args[0], torch.Tensor) else None
            if x is not None and x.requires_grad and torch.is_grad_enabled():
                x.register_hook(used_by_backward)

        return hook

    def gradient_done(p: torch.Tensor) -> None:
        release_pages([p])

    handles = []
    for module in model.modules():
        mapped = _direct_mapped(module)
        if mapped:
            handles.append(module.register_forward_hook(after(mapped)))
            handles += [p.register_post_accumulate_grad_hook(gradient_done) for p in mapped if p.requires_grad]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


__all__ = ["DTYPES", "MappedFileError", "mapped_tensors", "release_pages", "released_after_use"]
