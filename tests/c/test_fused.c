/* Fused kernels: product of experts, weighted pooling and the GMM ELBO,
 * against the same math written with primitive engine ops (values and
 * gradients), PyTorch fixtures, finite differences, and error messages. */
#include "check.h"
#include <math.h>
#include <string.h>

#define LOG_2PI 1.8378770664093453f

/* out [2,B,D] -> out[k] as [B,D]. */
static td_tensor *part(td_tensor *out, int k) {
    td_tensor *n = td_narrow(out, 0, k, 1);
    td_tensor *r = td_reshape(n, 2, out->shape + 1);
    td_release(n);
    return r;
}

/* sum(a * r), a scalar. */
static td_tensor *dot(td_tensor *a, td_tensor *r) {
    td_tensor *m = td_mul(a, r), *s = td_sum(m, 0, 0);
    td_release(m);
    return s;
}

/* Takes the gradient out of t (the next backward starts from none). */
static td_tensor *grad_of(td_tensor *t) {
    td_tensor *g = td_get_grad(t);
    td_set_grad(t, NULL);
    return g;
}

/* Compares gradients of the leaves after two backward passes, a then b. */
static void compare_grads(const char *what, td_tensor *la, td_tensor *lb, int n, td_tensor **leaves) {
    td_tensor *ga[8] = {0};
    CHECK(td_backward(la, NULL) == 0, "%s: backward (fused): %s", what, td_last_error());
    for (int k = 0; k < n; k++) ga[k] = grad_of(leaves[k]);
    CHECK(td_backward(lb, NULL) == 0, "%s: backward (composite): %s", what, td_last_error());
    for (int k = 0; k < n; k++) {
        td_tensor *gb = grad_of(leaves[k]);
        char name[128];
        snprintf(name, sizeof name, "%s: gradient of input %d", what, k);
        check_close(name, ga[k], gb, 1e-5f, 1e-4f);
        td_release(ga[k]);
        td_release(gb);
    }
}

/* ---- fusion of experts ---- */

/* mean and logvar of the product, in primitive ops; w [E,B] (or [E,1]) or NULL. */
static void poe_composite(td_tensor *mu, td_tensor *lv, td_tensor *w, int prior, td_tensor **mean,
                          td_tensor **logvar) {
    td_tensor *nl = td_neg(lv), *p = td_exp(nl), *wp = p;
    td_retain(p);
    if (w) {
        td_tensor *w3 = td_reshape(w, 3, SHAPE(w->shape[0], w->shape[1], 1));
        td_release(wp);
        wp = td_mul(p, w3);
        td_release(w3);
    }
    td_tensor *T0 = td_sum(wp, 1u, 0), *T = prior ? td_add_scalar(T0, 1.0f) : (td_retain(T0), T0);
    td_tensor *mp = td_mul(mu, wp), *num = td_sum(mp, 1u, 0), *lT = td_log(T);
    *mean = td_div(num, T);
    *logvar = td_neg(lT);
    td_tensor *tmp[] = {nl, p, wp, T0, T, mp, num, lT};
    for (size_t i = 0; i < sizeof tmp / sizeof *tmp; i++) td_release(tmp[i]);
}

typedef struct { int kind; } fuse_ctx; /* 0 poe, 1 poe_noprior, 2 weighted_pool */

static td_tensor *apply_fuse(td_tensor **in, void *ctx) {
    int kind = ((fuse_ctx *)ctx)->kind;
    if (kind == 0) return td_poe(in[0], in[1], in[2]);
    if (kind == 1) return td_poe_noprior(in[0], in[1], in[2]);
    return td_weighted_pool(in[0], in[1], in[2]);
}
static td_tensor *apply_poe2(td_tensor **in, void *ctx) { return td_poe(in[0], in[1], NULL); }

/* fused vs composite, values and gradients, for one kind of fusion. */
static void fuse_vs_composite(int kind, td_tensor *mu, td_tensor *lv, td_tensor *w) {
    static const char *names[] = {"poe", "poe_noprior", "weighted_pool"};
    uint64_t s = 99;
    fuse_ctx ctx = {kind};
    td_tensor *in[3] = {mu, lv, w};
    td_tensor *out = apply_fuse(in, &ctx), *cm = NULL, *cl = NULL;
    poe_composite(mu, lv, w, kind == 0, &cm, &cl);
    td_tensor *fm = part(out, 0), *fl = part(out, 1);
    char what[64];
    snprintf(what, sizeof what, "%s: mean vs composite", names[kind]);
    check_close(what, fm, cm, 1e-5f, 1e-4f);
    snprintf(what, sizeof what, "%s: logvar vs composite", names[kind]);
    check_close(what, fl, cl, 1e-5f, 1e-4f);
    td_tensor *r0 = check_rand(2, fm->shape, -1, 1, &s), *r1 = check_rand(2, fm->shape, -1, 1, &s);
    td_tensor *a0 = dot(fm, r0), *a1 = dot(fl, r1), *b0 = dot(cm, r0), *b1 = dot(cl, r1);
    td_tensor *la = td_add(a0, a1), *lb = td_add(b0, b1);
    snprintf(what, sizeof what, "%s: gradients vs composite", names[kind]);
    compare_grads(what, la, lb, kind == 2 ? 3 : 2, in);
    td_tensor *tmp[] = {out, cm, cl, fm, fl, r0, r1, a0, a1, b0, b1, la, lb};
    for (size_t i = 0; i < sizeof tmp / sizeof *tmp; i++) td_release(tmp[i]);
}

static void test_experts_composite(void) {
    uint64_t s = 3;
    const int64_t E = 3, B = 5, D = 7;
    float maskv[15] = {1, 0, 1, 1, 0, 1, 1, 0, 1, 0, 0, 1, 1, 0, 0}; /* sample 4: no expert */
    td_tensor *mu = check_rand(3, SHAPE(E, B, D), -2, 2, &s), *lv = check_rand(3, SHAPE(E, B, D), -2, 2, &s);
    td_tensor *mask = td_from_buffer(2, SHAPE(E, B), maskv), *gate = check_rand(2, SHAPE(E, B), 0.05f, 1, &s);
    td_set_requires_grad(mu, 1);
    td_set_requires_grad(lv, 1);
    td_set_requires_grad(gate, 1);
    fuse_vs_composite(0, mu, lv, mask);
    fuse_vs_composite(0, mu, lv, NULL);
    maskv[4] = 1; /* without the prior every sample needs an expert */
    td_tensor *mask2 = td_from_buffer(2, SHAPE(E, B), maskv);
    fuse_vs_composite(1, mu, lv, mask2);
    fuse_vs_composite(2, mu, lv, gate);
    td_tensor *gate_b = check_rand(2, SHAPE(E, 1), 0.1f, 1, &s); /* one gate for the whole batch */
    td_set_requires_grad(gate_b, 1);
    fuse_vs_composite(2, mu, lv, gate_b);
    td_tensor *tmp[] = {mu, lv, mask, gate, mask2, gate_b};
    for (size_t i = 0; i < sizeof tmp / sizeof *tmp; i++) td_release(tmp[i]);
}

/* A missing expert changes nothing: masked out == left out; the mask takes no gradient. */
static void test_experts_mask(void) {
    uint64_t s = 5;
    td_tensor *mu = check_rand(3, SHAPE(3, 2, 4), -1, 1, &s), *lv = check_rand(3, SHAPE(3, 2, 4), -1, 1, &s);
    td_tensor *mask = td_from_buffer(2, SHAPE(3, 2), (float[]){1, 0, 0, 1, 0, 1});
    td_set_requires_grad(mask, 1);
    td_tensor *out = td_poe(mu, lv, mask);
    td_tensor *mu2 = td_narrow(mu, 0, 0, 1), *lv2 = td_narrow(lv, 0, 0, 1);
    td_tensor *alone = td_poe(mu2, lv2, NULL); /* sample 0 only has expert 0 */
    td_tensor *o0 = td_narrow(out, 1, 0, 1), *a0 = td_narrow(alone, 1, 0, 1);
    check_close("poe: masked experts are left out", o0, a0, 1e-6f, 1e-5f);
    CHECK(!out->requires_grad, "poe: a mask with requires_grad gives no gradient path");
    /* MoPoE: a per-sample mask gives each sample the PoE of its own subset (sample 1: experts 1, 2) */
    td_tensor *sub = td_from_buffer(2, SHAPE(3, 1), (float[]){0, 1, 1});
    td_tensor *subset = td_poe(mu, lv, sub), *o1 = td_narrow(out, 1, 1, 1), *s1 = td_narrow(subset, 1, 1, 1);
    check_close("poe: per-sample subset (MoPoE)", o1, s1, 1e-6f, 1e-5f);
    td_tensor *tmp[] = {mu, lv, mask, out, mu2, lv2, alone, o0, a0, sub, subset, o1, s1};
    for (size_t i = 0; i < sizeof tmp / sizeof *tmp; i++) td_release(tmp[i]);
}

/* Precisions far beyond float range (logvar -100) stay finite. */
static void test_experts_stable(void) {
    td_tensor *mu = td_from_buffer(3, SHAPE(2, 1, 2), (float[]){0.5f, -1.0f, 3.0f, 2.0f});
    td_tensor *lv = td_from_buffer(3, SHAPE(2, 1, 2), (float[]){-100.0f, 95.0f, 0.0f, 100.0f});
    td_set_requires_grad(mu, 1);
    td_set_requires_grad(lv, 1);
    td_tensor *out = td_poe_noprior(mu, lv, NULL);
    /* d 0: expert 0 dominates; d 1: 1/P = 1/(e^-95 + e^-100) */
    float want_lv1 = -(-95.0f + log1pf(expf(-5.0f)));
    td_tensor *want = td_from_buffer(3, SHAPE(2, 1, 2), (float[]){0.5f, -1.0f + (2.0f + 1.0f) * expf(-5.0f) / (1 + expf(-5.0f)), -100.0f, want_lv1});
    check_close("poe_noprior: extreme log-variances", out, want, 1e-5f, 1e-5f);
    CHECK(td_backward(out, want) == 0, "backward: %s", td_last_error());
    td_tensor *g = td_get_grad(lv);
    bool finite = g != NULL;
    for (int i = 0; g && i < 4; i++) finite &= isfinite(g->data[i]);
    CHECK(finite, "poe_noprior: gradients at extreme log-variances are finite");
    td_tensor *tmp[] = {mu, lv, out, want, g};
    for (size_t i = 0; i < sizeof tmp / sizeof *tmp; i++) td_release(tmp[i]);
}

static void test_experts_fixtures(void) {
    check_fixture *f = fixture_load("fused.txt");
    fuse_ctx poe = {0}, noprior = {1}, pool = {2};
    check_fixture_case(f, "poe_mask", apply_fuse, &poe, 3, 1e-5f, 1e-4f);
    check_fixture_case(f, "poe_nomask", apply_poe2, NULL, 2, 1e-5f, 1e-4f);
    check_fixture_case(f, "poe_noprior", apply_fuse, &noprior, 3, 1e-5f, 1e-4f);
    check_fixture_case(f, "weighted_pool", apply_fuse, &pool, 3, 1e-5f, 1e-4f);
    fixture_free(f);
}

/* Finite differences with a permuted (non-contiguous) mu and a broadcast gate. */
static void test_experts_fd(void) {
    uint64_t s = 11;
    td_tensor *base = check_rand(3, SHAPE(4, 3, 5), -1, 1, &s);
    td_tensor *mu = td_permute(base, (int[]){1, 0, 2}); /* [3,4,5], strided */
    td_tensor *lv = check_rand(3, SHAPE(3, 4, 5), -1, 1, &s);
    td_tensor *mask = td_from_buffer(2, SHAPE(3, 4), (float[]){1, 0, 1, 1, 1, 1, 0, 1, 0, 1, 0, 0});
    td_tensor *gate = check_rand(2, SHAPE(3, 1), 0.2f, 1, &s);
    td_set_requires_grad(mu, 1);
    td_set_requires_grad(lv, 1);
    td_set_requires_grad(gate, 1);
    fuse_ctx poe = {0}, noprior = {1}, pool = {2};
    check_grad("poe", apply_fuse, &poe, 3, (td_tensor *[]){mu, lv, mask}, 1e-3f, 2e-3f, 2e-2f, 0);
    check_grad("poe_noprior", apply_fuse, &noprior, 3, (td_tensor *[]){mu, lv, mask}, 1e-3f, 2e-3f, 2e-2f, 0);
    check_grad("weighted_pool", apply_fuse, &pool, 3, (td_tensor *[]){mu, lv, gate}, 1e-3f, 2e-3f, 2e-2f, 0);
    td_tensor *tmp[] = {base, mu, lv, mask, gate};
    for (size_t i = 0; i < sizeof tmp / sizeof *tmp; i++) td_release(tmp[i]);
}

static bool error_has(const char *a, const char *b, const char *c) {
    const char *e = td_last_error();
    return strstr(e, a) && (!b || strstr(e, b)) && (!c || strstr(e, c));
}

static void test_experts_errors(void) {
    td_tensor *mu = td_zeros(3, SHAPE(3, 4, 5)), *lv = td_zeros(3, SHAPE(3, 4, 6));
    td_tensor *o = td_poe(mu, lv, NULL);
    CHECK(!o && error_has("poe", "[3,4,5]", "[3,4,6]"), "poe: shape mismatch message: %s", td_last_error());
    td_tensor *lv2 = td_zeros(3, SHAPE(3, 4, 5)), *m = td_zeros(2, SHAPE(2, 4));
    o = td_poe(mu, lv2, m);
    CHECK(!o && error_has("poe", "[2,4]", "[3,4]"), "poe: mask shape message: %s", td_last_error());
    td_tensor *m2 = td_from_buffer(2, SHAPE(3, 4), (float[]){1, 1, 0, 1, 0, 1, 0, 1, 1, 1, 0, 1});
    o = td_poe_noprior(mu, lv2, m2);
    CHECK(!o && error_has("poe_noprior", "sample 2", NULL), "poe_noprior: empty sample message: %s", td_last_error());
    m2->data[0] = -0.5f;
    o = td_weighted_pool(mu, lv2, m2);
    CHECK(!o && error_has("weighted_pool", "-0.5", NULL), "weighted_pool: negative weight: %s", td_last_error());
    td_tensor *tmp[] = {mu, lv, lv2, m, m2};
    for (size_t i = 0; i < sizeof tmp / sizeof *tmp; i++) td_release(tmp[i]);
}

/* ---- GMM ---- */

/* logsumexp over axis 1 of x [B,K] in primitive ops (the shift is a constant). */
static td_tensor *lse_rows(td_tensor *x) {
    int64_t B = x->shape[0], K = x->shape[1];
    float mx[256];
    td_tensor *xc = td_contiguous(x);
    for (int64_t b = 0; b < B; b++) {
        mx[b] = -INFINITY;
        for (int64_t k = 0; k < K; k++) mx[b] = fmaxf(mx[b], xc->data[b * K + k]);
    }
    td_tensor *m = td_from_buffer(2, SHAPE(B, 1), mx), *d = td_sub(x, m), *e = td_exp(d), *sm = td_sum(e, 2u, 0);
    td_tensor *l = td_log(sm), *m1 = td_reshape(m, 1, SHAPE(B)), *out = td_add(l, m1);
    td_tensor *tmp[] = {xc, m, d, e, sm, l, m1};
    for (size_t i = 0; i < sizeof tmp / sizeof *tmp; i++) td_release(tmp[i]);
    return out;
}

/* log pi + log p(z|c) [B,K] in primitive ops. */
static td_tensor *joint_composite(td_tensor *z, td_tensor *logits, td_tensor *locs, td_tensor *scales, int laplace) {
    int64_t B = z->shape[0], K = locs->shape[0], D = z->shape[1];
    td_tensor *z3 = td_reshape(z, 3, SHAPE(B, 1, D)), *m3 = td_reshape(locs, 3, SHAPE(1, K, D));
    td_tensor *s3 = td_reshape(scales, 3, SHAPE(1, K, D)), *diff = td_sub(z3, m3);
    td_tensor *t1 = laplace ? td_abs(diff) : td_square(diff), *ns = td_neg(s3), *p = td_exp(ns), *t2 = td_mul(t1, p);
    td_tensor *t3 = td_add(t2, s3), *t4 = td_add_scalar(t3, laplace ? logf(2.0f) : LOG_2PI), *t5 = td_sum(t4, 4u, 0);
    td_tensor *lp = td_mul_scalar(t5, laplace ? -1.0f : -0.5f);
    td_tensor *l2 = td_reshape(logits, 2, SHAPE(1, K)), *lz = lse_rows(l2), *lpi = td_sub(logits, lz);
    td_tensor *out = td_add(lp, lpi);
    td_tensor *tmp[] = {z3, m3, s3, diff, t1, ns, p, t2, t3, t4, t5, lp, l2, lz, lpi};
    for (size_t i = 0; i < sizeof tmp / sizeof *tmp; i++) td_release(tmp[i]);
    return out;
}

static td_tensor *elbo_composite(td_tensor *J, td_tensor *qc) {
    if (!qc) return lse_rows(J);
    td_tensor *lq = td_log(qc), *d = td_sub(J, lq), *m = td_mul(qc, d), *out = td_sum(m, 2u, 0);
    td_release(lq);
    td_release(d);
    td_release(m);
    return out;
}

typedef struct { int laplace, elbo; } gmm_ctx;

static td_tensor *apply_gmm(td_tensor **in, void *ctx) {
    gmm_ctx *c = ctx;
    if (!c->elbo) return td_gmm_log_joint(in[0], in[1], in[2], in[3], c->laplace);
    if (!c->laplace) return td_gmm_elbo(in[0], in[1], in[2], in[3], c->elbo == 2 ? in[4] : NULL);
    td_tensor *J = td_gmm_log_joint(in[0], in[1], in[2], in[3], 1);
    td_tensor *out = td_gmm_elbo_joint(J, c->elbo == 2 ? in[4] : NULL);
    td_release(J);
    return out;
}

static td_tensor *apply_gmm_composite(td_tensor **in, void *ctx) {
    gmm_ctx *c = ctx;
    td_tensor *J = joint_composite(in[0], in[1], in[2], in[3], c->laplace);
    if (!c->elbo) return J;
    td_tensor *out = elbo_composite(J, c->elbo == 2 ? in[4] : NULL);
    td_release(J);
    return out;
}

static td_tensor *apply_resp(td_tensor **in, void *ctx) { return td_gmm_responsibilities(in[0], in[1], in[2], in[3]); }

/* Inputs z [B,D] (a transposed view), logits [K], means, scales [K,D], qc [B,K]. */
static void gmm_inputs(td_tensor **in, td_tensor **zbase, int64_t B, int64_t K, int64_t D, uint64_t *s) {
    *zbase = check_rand(2, SHAPE(D, B), -2, 2, s);
    in[0] = td_transpose(*zbase, 0, 1);
    in[1] = check_rand(1, SHAPE(K), -1, 1, s);
    in[2] = check_rand(2, SHAPE(K, D), -1.5f, 1.5f, s);
    in[3] = check_rand(2, SHAPE(K, D), -0.7f, 0.7f, s);
    td_tensor *lg = check_rand(2, SHAPE(B, K), -2, 2, s);
    td_tensor *e = td_exp(lg), *sm = td_sum(e, 2u, 1);
    in[4] = td_div(e, sm); /* rows of qc sum to 1 */
    td_release(lg);
    td_release(e);
    td_release(sm);
    for (int k = 0; k < 5; k++) td_set_requires_grad(in[k], 1);
}

static void test_gmm_composite(void) {
    uint64_t s = 21;
    td_tensor *in[5], *zbase;
    gmm_inputs(in, &zbase, 9, 4, 6, &s);
    const gmm_ctx cases[] = {{0, 0}, {1, 0}, {0, 1}, {0, 2}, {1, 1}, {1, 2}};
    const char *names[] = {"log_joint normal", "log_joint laplace", "elbo posterior", "elbo qc",
                           "elbo laplace posterior", "elbo laplace qc"};
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        char what[96];
        int nin = cases[c].elbo == 2 ? 5 : 4;
        td_tensor *a = apply_gmm(in, (void *)&cases[c]), *b = apply_gmm_composite(in, (void *)&cases[c]);
        snprintf(what, sizeof what, "gmm %s: values vs composite", names[c]);
        check_close(what, a, b, 1e-4f, 1e-5f);
        td_tensor *r = check_rand(b->ndim, b->shape, -1, 1, &s), *la = dot(a, r), *lb = dot(b, r);
        snprintf(what, sizeof what, "gmm %s: gradients vs composite", names[c]);
        compare_grads(what, la, lb, nin, in);
        td_tensor *tmp[] = {a, b, r, la, lb};
        for (size_t i = 0; i < sizeof tmp / sizeof *tmp; i++) td_release(tmp[i]);
    }
    /* with q = p(c|z) the bound is tight: elbo(qc = responsibilities) = log p(z) */
    td_tensor *resp = td_gmm_responsibilities(in[0], in[1], in[2], in[3]);
    td_tensor *tight = td_gmm_elbo(in[0], in[1], in[2], in[3], resp), *lpz = td_gmm_elbo(in[0], in[1], in[2], in[3], NULL);
    check_close("gmm_elbo with q = p(c|z) equals log p(z)", tight, lpz, 1e-4f, 1e-5f);
    td_tensor *loose = td_gmm_elbo(in[0], in[1], in[2], in[3], in[4]);
    bool below = true;
    for (int64_t b = 0; b < loose->numel; b++) below &= loose->data[b] <= lpz->data[b] + 1e-4f;
    CHECK(below, "gmm_elbo with another q is below log p(z)");
    td_tensor *tmp[] = {resp, tight, lpz, loose, zbase};
    for (size_t i = 0; i < sizeof tmp / sizeof *tmp; i++) td_release(tmp[i]);
    for (int k = 0; k < 5; k++) td_release(in[k]);
}

static void test_gmm_fixtures(void) {
    check_fixture *f = fixture_load("fused.txt");
    gmm_ctx normal = {0, 0}, laplace = {1, 0}, post = {0, 1}, given = {0, 2};
    check_fixture_case(f, "gmm_log_joint_normal", apply_gmm, &normal, 4, 1e-4f, 1e-5f);
    check_fixture_case(f, "gmm_log_joint_laplace", apply_gmm, &laplace, 4, 1e-4f, 1e-5f);
    check_fixture_case(f, "gmm_elbo_posterior", apply_gmm, &post, 4, 1e-4f, 1e-5f);
    check_fixture_case(f, "gmm_elbo_qc", apply_gmm, &given, 5, 1e-4f, 1e-5f);
    check_fixture_case(f, "gmm_responsibilities", apply_resp, NULL, 4, 1e-6f, 1e-5f);
    fixture_free(f);
}

static void test_gmm_fd(void) {
    uint64_t s = 31;
    td_tensor *in[5], *zbase;
    gmm_inputs(in, &zbase, 5, 3, 4, &s);
    const gmm_ctx cases[] = {{0, 0}, {1, 0}, {0, 1}, {0, 2}, {1, 2}};
    const char *names[] = {"gmm_log_joint normal", "gmm_log_joint laplace", "gmm_elbo posterior", "gmm_elbo qc",
                           "gmm_elbo laplace qc"};
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++)
        check_grad(names[c], apply_gmm, (void *)&cases[c], cases[c].elbo == 2 ? 5 : 4, in, 1e-3f, 5e-3f, 2e-2f, 0);
    for (int k = 0; k < 5; k++) td_release(in[k]);
    td_release(zbase);
}

/* z far from every component: log p(z|c) ~ -1e4, still finite; p(c|z) sums to 1. */
static void test_gmm_stable(void) {
    td_tensor *z = td_full(2, SHAPE(2, 3), 100.0f), *logits = td_zeros(1, SHAPE(2));
    td_tensor *means = td_from_buffer(2, SHAPE(2, 3), (float[]){0, 0, 0, 1, 1, 1}), *lv = td_zeros(2, SHAPE(2, 3));
    td_tensor *e = td_gmm_elbo(z, logits, means, lv, NULL), *r = td_gmm_responsibilities(z, logits, means, lv);
    bool ok = e && r && isfinite(e->data[0]) && e->data[0] < -1e4f;
    for (int i = 0; r && i < 2; i++) ok &= fabsf(r->data[i * 2] + r->data[i * 2 + 1] - 1.0f) < 1e-6f && r->data[i * 2 + 1] > 0.999f;
    CHECK(ok, "gmm: far from every component, log p(z) finite (%g) and p(c|z) a distribution", e ? e->data[0] : NAN);
    td_tensor *tmp[] = {z, logits, means, lv, e, r};
    for (size_t i = 0; i < sizeof tmp / sizeof *tmp; i++) td_release(tmp[i]);
}

static void test_gmm_errors(void) {
    td_tensor *z = td_zeros(2, SHAPE(128, 32)), *lg = td_zeros(1, SHAPE(40)), *m = td_zeros(2, SHAPE(40, 31));
    td_tensor *lv = td_zeros(2, SHAPE(40, 32)), *q = td_zeros(2, SHAPE(128, 41));
    td_tensor *o = td_gmm_elbo(z, lg, m, lv, NULL);
    CHECK(!o && error_has("gmm_log_joint", "[128,32]", "[40,31]") && strstr(td_last_error(), "[40]"),
          "gmm: shape message names every shape: %s", td_last_error());
    td_tensor *m2 = td_zeros(2, SHAPE(40, 32));
    o = td_gmm_elbo(z, lg, m2, lv, q);
    CHECK(!o && error_has("gmm_elbo", "[128,41]", "[128,40]"), "gmm_elbo: qc shape message: %s", td_last_error());
    o = td_gmm_log_joint(z, lg, m2, lv, 2);
    CHECK(!o && error_has("gmm_log_joint", "family 2", NULL), "gmm_log_joint: bad family: %s", td_last_error());
    td_tensor *tmp[] = {z, lg, m, lv, q, m2};
    for (size_t i = 0; i < sizeof tmp / sizeof *tmp; i++) td_release(tmp[i]);
}

int main(void) {
    test_experts_composite();
    test_experts_mask();
    test_experts_stable();
    test_experts_fixtures();
    test_experts_fd();
    test_experts_errors();
    test_gmm_composite();
    test_gmm_fixtures();
    test_gmm_fd();
    test_gmm_stable();
    test_gmm_errors();
    CHECK(td_live_tensors() == 0, "tensors leaked: %lld live", (long long)td_live_tensors());
    return check_summary();
}
