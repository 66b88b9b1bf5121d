/* Optimizer kernels: 5-step trajectories of torch.optim Adam, AdamW (with
 * amsgrad and weight decay) and SGD (momentum, nesterov), gradient norm and
 * clipping against torch, thread-count independence, error messages. */
#include "check.h"
#include <math.h>
#include <string.h>

static td_tensor *get(check_fixture *f, const char *c, const char *name) {
    td_tensor *t = fixture_get(f, c, name);
    CHECK(t != NULL, "fixture %s has no %s", c, name);
    return t;
}

/* The hyperparameters of make_optim.py, in double as Python has them (the
 * fixture's float32 copy is checked against these). Adam: lr, beta1, beta2,
 * eps, weight_decay, amsgrad, decoupled; SGD: lr, momentum, dampening,
 * weight_decay, nesterov. */
static const struct { const char *name; bool adam; double hp[7]; } cases[] = {
    {"adam", true, {1e-2, 0.9, 0.999, 1e-8, 0.0, 0, 0}},
    {"adam_wd", true, {1e-2, 0.9, 0.999, 1e-8, 0.1, 0, 0}},
    {"adam_amsgrad_wd", true, {3e-2, 0.8, 0.99, 1e-8, 0.05, 1, 0}},
    {"adam_big_eps", true, {0.1, 0.9, 0.999, 0.1, 0.0, 0, 0}},
    {"adamw", true, {1e-2, 0.9, 0.999, 1e-8, 1e-2, 0, 1}},
    {"adamw_amsgrad", true, {5e-2, 0.9, 0.95, 1e-6, 0.1, 1, 1}},
    {"adam_tiny_grads", true, {1e-2, 0.9, 0.999, 1e-8, 0.0, 1, 0}},
    {"sgd", false, {0.1, 0.0, 0.0, 0.0, 0}},
    {"sgd_momentum", false, {0.05, 0.9, 0.1, 1e-3, 0}},
    {"sgd_nesterov", false, {0.05, 0.9, 0.0, 1e-2, 1}},
};

/* Runs the 5 steps of case c and compares every step and the final state. */
static void run_case(check_fixture *f, const char *c, bool is_adam, const double *h) {
    td_tensor *hp = get(f, c, "hp"), *p0 = get(f, c, "p0");
    if (!hp || !p0) return;
    for (int i = 0; i < hp->numel; i++)
        CHECK(hp->data[i] == (float)h[i], "%s: hyperparameter %d is %g in the fixture, %g here", c, i, hp->data[i], h[i]);
    td_tensor *p = td_clone(p0), *m = td_zeros(p0->ndim, p0->shape), *v = td_zeros(p0->ndim, p0->shape);
    td_tensor *vmax = td_zeros(p0->ndim, p0->shape);
    char name[32], what[96];
    for (int k = 1; k <= 5; k++) {
        snprintf(name, sizeof name, "g%d", k);
        td_tensor *g = get(f, c, name);
        if (!g) break;
        int rc = is_adam ? td_adam_step(p, g, m, v, h[5] != 0 ? vmax : NULL, h[0], h[1], h[2], h[3], h[4], k,
                                        (int)h[5], (int)h[6])
                         : td_sgd_step(p, g, h[1] != 0 ? m : NULL, (float)h[0], (float)h[1], (float)h[2],
                                       (float)h[3], (int)h[4], k);
        CHECK(rc == 0, "%s step %d: %s", c, k, td_last_error());
        snprintf(name, sizeof name, "p%d", k);
        snprintf(what, sizeof what, "%s: param after step %d", c, k);
        check_close(what, p, get(f, c, name), 1e-6f, 1e-5f);
    }
    static const char *const state[] = {"exp_avg", "exp_avg_sq", "max_exp_avg_sq", "momentum_buffer"};
    td_tensor *mine[] = {m, v, vmax, m};
    for (int i = 0; i < 4; i++) {
        td_tensor *want = fixture_get(f, c, state[i]);
        bool applies = is_adam ? i < 3 : i == 3;
        if (!want || !applies) continue;
        snprintf(what, sizeof what, "%s: %s", c, state[i]);
        check_close(what, mine[i], want, 1e-7f, 1e-5f);
    }
    td_release(p);
    td_release(m);
    td_release(v);
    td_release(vmax);
}

static void test_trajectories(void) {
    check_fixture *f = fixture_load("optim.txt");
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) run_case(f, cases[i].name, cases[i].adam, cases[i].hp);

    /* clip_grad_norm_(max_norm = 1): norm, then scale by 1 / (norm + 1e-6) */
    td_tensor *a = td_clone(get(f, "clip", "a")), *b = td_clone(get(f, "clip", "b"));
    td_tensor *gs[3] = {a, NULL, b};
    float norm = td_grad_norm(3, gs);
    float want = get(f, "clip", "norm")->data[0];
    CHECK(fabsf(norm - want) <= 1e-5f * want, "grad_norm %g, torch %g", norm, want);
    float coef = 1.0f / (norm + 1e-6f);
    CHECK(coef < 1.0f && td_scale_(a, coef) == 0 && td_scale_(b, coef) == 0, "scale_");
    check_close("clipped a", a, get(f, "clip", "a_clipped"), 1e-7f, 1e-5f);
    check_close("clipped b", b, get(f, "clip", "b_clipped"), 1e-7f, 1e-5f);
    td_release(a);
    td_release(b);
    fixture_free(f);
}

/* The same update with 1 and 2 threads on a buffer big enough to go
 * parallel: elementwise, so the results must be identical. */
static void test_threads(void) {
    uint64_t s = 3;
    int64_t n = 200003;
    td_tensor *p0 = check_rand(1, &n, -1, 1, &s), *g = check_rand(1, &n, -1, 1, &s);
    td_tensor *res[2][2];
    int threads = td_get_num_threads();
    for (int t = 0; t < 2; t++) {
        td_set_num_threads(t + 1);
        td_tensor *p = td_clone(p0), *m = td_zeros(1, &n), *v = td_zeros(1, &n), *vm = td_zeros(1, &n);
        td_tensor *q = td_clone(p0), *buf = td_zeros(1, &n);
        for (int k = 1; k <= 3; k++) {
            td_adam_step(p, g, m, v, vm, 1e-3f, 0.9f, 0.999f, 1e-8f, 1e-2f, k, 1, 1);
            td_sgd_step(q, g, buf, 1e-2f, 0.9f, 0.0f, 1e-4f, 1, k);
        }
        res[t][0] = p;
        res[t][1] = q;
        td_release(m);
        td_release(v);
        td_release(vm);
        td_release(buf);
    }
    td_set_num_threads(threads);
    CHECK(!memcmp(res[0][0]->data, res[1][0]->data, sizeof(float) * (size_t)n), "adam: 1 vs 2 threads");
    CHECK(!memcmp(res[0][1]->data, res[1][1]->data, sizeof(float) * (size_t)n), "sgd: 1 vs 2 threads");
    CHECK(memcmp(res[0][0]->data, p0->data, sizeof(float) * (size_t)n), "adam moved the parameters");
    td_tensor *gs[1] = {g};
    double ss = 0;
    for (int64_t i = 0; i < n; i++) ss += (double)g->data[i] * g->data[i];
    CHECK(fabs(td_grad_norm(1, gs) - sqrt(ss)) < 1e-5 * sqrt(ss), "grad_norm of a big tensor");
    for (int t = 0; t < 2; t++) {
        td_release(res[t][0]);
        td_release(res[t][1]);
    }
    td_release(p0);
    td_release(g);
}

/* With eps = 0 the kernel keeps subnormals (no flush to zero): gradients
 * of 1e-19 give v ~ 1e-41, and the first step moves every parameter by
 * lr * g / |g| (a flushed v would give g / 0 = inf). */
static void test_subnormal_eps0(void) {
    int64_t n = 64;
    td_tensor *p = td_zeros(1, &n), *g = td_empty(1, &n), *m = td_zeros(1, &n), *v = td_zeros(1, &n);
    for (int64_t i = 0; i < n; i++) g->data[i] = (i % 2 ? 1.0f : -1.0f) * (1.0f + (float)i / 8.0f) * 1e-19f;
    CHECK(td_adam_step(p, g, m, v, NULL, 1e-2, 0.9, 0.999, 0.0, 0.0, 1, 0, 0) == 0, "adam eps 0: %s", td_last_error());
    bool ok = true;
    for (int64_t i = 0; i < n; i++) ok &= isfinite(p->data[i]) && fabsf(p->data[i] + 1e-2f * (i % 2 ? 1.0f : -1.0f)) < 1e-4f;
    CHECK(ok, "adam eps 0, subnormal g * g: every step is -lr sign(g) (p[0] %g, v[0] %g)", p->data[0], v->data[0]);
    CHECK(v->data[0] > 0.0f, "adam eps 0: v keeps its subnormal value (%g)", v->data[0]);
    td_release(p);
    td_release(g);
    td_release(m);
    td_release(v);
}

static void test_strided(void) {
    td_tensor *base = td_from_buffer(2, SHAPE(2, 3), (float[]){1, 2, 3, 4, 5, 6});
    td_tensor *t = td_transpose(base, 0, 1);
    td_tensor *gs[1] = {t};
    CHECK(fabsf(td_grad_norm(1, gs) - sqrtf(91.0f)) < 1e-5f, "grad_norm of a transposed view");
    CHECK(td_scale_(t, 2.0f) == 0 && base->data[4] == 10.0f, "scale_ on a transposed view writes through");
    td_release(t);
    td_release(base);
}

static void expect_error(int rc, const char *what, const char *a, const char *b) {
    CHECK(rc == -1, "%s must fail", what);
    CHECK(strstr(td_last_error(), a) && (!b || strstr(td_last_error(), b)), "%s: message names %s%s%s: %s", what, a,
          b ? " and " : "", b ? b : "", td_last_error());
}

static void test_errors(void) {
    td_tensor *p = td_zeros(2, SHAPE(3, 4)), *g = td_zeros(1, SHAPE(11)), *m = td_zeros(2, SHAPE(3, 4));
    td_tensor *v = td_zeros(2, SHAPE(3, 4)), *g2 = td_zeros(2, SHAPE(4, 3)), *gt = td_transpose(g2, 0, 1);
    expect_error(td_adam_step(p, g, m, v, NULL, 1e-3f, 0.9f, 0.999f, 1e-8f, 0, 1, 0, 0), "adam numel", "[3,4]", "[11]");
    expect_error(td_adam_step(p, gt, m, v, NULL, 1e-3f, 0.9f, 0.999f, 1e-8f, 0, 1, 0, 0), "adam strided grad",
                 "strided", "adam_step");
    expect_error(td_adam_step(p, g2, m, v, NULL, 1e-3f, 0.9f, 0.999f, 1e-8f, 0, 1, 1, 0), "amsgrad without vmax",
                 "max_exp_avg_sq", NULL);
    expect_error(td_adam_step(p, g2, m, v, NULL, 1e-3f, 1.0f, 0.999f, 1e-8f, 0, 1, 0, 1), "adamw beta1 = 1",
                 "adamw_step", "betas");
    expect_error(td_adam_step(p, g2, m, v, NULL, 1e-3f, 0.9f, 0.999f, 1e-8f, 0, 0, 0, 0), "adam step 0", "step 0",
                 NULL);
    expect_error(td_sgd_step(p, g, NULL, 0.1f, 0, 0, 0, 0, 1), "sgd numel", "[3,4]", "[11]");
    expect_error(td_sgd_step(p, g2, NULL, 0.1f, 0.9f, 0, 0, 0, 1), "sgd momentum without buffer", "momentum_buffer",
                 NULL);
    expect_error(td_sgd_step(p, g2, m, 0.1f, 0.9f, 0.1f, 0, 1, 1), "nesterov with dampening", "nesterov", NULL);
    CHECK(td_grad_norm(-1, NULL) == -1.0f && strstr(td_last_error(), "grad_norm"), "grad_norm(-1) fails");
    CHECK(td_scale_(NULL, 1.0f) == -1, "scale_(NULL) fails");
    td_release(p);
    td_release(g);
    td_release(m);
    td_release(v);
    td_release(gt);
    td_release(g2);
}

int main(void) {
    test_trajectories();
    test_threads();
    test_subnormal_eps0();
    test_strided();
    test_errors();
    CHECK(td_live_tensors() == 0, "tensors leaked: %lld live", (long long)td_live_tensors());
    return check_summary();
}
