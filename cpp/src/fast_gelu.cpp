#include "fast_gelu.hpp"

#include <algorithm>
#include <cstring>

namespace omni {

namespace {

// 16 lanes of GCC/Clang vector extensions: one AVX-512 register, two AVX2 ones, four NEON ones.
// Written lane-wise with selects, so every lane takes the same instructions (no branches).
typedef float   vf __attribute__((vector_size(64)));
typedef int32_t vi __attribute__((vector_size(64)));
constexpr int   k_lanes = 16;

inline vf splat(float v) { return vf{} + v; }
inline vi as_int(vf v) { return reinterpret_cast<vi &>(v); }
inline vf as_float(vi v) { return reinterpret_cast<vf &>(v); }
inline vf select(vi mask, vf a, vf b) { return as_float((mask & as_int(a)) | (~mask & as_int(b))); }
inline vf vmin(vf a, vf b) { return select(a < b, a, b); }
inline vf vmax(vf a, vf b) { return select(a > b, a, b); }

// erf(u) / u on t = u^2 in [0, 1] (relative error 1.2e-9 in exact arithmetic)
constexpr float k_p[] = {1.1283791065216064f,    -0.3761262595653534f,   0.1128358244895935f,
                         -0.026853691786527634f, 0.005188099108636379f,  -0.0008008189033716917f,
                         7.847259257687256e-05f};
// erfc(a) exp(a^2) on z = 1 / a in [0.25, 1] (relative error 2.3e-9 in exact arithmetic)
constexpr float k_r[] = {3.0888462788425386e-05f, 0.5636186003684998f,  0.003914452623575926f,
                         -0.28981611132621765f,   -0.05404456704854965f, 0.8660649061203003f,
                         -1.474402904510498f,     1.3746620416641235f,   -0.7791740298271179f,
                         0.2530610263347626f,     -0.03633073717355728f};

template <size_t N>
inline vf horner(const float (&c)[N], vf x) {
    vf r = splat(c[N - 1]);
    for (size_t i = N - 1; i-- > 0;) r = r * x + c[i];
    return r;
}

// exp(y) for y in [-16, 0]: y = n ln2 + r, |r| <= ln2 / 2, exp(r) by its degree-7 Taylor polynomial
// (truncation 5e-9 relative), 2^n put into the exponent bits.
inline vf exp_neg(vf y) {
    const vf shifter = splat(12582912.0f);  // 1.5 * 2^23: adding it rounds to an integer, to nearest
    const vf t       = y * 1.44269504088896341f + shifter;
    const vi n       = as_int(t) - as_int(shifter);
    const vf nf      = t - shifter;
    const vf r       = (y - nf * 0.693145751953125f) - nf * 1.428606765330187e-06f;  // ln2 as hi + lo
    constexpr float k_e[] = {1.0f, 1.0f, 0.5f, 1.0f / 6, 1.0f / 24, 1.0f / 120, 1.0f / 720, 1.0f / 5040};
    return horner(k_e, r) * as_float((n + 127) << 23);
}

inline vf gelu16(vf x) {
    const vf u  = x * 0.70710678118654752f;
    const vf a  = as_float(as_int(u) & 0x7fffffff);
    const vf y1 = x * 0.5f * (1.0f + u * horner(k_p, u * u));  // a < 1

    const vf ac   = vmin(vmax(a, splat(1.0f)), splat(4.0f));
    // a^2 rounds with relative error <= 2^-24, i.e. <= 1e-6 relative in exp(-a^2) at a = 4, where
    // erfc < 1.6e-8: negligible next to |x| ulp(1)
    vf erfc       = exp_neg(-(ac * ac)) * horner(k_r, 1.0f / ac);
    erfc          = select(a >= 4.0f, splat(0.0f), erfc);
    const vf y2   = x * 0.5f * select(u > 0.0f, 2.0f - erfc, erfc);  // a >= 1
    return select(a < 1.0f, y1, y2);
}

void gelu_op(ggml_tensor * dst, const ggml_tensor * a, int ith, int nth, void * /*userdata*/) {
    const int64_t n     = ggml_nelements(dst);
    const int64_t per   = (n / nth + k_lanes - 1) / k_lanes * k_lanes;  // whole vectors per thread
    const int64_t start = std::min<int64_t>(n, per * ith);
    const int64_t end   = ith == nth - 1 ? n : std::min<int64_t>(n, start + per);
    gelu_erf_fast(static_cast<const float *>(a->data) + start, static_cast<float *>(dst->data) + start, end - start);
}

}  // namespace

void gelu_erf_fast(const float * x, float * y, int64_t n) {
    int64_t i = 0;
    for (; i + k_lanes <= n; i += k_lanes) {
        vf v;
        std::memcpy(&v, x + i, sizeof(v));
        v = gelu16(v);
        std::memcpy(y + i, &v, sizeof(v));
    }
    if (i < n) {
        vf v{};
        std::memcpy(&v, x + i, static_cast<size_t>(n - i) * sizeof(float));
        v = gelu16(v);
        std::memcpy(y + i, &v, static_cast<size_t>(n - i) * sizeof(float));
    }
}

ggml_tensor * ggml_gelu_erf_fast(ggml_context * ctx, ggml_tensor * x) {
    if (x->type != GGML_TYPE_F32) x = ggml_cast(ctx, x, GGML_TYPE_F32);
    if (!ggml_is_contiguous(x)) x = ggml_cont(ctx, x);
    return ggml_map_custom1(ctx, x, gelu_op, GGML_N_TASKS_MAX, nullptr);
}

}  // namespace omni
