// HBVLA linear layers run natively from their binary storage (python/omnimodel/quant/hbvla/storage.py).
//
// A matrix stored as HBVLA has no "<base>.weight": its tensors are "<base>.hb.*" (a header, the column
// permutation, 1-3 Q1_0 sign planes over the Haar-domain row, fp16 means, and the salient columns'
// indices, planes and means). W x is never formed as a dense weight. The permutation and the one-level
// Haar transform move onto the activation (W x = U (H^T P^T x): a gather, then pair sums and
// differences), the planes are stock Q1_0 matmuls, the means an F32 matmul of segment sums; the few
// salient columns' residual (k short Q1_0 rows with row/column scales and means) is decoded in the
// graph into an F32 [out, k] matrix -- k x out values, not the weight -- and multiplied in F32.
//
// Only stock ggml ops are used (get_rows, concat, neg, pad, add/sub, transpose, mul_mat, sum_rows,
// cast), so the graph runs on any backend with Q1_0 matmuls. The small index tensors (header,
// permutation, salient indices) are read on the host while the graph is built.
#pragma once

#include "graph.hpp"

#include <string>

namespace omni {

// "<weight_name minus .weight>": the prefix of the HBVLA tensors of a weight.
std::string hbvla_base(const std::string & weight_name);

// Whether the model stores `weight_name` as an HBVLA matrix (it has "<base>.hb.hdr").
bool has_hbvla(const graph_builder & gb, const std::string & weight_name);

// An HBVLA integer table (header, column permutation, salient indices: I16/I32, read on the host at
// graph build and checked there, never an operand of a kernel), by its name.
bool is_hbvla_integer_table(const char * tensor_name);

// y = W x for the HBVLA matrix stored for `weight_name`; x {in, ...} -> y {out, ...}. Fails with
// OMNIMODEL_ERR_FORMAT naming the tensor when the stored pieces are inconsistent, and with
// OMNIMODEL_ERR_SHAPE when x's width is not the matrix's input width.
ggml_tensor * build_hbvla_linear(graph_builder & gb, ggml_tensor * x, const std::string & weight_name);

// The linear layer `weight_name` (+ bias b) as the file stores it: HBVLA when it has the HBVLA tensors,
// else graph_builder::build_linear on "<weight_name>".
ggml_tensor * build_linear_any(graph_builder & gb, ggml_tensor * x, const std::string & weight_name,
                               ggml_tensor * b = nullptr);

}  // namespace omni
