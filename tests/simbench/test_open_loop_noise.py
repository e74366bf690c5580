"""A flow-matching policy's open-loop score against a reference draws the same noise for both."""

from __future__ import annotations

import itertools

import numpy as np


def test_open_loop_after_other_calls_pairs_the_noise_with_the_reference() -> None:
    from omnimodel.demo_assets import DEMO_CALIB_DIR, PI05_DEMO_POLICY_DIR
    from omnimodel.simbench.episodes import EpisodeDataset
    from omnimodel.simbench.evaluate import evaluate_open_loop
    from omnimodel.simbench.policies import TorchPolicy

    data = EpisodeDataset(DEMO_CALIB_DIR)
    policy, reference = TorchPolicy(PI05_DEMO_POLICY_DIR), TorchPolicy(PI05_DEMO_POLICY_DIR)
    ep = next(data.episodes("calib"))
    images, proprio = ep.observation(0)
    first = policy(images, ep.instruction, proprio)
    assert not np.allclose(policy(images, ep.instruction, proprio), first)  # the noise differs per call
    # as after a closed loop: the policy has made calls the reference has not
    result = evaluate_open_loop(policy, itertools.islice(data.episodes("calib"), 2), reference=reference,
                                progress=False)
    assert result["samples"] > 2
    assert result["l1_to_reference"] == 0.0  # the same model with the same seeds, query for query
    assert result["l1_to_ground_truth"] > 0.0
