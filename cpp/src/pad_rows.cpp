#include "pad_rows.hpp"

#include <cstring>

namespace omni {

namespace {

void pad_op(ggml_tensor * dst, int ith, int nth, void *) {
    const ggml_tensor * x    = dst->src[0];
    const int64_t       rows = ggml_nrows(x), k = x->ne[0], width = dst->ne[0];
    for (int64_t r = rows * ith / nth; r < rows * (ith + 1) / nth; ++r) {
        const int64_t i1 = r % x->ne[1], i2 = (r / x->ne[1]) % x->ne[2], i3 = r / (x->ne[1] * x->ne[2]);
        const char *  src = static_cast<const char *>(x->data) + i1 * x->nb[1] + i2 * x->nb[2] + i3 * x->nb[3];
        char *        out = static_cast<char *>(dst->data) + i1 * dst->nb[1] + i2 * dst->nb[2] + i3 * dst->nb[3];
        std::memcpy(out, src, static_cast<size_t>(k) * sizeof(float));
        std::memset(out + k * sizeof(float), 0, static_cast<size_t>(width - k) * sizeof(float));
    }
}

}  // namespace

ggml_tensor * pad_rows(ggml_context * ctx, ggml_tensor * x, int64_t pad) {
    if (x->type != GGML_TYPE_F32 || x->nb[0] != sizeof(float)) return ggml_pad(ctx, x, static_cast<int>(pad), 0, 0, 0);
    ggml_tensor * args[1] = {x};
    ggml_tensor * y = ggml_custom_4d(ctx, GGML_TYPE_F32, x->ne[0] + pad, x->ne[1], x->ne[2], x->ne[3], args, 1, pad_op,
                                     GGML_N_TASKS_MAX, nullptr);
    ggml_set_name(y, "pad_rows (zero columns)");  // a space: never a capturable intermediate
    return y;
}

}  // namespace omni
