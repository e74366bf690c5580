// See pi0_predict.hpp. Float arithmetic follows the Python reference operation by operation (float32
// where torch computes in float32, double where numpy does), so that the results are equal, not close.
#include "pi0_predict.hpp"

#include "../check.hpp"
#include "../error.hpp"

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstring>

namespace omni::vla {

namespace {

constexpr size_t k_max_instruction_bytes = 64 * 1024;
constexpr size_t k_max_template_bytes    = 4096;

// torch rounds a * b to float32 before adding; a compiler allowed to contract a * b + c into one fused
// multiply-add (-march=native with FMA) would round once. Going through a volatile keeps two roundings.
inline float rounded(float x) {
    volatile float v = x;
    return v;
}
inline double rounded(double x) {
    volatile double v = x;
    return v;
}

// SplitMix64 output i for seed: mix(seed + (i + 1) * golden), mod 2^64.
uint64_t splitmix64(uint64_t seed, uint64_t i) {
    uint64_t z = seed + (i + 1) * 0x9E3779B97F4A7C15ULL;
    z          = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z          = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

std::vector<std::string> string_array(const model & m, const std::string & key) {
    const int64_t id = m.require_key(key);
    if (gguf_get_kv_type(m.gguf(), id) != GGUF_TYPE_ARRAY || gguf_get_arr_type(m.gguf(), id) != GGUF_TYPE_STRING) {
        fail(OMNIMODEL_ERR_FORMAT, key + " is not an array of strings");
    }
    std::vector<std::string> out;
    for (size_t i = 0; i < gguf_get_arr_n(m.gguf(), id); ++i) out.emplace_back(gguf_get_arr_str(m.gguf(), id, i));
    return out;
}

// str.format with the fields {task} and {state}; {{ and }} are literal braces.
std::string fill_template(const std::string & tpl, const std::string & task, const std::string & state) {
    std::string out;
    for (size_t i = 0; i < tpl.size();) {
        if (tpl.compare(i, 6, "{task}") == 0) {
            out += task;
            i += 6;
        } else if (tpl.compare(i, 7, "{state}") == 0) {
            out += state;
            i += 7;
        } else if ((tpl[i] == '{' || tpl[i] == '}') && i + 1 < tpl.size() && tpl[i + 1] == tpl[i]) {
            out += tpl[i];
            i += 2;
        } else if (tpl[i] == '{' || tpl[i] == '}') {
            fail(OMNIMODEL_ERR_FORMAT, "robot.prompt.template has a field other than {task} and {state}");
        } else {
            out += tpl[i++];
        }
    }
    return out;
}

// tokenizer.clean_task: strip (Python's whitespace), "_" -> " ", "\n" -> " ".
std::vector<uint32_t> clean_task(const std::vector<uint32_t> & cps) {
    size_t b = 0, e = cps.size();
    while (b < e && python_is_space(cps[b])) ++b;
    while (e > b && python_is_space(cps[e - 1])) --e;
    std::vector<uint32_t> out(cps.begin() + static_cast<std::ptrdiff_t>(b), cps.begin() + static_cast<std::ptrdiff_t>(e));
    for (uint32_t & c : out) {
        if (c == '_' || c == '\n') c = ' ';
    }
    return out;
}

// np.digitize(x, np.linspace(-1, 1, bins + 1)[:-1]) - 1: how many edges are <= x, minus one.
int64_t discretize(float x, int64_t bins) {
    const double step = 2.0 / static_cast<double>(bins);
    int64_t      n    = 0;
    for (int64_t i = 0; i < bins; ++i) {
        const double edge = rounded(static_cast<double>(i) * step) + -1.0;  // linspace: i * step, then + start
        if (edge <= static_cast<double>(x)) ++n;
    }
    return n - 1;
}

void check_frame(const rgb_view & im, size_t i) {
    if (im.width <= 0 || im.height <= 0) {
        fail(OMNIMODEL_ERR_SHAPE, format("image %zu: size %lldx%lld is empty", i, (long long) im.width, (long long) im.height));
    }
    if (im.width > 65536 || im.height > 65536) {
        fail(OMNIMODEL_ERR_SHAPE, format("image %zu: size %lldx%lld is too large (at most 65536 a side)", i,
                                         (long long) im.width, (long long) im.height));
    }
    if (im.stride < 3 * im.width) {
        fail(OMNIMODEL_ERR_INVALID_ARGUMENT, format("image %zu: stride %lld is less than 3 * width (%lld)", i,
                                                    (long long) im.stride, (long long) (3 * im.width)));
    }
}

}  // namespace

std::vector<float> pi0_gaussian_noise(uint64_t seed, size_t n) {
    constexpr double two_pi = 2.0 * 3.14159265358979323846;  // numpy's 2.0 * np.pi, folded
    std::vector<float> out(n);
    for (size_t k = 0; 2 * k < n; ++k) {
        const double u1 = static_cast<double>(splitmix64(seed, 2 * k) >> 11) * 0x1.0p-53;
        const double u2 = static_cast<double>(splitmix64(seed, 2 * k + 1) >> 11) * 0x1.0p-53;
        const double r  = std::sqrt(-2.0 * std::log1p(-u1));
        const double a  = rounded(two_pi * u2);
        out[2 * k]      = static_cast<float>(r * std::cos(a));
        if (2 * k + 1 < n) out[2 * k + 1] = static_cast<float>(r * std::sin(a));
    }
    return out;
}

void append_pi0_planes(const rgb_view & img, int64_t size, std::vector<float> & out) {
    const int64_t w = img.width, h = img.height;
    const size_t  base = out.size();
    out.resize(base + static_cast<size_t>(3 * size * size), -1.0f);  // the zero padding, mapped to -1
    float * dst = out.data() + base;
    auto px = [&](int64_t y, int64_t x, int c) {  // x / 255, as torch divides the float image
        return static_cast<float>(img.data[y * img.stride + x * 3 + c]) / 255.0f;
    };
    if (w == size && h == size) {
        for (int c = 0; c < 3; ++c) {
            for (int64_t y = 0; y < h; ++y) {
                for (int64_t x = 0; x < w; ++x) dst[(c * size + y) * size + x] = px(y, x, c) * 2.0f - 1.0f;
            }
        }
        return;
    }
    // resize_with_pad: fit keeping the aspect ratio (Python float64 arithmetic, int() truncation)
    const double  ratio = std::max(static_cast<double>(w) / static_cast<double>(size), static_cast<double>(h) / static_cast<double>(size));
    const int64_t rh = static_cast<int64_t>(static_cast<double>(h) / ratio), rw = static_cast<int64_t>(static_cast<double>(w) / ratio);
    if (rh < 1 || rw < 1) {
        fail(OMNIMODEL_ERR_SHAPE, format("an image of %lldx%lld is too thin to resize to %lld pixels with padding",
                                         (long long) w, (long long) h, (long long) size));
    }
    const int64_t top = (size - rh) / 2, left = (size - rw) / 2;
    // torch's upsample_bilinear2d, align_corners=False: source = scale * (dst + 0.5) - 0.5 (>= 0),
    // scale = in / out in float; lambdas from the integer part
    struct tap {
        int64_t i0, i1;
        float   l0, l1;
    };
    auto taps = [](int64_t in, int64_t n_out) {
        std::vector<tap> t(static_cast<size_t>(n_out));
        const float scale = static_cast<float>(in) / static_cast<float>(n_out);
        for (int64_t o = 0; o < n_out; ++o) {
            float src = scale * (static_cast<float>(o) + 0.5f) - 0.5f;
            if (src < 0.0f) src = 0.0f;
            const int64_t i0 = std::min<int64_t>(static_cast<int64_t>(src), in - 1);
            const float   l1 = std::min(std::max(src - static_cast<float>(i0), 0.0f), 1.0f);
            t[static_cast<size_t>(o)] = {i0, i0 < in - 1 ? i0 + 1 : i0, 1.0f - l1, l1};
        }
        return t;
    };
    const std::vector<tap> ty = taps(h, rh), tx = taps(w, rw);
    for (int c = 0; c < 3; ++c) {
        for (int64_t y = 0; y < rh; ++y) {
            const tap & a = ty[static_cast<size_t>(y)];
            for (int64_t x = 0; x < rw; ++x) {
                const tap & b   = tx[static_cast<size_t>(x)];
                const float top_row = px(a.i0, b.i0, c) * b.l0 + px(a.i0, b.i1, c) * b.l1;
                const float bot_row = px(a.i1, b.i0, c) * b.l0 + px(a.i1, b.i1, c) * b.l1;
                const float v       = std::min(std::max(top_row * a.l0 + bot_row * a.l1, 0.0f), 1.0f);
                dst[(c * size + top + y) * size + left + x] = v * 2.0f - 1.0f;
            }
        }
    }
}

void feature_norm::load(const model & m, const std::string & key, int64_t n) {
    dim                    = n;
    const std::string mode = m.get_string(key + "mode");
    const std::string lay  = m.get_string(key + "layout");
    if (lay != "lerobot" && lay != "openpi") fail(OMNIMODEL_ERR_FORMAT, format("%slayout '%s' is neither lerobot nor openpi", key.c_str(), lay.c_str()));
    openpi = lay == "openpi";
    const double e = m.get_float(key + "eps");
    if (!(e >= 0.0 && e < 1.0)) fail(OMNIMODEL_ERR_FORMAT, format("%seps %g is out of range [0, 1)", key.c_str(), e));
    eps = static_cast<float>(e);  // torch adds the Python float to float32 tensors as float32
    const char * lo = nullptr, * hi = nullptr;
    if (mode == "IDENTITY") {
        kind = IDENTITY;
        return;
    } else if (mode == "MEAN_STD") {
        kind = MEAN_STD, lo = "mean", hi = "std";
    } else if (mode == "MIN_MAX") {
        kind = MIN_MAX, lo = "min", hi = "max";
    } else if (mode == "QUANTILES") {
        kind = QUANTILES, lo = "q01", hi = "q99";
    } else if (mode == "QUANTILE10") {
        kind = QUANTILES, lo = "q10", hi = "q90";
    } else {
        fail(OMNIMODEL_ERR_UNSUPPORTED, format("%smode '%s' is not a known normalisation mode", key.c_str(), mode.c_str()));
    }
    if (openpi && kind == MIN_MAX) fail(OMNIMODEL_ERR_UNSUPPORTED, key + "mode MIN_MAX has no openpi formula");
    a = m.get_float_array(key + lo);
    b = m.get_float_array(key + hi);
    if (static_cast<int64_t>(a.size()) != n || static_cast<int64_t>(b.size()) != n) {
        fail(OMNIMODEL_ERR_FORMAT, format("%s{%s,%s} must hold %lld values each, found %zu and %zu", key.c_str(), lo, hi,
                                          (long long) n, a.size(), b.size()));
    }
}

std::vector<float> feature_norm::normalize(const float * x, int64_t n) const {
    std::vector<float> out(x, x + n);
    if (kind == IDENTITY) return out;
    for (int64_t j = 0; j < n; ++j) {
        const float v = x[j], p = a[static_cast<size_t>(j)], q = b[static_cast<size_t>(j)];
        float &     o = out[static_cast<size_t>(j)];
        if (kind == MEAN_STD) {
            o = (v - p) / (q + eps);  // both layouts: (x - mean) / (std + eps)
        } else if (openpi) {
            o = (v - p) / ((q - p) + eps) * 2.0f - 1.0f;  // x * 2 is exact: no rounding to keep apart
        } else {
            const float d = (q - p) == 0.0f ? eps : q - p;
            o             = 2.0f * (v - p) / d - 1.0f;
        }
    }
    return out;
}

std::vector<float> feature_norm::unnormalize(const float * x, int64_t n) const {
    std::vector<float> out(x, x + n);
    if (kind == IDENTITY) return out;
    for (int64_t j = 0; j < n; ++j) {
        const float v = x[j], p = a[static_cast<size_t>(j)], q = b[static_cast<size_t>(j)];
        float &     o = out[static_cast<size_t>(j)];
        if (kind == MEAN_STD) {
            o = rounded(v * (openpi ? rounded(q + eps) : q)) + p;
        } else if (openpi) {
            o = rounded((v + 1.0f) / 2.0f * ((q - p) + eps)) + p;
        } else {
            const float d = (q - p) == 0.0f ? eps : q - p;
            // LeRobot writes the two inverses in different orders
            o = kind == MIN_MAX ? rounded((v + 1.0f) / 2.0f * d) + p : rounded((v + 1.0f) * d) / 2.0f + p;
        }
    }
    return out;
}

pi0_io::pi0_io(const model & m) : prefix_(m.architecture() + ".robot."), tok_(m) {
    const std::string & k = prefix_;
    cameras_ = string_array(m, k + "camera_keys");
    if (cameras_.empty() || cameras_.size() > 16) fail(OMNIMODEL_ERR_FORMAT, k + "camera_keys must name 1 to 16 cameras");
    image_size_     = m.get_int_in(k + "image_size", 1, 4096);
    max_state_dim_  = m.get_int_in(k + "max_state_dim", 1, 4096);
    max_action_dim_ = m.get_int_in(k + "max_action_dim", 1, 4096);
    state_dim_      = m.get_int_in(k + "state_dim", 1, max_state_dim_);
    action_dim_     = m.get_int_in(k + "action_dim", 1, max_action_dim_);
    chunk_          = m.get_int_in(k + "chunk_size", 1, 4096);
    n_action_steps_ = m.get_int_in(k + "n_action_steps", 1, chunk_);
    state_input_    = m.get_int_in(k + "state_input", 0, 1) != 0;
    template_       = m.get_string(k + "prompt.template");
    if (template_.size() > k_max_template_bytes) fail(OMNIMODEL_ERR_FORMAT, k + "prompt.template is too long");
    fill_template(template_, "", "");  // refuses unknown fields now, not at the first observation
    clean_task_     = m.get_int_in(k + "prompt.clean_task", 0, 1) != 0;
    append_newline_ = m.get_int_in(k + "prompt.append_newline", 0, 1) != 0;
    separate_text_  = m.get_string(k + "prompt.separate_text", "");
    state_bins_     = m.get_int_in(k + "prompt.state_bins", 256, 1, 65536);
    max_length_     = m.get_int_in(k + "prompt.max_length", 1, 65536);
    bos_id_         = static_cast<int32_t>(m.get_int_in(k + "bos_token_id", 0, static_cast<int64_t>(tok_.size()) - 1));
    state_norm_.load(m, k + "state_norm.", state_dim_);
    action_norm_.load(m, k + "action_norm.", action_dim_);
}

std::vector<float> pi0_io::normalize_state(const float * s, int64_t n) const {
    if (s == nullptr) fail(OMNIMODEL_ERR_INVALID_ARGUMENT, format("this policy needs a %lld-D robot state; state is NULL", (long long) state_dim_));
    if (n != state_dim_) {
        fail(OMNIMODEL_ERR_SHAPE, format("the state has %lld values, the policy expects %lld", (long long) n, (long long) state_dim_));
    }
    for (int64_t i = 0; i < n; ++i) {
        if (!std::isfinite(s[i])) fail(OMNIMODEL_ERR_INVALID_ARGUMENT, format("state[%lld] is not finite", (long long) i));
    }
    return state_norm_.normalize(s, n);
}

std::string pi0_io::prompt_text(const std::string & instruction, const std::vector<float> & norm_state) const {
    if (instruction.size() > k_max_instruction_bytes) {
        fail(OMNIMODEL_ERR_INVALID_ARGUMENT, format("instruction is %zu bytes; at most %zu are accepted", instruction.size(),
                                                    k_max_instruction_bytes));
    }
    std::vector<uint32_t> cps = utf8_decode(instruction, "instruction");
    if (python_is_blank(cps)) fail(OMNIMODEL_ERR_INVALID_ARGUMENT, "instruction must be a non-empty string");
    if (clean_task_) cps = clean_task(cps);
    std::string task = utf8_encode(cps);
    if (append_newline_ && (task.empty() || task.back() != '\n')) task += '\n';
    std::string state;
    if (template_.find("{state}") != std::string::npos) {
        for (float v : norm_state) state += (state.empty() ? "" : " ") + std::to_string(discretize(v, state_bins_));
    }
    return fill_template(template_, task, state);
}

std::vector<int32_t> pi0_io::ids_for(const std::string & instruction, const std::vector<float> & norm_state) const {
    std::vector<int32_t> ids{bos_id_};
    const std::vector<int32_t> body = tok_.encode(prompt_text(instruction, norm_state));
    ids.insert(ids.end(), body.begin(), body.end());
    if (!separate_text_.empty()) {
        const std::vector<int32_t> extra = tok_.encode(separate_text_);
        ids.insert(ids.end(), extra.begin(), extra.end());
    }
    if (static_cast<int64_t>(ids.size()) > max_length_) ids.resize(static_cast<size_t>(max_length_));  // upstream truncates
    return ids;
}

std::vector<int32_t> pi0_io::input_ids(const std::string & instruction, const float * state, int64_t n) const {
    std::vector<float> norm;
    if (template_.find("{state}") != std::string::npos) {
        if (state == nullptr) {
            fail(OMNIMODEL_ERR_INVALID_ARGUMENT, "this policy writes the robot state into its prompt: its input ids "
                                                 "come from omnimodel_prepare_inputs (input 'input_ids')");
        }
        norm = normalize_state(state, n);
    } else if (state != nullptr || n != 0) {
        normalize_state(state, n);  // checked all the same: the same state goes to predict_action
    }
    return ids_for(instruction, norm);
}

std::vector<float> pi0_io::pixel_values(const std::vector<rgb_view> & images) const {
    if (images.size() != cameras_.size()) {
        std::string names;
        for (const std::string & c : cameras_) names += (names.empty() ? "" : ", ") + c;
        fail(OMNIMODEL_ERR_SHAPE, format("this policy has %zu camera(s) (%s): pass one frame per camera, NULL data for a "
                                         "missing one; got %zu", cameras_.size(), names.c_str(), images.size()));
    }
    bool any = false;
    for (size_t i = 0; i < images.size(); ++i) {
        if (images[i].data == nullptr) continue;
        check_frame(images[i], i);
        any = true;
    }
    if (!any) fail(OMNIMODEL_ERR_INVALID_ARGUMENT, "at least one camera frame is needed (every image's data is NULL)");
    std::vector<float> out;
    out.reserve(images.size() * static_cast<size_t>(3 * image_size_ * image_size_));
    // LeRobot's order: the present cameras in configuration order, then the missing ones as -1 images
    for (const rgb_view & im : images) {
        if (im.data != nullptr) append_pi0_planes(im, image_size_, out);
    }
    for (const rgb_view & im : images) {
        if (im.data == nullptr) out.resize(out.size() + static_cast<size_t>(3 * image_size_ * image_size_), -1.0f);
    }
    return out;
}

std::vector<float> pi0_io::image_mask(const std::vector<rgb_view> & images) const {
    std::vector<float> mask;
    for (const rgb_view & im : images) {
        if (im.data != nullptr) mask.push_back(1.0f);
    }
    mask.resize(images.size(), 0.0f);
    return mask;
}

void pi0_io::set_inputs(runtime & rt, const observation & obs) const {
    const std::vector<float> norm = normalize_state(obs.state, obs.state_dim);
    const std::vector<float> pix  = pixel_values(obs.images);
    const std::vector<float> mask = image_mask(obs.images);
    const std::vector<int32_t> ids = ids_for(obs.instruction, state_input_ ? std::vector<float>{} : norm);
    const std::vector<float> noise = pi0_gaussian_noise(obs.seed, static_cast<size_t>(chunk_ * max_action_dim_));

    rt.clear_inputs();
    // ggml order (ne[0] fastest); the C API holds 4 dims, so (1, cameras, 3, S, S) drops its batch of 1
    const int64_t cams = static_cast<int64_t>(cameras_.size());
    const int64_t ne_pix[4] = {image_size_, image_size_, 3, cams};
    rt.set_input("pixel_values", pix.data(), 4, ne_pix);
    const int64_t ne_mask[2] = {cams, 1};
    rt.set_input("image_mask", mask.data(), 2, ne_mask);
    std::vector<float> fids(ids.begin(), ids.end());  // ids as floats (exact below 2^24)
    const int64_t ne_ids[2] = {static_cast<int64_t>(fids.size()), 1};
    rt.set_input("input_ids", fids.data(), 2, ne_ids);
    if (state_input_) {
        std::vector<float> padded(static_cast<size_t>(max_state_dim_), 0.0f);
        std::copy(norm.begin(), norm.end(), padded.begin());
        const int64_t ne_state[2] = {max_state_dim_, 1};
        rt.set_input("state", padded.data(), 2, ne_state);
    }
    const int64_t ne_noise[3] = {max_action_dim_, chunk_, 1};
    rt.set_input("noise", noise.data(), 3, ne_noise);
}

std::vector<float> pi0_io::postprocess(const float * normalized, size_t n) const {
    const size_t want = static_cast<size_t>(chunk_ * max_action_dim_);
    if (normalized == nullptr) fail(OMNIMODEL_ERR_INVALID_ARGUMENT, "the normalised actions are NULL");
    if (n != want) {
        fail(OMNIMODEL_ERR_SHAPE, format("the normalised actions must be chunk x max_action_dim = %lld x %lld = %zu floats, got %zu",
                                         (long long) chunk_, (long long) max_action_dim_, want, n));
    }
    std::vector<float> out;
    out.reserve(static_cast<size_t>(chunk_ * action_dim_));
    for (int64_t t = 0; t < chunk_; ++t) {
        const std::vector<float> a = action_norm_.unnormalize(normalized + t * max_action_dim_, action_dim_);
        out.insert(out.end(), a.begin(), a.end());
    }
    return out;
}

void pi0_io::predict(runtime & rt, const observation & obs, float * out, size_t capacity) const {
    const size_t n_out = static_cast<size_t>(chunk_ * action_dim_);
    if (out == nullptr) fail(OMNIMODEL_ERR_INVALID_ARGUMENT, "actions_out is NULL");
    if (capacity < n_out) {
        fail(OMNIMODEL_ERR_INVALID_ARGUMENT, format("actions_out holds %zu floats, the chunk needs %zu (%lld x %lld)", capacity,
                                                    n_out, (long long) chunk_, (long long) action_dim_));
    }
    set_inputs(rt, obs);
    rt.compute();
    const host_tensor & y = rt.result("denoised_actions");
    const std::vector<float> a = postprocess(y.data.data(), y.data.size());
    std::memcpy(out, a.data(), n_out * sizeof(float));
}

}  // namespace omni::vla
