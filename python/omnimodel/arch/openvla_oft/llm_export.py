"""The Llama backbone of an ``openvla-oft`` GGUF as a llama.cpp ``llama`` GGUF (``omnimodel export-llm``).

    export_llm("out/model.gguf", "llm.gguf")

What is written: the ``language_model.model.*`` tensors (token embedding, decoder layers, final norm)
under llama.cpp's names, in whatever GGML type the source stores them -- quantized blocks included --
byte for byte, except that the rows of every ``attn_q`` / ``attn_k`` matrix are permuted into the order
llama.cpp's GPT-J-style RoPE expects. A row is a whole number of blocks in every GGML type, so moving
rows is exact for any type. The ``llama.*`` hyper-parameters come from ``openvla-oft.llm.*``; the
tokenizer is the OFT file's own vocabulary as a SentencePiece (``llama``) tokenizer, padded with unused
placeholder pieces to the embedding's row count (OpenVLA pads its embedding to a multiple of 64, and
llama.cpp sizes the embedding by the vocabulary). No output head is written: llama.cpp's ``llama``
loader then ties it to ``token_embd``, and it never enters a prompt-processing benchmark.

The result runs in stock llama.cpp (``llama-bench``, ``llama-cli``), which is what it is for: timing the
same weights the omnimodel runtime runs. llama.cpp attends causally, OFT's backbone bidirectionally;
the work per token is the same, the hidden states are not.

Matrices stored with zero-padded rows (``omnimodel.padded.*``: a block type on a width it does not
divide) have no llama.cpp equivalent, so they are refused with the tensor's name.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from omnimodel.errors import UsageError
from omnimodel.gguf import provenance
from omnimodel.gguf.reader import GGUFFile, TensorRecord, load_raw, read_gguf
from omnimodel.gguf.types import GGMLType
from omnimodel.gguf.writer import GGUFModelWriter

from .export import ARCH, TOKEN_BYTE, TOKEN_CONTROL, TOKEN_UNKNOWN, TOKEN_UNUSED

LLAMA_ARCH = "llama"
_SRC_PREFIX = "language_model.model."

# HF LlamaModel name (below language_model.model.) -> llama.cpp's (gguf-py's MODEL_TENSOR names)
_GLOBAL_NAMES = {"embed_tokens.weight": "token_embd.weight", "norm.weight": "output_norm.weight"}
_LAYER_NAMES = {
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}
_LAYER_RE = re.compile(r"^layers\.(\d+)\.(.+)$")

# Source tokenizer keys carried over unchanged (the vocabulary arrays are rebuilt below).
_COPIED_TOKENIZER_KEYS = (
    "tokenizer.ggml.bos_token_id",
    "tokenizer.ggml.eos_token_id",
    "tokenizer.ggml.unknown_token_id",
    "tokenizer.ggml.padding_token_id",
    "tokenizer.ggml.add_space_prefix",
)


class LlmExportError(UsageError):
    """The source cannot be exported as a llama.cpp Llama; the message names the file and the reason."""


@dataclass(frozen=True)
class LlamaHParams:
    block_count: int
    context_length: int
    embedding_length: int
    feed_forward_length: int
    head_count: int
    head_count_kv: int
    rope_freq_base: float
    rms_norm_eps: float
    vocab_size: int  # the embedding's rows

    @property
    def head_dim(self) -> int:
        return self.embedding_length // self.head_count


@dataclass(frozen=True)
class LlmExport:
    """What ``export_llm`` wrote."""

    path: Path
    source: Path
    hparams: LlamaHParams
    tensors: dict[str, str]  # llama.cpp name -> source name
    types: dict[str, int]  # GGML type name -> tensor count
    n_tokens_added: int  # placeholder pieces that pad the vocabulary to the embedding rows
    file_bytes: int

    def summary(self) -> str:
        hp = self.hparams
        types = ", ".join(f"{n} {t}" for t, n in sorted(self.types.items()))
        return (
            f"{self.path}: llama, {hp.block_count} layers, {hp.embedding_length} wide, {hp.head_count}/"
            f"{hp.head_count_kv} heads, FFN {hp.feed_forward_length}, vocabulary {hp.vocab_size} "
            f"({self.n_tokens_added} placeholder pieces added); {len(self.tensors)} tensors ({types}), "
            f"{self.file_bytes / 2**20:.1f} MiB"
        )


def llama_tensor_name(source_name: str) -> str | None:
    """llama.cpp's name for an OFT backbone tensor, None for a tensor outside ``language_model.model``;
    raises for a backbone tensor llama.cpp's ``llama`` architecture has no place for."""
    if not source_name.startswith(_SRC_PREFIX):
        return None
    rest = source_name[len(_SRC_PREFIX):]
    if rest in _GLOBAL_NAMES:
        return _GLOBAL_NAMES[rest]
    m = _LAYER_RE.match(rest)
    if m and m.group(2) in _LAYER_NAMES:
        return f"blk.{int(m.group(1))}.{_LAYER_NAMES[m.group(2)]}"
    raise LlmExportError(f"tensor {source_name!r} has no counterpart in llama.cpp's llama architecture")


def permute_rope_rows(rows: np.ndarray, n_head: int) -> np.ndarray:
    """Rows of a q_proj / k_proj matrix from HF's rotate-half order to llama.cpp's interleaved order.

    HF's RoPE pairs dimension i of a head with i + d/2; llama.cpp's (GPT-J style) pairs 2i with 2i + 1.
    So per head, row i goes to 2i and row i + d/2 to 2i + 1. ``rows`` is (n_rows, ...) -- float rows or
    a quantized tensor's raw bytes, one row per entry; the inverse of
    ``omnimodel.arch.pretrained_llama._unpermute_rope_rows``."""
    n = rows.shape[0]
    if n % n_head or (n // n_head) % 2:
        raise LlmExportError(f"{n} rows do not split into {n_head} heads of an even dimension")
    hd = n // n_head
    return np.ascontiguousarray(rows.reshape(n_head, 2, hd // 2, *rows.shape[1:]).swapaxes(1, 2).reshape(rows.shape))


def read_hparams(gf: GGUFFile) -> LlamaHParams:
    md = gf.metadata
    k = f"{ARCH}.llm."

    def get(key: str) -> Any:
        if k + key not in md:
            raise LlmExportError(f"{gf.path}: metadata key {k + key!r} is missing")
        return md[k + key]

    emb = _tensor(gf, _SRC_PREFIX + "embed_tokens.weight")
    hp = LlamaHParams(
        block_count=int(get("block_count")),
        context_length=int(get("context_length")),
        embedding_length=int(get("embedding_length")),
        feed_forward_length=int(get("feed_forward_length")),
        head_count=int(get("head_count")),
        head_count_kv=int(get("head_count_kv")),
        rope_freq_base=float(get("rope_theta")),
        rms_norm_eps=float(get("rms_norm_eps")),
        vocab_size=int(emb.shape[0]),
    )
    if hp.embedding_length % hp.head_count or hp.head_dim % 2 or hp.head_count % hp.head_count_kv:
        raise LlmExportError(
            f"{gf.path}: {hp.embedding_length} wide with {hp.head_count}/{hp.head_count_kv} heads is not a Llama "
            "attention llama.cpp can run"
        )
    return hp


def _tensor(gf: GGUFFile, name: str) -> TensorRecord:
    for t in gf.tensors:
        if t.name == name:
            return t
    raise LlmExportError(f"{gf.path}: tensor {name!r} is missing")


def _check_tensors(gf: GGUFFile, hp: LlamaHParams) -> dict[str, TensorRecord]:
    """The backbone tensors by llama.cpp name, after checking they are complete and expressible."""
    out: dict[str, TensorRecord] = {}
    for t in gf.tensors:
        name = llama_tensor_name(t.name)
        if name is None:
            continue
        if t.real_width is not None:
            raise LlmExportError(
                f"{gf.path}: tensor {t.name!r} is stored with zero-padded rows ({t.real_width} real columns "
                f"padded to {t.shape[-1]} for {t.ggml_type.name}), which llama.cpp cannot express; convert with "
                "a type whose block divides the row width for this matrix"
            )
        if name.startswith("blk.") and int(name.split(".")[1]) >= hp.block_count:
            raise LlmExportError(f"{gf.path}: tensor {t.name!r} is beyond llm.block_count={hp.block_count}")
        out[name] = t
    wanted = list(_GLOBAL_NAMES.values()) + [
        f"blk.{i}.{n}" for i in range(hp.block_count) for n in _LAYER_NAMES.values()
    ]
    missing = [n for n in wanted if n not in out]
    if missing:
        src = {v: k for k, v in _GLOBAL_NAMES.items()}
        raise LlmExportError(f"{gf.path}: the backbone is incomplete, {len(missing)} tensor(s) missing "
                             f"(first: {src.get(missing[0], missing[0])})")
    hd, e = hp.head_dim, hp.embedding_length
    shapes = {
        "attn_q.weight": (hp.head_count * hd, e),
        "attn_k.weight": (hp.head_count_kv * hd, e),
        "attn_v.weight": (hp.head_count_kv * hd, e),
        "attn_output.weight": (e, hp.head_count * hd),
        "ffn_gate.weight": (hp.feed_forward_length, e),
        "ffn_up.weight": (hp.feed_forward_length, e),
        "ffn_down.weight": (e, hp.feed_forward_length),
        "attn_norm.weight": (e,),
        "ffn_norm.weight": (e,),
    }
    for name, t in out.items():
        want = shapes.get(name.split(".", 2)[-1]) if name.startswith("blk.") else (
            (hp.vocab_size, e) if name == "token_embd.weight" else (e,))
        if tuple(t.shape) != want:
            raise LlmExportError(f"{gf.path}: tensor {t.name!r} has shape {list(t.shape)}, expected {list(want)}")
    return out


@dataclass(frozen=True)
class _Vocabulary:
    tokens: list[str]
    scores: list[float]
    token_types: list[int]
    n_added: int


def _merge_scores(tokens: list[str], types: list[int], merges: list[str]) -> list[float]:
    """SentencePiece-style scores that merge in the order of a Hugging Face BPE merge list.

    llama.cpp's ``llama`` tokenizer repeatedly joins the adjacent pair whose joined piece scores highest;
    HF's BPE applies the lowest-ranked merge. Scoring each piece by minus the rank of the first merge
    that produces it makes the two agree on every piece the merges can build. Pieces no merge builds
    score below all of them (control, byte and unknown pieces 0, as SentencePiece stores them)."""
    rank: dict[str, int] = {}
    for r, m in enumerate(merges):
        left, sep, right = m.partition(" ")
        if sep:
            rank.setdefault(left + right, r)
    floor = -float(len(merges) + 1)
    scores = []
    for i, (piece, tt) in enumerate(zip(tokens, types)):
        if tt in (TOKEN_CONTROL, TOKEN_BYTE, TOKEN_UNKNOWN):
            scores.append(0.0)
        elif piece in rank:
            scores.append(-float(rank[piece] + 1))
        else:
            scores.append(floor - i)
    return scores


def _vocabulary(gf: GGUFFile, n_rows: int) -> _Vocabulary:
    md = gf.metadata
    tokens = md.get("tokenizer.ggml.tokens")
    if not isinstance(tokens, list) or not tokens:
        raise LlmExportError(f"{gf.path}: no tokenizer vocabulary (tokenizer.ggml.tokens)")
    if len(tokens) > n_rows:
        raise LlmExportError(f"{gf.path}: the vocabulary has {len(tokens)} pieces but the embedding only {n_rows} rows")
    types = md.get("tokenizer.ggml.token_type")
    if not isinstance(types, list) or len(types) != len(tokens):
        raise LlmExportError(f"{gf.path}: tokenizer.ggml.token_type does not match the {len(tokens)} pieces")
    tokens = [str(t) for t in tokens]
    types = [int(t) for t in types]
    if isinstance(md.get("tokenizer.ggml.scores"), list):
        scores = [float(s) for s in md["tokenizer.ggml.scores"]]
        if len(scores) != len(tokens):
            raise LlmExportError(f"{gf.path}: tokenizer.ggml.scores does not match the {len(tokens)} pieces")
    elif isinstance(md.get("tokenizer.ggml.merges"), list):
        scores = _merge_scores(tokens, types, [str(m) for m in md["tokenizer.ggml.merges"]])
    else:
        raise LlmExportError(f"{gf.path}: the tokenizer has neither scores nor merges")
    # Unused ids (a gap in tokenizer.json, the embedding's padding rows) get unique placeholder pieces:
    # llama.cpp requires every piece to be distinct.
    taken = set(tokens)
    for i, t in enumerate(tokens):
        if t == "":
            tokens[i], types[i] = _placeholder(i, taken), TOKEN_UNUSED
    n_added = n_rows - len(tokens)
    for i in range(len(tokens), n_rows):
        tokens.append(_placeholder(i, taken))
        types.append(TOKEN_UNUSED)
        scores.append(0.0)
    if len(set(tokens)) != len(tokens):
        dup = next(t for t in tokens if tokens.count(t) > 1)
        raise LlmExportError(f"{gf.path}: the vocabulary has the piece {dup!r} twice")
    return _Vocabulary(tokens, scores, types, n_added)


def _placeholder(i: int, taken: set[str]) -> str:
    name = f"<unused{i}>"
    while name in taken:
        name = "<" + name + ">"
    taken.add(name)
    return name


def resolve_source(src: str | os.PathLike[str]) -> Path:
    """A convert output directory stands for its model.gguf."""
    p = Path(src)
    if p.is_dir():
        from omnimodel.convert import MODEL_FILE  # noqa: PLC0415

        p = p / MODEL_FILE
    if not p.is_file():
        raise LlmExportError(f"{src}: no such GGUF file or convert output directory")
    return p


def export_llm(src: str | os.PathLike[str], out: str | os.PathLike[str]) -> LlmExport:
    """Write the Llama backbone of the ``openvla-oft`` GGUF ``src`` (a file or a convert output directory)
    to ``out`` as a llama.cpp ``llama`` GGUF. Atomic: on any error ``out`` is left as it was."""
    source = resolve_source(src)
    out_path = Path(out)
    if out_path.exists() and out_path.resolve() == source.resolve():
        raise LlmExportError(f"{out}: is the source file; choose another output path")
    gf = read_gguf(source)
    if gf.architecture != ARCH:
        raise LlmExportError(f"{source}: architecture {gf.architecture!r} is not {ARCH!r}")
    hp = read_hparams(gf)
    tensors = _check_tensors(gf, hp)
    vocab = _vocabulary(gf, hp.vocab_size)
    md = gf.metadata

    p = f"{LLAMA_ARCH}."
    target = md.get(provenance.KEY_TARGET_BPW)
    with GGUFModelWriter(out_path, LLAMA_ARCH, alignment=gf.alignment,
                         method=str(md.get(provenance.KEY_METHOD) or "none"),
                         target_bpw=float(target) if target else None) as w:
        w.add_string("general.name", f"{source.parent.name or source.stem} llm")
        w.add_string("general.description",
                     f"Llama backbone of an {ARCH} GGUF ({source.name}), exported by omnimodel export-llm; the "
                     "source model runs it with bidirectional attention")
        w.add_uint32(p + "block_count", hp.block_count)
        w.add_uint32(p + "context_length", hp.context_length)
        w.add_uint32(p + "embedding_length", hp.embedding_length)
        w.add_uint32(p + "feed_forward_length", hp.feed_forward_length)
        w.add_uint32(p + "attention.head_count", hp.head_count)
        w.add_uint32(p + "attention.head_count_kv", hp.head_count_kv)
        w.add_float32(p + "rope.freq_base", hp.rope_freq_base)
        w.add_uint32(p + "rope.dimension_count", hp.head_dim)
        w.add_float32(p + "attention.layer_norm_rms_epsilon", hp.rms_norm_eps)
        w.add_uint32(p + "vocab_size", hp.vocab_size)

        w.add_string("tokenizer.ggml.model", "llama")
        w.add_array("tokenizer.ggml.tokens", vocab.tokens, "string")
        w.add_array("tokenizer.ggml.scores", vocab.scores, "float32")
        w.add_array("tokenizer.ggml.token_type", vocab.token_types, "int32")
        for key in _COPIED_TOKENIZER_KEYS:
            if key in md:
                value = md[key]
                if isinstance(value, bool):
                    w.add_bool(key, value)
                else:
                    w.add_uint32(key, int(value))
        w.add_bool("tokenizer.ggml.add_bos_token", True)
        w.add_bool("tokenizer.ggml.add_eos_token", False)

        for name in _ordered(tensors):
            t = tensors[name]
            raw = load_raw(gf, t.name)
            if name.endswith("attn_q.weight"):
                raw = permute_rope_rows(raw, hp.head_count)
            elif name.endswith("attn_k.weight"):
                raw = permute_rope_rows(raw, hp.head_count_kv)
            w.add_encoded(name, raw, t.ggml_type, t.shape)
    counts: dict[str, int] = {}
    for t in tensors.values():
        counts[GGMLType(t.ggml_type).name] = counts.get(GGMLType(t.ggml_type).name, 0) + 1
    return LlmExport(
        path=out_path, source=source, hparams=hp, tensors={n: t.name for n, t in tensors.items()}, types=counts,
        n_tokens_added=vocab.n_added, file_bytes=out_path.stat().st_size,
    )


def _ordered(tensors: dict[str, TensorRecord]) -> list[str]:
    """llama.cpp's conventional order: embedding, layers in order, final norm."""
    def key(n: str) -> tuple[int, int, str]:
        if n == "token_embd.weight":
            return (0, 0, n)
        if n.startswith("blk."):
            return (1, int(n.split(".")[1]), n)
        return (2, 0, n)

    return sorted(tensors, key=key)


__all__ = ["LLAMA_ARCH", "LlamaHParams", "LlmExport", "LlmExportError", "export_llm", "llama_tensor_name",
           "permute_rope_rows", "read_hparams", "resolve_source"]
