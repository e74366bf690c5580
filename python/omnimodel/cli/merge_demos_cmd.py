"""`omnimodel merge-demos OUT DATA DATA ...`: the union of several episode datasets, as one dataset.

    omnimodel collect-demos data/mw56 --train 50 --calib 10 --image-size 56 --action-noise 0.1
    omnimodel collect-demos data/mw56_pp --tasks pick-place --train 150 --calib 0 --seed 101 --image-size 56 --action-noise 0.1
    omnimodel merge-demos data/mw56_more data/mw56 data/mw56_pp
    omnimodel train-demo data/mw56_more --out runs/demo ...

Every split's episodes are kept (hard links where possible), statistics are recomputed from the union's
train split (``omnimodel.simbench.merge``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from omnimodel.cli.command import Command


def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("out", type=Path, help="dataset directory to create")
    p.add_argument("data", type=Path, nargs="+", help="episode datasets (`collect-demos` outputs), two or more")


def _run(args: argparse.Namespace) -> int:
    from omnimodel.errors import UsageError
    from omnimodel.simbench.episodes import EpisodeFormatError
    from omnimodel.simbench.merge import MergeError, merge_datasets

    try:
        manifest = merge_datasets(args.out, args.data)
    except (MergeError, EpisodeFormatError) as e:
        raise UsageError(str(e)) from e
    counts = ", ".join(f"{split} {len(rels)}" for split, rels in manifest.splits.items())
    print(f"dataset: {args.out} ({counts} episodes; tasks {', '.join(sorted(manifest.tasks))})")
    return 0


COMMAND = Command(
    name="merge-demos",
    help="merge several collected episode datasets into one (statistics of the union)",
    add_arguments=_add_arguments,
    run=_run,
)
