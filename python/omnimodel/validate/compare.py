"""Per-tensor comparison of a runtime intermediate with its PyTorch reference.

Metrics (all in float64):
    cosine   <a, b> / (|a| |b|): scale-free agreement of direction. Two all-zero tensors are identical
             (cosine 1); one zero and one not share nothing (cosine 0).
    rel_err  max |a - b| / max |b|: the worst element relative to the reference's magnitude.
    range_err (action chunks only) max |a - b| / range of the action dimension: what a robot feels.
A shape disagreement (after dropping leading size-1 batch dimensions on both sides) or any NaN/Inf
fails outright: no metric can make such a tensor pass.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from omnimodel.errors import UsageError


@dataclass(frozen=True)
class Thresholds:
    min_cosine: float
    action_range_err: float  # max |error| / action range for the action chunk
    max_rel_err: float | None = None  # max |error| / max |reference| per tensor (None: not checked)


# f32 is computed the same way as the reference, so only summation order differs; the 16-bit and 8-bit
# types round weights and are held to a looser, still tight, bound. Q8_0's action bound is wider: ggml
# also rounds the *activations* of every Q8_0 matmul to 8 bits, and on the 64-wide demo miniature that
# alone puts the action chunk 2.7e-2 of the range away from float weights (every intermediate still
# reaches cosine >= 0.9996); wide real models average that rounding over 4096-element rows.
#
# Cosine alone is blind to a wrong-but-close formula: a tanh GELU where erf is needed moves the ViT MLP
# output by ~5e-4 of its magnitude yet keeps cosine at 1 - 7e-8. At f32 the runtime does the same
# arithmetic as PyTorch, so its rel_err sits at float rounding (< 1e-6 on the demo against a float64
# reference); f32 therefore also bounds rel_err at 1e-4, which catches that class of template fault. The
# rounded types cannot: their weight rounding alone is ~1e-3, so formula parity is proven at f32.
THRESHOLDS: dict[str, Thresholds] = {
    "f32": Thresholds(min_cosine=0.99999, action_range_err=1e-4, max_rel_err=1e-4),
    "f16": Thresholds(min_cosine=0.999, action_range_err=1e-2),
    "bf16": Thresholds(min_cosine=0.999, action_range_err=1e-2),
    "q8_0": Thresholds(min_cosine=0.999, action_range_err=5e-2),
    # quantized to a bpw budget (``convert --bpw``), judged against PyTorch running the weights decoded
    # from the GGUF: the weights are then equal, and what remains is ggml rounding the activations of
    # every quantized matmul to 8 bits (Q8_0 / Q8_K), as for q8_0
    "mixed": Thresholds(min_cosine=0.999, action_range_err=5e-2),
}

# The action chunk: judged by error relative to the action range (plus cosine), normalised actions live
# in [-1, 1] (range 2), un-normalised ones in each dimension's dataset range.
ACTION_TENSORS = ("normalized_actions", "actions")


def thresholds_for(outtype: str) -> Thresholds:
    try:
        return THRESHOLDS[outtype]
    except KeyError:
        raise UsageError(f"no parity thresholds for outtype {outtype!r}; known: {sorted(THRESHOLDS)}") from None


@dataclass(frozen=True)
class TensorComparison:
    name: str
    runtime_shape: tuple[int, ...]
    reference_shape: tuple[int, ...]
    cosine: float  # NaN when it cannot be computed (shape mismatch, non-finite values)
    rel_err: float
    range_err: float | None  # action chunk only
    passed: bool
    reason: str  # why it failed; "" when it passed


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


def rel_max_err(a: np.ndarray, b: np.ndarray) -> float:
    """max |a - b| / max |b|; against an all-zero reference the absolute error (0 if equal, else inf)."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    err = float(np.abs(a - b).max()) if a.size else 0.0
    scale = float(np.abs(b).max()) if b.size else 0.0
    if scale == 0.0:
        return 0.0 if err == 0.0 else math.inf
    return err / scale


def compare_tensor(
    name: str,
    runtime: np.ndarray,
    reference: np.ndarray,
    thresholds: Thresholds,
    *,
    action_range: np.ndarray | float | None = None,
) -> TensorComparison:
    """Compare one tensor; ``action_range`` (per last-axis element, or a scalar) turns on the action check."""
    a = np.asarray(runtime)
    b = np.asarray(reference)
    rshape, fshape = tuple(a.shape), tuple(b.shape)

    def fail(reason: str, cos: float = math.nan, rel: float = math.nan, rng: float | None = None) -> TensorComparison:
        return TensorComparison(name, rshape, fshape, cos, rel, rng, False, reason)

    if _drop_leading_ones(rshape) != _drop_leading_ones(fshape):
        return fail(f"shape {rshape} vs reference {fshape}")
    a = a.reshape(_drop_leading_ones(rshape)).astype(np.float64)
    b = b.reshape(_drop_leading_ones(fshape)).astype(np.float64)
    if not np.isfinite(a).all():
        return fail(f"runtime has {int((~np.isfinite(a)).sum())} non-finite values")
    if not np.isfinite(b).all():
        return fail(f"reference has {int((~np.isfinite(b)).sum())} non-finite values")
    cos, rel = cosine(a, b), rel_max_err(a, b)
    rng_err = None
    reasons = []
    if not cos >= thresholds.min_cosine:
        reasons.append(f"cosine {cos:.7f} < {thresholds.min_cosine}")
    if thresholds.max_rel_err is not None and not rel <= thresholds.max_rel_err:
        reasons.append(f"rel err {rel:.2e} > {thresholds.max_rel_err:g}")
    if action_range is not None:
        span = np.broadcast_to(np.asarray(action_range, np.float64), a.shape[-1:]) if a.ndim else np.asarray(action_range)
        rng_err = float((np.abs(a - b) / span).max()) if a.size else 0.0
        if not rng_err <= thresholds.action_range_err:
            reasons.append(f"error {rng_err:.2e} of the action range > {thresholds.action_range_err:g}")
    return TensorComparison(name, rshape, fshape, cos, rel, rng_err, not reasons, "; ".join(reasons))


def compare_all(
    runtime: dict[str, np.ndarray],
    reference: dict[str, np.ndarray],
    thresholds: Thresholds,
    *,
    action_span: np.ndarray | None = None,
) -> tuple[list[TensorComparison], list[str]]:
    """Compare every runtime tensor that has a reference, in the runtime's (execution) order.

    Returns the comparisons and the runtime names that have no reference (listed in the report, never
    silently counted as passing).
    """
    results, unmatched = [], []
    for name, value in runtime.items():
        if name not in reference:
            unmatched.append(name)
            continue
        rng = None
        if name == "normalized_actions":
            rng = 2.0
        elif name == "actions":
            rng = action_span if action_span is not None else 2.0
        results.append(compare_tensor(name, value, reference[name], thresholds, action_range=rng))
    return results, unmatched


__all__ = [
    "Thresholds",
    "THRESHOLDS",
    "ACTION_TENSORS",
    "thresholds_for",
    "TensorComparison",
    "cosine",
    "rel_max_err",
    "compare_tensor",
    "compare_all",
]
