#!/usr/bin/env python3
"""Does stock llama.cpp run what `omnimodel export-llm` writes, and compute what PyTorch computes?

An end-to-end check of the exported backbone in llama.cpp itself (the test suite checks the file with
gguf-py only, without llama.cpp): a real-width OFT checkpoint (SmolLM2's pretrained Llama weights with
--pretrained, random otherwise) is written as an OFT GGUF, its backbone exported, and llama.cpp's
`llama-embedding` (built from the pinned source by benchmarks/llama_bench.py, in the same tree as
llama-bench) runs a prompt through it with no pooling: one final-norm hidden state per token. The
script checks

  - llama.cpp's token ids for the prompt equal the checkpoint tokenizer's (tokenizer.ggml.* export),
  - its hidden states equal PyTorch's `language_model.model` run *causally* (llama.cpp always attends
    causally; OFT's backbone is bidirectional) on the GGUF's decoded weights, per-token cosine ~1.

    python benchmarks/llama_export_check.py [--pretrained] [--layers 4] [--outtype f16|q8_0|bf16]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import llama_bench  # noqa: E402

PROMPT = "In: What action should the robot take to put the black bowl on the plate? Out:"


def llama_cpp_hidden(binary: Path, model: Path, prompt: str, threads: int) -> tuple[list[int], np.ndarray]:
    """Token ids (--verbose-prompt) and per-token hidden states (--pooling none, unnormalised)."""
    cmd = [str(binary), "-m", str(model), "-p", prompt, "--pooling", "none", "--embd-normalize", "-1",
           "--embd-output-format", "json", "--verbose-prompt", "-t", str(threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"llama-embedding failed: {' '.join(proc.stderr.split())[-500:]}")
    out = proc.stdout
    head = out[: out.index("{")] if "{" in out else out
    ids = [int(m) for m in re.findall(r"^\s+(\d+) -> '", head, flags=re.M)]
    # parsed per array: the tool may stop mid-way through the JSON's last entry
    rows = [[float(x) for x in m.split(",")] for m in re.findall(r'"embedding": \[([^\]]*)\]', out)]
    return ids, np.array(rows, np.float64)


def torch_hidden(policy, gguf_path: Path, ids: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """PyTorch's backbone on the GGUF's decoded weights (what llama.cpp runs), in float64: causal, then
    bidirectional (OFT's own attention)."""
    import torch

    from omnimodel.gguf.reader import load_tensor, read_gguf

    lm = policy.model.language_model.model
    gf = read_gguf(gguf_path)
    out = []
    with torch.no_grad():
        for name, t in lm.state_dict().items():
            t.copy_(torch.from_numpy(load_tensor(gf, "language_model.model." + name)))
        lm.double()
        for causal in (True, False):
            lm.set_causal(causal)
            out.append(lm(lm.embed_tokens(torch.tensor([ids])))[0].numpy())
    return out[0], out[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pretrained", action="store_true", help="SmolLM2-135M's pretrained Llama weights")
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--outtype", default="f16", choices=["f32", "f16", "bf16", "q8_0"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--work", type=Path, help="keep the files here (default: a temporary directory)")
    args = ap.parse_args()

    from omnimodel.arch.openvla_oft import load_policy, real_width_spec, write_miniature
    from omnimodel.arch.openvla_oft.export import write_gguf
    from omnimodel.arch.openvla_oft.llm_export import export_llm

    binary = llama_bench.ensure_llama_bench(target="llama-embedding")
    with tempfile.TemporaryDirectory(prefix="llama-export-check-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        ckpt = write_miniature(work / "checkpoint", real_width_spec("smollm2", vision_depth=2, llm_layers=args.layers,
                                                                    pretrained=args.pretrained))
        policy = load_policy(ckpt)
        src = write_gguf(policy, work / "model.gguf", args.outtype)
        exported = export_llm(src, work / "llm.gguf")
        print(exported.summary())
        ids, hidden = llama_cpp_hidden(binary, exported.path, PROMPT, args.threads)
        ref_ids = policy.tokenizer.encoder.encode_with_bos(PROMPT)
        causal, bidir = torch_hidden(policy, src, ref_ids)

    def cos(a: np.ndarray, b: np.ndarray) -> float:
        return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))

    n = len(hidden)
    ok_ids = ids == ref_ids
    c_causal = min(cos(a, b) for a, b in zip(hidden, causal[:n]))
    c_bidir = min(cos(a, b) for a, b in zip(hidden, bidir[:n]))
    print(f"token ids: llama.cpp {len(ids)}, tokenizer {len(ref_ids)}, equal: {ok_ids}")
    print(f"hidden states of {n} tokens: min per-token cosine vs PyTorch causal {c_causal:.6f} "
          f"(max abs diff {np.abs(hidden - causal[:n]).max():.4f}, max |h| {np.abs(causal).max():.2f}); "
          f"vs PyTorch bidirectional {c_bidir:.4f}")
    passed = ok_ids and n >= len(ref_ids) - 1 and c_causal > 0.999
    print("export check: " + ("PASSED" if passed else "FAILED"))
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
