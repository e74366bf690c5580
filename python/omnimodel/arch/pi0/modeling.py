"""Plain-PyTorch reference of pi0 / pi0.5 (openpi's ``PI0Pytorch``, as LeRobot 0.6.1 runs it).

Module and parameter names are the openpi-PyTorch state-dict keys (LeRobot adds ``model.`` in front),
so a checkpoint loads strictly and every piece is a named submodule for forward hooks:

    paligemma_with_expert.paligemma.model.vision_tower.vision_model   SigLIP (HF layout), once per camera
        .embeddings.{patch_embedding, position_embedding}  .encoder.layers.{i}  .post_layernorm
    paligemma_with_expert.paligemma.model.multi_modal_projector.linear   SigLIP width -> Gemma width
    paligemma_with_expert.paligemma.model.language_model               Gemma-2B: embed_tokens (x sqrt(width)),
        .layers.{i}.{input_layernorm, self_attn.{q,k,v,o}_proj, post_attention_layernorm, mlp}, .norm
    paligemma_with_expert.gemma_expert.model                            action expert: .layers.{i}, .norm
    action_in_proj / action_out_proj                                    padded action <-> expert width
    pi0:   state_proj, action_time_mlp_in, action_time_mlp_out
    pi0.5: time_mlp_in, time_mlp_out (their output is the adaRMS condition)

Intermediates that no upstream module produces get an identity ``Probe`` so a hook can see them:
``prefix_embeds`` (images then text, what the Gemma stack reads), per denoising step ``time_embedding``
(sincos), ``adarms_cond`` (pi0.5), ``suffix_embeds``, and ``noisy_actions.{i}`` / ``velocity.{i}`` (the
sample fed to step i and the velocity it predicts), then ``denoised_actions`` (normalised, padded).
Modules called once per denoising step fire once per step (step order).

Computation (openpi ``pi0.py`` / LeRobot ``modeling_pi0{,5}.py``, ``pi_gemma.py``):

* Gemma layer: ``h = x + g1 * attn(norm1(x)); y = h + g2 * mlp(norm2(h))``. RMSNorm in float32:
  ``x * rsqrt(mean(x^2) + 1e-6) * (1 + w)``; the pi0.5 expert's norms are adaptive: ``dense(cond)``
  -> (scale, shift, gate), ``normed * (1 + scale) + shift`` and the gate multiplies the residual branch
  (g = 1 elsewhere). MLP ``down(gelu_tanh(gate(x)) * up(x))``. Attention: RoPE (theta 1e4, rotate-half),
  MQA, scale ``head_dim^-0.5``, additive mask (-2.3819763e38), softmax in float32.
* Joint attention: both experts' Q/K/V are concatenated along the sequence (prefix first), attention
  runs over the whole sequence with the prefix-LM mask, each expert takes its rows back through its own
  o_proj and MLP. ``make_attention_mask``: token i sees j iff cumsum(ar)[j] <= cumsum(ar)[i] and both are
  valid; positions are cumsum(valid) - 1.
* Inference: the prefix runs once through the PaliGemma stack, keeping each layer's post-RoPE K/V; each
  of ``num_steps`` Euler steps runs only the suffix through the expert against that cache, from t = 1
  (noise) with dt = -1/num_steps: ``x <- x + dt * v(x, t)``.

dtype: float32 (LeRobot ``dtype="float32"``) or float64 everywhere; ``apply_precision("bfloat16")``
reproduces LeRobot's mixed bf16 (the two Gemma stacks' matrices and embeddings in bf16, SigLIP, projector
and every norm in float32, the action/time projections outside the stacks in float32, and -- a side
effect of its ``.to(bfloat16)`` on transformers' buffers -- RoPE inverse frequencies rounded to bf16).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .config import GemmaConfig, Pi0Config, SiglipConfig

MASK_VALUE = -2.3819763e38  # openpi / LeRobot OPENPI_ATTENTION_MASK_VALUE


class Probe(nn.Module):
    """Identity with a name: makes a value that no upstream module returns visible to forward hooks."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def _stat_dtype(x: torch.Tensor) -> torch.dtype:
    """Norm statistics in float32 as upstream, but float64 runs stay float64."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


# ==================================================================================================
# SigLIP vision tower (transformers SiglipVisionModel, PaliGemma's: no pooling head)
# ==================================================================================================


class SiglipEmbeddings(nn.Module):
    def __init__(self, cfg: SiglipConfig) -> None:
        super().__init__()
        self.patch_embedding = nn.Conv2d(3, cfg.hidden_size, kernel_size=cfg.patch_size, stride=cfg.patch_size)
        self.position_embedding = nn.Embedding(cfg.num_patches, cfg.hidden_size)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = self.patch_embedding(pixels.to(self.patch_embedding.weight.dtype)).flatten(2).transpose(1, 2)
        # looked up through the module (as HF does with position_ids), so its forward hooks see the use
        ids = torch.arange(x.shape[1], device=x.device)
        return x + self.position_embedding(ids)[None]


class SiglipAttention(nn.Module):
    def __init__(self, cfg: SiglipConfig) -> None:
        super().__init__()
        self.num_heads, self.head_dim = cfg.num_attention_heads, cfg.head_dim
        d = cfg.hidden_size
        self.q_proj, self.k_proj = nn.Linear(d, d), nn.Linear(d, d)
        self.v_proj, self.out_proj = nn.Linear(d, d), nn.Linear(d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = (p(x).view(b, n, self.num_heads, self.head_dim).transpose(1, 2) for p in
                   (self.q_proj, self.k_proj, self.v_proj))
        # transformers runs SigLIP with SDPA by default (LeRobot only switches the Gemma stacks to eager)
        out = F.scaled_dot_product_attention(q, k, v, scale=self.head_dim ** -0.5)
        return self.out_proj(out.transpose(1, 2).reshape(b, n, d))


class SiglipMLP(nn.Module):
    def __init__(self, cfg: SiglipConfig) -> None:
        super().__init__()
        self.fc1 = nn.Linear(cfg.hidden_size, cfg.intermediate_size)
        self.fc2 = nn.Linear(cfg.intermediate_size, cfg.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class SiglipEncoderLayer(nn.Module):
    def __init__(self, cfg: SiglipConfig) -> None:
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.self_attn = SiglipAttention(cfg)
        self.layer_norm2 = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.mlp = SiglipMLP(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.layer_norm1(x))
        return x + self.mlp(self.layer_norm2(x))


class SiglipEncoder(nn.Module):
    def __init__(self, cfg: SiglipConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList(SiglipEncoderLayer(cfg) for _ in range(cfg.num_hidden_layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


class SiglipVisionTransformer(nn.Module):
    def __init__(self, cfg: SiglipConfig) -> None:
        super().__init__()
        self.embeddings = SiglipEmbeddings(cfg)
        self.encoder = SiglipEncoder(cfg)
        self.post_layernorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.post_layernorm(self.encoder(self.embeddings(pixels)))


class SiglipVisionModel(nn.Module):
    def __init__(self, cfg: SiglipConfig) -> None:
        super().__init__()
        self.vision_model = SiglipVisionTransformer(cfg)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) in [-1, 1] -> (B, num_patches, width): last_hidden_state after post_layernorm."""
        return self.vision_model(pixels)


class MultiModalProjector(nn.Module):
    def __init__(self, vision_dim: int, text_dim: int) -> None:
        super().__init__()
        self.linear = nn.Linear(vision_dim, text_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)


# ==================================================================================================
# Gemma (transformers GemmaModel with LeRobot's PiGemma adaptive norms / gated residuals)
# ==================================================================================================


class ScaledEmbedding(nn.Embedding):
    """transformers 5 ``GemmaTextScaledWordEmbedding``: lookup times sqrt(width), the scale rounded to the
    weight dtype (openpi multiplies by ``sqrt(width)`` after the lookup: the same thing)."""

    def __init__(self, num: int, dim: int) -> None:
        super().__init__(num, dim)
        self.embed_scale = dim ** 0.5

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        out = super().forward(ids)
        return out * torch.tensor(self.embed_scale, dtype=self.weight.dtype, device=out.device)


class GemmaRMSNorm(nn.Module):
    """RMSNorm with (1 + weight), or the adaptive (adaRMS) variant whose scale/shift/gate come from
    ``dense(cond)``. The caller runs ``dense`` (so its output is a hookable intermediate) and passes the
    modulation in; the gate is applied by the layer."""

    def __init__(self, dim: int, eps: float, cond_dim: int | None = None) -> None:
        super().__init__()
        self.eps = eps
        self.adaptive = cond_dim is not None
        if self.adaptive:
            self.dense = nn.Linear(cond_dim, 3 * dim)
        else:
            self.weight = nn.Parameter(torch.zeros(dim))

    def modulation(self, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``dense(cond)`` split as (scale, shift, gate), each (B, 1, D)."""
        scale, shift, gate = self.dense(cond.to(self.dense.weight.dtype))[:, None, :].chunk(3, dim=-1)
        return scale, shift, gate

    def forward(self, x: torch.Tensor, scale: torch.Tensor | None = None,
                shift: torch.Tensor | None = None) -> torch.Tensor:
        sd = _stat_dtype(x)
        h = x.to(sd)
        normed = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        if self.adaptive:
            if scale is None or shift is None:
                raise ValueError("an adaptive RMSNorm needs the modulation (scale, shift) of its condition")
            return (normed * (1 + scale.to(sd)) + shift.to(sd)).to(x.dtype)
        return (normed * (1.0 + self.weight.to(sd))).to(x.dtype)


def rope_cos_sin(positions: torch.Tensor, head_dim: int, theta: float, dtype: torch.dtype,
                 freq_dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, N) integer positions -> cos, sin (B, 1, N, head_dim) in ``dtype``; angles in float32 as
    transformers computes them (float64 for float64 runs). ``freq_dtype`` rounds the inverse
    frequencies first: LeRobot's ``model.to(bfloat16)`` also casts transformers' ``inv_freq`` buffer, so
    its bf16 runs use bf16-rounded frequencies (0.1 -> 0.1001, ...)."""
    compute = torch.float64 if dtype == torch.float64 else torch.float32
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).to(compute) / head_dim))
    if freq_dtype is not None:
        inv_freq = inv_freq.to(freq_dtype).to(compute)
    freqs = positions.to(compute)[..., None] * inv_freq.to(positions.device)
    emb = torch.cat([freqs, freqs], dim=-1)[:, None]
    return emb.cos().to(dtype), emb.sin().to(dtype)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    return x * cos + _rotate_half(x) * sin


class GemmaAttention(nn.Module):
    """The projections only: the attention itself runs jointly over both experts (``joint_attention``)."""

    def __init__(self, cfg: GemmaConfig) -> None:
        super().__init__()
        self.num_heads, self.num_kv_heads, self.head_dim = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        self.q_proj = nn.Linear(cfg.width, cfg.num_heads * cfg.head_dim, bias=False)
        self.k_proj = nn.Linear(cfg.width, cfg.num_kv_heads * cfg.head_dim, bias=False)
        self.v_proj = nn.Linear(cfg.width, cfg.num_kv_heads * cfg.head_dim, bias=False)
        self.o_proj = nn.Linear(cfg.num_heads * cfg.head_dim, cfg.width, bias=False)

    def qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, N, width) -> q (B, H, N, hd), k / v (B, KV, N, hd), before RoPE."""
        b, n, _ = x.shape
        q = self.q_proj(x).view(b, n, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, n, self.num_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, n, self.num_kv_heads, self.head_dim).transpose(1, 2)
        return q, k, v


class GemmaMLP(nn.Module):
    def __init__(self, cfg: GemmaConfig) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(cfg.width, cfg.mlp_dim, bias=False)
        self.up_proj = nn.Linear(cfg.width, cfg.mlp_dim, bias=False)
        self.down_proj = nn.Linear(cfg.mlp_dim, cfg.width, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.gelu(self.gate_proj(x), approximate="tanh") * self.up_proj(x))


@dataclass
class LayerInput:
    """One expert's part of a joint layer: its normed projections and (adaRMS) gate / modulation."""

    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    gate: torch.Tensor | None  # adaRMS gate of the attention branch
    cond: torch.Tensor | None  # adaRMS condition, for the post-attention norm


class GemmaDecoderLayer(nn.Module):
    """Split at the joint attention: ``begin`` (norm + Q/K/V) before it, ``forward`` (o_proj, gated
    residual, norm, MLP, gated residual) after it, so a hook on the layer sees its output."""

    def __init__(self, cfg: GemmaConfig, adaptive: bool) -> None:
        super().__init__()
        cond = cfg.width if adaptive else None
        self.input_layernorm = GemmaRMSNorm(cfg.width, cfg.rms_norm_eps, cond)
        self.self_attn = GemmaAttention(cfg)
        self.post_attention_layernorm = GemmaRMSNorm(cfg.width, cfg.rms_norm_eps, cond)
        self.mlp = GemmaMLP(cfg)

    def begin(self, x: torch.Tensor, cond: torch.Tensor | None) -> LayerInput:
        gate = None
        if self.input_layernorm.adaptive:
            scale, shift, gate = self.input_layernorm.modulation(cond)
            h = self.input_layernorm(x, scale, shift)
        else:
            h = self.input_layernorm(x)
        q, k, v = self.self_attn.qkv(h)
        return LayerInput(q, k, v, None if gate is None else gate.to(x.dtype), cond)

    def forward(self, x: torch.Tensor, attn: torch.Tensor, li: LayerInput) -> torch.Tensor:
        y = self.self_attn.o_proj(attn.to(self.self_attn.o_proj.weight.dtype))
        h = x + (y if li.gate is None else y * li.gate)
        if self.post_attention_layernorm.adaptive:
            scale, shift, gate = self.post_attention_layernorm.modulation(li.cond)
            y = self.mlp(self.post_attention_layernorm(h, scale, shift))
            return h + y * gate.to(h.dtype)
        return h + self.mlp(self.post_attention_layernorm(h))


class GemmaModel(nn.Module):
    def __init__(self, cfg: GemmaConfig, adaptive: bool, with_embedding: bool) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed_tokens = ScaledEmbedding(cfg.vocab_size, cfg.width) if with_embedding else None
        self.layers = nn.ModuleList(GemmaDecoderLayer(cfg, adaptive) for _ in range(cfg.depth))
        self.norm = GemmaRMSNorm(cfg.width, cfg.rms_norm_eps, cfg.width if adaptive else None)

    @property
    def hidden_dtype(self) -> torch.dtype:
        """Upstream casts the stack's input to its first q_proj's dtype (bf16 under mixed precision)."""
        return self.layers[0].self_attn.q_proj.weight.dtype

    def final_norm(self, x: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        if self.norm.adaptive:
            scale, shift, _ = self.norm.modulation(cond)
            return self.norm(x, scale, shift)
        return self.norm(x)


class PaliGemmaModel(nn.Module):
    def __init__(self, cfg: Pi0Config) -> None:
        super().__init__()
        self.vision_tower = SiglipVisionModel(cfg.vision)
        self.multi_modal_projector = MultiModalProjector(cfg.vision.hidden_size, cfg.paligemma.width)
        self.language_model = GemmaModel(cfg.paligemma, adaptive=False, with_embedding=True)


class PaliGemmaForConditionalGeneration(nn.Module):
    """``lm_head`` is tied to ``embed_tokens`` and never used for actions: not a module here."""

    def __init__(self, cfg: Pi0Config) -> None:
        super().__init__()
        self.model = PaliGemmaModel(cfg)


class GemmaForCausalLM(nn.Module):
    """The action expert: no embedding (upstream sets ``embed_tokens = None``); its unused ``lm_head``
    is not a module here (the loader skips it)."""

    def __init__(self, cfg: GemmaConfig, adaptive: bool) -> None:
        super().__init__()
        self.model = GemmaModel(cfg, adaptive=adaptive, with_embedding=False)


@dataclass
class Stream:
    """One expert's tokens in a joint pass."""

    hidden: torch.Tensor  # (B, N, width) in the stack's hidden dtype
    cond: torch.Tensor | None  # adaRMS condition (B, width) or None


def joint_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Eager attention (transformers ``eager_attention_forward``): MQA via repeat, scaled scores plus the
    additive mask, softmax in float32, -> (B, N, H * hd)."""
    rep = q.shape[1] // k.shape[1]
    if rep > 1:
        k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
    scores = torch.matmul(q, k.transpose(2, 3)) * q.shape[-1] ** -0.5
    # upstream adds a float32 mask, which promotes bf16 scores to float32 before the softmax
    scores = scores + torch.where(mask[:, None], 0.0, MASK_VALUE)
    sd = _stat_dtype(scores)
    probs = F.softmax(scores, dim=-1, dtype=sd).to(q.dtype)
    out = torch.matmul(probs, v).transpose(1, 2)
    return out.reshape(out.shape[0], out.shape[1], -1)


class PaliGemmaWithExpert(nn.Module):
    def __init__(self, cfg: Pi0Config) -> None:
        super().__init__()
        self.cfg = cfg
        self.paligemma = PaliGemmaForConditionalGeneration(cfg)
        self.gemma_expert = GemmaForCausalLM(cfg.action_expert, adaptive=cfg.is_pi05)
        self.rope_freq_dtype: torch.dtype | None = None  # set by Pi0Model.apply_precision("bfloat16")

    @property
    def stacks(self) -> tuple[GemmaModel, GemmaModel]:
        return self.paligemma.model.language_model, self.gemma_expert.model

    def forward(
        self,
        streams: tuple[Stream | None, Stream | None],
        mask: torch.Tensor,
        positions: torch.Tensor,
        past_kv: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
    ) -> tuple[list[torch.Tensor | None], list[tuple[torch.Tensor, torch.Tensor]]]:
        """Run (prefix, suffix) streams -- either may be None -- through every layer with joint attention.

        ``mask`` (B, N_new, N_past + N_new) bool, ``positions`` (B, N_new) for the new tokens; ``past_kv``
        is a kept prefix cache (post-RoPE K, V per layer). Returns the final-normed outputs per stream and
        this call's post-RoPE K/V per layer (what a prefix-only call caches).
        """
        stacks = self.stacks
        active = [(i, s) for i, s in enumerate(streams) if s is not None]
        cfg = stacks[active[0][0]].cfg
        hidden = {i: s.hidden for i, s in active}
        dtype = hidden[active[0][0]].dtype
        cos, sin = rope_cos_sin(positions, cfg.head_dim, cfg.rope_theta, dtype, self.rope_freq_dtype)
        new_kv: list[tuple[torch.Tensor, torch.Tensor]] = []
        for layer_idx in range(cfg.depth):
            parts = {i: stacks[i].layers[layer_idx].begin(hidden[i], s.cond) for i, s in active}
            q = torch.cat([parts[i].q for i, _ in active], dim=2)
            k = torch.cat([parts[i].k for i, _ in active], dim=2)
            v = torch.cat([parts[i].v for i, _ in active], dim=2)
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
            new_kv.append((k, v))
            if past_kv is not None:
                pk, pv = past_kv[layer_idx]
                k, v = torch.cat([pk.to(k.dtype), k], dim=2), torch.cat([pv.to(v.dtype), v], dim=2)
            attn = joint_attention(q, k, v, mask)
            start = 0
            for i, _ in active:
                n = hidden[i].shape[1]
                hidden[i] = stacks[i].layers[layer_idx](hidden[i], attn[:, start:start + n], parts[i])
                start += n
        outs: list[torch.Tensor | None] = [None, None]
        for i, s in active:
            outs[i] = stacks[i].final_norm(hidden[i], s.cond)
        return outs, new_kv


# ==================================================================================================
# Masks, time embedding
# ==================================================================================================


def make_attention_mask(pad: torch.Tensor, ar: torch.Tensor) -> torch.Tensor:
    """big_vision ``make_attn_mask``: (B, N) valid flags and autoregressive flags -> (B, N, N) bool;
    token i sees token j iff cumsum(ar)[j] <= cumsum(ar)[i] and both are valid."""
    cum = torch.cumsum(ar.to(torch.int64), dim=1)
    return (cum[:, None, :] <= cum[:, :, None]) & (pad[:, None, :] & pad[:, :, None])


def sincos_time_embedding(t: torch.Tensor, dim: int, min_period: float, max_period: float) -> torch.Tensor:
    """openpi ``posemb_sincos``: (B,) times -> (B, dim) = [sin(2 pi t / p), cos(2 pi t / p)] with periods p
    spaced geometrically from ``min_period`` to ``max_period``; computed in float64."""
    if dim % 2:
        raise ValueError(f"time embedding width {dim} must be even")
    fraction = torch.linspace(0.0, 1.0, dim // 2, dtype=torch.float64)
    period = min_period * (max_period / min_period) ** fraction
    angle = (1.0 / period * 2 * math.pi)[None, :] * t.to(torch.float64)[:, None]
    return torch.cat([torch.sin(angle), torch.cos(angle)], dim=1)


# ==================================================================================================
# The policy network
# ==================================================================================================


@dataclass
class PrefixCache:
    """What the denoising steps need from the prefix: per-layer post-RoPE K/V and the valid mask."""

    kv: list[tuple[torch.Tensor, torch.Tensor]]
    pad: torch.Tensor  # (B, N_prefix) bool
    hidden: torch.Tensor  # (B, N_prefix, width) final-normed prefix output (upstream computes it; unused)

    @property
    def num_valid(self) -> torch.Tensor:
        return self.pad.sum(dim=1)


@dataclass
class SuffixInputs:
    embeds: torch.Tensor  # (B, suffix_len, expert width)
    pad: torch.Tensor  # (B, suffix_len)
    ar: torch.Tensor  # (B, suffix_len)
    cond: torch.Tensor | None  # pi0.5 adaRMS condition (B, expert width)


class Pi0Model(nn.Module):
    """openpi ``PI0Pytorch`` (``pi05`` switches the state token / action-time MLP for adaRMS + text state)."""

    def __init__(self, cfg: Pi0Config) -> None:
        super().__init__()
        self.cfg = cfg
        w = cfg.action_expert.width
        self.paligemma_with_expert = PaliGemmaWithExpert(cfg)
        self.action_in_proj = nn.Linear(cfg.max_action_dim, w)
        self.action_out_proj = nn.Linear(w, cfg.max_action_dim)
        if cfg.is_pi05:
            self.time_mlp_in = nn.Linear(w, w)
            self.time_mlp_out = nn.Linear(w, w)
        else:
            self.state_proj = nn.Linear(cfg.max_state_dim, w)
            self.action_time_mlp_in = nn.Linear(2 * w, w)
            self.action_time_mlp_out = nn.Linear(w, w)
        self.prefix_embeds = Probe()
        self.time_embedding = Probe()
        self.adarms_cond = Probe()
        self.suffix_embeds = Probe()
        self.noisy_actions = nn.ModuleList(Probe() for _ in range(cfg.num_inference_steps))
        self.velocity = nn.ModuleList(Probe() for _ in range(cfg.num_inference_steps))
        self.denoised_actions = Probe()

    # ---------------------------------------------------------------------------------------------
    # precision
    # ---------------------------------------------------------------------------------------------

    _KEEP_FP32 = ("vision_tower", "multi_modal_projector", "input_layernorm", "post_attention_layernorm", "model.norm")

    def apply_precision(self, precision: str) -> Pi0Model:
        """LeRobot ``to_bfloat16_for_selected_params``: "float32" / "float64" cast everything; "bfloat16"
        casts the two Gemma stacks to bf16 except the norms (adaRMS dense included), SigLIP and the
        projector; the projections outside ``paligemma_with_expert`` stay float32."""
        if precision in ("float32", "float64"):
            self.paligemma_with_expert.rope_freq_dtype = None
            return self.to(getattr(torch, precision))
        if precision != "bfloat16":
            raise ValueError(f"precision must be float32, float64 or bfloat16, got {precision!r}")
        self.to(torch.float32)
        self.paligemma_with_expert.rope_freq_dtype = torch.bfloat16
        for name, p in self.paligemma_with_expert.named_parameters():
            if not any(sel in name for sel in self._KEEP_FP32):
                p.data = p.data.to(torch.bfloat16)
        return self

    # ---------------------------------------------------------------------------------------------
    # prefix
    # ---------------------------------------------------------------------------------------------

    def embed_image(self, pixels: torch.Tensor) -> torch.Tensor:
        pg = self.paligemma_with_expert.paligemma.model
        return pg.multi_modal_projector(pg.vision_tower(pixels))

    def embed_prefix(self, images: torch.Tensor, image_mask: torch.Tensor, tokens: torch.Tensor,
                     token_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """images (B, C, 3, S, S), image_mask (B, C), tokens / token_mask (B, L) -> embeds, pad, ar.
        Images first, one camera at a time, then the (sqrt(width)-scaled) text; ar all 0."""
        embs, pads = [], []
        for c in range(images.shape[1]):
            emb = self.embed_image(images[:, c])
            embs.append(emb)
            pads.append(image_mask[:, c, None].expand(-1, emb.shape[1]))
        lang = self.paligemma_with_expert.paligemma.model.language_model.embed_tokens(tokens)
        embs.append(lang)
        pads.append(token_mask)
        # upstream concatenates float32 image features with the text embedding (type promotion)
        dtype = torch.promote_types(embs[0].dtype, lang.dtype)
        x = self.prefix_embeds(torch.cat([e.to(dtype) for e in embs], dim=1))
        pad = torch.cat(pads, dim=1)
        return x, pad, torch.zeros_like(pad)

    def compute_prefix(self, images: torch.Tensor, image_mask: torch.Tensor, tokens: torch.Tensor,
                       token_mask: torch.Tensor) -> PrefixCache:
        """Run the prefix once through the PaliGemma stack, keeping each layer's K/V."""
        x, pad, ar = self.embed_prefix(images, image_mask, tokens, token_mask)
        stack = self.paligemma_with_expert.paligemma.model.language_model
        positions = torch.cumsum(pad.to(torch.int64), dim=1) - 1
        (out, _), kv = self.paligemma_with_expert(
            (Stream(x.to(stack.hidden_dtype), None), None), make_attention_mask(pad, ar), positions
        )
        return PrefixCache(kv=kv, pad=pad, hidden=out)

    # ---------------------------------------------------------------------------------------------
    # suffix
    # ---------------------------------------------------------------------------------------------

    def embed_suffix(self, state: torch.Tensor | None, x_t: torch.Tensor, t: torch.Tensor) -> SuffixInputs:
        """pi0: [state_proj(state)] + action_time_mlp(cat(action_in_proj(x_t), time)); ar [1, 1, 0, ...].
        pi0.5: action_in_proj(x_t) only, ar [1, 0, ...]; the time MLP output conditions the adaRMS norms."""
        cfg = self.cfg
        proj_dtype = self.action_in_proj.weight.dtype
        b = x_t.shape[0]
        time = self.time_embedding(sincos_time_embedding(t, self.action_in_proj.out_features, cfg.min_period,
                                                         cfg.max_period).to(proj_dtype))
        actions = self.action_in_proj(x_t.to(proj_dtype))
        ones = torch.ones(b, cfg.chunk_size, dtype=torch.bool, device=x_t.device)
        action_ar = torch.zeros(b, cfg.chunk_size, dtype=torch.bool, device=x_t.device)
        action_ar[:, 0] = True
        if cfg.is_pi05:
            cond = self.adarms_cond(F.silu(self.time_mlp_out(F.silu(self.time_mlp_in(time)))))
            return SuffixInputs(self.suffix_embeds(actions), ones, action_ar, cond)
        if state is None:
            raise ValueError("pi0 needs the (normalised, padded) state for its state token")
        state_emb = self.state_proj(state.to(self.state_proj.weight.dtype))[:, None]
        fused = torch.cat([actions, time[:, None].expand_as(actions)], dim=2)
        action_time = self.action_time_mlp_out(F.silu(self.action_time_mlp_in(fused)))
        embeds = self.suffix_embeds(torch.cat([state_emb, action_time], dim=1))
        pad = torch.cat([torch.ones(b, 1, dtype=torch.bool, device=x_t.device), ones], dim=1)
        ar = torch.cat([torch.ones(b, 1, dtype=torch.bool, device=x_t.device), action_ar], dim=1)
        return SuffixInputs(embeds, pad, ar, None)

    def denoise_step(self, prefix: PrefixCache, state: torch.Tensor | None, x_t: torch.Tensor,
                     t: torch.Tensor) -> torch.Tensor:
        """One velocity evaluation: only the suffix runs, attending to the kept prefix K/V."""
        s = self.embed_suffix(state, x_t, t)
        b, n = s.pad.shape
        mask = torch.cat([prefix.pad[:, None, :].expand(b, n, -1), make_attention_mask(s.pad, s.ar)], dim=2)
        positions = prefix.num_valid[:, None] + torch.cumsum(s.pad.to(torch.int64), dim=1) - 1
        expert = self.paligemma_with_expert.gemma_expert.model
        (_, out), _ = self.paligemma_with_expert(
            (None, Stream(s.embeds.to(expert.hidden_dtype), s.cond)), mask, positions, past_kv=prefix.kv
        )
        out = out[:, -self.cfg.chunk_size:]
        return self.action_out_proj(out.to(self.action_out_proj.weight.dtype))

    def sample_actions(self, prefix: PrefixCache, state: torch.Tensor | None, noise: torch.Tensor,
                       num_steps: int | None = None) -> torch.Tensor:
        """Euler from t = 1 (``noise``) to t = 0; returns normalised, padded actions (B, chunk, max_action_dim)."""
        steps = self.cfg.num_inference_steps if num_steps is None else int(num_steps)
        if not 1 <= steps <= len(self.velocity):
            raise ValueError(f"num_steps must be in 1..{len(self.velocity)} (the config's num_inference_steps)")
        dt = -1.0 / steps
        x = noise
        for step in range(steps):
            t = torch.full((noise.shape[0],), 1.0 + step * dt, dtype=torch.float32, device=noise.device)
            v = self.velocity[step](self.denoise_step(prefix, state, self.noisy_actions[step](x), t))
            x = x + dt * v
        return self.denoised_actions(x)

    def forward(self, images: torch.Tensor, image_mask: torch.Tensor, tokens: torch.Tensor,
                token_mask: torch.Tensor, state: torch.Tensor | None, noise: torch.Tensor,
                num_steps: int | None = None) -> torch.Tensor:
        """Prefix once, then the denoising loop (LeRobot ``sample_actions`` with a given noise)."""
        prefix = self.compute_prefix(images, image_mask, tokens, token_mask)
        return self.sample_actions(prefix, state, noise, num_steps)

    # ---------------------------------------------------------------------------------------------
    # training objective (ActQuant's L_act)
    # ---------------------------------------------------------------------------------------------

    def flow_matching_loss(self, images: torch.Tensor, image_mask: torch.Tensor, tokens: torch.Tensor,
                           token_mask: torch.Tensor, state: torch.Tensor | None, actions: torch.Tensor,
                           noise: torch.Tensor, time: torch.Tensor) -> torch.Tensor:
        """Per-element squared error (B, chunk, max_action_dim) of the velocity at ``x_t = t noise + (1 - t)
        actions`` against ``u_t = noise - actions``: one joint pass of prefix and suffix (openpi
        ``compute_loss``; LeRobot ``forward``). ``actions`` normalised and padded to max_action_dim."""
        t = time[:, None, None]
        x_t = t * noise + (1 - t) * actions
        u_t = noise - actions
        px, ppad, par = self.embed_prefix(images, image_mask, tokens, token_mask)
        s = self.embed_suffix(state, x_t, time)
        pad, ar = torch.cat([ppad, s.pad], dim=1), torch.cat([par, s.ar], dim=1)
        positions = torch.cumsum(pad.to(torch.int64), dim=1) - 1
        pstack, estack = self.paligemma_with_expert.stacks
        (_, out), _ = self.paligemma_with_expert(
            (Stream(px.to(pstack.hidden_dtype), None), Stream(s.embeds.to(estack.hidden_dtype), s.cond)),
            make_attention_mask(pad, ar), positions,
        )
        v_t = self.action_out_proj(out[:, -self.cfg.chunk_size:].to(self.action_out_proj.weight.dtype))
        return F.mse_loss(u_t.to(v_t.dtype), v_t, reduction="none")


def unused_parameter_prefixes(cfg: Pi0Config) -> list[str]:
    """Checkpoint tensors that cannot influence the actions when the prefix runs once and only its K/V
    is kept: the PaliGemma stack's final norm and its last layer except the K/V projections (the suffix
    reads the prefix's K/V only, so the last layer's queries feed nothing but its unused output either)."""
    last = f"paligemma_with_expert.paligemma.model.language_model.layers.{cfg.paligemma.depth - 1}."
    return [
        "paligemma_with_expert.paligemma.model.language_model.norm.",
        last + "self_attn.q_proj.",
        last + "self_attn.o_proj.",
        last + "post_attention_layernorm.",
        last + "mlp.",
    ]


__all__ = [
    "MASK_VALUE",
    "Probe",
    "Pi0Model",
    "PrefixCache",
    "SuffixInputs",
    "Stream",
    "GemmaRMSNorm",
    "joint_attention",
    "make_attention_mask",
    "rope_cos_sin",
    "apply_rope",
    "sincos_time_embedding",
    "unused_parameter_prefixes",
]
