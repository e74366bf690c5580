#include "graph.hpp"

#include "archs/archs.hpp"
#include "error.hpp"
#include "fast_gelu.hpp"
#include "gemm_bf16.hpp"
#include "gemm_lowbit.hpp"
#include "pad_rows.hpp"

#include <cmath>
#include <cstring>
#include <mutex>
#include <utility>

namespace omni {

norm_kind parse_norm_kind(const std::string & s) {
    if (s == "layer") return norm_kind::layer;
    if (s == "rms") return norm_kind::rms;
    fail(OMNIMODEL_ERR_UNSUPPORTED, format("unknown norm kind '%s' (expected 'layer' or 'rms')", s.c_str()));
}

gemm_kind parse_gemm_kind(const std::string & s) {
    if (s == "ggml") return gemm_kind::ggml;
    if (s == "omni") return gemm_kind::omni;
    fail(OMNIMODEL_ERR_UNSUPPORTED, format("unknown gemm kind '%s' (expected 'ggml' or 'omni')", s.c_str()));
}

act_kind parse_act_kind(const std::string & s) {
    if (s == "none") return act_kind::none;
    if (s == "relu") return act_kind::relu;
    if (s == "silu") return act_kind::silu;
    if (s == "gelu" || s == "gelu_erf") return act_kind::gelu_erf;
    if (s == "gelu_tanh") return act_kind::gelu_tanh;
    if (s == "gelu_erf_fast") return act_kind::gelu_erf_fast;
    fail(OMNIMODEL_ERR_UNSUPPORTED,
         format("unknown activation '%s' (expected none, relu, silu, gelu, gelu_tanh, gelu_erf_fast)", s.c_str()));
}

std::string shape_str(const ggml_tensor * t) {
    std::string s = "[";
    const int   n = ggml_n_dims(t);
    for (int i = 0; i < n; ++i) {
        s += std::to_string(t->ne[i]);
        if (i + 1 < n) s += ", ";
    }
    return s + "]";
}

graph_builder::graph_builder(const model & m_, ggml_context * ctx0_, const std::map<std::string, host_tensor> & inputs)
    : m(m_), ctx0(ctx0_), host_inputs_(inputs) {}

ggml_tensor * graph_builder::input(const std::string & name) {
    for (auto & kv : inputs_) {
        if (kv.first == name) return kv.second;
    }
    auto it = host_inputs_.find(name);
    if (it == host_inputs_.end()) {
        fail(OMNIMODEL_ERR_NOT_FOUND, format("the %s graph needs input '%s', which was not set",
                                             m.architecture().c_str(), name.c_str()));
    }
    const host_tensor & h = it->second;
    ggml_tensor * t = ggml_new_tensor(ctx0, GGML_TYPE_F32, 4, h.ne.data());
    ggml_set_name(t, name.c_str());
    ggml_set_input(t);
    inputs_.emplace_back(name, t);
    id_limits_.push_back(-1);
    return t;
}

const host_tensor * graph_builder::host_input(const std::string & name) const {
    auto it = host_inputs_.find(name);
    return it == host_inputs_.end() ? nullptr : &it->second;
}

ggml_tensor * graph_builder::input_ids(const std::string & name, int64_t limit) {
    for (auto & kv : inputs_) {
        if (kv.first == name) return kv.second;
    }
    const host_tensor * h = host_input(name);
    if (h == nullptr) {
        fail(OMNIMODEL_ERR_NOT_FOUND, format("the %s graph needs input '%s', which was not set",
                                             m.architecture().c_str(), name.c_str()));
    }
    check_ids(name, *h, limit);
    ggml_tensor * t = ggml_new_tensor(ctx0, GGML_TYPE_I32, 4, h->ne.data());
    ggml_set_name(t, name.c_str());
    ggml_set_input(t);
    inputs_.emplace_back(name, t);
    id_limits_.push_back(limit);
    return t;
}

void check_ids(const std::string & name, const host_tensor & h, int64_t limit) {
    for (size_t i = 0; i < h.data.size(); ++i) {
        const float v = h.data[i];
        if (v != static_cast<float>(static_cast<int64_t>(v)) || v < 0 || v >= static_cast<float>(limit)) {
            fail(OMNIMODEL_ERR_INVALID_ARGUMENT, format("input '%s'[%zu] = %g is not an id in [0, %lld)",
                                                        name.c_str(), i, (double) v, (long long) limit));
        }
    }
}

ggml_tensor * graph_builder::const_i32(const std::string & name, const std::vector<int32_t> & values) {
    ggml_tensor * t = ggml_new_tensor_1d(ctx0, GGML_TYPE_I32, static_cast<int64_t>(values.size()));
    ggml_set_name(t, name.c_str());
    ggml_set_input(t);
    std::vector<uint8_t> bytes(values.size() * sizeof(int32_t));
    if (!bytes.empty()) std::memcpy(bytes.data(), values.data(), bytes.size());
    constants_.emplace_back(t, std::move(bytes));
    return t;
}

ggml_tensor * graph_builder::const_f32(const std::string & name, const std::vector<float> & values,
                                       std::initializer_list<int64_t> ne) {
    int64_t dims[GGML_MAX_DIMS] = {1, 1, 1, 1};
    int     nd = 0;
    int64_t n  = 1;
    for (int64_t v : ne) {
        dims[nd++] = v;
        n *= v;
    }
    if (nd == 0 || nd > GGML_MAX_DIMS || n != static_cast<int64_t>(values.size())) {
        fail(OMNIMODEL_ERR_INTERNAL, format("constant '%s': %zu values for the requested shape", name.c_str(),
                                            values.size()));
    }
    ggml_tensor * t = ggml_new_tensor(ctx0, GGML_TYPE_F32, GGML_MAX_DIMS, dims);
    ggml_set_name(t, name.c_str());
    ggml_set_input(t);
    std::vector<uint8_t> bytes(values.size() * sizeof(float));
    if (!bytes.empty()) std::memcpy(bytes.data(), values.data(), bytes.size());
    constants_.emplace_back(t, std::move(bytes));
    return t;
}

ggml_tensor * graph_builder::causal_mask_f16(int64_t n) {
    auto it = causal_masks_.find(n);
    if (it != causal_masks_.end()) return it->second;
    ggml_tensor * t = ggml_new_tensor_2d(ctx0, GGML_TYPE_F16, n, n);
    ggml_set_name(t, ("causal_mask_" + std::to_string(n)).c_str());
    ggml_set_input(t);
    const ggml_fp16_t zero = ggml_fp32_to_fp16(0.0f), neg_inf = ggml_fp32_to_fp16(-INFINITY);
    std::vector<ggml_fp16_t> m(static_cast<size_t>(n * n));
    for (int64_t q = 0; q < n; ++q) {
        for (int64_t k = 0; k < n; ++k) m[static_cast<size_t>(q * n + k)] = k <= q ? zero : neg_inf;
    }
    std::vector<uint8_t> bytes(m.size() * sizeof(ggml_fp16_t));
    std::memcpy(bytes.data(), m.data(), bytes.size());
    constants_.emplace_back(t, std::move(bytes));
    causal_masks_[n] = t;
    return t;
}

// A 2-D quantized weight whose stored rows are `width` rounded up to its type's block: the zero
// padding the quantizer adds so a block type fits a width it does not divide. Exactly one block's
// rounding, so a genuinely wrong width is still a shape error.
static bool is_block_padding(const ggml_tensor * w, int64_t width) {
    const int64_t blk = ggml_blck_size(w->type);
    return blk > 1 && width > 0 && width % blk != 0 && w->ne[0] == (width + blk - 1) / blk * blk;
}

ggml_tensor * graph_builder::weight(const std::string & name) const {
    ggml_tensor * t = m.find(name);
    if (t == nullptr) {
        fail(OMNIMODEL_ERR_NOT_FOUND, format("tensor '%s' is missing from '%s' (architecture %s)", name.c_str(),
                                             m.path().c_str(), m.architecture().c_str()));
    }
    return t;
}

ggml_tensor * graph_builder::weight(const std::string & name, std::initializer_list<int64_t> ne) const {
    ggml_tensor * t = weight(name);
    int i = 0;
    bool ok = true;
    for (int64_t want : ne) {
        ok = ok && (t->ne[i] == want || (i == 0 && ne.size() == 2 && is_block_padding(t, want)));
        ++i;
    }
    for (; i < GGML_MAX_DIMS; ++i) ok = ok && t->ne[i] == 1;
    if (!ok) {
        std::string want = "[";
        size_t k = 0;
        for (int64_t v : ne) want += std::to_string(v) + (++k < ne.size() ? ", " : "");
        fail(OMNIMODEL_ERR_SHAPE, format("tensor '%s' has shape %s (ggml order), expected %s]", name.c_str(),
                                         shape_str(t).c_str(), want.c_str()));
    }
    return t;
}

ggml_tensor * graph_builder::weight_opt(const std::string & name) const { return m.find(name); }

ggml_tensor * graph_builder::name(ggml_tensor * t, const std::string & name) {
    if (name.size() >= GGML_MAX_NAME) {
        fail(OMNIMODEL_ERR_INTERNAL, format("intermediate name '%s' is longer than ggml allows (%d)",
                                            name.c_str(), GGML_MAX_NAME - 1));
    }
    ggml_set_name(t, name.c_str());
    return t;
}

void graph_builder::output(ggml_tensor * t, const std::string & name_) {
    // An already-named intermediate keeps its name (so it stays capturable under it); the output
    // name is how the result is reported.
    if (ggml_get_name(t)[0] == '\0') name(t, name_);
    ggml_set_output(t);
    outputs_.emplace_back(name_, t);
}

ggml_tensor * graph_builder::build_linear(ggml_tensor * x, ggml_tensor * w, ggml_tensor * b) {
    if (x->ne[0] < w->ne[0] && is_block_padding(w, x->ne[0])) {
        // our copy-and-fill op on the CPU; ggml's generic pad where the weight lives on another backend
        const bool on_cpu = w->buffer != nullptr && ggml_backend_buffer_is_host(w->buffer);
        x = on_cpu ? pad_rows(ctx0, x, w->ne[0] - x->ne[0]) : ggml_pad(ctx0, x, (int) (w->ne[0] - x->ne[0]), 0, 0, 0);
    }
    if (x->ne[0] != w->ne[0]) {
        fail(OMNIMODEL_ERR_SHAPE, format("'%s' expects inputs of width %lld but got %s ('%s')", ggml_get_name(w),
                                         (long long) w->ne[0], shape_str(x).c_str(), ggml_get_name(x)));
    }
    if (w->ne[2] != 1 || w->ne[3] != 1) {
        fail(OMNIMODEL_ERR_SHAPE, format("'%s' is not a matrix: %s", ggml_get_name(w), shape_str(w).c_str()));
    }
    if (b != nullptr) require_vector(b, w->ne[1], "bias");
    if (ggml_tensor * y = omni_gemm(w, x, b)) return y;  // bias added in the GEMM's store
    ggml_tensor * y = ggml_mul_mat(ctx0, w, x);
    return b != nullptr ? ggml_add(ctx0, y, b) : y;
}

bool graph_builder::on_cpu() const {
    for (const ggml_tensor * t : m.tensors()) {
        if (t->buffer != nullptr) return ggml_backend_buffer_is_host(t->buffer);
    }
    return true;
}

ggml_tensor * graph_builder::omni_gemm(ggml_tensor * w, ggml_tensor * x, ggml_tensor * b) {
    if (gemm != gemm_kind::omni) return nullptr;
    const bool lowbit = gemm_lowbit_takes(w->type);  // Q1_0/Q2_0 and the 4-bit types (gemm_kquant.hpp)
    if (w->type != GGML_TYPE_BF16 && !lowbit) return nullptr;
    const ggml_tensor * base = w->view_src != nullptr ? w->view_src : w;
    // a CPU-side weight: the custom ops run on the CPU backend only
    if (base->buffer == nullptr || !ggml_backend_buffer_is_host(base->buffer)) return nullptr;
    return lowbit ? gemm_lowbit(ctx0, w, x, b) : gemm_bf16(ctx0, w, x, b);
}

ggml_tensor * graph_builder::matmul(ggml_tensor * w, ggml_tensor * x) {
    if (ggml_tensor * y = omni_gemm(w, x, nullptr)) return y;
    return ggml_mul_mat(ctx0, w, x);
}

void require_vector(const ggml_tensor * t, int64_t n, const char * what) {
    // exactly {n}: ggml_add/ggml_mul broadcast it over rows, and abort on anything they cannot repeat
    if (t->ne[0] != n || t->ne[1] != 1 || t->ne[2] != 1 || t->ne[3] != 1) {
        fail(OMNIMODEL_ERR_SHAPE, format("%s '%s' has shape %s (ggml order), expected [%lld]", what, ggml_get_name(t),
                                         shape_str(t).c_str(), (long long) n));
    }
}

ggml_tensor * graph_builder::concat(ggml_tensor * a, ggml_tensor * b, int dim) {
    // ggml_concat asserts equal types and equal sizes outside `dim`; a file must not reach those
    bool same = a->type == b->type && dim >= 0 && dim < GGML_MAX_DIMS;
    for (int d = 0; d < GGML_MAX_DIMS; ++d) same = same && (d == dim || a->ne[d] == b->ne[d]);
    if (!same) {
        fail(OMNIMODEL_ERR_SHAPE, format("cannot concatenate '%s' (%s %s) and '%s' (%s %s) along dimension %d",
                                         ggml_get_name(a), ggml_type_name(a->type), shape_str(a).c_str(), ggml_get_name(b),
                                         ggml_type_name(b->type), shape_str(b).c_str(), dim));
    }
    return ggml_concat(ctx0, a, b, dim);
}

ggml_tensor * graph_builder::build_norm(ggml_tensor * x, ggml_tensor * w, ggml_tensor * b, norm_kind kind, float eps) {
    if (!std::isfinite(eps) || eps < 0.0f) {  // ggml asserts eps >= 0 inside the kernel
        fail(OMNIMODEL_ERR_FORMAT, format("norm epsilon %g for '%s' must be finite and >= 0", (double) eps,
                                          w != nullptr ? ggml_get_name(w) : ggml_get_name(x)));
    }
    ggml_tensor * y = kind == norm_kind::rms ? ggml_rms_norm(ctx0, x, eps) : ggml_norm(ctx0, x, eps);
    for (ggml_tensor * p : {w, b}) {
        if (p != nullptr) require_vector(p, x->ne[0], "norm parameter");
    }
    if (w != nullptr) y = ggml_mul(ctx0, y, w);
    if (b != nullptr) y = ggml_add(ctx0, y, b);
    return y;
}

ggml_tensor * graph_builder::build_act(ggml_tensor * x, act_kind kind) {
    switch (kind) {
        case act_kind::none: return x;
        case act_kind::relu: return ggml_relu(ctx0, x);
        case act_kind::silu: return ggml_silu(ctx0, x);
        case act_kind::gelu_erf: return ggml_gelu_erf(ctx0, x);
        case act_kind::gelu_tanh: return ggml_gelu(ctx0, x);
        case act_kind::gelu_erf_fast: return on_cpu() ? ggml_gelu_erf_fast(ctx0, x) : ggml_gelu_erf(ctx0, x);
    }
    return x;
}

// ---------------------------------------------------------------------------------------------
// registry

namespace {

struct arch_entry {
    build_fn    fn;
    std::string source;
};

std::mutex & registry_mutex() {
    static std::mutex mu;
    return mu;
}

std::map<std::string, arch_entry> & registry() {
    // Built-ins are listed here rather than self-registering from static initialisers, which a
    // static link would silently drop. Model architectures are not built in: their graphs are
    // generated by `omnimodel convert` and arrive as plugins (or linked into a standalone project).
    static std::map<std::string, arch_entry> r = {
        {"omni-mlp", {build_omni_mlp, "builtin:omni-mlp"}},
    };
    return r;
}

// The source recorded for registrations on this thread; empty outside a registration_source.
thread_local std::string t_registration_source;

#ifdef OMNIMODEL_LINKED_ARCHS
thread_local bool t_linking = false;
#endif

// A standalone project compiles generated architecture sources into the library itself and defines
// OMNIMODEL_LINKED_ARCHS; its generated registration unit provides register_linked_architectures(),
// which calls each source's entry point. Run once, lazily, before the registry is first consulted:
// referencing it from here is what keeps that unit linked in, unlike a static initialiser.
void ensure_linked_architectures() {
#ifdef OMNIMODEL_LINKED_ARCHS
    if (t_linking) return;  // the registrations it makes come back through register_architecture
    static std::once_flag once;
    std::call_once(once, [] {
        t_linking = true;
        try {
            register_linked_architectures();
        } catch (...) {
            t_linking = false;
            throw;
        }
        t_linking = false;
    });
#endif
}

}  // namespace

registration_source::registration_source(std::string source) : previous_(std::move(t_registration_source)) {
    t_registration_source = std::move(source);
}

registration_source::~registration_source() { t_registration_source = std::move(previous_); }

void register_architecture(const std::string & name, build_fn fn) {
    ensure_linked_architectures();  // so that a linked graph never overwrites a later plugin's
    std::string source = t_registration_source.empty() ? "registered:" + name : t_registration_source;
    std::lock_guard<std::mutex> lock(registry_mutex());
    registry()[name] = {fn, std::move(source)};
}

build_fn find_architecture(const std::string & name) {
    ensure_linked_architectures();
    std::lock_guard<std::mutex> lock(registry_mutex());
    auto it = registry().find(name);
    return it == registry().end() ? nullptr : it->second.fn;
}

std::string architecture_source(const std::string & name) {
    ensure_linked_architectures();
    std::lock_guard<std::mutex> lock(registry_mutex());
    auto it = registry().find(name);
    return it == registry().end() ? std::string() : it->second.source;
}

std::vector<std::string> architecture_names() {
    ensure_linked_architectures();
    std::lock_guard<std::mutex> lock(registry_mutex());
    std::vector<std::string> names;
    for (auto & kv : registry()) names.push_back(kv.first);
    return names;
}

}  // namespace omni
