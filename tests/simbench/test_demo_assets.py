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
