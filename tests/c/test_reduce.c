/* Reductions and softmax: PyTorch fixtures, gradient checks on transposed
 * inputs, the optimized kernels (rows, column chunks, split sums, permuted
 * axes) against naive double loops, special values and error messages. */
#include "check.h"
#include "ops/reduce_kernels.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

enum { SUM, MEAN, VAR, LSE, MAX, ARGMAX, SOFTMAX, LOG_SOFTMAX, NOPS };
static const char *const op_names[NOPS] = {"sum", "mean", "var", "logsumexp", "max", "argmax", "softmax", "log_softmax"};

typedef struct {
    int op;
    int arg[3]; /* as in make_reduce.py */
} spec;

static td_tensor *apply(td_tensor **in, void *ctx) {
    const spec *s = ctx;
    td_tensor *a = in[0];
    switch (s->op) {
    case SUM: return td_sum(a, (uint32_t)s->arg[0], s->arg[1]);
    case MEAN: return td_mean(a, (uint32_t)s->arg[0], s->arg[1]);
    case VAR: return td_var(a, (uint32_t)s->arg[0], s->arg[2], s->arg[1]);
    case LSE: return td_logsumexp(a, (uint32_t)s->arg[0], s->arg[1]);
    case MAX: return td_max(a, s->arg[0], s->arg[1]);
    case ARGMAX: return td_argmax(a, s->arg[0], s->arg[1]);
    case SOFTMAX: return td_softmax(a, s->arg[0]);
    default: return td_log_softmax(a, s->arg[0]);
    }
}

static void test_fixtures(void) {
    check_fixture *f = fixture_load("reduce.txt");
    for (int op = 0; op < NOPS; op++) {
        int k = 0;
        for (;; k++) {
            char name[64];
            snprintf(name, sizeof name, "%s_%d", op_names[op], k);
            td_tensor *arg = fixture_get(f, name, "arg");
            if (!arg) break;
            spec s = {op, {0, 0, 0}};
            for (int i = 0; i < arg->numel && i < 3; i++) s.arg[i] = (int)arg->data[i];
            check_fixture_case(f, name, apply, &s, 1, 1e-5f, 1e-4f);
        }
        CHECK(k > 0, "no fixture cases for %s", op_names[op]);
    }
    fixture_free(f);
}

/* Finite differences on a transposed [2,3,4] view of a [4,3,2] buffer. */
static void test_gradients(void) {
    static const spec specs[] = {
        {SUM, {0, 0}}, {SUM, {1, 1}}, {SUM, {2, 0}}, {SUM, {5, 0}}, {SUM, {6, 1}},
        {MEAN, {3, 0}}, {MEAN, {5, 1}}, {VAR, {5, 0, 1}}, {VAR, {2, 1, 0}}, {VAR, {0, 0, 1}},
        {LSE, {4, 0}}, {LSE, {5, 1}}, {LSE, {0, 0}}, {LSE, {1, 0}},
        {MAX, {0, 0}}, {MAX, {2, 1}}, {MAX, {-2, 0}},
        {SOFTMAX, {0}}, {SOFTMAX, {1}}, {SOFTMAX, {2}}, {LOG_SOFTMAX, {0}}, {LOG_SOFTMAX, {-1}},
    };
    uint64_t seed = 11;
    for (size_t i = 0; i < sizeof specs / sizeof *specs; i++) {
        td_tensor *base = check_rand(3, SHAPE(4, 3, 2), -2.0f, 2.0f, &seed);
        td_tensor *a = td_transpose(base, 0, 2);
        td_set_requires_grad(a, 1);
        char what[64];
        snprintf(what, sizeof what, "%s(arg %d %d %d) of a transposed view", op_names[specs[i].op],
                 specs[i].arg[0], specs[i].arg[1], specs[i].arg[2]);
        check_grad(what, apply, (void *)&specs[i], 1, &a, 1e-3f, 2e-3f, 2e-2f, 0);
        td_release(a);
        td_release(base);
    }
}

/* ---- naive references in double ---- */

/* Index into the keepdim output of flat input index i. */
static int64_t out_index(const td_tensor *t, uint32_t mask, int64_t i) {
    int64_t o = 0, mul = 1;
    for (int d = t->ndim - 1; d >= 0; d--) {
        int64_t c = i % t->shape[d];
        i /= t->shape[d];
        if (!(mask >> d & 1)) {
            o += c * mul;
            mul *= t->shape[d];
        }
    }
    return o;
}

static int64_t out_numel(const td_tensor *t, uint32_t mask) {
    int64_t n = 1;
    for (int d = 0; d < t->ndim; d++)
        if (!(mask >> d & 1)) n *= t->shape[d];
    return n;
}

/* Naive reduction of op (SUM, VAR with correction 1, LSE, MAX, ARGMAX) over
 * mask, as a tensor of the non-keepdim shape. */
static td_tensor *naive_reduce(int op, td_tensor *a, uint32_t mask) {
    int64_t n = a->numel, m = out_numel(a, mask), cnt = n / (m ? m : 1);
    float *x = malloc(sizeof(float) * (size_t)n);
    td_copy_to_buffer(a, x);
    double *s = calloc((size_t)m, sizeof(double)), *q = calloc((size_t)m, sizeof(double));
    double *mx = malloc(sizeof(double) * (size_t)m);
    int64_t *at = calloc((size_t)m, sizeof(int64_t)), *seen = calloc((size_t)m, sizeof(int64_t));
    for (int64_t j = 0; j < m; j++) mx[j] = -INFINITY;
    for (int64_t i = 0; i < n; i++) {
        int64_t o = out_index(a, mask, i);
        if (x[i] > mx[o]) {
            mx[o] = x[i];
            at[o] = seen[o];
        }
        seen[o]++;
        s[o] += x[i];
    }
    for (int64_t i = 0; i < n; i++) {
        int64_t o = out_index(a, mask, i);
        double d = x[i] - s[o] / (double)cnt;
        q[o] += op == LSE ? exp(x[i] - mx[o]) : d * d;
    }
    int64_t shape[TD_MAX_DIMS];
    int nd = 0;
    for (int d = 0; d < a->ndim; d++)
        if (!(mask >> d & 1)) shape[nd++] = a->shape[d];
    td_tensor *out = td_empty(nd, shape);
    for (int64_t j = 0; j < m; j++)
        out->data[j] = (float)(op == SUM ? s[j] : op == VAR ? q[j] / (double)(cnt - 1)
                               : op == LSE ? mx[j] + log(q[j]) : op == MAX ? mx[j] : (double)at[j]);
    free(x);
    free(s);
    free(q);
    free(mx);
    free(at);
    free(seen);
    return out;
}

/* Naive softmax / log_softmax over one axis, and its backward for g. */
static void naive_softmax(td_tensor *a, int axis, bool log_out, const float *g, td_tensor **y_out,
                          td_tensor **gin_out) {
    uint32_t mask = 1u << axis;
    int64_t n = a->numel, m = out_numel(a, mask);
    float *x = malloc(sizeof(float) * (size_t)n);
    td_copy_to_buffer(a, x);
    double *mx = malloc(sizeof(double) * (size_t)m), *s = calloc((size_t)m, sizeof(double));
    double *dot = calloc((size_t)m, sizeof(double));
    for (int64_t j = 0; j < m; j++) mx[j] = -INFINITY;
    for (int64_t i = 0; i < n; i++) {
        int64_t o = out_index(a, mask, i);
        mx[o] = x[i] > mx[o] ? x[i] : mx[o];
    }
    for (int64_t i = 0; i < n; i++) s[out_index(a, mask, i)] += exp(x[i] - mx[out_index(a, mask, i)]);
    td_tensor *y = td_empty(a->ndim, a->shape), *gin = td_empty(a->ndim, a->shape);
    for (int64_t i = 0; i < n; i++) {
        int64_t o = out_index(a, mask, i);
        double p = exp(x[i] - mx[o]) / s[o];
        y->data[i] = (float)(log_out ? (x[i] - mx[o]) - log(s[o]) : p);
        dot[o] += log_out ? g[i] : g[i] * p;
    }
    for (int64_t i = 0; i < n; i++) {
        int64_t o = out_index(a, mask, i);
        double p = exp(x[i] - mx[o]) / s[o];
        gin->data[i] = (float)(log_out ? g[i] - p * dot[o] : p * (g[i] - dot[o]));
    }
    *y_out = y;
    *gin_out = gin;
    free(x);
    free(mx);
    free(s);
    free(dot);
}

/* Shapes that reach every path: long rows split across threads, many rows,
 * narrow and wide columns (more than one chunk of TD_CHUNK and of
 * TD_SUM_COLS), a middle axis, non-adjacent axes, all axes. */
static void test_against_naive(void) {
    static const struct {
        int ndim;
        int64_t shape[3];
        uint32_t mask;
        bool transpose;
    } cases[] = {
        {2, {1, 200000}, 2, false}, {2, {4096, 40}, 2, false}, {2, {50000, 3}, 1, false},
        {2, {300, 700}, 1, false},  {3, {20, 30, 100}, 2, false}, {3, {20, 30, 100}, 5, false},
        {3, {20, 30, 100}, 0, false}, {2, {700, 300}, 1, true},  {2, {3, 70000}, 1, false},
        {2, {5, 20000}, 1, false},  {2, {40, 1500}, 1, false},   {3, {2, 500, 40}, 2, false},
    };
    uint64_t seed = 5;
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        td_tensor *base = check_rand(cases[c].ndim, cases[c].shape, -3.0f, 3.0f, &seed);
        td_tensor *a = cases[c].transpose ? td_transpose(base, 0, 1) : (td_retain(base), base);
        uint32_t mask = cases[c].mask ? cases[c].mask : (1u << a->ndim) - 1;
        char what[96];
        int64_t n0 = a->shape[0], n1 = a->shape[1];
        snprintf(what, sizeof what, "case %zu [%lld,%lld,..] mask %u", c, (long long)n0, (long long)n1, mask);
        struct { int op; td_tensor *got; float atol, rtol; } r[] = {
            {SUM, td_sum(a, mask, 0), 1e-2f, 1e-5f},
            {VAR, td_var(a, mask, 1, 0), 1e-5f, 1e-4f},
            {LSE, td_logsumexp(a, mask, 0), 1e-5f, 1e-5f},
        };
        for (size_t k = 0; k < sizeof r / sizeof *r; k++) {
            td_tensor *want = naive_reduce(r[k].op, a, mask);
            char w2[160];
            snprintf(w2, sizeof w2, "%s vs naive, %s", op_names[r[k].op], what);
            check_close(w2, r[k].got, want, r[k].atol, r[k].rtol);
            td_release(want);
            td_release(r[k].got);
        }
        /* single-axis ops on the lowest reduced axis */
        int axis = 0;
        while (!(mask >> axis & 1)) axis++;
        td_tensor *mv = td_max(a, axis, 0), *mi = td_argmax(a, axis, 0);
        td_tensor *wv = naive_reduce(MAX, a, 1u << axis), *wi = naive_reduce(ARGMAX, a, 1u << axis);
        check_close("max vs naive", mv, wv, 0, 0);
        check_close("argmax vs naive", mi, wi, 0, 0);
        td_release(mv);
        td_release(mi);
        td_release(wv);
        td_release(wi);
        for (int lo = 0; lo < 2; lo++) {
            td_tensor *g = check_rand(a->ndim, a->shape, -1.0f, 1.0f, &seed);
            td_tensor *x = td_clone(a);
            td_set_requires_grad(x, 1);
            td_tensor *y = lo ? td_log_softmax(x, axis) : td_softmax(x, axis);
            td_tensor *wy, *wg;
            naive_softmax(a, axis, lo, g->data, &wy, &wg);
            CHECK(td_backward(y, g) == 0, "softmax backward: %s", td_last_error());
            td_tensor *gx = td_get_grad(x);
            check_close(lo ? "log_softmax vs naive" : "softmax vs naive", y, wy, 1e-6f, 1e-4f);
            check_close(lo ? "log_softmax grad vs naive" : "softmax grad vs naive", gx, wg, 1e-6f, 1e-3f);
            td_release(gx);
            td_release(y);
            td_release(x);
            td_release(g);
            td_release(wy);
            td_release(wg);
        }
        td_release(a);
        td_release(base);
    }
}

static void test_special_values(void) {
    td_tensor *a = td_from_buffer(2, SHAPE(2, 3), (float[]){1, NAN, 3, -INFINITY, -INFINITY, -INFINITY});
    td_tensor *mx = td_max(a, 1, 0), *am = td_argmax(a, 1, 0), *lse = td_logsumexp(a, 2, 0);
    CHECK(mx && isnan(mx->data[0]) && isinf(mx->data[1]) && mx->data[1] < 0, "max with NaN / all -inf");
    CHECK(am && am->data[0] == 1.0f && am->data[1] == 0.0f, "argmax points at the NaN, else the first max");
    CHECK(lse && isnan(lse->data[0]) && isinf(lse->data[1]) && lse->data[1] < 0, "logsumexp of NaN / all -inf");
    td_tensor *b = td_from_buffer(1, SHAPE(3), (float[]){0.0f, -INFINITY, 2.0f});
    td_tensor *ls = td_log_softmax(b, 0), *sm = td_softmax(b, 0);
    double l0 = -log1p(exp(2.0)), l2 = -log1p(exp(-2.0));
    CHECK(ls && fabs(ls->data[0] - l0) < 1e-6 && isinf(ls->data[1]) && fabs(ls->data[2] - l2) < 1e-6,
          "log_softmax with a -inf entry");
    CHECK(sm && sm->data[1] == 0.0f && fabs(sm->data[0] + sm->data[2] - 1.0f) < 1e-6, "softmax with a -inf entry");
    td_tensor *big = td_from_buffer(1, SHAPE(2), (float[]){INFINITY, 1.0f}), *lb = td_logsumexp(big, 0, 0);
    CHECK(lb && isinf(lb->data[0]) && lb->data[0] > 0, "logsumexp with +inf is +inf");
    td_tensor *e = td_zeros(2, SHAPE(0, 3)), *se = td_sum(e, 1, 0);
    CHECK(se && se->numel == 3 && se->data[0] == 0.0f && se->data[2] == 0.0f, "sum over an empty axis is 0");
    td_tensor *me = td_max(e, 0, 0);
    CHECK(!me && strstr(td_last_error(), "[0,3]"), "max over an empty axis fails: %s", td_last_error());
    td_tensor *le = td_logsumexp(e, 1, 0), *e2 = td_zeros(2, SHAPE(3, 0));
    CHECK(le && le->numel == 3 && isinf(le->data[0]) && le->data[0] < 0, "logsumexp over an empty axis is -inf");
    td_tensor *s2 = td_sum(e2, 1, 0), *m2 = td_max(e2, 0, 1), *sm0 = td_softmax(e, 1), *sm1 = td_softmax(e2, 0);
    td_tensor *v2 = td_var(e2, 1, 1, 0), *le2 = td_logsumexp(e2, 1, 0);
    CHECK(s2 && s2->ndim == 1 && s2->numel == 0 && m2 && m2->numel == 0 && sm0 && sm0->numel == 0 && sm1 &&
              sm1->numel == 0 && v2 && v2->numel == 0 && le2 && le2->numel == 0,
          "reductions and softmax with nothing to compute: %s", td_last_error());
    td_tensor *ts[] = {a, mx, am, lse, b, ls, sm, big, lb, e, se, le, e2, s2, m2, sm0, sm1, v2, le2};
    for (size_t i = 0; i < sizeof ts / sizeof *ts; i++) td_release(ts[i]);
}

/* The vectorized exp against exp in double: relative error within 2 ulp
 * where the result is a normal float, exact 0 / inf / NaN at the ends. */
static void test_vexp(void) {
    int64_t n = 1 << 20;
    float *x = malloc(sizeof(float) * (size_t)n), *y = malloc(sizeof(float) * (size_t)n);
    for (int64_t i = 0; i < n; i++) x[i] = -110.0f + 200.0f * (float)i / (float)n;
    td_vexp(x, y, n);
    double worst = 0;
    int64_t at = 0;
    for (int64_t i = 0; i < n; i++) {
        double e = exp((double)x[i]);
        if (e < 1.18e-38 || e > 3.4e38) continue;
        double err = fabs(y[i] - e) / e;
        if (err > worst) {
            worst = err;
            at = i;
        }
    }
    CHECK(worst < 2 * 5.97e-8, "vexp: relative error %g at x = %g", worst, x[at]);
    float sp[7] = {-INFINITY, INFINITY, NAN, 0.0f, -0.0f, 89.0f, -104.0f}, o[7];
    td_vexp(sp, o, 7);
    CHECK(o[0] == 0.0f && isinf(o[1]) && isnan(o[2]) && o[3] == 1.0f && o[4] == 1.0f && isinf(o[5]) && o[6] == 0.0f,
          "vexp special values: %g %g %g %g %g %g %g", o[0], o[1], o[2], o[3], o[4], o[5], o[6]);
    free(x);
    free(y);
}

static void expect_error(td_tensor *t, const char *op, const char *what) {
    CHECK(t == NULL, "%s must fail", what);
    CHECK(strstr(td_last_error(), op) && strstr(td_last_error(), "[2,3]"), "%s: error names op and shape: %s", what,
          td_last_error());
    td_release(t);
}

static void test_errors(void) {
    td_tensor *a = td_zeros(2, SHAPE(2, 3));
    expect_error(td_sum(a, 4, 0), "sum", "sum over axis 2 of [2,3]");
    expect_error(td_mean(a, 8, 0), "mean", "mean over axis 3 of [2,3]");
    expect_error(td_var(a, 4, 1, 0), "var", "var over axis 2 of [2,3]");
    expect_error(td_var(a, 1, -1, 0), "var", "var with a negative correction");
    expect_error(td_logsumexp(a, 4, 1), "logsumexp", "logsumexp over axis 2 of [2,3]");
    expect_error(td_max(a, 2, 0), "max", "max over axis 2 of [2,3]");
    expect_error(td_argmax(a, -3, 0), "argmax", "argmax over axis -3 of [2,3]");
    expect_error(td_softmax(a, 2), "softmax", "softmax over axis 2 of [2,3]");
    expect_error(td_log_softmax(a, -3), "log_softmax", "log_softmax over axis -3 of [2,3]");
    td_release(a);
}

int main(void) {
    test_fixtures();
    test_gradients();
    test_against_naive();
    test_special_values();
    test_vexp();
    test_errors();
    CHECK(td_live_tensors() == 0, "tensors leaked: %lld live", (long long)td_live_tensors());
    return check_summary();
}
