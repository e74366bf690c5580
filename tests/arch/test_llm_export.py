"""`omnimodel export-llm`: the OFT backbone as a llama.cpp `llama` GGUF, checked with gguf-py alone.

The exported file is read back with gguf-py's own GGUFReader (the reader llama.cpp's tooling uses), and
every claim is checked against the source file: llama.cpp's tensor names and shapes, the llama.* keys,
the tokenizer, byte equality of every weight, and that the q/k row order makes llama.cpp's GPT-J-style
RoPE compute the same attention scores as HF's rotate-half RoPE on the source weights.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np
import pytest
from omnimodel.arch.openvla_oft import MiniatureSpec, load_policy, write_miniature
from omnimodel.arch.openvla_oft.export import exported_tensors, tensor_type, write_gguf
from omnimodel.arch.openvla_oft.llm_export import LlmExportError, export_llm, permute_rope_rows
from omnimodel.arch.pretrained_llama import _unpermute_rope_rows
from omnimodel.cli.main import main
from omnimodel.gguf.encoders import encode
from omnimodel.gguf.reader import load_raw, load_tensor, read_gguf
from omnimodel.gguf.types import GGMLType

# GQA so q and k are permuted with different head counts
SPEC = MiniatureSpec(seed=3, llm_heads=4, llm_kv_heads=2)
LM = "language_model.model."


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return write_miniature(tmp_path_factory.mktemp("llm_export") / "ckpt", SPEC)


@pytest.fixture(scope="module")
def policy(checkpoint):
    return load_policy(checkpoint)


def mixed_types(policy) -> dict[str, GGMLType]:
    """F16 by default; the embedding, layer 0's attention and layer 1's FFN quantized (rows of 64 / 172
    take Q8_0 only where 32 divides them), so quantized bytes go through the row permutation too."""
    types = {n: tensor_type(n, tuple(t.shape), "f16") for n, t in exported_tensors(policy).items()}
    types[LM + "embed_tokens.weight"] = GGMLType.Q8_0
    for n in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj"):
        types[f"{LM}layers.0.{n}.weight"] = GGMLType.Q8_0
    types[f"{LM}layers.1.mlp.gate_proj.weight"] = GGMLType.Q8_0
    types[f"{LM}layers.1.self_attn.k_proj.weight"] = GGMLType.BF16
    return types


@pytest.fixture(scope="module")
def exported(policy, tmp_path_factory):
    d = tmp_path_factory.mktemp("llm_export_out")
    src = write_gguf(policy, d / "model.gguf", "f16", types=mixed_types(policy))
    result = export_llm(d, d / "llm.gguf")  # a convert-output directory stands for its model.gguf
    return src, result


def _field(reader: gguf.GGUFReader, key: str):
    f = reader.fields.get(key)
    assert f is not None, key
    return f.contents()


def test_names_shapes_and_types(exported, policy) -> None:
    src, result = exported
    reader = gguf.GGUFReader(str(result.path))
    cfg = policy.config.llm
    layer = ["attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm", "ffn_gate", "ffn_up", "ffn_down"]
    expected = {"token_embd.weight", "output_norm.weight"} | {
        f"blk.{i}.{n}.weight" for i in range(cfg.num_hidden_layers) for n in layer
    }
    got = {t.name: t for t in reader.tensors}
    assert set(got) == expected
    sf = read_gguf(src)
    for name, source_name in result.tensors.items():
        rec = sf.tensor(source_name)
        t = got[name]
        assert int(t.tensor_type) == int(rec.ggml_type), name
        assert tuple(int(n) for n in t.shape) == rec.ne, name  # ggml ne: input width first
    assert int(got["token_embd.weight"].tensor_type) == int(GGMLType.Q8_0)
    assert tuple(got["token_embd.weight"].shape) == (cfg.hidden_size, int(sf.tensor(LM + "embed_tokens.weight").shape[0]))


def test_llama_metadata(exported, policy) -> None:
    _, result = exported
    reader = gguf.GGUFReader(str(result.path))
    cfg = policy.config.llm
    assert _field(reader, "general.architecture") == "llama"
    want = {
        "llama.block_count": cfg.num_hidden_layers,
        "llama.context_length": cfg.max_position_embeddings,
        "llama.embedding_length": cfg.hidden_size,
        "llama.feed_forward_length": cfg.intermediate_size,
        "llama.attention.head_count": cfg.num_attention_heads,
        "llama.attention.head_count_kv": cfg.num_key_value_heads,
        "llama.rope.dimension_count": cfg.hidden_size // cfg.num_attention_heads,
        "llama.vocab_size": policy.model.language_model.model.embed_tokens.weight.shape[0],
    }
    for key, value in want.items():
        assert _field(reader, key) == value, key
    assert _field(reader, "llama.rope.freq_base") == pytest.approx(cfg.rope_theta)
    assert _field(reader, "llama.attention.layer_norm_rms_epsilon") == pytest.approx(cfg.rms_norm_eps)
    # the dominant type of the matrices (F16 here), in llama.cpp's numbering
    assert _field(reader, "general.file_type") == int(gguf.LlamaFileType.MOSTLY_F16)


def test_weights_byte_identical_and_qk_rows_permuted(exported, policy) -> None:
    src, result = exported
    sf = read_gguf(src)
    reader = gguf.GGUFReader(str(result.path))
    cfg = policy.config.llm
    for t in reader.tensors:
        source = load_raw(sf, result.tensors[t.name])
        out = np.asarray(t.data).view(np.uint8).reshape(source.shape)
        if ".attn_q." in t.name or ".attn_k." in t.name:
            heads = cfg.num_attention_heads if ".attn_q." in t.name else cfg.num_key_value_heads
            assert not np.array_equal(out, source), t.name  # the rows did move
            assert np.array_equal(out, permute_rope_rows(source, heads)), t.name
            # and pretrained_llama's independent inverse (llama.cpp -> HF) restores the source rows
            assert np.array_equal(_unpermute_rope_rows(out, heads), source), t.name
        else:
            assert np.array_equal(out, source), t.name


def _rope_hf(x: np.ndarray, pos: np.ndarray, theta: float) -> np.ndarray:
    """HF Llama's rotate-half RoPE on (T, heads, d)."""
    d = x.shape[-1]
    inv = theta ** (-np.arange(0, d, 2) / d)
    ang = pos[:, None, None] * inv[None, None, :]
    cos, sin = np.concatenate([np.cos(ang)] * 2, -1), np.concatenate([np.sin(ang)] * 2, -1)
    rot = np.concatenate([-x[..., d // 2:], x[..., : d // 2]], -1)
    return x * cos + rot * sin


def _rope_gptj(x: np.ndarray, pos: np.ndarray, theta: float) -> np.ndarray:
    """llama.cpp's LLAMA_ROPE_TYPE_NORM: dimensions (2i, 2i+1) rotate together."""
    d = x.shape[-1]
    inv = theta ** (-np.arange(0, d, 2) / d)
    ang = pos[:, None, None] * inv[None, None, :]
    a, b = x[..., 0::2], x[..., 1::2]
    out = np.empty_like(x)
    out[..., 0::2] = a * np.cos(ang) - b * np.sin(ang)
    out[..., 1::2] = a * np.sin(ang) + b * np.cos(ang)
    return out


def test_attention_scores_match_under_each_rope(exported, policy) -> None:
    """HF q/k + rotate-half RoPE and exported q/k + GPT-J RoPE give the same q.k for every head pair."""
    src, result = exported
    cfg = policy.config.llm
    theta, d = cfg.rope_theta, cfg.hidden_size // cfg.num_attention_heads
    nh, nkv = cfg.num_attention_heads, cfg.num_key_value_heads
    x = np.random.default_rng(0).standard_normal((7, cfg.hidden_size))
    pos = np.arange(7, dtype=np.float64) * 3
    reader = gguf.GGUFReader(str(result.path))
    out = {t.name: t for t in reader.tensors}
    for layer in range(cfg.num_hidden_layers):
        wq = load_tensor(src, f"{LM}layers.{layer}.self_attn.q_proj.weight").astype(np.float64)
        wk = load_tensor(src, f"{LM}layers.{layer}.self_attn.k_proj.weight").astype(np.float64)
        eq, ek = out[f"blk.{layer}.attn_q.weight"], out[f"blk.{layer}.attn_k.weight"]
        lq = gguf.quants.dequantize(eq.data, eq.tensor_type).reshape(wq.shape).astype(np.float64)
        lk = gguf.quants.dequantize(ek.data, ek.tensor_type).reshape(wk.shape).astype(np.float64)
        q_hf = _rope_hf((x @ wq.T).reshape(7, nh, d), pos, theta)
        k_hf = _rope_hf((x @ wk.T).reshape(7, nkv, d), pos, theta)
        q_ll = _rope_gptj((x @ lq.T).reshape(7, nh, d), pos, theta)
        k_ll = _rope_gptj((x @ lk.T).reshape(7, nkv, d), pos, theta)
        group = nh // nkv
        s_hf = np.einsum("thd,shd->hts", q_hf, np.repeat(k_hf, group, axis=1))
        s_ll = np.einsum("thd,shd->hts", q_ll, np.repeat(k_ll, group, axis=1))
        assert np.allclose(s_hf, s_ll, rtol=1e-9, atol=1e-9), layer
        # the un-permuted weights under GPT-J RoPE would not: the permutation is what makes them agree
        q_wrong = _rope_gptj((x @ wq.T).reshape(7, nh, d), pos, theta)
        assert not np.allclose(np.einsum("thd,shd->hts", q_wrong, np.repeat(k_ll, group, axis=1)), s_hf, atol=1e-3)


def test_tokenizer_padded_to_embedding_rows(exported) -> None:
    src, result = exported
    md = read_gguf(src).metadata
    reader = gguf.GGUFReader(str(result.path))
    assert _field(reader, "tokenizer.ggml.model") == "llama"
    tokens = _field(reader, "tokenizer.ggml.tokens")
    types = _field(reader, "tokenizer.ggml.token_type")
    scores = _field(reader, "tokenizer.ggml.scores")
    n_src = len(md["tokenizer.ggml.tokens"])
    assert len(tokens) == len(types) == len(scores) == _field(reader, "llama.vocab_size") > n_src
    assert tokens[:n_src] == [t or tokens[i] for i, t in enumerate(md["tokenizer.ggml.tokens"])]
    assert types[:n_src] == md["tokenizer.ggml.token_type"]
    assert len(set(tokens)) == len(tokens)  # llama.cpp asserts distinct pieces
    assert set(types[n_src:]) == {5}  # llama.cpp's LLAMA_TOKEN_TYPE_UNUSED
    for key in ("bos_token_id", "eos_token_id", "unknown_token_id"):
        assert _field(reader, f"tokenizer.ggml.{key}") == md[f"tokenizer.ggml.{key}"]
    assert result.n_tokens_added == len(tokens) - n_src


def test_merge_scores_rank_pieces_as_sentencepiece_does(exported, checkpoint) -> None:
    """The OFT GGUF carries tokenizer.json's merges; the exported scores must order the merged pieces as
    the checkpoint's own SentencePiece model scores them (the merges were ranked by those scores)."""
    import sentencepiece as spm

    src, result = exported
    assert "tokenizer.ggml.merges" in read_gguf(src).metadata
    sp = spm.SentencePieceProcessor(model_file=str(checkpoint / "tokenizer.model"))
    reader = gguf.GGUFReader(str(result.path))
    tokens, scores = _field(reader, "tokenizer.ggml.tokens"), _field(reader, "tokenizer.ggml.scores")
    special = (sp.IsControl, sp.IsUnknown, sp.IsByte, sp.IsUnused)
    merged = [i for i in range(sp.GetPieceSize()) if len(sp.IdToPiece(i)) > 1 and not any(f(i) for f in special)]
    assert len(merged) > 50
    ours = np.array([scores[i] for i in merged])
    theirs = np.array([sp.GetScore(i) for i in merged])
    assert all(tokens[i] == sp.IdToPiece(i) for i in merged)
    assert np.array_equal(np.argsort(-ours, kind="stable"), np.argsort(-theirs, kind="stable"))


def test_sentencepiece_scores_copied(checkpoint, tmp_path) -> None:
    """Without tokenizer.json the OFT GGUF stores SentencePiece scores; those are exported as they are."""
    ckpt = Path(shutil.copytree(checkpoint, tmp_path / "ckpt"))
    (ckpt / "tokenizer.json").unlink()
    src = write_gguf(load_policy(ckpt), tmp_path / "model.gguf", "f32")
    result = export_llm(src, tmp_path / "llm.gguf")
    md = read_gguf(src).metadata
    n = len(md["tokenizer.ggml.scores"])
    scores = _field(gguf.GGUFReader(str(result.path)), "tokenizer.ggml.scores")
    assert np.array_equal(np.float32(scores[:n]), np.float32(md["tokenizer.ggml.scores"]))


@dataclass
class _Padded:
    ggml_type: GGMLType
    data: np.ndarray
    pad_to: int


def test_padded_rows_refused_with_tensor_name(policy, tmp_path) -> None:
    name = f"{LM}layers.1.mlp.up_proj.weight"
    w = policy.model.state_dict()[name].float().numpy()
    data = encode(np.pad(w, ((0, 0), (0, 256 - w.shape[1]))), GGMLType.Q4_K)
    src = write_gguf(policy, tmp_path / "model.gguf", "f16", encoded={name: _Padded(GGMLType.Q4_K, data, 256)})
    out = tmp_path / "llm.gguf"
    with pytest.raises(LlmExportError, match="layers.1.mlp.up_proj.weight.*zero-padded"):
        export_llm(src, out)
    assert not out.exists() and list(tmp_path.iterdir()) == [src]  # nothing half-written


def test_cli(exported, tmp_path, capsys) -> None:
    src, _ = exported
    out = tmp_path / "cli.gguf"
    assert main(["export-llm", str(src.parent), "--out", str(out)]) == 0
    assert "llama, 2 layers" in capsys.readouterr().out
    assert gguf.GGUFReader(str(out)).fields["general.architecture"].contents() == "llama"
    # a llama GGUF is not an OFT model: one line, exit code 2
    assert main(["export-llm", str(out), "--out", str(tmp_path / "again.gguf")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "'llama' has no Llama backbone exporter" in err
    assert main(["export-llm", str(tmp_path / "missing"), "--out", str(tmp_path / "x.gguf")]) == 2
    assert "no such GGUF file" in capsys.readouterr().err
    assert not (tmp_path / "again.gguf").exists() and not (tmp_path / "x.gguf").exists()
