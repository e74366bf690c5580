"""Analyzer: a checkpoint directory -> ModelDescription (modules, hyper-parameters, parity variants).

    from omnimodel.analyze import analyze
    desc = analyze("openvla-7b-oft-finetuned-libero-spatial")
"""

from __future__ import annotations

import json
from pathlib import Path

from .description import ModelDescription, ModuleDesc, TensorDesc


class AnalyzeError(ValueError):
    """The checkpoint is of no architecture the analyzer knows."""


def analyze(checkpoint_dir: str | Path, **kwargs) -> ModelDescription:
    """Describe the checkpoint at ``checkpoint_dir``; keyword arguments go to the architecture's analyzer
    (OpenVLA-OFT: ``platform=``, ``unnorm_key=``)."""
    root = Path(checkpoint_dir)
    config = root / "config.json"
    if not config.is_file():
        raise AnalyzeError(f"{root}: no config.json")
    model_type = json.loads(config.read_text()).get("model_type")
    if model_type == "openvla":
        from .openvla_oft import analyze_openvla_oft

        return analyze_openvla_oft(root, **kwargs)
    raise AnalyzeError(f"{root}: config.json model_type {model_type!r} is not supported (known: 'openvla')")


__all__ = ["analyze", "AnalyzeError", "ModelDescription", "ModuleDesc", "TensorDesc"]
