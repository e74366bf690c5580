"""pi0 / pi0.5 through the generated-graph chain: convert (analyze, plan, GGUF, render, build, runtime,
validate) on miniatures in both published layouts, at F32/F16/Q8_0, every intermediate of every
denoising step compared with the PyTorch reference; a missing camera; the injected-fault catalogue
of the new skills (caught by the validator, repaired by the reflector).

Miniatures run 2-3 Euler steps (their config says so); the openpi layout has no such setting and runs the
real 10. The fault catalogue runs the CLI in a subprocess: a tampered plugin must not stay registered in
this process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from omnimodel.arch import registry
from omnimodel.arch.pi0.miniature import Pi0MiniatureSpec, write_miniature
from omnimodel.arch.pi0.names import gguf_name, torch_name


def _convert(tmp: Path, kind: str, layout: str, outtype: str, steps: int | None):
    from omnimodel.convert import convert

    extra = {} if steps is None else {"num_inference_steps": steps}
    ckpt = write_miniature(tmp / "ckpt", Pi0MiniatureSpec(kind=kind, layout=layout, **extra))
    return ckpt, convert(kind, tmp / "out", checkpoint=ckpt, outtype=outtype, threads=2, log=lambda _m: None)


@pytest.fixture(scope="module")
def pi05_f32(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pi05_f32")
    return _convert(tmp, "pi05", "lerobot", "f32", 2)


def _check(result, kind: str, steps: int, n_expert_layers: int = 2) -> None:
    report = result.report
    assert report.passed, report.first_failure
    assert report.unmatched == []  # every runtime intermediate had a reference
    names = {r.name for r in report.results}
    for s in range(steps):  # each step's expert, velocity and update, call by call
        assert {f"velocity.{s}", f"noisy_actions.{s}", f"action_out_proj@{s}",
                f"gemma_expert.norm@{s}"} <= names
        assert {f"gemma_expert.layers.{i}@{s}" for i in range(n_expert_layers)} <= names
    assert f"velocity.{steps}" not in names and "denoised_actions" in names
    assert {"siglip.post_layernorm", "multi_modal_projector", "language_model.embed_tokens", "prefix_embeds",
            "language_model.layers.0"} <= names
    per_kind = {"adarms_cond@0", "gemma_expert.layers.0.input_layernorm.dense@0"} if kind == "pi05" else \
        {"state_proj@0", "action_time_mlp_out@0", "suffix_embeds@0"}
    assert per_kind <= names
    assert result.files["model.gguf"] > 0 and (result.out_dir / "project" / "CMakeLists.txt").is_file()


def test_pi05_f32_lerobot_converts_with_every_step_compared(pi05_f32) -> None:
    ckpt, result = pi05_f32
    _check(result, "pi05", 2)
    from omnimodel.gguf.reader import read_gguf

    gf = read_gguf(result.out_dir / "model.gguf")
    meta = gf.metadata
    assert meta["general.architecture"] == "pi05" and meta["pi05.num_inference_steps"] == 2
    assert meta["pi05.expert.head_dim"] == 8 and meta["pi05.paligemma.head_count_kv"] == 1
    assert abs(meta["pi05.min_period"] - 4e-3) < 1e-15
    policy = registry.get("pi05").load_policy(ckpt)
    exported = set(registry.get("pi05").exported_tensors(policy))
    stored = {t.name for t in gf.tensors}
    # every tensor under its abbreviated PyTorch name, short enough for ggml; nothing else stored
    assert stored == {gguf_name(n) for n in exported} and max(len(n.encode()) for n in stored) <= 63
    assert {torch_name(n) for n in stored} == exported
    assert not any(n.startswith("language_model.layers.1.mlp") for n in stored)  # the unused last layer
    # validate re-runs the check from the output alone; inspect reads the file through the registry
    from omnimodel.cli.main import main
    from omnimodel.convert import revalidate

    assert revalidate(result.out_dir, threads=2, log=lambda _m: None).passed
    assert main(["inspect", str(result.out_dir / "model.gguf")]) == 0
    plan = json.loads((result.out_dir / "plan.json").read_text())
    skills = {m["name"]: m["skill"] for m in plan["modules"]}
    assert skills == {"siglip": "siglip_tower", "multi_modal_projector": "mlp_chain", "language_model": "gemma_stack",
                      "gemma_expert": "gemma_expert", "pi05": "pi0_glue"}


def test_pi05_runtime_equals_the_reference_with_a_camera_missing(pi05_f32) -> None:
    """image_mask 0 for the second camera: its tokens are masked out of the prefix and the text's positions
    shift -- computed in the graph from the input, so the same (cached) graph serves both masks."""
    from omnimodel import _runtime
    from omnimodel.validate.parity import run_runtime
    from omnimodel.validate.reference import GGUFWeights, run_reference

    ckpt, result = pi05_f32
    arch = registry.get("pi05")
    policy = arch.load_policy(ckpt)
    _runtime.load_plugin(str(next((result.out_dir / "plugin").glob("*.so"))))
    gguf = result.out_dir / "model.gguf"
    rng = np.random.default_rng(7)
    frame = rng.integers(0, 256, size=(56, 56, 3), dtype=np.uint8)
    for images in ([frame, None], [frame, frame]):
        x = arch.prepare_inputs(policy, images, "pick up the red cube", np.zeros(8, np.float32))
        run = run_runtime(gguf, arch.runtime_inputs(x), 2)
        ref = run_reference(policy, x, dtype="float64", weights=GGUFWeights(gguf, arch.gguf_name), keep=set(run).__contains__)
        assert {"denoised_actions", "language_model.layers.0", "velocity.1"} <= set(ref.tensors)
        for name, want in ref.tensors.items():
            got = run[name].reshape(want.shape)
            err = np.sqrt(np.mean((got - want) ** 2) / max(np.mean(want**2), 1e-30))
            assert err < 2e-5, (images[1] is None, name, err)
    assert float(x.image_mask.sum()) == 2


@pytest.mark.parametrize(("kind", "layout", "outtype", "steps"), [
    ("pi05", "openpi", "q8_0", None),  # openpi's config has no step count: the real 10
    ("pi0", "lerobot", "f16", 3),
    ("pi0", "lerobot", "q8_0", 2),
])
def test_pi0_family_converts(tmp_path: Path, kind: str, layout: str, outtype: str, steps: int | None) -> None:
    _, result = _convert(tmp_path, kind, layout, outtype, steps)
    _check(result, kind, steps or 10)


def _omnimodel(*args: str) -> subprocess.CompletedProcess:
    import omnimodel

    pkg_parent = str(Path(omnimodel.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": pkg_parent + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-m", "omnimodel", *args], capture_output=True, text=True, env=env,
                          timeout=600)


def test_fault_catalogue_is_caught_and_repaired(tmp_path: Path) -> None:
    """pi0 with four of the new skills' classic mistakes at once: GeGLU with erf instead of tanh, RMSNorm
    scaling by w instead of 1 + w, no sqrt(width) embedding scale (the Gemma stack), and a causal suffix
    instead of big_vision's blocks (the expert). Each is caught where it first shows and set back."""
    ckpt = write_miniature(tmp_path / "ckpt", Pi0MiniatureSpec(kind="pi0", num_inference_steps=2))
    out = tmp_path / "out"
    res = _omnimodel("convert", "pi0", "--checkpoint", str(ckpt), "--out", str(out), "--threads", "2",
                     "--knob", "language_model:embed_scale=none", "--knob", "language_model:norm_weight=plain",
                     "--knob", "language_model:gelu=erf", "--knob", "gemma_expert:suffix_mask=causal")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "FAIL, first at language_model.embed_tokens" in res.stdout
    rep = json.loads((out / "validation_report.json").read_text())
    assert rep["passed"]
    fixed = {(a["module"], k, v) for a in rep["reflection"]["accepted"] for k, v in a["knobs"].items()}
    assert fixed == {("language_model", "embed_scale", "sqrt_width"), ("language_model", "norm_weight", "one_plus"),
                     ("language_model", "gelu", "tanh"), ("gemma_expert", "suffix_mask", "blockwise")}
    plan = {m["name"]: m["knobs"] for m in json.loads((out / "plan.json").read_text())["modules"]}
    assert plan["language_model"]["gelu"] == "tanh" and plan["gemma_expert"]["suffix_mask"] == "blockwise"


def test_pi05_demo_converts_with_its_ten_steps(tmp_path: Path, capsys) -> None:
    """`omnimodel convert pi05 --demo`: the shipped trained policy (real 10 Euler steps) passes parity at F32,
    and its copy travels with the output so `validate` / `eval` can re-read it."""
    from omnimodel.cli.main import main

    out = tmp_path / "demo"
    assert main(["convert", "pi05", "--demo", "--out", str(out), "--threads", "2"]) == 0
    assert "DEMO" in capsys.readouterr().out
    rep = json.loads((out / "validation_report.json").read_text())
    assert rep["passed"] is True and rep["checkpoint"] == "demo_checkpoint"
    names = {r["name"] for r in rep["results"]}
    assert {"velocity.9", "denoised_actions"} <= names and "velocity.10" not in names
    shipped = registry.get("pi05").demo_checkpoint
    assert (out / "demo_checkpoint" / "model.safetensors").read_bytes() == (shipped / "model.safetensors").read_bytes()
