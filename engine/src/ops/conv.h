/* conv.h - what conv.c (the ops, im2col + GEMM, direct loops) and
 * conv_winograd.c (Winograd F(2x2, 3x3)) share: a GEMM with leading
 * dimensions, spreading images over threads, per-thread scratch, gradients
 * summed over images, and the Winograd entry points. */
#ifndef TIDE_CONV_H
#define TIDE_CONV_H
#include "internal.h"
#include <cblas.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#define TD_CONV_MAX_THREADS 64

static inline int td_conv_thread_id(void) {
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

/* Threads to spread n images (or chunks) over: all of them when n fills
 * them, else 1 (work in turn, threaded sgemm inside). */
static inline int td_conv_threads(int64_t n) {
    int nt = td_get_num_threads();
    if (nt > TD_CONV_MAX_THREADS) nt = TD_CONV_MAX_THREADS;
    return n >= nt ? nt : 1;
}

/* Row-major C [m, n] = A [m, k] (or A^T) x B [k, n] (or B^T) + beta C, with
 * leading dimensions lda, ldb, ldc. */
static inline void td_conv_gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, const float *a, int64_t lda,
                                const float *b, int64_t ldb, float beta, float *c, int64_t ldc) {
    if (m == 0 || n == 0) return;
    if (k == 0) {
        for (int64_t i = 0; i < m; i++)
            for (int64_t j = 0; j < n; j++) c[i * ldc + j] = beta == 0.0f ? 0.0f : beta * c[i * ldc + j];
        return;
    }
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, (int)m, (int)n,
                (int)k, 1.0f, a, (int)lda, b, (int)ldb, beta, c, (int)ldc);
}

/* Per-thread scratch: nt blocks of n floats (NULL when n is 0). */
typedef struct {
    float *p;
    int nt;
    int64_t n;
} td_conv_scratch;

static inline int td_conv_scratch_open(td_conv_scratch *s, int nt, int64_t n) {
    *s = (td_conv_scratch){.nt = nt, .n = n};
    if (n == 0) return 0;
    s->p = td_alloc((size_t)(nt * n) * sizeof(float));
    return s->p ? 0 : -1;
}

static inline float *td_conv_scratch_mine(td_conv_scratch *s) {
    return s->p ? s->p + td_conv_thread_id() * s->n : NULL;
}

static inline void td_conv_scratch_close(td_conv_scratch *s) {
    if (s->p) td_free(s->p, (size_t)(s->nt * s->n) * sizeof(float));
}

/* A gradient summed over the images (weight or bias): with one thread the
 * images add straight into dst; with several, each thread sums into its own
 * partial and the partials are folded into dst at the end. */
typedef struct {
    float *dst, *part, beta;
    int64_t size;
    int nt;
    bool used[TD_CONV_MAX_THREADS];
} td_conv_sum;

static inline int td_conv_sum_open(td_conv_sum *a, float *dst, int64_t size, float beta, int nt) {
    *a = (td_conv_sum){.dst = dst, .beta = beta, .size = size, .nt = dst ? nt : 1};
    if (a->nt == 1) return 0;
    a->part = td_alloc((size_t)(a->nt * size) * sizeof(float));
    return a->part ? 0 : -1;
}

/* Where the calling thread adds its next image, and with which beta. */
static inline float *td_conv_sum_slot(td_conv_sum *a, float *beta) {
    int t = a->nt == 1 ? 0 : td_conv_thread_id();
    *beta = a->used[t] ? 1.0f : (a->nt == 1 ? a->beta : 0.0f);
    a->used[t] = true;
    return a->nt == 1 ? a->dst : a->part + t * a->size;
}

static inline void td_conv_sum_close(td_conv_sum *a, bool fold) {
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

/* ---- conv_winograd.c: 3x3, stride 1, x [N, ci, h, w], w [co, ci, 3, 3],
 * out and gout [N, co, h + 2p - 2, w + 2p - 2]; beta 0 overwrites, 1 adds. */

/* Whether a conv2d goes through Winograd: the GEMMs outweigh the transforms. */
bool td_wino_applies(int64_t kh, int64_t kw, int64_t stride, int64_t ci, int64_t co);
int td_wino_forward(const float *x, const float *w, const float *b, float *out, int64_t N, int64_t ci, int64_t h,
                    int64_t wd, int64_t co, int64_t p);
int td_wino_weight_grad(const float *x, const float *gout, float *dw, float beta, int64_t N, int64_t ci, int64_t h,
                        int64_t wd, int64_t co, int64_t p);
/* p <= 2 (the input gradient is a convolution of gout padded 2 - p). */
int td_wino_input_grad(const float *gout, const float *w, float *dx, float beta, int64_t N, int64_t ci, int64_t h,
                       int64_t wd, int64_t co, int64_t p);

#endif
