"""Calibration data against the checkpoint it calibrates, before any heavy work.

What a policy takes (``PolicyInputs``: from a checkpoint's header, or from a loaded policy) is compared
with what the data holds (``CalibDataInfo`` from its metadata, then one loaded episode):

    field        error when                                               otherwise
    statistics   the checkpoint holds several entries and neither          the entry used is reported
                 --unnorm-key nor the data's name picks one; the data
                 declares another entry of the checkpoint as its own
    cameras      the data's (chosen) cameras are not as many as the        --calib-cameras picks them
                 images the policy takes per step
    images       not RGB (H, W, 3)                                         another size is resized as OFT's
                                                                           preprocessing does (noted)
    proprio      its dimension differs from the proprio projector's
    actions      their dimension differs from the action head's

Every error is one line naming the data, the field and both values. Two findings are notes, not errors:
values far outside the statistics' bounds (most of one dimension beyond 3x the q01..q99 range: probably
another dataset's statistics or another state convention), and LIBERO's raw gripper actions (-1 open,
+1 close) where the statistics describe OFT's (1 open, 0 close, un-normalised): those are converted
as OFT's LIBERO data pipeline converts them (``calib_loaders.libero_gripper_to_oft``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from omnimodel.errors import OmnimodelError
from omnimodel.simbench.calib_loaders import is_wrist_camera, libero_gripper_to_oft
from omnimodel.simbench.episodes import Episode

from .calib_data import CalibDataInfo

NO_NOOPS = "_no_noops"  # OFT's LIBERO statistics keys: libero_10_no_noops for the libero_10 data
FAR_OUT = 3.0  # normalised |value| beyond which a value is far outside the statistics' q01..q99


class CalibMismatchError(OmnimodelError, ValueError):
    """The calibration data does not fit the checkpoint; the message names the data, field and values."""


@dataclass(frozen=True)
class PolicyInputs:
    """What the checkpoint takes per step and the statistics entry it normalises with."""

    source: str  # the checkpoint, for messages
    num_images: int
    image_size: int
    proprio_dim: int | None  # None: no proprio input
    action_dim: int
    stats_key: str
    action_stats: Any  # .low / .high / .mask arrays of the statistics entry
    proprio_stats: Any | None
    stats_keys: tuple[str, ...] = ()  # every entry the checkpoint holds, when known

    @classmethod
    def from_config(cls, config: Any, norm_stats: Any, source: str, stats_keys: Sequence[str] = ()) -> PolicyInputs:
        proprio = config.proprio_projector.proprio_dim if config.use_proprio else None
        return cls(source, int(config.num_images), int(config.vision.image_size), proprio, int(config.action_dim),
                   norm_stats.key, norm_stats.action, norm_stats.proprio if proprio is not None else None,
                   tuple(stats_keys))

    @classmethod
    def from_policy(cls, policy: Any, source: str = "the policy") -> PolicyInputs:
        return cls.from_config(policy.config, policy.norm_stats, source)


def _key_matches(key: str, name: str) -> bool:
    a, b = key.lower(), name.lower()
    return a == b or a.removesuffix(NO_NOOPS) == b.removesuffix(NO_NOOPS)


def choose_stats_key(keys: Sequence[str], stats_source: str, checkpoint: str, info: CalibDataInfo,
                     requested: str | None = None) -> tuple[str, str]:
    """(the statistics entry to un-normalise with, why): ``requested`` (--unnorm-key), the only entry,
    or the one the data's declared key or name matches."""
    keys = list(keys)
    if requested is not None:
        if requested not in keys:
            raise CalibMismatchError(
                f"--unnorm-key '{requested}': {checkpoint}'s {stats_source} has no such entry; "
                f"entries: {', '.join(keys)}")
        return requested, "--unnorm-key"
    if len(keys) == 1:
        return keys[0], "the checkpoint's only statistics entry"
    names = [info.dataset_key] if info.dataset_key else []
    names += [n for n in info.names if n not in names]
    for name in names:
        hits = [k for k in keys if _key_matches(k, name)]
        if len(hits) == 1:
            return hits[0], f"matches the calibration data's name '{name}'"
    raise CalibMismatchError(
        f"calibration data {info.path}: named {', '.join(repr(n) for n in names)}, which picks none of the "
        f"{len(keys)} statistics entries of {checkpoint} ({', '.join(keys)}): choose one with --unnorm-key")


def check_metadata(info: CalibDataInfo, inputs: PolicyInputs) -> None:
    """The checks the metadata alone answers (before any pixel is read)."""
    where = f"calibration data {info.path}"
    if len(info.cameras) != inputs.num_images:
        others = [c for c in info.all_cameras if c not in info.cameras]
        raise CalibMismatchError(
            f"{where}: {len(info.cameras)} camera(s) ({', '.join(info.cameras)}), the checkpoint {inputs.source} "
            f"takes {inputs.num_images} image(s) per step (third-person first, then wrist): choose them with "
            f"--calib-cameras KEY,KEY" + (f" (also available: {', '.join(others)})" if others else ""))
    if info.dataset_key and info.dataset_key in inputs.stats_keys and info.dataset_key != inputs.stats_key:
        raise CalibMismatchError(
            f"{where}: its dataset key is '{info.dataset_key}', but the checkpoint un-normalises with statistics "
            f"'{inputs.stats_key}' (pass --unnorm-key {info.dataset_key} to use the data's own entry)")
    _check_dims(where, info.state_key, info.proprio_dim, info.action_key, info.action_dim, inputs)


def _check_dims(where: str, state_key: str, proprio: int | None, action_key: str, action: int | None,
                inputs: PolicyInputs) -> None:
    if inputs.proprio_dim is not None and proprio is not None and proprio != inputs.proprio_dim:
        raise CalibMismatchError(
            f"{where}: proprio '{state_key}' is {proprio}-D, the checkpoint {inputs.source} takes "
            f"{inputs.proprio_dim}-D proprio (statistics '{inputs.stats_key}')")
    if action is not None and action != inputs.action_dim:
        raise CalibMismatchError(
            f"{where}: actions '{action_key}' are {action}-D, the checkpoint {inputs.source} predicts "
            f"{inputs.action_dim}-D actions (statistics '{inputs.stats_key}')")


@dataclass
class CalibPlan:
    """How the data's episodes become calibration samples for this checkpoint, and what was noticed."""

    notes: list[str] = field(default_factory=list)
    libero_gripper: bool = False  # the actions' last dim is converted from LIBERO's raw convention

    def apply(self, ep: Episode) -> Episode:
        if not self.libero_gripper:
            return ep
        return replace(ep, actions=libero_gripper_to_oft(ep.actions))


def check_episode(info: CalibDataInfo, ep: Episode, inputs: PolicyInputs, where: str | None = None) -> None:
    """One loaded episode holds what the metadata promised and the checkpoint takes."""
    where = where or f"calibration data {info.path}"
    cams = ep.images.shape[1] if ep.images.ndim == 5 else 0
    if cams != inputs.num_images:
        raise CalibMismatchError(
            f"{where}: an episode carries {cams} image(s) per step, the checkpoint {inputs.source} takes "
            f"{inputs.num_images}")
    _check_dims(where, info.state_key, int(ep.proprio.shape[1]), info.action_key, int(ep.actions.shape[1]), inputs)


def check_sample(info: CalibDataInfo, ep: Episode, inputs: PolicyInputs) -> CalibPlan:
    """The first loaded episode: image sizes, dimensions, value ranges, the gripper convention."""
    where = f"calibration data {info.path}"
    check_episode(info, ep, inputs, where)
    plan = CalibPlan()
    h, w = int(ep.images.shape[2]), int(ep.images.shape[3])
    s = inputs.image_size
    if (h, w) != (s, s):
        aspect = "" if h == w else "; the aspect ratio is not kept, as upstream's resize does not keep it"
        plan.notes.append(f"images {h}x{w} are resized to {s}x{s} as OFT's preprocessing does (antialiased "
                          f"bicubic){aspect}")
    if is_wrist_camera(info.cameras[0]) and not all(is_wrist_camera(c) for c in info.cameras):
        plan.notes.append(f"WARNING: the first camera '{info.cameras[0]}' looks like a wrist view; OFT takes the "
                          "third-person view first (--calib-cameras)")
    if not ep.instruction.strip():
        plan.notes.append("WARNING: episodes without a task text calibrate with an empty instruction")
    actions = ep.actions
    if _raw_libero_gripper(actions, inputs.action_stats):
        plan.libero_gripper = True
        actions = libero_gripper_to_oft(actions)
        plan.notes.append("gripper actions are in LIBERO's raw convention (-1 open, +1 close) and the statistics "
                          "in OFT's (1 open, 0 close): converted as OFT's LIBERO data pipeline does")
    for what, values, stats in (("proprio", ep.proprio, inputs.proprio_stats), ("action", actions,
                                                                                inputs.action_stats)):
        far = _far_outside(values, stats) if stats is not None else None
        if far is not None:
            i, lo, hi = far
            plan.notes.append(
                f"WARNING: {what} dim {i} lies mostly far outside statistics '{inputs.stats_key}' (values "
                f"{values[:, i].min():.3g}..{values[:, i].max():.3g}, q01..q99 {lo:.3g}..{hi:.3g}): another "
                "dataset's statistics (--unnorm-key) or another state/action convention?")
    return plan


def _raw_libero_gripper(actions: np.ndarray, stats: Any) -> bool:
    """Statistics: last dim un-normalised within [0, 1]; data: within [-1, 1] with negative values."""
    mask = np.asarray(stats.mask, dtype=bool)
    if mask[-1] or stats.low[-1] < -0.01 or stats.high[-1] > 1.01:
        return False
    g = actions[:, -1]
    return bool(g.min() < -0.5 and np.abs(g).max() <= 1.01)


def _far_outside(values: np.ndarray, stats: Any) -> tuple[int, float, float] | None:
    """The first normalised dimension whose values mostly lie beyond FAR_OUT, or None."""
    low, high, mask = np.asarray(stats.low), np.asarray(stats.high), np.asarray(stats.mask, dtype=bool)
    if values.shape[1] != low.shape[0]:
        return None  # the dimension checks report this
    scaled = 2.0 * (values - low) / (high - low + 1e-8) - 1.0
    frac = (np.abs(scaled) > FAR_OUT).mean(axis=0)
    for i in np.flatnonzero(mask & (frac > 0.5)):
        return int(i), float(low[i]), float(high[i])
    return None


__all__ = [
    "CalibMismatchError",
    "CalibPlan",
    "PolicyInputs",
    "check_episode",
    "check_metadata",
    "check_sample",
    "choose_stats_key",
]
