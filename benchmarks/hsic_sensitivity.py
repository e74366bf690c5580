#!/usr/bin/env python3
"""Why ActQuant's HSIC sensitivity weighs each matrix as it does, and what that does to a --bpw allocation.

    python benchmarks/hsic_sensitivity.py openvla-oft --checkpoint runs/oft_mt9p/final --calib data/mw9p \
        [--calib-episodes 18] [--calib-seed 0] [--by-layer] [--bpw 2.5 --taus 0.5,1,2] [--out sens.md]

For every quantized matrix (or, ``--by-layer``, every layer, weight-averaged over its matrices) it prints
the two terms of S_l = CKA(Z_l, A) - CKA(X, Z_l) (METHODS 1a): how much the matrix's output tells about
the action (relevance) and how much it only repeats the policy's input (redundancy), S_l, and the weight
exp(S_l / tau) the allocator multiplies that matrix's error by (mean 1). With ``--bpw`` it also plans the
paper-error-model allocation at that budget under the default tau, each of ``--taus`` and without HSIC, and
prints how many of the weights each puts below 2 bits and each layer's bits per weight: what a flatter
temperature (convert --hsic-tau) changes before any closed loop runs.

The statistics are those convert calibrates on (the same episodes, steps and projections; only the HSIC
features, no Fisher), so the numbers are the ones a `convert --bpw` with the same --calib options uses.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np


def _parse_taus(text: str) -> list[float]:
    try:
        taus = [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise SystemExit(f"hsic_sensitivity: --taus takes comma-separated numbers, got {text!r}") from None
    if not taus or any(not (np.isfinite(t) and t > 0) for t in taus):
        raise SystemExit(f"hsic_sensitivity: --taus must be positive numbers, got {text!r}")
    return taus


def _table(rows: list[tuple], header: tuple[str, ...]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        cells = (c if isinstance(c, str) else f"{c:,}" if isinstance(c, int) else f"{c:.3f}" for c in r)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def sensitivity_rows(targets, terms, weights, by_layer: bool) -> list[tuple]:
    """(name, n weights, relevance, redundancy, S, weight) per matrix, or per layer weighted by size."""
    rows = []
    for t in targets:
        rel, red = terms[t.name]
        rows.append((t.name.removesuffix(".weight"), t.shape[0] * t.shape[1], rel, red, rel - red, weights[t.name],
                     t.layer or "(no layer)"))
    if not by_layer:
        return [r[:6] for r in rows]
    groups: dict[str, list[tuple]] = defaultdict(list)
    for r in rows:
        groups[r[6]].append(r)
    out = []
    for layer, rs in groups.items():
        n = np.array([r[1] for r in rs], dtype=np.float64)
        avg = [float((n * np.array([r[k] for r in rs])).sum() / n.sum()) for k in (2, 3, 4, 5)]
        out.append((layer, int(n.sum()), *avg))
    return out


def allocation_rows(targets, weights, stats, bpw: float, variants: dict[str, dict]) -> str:
    """Per allocation (convert's own planner, paper error model): the share of weights below 2 bpw; per
    layer: its bits per weight under each allocation."""
    from omnimodel.quant.quantize import plan_allocation

    summary, per_layer = [], defaultdict(dict)
    for label, kwargs in variants.items():
        alloc = plan_allocation(targets, weights, stats, bpw, **kwargs)
        n_all = sum(t.shape[0] * t.shape[1] for t in alloc.tensors)
        below = sum(t.shape[0] * t.shape[1] for t in alloc.tensors if t.bpw < 2.0)
        summary.append((label, f"{alloc.bpw:.3f}", f"{100.0 * below / n_all:.1f} %"))
        sizes: dict[str, list[tuple[int, float]]] = defaultdict(list)
        for t in alloc.tensors:
            sizes[t.layer or "(no layer)"].append((t.shape[0] * t.shape[1], t.bpw))
        for layer, v in sizes.items():
            per_layer[layer][label] = sum(n * b for n, b in v) / sum(n for n, _ in v)
    return (_table(summary, ("allocation", "bpw", "weights below 2 bpw")) + "\n"
            + _table([(layer, *(f"{d[lab]:.2f}" for lab in variants)) for layer, d in per_layer.items()],
                     ("layer bpw", *variants)))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("architecture", help="registered architecture name, as for convert")
    ap.add_argument("--checkpoint", type=Path, required=True)
    ap.add_argument("--calib", type=Path, required=True, help="calibration data, as convert --calib takes it")
    ap.add_argument("--calib-episodes", type=int, default=16)
    ap.add_argument("--calib-steps", type=int, default=4)
    ap.add_argument("--calib-seed", type=int, default=0)
    ap.add_argument("--by-layer", action="store_true", help="one row per layer instead of per matrix")
    ap.add_argument("--bpw", type=float, help="also plan the paper-error-model allocation at this budget")
    ap.add_argument("--taus", default="0.5,1,2", help="temperatures to plan with besides the default (with --bpw)")
    ap.add_argument("--out", type=Path, help="also write the tables to this markdown file")
    args = ap.parse_args(argv)
    taus = _parse_taus(args.taus)

    import torch

    from omnimodel.arch import registry
    from omnimodel.errors import OmnimodelError
    from omnimodel.quant.pipeline import QuantOptions, calibrate_policy
    from omnimodel.quant.sensitivity import default_tau, sensitivity_terms, sensitivity_weights
    from omnimodel.quant.targets import ModelWeights, matrix_targets

    torch.set_num_threads(1)
    try:
        arch = registry.get(args.architecture)
        policy = arch.load_policy(args.checkpoint)
        # rtn needs no Fisher: the calibration pass computes only the HSIC features the solver uses
        opts = QuantOptions(bpw=args.bpw or 2.5, method="rtn", calib=args.calib, calib_episodes=args.calib_episodes,
                            steps_per_episode=args.calib_steps, seed=args.calib_seed)
        stats = calibrate_policy(policy, opts, log=lambda s: print(s.strip(), file=sys.stderr))
    except OmnimodelError as e:
        raise SystemExit(f"hsic_sensitivity: {e}") from None
    targets = matrix_targets(policy.model)
    terms = sensitivity_terms(stats)
    s = {n: rel - red for n, (rel, red) in terms.items()}
    out = [f"{stats.n_samples} calibration samples; S spread (the default tau) {default_tau(s):.3f}\n\n",
           _table(sensitivity_rows(targets, terms, sensitivity_weights(s), args.by_layer),
                  ("layer" if args.by_layer else "matrix", "weights", "relevance CKA(Z,A)", "redundancy CKA(X,Z)",
                   "S", "weight (default tau)"))]
    if args.bpw is not None:
        variants: dict[str, dict] = {"default tau": {}}
        variants.update({f"tau {t:g}": {"hsic_tau": t} for t in taus})
        variants["no HSIC"] = {"hsic": False}
        try:
            out += ["\n", allocation_rows(targets, ModelWeights(policy.model), stats, args.bpw, variants)]
        except OmnimodelError as e:
            raise SystemExit(f"hsic_sensitivity: {e}") from None
    text = "".join(out)
    sys.stdout.write(text)
    if args.out is not None:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
