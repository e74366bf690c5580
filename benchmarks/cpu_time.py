"""CPU time of the model forward, runtime outputs against PyTorch fp32 and bf16, one thread.

On a machine shared with other jobs, wall-clock time measures the queue as much as the code. With one
thread, the CPU seconds a forward pass consumes (``time.process_time``) barely depend on what else
runs, so ratios measured this way are the stable ones; `omnimodel bench` gives the wall-clock numbers.

    PYTHONPATH=python python benchmarks/cpu_time.py OUT [OUT ...] --runs 5 [--json FILE]
    PYTHONPATH=python python benchmarks/cpu_time.py OUT [OUT ...] --torch bf16   # full depth: PyTorch bf16 only

``--threads N --clock wall`` times wall-clock instead, every contender on N threads, still round-robin
(with more than one thread, CPU time would count the threads' spinning at barriers, not latency; the
wall-clock ratios hold only while the load stays even over the run).

``--torch bf16`` times only PyTorch bf16 and converts the loaded policy in place rather than copying it,
so a full-depth real-width model fits a few GiB (the policy in fp32 plus two copies would be ~9 GiB).

Every output runs the parity observation of the first one (same images, prompt, proprio), round-robin
with the others; PyTorch runs the first output's checkpoint. Reported: median and minimum CPU ms per
contender and each runtime's ratio to PyTorch bf16 (medians).
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from pathlib import Path

from knob_variants import bench_inputs  # benchmarks/ on sys.path when run as a script


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("outs", type=Path, nargs="+")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--torch", default="fp32,bf16", help="PyTorch dtypes to time (bf16 is the reference)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--clock", choices=("cpu", "wall"), default="cpu")
    args = ap.parse_args()
    dtypes = [d.strip() for d in args.torch.split(",") if d.strip()]
    if "bf16" not in dtypes or not set(dtypes) <= {"fp32", "bf16"}:
        raise SystemExit("--torch takes fp32 and/or bf16, and needs bf16 (the reference)")

    import torch

    from omnimodel import _runtime
    from omnimodel.convert import REPORT_FILE, _load_policy
    from omnimodel.validate.report import ValidationReport

    if args.threads != 1 and args.clock == "cpu":
        raise SystemExit("CPU time measures one thread; use --clock wall with --threads N > 1")
    torch.set_num_threads(args.threads)
    now = time.process_time if args.clock == "cpu" else time.perf_counter
    first = args.outs[0].absolute()
    rep = ValidationReport.read_json(first / REPORT_FILE)
    ck = Path(rep.checkpoint or "")
    inputs = bench_inputs(first)  # first: it loads the policy too, and frees it before ours is loaded
    policy = _load_policy(ck if ck.is_absolute() else first / ck)
    contenders = []
    for out in args.outs:
        out = out.absolute()
        graph = ValidationReport.read_json(out / REPORT_FILE).graph
        if graph.startswith("plugin:"):
            _runtime.load_plugin(str(out / graph.split(":", 1)[1]))
        m = _runtime.Model(str(out / "model.gguf"), n_threads=args.threads)  # keeps the graph it was loaded with
        m.run(inputs)
        contenders.append((f"runtime {out.name}", lambda m=m: m.run(inputs)))
    pv = torch.from_numpy(inputs["pixel_values"])
    ids = torch.tensor([policy.tokenizer.encode_prompt(rep.instruction)])
    pr = torch.from_numpy(inputs["proprio"]) if "proprio" in inputs else None
    for name, dtype in (("pytorch fp32", torch.float32), ("pytorch bf16", torch.bfloat16)):
        if name.split()[1] not in dtypes:
            continue
        # one dtype: the loaded policy itself, converted (no second copy of the weights)
        model = (copy.deepcopy(policy.model) if len(dtypes) > 1 else policy.model).to(dtype).eval()

        def fwd(model=model):
            with torch.no_grad():
                model(pv, ids, pr)

        fwd()
        contenders.append((name, fwd))
    samples: dict[str, list[float]] = {name: [] for name, _ in contenders}
    for _ in range(args.runs):
        for name, fn in contenders:
            c0 = now()
            fn()
            samples[name].append(now() - c0)
    ref = statistics.median(samples["pytorch bf16"])
    rows = []
    for name, s in samples.items():
        med = statistics.median(s)
        rows.append({"contender": name, "median_ms": med * 1e3, "min_ms": min(s) * 1e3,
                     "speed_vs_pytorch_bf16": ref / med})
        print(f"{name:<28} {args.clock} median {med * 1e3:9.1f} ms  min {min(s) * 1e3:9.1f} ms   "
              f"{ref / med:5.2f}x PyTorch bf16")
    if args.json:
        args.json.write_text(json.dumps({"runs": args.runs, "threads": args.threads, "clock": args.clock, "rows": rows},
                                        indent=2) + "\n")


if __name__ == "__main__":
    main()
