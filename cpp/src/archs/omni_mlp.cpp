// omni-mlp: a stack of dense layers, each `linear -> optional norm -> activation`.
//
// It is the smallest architecture that exercises everything the generated models rely on (weight
// types in matmuls, broadcast bias, layer/RMS norm, named intermediates), so the runtime can be
// proven against numpy before any VLA is involved. It also fits small heads such as a proprio
// projector.
//
// Metadata (all under "omni-mlp."):
//   block_count   number of layers
//   norm          "layer" | "rms"            (used by layers that have layers.{i}.norm.weight)
//   norm_eps      float
//   activation    none | relu | silu | gelu | gelu_tanh | gelu_erf_fast, applied after every layer but the last
//   gemm          ggml | omni: the matmul kernel for BF16 weights (optional; default ggml)
// Tensors, following PyTorch state_dict names:
//   layers.{i}.weight [out, in], layers.{i}.bias [out], layers.{i}.norm.weight/bias [out]
//   (a layer may store its weight as HBVLA instead: layers.{i}.hb.* -- see hbvla.hpp)
// Input "x": [tokens, in] (ggml ne = {in, tokens}). Output "out".
#include "../graph.hpp"

#include "archs.hpp"
#include "../error.hpp"
#include "../hbvla.hpp"

namespace omni {

void build_omni_mlp(graph_builder & gb) {
    const model &     m        = gb.m;
    const int64_t     n_layer  = m.get_int("omni-mlp.block_count");
    const float       eps      = static_cast<float>(m.get_float("omni-mlp.norm_eps", 1e-5));
    const norm_kind   norm     = parse_norm_kind(m.get_string("omni-mlp.norm", "layer"));
    const act_kind    act      = parse_act_kind(m.get_string("omni-mlp.activation", "none"));
    if (n_layer <= 0) {
        fail(OMNIMODEL_ERR_FORMAT, format("omni-mlp.block_count must be positive, got %lld", (long long) n_layer));
    }

    gb.gemm           = parse_gemm_kind(m.get_string("omni-mlp.gemm", "ggml"));

    ggml_tensor * cur = gb.input("x");
    for (int64_t il = 0; il < n_layer; ++il) {
        const std::string p = "layers." + std::to_string(il) + ".";

        cur = build_linear_any(gb, cur, p + "weight", gb.weight_opt(p + "bias"));
        gb.name(cur, p + "linear");

        ggml_tensor * nw = gb.weight_opt(p + "norm.weight");
        ggml_tensor * nb = gb.weight_opt(p + "norm.bias");
        if (nw != nullptr || nb != nullptr) {
            cur = gb.build_norm(cur, nw, nb, norm, eps);
            gb.name(cur, p + "norm");
        }

        if (il + 1 < n_layer && act != act_kind::none) {
            cur = gb.build_act(cur, act);
            gb.name(cur, p + "act");
        }
    }
    gb.output(cur, "out");
}

}  // namespace omni
