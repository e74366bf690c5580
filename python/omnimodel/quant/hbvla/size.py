"""Honest size: every stored bit of an HBVLA matrix, the knobs that meet a bpw target, and the fallback.

``count_bits`` sums the bytes of the tensors ``storage.encode_matrix`` writes and splits them by what they
hold: sign bits (main plane 0 at real positions), group bits (membership / group-mean planes), Q1_0
scales (one fp16 per plane and 128 positions), means, permutation, salient indices, salient signs /
column scales / row scales / means, the header, and the plane bits spent on zero padding. The parts add up to the file's
bytes exactly. ``estimate_bits`` gives the same breakdown from a shape and a configuration alone (with the
salient count at its cap: the worst case), which the solver uses before anything is quantized.

A matrix whose shape does not suit the method (odd input width: no Haar pairs; fewer than 128 inputs,
or padding to 128 that would cost more than a third of the plane) is stored in a fallback GGML type
instead, counted at that type's size: ``fallback_type`` picks the first of Q2_0, Q4_0, Q8_0 that divides
the row without padding, else F16.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

from omnimodel.gguf.types import GGMLType, type_info

from .config import HbvlaConfig, hbvla
from .haar import QK, padded, row_layout
from .storage import HEADER_LEN, StoredTensor

MIN_INPUTS = QK
MAX_PADDING = 1.0 / 3.0
FALLBACK_TYPES = (GGMLType.Q2_0, GGMLType.Q4_0, GGMLType.Q8_0, GGMLType.F16)
_Q1_0_SCALE_BITS = 16


@dataclass(frozen=True)
class BitBreakdown:
    shape: tuple[int, int]  # (out, in)
    signs: int = 0
    group_bits: int = 0
    scales: int = 0
    means: int = 0
    permutation: int = 0
    salient_idx: int = 0
    salient_signs: int = 0
    salient_scales: int = 0
    salient_row_scales: int = 0
    salient_means: int = 0
    header: int = 0
    padding: int = 0
    fallback: str | None = None  # the GGML type used instead of HBVLA
    fallback_bits: int = 0

    @property
    def total(self) -> int:
        return sum(v for k, v in asdict(self).items() if k not in ("shape", "fallback"))

    @property
    def n_weights(self) -> int:
        return self.shape[0] * self.shape[1]

    @property
    def bpw(self) -> float:
        return self.total / self.n_weights

    def as_dict(self) -> dict:
        d = asdict(self)
        d["shape"] = list(self.shape)
        d["total"] = self.total
        d["bpw"] = self.bpw
        return d


def suits_hbvla(shape: tuple[int, int]) -> tuple[bool, str]:
    """Whether HBVLA can store a (out, in) matrix well, and why not."""
    out_dim, n_in = shape
    if n_in % 2:
        return False, f"{n_in} inputs is odd: the Haar transform pairs columns"
    if n_in < MIN_INPUTS:
        return False, f"{n_in} inputs is fewer than one Q1_0 block ({QK})"
    if padded(n_in) - n_in > MAX_PADDING * n_in:
        return False, f"padding {n_in} inputs to {padded(n_in)} would waste more than a third of every plane"
    if out_dim < 1:
        return False, "no outputs"
    return True, ""


def fallback_type(shape: tuple[int, int]) -> GGMLType:
    n_in = shape[1]
    for t in FALLBACK_TYPES:
        if n_in % type_info(t).block_size == 0:
            return t
    return GGMLType.F16


def fallback_bits(shape: tuple[int, int]) -> BitBreakdown:
    t = fallback_type(shape)
    return BitBreakdown(tuple(shape), fallback=t.name, fallback_bits=8 * shape[0] * type_info(t).row_bytes(shape[1]))


def _plane_parts(rows: int, n_valid: int, n_planes: int) -> tuple[int, int, int]:
    """(bits at real positions per plane, scale bits per plane, padding bits per plane)."""
    w = padded(n_valid)
    return rows * n_valid, rows * (w // QK) * _Q1_0_SCALE_BITS, rows * (w - n_valid)


def count_bits(tensors: Sequence[StoredTensor], shape: tuple[int, int]) -> BitBreakdown:
    """The breakdown of what ``storage.encode_matrix`` wrote for one (out, in) matrix."""
    out_dim, n_in = shape
    parts: dict[str, int] = {}

    def add(key: str, v: int) -> None:
        parts[key] = parts.get(key, 0) + v

    for t in tensors:
        bits = 8 * t.n_bytes
        if t.role in ("signs", "group_bits", "salient_signs"):
            # main planes: out rows over the inputs; salient planes: k rows over the outputs
            rows, n_valid = (out_dim, n_in) if t.role != "salient_signs" else (t.shape[0], out_dim)
            real, sc, pad = _plane_parts(rows, n_valid, 1)
            assert real + sc + pad == bits, (t.name, real, sc, pad, bits)
            add(t.role, real)
            add("salient_scales" if t.role == "salient_signs" else "scales", sc)
            add("padding", pad)
        else:
            add(t.role, bits)
    return BitBreakdown(tuple(shape), **parts)


def estimate_bits(shape: tuple[int, int], cfg: HbvlaConfig, n_salient: int | None = None) -> BitBreakdown:
    """The breakdown for a (out, in) matrix under ``cfg`` with ``n_salient`` salient columns (default:
    the cap, the most it can take), without quantizing; a shape that does not suit -> the fallback."""
    ok, _ = suits_hbvla(shape)
    if not ok:
        return fallback_bits(shape)
    out_dim, n_in = shape
    k = min(cfg.salient_cap if n_salient is None else n_salient, n_in)
    idx_bits = 16 if n_in <= 32767 else 32
    real, sc, pad = _plane_parts(out_dim, n_in, 1)
    p = cfg.main_planes
    if cfg.mean == "band":
        n_mu = row_layout(n_in, cfg.haar).n_bands
    elif cfg.mean == "group":
        n_mu = padded(n_in) // QK
    else:
        n_mu = 0
    b = dict(signs=real, group_bits=(p - 1) * real, scales=p * sc, padding=p * pad, means=16 * out_dim * n_mu,
             permutation=idx_bits * n_in, header=32 * HEADER_LEN)
    if k:
        sreal, ssc, spad = _plane_parts(k, out_dim, 1)
        q = cfg.salient_order
        b.update(salient_idx=idx_bits * k, salient_signs=q * sreal, salient_scales=q * ssc,
                 salient_row_scales=16 * q * out_dim, salient_means=16 * out_dim)
        b["padding"] += q * spad
    return BitBreakdown(tuple(shape), **b)


# ------------------------------------------------------------------------------------------ solver


SOLVER_CAPS = (128, 32, 8, 0)


def solver_candidates(base: HbvlaConfig | None = None) -> list[HbvlaConfig]:
    """Knob settings the solver chooses from, most accurate (and largest) first: element grouping beats
    block grouping at every shape measured (docs/hbvla.md), and a larger salient cap can only help (the
    count is chosen by error, and bits are charged for the cap: the worst case)."""
    base = base or hbvla()
    # the base's own cap is the most tried: an ablation without the salient part keeps it off
    caps = sorted({min(cap, base.salient_cap) for cap in SOLVER_CAPS}, reverse=True)
    return [base.with_(grouping=g, salient_cap=cap, name=f"hbvla-{g}-sal{cap}")
            for g in ("element", "block") for cap in caps]


class BudgetError(ValueError):
    """No knob setting meets the bpw target; the message names the feasible range."""


@dataclass(frozen=True)
class Solution:
    config: HbvlaConfig
    bpw: float  # worst case (salient counts at their cap), fallback matrices included
    feasible: tuple[float, float]  # the least and the most bpw the candidates reach
    fallbacks: int  # matrices stored in a fallback type


def model_bpw(shapes: Iterable[tuple[int, int]], cfg: HbvlaConfig) -> tuple[float, int]:
    total = n = fb = 0
    for s in shapes:
        b = estimate_bits(s, cfg)
        total += b.total
        n += b.n_weights
        fb += b.fallback is not None
    return (total / n if n else 0.0), fb


def solve(shapes: Sequence[tuple[int, int]], target_bpw: float, base: HbvlaConfig | None = None) -> Solution:
    """The most accurate candidate whose worst-case bits per weight over ``shapes`` is at most
    ``target_bpw``; BudgetError naming the feasible range when even the smallest does not fit."""
    shapes = [tuple(int(d) for d in s) for s in shapes]
    if not shapes:
        raise BudgetError("no matrices to quantize")
    cands = solver_candidates(base)
    sized = [(c, *model_bpw(shapes, c)) for c in cands]
    lo, hi = min(s[1] for s in sized), max(s[1] for s in sized)
    for c, bpw, fb in sized:
        if bpw <= target_bpw + 1e-9:
            return Solution(c, bpw, (lo, hi), fb)
    raise BudgetError(
        f"HBVLA cannot meet {target_bpw:g} bits per weight on these matrices: every stored bit counted, its "
        f"knobs reach {lo:.3f} to {hi:.3f} bpw"
    )


__all__ = [
    "BitBreakdown",
    "BudgetError",
    "Solution",
    "count_bits",
    "estimate_bits",
    "fallback_bits",
    "fallback_type",
    "model_bpw",
    "solve",
    "solver_candidates",
    "suits_hbvla",
]
