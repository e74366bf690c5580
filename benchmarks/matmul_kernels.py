"""The matmul ceiling on this CPU: GFLOP/s of ggml's kernels per weight type against PyTorch's.

For each weight type, an omni-mlp GGUF (the runtime's built-in dense stack) with one ViT-L-shaped MLP,
1024 -> 4096 -> 1024, runs on a (tokens, 1024) input in the compiled runtime; the two MUL_MAT nodes are
timed node by node (``Model.set_profile``) and the best of ``--reps`` runs is kept (the minimum is the
estimate least disturbed by other jobs on a shared machine). PyTorch runs the same two matmuls with
``torch.nn.functional.linear`` in fp32 and bf16 on the same threads. Weight repacking is measured on
and off for the types ggml repacks on this CPU.

    PYTHONPATH=python python benchmarks/matmul_kernels.py --threads 2 --tokens 522
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

DEFAULT_TYPES = "F32,F16,BF16,Q8_0,Q6_K,Q5_K,Q4_K,Q4_0,IQ4_XS,IQ4_NL,Q3_K,Q2_K"


def _best_matmul_seconds(model, x: np.ndarray, reps: int) -> float:
    model.set_profile(True)
    best = float("inf")
    try:
        for _ in range(reps):
            model.run({"x": x})
            t = sum(n["seconds"] for n in model.profile() if n["op"] == "MUL_MAT")
            best = min(best, t)
    finally:
        model.set_profile(False)
    return best


def _torch_best(x: np.ndarray, w1: np.ndarray, w2: np.ndarray, dtype, reps: int) -> float:
    import torch

    xt = torch.from_numpy(x).to(dtype)
    a, b = torch.from_numpy(w1).to(dtype), torch.from_numpy(w2).to(dtype)
    best = float("inf")
    with torch.no_grad():
        for _ in range(reps + 1):
            t0 = time.perf_counter()
            h = torch.nn.functional.linear(xt, a)
            torch.nn.functional.linear(h, b)
            best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--types", default=DEFAULT_TYPES)
    ap.add_argument("--tokens", type=int, default=522, help="rows of the activation (2 images x 261 DINOv2 tokens)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    import torch

    from omnimodel import _runtime
    from omnimodel.arch import omni_mlp

    torch.set_num_threads(args.threads)
    cfg = omni_mlp.MLPConfig(widths=(1024, 4096, 1024), norm="layer", activation="none")
    x = np.random.default_rng(0).standard_normal((args.tokens, 1024)).astype(np.float32)
    flops = 2.0 * args.tokens * (1024 * 4096 * 2)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        ref = omni_mlp.random_mlp(cfg, "F32", seed=0)
        w1, w2 = ref.weights["layers.0.weight"], ref.weights["layers.1.weight"]
        for name, dtype in (("torch fp32", torch.float32), ("torch bf16", torch.bfloat16)):
            s = _torch_best(x, w1, w2, dtype, args.reps)
            rows.append({"contender": name, "ms": s * 1e3, "gflops": flops / s / 1e9})
        for t in [t.strip() for t in args.types.split(",") if t.strip()]:
            path = Path(tmp) / f"mlp-{t}.gguf"
            omni_mlp.write_gguf(omni_mlp.random_mlp(cfg, t, seed=0), path)
            for repack in (True, False):
                with _runtime.Model(str(path), n_threads=args.threads, repack=repack) as m:
                    m.run({"x": x})  # first run: builds the graph, repacks
                    stats = m.run_stats()
                    s = _best_matmul_seconds(m, x, args.reps)
                rows.append({"contender": f"ggml {t} {'repack' if stats['n_repacked'] else 'plain'}", "ms": s * 1e3,
                             "gflops": flops / s / 1e9, "repacked": stats["n_repacked"] > 0})
                if not stats["n_repacked"]:
                    break  # nothing to repack for this type: the second run would be the same
    for r in rows:
        print(f"{r['contender']:<24} {r['ms']:>9.2f} ms {r['gflops']:>8.1f} GFLOP/s")
    if args.json:
        args.json.write_text(json.dumps({"tokens": args.tokens, "threads": args.threads, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
