"""Tiny files written in the LeRobot (v2.1, v3.0) and LIBERO HDF5 layouts, with known content.

Test code: the writers produce, from scratch, exactly the structure the loaders document, and every
frame's colour encodes which episode, step and camera it belongs to, so a loader that mixes up frames,
episodes or cameras fails.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

# --------------------------------------------------------------------------------------------------
# Known content
# --------------------------------------------------------------------------------------------------

TASKS = ("put the black bowl on the plate", "open the top drawer of the cabinet")
EPISODE_TASK = (0, 1, 0, 1, 0)  # task index of each episode
EPISODE_LEN = (4, 3, 5, 2, 3)
IMG = 64  # SVT-AV1 wants frames of at least 64 x 64


def frame_colour(episode: int, step: int, camera: int) -> np.ndarray:
    """A solid colour that names (episode, step, camera); far enough apart to survive lossy video."""
    return np.array([20 + 30 * step, 30 + 40 * episode, 60 + 120 * camera], dtype=np.uint8)


def frame(episode: int, step: int, camera: int) -> np.ndarray:
    return np.broadcast_to(frame_colour(episode, step, camera), (IMG, IMG, 3)).copy()


def state_of(episode: int, step: int) -> np.ndarray:
    return np.array([episode, step, 0.5, -0.5, 0.25, 0.0, 0.04, -0.04], dtype=np.float32)


def action_of(episode: int, step: int) -> np.ndarray:
    return np.array([0.1 * step, -0.1 * episode, 0, 0, 0, 0, (-1) ** step], dtype=np.float32)


def _png(img: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def _write_video(path: Path, frames: list[np.ndarray], fps: int) -> None:
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libsvtav1", rate=fps)  # LeRobot's default codec
        stream.width, stream.height, stream.pix_fmt = IMG, IMG, "yuv420p"
        stream.codec_context.time_base = Fraction(1, fps)
        for i, img in enumerate(frames):
            f = av.VideoFrame.from_ndarray(img, format="rgb24")
            f.pts = i
            for packet in stream.encode(f):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _features(image_dtype: str, image_keys: tuple[str, str], state_key: str, action_key: str, fps: int) -> dict:
    feats = {}
    for key in image_keys:
        feats[key] = {"dtype": image_dtype, "shape": [IMG, IMG, 3], "names": ["height", "width", "channel"]}
        if image_dtype == "video":
            feats[key]["info"] = {"video.fps": fps, "video.codec": "av1", "video.pix_fmt": "yuv420p"}
    feats[state_key] = {"dtype": "float32", "shape": [8], "names": {"motors": [f"s{i}" for i in range(8)]}}
    feats[action_key] = {"dtype": "float32", "shape": [7], "names": [f"a{i}" for i in range(7)]}
    for key, dtype in (
        ("timestamp", "float32"),
        ("frame_index", "int64"),
        ("episode_index", "int64"),
        ("index", "int64"),
        ("task_index", "int64"),
    ):
        feats[key] = {"dtype": dtype, "shape": [1], "names": None}
    return feats


def _episode_rows(e: int, start_index: int, image_keys, state_key, action_key, fps, image_dtype) -> dict:
    n = EPISODE_LEN[e]
    rows: dict[str, list] = {
        k: []
        for k in (
            *image_keys,
            state_key,
            action_key,
            "timestamp",
            "frame_index",
            "episode_index",
            "index",
            "task_index",
        )
    }
    if image_dtype == "video":
        for k in image_keys:
            rows.pop(k)
    for t in range(n):
        if image_dtype == "image":
            for c, k in enumerate(image_keys):
                rows[k].append({"bytes": _png(frame(e, t, c)), "path": None})
        rows[state_key].append(state_of(e, t).tolist())
        rows[action_key].append(action_of(e, t).tolist())
        rows["timestamp"].append(t / fps)
        rows["frame_index"].append(t)
        rows["episode_index"].append(e)
        rows["index"].append(start_index + t)
        rows["task_index"].append(EPISODE_TASK[e])
    return rows


def _write_parquet(path: Path, rows: dict, image_keys=(), image_dtype="image") -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    cols = {}
    for k, v in rows.items():
        if k in image_keys and image_dtype == "image":
            cols[k] = pa.array(v, type=pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
        elif k == "timestamp":
            cols[k] = pa.array(v, type=pa.float32())
        elif isinstance(v[0], list):
            cols[k] = pa.array(v, type=pa.list_(pa.float32()))
        else:
            cols[k] = pa.array(v, type=pa.int64())
    pq.write_table(pa.table(cols), path)


@dataclass(frozen=True)
class LeRobotFixture:
    root: Path
    image_keys: tuple[str, str]


def write_lerobot_v21(root: Path, image_dtype: str) -> LeRobotFixture:
    """v2.1: physical-intelligence/libero's keys with images in the parquet, or LeRobot's with mp4 videos."""
    fps = 10
    if image_dtype == "image":
        image_keys, state_key, action_key = ("image", "wrist_image"), "state", "actions"
    else:
        image_keys = ("observation.images.image", "observation.images.wrist_image")
        state_key, action_key = "observation.state", "action"
    info = {
        "codebase_version": "v2.1",
        "robot_type": "panda",
        "total_episodes": len(EPISODE_LEN),
        "total_frames": sum(EPISODE_LEN),
        "total_tasks": len(TASKS),
        "chunks_size": 1000,
        "fps": fps,
        "splits": {"train": f"0:{len(EPISODE_LEN)}"},
        "data_path": "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet",
        "video_path": "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4"
        if image_dtype == "video"
        else None,
        "features": _features(image_dtype, image_keys, state_key, action_key, fps),
    }
    (root / "meta").mkdir(parents=True)
    (root / "meta" / "info.json").write_text(json.dumps(info, indent=2))
    (root / "meta" / "tasks.jsonl").write_text(
        "".join(json.dumps({"task_index": i, "task": t}) + "\n" for i, t in enumerate(TASKS))
    )
    (root / "meta" / "episodes.jsonl").write_text(
        "".join(
            json.dumps({"episode_index": e, "tasks": [TASKS[EPISODE_TASK[e]]], "length": n}) + "\n"
            for e, n in enumerate(EPISODE_LEN)
        )
    )
    start = 0
    for e, n in enumerate(EPISODE_LEN):
        rows = _episode_rows(e, start, image_keys, state_key, action_key, fps, image_dtype)
        _write_parquet(root / f"data/chunk-000/episode_{e:06d}.parquet", rows, image_keys, image_dtype)
        if image_dtype == "video":
            for c, key in enumerate(image_keys):
                _write_video(
                    root / f"videos/chunk-000/{key}/episode_{e:06d}.mp4", [frame(e, t, c) for t in range(n)], fps
                )
        start += n
    return LeRobotFixture(root, image_keys)


def write_lerobot_v30(root: Path) -> LeRobotFixture:
    """v3.0: all episodes in one data file and one video file per camera, located via meta/episodes."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    fps = 10
    image_keys = ("observation.images.image", "observation.images.wrist_image")
    state_key, action_key = "observation.state", "action"
    info = {
        "codebase_version": "v3.0",
        "robot_type": "panda",
        "total_episodes": len(EPISODE_LEN),
        "total_frames": sum(EPISODE_LEN),
        "total_tasks": len(TASKS),
        "chunks_size": 1000,
        "data_files_size_in_mb": 100,
        "video_files_size_in_mb": 200,
        "fps": fps,
        "splits": {"train": f"0:{len(EPISODE_LEN)}"},
        "data_path": "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet",
        "video_path": "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4",
        "features": _features("video", image_keys, state_key, action_key, fps),
    }
    (root / "meta").mkdir(parents=True)
    (root / "meta" / "info.json").write_text(json.dumps(info, indent=2))
    pq.write_table(
        pa.table({"task_index": list(range(len(TASKS))), "task": list(TASKS)}), root / "meta" / "tasks.parquet"
    )
    all_rows: dict[str, list] = {}
    episodes: dict[str, list] = {}
    start = 0
    for e, n in enumerate(EPISODE_LEN):
        rows = _episode_rows(e, start, image_keys, state_key, action_key, fps, "video")
        for k, v in rows.items():
            all_rows.setdefault(k, []).extend(v)
        meta = {
            "episode_index": e,
            "tasks": [TASKS[EPISODE_TASK[e]]],
            "length": n,
            "data/chunk_index": 0,
            "data/file_index": 0,
            "dataset_from_index": start,
            "dataset_to_index": start + n,
        }
        for key in image_keys:
            meta |= {
                f"videos/{key}/chunk_index": 0,
                f"videos/{key}/file_index": 0,
                f"videos/{key}/from_timestamp": start / fps,
                f"videos/{key}/to_timestamp": (start + n) / fps,
            }
        for k, v in meta.items():
            episodes.setdefault(k, []).append(v)
        start += n
    # Rows shuffled, as no reader should rely on their order: the loader filters by episode_index
    # and orders by frame_index.
    perm = np.random.default_rng(0).permutation(len(all_rows["index"]))
    all_rows = {k: [v[i] for i in perm] for k, v in all_rows.items()}
    _write_parquet(root / "data/chunk-000/file-000.parquet", all_rows, image_keys, "video")
    (root / "meta/episodes/chunk-000").mkdir(parents=True)
    pq.write_table(pa.table(episodes), root / "meta/episodes/chunk-000/file-000.parquet")
    for c, key in enumerate(image_keys):
        frames = [frame(e, t, c) for e, n in enumerate(EPISODE_LEN) for t in range(n)]
        _write_video(root / f"videos/{key}/chunk-000/file-000.mp4", frames, fps)
    return LeRobotFixture(root, image_keys)


def write_libero_hdf5(root: Path) -> list[Path]:
    """Two LIBERO demo files: one with problem_info + ee_pos/ee_ori, one named only + ee_states."""
    import h5py

    root.mkdir(parents=True, exist_ok=True)
    paths = []
    specs = [
        ("KITCHEN_SCENE1_put_the_black_bowl_on_the_plate_demo.hdf5", TASKS[0], True, 3),
        ("LIVING_ROOM_SCENE2_open_the_top_drawer_of_the_cabinet_demo.hdf5", None, False, 2),
    ]
    for f_idx, (name, instruction, split_ee, n_demos) in enumerate(specs):
        path = root / name
        with h5py.File(path, "w") as f:
            data = f.create_group("data")
            if instruction is not None:
                data.attrs["problem_info"] = json.dumps({"language_instruction": instruction, "domain_name": "x"})
            for d in range(n_demos):
                e = 3 * f_idx + d  # 0..4: distinct colours per demo
                n = 3 + d
                g = data.create_group(f"demo_{d}")
                g.attrs["num_samples"] = n
                obs = g.create_group("obs")
                for c, cam in enumerate(("agentview_rgb", "eye_in_hand_rgb")):
                    imgs = np.stack([frame(e, t, c) for t in range(n)])
                    imgs[:, 0, 0] = 255  # a marker pixel: the loader turns it to the bottom-right corner
                    obs.create_dataset(cam, data=imgs)
                states = np.stack([state_of(e, t) for t in range(n)])
                if split_ee:
                    obs.create_dataset("ee_pos", data=states[:, :3].astype(np.float64))
                    obs.create_dataset("ee_ori", data=states[:, 3:6].astype(np.float64))
                else:
                    obs.create_dataset("ee_states", data=states[:, :6].astype(np.float64))
                obs.create_dataset("gripper_states", data=states[:, 6:].astype(np.float64))
                obs.create_dataset("joint_states", data=np.zeros((n, 7)))
                g.create_dataset("actions", data=np.stack([action_of(e, t) for t in range(n)]).astype(np.float64))
                g.create_dataset("dones", data=np.eye(1, n, n - 1, dtype=np.uint8)[0])
        paths.append(path)
    return paths


def use_small_pi0_preset(monkeypatch, kind: str) -> None:
    """A preset smaller than "tiny" keeps these tests to seconds; the code path is the same."""
    from omnimodel.arch.pi0 import training

    sizes = training.PI05_SIZES if kind == "pi05" else training.PI0_SIZES
    small = training.Pi0Size(
        "tiny", kind, 56,
        dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, patch_size=14),
        dict(width=32, depth=1, mlp_dim=64, num_heads=8, num_kv_heads=1, head_dim=8),
        dict(width=16, depth=1, mlp_dim=32, num_heads=8, num_kv_heads=1, head_dim=8),
        chunk_size=8, num_inference_steps=3)
    monkeypatch.setitem(sizes, "tiny", small)
