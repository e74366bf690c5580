#include "hbvla.hpp"

#include <cstring>

#include "error.hpp"

#include "ggml-backend.h"

#include <algorithm>
#include <cstdint>
#include <vector>

namespace omni {

namespace {

constexpr int32_t k_version  = 1;
constexpr int64_t k_block    = 128;  // Q1_0's block, the unit of a stored scale
constexpr int64_t k_chunk    = 128;  // column pairs per chunk of the coefficient layout
constexpr int     k_planes   = 3;
constexpr int     k_s_planes = 2;

struct hbvla_header {
    int64_t n_in = 0, n_out = 0, n_sal = 0;
    bool    haar = false, sal_col_haar = false;
    int32_t mean_kind = 0, sal_mean_kind = 0;  // main: 0 none, 1 band, 2 block; salient: 0 none, 1 row
};

int64_t padded(int64_t n) { return (n + k_block - 1) / k_block * k_block; }

std::vector<int32_t> read_ints(const ggml_tensor * t, int64_t n, const std::string & name) {
    if (ggml_n_dims(t) != 1 || t->ne[0] != n || (t->type != GGML_TYPE_I16 && t->type != GGML_TYPE_I32)) {
        fail(OMNIMODEL_ERR_FORMAT, format("HBVLA tensor '%s' must be I16 or I32 [%lld], got %s %s", name.c_str(),
                                          (long long) n, ggml_type_name(t->type), shape_str(t).c_str()));
    }
    std::vector<int32_t> out(static_cast<size_t>(n));
    if (t->type == GGML_TYPE_I32) {
        ggml_backend_tensor_get(t, out.data(), 0, out.size() * sizeof(int32_t));
    } else {
        std::vector<int16_t> tmp(out.size());
        ggml_backend_tensor_get(t, tmp.data(), 0, tmp.size() * sizeof(int16_t));
        std::copy(tmp.begin(), tmp.end(), out.begin());
    }
    return out;
}

// Every value in [0, limit) and no value twice.
void require_distinct(const std::vector<int32_t> & v, int64_t limit, const std::string & name) {
    std::vector<bool> seen(static_cast<size_t>(limit), false);
    for (int32_t i : v) {
        if (i < 0 || i >= limit || seen[static_cast<size_t>(i)]) {
            fail(OMNIMODEL_ERR_FORMAT, format("HBVLA tensor '%s' is not a set of distinct indices below %lld",
                                              name.c_str(), (long long) limit));
        }
        seen[static_cast<size_t>(i)] = true;
    }
}

hbvla_header read_header(const graph_builder & gb, const std::string & base) {
    const std::string name = base + ".hb.hdr";
    ggml_tensor *     t    = gb.weight(name);
    if (t->type != GGML_TYPE_I32 || ggml_n_dims(t) != 1 || t->ne[0] != 8) {
        fail(OMNIMODEL_ERR_FORMAT, format("HBVLA tensor '%s' must be I32 [8], got %s %s", name.c_str(),
                                          ggml_type_name(t->type), shape_str(t).c_str()));
    }
    int32_t v[8];
    ggml_backend_tensor_get(t, v, 0, sizeof(v));
    hbvla_header h;
    h.n_in = v[1], h.n_out = v[2], h.haar = v[3] != 0, h.mean_kind = v[4], h.n_sal = v[5];
    h.sal_col_haar = v[6] != 0, h.sal_mean_kind = v[7];
    const bool ok = v[0] == k_version && h.n_in > 0 && h.n_out > 0 && (v[3] == 0 || v[3] == 1) &&
                    h.mean_kind >= 0 && h.mean_kind <= 2 && h.n_sal >= 0 && h.n_sal <= h.n_in &&
                    (v[6] == 0 || v[6] == 1) && (h.sal_mean_kind == 0 || h.sal_mean_kind == 1) &&
                    !(h.haar && h.n_in % 2) && !(h.sal_col_haar && h.n_out % 2);
    if (!ok) {
        fail(OMNIMODEL_ERR_FORMAT, format("HBVLA tensor '%s' holds an unsupported or inconsistent header "
                                          "[%d %d %d %d %d %d %d %d] (layout version %d expected)",
                                          name.c_str(), v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], k_version));
    }
    return h;
}

// The Q1_0 planes "<base>.hb.<prefix>0..", each [rows, width] (ggml {width, rows}); at least one.
std::vector<ggml_tensor *> planes(const graph_builder & gb, const std::string & base, const char * prefix,
                                  int max_planes, int64_t width, int64_t rows) {
    std::vector<ggml_tensor *> out;
    for (int i = 0; i < max_planes; ++i) {
        const std::string name = base + ".hb." + prefix + std::to_string(i);
        ggml_tensor *     t    = i == 0 ? gb.weight(name) : gb.weight_opt(name);
        if (t == nullptr) break;
        // n_dims <= 2, not == 2: one salient column is a [1, O] plane, which ggml counts as 1-D
        if (t->type != GGML_TYPE_Q1_0 || t->ne[0] != width || t->ne[1] != rows || ggml_n_dims(t) > 2) {
            fail(OMNIMODEL_ERR_FORMAT, format("HBVLA tensor '%s' must be Q1_0 [%lld, %lld], got %s %s", name.c_str(),
                                              (long long) rows, (long long) width, ggml_type_name(t->type),
                                              shape_str(t).c_str()));
        }
        out.push_back(t);
    }
    return out;
}

ggml_tensor * means(const graph_builder & gb, const std::string & name, int64_t n_seg, int64_t rows) {
    ggml_tensor * t = gb.weight(name);
    if (t->type != GGML_TYPE_F16 || t->ne[0] != n_seg || t->ne[1] != rows || ggml_n_dims(t) > 2) {
        fail(OMNIMODEL_ERR_FORMAT, format("HBVLA tensor '%s' must be F16 [%lld, %lld], got %s %s", name.c_str(),
                                          (long long) rows, (long long) n_seg, ggml_type_name(t->type),
                                          shape_str(t).c_str()));
    }
    return ggml_cast(gb.ctx0, t, GGML_TYPE_F32);  // exact; keeps the mean term's matmul in F32
}

// sum_i plane_i z: one Q1_0 matmul per plane, by the kernel the `gemm` knob selects. z {width, N}.
ggml_tensor * plane_matmuls(graph_builder & gb, const std::vector<ggml_tensor *> & ps, ggml_tensor * z) {
    ggml_tensor * y = gb.matmul(ps[0], z);
    for (size_t i = 1; i < ps.size(); ++i) y = ggml_add(gb.ctx0, y, gb.matmul(ps[i], z));
    return y;
}

}  // namespace

std::string hbvla_base(const std::string & weight_name) {
    const std::string suffix = ".weight";
    if (weight_name.size() > suffix.size() &&
        weight_name.compare(weight_name.size() - suffix.size(), suffix.size(), suffix) == 0) {
        return weight_name.substr(0, weight_name.size() - suffix.size());
    }
    return weight_name;
}

bool is_hbvla_integer_table(const char * tensor_name) {
    const std::string n = tensor_name;
    for (const char * suffix : {".hb.hdr", ".hb.perm", ".hb.sidx"}) {
        const size_t k = std::strlen(suffix);
        if (n.size() > k && n.compare(n.size() - k, k, suffix) == 0) return true;
    }
    return false;
}

bool has_hbvla(const graph_builder & gb, const std::string & weight_name) {
    return gb.weight_opt(hbvla_base(weight_name) + ".hb.hdr") != nullptr;
}

ggml_tensor * build_hbvla_linear(graph_builder & gb, ggml_tensor * x, const std::string & weight_name) {
    ggml_context *     ctx  = gb.ctx0;
    const std::string  base = hbvla_base(weight_name);
    const hbvla_header h    = read_header(gb, base);
    const int64_t      n = h.n_in, d = h.n_out, W = padded(n);
    if (x->ne[0] != n) {
        fail(OMNIMODEL_ERR_SHAPE, format("HBVLA matrix '%s' expects inputs of width %lld but got %s ('%s')",
                                         base.c_str(), (long long) n, shape_str(x).c_str(), ggml_get_name(x)));
    }
    const std::string    perm_name = base + ".hb.perm";
    std::vector<int32_t> perm      = read_ints(gb.weight(perm_name), n, perm_name);
    require_distinct(perm, n, perm_name);
    std::vector<ggml_tensor *> ps = planes(gb, base, "p", k_planes, W, d);

    // x as token rows: xx = [x^T ; -x^T (Haar only) ; 0], so one gather picks x, -x or zero per position
    const int64_t n_tok = ggml_nelements(x) / n;
    if (!ggml_is_contiguous(x)) x = ggml_cont(ctx, x);
    ggml_tensor * xt = ggml_cont(ctx, ggml_transpose(ctx, ggml_reshape_2d(ctx, x, n, n_tok)));  // {N, n}
    ggml_tensor * xx = h.haar ? ggml_concat(ctx, xt, ggml_neg(ctx, xt), 1) : xt;
    const int32_t zero_row = static_cast<int32_t>(xx->ne[1]);
    xx = ggml_pad(ctx, xx, 0, 1, 0, 0);

    // coefficient positions (python haar.row_layout): chunks of 128 pairs, each its lo then its hi band
    std::vector<int32_t> first(static_cast<size_t>(W), zero_row), second(static_cast<size_t>(W), zero_row);
    std::vector<int32_t> band(static_cast<size_t>(W), -1);
    if (h.haar) {
        const int64_t n_pairs = n / 2;
        for (int64_t c0 = 0; c0 < n_pairs; c0 += k_chunk) {
            const int64_t r = std::min(k_chunk, n_pairs - c0);
            for (int64_t j = 0; j < r; ++j) {
                const int64_t k = c0 + j, lo = 2 * c0 + j, hi = lo + r;
                const int32_t a = perm[static_cast<size_t>(2 * k)], b = perm[static_cast<size_t>(2 * k + 1)];
                first[lo] = a, second[lo] = b, band[lo] = 0;                              // x_a + x_b
                first[hi] = a, second[hi] = static_cast<int32_t>(n) + b, band[hi] = 1;  // x_a - x_b
            }
        }
    } else {
        for (int64_t p = 0; p < n; ++p) first[p] = perm[static_cast<size_t>(p)], band[p] = 0;
    }
    ggml_tensor * zt = ggml_get_rows(ctx, xx, gb.const_i32(base + ".hb.ia", first));  // {N, W}
    if (h.haar) zt = ggml_add(ctx, zt, ggml_get_rows(ctx, xx, gb.const_i32(base + ".hb.ib", second)));
    ggml_tensor * z = ggml_cont(ctx, ggml_transpose(ctx, zt));  // {W, N}: the Haar-domain activation

    ggml_tensor * y = plane_matmuls(gb, ps, z);  // {d, N}
    if (h.mean_kind != 0) {
        // y += mu (segment sums of z): a product over only 2 (or W/128) segments, so an outer-product
        // accumulation (ggml_out_prod, an axpy per segment and token) rather than d x N tiny dot products
        ggml_tensor * sums_t = nullptr;  // {N, n_seg}
        int64_t       n_seg  = 0;
        if (h.mean_kind == 1) {  // per band: sums of z over the lo and hi positions
            n_seg = h.haar ? 2 : 1;
            std::vector<float> ind(static_cast<size_t>(W * n_seg), 0.0f);
            for (int64_t p = 0; p < n; ++p) ind[static_cast<size_t>(band[p] * W + p)] = 1.0f;
            sums_t = ggml_mul_mat(ctx, z, gb.const_f32(base + ".hb.seg", ind, {W, n_seg}));
        } else {  // per Q1_0 block
            n_seg  = W / k_block;
            sums_t = ggml_sum_rows(ctx, ggml_reshape_3d(ctx, z, k_block, n_seg, n_tok));
            sums_t = ggml_cont(ctx, ggml_transpose(ctx, ggml_reshape_2d(ctx, sums_t, n_seg, n_tok)));
        }
        ggml_tensor * mu_t = ggml_cont(ctx, ggml_transpose(ctx, means(gb, base + ".hb.mu", n_seg, d)));  // {d, n_seg}
        y = ggml_add(ctx, y, ggml_out_prod(ctx, mu_t, sums_t));
    }

    if (h.n_sal > 0) {
        // The salient residual, decoded in the graph to an F32 [d, k] matrix (k short Q1_0 rows: signs
        // times the column factor beta, times the row factor alpha, plus the row mean; positions are
        // column-Haar rows in the row layout), then multiplied with the k gathered inputs in F32.
        const std::string    sidx_name = base + ".hb.sidx";
        std::vector<int32_t> sidx      = read_ints(gb.weight(sidx_name), h.n_sal, sidx_name);
        require_distinct(sidx, n, sidx_name);
        const int64_t              k = h.n_sal, D = padded(d);
        std::vector<ggml_tensor *> ss = planes(gb, base, "s", k_s_planes, D, k);
        std::vector<int32_t>       rows_k(static_cast<size_t>(k));
        for (int64_t j = 0; j < k; ++j) rows_k[static_cast<size_t>(j)] = static_cast<int32_t>(j);
        ggml_tensor * all_k = gb.const_i32(base + ".hb.ik", rows_k);

        const std::string sa_name = base + ".hb.sa";
        ggml_tensor *     sa      = gb.weight(sa_name);
        if (sa->type != GGML_TYPE_F16 || sa->ne[0] != d || sa->ne[1] != (int64_t) ss.size() || ggml_n_dims(sa) > 2) {
            fail(OMNIMODEL_ERR_FORMAT, format("HBVLA tensor '%s' must be F16 [%zu, %lld], got %s %s", sa_name.c_str(),
                                              ss.size(), (long long) d, ggml_type_name(sa->type), shape_str(sa).c_str()));
        }
        ggml_tensor * alpha = ggml_pad(ctx, ggml_cast(ctx, sa, GGML_TYPE_F32), (int) (D - d), 0, 0, 0);  // {D, P}
        ggml_tensor * m     = nullptr;  // {D, k}
        for (size_t i = 0; i < ss.size(); ++i) {
            ggml_tensor * a_i = ggml_view_2d(ctx, alpha, D, 1, alpha->nb[1], i * alpha->nb[1]);
            ggml_tensor * t   = ggml_mul(ctx, ggml_get_rows(ctx, ss[i], all_k), a_i);  // +-beta * alpha
            m                 = m == nullptr ? t : ggml_add(ctx, m, t);
        }
        if (h.sal_mean_kind == 1) {
            const std::string smu_name = base + ".hb.smu";
            ggml_tensor *     smu      = gb.weight(smu_name);
            if (smu->type != GGML_TYPE_F16 || smu->ne[0] != d || ggml_n_dims(smu) != 1) {
                fail(OMNIMODEL_ERR_FORMAT, format("HBVLA tensor '%s' must be F16 [%lld], got %s %s", smu_name.c_str(),
                                                  (long long) d, ggml_type_name(smu->type), shape_str(smu).c_str()));
            }
            m = ggml_add(ctx, m, ggml_pad(ctx, ggml_cast(ctx, smu, GGML_TYPE_F32), (int) (D - d), 0, 0, 0));
        }
        ggml_tensor * mt = ggml_cont(ctx, ggml_transpose(ctx, m));  // {k, D}: one row per Haar position
        ggml_tensor * r  = nullptr;                                 // {k, d}: the residual's rows
        if (h.sal_col_haar) {  // row 2i = lo_i + hi_i, row 2i+1 = lo_i - hi_i (gathered from [M; -M])
            std::vector<int32_t> ra(static_cast<size_t>(d)), rb(static_cast<size_t>(d));
            const int64_t        n_pairs = d / 2;
            for (int64_t c0 = 0; c0 < n_pairs; c0 += k_chunk) {
                const int64_t rr = std::min(k_chunk, n_pairs - c0);
                for (int64_t j = 0; j < rr; ++j) {
                    const int64_t i2 = c0 + j, lo = 2 * c0 + j, hi = lo + rr;
                    ra[2 * i2] = ra[2 * i2 + 1] = static_cast<int32_t>(lo);
                    rb[2 * i2]                  = static_cast<int32_t>(hi);
                    rb[2 * i2 + 1]              = static_cast<int32_t>(D + hi);
                }
            }
            ggml_tensor * mm = ggml_concat(ctx, mt, ggml_neg(ctx, mt), 1);  // {k, 2D}
            r = ggml_add(ctx, ggml_get_rows(ctx, mm, gb.const_i32(base + ".hb.ra", ra)),
                         ggml_get_rows(ctx, mm, gb.const_i32(base + ".hb.rb", rb)));
        } else {
            r = ggml_view_2d(ctx, mt, k, d, mt->nb[1], 0);
        }
        // y += R xs over only k inputs: an outer-product accumulation (see the means above), in F32
        ggml_tensor * xs_t = ggml_get_rows(ctx, xt, gb.const_i32(base + ".hb.is", sidx));  // {N, k}
        y = ggml_add(ctx, y, ggml_out_prod(ctx, ggml_cont(ctx, ggml_transpose(ctx, r)), xs_t));
    }
    return ggml_reshape_4d(ctx, y, d, x->ne[1], x->ne[2], x->ne[3]);
}

ggml_tensor * build_linear_any(graph_builder & gb, ggml_tensor * x, const std::string & weight_name, ggml_tensor * b) {
    if (!has_hbvla(gb, weight_name)) return gb.build_linear(x, gb.weight(weight_name), b);
    ggml_tensor * y = build_hbvla_linear(gb, x, weight_name);
    if (b != nullptr) {
        // exactly {out}: anything else ggml_add cannot broadcast would abort inside ggml
        if (b->ne[0] != y->ne[0] || b->ne[1] != 1 || b->ne[2] != 1 || b->ne[3] != 1) {
            fail(OMNIMODEL_ERR_SHAPE, format("bias '%s' has shape %s (ggml order), expected [%lld]", ggml_get_name(b),
                                             shape_str(b).c_str(), (long long) y->ne[0]));
        }
        y = ggml_add(gb.ctx0, y, b);
    }
    return y;
}

}  // namespace omni
