"""pi0 / pi0.5 demo training (``train-demo --arch``) and evaluation through the registry."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from simbench_fixtures import use_small_pi0_preset

from omnimodel.simbench.episodes import EpisodeDataset

pytestmark = pytest.mark.usefixtures("rendering")


@pytest.mark.parametrize("kind", ["pi05", "pi0"])
def test_train_demo_pi0_family(kind: str, demo_dataset: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    from omnimodel.arch.registry import get
    from omnimodel.cli.main import main
    from omnimodel.simbench.policies import TorchPolicy, load_eval_policy

    use_small_pi0_preset(monkeypatch, kind)
    out = tmp_path / "run"
    args = ["train-demo", str(demo_dataset), "--out", str(out), "--arch", kind, "--steps", "3", "--batch-size", "4",
            "--warmup", "1", "--checkpoint-every", "0", "--log-every", "0"]
    assert main(args) == 0
    report = json.loads((out / "train_report.json").read_text())
    assert report["arch"] == kind and report["steps_done"] == 3 and np.isfinite(report["last_loss"])

    # a release-layout checkpoint of the family, with the dataset's statistics
    policy = get(kind).load_policy(out / "final")
    assert policy.config.kind == kind and policy.config.action_dim == 4
    stats = json.loads((demo_dataset / "dataset_statistics.json").read_text())
    entry = next(iter(stats.values()))
    for feature, part in ((policy.norm_stats.action, "action"), (policy.norm_stats.state, "proprio")):
        assert feature.stats  # pi0.5: q01/q99 (quantiles), pi0: mean/std
        for name, value in feature.stats.items():
            np.testing.assert_allclose(value.numpy(), entry[part][name], rtol=1e-6)

    # evaluation runs it through the registry; the same call sequence gives the same actions
    ev = load_eval_policy(str(out / "final"))
    assert isinstance(ev, TorchPolicy) and ev.describe()["kind"] == f"{kind}-pytorch"
    ep = next(EpisodeDataset(demo_dataset).episodes("calib"))
    images, proprio = ep.observation(0)
    first = ev(images, ep.instruction, proprio)
    assert first.shape == (8, 4) and np.isfinite(first).all()
    again = load_eval_policy(str(out / "final"))(images, ep.instruction, proprio)
    np.testing.assert_array_equal(again, first)

    # fixed seeds: the same command gives the same weights
    assert main(args + ["--overwrite"]) == 0
    np.testing.assert_array_equal(load_eval_policy(str(out / "final"))(images, ep.instruction, proprio), first)
    capsys.readouterr()
    assert main(["train-demo", str(demo_dataset), "--out", str(tmp_path / "x"), "--arch", kind, "--size", "huge"]) == 2
    assert "presets" in capsys.readouterr().err


def test_flow_matching_batches(demo_dataset: Path, tmp_path: Path, monkeypatch) -> None:
    import torch

    from omnimodel.arch.pi0 import training
    from omnimodel.simbench.train import init_checkpoint

    use_small_pi0_preset(monkeypatch, "pi05")
    ckpt = init_checkpoint(tmp_path / "init", training.PI05_SIZES["tiny"], demo_dataset)
    trainer = training.Pi0Training("pi05")
    policy = trainer.load(ckpt)
    data = trainer.samples(EpisodeDataset(demo_dataset), "train", policy)
    images, image_mask, tokens, token_mask, state, actions = data.batch(np.random.default_rng(0), 6, policy, shift=4)
    cfg = policy.config
    assert images.shape == (6, len(cfg.camera_keys), 3, 56, 56) and float(images.abs().max()) <= 1.0
    assert state is None  # pi0.5 reads its state from the prompt
    assert actions.shape == (6, cfg.chunk_size, cfg.max_action_dim)
    assert float(actions[..., cfg.action_dim:].abs().max()) == 0.0  # padding dims carry no target
    # prompts carry the discretised state, so their lengths differ; padding is masked
    lengths = token_mask.sum(1)
    assert tokens.shape[1] == int(lengths.max()) and bool((tokens[~token_mask] == cfg.pad_token_id).all())
    t = training.sample_time(20000, torch.Generator().manual_seed(0))
    assert float(t.min()) >= 0.001 and float(t.max()) < 1.0 and abs(float(t.mean()) - 0.6004) < 0.01
    loss = trainer.loss(policy, (images, image_mask, tokens, token_mask, state, actions),
                        torch.Generator().manual_seed(1))
    assert loss.ndim == 0 and float(loss.detach()) > 0
