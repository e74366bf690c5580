"""train-demo's weight average (--ema) and task weighting (--task-weight)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from simbench_fixtures import use_small_pi0_preset

from omnimodel.simbench.samples import TaskSamples
from omnimodel.simbench.weight_average import WeightAverage


def test_weight_average_is_the_exponential_average_and_swaps_back() -> None:
    p = torch.nn.Parameter(torch.zeros(3))
    avg = WeightAverage([p], decay=0.5)
    expected = np.zeros(3)
    for value in (1.0, 2.0, 4.0):
        with torch.no_grad():
            p.fill_(value)
        avg.update()
        expected = 0.5 * expected + 0.5 * value
    np.testing.assert_allclose(avg.shadow[0].numpy(), expected)
    with avg.applied():
        np.testing.assert_allclose(p.detach().numpy(), expected)
    np.testing.assert_array_equal(p.detach().numpy(), [4.0, 4.0, 4.0])  # training continues from its own weights
    avg.copy_to_model()
    np.testing.assert_allclose(p.detach().numpy(), expected)
    with pytest.raises(ValueError, match="decay"):
        WeightAverage([p], decay=1.0)


def test_weight_average_warmup_ramps_the_decay() -> None:
    """With warm-up the first updates follow the weights closely (decay 0.1, 2/11, ...) and the decay
    reaches the configured one only after ~10 / (1 - decay) updates; without, it is constant."""
    p = torch.nn.Parameter(torch.zeros(1))
    avg = WeightAverage([p], decay=0.99, warmup=True)
    decays = []
    for _ in range(2000):
        decays.append(avg.current_decay())
        with torch.no_grad():
            p.fill_(1.0)
        avg.update()
    assert decays[0] == pytest.approx(0.1) and decays[1] == pytest.approx(2 / 11)
    assert all(a <= b for a, b in zip(decays, decays[1:])) and decays[-1] == 0.99
    # after 20 updates toward 1.0 the warmed average is nearly there; the plain one holds 0.99^20 of the start
    warm, plain = WeightAverage([p], 0.99, warmup=True), WeightAverage([p], 0.99)
    with torch.no_grad():
        warm.shadow[0].zero_()
        plain.shadow[0].zero_()
    for _ in range(20):
        warm.update()
        plain.update()
    assert float(warm.shadow[0]) > 0.95 and float(plain.shadow[0]) == pytest.approx(1 - 0.99**20)


def _samples(counts: dict[str, int]) -> TaskSamples:
    s = TaskSamples()
    s.images.append(np.zeros((max(counts.values()), 1, 2, 2, 3), np.uint8))
    for task, n in counts.items():
        s.index[task] = [(0, t) for t in range(n)]
    s.close("train")
    return s


def test_task_weights_change_the_task_draw() -> None:
    s = _samples({"a": 5, "b": 5, "c": 5})
    rng = np.random.default_rng(0)
    uniform = [s.pick(rng, 1)[0] for _ in range(3000)]
    s.set_task_weights({"a": 4.0})  # b and c weigh 1
    rng = np.random.default_rng(0)
    weighted = [s.pick(rng, 1)[0] for _ in range(3000)]
    assert abs(uniform.count("a") / 3000 - 1 / 3) < 0.04
    assert abs(weighted.count("a") / 3000 - 4 / 6) < 0.04
    s.set_task_weights({"a": 0.0})
    assert "a" not in {s.pick(rng, 1)[0] for _ in range(200)}
    with pytest.raises(ValueError, match="does not have: z"):
        s.set_task_weights({"z": 2.0})
    with pytest.raises(ValueError, match=">= 0"):
        s.set_task_weights({"a": -1.0})


@pytest.mark.usefixtures("rendering")
def test_train_demo_ema_saves_the_average(demo_dataset: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    """The final policy of an --ema run is the average: with decay d over n steps from the initial weights
    w0, every weight lies between w0 and the trained value, (1 - d^n) of the way to it on average."""
    from safetensors.torch import load_file

    from omnimodel.cli.main import main

    use_small_pi0_preset(monkeypatch, "pi05")
    common = [str(demo_dataset), "--arch", "pi05", "--steps", "4", "--batch-size", "2", "--warmup", "1",
              "--checkpoint-every", "0", "--log-every", "0", "--lr", "1e-2"]
    assert main(["train-demo", *common, "--out", str(tmp_path / "plain")]) == 0
    assert main(["train-demo", *common, "--out", str(tmp_path / "ema"), "--ema", "0.5",
                 "--task-weight", "push=3"]) == 0
    report = json.loads((tmp_path / "ema" / "train_report.json").read_text())
    assert report["options"]["ema"] == 0.5 and report["task_weights"] == {"push": 3.0}

    init = load_file(str(tmp_path / "plain" / "init" / "model.safetensors"))
    plain = load_file(str(tmp_path / "plain" / "final" / "model.safetensors"))
    ema = load_file(str(tmp_path / "ema" / "final" / "model.safetensors"))
    moved_plain = sum(float((plain[k].float() - init[k].float()).abs().sum()) for k in init)
    moved_ema = sum(float((ema[k].float() - init[k].float()).abs().sum()) for k in init)
    # same init (seed 0); the average trails the trained weights, so it moved less, but it did move
    assert 0.0 < moved_ema < moved_plain

    capsys.readouterr()
    for bad in (["--ema", "1.5"], ["--task-weight", "push"], ["--task-weight", "nosuch=2"],
                ["--task-weight", "push=-1"], ["--ema-warmup"]):
        assert main(["train-demo", *common, "--out", str(tmp_path / "bad"), *bad]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and ("--ema" in err[0] or "--task-weight" in err[0]), err
    assert main(["train-demo", *common, "--out", str(tmp_path / "warm"), "--ema", "0.9", "--ema-warmup"]) == 0
    report = json.loads((tmp_path / "warm" / "train_report.json").read_text())
    assert report["options"]["ema_warmup"] is True
