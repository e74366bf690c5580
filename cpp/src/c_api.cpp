// The C boundary: every entry point catches everything and turns it into a status + message.
#include "omnimodel.h"

#include "c_context.hpp"
#include "error.hpp"
#include "runtime.hpp"

#include <cstring>
#include <new>

#ifndef OMNIMODEL_VERSION_STRING
#    define OMNIMODEL_VERSION_STRING "0.0.0"
#endif


namespace {

thread_local std::string g_load_error;

using omni::guarded;

// For calls that must not fail on a NULL context with an unhelpful crash.
#define OMNI_REQUIRE_CTX(ctx)                                                     \
    do {                                                                          \
        if ((ctx) == nullptr) {                                                   \
            g_load_error = "context is NULL";                                     \
            return OMNIMODEL_ERR_INVALID_ARGUMENT;                                \
        }                                                                         \
    } while (0)

}  // namespace

std::string & omni::thread_load_error() { return g_load_error; }

extern "C" {

const char * omnimodel_version(void) { return OMNIMODEL_VERSION_STRING; }

const char * omnimodel_ggml_version(void) { return ggml_version(); }

const char * omnimodel_status_string(omnimodel_status status) {
    switch (status) {
        case OMNIMODEL_OK: return "ok";
        case OMNIMODEL_ERR_INVALID_ARGUMENT: return "invalid argument";
        case OMNIMODEL_ERR_IO: return "i/o error";
        case OMNIMODEL_ERR_FORMAT: return "bad file format";
        case OMNIMODEL_ERR_UNSUPPORTED: return "unsupported";
        case OMNIMODEL_ERR_SHAPE: return "shape mismatch";
        case OMNIMODEL_ERR_NOT_FOUND: return "not found";
        case OMNIMODEL_ERR_BACKEND: return "backend error";
        case OMNIMODEL_ERR_OUT_OF_MEMORY: return "out of memory";
        case OMNIMODEL_ERR_INTERNAL: return "internal error";
    }
    return "unknown status";
}

struct omnimodel_params omnimodel_default_params(void) {
    omnimodel_params p;
    p.n_threads  = 0;
    p.use_mmap   = true;
    p.backend    = OMNIMODEL_BACKEND_AUTO;
    p.gpu_device = 0;
    p.verbose    = false;
    p.repack_weights = true;
    p.preprocess_only = false;
    return p;
}

omnimodel_status omnimodel_load(const char * path, struct omnimodel_params params, omnimodel_context ** out_ctx) {
    if (out_ctx == nullptr) {
        g_load_error = "out_ctx is NULL";
        return OMNIMODEL_ERR_INVALID_ARGUMENT;
    }
    *out_ctx = nullptr;
    if (path == nullptr) {
        g_load_error = "path is NULL";
        return OMNIMODEL_ERR_INVALID_ARGUMENT;
    }
    // read as an integer: loading an out-of-range value as the enum type is itself undefined
    int backend = 0;
    static_assert(sizeof backend == sizeof params.backend, "omnimodel_backend is int-sized");
    std::memcpy(&backend, &params.backend, sizeof backend);
    if (backend != OMNIMODEL_BACKEND_AUTO && backend != OMNIMODEL_BACKEND_CPU && backend != OMNIMODEL_BACKEND_GPU) {
        g_load_error = omni::format("params.backend %d is not an omnimodel_backend (0 auto, 1 cpu, 2 gpu)", backend);
        return OMNIMODEL_ERR_INVALID_ARGUMENT;
    }
    if (params.gpu_device < 0) {
        g_load_error = omni::format("params.gpu_device %d is negative", (int) params.gpu_device);
        return OMNIMODEL_ERR_INVALID_ARGUMENT;
    }
    std::unique_ptr<omnimodel_context> ctx;
    const omnimodel_status st = guarded(g_load_error, [&] {
        ctx     = std::make_unique<omnimodel_context>();
        ctx->rt = std::make_unique<omni::runtime>(path, params);
    });
    if (st == OMNIMODEL_OK) *out_ctx = ctx.release();
    return st;
}

void omnimodel_free(omnimodel_context * ctx) { delete ctx; }

const char * omnimodel_last_error(const omnimodel_context * ctx) {
    return ctx == nullptr ? g_load_error.c_str() : ctx->last_error.c_str();
}

const char * omnimodel_architecture(const omnimodel_context * ctx) {
    return ctx == nullptr ? "" : ctx->rt->get_model().architecture().c_str();
}

const char * omnimodel_graph_source(const omnimodel_context * ctx) {
    return ctx == nullptr ? "" : ctx->rt->graph_source().c_str();
}

const char * omnimodel_architecture_source(const char * architecture) {
    thread_local std::string source;
    source = architecture == nullptr ? std::string() : omni::architecture_source(architecture);
    return source.c_str();
}

const char * omnimodel_backend_name(const omnimodel_context * ctx) {
    return ctx == nullptr ? "" : ctx->rt->backend_name();
}

int64_t omnimodel_n_tensors(const omnimodel_context * ctx) {
    return ctx == nullptr ? 0 : static_cast<int64_t>(ctx->rt->get_model().tensors().size());
}

omnimodel_status omnimodel_get_tensor_info(const omnimodel_context * ctx, int64_t index,
                                           struct omnimodel_tensor_info * out) {
    OMNI_REQUIRE_CTX(ctx);
    auto & err = ctx->last_error;
    return guarded(err, [&] {
        const auto & ts = ctx->rt->get_model().tensors();
        if (out == nullptr) omni::fail(OMNIMODEL_ERR_INVALID_ARGUMENT, "out is NULL");
        if (index < 0 || index >= static_cast<int64_t>(ts.size())) {
            omni::fail(OMNIMODEL_ERR_NOT_FOUND, omni::format("tensor index %lld out of range [0, %zu)",
                                                             (long long) index, ts.size()));
        }
        const ggml_tensor * t = ts[static_cast<size_t>(index)];
        out->name      = ggml_get_name(t);
        out->type      = static_cast<int32_t>(t->type);
        out->type_name = ggml_type_name(t->type);
        out->n_dims    = ggml_n_dims(t);
        for (int i = 0; i < OMNIMODEL_MAX_DIMS; ++i) out->ne[i] = t->ne[i];
        out->n_bytes = ggml_nbytes(t);
    });
}

omnimodel_status omnimodel_meta_int(const omnimodel_context * ctx, const char * key, int64_t * out) {
    OMNI_REQUIRE_CTX(ctx);
    auto & err = ctx->last_error;
    return guarded(err, [&] {
        if (key == nullptr || out == nullptr) omni::fail(OMNIMODEL_ERR_INVALID_ARGUMENT, "key or out is NULL");
        *out = ctx->rt->get_model().get_int(key);
    });
}

omnimodel_status omnimodel_meta_float(const omnimodel_context * ctx, const char * key, double * out) {
    OMNI_REQUIRE_CTX(ctx);
    auto & err = ctx->last_error;
    return guarded(err, [&] {
        if (key == nullptr || out == nullptr) omni::fail(OMNIMODEL_ERR_INVALID_ARGUMENT, "key or out is NULL");
        *out = ctx->rt->get_model().get_float(key);
    });
}

omnimodel_status omnimodel_meta_string(const omnimodel_context * ctx, const char * key, const char ** out) {
    OMNI_REQUIRE_CTX(ctx);
    auto & err = ctx->last_error;
    return guarded(err, [&] {
        if (key == nullptr || out == nullptr) omni::fail(OMNIMODEL_ERR_INVALID_ARGUMENT, "key or out is NULL");
        const auto & m  = ctx->rt->get_model();
        const int64_t id = m.require_key(key);
        if (gguf_get_kv_type(m.gguf(), id) != GGUF_TYPE_STRING) {
            omni::fail(OMNIMODEL_ERR_FORMAT, omni::format("metadata key '%s' is not a string", key));
        }
        *out = gguf_get_val_str(m.gguf(), id);  // owned by the gguf context, lives with ctx
    });
}

omnimodel_status omnimodel_set_n_threads(omnimodel_context * ctx, int32_t n_threads) {
    OMNI_REQUIRE_CTX(ctx);
    return guarded(ctx->last_error, [&] { ctx->rt->set_n_threads(n_threads); });
}

omnimodel_status omnimodel_set_input(omnimodel_context * ctx, const char * name, const float * data, int32_t n_dims,
                                     const int64_t * ne) {
    OMNI_REQUIRE_CTX(ctx);
    return guarded(ctx->last_error, [&] {
        if (name == nullptr) omni::fail(OMNIMODEL_ERR_INVALID_ARGUMENT, "input name is NULL");
        ctx->rt->set_input(name, data, n_dims, ne);
    });
}

omnimodel_status omnimodel_clear_inputs(omnimodel_context * ctx) {
    OMNI_REQUIRE_CTX(ctx);
    return guarded(ctx->last_error, [&] { ctx->rt->clear_inputs(); });
}

omnimodel_status omnimodel_set_capture(omnimodel_context * ctx, const char * const * names, size_t n_names) {
    OMNI_REQUIRE_CTX(ctx);
    return guarded(ctx->last_error, [&] {
        std::vector<std::string> v;
        for (size_t i = 0; i < n_names; ++i) {
            if (names == nullptr || names[i] == nullptr) omni::fail(OMNIMODEL_ERR_INVALID_ARGUMENT, "capture name is NULL");
            v.emplace_back(names[i]);
        }
        ctx->rt->set_capture(v);
    });
}

omnimodel_status omnimodel_compute(omnimodel_context * ctx) {
    OMNI_REQUIRE_CTX(ctx);
    return guarded(ctx->last_error, [&] { ctx->rt->compute(); });
}

size_t omnimodel_n_results(const omnimodel_context * ctx) {
    return ctx == nullptr ? 0 : ctx->rt->result_names().size();
}

const char * omnimodel_result_name(const omnimodel_context * ctx, size_t index) {
    if (ctx == nullptr || index >= ctx->rt->result_names().size()) return nullptr;
    return ctx->rt->result_names()[index].c_str();
}

omnimodel_status omnimodel_result_shape(const omnimodel_context * ctx, const char * name, int32_t * n_dims,
                                        int64_t ne[OMNIMODEL_MAX_DIMS]) {
    OMNI_REQUIRE_CTX(ctx);
    auto & err = ctx->last_error;
    return guarded(err, [&] {
        if (name == nullptr || n_dims == nullptr || ne == nullptr) {
            omni::fail(OMNIMODEL_ERR_INVALID_ARGUMENT, "name, n_dims or ne is NULL");
        }
        const omni::host_tensor & h = ctx->rt->result(name);
        *n_dims = h.n_dims;
        for (int i = 0; i < OMNIMODEL_MAX_DIMS; ++i) ne[i] = h.ne[i];
    });
}

omnimodel_status omnimodel_last_timings(const omnimodel_context * ctx, double * build_seconds,
                                        double * compute_seconds) {
    OMNI_REQUIRE_CTX(ctx);
    return guarded(ctx->last_error, [&] {
        if (build_seconds == nullptr || compute_seconds == nullptr) {
            omni::fail(OMNIMODEL_ERR_INVALID_ARGUMENT, "build_seconds or compute_seconds is NULL");
        }
        *build_seconds   = ctx->rt->build_seconds();
        *compute_seconds = ctx->rt->compute_seconds();
    });
}

omnimodel_status omnimodel_result_ready_time(const omnimodel_context * ctx, const char * name, double * seconds) {
    OMNI_REQUIRE_CTX(ctx);
    return guarded(ctx->last_error, [&] {
        if (name == nullptr || seconds == nullptr) omni::fail(OMNIMODEL_ERR_INVALID_ARGUMENT, "name or seconds is NULL");
        *seconds = ctx->rt->ready_seconds(name);
    });
}

omnimodel_status omnimodel_result_get(const omnimodel_context * ctx, const char * name, float * dst, size_t capacity) {
    OMNI_REQUIRE_CTX(ctx);
    auto & err = ctx->last_error;
    return guarded(err, [&] {
        if (name == nullptr || dst == nullptr) omni::fail(OMNIMODEL_ERR_INVALID_ARGUMENT, "name or dst is NULL");
        const omni::host_tensor & h = ctx->rt->result(name);
        if (capacity < h.data.size()) {
            omni::fail(OMNIMODEL_ERR_INVALID_ARGUMENT, omni::format("result '%s' has %zu floats but dst holds %zu",
                                                                    name, h.data.size(), capacity));
        }
        std::memcpy(dst, h.data.data(), h.data.size() * sizeof(float));
    });
}

// ---- performance: profile, graph reuse, memory

omnimodel_status omnimodel_set_profile(omnimodel_context * ctx, int32_t on) {
    OMNI_REQUIRE_CTX(ctx);
    return guarded(ctx->last_error, [&] { ctx->rt->set_profile(on != 0); });
}

size_t omnimodel_profile_size(const omnimodel_context * ctx) {
    return ctx == nullptr ? 0 : ctx->rt->profile_nodes().size();
}

omnimodel_status omnimodel_profile_get(const omnimodel_context * ctx, size_t index, omnimodel_profile_node * out) {
    OMNI_REQUIRE_CTX(ctx);
    return guarded(ctx->last_error, [&] {
        if (out == nullptr) omni::fail(OMNIMODEL_ERR_INVALID_ARGUMENT, "out is NULL");
        const auto & nodes = ctx->rt->profile_nodes();
        if (index >= nodes.size()) {
            omni::fail(OMNIMODEL_ERR_NOT_FOUND, omni::format("profile node %zu of %zu", index, nodes.size()));
        }
        const omni::profile_node & p = nodes[index];
        out->name = p.name.c_str();
        out->op   = p.op.c_str();
        out->type = p.type;
        for (int s = 0; s < 3; ++s) {
            out->src_type[s] = p.src_type[s];
            for (int i = 0; i < OMNIMODEL_MAX_DIMS; ++i) out->src_ne[s][i] = p.src_ne[s][i];
        }
        for (int i = 0; i < OMNIMODEL_MAX_DIMS; ++i) out->ne[i] = p.ne[i];
        out->src0_is_weight = p.src0_is_weight;
        out->seconds        = p.seconds;
        out->cpu_seconds    = p.cpu_seconds;
    });
}

omnimodel_status omnimodel_get_run_stats(const omnimodel_context * ctx, omnimodel_run_stats * out) {
    OMNI_REQUIRE_CTX(ctx);
    return guarded(ctx->last_error, [&] {
        if (out == nullptr) omni::fail(OMNIMODEL_ERR_INVALID_ARGUMENT, "out is NULL");
        const omni::model & m      = ctx->rt->get_model();
        out->graph_builds         = ctx->rt->graph_builds();
        out->graph_reuses         = ctx->rt->graph_reuses();
        out->compute_buffer_bytes = ctx->rt->compute_buffer_bytes();
        out->weight_bytes         = m.weight_bytes();
        out->repacked_bytes       = m.repacked_bytes();
        out->n_repacked           = m.n_repacked();
    });
}

}  // extern "C"
