"""The binarization methods in the convert pipeline: HBVLA, BiLLM-style and sign x alpha (Q1_0 RTN).

    plan = plan_binarization(policy, opts)                  # the knobs for --bpw (or the feasible range),
                                                            # which matrices are binarized, which overridden
    saliency = policy_aware_saliency(policy, plan, stats, samples)   # H~ per attention projection (HBVLA)
    encoder = BinarizeEncoder(plan, stats, saliency)
    write_gguf(policy, path, "f16", encoder=encoder)        # each matrix -> <base>.hb.* (or its fallback type)
    outcome = binarize_outcome(policy, plan, encoder, opts) # the report: every stored bit, per matrix

Every Vision+LLM matrix (``quant.targets``) is stored by ``hbvla.store_matrix``: HBVLA planes when its
shape suits the method, else the documented fallback type (counted as such); ``--allocation`` overrides
('pattern=TYPE') keep chosen matrices at a GGML type instead (quantized with the imatrix when calibration
ran, else RTN), which is how a user trades 1-bit storage for a few sensitive layers at 4 bits.

The methods are presets of one quantizer (``hbvla.config``), so they share the code, the storage and the
bit count:

    hbvla   the paper's method with block grouping, error feedback and, for attention projections, the
            policy-aware rectified Hessian for the salient split; --bpw picks grouping and salient cap
    billm   BiLLM-style residual binarization (no permutation or Haar, per-element groups with their
            own means, order-2 salient residual)
    sign    plain sign x alpha per 128 weights: Q1_0 round-to-nearest, no calibration

``ablation`` (HBVLA only) applies one of ``ABLATIONS`` (the paper's Table 3 style) or
``no-policy-aware`` (H = X X^T for the attention projections' salient split too).

The architecture is asked (``Architecture.attention_projections``) which modules are attention blocks and
what their projections are called; a block is re-run from the inputs it was called with during a
calibration forward pass (``run(module)``), so nothing here knows a network.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from omnimodel.arch.registry import for_policy
from omnimodel.gguf.types import type_info
from omnimodel.plan.plan import HBVLA

from . import hbvla as hb
from .allocate import (
    Allocation,
    AllocationError,
    TensorAllocation,
    apply_overrides,
    parse_overrides,
)
from .calibrate import CalibStats, adapter
from .quantize import MatrixQuantizer
from .samples import CalibSample
from .targets import MatrixTarget, matrix_targets

Log = Callable[[str], None]

#: --method name -> the preset it binarizes with
PRESETS: dict[str, Callable[..., hb.HbvlaConfig]] = {"hbvla": hb.hbvla, "billm": hb.billm_style, "sign": hb.sign_alpha}
BINARIZE_METHODS = tuple(PRESETS)
NO_POLICY_AWARE = "no-policy-aware"
ABLATION_NAMES = (*hb.ABLATIONS, NO_POLICY_AWARE)
POLICY_AWARE_SAMPLES = 8  # calibration samples whose attention inputs the rectified Hessian is built from


class BinarizeError(ValueError):
    """The binarization cannot run as asked (budget out of reach, bad override list, unknown ablation)."""


@dataclass(frozen=True)
class BinarizePlan:
    """What a binarization pass stores, decided before anything is quantized."""

    method: str
    config: hb.HbvlaConfig
    binarized: tuple[MatrixTarget, ...]  # stored by store_matrix (HBVLA planes or the fallback type)
    overrides: Allocation | None  # matrices kept at a GGML type by --allocation
    policy_aware: bool  # H~ for the attention projections' salient split
    budget_bpw: float | None
    estimate_bpw: float  # worst case (salient counts at their cap) over every quantized matrix
    feasible: tuple[float, float] | None = None  # the solver's range for the binarized matrices

    @property
    def hbvla_names(self) -> list[str]:
        """The matrices stored as HBVLA planes (the rest of ``binarized`` take the fallback type)."""
        return [t.name for t in self.binarized if hb.suits_hbvla(t.shape)[0]]

    def plan_types(self) -> dict[str, Any]:
        """GGML type of every quantized matrix stored as one tensor (overrides and fallbacks)."""
        out = {t.name: hb.fallback_type(t.shape) for t in self.binarized if not hb.suits_hbvla(t.shape)[0]}
        if self.overrides is not None:
            out.update(self.overrides.types())
        return out


def method_config(method: str, ablation: str | None = None) -> tuple[hb.HbvlaConfig, bool]:
    """(the preset of ``method`` with ``ablation`` applied, whether the policy-aware Hessian is used)."""
    if method not in PRESETS:
        raise BinarizeError(f"binarization method must be one of {BINARIZE_METHODS}, got {method!r}")
    cfg = PRESETS[method]()
    policy_aware = method == "hbvla"
    if ablation is not None:
        if method != "hbvla":
            raise BinarizeError(f"--hbvla-ablation applies to --method hbvla, not {method}")
        if ablation == NO_POLICY_AWARE:
            policy_aware = False
        elif ablation in hb.ABLATIONS:
            cfg = cfg.with_(**hb.ABLATIONS[ablation], name=f"hbvla-{ablation}")
        else:
            raise BinarizeError(f"--hbvla-ablation must be one of {ABLATION_NAMES}, got {ablation!r}")
    return cfg, policy_aware


def needs_hessian(method: str, ablation: str | None = None) -> bool:
    """Whether the method reads H = X X^T (salient split or error feedback); sign x alpha does not. An
    ablation that does not apply is ignored here (``method_config`` refuses it when the pass is planned)."""
    try:
        cfg, _ = method_config(method, ablation)
    except BinarizeError:
        cfg, _ = method_config(method)
    return cfg.salient_cap > 0 or cfg.error_feedback


def _override_allocation(targets: Sequence[MatrixTarget], path: Path, method: str) -> Allocation:
    text = path.read_text()
    if text.lstrip().startswith("{") and '"format"' in text:
        raise BinarizeError(f"{path}: --method {method} takes an override list ('pattern=TYPE' lines or "
                            "{pattern: type}), not a saved allocation")
    base = Allocation(tuple(TensorAllocation(t.name, t.shape, t.layer, "F16", t.n_in, 16.0, None, "binarized")
                            for t in targets), None, method)
    try:
        alloc = apply_overrides(base, parse_overrides(text, str(path)), where=str(path))
    except AllocationError as e:
        raise BinarizeError(str(e)) from e
    return Allocation(tuple(t for t in alloc.tensors if t.source == "override"), None, method)


def _override_bits(alloc: Allocation | None) -> tuple[int, int]:
    if alloc is None:
        return 0, 0
    bits = sum(8 * t.shape[0] * type_info(t.type).row_bytes(t.pad_to) for t in alloc.tensors)
    return bits, alloc.numel


def plan_binarization(
    policy: Any, method: str, bpw: float | None, allocation: Path | None = None, ablation: str | None = None
) -> BinarizePlan:
    """The knobs and the matrices of a binarization pass. With ``bpw`` the target covers every quantized
    matrix, overrides included (what they store is charged first); HBVLA's grouping and salient cap are
    then the most accurate that fit (``hbvla.solve``); a preset without those choices (billm, sign, an
    ablation fixing them) must fit as it is. A target out of reach is a BinarizeError naming the range."""
    cfg, policy_aware = method_config(method, ablation)
    targets = matrix_targets(policy.model)
    overrides = _override_allocation(targets, Path(allocation), method) if allocation is not None else None
    kept = {t.name for t in overrides.tensors} if overrides is not None else set()
    binarized = tuple(t for t in targets if t.name not in kept)
    if not binarized:
        raise BinarizeError("the overrides keep every matrix at a GGML type: nothing is left to binarize")
    shapes = [t.shape for t in binarized]
    o_bits, o_n = _override_bits(overrides)
    n_bin = sum(s[0] * s[1] for s in shapes)
    feasible = None
    if bpw is not None:
        target = (bpw * (n_bin + o_n) - o_bits) / n_bin  # what is left per binarized weight
        if method == "hbvla":
            try:
                sol = hb.solve(shapes, target, base=cfg)
            except hb.BudgetError as e:
                lo, hi = _range(shapes, cfg, o_bits, o_n, n_bin)
                raise BinarizeError(f"--method hbvla cannot meet {bpw:g} bits per weight: every stored bit "
                                    f"counted, its knobs reach {lo:.3f} to {hi:.3f} bpw on this model") from e
            cfg, feasible = sol.config.with_(name=cfg.name), sol.feasible
        else:
            have, _ = hb.model_bpw(shapes, cfg)
            if have > target + 1e-9:
                total = (have * n_bin + o_bits) / (n_bin + o_n)
                raise BinarizeError(f"--method {method}{' ' + ablation if ablation else ''} stores {total:.3f} "
                                    f"bits per weight on this model (every stored bit counted), above the "
                                    f"--bpw {bpw:g} target")
    est, _ = hb.model_bpw(shapes, cfg)
    estimate = (est * n_bin + o_bits) / (n_bin + o_n)
    return BinarizePlan(method, cfg, binarized, overrides, policy_aware, bpw, estimate, feasible)


def _range(shapes, cfg, o_bits, o_n, n_bin) -> tuple[float, float]:
    vals = [hb.model_bpw(shapes, c)[0] for c in hb.size.solver_candidates(cfg)]
    return tuple((v * n_bin + o_bits) / (n_bin + o_n) for v in (min(vals), max(vals)))  # type: ignore[return-value]


# ------------------------------------------------------------------------------ policy-aware Hessian


def capture_attention_calls(policy: Any, samples: Sequence[CalibSample], attention: Mapping[str, Any]
                            ) -> dict[str, list[tuple[tuple, dict]]]:
    """Forward passes over ``samples`` recording every call of each attention module (its positional and
    keyword inputs, detached), so the block can be run again on its own: ``module(*args, **kwargs)``."""
    model = policy.model
    calib = adapter(policy)
    dev = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    calls: dict[str, list[tuple[tuple, dict]]] = {name: [] for name in attention}

    def hook(name: str):
        def pre(_m, args, kwargs):
            detach = (lambda v: v.detach() if isinstance(v, torch.Tensor) else v)
            calls[name].append((tuple(detach(a) for a in args), {k: detach(v) for k, v in kwargs.items()}))

        return pre

    handles = [model.get_submodule(name).register_forward_pre_hook(hook(name), with_kwargs=True) for name in attention]
    try:
        with torch.no_grad():
            for s in samples:
                args, _target = calib.prepare(policy, s, dev, dtype)
                calib.forward(policy, args)  # the pass calibration takes its losses on
    finally:
        for h in handles:
            h.remove()
    return calls


def policy_aware_saliency(
    policy: Any, plan: BinarizePlan, stats: CalibStats, samples: Sequence[CalibSample], log: Log = print
) -> dict[str, np.ndarray]:
    """H~ = X diag(a) X^T for every binarized attention projection (``hbvla.policy_aware_token_weights``):
    each attention block's projections are binarized once with H = X X^T, the block is run with full
    precision and binarized weights on its calibration inputs, and token t of projection p is weighted by
    ||dL/dY_t|| / d_p of the local loss L = ||Z - Z_hat||^2. Summed over the recorded calls."""
    if not plan.policy_aware:
        return {}
    attention = for_policy(policy).attention_projections(policy.model)
    wanted = set(plan.hbvla_names)
    attention = {a: tuple(p for p in projs if f"{a}.{p}.weight" in wanted) for a, projs in attention.items()}
    attention = {a: projs for a, projs in attention.items() if projs}
    if not attention:
        return {}
    t0 = time.perf_counter()
    calls = capture_attention_calls(policy, samples[:POLICY_AWARE_SAMPLES], attention)
    out: dict[str, np.ndarray] = {}
    for a, projs in attention.items():
        if not calls[a]:
            continue  # a block the forward never runs (exported weights it does not read are not targets)
        module = policy.model.get_submodule(a)
        binarized = {}
        for p in projs:
            w = module.get_submodule(p).weight.detach().to(torch.float64).cpu().numpy()
            binarized[p] = hb.quantize_matrix(w, stats.hessian[f"{a}.{p}.weight"], plan.config).weight()
        acc = {p: hb.HessianAccumulator() for p in projs}
        for args, kwargs in calls[a]:
            res = hb.policy_aware_token_weights(module, lambda m, a_=args, k_=kwargs: m(*a_, **k_), projs, binarized)
            for p in projs:
                acc[p].add(res.inputs[p].double(), res.token_weights[p])
        for p in projs:
            out[f"{a}.{p}.weight"] = acc[p].hessian()
    log(f"      policy-aware Hessian: {len(out)} attention projections from {len(samples[:POLICY_AWARE_SAMPLES])} "
        f"samples ({time.perf_counter() - t0:.1f} s)")
    return out


# ------------------------------------------------------------------------------ the encoder


@dataclass
class MatrixRecord:
    """What the report keeps of one binarized matrix once its tensors are written."""

    name: str
    shape: tuple[int, int]
    kind: str  # "hbvla" | "fallback"
    bits: hb.BitBreakdown
    stats: dict = field(default_factory=dict)
    fallback: str | None = None
    reason: str = ""

    def row(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "kind": self.kind, "chosen": self.kind,
                "fallback": self.fallback,
                "reason": self.reason or None, "bpw": self.bits.bpw, "bits": self.bits.as_dict(),
                **{k: v for k, v in self.stats.items() if k != "salient_trials"}}


class BinarizeEncoder:
    """The exporter's encoder for a binarization pass: binarized matrices come back from ``replacement``
    as their stored tensors (``<base>.hb.*``, or one fallback-typed tensor), override matrices go through
    ``layout``/``encode`` like any quantized matrix. Only a ``MatrixRecord`` is kept per matrix."""

    def __init__(self, plan: BinarizePlan, stats: CalibStats | None, saliency: Mapping[str, np.ndarray] | None = None,
                 log: Log = print) -> None:
        self.plan = plan
        self.stats = stats
        self.saliency = dict(saliency or {})
        self.log = log
        self._binarized = {t.name: t for t in plan.binarized}
        self.overrides = None
        if plan.overrides is not None and plan.overrides.tensors:
            method = "imatrix" if stats is not None and stats.imatrix else "rtn"
            self.overrides = MatrixQuantizer(plan.overrides, method, stats, label=method)
        self.records: dict[str, MatrixRecord] = {}
        self.seconds = 0.0

    def matrices(self) -> list[str]:
        return [*self._binarized, *(self.overrides.matrices() if self.overrides is not None else ())]

    def layout(self, name: str):
        return None if self.overrides is None else self.overrides.layout(name)

    def encode(self, name: str, weight: np.ndarray):
        assert self.overrides is not None
        return self.overrides.encode(name, weight)

    def _hessian(self, name: str) -> np.ndarray | None:
        if self.stats is None or not self.stats.hessian:
            return None
        return np.asarray(self.stats.hessian[name], np.float64)

    def replacement(self, name: str, weight: np.ndarray, stored_as: str | None = None) -> list | None:
        """The tensors matrix ``name`` is stored as (named after ``stored_as``, its GGUF name, if given)."""
        if name not in self._binarized:
            return None
        t0 = time.perf_counter()
        s = hb.store_matrix(name, weight, self._hessian(name), self.plan.config, H_saliency=self.saliency.get(name),
                            stored_as=stored_as)
        self.seconds += time.perf_counter() - t0
        stats = dict(s.hbvla.stats) if s.hbvla is not None else {}
        self.records[name] = MatrixRecord(name, s.shape, s.kind, s.bits, stats,
                                          s.fallback.name if s.fallback is not None else None, s.reason)
        return s.tensors


# ------------------------------------------------------------------------------ the report


def binarize_report(policy: Any, plan: BinarizePlan, encoder: BinarizeEncoder, base_outtype: str = "f16") -> dict:
    """JSON-ready: every stored bit per matrix (signs, bitmaps, scales, means, permutation, salient parts,
    header, padding; or the fallback / override type's bytes) and in total."""
    from omnimodel.plan.types import tensor_type

    recs = [encoder.records[t.name] for t in plan.binarized if t.name in encoder.records]
    if len(recs) != len(plan.binarized):
        raise ValueError(f"{len(plan.binarized) - len(recs)} binarized matrices were never stored")
    parts: dict[str, int] = {}
    for r in recs:
        for k, v in r.bits.as_dict().items():
            if k not in ("shape", "fallback", "total", "bpw"):
                parts[k] = parts.get(k, 0) + int(v)
    o_bits, o_n = _override_bits(plan.overrides)
    b_bits = sum(r.bits.total for r in recs)
    b_n = sum(r.bits.n_weights for r in recs)
    quantized = {t.name for t in plan.binarized} | ({t.name for t in plan.overrides.tensors} if plan.overrides else set())
    other_bits = other_n = 0
    for name, value in for_policy(policy).exported_tensors(policy).items():
        if name in quantized:
            continue
        shape = tuple(int(d) for d in value.shape)
        n = int(np.prod(shape)) if shape else 1
        gt = tensor_type(name, shape, base_outtype)
        other_bits += 8 * (n // shape[-1] if shape else 1) * type_info(gt).row_bytes(shape[-1] if shape else 1)
        other_n += n
    n_hb = sum(r.kind == "hbvla" for r in recs)
    return {
        "method": plan.method,
        "config": {k: v for k, v in plan.config.__dict__.items()},
        "policy_aware": plan.policy_aware,
        "budget_bpw": plan.budget_bpw,
        "estimate_bpw": plan.estimate_bpw,
        "feasible_bpw": list(plan.feasible) if plan.feasible else None,
        "vision_llm_bpw": (b_bits + o_bits) / (b_n + o_n),
        "binarized_bpw": b_bits / b_n,
        "vla_bpw": (b_bits + o_bits + other_bits) / (b_n + o_n + other_n),
        "quantized_bytes": (b_bits + o_bits) // 8,
        "other_bytes": other_bits // 8,
        "total_bytes": (b_bits + o_bits + other_bits) // 8,
        "quantized_params": b_n + o_n,
        "other_params": other_n,
        "matrices": {"hbvla": n_hb, "fallback": len(recs) - n_hb,
                     "override": len(plan.overrides.tensors) if plan.overrides else 0},
        "bits_by_kind": parts,
        "bpw_by_kind": {k: v / b_n for k, v in parts.items()},
        "types": _type_shares(recs, plan.overrides),
        "tensors": [r.row() for r in recs]
        + ([{"name": t.name, "shape": list(t.shape), "kind": "override", "chosen": "override", "type": t.type,
             "bpw": t.bpw}
            for t in plan.overrides.tensors] if plan.overrides else []),
    }


def _type_shares(recs: Sequence[MatrixRecord], overrides: Allocation | None) -> dict[str, float]:
    counts: dict[str, int] = {}
    for r in recs:
        key = HBVLA if r.kind == "hbvla" else str(r.fallback)
        counts[key] = counts.get(key, 0) + r.bits.n_weights
    for t in overrides.tensors if overrides else ():
        counts[t.type] = counts.get(t.type, 0) + t.shape[0] * t.shape[1]
    n = sum(counts.values())
    return dict(sorted(((k, v / n) for k, v in counts.items()), key=lambda kv: -kv[1]))


def report_allocation(plan: BinarizePlan, encoder: BinarizeEncoder, order: Sequence[str]) -> Allocation:
    """The pass as an allocation-shaped table (name, shape, stored type, honest bpw) in ``order`` (the
    model's), for the convert summary: HBVLA matrices have type ``HBVLA``, so it is for display only,
    not a reusable allocation."""
    rows = {}
    for t in plan.binarized:
        r = encoder.records[t.name]
        typ = HBVLA if r.kind == "hbvla" else str(r.fallback)
        rows[t.name] = TensorAllocation(t.name, t.shape, t.layer, typ, t.n_in, r.bits.bpw, None, r.kind)
    rows.update({t.name: t for t in plan.overrides.tensors} if plan.overrides else {})
    return Allocation(tuple(rows[n] for n in order if n in rows), plan.budget_bpw, plan.method)


__all__ = [
    "ABLATION_NAMES",
    "BINARIZE_METHODS",
    "NO_POLICY_AWARE",
    "PRESETS",
    "BinarizeEncoder",
    "BinarizeError",
    "BinarizePlan",
    "MatrixRecord",
    "binarize_report",
    "capture_attention_calls",
    "method_config",
    "needs_hessian",
    "plan_binarization",
    "policy_aware_saliency",
    "report_allocation",
]
