"""State / action (de)normalisation statistics of a pi0 / pi0.5 checkpoint, and the formulas.

LeRobot (0.6.1) keeps the statistics outside ``config.json``, in the processor pipelines it saved:

    policy_preprocessor.json     steps; the ``normalizer_processor`` step names its ``state_file``
    policy_preprocessor_step_<i>_normalizer_processor.safetensors      "<feature>.<stat>" -> float32 (D,)
    policy_postprocessor.json    steps; ``unnormalizer_processor`` with its own ``state_file``
    policy_postprocessor_step_<i>_unnormalizer_processor.safetensors   same keys

(features ``observation.state`` and ``action``; stats ``mean``, ``std``, ``min``, ``max``, ``q01``,
``q99`` and maybe ``q10``/``q90``). The pre-processor's copy normalises the state, the post-processor's
un-normalises the actions. Formulas (``_NormalizationMixin._apply_transform``), eps = 1e-8:

    MEAN_STD     x' = (x - mean) / (std + eps)          x = x' * std + mean
    MIN_MAX      x' = 2 (x - min) / d - 1               x = (x' + 1) / 2 * d + min       d = max - min (eps if 0)
    QUANTILES    x' = 2 (x - q01) / d - 1               x = (x' + 1) d / 2 + q01         d = q99 - q01 (eps if 0)
    QUANTILE10   as QUANTILES with q10 / q90

openpi keeps ``assets/<asset_id>/norm_stats.json`` = ``{"norm_stats": {"state": {mean, std, q01, q99},
"actions": {...}}}`` and uses eps 1e-6 *inside* both directions (``transforms.Normalize``):

    z-score      x' = (x - mean) / (std + 1e-6)         x = x' * (std + 1e-6) + mean
    quantile     x' = (x - q01) / (q99 - q01 + 1e-6) * 2 - 1     x = (x' + 1) / 2 * (q99 - q01 + 1e-6) + q01

Nothing is clipped (a pi0.5 state outside [-1, 1] lands in bin -1 or 255 when discretised). All
arithmetic is float32 torch, as upstream runs it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from omnimodel.arch.json_files import read_json

from .config import ConfigError, Layout, NormMode

STATE_KEY = "observation.state"
ACTION_KEY = "action"
PREPROCESSOR_FILE = "policy_preprocessor.json"
POSTPROCESSOR_FILE = "policy_postprocessor.json"
LEROBOT_EPS = 1e-8
OPENPI_EPS = 1e-6
_NEEDED = {
    NormMode.IDENTITY: (),
    NormMode.MEAN_STD: ("mean", "std"),
    NormMode.MIN_MAX: ("min", "max"),
    NormMode.QUANTILES: ("q01", "q99"),
    NormMode.QUANTILE10: ("q10", "q90"),
}


@dataclass(frozen=True)
class FeatureStats:
    """One feature's statistics (float32 1-D tensors) and the mode that uses them."""

    mode: NormMode
    stats: dict[str, torch.Tensor]
    layout: Layout
    source: str  # file the numbers came from, for messages

    @property
    def dim(self) -> int | None:
        return next((int(t.shape[0]) for t in self.stats.values()), None)

    def _bounds(self) -> tuple[torch.Tensor, torch.Tensor]:
        lo_key, hi_key = {
            NormMode.MIN_MAX: ("min", "max"),
            NormMode.QUANTILES: ("q01", "q99"),
            NormMode.QUANTILE10: ("q10", "q90"),
        }[self.mode]
        return self.stats[lo_key], self.stats[hi_key]

    def _lerobot_span(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(low, high - low) with a zero span replaced by eps, as LeRobot does."""
        lo, hi = self._bounds()
        d = hi - lo
        return lo, torch.where(d == 0, torch.tensor(LEROBOT_EPS, dtype=d.dtype), d)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(torch.float32)
        if self.mode is NormMode.IDENTITY:
            return x
        if self.layout is Layout.OPENPI:
            if self.mode is NormMode.MEAN_STD:
                return (x - self.stats["mean"]) / (self.stats["std"] + OPENPI_EPS)
            lo, hi = self._bounds()
            return (x - lo) / (hi - lo + OPENPI_EPS) * 2.0 - 1.0
        if self.mode is NormMode.MEAN_STD:
            return (x - self.stats["mean"]) / (self.stats["std"] + LEROBOT_EPS)
        lo, d = self._lerobot_span()
        return 2.0 * (x - lo) / d - 1.0

    def unnormalize(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(torch.float32)
        if self.mode is NormMode.IDENTITY:
            return x
        if self.layout is Layout.OPENPI:
            if self.mode is NormMode.MEAN_STD:
                return x * (self.stats["std"] + OPENPI_EPS) + self.stats["mean"]
            lo, hi = self._bounds()
            return (x + 1.0) / 2.0 * (hi - lo + OPENPI_EPS) + lo
        if self.mode is NormMode.MEAN_STD:
            return x * self.stats["std"] + self.stats["mean"]
        lo, d = self._lerobot_span()
        if self.mode is NormMode.MIN_MAX:  # LeRobot writes the two inverses in different orders
            return (x + 1) / 2 * d + lo
        return (x + 1.0) * d / 2.0 + lo


@dataclass(frozen=True)
class NormStats:
    state: FeatureStats
    action: FeatureStats


def _read_json(path: Path) -> Any:
    return read_json(path, ConfigError)


def _read_stats_file(path: Path) -> dict[str, dict[str, torch.Tensor]]:
    """A normaliser ``.safetensors``: ``"<feature>.<stat>"`` -> tensor, grouped by feature."""
    from safetensors import safe_open

    if not path.is_file():
        raise ConfigError(f"{path.name}: missing in {path.parent} (named by the processor JSON)")
    out: dict[str, dict[str, torch.Tensor]] = {}
    try:
        with safe_open(str(path), framework="pt") as f:
            for key in f.keys():
                feature, _, stat = key.rpartition(".")
                if not feature:
                    raise ConfigError(f"{path.name}: key '{key}' is not '<feature>.<stat>'")
                out.setdefault(feature, {})[stat] = f.get_tensor(key).to(torch.float32).reshape(-1)
    except ConfigError:
        raise
    except Exception as exc:
        raise ConfigError(f"{path.name}: cannot read safetensors file ({exc})") from exc
    return out


def _step_state_file(root: Path, pipeline_file: str, registry_name: str) -> Path:
    pipe = _read_json(root / pipeline_file)
    steps = pipe.get("steps") if isinstance(pipe, Mapping) else None
    if not isinstance(steps, list):
        raise ConfigError(f"{pipeline_file}: no 'steps' list")
    found = [s for s in steps if isinstance(s, Mapping) and s.get("registry_name") == registry_name]
    if len(found) != 1:
        raise ConfigError(f"{pipeline_file}: expected one '{registry_name}' step, found {len(found)}")
    state_file = found[0].get("state_file")
    if not isinstance(state_file, str):
        raise ConfigError(f"{pipeline_file}: the '{registry_name}' step names no state_file (no statistics saved)")
    return root / state_file


def _feature(stats: Mapping[str, Mapping[str, torch.Tensor]], key: str, mode: NormMode, dim: int, layout: Layout,
             source: str) -> FeatureStats:
    entry = dict(stats.get(key) or {})
    for stat in _NEEDED[mode]:
        if stat not in entry:
            raise ConfigError(f"{source}: missing '{key}.{stat}' (needed for {mode.value} normalisation)")
    used = {k: entry[k] for k in _NEEDED[mode]}
    for stat, t in used.items():
        if t.shape[0] < dim:
            raise ConfigError(f"{source}: '{key}.{stat}' has {t.shape[0]} values, the config needs {dim}")
        if not bool(torch.isfinite(t).all()):
            raise ConfigError(f"{source}: '{key}.{stat}' holds non-finite values")
    # openpi may store statistics longer than the feature (it slices to the data's width)
    return FeatureStats(mode=mode, stats={k: t[:dim].clone() for k, t in used.items()}, layout=layout, source=source)


def load_lerobot_stats(root: Path, state_mode: NormMode, action_mode: NormMode, state_dim: int,
                       action_dim: int) -> NormStats:
    pre_path = _step_state_file(root, PREPROCESSOR_FILE, "normalizer_processor")
    post_path = _step_state_file(root, POSTPROCESSOR_FILE, "unnormalizer_processor")
    pre, post = _read_stats_file(pre_path), _read_stats_file(post_path)
    return NormStats(
        state=_feature(pre, STATE_KEY, state_mode, state_dim, Layout.LEROBOT, pre_path.name),
        action=_feature(post, ACTION_KEY, action_mode, action_dim, Layout.LEROBOT, post_path.name),
    )


def find_openpi_norm_stats(root: Path, asset_id: str | None = None) -> Path:
    """``assets/<asset_id>/norm_stats.json``; the only one when ``asset_id`` is not given."""
    assets = root / "assets"
    found = sorted(assets.glob("*/norm_stats.json")) if assets.is_dir() else []
    if asset_id is not None:
        path = assets / asset_id / "norm_stats.json"
        if not path.is_file():
            raise ConfigError(f"{root}: no assets/{asset_id}/norm_stats.json; available: "
                              f"{[p.parent.name for p in found]}")
        return path
    if len(found) != 1:
        raise ConfigError(f"{root}: expected one assets/<asset_id>/norm_stats.json, found "
                          f"{[p.parent.name for p in found]}; pass asset_id=")
    return found[0]


def read_openpi_stats_raw(path: Path) -> dict[str, dict[str, torch.Tensor]]:
    data = _read_json(path)
    stats = data.get("norm_stats") if isinstance(data, Mapping) else None
    if not isinstance(stats, Mapping):
        raise ConfigError(f"{path.name}: no 'norm_stats' object")
    out: dict[str, dict[str, torch.Tensor]] = {}
    for feature, entry in stats.items():
        if not isinstance(entry, Mapping):
            raise ConfigError(f"{path.name}: norm_stats['{feature}'] is not an object")
        out[feature] = {}
        for k, v in entry.items():
            if v is None:
                continue
            try:
                out[feature][k] = torch.tensor(v, dtype=torch.float32).reshape(-1)
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"{path.name}: norm_stats['{feature}']['{k}'] is not a list of numbers") from exc
    for feature in ("state", "actions"):
        if feature not in out:
            raise ConfigError(f"{path.name}: norm_stats has no '{feature}' entry")
    return out


def openpi_dims(raw: Mapping[str, Mapping[str, torch.Tensor]], path: Path) -> tuple[int, int]:
    def dim(feature: str) -> int:
        entry = raw[feature]
        if "mean" not in entry:
            raise ConfigError(f"{path.name}: norm_stats['{feature}'] has no 'mean'")
        return int(entry["mean"].shape[0])

    return dim("state"), dim("actions")


def openpi_stats(raw: Mapping[str, Mapping[str, torch.Tensor]], mode: NormMode, state_dim: int, action_dim: int,
                 source: str) -> NormStats:
    return NormStats(
        state=_feature({STATE_KEY: raw["state"]}, STATE_KEY, mode, state_dim, Layout.OPENPI, source),
        action=_feature({ACTION_KEY: raw["actions"]}, ACTION_KEY, mode, action_dim, Layout.OPENPI, source),
    )


__all__ = [
    "FeatureStats",
    "NormStats",
    "STATE_KEY",
    "ACTION_KEY",
    "PREPROCESSOR_FILE",
    "POSTPROCESSOR_FILE",
    "load_lerobot_stats",
    "find_openpi_norm_stats",
    "read_openpi_stats_raw",
    "openpi_dims",
    "openpi_stats",
]
