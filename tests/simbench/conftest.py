"""Fixtures for the simulator benchmark tests: a small collected dataset and a Meta-World miniature
policy (the LeRobot / LIBERO file writers are in simbench_fixtures.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SIM_TASKS = ("reach", "push")
SIM_IMAGE_SIZE = 56


def _require_rendering() -> None:
    from omnimodel.simbench.rendering import available_backends

    if os.environ.get("MUJOCO_GL") or available_backends():
        return
    if os.environ.get("CI"):
        pytest.fail("no headless OpenGL for MuJoCo in CI: .ci/run should have installed it")
    pytest.skip("no headless OpenGL (install libegl1 libegl-mesa0 libgl1-mesa-dri, or libosmesa6)")


@pytest.fixture(scope="session")
def rendering() -> None:
    _require_rendering()


@pytest.fixture(scope="session")
def demo_dataset(tmp_path_factory, rendering) -> Path:
    """Two tasks, 2 train + 1 calib expert episodes each, 56 px."""
    from omnimodel.simbench.collect import CollectConfig, collect_demos

    root = tmp_path_factory.mktemp("simbench") / "demos"
    collect_demos(
        root,
        CollectConfig(tasks=SIM_TASKS, train_per_task=2, calib_per_task=1, seed=3, image_size=SIM_IMAGE_SIZE),
        progress=False,
    )
    return root


@pytest.fixture(scope="session")
def mini_policy_dir(tmp_path_factory) -> Path:
    """A random OFT miniature on the Meta-World platform (4-D actions, 4-D proprio, two 56 px images)."""
    from omnimodel.arch.openvla_oft import MiniatureSpec, write_miniature

    return write_miniature(tmp_path_factory.mktemp("simbench") / "mini", MiniatureSpec(seed=5, platform="metaworld"))
