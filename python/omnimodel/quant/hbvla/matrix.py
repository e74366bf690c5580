"""One weight matrix from float to stored tensors: HBVLA when its shape suits, the fallback type otherwise.

    s = store_matrix("model.layers.0.mlp.down_proj.weight", W, H, hbvla())
    s.kind          # "hbvla" or "fallback" (s.reason says why)
    s.bits          # BitBreakdown: every stored bit, by kind
    s.weight()      # the decoded weight the runtime computes with
    write_stored(gguf_writer, s)

This is the per-matrix entry point the convert pipeline calls; the fallback (``size.fallback_type``:
Q2_0, Q4_0 or Q8_0, whichever divides the row, else F16) is encoded by our numpy encoders with diag(H)
as the importance, so it too is stored exactly as scored.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from omnimodel.gguf.types import GGMLType

from .config import HbvlaConfig
from .method import HbvlaMatrix, quantize_matrix
from .size import BitBreakdown, count_bits, fallback_bits, fallback_type, suits_hbvla
from .storage import StoredTensor, base_name, encode_matrix


@dataclass
class StoredMatrix:
    name: str  # the weight's name ("<base>.weight")
    shape: tuple[int, int]
    kind: str  # "hbvla" | "fallback"
    tensors: list[StoredTensor]
    bits: BitBreakdown
    hbvla: HbvlaMatrix | None = None
    fallback: GGMLType | None = None
    reason: str = ""  # why the fallback was used

    def weight(self) -> np.ndarray:
        if self.hbvla is not None:
            return self.hbvla.weight()
        from omnimodel.gguf.encoders import decode  # noqa: PLC0415

        t = self.tensors[0]
        return decode(t.data.reshape(self.shape[0], -1), t.ggml_type, self.shape[1]).astype(np.float64)


def store_matrix(
    name: str, w: np.ndarray, H: np.ndarray | None, cfg: HbvlaConfig, *, H_saliency: np.ndarray | None = None,
    stored_as: str | None = None,
) -> StoredMatrix:
    """``stored_as``: the weight's name in the GGUF when the exporter renames it (its tensors hang off
    that name; ``name`` otherwise)."""
    stored = stored_as or name
    w = np.asarray(w, np.float64)
    shape = (int(w.shape[0]), int(w.shape[1]))
    ok, reason = suits_hbvla(shape)
    if ok:
        q = quantize_matrix(w, H, cfg, H_saliency=H_saliency)
        tensors = encode_matrix(q, base_name(stored))
        return StoredMatrix(name, shape, "hbvla", tensors, count_bits(tensors, shape), hbvla=q)
    from omnimodel.gguf.encoders import encode  # noqa: PLC0415

    t = fallback_type(shape)
    imp = None if H is None or t == GGMLType.F16 else np.maximum(np.diag(np.asarray(H, np.float64)), 0)
    imp = None if imp is None else (imp + 1e-6 * (imp.mean() or 1.0)).astype(np.float32)
    data = np.asarray(encode(w.astype(np.float32), t, importance=imp)).ravel()
    tensor = StoredTensor(stored, t, shape, data, "fallback")
    bits = fallback_bits(shape)
    assert bits.total == 8 * tensor.n_bytes
    return StoredMatrix(name, shape, "fallback", [tensor], bits, fallback=t, reason=reason)


def write_stored(writer, s: StoredMatrix) -> list:
    """Add a stored matrix's tensors to an open ``GGUFModelWriter`` byte for byte."""
    return [writer.add_encoded(t.name, t.data, t.ggml_type, t.shape) for t in s.tensors]


__all__ = ["StoredMatrix", "store_matrix", "write_stored"]
