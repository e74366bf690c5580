#include "gemm_lowbit.hpp"

#include "ggml-cpu.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#    include <immintrin.h>
#    define OMNI_GEMM_LOWBIT 1
#    define OMNI_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni")))
#endif

namespace omni {

#ifdef OMNI_GEMM_LOWBIT

namespace {

constexpr int64_t k_sub    = 32;  // the activation's Q8_0 block: the unit of an exact integer sum
constexpr int     k_rows   = 32;  // weight rows per decoded chunk and per micro-tile (two vectors of 16)
constexpr int     k_tokens = 6;   // tokens per micro-tile: 2 x 6 int32 + 2 x 6 F32 accumulators

// ggml's Q8_0 block (ggml-common.h block_q8_0), which from_float writes: F16 scale, 32 int8 codes.
struct q8_block {
    uint16_t d;
    int8_t   qs[k_sub];
};
static_assert(sizeof(q8_block) == 34, "Q8_0 block layout");

// One packed token row: K int8 codes, then per block d_x (F32) and -sum(q_x) (int32); padded to 64 bytes.
struct packed_layout {
    int64_t k, n_sub, dx_off, ns_off, row_bytes;
    explicit packed_layout(int64_t k_) : k(k_), n_sub(k_ / k_sub), dx_off(k_), ns_off(k_ + 4 * (k_ / k_sub)) {
        row_bytes = (ns_off + 4 * n_sub + 63) / 64 * 64;
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

// dst I32 {row_bytes / 4, N + 1}: token rows rounded to Q8_0 by ggml-cpu's from_float, split into codes,
// F32 scales and negated code sums; thread 0 zeroes the work counter in the extra last row (the graph's
// barrier after this node publishes it).
void pack_op(ggml_tensor * dst, int ith, int nth, void *) {
    const ggml_tensor *     x = dst->src[0];
    const packed_layout     L(x->ne[0]);
    const int64_t           n          = ggml_nrows(x);
    const ggml_from_float_t from_float = ggml_get_type_traits_cpu(GGML_TYPE_Q8_0)->from_float;
    if (ith == 0) *work_counter(dst) = 0;
    const rows_view       xv{x};
    std::vector<q8_block> blocks(static_cast<size_t>(L.n_sub));
    for (int64_t r = n * ith / nth; r < n * (ith + 1) / nth; ++r) {
        from_float(xv.row(r), blocks.data(), L.k);
        char *    out = static_cast<char *>(dst->data) + r * dst->nb[1];
        float *   dx  = reinterpret_cast<float *>(out + L.dx_off);
        int32_t * ns  = reinterpret_cast<int32_t *>(out + L.ns_off);
        for (int64_t s = 0; s < L.n_sub; ++s) {
            const q8_block & b = blocks[static_cast<size_t>(s)];
            std::memcpy(out + s * k_sub, b.qs, k_sub);
            int32_t sum = 0;
            for (int i = 0; i < k_sub; ++i) sum += b.qs[i];
            dx[s] = ggml_fp16_to_fp32(b.d);
            ns[s] = -sum;
        }
    }
}

// Four weights as the four bytes of a 32-bit lane, unsigned: Q2_0's codes q from one byte of its block
// (weight j at bits 2 (j mod 4)), Q1_0's 2 * bit from one nibble (weight j at bit j mod 8).
struct code_tables {
    uint32_t q2[256];
    uint32_t q1[16];
    code_tables() {
        for (uint32_t b = 0; b < 256; ++b) {
            q2[b] = 0;
            for (int e = 0; e < 4; ++e) q2[b] |= ((b >> (2 * e)) & 3u) << (8 * e);
        }
        for (uint32_t v = 0; v < 16; ++v) {
            q1[v] = 0;
            for (int e = 0; e < 4; ++e) q1[v] |= (2u * ((v >> e) & 1u)) << (8 * e);
        }
    }
};
const code_tables k_codes;

// The weight block layouts (ggml-common.h block_q1_0 / block_q2_0): an F16 scale, then the codes.
constexpr int64_t k_q1_block = 128, k_q2_block = 64, k_block_code_bytes = 16;
constexpr size_t  k_q1_bytes = 2 + 16, k_q2_bytes = 2 + 16;

// Decoded weight rows r0 .. r0+31: codes [K/4][32] 32-bit lanes (lane = row), scales [K/32][32] F32;
// rows past M are zero and never stored.
struct decoded_chunk {
    std::vector<uint32_t> codes;
    std::vector<float>    scales;
};

void decode_rows(const ggml_tensor * w, int64_t r0, decoded_chunk & out) {
    const int64_t k = w->ne[0], m = w->ne[1], n_sub = k / k_sub;
    out.codes.assign(static_cast<size_t>(k / 4 * k_rows), 0u);
    out.scales.assign(static_cast<size_t>(n_sub * k_rows), 0.0f);
    const bool    q1        = w->type == GGML_TYPE_Q1_0;
    const int64_t blk       = q1 ? k_q1_block : k_q2_block;
    const size_t  blk_bytes = q1 ? k_q1_bytes : k_q2_bytes;
    const int64_t n_blk     = k / blk;
    const int     rows      = static_cast<int>(std::min<int64_t>(k_rows, m - r0));
    for (int64_t b = 0; b < n_blk; ++b) {
        for (int r = 0; r < rows; ++r) {
            const uint8_t * p = static_cast<const uint8_t *>(w->data) + (r0 + r) * w->nb[1] + b * blk_bytes;
            uint16_t        h;
            std::memcpy(&h, p, 2);
            const float d = ggml_fp16_to_fp32(h);
            for (int64_t s = b * blk / k_sub; s < (b + 1) * blk / k_sub; ++s) out.scales[s * k_rows + r] = d;
            const uint8_t * qs = p + 2;
            uint32_t *      c  = out.codes.data() + b * (blk / 4) * k_rows + r;
            if (q1) {  // byte j: weights 8j .. 8j+7, two lanes of four
                for (int j = 0; j < k_block_code_bytes; ++j) {
                    c[(2 * j) * k_rows]     = k_codes.q1[qs[j] & 15];
                    c[(2 * j + 1) * k_rows] = k_codes.q1[qs[j] >> 4];
                }
            } else {  // byte j: weights 4j .. 4j+3
                for (int j = 0; j < k_block_code_bytes; ++j) c[j * k_rows] = k_codes.q2[qs[j]];
            }
        }
    }
}

// 32 decoded rows x T packed tokens -> C (token stride ldc floats), the first `rows` rows stored.
template <int T>
OMNI_TARGET void micro_tile(const decoded_chunk & wc, const char * const * xrow, const packed_layout & L, float * c,
                            int64_t ldc, int rows, const float * bias) {
    __m512 acc[2][T];
#pragma GCC unroll 6
    for (int t = 0; t < T; ++t) acc[0][t] = acc[1][t] = _mm512_setzero_ps();
    const uint32_t * codes  = wc.codes.data();
    const float *    scales = wc.scales.data();
    for (int64_t s = 0; s < L.n_sub; ++s) {
        __m512i isum[2][T];
#pragma GCC unroll 6
        for (int t = 0; t < T; ++t) {  // start from -sum(q_x): c = q or 2 bit carries the +1 offset
            int32_t ns;
            std::memcpy(&ns, xrow[t] + L.ns_off + 4 * s, 4);
            isum[0][t] = isum[1][t] = _mm512_set1_epi32(ns);
        }
        const uint32_t * cs = codes + s * (k_sub / 4) * k_rows;
#pragma GCC unroll 8
        for (int j = 0; j < k_sub / 4; ++j) {
            const __m512i w0 = _mm512_loadu_si512(cs + j * k_rows);
            const __m512i w1 = _mm512_loadu_si512(cs + j * k_rows + 16);
#pragma GCC unroll 6
            for (int t = 0; t < T; ++t) {
                int32_t four;
                std::memcpy(&four, xrow[t] + s * k_sub + 4 * j, 4);
                const __m512i xb = _mm512_set1_epi32(four);
                isum[0][t]       = _mm512_dpbusd_epi32(isum[0][t], w0, xb);
                isum[1][t]       = _mm512_dpbusd_epi32(isum[1][t], w1, xb);
            }
        }
        const __m512 d0 = _mm512_loadu_ps(scales + s * k_rows);
        const __m512 d1 = _mm512_loadu_ps(scales + s * k_rows + 16);
#pragma GCC unroll 6
        for (int t = 0; t < T; ++t) {
            float dx;
            std::memcpy(&dx, xrow[t] + L.dx_off + 4 * s, 4);
            const __m512 dxb = _mm512_set1_ps(dx);
            acc[0][t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum[0][t]), _mm512_mul_ps(d0, dxb), acc[0][t]);
            acc[1][t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum[1][t]), _mm512_mul_ps(d1, dxb), acc[1][t]);
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
constexpr tile_fn k_tiles[k_tokens + 1] = {nullptr,       micro_tile<1>, micro_tile<2>, micro_tile<3>,
                                           micro_tile<4>, micro_tile<5>, micro_tile<6>};

// dst F32 {M, N...} = x W^T; src[0] W Q1_0/Q2_0 {K, M}, src[1] the packed tokens, src[2] the bias or
// none. A unit of work is 32 weight rows (decoded once) against a group of tokens; the tokens are split
// into groups only when there are too few row chunks to keep every thread busy.
void gemm_op(ggml_tensor * dst, int, int nth, void *) {
    const ggml_tensor * w    = dst->src[0];
    const ggml_tensor * xp   = dst->src[1];
    const float *       bias = dst->src[2] != nullptr ? static_cast<const float *>(dst->src[2]->data) : nullptr;
    const packed_layout L(w->ne[0]);
    const int64_t       m = w->ne[1], n = ggml_nrows(dst);
    const int64_t       chunks = (m + k_rows - 1) / k_rows;
    const int64_t       tiles  = (n + k_tokens - 1) / k_tokens;
    const int64_t       groups = chunks >= 4 * nth ? 1 : std::max<int64_t>(1, std::min(tiles / 8, (4 * nth + chunks - 1) / chunks));
    const int64_t       units  = chunks * groups;
    const int64_t       ldc    = dst->nb[1] / sizeof(float);
    int64_t *           next   = work_counter(xp);
    thread_local decoded_chunk wc;
    int64_t                    decoded = -1;  // the chunk in wc, for this call
    for (int64_t u = __atomic_fetch_add(next, 1, __ATOMIC_RELAXED); u < units;
         u = __atomic_fetch_add(next, 1, __ATOMIC_RELAXED)) {
        const int64_t ch = u / groups, g = u % groups;
        if (ch != decoded) {
            decode_rows(w, ch * k_rows, wc);
            decoded = ch;
        }
        const int64_t r0   = ch * k_rows;
        const int     rows = static_cast<int>(std::min<int64_t>(k_rows, m - r0));
        for (int64_t tile = tiles * g / groups; tile < tiles * (g + 1) / groups; ++tile) {
            const int64_t t0 = tile * k_tokens;
            const int     nt = static_cast<int>(std::min<int64_t>(k_tokens, n - t0));
            const char *  xrow[k_tokens];
            for (int t = 0; t < nt; ++t) xrow[t] = static_cast<const char *>(xp->data) + (t0 + t) * xp->nb[1];
            k_tiles[nt](wc, xrow, L, static_cast<float *>(dst->data) + t0 * ldc + r0, ldc, rows,
                        bias != nullptr ? bias + r0 : nullptr);
        }
    }
}

}  // namespace

bool gemm_lowbit_supported() {
    static const bool ok = [] {
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni");
    }();
    return ok;
}

ggml_tensor * gemm_lowbit(ggml_context * ctx, ggml_tensor * w, ggml_tensor * x, ggml_tensor * b) {
    if (!gemm_lowbit_supported() || x->type != GGML_TYPE_F32) return nullptr;
    if (w->type != GGML_TYPE_Q1_0 && w->type != GGML_TYPE_Q2_0) return nullptr;
    if (w->ne[2] != 1 || w->ne[3] != 1 || w->ne[0] != x->ne[0] || w->ne[0] % ggml_blck_size(w->type) != 0) return nullptr;
    // rows of whole blocks, packed (a view of a weight's leading rows is fine; a column slice is not)
    if (w->nb[0] != ggml_type_size(w->type) || w->nb[1] != ggml_row_size(w->type, w->ne[0])) return nullptr;
    if (x->nb[0] != sizeof(float)) return nullptr;
    if (b != nullptr && (b->type != GGML_TYPE_F32 || !ggml_is_contiguous(b) || ggml_nelements(b) != w->ne[1])) {
        return nullptr;
    }
    const packed_layout L(w->ne[0]);
    ggml_tensor *       args[1] = {x};
    ggml_tensor * packed = ggml_custom_4d(ctx, GGML_TYPE_I32, L.row_bytes / 4, ggml_nrows(x) + 1, 1, 1, args, 1, pack_op,
                                          GGML_N_TASKS_MAX, nullptr);
    ggml_set_name(packed, "gemm_lowbit (Q8_0 x)");  // a space: never taken for a capturable intermediate
    ggml_tensor * args2[3] = {w, packed, b};
    ggml_tensor * y = ggml_custom_4d(ctx, GGML_TYPE_F32, w->ne[1], x->ne[1], x->ne[2], x->ne[3], args2,
                                     b != nullptr ? 3 : 2, gemm_op, GGML_N_TASKS_MAX, nullptr);
    ggml_set_name(y, "gemm_lowbit (x W^T)");
    return y;
}

bool is_gemm_lowbit_node(const ggml_tensor * t) {
    if (t == nullptr || t->op != GGML_OP_CUSTOM) return false;
    // ggml keeps a custom node's function pointer first in its op_params (pinned ggml's
    // ggml_custom_op_params); a node of ours was built, with its operands checked, by gemm_lowbit()
    ggml_custom_op_t fun = nullptr;
    std::memcpy(&fun, t->op_params, sizeof(fun));
    return fun == pack_op || fun == gemm_op;
}

#else  // no x86-64 AVX512-VNNI kernel in this build

bool gemm_lowbit_supported() { return false; }
ggml_tensor * gemm_lowbit(ggml_context *, ggml_tensor *, ggml_tensor *, ggml_tensor *) { return nullptr; }
bool is_gemm_lowbit_node(const ggml_tensor *) { return false; }

#endif

}  // namespace omni
