"""OpenVLA-OFT -> GGUF for the runtime's ``openvla-oft`` graph (generated from ``templates/archs/openvla_oft.cpp.j2``).

    policy = load_policy(checkpoint_dir)
    write_gguf(policy, "oft.gguf", outtype="f16")

Every tensor the L1-regression forward pass uses is written under its PyTorch ``state_dict`` name
(``unused_parameter_prefixes`` are skipped: the last ViT blocks, the towers' final norms, SigLIP's
MAP head, the LM head). Types: ``f32`` writes everything F32; ``f16`` makes matrices (and the patch
kernels, the token embedding) F16; ``bf16`` the same in BF16 (the released checkpoints' own precision,
so it stores their weights exactly); ``q8_0`` makes matrices whose rows are a multiple of 32 Q8_0 and
the rest F16. 1-D tensors (norms, biases, LayerScale) and the position / class / register embeddings
always stay F32.

Metadata (under ``openvla-oft.``): image count and size, chunk and action/proprio dims, per-tower ViT
hyper-parameters and image normalisation (``vision.{featurizer,fused_featurizer}.*``), Llama
hyper-parameters (``llm.*``), action head (``action_head.*``), the token ids the sequence is built
from, ``causal_attention`` (0: OFT's bidirectional attention), the dataset statistics
(``norm_stats.{key,type}``, ``norm_stats.{action,proprio}.{low,high,mask}`` -- low/high are q01/q99
for bounds_q99 and min/max for bounds) and the prompt template. The vocabulary goes to
``tokenizer.ggml.tokens`` (index = token id) with ``token_type`` (llama.cpp's codes), and either
``merges`` (from tokenizer.json) or ``scores`` (from tokenizer.model), so the C++ tokenizer reproduces
the ids the Python tokenizer produces.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from omnimodel.arch.gguf_tensors import write_tensors
from omnimodel.gguf.types import GGMLType
from omnimodel.gguf.types import parse_type
from omnimodel.gguf.writer import GGUFStreamWriter
from omnimodel.plan.types import OUTTYPES, tensor_type  # the planner owns the type rules

from .config import ViTConfig
from .modeling import unused_parameter_prefixes
from .policy import OpenVLAOFTPolicy

ARCH = "openvla-oft"


def exported_tensors(policy: OpenVLAOFTPolicy) -> dict[str, torch.Tensor]:
    """The state_dict entries the runtime graph reads, by name."""
    skip = tuple(unused_parameter_prefixes(policy.config))
    return {k: v for k, v in policy.model.state_dict().items() if not k.startswith(skip)}


# llama.cpp's token types (tokenizer.ggml.token_type), so any GGUF reader understands them.
TOKEN_NORMAL, TOKEN_UNKNOWN, TOKEN_CONTROL, TOKEN_USER_DEFINED, TOKEN_UNUSED, TOKEN_BYTE = 1, 2, 3, 4, 5, 6
_BYTE_PIECE = re.compile(r"^<0x[0-9A-Fa-f]{2}>$")


class EncodedMatrix(Protocol):
    """A matrix already in GGML blocks (``omnimodel.quant.scales.TensorQuant`` is one)."""

    ggml_type: GGMLType
    data: np.ndarray  # uint8 (rows, row_bytes) of rows zero-padded to pad_to
    pad_to: int


class MatrixEncoder(Protocol):
    """Encodes chosen matrices when the writer reaches them (``omnimodel.quant.MatrixQuantizer`` is one):
    ``layout`` says each one's GGML type and stored row width before any data exists (the GGUF header
    needs them), ``encode`` gets the fp32 weight (out, in) and returns its blocks, which are written and
    dropped at once."""

    def matrices(self) -> Collection[str]: ...

    def layout(self, name: str) -> tuple[GGMLType, int] | None: ...

    def encode(self, name: str, weight: np.ndarray) -> EncodedMatrix: ...


class _Precomputed:
    """``MatrixEncoder`` over blocks computed earlier (``write_gguf(encoded=...)``)."""

    def __init__(self, encoded: Mapping[str, EncodedMatrix]) -> None:
        self._encoded = encoded

    def matrices(self) -> Collection[str]:
        return self._encoded.keys()

    def layout(self, name: str) -> tuple[GGMLType, int] | None:
        q = self._encoded.get(name)
        return None if q is None else (parse_type(q.ggml_type), int(q.pad_to))

    def encode(self, name: str, weight: np.ndarray) -> EncodedMatrix:
        return self._encoded[name]


@dataclass
class Vocabulary:
    """What the C++ tokenizer (cpp/src/vla/tokenizer.cpp) needs to reproduce the Python ids.

    ``merges`` (tokenizer.json: ranked "left right" pairs, Hugging Face BPE semantics, special
    tokens split out of the raw text first) or ``scores`` (tokenizer.model: SentencePiece BPE, the
    pair whose merged piece scores highest merges first, no special-token splitting), whichever
    source the Python tokenizer itself reads."""

    tokens: list[str]
    token_types: list[int]
    scores: list[float] | None
    merges: list[str] | None
    unk_id: int


def _vocabulary(policy: OpenVLAOFTPolicy) -> Vocabulary:
    enc = policy.tokenizer.encoder
    tok = getattr(enc, "_tok", None)
    if tok is not None:
        pieces = tok.get_vocab(with_added_tokens=True)
        tokens = [""] * (max(pieces.values()) + 1)
        for piece, i in pieces.items():
            tokens[i] = piece
        model = json.loads(tok.to_str())["model"]
        if model.get("type") != "BPE" or not model.get("byte_fallback", False):
            raise ValueError("tokenizer.json: only a byte-fallback BPE model (Llama's) can be exported")
        # tokenizers writes merges as "a b" strings or [a, b] pairs depending on its version
        merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
        unk = model.get("unk_token")
        unk_id = pieces.get(unk, 0) if unk is not None else 0
        added = {t.content: t.special for t in tok.get_added_tokens_decoder().values()}
        types = []
        for i, piece in enumerate(tokens):
            if i == unk_id:
                types.append(TOKEN_UNKNOWN)
            elif piece in added:
                types.append(TOKEN_CONTROL if added[piece] else TOKEN_USER_DEFINED)
            elif _BYTE_PIECE.match(piece):
                types.append(TOKEN_BYTE)
            else:
                types.append(TOKEN_NORMAL)
        return Vocabulary(tokens, types, None, merges, unk_id)
    sp = enc._sp
    n = sp.GetPieceSize()
    tokens = [sp.IdToPiece(i) for i in range(n)]
    types = [
        TOKEN_UNKNOWN if sp.IsUnknown(i) else TOKEN_CONTROL if sp.IsControl(i) else TOKEN_BYTE if sp.IsByte(i)
        else TOKEN_UNUSED if sp.IsUnused(i) else TOKEN_NORMAL
        for i in range(n)
    ]
    return Vocabulary(tokens, types, [float(sp.GetScore(i)) for i in range(n)], None, int(sp.unk_id()))


def _add_tower(w: GGUFStreamWriter, name: str, vit: ViTConfig, mean, std) -> None:
    p = f"{ARCH}.vision.{name}."
    w.add_uint32(p + "patch_size", vit.patch_size)
    w.add_uint32(p + "embedding_length", vit.embed_dim)
    w.add_uint32(p + "block_count", vit.depth)
    w.add_uint32(p + "feature_block_index", vit.feature_block_index)
    w.add_uint32(p + "head_count", vit.num_heads)
    w.add_uint32(p + "feed_forward_length", vit.mlp_hidden_dim)
    w.add_uint32(p + "class_token", int(vit.class_token))
    w.add_uint32(p + "reg_tokens", vit.reg_tokens)
    w.add_uint32(p + "no_embed_class", int(vit.no_embed_class))
    w.add_uint32(p + "layer_scale", int(vit.layer_scale))
    w.add_float32(p + "layer_norm_eps", vit.layer_norm_eps)
    w.add_string(p + "activation", "gelu" if vit.activation == "gelu_erf" else vit.activation)
    w.add_string(p + "timm_model_id", vit.timm_model_id)
    w.add_array(p + "image_mean", [float(v) for v in mean], "float32")
    w.add_array(p + "image_std", [float(v) for v in std], "float32")


def write_gguf(
    policy: OpenVLAOFTPolicy,
    path: str | os.PathLike[str],
    outtype: str = "f32",
    *,
    causal_attention: bool = False,
    types: Mapping[str, GGMLType] | None = None,
    encoded: Mapping[str, EncodedMatrix] | None = None,
    encoder: MatrixEncoder | None = None,
    method: str = "none",
    target_bpw: float | None = None,
) -> Path:
    """Write ``policy`` as an ``openvla-oft`` GGUF. ``types`` (a plan's ``tensor_types()``) overrides the
    per-tensor GGML types; without it ``outtype``'s rules apply. ``encoded`` (a quantizer's result,
    ``QuantResult.tensors``) supplies matrices already in their GGML blocks: they are stored byte for byte
    as the quantizer chose them, zero-padded rows included (``pad_to``), so what was scored is what ships.
    ``encoder`` instead encodes each of its matrices when the writer reaches it (a quantizer working one
    matrix at a time). ``method`` / ``target_bpw`` go to the provenance keys. ``causal_attention=True``
    (tests only) records a causal Llama in the metadata; generated graphs take the masking from their
    plan instead.

    The file is streamed (``GGUFStreamWriter``): the layout is declared from the types, then each tensor
    is converted to fp32, encoded and written in turn, so the exporter holds one tensor at a time besides
    the policy itself (which may be bf16 and memory-mapped)."""
    if outtype not in OUTTYPES:
        raise ValueError(f"outtype must be one of {OUTTYPES}, got {outtype!r}")
    if encoded is not None and encoder is not None:
        raise ValueError("give encoded= or encoder=, not both")
    if encoded is not None:
        encoder = _Precomputed(encoded)
    cfg = policy.config
    k = f"{ARCH}."
    exported = exported_tensors(policy)
    unknown = sorted(set(encoder.matrices() if encoder is not None else ()) - set(exported))
    if unknown:
        raise ValueError(f"encoded tensors the model does not export: {unknown[:3]}")
    with GGUFStreamWriter(path, ARCH, method=method, target_bpw=target_bpw) as w:
        w.add_uint32(k + "num_images", cfg.num_images)
        w.add_uint32(k + "image_size", cfg.vision.image_size)
        w.add_string(k + "image_resize_strategy", cfg.vision.resize_strategy)
        w.add_uint32(k + "num_actions_chunk", cfg.num_actions_chunk)
        w.add_uint32(k + "action_dim", cfg.action_dim)
        w.add_uint32(k + "proprio_dim", cfg.proprio_projector.proprio_dim if cfg.use_proprio else 0)
        w.add_uint32(k + "causal_attention", int(causal_attention))
        w.add_uint32(k + "bos_token_id", cfg.bos_token_id)
        w.add_uint32(k + "eos_token_id", cfg.eos_token_id)
        w.add_uint32(k + "action_placeholder_token_id", cfg.action_placeholder_token_id)
        w.add_string(k + "platform", cfg.platform.name)

        norms = cfg.vision.normalization
        _add_tower(w, "featurizer", cfg.vision.featurizer, norms[0].mean, norms[0].std)
        _add_tower(w, "fused_featurizer", cfg.vision.fused_featurizer, norms[1].mean, norms[1].std)

        llm = cfg.llm
        w.add_uint32(k + "llm.block_count", llm.num_hidden_layers)
        w.add_uint32(k + "llm.embedding_length", llm.hidden_size)
        w.add_uint32(k + "llm.feed_forward_length", llm.intermediate_size)
        w.add_uint32(k + "llm.head_count", llm.num_attention_heads)
        w.add_uint32(k + "llm.head_count_kv", llm.num_key_value_heads)
        w.add_float32(k + "llm.rms_norm_eps", llm.rms_norm_eps)
        w.add_float32(k + "llm.rope_theta", llm.rope_theta)
        w.add_uint32(k + "llm.vocab_size", llm.vocab_size)
        w.add_uint32(k + "llm.context_length", llm.max_position_embeddings)

        head = cfg.action_head
        w.add_uint32(k + "action_head.num_blocks", head.num_blocks)
        w.add_uint32(k + "action_head.hidden_dim", head.hidden_dim)
        w.add_float32(k + "action_head.layer_norm_eps", head.layer_norm_eps)

        stats = policy.norm_stats
        w.add_string(k + "norm_stats.key", stats.key)
        w.add_string(k + "norm_stats.type", stats.normalization.value)
        for part, b in (("action", stats.action), ("proprio", stats.proprio)):
            if b is None:
                continue
            # float64 keeps the statistics exact for Python-side (un)normalisation
            w.add_array(k + f"norm_stats.{part}.low", [float(v) for v in b.low], "float64")
            w.add_array(k + f"norm_stats.{part}.high", [float(v) for v in b.high], "float64")
            w.add_array(k + f"norm_stats.{part}.mask", [int(v) for v in b.mask], "int32")

        w.add_string(k + "prompt.template", cfg.prompt.template)
        w.add_uint32(k + "prompt.lowercase_instruction", int(cfg.prompt.lowercase_instruction))
        w.add_uint32(k + "prompt.empty_piece_id", policy.tokenizer.empty_piece_id)
        w.add_uint32(k + "prompt.append_empty_piece", int(cfg.prompt.append_empty_piece))
        w.add_string("tokenizer.ggml.model", "llama")
        vocab = _vocabulary(policy)
        w.add_array("tokenizer.ggml.tokens", vocab.tokens, "string")
        w.add_array("tokenizer.ggml.token_type", vocab.token_types, "int32")
        if vocab.scores is not None:
            w.add_array("tokenizer.ggml.scores", vocab.scores, "float32")
        if vocab.merges is not None:
            w.add_array("tokenizer.ggml.merges", vocab.merges, "string")
        w.add_uint32("tokenizer.ggml.unknown_token_id", vocab.unk_id)
        w.add_bool("tokenizer.ggml.add_space_prefix", True)
        w.add_bool("tokenizer.ggml.byte_fallback", True)
        w.add_uint32("tokenizer.ggml.bos_token_id", cfg.bos_token_id)
        w.add_uint32("tokenizer.ggml.eos_token_id", cfg.eos_token_id)

        write_tensors(w, exported, outtype=outtype, types=types, encoder=encoder)
    return Path(path)


def runtime_inputs(out) -> dict[str, np.ndarray]:
    """The runtime's inputs for what the reference is fed (a ``PolicyInputs`` or ``PolicyOutput``)."""
    inputs = {
        "pixel_values": out.pixel_values.to(torch.float32).numpy(),
        "input_ids": out.input_ids.to(torch.float32).numpy(),
    }
    if out.proprio is not None:
        inputs["proprio"] = out.proprio.to(torch.float32).numpy()
    return inputs


__all__ = ["ARCH", "OUTTYPES", "MatrixEncoder", "write_gguf", "tensor_type", "exported_tensors", "runtime_inputs"]
