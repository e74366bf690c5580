"""Architecture-independent helpers on a policy's PyTorch weights."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import torch


@contextmanager
def swapped_weights(model: torch.nn.Module, values: Mapping[str, torch.Tensor]) -> Iterator[None]:
    """Within the block the named parameters / buffers of ``model`` hold ``values`` (cast to their dtype);
    their own values are restored afterwards, also on an exception. How a quantizer's decoded weights,
    or a GGUF's, are run through the PyTorch reference without a second copy of the model."""
    params = dict(model.named_parameters())
    params.update(dict(model.named_buffers()))
    saved: dict[str, torch.Tensor] = {}
    try:
        with torch.no_grad():
            for name, value in values.items():
                p = params.get(name)
                if p is None:
                    raise KeyError(f"the model has no parameter {name!r}")
                if tuple(value.shape) != tuple(p.shape):
                    raise ValueError(f"{name}: the value has shape {tuple(value.shape)}, the model {tuple(p.shape)}")
                saved[name] = p.detach().clone()
                p.copy_(value.to(p.dtype))
        yield
    finally:
        with torch.no_grad():
            for name, old in saved.items():
                params[name].copy_(old)


__all__ = ["swapped_weights"]
