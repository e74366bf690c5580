// The 1- to 3-bit weight formats of omnimodel's integer GEMM (gemm_lowbit.hpp runs them): Q2_K and ggml's
// grid ("i-") quants, decoded from their block layouts (ggml-common.h) into the shared decoded_chunk form
// (gemm_chunk.hpp). All are blocks of 256 weights with an F16 super-scale d; their activations are rounded
// to Q8_K (ggml's vec_dot type for each), so parity with ggml's own kernels is unchanged.
//
//   Q2_K     per 16 weights a 4-bit scale sc and min m, 2-bit codes q:   w = d sc q - dmin m
//   IQ2_XXS  per 8 weights an 8-bit index into a 256-entry grid of 8 magnitudes and 7 sign bits (the 8th
//            is their parity), per 32 a 4-bit ls:                        w = d (ls + 1/2) / 4 * +-g
//   IQ2_XS   9-bit indices into a 512-entry grid, 7 sign bits, ls per 16: the same w
//   IQ2_S    10-bit indices (a 1024-entry grid), 8 sign bits, ls per 16:  the same w
//   IQ3_XXS  per 4 weights an 8-bit index into a 256-entry grid of 4, 7 sign bits per 8, ls per 32:
//                                                                         w = d (ls + 1/2) / 2 * +-g
//   IQ3_S    9-bit indices into a 512-entry grid of 4, 8 sign bits, ls per 32: w = d (2 ls + 1) * +-g
//   IQ1_M    per 8 weights an 11-bit index into a 2048-entry grid of {-1, 0, 1} and a shift sign, a 3-bit
//            ls per 16, d spread over the scales' top nibbles:            w = d (2 ls + 1) (g +- 1/8)
//
// The grid values become unsigned codes c = 128 +- g (IQ1_M: 128 + 8 g +- 1, its scale / 8) with offset
// 128; Q2_K's codes are sc q (<= 45) with offset 0, so its only scale is d per 256 weights, and its mins
// dmin m per 16 are a separate F32 term. IQ2_XS, IQ2_S and IQ1_M have scales per 16 weights, so the engine
// runs them with 16-weight sub-blocks; Q2_K with 256 (mins per 16); the rest with 32.
//
// The grids are not copied into this source: they are read once from ggml's own dequantizer (to_float of
// probe blocks holding every index with unit scales and no signs).
#pragma once

#include "gemm_chunk.hpp"
#include "ggml.h"

namespace omni {

// Q2_K, IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS, IQ3_S and IQ1_M.
bool iquant_takes(ggml_type t);

// Weights per scale: 16 (IQ2_XS, IQ2_S, IQ1_M), 256 (Q2_K, mins per 16) or 32; the engine's sub-block
// size for t.
int iquant_sub(ggml_type t);

// The constant subtracted from the format's codes (see gemm_chunk.hpp): 0 for Q2_K, else 128.
int iquant_code_offset(ggml_type t);

// Decode rows r0 .. r0+31 of w (one of iquant_takes' types, {K, M}, rows packed) into out, with
// iquant_sub(w->type) weights per scale. Needs AVX512F/BW/VL (the caller checks gemm_lowbit_supported()).
void decode_iquant_rows(const ggml_tensor * w, int64_t r0, decoded_chunk & out);

}  // namespace omni
