#!/usr/bin/env python
"""CPU time of pi0 / pi0.5's robot-side preprocessing in C++ against the Python reference.

What runs on the robot before the graph: state normalisation (and, for pi0.5, discretisation into the
prompt), SentencePiece tokenisation, resize_with_pad + [-1, 1] of every camera frame, the seeded noise.
C++: ``omnimodel_prepare_inputs`` through the Python binding (so including the copies back to numpy);
Python: ``omnimodel.arch.pi0.policy.prepare_inputs``. The policy is a miniature at the real sizes that
matter here (224 px, 2 cameras, chunk 50 x 32, tokenizer_max_length 48 / 200); the network widths do
not enter preprocessing.

    python benchmarks/pi0_preprocess.py [WORKDIR]
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def best_cpu(fn, runs: int = 20) -> float:
    best = float("inf")
    for _ in range(runs):
        t0 = time.process_time()
        fn()
        best = min(best, time.process_time() - t0)
    return best


def main() -> int:
    from omnimodel.arch.pi0 import Pi0MiniatureSpec, load_policy, random_observation, write_miniature
    from omnimodel.arch.pi0.gguf_meta import write_robot_gguf
    from omnimodel.arch.pi0.policy import prepare_inputs

    from omnimodel import _runtime

    torch.set_num_threads(1)
    work = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="pi0_pre_"))
    instruction = "pick up the black bowl and put it on the plate"
    # CPU seconds of this process: on a shared machine wall time measures the neighbours
    print(f"omnimodel {_runtime.version()}, torch {torch.__version__}, 1 thread; CPU ms per observation, best of 20")
    print("| policy | frames | C++ prepare_inputs ms | Python prepare_inputs ms | ratio |\n|---|---|---|---|---|")
    for kind in ("pi0", "pi05"):
        spec = Pi0MiniatureSpec(kind=kind, image_size=224, chunk_size=50, n_action_steps=50)
        policy = load_policy(write_miniature(work / kind, spec))
        model = _runtime.Model(str(write_robot_gguf(policy, work / f"{kind}.gguf")), n_threads=1,
                               preprocess_only=True)
        for hw in ((224, 224), (480, 640)):
            images, state = random_observation(spec, seed=1, image_hw=hw)
            c = best_cpu(lambda: model.prepare_inputs(images, instruction, state, seed=3))
            p = best_cpu(lambda: prepare_inputs(policy, images, instruction, state, seed=3))
            print(f"| {kind} | 2 x {hw[1]}x{hw[0]} | {1e3 * c:.2f} | {1e3 * p:.2f} | {p / c:.1f}x |")
            got = model.prepare_inputs(images, instruction, state, seed=3)
            ref = prepare_inputs(policy, images, instruction, state, seed=3)
            assert got["input_ids"].reshape(-1).astype(np.int64).tolist() == ref.tokens[0].tolist()
        model.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
