"""Configuration of an OpenVLA-OFT policy, parsed from the files of a Hugging Face checkpoint.

An OFT checkpoint spreads its hyper-parameters over several places, and some are not stored at all:

* ``config.json`` (Prismatic/OpenVLA config): the two timm vision towers (by timm id only: their dims
  come from timm's model definitions, mirrored in ``KNOWN_VITS``), image size, projector kind and a
  ``text_config`` that holds only a few keys -- every other Llama field is a transformers 4.40.1
  ``LlamaConfig`` default (``LLAMA_DEFAULTS``).
* ``preprocessor_config.json``: per-tower pixel normalisation.
* ``dataset_statistics.json``: action / proprio statistics (this fixes the action dimension).
* the action-head / proprio-projector ``.pt`` files: their shapes fix action and proprio dims.
* Nothing stores the chunk length, the number of camera images or the normalisation type: upstream
  picks them from a hard-coded per-robot table (``prismatic/vla/constants.py``) by sniffing the
  command line. ``PLATFORMS`` mirrors that table; we choose by the dataset key (``libero_10_no_noops``
  -> LIBERO) unless the caller names a platform.

This module is pure (dicts in, frozen dataclasses out); ``checkpoint.py`` does the file reading.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any


class ConfigError(ValueError):
    """A checkpoint's configuration is missing something we need or describes an unsupported model."""


# --------------------------------------------------------------------------------------------------
# Vision towers
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ViTConfig:
    """One timm VisionTransformer, as Prismatic builds it (``num_classes=0``, fixed ``img_size``)."""

    timm_model_id: str
    image_size: int
    patch_size: int
    embed_dim: int
    depth: int
    num_heads: int
    mlp_hidden_dim: int
    class_token: bool
    reg_tokens: int
    # timm ``no_embed_class``: pos_embed covers patches only and is added before the prefix tokens are
    # concatenated (DINOv2). Without a class token the two orders are the same thing (SigLIP).
    no_embed_class: bool
    layer_scale: bool  # DINOv2 blocks carry LayerScale (``ls1/ls2.scale_factor`` after Prismatic's rename)
    attn_pool: bool  # SigLIP's MAP head (``global_pool='map'``): stored in the checkpoint, never used by OFT
    layer_norm_eps: float = 1e-6  # timm ViT default ``partial(nn.LayerNorm, eps=1e-6)``
    # timm's default ``act_layer`` is ``nn.GELU`` (exact erf form); Prismatic passes ``act_layer=None``.
    activation: str = "gelu_erf"

    @property
    def grid_size(self) -> int:
        return self.image_size // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.grid_size * self.grid_size

    @property
    def num_prefix_tokens(self) -> int:
        return (1 if self.class_token else 0) + self.reg_tokens

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads

    @property
    def feature_block_index(self) -> int:
        """0-based index of the block whose output Prismatic uses: the second-to-last block.

        Upstream monkey-patches ``forward`` to ``get_intermediate_layers(n={depth - 2})`` (no final norm,
        prefix tokens dropped), so the last block, ``norm`` and ``attn_pool`` never influence the output.
        """
        return self.depth - 2


@dataclass(frozen=True)
class _ViTArch:
    patch_size: int
    embed_dim: int
    depth: int
    num_heads: int
    mlp_hidden_dim: int
    class_token: bool
    reg_tokens: int
    no_embed_class: bool
    layer_scale: bool
    attn_pool: bool


# timm model definitions (timm 0.9.x ``vision_transformer.py``), keyed by the id without the
# pretrained tag. mlp_hidden_dim = int(embed_dim * mlp_ratio): 1152 * 3.7362 -> 4304 for So400m.
KNOWN_VITS: dict[str, _ViTArch] = {
    "vit_large_patch14_reg4_dinov2": _ViTArch(
        patch_size=14,
        embed_dim=1024,
        depth=24,
        num_heads=16,
        mlp_hidden_dim=4096,
        class_token=True,
        reg_tokens=4,
        no_embed_class=True,
        layer_scale=True,
        attn_pool=False,
    ),
    "vit_so400m_patch14_siglip_224": _ViTArch(
        patch_size=14,
        embed_dim=1152,
        depth=27,
        num_heads=16,
        mlp_hidden_dim=4304,
        class_token=False,
        reg_tokens=0,
        no_embed_class=False,
        layer_scale=False,
        attn_pool=True,
    ),
}

# Our own config.json extension (absent from real checkpoints): per-tower dimension overrides, so a
# miniature can keep the real timm ids (and so the real structure) with tiny dims.
VISION_OVERRIDES_KEY = "omnimodel_vision_overrides"
_OVERRIDABLE_VIT_FIELDS = ("patch_size", "embed_dim", "depth", "num_heads", "mlp_hidden_dim")


@dataclass(frozen=True)
class ImageNormalization:
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


@dataclass(frozen=True)
class VisionBackboneConfig:
    """Fused DINOv2 + SigLIP backbone. ``featurizer`` is timm id 0 (DINOv2), ``fused_featurizer`` id 1."""

    featurizer: ViTConfig
    fused_featurizer: ViTConfig
    image_size: int
    resize_strategy: str  # only "resize-naive" is supported
    # Index 0 normalises channels 0-2 (featurizer), index 1 channels 3-5 (fused_featurizer).
    normalization: tuple[ImageNormalization, ImageNormalization]

    @property
    def num_patches_per_image(self) -> int:
        return self.featurizer.num_patches

    @property
    def embed_dim(self) -> int:
        return self.featurizer.embed_dim + self.fused_featurizer.embed_dim


# --------------------------------------------------------------------------------------------------
# Projector, LLM, action head, proprio
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProjectorConfig:
    """``no-align+fused-gelu-mlp``: fc1 (vision -> 4*vision), GELU, fc2 (-> llm), GELU, fc3 (llm -> llm)."""

    vision_dim: int
    llm_dim: int

    @property
    def hidden_dim(self) -> int:
        return 4 * self.vision_dim


# transformers 4.40.1 LlamaConfig defaults; OpenVLA's text_config stores only model_type, pad_token_id,
# torch_dtype and vocab_size, so these are what the released checkpoints actually run with.
LLAMA_DEFAULTS: dict[str, Any] = {
    "vocab_size": 32000,
    "hidden_size": 4096,
    "intermediate_size": 11008,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": None,  # -> num_attention_heads
    "hidden_act": "silu",
    "max_position_embeddings": 2048,
    "rms_norm_eps": 1e-6,
    "rope_theta": 10000.0,
    "rope_scaling": None,
    "attention_bias": False,
    "tie_word_embeddings": False,
}


@dataclass(frozen=True)
class LlamaConfig:
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    rms_norm_eps: float
    rope_theta: float
    max_position_embeddings: int
    pad_token_id: int | None = None

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads


@dataclass(frozen=True)
class ActionHeadConfig:
    """``L1RegressionActionHead``: an MLPResNet over the concatenated action-slot hidden states of one step."""

    llm_dim: int
    hidden_dim: int
    action_dim: int
    num_blocks: int = 2
    layer_norm_eps: float = 1e-5  # torch nn.LayerNorm default, upstream does not set it

    @property
    def input_dim(self) -> int:
        return self.llm_dim * self.action_dim


@dataclass(frozen=True)
class ProprioProjectorConfig:
    proprio_dim: int
    llm_dim: int


class NormalizationType(str, Enum):
    BOUNDS = "bounds"  # [min, max] -> [-1, 1]
    BOUNDS_Q99 = "bounds_q99"  # [q01, q99] -> [-1, 1]


@dataclass(frozen=True)
class PlatformConfig:
    """One row of upstream's ``prismatic/vla/constants.py`` plus the eval scripts' image count."""

    name: str
    num_actions_chunk: int
    action_dim: int
    proprio_dim: int
    normalization: NormalizationType
    num_images: int


PLATFORMS: dict[str, PlatformConfig] = {
    "libero": PlatformConfig("libero", 8, 7, 8, NormalizationType.BOUNDS_Q99, 2),
    "aloha": PlatformConfig("aloha", 25, 14, 14, NormalizationType.BOUNDS, 3),
    "bridge": PlatformConfig("bridge", 5, 7, 7, NormalizationType.BOUNDS_Q99, 1),
    # Not upstream: omnimodel's own Meta-World benchmark (omnimodel.simbench) -- 4-D actions
    # [dx, dy, dz, grip], 4-D proprio [hand xyz, gripper opening], third-person + gripper camera,
    # LIBERO's chunk length and normalisation.
    "metaworld": PlatformConfig("metaworld", 8, 4, 4, NormalizationType.BOUNDS_Q99, 2),
}


@dataclass(frozen=True)
class PromptConfig:
    template: str = "In: What action should the robot take to {instruction}?\nOut:"
    lowercase_instruction: bool = True
    # Upstream appends the lone "▁" piece (29871 in Llama's vocab) after "Out:" to match training.
    append_empty_piece: bool = True
    empty_piece: str = "\u2581"


@dataclass(frozen=True)
class OpenVLAOFTConfig:
    """Everything the reference forward pass (and a runtime reproducing it) needs."""

    vision: VisionBackboneConfig
    projector: ProjectorConfig
    llm: LlamaConfig
    action_head: ActionHeadConfig
    proprio_projector: ProprioProjectorConfig | None
    platform: PlatformConfig
    num_images: int
    num_actions_chunk: int
    prompt: PromptConfig = field(default_factory=PromptConfig)
    bos_token_id: int = 1
    # STOP_INDEX: the "</s>" appended after the action slots (it keeps its real embedding).
    eos_token_id: int = 2
    # Upstream fills the action slots with token id 1 before zeroing their embeddings; the id is moot.
    action_placeholder_token_id: int = 1

    @property
    def action_dim(self) -> int:
        return self.action_head.action_dim

    @property
    def num_action_slots(self) -> int:
        return self.num_actions_chunk * self.action_dim

    @property
    def use_proprio(self) -> bool:
        return self.proprio_projector is not None

    @property
    def num_prefix_embeddings(self) -> int:
        """Embeddings inserted after BOS: patches of every image, then the proprio token if any.

        This is upstream's ``NUM_PATCHES``.
        """
        return self.vision.num_patches_per_image * self.num_images + (1 if self.use_proprio else 0)


# --------------------------------------------------------------------------------------------------
# Parsing
# --------------------------------------------------------------------------------------------------


def _require(mapping: Mapping[str, Any], key: str, where: str) -> Any:
    if key not in mapping:
        raise ConfigError(f"{where}: missing key '{key}'")
    return mapping[key]


def _vit_from_id(timm_id: str, image_size: int, overrides: Mapping[str, Any], where: str) -> ViTConfig:
    base_id = timm_id.split(".", 1)[0]
    arch = KNOWN_VITS.get(base_id)
    if arch is None:
        raise ConfigError(f"{where}: unsupported timm vision tower '{timm_id}'; known: {sorted(KNOWN_VITS)}")
    unknown = set(overrides) - set(_OVERRIDABLE_VIT_FIELDS)
    if unknown:
        raise ConfigError(f"{where}: '{VISION_OVERRIDES_KEY}' has unknown fields {sorted(unknown)}")
    arch = replace(arch, **dict(overrides))
    if arch.embed_dim % arch.num_heads != 0:
        raise ConfigError(f"{where}: {timm_id}: embed_dim {arch.embed_dim} not divisible by {arch.num_heads} heads")
    if arch.depth < 2:
        raise ConfigError(f"{where}: {timm_id}: depth {arch.depth} < 2, no second-to-last block to read")
    if image_size % arch.patch_size != 0:
        raise ConfigError(f"{where}: image size {image_size} is not a multiple of patch size {arch.patch_size}")
    return ViTConfig(timm_model_id=timm_id, image_size=image_size, **arch.__dict__)


def parse_image_normalization(
    preprocessor_config: Mapping[str, Any] | None,
) -> tuple[ImageNormalization, ImageNormalization]:
    """Per-tower mean/std, as ``PrismaticImageProcessor.apply_transform`` applies them.

    ``apply_transform`` uses ``tvf_normalize_params``. The released files store those as bf16-rounded
    values (e.g. mean 0.484375 for 0.485); the processor's ``__init__`` recomputes them from ``means``
    but then ``super().__init__(**kwargs)`` re-sets every saved JSON key, so the saved values win.
    Without a preprocessor config we fall back to Prismatic's dinosiglip defaults.
    """
    if preprocessor_config is None:
        return (
            ImageNormalization((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
            ImageNormalization((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
        )
    where = "preprocessor_config.json"
    if "tvf_normalize_params" in preprocessor_config:
        params = preprocessor_config["tvf_normalize_params"]
        pairs = [(p.get("mean"), p.get("std")) for p in params]
    else:
        means, stds = _require(preprocessor_config, "means", where), _require(preprocessor_config, "stds", where)
        if len(means) != len(stds):
            raise ConfigError(f"{where}: {len(means)} means but {len(stds)} stds")
        pairs = list(zip(means, stds, strict=True))
    if len(pairs) != 2:
        raise ConfigError(f"{where}: expected normalisation for 2 vision towers, found {len(pairs)}")
    out = []
    for i, (mean, std) in enumerate(pairs):
        if mean is None or std is None or len(mean) != 3 or len(std) != 3:
            raise ConfigError(f"{where}: tower {i}: mean/std must be 3 floats each, got {mean!r} / {std!r}")
        if any(float(s) <= 0 for s in std):
            raise ConfigError(f"{where}: tower {i}: std must be positive, got {std!r}")
        out.append(ImageNormalization(tuple(float(m) for m in mean), tuple(float(s) for s in std)))
    return out[0], out[1]


def parse_vision_config(
    hf_config: Mapping[str, Any], preprocessor_config: Mapping[str, Any] | None
) -> VisionBackboneConfig:
    where = "config.json"
    if not _require(hf_config, "use_fused_vision_backbone", where):
        raise ConfigError(
            f"{where}: use_fused_vision_backbone is false; only the fused DINOv2+SigLIP backbone is supported"
        )
    timm_ids = list(_require(hf_config, "timm_model_ids", where))
    image_sizes = list(_require(hf_config, "image_sizes", where))
    if len(timm_ids) != 2 or len(image_sizes) != 2:
        raise ConfigError(f"{where}: expected 2 timm_model_ids and 2 image_sizes, got {timm_ids!r} / {image_sizes!r}")
    act_overrides = hf_config.get("timm_override_act_layers", [None, None])
    if any(a is not None for a in act_overrides):
        raise ConfigError(f"{where}: timm_override_act_layers {act_overrides!r} not supported (only [null, null])")
    overrides = hf_config.get(VISION_OVERRIDES_KEY) or [{}, {}]
    if len(overrides) != 2:
        raise ConfigError(f"{where}: '{VISION_OVERRIDES_KEY}' must hold 2 entries, got {len(overrides)}")
    featurizer = _vit_from_id(timm_ids[0], int(image_sizes[0]), overrides[0], where)
    fused = _vit_from_id(timm_ids[1], int(image_sizes[1]), overrides[1], where)
    if featurizer.num_patches != fused.num_patches:
        raise ConfigError(
            f"{where}: towers give different patch counts ({featurizer.num_patches} vs {fused.num_patches}); "
            "channel concatenation needs equal counts"
        )
    if not featurizer.timm_model_id.startswith("vit_large_patch14_reg4_dinov2") or "siglip" not in fused.timm_model_id:
        raise ConfigError(f"{where}: expected timm_model_ids [DINOv2-reg4, SigLIP] in that order, got {timm_ids!r}")
    strategy = hf_config.get("image_resize_strategy", "resize-naive")
    if strategy != "resize-naive":
        raise ConfigError(f"{where}: image_resize_strategy '{strategy}' not supported (only 'resize-naive')")
    if image_sizes[0] != image_sizes[1]:
        raise ConfigError(f"{where}: towers need the same image size, got {image_sizes!r}")
    return VisionBackboneConfig(
        featurizer=featurizer,
        fused_featurizer=fused,
        image_size=int(image_sizes[0]),
        resize_strategy=strategy,
        normalization=parse_image_normalization(preprocessor_config),
    )


def parse_llama_config(hf_config: Mapping[str, Any]) -> LlamaConfig:
    where = "config.json text_config"
    text = dict(_require(hf_config, "text_config", "config.json"))
    model_type = text.get("model_type", "llama")
    if model_type != "llama":
        raise ConfigError(f"{where}: model_type '{model_type}' not supported (only 'llama')")
    merged = {**LLAMA_DEFAULTS, **text}
    if merged["hidden_act"] != "silu":
        raise ConfigError(f"{where}: hidden_act '{merged['hidden_act']}' not supported (only 'silu')")
    if merged["rope_scaling"] not in (None, {}):
        raise ConfigError(f"{where}: rope_scaling {merged['rope_scaling']!r} not supported")
    if merged["attention_bias"]:
        raise ConfigError(f"{where}: attention_bias=true not supported")
    # transformers 5 writes rope_theta inside rope_parameters; 4.40 wrote it at top level
    rope_parameters = merged.get("rope_parameters") or {}
    if rope_parameters.get("rope_type", "default") != "default":
        raise ConfigError(f"{where}: rope_type '{rope_parameters['rope_type']}' not supported (only 'default')")
    rope_theta = rope_parameters.get("rope_theta", merged["rope_theta"])
    heads = int(merged["num_attention_heads"])
    kv_heads = int(merged["num_key_value_heads"] or heads)
    hidden = int(merged["hidden_size"])
    if hidden % heads != 0 or heads % kv_heads != 0:
        raise ConfigError(f"{where}: hidden_size {hidden} / heads {heads} / kv heads {kv_heads} inconsistent")
    if (hidden // heads) % 2 != 0:
        raise ConfigError(f"{where}: head_dim {hidden // heads} must be even for RoPE")
    return LlamaConfig(
        vocab_size=int(merged["vocab_size"]),
        hidden_size=hidden,
        intermediate_size=int(merged["intermediate_size"]),
        num_hidden_layers=int(merged["num_hidden_layers"]),
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        rms_norm_eps=float(merged["rms_norm_eps"]),
        rope_theta=float(rope_theta),
        max_position_embeddings=int(merged["max_position_embeddings"]),
        pad_token_id=merged.get("pad_token_id", hf_config.get("pad_token_id")),
    )


def check_model_kind(hf_config: Mapping[str, Any]) -> None:
    """Refuse what this reference does not implement, with the reason."""
    where = "config.json"
    model_type = hf_config.get("model_type")
    if model_type != "openvla":
        raise ConfigError(f"{where}: model_type '{model_type}' is not 'openvla'")
    arch = hf_config.get("arch_specifier", "no-align+fused-gelu-mlp")
    if arch != "no-align+fused-gelu-mlp":
        raise ConfigError(f"{where}: arch_specifier '{arch}' not supported (only 'no-align+fused-gelu-mlp')")
    if hf_config.get("use_film"):
        raise ConfigError(f"{where}: use_film is set; FiLM (OFT+) checkpoints are not supported")


def select_platform(
    dataset_key: str,
    platform: str | None = None,
) -> PlatformConfig:
    """Pick the upstream constants row: by explicit name, else by the dataset key (as upstream's argv sniff)."""
    if platform is not None:
        if platform.lower() not in PLATFORMS:
            raise ConfigError(f"unknown platform '{platform}'; known: {sorted(PLATFORMS)}")
        return PLATFORMS[platform.lower()]
    matches = [p for name, p in PLATFORMS.items() if name in dataset_key.lower()]
    if len(matches) != 1:
        raise ConfigError(
            f"cannot tell the robot platform from dataset key '{dataset_key}' (chunk length, image count and "
            f"normalisation are not stored in the checkpoint); pass platform= one of {sorted(PLATFORMS)}"
        )
    return matches[0]


def build_config(
    hf_config: Mapping[str, Any],
    *,
    preprocessor_config: Mapping[str, Any] | None,
    dataset_key: str,
    stats_action_dim: int,
    head_action_dim: int,
    head_hidden_dim: int,
    head_num_blocks: int,
    proprio_dim: int | None,
    platform: str | None = None,
    num_images: int | None = None,
    num_actions_chunk: int | None = None,
) -> OpenVLAOFTConfig:
    """Assemble the full config; the dims read off weight files are cross-checked against each other."""
    check_model_kind(hf_config)
    vision = parse_vision_config(hf_config, preprocessor_config)
    llm = parse_llama_config(hf_config)
    plat = select_platform(dataset_key, platform)
    if stats_action_dim != head_action_dim:
        raise ConfigError(
            f"dataset_statistics.json['{dataset_key}'] has {stats_action_dim}-D actions but the action head "
            f"predicts {head_action_dim}-D actions"
        )
    if head_action_dim != plat.action_dim:
        raise ConfigError(
            f"platform '{plat.name}' has {plat.action_dim}-D actions but the checkpoint has {head_action_dim}-D; "
            "pass the right platform="
        )
    n_images = plat.num_images if num_images is None else int(num_images)
    chunk = plat.num_actions_chunk if num_actions_chunk is None else int(num_actions_chunk)
    if n_images < 1 or chunk < 1:
        raise ConfigError(f"num_images ({n_images}) and num_actions_chunk ({chunk}) must be >= 1")
    return OpenVLAOFTConfig(
        vision=vision,
        projector=ProjectorConfig(vision_dim=vision.embed_dim, llm_dim=llm.hidden_size),
        llm=llm,
        action_head=ActionHeadConfig(
            llm_dim=llm.hidden_size, hidden_dim=head_hidden_dim, action_dim=head_action_dim, num_blocks=head_num_blocks
        ),
        proprio_projector=None if proprio_dim is None else ProprioProjectorConfig(proprio_dim, llm.hidden_size),
        platform=plat,
        num_images=n_images,
        num_actions_chunk=chunk,
    )


__all__: Sequence[str] = (
    "ConfigError",
    "ViTConfig",
    "KNOWN_VITS",
    "VISION_OVERRIDES_KEY",
    "ImageNormalization",
    "VisionBackboneConfig",
    "ProjectorConfig",
    "LLAMA_DEFAULTS",
    "LlamaConfig",
    "ActionHeadConfig",
    "ProprioProjectorConfig",
    "NormalizationType",
    "PlatformConfig",
    "PLATFORMS",
    "PromptConfig",
    "OpenVLAOFTConfig",
    "parse_image_normalization",
    "parse_vision_config",
    "parse_llama_config",
    "check_model_kind",
    "select_platform",
    "build_config",
)
