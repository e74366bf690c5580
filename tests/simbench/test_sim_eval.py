"""Meta-World wrapper, demonstration collection, closed/open-loop evaluation and the two CLI commands.

Smoke sizes (a few short episodes at 56 px) keep this file to ~20 s on one core.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from omnimodel.simbench.episodes import EpisodeDataset
from omnimodel.simbench.evaluate import (
    ClosedLoopConfig,
    deterministic_view,
    evaluate_closed_loop,
    evaluate_open_loop,
    make_result,
)

pytestmark = pytest.mark.usefixtures("rendering")


def test_sim_is_seeded_and_observes_as_documented() -> None:
    from omnimodel.simbench.sim import MetaWorldSim, SimConfig

    with MetaWorldSim("push", SimConfig(image_size=56)) as sim:
        a = sim.reset(11)
        assert [im.shape for im in a.images] == [(56, 56, 3), (56, 56, 3)]
        assert a.images[0].dtype == np.uint8 and a.images[0].std() > 10  # a real picture, not a blank
        assert a.proprio.dtype == np.float32 and a.proprio.shape == (4,)
        np.testing.assert_array_equal(a.proprio, a.state[:4].astype(np.float32))
        assert 0.0 <= a.proprio[3] <= 1.0
        step = sim.step(np.array([0.0, 0.0, 1.0, 0.0]))
        assert step.observation.proprio[2] > a.proprio[2]  # +dz raises the hand
        assert not np.array_equal(step.observation.images[1], a.images[1])  # the gripper camera follows
        b = sim.reset(11)
        c = sim.reset(12)
    for x, y in zip(a.images, b.images, strict=True):
        np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(a.state, b.state)
    assert not np.array_equal(a.state[4:7], c.state[4:7])  # another seed, another puck position
    with MetaWorldSim("reach", SimConfig(image_size=32)) as sim:
        with pytest.raises(RuntimeError, match="reset"):
            sim.step(np.zeros(4))
        sim.reset(0)
        with pytest.raises(ValueError, match="4-D"):
            sim.step(np.zeros(7))


def test_collected_dataset(demo_dataset: Path) -> None:
    ds = EpisodeDataset(demo_dataset)
    m = ds.manifest
    assert m.dataset_key == "metaworld_oft_bench" and m.camera_names == ("third_person", "gripper")
    assert {k: len(v) for k, v in m.splits.items()} == {"train": 4, "calib": 2}
    train = list(ds.episodes("train"))
    calib = list(ds.episodes("calib"))
    assert all(ep.success and ep.source == "metaworld-expert" for ep in train + calib)
    assert {ep.seed for ep in train}.isdisjoint({ep.seed for ep in calib})
    ep = train[0]
    assert ep.images.shape[1:] == (2, 56, 56, 3) and ep.actions.shape[1] == 4 and ep.states.shape[1] == 39
    assert np.abs(ep.actions).max() <= 1.0
    stats = json.loads(ds.statistics_path.read_text())["metaworld_oft_bench"]
    assert stats["num_trajectories"] == 4 and stats["num_transitions"] == sum(e.num_steps for e in train)
    np.testing.assert_allclose(stats["action"]["mean"], np.concatenate([e.actions for e in train]).mean(0), rtol=1e-6)


def test_collection_is_deterministic(demo_dataset: Path, tmp_path: Path) -> None:
    from omnimodel.simbench.collect import CollectConfig, collect_demos

    again = tmp_path / "again"
    collect_demos(
        again, CollectConfig(tasks=("push",), train_per_task=1, calib_per_task=0, seed=3, image_size=56), progress=False
    )
    first = next(EpisodeDataset(demo_dataset).episodes("train", tasks=("push",)))
    second = next(EpisodeDataset(again).episodes("train"))
    assert first.seed == second.seed
    np.testing.assert_array_equal(first.images, second.images)
    np.testing.assert_array_equal(first.actions, second.actions)


def test_expert_succeeds_in_closed_loop() -> None:
    from omnimodel.simbench.experts import ExpertPolicy

    cfg = ClosedLoopConfig(tasks=("reach", "push"), episodes_per_task=2, image_size=32)
    result = evaluate_closed_loop(ExpertPolicy(), cfg, progress=False)
    assert result["average_success_rate"] == 1.0
    push = result["tasks"]["push"]
    assert push["successes"] == 2 and [e["seed"] for e in push["per_episode"]] == [2_000_000, 2_000_001]
    assert all(e["steps"] < push["max_steps"] for e in push["per_episode"])


def test_oft_policy_closed_and_open_loop_deterministic(mini_policy_dir: Path, demo_dataset: Path) -> None:
    """A random miniature runs end to end (success irrelevant), twice with identical numbers."""
    from omnimodel.simbench.policies import OFTTorchPolicy

    def run() -> dict:
        policy = OFTTorchPolicy(mini_policy_dir, threads=1)
        cfg = ClosedLoopConfig(tasks=("reach", "push"), episodes_per_task=1, max_steps=20, image_size=56)
        closed = evaluate_closed_loop(policy, cfg, progress=False)
        opened = evaluate_open_loop(
            policy, EpisodeDataset(demo_dataset).episodes("calib"), reference=policy, progress=False
        )
        return make_result(policy, closed_loop=closed, open_loop=opened, reference=policy)

    first, second = run(), run()
    assert deterministic_view(first) == deterministic_view(second)
    per_episode = first["closed_loop"]["tasks"]["push"]["per_episode"][0]
    assert per_episode["steps"] == 20 and per_episode["policy_calls"] == 3  # chunks of 8: 8 + 8 + 4
    ol = first["open_loop"]
    assert ol["episodes"] == 2 and ol["samples"] > 2 and ol["l1_to_ground_truth"] > 0
    assert ol["l1_to_reference"] == 0.0 and ol["cosine_to_reference"] == pytest.approx(1.0)
    assert set(ol["tasks"]) == {"reach", "push"} and len(ol["l1_to_ground_truth_per_dim"]) == 4
    json.dumps(first)  # the result is plain JSON


def test_open_loop_reference_differs_for_another_policy(mini_policy_dir: Path, demo_dataset: Path) -> None:
    from omnimodel.simbench.policies import OFTTorchPolicy

    policy = OFTTorchPolicy(mini_policy_dir)

    def shifted(images, instruction, proprio):
        return policy(images, instruction, proprio) + 0.01

    ep = next(EpisodeDataset(demo_dataset).episodes("calib"))
    out = evaluate_open_loop(shifted, [ep], reference=policy, progress=False)
    assert out["l1_to_reference"] == pytest.approx(0.01, rel=1e-6)
    assert 0.9 < out["cosine_to_reference"] < 1.0


def test_cli_collect_and_eval(tmp_path: Path, mini_policy_dir: Path, capsys) -> None:
    from omnimodel.cli.main import main

    data = tmp_path / "data"
    argv = [
        "collect-demos",
        str(data),
        "--tasks",
        "reach",
        "--train",
        "1",
        "--calib",
        "1",
        "--image-size",
        "32",
        "--quiet",
    ]
    assert main(argv) == 0
    assert "reach" in capsys.readouterr().out
    assert main(argv) == 2  # not empty, no --overwrite
    assert "--overwrite" in capsys.readouterr().err

    out = tmp_path / "result.json"
    argv = [
        "eval",
        "--policy",
        "expert",
        "--episodes",
        "1",
        "--data",
        str(data),
        "--no-closed-loop",
        "--json",
        str(out),
        "--quiet",
    ]
    # the expert reads the simulator's state, so it cannot be scored on stored episodes
    assert main(argv) == 2
    assert "privileged" in capsys.readouterr().err

    argv = [
        "eval",
        "--policy",
        str(mini_policy_dir),
        "--data",
        str(data),
        "--episodes",
        "1",
        "--max-steps",
        "8",
        "--json",
        str(out),
        "--quiet",
    ]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "closed loop" in printed and "open loop" in printed
    result = json.loads(out.read_text())
    assert result["schema"] == "omnimodel-eval" and list(result["closed_loop"]["tasks"]) == ["reach"]
    assert result["policy"]["kind"] == "openvla-oft-pytorch"


def test_train_prototype_learns_and_saves_a_loadable_checkpoint(demo_dataset: Path, tmp_path: Path) -> None:
    from omnimodel.simbench.policies import OFTTorchPolicy
    from omnimodel.simbench.train import ModelSize, init_checkpoint, train

    size = ModelSize("test", 56, 32, 3, 2, 64, 1, 4)
    ckpt = init_checkpoint(tmp_path / "init", size, demo_dataset)
    report = train(ckpt, demo_dataset, steps=3, batch_size=4, out_dir=tmp_path / "trained")
    assert report.steps == 3 and np.isfinite(report.losses).all()
    policy = OFTTorchPolicy(tmp_path / "trained")
    assert policy.describe()["dataset_key"] == "metaworld_oft_bench"
    ep = next(EpisodeDataset(demo_dataset).episodes("calib"))
    images, proprio = ep.observation(0)
    assert policy(images, ep.instruction, proprio).shape == (8, 4)
    report = train(tmp_path / "trained", demo_dataset, steps=1, batch_size=2, out_dir=tmp_path / "trained")
    OFTTorchPolicy(tmp_path / "trained")  # re-saving into the same directory leaves one head file


def test_train_demo_command_writes_loadable_checkpoints(demo_dataset: Path, tmp_path: Path, monkeypatch) -> None:
    import json

    from omnimodel.cli.main import main
    from omnimodel.simbench import train as train_mod
    from omnimodel.simbench.policies import OFTTorchPolicy

    # A model smaller than "tiny" keeps this a few seconds; the command path is the same.
    monkeypatch.setitem(train_mod.SIZES, "tiny", train_mod.ModelSize("tiny", 56, 32, 3, 2, 64, 1, 4))
    out = tmp_path / "run"
    args = ["train-demo", str(demo_dataset), "--out", str(out), "--steps", "4", "--batch-size", "4"]
    assert main(args + ["--warmup", "2", "--checkpoint-every", "2", "--log-every", "2"]) == 0
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-000002"]
    report = json.loads((out / "train_report.json").read_text())
    assert report["steps_done"] == 4 and not report["stopped_early"]
    policy = OFTTorchPolicy(out / "final")
    ep = next(EpisodeDataset(demo_dataset).episodes("calib"))
    images, proprio = ep.observation(0)
    first = policy(images, ep.instruction, proprio)
    assert first.shape == (8, 4) and np.isfinite(first).all()
    # the tokenizer was trained on the dataset's instructions: no byte-fallback pieces in the prompts
    tok = policy.policy.tokenizer
    assert all(len(tok.encode_prompt(i)) < 30 for i in ("push the puck to the green goal",))
    # fixed seeds: the same command again gives the same weights
    assert main(args + ["--warmup", "2", "--checkpoint-every", "0", "--log-every", "0", "--overwrite"]) == 0
    np.testing.assert_array_equal(OFTTorchPolicy(out / "final")(images, ep.instruction, proprio), first)
    # a second stage continues from the first run's policy and writes the same layout
    stage2 = tmp_path / "stage2"
    assert main(["train-demo", str(demo_dataset), "--init", str(out / "final"), "--out", str(stage2), "--steps", "2",
                 "--batch-size", "2", "--schedule", "constant", "--warmup", "0", "--log-every", "0"]) == 0
    assert not (stage2 / "init").exists()
    assert OFTTorchPolicy(stage2 / "final")(images, ep.instruction, proprio).shape == (8, 4)


def test_random_shift_and_lr_schedule() -> None:
    from omnimodel.simbench.train import lr_at, random_shift

    img = np.arange(8 * 8 * 3, dtype=np.uint8).reshape(8, 8, 3)
    shifted = random_shift(img, 2, np.random.default_rng(0))
    assert shifted.shape == img.shape and shifted.dtype == np.uint8
    assert np.array_equal(random_shift(img, 2, np.random.default_rng(0)), shifted)
    lrs = [lr_at(s, lr=1.0, steps=100, schedule="cosine", warmup=10) for s in range(100)]
    assert lrs[0] == 0.1 and lrs[9] == 1.0 and abs(lrs[-1] - 0.1) < 1e-9
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:]))
    assert lr_at(50, lr=0.5, steps=100, schedule="constant", warmup=10) == 0.5


def test_oft_size_presets_are_valid_configs() -> None:
    """Every OpenVLA-OFT preset builds a miniature spec whose attention heads divide its widths (wide56's
    576-wide Llama with 9 heads of 64 included), at an image size its 14 px patches tile."""
    from omnimodel.arch.openvla_oft.training import SIZES

    assert {"tiny", "small56", "wide56", "small", "base"} <= set(SIZES)
    for size in SIZES.values():
        spec = size.miniature_spec(seed=0, instructions=("push the puck",))
        assert size.llm_hidden % size.llm_heads == 0 and size.vit_dim % size.vit_heads == 0, size
        assert size.image_size % 14 == 0 and spec.image_size == size.image_size
        assert spec.llm_hidden == size.llm_hidden and spec.llm_layers == size.llm_layers
    assert SIZES["wide56"].llm_hidden // SIZES["wide56"].llm_heads == 64
