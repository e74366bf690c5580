"""`omnimodel bench OUTDIR`: predict-action latency, runtime vs PyTorch fp32 and bf16, same threads."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from omnimodel.cli.command import Command


def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("out_dir", type=Path, help="a directory written by `omnimodel convert`")
    p.add_argument("--runs", type=int, default=10, help="timed runs per contender (median reported)")
    p.add_argument("--warmup", type=int, default=2, help="untimed runs first")
    p.add_argument("--threads", type=int, default=1, help="CPU threads for every contender")
    p.add_argument("--no-torch", action="store_true", help="time only the runtime")
    p.add_argument("--profile", action="store_true",
                   help="also profile the runtime node by node: time per op (matmuls by weight type) and stage")
    p.add_argument("--no-memory", action="store_true",
                   help="skip the peak-RSS probe (predict_action in a fresh process without torch)")
    p.add_argument("--json", type=Path, help="where to write the JSON (default: OUTDIR/bench.json)")


def _run(args: argparse.Namespace) -> int:
    from omnimodel.bench import bench, format_bench

    result = bench(args.out_dir, runs=args.runs, warmup=args.warmup, threads=args.threads,
                   torch_dtypes=() if args.no_torch else ("float32", "bfloat16"), profile=args.profile,
                   memory=not args.no_memory)
    sys.stdout.write(format_bench(result))
    path = args.json or args.out_dir / "bench.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}")
    return 0


COMMAND = Command(
    name="bench",
    help="predict-action latency of a convert output: runtime vs PyTorch fp32/bf16 on the same inputs and threads",
    add_arguments=_add_arguments,
    run=_run,
)
