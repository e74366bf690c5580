#include "predict.hpp"

#include "../check.hpp"
#include "../error.hpp"

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstring>

namespace omni::vla {

namespace {

// A prompt template is a sentence or two; far longer is a corrupt or hostile file, refused before any
// tokenizer time is spent on it.
constexpr size_t k_max_template_bytes = 4096;
// An instruction can hold at most this many bytes (UTF-8) before tokenising; the context refuses most
// much earlier, but this bounds the work whatever the vocabulary.
constexpr size_t k_max_instruction_bytes = 64 * 1024;

std::string fill_template(const std::string & tpl, const std::string & instruction) {
    // str.format with the single field {instruction}; {{ and }} are literal braces
    std::string out;
    for (size_t i = 0; i < tpl.size();) {
        if (tpl.compare(i, 13, "{instruction}") == 0) {
            out += instruction;
            i += 13;
        } else if ((tpl[i] == '{' || tpl[i] == '}') && i + 1 < tpl.size() && tpl[i + 1] == tpl[i]) {
            out += tpl[i];
            i += 2;
        } else if (tpl[i] == '{' || tpl[i] == '}') {
            fail(OMNIMODEL_ERR_FORMAT, "prompt.template has a field other than {instruction}");
        } else {
            out += tpl[i++];
        }
    }
    return out;
}

// Checked before the tokenizer is read, so a non-VLA model gets the telling error.
std::string vla_arch(const model & m) {
    if (!m.has(m.architecture() + ".num_images")) {
        fail(OMNIMODEL_ERR_UNSUPPORTED, format("architecture '%s' is not a vision-language-action model (no '%s.num_images' metadata)",
                                               m.architecture().c_str(), m.architecture().c_str()));
    }
    return m.architecture();
}

}  // namespace

state::state(const model & m) : arch(vla_arch(m)), tok(m) {
    const std::string k = arch + ".";
    // the same ranges as the generated graph: no product of them below can overflow
    n_images    = m.get_int_in(k + "num_images", 1, 16);
    image_size  = m.get_int_in(k + "image_size", 1, 4096);
    chunk       = m.get_int_in(k + "num_actions_chunk", 1, 4096);
    action_dim  = m.get_int_in(k + "action_dim", 1, 4096);
    proprio_dim = m.get_int_in(k + "proprio_dim", 0, 0, 65536);
    n_slots     = checked_mul(chunk, action_dim, 1 << 20, "num_actions_chunk x action_dim");
    context     = m.get_int_in(k + "llm.context_length", 0, 0, INT32_MAX);
    // towers: every "<arch>.vision.<name>.image_mean" in file order (the channel order of pixel_values)
    const std::string vp = k + "vision.", suffix = ".image_mean";
    for (int64_t i = 0; i < gguf_get_n_kv(m.gguf()); ++i) {
        const std::string key = gguf_get_key(m.gguf(), i);
        if (key.rfind(vp, 0) != 0 || key.size() <= vp.size() + suffix.size() ||
            key.compare(key.size() - suffix.size(), suffix.size(), suffix) != 0) {
            continue;
        }
        const std::string   base = key.substr(0, key.size() - suffix.size());
        std::vector<double> mean = m.get_f64_array(key), sd = m.get_f64_array(base + ".image_std");
        if (mean.size() != 3 || sd.size() != 3) fail(OMNIMODEL_ERR_FORMAT, base + ".image_{mean,std} must hold 3 values each");
        for (int c = 0; c < 3; ++c) {
            if (!(sd[static_cast<size_t>(c)] > 0.0)) fail(OMNIMODEL_ERR_FORMAT, base + ".image_std must be positive");
        }
        if (towers.size() >= 8) fail(OMNIMODEL_ERR_FORMAT, format("more than 8 %s*.image_mean towers", vp.c_str()));
        tower_norm t;
        for (int c = 0; c < 3; ++c) {
            t.mean[static_cast<size_t>(c)] = static_cast<float>(mean[static_cast<size_t>(c)]);
            t.std[static_cast<size_t>(c)]  = static_cast<float>(sd[static_cast<size_t>(c)]);
        }
        towers.push_back(t);
    }
    if (towers.empty()) fail(OMNIMODEL_ERR_NOT_FOUND, format("no %s*.image_mean metadata: cannot normalise images", vp.c_str()));

    prompt_template    = m.get_string(k + "prompt.template");
    if (prompt_template.size() > k_max_template_bytes) {
        fail(OMNIMODEL_ERR_FORMAT, format("%sprompt.template is %zu bytes; at most %zu are accepted", k.c_str(),
                                          prompt_template.size(), k_max_template_bytes));
    }
    lowercase          = m.get_int(k + "prompt.lowercase_instruction", 1) != 0;
    append_empty_piece = m.get_int(k + "prompt.append_empty_piece", 1) != 0;
    // ids index the embedding table; the graph checks them against it, here they must at least be ids
    const int64_t n_vocab = static_cast<int64_t>(tok.size());
    bos_id         = static_cast<int32_t>(m.get_int_in(k + "bos_token_id", m.get_int_in("tokenizer.ggml.bos_token_id", 1, 0, n_vocab - 1), 0, INT32_MAX));
    eos_id         = static_cast<int32_t>(m.get_int_in(k + "eos_token_id", m.get_int_in("tokenizer.ggml.eos_token_id", 2, 0, n_vocab - 1), 0, INT32_MAX));
    placeholder_id = static_cast<int32_t>(m.get_int_in(k + "action_placeholder_token_id", 0, INT32_MAX));
    empty_id       = static_cast<int32_t>(m.get_int_in(k + "prompt.empty_piece_id", tok.piece_id("\xE2\x96\x81"), -1, INT32_MAX));

    if (proprio_dim > 0) {
        const std::string sp = k + "norm_stats.proprio.";
        proprio_low  = m.get_f64_array(sp + "low");
        proprio_high = m.get_f64_array(sp + "high");
        std::vector<double> mask(proprio_low.size(), 1.0);
        if (m.has(sp + "mask")) mask = m.get_f64_array(sp + "mask");
        if (proprio_low.size() != static_cast<size_t>(proprio_dim) || proprio_high.size() != proprio_low.size() ||
            mask.size() != proprio_low.size()) {
            fail(OMNIMODEL_ERR_FORMAT, format("%s{low,high,mask} must hold %lld values each", sp.c_str(), (long long) proprio_dim));
        }
        for (double v : mask) proprio_mask.push_back(v != 0.0);
    }
}

std::vector<int32_t> state::prompt_ids(const std::string & instruction) const {
    if (instruction.size() > k_max_instruction_bytes) {
        fail(OMNIMODEL_ERR_INVALID_ARGUMENT, format("instruction is %zu bytes; at most %zu are accepted",
                                                    instruction.size(), k_max_instruction_bytes));
    }
    std::vector<uint32_t> cps = utf8_decode(instruction, "instruction");
    if (cps.empty() || python_is_blank(cps)) fail(OMNIMODEL_ERR_INVALID_ARGUMENT, "instruction must be a non-empty string");
    if (lowercase) cps = python_lower(cps);
    std::vector<int32_t> ids{bos_id};
    const std::string prompt = fill_template(prompt_template, utf8_encode(cps));
    // Every token covers at most max_piece_chars code points, so this many characters cannot fit the
    // context whatever they tokenise to: refused before the tokenizer runs.
    const int64_t room = context > 0 ? context - n_slots - 1 : 0;
    if (context > 0 && static_cast<int64_t>(cps.size()) > room * static_cast<int64_t>(tok.max_piece_chars())) {
        fail(OMNIMODEL_ERR_INVALID_ARGUMENT, format("instruction has %zu characters, which cannot fit the model's context "
                                                    "of %lld tokens", cps.size(), (long long) context));
    }
    const std::vector<int32_t> body = tok.encode(prompt);
    ids.insert(ids.end(), body.begin(), body.end());
    if (append_empty_piece && ids.back() != empty_id) ids.push_back(empty_id);
    return ids;
}

std::vector<int32_t> state::input_ids(const std::string & instruction) const {
    std::vector<int32_t> ids = prompt_ids(instruction);
    ids.insert(ids.end(), static_cast<size_t>(n_slots), placeholder_id);
    ids.push_back(eos_id);
    if (context > 0 && static_cast<int64_t>(ids.size()) > context) {
        fail(OMNIMODEL_ERR_INVALID_ARGUMENT, format("the instruction takes %zu tokens with the %lld action slots, more than "
                                                    "the model's context of %lld", ids.size() - static_cast<size_t>(n_slots),
                                                    (long long) n_slots, (long long) context));
    }
    return ids;
}

std::vector<float> state::normalize_proprio(const float * p, int64_t n) const {
    if (n != proprio_dim) {
        fail(OMNIMODEL_ERR_SHAPE, format("proprio has %lld values, the model expects %lld", (long long) n, (long long) proprio_dim));
    }
    std::vector<float> out(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) {
        if (!std::isfinite(p[i])) fail(OMNIMODEL_ERR_INVALID_ARGUMENT, format("proprio[%lld] is not finite", (long long) i));
        const size_t j = static_cast<size_t>(i);
        double       v = p[i];
        // clip(2 (p - low) / (high - low + 1e-8) - 1, -1, 1) on masked dims, clip(p) elsewhere
        if (proprio_mask[j]) v = 2.0 * (v - proprio_low[j]) / (proprio_high[j] - proprio_low[j] + 1e-8) - 1.0;
        out[j] = static_cast<float>(std::min(1.0, std::max(-1.0, v)));
    }
    return out;
}

std::shared_ptr<state> make_state(const runtime & rt) { return std::make_shared<state>(rt.get_model()); }

std::vector<float> pixel_values(const state & st, const std::vector<rgb_view> & images) {
    if (static_cast<int64_t>(images.size()) != st.n_images) {
        fail(OMNIMODEL_ERR_SHAPE, format("this model takes %lld image(s) per observation (third-person first, then wrist), got %zu",
                                         (long long) st.n_images, images.size()));
    }
    for (size_t i = 0; i < images.size(); ++i) {
        const rgb_view & im = images[i];
        if (im.data == nullptr) fail(OMNIMODEL_ERR_INVALID_ARGUMENT, format("image %zu: data is NULL", i));
        if (im.width <= 0 || im.height <= 0) {
            fail(OMNIMODEL_ERR_SHAPE, format("image %zu: size %lldx%lld is empty", i, (long long) im.width, (long long) im.height));
        }
        if (im.stride < 3 * im.width) {
            fail(OMNIMODEL_ERR_INVALID_ARGUMENT, format("image %zu: stride %lld is less than 3 * width (%lld)", i,
                                                        (long long) im.stride, (long long) (3 * im.width)));
        }
    }
    std::vector<float> pix;
    // bounded by the metadata ranges (16 images, 8 towers, 4096^2 pixels): int64 cannot overflow
    const int64_t planes = st.n_images * 3 * static_cast<int64_t>(st.towers.size());
    pix.reserve(static_cast<size_t>(checked_mul(planes, checked_mul(st.image_size, st.image_size, INT64_MAX, "image_size^2"),
                                                INT64_MAX, "pixel values")));
    for (const rgb_view & im : images) append_pixel_planes(im, st.image_size, st.towers, pix);
    return pix;
}

void set_inputs(runtime & rt, const state & st, const std::vector<rgb_view> & images, const std::string & instruction,
                const float * proprio, int64_t proprio_dim) {
    const std::vector<float> pix = pixel_values(st, images);
    std::vector<float> prop;
    if (st.proprio_dim > 0) {
        if (proprio == nullptr) {
            fail(OMNIMODEL_ERR_INVALID_ARGUMENT, format("this model needs a %lld-D proprio state", (long long) st.proprio_dim));
        }
        prop = st.normalize_proprio(proprio, proprio_dim);
    } else if (proprio != nullptr && proprio_dim > 0) {
        fail(OMNIMODEL_ERR_SHAPE, "this model takes no proprio state: pass NULL and 0");
    }
    const std::vector<int32_t> ids = st.input_ids(instruction);

    rt.clear_inputs();
    const int64_t ne_pix[4] = {st.image_size, st.image_size, 3 * static_cast<int64_t>(st.towers.size()) * st.n_images, 1};
    rt.set_input("pixel_values", pix.data(), 4, ne_pix);
    std::vector<float> fids(ids.begin(), ids.end());  // the graph takes ids as floats (exact below 2^24)
    const int64_t ne_ids[2] = {static_cast<int64_t>(fids.size()), 1};
    rt.set_input("input_ids", fids.data(), 2, ne_ids);
    if (!prop.empty()) {
        const int64_t ne_p[2] = {static_cast<int64_t>(prop.size()), 1};
        rt.set_input("proprio", prop.data(), 2, ne_p);
    }
}

void predict_action(runtime & rt, const state & st, const std::vector<rgb_view> & images, const std::string & instruction,
                    const float * proprio, int64_t proprio_dim, float * actions_out, size_t capacity) {
    const size_t n_out = static_cast<size_t>(st.n_slots);
    if (actions_out == nullptr) fail(OMNIMODEL_ERR_INVALID_ARGUMENT, "actions_out is NULL");
    if (capacity < n_out) {
        fail(OMNIMODEL_ERR_INVALID_ARGUMENT, format("actions_out holds %zu floats, the chunk needs %zu (%lld x %lld)", capacity,
                                                    n_out, (long long) st.chunk, (long long) st.action_dim));
    }
    set_inputs(rt, st, images, instruction, proprio, proprio_dim);
    rt.compute();
    const std::vector<std::string> & names = rt.result_names();
    // without action statistics in the file the graph has no "actions": return the head's output
    const bool has_actions = std::find(names.begin(), names.end(), "actions") != names.end();
    const host_tensor & a  = rt.result(has_actions ? "actions" : "normalized_actions");
    if (a.data.size() != n_out) {
        fail(OMNIMODEL_ERR_INTERNAL, format("the graph produced %zu action values, expected %zu", a.data.size(), n_out));
    }
    std::memcpy(actions_out, a.data.data(), n_out * sizeof(float));
}

}  // namespace omni::vla
