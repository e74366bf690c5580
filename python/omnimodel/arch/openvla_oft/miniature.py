"""Write an architecture-faithful miniature OpenVLA-OFT checkpoint, deterministic from a seed.

Same file layout, file formats and tensor names as a released OFT checkpoint (see ``checkpoint.py``),
same timm ids, same prompt, same platform constants -- only the widths and depths are tiny, and a small
SentencePiece BPE tokenizer (trained here, Llama-style: byte fallback, BOS/EOS ids 1/2, "<PAD>" added
after the vocabulary, embedding padded to a multiple of 64) stands in for Llama's 32000-piece one.
The VLA weights and the action head are stored in bf16 and the proprio projector in fp32, as released.

The only key a real checkpoint lacks is ``config.json["omnimodel_vision_overrides"]`` (tower widths;
real checkpoints get them from the timm ids).
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

from .config import PLATFORMS, VISION_OVERRIDES_KEY, build_config
from .modeling import OpenVLAOFT

DINO_ID = "vit_large_patch14_reg4_dinov2.lvd142m"
SIGLIP_ID = "vit_so400m_patch14_siglip_224"
# Prismatic's dinosiglip normalisation; preprocessor_config.json stores bf16-rounded DINO values.
MEANS = [[0.485, 0.456, 0.406], [0.5, 0.5, 0.5]]
STDS = [[0.229, 0.224, 0.225], [0.5, 0.5, 0.5]]


def _bf16_round(values: list[float]) -> list[float]:
    return torch.tensor(values, dtype=torch.float32).to(torch.bfloat16).float().tolist()


@dataclass(frozen=True)
class MiniatureSpec:
    seed: int = 0
    platform: str = "libero"  # picks chunk length, action/proprio dims, image count, normalisation
    image_size: int = 56  # patch 14 -> 4x4 = 16 patches per image
    dino: dict[str, int] = field(default_factory=lambda: dict(embed_dim=32, depth=3, num_heads=2, mlp_hidden_dim=128))
    siglip: dict[str, int] = field(
        default_factory=lambda: dict(embed_dim=48, depth=3, num_heads=3, mlp_hidden_dim=int(48 * 3.7362))
    )
    llm_hidden: int = 64
    llm_intermediate: int = 172
    llm_layers: int = 2
    llm_heads: int = 4
    llm_kv_heads: int | None = None  # GQA: fewer key/value heads (None: as many as query heads)
    rms_norm_eps: float | None = None  # None: not written, so the loader's default (1e-6, OpenVLA's) applies
    rope_theta: float | None = None  # None: not written (10000)
    # A llama-architecture GGUF (``omnimodel.arch.pretrained_llama``) whose widths match: its first
    # ``llm_layers`` layers, final norm and first embedding rows replace the random Llama weights, so the
    # backbone has a pretrained model's outlier channels and weight statistics.
    llm_weights: str | None = None
    # Random weights only: this many residual channels made large, as in pretrained LLMs (see
    # ``_inject_outlier_channels``); 0 keeps the plain random initialisation.
    outlier_channels: int = 0
    outlier_scale: float = 30.0
    spm_vocab_size: int = 400
    use_proprio: bool = True
    proprio_dim: int | None = None  # None: the platform's (a dataset with more state, e.g. a goal, sets it)
    num_shards: int = 3
    step: int = 150000
    # Instructions the tokenizer should know as whole words (e.g. a trained policy's tasks): added to the
    # LIBERO-style corpus, so their prompts are not spelled out in byte-fallback pieces.
    instructions: tuple[str, ...] = ()

    @property
    def dataset_key(self) -> str:
        return f"{self.platform}_miniature_no_noops"

    @property
    def state_dim(self) -> int:
        return self.proprio_dim or PLATFORMS[self.platform].proprio_dim


# ---------------------------------------------------------------------------------------------------
# Tokenizer
# ---------------------------------------------------------------------------------------------------

_VERBS = ["put", "pick up", "open", "close", "turn on", "push", "place", "stack", "move", "lift"]
_OBJECTS = [
    "the black bowl",
    "the red mug",
    "the cream cheese",
    "the top drawer",
    "the stove",
    "the ketchup",
    "the alphabet soup",
    "the wine bottle",
    "the plate",
    "the butter",
    "the microwave",
    "the basket",
]
_PLACES = [
    "on the plate",
    "in the basket",
    "on the stove",
    "in the top drawer of the cabinet",
    "on top of the cabinet",
    "next to the cookie box",
    "on the left plate",
    "in the tray",
]


# Each extra instruction is repeated this often: BPE merges by frequency, and the LIBERO-style corpus
# has ~1000 lines, so a handful of task prompts must weigh about as much to get whole-word pieces.
_INSTRUCTION_REPEATS = 64


def training_corpus(instructions: tuple[str, ...] = ()) -> list[str]:
    tasks = [f"{v} {o} {p}" for v, o, p in itertools.product(_VERBS, _OBJECTS, _PLACES)]
    lines = []
    for i, task in enumerate(tasks):
        lines.append(f"In: What action should the robot take to {task}?")
        lines.append("Out:" if i % 2 else task.capitalize() + ".")
    lines += ["0123456789", "Robot arm gripper camera wrist view joint state 7 dof."]
    for _ in range(_INSTRUCTION_REPEATS):  # empty by default: the default corpus (and vocabulary) is unchanged
        lines += [f"In: What action should the robot take to {t.lower()}?" for t in instructions]
    return lines


def train_sentencepiece(vocab_size: int, instructions: tuple[str, ...] = ()) -> bytes:
    """Llama-style SentencePiece BPE model (serialized proto)."""
    import sentencepiece as spm

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(training_corpus(instructions)),
        model_writer=model,
        model_type="bpe",
        vocab_size=vocab_size,
        byte_fallback=True,
        split_digits=True,
        allow_whitespace_only_pieces=True,
        remove_extra_whitespaces=False,
        normalization_rule_name="identity",
        add_dummy_prefix=True,
        character_coverage=1.0,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        num_threads=1,
        shuffle_input_sentence=False,
        minloglevel=2,
    )
    return model.getvalue()


def build_tokenizer_json(spm_model: bytes, pad_token: str) -> str:
    """HF ``tokenizer.json`` equivalent to the SentencePiece model, shaped like Llama's.

    BPE merges are recovered the way transformers' Llama converter does: every split of a piece into
    two vocabulary pieces is a merge, ranked by the merged piece's id (SentencePiece BPE scores fall
    with the id), ties broken by the ids of the two halves.
    """
    import sentencepiece as spm
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, processors

    sp = spm.SentencePieceProcessor()
    sp.LoadFromSerializedProto(spm_model)
    vocab = {sp.IdToPiece(i): i for i in range(sp.GetPieceSize())}
    mergeable = {p: i for p, i in vocab.items() if not (sp.IsControl(i) or sp.IsUnknown(i) or sp.IsByte(i))}
    merges = []
    for piece, _ in sorted(mergeable.items(), key=lambda kv: kv[1]):
        local = [
            (piece[:k], piece[k:]) for k in range(1, len(piece)) if piece[:k] in mergeable and piece[k:] in mergeable
        ]
        merges += sorted(local, key=lambda lr: (vocab[lr[0]], vocab[lr[1]]))

    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", fuse_unk=True, byte_fallback=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("\u2581"), normalizers.Replace(" ", "\u2581")])
    tok.pre_tokenizer = None
    tok.decoder = decoders.Sequence(
        [decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    tok.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in ("<unk>", "<s>", "</s>")])
    tok.add_special_tokens([AddedToken(pad_token, normalized=False, special=True)])
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)]
    )
    return tok.to_str(pretty=True)


# ---------------------------------------------------------------------------------------------------
# Config files
# ---------------------------------------------------------------------------------------------------


def _hf_config(spec: MiniatureSpec, vocab_rows: int, pad_id: int, base_stats: dict[str, Any]) -> dict[str, Any]:
    return {
        "architectures": ["OpenVLAForActionPrediction"],
        "auto_map": {
            "AutoConfig": "configuration_prismatic.OpenVLAConfig",
            "AutoModelForVision2Seq": "modeling_prismatic.OpenVLAForActionPrediction",
        },
        "arch_specifier": "no-align+fused-gelu-mlp",
        "hf_llm_id": "meta-llama/Llama-2-7b-hf",
        "image_resize_strategy": "resize-naive",
        "image_sizes": [spec.image_size, spec.image_size],
        "llm_backbone_id": "llama2-7b-pure",
        "llm_max_length": 2048,
        "model_type": "openvla",
        "n_action_bins": 256,
        "norm_stats": base_stats,
        "output_projector_states": False,
        "pad_to_multiple_of": 64,
        "pad_token_id": pad_id,
        "text_config": {
            "model_type": "llama",
            "pad_token_id": pad_id,
            "torch_dtype": "bfloat16",
            "vocab_size": vocab_rows,
            "hidden_size": spec.llm_hidden,
            "intermediate_size": spec.llm_intermediate,
            "num_hidden_layers": spec.llm_layers,
            "num_attention_heads": spec.llm_heads,
            "num_key_value_heads": spec.llm_kv_heads or spec.llm_heads,
            **({"rms_norm_eps": spec.rms_norm_eps} if spec.rms_norm_eps is not None else {}),
            **({"rope_theta": spec.rope_theta} if spec.rope_theta is not None else {}),
        },
        "timm_model_ids": [DINO_ID, SIGLIP_ID],
        "timm_override_act_layers": [None, None],
        "torch_dtype": "bfloat16",
        "transformers_version": "4.40.1",
        "use_fused_vision_backbone": True,
        "vision_backbone_id": "dinosiglip-vit-so-224px",
        VISION_OVERRIDES_KEY: [dict(spec.dino, patch_size=14), dict(spec.siglip, patch_size=14)],
    }


def _preprocessor_config(size: int) -> dict[str, Any]:
    return {
        "auto_map": {
            "AutoImageProcessor": "processing_prismatic.PrismaticImageProcessor",
            "AutoProcessor": "processing_prismatic.PrismaticProcessor",
        },
        "image_processor_type": "PrismaticImageProcessor",
        "image_resize_strategy": "resize-naive",
        "input_sizes": [[3, size, size], [3, size, size]],
        "interpolations": ["bicubic", "bicubic"],
        "means": MEANS,
        "stds": STDS,
        "processor_class": "PrismaticProcessor",
        "tvf_crop_params": [{"output_size": [size, size]}] * 2,
        "tvf_do_letterbox": False,
        "tvf_letterbox_fill": None,
        "tvf_normalize_params": [
            {"inplace": False, "mean": _bf16_round(m), "std": _bf16_round(s)} for m, s in zip(MEANS, STDS, strict=True)
        ],
        "tvf_resize_params": [{"antialias": True, "interpolation": 3, "max_size": None, "size": [size, size]}] * 2,
        "use_fused_vision_backbone": True,
    }


def _stats_entry(gen: torch.Generator, dim: int, with_mask: bool) -> dict[str, Any]:
    low = (-0.2 - torch.rand(dim, generator=gen, dtype=torch.float64)).tolist()
    high = (0.2 + torch.rand(dim, generator=gen, dtype=torch.float64)).tolist()
    entry: dict[str, Any] = {
        "mean": [0.5 * (lo + hi) for lo, hi in zip(low, high, strict=True)],
        "std": [0.25 * (hi - lo) for lo, hi in zip(low, high, strict=True)],
        "max": [hi * 1.1 for hi in high],
        "min": [lo * 1.1 for lo in low],
        "q01": low,
        "q99": high,
    }
    if with_mask:  # the last dim (gripper) passes through un-normalised, as in LIBERO's statistics
        entry["mask"] = [True] * (dim - 1) + [False]
    return entry


# ---------------------------------------------------------------------------------------------------
# Weights
# ---------------------------------------------------------------------------------------------------


def _init_tensor(name: str, shape: torch.Size, gen: torch.Generator) -> torch.Tensor:
    """Scales that keep activations O(1) through the tiny network, so every part matters numerically."""
    randn = lambda s=1.0: s * torch.randn(shape, generator=gen)  # noqa: E731
    leaf = name.rsplit(".", 1)[-1]
    if leaf == "scale_factor":
        return 0.3 + randn(0.1)
    if leaf in ("cls_token", "reg_token", "pos_embed", "latent"):
        return randn(0.5)
    if leaf == "bias":
        return randn(0.05)
    if len(shape) == 1:  # LayerNorm / RMSNorm weights
        return 1.0 + randn(0.1)
    if name.endswith("embed_tokens.weight"):
        return randn(1.0)
    fan_in = math.prod(shape[1:])
    return randn(1.0 / math.sqrt(fan_in))


def _load_pretrained_llm(state: dict[str, torch.Tensor], spec: MiniatureSpec, vocab_rows: int) -> None:
    """Replace the random Llama backbone with a pretrained one's first ``spec.llm_layers`` layers."""
    from omnimodel.arch.pretrained_llama import read_llama_gguf

    hp, weights = read_llama_gguf(spec.llm_weights, layers=spec.llm_layers)
    want = (spec.llm_hidden, spec.llm_intermediate, spec.llm_heads, spec.llm_kv_heads or spec.llm_heads)
    have = (hp.hidden_size, hp.intermediate_size, hp.num_attention_heads, hp.num_key_value_heads)
    if want != have:
        raise ValueError(f"{spec.llm_weights}: Llama widths (hidden, ffn, heads, kv heads) {have} do not match the "
                         f"spec's {want}")
    if hp.vocab_size < vocab_rows:
        raise ValueError(f"{spec.llm_weights}: {hp.vocab_size} embedding rows, the miniature needs {vocab_rows}")
    prefix = "language_model.model."
    for name, w in weights.items():
        key = prefix + name
        if name == "embed_tokens.weight":
            w = w[:vocab_rows]  # the miniature's own tokenizer indexes the first rows; content is what matters
        if key not in state or tuple(state[key].shape) != w.shape:
            raise ValueError(f"{spec.llm_weights}: {name} {w.shape} has no counterpart in the miniature")
        state[key] = torch.from_numpy(np.array(w, dtype=np.float32))  # a writable copy


def _inject_outlier_channels(state: dict[str, torch.Tensor], spec: MiniatureSpec, gen: torch.Generator) -> None:
    """Give random weights the outlier structure of pretrained LLMs (LLM.int8(), "massive activations").

    A few hidden channels (the same in every layer) carry ``outlier_scale`` times the typical magnitude
    into every attention and MLP input: their RMSNorm weights are scaled up. In the MLP, a few
    intermediate channels are amplified too (their gate and up rows), so down_proj's input has outliers
    as well. What this stresses is exactly what pretrained weights stress: an 8-bit activation block
    (Q8_0 / Q8_K) takes its scale from its largest element, so the other elements of a block holding an
    outlier keep fewer effective bits.
    """
    d, ff, n = spec.llm_hidden, spec.llm_intermediate, spec.outlier_channels
    hidden = torch.randperm(d, generator=gen)[:n]
    inner = torch.randperm(ff, generator=gen)[:n]
    root = math.sqrt(spec.outlier_scale)
    for key, t in state.items():
        if not key.startswith("language_model.model.layers."):
            continue
        if key.endswith(("input_layernorm.weight", "post_attention_layernorm.weight")):
            t[hidden] *= spec.outlier_scale
        elif key.endswith(("mlp.gate_proj.weight", "mlp.up_proj.weight")):
            t[inner] *= root


def _split_shards(state: dict[str, torch.Tensor], n: int) -> list[dict[str, torch.Tensor]]:
    total = sum(t.numel() * t.element_size() for t in state.values())
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for key, tensor in state.items():
        nbytes = tensor.numel() * tensor.element_size()
        if shards[-1] and size + nbytes > total / n and len(shards) < n:
            shards.append({})
            size = 0
        shards[-1][key] = tensor
        size += nbytes
    return shards


def write_miniature(out_dir: str | Path, spec: MiniatureSpec | None = None) -> Path:
    """Write the miniature checkpoint into ``out_dir`` (created if needed) and return its path."""
    spec = spec or MiniatureSpec()
    plat = PLATFORMS[spec.platform]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(spec.seed)

    # Tokenizer: SentencePiece vocabulary, "<PAD>" appended, embedding padded to a multiple of 64.
    spm_model = train_sentencepiece(spec.spm_vocab_size, tuple(spec.instructions))
    pad_id = spec.spm_vocab_size
    vocab_rows = 64 * math.ceil((pad_id + 1) / 64)
    (out / "tokenizer.model").write_bytes(spm_model)
    (out / "tokenizer.json").write_text(build_tokenizer_json(spm_model, "<PAD>"))
    _write_json(out / "added_tokens.json", {"<PAD>": pad_id})
    _write_json(
        out / "special_tokens_map.json",
        {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<PAD>", "unk_token": "<unk>"},
    )
    _write_json(
        out / "tokenizer_config.json",
        {
            "add_bos_token": True,
            "add_eos_token": False,
            "bos_token": "<s>",
            "eos_token": "</s>",
            "pad_token": "<PAD>",
            "unk_token": "<unk>",
            "legacy": False,
            "model_max_length": 2048,
            "padding_side": "right",
            "tokenizer_class": "LlamaTokenizer",
            "clean_up_tokenization_spaces": False,
        },
    )

    # Statistics: config.json carries a base-model entry; dataset_statistics.json (which wins) the fine-tune's.
    base_stats = {"bridge_orig": {"action": _stats_entry(gen, 7, True), "num_transitions": 1, "num_trajectories": 1}}
    dataset_stats = {
        spec.dataset_key: {
            "action": _stats_entry(gen, plat.action_dim, True),
            "proprio": _stats_entry(gen, spec.state_dim, False),
            "num_transitions": 1000,
            "num_trajectories": 10,
        }
    }
    hf_config = _hf_config(spec, vocab_rows, pad_id, base_stats)
    preprocessor = _preprocessor_config(spec.image_size)
    _write_json(out / "config.json", hf_config)
    _write_json(out / "preprocessor_config.json", preprocessor)
    _write_json(out / "dataset_statistics.json", dataset_stats)
    _write_json(
        out / "generation_config.json",
        {
            "_from_model_config": True,
            "bos_token_id": 1,
            "eos_token_id": 2,
            "pad_token_id": pad_id,
            "transformers_version": "4.40.1",
        },
    )

    # Weights: build the reference model for this config and fill it deterministically.
    config = build_config(
        hf_config,
        preprocessor_config=preprocessor,
        dataset_key=spec.dataset_key,
        stats_action_dim=plat.action_dim,
        head_action_dim=plat.action_dim,
        head_hidden_dim=spec.llm_hidden,
        head_num_blocks=2,
        proprio_dim=spec.state_dim if spec.use_proprio else None,
    )
    model = OpenVLAOFT(config)
    state = {name: _init_tensor(name, t.shape, gen) for name, t in model.state_dict().items()}
    del model
    if spec.llm_weights is not None:
        _load_pretrained_llm(state, spec, vocab_rows)
    elif spec.outlier_channels > 0:
        _inject_outlier_channels(state, spec, gen)

    vla = {
        k: v.to(torch.bfloat16).contiguous()
        for k, v in state.items()
        if not k.startswith(("action_head.", "proprio_projector."))
    }
    weight_map: dict[str, str] = {}
    shards = _split_shards(vla, spec.num_shards)
    for i, shard in enumerate(shards, start=1):
        name = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, str(out / name), metadata={"format": "pt"})
        weight_map.update({k: name for k in shard})
    total = sum(t.numel() * t.element_size() for t in vla.values())
    _write_json(
        out / "model.safetensors.index.json",
        {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))},
    )

    # DDP-wrapped component state dicts ("module." prefix), as finetune.py saves them.
    head = {
        "module." + k[len("action_head.") :]: v.to(torch.bfloat16)
        for k, v in state.items()
        if k.startswith("action_head.")
    }
    torch.save(head, out / f"action_head--{spec.step}_checkpoint.pt")
    if spec.use_proprio:
        proprio = {
            "module." + k[len("proprio_projector.") :]: v.float()
            for k, v in state.items()
            if k.startswith("proprio_projector.")
        }
        torch.save(proprio, out / f"proprio_projector--{spec.step}_checkpoint.pt")
    return out


# The real towers of OpenVLA(-OFT) (timm's DINOv2 ViT-L/14-reg4 and SigLIP So400m/14 at 224 px) and two
# real Llama backbones: SmolLM2-135M's (a small GQA Llama whose pretrained weights a registry package
# ships, see ``omnimodel.arch.pretrained_llama``) and Llama-2-7B's, OpenVLA's own.
REAL_IMAGE_SIZE = 224
REAL_TOWERS = {
    "dino": dict(embed_dim=1024, depth=24, num_heads=16, mlp_hidden_dim=4096),
    "siglip": dict(embed_dim=1152, depth=27, num_heads=16, mlp_hidden_dim=4304),
}
REAL_LLMS = {
    "smollm2": dict(llm_hidden=576, llm_intermediate=1536, llm_layers=30, llm_heads=9, llm_kv_heads=3,
                    rms_norm_eps=1e-5, rope_theta=1e5),
    # OpenVLA's text_config stores no eps / theta, so transformers' defaults (1e-6, 1e4) are what runs
    "llama2-7b": dict(llm_hidden=4096, llm_intermediate=11008, llm_layers=32, llm_heads=32, llm_kv_heads=None),
}


def real_width_spec(
    llm: str = "smollm2",
    *,
    vision_depth: int | None = None,
    llm_layers: int | None = None,
    pretrained: bool = False,
    outlier_channels: int = 0,
    seed: int = 0,
    log=None,
) -> MiniatureSpec:
    """A checkpoint spec at real widths and image size: both towers as released (``vision_depth`` blocks
    each, default their real 24 / 27; OFT reads the second-to-last, so ``depth - 1`` run) and the ``llm``
    backbone (``REAL_LLMS``) with ``llm_layers`` layers (default all).

    ``pretrained`` (smollm2 only) takes the Llama weights from the pretrained SmolLM2-135M GGUF,
    downloading it once; ``outlier_channels`` instead injects outlier channels into random weights.
    """
    if llm not in REAL_LLMS:
        raise ValueError(f"unknown real-width LLM {llm!r}; known: {sorted(REAL_LLMS)}")
    towers = {k: dict(v) for k, v in REAL_TOWERS.items()}
    if vision_depth is not None:
        for t in towers.values():
            t["depth"] = vision_depth
    fields: dict[str, Any] = dict(REAL_LLMS[llm])
    if llm_layers is not None:
        fields["llm_layers"] = llm_layers
    weights = None
    if pretrained:
        if llm != "smollm2":
            raise ValueError("pretrained weights are available for the smollm2 backbone only")
        from omnimodel.arch.pretrained_llama import fetch_gguf

        weights = str(fetch_gguf(log=log))
    return MiniatureSpec(seed=seed, image_size=REAL_IMAGE_SIZE, dino=towers["dino"], siglip=towers["siglip"],
                         llm_weights=weights, outlier_channels=outlier_channels, num_shards=4, **fields)


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2) + "\n")


def random_observation(
    spec: MiniatureSpec, seed: int = 1, image_hw: tuple[int, int] | None = None
) -> tuple[list[np.ndarray], np.ndarray]:
    """Deterministic uint8 camera images (model size unless ``image_hw``) and a raw proprio vector."""
    plat = PLATFORMS[spec.platform]
    rng = np.random.default_rng(seed)
    h, w = image_hw or (spec.image_size, spec.image_size)
    images = [rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8) for _ in range(plat.num_images)]
    return images, rng.uniform(-0.5, 0.5, size=spec.state_dim)


__all__ = ["MiniatureSpec", "REAL_LLMS", "REAL_TOWERS", "real_width_spec", "write_miniature", "random_observation", "train_sentencepiece", "build_tokenizer_json"]
