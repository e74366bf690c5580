"""Quantize every allocated matrix by one method and report, per tensor, which candidate won.

    allocation = plan_allocation(targets, weights, stats, budget_bpw=2.5)      # ActQuant stages 1b/1c
    result = quantize_matrices(weights, allocation, "actquant", stats)          # stage 1d, or a baseline
    types = allocation.types()   # -> write_gguf(types=...);  result.tensors[name].data: the block bytes

Methods: ``actquant`` (Fisher-derived per-element importance, alternating stored-scale optimisation vs
ggml row by row, best kept per row), ``rtn`` (ggml, no importance), ``imatrix`` (ggml with E[x^2]) and
``gptq`` (block-wise error feedback with H = E[x x^T]). AWQ edits the model (it folds scales into the
norms), so it lives in ``awq.quantize_awq``. All are
scored on the same measure when calibration statistics exist: the diagonal-Fisher-weighted squared
error sum F_ii (w_i - w_hat_i)^2, a second-order estimate of the action-loss increase.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from omnimodel.gguf.types import parse_type, type_info

from .allocate import DEFAULT_CANDIDATES, Allocation, allocate, measured_errors, paper_errors
from .calibrate import CalibStats
from .gptq import quantize_gptq
from .imatrix import quantize_imatrix
from .rtn import quantize_rtn
from .scales import FLOAT_TYPES, TensorQuant, element_importance, optimise_tensor
from .sensitivity import sensitivities, sensitivity_weights
from .targets import MatrixTarget

METHODS = ("actquant", "rtn", "imatrix", "gptq")
ERROR_MODELS = ("paper", "measured")


def plan_allocation(
    targets: Iterable[MatrixTarget],
    weights: Mapping[str, np.ndarray],
    stats: CalibStats,
    budget_bpw: float,
    *,
    error_model: str = "paper",
    alpha: float = 1.0,
    beta: float = 1.0,
    candidates=DEFAULT_CANDIDATES,
    padding: str = "auto",
    tol: float = 0.02,
    hsic: bool = True,
) -> Allocation:
    """HSIC sensitivities -> per-type errors -> the layer-balanced greedy allocation. ``hsic=False``
    weighs every matrix the same (the ablation's allocation without the HSIC sensitivity)."""
    targets = list(targets)
    sens = (
        sensitivity_weights(sensitivities(stats, alpha=alpha, beta=beta))
        if hsic
        else {t.name: 1.0 for t in targets}
    )
    if error_model == "paper":
        norms = {t.name: float(np.square(np.asarray(weights[t.name], np.float64)).sum()) for t in targets}
        errs = paper_errors(targets, norms, sens, candidates, padding)
    elif error_model == "measured":
        fisher = stats.fisher or None
        imp = (lambda n: fisher[n]) if fisher else (lambda n: stats.imatrix[n])
        errs = measured_errors(targets, weights, imp, sens, candidates, padding)
    else:
        raise ValueError(f"error_model must be one of {ERROR_MODELS}, got {error_model!r}")
    return allocate(targets, errs, budget_bpw, candidates=candidates, padding=padding, tol=tol)


@dataclass
class QuantResult:
    method: str
    tensors: dict[str, TensorQuant]

    def report(self) -> list[dict]:
        return [
            {
                "name": n,
                "type": q.ggml_type.name,
                "pad_to": q.pad_to,
                "chosen": q.method,
                "rows_won": q.rows_won,
                "errors": q.errors,
            }
            for n, q in self.tensors.items()
        ]

    def winners(self) -> dict[str, int]:
        """How many tensors each candidate won (ActQuant's 'report which')."""
        out: dict[str, int] = {}
        for q in self.tensors.values():
            out[q.method] = out.get(q.method, 0) + 1
        return out

    def rows_won(self) -> dict[str, int]:
        """Rows each candidate supplied, over every tensor (ActQuant keeps the best candidate per row)."""
        out: dict[str, int] = {}
        for q in self.tensors.values():
            for k, v in (q.rows_won or {q.method: q.data.shape[0]}).items():
                out[k] = out.get(k, 0) + v
        return out

    def fisher_error(self) -> float:
        """sum over matrices of sum F_ii (w_i - w_hat_i)^2 (needs calibration statistics)."""
        return float(sum(q.errors["fisher"] for q in self.tensors.values()))


IMPORTANCE_MODES = ("fisher", "amf", "magnitude")


def quantize_matrices(
    weights: Mapping[str, np.ndarray],
    allocation: Allocation,
    method: str,
    stats: CalibStats | None = None,
    *,
    importance: str = "amf",
) -> QuantResult:
    """``importance`` (actquant only): ``fisher`` the plain diagonal Fisher F, which is exactly the
    second-order loss measure the methods are scored on; ``amf`` METHODS 1d's w' = F w^2 / mean_block(w^2);
    ``magnitude`` w^2 alone (no calibration: the ablation's magnitude-weighted scales)."""
    if importance not in IMPORTANCE_MODES:
        raise ValueError(f"importance must be one of {IMPORTANCE_MODES}, got {importance!r}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if method in ("imatrix", "gptq") and stats is None:
        raise ValueError(f"{method} needs calibration statistics")
    if method == "gptq" and not stats.hessian:
        raise ValueError("gptq needs H = E[x x^T] per matrix (calibrate(..., hessian=True))")
    if method == "actquant" and importance != "magnitude" and (stats is None or not stats.fisher):
        raise ValueError("actquant needs the Action-Mixed Fisher (calibrate(..., fisher=True))")
    out: dict[str, TensorQuant] = {}
    for ta in allocation.tensors:
        w = np.asarray(weights[ta.name], np.float32)
        t = parse_type(ta.type)
        score = None if stats is None or not stats.fisher else stats.fisher[ta.name]
        if method == "actquant":
            if importance == "magnitude":
                imp = w * w
            elif importance == "amf":
                bs = type_info(t).block_size if t not in FLOAT_TYPES else 32
                imp = element_importance(stats.fisher[ta.name], w, bs)
            else:
                imp = np.asarray(stats.fisher[ta.name], np.float32)
            q = optimise_tensor(w, t, imp, pad_to=ta.pad_to if t not in FLOAT_TYPES else None)
        elif method == "rtn":
            q = quantize_rtn(w, t, score)
        elif method == "gptq":
            q = quantize_gptq(w, t, stats.hessian[ta.name], score)
        else:
            q = quantize_imatrix(w, t, stats.imatrix[ta.name], score)
        if score is not None:
            # every method re-scored on the shared Fisher measure, so methods compare like for like
            q.errors["fisher"] = _fisher_error(w, q, score)
        out[ta.name] = q
    return QuantResult(method, out)


def _fisher_error(w: np.ndarray, q: TensorQuant, fisher: np.ndarray) -> float:
    d = np.asarray(w, np.float64) - q.values(w.shape[1]).astype(np.float64)
    return float((np.asarray(fisher, np.float64) * d * d).sum())


__all__ = ["ERROR_MODELS", "IMPORTANCE_MODES", "METHODS", "QuantResult", "plan_allocation", "quantize_matrices"]
