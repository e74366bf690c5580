// omnimodel._runtime: load a GGUF in the compiled runtime, run its graph on numpy inputs, read any
// captured intermediate, and reach ggml's own quantizers so tests can hold our encoders to them.
//
// The model API goes through the public C API on purpose: the parity harness then exercises
// exactly what robot code links against, status codes included.
#include "omnimodel.h"

#include "ggml-backend.h"
#include "ggml-cpu.h"
#include "ggml.h"

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <mutex>
#include <cctype>
#include <string>
#include <vector>

namespace py = pybind11;

namespace {

// Python-side exception carrying the C API status. Created once at import.
PyObject * g_error_type = nullptr;

// Messages quote file contents (names, paths); whatever bytes they hold, Python gets a str.
py::str text_of(const std::string & s) {
    PyObject * u = PyUnicode_DecodeUTF8(s.data(), static_cast<Py_ssize_t>(s.size()), "backslashreplace");
    if (u == nullptr) throw py::error_already_set();
    return py::reinterpret_steal<py::str>(u);
}

[[noreturn]] void raise_status(omnimodel_status st, const std::string & msg) {
    py::object exc = py::reinterpret_steal<py::object>(PyObject_CallFunctionObjArgs(g_error_type, text_of(msg).ptr(), nullptr));
    if (!exc) throw py::error_already_set();
    exc.attr("code")   = static_cast<int>(st);
    exc.attr("status") = omnimodel_status_string(st);
    PyErr_SetObject(g_error_type, exc.ptr());
    throw py::error_already_set();
}

void check(omnimodel_status st, const omnimodel_context * ctx) {
    if (st != OMNIMODEL_OK) raise_status(st, omnimodel_last_error(ctx));
}

omnimodel_backend parse_backend(const std::string & s) {
    if (s == "auto") return OMNIMODEL_BACKEND_AUTO;
    if (s == "cpu") return OMNIMODEL_BACKEND_CPU;
    if (s == "gpu" || s == "cuda") return OMNIMODEL_BACKEND_GPU;
    throw py::value_error("backend must be 'auto', 'cpu' or 'gpu', got '" + s + "'");
}

// numpy shape (row-major) -> ggml ne (ne[0] fastest) and back.
py::array_t<float> to_numpy(const std::vector<float> & data, int32_t n_dims, const int64_t * ne) {
    std::vector<py::ssize_t> shape;
    for (int i = std::max(n_dims, 1) - 1; i >= 0; --i) shape.push_back(static_cast<py::ssize_t>(ne[i]));
    py::array_t<float> out(shape);
    std::copy(data.begin(), data.end(), out.mutable_data());
    return out;
}

// The C API refuses NUL-terminated strings that would be cut short: a path with an embedded NUL
// must not load its prefix.
void no_nul(const std::string & text, const char * what) {
    if (text.find('\0') != std::string::npos) throw py::value_error(std::string(what) + " contains a NUL character");
}

// One context must never run two calls at once (omnimodel.h). Python threads sharing a Model take
// this lock around every C call; it is acquired with the GIL released, so a thread waiting for a
// long compute never blocks the interpreter, and the holder never needs the lock and the GIL in the
// other order. close() takes it too, so it waits for a running call instead of freeing under it.
class model_lock {
public:
    explicit model_lock(std::mutex & mu) : lock_(mu, std::defer_lock) {
        if (!lock_.try_lock()) {
            py::gil_scoped_release nogil;
            lock_.lock();
        }
    }

private:
    std::unique_lock<std::mutex> lock_;
};

class Model {
public:
    Model(const std::string & path, int n_threads, bool use_mmap, const std::string & backend, int gpu_device,
          bool verbose, bool repack, bool preprocess_only) {
        omnimodel_params p = omnimodel_default_params();
        p.preprocess_only  = preprocess_only;
        p.repack_weights   = repack;
        p.n_threads        = n_threads;
        p.use_mmap         = use_mmap;
        p.backend          = parse_backend(backend);
        p.gpu_device       = gpu_device;
        p.verbose          = verbose;
        no_nul(path, "path");
        omnimodel_status st;
        {
            py::gil_scoped_release nogil;
            st = omnimodel_load(path.c_str(), p, &ctx_);
        }
        check(st, nullptr);
    }
    ~Model() {
        // no other thread can hold a reference (and so the lock) while the object is destroyed
        omnimodel_free(ctx_);
        ctx_ = nullptr;
    }

    void close() {
        model_lock guard(mu_);
        omnimodel_free(ctx_);
        ctx_ = nullptr;
    }

    std::mutex & mutex() const { return mu_; }

    omnimodel_context * ctx() const {
        if (ctx_ == nullptr) throw py::value_error("the model is closed");
        return ctx_;
    }

    py::str architecture() const {
        model_lock guard(mu_);
        return text_of(omnimodel_architecture(ctx()));
    }
    py::str graph_source() const {
        model_lock guard(mu_);
        return text_of(omnimodel_graph_source(ctx()));
    }
    std::string backend_name() const {
        model_lock guard(mu_);
        return omnimodel_backend_name(ctx());
    }

    py::list tensors() const {
        model_lock guard(mu_);
        py::list out;
        const int64_t n = omnimodel_n_tensors(ctx());
        for (int64_t i = 0; i < n; ++i) {
            omnimodel_tensor_info ti{};
            check(omnimodel_get_tensor_info(ctx(), i, &ti), ctx());
            py::tuple shape(ti.n_dims);
            for (int d = 0; d < ti.n_dims; ++d) shape[d] = ti.ne[ti.n_dims - 1 - d];
            py::dict row;
            row["name"]      = text_of(ti.name);
            row["type"]      = ti.type;
            row["type_name"] = ti.type_name;
            row["shape"]     = shape;  // numpy / PyTorch order
            row["n_bytes"]   = ti.n_bytes;
            out.append(row);
        }
        return out;
    }

    int64_t meta_int(const std::string & key) const {
        no_nul(key, "key");
        model_lock guard(mu_);
        int64_t v = 0;
        check(omnimodel_meta_int(ctx(), key.c_str(), &v), ctx());
        return v;
    }
    double meta_float(const std::string & key) const {
        no_nul(key, "key");
        model_lock guard(mu_);
        double v = 0;
        check(omnimodel_meta_float(ctx(), key.c_str(), &v), ctx());
        return v;
    }
    py::str meta_str(const std::string & key) const {
        no_nul(key, "key");
        model_lock guard(mu_);
        const char * v = nullptr;
        check(omnimodel_meta_string(ctx(), key.c_str(), &v), ctx());
        return text_of(v);
    }

    void set_n_threads(int n) {
        model_lock guard(mu_);
        check(omnimodel_set_n_threads(ctx(), n), ctx());
    }

    py::dict run(const py::dict & inputs, const std::vector<std::string> & capture) {
        for (auto item : inputs) no_nul(py::str(item.first), "an input name");
        for (auto & c : capture) no_nul(c, "a capture name");
        model_lock guard(mu_);
        check(omnimodel_clear_inputs(ctx()), ctx());
        for (auto item : inputs) {
            const std::string name = py::str(item.first);
            auto arr = py::array_t<float, py::array::c_style | py::array::forcecast>::ensure(item.second);
            if (!arr) throw py::type_error("input '" + name + "' is not convertible to a float32 array");
            if (arr.ndim() < 1 || arr.ndim() > OMNIMODEL_MAX_DIMS) {
                raise_status(OMNIMODEL_ERR_SHAPE, "input '" + name + "' must have 1 to 4 dimensions, got " +
                                                      std::to_string(arr.ndim()));
            }
            int64_t ne[OMNIMODEL_MAX_DIMS] = {1, 1, 1, 1};
            for (py::ssize_t d = 0; d < arr.ndim(); ++d) ne[arr.ndim() - 1 - d] = arr.shape(d);
            check(omnimodel_set_input(ctx(), name.c_str(), arr.data(), static_cast<int32_t>(arr.ndim()), ne), ctx());
        }
        std::vector<const char *> names;
        for (auto & c : capture) names.push_back(c.c_str());
        check(omnimodel_set_capture(ctx(), names.data(), names.size()), ctx());
        omnimodel_status st;
        {
            py::gil_scoped_release nogil;
            st = omnimodel_compute(ctx());
        }
        check(st, ctx());
        return results_locked();
    }

    py::dict results() const {
        model_lock guard(mu_);
        return results_locked();
    }

    py::dict results_locked() const {
        py::dict out;
        const size_t n = omnimodel_n_results(ctx());
        for (size_t i = 0; i < n; ++i) {
            const char * name = omnimodel_result_name(ctx(), i);
            out[text_of(name)] = result_locked(name);
        }
        return out;
    }

    py::dict timings() const {
        model_lock guard(mu_);
        double build = 0, compute = 0;
        check(omnimodel_last_timings(ctx(), &build, &compute), ctx());
        py::dict d;
        d["build_s"]   = build;
        d["compute_s"] = compute;
        py::dict ready;
        const size_t n = omnimodel_n_results(ctx());
        for (size_t i = 0; i < n; ++i) {
            const char * name = omnimodel_result_name(ctx(), i);
            double       s    = 0;
            if (omnimodel_result_ready_time(ctx(), name, &s) == OMNIMODEL_OK) ready[text_of(name)] = s;
        }
        d["ready_s"] = ready;  // captured intermediates only
        return d;
    }

    py::array_t<float> result(const std::string & name) const {
        no_nul(name, "name");
        model_lock guard(mu_);
        return result_locked(name);
    }

    py::array_t<float> result_locked(const std::string & name) const {
        int32_t n_dims = 0;
        int64_t ne[OMNIMODEL_MAX_DIMS];
        check(omnimodel_result_shape(ctx(), name.c_str(), &n_dims, ne), ctx());
        size_t n = 1;
        for (int i = 0; i < OMNIMODEL_MAX_DIMS; ++i) n *= static_cast<size_t>(ne[i]);
        std::vector<float> data(n);
        check(omnimodel_result_get(ctx(), name.c_str(), data.data(), data.size()), ctx());
        return to_numpy(data, n_dims, ne);
    }

    // ---- robot side (omnimodel_predict_action and its helpers) ----

    int32_t vla_query(int32_t (*fn)(omnimodel_context *)) const {
        const int32_t v = fn(ctx());
        if (v < 0) raise_status(OMNIMODEL_ERR_NOT_FOUND, omnimodel_last_error(ctx()));
        return v;
    }

    // Frames as (H, W, 3) uint8 arrays; rows may be strided (a crop), pixels must be packed. None is a
    // missing camera (data NULL), for the families that allow one.
    std::vector<omnimodel_image> frames(const py::list & images, std::vector<py::array> & keep) const {
        std::vector<omnimodel_image> out;
        for (size_t i = 0; i < images.size(); ++i) {
            if (images[i].is_none()) {
                out.push_back({nullptr, 0, 0, 0});
                continue;
            }
            py::array a = py::reinterpret_borrow<py::object>(images[i]);
            if (!py::isinstance<py::array_t<uint8_t>>(a) || a.ndim() != 3 || a.shape(2) != 3) {
                throw py::value_error("image " + std::to_string(i) + ": expected a uint8 numpy array of shape (H, W, 3)");
            }
            if (a.strides(2) != 1 || a.strides(1) != 3) a = py::array_t<uint8_t, py::array::c_style>::ensure(a);
            keep.push_back(a);
            out.push_back({static_cast<const uint8_t *>(a.data()), static_cast<int32_t>(a.shape(1)),
                           static_cast<int32_t>(a.shape(0)), static_cast<int32_t>(a.strides(0))});
        }
        return out;
    }

    py::array_t<float> predict_action(const py::list & images, const std::string & instruction, const py::object & proprio,
                                      uint64_t seed) {
        no_nul(instruction, "the instruction");
        model_lock guard(mu_);
        std::vector<py::array> keep;
        const std::vector<omnimodel_image> f = frames(images, keep);
        std::vector<float> p;
        if (!proprio.is_none()) {
            auto arr = py::array_t<float, py::array::c_style | py::array::forcecast>::ensure(proprio);
            if (!arr) throw py::type_error("proprio is not convertible to a float32 array");
            p.assign(arr.data(), arr.data() + arr.size());
        }
        const int32_t chunk = vla_query(&omnimodel_chunk_length), dim = vla_query(&omnimodel_action_dim);
        std::vector<float> out(static_cast<size_t>(chunk) * static_cast<size_t>(dim));
        omnimodel_status st;
        {
            py::gil_scoped_release nogil;
            st = omnimodel_predict_action_seeded(ctx(), f.data(), static_cast<int32_t>(f.size()), instruction.c_str(),
                                                 proprio.is_none() ? nullptr : p.data(), static_cast<int32_t>(p.size()),
                                                 seed, out.data(), out.size());
        }
        check(st, ctx());
        const int64_t ne[2] = {dim, chunk};
        return to_numpy(out, 2, ne);
    }

    static std::vector<float> floats_of(const py::object & x, const char * what) {
        std::vector<float> v;
        if (x.is_none()) return v;
        auto arr = py::array_t<float, py::array::c_style | py::array::forcecast>::ensure(x);
        if (!arr) throw py::type_error(std::string(what) + " is not convertible to a float32 array");
        v.assign(arr.data(), arr.data() + arr.size());
        return v;
    }

    // omnimodel_prepare_inputs, then every input it set, by name (PyTorch order shapes).
    py::dict prepare_inputs(const py::list & images, const std::string & instruction, const py::object & state,
                            uint64_t seed, const std::vector<std::string> & names) {
        no_nul(instruction, "the instruction");
        model_lock guard(mu_);
        std::vector<py::array> keep;
        const std::vector<omnimodel_image> f = frames(images, keep);
        const std::vector<float> s = floats_of(state, "state");
        check(omnimodel_prepare_inputs(ctx(), f.data(), static_cast<int32_t>(f.size()), instruction.c_str(),
                                       state.is_none() ? nullptr : s.data(), static_cast<int32_t>(s.size()), seed),
              ctx());
        py::dict out;
        for (const std::string & name : names) {
            int32_t n_dims = 0;
            int64_t ne[OMNIMODEL_MAX_DIMS];
            const omnimodel_status st = omnimodel_get_input(ctx(), name.c_str(), nullptr, 0, &n_dims, ne);
            if (st == OMNIMODEL_ERR_NOT_FOUND) continue;  // an input this family does not set
            check(st, ctx());
            size_t n = 1;
            for (int i = 0; i < n_dims; ++i) n *= static_cast<size_t>(ne[i]);
            std::vector<float> data(n);
            check(omnimodel_get_input(ctx(), name.c_str(), data.data(), data.size(), nullptr, nullptr), ctx());
            out[py::str(name)] = to_numpy(data, n_dims, ne);
        }
        return out;
    }

    py::array_t<float> postprocess_actions(const py::object & normalized) {
        model_lock guard(mu_);
        const std::vector<float> x = floats_of(normalized, "normalized");
        size_t n = 0;
        const omnimodel_status st = omnimodel_postprocess_actions(ctx(), x.data(), x.size(), nullptr, 0, &n);
        if (st != OMNIMODEL_OK && n == 0) check(st, ctx());
        std::vector<float> out(n);
        check(omnimodel_postprocess_actions(ctx(), x.data(), x.size(), out.data(), out.size(), &n), ctx());
        const int64_t dim = vla_query(&omnimodel_action_dim);
        const int64_t ne[2] = {dim, static_cast<int64_t>(n) / dim};
        return to_numpy(out, 2, ne);
    }

    template <typename F>
    std::vector<int32_t> ids_of(F fn, const std::string & text) {
        no_nul(text, "the text");
        model_lock guard(mu_);
        size_t n = 0;
        const omnimodel_status st = fn(ctx(), text.c_str(), nullptr, 0, &n);
        if (st != OMNIMODEL_OK && n == 0) check(st, ctx());
        std::vector<int32_t> ids(n);
        check(fn(ctx(), text.c_str(), ids.data(), ids.size(), &n), ctx());
        return ids;
    }

    std::vector<int32_t> tokenize(const std::string & text) { return ids_of(&omnimodel_tokenize, text); }
    std::vector<int32_t> input_ids(const std::string & instruction) { return ids_of(&omnimodel_input_ids, instruction); }

    py::array_t<float> preprocess_images(const py::list & images) {
        model_lock guard(mu_);
        std::vector<py::array> keep;
        const std::vector<omnimodel_image> f = frames(images, keep);
        size_t n = 0;
        omnimodel_status st = omnimodel_preprocess_images(ctx(), f.data(), static_cast<int32_t>(f.size()), nullptr, 0, &n);
        if (st != OMNIMODEL_OK && n == 0) check(st, ctx());
        std::vector<float> px(n);
        check(omnimodel_preprocess_images(ctx(), f.data(), static_cast<int32_t>(f.size()), px.data(), px.size(), &n), ctx());
        const int64_t s = vla_query(&omnimodel_image_size);
        const int64_t ne[4] = {s, s, static_cast<int64_t>(n) / (s * s), 1};
        return to_numpy(px, 4, ne);
    }

    int32_t vla_property(int32_t (*fn)(omnimodel_context *)) const {
        model_lock guard(mu_);
        return vla_query(fn);
    }

private:
    omnimodel_context * ctx_ = nullptr;
    mutable std::mutex  mu_;
};

// ---- ggml's own quantizers ---------------------------------------------------------------------

const ggml_type_traits * traits_or_throw(int type_id) {
    if (type_id < 0 || type_id >= GGML_TYPE_COUNT) {
        throw py::value_error("unknown ggml type id " + std::to_string(type_id));
    }
    const ggml_type_traits * tr = ggml_get_type_traits(static_cast<ggml_type>(type_id));
    if (tr->blck_size == 0 || tr->type_size == 0) {
        throw py::value_error("ggml type id " + std::to_string(type_id) + " was removed from ggml");
    }
    return tr;
}

bool can_quantize(ggml_type t) {
    switch (t) {
        case GGML_TYPE_F32: case GGML_TYPE_F16: case GGML_TYPE_BF16:
        case GGML_TYPE_Q1_0: case GGML_TYPE_Q2_0: case GGML_TYPE_Q4_0: case GGML_TYPE_Q4_1:
        case GGML_TYPE_Q5_0: case GGML_TYPE_Q5_1: case GGML_TYPE_Q8_0: case GGML_TYPE_MXFP4: case GGML_TYPE_NVFP4:
        case GGML_TYPE_Q2_K: case GGML_TYPE_Q3_K: case GGML_TYPE_Q4_K: case GGML_TYPE_Q5_K: case GGML_TYPE_Q6_K:
        case GGML_TYPE_TQ1_0: case GGML_TYPE_TQ2_0:
        case GGML_TYPE_IQ2_XXS: case GGML_TYPE_IQ2_XS: case GGML_TYPE_IQ2_S: case GGML_TYPE_IQ3_XXS:
        case GGML_TYPE_IQ3_S: case GGML_TYPE_IQ1_S: case GGML_TYPE_IQ1_M: case GGML_TYPE_IQ4_NL: case GGML_TYPE_IQ4_XS:
            return true;
        default:
            return false;
    }
}

py::dict type_info(int type_id) {
    const ggml_type_traits * tr = traits_or_throw(type_id);
    const auto t = static_cast<ggml_type>(type_id);
    py::dict d;
    d["name"]             = tr->type_name;
    d["block_size"]       = tr->blck_size;
    d["type_size"]        = tr->type_size;
    d["is_quantized"]     = tr->is_quantized;
    d["requires_imatrix"] = ggml_quantize_requires_imatrix(t);
    d["can_quantize"]     = can_quantize(t);
    d["can_dequantize"]   = tr->to_float != nullptr;
    return d;
}

py::array_t<uint8_t> ggml_quantize(int type_id, py::array_t<float, py::array::c_style | py::array::forcecast> x,
                                   std::optional<py::array_t<float, py::array::c_style | py::array::forcecast>> imatrix) {
    const ggml_type_traits * tr = traits_or_throw(type_id);
    const auto t = static_cast<ggml_type>(type_id);
    if (!can_quantize(t)) throw py::value_error(std::string("ggml cannot quantize to ") + tr->type_name);
    if (x.ndim() != 2) throw py::value_error("x must be 2-D (rows, n_per_row)");
    const int64_t nrows = x.shape(0), n_per_row = x.shape(1);
    if (n_per_row <= 0 || n_per_row % tr->blck_size != 0) {
        throw py::value_error(std::string(tr->type_name) + " needs rows that are a multiple of " +
                              std::to_string(tr->blck_size) + " elements, got " + std::to_string(n_per_row));
    }
    // ggml's quantizers assert on NaN and inf (their scale searches divide by them)
    auto all_finite = [](const float * p, py::ssize_t n) {
        for (py::ssize_t i = 0; i < n; ++i) {
            if (!std::isfinite(p[i])) return false;
        }
        return true;
    };
    // (float types just convert, and carry NaN/inf through)
    if (tr->is_quantized && !all_finite(x.data(), x.size())) {
        throw py::value_error(std::string("x holds NaN or inf; ggml cannot quantize it to ") + tr->type_name);
    }
    const float * im = nullptr;
    if (imatrix) {
        if (imatrix->ndim() != 1 || imatrix->shape(0) != n_per_row) {
            throw py::value_error("imatrix must be 1-D with n_per_row = " + std::to_string(n_per_row) + " values");
        }
        if (!all_finite(imatrix->data(), imatrix->size())) throw py::value_error("imatrix holds NaN or inf");
        for (py::ssize_t i = 0; i < imatrix->size(); ++i) {
            if (imatrix->data()[i] < 0.0f) throw py::value_error("imatrix holds a negative importance");
        }
        im = imatrix->data();
    } else if (ggml_quantize_requires_imatrix(t)) {
        throw py::value_error(std::string("ggml requires an importance matrix for ") + tr->type_name);
    }
    const size_t row_size = ggml_row_size(t, n_per_row);
    py::array_t<uint8_t> out({static_cast<py::ssize_t>(nrows), static_cast<py::ssize_t>(row_size)});
    if (nrows > 0) {
        const float * src = x.data();
        uint8_t *     dst = out.mutable_data();
        py::gil_scoped_release nogil;
        ggml_quantize_chunk(t, src, dst, 0, nrows, n_per_row, im);
    }
    return out;
}

py::array_t<float> ggml_dequantize(int type_id, py::array_t<uint8_t, py::array::c_style | py::array::forcecast> data,
                                   int64_t n_per_row) {
    const ggml_type_traits * tr = traits_or_throw(type_id);
    const auto t = static_cast<ggml_type>(type_id);
    if (tr->to_float == nullptr) throw py::value_error(std::string("ggml cannot dequantize ") + tr->type_name);
    if (n_per_row <= 0 || n_per_row % tr->blck_size != 0) {
        throw py::value_error("n_per_row must be a positive multiple of " + std::to_string(tr->blck_size));
    }
    const size_t row_size = ggml_row_size(t, n_per_row);
    if (data.ndim() != 2 || static_cast<size_t>(data.shape(1)) != row_size) {
        throw py::value_error("data must be 2-D (rows, " + std::to_string(row_size) + ") for " + tr->type_name +
                              " rows of " + std::to_string(n_per_row));
    }
    const int64_t nrows = data.shape(0);
    py::array_t<float> out({static_cast<py::ssize_t>(nrows), static_cast<py::ssize_t>(n_per_row)});
    if (nrows > 0) {
        const uint8_t * src = data.data();
        float *         dst = out.mutable_data();
        py::gil_scoped_release nogil;
        tr->to_float(src, dst, nrows * n_per_row);
    }
    return out;
}


// ---- BEGIN parity: the runtime's activation rounding (omnimodel.validate.numerics) ------------------
// A quantized or half-precision matmul does not multiply the float32 activation: ggml-cpu first
// converts each activation row to its weight type's vec_dot_type with that type's CPU from_float
// (F16/BF16 rounding, Q8_0/Q8_1 blocks of 32, Q8_K blocks of 256). The emulating reference calls the
// very same function here, so its rounding is ggml's bit for bit, not a re-implementation.

int vec_dot_type(int type_id) {
    traits_or_throw(type_id);
    return static_cast<int>(ggml_get_type_traits_cpu(static_cast<ggml_type>(type_id))->vec_dot_type);
}

// One vec_dot_type row (as from_float wrote it) back to float32: exactly the values the dot product uses.
void decode_vec_dot_row(ggml_type vdt, const uint8_t * src, float * dst, int64_t n) {
    switch (vdt) {
        case GGML_TYPE_Q8_K: {  // {float d; int8 qs[256]; int16 bsums[16]}: d * q
            const size_t bs = ggml_type_size(vdt);
            for (int64_t b = 0; b < n / 256; ++b) {
                float d;
                std::memcpy(&d, src + b * bs, sizeof(float));
                const int8_t * qs = reinterpret_cast<const int8_t *>(src + b * bs + sizeof(float));
                for (int j = 0; j < 256; ++j) dst[b * 256 + j] = d * static_cast<float>(qs[j]);
            }
            return;
        }
        case GGML_TYPE_Q8_1: {  // {half d; half s; int8 qs[32]}: d * q (s only serves the weight's min term)
            const size_t bs = ggml_type_size(vdt);
            for (int64_t b = 0; b < n / 32; ++b) {
                ggml_fp16_t d;
                std::memcpy(&d, src + b * bs, sizeof(d));
                const float    df = ggml_fp16_to_fp32(d);
                const int8_t * qs = reinterpret_cast<const int8_t *>(src + b * bs + 2 * sizeof(ggml_fp16_t));
                for (int j = 0; j < 32; ++j) dst[b * 32 + j] = df * static_cast<float>(qs[j]);
            }
            return;
        }
        default: {
            const ggml_type_traits * tr = ggml_get_type_traits(vdt);
            if (tr->to_float == nullptr) {
                throw py::value_error(std::string("cannot decode activations of vec_dot_type ") + tr->type_name);
            }
            tr->to_float(src, dst, n);
        }
    }
}

// (rows, n) float32 activations of a matmul with weights of type_id -> what ggml multiplies them as:
// each row zero-padded to the vec_dot_type's block (as the graph pads rows of a padded weight),
// converted with ggml-cpu's from_float, decoded, the padding dropped.
py::array_t<float> round_activations(int type_id, py::array_t<float, py::array::c_style | py::array::forcecast> x) {
    traits_or_throw(type_id);
    if (x.ndim() != 2) throw py::value_error("x must be 2-D (rows, n)");
    ggml_cpu_init();
    const auto    vdt  = static_cast<ggml_type>(vec_dot_type(type_id));
    const int64_t rows = x.shape(0), n = x.shape(1);
    py::array_t<float> out({static_cast<py::ssize_t>(rows), static_cast<py::ssize_t>(n)});
    if (vdt == GGML_TYPE_F32) {
        std::copy_n(x.data(), rows * n, out.mutable_data());
        return out;
    }
    const ggml_from_float_t from_float = ggml_get_type_traits_cpu(vdt)->from_float;
    if (from_float == nullptr) {
        throw py::value_error(std::string("ggml-cpu has no from_float for ") + ggml_type_name(vdt));
    }
    const int64_t blk = ggml_blck_size(vdt), padded = (n + blk - 1) / blk * blk;
    const float * src = x.data();
    float *       dst = out.mutable_data();
    {
        py::gil_scoped_release nogil;
        std::vector<float>   row(static_cast<size_t>(padded), 0.0f), back(static_cast<size_t>(padded));
        std::vector<uint8_t> packed(ggml_row_size(vdt, padded));
        for (int64_t r = 0; r < rows; ++r) {
            std::copy_n(src + r * n, n, row.begin());
            from_float(row.data(), packed.data(), padded);
            decode_vec_dot_row(vdt, packed.data(), back.data(), padded);
            std::copy_n(back.begin(), n, dst + r * n);
        }
    }
    return out;
}
// ---- END parity -------------------------------------------------------------------------------------
// ---- CPU build features (omnimodel --version / doctor, tests/test_cpu_features.py) ----
//
// What ggml's CPU backend was compiled with, as it reports itself: the SIMD flags (compile-time in a
// non-DL build, so they say what the kernels can use, not what the host has), LLAMAFILE (tinyBLAS),
// OPENMP and REPACK, plus the extra weight buffer types the CPU device offers on this host and
// whether the build was -march=native.
py::dict cpu_features() {
    py::dict out;
    ggml_backend_reg_t reg = ggml_backend_reg_by_name("CPU");
    if (reg != nullptr) {
        auto get = reinterpret_cast<ggml_backend_get_features_t>(
            ggml_backend_reg_get_proc_address(reg, "ggml_backend_get_features"));
        for (ggml_backend_feature * f = get != nullptr ? get(reg) : nullptr; f != nullptr && f->name != nullptr; ++f) {
            std::string key = f->name;
            std::transform(key.begin(), key.end(), key.begin(), [](unsigned char c) { return std::tolower(c); });
            const std::string v = f->value;
            if (v == "1") {
                out[py::str(key)] = true;
            } else {
                out[py::str(key)] = v;
            }
        }
    }
    for (const char * k : {"llamafile", "openmp", "repack"}) {
        if (!out.contains(k)) out[k] = false;
    }
    py::list bufts;
    ggml_backend_dev_t dev = ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_CPU);
    if (reg != nullptr && dev != nullptr) {
        auto get_extra = reinterpret_cast<ggml_backend_dev_get_extra_bufts_t>(
            ggml_backend_reg_get_proc_address(reg, "ggml_backend_dev_get_extra_bufts"));
        for (ggml_backend_buffer_type_t * b = get_extra != nullptr ? get_extra(dev) : nullptr; b != nullptr && *b != nullptr; ++b) {
            bufts.append(ggml_backend_buft_name(*b));
        }
    }
    out["extra_buffer_types"] = bufts;
#ifdef OMNIMODEL_NATIVE_BUILD
    out["native"] = true;
#else
    out["native"] = false;
#endif
    return out;
}

}  // namespace

PYBIND11_MODULE(_runtime, m) {
    m.doc() = "omnimodel's compiled runtime and ggml's quantizers";

    py::object base = py::module_::import("builtins").attr("RuntimeError");
    g_error_type    = PyErr_NewExceptionWithDoc("omnimodel._runtime.RuntimeStatusError",
                                                "A C API call failed; .code is the omnimodel_status, .status its name.",
                                                base.ptr(), nullptr);
    m.attr("RuntimeStatusError") = py::handle(g_error_type);

    m.def("version", &omnimodel_version, "omnimodel runtime version");
    m.def("ggml_version", &omnimodel_ggml_version, "version of the ggml compiled in");
    m.def("cpu_features", &cpu_features,
          "ggml CPU backend build features: SIMD flags, llamafile, openmp, repack (bools), extra_buffer_types, native");
    m.def("status_string", [](int code) { return omnimodel_status_string(static_cast<omnimodel_status>(code)); });

    // Architecture plugins (omnimodel.codegen + omnimodel.build): registers the library's graph,
    // replacing a same-named architecture for models loaded afterwards.
    m.def(
        "load_plugin",
        [](const py::object & path) {
            const std::string p = py::str(py::module_::import("os").attr("fspath")(path));
            no_nul(p, "the plugin path");
            omnimodel_status  st;
            {
                py::gil_scoped_release nogil;
                st = omnimodel_load_plugin(p.c_str());
            }
            check(st, nullptr);
        },
        py::arg("path"), "Load an architecture plugin (.so) and register its graph; raises RuntimeStatusError.");
    m.def(
        "graph_source", [](const std::string & arch) { return std::string(omnimodel_architecture_source(arch.c_str())); },
        py::arg("architecture"),
        "which graph serves an architecture now: 'builtin:<arch>', 'plugin:<path>', 'linked:<file>'; '' if none");

    py::class_<Model>(m, "Model")
        .def(py::init<const std::string &, int, bool, const std::string &, int, bool, bool, bool>(), py::arg("path"),
             py::arg("n_threads") = 0, py::arg("use_mmap") = true, py::arg("backend") = "auto",
             py::arg("gpu_device") = 0, py::arg("verbose") = false, py::arg("repack") = true,
             py::arg("preprocess_only") = false)
        .def_property_readonly("architecture", &Model::architecture)
        .def_property_readonly("graph_source", &Model::graph_source,
                               "which graph this model runs: 'builtin:<arch>', 'plugin:<path>' or 'linked:<file>'")
        .def_property_readonly("backend_name", &Model::backend_name)
        .def("tensors", &Model::tensors, "tensors in the file: name, type, type_name, shape (PyTorch order), n_bytes")
        .def("meta_int", &Model::meta_int, py::arg("key"))
        .def("meta_float", &Model::meta_float, py::arg("key"))
        .def("meta_str", &Model::meta_str, py::arg("key"))
        .def("set_n_threads", &Model::set_n_threads, py::arg("n_threads"))
        .def("run", &Model::run, py::arg("inputs"), py::arg("capture") = std::vector<std::string>{},
             "Set inputs (name -> float array), compute, and return outputs plus captured intermediates. "
             "capture=['*'] keeps every named intermediate.")
        .def("prepare_inputs", &Model::prepare_inputs, py::arg("images"), py::arg("instruction"),
             py::arg("state") = py::none(), py::arg("seed") = 0,
             py::arg("names") = std::vector<std::string>{"pixel_values", "image_mask", "input_ids", "state", "noise",
                                                         "proprio"},
             "omnimodel_prepare_inputs: the graph inputs for one observation, by name (no compute)")
        .def("postprocess_actions", &Model::postprocess_actions, py::arg("normalized"),
             "omnimodel_postprocess_actions: the graph's normalised output -> (chunk, action_dim) robot actions")
        .def_property_readonly("n_action_steps", [](const Model & s) { return s.vla_property(&omnimodel_n_action_steps); })
        .def("predict_action", &Model::predict_action, py::arg("images"), py::arg("instruction"),
             py::arg("proprio") = py::none(), py::arg("seed") = 0,
             "raw uint8 (H, W, 3) frames (None: a missing camera, pi0) + instruction + raw proprio / state (+ the "
             "noise seed of a flow-matching policy) -> (chunk, action_dim) un-normalised actions")
        .def("tokenize", &Model::tokenize, py::arg("text"), "token ids of text with the model's tokenizer, no BOS")
        .def("input_ids", &Model::input_ids, py::arg("instruction"), "the full id sequence the graph gets")
        .def("preprocess_images", &Model::preprocess_images, py::arg("images"), "the pixel_values the graph gets")
        .def_property_readonly("chunk_length", [](const Model & s) { return s.vla_property(&omnimodel_chunk_length); })
        .def_property_readonly("action_dim", [](const Model & s) { return s.vla_property(&omnimodel_action_dim); })
        .def_property_readonly("image_size", [](const Model & s) { return s.vla_property(&omnimodel_image_size); })
        .def_property_readonly("n_images", [](const Model & s) { return s.vla_property(&omnimodel_n_images); })
        .def_property_readonly("proprio_dim", [](const Model & s) { return s.vla_property(&omnimodel_proprio_dim); })
        .def("results", &Model::results)
        .def("timings", &Model::timings,
             "last compute: build_s, compute_s, and ready_s (seconds from compute start per captured intermediate)")
        .def("result", &Model::result, py::arg("name"))
        // ---- performance: per-node profile, graph reuse, memory (omnimodel bench --profile)
        .def(
            "set_profile", [](Model & s, bool on) { check(omnimodel_set_profile(s.ctx(), on ? 1 : 0), s.ctx()); },
            py::arg("on"), "profile the next runs node by node (Model.profile())")
        .def(
            "profile",
            [](const Model & s) {
                py::list out;
                const size_t n = omnimodel_profile_size(s.ctx());
                for (size_t i = 0; i < n; ++i) {
                    omnimodel_profile_node p{};
                    check(omnimodel_profile_get(s.ctx(), i, &p), s.ctx());
                    py::dict d;
                    d["name"]           = p.name;
                    d["op"]             = p.op;
                    d["type"]           = p.type;
                    d["src_type"]       = py::make_tuple(p.src_type[0], p.src_type[1], p.src_type[2]);
                    d["src0_is_weight"] = p.src0_is_weight;
                    d["ne"]             = py::make_tuple(p.ne[0], p.ne[1], p.ne[2], p.ne[3]);
                    py::list src_ne;
                    for (auto & e : p.src_ne) src_ne.append(py::make_tuple(e[0], e[1], e[2], e[3]));
                    d["src_ne"]  = src_ne;  // ggml order (ne[0] fastest)
                    d["seconds"]     = p.seconds;
                    d["cpu_seconds"] = p.cpu_seconds;
                    out.append(d);
                }
                return out;
            },
            "nodes of the last profiled run in execution order: name, op, type, src_type, src0_is_weight, ne, "
            "src_ne (ggml order), seconds, cpu_seconds (all threads)")
        .def(
            "run_stats",
            [](const Model & s) {
                omnimodel_run_stats st{};
                check(omnimodel_get_run_stats(s.ctx(), &st), s.ctx());
                py::dict d;
                d["graph_builds"]         = st.graph_builds;
                d["graph_reuses"]         = st.graph_reuses;
                d["compute_buffer_bytes"] = st.compute_buffer_bytes;
                d["weight_bytes"]         = st.weight_bytes;
                d["repacked_bytes"]       = st.repacked_bytes;
                d["n_repacked"]           = st.n_repacked;
                return d;
            },
            "graph builds/reuses so far, activation buffer bytes, weight bytes, repacked bytes and matrices")
        .def("close", &Model::close)
        .def("__enter__", [](Model & self) -> Model & { return self; })
        .def("__exit__", [](Model & self, py::args) { self.close(); });

    m.def("ggml_type_info", &type_info, py::arg("type_id"));
    m.def("ggml_quantize", &ggml_quantize, py::arg("type_id"), py::arg("x"), py::arg("imatrix") = py::none(),
          "ggml_quantize_chunk over a (rows, n_per_row) float32 matrix; returns (rows, row_bytes) uint8");
    m.def("ggml_dequantize", &ggml_dequantize, py::arg("type_id"), py::arg("data"), py::arg("n_per_row"),
          "ggml's to_float over (rows, row_bytes) uint8; returns (rows, n_per_row) float32");

    // ---- BEGIN parity
    m.def("vec_dot_type", &vec_dot_type, py::arg("type_id"),
          "the GGML type id ggml-cpu converts a matmul's activations to for weights of type_id");
    m.def("round_activations", &round_activations, py::arg("type_id"), py::arg("x"),
          "(rows, n) float32 activations of a matmul with type_id weights -> the values ggml-cpu multiplies "
          "(rows zero-padded to the vec_dot_type block, from_float, decoded, padding dropped)");
    // ---- END parity
}
