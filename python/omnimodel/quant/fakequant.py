"""Fake quantization on the PyTorch reference: swap each matrix's weight for its decoded GGML values.

This is how a quantization result is judged before any GGUF is written: run the policy with the
decoded weights and compare its actions with the fp32 policy's (or with the demonstrations).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any

import numpy as np
import torch

from omnimodel.arch.weights import swapped_weights

from .calibrate import adapter
from .quantize import QuantResult
from .samples import CalibSample
from .targets import quantized_linears


class _DecodedWeights(Mapping[str, torch.Tensor]):
    """Each quantized matrix's decoded values, made when asked for: ``swapped_weights`` copies one into
    the model and drops it before decoding the next, so a 7B swap never holds every matrix in fp32."""

    def __init__(self, policy: Any, result: QuantResult) -> None:
        self._widths = {name: lin.weight.shape[1] for name, lin in quantized_linears(policy.model).items()}
        self._tensors = result.tensors

    def __getitem__(self, name: str) -> torch.Tensor:
        return torch.from_numpy(self._tensors[name].values(self._widths[name]).astype(np.float32))

    def __iter__(self) -> Iterator[str]:
        return iter(self._tensors)

    def __len__(self) -> int:
        return len(self._tensors)


def fake_quantized(policy: Any, result: QuantResult) -> AbstractContextManager[None]:
    """Within the block the policy's quantized matrices hold their decoded values; restored after."""
    return swapped_weights(policy.model, _DecodedWeights(policy, result))


@torch.no_grad()
def predict_normalized(policy: Any, samples: Sequence[CalibSample]) -> np.ndarray:
    """(N, chunk, action_dim) normalised actions for each sample, the head's raw output."""
    dev = next(policy.model.parameters()).device
    dtype = next(policy.model.parameters()).dtype
    calib = adapter(policy)
    out = []
    for s in samples:
        args, _ = calib.prepare(policy, s, dev, dtype)
        out.append(calib.predict_normalized(policy, args))
    return np.stack(out)


def action_deviation(policy: Any, result: QuantResult, samples: Sequence[CalibSample]) -> float:
    """Mean |a_quantized - a_fp| over the normalised action chunks of ``samples``."""
    ref = predict_normalized(policy, samples)
    with fake_quantized(policy, result):
        q = predict_normalized(policy, samples)
    return float(np.abs(q - ref).mean())


__all__ = ["action_deviation", "fake_quantized", "predict_normalized"]
