/* conv2d and conv_transpose2d: PyTorch fixtures, the im2col + sgemm path
 * against the direct loops (values and all gradients, batch split over
 * threads or not, 1x1), finite-difference checks, and error messages. */
#include "check.h"
#include <string.h>

/* In engine/src/ops/conv.c and conv_winograd.c, not in tide.h: 1 = use
 * the direct loops; the Winograd tile size (0 = by shape, 2, 4) and chunk
 * budget in bytes (0 = the default). */
void td_conv_set_reference(int on);
void td_conv_set_winograd(int tile, int64_t budget);

typedef struct {
    int transposed, stride, pad, output_pad, bias;
} conv_cfg;

static td_tensor *apply_conv(td_tensor **in, void *ctx) {
    const conv_cfg *c = ctx;
    td_tensor *b = c->bias ? in[2] : NULL;
    return c->transposed ? td_conv_transpose2d(in[0], in[1], b, c->stride, c->pad, c->output_pad)
                         : td_conv2d(in[0], in[1], b, c->stride, c->pad);
}

static void test_fixtures(void) {
    static const char *const names[] = {
        "conv_k3_s1_p1", "conv_k3_s1_p1_c16", "conv_k3_s2_p1", "conv_k3_s1_p0", "conv_k3_s2_p0", "conv_k1_s1_p0",
        "conv_k1_s2_p0", "conv_k4_s2_p1", "conv_k4_s1_p1", "convt_k4_s2_p1_op0", "convt_k4_s2_p1_op1",
        "convt_k3_s2_p1_op1", "convt_k3_s2_p1_op0", "convt_k3_s1_p1_op0", "convt_k1_s1_p0_op0",
        "conv_k3_s1_p1_w24", /* Winograd F(4x4, 3x3) */
    };
    check_fixture *f = fixture_load("conv.txt");
    for (int ref = 0; ref < 2; ref++) {
        td_conv_set_reference(ref);
        for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
            td_tensor *p = fixture_get(f, names[i], "params");
            if (!p) {
                CHECK(false, "fixture case %s has no params", names[i]);
                continue;
            }
            conv_cfg c = {strncmp(names[i], "convt", 5) == 0, (int)p->data[0], (int)p->data[1], (int)p->data[2],
                          fixture_get(f, names[i], "in2") != NULL};
            check_fixture_case(f, names[i], apply_conv, &c, c.bias ? 3 : 2, 1e-4f, 1e-4f);
        }
    }
    td_conv_set_reference(0);
    fixture_free(f);
}

typedef struct {
    int64_t n, cin, h, w, cout, k;
    conv_cfg c;
    int64_t kw; /* kernel width when not k */
    float atol; /* absolute tolerance against the direct loops when not 1e-4 */
} shape_case;

/* Output and gradients of x, w, b for a fixed upstream gradient; twice
 * runs backward twice (the second pass adds into the existing .grad). */
static void run(const shape_case *sc, int ref, int twice, td_tensor **res) {
    uint64_t s = 42;
    const conv_cfg *c = &sc->c;
    td_tensor *x = check_rand(4, SHAPE(sc->n, sc->cin, sc->h, sc->w), -1, 1, &s);
    int64_t kw = sc->kw ? sc->kw : sc->k;
    td_tensor *w = c->transposed ? check_rand(4, SHAPE(sc->cin, sc->cout, sc->k, kw), -1, 1, &s)
                                 : check_rand(4, SHAPE(sc->cout, sc->cin, sc->k, kw), -1, 1, &s);
    td_tensor *b = check_rand(1, SHAPE(sc->cout), -1, 1, &s);
    td_tensor *in[3] = {x, w, b};
    for (int k = 0; k < 3; k++) td_set_requires_grad(in[k], 1);
    td_conv_set_reference(ref);
    td_tensor *out = apply_conv(in, (void *)c);
    td_tensor *g = out ? check_rand(out->ndim, out->shape, -1, 1, &s) : NULL;
    for (int pass = 0; out && pass < 1 + twice; pass++)
        if (td_backward(out, g)) CHECK(false, "backward: %s", td_last_error());
    td_conv_set_reference(0);
    res[0] = out;
    for (int k = 0; k < 3; k++) res[k + 1] = td_get_grad(in[k]);
    for (int k = 0; k < 3; k++) td_release(in[k]);
    td_release(g);
}

/* The fast path against the direct loops, on shapes that exercise the
 * batch split over threads (n >= 2), images in turn (n = 1), strides,
 * padding, 1x1 and non-square kernels, and the second backward pass adding
 * into .grad. */
static void test_against_reference(void) {
    static const shape_case cases[] = {
        {5, 3, 9, 8, 4, 3, {0, 1, 1, 0, 1}, 0, 0},  {1, 4, 7, 7, 6, 3, {0, 2, 1, 0, 1}, 0, 0},
        {4, 6, 5, 5, 3, 1, {0, 1, 0, 0, 1}, 0, 0},  {1, 6, 5, 4, 3, 1, {0, 1, 0, 0, 1}, 0, 0},
        {3, 2, 10, 9, 5, 4, {0, 2, 1, 0, 1}, 0, 0}, {2, 3, 6, 6, 2, 5, {0, 3, 2, 0, 1}, 0, 0},
        {3, 4, 5, 5, 3, 4, {1, 2, 1, 0, 1}, 0, 0},  {1, 4, 5, 6, 3, 3, {1, 2, 1, 1, 1}, 0, 0},
        {5, 3, 4, 4, 2, 3, {1, 1, 1, 0, 1}, 0, 0},  {2, 5, 4, 3, 4, 1, {1, 1, 0, 0, 1}, 0, 0},
        {1, 2, 3, 3, 3, 5, {1, 3, 2, 2, 1}, 0, 0},  {3, 2, 6, 7, 3, 3, {0, 1, 1, 0, 1}, 1, 0},
        {2, 3, 5, 6, 2, 1, {0, 1, 1, 0, 1}, 3, 0}, {3, 3, 4, 5, 2, 2, {1, 1, 0, 0, 1}, 3, 0},
        /* direct loops (stride 1, <= 4 output channels): pads 0-2, a 4x4 and
         * a 3x5 kernel, one image */
        {2, 8, 7, 9, 1, 3, {0, 1, 0, 0, 1}, 0, 0}, {3, 5, 6, 5, 2, 4, {0, 1, 2, 0, 1}, 0, 0},
        {1, 4, 5, 6, 3, 3, {0, 1, 1, 0, 1}, 5, 0},
        /* Winograd (3x3, stride 1, >= 16 channels): partial tiles, pads 0-2,
         * pad 3 (input gradient through im2col), one image, many chunks */
        {3, 16, 7, 7, 16, 3, {0, 1, 1, 0, 1}, 0, 0}, {2, 16, 6, 5, 20, 3, {0, 1, 0, 0, 1}, 0, 0},
        {1, 17, 5, 6, 16, 3, {0, 1, 2, 0, 1}, 0, 0}, {3, 16, 4, 4, 16, 3, {0, 1, 3, 0, 1}, 0, 0},
        {120, 16, 3, 3, 16, 3, {0, 1, 1, 0, 1}, 0, 0},
        /* Winograd F(4x4, 3x3) (outputs >= 8 x 24): partial tiles, pads 0-2;
         * with 48 channels in and 40 out its rounding (the transforms scale
         * by up to 10 each way) reaches ~1e-5 of the gradients' range (~10) */
        {2, 16, 9, 26, 16, 3, {0, 1, 1, 0, 1}, 0, 0}, {1, 16, 10, 27, 20, 3, {0, 1, 0, 0, 1}, 0, 0},
        {3, 17, 7, 23, 16, 3, {0, 1, 2, 0, 1}, 0, 0}, {2, 48, 8, 28, 40, 3, {0, 1, 1, 0, 1}, 0, 4e-4f},
        /* im2col in groups of 1024 / P images: 4 + 4 + 3 (16x16 outputs),
         * 5 + 4 (4x4 stride 2 on 28x28, PolyMNIST's front end), one image
         * a group (32x32) */
        {11, 3, 16, 16, 5, 3, {0, 1, 1, 0, 1}, 0, 0}, {9, 4, 28, 28, 6, 4, {0, 2, 1, 0, 1}, 0, 0},
        {2, 3, 32, 32, 5, 3, {0, 1, 1, 0, 1}, 0, 0},
    };
    /* Winograd as chosen by shape; then forced F(2x2) and F(4x4) on every
     * shape, with chunks of one tile row (a 2 KB budget) */
    static const int64_t modes[3][2] = {{0, 0}, {2, 2048}, {4, 2048}};
    char what[160];
    size_t ncases = sizeof cases / sizeof *cases;
    for (size_t mi = 0; mi < 3 * ncases; mi++) {
        size_t md = mi / ncases, i = mi % ncases;
        for (int twice = 0; twice < 2; twice++) {
            td_tensor *want[4], *got[4];
            run(&cases[i], 1, twice, want);
            td_conv_set_winograd((int)modes[md][0], modes[md][1]);
            run(&cases[i], 0, twice, got);
            td_conv_set_winograd(0, 0);
            static const char *const names[4] = {"output", "grad x", "grad w", "grad b"};
            for (int k = 0; k < 4; k++) {
                snprintf(what, sizeof what, "%s case %zu%s, Winograd tile %d budget %d: %s",
                         cases[i].c.transposed ? "conv_t" : "conv", i, twice ? " (two passes)" : "",
                         (int)modes[md][0], (int)modes[md][1], names[k]);
                check_close(what, got[k], want[k], cases[i].atol > 0 ? cases[i].atol : 1e-4f, 1e-4f);
                td_release(want[k]);
                td_release(got[k]);
            }
        }
    }
}

/* x as a permuted view (not contiguous) of a [N,H,W,C] leaf. */
static td_tensor *apply_conv_nhwc(td_tensor **in, void *ctx) {
    td_tensor *x = td_permute(in[0], (const int[]){0, 3, 1, 2});
    td_tensor *ins[3] = {x, in[1], in[2]};
    td_tensor *out = apply_conv(ins, ctx);
    td_release(x);
    return out;
}

static void test_gradients(void) {
    uint64_t s = 3;
    conv_cfg c2 = {0, 2, 1, 0, 1}, ct = {1, 2, 1, 1, 1}, c1 = {0, 1, 0, 0, 0};
    td_tensor *a[3] = {check_rand(4, SHAPE(2, 5, 5, 3), -1, 1, &s), check_rand(4, SHAPE(2, 3, 3, 3), -1, 1, &s),
                       check_rand(1, SHAPE(2), -1, 1, &s)};
    td_tensor *b[3] = {check_rand(4, SHAPE(2, 2, 3, 3), -1, 1, &s), check_rand(4, SHAPE(2, 3, 4, 4), -1, 1, &s),
                       check_rand(1, SHAPE(3), -1, 1, &s)};
    td_tensor *d[2] = {check_rand(4, SHAPE(3, 4, 2, 3), -1, 1, &s), check_rand(4, SHAPE(2, 4, 1, 1), -1, 1, &s)};
    for (int k = 0; k < 3; k++) {
        td_set_requires_grad(a[k], 1);
        td_set_requires_grad(b[k], 1);
        if (k < 2) td_set_requires_grad(d[k], 1);
    }
    check_grad("conv2d k3 s2 p1, x permuted", apply_conv_nhwc, &c2, 3, a, 1e-2f, 2e-3f, 1e-2f, 0);
    check_grad("conv_transpose2d k4 s2 p1 op1", apply_conv, &ct, 3, b, 1e-2f, 2e-3f, 1e-2f, 0);
    check_grad("conv2d 1x1, no bias", apply_conv, &c1, 2, d, 1e-2f, 2e-3f, 1e-2f, 0);
    conv_cfg cw = {0, 1, 1, 0, 1};
    td_tensor *e[3] = {check_rand(4, SHAPE(2, 16, 5, 4), -1, 1, &s), check_rand(4, SHAPE(16, 16, 3, 3), -1, 1, &s),
                       check_rand(1, SHAPE(16), -1, 1, &s)};
    for (int k = 0; k < 3; k++) td_set_requires_grad(e[k], 1);
    check_grad("conv2d 3x3 s1 p1, 16 channels (Winograd)", apply_conv, &cw, 3, e, 1e-2f, 5e-3f, 1e-2f, 97);
    for (int k = 0; k < 3; k++) td_release(e[k]);
    td_tensor *e1[3] = {check_rand(4, SHAPE(2, 5, 6, 7), -1, 1, &s), check_rand(4, SHAPE(2, 5, 3, 3), -1, 1, &s),
                        check_rand(1, SHAPE(2), -1, 1, &s)};
    for (int k = 0; k < 3; k++) td_set_requires_grad(e1[k], 1);
    check_grad("conv2d 3x3 s1 p1, 2 channels out (direct)", apply_conv, &cw, 3, e1, 1e-2f, 5e-3f, 1e-2f, 0);
    for (int k = 0; k < 3; k++) td_release(e1[k]);
    td_tensor *e4[3] = {check_rand(4, SHAPE(1, 16, 8, 24), -1, 1, &s),
                        check_rand(4, SHAPE(16, 16, 3, 3), -1, 1, &s), check_rand(1, SHAPE(16), -1, 1, &s)};
    for (int k = 0; k < 3; k++) td_set_requires_grad(e4[k], 1);
    check_grad("conv2d 3x3 s1 p1, 8x24 (Winograd F(4x4))", apply_conv, &cw, 3, e4, 1e-2f, 5e-3f, 1e-2f, 97);
    for (int k = 0; k < 3; k++) td_release(e4[k]);
    for (int k = 0; k < 3; k++) {
        td_release(a[k]);
        td_release(b[k]);
        if (k < 2) td_release(d[k]);
    }
}

static void expect_error(td_tensor *r, const char *what, const char *const *parts) {
    CHECK(r == NULL, "%s must fail", what);
    td_release(r);
    for (int i = 0; parts[i]; i++)
        CHECK(strstr(td_last_error(), parts[i]), "%s: message lacks \"%s\": %s", what, parts[i], td_last_error());
}

static void test_errors(void) {
    td_tensor *x = td_zeros(4, SHAPE(2, 3, 5, 5)), *w = td_zeros(4, SHAPE(4, 2, 3, 3));
    td_tensor *w7 = td_zeros(4, SHAPE(4, 3, 7, 7)), *b = td_zeros(1, SHAPE(5)), *w3 = td_zeros(4, SHAPE(3, 4, 3, 3));
    td_tensor *x3 = td_zeros(3, SHAPE(3, 5, 5));
    expect_error(td_conv2d(x, w, NULL, 1, 1), "conv2d channels",
                 (const char *[]){"conv2d", "[2,3,5,5]", "[4,2,3,3]", "channels", NULL});
    expect_error(td_conv2d(x, w7, NULL, 1, 0), "conv2d kernel too large",
                 (const char *[]){"conv2d", "[2,3,5,5]", "[4,3,7,7]", "larger", NULL});
    expect_error(td_conv2d(x3, w, NULL, 1, 0), "conv2d 3-D x", (const char *[]){"conv2d", "[3,5,5]", NULL});
    expect_error(td_conv2d(x, w7, NULL, 0, 3), "conv2d stride 0", (const char *[]){"conv2d", "stride", NULL});
    expect_error(td_conv_transpose2d(x, w3, b, 2, 1, 1), "conv_transpose2d bias",
                 (const char *[]){"conv_transpose2d", "[3,4,3,3]", "[5]", NULL});
    expect_error(td_conv_transpose2d(x, w3, NULL, 2, 1, 2), "conv_transpose2d output_pad",
                 (const char *[]){"conv_transpose2d", "[2,3,5,5]", "output_pad", NULL});
    expect_error(td_conv_transpose2d(x, w, NULL, 2, 1, 0), "conv_transpose2d channels",
                 (const char *[]){"conv_transpose2d", "[2,3,5,5]", "[4,2,3,3]", "channels", NULL});
    td_release(x);
    td_release(w);
    td_release(w7);
    td_release(b);
    td_release(w3);
    td_release(x3);
}

int main(void) {
    test_fixtures();
    test_against_reference();
    test_gradients();
    test_errors();
    CHECK(td_live_tensors() == 0, "tensors leaked: %lld live", (long long)td_live_tensors());
    return check_summary();
}
