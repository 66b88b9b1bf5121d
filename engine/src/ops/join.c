/* join.c - joining (concat, stack) and indexing (index_select, gather,
 * scatter_add, one_hot). Index tensors are float32 holding whole numbers;
 * every index is checked before anything is written. */
#include "internal.h"
#include <math.h>
#include <stdio.h>
#include <string.h>

static bool wants(td_node *n, int k) { return n->in[k] && n->in[k]->requires_grad; }

/* ---- concat, stack ---- */

/* Checks that ts[0..n) agree on every dim but `ax`; fills the output shape. */
static int concat_shape(const char *op, int n, td_tensor *const *ts, int axis, int *ax, int64_t *shape) {
    char a[TD_SHAPE_BUF], b[TD_SHAPE_BUF];
    if (n < 1 || !ts) return td_failc("%s: needs at least one tensor (got %d)", op, n);
    for (int k = 0; k < n; k++)
        if (!ts[k]) return td_failc("%s: tensor %d is NULL", op, k);
    const td_tensor *t0 = ts[0];
    *ax = td_normalize_axis(axis, t0->ndim);
    if (*ax < 0) return td_failc("%s: axis %d out of range for %s", op, axis, td_shape_str(t0, a));
    memcpy(shape, t0->shape, sizeof(int64_t) * TD_MAX_DIMS);
    for (int k = 1; k < n; k++) {
        const td_tensor *t = ts[k];
        bool ok = t->ndim == t0->ndim;
        for (int d = 0; ok && d < t->ndim; d++) ok = d == *ax || t->shape[d] == t0->shape[d];
        if (!ok)
            return td_failc("%s: tensor %d %s does not match tensor 0 %s outside axis %d", op, k,
                            td_shape_str(t, b), td_shape_str(t0, a), *ax);
        shape[*ax] += t->shape[*ax];
    }
    return 0;
}

/* Copies the inputs into out side by side along ax (no recording). */
static int concat_copy(td_tensor *out, int n, td_tensor *const *ts, int ax) {
    int64_t off = 0;
    for (int k = 0; k < n; k++) {
        int64_t sh[TD_MAX_DIMS];
        memcpy(sh, out->shape, sizeof sh);
        sh[ax] = ts[k]->shape[ax];
        int64_t base = out->data - out->storage->data + off * out->stride[ax];
        td_tensor *win = td_view_of(out, out->ndim, sh, out->stride, base);
        int rc = win ? td_copy_(win, ts[k]) : -1;
        td_release(win);
        if (rc) return rc;
        off += sh[ax];
    }
    return 0;
}

td_tensor *td_concat(int n, td_tensor *const *ts, int axis) {
    int ax = 0;
    int64_t shape[TD_MAX_DIMS];
    if (concat_shape("concat", n, ts, axis, &ax, shape)) return NULL;
    /* A node holds TD_MAX_INPUTS inputs: with more inputs that need a
     * gradient, concat groups first (a tree of depth log4(n)). */
    if (n > TD_MAX_INPUTS && td_needs_grad(n, ts)) {
        td_tensor *part[TD_MAX_INPUTS] = {0};
        int per = (n + TD_MAX_INPUTS - 1) / TD_MAX_INPUTS, np = 0;
        bool ok = true;
        for (int k = 0; k < n && ok; k += per) ok = (part[np++] = td_concat(n - k < per ? n - k : per, ts + k, axis));
        td_tensor *out = ok ? td_concat(np, part, axis) : NULL;
        for (int k = 0; k < np; k++) td_release(part[k]);
        return out;
    }
    td_tensor *out = td_new(ts[0]->ndim, shape);
    if (!out) return NULL;
    if (concat_copy(out, n, ts, ax)) {
        td_release(out);
        return NULL;
    }
    td_node *node = td_record(TD_OP_CONCAT, out, n, ts);
    if (node) node->ip[0] = ax;
    return out;
}

/* Copies the slice [off, off + g->shape[ax]) along ax of src (any strides)
 * into the contiguous g of the slice's shape. */
static void slice_copy(const td_tensor *src, int ax, int64_t off, td_tensor *g) {
    int last = g->ndim - 1;
    int64_t inner = g->shape[last], rows = inner ? g->numel / inner : 0, sstep = src->stride[last];
    const float *base = src->data + off * src->stride[ax];
    #pragma omp parallel for if (g->numel > TD_PAR_MIN)
    for (int64_t r = 0; r < rows; r++) {
        int64_t o = 0, rem = r;
        for (int d = last - 1; d >= 0; d--) {
            o += (rem % g->shape[d]) * src->stride[d];
            rem /= g->shape[d];
        }
        float *dst = g->data + r * inner;
        for (int64_t j = 0; j < inner; j++) dst[j] = base[o + j * sstep];
    }
}

int td_bw_concat(td_node *n, td_tensor *gout) {
    int ax = (int)n->ip[0];
    int64_t off = 0;
    for (int k = 0; k < n->nin; k++) {
        td_tensor *in = n->in[k];
        if (wants(n, k)) {
            td_tensor *g = td_new(in->ndim, in->shape);
            if (!g) return -1;
            slice_copy(gout, ax, off, g);
            int rc = td_accumulate(n, k, g);
            td_release(g);
            if (rc) return rc;
        }
        off += in->shape[ax];
    }
    return 0;
}

td_tensor *td_stack(int n, td_tensor *const *ts, int axis) {
    char a[TD_SHAPE_BUF], b[TD_SHAPE_BUF];
    if (n < 1 || !ts) return td_fail("stack: needs at least one tensor (got %d)", n);
    for (int k = 0; k < n; k++) {
        if (!ts[k]) return td_fail("stack: tensor %d is NULL", k);
        if (!td_same_shape(ts[k], ts[0]))
            return td_fail("stack: tensor %d %s does not match tensor 0 %s", k, td_shape_str(ts[k], b),
                           td_shape_str(ts[0], a));
    }
    int nd = ts[0]->ndim, ax = td_normalize_axis(axis, nd + 1);
    if (ax < 0 || nd + 1 > TD_MAX_DIMS)
        return td_fail("stack: axis %d out of range for %d tensors of %s", axis, n, td_shape_str(ts[0], a));
    int64_t sh[TD_MAX_DIMS];
    for (int d = 0, j = 0; d <= nd; d++) sh[d] = d == ax ? 1 : ts[0]->shape[j++];
    td_tensor *stackbuf[16], **u = n <= 16 ? stackbuf : td_alloc(sizeof(td_tensor *) * (size_t)n);
    if (!u) return td_fail("stack: out of memory for %d tensors", n);
    int made = 0;
    while (made < n && (u[made] = td_reshape(ts[made], nd + 1, sh))) made++;
    td_tensor *out = made == n ? td_concat(n, u, ax) : NULL;
    for (int k = 0; k < made; k++) td_release(u[k]);
    if (u != stackbuf) td_free(u, sizeof(td_tensor *) * (size_t)n);
    return out;
}

/* ---- indices ---- */

/* Reads the whole-number indices of `index` (any strides) into a buffer of
 * index->numel int64 (td_alloc; free with free_indices), each in [0, limit).
 * On a bad value fails naming op, the value, the axis and the shape of a
 * (or the number of classes when a is NULL). */
static int64_t *read_indices(const char *op, const td_tensor *index, int64_t limit, int axis,
                             const td_tensor *a) {
    char s[TD_SHAPE_BUF], si[TD_SHAPE_BUF];
    int64_t n = index->numel;
    float *tmp = td_alloc(sizeof(float) * (size_t)(n + 1));
    int64_t *idx = td_alloc(sizeof(int64_t) * (size_t)(n + 1));
    if (!tmp || !idx) {
        if (tmp) td_free(tmp, sizeof(float) * (size_t)(n + 1));
        if (idx) td_free(idx, sizeof(int64_t) * (size_t)(n + 1));
        return td_fail("%s: out of memory for %lld indices", op, (long long)n);
    }
    td_copy_to_buffer(index, tmp);
    int64_t bad = -1;
    for (int64_t i = 0; i < n && bad < 0; i++) {
        float v = tmp[i];
        if (!(v >= 0.0f && (double)v < (double)limit && v == floorf(v))) bad = i;
        else idx[i] = (int64_t)v;
    }
    float badv = bad >= 0 ? tmp[bad] : 0.0f;
    td_free(tmp, sizeof(float) * (size_t)(n + 1));
    if (bad < 0) return idx;
    td_free(idx, sizeof(int64_t) * (size_t)(n + 1));
    const char *why = badv == floorf(badv) ? "out of range" : "not a whole number";
    if (!a)
        return td_fail("%s: index value %g (element %lld of index %s) is %s for %lld classes", op, badv,
                       (long long)bad, td_shape_str(index, si), why, (long long)limit);
    return td_fail("%s: index value %g (element %lld of index %s) is %s for axis %d of size %lld in %s", op,
                   badv, (long long)bad, td_shape_str(index, si), why, axis, (long long)limit,
                   td_shape_str(a, s));
}

static void free_indices(int64_t *idx, int64_t n) { td_free(idx, sizeof(int64_t) * (size_t)(n + 1)); }

/* A private contiguous copy of the index for backward (never recorded). */
static td_tensor *index_copy(const td_tensor *index) {
    td_tensor *c = td_new(index->ndim, index->shape);
    if (c && td_copy_(c, index)) {
        td_release(c);
        return NULL;
    }
    return c;
}

/* ---- index_select ---- */

/* a [O, L, I] (contiguous), idx [K] in [0, L) -> y [O, K, I]. */
static void index_select_forward(const float *a, const int64_t *idx, float *y, int64_t O, int64_t L,
                                 int64_t K, int64_t I) {
    #pragma omp parallel for collapse(2) if (O * K * I > TD_PAR_MIN)
    for (int64_t o = 0; o < O; o++)
        for (int64_t k = 0; k < K; k++)
            memcpy(y + (o * K + k) * I, a + (o * L + idx[k]) * I, sizeof(float) * (size_t)I);
}

/* gy [O, K, I] -> ga [O, L, I] (overwritten); repeated indices add up.
 * Threads split (o, block of I), so no two write the same element. */
static void index_select_backward(const float *gy, const int64_t *idx, float *ga, int64_t O, int64_t L,
                                  int64_t K, int64_t I) {
    enum { BLK = 64 };
    int64_t nb = (I + BLK - 1) / BLK;
    memset(ga, 0, sizeof(float) * (size_t)(O * L * I));
    #pragma omp parallel for collapse(2) if (O * K * I > TD_PAR_MIN)
    for (int64_t o = 0; o < O; o++)
        for (int64_t bl = 0; bl < nb; bl++) {
            int64_t i0 = bl * BLK, i1 = i0 + BLK < I ? i0 + BLK : I;
            for (int64_t k = 0; k < K; k++) {
                float *d = ga + (o * L + idx[k]) * I;
                const float *s = gy + (o * K + k) * I;
                for (int64_t i = i0; i < i1; i++) d[i] += s[i];
            }
        }
}

static void outer_inner(const td_tensor *t, int ax, int64_t *O, int64_t *I) {
    *O = td_shape_numel(ax, t->shape);
    *I = td_shape_numel(t->ndim - ax - 1, t->shape + ax + 1);
}

td_tensor *td_index_select(td_tensor *a, int axis, td_tensor *index) {
    char s[TD_SHAPE_BUF], si[TD_SHAPE_BUF];
    if (!a || !index) return td_fail("index_select: NULL argument");
    int ax = td_normalize_axis(axis, a->ndim);
    if (ax < 0) return td_fail("index_select: axis %d out of range for %s", axis, td_shape_str(a, s));
    if (index->ndim > 1)
        return td_fail("index_select: index %s must be 1-D (input %s)", td_shape_str(index, si), td_shape_str(a, s));
    int64_t *idx = read_indices("index_select", index, a->shape[ax], ax, a);
    if (!idx) return NULL;
    int64_t O, I, K = index->numel, L = a->shape[ax], sh[TD_MAX_DIMS];
    outer_inner(a, ax, &O, &I);
    memcpy(sh, a->shape, sizeof sh);
    sh[ax] = K;
    td_tensor *ac = td_contiguous(a);
    td_tensor *out = ac ? td_new(a->ndim, sh) : NULL;
    if (out) {
        index_select_forward(ac->data, idx, out->data, O, L, K, I);
        td_node *node = td_record(TD_OP_INDEX_SELECT, out, 1, &a);
        td_tensor *ic = node ? index_copy(index) : NULL;
        if (node) node->ip[0] = ax;
        if (ic) td_save(node, 0, ic);
        td_release(ic);
    }
    td_release(ac);
    free_indices(idx, K);
    return out;
}

int td_bw_index_select(td_node *n, td_tensor *gout) {
    td_tensor *a = n->in[0], *index = n->saved[0];
    if (!index) return td_failc("index_select: the index was not saved");
    int ax = (int)n->ip[0];
    int64_t *idx = read_indices("index_select", index, a->shape[ax], ax, a);
    if (!idx) return -1;
    int64_t O, I, K = index->numel;
    outer_inner(a, ax, &O, &I);
    td_tensor *gc = td_contiguous(gout);
    td_tensor *ga = gc ? td_new(a->ndim, a->shape) : NULL;
    int rc = -1;
    if (ga) {
        index_select_backward(gc->data, idx, ga->data, O, a->shape[ax], K, I);
        rc = td_accumulate(n, 0, ga);
    }
    free_indices(idx, K);
    td_release(gc);
    td_release(ga);
    return rc;
}

/* ---- gather, scatter_add ---- */

/* Both walk the index [shape] by columns: a column fixes every coordinate
 * but the axis, and runs along it. Coordinates off the axis are the same in
 * index, source and destination, so distinct columns never touch the same
 * destination element and columns can go parallel. */
typedef struct {
    int ndim, ax;
    int64_t shape[TD_MAX_DIMS];    /* of the index */
    const int64_t *idx;            /* row-major over shape */
} td_cols;

/* Offset of column c (row-major over the dims but ax) with strides st. */
static int64_t col_offset(const td_cols *c, int64_t col, const int64_t *st) {
    int64_t off = 0;
    for (int d = c->ndim - 1; d >= 0; d--) {
        if (d == c->ax) continue;
        off += (col % c->shape[d]) * st[d];
        col /= c->shape[d];
    }
    return off;
}

/* dst[p] = src[p with the axis coordinate replaced by idx[p]]; dst, src
 * with strides dst_st, src_st. */
static void gather_kernel(const td_cols *c, const float *src, const int64_t *src_st, float *dst,
                          const int64_t *dst_st) {
    int64_t len = c->shape[c->ax], inner = td_shape_numel(c->ndim - c->ax - 1, c->shape + c->ax + 1);
    int64_t ncol = len ? td_shape_numel(c->ndim, c->shape) / len : 0;
    #pragma omp parallel for if (ncol * len > TD_PAR_MIN)
    for (int64_t col = 0; col < ncol; col++) {
        const float *s = src + col_offset(c, col, src_st);
        float *d = dst + col_offset(c, col, dst_st);
        const int64_t *ix = c->idx + (col / inner) * len * inner + col % inner;
        for (int64_t j = 0; j < len; j++) d[j * dst_st[c->ax]] = s[ix[j * inner] * src_st[c->ax]];
    }
}

/* dst[p with the axis coordinate replaced by idx[p]] += src[p]. */
static void scatter_add_kernel(const td_cols *c, const float *src, const int64_t *src_st, float *dst,
                               const int64_t *dst_st) {
    int64_t len = c->shape[c->ax], inner = td_shape_numel(c->ndim - c->ax - 1, c->shape + c->ax + 1);
    int64_t ncol = len ? td_shape_numel(c->ndim, c->shape) / len : 0;
    #pragma omp parallel for if (ncol * len > TD_PAR_MIN)
    for (int64_t col = 0; col < ncol; col++) {
        const float *s = src + col_offset(c, col, src_st);
        float *d = dst + col_offset(c, col, dst_st);
        const int64_t *ix = c->idx + (col / inner) * len * inner + col % inner;
        for (int64_t j = 0; j < len; j++) d[ix[j * inner] * dst_st[c->ax]] += s[j * src_st[c->ax]];
    }
}

/* index must have a's ndim and fit in a (in `big`) on every dim but the
 * axis (on every dim when all_dims). */
static int index_fits(const char *op, const td_tensor *index, const td_tensor *big, int ax, bool all_dims,
                      const char *bigname) {
    char s[TD_SHAPE_BUF], si[TD_SHAPE_BUF];
    if (index->ndim != big->ndim)
        return td_failc("%s: index %s must have as many dims as %s %s", op, td_shape_str(index, si), bigname,
                        td_shape_str(big, s));
    for (int d = 0; d < index->ndim; d++)
        if ((all_dims || d != ax) && index->shape[d] > big->shape[d])
            return td_failc("%s: index %s is larger than %s %s at dim %d", op, td_shape_str(index, si), bigname,
                            td_shape_str(big, s), d);
    return 0;
}

static td_cols make_cols(const td_tensor *index, int ax, const int64_t *idx) {
    td_cols c = {.ndim = index->ndim, .ax = ax, .idx = idx};
    memcpy(c.shape, index->shape, sizeof c.shape);
    return c;
}

td_tensor *td_gather(td_tensor *a, int axis, td_tensor *index) {
    char s[TD_SHAPE_BUF];
    if (!a || !index) return td_fail("gather: NULL argument");
    int ax = td_normalize_axis(axis, a->ndim);
    if (ax < 0) return td_fail("gather: axis %d out of range for %s", axis, td_shape_str(a, s));
    if (index_fits("gather", index, a, ax, false, "input")) return NULL;
    int64_t *idx = read_indices("gather", index, a->shape[ax], ax, a);
    if (!idx) return NULL;
    td_tensor *out = td_new(index->ndim, index->shape);
    if (out) {
        td_cols c = make_cols(index, ax, idx);
        gather_kernel(&c, a->data, a->stride, out->data, out->stride);
        td_node *node = td_record(TD_OP_GATHER, out, 1, &a);
        td_tensor *ic = node ? index_copy(index) : NULL;
        if (node) node->ip[0] = ax;
        if (ic) td_save(node, 0, ic);
        td_release(ic);
    }
    free_indices(idx, index->numel);
    return out;
}

int td_bw_gather(td_node *n, td_tensor *gout) {
    td_tensor *a = n->in[0], *index = n->saved[0];
    if (!index) return td_failc("gather: the index was not saved");
    int ax = (int)n->ip[0];
    int64_t *idx = read_indices("gather", index, a->shape[ax], ax, a);
    if (!idx) return -1;
    td_tensor *gc = td_contiguous(gout);
    td_tensor *ga = gc ? td_zeros(a->ndim, a->shape) : NULL;
    int rc = -1;
    if (ga) {
        td_cols c = make_cols(index, ax, idx);
        scatter_add_kernel(&c, gc->data, gc->stride, ga->data, ga->stride);
        rc = td_accumulate(n, 0, ga);
    }
    free_indices(idx, index->numel);
    td_release(gc);
    td_release(ga);
    return rc;
}

td_tensor *td_scatter_add(td_tensor *a, int axis, td_tensor *index, td_tensor *src) {
    char s[TD_SHAPE_BUF];
    if (!a || !index || !src) return td_fail("scatter_add: NULL argument");
    int ax = td_normalize_axis(axis, a->ndim);
    if (ax < 0) return td_fail("scatter_add: axis %d out of range for %s", axis, td_shape_str(a, s));
    if (index_fits("scatter_add", index, a, ax, false, "input") ||
        index_fits("scatter_add", index, src, ax, true, "src"))
        return NULL;
    int64_t *idx = read_indices("scatter_add", index, a->shape[ax], ax, a);
    if (!idx) return NULL;
    td_tensor *out = td_new(a->ndim, a->shape);
    if (out && td_copy_(out, a)) {
        td_release(out);
        out = NULL;
    }
    if (out) {
        td_cols c = make_cols(index, ax, idx);
        scatter_add_kernel(&c, src->data, src->stride, out->data, out->stride);
        td_tensor *ins[2] = {a, src};
        td_node *node = td_record(TD_OP_SCATTER_ADD, out, 2, ins);
        td_tensor *ic = node ? index_copy(index) : NULL;
        if (node) node->ip[0] = ax;
        if (ic) td_save(node, 0, ic);
        td_release(ic);
    }
    free_indices(idx, index->numel);
    return out;
}

/* d out / d a = gout; d out / d src = gout gathered at the index (zero where
 * src lies outside the index's extent). */
int td_bw_scatter_add(td_node *n, td_tensor *gout) {
    td_tensor *a = n->in[0], *src = n->in[1], *index = n->saved[0];
    if (td_accumulate(n, 0, gout)) return -1;
    if (!wants(n, 1)) return 0;
    if (!index) return td_failc("scatter_add: the index was not saved");
    int ax = (int)n->ip[0];
    int64_t *idx = read_indices("scatter_add", index, a->shape[ax], ax, a);
    if (!idx) return -1;
    td_tensor *gc = td_contiguous(gout);
    td_tensor *gs = gc ? td_zeros(src->ndim, src->shape) : NULL;
    int rc = -1;
    if (gs) {
        td_cols c = make_cols(index, ax, idx);
        gather_kernel(&c, gc->data, gc->stride, gs->data, gs->stride);
        rc = td_accumulate(n, 1, gs);
    }
    free_indices(idx, index->numel);
    td_release(gc);
    td_release(gs);
    return rc;
}

/* ---- one_hot ---- */

td_tensor *td_one_hot(td_tensor *index, int64_t nclasses) {
    char si[TD_SHAPE_BUF];
    if (!index) return td_fail("one_hot: NULL index");
    if (nclasses < 1)
        return td_fail("one_hot: %lld classes for index %s, need at least 1", (long long)nclasses,
                       td_shape_str(index, si));
    if (index->ndim + 1 > TD_MAX_DIMS)
        return td_fail("one_hot: index %s has too many dims to add a class axis", td_shape_str(index, si));
    int64_t *idx = read_indices("one_hot", index, nclasses, index->ndim, NULL);
    if (!idx) return NULL;
    int64_t sh[TD_MAX_DIMS];
    memcpy(sh, index->shape, sizeof(int64_t) * (size_t)index->ndim);
    sh[index->ndim] = nclasses;
    td_tensor *out = td_zeros(index->ndim + 1, sh);
    if (out)
        for (int64_t i = 0; i < index->numel; i++) out->data[i * nclasses + idx[i]] = 1.0f;
    free_indices(idx, index->numel);
    return out;
}
