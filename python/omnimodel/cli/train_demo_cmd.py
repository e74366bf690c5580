"""`omnimodel train-demo DATA --out OUT`: train the small demo policy on collected demonstrations.

    omnimodel collect-demos data/mw --image-size 56 --action-noise 0.1
    omnimodel train-demo data/mw --out runs/demo                  # -> runs/demo/final (a checkpoint)
    omnimodel train-demo data/mw --out runs/other --arch NAME     # another registered family
    omnimodel eval --policy runs/demo/final --episodes 10

``--init CKPT`` continues from an earlier run's checkpoint (a second, low-LR stage) instead. A dataset
whose proprio state appends values to the checkpoint's (``collect-demos --object-state`` data for a
``--goal-state`` policy) extends the checkpoint in ``OUT/init`` first: the new inputs get zero weights, so
training starts from exactly the earlier policy (for a family whose trainer adapter has ``extend_state``).

Writes ``OUT/init`` (the random initial checkpoint of ``--arch``: the family's miniature layout, a tokenizer trained on the dataset's
instructions, the dataset's statistics), ``OUT/checkpoints/step-NNNNNN`` every ``--checkpoint-every``
steps, ``OUT/final`` (the trained policy, in the real checkpoint layout of ``simbench.train``'s
architecture, which ``omnimodel convert`` and ``omnimodel eval`` read) and ``OUT/train_report.json``. Seeds are fixed: the same command on the same data
with the same ``--threads`` writes the same weights, unless ``--time-limit`` stops it early.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from omnimodel.cli.command import Command


def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("data", type=Path, help="episode dataset from `omnimodel collect-demos` (its train split)")
    p.add_argument("--out", type=Path, required=True, help="run directory to create")
    # checked in _run: listing the registry here would import every architecture to build the parser
    p.add_argument("--arch", help="policy family to train, a registered architecture name (default: the "
                   "registry's default demo family, that of the first built-in demo policy)")
    p.add_argument("--size", default="tiny", help="model size preset of the family (default: %(default)s; an "
                   "unknown one lists the family's presets)")
    p.add_argument(
        "--init",
        type=Path,
        help="continue from this trained checkpoint (e.g. OUT/final of an earlier run) instead of a random one",
    )
    p.add_argument("--steps", type=int, default=5000, help="optimizer steps (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=32, help="samples per step (default: %(default)s)")
    p.add_argument("--lr", type=float, default=3e-4, help="peak learning rate (default: %(default)s)")
    p.add_argument(
        "--schedule", default="cosine", choices=("cosine", "constant"), help="LR schedule (default: %(default)s)"
    )
    p.add_argument("--warmup", type=int, default=200, help="linear LR warm-up steps (default: %(default)s)")
    p.add_argument(
        "--shift", type=int, default=4, help="random-shift augmentation, max pixels each way; 0: off (default: 4)"
    )
    p.add_argument("--grad-clip", type=float, default=1.0, help="gradient-norm clip; 0: off (default: 1.0)")
    p.add_argument("--seed", type=int, default=0, help="weight init and batch sampling seed (default: 0)")
    p.add_argument("--ema", type=float, default=0.0, metavar="DECAY",
                   help="keep an exponential moving average of the weights with this decay (e.g. 0.998) and save "
                   "it as the checkpoints and the final policy; 0: off (default)")
    p.add_argument("--ema-warmup", action="store_true",
                   help="ramp the EMA decay up from 0.1 over the first ~10/(1-DECAY) steps, so that mid-run "
                   "checkpoints of a run from scratch are not blended with its random start (needs --ema)")
    p.add_argument("--task-weight", action="append", default=[], metavar="TASK=W",
                   help="give TASK's batches W times the probability of a task not named (repeatable; default: "
                   "every task equally likely)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default: %(default)s)")
    p.add_argument(
        "--time-limit", type=float, help="stop after this many minutes of training (then not reproducible)"
    )
    p.add_argument(
        "--checkpoint-every", type=int, default=1000, help="save OUT/checkpoints/step-N every N steps; 0: off"
    )
    p.add_argument("--log-every", type=int, default=50, help="print the loss every N steps (default: %(default)s)")
    p.add_argument("--overwrite", action="store_true", help="replace a run already in OUT")


def _task_weights(specs: list[str]) -> dict[str, float]:
    from omnimodel.errors import UsageError

    weights: dict[str, float] = {}
    for spec in specs:
        task, sep, value = spec.partition("=")
        try:
            w = float(value)
        except ValueError:
            w = float("nan")
        if not sep or not task or not (w >= 0.0 and w < float("inf")):
            raise UsageError(f"--task-weight {spec!r}: expected TASK=W with W a number >= 0")
        weights[task] = w
    return weights


def _run(args: argparse.Namespace) -> int:
    from omnimodel.errors import UsageError
    from omnimodel.simbench.episodes import read_manifest
    from omnimodel.arch import registry
    from omnimodel.simbench.train import checkpoint_architecture, init_checkpoint, save_trained, train

    if args.steps < 1 or args.batch_size < 1 or args.threads < 1:
        raise UsageError("--steps, --batch-size and --threads must be >= 1")
    if args.shift < 0 or args.warmup < 0 or args.checkpoint_every < 0:
        raise UsageError("--shift, --warmup and --checkpoint-every must be >= 0")
    if not 0.0 <= args.ema < 1.0:
        raise UsageError(f"--ema {args.ema}: the decay must lie in [0, 1)")
    if args.ema_warmup and args.ema == 0.0:
        raise UsageError("--ema-warmup ramps the weight average's decay: give --ema DECAY as well")
    task_weights = _task_weights(args.task_weight)
    try:
        manifest = read_manifest(args.data)
    except Exception as e:  # noqa: BLE001  missing/garbled manifest: one clear line, not a traceback
        raise UsageError(f"{args.data}: not an episode dataset ({e})") from e
    if "train" not in manifest.splits or not manifest.splits["train"]:
        raise UsageError(f"{args.data}: the dataset has no train split")
    unknown = sorted(set(task_weights) - set(manifest.tasks))
    if unknown:
        raise UsageError(f"--task-weight: {', '.join(unknown)} not in the dataset (it has "
                         f"{', '.join(sorted(manifest.tasks))})")
    try:
        family = registry.get(args.arch) if args.arch else registry.demo_family()
        sizes = family.training().sizes
    except registry.ArchitectureError as e:
        raise UsageError(str(e)) from e
    args.arch = family.name
    if args.size not in sizes:
        raise UsageError(f"--size {args.size!r}: {args.arch} has the presets {', '.join(sorted(sizes))}")
    out: Path = args.out
    if out.exists() and any(out.iterdir()):
        if not args.overwrite:
            raise UsageError(f"{out} is not empty (pass --overwrite to replace it)")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)

    if args.init is not None:
        # A second stage (more steps, lower LR) on top of an earlier run; the checkpoint must be one this
        # command wrote for the same dataset (its statistics and tokenizer are reused as they are).
        if not (args.init / "config.json").is_file():
            raise UsageError(f"--init {args.init}: not a checkpoint directory (no config.json)")
        init = args.init
        print(f"continuing from: {init}", flush=True)
        try:
            extend = getattr(checkpoint_architecture(init).training(), "extend_state", None)
        except ValueError as e:
            raise UsageError(f"--init: {e}") from e
        if extend is not None:  # a dataset with more state values than the checkpoint takes (e.g. --object-state)
            try:
                init = extend(init, args.data, out / "init")
            except UsageError:
                shutil.rmtree(out, ignore_errors=True)  # created above, still empty: leave nothing behind
                raise
    else:
        size = sizes[args.size]
        init = init_checkpoint(out / "init", size, args.data, seed=args.seed)
        print(f"init checkpoint: {init} ({args.arch} {args.size}; tasks {', '.join(sorted(manifest.tasks))})", flush=True)

    def on_checkpoint(policy, step: int) -> None:
        path = save_trained(policy, init, out / "checkpoints" / f"step-{step:06d}", step=step)
        print(f"checkpoint: {path}", flush=True)

    t0 = time.time()
    report = train(
        init,
        args.data,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        threads=args.threads,
        seed=args.seed,
        out_dir=out / "final",
        log_every=args.log_every,
        lr_schedule=args.schedule,
        warmup_steps=args.warmup,
        shift=args.shift,
        grad_clip=args.grad_clip,
        time_limit_s=None if args.time_limit is None else 60.0 * args.time_limit,
        checkpoint_every=args.checkpoint_every,
        on_checkpoint=on_checkpoint,
        ema_decay=args.ema,
        ema_warmup=args.ema_warmup,
        task_weights=task_weights or None,
    )
    wall = time.time() - t0
    summary = {
        "command": "train-demo",
        "data": str(args.data),
        "arch": args.arch,
        "size": args.size,
        "init": None if args.init is None else str(args.init),
        "options": {
            k: getattr(args, k)
            for k in ("steps", "batch_size", "lr", "schedule", "warmup", "shift", "grad_clip", "seed", "threads",
                      "ema", "ema_warmup")
        },
        "task_weights": task_weights,
        "time_limit_min": args.time_limit,
        "steps_done": report.steps,
        "stopped_early": report.stopped_early,
        "parameters": report.parameters,
        "wall_seconds": round(wall, 1),
        "seconds_per_step": round(report.seconds_per_step, 4),
        "first_loss": report.first_loss,
        "last_loss": report.last_loss,
        "loss_every_50": [round(float(sum(report.losses[i : i + 50]) / len(report.losses[i : i + 50])), 5)
                          for i in range(0, len(report.losses), 50)],
    }
    (out / "train_report.json").write_text(json.dumps(summary, indent=2) + "\n")
    note = " (stopped by --time-limit: not reproducible)" if report.stopped_early else ""
    print(
        f"trained {report.steps} steps in {wall / 60:.1f} min{note}; loss {report.first_loss:.3f} -> "
        f"{report.last_loss:.3f}; {report.parameters:,} parameters"
    )
    print(f"policy: {out / 'final'} (omnimodel eval --policy {out / 'final'})")
    return 0


COMMAND = Command(
    name="train-demo",
    help="train the small demo policy on collected Meta-World demonstrations",
    add_arguments=_add_arguments,
    run=_run,
)
