#include "gemm_bf16.hpp"

#include "custom_gemm.hpp"

#include <algorithm>
#include <cstdint>
#include <cstring>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#    include <immintrin.h>
#    define OMNI_GEMM_BF16 1
#    define OMNI_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16")))
#endif

namespace omni {

#ifdef OMNI_GEMM_BF16

namespace {

constexpr int k_rows  = 8;                 // weight rows per micro-tile
constexpr int k_chunk = 8;                 // micro-tiles (64 weight rows) per unit of work

// Threads take chunks of work from a counter in the packed tensor's last row, not a fixed share: on a
// loaded machine a thread that loses its core does not hold the others at the next barrier.
int64_t * work_counter(const ggml_tensor * packed) {
    return reinterpret_cast<int64_t *>(static_cast<char *>(packed->data) + (packed->ne[1] - 1) * packed->nb[1]);
}
constexpr int k_vecs  = 3;                 // 16-token vectors per panel
constexpr int k_panel = 16 * k_vecs;       // tokens per panel

// Round-to-nearest-even F32 -> BF16 of 16 floats, bit for bit ggml_compute_fp32_to_bf16 (NaNs made
// quiet), returned in the high half of each 32-bit lane.
OMNI_TARGET inline __m512i bf16_hi(__m512 v) {
    const __m512i u    = _mm512_castps_si512(v);
    const __m512i odd  = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
    const __m512i r    = _mm512_add_epi32(u, _mm512_add_epi32(_mm512_set1_epi32(0x7fff), odd));
    const __mmask16 nan = _mm512_cmpgt_epu32_mask(_mm512_and_si512(u, _mm512_set1_epi32(0x7fffffff)),
                                                  _mm512_set1_epi32(0x7f800000));
    // NaN: (u >> 16) | 64 in the high half
    const __m512i q = _mm512_or_si512(u, _mm512_set1_epi32(64 << 16));
    return _mm512_mask_mov_epi32(r, nan, q);
}

// One token row (K floats, K even) -> K/2 int32 pairs (element 2j in the low half).
OMNI_TARGET void row_to_pairs(const float * x, int64_t k, int32_t * out) {
    // word indices of the high halves of 32 lanes taken from two vectors
    alignas(64) static const uint16_t idx_hi[32] = {1,  3,  5,  7,  9,  11, 13, 15, 17, 19, 21,
                                                    23, 25, 27, 29, 31, 33, 35, 37, 39, 41, 43,
                                                    45, 47, 49, 51, 53, 55, 57, 59, 61, 63};
    const __m512i idx = _mm512_load_si512(idx_hi);
    int64_t       i   = 0;
    for (; i + 32 <= k; i += 32) {
        const __m512i a = bf16_hi(_mm512_loadu_ps(x + i));
        const __m512i b = bf16_hi(_mm512_loadu_ps(x + i + 16));
        _mm512_storeu_si512(out + i / 2, _mm512_permutex2var_epi16(a, idx, b));
    }
    for (; i < k; i += 2) {
        uint32_t lo, hi;
        std::memcpy(&lo, x + i, 4);
        std::memcpy(&hi, x + i + 1, 4);
        auto round = [](uint32_t u) -> uint32_t {
            if ((u & 0x7fffffff) > 0x7f800000) return (u >> 16) | 64;
            return (u + (0x7fff + ((u >> 16) & 1))) >> 16;
        };
        out[i / 2] = static_cast<int32_t>(round(lo) | (round(hi) << 16));
    }
}

struct rows_view {  // F32 rows of x with contiguous elements, in ggml order (i1 fastest)
    const ggml_tensor * t;
    const float * row(int64_t n) const {
        const int64_t i1 = n % t->ne[1], i2 = (n / t->ne[1]) % t->ne[2], i3 = n / (t->ne[1] * t->ne[2]);
        return reinterpret_cast<const float *>(static_cast<const char *>(t->data) + i1 * t->nb[1] + i2 * t->nb[2] +
                                               i3 * t->nb[3]);
    }
};

// 16 consecutive pairs of one token row (32 floats from x) -> one vector of 16 int32 pairs.
OMNI_TARGET inline __m512i pairs16(const float * x) {
    alignas(64) static const uint16_t idx_hi[32] = {1,  3,  5,  7,  9,  11, 13, 15, 17, 19, 21,
                                                    23, 25, 27, 29, 31, 33, 35, 37, 39, 41, 43,
                                                    45, 47, 49, 51, 53, 55, 57, 59, 61, 63};
    return _mm512_permutex2var_epi16(bf16_hi(_mm512_loadu_ps(x)), _mm512_load_si512(idx_hi),
                                     bf16_hi(_mm512_loadu_ps(x + 16)));
}

// r[i] (16 int32 each) -> r[j] = the j-th elements of every r[i]: a 16 x 16 transpose in registers.
OMNI_TARGET inline void transpose16(__m512i r[16]) {
    __m512i t[16], u[16];
    for (int i = 0; i < 8; ++i) {
        t[2 * i]     = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
    }
    for (int i = 0; i < 4; ++i) {  // u[4i + c], 128-bit lane L: element 4L + c of rows 4i .. 4i+3
        u[4 * i + 0] = _mm512_unpacklo_epi64(t[4 * i], t[4 * i + 2]);
        u[4 * i + 1] = _mm512_unpackhi_epi64(t[4 * i], t[4 * i + 2]);
        u[4 * i + 2] = _mm512_unpacklo_epi64(t[4 * i + 1], t[4 * i + 3]);
        u[4 * i + 3] = _mm512_unpackhi_epi64(t[4 * i + 1], t[4 * i + 3]);
    }
    for (int c = 0; c < 4; ++c) {  // gather lane L of u[c], u[4+c], u[8+c], u[12+c] into r[4L + c]
        const __m512i a01 = _mm512_shuffle_i32x4(u[c], u[4 + c], _MM_SHUFFLE(1, 0, 1, 0));
        const __m512i b01 = _mm512_shuffle_i32x4(u[8 + c], u[12 + c], _MM_SHUFFLE(1, 0, 1, 0));
        const __m512i a23 = _mm512_shuffle_i32x4(u[c], u[4 + c], _MM_SHUFFLE(3, 2, 3, 2));
        const __m512i b23 = _mm512_shuffle_i32x4(u[8 + c], u[12 + c], _MM_SHUFFLE(3, 2, 3, 2));
        r[0 + c]  = _mm512_shuffle_i32x4(a01, b01, _MM_SHUFFLE(2, 0, 2, 0));
        r[4 + c]  = _mm512_shuffle_i32x4(a01, b01, _MM_SHUFFLE(3, 1, 3, 1));
        r[8 + c]  = _mm512_shuffle_i32x4(a23, b23, _MM_SHUFFLE(2, 0, 2, 0));
        r[12 + c] = _mm512_shuffle_i32x4(a23, b23, _MM_SHUFFLE(3, 1, 3, 1));
    }
}

// dst I32 {k_panel * K/2, n_panels + 1}: panel p holds tokens p*48 .. p*48+47 as [K/2][48] pairs, zero
// past N; the extra last row starts with the work counter gemm_op's threads take chunks from, which
// thread 0 zeroes here (the graph's barrier after this node publishes it). 16 tokens x 16 pairs at a
// time are converted and transposed in registers, so every store writes 16 tokens of one pair.
OMNI_TARGET void pack_op(ggml_tensor * dst, int ith, int nth, void *) {
    const ggml_tensor * x  = dst->src[0];
    const int64_t       k  = x->ne[0], n = ggml_nrows(x), np = dst->ne[1] - 1, k2n = k / 2;
    if (ith == 0) *work_counter(dst) = 0;
    const rows_view xv{x};
    int32_t         tail[16];
    for (int64_t p = np * ith / nth; p < np * (ith + 1) / nth; ++p) {
        int32_t * panel = reinterpret_cast<int32_t *>(static_cast<char *>(dst->data) + p * dst->nb[1]);
        for (int64_t g = 0; g < k_panel; g += 16) {
            const float * rows[16];
            for (int i = 0; i < 16; ++i) {
                const int64_t tok = p * k_panel + g + i;
                rows[i]           = tok < n ? xv.row(tok) : nullptr;
            }
            int64_t j0 = 0;
            for (; j0 + 16 <= k2n; j0 += 16) {
                __m512i r[16];
                for (int i = 0; i < 16; ++i) {
                    r[i] = rows[i] != nullptr ? pairs16(rows[i] + 2 * j0) : _mm512_setzero_si512();
                }
                transpose16(r);
                for (int j = 0; j < 16; ++j) _mm512_storeu_si512(panel + (j0 + j) * k_panel + g, r[j]);
            }
            for (int i = 0; i < 16 && j0 < k2n; ++i) {  // the last K/2 mod 16 pairs
                if (rows[i] != nullptr) {
                    row_to_pairs(rows[i] + 2 * j0, 2 * (k2n - j0), tail);
                } else {
                    std::memset(tail, 0, sizeof(tail));
                }
                for (int64_t j = j0; j < k2n; ++j) panel[j * k_panel + g + i] = tail[j - j0];
            }
        }
    }
}

// R weight rows (row stride lda bytes) x one panel -> C (token stride ldc floats), first n_valid tokens.
template <int R>
OMNI_TARGET void micro_tile(const char * w, size_t lda, const int32_t * panel, int64_t k2n, float * c, int64_t ldc,
                            int64_t n_valid, const float * bias) {
    // Fully unrolled so the 8 x 3 accumulators stay in registers (24 of the 32 ZMM).
    __m512 acc[R][k_vecs];
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
#pragma GCC unroll 4
        for (int v = 0; v < k_vecs; ++v) acc[r][v] = _mm512_setzero_ps();
    }
    const int32_t * a[R];
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) a[r] = reinterpret_cast<const int32_t *>(w + r * lda);
    for (int64_t j = 0; j < k2n; ++j) {
        __m512bh b[k_vecs];
#pragma GCC unroll 4
        for (int v = 0; v < k_vecs; ++v) {
            b[v] = (__m512bh) _mm512_loadu_si512(panel + j * k_panel + v * 16);
        }
#pragma GCC unroll 8
        for (int r = 0; r < R; ++r) {
            const __m512bh av = (__m512bh) _mm512_set1_epi32(a[r][j]);
#pragma GCC unroll 4
            for (int v = 0; v < k_vecs; ++v) acc[r][v] = _mm512_dpbf16_ps(acc[r][v], av, b[v]);
        }
    }
    alignas(64) float t[R][k_panel];
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
#pragma GCC unroll 4
        for (int v = 0; v < k_vecs; ++v) _mm512_store_ps(&t[r][v * 16], acc[r][v]);
    }
    if (bias != nullptr) {  // the bias add ggml_add would make, one F32 rounding, fused into the store
        for (int64_t i = 0; i < n_valid; ++i) {
            for (int r = 0; r < R; ++r) c[i * ldc + r] = t[r][i] + bias[r];
        }
    } else {
        for (int64_t i = 0; i < n_valid; ++i) {
            for (int r = 0; r < R; ++r) c[i * ldc + r] = t[r][i];
        }
    }
}

using tile_fn = void (*)(const char *, size_t, const int32_t *, int64_t, float *, int64_t, int64_t, const float *);
constexpr tile_fn k_tiles[k_rows + 1] = {nullptr,        micro_tile<1>, micro_tile<2>, micro_tile<3>, micro_tile<4>,
                                         micro_tile<5>, micro_tile<6>, micro_tile<7>, micro_tile<8>};

// dst F32 {M, N...} = x W^T; src[0] W BF16 {K, M}, src[1] the packed panels. A unit of work is 64
// weight rows against every panel (those rows stay in cache while the panels stream by).
OMNI_TARGET void gemm_op(ggml_tensor * dst, int, int, void *) {
    const ggml_tensor * w      = dst->src[0];
    const ggml_tensor * xp     = dst->src[1];
    const float *       bias   = dst->src[2] != nullptr ? static_cast<const float *>(dst->src[2]->data) : nullptr;
    const int64_t       m      = w->ne[1], k2n = w->ne[0] / 2, n = ggml_nrows(dst), np = xp->ne[1] - 1;
    const int64_t       tiles  = (m + k_rows - 1) / k_rows;
    const int64_t       chunks = (tiles + k_chunk - 1) / k_chunk;
    const int64_t       ldc    = dst->nb[1] / sizeof(float);
    int64_t *           next   = work_counter(xp);
    for (int64_t ch = __atomic_fetch_add(next, 1, __ATOMIC_RELAXED); ch < chunks;
         ch = __atomic_fetch_add(next, 1, __ATOMIC_RELAXED)) {
        const int64_t t1 = std::min(tiles, (ch + 1) * k_chunk);
        for (int64_t p = 0; p < np; ++p) {
            const int32_t * panel =
                reinterpret_cast<const int32_t *>(static_cast<const char *>(xp->data) + p * xp->nb[1]);
            const int64_t n_valid = std::min<int64_t>(k_panel, n - p * k_panel);
            float *       c       = static_cast<float *>(dst->data) + p * k_panel * ldc;
            for (int64_t t = ch * k_chunk; t < t1; ++t) {
                const int64_t r0   = t * k_rows;
                const int     rows = static_cast<int>(std::min<int64_t>(k_rows, m - r0));
                k_tiles[rows](static_cast<const char *>(w->data) + r0 * w->nb[1], w->nb[1], panel, k2n, c + r0, ldc,
                              n_valid, bias != nullptr ? bias + r0 : nullptr);
            }
        }
    }
}

}  // namespace

bool gemm_bf16_supported() {
    static const bool ok = [] {
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
               __builtin_cpu_supports("avx512bf16");
    }();
    return ok;
}

ggml_tensor * gemm_bf16(ggml_context * ctx, ggml_tensor * w, ggml_tensor * x, ggml_tensor * b) {
    if (!gemm_bf16_supported() || w->type != GGML_TYPE_BF16 || x->type != GGML_TYPE_F32) return nullptr;
    if (w->ne[2] != 1 || w->ne[3] != 1 || w->ne[0] != x->ne[0] || w->ne[0] % 2 != 0) return nullptr;
    if (w->nb[0] != ggml_type_size(w->type) || x->nb[0] != sizeof(float)) return nullptr;
    if (b != nullptr && (b->type != GGML_TYPE_F32 || !ggml_is_contiguous(b) || ggml_nelements(b) != w->ne[1])) {
        return nullptr;
    }
    const int64_t n  = ggml_nrows(x);
    const int64_t np = (n + k_panel - 1) / k_panel;
    return packed_gemm_nodes(ctx, w, x, b, k_panel * (w->ne[0] / 2), np + 1, pack_op, gemm_op, "gemm_bf16 (packed x)",
                             "gemm_bf16 (x W^T)");
}

bool is_gemm_bf16_node(const ggml_tensor * t) { return is_custom_node_of(t, {pack_op, gemm_op}); }

#else  // no x86-64 AVX512-BF16 kernel in this build

bool gemm_bf16_supported() { return false; }
ggml_tensor * gemm_bf16(ggml_context *, ggml_tensor *, ggml_tensor *, ggml_tensor *) { return nullptr; }
bool is_gemm_bf16_node(const ggml_tensor *) { return false; }

#endif

}  // namespace omni
