// The object behind the opaque omnimodel_context: a model, its backends and scheduler, the host
// copies of inputs and of the results of the last compute.
#pragma once

#include "graph.hpp"
#include "model.hpp"
#include "omnimodel.h"

#include "ggml-backend.h"

#include <chrono>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

namespace omni {

class runtime {
public:
    runtime(const std::string & path, const omnimodel_params & params);
    ~runtime();
    runtime(const runtime &)             = delete;
    runtime & operator=(const runtime &) = delete;

    const model & get_model() const { return *model_; }
    // Where the graph this context runs came from, as the registry said at load (see architecture_source).
    const std::string & graph_source() const { return graph_source_; }
    const char *  backend_name() const;

    void set_n_threads(int32_t n);
    void set_input(const std::string & name, const float * data, int32_t n_dims, const int64_t * ne);
    void clear_inputs() { inputs_.clear(); }
    void set_capture(const std::vector<std::string> & names);
    void compute();

    const std::vector<std::string> &           result_names() const { return result_order_; }
    // Seconds spent building/allocating the last graph and computing it, and, for each captured
    // result, the seconds from the start of compute until it was ready (a per-stage profile).
    double build_seconds() const { return build_s_; }
    double compute_seconds() const { return compute_s_; }
    double ready_seconds(const std::string & name) const;
    const host_tensor &                        result(const std::string & name) const;

private:
    void        release();  // frees scheduler, model, backends (destructor, and a throwing constructor)
    static bool eval_callback(ggml_tensor * t, bool ask, void * user_data);
    bool        wants(const ggml_tensor * t) const;
    void        keep(const std::string & name, const ggml_tensor * t);

    omnimodel_params                   params_;
    ggml_backend_t                     backend_gpu_ = nullptr;
    ggml_backend_t                     backend_cpu_ = nullptr;
    ggml_backend_sched_t               sched_       = nullptr;
    std::unique_ptr<model>             model_;
    build_fn                           build_ = nullptr;
    std::string                        graph_source_;
    std::map<std::string, host_tensor> inputs_;
    std::set<std::string>              capture_;
    bool                               capture_all_ = false;
    std::map<std::string, host_tensor> results_;
    std::vector<std::string>           result_order_;
    std::map<std::string, double>      ready_s_;
    double                             build_s_   = 0.0;
    double                             compute_s_ = 0.0;
    std::chrono::steady_clock::time_point compute_start_{};
    std::vector<uint8_t>               graph_meta_;
};

}  // namespace omni
