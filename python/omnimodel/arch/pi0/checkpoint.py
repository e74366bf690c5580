"""Load a pi0 / pi0.5 PyTorch checkpoint directory (LeRobot or openpi-PyTorch layout) into the reference.

LeRobot (``PreTrainedPolicy.save_pretrained``)::

    config.json                         draccus PI0Config / PI05Config ("type": "pi0" | "pi05")
    model.safetensors                   keys "model.<openpi name>"  [or model.safetensors.index.json + shards]
    policy_preprocessor.json (+ policy_preprocessor_step_<i>_normalizer_processor.safetensors)
    policy_postprocessor.json (+ policy_postprocessor_step_<i>_unnormalizer_processor.safetensors)
    tokenizer.model                     our addition; real ones fetch google/paligemma-3b-pt-224 at run time

openpi (``examples/convert_jax_model_to_pytorch.py``)::

    config.json                         action_dim, action_horizon, paligemma_variant, action_expert_variant, precision
    model.safetensors                   keys "<openpi name>" (no prefix)
    assets/<asset_id>/norm_stats.json   state / actions statistics

Tensor-name rules (LeRobot's loader does the same): a leading ``model.`` is dropped; the PaliGemma
``lm_head.weight`` is tied to ``embed_tokens`` -- either may be stored, and when both are they must be
equal; the action expert's ``lm_head.weight`` (tied to an embedding the expert does not have) is ignored
and never read. Tensors may be bf16, fp16 or fp32 and are cast to the run precision. Everything else is
strict: a missing, unexpected, misshapen, non-float or non-finite tensor raises ``CheckpointError``
naming the file and the tensor. Safetensors are memory-mapped and copied one tensor at a time.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from omnimodel.arch.json_files import read_json
from omnimodel.arch.safetensors_shards import locate_shards, stored_tensors

from .config import ConfigError, Layout, Pi0Config, parse_lerobot_config, parse_openpi_config
from .modeling import Pi0Model
from .normalization import (
    NormStats,
    find_openpi_norm_stats,
    load_lerobot_stats,
    openpi_dims,
    openpi_stats,
    read_openpi_stats_raw,
)
from .tokenizer import PaliGemmaTokenizer, load_tokenizer


class CheckpointError(ConfigError):
    """A checkpoint file is missing, unreadable or inconsistent."""


LEROBOT_PREFIX = "model."
EMBED_KEY = "paligemma_with_expert.paligemma.model.language_model.embed_tokens.weight"
LM_HEAD_KEY = "paligemma_with_expert.paligemma.lm_head.weight"
EXPERT_LM_HEAD_KEY = "paligemma_with_expert.gemma_expert.lm_head.weight"
_FLOATS = {"F16", "BF16", "F32", "F64"}


@dataclass(frozen=True)
class CheckpointFiles:
    root: Path
    config: Path
    shards: tuple[Path, ...]
    weight_map: dict[str, str] | None  # None for a single model.safetensors
    layout: Layout


def _read_json(path: Path) -> Any:
    return read_json(path, CheckpointError)


def detect_layout(hf_config: dict[str, Any]) -> Layout:
    if "type" in hf_config:
        return Layout.LEROBOT
    if "action_horizon" in hf_config or "paligemma_variant" in hf_config:
        return Layout.OPENPI
    raise CheckpointError("config.json: neither a LeRobot policy config ('type') nor an openpi-PyTorch one "
                          "('action_horizon' / 'paligemma_variant')")


def locate_files(checkpoint_dir: str | Path) -> tuple[CheckpointFiles, dict[str, Any]]:
    root = Path(checkpoint_dir)
    if not root.is_dir():
        raise CheckpointError(f"{root}: not a directory")
    config = root / "config.json"
    hf_config = _read_json(config)
    if not isinstance(hf_config, dict):
        raise CheckpointError("config.json: not a JSON object")
    shards, weight_map = locate_shards(root, CheckpointError)
    return CheckpointFiles(root, config, shards, weight_map, detect_layout(hf_config)), hf_config


@dataclass(frozen=True)
class TensorRef:
    """Where one tensor lives; its data is read only when copied into the model."""

    file: Path
    stored_name: str  # the name in the file (with LeRobot's "model." prefix, if any)
    shape: tuple[int, ...]
    dtype: str


def scan_tensors(files: CheckpointFiles) -> dict[str, TensorRef]:
    """Names (prefix dropped), shapes and dtypes of every stored tensor, checked against the index."""
    refs: dict[str, TensorRef] = {}
    for t in stored_tensors(files.shards, files.weight_map, CheckpointError):
        name = t.name[len(LEROBOT_PREFIX):] if t.name.startswith(LEROBOT_PREFIX) else t.name
        if name in refs:
            raise CheckpointError(f"{t.shard.name}: tensor '{t.name}' duplicates '{refs[name].stored_name}' "
                                  f"in {refs[name].file.name} (with / without the 'model.' prefix)")
        refs[name] = TensorRef(t.shard, t.name, t.shape, t.dtype)
    return refs


def kind_from_tensors(refs: dict[str, TensorRef]) -> str:
    """openpi's config.json does not say pi0 or pi0.5: its projections do."""
    pi05, pi0 = "time_mlp_in.weight" in refs, "state_proj.weight" in refs
    if pi05 == pi0:
        raise CheckpointError("model.safetensors: cannot tell pi0 from pi0.5 (expected exactly one of "
                              "'time_mlp_in.weight' (pi0.5) and 'state_proj.weight' (pi0))")
    return "pi05" if pi05 else "pi0"


def resolve_tied(refs: dict[str, TensorRef]) -> dict[str, TensorRef]:
    """Map the stored tensors onto the reference's parameter names (tied / ignored ones resolved)."""
    out = dict(refs)
    out.pop(EXPERT_LM_HEAD_KEY, None)
    head = out.pop(LM_HEAD_KEY, None)
    if head is not None:
        if EMBED_KEY in out:
            if out[EMBED_KEY].shape != head.shape:
                raise CheckpointError(f"{head.file.name}: tied tensors '{head.stored_name}' {head.shape} and "
                                      f"'{out[EMBED_KEY].stored_name}' {out[EMBED_KEY].shape} differ in shape")
            _check_tied_equal(out[EMBED_KEY], head)
        else:
            out[EMBED_KEY] = head
    return out


def _read(ref: TensorRef) -> torch.Tensor:
    try:
        with safe_open(str(ref.file), framework="pt") as f:
            return f.get_tensor(ref.stored_name)
    except Exception as exc:
        raise CheckpointError(f"{ref.file.name}: cannot read tensor '{ref.stored_name}' ({exc})") from exc


def _check_tied_equal(embed: TensorRef, head: TensorRef) -> None:
    if not torch.equal(_read(embed).float(), _read(head).float()):
        raise CheckpointError(f"{head.file.name}: '{head.stored_name}' is stored next to '{embed.stored_name}' but "
                              "their values differ; the two are tied in PaliGemma")


@dataclass
class CheckpointHeader:
    """What is known without reading weights: files, parsed config, tensor table, statistics."""

    files: CheckpointFiles
    hf_config: dict[str, Any]
    config: Pi0Config
    refs: dict[str, TensorRef]  # reference parameter name -> stored tensor
    norm_stats: NormStats


def read_checkpoint_header(checkpoint_dir: str | Path, *, asset_id: str | None = None) -> CheckpointHeader:
    files, hf_config = locate_files(checkpoint_dir)
    raw_refs = scan_tensors(files)
    if files.layout is Layout.LEROBOT:
        config = parse_lerobot_config(hf_config)
        stats = load_lerobot_stats(files.root, config.state_norm, config.action_norm, config.state_dim,
                                   config.action_dim)
    else:
        stats_path = find_openpi_norm_stats(files.root, asset_id)
        raw = read_openpi_stats_raw(stats_path)
        state_dim, action_dim = openpi_dims(raw, stats_path)
        config = parse_openpi_config(hf_config, kind=kind_from_tensors(raw_refs), state_dim=state_dim,
                                     action_dim=action_dim)
        stats = openpi_stats(raw, config.state_norm, state_dim, action_dim,
                             f"assets/{stats_path.parent.name}/norm_stats.json")
    return CheckpointHeader(files, hf_config, config, resolve_tied(raw_refs), stats)


def load_state_into(model: Pi0Model, refs: dict[str, TensorRef]) -> None:
    """Strict load, validated from shapes before any data is read; one tensor in memory at a time."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in refs]
    if missing:
        raise CheckpointError(f"model.safetensors: missing tensor '{missing[0]}'"
                              + (f"; {len(missing) - 1} more missing" if len(missing) > 1 else ""))
    unexpected = [k for k in refs if k not in expected]
    if unexpected:
        ref = refs[unexpected[0]]
        raise CheckpointError(f"{ref.file.name}: unexpected tensor '{ref.stored_name}' for this config"
                              + (f" ({len(unexpected) - 1} more)" if len(unexpected) > 1 else ""))
    for key, param in expected.items():
        ref = refs[key]
        if ref.shape != tuple(param.shape):
            raise CheckpointError(f"{ref.file.name}: tensor '{ref.stored_name}' has shape {ref.shape}, the config "
                                  f"implies {tuple(param.shape)}")
        if ref.dtype not in _FLOATS:
            raise CheckpointError(f"{ref.file.name}: tensor '{ref.stored_name}' is {ref.dtype}, not floating point")
    by_file: dict[Path, list[str]] = {}
    for key in expected:
        by_file.setdefault(refs[key].file, []).append(key)
    with torch.no_grad():
        for path, keys in by_file.items():
            try:
                with safe_open(str(path), framework="pt") as f:
                    for key in keys:
                        tensor = f.get_tensor(refs[key].stored_name)
                        # no checksums exist: NaN/Inf is how a damaged file shows
                        if not bool(torch.isfinite(tensor).all()):
                            raise CheckpointError(f"{path.name}: tensor '{refs[key].stored_name}' contains NaN or Inf")
                        expected[key].copy_(tensor)
            except CheckpointError:
                raise
            except Exception as exc:
                raise CheckpointError(f"{path.name}: cannot read tensor data ({exc})") from exc


def build_model(config: Pi0Config, precision: str = "float32") -> Pi0Model:
    """An uninitialised model (no random init: every parameter is about to be overwritten)."""
    with torch.device("meta"):
        model = Pi0Model(config)
    return model.to_empty(device="cpu").apply_precision(precision)


@dataclass
class LoadedCheckpoint:
    config: Pi0Config
    model: Pi0Model
    tokenizer: PaliGemmaTokenizer
    norm_stats: NormStats
    files: CheckpointFiles
    tensor_origin: dict[str, str]  # parameter name -> file it came from


def load_checkpoint(
    checkpoint_dir: str | Path,
    *,
    precision: str = "float32",
    tokenizer: str | Path | None = None,
    asset_id: str | None = None,
) -> LoadedCheckpoint:
    """Read every file, build the config, instantiate the model and load all weights (strict).

    ``precision``: "float32" (LeRobot's default), "float64", or "bfloat16" (LeRobot's mixed precision).
    ``tokenizer``: path of PaliGemma's ``tokenizer.model`` when the directory has none.
    ``asset_id``: which ``assets/<asset_id>/norm_stats.json`` of an openpi checkpoint to use.
    """
    h = read_checkpoint_header(checkpoint_dir, asset_id=asset_id)
    tok = load_tokenizer(h.files.root, tokenizer)
    if tok.vocab_size() > h.config.paligemma.vocab_size:
        raise CheckpointError(f"{tok.path.name}: {tok.vocab_size()} pieces but the embedding has "
                              f"{h.config.paligemma.vocab_size} rows")
    model = build_model(h.config, precision)
    load_state_into(model, h.refs)
    model.eval()
    origin = {k: r.file.name for k, r in h.refs.items()}
    return LoadedCheckpoint(h.config, model, tok, h.norm_stats, h.files, origin)


__all__ = [
    "CheckpointError",
    "CheckpointFiles",
    "CheckpointHeader",
    "LoadedCheckpoint",
    "TensorRef",
    "build_model",
    "detect_layout",
    "kind_from_tensors",
    "load_checkpoint",
    "load_state_into",
    "locate_files",
    "read_checkpoint_header",
    "resolve_tied",
    "scan_tensors",
]
