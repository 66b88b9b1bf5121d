/* gmm.c - the GMM ELBO, fused. Two recorded ops:
 *
 *   gmm_log_joint: z [B,D], logits [K], locs [K,D], scales [K,D]
 *                  -> J [B,K] = log pi_c + log p(z_b|c), pi = softmax(logits)
 *     Normal (family 0, scales = log-variances lv):
 *       log p(z|c) = -1/2 sum_d (log 2pi + lv_cd + (z_d - mu_cd)^2 exp(-lv_cd))
 *     Laplace (family 1, scales = log-scales s):
 *       log p(z|c) = -sum_d (log 2 + s_cd + |z_d - mu_cd| exp(-s_cd))
 *   gmm_elbo: J [B,K], qc [B,K] or NULL -> [B]
 *       sum_c q_c (J_c - log q_c)        for given q (0 log 0 = 0)
 *       log p(z) = logsumexp_c J_c       for q = p(c|z) (the bound is tight)
 *
 * The node holds at most four inputs, so the ELBO is split at J: the
 * [B,K,D] work happens once forward (gmm_log_joint) and once backward, and
 * only the small [B,K] joint sits between the two ops. */
#include "internal.h"
#include <float.h>
#include <math.h>
#include <string.h>

#define LOG_2PI 1.8378770664093453f
#define LOG_2 0.6931471805599453f

/* log softmax of logits [K] into lpi (double for the sum). */
static void log_softmax_k(const float *logits, int64_t K, float *lpi) {
    float mx = -INFINITY;
    for (int64_t k = 0; k < K; k++) mx = fmaxf(mx, logits[k]);
    double s = 0.0;
    for (int64_t k = 0; k < K; k++) s += exp((double)logits[k] - mx);
    float lse = mx + (float)log(s);
    for (int64_t k = 0; k < K; k++) lpi[k] = logits[k] - lse;
}

/* prec [K,D] = exp(-scales); cst [K] = lpi_k - sum_d c(scales_kd), the part
 * of J that does not depend on z. */
static void joint_consts(const float *logits, const float *scales, int family, int64_t K, int64_t D,
                         float *prec, float *cst) {
    log_softmax_k(logits, K, cst);
    for (int64_t k = 0; k < K; k++) {
        double acc = 0.0;
        for (int64_t d = 0; d < D; d++) {
            float s = scales[k * D + d];
            prec[k * D + d] = expf(-s);
            acc += family ? (double)s + LOG_2 : 0.5 * ((double)s + LOG_2PI);
        }
        cst[k] -= (float)acc;
    }
}

/* z [B,D], mu, prec [K,D], cst [K] -> J [B,K]. */
static void joint_forward(const float *z, const float *mu, const float *prec, const float *cst, int family,
                          int64_t B, int64_t K, int64_t D, float *J) {
    #pragma omp parallel for if (B * K * D > TD_PAR_MIN)
    for (int64_t b = 0; b < B; b++) {
        const float *zb = z + b * D;
        for (int64_t k = 0; k < K; k++) {
            const float *m = mu + k * D, *p = prec + k * D;
            float acc = 0.0f;
            if (family) {
                #pragma omp simd reduction(+ : acc)
                for (int64_t d = 0; d < D; d++) acc += fabsf(zb[d] - m[d]) * p[d];
                J[b * K + k] = cst[k] - acc;
            } else {
                #pragma omp simd reduction(+ : acc)
                for (int64_t d = 0; d < D; d++) {
                    float t = zb[d] - m[d];
                    acc += t * t * p[d];
                }
                J[b * K + k] = cst[k] - 0.5f * acc;
            }
        }
    }
}

static inline float signf(float x) { return (float)((x > 0.0f) - (x < 0.0f)); }

/* gz [B,D] = sum_k G[b,k] dJ/dz:  Normal -(z - mu) prec,  Laplace -sign(z - mu) prec. */
static void joint_backward_z(const float *z, const float *mu, const float *prec, const float *G, int family,
                             int64_t B, int64_t K, int64_t D, float *gz) {
    #pragma omp parallel for if (B * K * D > TD_PAR_MIN)
    for (int64_t b = 0; b < B; b++) {
        const float *zb = z + b * D;
        float *o = gz + b * D;
        memset(o, 0, (size_t)D * sizeof(float));
        for (int64_t k = 0; k < K; k++) {
            float g = G[b * K + k];
            const float *m = mu + k * D, *p = prec + k * D;
            if (g == 0.0f) continue;
            if (family)
                for (int64_t d = 0; d < D; d++) o[d] -= g * signf(zb[d] - m[d]) * p[d];
            else
                for (int64_t d = 0; d < D; d++) o[d] -= g * (zb[d] - m[d]) * p[d];
        }
    }
}

/* gmu, gs [K,D] from G [B,K], with t = z - mu and gsum_k = sum_b G[b,k]:
 *   Normal:  gmu = prec sum_b G t,        gs = 1/2 prec sum_b G t^2 - gsum/2
 *   Laplace: gmu = prec sum_b G sign(t),  gs = prec sum_b G |t| - gsum */
static void joint_backward_params(const float *z, const float *mu, const float *prec, const float *G, int family,
                                  int64_t B, int64_t K, int64_t D, float *gmu, float *gs) {
    #pragma omp parallel for if (B * K * D > TD_PAR_MIN)
    for (int64_t k = 0; k < K; k++) {
        float *a1 = gmu + k * D, *a2 = gs + k * D;
        const float *m = mu + k * D, *p = prec + k * D;
        memset(a1, 0, (size_t)D * sizeof(float));
        memset(a2, 0, (size_t)D * sizeof(float));
        double gsum = 0.0;
        for (int64_t b = 0; b < B; b++) {
            float g = G[b * K + k];
            const float *zb = z + b * D;
            gsum += g;
            if (g == 0.0f) continue;
            if (family) {
                for (int64_t d = 0; d < D; d++) {
                    float t = zb[d] - m[d];
                    a1[d] += g * signf(t);
                    a2[d] += g * fabsf(t);
                }
            } else {
                for (int64_t d = 0; d < D; d++) {
                    float t = zb[d] - m[d];
                    a1[d] += g * t;
                    a2[d] += g * t * t;
                }
            }
        }
        float half = family ? 1.0f : 0.5f;
        for (int64_t d = 0; d < D; d++) {
            a1[d] *= p[d];
            a2[d] = half * (p[d] * a2[d] - (float)gsum);
        }
    }
}

/* glogits [K] = sum_b G[b,k] - pi_k sum_{b,c} G[b,c]. */
static void joint_backward_logits(const float *logits, const float *G, int64_t B, int64_t K, float *gl) {
    log_softmax_k(logits, K, gl);
    double total = 0.0;
    for (int64_t i = 0; i < B * K; i++) total += G[i];
    for (int64_t k = 0; k < K; k++) {
        double col = 0.0;
        for (int64_t b = 0; b < B; b++) col += G[b * K + k];
        gl[k] = (float)(col - exp((double)gl[k]) * total);
    }
}

static int check_joint_args(td_tensor *z, td_tensor *logits, td_tensor *locs, td_tensor *scales, int family) {
    char a[TD_SHAPE_BUF], b[TD_SHAPE_BUF], c[TD_SHAPE_BUF], d[TD_SHAPE_BUF];
    if (!z || !logits || !locs || !scales) return td_failc("gmm_log_joint: NULL tensor");
    if (family != 0 && family != 1)
        return td_failc("gmm_log_joint: family %d is neither 0 (Normal) nor 1 (Laplace)", family);
    if (z->ndim != 2 || logits->ndim != 1 || locs->ndim != 2 || !td_same_shape(locs, scales) ||
        locs->shape[0] != logits->shape[0] || locs->shape[1] != z->shape[1])
        return td_failc("gmm_log_joint: z %s, logits %s, locs %s, scales %s: expected z [B,D], logits [K], "
                        "locs and scales [K,D]", td_shape_str(z, a), td_shape_str(logits, b),
                        td_shape_str(locs, c), td_shape_str(scales, d));
    if (logits->shape[0] == 0) return td_failc("gmm_log_joint: no components (logits [0])");
    return 0;
}

td_tensor *td_gmm_log_joint(td_tensor *z, td_tensor *logits, td_tensor *locs, td_tensor *scales, int family) {
    if (check_joint_args(z, logits, locs, scales, family)) return NULL;
    int64_t B = z->shape[0], K = logits->shape[0], D = z->shape[1];
    td_tensor *ins[4] = {td_contiguous(z), td_contiguous(logits), td_contiguous(locs), td_contiguous(scales)};
    td_tensor *prec = td_new(2, locs->shape), *cst = td_new(1, logits->shape), *out = NULL;
    if (!ins[0] || !ins[1] || !ins[2] || !ins[3] || !prec || !cst) goto done;
    out = td_new(2, (int64_t[]){B, K});
    if (!out) goto done;
    joint_consts(ins[1]->data, ins[3]->data, family, K, D, prec->data, cst->data);
    joint_forward(ins[0]->data, ins[2]->data, prec->data, cst->data, family, B, K, D, out->data);
    td_node *node = td_record(TD_OP_GMM_LOG_JOINT, out, 4, ins);
    if (node) node->ip[0] = family;
done:
    for (int k = 0; k < 4; k++) td_release(ins[k]);
    td_release(prec);
    td_release(cst);
    return out;
}

static bool wants(td_node *n, int k) { return n->in[k] && n->in[k]->requires_grad; }

static int accumulate_new(td_node *n, int k, td_tensor *g) {
    int rc = g ? td_accumulate(n, k, g) : -1;
    td_release(g);
    return rc;
}

int td_bw_gmm_log_joint(td_node *n, td_tensor *gout) {
    td_tensor *z = n->in[0], *logits = n->in[1], *locs = n->in[2], *scales = n->in[3];
    int64_t B = z->shape[0], K = logits->shape[0], D = z->shape[1];
    int family = (int)n->ip[0];
    td_tensor *G = td_contiguous(gout), *prec = td_new(2, locs->shape), *cst = td_new(1, logits->shape);
    int rc = -1;
    if (!G || !prec || !cst) goto done;
    joint_consts(logits->data, scales->data, family, K, D, prec->data, cst->data);
    rc = 0;
    if (wants(n, 0)) {
        td_tensor *gz = td_new(2, z->shape);
        if (gz) joint_backward_z(z->data, locs->data, prec->data, G->data, family, B, K, D, gz->data);
        rc = accumulate_new(n, 0, gz);
    }
    if (!rc && wants(n, 1)) {
        td_tensor *gl = td_new(1, logits->shape);
        if (gl) joint_backward_logits(logits->data, G->data, B, K, gl->data);
        rc = accumulate_new(n, 1, gl);
    }
    if (!rc && (wants(n, 2) || wants(n, 3))) {
        td_tensor *gmu = td_new(2, locs->shape), *gs = td_new(2, locs->shape);
        rc = -1;
        if (gmu && gs) {
            joint_backward_params(z->data, locs->data, prec->data, G->data, family, B, K, D, gmu->data, gs->data);
            rc = td_accumulate(n, 2, gmu);
            if (!rc) rc = td_accumulate(n, 3, gs);
        }
        td_release(gmu);
        td_release(gs);
    }
done:
    td_release(G);
    td_release(prec);
    td_release(cst);
    return rc;
}

/* ---- the ELBO from the joint ---- */

/* J [B,K] -> out [B] = logsumexp_c J. */
static void lse_rows(const float *J, int64_t B, int64_t K, float *out) {
    #pragma omp parallel for if (B * K > TD_PAR_MIN)
    for (int64_t b = 0; b < B; b++) {
        const float *r = J + b * K;
        float mx = -INFINITY;
        for (int64_t k = 0; k < K; k++) mx = fmaxf(mx, r[k]);
        if (mx == -INFINITY) {
            out[b] = -INFINITY;
            continue;
        }
        double s = 0.0;
        for (int64_t k = 0; k < K; k++) s += exp((double)(r[k] - mx));
        out[b] = mx + (float)log(s);
    }
}

/* log q with log 0 taken as log FLT_MIN: keeps d/dq finite where q = 0. */
static inline float safe_logf(float q) { return logf(q > FLT_MIN ? q : FLT_MIN); }

/* J, q [B,K] -> out [B] = sum_c q (J - log q), 0 log 0 = 0. */
static void elbo_given_q(const float *J, const float *q, int64_t B, int64_t K, float *out) {
    #pragma omp parallel for if (B * K > TD_PAR_MIN)
    for (int64_t b = 0; b < B; b++) {
        double s = 0.0;
        for (int64_t k = 0; k < K; k++) {
            float qk = q[b * K + k];
            if (qk > 0.0f) s += (double)qk * ((double)J[b * K + k] - log((double)qk));
        }
        out[b] = (float)s;
    }
}

static int check_elbo_args(td_tensor *J, td_tensor *qc) {
    char a[TD_SHAPE_BUF], b[TD_SHAPE_BUF];
    if (!J) return td_failc("gmm_elbo: NULL joint");
    if (J->ndim != 2) return td_failc("gmm_elbo: joint %s must be [B,K]", td_shape_str(J, a));
    if (qc && !td_same_shape(J, qc))
        return td_failc("gmm_elbo: qc %s must match the joint %s [B,K]", td_shape_str(qc, b), td_shape_str(J, a));
    return 0;
}

static int check_probs(const td_tensor *q) {
    for (int64_t i = 0; i < q->numel; i++)
        if (!(q->data[i] >= 0.0f) || isinf(q->data[i]))
            return td_failc("gmm_elbo: qc[%lld,%lld] is %g; probabilities must be finite and >= 0",
                            (long long)(i / q->shape[1]), (long long)(i % q->shape[1]), q->data[i]);
    return 0;
}

td_tensor *td_gmm_elbo_joint(td_tensor *joint, td_tensor *qc) {
    if (check_elbo_args(joint, qc)) return NULL;
    int64_t B = joint->shape[0], K = joint->shape[1];
    td_tensor *ins[2] = {td_contiguous(joint), qc ? td_contiguous(qc) : NULL}, *out = NULL;
    if (!ins[0] || (qc && (!ins[1] || check_probs(ins[1])))) goto done;
    out = td_new(1, &B);
    if (!out) goto done;
    if (qc) elbo_given_q(ins[0]->data, ins[1]->data, B, K, out->data);
    else lse_rows(ins[0]->data, B, K, out->data);
    td_node *node = td_record(TD_OP_GMM_ELBO, out, 2, ins);
    if (node && !qc) {
        td_tensor *alias = td_alias(out);
        td_save(node, 0, alias);
        td_release(alias);
    }
done:
    td_release(ins[0]);
    td_release(ins[1]);
    return out;
}

/* gJ = g q (or g p(c|z) = g exp(J - lse)); gq = g (J - log q - 1). */
int td_bw_gmm_elbo(td_node *n, td_tensor *gout) {
    td_tensor *J = n->in[0], *q = n->in[1];
    int64_t B = J->shape[0], K = J->shape[1];
    td_tensor *g = td_contiguous(gout);
    if (!g) return -1;
    int rc = 0;
    if (wants(n, 0)) {
        td_tensor *gJ = td_new(2, J->shape);
        if (gJ) {
            const float *lse = q ? NULL : n->saved[0]->data;
            for (int64_t i = 0; i < B * K; i++) {
                float w = q ? q->data[i] : expf(J->data[i] - lse[i / K]);
                gJ->data[i] = g->data[i / K] * w;
            }
        }
        rc = accumulate_new(n, 0, gJ);
    }
    if (!rc && q && wants(n, 1)) {
        td_tensor *gq = td_new(2, q->shape);
        if (gq)
            for (int64_t i = 0; i < B * K; i++)
                gq->data[i] = g->data[i / K] * (J->data[i] - safe_logf(q->data[i]) - 1.0f);
        rc = accumulate_new(n, 1, gq);
    }
    td_release(g);
    return rc;
}

td_tensor *td_gmm_elbo(td_tensor *z, td_tensor *logits, td_tensor *means, td_tensor *logvars, td_tensor *qc) {
    td_tensor *J = td_gmm_log_joint(z, logits, means, logvars, 0);
    if (!J) return NULL;
    td_tensor *out = td_gmm_elbo_joint(J, qc);
    td_release(J);
    return out;
}

td_tensor *td_gmm_responsibilities(td_tensor *z, td_tensor *logits, td_tensor *means, td_tensor *logvars) {
    int prev = td_set_grad_enabled(0);
    td_tensor *J = td_gmm_log_joint(z, logits, means, logvars, 0);
    td_set_grad_enabled(prev);
    if (!J) return NULL;
    int64_t B = J->shape[0], K = J->shape[1];
    float *lse = td_alloc((size_t)(B > 0 ? B : 1) * sizeof(float));
    if (!lse) {
        td_release(J);
        return td_fail("gmm_responsibilities: out of memory");
    }
    lse_rows(J->data, B, K, lse);
    for (int64_t i = 0; i < B * K; i++) J->data[i] = expf(J->data[i] - lse[i / K]);
    td_free(lse, (size_t)(B > 0 ? B : 1) * sizeof(float));
    return J;
}
