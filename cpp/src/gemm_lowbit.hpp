// omnimodel's GEMM for 1-, 2- and 4-bit weights on the CPU (the skills' `gemm = omni` knob): y = x W^T for W
// in GGML's Q1_0 (blocks of 128: an F16 scale d and one sign bit per weight, value +-d) or Q2_0 (blocks
// of 64: an F16 scale d and a 2-bit code q per weight, value (q - 1) d).
//
// ggml multiplies these with a scalar per-row dot product on x86 (about 4 GFLOP/s per core). This GEMM
// does the same arithmetic with AVX512-VNNI:
//
//   pack    each token row of x (F32) -> Q8_0 blocks of 32 (int8 codes q_x, F16 scale d_x) by ggml-cpu's
//           own from_float for Q8_0 -- the very function ggml_mul_mat calls for these weights' vec_dot
//           type, so the rounding is ggml's bit for bit -- plus, per block, d_x as F32 and -sum(q_x)
//   decode  32 weight rows at a time into unsigned bytes c (Q2_0: c = q; Q1_0: c = 2 * bit), four
//           consecutive weights of a row per 32-bit lane, 16 rows per vector (byte permutes and
//           VPMULTISHIFTQB), and d_w per 32 weights; once per 32 rows, reused for every token
//   gemm    per 32 rows x 6 tokens and per 32-element block: the integer sum(c q_x) - sum(q_x), which is
//           sum((q - 1) q_x) or sum((2 bit - 1) q_x) exactly (VPDPBUSD, int32, no saturation), then one
//           F32 fused multiply-add acc += sumi * (d_w * d_x) (the product of two F16 values is exact in
//           F32, |sumi| <= 8128 is exact in F32)
//
// The same engine runs the 4-bit formats Q4_0, IQ4_NL (activations to Q8_0), Q4_K and IQ4_XS (activations
// to Q8_K, again by ggml-cpu's own from_float, the vec_dot type ggml_mul_mat uses for them): their decoders
// (gemm_kquant.hpp) produce unsigned byte codes c with w = scale_j (c - offset) - min_j per 32 weights
// (gemm_chunk.hpp), so each 32-element sum is again exact in int32, and Q4_K's mins add one F32 FMA per
// 32-element block: acc += min_j * (-sum(q_x) d_x).
//
// Q2_K and the grid quants IQ1_M, IQ2_XXS/XS/S, IQ3_XXS/S (gemm_iquant.hpp; activations to Q8_K) run
// on it too: their grid entries become codes 128 +- g (IQ1_M: 128 + 8 g +- 1), and the four whose scales
// are per 16 weights (IQ2_XS, IQ2_S, IQ1_M) run with 16-weight sub-blocks (one F32 FMA per 16); Q2_K folds
// its 4-bit scales into the codes (sc q <= 45), so it sums whole 256-blocks in int32, its mins per 16 apart.
// For all Q8_K-rounded types the sub-block sums are scaled by the weights' scales and then by d_x once per
// 256 (one scale per 256 activations), as ggml's Q8_K dot products do.
//
// So the rounding points are ggml's (x to Q8_0, F32 sums); only the F32 summation differs: sequential
// over the 32-element blocks here, per weight block then across blocks in ggml's vec_dot. x86-64 CPUs
// with AVX512F/BW/VL, AVX512-VNNI and AVX512-VBMI only (Ice Lake, Zen 4 and later; checked at run
// time); elsewhere build_linear keeps ggml_mul_mat.
#pragma once

#include "ggml.h"

namespace omni {

// This CPU runs gemm_lowbit (x86-64 with AVX512F/BW/VL, -VNNI and -VBMI, and the build compiled it).
bool gemm_lowbit_supported();

// Whether gemm_lowbit multiplies this weight type: Q1_0, Q2_0, Q4_0, IQ4_NL, Q4_K, IQ4_XS, Q2_K, IQ1_M,
// IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS, IQ3_S.
bool gemm_lowbit_takes(ggml_type t);

// y {M, x->ne[1..3]} = x W^T (+ b) for W of a gemm_lowbit_takes() type, {K, M} (a 2-D matrix), x F32 {K, ...} with
// contiguous rows, and an optional F32 bias of M values added in F32 as the result is stored (ggml_add's
// rounding); nullptr when those conditions or gemm_lowbit_supported() do not hold.
ggml_tensor * gemm_lowbit(ggml_context * ctx, ggml_tensor * w, ggml_tensor * x, ggml_tensor * b = nullptr);

// Whether t is one of the two nodes gemm_lowbit() builds (the graph checks vet them as a matmul).
bool is_gemm_lowbit_node(const ggml_tensor * t);

}  // namespace omni
