"""Output bias correction: remove the consistent action shift a quantized policy's matrices introduce.

    blocks = encode_matrices(policy, allocation, quantizer)            # every matrix, as the GGUF will hold it
    correction = correct_output_bias(policy, QuantResult(quantizer.label, blocks), samples)
    write_gguf(policy, path, "f16", encoder=EncodedMatrices(quantizer, blocks))

At low bits part of a quantized policy's action error is the same on every observation: the normalised
actions come out shifted by a per-dimension constant (docs/quantization.md, "Output bias correction").
A shift steers every closed-loop rollout the same way, and the methods' mean-squared objectives
do not see it. This is the end-to-end form of Nagel et al. 2019's bias correction: on the calibration
samples, the mean of (quantized - full precision) normalised action per action dimension, subtracted from
the bias the architecture says is added last to the output (``Architecture.output_bias``). The matrices
the shift is measured with are the very blocks the GGUF stores, and the policy is edited in place before
it is exported, so the file, the parity reference and ``omnimodel validate`` all see the corrected bias.

Nothing here knows an architecture: the registry names the bias and the calibration adapter runs the
policy (``fakequant.predict_normalized``).
"""

from __future__ import annotations

import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from omnimodel.arch.registry import for_policy
from omnimodel.gguf.types import GGMLType

from .allocate import Allocation
from .fakequant import fake_quantized, predict_normalized
from .quantize import MatrixQuantizer, QuantResult
from .samples import CalibSample
from .scales import TensorQuant
from .targets import ModelWeights


class BiasCorrectionError(ValueError):
    """The correction cannot be applied to this policy (no output bias, or one of the wrong shape)."""


@dataclass(frozen=True)
class BiasCorrection:
    """What the correction measured and changed, in normalised action units, per action dimension."""

    parameter: str  # the bias edited, its name in the policy's model
    samples: int  # calibration samples measured on
    shift: tuple[float, ...]  # mean (quantized - full precision) before: what was subtracted from the bias
    residual: tuple[float, ...]  # the same mean after the correction (the bias dtype's rounding, nothing else)
    abs_error_before: tuple[float, ...]  # mean |quantized - full precision| before
    abs_error_after: tuple[float, ...]  # and after
    seconds: float

    @property
    def mean_abs_error_before(self) -> float:
        return float(np.mean(self.abs_error_before))

    @property
    def mean_abs_error_after(self) -> float:
        return float(np.mean(self.abs_error_after))

    def as_dict(self) -> dict[str, Any]:
        return {
            "parameter": self.parameter,
            "samples": self.samples,
            "units": "normalised actions",
            "shift": list(self.shift),
            "residual_shift": list(self.residual),
            "abs_error_before": list(self.abs_error_before),
            "abs_error_after": list(self.abs_error_after),
            "mean_abs_error_before": self.mean_abs_error_before,
            "mean_abs_error_after": self.mean_abs_error_after,
            "seconds": self.seconds,
        }

    def describe(self) -> str:
        shift = ", ".join(f"{v:+.4f}" for v in self.shift)
        return (f"output bias correction: shift [{shift}] removed from {self.parameter}; mean |action error| "
                f"to full precision {self.mean_abs_error_before:.4f} -> {self.mean_abs_error_after:.4f} "
                f"(normalised, {self.samples} calibration samples)")


def encode_matrices(policy: Any, allocation: Allocation, quantizer: MatrixQuantizer) -> dict[str, TensorQuant]:
    """Every allocated matrix in its blocks, read from the policy one at a time, in allocation order."""
    weights = ModelWeights(policy.model)
    return {t.name: quantizer.encode(t.name, weights[t.name]) for t in allocation.tensors}


def not_applicable(arch: Any) -> str:
    """The one-line refusal for a family without an output bias (a registry ``Architecture``)."""
    return f"--bias-correction does not apply to {arch.name}, {arch.no_output_bias}"


def output_bias(policy: Any) -> tuple[str, torch.nn.Parameter]:
    """(name, parameter) of the bias the policy's family adds last to the normalised actions."""
    arch = for_policy(policy)
    bias = arch.action_output_bias(policy)
    if bias is None:
        raise BiasCorrectionError(not_applicable(arch))
    return str(arch.output_bias), bias


def correct_output_bias(policy: Any, result: QuantResult, samples: Sequence[CalibSample]) -> BiasCorrection:
    """Measure the quantized policy's mean action shift on ``samples`` and subtract it from the output bias
    (in place). ``result`` must hold the blocks (``TensorQuant``s) of every quantized matrix."""
    if not samples:
        raise BiasCorrectionError("--bias-correction needs calibration samples to measure the shift on")
    t0 = time.perf_counter()
    name, bias = output_bias(policy)
    full = predict_normalized(policy, samples)  # (N, chunk, action_dim)
    action_dim = full.shape[-1]
    if tuple(bias.shape) != (action_dim,):
        raise BiasCorrectionError(f"{name} has shape {tuple(bias.shape)}, the policy predicts {action_dim}-D actions")
    with fake_quantized(policy, result):
        before = predict_normalized(policy, samples) - full
        shift = before.reshape(-1, action_dim).mean(axis=0, dtype=np.float64)
        with torch.no_grad():
            bias.sub_(torch.from_numpy(shift).to(bias.dtype))
        # measured again rather than assumed: the bias is stored in its own dtype (bf16 rounds the shift)
        after = predict_normalized(policy, samples) - full

    def per_dim(err: np.ndarray) -> tuple[float, ...]:
        return tuple(float(v) for v in err.reshape(-1, action_dim).mean(axis=0, dtype=np.float64))

    return BiasCorrection(name, len(samples), tuple(float(v) for v in shift), per_dim(after), per_dim(np.abs(before)),
                          per_dim(np.abs(after)), time.perf_counter() - t0)


class EncodedMatrices:
    """The exporter's ``MatrixEncoder`` over blocks encoded earlier (``encode_matrices``): ``encode``
    returns the stored blocks, so the file holds exactly what the correction was measured with, and
    drops them once written. ``result``/``seconds`` are the quantizer's, for the report."""

    def __init__(self, quantizer: MatrixQuantizer, blocks: Mapping[str, TensorQuant]) -> None:
        self.quantizer = quantizer
        self._blocks = dict(blocks)

    def matrices(self) -> Collection[str]:
        return self.quantizer.matrices()

    def layout(self, name: str) -> tuple[GGMLType, int] | None:
        return self.quantizer.layout(name)

    def encode(self, name: str, weight: np.ndarray) -> TensorQuant:
        q = self._blocks.pop(name)
        if q.data.shape[0] != weight.shape[0]:
            raise ValueError(f"{name}: {q.data.shape[0]} encoded rows for a weight of {weight.shape[0]}")
        return q

    def result(self) -> QuantResult:
        return self.quantizer.result()

    @property
    def seconds(self) -> float:
        return self.quantizer.seconds


__all__ = [
    "BiasCorrection",
    "BiasCorrectionError",
    "EncodedMatrices",
    "correct_output_bias",
    "encode_matrices",
    "not_applicable",
    "output_bias",
]
