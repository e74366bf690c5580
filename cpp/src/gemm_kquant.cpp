#include "gemm_kquant.hpp"

#include <cstring>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#    include <immintrin.h>
#    define OMNI_GEMM_KQUANT 1
#    define OMNI_TARGET __attribute__((target("avx2,avx512f,avx512bw,avx512vl,f16c")))
#endif

namespace omni {

bool kquant_takes(ggml_type t) {
    return t == GGML_TYPE_Q4_0 || t == GGML_TYPE_IQ4_NL || t == GGML_TYPE_IQ4_XS || t == GGML_TYPE_Q4_K;
}

int kquant_code_offset(ggml_type t) {
    switch (t) {
        case GGML_TYPE_Q4_0: return 8;
        case GGML_TYPE_IQ4_NL: case GGML_TYPE_IQ4_XS: return 128;
        default: return 0;  // Q4_K: codes are the values; its mins carry the offset
    }
}

#ifdef OMNI_GEMM_KQUANT

namespace {

// ggml's IQ4_NL / IQ4_XS codebook (ggml-common.h kvalues_iq4nl: -127 -104 -83 -65 -49 -35 -22 -10 1 13 25
// 38 53 69 89 113), each + 128 so it is an unsigned byte; and Q4_0's codes, the nibbles themselves.
alignas(16) constexpr uint8_t k_iq4_codes[16] = {1, 24, 45, 63, 79, 93, 106, 118, 129, 141, 153, 166, 181, 197, 217, 241};
alignas(16) constexpr uint8_t k_q4_codes[16]  = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};

// ggml's block layouts (ggml-common.h block_q4_0 / block_iq4_nl, block_iq4_xs, block_q4_K).
struct block_32 {
    uint16_t d;
    uint8_t  qs[16];
};
struct block_iq4_xs {
    uint16_t d, scales_h;
    uint8_t  scales_l[4];
    uint8_t  qs[128];
};
struct block_q4_k {
    uint16_t d, dmin;
    uint8_t  scales[12];
    uint8_t  qs[128];
};
static_assert(sizeof(block_32) == 18 && sizeof(block_iq4_xs) == 136 && sizeof(block_q4_k) == 144, "block layouts");

OMNI_TARGET inline float f16(uint16_t h) { return _cvtsh_ss(h); }

// 16 bytes of nibbles -> 32 codes through the 16-entry table: the low nibbles' codes, then the high ones'.
OMNI_TARGET inline void nibbles_to_codes(const uint8_t * q, __m256i table, uint8_t * out) {
    const __m128i v   = _mm_loadu_si128(reinterpret_cast<const __m128i *>(q));
    const __m128i low = _mm_set1_epi8(0x0f);
    const __m256i idx = _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_and_si128(v, low)),
                                                _mm_and_si128(_mm_srli_epi16(v, 4), low), 1);
    _mm256_storeu_si256(reinterpret_cast<__m256i *>(out), _mm256_shuffle_epi8(table, idx));
}

OMNI_TARGET __m256i load_table(const uint8_t * t) {
    return _mm256_broadcastsi128_si256(_mm_load_si128(reinterpret_cast<const __m128i *>(t)));
}

// One row: K codes into `codes`, scale_j (and min_j) at scales[j * stride] (mins[j * stride]).
OMNI_TARGET void decode_row_32(const uint8_t * row, int64_t k, const uint8_t * table, uint8_t * codes, float * scales,
                               int64_t stride) {
    const __m256i t  = load_table(table);
    const auto *  bl = reinterpret_cast<const block_32 *>(row);
    for (int64_t b = 0; b < k / 32; ++b) {
        nibbles_to_codes(bl[b].qs, t, codes + 32 * b);
        scales[b * stride] = f16(bl[b].d);
    }
}

OMNI_TARGET void decode_row_iq4_xs(const uint8_t * row, int64_t k, uint8_t * codes, float * scales, int64_t stride) {
    const __m256i t  = load_table(k_iq4_codes);
    const auto *  bl = reinterpret_cast<const block_iq4_xs *>(row);
    for (int64_t b = 0; b < k / 256; ++b) {
        const float d = f16(bl[b].d);
        for (int j = 0; j < 8; ++j) {
            const int ls = ((bl[b].scales_l[j / 2] >> (4 * (j % 2))) & 0x0f) | (((bl[b].scales_h >> (2 * j)) & 3) << 4);
            nibbles_to_codes(bl[b].qs + 16 * j, t, codes + 256 * b + 32 * j);
            scales[(8 * b + j) * stride] = d * static_cast<float>(ls - 32);  // exact: 11 x 6 significant bits
        }
    }
}

// Q4_K's 6-bit scale and min of sub-block j from the 12 packed bytes: j < 4 in the low 6 bits of bytes j
// (scale) and j + 4 (min); j >= 4 in the nibbles of byte j + 4 with 2 high bits from bytes j - 4 / j.
inline void q4_k_scale_min(const uint8_t * s, int j, int & sc, int & mn) {
    if (j < 4) {
        sc = s[j] & 63;
        mn = s[j + 4] & 63;
    } else {
        sc = (s[j + 4] & 0x0f) | ((s[j - 4] >> 6) << 4);
        mn = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
    }
}

OMNI_TARGET void decode_row_q4_k(const uint8_t * row, int64_t k, uint8_t * codes, float * scales, float * mins,
                                 int64_t stride) {
    const __m256i low = _mm256_set1_epi8(0x0f);
    const auto *  bl  = reinterpret_cast<const block_q4_k *>(row);
    for (int64_t b = 0; b < k / 256; ++b) {
        const float d = f16(bl[b].d), dmin = f16(bl[b].dmin);
        for (int c = 0; c < 4; ++c) {  // 64 weights: low nibbles of 32 bytes, then their high nibbles
            const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(bl[b].qs + 32 * c));
            uint8_t *     o = codes + 256 * b + 64 * c;
            _mm256_storeu_si256(reinterpret_cast<__m256i *>(o), _mm256_and_si256(v, low));
            _mm256_storeu_si256(reinterpret_cast<__m256i *>(o + 32), _mm256_and_si256(_mm256_srli_epi16(v, 4), low));
        }
        for (int j = 0; j < 8; ++j) {
            int sc, mn;
            q4_k_scale_min(bl[b].scales, j, sc, mn);
            scales[(8 * b + j) * stride] = d * static_cast<float>(sc);  // exact products (11 x 6 bits)
            mins[(8 * b + j) * stride]   = dmin * static_cast<float>(mn);
        }
    }
}

OMNI_TARGET void decode_rows(const ggml_tensor * w, int64_t r0, decoded_chunk & out) {
    const int64_t k = w->ne[0], m = w->ne[1], n_sub = k / k_gemm_sub;
    const bool    with_mins = w->type == GGML_TYPE_Q4_K;
    out.codes.resize(static_cast<size_t>(k / 4 * k_gemm_rows));
    out.scales.assign(static_cast<size_t>(n_sub * k_gemm_rows), 0.0f);
    if (with_mins) {
        out.mins.assign(static_cast<size_t>(n_sub * k_gemm_rows), 0.0f);
    } else {
        out.mins.clear();
    }
    // Each row's codes are decoded in order into a row buffer, then transposed into the lanes
    thread_local std::vector<uint8_t> rows_buf;
    rows_buf.resize(static_cast<size_t>(k_gemm_rows * k));
    for (int r = 0; r < k_gemm_rows; ++r) {
        uint8_t * codes = rows_buf.data() + r * k;
        if (r0 + r >= m) {
            std::memset(codes, 0, static_cast<size_t>(k));
            continue;
        }
        const uint8_t * row    = static_cast<const uint8_t *>(w->data) + (r0 + r) * w->nb[1];
        float *         scales = out.scales.data() + r;
        switch (w->type) {
            case GGML_TYPE_Q4_0: decode_row_32(row, k, k_q4_codes, codes, scales, k_gemm_rows); break;
            case GGML_TYPE_IQ4_NL: decode_row_32(row, k, k_iq4_codes, codes, scales, k_gemm_rows); break;
            case GGML_TYPE_IQ4_XS: decode_row_iq4_xs(row, k, codes, scales, k_gemm_rows); break;
            default: decode_row_q4_k(row, k, codes, scales, out.mins.data() + r, k_gemm_rows); break;
        }
    }
    chunk_codes_from_rows(rows_buf.data(), k, out);
}

}  // namespace

OMNI_TARGET void chunk_codes_from_rows(const uint8_t * rows, int64_t k, decoded_chunk & out) {
    out.codes.resize(static_cast<size_t>(k / 4 * k_gemm_rows));
    // lane i of a 16-lane vector <- 4 codes of row 16 h + i: a gather with row-strided byte offsets
    alignas(64) int32_t offs[16];
    for (int i = 0; i < 16; ++i) offs[i] = static_cast<int32_t>(i * k);
    const __m512i vidx = _mm512_load_si512(offs);
    for (int h = 0; h < 2; ++h) {
        const uint8_t * base = rows + 16 * h * k;
        uint32_t *      dst  = out.codes.data() + 16 * h;
        for (int64_t k4 = 0; k4 < k / 4; ++k4) {
            _mm512_storeu_si512(dst + k4 * k_gemm_rows, _mm512_i32gather_epi32(vidx, base + 4 * k4, 1));
        }
    }
}

void decode_kquant_rows(const ggml_tensor * w, int64_t r0, decoded_chunk & out) { decode_rows(w, r0, out); }

#else  // no x86-64 kernel: gemm_lowbit_supported() is false and nothing calls the decoder

void decode_kquant_rows(const ggml_tensor *, int64_t, decoded_chunk &) {}
void chunk_codes_from_rows(const uint8_t *, int64_t, decoded_chunk &) {}

#endif

}  // namespace omni
