"""Writing a policy's exported tensors into a GGUF stream, for every family's exporter.

Each tensor is declared first (the stream writer lays out every offset before the header goes out) and
then written one at a time, so at most one weight is converted to float32 at once. A tensor is stored in
one of three ways:

* replaced: an encoder that stores a matrix as several tensors under other names (HBVLA's ``<base>.hb.*``)
  offers ``replacement(name, weight)``; those are encoded before the header (their shapes depend on the
  method's choices, e.g. how many salient columns), and only the encoded bytes are kept;
* encoded: the encoder's ``layout(name)`` gives (GGML type, stored row width) and ``encode`` the blocks
  (rows zero-padded to the stored width, the real width recorded);
* converted: the type comes from ``types`` or the planner's rule for ``outtype`` (``plan.types.tensor_type``).

``gguf_name`` maps a PyTorch name to the name stored in the file (a family whose paths outgrow ggml's 63
bytes abbreviates them); ``types`` is keyed by stored names.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

import numpy as np
import torch

from omnimodel.gguf.types import GGMLType, parse_type
from omnimodel.arch.mmap_safetensors import release_pages
from omnimodel.gguf.writer import GGUFStreamWriter
from omnimodel.plan.types import tensor_type  # the planner owns the type rules


class StoredTensorLike(Protocol):
    """One tensor of a matrix stored under other names (``quant.hbvla.storage.StoredTensor``)."""

    name: str
    ggml_type: GGMLType
    shape: tuple[int, ...]
    data: np.ndarray  # uint8, exactly the tensor's bytes


def stored_replacements(encoder: Any, exported: Mapping[str, torch.Tensor],
                        gguf_name: Callable[[str], str] = lambda name: name) -> dict[str, list[StoredTensorLike]]:
    """The matrices ``encoder`` stores as several tensors under other names (hanging off each matrix's
    GGUF name), by PyTorch name."""
    replace_fn = getattr(encoder, "replacement", None)
    if replace_fn is None:
        return {}
    out: dict[str, list[StoredTensorLike]] = {}
    for name in encoder.matrices():
        stored = replace_fn(name, exported[name].detach().to(torch.float32).cpu().numpy(), stored_as=gguf_name(name))
        if stored is not None:
            out[name] = list(stored)
    return out


def write_tensors(w: GGUFStreamWriter, exported: Mapping[str, torch.Tensor], *, outtype: str,
                  types: Mapping[str, GGMLType] | None = None, encoder: Any = None,
                  gguf_name: Callable[[str], str] = lambda name: name) -> None:
    """Declare, then write, every tensor of ``exported`` (module doc)."""
    blocks: dict[str, tuple[GGMLType, int]] = {}
    replaced = stored_replacements(encoder, exported, gguf_name)
    for name, t in exported.items():
        shape = tuple(int(d) for d in t.shape)
        gname = gguf_name(name)
        lay = encoder.layout(name) if encoder is not None else None
        if name in replaced:
            for st in replaced[name]:
                w.declare(st.name, st.ggml_type, st.shape)
        elif lay is not None:
            blocks[name] = lay
            w.declare(gname, lay[0], (shape[0], lay[1]), real_width=shape[1])
        else:
            gt = types[gname] if types is not None and gname in types else tensor_type(gname, shape, outtype)
            w.declare(gname, gt, shape)
    for name, t in exported.items():
        if name in replaced:
            for st in replaced.pop(name):
                w.write_encoded(st.name, st.data)
            continue
        value = t.detach().to(torch.float32).cpu().numpy()  # one tensor at a time
        release_pages([t])  # a memory-mapped checkpoint's pages are not needed again
        if name not in blocks:
            w.write_tensor(gguf_name(name), value)
            continue
        q = encoder.encode(name, value)
        if (parse_type(q.ggml_type), int(q.pad_to)) != blocks[name]:
            raise ValueError(f"{name}: encoded as {q.ggml_type} rows of {q.pad_to}, declared {blocks[name]}")
        w.write_encoded(gguf_name(name), q.data)


__all__ = ["StoredTensorLike", "stored_replacements", "write_tensors"]
