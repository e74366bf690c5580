"""Loading a checkpoint as stored (``dtype=None``) and lazily (``lazy=True``): the same values as the
fp32 load, parameters that are views of the memory-mapped safetensors, the file never written."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from omnimodel.arch.mmap_safetensors import mapped_tensors
from omnimodel.arch.openvla_oft import MiniatureSpec, load_checkpoint, random_observation, run_policy, write_miniature
from omnimodel.arch.openvla_oft.checkpoint import CheckpointError
from safetensors.torch import load_file, save_file

SPEC = MiniatureSpec(seed=4)


@pytest.fixture(scope="module")
def mini_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = write_miniature(tmp_path_factory.mktemp("lazy") / "mini", SPEC)
    # a head stored wider than the backbone, as upstream saves its fp32 proprio projector
    path = out / next(p.name for p in out.iterdir() if p.name.startswith("proprio_projector--"))
    state = torch.load(path, weights_only=True)
    torch.save({k: v.float() + 1e-3 for k, v in state.items()}, path)
    return out


def _mapped_from(address: int) -> str | None:
    """The file a process address is mapped from (/proc/self/maps), None for anonymous memory."""
    for line in Path("/proc/self/maps").read_text().splitlines():
        parts = line.split(maxsplit=5)
        lo, hi = (int(x, 16) for x in parts[0].split("-"))
        if lo <= address < hi:
            return parts[5] if len(parts) == 6 and parts[5].startswith("/") else None
    return None


def _digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.glob("*.safetensors")):
        h.update(p.read_bytes())
    return h.hexdigest()


def test_as_stored_lazy_equals_the_fp32_load(mini_dir: Path) -> None:
    ref = load_checkpoint(mini_dir)
    lazy = load_checkpoint(mini_dir, dtype=None, lazy=True)
    a, b = ref.model.state_dict(), lazy.model.state_dict()
    assert set(a) == set(b)
    for k in a:
        assert torch.equal(a[k], b[k].float()), k
    # the VLA weights in the checkpoint's bf16; the wider-stored projector keeps fp32 (no value rounded)
    assert b["language_model.model.layers.0.mlp.up_proj.weight"].dtype == torch.bfloat16
    assert b["proprio_projector.fc1.weight"].dtype == torch.float32
    assert b["action_head.model.fc1.weight"].dtype == torch.bfloat16
    # and the mixed-dtype model runs (the forward casts at the module boundaries)
    images, proprio = random_observation(SPEC, seed=2)
    out_ref = run_policy(ref_policy(ref), images, "pick up the cube", proprio)
    out_lazy = run_policy(ref_policy(lazy), images, "pick up the cube", proprio)
    assert np.isfinite(out_lazy.actions).all()
    assert np.abs(out_lazy.normalized_actions - out_ref.normalized_actions).max() < 0.1  # bf16 vs fp32 math


def ref_policy(loaded):
    from omnimodel.arch.openvla_oft import OpenVLAOFTPolicy

    return OpenVLAOFTPolicy.from_checkpoint(loaded)


def test_lazy_parameters_view_the_mapped_file(mini_dir: Path) -> None:
    before = _digest(mini_dir)
    lazy = load_checkpoint(mini_dir, dtype=None, lazy=True).model
    eager = load_checkpoint(mini_dir, dtype=None).model
    name = "language_model.model.layers.1.self_attn.q_proj.weight"
    p = dict(lazy.named_parameters())[name]
    # a view of the mapping: its memory lies inside the process's mapping of the shard file
    shard = next(s for s in sorted(mini_dir.glob("*.safetensors")) if name in mapped_tensors(s))
    assert _mapped_from(p.data_ptr()) == str(shard.resolve())
    # an in-place edit (AWQ's folds, a weight swap) is private to the process: the file is untouched
    with torch.no_grad():
        p.mul_(2)
    assert _digest(mini_dir) == before
    assert torch.equal(p, 2 * dict(eager.named_parameters())[name])
    # a cast (dtype other than stored) is a copy, never a view
    fp32 = dict(load_checkpoint(mini_dir, lazy=True).model.named_parameters())[name]
    assert fp32.dtype == torch.float32 and _mapped_from(fp32.data_ptr()) != str(shard.resolve())


def test_lazy_load_still_refuses_damaged_weights(mini_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "ck"
    shutil.copytree(mini_dir, copy)
    shard = sorted(copy.glob("*.safetensors"))[0]
    tensors = load_file(shard)
    key = next(k for k, v in tensors.items() if v.ndim == 2)
    tensors[key][0, 0] = float("inf")
    save_file(tensors, str(shard), metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match=rf"{shard.name}: tensor '{key}' contains NaN or Inf"):
        load_checkpoint(copy, dtype=None, lazy=True)
