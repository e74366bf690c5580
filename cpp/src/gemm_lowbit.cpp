#include "gemm_lowbit.hpp"

#include "custom_gemm.hpp"
#include "gemm_iquant.hpp"
#include "gemm_kquant.hpp"

#include "ggml-cpu.h"

#include <algorithm>
#include <cfloat>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#    include <immintrin.h>
#    define OMNI_GEMM_LOWBIT 1
#    define OMNI_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi,f16c")))
#endif

namespace omni {

#ifdef OMNI_GEMM_LOWBIT

namespace {

constexpr int64_t k_sub    = k_gemm_sub;   // the unit of an exact integer sum (gemm_chunk.hpp; 16 or 256 for some)
constexpr int     k_rows   = k_gemm_rows;  // weight rows per decoded chunk and per micro-tile
constexpr int     k_tokens = 6;            // tokens per micro-tile: 2 x 6 int32 + 2 x 6 F32 accumulators

// ggml's Q8_0 block (ggml-common.h block_q8_0), which from_float writes: F16 scale, 32 int8 codes.
struct q8_block {
    uint16_t d;
    int8_t   qs[k_sub];
};
static_assert(sizeof(q8_block) == 34, "Q8_0 block layout");

// ggml's Q8_K block (block_q8_K), the vec_dot type of the 256-block K- and IQ-quants: F32 scale, 256
// int8 codes, sums of 16 (not read: the packing sums each 32 itself).
struct q8k_block {
    float   d;
    int8_t  qs[256];
    int16_t bsums[16];
};
static_assert(sizeof(q8k_block) == 292, "Q8_K block layout");

// One packed token row: K int8 codes, then per sub-block of `sub` (the weight format's: 32, 16 for those
// with scales per 16, 256 for Q2_K) d_x (F32), -offset sum(q_x) (int32, offset the weight format's code offset, so the
// GEMM starts its integer sums there), and per `msub` values (the granularity of the format's mins, sub or
// less: Q2_K's are per 16 with a scale per 256) -sum(q_x) d_x (F32, the factor of Q4_K's and Q2_K's mins);
// padded to 64 bytes.
struct packed_layout {
    int64_t k, sub, n_sub, msub, dx_off, ns_off, mx_off, row_bytes;
    int32_t offset;
    packed_layout(int64_t k_, int64_t sub_, int32_t offset_ = 0, int64_t msub_ = 0)
        : k(k_), sub(sub_), n_sub(k_ / sub_), msub(msub_ > 0 ? msub_ : sub_), dx_off(k_), ns_off(k_ + 4 * n_sub),
          mx_off(k_ + 8 * n_sub), offset(offset_) {
        row_bytes = (mx_off + 4 * (k_ / msub) + 63) / 64 * 64;
    }
};

// Threads take units of work from a counter in the packed tensor's last row, not a fixed share: on a
// loaded machine a thread that loses its core does not hold the others at the next barrier.
int64_t * work_counter(const ggml_tensor * packed) {
    return reinterpret_cast<int64_t *>(static_cast<char *>(packed->data) + (packed->ne[1] - 1) * packed->nb[1]);
}

struct rows_view {  // F32 rows of x with contiguous elements, in ggml order (i1 fastest)
    const ggml_tensor * t;
    const float * row(int64_t n) const {
        const int64_t i1 = n % t->ne[1], i2 = (n / t->ne[1]) % t->ne[2], i3 = n / (t->ne[1] * t->ne[2]);
        return reinterpret_cast<const float *>(static_cast<const char *>(t->data) + i1 * t->nb[1] + i2 * t->nb[2] +
                                               i3 * t->nb[3]);
    }
};

// One sub-block of rounded activations into a packed row: codes, scale, negated code sum.
void put_sub(char * out, const packed_layout & L, int64_t s, const int8_t * qs, float d) {
    if (out + s * L.sub != reinterpret_cast<const char *>(qs)) std::memcpy(out + s * L.sub, qs, static_cast<size_t>(L.sub));
    int32_t sum = 0;
    for (int64_t p = 0; p < L.sub / L.msub; ++p) {
        int32_t part = 0;
        for (int64_t i = 0; i < L.msub; ++i) part += qs[p * L.msub + i];
        const float mx = static_cast<float>(-part) * d;  // |part| <= 4064: exact, so one rounding
        std::memcpy(out + L.mx_off + 4 * (s * (L.sub / L.msub) + p), &mx, 4);
        sum += part;
    }
    std::memcpy(out + L.dx_off + 4 * s, &d, 4);
    const int32_t ns = -sum * L.offset;
    std::memcpy(out + L.ns_off + 4 * s, &ns, 4);
}

// A 256-block's scale d and per-16 code sums (sums16[i]: codes 16 i .. 16 i + 15) into the packed row's
// per-sub-block entries, from activation b0 on (the codes are already in place).
void put_block_sums(char * out, const packed_layout & L, int64_t b0, const int32_t * sums16, float d) {
    for (int64_t s = b0 / L.sub; s < (b0 + 256) / L.sub; ++s) {
        int32_t sum = 0;
        for (int64_t i = (s * L.sub - b0) / 16; i < ((s + 1) * L.sub - b0) / 16; ++i) sum += sums16[i];
        const int32_t ns = -sum * L.offset;
        std::memcpy(out + L.dx_off + 4 * s, &d, 4);
        std::memcpy(out + L.ns_off + 4 * s, &ns, 4);
    }
    for (int64_t j = b0 / L.msub; j < (b0 + 256) / L.msub; ++j) {
        int32_t part = 0;
        for (int64_t i = (j * L.msub - b0) / 16; i < ((j + 1) * L.msub - b0) / 16; ++i) part += sums16[i];
        const float mx = static_cast<float>(-part) * d;  // |part| <= 4064: exact, so one rounding
        std::memcpy(out + L.mx_off + 4 * j, &mx, 4);
    }
}

// ggml's Q8_K rounding of one row (ggml-quants.c quantize_row_q8_K_ref, which ggml-cpu's from_float for
// Q8_K is on x86: a scalar loop, 4x the cost of the Q8_0 one), vectorised with the same arithmetic, straight
// into the packed row: per 256 values, max = the first value of the largest magnitude, iscale = -127 / max
// (F32), q = min(127, round-half-even(iscale x)) (ggml's nearest_int adds 1.5 * 2^23, which rounds half
// to even as VCVTPS2DQ does), d = 1 / iscale. False for a row holding a NaN or an infinity, which ggml's
// scalar code treats its own way: the caller then rounds the whole row with it (overwriting this).
OMNI_TARGET bool pack_row_q8_k(const float * x, const packed_layout & L, char * out) {
    constexpr int kb = 256, nv = kb / 16;
    for (int64_t b0 = 0; b0 < L.k; b0 += kb) {
        __m512    v[nv];
        __m512    amax = _mm512_setzero_ps();
        __mmask16 bad  = 0;
        for (int i = 0; i < nv; ++i) {
            v[i] = _mm512_loadu_ps(x + b0 + 16 * i);
            bad |= _mm512_cmp_ps_mask(v[i], v[i], _CMP_UNORD_Q);  // a NaN
            amax = _mm512_max_ps(amax, _mm512_abs_ps(v[i]));
        }
        const float am = _mm512_reduce_max_ps(amax);
        if (bad != 0 || am > FLT_MAX) return false;
        int8_t * q = reinterpret_cast<int8_t *>(out) + b0;
        int32_t  sums16[nv];
        if (am == 0.0f) {
            std::memset(q, 0, kb);
            std::memset(sums16, 0, sizeof(sums16));
            put_block_sums(out, L, b0, sums16, 0.0f);
            continue;
        }
        float mx = 0.0f;
        for (int i = 0; i < nv; ++i) {  // the first element of that magnitude, with its sign
            const __mmask16 hit = _mm512_cmp_ps_mask(_mm512_abs_ps(v[i]), _mm512_set1_ps(am), _CMP_EQ_OQ);
            if (hit != 0) {
                mx = x[b0 + 16 * i + __builtin_ctz(hit)];
                break;
            }
        }
        const float  iscale = -127.f / mx;
        const __m512 vs     = _mm512_set1_ps(iscale);
        for (int i = 0; i < nv; ++i) {
            const __m512i c = _mm512_min_epi32(_mm512_cvtps_epi32(_mm512_mul_ps(vs, v[i])), _mm512_set1_epi32(127));
            _mm_storeu_si128(reinterpret_cast<__m128i *>(q + 16 * i), _mm512_cvtepi32_epi8(c));
            sums16[i] = _mm512_reduce_add_epi32(c);
        }
        put_block_sums(out, L, b0, sums16, 1.0f / iscale);
    }
    return true;
}

// dst I32 {row_bytes / 4, N + 1}: token rows rounded to Q (Q8_0 or Q8_K, the weight's vec_dot type) by
// ggml-cpu's from_float, split per SUB into codes, F32 scales and negated code sums; thread 0 zeroes the
// work counter in the extra last row (the graph's barrier after this node publishes it). userdata: the
// weight format's code offset.
template <ggml_type Q, int SUB, int MSUB = SUB>
void pack_op(ggml_tensor * dst, int ith, int nth, void * userdata) {
    using block = std::conditional_t<Q == GGML_TYPE_Q8_0, q8_block, q8k_block>;
    constexpr int64_t       per_block  = sizeof(block{}.qs) / SUB;
    const ggml_tensor *     x          = dst->src[0];
    const packed_layout     L(x->ne[0], SUB, static_cast<int32_t>(reinterpret_cast<intptr_t>(userdata)), MSUB);
    const int64_t           n          = ggml_nrows(x);
    const ggml_from_float_t from_float = ggml_get_type_traits_cpu(Q)->from_float;
    if (ith == 0) *work_counter(dst) = 0;
    const rows_view    xv{x};
    std::vector<block> blocks(static_cast<size_t>(L.n_sub / per_block));
    for (int64_t r = n * ith / nth; r < n * (ith + 1) / nth; ++r) {
        char * out = static_cast<char *>(dst->data) + r * dst->nb[1];
        if constexpr (Q == GGML_TYPE_Q8_K) {
            if (pack_row_q8_k(xv.row(r), L, out)) continue;  // else a non-finite value: ggml's own code
        }
        from_float(xv.row(r), blocks.data(), L.k);
        for (int64_t s = 0; s < L.n_sub; ++s) {
            const block & b = blocks[static_cast<size_t>(s / per_block)];
            float         d;
            if constexpr (Q == GGML_TYPE_Q8_0) {
                d = ggml_fp16_to_fp32(b.d);
            } else {
                d = b.d;
            }
            put_sub(out, L, s, b.qs + (s % per_block) * SUB, d);
        }
    }
}

// The weight block layouts (ggml-common.h block_q1_0 / block_q2_0): an F16 scale, then the codes.
constexpr int64_t k_q1_block = 128, k_q2_block = 64, k_block_code_bytes = 16;
constexpr size_t  k_q1_bytes = 2 + 16, k_q2_bytes = 2 + 16;

// The decode, 16 rows x one weight block at a time (AVX512-VBMI): the rows' 16 code bytes are loaded
// side by side, then per code byte j one byte permute puts byte j of rows 2i and 2i+1 in 64-bit
// lane i, and VPMULTISHIFTQB pulls each weight's field out of it into its own byte (Q2_0: the 2 bits of
// code q; Q1_0: the bit, moved up one place so the byte is 2 * bit), 16 rows x 4 weights per vector.
OMNI_TARGET inline __m128i load_codes(const uint8_t * p) {
    return p != nullptr ? _mm_loadu_si128(reinterpret_cast<const __m128i *>(p)) : _mm_setzero_si128();
}

OMNI_TARGET void decode_lowbit_rows(const ggml_tensor * w, int64_t r0, decoded_chunk & out) {
    const int64_t k = w->ne[0], m = w->ne[1], n_sub = k / k_sub;
    out.codes.resize(static_cast<size_t>(k / 4 * k_rows));
    out.scales.resize(static_cast<size_t>(n_sub * k_rows));
    out.mins.clear();
    const bool    q1        = w->type == GGML_TYPE_Q1_0;
    const int64_t blk       = q1 ? k_q1_block : k_q2_block;
    const size_t  blk_bytes = q1 ? k_q1_bytes : k_q2_bytes;
    const int64_t n_blk     = k / blk;
    alignas(64) uint8_t base[64], ctrl_q2[64], ctrl_q1[2][64];
    for (int p = 0; p < 64; ++p) {
        const int lane = p / 8, t = p % 8;  // 64-bit lane i takes rows 2i, 2i+1 (of 8) in bytes 0, 1
        base[p]        = static_cast<uint8_t>((2 * (lane % 4) + (t < 2 ? t : 0)) * 16);
        const int r = p / 4, e = p % 4;     // output byte: row r of 16, weight e of the lane's four
        ctrl_q2[p]  = static_cast<uint8_t>(8 * (r % 2) + 2 * e);
        for (int h = 0; h < 2; ++h) ctrl_q1[h][p] = static_cast<uint8_t>((8 * (r % 2) + 4 * h + e + 63) % 64);
    }
    const __m512i vbase = _mm512_load_si512(base), vq2 = _mm512_load_si512(ctrl_q2);
    const __m512i vq1[2] = {_mm512_load_si512(ctrl_q1[0]), _mm512_load_si512(ctrl_q1[1])};
    const __m512i three = _mm512_set1_epi8(3), two = _mm512_set1_epi8(2);
    for (int half = 0; half < 2; ++half) {
        const uint8_t * row[16];
        for (int r = 0; r < 16; ++r) {
            const int64_t i = r0 + 16 * half + r;
            row[r]          = i < m ? static_cast<const uint8_t *>(w->data) + i * w->nb[1] : nullptr;
        }
        for (int64_t b = 0; b < n_blk; ++b) {
            __m512i in[4];  // rows 4q .. 4q+3, 16 code bytes each
            for (int q = 0; q < 4; ++q) {
                const uint8_t * p[4];
                for (int i = 0; i < 4; ++i) p[i] = row[4 * q + i] != nullptr ? row[4 * q + i] + b * blk_bytes + 2 : nullptr;
                __m512i v = _mm512_castsi128_si512(load_codes(p[0]));
                v         = _mm512_inserti32x4(v, load_codes(p[1]), 1);
                v         = _mm512_inserti32x4(v, load_codes(p[2]), 2);
                in[q]     = _mm512_inserti32x4(v, load_codes(p[3]), 3);
            }
            for (int r = 0; r < 16; ++r) {
                float d = 0.0f;
                if (row[r] != nullptr) {
                    uint16_t h;
                    std::memcpy(&h, row[r] + b * blk_bytes, 2);
                    d = _cvtsh_ss(h);
                }
                for (int64_t s = b * blk / k_sub; s < (b + 1) * blk / k_sub; ++s) out.scales[s * k_rows + 16 * half + r] = d;
            }
            uint32_t * c = out.codes.data() + b * (blk / 4) * k_rows + 16 * half;
            for (int j = 0; j < k_block_code_bytes; ++j) {
                const __m512i idx = _mm512_add_epi8(vbase, _mm512_set1_epi8(static_cast<char>(j)));
                const __m512i lo  = _mm512_permutex2var_epi8(in[0], idx, in[1]);  // rows 0..7 -> lanes 0..3
                const __m512i hi  = _mm512_permutex2var_epi8(in[2], idx, in[3]);  // rows 8..15 -> lanes 4..7
                const __m512i x   = _mm512_mask_blend_epi8(0xffffffff00000000ull, lo, hi);
                if (q1) {
                    for (int h = 0; h < 2; ++h) {
                        _mm512_storeu_si512(c + (2 * j + h) * k_rows,
                                            _mm512_and_si512(_mm512_multishift_epi64_epi8(vq1[h], x), two));
                    }
                } else {
                    _mm512_storeu_si512(c + j * k_rows, _mm512_and_si512(_mm512_multishift_epi64_epi8(vq2, x), three));
                }
            }
        }
    }
}

// 32 decoded rows x T packed tokens -> C (token stride ldc floats), the first `rows` rows stored; codes
// offset by `offset` (gemm_chunk.hpp; the packing stored -offset sum(q_x) per sub-block), sub-blocks of SUB
// weights, and with MINS the chunk's mins subtracted. BLK > 0: the activations' scale d_x is the same for
// BLK sub-blocks in a row (Q8_K: one per 256), so the sub-blocks' sums are scaled by the weights' scales
// only, into a block accumulator that is scaled by d_x once per block -- one F32 multiply per sub-block
// less, as ggml's own Q8_K dot products sum; it needs 2 x T more registers, hence T <= 4. MSUB: the
// granularity of the mins (SUB, or a divisor of it).
template <int T, int SUB, bool MINS, int BLK, int MSUB = SUB>
OMNI_TARGET void micro_tile(const decoded_chunk & wc, const char * const * xrow, const packed_layout & L, float * c,
                            int64_t ldc, int rows, const float * bias) {
    static_assert(BLK == 0 || T <= 4, "registers: 2 T int32 sums, 2 T block and 2 T row accumulators");
    __m512 acc[2][T], blk[2][T];
#pragma GCC unroll 6
    for (int t = 0; t < T; ++t) acc[0][t] = acc[1][t] = blk[0][t] = blk[1][t] = _mm512_setzero_ps();
    const uint32_t * codes  = wc.codes.data();
    const float *    scales = wc.scales.data();
    const float *    mins   = wc.mins.data();
    for (int64_t s = 0; s < L.n_sub; ++s) {
        __m512i isum[2][T];
#pragma GCC unroll 6
        for (int t = 0; t < T; ++t) {  // start from -offset sum(q_x): the codes carry +offset
            int32_t ns;
            std::memcpy(&ns, xrow[t] + L.ns_off + 4 * s, 4);
            isum[0][t] = isum[1][t] = _mm512_set1_epi32(ns);
        }
        const uint32_t * cs = codes + s * (SUB / 4) * k_rows;
#pragma GCC unroll 8
        for (int j = 0; j < SUB / 4; ++j) {
            const __m512i w0 = _mm512_loadu_si512(cs + j * k_rows);
            const __m512i w1 = _mm512_loadu_si512(cs + j * k_rows + 16);
#pragma GCC unroll 6
            for (int t = 0; t < T; ++t) {
                int32_t four;
                std::memcpy(&four, xrow[t] + s * SUB + 4 * j, 4);
                const __m512i xb = _mm512_set1_epi32(four);
                isum[0][t]       = _mm512_dpbusd_epi32(isum[0][t], w0, xb);
                isum[1][t]       = _mm512_dpbusd_epi32(isum[1][t], w1, xb);
            }
        }
        const __m512 d0 = _mm512_loadu_ps(scales + s * k_rows);
        const __m512 d1 = _mm512_loadu_ps(scales + s * k_rows + 16);
        if constexpr (BLK > 0) {
#pragma GCC unroll 6
            for (int t = 0; t < T; ++t) {
                blk[0][t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum[0][t]), d0, blk[0][t]);
                blk[1][t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum[1][t]), d1, blk[1][t]);
            }
            if ((s + 1) % BLK == 0) {
#pragma GCC unroll 6
                for (int t = 0; t < T; ++t) {
                    float dx;
                    std::memcpy(&dx, xrow[t] + L.dx_off + 4 * s, 4);
                    const __m512 dxb = _mm512_set1_ps(dx);
                    acc[0][t]        = _mm512_fmadd_ps(blk[0][t], dxb, acc[0][t]);
                    acc[1][t]        = _mm512_fmadd_ps(blk[1][t], dxb, acc[1][t]);
                    blk[0][t] = blk[1][t] = _mm512_setzero_ps();
                }
            }
        } else {
#pragma GCC unroll 6
            for (int t = 0; t < T; ++t) {
                float dx;
                std::memcpy(&dx, xrow[t] + L.dx_off + 4 * s, 4);
                const __m512 dxb = _mm512_set1_ps(dx);
                acc[0][t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum[0][t]), _mm512_mul_ps(d0, dxb), acc[0][t]);
                acc[1][t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum[1][t]), _mm512_mul_ps(d1, dxb), acc[1][t]);
            }
        }
        if constexpr (MINS) {  // - min_j sum(q_x) d_x: the mins times the token's -sum(q_x) d_x
            for (int64_t j = s * (SUB / MSUB); j < (s + 1) * (SUB / MSUB); ++j) {
                const __m512 m0 = _mm512_loadu_ps(mins + j * k_rows);
                const __m512 m1 = _mm512_loadu_ps(mins + j * k_rows + 16);
#pragma GCC unroll 6
                for (int t = 0; t < T; ++t) {
                    float mx;
                    std::memcpy(&mx, xrow[t] + L.mx_off + 4 * j, 4);
                    const __m512 sb = _mm512_set1_ps(mx);
                    acc[0][t]       = _mm512_fmadd_ps(m0, sb, acc[0][t]);
                    acc[1][t]       = _mm512_fmadd_ps(m1, sb, acc[1][t]);
                }
            }
        }
    }
    const __mmask16 m0 = static_cast<__mmask16>(rows >= 16 ? 0xffff : (1u << rows) - 1);
    const __mmask16 m1 = static_cast<__mmask16>(rows >= 32 ? 0xffff : rows <= 16 ? 0 : (1u << (rows - 16)) - 1);
    const __m512    b0 = bias != nullptr ? _mm512_maskz_loadu_ps(m0, bias) : _mm512_setzero_ps();
    const __m512    b1 = bias != nullptr ? _mm512_maskz_loadu_ps(m1, bias + 16) : _mm512_setzero_ps();
#pragma GCC unroll 6
    for (int t = 0; t < T; ++t) {
        // the bias add ggml_add would make, one F32 rounding, fused into the store (x + 0 = x otherwise)
        _mm512_mask_storeu_ps(c + t * ldc, m0, bias != nullptr ? _mm512_add_ps(acc[0][t], b0) : acc[0][t]);
        _mm512_mask_storeu_ps(c + t * ldc + 16, m1, bias != nullptr ? _mm512_add_ps(acc[1][t], b1) : acc[1][t]);
    }
}

using tile_fn = void (*)(const decoded_chunk &, const char * const *, const packed_layout &, float *, int64_t, int,
                         const float *);
// the micro-tiles for 1 .. k_tokens tokens (BLK > 0: 1 .. 4)
template <int SUB, bool MINS, int BLK, int MSUB>
constexpr tile_fn k_tiles[k_tokens + 1] = {nullptr,
                                           micro_tile<1, SUB, MINS, BLK, MSUB>,
                                           micro_tile<2, SUB, MINS, BLK, MSUB>,
                                           micro_tile<3, SUB, MINS, BLK, MSUB>,
                                           micro_tile<4, SUB, MINS, BLK, MSUB>,
                                           BLK > 0 ? nullptr : micro_tile<5, SUB, MINS, 0, MSUB>,
                                           BLK > 0 ? nullptr : micro_tile<6, SUB, MINS, 0, MSUB>};

bool is_lowbit(ggml_type t) { return t == GGML_TYPE_Q1_0 || t == GGML_TYPE_Q2_0; }

// The engine's sub-block for a weight type (its scales' granularity): 16 for the formats with scales per
// 16 weights, 256 for Q2_K (its 4-bit scales are folded into the codes; gemm_iquant.hpp), else 32.
int sub_of(ggml_type t) { return iquant_takes(t) ? iquant_sub(t) : static_cast<int>(k_sub); }

// The constant the format's codes carry (gemm_chunk.hpp); Q1_0/Q2_0: c = 2 bit or q, offset 1.
int32_t code_offset(ggml_type t) {
    return is_lowbit(t) ? 1 : iquant_takes(t) ? iquant_code_offset(t) : kquant_code_offset(t);
}

// dst F32 {M, N...} = x W^T; src[0] W {K, M} (gemm_lowbit_takes, sub-blocks of SUB), src[1] the packed
// tokens, src[2] the bias or none. A unit of work is 32 weight rows (decoded once) against a group of
// tokens; the tokens are split into groups only when there are too few row chunks to keep every thread busy.
template <int SUB, int BLK, int MSUB = SUB>
void gemm_op(ggml_tensor * dst, int, int nth, void *) {
    constexpr int       tt   = BLK > 0 ? 4 : k_tokens;  // tokens per micro-tile
    const ggml_tensor * w    = dst->src[0];
    const ggml_tensor * xp   = dst->src[1];
    const float *       bias = dst->src[2] != nullptr ? static_cast<const float *>(dst->src[2]->data) : nullptr;
    const packed_layout L(w->ne[0], SUB, 0, MSUB);
    const int64_t       m = w->ne[1], n = ggml_nrows(dst);
    const int64_t       chunks = (m + k_rows - 1) / k_rows;
    const int64_t       tiles  = (n + tt - 1) / tt;
    const int64_t       groups = chunks >= 4 * nth ? 1 : std::max<int64_t>(1, std::min(tiles / 8, (4 * nth + chunks - 1) / chunks));
    const int64_t       units  = chunks * groups;
    const int64_t       ldc    = dst->nb[1] / sizeof(float);
    int64_t *           next   = work_counter(xp);
    const bool          lowbit = is_lowbit(w->type), iquant = iquant_takes(w->type);
    thread_local decoded_chunk wc;
    int64_t                    decoded = -1;  // the chunk in wc, for this call
    for (int64_t u = __atomic_fetch_add(next, 1, __ATOMIC_RELAXED); u < units;
         u = __atomic_fetch_add(next, 1, __ATOMIC_RELAXED)) {
        const int64_t ch = u / groups, g = u % groups;
        if (ch != decoded) {
            if (lowbit) {
                decode_lowbit_rows(w, ch * k_rows, wc);
            } else if (iquant) {
                decode_iquant_rows(w, ch * k_rows, wc);
            } else {
                decode_kquant_rows(w, ch * k_rows, wc);
            }
            decoded = ch;
        }
        const int64_t r0   = ch * k_rows;
        const int     rows = static_cast<int>(std::min<int64_t>(k_rows, m - r0));
        for (int64_t tile = tiles * g / groups; tile < tiles * (g + 1) / groups; ++tile) {
            const int64_t t0 = tile * tt;
            const int     nt = static_cast<int>(std::min<int64_t>(tt, n - t0));
            const char *  xrow[k_tokens];
            for (int t = 0; t < nt; ++t) xrow[t] = static_cast<const char *>(xp->data) + (t0 + t) * xp->nb[1];
            (wc.mins.empty() ? k_tiles<SUB, false, BLK, MSUB> : k_tiles<SUB, true, BLK, MSUB>)[nt](
                wc, xrow, L, static_cast<float *>(dst->data) + t0 * ldc + r0, ldc, rows, bias != nullptr ? bias + r0 : nullptr);
        }
    }
}

}  // namespace

bool gemm_lowbit_supported() {
    static const bool ok = [] {
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni") &&
               __builtin_cpu_supports("avx512vbmi") && __builtin_cpu_supports("f16c");
    }();
    return ok;
}

bool gemm_lowbit_takes(ggml_type t) { return is_lowbit(t) || kquant_takes(t) || iquant_takes(t); }

ggml_tensor * gemm_lowbit(ggml_context * ctx, ggml_tensor * w, ggml_tensor * x, ggml_tensor * b) {
    if (!gemm_lowbit_supported() || x->type != GGML_TYPE_F32 || !gemm_lowbit_takes(w->type)) return nullptr;
    if (w->ne[2] != 1 || w->ne[3] != 1 || w->ne[0] != x->ne[0] || w->ne[0] % ggml_blck_size(w->type) != 0) return nullptr;
    // rows of whole blocks, packed (a view of a weight's leading rows is fine; a column slice is not)
    if (w->nb[0] != ggml_type_size(w->type) || w->nb[1] != ggml_row_size(w->type, w->ne[0])) return nullptr;
    if (x->nb[0] != sizeof(float)) return nullptr;
    if (b != nullptr && (b->type != GGML_TYPE_F32 || !ggml_is_contiguous(b) || ggml_nelements(b) != w->ne[1])) {
        return nullptr;
    }
    const int           sub  = sub_of(w->type);
    const bool          q2_k = w->type == GGML_TYPE_Q2_K;  // a scale per 256, mins per 16
    const packed_layout L(w->ne[0], sub, 0, q2_k ? 16 : sub);
    // the activations rounded as ggml_mul_mat rounds them for this weight type: its vec_dot type
    const bool q8_k = ggml_get_type_traits_cpu(w->type)->vec_dot_type == GGML_TYPE_Q8_K;
    if (!q8_k && sub != k_sub) return nullptr;  // no format pairs Q8_0 with other sub-blocks
    const ggml_custom_op_t pack = !q8_k ? pack_op<GGML_TYPE_Q8_0, 32>
                                  : q2_k ? pack_op<GGML_TYPE_Q8_K, 256, 16>
                                  : sub == 16 ? pack_op<GGML_TYPE_Q8_K, 16> : pack_op<GGML_TYPE_Q8_K, 32>;
    // Q8_K's d_x is one per 256: the sub-blocks' sums are scaled by it once per block (micro_tile's BLK)
    const ggml_custom_op_t gemm = !q8_k ? gemm_op<32, 0>
                                  : q2_k ? gemm_op<256, 1, 16>
                                  : sub == 16 ? gemm_op<16, 16> : gemm_op<32, 8>;
    return packed_gemm_nodes(ctx, w, x, b, L.row_bytes / 4, ggml_nrows(x) + 1, pack, gemm,
                             q8_k ? "gemm_lowbit (Q8_K x)" : "gemm_lowbit (Q8_0 x)", "gemm_lowbit (x W^T)",
                             reinterpret_cast<void *>(static_cast<intptr_t>(code_offset(w->type))));
}

bool is_gemm_lowbit_node(const ggml_tensor * t) {
    return is_custom_node_of(t, {pack_op<GGML_TYPE_Q8_0, 32>, pack_op<GGML_TYPE_Q8_K, 32>, pack_op<GGML_TYPE_Q8_K, 16>,
                                 pack_op<GGML_TYPE_Q8_K, 256, 16>, gemm_op<32, 0>, gemm_op<16, 16>, gemm_op<32, 8>,
                                 gemm_op<256, 1, 16>});
}

#else  // no x86-64 AVX512 kernel in this build

bool gemm_lowbit_supported() { return false; }
bool gemm_lowbit_takes(ggml_type) { return false; }
ggml_tensor * gemm_lowbit(ggml_context *, ggml_tensor *, ggml_tensor *, ggml_tensor *) { return nullptr; }
bool is_gemm_lowbit_node(const ggml_tensor *) { return false; }

#endif

}  // namespace omni
