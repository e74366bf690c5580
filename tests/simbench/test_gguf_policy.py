"""A converted policy in the compiled runtime, scored by the evaluator exactly like the PyTorch one.

The Meta-World miniature is converted with ``omnimodel.convert`` (f32); the runtime policy
(``GGUFRuntimePolicy``: raw frames, instruction and proprio into ``Model.predict_action``) must produce
the PyTorch policy's actions on the same seeds, and the evaluation documents must have the same shape.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from omnimodel.errors import UsageError
from omnimodel.simbench.episodes import EpisodeDataset
from omnimodel.simbench.evaluate import (
    ClosedLoopConfig,
    deterministic_view,
    evaluate_closed_loop,
    evaluate_open_loop,
    make_result,
)

import omnimodel._runtime  # noqa: F401  a broken build must fail, not skip

pytestmark = pytest.mark.usefixtures("rendering")


@pytest.fixture(scope="module")
def converted(mini_policy_dir: Path, tmp_path_factory) -> Path:
    """``omnimodel convert`` output of the Meta-World miniature at f32 (model.gguf, plugin/*.so, ...)."""
    from omnimodel.convert import convert_openvla_oft

    out = tmp_path_factory.mktemp("gguf_policy") / "converted"
    result = convert_openvla_oft(out, checkpoint=mini_policy_dir, outtype="f32", threads=1, log=lambda _: None)
    assert result.report.passed
    return out


class Recording:
    """A policy that remembers every chunk it returned (and describes itself as the wrapped one)."""

    def __init__(self, policy: Any) -> None:
        self.policy, self.calls = policy, []

    def __call__(self, images, instruction, proprio):
        chunk = np.asarray(self.policy(images, instruction, proprio), dtype=np.float64)
        self.calls.append(chunk)
        return chunk

    def describe(self) -> dict:
        return self.policy.describe()


def action_range(torch_policy) -> np.ndarray:
    """Per dimension: q99 - q01 where the statistics un-normalise it, else the policy's [-1, 1]."""
    stats = torch_policy.policy.norm_stats.action
    return np.where(stats.mask, stats.high - stats.low, 2.0)


def structure(doc: Any) -> Any:
    """Keys and nesting without the values (lists: the structure of their elements)."""
    if isinstance(doc, dict):
        return {k: structure(v) for k, v in doc.items()}
    if isinstance(doc, list):
        return [structure(v) for v in doc[:1]]
    return type(doc).__name__ if doc is not None else None


def test_runtime_policy_matches_pytorch_closed_and_open_loop(
    converted: Path, mini_policy_dir: Path, demo_dataset: Path
) -> None:
    from omnimodel.simbench.policies import GGUFRuntimePolicy, OFTTorchPolicy

    torch_policy = OFTTorchPolicy(mini_policy_dir, threads=1)
    runtime_policy = GGUFRuntimePolicy(converted, threads=1)
    desc = runtime_policy.describe()
    assert desc["kind"] == "gguf-runtime" and desc["plugin"] == str(next((converted / "plugin").glob("*.so")))
    assert desc["graph_source"] == f"plugin:{desc['plugin']}"  # the conversion's generated graph ran
    same = ("dataset_key", "platform", "chunk", "action_dim", "num_images", "image_size", "threads")
    assert {k: desc[k] for k in same} == {k: torch_policy.describe()[k] for k in same}
    assert desc["platform"] == "metaworld" and desc["tensor_types"] == ["f32"]

    cfg = ClosedLoopConfig(tasks=("reach", "push"), episodes_per_task=1, max_steps=16, image_size=56)
    results, calls = [], []
    for policy in (torch_policy, runtime_policy):
        rec = Recording(policy)
        closed = evaluate_closed_loop(rec, cfg, progress=False)
        opened = evaluate_open_loop(
            rec, EpisodeDataset(demo_dataset).episodes("calib"), reference=torch_policy, progress=False
        )
        results.append(make_result(rec, closed_loop=closed, open_loop=opened, reference=torch_policy))
        calls.append(rec.calls)

    # the first steps of every episode: the same reset, the same pixels, the same actions (f32)
    tol = 1e-4 * action_range(torch_policy)
    torch_calls, runtime_calls = calls
    assert len(torch_calls) == len(runtime_calls)
    calls_per_episode = 2  # 16 steps, chunks of 8
    for first in range(0, 2 * calls_per_episode, calls_per_episode):
        a, b = torch_calls[first], runtime_calls[first]
        assert a.shape == b.shape == (8, 4)
        assert np.all(np.abs(a - b) <= tol), (first, np.abs(a - b).max(axis=0), tol)

    torch_result, runtime_result = results
    # the same document, field for field (policy descriptions differ only in what identifies them)
    no_policy = {k: v for k, v in structure(torch_result).items() if k != "policy"}
    assert no_policy == {k: v for k, v in structure(runtime_result).items() if k != "policy"}
    t_cl, r_cl = deterministic_view(torch_result["closed_loop"]), deterministic_view(runtime_result["closed_loop"])
    assert t_cl == r_cl  # seeds, successes, steps, calls: the same numbers
    json.dumps(runtime_result)

    # open loop against the PyTorch reference: ~0 L1 and ~1 cosine at f32; the same error to the data
    ol, t_ol = runtime_result["open_loop"], torch_result["open_loop"]
    assert ol["samples"] == t_ol["samples"] > 2
    assert ol["l1_to_reference"] < 1e-4 * float(action_range(torch_policy).min())
    assert ol["cosine_to_reference"] > 1 - 1e-6 and ol["cosine_to_reference_min"] > 1 - 1e-6
    assert ol["l1_to_ground_truth"] == pytest.approx(t_ol["l1_to_ground_truth"], abs=1e-4)


def test_cli_eval_runs_the_converted_policy(
    converted: Path, mini_policy_dir: Path, demo_dataset: Path, tmp_path: Path, capsys
) -> None:
    from omnimodel.cli.main import main

    # a convert output directory, open loop against the PyTorch checkpoint
    out = tmp_path / "dir.json"
    argv = ["eval", "--policy", str(converted), "--data", str(demo_dataset), "--reference", str(mini_policy_dir),
            "--no-closed-loop", "--open-loop-episodes", "1", "--json", str(out), "--quiet"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert f"policy: gguf-runtime {converted / 'model.gguf'}" in printed and "cosine to reference" in printed
    result = json.loads(out.read_text())
    assert result["policy"]["kind"] == "gguf-runtime" and result["reference"]["kind"] == "openvla-oft-pytorch"
    assert result["open_loop"]["l1_to_reference"] < 1e-4 and result["open_loop"]["cosine_to_reference"] > 1 - 1e-6

    # a bare .gguf elsewhere with --plugin, closed loop, two threads
    gguf = shutil.copy(converted / "model.gguf", tmp_path / "policy.gguf")
    plugin = next((converted / "plugin").glob("*.so"))
    out = tmp_path / "file.json"
    argv = ["eval", "--policy", str(gguf), "--plugin", str(plugin), "--tasks", "reach", "--episodes", "1",
            "--max-steps", "8", "--threads", "2", "--json", str(out), "--quiet"]
    assert main(argv) == 0
    result = json.loads(out.read_text())
    assert result["policy"]["gguf"] == str(gguf) and result["policy"]["threads"] == 2
    assert result["policy"]["image_size"] == result["closed_loop"]["config"]["image_size"] == 56
    assert result["closed_loop"]["tasks"]["reach"]["per_episode"][0]["policy_calls"] == 1


def test_policy_argument_errors(converted: Path, mini_policy_dir: Path, tmp_path: Path) -> None:
    from omnimodel.simbench.policies import load_eval_policy

    (tmp_path / "broken.gguf").write_bytes(b"GGUF")
    with pytest.raises(UsageError, match="cannot load"):
        load_eval_policy(str(tmp_path / "broken.gguf"))
    with pytest.raises(UsageError, match="not 'expert'"):
        load_eval_policy(str(tmp_path / "nothing-here"))
    with pytest.raises(UsageError, match="--plugin goes with a converted policy"):
        load_eval_policy(str(mini_policy_dir), plugin=tmp_path / "x.so")
    with pytest.raises(UsageError, match="graph plugin not found"):
        load_eval_policy(str(converted), plugin=tmp_path / "missing.so")
    with pytest.raises(UsageError, match="statistics of 'metaworld"):
        load_eval_policy(str(converted), unnorm_key="libero_spatial_no_noops")
    assert load_eval_policy(str(converted), unnorm_key="metaworld_miniature_no_noops").action_dim == 4
