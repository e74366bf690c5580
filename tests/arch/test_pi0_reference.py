"""pi0 / pi0.5 reference against an independent derivation, step by step and end to end.

The derivation below is written from the published description (shared/reference/vla_architectures.md
section 3, openpi / LeRobot source) directly on the state-dict tensors, in float64, sharing no code
with ``omnimodel.arch.pi0.modeling``: patches by reshaping instead of a convolution, attention per
head with an explicitly enumerated mask, RoPE per frequency pair, the whole prefix + suffix sequence
recomputed at every denoising step (no K/V cache). The same facts are checked against LeRobot's own
implementation by ``benchmarks/pi0_lerobot_crosscheck.py`` (``test_pi0_lerobot.py``) where it installs.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from omnimodel.arch.pi0 import (
    Pi0MiniatureSpec,
    load_policy,
    make_attention_mask,
    random_observation,
    run_policy,
    sincos_time_embedding,
    write_miniature,
)
from omnimodel.arch.pi0.modeling import GemmaRMSNorm
from omnimodel.arch.pi0.policy import prepare_inputs

TASK = "pick up the red cube"


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module", params=["pi05", "pi0"])
def policy64(request, tmp_path_factory):
    spec = Pi0MiniatureSpec(kind=request.param, seed=3)
    path = write_miniature(tmp_path_factory.mktemp(f"{request.param}_ref"), spec)
    return spec, load_policy(path, precision="float64")


# ----------------------------------------------------------------------------------------------------
# The derivation
# ----------------------------------------------------------------------------------------------------

VT = "paligemma_with_expert.paligemma.model.vision_tower.vision_model."
LM = "paligemma_with_expert.paligemma.model.language_model."
EX = "paligemma_with_expert.gemma_expert.model."


def layer_norm(x, w, b, eps=1e-6):
    mu = x.mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(((x - mu) ** 2).mean(-1, keepdim=True) + eps) * w + b


def gelu_tanh(x):
    return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))


def rms(x, eps=1e-6):
    return x / torch.sqrt((x ** 2).mean(-1, keepdim=True) + eps)


def siglip(sd, cfg, image):
    """(3, S, S) -> (patches, D): patches in row-major order, each flattened (channel, row, col)."""
    p, d, heads = cfg.vision.patch_size, cfg.vision.hidden_size, cfg.vision.num_attention_heads
    g = image.shape[-1] // p
    patches = image.reshape(3, g, p, g, p).permute(1, 3, 0, 2, 4).reshape(g * g, 3 * p * p)
    w = sd[VT + "embeddings.patch_embedding.weight"].reshape(d, -1)
    x = patches @ w.T + sd[VT + "embeddings.patch_embedding.bias"] + sd[VT + "embeddings.position_embedding.weight"]
    hd = d // heads
    for i in range(cfg.vision.num_hidden_layers):
        pre = f"{VT}encoder.layers.{i}."
        h = layer_norm(x, sd[pre + "layer_norm1.weight"], sd[pre + "layer_norm1.bias"])
        q, k, v = (h @ sd[pre + f"self_attn.{n}_proj.weight"].T + sd[pre + f"self_attn.{n}_proj.bias"]
                   for n in "qkv")
        out = torch.cat([torch.softmax(q[:, j * hd:(j + 1) * hd] @ k[:, j * hd:(j + 1) * hd].T / math.sqrt(hd), -1)
                         @ v[:, j * hd:(j + 1) * hd] for j in range(heads)], dim=1)
        x = x + out @ sd[pre + "self_attn.out_proj.weight"].T + sd[pre + "self_attn.out_proj.bias"]
        h = layer_norm(x, sd[pre + "layer_norm2.weight"], sd[pre + "layer_norm2.bias"])
        h = gelu_tanh(h @ sd[pre + "mlp.fc1.weight"].T + sd[pre + "mlp.fc1.bias"])
        x = x + h @ sd[pre + "mlp.fc2.weight"].T + sd[pre + "mlp.fc2.bias"]
    x = layer_norm(x, sd[VT + "post_layernorm.weight"], sd[VT + "post_layernorm.bias"])
    lin = "paligemma_with_expert.paligemma.model.multi_modal_projector.linear."
    return x @ sd[lin + "weight"].T + sd[lin + "bias"]


def rules_mask(groups: list[str]) -> torch.Tensor:
    """Section 3.3 in words: the prefix ("p") attends bidirectionally within itself and never to the
    suffix; the state token ("s") sees the prefix and itself; action tokens ("a") see the prefix, the
    state and every action token."""
    allowed = {"p": {"p"}, "s": {"p", "s"}, "a": {"p", "s", "a"}}
    n = len(groups)
    return torch.tensor([[groups[j] in allowed[groups[i]] for j in range(n)] for i in range(n)])


def rope(x, pos, theta=10000.0):
    """x (N, heads, hd): pair (i, i + hd/2) rotated by pos * theta^(-2i/hd)."""
    hd = x.shape[-1]
    half = hd // 2
    out = x.clone()
    for i in range(half):
        ang = pos[:, None] * theta ** (-2 * i / hd)
        a, b = x[..., i], x[..., i + half]
        out[..., i] = a * torch.cos(ang) - b * torch.sin(ang)
        out[..., i + half] = b * torch.cos(ang) + a * torch.sin(ang)
    return out


def joint_gemma(sd, cfg, prefix, suffix, cond, groups):
    """Both experts over the concatenated sequence, layer by layer; returns the suffix's final output."""
    pc, ec = cfg.paligemma, cfg.action_expert
    heads, kv, hd = pc.num_heads, pc.num_kv_heads, pc.head_dim
    mask = rules_mask(groups)
    pos = torch.arange(len(groups), dtype=torch.float64)  # every token valid here
    n_p = prefix.shape[0]
    xs = [prefix, suffix]

    def norm(expert, x, name):
        if expert == 1 and cfg.is_pi05:
            m = cond @ sd[EX + name + ".dense.weight"].T + sd[EX + name + ".dense.bias"]
            scale, shift, gate = m.split(ec.width)
            return rms(x) * (1 + scale) + shift, gate
        base = LM if expert == 0 else EX
        return rms(x) * (1 + sd[base + name + ".weight"]), 1.0

    for layer in range(pc.depth):
        qs, ks, vs, gates = [], [], [], []
        for e, x in enumerate(xs):
            base = (LM if e == 0 else EX) + f"layers.{layer}."
            h, g = norm(e, x, f"layers.{layer}.input_layernorm")
            gates.append(g)
            qs.append((h @ sd[base + "self_attn.q_proj.weight"].T).reshape(-1, heads, hd))
            ks.append((h @ sd[base + "self_attn.k_proj.weight"].T).reshape(-1, kv, hd))
            vs.append((h @ sd[base + "self_attn.v_proj.weight"].T).reshape(-1, kv, hd))
        q, k, v = rope(torch.cat(qs), pos), rope(torch.cat(ks), pos), torch.cat(vs)
        outs = []
        for head in range(heads):
            kh = head * kv // heads
            s = q[:, head] @ k[:, kh].T / math.sqrt(hd)
            s = s.masked_fill(~mask, float("-inf"))
            outs.append(torch.softmax(s, -1) @ v[:, kh])
        attn = torch.cat(outs, dim=1)
        new = []
        for e, x in enumerate(xs):
            base = (LM if e == 0 else EX) + f"layers.{layer}."
            rows = attn[:n_p] if e == 0 else attn[n_p:]
            h = x + gates[e] * (rows @ sd[base + "self_attn.o_proj.weight"].T)
            y, g2 = norm(e, h, f"layers.{layer}.post_attention_layernorm")
            y = (gelu_tanh(y @ sd[base + "mlp.gate_proj.weight"].T) * (y @ sd[base + "mlp.up_proj.weight"].T)
                 ) @ sd[base + "mlp.down_proj.weight"].T
            new.append(h + g2 * y)
        xs = new
    out, _ = norm(1, xs[1], "norm")
    return out


def sincos(t, dim, min_p=4e-3, max_p=4.0):
    half = dim // 2
    periods = [min_p * (max_p / min_p) ** (i / (half - 1)) for i in range(half)]
    return torch.tensor([math.sin(2 * math.pi * t / p) for p in periods] + [math.cos(2 * math.pi * t / p)
                                                                              for p in periods], dtype=torch.float64)


def derived_actions(sd, cfg, images, tokens, state, noise, steps=10):
    """Images (C, 3, S, S), tokens (L,), padded normalised state (max_state_dim,) or None, noise (chunk, 32)."""
    emb = sd[LM + "embed_tokens.weight"][tokens] * math.sqrt(cfg.paligemma.width)
    prefix = torch.cat([siglip(sd, cfg, img) for img in images] + [emb])
    x, dt = noise.clone(), -1.0 / steps
    lin = lambda name, h: h @ sd[name + ".weight"].T + sd[name + ".bias"]  # noqa: E731
    silu = torch.nn.functional.silu
    for step in range(steps):
        t = float(np.float32(1.0 + step * dt))  # upstream's time is a float32 tensor
        temb = sincos(t, cfg.action_expert.width)
        acts = lin("action_in_proj", x)
        if cfg.is_pi05:
            cond = silu(lin("time_mlp_out", silu(lin("time_mlp_in", temb))))
            suffix, groups = acts, ["p"] * prefix.shape[0] + ["a"] * cfg.chunk_size
        else:
            cond = None
            fused = torch.cat([acts, temb.expand(cfg.chunk_size, -1)], dim=1)
            suffix = torch.cat([lin("state_proj", state)[None],
                                lin("action_time_mlp_out", silu(lin("action_time_mlp_in", fused)))])
            groups = ["p"] * prefix.shape[0] + ["s"] + ["a"] * cfg.chunk_size
        out = joint_gemma(sd, cfg, prefix, suffix, cond, groups)
        v = lin("action_out_proj", out[-cfg.chunk_size:])
        x = x + dt * v
    return x


# ----------------------------------------------------------------------------------------------------
# End to end
# ----------------------------------------------------------------------------------------------------


def test_reference_equals_the_derivation(policy64):
    spec, policy = policy64
    images, state = random_observation(spec, seed=2)
    out = run_policy(policy, images, TASK, state, seed=9)
    x = out.inputs
    sd = {k: v.detach() for k, v in policy.model.state_dict().items()}
    want = derived_actions(sd, policy.config, x.images[0].double(), x.tokens[0],
                           None if x.state is None else x.state[0].double(), x.noise[0].double())
    with torch.no_grad():
        got = policy.model(x.images, x.image_mask, x.tokens, x.token_mask, x.state, x.noise.double())[0]
    # float64 both sides: agreement to rounding noise, far below any real discrepancy (actions are O(1))
    assert torch.allclose(got, want, atol=1e-10, rtol=0), (got - want).abs().max()
    # what run_policy returns is that output cut to the robot's action dims (float32)
    np.testing.assert_allclose(out.normalized_actions, got[:, : spec.action_dim].numpy(), atol=1e-6, rtol=0)


def test_padding_changes_nothing(policy64):
    """Upstream pads the prompt to tokenizer_max_length with masked tokens; positions skip them."""
    spec, policy = policy64
    images, state = random_observation(spec, seed=4)
    a = run_policy(policy, images, TASK, state, seed=1)
    b = run_policy(policy, images, TASK, state, seed=1, pad_prompt=True)
    assert b.inputs.tokens.shape[1] == policy.config.tokenizer_max_length > a.inputs.tokens.shape[1]
    np.testing.assert_allclose(a.normalized_actions, b.normalized_actions, atol=1e-12, rtol=0)


def test_prefix_cache_equals_joint_pass(policy64):
    """One velocity evaluation through the kept prefix K/V equals the joint prefix+suffix pass
    (flow_matching_loss at the same x_t and t), and the loss is (v - u)^2 elementwise."""
    spec, policy = policy64
    m = policy.model
    images, state = random_observation(spec, seed=5)
    x = prepare_inputs(policy, images, TASK, state, seed=2)
    gen = torch.Generator().manual_seed(0)
    actions = torch.randn(1, spec.chunk_size, spec.max_action_dim, generator=gen, dtype=torch.float64)
    noise = x.noise.double()
    t = torch.tensor([0.3], dtype=torch.float64)
    with torch.no_grad():
        loss = m.flow_matching_loss(x.images, x.image_mask, x.tokens, x.token_mask, x.state, actions, noise, t)
        prefix = m.compute_prefix(x.images, x.image_mask, x.tokens, x.token_mask)
        x_t = t * noise + (1 - t) * actions
        v = m.denoise_step(prefix, x.state, x_t, t)
    assert torch.allclose(loss, (v - (noise - actions)) ** 2, atol=1e-10)


# ----------------------------------------------------------------------------------------------------
# Pieces
# ----------------------------------------------------------------------------------------------------


def _groups_to_pad_ar(groups: str):
    """'p'/'s'/'a'/'x' (x = padding in the prefix) -> pad, ar per openpi's embed_prefix / embed_suffix."""
    pad = torch.tensor([[g != "x" for g in groups]])
    ar, prev = [], None
    for g in groups:
        ar.append(g in "sa" and (g == "s" or prev != "a"))  # state: 1; first action: 1; other actions: 0
        prev = g
    return pad, torch.tensor([ar])


@pytest.mark.parametrize("groups", ["ppppxxs" + "a" * 4, "pppxpp" + "a" * 5, "pp" + "s" + "a" * 3])
def test_attention_mask_follows_the_rules(groups):
    pad, ar = _groups_to_pad_ar(groups)
    got = make_attention_mask(pad, ar)[0]
    valid = [g for g in groups]
    want = rules_mask([g if g != "x" else "p" for g in valid])
    keep = torch.tensor([g != "x" for g in groups])
    want = want & keep[None, :] & keep[:, None]  # padding neither sees nor is seen
    assert torch.equal(got, want)


def test_rmsnorm_one_plus_weight_and_adarms():
    torch.manual_seed(0)
    x = torch.randn(2, 5, 16, dtype=torch.float64)
    n = GemmaRMSNorm(16, 1e-6).double()
    with torch.no_grad():
        n.weight.normal_()
    assert torch.allclose(n(x), rms(x) * (1 + n.weight), atol=1e-12)
    a = GemmaRMSNorm(16, 1e-6, cond_dim=8).double()
    cond = torch.randn(2, 8, dtype=torch.float64)
    scale, shift, gate = a.modulation(cond)
    full = cond @ a.dense.weight.T + a.dense.bias
    assert torch.equal(torch.cat([scale, shift, gate], -1)[:, 0], full)  # chunk order: scale, shift, gate
    assert torch.allclose(a(x, scale, shift), rms(x) * (1 + full[:, None, :16]) + full[:, None, 16:32], atol=1e-12)


def test_time_embedding():
    t = torch.tensor([0.0, 0.37, 1.0])
    got = sincos_time_embedding(t, 32, 4e-3, 4.0)
    for i, ti in enumerate(t.tolist()):
        assert torch.allclose(got[i], sincos(ti, 32), atol=1e-12)
    assert torch.equal(got[0, :16], torch.zeros(16, dtype=got.dtype))
    assert torch.equal(got[0, 16:], torch.ones(16, dtype=got.dtype))


def test_one_euler_step_and_step_intermediates(policy64):
    """num_steps=1 gives noise - v(noise, t=1); with 10 steps every step's input and velocity are
    visible through the named probes and chain as x_{i+1} = x_i - v_i / 10."""
    spec, policy = policy64
    m = policy.model
    images, state = random_observation(spec, seed=6)
    x = prepare_inputs(policy, images, TASK, state, seed=3)
    with torch.no_grad():
        prefix = m.compute_prefix(x.images, x.image_mask, x.tokens, x.token_mask)
        v1 = m.denoise_step(prefix, x.state, x.noise.double(), torch.ones(1))
        one = m.sample_actions(prefix, x.state, x.noise.double(), num_steps=1)
        assert torch.allclose(one, x.noise.double() - v1, atol=1e-12)
        seen: dict[str, torch.Tensor] = {}
        hooks = [mod.register_forward_hook(lambda _m, _i, o, n=n: seen.__setitem__(n, o.clone()))
                 for n, mod in m.named_modules() if n.startswith(("velocity.", "noisy_actions.", "denoised_actions"))]
        final = m.sample_actions(prefix, x.state, x.noise.double())
        for h in hooks:
            h.remove()
    assert torch.equal(seen["noisy_actions.0"], x.noise.double())
    for i in range(9):
        assert torch.allclose(seen[f"noisy_actions.{i + 1}"], seen[f"noisy_actions.{i}"] - 0.1 * seen[f"velocity.{i}"],
                              atol=1e-12)
    assert torch.allclose(final, seen["noisy_actions.9"] - 0.1 * seen["velocity.9"], atol=1e-12)
    assert torch.equal(seen["denoised_actions"], final)


def test_named_intermediates_fire(policy64):
    """Every reference module a runtime must reproduce is reachable by name through forward hooks."""
    spec, policy = policy64
    calls: dict[str, int] = {}
    hooks = [mod.register_forward_hook(lambda _m, _i, _o, n=n: calls.__setitem__(n, calls.get(n, 0) + 1))
             for n, mod in policy.model.named_modules() if n]
    images, state = random_observation(spec, seed=7)
    run_policy(policy, images, TASK, state)
    for h in hooks:
        h.remove()
    cams, steps = len(spec.camera_keys), spec.num_inference_steps
    assert calls["paligemma_with_expert.paligemma.model.vision_tower"] == cams
    assert calls["paligemma_with_expert.paligemma.model.language_model.layers.1"] == 1  # prefix once
    assert calls["paligemma_with_expert.gemma_expert.model.layers.1"] == steps  # suffix per step
    assert calls["prefix_embeds"] == 1 and calls["suffix_embeds"] == steps and calls["time_embedding"] == steps
    assert all(calls[f"velocity.{i}"] == 1 for i in range(steps))
    expert_norm = "paligemma_with_expert.gemma_expert.model.layers.0.input_layernorm"
    if policy.config.is_pi05:
        assert calls["adarms_cond"] == steps and calls[expert_norm + ".dense"] == steps
    else:
        assert "adarms_cond" not in calls and calls["action_time_mlp_out"] == steps


@pytest.mark.parametrize("fault", ["erf_gelu", "no_one_plus_w", "no_sqrt_scale", "causal_suffix"])
def test_the_derivation_distinguishes_faults(policy64, fault, monkeypatch):
    """The comparison above would catch the usual porting mistakes: each one moves the actions."""
    spec, policy = policy64
    images, state = random_observation(spec, seed=8)
    base = run_policy(policy, images, TASK, state, seed=2).normalized_actions
    import omnimodel.arch.pi0.modeling as mod

    if fault == "erf_gelu":
        exact = torch.nn.functional.gelu
        monkeypatch.setattr(mod.F, "gelu", lambda x, approximate="none": exact(x))
    elif fault == "no_one_plus_w":
        monkeypatch.setattr(mod.GemmaRMSNorm, "forward", lambda self, x, scale=None, shift=None: (
            rms(x) * (self.weight if not self.adaptive else 1 + scale) + (0 if shift is None else shift)))
    elif fault == "no_sqrt_scale":
        monkeypatch.setattr(mod.ScaledEmbedding, "forward", lambda self, ids: torch.nn.Embedding.forward(self, ids))
    else:
        real = mod.make_attention_mask
        monkeypatch.setattr(mod, "make_attention_mask",
                            lambda pad, ar: real(pad, torch.where(pad.sum(1, keepdim=True) <= spec.chunk_size + 1,
                                                                  torch.ones_like(ar), ar)))
    faulty = run_policy(policy, images, TASK, state, seed=2).normalized_actions
    assert np.abs(faulty - base).max() > 1e-4


def test_seed_determinism(policy64):
    spec, policy = policy64
    images, state = random_observation(spec, seed=9)
    a = run_policy(policy, images, TASK, state, seed=42).actions
    b = run_policy(policy, images, TASK, state, seed=42).actions
    c = run_policy(policy, images, TASK, state, seed=43).actions
    assert np.array_equal(a, b) and not np.allclose(a, c)


def test_miniature_is_deterministic(tmp_path: Path):
    spec = Pi0MiniatureSpec(kind="pi05", seed=5, vision=dict(hidden_size=16, num_hidden_layers=1,
                                                            num_attention_heads=2, intermediate_size=32,
                                                            patch_size=14))
    a, b = write_miniature(tmp_path / "a", spec), write_miniature(tmp_path / "b", spec)
    for name in ("model.safetensors", "config.json", "tokenizer.model",
                 "policy_postprocessor_step_0_unnormalizer_processor.safetensors"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
