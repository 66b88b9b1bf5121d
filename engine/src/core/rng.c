/* rng.c - random numbers from Philox4x32-10 (Salmon, Moraes, Dror, Shaw,
 * "Parallel random numbers: as easy as 1, 2, 3", SC'11), counter based.
 *
 * The key is the seed. Each call takes a fresh range of 128-bit blocks from
 * a global counter (reset by td_manual_seed); block b of a call is
 * philox(counter = offset + b, key = seed), so element i of a call depends
 * only on (seed, offset, i), never on how the blocks are shared among
 * threads. Without td_manual_seed the seed is TD_DEFAULT_SEED. */
#include "internal.h"
#include <math.h>
#include <stdlib.h>

#define TD_DEFAULT_SEED 0x74696465ULL /* "tide" */

static uint64_t rng_seed = TD_DEFAULT_SEED;
static uint64_t rng_offset; /* next unused block */

void td_manual_seed(uint64_t seed) {
    rng_seed = seed;
    rng_offset = 0;
}

uint64_t td_get_seed(void) { return rng_seed; }

uint64_t td_rng_offset(void) { return rng_offset; }

void td_rng_set_state(uint64_t seed, uint64_t offset) {
    rng_seed = seed;
    rng_offset = offset;
}

void td_philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]) {
    uint32_t c0 = ctr[0], c1 = ctr[1], c2 = ctr[2], c3 = ctr[3], k0 = key[0], k1 = key[1];
    for (int round = 0; round < 10; round++) {
        uint64_t p0 = (uint64_t)0xD2511F53u * c0, p1 = (uint64_t)0xCD9E8D57u * c2;
        uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1 ^ k0, n2 = (uint32_t)(p0 >> 32) ^ c3 ^ k1;
        c1 = (uint32_t)p1;
        c3 = (uint32_t)p0;
        c0 = n0;
        c2 = n2;
        k0 += 0x9E3779B9u;
        k1 += 0xBB67AE85u;
    }
    out[0] = c0;
    out[1] = c1;
    out[2] = c2;
    out[3] = c3;
}

/* The four words of block b of the call that starts at `base`. */
static inline void block(uint64_t base, int64_t b, uint32_t w[4]) {
    uint64_t c = base + (uint64_t)b;
    const uint32_t ctr[4] = {(uint32_t)c, (uint32_t)(c >> 32), 0, 0};
    const uint32_t key[2] = {(uint32_t)rng_seed, (uint32_t)(rng_seed >> 32)};
    td_philox4x32_10(ctr, key, w);
}

/* Takes n blocks from the stream; returns the first. */
static uint64_t reserve(int64_t n) {
    uint64_t base = rng_offset;
    rng_offset += (uint64_t)n;
    return base;
}

/* Uniform in [0, 1) with 24 random bits. */
static inline float u24(uint32_t w) { return (float)(w >> 8) * 0x1p-24f; }

/* Uniform in [0, 1) with 53 random bits. */
static inline double u53(uint32_t hi, uint32_t lo) {
    return (double)((((uint64_t)hi << 32) | lo) >> 11) * 0x1p-53;
}

td_tensor *td_rand(int ndim, const int64_t *shape) {
    td_tensor *t = td_new(ndim, shape);
    if (!t) return NULL;
    int64_t n = t->numel, nb = (n + 3) / 4;
    uint64_t base = reserve(nb);
    float *d = t->data;
    #pragma omp parallel for schedule(static) if (n > TD_PAR_MIN)
    for (int64_t b = 0; b < nb; b++) {
        uint32_t w[4];
        block(base, b, w);
        for (int k = 0; k < 4 && 4 * b + k < n; k++) d[4 * b + k] = u24(w[k]);
    }
    return t;
}

/* Box-Muller: each block gives two pairs (u1, u2) of 32-bit uniforms, so four
 * normals. u1 is in (0, 1], so |z| <= sqrt(-2 log 2^-32) = 6.66. */
td_tensor *td_randn(int ndim, const int64_t *shape) {
    td_tensor *t = td_new(ndim, shape);
    if (!t) return NULL;
    int64_t n = t->numel, nb = (n + 3) / 4;
    uint64_t base = reserve(nb);
    float *d = t->data;
    #pragma omp parallel for schedule(static) if (n > TD_PAR_MIN / 8)
    for (int64_t b = 0; b < nb; b++) {
        uint32_t w[4];
        block(base, b, w);
        for (int pair = 0; pair < 2; pair++) {
            int64_t i = 4 * b + 2 * pair;
            if (i >= n) break;
            float u1 = (float)(((double)w[2 * pair] + 1.0) * 0x1p-32);
            float theta = (float)(2.0 * M_PI * 0x1p-32) * (float)w[2 * pair + 1];
            float r = sqrtf(-2.0f * logf(u1));
            d[i] = r * cosf(theta);
            if (i + 1 < n) d[i + 1] = r * sinf(theta);
        }
    }
    return t;
}

td_tensor *td_bernoulli(const td_tensor *p) {
    char s[TD_SHAPE_BUF];
    if (!p) return td_fail("bernoulli: NULL tensor");
    int prev = td_set_grad_enabled(0);
    td_tensor *pc = td_contiguous((td_tensor *)p);
    td_set_grad_enabled(prev);
    if (!pc) return NULL;
    int64_t n = pc->numel, bad = -1;
    for (int64_t i = 0; i < n && bad < 0; i++)
        if (!(pc->data[i] >= 0.0f && pc->data[i] <= 1.0f)) bad = i;
    if (bad >= 0) {
        td_fail("bernoulli: probability %g at element %lld of %s is outside [0, 1]", pc->data[bad],
                (long long)bad, td_shape_str(p, s));
        td_release(pc);
        return NULL;
    }
    td_tensor *t = td_new(p->ndim, p->shape);
    if (t) {
        int64_t nb = (n + 3) / 4;
        uint64_t base = reserve(nb);
        const float *pd = pc->data;
        float *d = t->data;
        #pragma omp parallel for schedule(static) if (n > TD_PAR_MIN)
        for (int64_t b = 0; b < nb; b++) {
            uint32_t w[4];
            block(base, b, w);
            for (int k = 0; k < 4 && 4 * b + k < n; k++) d[4 * b + k] = u24(w[k]) < pd[4 * b + k] ? 1.0f : 0.0f;
        }
    }
    td_release(pc);
    return t;
}

/* Checks the rows of probs [B, C]: finite, non-negative, positive sums. */
static int check_probs(const td_tensor *probs, const float *p, int64_t rows, int64_t c) {
    char s[TD_SHAPE_BUF];
    for (int64_t b = 0; b < rows; b++) {
        double sum = 0.0;
        for (int64_t j = 0; j < c; j++) {
            float v = p[b * c + j];
            if (!(v >= 0.0f) || isinf(v))
                return td_failc("categorical: probability %g at row %lld, column %lld of %s is not a finite "
                                "non-negative number", v, (long long)b, (long long)j, td_shape_str(probs, s));
            sum += v;
        }
        if (!(sum > 0.0))
            return td_failc("categorical: row %lld of %s sums to zero", (long long)b, td_shape_str(probs, s));
    }
    return 0;
}

/* Sample k of row b is element e = b * ns + k of the call: block e / 2, a
 * 53-bit uniform from its words 0-1 or 2-3, then a binary search of the
 * row's cumulative sums (zero-probability classes are never drawn). */
static void sample_rows(const float *p, float *out, int64_t rows, int64_t c, int64_t ns, uint64_t base,
                        int *oom) {
    #pragma omp parallel if (rows * (c + ns) > TD_PAR_MIN)
    {
        double *cum = malloc(sizeof(double) * (size_t)(c > 0 ? c : 1));
        if (!cum) {
            #pragma omp atomic write
            *oom = 1;
        }
        #pragma omp for schedule(static)
        for (int64_t b = 0; b < rows; b++) {
            if (!cum) continue;
            double acc = 0.0;
            for (int64_t j = 0; j < c; j++) cum[j] = acc += p[b * c + j];
            for (int64_t k = 0; k < ns; k++) {
                int64_t e = b * ns + k;
                uint32_t w[4];
                block(base, e / 2, w);
                double x = u53(w[2 * (e % 2)], w[2 * (e % 2) + 1]) * acc;
                int64_t lo = 0, hi = c - 1;
                while (lo < hi) {
                    int64_t mid = (lo + hi) / 2;
                    if (cum[mid] > x) hi = mid;
                    else lo = mid + 1;
                }
                out[e] = (float)lo;
            }
        }
        free(cum);
    }
}

td_tensor *td_categorical(const td_tensor *probs, int64_t nsamples) {
    char s[TD_SHAPE_BUF];
    if (!probs) return td_fail("categorical: NULL tensor");
    if (probs->ndim != 1 && probs->ndim != 2)
        return td_fail("categorical: probs %s must be [C] or [B,C]", td_shape_str(probs, s));
    int64_t c = probs->shape[probs->ndim - 1], rows = probs->ndim == 2 ? probs->shape[0] : 1;
    if (c == 0 || c > (1 << 24))
        return td_fail("categorical: probs %s must have between 1 and 2^24 classes", td_shape_str(probs, s));
    if (nsamples < 0) return td_fail("categorical: %lld samples (probs %s)", (long long)nsamples, td_shape_str(probs, s));
    int prev = td_set_grad_enabled(0);
    td_tensor *pc = td_contiguous((td_tensor *)probs);
    td_set_grad_enabled(prev);
    if (!pc) return NULL;
    td_tensor *out = NULL;
    if (check_probs(probs, pc->data, rows, c) == 0) {
        int64_t shape[2] = {rows, nsamples};
        out = probs->ndim == 2 ? td_new(2, shape) : td_new(1, shape + 1);
    }
    if (out) {
        int oom = 0;
        sample_rows(pc->data, out->data, rows, c, nsamples, reserve((rows * nsamples + 1) / 2), &oom);
        if (oom) {
            td_release(out);
            out = td_fail("categorical: out of memory for %lld cumulative sums", (long long)c);
        }
    }
    td_release(pc);
    return out;
}

/* Fisher-Yates: draw k (k = 0 .. n-2) swaps position n-1-k with a uniform
 * position in [0, n-1-k], taken from a 64-bit word pair (block k / 2) by a
 * 64x64 -> 128-bit multiply (bias below 2^-40 for n <= 2^24). */
td_tensor *td_randperm(int64_t n) {
    if (n < 0 || n > (1 << 24)) return td_fail("randperm: n = %lld must be in [0, 2^24]", (long long)n);
    td_tensor *t = td_new(1, &n);
    if (!t) return NULL;
    float *d = t->data;
    for (int64_t i = 0; i < n; i++) d[i] = (float)i;
    uint64_t base = reserve(n / 2);
    uint32_t w[4];
    for (int64_t k = 0; k + 1 < n; k++) {
        if (k % 2 == 0) block(base, k / 2, w);
        uint64_t r = ((uint64_t)w[2 * (k % 2)] << 32) | w[2 * (k % 2) + 1];
        int64_t i = n - 1 - k;
        int64_t j = (int64_t)(((unsigned __int128)r * (uint64_t)(i + 1)) >> 64);
        float tmp = d[i];
        d[i] = d[j];
        d[j] = tmp;
    }
    return t;
}
