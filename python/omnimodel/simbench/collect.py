"""Collect scripted-expert demonstrations into an episode dataset (train + held-out calib split).

    report = collect_demos("data/mw", CollectConfig(train_per_task=50, calib_per_task=10))

Seeds: episode ``i`` of a split uses env seed ``seed + SPLIT_SEED_OFFSETS[split] + i``; the offsets keep
train, calib and closed-loop evaluation layouts disjoint, and the same command reproduces the same files
(pixels included) on the same software stack. An episode the expert fails (no success within the
task's step budget) is skipped and its seed recorded in the manifest, so every stored episode is a
success, as in LIBERO's demonstrations; the next seed is tried instead.

Optional DART-style noise (``action_noise`` > 0): the executed action is the expert's plus Gaussian
noise, while the recorded action stays the expert's -- the policy then also sees how the expert
recovers from small deviations, which makes behaviour cloning more robust in closed loop. The noise
RNG is seeded from the episode seed.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from omnimodel.errors import UsageError

from .episodes import STATISTICS_FILE, DatasetManifest, Episode, save_episode, write_manifest
from .progress import progress_bar
from .statistics import compute_statistics, write_dataset_statistics
from .tasks import DEFAULT_DATASET_KEY, DEFAULT_TASKS, TaskSpec, parse_tasks

SPLIT_SEED_OFFSETS: dict[str, int] = {"train": 0, "calib": 1_000_000, "eval": 2_000_000}
SPLITS = ("train", "calib")
SOURCE = "metaworld-expert"


def split_seed(base_seed: int, split: str, index: int) -> int:
    return int(base_seed) + SPLIT_SEED_OFFSETS[split] + int(index)


# The proprio layouts a collection can record (names of ``sim`` constants): the hand alone, the hand and the
# task's goal position, or those and the task object's position; each appends to the one before.
STATE_LAYOUTS: dict[str, str] = {"hand": "PROPRIO_NAMES", "goal": "GOAL_PROPRIO_NAMES",
                                 "object": "OBJECT_PROPRIO_NAMES"}


@dataclass(frozen=True)
class CollectConfig:
    tasks: tuple[str, ...] = DEFAULT_TASKS
    train_per_task: int = 50
    calib_per_task: int = 10
    seed: int = 0
    image_size: int = 84
    action_noise: float = 0.0  # std of the DART noise on the executed action (0 = none)
    dataset_key: str = DEFAULT_DATASET_KEY
    max_steps: int | None = None  # per episode; None = each task's own budget
    state: str = "hand"  # proprio layout: one of STATE_LAYOUTS

    def proprio_names(self) -> tuple[str, ...]:
        from . import sim  # mujoco loads with it, so only when a collection runs

        return getattr(sim, STATE_LAYOUTS[self.state])


@dataclass
class SplitStats:
    task: str
    split: str
    kept: int = 0
    attempts: int = 0
    failed_seeds: list[int] = field(default_factory=list)
    steps: int = 0
    seconds: float = 0.0

    @property
    def expert_success_rate(self) -> float:
        return self.kept / self.attempts if self.attempts else 0.0


@dataclass
class CollectReport:
    root: Path
    stats: list[SplitStats]
    seconds: float

    def summary_lines(self) -> list[str]:
        lines = [f"{'task':<22} {'split':<6} {'kept':>5} {'tries':>6} {'expert ok':>9} {'steps/ep':>9} {'s/ep':>6}"]
        for s in self.stats:
            per = s.seconds / max(s.attempts, 1)
            lines.append(
                f"{s.task:<22} {s.split:<6} {s.kept:>5} {s.attempts:>6} {s.expert_success_rate:>9.0%} "
                f"{s.steps / max(s.kept, 1):>9.1f} {per:>6.2f}"
            )
        total = sum(s.steps for s in self.stats)
        lines.append(f"{total} steps in {self.seconds:.1f} s ({1e3 * self.seconds / max(total, 1):.1f} ms/step)")
        return lines


def record_expert_episode(sim: Any, expert: Any, seed: int, *, max_steps: int, action_noise: float = 0.0) -> Episode:
    """Run the expert from ``sim.reset(seed)`` until success or ``max_steps``; ``Episode.success`` says which."""
    from .sim import ACTION_NAMES

    rng = np.random.default_rng([int(seed), 1]) if action_noise > 0 else None
    obs = sim.reset(seed)
    images, proprio, actions, states = [], [], [], []
    success = False
    for _ in range(max_steps):
        action = expert(obs.state)
        images.append(np.stack(obs.images))
        proprio.append(obs.proprio)
        actions.append(action)
        states.append(obs.state)
        executed = action if rng is None else np.clip(action + rng.normal(0.0, action_noise, action.shape), -1, 1)
        step = sim.step(executed)
        obs = step.observation
        if step.success:
            success = True
            break
    return Episode(
        instruction=sim.task.instruction,
        images=np.stack(images),
        proprio=np.stack(proprio),
        actions=np.stack(actions),
        camera_names=sim.config.camera_names,
        task=sim.task.name,
        seed=int(seed),
        success=success,
        source=SOURCE,
        proprio_names=sim.config.proprio,
        action_names=ACTION_NAMES,
        states=np.stack(states),
        info={"env_name": sim.task.env_name, "action_noise": float(action_noise)},
    )


def _prepare_output(root: Path, overwrite: bool) -> None:
    if root.exists() and any(root.iterdir()):
        if not overwrite:
            raise UsageError(f"{root}: not empty; pass --overwrite to replace a dataset there")
        if not (root / "dataset.json").exists() and not any((root / s).is_dir() for s in SPLITS):
            raise UsageError(f"{root}: not empty and not an episode dataset; refusing to overwrite it")
        for split in SPLITS:
            shutil.rmtree(root / split, ignore_errors=True)
        for name in ("dataset.json", STATISTICS_FILE):
            (root / name).unlink(missing_ok=True)
    root.mkdir(parents=True, exist_ok=True)


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("metaworld", "mujoco", "numpy"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "unknown"
    return out


def collect_demos(
    out_dir: str | os.PathLike[str],
    config: CollectConfig | None = None,
    *,
    progress: bool = True,
    overwrite: bool = False,
) -> CollectReport:
    """Collect ``config``'s splits into ``out_dir``; write statistics (train split) and the manifest last."""
    from .experts import ScriptedExpert
    from .sim import ACTION_NAMES, MetaWorldSim, SimConfig

    cfg = config or CollectConfig()
    if "metaworld" not in cfg.dataset_key.lower():
        raise UsageError(
            f"dataset key '{cfg.dataset_key}' must contain 'metaworld' (the OFT loader picks the platform by it)"
        )
    if cfg.train_per_task < 0 or cfg.calib_per_task < 0 or cfg.train_per_task + cfg.calib_per_task == 0:
        raise UsageError("ask for at least one episode (train_per_task + calib_per_task >= 1)")
    if cfg.state not in STATE_LAYOUTS:
        raise UsageError(f"unknown state layout '{cfg.state}' (one of {', '.join(STATE_LAYOUTS)})")
    tasks: tuple[TaskSpec, ...] = parse_tasks(cfg.tasks)
    root = Path(out_dir)
    _prepare_output(root, overwrite)
    sim_cfg = SimConfig(image_size=cfg.image_size, proprio=cfg.proprio_names())
    wanted = {"train": cfg.train_per_task, "calib": cfg.calib_per_task}
    splits: dict[str, list[str]] = {s: [] for s in SPLITS if wanted[s] > 0}
    all_stats: list[SplitStats] = []
    render_backend = ""
    t_start = time.perf_counter()
    total = sum(wanted.values()) * len(tasks)
    with progress_bar(total, "collect", enabled=progress) as bar:
        for task in tasks:
            max_steps = cfg.max_steps or task.max_steps
            expert = ScriptedExpert(task)
            with MetaWorldSim(task, sim_cfg) as sim:
                render_backend = sim.render_backend
                for split, n in wanted.items():
                    if n == 0:
                        continue
                    st = SplitStats(task.name, split)
                    max_attempts = 2 * n + 10
                    t0 = time.perf_counter()
                    while st.kept < n:
                        if st.attempts >= max_attempts:
                            raise RuntimeError(
                                f"{task.name}/{split}: the expert succeeded only {st.kept} times in {st.attempts} "
                                f"episodes (failed seeds {st.failed_seeds[:10]}...)"
                            )
                        seed = split_seed(cfg.seed, split, st.attempts)
                        st.attempts += 1
                        ep = record_expert_episode(
                            sim, expert, seed, max_steps=max_steps, action_noise=cfg.action_noise
                        )
                        if not ep.success:
                            st.failed_seeds.append(seed)
                            continue
                        rel = f"{split}/{task.name}-{seed:07d}.npz"
                        save_episode(root / rel, ep)
                        splits[split].append(rel)
                        st.kept += 1
                        st.steps += ep.num_steps
                        bar.update(1)
                        bar.set_postfix_str(f"{task.name}/{split} {ep.num_steps} steps")
                    st.seconds = time.perf_counter() - t0
                    all_stats.append(st)

    # Statistics from the training split only (the calib split is held out), as OFT does for its data.
    from .episodes import load_episode

    stats_split = "train" if "train" in splits else "calib"
    entry = compute_statistics(load_episode(root / rel, images=False) for rel in splits[stats_split])
    write_dataset_statistics(root / STATISTICS_FILE, cfg.dataset_key, entry)
    seconds = time.perf_counter() - t_start
    manifest = DatasetManifest(
        dataset_key=cfg.dataset_key,
        camera_names=sim_cfg.camera_names,
        image_size=(cfg.image_size, cfg.image_size),
        proprio_names=sim_cfg.proprio,
        action_names=ACTION_NAMES,
        tasks={t.name: t.instruction for t in tasks},
        splits=splits,
        created_by={
            "tool": "omnimodel collect-demos",
            "config": {**asdict(cfg), "tasks": [t.name for t in tasks]},
            "seed_offsets": SPLIT_SEED_OFFSETS,
            "statistics_from": stats_split,
            "render_backend": render_backend,
            "versions": _versions(),
            "expert": {
                f"{s.task}/{s.split}": {"kept": s.kept, "attempts": s.attempts, "failed_seeds": s.failed_seeds}
                for s in all_stats
            },
            "seconds": round(seconds, 2),
        },
    )
    write_manifest(root, manifest)
    return CollectReport(root=root, stats=all_stats, seconds=seconds)


__all__ = [
    "SPLIT_SEED_OFFSETS",
    "SPLITS",
    "STATE_LAYOUTS",
    "DEFAULT_DATASET_KEY",
    "split_seed",
    "CollectConfig",
    "SplitStats",
    "CollectReport",
    "record_expert_episode",
    "collect_demos",
]
