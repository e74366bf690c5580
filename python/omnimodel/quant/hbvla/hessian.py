"""Hessians for HBVLA: H = X X^T, and the policy-aware rectified H~ = X S X^T for attention projections.

The paper (seed 000, Eq. 3-9): run the attention block Phi(X) = X + MHSA(X) once with full-precision
weights and once with the current binarized ones, L_blk = ||Phi(X) - Phi_hat(X)||_F^2, backpropagate
locally to every projection's output Y^(p) (p in Q, K, V, O), and weight token t of projection p by
a_t = ||dL_blk / dY^(p)_{:,t}||_2 / d_p. Then H~^(p) = sum_t a_t x_t x_t^T over that projection's inputs.
Tokens whose output the binarization error does not reach through p get little weight, so the many
visual tokens and background outliers stop dominating the saliency.

The residual X cancels in Z - Z_hat, so only the attention module is run. It is architecture-agnostic:
``run(module)`` is the caller's closure that calls the attention module with its inputs (the Llama one
needs RoPE tables, a ViT's only x), and the projections are named by their submodule paths. The inputs
x_t are the full-precision branch's (what the calibration hook collects). Token weights can be summed
over calibration batches with :class:`HessianAccumulator`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn


def input_hessian(x: np.ndarray | torch.Tensor, weights: np.ndarray | torch.Tensor | None = None) -> np.ndarray:
    """sum_t a_t x_t x_t^T over the rows x_t of ``x`` (..., in); a_t = 1 without ``weights``."""
    xt = torch.as_tensor(x).detach().reshape(-1, np.shape(x)[-1]).double()
    if weights is None:
        return (xt.T @ xt).numpy()
    a = torch.as_tensor(weights).detach().reshape(-1).double()
    if a.shape[0] != xt.shape[0]:
        raise ValueError(f"{a.shape[0]} token weights for {xt.shape[0]} tokens")
    return ((xt * a[:, None]).T @ xt).numpy()


@dataclass
class HessianAccumulator:
    """Running sum_t a_t x_t x_t^T and sum_t a_t; ``hessian()`` is their ratio (scale-free: saliency
    ranks and GPTQ updates do not depend on the scale, but a mean keeps batches comparable)."""

    sum: np.ndarray | None = None
    weight: float = 0.0
    tokens: int = 0

    def add(self, x: np.ndarray | torch.Tensor, weights: np.ndarray | torch.Tensor | None = None) -> None:
        h = input_hessian(x, weights)
        n = int(np.prod(np.shape(x)[:-1]))
        w = float(n if weights is None else torch.as_tensor(weights).double().sum())
        self.sum = h if self.sum is None else self.sum + h
        self.weight += w
        self.tokens += n

    def hessian(self) -> np.ndarray:
        if self.sum is None or self.weight <= 0:
            raise ValueError("no tokens with a positive weight were accumulated")
        return self.sum / self.weight


@dataclass
class PolicyAwareResult:
    """Per projection: its inputs (tokens, in) from the full-precision run and the token weights a_t."""

    inputs: dict[str, torch.Tensor]
    token_weights: dict[str, torch.Tensor]
    block_loss: float

    def hessians(self) -> dict[str, np.ndarray]:
        """H~^(p) = X diag(a) X^T, normalised by sum a (zero weights: a ValueError naming p)."""
        out = {}
        for p, x in self.inputs.items():
            acc = HessianAccumulator()
            acc.add(x, self.token_weights[p])
            try:
                out[p] = acc.hessian()
            except ValueError:
                raise ValueError(f"projection {p!r}: every token weight is zero (are the binarized weights "
                                 "equal to the full-precision ones?)") from None
        return out


def policy_aware_token_weights(
    attn: nn.Module,
    run: Callable[[nn.Module], torch.Tensor],
    projections: Sequence[str],
    binarized: Mapping[str, torch.Tensor | np.ndarray],
) -> PolicyAwareResult:
    """Run ``run(attn)`` with full-precision and with binarized projection weights and return, per
    projection in ``projections`` (submodule paths of ``attn``, e.g. "q_proj" or "qkv"), its
    full-precision inputs and the token weights a_t = ||dL/dY_t||_2 / d_p of L = ||Z - Z_hat||^2.

    ``binarized`` maps a projection path to its binarized weight (same shape as ``.weight``); projections
    missing from it keep their full-precision weight in the binarized run. ``attn``'s weights are
    restored afterwards and no parameter gradient is accumulated."""
    mods = {}
    for p in projections:
        try:
            mods[p] = attn.get_submodule(p)
        except AttributeError:
            raise ValueError(f"the attention module has no submodule {p!r}") from None
        if not isinstance(mods[p], nn.Linear):
            raise ValueError(f"{p!r} is a {type(mods[p]).__name__}, not a Linear")
    for p, wb in binarized.items():
        if p not in mods:
            raise ValueError(f"binarized weight for {p!r}, which is not among the projections {list(mods)}")
        if tuple(np.shape(wb)) != tuple(mods[p].weight.shape):
            raise ValueError(f"binarized {p!r} has shape {tuple(np.shape(wb))}, expected {tuple(mods[p].weight.shape)}")

    captured: dict[str, list] = {}

    def hook(name: str):
        def f(_m, args, out):
            captured.setdefault(name, []).append((args[0], out))

        return f

    handles = [m.register_forward_hook(hook(p)) for p, m in mods.items()]
    try:
        with torch.no_grad():
            z = run(attn).detach()
        missing = [p for p in mods if p not in captured]
        if missing:
            raise ValueError(f"run() did not call the projections {missing}")
        fp_inputs = {p: captured[p][0][0].detach() for p in mods}
        captured.clear()
        saved = {p: mods[p].weight.detach().clone() for p in binarized}
        needs_grad = {p: m.weight.requires_grad for p, m in mods.items()}
        try:
            for m in mods.values():
                m.weight.requires_grad_(True)  # so the projection outputs carry a graph (frozen models)
            with torch.no_grad():
                for p, wb in binarized.items():
                    mods[p].weight.copy_(torch.as_tensor(np.asarray(wb)).to(mods[p].weight))
            with torch.enable_grad():
                z_hat = run(attn)
                outs = [captured[p][0][1] for p in mods]
                if not z_hat.requires_grad:
                    raise ValueError("the binarized run does not depend on the projections (no gradient)")
                loss = ((z - z_hat) ** 2).sum()
                grads = torch.autograd.grad(loss, outs, allow_unused=True)
        finally:
            with torch.no_grad():
                for p, w in saved.items():
                    mods[p].weight.copy_(w)
            for p, m in mods.items():
                m.weight.requires_grad_(needs_grad[p])
    finally:
        for h in handles:
            h.remove()

    weights = {}
    for (p, m), g in zip(mods.items(), grads, strict=True):
        d_p = m.weight.shape[0]
        if g is None:
            g = torch.zeros_like(captured[p][0][1])
        weights[p] = (g.detach().reshape(-1, d_p).double().norm(dim=1) / d_p)
    inputs = {p: x.reshape(-1, x.shape[-1]) for p, x in fp_inputs.items()}
    return PolicyAwareResult(inputs, weights, float(loss.detach()))


def policy_aware_hessians(
    attn: nn.Module,
    run: Callable[[nn.Module], torch.Tensor],
    projections: Sequence[str],
    binarized: Mapping[str, torch.Tensor | np.ndarray],
) -> dict[str, np.ndarray]:
    """H~^(p) for every projection (see :func:`policy_aware_token_weights`)."""
    return policy_aware_token_weights(attn, run, projections, binarized).hessians()


__all__ = [
    "HessianAccumulator",
    "PolicyAwareResult",
    "input_hessian",
    "policy_aware_hessians",
    "policy_aware_token_weights",
]
