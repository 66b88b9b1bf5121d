/* concat, stack, index_select, gather, scatter_add, one_hot: PyTorch
 * fixtures, gradient checks (strided inputs, more inputs than a node
 * holds), and bad shapes and indices. */
#include "check.h"
#include <stdlib.h>
#include <string.h>

typedef struct { int n, axis; } join_ctx;

static td_tensor *apply_concat(td_tensor **in, void *ctx) {
    join_ctx *c = ctx;
    return td_concat(c->n, in, c->axis);
}
static td_tensor *apply_stack(td_tensor **in, void *ctx) {
    join_ctx *c = ctx;
    return td_stack(c->n, in, c->axis);
}
static td_tensor *apply_index_select(td_tensor **in, void *ctx) { return td_index_select(in[0], *(int *)ctx, in[1]); }
static td_tensor *apply_gather(td_tensor **in, void *ctx) { return td_gather(in[0], *(int *)ctx, in[1]); }
static td_tensor *apply_scatter_add(td_tensor **in, void *ctx) { return td_scatter_add(in[0], *(int *)ctx, in[1], in[2]); }
static td_tensor *apply_one_hot(td_tensor **in, void *ctx) { return td_one_hot(in[0], *(int *)ctx); }

static void test_fixtures(void) {
    check_fixture *f = fixture_load("join.txt");
    static join_ctx cat[] = {{3, 0}, {2, 1}, {2, -1}, {5, -2}};
    static const char *catn[] = {"concat_ax0", "concat_mid", "concat_neg", "concat_5"};
    for (int i = 0; i < 4; i++) check_fixture_case(f, catn[i], apply_concat, &cat[i], cat[i].n, 0, 0);
    static join_ctx st[] = {{3, 0}, {3, 1}, {2, -1}, {6, 1}};
    static const char *stn[] = {"stack_0", "stack_mid", "stack_neg", "stack_6"};
    for (int i = 0; i < 4; i++) check_fixture_case(f, stn[i], apply_stack, &st[i], st[i].n, 0, 0);
    static int ax0 = 0, ax1 = 1, axm1 = -1, c4 = 4, c7 = 7;
    check_fixture_case(f, "index_select_ax0", apply_index_select, &ax0, 2, 0, 0);
    check_fixture_case(f, "index_select_mid", apply_index_select, &ax1, 2, 1e-6f, 1e-6f);
    check_fixture_case(f, "index_select_neg", apply_index_select, &axm1, 2, 0, 0);
    check_fixture_case(f, "gather_ax1", apply_gather, &ax1, 2, 1e-6f, 1e-6f);
    check_fixture_case(f, "gather_3d_ax0", apply_gather, &ax0, 2, 1e-6f, 1e-6f);
    check_fixture_case(f, "gather_neg", apply_gather, &axm1, 2, 1e-6f, 1e-6f);
    check_fixture_case(f, "scatter_add_ax0", apply_scatter_add, &ax0, 3, 1e-6f, 1e-5f);
    check_fixture_case(f, "scatter_add_neg", apply_scatter_add, &axm1, 3, 1e-6f, 1e-5f);
    check_fixture_case(f, "scatter_add_mid_small", apply_scatter_add, &ax1, 3, 1e-6f, 1e-5f);
    check_fixture_case(f, "scatter_add_bigsrc", apply_scatter_add, &ax1, 3, 1e-6f, 1e-5f);
    check_fixture_case(f, "one_hot", apply_one_hot, &c4, 1, 0, 0);
    check_fixture_case(f, "one_hot_1d", apply_one_hot, &c7, 1, 0, 0);
    /* five inputs without grad take the one-copy path */
    td_tensor *in[5];
    for (int k = 0; k < 5; k++) {
        char name[8];
        snprintf(name, sizeof name, "in%d", k);
        in[k] = fixture_get(f, "concat_5", name);
    }
    td_tensor *out = td_concat(5, in, -2);
    check_close("concat_5 without grad", out, fixture_get(f, "concat_5", "out"), 0, 0);
    CHECK(out && !out->requires_grad && !out->node, "concat of constants records nothing");
    td_release(out);
    fixture_free(f);
}

/* A [rows, cols] leaf that is a transposed (strided) view of random values. */
static td_tensor *strided_leaf(int64_t rows, int64_t cols, uint64_t *s) {
    td_tensor *base = check_rand(2, SHAPE(cols, rows), -1, 1, s);
    td_tensor *t = td_transpose(base, 0, 1);
    td_release(base);
    td_set_requires_grad(t, 1);
    return t;
}

static void test_gradients(void) {
    uint64_t s = 21;
    /* concat of 6 inputs (more than a node holds), some strided, one
     * without grad, along a middle axis and a negative one */
    td_tensor *in[6];
    for (int k = 0; k < 6; k++) {
        if (k % 2) {
            td_tensor *base = check_rand(3, SHAPE(2, 4, k + 1), -1, 1, &s);
            in[k] = td_transpose(base, 1, 2); /* [2, k+1, 4] */
            td_release(base);
        } else {
            in[k] = check_rand(3, SHAPE(2, k + 1, 4), -1, 1, &s);
        }
        td_set_requires_grad(in[k], k != 4);
    }
    join_ctx c6 = {6, 1}, c6neg = {6, -2}, c2last = {2, -1};
    check_grad("concat of 6", apply_concat, &c6, 6, in, 1e-3f, 1e-3f, 1e-2f, 0);
    check_grad("concat of 6, axis -2", apply_concat, &c6neg, 6, in, 1e-3f, 1e-3f, 1e-2f, 0);
    for (int k = 0; k < 6; k++) td_release(in[k]);

    td_tensor *pair[2] = {strided_leaf(3, 4, &s), strided_leaf(3, 4, &s)};
    check_grad("concat axis -1, strided", apply_concat, &c2last, 2, pair, 1e-3f, 1e-3f, 1e-2f, 0);
    join_ctx s2 = {2, -1}, s2mid = {2, 1};
    check_grad("stack axis -1, strided", apply_stack, &s2, 2, pair, 1e-3f, 1e-3f, 1e-2f, 0);
    check_grad("stack axis 1, strided", apply_stack, &s2mid, 2, pair, 1e-3f, 1e-3f, 1e-2f, 0);
    td_release(pair[0]);
    td_release(pair[1]);

    int ax0 = 0, ax1 = 1, axm1 = -1;
    td_tensor *a = strided_leaf(5, 3, &s);
    td_tensor *idx = td_from_buffer(1, SHAPE(6), (float[]){4, 0, 4, 2, 2, 1});
    check_grad("index_select axis 0, strided", apply_index_select, &ax0, 2, (td_tensor *[]){a, idx}, 1e-3f, 1e-3f, 1e-2f, 0);
    td_release(idx);

    td_tensor *big = check_rand(2, SHAPE(300, 130), -1, 1, &s); /* above TD_PAR_MIN */
    td_tensor *bidx = td_from_buffer(1, SHAPE(3), (float[]){7, 129, 7});
    td_set_requires_grad(big, 1);
    check_grad("index_select axis 1, big", apply_index_select, &ax1, 2, (td_tensor *[]){big, bidx}, 1e-2f, 1e-3f, 1e-2f, 60);
    td_release(bidx);
    td_release(big);

    td_tensor *gidx = td_from_buffer(2, SHAPE(3, 4), (float[]){0, 1, 1, 2, 2, 2, 2, 2, 1, 0, 0, 0});
    check_grad("gather axis 1, strided", apply_gather, &ax1, 2, (td_tensor *[]){a, gidx}, 1e-3f, 1e-3f, 1e-2f, 0);
    td_release(gidx);
    td_tensor *g0 = td_from_buffer(2, SHAPE(6, 2), (float[]){0, 4, 4, 4, 1, 0, 2, 3, 4, 4, 0, 1});
    check_grad("gather axis 0, index taller", apply_gather, &ax0, 2, (td_tensor *[]){a, g0}, 1e-3f, 1e-3f, 1e-2f, 0);
    td_release(g0);

    /* scatter_add: a and src strided, src bigger than the index, repeats */
    td_tensor *sa = strided_leaf(3, 6, &s), *src = strided_leaf(3, 5, &s);
    td_tensor *sidx = td_from_buffer(2, SHAPE(2, 4), (float[]){5, 5, 0, 1, 3, 3, 3, 2});
    check_grad("scatter_add axis -1, strided, src bigger", apply_scatter_add, &axm1, 3,
               (td_tensor *[]){sa, sidx, src}, 1e-3f, 1e-3f, 1e-2f, 0);
    td_tensor *sidx0 = td_from_buffer(2, SHAPE(3, 2), (float[]){1, 1, 2, 0, 1, 2});
    check_grad("scatter_add axis 0", apply_scatter_add, &ax0, 3, (td_tensor *[]){sa, sidx0, src}, 1e-3f, 1e-3f, 1e-2f, 0);
    td_release(sidx0);
    td_release(sidx);
    td_release(sa);
    td_release(src);
    td_release(a);
}

/* stack and concat of slices at an offset in their storage (narrow) */
static void test_offset_views(void) {
    td_tensor *m = td_arange(0, 12, 1), *m2 = td_reshape(m, 2, SHAPE(3, 4));
    td_tensor *r1 = td_narrow(m2, 0, 1, 1), *r2 = td_narrow(m2, 0, 2, 1); /* [1,4] rows 1 and 2 */
    td_tensor *c = td_concat(2, (td_tensor *[]){r2, r1}, 0);
    td_tensor *want = td_from_buffer(2, SHAPE(2, 4), (float[]){8, 9, 10, 11, 4, 5, 6, 7});
    check_close("concat of narrowed rows", c, want, 0, 0);
    td_tensor *v1 = td_narrow(m, 0, 4, 4), *v2 = td_narrow(m, 0, 8, 4); /* [4] */
    td_tensor *st = td_stack(2, (td_tensor *[]){v2, v1}, 0);
    check_close("stack of narrowed slices", st, want, 0, 0);
    td_tensor *tmp[] = {m, m2, r1, r2, c, want, v1, v2, st};
    for (size_t i = 0; i < sizeof tmp / sizeof *tmp; i++) td_release(tmp[i]);
}

/* ---- bad inputs ---- */

static void test_errors(void) {
    uint64_t s = 9;
    td_tensor *a = check_rand(2, SHAPE(3, 4), -1, 1, &s), *b = check_rand(2, SHAPE(2, 5), -1, 1, &s);
    td_set_requires_grad(a, 1);
    float *sa = check_snapshot(a), *sb = check_snapshot(b);
    check_error(td_concat(2, (td_tensor *[]){a, b}, 0), "concat [3,4] [2,5] axis 0", "concat", "[3,4]", "[2,5]");
    check_error(td_concat(2, (td_tensor *[]){a, b}, 2), "concat axis 2", "concat", "[3,4]", "axis 2");
    check_error(td_concat(0, NULL, 0), "concat of none", "concat", NULL, NULL);
    td_tensor *v = td_ones(1, SHAPE(4));
    check_error(td_concat(2, (td_tensor *[]){a, v}, 0), "concat [3,4] [4]", "concat", "[3,4]", "[4]");
    check_error(td_stack(2, (td_tensor *[]){a, b}, 0), "stack [3,4] [2,5]", "stack", "[3,4]", "[2,5]");
    check_error(td_stack(2, (td_tensor *[]){a, a}, 3), "stack axis 3", "stack", "[3,4]", "axis 3");

    td_tensor *i5 = td_from_buffer(1, SHAPE(3), (float[]){0, 5, 1});
    check_error(td_index_select(a, 1, i5), "index_select value 5", "index_select", "[3,4]", "index value 5");
    CHECK(strstr(td_last_error(), "axis 1"), "index_select names the axis: %s", td_last_error());
    td_tensor *ineg = td_from_buffer(1, SHAPE(2), (float[]){0, -1});
    check_error(td_index_select(a, 0, ineg), "index_select value -1", "index_select", "[3,4]", "index value -1");
    td_tensor *ifrac = td_from_buffer(1, SHAPE(2), (float[]){0, 1.5f});
    check_error(td_index_select(a, 0, ifrac), "index_select value 1.5", "index_select", "[3,4]", "not a whole number");
    td_tensor *inan = td_from_buffer(1, SHAPE(1), (float[]){0.0f / 0.0f});
    check_error(td_index_select(a, 0, inan), "index_select NaN", "index_select", "[3,4]", "nan");
    td_tensor *i2d = td_zeros(2, SHAPE(2, 2));
    check_error(td_index_select(a, 0, i2d), "index_select 2-D index", "index_select", "[3,4]", "[2,2]");
    check_error(td_index_select(a, 2, i5), "index_select axis 2", "index_select", "[3,4]", "axis 2");

    td_tensor *g_bad = td_from_buffer(2, SHAPE(2, 2), (float[]){0, 1, 2, 4});
    check_error(td_gather(a, 1, g_bad), "gather value 4", "gather", "[3,4]", "index value 4");
    td_tensor *g_wide = td_zeros(2, SHAPE(2, 5));
    check_error(td_gather(a, 0, g_wide), "gather index [2,5] on [3,4] axis 0", "gather", "[3,4]", "[2,5]");
    check_error(td_gather(a, 0, ineg), "gather 1-D index", "gather", "[3,4]", "[2]");

    /* scatter_add: the bad index is the last element, after good ones */
    td_tensor *src = check_rand(2, SHAPE(2, 2), -1, 1, &s);
    float *ssrc = check_snapshot(src);
    check_error(td_scatter_add(a, 1, g_bad, src), "scatter_add value 4", "scatter_add", "[3,4]", "index value 4");
    td_tensor *src_small = td_zeros(2, SHAPE(2, 1));
    check_error(td_scatter_add(a, 1, i2d, src_small), "scatter_add src smaller", "scatter_add", "[2,2]", "[2,1]");
    check_error(td_scatter_add(a, 0, g_wide, g_wide), "scatter_add index [2,5]", "scatter_add", "[3,4]", "[2,5]");
    check_unchanged("scatter_add src", src, ssrc);

    check_error(td_one_hot(i5, 4), "one_hot value 5 of 4", "one_hot", "[3]", "index value 5");
    CHECK(strstr(td_last_error(), "4 classes"), "one_hot names the classes: %s", td_last_error());
    check_error(td_one_hot(i5, 0), "one_hot 0 classes", "one_hot", "[3]", NULL);
    check_unchanged("a", a, sa);
    check_unchanged("b", b, sb);
    CHECK(a->grad == NULL && a->is_leaf, "a failed op leaves no trace on its inputs");
    td_tensor *tmp[] = {a, b, v, i5, ineg, ifrac, inan, i2d, g_bad, g_wide, src, src_small};
    for (size_t i = 0; i < sizeof tmp / sizeof *tmp; i++) td_release(tmp[i]);
}

int main(void) {
    test_fixtures();
    test_gradients();
    test_offset_views();
    test_errors();
    CHECK(td_live_tensors() == 0, "tensors leaked: %lld live", (long long)td_live_tensors());
    return check_summary();
}
