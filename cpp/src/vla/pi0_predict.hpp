// pi0 / pi0.5 on the robot side: raw camera frames + instruction + raw state -> the flow-matching
// graph's inputs, and its denoised output -> un-normalised robot actions, all from the metadata that
// python/omnimodel/arch/pi0/gguf_meta.py writes under "<arch>.robot.".
//
// Mirrors python/omnimodel/arch/pi0 (policy.prepare_inputs): the state normalised with the stored
// statistics (LeRobot's formulas, eps outside, or openpi's, eps inside); the prompt built and tokenised
// with the stored SentencePiece vocabulary (pi0.5 writes the state, discretised into 256 bins over
// [-1, 1], into it); frames resized with padding (bilinear, torch's align_corners=False) and mapped
// to [-1, 1], missing cameras appended as -1 images with mask 0; the initial noise drawn from a seed
// by policy.gaussian_noise's generator (SplitMix64 + Box-Muller in double, bit-equal); the output cut
// to action_dim and un-normalised. Graph inputs (templates/archs/pi0.cpp.j2's contract), float32, PyTorch shapes:
//   pixel_values (1, cameras, 3, S, S)   image_mask (1, cameras)   input_ids (1, L)
//   state (1, max_state_dim) (pi0 only)  noise (1, chunk, max_action_dim)
// and the output denoised_actions (1, chunk, max_action_dim).
#pragma once

#include "../model.hpp"
#include "preprocess.hpp"
#include "robot_io.hpp"
#include "tokenizer.hpp"

#include <cstdint>
#include <string>
#include <vector>

namespace omni::vla {

// policy.gaussian_noise: n standard normal floats from seed.
std::vector<float> pi0_gaussian_noise(uint64_t seed, size_t n);

// preprocess.resize_with_pad then x * 2 - 1: (3, size, size) planes of one frame, appended to out.
void append_pi0_planes(const rgb_view & img, int64_t size, std::vector<float> & out);

// One feature's (de)normalisation, normalization.FeatureStats.
struct feature_norm {
    enum kind_t { IDENTITY, MEAN_STD, MIN_MAX, QUANTILES } kind = IDENTITY;  // QUANTILE10 uses QUANTILES' formulas
    bool               openpi = false;  // eps inside both directions
    float              eps    = 0.0f;
    std::vector<float> a, b;  // mean / std, or low / high
    int64_t            dim = 0;

    void load(const model & m, const std::string & key, int64_t dim);
    std::vector<float> normalize(const float * x, int64_t n) const;
    std::vector<float> unnormalize(const float * x, int64_t n) const;
};

class pi0_io final : public robot_io {
public:
    explicit pi0_io(const model & m);

    int64_t chunk() const override { return chunk_; }
    int64_t action_dim() const override { return action_dim_; }
    int64_t image_size() const override { return image_size_; }
    int64_t n_images() const override { return static_cast<int64_t>(cameras_.size()); }
    int64_t state_dim() const override { return state_dim_; }
    int64_t n_action_steps() const override { return n_action_steps_; }

    std::vector<int32_t> tokenize(const std::string & text) const override { return tok_.encode(text); }
    std::vector<int32_t> input_ids(const std::string & instruction, const float * state, int64_t n) const override;
    std::vector<float>   pixel_values(const std::vector<rgb_view> & images) const override;
    void                 set_inputs(runtime & rt, const observation & obs) const override;
    void                 predict(runtime & rt, const observation & obs, float * out, size_t capacity) const override;
    std::vector<float>   postprocess(const float * normalized, size_t n) const override;

    // The text tokenised for the prompt (tokenizer.prompt_text), from the normalised state.
    std::string prompt_text(const std::string & instruction, const std::vector<float> & norm_state) const;
    std::vector<float> normalize_state(const float * state, int64_t n) const;
    std::vector<float> image_mask(const std::vector<rgb_view> & images) const;

private:
    std::vector<int32_t> ids_for(const std::string & instruction, const std::vector<float> & norm_state) const;

    std::string              prefix_;  // "<arch>.robot."
    std::vector<std::string> cameras_;
    int64_t image_size_ = 0, state_dim_ = 0, action_dim_ = 0, max_state_dim_ = 0, max_action_dim_ = 0, chunk_ = 0,
            n_action_steps_ = 0, state_bins_ = 256, max_length_ = 0;
    bool         state_input_ = false, clean_task_ = false, append_newline_ = false;
    std::string  template_, separate_text_;
    int32_t      bos_id_ = 2;
    feature_norm state_norm_, action_norm_;
    tokenizer    tok_;
};

}  // namespace omni::vla
