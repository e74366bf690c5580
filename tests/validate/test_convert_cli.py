"""`omnimodel convert / validate / bench` end to end on the demo miniature, and the failure paths."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from omnimodel import convert as convert_mod
from omnimodel.arch.openvla_oft import MiniatureSpec, write_miniature
from omnimodel.cli.main import main
from omnimodel.validate import parity

pytest.importorskip("omnimodel._runtime")


def _no_partials(parent: Path) -> list[str]:
    return [p.name for p in parent.iterdir() if ".partial-" in p.name or ".old-" in p.name]


@pytest.fixture(scope="module")
def demo_out(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("convert") / "demo"
    assert main(["convert", "openvla-oft", "--demo", "--out", str(out), "--graph", "builtin"]) == 0
    return out


def test_convert_demo_writes_everything(demo_out: Path, capsys) -> None:
    names = {p.name for p in demo_out.iterdir()}
    assert {"model.gguf", "plan.json", "validation_report.json", "demo_checkpoint"} <= names
    rep = json.loads((demo_out / "validation_report.json").read_text())
    assert rep["passed"] is True and rep["graph"] == "builtin:openvla-oft" and rep["checkpoint"] == "demo_checkpoint"
    assert len(rep["results"]) >= 40 and rep["min_cosine"] >= 0.99999
    assert {"vision_backbone.featurizer.blocks.0", "language_model.model.layers.0", "projector", "action_head",
            "actions"} <= {r["name"] for r in rep["results"]}
    assert rep["unmatched"] == []  # every runtime intermediate has a PyTorch counterpart
    assert json.loads((demo_out / "plan.json").read_text())["graph"] == "builtin:openvla-oft"
    assert _no_partials(demo_out.parent) == []


def test_convert_demo_output_mentions_demo_and_graph(tmp_path, capsys) -> None:
    out = tmp_path / "o"
    assert main(["convert", "openvla-oft", "--demo", "--out", str(out), "--graph", "builtin", "--outtype", "f16"]) == 0
    text = capsys.readouterr().out
    assert "DEMO" in text and "random-weight miniature" in text
    assert "graph: builtin:openvla-oft" in text and "[7/7]" in text and "model.gguf" in text
    assert "all pass" in text
    # an existing output is not overwritten without --force
    assert main(["convert", "openvla-oft", "--demo", "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err


def test_validate_and_bench_from_output_dir(demo_out: Path, tmp_path, capsys) -> None:
    assert main(["validate", str(demo_out), "--json", str(tmp_path / "again.json")]) == 0
    assert "validate: parity passed" in capsys.readouterr().out
    assert json.loads((tmp_path / "again.json").read_text())["passed"] is True
    assert main(["bench", str(demo_out), "--runs", "2", "--warmup", "1", "--json", str(tmp_path / "b.json")]) == 0
    b = json.loads((tmp_path / "b.json").read_text())
    assert b["threads"] == 1 and b["runtime"]["model_ms"] > 0
    for k in ("pytorch_fp32", "pytorch_bf16"):
        assert set(b[k]["stages_ms"]) == {"vision", "llm", "head"} and b[k]["model_ms"] > 0
    assert b["machine"]["cpu"] is not None


def test_missing_checkpoint_dir(tmp_path, capsys) -> None:
    out = tmp_path / "out"
    assert main(["convert", "openvla-oft", "--checkpoint", str(tmp_path / "nope"), "--out", str(out)]) == 2
    assert "checkpoint directory not found" in capsys.readouterr().err
    assert not out.exists() and _no_partials(tmp_path) == []


def test_missing_shard_leaves_nothing(tmp_path, capsys) -> None:
    ckpt = write_miniature(tmp_path / "ckpt", MiniatureSpec(seed=0))
    shard = sorted(ckpt.glob("model-*.safetensors"))[1]
    shard.unlink()
    out = tmp_path / "out"
    assert main(["convert", "openvla-oft", "--checkpoint", str(ckpt), "--out", str(out), "--graph", "builtin"]) == 2
    err = capsys.readouterr().err
    assert "omnimodel convert: error:" in err and shard.name in err and "missing" in err
    assert len(err.strip().splitlines()) == 1
    assert not out.exists() and _no_partials(tmp_path) == []


def test_validate_needs_an_output_dir(tmp_path, capsys) -> None:
    assert main(["validate", str(tmp_path)]) == 2
    assert "validation_report.json" in capsys.readouterr().err


def test_parity_failure_leaves_nothing_and_names_first_tensor(tmp_path, monkeypatch, capsys) -> None:
    real = parity.run_runtime

    def corrupt(path, inputs, threads=1):
        out = real(path, inputs, threads)
        for name in ("language_model.model.layers.1.mlp", "language_model.model.layers.1"):
            out[name] = out[name] * 1.5 + 0.1
        return out

    monkeypatch.setattr(parity, "run_runtime", corrupt)
    out = tmp_path / "out"
    assert main(["convert", "openvla-oft", "--demo", "--out", str(out), "--graph", "builtin"]) == 2
    captured = capsys.readouterr()
    assert "first failing tensor language_model.model.layers.1.mlp" in captured.err
    assert ">> language_model.model.layers.1.mlp" in captured.out
    assert not out.exists() and _no_partials(tmp_path) == []
    # --keep-failed keeps it, with the failing report, and exits 1
    assert main(["convert", "openvla-oft", "--demo", "--out", str(out), "--graph", "builtin", "--keep-failed"]) == 1
    rep = json.loads((out / "validation_report.json").read_text())
    assert rep["passed"] is False and rep["first_failure"] == "language_model.model.layers.1.mlp"


# ---------------------------------------------------------------------------------------------------
# The convert <-> reflector wiring with a fake generated-graph chain (the real one is tested in
# test_fault_injection.py once it exists): the fake "plugin" decides whether the runtime's ViT MLP
# output is corrupted, as a tanh GELU where erf is needed would.


@dataclass(frozen=True)
class _Module:
    name: str
    skill: str
    knobs: dict[str, Any]


@dataclass(frozen=True)
class _Plan:
    knobs: dict[str, Any] = field(default_factory=lambda: {"gelu": "tanh"})

    def with_knob(self, module: str, knob: str, value: Any) -> _Plan:
        return replace(self, knobs={**self.knobs, knob: value})

    def module_for_tensor(self, name: str) -> _Module | None:
        if name.startswith("vision_backbone.featurizer"):
            return _Module("vision_backbone.featurizer", "vit_tower", self.knobs)
        return None

    def to_json(self) -> str:
        return json.dumps({"graph": "fake", "knobs": self.knobs})


@dataclass
class _Skill:
    fixes: list[dict[str, Any]]


def test_convert_uses_plugin_chain_and_reflector_repairs(tmp_path, monkeypatch, capsys) -> None:
    loaded: dict[str, Any] = {}

    def render(plan, out: Path):
        out.mkdir(parents=True, exist_ok=True)
        (out / "graph.cpp").write_text(json.dumps(plan.knobs))
        return [out / "graph.cpp"]

    def build_plugin(src: Path, build: Path) -> Path:
        build.mkdir(parents=True, exist_ok=True)
        so = build / "libfake_oft.so"
        so.write_text((src / "graph.cpp").read_text())
        return so

    def load_plugin(path) -> None:
        loaded.update(json.loads(Path(path).read_text()))

    chain = convert_mod.PluginChain(
        analyze=lambda ckpt: {"checkpoint": str(ckpt)},
        make_plan=lambda desc, outtype="f32": _Plan(),
        skills={"vit_tower": _Skill([{"gelu": "tanh"}, {"gelu": "quick"}, {"gelu": "erf"}])},
        render=render,
        build_plugin=build_plugin,
        load_plugin=load_plugin,
    )
    monkeypatch.setattr(convert_mod, "plugin_chain", lambda: (chain, ""))
    real = parity.run_runtime

    def runtime(path, inputs, threads=1):
        out = real(path, inputs, threads)
        if loaded.get("gelu") != "erf":
            rng = np.random.default_rng(0)
            for name in list(out)[list(out).index("vision_backbone.featurizer.blocks.0.mlp"):]:
                out[name] = out[name] + 0.05 * np.abs(out[name]).max() * rng.standard_normal(out[name].shape)
        return out

    monkeypatch.setattr(parity, "run_runtime", runtime)
    out = tmp_path / "out"
    assert main(["convert", "openvla-oft", "--demo", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "FAIL, first at vision_backbone.featurizer.blocks.0.mlp" in text
    assert "gelu='erf'" in text
    rep = json.loads((out / "validation_report.json").read_text())
    assert rep["passed"] and rep["graph"] == "plugin:plugin/libfake_oft.so"
    refl = rep["reflection"]
    assert [a["knobs"] for a in refl["attempts"]] == [{"gelu": "quick"}, {"gelu": "erf"}]
    assert refl["attempts"][0]["tensor"] == "vision_backbone.featurizer.blocks.0.mlp"
    assert json.loads((out / "plan.json").read_text())["knobs"] == {"gelu": "erf"}
    assert json.loads((out / "sources" / "graph.cpp").read_text()) == {"gelu": "erf"}
    assert (out / "plugin" / "libfake_oft.so").is_file()
    assert not (out / ".reflect").exists() and not (out / ".build").exists()
