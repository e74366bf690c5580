// omnimodel's BF16 GEMM for the CPU (the skills' `gemm = omni` knob): y = x W^T for BF16 weights.
//
// ggml multiplies BF16 weights with llamafile's tinyBLAS: a dot product per output along K (rows of W
// against rows of x, 16 lanes of VDPBF16PS), reduced horizontally at the end; on a Zen 4 core that
// reaches about 70% of what PyTorch's oneDNN gets from the same instruction. This GEMM instead
// broadcasts pairs of weights against panels of 48 tokens packed pair-interleaved, so each VDPBF16PS
// adds two products into 16 different outputs and nothing is reduced across lanes:
//
//   pack    x (F32, rows of K) -> BF16, rounded to nearest even exactly as ggml's from_float for BF16
//           (ggml_compute_fp32_to_bf16), laid out per panel of 48 tokens as [K/2][48][2]
//   gemm    per 8 weight rows x 48 tokens: 24 accumulators of 16 F32 lanes; for k = 0, 2, 4, ...
//           acc += W[m][k+1] x[n][k+1] then + W[m][k] x[n][k] (VDPBF16PS: products exact in F32, each
//           addition rounded to nearest even, denormal inputs and results flushed to zero)
//
// So the rounding points are ggml's (activations to BF16, F32 results); only the order of the F32
// additions differs: sequential over k here, 32 interleaved partial sums then a tree in tinyBLAS.
// x86-64 CPUs with AVX512-BF16 only (checked at run time, so portable builds get it too); elsewhere,
// and for anything but 2-D BF16 weights times F32 activations with an even K, build_linear keeps
// ggml_mul_mat.
#pragma once

#include "ggml.h"

namespace omni {

// This CPU runs gemm_bf16 (x86-64 with AVX512-BF16, and the build could compile the kernel).
bool gemm_bf16_supported();

// y {M, x->ne[1..3]} = x W^T (+ b) for W BF16 {K, M} (rows contiguous), x F32 {K, ...} (rows contiguous)
// and an optional F32 bias of M values, added in F32 as the result is stored (ggml_add's rounding);
// nullptr when those conditions or gemm_bf16_supported() do not hold.
ggml_tensor * gemm_bf16(ggml_context * ctx, ggml_tensor * w, ggml_tensor * x, ggml_tensor * b = nullptr);

// Whether t is one of the two nodes gemm_bf16() builds (the graph checks vet them as a matmul).
bool is_gemm_bf16_node(const ggml_tensor * t);

}  // namespace omni
