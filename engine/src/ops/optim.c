/* optim.c - optimizer updates in place on flat buffers, no autograd: Adam /
 * AdamW (with amsgrad) and SGD (momentum, dampening, nesterov), written to
 * match torch.optim (1.13, single-tensor path) operation by operation;
 * the global gradient norm and in-place scaling for clipping. */
#include "internal.h"
#include <math.h>
#include <stdio.h>
#if defined(__SSE__)
#include <xmmintrin.h>
#define TD_MXCSR_FTZ_DAZ 0x8040u /* flush-to-zero (bit 15), denormals-are-zero (bit 6) */
#endif

/* Gradients below ~1e-19 are common (a collapsed encoder's), and g * g is
 * then subnormal: each such element takes a microcode assist (~100 cycles),
 * which made an MVAE's Adam step 3x slower. With eps > 0 the update cannot
 * tell: what flushing drops from v is below 1.2e-38 / (1 - beta2), and
 * sqrt of that is far below eps's rounding. So the loop runs with FTZ/DAZ
 * (per thread, restored after) unless eps is 0. */
static unsigned flush_denormals(bool on) {
#if defined(TD_MXCSR_FTZ_DAZ)
    unsigned old = _mm_getcsr();
    if (on) _mm_setcsr(old | TD_MXCSR_FTZ_DAZ);
    return old;
#else
    (void)on;
    return 0;
#endif
}

static void restore_denormals(unsigned old) {
#if defined(TD_MXCSR_FTZ_DAZ)
    _mm_setcsr(old);
#else
    (void)old;
#endif
}

/* Fails unless every non-NULL tensor is contiguous with param's numel. */
static int check_flat(const char *op, int n, const char *const *names, const td_tensor *const *ts) {
    bool ok = true;
    for (int i = 0; i < n; i++)
        if (ts[i] && (!td_is_contiguous(ts[i]) || ts[i]->numel != ts[0]->numel)) ok = false;
    if (ok) return 0;
    char msg[512], s[TD_SHAPE_BUF];
    int k = 0;
    for (int i = 0; i < n && k < (int)sizeof msg; i++)
        if (ts[i])
            k += snprintf(msg + k, sizeof msg - (size_t)k, "%s%s %s%s", i ? ", " : "", names[i],
                          td_shape_str(ts[i], s), td_is_contiguous(ts[i]) ? "" : " (strided)");
    return td_failc("%s: %s must be contiguous with equal numel", op, msg);
}

typedef struct {
    float shrink, l2, b1, a1, b2, a2, bc2_sqrt, eps, neg_step;
} adam_k;

/* Element i of the Adam update (the loop of td_adam_step). */
static inline void adam_one(float *P, const float *G, float *M, float *V, float *VM, int64_t i, const adam_k *k,
                            bool amsgrad) {
    float p = P[i] * k->shrink, g = k->l2 != 0.0f ? G[i] + k->l2 * P[i] : G[i];
    float mi = M[i] * k->b1 + k->a1 * g;
    float vi = V[i] * k->b2 + k->a2 * g * g;
    M[i] = mi;
    V[i] = vi;
    if (amsgrad) {
        vi = VM[i] > vi ? VM[i] : vi;
        VM[i] = vi;
    }
    float denom = sqrtf(vi) / k->bc2_sqrt + k->eps;
    P[i] = p + k->neg_step * mi / denom;
}

/* p [n], g [n], m [n], v [n], vmax [n] or NULL; one pass. Scalars as torch
 * computes them: python floats (double), cast to float for the kernels. */
int td_adam_step(td_tensor *param, const td_tensor *grad, td_tensor *m, td_tensor *v, td_tensor *vmax,
                 double lr, double beta1, double beta2, double eps, double weight_decay, int64_t step,
                 int amsgrad, int decoupled) {
    const char *op = decoupled ? "adamw_step" : "adam_step";
    if (!param || !grad || !m || !v || (amsgrad && !vmax))
        return td_failc("%s: NULL tensor (param, grad, exp_avg, exp_avg_sq%s)", op, amsgrad ? ", max_exp_avg_sq" : "");
    const char *names[5] = {"param", "grad", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"};
    const td_tensor *ts[5] = {param, grad, m, v, amsgrad ? vmax : NULL};
    if (check_flat(op, 5, names, ts)) return -1;
    if (!(lr >= 0.0) || !(eps >= 0.0) || !(beta1 >= 0.0 && beta1 < 1.0) || !(beta2 >= 0.0 && beta2 < 1.0) ||
        !(weight_decay >= 0.0) || step < 1)
        return td_failc("%s: bad hyperparameters lr %g, betas (%g, %g), eps %g, weight_decay %g, step %lld",
                        op, lr, beta1, beta2, eps, weight_decay, (long long)step);
    double bc1 = 1.0 - pow(beta1, (double)step), bc2 = 1.0 - pow(beta2, (double)step);
    const float neg_step = (float)(-lr / bc1), bc2_sqrt = (float)sqrt(bc2), feps = (float)eps;
    const float b1 = (float)beta1, b2 = (float)beta2, a1 = (float)(1.0 - beta1), a2 = (float)(1.0 - beta2);
    const float l2 = decoupled ? 0.0f : (float)weight_decay;
    const float shrink = decoupled ? (float)(1.0 - lr * weight_decay) : 1.0f;
    float *P = param->data, *M = m->data, *V = v->data, *VM = amsgrad ? vmax->data : NULL;
    const float *G = grad->data;
    int64_t n = param->numel;
    const adam_k k = {shrink, l2, b1, a1, b2, a2, bc2_sqrt, feps, neg_step};
    /* Threads take whole blocks and amsgrad is constant in each inner loop,
     * so the loops vectorize and every element goes through the same code
     * (vector body or scalar tail) whatever the thread count: the compiler
     * may contract a*b + c into an FMA differently in the two. */
    enum { BLOCK = 1024 };
    int64_t nb = (n + BLOCK - 1) / BLOCK;
    const bool ftz = feps > 0.0f;
    #pragma omp parallel if (n > TD_PAR_MIN)
    {
        unsigned csr = flush_denormals(ftz);
        #pragma omp for schedule(static)
        for (int64_t b = 0; b < nb; b++) {
            int64_t lo = b * BLOCK, hi = lo + BLOCK < n ? lo + BLOCK : n;
            if (amsgrad) {
                #pragma omp simd
                for (int64_t i = lo; i < hi; i++) adam_one(P, G, M, V, VM, i, &k, true);
            } else {
                #pragma omp simd
                for (int64_t i = lo; i < hi; i++) adam_one(P, G, M, V, VM, i, &k, false);
            }
        }
        restore_denormals(csr);
    }
    return 0;
}

/* p [n], g [n], buf [n] (NULL when momentum is 0). step 1 initializes the
 * momentum buffer with the gradient, as torch does. */
int td_sgd_step(td_tensor *param, const td_tensor *grad, td_tensor *buf, float lr, float momentum,
                float dampening, float weight_decay, int nesterov, int64_t step) {
    if (!param || !grad || (momentum != 0.0f && !buf))
        return td_failc("sgd_step: NULL tensor (param, grad%s)", momentum != 0.0f ? ", momentum_buffer" : "");
    const char *names[3] = {"param", "grad", "momentum_buffer"};
    const td_tensor *ts[3] = {param, grad, momentum != 0.0f ? buf : NULL};
    if (check_flat("sgd_step", 3, names, ts)) return -1;
    if (!(lr >= 0.0f) || !(momentum >= 0.0f) || !(weight_decay >= 0.0f) || !isfinite(dampening) || step < 1)
        return td_failc("sgd_step: bad hyperparameters lr %g, momentum %g, dampening %g, weight_decay %g, step %lld",
                        lr, momentum, dampening, weight_decay, (long long)step);
    if (nesterov && (momentum <= 0.0f || dampening != 0.0f))
        return td_failc("sgd_step: nesterov needs a momentum and zero dampening (momentum %g, dampening %g)",
                        momentum, dampening);
    const float a = (float)(1.0 - dampening), neg_lr = -lr;
    const bool first = step == 1, mom = momentum != 0.0f;
    float *P = param->data, *B = mom ? buf->data : NULL;
    const float *G = grad->data;
    int64_t n = param->numel;
    #pragma omp parallel for simd schedule(static) if (n > TD_PAR_MIN)
    for (int64_t i = 0; i < n; i++) {
        float g = weight_decay != 0.0f ? G[i] + weight_decay * P[i] : G[i];
        if (mom) {
            float b = first ? g : B[i] * momentum + a * g;
            B[i] = b;
            g = nesterov ? g + momentum * b : b;
        }
        P[i] = P[i] + neg_lr * g;
    }
    return 0;
}

/* Adds the sum of squares of t, in double, to *total. */
static int add_sumsq(const td_tensor *t, double *total) {
    int prev = td_set_grad_enabled(0);
    td_tensor *c = td_contiguous((td_tensor *)t);
    td_set_grad_enabled(prev);
    if (!c) return -1;
    const float *d = c->data;
    double acc = 0.0;
    #pragma omp parallel for simd reduction(+ : acc) schedule(static) if (c->numel > TD_PAR_MIN)
    for (int64_t i = 0; i < c->numel; i++) acc += (double)d[i] * d[i];
    td_release(c);
    *total += acc;
    return 0;
}

float td_grad_norm(int n, td_tensor *const *grads) {
    if (n < 0 || (n > 0 && !grads)) {
        td_fail("grad_norm: %d tensors%s", n, grads ? "" : " and a NULL list");
        return -1.0f;
    }
    double total = 0.0;
    for (int i = 0; i < n; i++)
        if (grads[i] && add_sumsq(grads[i], &total)) return -1.0f;
    return (float)sqrt(total);
}

/* Offset in elements of the row-major index i of t. */
static int64_t offset_of(const td_tensor *t, int64_t i) {
    int64_t off = 0;
    for (int d = t->ndim - 1; d >= 0; d--) {
        off += (i % t->shape[d]) * t->stride[d];
        i /= t->shape[d];
    }
    return off;
}

int td_scale_(td_tensor *t, float s) {
    if (!t) return td_failc("scale_: NULL tensor");
    float *d = t->data;
    int64_t n = t->numel;
    if (td_is_contiguous(t)) {
        #pragma omp parallel for simd schedule(static) if (n > TD_PAR_MIN)
        for (int64_t i = 0; i < n; i++) d[i] *= s;
    } else {
        #pragma omp parallel for schedule(static) if (n > TD_PAR_MIN)
        for (int64_t i = 0; i < n; i++) d[offset_of(t, i)] *= s;
    }
    return 0;
}
