/* autograd.c - the tape: recording nodes, backward in reverse topological
 * order, gradient accumulation, grad mode. */
#include "internal.h"
#include <stdlib.h>
#include <string.h>

static const char *const op_names[TD_OP_COUNT] = {
#define TD_NAME(E, n) #n,
    TD_OPS(TD_NAME)
#undef TD_NAME
};

static const td_backward_fn backward_fns[TD_OP_COUNT] = {
#define TD_BW(E, n) td_bw_##n,
    TD_OPS(TD_BW)
#undef TD_BW
};

_Static_assert(sizeof op_names / sizeof op_names[0] == TD_OP_COUNT, "op name table");

const char *td_op_name(td_op op) { return op < TD_OP_COUNT ? op_names[op] : "?"; }

static _Thread_local int grad_enabled = 1;

int td_grad_enabled(void) { return grad_enabled; }

int td_set_grad_enabled(int flag) {
    int prev = grad_enabled;
    grad_enabled = flag != 0;
    return prev;
}

bool td_needs_grad(int n, td_tensor *const *ins) {
    if (!grad_enabled) return false;
    for (int i = 0; i < n; i++)
        if (ins[i] && ins[i]->requires_grad) return true;
    return false;
}

td_node *td_record(td_op op, td_tensor *out, int n, td_tensor *const *ins) {
    if (!out || !td_needs_grad(n, ins)) return NULL;
    td_node *node = calloc(1, sizeof *node);
    if (!node) return td_fail("%s: out of memory for the autograd node", td_op_name(op));
    node->op = op;
    node->refcount = 1;
    node->nin = n;
    for (int i = 0; i < n; i++) {
        node->in[i] = ins[i];
        td_retain(ins[i]);
    }
    node->ndim = out->ndim;
    memcpy(node->shape, out->shape, sizeof node->shape);
    out->node = node;
    out->requires_grad = 1;
    out->is_leaf = 0;
    return node;
}

void td_save(td_node *n, int i, td_tensor *t) {
    td_retain(t);
    td_release(n->saved[i]);
    n->saved[i] = t;
}

td_tensor *td_alias(td_tensor *out) {
    return td_view_of(out, out->ndim, out->shape, out->stride, out->data - out->storage->data);
}

td_tensor *td_detach(td_tensor *t) {
    if (!t) return td_fail("detach: NULL tensor");
    return td_alias(t);
}

int td_set_requires_grad(td_tensor *t, int flag) {
    if (!t) return td_failc("requires_grad: NULL tensor");
    if (!t->is_leaf)
        return td_failc("requires_grad: only leaf tensors can change it (this one comes from %s)",
                        td_op_name(t->node->op));
    t->requires_grad = flag != 0;
    return 0;
}

td_tensor *td_get_grad(const td_tensor *t) {
    if (!t || !t->grad) return NULL;
    td_retain(t->grad);
    return t->grad;
}

int td_set_grad(td_tensor *t, td_tensor *g) {
    char a[TD_SHAPE_BUF], b[TD_SHAPE_BUF];
    if (!t) return td_failc("set_grad: NULL tensor");
    if (g && (!td_same_shape(t, g) || !td_is_contiguous(g)))
        return td_failc("set_grad: gradient %s must be contiguous and match the tensor %s",
                        td_shape_str(g, b), td_shape_str(t, a));
    td_retain(g);
    td_release(t->grad);
    t->grad = g;
    return 0;
}

int td_zero_grad(td_tensor *t) {
    if (!t) return td_failc("zero_grad: NULL tensor");
    return t->grad ? td_fill(t->grad, 0.0f) : 0;
}

td_tensor *td_sum_to_shape(td_tensor *g, int ndim, const int64_t *shape) {
    int lead = g->ndim - ndim;
    uint32_t axes = 0;
    for (int i = 0; i < g->ndim; i++) {
        if (i < lead || (shape[i - lead] == 1 && g->shape[i] != 1)) axes |= 1u << i;
    }
    if (!axes) {
        td_retain(g);
        return g;
    }
    td_tensor *s = td_sum(g, axes, 1);
    if (!s) return NULL;
    td_tensor *r = td_reshape(s, ndim, shape);
    td_release(s);
    return r;
}

/* Adds g into t->grad in place (t->grad contiguous, g any strides). */
static int add_into_leaf_grad(td_tensor *t, td_tensor *g) {
    if (!t->grad) {
        t->grad = td_new(t->ndim, t->shape);
        if (!t->grad) return -1;
        return td_copy_(t->grad, g);
    }
    td_tensor *gc = td_contiguous(g);
    if (!gc) return -1;
    float *dst = t->grad->data;
    const float *src = gc->data;
    int64_t n = t->grad->numel;
    #pragma omp parallel for if (n > TD_PAR_MIN)
    for (int64_t i = 0; i < n; i++) dst[i] += src[i];
    td_release(gc);
    return 0;
}

int td_accumulate(td_node *n, int i, td_tensor *g) {
    td_tensor *t = n->in[i];
    if (!t || !t->requires_grad || !g) return 0;
    td_tensor *gs = td_same_shape(t, g) ? (td_retain(g), g) : td_sum_to_shape(g, t->ndim, t->shape);
    if (!gs) return -1;
    int rc = 0;
    if (t->node) {
        td_node *p = t->node;
        if (!p->gout) {
            p->gout = gs;
            return 0;
        }
        td_tensor *sum = td_add(p->gout, gs);
        if (!sum) rc = -1;
        td_release(p->gout);
        p->gout = sum;
    } else {
        rc = add_into_leaf_grad(t, gs);
    }
    td_release(gs);
    return rc;
}

td_tensor *td_grad_dest(td_node *n, int i, float *beta, bool *direct) {
    td_tensor *t = n->in[i];
    *beta = 0.0f;
    *direct = false;
    if (!t->node && t->grad && td_is_contiguous(t->grad) && td_same_shape(t->grad, t)) {
        *beta = 1.0f;
        *direct = true;
        td_retain(t->grad);
        return t->grad;
    }
    td_tensor *g = td_new(t->ndim, t->shape);
    if (g && !t->node && !t->grad) {
        *direct = true;
        td_retain(g);
        t->grad = g;
    }
    return g;
}

/* Post-order of the graph below root (iterative DFS). */
static td_node **topo_order(td_node *root, int64_t pass, int64_t *count) {
    int64_t cap = 256, n = 0, sp = 0, scap = 256;
    td_node **order = malloc((size_t)cap * sizeof *order);
    td_node **stack = malloc((size_t)scap * sizeof *stack);
    int *next = malloc((size_t)scap * sizeof *next);
    if (!order || !stack || !next) goto oom;
    root->mark = pass;
    stack[sp] = root;
    next[sp++] = 0;
    while (sp > 0) {
        td_node *top = stack[sp - 1];
        int k = next[sp - 1]++;
        if (k >= top->nin) {
            if (n == cap) {
                td_node **o = realloc(order, (size_t)(cap *= 2) * sizeof *o);
                if (!o) goto oom;
                order = o;
            }
            order[n++] = top;
            sp--;
            continue;
        }
        td_tensor *in = top->in[k];
        td_node *child = in && in->requires_grad ? in->node : NULL;
        if (!child || child->mark == pass) continue;
        child->mark = pass;
        if (sp == scap) {
            scap *= 2;
            td_node **s = realloc(stack, (size_t)scap * sizeof *s);
            if (s) stack = s;
            int *nx = realloc(next, (size_t)scap * sizeof *nx);
            if (nx) next = nx;
            if (!s || !nx) goto oom;
        }
        stack[sp] = child;
        next[sp++] = 0;
    }
    free(stack);
    free(next);
    *count = n;
    return order;
oom:
    free(order);
    free(stack);
    free(next);
    return td_fail("backward: out of memory while sorting the graph");
}

static int64_t backward_pass;

int td_backward(td_tensor *root, const td_tensor *grad_root) {
    char a[TD_SHAPE_BUF], b[TD_SHAPE_BUF];
    if (!root) return td_failc("backward: NULL tensor");
    if (!root->requires_grad) return td_failc("backward: the tensor does not require grad");
    if (!grad_root && root->numel != 1)
        return td_failc("backward: tensor %s is not a scalar; pass its gradient", td_shape_str(root, a));
    if (grad_root && grad_root->numel != root->numel)
        return td_failc("backward: gradient %s does not match tensor %s",
                        td_shape_str(grad_root, b), td_shape_str(root, a));
    td_tensor *g0 = grad_root ? td_reshape((td_tensor *)grad_root, root->ndim, root->shape)
                              : td_ones(root->ndim, root->shape);
    if (!g0) return -1;
    int prev = td_set_grad_enabled(0);
    int rc = 0;
    if (!root->node) {
        td_node fake = {.nin = 1, .in = {root}};
        rc = td_accumulate(&fake, 0, g0);
        td_release(g0);
        td_set_grad_enabled(prev);
        return rc;
    }
    int64_t count = 0;
    td_node **order = topo_order(root->node, ++backward_pass, &count);
    if (!order) {
        td_release(g0);
        td_set_grad_enabled(prev);
        return -1;
    }
    td_release(root->node->gout);
    root->node->gout = g0;
    for (int64_t k = count - 1; k >= 0; k--) {
        td_node *n = order[k];
        if (!n->gout) continue;
        if (rc == 0 && backward_fns[n->op](n, n->gout) != 0) {
            char msg[1024];
            strncpy(msg, td_last_error(), sizeof msg - 1);
            msg[sizeof msg - 1] = '\0';
            td_fail("backward of %s: %s", td_op_name(n->op), msg);
            rc = -1;
        }
        td_release(n->gout);
        n->gout = NULL;
    }
    free(order);
    td_set_grad_enabled(prev);
    return rc;
}
