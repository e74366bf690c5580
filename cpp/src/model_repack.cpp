// Weight repacking for ggml's CPU GEMM kernels (model::repack_for; see model.hpp).
//
// Which matrices: those the graph uses only as src0 of MUL_MAT with F32 activations, 2-D, that
// ggml's repack buffer type accepts for that very op (it checks the type, this CPU's features and
// the row count), and that ggml's tiled K-quant kernel would not run faster as they are. Token embeddings (GET_ROWS), reshaped conv kernels (views) and anything else keep
// their mapped bytes: the repacked layout is only readable by the repack GEMM.
#include "model.hpp"

#include "error.hpp"
#include "ggml-cpu.h"

#include <cstring>
#include <unordered_map>
#include <unordered_set>

#if defined(__unix__) || defined(__APPLE__)
#    include <sys/mman.h>
#    include <unistd.h>
#    define OMNI_HAVE_MADVISE 1
#endif

namespace omni {

namespace {

ggml_backend_buffer_type_t cpu_repack_buffer_type() {
    ggml_backend_dev_t dev = ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_CPU);
    if (dev == nullptr) return nullptr;
    ggml_backend_reg_t reg       = ggml_backend_dev_backend_reg(dev);
    auto               get_extra = reinterpret_cast<ggml_backend_dev_get_extra_bufts_t>(
        ggml_backend_reg_get_proc_address(reg, "ggml_backend_dev_get_extra_bufts"));
    if (get_extra == nullptr) return nullptr;
    for (ggml_backend_buffer_type_t * b = get_extra(dev); b != nullptr && *b != nullptr; ++b) {
        if (std::strcmp(ggml_backend_buft_name(*b), "CPU_REPACK") == 0) return *b;
    }
    return nullptr;
}

// Give the pages of [p, p + n) that hold nothing else back to the page cache: after repacking, the
// process only reads the copy, and the mapping's pages would otherwise count in its RSS as well.
void release_pages(const void * p, size_t n) {
#ifdef OMNI_HAVE_MADVISE
    const uintptr_t page  = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
    const uintptr_t begin = (reinterpret_cast<uintptr_t>(p) + page - 1) / page * page;
    const uintptr_t end   = (reinterpret_cast<uintptr_t>(p) + n) / page * page;
    if (end > begin) madvise(reinterpret_cast<void *>(begin), end - begin, MADV_DONTNEED);
#else
    (void) p;
    (void) n;
#endif
}

// ggml's tiled K-quant matmul (ggml-cpu/tiled, compiled in on x86 with AVX/AVX2/AVX512-VNNI) takes
// these types straight from their file layout, but not once repacked. On a Zen 4 core it runs Q4_K
// at 235 GFLOP/s per CPU-second against 143 for the repacked 8x8 kernel, and Q2_K at 205 against 85
// (benchmarks/matmul_kernels.py, docs/benchmarks.md): leave them to it. Q4_0 and IQ4_NL have no tiled
// kernel; repacked they run 136-138 against 89-92. (With the `gemm = omni` knob on an AVX512-VNNI CPU the
// 4-bit types are read by omnimodel's GEMM, a custom op, so they are never candidates here at all.)
bool tiled_kernel_takes(ggml_type t) {
    if (!(ggml_cpu_has_avx2() || ggml_cpu_has_avx())) return false;
    switch (t) {
        case GGML_TYPE_Q2_K: case GGML_TYPE_Q3_K: case GGML_TYPE_Q4_K: case GGML_TYPE_Q5_K: case GGML_TYPE_Q6_K:
        case GGML_TYPE_IQ4_XS: case GGML_TYPE_IQ2_XXS: case GGML_TYPE_IQ2_XS: case GGML_TYPE_IQ2_S:
        case GGML_TYPE_IQ3_XXS: case GGML_TYPE_IQ3_S: case GGML_TYPE_IQ1_S: case GGML_TYPE_IQ1_M:
            return true;
        default:
            return false;
    }
}

}  // namespace

size_t model::weight_bytes() const {
    size_t n = 0;
    for (const ggml_tensor * t : tensors_) n += ggml_nbytes(t);
    return n;
}

void model::repack_for(const ggml_cgraph * gf) {
    std::unordered_set<const ggml_tensor *> weights(tensors_.begin(), tensors_.end());
    // For each weight the graph reads: is every read a MUL_MAT's src0 with F32 activations?
    std::unordered_map<ggml_tensor *, ggml_tensor *> matmul_use;  // weight -> one MUL_MAT reading it
    std::unordered_set<const ggml_tensor *>          other_use;
    for (int i = 0; i < ggml_graph_n_nodes(const_cast<ggml_cgraph *>(gf)); ++i) {
        ggml_tensor * node = ggml_graph_node(const_cast<ggml_cgraph *>(gf), i);
        if (node->view_src != nullptr && weights.count(node->view_src)) other_use.insert(node->view_src);
        for (int s = 0; s < GGML_MAX_SRC; ++s) {
            ggml_tensor * src = node->src[s];
            if (src == nullptr || !weights.count(src)) continue;
            if (node->op == GGML_OP_MUL_MAT && s == 0 && node->src[1]->type == GGML_TYPE_F32) {
                matmul_use.emplace(src, node);
            } else {
                other_use.insert(src);
            }
        }
    }

    if (repack_decided_) {
        for (const ggml_tensor * w : repacked_) {
            if (other_use.count(w)) {
                fail(OMNIMODEL_ERR_INTERNAL,
                     format("'%s' was repacked for the CPU's matmul kernels, but this graph also reads it otherwise; "
                            "load the model with weight repacking off (omnimodel_params.repack_weights = false)",
                            ggml_get_name(w)));
            }
        }
        return;
    }
    repack_decided_ = true;
    if (!repack_allowed_) return;
    ggml_backend_buffer_type_t buft = cpu_repack_buffer_type();
    if (buft == nullptr) return;

    // Ask ggml, op by op, whether the repack kernels take this matrix: set the weight's buffer to a
    // dummy of the repack type for the question, as llama.cpp's loader does.
    ggml_backend_dev_t    dev   = ggml_backend_buft_get_device(buft);
    ggml_backend_buffer_t dummy = ggml_backend_buft_alloc_buffer(buft, 0);
    if (dummy == nullptr) return;
    std::vector<ggml_tensor *> chosen;
    for (ggml_tensor * w : tensors_) {  // file order: deterministic
        auto it = matmul_use.find(w);
        if (it == matmul_use.end() || other_use.count(w) || ggml_n_dims(w) != 2 || w->data == nullptr) continue;
        if (tiled_kernel_takes(w->type)) continue;
        ggml_backend_buffer_t saved = w->buffer;
        w->buffer                   = dummy;
        const bool ok               = ggml_backend_dev_supports_op(dev, it->second);
        w->buffer                   = saved;
        if (ok) chosen.push_back(w);
    }
    ggml_backend_buffer_free(dummy);
    if (chosen.empty()) return;

    const size_t align = ggml_backend_buft_get_alignment(buft);
    size_t       total = 0;
    for (ggml_tensor * w : chosen) total += GGML_PAD(ggml_backend_buft_get_alloc_size(buft, w), align);
    ggml_backend_buffer_t buf = ggml_backend_buft_alloc_buffer(buft, total);
    if (buf == nullptr) {
        fail(OMNIMODEL_ERR_OUT_OF_MEMORY, format("cannot allocate %zu bytes for repacked weights of '%s'", total,
                                                 path_.c_str()));
    }
    ggml_backend_buffer_set_usage(buf, GGML_BACKEND_BUFFER_USAGE_WEIGHTS);
    buffers_.push_back(buf);
    char * base   = static_cast<char *>(ggml_backend_buffer_get_base(buf));
    size_t offset = 0;
    for (ggml_tensor * w : chosen) {
        const void * mapped = w->data;
        w->buffer           = nullptr;
        w->data             = nullptr;
        w->extra            = nullptr;
        if (ggml_backend_tensor_alloc(buf, w, base + offset) != GGML_STATUS_SUCCESS) {
            fail(OMNIMODEL_ERR_BACKEND, format("cannot place '%s' in the repack buffer", ggml_get_name(w)));
        }
        ggml_backend_tensor_set(w, mapped, 0, ggml_nbytes(w));  // converts to the interleaved layout
        release_pages(mapped, ggml_nbytes(w));
        offset += GGML_PAD(ggml_backend_buft_get_alloc_size(buft, w), align);
        repacked_.push_back(w);
        repacked_bytes_ += ggml_nbytes(w);
    }
}

}  // namespace omni
