/* conv.c - conv2d and conv_transpose2d (NCHW, dilation 1, groups 1) with
 * PyTorch's weight layouts.
 *
 *  - im2col + sgemm per image, col2im for the backward. Images go to
 *    threads (one single-threaded sgemm each) when the batch can fill them,
 *    else images run in turn on threaded sgemm. Stride-1 "same" patches are
 *    shifted copies of the plane; strided ones read a phase-split copy.
 *  - A 1x1 stride-1 convolution reads the image as its own column matrix.
 *  - Stride-1 conv2d with <= 4 output channels runs direct loops on a
 *    zero-padded copy of the image (no column matrix).
 *  - 3x3 stride-1 conv2d with >= 16 channels each way goes through Winograd
 *    F(4x4, 3x3) or F(2x2, 3x3) (conv_winograd.c): 4x or 2.25x fewer
 *    multiplications (forward, input and weight gradients).
 *
 * The direct loops (conv2d_ref*, conv_t_ref*) are the reference the fast
 * paths are tested against: td_conv_set_reference(1) makes the ops use them. */

/* Short copy and fill loops stay loops: GCC would otherwise turn each into
 * a memmove/memset call, once per output row of often 14 floats. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-tree-loop-distribute-patterns")
#endif
#include "conv.h"
#include <string.h>

/* An image [c, h, w] and its column matrix [c * kh * kw, oh * ow] for a
 * kernel kh x kw at stride s with zero padding p. */
typedef struct {
    int64_t c, h, w, kh, kw, s, p, oh, ow;
} geom;

static int use_reference;

/* Internal entry point for the tests (not in tide.h): 1 = direct loops. */
void td_conv_set_reference(int on) { use_reference = on != 0; }

static inline int64_t geom_rows(const geom *g) { return g->c * g->kh * g->kw; }
static inline int64_t geom_cols(const geom *g) { return g->oh * g->ow; }
static inline bool is_pointwise(const geom *g) { return g->kh == 1 && g->kw == 1 && g->s == 1 && g->p == 0; }

/* Columns ox whose input column ox*s - p + kj lies inside [0, w): [*lo, *hi). */
static void valid_cols(const geom *g, int64_t kj, int64_t *lo, int64_t *hi) {
    int64_t a = g->p - kj, b = g->w - 1 + g->p - kj;
    *lo = a > 0 ? (a + g->s - 1) / g->s : 0;
    *hi = b >= 0 ? b / g->s + 1 : 0;
    if (*lo > g->ow) *lo = g->ow;
    if (*hi > g->ow) *hi = g->ow;
    if (*hi < *lo) *hi = *lo;
}

/* At stride 1 with ow == w, patch row (ki, kj) is the channel plane shifted
 * by (ki - p) * w + (kj - p): one contiguous range, whose elements outside
 * the valid columns [lo, hi) of each output row wrapped around an edge. */
static bool is_shifted_plane(const geom *g) { return g->s == 1 && g->ow == g->w; }

/* At stride s > 1, im2col first copies the image zero-padded and with each
 * row split by phase (padded column mod s): [c, h + 2p, s, wq], wq =
 * ceil((w + 2p) / s). Patch row (ki, kj) at output row oy is then the
 * contiguous run at padded row oy*s + ki, phase kj % s, from kj / s. This is
 * the scratch it needs, in floats. */
static int64_t phase_width(const geom *g) { return (g->w + 2 * g->p + g->s - 1) / g->s; }
static int64_t im2col_work(const geom *g) {
    return g->s == 1 ? 0 : g->c * (g->h + 2 * g->p) * g->s * phase_width(g);
}

/* dst [wq] = src[j*s + q - p] where that lies in [0, w), else 0. */
static void split_phase(const float *restrict src, float *restrict dst, const geom *g, int64_t q) {
    int64_t s = g->s, wq = phase_width(g), lo = 0, hi = wq;
    while (lo < wq && lo * s + q - g->p < 0) lo++;
    while (hi > lo && (hi - 1) * s + q - g->p >= g->w) hi--;
    for (int64_t j = 0; j < lo; j++) dst[j] = 0.0f;
    const float *from = src + q - g->p; /* from[j * s], j >= lo */
    if (s == 2)
        for (int64_t j = lo; j < hi; j++) dst[j] = from[2 * j];
    else
        for (int64_t j = lo; j < hi; j++) dst[j] = from[j * s];
    for (int64_t j = hi; j < wq; j++) dst[j] = 0.0f;
}

static void split_phases(const float *restrict img, float *restrict ph, const geom *g) {
    int64_t s = g->s, wq = phase_width(g), hp = g->h + 2 * g->p;
    for (int64_t r = 0; r < g->c * hp; r++) {
        int64_t c = r / hp, iy = r % hp - g->p;
        float *dst = ph + r * s * wq;
        if (iy < 0 || iy >= g->h) {
            memset(dst, 0, (size_t)(s * wq) * sizeof(float));
            continue;
        }
        for (int64_t q = 0; q < s; q++) split_phase(img + (c * g->h + iy) * g->w, dst + q * wq, g, q);
    }
}

/* Zeroes columns [0, lo) and [hi, ow) of d [oh, ow]. */
static void zero_edges(float *d, const geom *g, int64_t lo, int64_t hi) {
    if (lo == 0 && hi == g->ow) return;
    for (int64_t oy = 0; oy < g->oh; oy++) {
        for (int64_t ox = 0; ox < lo; ox++) d[oy * g->ow + ox] = 0.0f;
        for (int64_t ox = hi; ox < g->ow; ox++) d[oy * g->ow + ox] = 0.0f;
    }
}

/* d [oh*ow] = the patch row (ki, kj) of one channel: src is its plane
 * [h, w] at stride 1, its padded phase-split plane at stride s > 1. */
static void im2col_row(const float *restrict src, float *restrict d, const geom *g, int64_t ki, int64_t kj) {
    int64_t s = g->s, ow = g->ow, lo, hi;
    if (s > 1) {
        int64_t wq = phase_width(g);
        const float *row = src + (ki * s + kj % s) * wq + kj / s;
        for (int64_t oy = 0; oy < g->oh; oy++, row += s * s * wq, d += ow)
            for (int64_t ox = 0; ox < ow; ox++) d[ox] = row[ox];
        return;
    }
    valid_cols(g, kj, &lo, &hi);
    if (is_shifted_plane(g)) {
        int64_t P = geom_cols(g), shift = (ki - g->p) * g->w + (kj - g->p);
        int64_t a = shift < 0 ? -shift : 0, b = g->h * g->w - shift;
        if (b > P) b = P;
        if (b < a) b = a;
        memset(d, 0, (size_t)a * sizeof(float));
        memcpy(d + a, src + a + shift, (size_t)(b - a) * sizeof(float));
        memset(d + b, 0, (size_t)(P - b) * sizeof(float));
        zero_edges(d, g, lo, hi);
        return;
    }
    int64_t off = kj - g->p; /* input column of ox */
    for (int64_t oy = 0; oy < g->oh; oy++) {
        float *dr = d + oy * ow;
        int64_t iy = oy - g->p + ki;
        if (iy < 0 || iy >= g->h) {
            for (int64_t ox = 0; ox < ow; ox++) dr[ox] = 0.0f;
            continue;
        }
        const float *row = src + iy * g->w + off;
        for (int64_t ox = lo; ox < hi; ox++) dr[ox] = row[ox];
    }
    zero_edges(d, g, lo, hi);
}

/* The columns of n images img [n, c, h, w] side by side: image j's patches
 * in columns [j*oh*ow, (j+1)*oh*ow) of col [c*kh*kw, n*oh*ow] (rows ld
 * apart), written row by row so that each row's runs are contiguous; work
 * holds n * im2col_work(g) floats. */
static void im2col(const float *img, int64_t n, float *col, int64_t ld, float *work, const geom *g, bool par) {
    int64_t P = geom_cols(g), HW = g->c * g->h * g->w, plane = g->h * g->w;
    if (g->s > 1) {
        int64_t wsz = im2col_work(g);
        for (int64_t j = 0; j < n; j++) split_phases(img + j * HW, work + j * wsz, g);
        img = work;
        HW = wsz;
        plane = (g->h + 2 * g->p) * g->s * phase_width(g);
    }
    (void)par;
    (void)P;
    #pragma omp parallel for if (par && geom_rows(g) * P * n > TD_PAR_MIN)
    for (int64_t c = 0; c < g->c; c++)
        for (int64_t ki = 0; ki < g->kh; ki++)
            for (int64_t kj = 0; kj < g->kw; kj++) {
                float *row = col + ((c * g->kh + ki) * g->kw + kj) * ld;
                for (int64_t j = 0; j < n; j++) im2col_row(img + j * HW + c * plane, row + j * P, g, ki, kj);
            }
}

/* dst [h, w] += the patch row (ki, kj) in d [oh*ow]; d is scratch (the
 * shifted-plane path zeroes its wrapped elements and adds it whole). */
static void col2im_row(float *restrict d, float *restrict dst, const geom *g, int64_t ki, int64_t kj) {
    int64_t s = g->s, ow = g->ow, lo, hi;
    valid_cols(g, kj, &lo, &hi);
    if (is_shifted_plane(g)) {
        int64_t P = geom_cols(g), shift = (ki - g->p) * g->w + (kj - g->p);
        int64_t a = shift < 0 ? -shift : 0, b = g->h * g->w - shift;
        if (b > P) b = P;
        zero_edges(d, g, lo, hi);
        for (int64_t i = a; i < b; i++) dst[i + shift] += d[i];
        return;
    }
    int64_t off = kj - g->p;
    for (int64_t oy = 0; oy < g->oh; oy++, d += ow) {
        int64_t iy = oy * s - g->p + ki;
        if (iy < 0 || iy >= g->h) continue;
        float *row = dst + iy * g->w;
        if (s == 1)
            for (int64_t ox = lo; ox < hi; ox++) row[ox + off] += d[ox];
        else
            for (int64_t ox = lo; ox < hi; ox++) row[ox * s + off] += d[ox];
    }
}

/* img [n, c, h, w] += the patches in col [c*kh*kw, n*oh*ow] (rows ld
 * apart, images side by side as im2col writes them; its adjoint); col is
 * scratch and may be changed. */
static void col2im(float *col, int64_t ld, int64_t n, float *img, const geom *g, bool par) {
    int64_t P = geom_cols(g), HW = g->c * g->h * g->w, plane = g->h * g->w;
    (void)par;
    (void)P;
    #pragma omp parallel for if (par && geom_rows(g) * P * n > TD_PAR_MIN)
    for (int64_t c = 0; c < g->c; c++)
        for (int64_t ki = 0; ki < g->kh; ki++)
            for (int64_t kj = 0; kj < g->kw; kj++) {
                float *row = col + ((c * g->kh + ki) * g->kw + kj) * ld;
                for (int64_t j = 0; j < n; j++) col2im_row(row + j * P, img + j * HW + c * plane, g, ki, kj);
            }
}

/* out [rows, n] = b[row] in every element of each row. */
static void fill_bias(float *out, const float *b, int64_t rows, int64_t n) {
    for (int64_t r = 0; r < rows; r++)
        for (int64_t j = 0; j < n; j++) out[r * n + j] = b[r];
}

/* db [rows] = beta db + the row sums of g [rows, n]. */
static void row_sums(const float *g, int64_t rows, int64_t n, float *db, float beta) {
    for (int64_t r = 0; r < rows; r++) {
        float s = 0.0f;
        #pragma omp simd reduction(+ : s)
        for (int64_t j = 0; j < n; j++) s += g[r * n + j];
        db[r] = beta == 0.0f ? s : beta * db[r] + s;
    }
}

/* The same on contiguous matrices. */
static void gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, const float *a, const float *b, float beta,
                 float *c) {
    td_conv_gemm(ta, tb, m, n, k, a, ta ? m : k, b, tb ? k : n, beta, c, n);
}

/* ---- conv2d kernels ----
 * x [N, c, h, w], w [co, c, kh, kw] = [co, K], b [co] or NULL,
 * out [N, co, oh, ow] = [N, co, P]; g is one image of x and its columns.
 * Small images go in groups of G: their columns side by side in one
 * [K, G*P] matrix, so each GEMM has G*P columns instead of P (a 7x7 output
 * alone makes a GEMM too thin to run near peak). */

static int64_t group_size(const geom *g, int64_t N) {
    if (is_pointwise(g)) return 1;
    int64_t G = 1024 / geom_cols(g);
    return G < 1 ? 1 : G > N ? N : G;
}

/* The columns of all groups, [groups, K, G*P] floats, kept from the forward
 * for the weight gradient when they are at most 4x the input (a 4x4 kernel
 * at stride 2, or smaller): the backward then skips its im2col. */
static int64_t kept_cols_size(const geom *g, int64_t N) {
    if (is_pointwise(g) || geom_rows(g) * geom_cols(g) > 4 * g->c * g->h * g->w) return 0;
    int64_t G = group_size(g, N);
    return (N + G - 1) / G * geom_rows(g) * G * geom_cols(g);
}

/* keep: NULL, or kept_cols_size(g, N) floats that receive the columns. */
static int conv2d_forward(const float *x, const float *w, const float *b, float *out, int64_t N, int64_t co,
                          const geom *g, float *keep) {
    int64_t K = geom_rows(g), P = geom_cols(g), HW = g->c * g->h * g->w;
    int64_t G = group_size(g, N), L = G * P, groups = (N + G - 1) / G;
    int nt = td_conv_threads(groups);
    bool pw = is_pointwise(g);
    td_conv_scratch sc;
    if (td_conv_scratch_open(&sc, nt, pw ? 0 : (keep ? 0 : K * L) + G * im2col_work(g) + (G > 1 ? co * L : 0)))
        return -1;
    #pragma omp parallel for num_threads(nt) if (nt > 1) schedule(static)
    for (int64_t gi = 0; gi < groups; gi++) {
        int64_t n0 = gi * G, gn = n0 + G <= N ? G : N - n0;
        float *o = out + n0 * co * P;
        if (pw) {
            if (b) fill_bias(o, b, co, P);
            gemm(false, false, co, P, K, w, x + n0 * HW, b ? 1.0f : 0.0f, o);
            continue;
        }
        float *mine = td_conv_scratch_mine(&sc), *col = keep ? keep + gi * K * L : mine;
        float *work = keep ? mine : col + K * L, *prod = work + G * im2col_work(g);
        im2col(x + n0 * HW, gn, col, L, work, g, nt == 1);
        if (gn == 1) { /* straight into the image's output */
            if (b) fill_bias(o, b, co, P);
            td_conv_gemm(false, false, co, P, K, w, K, col, L, b ? 1.0f : 0.0f, o, P);
            continue;
        }
        td_conv_gemm(false, false, co, gn * P, K, w, K, col, L, 0.0f, prod, L);
        for (int64_t j = 0; j < gn; j++)
            for (int64_t r = 0; r < co; r++) {
                const float *src = prod + r * L + j * P;
                float *dst = o + (j * co + r) * P, bias = b ? b[r] : 0.0f;
                for (int64_t q = 0; q < P; q++) dst[q] = src[q] + bias;
            }
    }
    td_conv_scratch_close(&sc);
    return 0;
}

/* dx, dw, db (+)= the gradients for gout [N, co, P] (each may be NULL; bx,
 * bw, bb: 0 overwrite, 1 add): with a group's gout side by side as
 * gt [co, G*P] and its columns col [K, G*P]: dw += gt col^T,
 * dx_n = col2im((W^T gt)_n), db = sums of gout over n and P. kept: the
 * forward's columns (conv2d_forward's keep) or NULL. */
static int conv2d_backward(const float *x, const float *w, const float *gout, float *dx, float *dw, float *db,
                           int64_t N, int64_t co, const geom *g, float bx, float bw, float bb, const float *kept) {
    int64_t K = geom_rows(g), P = geom_cols(g), HW = g->c * g->h * g->w;
    int64_t G = group_size(g, N), L = G * P, groups = (N + G - 1) / G;
    int nt = td_conv_threads(groups);
    bool pw = is_pointwise(g);
    td_conv_scratch cols, dcols, gts;
    td_conv_sum sw, sb;
    int rc = td_conv_scratch_open(&cols, nt, !pw && dw && !kept ? K * L + G * im2col_work(g) : 0);
    rc |= td_conv_scratch_open(&dcols, nt, !pw && dx ? K * L : 0);
    rc |= td_conv_scratch_open(&gts, nt, G > 1 && (dw || dx) ? co * L : 0);
    rc |= td_conv_sum_open(&sw, dw, co * K, bw, nt);
    rc |= td_conv_sum_open(&sb, db, co, bb, nt);
    #pragma omp parallel for num_threads(nt) if (nt > 1 && rc == 0) schedule(static)
    for (int64_t gi = 0; gi < groups; gi++) {
        if (rc) continue;
        int64_t n0 = gi * G, gn = n0 + G <= N ? G : N - n0;
        const float *g0 = gout + n0 * co * P, *x0 = x + n0 * HW;
        float beta;
        if (db) {
            float *d = td_conv_sum_slot(&sb, &beta);
            for (int64_t j = 0; j < gn; j++, beta = 1.0f) row_sums(g0 + j * co * P, co, P, d, beta);
        }
        /* gt [co, gn*P], rows lg apart: gout of one image as it is, else side by side */
        const float *gt = g0;
        int64_t lg = P;
        if (gn > 1 && (dw || dx)) {
            float *t = td_conv_scratch_mine(&gts);
            for (int64_t j = 0; j < gn; j++)
                for (int64_t r = 0; r < co; r++) memcpy(t + r * L + j * P, g0 + (j * co + r) * P, (size_t)P * sizeof(float));
            gt = t;
            lg = L;
        }
        if (dw) {
            const float *src = x0;
            int64_t ls = P;
            if (kept) {
                src = kept + gi * K * L;
                ls = L;
            } else if (!pw) {
                float *col = td_conv_scratch_mine(&cols);
                im2col(x0, gn, col, L, col + K * L, g, nt == 1);
                src = col;
                ls = L;
            }
            float *d = td_conv_sum_slot(&sw, &beta);
            td_conv_gemm(false, true, co, K, gn * P, gt, lg, src, ls, beta, d, K);
        }
        if (dx) {
            float *dx0 = dx + n0 * HW;
            if (pw) {
                gemm(true, false, K, P, co, w, g0, bx, dx0);
            } else {
                float *dc = td_conv_scratch_mine(&dcols);
                td_conv_gemm(true, false, K, gn * P, co, w, K, gt, lg, 0.0f, dc, L);
                if (bx == 0.0f) memset(dx0, 0, (size_t)(gn * HW) * sizeof(float));
                col2im(dc, L, gn, dx0, g, nt == 1);
            }
        }
    }
    td_conv_sum_close(&sw, rc == 0);
    td_conv_sum_close(&sb, rc == 0);
    td_conv_scratch_close(&cols);
    td_conv_scratch_close(&dcols);
    td_conv_scratch_close(&gts);
    return rc ? -1 : 0;
}

/* ---- conv_transpose2d kernels ----
 * x [N, ci, h, w], w [ci, co, kh, kw] = [ci, K], b [co] or NULL,
 * out [N, co, OH, OW]. g is one image of the OUTPUT and its columns, which
 * have the size of x's image: col_n [K, h*w] = W^T x_n, out_n = col2im(col_n). */

static int conv_t_forward(const float *x, const float *w, const float *b, float *out, int64_t N, int64_t ci,
                          const geom *g) {
    int64_t K = geom_rows(g), P = geom_cols(g), OHW = g->c * g->h * g->w;
    int nt = td_conv_threads(N);
    bool pw = is_pointwise(g);
    td_conv_scratch sc;
    if (td_conv_scratch_open(&sc, nt, pw ? 0 : K * P)) return -1;
    #pragma omp parallel for num_threads(nt) if (nt > 1) schedule(static)
    for (int64_t n = 0; n < N; n++) {
        const float *xn = x + n * ci * P;
        float *o = out + n * OHW;
        if (b) fill_bias(o, b, g->c, g->h * g->w);
        if (pw) {
            gemm(true, false, K, P, ci, w, xn, b ? 1.0f : 0.0f, o);
        } else {
            float *col = td_conv_scratch_mine(&sc);
            gemm(true, false, K, P, ci, w, xn, 0.0f, col);
            if (!b) memset(o, 0, (size_t)OHW * sizeof(float));
            col2im(col, P, 1, o, g, nt == 1);
        }
    }
    td_conv_scratch_close(&sc);
    return 0;
}

/* With gcol_n = im2col(gout_n) [K, h*w]: dx_n (+)= W gcol_n,
 * dw (+)= sum_n x_n gcol_n^T, db (+)= sums of gout over n and the image. */
static int conv_t_backward(const float *x, const float *w, const float *gout, float *dx, float *dw, float *db,
                           int64_t N, int64_t ci, const geom *g, float bx, float bw, float bb) {
    int64_t K = geom_rows(g), P = geom_cols(g), OHW = g->c * g->h * g->w;
    int nt = td_conv_threads(N);
    bool pw = is_pointwise(g);
    td_conv_scratch cols;
    td_conv_sum sw, sb;
    int rc = td_conv_scratch_open(&cols, nt, !pw && (dx || dw) ? K * P + im2col_work(g) : 0);
    rc |= td_conv_sum_open(&sw, dw, ci * K, bw, nt);
    rc |= td_conv_sum_open(&sb, db, g->c, bb, nt);
    #pragma omp parallel for num_threads(nt) if (nt > 1 && rc == 0) schedule(static)
    for (int64_t n = 0; n < N; n++) {
        if (rc) continue;
        const float *gc = gout + n * OHW;
        float beta;
        if (db) {
            float *d = td_conv_sum_slot(&sb, &beta);
            row_sums(gc, g->c, g->h * g->w, d, beta);
        }
        if (!dx && !dw) continue;
        if (!pw) {
            float *col = td_conv_scratch_mine(&cols);
            im2col(gc, 1, col, P, col + K * P, g, nt == 1);
            gc = col;
        }
        if (dx) gemm(false, false, ci, P, K, w, gc, bx, dx + n * ci * P);
        if (dw) {
            float *d = td_conv_sum_slot(&sw, &beta);
            gemm(false, true, ci, K, P, x + n * ci * P, gc, beta, d);
        }
    }
    td_conv_sum_close(&sw, rc == 0);
    td_conv_sum_close(&sb, rc == 0);
    td_conv_scratch_close(&cols);
    return rc ? -1 : 0;
}

/* db [co] (+)= sums of gout [N, co, P] over N and P. */
static void bias_grad(const float *gout, float *db, int64_t N, int64_t co, int64_t P, float beta) {
    #pragma omp parallel for if (N * co * P > TD_PAR_MIN)
    for (int64_t o = 0; o < co; o++) {
        double acc = 0.0;
        for (int64_t n = 0; n < N; n++) {
            const float *r = gout + (n * co + o) * P;
            float s = 0.0f;
            #pragma omp simd reduction(+ : s)
            for (int64_t j = 0; j < P; j++) s += r[j];
            acc += s;
        }
        db[o] = (float)acc + (beta == 0.0f ? 0.0f : db[o]);
    }
}

/* ---- few output channels at stride 1: direct loops on padded planes ----
 * With co <= DIRECT_MAX_CO the GEMMs of im2col are a few rows long, and
 * the column matrix (kh kw times the image) costs more than the products.
 * Instead the image is copied zero-padded, [c, hp, wp] (hp = h + 2p,
 * wp = w + 2p), and the output is computed "wide", [co, oh, wp] (its
 * columns past ow are junk): each tap (o, c, ki, kj) is then one
 * multiply-add of the padded plane shifted by ki wp + kj into the wide
 * output plane, one contiguous run of oh wp floats. Backward, the output
 * gradient goes wide with zeros in the junk columns, and the input and
 * weight gradients are the adjoint runs and dot products. */

#define DIRECT_MAX_CO 4

static bool use_direct(const geom *g, int64_t co) {
    return g->s == 1 && co <= DIRECT_MAX_CO && !is_pointwise(g) && g->c * g->kh * g->kw >= 16;
}

static int64_t direct_wp(const geom *g) { return g->w + 2 * g->p; }
static int64_t direct_plane(const geom *g) { return (g->h + 2 * g->p) * direct_wp(g) + g->kw; }
static int64_t direct_run(const geom *g) { return g->oh * direct_wp(g); }

/* pad [c, plane] = img [c, h, w] moved p rows and columns in, zeros around
 * (and in the kw floats of slack after each plane). */
static void direct_pad(const float *img, float *pad, const geom *g) {
    int64_t wp = direct_wp(g), pl = direct_plane(g);
    for (int64_t c = 0; c < g->c; c++) {
        float *d = pad + c * pl;
        for (int64_t i = 0; i < pl; i++) d[i] = 0.0f;
        for (int64_t y = 0; y < g->h; y++)
            for (int64_t x = 0; x < g->w; x++) d[(y + g->p) * wp + g->p + x] = img[(c * g->h + y) * g->w + x];
    }
}

/* y [n] += a x [n] */
static void axpy(float *restrict y, const float *restrict x, float a, int64_t n) {
    #pragma omp simd
    for (int64_t i = 0; i < n; i++) y[i] += a * x[i];
}

static float dot(const float *restrict x, const float *restrict y, int64_t n) {
    float s = 0.0f;
    #pragma omp simd reduction(+ : s)
    for (int64_t i = 0; i < n; i++) s += x[i] * y[i];
    return s;
}

/* out [co, oh, ow] = b + x (*) w for one image; work holds c plane + run
 * floats. */
static void direct_forward_image(const float *x, const float *w, const float *b, float *out, int64_t co,
                                 const geom *g, float *work) {
    int64_t wp = direct_wp(g), pl = direct_plane(g), L = direct_run(g);
    float *pad = work, *wide = work + g->c * pl;
    direct_pad(x, pad, g);
    for (int64_t o = 0; o < co; o++) {
        for (int64_t i = 0; i < L; i++) wide[i] = b ? b[o] : 0.0f;
        for (int64_t c = 0; c < g->c; c++)
            for (int64_t ki = 0; ki < g->kh; ki++)
                for (int64_t kj = 0; kj < g->kw; kj++)
                    axpy(wide, pad + c * pl + ki * wp + kj, w[((o * g->c + c) * g->kh + ki) * g->kw + kj], L);
        for (int64_t y = 0; y < g->oh; y++)
            for (int64_t x0 = 0; x0 < g->ow; x0++) out[(o * g->oh + y) * g->ow + x0] = wide[y * wp + x0];
    }
}

/* dx [c, h, w] (+)= the input gradient (add: +=) and dw [co, c, kh, kw] +=
 * the weight gradient of gout [co, oh, ow] for one image (either may be
 * NULL); work holds 2 c plane + co run floats. */
static void direct_backward_image(const float *x, const float *w, const float *gout, float *dx, bool add,
                                  float *dw, int64_t co, const geom *g, float *work) {
    int64_t wp = direct_wp(g), pl = direct_plane(g), L = direct_run(g), kk = g->kh * g->kw;
    float *pad = work, *dpad = pad + g->c * pl, *gw = dpad + g->c * pl;
    for (int64_t o = 0; o < co; o++)
        for (int64_t y = 0; y < g->oh; y++)
            for (int64_t x0 = 0; x0 < wp; x0++)
                gw[o * L + y * wp + x0] = x0 < g->ow ? gout[(o * g->oh + y) * g->ow + x0] : 0.0f;
    if (dw) direct_pad(x, pad, g);
    if (dx)
        for (int64_t i = 0; i < g->c * pl; i++) dpad[i] = 0.0f;
    for (int64_t o = 0; o < co; o++)
        for (int64_t c = 0; c < g->c; c++)
            for (int64_t k = 0; k < kk; k++) {
                int64_t shift = c * pl + k / g->kw * wp + k % g->kw, wi = (o * g->c + c) * kk + k;
                if (dx) axpy(dpad + shift, gw + o * L, w[wi], L);
                if (dw) dw[wi] += dot(pad + shift, gw + o * L, L);
            }
    if (!dx) return;
    for (int64_t c = 0; c < g->c; c++)
        for (int64_t y = 0; y < g->h; y++) {
            const float *src = dpad + c * pl + (y + g->p) * wp + g->p;
            float *d = dx + (c * g->h + y) * g->w;
            if (add)
                for (int64_t x0 = 0; x0 < g->w; x0++) d[x0] += src[x0];
            else
                for (int64_t x0 = 0; x0 < g->w; x0++) d[x0] = src[x0];
        }
}

static int direct_forward(const float *x, const float *w, const float *b, float *out, int64_t N, int64_t co,
                          const geom *g) {
    int64_t HW = g->c * g->h * g->w;
    int nt = td_conv_threads(N);
    td_conv_scratch sc;
    if (td_conv_scratch_open(&sc, nt, g->c * direct_plane(g) + direct_run(g))) return -1;
    #pragma omp parallel for num_threads(nt) if (nt > 1) schedule(static)
    for (int64_t n = 0; n < N; n++)
        direct_forward_image(x + n * HW, w, b, out + n * co * geom_cols(g), co, g, td_conv_scratch_mine(&sc));
    td_conv_scratch_close(&sc);
    return 0;
}

static void bias_grad(const float *gout, float *db, int64_t N, int64_t co, int64_t P, float beta);

static int direct_backward(const float *x, const float *w, const float *gout, float *dx, float *dw, float *db,
                           int64_t N, int64_t co, const geom *g, float bx, float bw, float bb) {
    int64_t HW = g->c * g->h * g->w, K = co * geom_rows(g), P = geom_cols(g);
    int nt = td_conv_threads(N);
    td_conv_scratch sc;
    td_conv_sum sw;
    int rc = td_conv_scratch_open(&sc, nt, 2 * g->c * direct_plane(g) + co * direct_run(g));
    rc |= td_conv_sum_open(&sw, dw, K, bw, nt);
    if (rc == 0 && db) bias_grad(gout, db, N, co, P, bb);
    #pragma omp parallel for num_threads(nt) if (nt > 1 && rc == 0) schedule(static)
    for (int64_t n = 0; n < N; n++) {
        if (rc) continue;
        float beta, *d = NULL;
        if (dw) {
            d = td_conv_sum_slot(&sw, &beta);
            if (beta == 0.0f) memset(d, 0, (size_t)K * sizeof(float));
        }
        direct_backward_image(x + n * HW, w, gout + n * co * P, dx ? dx + n * HW : NULL, bx != 0.0f, d, co, g,
                              td_conv_scratch_mine(&sc));
    }
    td_conv_sum_close(&sw, rc == 0);
    td_conv_scratch_close(&sc);
    return rc ? -1 : 0;
}

/* The backward through Winograd (the input gradient through im2col when
 * pad > 2, where the rotated convolution would need a negative pad). */
static int wino_backward(const float *x, const float *w, const float *gout, float *dx, float *dw, float *db,
                         int64_t N, int64_t co, const geom *g, float bx, float bw, float bb) {
    int rc = 0;
    if (db) bias_grad(gout, db, N, co, g->oh * g->ow, bb);
    if (dw) rc = td_wino_weight_grad(x, gout, dw, bw, N, g->c, g->h, g->w, co, g->p);
    if (rc == 0 && dx && g->p > 2) return conv2d_backward(x, w, gout, dx, NULL, NULL, N, co, g, bx, 0.0f, 0.0f, NULL);
    if (rc == 0 && dx) rc = td_wino_input_grad(gout, w, dx, bx, N, g->c, g->h, g->w, co, g->p);
    return rc;
}

/* ---- reference: the direct loops ---- */

/* out [N, co, oh, ow] = b + sum over c, ki, kj of x[n, c, iy, ix] w[o, c, ki, kj]. */
static void conv2d_ref(const float *x, const float *w, const float *b, float *out, int64_t N, int64_t co,
                       const geom *g) {
    for (int64_t n = 0; n < N; n++)
        for (int64_t o = 0; o < co; o++)
            for (int64_t oy = 0; oy < g->oh; oy++)
                for (int64_t ox = 0; ox < g->ow; ox++) {
                    double acc = b ? b[o] : 0.0;
                    for (int64_t c = 0; c < g->c; c++)
                        for (int64_t ki = 0; ki < g->kh; ki++)
                            for (int64_t kj = 0; kj < g->kw; kj++) {
                                int64_t iy = oy * g->s - g->p + ki, ix = ox * g->s - g->p + kj;
                                if (iy < 0 || iy >= g->h || ix < 0 || ix >= g->w) continue;
                                acc += (double)x[((n * g->c + c) * g->h + iy) * g->w + ix] *
                                       w[((o * g->c + c) * g->kh + ki) * g->kw + kj];
                            }
                    out[((n * co + o) * g->oh + oy) * g->ow + ox] = (float)acc;
                }
}

/* dx, dw, db += the gradients for gout [N, co, oh, ow] (each may be NULL). */
static void conv2d_ref_backward(const float *x, const float *w, const float *gout, float *dx, float *dw,
                                float *db, int64_t N, int64_t co, const geom *g) {
    for (int64_t n = 0; n < N; n++)
        for (int64_t o = 0; o < co; o++)
            for (int64_t oy = 0; oy < g->oh; oy++)
                for (int64_t ox = 0; ox < g->ow; ox++) {
                    float gv = gout[((n * co + o) * g->oh + oy) * g->ow + ox];
                    if (db) db[o] += gv;
                    for (int64_t c = 0; c < g->c; c++)
                        for (int64_t ki = 0; ki < g->kh; ki++)
                            for (int64_t kj = 0; kj < g->kw; kj++) {
                                int64_t iy = oy * g->s - g->p + ki, ix = ox * g->s - g->p + kj;
                                if (iy < 0 || iy >= g->h || ix < 0 || ix >= g->w) continue;
                                int64_t xi = ((n * g->c + c) * g->h + iy) * g->w + ix;
                                int64_t wi = ((o * g->c + c) * g->kh + ki) * g->kw + kj;
                                if (dx) dx[xi] += w[wi] * gv;
                                if (dw) dw[wi] += x[xi] * gv;
                            }
                }
}

/* Transposed: every x[n, c, iy, ix] adds x w[c, o, ki, kj] to
 * out[n, o, iy*s - p + ki, ix*s - p + kj]; g describes the output image. */
static void conv_t_ref(const float *x, const float *w, const float *b, float *out, int64_t N, int64_t ci,
                       const geom *g) {
    int64_t co = g->c, OHW = g->h * g->w;
    for (int64_t n = 0; n < N; n++)
        for (int64_t o = 0; o < co; o++)
            for (int64_t i = 0; i < OHW; i++) out[(n * co + o) * OHW + i] = b ? b[o] : 0.0f;
    for (int64_t n = 0; n < N; n++)
        for (int64_t c = 0; c < ci; c++)
            for (int64_t iy = 0; iy < g->oh; iy++)
                for (int64_t ix = 0; ix < g->ow; ix++) {
                    float xv = x[((n * ci + c) * g->oh + iy) * g->ow + ix];
                    for (int64_t o = 0; o < co; o++)
                        for (int64_t ki = 0; ki < g->kh; ki++)
                            for (int64_t kj = 0; kj < g->kw; kj++) {
                                int64_t y = iy * g->s - g->p + ki, xx = ix * g->s - g->p + kj;
                                if (y < 0 || y >= g->h || xx < 0 || xx >= g->w) continue;
                                out[((n * co + o) * g->h + y) * g->w + xx] +=
                                    xv * w[((c * co + o) * g->kh + ki) * g->kw + kj];
                            }
                }
}

static void conv_t_ref_backward(const float *x, const float *w, const float *gout, float *dx, float *dw,
                                float *db, int64_t N, int64_t ci, const geom *g) {
    int64_t co = g->c;
    for (int64_t n = 0; n < N; n++)
        for (int64_t o = 0; db && o < co; o++)
            for (int64_t i = 0; i < g->h * g->w; i++) db[o] += gout[(n * co + o) * g->h * g->w + i];
    for (int64_t n = 0; n < N; n++)
        for (int64_t c = 0; c < ci; c++)
            for (int64_t iy = 0; iy < g->oh; iy++)
                for (int64_t ix = 0; ix < g->ow; ix++) {
                    int64_t xi = ((n * ci + c) * g->oh + iy) * g->ow + ix;
                    for (int64_t o = 0; o < co; o++)
                        for (int64_t ki = 0; ki < g->kh; ki++)
                            for (int64_t kj = 0; kj < g->kw; kj++) {
                                int64_t y = iy * g->s - g->p + ki, xx = ix * g->s - g->p + kj;
                                if (y < 0 || y >= g->h || xx < 0 || xx >= g->w) continue;
                                float gv = gout[((n * co + o) * g->h + y) * g->w + xx];
                                int64_t wi = ((c * co + o) * g->kh + ki) * g->kw + kj;
                                if (dx) dx[xi] += w[wi] * gv;
                                if (dw) dw[wi] += x[xi] * gv;
                            }
                }
}

/* ---- the ops ---- */

/* A contiguous copy of t, recorded nowhere; or t itself, retained. */
static td_tensor *dense(td_tensor *t) {
    if (td_is_contiguous(t)) {
        td_retain(t);
        return t;
    }
    td_tensor *c = td_new(t->ndim, t->shape);
    if (c && td_copy_(c, t)) {
        td_release(c);
        return NULL;
    }
    return c;
}

/* Checks the arguments shared by both ops: 4-D x and w, bias [nb], stride, pad. */
static int conv_check(const char *op, const td_tensor *x, const td_tensor *w, const td_tensor *b, int64_t nb,
                      int stride, int pad) {
    char sx[TD_SHAPE_BUF], sw[TD_SHAPE_BUF], sb[TD_SHAPE_BUF];
    if (!x || !w) return td_failc("%s: NULL tensor", op);
    if (x->ndim != 4 || w->ndim != 4)
        return td_failc("%s: x %s and weight %s must both be 4-D (NCHW)", op, td_shape_str(x, sx),
                        td_shape_str(w, sw));
    if (stride < 1 || pad < 0)
        return td_failc("%s: x %s, weight %s: stride %d must be >= 1 and pad %d >= 0", op, td_shape_str(x, sx),
                        td_shape_str(w, sw), stride, pad);
    if (w->shape[0] == 0 || w->shape[1] == 0 || w->shape[2] == 0 || w->shape[3] == 0)
        return td_failc("%s: weight %s has an empty dim", op, td_shape_str(w, sw));
    if (b && (b->ndim != 1 || b->shape[0] != nb))
        return td_failc("%s: weight %s, bias %s: bias must be [%lld]", op, td_shape_str(w, sw),
                        td_shape_str(b, sb), (long long)nb);
    return 0;
}

/* Records the node: inputs x, w, b, the dense copies used, the params. */
static void conv_record(td_op op, td_tensor *out, td_tensor *x, td_tensor *w, td_tensor *b, td_tensor *xd,
                        td_tensor *wd, int stride, int pad, int output_pad) {
    td_tensor *ins[3] = {x, w, b};
    td_node *node = td_record(op, out, 3, ins);
    if (!node) return;
    if (xd != x) td_save(node, 0, xd);
    if (wd != w) td_save(node, 1, wd);
    node->ip[0] = stride;
    node->ip[1] = pad;
    node->ip[2] = output_pad;
    node->ip[3] = use_reference;
}

/* A contiguous bias (NULL stays NULL); *bd is the tensor to release. */
static const float *bias_data(td_tensor *b, td_tensor **bd) {
    *bd = b ? dense(b) : NULL;
    return *bd ? (*bd)->data : NULL;
}

td_tensor *td_conv2d(td_tensor *x, td_tensor *w, td_tensor *b, int stride, int pad) {
    char sx[TD_SHAPE_BUF], sw[TD_SHAPE_BUF];
    if (conv_check("conv2d", x, w, b, w ? w->shape[0] : 0, stride, pad)) return NULL;
    if (x->shape[1] != w->shape[1])
        return td_fail("conv2d: x %s, weight %s: x has %lld channels, the weight expects %lld",
                       td_shape_str(x, sx), td_shape_str(w, sw), (long long)x->shape[1], (long long)w->shape[1]);
    geom g = {x->shape[1], x->shape[2], x->shape[3], w->shape[2], w->shape[3], stride, pad, 0, 0};
    if (g.h + 2 * pad < g.kh || g.w + 2 * pad < g.kw)
        return td_fail("conv2d: x %s, weight %s: the %lldx%lld kernel is larger than the padded input %lldx%lld",
                       td_shape_str(x, sx), td_shape_str(w, sw), (long long)g.kh, (long long)g.kw,
                       (long long)(g.h + 2 * pad), (long long)(g.w + 2 * pad));
    g.oh = (g.h + 2 * pad - g.kh) / stride + 1;
    g.ow = (g.w + 2 * pad - g.kw) / stride + 1;
    int64_t N = x->shape[0], co = w->shape[0];
    td_tensor *xd = dense(x), *wd = xd ? dense(w) : NULL, *bd = NULL;
    const float *bp = wd ? bias_data(b, &bd) : NULL;
    td_tensor *out = (wd && (!b || bd)) ? td_new(4, (int64_t[]){N, co, g.oh, g.ow}) : NULL;
    td_tensor *cols = NULL;
    if (out) {
        int rc = 0;
        if (use_reference) conv2d_ref(xd->data, wd->data, bp, out->data, N, co, &g);
        else if (td_wino_applies(g.kh, g.kw, g.s, g.c, co))
            rc = td_wino_forward(xd->data, wd->data, bp, out->data, N, g.c, g.h, g.w, co, g.p);
        else if (use_direct(&g, co)) rc = direct_forward(xd->data, wd->data, bp, out->data, N, co, &g);
        else {
            int64_t nk = td_grad_enabled() && w->requires_grad ? kept_cols_size(&g, N) : 0;
            if (nk > 0 && !(cols = td_new(1, (int64_t[]){nk}))) rc = -1;
            else rc = conv2d_forward(xd->data, wd->data, bp, out->data, N, co, &g, cols ? cols->data : NULL);
        }
        if (rc) {
            td_release(out);
            out = NULL;
        } else {
            conv_record(TD_OP_CONV2D, out, x, w, b, xd, wd, stride, pad, 0);
            if (cols && out->node) td_save(out->node, 2, cols);
        }
    }
    td_release(cols);
    td_release(xd);
    td_release(wd);
    td_release(bd);
    return out;
}

td_tensor *td_conv_transpose2d(td_tensor *x, td_tensor *w, td_tensor *b, int stride, int pad, int output_pad) {
    char sx[TD_SHAPE_BUF], sw[TD_SHAPE_BUF];
    if (conv_check("conv_transpose2d", x, w, b, w ? w->shape[1] : 0, stride, pad)) return NULL;
    if (x->shape[1] != w->shape[0])
        return td_fail("conv_transpose2d: x %s, weight %s: x has %lld channels, the weight expects %lld",
                       td_shape_str(x, sx), td_shape_str(w, sw), (long long)x->shape[1], (long long)w->shape[0]);
    if (output_pad < 0 || output_pad >= stride)
        return td_fail("conv_transpose2d: x %s, weight %s: output_pad %d must be in [0, stride %d)",
                       td_shape_str(x, sx), td_shape_str(w, sw), output_pad, stride);
    int64_t N = x->shape[0], ci = x->shape[1], co = w->shape[1];
    int64_t oh = (x->shape[2] - 1) * stride - 2 * pad + w->shape[2] + output_pad;
    int64_t ow = (x->shape[3] - 1) * stride - 2 * pad + w->shape[3] + output_pad;
    if (oh < 1 || ow < 1 || x->shape[2] < 1 || x->shape[3] < 1)
        return td_fail("conv_transpose2d: x %s, weight %s, stride %d, pad %d: the output would be %lldx%lld",
                       td_shape_str(x, sx), td_shape_str(w, sw), stride, pad, (long long)oh, (long long)ow);
    geom g = {co, oh, ow, w->shape[2], w->shape[3], stride, pad, x->shape[2], x->shape[3]};
    td_tensor *xd = dense(x), *wd = xd ? dense(w) : NULL, *bd = NULL;
    const float *bp = wd ? bias_data(b, &bd) : NULL;
    td_tensor *out = (wd && (!b || bd)) ? td_new(4, (int64_t[]){N, co, oh, ow}) : NULL;
    if (out) {
        int rc = 0;
        if (use_reference) conv_t_ref(xd->data, wd->data, bp, out->data, N, ci, &g);
        else rc = conv_t_forward(xd->data, wd->data, bp, out->data, N, ci, &g);
        if (rc) {
            td_release(out);
            out = NULL;
        } else {
            conv_record(TD_OP_CONV_TRANSPOSE2D, out, x, w, b, xd, wd, stride, pad, output_pad);
        }
    }
    td_release(xd);
    td_release(wd);
    td_release(bd);
    return out;
}

static bool wants(td_node *n, int i) { return n->in[i] && n->in[i]->requires_grad; }

/* Gradient destinations of x, w, b (NULL where not wanted). */
typedef struct {
    td_tensor *t[3];
    float beta[3];
    bool direct[3];
} grads;

static int grads_open(td_node *n, grads *gr) {
    *gr = (grads){0};
    for (int i = 0; i < 3; i++) {
        if (wants(n, i) && !(gr->t[i] = td_grad_dest(n, i, &gr->beta[i], &gr->direct[i]))) return -1;
    }
    return 0;
}

/* Zeroes the destinations that the reference kernels add into. */
static void grads_zero(grads *gr) {
    for (int i = 0; i < 3; i++)
        if (gr->t[i] && gr->beta[i] == 0.0f) td_fill(gr->t[i], 0.0f);
}

static int grads_close(td_node *n, grads *gr, int rc) {
    for (int i = 0; i < 3; i++) {
        if (gr->t[i] && rc == 0 && !gr->direct[i]) rc = td_accumulate(n, i, gr->t[i]);
        td_release(gr->t[i]);
    }
    return rc;
}

static float *gdata(grads *gr, int i) { return gr->t[i] ? gr->t[i]->data : NULL; }

int td_bw_conv2d(td_node *n, td_tensor *gout) {
    td_tensor *x = n->saved[0] ? n->saved[0] : n->in[0];
    td_tensor *w = n->saved[1] ? n->saved[1] : n->in[1];
    geom g = {x->shape[1], x->shape[2], x->shape[3], w->shape[2], w->shape[3], n->ip[0], n->ip[1],
              n->shape[2], n->shape[3]};
    int64_t N = x->shape[0], co = w->shape[0];
    td_tensor *gd = dense(gout);
    grads gr;
    int rc = gd ? grads_open(n, &gr) : -1;
    if (rc == 0 && n->ip[3]) {
        grads_zero(&gr);
        conv2d_ref_backward(x->data, w->data, gd->data, gdata(&gr, 0), gdata(&gr, 1), gdata(&gr, 2), N, co, &g);
    } else if (rc == 0) {
        float *dx = gdata(&gr, 0), *dw = gdata(&gr, 1), *db = gdata(&gr, 2);
        if (td_wino_applies(g.kh, g.kw, g.s, g.c, co))
            rc = wino_backward(x->data, w->data, gd->data, dx, dw, db, N, co, &g, gr.beta[0], gr.beta[1], gr.beta[2]);
        else if (use_direct(&g, co))
            rc = direct_backward(x->data, w->data, gd->data, dx, dw, db, N, co, &g, gr.beta[0], gr.beta[1],
                                 gr.beta[2]);
        else
            rc = conv2d_backward(x->data, w->data, gd->data, dx, dw, db, N, co, &g, gr.beta[0], gr.beta[1],
                                 gr.beta[2], n->saved[2] ? n->saved[2]->data : NULL);
    }
    if (gd) rc = grads_close(n, &gr, rc);
    td_release(gd);
    return rc;
}

int td_bw_conv_transpose2d(td_node *n, td_tensor *gout) {
    td_tensor *x = n->saved[0] ? n->saved[0] : n->in[0];
    td_tensor *w = n->saved[1] ? n->saved[1] : n->in[1];
    geom g = {w->shape[1], n->shape[2], n->shape[3], w->shape[2], w->shape[3], n->ip[0], n->ip[1],
              x->shape[2], x->shape[3]};
    int64_t N = x->shape[0], ci = x->shape[1];
    td_tensor *gd = dense(gout);
    grads gr;
    int rc = gd ? grads_open(n, &gr) : -1;
    if (rc == 0 && n->ip[3]) {
        grads_zero(&gr);
        conv_t_ref_backward(x->data, w->data, gd->data, gdata(&gr, 0), gdata(&gr, 1), gdata(&gr, 2), N, ci, &g);
    } else if (rc == 0) {
        rc = conv_t_backward(x->data, w->data, gd->data, gdata(&gr, 0), gdata(&gr, 1), gdata(&gr, 2), N, ci, &g,
                             gr.beta[0], gr.beta[1], gr.beta[2]);
    }
    if (gd) rc = grads_close(n, &gr, rc);
    td_release(gd);
    return rc;
}
