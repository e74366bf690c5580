"""GGML tensor types as omnimodel sees them: ids, block geometry, and how we encode each one.

The ids and block sizes are ggml 0.25.3's (`enum ggml_type` / `type_traits`). gguf-py mirrors most of
them; Q2_0 (id 42) is newer than gguf-py 0.19, so the table below is the single place the project reads
block geometry from instead of reaching into `gguf.constants` everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum


class GGMLType(IntEnum):
    F32 = 0
    F16 = 1
    Q4_0 = 2
    Q4_1 = 3
    Q5_0 = 6
    Q5_1 = 7
    Q8_0 = 8
    Q8_1 = 9
    Q2_K = 10
    Q3_K = 11
    Q4_K = 12
    Q5_K = 13
    Q6_K = 14
    Q8_K = 15
    IQ2_XXS = 16
    IQ2_XS = 17
    IQ3_XXS = 18
    IQ1_S = 19
    IQ4_NL = 20
    IQ3_S = 21
    IQ2_S = 22
    IQ4_XS = 23
    I8 = 24
    I16 = 25
    I32 = 26
    I64 = 27
    F64 = 28
    IQ1_M = 29
    BF16 = 30
    TQ1_0 = 34
    TQ2_0 = 35
    MXFP4 = 39
    NVFP4 = 40
    Q1_0 = 41
    Q2_0 = 42


@dataclass(frozen=True)
class TypeInfo:
    type: GGMLType
    block_size: int  # elements per block (along ne[0], the PyTorch input dimension)
    type_size: int  # bytes per block

    @property
    def name(self) -> str:
        return self.type.name

    @property
    def bpw(self) -> float:
        return self.type_size * 8.0 / self.block_size

    def row_bytes(self, n_per_row: int) -> int:
        if n_per_row % self.block_size:
            raise ValueError(
                f"{self.name} needs rows that are a multiple of {self.block_size} elements, got {n_per_row}"
            )
        return n_per_row // self.block_size * self.type_size


_GEOMETRY: dict[GGMLType, tuple[int, int]] = {
    GGMLType.F32: (1, 4),
    GGMLType.F16: (1, 2),
    GGMLType.Q4_0: (32, 18),
    GGMLType.Q4_1: (32, 20),
    GGMLType.Q5_0: (32, 22),
    GGMLType.Q5_1: (32, 24),
    GGMLType.Q8_0: (32, 34),
    GGMLType.Q8_1: (32, 36),
    GGMLType.Q2_K: (256, 84),
    GGMLType.Q3_K: (256, 110),
    GGMLType.Q4_K: (256, 144),
    GGMLType.Q5_K: (256, 176),
    GGMLType.Q6_K: (256, 210),
    GGMLType.Q8_K: (256, 292),
    GGMLType.IQ2_XXS: (256, 66),
    GGMLType.IQ2_XS: (256, 74),
    GGMLType.IQ3_XXS: (256, 98),
    GGMLType.IQ1_S: (256, 50),
    GGMLType.IQ4_NL: (32, 18),
    GGMLType.IQ3_S: (256, 110),
    GGMLType.IQ2_S: (256, 82),
    GGMLType.IQ4_XS: (256, 136),
    GGMLType.I8: (1, 1),
    GGMLType.I16: (1, 2),
    GGMLType.I32: (1, 4),
    GGMLType.I64: (1, 8),
    GGMLType.F64: (1, 8),
    GGMLType.IQ1_M: (256, 56),
    GGMLType.BF16: (1, 2),
    GGMLType.TQ1_0: (256, 54),
    GGMLType.TQ2_0: (256, 66),
    GGMLType.MXFP4: (32, 17),
    GGMLType.NVFP4: (64, 36),
    GGMLType.Q1_0: (128, 18),
    GGMLType.Q2_0: (64, 18),
}

#: Types our own numpy encoders write (importance- and precomputed-scale aware).
NUMPY_ENCODED: frozenset[GGMLType] = frozenset(
    {
        GGMLType.F32,
        GGMLType.F16,
        GGMLType.BF16,
        GGMLType.Q8_0,
        GGMLType.Q4_0,
        GGMLType.Q2_K,
        GGMLType.Q3_K,
        GGMLType.Q4_K,
        GGMLType.Q5_K,
        GGMLType.Q6_K,
        GGMLType.Q1_0,
        GGMLType.Q2_0,
    }
)

#: Codebook types: encoded by ggml's own quantizer through the runtime bindings, row by row.
GGML_ENCODED: frozenset[GGMLType] = frozenset(
    {
        GGMLType.IQ1_S,
        GGMLType.IQ1_M,
        GGMLType.IQ2_XXS,
        GGMLType.IQ2_XS,
        GGMLType.IQ2_S,
        GGMLType.IQ3_XXS,
        GGMLType.IQ3_S,
        GGMLType.IQ4_XS,
        GGMLType.IQ4_NL,
    }
)

#: ggml refuses to quantize these without an importance matrix.
REQUIRES_IMPORTANCE: frozenset[GGMLType] = frozenset({GGMLType.IQ2_XXS, GGMLType.IQ2_XS, GGMLType.IQ1_S})


def type_info(t: GGMLType | int | str) -> TypeInfo:
    """Geometry of a GGML type given as enum, id or (case-insensitive) name."""
    gt = parse_type(t)
    block, size = _GEOMETRY[gt]
    return TypeInfo(gt, block, size)


def parse_type(t: GGMLType | int | str) -> GGMLType:
    if isinstance(t, GGMLType):
        return t
    if isinstance(t, str):
        try:
            return GGMLType[t.strip().upper()]
        except KeyError:
            raise ValueError(f"unknown GGML type name {t!r}") from None
    try:
        return GGMLType(int(t))
    except ValueError:
        raise ValueError(f"unknown GGML type id {t!r}") from None
