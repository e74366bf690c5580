"""`omnimodel convert openvla-oft`: checkpoint -> GGUF + graph + parity report, in one output directory."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from omnimodel.cli.command import Command


def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("architecture", choices=["openvla-oft"], help="the policy family")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--checkpoint", type=Path, help="Hugging Face OFT checkpoint directory")
    src.add_argument("--demo", action="store_true",
                     help="no checkpoint: convert the built-in demo policy (a tiny OFT trained on Meta-World)")
    p.add_argument("--outtype", default="f32", choices=["f32", "f16", "bf16", "q8_0"], help="weight type")
    p.add_argument("--out", type=Path, help="output directory (default: ./openvla-oft-<outtype>)")
    p.add_argument("--threads", type=int, default=1, help="CPU threads for validation (0: all)")
    p.add_argument("--reference-dtype", default="auto", choices=["auto", "float32", "float64"],
                   help="PyTorch reference precision (auto: float64 for small models)")
    p.add_argument("--knob", action="append", default=[], metavar="MODULE:KNOB=VALUE",
                   help="override a planned knob of the generated graph, e.g. vision_backbone.featurizer:gelu=tanh "
                   "(repeatable; parity is still checked and the reflector may undo it)")
    p.add_argument("--force", action="store_true", help="replace an existing output directory")
    p.add_argument("--keep-failed", action="store_true", help="write the output even if parity fails")


def _run(args: argparse.Namespace) -> int:
    from omnimodel.convert import ParityFailure, convert_openvla_oft
    from omnimodel.errors import UsageError

    if args.checkpoint is None and not args.demo:
        raise UsageError("give --checkpoint DIR (or --demo to try it on the built-in demo policy)")
    knobs = [_parse_knob(k) for k in args.knob]
    out = args.out or Path(f"openvla-oft-{args.outtype}{'-demo' if args.demo else ''}")
    try:
        res = convert_openvla_oft(
            out, checkpoint=args.checkpoint, demo=args.demo, outtype=args.outtype,
            threads=args.threads, force=args.force, keep_failed=args.keep_failed,
            reference_dtype=args.reference_dtype, knobs=knobs,
        )
    except ParityFailure as e:
        sys.stdout.write("\n" + e.report.format_table())
        raise
    print()
    sys.stdout.write(res.report.format_table())
    if res.report.reflection and res.report.reflection.get("attempts"):
        print(f"reflector: {res.report.reflection['summary']}")
    print(f"\n{res.out_dir}/")
    project: list[int] = []
    for name, size in res.files.items():
        if name.startswith("project/"):  # dozens of runtime sources: one line for the whole project
            project.append(size)
            continue
        print(f"  {name:<40} {_size(size):>10}")
    if project:
        print(f"  {'project/ (' + str(len(project)) + ' files, standalone CMake project)':<40} {_size(sum(project)):>10}")
    if res.demo:
        print("  demo_checkpoint/                         (the demo policy the demo converted)")
    print(f"\ngraph: {res.graph} (the runtime ran {res.report.graph_source or 'an unknown graph'})")
    print("stages: " + ", ".join(f"{k} {v:.1f}s" for k, v in res.stage_seconds.items()))
    if res.demo:
        print("DEMO: the built-in tiny trained demo policy; pass --checkpoint DIR for a real one")
    if not res.report.passed:
        print("convert: parity FAILED (output kept because of --keep-failed)", file=sys.stderr)
        return 1
    print(f"convert: parity passed ({res.report.outtype}), output in {res.out_dir}")
    print(f"robot: cmake -S {res.out_dir}/project -B build && cmake --build build -j "
          "(see docs/robot_integration.md)")
    return 0


def _parse_knob(text: str) -> tuple[str, str, object]:
    """'module:knob=value'; the value is read as JSON when it parses (1e-5, true, 3), else as a string."""
    import json

    from omnimodel.errors import UsageError

    head, sep, raw = text.partition("=")
    module, sep2, knob = head.rpartition(":")
    if not sep or not sep2 or not module or not knob:
        raise UsageError(f"--knob {text!r}: expected MODULE:KNOB=VALUE")
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw
    return module, knob, value


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


COMMAND = Command(
    name="convert",
    help="convert a VLA checkpoint to GGUF + runtime graph and prove parity with PyTorch",
    add_arguments=_add_arguments,
    run=_run,
    description="Convert a policy checkpoint: analyze -> plan -> GGUF -> render/build the graph -> validate "
    "every intermediate against the PyTorch reference (repairing a failing generated graph automatically) -> "
    "write project/, a standalone CMake project for the robot. The output directory appears only when "
    "everything succeeded.",
)
