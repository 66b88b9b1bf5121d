/* bench_ref.c - reference sides that need no PyTorch: raw cblas_sgemm on
 * preallocated buffers, and memcpy. Prints ref_ms=<median> (and extras).
 *
 *   bench_ref sgemm fwd|dA|dB|bwd N K M   C = A B, G B^T, A^T G; bwd: both, beta 1
 *   bench_ref linear N IN OUT              bias fill + 3 sgemm + bias column sums
 *   bench_ref memcpy BYTES                 memcpy moving BYTES (BYTES/2 read and
 *                                          written), split over the OpenMP threads */
#include "bench.h"
#include <cblas.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

typedef struct {
    int n, k, m, kind;
    float *a, *b, *g, *c, *c2, *bias, *db;
    char *src, *dst;
    size_t bytes;
} ctx_t;

enum { FWD, DA, DB, BWD };

static void gemm(int ta, int tb, int m, int n, int k, const float *a, const float *b, float beta, float *c) {
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, m, n, k, 1.0f, a,
                ta ? m : k, b, tb ? k : n, beta, c, n);
}

static void run_sgemm(void *p) {
    ctx_t *x = p;
    int n = x->n, k = x->k, m = x->m;
    if (x->kind == FWD) gemm(0, 0, n, m, k, x->a, x->b, 0.0f, x->c);
    if (x->kind == DA || x->kind == BWD) gemm(0, 1, n, k, m, x->g, x->b, x->kind == BWD, x->c);
    if (x->kind == DB || x->kind == BWD) gemm(1, 0, k, m, n, x->a, x->g, x->kind == BWD, x->c2);
}

/* x [n, in] (a), W [out, in] (b), y [n, out] (c); g [n, out]; dx (c2 as
 * [n, in]) and dW (a second buffer) accumulate, as leaves' grads do. */
static void run_linear(void *p) {
    ctx_t *x = p;
    int n = x->n, in = x->k, out = x->m;
    for (int i = 0; i < n; i++) memcpy(x->c + (size_t)i * out, x->bias, sizeof(float) * (size_t)out);
    gemm(0, 1, n, out, in, x->a, x->b, 1.0f, x->c);
    gemm(0, 0, n, in, out, x->g, x->b, 1.0f, x->c2);
    gemm(1, 0, out, in, n, x->g, x->a, 1.0f, x->c2 + (size_t)n * in);
    for (int i = 0; i < n; i++)
        for (int j = 0; j < out; j++) x->db[j] += x->g[(size_t)i * out + j];
}

static void run_memcpy(void *p) {
    ctx_t *x = p;
    #pragma omp parallel
    {
        int t = 0, nt = 1;
#ifdef _OPENMP
        t = omp_get_thread_num();
        nt = omp_get_num_threads();
#endif
        size_t chunk = (x->bytes + (size_t)nt - 1) / (size_t)nt, lo = chunk * (size_t)t;
        size_t len = lo >= x->bytes ? 0 : (x->bytes - lo < chunk ? x->bytes - lo : chunk);
        memcpy(x->dst + lo, x->src + lo, len);
    }
}

static float *buf(size_t n, unsigned seed) {
    float *p = aligned_alloc(64, (n * sizeof(float) + 63) / 64 * 64);
    bench_fill(p, (long)n, seed);
    return p;
}

int main(int argc, char **argv) {
    ctx_t x = {0};
    if (argc >= 6 && !strcmp(argv[1], "sgemm")) {
        const char *kinds[] = {"fwd", "dA", "dB", "bwd"};
        x.kind = -1;
        for (int i = 0; i < 4; i++)
            if (!strcmp(argv[2], kinds[i])) x.kind = i;
        x.n = atoi(argv[3]), x.k = atoi(argv[4]), x.m = atoi(argv[5]);
        size_t big = (size_t)x.n * x.k + (size_t)x.k * x.m + (size_t)x.n * x.m;
        x.a = buf((size_t)x.n * x.k, 1), x.b = buf((size_t)x.k * x.m, 2), x.g = buf((size_t)x.n * x.m, 3);
        x.c = buf(big, 4), x.c2 = buf(big, 5);
        double ms = bench_median(run_sgemm, &x, BENCH_BUDGET_MS);
        double flops = 2.0 * x.n * x.k * x.m * (x.kind == BWD ? 2 : 1);
        printf("ref_ms=%.4f ref_GFLOPS=%.1f\n", ms, flops / ms / 1e6);
        return x.kind < 0 ? 2 : 0;
    }
    if (argc >= 5 && !strcmp(argv[1], "linear")) {
        x.n = atoi(argv[2]), x.k = atoi(argv[3]), x.m = atoi(argv[4]);
        x.a = buf((size_t)x.n * x.k, 1), x.b = buf((size_t)x.m * x.k, 2), x.g = buf((size_t)x.n * x.m, 3);
        x.c = buf((size_t)x.n * x.m, 4), x.c2 = buf((size_t)(x.n + x.m) * x.k, 5);
        x.bias = buf((size_t)x.m, 6), x.db = buf((size_t)x.m, 7);
        printf("ref_ms=%.4f\n", bench_median(run_linear, &x, BENCH_BUDGET_MS));
        return 0;
    }
    if (argc >= 3 && !strcmp(argv[1], "memcpy")) {
        double moved = atof(argv[2]);
        x.bytes = (size_t)(moved / 2);
        x.src = (char *)buf(x.bytes / 4 + 1, 1), x.dst = (char *)buf(x.bytes / 4 + 1, 2);
        double ms = bench_median(run_memcpy, &x, BENCH_BUDGET_MS);
        printf("ref_ms=%.4f ref_GBs=%.1f\n", ms, moved / ms / 1e6);
        return 0;
    }
    fprintf(stderr, "usage: bench_ref sgemm fwd|dA|dB|bwd N K M | linear N IN OUT | memcpy BYTES\n");
    return 2;
}
