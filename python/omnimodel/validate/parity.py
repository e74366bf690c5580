"""One parity check: feed the runtime what the references saw, compare every intermediate, report.

    check = ParityCheck(policy, "out/model.gguf", dtype="float64", threads=2)
    report = check.run(plan)            # runtime + the three references (cached) -> ValidationReport

The references (docs/parity.md): R rounds where the runtime rounds (the plan's weight types and
numerics knobs), E does not, R' is R computed in float32 with float32-sized noise at each rounding
point: a correct float32 implementation of R, as the runtime is one. Each is one
forward pass of the PyTorch model; they do not depend on the generated graph, so the reflector's
repair attempts reuse them (``validate``) and only re-run the runtime. R is stored (only the tensors
the runtime captured, float64 results rounded to float32); E and R' are compared with it on the fly.

Where the global rule fails, the teacher-forced local check (``local_references``, docs/parity.md
"Teacher forcing") runs R and R' again with the runtime's captured tensors put in place of their own:
it depends on the runtime's values, so it is computed per runtime run, never cached.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from .compare import (
    DEFAULT_TOLERANCE,
    Tolerance,
    action_span_of,
    compare_all,
    compare_tensor,
    judge_locally,
    rel_rms_from_sums,
)
from .numerics import RuntimeNumerics
from .reference import (
    DEFAULT_INSTRUCTION,
    DEFAULT_SEED,
    DistanceSink,
    GGUFWeights,
    Perturbation,
    ReferenceRun,
    StoreSink,
    TeacherForcing,
    parity_observation,
    reference_inputs,
    run_reference,
)
from .report import ValidationReport

Log = Callable[[str], None]

# Two noise samples, the noise taken as the larger: a single one under-estimates the spread of small
# tensors' statistics (the action chunk's largest error over 56 values varies ~3x between samples).
NOISE_SAMPLES = (Perturbation(seed=0), Perturbation(seed=1))


class RuntimeRun(dict):
    """Every named intermediate of one runtime run (name -> array, execution order), plus which graph
    the runtime ran (``graph_source``: "plugin:<path>", "builtin:<arch>", "linked:<file>"), asked from
    the loaded model rather than assumed from what the caller meant to load."""

    graph_source: str | None = None


# Not the generated graph: where a mismatch of the runtime's own input preparation comes from.
_PREPROCESSING_HINT = {
    "input_ids": "the runtime's tokenizer / prompt template (GGUF tokenizer.* and prompt metadata) disagrees "
                 "with the checkpoint's",
    "pixel_values": "the runtime's image preprocessing (resize, then per tower (x/255 - image_mean) / image_std "
                    "from the GGUF metadata *.vision.*.image_mean/image_std) disagrees with the checkpoint's "
                    "preprocessor_config.json",
}


def run_runtime(
    gguf: str | os.PathLike[str],
    inputs: dict[str, np.ndarray],
    threads: int = 1,
    *,
    observation: tuple[list[np.ndarray], str] | None = None,
) -> RuntimeRun:
    """Every named intermediate of one runtime run, in execution order.

    With an ``observation`` (raw camera images, instruction) the runtime's own preprocessing -- what
    ``predict_action`` runs on a robot: tokenizer, resize, per-tower normalisation from the GGUF
    metadata -- comes first as "input_ids" and "pixel_values". The graph is still fed ``inputs``, so a
    preprocessing fault shows there and nowhere else."""
    from omnimodel import _runtime

    with _runtime.Model(str(gguf), n_threads=threads) as m:
        run = RuntimeRun()
        if observation is not None:
            images, instruction = observation
            run["input_ids"] = np.asarray(m.input_ids(instruction), np.float32)[None]
            run["pixel_values"] = m.preprocess_images(list(images))
        run.update(m.run(inputs, capture=["*"]))
        run.graph_source = m.graph_source
        return run



@dataclass
class References:
    """R (stored), and per tensor d(E, R) and d(R', R) in the tensor's metric."""

    numerics: RuntimeNumerics
    names: frozenset[str]  # the runtime names asked for (those without a PyTorch counterpart included)
    emulating: ReferenceRun
    inherent: dict[str, float]
    noise: dict[str, float]
    seconds: float


def _distances(sink: DistanceSink, action_span: np.ndarray | None) -> dict[str, float]:
    out = {}
    for name in sink.sq_ref:
        if name in sink.shape_mismatch:
            out[name] = float("nan")
            continue
        span = action_span_of(name, action_span)
        if span is None:
            out[name] = rel_rms_from_sums(sink.sq_err[name], sink.sq_ref[name])
        else:
            out[name] = float((sink.max_err[name] / np.broadcast_to(np.asarray(span, np.float64),
                                                                    sink.max_err[name].shape)).max())
    return out


class ParityCheck:
    """The runtime vs PyTorch on one deterministic observation of ``policy``, weights from ``gguf``."""

    def __init__(
        self,
        policy: Any,
        gguf: str | os.PathLike[str],
        *,
        dtype: str = "float64",
        instruction: str = DEFAULT_INSTRUCTION,
        seed: int = DEFAULT_SEED,
        threads: int = 1,
        tolerance: Tolerance = DEFAULT_TOLERANCE,
        perturbations: tuple[Perturbation, ...] = NOISE_SAMPLES,
        log: Log = lambda _msg: None,
    ) -> None:
        self.policy = policy
        self.gguf = Path(gguf)
        self.dtype = dtype
        self.instruction = instruction
        self.seed = seed
        self.threads = threads
        self.tolerance = tolerance
        if not perturbations:
            raise ValueError("parity needs at least one noise sample")
        self.perturbations = perturbations
        self.log = log
        images, proprio = parity_observation(policy, seed)
        self.images = images
        self.inputs = reference_inputs(policy, images, instruction, proprio)
        self._weights: GGUFWeights | None = None
        self._references: list[References] = []

    @property
    def weights(self) -> GGUFWeights:
        if self._weights is None:
            from omnimodel.arch.registry import for_policy

            self._weights = GGUFWeights(self.gguf, for_policy(self.policy).gguf_name)
        return self._weights

    def runtime_inputs(self) -> dict[str, np.ndarray]:
        from omnimodel.arch.registry import for_policy

        return for_policy(self.policy).runtime_inputs(self.inputs)

    def run_runtime(self) -> RuntimeRun:
        from omnimodel.arch.registry import for_policy

        # the runtime's own preprocessing is compared where the family has one
        observation = (self.images, self.instruction) if for_policy(self.policy).runtime_preprocessing else None
        return run_runtime(self.gguf, self.runtime_inputs(), self.threads, observation=observation)

    def references(self, plan: Any, names: set[str]) -> References:
        """R, d(E, R) and d(R', R) for ``plan``'s numerics, covering ``names`` (computed once per numerics)."""
        numerics = RuntimeNumerics.from_plan(plan)
        for refs in self._references:
            if refs.numerics == numerics and names <= refs.names:
                return refs
        t0 = time.perf_counter()
        keep = names.__contains__
        common = dict(dtype=self.dtype, weights=self.weights, keep=keep)
        # R is kept as float32: the float64 result rounded once (6e-8), at half the memory (at full depth
        # the runtime's tensors are 0.6 GB and R's would be 1.2 GB in float64)
        store = StoreSink(np.float32)
        r = run_reference(self.policy, self.inputs, **common, numerics=numerics, sink=store)
        r.tensors = store.tensors()
        span = r.action_span
        self.log(f"      R (emulating, {self.dtype}): {len(r.tensors)} tensors, "
                 f"activation rounding {numerics.summary() or 'none'}")
        exact = DistanceSink(r.tensors)
        run_reference(self.policy, self.inputs, **common, sink=exact)
        self.log("      E (exact) compared with R")
        noise: dict[str, float] = {}
        for p in self.perturbations:  # each a sample of what a correct float32 implementation may do
            noisy = DistanceSink(r.tensors)
            run_reference(self.policy, self.inputs, **{**common, "dtype": "float32"}, numerics=numerics,
                          perturb=p, sink=noisy)
            for name, d in _distances(noisy, span).items():
                noise[name] = max(d, noise.get(name, 0.0))
        self.log(f"      R' x{len(self.perturbations)} (R in float32, {self.perturbations[0].eps:.1e} relative noise "
                 "at each rounding point) compared with R")
        refs = References(numerics, frozenset(names), r, _distances(exact, span), noise, time.perf_counter() - t0)
        self._references.append(refs)
        return refs

    def local_references(self, plan: Any, runtime: dict[str, np.ndarray],
                         judged: set[str]) -> tuple[dict[str, float], dict[str, float]]:
        """The teacher-forced local check's distances for the tensors in ``judged``: d(runtime, R_tf) and
        max over the noise samples of d(R'_tf, R_tf), where R_tf and R'_tf are R and R' fed the runtime's
        own values at every captured tensor (``TeacherForcing``): each tensor is computed from exactly the
        inputs the runtime had, so only the module's own arithmetic (or fault) separates them. Three more
        forward passes (R_tf in the reference dtype, R'_tf per noise sample in float32); only the judged
        tensors of R_tf are kept."""
        t0 = time.perf_counter()
        numerics = RuntimeNumerics.from_plan(plan)
        names = set(runtime)
        common = dict(weights=self.weights, keep=names.__contains__, numerics=numerics)
        store = StoreSink(np.float32, only=judged)
        span = run_reference(self.policy, self.inputs, **common, dtype=self.dtype, sink=store,
                             force=TeacherForcing(runtime)).action_span
        forced = store.tensors()
        # compare_tensor's distance (NaN for a shape mismatch or non-finite values); the bound is judged later
        error = {name: compare_tensor(name, runtime[name], ref, self.tolerance, noise=math.nan,
                                      action_range=action_span_of(name, span)).error
                 for name, ref in forced.items() if name in runtime}
        noise: dict[str, float] = {}
        for p in self.perturbations:
            noisy = DistanceSink(forced)
            run_reference(self.policy, self.inputs, **common, dtype="float32", perturb=p, sink=noisy,
                          force=TeacherForcing(runtime))
            for name, d in _distances(noisy, span).items():
                noise[name] = max(d, noise.get(name, 0.0))
        self.log(f"      local check: R and R' x{len(self.perturbations)} fed the runtime's captured tensors "
                 f"({time.perf_counter() - t0:.1f} s)")
        return error, noise

    def validate(self, runtime: RuntimeRun | dict[str, np.ndarray], plan: Any, **report_fields: Any) -> ValidationReport:
        refs = self.references(plan, set(runtime))
        results, unmatched = compare_all(
            runtime, refs.emulating.tensors, self.tolerance, noise=refs.noise, inherent=refs.inherent,
            action_span=refs.emulating.action_span,
        )
        judged = {r.name for r in results if not r.passed and math.isfinite(r.error)}
        if judged:  # the global rule failed somewhere: judge locally there
            local_error, local_noise = self.local_references(plan, runtime, judged)
            results = judge_locally(results, self.tolerance, local_error=local_error, local_noise=local_noise)
        results = [replace(r, reason=f"{r.reason}; {_PREPROCESSING_HINT[r.name]}")
                   if not r.passed and r.name in _PREPROCESSING_HINT else r for r in results]
        return ValidationReport(
            outtype=plan.outtype,
            tolerance=self.tolerance,
            results=results,
            unmatched=unmatched,
            graph_source=getattr(runtime, "graph_source", None),
            reference_dtype=self.dtype,
            instruction=self.instruction,
            seed=self.seed,
            threads=self.threads,
            reference_weights="gguf",
            perturbation=self.perturbations[0].eps,
            noise_samples=len(self.perturbations),
            rounding=refs.numerics.summary(),
            **report_fields,
        )

    def run(self, plan: Any, **report_fields: Any) -> ValidationReport:
        return self.validate(self.run_runtime(), plan, **report_fields)


__all__ = ["NOISE_SAMPLES", "ParityCheck", "References", "RuntimeRun", "run_runtime"]
