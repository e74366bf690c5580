"""Codebook (IQ) types: encoded by ggml's own quantizer through the runtime bindings.

ggml's quantize_chunk takes one imatrix vector for all rows of a call, so a per-row importance matrix is
honoured by calling it one row at a time; a shared vector (or none) goes in one call per chunk of rows,
which gives the same bytes because ggml quantizes rows independently.
"""

from __future__ import annotations

from types import ModuleType

import numpy as np

from ..types import REQUIRES_IMPORTANCE, GGMLType

_ROWS_PER_CALL = 256


def _runtime() -> ModuleType:  # imported lazily so the numpy encoders work without the compiled extension
    try:
        from omnimodel import _runtime
    except ImportError as e:  # pragma: no cover - depends on the build
        raise RuntimeError(
            "IQ types are encoded by ggml through omnimodel._runtime, which is not built/importable"
        ) from e
    return _runtime


def encode_ggml(x: np.ndarray, t: GGMLType, importance: np.ndarray | None) -> np.ndarray:
    """x float (rows, n); importance None, float32 (n,) or float32 (rows, n) (already validated)."""
    if importance is None and t in REQUIRES_IMPORTANCE:
        raise ValueError(
            f"{t.name} requires an importance vector (ggml refuses to quantize it without an imatrix)"
        )
    rt = _runtime()
    rows = x.shape[0]
    parts: list[np.ndarray] = []
    if importance is not None and importance.ndim == 2:
        for r in range(rows):
            xr = np.ascontiguousarray(x[r : r + 1], dtype=np.float32)
            parts.append(rt.ggml_quantize(int(t), xr, np.ascontiguousarray(importance[r], dtype=np.float32)))
    else:
        imp = None if importance is None else np.ascontiguousarray(importance, dtype=np.float32)
        for r0 in range(0, rows, _ROWS_PER_CALL):
            xr = np.ascontiguousarray(x[r0 : r0 + _ROWS_PER_CALL], dtype=np.float32)
            parts.append(rt.ggml_quantize(int(t), xr, imp))
    return np.concatenate(parts, axis=0) if parts else np.zeros((0, 0), dtype=np.uint8)
