/* fused.c - fused kernels against the same math in primitive engine ops,
 * forward + backward. The fused side prints tide_ms=<median>, the composite
 * side ref_ms=<median>, so bench/run's ratio is composite / fused.
 *
 *   bench_fused poe fused|composite E B D        td_poe with a mask vs exp, mul, sum, div, log, stack
 *   bench_fused elbo fused|composite B K D       td_gmm_elbo (q = p(c|z)) vs normal_log_prob, sum,
 *                                                 log_softmax, logsumexp
 *   bench_fused elbo_qc fused|composite B K D    td_gmm_elbo with a given q [B,K] */
#include "bench.h"
#include "tide.h"
#include <math.h>
#include <string.h>

#define SH(...) ((const int64_t[]){__VA_ARGS__})

static td_tensor *rnd(int ndim, const int64_t *shape, int grad, unsigned seed, float scale) {
    td_tensor *t = td_empty(ndim, shape);
    bench_fill(t->data, (long)t->numel, seed);
    for (int64_t i = 0; i < t->numel; i++) t->data[i] *= scale;
    if (grad) td_set_requires_grad(t, 1);
    return t;
}

static void die(const char *what) {
    fprintf(stderr, "bench_fused: %s: %s\n", what, td_last_error());
    exit(1);
}

static void release_all(td_tensor **t, size_t n) {
    for (size_t i = 0; i < n; i++) td_release(t[i]);
}
#define RELEASE(...) release_all((td_tensor *[]){__VA_ARGS__}, sizeof((td_tensor *[]){__VA_ARGS__}) / sizeof(td_tensor *))

typedef struct {
    td_tensor *a, *b, *c, *d, *e, *g;
    int composite;
} ctx_t;

/* ---- product of experts: mu, logvar [E,B,D], mask [E,B] ---- */

static td_tensor *poe_composite(td_tensor *mu, td_tensor *lv, td_tensor *mask) {
    td_tensor *m3 = td_reshape(mask, 3, SH(mask->shape[0], mask->shape[1], 1));
    td_tensor *nl = td_neg(lv), *p = td_exp(nl), *wp = td_mul(p, m3), *T0 = td_sum(wp, 1u, 0);
    td_tensor *T = td_add_scalar(T0, 1.0f), *mp = td_mul(mu, wp), *num = td_sum(mp, 1u, 0);
    td_tensor *mean = td_div(num, T), *lT = td_log(T), *lvo = td_neg(lT);
    td_tensor *parts[2] = {mean, lvo}, *out = td_stack(2, parts, 0);
    RELEASE(m3, nl, p, wp, T0, T, mp, num, mean, lT, lvo);
    return out;
}

static void run_poe(void *p) {
    ctx_t *c = p;
    td_tensor *out = c->composite ? poe_composite(c->a, c->b, c->c) : td_poe(c->a, c->b, c->c);
    if (!out || td_backward(out, c->g)) die("poe");
    td_release(out);
}

/* ---- GMM ELBO: z [B,D], logits [K], means, logvars [K,D], qc [B,K] or NULL ---- */

static td_tensor *elbo_composite(td_tensor *z, td_tensor *logits, td_tensor *means, td_tensor *logvars, td_tensor *qc) {
    int64_t B = z->shape[0], K = means->shape[0], D = z->shape[1];
    td_tensor *z3 = td_reshape(z, 3, SH(B, 1, D)), *m3 = td_reshape(means, 3, SH(1, K, D));
    td_tensor *h = td_mul_scalar(logvars, 0.5f), *sd = td_exp(h), *s3 = td_reshape(sd, 3, SH(1, K, D));
    td_tensor *lp3 = td_normal_log_prob(z3, m3, s3), *lp = td_sum(lp3, 4u, 0), *lpi = td_log_softmax(logits, 0);
    td_tensor *J = td_add(lp, lpi), *out;
    if (qc) {
        td_tensor *lq = td_log(qc), *d = td_sub(J, lq), *t = td_mul(qc, d);
        out = td_sum(t, 2u, 0);
        RELEASE(lq, d, t);
    } else {
        out = td_logsumexp(J, 2u, 0);
    }
    RELEASE(z3, m3, h, sd, s3, lp3, lp, lpi, J);
    return out;
}

static void run_elbo(void *p) {
    ctx_t *c = p;
    td_tensor *out = c->composite ? elbo_composite(c->a, c->b, c->c, c->d, c->e) : td_gmm_elbo(c->a, c->b, c->c, c->d, c->e);
    if (!out || td_backward(out, c->g)) die("gmm_elbo");
    td_release(out);
}

static int usage(void) {
    fprintf(stderr, "usage: bench_fused poe fused|composite E B D | elbo[_qc] fused|composite B K D\n");
    return 2;
}

int main(int argc, char **argv) {
    if (argc != 6) return usage();
    int64_t n1 = atoll(argv[3]), n2 = atoll(argv[4]), n3 = atoll(argv[5]);
    ctx_t c = {.composite = !strcmp(argv[2], "composite")};
    if (!c.composite && strcmp(argv[2], "fused")) return usage();
    double ms;
    if (!strcmp(argv[1], "poe")) {
        c.a = rnd(3, SH(n1, n2, n3), 1, 1, 1.0f);
        c.b = rnd(3, SH(n1, n2, n3), 1, 2, 1.0f);
        c.c = rnd(2, SH(n1, n2), 0, 3, 1.0f);
        for (int64_t i = 0; i < c.c->numel; i++) c.c->data[i] = c.c->data[i] > -0.5f; /* ~3/4 present */
        c.g = rnd(3, SH(2, n2, n3), 0, 4, 1.0f);
        ms = bench_median(run_poe, &c, BENCH_BUDGET_MS);
    } else if (!strcmp(argv[1], "elbo") || !strcmp(argv[1], "elbo_qc")) {
        c.a = rnd(2, SH(n1, n3), 1, 1, 2.0f);
        c.b = rnd(1, SH(n2), 1, 2, 1.0f);
        c.c = rnd(2, SH(n2, n3), 1, 3, 2.0f);
        c.d = rnd(2, SH(n2, n3), 1, 4, 0.5f);
        if (!strcmp(argv[1], "elbo_qc")) {
            c.e = rnd(2, SH(n1, n2), 0, 5, 1.0f);
            for (int64_t b = 0; b < n1; b++) {
                double s = 0;
                for (int64_t k = 0; k < n2; k++) s += c.e->data[b * n2 + k] = expf(2.0f * c.e->data[b * n2 + k]);
                for (int64_t k = 0; k < n2; k++) c.e->data[b * n2 + k] /= (float)s;
            }
            td_set_requires_grad(c.e, 1);
        }
        c.g = rnd(1, SH(n1), 0, 6, 1.0f);
        ms = bench_median(run_elbo, &c, BENCH_BUDGET_MS);
    } else {
        return usage();
    }
    printf("%s=%.4f\n", c.composite ? "ref_ms" : "tide_ms", ms);
    RELEASE(c.a, c.b, c.c, c.d, c.e, c.g);
    return 0;
}
