"""Runtime speed of a convert output under different speed knobs, side by side.

Each variant is the output's plan with some knobs set on every module whose skill has them
(``attn=naive``, ``gelu_impl=ggml`` ...); each is rendered and built as its own plugin, then all run
the same inputs in turn, round-robin, so load on a shared machine hits them alike. Reports per
variant the median and minimum model time, wall-clock and CPU (all threads; with one thread the CPU
time is the least load-sensitive measure of the work), and optionally a node-by-node profile of each.

    PYTHONPATH=python python benchmarks/knob_variants.py OUT --variant attn=naive,gelu_impl=ggml \\
        --variant attn=flash --variant attn=flash_f16 --threads 2 --runs 5 [--profile]

The first variant is always the plan as converted ("as converted").
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _parse_variant(text: str) -> dict[str, str]:
    out = {}
    for item in text.split(","):
        k, _, v = item.partition("=")
        out[k.strip()] = v.strip()
    return out


def variant_plan(plan, knobs: dict[str, str]):
    from omnimodel.plan.skills import SKILLS

    for m in plan.modules:
        for k, v in knobs.items():
            if k in {kn.name for kn in SKILLS[m.skill].knobs}:
                plan = plan.with_knob(m.name, k, v)
    return plan


def bench_inputs(out_dir: Path) -> dict[str, np.ndarray]:
    """The inputs `omnimodel bench` feeds the runtime (the parity observation, preprocessed)."""
    import torch

    from omnimodel.arch.openvla_oft.normalization import normalize_proprio
    from omnimodel.arch.openvla_oft.preprocess import images_to_pixel_values
    from omnimodel.convert import REPORT_FILE, _load_policy
    from omnimodel.validate.reference import parity_observation
    from omnimodel.validate.report import ValidationReport

    rep = ValidationReport.read_json(out_dir / REPORT_FILE)
    ck = Path(rep.checkpoint or "")
    policy = _load_policy(ck if ck.is_absolute() else out_dir / ck)
    images, proprio = parity_observation(policy, rep.seed)
    pv = images_to_pixel_values(images, policy.config.vision, policy.config.num_images)
    ids = torch.tensor([policy.tokenizer.encode_prompt(rep.instruction)], dtype=torch.long)
    inputs = {"pixel_values": pv.to(torch.float32).numpy(),
              "input_ids": policy.model.full_input_ids(ids).to(torch.float32).numpy()}
    if policy.config.use_proprio:
        inputs["proprio"] = torch.tensor(normalize_proprio(np.asarray(proprio, np.float64), policy.norm_stats.proprio),
                                         dtype=torch.float32)[None].numpy()
    return inputs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--variant", action="append", default=[], help="knob=value[,knob=value...]")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    from omnimodel import _runtime
    from omnimodel.build import build_plugin
    from omnimodel.codegen.render import render
    from omnimodel.plan import Plan
    from omnimodel.profile import format_profile, profile_runtime

    out = args.out_dir.absolute()
    plan = Plan.from_json((out / "plan.json").read_text())
    inputs = bench_inputs(out)
    variants = [("as converted", plan)] + [(v, variant_plan(plan, _parse_variant(v))) for v in args.variant]
    models = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, p) in enumerate(variants):
            src = Path(tmp) / f"v{i}" / "sources"
            render(p, src)
            lib = build_plugin(src, Path(tmp) / f"v{i}" / "build", verbose=False)
            _runtime.load_plugin(str(lib))  # registered now; the model loaded next keeps this graph
            m = _runtime.Model(str(out / "model.gguf"), n_threads=args.threads)
            m.run(inputs)  # build the graph, repack
            models.append((name, m, [], []))
        for _ in range(args.runs):
            for name, m, samples, cpu in models:
                t0, c0 = time.perf_counter(), time.process_time()
                m.run(inputs)
                samples.append(time.perf_counter() - t0)
                cpu.append(time.process_time() - c0)
        rows = []
        for name, m, samples, cpu in models:
            row = {"variant": name, "median_ms": statistics.median(samples) * 1e3, "min_ms": min(samples) * 1e3,
                   "cpu_median_ms": statistics.median(cpu) * 1e3, "cpu_min_ms": min(cpu) * 1e3}
            if args.profile:
                prof = profile_runtime(m, inputs, runs=args.runs, warmup=0,
                                       stage_ends={"vision": "projector", "llm": "language_model.model.norm"},
                                       last_stage="head")
                row["profile"] = prof.to_json()
                print(f"== {name}\n{format_profile(prof)}", file=sys.stderr)
            rows.append(row)
            m.close()
    for r in rows:
        print(f"{r['variant']:<40} wall median {r['median_ms']:>9.1f} min {r['min_ms']:>9.1f} ms   "
              f"CPU median {r['cpu_median_ms']:>9.1f} min {r['cpu_min_ms']:>9.1f} ms")
    if args.json:
        args.json.write_text(json.dumps({"threads": args.threads, "runs": args.runs, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
