"""Quantize every allocated matrix by one method and report, per tensor, which candidate won.

    allocation = plan_allocation(targets, weights, stats, budget_bpw=2.5)      # ActQuant stages 1b/1c
    result = quantize_matrices(weights, allocation, "actquant", stats)          # stage 1d, or a baseline
    types = allocation.types()   # -> write_gguf(types=...);  result.tensors[name].data: the block bytes

    quantizer = MatrixQuantizer(allocation, "actquant", stats)                  # the same, one matrix at
    write_gguf(policy, path, "f16", encoder=quantizer)                          # a time while the GGUF is
    result = quantizer.result()                                                 # written (no blocks held)

Methods: ``actquant`` (Fisher-derived per-element importance, alternating stored-scale optimisation vs
ggml row by row, best kept per row), ``rtn`` (ggml, no importance), ``imatrix`` (ggml with E[x^2]) and
``gptq`` (block-wise error feedback with H = E[x x^T]). AWQ edits the model (it folds scales into the
norms), so it lives in ``awq.quantize_awq``. All are
scored on the same measure when calibration statistics exist: the diagonal-Fisher-weighted squared
error sum F_ii (w_i - w_hat_i)^2, a second-order estimate of the action-loss increase.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, replace

import numpy as np

from omnimodel.gguf.types import GGMLType, parse_type, type_info

from .allocate import (
    DEFAULT_CANDIDATES,
    Allocation,
    Log,
    OptionDecoder,
    TensorAllocation,
    TypeOption,
    allocate,
    measured_errors,
    option_errors,
    paper_errors,
)
from .calibrate import CalibStats
from .gptq import quantize_gptq
from .imatrix import quantize_imatrix
from .rtn import quantize_rtn
from .scales import FLOAT_TYPES, TensorQuant, element_importance, optimise_tensor
from .sensitivity import sensitivities, sensitivity_weights
from .targets import MatrixTarget

METHODS = ("actquant", "rtn", "imatrix", "gptq")
#: paper: E = S ||W||^2 2^(-2 b) by nominal bits; measured: W through ggml's quantizer; encoder: W through
#: the method's own quantizer (what ships). The last two score sum importance (w - w_hat)^2 x S.
ERROR_MODELS = ("paper", "measured", "encoder")
#: Methods whose encoder ``encoder_errors`` can run: AWQ's quantizer runs on weights its transform edits
#: after the allocation (the scales are searched for the allocated types), so no per-type error of the
#: unedited matrix is what it ships.
ENCODER_METHODS = ("actquant", "rtn", "imatrix", "gptq")


def plan_allocation(
    targets: Iterable[MatrixTarget],
    weights: Mapping[str, np.ndarray],
    stats: CalibStats | None,
    budget_bpw: float,
    *,
    error_model: str = "paper",
    alpha: float = 1.0,
    beta: float = 1.0,
    candidates=DEFAULT_CANDIDATES,
    padding: str = "auto",
    tol: float = 0.02,
    hsic: bool = True,
    hsic_tau: float | None = None,
    method: str = "actquant",
    importance: str = "amf",
    log: Log | None = None,
) -> Allocation:
    """HSIC sensitivities -> per-type errors -> the layer-balanced greedy allocation. ``hsic=False``
    weighs every matrix the same (the ablation's allocation without the HSIC sensitivity); ``hsic_tau`` is
    the temperature of its weights exp(S / tau) (None: the spread of S); with the paper
    error model it then needs no statistics (``stats=None``). ``weights`` may be lazy (one matrix read
    at a time). ``method`` and ``importance`` are those the matrices will be written with; only the
    encoder error model reads them. ``log``: progress of the measured / encoder scoring."""
    targets = list(targets)
    if error_model not in ERROR_MODELS:
        raise ValueError(f"error_model must be one of {ERROR_MODELS}, got {error_model!r}")
    if stats is None and (hsic or error_model != "paper"):
        raise ValueError("the HSIC sensitivities and the measured / encoder error models need calibration statistics")
    sens = (
        sensitivity_weights(sensitivities(stats, alpha=alpha, beta=beta), tau=hsic_tau)
        if hsic
        else {t.name: 1.0 for t in targets}
    )
    if error_model == "paper":
        norms = {t.name: float(np.square(np.asarray(weights[t.name], np.float64)).sum()) for t in targets}
        errs = paper_errors(targets, norms, sens, candidates, padding)
    elif error_model == "measured":
        errs = measured_errors(targets, weights, scoring_importance(stats), sens, candidates, padding, log=log)
    else:
        errs = encoder_errors(targets, weights, stats, method, importance=importance, sensitivity=sens,
                              candidates=candidates, padding=padding, log=log)
    return allocate(targets, errs, budget_bpw, candidates=candidates, padding=padding, tol=tol,
                    error_model=error_model)


def scoring_importance(stats: CalibStats) -> Callable[[str], np.ndarray]:
    """The importance the measured and encoder error models weigh errors by: the Fisher (the measure every
    method's result is reported on), or the imatrix when no Fisher was calibrated."""
    fisher = stats.fisher or None
    return (lambda n: fisher[n]) if fisher else (lambda n: stats.imatrix[n])


def encoder_errors(
    targets: Iterable[MatrixTarget],
    weights: Mapping[str, np.ndarray],
    stats: CalibStats,
    method: str = "actquant",
    *,
    importance: str = "amf",
    sensitivity: Mapping[str, float] | None = None,
    candidates: Iterable[GGMLType | str] = DEFAULT_CANDIDATES,
    padding: str = "auto",
    log: Log | None = None,
) -> dict[str, dict[GGMLType, float]]:
    """Each matrix at each option encoded by ``quantize_matrix`` with ``method`` and ``importance``, the
    function ``MatrixQuantizer`` writes the GGUF with, so the error the allocation weighs a type by is the
    error that type would ship with; scored like ``measured_errors`` (``scoring_importance`` x sensitivity).
    About as costly as quantizing the model once per candidate type."""
    if method not in ENCODER_METHODS:
        raise ValueError(
            f"the encoder error model supports {', '.join(ENCODER_METHODS)}, not {method!r} (its transform "
            "edits the weights after the allocation); use the paper or measured error model")
    _check_method(method, stats, importance)
    has_fisher = bool(stats.fisher)

    def method_decoder(tg: MatrixTarget, w: np.ndarray, imp: np.ndarray | None) -> OptionDecoder:
        # this matrix's statistics read once for all its candidates (a spilled Fisher is a file read);
        # when the Fisher is the scoring importance, ``imp`` is that same array
        one = _matrix_stats(stats, tg.name, imp if has_fisher else None)

        def decode(o: TypeOption) -> np.ndarray:
            ta = TensorAllocation(tg.name, tg.shape, tg.layer, o.type.name, o.pad_to, o.bpw)
            return quantize_matrix(w, ta, method, one, importance=importance).values(tg.n_in)

        return decode

    return option_errors(targets, weights, method_decoder, scoring_importance(stats), sensitivity, candidates,
                         padding, log=log, label=f"encoder error model ({method})")


def _matrix_stats(stats: CalibStats, name: str, fisher: np.ndarray | None) -> CalibStats:
    """``stats`` narrowed to the per-matrix statistics ``quantize_matrix`` reads of ``name``, each loaded once."""
    def one(m: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:  # not ``in`` then ``[]``: a spilled mapping would read the file twice
            return {name: m[name]}
        except KeyError:
            return {}

    return replace(stats, fisher={name: fisher} if fisher is not None else {}, imatrix=one(stats.imatrix),
                   hessian=one(stats.hessian))


@dataclass(frozen=True)
class QuantSummary:
    """What a report needs of one quantized matrix once its blocks are written and dropped."""

    ggml_type: GGMLType
    pad_to: int
    method: str
    errors: dict[str, float]
    rows_won: dict[str, int] | None
    rows: int

    @classmethod
    def of(cls, q: TensorQuant) -> QuantSummary:
        return cls(q.ggml_type, q.pad_to, q.method, q.errors, q.rows_won, int(q.data.shape[0]))


@dataclass
class QuantResult:
    method: str
    tensors: dict[str, TensorQuant | QuantSummary]  # summaries when the blocks went to a file as produced

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
            rows = q.rows if isinstance(q, QuantSummary) else q.data.shape[0]
            for k, v in (q.rows_won or {q.method: rows}).items():
                out[k] = out.get(k, 0) + v
        return out

    def fisher_error(self) -> float:
        """sum over matrices of sum F_ii (w_i - w_hat_i)^2 (needs calibration statistics)."""
        return float(sum(q.errors["fisher"] for q in self.tensors.values()))


IMPORTANCE_MODES = ("fisher", "amf", "magnitude")


def _check_method(method: str, stats: CalibStats | None, importance: str) -> None:
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


def quantize_matrix(
    w: np.ndarray,
    ta: TensorAllocation,
    method: str,
    stats: CalibStats | None = None,
    *,
    importance: str = "amf",
) -> TensorQuant:
    """One matrix (fp32 (out, in)) in its allocated type by ``method``; the statistics it reads are this
    matrix's only (a spilled Fisher is loaded from disk here, once)."""
    w = np.asarray(w, np.float32)
    t = parse_type(ta.type)
    score = None if stats is None or not stats.fisher else np.asarray(stats.fisher[ta.name])
    if method == "actquant":
        if importance == "magnitude":
            imp = w * w
        elif importance == "amf":
            bs = type_info(t).block_size if t not in FLOAT_TYPES else 32
            imp = element_importance(score, w, bs)
        else:
            imp = np.asarray(score, np.float32)
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
    return q


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
    ``magnitude`` w^2 alone (no calibration: the ablation's magnitude-weighted scales).

    ``weights`` may be lazy (``targets.ModelWeights``): each matrix is read when its turn comes. The
    blocks of every matrix are returned; ``MatrixQuantizer`` is the form that hands them to a writer one
    at a time instead."""
    _check_method(method, stats, importance)
    out: dict[str, TensorQuant] = {}
    for ta in allocation.tensors:
        out[ta.name] = quantize_matrix(weights[ta.name], ta, method, stats, importance=importance)
    return QuantResult(method, out)


class MatrixQuantizer:
    """An allocation's matrices quantized on demand, one at a time (the exporter's ``MatrixEncoder``).

    ``write_gguf(policy, path, outtype, encoder=q)`` declares each allocated matrix with ``layout`` (its
    type and stored row width are known before any block exists), then calls ``encode`` with the matrix's
    fp32 weight when its turn comes and writes the blocks; only a ``QuantSummary`` is kept, so the pass
    holds one matrix's weight, statistics and blocks at a time. ``label`` names the method in the result
    (AWQ quantizes with ``rtn`` after its transform)."""

    def __init__(
        self,
        allocation: Allocation,
        method: str,
        stats: CalibStats | None = None,
        *,
        importance: str = "amf",
        label: str | None = None,
    ) -> None:
        _check_method(method, stats, importance)
        self.allocation = allocation
        self.method = method
        self.stats = stats
        self.importance = importance
        self.label = label or method
        self._by_name = {t.name: t for t in allocation.tensors}
        self._done: dict[str, QuantSummary] = {}
        self.seconds = 0.0  # time spent quantizing (the rest of a GGUF write is encoding and I/O)

    def matrices(self) -> Collection[str]:
        return self._by_name.keys()

    def layout(self, name: str) -> tuple[GGMLType, int] | None:
        ta = self._by_name.get(name)
        return None if ta is None else (parse_type(ta.type), ta.pad_to)

    def encode(self, name: str, weight: np.ndarray) -> TensorQuant:
        t0 = time.perf_counter()
        q = quantize_matrix(weight, self._by_name[name], self.method, self.stats, importance=self.importance)
        self.seconds += time.perf_counter() - t0
        self._done[name] = QuantSummary.of(q)
        return q

    def result(self) -> QuantResult:
        """The summaries in allocation order; every allocated matrix must have been encoded."""
        missing = [n for n in self._by_name if n not in self._done]
        if missing:
            raise ValueError(f"{len(missing)} allocated matrices were never quantized, first {missing[0]}")
        return QuantResult(self.label, {n: self._done[n] for n in self._by_name})


def _fisher_error(w: np.ndarray, q: TensorQuant, fisher: np.ndarray) -> float:
    d = np.asarray(w, np.float64) - q.values(w.shape[1]).astype(np.float64)
    return float((np.asarray(fisher, np.float64) * d * d).sum())


__all__ = [
    "ENCODER_METHODS",
    "ERROR_MODELS",
    "IMPORTANCE_MODES",
    "METHODS",
    "MatrixQuantizer",
    "QuantResult",
    "QuantSummary",
    "encoder_errors",
    "plan_allocation",
    "quantize_matrices",
    "quantize_matrix",
    "scoring_importance",
]
