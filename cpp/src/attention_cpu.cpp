#include "attention_cpu.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

namespace omni {

namespace {

typedef float   vf __attribute__((vector_size(64)));
typedef int32_t vi __attribute__((vector_size(64)));
constexpr int   k_lanes   = 16;
constexpr int   k_queries = 8;  // queries per task: 8 x 2 accumulators of 16 lanes

inline int64_t round_up(int64_t n, int64_t m) { return (n + m - 1) / m * m; }
inline vf      splat(float v) { return vf{} + v; }
inline vf      load(const float * p) {
    vf v;
    std::memcpy(&v, p, sizeof(v));
    return v;
}
inline void store(float * p, vf v) { std::memcpy(p, &v, sizeof(v)); }
inline vi   as_int(vf v) { return reinterpret_cast<vi &>(v); }
inline vf   as_float(vi v) { return reinterpret_cast<vf &>(v); }
inline vf   select(vi mask, vf a, vf b) { return as_float((mask & as_int(a)) | (~mask & as_int(b))); }

// exp(y) for y <= 0 (y = -inf included): range reduction y = n ln2 + r, |r| <= ln2/2, degree-7 Taylor
// polynomial of exp(r) (truncation 5e-9 relative), 2^n in the exponent bits; 0 below -87.3.
inline vf exp_nonpositive(vf y) {
    const vi tiny    = y < -87.3f;
    y                = select(tiny, splat(0.0f), y);
    const vf shifter = splat(12582912.0f);  // 1.5 * 2^23: adding it rounds to the nearest integer
    const vf t       = y * 1.44269504088896341f + shifter;
    const vi n       = as_int(t) - as_int(shifter);
    const vf nf      = t - shifter;
    const vf r       = (y - nf * 0.693145751953125f) - nf * 1.428606765330187e-06f;
    vf       p       = splat(1.0f / 5040);
    for (float c : {1.0f / 720, 1.0f / 120, 1.0f / 24, 1.0f / 6, 0.5f, 1.0f, 1.0f}) p = p * r + c;
    return select(tiny, splat(0.0f), p * as_float((n + 127) << 23));
}

inline float hsum(vf v) {
    float s = 0.0f;
    for (int i = 0; i < k_lanes; ++i) s += v[i];
    return s;
}

inline float hmax(vf v) {
    float m = v[0];
    for (int i = 1; i < k_lanes; ++i) m = std::max(m, v[i]);
    return m;
}

struct shape {
    int64_t hd, hdp, n_head, n_head_kv, n_tok, n_tok_p, n_batch;
    int64_t per_kv_head() const { return hd * n_tok_p + n_tok * hdp; }  // K^T then V rows, in floats
};

shape shape_of(const ggml_tensor * q, int64_t n_head_kv) {
    return {q->ne[0], round_up(q->ne[0], k_lanes), q->ne[1], n_head_kv, q->ne[2], round_up(q->ne[2], k_lanes),
            q->ne[3]};
}

const float * row(const ggml_tensor * t, int64_t i1, int64_t i2, int64_t i3) {
    return reinterpret_cast<const float *>(static_cast<const char *>(t->data) + i1 * t->nb[1] + i2 * t->nb[2] +
                                           i3 * t->nb[3]);
}

// Threads take tasks from a counter in the packed tensor's extra last row (see gemm_bf16.cpp).
int64_t * work_counter(const ggml_tensor * packed) {
    return reinterpret_cast<int64_t *>(static_cast<char *>(packed->data) + (packed->ne[1] - 1) * packed->nb[1]);
}

// dst {per_kv_head, Hkv * B + 1}: per kv head, K transposed ([hd][T padded to 16], zeros past T) and V's
// rows padded to 16 lanes ([T][hd padded], zeros past hd); the last row holds attention_op's work
// counter, zeroed here (the barrier after this node publishes it).
void pack_op(ggml_tensor * dst, int ith, int nth, void *) {
    const ggml_tensor * k = dst->src[0];
    const ggml_tensor * v = dst->src[1];
    const int64_t       hd = k->ne[0], hkv = k->ne[1], n = k->ne[2], np = round_up(n, k_lanes),
                  hdp = round_up(hd, k_lanes), groups = dst->ne[1] - 1;
    if (ith == 0) *work_counter(dst) = 0;
    for (int64_t g = groups * ith / nth; g < groups * (ith + 1) / nth; ++g) {
        const int64_t b = g / hkv, h = g % hkv;
        float *       kt = reinterpret_cast<float *>(static_cast<char *>(dst->data) + g * dst->nb[1]);
        float *       vp = kt + hd * np;
        std::memset(kt, 0, static_cast<size_t>(hd * np) * sizeof(float));
        for (int64_t t = 0; t < n; ++t) {
            const float * kr = row(k, h, t, b);
            for (int64_t d = 0; d < hd; ++d) kt[d * np + t] = kr[d];
            float * vr = vp + t * hdp;
            std::memcpy(vr, row(v, h, t, b), static_cast<size_t>(hd) * sizeof(float));
            std::memset(vr + hd, 0, static_cast<size_t>(hdp - hd) * sizeof(float));
        }
    }
}

// The op's two parameters travel in the userdata pointer's value (never dereferenced): the scale's
// float bits and the causal flag, so the graph needs no side allocation.
void * encode_params(float scale, bool causal) {
    uint32_t bits;
    std::memcpy(&bits, &scale, sizeof(bits));
    return reinterpret_cast<void *>((static_cast<uintptr_t>(bits) << 1) | (causal ? 1u : 0u));
}

void decode_params(void * p, float & scale, bool & causal) {
    const uintptr_t u    = reinterpret_cast<uintptr_t>(p);
    const uint32_t  bits = static_cast<uint32_t>(u >> 1);
    std::memcpy(&scale, &bits, sizeof(scale));
    causal = (u & 1u) != 0;
}

// s[i][0..n_keys) = scale * q_i . k for the task's queries (rows of qb, hd wide); kt: [hd][np].
void scores(const float * qb, const float * kt, int64_t hd, int64_t np, int64_t n_keys, float scale, float * s,
            int64_t ld_s) {
    int64_t j = 0;
    for (; j + 2 * k_lanes <= round_up(n_keys, k_lanes); j += 2 * k_lanes) {
        vf acc[k_queries][2] = {};
        for (int64_t d = 0; d < hd; ++d) {
            const vf k0 = load(kt + d * np + j), k1 = load(kt + d * np + j + k_lanes);
#pragma GCC unroll 8
            for (int i = 0; i < k_queries; ++i) {
                const vf qd = splat(qb[i * hd + d]);
                acc[i][0] += qd * k0;
                acc[i][1] += qd * k1;
            }
        }
#pragma GCC unroll 8
        for (int i = 0; i < k_queries; ++i) {
            store(s + i * ld_s + j, acc[i][0] * scale);
            store(s + i * ld_s + j + k_lanes, acc[i][1] * scale);
        }
    }
    if (j < n_keys) {  // one last vector of keys
        vf acc[k_queries] = {};
        for (int64_t d = 0; d < hd; ++d) {
            const vf k0 = load(kt + d * np + j);
#pragma GCC unroll 8
            for (int i = 0; i < k_queries; ++i) acc[i] += splat(qb[i * hd + d]) * k0;
        }
#pragma GCC unroll 8
        for (int i = 0; i < k_queries; ++i) store(s + i * ld_s + j, acc[i] * scale);
    }
}

// Row softmax over the first n_valid of the row's vectors' lanes; lanes past n_valid become 0.
void softmax_row(float * s, int64_t n_valid, int64_t n_vec_keys) {
    const vf ninf = splat(-std::numeric_limits<float>::infinity());
    vi       lane{};
    for (int l = 0; l < k_lanes; ++l) lane[l] = l;
    vf m = ninf;
    for (int64_t j = 0; j < n_vec_keys; j += k_lanes) {
        vf x = select((lane + static_cast<int32_t>(j)) < static_cast<int32_t>(n_valid), load(s + j), ninf);
        store(s + j, x);
        m = select(x > m, x, m);
    }
    const float mx = hmax(m);
    vf          l  = {};
    for (int64_t j = 0; j < n_vec_keys; j += k_lanes) {
        const vf e = exp_nonpositive(load(s + j) - mx);
        store(s + j, e);
        l += e;
    }
    const float inv = 1.0f / hsum(l);
    for (int64_t j = 0; j < n_vec_keys; j += k_lanes) store(s + j, load(s + j) * inv);
}

// o[i][0..hd) = sum_k p[i][k] v[k] for the task's queries; vp: [T][hdp].
void weighted_values(const float * p, int64_t ld_p, const float * vp, int64_t hdp, int64_t n_keys, float * o,
                     int64_t ld_o, int64_t hd, int64_t nq) {
    for (int64_t c = 0; c < hdp; c += 2 * k_lanes) {
        const bool two = c + k_lanes < hdp;
        vf         acc[k_queries][2] = {};
        for (int64_t kk = 0; kk < n_keys; ++kk) {
            const vf v0 = load(vp + kk * hdp + c);
            const vf v1 = two ? load(vp + kk * hdp + c + k_lanes) : vf{};
#pragma GCC unroll 8
            for (int i = 0; i < k_queries; ++i) {
                const vf pk = splat(p[i * ld_p + kk]);
                acc[i][0] += pk * v0;
                acc[i][1] += pk * v1;
            }
        }
        for (int64_t i = 0; i < nq; ++i) {
            alignas(64) float tmp[2 * k_lanes];
            store(tmp, acc[i][0]);
            store(tmp + k_lanes, acc[i][1]);
            const int64_t n = std::min<int64_t>(two ? 2 * k_lanes : k_lanes, hd - c);
            std::memcpy(o + i * ld_o + c, tmp, static_cast<size_t>(n) * sizeof(float));
        }
    }
}

void attention_op(ggml_tensor * dst, int, int, void * params) {
    const ggml_tensor * q      = dst->src[0];
    const ggml_tensor * packed = dst->src[1];
    float               scale;
    bool                causal;
    decode_params(params, scale, causal);
    const shape   sh      = shape_of(q, (packed->ne[1] - 1) / q->ne[3]);
    const int64_t qblocks = (sh.n_tok + k_queries - 1) / k_queries;
    const int64_t tasks   = sh.n_batch * sh.n_head * qblocks;
    const int64_t group   = sh.n_head / sh.n_head_kv;
    std::vector<float> s(static_cast<size_t>(k_queries * sh.n_tok_p)), qb(static_cast<size_t>(k_queries * sh.hd));
    int64_t * next = work_counter(packed);
    for (int64_t task = __atomic_fetch_add(next, 1, __ATOMIC_RELAXED); task < tasks;
         task = __atomic_fetch_add(next, 1, __ATOMIC_RELAXED)) {
        const int64_t b = task / (sh.n_head * qblocks), h = (task / qblocks) % sh.n_head, q0 = (task % qblocks) * k_queries;
        const int64_t nq     = std::min<int64_t>(k_queries, sh.n_tok - q0);
        const int64_t n_keys = causal ? q0 + nq : sh.n_tok;  // keys any of these queries sees
        const float * kt     = reinterpret_cast<const float *>(static_cast<const char *>(packed->data) +
                                                              (b * sh.n_head_kv + h / group) * packed->nb[1]);
        const float * vp     = kt + sh.hd * sh.n_tok_p;
        std::fill(qb.begin(), qb.end(), 0.0f);
        for (int64_t i = 0; i < nq; ++i) std::memcpy(&qb[i * sh.hd], row(q, h, q0 + i, b), sh.hd * sizeof(float));
        scores(qb.data(), kt, sh.hd, sh.n_tok_p, n_keys, scale, s.data(), sh.n_tok_p);
        const int64_t n_vec_keys = round_up(n_keys, k_lanes);
        for (int64_t i = 0; i < k_queries; ++i) {
            const int64_t valid = i < nq ? (causal ? q0 + i + 1 : sh.n_tok) : 0;
            if (valid > 0) {
                softmax_row(&s[i * sh.n_tok_p], valid, n_vec_keys);
            } else {
                std::fill_n(&s[i * sh.n_tok_p], n_vec_keys, 0.0f);
            }
        }
        float * o = reinterpret_cast<float *>(static_cast<char *>(dst->data) + q0 * dst->nb[2] + b * dst->nb[3] +
                                              h * dst->nb[1]);
        weighted_values(s.data(), sh.n_tok_p, vp, sh.hdp, n_keys, o, dst->nb[2] / sizeof(float), sh.hd, nq);
    }
}

}  // namespace

ggml_tensor * attention_cpu(ggml_context * ctx, ggml_tensor * q, ggml_tensor * k, ggml_tensor * v, float scale,
                            bool causal) {
    const int64_t hd = q->ne[0], n = q->ne[2], b = q->ne[3], hkv = k->ne[1];
    ggml_tensor * kv[2] = {k, v};
    ggml_tensor * packed = ggml_custom_4d(ctx, GGML_TYPE_F32, hd * round_up(n, k_lanes) + n * round_up(hd, k_lanes),
                                          hkv * b + 1, 1, 1, kv, 2, pack_op, GGML_N_TASKS_MAX, nullptr);
    ggml_set_name(packed, "attention (packed K^T, V)");  // a space: never a capturable intermediate
    ggml_tensor * args[2] = {q, packed};
    ggml_tensor * o = ggml_custom_4d(ctx, GGML_TYPE_F32, hd, q->ne[1], n, b, args, 2, attention_op, GGML_N_TASKS_MAX,
                                     encode_params(scale, causal));
    ggml_set_name(o, "attention (softmax(q k^T) v)");
    return o;
}

}  // namespace omni
