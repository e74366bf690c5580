// The graph-time pass of check.hpp: every node of a built graph against the types ggml's CPU kernels
// implement for its operation, before the scheduler allocates it. A weight's role is the operation
// that consumes it, so this is where "a norm weight must be F32" and "a matmul weight must have a dot
// product kernel" are enforced, whichever template or block built the graph. An operation this table
// does not know passes only when everything it touches is F32 (or I32 indices).
#include "check.hpp"

#include "gemm_bf16.hpp"
#include "gemm_lowbit.hpp"
#include "graph.hpp"
#include "model.hpp"

#include "ggml-cpu.h"

#include <cmath>
#include <cstring>

namespace omni {

namespace {

bool is_float(ggml_type t) { return t == GGML_TYPE_F32 || t == GGML_TYPE_F16 || t == GGML_TYPE_BF16; }

// What ggml-cpu's binary_op (add, sub, mul, div) implements: (src0, src1, dst).
bool binary_ok(ggml_type a, ggml_type b, ggml_type d) {
    using T = ggml_type;
    static const T ok[][3] = {
        {GGML_TYPE_F32, GGML_TYPE_F32, GGML_TYPE_F32},   {GGML_TYPE_F16, GGML_TYPE_F16, GGML_TYPE_F16},
        {GGML_TYPE_BF16, GGML_TYPE_BF16, GGML_TYPE_BF16}, {GGML_TYPE_BF16, GGML_TYPE_F32, GGML_TYPE_BF16},
        {GGML_TYPE_BF16, GGML_TYPE_F32, GGML_TYPE_F32},  {GGML_TYPE_F16, GGML_TYPE_F32, GGML_TYPE_F16},
        {GGML_TYPE_F16, GGML_TYPE_F32, GGML_TYPE_F32},
    };
    for (const auto & r : ok) {
        if (r[0] == a && r[1] == b && r[2] == d) return true;
    }
    return false;
}

// ggml_compute_forward_dup's conversions (cont, cpy).
bool dup_ok(ggml_type s, ggml_type d) {
    if (s == d) return true;  // a byte copy
    if (is_float(s) && is_float(d)) return true;
    if (s == GGML_TYPE_F32 && d == GGML_TYPE_I32) return true;
    if (s == GGML_TYPE_I32 && d == GGML_TYPE_F32) return true;
    return ggml_is_quantized(s) && d == GGML_TYPE_F32 && is_weight_type(s);
}

bool mul_mat_ok(const ggml_tensor * w, const ggml_tensor * x) {
    if (!is_weight_type(w->type)) return false;
    const ggml_type_traits_cpu * cpu = ggml_get_type_traits_cpu(w->type);
    return x->type == GGML_TYPE_F32 || x->type == cpu->vec_dot_type;
}

bool get_rows_ok(ggml_type t) { return t == GGML_TYPE_I32 || is_weight_type(t); }

float op_param_f32(const ggml_tensor * t, int i) {
    float v = 0.0f;
    std::memcpy(&v, reinterpret_cast<const char *>(t->op_params) + sizeof(float) * static_cast<size_t>(i), sizeof(float));
    return v;
}

// The reason node t cannot run, or "" when it can.
std::string why_not(const ggml_tensor * t) {
    const ggml_tensor * a = t->src[0];
    const ggml_tensor * b = t->src[1];
    auto all_f32 = [&] {
        if (t->type != GGML_TYPE_F32 && t->type != GGML_TYPE_I32) return false;
        for (const ggml_tensor * s : t->src) {
            if (s != nullptr && s->type != GGML_TYPE_F32 && s->type != GGML_TYPE_I32) return false;
        }
        return true;
    };
    switch (t->op) {
        case GGML_OP_NONE:
        case GGML_OP_RESHAPE:
        case GGML_OP_VIEW:
        case GGML_OP_PERMUTE:
        case GGML_OP_TRANSPOSE:
            return "";
        case GGML_OP_ADD:
        case GGML_OP_SUB:
        case GGML_OP_MUL:
        case GGML_OP_DIV:
            return binary_ok(a->type, b->type, t->type) ? "" : "takes F32 operands (a bias, norm or scale weight must be F32)";
        case GGML_OP_MUL_MAT:
            return mul_mat_ok(a, b) && t->type == GGML_TYPE_F32 ? "" : "has no matrix-multiply kernel for this weight type";
        case GGML_OP_GET_ROWS:
            return get_rows_ok(a->type) && b->type == GGML_TYPE_I32 ? "" : "cannot look rows up in this type";
        case GGML_OP_NORM:
        case GGML_OP_RMS_NORM: {
            const float eps = op_param_f32(t, 0);
            if (!(eps >= 0.0f) || !std::isfinite(eps)) return format("has epsilon %g; it must be finite and >= 0", (double) eps);
            return a->type == GGML_TYPE_F32 ? "" : "normalises F32 only";
        }
        case GGML_OP_REPEAT:
            return is_float(a->type) || a->type == GGML_TYPE_I32 || a->type == GGML_TYPE_I16 ? "" : "cannot repeat this type";
        case GGML_OP_CONCAT:
            return a->type == b->type && (is_float(a->type) || a->type == GGML_TYPE_I32) ? "" : "concatenates equal float types only";
        case GGML_OP_DUP:
        case GGML_OP_CONT:
        case GGML_OP_CPY:
            return dup_ok(a->type, t->type) ? "" : "cannot convert between these types";
        case GGML_OP_SOFT_MAX:
            return a->type == GGML_TYPE_F32 && (b == nullptr || b->type == GGML_TYPE_F32 || b->type == GGML_TYPE_F16)
                       ? ""
                       : "takes F32 scores";
        case GGML_OP_ROPE:
            return (a->type == GGML_TYPE_F32 || a->type == GGML_TYPE_F16) && b->type == GGML_TYPE_I32 ? "" : "takes F32/F16 and I32 positions";
        case GGML_OP_IM2COL:
            return (t->type == GGML_TYPE_F32 || t->type == GGML_TYPE_F16) && (b->type == GGML_TYPE_F32 || b->type == GGML_TYPE_F16)
                       ? ""
                       : "takes F32/F16 images";
        case GGML_OP_UNARY:
        case GGML_OP_GLU:
            return (a->type == GGML_TYPE_F32 || a->type == GGML_TYPE_F16) && (b == nullptr || b->type == a->type) ? ""
                                                                                                               : "takes F32/F16";
        case GGML_OP_SCALE:
            return a->type == GGML_TYPE_F32 || a->type == GGML_TYPE_BF16 ? "" : "takes F32";
        case GGML_OP_PAD:
        case GGML_OP_DIAG_MASK_INF:
        case GGML_OP_DIAG_MASK_ZERO:
            return a->type == GGML_TYPE_F32 ? "" : "takes F32";
        case GGML_OP_FLASH_ATTN_EXT: {
            const ggml_tensor * v    = t->src[2];
            const ggml_tensor * mask = t->src[3];
            auto kv_ok = [](const ggml_tensor * x) { return x != nullptr && (is_float(x->type) || is_weight_type(x->type)); };
            const bool ok = a->type == GGML_TYPE_F32 && kv_ok(b) && kv_ok(v) &&
                            (mask == nullptr || mask->type == GGML_TYPE_F16 || mask->type == GGML_TYPE_F32);
            return ok ? "" : "takes F32 queries and float or quantized keys/values";
        }
        case GGML_OP_CUSTOM:
            // our GEMMs: built only for BF16 (gemm_bf16()) or gemm_lowbit_takes() weights, F32
            // activations and bias, each checked by the function that builds the node
            if (is_gemm_bf16_node(t) || is_gemm_lowbit_node(t)) return "";
            return all_f32() ? "" : "is not vetted for non-F32 types";
        default:
            return all_f32() ? "" : "is not vetted for non-F32 types";
    }
}

// The model weight behind a source (through views and reshapes), or nullptr.
const ggml_tensor * weight_behind(const ggml_tensor * s, const model & m) {
    for (int depth = 0; s != nullptr && depth < 8; ++depth) {
        if (m.find(ggml_get_name(s)) == s) return s;
        s = s->view_src != nullptr ? s->view_src : (s->op == GGML_OP_RESHAPE ? s->src[0] : nullptr);
    }
    return nullptr;
}

}  // namespace

void check_graph(ggml_cgraph * gf, const model & m) {
    const int n = ggml_graph_n_nodes(gf);
    for (int i = 0; i < n; ++i) {
        const ggml_tensor * t   = ggml_graph_node(gf, i);
        const std::string   why = why_not(t);
        if (why.empty()) continue;
        std::string types;
        const ggml_tensor * w = nullptr;
        for (const ggml_tensor * s : t->src) {
            if (s == nullptr) continue;
            types += std::string(types.empty() ? "" : ", ") + ggml_type_name(s->type);
            if (w == nullptr) w = weight_behind(s, m);
        }
        const char * node = ggml_get_name(t)[0] != '\0' ? ggml_get_name(t) : "(unnamed)";
        if (w != nullptr) {
            fail(OMNIMODEL_ERR_UNSUPPORTED,
                 format("'%s': tensor '%s' is %s, but the %s operation ('%s') that uses it %s (operand types: %s)",
                        m.path().c_str(), ggml_get_name(w), ggml_type_name(w->type), ggml_op_desc(t), node, why.c_str(),
                        types.c_str()));
        }
        fail(OMNIMODEL_ERR_UNSUPPORTED, format("'%s': the %s operation '%s' %s (operand types: %s -> %s)", m.path().c_str(),
                                               ggml_op_desc(t), node, why.c_str(), types.c_str(), ggml_type_name(t->type)));
    }
}

void check_outputs_finite(const std::vector<std::pair<std::string, ggml_tensor *>> & outputs,
                          const std::map<std::string, host_tensor> & results) {
    for (const auto & o : outputs) {
        auto it = results.find(o.first);
        if (it == results.end()) continue;
        const std::vector<float> & d = it->second.data;
        for (size_t i = 0; i < d.size(); ++i) {
            if (!std::isfinite(d[i])) {
                fail(OMNIMODEL_ERR_BACKEND,
                     format("output '%s' holds a non-finite value (%g at index %zu): the weights, statistics or inputs are "
                            "out of range",
                            o.first.c_str(), (double) d[i], i));
            }
        }
    }
}

}  // namespace omni
