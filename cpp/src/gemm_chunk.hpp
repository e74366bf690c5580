// The decoded form of 32 weight rows that omnimodel's integer GEMM (gemm_lowbit.cpp) multiplies against
// int8 activations, shared by the per-format decoders (gemm_lowbit.cpp: Q1_0/Q2_0; gemm_kquant.cpp: the
// 4-bit formats). Every supported format is, per row and 32-weight sub-block j,
//
//     w = scale_j * (c - offset) - min_j        c an unsigned byte code, offset the format's constant
//
// so a sub-block's dot product with int8 activations q_x is the exact integer sum(c q_x) - offset sum(q_x)
// (VPDPBUSD multiplies unsigned by signed bytes), scaled once in F32, less min_j * sum(q_x) where the
// format has mins (Q4_K).
#pragma once

#include <cstdint>
#include <vector>

namespace omni {

constexpr int64_t k_gemm_sub  = 32;  // weights per sub-block: the unit of an exact integer sum
constexpr int     k_gemm_rows = 32;  // weight rows per decoded chunk and per micro-tile (two vectors of 16)

// Decoded weight rows r0 .. r0+31 of a {K, M} matrix; rows past M are zero (codes, scales and mins).
struct decoded_chunk {
    std::vector<uint32_t> codes;   // [K/4][32]: four consecutive codes of row r in 32-bit lane r
    std::vector<float>    scales;  // [K/32][32]: scale_j of row r in lane r
    std::vector<float>    mins;    // [K/32][32]: min_j, only for formats with mins (else empty)
};

}  // namespace omni
