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

/* random numbers: Philox4x32-10, counter based, thread-count independent; the seed is 0x74696465 ("tide") until td_manual_seed */
void td_manual_seed(uint64_t seed);
uint64_t td_get_seed(void);
/* the position in the stream: save both to resume a run bit for bit */
uint64_t td_rng_offset(void);
void td_rng_set_state(uint64_t seed, uint64_t offset);
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
/* a @ b + c in one pass (the output starts as c, the GEMM adds into it): c broadcasts to the product [..., n, m], e.g. a bias [G,1,m] of G grouped linear layers */
td_tensor *td_matmul_add(td_tensor *a, td_tensor *b, td_tensor *c);
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
/* sum over the last axis of |x - y|^p, p = 1 or 2: x, y [..., n] (leading dims broadcast, last dims equal) -> [...] (one pass each way: the Laplace / Normal log-likelihood of an image) */
td_tensor *td_rowdist(td_tensor *x, td_tensor *y, int p);

/* fused kernels: fusion of experts, GMM */
/* Two-output kernels stack their outputs on a new axis 0: take one with td_narrow(out, 0, k, 1) and a reshape. */
/* product of Gaussian experts and the prior expert N(0,I): mu, logvar [E,B,D]; mask [E,B] (broadcastable; 1 = present; no gradient) or NULL -> [2,B,D] = (mean, log-variance) */
td_tensor *td_poe(td_tensor *mu, td_tensor *logvar, td_tensor *mask);
/* the same without the prior expert; fails when a sample has no expert present */
td_tensor *td_poe_noprior(td_tensor *mu, td_tensor *logvar, td_tensor *mask);
/* weighted log-linear pooling: 1/s2 = sum_e w_e/s2_e, mean = s2 sum_e w_e mu_e/s2_e; w [E,B] (broadcastable, >= 0, with gradient) -> [2,B,D] */
td_tensor *td_weighted_pool(td_tensor *mu, td_tensor *logvar, td_tensor *w);
/* log pi_c + log p(z|c): z [B,D], logits [K] (pi = softmax), locs [K,D]; family 0 = Normal (scales: log-variances [K,D]), 1 = Laplace (scales: log-scales [K,D]) -> [B,K] */
td_tensor *td_gmm_log_joint(td_tensor *z, td_tensor *logits, td_tensor *locs, td_tensor *scales, int family);
/* from a log joint [B,K]: sum_c q_c (joint_c - log q_c) for given probabilities qc [B,K] (0 log 0 = 0), or log p(z) = logsumexp_c joint_c when qc is NULL -> [B] */
td_tensor *td_gmm_elbo_joint(td_tensor *joint, td_tensor *qc);
/* E_q(c)[log p(z|c) + log pi_c - log q(c)] of a Normal mixture per sample, q = qc [B,K] or p(c|z) when qc is NULL (then it is log p(z)) -> [B] */
td_tensor *td_gmm_elbo(td_tensor *z, td_tensor *logits, td_tensor *means, td_tensor *logvars, td_tensor *qc);
/* p(c|z) of a Normal mixture -> [B,K]; no gradient */
td_tensor *td_gmm_responsibilities(td_tensor *z, td_tensor *logits, td_tensor *means, td_tensor *logvars);

/* clustering, no gradient: x [N,D]; assignments are float indices [N]; inertia (sum of squared distances) may be NULL */
td_tensor *td_kmeans_assign(td_tensor *x, td_tensor *centers, double *inertia);
/* the means [K,D] of the points assigned to each cluster; rows of empty clusters are NaN */
td_tensor *td_kmeans_update(td_tensor *x, td_tensor *assign, int64_t k);
/* k-means++ seeding from td_rand (td_manual_seed makes it repeatable) -> [K,D] rows of x */
td_tensor *td_kmeans_pp_init(td_tensor *x, int64_t k);
/* GMM-EM, diagonal Normal: E step -> log p(c|x) [N,K]; loglik (may be NULL) gets sum_n log p(x_n) */
td_tensor *td_gmm_estep(td_tensor *x, td_tensor *logits, td_tensor *means, td_tensor *logvars, double *loglik);
/* M step from responsibilities resp [N,K]: writes logits [K] (log weights), means [K,D], logvars [K,D] (variance + reg) in place */
int td_gmm_mstep(td_tensor *x, td_tensor *resp, float reg, td_tensor *logits, td_tensor *means, td_tensor *logvars);

/* I/O: IDX, PNG, image grids, safetensors */
/* IDX (MNIST format), gzip or plain; any IDX dtype -> float values as stored (ubyte: 0..255), shape from the header */
td_tensor *td_idx_load(const char *path);
/* img [H,W], [1,H,W] or [3,H,W], values clamped to [0,1] -> 8-bit gray or RGB PNG (temporary file, then rename) */
int td_png_save(const char *path, const td_tensor *img);
/* -> [C,H,W] in [0,1]: gray (+alpha) -> C = 1; RGB, RGBA, palette -> C = 3; alpha is dropped; 16-bit is scaled to 8 */
td_tensor *td_png_load(const char *path);
/* imgs [N,C,H,W] -> [C, rows*(H+pad)+pad, ncol*(W+pad)+pad], rows = ceil(N/ncol), row-major, gaps filled with pad_value */
td_tensor *td_image_grid(const td_tensor *imgs, int ncol, int pad, float pad_value);
/* safetensors: every tensor as F32; metadata_json is NULL or a JSON object of string values; temporary file, fsync, rename */
int td_safetensors_save(const char *path, int n, const char *const *names, td_tensor *const *tensors, const char *metadata_json);
/* the same with a dtype per tensor ("F32", "F64", "F16", "BF16", "U8", "I32", "I64"; dtypes or an entry NULL = F32); integer dtypes fail on values that are not whole or out of range */
int td_safetensors_save_as(const char *path, int n, const char *const *names, td_tensor *const *tensors, const char *const *dtypes, const char *metadata_json);
typedef struct td_st_file td_st_file;
/* opens and validates the header; tensors are read on demand */
td_st_file *td_st_open(const char *path);
int td_st_count(const td_st_file *f);
/* names in the order of their data in the file */
const char *td_st_name(const td_st_file *f, int i);
/* "F32", "U8", ... or NULL when there is no such tensor */
const char *td_st_dtype(const td_st_file *f, const char *name);
/* writes the shape (TD_MAX_DIMS entries) and returns ndim, or -1 when there is no such tensor */
int td_st_shape(const td_st_file *f, const char *name, int64_t *shape);
/* any stored dtype -> float32 (U8 stays 0..255) */
td_tensor *td_st_get(const td_st_file *f, const char *name);
/* rows [start, start+count) of dim 0, read from the file alone (for batches of a large data set) */
td_tensor *td_st_get_rows(const td_st_file *f, const char *name, int64_t start, int64_t count);
/* a value of __metadata__, or NULL */
const char *td_st_metadata(const td_st_file *f, const char *key);
/* the number of __metadata__ entries, and the key of entry i (NULL out of range) */
int td_st_metadata_count(const td_st_file *f);
const char *td_st_metadata_key(const td_st_file *f, int i);
void td_st_close(td_st_file *f);

/* optimizers: in place on flat buffers, no autograd */
/* Adam (decoupled = 0) or AdamW (decoupled = 1) as torch.optim; step is the 1-based number of this update; vmax may be NULL unless amsgrad; hyperparameters are double as in Python (1 - 0.999f is 1.3e-5 off 1 - 0.999) */
int td_adam_step(td_tensor *param, const td_tensor *grad, td_tensor *m, td_tensor *v, td_tensor *vmax, double lr, double beta1, double beta2, double eps, double weight_decay, int64_t step, int amsgrad, int decoupled);
/* SGD as torch.optim.SGD; buf may be NULL when momentum is 0; step 1 initializes buf with the gradient */
int td_sgd_step(td_tensor *param, const td_tensor *grad, td_tensor *buf, float lr, float momentum, float dampening, float weight_decay, int nesterov, int64_t step);
/* L2 norm over all the tensors (NULL entries skipped), in double; -1 on error */
float td_grad_norm(int n, td_tensor *const *grads);
int td_scale_(td_tensor *t, float s);

/* fused kernels: UNet blocks */
/* silu(group_norm(x + temb)): x [N,C,...], groups divide C, w, b [C] or NULL, temb [N,C] or NULL (a per-sample channel bias, the projected time embedding, broadcast over the spatial dims and added before the norm) -> the shape of x */
td_tensor *td_group_norm_silu(td_tensor *x, int groups, td_tensor *w, td_tensor *b, td_tensor *temb, float eps);
/* sinusoidal embedding of steps t [B] as in DDPM and diffusers' default: [sin | cos] halves, frequencies max_period^(-i/(half-1)), half = dim/2, a last column of 0 when dim is odd -> [B,dim]; no gradient */
td_tensor *td_timestep_embedding(td_tensor *t, int dim, float max_period);
/* softmax(q k^T / sqrt(d)) v: q [...,L,d], k [...,S,d], v [...,S,dv], equal leading dims (e.g. [B,heads]) -> [...,L,dv]; backward recomputes the probabilities from a saved log-sum-exp per row instead of keeping [...,L,S] */
td_tensor *td_attention(td_tensor *q, td_tensor *k, td_tensor *v);
/* conv2d(upsample_nearest2d(x, 2), w, b, 1, 1) without the upsampled tensor: x [N,CIN,H,W], w [COUT,CIN,3,3], b [COUT] or NULL -> [N,COUT,2H,2W] (a 2x2 conv of x with 4 COUT folded weights, then a pixel interleave: 4/9 of the multiply-adds) */
td_tensor *td_upsample_conv3x3(td_tensor *x, td_tensor *w, td_tensor *b);

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
