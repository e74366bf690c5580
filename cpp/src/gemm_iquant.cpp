#include "gemm_iquant.hpp"

#include <cmath>
#include <cstring>
#include <vector>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#    include <immintrin.h>
#    define OMNI_GEMM_IQUANT 1
#    define OMNI_TARGET __attribute__((target("avx2,avx512f,avx512bw,avx512vl,f16c")))
#endif

namespace omni {

bool iquant_takes(ggml_type t) {
    switch (t) {
        case GGML_TYPE_Q2_K: case GGML_TYPE_IQ2_XXS: case GGML_TYPE_IQ2_XS: case GGML_TYPE_IQ2_S:
        case GGML_TYPE_IQ3_XXS: case GGML_TYPE_IQ3_S: case GGML_TYPE_IQ1_M: return true;
        default: return false;
    }
}

int iquant_sub(ggml_type t) {
    if (t == GGML_TYPE_Q2_K) return 256;
    return t == GGML_TYPE_IQ2_XS || t == GGML_TYPE_IQ2_S || t == GGML_TYPE_IQ1_M ? 16 : 32;
}

int iquant_code_offset(ggml_type t) { return t == GGML_TYPE_Q2_K ? 0 : 128; }

#ifdef OMNI_GEMM_IQUANT

namespace {

constexpr int64_t k_qk = 256;  // weights per block, every format here

// Block sizes in bytes (ggml-common.h block_q2_K, block_iq2_xxs, ...).
constexpr size_t k_q2_k_bytes = 84, k_iq2_xxs_bytes = 66, k_iq2_xs_bytes = 74, k_iq2_s_bytes = 82,
                 k_iq3_xxs_bytes = 98, k_iq3_s_bytes = 110, k_iq1_m_bytes = 56;

constexpr uint64_t k_bytes_128 = 0x8080808080808080ull;  // 128 in every byte
constexpr uint64_t k_bytes_1   = 0x0101010101010101ull;

inline uint16_t rd16(const uint8_t * p) {
    uint16_t v;
    std::memcpy(&v, p, 2);
    return v;
}
inline uint32_t rd32(const uint8_t * p) {
    uint32_t v;
    std::memcpy(&v, p, 4);
    return v;
}
inline void wr16(uint8_t * p, uint16_t v) { std::memcpy(p, &v, 2); }

// The grids as unsigned codes, 8 bytes per entry (the 4-wide IQ3 grids: 4 bytes in the low half):
// IQ2_* / IQ3_* entries hold the magnitudes g (their codes are 128 +- g, the sign per weight);
// IQ1_M's hold 128 + 8 g.
struct grids {
    std::vector<uint64_t> iq2xxs, iq2xs, iq2s, iq1m;
    std::vector<uint32_t> iq3xxs, iq3s;
    uint64_t              sign_mask[256];  // byte i all ones where bit i of the index is set
    uint8_t               parity_signs[128];  // 7 stored sign bits -> 8 (the 8th makes their count even)
};

// ggml's dequantized values of probe blocks: `blocks` of type t, n_blocks of them.
std::vector<float> dequant(ggml_type t, const std::vector<uint8_t> & blocks, int64_t n_blocks) {
    std::vector<float> y(static_cast<size_t>(n_blocks * k_qk));
    ggml_get_type_traits(t)->to_float(blocks.data(), y.data(), n_blocks * k_qk);
    return y;
}

// Entry i of an n-entry grid of `width` values each: y[width i + j] / unit (+ shift), packed as bytes.
template <typename U>
std::vector<U> grid_from(const std::vector<float> & y, int n, int width, float unit, float shift, int mult, int add) {
    std::vector<U> g(static_cast<size_t>(n), 0);
    for (int i = 0; i < n; ++i) {
        for (int j = 0; j < width; ++j) {
            const int v = static_cast<int>(std::lrint(y[static_cast<size_t>(width * i + j)] / unit - shift));
            g[static_cast<size_t>(i)] |= static_cast<U>(static_cast<U>(static_cast<uint8_t>(mult * v + add)) << (8 * j));
        }
    }
    return g;
}

const grids & the_grids() {
    static const grids G = [] {
        grids g{};
        const uint16_t one = 0x3C00;  // F16 1.0
        {  // IQ2_XXS: per 32 weights 4 index bytes, then signs 0 and ls 0 (unit 1/8); 32 indices a block
            std::vector<uint8_t> b(8 * k_iq2_xxs_bytes, 0);
            for (int i = 0; i < 256; ++i) {
                uint8_t * blk = b.data() + (i / 32) * k_iq2_xxs_bytes;
                wr16(blk, one);
                blk[2 + 8 * ((i % 32) / 4) + i % 4] = static_cast<uint8_t>(i);
            }
            g.iq2xxs = grid_from<uint64_t>(dequant(GGML_TYPE_IQ2_XXS, b, 8), 256, 8, 0.125f, 0, 1, 0);
        }
        {  // IQ2_XS: 16-bit entries (9-bit index, 7 sign bits 0), scales 0 (unit 1/8)
            std::vector<uint8_t> b(16 * k_iq2_xs_bytes, 0);
            for (int i = 0; i < 512; ++i) {
                uint8_t * blk = b.data() + (i / 32) * k_iq2_xs_bytes;
                wr16(blk, one);
                wr16(blk + 2 + 2 * (i % 32), static_cast<uint16_t>(i));
            }
            g.iq2xs = grid_from<uint64_t>(dequant(GGML_TYPE_IQ2_XS, b, 16), 512, 8, 0.125f, 0, 1, 0);
        }
        {  // IQ2_S: low index bytes qs[0..31], signs qs[32..63] 0, 2 high bits per entry in qh, scales 0
            std::vector<uint8_t> b(32 * k_iq2_s_bytes, 0);
            for (int i = 0; i < 1024; ++i) {
                uint8_t * blk = b.data() + (i / 32) * k_iq2_s_bytes;
                const int e = i % 32;
                wr16(blk, one);
                blk[2 + e] = static_cast<uint8_t>(i & 255);
                blk[2 + 64 + e / 4] |= static_cast<uint8_t>(((i >> 8) & 3) << (2 * (e % 4)));
            }
            g.iq2s = grid_from<uint64_t>(dequant(GGML_TYPE_IQ2_S, b, 32), 1024, 8, 0.125f, 0, 1, 0);
        }
        {  // IQ3_XXS: 64 index bytes per block (4 weights each), scales and signs 0 (unit 1/4)
            std::vector<uint8_t> b(4 * k_iq3_xxs_bytes, 0);
            for (int i = 0; i < 256; ++i) {
                uint8_t * blk = b.data() + (i / 64) * k_iq3_xxs_bytes;
                wr16(blk, one);
                blk[2 + i % 64] = static_cast<uint8_t>(i);
            }
            g.iq3xxs = grid_from<uint32_t>(dequant(GGML_TYPE_IQ3_XXS, b, 4), 256, 4, 0.25f, 0, 1, 0);
        }
        {  // IQ3_S: low index bytes, the 9th bit of entry s of sub-block j in bit s of qh[j]; signs and scales 0
            std::vector<uint8_t> b(8 * k_iq3_s_bytes, 0);
            for (int i = 0; i < 512; ++i) {
                uint8_t * blk = b.data() + (i / 64) * k_iq3_s_bytes;
                const int e = i % 64;
                wr16(blk, one);
                blk[2 + e] = static_cast<uint8_t>(i & 255);
                blk[2 + 64 + e / 8] |= static_cast<uint8_t>(((i >> 8) & 1) << (e % 8));
            }
            g.iq3s = grid_from<uint32_t>(dequant(GGML_TYPE_IQ3_S, b, 8), 512, 4, 1.0f, 0, 1, 0);
        }
        {  // IQ1_M: low index bytes, 3 high bits per entry in qh (shift sign 0: +1/8), scales 0, d = 1.0 in the
           // scales' top nibbles (0x3C00: nibble 2 = 0xC, nibble 3 = 0x3)
            std::vector<uint8_t> b(64 * k_iq1_m_bytes, 0);
            for (int i = 0; i < 2048; ++i) {
                uint8_t * blk = b.data() + (i / 32) * k_iq1_m_bytes;
                const int e = i % 32;
                blk[e] = static_cast<uint8_t>(i & 255);
                blk[32 + e / 2] |= static_cast<uint8_t>(((i >> 8) & 7) << (4 * (e % 2)));
                wr16(blk + 48 + 4, 0xC000);
                wr16(blk + 48 + 6, 0x3000);
            }
            g.iq1m = grid_from<uint64_t>(dequant(GGML_TYPE_IQ1_M, b, 64), 2048, 8, 1.0f, 0.125f, 8, 128);
        }
        for (int s = 0; s < 256; ++s) {
            uint64_t m = 0;
            for (int j = 0; j < 8; ++j) m |= (s >> j & 1) ? 0xffull << (8 * j) : 0;
            g.sign_mask[s] = m;
        }
        for (int s = 0; s < 128; ++s) g.parity_signs[s] = static_cast<uint8_t>(s | (__builtin_popcount(s) & 1) << 7);
        return g;
    }();
    return G;
}

// 8 codes 128 +- g from 8 magnitudes and 8 sign bits.
inline uint64_t signed_codes(uint64_t mag, uint64_t mask) {
    const uint64_t pos = k_bytes_128 + mag, neg = k_bytes_128 - mag;  // bytewise: g <= 62, no carries
    return pos ^ ((pos ^ neg) & mask);
}

OMNI_TARGET inline float f16(uint16_t h) { return _cvtsh_ss(h); }

// Per-row decoders: K codes into `codes`, the scale (and min) of sub-block j at scales[j * stride].

// Q2_K: codes sc q (<= 45: the 4-bit scale per 16 folded in, so one scale d per 256), mins per 16.
OMNI_TARGET void row_q2_k(const uint8_t * row, int64_t k, uint8_t * codes, float * scales, float * mins, int64_t st) {
    const __m256i three = _mm256_set1_epi8(3);
    for (int64_t b = 0; b < k / k_qk; ++b) {
        const uint8_t * blk = row + b * k_q2_k_bytes;  // scales[16], qs[64], d, dmin
        const float     d = f16(rd16(blk + 80)), dmin = f16(rd16(blk + 82));
        for (int n = 0; n < 2; ++n) {  // per 128 weights 32 bytes; weight 32 j + l is bits 2j of byte l
            const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(blk + 16 + 32 * n));
            for (int j = 0; j < 4; ++j) {
                // weights 0-15 and 16-31 of these 32 have scales i and i + 1: q -> sc q by a table per lane
                const int     i  = 8 * n + 2 * j;
                const char    s0 = static_cast<char>(blk[i] & 15), s1 = static_cast<char>(blk[i + 1] & 15);
                const __m256i table = _mm256_setr_epi8(0, s0, static_cast<char>(2 * s0), static_cast<char>(3 * s0), 0, 0, 0,
                                                       0, 0, 0, 0, 0, 0, 0, 0, 0, 0, s1, static_cast<char>(2 * s1),
                                                       static_cast<char>(3 * s1), 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
                const __m256i q = _mm256_and_si256(_mm256_srli_epi16(v, 2 * j), three);
                _mm256_storeu_si256(reinterpret_cast<__m256i *>(codes + b * k_qk + 128 * n + 32 * j),
                                    _mm256_shuffle_epi8(table, q));
            }
        }
        scales[b * st] = d;
        for (int i = 0; i < 16; ++i) mins[(16 * b + i) * st] = dmin * static_cast<float>(blk[i] >> 4);
    }
}

OMNI_TARGET void row_iq2_xxs(const grids & g, const uint8_t * row, int64_t k, uint8_t * codes, float * scales, int64_t st) {
    for (int64_t b = 0; b < k / k_qk; ++b) {
        const uint8_t * blk = row + b * k_iq2_xxs_bytes;
        const float     d   = f16(rd16(blk));
        for (int j = 0; j < 8; ++j) {  // per 32: 4 index bytes, then 4 x 7 sign bits and ls in the top 4
            const uint8_t * q   = blk + 2 + 8 * j;
            const uint32_t  aux = rd32(q + 4);
            scales[(8 * b + j) * st] = d * (0.5f + static_cast<float>(aux >> 28)) * 0.25f;
            for (int l = 0; l < 4; ++l) {
                const uint64_t c = signed_codes(g.iq2xxs[q[l]], g.sign_mask[g.parity_signs[(aux >> (7 * l)) & 127]]);
                std::memcpy(codes + b * k_qk + 32 * j + 8 * l, &c, 8);
            }
        }
    }
}

OMNI_TARGET void row_iq2_xs(const grids & g, const uint8_t * row, int64_t k, uint8_t * codes, float * scales, int64_t st) {
    for (int64_t b = 0; b < k / k_qk; ++b) {
        const uint8_t * blk = row + b * k_iq2_xs_bytes;  // d, qs (32 x 16 bits), scales[8]
        const float     d   = f16(rd16(blk));
        for (int j = 0; j < 8; ++j) {
            const uint8_t ls = blk[2 + 64 + j];
            scales[(16 * b + 2 * j) * st]     = d * (0.5f + static_cast<float>(ls & 15)) * 0.25f;
            scales[(16 * b + 2 * j + 1) * st] = d * (0.5f + static_cast<float>(ls >> 4)) * 0.25f;
            for (int l = 0; l < 4; ++l) {
                const uint16_t q = rd16(blk + 2 + 2 * (4 * j + l));
                const uint64_t c = signed_codes(g.iq2xs[q & 511], g.sign_mask[g.parity_signs[q >> 9]]);
                std::memcpy(codes + b * k_qk + 32 * j + 8 * l, &c, 8);
            }
        }
    }
}

OMNI_TARGET void row_iq2_s(const grids & g, const uint8_t * row, int64_t k, uint8_t * codes, float * scales, int64_t st) {
    for (int64_t b = 0; b < k / k_qk; ++b) {
        const uint8_t * blk = row + b * k_iq2_s_bytes;  // d, qs[32] low index bits, signs[32], qh[8], scales[8]
        const float     d   = f16(rd16(blk));
        for (int j = 0; j < 8; ++j) {
            const uint8_t ls = blk[2 + 72 + j], qh = blk[2 + 64 + j];
            scales[(16 * b + 2 * j) * st]     = d * (0.5f + static_cast<float>(ls & 15)) * 0.25f;
            scales[(16 * b + 2 * j + 1) * st] = d * (0.5f + static_cast<float>(ls >> 4)) * 0.25f;
            for (int l = 0; l < 4; ++l) {
                const int      idx = blk[2 + 4 * j + l] | ((qh >> (2 * l)) & 3) << 8;
                const uint64_t c   = signed_codes(g.iq2s[static_cast<size_t>(idx)], g.sign_mask[blk[2 + 32 + 4 * j + l]]);
                std::memcpy(codes + b * k_qk + 32 * j + 8 * l, &c, 8);
            }
        }
    }
}

OMNI_TARGET void row_iq3_xxs(const grids & g, const uint8_t * row, int64_t k, uint8_t * codes, float * scales, int64_t st) {
    for (int64_t b = 0; b < k / k_qk; ++b) {
        const uint8_t * blk = row + b * k_iq3_xxs_bytes;  // d, 64 index bytes, 8 x 32 bits of signs and ls
        const float     d   = f16(rd16(blk));
        for (int j = 0; j < 8; ++j) {
            const uint32_t aux = rd32(blk + 2 + 64 + 4 * j);
            scales[(8 * b + j) * st] = d * (0.5f + static_cast<float>(aux >> 28)) * 0.5f;
            const uint8_t * q = blk + 2 + 8 * j;
            for (int l = 0; l < 4; ++l) {
                const uint64_t mag = g.iq3xxs[q[2 * l]] | static_cast<uint64_t>(g.iq3xxs[q[2 * l + 1]]) << 32;
                const uint64_t c   = signed_codes(mag, g.sign_mask[g.parity_signs[(aux >> (7 * l)) & 127]]);
                std::memcpy(codes + b * k_qk + 32 * j + 8 * l, &c, 8);
            }
        }
    }
}

OMNI_TARGET void row_iq3_s(const grids & g, const uint8_t * row, int64_t k, uint8_t * codes, float * scales, int64_t st) {
    for (int64_t b = 0; b < k / k_qk; ++b) {
        const uint8_t * blk = row + b * k_iq3_s_bytes;  // d, qs[64], qh[8], signs[32], scales[4]
        const float     d   = f16(rd16(blk));
        for (int j = 0; j < 8; ++j) {
            const int ls = (blk[2 + 104 + j / 2] >> (4 * (j % 2))) & 15;
            scales[(8 * b + j) * st] = d * static_cast<float>(1 + 2 * ls);
            const uint8_t * q  = blk + 2 + 8 * j;
            const int       qh = blk[2 + 64 + j];
            for (int l = 0; l < 4; ++l) {
                const int      i1  = q[2 * l] | ((qh >> (2 * l)) & 1) << 8;
                const int      i2  = q[2 * l + 1] | ((qh >> (2 * l + 1)) & 1) << 8;
                const uint64_t mag = g.iq3s[static_cast<size_t>(i1)] | static_cast<uint64_t>(g.iq3s[static_cast<size_t>(i2)]) << 32;
                const uint64_t c   = signed_codes(mag, g.sign_mask[blk[2 + 72 + 4 * j + l]]);
                std::memcpy(codes + b * k_qk + 32 * j + 8 * l, &c, 8);
            }
        }
    }
}

OMNI_TARGET void row_iq1_m(const grids & g, const uint8_t * row, int64_t k, uint8_t * codes, float * scales, int64_t st) {
    for (int64_t b = 0; b < k / k_qk; ++b) {
        const uint8_t * blk = row + b * k_iq1_m_bytes;  // qs[32], qh[16], scales as 4 x 16 bits
        uint16_t        sc[4];
        std::memcpy(sc, blk + 48, 8);
        const uint16_t dh = static_cast<uint16_t>((sc[0] >> 12) | ((sc[1] >> 8) & 0x00f0) | ((sc[2] >> 4) & 0x0f00) |
                                                  (sc[3] & 0xf000));
        const float    d  = _cvtsh_ss(dh);
        for (int j = 0; j < 8; ++j) {  // 32 weights: two scales of 3 bits, four groups of 8
            const int s = sc[j / 2] >> (6 * (j % 2));
            // w = d (2 ls + 1) (g +- 1/8) = [d (2 ls + 1) / 8] (8 g +- 1): the / 8 is exact
            scales[(16 * b + 2 * j) * st]     = d * static_cast<float>(2 * (s & 7) + 1) * 0.125f;
            scales[(16 * b + 2 * j + 1) * st] = d * static_cast<float>(2 * ((s >> 3) & 7) + 1) * 0.125f;
            for (int l = 0; l < 4; ++l) {
                const int      qh  = blk[32 + 2 * j + l / 2] >> (4 * (l % 2));
                const int      idx = blk[4 * j + l] | (qh & 7) << 8;
                const uint64_t c   = (qh & 8) != 0 ? g.iq1m[static_cast<size_t>(idx)] - k_bytes_1
                                                   : g.iq1m[static_cast<size_t>(idx)] + k_bytes_1;
                std::memcpy(codes + b * k_qk + 32 * j + 8 * l, &c, 8);
            }
        }
    }
}

}  // namespace

OMNI_TARGET void decode_iquant_rows(const ggml_tensor * w, int64_t r0, decoded_chunk & out) {
    const grids & g   = the_grids();
    const int64_t k = w->ne[0], m = w->ne[1], sub = iquant_sub(w->type), n_sub = k / sub;
    const bool    with_mins = w->type == GGML_TYPE_Q2_K;  // per 16, its scales per 256
    out.scales.assign(static_cast<size_t>(n_sub * k_gemm_rows), 0.0f);
    if (with_mins) {
        out.mins.assign(static_cast<size_t>(k / 16 * k_gemm_rows), 0.0f);
    } else {
        out.mins.clear();
    }
    thread_local std::vector<uint8_t> rows_buf;
    rows_buf.resize(static_cast<size_t>(k_gemm_rows * k));
    for (int r = 0; r < k_gemm_rows; ++r) {
        uint8_t * codes = rows_buf.data() + r * k;
        if (r0 + r >= m) {  // past the matrix: codes 0 with zero scales contribute nothing
            std::memset(codes, 0, static_cast<size_t>(k));
            continue;
        }
        const uint8_t * row = static_cast<const uint8_t *>(w->data) + (r0 + r) * w->nb[1];
        float *         sc  = out.scales.data() + r;
        switch (w->type) {
            case GGML_TYPE_Q2_K: row_q2_k(row, k, codes, sc, out.mins.data() + r, k_gemm_rows); break;
            case GGML_TYPE_IQ2_XXS: row_iq2_xxs(g, row, k, codes, sc, k_gemm_rows); break;
            case GGML_TYPE_IQ2_XS: row_iq2_xs(g, row, k, codes, sc, k_gemm_rows); break;
            case GGML_TYPE_IQ2_S: row_iq2_s(g, row, k, codes, sc, k_gemm_rows); break;
            case GGML_TYPE_IQ3_XXS: row_iq3_xxs(g, row, k, codes, sc, k_gemm_rows); break;
            case GGML_TYPE_IQ3_S: row_iq3_s(g, row, k, codes, sc, k_gemm_rows); break;
            default: row_iq1_m(g, row, k, codes, sc, k_gemm_rows); break;
        }
    }
    chunk_codes_from_rows(rows_buf.data(), k, out);
}

#else  // no x86-64 kernel: gemm_lowbit_supported() is false and nothing calls the decoder

void decode_iquant_rows(const ggml_tensor *, int64_t, decoded_chunk &) {}

#endif

}  // namespace omni
