/*
 * omnimodel_replay: run files through the C API the way robot code would, each in its own forked
 * process, and say what happened. The sanitizer build (docs/building.md) runs the fuzz corpus
 * through it, so an ASan/UBSan report in any file's run is counted, not lost.
 *
 *   omnimodel_replay [--plugin LIB.so]... [--timeout SECONDS] FILE...
 *
 * Per file, one line on stdout: "<outcome>\t<file>\t<detail>" with outcome
 *   ok          loaded, listed, and computed (a toy's forward pass, or a VLA's tokenize + predict)
 *   rejected    a call returned an error status with a message (the documented behaviour)
 *   sanitizer   the child printed an AddressSanitizer / UndefinedBehaviorSanitizer report
 *   crash       the child died from a signal, or returned OK without results
 *   hang        killed after the timeout in CPU seconds (or 15x as long without finishing)
 * Exit status: 1 when any file crashed, hung or drew a sanitizer report.
 */
#define _POSIX_C_SOURCE 200809L
#include "omnimodel.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

enum { EXIT_RAN = 0, EXIT_REJECTED = 10, EXIT_BROKEN = 20 };

static int rejected(omnimodel_context * ctx, const char * what, omnimodel_status st) {
    const char * msg = omnimodel_last_error(ctx);
    if (msg == NULL || msg[0] == '\0') {
        fprintf(stderr, "%s: status %d without a message\n", what, (int) st);
        return EXIT_BROKEN;
    }
    fprintf(stderr, "%s: %s\n", what, msg);
    return EXIT_REJECTED;
}

static int run_vla(omnimodel_context * ctx) {
    const int32_t chunk = omnimodel_chunk_length(ctx), dim = omnimodel_action_dim(ctx);
    const int32_t size = omnimodel_image_size(ctx), n_img = omnimodel_n_images(ctx);
    const int32_t n_prop = omnimodel_proprio_dim(ctx);
    if (chunk < 0 || dim < 0 || size < 0 || n_img < 0 || n_prop < 0) return rejected(ctx, "vla queries", OMNIMODEL_ERR_FORMAT);
    size_t n_ids = 0;
    omnimodel_status st = omnimodel_tokenize(ctx, "pick up the <s> bowl", NULL, 0, &n_ids);
    if (st != OMNIMODEL_OK && n_ids == 0) return rejected(ctx, "tokenize", st);
    uint8_t * pixels = calloc((size_t) size * (size_t) size * 3, 1);
    omnimodel_image * imgs = calloc((size_t) n_img, sizeof *imgs);
    float * prop = calloc((size_t) n_prop + 1, sizeof *prop);
    float * out = calloc((size_t) chunk * (size_t) dim + 1, sizeof *out);
    if (!pixels || !imgs || !prop || !out) return EXIT_BROKEN;
    for (int32_t i = 0; i < n_img; ++i) imgs[i] = (omnimodel_image){pixels, size, size, 0};
    st = omnimodel_predict_action(ctx, imgs, n_img, "put the black bowl on the plate", n_prop ? prop : NULL, n_prop, out,
                                  (size_t) chunk * (size_t) dim);
    int rc = st == OMNIMODEL_OK ? EXIT_RAN : rejected(ctx, "predict_action", st);
    free(pixels), free(imgs), free(prop), free(out);
    return rc;
}

static int run_toy(omnimodel_context * ctx, int64_t width) {
    if (width <= 0 || width > 65536) return EXIT_RAN;
    float * x = calloc((size_t) width * 2, sizeof *x);
    if (!x) return EXIT_BROKEN;
    for (int64_t i = 0; i < width * 2; ++i) x[i] = (float) ((i % 7) - 3) * 0.25f;
    const int64_t ne[4] = {width, 2, 1, 1};
    const char * all = "*";
    omnimodel_status st = omnimodel_set_input(ctx, "x", x, 2, ne);
    if (st == OMNIMODEL_OK) st = omnimodel_set_capture(ctx, &all, 1);
    if (st == OMNIMODEL_OK) st = omnimodel_compute(ctx);
    free(x);
    if (st != OMNIMODEL_OK) return rejected(ctx, "compute", st);
    return omnimodel_n_results(ctx) > 0 ? EXIT_RAN : EXIT_BROKEN;
}

static int run_file(const char * path) {
    struct omnimodel_params p = omnimodel_default_params();
    p.n_threads = 1;
    omnimodel_context * ctx = NULL;
    omnimodel_status st = omnimodel_load(path, p, &ctx);
    if (st != OMNIMODEL_OK) return ctx == NULL ? rejected(NULL, "load", st) : EXIT_BROKEN;
    int64_t width = -1;
    for (int64_t i = 0; i < omnimodel_n_tensors(ctx); ++i) {
        struct omnimodel_tensor_info ti;
        if (omnimodel_get_tensor_info(ctx, i, &ti) != OMNIMODEL_OK) return EXIT_BROKEN;
        if (strcmp(ti.name, "layers.0.weight") == 0) width = ti.ne[0];
    }
    const char * arch = omnimodel_architecture(ctx);
    char key[256];
    snprintf(key, sizeof key, "%s.num_images", arch);
    int64_t n_images = 0;
    const char * name = NULL;
    (void) omnimodel_meta_string(ctx, "general.name", &name);
    int rc = omnimodel_meta_int(ctx, key, &n_images) == OMNIMODEL_OK ? run_vla(ctx) : run_toy(ctx, width);
    omnimodel_free(ctx);
    return rc;
}

/* User + system CPU seconds of a live child: a hang is CPU spent, not wall time on a busy machine. */
static double cpu_seconds(pid_t pid) {
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int) pid);
    FILE * f = fopen(path, "r");
    if (f == NULL) return 0.0;
    const size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char * p = strrchr(buf, ')');
    unsigned long utime = 0, stime = 0;
    if (p == NULL || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &utime, &stime) != 2) return 0.0;
    return (double) (utime + stime) / (double) sysconf(_SC_CLK_TCK);
}

static const char * classify(int status, const char * log, char * detail, size_t n) {
    FILE * f = fopen(log, "r");
    detail[0] = '\0';
    int sanitizer = 0;
    if (f != NULL) {
        char line[512];
        int located = 0;
        while (fgets(line, sizeof line, f) != NULL) {
            if (strstr(line, "Sanitizer") != NULL || strstr(line, "runtime error:") != NULL) {
                if (!sanitizer) snprintf(detail, n, "%s", line);
                sanitizer = 1;
                located   = strstr(line, "runtime error:") != NULL;  /* UBSan's line carries file:line */
            } else if (sanitizer && !located && strstr(line, "    #") != NULL && strstr(line, " in ") != NULL &&
                       strstr(line, "libsanitizer") == NULL && strstr(line, "libc.so") == NULL) {
                /* ASan: the first stack frame outside the sanitizer runtime says where */
                const size_t used = strlen(detail);
                snprintf(detail + used, n - used, " @ %s", line);
                located = 1;
            } else if (!sanitizer && detail[0] == '\0') {
                snprintf(detail, n, "%s", line);
            }
        }
        fclose(f);
    }
    for (char * c = detail; *c; ++c) {
        if (*c == '\n' || *c == '\t') *c = ' ';
    }
    if (sanitizer) return "sanitizer";
    if (WIFSIGNALED(status)) {
        snprintf(detail, n, "signal %d", WTERMSIG(status));
        return "crash";
    }
    switch (WEXITSTATUS(status)) {
        case EXIT_RAN: return "ok";
        case EXIT_REJECTED: return "rejected";
        default: return "crash";
    }
}

int main(int argc, char ** argv) {
    double timeout = 20.0;
    int first = 1, bad = 0;
    for (; first < argc && strncmp(argv[first], "--", 2) == 0; first += 2) {
        if (first + 1 >= argc) break;
        if (strcmp(argv[first], "--plugin") == 0) {
            if (omnimodel_load_plugin(argv[first + 1]) != OMNIMODEL_OK) {
                fprintf(stderr, "cannot load plugin: %s\n", omnimodel_last_error(NULL));
                return 2;
            }
        } else if (strcmp(argv[first], "--timeout") == 0) {
            timeout = atof(argv[first + 1]);
        }
    }
    char log[64];
    snprintf(log, sizeof log, "/tmp/omnimodel-replay-%d.log", (int) getpid());
    for (int i = first; i < argc; ++i) {
        fflush(stdout);
        const pid_t pid = fork();
        if (pid == 0) {
            if (freopen(log, "w", stderr) == NULL) _exit(EXIT_BROKEN);
            _exit(run_file(argv[i]));
        }
        int status = 0;
        const char * outcome = NULL;
        struct timespec step = {0, 5 * 1000 * 1000};
        for (double waited = 0; outcome == NULL; waited += 0.005) {
            if (waitpid(pid, &status, WNOHANG) == pid) break;
            if (cpu_seconds(pid) > timeout || waited > 15 * timeout) {
                kill(pid, SIGKILL);
                waitpid(pid, &status, 0);
                outcome = "hang";
            }
            nanosleep(&step, NULL);
        }
        char detail[400] = "";
        if (outcome == NULL) outcome = classify(status, log, detail, sizeof detail);
        bad |= strcmp(outcome, "ok") != 0 && strcmp(outcome, "rejected") != 0;
        printf("%s\t%s\t%s\n", outcome, argv[i], detail);
    }
    unlink(log);
    return bad ? 1 : 0;
}
