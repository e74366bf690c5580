"""Configuration of a pi0 / pi0.5 policy, parsed from the files of a published PyTorch checkpoint.

Two layouts carry the same network (Physical Intelligence's openpi, ported to PyTorch):

* **LeRobot** (``lerobot/pi0_base``, ``lerobot/pi05_*``; lerobot 0.6.1): ``config.json`` is the draccus
  dump of ``PI0Config`` / ``PI05Config`` -- ``"type": "pi0" | "pi05"``, ``chunk_size``,
  ``n_action_steps``, ``max_state_dim``, ``max_action_dim``, ``tokenizer_max_length``,
  ``num_inference_steps``, ``min_period`` / ``max_period``, ``image_resolution``, ``empty_cameras``,
  ``input_features`` (camera keys ``observation.images.*`` in order, ``observation.state``) and
  ``output_features`` (``action``), ``normalization_mapping``. The statistics live in the processor
  files (see ``normalization.py``).
* **openpi PyTorch conversion** (``examples/convert_jax_model_to_pytorch.py``): ``config.json`` holds
  only ``action_dim``, ``action_horizon``, ``paligemma_variant``, ``action_expert_variant``,
  ``precision``; pi0 vs pi0.5 is told by the tensors (``time_mlp_in.*`` vs ``state_proj.*``), the
  statistics are ``assets/<asset_id>/norm_stats.json``, the cameras are openpi's three fixed keys.

Neither stores the network widths: they come from the Gemma variant names (``GEMMA_VARIANTS``, as in
openpi ``gemma.get_config``) and from PaliGemma constants LeRobot hard-codes (SigLIP So400m/14,
257152-token vocabulary). A miniature keeps the real variant names and overrides the widths with our
own ``config.json`` key ``omnimodel_overrides`` (absent from real checkpoints), as OFT does with
``omnimodel_vision_overrides``.

This module is pure (dicts in, frozen dataclasses out); ``checkpoint.py`` does the file reading.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from enum import Enum
from typing import Any


class ConfigError(ValueError):
    """A checkpoint's configuration is missing something we need or describes an unsupported model."""


# --------------------------------------------------------------------------------------------------
# Component configs
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GemmaConfig:
    """One Gemma stack (openpi ``gemma.Config``); the action expert has no embedding of its own."""

    width: int
    depth: int
    mlp_dim: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int = 257152  # PaliGemma's (LeRobot sets it explicitly); unused by the expert
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0


GEMMA_VARIANTS: dict[str, GemmaConfig] = {
    "gemma_2b": GemmaConfig(width=2048, depth=18, mlp_dim=16384, num_heads=8, num_kv_heads=1, head_dim=256),
    "gemma_300m": GemmaConfig(width=1024, depth=18, mlp_dim=4096, num_heads=8, num_kv_heads=1, head_dim=256),
}


@dataclass(frozen=True)
class SiglipConfig:
    """SigLIP vision tower in the Hugging Face layout (PaliGemma's: no pooling head)."""

    hidden_size: int = 1152
    num_hidden_layers: int = 27
    num_attention_heads: int = 16
    intermediate_size: int = 4304
    patch_size: int = 14
    image_size: int = 224
    layer_norm_eps: float = 1e-6
    # HF SiglipVisionConfig.hidden_act default "gelu_pytorch_tanh": the tanh approximation, not erf.
    activation: str = "gelu_tanh"

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads


class NormMode(str, Enum):
    """LeRobot ``NormalizationMode`` values (``normalization_mapping`` in config.json)."""

    IDENTITY = "IDENTITY"
    MEAN_STD = "MEAN_STD"
    MIN_MAX = "MIN_MAX"
    QUANTILES = "QUANTILES"
    QUANTILE10 = "QUANTILE10"


class Layout(str, Enum):
    LEROBOT = "lerobot"
    OPENPI = "openpi"


# openpi's fixed camera keys (pi0_config / model.py IMAGE_KEYS), used for the openpi layout.
OPENPI_CAMERAS = ("base_0_rgb", "left_wrist_0_rgb", "right_wrist_0_rgb")
LEROBOT_IMAGE_PREFIX = "observation.images."
OVERRIDES_KEY = "omnimodel_overrides"
_OVERRIDE_SECTIONS = {"vision": SiglipConfig, "paligemma": GemmaConfig, "action_expert": GemmaConfig}


@dataclass(frozen=True)
class Pi0Config:
    """Everything the reference forward pass (and a runtime reproducing it) needs."""

    kind: str  # "pi0" | "pi05"
    layout: Layout
    vision: SiglipConfig
    paligemma: GemmaConfig
    action_expert: GemmaConfig
    camera_keys: tuple[str, ...]  # LeRobot feature keys (or openpi camera names), in model order
    state_dim: int  # the robot's raw state size (before padding to max_state_dim)
    action_dim: int  # the robot's raw action size (the chunk is cut to it)
    chunk_size: int = 50
    n_action_steps: int = 50
    max_state_dim: int = 32
    max_action_dim: int = 32
    tokenizer_max_length: int = 48
    num_inference_steps: int = 10
    min_period: float = 4e-3
    max_period: float = 4.0
    state_norm: NormMode = NormMode.MEAN_STD
    action_norm: NormMode = NormMode.MEAN_STD
    empty_cameras: int = 0
    paligemma_variant: str = "gemma_2b"
    action_expert_variant: str = "gemma_300m"
    # Token ids of PaliGemma's SentencePiece vocabulary (pad 0, eos 1, bos 2).
    bos_token_id: int = 2
    pad_token_id: int = 0

    @property
    def is_pi05(self) -> bool:
        return self.kind == "pi05"

    @property
    def image_size(self) -> int:
        return self.vision.image_size

    @property
    def num_image_tokens(self) -> int:
        return self.vision.num_patches

    @property
    def suffix_len(self) -> int:
        """Tokens the action expert runs on per denoising step: [state] + chunk actions."""
        return self.chunk_size + (0 if self.is_pi05 else 1)


# --------------------------------------------------------------------------------------------------
# Parsing
# --------------------------------------------------------------------------------------------------


def _require(mapping: Mapping[str, Any], key: str, where: str) -> Any:
    if key not in mapping:
        raise ConfigError(f"{where}: missing key '{key}'")
    return mapping[key]


def _int(value: Any, key: str, where: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{where}: '{key}' must be an integer >= {minimum}, got {value!r}")
    return value


def _apply_overrides(base: Any, section: str, overrides: Mapping[str, Any], where: str) -> Any:
    known = {f.name for f in fields(_OVERRIDE_SECTIONS[section])}
    unknown = set(overrides) - known
    if unknown:
        raise ConfigError(f"{where}: '{OVERRIDES_KEY}.{section}' has unknown fields {sorted(unknown)}")
    return replace(base, **dict(overrides))


def _gemma(variant: str, overrides: Mapping[str, Any], section: str, where: str) -> GemmaConfig:
    if variant not in GEMMA_VARIANTS:
        raise ConfigError(f"{where}: unknown Gemma variant '{variant}'; known: {sorted(GEMMA_VARIANTS)}")
    g = _apply_overrides(GEMMA_VARIANTS[variant], section, overrides, where)
    if g.head_dim % 2 or g.num_heads % g.num_kv_heads:
        raise ConfigError(f"{where}: {section}: head_dim {g.head_dim} must be even and heads {g.num_heads} a "
                          f"multiple of kv heads {g.num_kv_heads}")
    return g


def _overrides(cfg: Mapping[str, Any], where: str) -> dict[str, Mapping[str, Any]]:
    raw = cfg.get(OVERRIDES_KEY) or {}
    if not isinstance(raw, Mapping) or set(raw) - set(_OVERRIDE_SECTIONS):
        raise ConfigError(f"{where}: '{OVERRIDES_KEY}' must map some of {sorted(_OVERRIDE_SECTIONS)} to field dicts")
    return {k: dict(raw.get(k) or {}) for k in _OVERRIDE_SECTIONS}


def _components(cfg: Mapping[str, Any], image_size: int, where: str) -> tuple[SiglipConfig, GemmaConfig, GemmaConfig]:
    ov = _overrides(cfg, where)
    vision = _apply_overrides(SiglipConfig(image_size=image_size), "vision", ov["vision"], where)
    if vision.image_size % vision.patch_size or vision.hidden_size % vision.num_attention_heads:
        raise ConfigError(f"{where}: vision: image size {vision.image_size} / patch {vision.patch_size} / width "
                          f"{vision.hidden_size} / heads {vision.num_attention_heads} inconsistent")
    pali = _gemma(str(cfg.get("paligemma_variant", "gemma_2b")), ov["paligemma"], "paligemma", where)
    expert = _gemma(str(cfg.get("action_expert_variant", "gemma_300m")), ov["action_expert"], "action_expert", where)
    # Joint attention concatenates both experts' heads along the sequence (openpi asserts this too).
    if (pali.num_heads, pali.num_kv_heads, pali.head_dim, pali.depth) != (
        expert.num_heads, expert.num_kv_heads, expert.head_dim, expert.depth
    ):
        raise ConfigError(
            f"{where}: the PaliGemma and action-expert stacks must share heads / kv heads / head_dim / depth for "
            f"joint attention, got {(pali.num_heads, pali.num_kv_heads, pali.head_dim, pali.depth)} vs "
            f"{(expert.num_heads, expert.num_kv_heads, expert.head_dim, expert.depth)}"
        )
    return vision, pali, expert


_LEROBOT_DEFAULT_NORMS = {
    "pi0": (NormMode.MEAN_STD, NormMode.MEAN_STD),
    "pi05": (NormMode.QUANTILES, NormMode.QUANTILES),
}


def _feature_shape(feature: Any, key: str, where: str) -> tuple[int, ...]:
    if not isinstance(feature, Mapping) or "shape" not in feature:
        raise ConfigError(f"{where}: feature '{key}' has no 'shape'")
    return tuple(int(s) for s in feature["shape"])


def parse_lerobot_config(cfg: Mapping[str, Any]) -> Pi0Config:
    """LeRobot ``config.json`` (``type`` pi0 / pi05) -> ``Pi0Config``."""
    where = "config.json"
    kind = cfg.get("type")
    if kind not in ("pi0", "pi05"):
        raise ConfigError(f"{where}: 'type' is {kind!r}; only 'pi0' and 'pi05' are supported")
    res = cfg.get("image_resolution", [224, 224])
    if not isinstance(res, (list, tuple)) or len(res) != 2 or res[0] != res[1]:
        raise ConfigError(f"{where}: image_resolution must be square [S, S], got {res!r}")
    vision, pali, expert = _components(cfg, int(res[0]), where)
    if vision.image_size != int(res[0]):
        raise ConfigError(f"{where}: '{OVERRIDES_KEY}.vision.image_size' disagrees with image_resolution {res!r}")

    inputs = dict(_require(cfg, "input_features", where) or {})
    outputs = dict(_require(cfg, "output_features", where) or {})
    cameras = []
    for key, feat in inputs.items():
        if isinstance(feat, Mapping) and feat.get("type") == "VISUAL":
            shape = _feature_shape(feat, key, where)
            if len(shape) != 3 or shape[0] != 3:
                raise ConfigError(f"{where}: camera '{key}' must have shape [3, H, W], got {list(shape)}")
            cameras.append(key)
    empty = _int(cfg.get("empty_cameras", 0), "empty_cameras", where, minimum=0)
    # validate_features() adds the empty cameras after the configured ones
    cameras += [f"{LEROBOT_IMAGE_PREFIX}empty_camera_{i}" for i in range(empty) if
                f"{LEROBOT_IMAGE_PREFIX}empty_camera_{i}" not in cameras]
    if not cameras:
        raise ConfigError(f"{where}: input_features has no VISUAL feature (camera)")
    max_state = _int(cfg.get("max_state_dim", 32), "max_state_dim", where)
    max_action = _int(cfg.get("max_action_dim", 32), "max_action_dim", where)
    state_dim = _feature_shape(inputs["observation.state"], "observation.state", where)[0] if (
        "observation.state" in inputs) else max_state
    if "action" not in outputs:
        raise ConfigError(f"{where}: output_features has no 'action'")
    action_dim = _feature_shape(outputs["action"], "action", where)[0]
    if state_dim > max_state or action_dim > max_action:
        raise ConfigError(f"{where}: state {state_dim} / action {action_dim} dims exceed max_state_dim {max_state} / "
                          f"max_action_dim {max_action}")

    chunk = _int(cfg.get("chunk_size", 50), "chunk_size", where)
    n_steps = _int(cfg.get("n_action_steps", chunk), "n_action_steps", where)
    if n_steps > chunk:
        raise ConfigError(f"{where}: n_action_steps {n_steps} > chunk_size {chunk}")
    default_state, default_action = _LEROBOT_DEFAULT_NORMS[kind]
    mapping = cfg.get("normalization_mapping") or {}
    try:
        state_norm = NormMode(mapping.get("STATE", default_state.value))
        action_norm = NormMode(mapping.get("ACTION", default_action.value))
    except ValueError as exc:
        raise ConfigError(f"{where}: normalization_mapping: {exc}") from exc
    if mapping.get("VISUAL", "IDENTITY") != "IDENTITY":
        raise ConfigError(f"{where}: normalization_mapping.VISUAL must be IDENTITY (the model maps [0,1] to [-1,1])")
    if cfg.get("use_relative_actions"):
        raise ConfigError(f"{where}: use_relative_actions=true is not supported")
    rtc = cfg.get("rtc_config")
    if isinstance(rtc, Mapping) and rtc.get("enabled"):
        raise ConfigError(f"{where}: real-time chunking (rtc_config.enabled) is not supported")
    return Pi0Config(
        kind=kind,
        layout=Layout.LEROBOT,
        vision=vision,
        paligemma=pali,
        action_expert=expert,
        camera_keys=tuple(cameras),
        state_dim=state_dim,
        action_dim=action_dim,
        chunk_size=chunk,
        n_action_steps=n_steps,
        max_state_dim=max_state,
        max_action_dim=max_action,
        tokenizer_max_length=_int(cfg.get("tokenizer_max_length", 200 if kind == "pi05" else 48),
                                  "tokenizer_max_length", where),
        num_inference_steps=_int(cfg.get("num_inference_steps", 10), "num_inference_steps", where),
        min_period=float(cfg.get("min_period", 4e-3)),
        max_period=float(cfg.get("max_period", 4.0)),
        state_norm=state_norm,
        action_norm=action_norm,
        empty_cameras=empty,
        paligemma_variant=str(cfg.get("paligemma_variant", "gemma_2b")),
        action_expert_variant=str(cfg.get("action_expert_variant", "gemma_300m")),
    )


def parse_openpi_config(cfg: Mapping[str, Any], *, kind: str, state_dim: int, action_dim: int) -> Pi0Config:
    """openpi-PyTorch ``config.json`` -> ``Pi0Config``. ``kind`` comes from the tensor names and the raw
    state / action sizes from ``norm_stats.json`` (the config stores only the padded ``action_dim``)."""
    where = "config.json"
    if kind not in ("pi0", "pi05"):
        raise ConfigError(f"{where}: kind must be pi0 or pi05, got {kind!r}")
    padded = _int(cfg.get("action_dim", 32), "action_dim", where)
    horizon = _int(cfg.get("action_horizon", 50), "action_horizon", where)
    vision, pali, expert = _components(cfg, 224, where)
    if state_dim > padded or action_dim > padded:
        raise ConfigError(f"{where}: state {state_dim} / action {action_dim} dims exceed action_dim {padded}")
    quantile = NormMode.QUANTILES if kind == "pi05" else NormMode.MEAN_STD  # openpi: quantiles unless PI0
    return Pi0Config(
        kind=kind,
        layout=Layout.OPENPI,
        vision=vision,
        paligemma=pali,
        action_expert=expert,
        camera_keys=OPENPI_CAMERAS,
        state_dim=state_dim,
        action_dim=action_dim,
        chunk_size=horizon,
        n_action_steps=horizon,
        max_state_dim=padded,
        max_action_dim=padded,
        tokenizer_max_length=200 if kind == "pi05" else 48,
        num_inference_steps=10,
        state_norm=quantile,
        action_norm=quantile,
        paligemma_variant=str(cfg.get("paligemma_variant", "gemma_2b")),
        action_expert_variant=str(cfg.get("action_expert_variant", "gemma_300m")),
    )


@dataclass(frozen=True)
class PromptFormat:
    """How the instruction (and, for pi0.5, the state) becomes the prefix text.

    LeRobot pi0 appends "\\n" to the raw task and tokenises it in one go (``Pi0NewLineProcessor``);
    openpi pi0 cleans the text and tokenises "\\n" separately. pi0.5 (both) cleans the text and writes
    ``"Task: {text}, State: {bins};\\nAction: "``. Cleaning = strip, "_" -> " ", "\\n" -> " ".
    """

    kind: str
    layout: Layout
    pi05_template: str = "Task: {task}, State: {state};\nAction: "
    state_bins: int = 256

    @property
    def clean_text(self) -> bool:
        return self.kind == "pi05" or self.layout is Layout.OPENPI


def prompt_format(cfg: Pi0Config) -> PromptFormat:
    return PromptFormat(kind=cfg.kind, layout=cfg.layout)


__all__ = [
    "ConfigError",
    "GemmaConfig",
    "GEMMA_VARIANTS",
    "SiglipConfig",
    "NormMode",
    "Layout",
    "OPENPI_CAMERAS",
    "LEROBOT_IMAGE_PREFIX",
    "OVERRIDES_KEY",
    "Pi0Config",
    "PromptFormat",
    "prompt_format",
    "parse_lerobot_config",
    "parse_openpi_config",
]

