/* tide.h - the one public header of libtide.
 *
 * Conventions (see ARCHITECTURE.md):
 *  - every function that returns a td_tensor* returns a NEW reference, or NULL
 *    on error; release it with td_release(). Tensor arguments are borrowed.
 *  - every int-returning function returns 0 on success, -1 on error.
 *  - on error, td_last_error() holds a one-line message naming the op and the
 *    shapes involved. The engine never aborts, exits or longjmps.
 *  - axes are 0-based; a negative axis counts from the end.
 *  - index tensors are float32 tensors holding whole numbers.
 *
 * This file is also parsed by bindings/ to make LuaJIT cdefs: keep
 * declarations on single lines between the TD_CDEF_BEGIN/END markers, no
 * macros inside them except TD_MAX_DIMS.
 */
#ifndef TIDE_H
#define TIDE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define TD_MAX_DIMS 6

/* TD_CDEF_BEGIN */
typedef struct td_storage td_storage;
typedef struct td_node td_node;

typedef struct td_tensor {
    float *data;                 /* first element (storage base + offset) */
    int64_t shape[6];
    int64_t stride[6];           /* in elements */
    int64_t numel;
    int32_t ndim;
    int32_t requires_grad;
    int32_t refcount;
    int32_t is_leaf;             /* 1 unless produced by a recorded op */
    struct td_tensor *grad;      /* accumulated gradient, or NULL */
    td_storage *storage;
    td_node *node;               /* the op that produced it, or NULL */
} td_tensor;

/* errors */
const char *td_last_error(void);
void td_clear_error(void);

/* lifetime */
void td_retain(td_tensor *t);
void td_release(td_tensor *t);

/* creation */
td_tensor *td_empty(int ndim, const int64_t *shape);
td_tensor *td_zeros(int ndim, const int64_t *shape);
td_tensor *td_ones(int ndim, const int64_t *shape);
td_tensor *td_full(int ndim, const int64_t *shape, float value);
td_tensor *td_arange(double start, double end, double step);
td_tensor *td_from_buffer(int ndim, const int64_t *shape, const float *values);
td_tensor *td_scalar(float value);
int td_copy_to_buffer(const td_tensor *t, float *out);
int td_fill(td_tensor *t, float value);
int td_copy_(td_tensor *dst, const td_tensor *src);
float td_item(const td_tensor *t);
int td_is_contiguous(const td_tensor *t);

/* random numbers: Philox4x32-10, counter based, thread-count independent */
void td_manual_seed(uint64_t seed);
uint64_t td_get_seed(void);
td_tensor *td_rand(int ndim, const int64_t *shape);
td_tensor *td_randn(int ndim, const int64_t *shape);
td_tensor *td_bernoulli(const td_tensor *p);
td_tensor *td_categorical(const td_tensor *probs, int64_t nsamples);
td_tensor *td_randperm(int64_t n);

/* autograd */
int td_set_requires_grad(td_tensor *t, int flag);
int td_grad_enabled(void);
int td_set_grad_enabled(int flag);
int td_backward(td_tensor *root, const td_tensor *grad_root);
td_tensor *td_get_grad(const td_tensor *t);
int td_set_grad(td_tensor *t, td_tensor *grad);
int td_zero_grad(td_tensor *t);
td_tensor *td_detach(td_tensor *t);

/* views (share storage; differentiable) */
td_tensor *td_reshape(td_tensor *t, int ndim, const int64_t *shape);
td_tensor *td_permute(td_tensor *t, const int *dims);
td_tensor *td_transpose(td_tensor *t, int d0, int d1);
td_tensor *td_narrow(td_tensor *t, int axis, int64_t start, int64_t length);
td_tensor *td_expand(td_tensor *t, int ndim, const int64_t *shape);
td_tensor *td_contiguous(td_tensor *t);
td_tensor *td_clone(td_tensor *t);

/* elementwise binary, with broadcasting */
td_tensor *td_add(td_tensor *a, td_tensor *b);
td_tensor *td_sub(td_tensor *a, td_tensor *b);
td_tensor *td_mul(td_tensor *a, td_tensor *b);
td_tensor *td_div(td_tensor *a, td_tensor *b);
td_tensor *td_pow(td_tensor *a, td_tensor *b);
td_tensor *td_maximum(td_tensor *a, td_tensor *b);
td_tensor *td_minimum(td_tensor *a, td_tensor *b);
td_tensor *td_where(td_tensor *cond, td_tensor *a, td_tensor *b);
/* comparisons: 1.0 where true, 0.0 elsewhere; no gradient */
td_tensor *td_eq(td_tensor *a, td_tensor *b);
td_tensor *td_ne(td_tensor *a, td_tensor *b);
td_tensor *td_lt(td_tensor *a, td_tensor *b);
td_tensor *td_le(td_tensor *a, td_tensor *b);
td_tensor *td_gt(td_tensor *a, td_tensor *b);
td_tensor *td_ge(td_tensor *a, td_tensor *b);

/* elementwise with a scalar */
td_tensor *td_add_scalar(td_tensor *a, float s);
td_tensor *td_mul_scalar(td_tensor *a, float s);
td_tensor *td_pow_scalar(td_tensor *a, float p);
td_tensor *td_rpow_scalar(float base, td_tensor *a);
td_tensor *td_clamp(td_tensor *a, float lo, float hi);

/* unary */
td_tensor *td_neg(td_tensor *a);
td_tensor *td_exp(td_tensor *a);
td_tensor *td_log(td_tensor *a);
td_tensor *td_log1p(td_tensor *a);
td_tensor *td_expm1(td_tensor *a);
td_tensor *td_sqrt(td_tensor *a);
td_tensor *td_rsqrt(td_tensor *a);
td_tensor *td_abs(td_tensor *a);
td_tensor *td_square(td_tensor *a);
td_tensor *td_relu(td_tensor *a);
td_tensor *td_leaky_relu(td_tensor *a, float slope);
td_tensor *td_sigmoid(td_tensor *a);
td_tensor *td_tanh(td_tensor *a);
td_tensor *td_softplus(td_tensor *a);
td_tensor *td_silu(td_tensor *a);
td_tensor *td_gelu(td_tensor *a);

/* reductions; axes is a bit mask (bit i = axis i), 0 means all axes */
td_tensor *td_sum(td_tensor *a, uint32_t axes, int keepdim);
td_tensor *td_mean(td_tensor *a, uint32_t axes, int keepdim);
td_tensor *td_var(td_tensor *a, uint32_t axes, int correction, int keepdim);
td_tensor *td_logsumexp(td_tensor *a, uint32_t axes, int keepdim);
td_tensor *td_max(td_tensor *a, int axis, int keepdim);
td_tensor *td_argmax(td_tensor *a, int axis, int keepdim);
td_tensor *td_softmax(td_tensor *a, int axis);
td_tensor *td_log_softmax(td_tensor *a, int axis);

/* linear algebra: a [..., n, k] @ b [..., k, m]; batch dims broadcast */
td_tensor *td_matmul(td_tensor *a, td_tensor *b);
/* x [..., in], w [out, in], b [out] or NULL -> [..., out] */
td_tensor *td_linear(td_tensor *x, td_tensor *w, td_tensor *b);

/* convolution and friends, NCHW; bias may be NULL */
td_tensor *td_conv2d(td_tensor *x, td_tensor *w, td_tensor *b, int stride, int pad);
td_tensor *td_conv_transpose2d(td_tensor *x, td_tensor *w, td_tensor *b, int stride, int pad, int output_pad);
td_tensor *td_group_norm(td_tensor *x, int groups, td_tensor *w, td_tensor *b, float eps);
td_tensor *td_avg_pool2d(td_tensor *x, int kernel, int stride, int pad);
td_tensor *td_upsample_nearest2d(td_tensor *x, int scale);

/* joining and indexing */
td_tensor *td_concat(int n, td_tensor *const *ts, int axis);
td_tensor *td_stack(int n, td_tensor *const *ts, int axis);
td_tensor *td_index_select(td_tensor *a, int axis, td_tensor *index);
td_tensor *td_gather(td_tensor *a, int axis, td_tensor *index);
td_tensor *td_scatter_add(td_tensor *a, int axis, td_tensor *index, td_tensor *src);
td_tensor *td_one_hot(td_tensor *index, int64_t nclasses);

/* losses and densities (elementwise with broadcasting unless stated) */
td_tensor *td_bce_with_logits(td_tensor *logits, td_tensor *target);
td_tensor *td_mse_loss(td_tensor *a, td_tensor *b); /* mean, scalar */
td_tensor *td_cross_entropy(td_tensor *logits, td_tensor *target); /* [B,C],[B] -> [B] */
td_tensor *td_normal_log_prob(td_tensor *x, td_tensor *mu, td_tensor *sigma);
td_tensor *td_laplace_log_prob(td_tensor *x, td_tensor *mu, td_tensor *scale);
td_tensor *td_kl_normal(td_tensor *mu1, td_tensor *sigma1, td_tensor *mu2, td_tensor *sigma2);

/* memory and threads */
int64_t td_mem_in_use(void);
int64_t td_mem_peak(void);
int64_t td_mem_cached(void);
void td_mem_reset_peak(void);
void td_mem_empty_cache(void);
int64_t td_live_tensors(void);
void td_set_num_threads(int n);
int td_get_num_threads(void);
/* TD_CDEF_END */

#ifdef __cplusplus
}
#endif
#endif
