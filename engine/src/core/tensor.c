/* tensor.c - tensor headers, storage refcounts, creation and copies. */
#include "internal.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

static int64_t live_tensors;

int64_t td_live_tensors(void) { return live_tensors; }

int64_t td_shape_numel(int ndim, const int64_t *shape) {
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) n *= shape[i];
    return n;
}

void td_contiguous_strides(int ndim, const int64_t *shape, int64_t *stride) {
    int64_t s = 1;
    for (int i = ndim - 1; i >= 0; i--) {
        stride[i] = s;
        s *= shape[i];
    }
}

bool td_same_shape(const td_tensor *a, const td_tensor *b) {
    if (a->ndim != b->ndim) return false;
    for (int i = 0; i < a->ndim; i++)
        if (a->shape[i] != b->shape[i]) return false;
    return true;
}

int td_normalize_axis(int axis, int ndim) {
    int a = axis < 0 ? axis + ndim : axis;
    return (a < 0 || a >= ndim) ? -1 : a;
}

static int check_shape(const char *op, int ndim, const int64_t *shape) {
    if (ndim < 0 || ndim > TD_MAX_DIMS)
        return td_failc("%s: %d dims, at most %d are supported", op, ndim, TD_MAX_DIMS);
    if (ndim > 0 && !shape) return td_failc("%s: shape is NULL", op);
    /* the product of the non-zero sizes bounds every stride, even when a
     * zero size makes numel 0 */
    int64_t span = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0) return td_failc("%s: negative size %lld in dim %d", op, (long long)shape[i], i);
        if (shape[i] > 0 && span > ((int64_t)1 << 48) / shape[i])
            return td_failc("%s: shape is too large (over 2^48 elements)", op);
        if (shape[i] > 0) span *= shape[i];
    }
    return 0;
}

static td_tensor *new_header(int ndim, const int64_t *shape) {
    td_tensor *t = calloc(1, sizeof *t);
    if (!t) return td_fail("tensor: out of memory");
    t->ndim = ndim;
    for (int i = 0; i < ndim; i++) t->shape[i] = shape[i];
    t->numel = td_shape_numel(ndim, shape);
    t->refcount = 1;
    t->is_leaf = 1;
    live_tensors++;
    return t;
}

td_tensor *td_new(int ndim, const int64_t *shape) {
    if (check_shape("empty", ndim, shape)) return NULL;
    td_tensor *t = new_header(ndim, shape);
    if (!t) return NULL;
    td_storage *s = calloc(1, sizeof *s);
    int64_t n = t->numel > 0 ? t->numel : 1;
    float *data = s ? td_alloc((size_t)n * sizeof(float)) : NULL;
    if (!data) {
        free(s);
        free(t);
        live_tensors--;
        return td_fail("empty: out of memory for %lld floats", (long long)n);
    }
    s->data = data;
    s->nfloats = n;
    s->refcount = 1;
    t->storage = s;
    t->data = data;
    td_contiguous_strides(ndim, shape, t->stride);
    return t;
}

td_tensor *td_view_of(const td_tensor *src, int ndim, const int64_t *shape,
                      const int64_t *stride, int64_t offset) {
    td_tensor *t = new_header(ndim, shape);
    if (!t) return NULL;
    for (int i = 0; i < ndim; i++) t->stride[i] = stride[i];
    t->storage = src->storage;
    t->storage->refcount++;
    t->data = src->storage->data + offset; /* offset from the storage base, as callers pass it */
    return t;
}

void td_retain(td_tensor *t) {
    if (t) t->refcount++;
}

static void destroy(td_tensor *t);

/* Releasing the last tensor of a long graph frees a long chain of nodes.
 * The chain is walked with an explicit stack instead of recursion, so a graph
 * of a million ops does not overflow the C stack. */
static _Thread_local td_tensor **pending;
static _Thread_local int64_t npending, cap_pending;
static _Thread_local bool releasing;

static bool push_pending(td_tensor *t) {
    if (npending == cap_pending) {
        int64_t cap = cap_pending ? cap_pending * 2 : 256;
        td_tensor **p = realloc(pending, (size_t)cap * sizeof *p);
        if (!p) return false;
        pending = p;
        cap_pending = cap;
    }
    pending[npending++] = t;
    return true;
}

void td_release(td_tensor *t) {
    if (!t || --t->refcount > 0) return;
    if (!push_pending(t)) {
        destroy(t); /* out of memory for the stack: fall back to recursion */
        return;
    }
    if (releasing) return;
    releasing = true;
    while (npending > 0) destroy(pending[--npending]);
    releasing = false;
}

static void node_release(td_node *n) {
    if (!n || --n->refcount > 0) return;
    for (int i = 0; i < TD_MAX_INPUTS; i++) td_release(n->in[i]);
    for (int i = 0; i < TD_MAX_SAVED; i++) td_release(n->saved[i]);
    td_release(n->gout);
    free(n);
}

static void destroy(td_tensor *t) {
    if (t->storage && --t->storage->refcount == 0) {
        td_free(t->storage->data, (size_t)t->storage->nfloats * sizeof(float));
        free(t->storage);
    }
    td_release(t->grad);
    node_release(t->node);
    live_tensors--;
    free(t);
}

td_tensor *td_empty(int ndim, const int64_t *shape) { return td_new(ndim, shape); }

td_tensor *td_full(int ndim, const int64_t *shape, float value) {
    td_tensor *t = td_new(ndim, shape);
    if (t) td_fill(t, value);
    return t;
}

td_tensor *td_zeros(int ndim, const int64_t *shape) { return td_full(ndim, shape, 0.0f); }
td_tensor *td_ones(int ndim, const int64_t *shape) { return td_full(ndim, shape, 1.0f); }
td_tensor *td_scalar(float value) { return td_full(0, NULL, value); }

td_tensor *td_arange(double start, double end, double step) {
    if (step == 0 || !isfinite(start) || !isfinite(end) || !isfinite(step))
        return td_fail("arange: start %g, end %g, step %g do not make a range", start, end, step);
    int64_t n = (int64_t)ceil((end - start) / step);
    if (n < 0) n = 0;
    td_tensor *t = td_new(1, &n);
    if (!t) return NULL;
    for (int64_t i = 0; i < n; i++) t->data[i] = (float)(start + (double)i * step);
    return t;
}

td_tensor *td_from_buffer(int ndim, const int64_t *shape, const float *values) {
    td_tensor *t = td_new(ndim, shape);
    if (!t) return NULL;
    if (t->numel && !values) {
        td_release(t);
        return td_fail("from_buffer: values is NULL");
    }
    memcpy(t->data, values, (size_t)t->numel * sizeof(float));
    return t;
}

int td_is_contiguous(const td_tensor *t) {
    int64_t s = 1;
    for (int i = t->ndim - 1; i >= 0; i--) {
        if (t->shape[i] != 1 && t->stride[i] != s) return 0;
        s *= t->shape[i];
    }
    return 1;
}

/* Offset in elements of the flat (row-major) index i of t. */
static inline int64_t strided_offset(const td_tensor *t, int64_t i) {
    int64_t off = 0;
    for (int d = t->ndim - 1; d >= 0; d--) {
        int64_t sz = t->shape[d];
        off += (i % sz) * t->stride[d];
        i /= sz;
    }
    return off;
}

/* Copies src (any strides) into dst (any strides), same numel, row-major order. */
static void strided_copy(float *dst_base, const td_tensor *dst, const td_tensor *src) {
    int64_t n = src->numel;
    bool dc = td_is_contiguous(dst), sc = td_is_contiguous(src);
    if (dc && sc) {
        memcpy(dst_base, src->data, (size_t)n * sizeof(float));
        return;
    }
    int64_t inner = src->ndim ? src->shape[src->ndim - 1] : 1;
    int64_t sstep = src->ndim ? src->stride[src->ndim - 1] : 1;
    int64_t rows = inner ? n / inner : 0;
    /* dst's rows of `inner` elements, when its last dim is `inner` too */
    bool drows = dst->ndim && dst->shape[dst->ndim - 1] == inner;
    int64_t dstep = drows ? dst->stride[dst->ndim - 1] : 1;
    #pragma omp parallel for if (n > TD_PAR_MIN)
    for (int64_t r = 0; r < rows; r++) {
        const float *s = src->data + strided_offset(src, r * inner);
        if (dc || drows) {
            float *d = dst_base + (dc ? r * inner : strided_offset(dst, r * inner));
            if (sstep == 1 && (dc || dstep == 1))
                for (int64_t j = 0; j < inner; j++) d[j] = s[j];
            else
                for (int64_t j = 0; j < inner; j++) d[j * dstep] = s[j * sstep];
            continue;
        }
        for (int64_t j = 0; j < inner; j++) *(dst_base + strided_offset(dst, r * inner + j)) = s[j * sstep];
    }
}

int td_copy_to_buffer(const td_tensor *t, float *out) {
    if (!t || !out) return td_failc("copy_to_buffer: NULL argument");
    td_tensor tmp = *t;
    td_contiguous_strides(t->ndim, t->shape, tmp.stride);
    strided_copy(out, &tmp, t);
    return 0;
}

int td_fill(td_tensor *t, float value) {
    if (!t) return td_failc("fill: NULL tensor");
    if (td_is_contiguous(t)) {
        float *d = t->data;
        #pragma omp parallel for if (t->numel > TD_PAR_MIN)
        for (int64_t i = 0; i < t->numel; i++) d[i] = value;
        return 0;
    }
    for (int64_t i = 0; i < t->numel; i++) t->data[strided_offset(t, i)] = value;
    return 0;
}

int td_copy_(td_tensor *dst, const td_tensor *src) {
    char a[TD_SHAPE_BUF], b[TD_SHAPE_BUF];
    if (!dst || !src) return td_failc("copy_: NULL tensor");
    if (dst->numel != src->numel)
        return td_failc("copy_: destination %s and source %s differ in size",
                        td_shape_str(dst, a), td_shape_str(src, b));
    strided_copy(dst->data, dst, src);
    return 0;
}

float td_item(const td_tensor *t) {
    if (!t || t->numel != 1) {
        char a[TD_SHAPE_BUF];
        td_fail("item: tensor %s does not hold exactly one value", td_shape_str(t, a));
        return NAN;
    }
    return t->data[0];
}

void td_set_num_threads(int n) {
#ifdef _OPENMP
    if (n > 0) omp_set_num_threads(n);
#else
    (void)n;
#endif
}

int td_get_num_threads(void) {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}
