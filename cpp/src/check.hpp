// Validation that keeps ggml from ever seeing what it would abort on.
//
// ggml checks its inputs with GGML_ASSERT / GGML_ABORT, which end the process; the runtime promises
// returned errors instead (omnimodel.h). Three passes stand between a file or a caller and ggml:
//   - check_model_file: at load, every tensor's type is one the CPU can compute with, every name,
//     key and string value is UTF-8 (they reach Python and the tokenizer);
//   - check_graph: after a graph is built and before it is allocated, every node's operation is
//     one the CPU kernels implement for its source and result types (a weight's role is the
//     operation that consumes it: a matmul takes quantized types, a bias or norm weight only F32);
//   - check_outputs_finite: after compute, before OK is returned.
// Plus the overflow-safe size arithmetic that metadata-driven sizes go through.
#pragma once

#include "error.hpp"

#include "ggml.h"
#include "gguf.h"

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace omni {

class model;
struct host_tensor;

// Tensors and metadata of a freshly parsed file; FORMAT / UNSUPPORTED naming the tensor or key.
void check_model_file(const gguf_context * g, const ggml_context * tensors, const std::string & path);

// Can the CPU backend hold and compute with a weight of this type at all (matmul, lookup, copy)?
bool is_weight_type(ggml_type t);

// Every node of gf against what ggml's CPU kernels implement; UNSUPPORTED naming the weight (or the
// node) and the operation otherwise.
void check_graph(ggml_cgraph * gf, const model & m);

// BACKEND naming the output when a graph output holds NaN or inf (bad weights or statistics).
void check_outputs_finite(const std::vector<std::pair<std::string, ggml_tensor *>> & outputs,
                          const std::map<std::string, host_tensor> & results);

// Is s well-formed UTF-8 (no overlongs, no surrogates, <= U+10FFFF)?
bool is_utf8(const char * s, size_t n);
inline bool is_utf8(const std::string & s) { return is_utf8(s.data(), s.size()); }

// a * b, or FORMAT naming `what` when it overflows or exceeds `limit`.
int64_t checked_mul(int64_t a, int64_t b, int64_t limit, const char * what);

}  // namespace omni
