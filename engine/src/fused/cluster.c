/* cluster.c - clustering kernels, no gradient: k-means (assignment with the
 * ||x||^2 - 2 x.c + ||c||^2 GEMM trick, update, k-means++ seeding) and EM for
 * a mixture of diagonal Gaussians (E step on gmm_log_joint, M step). */
#include "internal.h"
#include <cblas.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#define ASSIGN_ROWS 1024 /* rows of x per GEMM block: the block is rows x K floats */

static int check_points(const char *op, const td_tensor *x) {
    char a[TD_SHAPE_BUF];
    if (!x) return td_failc("%s: NULL tensor", op);
    if (x->ndim != 2) return td_failc("%s: x %s must be [N,D]", op, td_shape_str(x, a));
    return 0;
}

/* Prefixes the current error message with the op's name; returns NULL. */
static void *fail_in(const char *op) {
    char msg[1024];
    snprintf(msg, sizeof msg, "%s", td_last_error());
    return td_fail("%s: %s", op, msg);
}

/* A contiguous copy of t taken with grad mode off (nothing recorded). */
static td_tensor *plain(td_tensor *t) {
    int prev = td_set_grad_enabled(0);
    td_tensor *c = td_contiguous(t);
    td_set_grad_enabled(prev);
    return c;
}

static double sqdist(const float *a, const float *b, int64_t D) {
    double s = 0.0;
    for (int64_t d = 0; d < D; d++) {
        double t = (double)a[d] - b[d];
        s += t * t;
    }
    return s;
}

/* x [N,D], c [K,D], cn [K] = ||c_k||^2, s [rows,K] scratch -> idx [N] (as
 * floats); returns the sum of exact squared distances to the chosen centers.
 * The GEMM gives x.c; the argmin of cn - 2 x.c is the nearest center
 * (lowest index on ties). */
static double assign_block(const float *x, const float *c, const float *cn, int64_t n0, int64_t rows,
                           int64_t K, int64_t D, float *s, float *idx) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)rows, (int)K, (int)D, 1.0f, x + n0 * D,
                (int)D, c, (int)D, 0.0f, s, (int)K);
    double inertia = 0.0;
    #pragma omp parallel for reduction(+ : inertia) if (rows * K > TD_PAR_MIN)
    for (int64_t i = 0; i < rows; i++) {
        int64_t best = 0;
        float bv = INFINITY;
        for (int64_t k = 0; k < K; k++) {
            float v = cn[k] - 2.0f * s[i * K + k];
            if (v < bv) {
                bv = v;
                best = k;
            }
        }
        idx[n0 + i] = (float)best;
        inertia += sqdist(x + (n0 + i) * D, c + best * D, D);
    }
    return inertia;
}

td_tensor *td_kmeans_assign(td_tensor *x, td_tensor *centers, double *inertia) {
    char a[TD_SHAPE_BUF], b[TD_SHAPE_BUF];
    if (check_points("kmeans_assign", x)) return NULL;
    if (!centers || centers->ndim != 2 || centers->shape[1] != x->shape[1] || centers->shape[0] < 1)
        return td_fail("kmeans_assign: x %s and centers %s must be [N,D] and [K,D], K >= 1", td_shape_str(x, a),
                       centers ? td_shape_str(centers, b) : "NULL");
    int64_t N = x->shape[0], K = centers->shape[0], D = x->shape[1];
    td_tensor *xc = plain(x), *cc = plain(centers), *out = td_new(1, &N);
    int64_t rows = N < ASSIGN_ROWS ? N : ASSIGN_ROWS;
    td_tensor *s = td_new(2, (int64_t[]){rows > 0 ? rows : 1, K}), *cn = td_new(1, &K);
    double total = 0.0;
    if (!xc || !cc || !out || !s || !cn) {
        td_release(out);
        out = NULL;
        goto done;
    }
    for (int64_t k = 0; k < K; k++) {
        double t = 0.0;
        for (int64_t d = 0; d < D; d++) t += (double)cc->data[k * D + d] * cc->data[k * D + d];
        cn->data[k] = (float)t;
    }
    for (int64_t n0 = 0; n0 < N; n0 += ASSIGN_ROWS) {
        int64_t r = N - n0 < ASSIGN_ROWS ? N - n0 : ASSIGN_ROWS;
        total += assign_block(xc->data, cc->data, cn->data, n0, r, K, D, s->data, out->data);
    }
    if (inertia) *inertia = total;
done:
    td_release(xc);
    td_release(cc);
    td_release(s);
    td_release(cn);
    return out;
}

/* Index tensor [N] of whole numbers in [0, k): 0, or -1 with the error. */
static int check_index(const char *op, const td_tensor *idx, int64_t k) {
    for (int64_t i = 0; i < idx->numel; i++) {
        float v = idx->data[i];
        if (!(v >= 0.0f && v < (float)k) || v != floorf(v))
            return td_failc("%s: assign[%lld] is %g, not a cluster index in [0, %lld)", op, (long long)i, v,
                            (long long)k);
    }
    return 0;
}

/* x [N,D], idx [N] -> out [K,D] means (NaN rows where no point is assigned).
 * Threads own column blocks, so no two write the same sum. */
static void kmeans_means(const float *x, const float *idx, int64_t N, int64_t K, int64_t D, double *sum,
                         int64_t *count, float *out) {
    memset(sum, 0, (size_t)(K * D) * sizeof(double));
    memset(count, 0, (size_t)K * sizeof(int64_t));
    for (int64_t n = 0; n < N; n++) count[(int64_t)idx[n]]++;
    #pragma omp parallel for if (N * D > TD_PAR_MIN)
    for (int64_t d0 = 0; d0 < D; d0 += 64) {
        int64_t d1 = d0 + 64 < D ? d0 + 64 : D;
        for (int64_t n = 0; n < N; n++) {
            double *s = sum + (int64_t)idx[n] * D;
            for (int64_t d = d0; d < d1; d++) s[d] += x[n * D + d];
        }
    }
    for (int64_t k = 0; k < K; k++)
        for (int64_t d = 0; d < D; d++) out[k * D + d] = count[k] ? (float)(sum[k * D + d] / count[k]) : NAN;
}

td_tensor *td_kmeans_update(td_tensor *x, td_tensor *assign, int64_t k) {
    char a[TD_SHAPE_BUF], b[TD_SHAPE_BUF];
    if (check_points("kmeans_update", x)) return NULL;
    if (!assign || assign->ndim != 1 || assign->shape[0] != x->shape[0] || k < 1)
        return td_fail("kmeans_update: x %s, assign %s, k %lld: expected [N,D], [N] and k >= 1",
                       td_shape_str(x, a), assign ? td_shape_str(assign, b) : "NULL", (long long)k);
    int64_t N = x->shape[0], D = x->shape[1];
    td_tensor *xc = plain(x), *ic = plain(assign), *out = NULL;
    double *sum = td_alloc((size_t)(k * D + 1) * sizeof(double));
    int64_t *count = td_alloc((size_t)k * sizeof(int64_t));
    if (!xc || !ic || !sum || !count || check_index("kmeans_update", ic, k)) goto done;
    out = td_new(2, (int64_t[]){k, D});
    if (out) kmeans_means(xc->data, ic->data, N, k, D, sum, count, out->data);
done:
    if (sum) td_free(sum, (size_t)(k * D + 1) * sizeof(double));
    if (count) td_free(count, (size_t)k * sizeof(int64_t));
    td_release(xc);
    td_release(ic);
    return out;
}

/* d2[n] = min(d2[n], ||x_n - c||^2). */
static void update_d2(const float *x, const float *c, int64_t N, int64_t D, double *d2) {
    #pragma omp parallel for if (N * D > TD_PAR_MIN)
    for (int64_t n = 0; n < N; n++) {
        double v = sqdist(x + n * D, c, D);
        if (v < d2[n]) d2[n] = v;
    }
}

/* The index where the running sum of d2 passes u * sum(d2); uniform over
 * all points when every d2 is 0 (fewer distinct points than centers). */
static int64_t sample_d2(const double *d2, int64_t N, float u) {
    double total = 0.0;
    for (int64_t n = 0; n < N; n++) total += d2[n];
    if (!(total > 0.0)) {
        int64_t i = (int64_t)(u * (float)N);
        return i < N ? i : N - 1;
    }
    double target = (double)u * total, run = 0.0;
    int64_t last = 0;
    for (int64_t n = 0; n < N; n++) {
        if (d2[n] <= 0.0) continue;
        run += d2[n];
        last = n;
        if (run > target) return n;
    }
    return last;
}

/* sum_n min(d2[n], ||x_n - c||^2): the potential if c became a center. */
static double potential_with(const float *x, const float *c, int64_t N, int64_t D, const double *d2) {
    double s = 0.0;
    #pragma omp parallel for reduction(+ : s) if (N * D > TD_PAR_MIN)
    for (int64_t n = 0; n < N; n++) {
        double v = sqdist(x + n * D, c, D);
        s += v < d2[n] ? v : d2[n];
    }
    return s;
}

/* Greedy k-means++ (Arthur & Vassilvitskii 2007, in scikit-learn's greedy
 * form): the first center is a uniform pick; each next one is the best of
 * T = 2 + floor(ln k) candidates drawn with probability d2 / sum(d2), the
 * one that lowers sum(d2) most. The uniforms come from one td_rand call. */
td_tensor *td_kmeans_pp_init(td_tensor *x, int64_t k) {
    char a[TD_SHAPE_BUF];
    if (check_points("kmeans_pp_init", x)) return NULL;
    int64_t N = x->shape[0], D = x->shape[1];
    if (k < 1 || k > N)
        return td_fail("kmeans_pp_init: k = %lld for x %s; need 1 <= k <= N", (long long)k, td_shape_str(x, a));
    int64_t T = 2 + (int64_t)log((double)k), nu = 1 + (k - 1) * T;
    td_tensor *u = td_rand(1, &nu);
    if (!u) return fail_in("kmeans_pp_init");
    td_tensor *xc = plain(x), *out = td_new(2, (int64_t[]){k, D});
    double *d2 = td_alloc((size_t)N * sizeof(double));
    if (!xc || !out || !d2) {
        td_release(out);
        out = NULL;
        goto done;
    }
    for (int64_t n = 0; n < N; n++) d2[n] = INFINITY;
    int64_t pick = (int64_t)(u->data[0] * (float)N);
    if (pick >= N) pick = N - 1;
    for (int64_t i = 0; i < k; i++) {
        if (i > 0) {
            double best = INFINITY;
            for (int64_t t = 0; t < T; t++) {
                int64_t cand = sample_d2(d2, N, u->data[1 + (i - 1) * T + t]);
                double pot = potential_with(xc->data, xc->data + cand * D, N, D, d2);
                if (pot < best) {
                    best = pot;
                    pick = cand;
                }
            }
        }
        memcpy(out->data + i * D, xc->data + pick * D, (size_t)D * sizeof(float));
        update_d2(xc->data, out->data + i * D, N, D, d2);
    }
done:
    if (d2) td_free(d2, (size_t)N * sizeof(double));
    td_release(u);
    td_release(xc);
    return out;
}

/* ---- EM for a mixture of diagonal Gaussians ---- */

td_tensor *td_gmm_estep(td_tensor *x, td_tensor *logits, td_tensor *means, td_tensor *logvars, double *loglik) {
    if (check_points("gmm_estep", x)) return NULL;
    int prev = td_set_grad_enabled(0);
    td_tensor *J = td_gmm_log_joint(x, logits, means, logvars, 0);
    td_set_grad_enabled(prev);
    if (!J) return fail_in("gmm_estep");
    int64_t N = J->shape[0], K = J->shape[1];
    double total = 0.0;
    #pragma omp parallel for reduction(+ : total) if (N * K > TD_PAR_MIN)
    for (int64_t n = 0; n < N; n++) {
        float *r = J->data + n * K, mx = -INFINITY;
        for (int64_t k = 0; k < K; k++) mx = fmaxf(mx, r[k]);
        double s = 0.0;
        for (int64_t k = 0; k < K; k++) s += exp((double)(r[k] - mx));
        float lse = mx + (float)log(s);
        for (int64_t k = 0; k < K; k++) r[k] -= lse;
        total += lse;
    }
    if (loglik) *loglik = total;
    return J;
}

/* x [N,D], r [N,K] -> nk [K] (+ 10 eps, as scikit-learn), mu, var [K,D]
 * (var = sum_n r (x - mu)^2 / nk + reg, two passes). Threads own components. */
static void mstep_kernel(const float *x, const float *r, int64_t N, int64_t K, int64_t D, float reg,
                         double *nk, double *mu, double *var) {
    #pragma omp parallel for if (N * K * D > TD_PAR_MIN)
    for (int64_t k = 0; k < K; k++) {
        double s = 10.0 * DBL_EPSILON, *m = mu + k * D, *v = var + k * D;
        memset(m, 0, (size_t)D * sizeof(double));
        memset(v, 0, (size_t)D * sizeof(double));
        for (int64_t n = 0; n < N; n++) {
            double w = r[n * K + k];
            if (w == 0.0) continue;
            s += w;
            for (int64_t d = 0; d < D; d++) m[d] += w * x[n * D + d];
        }
        for (int64_t d = 0; d < D; d++) m[d] /= s;
        for (int64_t n = 0; n < N; n++) {
            double w = r[n * K + k];
            if (w == 0.0) continue;
            for (int64_t d = 0; d < D; d++) {
                double t = x[n * D + d] - m[d];
                v[d] += w * t * t;
            }
        }
        for (int64_t d = 0; d < D; d++) v[d] = v[d] / s + reg;
        nk[k] = s;
    }
}

static int check_mstep_args(td_tensor *x, td_tensor *resp, float reg, td_tensor *logits, td_tensor *means,
                            td_tensor *logvars) {
    char a[TD_SHAPE_BUF], b[TD_SHAPE_BUF], c[TD_SHAPE_BUF], d[TD_SHAPE_BUF], e[TD_SHAPE_BUF];
    if (check_points("gmm_mstep", x)) return -1;
    if (!resp || !logits || !means || !logvars) return td_failc("gmm_mstep: NULL tensor");
    int64_t N = x->shape[0], D = x->shape[1], K = logits->ndim == 1 ? logits->shape[0] : -1;
    if (resp->ndim != 2 || resp->shape[0] != N || resp->shape[1] != K || means->ndim != 2 ||
        means->shape[0] != K || means->shape[1] != D || !td_same_shape(means, logvars))
        return td_failc("gmm_mstep: x %s, resp %s, logits %s, means %s, logvars %s: expected [N,D], [N,K], "
                        "[K], [K,D], [K,D]", td_shape_str(x, a), td_shape_str(resp, b), td_shape_str(logits, c),
                        td_shape_str(means, d), td_shape_str(logvars, e));
    if (!(reg >= 0.0f)) return td_failc("gmm_mstep: reg %g must be >= 0", reg);
    if (logits->node || means->node || logvars->node)
        return td_failc("gmm_mstep: writes logits, means and logvars in place; pass tensors that no op produced");
    return 0;
}

int td_gmm_mstep(td_tensor *x, td_tensor *resp, float reg, td_tensor *logits, td_tensor *means,
                 td_tensor *logvars) {
    if (check_mstep_args(x, resp, reg, logits, means, logvars)) return -1;
    int64_t N = x->shape[0], D = x->shape[1], K = logits->shape[0];
    td_tensor *xc = plain(x), *rc = plain(resp);
    td_tensor *lo = td_new(1, &K), *mo = td_new(2, means->shape), *vo = td_new(2, means->shape);
    size_t bytes = (size_t)(K + 2 * K * D) * sizeof(double);
    double *buf = td_alloc(bytes);
    int status = -1;
    if (!xc || !rc || !lo || !mo || !vo || !buf) goto done;
    for (int64_t i = 0; i < rc->numel; i++)
        if (!(rc->data[i] >= 0.0f) || isinf(rc->data[i])) {
            td_failc("gmm_mstep: resp[%lld,%lld] is %g; responsibilities must be finite and >= 0",
                     (long long)(i / K), (long long)(i % K), rc->data[i]);
            goto done;
        }
    double *nk = buf, *mu = buf + K, *var = buf + K + K * D;
    mstep_kernel(xc->data, rc->data, N, K, D, reg, nk, mu, var);
    double total = 0.0;
    for (int64_t k = 0; k < K; k++) total += nk[k];
    for (int64_t k = 0; k < K; k++) lo->data[k] = (float)log(nk[k] / total);
    for (int64_t i = 0; i < K * D; i++) {
        mo->data[i] = (float)mu[i];
        vo->data[i] = (float)log(var[i]);
    }
    status = td_copy_(logits, lo) || td_copy_(means, mo) || td_copy_(logvars, vo) ? -1 : 0;
done:
    if (buf) td_free(buf, bytes);
    td_release(xc);
    td_release(rc);
    td_release(lo);
    td_release(mo);
    td_release(vo);
    return status;
}
