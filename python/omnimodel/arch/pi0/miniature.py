"""Write an architecture-faithful miniature pi0 / pi0.5 checkpoint, deterministic from a seed.

Same files, formats and tensor names as a released checkpoint (``checkpoint.py``) in either layout --
LeRobot (config.json, ``model.``-prefixed model.safetensors, processor pipelines with the statistics)
or openpi-PyTorch (config.json, unprefixed model.safetensors, assets/<id>/norm_stats.json) -- with the
real Gemma variant names and only the widths shrunk through ``config.json["omnimodel_overrides"]``.
Tied / ignored tensors are written as the spec says (PaliGemma ``lm_head`` and/or ``embed_tokens``,
the expert's unused ``lm_head``), in float32 or bfloat16.

A small SentencePiece BPE model trained here stands in for PaliGemma's 257152-piece tokenizer, with its
conventions: pad/eos/bos/unk = 0/1/2/3, no dummy prefix, byte fallback, digits split, "\\n" a piece of
its own. The embedding has the tokenizer's size rounded up to a multiple of 64 (PaliGemma's 257152 is
one too). The defaults keep 8 query heads and 1 KV head, as the real stacks (LeRobot's joint path
hard-codes 8 heads).
"""

from __future__ import annotations

import io
import itertools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file

from .config import OPENPI_CAMERAS, OVERRIDES_KEY, Layout, parse_lerobot_config, parse_openpi_config
from .modeling import Pi0Model
from .normalization import ACTION_KEY, POSTPROCESSOR_FILE, PREPROCESSOR_FILE, STATE_KEY
from .tokenizer import TOKENIZER_FILE

LEROBOT_CAMERAS = ("observation.images.base_0_rgb", "observation.images.left_wrist_0_rgb",
                   "observation.images.right_wrist_0_rgb")
OPENPI_ASSET_ID = "miniature"


@dataclass(frozen=True)
class Pi0MiniatureSpec:
    kind: str = "pi05"  # "pi0" | "pi05"
    layout: str = "lerobot"  # "lerobot" | "openpi"
    seed: int = 0
    image_size: int = 56  # patch 14 -> 16 tokens per camera
    num_cameras: int = 2  # LeRobot layout only (openpi always has its 3 cameras)
    vision: dict[str, int] = field(default_factory=lambda: dict(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, patch_size=14))
    paligemma: dict[str, int] = field(default_factory=lambda: dict(
        width=64, depth=2, mlp_dim=128, num_heads=8, num_kv_heads=1, head_dim=8))
    action_expert: dict[str, int] = field(default_factory=lambda: dict(
        width=32, depth=2, mlp_dim=64, num_heads=8, num_kv_heads=1, head_dim=8))
    state_dim: int = 8
    action_dim: int = 7
    max_state_dim: int = 32
    max_action_dim: int = 32
    chunk_size: int = 10
    n_action_steps: int = 5
    num_inference_steps: int = 10
    tokenizer_max_length: int | None = None  # None: LeRobot's default for the kind (48 / 200)
    spm_vocab_size: int = 400
    full_vocab: bool = False  # True: PaliGemma's 257152 embedding rows whatever the tokenizer's size
    dtype: str = "float32"  # storage dtype: "float32" | "bfloat16"
    tied: str = "lm_head"  # which of the tied PaliGemma tensors to store: "lm_head" | "embed_tokens" | "both"
    expert_lm_head: bool = True  # store the action expert's unused lm_head (as upstream modules hold one)
    model_prefix: bool | None = None  # "model." on tensor names; None: the layout's own (LeRobot yes, openpi no)
    num_shards: int = 1  # >1: model.safetensors.index.json + model-0000i-of-0000n.safetensors
    instructions: tuple[str, ...] = ()  # extra tasks the tokenizer should know as whole words

    @property
    def max_length(self) -> int:
        return self.tokenizer_max_length or (200 if self.kind == "pi05" else 48)

    @property
    def camera_keys(self) -> tuple[str, ...]:
        if self.layout == Layout.OPENPI.value:
            return OPENPI_CAMERAS
        if not 1 <= self.num_cameras <= len(LEROBOT_CAMERAS):
            raise ValueError(f"num_cameras must be 1..{len(LEROBOT_CAMERAS)}")
        return LEROBOT_CAMERAS[: self.num_cameras]


# ---------------------------------------------------------------------------------------------------
# Tokenizer
# ---------------------------------------------------------------------------------------------------

_VERBS = ["pick up", "put", "open", "close", "push", "place", "stack", "move", "lift", "turn on"]
_OBJECTS = ["the red cube", "the black bowl", "the top drawer", "the mug", "the plate", "the block",
            "the door", "the window", "the button", "the faucet"]
_PLACES = ["on the plate", "in the basket", "on the table", "next to the box", "into the drawer"]


def training_corpus(seed: int, instructions: tuple[str, ...] = ()) -> list[str]:
    """Task phrases in both prompt formats, with random state bins so digits and separators are learnt."""
    rng = np.random.default_rng(seed)
    tasks = [f"{v} {o} {p}" for v, o, p in itertools.product(_VERBS, _OBJECTS, _PLACES)] + list(instructions) * 32
    lines = []
    for i, task in enumerate(tasks):
        bins = " ".join(map(str, rng.integers(-1, 256, size=8)))
        lines.append(f"Task: {task}, State: {bins};\nAction: " if i % 2 else task.capitalize() + "\n")
    return lines


def train_sentencepiece(vocab_size: int, seed: int = 0, instructions: tuple[str, ...] = ()) -> bytes:
    """A BPE SentencePiece model (serialized proto) with PaliGemma's id and whitespace conventions."""
    import sentencepiece as spm

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(training_corpus(seed, instructions)),
        model_writer=model,
        model_type="bpe",
        vocab_size=vocab_size,
        byte_fallback=True,
        split_digits=True,
        add_dummy_prefix=False,
        remove_extra_whitespaces=False,
        allow_whitespace_only_pieces=True,
        normalization_rule_name="identity",
        user_defined_symbols=["\n"],
        character_coverage=1.0,
        pad_id=0,
        eos_id=1,
        bos_id=2,
        unk_id=3,
        pad_piece="<pad>",
        eos_piece="<eos>",
        bos_piece="<bos>",
        unk_piece="<unk>",
        num_threads=1,
        shuffle_input_sentence=False,
        minloglevel=2,
    )
    return model.getvalue()


# ---------------------------------------------------------------------------------------------------
# Config files
# ---------------------------------------------------------------------------------------------------


def _overrides(spec: Pi0MiniatureSpec, vocab_rows: int) -> dict[str, Any]:
    vision = dict(spec.vision)
    if spec.layout == Layout.OPENPI.value:
        vision["image_size"] = spec.image_size  # openpi's config.json has no resolution (224 otherwise)
    return {
        "vision": vision,
        "paligemma": dict(spec.paligemma, vocab_size=vocab_rows),
        "action_expert": dict(spec.action_expert, vocab_size=vocab_rows),
    }


def _feature(kind: str, shape: list[int]) -> dict[str, Any]:
    return {"type": kind, "shape": shape}


def _lerobot_norm_map(kind: str) -> dict[str, str]:
    mode = "QUANTILES" if kind == "pi05" else "MEAN_STD"
    return {"VISUAL": "IDENTITY", "STATE": mode, "ACTION": mode}


def lerobot_config(spec: Pi0MiniatureSpec, vocab_rows: int) -> dict[str, Any]:
    """The draccus dump of PI0Config / PI05Config as lerobot 0.6.1 writes it."""
    s = spec.image_size
    inputs = {key: _feature("VISUAL", [3, s, s]) for key in spec.camera_keys}
    inputs[STATE_KEY] = _feature("STATE", [spec.state_dim])
    cfg: dict[str, Any] = {
        "type": spec.kind,
        "n_obs_steps": 1,
        "input_features": inputs,
        "output_features": {ACTION_KEY: _feature("ACTION", [spec.action_dim])},
        "device": "cpu",
        "use_amp": False,
        "use_peft": False,
        "push_to_hub": False,
        "repo_id": None,
        "private": None,
        "tags": None,
        "license": None,
        "pretrained_path": None,
        "pretrained_revision": None,
        "paligemma_variant": "gemma_2b",
        "action_expert_variant": "gemma_300m",
        "dtype": spec.dtype,
        "chunk_size": spec.chunk_size,
        "n_action_steps": spec.n_action_steps,
        "max_state_dim": spec.max_state_dim,
        "max_action_dim": spec.max_action_dim,
        "num_inference_steps": spec.num_inference_steps,
        "time_sampling_beta_alpha": 1.5,
        "time_sampling_beta_beta": 1.0,
        "time_sampling_scale": 0.999,
        "time_sampling_offset": 0.001,
        "min_period": 0.004,
        "max_period": 4.0,
        "use_relative_actions": False,
        "relative_exclude_joints": ["gripper"],
        "action_feature_names": None,
        "rtc_config": None,
        "image_resolution": [s, s],
        "empty_cameras": 0,
        "tokenizer_max_length": spec.max_length,
        "normalization_mapping": _lerobot_norm_map(spec.kind),
        "gradient_checkpointing": False,
        "compile_model": False,
        "compile_mode": "max-autotune",
        "freeze_vision_encoder": False,
        "train_expert_only": False,
        "optimizer_lr": 2.5e-05,
        "optimizer_betas": [0.9, 0.95],
        "optimizer_eps": 1e-08,
        "optimizer_weight_decay": 0.01,
        "optimizer_grad_clip_norm": 1.0,
        "scheduler_warmup_steps": 1000,
        "scheduler_decay_steps": 30000,
        "scheduler_decay_lr": 2.5e-06,
        OVERRIDES_KEY: _overrides(spec, vocab_rows),
    }
    return cfg


def _normalizer_step(cfg: dict[str, Any], features: dict[str, Any], registry: str, state_file: str) -> dict[str, Any]:
    return {
        "registry_name": registry,
        "config": {"eps": 1e-08, "features": features, "norm_map": cfg["normalization_mapping"]},
        "state_file": state_file,
    }


def lerobot_processors(spec: Pi0MiniatureSpec, cfg: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """policy_preprocessor.json / policy_postprocessor.json in make_pi0{,5}_pre_post_processors' step order."""
    features = {**cfg["input_features"], **cfg["output_features"]}
    rename = {"registry_name": "rename_observations_processor", "config": {"rename_map": {}}}
    batch = {"registry_name": "to_batch_processor", "config": {}}
    relative = {"registry_name": "relative_actions_processor",
                "config": {"enabled": False, "exclude_joints": ["gripper"], "action_names": None}}
    tokenizer = {"registry_name": "tokenizer_processor", "config": {
        "max_length": spec.max_length, "task_key": "task", "padding_side": "right", "padding": "max_length",
        "truncation": True, "tokenizer_name": "google/paligemma-3b-pt-224"}}
    device = {"registry_name": "device_processor", "config": {"device": "cpu", "float_dtype": None}}
    if spec.kind == "pi05":
        steps = [rename, batch, relative, None, {"registry_name": "pi05_prepare_state_tokenizer_processor_step",
                                                 "config": {}}, tokenizer, device]
        norm_index = 3
    else:
        steps = [rename, batch, {"registry_name": "pi0_new_line_processor", "config": {}}, tokenizer, device,
                 relative, None]
        norm_index = 6
    steps[norm_index] = _normalizer_step(cfg, features, "normalizer_processor",
                                         f"policy_preprocessor_step_{norm_index}_normalizer_processor.safetensors")
    post = [
        _normalizer_step(cfg, cfg["output_features"], "unnormalizer_processor",
                         "policy_postprocessor_step_0_unnormalizer_processor.safetensors"),
        {"registry_name": "absolute_actions_processor", "config": {"enabled": False}},
        device,
    ]
    return {"name": "policy_preprocessor", "steps": steps}, {"name": "policy_postprocessor", "steps": post}


def _stats(gen: torch.Generator, dim: int) -> dict[str, torch.Tensor]:
    """Plausible per-dimension statistics: q01 < q99 inside [min, max], std > 0."""
    center = torch.randn(dim, generator=gen) * 0.3
    half = 0.2 + torch.rand(dim, generator=gen)
    return {
        "mean": center + 0.05 * torch.randn(dim, generator=gen),
        "std": 0.5 * half + 0.05,
        "min": center - 1.2 * half,
        "max": center + 1.2 * half,
        "q01": center - half,
        "q99": center + half,
        "q10": center - 0.7 * half,
        "q90": center + 0.7 * half,
    }


# ---------------------------------------------------------------------------------------------------
# Weights
# ---------------------------------------------------------------------------------------------------


def _init_tensor(name: str, shape: torch.Size, gen: torch.Generator) -> torch.Tensor:
    """Scales that keep activations O(1) through the tiny network, so every part matters numerically.
    Norm weights (zero-initialised upstream) and adaRMS denses are random so that a missing ``1 + w``
    or a wrong modulation changes the output."""
    randn = lambda s=1.0: s * torch.randn(shape, generator=gen)  # noqa: E731
    leaf = name.rsplit(".", 1)[-1]
    if name.endswith("dense.bias"):  # adaRMS (scale, shift, gate): gates near 1 keep the branches alive
        third = shape[0] // 3
        return torch.cat([0.2 * torch.randn(2 * third, generator=gen), 1.0 + 0.2 * torch.randn(third, generator=gen)])
    if "layernorm" in name and name.endswith("dense.weight"):
        return randn(0.3 / math.sqrt(shape[1]))
    if name.endswith("position_embedding.weight"):
        return randn(0.5)
    if name.endswith("embed_tokens.weight"):
        return randn(1.0 / math.sqrt(shape[1]))  # x sqrt(width) at lookup -> O(1)
    if leaf == "bias":
        return randn(0.05)
    if len(shape) == 1:
        # Gemma RMSNorm weights enter as (1 + w); LayerNorm weights as w
        return randn(0.2) if ("layernorm" in name or name.endswith("norm.weight")) and "vision" not in name \
            else 1.0 + randn(0.1)
    return randn(1.0 / math.sqrt(math.prod(shape[1:])))


def random_state_dict(spec: Pi0MiniatureSpec, config) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(spec.seed)
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in Pi0Model(config).state_dict().items()}
    return {k: _init_tensor(k, s, gen) for k, s in shapes.items()}


def _stored_tensors(spec: Pi0MiniatureSpec, state: dict[str, torch.Tensor], vocab_rows: int) -> dict[str, torch.Tensor]:
    from .checkpoint import EMBED_KEY, EXPERT_LM_HEAD_KEY, LM_HEAD_KEY

    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[spec.dtype]
    out = {k: v.to(dtype).contiguous() for k, v in state.items()}
    if spec.tied not in ("lm_head", "embed_tokens", "both"):
        raise ValueError(f"tied must be lm_head, embed_tokens or both, got {spec.tied!r}")
    if spec.tied in ("lm_head", "both"):
        out[LM_HEAD_KEY] = out[EMBED_KEY].clone()
    if spec.tied == "lm_head":
        del out[EMBED_KEY]
    if spec.expert_lm_head:
        gen = torch.Generator().manual_seed(spec.seed + 1)
        width = spec.action_expert["width"]
        out[EXPERT_LM_HEAD_KEY] = torch.randn(vocab_rows, width, generator=gen).to(dtype)
    prefix = spec.model_prefix if spec.model_prefix is not None else spec.layout == Layout.LEROBOT.value
    return {("model." + k if prefix else k): v for k, v in sorted(out.items())}


def _write_safetensors(out: Path, tensors: dict[str, torch.Tensor], num_shards: int) -> None:
    if num_shards <= 1:
        save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
        return
    keys = list(tensors)
    per = math.ceil(len(keys) / num_shards)
    chunks = [keys[i:i + per] for i in range(0, len(keys), per)]
    weight_map = {}
    for i, chunk in enumerate(chunks, start=1):
        name = f"model-{i:05d}-of-{len(chunks):05d}.safetensors"
        save_file({k: tensors[k] for k in chunk}, str(out / name), metadata={"format": "pt"})
        weight_map.update({k: name for k in chunk})
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    _write_json(out / "model.safetensors.index.json", {"metadata": {"total_size": total}, "weight_map": weight_map})


def write_miniature(out_dir: str | Path, spec: Pi0MiniatureSpec | None = None) -> Path:
    """Write the checkpoint into ``out_dir`` (created if needed) and return its path."""
    spec = spec or Pi0MiniatureSpec()
    if spec.kind not in ("pi0", "pi05") or spec.layout not in ("lerobot", "openpi"):
        raise ValueError(f"kind must be pi0/pi05 and layout lerobot/openpi, got {spec.kind!r} / {spec.layout!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    spm_model = train_sentencepiece(spec.spm_vocab_size, spec.seed, tuple(spec.instructions))
    vocab_rows = 257152 if spec.full_vocab else 64 * math.ceil(spec.spm_vocab_size / 64)
    (out / TOKENIZER_FILE).write_bytes(spm_model)
    # what the Hugging Face copy of PaliGemma's tokenizer declares (LeRobot loads it with AutoTokenizer)
    _write_json(out / "tokenizer_config.json", {
        "tokenizer_class": "GemmaTokenizer", "add_bos_token": True, "add_eos_token": False, "bos_token": "<bos>",
        "eos_token": "<eos>", "pad_token": "<pad>", "unk_token": "<unk>", "padding_side": "right",
        "model_max_length": 1000000000000000019884624838656})
    gen = torch.Generator().manual_seed(spec.seed + 2)
    state_stats, action_stats = _stats(gen, spec.state_dim), _stats(gen, spec.action_dim)

    if spec.layout == Layout.LEROBOT.value:
        cfg = lerobot_config(spec, vocab_rows)
        config = parse_lerobot_config(cfg)
        pre, post = lerobot_processors(spec, cfg)
        _write_json(out / "config.json", cfg)
        _write_json(out / PREPROCESSOR_FILE, pre)
        _write_json(out / POSTPROCESSOR_FILE, post)
        flat = {f"{STATE_KEY}.{k}": v for k, v in state_stats.items()}
        flat.update({f"{ACTION_KEY}.{k}": v for k, v in action_stats.items()})
        for pipe in (pre, post):
            for step in pipe["steps"]:
                if "state_file" in step:  # LeRobot saves every feature's stats in both files
                    save_file({k: v.contiguous() for k, v in flat.items()}, str(out / step["state_file"]))
    else:
        cfg = {"action_dim": spec.max_action_dim, "action_horizon": spec.chunk_size,
               "paligemma_variant": "gemma_2b", "action_expert_variant": "gemma_300m",
               "precision": spec.dtype, OVERRIDES_KEY: _overrides(spec, vocab_rows)}
        config = parse_openpi_config(cfg, kind=spec.kind, state_dim=spec.state_dim, action_dim=spec.action_dim)
        _write_json(out / "config.json", cfg)
        keep = ("mean", "std", "q01", "q99")
        stats = {"norm_stats": {"state": {k: state_stats[k].tolist() for k in keep},
                                "actions": {k: action_stats[k].tolist() for k in keep}}}
        (out / "assets" / OPENPI_ASSET_ID).mkdir(parents=True, exist_ok=True)
        _write_json(out / "assets" / OPENPI_ASSET_ID / "norm_stats.json", stats)
    state = random_state_dict(spec, config)
    _write_safetensors(out, _stored_tensors(spec, state, vocab_rows), spec.num_shards)
    return out


# ---------------------------------------------------------------------------------------------------
# Real widths (for benchmarks)
# ---------------------------------------------------------------------------------------------------

REAL_SIGLIP = dict(hidden_size=1152, num_hidden_layers=27, num_attention_heads=16, intermediate_size=4304,
                   patch_size=14)
REAL_GEMMA_2B = dict(width=2048, depth=18, mlp_dim=16384, num_heads=8, num_kv_heads=1, head_dim=256)
REAL_GEMMA_300M = dict(width=1024, depth=18, mlp_dim=4096, num_heads=8, num_kv_heads=1, head_dim=256)


def real_width_spec(kind: str = "pi05", *, vision_depth: int | None = None, llm_layers: int | None = None,
                    num_cameras: int = 2, full_vocab: bool = False, dtype: str = "bfloat16", seed: int = 0,
                    num_shards: int = 1) -> Pi0MiniatureSpec:
    """Real widths at 224 px (SigLIP So400m/14, Gemma-2B, Gemma-300M expert, chunk 50, 32-D padding) with
    ``vision_depth`` SigLIP blocks and ``llm_layers`` layers in both Gemma stacks (default all: 27 / 18).
    The embedding has the miniature tokenizer's rows unless ``full_vocab`` (PaliGemma's 257152 x 2048 =
    527M parameters)."""
    vision = dict(REAL_SIGLIP)
    if vision_depth is not None:
        vision["num_hidden_layers"] = vision_depth
    pali, expert = dict(REAL_GEMMA_2B), dict(REAL_GEMMA_300M)
    if llm_layers is not None:
        pali["depth"] = expert["depth"] = llm_layers
    return Pi0MiniatureSpec(kind=kind, seed=seed, image_size=224, num_cameras=num_cameras, vision=vision,
                            paligemma=pali, action_expert=expert, chunk_size=50, n_action_steps=50,
                            full_vocab=full_vocab, dtype=dtype, num_shards=num_shards)


def random_observation(spec: Pi0MiniatureSpec, seed: int = 1, image_hw: tuple[int, int] | None = None
                       ) -> tuple[list[np.ndarray], np.ndarray]:
    """Deterministic uint8 frames (one per camera, model size unless ``image_hw``) and a raw state."""
    rng = np.random.default_rng(seed)
    h, w = image_hw or (spec.image_size, spec.image_size)
    images = [rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8) for _ in spec.camera_keys]
    return images, rng.uniform(-0.5, 0.5, size=spec.state_dim).astype(np.float32)


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2) + "\n")


__all__ = [
    "LEROBOT_CAMERAS",
    "Pi0MiniatureSpec",
    "random_observation",
    "random_state_dict",
    "real_width_spec",
    "train_sentencepiece",
    "write_miniature",
]
