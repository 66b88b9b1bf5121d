/* Losses and log densities: PyTorch fixtures (torch.nn.functional and
 * torch.distributions), gradient checks with broadcast and strided inputs,
 * the fused ops against the same math written with engine ops, and bad
 * inputs. */
#include "check.h"
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef td_tensor *(*bin_fn)(td_tensor *, td_tensor *);
typedef td_tensor *(*tri_fn)(td_tensor *, td_tensor *, td_tensor *);

static td_tensor *apply2(td_tensor **in, void *ctx) { return ((bin_fn)ctx)(in[0], in[1]); }
static td_tensor *apply3(td_tensor **in, void *ctx) { return ((tri_fn)ctx)(in[0], in[1], in[2]); }
static td_tensor *apply_kl(td_tensor **in, void *ctx) { return td_kl_normal(in[0], in[1], in[2], in[3]); }
static td_tensor *apply_rowdist(td_tensor **in, void *ctx) { return td_rowdist(in[0], in[1], (int)(intptr_t)ctx); }
static td_tensor *rowdist1(td_tensor *x, td_tensor *y) { return td_rowdist(x, y, 1); }
static td_tensor *rowdist2(td_tensor *x, td_tensor *y) { return td_rowdist(x, y, 2); }

static void test_fixtures(void) {
    check_fixture *f = fixture_load("loss.txt");
    check_fixture_case(f, "bce", apply2, (void *)td_bce_with_logits, 2, 1e-5f, 1e-4f);
    check_fixture_case(f, "bce_bcast", apply2, (void *)td_bce_with_logits, 2, 1e-5f, 1e-4f);
    check_fixture_case(f, "bce_extreme", apply2, (void *)td_bce_with_logits, 2, 1e-5f, 1e-5f);
    check_fixture_case(f, "mse", apply2, (void *)td_mse_loss, 2, 1e-6f, 1e-5f);
    check_fixture_case(f, "mse_bcast", apply2, (void *)td_mse_loss, 2, 1e-6f, 1e-5f);
    check_fixture_case(f, "ce", apply2, (void *)td_cross_entropy, 2, 1e-5f, 1e-4f);
    check_fixture_case(f, "ce_large", apply2, (void *)td_cross_entropy, 2, 1e-4f, 1e-5f);
    check_fixture_case(f, "ce_1class", apply2, (void *)td_cross_entropy, 2, 1e-6f, 1e-5f);
    check_fixture_case(f, "normal", apply3, (void *)td_normal_log_prob, 3, 1e-5f, 1e-4f);
    check_fixture_case(f, "normal_bcast", apply3, (void *)td_normal_log_prob, 3, 1e-5f, 1e-4f);
    check_fixture_case(f, "laplace", apply3, (void *)td_laplace_log_prob, 3, 1e-5f, 1e-4f);
    check_fixture_case(f, "laplace_bcast", apply3, (void *)td_laplace_log_prob, 3, 1e-5f, 1e-4f);
    check_fixture_case(f, "kl_normal", apply_kl, NULL, 4, 1e-5f, 1e-4f);
    check_fixture_case(f, "kl_normal_same", apply_kl, NULL, 4, 1e-5f, 1e-4f);
    check_fixture_case(f, "rowdist1", apply_rowdist, (void *)(intptr_t)1, 2, 1e-5f, 1e-5f);
    check_fixture_case(f, "rowdist1_bcast", apply_rowdist, (void *)(intptr_t)1, 2, 1e-5f, 1e-5f);
    check_fixture_case(f, "rowdist2", apply_rowdist, (void *)(intptr_t)2, 2, 1e-5f, 1e-5f);
    check_fixture_case(f, "rowdist2_bcast", apply_rowdist, (void *)(intptr_t)2, 2, 1e-5f, 1e-5f);
    fixture_free(f);
}

/* A leaf [rows, cols] that is a transposed (strided) view. */
static td_tensor *strided_leaf(int64_t rows, int64_t cols, float lo, float hi, uint64_t *s) {
    td_tensor *base = check_rand(2, SHAPE(cols, rows), lo, hi, s);
    td_tensor *t = td_transpose(base, 0, 1);
    td_release(base);
    td_set_requires_grad(t, 1);
    return t;
}

static td_tensor *leaf(int ndim, const int64_t *shape, float lo, float hi, uint64_t *s) {
    td_tensor *t = check_rand(ndim, shape, lo, hi, s);
    td_set_requires_grad(t, 1);
    return t;
}

static void release_all(int n, td_tensor **t) {
    for (int i = 0; i < n; i++) td_release(t[i]);
}

static void test_gradients(void) {
    uint64_t s = 31;
    td_tensor *bce[2] = {strided_leaf(3, 4, -4, 4, &s), leaf(1, SHAPE(4), 0, 1, &s)};
    check_grad("bce_with_logits strided, broadcast target", apply2, (void *)td_bce_with_logits, 2, bce, 1e-3f, 1e-3f, 1e-2f, 0);
    release_all(2, bce);
    td_tensor *bce2[2] = {leaf(1, SHAPE(4), -3, 3, &s), strided_leaf(3, 4, 0, 1, &s)};
    check_grad("bce_with_logits broadcast logits", apply2, (void *)td_bce_with_logits, 2, bce2, 1e-3f, 1e-3f, 1e-2f, 0);
    release_all(2, bce2);

    td_tensor *mse[2] = {strided_leaf(3, 4, -1, 1, &s), leaf(2, SHAPE(3, 1), -1, 1, &s)};
    check_grad("mse_loss strided, broadcast", apply2, (void *)td_mse_loss, 2, mse, 1e-3f, 1e-3f, 1e-2f, 0);
    release_all(2, mse);

    td_tensor *ce[2] = {strided_leaf(4, 6, -2, 2, &s), td_from_buffer(1, SHAPE(4), (float[]){5, 0, 3, 3})};
    check_grad("cross_entropy strided logits", apply2, (void *)td_cross_entropy, 2, ce, 1e-3f, 1e-3f, 1e-2f, 0);
    release_all(2, ce);

    td_tensor *nl[3] = {strided_leaf(3, 4, -2, 2, &s), leaf(1, SHAPE(4), -1, 1, &s), leaf(2, SHAPE(3, 1), 0.5f, 1.5f, &s)};
    check_grad("normal_log_prob", apply3, (void *)td_normal_log_prob, 3, nl, 1e-3f, 2e-3f, 2e-2f, 0);
    release_all(3, nl);
    td_tensor *lp[3] = {strided_leaf(3, 4, -2, 2, &s), leaf(1, SHAPE(4), -1, 1, &s), leaf(2, SHAPE(3, 1), 0.5f, 1.5f, &s)};
    check_grad("laplace_log_prob", apply3, (void *)td_laplace_log_prob, 3, lp, 1e-3f, 2e-3f, 2e-2f, 0);
    release_all(3, lp);
    td_tensor *kl[4] = {strided_leaf(3, 4, -1, 1, &s), leaf(1, SHAPE(4), 0.5f, 1.5f, &s), leaf(2, SHAPE(3, 1), -1, 1, &s),
                        leaf(2, SHAPE(3, 4), 0.5f, 1.5f, &s)};
    check_grad("kl_normal", apply_kl, NULL, 4, kl, 1e-3f, 2e-3f, 2e-2f, 0);
    release_all(4, kl);
    /* x strided, y broadcast over x's rows; values apart so no |x - y| is near the kink at 0 */
    td_tensor *rd[2] = {strided_leaf(3, 4, 0.5f, 1.5f, &s), leaf(2, SHAPE(1, 4), -1.5f, -0.5f, &s)};
    check_grad("rowdist p = 1 strided, broadcast", apply_rowdist, (void *)(intptr_t)1, 2, rd, 1e-3f, 2e-3f, 2e-2f, 0);
    check_grad("rowdist p = 2 strided, broadcast", apply_rowdist, (void *)(intptr_t)2, 2, rd, 1e-3f, 2e-3f, 2e-2f, 0);
    release_all(2, rd);
    td_tensor *rd3[2] = {leaf(3, SHAPE(2, 1, 5), -1, 1, &s), leaf(2, SHAPE(3, 5), -1, 1, &s)};
    check_grad("rowdist p = 2 both broadcast", apply_rowdist, (void *)(intptr_t)2, 2, rd3, 1e-3f, 2e-3f, 2e-2f, 0);
    release_all(2, rd3);
}

/* The fused ops against the same math in engine ops, values and
 * gradients, on inputs above the parallel threshold. */
static td_tensor *bce_composite(td_tensor *x, td_tensor *t) {
    td_tensor *r = td_relu(x), *xt = td_mul(x, t), *ax = td_abs(x), *nax = td_neg(ax), *e = td_exp(nax);
    td_tensor *l = td_log1p(e), *d = td_sub(r, xt), *out = td_add(d, l);
    td_tensor *tmp[] = {r, xt, ax, nax, e, l, d};
    release_all(7, tmp);
    return out;
}

static td_tensor *ce_composite(td_tensor *x, td_tensor *t) {
    td_tensor *e = td_exp(x), *se = td_sum(e, 2, 0), *lse = td_log(se);
    td_tensor *t2 = td_reshape(t, 2, SHAPE(t->numel, 1)), *g = td_gather(x, 1, t2), *g1 = td_reshape(g, 1, SHAPE(t->numel));
    td_tensor *out = td_sub(lse, g1);
    td_tensor *tmp[] = {e, se, lse, t2, g, g1};
    release_all(6, tmp);
    return out;
}

static void compare_fused(const char *what, bin_fn fused, bin_fn composite, td_tensor *x, td_tensor *t, int tgrad) {
    uint64_t s = 77;
    td_tensor *outs[2], *gx[2], *gt[2];
    for (int v = 0; v < 2; v++) {
        td_tensor *xi = td_clone(x), *ti = td_clone(t);
        td_set_requires_grad(xi, 1);
        td_set_requires_grad(ti, tgrad);
        outs[v] = (v ? composite : fused)(xi, ti);
        td_tensor *gy = outs[v] ? check_rand(outs[v]->ndim, outs[v]->shape, -1, 1, &s) : NULL;
        s = 77;
        CHECK(outs[v] && td_backward(outs[v], gy) == 0, "%s variant %d: %s", what, v, td_last_error());
        gx[v] = td_get_grad(xi);
        gt[v] = td_get_grad(ti);
        td_release(gy);
        td_release(xi);
        td_release(ti);
    }
    char buf[128];
    snprintf(buf, sizeof buf, "%s fused vs composite: out", what);
    check_close(buf, outs[0], outs[1], 1e-5f, 1e-4f);
    snprintf(buf, sizeof buf, "%s fused vs composite: grad 0", what);
    check_close(buf, gx[0], gx[1], 1e-5f, 1e-4f);
    if (tgrad) {
        snprintf(buf, sizeof buf, "%s fused vs composite: grad 1", what);
        check_close(buf, gt[0], gt[1], 1e-5f, 1e-4f);
    }
    td_tensor *tmp[] = {outs[0], outs[1], gx[0], gx[1], gt[0], gt[1]};
    release_all(6, tmp);
}

static td_tensor *rowdist_composite(td_tensor *x, td_tensor *y, int p) {
    td_tensor *d = td_sub(x, y), *a = p == 1 ? td_abs(d) : td_square(d);
    td_tensor *out = td_sum(a, 1u << (a->ndim - 1), 0);
    td_release(d);
    td_release(a);
    return out;
}
static td_tensor *rowdist1_composite(td_tensor *x, td_tensor *y) { return rowdist_composite(x, y, 1); }
static td_tensor *rowdist2_composite(td_tensor *x, td_tensor *y) { return rowdist_composite(x, y, 2); }

static void test_against_composite(void) {
    uint64_t s = 41;
    /* above the parallel threshold; y is a [B, n] image batch broadcast against [M, B, n] means */
    td_tensor *mean = check_rand(3, SHAPE(4, 30, 700), -1, 1, &s), *img = check_rand(2, SHAPE(30, 700), 0, 1, &s);
    compare_fused("rowdist p = 1", rowdist1, rowdist1_composite, mean, img, 1);
    compare_fused("rowdist p = 2", rowdist2, rowdist2_composite, mean, img, 1);
    td_release(mean);
    td_release(img);
    td_tensor *x = check_rand(2, SHAPE(300, 130), -6, 6, &s), *t = check_rand(2, SHAPE(300, 130), 0, 1, &s);
    compare_fused("bce_with_logits", td_bce_with_logits, bce_composite, x, t, 1);
    td_tensor *cls = td_empty(1, SHAPE(300));
    for (int i = 0; i < 300; i++) cls->data[i] = (float)((i * 37) % 130);
    compare_fused("cross_entropy", td_cross_entropy, ce_composite, x, cls, 0);
    td_release(x);
    td_release(t);
    td_release(cls);
}

/* ---- bad inputs ---- */

static void test_errors(void) {
    uint64_t s = 5;
    td_tensor *a = check_rand(2, SHAPE(3, 4), -1, 1, &s), *b = check_rand(2, SHAPE(2, 5), 0.5f, 1, &s);
    td_tensor *c = check_rand(1, SHAPE(4), 0.5f, 1, &s);
    td_set_requires_grad(a, 1);
    float *sa = check_snapshot(a), *sb = check_snapshot(b);
    check_error(td_bce_with_logits(a, b), "bce [3,4] [2,5]", "bce_with_logits", "[3,4]", "[2,5]");
    check_error(td_mse_loss(a, b), "mse [3,4] [2,5]", "mse_loss", "[3,4]", "[2,5]");
    check_error(td_normal_log_prob(a, c, b), "normal_log_prob", "normal_log_prob", "[3,4] and [4] and [2,5]", NULL);
    check_error(td_laplace_log_prob(b, a, c), "laplace_log_prob", "laplace_log_prob", "[2,5] and [3,4] and [4]", NULL);
    check_error(td_kl_normal(a, c, a, b), "kl_normal", "kl_normal", "[3,4] and [4] and [3,4] and [2,5]", NULL);
    check_error(td_kl_normal(a, c, NULL, b), "kl_normal NULL", "kl_normal", NULL, NULL);
    check_error(td_rowdist(a, b, 1), "rowdist last dims", "rowdist", "[3,4]", "[2,5]");
    check_error(td_rowdist(a, a, 3), "rowdist p = 3", "rowdist", "p must be 1 or 2", NULL);
    td_tensor *b4 = check_rand(2, SHAPE(2, 4), 0, 1, &s);
    check_error(td_rowdist(a, b4, 2), "rowdist leading dims", "rowdist", "[3,4]", "[2,4]");
    td_release(b4);

    td_tensor *t3 = td_from_buffer(1, SHAPE(3), (float[]){0, 3, 4});
    check_error(td_cross_entropy(a, t3), "cross_entropy class 4 of 4", "cross_entropy", "[3,4]", "value 4");
    td_tensor *tneg = td_from_buffer(1, SHAPE(3), (float[]){0, -1, 1});
    check_error(td_cross_entropy(a, tneg), "cross_entropy class -1", "cross_entropy", "[3,4]", "value -1");
    td_tensor *tfrac = td_from_buffer(1, SHAPE(3), (float[]){0, 1, 0.5f});
    check_error(td_cross_entropy(a, tfrac), "cross_entropy class 0.5", "cross_entropy", "[3,4]", "value 0.5");
    td_tensor *t2 = td_zeros(1, SHAPE(2));
    check_error(td_cross_entropy(a, t2), "cross_entropy target [2]", "cross_entropy", "[3,4]", "[2]");
    check_error(td_cross_entropy(c, t2), "cross_entropy 1-D logits", "cross_entropy", "[4]", "[2]");
    check_unchanged("a", a, sa);
    check_unchanged("b", b, sb);
    CHECK(a->grad == NULL && a->is_leaf, "failed ops leave no trace on their inputs");
    td_tensor *tmp[] = {a, b, c, t3, tneg, tfrac, t2};
    release_all(7, tmp);
}

/* bce_with_logits stays finite where the naive formula overflows. */
static void test_stability(void) {
    td_tensor *x = td_from_buffer(1, SHAPE(4), (float[]){-1000, -90, 90, 1000});
    td_tensor *t = td_from_buffer(1, SHAPE(4), (float[]){1, 0, 1, 0});
    td_tensor *want = td_from_buffer(1, SHAPE(4), (float[]){1000, 0, 0, 1000});
    td_tensor *out = td_bce_with_logits(x, t);
    check_close("bce_with_logits at +-1000", out, want, 1e-6f, 1e-6f);
    td_tensor *tmp[] = {x, t, want, out};
    release_all(4, tmp);
}

int main(void) {
    test_fixtures();
    test_gradients();
    test_against_composite();
    test_errors();
    test_stability();
    CHECK(td_live_tensors() == 0, "tensors leaked: %lld live", (long long)td_live_tensors());
    return check_summary();
}
