"""`collect-demos --goal-state`: the goal position joins the proprio state, a policy trained on it is built
with a 7-D proprio projector, and `eval` gives such a policy the same state in closed loop."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.usefixtures("rendering")


def test_sim_observes_the_goal_only_when_asked() -> None:
    from omnimodel.simbench.sim import GOAL_PROPRIO_NAMES, PROPRIO_NAMES, MetaWorldSim, SimConfig, proprio_names_for

    with MetaWorldSim("reach", SimConfig(image_size=16, proprio=GOAL_PROPRIO_NAMES)) as sim:
        obs = sim.reset(seed=4)
        np.testing.assert_array_equal(obs.proprio, obs.state[[0, 1, 2, 3, 36, 37, 38]].astype(np.float32))
        first_goal = obs.proprio[4:].copy()
        # the goal moves with the layout, and is what Meta-World's reach success is measured against
        assert not np.allclose(sim.reset(seed=5).proprio[4:], first_goal)
    with MetaWorldSim("reach", SimConfig(image_size=16)) as sim:
        assert sim.reset(seed=4).proprio.shape == (4,)
    with pytest.raises(ValueError, match="unknown proprio value"):
        SimConfig(proprio=("hand_x", "goal_w"))
    assert proprio_names_for(7) == GOAL_PROPRIO_NAMES
    assert proprio_names_for(4) == proprio_names_for(0) == proprio_names_for(None) == PROPRIO_NAMES


def test_goal_state_from_collection_to_closed_loop(tmp_path: Path, monkeypatch, capsys) -> None:
    from omnimodel.cli.main import main
    from omnimodel.simbench import train as train_mod
    from omnimodel.simbench.episodes import EpisodeDataset

    data = tmp_path / "data"
    assert main(["collect-demos", str(data), "--tasks", "reach", "--train", "2", "--calib", "1", "--image-size", "56",
                 "--goal-state", "--quiet"]) == 0
    ds = EpisodeDataset(data)
    assert ds.manifest.proprio_names[4:] == ("goal_x", "goal_y", "goal_z")
    ep = next(ds.episodes("train"))
    assert ep.proprio.shape[1] == 7 and np.ptp(ep.proprio[:, 4:], axis=0).max() == 0  # the goal holds still

    monkeypatch.setitem(train_mod.SIZES, "tiny", train_mod.ModelSize("tiny", 56, 32, 3, 2, 64, 1, 4))
    run = tmp_path / "run"
    assert main(["train-demo", str(data), "--out", str(run), "--steps", "2", "--batch-size", "2", "--warmup", "0",
                 "--log-every", "0"]) == 0
    stats = json.loads((run / "final" / "dataset_statistics.json").read_text())
    assert len(next(iter(stats.values()))["proprio"]["q01"]) == 7

    # Closed loop: a 7-D policy given the default 4-D state would fail ("proprio has 4 values ..."), so a
    # finished evaluation means the sim observed the goal for it.
    out = tmp_path / "eval.json"
    assert main(["eval", "--policy", str(run / "final"), "--tasks", "reach", "--episodes", "1", "--max-steps", "8",
                 "--json", str(out), "--quiet"]) == 0
    result = json.loads(out.read_text())
    assert result["policy"]["proprio_dim"] == 7
    assert result["closed_loop"]["config"]["proprio"] == ["hand_x", "hand_y", "hand_z", "gripper_open",
                                                          "goal_x", "goal_y", "goal_z"]
    capsys.readouterr()
