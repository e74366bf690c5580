"""The skill library: how each kind of module becomes C++ code, and what to try when it mismatches.

A skill is one Jinja template under ``templates/blocks/`` plus the schema of the knobs that template
bakes into the generated code as constants, plus its *known fixes*: the ordered knob settings worth
trying when a module rendered with this skill disagrees with PyTorch (the validator's repair loop
applies them one at a time with ``Plan.with_knob`` and re-renders). Sizes are never knobs: the
generated code reads them from GGUF metadata. Adding an architecture reuses these skills; only its
arch spec (``plan/archs/``) and its glue template (``templates/archs/``) are new.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Knob:
    name: str
    allowed: tuple[Any, ...] | None  # None: any value of the default's type (eps, theta)
    default: Any
    doc: str
    # What a plan written before this knob existed computed: Plan.from_json fills it in, so an old
    # convert output re-renders to the graph it was validated with. None: the knob is required.
    legacy: Any = None

    def check(self, value: Any) -> None:
        if self.allowed is not None:
            if value not in self.allowed:
                raise ValueError(f"knob '{self.name}' must be one of {self.allowed}, got {value!r}")
        elif isinstance(self.default, float):
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
                raise ValueError(f"knob '{self.name}' must be a positive number, got {value!r}")
        elif not isinstance(value, type(self.default)):
            raise ValueError(f"knob '{self.name}' must be a {type(self.default).__name__}, got {value!r}")


BLOCK = "block"  # rendered from its own template into one build function
GLUE = "glue"  # an architecture's glue (sequence assembly, outputs): its knobs are read by the glue template


@dataclass(frozen=True)
class Skill:
    name: str
    template: str  # relative to templates/
    knobs: tuple[Knob, ...]
    fixes: tuple[dict[str, Any], ...]  # ordered: the most common real-world mix-ups first
    doc: str
    kind: str = BLOCK

    def knob(self, name: str) -> Knob:
        for k in self.knobs:
            if k.name == name:
                return k
        raise KeyError(f"skill '{self.name}' has no knob '{name}'; knobs: {[k.name for k in self.knobs]}")

    def defaults(self) -> dict[str, Any]:
        return {k.name: k.default for k in self.knobs}

    def with_legacy(self, knobs: Mapping[str, Any]) -> dict[str, Any]:
        """``knobs`` plus the legacy value of every knob it lacks that has one."""
        return {**{k.name: k.legacy for k in self.knobs if k.legacy is not None and k.name not in knobs}, **knobs}

    def validate(self, knobs: Mapping[str, Any]) -> None:
        missing = {k.name for k in self.knobs} - set(knobs)
        if missing:
            raise ValueError(f"skill '{self.name}': knobs {sorted(missing)} are not set")
        for name, value in knobs.items():
            self.knob(name).check(value)

    def alternatives(self, current: Mapping[str, Any], extra: Mapping[str, list[Any]] | None = None) -> list[dict]:
        """Per-module candidates first (``extra``: e.g. the eps the config states), then ``fixes``, minus
        the ones that change nothing, in order and without repeats."""
        out: list[dict] = []
        candidates = [{k: v} for k, vs in (extra or {}).items() for v in vs] + list(self.fixes)
        for fix in candidates:
            if any(current.get(k) != v for k, v in fix.items()) and fix not in out:
                out.append(dict(fix))
        return out


_EPS_FIXES = ({"norm_eps": 1e-6}, {"norm_eps": 1e-5})
_MASK = ("bidirectional", "causal")

# Speed knobs: how the runtime computes, not what. Each value fixes where and how the runtime rounds;
# docs/parity.md ("Runtime numerics") states the arithmetic of every value. They come last in the
# fixes, so the repair loop falls back to the plain kernels only after every semantic knob.
_ATTN = Knob("attn", ("naive", "flash", "flash_f16", "omni"), "omni",
             "attention kernel: naive (matmul, softmax, matmul), flash (ggml_flash_attn_ext on F32 K/V), "
             "flash_f16 (K/V converted to F16 first), omni (omnimodel's CPU kernel: whole score rows, "
             "exact softmax, F32)", legacy="naive")
_GELU_IMPL = Knob("gelu_impl", ("ggml", "fast"), "fast",
                  "exact-erf GELU through ggml's GELU_ERF (libm erff per element) or omnimodel's vectorised erf",
                  legacy="ggml")
_GEMM = Knob("gemm", ("ggml", "omni"), "omni",
             "matmul kernel for BF16, Q1_0, Q2_0, Q4_0, IQ4_NL, Q4_K, IQ4_XS, Q2_K, IQ1_M, IQ2_XXS/XS/S and "
             "IQ3_XXS/S weights: ggml's (llamafile tinyBLAS; per-row dot products for Q1_0/Q2_0; the tiled or "
             "repacked kernels for the others) or "
             "omnimodel's GEMMs (AVX512-BF16 for BF16, AVX512-VNNI/VBMI for the others, on CPUs that have them; "
             "other weight types and CPUs always use ggml's)", legacy="ggml")
_SPEED_FIXES_VIT = ({"attn": "naive"}, {"gelu_impl": "ggml"}, {"gemm": "ggml"})

# Gemma stacks (pi0's PaliGemma and action expert): the numerics a checkpoint may get wrong.
_GEMMA_KNOBS = (
    Knob("norm_eps", None, 1e-6, "RMSNorm eps (every layer and the final norm)"),
    Knob("norm_weight", ("one_plus", "plain"), "one_plus", "RMSNorm scales by (1 + w) (Gemma) or by w (Llama)"),
    Knob("gelu", ("tanh", "erf"), "tanh", "GeGLU activation: the tanh form (Gemma) or exact erf"),
    Knob("rope", ("neox", "normal"), "neox", "RoPE pairing: neox (HF rotate_half) or normal (GPT-J)"),
    Knob("rope_theta", None, 10000.0, "RoPE base"),
)
_GEMMA_FIXES = (
    {"gelu": "tanh"}, {"gelu": "erf"}, {"norm_weight": "one_plus"}, {"norm_weight": "plain"},
    *_EPS_FIXES, {"rope": "neox"}, {"rope": "normal"}, {"rope_theta": 10000.0},
)

SKILLS: dict[str, Skill] = {
    s.name: s
    for s in (
        Skill(
            name="vit_tower",
            template="blocks/vit_tower.cpp.j2",
            knobs=(
                Knob("gelu", ("erf", "tanh"), "erf", "MLP activation: exact erf GELU (nn.GELU) or the tanh form"),
                Knob("norm_eps", None, 1e-6, "LayerNorm eps of norm1/norm2"),
                Knob("attn_mask", _MASK, "bidirectional", "self-attention masking"),
                Knob("layer_scale", (True, False), False, "ls1/ls2 LayerScale after attention and MLP"),
                Knob("class_token", (True, False), False, "a learned class token is prepended"),
                Knob("reg_tokens", None, 0, "learned register tokens after the class token"),
                Knob("pos_embed", ("patches_only", "all_tokens"), "all_tokens",
                     "timm no_embed_class: pos_embed covers the patches only (added before the prefix tokens)"),
                _ATTN,
                _GELU_IMPL,
                _GEMM,
            ),
            fixes=(
                {"gelu": "erf"}, {"gelu": "tanh"}, *_EPS_FIXES,
                {"attn_mask": "bidirectional"}, {"attn_mask": "causal"},
                {"pos_embed": "patches_only"}, {"pos_embed": "all_tokens"},
                *_SPEED_FIXES_VIT,
            ),
            doc="timm VisionTransformer up to a feature block: patch embedding, prefix tokens, position "
                "embedding, ViT blocks, prefix tokens dropped",
        ),
        Skill(
            name="mlp_chain",
            template="blocks/mlp_chain.cpp.j2",
            knobs=(Knob("act", ("gelu_erf", "gelu_tanh", "relu", "silu"), "gelu_erf",
                        "activation between the linears (none after the last)"),
                   _GELU_IMPL, _GEMM),
            fixes=({"act": "gelu_erf"}, {"act": "gelu_tanh"}, {"gelu_impl": "ggml"}, {"gemm": "ggml"}),
            doc="Linear layers with one activation between them (projectors)",
        ),
        Skill(
            name="llama_stack",
            template="blocks/llama_stack.cpp.j2",
            knobs=(
                Knob("norm_eps", None, 1e-6, "RMSNorm eps (every layer and the final norm)"),
                Knob("rope", ("neox", "normal"), "neox", "RoPE pairing: neox (HF rotate_half) or normal (GPT-J)"),
                Knob("rope_theta", None, 10000.0, "RoPE base"),
                Knob("attn_mask", _MASK, "causal", "self-attention masking"),
                Knob("kv_heads", ("grouped", "interleaved"), "grouped",
                     "GQA: query head h reads kv head h // (heads / kv_heads) (grouped, HF repeat_kv) or "
                     "h % kv_heads (interleaved)"),
                _ATTN,
                _GEMM,
            ),
            fixes=(
                {"attn_mask": "bidirectional"}, {"attn_mask": "causal"},
                {"rope": "neox"}, {"rope": "normal"}, *_EPS_FIXES,
                {"rope_theta": 10000.0}, {"rope_theta": 500000.0},
                {"kv_heads": "grouped"}, {"kv_heads": "interleaved"},
                {"attn": "naive"}, {"gemm": "ggml"},
            ),
            doc="HF Llama decoder layers (RMSNorm, RoPE attention, SwiGLU) and the final RMSNorm",
        ),
        Skill(
            name="mlp_resnet_head",
            template="blocks/mlp_resnet_head.cpp.j2",
            knobs=(Knob("norm_eps", None, 1e-5, "LayerNorm eps of every norm in the head"), _GEMM),
            fixes=({"norm_eps": 1e-5}, {"norm_eps": 1e-6}, {"gemm": "ggml"}),
            doc="OFT L1-regression head: MLPResNet (LayerNorm, Linear, ReLU residual blocks)",
        ),
        # ---- the PaliGemma family (pi0, pi0.5)
        Skill(
            name="siglip_tower",
            template="blocks/siglip_tower.cpp.j2",
            knobs=(
                Knob("gelu", ("erf", "tanh"), "tanh", "MLP activation: the tanh form (HF gelu_pytorch_tanh) or exact erf"),
                Knob("norm_eps", None, 1e-6, "LayerNorm eps of layer_norm1/2 and post_layernorm"),
                Knob("attn_mask", _MASK, "bidirectional", "self-attention masking"),
                _ATTN,
                _GELU_IMPL,
                _GEMM,
            ),
            fixes=({"gelu": "tanh"}, {"gelu": "erf"}, *_EPS_FIXES, {"attn_mask": "bidirectional"},
                   *_SPEED_FIXES_VIT),
            doc="HF SiglipVisionTransformer: patch conv, learned positions, every pre-LN encoder layer (separate "
                "q/k/v, out_proj, fc1/fc2), post_layernorm; no class token",
        ),
        Skill(
            name="gemma_stack",
            template="blocks/gemma_stack.cpp.j2",
            knobs=_GEMMA_KNOBS + (
                Knob("embed_scale", ("sqrt_width", "none"), "sqrt_width",
                     "the token embedding is multiplied by sqrt(width) (Gemma) or not"),
                _GEMM,
            ),
            fixes=_GEMMA_FIXES + ({"embed_scale": "sqrt_width"}, {"embed_scale": "none"}, {"gemm": "ggml"}),
            doc="Gemma over a prefix-LM prefix (scaled embedding, RMSNorm with 1+w, MQA + RoPE under a given "
                "additive mask, GeGLU), keeping every layer's post-RoPE K/V",
        ),
        Skill(
            name="gemma_expert",
            template="blocks/gemma_expert.cpp.j2",
            knobs=_GEMMA_KNOBS + (
                Knob("adarms", (True, False), False,
                     "the norms are adaptive (pi0.5): dense(cond) -> scale/shift/gate, gated residuals"),
                Knob("adarms_chunks", ("scale_shift_gate", "shift_scale_gate", "scale_gate_shift"),
                     "scale_shift_gate", "the order of the three chunks of an adaptive norm's dense(cond)"),
                Knob("suffix_mask", ("blockwise", "causal"), "blockwise",
                     "the suffix's attention among itself: big_vision's blocks by cumsum(ar) (upstream) or causal "
                     "(the glue builds the mask from it)"),
                _GEMM,
            ),
            fixes=_GEMMA_FIXES + ({"suffix_mask": "blockwise"}, {"suffix_mask": "causal"},{"adarms_chunks": "scale_shift_gate"}, {"adarms_chunks": "shift_scale_gate"},
                                  {"adarms_chunks": "scale_gate_shift"}, {"gemm": "ggml"}),
            doc="The action expert for one denoising step: per layer its own (adaptive) norms, Q/K/V, o_proj and "
                "GeGLU, attending to [the prefix's kept K/V | its own K/V]",
        ),
        Skill(
            name="pi0_glue",
            template="archs/pi0.cpp.j2",
            kind=GLUE,
            knobs=(),
            fixes=(),
            doc="pi0 / pi0.5 (no knobs of its own: the suffix mask is the expert's): prefix assembly, prefix-LM mask and positions from image_mask, the unrolled "
                "flow-matching loop (suffix embedding, expert, action_out_proj, Euler update)",
        ),
        # ---- architecture glue: the template is the architecture's glue template, which reads these knobs
        Skill(
            name="openvla_oft_glue",
            template="archs/openvla_oft.cpp.j2",
            kind=GLUE,
            knobs=(Knob("action_rows", ("before_slot", "at_slot"), "before_slot",
                        "the hidden-state row the action head reads per action slot: the one before it "
                        "(upstream's next-token alignment) or the slot's own"),),
            fixes=({"action_rows": "before_slot"}, {"action_rows": "at_slot"}),
            doc="OpenVLA-OFT's sequence assembly around the modules, the action-slot read, un-normalisation",
        ),
    )
}

__all__ = ["BLOCK", "GLUE", "Knob", "Skill", "SKILLS"]
