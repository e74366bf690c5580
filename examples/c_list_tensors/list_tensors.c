/* Load a GGUF with the omnimodel runtime and print its architecture and tensors.
 * Exit codes: 0 ok, 1 usage, 2 the runtime refused the file (the message says why). */
#include <omnimodel.h>

#include <inttypes.h>
#include <stdio.h>

int main(int argc, char ** argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s MODEL.gguf\n", argv[0]);
        return 1;
    }
    struct omnimodel_params params = omnimodel_default_params();
    params.n_threads = 1;

    omnimodel_context * ctx = NULL;
    const omnimodel_status st = omnimodel_load(argv[1], params, &ctx);
    if (st != OMNIMODEL_OK) {
        fprintf(stderr, "error %d (%s): %s\n", (int) st, omnimodel_status_string(st), omnimodel_last_error(NULL));
        return 2;
    }

    printf("omnimodel %s (ggml %s)\n", omnimodel_version(), omnimodel_ggml_version());
    printf("architecture: %s\n", omnimodel_architecture(ctx));
    const int64_t n = omnimodel_n_tensors(ctx);
    printf("tensors: %" PRId64 "\n", n);
    for (int64_t i = 0; i < n; ++i) {
        struct omnimodel_tensor_info ti;
        if (omnimodel_get_tensor_info(ctx, i, &ti) != OMNIMODEL_OK) {
            fprintf(stderr, "%s\n", omnimodel_last_error(ctx));
            omnimodel_free(ctx);
            return 2;
        }
        printf("%s\t%s\t", ti.name, ti.type_name);
        for (int d = 0; d < ti.n_dims; ++d) {
            printf(d ? "x%" PRId64 : "%" PRId64, ti.ne[d]);
        }
        printf("\t%zu\n", ti.n_bytes);
    }
    omnimodel_free(ctx);
    return 0;
}
