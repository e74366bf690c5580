// A loaded GGUF model: metadata, and every tensor placed in a backend buffer.
#pragma once

#include "ggml-backend.h"
#include "ggml.h"
#include "gguf.h"

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

namespace omni {

// Read-only view of a whole file: mmap where possible, else read into memory.
class mapped_file {
public:
    mapped_file(const std::string & path, bool use_mmap);
    ~mapped_file();
    mapped_file(const mapped_file &)             = delete;
    mapped_file & operator=(const mapped_file &) = delete;

    const uint8_t * data() const { return data_; }
    size_t          size() const { return size_; }
    bool            is_mapped() const { return mapped_; }

private:
    uint8_t *            data_   = nullptr;
    size_t               size_   = 0;
    bool                 mapped_ = false;
    std::vector<uint8_t> owned_;
};

struct model_load_options {
    bool           use_mmap = true;
    ggml_backend_t backend  = nullptr;  // where the weights live
    bool           repack   = true;     // allow repack_for (ggml's CPU repack buffer type)
};

class model {
public:
    model(const std::string & path, const model_load_options & opts);
    ~model();
    model(const model &)             = delete;
    model & operator=(const model &) = delete;

    const std::string & path() const { return path_; }
    const std::string & architecture() const { return arch_; }

    // Tensors in file order.
    const std::vector<ggml_tensor *> & tensors() const { return tensors_; }
    ggml_tensor * find(const std::string & name) const;  // nullptr when absent

    // Metadata. `find_key` returns -1 when absent; the typed getters throw a NOT_FOUND/FORMAT
    // error naming the key when it is absent or of a non-convertible type.
    int64_t     find_key(const std::string & key) const;
    int64_t     require_key(const std::string & key) const;  // like find_key, but NOT_FOUND when absent
    bool        has(const std::string & key) const { return find_key(key) >= 0; }
    int64_t     get_int(const std::string & key) const;
    double      get_float(const std::string & key) const;
    std::string get_string(const std::string & key) const;
    int64_t     get_int(const std::string & key, int64_t fallback) const;
    double      get_float(const std::string & key, double fallback) const;
    std::string get_string(const std::string & key, const std::string & fallback) const;
    // Every value finite (non-finite numbers are FORMAT errors, as for get_float); the array's element
    // type is checked before its data is read.
    std::vector<float> get_float_array(const std::string & key) const;
    std::vector<double> get_f64_array(const std::string & key) const;
    // An integer in [lo, hi] (FORMAT naming the key and the range otherwise): sizes and counts that feed
    // allocations go through this, so no product of them overflows.
    int64_t get_int_in(const std::string & key, int64_t lo, int64_t hi) const;
    int64_t get_int_in(const std::string & key, int64_t fallback, int64_t lo, int64_t hi) const;
    const gguf_context * gguf() const { return gguf_; }

    // Weight repacking (model_repack.cpp). On the CPU, ggml has GEMM kernels for some quantized types
    // (on x86: Q4_0, Q4_K, IQ4_NL, Q2_K) that read weights interleaved across rows; its "CPU_REPACK"
    // buffer type converts a tensor into that layout when it is uploaded. Types that ggml's tiled
    // K-quant kernel runs faster unrepacked (on x86: Q4_K, Q2_K) are left as they are. Called with the first graph
    // built (before it is allocated): the mapped matrices that graph uses only as matmul weights and
    // that ggml can repack move into one repack buffer, and their pages of the mapping are released
    // so the weights are not held twice. Later graphs are only checked: a repacked matrix must stay a
    // matmul weight. A no-op off the CPU, without mmap, or with repacking turned off.
    void    repack_for(const ggml_cgraph * gf);
    size_t  weight_bytes() const;
    size_t  repacked_bytes() const { return repacked_bytes_; }
    int64_t n_repacked() const { return static_cast<int64_t>(repacked_.size()); }

private:
    void validate_layout(const mapped_file & file) const;
    void place_tensors(const model_load_options & opts);

    std::string                               path_;
    std::string                               arch_;
    std::unique_ptr<mapped_file>              file_;  // kept alive while CPU buffers point into it
    gguf_context *                            gguf_    = nullptr;
    ggml_context *                            ctx_w_   = nullptr;  // tensor metadata only
    std::vector<ggml_backend_buffer_t>        buffers_;
    std::vector<ggml_tensor *>                tensors_;
    std::unordered_map<std::string, ggml_tensor *> by_name_;
    bool                                      repack_allowed_ = false;  // set by place_tensors
    bool                                      repack_decided_ = false;
    std::vector<const ggml_tensor *>          repacked_;
    size_t                                    repacked_bytes_ = 0;
};

}  // namespace omni
