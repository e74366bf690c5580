/*
 * omnimodel.h - C API of the omnimodel runtime.
 *
 * The runtime loads one GGUF file written by `omnimodel convert`, builds the compute graph of the
 * model's architecture with ggml and runs it on the CPU (or CUDA, when built with it).
 *
 * Conventions
 *  - Every function that can fail returns an omnimodel_status. On failure, omnimodel_last_error()
 *    describes what went wrong in words. The runtime never calls abort() on bad input: files, shapes
 *    and types are validated before they reach ggml.
 *  - Shapes use ggml order: ne[0] is the fastest-varying (contiguous) dimension. A row-major C array
 *    float x[rows][cols] has ne[0] = cols, ne[1] = rows. A PyTorch nn.Linear weight [out, in] is
 *    stored with ne = {in, out}.
 *  - Strings returned by the API are owned by the context (or are static) and stay valid until the
 *    next call that changes the same thing, or until omnimodel_free().
 *  - A context is not thread-safe: use one context per thread, or serialise calls.
 *
 * Minimal use:
 *
 *     struct omnimodel_params p = omnimodel_default_params();
 *     p.n_threads = 4;
 *     omnimodel_context * ctx = NULL;
 *     if (omnimodel_load("policy.gguf", p, &ctx) != OMNIMODEL_OK) {
 *         fprintf(stderr, "load failed: %s\n", omnimodel_last_error(NULL));
 *         return 1;
 *     }
 *     ...
 *     omnimodel_free(ctx);
 */
#ifndef OMNIMODEL_H
#define OMNIMODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32) && !defined(__MINGW32__)
#    ifdef OMNIMODEL_BUILD
#        define OMNIMODEL_API __declspec(dllexport)
#    else
#        define OMNIMODEL_API __declspec(dllimport)
#    endif
#else
#    define OMNIMODEL_API __attribute__((visibility("default")))
#endif

#define OMNIMODEL_MAX_DIMS 4

typedef enum omnimodel_status {
    OMNIMODEL_OK                   = 0,
    OMNIMODEL_ERR_INVALID_ARGUMENT = 1, /* NULL pointer, bad parameter value                      */
    OMNIMODEL_ERR_IO               = 2, /* file missing, unreadable, mmap failed                   */
    OMNIMODEL_ERR_FORMAT           = 3, /* not a GGUF file, truncated, corrupt, data past the end */
    OMNIMODEL_ERR_UNSUPPORTED      = 4, /* unknown tensor type, architecture or backend           */
    OMNIMODEL_ERR_SHAPE            = 5, /* input or weight shape does not fit the graph           */
    OMNIMODEL_ERR_NOT_FOUND        = 6, /* no such tensor, metadata key, input or result          */
    OMNIMODEL_ERR_BACKEND          = 7, /* ggml backend failed to allocate or compute             */
    OMNIMODEL_ERR_OUT_OF_MEMORY    = 8,
    OMNIMODEL_ERR_INTERNAL         = 9,
} omnimodel_status;

typedef enum omnimodel_backend {
    OMNIMODEL_BACKEND_AUTO = 0, /* the GPU when one was compiled in and is present, else the CPU */
    OMNIMODEL_BACKEND_CPU  = 1,
    OMNIMODEL_BACKEND_GPU  = 2, /* fail with OMNIMODEL_ERR_UNSUPPORTED if there is none          */
} omnimodel_backend;

struct omnimodel_params {
    int32_t           n_threads;  /* CPU threads for compute; <= 0 means all hardware threads   */
    bool              use_mmap;   /* map the weights from the file instead of copying them      */
    omnimodel_backend backend;
    int32_t           gpu_device; /* index among GPU devices when the backend is a GPU          */
    bool              verbose;    /* forward ggml's log to stderr                               */
};

struct omnimodel_tensor_info {
    const char * name;
    int32_t      type;      /* ggml type id (enum ggml_type), e.g. 0 = F32, 12 = Q4_K        */
    const char * type_name; /* e.g. "q4_K"                                                     */
    int32_t      n_dims;
    int64_t      ne[OMNIMODEL_MAX_DIMS];
    size_t       n_bytes;
};

typedef struct omnimodel_context omnimodel_context;

/* Library and ggml versions, e.g. "0.1.0" and "0.25.3". */
OMNIMODEL_API const char * omnimodel_version(void);
OMNIMODEL_API const char * omnimodel_ggml_version(void);

/* A short fixed description of a status code. */
OMNIMODEL_API const char * omnimodel_status_string(omnimodel_status status);

OMNIMODEL_API struct omnimodel_params omnimodel_default_params(void);

/* Load a GGUF model. On success *out_ctx owns the model; on failure *out_ctx is set to NULL and
 * omnimodel_last_error(NULL) tells why. */
OMNIMODEL_API omnimodel_status omnimodel_load(const char * path, struct omnimodel_params params,
                                              omnimodel_context ** out_ctx);
OMNIMODEL_API void omnimodel_free(omnimodel_context * ctx);

/* The message of the last failed call on ctx; with ctx == NULL, of the last failed load on this
 * thread. Empty string when there was none. */
OMNIMODEL_API const char * omnimodel_last_error(const omnimodel_context * ctx);

/* general.architecture of the loaded file, e.g. "openvla-oft". */
OMNIMODEL_API const char * omnimodel_architecture(const omnimodel_context * ctx);

/* Name of the compute backend in use, e.g. "CPU" or "CUDA0". */
OMNIMODEL_API const char * omnimodel_backend_name(const omnimodel_context * ctx);

/* ---- tensors stored in the file ---------------------------------------------------------- */

OMNIMODEL_API int64_t omnimodel_n_tensors(const omnimodel_context * ctx);
OMNIMODEL_API omnimodel_status omnimodel_get_tensor_info(const omnimodel_context * ctx, int64_t index,
                                                         struct omnimodel_tensor_info * out);

/* ---- metadata (GGUF key/value pairs) ----------------------------------------------------- */

/* Any integer or bool value, widened to int64. */
OMNIMODEL_API omnimodel_status omnimodel_meta_int(const omnimodel_context * ctx, const char * key, int64_t * out);
/* Any numeric value, converted to double. */
OMNIMODEL_API omnimodel_status omnimodel_meta_float(const omnimodel_context * ctx, const char * key, double * out);
OMNIMODEL_API omnimodel_status omnimodel_meta_string(const omnimodel_context * ctx, const char * key, const char ** out);

/* ---- compute ----------------------------------------------------------------------------- */

OMNIMODEL_API omnimodel_status omnimodel_set_n_threads(omnimodel_context * ctx, int32_t n_threads);

/* Provide a named float32 graph input (copied). Which inputs exist depends on the architecture;
 * the graph takes its shapes from the inputs. */
OMNIMODEL_API omnimodel_status omnimodel_set_input(omnimodel_context * ctx, const char * name, const float * data,
                                                   int32_t n_dims, const int64_t * ne);

/* Forget every input set so far. */
OMNIMODEL_API omnimodel_status omnimodel_clear_inputs(omnimodel_context * ctx);

/* Choose which named intermediate tensors the next computes keep (for parity checks). The name
 * "*" keeps every named intermediate. n_names == 0 keeps none (the default, and the fastest). */
OMNIMODEL_API omnimodel_status omnimodel_set_capture(omnimodel_context * ctx, const char * const * names,
                                                     size_t n_names);

/* Build the architecture's graph for the current inputs and run it. Outputs and captured
 * intermediates then become readable results. */
OMNIMODEL_API omnimodel_status omnimodel_compute(omnimodel_context * ctx);

/* Results of the last compute: the graph outputs and the captured intermediates, by name. */
OMNIMODEL_API size_t omnimodel_n_results(const omnimodel_context * ctx);
OMNIMODEL_API const char * omnimodel_result_name(const omnimodel_context * ctx, size_t index);
OMNIMODEL_API omnimodel_status omnimodel_result_shape(const omnimodel_context * ctx, const char * name,
                                                      int32_t * n_dims, int64_t ne[OMNIMODEL_MAX_DIMS]);
/* Copy a result as float32 into dst, which holds capacity floats. */
OMNIMODEL_API omnimodel_status omnimodel_result_get(const omnimodel_context * ctx, const char * name, float * dst,
                                                    size_t capacity);

#ifdef __cplusplus
}
#endif

#endif /* OMNIMODEL_H */
