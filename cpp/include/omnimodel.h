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
 *  - A context is not thread-safe: use one context per thread, or serialise calls (the Python
 *    binding serialises them with a per-model lock).
 *  - Nothing a file or a caller supplies reaches ggml unchecked: tensor types against the operation
 *    that uses them, metadata values for type, finiteness and range, text for UTF-8, sizes for
 *    overflow. A compute whose outputs are not finite fails (OMNIMODEL_ERR_BACKEND) instead of
 *    returning OK. See docs/robustness.md.
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
    int32_t           n_threads;  /* CPU threads for compute; <= 0 means all hardware threads; at most 512 */
    bool              use_mmap;   /* map the weights from the file instead of copying them      */
    omnimodel_backend backend;
    int32_t           gpu_device; /* index among GPU devices when the backend is a GPU          */
    bool              verbose;    /* forward ggml's log to stderr                               */
    bool              repack_weights; /* CPU: copy matmul weights of the types ggml has faster
                                         interleaved GEMM kernels for (x86: Q4_0, IQ4_NL) into that
                                         layout at the first compute (needs use_mmap); default on */
    bool              preprocess_only; /* open the file for its robot-side metadata only: no graph
                                          needs to be registered for its architecture, and
                                          omnimodel_compute / omnimodel_predict_action fail with
                                          OMNIMODEL_ERR_UNSUPPORTED; tokenisation, image and state
                                          preprocessing (omnimodel_prepare_inputs) and
                                          omnimodel_postprocess_actions work. Default off */
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

/* Which graph serves this context's architecture, as registered when it was loaded:
 * "builtin:<arch>" (compiled into the core), "plugin:<absolute path>" (omnimodel_load_plugin) or
 * "linked:<file>" (a generated source compiled into this library, as in the standalone project). */
OMNIMODEL_API const char * omnimodel_graph_source(const omnimodel_context * ctx);

/* The same for an architecture name, from the registry now; "" when none is registered. The string
 * stays valid until the next call on this thread. */
OMNIMODEL_API const char * omnimodel_architecture_source(const char * architecture);

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

/* n_threads <= 0: all hardware threads; above 512 (ggml's thread pool): OMNIMODEL_ERR_INVALID_ARGUMENT. */
OMNIMODEL_API omnimodel_status omnimodel_set_n_threads(omnimodel_context * ctx, int32_t n_threads);

/* Provide a named float32 graph input (copied). Which inputs exist depends on the architecture;
 * the graph takes its shapes from the inputs. Every dimension must be positive and their product at
 * most 2^32 (OMNIMODEL_ERR_SHAPE otherwise); every value finite. */
OMNIMODEL_API omnimodel_status omnimodel_set_input(omnimodel_context * ctx, const char * name, const float * data,
                                                   int32_t n_dims, const int64_t * ne);

/* Forget every input set so far. */
OMNIMODEL_API omnimodel_status omnimodel_clear_inputs(omnimodel_context * ctx);

/* Choose which named intermediate tensors the next computes keep (for parity checks). The name
 * "*" keeps every named intermediate. n_names == 0 keeps none (the default, and the fastest). */
OMNIMODEL_API omnimodel_status omnimodel_set_capture(omnimodel_context * ctx, const char * const * names,
                                                     size_t n_names);

/* Run the architecture's graph on the current inputs. The graph is built (and its memory planned)
 * for the inputs' names and shapes on the first compute and reused while they stay the same, so a
 * control loop pays only for the arithmetic. Outputs and captured intermediates then become
 * readable results. A weight whose type its operation cannot take is OMNIMODEL_ERR_UNSUPPORTED
 * naming it; outputs holding NaN or inf are OMNIMODEL_ERR_BACKEND. */
OMNIMODEL_API omnimodel_status omnimodel_compute(omnimodel_context * ctx);

/* Results of the last compute: the graph outputs and the captured intermediates, by name. */
OMNIMODEL_API size_t omnimodel_n_results(const omnimodel_context * ctx);
OMNIMODEL_API const char * omnimodel_result_name(const omnimodel_context * ctx, size_t index);
OMNIMODEL_API omnimodel_status omnimodel_result_shape(const omnimodel_context * ctx, const char * name,
                                                      int32_t * n_dims, int64_t ne[OMNIMODEL_MAX_DIMS]);
/* Timings of the last compute, for profiling: the seconds spent building and allocating the graph
 * and uploading inputs, and the seconds the backend computed. */
OMNIMODEL_API omnimodel_status omnimodel_last_timings(const omnimodel_context * ctx, double * build_seconds,
                                                      double * compute_seconds);
/* For a captured intermediate: seconds from the start of the last compute until it was ready. Capturing
 * a few stage outputs (e.g. the vision tower and the LLM's final norm) gives a per-stage split. */
OMNIMODEL_API omnimodel_status omnimodel_result_ready_time(const omnimodel_context * ctx, const char * name,
                                                           double * seconds);
/* Copy a result as float32 into dst, which holds capacity floats. */
OMNIMODEL_API omnimodel_status omnimodel_result_get(const omnimodel_context * ctx, const char * name, float * dst,
                                                    size_t capacity);

/* ---- performance: per-node profile, graph reuse, memory ----------------------------------- */

/* One node of a profiled compute. Strings live until the next compute or omnimodel_free. */
typedef struct omnimodel_profile_node {
    const char * name;            /* the tensor's name; "" or ggml's own ("node_12") when unnamed */
    const char * op;              /* ggml's op name: MUL_MAT, FLASH_ATTN_EXT, CPY, GELU_ERF, ...  */
    int32_t      type;            /* ggml type of the result                                     */
    int32_t      src_type[3];     /* ggml types of the first three sources, -1 when absent        */
    bool         src0_is_weight;  /* the first source is a model weight (matmuls: the weight type) */
    int64_t      ne[OMNIMODEL_MAX_DIMS];
    int64_t      src_ne[3][OMNIMODEL_MAX_DIMS];
    double       seconds;         /* from the end of the previous node to the end of this one    */
    double       cpu_seconds;     /* CPU time of the process (all threads) over the same span    */
} omnimodel_profile_node;

/* Profile the next computes node by node (on != 0) or not (0, the default). Profiling computes the
 * graph one node at a time, which adds a few microseconds per node and turns off op fusion. */
OMNIMODEL_API omnimodel_status omnimodel_set_profile(omnimodel_context * ctx, int32_t on);
/* The nodes of the last profiled compute, in execution order (0 when it was not profiled). */
OMNIMODEL_API size_t omnimodel_profile_size(const omnimodel_context * ctx);
OMNIMODEL_API omnimodel_status omnimodel_profile_get(const omnimodel_context * ctx, size_t index,
                                                     omnimodel_profile_node * out);

typedef struct omnimodel_run_stats {
    int64_t graph_builds;          /* computes that built (and planned memory for) a new graph */
    int64_t graph_reuses;          /* computes that reused the graph of the previous one       */
    size_t  compute_buffer_bytes;  /* activations: the scheduler's buffers (all backends) and the
                                      CPU backend's work buffer for the current graph            */
    size_t  weight_bytes;          /* weights as stored in the file                           */
    size_t  repacked_bytes;        /* of which copied into repacked (interleaved) layouts     */
    int64_t n_repacked;            /* matrices repacked for the CPU's GEMM kernels            */
} omnimodel_run_stats;
OMNIMODEL_API omnimodel_status omnimodel_get_run_stats(const omnimodel_context * ctx, omnimodel_run_stats * out);

/* ---- architecture plugins ---------------------------------------------------------------- */

/* Load a shared library holding a generated architecture graph (see `omnimodel.build`) and register
 * it. The library must export `void omnimodel_plugin_register(void)`, which calls
 * omni::register_architecture(name, fn); a plugin's architecture replaces a same-named one (built-in
 * or from an earlier plugin) for contexts loaded afterwards. The library stays loaded for the life of
 * the process. Loading the same path again calls its register function again (re-selecting it after
 * another plugin replaced it); a rebuilt library needs a new path, because the system loader returns
 * the already-open one for a known path. On failure omnimodel_last_error(NULL) tells why. */
OMNIMODEL_API omnimodel_status omnimodel_load_plugin(const char * path);

/* ==== robot side: raw observation -> action chunk (vision-language-action models) ==========
 *
 * For VLA architectures (e.g. "openvla-oft", "pi0", "pi05") the runtime does everything a robot
 * needs without Python: it tokenises the instruction with the vocabulary stored in the file, resizes
 * and normalises the camera images, normalises the proprio state with the dataset statistics in the
 * file, runs the graph and returns the un-normalised action chunk. Flow-matching policies (pi0,
 * pi0.5) also draw their initial noise here, from a seed (omnimodel_predict_action_seeded), so a
 * run repeats exactly. See docs/robot_integration.md.
 *
 *     int32_t chunk = omnimodel_chunk_length(ctx), dim = omnimodel_action_dim(ctx);
 *     float * actions = malloc(sizeof(float) * chunk * dim);
 *     omnimodel_image cams[2] = {{front_rgb, 640, 480, 0}, {wrist_rgb, 640, 480, 0}};
 *     if (omnimodel_predict_action(ctx, cams, 2, "put the bowl on the plate", state, 8,
 *                                  actions, (size_t) chunk * dim) != OMNIMODEL_OK) {
 *         fprintf(stderr, "%s\n", omnimodel_last_error(ctx));
 *     }
 *     // actions[t * dim + j]: step t of the chunk, action dimension j
 */

/* One camera frame: 8-bit RGB, row-major, 3 bytes per pixel (R, G, B). Rows may be padded:
 * stride is the number of bytes from one row's start to the next, 0 meaning 3 * width. The data is
 * only read during the call. */
typedef struct omnimodel_image {
    const uint8_t * data;
    int32_t         width;
    int32_t         height;
    int32_t         stride;
} omnimodel_image;

/* What the loaded VLA model expects and returns. Each returns -1 (and sets omnimodel_last_error)
 * when ctx is NULL or the model is not a VLA with the needed metadata. */
OMNIMODEL_API int32_t omnimodel_chunk_length(omnimodel_context * ctx); /* actions per chunk          */
OMNIMODEL_API int32_t omnimodel_action_dim(omnimodel_context * ctx);   /* values per action          */
OMNIMODEL_API int32_t omnimodel_image_size(omnimodel_context * ctx);   /* native side, in pixels     */
OMNIMODEL_API int32_t omnimodel_n_images(omnimodel_context * ctx);     /* images per observation     */
OMNIMODEL_API int32_t omnimodel_proprio_dim(omnimodel_context * ctx);  /* 0: the model takes none    */
/* How many actions of each chunk to execute before asking for the next chunk (LeRobot's
 * n_action_steps for pi0 / pi0.5; the whole chunk for OpenVLA-OFT). */
OMNIMODEL_API int32_t omnimodel_n_action_steps(omnimodel_context * ctx);

/* Predict the next action chunk from one observation.
 *  images:      n_images frames, in the order the policy was trained with (OpenVLA-OFT: third-person
 *               camera first, then wrist; pi0 / pi0.5: the policy's camera keys in order, and a frame
 *               whose data is NULL is a missing camera, masked out as LeRobot does; at least one must
 *               be present). Frames of any size are resized to the model's square image_size
 *               (pi0: with padding, keeping the aspect ratio); at exactly image_size x image_size the
 *               result equals the Python preprocessing bit for bit (resizing: see
 *               docs/robot_integration.md).
 *  instruction: NUL-terminated UTF-8 task text, e.g. "put the black bowl on the plate" (lower-cased and put into
 *               the model's prompt template here).
 *  proprio:     the raw (un-normalised) robot state, proprio_dim finite values; NULL and 0 for a
 *               model without proprio.
 *  actions_out: receives chunk_length * action_dim floats, un-normalised (ready for the robot),
 *               action t of the chunk at actions_out[t * action_dim ...]; capacity is its size in floats.
 * Errors: OMNIMODEL_ERR_SHAPE for a wrong image count, an empty image or a wrong proprio_dim;
 * OMNIMODEL_ERR_INVALID_ARGUMENT for NULL pointers, a stride below 3 * width, non-finite proprio, an
 * empty or non-UTF-8 instruction, an instruction over 64 KiB or one whose tokens and the action slots
 * exceed the model's context, or too small a capacity; OMNIMODEL_ERR_NOT_FOUND / _FORMAT when
 * the file lacks the tokenizer or preprocessing metadata. Replaces any inputs set with
 * omnimodel_set_input; results stay readable as after omnimodel_compute. */
OMNIMODEL_API omnimodel_status omnimodel_predict_action(omnimodel_context * ctx, const omnimodel_image * images,
                                                        int32_t n_images, const char * instruction,
                                                        const float * proprio, int32_t proprio_dim,
                                                        float * actions_out, size_t capacity);

/* omnimodel_predict_action with the seed of the initial noise of a flow-matching policy (pi0,
 * pi0.5): the same observation and seed give the same chunk, equal to Python's
 * omnimodel.arch.pi0.predict_action(..., seed=seed). omnimodel_predict_action uses seed 0. The noise
 * is (chunk, max_action_dim) standard normal floats from SplitMix64 + Box-Muller (see
 * python/omnimodel/arch/pi0/policy.py gaussian_noise). Models without noise ignore the seed.
 * state / state_dim: the raw robot state (pi0.5 writes it, discretised, into the prompt). Errors as
 * for omnimodel_predict_action, plus OMNIMODEL_ERR_SHAPE for a wrong state length and
 * OMNIMODEL_ERR_INVALID_ARGUMENT for a non-finite state value, all images NULL or a NULL state. */
OMNIMODEL_API omnimodel_status omnimodel_predict_action_seeded(omnimodel_context * ctx, const omnimodel_image * images,
                                                               int32_t n_images, const char * instruction,
                                                               const float * state, int32_t state_dim, uint64_t seed,
                                                               float * actions_out, size_t capacity);

/* Everything omnimodel_predict_action_seeded does before the graph runs: preprocess the observation
 * and set the graph's named inputs (replacing any set before), without computing. Read them with
 * omnimodel_get_input. pi0 / pi0.5 set (PyTorch shapes; the batch of 1 of pixel_values is dropped to
 * fit 4 dimensions): pixel_values (cameras, 3, S, S) in [-1, 1], image_mask (1, cameras) 1 / 0,
 * input_ids (1, L) as floats, state (1, max_state_dim) normalised and zero-padded (pi0 only), noise
 * (1, chunk, max_action_dim). Works on a context opened with params.preprocess_only. */
OMNIMODEL_API omnimodel_status omnimodel_prepare_inputs(omnimodel_context * ctx, const omnimodel_image * images,
                                                        int32_t n_images, const char * instruction,
                                                        const float * state, int32_t state_dim, uint64_t seed);

/* An input set so far (omnimodel_set_input or omnimodel_prepare_inputs), by name: its shape into
 * n_dims / ne (either may be NULL) and its values into dst (capacity floats). dst NULL with capacity
 * 0 asks for the shape only; too small a capacity is OMNIMODEL_ERR_INVALID_ARGUMENT; an unknown name
 * OMNIMODEL_ERR_NOT_FOUND. */
OMNIMODEL_API omnimodel_status omnimodel_get_input(omnimodel_context * ctx, const char * name, float * dst,
                                                   size_t capacity, int32_t * n_dims, int64_t ne[OMNIMODEL_MAX_DIMS]);

/* The graph's normalised output -> robot actions, for families whose graph leaves the
 * un-normalisation to the runtime (pi0 / pi0.5: n_values = chunk * max_action_dim floats of
 * denoised_actions in, chunk * action_dim un-normalised floats out). *n_actions receives the count;
 * capacity rules as omnimodel_tokenize. OpenVLA-OFT (its graph un-normalises):
 * OMNIMODEL_ERR_UNSUPPORTED. */
OMNIMODEL_API omnimodel_status omnimodel_postprocess_actions(omnimodel_context * ctx, const float * normalized,
                                                             size_t n_values, float * actions_out, size_t capacity,
                                                             size_t * n_actions);

/* Token ids of NUL-terminated UTF-8 text with the model's own tokenizer, no BOS (what the Python tokenizer gives).
 * Writes at most capacity ids; *n_ids receives the full count. capacity too small ->
 * OMNIMODEL_ERR_INVALID_ARGUMENT with *n_ids set, so a first call with capacity 0 (ids may be
 * NULL) asks for the size. */
OMNIMODEL_API omnimodel_status omnimodel_tokenize(omnimodel_context * ctx, const char * text, int32_t * ids,
                                                  size_t capacity, size_t * n_ids);

/* The whole token sequence the graph gets for an instruction: BOS, the filled-in prompt, the
 * architecture's extras (OpenVLA-OFT: "▁", chunk_length * action_dim placeholders, EOS; pi0: the
 * prompt truncated to the policy's tokenizer_max_length). pi0.5 writes the state into its prompt:
 * use omnimodel_prepare_inputs (input "input_ids") instead. Same capacity rules as
 * omnimodel_tokenize. */
OMNIMODEL_API omnimodel_status omnimodel_input_ids(omnimodel_context * ctx, const char * instruction, int32_t * ids,
                                                   size_t capacity, size_t * n_ids);

/* The pixel_values tensor the graph gets for n_images frames, row-major floats: OpenVLA-OFT
 * (1, 3 * towers * n_images, S, S), towers' normalised copies per image; pi0 / pi0.5
 * (cameras, 3, S, S) in [-1, 1], present cameras first. Same capacity rules (counting floats). */
OMNIMODEL_API omnimodel_status omnimodel_preprocess_images(omnimodel_context * ctx, const omnimodel_image * images,
                                                           int32_t n_images, float * pixels, size_t capacity,
                                                           size_t * n_values);

#ifdef __cplusplus
}
#endif

#endif /* OMNIMODEL_H */
