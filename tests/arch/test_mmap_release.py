"""Handing back a memory-mapped checkpoint's pages (``release_pages``, ``released_after_use``): what a
pass has read leaves the process's resident set, and no value ever changes -- not even one this process
edited in place (AWQ's folds edit mapped weights copy-on-write)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from omnimodel.arch.mmap_safetensors import mapped_tensors, release_pages, released_after_use
from safetensors.torch import save_file

INSTRUCTION = "put the black bowl on the plate"

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="MADV_PAGEOUT is Linux's")


def resident_bytes(path: Path) -> int:
    """This process's resident bytes of ``path``'s mappings (/proc/self/smaps)."""
    total, inside = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split()
        if head and "-" in head[0] and len(head) >= 5 and not head[0].endswith(":"):
            inside = len(head) >= 6 and head[5] == str(path)
        elif inside and line.startswith("Rss:"):
            total += int(head[1]) * 1024
    return total


def flushed(paths: list[Path]) -> list[Path]:
    """The files written to disk: the kernel pages out only clean pages, and a file just written has
    dirty ones until writeback (a checkpoint being converted was written long before)."""
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    return paths


def lazy_policy_files(root: Path) -> list[Path]:
    return flushed(sorted(root.glob("*.safetensors")))


def test_released_pages_leave_the_resident_set_and_keep_every_value(tmp_path: Path) -> None:
    path = tmp_path / "w.safetensors"
    save_file({"a": torch.randn(2048, 2048).to(torch.bfloat16), "b": torch.randn(1024, 1024)}, str(path))
    flushed([path])
    t = mapped_tensors(path)
    expect = {k: v.clone() for k, v in t.items()}
    float(t["a"].float().sum() + t["b"].sum())  # read every page
    assert resident_bytes(path) >= 12 * 2**20
    assert release_pages([t["a"]]) >= 8 * 2**20
    after_a = resident_bytes(path)
    assert after_a <= 5 * 2**20  # b's 4 MiB stay
    t["b"][0, :4] = torch.tensor([1.0, 2.0, 3.0, 4.0])  # a private copy of that page
    expect["b"][0, :4] = torch.tensor([1.0, 2.0, 3.0, 4.0])
    release_pages()
    assert resident_bytes(path) < after_a
    for k in t:
        assert torch.equal(t[k], expect[k]), k
    # tensors that view no mapping are skipped
    assert release_pages([torch.zeros(4096)]) == 0


def test_backward_hands_back_frozen_weights_once_it_has_used_them(tmp_path: Path) -> None:
    """Weights that get no gradient (a calibration pass covering other layers) are still read by backward
    to carry the gradient through; they go back as soon as their module's input gradient is complete."""
    path = tmp_path / "w.safetensors"
    save_file({f"l{i}": torch.randn(512, 512) for i in range(4)}, str(path))
    t = mapped_tensors(flushed([path])[0])
    chain = torch.nn.Sequential(*[torch.nn.Linear(512, 512, bias=False) for _ in range(4)])
    for i, layer in enumerate(chain):
        layer.weight = torch.nn.Parameter(t[f"l{i}"], requires_grad=False)
    x = torch.randn(8, 512, requires_grad=True)
    chain(x).square().sum().backward()
    plain, x.grad = x.grad, None
    assert resident_bytes(path) >= 3 * 2**20
    release_pages()
    with released_after_use(chain):
        out = chain(x)
        assert resident_bytes(path) < 2**20
        out.square().sum().backward()
    assert resident_bytes(path) < 2**20
    assert torch.equal(x.grad, plain)


def test_a_module_pass_keeps_only_what_it_is_running(tmp_path: Path) -> None:
    from omnimodel.arch.openvla_oft import MiniatureSpec, load_policy, random_observation, run_policy, write_miniature

    spec = MiniatureSpec(seed=5, llm_hidden=256, llm_intermediate=512, llm_layers=2, llm_heads=4)
    root = write_miniature(tmp_path / "mini", spec)
    files = lazy_policy_files(root)
    policy = load_policy(root, dtype=None, lazy=True)
    size = sum(f.stat().st_size for f in files)
    # loading checked every value and kept only a few pages per tensor (see below)
    assert sum(resident_bytes(f) for f in files) < size // 2
    images, proprio = random_observation(spec, seed=1)
    release_pages()
    plain = run_policy(policy, images, INSTRUCTION, proprio)
    touched = sum(resident_bytes(f) for f in files)
    release_pages()
    with released_after_use(policy.model):
        paged = run_policy(policy, images, INSTRUCTION, proprio)
    kept = sum(resident_bytes(f) for f in files)
    assert touched > size // 2  # the forward read most of the file ...
    # ... and handed it back module by module. What stays is a few pages per tensor: pages the kernel has
    # not yet put on its reclaim lists, and neighbours it maps along with a faulting page; on this
    # miniature's ~150 small tensors that is up to ~30% of the file, at real width a few percent
    assert kept < touched // 2
    np.testing.assert_array_equal(paged.actions, plain.actions)


def test_calibration_hands_back_the_weights_it_has_used(tmp_path: Path) -> None:
    from omnimodel.arch.openvla_oft import MiniatureSpec, load_policy, random_observation, write_miniature
    from omnimodel.quant import CalibSample, calibrate

    spec = MiniatureSpec(seed=6, llm_hidden=256, llm_intermediate=512, llm_layers=2, llm_heads=4)
    root = write_miniature(tmp_path / "mini", spec)
    files = lazy_policy_files(root)
    policy = load_policy(root, dtype=None, lazy=True)
    cfg = policy.config
    rng = np.random.default_rng(0)
    samples = [CalibSample(*random_observation(spec, seed=i)[:1], INSTRUCTION, random_observation(spec, seed=i)[1],
                           rng.uniform(-0.5, 0.5, (cfg.num_actions_chunk, cfg.action_dim))) for i in range(2)]
    release_pages()
    stats = calibrate(policy, samples, lam=0.5)
    size = sum(f.stat().st_size for f in files)
    assert sum(resident_bytes(f) for f in files) < size // 2
    assert all(np.isfinite(np.asarray(v)).all() and np.asarray(v).any() for v in stats.fisher.values())
