/* reduce_kernels.h - row helpers shared by reduce.c and softmax.c: a
 * vectorized exp, row max, row sum, and the chunking of column loops.
 *
 * Reductions run on a contiguous [outer, len, inner] layout: "rows" when
 * inner == 1 (the reduced elements are adjacent), "columns" otherwise, done
 * in chunks of adjacent columns (td_col_width) so the inner loops run over
 * long contiguous runs of each row. Narrow chunks at power-of-two row
 * strides thrash the cache: 256 columns of [4096,1024] ran 3x slower than
 * 1024. */
#ifndef TIDE_REDUCE_KERNELS_H
#define TIDE_REDUCE_KERNELS_H
#include "internal.h"
#include <math.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#define TD_CHUNK 1024 /* widest column chunk of the kernels with stack buffers */

/* Threads worth using for n elements of work. */
static inline int td_par_threads(int64_t n) {
#ifdef _OPENMP
    return n > TD_PAR_MIN ? omp_get_max_threads() : 1;
#else
    (void)n;
    return 1;
#endif
}

/* Column chunk width for [outer, len, inner] (1 for rows): as wide as the
 * buffers allow, narrower (down to 64) when outer alone leaves threads idle. */
static inline int64_t td_col_width(int64_t outer, int64_t inner, int nt) {
    if (inner <= 1) return 1;
    int64_t w = inner < TD_CHUNK ? inner : TD_CHUNK;
    if (outer < nt) {
        int64_t per = nt / outer, w2 = ((inner + per - 1) / per + 15) / 16 * 16;
        w2 = w2 < 64 ? 64 : w2;
        if (w2 < w) w = w2;
    }
    return w;
}

/* Slice and first column of task t (tasks are slices x column chunks);
 * no division in the common one-chunk case (a division per short row cost
 * more than the row). */
static inline int64_t td_task_slice(int64_t t, int64_t nchunk) { return nchunk == 1 ? t : t / nchunk; }
static inline int64_t td_task_col(int64_t t, int64_t nchunk, int64_t w) { return nchunk == 1 ? 0 : (t % nchunk) * w; }

typedef float td_v4f __attribute__((vector_size(16)));
typedef int32_t td_v4i __attribute__((vector_size(16)));

static inline td_v4f td_vsel(td_v4i mask, td_v4f a, td_v4f b) {
    return (td_v4f)(((td_v4i)a & mask) | ((td_v4i)b & ~mask));
}

/* exp of 4 floats, within 1.5 ulp of expf over the whole float range (inf,
 * -inf and NaN included). Cephes' polynomial on [-ln2/2, ln2/2]; the
 * power of two is applied in two halves so results near the ends of the
 * range (2^128, denormals) come out right. Written with vector types because
 * GCC does not vectorize expf without -ffast-math. */
static inline td_v4f td_vexp4(td_v4f x) {
    const td_v4f lo = {-104.0f, -104.0f, -104.0f, -104.0f}, hi = {89.0f, 89.0f, 89.0f, 89.0f};
    x = td_vsel(x < lo, lo, x); /* NaN passes through both clamps */
    x = td_vsel(x > hi, hi, x);
    td_v4f t = x * 1.44269504088896341f + 12582912.0f; /* + 1.5 * 2^23 rounds to an integer */
    td_v4f n = t - 12582912.0f;
    td_v4i k = (td_v4i)t - 0x4B400000, k1 = k >> 1, k2 = k - k1;
    td_v4f r = x - n * 0.693359375f;
    r = r + n * 2.12194440e-4f;
    td_v4f p = r * 1.9875691500e-4f + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    return p * (td_v4f)((k1 + 127) << 23) * (td_v4f)((k2 + 127) << 23);
}

/* y = exp(x) over n floats; y may be x. */
static inline void td_vexp(const float *x, float *y, int64_t n) {
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) {
        td_v4f v;
        memcpy(&v, x + i, sizeof v);
        v = td_vexp4(v);
        memcpy(y + i, &v, sizeof v);
    }
    if (i < n) {
        td_v4f v = {0.0f, 0.0f, 0.0f, 0.0f};
        memcpy(&v, x + i, sizeof(float) * (size_t)(n - i));
        v = td_vexp4(v);
        memcpy(y + i, &v, sizeof(float) * (size_t)(n - i));
    }
}

/* Max of n floats; NaN if any is NaN (as torch.max); -inf when n == 0.
 * Two 4-lane accumulators, NaNs tracked apart, so it vectorizes. */
static inline float td_row_max(const float *x, int64_t n) {
    td_v4f m0 = {-INFINITY, -INFINITY, -INFINITY, -INFINITY}, m1 = m0;
    td_v4i nan = {0, 0, 0, 0};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        td_v4f a, b;
        memcpy(&a, x + i, sizeof a);
        memcpy(&b, x + i + 4, sizeof b);
        m0 = td_vsel(a > m0, a, m0);
        m1 = td_vsel(b > m1, b, m1);
        nan |= (a != a) | (b != b);
    }
    float m = -INFINITY;
    int has_nan = 0;
    for (int k = 0; k < 4; k++) {
        m = m0[k] > m ? m0[k] : m;
        m = m1[k] > m ? m1[k] : m;
        has_nan |= nan[k];
    }
    for (; i < n; i++) {
        m = x[i] > m ? x[i] : m;
        has_nan |= x[i] != x[i];
    }
    return has_nan ? NAN : m;
}

/* Sum of n floats: 16 float lanes (vectorized), flushed into a double every
 * 64 terms per lane, so the rounding error is that of 64-term float sums. */
static inline double td_row_sum(const float *x, int64_t n) {
    double total = 0.0;
    int64_t i = 0;
    while (i + 16 <= n) {
        float acc[16] = {0};
        int64_t end = n - i > 1024 ? i + 1024 : n;
        for (; i + 16 <= end; i += 16)
            for (int k = 0; k < 16; k++) acc[k] += x[i + k];
        for (int k = 0; k < 16; k++) total += acc[k];
    }
    for (; i < n; i++) total += x[i];
    return total;
}

/* Dot product of n floats, blocked like td_row_sum. */
static inline double td_row_dot(const float *x, const float *y, int64_t n) {
    double total = 0.0;
    int64_t i = 0;
    while (i + 16 <= n) {
        float acc[16] = {0};
        int64_t end = n - i > 1024 ? i + 1024 : n;
        for (; i + 16 <= end; i += 16)
            for (int k = 0; k < 16; k++) acc[k] += x[i + k] * y[i + k];
        for (int k = 0; k < 16; k++) total += acc[k];
    }
    for (; i < n; i++) total += (double)x[i] * y[i];
    return total;
}

/* Short rows, many at once: for nr rows of len floats (nr * len <=
 * TD_CHUNK), m[r] = the row max, e = exp(x - m[r]) (e may be the output),
 * s[r] = the sum of row r of e. One td_vexp over the whole block instead
 * of one per row with its tail. */
static inline void td_rows_exp(const float *x, int64_t nr, int64_t len, float *m, float *e, double *s) {
    for (int64_t r = 0; r < nr; r++) m[r] = td_row_max(x + r * len, len);
    for (int64_t r = 0; r < nr; r++)
        for (int64_t i = 0; i < len; i++) e[r * len + i] = x[r * len + i] - m[r];
    td_vexp(e, e, nr * len);
    for (int64_t r = 0; r < nr; r++) s[r] = td_row_sum(e + r * len, len);
}

/* Rows per block of td_rows_exp, or 0 when rows are too long for it. */
static inline int64_t td_short_rows(int64_t len) { return len > 0 && len <= TD_CHUNK / 4 ? TD_CHUNK / len : 0; }

/* acc[j] += sum over len rows of x[r * inner + j], for j < w: float sums
 * of 64 rows in part[w], flushed into the double accumulators. */
static inline void td_cols_sum(const float *x, int64_t len, int64_t inner, int64_t w, double *acc, float *part) {
    for (int64_t r0 = 0; r0 < len; r0 += 64) {
        int64_t r1 = len - r0 > 64 ? r0 + 64 : len;
        memset(part, 0, sizeof(float) * (size_t)w);
        for (int64_t r = r0; r < r1; r++) {
            const float *s = x + r * inner;
            for (int64_t j = 0; j < w; j++) part[j] += s[j];
        }
        for (int64_t j = 0; j < w; j++) acc[j] += part[j];
    }
}

/* m[j] = max over len rows of x[r * inner + j], NaN wins. */
static inline void td_cols_max(const float *x, int64_t len, int64_t inner, int64_t w, float *m) {
    for (int64_t j = 0; j < w; j++) m[j] = -INFINITY;
    for (int64_t r = 0; r < len; r++) {
        const float *s = x + r * inner;
        for (int64_t j = 0; j < w; j++) m[j] = (s[j] > m[j] || s[j] != s[j]) ? s[j] : m[j];
    }
}

#endif
