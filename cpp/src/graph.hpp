// The C++ API that architecture graphs are written against.
//
// An architecture is one function `void build_<arch>(graph_builder & gb)` that reads hyper-parameters
// from the model's metadata, takes weights and inputs from the builder, composes the shared blocks
// (build_linear, build_norm, build_act, ...) and names every intermediate it wants to be
// capturable. The builder validates shapes before ggml sees them, because ggml's own checks abort
// the process and robot code must get an error instead.
#pragma once

#include "model.hpp"

#include <array>
#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace omni {

struct host_tensor {
    std::vector<float>     data;
    int32_t                n_dims = 0;
    std::array<int64_t, 4> ne{1, 1, 1, 1};
};

enum class norm_kind { layer, rms };
// gelu_erf is ggml's GELU_ERF (libm erff per element); gelu_erf_fast the same function through our
// vectorised erf (fast_gelu.hpp: within 4e-7 absolute of float64, about 50x faster on the CPU).
enum class act_kind { none, relu, silu, gelu_erf, gelu_tanh, gelu_erf_fast };

// The matmul kernel for BF16, Q1_0, Q2_0, Q4_0, IQ4_NL, Q4_K and IQ4_XS weights (the skills' `gemm` knob):
// ggml's (llamafile's tinyBLAS; a scalar per-row dot product for Q1_0/Q2_0; tiled / repacked for the 4-bit
// types), or omnimodel's where the CPU has the instructions: gemm_bf16.hpp (AVX512-BF16), gemm_lowbit.hpp
// (AVX512-VNNI + VBMI). Other weight types always take ggml's.
enum class gemm_kind { ggml, omni };

norm_kind   parse_norm_kind(const std::string & s);  // "layer" | "rms"
gemm_kind   parse_gemm_kind(const std::string & s);  // "ggml" | "omni"
act_kind    parse_act_kind(const std::string & s);   // "none" | "relu" | "silu" | "gelu" (erf) | "gelu_tanh" | "gelu_erf_fast"
std::string shape_str(const ggml_tensor * t);
// SHAPE unless t is exactly the vector {n} (a bias, norm weight or scale that ggml broadcasts over rows).
void        require_vector(const ggml_tensor * t, int64_t n, const char * what);

class graph_builder {
public:
    graph_builder(const model & m, ggml_context * ctx0, const std::map<std::string, host_tensor> & inputs);

    const model &  m;
    ggml_context * ctx0;

    // A graph input shaped like the host data the caller provided (F32).
    ggml_tensor * input(const std::string & name);
    // An I32 graph input (token ids for ggml_get_rows) from host data the caller provided as floats:
    // every value must be an integer in [0, limit), else INVALID_ARGUMENT. Float is exact below 2^24.
    ggml_tensor * input_ids(const std::string & name, int64_t limit);
    // The caller's host data for `name`, or nullptr when it was not set (shape checks before ggml).
    // Only its shape and presence may shape the graph: the runtime reuses a built graph for inputs
    // of the same names and shapes (graph_cache), so values read here would go stale.
    const host_tensor * host_input(const std::string & name) const;

    // Constant graph inputs whose values the graph computes itself (positions, masks, statistics).
    ggml_tensor * const_i32(const std::string & name, const std::vector<int32_t> & values);
    ggml_tensor * const_f32(const std::string & name, const std::vector<float> & values,
                            std::initializer_list<int64_t> ne);
    // The F16 mask ggml_flash_attn_ext takes for causal self-attention over n tokens: {n, n}, 0 where
    // key <= query, -inf after. One per graph and size, shared by every layer.
    ggml_tensor * causal_mask_f16(int64_t n);

    // Weights. `weight` fails with NOT_FOUND naming the tensor; the shaped overload also checks ne.
    // A quantized matrix may be stored with its rows zero-padded to its type's block size (SigLIP's
    // 1152 under a 256-block type): ne[0] of a 2-D weight is accepted when it is the wanted width
    // rounded up to the block, and build_linear pads the activation to match.
    ggml_tensor * weight(const std::string & name) const;
    ggml_tensor * weight(const std::string & name, std::initializer_list<int64_t> ne) const;
    ggml_tensor * weight_opt(const std::string & name) const;

    // Name an intermediate (so it can be captured) and return it, for chaining.
    ggml_tensor * name(ggml_tensor * t, const std::string & name);
    // Mark a graph output; outputs are always readable after compute.
    void output(ggml_tensor * t, const std::string & name);

    // y = x W^T + b for a PyTorch-layout weight W [out, in] (ggml ne = {in, out}). A row-padded W
    // (see `weight`) gets x zero-padded to its width: the padding columns multiply zeros.
    ggml_tensor * build_linear(ggml_tensor * x, ggml_tensor * w, ggml_tensor * b = nullptr);
    // y = x W^T by the kernel `gemm` selects (ggml_mul_mat semantics; W may be a reshaped view).
    ggml_tensor * matmul(ggml_tensor * w, ggml_tensor * x);

    // The model's weights live in host memory, so the graph runs on the CPU backend and omnimodel's
    // CPU-only kernels (custom ops: fast GELU, GEMM, attention, row padding) apply.
    bool on_cpu() const;

    // Set per module by the generated code (gemm_scope) from the plan's `gemm` knob.
    gemm_kind gemm = gemm_kind::ggml;
    // Normalise over ne[0], then scale by w and shift by b (each optional).
    ggml_tensor * build_norm(ggml_tensor * x, ggml_tensor * w, ggml_tensor * b, norm_kind kind, float eps);
    ggml_tensor * build_act(ggml_tensor * x, act_kind kind);
    // ggml_concat after checking what it asserts (equal types, equal sizes outside dim): SHAPE otherwise.
    ggml_tensor * concat(ggml_tensor * a, ggml_tensor * b, int dim);

    const std::vector<std::pair<std::string, ggml_tensor *>> & outputs() const { return outputs_; }
    const std::vector<std::pair<std::string, ggml_tensor *>> & inputs() const { return inputs_; }
    // For input i: the id limit input_ids checked it against, -1 for a float input.
    const std::vector<int64_t> & input_id_limits() const { return id_limits_; }
    const std::vector<std::pair<ggml_tensor *, std::vector<uint8_t>>> & constants() const { return constants_; }

private:
    ggml_tensor * omni_gemm(ggml_tensor * w, ggml_tensor * x, ggml_tensor * b);  // nullptr: use ggml's

    const std::map<std::string, host_tensor> &         host_inputs_;
    std::vector<std::pair<std::string, ggml_tensor *>> outputs_;
    std::vector<std::pair<std::string, ggml_tensor *>> inputs_;
    std::vector<int64_t>                               id_limits_;
    std::map<int64_t, ggml_tensor *>                   causal_masks_;
    std::vector<std::pair<ggml_tensor *, std::vector<uint8_t>>> constants_;
};

// While alive, gb.gemm is `kind`; a generated module function opens one with its knob.
class gemm_scope {
public:
    gemm_scope(graph_builder & gb, gemm_kind kind) : gb_(gb), previous_(gb.gemm) { gb.gemm = kind; }
    ~gemm_scope() { gb_.gemm = previous_; }
    gemm_scope(const gemm_scope &)             = delete;
    gemm_scope & operator=(const gemm_scope &) = delete;

private:
    graph_builder & gb_;
    gemm_kind       previous_;
};

using build_fn = void (*)(graph_builder & gb);

// INVALID_ARGUMENT unless every value of `h` is an integer id in [0, limit) (input_ids' check, and the
// runtime's when it reuses a graph for new ids).
void check_ids(const std::string & name, const host_tensor & h, int64_t limit);

// Architectures known to this runtime, by general.architecture. Each entry remembers where its
// graph came from (architecture_source): "builtin:<name>" for the ones compiled into the core,
// "plugin:<path>" for one registered by omnimodel_load_plugin, "linked:<file>" for a generated source
// compiled into the library (the standalone project). Generated graphs call the two-argument form;
// the source is then whatever registration_source is active on this thread.
void                     register_architecture(const std::string & name, build_fn fn);
build_fn                 find_architecture(const std::string & name);  // nullptr when unknown
std::string              architecture_source(const std::string & name);  // "" when unknown
std::vector<std::string> architecture_names();

// While alive, architectures registered on this thread are recorded as coming from `source`. The
// plugin loader and the standalone project's registration unit wrap the generated entry point in
// one, because that entry point cannot know how it was linked.
class registration_source {
public:
    explicit registration_source(std::string source);
    ~registration_source();
    registration_source(const registration_source &)             = delete;
    registration_source & operator=(const registration_source &) = delete;

private:
    std::string previous_;
};

}  // namespace omni
