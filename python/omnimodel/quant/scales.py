"""Intra-tensor scale optimisation (METHODS 1d, paper Eq. 10-11), with the scales as they are stored.

Per-element importance from the Action-Mixed Fisher:  w_i' = F_ii * w_i^2 / mean_{j in block}(w_j^2).

Candidates per tensor; rows are encoded independently by all of them, so the one with the lower weighted
error sum w' (w - w_hat)^2 is kept *per row* (``rows_won`` reports which supplied how many rows):

* ``alternating`` (types with a numpy encoder: Q8_0, Q4_0, Q2_0, Q1_0, Q2_K..Q6_K): the encoder's
  importance-weighted fit of the *stored* fields (fp16 d/dmin, 4/6/8-bit sub-block codes), then further rounds of the
  alternation: (1) codes fixed -> closed-form weighted LS of the block's (d, dmin), rounded to the fp16
  neighbours, kept per block only where the error drops; (2) scales fixed -> every element re-rounded to
  its nearest code (optimal per element for a uniform grid). The error never increases.
* ``ggml-rowwise`` (every quantized type): ggml's own quantizer called one row at a time with that row's
  w' as its importance vector, so ggml's search sees per-element importance;
* ``ggml-columns`` / ``ggml-uniform``: ggml with the column mean of w' as one shared vector, and with
  a uniform one (ggml's searches are not monotone in the importance: smoother vectors sometimes score
  better on the weighted measure itself, e.g. IQ3_S).

IQ types have the two ggml candidates. The result is the exact GGML block bytes of the (possibly zero-padded) rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from omnimodel.gguf.encoders import BlockScales, Quantized, encode, quantize
from omnimodel.gguf.encoders.scales import SCALE_LAYOUTS
from omnimodel.gguf.types import GGML_ENCODED, GGMLType, parse_type, type_info

from .ggmlq import decode_cols, ggml_encode, pad_cols, padded_width, weighted_error

FLOAT_TYPES = frozenset({GGMLType.F32, GGMLType.F16, GGMLType.BF16})


def element_importance(fisher: np.ndarray, w: np.ndarray, block_size: int) -> np.ndarray:
    """w' = F * w^2 / mean_block(w^2), blocks of ``block_size`` along the row (a short last block is
    averaged over its real elements only). All-zero blocks give zero importance."""
    w = np.asarray(w, np.float64)
    rows, n = w.shape
    width = -(-n // block_size) * block_size
    w2 = pad_cols(w * w, width).reshape(rows, -1, block_size)
    count = pad_cols(np.ones((1, n)), width).reshape(1, -1, block_size).sum(-1)
    mean = w2.sum(-1) / count
    mean_el = np.repeat(mean, block_size, axis=1)[:, :n]
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(mean_el > 0, np.asarray(fisher, np.float64) * w * w / mean_el, 0.0)
    return out.astype(np.float32)


@dataclass(frozen=True)
class TensorQuant:
    ggml_type: GGMLType
    data: np.ndarray  # uint8 (rows, row_bytes) of rows padded to pad_to
    pad_to: int
    method: str  # the winning candidate, "per-row" when rows went to different ones, or "float"
    errors: dict[str, float]  # weighted error of every candidate alone, and of the "chosen" result
    rows_won: dict[str, int] | None = None  # rows each candidate supplied

    @property
    def error(self) -> float:
        return self.errors.get("chosen", self.errors.get(self.method, float("nan")))

    def values(self, n_in: int) -> np.ndarray:
        return decode_cols(self.data, self.ggml_type, n_in)


def _block_basis(q: Quantized) -> tuple[np.ndarray, np.ndarray | None]:
    """Decoded values with (d, dmin) = (1, 0) and (0, 1): the values are d*V1 + dmin*V2 for fixed codes."""
    s = q.scales
    ones, zeros = np.ones_like(s.d), np.zeros_like(s.d)
    v1 = Quantized(
        q.ggml_type, q.codes, BlockScales(s.ggml_type, ones, None if s.dmin is None else zeros, s.sc, s.m)
    ).values()
    v2 = None
    if s.dmin is not None:
        v2 = Quantized(q.ggml_type, q.codes, BlockScales(s.ggml_type, zeros, ones, s.sc, s.m)).values()
    return v1.astype(np.float64), None if v2 is None else v2.astype(np.float64)


def _block_err(x: np.ndarray, y: np.ndarray, imp: np.ndarray, bs: int) -> np.ndarray:
    d = (x - y).reshape(x.shape[0], -1, bs)
    return (imp.reshape(d.shape) * d * d).sum(-1)


def _fp16_candidates(v: np.ndarray) -> list[np.ndarray]:
    h = v.astype(np.float16)
    return [h, np.nextafter(h, np.float16(np.inf)), np.nextafter(h, np.float16(-np.inf))]


def refine_scales(x: np.ndarray, t: GGMLType, imp: np.ndarray, q: Quantized, rounds: int = 3) -> Quantized:
    """Alternating rounds on top of a stored-scale fit; per block, a change is kept only if it helps."""
    bs = type_info(t).block_size
    x = np.asarray(x, np.float64)
    imp = np.asarray(imp, np.float64)
    err = _block_err(x, q.values(), imp, bs)
    for _ in range(rounds):
        v1, v2 = _block_basis(q)
        B1 = v1.reshape(x.shape[0], -1, bs)
        X = x.reshape(B1.shape)
        W = imp.reshape(B1.shape)
        a11 = (W * B1 * B1).sum(-1)
        b1 = (W * B1 * X).sum(-1)
        s = q.scales
        if v2 is None:
            d_new = np.where(a11 > 0, b1 / np.where(a11 > 0, a11, 1.0), s.d.astype(np.float64))
            pairs = [(dc, None) for dc in _fp16_candidates(d_new)]
        else:
            B2 = v2.reshape(B1.shape)
            a12 = (W * B1 * B2).sum(-1)
            a22 = (W * B2 * B2).sum(-1)
            b2 = (W * B2 * X).sum(-1)
            det = a11 * a22 - a12 * a12
            ok = det > 1e-12 * np.maximum(a11 * a22, 1e-300)
            sd = np.where(ok, det, 1.0)
            d_new = np.where(ok, (b1 * a22 - b2 * a12) / sd, s.d.astype(np.float64))
            m_new = np.where(ok, (a11 * b2 - a12 * b1) / sd, s.dmin.astype(np.float64))
            pairs = [(dc, mc) for dc in _fp16_candidates(d_new) for mc in _fp16_candidates(np.maximum(m_new, 0.0))]
        best_d, best_m = s.d.copy(), None if s.dmin is None else s.dmin.copy()
        improved = False
        for dc, mc in pairs:
            if not (np.all(np.isfinite(dc)) and (mc is None or np.all(np.isfinite(mc)))):
                dc = np.where(np.isfinite(dc), dc, s.d)
                mc = None if mc is None else np.where(np.isfinite(mc), mc, s.dmin)
            y = dc.astype(np.float64).repeat(bs, 1) * v1 + (
                0.0 if mc is None else mc.astype(np.float64).repeat(bs, 1) * v2
            )
            e = _block_err(x, y, imp, bs)
            better = e < err
            if better.any():
                improved = True
                err = np.where(better, e, err)
                best_d = np.where(better, dc, best_d)
                if mc is not None:
                    best_m = np.where(better, mc, best_m)
        if not improved:
            break
        scales = BlockScales(
            s.ggml_type, best_d.astype(np.float16), None if best_m is None else best_m.astype(np.float16), s.sc, s.m
        )
        # step (2): nearest codes for the new stored scales; keep per block whichever state is better
        q_new = quantize(x, t, scales=scales)
        e_new = _block_err(x, q_new.values(), imp, bs)
        if not np.any(e_new < err - 1e-12 * np.abs(err)) and np.allclose(e_new, err):
            q = q_new
            break
        # re-rounding is optimal per element for the new scales, so e_new <= err; guard float noise anyway
        if np.all(e_new <= err * (1 + 1e-9) + 1e-30):
            q, err = q_new, e_new
        else:
            break
    return q


def _floored(imp: np.ndarray) -> np.ndarray:
    """A sliver of weight everywhere: ggml divides by sums of importance, so an all-zero row (a dead
    input, or zero Fisher) would otherwise give it NaN scales."""
    mean = imp.mean(-1, keepdims=True)
    glob = float(imp.mean()) or 1.0
    return (imp + 1e-6 * np.where(mean > 0, mean, glob)).astype(np.float32)


def optimise_tensor(
    w: np.ndarray, t: GGMLType | str | int, importance: np.ndarray, *, pad_to: int | None = None, rounds: int = 3
) -> TensorQuant:
    """Quantize (rows, in) ``w`` to ``t`` minimising sum importance*(w - w_hat)^2, both candidates, best kept."""
    t = parse_type(t)
    w = np.asarray(w, np.float32)
    rows, n = w.shape
    imp = np.broadcast_to(np.asarray(importance, np.float32), w.shape)
    width = pad_to or padded_width(n, t)
    if t in FLOAT_TYPES:
        data = encode(w, t)
        e = weighted_error(w, decode_cols(data, t, n), imp)
        return TensorQuant(t, data, n, "float", {"float": e, "chosen": e})
    if width != padded_width(n, t) or width % type_info(t).block_size:
        raise ValueError(f"{t.name}: cannot store rows of {n} padded to {width}")
    candidates: dict[str, np.ndarray] = {}
    wp, ip = pad_cols(w, width), pad_cols(np.ascontiguousarray(imp), width)
    if t in SCALE_LAYOUTS and t not in GGML_ENCODED:
        q = quantize(wp, t, importance=ip)
        q = refine_scales(wp, t, ip, q, rounds)
        candidates["alternating"] = encode(wp, t, scales=q.scales)
    imp64 = np.asarray(imp, np.float64)
    candidates["ggml-rowwise"] = ggml_encode(w, t, _floored(imp64))
    # ggml's searches are not monotone in the importance (IQ3_S can do better on the weighted measure
    # with a smoother vector), so its column-mean form competes too; it costs one call per 256 rows
    candidates["ggml-columns"] = ggml_encode(w, t, _floored(imp64.mean(0)))
    # and with a uniform vector: ggml multiplies the importance by its own sqrt(sigma^2 + x^2) magnitude
    # weight, which double-counts the w^2 already inside w', and plain search sometimes scores better
    candidates["ggml-uniform"] = ggml_encode(w, t, np.ones(n, np.float32))
    row_err = {}
    for k, data in candidates.items():
        d = w.astype(np.float64) - decode_cols(data, t, n).astype(np.float64)
        row_err[k] = (imp64 * d * d).sum(-1)
    names = list(candidates)
    # rows are encoded independently by every candidate (same type, same row layout), so the best
    # candidate can be taken row by row
    errs = np.stack([row_err[k] for k in names])  # (C, rows)
    pick = np.argmin(errs, axis=0)
    data = np.stack([candidates[k] for k in names])[pick, np.arange(rows)]
    rows_won = {k: int((pick == i).sum()) for i, k in enumerate(names)}
    errors = {k: float(row_err[k].sum()) for k in names}
    errors["chosen"] = float(errs[pick, np.arange(rows)].sum())
    winners = [k for k, c in rows_won.items() if c]
    method = winners[0] if len(winners) == 1 else "per-row"
    return TensorQuant(t, np.ascontiguousarray(data), width, method, errors, rows_won)


__all__ = ["FLOAT_TYPES", "TensorQuant", "element_importance", "optimise_tensor", "refine_scales"]
