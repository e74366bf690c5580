"""The real-width checkpoint specs and the pretrained-Llama importer they can draw on."""

from __future__ import annotations

import json

import numpy as np
import pytest

from omnimodel.arch.openvla_oft import load_policy, real_width_spec, write_miniature
from omnimodel.arch.openvla_oft.miniature import REAL_LLMS, REAL_TOWERS
from omnimodel.arch.pretrained_llama import PretrainedError, _unpermute_rope_rows, read_llama_gguf


def _llamacpp_permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's converter's row order for q/k, written from its description: per head, the halves
    (i, i + hd/2) become neighbours (2i, 2i + 1)."""
    hd = w.shape[0] // n_head
    out = np.empty_like(w)
    for h in range(n_head):
        for i in range(hd // 2):
            out[h * hd + 2 * i] = w[h * hd + i]
            out[h * hd + 2 * i + 1] = w[h * hd + hd // 2 + i]
    return out


def test_unpermute_inverts_the_converters_rope_interleave():
    rng = np.random.default_rng(0)
    for n_head, hd in [(9, 64), (3, 64), (2, 8)]:
        w = rng.standard_normal((n_head * hd, 16)).astype(np.float32)
        np.testing.assert_array_equal(_unpermute_rope_rows(_llamacpp_permute(w, n_head), n_head), w)


def _tiny_llama_gguf(path, *, layers=2, d=64, ff=96, heads=4, kv=2, vocab=80, arch="llama"):
    import gguf

    rng = np.random.default_rng(1)
    hd = d // heads
    w = gguf.GGUFWriter(str(path), arch)
    w.add_block_count(layers)
    w.add_embedding_length(d)
    w.add_feed_forward_length(ff)
    w.add_head_count(heads)
    w.add_head_count_kv(kv)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(1e5)
    w.add_vocab_size(vocab)
    hf = {"embed_tokens.weight": rng.standard_normal((vocab, d)).astype(np.float32)}
    w.add_tensor("token_embd.weight", hf["embed_tokens.weight"])
    for i in range(layers):
        shapes = {"attn_q": (heads * hd, d), "attn_k": (kv * hd, d), "attn_v": (kv * hd, d), "attn_output": (d, d),
                  "ffn_gate": (ff, d), "ffn_up": (ff, d), "ffn_down": (d, ff)}
        for name, shape in shapes.items():
            t = rng.standard_normal(shape).astype(np.float32)
            stored = _llamacpp_permute(t, heads if name == "attn_q" else kv) if name in ("attn_q", "attn_k") else t
            w.add_tensor(f"blk.{i}.{name}.weight", stored)
            hf[f"{i}.{name}"] = t
        for name in ("attn_norm", "ffn_norm"):
            w.add_tensor(f"blk.{i}.{name}.weight", np.ones(d, np.float32))
    w.add_tensor("output_norm.weight", np.ones(d, np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return hf


def test_read_llama_gguf_restores_hf_names_and_row_order(tmp_path):
    hf = _tiny_llama_gguf(tmp_path / "tiny.gguf")
    hp, weights = read_llama_gguf(tmp_path / "tiny.gguf", layers=1)
    assert (hp.hidden_size, hp.num_attention_heads, hp.num_key_value_heads, hp.num_hidden_layers) == (64, 4, 2, 2)
    assert hp.rms_norm_eps == pytest.approx(1e-5) and hp.rope_theta == 1e5
    assert "layers.1.self_attn.q_proj.weight" not in weights  # only the layers asked for
    np.testing.assert_array_equal(weights["layers.0.self_attn.q_proj.weight"], hf["0.attn_q"])
    np.testing.assert_array_equal(weights["layers.0.self_attn.k_proj.weight"], hf["0.attn_k"])
    np.testing.assert_array_equal(weights["layers.0.mlp.down_proj.weight"], hf["0.ffn_down"])
    np.testing.assert_array_equal(weights["embed_tokens.weight"], hf["embed_tokens.weight"])
    assert set(weights) >= {"norm.weight", "layers.0.input_layernorm.weight", "layers.0.post_attention_layernorm.weight"}


def test_read_llama_gguf_refuses_other_architectures_and_bad_files(tmp_path):
    _tiny_llama_gguf(tmp_path / "gpt.gguf", arch="gpt2")
    with pytest.raises(PretrainedError, match="not 'llama'"):
        read_llama_gguf(tmp_path / "gpt.gguf")
    (tmp_path / "junk.gguf").write_bytes(b"not a gguf at all")
    with pytest.raises(PretrainedError, match="not a readable GGUF"):
        read_llama_gguf(tmp_path / "junk.gguf")


def test_real_width_spec_has_the_released_widths():
    spec = real_width_spec()
    assert spec.image_size == 224
    assert spec.dino == REAL_TOWERS["dino"] and spec.siglip == REAL_TOWERS["siglip"]
    assert (spec.llm_hidden, spec.llm_layers, spec.llm_heads, spec.llm_kv_heads) == (576, 30, 9, 3)
    slice7b = real_width_spec("llama2-7b", vision_depth=3, llm_layers=2)
    assert (slice7b.llm_hidden, slice7b.llm_intermediate, slice7b.llm_layers) == (4096, 11008, 2)
    assert slice7b.dino["depth"] == 3 and slice7b.dino["embed_dim"] == 1024
    with pytest.raises(ValueError, match="unknown real-width LLM"):
        real_width_spec("gpt-5")
    with pytest.raises(ValueError, match="smollm2 backbone only"):
        real_width_spec("llama2-7b", pretrained=True)
    assert set(REAL_LLMS) == {"smollm2", "llama2-7b"}


def test_real_width_checkpoint_loads_with_gqa_eps_theta_and_outliers(tmp_path):
    spec = real_width_spec(vision_depth=2, llm_layers=1, outlier_channels=4)
    ckpt = write_miniature(tmp_path / "rw", spec)
    text = json.loads((ckpt / "config.json").read_text())["text_config"]
    assert (text["num_key_value_heads"], text["rms_norm_eps"], text["rope_theta"]) == (3, 1e-5, 1e5)
    policy = load_policy(ckpt)
    cfg = policy.config
    assert cfg.vision.image_size == 224
    assert cfg.vision.featurizer.embed_dim == 1024 and cfg.vision.fused_featurizer.embed_dim == 1152
    assert (cfg.llm.num_key_value_heads, cfg.llm.rms_norm_eps, cfg.llm.rope_theta) == (3, 1e-5, 1e5)
    norm = policy.model.language_model.model.layers[0].input_layernorm.weight.detach().float().abs()
    # 4 channels scaled by 30 stand far above the others (random norms are 1 +- 0.1)
    top = norm.topk(5).values
    assert (top[:4] > 20).all() and top[4] < 2
