// Robot-side inference: raw camera images + instruction + raw proprio -> un-normalised action chunk,
// everything (tokenisation, image preprocessing, proprio normalisation) in C++.
//
// Generic over VLA exports that follow openvla-oft's metadata layout under "<arch>.": num_images,
// image_size, num_actions_chunk, action_dim, proprio_dim, vision.<tower>.image_{mean,std} (towers in
// file order), prompt.*, the token ids, and norm_stats.proprio.{low,high,mask}. What is OFT-specific
// is the text sequence: BOS + prompt + "▁", then chunk * action_dim placeholders and EOS.
#pragma once

#include "../runtime.hpp"
#include "preprocess.hpp"
#include "tokenizer.hpp"

#include <memory>
#include <string>
#include <vector>

namespace omni::vla {

struct state {
    explicit state(const model & m);

    std::string             arch;
    int64_t                 n_images = 0, image_size = 0, chunk = 0, action_dim = 0, proprio_dim = 0;
    int64_t                 n_slots = 0;  // chunk * action_dim, the action placeholders
    int64_t                 context = 0;  // the language model's context (llm.context_length), 0 when unknown
    std::vector<tower_norm> towers;
    tokenizer               tok;
    std::string             prompt_template;
    bool                    lowercase = true, append_empty_piece = true;
    int32_t                 bos_id = 1, eos_id = 2, empty_id = -1, placeholder_id = 0;
    std::vector<double>     proprio_low, proprio_high;
    std::vector<int32_t>    proprio_mask;

    // BOS + tokens of the filled-in prompt (+ "▁"), as PromptTokenizer.encode_prompt.
    std::vector<int32_t> prompt_ids(const std::string & instruction) const;
    // prompt_ids + action placeholders + EOS, as OpenVLAOFT.full_input_ids.
    std::vector<int32_t> input_ids(const std::string & instruction) const;
    // Raw -> normalised proprio, float64 then float32, as normalization.normalize_proprio.
    std::vector<float> normalize_proprio(const float * proprio, int64_t n) const;
};

// The state for rt's model, built once and kept by the caller.
std::shared_ptr<state> make_state(const runtime & rt);

// Checks the frames (count, size, stride) and builds pixel_values (1, 3 * towers * images, S, S).
std::vector<float> pixel_values(const state & st, const std::vector<rgb_view> & images);

// Sets the graph inputs (replacing any set before).
void set_inputs(runtime & rt, const state & st, const std::vector<rgb_view> & images, const std::string & instruction,
                const float * proprio, int64_t proprio_dim);

// set_inputs, computes, copies (chunk, action_dim) floats.
void predict_action(runtime & rt, const state & st, const std::vector<rgb_view> & images, const std::string & instruction,
                    const float * proprio, int64_t proprio_dim, float * actions_out, size_t capacity);

}  // namespace omni::vla
