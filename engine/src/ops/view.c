/* view.c - views that share storage (reshape, permute, narrow, expand) and
 * copies (contiguous, clone). */
#include "internal.h"
#include <string.h>

td_tensor *td_reshape(td_tensor *t, int ndim, const int64_t *shape) {
    char a[TD_SHAPE_BUF];
    if (!t) return td_fail("reshape: NULL tensor");
    if (ndim < 0 || ndim > TD_MAX_DIMS) return td_fail("reshape: %d dims, at most %d", ndim, TD_MAX_DIMS);
    int64_t sh[TD_MAX_DIMS], known = 1;
    int infer = -1;
    for (int i = 0; i < ndim; i++) {
        sh[i] = shape[i];
        if (sh[i] == -1 && infer < 0) infer = i;
        else if (sh[i] < 0) return td_fail("reshape: bad size %lld in dim %d", (long long)sh[i], i);
        else known *= sh[i];
    }
    if (infer >= 0) sh[infer] = known ? t->numel / known : 0;
    if (td_shape_numel(ndim, sh) != t->numel) {
        char want[TD_SHAPE_BUF];
        td_tensor tmp = {.ndim = ndim};
        memcpy(tmp.shape, sh, sizeof(int64_t) * (size_t)ndim);
        return td_fail("reshape: %s has %lld elements, %s has %lld", td_shape_str(t, a),
                       (long long)t->numel, td_shape_str(&tmp, want), (long long)td_shape_numel(ndim, sh));
    }
    td_tensor *src = td_contiguous(t);
    if (!src) return NULL;
    int64_t st[TD_MAX_DIMS];
    td_contiguous_strides(ndim, sh, st);
    td_tensor *out = td_view_of(src, ndim, sh, st, src->data - src->storage->data);
    if (out) td_record(TD_OP_RESHAPE, out, 1, &src);
    td_release(src);
    return out;
}

int td_bw_reshape(td_node *n, td_tensor *gout) {
    td_tensor *g = td_reshape(gout, n->in[0]->ndim, n->in[0]->shape);
    int rc = g ? td_accumulate(n, 0, g) : -1;
    td_release(g);
    return rc;
}

td_tensor *td_permute(td_tensor *t, const int *dims) {
    if (!t || !dims) return td_fail("permute: NULL argument");
    int seen[TD_MAX_DIMS] = {0};
    int64_t sh[TD_MAX_DIMS], st[TD_MAX_DIMS];
    for (int i = 0; i < t->ndim; i++) {
        int d = td_normalize_axis(dims[i], t->ndim);
        if (d < 0 || seen[d]++) {
            char a[TD_SHAPE_BUF];
            return td_fail("permute: dims are not a permutation of the %d axes of %s", t->ndim, td_shape_str(t, a));
        }
        sh[i] = t->shape[d];
        st[i] = t->stride[d];
    }
    td_tensor *out = td_view_of(t, t->ndim, sh, st, t->data - t->storage->data);
    td_node *node = td_record(TD_OP_PERMUTE, out, 1, &t);
    if (node)
        for (int i = 0; i < t->ndim; i++) node->ip[i] = td_normalize_axis(dims[i], t->ndim);
    return out;
}

int td_bw_permute(td_node *n, td_tensor *gout) {
    int inv[TD_MAX_DIMS];
    for (int i = 0; i < n->ndim; i++) inv[n->ip[i]] = i;
    td_tensor *g = td_permute(gout, inv);
    int rc = g ? td_accumulate(n, 0, g) : -1;
    td_release(g);
    return rc;
}

td_tensor *td_transpose(td_tensor *t, int d0, int d1) {
    if (!t) return td_fail("transpose: NULL tensor");
    int a0 = td_normalize_axis(d0, t->ndim), a1 = td_normalize_axis(d1, t->ndim);
    if (a0 < 0 || a1 < 0) {
        char a[TD_SHAPE_BUF];
        return td_fail("transpose: axes %d, %d out of range for %s", d0, d1, td_shape_str(t, a));
    }
    int dims[TD_MAX_DIMS];
    for (int i = 0; i < t->ndim; i++) dims[i] = i;
    dims[a0] = a1;
    dims[a1] = a0;
    return td_permute(t, dims);
}

td_tensor *td_narrow(td_tensor *t, int axis, int64_t start, int64_t length) {
    char a[TD_SHAPE_BUF];
    if (!t) return td_fail("narrow: NULL tensor");
    int ax = td_normalize_axis(axis, t->ndim);
    if (ax < 0) return td_fail("narrow: axis %d out of range for %s", axis, td_shape_str(t, a));
    if (start < 0) start += t->shape[ax];
    if (start < 0 || length < 0 || start + length > t->shape[ax])
        return td_fail("narrow: [%lld, %lld) is outside axis %d of %s", (long long)start,
                       (long long)(start + length), ax, td_shape_str(t, a));
    int64_t sh[TD_MAX_DIMS];
    memcpy(sh, t->shape, sizeof sh);
    sh[ax] = length;
    int64_t off = t->data - t->storage->data + start * t->stride[ax];
    td_tensor *out = td_view_of(t, t->ndim, sh, t->stride, off);
    td_node *node = td_record(TD_OP_NARROW, out, 1, &t);
    if (node) {
        node->ip[0] = ax;
        node->ip[1] = start;
    }
    return out;
}

int td_bw_narrow(td_node *n, td_tensor *gout) {
    td_tensor *in = n->in[0];
    td_tensor *g = td_zeros(in->ndim, in->shape);
    if (!g) return -1;
    td_tensor *win = td_narrow(g, (int)n->ip[0], n->ip[1], gout->shape[n->ip[0]]);
    int rc = win ? td_copy_(win, gout) : -1;
    if (rc == 0) rc = td_accumulate(n, 0, g);
    td_release(win);
    td_release(g);
    return rc;
}

td_tensor *td_expand(td_tensor *t, int ndim, const int64_t *shape) {
    char a[TD_SHAPE_BUF], b[TD_SHAPE_BUF];
    if (!t) return td_fail("expand: NULL tensor");
    td_tensor want = {.ndim = ndim};
    if (ndim > TD_MAX_DIMS || ndim < t->ndim)
        return td_fail("expand: cannot expand %s to %d dims", td_shape_str(t, a), ndim);
    memcpy(want.shape, shape, sizeof(int64_t) * (size_t)ndim);
    int64_t st[TD_MAX_DIMS];
    int lead = ndim - t->ndim;
    for (int i = 0; i < ndim; i++) {
        int j = i - lead;
        if (j < 0) st[i] = 0;
        else if (t->shape[j] == shape[i]) st[i] = t->stride[j];
        else if (t->shape[j] == 1) st[i] = 0;
        else return td_fail("expand: %s cannot broadcast to %s", td_shape_str(t, a), td_shape_str(&want, b));
    }
    td_tensor *out = td_view_of(t, ndim, shape, st, t->data - t->storage->data);
    td_record(TD_OP_EXPAND, out, 1, &t);
    return out;
}

int td_bw_expand(td_node *n, td_tensor *gout) { return td_accumulate(n, 0, gout); }

td_tensor *td_clone(td_tensor *t) {
    if (!t) return td_fail("clone: NULL tensor");
    td_tensor *out = td_new(t->ndim, t->shape);
    if (!out) return NULL;
    td_copy_(out, t);
    td_record(TD_OP_COPY, out, 1, &t);
    return out;
}

td_tensor *td_contiguous(td_tensor *t) {
    if (!t) return td_fail("contiguous: NULL tensor");
    if (td_is_contiguous(t)) {
        td_retain(t);
        return t;
    }
    return td_clone(t);
}

int td_bw_copy(td_node *n, td_tensor *gout) { return td_accumulate(n, 0, gout); }
