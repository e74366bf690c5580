#!/usr/bin/env python
"""Time of the runtime's C++ tokenizer against text length, and of refusing a 1 MB instruction.

The tokenizer merges on a priority queue (O(n log n)); before issue 13 it rescanned every pair per
merge (quadratic: 8k characters took 0.5 s, a 340 KB prompt > 120 s). `omnimodel_tokenize` has no
context limit, so it is what scales; `omnimodel_input_ids` / `predict_action` refuse an instruction
that cannot fit the model's context before tokenising it.

    python benchmarks/tokenize_scaling.py DEMO_OUT        # a convert output (model.gguf + plugin/)
"""

from __future__ import annotations

import sys
import time
from pathlib import Path


def main() -> int:
    from omnimodel import _runtime

    out = Path(sys.argv[1])
    _runtime.load_plugin(str(sorted((out / "plugin").glob("*.so"))[-1]))
    m = _runtime.Model(str(out / "model.gguf"), n_threads=1)
    sentence = "pick up the black bowl and put it on the plate, then open the drawer. "
    # CPU seconds of this process: on a shared machine wall time measures the neighbours
    print(f"omnimodel {_runtime.version()}; text = {sentence!r} repeated; CPU seconds, best of 3")
    print("| characters | tokens | tokenize CPU s | CPU s per 1k characters |\n|---|---|---|---|")
    for n in (1_000, 2_000, 4_000, 8_000, 64_000, 256_000, 1_000_000):
        text = (sentence * (n // len(sentence) + 1))[:n]
        best = float("inf")
        for _ in range(3):
            t0 = time.process_time()
            ids = m.tokenize(text)
            best = min(best, time.process_time() - t0)
        print(f"| {n:,} | {len(ids):,} | {best:.4f} | {1000 * best / n:.5f} |")
    text = (sentence * (1_000_000 // len(sentence) + 1))[:1_000_000]
    t0 = time.process_time()
    try:
        m.input_ids(text)
        verdict = "accepted (!)"
    except _runtime.RuntimeStatusError as e:
        verdict = f"refused: {e}"
    print(f"\ninput_ids of a 1,000,000-character instruction: {verdict} in {time.process_time() - t0:.4f} CPU s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
