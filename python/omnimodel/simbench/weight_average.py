"""An exponential moving average of the trained weights (``omnimodel train-demo --ema DECAY``).

openpi trains pi0 with an EMA of the parameters (decay 0.99) and evaluates the average. For the small demo
policies the closed-loop score of checkpoints a few hundred steps apart swings by more than the recipes
differ (docs/pi0.md, "Recipes tried"); the average of the last ~1/(1 - decay) steps is the policy to
keep instead of whichever single step training happened to stop at.

A plain average started from random weights still holds decay^n of them after n steps (29 % at step 1250
for 0.999), so a mid-run checkpoint of a run from scratch is a blend with noise. ``warmup=True`` uses the
decay min(decay, (1 + n) / (10 + n)) at update n instead: the average then follows the early, fast-moving
weights closely and reaches the full decay after ~10 / (1 - decay) steps.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any


class WeightAverage:
    """Shadow copies of ``params``; ``update()`` after each optimizer step, ``applied()`` to save them."""

    def __init__(self, params: Sequence[Any], decay: float, *, warmup: bool = False) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay {decay}: must lie in (0, 1)")
        self.params = list(params)
        self.decay = float(decay)
        self.warmup = warmup
        self.updates = 0
        self.shadow = [p.detach().clone() for p in self.params]
        self._values = [p.detach() for p in self.params]  # views of the parameters' storage, made once

    def current_decay(self) -> float:
        """The decay the next ``update()`` applies."""
        if not self.warmup:
            return self.decay
        return min(self.decay, (1.0 + self.updates) / (10.0 + self.updates))

    def update(self) -> None:
        import torch

        decay = self.current_decay()
        with torch.no_grad():
            # shadow <- decay * shadow + (1 - decay) * param
            torch._foreach_lerp_(self.shadow, self._values, 1.0 - decay)
        self.updates += 1

    @contextmanager
    def applied(self) -> Iterator[None]:
        """The averaged weights in the model for the duration (e.g. to save a checkpoint), then the trained
        ones back, so training continues from where it was."""
        import torch

        with torch.no_grad():
            trained = [p.detach().clone() for p in self.params]
            for p, s in zip(self.params, self.shadow):
                p.copy_(s)
        try:
            yield
        finally:
            with torch.no_grad():
                for p, t in zip(self.params, trained):
                    p.copy_(t)

    def copy_to_model(self) -> None:
        """Leave the averaged weights in the model (the end of training)."""
        import torch

        with torch.no_grad():
            for p, s in zip(self.params, self.shadow):
                p.copy_(s)


__all__ = ["WeightAverage"]
