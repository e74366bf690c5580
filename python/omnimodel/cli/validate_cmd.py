"""`omnimodel validate OUTDIR`: re-run the parity check of a convert output directory."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from omnimodel.cli.command import Command


def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("out_dir", type=Path, help="a directory written by `omnimodel convert`")
    p.add_argument("--threads", type=int, default=1, help="CPU threads (0: all)")
    p.add_argument("--json", type=Path, help="also write the new report here")


def _run(args: argparse.Namespace) -> int:
    from omnimodel.convert import revalidate

    report = revalidate(args.out_dir, threads=args.threads)
    sys.stdout.write(report.format_table())
    if args.json:
        report.write_json(args.json)
    if not report.passed:
        print("validate: parity FAILED", file=sys.stderr)
        return 1
    print("validate: parity passed")
    return 0


COMMAND = Command(
    name="validate",
    help="re-run the runtime-vs-PyTorch parity check of a convert output directory",
    add_arguments=_add_arguments,
    run=_run,
)
