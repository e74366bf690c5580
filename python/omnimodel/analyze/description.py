"""What the analyzer finds in a checkpoint: the model description the planner maps onto skills.

A description is data only (frozen dataclasses, JSON-serialisable). Each module is named by its
PyTorch module path, so a forward hook, a GGUF tensor name and a runtime intermediate all meet on the
same string. ``hparams`` are sizes (the runtime reads them again from GGUF metadata); ``variants`` are
the numerical choices that decide parity (GELU flavour, norm kind and eps, RoPE style, masking, ...),
each with a ``sources`` entry saying where it was read from.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class ModuleDesc:
    name: str  # PyTorch module path, e.g. "vision_backbone.featurizer"
    kind: str  # vit_tower | projector | llama | l1_head | proprio_projector
    hparams: dict[str, Any] = field(default_factory=dict)
    variants: dict[str, Any] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)  # variant -> where the value came from


@dataclass(frozen=True)
class TensorDesc:
    name: str  # state_dict name (= GGUF tensor name)
    shape: tuple[int, ...]


@dataclass(frozen=True)
class ModelDescription:
    architecture: str  # GGUF general.architecture, e.g. "openvla-oft"
    checkpoint: str
    modules: tuple[ModuleDesc, ...]
    tensors: tuple[TensorDesc, ...]  # what the runtime graph reads (unused ones already dropped)
    globals: dict[str, Any] = field(default_factory=dict)  # image count/size, chunk, action/proprio dims

    def module(self, name: str) -> ModuleDesc:
        for m in self.modules:
            if m.name == name:
                return m
        raise KeyError(f"no module '{name}' in the {self.architecture} description; have {[m.name for m in self.modules]}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)
