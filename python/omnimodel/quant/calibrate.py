"""Calibration on the PyTorch reference: imatrix, Action-Mixed Fisher and HSIC features per matrix.

One forward pass per sample, with forward hooks on every quantized Linear, collects

* ``imatrix[name]`` (in,): E[x_j^2] over every token the matrix saw (llama-imatrix's statistic);
* ``features[name]`` (N, d): the matrix output mean-pooled over tokens (and over the images a vision
  tower sees once each), then a fixed Gaussian projection to ``hsic_dim`` dims so the HSIC Gram matrices
  stay cheap (distances survive the projection, Johnson-Lindenstrauss);
* ``inputs[domain]`` (N, d): the same pooled feature of the input the matrix's network starts from
  (each ViT tower's embedded patches, the LLM's input embedding sequence): X in S_l (METHODS 1a).

Then one backward pass per sample gives the Action-Mixed Fisher diagonal (METHODS 1c):

    L_AMF = lam * L_act + (1 - lam) * L_CE,      F_ii = (1/N) sum_n (dL_AMF(n)/dw_i)^2

L_act and L_CE are the architecture's (its calibration adapter, ``Architecture.calibration()``; e.g.
an L1 loss over the normalised action chunk and the LM head's cross-entropy against discretised action
tokens). The adapter also turns samples into model inputs and names the HSIC input domains. The square is taken of the *blended*
gradient per sample, so F(lam) is not a blend of two Fishers; ``keep_components`` also returns the pure
L_act and L_CE Fishers (lam = 1 and lam = 0) from the same two gradients, at the cost of two backward
passes and two more fp32 copies of the weights.

The forward and backward run in the model's dtype (bf16 for a checkpoint loaded as stored: the math
of a bf16 policy, and about 2.5x faster than fp32 on CPUs with AVX512-BF16); everything accumulates in
fp32 (float64 for the imatrix and E[x xᵀ] sums) whatever the model dtype. Memory: each weight's gradient
is squared into its accumulator as soon as backward produces it and then freed (post-accumulate-grad
hooks), so gradients never coexist for the whole model; every transformer block keeps only its input for
backward and recomputes its activations when backward reaches it (activation checkpointing: one more
forward per sample, the same gradients, and ~1.3 GB less at real width, ~4 GB at 7B); ``only`` limits
the fp32 accumulators to the matrices of one pass; ``spill`` writes each finished per-matrix Fisher /
E[x xᵀ] to disk (``quant.spill``), so none of them stays in memory after its pass.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from omnimodel.arch.mmap_safetensors import released_after_use
from omnimodel.arch.registry import for_policy

from .calib_check import PolicyInputs
from .samples import CalibSample
from .spill import SpilledArrays
from .targets import quantized_linears

Policy = Any  # a loaded policy of any registered architecture (config, model, tokenizer, norm_stats)


class CalibrationAdapter(Protocol):
    """What calibration needs from an architecture (``Architecture.calibration()``)."""

    # Whether the network has an LM pathway for L_CE; without one lambda is 1 (METHODS 1c).
    lm_pathway: bool

    def policy_inputs(self, policy: Policy) -> PolicyInputs: ...  # what each step takes (calib_check)

    def chunk_size(self, policy: Policy) -> int: ...  # actions per predicted chunk: the target length

    def prepare(self, policy: Policy, sample: CalibSample, device: torch.device, dtype: torch.dtype
                ) -> tuple[tuple[Any, ...], np.ndarray]: ...  # (forward args, normalised target chunk)

    def forward(self, policy: Policy, args: tuple[Any, ...]) -> Any: ...  # the pass the losses are taken on

    def losses(self, policy: Policy, out: Any, target: np.ndarray
               ) -> tuple[torch.Tensor, torch.Tensor | None]: ...  # (L_act, L_CE or None without lm_pathway)

    def predict_normalized(self, policy: Policy, args: tuple[Any, ...]) -> np.ndarray: ...  # (chunk, action_dim)

    def blocks(self, policy: Policy) -> list[nn.Module]: ...

    def input_modules(self, policy: Policy) -> dict[str, nn.Module]: ...

    def domain_of(self, name: str) -> str: ...

    def uses_per_sample(self, policy: Policy, name: str) -> int: ...


def adapter(policy: Policy) -> CalibrationAdapter:
    return for_policy(policy).calibration()


@dataclass
class CalibStats:
    n_samples: int
    lam: float
    imatrix: dict[str, np.ndarray]  # name -> float32 (in,)
    # name -> float32 (out, in); empty when fisher=False. A Mapping: with ``spill`` the arrays live on
    # disk and each access reads one (``quant.spill``)
    fisher: Mapping[str, np.ndarray]
    features: dict[str, np.ndarray]  # name -> float32 (N, d)
    inputs: dict[str, np.ndarray]  # domain -> float32 (N, d)
    actions: np.ndarray  # float32 (N, chunk*action_dim), normalised targets
    fisher_act: Mapping[str, np.ndarray] = field(default_factory=dict)  # only with keep_components
    fisher_ce: Mapping[str, np.ndarray] = field(default_factory=dict)
    hessian: Mapping[str, np.ndarray] = field(default_factory=dict)  # only with hessian=True: E[x x^T] (in, in)
    losses: dict[str, float] = field(default_factory=dict)  # mean L_act, L_CE over the samples
    domains: dict[str, str] = field(default_factory=dict)  # matrix -> its HSIC input domain (a key of inputs)

    def save(self, path: str | Path) -> None:
        arrays: dict[str, np.ndarray] = {"actions": self.actions, "meta": np.array([self.n_samples, self.lam])}
        for prefix, d in (
            ("imatrix", self.imatrix),
            ("fisher", self.fisher),
            ("features", self.features),
            ("inputs", self.inputs),
            ("fisher_act", self.fisher_act),
            ("fisher_ce", self.fisher_ce),
            ("hessian", self.hessian),
        ):
            for k, v in d.items():
                arrays[f"{prefix}/{k}"] = v
        for k, v in self.domains.items():
            arrays[f"domains/{k}"] = np.array(v)
        np.savez(path, **arrays)

    @classmethod
    def load(cls, path: str | Path) -> CalibStats:
        z = np.load(path)
        groups: dict[str, dict[str, np.ndarray]] = {
            k: {} for k in ("imatrix", "fisher", "features", "inputs", "fisher_act", "fisher_ce", "hessian", "domains")
        }
        for key in z.files:
            if "/" in key:
                prefix, name = key.split("/", 1)
                groups[prefix][name] = str(z[key]) if prefix == "domains" else z[key]
        n, lam = z["meta"]
        return cls(int(n), float(lam), actions=z["actions"], **groups)


def pass_bytes(policy: Policy, names: Iterable[str], *, fisher: bool = True, hessian: bool = False) -> int:
    """Memory one calibration pass over ``names`` needs besides the model: the fp32 Fisher accumulators
    (4 bytes per weight), GPTQ's fp64 E[x x^T] sums, and for a matrix the forward uses more than once per
    sample (each vision tower runs once per camera image) its partial gradient in the model's dtype,
    which backward holds until the last use's gradient arrives (only then is it squared and freed)."""
    linears = quantized_linears(policy.model)
    calib = adapter(policy)
    total = 0
    for n in names:
        w = linears[n].weight
        uses = calib.uses_per_sample(policy, n)
        if fisher:
            total += w.numel() * (4 + (w.element_size() if uses > 1 else 0))
        if hessian:
            total += 8 * w.shape[1] * w.shape[1]
    return total


def _projection(n: int, d: int, name: str) -> torch.Tensor | None:
    if n <= d:
        return None  # already small: keep the exact pooled vector
    g = torch.Generator().manual_seed(zlib.crc32(name.encode()))
    return torch.randn(n, d, generator=g) / d**0.5


class _Pooled:
    """Per-sample running mean of token-pooled vectors (a vision tower runs once per image)."""

    def __init__(self) -> None:
        self.sum: dict[str, torch.Tensor] = {}
        self.count: dict[str, int] = {}

    def add(self, key: str, x: torch.Tensor) -> None:
        v = x.detach().float().reshape(-1, x.shape[-1]).mean(0).cpu()
        self.sum[key] = self.sum[key] + v if key in self.sum else v
        self.count[key] = self.count.get(key, 0) + 1

    def take(self) -> dict[str, torch.Tensor]:
        out = {k: v / self.count[k] for k, v in self.sum.items()}
        self.sum, self.count = {}, {}
        return out


def transformer_blocks(policy: Policy) -> list[nn.Module]:
    """The units activation checkpointing recomputes (the architecture's transformer blocks)."""
    return adapter(policy).blocks(policy)


@contextmanager
def checkpointed(blocks: Sequence[nn.Module]) -> Iterator[None]:
    """Within the block each module's forward keeps only its inputs for backward and is run again when
    backward reaches it (``torch.utils.checkpoint``, non-reentrant). Deterministic CPU kernels recompute
    the same activations, so the gradients are the same; hooks of the modules *inside* fire again during
    the recomputation (the caller must ignore those calls)."""
    for b in blocks:
        run = b.forward
        b.forward = lambda *args, _run=run: checkpoint(_run, *args, use_reentrant=False)
    try:
        yield
    finally:
        for b in blocks:
            del b.forward  # back to the class's forward


def calibrate(
    policy: Policy,
    samples: Sequence[CalibSample],
    *,
    lam: float = 0.5,
    fisher: bool = True,
    keep_components: bool = False,
    hsic_dim: int = 128,
    hessian: bool = False,
    only: Iterable[str] | None = None,
    device: str | torch.device = "cpu",
    spill: str | Path | None = None,
    recompute: bool = True,
) -> CalibStats:
    """Collect the statistics every ActQuant stage and baseline needs, in one pass over ``samples``.

    ``hessian=True`` also accumulates GPTQ's H = E[x x^T] per matrix (in x in, fp64 sums): quadratic in
    the width, so meant for one layer's matrices at a time on a 7B model.

    ``only`` restricts every statistic to those matrix names: the fp32 accumulators (one Fisher copy per
    weight, more with ``keep_components`` / ``hessian``) then cover one layer or block per pass, which is
    how a 7B model fits; passes over disjoint subsets give exactly the statistics of one full pass.

    ``spill`` (a directory): the Fisher diagonals and E[x x^T] are written there, one file per matrix, as
    each pass finishes, and returned as ``SpilledArrays`` (read on access); passes spilling into one
    directory must cover disjoint matrices. ``fisher=False`` runs forward passes only (no autograd graph).
    ``recompute``: activation checkpointing of every transformer block for the Fisher backward (not with
    ``keep_components``, whose two backward passes share one graph)."""
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"lambda must be in [0, 1], got {lam}")
    if not samples:
        raise ValueError("calibration needs at least one sample")
    model = policy.model
    calib = adapter(policy)
    if not calib.lm_pathway:
        lam = 1.0  # METHODS 1c: lambda = 1 where no LM pathway exists
    dev = torch.device(device)
    orig_device = next(model.parameters()).device
    model.to(dev)
    dtype = next(model.parameters()).dtype
    linears = quantized_linears(model)
    if only is not None:
        wanted = set(only)
        unknown = sorted(wanted - set(linears))
        if unknown:
            raise ValueError(f"not quantized matrices of this model: {unknown[:3]}")
        linears = {n: m for n, m in linears.items() if n in wanted}
    names = list(linears)
    params = [linears[n].weight for n in names]
    saved_grad = {id(p): p.requires_grad for p in model.parameters()}
    caller_grads = {id(p): p.grad for p in params}  # the hooks below must start from no gradient

    sq_sum = {n: torch.zeros(linears[n].in_features, dtype=torch.float64) for n in names}
    tokens = {n: 0 for n in names}
    xtx = (
        {n: torch.zeros(linears[n].in_features, linears[n].in_features, dtype=torch.float64) for n in names}
        if hessian
        else {}
    )
    pooled = _Pooled()
    proj = {n: _projection(linears[n].out_features, hsic_dim, n) for n in names}
    feats: dict[str, list[torch.Tensor]] = {n: [] for n in names}
    ins: dict[str, list[torch.Tensor]] = {}
    in_proj: dict[str, torch.Tensor | None] = {}

    in_backward = [False]  # a checkpointed block's recomputation calls the hooks again: not new data

    def linear_hook(name: str):
        def hook(_mod, args, out):
            if in_backward[0]:
                return
            x = args[0].detach()
            flat = x.reshape(-1, x.shape[-1]).double()
            sq_sum[name] += (flat * flat).sum(0).cpu()
            if hessian:
                xtx[name] += (flat.T @ flat).cpu()
            tokens[name] += flat.shape[0]
            pooled.add(name, out)

        return hook

    def input_hook(domain: str):
        def hook(_mod, args):
            pooled.add("@" + domain, args[0])

        return hook

    handles = [linears[n].register_forward_hook(linear_hook(n)) for n in names]
    handles += [m.register_forward_pre_hook(input_hook(dom)) for dom, m in calib.input_modules(policy).items()]

    acc = {n: torch.zeros(p.shape, dtype=torch.float32, device=dev) for n, p in zip(names, params)} if fisher else {}
    acc_act = {n: torch.zeros_like(a) for n, a in acc.items()} if keep_components else {}
    acc_ce = {n: torch.zeros_like(a) for n, a in acc.items()} if keep_components else {}

    def square_into(name: str):
        # runs once per backward, when the weight's gradient (summed over every use, e.g. both images
        # through a tower) is complete: square it into the fp32 accumulator and free it at once
        def hook(p: torch.Tensor) -> None:
            g = p.grad.float()
            acc[name] += g * g
            p.grad = None

        return hook

    if fisher and not keep_components:
        handles += [p.register_post_accumulate_grad_hook(square_into(n)) for n, p in zip(names, params)]
    targets: list[np.ndarray] = []
    loss_sums = {"act": 0.0, "ce": 0.0}
    recomputing = checkpointed(transformer_blocks(policy)) if fisher and recompute and not keep_components else None
    paging = ExitStack()  # a memory-mapped checkpoint's pages go back as each module is done with them
    try:
        for p in model.parameters():
            p.requires_grad_(False)
        for p in params:
            p.grad = None
            p.requires_grad_(fisher)
        if recomputing is not None:
            recomputing.__enter__()
        paging.enter_context(released_after_use(model))
        for s in samples:
            args, target = calib.prepare(policy, s, dev, dtype)
            targets.append(target.reshape(-1).astype(np.float32))
            with torch.set_grad_enabled(fisher):
                l_act, l_ce = calib.losses(policy, calib.forward(policy, args), target)
            loss_sums["act"] += float(l_act.detach())
            loss_sums["ce"] += float(l_ce.detach()) if l_ce is not None else 0.0
            for key, v in pooled.take().items():
                if key.startswith("@"):
                    dom = key[1:]
                    if dom not in in_proj:
                        in_proj[dom] = _projection(v.shape[0], hsic_dim, key)
                    pr = in_proj[dom]
                    ins.setdefault(dom, []).append(v if pr is None else v @ pr)
                else:
                    pr = proj[key]
                    feats[key].append(v if pr is None else v @ pr)
            if not fisher:
                continue
            if keep_components:
                g_act = torch.autograd.grad(l_act, params, retain_graph=l_ce is not None)
                g_ce = torch.autograd.grad(l_ce, params) if l_ce is not None else [torch.zeros_like(g) for g in g_act]
                for n, ga, gc in zip(names, g_act, g_ce):
                    ga, gc = ga.float(), gc.float()
                    acc_act[n] += ga * ga
                    acc_ce[n] += gc * gc
                    g = lam * ga + (1.0 - lam) * gc
                    acc[n] += g * g
            else:
                loss = l_act if lam == 1.0 else l_ce if lam == 0.0 else lam * l_act + (1.0 - lam) * l_ce
                in_backward[0] = True
                try:
                    loss.backward()  # the hooks above take each weight's gradient as it is produced
                finally:
                    in_backward[0] = False
    finally:
        paging.close()
        if recomputing is not None:
            recomputing.__exit__(None, None, None)
        for h in handles:
            h.remove()
        for p in model.parameters():
            p.requires_grad_(saved_grad[id(p)])
        for p in params:
            p.grad = caller_grads[id(p)]
        model.to(orig_device)

    N = len(samples)

    def finish(d: dict[str, torch.Tensor], what: str, divide) -> Mapping[str, np.ndarray]:
        # one matrix at a time, each accumulator dropped as soon as it is converted (or written)
        out: dict[str, np.ndarray] | SpilledArrays = {} if spill is None else SpilledArrays(Path(spill) / what)
        for n in list(d):
            v = divide(n, d.pop(n))
            if isinstance(out, SpilledArrays):
                out.put(n, v)
            else:
                out[n] = v
        return out

    def per_sample(_n: str, v: torch.Tensor) -> np.ndarray:
        return (v / N).cpu().numpy().astype(np.float32)

    def per_token(n: str, v: torch.Tensor) -> np.ndarray:
        return (v / max(tokens[n], 1)).numpy().astype(np.float32)

    return CalibStats(
        n_samples=N,
        lam=float(lam),
        imatrix={n: (sq_sum[n] / max(tokens[n], 1)).numpy().astype(np.float32) for n in names},
        fisher=finish(acc, "fisher", per_sample),
        features={n: torch.stack(v).numpy().astype(np.float32) for n, v in feats.items()},
        inputs={d: torch.stack(v).numpy().astype(np.float32) for d, v in ins.items()},
        actions=np.stack(targets),
        fisher_act=finish(acc_act, "fisher_act", per_sample),
        fisher_ce=finish(acc_ce, "fisher_ce", per_sample),
        losses={k: v / N for k, v in loss_sums.items()},
        hessian=finish(xtx, "hessian", per_token),
        domains={n: calib.domain_of(n) for n in names},
    )


__all__ = [
    "CalibStats",
    "CalibrationAdapter",
    "adapter",
    "calibrate",
    "checkpointed",
    "pass_bytes",
    "transformer_blocks",
]
