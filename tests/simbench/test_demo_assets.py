"""The shipped demo policy and calibration split load and run (no simulator needed)."""

from __future__ import annotations

import numpy as np


def test_demo_policy_and_calib_split_load_and_run() -> None:
    from omnimodel.demo_assets import DEMO_CALIB_DIR, DEMO_POLICY_DIR
    from omnimodel.simbench.episodes import EpisodeDataset
    from omnimodel.simbench.policies import OFTTorchPolicy

    policy = OFTTorchPolicy(DEMO_POLICY_DIR)
    info = policy.describe()
    assert info["platform"] == "metaworld" and info["chunk"] == 8 and info["image_size"] == 56
    ds = EpisodeDataset(DEMO_CALIB_DIR)
    episodes = list(ds.episodes("calib"))
    assert sorted({ep.task for ep in episodes}) == ["button-press-topdown", "drawer-open", "pick-place", "push"]
    errors = []
    for ep in episodes:
        images, proprio = ep.observation(0)
        chunk = policy(images, ep.instruction, proprio)
        assert chunk.shape == (8, 4) and np.isfinite(chunk).all()
        errors.append(np.abs(chunk - ep.actions[:8]).mean())
    # trained, not random: the first chunk is close to the expert's recorded actions
    assert float(np.mean(errors)) < 0.2


def test_pi05_demo_policy_is_registered_and_runs_on_its_calib_split() -> None:
    """The shipped pi0.5 policy is what `convert pi05 --demo` uses, loads through the registry, predicts
    chunks close to the expert on held-out episodes (a random initialisation is ~1.3 off), and stays small."""
    import json

    from omnimodel.arch import registry
    from omnimodel.demo_assets import DEMO_CALIB_DIR, PI05_DEMO_POLICY_DIR
    from omnimodel.simbench.episodes import EpisodeDataset
    from omnimodel.simbench.policies import TorchPolicy

    arch = registry.get("pi05")
    assert arch.demo_checkpoint == PI05_DEMO_POLICY_DIR and arch.demo_calib == DEMO_CALIB_DIR
    assert registry.for_config(json.loads((PI05_DEMO_POLICY_DIR / "config.json").read_text())) is arch
    assert registry.demo_family().name == "openvla-oft"  # still train-demo's default
    assert sum(f.stat().st_size for f in PI05_DEMO_POLICY_DIR.iterdir()) < 5_000_000
    assert json.loads((PI05_DEMO_POLICY_DIR / "omnimodel_training.json").read_text())["stages"]

    policy = TorchPolicy(PI05_DEMO_POLICY_DIR)
    info = policy.describe()
    assert info["kind"] == "pi05-pytorch" and info["chunk"] == 8 and info["image_size"] == 56
    assert info["num_inference_steps"] == 10
    errors = []
    for ep in EpisodeDataset(DEMO_CALIB_DIR).episodes("calib"):
        images, proprio = ep.observation(0)
        chunk = policy(images, ep.instruction, proprio)
        assert chunk.shape == (8, 4) and np.isfinite(chunk).all()
        errors.append(np.abs(chunk - ep.actions[:8]).mean())
    assert float(np.mean(errors)) < 0.3
