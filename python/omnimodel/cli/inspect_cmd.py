"""`omnimodel inspect FILE.gguf`: metadata, per-tensor table and bits-per-weight totals."""

from __future__ import annotations

import argparse
import json
import sys

from omnimodel.cli.command import Command


def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", help="GGUF file to describe")
    p.add_argument("--json", action="store_true", help="print the report as JSON")


def _run(args: argparse.Namespace) -> int:
    from omnimodel.gguf.reader import read_gguf
    from omnimodel.gguf.report import build_report, format_report

    report = build_report(read_gguf(args.file))
    if args.json:
        json.dump(report.to_dict(), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(format_report(report))
    return 0


COMMAND = Command(
    name="inspect",
    help="describe a GGUF file: metadata, tensors, types and bits per weight",
    add_arguments=_add_arguments,
    run=_run,
    description="Validate a GGUF file's header and print its metadata, a per-tensor table (name, type, "
    "shape in PyTorch order, bytes, bits per weight) and totals.",
)
