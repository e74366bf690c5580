#include "model.hpp"

#include "check.hpp"
#include "error.hpp"
#include "ggml-cpu.h"

#include <cerrno>
#include <cmath>
#include <climits>
#include <cstdio>
#include <cstring>
#include <fstream>

#if defined(__unix__) || defined(__APPLE__)
#    include <fcntl.h>
#    include <sys/mman.h>
#    include <sys/stat.h>
#    include <unistd.h>
#    define OMNI_HAVE_MMAP 1
#endif

namespace omni {

// ---------------------------------------------------------------------------------------------
// mapped_file

mapped_file::mapped_file(const std::string & path, bool use_mmap) {
#ifdef OMNI_HAVE_MMAP
    if (use_mmap) {
        const int fd = ::open(path.c_str(), O_RDONLY);
        if (fd < 0) {
            fail(OMNIMODEL_ERR_IO, format("cannot open '%s': %s", path.c_str(), std::strerror(errno)));
        }
        struct stat st {};
        if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
            ::close(fd);
            fail(OMNIMODEL_ERR_IO, format("'%s' is not a regular file", path.c_str()));
        }
        size_ = static_cast<size_t>(st.st_size);
        if (size_ > 0) {
            void * p = ::mmap(nullptr, size_, PROT_READ, MAP_SHARED, fd, 0);
            if (p != MAP_FAILED) {
                data_   = static_cast<uint8_t *>(p);
                mapped_ = true;
            }
        }
        ::close(fd);
        if (mapped_ || size_ == 0) {
            return;
        }
        // mmap can fail on exotic filesystems; fall through to a plain read.
    }
#else
    (void) use_mmap;
#endif
    std::ifstream in(path, std::ios::binary | std::ios::ate);
    if (!in) {
        fail(OMNIMODEL_ERR_IO, format("cannot open '%s': %s", path.c_str(), std::strerror(errno)));
    }
    size_ = static_cast<size_t>(in.tellg());
    owned_.resize(size_);
    in.seekg(0);
    if (size_ > 0 && !in.read(reinterpret_cast<char *>(owned_.data()), static_cast<std::streamsize>(size_))) {
        fail(OMNIMODEL_ERR_IO, format("cannot read '%s'", path.c_str()));
    }
    data_ = owned_.data();
}

mapped_file::~mapped_file() {
#ifdef OMNI_HAVE_MMAP
    if (mapped_) {
        ::munmap(data_, size_);
    }
#endif
}

// ---------------------------------------------------------------------------------------------
// model

model::model(const std::string & path, const model_load_options & opts) : path_(path) {
    file_ = std::make_unique<mapped_file>(path, opts.use_mmap);

    // Check the magic ourselves so the most common mistake (wrong file) gets a plain answer.
    if (file_->size() < 4 || std::memcmp(file_->data(), "GGUF", 4) != 0) {
        char shown[5] = {0, 0, 0, 0, 0};
        for (size_t i = 0; i < 4 && i < file_->size(); ++i) {
            const char c = static_cast<char>(file_->data()[i]);
            shown[i]     = (c >= 32 && c < 127) ? c : '?';
        }
        fail(OMNIMODEL_ERR_FORMAT,
             format("'%s' is not a GGUF file (bad magic '%s', expected 'GGUF')", path.c_str(), shown));
    }

    log_clear_recent();
    gguf_init_params gp{};
    gp.no_alloc = true;
    gp.ctx      = &ctx_w_;
    gguf_       = gguf_init_from_buffer(file_->data(), file_->size(), gp);
    if (gguf_ == nullptr) {
        std::string why = log_recent_errors();
        fail(OMNIMODEL_ERR_FORMAT, format("'%s' is not a valid GGUF file%s%s", path.c_str(),
                                          why.empty() ? "" : ": ", why.c_str()));
    }

    validate_layout(*file_);
    check_model_file(gguf_, ctx_w_, path_);
    arch_ = get_string("general.architecture", "");

    for (ggml_tensor * t = ggml_get_first_tensor(ctx_w_); t != nullptr; t = ggml_get_next_tensor(ctx_w_, t)) {
        tensors_.push_back(t);
        by_name_[ggml_get_name(t)] = t;
    }
    place_tensors(opts);
}

model::~model() {
    for (ggml_backend_buffer_t b : buffers_) {
        ggml_backend_buffer_free(b);
    }
    if (ctx_w_ != nullptr) {
        ggml_free(ctx_w_);
    }
    if (gguf_ != nullptr) {
        gguf_free(gguf_);
    }
}

void model::validate_layout(const mapped_file & file) const {
    const size_t  data_offset = gguf_get_data_offset(gguf_);
    const int64_t n           = gguf_get_n_tensors(gguf_);
    if (n > 0 && data_offset > file.size()) {
        fail(OMNIMODEL_ERR_FORMAT, format("'%s' is truncated: the data section starts at byte %zu but the file has %zu bytes",
                                          path_.c_str(), data_offset, file.size()));
    }
    for (int64_t i = 0; i < n; ++i) {
        const char *  name   = gguf_get_tensor_name(gguf_, i);
        const size_t  offset = gguf_get_tensor_offset(gguf_, i);
        const size_t  nbytes = gguf_get_tensor_size(gguf_, i);
        const size_t  avail  = file.size() - data_offset;
        if (offset > avail || nbytes > avail - offset) {
            fail(OMNIMODEL_ERR_FORMAT,
                 format("'%s' is truncated or corrupt: data of tensor '%s' runs past the end of the file "
                        "(needs bytes %zu..%zu of the data section, which has %zu)",
                        path_.c_str(), name, offset, offset + nbytes, avail));
        }
    }
}

void model::place_tensors(const model_load_options & opts) {
    if (tensors_.empty()) {
        return;
    }
    const uint8_t * data_base = file_->data() + gguf_get_data_offset(gguf_);
    const bool      backend_is_cpu = opts.backend == nullptr || ggml_backend_is_cpu(opts.backend);

    // On the CPU the weights can stay in the page cache: point the tensors into the mapping.
    // ggml requires 32-byte aligned tensor data, which GGUF's default alignment guarantees.
    if (backend_is_cpu && file_->is_mapped() && reinterpret_cast<uintptr_t>(data_base) % 32 == 0 &&
        gguf_get_alignment(gguf_) % 32 == 0) {
        const size_t data_size = file_->size() - gguf_get_data_offset(gguf_);
        ggml_backend_buffer_t buf =
            ggml_backend_cpu_buffer_from_ptr(const_cast<uint8_t *>(data_base), data_size);
        if (buf == nullptr) {
            fail(OMNIMODEL_ERR_BACKEND, "cannot wrap the mapped file in a CPU buffer");
        }
        ggml_backend_buffer_set_usage(buf, GGML_BACKEND_BUFFER_USAGE_WEIGHTS);
        buffers_.push_back(buf);
        for (int64_t i = 0; i < gguf_get_n_tensors(gguf_); ++i) {
            ggml_tensor * t = find(gguf_get_tensor_name(gguf_, i));
            void * addr = const_cast<uint8_t *>(data_base) + gguf_get_tensor_offset(gguf_, i);
            if (ggml_backend_tensor_alloc(buf, t, addr) != GGML_STATUS_SUCCESS) {
                fail(OMNIMODEL_ERR_BACKEND, format("cannot place tensor '%s' in the mapped buffer", ggml_get_name(t)));
            }
        }
        repack_allowed_ = opts.repack;
        return;
    }

    ggml_backend_buffer_type_t buft = backend_is_cpu ? ggml_backend_cpu_buffer_type()
                                                     : ggml_backend_get_default_buffer_type(opts.backend);
    ggml_backend_buffer_t buf = ggml_backend_alloc_ctx_tensors_from_buft(ctx_w_, buft);
    if (buf == nullptr) {
        fail(OMNIMODEL_ERR_OUT_OF_MEMORY, format("cannot allocate %s for the weights of '%s'",
                                                 ggml_backend_buft_name(buft), path_.c_str()));
    }
    ggml_backend_buffer_set_usage(buf, GGML_BACKEND_BUFFER_USAGE_WEIGHTS);
    buffers_.push_back(buf);
    for (int64_t i = 0; i < gguf_get_n_tensors(gguf_); ++i) {
        ggml_tensor * t = find(gguf_get_tensor_name(gguf_, i));
        ggml_backend_tensor_set(t, data_base + gguf_get_tensor_offset(gguf_, i), 0, ggml_nbytes(t));
    }
    // The bytes now live in the backend buffer; the file copy is no longer needed.
    file_.reset();
}

ggml_tensor * model::find(const std::string & name) const {
    auto it = by_name_.find(name);
    return it == by_name_.end() ? nullptr : it->second;
}

int64_t model::find_key(const std::string & key) const { return gguf_find_key(gguf_, key.c_str()); }

int64_t model::require_key(const std::string & key) const {
    const int64_t id = find_key(key);
    if (id < 0) {
        fail(OMNIMODEL_ERR_NOT_FOUND, format("metadata key '%s' is missing from '%s'", key.c_str(), path_.c_str()));
    }
    return id;
}

namespace {

bool kv_as_int(const gguf_context * g, int64_t id, int64_t & out) {
    switch (gguf_get_kv_type(g, id)) {
        case GGUF_TYPE_UINT8:  out = gguf_get_val_u8(g, id); return true;
        case GGUF_TYPE_INT8:   out = gguf_get_val_i8(g, id); return true;
        case GGUF_TYPE_UINT16: out = gguf_get_val_u16(g, id); return true;
        case GGUF_TYPE_INT16:  out = gguf_get_val_i16(g, id); return true;
        case GGUF_TYPE_UINT32: out = gguf_get_val_u32(g, id); return true;
        case GGUF_TYPE_INT32:  out = gguf_get_val_i32(g, id); return true;
        case GGUF_TYPE_UINT64: {
            const uint64_t v = gguf_get_val_u64(g, id);
            if (v > static_cast<uint64_t>(INT64_MAX)) return false;  // would wrap negative
            out = static_cast<int64_t>(v);
            return true;
        }
        case GGUF_TYPE_INT64:  out = gguf_get_val_i64(g, id); return true;
        case GGUF_TYPE_BOOL:   out = gguf_get_val_bool(g, id) ? 1 : 0; return true;
        default: return false;
    }
}

bool kv_as_float(const gguf_context * g, int64_t id, double & out) {
    switch (gguf_get_kv_type(g, id)) {
        case GGUF_TYPE_FLOAT32: out = gguf_get_val_f32(g, id); return true;
        case GGUF_TYPE_FLOAT64: out = gguf_get_val_f64(g, id); return true;
        default: {
            int64_t i = 0;
            if (kv_as_int(g, id, i)) {
                out = static_cast<double>(i);
                return true;
            }
            return false;
        }
    }
}

}  // namespace

int64_t model::get_int(const std::string & key) const {
    const int64_t id = require_key(key);
    int64_t v = 0;
    if (!kv_as_int(gguf_, id, v)) {
        fail(OMNIMODEL_ERR_FORMAT, format("metadata key '%s' is a %s, expected an integer", key.c_str(),
                                          gguf_type_name(gguf_get_kv_type(gguf_, id))));
    }
    return v;
}

double model::get_float(const std::string & key) const {
    const int64_t id = require_key(key);
    double v = 0;
    if (!kv_as_float(gguf_, id, v)) {
        fail(OMNIMODEL_ERR_FORMAT, format("metadata key '%s' is a %s, expected a number", key.c_str(),
                                          gguf_type_name(gguf_get_kv_type(gguf_, id))));
    }
    if (!std::isfinite(v)) {
        fail(OMNIMODEL_ERR_FORMAT, format("metadata key '%s' is %g in '%s'; it must be finite", key.c_str(), v, path_.c_str()));
    }
    return v;
}

int64_t model::get_int_in(const std::string & key, int64_t lo, int64_t hi) const {
    const int64_t v = get_int(key);
    if (v < lo || v > hi) {
        fail(OMNIMODEL_ERR_FORMAT, format("metadata key '%s' is %lld in '%s'; it must be in [%lld, %lld]", key.c_str(),
                                          (long long) v, path_.c_str(), (long long) lo, (long long) hi));
    }
    return v;
}

int64_t model::get_int_in(const std::string & key, int64_t fallback, int64_t lo, int64_t hi) const {
    return has(key) ? get_int_in(key, lo, hi) : fallback;
}

std::string model::get_string(const std::string & key) const {
    const int64_t id = require_key(key);
    if (gguf_get_kv_type(gguf_, id) != GGUF_TYPE_STRING) {
        fail(OMNIMODEL_ERR_FORMAT, format("metadata key '%s' is a %s, expected a string", key.c_str(),
                                          gguf_type_name(gguf_get_kv_type(gguf_, id))));
    }
    return gguf_get_val_str(gguf_, id);
}

int64_t model::get_int(const std::string & key, int64_t fallback) const {
    return has(key) ? get_int(key) : fallback;
}

double model::get_float(const std::string & key, double fallback) const {
    return has(key) ? get_float(key) : fallback;
}

std::string model::get_string(const std::string & key, const std::string & fallback) const {
    return has(key) ? get_string(key) : fallback;
}

std::vector<double> model::get_f64_array(const std::string & key) const {
    const int64_t id = require_key(key);
    if (gguf_get_kv_type(gguf_, id) != GGUF_TYPE_ARRAY) {
        fail(OMNIMODEL_ERR_FORMAT, format("metadata key '%s' is a %s, expected an array of numbers", key.c_str(),
                                          gguf_type_name(gguf_get_kv_type(gguf_, id))));
    }
    // the element type first: gguf_get_arr_data aborts on a string array
    const gguf_type et = gguf_get_arr_type(gguf_, id);
    if (et != GGUF_TYPE_FLOAT32 && et != GGUF_TYPE_FLOAT64 && et != GGUF_TYPE_INT32) {
        fail(OMNIMODEL_ERR_FORMAT, format("metadata key '%s' is an array of %s, expected numbers", key.c_str(),
                                          gguf_type_name(et)));
    }
    const size_t n = gguf_get_arr_n(gguf_, id);
    std::vector<double> out(n);
    if (n == 0) return out;
    const void * data = gguf_get_arr_data(gguf_, id);
    for (size_t i = 0; i < n; ++i) {
        double v = 0;
        switch (et) {
            case GGUF_TYPE_FLOAT32: { float f; std::memcpy(&f, static_cast<const char *>(data) + i * sizeof f, sizeof f); v = f; break; }
            case GGUF_TYPE_FLOAT64: std::memcpy(&v, static_cast<const char *>(data) + i * sizeof v, sizeof v); break;
            default: { int32_t k; std::memcpy(&k, static_cast<const char *>(data) + i * sizeof k, sizeof k); v = k; break; }
        }
        if (!std::isfinite(v)) {
            fail(OMNIMODEL_ERR_FORMAT, format("metadata '%s'[%zu] is %g in '%s'; it must be finite", key.c_str(), i, v,
                                              path_.c_str()));
        }
        out[i] = v;
    }
    return out;
}

std::vector<float> model::get_float_array(const std::string & key) const {
    const std::vector<double> v = get_f64_array(key);
    std::vector<float>        out(v.size());
    for (size_t i = 0; i < v.size(); ++i) {
        out[i] = static_cast<float>(v[i]);
        if (!std::isfinite(out[i])) {
            fail(OMNIMODEL_ERR_FORMAT, format("metadata '%s'[%zu] = %g does not fit a float32", key.c_str(), i, v[i]));
        }
    }
    return out;
}

}  // namespace omni
