"""Analyzer: a checkpoint directory -> ModelDescription (modules, hyper-parameters, parity variants).

    from omnimodel.analyze import analyze
    desc = analyze("path/to/checkpoint")          # any registered architecture's checkpoint
"""

from __future__ import annotations

import json
from pathlib import Path

from .description import ModelDescription, ModuleDesc, TensorDesc


class AnalyzeError(ValueError):
    """The checkpoint is of no architecture the analyzer knows."""


def analyze(checkpoint_dir: str | Path, **kwargs) -> ModelDescription:
    """Describe the checkpoint at ``checkpoint_dir`` with the analyzer of the registered architecture its
    config.json belongs to; keyword arguments go to that analyzer (e.g. ``platform=``, ``unnorm_key=``)."""
    root = Path(checkpoint_dir)
    config = root / "config.json"
    if not config.is_file():
        raise AnalyzeError(f"{root}: no config.json")
    from omnimodel.arch import registry

    try:
        arch = registry.for_config(json.loads(config.read_text()), str(config))
    except registry.UnknownArchitecture as e:
        raise AnalyzeError(str(e)) from e
    return arch.analyze(root, **kwargs)


__all__ = ["analyze", "AnalyzeError", "ModelDescription", "ModuleDesc", "TensorDesc"]
