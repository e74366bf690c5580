"""HBVLA on the second family: `convert pi05 --method hbvla` stores planes under pi0's abbreviated GGUF
names (the torch names plus ``.hb.*`` exceed ggml's 63 bytes), runs them in the generated Gemma / SigLIP
blocks and passes parity with the validator's HBVLA emulation."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np

from omnimodel.arch.registry import get
from omnimodel.cli.main import main
from omnimodel.simbench.episodes import Episode, write_dataset


def _calibration_data(policy, out: Path) -> Path:
    cfg = policy.config
    rng = np.random.default_rng(5)
    eps = [
        Episode(
            instruction="stack the cups",
            images=rng.integers(0, 256, size=(6, len(cfg.camera_keys), 48, 48, 3), dtype=np.uint8),
            proprio=rng.normal(size=(6, cfg.state_dim)).astype(np.float32),
            actions=(rng.normal(size=(6, cfg.action_dim)) * 0.3).astype(np.float32),
            camera_names=tuple(f"cam{i}" for i in range(len(cfg.camera_keys))),
            task="synthetic",
            source="tests/quant/hbvla/test_hbvla_pi0.py",
        )
        for _ in range(2)
    ]
    write_dataset(out, {"calib": eps}, "synthetic_dataset", created_by={"tool": "test"})
    return out


def test_pi05_binarizes_and_passes_parity(tmp_path: Path) -> None:
    arch = get("pi05")
    ckpt = arch.write_miniature(tmp_path / "ckpt")
    data = _calibration_data(arch.load_policy(ckpt), tmp_path / "calib")
    out = tmp_path / "out"
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(["convert", "pi05", "--checkpoint", str(ckpt), "--method", "hbvla", "--bpw", "3.2", "--calib", str(data),
                   "--threads", "2", "--out", str(out)])
    assert rc == 0, buf.getvalue()[-3000:]
    report = json.loads((out / "validation_report.json").read_text())
    assert report["passed"] and report["rounding"]["HBVLA"] >= 1
    q = json.loads((out / "quant_report.json").read_text())
    planes = [row["name"] for row in q["tensors"] if row["kind"] == "hbvla"]
    assert planes  # the miniature's widths give one matrix planes (the others fall back), enough for the names
    from omnimodel.gguf import read_gguf

    names = [t.name for t in read_gguf(str(out / "model.gguf")).tensors]
    assert all(len(n.encode()) <= 63 for n in names)
    assert any(".hb." in n and not n.startswith("paligemma_with_expert.") for n in names)
