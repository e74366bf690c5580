"""Per-tensor comparison of a runtime intermediate with the emulating reference, against a tolerance
that comes from measurement rather than from a table (docs/parity.md).

Three distances per tensor, all scale-free and against R, the reference that rounds where the runtime
rounds:

    error     d(runtime, R)  what is judged
    noise     d(R', R)       how far a correct float32 implementation of R drifts from R: R computed
                             in float32 with a float32-sized relative perturbation at every rounding
                             point's input
    inherent  d(E, R)        how much the runtime's rounding itself moves the tensor (E: exact
                             arithmetic on the same weights); shown, never judged

    pass  <=>  error <= bound = max(K * noise, floor)
          or  (local error <= max(K * local noise, floor)  and  every earlier tensor passes)

The second line is the teacher-forced local check (docs/parity.md "Teacher forcing"): R recomputes each
tensor from the runtime's own values of the captured tensors upstream of it, so a module that computes
exactly what it should from what the runtime fed it passes even where the runtime's float32 drift flipped
an activation rounding upstream that R' did not flip (one flip is a whole rounding step, far above
float32 noise). It is evaluated only where the global rule fails (``judge_locally``).

d is the relative RMS error |a - b| / |b| for every tensor but the action chunk, where it is the
largest error relative to each action dimension's range (what a robot feels). K and the floors are
set from correct conversions and injected faults at real width (``DEFAULT_TOLERANCE``).

A shape disagreement (after dropping leading size-1 batch dimensions on both sides) or any NaN/Inf
fails outright: no metric can make such a tensor pass.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace

import numpy as np

#: The action chunk: judged by error relative to the action range; normalised actions live in [-1, 1]
#: (range 2), un-normalised ones in each dimension's dataset range.
ACTION_TENSORS = ("normalized_actions", "actions")

REL_RMS = "rel_rms"
ACTION_RANGE = "action_range"


@dataclass(frozen=True)
class Tolerance:
    k: float  # how many times the noise sample's distance a correct runtime may reach
    floor: float  # relative RMS always allowed: float32 arithmetic where R has no rounding point to flip
    action_floor: float  # the same for the action chunk, as a fraction of the action range

    def bound(self, noise: float, metric: str) -> float:
        floor = self.action_floor if metric == ACTION_RANGE else self.floor
        return max(self.k * noise, floor) if math.isfinite(noise) else floor


# Measured at real width (benchmarks/parity_realwidth.py, docs/parity.md "Choosing K and the floors"):
# correct conversions reach at most 2.3x their noise (the larger of two samples), the weakest fault at
# F32 (RMSNorm eps 1e-6 for 1e-5 on a random-weight Llama) 7.4x: K = 4 sits between them with a margin of
# ~1.8 on either side. The floors cover tensors with no noise at all (exact copies: token embeddings,
# the preprocessed inputs), where a correct runtime has been exact.
DEFAULT_TOLERANCE = Tolerance(k=4.0, floor=1e-6, action_floor=1e-6)


@dataclass(frozen=True)
class TensorComparison:
    name: str
    runtime_shape: tuple[int, ...]
    reference_shape: tuple[int, ...]
    metric: str  # REL_RMS or ACTION_RANGE
    error: float  # d(runtime, R); NaN when it cannot be computed (shape mismatch, non-finite values)
    noise: float  # d(R', R)
    inherent: float  # d(E, R)
    bound: float  # max(K * noise, floor)
    cosine: float  # runtime vs R, for people used to reading cosines
    passed: bool
    reason: str  # why it failed; "" when it passed
    # the teacher-forced local check (NaN where it was not needed: the global rule passed)
    local_error: float = math.nan  # d(runtime, R given the runtime's upstream tensors)
    local_noise: float = math.nan  # d(R' given them, R given them)
    local_bound: float = math.nan  # max(K * local_noise, floor)

    @property
    def passed_locally(self) -> bool:
        """Passed by the teacher-forced local rule (the global one failed)."""
        return self.passed and math.isfinite(self.local_error) and not self.error <= self.bound

    @property
    def ratio(self) -> float:
        """error / bound: below 1 passes; how close a tensor came (by the rule that passed it: the
        local error / local bound for a tensor the local check passed)."""
        err, bound = (self.local_error, self.local_bound) if self.passed_locally else (self.error, self.bound)
        if bound > 0:
            return err / bound
        return 0.0 if err == 0 else math.inf


def _drop_leading_ones(shape: tuple[int, ...]) -> tuple[int, ...]:
    i = 0
    while i < len(shape) - 1 and shape[i] == 1:
        i += 1
    return shape[i:]


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a = np.asarray(a, np.float64).ravel()
    b = np.asarray(b, np.float64).ravel()
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if na == 0.0 and nb == 0.0:
        return 1.0
    if na == 0.0 or nb == 0.0:
        return 0.0
    return float(np.dot(a, b) / (na * nb))


def rel_rms(a: np.ndarray, b: np.ndarray) -> float:
    """|a - b| / |b| (Euclidean norms); against an all-zero reference 0 if equal, else inf."""
    d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    return rel_rms_from_sums(float(np.sum(d * d)), float(np.sum(np.square(np.asarray(b, np.float64)))))


def rel_rms_from_sums(sq_err: float, sq_ref: float) -> float:
    if sq_ref == 0.0:
        return 0.0 if sq_err == 0.0 else math.inf
    return math.sqrt(sq_err / sq_ref)


def range_error(a: np.ndarray, b: np.ndarray, span: np.ndarray | float) -> float:
    """max over elements of |a - b| / range of the element's action dimension (the last axis)."""
    d = np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))
    if not d.size:
        return 0.0
    return float((d.reshape(-1, d.shape[-1]).max(0) / np.broadcast_to(np.asarray(span, np.float64), d.shape[-1:])).max())


def action_span_of(name: str, action_span: np.ndarray | None) -> np.ndarray | float | None:
    """The range ``name``'s errors are relative to, or None when it is not part of the action chunk."""
    if name == "normalized_actions":
        return 2.0
    if name == "actions":
        return action_span if action_span is not None else 2.0
    return None


def compare_tensor(
    name: str,
    runtime: np.ndarray,
    reference: np.ndarray,
    tolerance: Tolerance,
    *,
    noise: float,
    inherent: float = math.nan,
    action_range: np.ndarray | float | None = None,
) -> TensorComparison:
    """Compare one tensor with R; ``noise`` and ``inherent`` are d(R', R) and d(E, R) in the same metric
    (``action_range``, per last-axis element or a scalar, selects the action-range metric)."""
    a = np.asarray(runtime)
    b = np.asarray(reference)
    rshape, fshape = tuple(a.shape), tuple(b.shape)
    metric = ACTION_RANGE if action_range is not None else REL_RMS
    bound = tolerance.bound(noise, metric)

    def result(err: float, cos: float, reason: str) -> TensorComparison:
        return TensorComparison(name, rshape, fshape, metric, err, noise, inherent, bound, cos, not reason, reason)

    if _drop_leading_ones(rshape) != _drop_leading_ones(fshape):
        return result(math.nan, math.nan, f"shape {rshape} vs reference {fshape}")
    a = a.reshape(_drop_leading_ones(rshape)).astype(np.float64)
    b = b.reshape(_drop_leading_ones(fshape)).astype(np.float64)
    if not np.isfinite(a).all():
        return result(math.nan, math.nan, f"runtime has {int((~np.isfinite(a)).sum())} non-finite values")
    if not np.isfinite(b).all():
        return result(math.nan, math.nan, f"reference has {int((~np.isfinite(b)).sum())} non-finite values")
    err = range_error(a, b, action_range) if action_range is not None else rel_rms(a, b)
    reason = ""
    if not err <= bound:
        what = "of the action range" if action_range is not None else "relative RMS"
        reason = f"error {err:.2e} {what} > bound {bound:.2e} ({tolerance.k:g} x noise {noise:.2e}, floor)"
    return result(err, cosine(a, b), reason)


def compare_all(
    runtime: Mapping[str, np.ndarray],
    reference: Mapping[str, np.ndarray],
    tolerance: Tolerance,
    *,
    noise: Mapping[str, float],
    inherent: Mapping[str, float] | None = None,
    action_span: np.ndarray | None = None,
) -> tuple[list[TensorComparison], list[str]]:
    """Compare every runtime tensor that has a reference, in the runtime's (execution) order.

    Returns the comparisons and the runtime names that have no reference (listed in the report, never
    silently counted as passing). A tensor with no noise measurement is held to the floor."""
    results, unmatched = [], []
    inherent = inherent or {}
    for name, value in runtime.items():
        if name not in reference:
            unmatched.append(name)
            continue
        results.append(
            compare_tensor(name, value, reference[name], tolerance, noise=noise.get(name, math.nan),
                           inherent=inherent.get(name, math.nan), action_range=action_span_of(name, action_span))
        )
    return results, unmatched


def judge_locally(
    results: list[TensorComparison],
    tolerance: Tolerance,
    *,
    local_error: Mapping[str, float],
    local_noise: Mapping[str, float],
) -> list[TensorComparison]:
    """Apply the local rule to ``results`` (execution order): a tensor the global rule failed passes when
    its teacher-forced error is within max(K * local noise, floor) and every tensor before it passed --
    so the first failing tensor is always one that is wrong given correct inputs. A tensor failed for its
    shape or non-finite values stays failed."""
    out: list[TensorComparison] = []
    clean = True  # every earlier tensor passed
    for r in results:
        if r.passed or not math.isfinite(r.error):
            clean = clean and r.passed
            out.append(r)
            continue
        err, noise = local_error.get(r.name, math.nan), local_noise.get(r.name, math.nan)
        bound = tolerance.bound(noise, r.metric)
        local_pass = clean and err <= bound
        if local_pass:
            reason = ""
        elif not clean:
            reason = f"{r.reason}; local check not applied: an earlier tensor failed"
        else:
            reason = f"{r.reason}; given the runtime's inputs: error {err:.2e} > bound {bound:.2e} (noise {noise:.2e})"
        out.append(replace(r, passed=local_pass, reason=reason, local_error=err, local_noise=noise, local_bound=bound))
        clean = clean and local_pass
    return out


__all__ = [
    "ACTION_RANGE",
    "ACTION_TENSORS",
    "DEFAULT_TOLERANCE",
    "REL_RMS",
    "TensorComparison",
    "Tolerance",
    "action_span_of",
    "compare_all",
    "compare_tensor",
    "cosine",
    "judge_locally",
    "range_error",
    "rel_rms",
    "rel_rms_from_sums",
]
