"""Where a GGUF file came from and what it achieved: the `omnimodel.*` keys and the numbers behind them.

The writer stores these numbers and `omnimodel inspect` recomputes them from the tensor table, so both
go through the functions here and cannot disagree about what "bits per weight" means.

Bits per weight: one vocabulary, three figures (`BpwFigures`), named the same in the keys, in
`convert`'s summary, in `inspect` and in the docs:

    quantized   over the block-quantized matrices: what `--bpw` constrains, compared with
                omnimodel.target_bpw                                   key omnimodel.quantized_bpw
    matrices    over every matrix (>= 2-D), float heads and embeddings too  key omnimodel.achieved_bpw
    file        over every tensor in the file                          key omnimodel.achieved_bpw_total

All count bits per *real* weight (a row-padded matrix's padding costs bits, counts no weights).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

import gguf

from omnimodel.gguf.types import GGMLType, type_info

KEY_VERSION = "omnimodel.version"
KEY_METHOD = "omnimodel.method"
KEY_TARGET_BPW = "omnimodel.target_bpw"
KEY_ACHIEVED_BPW = "omnimodel.achieved_bpw"
KEY_ACHIEVED_BPW_TOTAL = "omnimodel.achieved_bpw_total"
# bits per real weight over the block-quantized tensors only (what a --bpw budget constrains, when the
# quantizer left every other matrix in a float type); absent when nothing is block-quantized
KEY_QUANTIZED_BPW = "omnimodel.quantized_bpw"
# Matrices stored with zero-padded rows (a block type on a width it does not divide): their names and
# real row widths, so bits per weight are counted per real weight, not per stored element.
KEY_PADDED_NAMES = "omnimodel.padded.names"
KEY_PADDED_WIDTHS = "omnimodel.padded.widths"

PROVENANCE_KEYS: frozenset[str] = frozenset(
    {KEY_VERSION, KEY_METHOD, KEY_TARGET_BPW, KEY_ACHIEVED_BPW, KEY_ACHIEVED_BPW_TOTAL, KEY_QUANTIZED_BPW, KEY_PADDED_NAMES,
     KEY_PADDED_WIDTHS}
)

#: llama.h's `enum llama_ftype` value for Q2_0; gguf-py 0.19 predates it.
LLAMA_FTYPE_MOSTLY_Q2_0 = 41

_L = gguf.LlamaFileType
# K-quants map to the "_M" mixes because that is what llama.cpp reports for a file it has to guess.
_FILE_TYPE_OF: dict[GGMLType, int] = {
    GGMLType.F32: _L.ALL_F32,
    GGMLType.F16: _L.MOSTLY_F16,
    GGMLType.BF16: _L.MOSTLY_BF16,
    GGMLType.Q4_0: _L.MOSTLY_Q4_0,
    GGMLType.Q4_1: _L.MOSTLY_Q4_1,
    GGMLType.Q5_0: _L.MOSTLY_Q5_0,
    GGMLType.Q5_1: _L.MOSTLY_Q5_1,
    GGMLType.Q8_0: _L.MOSTLY_Q8_0,
    GGMLType.Q2_K: _L.MOSTLY_Q2_K,
    GGMLType.Q3_K: _L.MOSTLY_Q3_K_M,
    GGMLType.Q4_K: _L.MOSTLY_Q4_K_M,
    GGMLType.Q5_K: _L.MOSTLY_Q5_K_M,
    GGMLType.Q6_K: _L.MOSTLY_Q6_K,
    GGMLType.IQ2_XXS: _L.MOSTLY_IQ2_XXS,
    GGMLType.IQ2_XS: _L.MOSTLY_IQ2_XS,
    GGMLType.IQ2_S: _L.MOSTLY_IQ2_S,
    GGMLType.IQ3_XXS: _L.MOSTLY_IQ3_XXS,
    GGMLType.IQ3_S: _L.MOSTLY_IQ3_S,
    GGMLType.IQ1_S: _L.MOSTLY_IQ1_S,
    GGMLType.IQ1_M: _L.MOSTLY_IQ1_M,
    GGMLType.IQ4_NL: _L.MOSTLY_IQ4_NL,
    GGMLType.IQ4_XS: _L.MOSTLY_IQ4_XS,
    GGMLType.TQ1_0: _L.MOSTLY_TQ1_0,
    GGMLType.TQ2_0: _L.MOSTLY_TQ2_0,
    GGMLType.MXFP4: _L.MOSTLY_MXFP4_MOE,
    GGMLType.NVFP4: _L.MOSTLY_NVFP4,
    GGMLType.Q1_0: _L.MOSTLY_Q1_0,
    GGMLType.Q2_0: LLAMA_FTYPE_MOSTLY_Q2_0,
}


class TensorLike(Protocol):
    """What the statistics need from a tensor; both the writer's and the reader's records qualify."""

    @property
    def ggml_type(self) -> GGMLType: ...

    @property
    def shape(self) -> tuple[int, ...]: ...

    @property
    def n_elements(self) -> int: ...

    @property
    def n_bytes(self) -> int: ...

    @property
    def n_weights(self) -> int: ...


# An HBVLA matrix is stored as several tensors "<base>.hb.<suffix>" (omnimodel.quant.hbvla.storage, whose
# SUFFIXES these must equal: a test checks); every size figure counts them as one matrix of out x in
# real weights, so their bits are charged per real weight, not per plane element.
HBVLA_INFIX = ".hb."
HBVLA_SUFFIXES = ("hdr", "perm", "p0", "p1", "p2", "mu", "sidx", "s0", "s1", "sa", "smu")
HBVLA_TYPE_NAME = "HBVLA"


def hbvla_base(name: str) -> str | None:
    """The base of the HBVLA matrix a tensor name belongs to, or None."""
    i = name.rfind(HBVLA_INFIX)
    return name[:i] if i >= 0 and name[i + len(HBVLA_INFIX):] in HBVLA_SUFFIXES else None


@dataclass(frozen=True)
class GroupedMatrix:
    """The tensors of one HBVLA matrix as one matrix: (out, in) real weights, every stored byte."""

    name: str  # "<base>.weight"
    shape: tuple[int, int]  # (out, in): the planes' rows, the permutation's length
    n_bytes: int
    parts: tuple[str, ...]
    ggml_type: GGMLType = GGMLType.Q1_0  # its planes' type: block-quantized
    type_name: str = HBVLA_TYPE_NAME

    @property
    def n_elements(self) -> int:
        return self.shape[0] * self.shape[1]

    @property
    def n_weights(self) -> int:
        return self.n_elements

    @property
    def bpw(self) -> float:
        return 8.0 * self.n_bytes / self.n_elements


def group_hbvla(tensors: Iterable[TensorLike]) -> list:
    """``tensors`` with each HBVLA matrix's tensors replaced by one ``GroupedMatrix`` (at its first tensor's
    place); tensors of an incomplete group (no plane or permutation) are left as they are."""
    tensors = list(tensors)
    groups: dict[str, list] = {}
    for t in tensors:
        base = hbvla_base(t.name)
        if base is not None:
            groups.setdefault(base, []).append(t)
    merged: dict[str, GroupedMatrix] = {}
    for base, ts in groups.items():
        by = {t.name[len(base) + len(HBVLA_INFIX):]: t for t in ts}
        if "p0" not in by or "perm" not in by or len(by["p0"].shape) != 2:
            continue
        shape = (int(by["p0"].shape[0]), int(by["perm"].shape[-1]))
        merged[base] = GroupedMatrix(base + ".weight", shape, sum(t.n_bytes for t in ts), tuple(t.name for t in ts))
    out, placed = [], set()
    for t in tensors:
        base = hbvla_base(t.name)
        if base in merged:
            if base not in placed:
                out.append(merged[base])
                placed.add(base)
            continue
        out.append(t)
    return out


def real_weights(n_elements: int, shape: tuple[int, ...], real_width: int | None) -> int:
    """Weights a tensor stores, less the zero padding of a row-padded matrix (``real_width`` of its rows
    are real); what bits per weight divide by."""
    return n_elements if real_width is None else n_elements // shape[-1] * real_width


def parameter_count(tensors: Iterable[TensorLike]) -> int:
    """The model's parameters as every tool reports them (inspect, bench): real weights in the file,
    row padding excluded."""
    return sum(t.n_weights for t in group_hbvla(tensors))


def is_matrix(t: TensorLike) -> bool:
    """Tensors we count as quantizable weights: norms and biases (1-D) stay out of the headline bpw."""
    return len(t.shape) >= 2


def bits_per_weight(tensors: Iterable[TensorLike], *, matrices_only: bool) -> float:
    """Stored bits per element; 0.0 when nothing qualifies, so callers never divide by zero."""
    selected = [t for t in tensors if is_matrix(t) or not matrices_only]
    # n_weights: the real weights, so the zero padding of a padded matrix costs bits but counts no weights
    n_weights = sum(t.n_weights for t in selected)
    if n_weights == 0:
        return 0.0
    return 8.0 * sum(t.n_bytes for t in selected) / n_weights


@dataclass(frozen=True)
class BpwFigures:
    """The three bits-per-weight figures of a set of tensors (module docstring)."""

    quantized: float | None  # None when nothing is block-quantized (an F32/F16/BF16 file)
    matrices: float
    file: float

    def describe(self, target: float | None = None) -> str:
        """One line, the same words everywhere: 'quantized 2.497 bpw (the --bpw measure, target 2.5), ...'."""
        head = "no block-quantized matrices" if self.quantized is None else f"quantized {self.quantized:.3f} bpw"
        if self.quantized is not None:
            head += " (the --bpw measure" + (f", target {target:g})" if target is not None else ")")
        return f"{head}, matrices {self.matrices:.3f} bpw, file {self.file:.3f} bpw"


def bpw_figures(tensors: Iterable[TensorLike]) -> BpwFigures:
    """The three figures, an HBVLA matrix's tensors counted as one matrix (``group_hbvla``)."""
    tensors = group_hbvla(tensors)
    blocked = [t for t in tensors if type_info(t.ggml_type).block_size > 1]
    return BpwFigures(
        quantized=bits_per_weight(blocked, matrices_only=False) if blocked else None,
        matrices=bits_per_weight(tensors, matrices_only=True),
        file=bits_per_weight(tensors, matrices_only=False),
    )


def dominant_type(tensors: Sequence[TensorLike]) -> GGMLType | None:
    """The type holding the most elements among the matrices (all tensors if there are no matrices)."""
    pool = [t for t in tensors if is_matrix(t)] or list(tensors)
    totals: dict[GGMLType, int] = {}
    for t in pool:
        totals[t.ggml_type] = totals.get(t.ggml_type, 0) + t.n_elements
    if not totals:
        return None
    # Ties go to the lower type id so the result never depends on tensor order.
    return max(sorted(totals), key=lambda gt: totals[gt])


def llama_file_type(tensors: Sequence[TensorLike]) -> int:
    """`general.file_type` for these tensors, in llama.cpp's `llama_ftype` numbering."""
    dominant = dominant_type(tensors)
    if dominant is None:
        return int(_L.ALL_F32)
    return int(_FILE_TYPE_OF.get(dominant, _L.GUESSED))


def file_type_name(ftype: int) -> str:
    if ftype == LLAMA_FTYPE_MOSTLY_Q2_0:
        return "MOSTLY_Q2_0"
    try:
        return _L(ftype).name
    except ValueError:
        return f"unknown ({ftype})"
