#include "runtime.hpp"

#include "error.hpp"
#include "ggml-cpu.h"

#include <algorithm>
#include <cmath>
#include <thread>

namespace omni {

namespace {

// Enough nodes for a 7B VLA (two ViT towers plus a 32-layer LLM) with room to spare.
constexpr size_t k_graph_size = 16384;

int32_t resolve_threads(int32_t n) {
    if (n > 0) return n;
    const unsigned hw = std::thread::hardware_concurrency();
    return hw > 0 ? static_cast<int32_t>(hw) : 1;
}

ggml_backend_dev_t pick_gpu(int32_t index) {
    int32_t seen = 0;
    for (size_t i = 0; i < ggml_backend_dev_count(); ++i) {
        ggml_backend_dev_t dev = ggml_backend_dev_get(i);
        const auto type = ggml_backend_dev_type(dev);
        if (type == GGML_BACKEND_DEVICE_TYPE_GPU || type == GGML_BACKEND_DEVICE_TYPE_IGPU) {
            if (seen++ == index) return dev;
        }
    }
    return nullptr;
}

}  // namespace

runtime::runtime(const std::string & path, const omnimodel_params & params) : params_(params) {
    log_install(params.verbose);

    if (params.backend != OMNIMODEL_BACKEND_CPU) {
        ggml_backend_dev_t dev = pick_gpu(params.gpu_device);
        if (dev != nullptr) {
            backend_gpu_ = ggml_backend_dev_init(dev, nullptr);
        }
        if (backend_gpu_ == nullptr && params.backend == OMNIMODEL_BACKEND_GPU) {
            fail(OMNIMODEL_ERR_UNSUPPORTED,
                 format("no GPU device %d: this build of omnimodel has no GPU backend or no GPU is present "
                        "(build with -DOMNIMODEL_CUDA=ON for CUDA)", params.gpu_device));
        }
    }
    backend_cpu_ = ggml_backend_init_by_type(GGML_BACKEND_DEVICE_TYPE_CPU, nullptr);
    if (backend_cpu_ == nullptr) {
        fail(OMNIMODEL_ERR_BACKEND, "cannot initialise ggml's CPU backend");
    }
    set_n_threads(params.n_threads);

    model_load_options lo;
    lo.use_mmap = params.use_mmap;
    lo.backend  = backend_gpu_ != nullptr ? backend_gpu_ : backend_cpu_;
    model_      = std::make_unique<model>(path, lo);

    build_ = find_architecture(model_->architecture());
    if (build_ == nullptr) {
        std::string known;
        for (auto & n : architecture_names()) known += (known.empty() ? "" : ", ") + n;
        fail(OMNIMODEL_ERR_UNSUPPORTED,
             format("'%s' has architecture '%s', which this runtime has no graph for (known: %s)", path.c_str(),
                    model_->architecture().c_str(), known.c_str()));
    }

    std::vector<ggml_backend_t> backends;
    if (backend_gpu_ != nullptr) backends.push_back(backend_gpu_);
    backends.push_back(backend_cpu_);  // last: the scheduler treats lower indices as preferred
    sched_ = ggml_backend_sched_new(backends.data(), nullptr, static_cast<int>(backends.size()), k_graph_size,
                                    false, true);
    if (sched_ == nullptr) {
        fail(OMNIMODEL_ERR_BACKEND, "cannot create the ggml backend scheduler");
    }
    graph_meta_.resize(ggml_tensor_overhead() * k_graph_size + ggml_graph_overhead_custom(k_graph_size, false));
}

runtime::~runtime() {
    if (sched_ != nullptr) ggml_backend_sched_free(sched_);
    model_.reset();  // weights buffers before their backends
    if (backend_gpu_ != nullptr) ggml_backend_free(backend_gpu_);
    if (backend_cpu_ != nullptr) ggml_backend_free(backend_cpu_);
}

const char * runtime::backend_name() const {
    return ggml_backend_name(backend_gpu_ != nullptr ? backend_gpu_ : backend_cpu_);
}

void runtime::set_n_threads(int32_t n) {
    params_.n_threads = resolve_threads(n);
    ggml_backend_cpu_set_n_threads(backend_cpu_, params_.n_threads);
}

void runtime::set_input(const std::string & name, const float * data, int32_t n_dims, const int64_t * ne) {
    if (name.empty() || name.size() >= GGML_MAX_NAME) {
        fail(OMNIMODEL_ERR_INVALID_ARGUMENT, format("input name '%s' is empty or too long", name.c_str()));
    }
    if (n_dims < 1 || n_dims > GGML_MAX_DIMS || ne == nullptr) {
        fail(OMNIMODEL_ERR_INVALID_ARGUMENT, format("input '%s': n_dims must be 1..%d", name.c_str(), GGML_MAX_DIMS));
    }
    host_tensor h;
    h.n_dims = n_dims;
    size_t n = 1;
    for (int i = 0; i < n_dims; ++i) {
        if (ne[i] <= 0 || ne[i] > (int64_t{1} << 40)) {
            fail(OMNIMODEL_ERR_SHAPE, format("input '%s': dimension %d has invalid size %lld", name.c_str(), i,
                                             (long long) ne[i]));
        }
        h.ne[i] = ne[i];
        n *= static_cast<size_t>(ne[i]);
    }
    if (n > 0 && data == nullptr) {
        fail(OMNIMODEL_ERR_INVALID_ARGUMENT, format("input '%s': data is NULL", name.c_str()));
    }
    h.data.assign(data, data + n);
    for (float v : h.data) {
        if (!std::isfinite(v)) {
            fail(OMNIMODEL_ERR_INVALID_ARGUMENT, format("input '%s' contains a non-finite value", name.c_str()));
        }
    }
    inputs_[name] = std::move(h);
}

void runtime::set_capture(const std::vector<std::string> & names) {
    capture_.clear();
    capture_all_ = false;
    for (auto & n : names) {
        if (n == "*") {
            capture_all_ = true;
        } else {
            capture_.insert(n);
        }
    }
}

bool runtime::wants(const ggml_tensor * t) const {
    const char * name = ggml_get_name(t);
    if (name[0] == '\0') return false;
    if (capture_all_) {
        // ggml names the tensors it creates implicitly ("node_12", "x (reshaped)"): not ours.
        const std::string s(name);
        return s.find(' ') == std::string::npos && s.rfind("node_", 0) != 0 && s.rfind("leaf_", 0) != 0;
    }
    return capture_.count(name) > 0;
}

void runtime::keep(const std::string & name, const ggml_tensor * t) {
    host_tensor h;
    h.n_dims = ggml_n_dims(t);
    for (int i = 0; i < GGML_MAX_DIMS; ++i) h.ne[i] = t->ne[i];
    const size_t n = static_cast<size_t>(ggml_nelements(t));
    h.data.resize(n);
    if (t->type == GGML_TYPE_F32 && ggml_is_contiguous(t)) {
        ggml_backend_tensor_get(t, h.data.data(), 0, n * sizeof(float));
    } else if ((t->type == GGML_TYPE_F16 || t->type == GGML_TYPE_BF16) && ggml_is_contiguous(t)) {
        std::vector<uint8_t> raw(ggml_nbytes(t));
        ggml_backend_tensor_get(t, raw.data(), 0, raw.size());
        ggml_get_type_traits(t->type)->to_float(raw.data(), h.data.data(), static_cast<int64_t>(n));
    } else {
        return;  // views and quantized activations have no faithful float copy; skip them
    }
    if (results_.find(name) == results_.end()) result_order_.push_back(name);
    results_[name] = std::move(h);
}

bool runtime::eval_callback(ggml_tensor * t, bool ask, void * user_data) {
    auto * self = static_cast<runtime *>(user_data);
    if (ask) return self->wants(t);
    self->keep(ggml_get_name(t), t);
    return true;  // keep computing
}

void runtime::compute() {
    results_.clear();
    result_order_.clear();

    ggml_init_params ip{graph_meta_.size(), graph_meta_.data(), /*no_alloc=*/true};
    ggml_context *   ctx0 = ggml_init(ip);
    if (ctx0 == nullptr) fail(OMNIMODEL_ERR_OUT_OF_MEMORY, "cannot create the graph context");
    struct ctx_guard {
        ggml_context * c;
        ~ctx_guard() { ggml_free(c); }
    } guard{ctx0};

    ggml_cgraph * gf = ggml_new_graph_custom(ctx0, k_graph_size, false);
    graph_builder gb(*model_, ctx0, inputs_);
    build_(gb);
    if (gb.outputs().empty()) {
        fail(OMNIMODEL_ERR_INTERNAL, format("the %s graph declared no outputs", model_->architecture().c_str()));
    }
    for (auto & o : gb.outputs()) ggml_build_forward_expand(gf, o.second);

    ggml_backend_sched_reset(sched_);
    if (!ggml_backend_sched_alloc_graph(sched_, gf)) {
        fail(OMNIMODEL_ERR_BACKEND, "ggml could not allocate the compute graph (out of memory?)");
    }
    for (auto & in : gb.inputs()) {
        const host_tensor & h = inputs_.at(in.first);
        if (in.second->type == GGML_TYPE_I32) {
            // ids arrive as floats (exact below 2^24); graph_builder::input_ids checked them
            std::vector<int32_t> ids(h.data.size());
            for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int32_t>(h.data[i]);
            ggml_backend_tensor_set(in.second, ids.data(), 0, ids.size() * sizeof(int32_t));
        } else {
            ggml_backend_tensor_set(in.second, h.data.data(), 0, h.data.size() * sizeof(float));
        }
    }
    for (auto & c : gb.constants()) {
        ggml_backend_tensor_set(c.first, c.second.data(), 0, c.second.size());
    }

    const bool capturing = capture_all_ || !capture_.empty();
    ggml_backend_sched_set_eval_callback(sched_, capturing ? eval_callback : nullptr, capturing ? this : nullptr);
    const ggml_status st = ggml_backend_sched_graph_compute(sched_, gf);
    ggml_backend_sched_set_eval_callback(sched_, nullptr, nullptr);
    if (st != GGML_STATUS_SUCCESS) {
        fail(OMNIMODEL_ERR_BACKEND, format("graph compute failed (ggml status %d)", static_cast<int>(st)));
    }
    for (auto & o : gb.outputs()) keep(o.first, o.second);
}

const host_tensor & runtime::result(const std::string & name) const {
    auto it = results_.find(name);
    if (it == results_.end()) {
        fail(OMNIMODEL_ERR_NOT_FOUND,
             format("no result named '%s' (outputs are always kept; intermediates only when captured)", name.c_str()));
    }
    return it->second;
}

}  // namespace omni
