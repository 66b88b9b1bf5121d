/* bench.h - timing for the C benchmark programs: the median over repeated
 * runs after warm-up, printed as "<side>_ms=<median>". */
#ifndef TIDE_BENCH_H
#define TIDE_BENCH_H
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double bench_now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec * 1e-6;
}

static int bench_cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Median time of fn(ctx) in ms: warm-up for ~0.2 s (at least 3 runs), then
 * as many timed runs as fit in budget_ms (11 to 301, odd). */
static double bench_median(void (*fn)(void *), void *ctx, double budget_ms) {
    double t0 = bench_now_ms(), est = 0;
    int warm = 0;
    while (warm < 3 || bench_now_ms() - t0 < 200.0) {
        double s = bench_now_ms();
        fn(ctx);
        est = bench_now_ms() - s;
        warm++;
    }
    int reps = est > 0 ? (int)(budget_ms / est) : 301;
    if (reps < 11) reps = 11;
    if (reps > 301) reps = 301;
    reps |= 1;
    double *t = malloc(sizeof(double) * (size_t)reps);
    for (int i = 0; i < reps; i++) {
        double s = bench_now_ms();
        fn(ctx);
        t[i] = bench_now_ms() - s;
    }
    qsort(t, (size_t)reps, sizeof *t, bench_cmp);
    double med = t[reps / 2];
    free(t);
    return med;
}

/* Deterministic fill in [-1, 1). */
static void bench_fill(float *p, long n, unsigned seed) {
    unsigned long long s = seed * 2654435761ULL + 1;
    for (long i = 0; i < n; i++) {
        s = s * 6364136223846793005ULL + 1442695040888963407ULL;
        p[i] = (float)((s >> 40) / 8388608.0 - 1.0);
    }
}

#define BENCH_BUDGET_MS 1500.0
#endif
