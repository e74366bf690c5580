// Load-time validation of a parsed GGUF (check.hpp): what gguf's own parser accepts but the runtime
// must not pass on -- tensor types no CPU kernel computes with, and text that is not UTF-8.
#include "check.hpp"
#include "hbvla.hpp"

#include "ggml-cpu.h"

#include <cstring>

namespace omni {

bool is_utf8(const char * s, size_t n) {
    const auto * p = reinterpret_cast<const unsigned char *>(s);
    for (size_t i = 0; i < n;) {
        const unsigned char b = p[i];
        const int len = b < 0x80 ? 1 : (b >> 5) == 0x6 ? 2 : (b >> 4) == 0xE ? 3 : (b >> 3) == 0x1E ? 4 : 0;
        if (len == 0 || i + static_cast<size_t>(len) > n) return false;
        uint32_t c = len == 1 ? b : len == 2 ? (b & 0x1Fu) : len == 3 ? (b & 0x0Fu) : (b & 0x07u);
        for (int k = 1; k < len; ++k) {
            if ((p[i + k] & 0xC0) != 0x80) return false;
            c = (c << 6) | (p[i + k] & 0x3Fu);
        }
        static const uint32_t min_for_len[5] = {0, 0, 0x80, 0x800, 0x10000};
        if (c < min_for_len[len] || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF)) return false;
        i += static_cast<size_t>(len);
    }
    return true;
}

int64_t checked_mul(int64_t a, int64_t b, int64_t limit, const char * what) {
    int64_t r = 0;
    if (a < 0 || b < 0 || __builtin_mul_overflow(a, b, &r) || r > limit) {
        fail(OMNIMODEL_ERR_FORMAT, format("%s (%lld x %lld) is out of range (at most %lld)", what, (long long) a,
                                          (long long) b, (long long) limit));
    }
    return r;
}

bool is_weight_type(ggml_type t) {
    if (t == GGML_TYPE_F32 || t == GGML_TYPE_F16 || t == GGML_TYPE_BF16) return true;
    if (t < 0 || t >= GGML_TYPE_COUNT || !ggml_is_quantized(t)) return false;  // I8..I64, F64: no weight of ours
    const ggml_type_traits *     tr  = ggml_get_type_traits(t);
    const ggml_type_traits_cpu * cpu = ggml_get_type_traits_cpu(t);
    if (tr == nullptr || cpu == nullptr || tr->blck_size == 0 || tr->to_float == nullptr || cpu->vec_dot == nullptr) {
        return false;
    }
    // the matmul quantizes activations to vec_dot_type on the fly
    const ggml_type_traits_cpu * act = ggml_get_type_traits_cpu(cpu->vec_dot_type);
    return cpu->vec_dot_type == GGML_TYPE_F32 || (act != nullptr && act->from_float != nullptr);
}

namespace {

std::string shown(const char * s, size_t n) {
    // a message must itself be printable text: escape what is not ASCII
    std::string out;
    for (size_t i = 0; i < n && i < 60; ++i) {
        const unsigned char c = static_cast<unsigned char>(s[i]);
        if (c >= 0x20 && c < 0x7F) {
            out += static_cast<char>(c);
        } else {
            out += format("\\x%02x", c);
        }
    }
    return n > 60 ? out + "..." : out;
}

}  // namespace

void check_model_file(const gguf_context * g, const ggml_context * tensors, const std::string & path) {
    const int64_t n_kv = gguf_get_n_kv(g);
    for (int64_t i = 0; i < n_kv; ++i) {
        const char * key = gguf_get_key(g, i);
        if (!is_utf8(key, std::strlen(key))) {
            fail(OMNIMODEL_ERR_FORMAT, format("'%s': metadata key #%lld ('%s') is not valid UTF-8", path.c_str(),
                                              (long long) i, shown(key, std::strlen(key)).c_str()));
        }
        // Scalar strings reach Python (meta_str) and messages; string arrays (vocabularies) are checked
        // by whoever reads them, the tokenizer.
        if (gguf_get_kv_type(g, i) == GGUF_TYPE_STRING) {
            const char * v = gguf_get_val_str(g, i);
            if (!is_utf8(v, std::strlen(v))) {
                fail(OMNIMODEL_ERR_FORMAT, format("'%s': metadata '%s' is not valid UTF-8 ('%s')", path.c_str(), key,
                                                  shown(v, std::strlen(v)).c_str()));
            }
        }
    }
    for (ggml_tensor * t = ggml_get_first_tensor(tensors); t != nullptr; t = ggml_get_next_tensor(tensors, t)) {
        const char * name = ggml_get_name(t);
        const size_t len  = std::strlen(name);
        if (len == 0 || !is_utf8(name, len)) {
            fail(OMNIMODEL_ERR_FORMAT, format("'%s': tensor name '%s' is empty or not valid UTF-8", path.c_str(),
                                              shown(name, len).c_str()));
        }
        const bool int_table = (t->type == GGML_TYPE_I16 || t->type == GGML_TYPE_I32) && is_hbvla_integer_table(name);
        if (!is_weight_type(t->type) && !int_table) {
            fail(OMNIMODEL_ERR_UNSUPPORTED,
                 format("'%s': tensor '%s' has type %s, which the runtime cannot compute with (weights are F32, F16, "
                        "BF16 or a quantized type with CPU kernels)",
                        path.c_str(), name, ggml_type_name(t->type)));
        }
    }
}

}  // namespace omni
