"""Per-matrix statistics kept on disk and read back one matrix at a time.

The Fisher diagonal has one fp32 value per weight (4 bytes per parameter: 3.2 GB for the 0.8B matrices
of a real-width OpenVLA-OFT, 27 GB at 7B) and GPTQ's E[x xᵀ] one per input pair. Held in memory next
to the model they would dominate the quantization pass, yet each is used by one matrix at a time
(allocation's measured errors, the matrix's own quantization). So a calibration pass writes each
finished matrix's array to ``<dir>/<field>/<name>.npy`` and frees it; ``SpilledArrays`` is the
read-only ``Mapping`` that loads one on access (and never caches it).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


class SpilledArrays(Mapping[str, np.ndarray]):
    """name -> array, one ``.npy`` file per name in ``directory`` (created on first ``put``)."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self._files: dict[str, Path] = {}

    def put(self, name: str, array: np.ndarray) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"{_UNSAFE.sub('_', name)}.npy"
        if name in self._files or any(p == path for p in self._files.values()):
            raise ValueError(f"{name}: already stored in {self.directory}")
        np.save(path, np.ascontiguousarray(array), allow_pickle=False)
        self._files[name] = path

    def __getitem__(self, name: str) -> np.ndarray:
        return np.load(self._files[name], allow_pickle=False)

    def __iter__(self) -> Iterator[str]:
        return iter(self._files)

    def __len__(self) -> int:
        return len(self._files)

    def nbytes(self) -> int:
        return sum(p.stat().st_size for p in self._files.values())


class MergedArrays(Mapping[str, np.ndarray]):
    """Several mappings with disjoint names read as one, in order, without copying any array."""

    def __init__(self, parts: Sequence[Mapping[str, np.ndarray]]) -> None:
        self._where: dict[str, Mapping[str, np.ndarray]] = {}
        for p in parts:
            for name in p:
                if name in self._where:
                    raise ValueError(f"{name}: in two of the merged statistics")
                self._where[name] = p

    def __getitem__(self, name: str) -> np.ndarray:
        return self._where[name][name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._where)

    def __len__(self) -> int:
        return len(self._where)


def merge_arrays(parts: Sequence[Mapping[str, np.ndarray]]) -> Mapping[str, np.ndarray]:
    """A plain dict when every part is one (small, in memory), else a ``MergedArrays`` view."""
    if all(isinstance(p, dict) for p in parts):
        out: dict[str, np.ndarray] = {}
        for p in parts:
            out.update(p)
        return out
    return MergedArrays(parts)


__all__ = ["MergedArrays", "SpilledArrays", "merge_arrays"]
