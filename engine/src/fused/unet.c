/* unet.c - fused kernels of a diffusion UNet's residual block: GroupNorm +
 * SiLU with an optional per-sample channel bias (the projected time
 * embedding) added before the norm, the sinusoidal time embedding, and the
 * x2 nearest upsampling + 3x3 conv of the decoder in sub-pixel form (at the
 * end). Attention is in attention.c.
 *
 * A residual block is
 *     h = conv1(silu(gn1(x)))
 *     h = conv2(silu(gn2(h + linear(temb)[:, :, None, None])))
 *     out = h + skip(x)
 * td_group_norm_silu(x, G, w, b, NULL, eps) is silu(gn1(x)) and
 * td_group_norm_silu(h, G, w, b, t, eps) with t = linear(temb) [N,C] is
 * silu(gn2(h + t)): the add, the norm and the activation are one read of
 * the input and one write of the output, where the composite makes four
 * passes (add, norm, silu, each writing a tensor that backward keeps).
 *
 * The work goes by (n, g) blocks of K*S contiguous floats (K = C/G channels
 * of S pixels: 2*784 or 4*196 at 28x28 and 14x14), small enough to stay in
 * L1/L2 between the passes over a block: statistics, then the output. The
 * backward recomputes the normalized value and the sigmoid from x and the
 * saved mean and rstd of the block instead of keeping them. */
#include "internal.h"
#include "unet_simd.h"
#include <math.h>
#include <string.h>

static bool wants(td_node *n, int k) { return n->in[k] && n->in[k]->requires_grad; }

/* ---- group_norm_silu ---- */

#define GNS_CHUNK 1024 /* float partial sums over at most this many terms */

/* sum (p + d) over n floats */
static double sum_shift(const float *p, int64_t n, float d) {
    double acc = 0.0;
    for (int64_t i0 = 0; i0 < n; i0 += GNS_CHUNK) {
        int64_t e = i0 + GNS_CHUNK < n ? i0 + GNS_CHUNK : n;
        float s = 0.0f;
        #pragma omp simd reduction(+ : s)
        for (int64_t i = i0; i < e; i++) s += p[i];
        acc += s + (double)d * (double)(e - i0);
    }
    return acc;
}

/* sum (p + d)^2 over n floats */
static double sumsq_shift(const float *p, int64_t n, float d) {
    double acc = 0.0;
    for (int64_t i0 = 0; i0 < n; i0 += GNS_CHUNK) {
        int64_t e = i0 + GNS_CHUNK < n ? i0 + GNS_CHUNK : n;
        float s = 0.0f;
        #pragma omp simd reduction(+ : s)
        for (int64_t i = i0; i < e; i++) s += (p[i] + d) * (p[i] + d);
        acc += s;
    }
    return acc;
}

/* One (n, g) block: x, y [K, S]; t (the channel biases), w, b [K] (the
 * group's channels) or NULL. u = x + t; y = silu((u - mean) rstd w + b);
 * writes the block's mean and rstd of u. */
static void gns_block_forward(const float *x, const float *t, const float *w, const float *b, float *y,
                              int64_t K, int64_t S, float eps, float *mean, float *rstd) {
    int64_t M = K * S;
    double s = 0.0, q = 0.0;
    for (int64_t c = 0; c < K; c++) s += sum_shift(x + c * S, S, t ? t[c] : 0.0f);
    float mu = M ? (float)(s / (double)M) : 0.0f;
    for (int64_t c = 0; c < K; c++) q += sumsq_shift(x + c * S, S, (t ? t[c] : 0.0f) - mu);
    float r = (float)(1.0 / sqrt((M ? q / (double)M : 0.0) + (double)eps));
    for (int64_t c = 0; c < K; c++) {
        float a = r * (w ? w[c] : 1.0f), sh = (t ? t[c] : 0.0f) - mu, bc = b ? b[c] : 0.0f;
        const float *xc = x + c * S;
        float *yc = y + c * S;
        #pragma omp simd
        for (int64_t i = 0; i < S; i++) {
            float z = (xc[i] + sh) * a + bc; /* centred first: no cancellation when |mean| >> std */
            yc[i] = z * td_sigmoid_simd(z);
        }
    }
    *mean = mu;
    *rstd = r;
}

/* x, y [N, C, S]; t [N, C], w, b [C] or NULL; mean, rstd [N, G]. */
static void gns_forward(const float *x, const float *t, const float *w, const float *b, float *y, float *mean,
                        float *rstd, int64_t N, int64_t C, int64_t S, int64_t G, float eps) {
    int64_t K = C / G;
    #pragma omp parallel for schedule(static) if (N * C * S > TD_PAR_MIN)
    for (int64_t ng = 0; ng < N * G; ng++) {
        int64_t c0 = (ng % G) * K, off = ng * K * S;
        gns_block_forward(x + off, t ? t + (ng / G) * C + c0 : NULL, w ? w + c0 : NULL, b ? b + c0 : NULL,
                          y + off, K, S, eps, mean + ng, rstd + ng);
    }
}

/* One (n, g) block backward; arguments as gns_block_forward, gy [K, S] the
 * output's gradient, mu and r the block's statistics. With xhat = (u - mu) r,
 * z = xhat w + b and dz = gy silu'(z):
 *   du = r (w dz - mean(w dz) - xhat mean(w dz xhat))   (means over the block)
 * du goes to dx [K, S] (dz is kept there in between). Per channel:
 * sdz = sum dz (db), sdzx = sum dz xhat (dw), dt = sum du (when not NULL). */
static void gns_block_backward(const float *gy, const float *x, const float *t, const float *w, const float *b,
                               float mu, float r, float *dx, int64_t K, int64_t S, double *sdz,
                               double *sdzx, float *dt) {
    double A = 0.0, B = 0.0;
    for (int64_t c = 0; c < K; c++) {
        float wc = w ? w[c] : 1.0f, sh = (t ? t[c] : 0.0f) - mu, a = r * wc, bc = b ? b[c] : 0.0f;
        const float *xc = x + c * S, *gc = gy + c * S;
        float *dc = dx + c * S;
        double s1 = 0.0, s2 = 0.0;
        for (int64_t i0 = 0; i0 < S; i0 += GNS_CHUNK) {
            int64_t e = i0 + GNS_CHUNK < S ? i0 + GNS_CHUNK : S;
            float p1 = 0.0f, p2 = 0.0f;
            #pragma omp simd reduction(+ : p1, p2)
            for (int64_t i = i0; i < e; i++) {
                float z = (xc[i] + sh) * a + bc, sg = td_sigmoid_simd(z);
                float dz = gc[i] * sg * (1.0f + z * (1.0f - sg));
                dc[i] = dz;
                p1 += dz;
                p2 += dz * (xc[i] + sh);
            }
            s1 += p1;
            s2 += p2;
        }
        sdz[c] = s1;
        sdzx[c] = s2 * r;
        A += wc * s1;
        B += wc * s2 * r;
    }
    double M = (double)(K * S), m1 = A / M, m2 = B / M;
    for (int64_t c = 0; c < K; c++) {
        float wc = w ? w[c] : 1.0f, sh = (t ? t[c] : 0.0f) - mu;
        float c1 = r * wc, c2 = (float)(-(double)r * r * m2), c3 = (float)(-(double)r * m1);
        const float *xc = x + c * S;
        float *dc = dx + c * S;
        double s = 0.0;
        for (int64_t i0 = 0; i0 < S; i0 += GNS_CHUNK) {
            int64_t e = i0 + GNS_CHUNK < S ? i0 + GNS_CHUNK : S;
            float p = 0.0f;
            #pragma omp simd reduction(+ : p)
            for (int64_t i = i0; i < e; i++) {
                dc[i] = c1 * dc[i] + c2 * (xc[i] + sh) + c3;
                p += dc[i];
            }
            s += p;
        }
        if (dt) dt[c] = (float)s;
    }
}

/* gy, x, dx [N, C, S]; t, dt [N, C] or NULL; w, b [C] or NULL; mean, rstd
 * [N, G]; dw, db [C] or NULL; scratch [2 N C] doubles. */
static void gns_backward(const float *gy, const float *x, const float *t, const float *w, const float *b,
                         const float *mean, const float *rstd, float *dx, float *dt, float *dw, float *db,
                         double *scratch, int64_t N, int64_t C, int64_t S, int64_t G) {
    int64_t K = C / G;
    double *sdz = scratch, *sdzx = scratch + N * C;
    #pragma omp parallel for schedule(static) if (N * C * S > TD_PAR_MIN)
    for (int64_t ng = 0; ng < N * G; ng++) {
        int64_t nc0 = (ng / G) * C + (ng % G) * K;
        gns_block_backward(gy + nc0 * S, x + nc0 * S, t ? t + nc0 : NULL, w ? w + nc0 % C : NULL,
                           b ? b + nc0 % C : NULL, mean[ng], rstd[ng], dx + nc0 * S, K, S, sdz + nc0,
                           sdzx + nc0, dt ? dt + nc0 : NULL);
    }
    for (int64_t c = 0; c < C && (dw || db); c++) {
        double sw = 0.0, sb = 0.0;
        for (int64_t n = 0; n < N; n++) {
            sw += sdzx[n * C + c];
            sb += sdz[n * C + c];
        }
        if (dw) dw[c] = (float)sw;
        if (db) db[c] = (float)sb;
    }
}

static int gns_check(td_tensor *x, int groups, td_tensor *w, td_tensor *b, td_tensor *temb, float eps) {
    char a[TD_SHAPE_BUF], s[TD_SHAPE_BUF];
    if (!x) return td_failc("group_norm_silu: NULL input");
    if (x->ndim < 2) return td_failc("group_norm_silu: input %s must be [N, C, ...]", td_shape_str(x, a));
    int64_t N = x->shape[0], C = x->shape[1];
    if (groups <= 0 || C % groups)
        return td_failc("group_norm_silu: %d groups do not divide the %lld channels of input %s", groups,
                        (long long)C, td_shape_str(x, a));
    if (!(eps >= 0.0f)) return td_failc("group_norm_silu: eps %g must be >= 0 (input %s)", eps, td_shape_str(x, a));
    td_tensor *aff[2] = {w, b};
    for (int k = 0; k < 2; k++)
        if (aff[k] && (aff[k]->ndim != 1 || aff[k]->shape[0] != C))
            return td_failc("group_norm_silu: %s %s does not match the %lld channels of input %s",
                            k ? "bias" : "weight", td_shape_str(aff[k], s), (long long)C, td_shape_str(x, a));
    if (temb) {
        bool ok = temb->ndim >= 2 && temb->shape[0] == N && temb->shape[1] == C;
        for (int d = 2; ok && d < temb->ndim; d++) ok = temb->shape[d] == 1;
        if (!ok)
            return td_failc("group_norm_silu: temb %s must be [N, C] = [%lld,%lld] (trailing 1s allowed) for input %s",
                            td_shape_str(temb, s), (long long)N, (long long)C, td_shape_str(x, a));
    }
    return 0;
}

td_tensor *td_group_norm_silu(td_tensor *x, int groups, td_tensor *w, td_tensor *b, td_tensor *temb, float eps) {
    if (gns_check(x, groups, w, b, temb, eps)) return NULL;
    int64_t N = x->shape[0], C = x->shape[1], S = N * C > 0 ? x->numel / (N * C) : 0;
    td_tensor *ins[4] = {td_contiguous(x), w ? td_contiguous(w) : NULL, b ? td_contiguous(b) : NULL,
                         temb ? td_contiguous(temb) : NULL};
    td_tensor *src[4] = {x, w, b, temb};
    td_tensor *mean = td_new(2, (int64_t[]){N, groups}), *rstd = td_new(2, (int64_t[]){N, groups});
    bool ok = mean && rstd;
    for (int k = 0; k < 4; k++) ok = ok && (ins[k] || !src[k]);
    td_tensor *out = ok ? td_new(x->ndim, x->shape) : NULL;
    if (out) {
        gns_forward(ins[0]->data, temb ? ins[3]->data : NULL, w ? ins[1]->data : NULL, b ? ins[2]->data : NULL,
                    out->data, mean->data, rstd->data, N, C, S, groups, eps);
        td_node *node = td_record(TD_OP_GROUP_NORM_SILU, out, 4, ins);
        if (node) {
            node->ip[0] = groups;
            node->fp[0] = eps;
            td_save(node, 0, mean);
            td_save(node, 1, rstd);
        }
    }
    td_release(mean);
    td_release(rstd);
    for (int k = 0; k < 4; k++) td_release(ins[k]);
    return out;
}

int td_bw_group_norm_silu(td_node *n, td_tensor *gout) {
    td_tensor *x = n->in[0], *w = n->in[1], *b = n->in[2], *t = n->in[3];
    int64_t N = x->shape[0], C = x->shape[1], S = N * C > 0 ? x->numel / (N * C) : 0, G = n->ip[0];
    td_tensor *gc = td_contiguous(gout);
    td_tensor *dx = td_new(x->ndim, x->shape); /* also the scratch of dz */
    td_tensor *dw = wants(n, 1) ? td_new(1, &C) : NULL, *db = wants(n, 2) ? td_new(1, &C) : NULL;
    td_tensor *dt = wants(n, 3) ? td_new(t->ndim, t->shape) : NULL;
    size_t bytes = (size_t)(2 * N * C + 1) * sizeof(double);
    double *scratch = td_alloc(bytes);
    int rc = -1;
    if (gc && dx && scratch && (dw || !wants(n, 1)) && (db || !wants(n, 2)) && (dt || !wants(n, 3))) {
        gns_backward(gc->data, x->data, t ? t->data : NULL, w ? w->data : NULL, b ? b->data : NULL,
                     n->saved[0]->data, n->saved[1]->data, dx->data, dt ? dt->data : NULL,
                     dw ? dw->data : NULL, db ? db->data : NULL, scratch, N, C, S, G);
        rc = td_accumulate(n, 0, dx);
        if (!rc && dw) rc = td_accumulate(n, 1, dw);
        if (!rc && db) rc = td_accumulate(n, 2, db);
        if (!rc && dt) rc = td_accumulate(n, 3, dt);
    }
    if (scratch) td_free(scratch, bytes);
    td_release(gc);
    td_release(dx);
    td_release(dw);
    td_release(db);
    td_release(dt);
    return rc;
}

/* ---- timestep_embedding ---- */

/* t [B] -> y [B, dim]: y[b, i] = sin(t_b f_i), y[b, half + i] = cos(t_b f_i),
 * f_i = max_period^(-i / (half - 1)) (f_0 = 1 when half = 1), the last
 * column 0 when dim is odd. In double: PyTorch's float32 version of the same
 * formula is off by up to ~1e-4 at t ~ 1000 (the rounding of t f_i). */
static void timestep_forward(const float *t, float *y, int64_t B, int64_t dim, double max_period, double *freq) {
    int64_t half = dim / 2;
    for (int64_t i = 0; i < half; i++) freq[i] = half > 1 ? exp(-log(max_period) * (double)i / (double)(half - 1)) : 1.0;
    for (int64_t bi = 0; bi < B; bi++) {
        float *row = y + bi * dim;
        for (int64_t i = 0; i < half; i++) {
            double arg = (double)t[bi] * freq[i];
            row[i] = (float)sin(arg);
            row[half + i] = (float)cos(arg);
        }
        if (dim % 2) row[dim - 1] = 0.0f;
    }
}

td_tensor *td_timestep_embedding(td_tensor *t, int dim, float max_period) {
    char a[TD_SHAPE_BUF];
    if (!t) return td_fail("timestep_embedding: NULL steps");
    if (t->ndim != 1) return td_fail("timestep_embedding: steps %s must be [B]", td_shape_str(t, a));
    if (dim < 2) return td_fail("timestep_embedding: dim %d must be >= 2 (steps %s)", dim, td_shape_str(t, a));
    if (!(max_period > 0.0f))
        return td_fail("timestep_embedding: max_period %g must be > 0 (steps %s)", max_period, td_shape_str(t, a));
    int prev = td_set_grad_enabled(0);
    td_tensor *tc = td_contiguous(t);
    td_set_grad_enabled(prev);
    td_tensor *out = tc ? td_new(2, (int64_t[]){t->shape[0], dim}) : NULL;
    size_t bytes = sizeof(double) * (size_t)(dim / 2 + 1);
    double *freq = out ? td_alloc(bytes) : NULL;
    if (freq) {
        timestep_forward(tc->data, out->data, t->shape[0], dim, max_period, freq);
        td_free(freq, bytes);
    } else {
        td_release(out);
        out = NULL;
    }
    td_release(tc);
    return out;
}

/* ---- upsample_conv3x3: conv3x3(upsample_nearest2d(x, 2)) in sub-pixel form ----
 *
 * Output pixel (2i + a, 2j + c) of a 3x3 convolution (pad 1) of the x2
 * nearest upsampling reads input rows i - 1 + a, i + a and columns
 * j - 1 + c, j + c only: per phase (a, c) it is a 2x2 convolution of x with
 * the taps of w summed where they fall on the same input pixel. Rows: phase
 * a = 0 takes tap 0, then taps 1 + 2; phase 1 takes taps 0 + 1, then tap 2
 * (columns likewise). So
 *     y = conv2d(x, fold(w) [4 COUT, CIN, 2, 2], pad 1)   [N, 4 COUT, H+1, W+1]
 *     out[n, o, 2i + a, 2j + c] = y[n, (2a + c) COUT + o, i + a, j + c] + b[o]
 * 16 multiply-adds per 2x2 output pixels and input channel instead of 36,
 * on the low-resolution input, and no upsampled tensor. fold is a matmul
 * with a constant [9, 16] 0/1 matrix (its gradient comes with it); the
 * interleave is an op of its own. */

/* w [COUT, CIN, 3, 3] -> [4 COUT, CIN, 2, 2], channels (2a + c) COUT + o:
 * one batched matmul, w [COUT CIN, 9] x m [4 phases, 9 taps, 4 taps], whose
 * [4, COUT CIN, 4] product is already in that order (no permuted copy). */
static td_tensor *upconv_fold(td_tensor *w) {
    static const int rows[2][2][3] = {{{1, 0, 0}, {0, 1, 1}}, {{1, 1, 0}, {0, 0, 1}}}; /* [phase][tap][3x3 row] */
    float m[4 * 9 * 4];
    for (int ph = 0; ph < 4; ph++)
        for (int k = 0; k < 9; k++)
            for (int pq = 0; pq < 4; pq++)
                m[(ph * 9 + k) * 4 + pq] = (float)(rows[ph >> 1][pq >> 1][k / 3] && rows[ph & 1][pq & 1][k % 3]);
    int64_t co = w->shape[0], ci = w->shape[1];
    td_tensor *M = td_from_buffer(3, (int64_t[]){4, 9, 4}, m), *w2 = td_reshape(w, 2, (int64_t[]){co * ci, 9});
    td_tensor *f = M && w2 ? td_matmul(w2, M) : NULL;
    td_tensor *out = f ? td_reshape(f, 4, (int64_t[]){4 * co, ci, 2, 2}) : NULL;
    td_release(M);
    td_release(w2);
    td_release(f);
    return out;
}

/* y [N, 4C, H+1, W+1], b [C] or NULL -> out [N, C, 2H, 2W] (see above). */
static void interleave_forward(const float *y, const float *b, float *out, int64_t N, int64_t C, int64_t H,
                               int64_t W) {
    int64_t YP = (H + 1) * (W + 1), OW = 2 * W;
    #pragma omp parallel for schedule(static) if (N * C * 4 * H * W > TD_PAR_MIN)
    for (int64_t nc = 0; nc < N * C; nc++) {
        int64_t n = nc / C, o = nc % C;
        float bias = b ? b[o] : 0.0f;
        for (int a = 0; a < 2; a++) {
            const float *y0 = y + ((n * 4 + 2 * a) * C + o) * YP, *y1 = y0 + C * YP;
            for (int64_t i = 0; i < H; i++) {
                const float *r0 = y0 + (i + a) * (W + 1), *r1 = y1 + (i + a) * (W + 1) + 1;
                float *orow = out + nc * 4 * H * W + (2 * i + a) * OW;
                for (int64_t j = 0; j < W; j++) {
                    orow[2 * j] = r0[j] + bias;
                    orow[2 * j + 1] = r1[j] + bias;
                }
            }
        }
    }
}

/* g [N, C, 2H, 2W] -> dy [N, 4C, H+1, W+1] (0 where no output pixel reads
 * y), gsum [N, C] = the sums of the planes of g (for the bias). */
static void interleave_backward(const float *g, float *dy, double *gsum, int64_t N, int64_t C, int64_t H,
                                int64_t W) {
    int64_t YW = W + 1, YP = (H + 1) * YW, OW = 2 * W;
    #pragma omp parallel for schedule(static) if (N * C * 4 * H * W > TD_PAR_MIN)
    for (int64_t nc = 0; nc < N * C; nc++) {
        int64_t n = nc / C, o = nc % C;
        double s = 0.0;
        for (int a = 0; a < 2; a++) {
            float *d0 = dy + ((n * 4 + 2 * a) * C + o) * YP, *d1 = d0 + C * YP;
            memset(d0 + (a ? 0 : H) * YW, 0, sizeof(float) * (size_t)YW); /* the row no output reads */
            memset(d1 + (a ? 0 : H) * YW, 0, sizeof(float) * (size_t)YW);
            for (int64_t i = 0; i < H; i++) {
                float *r0 = d0 + (i + a) * YW, *r1 = d1 + (i + a) * YW;
                const float *grow = g + nc * 4 * H * W + (2 * i + a) * OW;
                float p = 0.0f;
                for (int64_t j = 0; j < W; j++) {
                    r0[j] = grow[2 * j];
                    r1[j + 1] = grow[2 * j + 1];
                    p += grow[2 * j] + grow[2 * j + 1];
                }
                r0[W] = 0.0f; /* the column no output reads */
                r1[0] = 0.0f;
                s += p;
            }
        }
        if (gsum) gsum[nc] = s;
    }
}

static td_tensor *upconv_interleave(td_tensor *y, td_tensor *b) {
    int64_t N = y->shape[0], C = y->shape[1] / 4, H = y->shape[2] - 1, W = y->shape[3] - 1;
    td_tensor *bc = b ? td_contiguous(b) : NULL;
    td_tensor *out = (bc || !b) ? td_new(4, (int64_t[]){N, C, 2 * H, 2 * W}) : NULL;
    if (out) {
        interleave_forward(y->data, bc ? bc->data : NULL, out->data, N, C, H, W);
        td_tensor *ins[2] = {y, bc};
        td_record(TD_OP_UPCONV_INTERLEAVE, out, 2, ins);
    }
    td_release(bc);
    return out;
}

int td_bw_upconv_interleave(td_node *n, td_tensor *gout) {
    td_tensor *y = n->in[0];
    int64_t N = y->shape[0], C = y->shape[1] / 4, H = y->shape[2] - 1, W = y->shape[3] - 1;
    td_tensor *gc = td_contiguous(gout);
    td_tensor *dy = wants(n, 0) ? td_new(4, y->shape) : NULL, *db = wants(n, 1) ? td_new(1, &C) : NULL;
    size_t bytes = sizeof(double) * (size_t)(N * C + 1);
    double *gsum = db ? td_alloc(bytes) : NULL;
    int rc = -1;
    if (gc && (dy || !wants(n, 0)) && (gsum || !db)) {
        if (dy) {
            interleave_backward(gc->data, dy->data, gsum, N, C, H, W);
        } else {
            for (int64_t nc = 0; nc < N * C; nc++) {
                double s = 0.0;
                for (int64_t i = 0; i < 4 * H * W; i++) s += gc->data[nc * 4 * H * W + i];
                gsum[nc] = s;
            }
        }
        for (int64_t o = 0; db && o < C; o++) {
            double s = 0.0;
            for (int64_t k = 0; k < N; k++) s += gsum[k * C + o];
            db->data[o] = (float)s;
        }
        rc = dy ? td_accumulate(n, 0, dy) : 0;
        if (!rc && db) rc = td_accumulate(n, 1, db);
    }
    if (gsum) td_free(gsum, bytes);
    td_release(gc);
    td_release(dy);
    td_release(db);
    return rc;
}

td_tensor *td_upsample_conv3x3(td_tensor *x, td_tensor *w, td_tensor *b) {
    char sx[TD_SHAPE_BUF], sw[TD_SHAPE_BUF], sb[TD_SHAPE_BUF];
    if (!x || !w) return td_fail("upsample_conv3x3: NULL tensor");
    if (x->ndim != 4 || w->ndim != 4 || w->shape[2] != 3 || w->shape[3] != 3 || w->shape[1] != x->shape[1])
        return td_fail("upsample_conv3x3: x %s, weight %s: need x [N, CIN, H, W] and weight [COUT, CIN, 3, 3]",
                       td_shape_str(x, sx), td_shape_str(w, sw));
    if (b && (b->ndim != 1 || b->shape[0] != w->shape[0]))
        return td_fail("upsample_conv3x3: weight %s, bias %s: bias must be [%lld]", td_shape_str(w, sw),
                       td_shape_str(b, sb), (long long)w->shape[0]);
    if (x->shape[2] < 1 || x->shape[3] < 1 || w->shape[0] < 1)
        return td_fail("upsample_conv3x3: x %s, weight %s: empty image or no output channel", td_shape_str(x, sx),
                       td_shape_str(w, sw));
    td_tensor *w4 = upconv_fold(w);
    td_tensor *y = w4 ? td_conv2d(x, w4, NULL, 1, 1) : NULL;
    td_tensor *out = y ? upconv_interleave(y, b) : NULL;
    td_release(w4);
    td_release(y);
    return out;
}
