/* conv.c - conv2d and conv_transpose2d (NCHW, dilation 1, groups 1) with
 * PyTorch's weight layouts.
 *
 *  - im2col + sgemm per image, col2im for the backward. Images go to
 *    threads (one single-threaded sgemm each) when the batch can fill them,
 *    else images run in turn on threaded sgemm. Stride-1 "same" patches are
 *    shifted copies of the plane; strided ones read a phase-split copy.
 *  - A 1x1 stride-1 convolution reads the image as its own column matrix.
 *  - 3x3 stride-1 conv2d with >= 16 channels each way goes through
 *    Winograd F(2x2, 3x3): 2.25x fewer multiplications (forward, input and
 *    weight gradients).
 *
 * The direct loops (conv2d_ref*, conv_t_ref*) are the reference the fast
 * paths are tested against: td_conv_set_reference(1) makes the ops use them. */

/* Short copy and fill loops stay loops: GCC would otherwise turn each into
 * a memmove/memset call, once per output row of often 14 floats. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-tree-loop-distribute-patterns")
#endif
#include "internal.h"
#include <cblas.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

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

static int thread_id(void) {
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

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

/* col [c*kh*kw, oh*ow] = the patches of img [c, h, w]; work holds
 * im2col_work(g) floats. */
static void im2col(const float *img, float *col, float *work, const geom *g, bool par) {
    int64_t rows = geom_rows(g), P = geom_cols(g), plane = g->h * g->w;
    if (g->s > 1) {
        split_phases(img, work, g);
        img = work;
        plane = (g->h + 2 * g->p) * g->s * phase_width(g);
    }
    (void)par;
    (void)rows;
    #pragma omp parallel for if (par && rows * P > TD_PAR_MIN)
    for (int64_t c = 0; c < g->c; c++)
        for (int64_t ki = 0; ki < g->kh; ki++)
            for (int64_t kj = 0; kj < g->kw; kj++)
                im2col_row(img + c * plane, col + ((c * g->kh + ki) * g->kw + kj) * P, g, ki, kj);
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

/* img [c, h, w] += the patches in col [c*kh*kw, oh*ow] (im2col's adjoint);
 * col is scratch and may be changed. */
static void col2im(float *col, float *img, const geom *g, bool par) {
    int64_t P = geom_cols(g), kk = g->kh * g->kw;
    (void)par;
    (void)kk;
    #pragma omp parallel for if (par && g->c * kk * P > TD_PAR_MIN)
    for (int64_t c = 0; c < g->c; c++)
        for (int64_t ki = 0; ki < g->kh; ki++)
            for (int64_t kj = 0; kj < g->kw; kj++)
                col2im_row(col + ((c * g->kh + ki) * g->kw + kj) * P, img + c * g->h * g->w, g, ki, kj);
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

/* Row-major C [m, n] = A [m, k] (or A^T) x B [k, n] (or B^T) + beta C, with
 * leading dimensions lda, ldb, ldc. */
static void gemm_ld(bool ta, bool tb, int64_t m, int64_t n, int64_t k, const float *a, int64_t lda, const float *b,
                    int64_t ldb, float beta, float *c, int64_t ldc) {
    if (m == 0 || n == 0) return;
    if (k == 0) {
        for (int64_t i = 0; i < m; i++)
            for (int64_t j = 0; j < n; j++) c[i * ldc + j] = beta == 0.0f ? 0.0f : beta * c[i * ldc + j];
        return;
    }
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, (int)m, (int)n,
                (int)k, 1.0f, a, (int)lda, b, (int)ldb, beta, c, (int)ldc);
}

/* The same on contiguous matrices. */
static void gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, const float *a, const float *b, float beta,
                 float *c) {
    gemm_ld(ta, tb, m, n, k, a, ta ? m : k, b, tb ? k : n, beta, c, n);
}

/* Threads to spread images over: all of them when the batch fills them,
 * else 1 (images in turn, threaded sgemm inside). */
#define MAX_THREADS 64
static int image_threads(int64_t n) {
    int nt = td_get_num_threads();
    if (nt > MAX_THREADS) nt = MAX_THREADS;
    return n >= nt ? nt : 1;
}

/* A gradient summed over the images (weight or bias): with one thread the
 * images add straight into dst; with several, each thread sums into its own
 * partial and the partials are folded into dst at the end. */
typedef struct {
    float *dst, *part, beta;
    int64_t size;
    int nt;
    bool used[MAX_THREADS];
} image_sum;

static int image_sum_open(image_sum *a, float *dst, int64_t size, float beta, int nt) {
    *a = (image_sum){.dst = dst, .beta = beta, .size = size, .nt = dst ? nt : 1};
    if (a->nt == 1) return 0;
    a->part = td_alloc((size_t)(a->nt * size) * sizeof(float));
    return a->part ? 0 : -1;
}

/* Where the calling thread adds its next image, and with which beta. */
static float *image_sum_slot(image_sum *a, float *beta) {
    int t = a->nt == 1 ? 0 : thread_id();
    *beta = a->used[t] ? 1.0f : (a->nt == 1 ? a->beta : 0.0f);
    a->used[t] = true;
    return a->nt == 1 ? a->dst : a->part + t * a->size;
}

static void image_sum_close(image_sum *a, bool fold) {
    if (!a->part) return;
    if (fold) {
        #pragma omp parallel for if (a->size > TD_PAR_MIN)
        for (int64_t i = 0; i < a->size; i++) {
            float s = a->beta == 0.0f ? 0.0f : a->beta * a->dst[i];
            for (int t = 0; t < a->nt; t++)
                if (a->used[t]) s += a->part[t * a->size + i];
            a->dst[i] = s;
        }
    }
    td_free(a->part, (size_t)(a->nt * a->size) * sizeof(float));
}

/* Per-thread scratch: nt blocks of n floats (NULL when n is 0). */
typedef struct {
    float *p;
    int nt;
    int64_t n;
} scratch;

static int scratch_open(scratch *s, int nt, int64_t n) {
    *s = (scratch){.nt = nt, .n = n};
    if (n == 0) return 0;
    s->p = td_alloc((size_t)(nt * n) * sizeof(float));
    return s->p ? 0 : -1;
}

static float *scratch_mine(scratch *s) { return s->p ? s->p + thread_id() * s->n : NULL; }

static void scratch_close(scratch *s) {
    if (s->p) td_free(s->p, (size_t)(s->nt * s->n) * sizeof(float));
}

/* ---- conv2d kernels ----
 * x [N, c, h, w], w [co, c, kh, kw] = [co, K], b [co] or NULL,
 * out [N, co, oh, ow] = [N, co, P]; g is one image of x and its columns. */

static int conv2d_forward(const float *x, const float *w, const float *b, float *out, int64_t N, int64_t co,
                          const geom *g) {
    int64_t K = geom_rows(g), P = geom_cols(g), HW = g->c * g->h * g->w;
    int nt = image_threads(N);
    bool pw = is_pointwise(g);
    scratch sc;
    if (scratch_open(&sc, nt, pw ? 0 : K * P + im2col_work(g))) return -1;
    #pragma omp parallel for num_threads(nt) if (nt > 1) schedule(static)
    for (int64_t n = 0; n < N; n++) {
        const float *src = x + n * HW;
        float *o = out + n * co * P;
        if (!pw) {
            float *col = scratch_mine(&sc);
            im2col(src, col, col + K * P, g, nt == 1);
            src = col;
        }
        if (b) fill_bias(o, b, co, P);
        gemm(false, false, co, P, K, w, src, b ? 1.0f : 0.0f, o);
    }
    scratch_close(&sc);
    return 0;
}

/* dx, dw, db (+)= the gradients for gout [N, co, P] (each may be NULL; bx,
 * bw, bb: 0 overwrite, 1 add): dw = sum_n gout_n col_n^T,
 * dx_n = col2im(W^T gout_n), db = sums of gout over n and P. */
static int conv2d_backward(const float *x, const float *w, const float *gout, float *dx, float *dw, float *db,
                           int64_t N, int64_t co, const geom *g, float bx, float bw, float bb) {
    int64_t K = geom_rows(g), P = geom_cols(g), HW = g->c * g->h * g->w;
    int nt = image_threads(N);
    bool pw = is_pointwise(g);
    scratch cols, dcols;
    image_sum sw, sb;
    int rc = scratch_open(&cols, nt, !pw && dw ? K * P + im2col_work(g) : 0);
    rc |= scratch_open(&dcols, nt, !pw && dx ? K * P : 0);
    rc |= image_sum_open(&sw, dw, co * K, bw, nt);
    rc |= image_sum_open(&sb, db, co, bb, nt);
    #pragma omp parallel for num_threads(nt) if (nt > 1 && rc == 0) schedule(static)
    for (int64_t n = 0; n < N; n++) {
        if (rc) continue;
        const float *gn = gout + n * co * P, *xn = x + n * HW;
        float beta;
        if (db) {
            float *d = image_sum_slot(&sb, &beta);
            row_sums(gn, co, P, d, beta);
        }
        if (dw) {
            const float *src = xn;
            if (!pw) {
                float *col = scratch_mine(&cols);
                im2col(xn, col, col + K * P, g, nt == 1);
                src = col;
            }
            float *d = image_sum_slot(&sw, &beta);
            gemm(false, true, co, K, P, gn, src, beta, d);
        }
        if (dx) {
            float *dxn = dx + n * HW;
            if (pw) {
                gemm(true, false, K, P, co, w, gn, bx, dxn);
            } else {
                float *dc = scratch_mine(&dcols);
                gemm(true, false, K, P, co, w, gn, 0.0f, dc);
                if (bx == 0.0f) memset(dxn, 0, (size_t)HW * sizeof(float));
                col2im(dc, dxn, g, nt == 1);
            }
        }
    }
    image_sum_close(&sw, rc == 0);
    image_sum_close(&sb, rc == 0);
    scratch_close(&cols);
    scratch_close(&dcols);
    return rc ? -1 : 0;
}

/* ---- conv_transpose2d kernels ----
 * x [N, ci, h, w], w [ci, co, kh, kw] = [ci, K], b [co] or NULL,
 * out [N, co, OH, OW]. g is one image of the OUTPUT and its columns, which
 * have the size of x's image: col_n [K, h*w] = W^T x_n, out_n = col2im(col_n). */

static int conv_t_forward(const float *x, const float *w, const float *b, float *out, int64_t N, int64_t ci,
                          const geom *g) {
    int64_t K = geom_rows(g), P = geom_cols(g), OHW = g->c * g->h * g->w;
    int nt = image_threads(N);
    bool pw = is_pointwise(g);
    scratch sc;
    if (scratch_open(&sc, nt, pw ? 0 : K * P)) return -1;
    #pragma omp parallel for num_threads(nt) if (nt > 1) schedule(static)
    for (int64_t n = 0; n < N; n++) {
        const float *xn = x + n * ci * P;
        float *o = out + n * OHW;
        if (b) fill_bias(o, b, g->c, g->h * g->w);
        if (pw) {
            gemm(true, false, K, P, ci, w, xn, b ? 1.0f : 0.0f, o);
        } else {
            float *col = scratch_mine(&sc);
            gemm(true, false, K, P, ci, w, xn, 0.0f, col);
            if (!b) memset(o, 0, (size_t)OHW * sizeof(float));
            col2im(col, o, g, nt == 1);
        }
    }
    scratch_close(&sc);
    return 0;
}

/* With gcol_n = im2col(gout_n) [K, h*w]: dx_n (+)= W gcol_n,
 * dw (+)= sum_n x_n gcol_n^T, db (+)= sums of gout over n and the image. */
static int conv_t_backward(const float *x, const float *w, const float *gout, float *dx, float *dw, float *db,
                           int64_t N, int64_t ci, const geom *g, float bx, float bw, float bb) {
    int64_t K = geom_rows(g), P = geom_cols(g), OHW = g->c * g->h * g->w;
    int nt = image_threads(N);
    bool pw = is_pointwise(g);
    scratch cols;
    image_sum sw, sb;
    int rc = scratch_open(&cols, nt, !pw && (dx || dw) ? K * P + im2col_work(g) : 0);
    rc |= image_sum_open(&sw, dw, ci * K, bw, nt);
    rc |= image_sum_open(&sb, db, g->c, bb, nt);
    #pragma omp parallel for num_threads(nt) if (nt > 1 && rc == 0) schedule(static)
    for (int64_t n = 0; n < N; n++) {
        if (rc) continue;
        const float *gc = gout + n * OHW;
        float beta;
        if (db) {
            float *d = image_sum_slot(&sb, &beta);
            row_sums(gc, g->c, g->h * g->w, d, beta);
        }
        if (!dx && !dw) continue;
        if (!pw) {
            float *col = scratch_mine(&cols);
            im2col(gc, col, col + K * P, g, nt == 1);
            gc = col;
        }
        if (dx) gemm(false, false, ci, P, K, w, gc, bx, dx + n * ci * P);
        if (dw) {
            float *d = image_sum_slot(&sw, &beta);
            gemm(false, true, ci, K, P, x + n * ci * P, gc, beta, d);
        }
    }
    image_sum_close(&sw, rc == 0);
    image_sum_close(&sb, rc == 0);
    scratch_close(&cols);
    return rc ? -1 : 0;
}

/* ---- Winograd F(2x2, 3x3) for 3x3 stride-1 conv2d ----
 * Each 2x2 output tile is A^T [(G w G^T) . (B^T d B)] A of its 4x4 input
 * tile d (Lavin and Gray, 2016): 16 products per tile and channel pair
 * instead of 36, done as 16 GEMMs [co, ci] x [ci, tiles]. The weight
 * gradient is G^T [sum over tiles of (A g A^T) . (B^T d B)] G, 16 GEMMs with
 * the tiles as inner dim; the input gradient is the same convolution of
 * gout with the weights rotated by 180 degrees and transposed, padded 2 - p.
 * Images go in chunks of about WINO_TILES tiles, a chunk per thread. */

#define WINO_TILES 196

typedef struct {
    int64_t c, h, w, p;     /* input image [c, h, w], zero padding p */
    int64_t oh, ow, th, tw; /* output size, tiles th x tw */
    int64_t lanes;          /* tw rounded up to 8: the transforms run whole
                               vectors along a tile row, and write past its end
                               into the next row (rewritten later) or slack */
} wino;

static wino wino_geom(int64_t c, int64_t h, int64_t w, int64_t p) {
    wino g = {c, h, w, p, h + 2 * p - 2, w + 2 * p - 2, 0, 0, 0};
    g.th = (g.oh + 1) / 2;
    g.tw = (g.ow + 1) / 2;
    g.lanes = (g.tw + 7) / 8 * 8;
    return g;
}

/* Worth it when the GEMMs dominate the transforms. */
static bool use_winograd(const geom *g, int64_t co) {
    return g->kh == 3 && g->kw == 3 && g->s == 1 && g->c >= 16 && co >= 16;
}

/* pad [c, hp, wp] = img [c, h, w] moved p rows and columns in, zeros
 * around (hp >= h + p, wp >= w + p). The transforms read tiles from it
 * without bounds checks. */
static void wino_pad(const float *restrict img, int64_t c, int64_t h, int64_t w, int64_t p, int64_t hp,
                     int64_t wp, float *restrict pad) {
    for (int64_t k = 0; k < c; k++)
        for (int64_t y = 0; y < hp; y++) {
            float *d = pad + (k * hp + y) * wp;
            if (y < p || y >= p + h) {
                for (int64_t x = 0; x < wp; x++) d[x] = 0.0f;
                continue;
            }
            const float *src = img + (k * h + y - p) * w;
            for (int64_t x = 0; x < p; x++) d[x] = 0.0f;
            for (int64_t x = 0; x < w; x++) d[p + x] = src[x];
            for (int64_t x = p + w; x < wp; x++) d[x] = 0.0f;
        }
}

/* Padded input planes: 2 th + 2 rows of 2 lanes + 2 (every tile's 4x4). */
static int64_t wino_in_rows(const wino *g) { return 2 * g->th + 2; }
static int64_t wino_in_cols(const wino *g) { return 2 * g->lanes + 2; }

/* V[xi][c][col0 + t] = (B^T d B)[xi] for the 4x4 tiles d (zero outside) of
 * img [c, h, w], t = ty * tw + tx; the 16 planes of V are [c, ld]. work
 * holds c * wino_in_rows * wino_in_cols floats. */
static void wino_input(const float *img, float *V, int64_t ld, int64_t col0, const wino *g, float *work) {
    int64_t cs = g->c * ld, hp = wino_in_rows(g), wp = wino_in_cols(g);
    wino_pad(img, g->c, g->h, g->w, g->p, hp, wp, work);
    for (int64_t c = 0; c < g->c; c++)
        for (int64_t ty = 0; ty < g->th; ty++)
            for (int64_t tx0 = 0; tx0 < g->lanes; tx0 += 8) {
                const float *src = work + (c * hp + 2 * ty) * wp + 2 * tx0;
                float r[16][8];
                #pragma omp simd
                for (int l = 0; l < 8; l++) {
                    float d[4][4], t[4][4];
                    for (int i = 0; i < 4; i++)
                        for (int j = 0; j < 4; j++) d[i][j] = src[i * wp + 2 * l + j];
                    for (int j = 0; j < 4; j++) {
                        t[0][j] = d[0][j] - d[2][j];
                        t[1][j] = d[1][j] + d[2][j];
                        t[2][j] = d[2][j] - d[1][j];
                        t[3][j] = d[1][j] - d[3][j];
                    }
                    for (int i = 0; i < 4; i++) {
                        r[4 * i + 0][l] = t[i][0] - t[i][2];
                        r[4 * i + 1][l] = t[i][1] + t[i][2];
                        r[4 * i + 2][l] = t[i][2] - t[i][1];
                        r[4 * i + 3][l] = t[i][1] - t[i][3];
                    }
                }
                float *q = V + c * ld + col0 + ty * g->tw + tx0;
                for (int k = 0; k < 16; k++, q += cs) memcpy(q, r[k], sizeof r[k]);
            }
}

/* out [co, oh, ow] = (or += when add) A^T m A + bias for the tiles m in
 * M[xi][o][col0 + t]; the 16 planes of M are [co, ld]. work holds 4 lanes
 * floats. */
static void wino_output(const float *M, int64_t ld, int64_t col0, float *out, const float *bias, int64_t co,
                        const wino *g, bool add, float *work) {
    int64_t cs = co * ld, tw = g->lanes;
    float *Y = work; /* [4][lanes]: y00, y01, y10, y11 */
    for (int64_t o = 0; o < co; o++)
        for (int64_t ty = 0; ty < g->th; ty++) {
            float b = bias ? bias[o] : 0.0f;
            for (int64_t tx0 = 0; tx0 < tw; tx0 += 8) {
                float m[16][8];
                const float *q = M + o * ld + col0 + ty * g->tw + tx0;
                for (int k = 0; k < 16; k++, q += cs) memcpy(m[k], q, sizeof m[k]);
                #pragma omp simd
                for (int l = 0; l < 8; l++) {
                    float t[2][4];
                    for (int j = 0; j < 4; j++) {
                        t[0][j] = m[j][l] + m[4 + j][l] + m[8 + j][l];
                        t[1][j] = m[4 + j][l] - m[8 + j][l] - m[12 + j][l];
                    }
                    Y[tx0 + l] = t[0][0] + t[0][1] + t[0][2] + b;
                    Y[tw + tx0 + l] = t[0][1] - t[0][2] - t[0][3] + b;
                    Y[2 * tw + tx0 + l] = t[1][0] + t[1][1] + t[1][2] + b;
                    Y[3 * tw + tx0 + l] = t[1][1] - t[1][2] - t[1][3] + b;
                }
            }
            for (int i = 0; i < 2 && 2 * ty + i < g->oh; i++) {
                float *dst = out + (o * g->oh + 2 * ty + i) * g->ow;
                const float *y0 = Y + 2 * i * tw, *y1 = y0 + tw;
                int64_t pairs = g->ow / 2;
                if (add)
                    for (int64_t tx = 0; tx < pairs; tx++) {
                        dst[2 * tx] += y0[tx];
                        dst[2 * tx + 1] += y1[tx];
                    }
                else
                    for (int64_t tx = 0; tx < pairs; tx++) {
                        dst[2 * tx] = y0[tx];
                        dst[2 * tx + 1] = y1[tx];
                    }
                if (g->ow % 2) dst[g->ow - 1] = (add ? dst[g->ow - 1] : 0.0f) + y0[pairs];
            }
        }
}

/* Gh[xi][o][col0 + t] = (A g A^T)[xi] for the 2x2 tiles g (zero outside) of
 * gout [co, oh, ow]; the 16 planes of Gh are [co, ld]. work holds
 * co * 2 th * 2 lanes floats. */
static void wino_grad_tiles(const float *gout, float *Gh, int64_t ld, int64_t col0, int64_t co, const wino *g,
                            float *work) {
    int64_t cs = co * ld, hp = 2 * g->th, wp = 2 * g->lanes;
    wino_pad(gout, co, g->oh, g->ow, 0, hp, wp, work);
    for (int64_t o = 0; o < co; o++)
        for (int64_t ty = 0; ty < g->th; ty++)
            for (int64_t tx0 = 0; tx0 < g->lanes; tx0 += 8) {
                const float *src = work + (o * hp + 2 * ty) * wp + 2 * tx0;
                float r[16][8];
                #pragma omp simd
                for (int l = 0; l < 8; l++) {
                    float v[2][2] = {{src[2 * l], src[2 * l + 1]}, {src[wp + 2 * l], src[wp + 2 * l + 1]}}, t[4][2];
                    for (int j = 0; j < 2; j++) {
                        t[0][j] = v[0][j];
                        t[1][j] = v[0][j] + v[1][j];
                        t[2][j] = v[0][j] - v[1][j];
                        t[3][j] = -v[1][j];
                    }
                    for (int i = 0; i < 4; i++) {
                        r[4 * i + 0][l] = t[i][0];
                        r[4 * i + 1][l] = t[i][0] + t[i][1];
                        r[4 * i + 2][l] = t[i][0] - t[i][1];
                        r[4 * i + 3][l] = -t[i][1];
                    }
                }
                float *q = Gh + o * ld + col0 + ty * g->tw + tx0;
                for (int k = 0; k < 16; k++, q += cs) memcpy(q, r[k], sizeof r[k]);
            }
}

/* U[xi] = G k G^T for every kernel k of w [co, ci, 3, 3]: U [16, co, ci];
 * rotated: k = w[o][c] turned by 180 degrees, stored as U [16, ci, co]
 * (the weights of the input gradient). */
static void wino_weights(const float *w, float *U, int64_t co, int64_t ci, bool rotated) {
    #pragma omp parallel for if (co * ci * 16 > TD_PAR_MIN)
    for (int64_t o = 0; o < co; o++)
        for (int64_t c = 0; c < ci; c++) {
            const float *k = w + (o * ci + c) * 9;
            float g[3][3], t[4][3];
            for (int i = 0; i < 3; i++)
                for (int j = 0; j < 3; j++) g[i][j] = rotated ? k[(2 - i) * 3 + 2 - j] : k[i * 3 + j];
            for (int j = 0; j < 3; j++) {
                t[0][j] = g[0][j];
                t[1][j] = 0.5f * (g[0][j] + g[1][j] + g[2][j]);
                t[2][j] = 0.5f * (g[0][j] - g[1][j] + g[2][j]);
                t[3][j] = g[2][j];
            }
            float *u = U + (rotated ? c * co + o : o * ci + c);
            int64_t cs = co * ci;
            for (int i = 0; i < 4; i++) {
                u[(4 * i + 0) * cs] = t[i][0];
                u[(4 * i + 1) * cs] = 0.5f * (t[i][0] + t[i][1] + t[i][2]);
                u[(4 * i + 2) * cs] = 0.5f * (t[i][0] - t[i][1] + t[i][2]);
                u[(4 * i + 3) * cs] = t[i][2];
            }
        }
}

/* dw [co, ci, 3, 3] = beta dw + G^T z G for the 4x4 sums z in Z [16, co, ci]. */
static void wino_weight_grad(const float *Z, float *dw, int64_t co, int64_t ci, float beta) {
    int64_t cs = co * ci;
    #pragma omp parallel for if (cs * 16 > TD_PAR_MIN)
    for (int64_t k = 0; k < cs; k++) {
        float t[3][4];
        for (int j = 0; j < 4; j++) {
            float z0 = Z[j * cs + k], z1 = Z[(4 + j) * cs + k], z2 = Z[(8 + j) * cs + k], z3 = Z[(12 + j) * cs + k];
            t[0][j] = z0 + 0.5f * (z1 + z2);
            t[1][j] = 0.5f * (z1 - z2);
            t[2][j] = 0.5f * (z1 + z2) + z3;
        }
        float *d = dw + k * 9;
        for (int i = 0; i < 3; i++) {
            float r[3] = {t[i][0] + 0.5f * (t[i][1] + t[i][2]), 0.5f * (t[i][1] - t[i][2]),
                          0.5f * (t[i][1] + t[i][2]) + t[i][3]};
            for (int j = 0; j < 3; j++) d[i * 3 + j] = (beta == 0.0f ? 0.0f : d[i * 3 + j]) + r[j];
        }
    }
}

/* Images per chunk: about WINO_TILES tiles, at least one image. */
static int64_t wino_chunk(const wino *g) {
    int64_t b = WINO_TILES / (g->th * g->tw);
    return b < 1 ? 1 : b;
}

/* out [N, co, oh, ow] = (or += when add) x [N, c, h, w] convolved with the
 * transformed weights U [16, co, c], plus bias (or NULL). */
static int wino_conv(const float *x, const float *U, const float *bias, float *out, int64_t N, int64_t co,
                     const wino *g, bool add) {
    int64_t ci = g->c, T = g->th * g->tw, B = wino_chunk(g), chunks = (N + B - 1) / B, ld = B * T + g->lanes;
    int64_t pad = ci * wino_in_rows(g) * wino_in_cols(g), rows = pad > 4 * g->lanes ? pad : 4 * g->lanes;
    int nt = image_threads(chunks);
    scratch sc;
    if (scratch_open(&sc, nt, 16 * (ci + co) * ld + rows)) return -1;
    #pragma omp parallel for num_threads(nt) if (nt > 1) schedule(static)
    for (int64_t k = 0; k < chunks; k++) {
        float *V = scratch_mine(&sc), *M = V + 16 * ci * ld, *work = M + 16 * co * ld;
        int64_t n0 = k * B, nb = N - n0 < B ? N - n0 : B;
        for (int64_t r = 0; r < 16 * co; r++) /* the lanes past the tiles read finite values */
            memset(M + r * ld + nb * T, 0, (size_t)(ld - nb * T) * sizeof(float));
        for (int64_t b = 0; b < nb; b++) wino_input(x + (n0 + b) * ci * g->h * g->w, V, ld, b * T, g, work);
        for (int xi = 0; xi < 16; xi++)
            gemm_ld(false, false, co, nb * T, ci, U + xi * co * ci, ci, V + xi * ci * ld, ld, 0.0f,
                    M + xi * co * ld, ld);
        for (int64_t b = 0; b < nb; b++)
            wino_output(M, ld, b * T, out + (n0 + b) * co * g->oh * g->ow, bias, co, g, add, work);
    }
    scratch_close(&sc);
    return 0;
}

/* dw (beta: 0 overwrite, 1 add) = the weight gradient of x [N, c, h, w] for
 * gout [N, co, oh, ow]. */
static int wino_weight_backward(const float *x, const float *gout, float *dw, float beta, int64_t N, int64_t co,
                                const wino *g) {
    int64_t ci = g->c, T = g->th * g->tw, B = wino_chunk(g), chunks = (N + B - 1) / B, ld = B * T + g->lanes;
    int64_t pin = ci * wino_in_rows(g) * wino_in_cols(g), pout = co * 4 * g->th * g->lanes;
    int64_t rows = pin > pout ? pin : pout;
    int nt = image_threads(chunks);
    scratch sc;
    image_sum sz;
    float *Z = td_alloc((size_t)(16 * co * ci) * sizeof(float));
    int rc = Z ? 0 : -1;
    rc |= scratch_open(&sc, nt, 16 * (ci + co) * ld + rows);
    rc |= image_sum_open(&sz, Z, 16 * co * ci, 0.0f, nt);
    #pragma omp parallel for num_threads(nt) if (nt > 1 && rc == 0) schedule(static)
    for (int64_t k = 0; k < chunks; k++) {
        if (rc) continue;
        float *V = scratch_mine(&sc), *Gh = V + 16 * ci * ld, *work = Gh + 16 * co * ld, zb;
        int64_t n0 = k * B, nb = N - n0 < B ? N - n0 : B;
        for (int64_t b = 0; b < nb; b++) {
            wino_input(x + (n0 + b) * ci * g->h * g->w, V, ld, b * T, g, work);
            wino_grad_tiles(gout + (n0 + b) * co * g->oh * g->ow, Gh, ld, b * T, co, g, work);
        }
        float *z = image_sum_slot(&sz, &zb);
        for (int xi = 0; xi < 16; xi++)
            gemm_ld(false, true, co, ci, nb * T, Gh + xi * co * ld, ld, V + xi * ci * ld, ld, zb,
                    z + xi * co * ci, ci);
    }
    image_sum_close(&sz, rc == 0);
    if (rc == 0) wino_weight_grad(Z, dw, co, ci, beta);
    scratch_close(&sc);
    if (Z) td_free(Z, (size_t)(16 * co * ci) * sizeof(float));
    return rc ? -1 : 0;
}

/* The forward through Winograd: out [N, co, oh, ow] for x, w [co, c, 3, 3]. */
static int wino_forward(const float *x, const float *w, const float *b, float *out, int64_t N, int64_t co,
                        const geom *g) {
    wino wg = wino_geom(g->c, g->h, g->w, g->p);
    float *U = td_alloc((size_t)(16 * co * g->c) * sizeof(float));
    if (!U) return -1;
    wino_weights(w, U, co, g->c, false);
    int rc = wino_conv(x, U, b, out, N, co, &wg, false);
    td_free(U, (size_t)(16 * co * g->c) * sizeof(float));
    return rc;
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

/* The backward through Winograd (the input gradient through im2col when
 * pad > 2, where the rotated convolution would need a negative pad). */
static int wino_backward(const float *x, const float *w, const float *gout, float *dx, float *dw, float *db,
                         int64_t N, int64_t co, const geom *g, float bx, float bw, float bb) {
    int64_t ci = g->c;
    int rc = 0;
    if (db) bias_grad(gout, db, N, co, g->oh * g->ow, bb);
    if (dw) {
        wino wg = wino_geom(ci, g->h, g->w, g->p);
        rc = wino_weight_backward(x, gout, dw, bw, N, co, &wg);
    }
    if (rc == 0 && dx && g->p > 2) return conv2d_backward(x, w, gout, dx, NULL, NULL, N, co, g, bx, 0.0f, 0.0f);
    if (rc == 0 && dx) {
        wino wg = wino_geom(co, g->oh, g->ow, 2 - g->p);
        float *U = td_alloc((size_t)(16 * co * ci) * sizeof(float));
        if (!U) return -1;
        wino_weights(w, U, co, ci, true);
        rc = wino_conv(gout, U, NULL, dx, N, ci, &wg, bx != 0.0f);
        td_free(U, (size_t)(16 * co * ci) * sizeof(float));
    }
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
    if (out) {
        int rc = 0;
        if (use_reference) conv2d_ref(xd->data, wd->data, bp, out->data, N, co, &g);
        else if (use_winograd(&g, co)) rc = wino_forward(xd->data, wd->data, bp, out->data, N, co, &g);
        else rc = conv2d_forward(xd->data, wd->data, bp, out->data, N, co, &g);
        if (rc) {
            td_release(out);
            out = NULL;
        } else {
            conv_record(TD_OP_CONV2D, out, x, w, b, xd, wd, stride, pad, 0);
        }
    }
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
        rc = (use_winograd(&g, co) ? wino_backward : conv2d_backward)(
            x->data, w->data, gd->data, gdata(&gr, 0), gdata(&gr, 1), gdata(&gr, 2), N, co, &g, gr.beta[0],
            gr.beta[1], gr.beta[2]);
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
