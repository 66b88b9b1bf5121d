/* UNet kernels: GroupNorm + SiLU (with the time-embedding bias), the
 * sinusoidal time embedding, attention and the x2 upsampling + 3x3 conv,
 * against the same math in primitive engine ops (values and gradients),
 * PyTorch fixtures, finite differences, the memory attention keeps for
 * backward, and errors. */
#include "check.h"
#include <math.h>
#include <string.h>

/* Takes the gradient out of t (the next backward starts from none). */
static td_tensor *grad_of(td_tensor *t) {
    td_tensor *g = td_get_grad(t);
    td_set_grad(t, NULL);
    return g;
}

/* fused(in) against comp(in): values, then the gradients of the leaves
 * through sum(out * r) with the same random r. */
static void compare(const char *what, check_fn fused, check_fn comp, void *ctx, td_tensor **in, int nleaf,
                    td_tensor **leaves, float atol, float rtol) {
    char name[160];
    uint64_t s = 99;
    td_tensor *a = fused(in, ctx), *b = comp(in, ctx), *ga[8] = {0};
    snprintf(name, sizeof name, "%s: output", what);
    if (!check_close(name, a, b, atol, rtol)) goto done;
    td_tensor *r = check_rand(a->ndim, a->shape, -1.0f, 1.0f, &s);
    CHECK(td_backward(a, r) == 0, "%s: backward (fused): %s", what, td_last_error());
    for (int k = 0; k < nleaf; k++) ga[k] = grad_of(leaves[k]);
    CHECK(td_backward(b, r) == 0, "%s: backward (composite): %s", what, td_last_error());
    for (int k = 0; k < nleaf; k++) {
        td_tensor *gb = grad_of(leaves[k]);
        snprintf(name, sizeof name, "%s: gradient of leaf %d", what, k);
        check_close(name, ga[k], gb, atol, rtol);
        td_release(ga[k]);
        td_release(gb);
    }
    td_release(r);
done:
    td_release(a);
    td_release(b);
}

/* ---- group_norm_silu ---- */

typedef struct {
    int groups, nin;
    float eps;
} gns_ctx;

static td_tensor *gns_fn(td_tensor **in, void *ctx) {
    gns_ctx *c = ctx;
    return td_group_norm_silu(in[0], c->groups, c->nin > 1 ? in[1] : NULL, c->nin > 2 ? in[2] : NULL,
                              c->nin > 3 ? in[3] : NULL, c->eps);
}

/* silu(group_norm(x + temb[:, :, None, ...])) in primitive ops */
static td_tensor *gns_composite(td_tensor **in, void *ctx) {
    gns_ctx *c = ctx;
    td_tensor *x = in[0], *u = x;
    td_retain(u);
    if (c->nin > 3 && in[3]) {
        int64_t sh[TD_MAX_DIMS] = {x->shape[0], x->shape[1], 1, 1, 1, 1};
        td_tensor *t = td_reshape(in[3], x->ndim, sh);
        td_release(u);
        u = td_add(x, t);
        td_release(t);
    }
    td_tensor *g = td_group_norm(u, c->groups, c->nin > 1 ? in[1] : NULL, c->nin > 2 ? in[2] : NULL, c->eps);
    td_tensor *y = td_silu(g);
    td_release(u);
    td_release(g);
    return y;
}

static td_tensor *grad_leaf(td_tensor *t) {
    td_set_requires_grad(t, 1);
    return t;
}

static void test_gns_composite(void) {
    uint64_t s = 11;
    /* a UNet shape: [4,64,8,8], 32 groups, with the time-embedding bias */
    td_tensor *in[4] = {grad_leaf(check_rand(4, SHAPE(4, 64, 8, 8), -2, 3, &s)),
                        grad_leaf(check_rand(1, SHAPE(64), 0.5f, 1.5f, &s)),
                        grad_leaf(check_rand(1, SHAPE(64), -0.5f, 0.5f, &s)),
                        grad_leaf(check_rand(2, SHAPE(4, 64), -2, 2, &s))};
    gns_ctx c = {32, 4, 1e-5f};
    compare("group_norm_silu [4,64,8,8] temb", gns_fn, gns_composite, &c, in, 4, in, 2e-5f, 2e-4f);
    c.nin = 3;
    compare("group_norm_silu [4,64,8,8]", gns_fn, gns_composite, &c, in, 3, in, 2e-5f, 2e-4f);
    for (int k = 0; k < 4; k++) td_release(in[k]);

    /* a transposed (strided) input, one group, no affine, temb only */
    td_tensor *base = grad_leaf(check_rand(4, SHAPE(3, 12, 7, 5), -1, 1, &s));
    td_tensor *t = grad_leaf(check_rand(2, SHAPE(3, 12), -1, 1, &s));
    td_tensor *in2[4] = {td_transpose(base, 2, 3), NULL, NULL, t}, *leaves[2] = {base, t};
    gns_ctx c2 = {1, 4, 1e-5f};
    compare("group_norm_silu strided, temb only", gns_fn, gns_composite, &c2, in2, 2, leaves, 2e-5f, 2e-4f);
    td_release(in2[0]);
    td_release(base);
    td_release(t);

    /* large block (S = 4096 > one float chunk), values far from 0 */
    td_tensor *in3[3] = {grad_leaf(check_rand(4, SHAPE(2, 4, 64, 64), 40, 44, &s)),
                         grad_leaf(check_rand(1, SHAPE(4), 0.5f, 1.5f, &s)),
                         grad_leaf(check_rand(1, SHAPE(4), -0.5f, 0.5f, &s))};
    gns_ctx c3 = {2, 3, 1e-5f};
    compare("group_norm_silu [2,4,64,64] offset 42", gns_fn, gns_composite, &c3, in3, 3, in3, 1e-4f, 1e-3f);
    for (int k = 0; k < 3; k++) td_release(in3[k]);
}

static void test_gns_gradcheck(void) {
    uint64_t s = 5;
    td_tensor *base = check_rand(4, SHAPE(2, 6, 4, 3), -1.5f, 2, &s);
    td_tensor *x = grad_leaf(td_transpose(base, 2, 3)); /* [2,6,3,4], a strided leaf */
    td_tensor *in[4] = {x, grad_leaf(check_rand(1, SHAPE(6), 0.5f, 1.5f, &s)),
                        grad_leaf(check_rand(1, SHAPE(6), -0.5f, 0.5f, &s)),
                        grad_leaf(check_rand(4, SHAPE(2, 6, 1, 1), -1, 1, &s))}; /* temb [N,C,1,1] */
    gns_ctx c = {3, 4, 1e-5f};
    check_grad("group_norm_silu", gns_fn, &c, 4, in, 1e-3f, 2e-3f, 2e-2f, 0);
    gns_ctx c1 = {2, 1, 1e-3f};
    td_tensor *in1[1] = {grad_leaf(check_rand(3, SHAPE(2, 4, 5), -1, 1, &s))};
    check_grad("group_norm_silu 3-d, no affine", gns_fn, &c1, 1, in1, 1e-3f, 2e-3f, 2e-2f, 0);
    td_release(in1[0]);
    td_release(x);
    td_release(base);
    for (int k = 1; k < 4; k++) td_release(in[k]);
}

static void test_gns_nograd(void) {
    uint64_t s = 3;
    td_tensor *x = grad_leaf(check_rand(4, SHAPE(2, 4, 3, 3), -1, 1, &s));
    int prev = td_set_grad_enabled(0);
    td_tensor *y = td_group_norm_silu(x, 2, NULL, NULL, NULL, 1e-5f);
    td_set_grad_enabled(prev);
    CHECK(y && !y->requires_grad && !y->node, "group_norm_silu records nothing with grad mode off");
    td_release(y);
    td_release(x);
}

/* ---- timestep_embedding ---- */

typedef struct {
    int dim;
    float max_period;
} ts_ctx;

static td_tensor *ts_fn(td_tensor **in, void *ctx) {
    ts_ctx *c = ctx;
    return td_timestep_embedding(in[0], c->dim, c->max_period);
}

static void test_timestep(void) {
    float steps[3] = {0.0f, 7.0f, 500.0f};
    td_tensor *t = td_from_buffer(1, SHAPE(3), steps);
    td_set_requires_grad(t, 1);
    td_tensor *e = td_timestep_embedding(t, 6, 10000.0f);
    CHECK(e && !e->requires_grad, "timestep_embedding takes no gradient");
    /* half = 3: frequencies 1, 0.01, 1e-4; [sin | cos] */
    const double f[3] = {1.0, 0.01, 1e-4};
    for (int b = 0; e && b < 3; b++)
        for (int i = 0; i < 3; i++) {
            float s = e->data[b * 6 + i], co = e->data[b * 6 + 3 + i];
            CHECK(fabs(s - sin(steps[b] * f[i])) < 1e-6 && fabs(co - cos(steps[b] * f[i])) < 1e-6,
                  "timestep_embedding [%d,%d]: sin %g cos %g", b, i, s, co);
        }
    td_release(e);
    td_release(t);
}

/* ---- attention ---- */

static td_tensor *att_fn(td_tensor **in, void *ctx) { return td_attention(in[0], in[1], in[2]); }

/* softmax(q k^T / sqrt(d)) v in primitive ops */
static td_tensor *att_composite(td_tensor **in, void *ctx) {
    td_tensor *q = in[0], *k = in[1], *v = in[2];
    td_tensor *kt = td_transpose(k, -2, -1), *s = td_matmul(q, kt);
    td_tensor *ss = td_mul_scalar(s, 1.0f / sqrtf((float)q->shape[q->ndim - 1]));
    td_tensor *p = td_softmax(ss, -1), *o = td_matmul(p, v);
    td_release(kt);
    td_release(s);
    td_release(ss);
    td_release(p);
    return o;
}

static void test_attention_composite(void) {
    uint64_t s = 21;
    /* the UNet's lowest resolution: 7x7 pixels, 4 heads of 32 */
    td_tensor *in[3] = {grad_leaf(check_rand(4, SHAPE(4, 4, 49, 32), -1, 1, &s)),
                        grad_leaf(check_rand(4, SHAPE(4, 4, 49, 32), -1, 1, &s)),
                        grad_leaf(check_rand(4, SHAPE(4, 4, 49, 32), -1, 1, &s))};
    compare("attention [4,4,49,32]", att_fn, att_composite, NULL, in, 3, in, 1e-5f, 1e-4f);
    for (int k = 0; k < 3; k++) td_release(in[k]);

    /* several query tiles (300 x 100 > one tile), one slice, dv != d, L != S */
    td_tensor *in2[3] = {grad_leaf(check_rand(3, SHAPE(1, 300, 8), -2, 2, &s)),
                         grad_leaf(check_rand(3, SHAPE(1, 100, 8), -2, 2, &s)),
                         grad_leaf(check_rand(3, SHAPE(1, 100, 12), -1, 1, &s))};
    compare("attention tiles [1,300,8] x [1,100,8]", att_fn, att_composite, NULL, in2, 3, in2, 1e-5f, 1e-4f);
    for (int k = 0; k < 3; k++) td_release(in2[k]);

    /* q column-major per slice (a [B,H,d,L] transposed), k neither row- nor
     * column-major (a copy), v row-major with a row stride > dv */
    td_tensor *bq = grad_leaf(check_rand(4, SHAPE(2, 3, 16, 20), -1, 1, &s));
    td_tensor *bk = grad_leaf(check_rand(4, SHAPE(2, 16, 20, 3), -1, 1, &s));
    td_tensor *bv = grad_leaf(check_rand(4, SHAPE(2, 3, 20, 24), -1, 1, &s));
    td_tensor *in3[3] = {td_transpose(bq, 2, 3), td_permute(bk, (int[]){0, 3, 2, 1}), td_narrow(bv, 3, 2, 10)};
    td_tensor *leaves[3] = {bq, bk, bv};
    compare("attention strided views", att_fn, att_composite, NULL, in3, 3, leaves, 1e-5f, 1e-4f);
    for (int k = 0; k < 3; k++) {
        td_release(in3[k]);
        td_release(leaves[k]);
    }
}

static void test_attention_gradcheck(void) {
    uint64_t s = 8;
    td_tensor *bq = check_rand(4, SHAPE(1, 2, 3, 5), -1, 1, &s), *bk = check_rand(4, SHAPE(1, 4, 3, 2), -1, 1, &s);
    td_tensor *in[3] = {grad_leaf(td_transpose(bq, 2, 3)),              /* [1,2,5,3] column-major */
                        grad_leaf(td_permute(bk, (int[]){0, 3, 1, 2})), /* [1,2,4,3] copied */
                        grad_leaf(check_rand(4, SHAPE(1, 2, 4, 6), -1, 1, &s))};
    check_grad("attention strided", att_fn, NULL, 3, in, 1e-3f, 2e-3f, 2e-2f, 0);
    for (int k = 0; k < 3; k++) td_release(in[k]);
    td_release(bq);
    td_release(bk);
    td_tensor *in2[3] = {grad_leaf(check_rand(3, SHAPE(2, 6, 4), -2, 2, &s)),
                         grad_leaf(check_rand(3, SHAPE(2, 6, 4), -2, 2, &s)),
                         grad_leaf(check_rand(3, SHAPE(2, 6, 4), -1, 1, &s))};
    check_grad("attention [2,6,4]", att_fn, NULL, 3, in2, 1e-3f, 2e-3f, 2e-2f, 0);
    for (int k = 0; k < 3; k++) td_release(in2[k]);
}

/* Backward must not need [B,H,L,S]: the graph of the fused op holds the
 * output and a log-sum-exp per row, the composite's holds the probabilities. */
static void test_attention_memory(void) {
    uint64_t s = 4;
    int64_t B = 8, H = 4, L = 64, d = 16, P_bytes = B * H * L * L * 4, out_bytes = B * H * L * d * 4;
    td_tensor *in[3] = {grad_leaf(check_rand(4, SHAPE(B, H, L, d), -1, 1, &s)),
                        grad_leaf(check_rand(4, SHAPE(B, H, L, d), -1, 1, &s)),
                        grad_leaf(check_rand(4, SHAPE(B, H, L, d), -1, 1, &s))};
    int64_t before = td_mem_in_use();
    td_tensor *o = att_fn(in, NULL);
    int64_t held_fused = td_mem_in_use() - before;
    td_release(o);
    before = td_mem_in_use();
    o = att_composite(in, NULL);
    int64_t held_comp = td_mem_in_use() - before;
    td_release(o);
    CHECK(held_fused < out_bytes + P_bytes / 4,
          "attention keeps %lld bytes for backward; output %lld, [B,H,L,S] %lld", (long long)held_fused,
          (long long)out_bytes, (long long)P_bytes);
    CHECK(held_comp >= P_bytes, "composite attention keeps %lld bytes, [B,H,L,S] is %lld", (long long)held_comp,
          (long long)P_bytes);
    for (int k = 0; k < 3; k++) td_release(in[k]);
}

/* ---- upsample_conv3x3 ---- */

static td_tensor *upconv_fn(td_tensor **in, void *ctx) { return td_upsample_conv3x3(in[0], in[1], ctx ? NULL : in[2]); }

static td_tensor *upconv_composite(td_tensor **in, void *ctx) {
    td_tensor *u = td_upsample_nearest2d(in[0], 2), *y = td_conv2d(u, in[1], ctx ? NULL : in[2], 1, 1);
    td_release(u);
    return y;
}

static void test_upconv(void) {
    uint64_t s = 31;
    /* a UNet's 7 -> 14 step, and a strided x */
    td_tensor *in[3] = {grad_leaf(check_rand(4, SHAPE(4, 32, 7, 7), -1, 1, &s)),
                        grad_leaf(check_rand(4, SHAPE(24, 32, 3, 3), -0.2f, 0.2f, &s)),
                        grad_leaf(check_rand(1, SHAPE(24), -1, 1, &s))};
    compare("upsample_conv3x3 [4,32,7,7]", upconv_fn, upconv_composite, NULL, in, 3, in, 2e-5f, 2e-4f);
    td_tensor *base = grad_leaf(check_rand(4, SHAPE(2, 32, 6, 5), -1, 1, &s));
    td_tensor *in2[2] = {td_transpose(base, 2, 3), in[1]}, *leaves[2] = {base, in[1]};
    compare("upsample_conv3x3 strided, no bias", upconv_fn, upconv_composite, (void *)1, in2, 2, leaves, 2e-5f, 2e-4f);
    td_release(in2[0]);
    td_release(base);
    for (int k = 0; k < 3; k++) td_release(in[k]);
    td_tensor *g[3] = {grad_leaf(check_rand(4, SHAPE(2, 3, 3, 4), -1, 1, &s)),
                       grad_leaf(check_rand(4, SHAPE(2, 3, 3, 3), -1, 1, &s)),
                       grad_leaf(check_rand(1, SHAPE(2), -1, 1, &s))};
    check_grad("upsample_conv3x3", upconv_fn, NULL, 3, g, 1e-3f, 2e-3f, 2e-2f, 0);
    for (int k = 0; k < 3; k++) td_release(g[k]);
}

/* ---- fixtures and errors ---- */

static void test_fixtures(void) {
    check_fixture *f = fixture_load("unet.txt");
    gns_ctx affine = {3, 3, 1e-5f}, temb = {4, 4, 1e-5f}, plain = {2, 1, 1e-5f}, d3 = {2, 3, 1e-3f}, unet = {8, 4, 1e-5f};
    check_fixture_case(f, "gns_affine", gns_fn, &affine, 3, 2e-5f, 2e-4f);
    check_fixture_case(f, "gns_temb", gns_fn, &temb, 4, 2e-5f, 2e-4f);
    check_fixture_case(f, "gns_plain", gns_fn, &plain, 1, 2e-5f, 2e-4f);
    check_fixture_case(f, "gns_3d", gns_fn, &d3, 3, 2e-5f, 2e-4f);
    check_fixture_case(f, "gns_unet", gns_fn, &unet, 4, 2e-5f, 2e-4f);
    ts_ctx t32 = {32, 10000.0f}, t9 = {9, 100.0f}, t2 = {2, 10000.0f}, t64 = {64, 10000.0f};
    check_fixture_case(f, "timestep_32", ts_fn, &t32, 1, 1e-6f, 1e-6f);
    check_fixture_case(f, "timestep_odd9", ts_fn, &t9, 1, 1e-6f, 1e-6f);
    check_fixture_case(f, "timestep_2", ts_fn, &t2, 1, 1e-6f, 1e-6f);
    /* PyTorch in float32: the rounding of t f_i at t = 999 */
    check_fixture_case(f, "timestep_f32", ts_fn, &t64, 1, 2e-4f, 0.0f);
    const char *att[] = {"attention", "attention_cross", "attention_3d", "attention_peaked"};
    for (int i = 0; i < 4; i++) check_fixture_case(f, att[i], att_fn, NULL, 3, 1e-5f, 1e-4f);
    check_fixture_case(f, "upconv", upconv_fn, NULL, 3, 2e-5f, 2e-4f);
    check_fixture_case(f, "upconv_nobias", upconv_fn, (void *)1, 2, 2e-5f, 2e-4f);
    check_fixture_case(f, "upconv_1px", upconv_fn, NULL, 3, 2e-5f, 2e-4f);
    fixture_free(f);
}

static bool names(const char *what, const char *const *parts) {
    const char *e = td_last_error();
    for (; *parts; parts++)
        if (!strstr(e, *parts)) {
            CHECK(false, "%s: error lacks \"%s\": %s", what, *parts, e);
            return false;
        }
    CHECK(true, "ok");
    return true;
}
#define NAMES(what, ...) names(what, (const char *const[]){__VA_ARGS__, NULL})

static void test_errors(void) {
    td_tensor *x = td_zeros(4, SHAPE(2, 6, 3, 3)), *t = td_zeros(2, SHAPE(2, 5)), *w = td_zeros(1, SHAPE(4));
    CHECK(!td_group_norm_silu(x, 4, NULL, NULL, NULL, 1e-5f), "4 groups of 6 channels must fail");
    NAMES("groups", "group_norm_silu", "4 groups", "[2,6,3,3]");
    CHECK(!td_group_norm_silu(x, 3, NULL, NULL, t, 1e-5f), "temb [2,5] for [2,6,3,3] must fail");
    NAMES("temb", "group_norm_silu", "[2,5]", "[2,6,3,3]");
    CHECK(!td_group_norm_silu(x, 3, w, NULL, NULL, 1e-5f), "weight [4] for 6 channels must fail");
    NAMES("weight", "group_norm_silu", "weight", "[4]", "[2,6,3,3]");
    td_tensor *q = td_zeros(4, SHAPE(2, 4, 49, 32)), *k = td_zeros(4, SHAPE(2, 4, 49, 16));
    td_tensor *v = td_zeros(4, SHAPE(2, 4, 49, 32)), *k3 = td_zeros(4, SHAPE(2, 3, 49, 32));
    CHECK(!td_attention(q, k, v), "attention with head dims 32 and 16 must fail");
    NAMES("head dims", "attention", "[2,4,49,32]", "[2,4,49,16]");
    CHECK(!td_attention(q, k3, v), "attention with 4 and 3 heads must fail");
    NAMES("heads", "attention", "[2,3,49,32]", "leading");
    td_tensor *w3 = td_zeros(4, SHAPE(8, 6, 3, 3)), *w5 = td_zeros(4, SHAPE(8, 5, 3, 3)), *b4 = td_zeros(1, SHAPE(4));
    CHECK(!td_upsample_conv3x3(x, w5, NULL), "upsample_conv3x3 of 6 channels with a 5-channel weight must fail");
    NAMES("upconv channels", "upsample_conv3x3", "[2,6,3,3]", "[8,5,3,3]");
    CHECK(!td_upsample_conv3x3(x, w3, b4), "upsample_conv3x3 with bias [4] for 8 outputs must fail");
    NAMES("upconv bias", "upsample_conv3x3", "[8,6,3,3]", "[4]");
    td_release(w3);
    td_release(w5);
    td_release(b4);
    td_tensor *steps = td_zeros(2, SHAPE(4, 1));
    CHECK(!td_timestep_embedding(steps, 32, 10000.0f), "timestep_embedding of [4,1] must fail");
    NAMES("steps", "timestep_embedding", "[4,1]");
    td_release(steps);
    td_release(q);
    td_release(k);
    td_release(v);
    td_release(k3);
    td_release(x);
    td_release(t);
    td_release(w);
}

int main(void) {
    test_fixtures();
    test_gns_composite();
    test_gns_gradcheck();
    test_gns_nograd();
    test_timestep();
    test_attention_composite();
    test_attention_gradcheck();
    test_attention_memory();
    test_upconv();
    test_errors();
    CHECK(td_live_tensors() == 0, "tensors leaked: %lld live", (long long)td_live_tensors());
    return check_summary();
}
