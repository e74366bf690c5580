// What the robot-side C API (c_api_vla.cpp) asks of a VLA family: its sizes, how a raw observation
// becomes the graph's named inputs, and how the graph's output becomes robot actions.
//
// One implementation per family of robot-side preprocessing, chosen from the file's metadata by
// make_robot_io (never by architecture name): a file with "<arch>.robot.preprocess" = "pi0" gets the
// pi0 / pi0.5 path (pi0_predict.hpp), every other VLA file OpenVLA-OFT's metadata layout (predict.hpp).
#pragma once

#include "../runtime.hpp"
#include "preprocess.hpp"

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace omni::vla {

// One observation as the C API received it. An image with data == nullptr is a missing camera where
// the family allows one (pi0: masked out of attention); state may be null when state_dim is 0.
struct observation {
    std::vector<rgb_view> images;
    std::string           instruction;
    const float *         state     = nullptr;
    int64_t               state_dim = 0;
    uint64_t              seed      = 0;  // the initial noise of a flow-matching policy
};

class robot_io {
public:
    virtual ~robot_io() = default;

    virtual int64_t chunk() const          = 0;  // actions per predicted chunk
    virtual int64_t action_dim() const     = 0;  // values per action, as returned to the robot
    virtual int64_t image_size() const     = 0;  // the model's square input side
    virtual int64_t n_images() const       = 0;  // camera frames per observation
    virtual int64_t state_dim() const      = 0;  // raw robot state values (0: none)
    virtual int64_t n_action_steps() const = 0;  // actions of a chunk to execute before predicting again

    // Token ids of text, no BOS.
    virtual std::vector<int32_t> tokenize(const std::string & text) const = 0;
    // The id sequence the graph gets for an instruction (families whose prompt holds the state need it).
    virtual std::vector<int32_t> input_ids(const std::string & instruction, const float * state, int64_t state_dim) const = 0;
    // The pixel tensor the graph gets, row-major floats.
    virtual std::vector<float> pixel_values(const std::vector<rgb_view> & images) const = 0;
    // Replace rt's inputs with the graph inputs for obs (no compute).
    virtual void set_inputs(runtime & rt, const observation & obs) const = 0;
    // set_inputs, compute, and the un-normalised chunk (chunk x action_dim floats) into out.
    virtual void predict(runtime & rt, const observation & obs, float * out, size_t capacity) const = 0;
    // The graph's normalised output (as the family's graph produces it) -> robot actions; families
    // whose graph un-normalises itself refuse (UNSUPPORTED).
    virtual std::vector<float> postprocess(const float * normalized, size_t n) const = 0;
};

// The family's robot side for m, built once and kept by the caller.
std::shared_ptr<robot_io> make_robot_io(const model & m);

}  // namespace omni::vla
