/* unet.c - the UNet kernels, forward + backward, fused or as the same math
 * in primitive engine ops. Prints tide_ms=<median> (fused) or
 * ref_ms=<median> (composite), and the forward alone as an extra field
 * (tide_fwd_ms / ref_fwd_ms), so bench/run's ratio is composite / fused.
 *
 *   bench_unet gns fused|composite N C H W G       td_group_norm_silu vs td_group_norm + td_silu
 *   bench_unet gns_temb fused|composite N C H W G  the same with the time-embedding bias [N,C]
 *                                                  (composite: td_add first)
 *   bench_unet attention fused|composite B H L D   td_attention vs matmul, scale, softmax, matmul
 *   bench_unet upconv fused|composite N C H W COUT td_upsample_conv3x3 vs td_upsample_nearest2d x2
 *                                                  then td_conv2d 3x3 pad 1
 * x, weight and bias (and temb, q, k, v) all take gradients. */
#include "bench.h"
#include "tide.h"
#include <math.h>
#include <string.h>

#define SH(...) ((const int64_t[]){__VA_ARGS__})

static td_tensor *rnd(int ndim, const int64_t *shape, int grad, unsigned seed, float scale, float shift) {
    td_tensor *t = td_empty(ndim, shape);
    bench_fill(t->data, (long)t->numel, seed);
    for (int64_t i = 0; i < t->numel; i++) t->data[i] = t->data[i] * scale + shift;
    if (grad) td_set_requires_grad(t, 1);
    return t;
}

static void die(const char *what) {
    fprintf(stderr, "bench_unet: %s: %s\n", what, td_last_error());
    exit(1);
}

typedef struct {
    td_tensor *a, *b, *c, *d, *g;
    int groups, composite, fwd_only, mode;
} ctx_t;

enum { GNS, GNS_TEMB, ATTENTION, UPCONV };

static td_tensor *gns_composite(ctx_t *c) {
    td_tensor *u = c->a, *t4 = NULL;
    if (c->d) {
        t4 = td_reshape(c->d, 4, SH(c->d->shape[0], c->d->shape[1], 1, 1));
        u = td_add(c->a, t4);
    }
    td_tensor *g = td_group_norm(u, c->groups, c->b, c->c, 1e-5f), *y = td_silu(g);
    if (t4) {
        td_release(t4);
        td_release(u);
    }
    td_release(g);
    return y;
}

static td_tensor *att_composite(ctx_t *c) {
    td_tensor *kt = td_transpose(c->b, 2, 3), *s = td_matmul(c->a, kt);
    td_tensor *ss = td_mul_scalar(s, 1.0f / sqrtf((float)c->a->shape[3])), *p = td_softmax(ss, 3);
    td_tensor *o = td_matmul(p, c->c);
    td_release(kt);
    td_release(s);
    td_release(ss);
    td_release(p);
    return o;
}

static td_tensor *upconv(ctx_t *c) {
    if (!c->composite) return td_upsample_conv3x3(c->a, c->b, c->c);
    td_tensor *u = td_upsample_nearest2d(c->a, 2), *y = td_conv2d(u, c->b, c->c, 1, 1);
    td_release(u);
    return y;
}

static void run(void *p) {
    ctx_t *c = p;
    int prev = td_set_grad_enabled(!c->fwd_only);
    td_tensor *out;
    if (c->mode == ATTENTION) out = c->composite ? att_composite(c) : td_attention(c->a, c->b, c->c);
    else if (c->mode == UPCONV) out = upconv(c);
    else out = c->composite ? gns_composite(c) : td_group_norm_silu(c->a, c->groups, c->b, c->c, c->d, 1e-5f);
    if (!out) die("forward");
    if (!c->fwd_only && td_backward(out, c->g)) die("backward");
    td_set_grad_enabled(prev);
    td_release(out);
}

static int usage(void) {
    fprintf(stderr, "usage: bench_unet gns|gns_temb fused|composite N C H W G\n"
                    "       bench_unet attention fused|composite B H L D\n"
                    "       bench_unet upconv fused|composite N C H W COUT\n");
    return 2;
}

int main(int argc, char **argv) {
    if (argc < 3) return usage();
    ctx_t c = {.composite = !strcmp(argv[2], "composite")};
    if (!c.composite && strcmp(argv[2], "fused")) return usage();
    int64_t a[5] = {0};
    for (int i = 3; i < argc && i < 8; i++) a[i - 3] = atoll(argv[i]);
    if ((!strcmp(argv[1], "gns") || !strcmp(argv[1], "gns_temb")) && argc == 8) {
        int64_t N = a[0], C = a[1], H = a[2], W = a[3];
        c.mode = strcmp(argv[1], "gns") ? GNS_TEMB : GNS;
        c.groups = (int)a[4];
        c.a = rnd(4, SH(N, C, H, W), 1, 1, 2.0f, 0.5f);
        c.b = rnd(1, SH(C), 1, 2, 0.2f, 1.0f);
        c.c = rnd(1, SH(C), 1, 3, 0.2f, 0.0f);
        if (c.mode == GNS_TEMB) c.d = rnd(2, SH(N, C), 1, 4, 1.0f, 0.0f);
        c.g = rnd(4, SH(N, C, H, W), 0, 5, 1.0f, 0.0f);
    } else if (!strcmp(argv[1], "attention") && argc == 7) {
        int64_t B = a[0], H = a[1], L = a[2], D = a[3];
        c.mode = ATTENTION;
        c.a = rnd(4, SH(B, H, L, D), 1, 1, 1.0f, 0.0f);
        c.b = rnd(4, SH(B, H, L, D), 1, 2, 1.0f, 0.0f);
        c.c = rnd(4, SH(B, H, L, D), 1, 3, 1.0f, 0.0f);
        c.g = rnd(4, SH(B, H, L, D), 0, 4, 1.0f, 0.0f);
    } else if (!strcmp(argv[1], "upconv") && argc == 8) {
        int64_t N = a[0], C = a[1], H = a[2], W = a[3], CO = a[4];
        c.mode = UPCONV;
        c.a = rnd(4, SH(N, C, H, W), 1, 1, 1.0f, 0.0f);
        c.b = rnd(4, SH(CO, C, 3, 3), 1, 2, 0.1f, 0.0f);
        c.c = rnd(1, SH(CO), 1, 3, 0.1f, 0.0f);
        c.g = rnd(4, SH(N, CO, 2 * H, 2 * W), 0, 4, 1.0f, 0.0f);
    } else {
        return usage();
    }
    c.fwd_only = 1;
    double fwd = bench_median(run, &c, BENCH_BUDGET_MS / 3);
    c.fwd_only = 0;
    double ms = bench_median(run, &c, BENCH_BUDGET_MS);
    const char *side = c.composite ? "ref" : "tide";
    printf("%s_ms=%.4f %s_fwd_ms=%.4f\n", side, ms, side, fwd);
    td_release(c.a);
    td_release(c.b);
    td_release(c.c);
    td_release(c.d);
    td_release(c.g);
    return 0;
}
