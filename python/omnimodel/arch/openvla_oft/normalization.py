"""Action / proprio (de)normalisation with a checkpoint's ``dataset_statistics.json``.

Formulas are upstream's (``OpenVLAForActionPrediction._unnormalize_actions`` and
``experiments/robot/openvla_utils.normalize_proprio``), computed in float64 numpy as upstream does:

    un-normalise:  a = 0.5 * (x + 1) * (high - low + 1e-8) + low     where mask, else a = x
    normalise:     p' = clip(2 * (p - low) / (high - low + 1e-8) - 1, -1, 1)   where mask, else clip(p)

(high, low) = (q99, q01) for BOUNDS_Q99 (LIBERO, Bridge) and (max, min) for BOUNDS (ALOHA). A missing
``mask`` means all True. The gripper dimension usually has mask False and passes through raw.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from .config import ConfigError, NormalizationType


@dataclass(frozen=True)
class BoundsStats:
    low: np.ndarray  # float64
    high: np.ndarray  # float64
    mask: np.ndarray  # bool

    @property
    def dim(self) -> int:
        return int(self.low.shape[0])


def _bounds_from(entry: Mapping[str, Any], norm: NormalizationType, where: str) -> BoundsStats:
    low_key, high_key = ("q01", "q99") if norm is NormalizationType.BOUNDS_Q99 else ("min", "max")
    for key in (low_key, high_key):
        if key not in entry:
            raise ConfigError(f"{where}: missing '{key}' (needed for {norm.value} normalisation)")
    low = np.asarray(entry[low_key], dtype=np.float64)
    high = np.asarray(entry[high_key], dtype=np.float64)
    mask = np.asarray(entry.get("mask", np.ones_like(low, dtype=bool)), dtype=bool)
    if low.ndim != 1 or low.shape != high.shape or low.shape != mask.shape:
        raise ConfigError(
            f"{where}: '{low_key}', '{high_key}', 'mask' must be 1-D of equal length, got "
            f"{low.shape}, {high.shape}, {mask.shape}"
        )
    if not (np.isfinite(low).all() and np.isfinite(high).all()):
        raise ConfigError(f"{where}: non-finite '{low_key}'/'{high_key}' values")
    return BoundsStats(low=low, high=high, mask=mask)


@dataclass(frozen=True)
class DatasetNormStats:
    key: str
    normalization: NormalizationType
    action: BoundsStats
    proprio: BoundsStats | None


def resolve_unnorm_key(all_stats: Mapping[str, Any], unnorm_key: str | None, source: str) -> str:
    if not all_stats:
        raise ConfigError(f"{source}: no dataset statistics found")
    if unnorm_key is None:
        if len(all_stats) != 1:
            raise ConfigError(
                f"{source}: holds statistics of {len(all_stats)} datasets; choose one with unnorm_key= "
                f"(CLI: --unnorm-key) of {sorted(all_stats)}"
            )
        return next(iter(all_stats))
    if unnorm_key not in all_stats:
        raise ConfigError(f"{source}: unnorm_key '{unnorm_key}' not found; available: {sorted(all_stats)}")
    return unnorm_key


def action_dim_of(all_stats: Mapping[str, Any], key: str, source: str) -> int:
    entry = all_stats[key]
    if "action" not in entry or ("q01" not in entry["action"] and "min" not in entry["action"]):
        raise ConfigError(f"{source}['{key}']: missing 'action' statistics")
    values = entry["action"].get("q01", entry["action"].get("min"))
    return len(values)


def parse_norm_stats(
    all_stats: Mapping[str, Any], key: str, norm: NormalizationType, source: str, need_proprio: bool
) -> DatasetNormStats:
    entry = all_stats[key]
    if "action" not in entry:
        raise ConfigError(f"{source}['{key}']: missing 'action' statistics")
    action = _bounds_from(entry["action"], norm, f"{source}['{key}']['action']")
    proprio = None
    if need_proprio:
        if "proprio" not in entry:
            raise ConfigError(
                f"{source}['{key}']: missing 'proprio' statistics (the checkpoint has a proprio projector)"
            )
        proprio = _bounds_from(entry["proprio"], norm, f"{source}['{key}']['proprio']")
    return DatasetNormStats(key=key, normalization=norm, action=action, proprio=proprio)


def unnormalize_actions(normalized: np.ndarray, stats: BoundsStats) -> np.ndarray:
    x = np.asarray(normalized, dtype=np.float64)
    if x.shape[-1] != stats.dim:
        raise ValueError(f"actions have {x.shape[-1]} dims, statistics have {stats.dim}")
    return np.where(stats.mask, 0.5 * (x + 1.0) * (stats.high - stats.low + 1e-8) + stats.low, x)


def normalize_proprio(proprio: np.ndarray, stats: BoundsStats) -> np.ndarray:
    p = np.asarray(proprio, dtype=np.float64)
    if p.shape[-1] != stats.dim:
        raise ValueError(f"proprio has {p.shape[-1]} dims, statistics have {stats.dim}")
    scaled = np.where(stats.mask, 2.0 * (p - stats.low) / (stats.high - stats.low + 1e-8) - 1.0, p)
    return np.clip(scaled, -1.0, 1.0)


__all__ = [
    "BoundsStats",
    "DatasetNormStats",
    "resolve_unnorm_key",
    "action_dim_of",
    "parse_norm_stats",
    "unnormalize_actions",
    "normalize_proprio",
]
