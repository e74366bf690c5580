"""Load a Hugging Face OpenVLA-OFT checkpoint directory into the reference model.

Layout read (as in ``moojink/openvla-7b-oft-finetuned-libero-*``)::

    config.json                              Prismatic/OpenVLA config
    model.safetensors.index.json             weight_map: tensor name -> shard file
    model-0000{i}-of-0000{n}.safetensors     LoRA-merged VLA weights (bf16)   [or one model.safetensors]
    preprocessor_config.json                 per-tower pixel normalisation (optional: defaults)
    dataset_statistics.json                  {dataset_key: {action: {...}, proprio: {...}}}
    tokenizer.json / tokenizer.model         Llama tokenizer (+ <PAD>)
    action_head--{step}_checkpoint.pt        L1RegressionActionHead, DDP keys "module.model.*"
    proprio_projector--{step}_checkpoint.pt  ProprioProjector, DDP keys "module.fc1.*" (optional)

Refused with a message: FiLM (``vision_backbone--*_checkpoint.pt``), diffusion heads
(``noisy_action_projector--*`` or ``noise_predictor.*`` keys). ``lora_adapter/`` is ignored: the
safetensors already hold the merged weights. Every problem raises ``CheckpointError`` naming the file
and, where there is one, the tensor.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from omnimodel.arch.json_files import read_json
from omnimodel.arch.safetensors_shards import locate_shards, stored_tensors

from .config import ConfigError, OpenVLAOFTConfig, build_config
from .modeling import OpenVLAOFT
from .normalization import DatasetNormStats, action_dim_of, parse_norm_stats, resolve_unnorm_key
from .tokenizer import PromptTokenizer, load_prompt_tokenizer


class CheckpointError(ConfigError):
    """A checkpoint file is missing, unreadable or inconsistent."""


_COMPONENT_RE = r"^{name}--(?P<step>\d+|latest)_checkpoint\.pt$"
# FiLMedVisionTransformerBlock wraps each ViT block as ``.block`` and adds ``.scale`` / ``.shift`` linears.
_FILM_KEY = re.compile(r"vision_backbone\.(fused_)?featurizer\.blocks\.\d+\.(block|scale|shift)\.")
ACTION_HEAD_PREFIX = "action_head."
PROPRIO_PREFIX = "proprio_projector."


@dataclass(frozen=True)
class CheckpointFiles:
    root: Path
    config: Path
    shards: tuple[Path, ...]
    weight_map: dict[str, str] | None  # None for a single unsharded file
    dataset_statistics: Path | None
    preprocessor_config: Path | None
    action_head: Path
    proprio_projector: Path | None


def _read_json(path: Path) -> Any:
    return read_json(path, CheckpointError)


def _find_component(root: Path, name: str, required: bool) -> Path | None:
    pattern = re.compile(_COMPONENT_RE.format(name=re.escape(name)))
    found = sorted(p for p in root.iterdir() if pattern.match(p.name))
    if len(found) > 1:
        raise CheckpointError(f"{root}: several {name}--*_checkpoint.pt files ({[p.name for p in found]}); keep one")
    if not found:
        if required:
            raise CheckpointError(f"{root}: no {name}--<step>_checkpoint.pt file (needed for the L1-regression head)")
        return None
    return found[0]


def locate_files(checkpoint_dir: str | Path) -> CheckpointFiles:
    root = Path(checkpoint_dir)
    if not root.is_dir():
        raise CheckpointError(f"{root}: not a directory")
    if _find_component(root, "vision_backbone", required=False) is not None:
        raise CheckpointError(
            f"{root}: has a vision_backbone--*_checkpoint.pt, i.e. a FiLM (OFT+) checkpoint; FiLM is not supported"
        )
    if _find_component(root, "noisy_action_projector", required=False) is not None:
        raise CheckpointError(f"{root}: has a noisy_action_projector--*_checkpoint.pt (diffusion head); not supported")
    config = root / "config.json"
    if not config.is_file():
        raise CheckpointError(f"config.json: missing in {root}")

    shards, weight_map = locate_shards(root, CheckpointError)

    def optional(name: str) -> Path | None:
        return root / name if (root / name).is_file() else None

    return CheckpointFiles(
        root=root,
        config=config,
        shards=shards,
        weight_map=weight_map,
        dataset_statistics=optional("dataset_statistics.json"),
        preprocessor_config=optional("preprocessor_config.json"),
        action_head=_find_component(root, "action_head", required=True),
        proprio_projector=_find_component(root, "proprio_projector", required=False),
    )


@dataclass(frozen=True)
class TensorRef:
    """Where one state-dict tensor comes from; safetensors data is read only when copied into the model."""

    file: str  # file name, for messages
    shape: tuple[int, ...]
    is_float: bool
    tensor: torch.Tensor | None = None  # already in memory (the component .pt files)
    path: Path | None = None  # safetensors file to read it from
    dtype: str | None = None  # as stored: a safetensors dtype name ("BF16", "F32", ...) or a torch dtype's


_SAFETENSORS_FLOATS = {"F16", "BF16", "F32", "F64", "F8_E4M3", "F8_E5M2"}


def scan_vla_tensors(files: CheckpointFiles) -> dict[str, TensorRef]:
    """Names, shapes and dtypes of the (sharded) safetensors, checked against the index in both directions."""
    refs: dict[str, TensorRef] = {}
    for t in stored_tensors(files.shards, files.weight_map, CheckpointError):
        if t.name in refs:
            raise CheckpointError(f"{t.shard.name}: tensor '{t.name}' also appears in {refs[t.name].file}")
        refs[t.name] = TensorRef(file=t.shard.name, shape=t.shape, is_float=t.dtype in _SAFETENSORS_FLOATS,
                                 path=t.shard, dtype=t.dtype)
    return refs


def load_component_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """``torch.load(weights_only=True)`` and strip DDP's ``module.`` prefix (upstream's own loader does too)."""
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{path.name}: cannot be loaded with torch.load(weights_only=True) ({exc})") from exc
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path.name}: expected a flat state dict of tensors")
    return {(k[len("module.") :] if k.startswith("module.") else k): v for k, v in state.items()}


def _shape_of(state: Mapping[str, torch.Tensor], key: str, path: Path, ndim: int) -> tuple[int, ...]:
    if key not in state:
        raise CheckpointError(f"{path.name}: missing tensor 'module.{key}'")
    shape = tuple(state[key].shape)
    if len(shape) != ndim:
        raise CheckpointError(f"{path.name}: tensor 'module.{key}' has shape {shape}, expected {ndim}-D")
    return shape


def _describe_head(state: Mapping[str, torch.Tensor], path: Path) -> tuple[int, int, int, int]:
    """-> (input_dim, hidden_dim, action_dim, num_blocks) of an L1-regression head state dict."""
    if any(k.startswith("noise_predictor.") for k in state):
        raise CheckpointError(
            f"{path.name}: a diffusion action head (noise_predictor.*); only L1 regression is supported"
        )
    in_dim = _shape_of(state, "model.layer_norm1.weight", path, 1)[0]
    hidden, fc1_in = _shape_of(state, "model.fc1.weight", path, 2)
    action_dim, fc2_in = _shape_of(state, "model.fc2.weight", path, 2)
    if fc1_in != in_dim or fc2_in != hidden:
        raise CheckpointError(
            f"{path.name}: inconsistent head: layer_norm1 {in_dim}, fc1 {(hidden, fc1_in)}, fc2 {(action_dim, fc2_in)}"
        )
    blocks = {int(m.group(1)) for k in state if (m := re.match(r"model\.mlp_resnet_blocks\.(\d+)\.", k))}
    if blocks != set(range(len(blocks))):
        raise CheckpointError(f"{path.name}: mlp_resnet_blocks indices {sorted(blocks)} are not 0..n-1")
    return in_dim, hidden, action_dim, len(blocks)


def check_refs(expected: Mapping[str, torch.Tensor], refs: Mapping[str, TensorRef]) -> None:
    """The checkpoint's tensors are exactly the model's, in the model's shapes, floating point; raises
    CheckpointError naming the first file and tensor that is not. Reads no tensor data."""
    film = [k for k in refs if _FILM_KEY.search(k)]
    if film:
        raise CheckpointError(
            f"{refs[film[0]].file}: tensor '{film[0]}' belongs to a FiLM-wrapped vision block (OFT+); "
            "FiLM is not supported"
        )
    missing = [k for k in expected if k not in refs]
    if missing:
        raise CheckpointError(
            f"missing tensor '{missing[0]}' (expected in {_expected_file(missing[0])})"
            + (f"; {len(missing) - 1} more missing" if len(missing) > 1 else "")
        )
    unexpected = [k for k in refs if k not in expected]
    if unexpected:
        raise CheckpointError(
            f"{refs[unexpected[0]].file}: unexpected tensor '{unexpected[0]}' for this config"
            + (f" ({len(unexpected) - 1} more)" if len(unexpected) > 1 else "")
        )
    for key, ref in expected.items():
        got = refs[key]
        if got.shape != tuple(ref.shape):
            raise CheckpointError(
                f"{got.file}: tensor '{key}' has shape {got.shape}, the config implies {tuple(ref.shape)}"
            )
        if not got.is_float:
            raise CheckpointError(f"{got.file}: tensor '{key}' is not a floating-point tensor")


def _check_finite(ref: TensorRef, key: str, tensor: torch.Tensor) -> None:
    # NaN/Inf weights mean a damaged file (there are no checksums to catch it otherwise)
    if not bool(torch.isfinite(tensor).all()):
        raise CheckpointError(f"{ref.file}: tensor '{key}' contains NaN or Inf values")


def read_tensors(
    refs: Mapping[str, TensorRef],
    keys: list[str],
    dtype: torch.dtype | Mapping[str, torch.dtype],
    *,
    lazy: bool = False,
):
    """Yield (key, tensor in ``dtype``) for ``keys``, one file at a time, each checked for NaN/Inf.
    ``dtype`` is one for all or one per key.

    ``lazy``: a tensor the file already stores in ``dtype`` is a view of the memory-mapped file
    (``omnimodel.arch.mmap_safetensors``), not a copy; anything else is read and cast one tensor at a time."""
    from omnimodel.arch.mmap_safetensors import MappedFileError, mapped_tensors, release_pages

    def want(key: str) -> torch.dtype:
        return dtype[key] if isinstance(dtype, Mapping) else dtype

    by_file: dict[Path | None, list[str]] = {}
    for key in keys:
        by_file.setdefault(refs[key].path, []).append(key)
    for path, file_keys in by_file.items():
        if path is None:  # in-memory component tensors
            for key in file_keys:
                t = refs[key].tensor
                _check_finite(refs[key], key, t)
                yield key, t.to(want(key))
            continue
        try:
            mapped = mapped_tensors(path) if lazy else {}
            with safe_open(str(path), framework="pt") as f:
                for key in file_keys:
                    t = mapped.get(key)
                    if t is None or t.dtype != want(key):
                        t = f.get_tensor(key)
                    _check_finite(refs[key], key, t)
                    release_pages([t])  # the check read every page of a mapped tensor; the passes read it again
                    yield key, t.to(want(key))
        except CheckpointError:
            raise
        except (MappedFileError, Exception) as exc:
            raise CheckpointError(f"{path.name}: cannot read tensor data ({exc})") from exc


def load_state_into(model: OpenVLAOFT, refs: Mapping[str, TensorRef]) -> None:
    """Strict load into an existing model with errors that name the file and tensor; casts to the
    model's dtype. Everything is validated from shapes before any data is read, then tensors are copied
    one shard at a time, so the peak memory is the model plus one tensor."""
    expected = model.state_dict()
    check_refs(expected, refs)
    with torch.no_grad():
        for key, t in read_tensors(refs, list(expected), next(iter(expected.values())).dtype):
            expected[key].copy_(t)


def build_model(
    config: OpenVLAOFTConfig,
    refs: Mapping[str, TensorRef],
    dtype: torch.dtype | Mapping[str, torch.dtype],
    *,
    lazy: bool = False,
) -> OpenVLAOFT:
    """The model with the checkpoint's tensors as its parameters, in ``dtype`` (one, or one per tensor
    name), without random initialisation: the module tree is built on the meta device, then every
    parameter is assigned its tensor.

    ``lazy`` keeps tensors the checkpoint stores in ``dtype`` as views of the memory-mapped safetensors
    (see ``read_tensors``): loading then costs no anonymous memory for them, and the peak is one tensor."""
    with torch.device("meta"):
        model = OpenVLAOFT(config)
    expected = model.state_dict()
    check_refs(expected, refs)
    state = dict(read_tensors(refs, list(expected), dtype, lazy=lazy))
    model.load_state_dict(state, strict=True, assign=True)
    return model


def _ref_dtype(r: TensorRef) -> torch.dtype | None:
    from omnimodel.arch.mmap_safetensors import DTYPES

    if r.tensor is not None:
        return r.tensor.dtype
    return DTYPES.get(r.dtype) if isinstance(r.dtype, str) else None


def stored_dtypes(refs: Mapping[str, TensorRef]) -> dict[str, torch.dtype]:
    """Per tensor, the dtype the model holds it in when loaded "as stored" (``dtype=None``).

    The VLA weights (the safetensors, nearly all parameters) share the dtype most of them are stored in:
    bf16 for the released checkpoints. The action head and the proprio projector are separate small
    modules (their own .pt files) and each keeps the widest dtype its tensors are stored in when that is
    wider, so no stored value is rounded there (upstream trains the proprio projector in fp32); the model's
    forward casts at those module boundaries."""
    counts: dict[torch.dtype, int] = {}
    for r in refs.values():
        d = _ref_dtype(r)
        if r.path is not None and d is not None and d.is_floating_point:
            counts[d] = counts.get(d, 0) + math.prod(r.shape)
    bulk = max(counts, key=counts.__getitem__) if counts else torch.float32
    out = {k: bulk for k in refs}
    for prefix in (ACTION_HEAD_PREFIX, PROPRIO_PREFIX):
        keys = [k for k in refs if k.startswith(prefix)]
        widest = bulk
        for k in keys:
            d = _ref_dtype(refs[k])
            if d is not None and d.is_floating_point and torch.finfo(d).bits > torch.finfo(widest).bits:
                widest = d
        out.update({k: widest for k in keys})
    return out


def _expected_file(key: str) -> str:
    if key.startswith(ACTION_HEAD_PREFIX):
        return "action_head--*_checkpoint.pt"
    if key.startswith(PROPRIO_PREFIX):
        return "proprio_projector--*_checkpoint.pt"
    return "the model safetensors"


@dataclass
class LoadedCheckpoint:
    config: OpenVLAOFTConfig
    model: OpenVLAOFT
    tokenizer: PromptTokenizer
    norm_stats: DatasetNormStats
    files: CheckpointFiles
    tensor_origin: dict[str, str]  # state-dict key -> file it came from


@dataclass
class CheckpointHeader:
    """Everything about a checkpoint that is known without reading the VLA weights: the parsed
    config, the dataset statistics and the (small) action-head / proprio-projector state dicts."""

    files: CheckpointFiles
    hf_config: dict[str, Any]
    config: OpenVLAOFTConfig
    all_stats: dict[str, Any]
    stats_source: str
    dataset_key: str
    head_state: dict[str, torch.Tensor]
    proprio_state: dict[str, torch.Tensor]
    head_in: int  # the action head's input width, as its first LayerNorm states it


def read_checkpoint_header(
    checkpoint_dir: str | Path,
    *,
    unnorm_key: str | None = None,
    platform: str | None = None,
    num_images: int | None = None,
    num_actions_chunk: int | None = None,
) -> CheckpointHeader:
    files = locate_files(checkpoint_dir)
    hf_config = _read_json(files.config)
    if not isinstance(hf_config, dict):
        raise CheckpointError("config.json: not a JSON object")
    preprocessor = _read_json(files.preprocessor_config) if files.preprocessor_config else None

    # Upstream replaces config.json's norm_stats wholesale with dataset_statistics.json when present.
    if files.dataset_statistics is not None:
        all_stats, stats_source = _read_json(files.dataset_statistics), "dataset_statistics.json"
    else:
        all_stats, stats_source = hf_config.get("norm_stats") or {}, "config.json norm_stats"
    key = resolve_unnorm_key(all_stats, unnorm_key, stats_source)

    head_state = load_component_state_dict(files.action_head)
    head_in, head_hidden, head_action_dim, head_blocks = _describe_head(head_state, files.action_head)
    proprio_state: dict[str, torch.Tensor] = {}
    proprio_dim = None
    if files.proprio_projector is not None:
        proprio_state = load_component_state_dict(files.proprio_projector)
        proprio_dim = _shape_of(proprio_state, "fc1.weight", files.proprio_projector, 2)[1]

    config = build_config(
        hf_config,
        preprocessor_config=preprocessor,
        dataset_key=key,
        stats_action_dim=action_dim_of(all_stats, key, stats_source),
        head_action_dim=head_action_dim,
        head_hidden_dim=head_hidden,
        head_num_blocks=head_blocks,
        proprio_dim=proprio_dim,
        platform=platform,
        num_images=num_images,
        num_actions_chunk=num_actions_chunk,
    )
    return CheckpointHeader(files, hf_config, config, all_stats, stats_source, key, head_state, proprio_state, head_in)


def header_norm_stats(h: CheckpointHeader) -> DatasetNormStats:
    """The statistics entry the checkpoint un-normalises with, checked against its proprio projector."""
    config, key, source = h.config, h.dataset_key, h.stats_source
    norm_stats = parse_norm_stats(h.all_stats, key, config.platform.normalization, source, config.use_proprio)
    if config.use_proprio and norm_stats.proprio.dim != config.proprio_projector.proprio_dim:
        raise CheckpointError(
            f"{h.files.proprio_projector.name}: projects {config.proprio_projector.proprio_dim}-D proprio but "
            f"{source}['{key}']['proprio'] is {norm_stats.proprio.dim}-D"
        )
    return norm_stats


def statistics_keys(checkpoint_dir: str | Path) -> tuple[list[str], str]:
    """(the dataset keys of the checkpoint's statistics, where they were read) -- without building the
    config, so a caller can choose the key (``unnorm_key=``) before reading the header."""
    files = locate_files(checkpoint_dir)
    if files.dataset_statistics is not None:
        stats, source = _read_json(files.dataset_statistics), "dataset_statistics.json"
    else:
        config = _read_json(files.config)
        stats, source = (config.get("norm_stats") if isinstance(config, dict) else None) or {}, "config.json norm_stats"
    if not isinstance(stats, dict) or not stats:
        raise CheckpointError(f"{source}: no dataset statistics in {files.root}")
    return sorted(stats), source


def load_checkpoint(
    checkpoint_dir: str | Path,
    *,
    dtype: torch.dtype | None = torch.float32,
    lazy: bool = False,
    unnorm_key: str | None = None,
    platform: str | None = None,
    num_images: int | None = None,
    num_actions_chunk: int | None = None,
    tokenizer_file: str = "tokenizer.json",
) -> LoadedCheckpoint:
    """Read every file, build the config, instantiate the model and load all weights (strict).

    ``dtype``: the parameters' dtype; ``None`` keeps the checkpoint's own (``stored_dtypes``: bf16 for the
    released checkpoints' VLA weights; the small head / proprio modules never narrower than stored). ``lazy``: weights stored in that dtype stay
    views of the memory-mapped safetensors (read on first use, copy-on-write) instead of being copied;
    the files must then not be rewritten in place while the model is alive."""
    h = read_checkpoint_header(checkpoint_dir, unnorm_key=unnorm_key, platform=platform, num_images=num_images,
                               num_actions_chunk=num_actions_chunk)
    files, config = h.files, h.config
    head_state, proprio_state, head_in = h.head_state, h.proprio_state, h.head_in
    head_action_dim = config.action_head.action_dim
    if head_in != config.action_head.input_dim:
        raise CheckpointError(
            f"{files.action_head.name}: tensor 'module.model.layer_norm1.weight' has {head_in} features, expected "
            f"llm hidden {config.llm.hidden_size} x action dim {head_action_dim} = {config.action_head.input_dim}"
        )
    norm_stats = header_norm_stats(h)

    refs = scan_vla_tensors(files)
    for prefix, state, path in (
        (ACTION_HEAD_PREFIX, head_state, files.action_head),
        (PROPRIO_PREFIX, proprio_state, files.proprio_projector),
    ):
        for k, v in state.items():
            refs[prefix + k] = TensorRef(file=path.name, shape=tuple(v.shape), is_float=v.is_floating_point(),
                                         tensor=v, dtype=str(v.dtype))

    model = build_model(config, refs, stored_dtypes(refs) if dtype is None else dtype, lazy=lazy)
    model.eval()
    tokenizer = load_prompt_tokenizer(files.root, config.prompt, config.bos_token_id, prefer=tokenizer_file)
    if tokenizer.encoder.vocab_size() > config.llm.vocab_size:
        raise CheckpointError(
            f"{tokenizer.source}: {tokenizer.encoder.vocab_size()} tokens but the embedding has "
            f"{config.llm.vocab_size} rows"
        )
    origin = {k: ref.file for k, ref in refs.items()}
    return LoadedCheckpoint(config, model, tokenizer, norm_stats, files, origin)


__all__ = [
    "CheckpointError",
    "TensorRef",
    "CheckpointFiles",
    "LoadedCheckpoint",
    "locate_files",
    "scan_vla_tensors",
    "load_component_state_dict",
    "load_state_into",
    "build_model",
    "check_refs",
    "read_tensors",
    "stored_dtypes",
    "load_checkpoint",
    "read_checkpoint_header",
    "header_norm_stats",
    "statistics_keys",
    "CheckpointHeader",
]
