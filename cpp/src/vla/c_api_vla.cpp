// The robot-side C entry points (omnimodel.h, "robot side" section): the same boundary rules as
// c_api.cpp -- every call catches everything and returns a status with a message in
// omnimodel_last_error(ctx).
#include "omnimodel.h"

#include "../c_context.hpp"
#include "../error.hpp"
#include "predict.hpp"

#include <cstring>
#include <new>

namespace {

template <typename F>
omnimodel_status guarded_vla(omnimodel_context * ctx, F && f) {
    if (ctx == nullptr) return OMNIMODEL_ERR_INVALID_ARGUMENT;
    return omni::guarded(ctx->last_error, std::forward<F>(f));
}

// Built on first use, so plain (non-VLA) models load without any of this metadata.
const omni::vla::state & vla_state(omnimodel_context * ctx) {
    if (!ctx->vla) ctx->vla = omni::vla::make_state(*ctx->rt);
    return *ctx->vla;
}

int32_t query(omnimodel_context * ctx, int64_t omni::vla::state::*field) {
    int32_t out = -1;
    guarded_vla(ctx, [&] { out = static_cast<int32_t>(vla_state(ctx).*field); });
    return out;
}

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

int32_t omnimodel_chunk_length(omnimodel_context * ctx) { return query(ctx, &omni::vla::state::chunk); }
int32_t omnimodel_action_dim(omnimodel_context * ctx) { return query(ctx, &omni::vla::state::action_dim); }
int32_t omnimodel_image_size(omnimodel_context * ctx) { return query(ctx, &omni::vla::state::image_size); }
int32_t omnimodel_n_images(omnimodel_context * ctx) { return query(ctx, &omni::vla::state::n_images); }
int32_t omnimodel_proprio_dim(omnimodel_context * ctx) { return query(ctx, &omni::vla::state::proprio_dim); }

omnimodel_status omnimodel_predict_action(omnimodel_context * ctx, const omnimodel_image * images, int32_t n_images,
                                          const char * instruction, const float * proprio, int32_t proprio_dim,
                                          float * actions_out, size_t capacity) {
    return guarded_vla(ctx, [&] {
        if (instruction == nullptr) omni::fail(OMNIMODEL_ERR_INVALID_ARGUMENT, "instruction is NULL");
        if (proprio_dim < 0) omni::fail(OMNIMODEL_ERR_INVALID_ARGUMENT, "proprio_dim is negative");
        omni::vla::predict_action(*ctx->rt, vla_state(ctx), views(images, n_images), instruction, proprio, proprio_dim,
                                  actions_out, capacity);
    });
}

omnimodel_status omnimodel_tokenize(omnimodel_context * ctx, const char * text, int32_t * ids, size_t capacity,
                                    size_t * n_ids) {
    return guarded_vla(ctx, [&] {
        if (text == nullptr) omni::fail(OMNIMODEL_ERR_INVALID_ARGUMENT, "text is NULL");
        copy_out(vla_state(ctx).tok.encode(text), ids, capacity, n_ids, "token ids");
    });
}

omnimodel_status omnimodel_input_ids(omnimodel_context * ctx, const char * instruction, int32_t * ids, size_t capacity,
                                     size_t * n_ids) {
    return guarded_vla(ctx, [&] {
        if (instruction == nullptr) omni::fail(OMNIMODEL_ERR_INVALID_ARGUMENT, "instruction is NULL");
        copy_out(vla_state(ctx).input_ids(instruction), ids, capacity, n_ids, "token ids");
    });
}

omnimodel_status omnimodel_preprocess_images(omnimodel_context * ctx, const omnimodel_image * images, int32_t n_images,
                                             float * pixels, size_t capacity, size_t * n_values) {
    return guarded_vla(ctx, [&] {
        copy_out(omni::vla::pixel_values(vla_state(ctx), views(images, n_images)), pixels, capacity, n_values, "pixel values");
    });
}

}  // extern "C"
