/* reduce.c - reductions over axes: sum, mean, var, logsumexp, max, argmax. */
#include "internal.h"
#include <string.h>

/* Sums axis `ax` of contiguous src into dst: src [outer, len, inner] ->
 * dst [outer, inner]. */
static void sum_axis(const float *src, float *dst, int64_t outer, int64_t len, int64_t inner) {
    if (inner == 1) {
        #pragma omp parallel for if (outer * len > TD_PAR_MIN)
        for (int64_t o = 0; o < outer; o++) {
            const float *s = src + o * len;
            double acc = 0.0;
            for (int64_t r = 0; r < len; r++) acc += s[r];
            dst[o] = (float)acc;
        }
        return;
    }
    #pragma omp parallel for if (outer * len * inner > TD_PAR_MIN)
    for (int64_t o = 0; o < outer; o++) {
        float *d = dst + o * inner;
        memset(d, 0, (size_t)inner * sizeof(float));
        for (int64_t r = 0; r < len; r++) {
            const float *s = src + (o * len + r) * inner;
            for (int64_t i = 0; i < inner; i++) d[i] += s[i];
        }
    }
}

/* Checks the axis mask against ndim; all axes when mask is 0. */
static int resolve_axes(const char *op, const td_tensor *a, uint32_t *axes) {
    if (*axes == 0) *axes = a->ndim ? (uint32_t)((1u << a->ndim) - 1) : 0;
    if (*axes >> a->ndim) {
        char s[TD_SHAPE_BUF];
        return td_failc("%s: axis mask 0x%x names axes beyond %s", op, *axes, td_shape_str(a, s));
    }
    return 0;
}

/* Output shape of a reduction, with or without the reduced axes. */
static int reduced_shape(const td_tensor *a, uint32_t axes, int keepdim, int64_t *shape) {
    int nd = 0;
    for (int d = 0; d < a->ndim; d++) {
        if (axes >> d & 1) {
            if (keepdim) shape[nd++] = 1;
        } else {
            shape[nd++] = a->shape[d];
        }
    }
    return nd;
}

td_tensor *td_sum(td_tensor *a, uint32_t axes, int keepdim) {
    if (!a) return td_fail("sum: NULL tensor");
    if (resolve_axes("sum", a, &axes)) return NULL;
    td_tensor *cur = td_contiguous(a);
    if (!cur) return NULL;
    int64_t shape[TD_MAX_DIMS];
    memcpy(shape, a->shape, sizeof shape);
    /* one axis at a time, keeping dims, from the last */
    int prev = td_set_grad_enabled(0);
    for (int d = a->ndim - 1; d >= 0 && cur; d--) {
        if (!(axes >> d & 1)) continue;
        int64_t outer = td_shape_numel(d, shape), inner = td_shape_numel(a->ndim - d - 1, shape + d + 1);
        int64_t len = shape[d];
        shape[d] = 1;
        td_tensor *next = td_new(a->ndim, shape);
        if (next) sum_axis(cur->data, next->data, outer, len, inner);
        td_release(cur);
        cur = next;
    }
    td_set_grad_enabled(prev);
    if (!cur) return NULL;
    int64_t oshape[TD_MAX_DIMS];
    int nd = reduced_shape(a, axes, keepdim, oshape);
    int64_t st[TD_MAX_DIMS];
    td_contiguous_strides(nd, oshape, st);
    td_tensor *out = td_view_of(cur, nd, oshape, st, 0);
    td_release(cur);
    td_node *node = td_record(TD_OP_SUM, out, 1, &a);
    if (node) node->ip[0] = axes;
    return out;
}

int td_bw_sum(td_node *n, td_tensor *gout) {
    td_tensor *in = n->in[0];
    int64_t kshape[TD_MAX_DIMS];
    int nd = reduced_shape(in, (uint32_t)n->ip[0], 1, kshape);
    td_tensor *g = td_reshape(gout, nd, kshape);
    td_tensor *e = g ? td_expand(g, in->ndim, in->shape) : NULL;
    int rc = e ? td_accumulate(n, 0, e) : -1;
    td_release(e);
    td_release(g);
    return rc;
}
