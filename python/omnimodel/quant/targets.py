"""Which weight matrices ActQuant quantizes, and the transformer layer each belongs to.

METHODS.md section 1: every linear weight of the vision encoders and of the language backbone. The
projector, proprio projector, action head, embeddings, patch kernels and the LM head stay high precision.
Weights the forward never reads (the architecture's ``unused_parameter_prefixes``) are not exported, so
they are not quantized either. The layer key (``Architecture.quant_layer``: a transformer block of a
quantized stack, None elsewhere) groups matrices for the layer-balanced objective (Eq. 6).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from omnimodel.arch.mmap_safetensors import release_pages
from omnimodel.arch.registry import for_policy


@dataclass(frozen=True)
class MatrixTarget:
    """One quantized matrix: its state_dict name, PyTorch shape (out, in) and layer key."""

    name: str  # e.g. "language_model.model.layers.0.self_attn.q_proj.weight"
    shape: tuple[int, int]
    layer: str  # e.g. "language_model.model.layers.0"

    @property
    def numel(self) -> int:
        return self.shape[0] * self.shape[1]

    @property
    def n_in(self) -> int:
        return self.shape[1]


def quantized_linears(model: nn.Module) -> dict[str, nn.Linear]:
    """state_dict weight name -> Linear module, for every matrix ActQuant quantizes (in model order)."""
    arch = for_policy(model)
    skip = tuple(arch.unused_parameter_prefixes(model))
    out: dict[str, nn.Linear] = {}
    for mod_name, mod in model.named_modules():
        if not isinstance(mod, nn.Linear):
            continue
        name = f"{mod_name}.weight"
        if name.startswith(skip) or arch.quant_layer(name) is None:
            continue
        out[name] = mod
    return out


def matrix_targets(model: nn.Module) -> list[MatrixTarget]:
    arch = for_policy(model)
    return [
        MatrixTarget(name, (int(m.weight.shape[0]), int(m.weight.shape[1])), arch.quant_layer(name) or "")
        for name, m in quantized_linears(model).items()
    ]


class ModelWeights(Mapping[str, np.ndarray]):
    """name -> fp32 numpy copy of a quantized matrix, made when asked for (and not kept): how the
    allocation and the quantizers read a model one matrix at a time instead of all at once."""

    def __init__(self, model: nn.Module) -> None:
        self.linears = quantized_linears(model)

    def __getitem__(self, name: str) -> np.ndarray:
        w = self.linears[name].weight.detach()
        out = w.to(torch.float32, copy=True).cpu().numpy()
        release_pages([w])  # read once per pass: a memory-mapped checkpoint's pages go back at once
        return out

    def __iter__(self) -> Iterator[str]:
        return iter(self.linears)

    def __len__(self) -> int:
        return len(self.linears)


def matrix_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """name -> the fp32 weight (detached CPU copy) of every quantized matrix."""
    # clone: for an fp32 CPU model .float().cpu() would alias the parameter, and AWQ edits it in place
    return {n: m.weight.detach().float().cpu().clone() for n, m in quantized_linears(model).items()}


__all__ = ["MatrixTarget", "ModelWeights", "matrix_targets", "matrix_weights", "quantized_linears"]
