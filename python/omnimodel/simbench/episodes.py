"""The episode format: what demonstrations, calibration data and held-out evaluation data are stored as.

One episode = one ``.npz`` file (``numpy.savez_compressed``; readable with ``np.load(path)`` alone, no
pickles). T steps, C cameras; step t is the observation the policy saw and the action then executed:

    key            dtype / shape          meaning
    images         uint8   (T, C, H, W, 3) RGB, camera order = camera_names (third-person first)
    proprio        float32 (T, P)          robot state (Meta-World: hand x, y, z in m, gripper opening 0..1)
    actions        float32 (T, A)          action executed after observing step t (Meta-World: dx, dy, dz, grip)
    instruction    str (0-d)               the language instruction, as given to the policy
    camera_names   str (C,)
    meta           str (0-d)               JSON object: format, version, task, seed, success, source,
                                           proprio_names, action_names, plus source-specific fields
    states         float64 (T, S)          optional: the simulator's privileged state (Meta-World: 39-D)

A dataset is a directory:

    dataset.json               manifest: format, version, dataset_key, camera/proprio/action names,
                               image size, tasks (name -> instruction), splits (name -> episode files,
                               relative paths), and how it was made
    dataset_statistics.json    OFT's schema, from the train split (see ``statistics.py``)
    <split>/<task>-<seed>.npz  one file per episode; splits used here: train, calib (held out)

Episodes are written atomically (temporary file, then rename), so a crashed collection never leaves a
truncated episode behind, and ``dataset.json`` is written last.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from omnimodel.errors import OmnimodelError

EPISODE_FORMAT = "omnimodel-episode"
DATASET_FORMAT = "omnimodel-episodes"
FORMAT_VERSION = 1
MANIFEST_FILE = "dataset.json"
STATISTICS_FILE = "dataset_statistics.json"
_REQUIRED_KEYS = ("images", "proprio", "actions", "instruction", "camera_names", "meta")


class EpisodeFormatError(OmnimodelError, ValueError):
    """A file or array does not follow the episode format; the message names the file and the field."""


@dataclass
class Episode:
    instruction: str
    images: np.ndarray  # uint8 (T, C, H, W, 3)
    proprio: np.ndarray  # float32 (T, P)
    actions: np.ndarray  # float32 (T, A)
    camera_names: tuple[str, ...]
    task: str = ""
    seed: int | None = None
    success: bool | None = None
    source: str = ""  # "metaworld-expert", "lerobot", "libero-hdf5", ...
    proprio_names: tuple[str, ...] = ()
    action_names: tuple[str, ...] = ()
    states: np.ndarray | None = None  # float64 (T, S), optional
    info: dict[str, Any] = field(default_factory=dict)  # extra JSON-able metadata

    def __post_init__(self) -> None:
        self.images = np.asarray(self.images)
        self.proprio = np.asarray(self.proprio, dtype=np.float32)
        self.actions = np.asarray(self.actions, dtype=np.float32)
        self.camera_names = tuple(self.camera_names)
        self.validate()

    @property
    def num_steps(self) -> int:
        return int(self.actions.shape[0])

    @property
    def has_images(self) -> bool:
        return self.images.size > 0

    def validate(self, where: str = "episode") -> None:
        t = self.actions.shape[0] if self.actions.ndim == 2 else -1
        if self.actions.ndim != 2 or t < 1:
            raise EpisodeFormatError(f"{where}: actions must be (T>=1, A), got {self.actions.shape}")
        if self.proprio.ndim != 2 or self.proprio.shape[0] != t:
            raise EpisodeFormatError(f"{where}: proprio must be (T={t}, P), got {self.proprio.shape}")
        # An episode loaded without its images carries an empty (0, C, H, W, 3) placeholder.
        if self.images.size:
            if self.images.dtype != np.uint8 or self.images.ndim != 5 or self.images.shape[-1] != 3:
                raise EpisodeFormatError(
                    f"{where}: images must be uint8 (T, C, H, W, 3), got {self.images.dtype} {self.images.shape}"
                )
            if self.images.shape[0] != t or self.images.shape[1] != len(self.camera_names):
                raise EpisodeFormatError(
                    f"{where}: images {self.images.shape} do not match T={t} and {len(self.camera_names)} "
                    f"camera names {self.camera_names}"
                )
        if self.states is not None and (self.states.ndim != 2 or self.states.shape[0] != t):
            raise EpisodeFormatError(f"{where}: states must be (T={t}, S), got {self.states.shape}")
        for name, arr in (("proprio", self.proprio), ("actions", self.actions)):
            if not np.isfinite(arr).all():
                raise EpisodeFormatError(f"{where}: {name} contains NaN or Inf")
        for names, arr, what in (
            (self.proprio_names, self.proprio, "proprio"),
            (self.action_names, self.actions, "action"),
        ):
            if names and len(names) != arr.shape[1]:
                raise EpisodeFormatError(f"{where}: {len(names)} {what}_names for {arr.shape[1]}-D {what}")

    def observation(self, t: int) -> tuple[list[np.ndarray], np.ndarray]:
        """(images of step t, one (H, W, 3) per camera; proprio of step t) -- a policy's inputs."""
        if not self.has_images:
            raise EpisodeFormatError("episode was loaded without images")
        return [self.images[t, c] for c in range(self.images.shape[1])], self.proprio[t]

    def meta(self) -> dict[str, Any]:
        return {
            "format": EPISODE_FORMAT,
            "version": FORMAT_VERSION,
            "task": self.task,
            "seed": self.seed,
            "success": self.success,
            "source": self.source,
            "num_steps": self.num_steps,
            "proprio_names": list(self.proprio_names),
            "action_names": list(self.action_names),
            **self.info,
        }


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_episode(path: str | os.PathLike[str], episode: Episode, *, compress: bool = True) -> Path:
    """Write one episode file (see the module docstring for the keys)."""
    episode.validate(str(path))
    if not episode.has_images:
        raise EpisodeFormatError(f"{path}: refusing to save an episode without images")
    arrays: dict[str, np.ndarray] = {
        "images": np.ascontiguousarray(episode.images, dtype=np.uint8),
        "proprio": episode.proprio.astype(np.float32),
        "actions": episode.actions.astype(np.float32),
        "instruction": np.array(episode.instruction),
        "camera_names": np.array(list(episode.camera_names)),
        "meta": np.array(json.dumps(episode.meta(), sort_keys=True)),
    }
    if episode.states is not None:
        arrays["states"] = np.asarray(episode.states, dtype=np.float64)
    buf = io.BytesIO()
    (np.savez_compressed if compress else np.savez)(buf, **arrays)
    out = Path(path)
    _atomic_write_bytes(out, buf.getvalue())
    return out


_META_FIELDS = ("format", "version", "task", "seed", "success", "source", "num_steps", "proprio_names", "action_names")


def load_episode(path: str | os.PathLike[str], *, images: bool = True) -> Episode:
    """Read one episode file; ``images=False`` skips decompressing the images (statistics need none)."""
    p = Path(path)
    try:
        with np.load(p, allow_pickle=False) as z:
            missing = [k for k in _REQUIRED_KEYS if k not in z.files]
            if missing:
                raise EpisodeFormatError(f"{p}: not an episode file, missing {missing}")
            meta = json.loads(str(z["meta"]))
            if meta.get("format") != EPISODE_FORMAT:
                raise EpisodeFormatError(f"{p}: meta.format is {meta.get('format')!r}, not {EPISODE_FORMAT!r}")
            if int(meta.get("version", -1)) > FORMAT_VERSION:
                raise EpisodeFormatError(f"{p}: format version {meta['version']} is newer than {FORMAT_VERSION}")
            camera_names = tuple(str(c) for c in z["camera_names"])
            if images:
                imgs = z["images"]
            else:
                # An empty placeholder: the pixels are never inflated.
                imgs = np.zeros((0, len(camera_names), 0, 0, 3), dtype=np.uint8)
            episode = Episode(
                instruction=str(z["instruction"]),
                images=imgs,
                proprio=z["proprio"],
                actions=z["actions"],
                camera_names=camera_names,
                task=str(meta.get("task", "")),
                seed=meta.get("seed"),
                success=meta.get("success"),
                source=str(meta.get("source", "")),
                proprio_names=tuple(meta.get("proprio_names", ())),
                action_names=tuple(meta.get("action_names", ())),
                states=z["states"] if "states" in z.files else None,
                info={k: v for k, v in meta.items() if k not in _META_FIELDS},
            )
    except EpisodeFormatError:
        raise
    except (OSError, ValueError, KeyError, json.JSONDecodeError) as exc:
        raise EpisodeFormatError(f"{p}: cannot read episode ({exc})") from exc
    return episode


@dataclass
class DatasetManifest:
    dataset_key: str
    camera_names: tuple[str, ...]
    image_size: tuple[int, int]  # (H, W)
    proprio_names: tuple[str, ...]
    action_names: tuple[str, ...]
    tasks: dict[str, str]  # task name -> instruction
    splits: dict[str, list[str]]  # split -> episode files relative to the dataset root
    created_by: dict[str, Any] = field(default_factory=dict)  # tool, config, timings, versions

    def to_json(self) -> dict[str, Any]:
        return {
            "format": DATASET_FORMAT,
            "version": FORMAT_VERSION,
            "dataset_key": self.dataset_key,
            "camera_names": list(self.camera_names),
            "image_size": list(self.image_size),
            "proprio_names": list(self.proprio_names),
            "action_names": list(self.action_names),
            "tasks": dict(self.tasks),
            "splits": {k: list(v) for k, v in self.splits.items()},
            "created_by": self.created_by,
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any], where: str) -> DatasetManifest:
        if obj.get("format") != DATASET_FORMAT:
            raise EpisodeFormatError(f"{where}: format is {obj.get('format')!r}, not {DATASET_FORMAT!r}")
        try:
            return cls(
                dataset_key=str(obj["dataset_key"]),
                camera_names=tuple(obj["camera_names"]),
                image_size=tuple(int(v) for v in obj["image_size"]),
                proprio_names=tuple(obj["proprio_names"]),
                action_names=tuple(obj["action_names"]),
                tasks=dict(obj["tasks"]),
                splits={k: list(v) for k, v in obj["splits"].items()},
                created_by=dict(obj.get("created_by", {})),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise EpisodeFormatError(f"{where}: malformed manifest ({exc!r})") from exc


def write_manifest(root: str | os.PathLike[str], manifest: DatasetManifest) -> Path:
    path = Path(root) / MANIFEST_FILE
    _atomic_write_bytes(path, (json.dumps(manifest.to_json(), indent=2) + "\n").encode())
    return path


def read_manifest(root: str | os.PathLike[str]) -> DatasetManifest:
    path = Path(root) / MANIFEST_FILE
    try:
        obj = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise EpisodeFormatError(f"{path}: missing (not an episode dataset, or its collection did not finish)") from exc
    except json.JSONDecodeError as exc:
        raise EpisodeFormatError(f"{path}: not valid JSON ({exc})") from exc
    return DatasetManifest.from_json(obj, str(path))


def _slug(text: str) -> str:
    return "-".join("".join(c if c.isalnum() else " " for c in text.lower()).split())[:60] or "episode"


def write_dataset(
    root: str | os.PathLike[str],
    splits: dict[str, Sequence[Episode]],
    dataset_key: str,
    *,
    statistics_split: str | None = None,
    created_by: dict[str, Any] | None = None,
) -> DatasetManifest:
    """Episodes already in memory (e.g. from the calibration loaders) -> a dataset directory.

    Files are ``<split>/<index>-<task slug>.npz``; statistics come from ``statistics_split`` (default:
    ``train`` if present, else the first split). All episodes must share cameras and image size.
    """
    from .statistics import compute_statistics, write_dataset_statistics

    out = Path(root)
    episodes = [ep for eps in splits.values() for ep in eps]
    if not episodes:
        raise EpisodeFormatError(f"{out}: no episodes to write")
    first = episodes[0]
    for ep in episodes:
        if ep.camera_names != first.camera_names or ep.images.shape[2:] != first.images.shape[2:]:
            raise EpisodeFormatError(
                f"{out}: episodes differ in cameras or image size ({ep.camera_names} {ep.images.shape[2:]} vs "
                f"{first.camera_names} {first.images.shape[2:]})"
            )
    rels: dict[str, list[str]] = {}
    for split, eps in splits.items():
        rels[split] = []
        for i, ep in enumerate(eps):
            rel = f"{split}/{i:05d}-{_slug(ep.task or ep.instruction)}.npz"
            save_episode(out / rel, ep)
            rels[split].append(rel)
    stats_split = statistics_split or ("train" if "train" in splits else next(iter(splits)))
    write_dataset_statistics(out / STATISTICS_FILE, dataset_key, compute_statistics(splits[stats_split]))
    manifest = DatasetManifest(
        dataset_key=dataset_key,
        camera_names=first.camera_names,
        image_size=(int(first.images.shape[2]), int(first.images.shape[3])),
        proprio_names=first.proprio_names,
        action_names=first.action_names,
        tasks={ep.task or ep.instruction: ep.instruction for ep in episodes},
        splits=rels,
        created_by={"statistics_from": stats_split, **(created_by or {})},
    )
    write_manifest(out, manifest)
    return manifest


class EpisodeDataset:
    """A dataset directory: its manifest and lazy access to the episodes of each split."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.manifest = read_manifest(self.root)

    def split_paths(self, split: str) -> list[Path]:
        if split not in self.manifest.splits:
            raise EpisodeFormatError(f"{self.root}: no split '{split}'; has {sorted(self.manifest.splits)}")
        return [self.root / rel for rel in self.manifest.splits[split]]

    def episodes(self, split: str, *, images: bool = True, tasks: Sequence[str] | None = None) -> Iterator[Episode]:
        for path in self.split_paths(split):
            ep = load_episode(path, images=images)
            if tasks is None or ep.task in tasks:
                yield ep

    @property
    def statistics_path(self) -> Path:
        return self.root / STATISTICS_FILE


__all__ = [
    "EPISODE_FORMAT",
    "DATASET_FORMAT",
    "FORMAT_VERSION",
    "MANIFEST_FILE",
    "STATISTICS_FILE",
    "EpisodeFormatError",
    "Episode",
    "save_episode",
    "load_episode",
    "DatasetManifest",
    "write_manifest",
    "read_manifest",
    "write_dataset",
    "EpisodeDataset",
]
