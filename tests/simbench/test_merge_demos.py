"""`omnimodel merge-demos`: the union of episode datasets, with the union's statistics."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from omnimodel.simbench.episodes import EpisodeDataset, load_episode
from omnimodel.simbench.statistics import compute_statistics

pytestmark = pytest.mark.usefixtures("rendering")


@pytest.fixture(scope="module")
def extra_dataset(tmp_path_factory) -> Path:
    """One more push episode, seeds disjoint from demo_dataset's (base seed 3)."""
    from omnimodel.simbench.collect import CollectConfig, collect_demos

    root = tmp_path_factory.mktemp("merge") / "extra"
    collect_demos(root, CollectConfig(tasks=("push",), train_per_task=1, calib_per_task=0, seed=500,
                                      image_size=56), progress=False)
    return root


def test_merge_keeps_every_episode_and_recomputes_statistics(demo_dataset: Path, extra_dataset: Path,
                                                             tmp_path: Path, capsys) -> None:
    from omnimodel.cli.main import main

    out = tmp_path / "merged"
    assert main(["merge-demos", str(out), str(demo_dataset), str(extra_dataset)]) == 0
    assert "train 5" in capsys.readouterr().out
    merged, a, b = EpisodeDataset(out), EpisodeDataset(demo_dataset), EpisodeDataset(extra_dataset)
    assert merged.manifest.splits["train"] == a.manifest.splits["train"] + b.manifest.splits["train"]
    assert merged.manifest.splits["calib"] == a.manifest.splits["calib"]
    assert merged.manifest.tasks == a.manifest.tasks
    for rel in merged.manifest.splits["train"][-1:]:
        ours, theirs = load_episode(out / rel), load_episode(extra_dataset / rel)
        np.testing.assert_array_equal(ours.images, theirs.images)
        np.testing.assert_array_equal(ours.actions, theirs.actions)
    stats = json.loads((out / "dataset_statistics.json").read_text())
    (key, entry), = stats.items()
    assert key == a.manifest.dataset_key
    union = compute_statistics([*a.episodes("train", images=False), *b.episodes("train", images=False)])
    np.testing.assert_allclose(entry["action"]["q99"], union["action"]["q99"])
    np.testing.assert_allclose(entry["proprio"]["mean"], union["proprio"]["mean"])
    first = json.loads((demo_dataset / "dataset_statistics.json").read_text())[key]
    assert not np.allclose(entry["proprio"]["mean"], first["proprio"]["mean"])  # the extra episode counts


def test_merge_refuses_what_cannot_be_one_dataset(demo_dataset: Path, extra_dataset: Path, tmp_path: Path,
                                                  capsys) -> None:
    from omnimodel.cli.main import main

    def refused(*args: str) -> str:
        capsys.readouterr()
        assert main(["merge-demos", *args]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1, err
        return err[0]

    assert "already exists" in refused(str(demo_dataset), str(demo_dataset), str(extra_dataset))
    assert "in both" in refused(str(tmp_path / "twice"), str(demo_dataset), str(demo_dataset))
    assert "at least two" in refused(str(tmp_path / "one"), str(demo_dataset))
    assert "dataset.json" in refused(str(tmp_path / "x"), str(demo_dataset), str(tmp_path / "nothing"))
    # another instruction for the same task
    other = tmp_path / "other"
    other.mkdir()
    m = json.loads((extra_dataset / "dataset.json").read_text())
    m["tasks"]["push"] = "push it somewhere else"
    (other / "dataset.json").write_text(json.dumps(m))
    assert "instruction" in refused(str(tmp_path / "y"), str(demo_dataset), str(other))
    m = json.loads((extra_dataset / "dataset.json").read_text())
    m["image_size"] = [84, 84]
    (other / "dataset.json").write_text(json.dumps(m))
    assert "image_size" in refused(str(tmp_path / "z"), str(demo_dataset), str(other))
    # a listed episode that is not there: nothing is left behind
    m = json.loads((extra_dataset / "dataset.json").read_text())
    (other / "dataset.json").write_text(json.dumps(m))
    assert "missing" in refused(str(tmp_path / "w"), str(demo_dataset), str(other))
    assert not (tmp_path / "w").exists() and not (tmp_path / "w.partial").exists()
