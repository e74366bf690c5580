// The robot-side C entry points (omnimodel.h, "robot side" section): the same boundary rules as
// c_api.cpp -- every call catches everything and returns a status with a message in
// omnimodel_last_error(ctx). The family's robot_io (chosen from the file's metadata) does the work.
#include "omnimodel.h"

#include "../c_context.hpp"
#include "../error.hpp"
#include "robot_io.hpp"

#include <cstring>
#include <new>

namespace {

template <typename F>
omnimodel_status guarded_vla(omnimodel_context * ctx, F && f) {
    if (ctx == nullptr) return OMNIMODEL_ERR_INVALID_ARGUMENT;
    return omni::guarded(ctx->last_error, std::forward<F>(f));
}

// Built on first use, so plain (non-VLA) models load without any of this metadata.
const omni::vla::robot_io & vla_io(omnimodel_context * ctx) {
    if (!ctx->vla) ctx->vla = omni::vla::make_robot_io(ctx->rt->get_model());
    return *ctx->vla;
}

int32_t query(omnimodel_context * ctx, int64_t (omni::vla::robot_io::*field)() const) {
    int32_t out = -1;
    guarded_vla(ctx, [&] { out = static_cast<int32_t>((vla_io(ctx).*field)()); });
    return out;
}

// Frames as the C API got them; data == NULL passes through (a missing camera where the family allows one).
std::vector<omni::vla::rgb_view> views(const omnimodel_image * images, int32_t n_images) {
    if (n_images < 0) omni::fail(OMNIMODEL_ERR_INVALID_ARGUMENT, "n_images is negative");
    if (n_images > 0 && images == nullptr) omni::fail(OMNIMODEL_ERR_INVALID_ARGUMENT, "images is NULL");
    std::vector<omni::vla::rgb_view> v(static_cast<size_t>(n_images));
    for (int32_t i = 0; i < n_images; ++i) {
        const omnimodel_image & im = images[i];
        v[static_cast<size_t>(i)]  = {im.data, im.width, im.height,
                                      im.stride == 0 ? 3 * static_cast<int64_t>(im.width) : im.stride};
    }
    return v;
}

omni::vla::observation make_observation(const omnimodel_image * images, int32_t n_images, const char * instruction,
                                        const float * state, int32_t state_dim, uint64_t seed) {
    if (instruction == nullptr) omni::fail(OMNIMODEL_ERR_INVALID_ARGUMENT, "instruction is NULL");
    if (state_dim < 0) omni::fail(OMNIMODEL_ERR_INVALID_ARGUMENT, "the state dimension is negative");
    omni::vla::observation obs;
    obs.images      = views(images, n_images);
    obs.instruction = instruction;
    obs.state       = state;
    obs.state_dim   = state_dim;
    obs.seed        = seed;
    return obs;
}

template <typename T>
void copy_out(const std::vector<T> & src, T * dst, size_t capacity, size_t * n_out, const char * what) {
    if (n_out == nullptr) omni::fail(OMNIMODEL_ERR_INVALID_ARGUMENT, "the count pointer is NULL");
    *n_out = src.size();
    if (capacity < src.size()) {
        omni::fail(OMNIMODEL_ERR_INVALID_ARGUMENT, omni::format("%zu %s do not fit in capacity %zu", src.size(), what, capacity));
    }
    if (!src.empty()) {
        if (dst == nullptr) omni::fail(OMNIMODEL_ERR_INVALID_ARGUMENT, "the output pointer is NULL");
        std::memcpy(dst, src.data(), src.size() * sizeof(T));
    }
}

}  // namespace

extern "C" {

int32_t omnimodel_chunk_length(omnimodel_context * ctx) { return query(ctx, &omni::vla::robot_io::chunk); }
int32_t omnimodel_action_dim(omnimodel_context * ctx) { return query(ctx, &omni::vla::robot_io::action_dim); }
int32_t omnimodel_image_size(omnimodel_context * ctx) { return query(ctx, &omni::vla::robot_io::image_size); }
int32_t omnimodel_n_images(omnimodel_context * ctx) { return query(ctx, &omni::vla::robot_io::n_images); }
int32_t omnimodel_proprio_dim(omnimodel_context * ctx) { return query(ctx, &omni::vla::robot_io::state_dim); }
int32_t omnimodel_n_action_steps(omnimodel_context * ctx) { return query(ctx, &omni::vla::robot_io::n_action_steps); }

omnimodel_status omnimodel_predict_action(omnimodel_context * ctx, const omnimodel_image * images, int32_t n_images,
                                          const char * instruction, const float * proprio, int32_t proprio_dim,
                                          float * actions_out, size_t capacity) {
    return omnimodel_predict_action_seeded(ctx, images, n_images, instruction, proprio, proprio_dim, 0, actions_out, capacity);
}

omnimodel_status omnimodel_predict_action_seeded(omnimodel_context * ctx, const omnimodel_image * images, int32_t n_images,
                                                 const char * instruction, const float * state, int32_t state_dim,
                                                 uint64_t seed, float * actions_out, size_t capacity) {
    return guarded_vla(ctx, [&] {
        const omni::vla::observation obs = make_observation(images, n_images, instruction, state, state_dim, seed);
        vla_io(ctx).predict(*ctx->rt, obs, actions_out, capacity);
    });
}

omnimodel_status omnimodel_prepare_inputs(omnimodel_context * ctx, const omnimodel_image * images, int32_t n_images,
                                          const char * instruction, const float * state, int32_t state_dim, uint64_t seed) {
    return guarded_vla(ctx, [&] {
        const omni::vla::observation obs = make_observation(images, n_images, instruction, state, state_dim, seed);
        vla_io(ctx).set_inputs(*ctx->rt, obs);
    });
}

omnimodel_status omnimodel_get_input(omnimodel_context * ctx, const char * name, float * dst, size_t capacity,
                                     int32_t * n_dims, int64_t ne[OMNIMODEL_MAX_DIMS]) {
    return guarded_vla(ctx, [&] {
        if (name == nullptr) omni::fail(OMNIMODEL_ERR_INVALID_ARGUMENT, "name is NULL");
        const omni::host_tensor * t = ctx->rt->input(name);
        if (t == nullptr) omni::fail(OMNIMODEL_ERR_NOT_FOUND, omni::format("no input named '%s' is set", name));
        if (n_dims != nullptr) *n_dims = t->n_dims;
        if (ne != nullptr) {
            for (int i = 0; i < OMNIMODEL_MAX_DIMS; ++i) ne[i] = t->ne[static_cast<size_t>(i)];
        }
        if (capacity == 0 && dst == nullptr) return;  // a shape query
        size_t n = 0;
        copy_out(t->data, dst, capacity, &n, "input values");
    });
}

omnimodel_status omnimodel_postprocess_actions(omnimodel_context * ctx, const float * normalized, size_t n_values,
                                               float * actions_out, size_t capacity, size_t * n_actions) {
    return guarded_vla(ctx, [&] {
        copy_out(vla_io(ctx).postprocess(normalized, n_values), actions_out, capacity, n_actions, "action values");
    });
}

omnimodel_status omnimodel_tokenize(omnimodel_context * ctx, const char * text, int32_t * ids, size_t capacity,
                                    size_t * n_ids) {
    return guarded_vla(ctx, [&] {
        if (text == nullptr) omni::fail(OMNIMODEL_ERR_INVALID_ARGUMENT, "text is NULL");
        copy_out(vla_io(ctx).tokenize(text), ids, capacity, n_ids, "token ids");
    });
}

omnimodel_status omnimodel_input_ids(omnimodel_context * ctx, const char * instruction, int32_t * ids, size_t capacity,
                                     size_t * n_ids) {
    return guarded_vla(ctx, [&] {
        if (instruction == nullptr) omni::fail(OMNIMODEL_ERR_INVALID_ARGUMENT, "instruction is NULL");
        copy_out(vla_io(ctx).input_ids(instruction, nullptr, 0), ids, capacity, n_ids, "token ids");
    });
}

omnimodel_status omnimodel_preprocess_images(omnimodel_context * ctx, const omnimodel_image * images, int32_t n_images,
                                             float * pixels, size_t capacity, size_t * n_values) {
    return guarded_vla(ctx, [&] {
        copy_out(vla_io(ctx).pixel_values(views(images, n_images)), pixels, capacity, n_values, "pixel values");
    });
}

}  // extern "C"
