/* matmul and linear: PyTorch fixtures, gradient checks (broadcast batch,
 * transposed and irregular views), accumulation into existing .grad, the
 * no-copy path for transposed views, and error messages. */
#include "check.h"
#include <stdlib.h>
#include <string.h>

static td_tensor *tr(td_tensor *t) { return td_transpose(t, -1, -2); }

/* ctx bit 0: transpose input 0, bit 1: transpose input 1. */
static td_tensor *apply_matmul(td_tensor **in, void *ctx) {
    intptr_t f = (intptr_t)ctx;
    td_tensor *a = f & 1 ? tr(in[0]) : (td_retain(in[0]), in[0]);
    td_tensor *b = f & 2 ? tr(in[1]) : (td_retain(in[1]), in[1]);
    td_tensor *out = td_matmul(a, b);
    td_release(a);
    td_release(b);
    return out;
}

/* ctx = number of inputs (2: no bias). */
static td_tensor *apply_linear(td_tensor **in, void *ctx) {
    return td_linear(in[0], in[1], (intptr_t)ctx == 3 ? in[2] : NULL);
}

/* ctx bit 0: transpose input 0 (matmul_add of in0, in1, in2). */
static td_tensor *apply_matmul_add(td_tensor **in, void *ctx) {
    td_tensor *a = (intptr_t)ctx & 1 ? tr(in[0]) : (td_retain(in[0]), in[0]);
    td_tensor *out = td_matmul_add(a, in[1], in[2]);
    td_release(a);
    return out;
}

static void test_fixtures(void) {
    check_fixture *f = fixture_load("matmul.txt");
    static const struct { const char *name; intptr_t flags; } mm[] = {
        {"mm_2d", 0}, {"mm_batched", 0}, {"mm_bcast", 0}, {"mm_b2d", 0}, {"mm_a2d", 0},
        {"mm_at", 1}, {"mm_bt", 2}, {"mm_both_t", 3}, {"mm_bt_bcast", 2},
    };
    for (size_t i = 0; i < sizeof mm / sizeof *mm; i++)
        check_fixture_case(f, mm[i].name, apply_matmul, (void *)mm[i].flags, 2, 1e-5f, 1e-4f);
    check_fixture_case(f, "linear_bias", apply_linear, (void *)3, 3, 1e-5f, 1e-4f);
    check_fixture_case(f, "linear_nobias", apply_linear, (void *)2, 2, 1e-5f, 1e-4f);
    check_fixture_case(f, "linear_3d", apply_linear, (void *)3, 3, 1e-5f, 1e-4f);
    check_fixture_case(f, "linear_1d", apply_linear, (void *)3, 3, 1e-5f, 1e-4f);
    const char *mmadd[] = {"mmadd_grouped", "mmadd_vec", "mmadd_rows", "mmadd_full"};
    for (int i = 0; i < 4; i++) check_fixture_case(f, mmadd[i], apply_matmul_add, (void *)0, 3, 1e-5f, 1e-4f);
    fixture_free(f);
}

static td_tensor *leaf(int ndim, const int64_t *shape, uint64_t *s) {
    td_tensor *t = check_rand(ndim, shape, -1.0f, 1.0f, s);
    td_set_requires_grad(t, 1);
    return t;
}

/* A [2,3,4] view with strides (1, 2, 6): neither dim of its matrices has
 * stride 1, so matmul must copy it. */
static td_tensor *irregular(uint64_t *s) {
    td_tensor *base = check_rand(3, SHAPE(4, 3, 2), -1.0f, 1.0f, s);
    td_set_requires_grad(base, 1);
    return base;
}
static td_tensor *apply_irregular(td_tensor **in, void *ctx) {
    td_tensor *v = td_permute(in[0], (const int[]){2, 1, 0}); /* [2,3,4], strides (1,2,6) */
    td_tensor *out = td_matmul(v, in[1]);
    td_release(v);
    return out;
}

static void test_gradients(void) {
    uint64_t s = 11;
    struct { int na, nb; int64_t sa[4], sb[4]; intptr_t flags; const char *what; } cases[] = {
        {2, 2, {5, 6}, {6, 4}, 0, "2-D"},
        {3, 3, {3, 2, 4}, {3, 4, 5}, 0, "batched (parallel over batch)"},
        {4, 3, {2, 1, 3, 4}, {3, 4, 2}, 0, "broadcast batch, summed grads"},
        {3, 2, {2, 3, 4}, {4, 5}, 0, "b 2-D: stacked rows, stacked inner dim"},
        {2, 3, {3, 4}, {2, 4, 5}, 0, "a 2-D: grad summed over the batch"},
        {3, 3, {2, 4, 3}, {2, 5, 4}, 3, "both transposed"},
        {2, 3, {4, 3}, {3, 4, 2}, 1, "a transposed and broadcast"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        td_tensor *in[2] = {leaf(cases[i].na, cases[i].sa, &s), leaf(cases[i].nb, cases[i].sb, &s)};
        check_grad(cases[i].what, apply_matmul, (void *)cases[i].flags, 2, in, 1e-2f, 2e-3f, 1e-2f, 0);
        td_release(in[0]);
        td_release(in[1]);
    }
    td_tensor *in[2] = {irregular(&s), leaf(2, SHAPE(4, 3), &s)};
    check_grad("irregular view (copied)", apply_irregular, NULL, 2, in, 1e-2f, 2e-3f, 1e-2f, 0);
    td_release(in[0]);
    td_release(in[1]);

    td_tensor *lin[3] = {leaf(3, SHAPE(2, 3, 5), &s), leaf(2, SHAPE(4, 5), &s), leaf(1, SHAPE(4), &s)};
    check_grad("linear 3-D", apply_linear, (void *)3, 3, lin, 1e-2f, 2e-3f, 1e-2f, 0);
    check_grad("linear no bias", apply_linear, (void *)2, 2, lin, 1e-2f, 2e-3f, 1e-2f, 0);
    for (int k = 0; k < 3; k++) td_release(lin[k]);

    /* matmul_add: grouped bias (column sums per group), a bias for all
     * rows, a per-row bias (reduced by td_accumulate), a transposed a */
    struct { int na, nb, nc; int64_t sa[3], sb[3], sc[3]; intptr_t flags; const char *what; } ma[] = {
        {3, 3, 3, {3, 4, 2}, {3, 2, 5}, {3, 1, 5}, 0, "matmul_add grouped bias"},
        {3, 2, 1, {2, 4, 3}, {3, 5}, {5}, 0, "matmul_add one bias for all rows"},
        {3, 2, 2, {2, 4, 3}, {3, 5}, {4, 1}, 0, "matmul_add per-row addend"},
        {3, 3, 3, {3, 2, 4}, {3, 2, 5}, {3, 1, 5}, 1, "matmul_add a transposed"},
    };
    for (size_t i = 0; i < sizeof ma / sizeof *ma; i++) {
        td_tensor *m3[3] = {leaf(ma[i].na, ma[i].sa, &s), leaf(ma[i].nb, ma[i].sb, &s), leaf(ma[i].nc, ma[i].sc, &s)};
        check_grad(ma[i].what, apply_matmul_add, (void *)ma[i].flags, 3, m3, 1e-2f, 2e-3f, 1e-2f, 0);
        for (int k = 0; k < 3; k++) td_release(m3[k]);
    }
}

/* matmul_add equals matmul + add (values and every gradient), on a grouped
 * product above the parallel threshold; a second backward accumulates into
 * the bias's existing .grad. */
static void test_matmul_add(void) {
    uint64_t s = 17;
    td_tensor *in[3] = {leaf(3, SHAPE(3, 200, 40), &s), leaf(3, SHAPE(3, 40, 70), &s), leaf(3, SHAPE(3, 1, 70), &s)};
    td_tensor *gy = check_rand(3, SHAPE(3, 200, 70), -1, 1, &s);
    td_tensor *fused = td_matmul_add(in[0], in[1], in[2]);
    CHECK(fused && td_backward(fused, gy) == 0, "matmul_add backward: %s", td_last_error());
    td_tensor *gf[3];
    for (int k = 0; k < 3; k++) {
        td_tensor *g = td_get_grad(in[k]);
        gf[k] = td_clone(g);
        td_release(g);
        td_zero_grad(in[k]);
    }
    td_tensor *p = td_matmul(in[0], in[1]), *ref = td_add(p, in[2]);
    CHECK(ref && td_backward(ref, gy) == 0, "matmul + add backward: %s", td_last_error());
    check_close("matmul_add vs matmul + add: out", fused, ref, 1e-5f, 1e-5f);
    const char *names[3] = {"matmul_add vs matmul + add: grad a", "matmul_add vs matmul + add: grad b",
                            "matmul_add vs matmul + add: grad c"};
    for (int k = 0; k < 3; k++) {
        td_tensor *g = td_get_grad(in[k]);
        check_close(names[k], gf[k], g, 1e-4f, 1e-4f);
        td_release(g);
    }
    td_tensor *again = td_matmul_add(in[0], in[1], in[2]);
    CHECK(again && td_backward(again, gy) == 0, "matmul_add backward: %s", td_last_error());
    td_tensor *twice = td_mul_scalar(gf[2], 2.0f);
    td_tensor *gc = td_get_grad(in[2]);
    check_close("matmul_add accumulates into an existing bias grad", gc, twice, 1e-4f, 1e-4f);
    td_release(gc);
    td_tensor *tmp[] = {gy, fused, p, ref, again, twice, gf[0], gf[1], gf[2], in[0], in[1], in[2]};
    for (size_t i = 0; i < sizeof tmp / sizeof *tmp; i++) td_release(tmp[i]);
}

/* linear on views: x a transposed [in, rows] matrix and a permuted 3-D
 * tensor (leading dims that do not collapse), w a transposed [in, out]. */
static td_tensor *apply_linear_views(td_tensor **in, void *ctx) {
    td_tensor *x = (intptr_t)ctx ? td_permute(in[0], (const int[]){1, 0, 2}) : tr(in[0]);
    td_tensor *w = tr(in[1]);
    td_tensor *out = td_linear(x, w, in[2]);
    td_release(x);
    td_release(w);
    return out;
}

static void test_linear_views(void) {
    uint64_t s = 5;
    td_tensor *a[3] = {leaf(2, SHAPE(5, 3), &s), leaf(2, SHAPE(5, 4), &s), leaf(1, SHAPE(4), &s)};
    check_grad("linear, x and w transposed", apply_linear_views, (void *)0, 3, a, 1e-2f, 2e-3f, 1e-2f, 0);
    td_tensor *b[3] = {leaf(3, SHAPE(3, 2, 5), &s), leaf(2, SHAPE(5, 4), &s), leaf(1, SHAPE(4), &s)};
    check_grad("linear, x permuted 3-D", apply_linear_views, (void *)1, 3, b, 1e-2f, 2e-3f, 1e-2f, 0);
    for (int k = 0; k < 3; k++) {
        td_release(a[k]);
        td_release(b[k]);
    }
}

/* Naive [n,k] x [k,m] in double, for a product larger than sgemm's blocks. */
static void test_large(void) {
    uint64_t s = 3;
    int64_t n = 70, k = 300, m = 90;
    td_tensor *a = check_rand(2, SHAPE(k, n), -1, 1, &s), *b = check_rand(2, SHAPE(m, k), -1, 1, &s);
    td_tensor *at = tr(a), *bt = tr(b);
    td_tensor *c = td_matmul(at, bt), *want = td_empty(2, SHAPE(n, m));
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < m; j++) {
            double acc = 0;
            for (int64_t p = 0; p < k; p++) acc += (double)a->data[p * n + i] * b->data[j * k + p];
            want->data[i * m + j] = (float)acc;
        }
    check_close("70x300x90, both transposed", c, want, 1e-4f, 1e-4f);
    td_release(a);
    td_release(b);
    td_release(at);
    td_release(bt);
    td_release(c);
    td_release(want);
}

/* Backward adds into existing .grad (also a non-contiguous leaf's). */
static void test_accumulate(void) {
    uint64_t s = 9;
    td_tensor *base = check_rand(2, SHAPE(4, 3), -1, 1, &s);
    td_tensor *x = tr(base); /* a leaf view [3,4] with strides (1,3) */
    td_tensor *w = leaf(2, SHAPE(5, 4), &s), *b = leaf(1, SHAPE(5), &s);
    td_set_requires_grad(x, 1);
    td_tensor *g1[3] = {0};
    for (int pass = 0; pass < 2; pass++) {
        td_tensor *y = td_linear(x, w, b), *sq = td_square(y), *loss = td_sum(sq, 0, 0);
        td_backward(loss, NULL);
        if (pass == 0) {
            td_tensor *leaves[3] = {x, w, b};
            for (int k = 0; k < 3; k++) g1[k] = td_clone(leaves[k]->grad);
        }
        td_release(y);
        td_release(sq);
        td_release(loss);
    }
    td_tensor *leaves[3] = {x, w, b};
    for (int k = 0; k < 3; k++) {
        td_tensor *twice = td_mul_scalar(g1[k], 2.0f);
        check_close("grad after two backward passes", leaves[k]->grad, twice, 1e-5f, 1e-5f);
        td_release(twice);
        td_release(g1[k]);
    }
    td_release(x);
    td_release(base);
    td_release(w);
    td_release(b);
}

/* A transposed operand goes to sgemm as CblasTrans: no copy is allocated. */
static void test_no_copy(void) {
    uint64_t s = 1;
    td_tensor *a = check_rand(2, SHAPE(512, 256), -1, 1, &s), *b = check_rand(2, SHAPE(512, 128), -1, 1, &s);
    td_tensor *at = tr(a);
    int64_t before = td_mem_in_use();
    td_mem_reset_peak();
    td_tensor *c = td_matmul(at, b);
    int64_t extra = td_mem_peak() - before, out_bytes = 256 * 128 * 4;
    CHECK(c && extra <= out_bytes * 5 / 4, "matmul of a transposed view allocated %lld bytes, output is %lld",
          (long long)extra, (long long)out_bytes);
    td_release(c);
    td_release(at);
    td_release(a);
    td_release(b);
}

static void expect_error(td_tensor *r, const char *what, const char *const *parts) {
    CHECK(r == NULL, "%s must fail", what);
    td_release(r);
    for (int i = 0; parts[i]; i++)
        CHECK(strstr(td_last_error(), parts[i]), "%s: message lacks \"%s\": %s", what, parts[i], td_last_error());
}

static void test_errors(void) {
    td_tensor *a = td_zeros(2, SHAPE(128, 784)), *b = td_zeros(2, SHAPE(512, 20));
    expect_error(td_matmul(a, b), "matmul inner dims",
                 (const char *[]){"matmul", "[128,784]", "[512,20]", "inner dims differ", NULL});
    td_tensor *c = td_zeros(3, SHAPE(3, 4, 5)), *d = td_zeros(3, SHAPE(2, 5, 6));
    expect_error(td_matmul(c, d), "matmul batch", (const char *[]){"matmul", "[3,4,5]", "[2,5,6]", "batch", NULL});
    td_tensor *v = td_zeros(1, SHAPE(5));
    expect_error(td_matmul(v, d), "matmul 1-D", (const char *[]){"matmul", "[5]", "[2,5,6]", NULL});
    td_tensor *w = td_zeros(2, SHAPE(20, 783)), *bias = td_zeros(1, SHAPE(19)), *w2 = td_zeros(2, SHAPE(20, 784));
    expect_error(td_linear(a, w, NULL), "linear in features",
                 (const char *[]){"linear", "[128,784]", "[20,783]", NULL});
    expect_error(td_linear(a, w2, bias), "linear bias", (const char *[]){"linear", "[20,784]", "[19]", NULL});
    td_tensor *d2 = td_zeros(2, SHAPE(784, 20));
    expect_error(td_matmul_add(a, d2, bias), "matmul_add addend",
                 (const char *[]){"matmul_add", "[128,784]", "[784,20]", "[19]", "[128,20]", NULL});
    expect_error(td_matmul_add(a, d2, NULL), "matmul_add NULL", (const char *[]){"matmul_add", NULL});
    td_release(d2);
    td_release(a);
    td_release(b);
    td_release(c);
    td_release(d);
    td_release(v);
    td_release(w);
    td_release(w2);
    td_release(bias);
}

int main(void) {
    test_fixtures();
    test_gradients();
    test_linear_views();
    test_matmul_add();
    test_large();
    test_accumulate();
    test_no_copy();
    test_errors();
    CHECK(td_live_tensors() == 0, "tensors leaked: %lld live", (long long)td_live_tensors());
    return check_summary();
}
