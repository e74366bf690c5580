// Zero-padding the rows of an activation for a row-padded quantized weight (graph_builder::build_linear).
//
// ggml_pad computes every output element through a generic 4-D index test; at real widths (SigLIP's
// 1152 and 4304, the Llama's 576, padded to 256-blocks) that cost a tenth of a quantized model's time
// on the CPU. This op copies each row and zero-fills its tail: the same values, memcpy speed.
#pragma once

#include "ggml.h"

#include <cstdint>

namespace omni {

// F32 x {K, ...} with contiguous rows -> {K + pad, ...}, zeros in the new columns. On the CPU backend.
ggml_tensor * pad_rows(ggml_context * ctx, ggml_tensor * x, int64_t pad);

}  // namespace omni
