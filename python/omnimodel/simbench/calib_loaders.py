"""Users' real robot data -> our episode format, for calibration and held-out open-loop evaluation.

Two sources of LIBERO data (what OpenVLA-OFT's LIBERO checkpoints were trained on):

* **LeRobot datasets** (``meta/info.json`` + parquet + optional mp4), codebase versions v2.x and v3.0:

      v2.x  data/chunk-{c:03d}/episode_{e:06d}.parquet         one episode per file
            videos/chunk-{c:03d}/{key}/episode_{e:06d}.mp4    (c = e // chunks_size)
            meta/episodes.jsonl {"episode_index", "tasks", "length"}, meta/tasks.jsonl
      v3.0  data/chunk-{c:03d}/file-{f:03d}.parquet            many episodes per file
            videos/{key}/chunk-{c:03d}/file-{f:03d}.mp4       episodes concatenated in time
            meta/episodes/chunk-*/file-*.parquet: episode_index, tasks, length, data/chunk_index,
            data/file_index, videos/{key}/{chunk_index,file_index,from_timestamp,to_timestamp}

  Paths come from ``info.json``'s ``data_path`` / ``video_path`` templates. Camera features have dtype
  ``video`` (decoded with PyAV at the frame timestamps) or ``image`` (PNG/JPEG bytes in the parquet, as
  in ``physical-intelligence/libero``). Camera order: as listed in ``info.json``, wrist cameras last
  (OFT wants the third-person view first); depth-map features are not cameras; state and action keys
  are found among the usual names. A v3.0 data file holds many episodes (one row group each): loading
  one reads only its row groups.

* **LIBERO's native HDF5 demonstrations** (``<task>_demo.hdf5``, one task per file):

      data.attrs["problem_info"]  JSON with "language_instruction" (else the file name is used)
      data/demo_<i>/actions                       (T, 7)
      data/demo_<i>/obs/agentview_rgb             (T, H, W, 3) uint8   third-person
      data/demo_<i>/obs/eye_in_hand_rgb           (T, H, W, 3) uint8   wrist
      data/demo_<i>/obs/ee_states or ee_pos+ee_ori (T, 6), obs/gripper_states (T, 2)

  Proprio is OFT's LIBERO state: end-effector position (3), axis-angle orientation (3), gripper joint
  positions (2). :class:`LiberoHDF5` reads the metadata of every file first (instructions, demos, the
  first demo's observation names and shapes) and the pixels one demo at a time. LIBERO renders upside down; OFT turns every image by 180 degrees before training and
  inference, and so does this loader unless ``rotate_180=False``.

Actions are kept as stored. LIBERO's raw gripper action is -1 (open) / +1 (close); OFT's LIBERO policy
outputs 1 (open) / 0 (close) -- :func:`libero_gripper_to_oft` converts, for L1 against a policy's output.

The readers (pyarrow, PyAV, h5py, Pillow) are imported when first needed (:func:`import_optional`): a
missing one is a one-line :class:`CalibDataError` naming the package.

Episode selection (:func:`select_per_task`): ``per_task`` episodes per distinct task description,
drawn with a seeded generator over the descriptions in sorted order -- the same files, seed and count
always give the same episodes.
"""

from __future__ import annotations

import importlib
import io
import json
import os
import re
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .episodes import Episode, EpisodeFormatError

LIBERO_PROPRIO_NAMES = ("eef_x", "eef_y", "eef_z", "eef_ax", "eef_ay", "eef_az", "gripper_q0", "gripper_q1")
LIBERO_ACTION_NAMES = ("dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper")
STATE_KEYS = ("observation.state", "state", "observation.states", "observation.state.end_effector")
ACTION_KEYS = ("action", "actions")


class CalibDataError(EpisodeFormatError):
    """The input data does not have the layout a loader expects; the message names the file and field."""


# Camera names that mark a wrist (eye-in-hand) view: OFT wants the third-person view first, then these.
WRIST_MARKERS = ("wrist", "hand", "gripper")


def is_wrist_camera(name: str) -> bool:
    return any(m in name.lower() for m in WRIST_MARKERS)


def third_person_first(cameras: Iterable[str]) -> tuple[str, ...]:
    """Cameras in OFT's order: third-person views first, wrist views last, otherwise as given."""
    return tuple(sorted(cameras, key=is_wrist_camera))


def import_optional(module: str, purpose: str) -> Any:
    """``module``, imported on first use: the dataset readers are an optional extra, so a missing one
    is a one-line error naming what to install, not an ImportError from deep inside a loader."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        pkg = module.split(".")[0]
        raise CalibDataError(
            f"{purpose} needs the Python package '{pkg}', which is not installed: pip install 'omnimodel[sim]' "
            f"(or pip install {pkg})"
        ) from exc


# --------------------------------------------------------------------------------------------------
# Selection
# --------------------------------------------------------------------------------------------------


def select_per_task(
    candidates: Sequence[tuple[Hashable, str]], per_task: int = 1, seed: int = 0
) -> list[tuple[Hashable, str]]:
    """(key, task description) pairs -> ``per_task`` of them per description (all if fewer), seeded.

    Output order: descriptions sorted, then the drawn order; deterministic for a given input set
    (the input order does not matter).
    """
    if per_task < 1:
        raise ValueError(f"per_task must be >= 1, got {per_task}")
    by_task: dict[str, list[Hashable]] = {}
    for key, task in candidates:
        by_task.setdefault(task, []).append(key)
    rng = np.random.default_rng(seed)
    chosen: list[tuple[Hashable, str]] = []
    for task in sorted(by_task):
        keys = sorted(by_task[task])  # canonical order first, so the input order does not matter
        order = rng.permutation(len(keys))[: min(per_task, len(keys))]
        chosen += [(keys[i], task) for i in order]
    return chosen


def libero_gripper_to_oft(actions: np.ndarray) -> np.ndarray:
    """LIBERO raw gripper action (-1 open, +1 close) -> OFT's LIBERO convention (1 open, 0 close)."""
    out = np.array(actions, dtype=np.float32, copy=True)
    out[..., -1] = 1.0 - np.clip(out[..., -1], 0.0, 1.0)
    return out


# --------------------------------------------------------------------------------------------------
# LeRobot
# --------------------------------------------------------------------------------------------------


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise CalibDataError(f"{path}: missing") from exc
    except json.JSONDecodeError as exc:
        raise CalibDataError(f"{path}: not valid JSON ({exc})") from exc


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    try:
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except FileNotFoundError as exc:
        raise CalibDataError(f"{path}: missing") from exc
    except json.JSONDecodeError as exc:
        raise CalibDataError(f"{path}: not valid JSON lines ({exc})") from exc


def _read_parquet(path: Path, episode: int | None = None) -> Any:
    """The table at ``path``; with ``episode``, only the row groups that can hold its rows (a v3.0 data
    file holds many episodes, one row group each, so a filter reads one episode, not the whole file)."""
    pq = import_optional("pyarrow.parquet", "reading LeRobot datasets")

    if not path.is_file():
        raise CalibDataError(f"{path}: missing")
    try:
        if episode is not None:
            return pq.read_table(path, filters=[("episode_index", "=", int(episode))])
        return pq.read_table(path)
    except Exception as exc:  # pyarrow raises ArrowInvalid / OSError variants
        raise CalibDataError(f"{path}: cannot read parquet ({exc})") from exc


@dataclass(frozen=True)
class LeRobotEpisodeRef:
    """Where one episode's rows and frames are (resolved from the metadata of either version)."""

    index: int
    task: str
    length: int
    data_file: Path
    video_files: dict[str, Path]  # camera key -> mp4 (video features only)
    video_offsets: dict[str, float]  # camera key -> from_timestamp (v3.0; 0 for v2.x)


class LeRobotDataset:
    """Read-only view of a local LeRobot dataset directory (no ``lerobot`` package needed)."""

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        image_keys: Sequence[str] | None = None,
        state_key: str | None = None,
        action_key: str | None = None,
    ) -> None:
        self.root = Path(root)
        self.info = _read_json(self.root / "meta" / "info.json")
        version = str(self.info.get("codebase_version", ""))
        if not re.fullmatch(r"v[23]\.\d+", version):
            raise CalibDataError(f"{self.root}/meta/info.json: codebase_version {version!r} not supported (v2.x, v3.0)")
        self.version = version
        self.features: dict[str, dict[str, Any]] = dict(self.info.get("features", {}))
        self.fps = float(self.info.get("fps", 0)) or None
        cameras = [k for k, f in self.features.items() if f.get("dtype") in ("image", "video")]
        # Depth maps are stored as image/video features too, but a policy's cameras are the RGB ones.
        self.cameras = tuple(k for k in cameras if not _is_depth_feature(self.features[k]))
        if image_keys is None:
            image_keys = third_person_first(self.cameras)
        for key in image_keys:
            if key not in cameras:
                raise CalibDataError(f"{self.root}: no camera feature '{key}'; cameras: {list(self.cameras)}")
        if not image_keys:
            raise CalibDataError(f"{self.root}: no image or video features in meta/info.json")
        self.image_keys = tuple(image_keys)
        self.state_key = self._find_key([state_key] if state_key else STATE_KEYS, "state")
        self.action_key = self._find_key([action_key] if action_key else ACTION_KEYS, "action")
        self._episodes = self._load_episode_refs()

    def _find_key(self, names: Sequence[str], what: str) -> str:
        for name in names:
            if name in self.features:
                return name
        raise CalibDataError(
            f"{self.root}/meta/info.json: no {what} feature among {list(names)}; choose one of "
            f"{sorted(k for k, f in self.features.items() if f.get('dtype') not in ('image', 'video'))} "
            f"({what}_key=, CLI: --calib-{what})"
        )

    # ---- metadata -------------------------------------------------------------------------------

    def _load_episode_refs(self) -> dict[int, LeRobotEpisodeRef]:
        return self._refs_v3() if self.version.startswith("v3") else self._refs_v2()

    def _refs_v2(self) -> dict[int, LeRobotEpisodeRef]:
        meta = self.root / "meta"
        tasks_by_index = {int(t["task_index"]): str(t["task"]) for t in _read_jsonl(meta / "tasks.jsonl")}
        chunks_size = int(self.info.get("chunks_size", 1000))
        data_tpl = self.info.get("data_path", "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet")
        video_tpl = self.info.get("video_path")
        refs = {}
        for row in _read_jsonl(meta / "episodes.jsonl"):
            idx = int(row["episode_index"])
            tasks = row.get("tasks") or []
            task = str(tasks[0]) if tasks else tasks_by_index.get(int(row.get("task_index", -1)), "")
            chunk = idx // chunks_size
            videos = {
                k: self.root / video_tpl.format(episode_chunk=chunk, video_key=k, episode_index=idx)
                for k in self.image_keys
                if self.features[k]["dtype"] == "video" and video_tpl
            }
            refs[idx] = LeRobotEpisodeRef(
                index=idx,
                task=task,
                length=int(row.get("length", 0)),
                data_file=self.root / data_tpl.format(episode_chunk=chunk, episode_index=idx),
                video_files=videos,
                video_offsets=dict.fromkeys(videos, 0.0),
            )
        return refs

    def _refs_v3(self) -> dict[int, LeRobotEpisodeRef]:
        files = sorted((self.root / "meta" / "episodes").glob("chunk-*/file-*.parquet"))
        if not files:
            raise CalibDataError(f"{self.root}/meta/episodes: no chunk-*/file-*.parquet files")
        data_tpl = self.info.get("data_path", "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet")
        video_tpl = self.info.get("video_path")
        refs = {}
        for f in files:
            for row in _read_parquet(f).to_pylist():
                idx = int(row["episode_index"])
                tasks = row.get("tasks") or []
                videos, offsets = {}, {}
                for k in self.image_keys:
                    if self.features[k]["dtype"] != "video":
                        continue
                    try:
                        chunk, fidx = row[f"videos/{k}/chunk_index"], row[f"videos/{k}/file_index"]
                        offsets[k] = float(row[f"videos/{k}/from_timestamp"])
                    except KeyError as exc:
                        raise CalibDataError(f"{f}: episode {idx} lacks column {exc}") from exc
                    videos[k] = self.root / video_tpl.format(video_key=k, chunk_index=chunk, file_index=fidx)
                refs[idx] = LeRobotEpisodeRef(
                    index=idx,
                    task=str(tasks[0]) if tasks else "",
                    length=int(row.get("length", 0)),
                    data_file=self.root
                    / data_tpl.format(chunk_index=row["data/chunk_index"], file_index=row["data/file_index"]),
                    video_files=videos,
                    video_offsets=offsets,
                )
        return refs

    @property
    def episode_tasks(self) -> list[tuple[int, str]]:
        return [(i, r.task) for i, r in sorted(self._episodes.items())]

    def split_episodes(self, split: str) -> set[int]:
        """Episode indices of ``info.json``'s ``splits[split]`` ("start:stop", LeRobot's notation)."""
        splits = self.info.get("splits") or {}
        if split not in splits:
            raise CalibDataError(f"{self.root}/meta/info.json: no split '{split}'; splits: {sorted(splits)}")
        m = re.fullmatch(r"\s*(\d+)\s*:\s*(\d+)\s*", str(splits[split]))
        if m is None:
            raise CalibDataError(f"{self.root}/meta/info.json: split '{split}' is {splits[split]!r}, not 'start:stop'")
        return set(range(int(m.group(1)), int(m.group(2))))

    def feature_dim(self, key: str) -> int:
        """The length of a vector feature (state, action) from ``info.json``, no data read."""
        shape = self.features[key].get("shape") or []
        try:
            return int(np.prod([int(v) for v in shape]))
        except (TypeError, ValueError) as exc:
            raise CalibDataError(f"{self.root}/meta/info.json: feature '{key}' has shape {shape!r}") from exc

    # ---- one episode ----------------------------------------------------------------------------

    def load(self, episode_index: int, *, source: str = "lerobot") -> Episode:
        ref = self._episodes.get(int(episode_index))
        if ref is None:
            raise CalibDataError(f"{self.root}: no episode {episode_index}")
        table = _read_parquet(ref.data_file, ref.index)
        cols = set(table.column_names)
        for key in (self.state_key, self.action_key, "episode_index"):
            if key not in cols:
                raise CalibDataError(f"{ref.data_file}: no column '{key}'")
        ep_col = np.asarray(table.column("episode_index").to_numpy(zero_copy_only=False))
        rows = table.filter(_mask_array(ep_col == ref.index))
        if rows.num_rows == 0:
            raise CalibDataError(f"{ref.data_file}: no rows of episode {ref.index}")
        if "frame_index" in cols:
            order = np.argsort(np.asarray(rows.column("frame_index").to_numpy(zero_copy_only=False)), kind="stable")
            rows = rows.take(order)
        state = _stack_column(rows, self.state_key, ref.data_file)
        action = _stack_column(rows, self.action_key, ref.data_file)
        t = rows.num_rows
        if "timestamp" in cols:
            timestamps = np.asarray(rows.column("timestamp").to_numpy(zero_copy_only=False), dtype=np.float64)
        elif self.fps:
            timestamps = np.arange(t) / self.fps
        else:
            timestamps = None
        cams = []
        for key in self.image_keys:
            if self.features[key]["dtype"] == "image":
                cams.append(_decode_image_column(rows, key, ref.data_file))
            else:
                if timestamps is None or not self.fps:
                    raise CalibDataError(f"{self.root}: video feature '{key}' needs fps and timestamps")
                cams.append(decode_video_frames(ref.video_files[key], timestamps + ref.video_offsets[key], self.fps))
        shapes = {c.shape[1:] for c in cams}
        if len(shapes) != 1:
            raise CalibDataError(f"{self.root}: cameras {self.image_keys} have different image sizes {shapes}")
        return Episode(
            instruction=ref.task,
            images=np.stack(cams, axis=1),
            proprio=state,
            actions=action,
            camera_names=self.image_keys,
            task=ref.task,
            seed=None,
            success=None,
            source=source,
            proprio_names=_names_of(self.features[self.state_key], state.shape[1]),
            action_names=_names_of(self.features[self.action_key], action.shape[1]),
            info={"source_root": str(self.root), "source_episode": ref.index, "codebase_version": self.version},
        )


def _is_depth_feature(feature: dict[str, Any]) -> bool:
    info = feature.get("info") or {}
    video_info = feature.get("video_info") or {}
    return bool(info.get("is_depth_map") or info.get("video.is_depth_map") or video_info.get("video.is_depth_map"))


def _mask_array(mask: np.ndarray) -> Any:
    pa = import_optional("pyarrow", "reading LeRobot datasets")
    return pa.array(mask)


def _stack_column(table: Any, key: str, where: Path) -> np.ndarray:
    values = table.column(key).to_pylist()
    try:
        arr = np.asarray(values, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise CalibDataError(f"{where}: column '{key}' is not a fixed-length float vector ({exc})") from exc
    return arr.reshape(len(values), -1)


def _names_of(feature: dict[str, Any], dim: int) -> tuple[str, ...]:
    names = feature.get("names")
    if isinstance(names, dict):  # {"motors": [...]} in many LeRobot datasets
        names = next(iter(names.values()), None)
    if isinstance(names, list) and len(names) == dim and all(isinstance(n, str) for n in names):
        return tuple(names)
    return ()


def _decode_image_column(table: Any, key: str, where: Path) -> np.ndarray:
    image = import_optional("PIL.Image", "decoding LeRobot image frames")

    frames = []
    for i, cell in enumerate(table.column(key).to_pylist()):
        data = cell.get("bytes") if isinstance(cell, dict) else cell
        if not data:
            raise CalibDataError(f"{where}: row {i} of image column '{key}' holds no bytes")
        with image.open(io.BytesIO(data)) as im:
            frames.append(np.asarray(im.convert("RGB"), dtype=np.uint8))
    return np.stack(frames)


def decode_video_frames(path: Path, timestamps: np.ndarray, fps: float) -> np.ndarray:
    """Frames of ``path`` at ``timestamps`` (s) -> uint8 (N, H, W, 3); nearest frame within half a period."""
    av = import_optional("av", "decoding LeRobot videos")

    if not path.is_file():
        raise CalibDataError(f"{path}: missing video file")
    want = np.asarray(timestamps, dtype=np.float64)
    tol = 0.5 / fps
    times: list[float] = []
    images: list[np.ndarray] = []
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            start = float(want.min())
            if start > tol:
                # Jump to the keyframe before the first wanted frame (episodes deep inside a v3.0 file).
                container.seek(int(max(start - tol, 0.0) / stream.time_base), stream=stream, backward=True)
            for frame in container.decode(stream):
                if frame.pts is None:
                    continue
                ts = float(frame.pts * stream.time_base)
                if ts < start - tol:
                    continue
                if ts > want.max() + tol:
                    break
                times.append(ts)
                images.append(frame.to_ndarray(format="rgb24"))
    except av.error.FFmpegError as exc:
        raise CalibDataError(f"{path}: cannot decode video ({exc})") from exc
    if not images:
        raise CalibDataError(f"{path}: no frames near timestamps {want.min():.3f}..{want.max():.3f} s")
    t = np.asarray(times)
    nearest = np.abs(t[None, :] - want[:, None]).argmin(axis=1)
    off = np.abs(t[nearest] - want)
    if (off > tol).any():
        bad = int(off.argmax())
        raise CalibDataError(
            f"{path}: no frame within {tol:.4f} s of t={want[bad]:.4f} s (nearest {t[nearest[bad]]:.4f})"
        )
    return np.stack([images[i] for i in nearest])


def load_lerobot_episodes(
    root: str | os.PathLike[str],
    *,
    per_task: int | None = 1,
    seed: int = 0,
    episodes: Iterable[int] | None = None,
    image_keys: Sequence[str] | None = None,
    state_key: str | None = None,
    action_key: str | None = None,
    action_transform: Callable[[np.ndarray], np.ndarray] | None = None,
) -> list[Episode]:
    """A LeRobot dataset -> episodes: ``per_task`` per task description (seeded), or the listed indices,
    or all (``per_task=None``)."""
    ds = LeRobotDataset(root, image_keys=image_keys, state_key=state_key, action_key=action_key)
    if episodes is not None:
        indices = [int(i) for i in episodes]
    elif per_task is None:
        indices = [i for i, _ in ds.episode_tasks]
    else:
        indices = [int(k) for k, _ in select_per_task(ds.episode_tasks, per_task, seed)]
    out = []
    for i in indices:
        ep = ds.load(i)
        if action_transform is not None:
            ep.actions = np.asarray(action_transform(ep.actions), dtype=np.float32)
        out.append(ep)
    return out



# --------------------------------------------------------------------------------------------------
# LIBERO native HDF5
# --------------------------------------------------------------------------------------------------

LIBERO_CAMERAS = ("agentview_rgb", "eye_in_hand_rgb")


def instruction_from_filename(path: Path) -> str:
    """``KITCHEN_SCENE3_turn_on_the_stove_demo.hdf5`` -> ``turn on the stove`` (LIBERO's naming)."""
    stem = re.sub(r"_demo$", "", path.stem)
    words = stem.split("_")
    # Scene prefixes are upper case (KITCHEN_SCENE3, LIVING_ROOM_SCENE2); the instruction is not.
    while words and (words[0].isupper() or words[0].isdigit()) and any(w.islower() for w in words):
        words = words[1:]
    return " ".join(words)


def _demo_names(group: Any) -> list[str]:
    names = [n for n in group.keys() if re.fullmatch(r"demo_\d+", n)]
    return sorted(names, key=lambda n: int(n.split("_")[1]))


def _libero_instruction(f: Any, path: Path) -> str:
    info = f["data"].attrs.get("problem_info")
    if info is not None:
        if isinstance(info, bytes):
            info = info.decode()
        try:
            text = json.loads(str(info)).get("language_instruction")
        except json.JSONDecodeError:
            text = None
        if text:
            return " ".join(str(text).split())
    return instruction_from_filename(path)


def _libero_proprio(obs: Any, where: str) -> np.ndarray:
    if "ee_states" in obs:
        ee = np.asarray(obs["ee_states"], dtype=np.float32)[:, :6]
    elif "ee_pos" in obs and "ee_ori" in obs:
        ee = np.concatenate([np.asarray(obs["ee_pos"]), np.asarray(obs["ee_ori"])], axis=1).astype(np.float32)
    else:
        raise CalibDataError(f"{where}: needs obs/ee_states or obs/ee_pos + obs/ee_ori")
    if "gripper_states" not in obs:
        raise CalibDataError(f"{where}: needs obs/gripper_states")
    return np.concatenate([ee, np.asarray(obs["gripper_states"], dtype=np.float32)], axis=1)


def _libero_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise CalibDataError(f"{path}: no such file or directory")
    files = sorted(p for p in path.glob("*.hdf5"))
    if not files:
        raise CalibDataError(f"{path}: no .hdf5 files")
    return files


def _is_image_dataset(d: Any) -> bool:
    return len(d.shape) == 4 and d.shape[-1] == 3 and d.dtype == np.uint8


class LiberoHDF5:
    """Read-only view of LIBERO ``*_demo.hdf5`` file(s) (a file or a directory of them).

    The constructor reads metadata only: the instruction of each file, its demos, and the names and
    shapes of the first demo's observations; pixels are read by :meth:`load`, one demo at a time.
    Default cameras: LIBERO's ``agentview_rgb`` + ``eye_in_hand_rgb`` when present, else every
    (T, H, W, 3) uint8 observation, third-person first.
    """

    def __init__(self, path: str | os.PathLike[str], *, cameras: Sequence[str] | None = None,
                 rotate_180: bool = True) -> None:
        self.h5py = import_optional("h5py", "reading LIBERO HDF5 files")
        self.path = Path(path)
        self.files = _libero_files(self.path)
        self.rotate_180 = rotate_180
        self._episodes: list[tuple[tuple[str, str], str]] = []
        first_obs: dict[str, tuple[tuple[int, ...], bool]] | None = None
        for file in self.files:
            try:
                with self.h5py.File(file, "r") as f:
                    if "data" not in f:
                        raise CalibDataError(f"{file}: no 'data' group (not a LIBERO demo file)")
                    instruction = _libero_instruction(f, file)
                    demos = _demo_names(f["data"])
                    self._episodes += [((str(file), demo), instruction) for demo in demos]
                    if first_obs is None and demos:
                        g = f["data"][demos[0]]
                        where = f"{file}:data/{demos[0]}"
                        if "obs" not in g or "actions" not in g:
                            raise CalibDataError(f"{where}: needs 'obs' and 'actions'")
                        first_obs = {k: (tuple(d.shape), _is_image_dataset(d)) for k, d in g["obs"].items()
                                     if hasattr(d, "shape")}
                        self.action_dim = int(np.prod(g["actions"].shape[1:]))
                        self.proprio_dim = _libero_proprio_dim(first_obs, where)
            except OSError as exc:
                raise CalibDataError(f"{file}: cannot open HDF5 ({exc})") from exc
        if first_obs is None:
            raise CalibDataError(f"{self.path}: no data/demo_<i> groups in {len(self.files)} HDF5 file(s)")
        self.observations = first_obs
        self.all_cameras = third_person_first(k for k, (_, img) in first_obs.items() if img)
        if cameras is None:
            cameras = LIBERO_CAMERAS if all(c in first_obs for c in LIBERO_CAMERAS) else self.all_cameras
        for cam in cameras:
            if cam not in self.all_cameras:
                raise CalibDataError(f"{self.files[0]}: no camera obs/{cam}; cameras: {list(self.all_cameras)}")
        if not cameras:
            raise CalibDataError(f"{self.files[0]}: no (T, H, W, 3) uint8 camera observations")
        self.cameras = tuple(cameras)

    @property
    def episode_tasks(self) -> list[tuple[tuple[str, str], str]]:
        """((file, demo), instruction) of every demo, in file and demo order."""
        return list(self._episodes)

    def image_shape(self, camera: str) -> tuple[int, ...]:
        return self.observations[camera][0][1:]

    def load(self, key: tuple[str, str], *, action_transform: Callable[[np.ndarray], np.ndarray] | None = None
             ) -> Episode:
        file, demo = key
        instruction = dict(self._episodes).get(key, "")
        with self.h5py.File(file, "r") as f:
            g = f["data"][demo]
            where = f"{file}:data/{demo}"
            if "obs" not in g or "actions" not in g:
                raise CalibDataError(f"{where}: needs 'obs' and 'actions'")
            obs = g["obs"]
            imgs = []
            for cam in self.cameras:
                if cam not in obs:
                    raise CalibDataError(f"{where}: no obs/{cam}; has {sorted(obs.keys())}")
                im = np.asarray(obs[cam], dtype=np.uint8)
                imgs.append(im[:, ::-1, ::-1] if self.rotate_180 else im)
            shapes = {im.shape[1:] for im in imgs}
            if len(shapes) != 1:
                raise CalibDataError(f"{where}: cameras {self.cameras} have different image sizes {shapes}")
            actions = np.asarray(g["actions"], dtype=np.float32).reshape(len(g["actions"]), -1)
            if action_transform is not None:
                actions = np.asarray(action_transform(actions), dtype=np.float32)
            proprio = _libero_proprio(obs, where)
        return Episode(
            instruction=instruction,
            images=np.ascontiguousarray(np.stack(imgs, axis=1)),
            proprio=proprio,
            actions=actions,
            camera_names=self.cameras,
            task=instruction,
            source="libero-hdf5",
            proprio_names=LIBERO_PROPRIO_NAMES if proprio.shape[1] == len(LIBERO_PROPRIO_NAMES) else (),
            action_names=LIBERO_ACTION_NAMES if actions.shape[1] == 7 else (),
            info={"source_file": Path(file).name, "source_demo": demo, "rotated_180": self.rotate_180},
        )


def _libero_proprio_dim(obs: dict[str, tuple[tuple[int, ...], bool]], where: str) -> int:
    if "ee_states" in obs:
        ee = min(6, obs["ee_states"][0][1])
    elif "ee_pos" in obs and "ee_ori" in obs:
        ee = obs["ee_pos"][0][1] + obs["ee_ori"][0][1]
    else:
        raise CalibDataError(f"{where}: needs obs/ee_states or obs/ee_pos + obs/ee_ori")
    if "gripper_states" not in obs:
        raise CalibDataError(f"{where}: needs obs/gripper_states")
    return int(ee + obs["gripper_states"][0][1])


def load_libero_hdf5_episodes(
    path: str | os.PathLike[str],
    *,
    per_task: int | None = 1,
    seed: int = 0,
    cameras: Sequence[str] = LIBERO_CAMERAS,
    rotate_180: bool = True,
    action_transform: Callable[[np.ndarray], np.ndarray] | None = None,
) -> list[Episode]:
    """LIBERO ``*_demo.hdf5`` file(s) (a file or a directory) -> episodes, ``per_task`` per instruction."""
    data = LiberoHDF5(path, cameras=cameras, rotate_180=rotate_180)
    candidates = data.episode_tasks
    chosen = candidates if per_task is None else select_per_task(candidates, per_task, seed)
    return [data.load(key, action_transform=action_transform) for key, _ in chosen]


__all__ = [
    "CalibDataError",
    "LIBERO_PROPRIO_NAMES",
    "LIBERO_ACTION_NAMES",
    "LIBERO_CAMERAS",
    "WRIST_MARKERS",
    "is_wrist_camera",
    "third_person_first",
    "import_optional",
    "select_per_task",
    "libero_gripper_to_oft",
    "LeRobotDataset",
    "LeRobotEpisodeRef",
    "decode_video_frames",
    "load_lerobot_episodes",
    "instruction_from_filename",
    "LiberoHDF5",
    "load_libero_hdf5_episodes",
]
