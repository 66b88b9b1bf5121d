/* norm_pool.c - group normalization, average pooling and nearest upsampling,
 * NCHW (group_norm takes any [N, C, ...]). */
#include "internal.h"
#include <math.h>
#include <string.h>

static bool wants(td_node *n, int k) { return n->in[k] && n->in[k]->requires_grad; }

/* ---- group_norm ---- */

/* Sums in float lanes over chunks (vectorized), chunks added in double. */
#define TD_CHUNK 4096
static double sum_f(const float *p, int64_t n) {
    double acc = 0.0;
    for (int64_t i0 = 0; i0 < n; i0 += TD_CHUNK) {
        int64_t e = i0 + TD_CHUNK < n ? i0 + TD_CHUNK : n;
        float s = 0.0f;
        #pragma omp simd reduction(+ : s)
        for (int64_t i = i0; i < e; i++) s += p[i];
        acc += s;
    }
    return acc;
}

/* sum (p - mu)^2 */
static double sumsq_dev(const float *p, int64_t n, float mu) {
    double acc = 0.0;
    for (int64_t i0 = 0; i0 < n; i0 += TD_CHUNK) {
        int64_t e = i0 + TD_CHUNK < n ? i0 + TD_CHUNK : n;
        float s = 0.0f;
        #pragma omp simd reduction(+ : s)
        for (int64_t i = i0; i < e; i++) s += (p[i] - mu) * (p[i] - mu);
        acc += s;
    }
    return acc;
}

/* sum g x */
static double dot_f(const float *g, const float *x, int64_t n) {
    double acc = 0.0;
    for (int64_t i0 = 0; i0 < n; i0 += TD_CHUNK) {
        int64_t e = i0 + TD_CHUNK < n ? i0 + TD_CHUNK : n;
        float s = 0.0f;
        #pragma omp simd reduction(+ : s)
        for (int64_t i = i0; i < e; i++) s += g[i] * x[i];
        acc += s;
    }
    return acc;
}

/* x, y [N, C, S] with S the product of the spatial dims; G groups of K = C/G
 * channels; w, b [C] or NULL; mean, rstd [N, G] (saved for backward).
 * Each (n, g) block of K*S values is contiguous. */
static void group_norm_forward(const float *x, const float *w, const float *b, float *y, float *mean,
                               float *rstd, int64_t N, int64_t C, int64_t S, int64_t G, float eps) {
    int64_t K = C / G, M = K * S;
    bool par = N * C * S > TD_PAR_MIN;
    #pragma omp parallel for if (par)
    for (int64_t ng = 0; ng < N * G; ng++) {
        const float *p = x + ng * M;
        float mu = M ? (float)(sum_f(p, M) / (double)M) : 0.0f;
        double q = sumsq_dev(p, M, mu);
        mean[ng] = mu;
        rstd[ng] = (float)(1.0 / sqrt((M ? q / (double)M : 0.0) + (double)eps));
    }
    /* y = x * a + c per (n, c) plane, a = rstd w, c = b - mean rstd w */
    #pragma omp parallel for if (par)
    for (int64_t nc = 0; nc < N * C; nc++) {
        int64_t c = nc % C, ng = (nc / C) * G + c / K;
        float a = rstd[ng] * (w ? w[c] : 1.0f);
        float off = (b ? b[c] : 0.0f) - mean[ng] * a;
        const float *p = x + nc * S;
        float *q = y + nc * S;
        for (int64_t i = 0; i < S; i++) q[i] = p[i] * a + off;
    }
}

/* gy, x [N, C, S]; mean, rstd [N, G]; w [C] or NULL; ds, db scratch [N, C].
 * Writes dx [N, C, S], dw [C], db_out [C] where not NULL. With xhat =
 * (x - mean) rstd and dxhat = gy w, per (n, g) block of M values:
 *   dx = rstd (dxhat - mean(dxhat) - xhat mean(dxhat xhat)),
 *   dw = sum_{n,s} gy xhat,  db = sum_{n,s} gy. */
static void group_norm_backward(const float *gy, const float *x, const float *mean, const float *rstd,
                                const float *w, float *dx, float *dw, float *db_out, double *ds,
                                double *db, int64_t N, int64_t C, int64_t S, int64_t G) {
    int64_t K = C / G, M = K * S;
    bool par = N * C * S > TD_PAR_MIN;
    #pragma omp parallel for if (par)
    for (int64_t nc = 0; nc < N * C; nc++) {
        ds[nc] = dot_f(gy + nc * S, x + nc * S, S);
        db[nc] = sum_f(gy + nc * S, S);
    }
    if (dx) {
        #pragma omp parallel for if (par)
        for (int64_t ng = 0; ng < N * G; ng++) {
            int64_t n = ng / G, c0 = (ng % G) * K;
            double mu = mean[ng], r = rstd[ng], A = 0.0, B = 0.0;
            for (int64_t c = c0; c < c0 + K; c++) {
                double wc = w ? w[c] : 1.0;
                A += wc * db[n * C + c];
                B += wc * r * (ds[n * C + c] - mu * db[n * C + c]);
            }
            /* dx = c1 gy + c2 x + c3 per channel */
            double c2 = -r * r * B / (double)M, c3 = -r * A / (double)M - mu * c2;
            for (int64_t c = c0; c < c0 + K; c++) {
                float c1 = (float)(r * (w ? w[c] : 1.0));
                const float *g = gy + (n * C + c) * S, *p = x + (n * C + c) * S;
                float *q = dx + (n * C + c) * S;
                for (int64_t i = 0; i < S; i++) q[i] = c1 * g[i] + (float)c2 * p[i] + (float)c3;
            }
        }
    }
    for (int64_t c = 0; c < C; c++) {
        double sw = 0.0, sb = 0.0;
        for (int64_t n = 0; n < N; n++) {
            int64_t ng = n * G + c / K;
            sw += rstd[ng] * (ds[n * C + c] - mean[ng] * db[n * C + c]);
            sb += db[n * C + c];
        }
        if (dw) dw[c] = (float)sw;
        if (db_out) db_out[c] = (float)sb;
    }
}

static int check_affine(const char *what, const td_tensor *p, const td_tensor *x, int64_t C) {
    char a[TD_SHAPE_BUF], b[TD_SHAPE_BUF];
    if (p && (p->ndim != 1 || p->shape[0] != C))
        return td_failc("group_norm: %s %s does not match the %lld channels of input %s", what,
                        td_shape_str(p, a), (long long)C, td_shape_str(x, b));
    return 0;
}

td_tensor *td_group_norm(td_tensor *x, int groups, td_tensor *w, td_tensor *b, float eps) {
    char a[TD_SHAPE_BUF];
    if (!x) return td_fail("group_norm: NULL input");
    if (x->ndim < 2) return td_fail("group_norm: input %s must be [N, C, ...]", td_shape_str(x, a));
    int64_t N = x->shape[0], C = x->shape[1], S = N * C > 0 ? x->numel / (N * C) : 0;
    if (groups <= 0 || C % groups)
        return td_fail("group_norm: %d groups do not divide the %lld channels of input %s", groups,
                       (long long)C, td_shape_str(x, a));
    if (!(eps >= 0.0f)) return td_fail("group_norm: eps %g must be >= 0 (input %s)", eps, td_shape_str(x, a));
    if (check_affine("weight", w, x, C) || check_affine("bias", b, x, C)) return NULL;
    td_tensor *xc = td_contiguous(x), *wc = w ? td_contiguous(w) : NULL, *bc = b ? td_contiguous(b) : NULL;
    td_tensor *mean = td_new(2, (int64_t[]){N, groups}), *rstd = td_new(2, (int64_t[]){N, groups});
    td_tensor *out = NULL;
    if (xc && (wc || !w) && (bc || !b) && mean && rstd) out = td_new(x->ndim, x->shape);
    if (out) {
        group_norm_forward(xc->data, wc ? wc->data : NULL, bc ? bc->data : NULL, out->data, mean->data,
                           rstd->data, N, C, S, groups, eps);
        td_tensor *ins[3] = {xc, wc, bc};
        td_node *node = td_record(TD_OP_GROUP_NORM, out, 3, ins);
        if (node) {
            node->ip[0] = groups;
            node->fp[0] = eps;
            td_save(node, 0, mean);
            td_save(node, 1, rstd);
        }
    }
    td_release(mean);
    td_release(rstd);
    td_release(xc);
    td_release(wc);
    td_release(bc);
    return out;
}

int td_bw_group_norm(td_node *n, td_tensor *gout) {
    td_tensor *x = n->in[0], *w = n->in[1];
    int64_t N = x->shape[0], C = x->shape[1], S = N * C > 0 ? x->numel / (N * C) : 0, G = n->ip[0];
    td_tensor *gc = td_contiguous(gout);
    td_tensor *dx = wants(n, 0) ? td_new(x->ndim, x->shape) : NULL;
    td_tensor *dw = wants(n, 1) ? td_new(1, &C) : NULL, *db = wants(n, 2) ? td_new(1, &C) : NULL;
    size_t scratch = (size_t)(2 * N * C + 1) * sizeof(double);
    double *ds = td_alloc(scratch);
    int rc = -1;
    if (gc && ds && (dx || !wants(n, 0)) && (dw || !wants(n, 1)) && (db || !wants(n, 2))) {
        group_norm_backward(gc->data, x->data, n->saved[0]->data, n->saved[1]->data, w ? w->data : NULL,
                            dx ? dx->data : NULL, dw ? dw->data : NULL, db ? db->data : NULL, ds,
                            ds + N * C, N, C, S, G);
        rc = 0;
        if (dx) rc = td_accumulate(n, 0, dx);
        if (!rc && dw) rc = td_accumulate(n, 1, dw);
        if (!rc && db) rc = td_accumulate(n, 2, db);
    }
    if (ds) td_free(ds, scratch);
    td_release(gc);
    td_release(dx);
    td_release(dw);
    td_release(db);
    return rc;
}

/* ---- avg_pool2d ---- */

/* x [P, H, W] planes, y [P, OH, OW]; square window k, stride s, zero padding
 * p counted in the divisor (count_include_pad): every window averages k*k. */
static void avg_pool_forward(const float *x, float *y, int64_t P, int64_t H, int64_t W, int64_t OH,
                             int64_t OW, int k, int s, int p) {
    float inv = 1.0f / (float)(k * k);
    #pragma omp parallel for if (P * OH * OW * k * k > TD_PAR_MIN)
    for (int64_t pl = 0; pl < P; pl++) {
        const float *xp = x + pl * H * W;
        for (int64_t oh = 0; oh < OH; oh++)
            for (int64_t ow = 0; ow < OW; ow++) {
                int64_t h0 = oh * s - p, w0 = ow * s - p;
                float acc = 0.0f;
                for (int64_t h = h0 < 0 ? 0 : h0; h < h0 + k && h < H; h++)
                    for (int64_t w = w0 < 0 ? 0 : w0; w < w0 + k && w < W; w++) acc += xp[h * W + w];
                y[(pl * OH + oh) * OW + ow] = acc * inv;
            }
    }
}

/* gy [P, OH, OW] -> gx [P, H, W] (overwritten). */
static void avg_pool_backward(const float *gy, float *gx, int64_t P, int64_t H, int64_t W, int64_t OH,
                              int64_t OW, int k, int s, int p) {
    float inv = 1.0f / (float)(k * k);
    #pragma omp parallel for if (P * OH * OW * k * k > TD_PAR_MIN)
    for (int64_t pl = 0; pl < P; pl++) {
        float *gp = gx + pl * H * W;
        memset(gp, 0, sizeof(float) * (size_t)(H * W));
        for (int64_t oh = 0; oh < OH; oh++)
            for (int64_t ow = 0; ow < OW; ow++) {
                int64_t h0 = oh * s - p, w0 = ow * s - p;
                float g = gy[(pl * OH + oh) * OW + ow] * inv;
                for (int64_t h = h0 < 0 ? 0 : h0; h < h0 + k && h < H; h++)
                    for (int64_t w = w0 < 0 ? 0 : w0; w < w0 + k && w < W; w++) gp[h * W + w] += g;
            }
    }
}

/* Number of [H, W] planes of x [..., H, W]. */
static int64_t planes(const td_tensor *x) {
    int64_t hw = x->shape[x->ndim - 2] * x->shape[x->ndim - 1];
    return hw > 0 ? x->numel / hw : 0;
}

/* 3-D or 4-D input. */
static int spatial_check(const char *op, const td_tensor *x) {
    char a[TD_SHAPE_BUF];
    if (!x) return td_failc("%s: NULL input", op);
    if (x->ndim != 3 && x->ndim != 4)
        return td_failc("%s: input %s must be [N, C, H, W] or [C, H, W]", op, td_shape_str(x, a));
    return 0;
}

td_tensor *td_avg_pool2d(td_tensor *x, int kernel, int stride, int pad) {
    char a[TD_SHAPE_BUF];
    if (spatial_check("avg_pool2d", x)) return NULL;
    int64_t H = x->shape[x->ndim - 2], W = x->shape[x->ndim - 1];
    if (kernel < 1 || stride < 1 || pad < 0 || pad > kernel / 2)
        return td_fail("avg_pool2d: kernel %d, stride %d, pad %d on input %s: need kernel >= 1, "
                       "stride >= 1, 0 <= pad <= kernel/2", kernel, stride, pad, td_shape_str(x, a));
    if (H + 2 * pad < kernel || W + 2 * pad < kernel)
        return td_fail("avg_pool2d: kernel %d is larger than the padded input %s (pad %d)", kernel,
                       td_shape_str(x, a), pad);
    int64_t shape[4];
    memcpy(shape, x->shape, sizeof(int64_t) * (size_t)x->ndim);
    int64_t OH = (H + 2 * pad - kernel) / stride + 1, OW = (W + 2 * pad - kernel) / stride + 1;
    shape[x->ndim - 2] = OH;
    shape[x->ndim - 1] = OW;
    td_tensor *xc = td_contiguous(x);
    td_tensor *out = xc ? td_new(x->ndim, shape) : NULL;
    if (out) {
        avg_pool_forward(xc->data, out->data, planes(x), H, W, OH, OW, kernel, stride, pad);
        td_node *node = td_record(TD_OP_AVG_POOL2D, out, 1, &xc);
        if (node) {
            node->ip[0] = kernel;
            node->ip[1] = stride;
            node->ip[2] = pad;
        }
    }
    td_release(xc);
    return out;
}

int td_bw_avg_pool2d(td_node *n, td_tensor *gout) {
    td_tensor *x = n->in[0];
    int64_t H = x->shape[x->ndim - 2], W = x->shape[x->ndim - 1];
    int64_t OH = gout->shape[gout->ndim - 2], OW = gout->shape[gout->ndim - 1];
    td_tensor *gc = td_contiguous(gout);
    td_tensor *gx = gc ? td_new(x->ndim, x->shape) : NULL;
    int rc = -1;
    if (gx) {
        avg_pool_backward(gc->data, gx->data, planes(x), H, W, OH, OW, (int)n->ip[0],
                          (int)n->ip[1], (int)n->ip[2]);
        rc = td_accumulate(n, 0, gx);
    }
    td_release(gc);
    td_release(gx);
    return rc;
}

/* ---- upsample_nearest2d ---- */

/* x [P, H, W] -> y [P, H*s, W*s], y[i, j] = x[i / s, j / s]. */
static void upsample_forward(const float *x, float *y, int64_t P, int64_t H, int64_t W, int s) {
    int64_t OW = W * s;
    #pragma omp parallel for if (P * H * W * s * s > TD_PAR_MIN)
    for (int64_t pl = 0; pl < P; pl++)
        for (int64_t h = 0; h < H; h++) {
            const float *xr = x + (pl * H + h) * W;
            float *row = y + (pl * H + h) * s * OW;
            for (int64_t w = 0; w < W; w++)
                for (int j = 0; j < s; j++) row[w * s + j] = xr[w];
            for (int i = 1; i < s; i++) memcpy(row + i * OW, row, sizeof(float) * (size_t)OW);
        }
}

/* gy [P, H*s, W*s] -> gx [P, H, W]: sums of the s*s blocks. */
static void upsample_backward(const float *gy, float *gx, int64_t P, int64_t H, int64_t W, int s) {
    int64_t OW = W * s;
    #pragma omp parallel for if (P * H * W * s * s > TD_PAR_MIN)
    for (int64_t pl = 0; pl < P; pl++)
        for (int64_t h = 0; h < H; h++) {
            float *gr = gx + (pl * H + h) * W;
            const float *rows = gy + (pl * H + h) * s * OW;
            for (int64_t w = 0; w < W; w++) {
                float acc = 0.0f;
                for (int i = 0; i < s; i++)
                    for (int j = 0; j < s; j++) acc += rows[i * OW + w * s + j];
                gr[w] = acc;
            }
        }
}

td_tensor *td_upsample_nearest2d(td_tensor *x, int scale) {
    char a[TD_SHAPE_BUF];
    if (spatial_check("upsample_nearest2d", x)) return NULL;
    if (scale < 1) return td_fail("upsample_nearest2d: scale %d must be >= 1 (input %s)", scale, td_shape_str(x, a));
    int64_t H = x->shape[x->ndim - 2], W = x->shape[x->ndim - 1], shape[4];
    memcpy(shape, x->shape, sizeof(int64_t) * (size_t)x->ndim);
    shape[x->ndim - 2] = H * scale;
    shape[x->ndim - 1] = W * scale;
    td_tensor *xc = td_contiguous(x);
    td_tensor *out = xc ? td_new(x->ndim, shape) : NULL;
    if (out) {
        upsample_forward(xc->data, out->data, planes(x), H, W, scale);
        td_node *node = td_record(TD_OP_UPSAMPLE_NEAREST2D, out, 1, &xc);
        if (node) node->ip[0] = scale;
    }
    td_release(xc);
    return out;
}

int td_bw_upsample_nearest2d(td_node *n, td_tensor *gout) {
    td_tensor *x = n->in[0];
    int64_t H = x->shape[x->ndim - 2], W = x->shape[x->ndim - 1];
    td_tensor *gc = td_contiguous(gout);
    td_tensor *gx = gc ? td_new(x->ndim, x->shape) : NULL;
    int rc = -1;
    if (gx) {
        upsample_backward(gc->data, gx->data, planes(x), H, W, (int)n->ip[0]);
        rc = td_accumulate(n, 0, gx);
    }
    td_release(gc);
    td_release(gx);
    return rc;
}
