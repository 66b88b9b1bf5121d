/* internal.h - what engine files share and the public header does not show. */
#ifndef TIDE_INTERNAL_H
#define TIDE_INTERNAL_H

#include "tide.h"
#include <stdbool.h>

/* The list of recorded ops: one line per op, (ENUM, backward-suffix).
 * Adding an op: a line here, td_bw_<name>() next to its forward. The enum,
 * the name table and the backward table are all generated from this list. */
#define TD_OPS(X)                                                              \
    X(RESHAPE, reshape) X(PERMUTE, permute) X(NARROW, narrow)                  \
    X(EXPAND, expand) X(COPY, copy)                                            \
    X(ADD, add) X(SUB, sub) X(MUL, mul) X(DIV, div) X(POW, pow)                \
    X(MAXIMUM, maximum) X(MINIMUM, minimum) X(WHERE, where)                    \
    X(ADD_SCALAR, add_scalar) X(MUL_SCALAR, mul_scalar)                        \
    X(POW_SCALAR, pow_scalar) X(RPOW_SCALAR, rpow_scalar) X(CLAMP, clamp)      \
    X(NEG, neg) X(EXP, exp) X(LOG, log) X(LOG1P, log1p) X(EXPM1, expm1)        \
    X(SQRT, sqrt) X(RSQRT, rsqrt) X(ABS, abs) X(SQUARE, square)                \
    X(RELU, relu) X(LEAKY_RELU, leaky_relu) X(SIGMOID, sigmoid)                \
    X(TANH, tanh) X(SOFTPLUS, softplus) X(SILU, silu) X(GELU, gelu)            \
    X(SUM, sum) X(LOGSUMEXP, logsumexp) X(MAX, max)                            \
    X(SOFTMAX, softmax) X(LOG_SOFTMAX, log_softmax)                            \
    X(MATMUL, matmul) X(LINEAR, linear)                                        \
    X(CONV2D, conv2d) X(CONV_TRANSPOSE2D, conv_transpose2d)                    \
    X(GROUP_NORM, group_norm) X(AVG_POOL2D, avg_pool2d)                        \
    X(UPSAMPLE_NEAREST2D, upsample_nearest2d)                                  \
    X(CONCAT, concat) X(INDEX_SELECT, index_select) X(GATHER, gather)          \
    X(SCATTER_ADD, scatter_add)                                                \
    X(BCE_WITH_LOGITS, bce_with_logits) X(CROSS_ENTROPY, cross_entropy) \
    X(ROWDIST, rowdist)                                                        \
    X(POE, poe) X(GMM_LOG_JOINT, gmm_log_joint) X(GMM_ELBO, gmm_elbo)         \
    X(GROUP_NORM_SILU, group_norm_silu) X(ATTENTION, attention)               \
    X(UPCONV_INTERLEAVE, upconv_interleave)

typedef enum {
#define TD_ENUM(E, n) TD_OP_##E,
    TD_OPS(TD_ENUM)
#undef TD_ENUM
    TD_OP_COUNT
} td_op;

#define TD_MAX_INPUTS 4
#define TD_MAX_SAVED 4

struct td_node {
    td_op op;
    int refcount;
    int nin;
    td_tensor *in[TD_MAX_INPUTS];     /* retained; NULL where not needed */
    td_tensor *saved[TD_MAX_SAVED];   /* retained, e.g. an alias of the output */
    int64_t ip[8];                    /* integer params of the op */
    float fp[4];                      /* float params of the op */
    int ndim;                         /* shape of the output */
    int64_t shape[TD_MAX_DIMS];
    td_tensor *gout;                  /* gradient of the output, during backward */
    int64_t mark;                     /* backward pass that visited it */
    int64_t npending;                 /* consumers not yet done, during backward */
};

typedef int (*td_backward_fn)(td_node *n, td_tensor *gout);
#define TD_DECL_BW(E, n) int td_bw_##n(td_node *node, td_tensor *gout);
TD_OPS(TD_DECL_BW)
#undef TD_DECL_BW

const char *td_op_name(td_op op);

/* ---- errors ---- */
/* Sets the thread-local message (printf style); returns NULL for convenience. */
void *td_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
int td_failc(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Writes "[2,3,4]" into buf (at least 96 bytes); returns buf. */
char *td_shape_str(const td_tensor *t, char *buf);
#define TD_SHAPE_BUF 128

/* ---- memory ---- */
void *td_alloc(size_t bytes);        /* caching allocator, 64-byte aligned */
void td_free(void *p, size_t bytes);

struct td_storage {
    float *data;
    int64_t nfloats;
    int refcount;
};

/* A new contiguous tensor with uninitialized data; NULL (and error) on OOM. */
td_tensor *td_new(int ndim, const int64_t *shape);
/* A new tensor header sharing t's storage, with the given geometry. */
td_tensor *td_view_of(const td_tensor *t, int ndim, const int64_t *shape,
                      const int64_t *stride, int64_t offset);
int td_normalize_axis(int axis, int ndim);
int64_t td_shape_numel(int ndim, const int64_t *shape);
bool td_same_shape(const td_tensor *a, const td_tensor *b);
/* Contiguous strides for a shape. */
void td_contiguous_strides(int ndim, const int64_t *shape, int64_t *stride);

/* ---- autograd ---- */
/* True when an op on these inputs must be recorded. */
bool td_needs_grad(int n, td_tensor *const *ins);
/* Records node for out if needed; returns a node to fill params into, or NULL
 * if nothing is recorded. Retains the inputs. */
td_node *td_record(td_op op, td_tensor *out, int n, td_tensor *const *ins);
/* Saves a tensor (retained) in slot i of the node. */
void td_save(td_node *n, int i, td_tensor *t);
/* An alias of out with no node, to save without a reference cycle. */
td_tensor *td_alias(td_tensor *out);
/* Adds g into the gradient of node input i (reducing broadcast dims);
 * g is borrowed. */
int td_accumulate(td_node *n, int i, td_tensor *g);
/* Where a backward may write input i's gradient itself (GEMM with beta): the
 * leaf's own .grad (*beta = 1, or 0 when new; *direct = true), else a new
 * tensor for td_accumulate (*beta = 0, *direct = false). New reference. */
td_tensor *td_grad_dest(td_node *n, int i, float *beta, bool *direct);
/* Sums g down to the given shape (undoing broadcasting). New reference. */
td_tensor *td_sum_to_shape(td_tensor *g, int ndim, const int64_t *shape);

/* ---- random numbers ---- */
/* One Philox4x32-10 block (Random123's counter and key order). */
void td_philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]);

/* ---- threading ---- */
/* Minimum work (elements) before a loop goes parallel. */
#define TD_PAR_MIN 32768

#endif
