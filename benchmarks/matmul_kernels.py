"""The matmul ceiling on this CPU: GFLOP/s of ggml's kernels per weight type against PyTorch's.

For each weight type, an omni-mlp GGUF (the runtime's built-in dense stack) with one ViT-L-shaped MLP,
1024 -> 4096 -> 1024, runs on a (tokens, 1024) input in the compiled runtime; the two MUL_MAT nodes are
timed node by node (``Model.set_profile``) and the best of ``--reps`` runs is kept (the minimum is the
estimate least disturbed by other jobs on a shared machine; ``--clock cpu`` times CPU seconds instead of
wall-clock, which other jobs barely disturb at one thread). ``BF16/omni`` is BF16 through omnimodel's
own GEMM (the ``gemm = omni`` knob) instead of ggml's, and likewise ``Q2_0/omni`` and ``Q1_0/omni`` through
omnimodel's AVX512-VNNI GEMM for those types (cpp/src/gemm_lowbit.cpp) instead of ggml's per-row vec_dot. PyTorch runs the same two matmuls with
``torch.nn.functional.linear`` in fp32 and bf16 on the same threads. Weight repacking is measured on
and off for the types ggml repacks on this CPU. ``Q4_K/omni``, ``Q4_0/omni``, ``IQ4_XS/omni`` and
``IQ4_NL/omni`` are the 4-bit types through the same omnimodel GEMM (decoders in cpp/src/gemm_kquant.cpp)
instead of ggml's tiled / repacked kernels, and ``Q2_K/omni``, ``IQ1_M/omni``, ``IQ2_XXS/omni``,
``IQ2_XS/omni``, ``IQ2_S/omni``, ``IQ3_XXS/omni``, ``IQ3_S/omni`` Q2_K and the grid quants through it
(decoders in cpp/src/gemm_iquant.cpp) instead of ggml's vec_dot kernels.

``--widths`` sets the MLP (default the ViT-L one, 1024,4096,1024; the real-width model also has SigLIP's
1152,4304,1152 and the Llama's 576,1536,576). Where a type's block does not divide a row width, the
matrix is stored zero-padded to whole blocks as ``convert`` stores it, and the runtime pads the activation
(its PAD node is timed with the matmuls); GFLOP/s count the real, unpadded products, so padding shows as
lost speed. A type/shape pair the writer cannot store is skipped.

    PYTHONPATH=python python benchmarks/matmul_kernels.py --threads 2 --tokens 522
    PYTHONPATH=python python benchmarks/matmul_kernels.py --threads 1 --clock cpu --widths 576,1536,576 --tokens 598
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

DEFAULT_TYPES = ("F32,F16,BF16,BF16/omni,Q8_0,Q6_K,Q5_K,Q4_K,Q4_K/omni,Q4_0,Q4_0/omni,IQ4_XS,IQ4_XS/omni,IQ4_NL,"
                 "IQ4_NL/omni,Q3_K,Q2_K,Q2_0,Q2_0/omni,Q1_0,Q1_0/omni")


def _write_padded_mlp(path: Path, ref, weight_type: str, gemm: str) -> None:
    """ref's weights as an omni-mlp GGUF with its matrices in weight_type, rows zero-padded to whole blocks
    where the block does not divide them (as convert stores such matrices)."""
    from omnimodel.arch import omni_mlp
    from omnimodel.gguf.encoders import encode
    from omnimodel.gguf.types import parse_type, type_info
    from omnimodel.gguf.writer import GGUFModelWriter

    t = parse_type(weight_type)
    block = type_info(t).block_size
    arch = omni_mlp.ARCH
    cfg = ref.config
    with GGUFModelWriter(path, arch) as out:
        out.add_uint32(f"{arch}.block_count", cfg.n_layers)
        out.add_string(f"{arch}.norm", cfg.norm)
        out.add_float32(f"{arch}.norm_eps", cfg.norm_eps)
        out.add_string(f"{arch}.activation", cfg.activation)
        if gemm != "ggml":
            out.add_string(f"{arch}.gemm", gemm)
        for name, value in ref.weights.items():
            if not name.endswith(".weight") or name.endswith("norm.weight"):
                out.add_tensor(name, value, "F32")
                continue
            k = value.shape[1]
            kp = -(-k // block) * block
            # ggml quantizes the 1- and 2-bit grid types only with an importance vector: a flat one here
            imp_needed = t.name in ("IQ1_S", "IQ1_M", "IQ2_XXS", "IQ2_XS")
            if kp == k and not imp_needed:
                out.add_tensor(name, value, t)
                continue
            padded = np.zeros((value.shape[0], kp), np.float32)
            padded[:, :k] = value
            imp = np.ones_like(padded) if imp_needed else None
            out.add_encoded(name, encode(padded, t, importance=imp), t, padded.shape,
                            real_width=k if kp != k else None)


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
    ap.add_argument("--widths", default="1024,4096,1024", help="the MLP: input width, then each layer's output width")
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
    widths = tuple(int(w) for w in args.widths.split(","))
    cfg = omni_mlp.MLPConfig(widths=widths, norm="layer", activation="none")
    x = np.random.default_rng(0).standard_normal((args.tokens, widths[0])).astype(np.float32)
    flops = 2.0 * args.tokens * sum(a * b for a, b in zip(widths, widths[1:]))
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
            try:
                _write_padded_mlp(path, ref, t, gemm or "ggml")
            except Exception as e:  # noqa: BLE001 -- a type this shape cannot be stored in: say so, go on
                print(f"{spec}: skipped ({e})")
                continue
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
    print(f"{args.tokens} tokens x ({' -> '.join(map(str, widths))}), {args.threads} thread(s), best of {args.reps}, "
          f"{args.clock} clock")
    for r in rows:
        print(f"{r['contender']:<24} {r['ms']:>9.2f} ms {r['gflops']:>8.1f} GFLOP/s")
    if args.json:
        args.json.write_text(json.dumps({"tokens": args.tokens, "threads": args.threads, "clock": args.clock,
                                         "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
