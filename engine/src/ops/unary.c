/* unary.c - elementwise ops of one tensor (and a scalar parameter). */
#include "internal.h"
#include <math.h>
#include "vmath.h"

/* y = f(x) over a contiguous copy of the input; p is the op's float param. */
#define UNARY_OP(name, OPENUM, PARAMS, P, EXPR)                               \
    td_tensor *td_##name PARAMS {                                             \
        if (!a) return td_fail(#name ": NULL tensor");                        \
        td_tensor *src = td_contiguous(a);                                    \
        if (!src) return NULL;                                                \
        td_tensor *out = td_new(a->ndim, a->shape);                           \
        if (out) {                                                            \
            const float *in_ = src->data;                                     \
            float *o_ = out->data, p = (P);                                   \
            (void)p;                                                          \
            _Pragma("omp parallel for simd if (out->numel > TD_PAR_MIN)")     \
            for (int64_t i = 0; i < out->numel; i++) {                        \
                float x = in_[i];                                             \
                o_[i] = (EXPR);                                               \
            }                                                                 \
            td_node *node = td_record(OPENUM, out, 1, &src);                  \
            if (node) {                                                       \
                node->fp[0] = p;                                              \
                td_tensor *alias = td_alias(out);                             \
                td_save(node, 0, alias);                                      \
                td_release(alias);                                            \
            }                                                                 \
        }                                                                     \
        td_release(src);                                                      \
        return out;                                                           \
    }

/* gin = gout * f(x, y) with x the input, y the output, p the param. */
#define UNARY_BW(name, EXPR)                                                  \
    int td_bw_##name(td_node *n, td_tensor *gout) {                           \
        td_tensor *gc = td_contiguous(gout);                                  \
        td_tensor *gin = gc ? td_new(gc->ndim, gc->shape) : NULL;             \
        if (!gin) {                                                           \
            td_release(gc);                                                   \
            return -1;                                                        \
        }                                                                     \
        const float *g_ = gc->data, *x_ = n->in[0]->data, *y_ = n->saved[0]->data; \
        float *o_ = gin->data, p = n->fp[0];                                  \
        (void)p;                                                              \
        _Pragma("omp parallel for simd if (gin->numel > TD_PAR_MIN)")         \
        for (int64_t i = 0; i < gin->numel; i++) {                            \
            float g = g_[i], x = x_[i], y = y_[i];                            \
            (void)x;                                                          \
            (void)y;                                                          \
            o_[i] = (EXPR);                                                   \
        }                                                                     \
        int rc = td_accumulate(n, 0, gin);                                    \
        td_release(gin);                                                      \
        td_release(gc);                                                       \
        return rc;                                                            \
    }

#define SIMPLE(name, OPENUM, EXPR) UNARY_OP(name, OPENUM, (td_tensor *a), 0.0f, EXPR)

/* log(1 + e^x) = max(x, 0) + log1p(e^-|x|), with no overflow */
static inline float softplusf(float x) { return (x > 0.0f ? x : 0.0f) + log1pf(expf(-fabsf(x))); }
static inline float gelu_cdf(float x) { return 0.5f * (1.0f + erff(x * (float)M_SQRT1_2)); }

SIMPLE(neg, TD_OP_NEG, -x)
SIMPLE(exp, TD_OP_EXP, expf(x))
SIMPLE(log, TD_OP_LOG, logf(x))
SIMPLE(log1p, TD_OP_LOG1P, log1pf(x))
SIMPLE(expm1, TD_OP_EXPM1, expm1f(x))
SIMPLE(sqrt, TD_OP_SQRT, sqrtf(x))
SIMPLE(rsqrt, TD_OP_RSQRT, 1.0f / sqrtf(x))
SIMPLE(abs, TD_OP_ABS, fabsf(x))
SIMPLE(square, TD_OP_SQUARE, x * x)
SIMPLE(relu, TD_OP_RELU, x > 0.0f ? x : 0.0f)
SIMPLE(sigmoid, TD_OP_SIGMOID, td_sigmoidf(x))
SIMPLE(tanh, TD_OP_TANH, tanhf(x))
SIMPLE(softplus, TD_OP_SOFTPLUS, softplusf(x))
SIMPLE(silu, TD_OP_SILU, x * td_sigmoidf(x))
SIMPLE(gelu, TD_OP_GELU, x * gelu_cdf(x))
UNARY_OP(leaky_relu, TD_OP_LEAKY_RELU, (td_tensor *a, float slope), slope, x > 0.0f ? x : p * x)
UNARY_OP(add_scalar, TD_OP_ADD_SCALAR, (td_tensor *a, float s), s, x + p)
UNARY_OP(mul_scalar, TD_OP_MUL_SCALAR, (td_tensor *a, float s), s, x * p)
UNARY_OP(pow_scalar, TD_OP_POW_SCALAR, (td_tensor *a, float e), e, powf(x, p))
UNARY_OP(rpow_scalar, TD_OP_RPOW_SCALAR, (float base, td_tensor *a), base, powf(p, x))

UNARY_BW(neg, -g)
UNARY_BW(exp, g * y)
UNARY_BW(log, g / x)
UNARY_BW(log1p, g / (1.0f + x))
UNARY_BW(expm1, g * (y + 1.0f))
UNARY_BW(sqrt, g * 0.5f / y)
UNARY_BW(rsqrt, -0.5f * g * y * y * y)
UNARY_BW(abs, x > 0.0f ? g : (x < 0.0f ? -g : 0.0f))
UNARY_BW(square, 2.0f * g * x)
UNARY_BW(relu, x > 0.0f ? g : 0.0f)
UNARY_BW(sigmoid, g * y * (1.0f - y))
UNARY_BW(tanh, g * (1.0f - y * y))
UNARY_BW(softplus, g * td_sigmoidf(x))
UNARY_BW(silu, g * (td_sigmoidf(x) * (1.0f + x * (1.0f - td_sigmoidf(x)))))
UNARY_BW(gelu, g * (gelu_cdf(x) + x * expf(-0.5f * x * x) * 0.3989422804014327f))
UNARY_BW(leaky_relu, x > 0.0f ? g : g * p)
UNARY_BW(add_scalar, g)
UNARY_BW(mul_scalar, g * p)
UNARY_BW(pow_scalar, p == 0.0f ? 0.0f : g * p * powf(x, p - 1.0f))
UNARY_BW(rpow_scalar, g * y * logf(p))

/* clamp keeps two params, so it is written out. */
td_tensor *td_clamp(td_tensor *a, float lo, float hi) {
    if (!a) return td_fail("clamp: NULL tensor");
    if (lo > hi) return td_fail("clamp: lower bound %g is above upper bound %g", lo, hi);
    td_tensor *src = td_contiguous(a);
    td_tensor *out = src ? td_new(a->ndim, a->shape) : NULL;
    if (out) {
        const float *in = src->data;
        #pragma omp parallel for simd if (out->numel > TD_PAR_MIN)
        for (int64_t i = 0; i < out->numel; i++) out->data[i] = fminf(fmaxf(in[i], lo), hi);
        td_node *node = td_record(TD_OP_CLAMP, out, 1, &src);
        if (node) {
            node->fp[0] = lo;
            node->fp[1] = hi;
        }
    }
    td_release(src);
    return out;
}

int td_bw_clamp(td_node *n, td_tensor *gout) {
    td_tensor *gc = td_contiguous(gout);
    td_tensor *gin = gc ? td_new(gc->ndim, gc->shape) : NULL;
    if (!gin) {
        td_release(gc);
        return -1;
    }
    const float *x = n->in[0]->data;
    float lo = n->fp[0], hi = n->fp[1];
    for (int64_t i = 0; i < gin->numel; i++)
        gin->data[i] = (x[i] >= lo && x[i] <= hi) ? gc->data[i] : 0.0f;
    int rc = td_accumulate(n, 0, gin);
    td_release(gin);
    td_release(gc);
    return rc;
}
