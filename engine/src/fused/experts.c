/* experts.c - fusion of Gaussian experts over [E,B,D]: the product of
 * experts with the prior expert N(0,I) and a mask for missing modalities
 * (MVAE), the same without the prior, and weighted log-linear pooling with
 * gate weights (the gated-fusion VAE). One kernel pair serves all three:
 *
 *   P = prior + sum_e w_e exp(-lv_e)       (precision, prior 1 or 0)
 *   mean = sum_e w_e mu_e exp(-lv_e) / P,   logvar = -log P
 *
 * with w the mask (no gradient) or the gate weights (gradient). The output
 * is [2,B,D]: out[0] the mean, out[1] the log-variance.
 *
 * Mixture sampling (MMVAE, MoPoE) needs no kernel of its own: MoPoE's subset
 * per sample is td_poe with a per-sample mask [E,B]; taking one expert's
 * sample per row given component indices is td_gather on axis 0 (or a
 * one-hot mask and td_sum); MMVAE's mixture density is td_normal_log_prob on
 * broadcast [E,1,B,D] x [1,E,B,D] shapes and td_logsumexp over experts. Each
 * is one or two passes over tensors of [E,B,D] or less, which a fused kernel
 * would not beat by much. */
#include "internal.h"
#include <math.h>
#include <string.h>

#define POE_CHUNK 256 /* columns of D handled at once, on the stack */

/* exp for the simd loops (glibc's expf only vectorizes with -ffast-math):
 * x = k ln2 + r, Cephes' degree-6 polynomial for e^r. Within 1 ulp of exp
 * on [-87.3, 88.3]; 0 below -87.3 (no denormals), inf above 88.37, NaN
 * stays NaN. The compares keep GCC from vectorizing unless FP compares may
 * be assumed not to trap, hence the pragma (the engine never reads FP
 * exception flags). */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-trapping-math")
#endif
static inline float simd_expf(float x) {
    float xc = x < -87.33654f ? -87.33654f : x;
    xc = xc > 88.37626f ? 88.37626f : xc;
    float k = floorf(xc * 1.44269504088896341f + 0.5f);
    float r = xc - k * 0.693359375f + k * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    union { int32_t i; float f; } scale = {.i = ((int32_t)k + 127) << 23};
    float y = p * scale.f;
    y = x < -87.33654f ? 0.0f : y;
    return x > 88.37626f ? INFINITY : y;
}

/* Forward of one sample b over a chunk of n columns.
 * mu, lv: rows e of [E,B,D] start at mu + e*es; w [E] (stride ws); prior 0/1;
 * om, ol: n outputs (mean, logvar). Stable: exponents are shifted by the
 * largest -lv of the experts present (or 0 for the prior). */
static void poe_chunk(const float *mu, const float *lv, int64_t es, const float *w, int64_t ws,
                      int64_t E, int prior, int64_t n, float *om, float *ol) {
    float mx[POE_CHUNK], num[POE_CHUNK], den[POE_CHUNK];
    for (int64_t j = 0; j < n; j++) mx[j] = prior ? 0.0f : -INFINITY;
    for (int64_t e = 0; e < E; e++) {
        if (w[e * ws] == 0.0f) continue;
        const float *l = lv + e * es;
        #pragma omp simd
        for (int64_t j = 0; j < n; j++) mx[j] = mx[j] > -l[j] ? mx[j] : -l[j];
    }
    #pragma omp simd
    for (int64_t j = 0; j < n; j++) {
        num[j] = 0.0f;
        den[j] = prior ? simd_expf(-mx[j]) : 0.0f;
    }
    for (int64_t e = 0; e < E; e++) {
        float we = w[e * ws];
        if (we == 0.0f) continue;
        const float *m = mu + e * es, *l = lv + e * es;
        #pragma omp simd
        for (int64_t j = 0; j < n; j++) {
            float p = we * simd_expf(-l[j] - mx[j]);
            den[j] += p;
            num[j] += p * m[j];
        }
    }
    #pragma omp simd
    for (int64_t j = 0; j < n; j++) {
        om[j] = num[j] / den[j];
        ol[j] = -(mx[j] + logf(den[j]));
    }
}

/* mu, lv [E,B,D], w [E,B] -> out [2,B,D]. */
static void poe_forward(const float *mu, const float *lv, const float *w, int prior,
                        int64_t E, int64_t B, int64_t D, float *out) {
    #pragma omp parallel for if (E * B * D > TD_PAR_MIN)
    for (int64_t b = 0; b < B; b++) {
        for (int64_t d0 = 0; d0 < D; d0 += POE_CHUNK) {
            int64_t n = D - d0 < POE_CHUNK ? D - d0 : POE_CHUNK;
            int64_t off = b * D + d0;
            poe_chunk(mu + off, lv + off, B * D, w + b, B, E, prior, n, out + off, out + B * D + off);
        }
    }
}

/* Backward of one row (e, b) over n columns: m, l are mu_e, lv_e; y0, y1
 * the output's mean and logvar; g0, g1 their gradients. With
 * q = exp(-lv_e)/P = exp(L - lv_e) and r = w_e q:
 *   dmu_e = g0 r,  dlv_e = r (g1 - g0 (mu_e - mean)),
 *   dw_e = sum_d q (g0 (mu_e - mean) - g1)   (returned).
 * gm, gl may be NULL. */
static double poe_row_backward(const float *m, const float *l, float we, const float *y0, const float *y1,
                               const float *g0, const float *g1, int64_t n, float *gm, float *gl, bool want_w) {
    float q[POE_CHUNK];
    double acc = 0.0;
    for (int64_t d0 = 0; d0 < n; d0 += POE_CHUNK) {
        int64_t c = n - d0 < POE_CHUNK ? n - d0 : POE_CHUNK;
        #pragma omp simd
        for (int64_t j = 0; j < c; j++) q[j] = simd_expf(y1[d0 + j] - l[d0 + j]);
        if (gm) {
            #pragma omp simd
            for (int64_t j = 0; j < c; j++) gm[d0 + j] = we == 0.0f ? 0.0f : g0[d0 + j] * we * q[j];
        }
        if (gl) {
            #pragma omp simd
            for (int64_t j = 0; j < c; j++)
                gl[d0 + j] = we == 0.0f ? 0.0f : we * q[j] * (g1[d0 + j] - g0[d0 + j] * (m[d0 + j] - y0[d0 + j]));
        }
        if (want_w) {
            float s = 0.0f;
            #pragma omp simd reduction(+ : s)
            for (int64_t j = 0; j < c; j++) {
                float t = q[j] * (g0[d0 + j] * (m[d0 + j] - y0[d0 + j]) - g1[d0 + j]);
                s += isfinite(t) ? t : 0.0f;
            }
            acc += s;
        }
    }
    return acc;
}

/* mu, lv [E,B,D], w [E,B], the output y [2,B,D] and its gradient g [2,B,D]
 * -> gmu, glv [E,B,D], gw [E,B]; each may be NULL. */
static void poe_backward(const float *mu, const float *lv, const float *w, const float *y,
                         const float *g, int64_t E, int64_t B, int64_t D,
                         float *gmu, float *glv, float *gw) {
    #pragma omp parallel for collapse(2) if (E * B * D > TD_PAR_MIN)
    for (int64_t e = 0; e < E; e++) {
        for (int64_t b = 0; b < B; b++) {
            int64_t row = (e * B + b) * D, o = b * D;
            double acc = poe_row_backward(mu + row, lv + row, w[e * B + b], y + o, y + B * D + o, g + o,
                                          g + B * D + o, D, gmu ? gmu + row : NULL, glv ? glv + row : NULL,
                                          gw != NULL);
            if (gw) gw[e * B + b] = (float)acc;
        }
    }
}

/* Weights as a contiguous [E,B] tensor: NULL -> ones, else broadcast. */
static td_tensor *weights_eb(const char *op, td_tensor *w, int64_t E, int64_t B) {
    int64_t shape[2] = {E, B};
    if (!w) return td_ones(2, shape);
    char a[TD_SHAPE_BUF];
    if (w->ndim > 2) return td_fail("%s: weights %s must be [E,B] = [%lld,%lld] (or broadcast to it)",
                                    op, td_shape_str(w, a), (long long)E, (long long)B);
    td_tensor *x = td_expand(w, 2, shape);
    if (!x) return td_fail("%s: weights %s do not broadcast to [E,B] = [%lld,%lld]", op,
                           td_shape_str(w, a), (long long)E, (long long)B);
    td_tensor *c = td_contiguous(x);
    td_release(x);
    return c;
}

/* Every weight >= 0; without the prior, every sample needs one weight > 0. */
static int check_weights(const char *op, const td_tensor *w, int prior) {
    int64_t E = w->shape[0], B = w->shape[1];
    for (int64_t b = 0; b < B; b++) {
        int present = 0;
        for (int64_t e = 0; e < E; e++) {
            float v = w->data[e * B + b];
            if (!(v >= 0.0f) || isinf(v))
                return td_failc("%s: weight [%lld,%lld] is %g; weights must be finite and >= 0", op,
                                (long long)e, (long long)b, v);
            present |= v > 0.0f;
        }
        if (!prior && !present)
            return td_failc("%s: sample %lld has no expert present (all %lld weights are 0) and no prior expert",
                            op, (long long)b, (long long)E);
    }
    return 0;
}

static td_tensor *fuse_experts(const char *op, td_tensor *mu, td_tensor *logvar, td_tensor *w, int prior) {
    char a[TD_SHAPE_BUF], b[TD_SHAPE_BUF];
    if (!mu || !logvar) return td_fail("%s: NULL tensor", op);
    if (mu->ndim != 3 || !td_same_shape(mu, logvar))
        return td_fail("%s: mu %s and logvar %s must both be [E,B,D]", op, td_shape_str(mu, a),
                       td_shape_str(logvar, b));
    int64_t E = mu->shape[0], B = mu->shape[1], D = mu->shape[2];
    td_tensor *ins[3] = {td_contiguous(mu), td_contiguous(logvar), weights_eb(op, w, E, B)};
    td_tensor *out = NULL;
    if (!ins[0] || !ins[1] || !ins[2] || check_weights(op, ins[2], prior)) goto done;
    int64_t oshape[3] = {2, B, D};
    out = td_new(3, oshape);
    if (!out) goto done;
    poe_forward(ins[0]->data, ins[1]->data, ins[2]->data, prior, E, B, D, out->data);
    td_node *node = td_record(TD_OP_POE, out, 3, ins);
    if (node) {
        node->ip[0] = prior;
        td_tensor *alias = td_alias(out);
        td_save(node, 0, alias);
        td_release(alias);
    }
done:
    for (int k = 0; k < 3; k++) td_release(ins[k]);
    return out;
}

/* The mask takes no gradient: it enters detached. */
static td_tensor *poe_masked(const char *op, td_tensor *mu, td_tensor *logvar, td_tensor *mask, int prior) {
    td_tensor *m = mask ? td_detach(mask) : NULL;
    if (mask && !m) return NULL;
    td_tensor *out = fuse_experts(op, mu, logvar, m, prior);
    td_release(m);
    return out;
}

td_tensor *td_poe(td_tensor *mu, td_tensor *logvar, td_tensor *mask) {
    return poe_masked("poe", mu, logvar, mask, 1);
}

td_tensor *td_poe_noprior(td_tensor *mu, td_tensor *logvar, td_tensor *mask) {
    return poe_masked("poe_noprior", mu, logvar, mask, 0);
}

td_tensor *td_weighted_pool(td_tensor *mu, td_tensor *logvar, td_tensor *w) {
    if (!w) return td_fail("weighted_pool: NULL weights");
    return fuse_experts("weighted_pool", mu, logvar, w, 0);
}

static td_tensor *grad_buf(td_node *n, int k) {
    td_tensor *t = n->in[k];
    return t && t->requires_grad ? td_new(t->ndim, t->shape) : NULL;
}

int td_bw_poe(td_node *n, td_tensor *gout) {
    td_tensor *mu = n->in[0], *lv = n->in[1], *w = n->in[2];
    int64_t E = mu->shape[0], B = mu->shape[1], D = mu->shape[2];
    td_tensor *g = td_contiguous(gout);
    td_tensor *gmu = grad_buf(n, 0), *glv = grad_buf(n, 1), *gw = grad_buf(n, 2);
    int rc = -1;
    if (!g || (mu->requires_grad && !gmu) || (lv->requires_grad && !glv) || (w->requires_grad && !gw))
        goto done;
    poe_backward(mu->data, lv->data, w->data, n->saved[0]->data, g->data, E, B, D,
                 gmu ? gmu->data : NULL, glv ? glv->data : NULL, gw ? gw->data : NULL);
    rc = 0;
    if (gmu) rc |= td_accumulate(n, 0, gmu);
    if (glv && !rc) rc |= td_accumulate(n, 1, glv);
    if (gw && !rc) rc |= td_accumulate(n, 2, gw);
done:
    td_release(g);
    td_release(gmu);
    td_release(glv);
    td_release(gw);
    return rc;
}
