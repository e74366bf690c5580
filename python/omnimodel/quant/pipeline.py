"""The quantization pass as the CLI runs it: calibration episodes -> statistics -> allocation -> blocks.

    opts = QuantOptions(bpw=2.5)                        # method "actquant", the demo's calibration split
    stats = calibrate_policy(policy, opts, log=print)   # one pass over the calibration samples
    outcome = quantize_policy(policy, stats, opts)       # allocation + per-tensor blocks + report
    write_gguf(policy, path, "f16", encoded=outcome.result.tensors, method=..., target_bpw=opts.bpw)

Every method shares the allocation stage (one type per matrix under the budget), so a baseline differs
from ActQuant only where the method itself differs: ``rtn``, ``imatrix``, ``gptq`` and ``awq`` quantize
each matrix in the type the allocation gave it. ``hsic=False`` drops the HSIC sensitivity from the
allocation's error model (every matrix weighs the same), which is the ablation's "without allocation".
AWQ edits the policy in place (its scales fold into norms and rows), so export the policy afterwards.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omnimodel.errors import OmnimodelError
from omnimodel.simbench.episodes import EpisodeFormatError

from .allocate import Allocation, AllocationError, load_allocation
from .allocate import check_budget as check_allocation_budget
from .calib_check import CalibMismatchError, PolicyInputs, check_episode, check_metadata, check_sample
from .calib_data import DEFAULT_EPISODES, CalibDataOptions, open_calib_data
from .calibrate import CalibStats, calibrate
from .quantize import IMPORTANCE_MODES, QuantResult, plan_allocation, quantize_matrices
from .report import quant_report
from .samples import CalibSample, samples_from_episodes
from .targets import matrix_targets, matrix_weights

PIPELINE_METHODS = ("actquant", "rtn", "imatrix", "gptq", "awq")
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
    max_accumulator_bytes: int = 4 << 30

    @property
    def needs_calibration(self) -> bool:
        """Whether this run needs calibration data. Under a --bpw budget always (the solver weighs the
        matrices by Fisher and HSIC); on a fixed --allocation every method but RTN and magnitude-importance
        ActQuant still needs its own statistics (imatrix, Fisher, Hessian, AWQ's activations)."""
        if self.bpw is not None:
            return True
        return not (self.method == "rtn" or (self.method == "actquant" and self.importance == "magnitude"))

    def calib_data_options(self) -> CalibDataOptions:
        return CalibDataOptions(cameras=self.calib_cameras, state_key=self.calib_state, action_key=self.calib_action,
                                split=self.split, episodes=self.calib_episodes, seed=self.seed)

    def check(self) -> None:
        if self.method not in PIPELINE_METHODS:
            raise QuantPipelineError(f"method must be one of {PIPELINE_METHODS}, got {self.method!r}")
        if self.importance not in IMPORTANCE_MODES:
            raise QuantPipelineError(f"importance must be one of {IMPORTANCE_MODES}, got {self.importance!r}")
        if not 0.0 <= self.lam <= 1.0:
            raise QuantPipelineError(f"lambda must be in [0, 1], got {self.lam}")
        if self.bpw is None and self.allocation is None:
            raise QuantPipelineError("give a bits-per-weight budget (--bpw) or an allocation file (--allocation)")
        if self.bpw is not None and not 0.0 < self.bpw <= 32.0:
            raise QuantPipelineError(f"--bpw must be in (0, 32], got {self.bpw}")
        if self.calib_episodes < 1 or self.steps_per_episode < 1:
            raise QuantPipelineError(
                f"--calib-episodes and --calib-steps must be >= 1, got {self.calib_episodes} and "
                f"{self.steps_per_episode}")


@dataclass
class QuantOutcome:
    allocation: Allocation
    result: QuantResult
    report: dict[str, Any]
    seconds: dict[str, float] = field(default_factory=dict)


def load_samples(policy, opts: QuantOptions) -> list[CalibSample]:
    """Calibration samples from ``opts.calib`` (any format ``calib_data`` detects) or, without one, the
    demo's bundled split; the data is checked against ``policy`` first (``calib_check``: one-line errors)."""
    from omnimodel.demo_assets import DEMO_CALIB_DIR

    root = Path(opts.calib) if opts.calib is not None else DEMO_CALIB_DIR
    inputs = PolicyInputs.from_policy(policy)
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
            episodes(), policy.config.num_actions_chunk, steps_per_episode=opts.steps_per_episode, seed=opts.seed,
            max_samples=opts.max_samples,
        )
    except CalibMismatchError as e:
        raise QuantPipelineError(" ".join(str(e).split())) from e
    except EpisodeFormatError as e:  # CalibDataError too: unreadable or malformed data
        raise QuantPipelineError("calibration data: " + " ".join(str(e).split())) from e


def calibrate_policy(
    policy, opts: QuantOptions, samples: list[CalibSample] | None = None, log: Log = print
) -> CalibStats:
    """The statistics ``opts.method`` needs (all of them for actquant: imatrix, Fisher, HSIC features)."""
    opts.check()
    if samples is None:
        samples = load_samples(policy, opts)
    t0 = time.perf_counter()
    hessian = opts.method == "gptq"
    groups = layer_groups(policy, opts.max_accumulator_bytes, hessian)
    parts = []
    for i, names in enumerate(groups):
        if len(groups) > 1:
            log(f"      pass {i + 1}/{len(groups)}: {len(names)} matrices")
        parts.append(calibrate(policy, samples, lam=opts.lam, fisher=True, hessian=hessian, device=opts.device,
                               only=names if len(groups) > 1 else None))
    stats = merge_stats(parts)
    log(f"      {len(samples)} samples, L1 {stats.losses.get('act', float('nan')):.4f}, "
        f"CE {stats.losses.get('ce', float('nan')):.3f} ({time.perf_counter() - t0:.1f} s)")
    return stats


def layer_groups(policy, max_bytes: int, hessian: bool = False) -> list[list[str]]:
    """The quantized matrices in consecutive groups of whole layers whose accumulators fit ``max_bytes``
    (a layer larger than that alone still forms one group)."""
    groups: list[list[str]] = [[]]
    size = 0
    by_layer: dict[str, list] = {}
    for t in matrix_targets(policy.model):
        by_layer.setdefault(t.layer, []).append(t)
    for layer in by_layer.values():
        need = sum(4 * t.numel + (8 * t.n_in * t.n_in if hessian else 0) for t in layer)
        if groups[-1] and size + need > max_bytes:
            groups.append([])
            size = 0
        groups[-1].extend(t.name for t in layer)
        size += need
    return groups


def merge_stats(parts: list[CalibStats]) -> CalibStats:
    """One CalibStats from passes over disjoint matrix subsets (same samples, so the shared fields agree)."""
    if len(parts) == 1:
        return parts[0]
    first = parts[0]
    merged = CalibStats(first.n_samples, first.lam, {}, {}, {}, dict(first.inputs), first.actions,
                        losses=dict(first.losses))
    for p in parts:
        for field_name in ("imatrix", "fisher", "features", "fisher_act", "fisher_ce", "hessian"):
            getattr(merged, field_name).update(getattr(p, field_name))
    return merged


def _weights(policy) -> dict:
    return {n: w.numpy() for n, w in matrix_weights(policy.model).items()}


def plan(policy, stats: CalibStats, opts: QuantOptions, weights: dict | None = None) -> Allocation:
    """The allocation: the solver's under ``opts.bpw``, a saved one, or overrides on top of the solver's.
    ``weights``: the quantized matrices as numpy (taken from the policy when not given)."""
    targets = matrix_targets(policy.model)
    base = None
    if opts.bpw is not None:
        weights = weights if weights is not None else _weights(policy)
        try:
            base = plan_allocation(targets, weights, stats, opts.bpw, error_model=opts.error_model, hsic=opts.hsic)
        except AllocationError as e:
            raise QuantPipelineError(str(e)) from e
        base = Allocation(base.tensors, base.budget_bpw, opts.method)
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


def quantize_policy(policy, stats: CalibStats, opts: QuantOptions, log: Log = print) -> QuantOutcome:
    """Allocation, then the method's blocks for every quantized matrix, then the report."""
    opts.check()
    times: dict[str, float] = {}
    t0 = time.perf_counter()
    weights = _weights(policy)
    allocation = plan(policy, stats, opts, weights)
    times["allocate"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    if opts.method == "awq":  # AWQ rescales the weights first, so it takes them from the model itself
        from .awq import quantize_awq

        result, _alphas = quantize_awq(policy.model, allocation, stats)
    else:
        result = quantize_matrices(weights, allocation, opts.method, stats, importance=opts.importance)
    times["quantize"] = time.perf_counter() - t0
    report = quant_report(policy, allocation, result)
    report["options"] = {k: (str(v) if isinstance(v, Path) else v) for k, v in opts.__dict__.items()}
    return QuantOutcome(allocation, result, report, times)


def check_budget(policy, opts: QuantOptions) -> None:
    """Fail before calibrating when ``opts.bpw`` cannot be met (the solver would say so only later)."""
    if opts.bpw is None:
        return
    try:
        check_allocation_budget(matrix_targets(policy.model), opts.bpw)
    except AllocationError as e:
        raise QuantPipelineError(str(e)) from e


__all__ = [
    "PIPELINE_METHODS",
    "QuantOptions",
    "QuantOutcome",
    "QuantPipelineError",
    "calibrate_policy",
    "check_budget",
    "layer_groups",
    "load_samples",
    "merge_stats",
    "plan",
    "quantize_policy",
]
