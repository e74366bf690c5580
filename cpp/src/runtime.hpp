// The object behind the opaque omnimodel_context: a model, its backends and scheduler, the host
// copies of inputs and of the results of the last compute.
#pragma once

#include "graph.hpp"
#include "model.hpp"
#include "omnimodel.h"

#include "ggml-backend.h"

#include <array>
#include <chrono>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

namespace omni {

// One node's time in a profiled compute (runtime::set_profile): the graph runs node by node, each
// node timed from the end of the previous one, so fixed per-node costs (a thread-pool wake-up and a
// barrier, a few microseconds) are included and fusions the CPU backend would make are not.
struct profile_node {
    std::string            name;       // the tensor's name ("" when ggml named it implicitly)
    std::string            op;         // ggml_op_desc: MUL_MAT, FLASH_ATTN_EXT, CPY, GELU_ERF, ...
    int32_t                type      = -1;
    int32_t                src_type[3] = {-1, -1, -1};
    bool                   src0_is_weight = false;  // src0 (through views) lives in a weights buffer
    std::array<int64_t, 4> ne{1, 1, 1, 1};
    std::array<int64_t, 4> src_ne[3] = {{1, 1, 1, 1}, {1, 1, 1, 1}, {1, 1, 1, 1}};
    double                 seconds     = 0.0;
    double                 cpu_seconds = 0.0;  // CPU time of the whole process (all threads) meanwhile
};

// The graph built for the current input names and shapes, kept with the scheduler's allocation so
// that a later compute with inputs of the same shapes only sets them (llama.cpp's graph reuse).
// Graphs may depend on input shapes, never on input values: token ids are re-checked on reuse.
struct graph_cache {
    std::vector<std::pair<std::string, std::array<int64_t, 4>>> key;  // inputs by name, with shapes
    // Tensor and graph metadata for up to the runtime's graph size; left uninitialised, so only the part a
    // graph uses is ever touched (resident).
    std::unique_ptr<uint8_t[]>                                  meta;
    size_t                                                      meta_size = 0;
    ggml_context *                                              ctx = nullptr;
    ggml_cgraph *                                               gf  = nullptr;
    std::vector<std::pair<std::string, ggml_tensor *>>          outputs, inputs;
    std::vector<int64_t>                                        id_limits;  // per input; -1: floats
    std::vector<std::pair<ggml_tensor *, std::vector<uint8_t>>> constants;

    bool matches(const std::map<std::string, host_tensor> & host) const;
    void clear();
    ~graph_cache() { clear(); }
};

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
    // An input set so far (nullptr when none has that name): what the next compute will read.
    const host_tensor * input(const std::string & name) const {
        auto it = inputs_.find(name);
        return it == inputs_.end() ? nullptr : &it->second;
    }
    void set_capture(const std::vector<std::string> & names);
    void compute();
    // Profile the next computes node by node (profile_nodes); off by default: it costs a few
    // microseconds per node and disables the CPU backend's op fusion.
    void set_profile(bool on) { profile_ = on; }
    const std::vector<profile_node> & profile_nodes() const { return profile_nodes_; }
    int64_t graph_builds() const { return graph_builds_; }
    int64_t graph_reuses() const { return graph_reuses_; }
    size_t  compute_buffer_bytes() const;

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
    void        build_graph();
    void        set_graph_inputs();
    void        record_profile(const ggml_tensor * t, double seconds, double cpu_seconds);
    bool        wants(const ggml_tensor * t) const;
    void        keep(const std::string & name, const ggml_tensor * t);

    omnimodel_params                   params_;
    ggml_backend_t                     backend_gpu_ = nullptr;
    ggml_backend_t                     backend_cpu_ = nullptr;
    ggml_backend_sched_t               sched_       = nullptr;
    size_t                             graph_size_  = 0;  // graph capacity (runtime.cpp graph_size_for)
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
    graph_cache                        graph_;
    int64_t                            graph_builds_ = 0;
    int64_t                            graph_reuses_ = 0;
    bool                               profile_      = false;
    std::vector<profile_node>          profile_nodes_;
    std::chrono::steady_clock::time_point profile_mark_{};
    double                             profile_cpu_mark_ = 0.0;
};

}  // namespace omni
