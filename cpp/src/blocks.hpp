// Reusable transformer blocks, written against graph_builder.
//
// Layout conventions (ggml order, ne[0] fastest):
//   token sequences  x: {n_embd, n_tokens, n_batch}    (numpy (n_batch, n_tokens, n_embd))
//   images           x: {W, H, C, n_batch}             (numpy (n_batch, C, H, W))
// Weights are looked up by `prefix + PyTorch parameter name`, and every block names its output (and
// its main sub-results) after the PyTorch module path `prefix` without the trailing dot, so a
// validator can match forward hooks by name. Shapes are checked before ggml sees them.
#pragma once

#include "graph.hpp"

#include <string>
#include <vector>

namespace omni {

// Module path for names: "a.b.c." -> "a.b.c".
std::string module_name(const std::string & prefix);

// Fail with OMNIMODEL_ERR_SHAPE unless t->ne[dim] == want.
void require_dim(const ggml_tensor * t, int dim, int64_t want, const std::string & what);

// A linear layer as the file stores it: the GGML weight `weight_name` {n_in, n_out} (+ bias b), or the
// HBVLA matrix stored for it ("<base>.hb.*", hbvla.hpp), checked against the same widths. Every block
// template's quantizable matrices go through here, so any of them can be binarized.
ggml_tensor * build_linear_stored(graph_builder & gb, ggml_tensor * x, const std::string & weight_name,
                                  int64_t n_in, int64_t n_out, ggml_tensor * b = nullptr);

// Conv2d with kernel = stride = patch and no padding (timm PatchEmbed) as im2col + matmul, + bias.
// pixels {W, H, C, B}; `prefix` holds proj.weight [D, C, p, p] and proj.bias [D]. -> {D, n_patches, B},
// patches in row-major order (PyTorch `flatten(2).transpose(1, 2)`).
ggml_tensor * build_patch_embed(graph_builder & gb, ggml_tensor * pixels, const std::string & prefix);

// How attention is computed (the skills' `attn` knob; docs/parity.md "Runtime numerics" has the exact
// arithmetic of each):
//   naive      K Q^T as a matmul, soft_max_ext, then V^T P as a matmul: every score materialised,
//              q/k/v copied into contiguous layouts first
//   flash      ggml_flash_attn_ext on views of q/k/v in F32: scores a tile at a time, online softmax,
//              no copies, nothing rounded below F32
//   flash_f16  the same with K and V converted to F16 first (ggml's usual layout for a KV cache)
//   omni       omnimodel's CPU kernel (attention_cpu.hpp): whole rows of scores, exact softmax, F32;
//              ggml's flash where the model runs on another backend
enum class attn_impl { naive, flash, flash_f16, omni };

// Scaled dot-product attention. q {hd, n_head, T, B}, k/v {hd, n_head_kv, T, B} (n_head a multiple of
// n_head_kv; kv head h / (n_head / n_head_kv) serves query head h, as repeat_interleave); q/k/v may be
// strided views (rows of hd contiguous). No mask unless `causal`. -> {hd * n_head, T, B}
ggml_tensor * build_attention(graph_builder & gb, ggml_tensor * q, ggml_tensor * k, ggml_tensor * v, float scale,
                              bool causal, attn_impl impl = attn_impl::naive);

struct vit_block_params {
    int64_t   n_embd  = 0;
    int64_t   n_head  = 0;
    int64_t   n_ff    = 0;
    float     eps     = 1e-6f;
    bool      layer_scale = false;  // ls1/ls2.scale_factor (timm LayerScale, Prismatic's rename)
    act_kind  act     = act_kind::gelu_erf;
    bool      causal  = false;  // timm ViTs attend bidirectionally; a knob so a wrong plan is expressible
    attn_impl attn    = attn_impl::naive;
};

// timm ViT block: x + ls1(attn(norm1(x))), then + ls2(mlp(norm2(x))); fused qkv, bidirectional
// unless hp.causal.
ggml_tensor * build_vit_block(graph_builder & gb, ggml_tensor * x, const std::string & prefix,
                              const vit_block_params & hp);

// RoPE pairing: neox rotates (i, i + hd/2) (HF rotate_half), normal rotates (2i, 2i + 1) (GPT-J).
enum class rope_kind { neox, normal };

// Which kv head serves query head h under grouped-query attention: grouped is HF repeat_kv
// (repeat_interleave: kv head h / (n_head / n_head_kv)), interleaved cycles the kv heads (h % n_head_kv).
enum class kv_map_kind { grouped, interleaved };

struct llama_block_params {
    int64_t n_embd    = 0;
    int64_t n_head    = 0;
    int64_t n_head_kv = 0;
    int64_t n_ff      = 0;
    float   eps       = 1e-6f;
    float   rope_theta = 10000.0f;
    rope_kind rope    = rope_kind::neox;
    bool    causal    = false;
    kv_map_kind kv_map = kv_map_kind::grouped;
    attn_impl attn    = attn_impl::naive;
};

// HF Llama decoder layer: RMSNorm, q/k/v/o (no bias), RoPE (hp.rope; HF is neox) over the whole head,
// attention (causal or not), RMSNorm, SwiGLU MLP. x {D, T}; positions: I32 {T}.
ggml_tensor * build_llama_block(graph_builder & gb, ggml_tensor * x, ggml_tensor * positions,
                                const std::string & prefix, const llama_block_params & hp);

// A chain of Linear layers `prefix + names[i]` with `act` after every one but the last
// (Prismatic's fused-GELU projector, OFT's proprio projector). Each linear is named.
ggml_tensor * build_mlp(graph_builder & gb, ggml_tensor * x, const std::string & prefix,
                        const std::vector<std::string> & names, act_kind act);

// OFT MLPResNet: relu(fc1(layer_norm1(x))), n_blocks of x + relu(ffn.1(ffn.0(x))), fc2(layer_norm2(x)).
ggml_tensor * build_mlp_resnet(graph_builder & gb, ggml_tensor * x, const std::string & prefix, int64_t n_blocks,
                               float eps);

}  // namespace omni
