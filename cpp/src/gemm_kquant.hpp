// The 4-bit weight formats of omnimodel's integer GEMM (gemm_lowbit.hpp runs them): decoders from ggml's
// block layouts (ggml-common.h) into the shared decoded_chunk form (gemm_chunk.hpp).
//
//   Q4_0    blocks of 32: F16 d, 16 bytes of nibbles q (low nibbles weights 0-15, high 16-31); w = d (q - 8)
//   IQ4_NL  the same layout, w = d kvalues[q] (ggml's 16-entry non-linear codebook, -127 .. 113)
//   IQ4_XS  blocks of 256: F16 d, 6-bit scale ls_j per 32 (4 low bits in scales_l, 2 high in scales_h),
//           then IQ4_NL's nibbles per 32; w = d (ls_j - 32) kvalues[q]
//   Q4_K    blocks of 256: F16 d and dmin, 6-bit scale sc_j and min m_j per 32 (12 packed bytes), then per
//           64 weights 32 bytes (low nibbles the first 32, high the next); w = d sc_j q - dmin m_j
//
// The codebook's signed values become unsigned codes c = kvalues[q] + 128 with offset 128 (VPDPBUSD
// takes unsigned weights); Q4_0's codes are q with offset 8; Q4_K's are q with offset 0 and its mins.
// The activations are rounded to the weight's ggml vec_dot type (Q8_0 for Q4_0/IQ4_NL, Q8_K for Q4_K/
// IQ4_XS), as ggml_mul_mat rounds them.
#pragma once

#include "gemm_chunk.hpp"
#include "ggml.h"

namespace omni {

// Q4_0, IQ4_NL, IQ4_XS and Q4_K.
bool kquant_takes(ggml_type t);

// The constant subtracted from the format's codes (see gemm_chunk.hpp).
int kquant_code_offset(ggml_type t);

// Decode rows r0 .. r0+31 of w (one of kquant_takes' types, {K, M}, rows packed) into out. Needs
// AVX512F/BW/VL (the caller checks gemm_lowbit_supported()).
void decode_kquant_rows(const ggml_tensor * w, int64_t r0, decoded_chunk & out);

}  // namespace omni
