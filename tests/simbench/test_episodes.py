"""The episode format and dataset_statistics.json (OFT's schema), without the simulator."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from omnimodel.simbench.episodes import (
    DatasetManifest,
    Episode,
    EpisodeDataset,
    EpisodeFormatError,
    load_episode,
    read_manifest,
    save_episode,
    write_manifest,
)
from omnimodel.simbench.statistics import STAT_KEYS, compute_statistics, write_dataset_statistics


def _episode(seed: int, steps: int = 6, task: str = "push") -> Episode:
    rng = np.random.default_rng(seed)
    return Episode(
        instruction=f"{task} the thing",
        images=rng.integers(0, 256, size=(steps, 2, 8, 10, 3), dtype=np.uint8),
        proprio=rng.normal(size=(steps, 4)),
        actions=rng.uniform(-1, 1, size=(steps, 4)),
        camera_names=("third_person", "gripper"),
        task=task,
        seed=seed,
        success=True,
        source="test",
        proprio_names=("hand_x", "hand_y", "hand_z", "gripper_open"),
        action_names=("dx", "dy", "dz", "grip"),
        states=rng.normal(size=(steps, 39)),
        info={"env_name": "push-v3"},
    )


def test_episode_round_trip(tmp_path: Path) -> None:
    ep = _episode(1)
    path = save_episode(tmp_path / "split" / "push-0000001.npz", ep)
    back = load_episode(path)
    for name in ("images", "proprio", "actions", "states"):
        np.testing.assert_array_equal(getattr(back, name), getattr(ep, name))
    assert back.images.dtype == np.uint8 and back.proprio.dtype == np.float32 and back.actions.dtype == np.float32
    for name in ("instruction", "camera_names", "task", "seed", "success", "source", "proprio_names", "action_names"):
        assert getattr(back, name) == getattr(ep, name), name
    assert back.info == {"env_name": "push-v3"}
    light = load_episode(path, images=False)
    assert not light.has_images and light.num_steps == 6
    np.testing.assert_array_equal(light.actions, ep.actions)
    images, proprio = back.observation(2)
    assert len(images) == 2 and images[1].shape == (8, 10, 3)
    np.testing.assert_array_equal(proprio, ep.proprio[2])
    # plain numpy reads it too: the format has no pickles
    with np.load(path, allow_pickle=False) as z:
        assert json.loads(str(z["meta"]))["format"] == "omnimodel-episode"
    assert not list(tmp_path.glob("split/.*.tmp"))  # atomic write left nothing behind


def test_episode_validation(tmp_path: Path) -> None:
    ep = _episode(2)
    with pytest.raises(EpisodeFormatError, match="proprio must be"):
        Episode(ep.instruction, ep.images, ep.proprio[:-1], ep.actions, ep.camera_names)
    with pytest.raises(EpisodeFormatError, match="camera names"):
        Episode(ep.instruction, ep.images, ep.proprio, ep.actions, ("only_one",))
    bad = ep.actions.copy()
    bad[0, 0] = np.nan
    with pytest.raises(EpisodeFormatError, match="NaN"):
        Episode(ep.instruction, ep.images, ep.proprio, bad, ep.camera_names)
    (tmp_path / "x.npz").write_bytes(b"not a zip")
    with pytest.raises(EpisodeFormatError, match="x.npz"):
        load_episode(tmp_path / "x.npz")


def test_manifest_and_dataset(tmp_path: Path) -> None:
    rels = []
    for s in range(3):
        rel = f"train/push-{s:07d}.npz"
        save_episode(tmp_path / rel, _episode(s))
        rels.append(rel)
    manifest = DatasetManifest(
        dataset_key="metaworld_test",
        camera_names=("third_person", "gripper"),
        image_size=(8, 10),
        proprio_names=("a", "b", "c", "d"),
        action_names=("dx", "dy", "dz", "grip"),
        tasks={"push": "push the thing"},
        splits={"train": rels},
        created_by={"tool": "test"},
    )
    write_manifest(tmp_path, manifest)
    assert read_manifest(tmp_path) == manifest
    ds = EpisodeDataset(tmp_path)
    assert [e.seed for e in ds.episodes("train", images=False)] == [0, 1, 2]
    with pytest.raises(EpisodeFormatError, match="no split 'calib'"):
        ds.split_paths("calib")


def test_statistics_schema_and_values(tmp_path: Path) -> None:
    eps = [_episode(s, steps=5 + s) for s in range(4)]
    entry = compute_statistics(eps)
    assert set(entry) == {"action", "proprio", "num_transitions", "num_trajectories"}
    assert entry["num_trajectories"] == 4 and entry["num_transitions"] == sum(5 + s for s in range(4))
    for key, arrays in (("action", [e.actions for e in eps]), ("proprio", [e.proprio for e in eps])):
        x = np.concatenate(arrays).astype(np.float64)
        stats = entry[key]
        assert set(stats) == set(STAT_KEYS)
        np.testing.assert_allclose(stats["mean"], x.mean(0))
        np.testing.assert_allclose(stats["std"], x.std(0))
        np.testing.assert_allclose(stats["min"], x.min(0))
        np.testing.assert_allclose(stats["max"], x.max(0))
        np.testing.assert_allclose(stats["q01"], np.quantile(x, 0.01, axis=0))
        np.testing.assert_allclose(stats["q99"], np.quantile(x, 0.99, axis=0))
        assert stats["mask"] == [True] * 4
    masked = compute_statistics(eps, action_mask=[True, True, True, False])
    assert masked["action"]["mask"] == [True, True, True, False]

    path = write_dataset_statistics(tmp_path / "dataset_statistics.json", "metaworld_test", entry)
    assert json.loads(path.read_text()) == {"metaworld_test": entry}


def test_statistics_are_what_the_oft_loader_reads(tmp_path: Path) -> None:
    """A checkpoint carrying our statistics loads, picks the metaworld platform and normalises with them."""
    from omnimodel.arch.openvla_oft import MiniatureSpec, load_policy, write_miniature

    ckpt = write_miniature(tmp_path / "mini", MiniatureSpec(seed=1, platform="metaworld", llm_layers=1))
    entry = compute_statistics([_episode(s) for s in range(3)])
    (ckpt / "dataset_statistics.json").unlink()
    write_dataset_statistics(ckpt / "dataset_statistics.json", "metaworld_oft_bench", entry)
    policy = load_policy(ckpt)
    assert policy.config.platform.name == "metaworld"
    assert (policy.config.num_actions_chunk, policy.config.action_dim) == (8, 4)
    np.testing.assert_allclose(policy.norm_stats.action.low, entry["action"]["q01"])
    np.testing.assert_allclose(policy.norm_stats.proprio.high, entry["proprio"]["q99"])
