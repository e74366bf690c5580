"""Plain-PyTorch reference of the OpenVLA-OFT forward pass (L1-regression head, optional proprio).

Module and parameter names reproduce the real checkpoint's state-dict keys (timm ViTs with Prismatic's
``ls*.scale_factor`` rename, HF Llama, upstream action head / proprio projector), so a checkpoint loads
with ``load_state_dict(strict=True)`` and every block is a named submodule for forward hooks:

    vision_backbone.featurizer.blocks.{i}          DINOv2 ViT-L/14 + 4 registers (timm id 0)
    vision_backbone.fused_featurizer.blocks.{i}    SigLIP So400m/14 (timm id 1)
    projector                                      fused GELU MLP, vision -> LLM width
    proprio_projector                              proprio vector -> one LLM token
    language_model.model                           input: the assembled embedding sequence
    language_model.model.layers.{i}                Llama decoder layers (bidirectional attention)
    language_model.model.norm                      final RMSNorm; its output is what the head reads
    action_head                                    MLPResNet over the action-slot hidden states

Sequence fed to the LLM (upstream ``predict_action``):

    [BOS] [patches image 0] ... [patches image N-1] [proprio] [prompt tokens ... "▁"] [A zeroed slots] [EOS]

A = chunk * action_dim. The head reads ``hidden[-1]`` (the *normed* final hidden state, as HF's
``output_hidden_states`` returns it) at the A positions *one before* each action slot -- upstream
slices ``[NUM_PATCHES + NUM_PROMPT_TOKENS : ... + A]``, the usual next-token alignment that training
also uses (``last_hidden_states[:, num_patches:-1]`` against ``labels[:, 1:]``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .config import (
    ActionHeadConfig,
    LlamaConfig,
    OpenVLAOFTConfig,
    ProjectorConfig,
    ProprioProjectorConfig,
    VisionBackboneConfig,
    ViTConfig,
)

# ==================================================================================================
# Vision: timm VisionTransformer subset (names as timm 0.9.x)
# ==================================================================================================


class PatchEmbed(nn.Module):
    def __init__(self, patch_size: int, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, embed_dim, kernel_size=patch_size, stride=patch_size, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)  # (B, N, D), row-major patch order


# A reference that emulates a runtime's attention numerics (omnimodel.validate) sets an attention's
# ``qkv_rounding``: q, k, v (B, heads, tokens, head_dim; after RoPE) -> what the runtime's attention
# multiplies, e.g. rounded to F16 for a flash-attention kernel with F16 K/V. None: exact.
QKVRounding = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


class ViTAttention(nn.Module):
    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim, bias=True)
        self.qkv_rounding: QKVRounding | None = None  # see QKVRounding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        if self.qkv_rounding is not None:
            q, k, v = self.qkv_rounding(q, k, v)
        out = F.scaled_dot_product_attention(q, k, v)  # scale = head_dim ** -0.5, no mask
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim, bias=True)
        self.act = nn.GELU()  # exact (erf) GELU: timm's default act_layer
        self.fc2 = nn.Linear(hidden_dim, dim, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class LayerScale(nn.Module):
    """timm LayerScale; Prismatic renames ``gamma`` -> ``scale_factor`` because HF mangles ``gamma``."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.scale_factor = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale_factor


class ViTBlock(nn.Module):
    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.embed_dim, eps=cfg.layer_norm_eps)
        self.attn = ViTAttention(cfg.embed_dim, cfg.num_heads)
        self.ls1 = LayerScale(cfg.embed_dim) if cfg.layer_scale else nn.Identity()
        self.norm2 = nn.LayerNorm(cfg.embed_dim, eps=cfg.layer_norm_eps)
        self.mlp = Mlp(cfg.embed_dim, cfg.mlp_hidden_dim)
        self.ls2 = LayerScale(cfg.embed_dim) if cfg.layer_scale else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class AttentionPoolLatent(nn.Module):
    """SigLIP's MAP head. Present in the checkpoint (so it must load) but OFT never calls it."""

    def __init__(self, dim: int, num_heads: int, mlp_hidden_dim: int, eps: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.latent = nn.Parameter(torch.zeros(1, 1, dim))
        self.q = nn.Linear(dim, dim, bias=True)
        self.kv = nn.Linear(dim, dim * 2, bias=True)
        self.proj = nn.Linear(dim, dim, bias=True)
        self.norm = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, mlp_hidden_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        hd = c // self.num_heads
        q = self.q(self.latent.expand(b, -1, -1)).reshape(b, 1, self.num_heads, hd).transpose(1, 2)
        k, v = self.kv(x).reshape(b, n, 2, self.num_heads, hd).permute(2, 0, 3, 1, 4).unbind(0)
        out = self.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, 1, c))
        out = out + self.mlp(self.norm(out))
        return out[:, 0]


class VisionTransformer(nn.Module):
    """timm ViT whose ``forward`` is Prismatic's patched one: second-to-last block output, patches only."""

    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.embed_dim
        self.patch_embed = PatchEmbed(cfg.patch_size, d)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d)) if cfg.class_token else None
        self.reg_token = nn.Parameter(torch.zeros(1, cfg.reg_tokens, d)) if cfg.reg_tokens else None
        pos_len = cfg.num_patches + (0 if cfg.no_embed_class else cfg.num_prefix_tokens)
        self.pos_embed = nn.Parameter(torch.zeros(1, pos_len, d))
        self.blocks = nn.ModuleList(ViTBlock(cfg) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(d, eps=cfg.layer_norm_eps)  # unused by OFT (no final norm)
        self.attn_pool = (
            AttentionPoolLatent(d, cfg.num_heads, cfg.mlp_hidden_dim, cfg.layer_norm_eps) if cfg.attn_pool else None
        )

    def _prefix_tokens(self, batch: int) -> list[torch.Tensor]:
        tokens = []
        if self.cls_token is not None:
            tokens.append(self.cls_token.expand(batch, -1, -1))
        if self.reg_token is not None:
            tokens.append(self.reg_token.expand(batch, -1, -1))
        return tokens

    def embed(self, pixels: torch.Tensor) -> torch.Tensor:
        """Patch embedding + position embedding + [cls, reg...] prefix (timm ``_pos_embed``)."""
        x = self.patch_embed(pixels)
        prefix = self._prefix_tokens(x.shape[0])
        if self.cfg.no_embed_class:
            x = x + self.pos_embed
            return torch.cat(prefix + [x], dim=1) if prefix else x
        x = torch.cat(prefix + [x], dim=1) if prefix else x
        return x + self.pos_embed

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = self.embed(pixels)
        # timm runs every block and keeps block depth-2's output; the last block cannot affect the result,
        # so we stop early (its forward hooks therefore never fire).
        for block in self.blocks[: self.cfg.feature_block_index + 1]:
            x = block(x)
        return x[:, self.cfg.num_prefix_tokens :]


class PrismaticVisionBackbone(nn.Module):
    def __init__(self, cfg: VisionBackboneConfig, num_images: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.num_images = num_images
        self.featurizer = VisionTransformer(cfg.featurizer)
        self.fused_featurizer = VisionTransformer(cfg.fused_featurizer)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, 6*num_images, H, W) -> (B, num_patches*num_images, D_dino + D_siglip).

        Each image is 6 channels: 0-2 DINOv2-normalised, 3-5 SigLIP-normalised. Features are
        concatenated on channels per image, then images along the sequence, in input order.
        """
        expected = 6 * self.num_images
        if pixel_values.ndim != 4 or pixel_values.shape[1] != expected:
            raise ValueError(
                f"pixel_values must be (B, {expected}, H, W) for {self.num_images} image(s), "
                f"got {tuple(pixel_values.shape)}"
            )
        per_image = []
        for img in torch.split(pixel_values, 6, dim=1):
            dino, siglip = torch.split(img, [3, 3], dim=1)
            per_image.append(torch.cat([self.featurizer(dino), self.fused_featurizer(siglip)], dim=2))
        return torch.cat(per_image, dim=1)


class PrismaticProjector(nn.Module):
    def __init__(self, cfg: ProjectorConfig) -> None:
        super().__init__()
        self.fc1 = nn.Linear(cfg.vision_dim, cfg.hidden_dim, bias=True)
        self.act_fn1 = nn.GELU()
        self.fc2 = nn.Linear(cfg.hidden_dim, cfg.llm_dim, bias=True)
        self.act_fn2 = nn.GELU()
        self.fc3 = nn.Linear(cfg.llm_dim, cfg.llm_dim, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc3(self.act_fn2(self.fc2(self.act_fn1(self.fc1(x)))))


# ==================================================================================================
# Llama-2 (HF transformers 4.40.1 numerics; attention made bidirectional as in the OFT fork)
# ==================================================================================================


class LlamaRMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # HF upcasts half types to fp32 for the statistics; fp64 (a high-precision reference run) stays fp64.
        dtype = x.dtype
        h = x if dtype == torch.float64 else x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(dtype)


def rope_cos_sin(
    positions: torch.Tensor, head_dim: int, theta: float, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """HF LlamaRotaryEmbedding: half-split ("rotate_half") layout, angles in fp32 (fp64 for fp64 runs)."""
    compute = torch.float64 if dtype == torch.float64 else torch.float32
    steps = torch.arange(0, head_dim, 2, dtype=torch.int64, device=positions.device).to(compute)
    inv_freq = 1.0 / (theta ** (steps / head_dim))
    freqs = positions.to(compute)[:, None] * inv_freq[None, :]
    emb = torch.cat([freqs, freqs], dim=-1)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


class LlamaAttention(nn.Module):
    def __init__(self, cfg: LlamaConfig) -> None:
        super().__init__()
        self.num_heads = cfg.num_attention_heads
        self.num_kv_heads = cfg.num_key_value_heads
        self.head_dim = cfg.head_dim
        d = cfg.hidden_size
        self.q_proj = nn.Linear(d, self.num_heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(d, self.num_kv_heads * self.head_dim, bias=False)
        self.v_proj = nn.Linear(d, self.num_kv_heads * self.head_dim, bias=False)
        self.o_proj = nn.Linear(self.num_heads * self.head_dim, d, bias=False)
        self.qkv_rounding: QKVRounding | None = None  # see QKVRounding

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, causal: bool) -> torch.Tensor:
        b, n, _ = x.shape
        q = self.q_proj(x).view(b, n, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, n, self.num_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, n, self.num_kv_heads, self.head_dim).transpose(1, 2)
        q = q * cos + _rotate_half(q) * sin
        k = k * cos + _rotate_half(k) * sin
        if self.qkv_rounding is not None:
            q, k, v = self.qkv_rounding(q, k, v)
        if self.num_kv_heads != self.num_heads:
            rep = self.num_heads // self.num_kv_heads
            k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        return self.o_proj(out.transpose(1, 2).reshape(b, n, -1))


class LlamaMLP(nn.Module):
    def __init__(self, cfg: LlamaConfig) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.up_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class LlamaDecoderLayer(nn.Module):
    def __init__(self, cfg: LlamaConfig) -> None:
        super().__init__()
        self.input_layernorm = LlamaRMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = LlamaAttention(cfg)
        self.post_attention_layernorm = LlamaRMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = LlamaMLP(cfg)
        self.causal = False  # set by LlamaModel

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, self.causal)
        return x + self.mlp(self.post_attention_layernorm(x))


class LlamaModel(nn.Module):
    def __init__(self, cfg: LlamaConfig, causal: bool = False) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(LlamaDecoderLayer(cfg) for _ in range(cfg.num_hidden_layers))
        self.norm = LlamaRMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.set_causal(causal)

    def set_causal(self, causal: bool) -> None:
        """OFT runs with full bidirectional attention over the whole sequence (moojink's transformers fork
        passes no mask and ``is_causal=False``; the maintainer confirms image and text tokens are
        bidirectional too). ``causal=True`` gives the plain OpenVLA/Llama behaviour, for tests."""
        self.causal = causal
        for layer in self.layers:
            layer.causal = causal

    def forward(self, inputs_embeds: torch.Tensor) -> torch.Tensor:
        """(B, S, D) embeddings -> (B, S, D) final-normed hidden states (HF ``hidden_states[-1]``)."""
        positions = torch.arange(inputs_embeds.shape[1], device=inputs_embeds.device)
        cos, sin = rope_cos_sin(positions, self.cfg.head_dim, self.cfg.rope_theta, inputs_embeds.dtype)
        x = inputs_embeds
        for layer in self.layers:
            x = layer(x, cos, sin)
        return self.norm(x)


class LlamaForCausalLM(nn.Module):
    """Holds ``model`` and the (untied) ``lm_head``; the L1-regression path never uses the LM head."""

    def __init__(self, cfg: LlamaConfig) -> None:
        super().__init__()
        self.model = LlamaModel(cfg)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)


# ==================================================================================================
# OFT components: action head and proprio projector (prismatic/models/{action_heads,projectors}.py)
# ==================================================================================================


class MLPResNetBlock(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.ffn = nn.Sequential(nn.LayerNorm(dim, eps=eps), nn.Linear(dim, dim), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.ffn(x)


class MLPResNet(nn.Module):
    def __init__(self, num_blocks: int, input_dim: int, hidden_dim: int, output_dim: int, eps: float) -> None:
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(input_dim, eps=eps)
        self.fc1 = nn.Linear(input_dim, hidden_dim)
        self.relu = nn.ReLU()
        self.mlp_resnet_blocks = nn.ModuleList(MLPResNetBlock(hidden_dim, eps) for _ in range(num_blocks))
        self.layer_norm2 = nn.LayerNorm(hidden_dim, eps=eps)
        self.fc2 = nn.Linear(hidden_dim, output_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.fc1(self.layer_norm1(x)))
        for block in self.mlp_resnet_blocks:
            x = block(x)
        return self.fc2(self.layer_norm2(x))


class L1RegressionActionHead(nn.Module):
    def __init__(self, cfg: ActionHeadConfig, num_actions_chunk: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.num_actions_chunk = num_actions_chunk
        self.model = MLPResNet(cfg.num_blocks, cfg.input_dim, cfg.hidden_dim, cfg.action_dim, cfg.layer_norm_eps)

    def forward(self, action_hidden_states: torch.Tensor) -> torch.Tensor:
        """(B, chunk*action_dim, D) -> (B, chunk, action_dim) normalised actions.

        The reshape concatenates, per chunk step, the hidden states of its action_dim consecutive slots.
        """
        b = action_hidden_states.shape[0]
        return self.model(action_hidden_states.reshape(b, self.num_actions_chunk, -1))


class ProprioProjector(nn.Module):
    def __init__(self, cfg: ProprioProjectorConfig) -> None:
        super().__init__()
        self.fc1 = nn.Linear(cfg.proprio_dim, cfg.llm_dim, bias=True)
        self.act_fn1 = nn.GELU()
        self.fc2 = nn.Linear(cfg.llm_dim, cfg.llm_dim, bias=True)

    def forward(self, proprio: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act_fn1(self.fc1(proprio)))


# ==================================================================================================
# The whole policy network
# ==================================================================================================


@dataclass(frozen=True)
class SequenceLayout:
    """Positions in the LLM sequence; ``[start, stop)`` ranges."""

    prompt_len: int  # text ids before the action slots, incl. BOS and the trailing "▁"
    num_prefix: int  # patches (all images) + proprio token
    num_action_slots: int
    has_proprio: bool

    @property
    def patches(self) -> tuple[int, int]:
        return 1, 1 + self.num_prefix - (1 if self.has_proprio else 0)

    @property
    def proprio_position(self) -> int | None:
        return self.num_prefix if self.has_proprio else None

    @property
    def prompt_tokens(self) -> tuple[int, int]:
        """Text tokens after BOS (instruction ... "▁")."""
        return 1 + self.num_prefix, self.num_prefix + self.prompt_len

    @property
    def action_slots(self) -> tuple[int, int]:
        start = self.num_prefix + self.prompt_len
        return start, start + self.num_action_slots

    @property
    def eos_position(self) -> int:
        return self.num_prefix + self.prompt_len + self.num_action_slots

    @property
    def seq_len(self) -> int:
        return self.eos_position + 1

    @property
    def head_read(self) -> tuple[int, int]:
        """Hidden-state rows the action head reads: each action slot's *preceding* position.

        Upstream: ``NUM_PATCHES + NUM_PROMPT_TOKENS`` with ``NUM_PROMPT_TOKENS = prompt_len - 1``.
        """
        start = self.num_prefix + self.prompt_len - 1
        return start, start + self.num_action_slots


@dataclass
class OFTForwardOutput:
    normalized_actions: torch.Tensor  # (B, chunk, action_dim), before un-normalisation
    action_hidden_states: torch.Tensor  # (B, chunk*action_dim, D): the rows the head read
    last_hidden_states: torch.Tensor  # (B, S, D): final-normed LLM output
    layout: SequenceLayout


class OpenVLAOFT(nn.Module):
    """Vision backbone + projector + Llama + (proprio projector) + L1 action head."""

    def __init__(self, cfg: OpenVLAOFTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.vision_backbone = PrismaticVisionBackbone(cfg.vision, cfg.num_images)
        self.projector = PrismaticProjector(cfg.projector)
        self.language_model = LlamaForCausalLM(cfg.llm)
        self.action_head = L1RegressionActionHead(cfg.action_head, cfg.num_actions_chunk)
        self.proprio_projector = ProprioProjector(cfg.proprio_projector) if cfg.proprio_projector else None

    def layout(self, prompt_len: int) -> SequenceLayout:
        return SequenceLayout(
            prompt_len=prompt_len,
            num_prefix=self.cfg.num_prefix_embeddings,
            num_action_slots=self.cfg.num_action_slots,
            has_proprio=self.cfg.use_proprio,
        )

    def full_input_ids(self, prompt_ids: torch.Tensor) -> torch.Tensor:
        """Prompt ids (B, L) -> (B, L + A + 1): append the action placeholders and the stop token."""
        b = prompt_ids.shape[0]
        slots = torch.full((b, self.cfg.num_action_slots), self.cfg.action_placeholder_token_id, dtype=prompt_ids.dtype)
        stop = torch.full((b, 1), self.cfg.eos_token_id, dtype=prompt_ids.dtype)
        return torch.cat([prompt_ids, slots.to(prompt_ids.device), stop.to(prompt_ids.device)], dim=1)

    def build_inputs_embeds(
        self, pixel_values: torch.Tensor, prompt_ids: torch.Tensor, proprio: torch.Tensor | None
    ) -> tuple[torch.Tensor, SequenceLayout]:
        if (
            prompt_ids.ndim != 2
            or prompt_ids.shape[1] < 2
            or not bool((prompt_ids[:, 0] == self.cfg.bos_token_id).all())
        ):
            raise ValueError(f"prompt_ids must be (B, L>=2) starting with BOS id {self.cfg.bos_token_id}")
        layout = self.layout(prompt_ids.shape[1])
        text_embeds = self.language_model.model.embed_tokens(self.full_input_ids(prompt_ids))
        # Zero the action-slot inputs ("empty action embeddings"); positions still come from RoPE.
        text_len = text_embeds.shape[1]
        is_slot = torch.zeros(text_len, dtype=torch.bool, device=text_embeds.device)
        is_slot[prompt_ids.shape[1] : prompt_ids.shape[1] + self.cfg.num_action_slots] = True
        text_embeds = text_embeds * (~is_slot)[None, :, None].to(text_embeds.dtype)

        prefix = self.projector(self.vision_backbone(pixel_values.to(text_embeds.device, text_embeds.dtype)))
        if prefix.shape[0] != prompt_ids.shape[0]:
            raise ValueError(f"batch mismatch: {prefix.shape[0]} image sets vs {prompt_ids.shape[0]} prompts")
        if self.proprio_projector is not None:
            if proprio is None:
                raise ValueError("this checkpoint has a proprio projector: proprio is required")
            # the projector may be held wider than the backbone (a checkpoint loaded as stored); never
            # narrower than the activations (a reference may widen weights just in time, in hooks)
            own = torch.promote_types(self.proprio_projector.fc1.weight.dtype, prefix.dtype)
            proprio = proprio.reshape(prefix.shape[0], -1).to(prefix.device, own)
            prefix = torch.cat([prefix, self.proprio_projector(proprio).to(prefix.dtype).unsqueeze(1)], dim=1)
        elif proprio is not None:
            raise ValueError("this checkpoint has no proprio projector: pass proprio=None")
        embeds = torch.cat([text_embeds[:, :1], prefix, text_embeds[:, 1:]], dim=1)
        assert embeds.shape[1] == layout.seq_len
        return embeds, layout

    def forward(
        self, pixel_values: torch.Tensor, prompt_ids: torch.Tensor, proprio: torch.Tensor | None = None
    ) -> OFTForwardOutput:
        """pixel_values (B, 6*num_images, H, W); prompt_ids (B, L) = BOS .. "▁"; proprio (B, P) normalised."""
        embeds, layout = self.build_inputs_embeds(pixel_values, prompt_ids, proprio)
        hidden = self.language_model.model(embeds)
        start, stop = layout.head_read
        action_hidden = hidden[:, start:stop]
        head_dtype = torch.promote_types(self.action_head.model.fc1.weight.dtype, action_hidden.dtype)  # as above
        return OFTForwardOutput(
            normalized_actions=self.action_head(action_hidden.to(head_dtype)),
            action_hidden_states=action_hidden,
            last_hidden_states=hidden,
            layout=layout,
        )


def unused_parameter_prefixes(cfg: OpenVLAOFTConfig) -> list[str]:
    """Name prefixes of checkpoint tensors that cannot influence OFT's L1-regression output.

    A runtime may skip them: the last block and final norm of each ViT (Prismatic reads block depth-2),
    SigLIP's MAP head, and the LM head (the L1 head replaces token decoding).
    """
    names: list[str] = []
    for tower_name, vit in (("featurizer", cfg.vision.featurizer), ("fused_featurizer", cfg.vision.fused_featurizer)):
        prefix = f"vision_backbone.{tower_name}"
        for i in range(vit.feature_block_index + 1, vit.depth):
            names.append(f"{prefix}.blocks.{i}.")
        names += [f"{prefix}.norm."]
        if vit.attn_pool:
            names.append(f"{prefix}.attn_pool.")
    names.append("language_model.lm_head.")
    return names


__all__ = [
    "OpenVLAOFT",
    "OFTForwardOutput",
    "SequenceLayout",
    "PrismaticVisionBackbone",
    "VisionTransformer",
    "PrismaticProjector",
    "LlamaForCausalLM",
    "LlamaModel",
    "L1RegressionActionHead",
    "ProprioProjector",
    "unused_parameter_prefixes",
]
