/*
 * pointwise's C API from C: the seed example (3 -> 2 channels on a 3x3 image, NCHW, with
 * bias), one ResNet-50 layer (the bottleneck expansion 64 -> 256 at 56x56 with bias, residual
 * and ReLU, on all cores) and the error paths. Compiled, linked against libpointwise_capi.a
 * and run by tests/c_program.rs, which computes the same through the Rust API and compares
 * the printed f32 bits.
 *
 * Output: one "key value..." line per fact; floats as the hex of their bits. Exit status 0
 * when every call behaved as expected, 1 otherwise (with the reason on stderr).
 */
#include "pointwise.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(call)                                                                          \
    do {                                                                                     \
        pw_status status_ = (call);                                                          \
        if (status_ != PW_STATUS_OK) {                                                       \
            fprintf(stderr, "%s:%d: %s returned %s: %s\n", __FILE__, __LINE__, #call,        \
                    pw_status_name(status_), pw_last_error_message());                       \
            return 1;                                                                        \
        }                                                                                    \
    } while (0)

#define EXPECT(cond)                                                                         \
    do {                                                                                     \
        if (!(cond)) {                                                                       \
            fprintf(stderr, "%s:%d: expected %s\n", __FILE__, __LINE__, #cond);              \
            return 1;                                                                        \
        }                                                                                    \
    } while (0)

static uint32_t bits(float v) {
    uint32_t b;
    memcpy(&b, &v, sizeof b);
    return b;
}

/* FNV-1a (64-bit) over the little-endian bytes of each value's bits, in order. */
static uint64_t hash_floats(const float *v, size_t n) {
    uint64_t h = 14695981039346656037ULL;
    for (size_t i = 0; i < n; i++) {
        uint32_t b = bits(v[i]);
        for (int byte = 0; byte < 4; byte++) {
            h ^= (b >> (8 * byte)) & 0xffu;
            h *= 1099511628211ULL;
        }
    }
    return h;
}

/* The test data, integer-valued (so every sum is exact): the same formulas are in
 * tests/c_program.rs. */
static float data_x(size_t i) { return (float)((int)((i * 7 + 3) % 17) - 8); }
static float data_w(size_t i) { return (float)((int)((i * 5 + 1) % 11) - 5); }
static float data_bias(size_t i) { return (float)((int)(i % 7) - 3); }
static float data_residual(size_t i) { return (float)((int)((i * 3 + 1) % 13) - 6); }

static void print_floats(const char *key, const float *v, size_t n) {
    printf("%s", key);
    for (size_t i = 0; i < n; i++) printf(" %08x", (unsigned)bits(v[i]));
    printf("\n");
}

/* The seed example: x = 1..27 (three 3x3 channel planes), two output channels. */
static int seed(void) {
    float x[27];
    for (int i = 0; i < 27; i++) x[i] = (float)(i + 1);
    const float w[6] = {0.5f, -1.0f, 2.0f, /* channel 2: */ 1.0f, 1.0f, 1.0f};
    const float bias[2] = {0.25f, -1.0f};

    pw_conv_desc desc;
    CHECK(pw_conv_desc_init(&desc, 3, 2));
    pw_plan *plan = NULL;
    CHECK(pw_plan_create(&desc, w, 6, bias, 2, &plan));

    size_t len = 0;
    CHECK(pw_plan_output_len(plan, 1, 3, 3, &len));
    EXPECT(len == 18);
    pw_output_dims dims;
    CHECK(pw_plan_output_dims(plan, 1, 3, 3, &dims));
    EXPECT(dims.n == 1 && dims.k == 2 && dims.h == 3 && dims.w == 3);
    size_t in_len = 0;
    CHECK(pw_plan_input_len(plan, 1, 3, 3, &in_len));
    EXPECT(in_len == 27);

    float y[18];
    CHECK(pw_forward(plan, x, 27, 1, 3, 3, NULL, 0, y, 18, NULL));
    /* y[0] = 0.5*1 - 10 + 2*19 + 0.25 */
    EXPECT(y[0] == 28.75f);
    print_floats("seed.y", y, 18);

    const char *name = NULL;
    CHECK(pw_plan_kernel_for(plan, 1, 3, 3, &name));
    printf("seed.kernel_for %s\n", name);
    CHECK(pw_plan_free(plan));
    return 0;
}

/* ResNet-50 conv2_x bottleneck expansion: 64 -> 256 at 56x56, bias, residual, ReLU. */
static int resnet(void) {
    const size_t c = 64, k = 256, h = 56, w = 56;
    const size_t x_len = c * h * w, w_len = k * c, y_len = k * h * w;
    float *x = malloc(x_len * sizeof *x);
    float *weights = malloc(w_len * sizeof *weights);
    float *bias = malloc(k * sizeof *bias);
    float *residual = malloc(y_len * sizeof *residual);
    float *y = malloc(y_len * sizeof *y);
    float *y2 = malloc(y_len * sizeof *y2);
    EXPECT(x && weights && bias && residual && y && y2);
    for (size_t i = 0; i < x_len; i++) x[i] = data_x(i);
    for (size_t i = 0; i < w_len; i++) weights[i] = data_w(i);
    for (size_t i = 0; i < k; i++) bias[i] = data_bias(i);
    for (size_t i = 0; i < y_len; i++) residual[i] = data_residual(i);

    pw_conv_desc desc;
    CHECK(pw_conv_desc_init(&desc, c, k));
    desc.activation = PW_ACTIVATION_RELU;
    desc.threads = 0; /* every core */
    pw_plan *plan = NULL;
    CHECK(pw_plan_create(&desc, weights, w_len, bias, k, &plan));
    pw_workspace *ws = NULL;
    CHECK(pw_workspace_create(&ws));

    size_t len = 0;
    CHECK(pw_plan_output_len(plan, 1, h, w, &len));
    EXPECT(len == y_len);
    CHECK(pw_forward(plan, x, x_len, 1, h, w, residual, y_len, y, y_len, ws));

    /* The same call again with the warm workspace, and with the residual in the output:
     * the same bits. */
    memcpy(y2, residual, y_len * sizeof *y2);
    CHECK(pw_forward_residual_in_place(plan, x, x_len, 1, h, w, y2, y_len, ws));
    EXPECT(memcmp(y, y2, y_len * sizeof *y) == 0);
    CHECK(pw_forward(plan, x, x_len, 1, h, w, residual, y_len, y2, y_len, ws));
    EXPECT(memcmp(y, y2, y_len * sizeof *y) == 0);

    const char *kernel = NULL, *kernel_for = NULL;
    CHECK(pw_plan_kernel_name(plan, &kernel));
    CHECK(pw_plan_kernel_for(plan, 1, h, w, &kernel_for));
    printf("resnet.kernel %s\n", kernel);
    printf("resnet.kernel_for %s\n", kernel_for);
    printf("resnet.len %zu\n", y_len);
    printf("resnet.hash %016llx\n", (unsigned long long)hash_floats(y, y_len));
    const size_t samples[] = {0, 1, 3135, 3136, 100000, y_len - 1};
    printf("resnet.samples");
    for (size_t i = 0; i < sizeof samples / sizeof samples[0]; i++)
        printf(" %zu:%08x", samples[i], (unsigned)bits(y[samples[i]]));
    printf("\n");

    /* Error path: an output buffer one element short. The call fails with
     * LENGTH_MISMATCH and a message, and writes nothing. */
    const float sentinel = -12345.0f;
    for (size_t i = 0; i < y_len; i++) y2[i] = sentinel;
    pw_status status = pw_forward(plan, x, x_len, 1, h, w, residual, y_len, y2, y_len - 1, ws);
    EXPECT(status == PW_STATUS_LENGTH_MISMATCH);
    printf("error.short_output %s %d\n", pw_status_name(status), (int)status);
    printf("error.short_output.message %s\n", pw_last_error_message());
    int untouched = 1;
    for (size_t i = 0; i < y_len; i++) untouched &= bits(y2[i]) == bits(sentinel);
    printf("error.short_output.untouched %d\n", untouched);
    EXPECT(untouched);

    /* A success clears the message. */
    CHECK(pw_plan_output_len(plan, 1, h, w, &len));
    EXPECT(strcmp(pw_last_error_message(), "") == 0);

    CHECK(pw_workspace_free(ws));
    CHECK(pw_plan_free(plan));
    free(x);
    free(weights);
    free(bias);
    free(residual);
    free(y);
    free(y2);
    return 0;
}

/* Errors found while making a plan, and NULL arguments. */
static int plan_errors(void) {
    const float w[6] = {1, 2, 3, 4, 5, 6};
    pw_conv_desc desc;
    CHECK(pw_conv_desc_init(&desc, 3, 2));
    pw_plan *plan = (pw_plan *)&desc; /* not NULL, to see it cleared */

    desc.kernel = "avx9000";
    pw_status status = pw_plan_create(&desc, w, 6, NULL, 0, &plan);
    EXPECT(status == PW_STATUS_UNKNOWN_KERNEL && plan == NULL);
    printf("error.unknown_kernel %s\n", pw_status_name(status));
    printf("error.unknown_kernel.message %s\n", pw_last_error_message());

    CHECK(pw_conv_desc_init(&desc, 3, 2));
    desc.layout = 7;
    status = pw_plan_create(&desc, w, 6, NULL, 0, &plan);
    EXPECT(status == PW_STATUS_INVALID_ARGUMENT && plan == NULL);
    printf("error.bad_layout %s\n", pw_status_name(status));

    CHECK(pw_conv_desc_init(&desc, 3, 2));
    status = pw_plan_create(&desc, w, 5, NULL, 0, &plan);
    EXPECT(status == PW_STATUS_LENGTH_MISMATCH && plan == NULL);
    printf("error.short_weights %s\n", pw_status_name(status));

    desc.groups = 2;
    status = pw_plan_create(&desc, w, 6, NULL, 0, &plan);
    EXPECT(status == PW_STATUS_GROUPS_DO_NOT_DIVIDE);

    CHECK(pw_conv_desc_init(&desc, 3, 2));
    desc.activation = PW_ACTIVATION_CLAMP;
    desc.clamp_min = 1.0f;
    desc.clamp_max = 0.0f;
    status = pw_plan_create(&desc, w, 6, NULL, 0, &plan);
    EXPECT(status == PW_STATUS_INVALID_ACTIVATION);

    float y[18];
    status = pw_forward(NULL, w, 6, 1, 1, 1, NULL, 0, y, 18, NULL);
    printf("error.null_plan %s\n", pw_status_name(status));
    EXPECT(status == PW_STATUS_NULL_POINTER);
    EXPECT(pw_plan_free(NULL) == PW_STATUS_OK);
    EXPECT(pw_workspace_free(NULL) == PW_STATUS_OK);
    EXPECT(strcmp(pw_status_name(999), "PW_STATUS_UNKNOWN") == 0);
    return 0;
}

int main(void) {
    printf("version %s\n", pw_version());
    if (seed() != 0 || resnet() != 0 || plan_errors() != 0) return 1;
    printf("done\n");
    return 0;
}
