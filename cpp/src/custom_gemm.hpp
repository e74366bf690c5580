// What our CPU GEMMs (gemm_bf16, gemm_lowbit) share as ggml graph nodes: each is a packing node that
// converts the activations once (rounded exactly as ggml's vec_dot_type) into an I32 scratch tensor, then
// the product node that reads the weights and that scratch. Both are ggml custom nodes, so the scheduler
// plans their memory and runs them on its thread pool like any other node.
#pragma once

#include "ggml.h"

#include <cstring>
#include <initializer_list>

namespace omni {

// packed = pack(x) as I32 {pack_ne0, pack_ne1}; y {M, x->ne[1..3]} = gemm(w, packed, b) in F32.
// The names carry a space so the validator never takes them for a capturable intermediate.
// pack_userdata reaches the packing op as its userdata (a constant of the weight format, say).
inline ggml_tensor * packed_gemm_nodes(ggml_context * ctx, ggml_tensor * w, ggml_tensor * x, ggml_tensor * b,
                                       int64_t pack_ne0, int64_t pack_ne1, ggml_custom_op_t pack,
                                       ggml_custom_op_t gemm, const char * pack_name, const char * gemm_name,
                                       void * pack_userdata = nullptr) {
    ggml_tensor * args[1] = {x};
    ggml_tensor * packed  = ggml_custom_4d(ctx, GGML_TYPE_I32, pack_ne0, pack_ne1, 1, 1, args, 1, pack,
                                           GGML_N_TASKS_MAX, pack_userdata);
    ggml_set_name(packed, pack_name);
    ggml_tensor * args2[3] = {w, packed, b};
    ggml_tensor * y = ggml_custom_4d(ctx, GGML_TYPE_F32, w->ne[1], x->ne[1], x->ne[2], x->ne[3], args2,
                                     b != nullptr ? 3 : 2, gemm, GGML_N_TASKS_MAX, nullptr);
    ggml_set_name(y, gemm_name);
    return y;
}

// Whether t is a custom node running one of funs: ggml keeps a custom node's function pointer first in its
// op_params (the pinned ggml's ggml_custom_op_params), so graph_check can vet the nodes our builders made.
inline bool is_custom_node_of(const ggml_tensor * t, std::initializer_list<ggml_custom_op_t> funs) {
    if (t == nullptr || t->op != GGML_OP_CUSTOM) return false;
    ggml_custom_op_t fun = nullptr;
    std::memcpy(&fun, t->op_params, sizeof(fun));
    for (ggml_custom_op_t f : funs) {
        if (fun == f) return true;
    }
    return false;
}

}  // namespace omni
