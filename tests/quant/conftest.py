"""One calibrated OFT miniature per session: LLM widths that K/IQ blocks fit, ViT widths that they do not
(32/48/128/179 columns, like SigLIP's 1152/4304 against 256), so both the fitting and padding paths run."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch


@dataclass
class Calibrated:
    policy: object
    samples: list
    stats: object  # CalibStats at lam=0.5 with keep_components
    targets: list
    weights: dict


SPEC_KW = {"seed": 3, "llm_hidden": 256, "llm_intermediate": 512, "llm_layers": 2, "llm_heads": 4}


def make_samples(policy, spec, n: int, seed: int = 0):
    from omnimodel.arch.openvla_oft import random_observation
    from omnimodel.quant import CalibSample

    cfg = policy.config
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        images, proprio = random_observation(spec, seed=100 * seed + i)
        actions = rng.uniform(-0.5, 0.5, (cfg.num_actions_chunk, cfg.action_dim))
        out.append(CalibSample(images, "put the black bowl on the plate", proprio, actions))
    return out


@pytest.fixture(scope="session")
def fresh_miniature(tmp_path_factory):
    """A factory: (policy, samples) on a new copy of the miniature, for tests that edit the model."""
    from omnimodel.arch.openvla_oft import MiniatureSpec, load_policy, write_miniature

    def make(n_samples: int):
        spec = MiniatureSpec(**SPEC_KW)
        policy = load_policy(write_miniature(tmp_path_factory.mktemp("quant_fresh") / "mini", spec))
        return policy, make_samples(policy, spec, n_samples)

    return make


@pytest.fixture(scope="session")
def calibrated(tmp_path_factory) -> Calibrated:
    from omnimodel.arch.openvla_oft import MiniatureSpec, load_policy, write_miniature
    from omnimodel.quant import calibrate, matrix_targets, matrix_weights

    torch.set_num_threads(1)
    spec = MiniatureSpec(**SPEC_KW)
    policy = load_policy(write_miniature(tmp_path_factory.mktemp("quant") / "mini", spec))
    samples = make_samples(policy, spec, 6)
    stats = calibrate(policy, samples, lam=0.5, keep_components=True)
    weights = {k: v.numpy() for k, v in matrix_weights(policy.model).items()}
    return Calibrated(policy, samples, stats, matrix_targets(policy.model), weights)
