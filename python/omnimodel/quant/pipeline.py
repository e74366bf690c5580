"""The quantization pass as the CLI runs it: calibration episodes -> statistics -> allocation -> blocks.

    opts = QuantOptions(bpw=2.5)                        # method "actquant", the demo's calibration split
    stats = calibrate_policy(policy, opts, log=print)   # what opts.method and the allocation need, or None
    allocation = plan(policy, stats, opts)               # one GGML type per matrix
    quantizer = make_quantizer(policy, allocation, stats, opts)
    write_gguf(policy, path, "f16", encoder=quantizer, method=opts.method, target_bpw=opts.bpw)
    outcome = finish_outcome(policy, allocation, quantizer, opts)   # the report

With ``bias_correction`` (``--bias-correction``) every matrix is encoded before the GGUF is written, the
mean action shift the blocks cause on the calibration samples is subtracted from the policy's output bias,
and the writer stores those same blocks (``correct_bias``; ``quant.bias_correction``).

``write_gguf`` asks the quantizer for each matrix when it reaches it, so one matrix's weight, statistics
and blocks are in memory at a time; ``quantize_policy`` is the same pass keeping every matrix's blocks
(for callers that want them in memory).

What is calibrated follows from the options (``calibration_needs``): the Action-Mixed Fisher (a backward
pass per sample) only for actquant's importance, the measured / encoder error models or ``fisher_score``;
the HSIC features only when the solver allocates with HSIC; E[x xᵀ] only for gptq; ``rtn`` with a complete
``--allocation`` needs no calibration at all. The Fisher accumulators of one pass are capped at
``max_accumulator_bytes`` (default: the model's own size in bf16), larger models calibrate in passes over
groups of whole layers, and with ``spill`` each finished Fisher goes to disk (``quant.spill``).

Every method shares the allocation stage (one type per matrix under the budget), so a baseline differs
from ActQuant only where the method itself differs: ``rtn``, ``imatrix``, ``gptq`` and ``awq`` quantize
each matrix in the type the allocation gave it. ``hsic=False`` drops the HSIC sensitivity from the
allocation's error model (every matrix weighs the same), which is the ablation's "without allocation".
AWQ edits the policy in place (its scales fold into norms and rows), so export the policy afterwards.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from omnimodel.errors import OmnimodelError
from omnimodel.simbench.episodes import EpisodeFormatError

from .allocate import Allocation, AllocationError, load_allocation
from .allocate import check_budget as check_allocation_budget
from .bias_correction import (
    BiasCorrection,
    BiasCorrectionError,
    EncodedMatrices,
    correct_output_bias,
    encode_matrices,
    not_applicable,
)
from .binarize import (
    ABLATION_NAMES,
    BINARIZE_METHODS,
    BinarizeEncoder,
    BinarizeError,
    BinarizePlan,
    binarize_report,
    needs_hessian,
    plan_binarization,
    policy_aware_saliency,
    report_allocation,
)
from .calib_check import CalibMismatchError, check_episode, check_metadata, check_sample
from .calib_data import DEFAULT_EPISODES, CalibDataOptions, open_calib_data
from .calibrate import CalibStats, calibrate
from .quantize import ENCODER_METHODS, ERROR_MODELS, IMPORTANCE_MODES, MatrixQuantizer, QuantResult, plan_allocation
from .report import quant_report
from .samples import CalibSample, samples_from_episodes
from .spill import merge_arrays
from .targets import ModelWeights, matrix_targets

GGML_METHODS = ("actquant", "rtn", "imatrix", "gptq", "awq")  # one GGML type per matrix, from the allocation
PIPELINE_METHODS = (*GGML_METHODS, *BINARIZE_METHODS)
Log = Callable[[str], None]


class QuantPipelineError(OmnimodelError):
    """The quantization pass cannot run as asked (no calibration data, bad allocation file, ...)."""


@dataclass(frozen=True)
class QuantOptions:
    bpw: float | None = None  # budget over the quantized matrices; None: --allocation must give every type
    method: str = "actquant"
    allocation: Path | None = None  # our allocation JSON, or a per-tensor override list on top of the solver's
    lam: float = 0.5  # Action-Mixed Fisher: lam * L1 + (1 - lam) * CE
    importance: str = "fisher"  # actquant's per-element importance (see quantize_matrices)
    hsic: bool = True  # HSIC sensitivity in the allocation
    # temperature of the sensitivity weights exp(S / tau): None is the spread of S over the model (the
    # default); a larger tau flattens them toward --no-hsic's equal weights
    hsic_tau: float | None = None
    # what the allocation weighs each candidate type by (quantize.ERROR_MODELS); the paper's by default,
    # so ActQuant runs as published unless asked otherwise
    error_model: str = "paper"
    # Calibration data: an omnimodel episode dataset, a LeRobot v2.x/v3.0 dataset or LIBERO *_demo.hdf5
    # file(s), detected (calib_data.py); None: the demo's bundled calibration split (the demo policy only).
    calib: Path | None = None
    split: str | None = None  # the dataset split to calibrate on; None: "calib" if present, else the first
    calib_cameras: tuple[str, ...] | None = None  # camera keys in the policy's order; None: detected
    calib_state: str | None = None  # LeRobot state feature; None: the first of the usual names
    calib_action: str | None = None  # LeRobot action feature
    calib_episodes: int = DEFAULT_EPISODES  # episodes drawn (round-robin over the tasks) when there are more
    steps_per_episode: int = 4
    max_samples: int | None = None
    device: str = "cpu"
    seed: int = 0
    # Calibration memory: the fp32 Fisher accumulators (4 bytes per quantized weight, plus E[x x^T] per
    # matrix for gptq) of at most this many bytes per pass; above it the matrices are calibrated in
    # passes over groups of whole layers (the statistics are identical, the forward/backward repeats).
    # None: the model's own size in bf16 (2 bytes per parameter), so calibrating costs at most the model
    # again.
    max_accumulator_bytes: int | None = None
    # also compute the Fisher for a method that does not need it, to score it on the shared measure
    # (quant_report's fisher_error, as the method comparison does)
    fisher_score: bool = False
    # --method hbvla only: one of binarize.ABLATION_NAMES (the paper's ablations), None: the full method
    ablation: str | None = None
    # subtract the quantized policy's mean action shift on the calibration samples from the output bias
    # (quant.bias_correction); off by default, so a method's own result is what ships
    bias_correction: bool = False

    @property
    def binarizes(self) -> bool:
        """A binarization method (quant.binarize): HBVLA planes / fallback types instead of an allocation."""
        return self.method in BINARIZE_METHODS

    @property
    def needs_calibration(self) -> bool:
        """Whether this run needs calibration data: whether ``calibration_needs`` asks for any statistic
        (a --bpw budget's HSIC features or Fisher, each method's own; nothing for RTN or magnitude-importance
        ActQuant on a complete --allocation), or the bias correction its samples to measure on."""
        return calibration_needs(self).any or self.bias_correction

    def _check_error_model(self) -> None:
        if self.error_model not in ERROR_MODELS:
            raise QuantPipelineError(f"error model must be one of {ERROR_MODELS}, got {self.error_model!r}")
        if self.error_model == "paper":
            return
        if self.binarizes:
            raise QuantPipelineError(f"--error-model applies to the allocation of {', '.join(GGML_METHODS)}; "
                                     f"--method {self.method} has none (--bpw chooses its knobs)")
        if self.bpw is None:
            raise QuantPipelineError("--error-model applies to the solver's allocation (--bpw); a complete "
                                     "--allocation file has no types left to choose")
        if self.error_model == "encoder" and self.method not in ENCODER_METHODS:
            raise QuantPipelineError(f"--error-model encoder cannot score --method {self.method}: its transform "
                                     "edits the weights after the allocation; use --error-model measured or paper")

    def calib_data_options(self) -> CalibDataOptions:
        return CalibDataOptions(cameras=self.calib_cameras, state_key=self.calib_state, action_key=self.calib_action,
                                split=self.split, episodes=self.calib_episodes, seed=self.seed)

    def check(self) -> None:
        if self.method not in PIPELINE_METHODS:
            raise QuantPipelineError(f"method must be one of {PIPELINE_METHODS}, got {self.method!r}")
        if self.importance not in IMPORTANCE_MODES:
            raise QuantPipelineError(f"importance must be one of {IMPORTANCE_MODES}, got {self.importance!r}")
        self._check_error_model()
        if not 0.0 <= self.lam <= 1.0:
            raise QuantPipelineError(f"lambda must be in [0, 1], got {self.lam}")
        if self.ablation is not None and (self.method != "hbvla" or self.ablation not in ABLATION_NAMES):
            raise QuantPipelineError(f"--hbvla-ablation takes --method hbvla and one of {ABLATION_NAMES}, got "
                                     f"{self.ablation!r} with --method {self.method}")
        if self.bias_correction and self.binarizes:
            raise QuantPipelineError(
                f"--bias-correction applies to {', '.join(GGML_METHODS[:-1])} and {GGML_METHODS[-1]}, "
                f"not to --method {self.method}: a binarized matrix is stored as the GGUF is written, with no "
                "decoded weights kept to measure the shift with")
        if self.binarizes and self.bpw is None and self.allocation is not None:
            raise QuantPipelineError(f"--method {self.method} needs --bpw (its knobs are chosen for it); "
                                     "--allocation adds overrides on top")
        if self.bpw is None and self.allocation is None:
            raise QuantPipelineError("give a bits-per-weight budget (--bpw) or an allocation file (--allocation)")
        if self.bpw is not None and not 0.0 < self.bpw <= 32.0:
            raise QuantPipelineError(f"--bpw must be in (0, 32], got {self.bpw}")
        if self.hsic_tau is not None:
            if not (math.isfinite(self.hsic_tau) and self.hsic_tau > 0.0):
                raise QuantPipelineError(f"--hsic-tau must be a positive number, got {self.hsic_tau}")
            if not self.hsic:
                raise QuantPipelineError("--hsic-tau sets the HSIC weights' temperature; it cannot go with --no-hsic")
            if self.bpw is None or self.binarizes:
                raise QuantPipelineError("--hsic-tau applies to the solver's allocation (--bpw with "
                                         f"{', '.join(GGML_METHODS)})")
        if self.calib_episodes < 1 or self.steps_per_episode < 1:
            raise QuantPipelineError(
                f"--calib-episodes and --calib-steps must be >= 1, got {self.calib_episodes} and "
                f"{self.steps_per_episode}")


@dataclass(frozen=True)
class CalibNeeds:
    """Which statistics a quantization pass needs; calibration runs only when ``any``."""

    features: bool  # HSIC features (forward hooks): the solver's sensitivity
    imatrix: bool  # E[x^2] per input column (forward hooks)
    fisher: bool  # the Action-Mixed Fisher: one backward pass per sample
    hessian: bool  # E[x x^T] per matrix (forward hooks, quadratic memory in the width)

    @property
    def any(self) -> bool:
        return self.features or self.imatrix or self.fisher or self.hessian

    def describe(self) -> str:
        parts = [name for name, on in (("HSIC features", self.features), ("imatrix", self.imatrix),
                                       ("Action-Mixed Fisher", self.fisher), ("E[xx^T]", self.hessian)) if on]
        return ", ".join(parts) if parts else "nothing"


def calibration_needs(opts: QuantOptions) -> CalibNeeds:
    """What ``opts`` needs: a complete allocation file needs no statistics, the solver its HSIC features
    (``hsic``) and the Fisher (the measured and encoder error models score by it); each method its own
    (rtn: none), which the encoder error model's encodes read too."""
    if opts.binarizes:  # hbvla.solve picks the knobs from shapes alone; H = X X^T unless sign x alpha
        return CalibNeeds(features=False, imatrix=False, fisher=opts.fisher_score,
                          hessian=needs_hessian(opts.method, opts.ablation))
    solver = opts.bpw is not None
    return CalibNeeds(
        features=solver and opts.hsic,
        imatrix=opts.method in ("imatrix", "awq"),
        fisher=(opts.method == "actquant" and opts.importance != "magnitude")
        or (solver and opts.error_model != "paper")
        or opts.fisher_score,
        hessian=opts.method == "gptq",
    )


def policy_dtype(opts: QuantOptions | None):
    """The dtype convert loads the policy in for ``opts``: the checkpoint's own (None) except for AWQ,
    which scales weights and folds the inverse into norms in place and so needs fp32 to stay exact."""
    import torch

    return torch.float32 if opts is not None and opts.method == "awq" else None


@dataclass
class QuantOutcome:
    allocation: Allocation
    result: QuantResult
    report: dict[str, Any]
    seconds: dict[str, float] = field(default_factory=dict)
    bias_correction: BiasCorrection | None = None  # with opts.bias_correction: what it measured and removed


def load_samples(policy, opts: QuantOptions) -> list[CalibSample]:
    """Calibration samples from ``opts.calib`` (any format ``calib_data`` detects) or, without one, the
    demo's bundled split; the data is checked against ``policy`` first (``calib_check``: one-line errors)."""
    from omnimodel.arch.registry import for_policy

    arch = for_policy(policy)
    calib = arch.calibration()
    root = Path(opts.calib) if opts.calib is not None else arch.demo_calib
    if root is None:
        raise QuantPipelineError(f"{arch.name}: no built-in calibration data; pass --calib PATH")
    inputs = calib.policy_inputs(policy)
    try:
        source = open_calib_data(root, opts.calib_data_options())
        check_metadata(source.info, inputs)
        keys = source.select(opts.calib_episodes, opts.seed)
        first = source.load(keys[0])
        plan = check_sample(source.info, first, inputs)

        def episodes():
            yield plan.apply(first)
            for key in keys[1:]:
                ep = source.load(key)
                check_episode(source.info, ep, inputs, f"calibration episode {key}")
                yield plan.apply(ep)

        return samples_from_episodes(
            episodes(), calib.chunk_size(policy), steps_per_episode=opts.steps_per_episode, seed=opts.seed,
            max_samples=opts.max_samples,
        )
    except CalibMismatchError as e:
        raise QuantPipelineError(" ".join(str(e).split()) + defaulted_calib_hint(opts.calib)) from e
    except EpisodeFormatError as e:  # CalibDataError too: unreadable or malformed data
        raise QuantPipelineError("calibration data: " + " ".join(str(e).split())) from e


def defaulted_calib_hint(calib: str | Path | None) -> str:
    """Without --calib the family's demo split is tried; when it does not fit, say what to do."""
    return "" if calib is not None else " (the built-in demo's calibration split; pass --calib PATH for this checkpoint)"


def calibrate_policy(
    policy,
    opts: QuantOptions,
    samples: list[CalibSample] | None = None,
    log: Log = print,
    spill: str | Path | None = None,
) -> CalibStats | None:
    """The statistics ``opts`` needs (``calibration_needs``; all of them for actquant), None when it
    needs none. ``spill``: a fresh directory for the per-matrix Fisher / E[x x^T] (see ``calibrate``)."""
    opts.check()
    needs = calibration_needs(opts)
    if not needs.any:
        log(f"      nothing to calibrate: {opts.method} with a complete allocation needs no statistics")
        return None
    if samples is None:
        samples = load_samples(policy, opts)
    t0 = time.perf_counter()
    budget = opts.max_accumulator_bytes or default_accumulator_bytes(policy)
    if needs.fisher or needs.hessian:
        groups = layer_groups(policy, budget, needs.hessian, fisher=needs.fisher)
    else:
        groups = [[t.name for t in matrix_targets(policy.model)]]
    parts = []
    for i, names in enumerate(groups):
        if len(groups) > 1:
            log(f"      pass {i + 1}/{len(groups)}: {len(names)} matrices")
        parts.append(calibrate(policy, samples, lam=opts.lam, fisher=needs.fisher, hessian=needs.hessian,
                               device=opts.device, only=names if len(groups) > 1 else None, spill=spill))
    stats = merge_stats(parts)
    losses = f"L1 {stats.losses.get('act', float('nan')):.4f}, CE {stats.losses.get('ce', float('nan')):.3f}"
    log(f"      {needs.describe()} on {len(samples)} samples in {len(groups)} pass(es), {losses} "
        f"({time.perf_counter() - t0:.1f} s)")
    return stats


def default_accumulator_bytes(policy) -> int:
    """The default cap on one calibration pass's fp32 accumulators: the model's size in bf16."""
    return 2 * sum(p.numel() for p in policy.model.parameters())


def layer_groups(policy, max_bytes: int, hessian: bool = False, *, fisher: bool = True) -> list[list[str]]:
    """The quantized matrices in consecutive groups of whole layers whose accumulators fit ``max_bytes``
    (a layer larger than that alone still forms one group), as few groups as that allows and as even
    as whole layers allow (``balanced_groups``)."""
    by_layer: dict[str, list] = {}
    for t in matrix_targets(policy.model):
        by_layer.setdefault(t.layer, []).append(t)
    layers = list(by_layer.values())
    sizes = [sum((4 * t.numel if fisher else 0) + (8 * t.n_in * t.n_in if hessian else 0) for t in ts)
             for ts in layers]
    return [[t.name for i in group for t in layers[i]] for group in balanced_groups(sizes, max_bytes)]


def balanced_groups(sizes: list[int], max_bytes: int) -> list[list[int]]:
    """Consecutive index groups over ``sizes``: the fewest groups whose sums are <= ``max_bytes`` (an
    item above it alone is a group of its own), cut where the running total passes k/n of the whole, so
    two passes over 3.2 GB of Fisher hold 1.6 GB each, not 1.8 + 1.4."""
    total = sum(sizes)
    first = min(max(1, math.ceil(total / max(max_bytes, 1))), max(len(sizes), 1))
    groups: list[list[int]] = []
    for n in range(first, len(sizes) + 1):  # n = len(sizes): one item per group always fits
        groups, sums, done = [], [], 0
        for i, size in enumerate(sizes):
            # the next group starts once the groups so far hold their share of the total
            if not groups or done + size > len(groups) * total / n:
                groups.append([])
                sums.append(0)
            groups[-1].append(i)
            sums[-1] += size
            done += size
        if all(s <= max_bytes or len(g) == 1 for s, g in zip(sums, groups)):
            break
    return groups


def merge_stats(parts: list[CalibStats]) -> CalibStats:
    """One CalibStats from passes over disjoint matrix subsets (same samples, so the shared fields agree).
    Spilled statistics stay on disk: the merged mapping reads each part's files."""
    if len(parts) == 1:
        return parts[0]
    first = parts[0]

    def merged(field_name: str):
        return merge_arrays([getattr(p, field_name) for p in parts])

    return CalibStats(
        first.n_samples, first.lam, merged("imatrix"), merged("fisher"), merged("features"), dict(first.inputs),
        first.actions, fisher_act=merged("fisher_act"), fisher_ce=merged("fisher_ce"), hessian=merged("hessian"),
        losses=dict(first.losses), domains={k: v for p in parts for k, v in p.domains.items()},
    )


def plan(policy, stats: CalibStats | None, opts: QuantOptions, weights=None, log: Log | None = None) -> Allocation:
    """The allocation: the solver's under ``opts.bpw``, a saved one, or overrides on top of the solver's.
    ``weights``: the quantized matrices as numpy (read lazily from the policy, one at a time, if not given).
    ``log``: the measured / encoder error models' progress."""
    targets = matrix_targets(policy.model)
    base = None
    if opts.bpw is not None:
        weights = weights if weights is not None else ModelWeights(policy.model)
        try:
            base = plan_allocation(targets, weights, stats, opts.bpw, error_model=opts.error_model, hsic=opts.hsic,
                                   hsic_tau=opts.hsic_tau,
                                   method=opts.method, importance=opts.importance, log=log)
        except AllocationError as e:
            raise QuantPipelineError(str(e)) from e
        base = replace(base, method=opts.method)
    if opts.allocation is None:
        assert base is not None
        return base
    path = Path(opts.allocation)
    if not path.is_file():
        raise QuantPipelineError(f"{path}: allocation file not found")
    try:
        return load_allocation(path, targets, base)
    except AllocationError as e:
        raise QuantPipelineError(str(e)) from e


def make_quantizer(
    policy, allocation: Allocation, stats: CalibStats | None, opts: QuantOptions, log: Log = print
) -> MatrixQuantizer:
    """The per-matrix quantizer for ``opts.method`` (for ``write_gguf(encoder=...)``). AWQ first searches
    its scales and edits the policy in place (so export the policy after this), then quantizes with RTN."""
    if opts.method == "awq":
        from .awq import awq_transform

        t0 = time.perf_counter()
        alphas = awq_transform(policy.model, allocation, stats)
        scaled = sum(1 for a in alphas.values() if a > 0)
        log(f"      AWQ: scales folded into {scaled} of {len(alphas)} groups ({time.perf_counter() - t0:.1f} s)")
        return MatrixQuantizer(allocation, "rtn", stats if opts.fisher_score else None, label="awq")
    return MatrixQuantizer(allocation, opts.method, stats, importance=opts.importance)


def finish_outcome(
    policy, allocation: Allocation, quantizer: MatrixQuantizer | EncodedMatrices, opts: QuantOptions,
    seconds: dict | None = None, correction: BiasCorrection | None = None,
) -> QuantOutcome:
    """The report of a pass whose matrices ``quantizer`` has encoded (after ``write_gguf``); ``correction``:
    the output bias correction applied before the GGUF was written (recorded as ``bias_correction``)."""
    result = quantizer.result()
    report = quant_report(policy, allocation, result)
    report["options"] = {k: (str(v) if isinstance(v, Path) else v) for k, v in opts.__dict__.items()}
    times = {**(seconds or {}), "quantize": quantizer.seconds}
    if correction is not None:
        report["bias_correction"] = correction.as_dict()
        times["bias_correction"] = correction.seconds
    return QuantOutcome(allocation, result, report, times, correction)


def quantize_policy(policy, stats: CalibStats | None, opts: QuantOptions, log: Log = print,
                    samples: list[CalibSample] | None = None) -> QuantOutcome:
    """Allocation, then the method's blocks for every quantized matrix (kept in ``result.tensors``), then
    (``opts.bias_correction``) the output bias corrected on ``samples`` (default: ``load_samples``), then
    the report. Matrices are read from the policy one at a time."""
    opts.check()
    t0 = time.perf_counter()
    allocation = plan(policy, stats, opts, log=log)
    allocate_s = time.perf_counter() - t0
    quantizer = make_quantizer(policy, allocation, stats, opts, log)
    blocks = encode_matrices(policy, allocation, quantizer)
    correction = None
    if opts.bias_correction:
        samples = samples or load_samples(policy, opts)
        correction = _corrected(policy, QuantResult(quantizer.label, blocks), samples, log)
    outcome = finish_outcome(policy, allocation, quantizer, opts, {"allocate": allocate_s}, correction)
    outcome.result = QuantResult(outcome.result.method, blocks)
    return outcome


def check_bias_correction(arch, opts: QuantOptions) -> None:
    """Fail before any work when ``opts.bias_correction`` cannot apply to the family ``arch`` (a registry
    ``Architecture``): it must name the bias added last to its actions (``output_bias``)."""
    if opts.bias_correction and arch.output_bias is None:
        raise QuantPipelineError(not_applicable(arch))


def correct_bias(
    policy, allocation: Allocation, quantizer: MatrixQuantizer, samples: list[CalibSample], log: Log = print
) -> tuple[EncodedMatrices, BiasCorrection]:
    """``--bias-correction`` before the GGUF is written: every matrix encoded, the policy's output bias
    corrected in place for the shift those blocks cause on ``samples``; -> (the exporter's encoder, which
    returns the same blocks, and the correction for the report)."""
    blocks = encode_matrices(policy, allocation, quantizer)
    correction = _corrected(policy, QuantResult(quantizer.label, blocks), samples, log)
    return EncodedMatrices(quantizer, blocks), correction


def _corrected(policy, result: QuantResult, samples: list[CalibSample], log: Log) -> BiasCorrection:
    try:
        correction = correct_output_bias(policy, result, samples)
    except BiasCorrectionError as e:
        raise QuantPipelineError(str(e)) from e
    log(f"      {correction.describe()}")
    return correction


def binarize_plan(policy, opts: QuantOptions) -> BinarizePlan:
    """The binarization pass's knobs and matrices for ``opts`` (before calibrating: a --bpw out of reach
    fails here, naming the feasible range)."""
    try:
        return plan_binarization(policy, opts.method, opts.bpw, opts.allocation, opts.ablation)
    except BinarizeError as e:
        raise QuantPipelineError(str(e)) from e


def make_binarizer(policy, bplan: BinarizePlan, stats: CalibStats | None, opts: QuantOptions,
                   samples: list[CalibSample] | None = None, log: Log = print) -> BinarizeEncoder:
    """The exporter's encoder for a binarization pass; for HBVLA first the policy-aware Hessian of the
    attention projections from the calibration samples' attention inputs."""
    saliency = {}
    if bplan.policy_aware and stats is not None and stats.hessian:
        saliency = policy_aware_saliency(policy, bplan, stats, samples or load_samples(policy, opts), log)
    return BinarizeEncoder(bplan, stats, saliency, log)


def binarize_outcome(policy, bplan: BinarizePlan, encoder: BinarizeEncoder, opts: QuantOptions,
                     seconds: dict | None = None) -> QuantOutcome:
    """The report of a binarization pass whose matrices ``encoder`` has stored (after ``write_gguf``)."""
    report = binarize_report(policy, bplan, encoder)
    report["options"] = {k: (str(v) if isinstance(v, Path) else v) for k, v in opts.__dict__.items()}
    order = [t.name for t in matrix_targets(policy.model)]
    allocation = report_allocation(bplan, encoder, order)
    return QuantOutcome(allocation, None, report, {**(seconds or {}), "quantize": encoder.seconds})


def check_budget(policy, opts: QuantOptions) -> None:
    """Fail before calibrating when ``opts.bpw`` cannot be met (the solver would say so only later)."""
    if opts.bpw is None:
        return
    if opts.binarizes:
        binarize_plan(policy, opts)
        return
    try:
        check_allocation_budget(matrix_targets(policy.model), opts.bpw)
    except AllocationError as e:
        raise QuantPipelineError(str(e)) from e


__all__ = [
    "PIPELINE_METHODS",
    "binarize_outcome",
    "binarize_plan",
    "make_binarizer",
    "CalibNeeds",
    "QuantOptions",
    "QuantOutcome",
    "QuantPipelineError",
    "calibrate_policy",
    "calibration_needs",
    "check_bias_correction",
    "check_budget",
    "correct_bias",
    "default_accumulator_bytes",
    "finish_outcome",
    "balanced_groups",
    "layer_groups",
    "load_samples",
    "make_quantizer",
    "merge_stats",
    "plan",
    "policy_dtype",
    "quantize_policy",
]
