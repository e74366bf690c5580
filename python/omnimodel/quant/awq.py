"""Baseline AWQ (METHODS 3): activation-aware per-input-channel scaling, then plain ggml quantization.

For a group of matrices reading the same input x, scale input channel j of their weights by s_j and fold
1/s_j into the operation that produced x, so the fp network is unchanged:

    W x = (W diag(s)) (diag(1/s) x)

Salient channels (large activations) get scaled up and so lose less to rounding. s = rms(x)^alpha,
normalised to geometric mean 1; alpha on a grid in [0, 1] (0 = no scaling) is chosen per group to
minimise the output-error proxy sum_l tr(D_l H D_l^T), D_l = W_l - Q(W_l diag(s)) diag(1/s), with
H = E[x x^T] when calibrated with ``hessian=True`` and its diagonal (the imatrix) otherwise.

Where 1/s folds is the architecture's (``Architecture.awq_scale_groups``, built from ``ScaleGroup``,
``fold_norm`` and ``fold_rows`` here): a norm's weight (and bias) before the matrices reading it, or the
rows of the matrix producing a linear input; an input behind a nonlinearity (GELU) is left unscaled.

``awq_transform`` edits the model in place (quantized matrices and the folded norms / rows); export the
transformed model, then quantize with ``rtn`` in the same allocation.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from omnimodel.arch.registry import for_policy

from .allocate import Allocation
from .calibrate import CalibStats
from .ggmlq import weighted_error
from .rtn import quantize_rtn

ALPHAS = tuple(i / 10 for i in range(11))


@dataclass(frozen=True)
class ScaleGroup:
    key: str
    members: tuple[str, ...]  # weight names sharing the input
    fold: Callable[[torch.Tensor], None]  # divides the producer of the input by s (in place)
    folds_into: str | None = None  # the quantized matrix whose rows the fold edits, if any


def fold_norm(norm: nn.Module) -> Callable[[torch.Tensor], None]:
    def fold(s: torch.Tensor) -> None:
        norm.weight.div_(s.to(norm.weight.dtype))
        if getattr(norm, "bias", None) is not None:
            norm.bias.div_(s.to(norm.bias.dtype))

    return fold


def fold_rows(lin: nn.Linear, start: int = 0) -> Callable[[torch.Tensor], None]:
    def fold(s: torch.Tensor) -> None:
        stop = start + s.shape[0]
        lin.weight[start:stop].div_(s.to(lin.weight.dtype)[:, None])
        if lin.bias is not None:
            lin.bias[start:stop].div_(s.to(lin.bias.dtype))

    return fold


def scale_groups(model: nn.Module) -> list[ScaleGroup]:
    """The model's scale groups, as its architecture defines them (``Architecture.awq_scale_groups``)."""
    return for_policy(model).awq_scale_groups(model)


def _output_error(w: np.ndarray, w_hat: np.ndarray, H: np.ndarray | None, diag: np.ndarray) -> float:
    if H is None:
        return weighted_error(w, w_hat, diag)
    D = np.asarray(w, np.float64) - np.asarray(w_hat, np.float64)
    return float(((D @ np.asarray(H, np.float64)) * D).sum())


def search_scales(
    weights: Mapping[str, np.ndarray],
    group: ScaleGroup,
    types: Mapping[str, object],
    stats: CalibStats,
    alphas: tuple[float, ...] = ALPHAS,
) -> tuple[float, np.ndarray, dict[float, float]]:
    """(best alpha, its s, error per alpha) for one group."""
    first = group.members[0]
    diag = np.asarray(stats.imatrix[first], np.float64)
    rms = np.sqrt(np.maximum(diag, 0.0))
    rms = np.where(rms > 0, rms, rms[rms > 0].min() if np.any(rms > 0) else 1.0)
    H = stats.hessian.get(first) if stats.hessian else None
    ws = {name: np.asarray(weights[name], np.float64) for name in group.members}  # this group's only
    errs: dict[float, float] = {}
    best = (np.inf, 0.0, np.ones_like(rms))
    for alpha in alphas:
        s = rms**alpha
        s = s / np.exp(np.log(s).mean())  # geometric mean 1 keeps the weights' overall range
        total = 0.0
        for name in group.members:
            w = ws[name]
            q = quantize_rtn((w * s).astype(np.float32), types[name])
            total += _output_error(w, q.values(w.shape[1]).astype(np.float64) / s, H, diag)
        errs[alpha] = total
        if total < best[0]:
            best = (total, alpha, s)
    return best[1], best[2], errs


@torch.no_grad()
def awq_transform(
    model: nn.Module, allocation: Allocation, stats: CalibStats, alphas: tuple[float, ...] = ALPHAS
) -> dict[str, float]:
    """Search and apply AWQ scales in place; returns the chosen alpha per group (0 = left as is).

    Each group's search reads its members' current weights from the model (one group at a time, so
    later groups see what earlier folds changed)."""
    from .targets import ModelWeights

    weights = ModelWeights(model)
    lin = weights.linears
    types = {t.name: t.type for t in allocation.tensors}
    chosen: dict[str, float] = {}
    for g in scale_groups(model):
        if not all(n in types for n in g.members):
            continue
        alpha, s, _ = search_scales(weights, g, types, stats, alphas)
        chosen[g.key] = alpha
        if alpha == 0.0:
            continue
        st = torch.from_numpy(s.astype(np.float32))
        for n in g.members:
            lin[n].weight.mul_(st.to(lin[n].weight.dtype)[None, :])
        g.fold(st)
    return chosen


def quantize_awq(model: nn.Module, allocation: Allocation, stats: CalibStats, alphas: tuple[float, ...] = ALPHAS):
    """AWQ end to end: transform ``model`` in place, then RTN in the allocation's types.

    Returns (QuantResult with method "awq", alpha per group). Export the *transformed* model: its norms
    and folded rows carry the 1/s.
    """
    from .quantize import quantize_matrices
    from .targets import ModelWeights

    chosen = awq_transform(model, allocation, stats, alphas)
    result = quantize_matrices(ModelWeights(model), allocation, "rtn")
    result.method = "awq"
    return result, chosen


__all__ = ["ALPHAS", "ScaleGroup", "fold_norm", "fold_rows", "awq_transform", "quantize_awq", "scale_groups", "search_scales"]
