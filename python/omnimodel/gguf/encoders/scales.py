"""Block scales exactly as a GGML block stores them, so a quantizer can optimise them and hand them back."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..types import GGMLType, parse_type, type_info


@dataclass(frozen=True)
class ScaleLayout:
    """Which scale fields a type stores and the range of its integer codes."""

    n_sub: int  # sub-blocks per block carrying their own integer scale code (0: d is the only scale)
    sc_range: tuple[int, int] = (0, 0)
    has_min: bool = False  # affine types: a dmin per block and a min code per sub-block
    m_range: tuple[int, int] = (0, 0)


SCALE_LAYOUTS: dict[GGMLType, ScaleLayout] = {
    GGMLType.Q8_0: ScaleLayout(0),
    GGMLType.Q4_0: ScaleLayout(0),
    GGMLType.Q1_0: ScaleLayout(0),
    GGMLType.Q2_0: ScaleLayout(0),
    GGMLType.Q2_K: ScaleLayout(16, (0, 15), True, (0, 15)),
    GGMLType.Q3_K: ScaleLayout(16, (-32, 31)),
    GGMLType.Q4_K: ScaleLayout(8, (0, 63), True, (0, 63)),
    GGMLType.Q5_K: ScaleLayout(8, (0, 63), True, (0, 63)),
    GGMLType.Q6_K: ScaleLayout(16, (-128, 127)),
}


@dataclass(frozen=True)
class BlockScales:
    """The stored scales of a (rows, n_per_row) tensor of one GGML type.

    Shapes: ``d`` and ``dmin`` are (rows, n_blocks); ``sc`` and ``m`` are (rows, n_blocks, n_sub).

    * Q8_0, Q4_0, Q1_0, Q2_0: ``d`` only (the fp16 block scale; Q1_0 and Q2_0 may store a negative d).
    * Q3_K: ``d`` and ``sc``, the signed sub-block scale in [-32, 31] (the stored 6-bit field minus 32).
    * Q6_K: ``d`` and ``sc``, the int8 sub-block scale in [-128, 127].
    * Q2_K: ``d``, ``dmin``, ``sc`` and ``m`` in [0, 15] (the two nibbles of ``scales[s]``).
    * Q4_K, Q5_K: ``d``, ``dmin``, ``sc`` and ``m`` in [0, 63] (before the 12-byte packing).

    The decoded sub-block scale is fp32(d*sc) and the decoded offset fp32(dmin*m), as in ggml.
    """

    ggml_type: GGMLType
    d: np.ndarray
    dmin: np.ndarray | None = None
    sc: np.ndarray | None = None
    m: np.ndarray | None = None

    @property
    def rows(self) -> int:
        return int(self.d.shape[0])

    def row_slice(self, start: int, stop: int) -> "BlockScales":
        def cut(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else a[start:stop]

        return BlockScales(self.ggml_type, self.d[start:stop], cut(self.dmin), cut(self.sc), cut(self.m))

    @staticmethod
    def concat(parts: list["BlockScales"]) -> "BlockScales":
        def cat(name: str) -> np.ndarray | None:
            arrs = [getattr(p, name) for p in parts]
            return None if arrs[0] is None else np.concatenate(arrs, axis=0)

        return BlockScales(parts[0].ggml_type, cat("d"), cat("dmin"), cat("sc"), cat("m"))


def _check_fp16(name: str, a: object, shape: tuple[int, ...], tname: str) -> np.ndarray:
    arr = np.asarray(a)
    if arr.shape != shape:
        raise ValueError(f"{tname} scales: {name} must have shape {shape}, got {arr.shape}")
    if arr.dtype.kind != "f":
        raise ValueError(f"{tname} scales: {name} must be a float array (fp16 values), got dtype {arr.dtype}")
    h = arr.astype(np.float16)
    if not np.all(np.isfinite(h)):
        raise ValueError(f"{tname} scales: {name} has non-finite values or values outside the fp16 range")
    if arr.dtype != np.float16 and not np.array_equal(h.astype(arr.dtype), arr):
        raise ValueError(f"{tname} scales: {name} holds values that are not exactly representable in fp16")
    return h


def _check_codes(name: str, a: object, shape: tuple[int, ...], lohi: tuple[int, int], tname: str) -> np.ndarray:
    arr = np.asarray(a)
    if arr.shape != shape:
        raise ValueError(f"{tname} scales: {name} must have shape {shape}, got {arr.shape}")
    if arr.dtype.kind not in "iu":
        raise ValueError(f"{tname} scales: {name} must be an integer array, got dtype {arr.dtype}")
    lo, hi = lohi
    if arr.size and (arr.min() < lo or arr.max() > hi):
        raise ValueError(f"{tname} scales: {name} codes must lie in [{lo}, {hi}]")
    return arr.astype(np.int16)


def validate_scales(scales: object, ggml_type: GGMLType | int | str, rows: int, n_per_row: int) -> BlockScales:
    """Check precomputed scales against the tensor they are meant for; returns a normalised copy."""
    t = parse_type(ggml_type)
    if not isinstance(scales, BlockScales):
        raise ValueError(f"scales must be a BlockScales, got {type(scales).__name__}")
    if t not in SCALE_LAYOUTS:
        raise ValueError(f"{t.name} takes no precomputed scales")
    if parse_type(scales.ggml_type) != t:
        raise ValueError(f"scales were made for {parse_type(scales.ggml_type).name}, not {t.name}")
    layout = SCALE_LAYOUTS[t]
    nb = n_per_row // type_info(t).block_size
    name = t.name
    d = _check_fp16("d", scales.d, (rows, nb), name)
    dmin = sc = m = None
    if layout.has_min:
        if scales.dmin is None or scales.m is None:
            raise ValueError(f"{name} scales need dmin and m")
        dmin = _check_fp16("dmin", scales.dmin, (rows, nb), name)
        m = _check_codes("m", scales.m, (rows, nb, layout.n_sub), layout.m_range, name)
    elif scales.dmin is not None or scales.m is not None:
        raise ValueError(f"{name} scales have no dmin/m")
    if layout.n_sub:
        if scales.sc is None:
            raise ValueError(f"{name} scales need sc")
        sc = _check_codes("sc", scales.sc, (rows, nb, layout.n_sub), layout.sc_range, name)
    elif scales.sc is not None:
        raise ValueError(f"{name} scales have no sc")
    return BlockScales(t, d, dmin, sc, m)
