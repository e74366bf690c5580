"""The policy-aware rectified Hessian on small attention blocks, against an independent autograd."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from omnimodel.arch.openvla_oft.config import LlamaConfig
from omnimodel.arch.openvla_oft.modeling import LlamaAttention, ViTAttention, rope_cos_sin
from omnimodel.quant.hbvla.hessian import (
    HessianAccumulator,
    input_hessian,
    policy_aware_hessians,
    policy_aware_token_weights,
)

PROJ = ("q_proj", "k_proj", "v_proj", "o_proj")


def _llama_attention(seed: int = 0):
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=10, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                      num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5, rope_theta=1e4,
                      max_position_embeddings=64)
    attn = LlamaAttention(cfg).double()
    for p in attn.parameters():
        p.requires_grad_(False)  # a frozen model, as calibration sees it
    x = torch.randn(2, 7, 32, dtype=torch.float64)
    cos, sin = rope_cos_sin(torch.arange(7), cfg.head_dim, cfg.rope_theta, torch.float64)
    return cfg, attn, x, cos, sin


def _signs(w: torch.Tensor) -> torch.Tensor:
    return w.sign() * w.abs().mean(1, keepdim=True)


def _manual_llama(cfg, ws, x, cos, sin, causal):
    """An independent functional Llama attention with the projection outputs as explicit leaves."""
    b, n, _ = x.shape
    hd, nh, nkv = cfg.head_dim, cfg.num_attention_heads, cfg.num_key_value_heads
    q, k, v = (x @ ws[p].T for p in ("q_proj", "k_proj", "v_proj"))
    leaves = {p: t.detach().requires_grad_(True) for p, t in zip(("q_proj", "k_proj", "v_proj"), (q, k, v))}
    q, k, v = leaves["q_proj"], leaves["k_proj"], leaves["v_proj"]

    def rot(t):
        t1, t2 = t.chunk(2, -1)
        return torch.cat([-t2, t1], -1)

    q = q.view(b, n, nh, hd).transpose(1, 2)
    k = k.view(b, n, nkv, hd).transpose(1, 2)
    v = v.view(b, n, nkv, hd).transpose(1, 2)
    q, k = q * cos + rot(q) * sin, k * cos + rot(k) * sin
    k, v = k.repeat_interleave(nh // nkv, 1), v.repeat_interleave(nh // nkv, 1)
    o = F.scaled_dot_product_attention(q, k, v, is_causal=causal).transpose(1, 2).reshape(b, n, -1)
    return o, leaves


def test_token_weights_match_an_independent_autograd():
    cfg, attn, x, cos, sin = _llama_attention()
    binar = {p: _signs(getattr(attn, p).weight) for p in PROJ}
    res = policy_aware_token_weights(attn, lambda a: a(x, cos, sin, True), PROJ, binar)

    w_fp = {p: getattr(attn, p).weight for p in PROJ}
    with torch.no_grad():
        o_fp, _ = _manual_llama(cfg, w_fp, x, cos, sin, True)
        z = o_fp @ w_fp["o_proj"].T
    o_b, leaves = _manual_llama(cfg, binar, x, cos, sin, True)
    y_o = (o_b.detach() @ binar["o_proj"].T).requires_grad_(True)  # o_proj's output as a leaf
    loss = ((z - y_o) ** 2).sum()
    (g_o,) = torch.autograd.grad(loss, [y_o])
    g_in = g_o @ binar["o_proj"]  # chain rule through y = o W^T by hand
    g_qkv = torch.autograd.grad(o_b, [leaves[p] for p in ("q_proj", "k_proj", "v_proj")], g_in)
    want = dict(zip(("q_proj", "k_proj", "v_proj"), g_qkv, strict=True))
    want["o_proj"] = g_o
    for p in PROJ:
        d_p = getattr(attn, p).weight.shape[0]
        a = want[p].reshape(-1, d_p).norm(dim=1) / d_p
        torch.testing.assert_close(res.token_weights[p], a, rtol=1e-9, atol=1e-12)
    assert res.block_loss == pytest.approx(float(loss.detach()), rel=1e-12)
    # and the fp inputs: x for q/k/v, the full-precision attention output for o_proj
    torch.testing.assert_close(res.inputs["q_proj"], x.reshape(-1, 32))
    torch.testing.assert_close(res.inputs["o_proj"], o_fp.reshape(-1, 32))


def test_rectified_hessian_is_x_diag_a_x():
    _, attn, x, cos, sin = _llama_attention(1)
    binar = {p: _signs(getattr(attn, p).weight) for p in PROJ}
    res = policy_aware_token_weights(attn, lambda a: a(x, cos, sin, False), PROJ, binar)
    hs = res.hessians()
    for p in PROJ:
        X = res.inputs[p].numpy()
        a = res.token_weights[p].numpy()
        want = (X.T * a) @ X / a.sum()
        np.testing.assert_allclose(hs[p], want, rtol=1e-10, atol=1e-14)
        assert np.allclose(hs[p], hs[p].T) and np.linalg.eigvalsh(hs[p]).min() > -1e-10
        # a genuinely reweighted Hessian, not X X^T up to scale
        plain = X.T @ X / len(X)
        assert not np.allclose(hs[p] / np.trace(hs[p]), plain / np.trace(plain), rtol=1e-3)
    # the module is unchanged and still frozen
    assert all(not q.requires_grad for q in attn.parameters())


def test_weights_follow_where_the_error_reaches():
    """Only v_proj binarized: the error still reaches every projection's output gradient (q and k steer
    how the v error mixes); with nothing binarized there is no error and no weight."""
    _, attn, x, cos, sin = _llama_attention(2)
    binar = {"v_proj": _signs(attn.v_proj.weight)}
    res = policy_aware_token_weights(attn, lambda a: a(x, cos, sin, True), PROJ, binar)
    assert res.block_loss > 0
    assert all(float(res.token_weights[p].sum()) > 0 for p in PROJ)
    # unchanged weights everywhere: no error, no weight, and hessians() refuses to divide by zero
    res0 = policy_aware_token_weights(attn, lambda a: a(x, cos, sin, True), PROJ,
                                      {"v_proj": attn.v_proj.weight.clone()})
    assert res0.block_loss == 0 and float(res0.token_weights["v_proj"].abs().sum()) == 0
    with pytest.raises(ValueError, match="every token weight is zero"):
        res0.hessians()


def test_fused_qkv_vit_block():
    torch.manual_seed(3)
    attn = ViTAttention(24, 3).double()
    x = torch.randn(1, 9, 24, dtype=torch.float64)
    binar = {"qkv": _signs(attn.qkv.weight), "proj": _signs(attn.proj.weight)}
    hs = policy_aware_hessians(attn, lambda a: a(x), ("qkv", "proj"), binar)
    assert set(hs) == {"qkv", "proj"} and hs["qkv"].shape == (24, 24)


def test_bad_arguments_are_named():
    _, attn, x, cos, sin = _llama_attention()
    run = lambda a: a(x, cos, sin, True)  # noqa: E731
    with pytest.raises(ValueError, match="no submodule 'wq'"):
        policy_aware_token_weights(attn, run, ("wq",), {})
    with pytest.raises(ValueError, match="binarized 'q_proj' has shape"):
        policy_aware_token_weights(attn, run, ("q_proj",), {"q_proj": torch.zeros(3, 3)})
    with pytest.raises(ValueError, match="not among the projections"):
        policy_aware_token_weights(attn, run, ("q_proj",), {"k_proj": attn.k_proj.weight})
    with pytest.raises(ValueError, match=r"did not call the projections \['q_proj'\]"):
        policy_aware_token_weights(attn, lambda a: a.o_proj(x), ("q_proj", "o_proj"), {})


def test_accumulator_and_plain_hessian():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((5, 4)), rng.standard_normal((3, 4))
    acc = HessianAccumulator()
    acc.add(a)
    acc.add(b)
    X = np.concatenate([a, b])
    np.testing.assert_allclose(acc.hessian(), X.T @ X / 8)
    np.testing.assert_allclose(input_hessian(a, np.arange(5.0)), (a.T * np.arange(5.0)) @ a)
    with pytest.raises(ValueError, match="3 token weights for 5 tokens"):
        input_hessian(a, np.ones(3))
