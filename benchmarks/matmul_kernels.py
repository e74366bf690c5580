"""The matmul ceiling on this CPU: GFLOP/s of ggml's kernels per weight type against PyTorch's.

For each weight type, an omni-mlp GGUF (the runtime's built-in dense stack) with one ViT-L-shaped MLP,
1024 -> 4096 -> 1024, runs on a (tokens, 1024) input in the compiled runtime; the two MUL_MAT nodes are
timed node by node (``Model.set_profile``) and the best of ``--reps`` runs is kept (the minimum is the
estimate least disturbed by other jobs on a shared machine; ``--clock cpu`` times CPU seconds instead of
wall-clock, which other jobs barely disturb at one thread). ``BF16/omni`` is BF16 through omnimodel's
own GEMM (the ``gemm = omni`` knob) instead of ggml's, and likewise ``Q2_0/omni`` and ``Q1_0/omni`` through
omnimodel's AVX512-VNNI GEMM for those types (cpp/src/gemm_lowbit.cpp) instead of ggml's per-row vec_dot. PyTorch runs the same two matmuls with
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

DEFAULT_TYPES = "F32,F16,BF16,BF16/omni,Q8_0,Q6_K,Q5_K,Q4_K,Q4_0,IQ4_XS,IQ4_NL,Q3_K,Q2_K,Q2_0,Q2_0/omni,Q1_0,Q1_0/omni"


def _best_matmul_seconds(model, x: np.ndarray, reps: int, clock: str) -> float:
    key = "cpu_seconds" if clock == "cpu" else "seconds"
    model.set_profile(True)
    best = float("inf")
    try:
        for _ in range(reps):
            model.run({"x": x})
            # the matmuls: ggml's MUL_MAT, or omnimodel's GEMM (its pack and multiply custom ops)
            t = sum(n[key] for n in model.profile() if n["op"] in ("MUL_MAT", "CUSTOM"))
            best = min(best, t)
    finally:
        model.set_profile(False)
    return best


def _torch_best(x: np.ndarray, w1: np.ndarray, w2: np.ndarray, dtype, reps: int, clock: str) -> float:
    import torch

    xt = torch.from_numpy(x).to(dtype)
    a, b = torch.from_numpy(w1).to(dtype), torch.from_numpy(w2).to(dtype)
    best = float("inf")
    with torch.no_grad():
        for _ in range(reps + 1):
            now = time.process_time if clock == "cpu" else time.perf_counter
            t0 = now()
            h = torch.nn.functional.linear(xt, a)
            torch.nn.functional.linear(h, b)
            best = min(best, now() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--types", default=DEFAULT_TYPES)
    ap.add_argument("--tokens", type=int, default=522, help="rows of the activation (2 images x 261 DINOv2 tokens)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                    help="cpu: CPU seconds of all threads (the least load-sensitive measure on a shared machine)")
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
            s = _torch_best(x, w1, w2, dtype, args.reps, args.clock)
            rows.append({"contender": name, "ms": s * 1e3, "gflops": flops / s / 1e9})
        for spec in [t.strip() for t in args.types.split(",") if t.strip()]:
            t, _, gemm = spec.partition("/")  # "BF16/omni": omnimodel's GEMM instead of ggml's
            path = Path(tmp) / f"mlp-{t}-{gemm or 'ggml'}.gguf"
            mcfg = omni_mlp.MLPConfig(widths=cfg.widths, norm=cfg.norm, activation=cfg.activation, gemm=gemm or "ggml")
            omni_mlp.write_gguf(omni_mlp.random_mlp(mcfg, t, seed=0), path)
            for repack in (True, False):
                with _runtime.Model(str(path), n_threads=args.threads, repack=repack) as m:
                    m.run({"x": x})  # first run: builds the graph, repacks
                    stats = m.run_stats()
                    s = _best_matmul_seconds(m, x, args.reps, args.clock)
                kind = "omni gemm" if gemm else "repack" if stats["n_repacked"] else "plain"
                rows.append({"contender": f"ggml {t} {kind}", "ms": s * 1e3,
                             "gflops": flops / s / 1e9, "repacked": stats["n_repacked"] > 0})
                if not stats["n_repacked"]:
                    break  # nothing to repack for this type: the second run would be the same
    print(f"{args.tokens} tokens x (1024 -> 4096 -> 1024), {args.threads} thread(s), best of {args.reps}, {args.clock} clock")
    for r in rows:
        print(f"{r['contender']:<24} {r['ms']:>9.2f} ms {r['gflops']:>8.1f} GFLOP/s")
    if args.json:
        args.json.write_text(json.dumps({"tokens": args.tokens, "threads": args.threads, "clock": args.clock,
                                         "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
