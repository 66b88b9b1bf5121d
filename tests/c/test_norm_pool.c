/* group_norm, avg_pool2d, upsample_nearest2d: PyTorch fixtures, gradient
 * checks (strided inputs), the fused group_norm against the same math
 * written with engine ops, and bad inputs. */
#include "check.h"
#include <stdlib.h>
#include <string.h>

typedef struct { int groups; float eps; int affine; } gn_ctx;
typedef struct { int k, s, p; } pool_ctx;

static td_tensor *apply_gn(td_tensor **in, void *ctx) {
    gn_ctx *c = ctx;
    return td_group_norm(in[0], c->groups, c->affine ? in[1] : NULL, c->affine ? in[2] : NULL, c->eps);
}
static td_tensor *apply_pool(td_tensor **in, void *ctx) {
    pool_ctx *c = ctx;
    return td_avg_pool2d(in[0], c->k, c->s, c->p);
}
static td_tensor *apply_up(td_tensor **in, void *ctx) { return td_upsample_nearest2d(in[0], *(int *)ctx); }

static void test_fixtures(void) {
    check_fixture *f = fixture_load("norm_pool.txt");
    static const struct { const char *name; gn_ctx c; } gn[] = {
        {"gn_4d", {3, 1e-5f, 1}}, {"gn_3d_g1", {1, 1e-5f, 1}}, {"gn_5d", {2, 1e-5f, 1}},
        {"gn_2d_eps", {2, 1e-2f, 1}}, {"gn_noaffine", {4, 1e-5f, 0}},
    };
    for (size_t i = 0; i < sizeof gn / sizeof *gn; i++)
        check_fixture_case(f, gn[i].name, apply_gn, (void *)&gn[i].c, gn[i].c.affine ? 3 : 1, 1e-4f, 1e-3f);
    static const struct { const char *name; pool_ctx c; } pool[] = {
        {"pool_k2s2p0", {2, 2, 0}}, {"pool_k3s2p1", {3, 2, 1}}, {"pool_k3s1p1", {3, 1, 1}},
        {"pool_3d_k2s1p1", {2, 1, 1}},
    };
    for (size_t i = 0; i < sizeof pool / sizeof *pool; i++)
        check_fixture_case(f, pool[i].name, apply_pool, (void *)&pool[i].c, 1, 1e-5f, 1e-4f);
    static int s2 = 2, s3 = 3;
    check_fixture_case(f, "up_s2", apply_up, &s2, 1, 1e-6f, 1e-5f);
    check_fixture_case(f, "up_s3_3d", apply_up, &s3, 1, 1e-6f, 1e-5f);
    fixture_free(f);
}

static void test_gradients(void) {
    uint64_t s = 11;
    /* x [2,6,3,4] as a permuted view of [2,3,4,6] (channels last in memory) */
    td_tensor *base = check_rand(4, SHAPE(2, 3, 4, 6), -2.0f, 2.0f, &s);
    td_tensor *x = td_permute(base, (int[]){0, 3, 1, 2});
    td_tensor *w = check_rand(1, SHAPE(6), 0.5f, 1.5f, &s), *b = check_rand(1, SHAPE(6), -1, 1, &s);
    td_set_requires_grad(x, 1);
    td_set_requires_grad(w, 1);
    td_set_requires_grad(b, 1);
    gn_ctx g3 = {3, 1e-5f, 1}, g6 = {6, 1e-3f, 0};
    td_tensor *in[3] = {x, w, b};
    check_grad("group_norm strided x", apply_gn, &g3, 3, in, 1e-3f, 3e-3f, 3e-2f, 0);
    check_grad("group_norm no affine, G=C", apply_gn, &g6, 1, in, 1e-3f, 3e-3f, 3e-2f, 0);
    td_release(w);
    td_release(b);
    td_release(x);
    td_release(base);

    /* a bigger input, above the parallel threshold, sampled */
    td_tensor *big[3] = {check_rand(4, SHAPE(4, 32, 16, 17), -1, 3, &s), check_rand(1, SHAPE(32), 0.5f, 1.5f, &s),
                         check_rand(1, SHAPE(32), -1, 1, &s)};
    for (int k = 0; k < 3; k++) td_set_requires_grad(big[k], 1);
    gn_ctx g8 = {8, 1e-5f, 1};
    check_grad("group_norm [4,32,16,17]", apply_gn, &g8, 3, big, 1e-2f, 1e-2f, 5e-2f, 40);
    for (int k = 0; k < 3; k++) td_release(big[k]);

    pool_ctx pools[] = {{2, 2, 0}, {3, 2, 1}, {3, 1, 1}, {4, 3, 2}};
    for (size_t i = 0; i < sizeof pools / sizeof *pools; i++) {
        td_tensor *pb = check_rand(4, SHAPE(2, 7, 6, 3), -1, 1, &s);
        td_tensor *px = td_permute(pb, (int[]){0, 3, 1, 2}); /* [2,3,7,6] strided */
        td_set_requires_grad(px, 1);
        char what[64];
        snprintf(what, sizeof what, "avg_pool2d k%d s%d p%d", pools[i].k, pools[i].s, pools[i].p);
        check_grad(what, apply_pool, &pools[i], 1, &px, 1e-3f, 2e-3f, 2e-2f, 0);
        td_release(px);
        td_release(pb);
    }
    for (int sc = 1; sc <= 3; sc++) {
        td_tensor *ub = check_rand(3, SHAPE(3, 5, 2), -1, 1, &s);
        td_tensor *ux = td_transpose(ub, 1, 2); /* [3,2,5] strided */
        td_set_requires_grad(ux, 1);
        check_grad("upsample_nearest2d", apply_up, &sc, 1, &ux, 1e-3f, 2e-3f, 2e-2f, 0);
        td_release(ux);
        td_release(ub);
    }
}

/* group_norm written with engine ops: x [N,C,H,W] -> [N,G,M], normalize,
 * then the per-channel affine. */
static td_tensor *gn_composite(td_tensor *x, int G, td_tensor *w, td_tensor *b, float eps) {
    int64_t N = x->shape[0], C = x->shape[1], M = x->numel / (N * G);
    td_tensor *xr = td_reshape(x, 3, SHAPE(N, G, M));
    td_tensor *s1 = td_sum(xr, 4, 1), *mu = td_mul_scalar(s1, 1.0f / (float)M);
    td_tensor *d = td_sub(xr, mu), *d2 = td_square(d), *s2 = td_sum(d2, 4, 1);
    td_tensor *var = td_mul_scalar(s2, 1.0f / (float)M), *ve = td_add_scalar(var, eps), *r = td_rsqrt(ve);
    td_tensor *y = td_mul(d, r), *y4 = td_reshape(y, 4, x->shape);
    td_tensor *w3 = td_reshape(w, 3, SHAPE(C, 1, 1)), *b3 = td_reshape(b, 3, SHAPE(C, 1, 1));
    td_tensor *yw = td_mul(y4, w3), *out = td_add(yw, b3);
    td_tensor *tmp[] = {xr, s1, mu, d, d2, s2, var, ve, r, y, y4, w3, b3, yw};
    for (size_t i = 0; i < sizeof tmp / sizeof *tmp; i++) td_release(tmp[i]);
    return out;
}

static void test_against_composite(void) {
    uint64_t s = 5;
    td_tensor *x = check_rand(4, SHAPE(4, 32, 16, 17), -1, 3, &s);
    td_tensor *w = check_rand(1, SHAPE(32), 0.5f, 1.5f, &s), *b = check_rand(1, SHAPE(32), -1, 1, &s);
    td_tensor *gy = check_rand(4, x->shape, -1, 1, &s);
    td_tensor *grads[2][3];
    td_tensor *outs[2];
    for (int v = 0; v < 2; v++) {
        td_tensor *ins[3] = {td_clone(x), td_clone(w), td_clone(b)};
        for (int k = 0; k < 3; k++) td_set_requires_grad(ins[k], 1);
        outs[v] = v ? gn_composite(ins[0], 8, ins[1], ins[2], 1e-5f) : td_group_norm(ins[0], 8, ins[1], ins[2], 1e-5f);
        CHECK(outs[v] && td_backward(outs[v], gy) == 0, "group_norm variant %d: %s", v, td_last_error());
        for (int k = 0; k < 3; k++) {
            grads[v][k] = td_get_grad(ins[k]);
            td_release(ins[k]);
        }
    }
    check_close("group_norm fused vs composite: out", outs[0], outs[1], 1e-5f, 1e-4f);
    const char *names[3] = {"grad x", "grad w", "grad b"};
    for (int k = 0; k < 3; k++) {
        check_close(names[k], grads[0][k], grads[1][k], 1e-4f, 1e-3f);
        td_release(grads[0][k]);
        td_release(grads[1][k]);
    }
    td_release(outs[0]);
    td_release(outs[1]);
    td_release(x);
    td_release(w);
    td_release(b);
    td_release(gy);
}

/* ---- bad inputs ---- */

static void test_errors(void) {
    uint64_t s = 3;
    td_tensor *x = check_rand(4, SHAPE(2, 6, 4, 4), -1, 1, &s), *w = td_ones(1, SHAPE(6)), *w5 = td_ones(1, SHAPE(5));
    float *sx = check_snapshot(x), *sw = check_snapshot(w);
    check_error(td_group_norm(x, 4, w, NULL, 1e-5f), "group_norm 4 groups of 6", "group_norm", "[2,6,4,4]", "4 groups");
    check_error(td_group_norm(x, 0, NULL, NULL, 1e-5f), "group_norm 0 groups", "group_norm", "[2,6,4,4]", NULL);
    check_error(td_group_norm(x, 3, w5, NULL, 1e-5f), "group_norm weight [5]", "group_norm", "[2,6,4,4]", "[5]");
    check_error(td_group_norm(x, 3, w, w5, 1e-5f), "group_norm bias [5]", "group_norm", "[2,6,4,4]", "[5]");
    check_error(td_group_norm(w, 1, NULL, NULL, 1e-5f), "group_norm 1-D", "group_norm", "[6]", NULL);
    check_error(td_group_norm(NULL, 1, NULL, NULL, 1e-5f), "group_norm NULL", "group_norm", NULL, NULL);
    check_error(td_avg_pool2d(x, 5, 1, 0), "avg_pool2d kernel 5 on 4x4", "avg_pool2d", "[2,6,4,4]", "kernel 5");
    check_error(td_avg_pool2d(x, 7, 1, 1), "avg_pool2d kernel 7, pad 1", "avg_pool2d", "[2,6,4,4]", NULL);
    check_error(td_avg_pool2d(x, 2, 2, 2), "avg_pool2d pad > kernel/2", "avg_pool2d", "[2,6,4,4]", NULL);
    check_error(td_avg_pool2d(x, 2, 0, 0), "avg_pool2d stride 0", "avg_pool2d", "[2,6,4,4]", NULL);
    check_error(td_avg_pool2d(w, 1, 1, 0), "avg_pool2d on 1-D", "avg_pool2d", "[6]", NULL);
    check_error(td_upsample_nearest2d(x, 0), "upsample scale 0", "upsample_nearest2d", "[2,6,4,4]", NULL);
    check_error(td_upsample_nearest2d(w, 2), "upsample 1-D", "upsample_nearest2d", "[6]", NULL);
    check_unchanged("group_norm x", x, sx);
    check_unchanged("group_norm w", w, sw);
    td_release(x);
    td_release(w);
    td_release(w5);
}

int main(void) {
    test_fixtures();
    test_gradients();
    test_against_composite();
    test_errors();
    CHECK(td_live_tensors() == 0, "tensors leaked: %lld live", (long long)td_live_tensors());
    return check_summary();
}
