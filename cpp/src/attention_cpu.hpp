// omnimodel's CPU attention (the skills' `attn = omni` knob): exact softmax attention in F32 over whole
// rows of scores, for the prefill shapes of a VLA (a few hundred tokens per sequence).
//
// ggml's flash attention walks keys a 64-tile at a time with an online softmax and reaches about 45
// GFLOP/s per Zen 4 core; ggml's naive path materialises every head's scores through matmuls whose
// transposed operands it first copies. This kernel packs K transposed and V (rows padded to 16 lanes)
// once per kv head, then for 8 queries at a time:
//
//   s[i][k] = (sum_d q[i][d] k[k][d]) * scale          F32, fused multiply-adds in d order
//   s[i][k] = -inf for k > i (causal)                  masked keys are skipped, not computed
//   m = max_k s, e[k] = exp(s[k] - m), l = sum_k e[k]  exp: range reduction to [-ln2/2, ln2/2] and a
//                                                      degree-7 polynomial (relative error ~1e-7), 0
//                                                      below -87.3; l summed in 16 F32 lanes, then
//                                                      the lanes added in order
//   p[k] = e[k] * (1 / l)                              as ggml_soft_max_ext normalises
//   o[i][d] = sum_k p[i][k] v[k][d]                    F32, fused multiply-adds in k order
//
// Nothing is rounded below F32: the naive path's arithmetic in another order. q {hd, H, T, B}, k/v
// {hd, Hkv, T, B} may be strided views (rows of hd contiguous); H a multiple of Hkv (kv head h / (H /
// Hkv) serves query head h). -> {hd, H, T, B}, contiguous. CPU backend only.
#pragma once

#include "ggml.h"

namespace omni {

ggml_tensor * attention_cpu(ggml_context * ctx, ggml_tensor * q, ggml_tensor * k, ggml_tensor * v, float scale,
                            bool causal);

}  // namespace omni
