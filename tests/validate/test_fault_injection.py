"""The real generated-graph chain: a deliberately wrong template variant is caught and repaired.

Runs the CLI in a subprocess: loading a plugin registers its graph for the whole process (there is no
unload), and the tampered graph must not leak into other tests.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest



def _omnimodel(*args: str) -> subprocess.CompletedProcess:
    # The child must import the same omnimodel as this test (installed in CI, the source tree in a dev
    # checkout with a built extension), whatever the working directory.
    import omnimodel

    pkg_parent = str(Path(omnimodel.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": pkg_parent + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-m", "omnimodel", *args], capture_output=True, text=True, env=env,
                          timeout=300)


def test_tanh_gelu_is_named_and_repaired(tmp_path) -> None:
    out = tmp_path / "out"
    res = _omnimodel("convert", "openvla-oft", "--demo", "--out", str(out),
                     "--knob", "vision_backbone.featurizer:gelu=tanh")
    assert res.returncode == 0, res.stdout + res.stderr
    # the validator names the first failing tensor: the first ViT MLP of the tampered tower
    assert "FAIL, first at vision_backbone.featurizer.blocks.0.mlp" in res.stdout
    rep = json.loads((out / "validation_report.json").read_text())
    assert rep["passed"] and rep["graph"].startswith("plugin:plugin/")
    attempts = rep["reflection"]["attempts"]
    assert attempts[0]["tensor"] == "vision_backbone.featurizer.blocks.0.mlp"
    assert attempts[0]["module"] == "vision_backbone.featurizer" and attempts[0]["skill"] == "vit_tower"
    assert rep["reflection"]["accepted"][-1]["knobs"] == {"gelu": "erf"}
    plan = json.loads((out / "plan.json").read_text())
    tower = next(m for m in plan["modules"] if m["name"] == "vision_backbone.featurizer")
    assert tower["knobs"]["gelu"] == "erf"
    assert (out / rep["graph"].split(":", 1)[1]).is_file()
    # the runtime ran the repaired graph (the adopted plugin), and project/ carries its source
    assert rep["graph_source"] == f"plugin:{out / rep['graph'].split(':', 1)[1]}"
    assert (out / "project" / "arch" / "openvla_oft.cpp").read_text() == (out / "sources" / "openvla_oft.cpp").read_text()
    assert "act_kind::gelu_erf_fast;  // knobs gelu" in (out / "project" / "arch" / "openvla_oft.cpp").read_text()
    # and the repaired output re-validates on its own
    again = _omnimodel("validate", str(out))
    assert again.returncode == 0 and "validate: parity passed" in again.stdout, again.stdout + again.stderr


def test_causal_llm_mask_is_named_and_repaired(tmp_path) -> None:
    out = tmp_path / "out"
    res = _omnimodel("convert", "openvla-oft", "--demo", "--out", str(out),
                     "--knob", "language_model.model:attn_mask=causal")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "FAIL, first at language_model.model.layers.0.self_attn" in res.stdout
    rep = json.loads((out / "validation_report.json").read_text())
    assert rep["passed"] and rep["reflection"]["accepted"][-1]["knobs"] == {"attn_mask": "bidirectional"}
