/* binary.c - elementwise ops of two (or three) broadcast tensors. */
#include "broadcast.h"
#include <math.h>

/* Output tensor for a broadcast op, or NULL with the error set. */
static td_tensor *bcast_out(const char *op, int nin, td_tensor *const *ins, td_bcast *bc) {
    if (td_broadcast(op, nin, ins, bc)) return NULL;
    return td_new(bc->ndim, bc->shape);
}

#define BINARY_OP(name, OPENUM, EXPR)                                   \
    td_tensor *td_##name(td_tensor *a, td_tensor *b) {                  \
        td_tensor *ins[2] = {a, b};                                     \
        td_bcast bc;                                                    \
        td_tensor *out = bcast_out(#name, 2, ins, &bc);                 \
        if (!out) return NULL;                                          \
        TD_BCAST_LOOP(&bc, out->data, *o = (EXPR));                     \
        td_record(OPENUM, out, 2, ins);                                 \
        return out;                                                     \
    }

BINARY_OP(add, TD_OP_ADD, x + y)
BINARY_OP(sub, TD_OP_SUB, x - y)
BINARY_OP(mul, TD_OP_MUL, x * y)
BINARY_OP(div, TD_OP_DIV, x / y)
BINARY_OP(pow, TD_OP_POW, powf(x, y))
BINARY_OP(maximum, TD_OP_MAXIMUM, x > y ? x : (x < y ? y : x + 0.0f * y))
BINARY_OP(minimum, TD_OP_MINIMUM, x < y ? x : (x > y ? y : x + 0.0f * y))

#define COMPARE_OP(name, EXPR)                                          \
    td_tensor *td_##name(td_tensor *a, td_tensor *b) {                  \
        td_tensor *ins[2] = {a, b};                                     \
        td_bcast bc;                                                    \
        td_tensor *out = bcast_out(#name, 2, ins, &bc);                 \
        if (!out) return NULL;                                          \
        TD_BCAST_LOOP(&bc, out->data, *o = (EXPR) ? 1.0f : 0.0f);       \
        return out;                                                     \
    }

COMPARE_OP(eq, x == y)
COMPARE_OP(ne, x != y)
COMPARE_OP(lt, x < y)
COMPARE_OP(le, x <= y)
COMPARE_OP(gt, x > y)
COMPARE_OP(ge, x >= y)

td_tensor *td_where(td_tensor *cond, td_tensor *a, td_tensor *b) {
    td_tensor *ins[3] = {cond, a, b};
    td_bcast bc;
    td_tensor *out = bcast_out("where", 3, ins, &bc);
    if (!out) return NULL;
    TD_BCAST_LOOP(&bc, out->data, *o = x != 0.0f ? y : z);
    td_record(TD_OP_WHERE, out, 3, ins);
    return out;
}

/* Gradient of one input: gout * f(x, y), with x, y (and z) the op's inputs
 * broadcast against gout; accumulated into input k. */
#define GRAD_INPUT(node, k, gout, nin, EXPR)                                  \
    do {                                                                      \
        td_tensor *gins_[4] = {(gout), (node)->in[0], (node)->in[1], (node)->in[2]}; \
        td_bcast gb_;                                                         \
        if (td_broadcast("backward", (nin) + 1, gins_, &gb_)) return -1;      \
        td_tensor *g_ = td_new(gb_.ndim, gb_.shape);                          \
        if (!g_) return -1;                                                   \
        GRAD_LOOP(&gb_, g_->data, nin, EXPR);                                 \
        int rc_ = td_accumulate((node), (k), g_);                             \
        td_release(g_);                                                       \
        if (rc_) return rc_;                                                  \
    } while (0)

/* TD_BCAST_LOOP names its three inputs x, y, z; here the first one is the
 * upstream gradient, so rename: g = gradient, then the op's inputs. */
#define GRAD_LOOP(bc, out, nin, EXPR) TD_BCAST_LOOP(bc, out, { float g = x; float a = y; float b = z; (void)a; (void)b; *o = (EXPR); })

static bool wants(td_node *n, int k) { return n->in[k] && n->in[k]->requires_grad; }

int td_bw_add(td_node *n, td_tensor *gout) {
    if (td_accumulate(n, 0, gout)) return -1;
    return td_accumulate(n, 1, gout);
}

int td_bw_sub(td_node *n, td_tensor *gout) {
    if (td_accumulate(n, 0, gout)) return -1;
    if (!wants(n, 1)) return 0;
    td_tensor *ng = td_neg(gout);
    int rc = ng ? td_accumulate(n, 1, ng) : -1;
    td_release(ng);
    return rc;
}

int td_bw_mul(td_node *n, td_tensor *gout) {
    if (wants(n, 0)) GRAD_INPUT(n, 0, gout, 2, g * b);
    if (wants(n, 1)) GRAD_INPUT(n, 1, gout, 2, g * a);
    return 0;
}

int td_bw_div(td_node *n, td_tensor *gout) {
    if (wants(n, 0)) GRAD_INPUT(n, 0, gout, 2, g / b);
    if (wants(n, 1)) GRAD_INPUT(n, 1, gout, 2, -g * a / (b * b));
    return 0;
}

int td_bw_pow(td_node *n, td_tensor *gout) {
    if (wants(n, 0)) GRAD_INPUT(n, 0, gout, 2, b == 0.0f ? 0.0f : g * b * powf(a, b - 1.0f));
    if (wants(n, 1)) GRAD_INPUT(n, 1, gout, 2, a > 0.0f ? g * powf(a, b) * logf(a) : 0.0f);
    return 0;
}

/* Ties split the gradient evenly, as PyTorch does. */
int td_bw_maximum(td_node *n, td_tensor *gout) {
    if (wants(n, 0)) GRAD_INPUT(n, 0, gout, 2, a > b ? g : (a == b ? 0.5f * g : 0.0f));
    if (wants(n, 1)) GRAD_INPUT(n, 1, gout, 2, b > a ? g : (a == b ? 0.5f * g : 0.0f));
    return 0;
}

int td_bw_minimum(td_node *n, td_tensor *gout) {
    if (wants(n, 0)) GRAD_INPUT(n, 0, gout, 2, a < b ? g : (a == b ? 0.5f * g : 0.0f));
    if (wants(n, 1)) GRAD_INPUT(n, 1, gout, 2, b < a ? g : (a == b ? 0.5f * g : 0.0f));
    return 0;
}

/* where(cond, a, b): inputs are cond, a, b; in the loop "a" is cond. */
int td_bw_where(td_node *n, td_tensor *gout) {
    if (wants(n, 1)) GRAD_INPUT(n, 1, gout, 1, a != 0.0f ? g : 0.0f);
    if (wants(n, 2)) GRAD_INPUT(n, 2, gout, 1, a != 0.0f ? 0.0f : g);
    return 0;
}
