/*
 * The misuse catalogue in C: every call a careless or hostile C caller can make, and the status the
 * header promises for it. Built with the sanitizer build (docs/building.md) so that a call that
 * "works" by reading freed or out-of-bounds memory is caught too.
 *
 *   omnimodel_c_api_tests TOY.gguf [VLA.gguf PLUGIN.so]
 *
 * TOY is an omni-mlp file whose input "x" has width 256 (omnimodel.fuzz.misuse.toy_env writes one);
 * VLA an openvla-oft file with its generated graph. Ends with "N passed, N failed".
 */
#include "omnimodel.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int g_passed = 0, g_failed = 0;

#define CHECK(cond, ...)                                        \
    do {                                                        \
        if (cond) {                                             \
            ++g_passed;                                         \
        } else {                                                \
            ++g_failed;                                         \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__); \
            fprintf(stderr, __VA_ARGS__);                       \
            fprintf(stderr, "\n");                              \
        }                                                       \
    } while (0)

static omnimodel_context * load(const char * path) {
    struct omnimodel_params p = omnimodel_default_params();
    p.n_threads = 1;
    omnimodel_context * ctx = NULL;
    if (omnimodel_load(path, p, &ctx) != OMNIMODEL_OK) {
        fprintf(stderr, "cannot load %s: %s\n", path, omnimodel_last_error(NULL));
        exit(2);
    }
    return ctx;
}

static void load_params(const char * toy) {
    omnimodel_context * ctx = (omnimodel_context *) 0x1;
    struct omnimodel_params p = omnimodel_default_params();
    p.backend = (omnimodel_backend) 77;
    CHECK(omnimodel_load(toy, p, &ctx) == OMNIMODEL_ERR_INVALID_ARGUMENT && ctx == NULL, "backend 77 loaded");
    p = omnimodel_default_params();
    p.gpu_device = -5;
    CHECK(omnimodel_load(toy, p, &ctx) == OMNIMODEL_ERR_INVALID_ARGUMENT && ctx == NULL, "gpu_device -5 loaded");
    p = omnimodel_default_params();
    p.n_threads = INT32_MAX;
    CHECK(omnimodel_load(toy, p, &ctx) == OMNIMODEL_ERR_INVALID_ARGUMENT && ctx == NULL, "n_threads INT32_MAX loaded");
    CHECK(omnimodel_load(NULL, omnimodel_default_params(), &ctx) == OMNIMODEL_ERR_INVALID_ARGUMENT, "NULL path");
    CHECK(omnimodel_load(toy, omnimodel_default_params(), NULL) == OMNIMODEL_ERR_INVALID_ARGUMENT, "NULL out_ctx");
    CHECK(omnimodel_load("", omnimodel_default_params(), &ctx) == OMNIMODEL_ERR_IO && ctx == NULL, "empty path");
    CHECK(strlen(omnimodel_last_error(NULL)) > 0, "no message for a failed load");
}

static void null_context(void) {
    CHECK(omnimodel_compute(NULL) == OMNIMODEL_ERR_INVALID_ARGUMENT, "compute(NULL)");
    CHECK(omnimodel_set_n_threads(NULL, 1) == OMNIMODEL_ERR_INVALID_ARGUMENT, "set_n_threads(NULL)");
    CHECK(omnimodel_set_input(NULL, "x", NULL, 1, NULL) == OMNIMODEL_ERR_INVALID_ARGUMENT, "set_input(NULL)");
    CHECK(omnimodel_chunk_length(NULL) == -1, "chunk_length(NULL)");
    CHECK(omnimodel_n_results(NULL) == 0 && omnimodel_result_name(NULL, 0) == NULL, "results of NULL");
    CHECK(strcmp(omnimodel_architecture(NULL), "") == 0, "architecture(NULL)");
    omnimodel_free(NULL);
}

static void inputs(omnimodel_context * ctx) {
    float data[16] = {0};
    const int64_t wraps[][4] = {{INT64_C(1) << 32, INT64_C(1) << 32, 1, 1},
                                {INT64_C(1) << 40, INT64_C(1) << 40, INT64_C(1) << 40, INT64_C(1) << 40},
                                {INT64_MAX, 2, 1, 1}, {0, 4, 1, 1}, {-1, 4, 1, 1}};
    for (size_t i = 0; i < sizeof wraps / sizeof wraps[0]; ++i) {
        CHECK(omnimodel_set_input(ctx, "x", data, 4, wraps[i]) == OMNIMODEL_ERR_SHAPE, "dims case %zu accepted", i);
    }
    const int64_t one[4] = {4, 1, 1, 1};
    CHECK(omnimodel_set_input(ctx, "x", data, 9, one) == OMNIMODEL_ERR_INVALID_ARGUMENT, "n_dims 9");
    CHECK(omnimodel_set_input(ctx, "x", data, 0, one) == OMNIMODEL_ERR_INVALID_ARGUMENT, "n_dims 0");
    CHECK(omnimodel_set_input(ctx, "x", NULL, 1, one) == OMNIMODEL_ERR_INVALID_ARGUMENT, "NULL data");
    CHECK(omnimodel_set_input(ctx, "x", data, 1, NULL) == OMNIMODEL_ERR_INVALID_ARGUMENT, "NULL ne");
    CHECK(omnimodel_set_input(ctx, NULL, data, 1, one) == OMNIMODEL_ERR_INVALID_ARGUMENT, "NULL name");
    CHECK(omnimodel_set_input(ctx, "", data, 1, one) == OMNIMODEL_ERR_INVALID_ARGUMENT, "empty name");
    data[2] = NAN;
    CHECK(omnimodel_set_input(ctx, "x", data, 1, one) == OMNIMODEL_ERR_INVALID_ARGUMENT, "NaN input");
    data[2] = INFINITY;
    CHECK(omnimodel_set_input(ctx, "x", data, 1, one) == OMNIMODEL_ERR_INVALID_ARGUMENT, "inf input");
    CHECK(omnimodel_clear_inputs(ctx) == OMNIMODEL_OK, "clear_inputs");
    CHECK(omnimodel_compute(ctx) == OMNIMODEL_ERR_NOT_FOUND, "compute without inputs");
    CHECK(omnimodel_set_input(ctx, "x", data, 1, one) != OMNIMODEL_OK || omnimodel_compute(ctx) != OMNIMODEL_OK,
          "a width-4 input into a width-256 model computed");
}

static void threads_and_compute(omnimodel_context * ctx) {
    CHECK(omnimodel_set_n_threads(ctx, INT32_MAX) == OMNIMODEL_ERR_INVALID_ARGUMENT, "INT32_MAX threads");
    CHECK(omnimodel_set_n_threads(ctx, 513) == OMNIMODEL_ERR_INVALID_ARGUMENT, "513 threads");
    CHECK(omnimodel_set_n_threads(ctx, INT32_MIN) == OMNIMODEL_OK, "INT32_MIN threads (= all)");
    CHECK(omnimodel_set_n_threads(ctx, 1) == OMNIMODEL_OK, "1 thread");
    float * x = calloc(256 * 3, sizeof *x);
    for (int i = 0; i < 256 * 3; ++i) x[i] = (float) (i % 11) * 0.1f - 0.5f;
    const int64_t ne[4] = {256, 3, 1, 1};
    CHECK(omnimodel_set_input(ctx, "x", x, 2, ne) == OMNIMODEL_OK, "set_input: %s", omnimodel_last_error(ctx));
    CHECK(omnimodel_set_capture(ctx, NULL, 2) == OMNIMODEL_ERR_INVALID_ARGUMENT, "NULL capture names");
    CHECK(omnimodel_compute(ctx) == OMNIMODEL_OK, "compute: %s", omnimodel_last_error(ctx));
    int32_t n_dims = 0;
    int64_t rne[OMNIMODEL_MAX_DIMS];
    CHECK(omnimodel_result_shape(ctx, "out", &n_dims, rne) == OMNIMODEL_OK, "result_shape");
    const size_t n = (size_t) (rne[0] * rne[1] * rne[2] * rne[3]);
    float * out = calloc(n, sizeof *out);
    CHECK(omnimodel_result_get(ctx, "out", out, n - 1) == OMNIMODEL_ERR_INVALID_ARGUMENT, "capacity n-1");
    CHECK(omnimodel_result_get(ctx, "out", NULL, n) == OMNIMODEL_ERR_INVALID_ARGUMENT, "NULL dst");
    CHECK(omnimodel_result_get(ctx, "nope", out, n) == OMNIMODEL_ERR_NOT_FOUND, "unknown result");
    CHECK(omnimodel_result_get(ctx, "out", out, n) == OMNIMODEL_OK, "result_get");
    int finite = 1;
    for (size_t i = 0; i < n; ++i) finite &= isfinite(out[i]) != 0;
    CHECK(finite, "non-finite output with OK");
    CHECK(omnimodel_get_tensor_info(ctx, -1, NULL) == OMNIMODEL_ERR_INVALID_ARGUMENT, "tensor_info NULL");
    struct omnimodel_tensor_info ti;
    CHECK(omnimodel_get_tensor_info(ctx, 1 << 30, &ti) == OMNIMODEL_ERR_NOT_FOUND, "tensor_info out of range");
    CHECK(omnimodel_result_name(ctx, 1u << 30) == NULL, "result_name out of range");
    free(x), free(out);
}

static void vla(const char * path, const char * plugin) {
    CHECK(omnimodel_load_plugin(plugin) == OMNIMODEL_OK, "plugin: %s", omnimodel_last_error(NULL));
    omnimodel_context * ctx = load(path);
    const int32_t chunk = omnimodel_chunk_length(ctx), dim = omnimodel_action_dim(ctx);
    const int32_t size = omnimodel_image_size(ctx), n_img = omnimodel_n_images(ctx), n_prop = omnimodel_proprio_dim(ctx);
    CHECK(chunk > 0 && dim > 0 && size > 0 && n_img > 0 && n_prop >= 0, "VLA queries");
    uint8_t * px = calloc((size_t) size * size * 3, 1);
    omnimodel_image imgs[16];
    for (int i = 0; i < n_img && i < 16; ++i) imgs[i] = (omnimodel_image){px, size, size, 0};
    float prop[64] = {0}, out[4096];
    const size_t cap = (size_t) chunk * dim;
    float * pp = n_prop ? prop : NULL;
    CHECK(omnimodel_predict_action(ctx, imgs, n_img, "put the bowl on the plate", pp, n_prop, out, cap) == OMNIMODEL_OK,
          "predict_action: %s", omnimodel_last_error(ctx));
    CHECK(omnimodel_predict_action(ctx, NULL, 0, "go", pp, n_prop, out, cap) == OMNIMODEL_ERR_SHAPE, "no images");
    CHECK(omnimodel_predict_action(ctx, imgs, -3, "go", pp, n_prop, out, cap) == OMNIMODEL_ERR_INVALID_ARGUMENT, "n_images -3");
    CHECK(omnimodel_predict_action(ctx, imgs, n_img, "\xff\xfe", pp, n_prop, out, cap) == OMNIMODEL_ERR_INVALID_ARGUMENT, "non-UTF-8");
    CHECK(omnimodel_predict_action(ctx, imgs, n_img, "", pp, n_prop, out, cap) == OMNIMODEL_ERR_INVALID_ARGUMENT, "empty");
    CHECK(omnimodel_predict_action(ctx, imgs, n_img, "go", pp, n_prop, out, 0) == OMNIMODEL_ERR_INVALID_ARGUMENT, "capacity 0");
    CHECK(omnimodel_predict_action(ctx, imgs, n_img, NULL, pp, n_prop, out, cap) == OMNIMODEL_ERR_INVALID_ARGUMENT, "NULL text");
    omnimodel_image bad = {px, size, size, 1};
    omnimodel_image bads[16];
    for (int i = 0; i < n_img && i < 16; ++i) bads[i] = bad;
    CHECK(omnimodel_predict_action(ctx, bads, n_img, "go", pp, n_prop, out, cap) == OMNIMODEL_ERR_INVALID_ARGUMENT, "stride 1");
    for (int i = 0; i < n_img && i < 16; ++i) bads[i] = (omnimodel_image){px, -2, 1 << 30, 0};
    CHECK(omnimodel_predict_action(ctx, bads, n_img, "go", pp, n_prop, out, cap) != OMNIMODEL_OK, "negative width");
    for (int i = 0; i < n_img && i < 16; ++i) bads[i] = (omnimodel_image){NULL, size, size, 0};
    CHECK(omnimodel_predict_action(ctx, bads, n_img, "go", pp, n_prop, out, cap) == OMNIMODEL_ERR_INVALID_ARGUMENT, "NULL pixels");
    size_t n = 0;
    CHECK(omnimodel_tokenize(ctx, "\xc0\x80", NULL, 0, &n) == OMNIMODEL_ERR_INVALID_ARGUMENT, "overlong UTF-8");
    CHECK(omnimodel_tokenize(ctx, "\xed\xa0\x80", NULL, 0, &n) == OMNIMODEL_ERR_INVALID_ARGUMENT, "surrogate");
    CHECK(omnimodel_input_ids(ctx, "go", NULL, 0, NULL) == OMNIMODEL_ERR_INVALID_ARGUMENT, "NULL count");
    /* a megabyte instruction is refused (the context cannot hold it), not tokenised for minutes */
    char * big = malloc(1 << 20);
    for (int i = 0; i < (1 << 20) - 1; ++i) big[i] = "pick up the bowl "[i % 17];
    big[(1 << 20) - 1] = '\0';
    CHECK(omnimodel_input_ids(ctx, big, NULL, 0, &n) == OMNIMODEL_ERR_INVALID_ARGUMENT, "1 MB instruction accepted");
    CHECK(omnimodel_predict_action(ctx, imgs, n_img, big, pp, n_prop, out, cap) == OMNIMODEL_ERR_INVALID_ARGUMENT,
          "1 MB instruction predicted");
    CHECK(omnimodel_n_action_steps(ctx) == chunk, "OpenVLA-OFT executes its whole chunk");
    CHECK(omnimodel_postprocess_actions(ctx, out, cap, out, cap, &n) == OMNIMODEL_ERR_UNSUPPORTED,
          "OpenVLA-OFT's graph un-normalises: nothing to post-process");
    free(big), free(px);
    omnimodel_free(ctx);
}

/* A pi0 / pi0.5 file holding only the robot-side metadata (arch/pi0/gguf_meta.py), opened with
 * preprocess_only: preprocessing works, compute is refused, misuse is an error. */
static void pi0_robot(const char * path) {
    CHECK(omnimodel_n_action_steps(NULL) == -1, "n_action_steps(NULL)");
    CHECK(omnimodel_prepare_inputs(NULL, NULL, 0, "go", NULL, 0, 0) == OMNIMODEL_ERR_INVALID_ARGUMENT, "prepare_inputs(NULL)");
    CHECK(omnimodel_get_input(NULL, "noise", NULL, 0, NULL, NULL) == OMNIMODEL_ERR_INVALID_ARGUMENT, "get_input(NULL)");
    CHECK(omnimodel_postprocess_actions(NULL, NULL, 0, NULL, 0, NULL) == OMNIMODEL_ERR_INVALID_ARGUMENT, "postprocess(NULL)");
    CHECK(omnimodel_predict_action_seeded(NULL, NULL, 0, "go", NULL, 0, 1, NULL, 0) == OMNIMODEL_ERR_INVALID_ARGUMENT,
          "predict_action_seeded(NULL)");
    struct omnimodel_params p = omnimodel_default_params();
    p.n_threads               = 1;
    omnimodel_context * ctx   = NULL;
    CHECK(omnimodel_load(path, p, &ctx) == OMNIMODEL_ERR_UNSUPPORTED && ctx == NULL, "a graph-less file loaded for compute");
    p.preprocess_only = true;
    CHECK(omnimodel_load(path, p, &ctx) == OMNIMODEL_OK, "preprocess_only load: %s", omnimodel_last_error(NULL));
    if (ctx == NULL) return;
    const int32_t chunk = omnimodel_chunk_length(ctx), dim = omnimodel_action_dim(ctx), steps = omnimodel_n_action_steps(ctx);
    const int32_t size = omnimodel_image_size(ctx), n_img = omnimodel_n_images(ctx), n_state = omnimodel_proprio_dim(ctx);
    CHECK(chunk > 0 && dim > 0 && size > 0 && n_img > 0 && n_img <= 16 && n_state > 0 && n_state <= 64 && steps >= 1 &&
          steps <= chunk, "pi0 queries");
    uint8_t * px = calloc((size_t) size * size * 3, 1);
    omnimodel_image imgs[16], bads[16];
    for (int i = 0; i < n_img; ++i) imgs[i] = (omnimodel_image){px, size, size, 0};
    float state[64] = {0}, out[4096];
    const size_t cap = (size_t) chunk * dim;
    CHECK(omnimodel_prepare_inputs(ctx, imgs, n_img, "pick up the cube", state, n_state, 7) == OMNIMODEL_OK,
          "prepare_inputs: %s", omnimodel_last_error(ctx));
    int32_t n_dims = 0;
    int64_t ne[4] = {0, 0, 0, 0};
    CHECK(omnimodel_get_input(ctx, "noise", NULL, 0, &n_dims, ne) == OMNIMODEL_OK && n_dims == 3 && ne[1] == chunk &&
          ne[2] == 1, "noise shape");
    const size_t n_noise = (size_t) (ne[0] * ne[1]);
    float * noise = malloc(sizeof(float) * n_noise), * again = malloc(sizeof(float) * n_noise);
    CHECK(omnimodel_get_input(ctx, "noise", noise, n_noise - 1, NULL, NULL) == OMNIMODEL_ERR_INVALID_ARGUMENT, "capacity n-1");
    CHECK(omnimodel_get_input(ctx, "noise", noise, n_noise, NULL, NULL) == OMNIMODEL_OK, "get noise");
    CHECK(omnimodel_get_input(ctx, "nope", noise, n_noise, NULL, NULL) == OMNIMODEL_ERR_NOT_FOUND, "unknown input");
    CHECK(omnimodel_get_input(ctx, NULL, noise, n_noise, NULL, NULL) == OMNIMODEL_ERR_INVALID_ARGUMENT, "NULL name");
    CHECK(omnimodel_prepare_inputs(ctx, imgs, n_img, "pick up the cube", state, n_state, 7) == OMNIMODEL_OK &&
          omnimodel_get_input(ctx, "noise", again, n_noise, NULL, NULL) == OMNIMODEL_OK &&
          memcmp(noise, again, sizeof(float) * n_noise) == 0, "the same seed draws the same noise");
    CHECK(omnimodel_prepare_inputs(ctx, imgs, n_img, "pick up the cube", state, n_state, 8) == OMNIMODEL_OK &&
          omnimodel_get_input(ctx, "noise", again, n_noise, NULL, NULL) == OMNIMODEL_OK &&
          memcmp(noise, again, sizeof(float) * n_noise) != 0, "another seed draws other noise");
    CHECK(omnimodel_prepare_inputs(ctx, imgs, n_img - 1, "go", state, n_state, 0) == OMNIMODEL_ERR_SHAPE, "one camera short");
    CHECK(omnimodel_prepare_inputs(ctx, NULL, 0, "go", state, n_state, 0) == OMNIMODEL_ERR_SHAPE, "no images");
    CHECK(omnimodel_prepare_inputs(ctx, imgs, -1, "go", state, n_state, 0) == OMNIMODEL_ERR_INVALID_ARGUMENT, "n_images -1");
    for (int i = 0; i < n_img; ++i) bads[i] = (omnimodel_image){NULL, size, size, 0};
    CHECK(omnimodel_prepare_inputs(ctx, bads, n_img, "go", state, n_state, 0) == OMNIMODEL_ERR_INVALID_ARGUMENT, "all cameras missing");
    for (int i = 0; i < n_img; ++i) bads[i] = (omnimodel_image){px, size, size, 1};
    CHECK(omnimodel_prepare_inputs(ctx, bads, n_img, "go", state, n_state, 0) == OMNIMODEL_ERR_INVALID_ARGUMENT, "stride 1");
    for (int i = 0; i < n_img; ++i) bads[i] = (omnimodel_image){px, -2, 1 << 30, 0};
    CHECK(omnimodel_prepare_inputs(ctx, bads, n_img, "go", state, n_state, 0) == OMNIMODEL_ERR_SHAPE, "negative width");
    CHECK(omnimodel_prepare_inputs(ctx, imgs, n_img, "go", NULL, n_state, 0) == OMNIMODEL_ERR_INVALID_ARGUMENT, "NULL state");
    CHECK(omnimodel_prepare_inputs(ctx, imgs, n_img, "go", state, n_state + 1, 0) == OMNIMODEL_ERR_SHAPE, "state too long");
    CHECK(omnimodel_prepare_inputs(ctx, imgs, n_img, "go", state, -1, 0) == OMNIMODEL_ERR_INVALID_ARGUMENT, "state_dim -1");
    state[0] = NAN;
    CHECK(omnimodel_prepare_inputs(ctx, imgs, n_img, "go", state, n_state, 0) == OMNIMODEL_ERR_INVALID_ARGUMENT, "NaN state");
    state[0] = INFINITY;
    CHECK(omnimodel_prepare_inputs(ctx, imgs, n_img, "go", state, n_state, 0) == OMNIMODEL_ERR_INVALID_ARGUMENT, "inf state");
    state[0] = 0.0f;
    CHECK(omnimodel_prepare_inputs(ctx, imgs, n_img, NULL, state, n_state, 0) == OMNIMODEL_ERR_INVALID_ARGUMENT, "NULL text");
    CHECK(omnimodel_prepare_inputs(ctx, imgs, n_img, "\xff\xfe", state, n_state, 0) == OMNIMODEL_ERR_INVALID_ARGUMENT, "non-UTF-8");
    CHECK(omnimodel_prepare_inputs(ctx, imgs, n_img, " \n ", state, n_state, 0) == OMNIMODEL_ERR_INVALID_ARGUMENT, "blank text");
    char * big = malloc(1 << 20);
    memset(big, 'a', (1 << 20) - 1);
    big[(1 << 20) - 1] = '\0';
    CHECK(omnimodel_prepare_inputs(ctx, imgs, n_img, big, state, n_state, 0) == OMNIMODEL_ERR_INVALID_ARGUMENT, "1 MB instruction");
    free(big);
    CHECK(omnimodel_predict_action_seeded(ctx, imgs, n_img, "go", state, n_state, 3, out, cap) == OMNIMODEL_ERR_UNSUPPORTED,
          "compute on a preprocess-only context");
    size_t n = 0;
    CHECK(omnimodel_postprocess_actions(ctx, noise, n_noise, out, cap, &n) == OMNIMODEL_OK && n == cap,
          "postprocess: %s", omnimodel_last_error(ctx));
    CHECK(omnimodel_postprocess_actions(ctx, noise, n_noise, out, cap - 1, &n) == OMNIMODEL_ERR_INVALID_ARGUMENT && n == cap,
          "postprocess capacity");
    CHECK(omnimodel_postprocess_actions(ctx, noise, n_noise - 1, out, cap, &n) == OMNIMODEL_ERR_SHAPE, "postprocess length");
    CHECK(omnimodel_postprocess_actions(ctx, NULL, n_noise, out, cap, &n) == OMNIMODEL_ERR_INVALID_ARGUMENT, "postprocess NULL");
    CHECK(omnimodel_postprocess_actions(ctx, noise, n_noise, out, cap, NULL) == OMNIMODEL_ERR_INVALID_ARGUMENT, "NULL count");
    free(noise), free(again), free(px);
    omnimodel_free(ctx);
}

int main(int argc, char ** argv) {
    if (argc != 2 && argc != 4 && argc != 5) {
        fprintf(stderr, "usage: %s TOY.gguf [VLA.gguf PLUGIN.so [PI0_ROBOT.gguf]]\n", argv[0]);
        return 2;
    }
    load_params(argv[1]);
    null_context();
    omnimodel_context * ctx = load(argv[1]);
    inputs(ctx);
    threads_and_compute(ctx);
    omnimodel_free(ctx);
    if (argc >= 4) vla(argv[2], argv[3]);
    if (argc == 5) pi0_robot(argv[4]);
    printf("%d passed, %d failed\n", g_passed, g_failed);
    return g_failed ? 1 : 0;
}
