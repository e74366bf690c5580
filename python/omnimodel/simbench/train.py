"""Train a small demo policy of any registered family on collected episodes (``omnimodel train-demo``).

The loop here is the family-independent part: AdamW, the LR schedule (linear warm-up + cosine decay, or
constant), gradient-norm clipping, a wall-clock limit, periodic checkpoints, fixed seeds. What is the
family's comes from its trainer adapter (``Architecture.training()``, e.g. ``arch/openvla_oft/training.py``,
``arch/pi0/training.py``): the size presets, the initial checkpoint in the family's real layout with the
dataset's statistics and a tokenizer that knows its instructions, the training samples and batches
(random-shift augmentation, ``simbench.augment``), the loss (OFT: L1 on the normalised chunk; pi0/pi0.5:
flow matching), and writing trained weights back in the checkpoint layout.

The family is the checkpoint's (its config.json, ``registry.for_config``). Same arguments (and
``threads``) -> same weights, unless ``time_limit_s`` cuts training short.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from omnimodel.arch.openvla_oft.training import SIZES, ChunkSamples, ModelSize  # OpenVLA-OFT's (compatibility)
from omnimodel.arch.registry import Architecture, for_config, for_policy, get

from .augment import random_shift
from .episodes import EpisodeDataset
from .weight_average import WeightAverage


def checkpoint_architecture(checkpoint_dir: str | os.PathLike[str]) -> Architecture:
    """The registered family of a checkpoint directory, from its config.json."""
    config = Path(checkpoint_dir) / "config.json"
    try:
        parsed = json.loads(config.read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"{config}: cannot read it ({' '.join(str(e).split())})") from e
    if not isinstance(parsed, dict):
        raise ValueError(f"{config}: not a JSON object")
    return for_config(parsed, str(config))


def trainer_for(size: Any) -> Any:
    """The trainer adapter of the family whose size preset ``size`` is."""
    return get(size.arch).training()


def init_checkpoint(out_dir: str | os.PathLike[str], size: Any, dataset_root: str | os.PathLike[str],
                    seed: int = 0) -> Path:
    """A fresh (randomly initialised) checkpoint of ``size`` (a family's size preset) whose statistics are
    the dataset's and whose tokenizer knows the dataset's instructions."""
    return trainer_for(size).init_checkpoint(out_dir, size, dataset_root, seed)


def save_trained(policy: Any, init_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str], *, step: int) -> Path:
    """The policy's weights in its family's checkpoint layout, the non-weight files from ``init_dir``."""
    return for_policy(policy).training().save_trained(policy, init_dir, out_dir, step=step)


def lr_at(step: int, *, lr: float, steps: int, schedule: str, warmup: int, final_fraction: float = 0.1) -> float:
    """Learning rate of (0-based) ``step``: ``constant``, or ``cosine`` = linear warm-up over ``warmup``
    steps, then cosine decay to ``final_fraction * lr`` at the last step."""
    if schedule == "constant":
        return lr
    if schedule != "cosine":
        raise ValueError(f"unknown LR schedule '{schedule}' (constant, cosine)")
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup - 1)
    return lr * (final_fraction + (1.0 - final_fraction) * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress))))


@dataclass
class TrainReport:
    steps: int
    batch_size: int
    parameters: int
    seconds: float
    seconds_per_step: float
    first_loss: float
    last_loss: float
    losses: list[float]
    stopped_early: bool = False  # the wall-clock limit ended training before ``steps``


def train(
    checkpoint_dir: str | os.PathLike[str],
    dataset_root: str | os.PathLike[str],
    *,
    steps: int,
    batch_size: int = 32,
    lr: float = 3e-4,
    threads: int = 1,
    seed: int = 0,
    out_dir: str | os.PathLike[str] | None = None,
    log_every: int = 0,
    lr_schedule: str = "constant",
    warmup_steps: int = 0,
    shift: int = 0,
    grad_clip: float = 0.0,
    time_limit_s: float | None = None,
    checkpoint_every: int = 0,
    on_checkpoint: Callable[[Any, int], None] | None = None,
    ema_decay: float = 0.0,
    ema_warmup: bool = False,
    task_weights: dict[str, float] | None = None,
) -> TrainReport:
    """Train the checkpoint's model for ``steps`` steps (float32, CPU); save to ``out_dir`` if given.

    ``checkpoint_dir``: a checkpoint of any family with a trainer adapter (``init_checkpoint`` writes one).

    Same arguments (and ``threads``) -> same weights, unless ``time_limit_s`` cuts training short (then
    the LR schedule is cut too: it is laid out over ``steps``). Every ``checkpoint_every`` steps
    ``on_checkpoint(policy, step)`` is called (e.g. to save it).

    ``ema_decay`` > 0 keeps an exponential moving average of the weights (``weight_average``); checkpoints
    and the final policy are then the average; ``ema_warmup`` ramps its decay up from 0.1 (see
    ``WeightAverage``) so that mid-run checkpoints of a run from scratch are not blends with the random start. ``task_weights`` draws a batch's task with these relative
    weights (tasks not named weigh 1) instead of uniformly, to give a hard task more of the steps."""
    import torch

    trainer = checkpoint_architecture(checkpoint_dir).training()
    torch.set_num_threads(max(1, threads))
    torch.manual_seed(seed)
    policy = trainer.load(checkpoint_dir)
    model = policy.model.train()
    data = trainer.samples(EpisodeDataset(dataset_root), "train", policy)
    if task_weights:
        data.set_task_weights(task_weights)
    gen = torch.Generator().manual_seed(seed)  # the loss's own draws (flow matching's noise and t)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    average = WeightAverage(params, ema_decay, warmup=ema_warmup) if ema_decay > 0 else None
    rng = np.random.default_rng(seed)
    losses: list[float] = []
    step_seconds: list[float] = []
    stopped_early = False
    t0 = time.perf_counter()
    done = 0
    for step in range(steps):
        ts = time.perf_counter()
        step_lr = lr_at(step, lr=lr, steps=steps, schedule=lr_schedule, warmup=warmup_steps)
        for group in opt.param_groups:
            group["lr"] = step_lr
        loss = trainer.loss(policy, data.batch(rng, batch_size, policy, shift=shift), gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, grad_clip)
        opt.step()
        if average is not None:
            average.update()
        losses.append(float(loss.detach()))
        step_seconds.append(time.perf_counter() - ts)
        done = step + 1
        elapsed = time.perf_counter() - t0
        if log_every and done % log_every == 0:
            rate = elapsed / done
            print(
                f"step {done}/{steps} loss {np.mean(losses[-log_every:]):.4f} lr {step_lr:.2e} "
                f"{rate:.2f} s/step elapsed {elapsed / 60:.1f} min eta {(steps - done) * rate / 60:.1f} min",
                flush=True,
            )
        if checkpoint_every and on_checkpoint is not None and done % checkpoint_every == 0 and done < steps:
            model.eval()
            with average.applied() if average is not None else nullcontext():
                on_checkpoint(policy, done)
            model.train()
        if time_limit_s is not None and elapsed >= time_limit_s and done < steps:
            stopped_early = True
            print(f"wall-clock limit {time_limit_s:.0f} s reached after step {done}/{steps}", flush=True)
            break
    seconds = time.perf_counter() - t0
    model.eval()
    if average is not None:
        average.copy_to_model()
    if out_dir is not None:
        trainer.save_trained(policy, checkpoint_dir, out_dir, step=done)
    return TrainReport(
        steps=done,
        batch_size=batch_size,
        parameters=int(sum(p.numel() for p in params)),
        seconds=seconds,
        # the first step pays one-off allocation costs; the median of the rest is the steady rate
        seconds_per_step=float(np.median(step_seconds[1:] or step_seconds or [0.0])),
        first_loss=losses[0] if losses else float("nan"),
        last_loss=float(np.mean(losses[-10:])) if losses else float("nan"),
        losses=losses,
        stopped_early=stopped_early,
    )


def time_sizes(
    dataset_root: str | os.PathLike[str],
    work_dir: str | os.PathLike[str],
    *,
    sizes: list[str],
    arch: str = "openvla-oft",
    steps: int = 5,
    batch_size: int = 32,
    threads: int = 1,
) -> list[dict[str, Any]]:
    """Seconds per training step of each size (after one warm-up step), for budgeting."""
    rows = []
    for name in sizes:
        size = get(arch).training().sizes[name]
        ckpt = init_checkpoint(Path(work_dir) / f"init-{name}", size, dataset_root)
        rep = train(ckpt, dataset_root, steps=steps + 1, batch_size=batch_size, threads=threads)
        per_step = rep.seconds_per_step
        rows.append(
            {
                **asdict(size),
                "parameters": rep.parameters,
                "batch_size": batch_size,
                "threads": threads,
                "seconds_per_step": per_step,
                "steps_per_hour": int(3600 / per_step),
            }
        )
    return rows


__all__ = [
    "ModelSize",
    "SIZES",
    "ChunkSamples",
    "checkpoint_architecture",
    "init_checkpoint",
    "random_shift",
    "lr_at",
    "TrainReport",
    "train",
    "save_trained",
    "time_sizes",
    "trainer_for",
]
