/*
 * control_loop.c - a robot control loop on an omnimodel VLA policy, in plain C.
 *
 *   control_loop MODEL.gguf "INSTRUCTION" [--steps N] [--threads N] [--seed N] [--plugin LIB]
 *                [--images FILE ...] [--image-size W H] [--proprio FILE]
 *
 * Each step reads one observation -- n_images camera frames and the robot state -- asks the policy
 * for the next action chunk and "executes" its first n_action_steps actions (prints them; OpenVLA-OFT:
 * the whole chunk, pi0 / pi0.5: the policy's n_action_steps). Frames are raw RGB files (W * H * 3
 * bytes, row-major, e.g. `ffmpeg -i cam.png -pix_fmt rgb24 -f rawvideo cam.rgb`), "-" for a camera
 * that is missing (pi0 / pi0.5 mask it out); without --images the program makes synthetic frames
 * that change every step. The state is a text file of proprio_dim numbers; without --proprio it is
 * all zeros. Flow-matching policies (pi0 / pi0.5) draw their initial noise from seed + step (default
 * seed 0), so a run repeats exactly. The graph is the one compiled into the library (the standalone
 * project) or, with --plugin, a graph library `omnimodel convert` built (in its plugin/ folder). On a
 * robot, replace get_observation() and execute() with the camera, state and controller of your stack.
 *
 * Output, one line each, numbers with 9 significant digits (exact for float32):
 *   model arch=<a> graph=<source> chunk=<C> action_dim=<D> image_size=<S> n_images=<N> proprio_dim=<P>
 *         n_action_steps=<K>
 *   step <k> ms=<latency>
 *   action <t> <a_0> ... <a_{D-1}>        (K lines per step, t = 0 .. K-1)
 */
#define _POSIX_C_SOURCE 199309L /* clock_gettime */

#include "omnimodel.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_IMAGES 8

struct options {
    const char * model;
    const char * instruction;
    int          steps;
    int          threads;
    unsigned long long seed;
    const char * plugin;
    const char * image_files[MAX_IMAGES];
    int          n_image_files;
    int          width, height; /* size of the frames in the files */
    const char * proprio_file;
};

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static int parse_args(int argc, char ** argv, struct options * o) {
    memset(o, 0, sizeof(*o));
    o->steps = 3;
    if (argc < 3) return 0;
    o->model       = argv[1];
    o->instruction = argv[2];
    for (int i = 3; i < argc; ++i) {
        if (strcmp(argv[i], "--steps") == 0 && i + 1 < argc) {
            o->steps = atoi(argv[++i]);
        } else if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc) {
            o->threads = atoi(argv[++i]);
        } else if (strcmp(argv[i], "--seed") == 0 && i + 1 < argc) {
            o->seed = strtoull(argv[++i], NULL, 10);
        } else if (strcmp(argv[i], "--plugin") == 0 && i + 1 < argc) {
            o->plugin = argv[++i];
        } else if (strcmp(argv[i], "--image-size") == 0 && i + 2 < argc) {
            o->width  = atoi(argv[++i]);
            o->height = atoi(argv[++i]);
        } else if (strcmp(argv[i], "--proprio") == 0 && i + 1 < argc) {
            o->proprio_file = argv[++i];
        } else if (strcmp(argv[i], "--images") == 0) {
            while (i + 1 < argc && strncmp(argv[i + 1], "--", 2) != 0 && o->n_image_files < MAX_IMAGES) {
                o->image_files[o->n_image_files++] = argv[++i];
            }
        } else {
            fprintf(stderr, "unknown or incomplete option '%s'\n", argv[i]);
            return 0;
        }
    }
    return 1;
}

static int read_file(const char * path, unsigned char * dst, size_t n) {
    FILE * f = fopen(path, "rb");
    if (f == NULL) {
        fprintf(stderr, "cannot open %s\n", path);
        return 0;
    }
    const size_t got = fread(dst, 1, n, f);
    fclose(f);
    if (got != n) fprintf(stderr, "%s: expected %zu bytes, read %zu\n", path, n, got);
    return got == n;
}

/* One observation: frames into pixels[i] (width x height RGB; frames[i].data NULL for a missing
 * camera), state into proprio. */
static int get_observation(const struct options * o, int step, int n_images, int width, int height,
                           unsigned char ** pixels, omnimodel_image * frames, float * proprio, int proprio_dim) {
    for (int i = 0; i < n_images; ++i) {
        frames[i].data = pixels[i];
        if (o->n_image_files > 0 && strcmp(o->image_files[i], "-") == 0) {
            frames[i].data = NULL;
        } else if (o->n_image_files > 0) {
            if (!read_file(o->image_files[i], pixels[i], (size_t) width * height * 3)) return 0;
        } else {
            for (int y = 0; y < height; ++y) {  /* a moving colour gradient per camera */
                for (int x = 0; x < width; ++x) {
                    unsigned char * p = pixels[i] + ((size_t) y * width + x) * 3;
                    p[0] = (unsigned char) (x * 255 / width + 40 * step);
                    p[1] = (unsigned char) (y * 255 / height + 90 * i);
                    p[2] = (unsigned char) ((x + y + 17 * step) & 255);
                }
            }
        }
    }
    for (int j = 0; j < proprio_dim; ++j) proprio[j] = 0.0f;
    if (o->proprio_file != NULL) {
        FILE * f = fopen(o->proprio_file, "r");
        if (f == NULL) {
            fprintf(stderr, "cannot open %s\n", o->proprio_file);
            return 0;
        }
        for (int j = 0; j < proprio_dim; ++j) {
            if (fscanf(f, "%f", &proprio[j]) != 1) {
                fprintf(stderr, "%s: expected %d numbers\n", o->proprio_file, proprio_dim);
                fclose(f);
                return 0;
            }
        }
        fclose(f);
    }
    return 1;
}

/* Hand the first n_steps actions of the chunk to the controller; here: print them. */
static void execute(const float * actions, int n_steps, int action_dim) {
    for (int t = 0; t < n_steps; ++t) {
        printf("action %d", t);
        for (int j = 0; j < action_dim; ++j) printf(" %.9g", actions[t * action_dim + j]);
        printf("\n");
    }
    fflush(stdout);
}

int main(int argc, char ** argv) {
    struct options o;
    if (!parse_args(argc, argv, &o)) {
        fprintf(stderr, "usage: %s MODEL.gguf \"INSTRUCTION\" [--steps N] [--threads N] [--seed N] [--plugin LIB] "
                        "[--images FILE ...] [--image-size W H] [--proprio FILE]\n", argv[0]);
        return 2;
    }
    if (o.plugin != NULL && omnimodel_load_plugin(o.plugin) != OMNIMODEL_OK) {
        fprintf(stderr, "plugin failed: %s\n", omnimodel_last_error(NULL));
        return 1;
    }

    struct omnimodel_params params = omnimodel_default_params();
    params.n_threads               = o.threads;
    omnimodel_context * ctx        = NULL;
    if (omnimodel_load(o.model, params, &ctx) != OMNIMODEL_OK) {
        fprintf(stderr, "load failed: %s\n", omnimodel_last_error(NULL));
        return 1;
    }

    const int chunk       = omnimodel_chunk_length(ctx);
    const int action_dim  = omnimodel_action_dim(ctx);
    const int image_size  = omnimodel_image_size(ctx);
    const int n_images    = omnimodel_n_images(ctx);
    const int proprio_dim = omnimodel_proprio_dim(ctx);
    const int n_steps     = omnimodel_n_action_steps(ctx);
    if (chunk < 0 || action_dim < 0 || image_size < 0 || n_images < 0 || proprio_dim < 0 || n_steps < 0) {
        fprintf(stderr, "not a VLA policy: %s\n", omnimodel_last_error(ctx));
        omnimodel_free(ctx);
        return 1;
    }
    printf("model arch=%s graph=%s chunk=%d action_dim=%d image_size=%d n_images=%d proprio_dim=%d n_action_steps=%d\n",
           omnimodel_architecture(ctx), omnimodel_graph_source(ctx), chunk, action_dim, image_size, n_images,
           proprio_dim, n_steps);
    if (n_images > MAX_IMAGES || (o.n_image_files > 0 && o.n_image_files != n_images)) {
        fprintf(stderr, "the model takes %d image(s), %d file(s) given\n", n_images, o.n_image_files);
        omnimodel_free(ctx);
        return 1;
    }
    /* frames at the camera's size; the runtime resizes when it is not the model's */
    const int width  = o.width > 0 ? o.width : image_size;
    const int height = o.height > 0 ? o.height : image_size;

    unsigned char * pixels[MAX_IMAGES];
    omnimodel_image frames[MAX_IMAGES];
    for (int i = 0; i < n_images; ++i) {
        pixels[i] = malloc((size_t) width * height * 3);
        frames[i].data   = pixels[i];
        frames[i].width  = width;
        frames[i].height = height;
        frames[i].stride = 0; /* rows packed: 3 * width bytes */
    }
    float * proprio = malloc(sizeof(float) * (proprio_dim > 0 ? proprio_dim : 1));
    float * actions = malloc(sizeof(float) * (size_t) chunk * action_dim);

    int rc = 0;
    for (int step = 0; step < o.steps; ++step) {
        if (!get_observation(&o, step, n_images, width, height, pixels, frames, proprio, proprio_dim)) {
            rc = 1;
            break;
        }
        const double t0 = now_ms();
        const omnimodel_status st = omnimodel_predict_action_seeded(ctx, frames, n_images, o.instruction,
                                                                    proprio_dim > 0 ? proprio : NULL, proprio_dim,
                                                                    o.seed + (unsigned long long) step, actions,
                                                                    (size_t) chunk * action_dim);
        if (st != OMNIMODEL_OK) {
            fprintf(stderr, "step %d: %s: %s\n", step, omnimodel_status_string(st), omnimodel_last_error(ctx));
            rc = 1;
            break;
        }
        printf("step %d ms=%.1f\n", step, now_ms() - t0);
        execute(actions, n_steps, action_dim);
    }

    for (int i = 0; i < n_images; ++i) free(pixels[i]);
    free(proprio);
    free(actions);
    omnimodel_free(ctx);
    return rc;
}
