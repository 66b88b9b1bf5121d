/* bench_tide.c - the tide side of the benchmarks: prints tide_ms=<median>
 * (and extra key=value fields) for one case.
 *
 *   bench_tide matmul fwd|dA|dB|bwd N K M   A[N,K] B[K,M]; dA: G B^T, dB: A^T G
 *                                            through transposed views; bwd: td_backward
 *   bench_tide linear N IN OUT               td_linear with bias, forward + backward
 *   bench_tide conv N C H W COUT K S P XGRAD td_conv2d with bias, forward + backward
 *   bench_tide memory add|mul|exp|sum N      elementwise and reduction on N floats */
#include "bench.h"
#include "tide.h"
#include <string.h>

static td_tensor *rnd(int ndim, const int64_t *shape, int grad, unsigned seed) {
    td_tensor *t = td_empty(ndim, shape);
    bench_fill(t->data, (long)t->numel, seed);
    if (grad) td_set_requires_grad(t, 1);
    return t;
}
#define SH(...) ((const int64_t[]){__VA_ARGS__})

static void die(const char *what) {
    fprintf(stderr, "bench_tide: %s: %s\n", what, td_last_error());
    exit(1);
}

typedef struct {
    td_tensor *a, *b, *c, *g, *out;
    td_tensor *(*op)(td_tensor *, td_tensor *);
    td_tensor *(*op1)(td_tensor *);
    int stride, pad;
} ctx_t;

static void run_binary(void *p) {
    ctx_t *c = p;
    td_tensor *o = c->op(c->a, c->b);
    if (!o) die("op");
    td_release(o);
}

static void run_unary(void *p) {
    ctx_t *c = p;
    td_tensor *o = c->op1(c->a);
    if (!o) die("op");
    td_release(o);
}

static void run_backward(void *p) {
    ctx_t *c = p;
    if (td_backward(c->out, c->g)) die("backward");
}

static void run_linear(void *p) {
    ctx_t *c = p;
    td_tensor *y = td_linear(c->a, c->b, c->c);
    if (!y || td_backward(y, c->g)) die("linear");
    td_release(y);
}

static void run_conv_fwd(void *p) {
    ctx_t *c = p;
    td_tensor *y = td_conv2d(c->a, c->b, c->c, c->stride, c->pad);
    if (!y) die("conv2d");
    td_release(y);
}

static void run_conv(void *p) {
    ctx_t *c = p;
    td_tensor *y = td_conv2d(c->a, c->b, c->c, c->stride, c->pad);
    if (!y || td_backward(y, c->g)) die("conv2d");
    td_release(y);
}

static td_tensor *sum_all(td_tensor *a) { return td_sum(a, 0, 0); }

static int matmul_case(const char *kind, int64_t n, int64_t k, int64_t m) {
    ctx_t c = {0};
    int bwd = !strcmp(kind, "bwd");
    td_tensor *a = rnd(2, SH(n, k), bwd, 1), *b = rnd(2, SH(k, m), bwd, 2), *g = rnd(2, SH(n, m), 0, 3);
    td_tensor *at = td_transpose(a, 0, 1), *bt = td_transpose(b, 0, 1);
    double ms;
    if (bwd) {
        c.out = td_matmul(a, b);
        c.g = g;
        ms = bench_median(run_backward, &c, BENCH_BUDGET_MS);
        td_release(c.out);
    } else {
        c.op = td_matmul;
        if (!strcmp(kind, "fwd")) c.a = a, c.b = b;
        else if (!strcmp(kind, "dA")) c.a = g, c.b = bt;
        else if (!strcmp(kind, "dB")) c.a = at, c.b = g;
        else return fprintf(stderr, "bench_tide: unknown matmul kind %s\n", kind), 2;
        ms = bench_median(run_binary, &c, BENCH_BUDGET_MS);
    }
    double flops = 2.0 * (double)n * k * m * (bwd ? 2 : 1);
    printf("tide_ms=%.4f tide_GFLOPS=%.1f\n", ms, flops / ms / 1e6);
    td_release(a), td_release(b), td_release(g), td_release(at), td_release(bt);
    return 0;
}

static int linear_case(int64_t n, int64_t in, int64_t out) {
    ctx_t c = {.a = rnd(2, SH(n, in), 1, 1), .b = rnd(2, SH(out, in), 1, 2), .c = rnd(1, SH(out), 1, 3),
               .g = rnd(2, SH(n, out), 0, 4)};
    double ms = bench_median(run_linear, &c, BENCH_BUDGET_MS);
    printf("tide_ms=%.4f\n", ms);
    td_release(c.a), td_release(c.b), td_release(c.c), td_release(c.g);
    return 0;
}

static int conv_case(char **v) {
    int64_t N = atoll(v[0]), C = atoll(v[1]), H = atoll(v[2]), W = atoll(v[3]), CO = atoll(v[4]), K = atoll(v[5]);
    int s = atoi(v[6]), p = atoi(v[7]), xgrad = atoi(v[8]);
    int64_t oh = (H + 2 * p - K) / s + 1, ow = (W + 2 * p - K) / s + 1;
    ctx_t c = {.a = rnd(4, SH(N, C, H, W), xgrad, 1), .b = rnd(4, SH(CO, C, K, K), 1, 2), .c = rnd(1, SH(CO), 1, 3),
               .g = rnd(4, SH(N, CO, oh, ow), 0, 4), .stride = s, .pad = p};
    int prev = td_set_grad_enabled(0);
    double fwd = bench_median(run_conv_fwd, &c, BENCH_BUDGET_MS / 3);
    td_set_grad_enabled(prev);
    double ms = bench_median(run_conv, &c, BENCH_BUDGET_MS);
    printf("tide_ms=%.4f tide_fwd_ms=%.4f\n", ms, fwd);
    td_release(c.a), td_release(c.b), td_release(c.c), td_release(c.g);
    return 0;
}

/* Bytes an op moves: inputs read plus output written. */
static int memory_case(const char *op, int64_t n) {
    ctx_t c = {.a = rnd(1, SH(n), 0, 1), .b = rnd(1, SH(n), 0, 2)};
    double bytes = 4.0 * n, ms;
    if (!strcmp(op, "add") || !strcmp(op, "mul")) {
        c.op = !strcmp(op, "add") ? td_add : td_mul;
        bytes *= 3;
        ms = bench_median(run_binary, &c, BENCH_BUDGET_MS);
    } else if (!strcmp(op, "exp") || !strcmp(op, "sum")) {
        c.op1 = !strcmp(op, "exp") ? td_exp : sum_all;
        bytes *= !strcmp(op, "exp") ? 2 : 1;
        ms = bench_median(run_unary, &c, BENCH_BUDGET_MS);
    } else {
        return fprintf(stderr, "bench_tide: unknown op %s\n", op), 2;
    }
    printf("tide_ms=%.4f tide_GBs=%.1f bytes=%.0f\n", ms, bytes / ms / 1e6, bytes);
    td_release(c.a), td_release(c.b);
    return 0;
}

int main(int argc, char **argv) {
    if (argc >= 6 && !strcmp(argv[1], "matmul")) return matmul_case(argv[2], atoll(argv[3]), atoll(argv[4]), atoll(argv[5]));
    if (argc >= 5 && !strcmp(argv[1], "linear")) return linear_case(atoll(argv[2]), atoll(argv[3]), atoll(argv[4]));
    if (argc >= 11 && !strcmp(argv[1], "conv")) return conv_case(argv + 2);
    if (argc >= 4 && !strcmp(argv[1], "memory")) return memory_case(argv[2], atoll(argv[3]));
    fprintf(stderr, "usage: bench_tide matmul fwd|dA|dB|bwd N K M | linear N IN OUT |\n"
                    "       conv N C H W COUT K S P XGRAD | memory add|mul|exp|sum N\n");
    return 2;
}
