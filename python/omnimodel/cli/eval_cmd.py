"""`omnimodel eval --policy P`: closed-loop success in Meta-World and open-loop error on held-out episodes.

    omnimodel eval --policy expert --episodes 5                      # the scripted expert (sanity check)
    omnimodel eval --policy CKPT --data DATA --json r.json --plots plots/
    omnimodel eval --policy CKPT --data DATA --reference FP_CKPT --no-closed-loop
    omnimodel eval --policy OUTDIR --data DATA --reference CKPT      # a converted policy, in the runtime
    omnimodel eval --policy FILE.gguf --plugin PLUGIN.so ...
    omnimodel eval --policy OUTDIR --episodes 50 --baseline fp.json  # retention vs an earlier result

``--policy``: ``expert``, a checkpoint directory (the PyTorch reference), or a converted policy
run by the compiled runtime (``omnimodel.simbench.policies.GGUFRuntimePolicy``): an ``omnimodel convert``
output directory, or a ``.gguf`` with ``--plugin`` (the generated graph). ``--data`` (an episode dataset from
``collect-demos`` or the calibration loaders) adds the open-loop metrics on its ``--split``; with
``--reference`` they include L1 and cosine to that (full-precision) policy. Fixed seeds and one thread:
running the same command twice prints the same numbers (timings aside). Every success rate comes with its
Wilson 95% interval; ``--baseline`` adds the retention ratio with a paired bootstrap interval
(``omnimodel.simbench.confidence``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from omnimodel.cli.command import Command


def _add_arguments(p: argparse.ArgumentParser) -> None:
    from omnimodel.simbench.tasks import TASK_SETS, TASKS  # pure data, cheap

    p.add_argument(
        "--policy", required=True, help="'expert', a checkpoint dir, a convert output dir or a .gguf (see above)"
    )
    p.add_argument(
        "--plugin",
        help="graph plugin (.so) for a --policy .gguf (default: the convert directory's plugin/)",
    )
    p.add_argument(
        "--tasks",
        help=f"comma-separated tasks or task sets (default: the dataset's, else the default set; sets: "
        f"{', '.join(TASK_SETS)}; tasks: {', '.join(TASKS)})",
    )
    p.add_argument("--episodes", type=int, default=10, help="closed-loop episodes per task (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="base seed of the evaluation layouts (default: %(default)s)")
    p.add_argument("--max-steps", type=int, help="step budget per episode (default: each task's own)")
    p.add_argument("--execute-steps", type=int, help="actions executed per policy call (default: the whole chunk)")
    p.add_argument("--image-size", type=int, help="camera resolution (default: the policy's input size, else 84)")
    p.add_argument("--no-closed-loop", action="store_true", help="only the open-loop metrics")
    p.add_argument("--data", type=Path, help="episode dataset for the open-loop metrics")
    p.add_argument("--split", default="calib", help="split of --data to use (default: %(default)s)")
    p.add_argument("--open-loop-episodes", type=int, help="use only the first N episodes of the split")
    p.add_argument("--stride", type=int, help="steps between open-loop queries (default: the chunk length)")
    p.add_argument("--reference", help="full-precision policy for L1/cosine in the open-loop metrics")
    p.add_argument("--unnorm-key", help="dataset key in the checkpoint's statistics (if it holds several)")
    p.add_argument(
        "--threads", type=int, default=1, help="policy CPU threads, PyTorch or runtime (default: %(default)s)"
    )
    p.add_argument(
        "--baseline",
        type=Path,
        help="an earlier eval --json result (e.g. full precision) over the same --seed/--episodes/--tasks: "
        "report this policy's retention of its closed-loop success, with a paired bootstrap 95%% interval",
    )
    p.add_argument("--json", type=Path, help="write the full result here")
    p.add_argument("--plots", type=Path, help="write PNG plots into this directory (needs matplotlib)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _read_baseline(path: Path) -> dict:
    """The ``closed_loop`` section of an earlier ``eval --json`` result."""
    from omnimodel.errors import UsageError

    try:
        doc = json.loads(path.read_text())
    except OSError as e:
        raise UsageError(f"--baseline {path}: cannot read it ({e.strerror or e})") from e
    except ValueError as e:
        raise UsageError(f"--baseline {path}: not JSON ({e})") from e
    closed = doc.get("closed_loop") if isinstance(doc, dict) else None
    if not isinstance(closed, dict) or not isinstance(closed.get("tasks"), dict):
        raise UsageError(f"--baseline {path}: not an eval result with a closed-loop section")
    return closed


def _check_pairable(cfg, baseline: dict, path: Path) -> None:
    from omnimodel.errors import UsageError

    theirs = baseline.get("config", {})
    ours = {"tasks": list(cfg.tasks), "episodes_per_task": cfg.episodes_per_task, "seed": cfg.seed}
    for key, value in ours.items():
        if theirs.get(key) != value:
            raise UsageError(f"--baseline {path}: it ran {key} {theirs.get(key)!r}, this evaluation {value!r}; "
                             "retention needs the same episodes")


def _run(args: argparse.Namespace) -> int:
    import itertools

    from omnimodel.errors import UsageError
    from omnimodel.simbench.episodes import EpisodeDataset
    from omnimodel.simbench.evaluate import (
        ClosedLoopConfig,
        evaluate_closed_loop,
        evaluate_open_loop,
        format_result,
        make_result,
    )
    from omnimodel.simbench.confidence import paired_retention
    from omnimodel.simbench.policies import describe_policy, load_eval_policy
    from omnimodel.simbench.tasks import parse_tasks

    if args.no_closed_loop and args.data is None:
        raise UsageError("--no-closed-loop leaves nothing to do without --data")
    if args.episodes < 1 or args.threads < 1:
        raise UsageError("--episodes and --threads must be >= 1")
    baseline = _read_baseline(args.baseline) if args.baseline is not None else None
    if baseline is not None and args.no_closed_loop:
        raise UsageError("--baseline compares closed-loop success: drop --no-closed-loop")
    dataset = EpisodeDataset(args.data) if args.data is not None else None
    try:
        if args.tasks:
            tasks = parse_tasks(args.tasks)
        elif dataset is not None:
            tasks = parse_tasks(list(dataset.manifest.tasks))
        else:
            tasks = parse_tasks(None)
    except KeyError as e:
        raise UsageError(str(e).strip("'\"")) from e

    policy = load_eval_policy(args.policy, threads=args.threads, unnorm_key=args.unnorm_key, plugin=args.plugin)
    reference = None
    if args.reference:
        reference = load_eval_policy(args.reference, threads=args.threads, unnorm_key=args.unnorm_key)
    described = describe_policy(policy)
    image_size = args.image_size or described.get("image_size") or 84

    closed = None
    if not args.no_closed_loop:
        from omnimodel.simbench.sim import proprio_names_for  # the simulator (MuJoCo) only for the closed loop

        cfg = ClosedLoopConfig(
            tasks=tuple(t.name for t in tasks),
            episodes_per_task=args.episodes,
            seed=args.seed,
            max_steps=args.max_steps,
            execute_steps=args.execute_steps,
            image_size=int(image_size),
            proprio=proprio_names_for(described.get("proprio_dim")),
        )
        if baseline is not None:  # before the long run: a baseline over other seeds cannot be compared
            _check_pairable(cfg, baseline, args.baseline)
        closed = evaluate_closed_loop(policy, cfg, progress=not args.quiet)

    opened, source = None, None
    if dataset is not None:
        paths = dataset.split_paths(args.split)
        if args.open_loop_episodes is not None:
            paths = paths[: args.open_loop_episodes]
        episodes = dataset.episodes(args.split)
        if args.open_loop_episodes is not None:
            episodes = itertools.islice(episodes, args.open_loop_episodes)
        opened = evaluate_open_loop(
            policy, episodes, reference=reference, stride=args.stride, progress=not args.quiet, total=len(paths)
        )
        source = {"dataset": str(args.data), "split": args.split}

    result = make_result(policy, closed_loop=closed, open_loop=opened, reference=reference, open_loop_source=source)
    if baseline is not None:
        result["retention"] = {"baseline": str(args.baseline), **paired_retention(closed, baseline).to_json()}
    print(format_result(result))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
        print(f"result: {args.json}")
    if args.plots is not None:
        from omnimodel.simbench.plots import PlotsUnavailable, write_plots

        try:
            for path in write_plots(result, args.plots):
                print(f"plot: {path}")
        except PlotsUnavailable as e:
            print(f"omnimodel eval: warning: {e}", file=sys.stderr)
    return 0


COMMAND = Command(
    name="eval",
    help="closed-loop success in Meta-World and open-loop error on held-out episodes",
    add_arguments=_add_arguments,
    run=_run,
)
