"""`collect-demos --object-state` (the object's position after the goal's) and `train-demo --init` from a
policy trained on less state: the checkpoint is extended with zero weights, so training starts from
exactly the earlier policy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.usefixtures("rendering")


def test_sim_observes_the_object_after_the_goal() -> None:
    from omnimodel.simbench.sim import OBJECT_PROPRIO_NAMES, MetaWorldSim, SimConfig, proprio_names_for

    with MetaWorldSim("push", SimConfig(image_size=16, proprio=OBJECT_PROPRIO_NAMES)) as sim:
        obs = sim.reset(seed=4)
        np.testing.assert_array_equal(obs.proprio, obs.state[[0, 1, 2, 3, 36, 37, 38, 4, 5, 6]].astype(np.float32))
        puck = obs.proprio[7:].copy()
        assert not np.allclose(sim.reset(seed=5).proprio[7:], puck)  # the puck moves with the layout
    assert proprio_names_for(10) == OBJECT_PROPRIO_NAMES


def test_init_from_a_goal_state_policy_on_object_state_data(tmp_path: Path, monkeypatch, capsys) -> None:
    from omnimodel.arch.openvla_oft import load_policy, predict_action
    from omnimodel.cli.main import main
    from omnimodel.simbench import train as train_mod
    from omnimodel.simbench.episodes import EpisodeDataset

    common = ["--tasks", "push", "--train", "2", "--calib", "0", "--image-size", "56", "--quiet"]
    assert main(["collect-demos", str(tmp_path / "goal"), *common, "--goal-state"]) == 0
    assert main(["collect-demos", str(tmp_path / "obj"), *common, "--object-state"]) == 0
    objects = EpisodeDataset(tmp_path / "obj")
    assert objects.manifest.proprio_names[4:] == ("goal_x", "goal_y", "goal_z", "obj_x", "obj_y", "obj_z")
    goal_ep, obj_ep = next(EpisodeDataset(tmp_path / "goal").episodes("train")), next(objects.episodes("train"))
    np.testing.assert_array_equal(obj_ep.proprio[:, :7], goal_ep.proprio)  # same seeds: the same episodes

    monkeypatch.setitem(train_mod.SIZES, "tiny", train_mod.ModelSize("tiny", 56, 32, 3, 2, 64, 1, 4))
    train = ["--steps", "2", "--batch-size", "2", "--warmup", "0", "--log-every", "0"]
    assert main(["train-demo", str(tmp_path / "goal"), "--out", str(tmp_path / "g"), *train]) == 0
    capsys.readouterr()
    assert main(["train-demo", str(tmp_path / "obj"), "--out", str(tmp_path / "o"), "--init",
                 str(tmp_path / "g" / "final"), *train]) == 0
    assert "extended the proprio input from 7 to 10" in capsys.readouterr().out

    # The extended start computes what the goal-state policy did, whatever the object's position.
    before, extended = load_policy(tmp_path / "g" / "final"), load_policy(tmp_path / "o" / "init")
    images, state = obj_ep.observation(3)
    expected = predict_action(before, images, obj_ep.instruction, state[:7])
    for obj in (state[7:], state[7:] + np.float32(0.05)):
        got = predict_action(extended, images, obj_ep.instruction, np.concatenate([state[:7], obj]))
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert load_policy(tmp_path / "o" / "final").config.proprio_projector.proprio_dim == 10

    # Less state than the checkpoint takes is refused in one line, and nothing is trained.
    assert main(["train-demo", str(tmp_path / "goal"), "--out", str(tmp_path / "bad"), "--init",
                 str(tmp_path / "o" / "final"), *train]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "10-D proprio state" in err[0] and "only 7" in err[0], err
    assert not (tmp_path / "bad").exists()

    # A damaged proprio projector in the checkpoint: one line, nothing left behind.
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(tmp_path / "g" / "final", broken)
    next(broken.glob("proprio_projector--*_checkpoint.pt")).write_bytes(b"not a torch file")
    assert main(["train-demo", str(tmp_path / "obj"), "--out", str(tmp_path / "bad"), "--init", str(broken),
                 *train]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot read proprio_projector--" in err[0], err
    assert not (tmp_path / "bad").exists()
