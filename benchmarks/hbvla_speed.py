#!/usr/bin/env python3
"""Latency of one HBVLA linear layer in the runtime against the same layer in F16, Q4_K and plain Q1_0.

``/omni`` contenders run the Q1_0 matmuls (plain, or HBVLA's planes) through omnimodel's Q1_0 GEMM
(the ``gemm = omni`` knob, cpp/src/gemm_lowbit.cpp) instead of ggml's per-row dot products.

    nice -n 19 python benchmarks/hbvla_speed.py [--threads 2 --runs 15]

Each contender is a one-layer omni-mlp GGUF of the same [out, in] matrix, run on the same tokens in one
process, interleaved run by run; the fastest run per contender (the least disturbed by other load) and
ratios are printed. On a shared machine read the ratios, not the absolute times. OpenMP threads are
made to sleep rather than spin between runs (OMP_WAIT_POLICY=passive), or the idle models' spinning
threads would slow whichever one runs next.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("OMP_WAIT_POLICY", "passive")  # before ggml's OpenMP starts

from omnimodel import _runtime  # noqa: E402
from omnimodel.gguf import GGUFModelWriter  # noqa: E402
from omnimodel.gguf.types import type_info  # noqa: E402
from omnimodel.quant.hbvla import hbvla, quantize_matrix, write_matrix  # noqa: E402

SHAPES = ((576, 576, 300), (1536, 576, 300), (4096, 1024, 256), (1152, 4304, 256))  # out, in, tokens


def _write(path: Path, w: np.ndarray, kind: str, H: np.ndarray) -> None:
    kind, _, gemm = kind.partition("/")
    with GGUFModelWriter(path, "omni-mlp") as g:
        g.add_uint32("omni-mlp.block_count", 1)
        if gemm:
            g.add_string("omni-mlp.gemm", gemm)
        if kind == "HBVLA":
            write_matrix(g, "layers.0.weight", quantize_matrix(w, H, hbvla(salient_cap=8)))
        else:
            g.add_tensor("layers.0.weight", w, kind)


KINDS = ("F16", "Q4_K", "Q1_0", "HBVLA", "Q1_0/omni", "HBVLA/omni")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=15)
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    print("| out x in | tokens | " + " | ".join(KINDS) + " | HBVLA / F16 | HBVLA / Q1_0 | HBVLA/omni / F16 |")
    print("|---|---:|" + "---:|" * (len(KINDS) + 3))
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        for out_dim, n_in, tokens in SHAPES:
            w = (rng.standard_normal((out_dim, n_in)) / np.sqrt(n_in)).astype(np.float32)
            xs = rng.standard_normal((n_in, 512))
            H = xs @ xs.T / 512
            models = {}
            for k in KINDS:
                if k.split("/")[0] not in ("F16", "HBVLA") and n_in % type_info(k.split("/")[0]).block_size:
                    continue  # rows this type's block does not divide
                p = Path(tmp) / f"{k.replace('/', '-')}_{out_dim}_{n_in}.gguf"
                _write(p, w, k, H)
                models[k] = stack.enter_context(_runtime.Model(str(p), n_threads=args.threads))
            x = rng.standard_normal((tokens, n_in)).astype(np.float32)
            times = {k: [] for k in models}
            for m in models.values():
                m.run({"x": x})  # warm up
            for _ in range(args.runs):
                for k, m in models.items():  # interleaved, so load changes hit every contender alike
                    t = time.perf_counter()
                    m.run({"x": x})
                    times[k].append(time.perf_counter() - t)
            med = {k: min(v) * 1e3 for k, v in times.items()}
            cells = " | ".join(f"{med[k]:.2f} ms" if k in med else "n/a" for k in KINDS)
            q1 = f"{med['HBVLA'] / med['Q1_0']:.2f}" if "Q1_0" in med else "n/a"
            print(f"| {out_dim}x{n_in} | {tokens} | {cells} | {med['HBVLA'] / med['F16']:.2f} | {q1} | "
                  f"{med['HBVLA/omni'] / med['F16']:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
