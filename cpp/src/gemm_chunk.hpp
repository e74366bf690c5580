// The decoded form of 32 weight rows that omnimodel's integer GEMM (gemm_lowbit.cpp) multiplies against
// int8 activations, shared by the per-format decoders (gemm_lowbit.cpp: Q1_0/Q2_0; gemm_kquant.cpp: the
// 4-bit formats; gemm_iquant.cpp: Q2_K and the 1- to 3-bit i-quants). Every supported format is, per row
// and sub-block j of `sub` weights (32; 16 for the formats whose scales are per 16; 256 for Q2_K, whose
// 4-bit scales are folded into its codes),
//
//     w = scale_j * (c - offset) - min_j        c an unsigned byte code, offset the format's constant
//
// so a sub-block's dot product with int8 activations q_x is the exact integer sum(c q_x) - offset sum(q_x)
// (VPDPBUSD multiplies unsigned by signed bytes), scaled once in F32, less min_j * sum(q_x) where the
// format has mins (Q4_K, Q2_K).
#pragma once

#include <cstdint>
#include <vector>

namespace omni {

constexpr int64_t k_gemm_sub  = 32;  // weights per sub-block: the unit of an exact integer sum (or 16, below)
constexpr int     k_gemm_rows = 32;  // weight rows per decoded chunk and per micro-tile (two vectors of 16)

// Decoded weight rows r0 .. r0+31 of a {K, M} matrix; rows past M are zero (codes, scales and mins).
struct decoded_chunk {
    std::vector<uint32_t> codes;   // [K/4][32]: four consecutive codes of row r in 32-bit lane r
    std::vector<float>    scales;  // [K/sub][32]: scale_j of row r in lane r
    std::vector<float>    mins;    // [K/sub][32]: min_j, only for formats with mins (else empty; Q2_K: [K/16][32])
};

// codes <- 32 rows of K byte codes each (rows[r * K ..]), four consecutive codes of row r per 32-bit lane
// r (gemm_kquant.cpp; AVX512F, the caller checks gemm_lowbit_supported()).
void chunk_codes_from_rows(const uint8_t * rows, int64_t k, decoded_chunk & out);

}  // namespace omni
