"""`omnimodel collect-demos OUT`: scripted-expert Meta-World demonstrations -> an episode dataset.

Writes ``OUT/train/*.npz`` and ``OUT/calib/*.npz`` (one file per episode, see
``omnimodel.simbench.episodes``), ``OUT/dataset_statistics.json`` (the statistics schema of ``simbench.statistics``, from the train split)
and ``OUT/dataset.json`` (the manifest, last). Same arguments -> same files.
"""

from __future__ import annotations

import argparse

from omnimodel.cli.command import Command


def _add_arguments(p: argparse.ArgumentParser) -> None:
    from omnimodel.simbench.tasks import DEFAULT_DATASET_KEY, DEFAULT_TASKS, TASK_SETS, TASKS  # pure data, cheap

    p.add_argument("out", help="dataset directory to create")
    p.add_argument(
        "--tasks",
        default=",".join(DEFAULT_TASKS),
        help=f"comma-separated tasks or task sets (default: %(default)s; sets: {', '.join(TASK_SETS)}; "
        f"tasks: {', '.join(TASKS)})",
    )
    p.add_argument("--train", type=int, default=50, help="training episodes per task (default: %(default)s)")
    p.add_argument(
        "--calib", type=int, default=10, help="held-out calibration/eval episodes per task (default: %(default)s)"
    )
    p.add_argument("--seed", type=int, default=0, help="base seed of the episode layouts (default: %(default)s)")
    p.add_argument(
        "--image-size", type=int, default=84, help="camera resolution in pixels, square (default: %(default)s)"
    )
    p.add_argument(
        "--action-noise",
        type=float,
        default=0.0,
        help="std of noise added to the executed (not the recorded) expert action, DART-style (default: 0)",
    )
    p.add_argument(
        "--dataset-key", default=DEFAULT_DATASET_KEY, help="key in dataset_statistics.json (default: %(default)s)"
    )
    p.add_argument("--max-steps", type=int, help="step budget per episode (default: each task's own)")
    p.add_argument(
        "--goal-state",
        action="store_true",
        help="append the task's goal position (x, y, z; Meta-World's goal-observable state) to the 4-D proprio; "
        "a policy trained on it gets it in `eval` too",
    )
    p.add_argument(
        "--object-state",
        action="store_true",
        help="also append the task object's position (x, y, z; Meta-World's obs[4:7]: the puck, the handle, the "
        "button), after the goal's; implies --goal-state",
    )
    p.add_argument("--overwrite", action="store_true", help="replace a dataset already in OUT")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _run(args: argparse.Namespace) -> int:
    from omnimodel.errors import UsageError
    from omnimodel.simbench.collect import CollectConfig, collect_demos
    from omnimodel.simbench.tasks import parse_tasks

    try:
        tasks = tuple(t.name for t in parse_tasks(args.tasks))
    except KeyError as e:
        raise UsageError(str(e).strip("'\"")) from e
    if args.image_size < 16:
        raise UsageError(f"--image-size {args.image_size} is too small (>= 16)")
    cfg = CollectConfig(
        tasks=tasks,
        train_per_task=args.train,
        calib_per_task=args.calib,
        seed=args.seed,
        image_size=args.image_size,
        action_noise=args.action_noise,
        dataset_key=args.dataset_key,
        max_steps=args.max_steps,
        state="object" if args.object_state else "goal" if args.goal_state else "hand",
    )
    report = collect_demos(args.out, cfg, progress=not args.quiet, overwrite=args.overwrite)
    print("\n".join(report.summary_lines()))
    print(f"dataset: {report.root} (manifest dataset.json, statistics dataset_statistics.json)")
    return 0


COMMAND = Command(
    name="collect-demos",
    help="collect scripted-expert Meta-World demonstrations (train + held-out calib split)",
    add_arguments=_add_arguments,
    run=_run,
)
