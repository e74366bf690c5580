"""Calibration data as users have it: which format a ``--calib`` path is, its cameras, state and action
fields, and which of its episodes calibrate.

Formats, detected from what is on disk:

    format              detected by                                         read by (omnimodel.simbench)
    omnimodel-episodes  PATH/dataset.json                                   episodes.EpisodeDataset
    lerobot             PATH/meta/info.json, codebase_version v2.x or v3.0  calib_loaders.LeRobotDataset
    libero-hdf5         PATH is a *.hdf5 file, or a folder holding *.hdf5   calib_loaders.LiberoHDF5

Opening a source reads metadata only (the manifest, ``info.json`` and the episode index, the HDF5
group names and shapes); pixels are read one episode at a time by ``load``.

Field mapping (``CalibDataOptions`` overrides each default):

* cameras, in the order the policy takes them: every camera of the data, third-person views first and
  wrist views (names containing wrist / hand / gripper) last; LIBERO HDF5: ``agentview_rgb`` then
  ``eye_in_hand_rgb``; LeRobot: every RGB image/video feature (depth maps left out);
* proprio: the episode format's ``proprio``; LeRobot's first of ``observation.state``, ``state``, ...;
  LIBERO's end-effector position + axis-angle + gripper joints (OFT's 8-D LIBERO state);
* actions: ``actions`` / LeRobot's ``action`` or ``actions``; instruction: the episode's task text.

Episodes: ``episodes`` of them; all, in the data's order, when there are no more than that, else drawn
round-robin over the task descriptions (sorted) with a seeded order inside each task, so every task is
represented and the same data, count and seed always give the same episodes.
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from omnimodel.errors import OmnimodelError
from omnimodel.simbench.calib_loaders import (
    CalibDataError,
    LeRobotDataset,
    LiberoHDF5,
    select_per_task,
    third_person_first,
)
from omnimodel.simbench.episodes import Episode, EpisodeDataset, EpisodeFormatError, load_episode

FORMATS = ("omnimodel-episodes", "lerobot", "libero-hdf5")
HDF5_SUFFIXES = (".hdf5", ".h5")
DEFAULT_EPISODES = 16


@dataclass(frozen=True)
class CalibDataOptions:
    """How to read a calibration source (the CLI's ``--calib-*`` options)."""

    cameras: tuple[str, ...] | None = None  # camera keys in the policy's order; None: the defaults above
    state_key: str | None = None  # LeRobot: the state feature; None: the first of the usual names
    action_key: str | None = None  # LeRobot: the action feature
    split: str | None = None  # episode format: a split (default 'calib', else the first); LeRobot: info.json's
    episodes: int = DEFAULT_EPISODES
    seed: int = 0


@dataclass(frozen=True)
class CalibDataInfo:
    """What a calibration source holds, from its metadata (no pixels read)."""

    path: Path
    format: str  # one of FORMATS, plus the LeRobot version ("lerobot v3.0")
    names: tuple[str, ...]  # what the data calls itself (folder and file stems): to match a statistics key
    dataset_key: str | None  # the statistics key the data declares (omnimodel episodes only)
    cameras: tuple[str, ...]  # chosen, in the order fed to the policy
    all_cameras: tuple[str, ...]
    state_key: str
    proprio_dim: int | None  # None: the metadata does not say; the first episode will
    action_key: str
    action_dim: int | None
    num_episodes: int
    tasks: tuple[str, ...]

    def describe(self) -> str:
        dims = (f"proprio '{self.state_key}' {_dim(self.proprio_dim)}, "
                f"actions '{self.action_key}' {_dim(self.action_dim)}")
        return (f"{self.path} ({self.format}): {self.num_episodes} episodes, {len(self.tasks)} task(s); "
                f"cameras {', '.join(self.cameras)}; {dims}")


def _dim(d: int | None) -> str:
    return f"{d}-D" if d is not None else "(dims from the data)"


class CalibSource:
    """One opened calibration source: metadata in ``info``, episodes on demand."""

    info: CalibDataInfo

    def candidates(self) -> list[tuple[Hashable, str]]:
        """(episode key, task description) of every usable episode, in the data's order."""
        raise NotImplementedError

    def load(self, key: Hashable) -> Episode:
        raise NotImplementedError

    def select(self, n: int, seed: int = 0) -> list[Hashable]:
        return select_episodes(self.candidates(), n, seed)


def select_episodes(candidates: Sequence[tuple[Hashable, str]], n: int, seed: int = 0) -> list[Hashable]:
    """``n`` episode keys: all (in order) when there are no more, else round-robin over the tasks."""
    if n < 1:
        raise CalibDataError(f"the number of calibration episodes must be >= 1, got {n}")
    if len(candidates) <= n:
        return [k for k, _ in candidates]
    by_task: dict[str, list[Hashable]] = {}
    for key, task in select_per_task(candidates, len(candidates), seed):  # every episode, seeded per task
        by_task.setdefault(task, []).append(key)
    queues = [by_task[t] for t in sorted(by_task)]
    out: list[Hashable] = []
    depth = 0
    while len(out) < n:
        out += [q[depth] for q in queues if depth < len(q)][: n - len(out)]
        depth += 1
    return out


def detect_format(path: str | os.PathLike[str]) -> str:
    """Which of FORMATS ``path`` is; a one-line error naming the three when it is none of them."""
    p = Path(path)
    if not p.exists():
        raise CalibDataError(f"{p}: calibration data not found")
    if p.is_file():
        if p.suffix.lower() in HDF5_SUFFIXES:
            return "libero-hdf5"
    elif (p / "dataset.json").is_file():
        return "omnimodel-episodes"
    elif (p / "meta" / "info.json").is_file():
        return "lerobot"
    elif any(q.suffix.lower() in HDF5_SUFFIXES for q in p.iterdir() if q.is_file()):
        return "libero-hdf5"
    raise CalibDataError(
        f"{p}: not calibration data omnimodel reads: expected an omnimodel episode dataset (dataset.json), a "
        "LeRobot v2.x/v3.0 dataset (meta/info.json) or LIBERO *_demo.hdf5 file(s)"
    )


def open_calib_data(path: str | os.PathLike[str], options: CalibDataOptions = CalibDataOptions()) -> CalibSource:
    """Detect the format of ``path`` and open it (metadata only)."""
    fmt = detect_format(path)
    opener = {"omnimodel-episodes": _EpisodeSource, "lerobot": _LeRobotSource, "libero-hdf5": _LiberoSource}[fmt]
    try:
        return opener(Path(path), options)
    except (EpisodeFormatError, OmnimodelError):
        raise
    except (OSError, ValueError, KeyError, TypeError) as e:  # a damaged file the readers did not anticipate
        raise CalibDataError(f"{path}: cannot read {fmt} calibration data ({' '.join(str(e).split())})") from e


def _names(path: Path) -> tuple[str, ...]:
    """The folder's and files' own names, and their parents' (``libero_10/KITCHEN_..._demo.hdf5``)."""
    stems = [path.stem if path.is_file() else path.name, path.parent.name]
    return tuple(dict.fromkeys(s for s in stems if s))


def _check_unused(options: CalibDataOptions, fmt: str, *fields: str) -> None:
    for name in fields:
        if getattr(options, name) is not None:
            flag = {"state_key": "--calib-state", "action_key": "--calib-action", "split": "--calib-split"}[name]
            raise CalibDataError(f"{flag} does not apply to {fmt} data")


def _choose_cameras(requested: tuple[str, ...] | None, default: Sequence[str], available: Sequence[str],
                    where: Path) -> tuple[str, ...]:
    cams = tuple(requested) if requested is not None else tuple(default)
    for c in cams:
        if c not in available:
            raise CalibDataError(f"{where}: no camera '{c}' (--calib-cameras); cameras: {', '.join(available)}")
    if len(set(cams)) != len(cams):
        raise CalibDataError(f"{where}: --calib-cameras names a camera twice ({', '.join(cams)})")
    return cams


class _EpisodeSource(CalibSource):
    def __init__(self, root: Path, options: CalibDataOptions) -> None:
        _check_unused(options, "omnimodel episode", "state_key", "action_key")
        self.dataset = EpisodeDataset(root)
        m = self.dataset.manifest
        splits = list(m.splits)
        split = options.split or ("calib" if "calib" in splits else splits[0] if splits else None)
        if split is None:
            raise CalibDataError(f"{root}: the dataset has no splits")
        self.paths = self.dataset.split_paths(split)  # names the splits when this one is missing
        if not self.paths:
            raise CalibDataError(f"{root}: split '{split}' has no episodes")
        self.all_cameras = tuple(m.camera_names)
        cameras = _choose_cameras(options.cameras, self.all_cameras, self.all_cameras, root)
        self.camera_index = [self.all_cameras.index(c) for c in cameras]
        self.info = CalibDataInfo(
            path=root, format="omnimodel-episodes", names=(m.dataset_key, *_names(root)), dataset_key=m.dataset_key,
            cameras=cameras, all_cameras=self.all_cameras, state_key="proprio",
            proprio_dim=len(m.proprio_names) or None, action_key="actions", action_dim=len(m.action_names) or None,
            num_episodes=len(self.paths), tasks=tuple(sorted(set(m.tasks.values()))),
        )

    def candidates(self) -> list[tuple[Hashable, str]]:
        # The task of each file is in its metadata; images=False leaves the pixels compressed.
        return [(p, load_episode(p, images=False).instruction) for p in self.paths]

    def select(self, n: int, seed: int = 0) -> list[Hashable]:
        if 1 <= n and len(self.paths) <= n:  # all of them: no need to read every file's task
            return list(self.paths)
        return super().select(n, seed)

    def load(self, key: Hashable) -> Episode:
        ep = load_episode(key)
        if ep.camera_names != self.all_cameras:
            raise CalibDataError(f"{key}: cameras {list(ep.camera_names)}, the manifest says {list(self.all_cameras)}")
        if self.camera_index != list(range(len(self.all_cameras))):
            ep = replace(ep, images=ep.images[:, self.camera_index],
                         camera_names=tuple(self.all_cameras[i] for i in self.camera_index))
        return ep


class _LeRobotSource(CalibSource):
    def __init__(self, root: Path, options: CalibDataOptions) -> None:
        self.dataset = LeRobotDataset(root, image_keys=options.cameras, state_key=options.state_key,
                                      action_key=options.action_key)
        ds = self.dataset
        eps = ds.episode_tasks
        if options.split is not None:
            keep = ds.split_episodes(options.split)
            eps = [(i, t) for i, t in eps if i in keep]
        if not eps:
            raise CalibDataError(f"{root}: no episodes" + (f" in split '{options.split}'" if options.split else ""))
        self.eps = eps
        self.info = CalibDataInfo(
            path=root, format=f"lerobot {ds.version}", names=_names(root), dataset_key=None,
            cameras=ds.image_keys, all_cameras=ds.cameras, state_key=ds.state_key,
            proprio_dim=ds.feature_dim(ds.state_key), action_key=ds.action_key,
            action_dim=ds.feature_dim(ds.action_key), num_episodes=len(eps),
            tasks=tuple(sorted({t for _, t in eps})),
        )

    def candidates(self) -> list[tuple[Hashable, str]]:
        return list(self.eps)

    def load(self, key: Hashable) -> Episode:
        return self.dataset.load(int(key))


class _LiberoSource(CalibSource):
    def __init__(self, path: Path, options: CalibDataOptions) -> None:
        _check_unused(options, "LIBERO HDF5", "state_key", "action_key", "split")
        self.data = LiberoHDF5(path, cameras=options.cameras)
        d = self.data
        eps = d.episode_tasks
        self.info = CalibDataInfo(
            path=path, format="libero-hdf5", names=_names(path), dataset_key=None, cameras=d.cameras,
            all_cameras=third_person_first(d.all_cameras), state_key="ee_states/ee_pos+ee_ori + gripper_states",
            proprio_dim=d.proprio_dim, action_key="actions", action_dim=d.action_dim, num_episodes=len(eps),
            tasks=tuple(sorted({t for _, t in eps})),
        )

    def candidates(self) -> list[tuple[Hashable, str]]:
        return self.data.episode_tasks

    def load(self, key: Any) -> Episode:
        return self.data.load(key)


__all__ = [
    "DEFAULT_EPISODES",
    "FORMATS",
    "CalibDataError",
    "CalibDataInfo",
    "CalibDataOptions",
    "CalibSource",
    "detect_format",
    "open_calib_data",
    "select_episodes",
]
