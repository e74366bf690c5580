// The dispatch of robot_io.hpp, and OpenVLA-OFT's metadata layout (predict.hpp) behind the interface.
#include "robot_io.hpp"

#include "../error.hpp"
#include "pi0_predict.hpp"
#include "predict.hpp"

#include <cstring>

namespace omni::vla {

namespace {

// OpenVLA-OFT's layout: the graph un-normalises, the whole chunk is executed, the state (proprio) is
// not part of the prompt and the noise seed means nothing.
class oft_io final : public robot_io {
public:
    explicit oft_io(const model & m) : st_(m) {}

    int64_t chunk() const override { return st_.chunk; }
    int64_t action_dim() const override { return st_.action_dim; }
    int64_t image_size() const override { return st_.image_size; }
    int64_t n_images() const override { return st_.n_images; }
    int64_t state_dim() const override { return st_.proprio_dim; }
    int64_t n_action_steps() const override { return st_.chunk; }

    std::vector<int32_t> tokenize(const std::string & text) const override { return st_.tok.encode(text); }
    std::vector<int32_t> input_ids(const std::string & instruction, const float *, int64_t) const override {
        return st_.input_ids(instruction);
    }
    std::vector<float> pixel_values(const std::vector<rgb_view> & images) const override {
        return vla::pixel_values(st_, images);
    }
    void set_inputs(runtime & rt, const observation & obs) const override {
        vla::set_inputs(rt, st_, obs.images, obs.instruction, obs.state, obs.state_dim);
    }
    void predict(runtime & rt, const observation & obs, float * out, size_t capacity) const override {
        predict_action(rt, st_, obs.images, obs.instruction, obs.state, obs.state_dim, out, capacity);
    }
    std::vector<float> postprocess(const float *, size_t) const override {
        fail(OMNIMODEL_ERR_UNSUPPORTED, format("'%s' un-normalises its actions inside the graph: there is nothing to post-process",
                                               st_.arch.c_str()));
    }

private:
    state st_;
};

}  // namespace

std::shared_ptr<robot_io> make_robot_io(const model & m) {
    const std::string key = m.architecture() + ".robot.preprocess";
    if (m.has(key)) {
        const std::string kind = m.get_string(key);
        if (kind == "pi0") return std::make_shared<pi0_io>(m);
        fail(OMNIMODEL_ERR_UNSUPPORTED, format("%s is '%s': this runtime knows the robot-side preprocessing 'pi0' only",
                                               key.c_str(), kind.c_str()));
    }
    return std::make_shared<oft_io>(m);
}

}  // namespace omni::vla
