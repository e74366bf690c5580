"""``dataset_statistics.json`` in OpenVLA-OFT's schema, computed from episodes.

OFT stores, per dataset key, the statistics its policy normalises with (``checkpoint.py`` reads them):

    {"<dataset_key>": {
        "action":  {"mean": [..A], "std": [..A], "max": [..A], "min": [..A], "q01": [..A], "q99": [..A],
                    "mask": [..A bools]},
        "proprio": {same keys, P each},
        "num_transitions": N, "num_trajectories": M}}

As upstream computes them: over every transition of the split (float64), ``std`` with ddof 0,
quantiles with numpy's default linear interpolation. ``mask`` says which dimensions are normalised;
LIBERO leaves its binary gripper action un-normalised (mask False). Meta-World's grip effort is
continuous (the experts send e.g. -1, 0, 0.6, 1), so here every dimension is normalised by default.
The dataset key must contain the platform name (``metaworld``) so the checkpoint loader picks the
platform constants (chunk length, normalisation) from it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .episodes import Episode

STAT_KEYS = ("mean", "std", "max", "min", "q01", "q99", "mask")


def array_statistics(values: np.ndarray, mask: Sequence[bool] | None = None) -> dict[str, list]:
    """(N, D) samples -> the per-dimension entry of one key (action or proprio)."""
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"statistics need (N>=1, D) samples, got {x.shape}")
    dim = x.shape[1]
    m = [True] * dim if mask is None else [bool(v) for v in mask]
    if len(m) != dim:
        raise ValueError(f"mask has {len(m)} entries for {dim}-D values")
    return {
        "mean": x.mean(axis=0).tolist(),
        "std": x.std(axis=0).tolist(),
        "max": x.max(axis=0).tolist(),
        "min": x.min(axis=0).tolist(),
        "q01": np.quantile(x, 0.01, axis=0).tolist(),
        "q99": np.quantile(x, 0.99, axis=0).tolist(),
        "mask": m,
    }


def compute_statistics(
    episodes: Iterable[Episode],
    *,
    action_mask: Sequence[bool] | None = None,
    proprio_mask: Sequence[bool] | None = None,
) -> dict[str, Any]:
    """The entry of one dataset key. Episodes may be loaded without images."""
    actions, proprio = [], []
    for ep in episodes:
        actions.append(ep.actions)
        proprio.append(ep.proprio)
    if not actions:
        raise ValueError("no episodes to compute statistics from")
    a, p = np.concatenate(actions), np.concatenate(proprio)
    return {
        "action": array_statistics(a, action_mask),
        "proprio": array_statistics(p, proprio_mask),
        "num_transitions": int(a.shape[0]),
        "num_trajectories": len(actions),
    }


def write_dataset_statistics(path: str | os.PathLike[str], dataset_key: str, entry: dict[str, Any]) -> Path:
    out = Path(path)
    out.write_text(json.dumps({dataset_key: entry}, indent=2) + "\n")
    return out


def read_dataset_statistics(path: str | os.PathLike[str]) -> dict[str, Any]:
    return json.loads(Path(path).read_text())


__all__ = [
    "STAT_KEYS",
    "array_statistics",
    "compute_statistics",
    "write_dataset_statistics",
    "read_dataset_statistics",
]
