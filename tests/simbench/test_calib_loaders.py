"""Calibration loaders on tiny files written in the LeRobot (v2.1, v3.0) and LIBERO HDF5 layouts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from simbench_fixtures import (
    EPISODE_LEN,
    EPISODE_TASK,
    TASKS,
    action_of,
    frame_colour,
    state_of,
    write_lerobot_v21,
    write_lerobot_v30,
    write_libero_hdf5,
)

from omnimodel.simbench.calib_loaders import (
    CalibDataError,
    LeRobotDataset,
    instruction_from_filename,
    libero_gripper_to_oft,
    load_lerobot_episodes,
    load_libero_hdf5_episodes,
    select_per_task,
)
from omnimodel.simbench.episodes import EpisodeDataset, load_episode, save_episode, write_dataset


def _check_episode(ep, e: int, *, colour_tol: int) -> None:
    n = EPISODE_LEN[e]
    assert ep.num_steps == n
    assert ep.instruction == TASKS[EPISODE_TASK[e]]
    assert ep.images.shape == (n, 2, 64, 64, 3) and ep.images.dtype == np.uint8
    for t in range(n):
        for c in range(2):
            mean = ep.images[t, c].reshape(-1, 3).mean(axis=0)
            assert np.abs(mean - frame_colour(e, t, c)).max() <= colour_tol, (e, t, c, mean)
    np.testing.assert_array_equal(ep.proprio, np.stack([state_of(e, t) for t in range(n)]))
    np.testing.assert_array_equal(ep.actions, np.stack([action_of(e, t) for t in range(n)]))


def test_select_per_task_is_seeded_and_order_free() -> None:
    cands = [(i, TASKS[EPISODE_TASK[i]]) for i in range(5)]
    a = select_per_task(cands, 1, seed=7)
    assert a == select_per_task(list(reversed(cands)), 1, seed=7)
    assert sorted(task for _, task in a) == sorted(TASKS)  # one per description
    assert len(select_per_task(cands, 10, seed=0)) == 5  # all when fewer than asked
    picks = {tuple(k for k, _ in select_per_task(cands, 1, seed=s)) for s in range(20)}
    assert len(picks) > 1  # the seed matters
    with pytest.raises(ValueError):
        select_per_task(cands, 0)


def test_lerobot_v21_images_in_parquet(tmp_path: Path) -> None:
    fx = write_lerobot_v21(tmp_path / "libero_pi", "image")
    ds = LeRobotDataset(fx.root)
    assert ds.image_keys == ("image", "wrist_image") and ds.state_key == "state" and ds.action_key == "actions"
    assert ds.episode_tasks == [(e, TASKS[EPISODE_TASK[e]]) for e in range(5)]
    for e in range(5):
        _check_episode(ds.load(e), e, colour_tol=0)  # PNG: exact

    eps = load_lerobot_episodes(fx.root, per_task=1, seed=3)
    assert [ep.instruction for ep in eps] == sorted(TASKS)
    again = load_lerobot_episodes(fx.root, per_task=1, seed=3)
    assert [ep.info["source_episode"] for ep in eps] == [ep.info["source_episode"] for ep in again]
    assert all(ep.proprio_names == tuple(f"s{i}" for i in range(8)) for ep in eps)


def test_lerobot_v21_videos(tmp_path: Path) -> None:
    fx = write_lerobot_v21(tmp_path / "libero_video", "video")
    ds = LeRobotDataset(fx.root)
    assert ds.state_key == "observation.state" and ds.action_key == "action"
    for e in (0, 3):
        _check_episode(ds.load(e), e, colour_tol=6)  # AV1 is lossy: the colour, not the bits


def test_lerobot_v30_concatenated_videos(tmp_path: Path) -> None:
    fx = write_lerobot_v30(tmp_path / "libero_v3")
    ds = LeRobotDataset(fx.root)
    assert ds.version == "v3.0"
    for e in range(5):  # episodes deep in the shared file need the seek + timestamp offset
        _check_episode(ds.load(e), e, colour_tol=6)
    eps = load_lerobot_episodes(fx.root, per_task=2, seed=0)
    assert len(eps) == 4 and sorted({ep.instruction for ep in eps}) == sorted(TASKS)


def test_lerobot_errors(tmp_path: Path) -> None:
    fx = write_lerobot_v21(tmp_path / "bad", "image")
    with pytest.raises(CalibDataError, match="no camera feature 'cam9'"):
        LeRobotDataset(fx.root, image_keys=["cam9"])
    (fx.root / "data/chunk-000/episode_000002.parquet").unlink()
    with pytest.raises(CalibDataError, match="episode_000002.parquet: missing"):
        LeRobotDataset(fx.root).load(2)
    (fx.root / "meta/info.json").write_text('{"codebase_version": "v1.6"}')
    with pytest.raises(CalibDataError, match="v1.6"):
        LeRobotDataset(fx.root)


def test_libero_hdf5(tmp_path: Path) -> None:
    files = write_libero_hdf5(tmp_path / "libero_10")
    assert instruction_from_filename(files[1]) == "open the top drawer of the cabinet"

    eps = load_libero_hdf5_episodes(files[0].parent, per_task=1, seed=0)
    assert [ep.instruction for ep in eps] == sorted(TASKS)
    for ep in eps:
        f_idx = 0 if ep.instruction == TASKS[0] else 1
        d = int(ep.info["source_demo"].split("_")[1])
        e = 3 * f_idx + d
        assert ep.num_steps == 3 + d
        assert ep.camera_names == ("agentview_rgb", "eye_in_hand_rgb")
        # rotated by 180 degrees (OFT's convention): the marker moved from top-left to bottom-right
        assert (ep.images[:, :, -1, -1] == 255).all() and (ep.images[:, :, 0, 0] != 255).all()
        assert np.abs(ep.images[0, 1, 5, 5].astype(int) - frame_colour(e, 0, 1)).max() == 0
        np.testing.assert_allclose(ep.proprio, np.stack([state_of(e, t) for t in range(ep.num_steps)]))
        np.testing.assert_allclose(ep.actions, np.stack([action_of(e, t) for t in range(ep.num_steps)]))

    # every demo, unrotated, with OFT's gripper convention
    raw = load_libero_hdf5_episodes(files[0], per_task=None, rotate_180=False, action_transform=libero_gripper_to_oft)
    assert len(raw) == 3 and (raw[0].images[:, :, 0, 0] == 255).all()
    np.testing.assert_array_equal(raw[0].actions[:, -1], [0.0, 1.0, 0.0])  # +1 close -> 0, -1 open -> 1


def test_loaded_episodes_round_trip_through_the_episode_format(tmp_path: Path) -> None:
    files = write_libero_hdf5(tmp_path / "libero")
    ep = load_libero_hdf5_episodes(files[0], per_task=1, seed=1)[0]
    back = load_episode(save_episode(tmp_path / "calib" / "ep.npz", ep))
    np.testing.assert_array_equal(back.images, ep.images)
    assert back.instruction == ep.instruction and back.source == "libero-hdf5"
    assert back.info["source_demo"] == ep.info["source_demo"]


def test_calibration_episodes_become_a_dataset(tmp_path: Path) -> None:
    """Loaded episodes -> a dataset directory that `omnimodel eval --data` can read."""
    fx = write_lerobot_v21(tmp_path / "libero_pi", "image")
    eps = load_lerobot_episodes(fx.root, per_task=1, seed=0)
    manifest = write_dataset(tmp_path / "calib_set", {"calib": eps}, "libero_calib")
    assert manifest.camera_names == ("image", "wrist_image") and manifest.image_size == (64, 64)
    ds = EpisodeDataset(tmp_path / "calib_set")
    back = list(ds.episodes("calib"))
    assert [ep.instruction for ep in back] == [ep.instruction for ep in eps]
    np.testing.assert_array_equal(back[1].images, eps[1].images)
    stats = json.loads(ds.statistics_path.read_text())["libero_calib"]
    assert stats["num_trajectories"] == 2 and len(stats["proprio"]["q01"]) == 8
