/* reduce.c - reductions over axes: sum, mean, var, logsumexp, max, argmax.
 *
 * Each reduction lays its input out as a contiguous [outer, len, inner]
 * (plan_reduce): len is the product of the reduced axes, made adjacent by a
 * permutation (kept axes first) when they are not. The output is then
 * [outer, inner], already in the order of the kept axes. */
#include "reduce_kernels.h"
#include <stdlib.h>

typedef struct {
    td_tensor *src; /* contiguous; new reference */
    int64_t outer, len, inner;
} plan;

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

/* True when the reduced axes of size > 1 are adjacent. */
static bool axes_adjacent(const td_tensor *a, uint32_t axes) {
    int state = 0; /* 0 before the block, 1 in it, 2 after it */
    for (int d = 0; d < a->ndim; d++) {
        if (a->shape[d] == 1) continue;
        bool red = axes >> d & 1;
        if (red && state == 2) return false;
        if (red) state = 1;
        else if (state == 1) state = 2;
    }
    return true;
}

/* Lays a out as [outer, len, inner] (see the top of the file). Views and
 * copies are recorded when grad mode is on, so the gradient reaches a. */
static int plan_reduce(td_tensor *a, uint32_t axes, plan *p) {
    p->outer = p->len = p->inner = 1;
    if (axes_adjacent(a, axes)) {
        int first = a->ndim, last = -1;
        for (int d = 0; d < a->ndim; d++)
            if ((axes >> d & 1) && a->shape[d] != 1) {
                if (first > d) first = d;
                last = d;
            }
        for (int d = 0; d < a->ndim; d++) {
            if (d < first) p->outer *= a->shape[d];
            else if (d <= last) p->len *= a->shape[d];
            else p->inner *= a->shape[d];
        }
        p->src = td_contiguous(a);
        return p->src ? 0 : -1;
    }
    int perm[TD_MAX_DIMS], k = 0;
    for (int d = 0; d < a->ndim; d++)
        if (!(axes >> d & 1)) {
            perm[k++] = d;
            p->outer *= a->shape[d];
        }
    for (int d = 0; d < a->ndim; d++)
        if (axes >> d & 1) {
            perm[k++] = d;
            p->len *= a->shape[d];
        }
    td_tensor *pa = td_permute(a, perm);
    p->src = pa ? td_contiguous(pa) : NULL;
    td_release(pa);
    return p->src ? 0 : -1;
}

/* A new contiguous tensor of the reduced shape. */
static td_tensor *reduced_out(const td_tensor *a, uint32_t axes, int keepdim) {
    int64_t shape[TD_MAX_DIMS];
    int nd = reduced_shape(a, axes, keepdim, shape);
    return td_new(nd, shape);
}

/* ---- sum ---- */

#define TD_SUM_COLS 16384 /* column chunk of sums, in heap buffers */

/* Sums rows [r0, r1) of the columns [j0, j0 + w) of slice o into acc;
 * part is scratch for w floats. */
static void sum_task(const float *x, int64_t len, int64_t inner, int64_t o, int64_t j0, int64_t w,
                     int64_t r0, int64_t r1, double *acc, float *part) {
    const float *base = x + o * len * inner;
    if (inner == 1) {
        acc[0] = td_row_sum(base + r0, r1 - r0);
        return;
    }
    memset(acc, 0, sizeof(double) * (size_t)w);
    td_cols_sum(base + r0 * inner + j0, r1 - r0, inner, w, acc, part);
}

/* x [outer, len, inner] -> y [outer, inner]. Tasks are (slice, chunk of
 * up to TD_SUM_COLS columns); when there are fewer tasks than threads, len
 * is split too, each thread summing whole rows of its part (contiguous
 * streams), and the partial sums are added in a fixed order. */
static int sum_forward(const float *x, float *y, int64_t outer, int64_t len, int64_t inner) {
    int64_t w = inner <= 1 ? 1 : inner < TD_SUM_COLS ? inner : TD_SUM_COLS;
    int64_t nchunk = (inner + w - 1) / w, tasks = outer * nchunk;
    int nt = td_par_threads(outer * len * inner);
    int64_t nsplit = (tasks < nt && len >= 4 * nt) ? nt : 1;
    if (inner == 1 && nsplit == 1) { /* plain rows */
        #pragma omp parallel for schedule(static) if (nt > 1)
        for (int64_t o = 0; o < outer; o++) y[o] = (float)td_row_sum(x + o * len, len);
        return 0;
    }
    size_t per_thread = ((size_t)w * (sizeof(double) + sizeof(float)) + 63) / 64 * 64;
    size_t bytes = per_thread * (size_t)nt + (nsplit > 1 ? sizeof(double) * (size_t)(nsplit * outer * inner) : 0);
    char *scratch = malloc(bytes);
    if (!scratch) return td_failc("sum: out of memory for %zu bytes of partial sums", bytes);
    double *part = (double *)(scratch + per_thread * (size_t)nt);
    #pragma omp parallel num_threads(nt) if (nt > 1)
    {
#ifdef _OPENMP
        char *mine = scratch + per_thread * (size_t)omp_get_thread_num();
#else
        char *mine = scratch;
#endif
        double *acc = (double *)mine;
        float *fpart = (float *)(acc + w);
        #pragma omp for schedule(static)
        for (int64_t k = 0; k < tasks * nsplit; k++) {
            int64_t t = nsplit == 1 ? k : k / nsplit, s = nsplit == 1 ? 0 : k % nsplit;
            int64_t o = td_task_slice(t, nchunk), j0 = td_task_col(t, nchunk, w);
            int64_t wj = inner - j0 < w ? inner - j0 : w;
            int64_t r0 = nsplit == 1 ? 0 : len * s / nsplit, r1 = nsplit == 1 ? len : len * (s + 1) / nsplit;
            sum_task(x, len, inner, o, j0, wj, r0, r1, acc, fpart);
            if (nsplit == 1) {
                for (int64_t j = 0; j < wj; j++) y[o * inner + j0 + j] = (float)acc[j];
            } else {
                memcpy(part + s * outer * inner + o * inner + j0, acc, sizeof(double) * (size_t)wj);
            }
        }
    }
    for (int64_t i = 0; nsplit > 1 && i < outer * inner; i++) {
        double s = 0.0;
        for (int64_t k = 0; k < nsplit; k++) s += part[k * outer * inner + i];
        y[i] = (float)s;
    }
    free(scratch);
    return 0;
}

td_tensor *td_sum(td_tensor *a, uint32_t axes, int keepdim) {
    if (!a) return td_fail("sum: NULL tensor");
    if (resolve_axes("sum", a, &axes)) return NULL;
    plan p;
    int prev = td_set_grad_enabled(0);
    int rc = plan_reduce(a, axes, &p);
    td_set_grad_enabled(prev);
    if (rc) return NULL;
    td_tensor *out = reduced_out(a, axes, keepdim);
    if (out && sum_forward(p.src->data, out->data, p.outer, p.len, p.inner)) {
        td_release(out);
        out = NULL;
    }
    if (out) {
        td_node *node = td_record(TD_OP_SUM, out, 1, &a);
        if (node) node->ip[0] = axes;
    }
    td_release(p.src);
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

/* ---- mean and var: composites (gradients for free), var fused without grad ---- */

static int64_t reduced_count(const td_tensor *a, uint32_t axes) {
    int64_t c = 1;
    for (int d = 0; d < a->ndim; d++)
        if (axes >> d & 1) c *= a->shape[d];
    return c;
}

td_tensor *td_mean(td_tensor *a, uint32_t axes, int keepdim) {
    if (!a) return td_fail("mean: NULL tensor");
    if (resolve_axes("mean", a, &axes)) return NULL;
    td_tensor *s = td_sum(a, axes, keepdim);
    td_tensor *out = s ? td_mul_scalar(s, (float)(1.0 / (double)reduced_count(a, axes))) : NULL;
    td_release(s);
    return out;
}

/* Sum of squared deviations from the mean over rows [0, len) of the columns
 * [j0, j0 + w) of slice o, two passes in double. */
static void sqdev_task(const float *x, int64_t len, int64_t inner, int64_t o, int64_t j0, int64_t w,
                       double *ss) {
    double mean[TD_CHUNK];
    float part[TD_CHUNK];
    sum_task(x, len, inner, o, j0, w, 0, len, mean, part);
    const float *base = x + o * len * inner + j0;
    for (int64_t j = 0; j < w; j++) {
        mean[j] /= (double)len;
        ss[j] = 0.0;
    }
    for (int64_t r = 0; r < len; r++) {
        const float *s = base + r * inner;
        for (int64_t j = 0; j < w; j++) ss[j] += ((double)s[j] - mean[j]) * ((double)s[j] - mean[j]);
    }
}

static void var_forward(const float *x, float *y, int64_t outer, int64_t len, int64_t inner, double div) {
    int nt = td_par_threads(outer * len * inner);
    int64_t w = td_col_width(outer, inner, nt), nchunk = (inner + w - 1) / w;
    #pragma omp parallel for schedule(static) if (nt > 1)
    for (int64_t t = 0; t < outer * nchunk; t++) {
        int64_t o = td_task_slice(t, nchunk), j0 = td_task_col(t, nchunk, w), wj = inner - j0 < w ? inner - j0 : w;
        double ss[TD_CHUNK];
        sqdev_task(x, len, inner, o, j0, wj, ss);
        for (int64_t j = 0; j < wj; j++) y[o * inner + j0 + j] = (float)(ss[j] / div);
    }
}

td_tensor *td_var(td_tensor *a, uint32_t axes, int correction, int keepdim) {
    if (!a) return td_fail("var: NULL tensor");
    if (resolve_axes("var", a, &axes)) return NULL;
    if (correction < 0) {
        char s[TD_SHAPE_BUF];
        return td_fail("var: correction %d is negative (input %s)", correction, td_shape_str(a, s));
    }
    int64_t n = reduced_count(a, axes);
    double div = n - correction > 0 ? (double)(n - correction) : 0.0;
    if (!td_needs_grad(1, &a)) {
        plan p;
        if (plan_reduce(a, axes, &p)) return NULL;
        td_tensor *out = reduced_out(a, axes, keepdim);
        if (out) var_forward(p.src->data, out->data, p.outer, p.len, p.inner, div);
        td_release(p.src);
        return out;
    }
    td_tensor *m = td_mean(a, axes, 1);
    td_tensor *d = m ? td_sub(a, m) : NULL;
    td_tensor *sq = d ? td_square(d) : NULL;
    td_tensor *s = sq ? td_sum(sq, axes, keepdim) : NULL;
    td_tensor *out = s ? td_mul_scalar(s, (float)(1.0 / div)) : NULL;
    td_release(m);
    td_release(d);
    td_release(sq);
    td_release(s);
    return out;
}

/* ---- logsumexp ---- */

/* log sum exp of rows r of slice o, columns [j0, j0 + w), into y. */
static void lse_task(const float *x, float *y, int64_t len, int64_t inner, int64_t o, int64_t j0, int64_t w) {
    const float *base = x + o * len * inner + j0;
    float m[TD_CHUNK], tmp[TD_CHUNK];
    double s[TD_CHUNK];
    memset(s, 0, sizeof(double) * (size_t)w);
    if (inner == 1) m[0] = td_row_max(base, len);
    else td_cols_max(base, len, inner, w, m);
    if (inner == 1) {
        for (int64_t r0 = 0; r0 < len; r0 += TD_CHUNK) {
            int64_t wr = len - r0 < TD_CHUNK ? len - r0 : TD_CHUNK;
            for (int64_t r = 0; r < wr; r++) tmp[r] = base[r0 + r] - m[0];
            td_vexp(tmp, tmp, wr);
            s[0] += td_row_sum(tmp, wr);
        }
    } else {
        for (int64_t r = 0; r < len; r++) {
            const float *row = base + r * inner;
            for (int64_t j = 0; j < w; j++) tmp[j] = row[j] - m[j];
            td_vexp(tmp, tmp, w);
            for (int64_t j = 0; j < w; j++) s[j] += tmp[j];
        }
    }
    for (int64_t j = 0; j < w; j++) y[o * inner + j0 + j] = isinf(m[j]) ? m[j] : m[j] + (float)log(s[j]);
}

/* log sum exp of the short rows [r0, r0 + nr) */
static void lse_short_rows(const float *x, float *y, int64_t r0, int64_t nr, int64_t len) {
    float m[TD_CHUNK], e[TD_CHUNK];
    double s[TD_CHUNK];
    td_rows_exp(x + r0 * len, nr, len, m, e, s);
    for (int64_t r = 0; r < nr; r++) y[r0 + r] = isinf(m[r]) ? m[r] : m[r] + logf((float)s[r]);
}

/* x [outer, len, inner] -> y [outer, inner] */
static void lse_forward(const float *x, float *y, int64_t outer, int64_t len, int64_t inner) {
    int nt = td_par_threads(outer * len * inner);
    int64_t rb = inner == 1 ? td_short_rows(len) : 0;
    if (rb) {
        #pragma omp parallel for schedule(static) if (nt > 1)
        for (int64_t r0 = 0; r0 < outer; r0 += rb) lse_short_rows(x, y, r0, outer - r0 < rb ? outer - r0 : rb, len);
        return;
    }
    int64_t w = td_col_width(outer, inner, nt), nchunk = (inner + w - 1) / w;
    #pragma omp parallel for schedule(static) if (nt > 1)
    for (int64_t t = 0; t < outer * nchunk; t++) {
        int64_t o = td_task_slice(t, nchunk), j0 = td_task_col(t, nchunk, w);
        lse_task(x, y, len, inner, o, j0, inner - j0 < w ? inner - j0 : w);
    }
}

/* gin [outer, len, inner] = g [outer, inner] * exp(x - y), y the output */
static void lse_backward(const float *x, const float *y, const float *g, float *gin, int64_t outer,
                         int64_t len, int64_t inner) {
    int64_t rows = inner == 1 ? outer : outer * len, width = inner == 1 ? len : inner;
    #pragma omp parallel for schedule(static) if (td_par_threads(outer * len * inner) > 1)
    for (int64_t k = 0; k < rows; k++) {
        const float *xr = x + k * width;
        float *gr = gin + k * width;
        const float *yk = inner == 1 ? y + k : y + (k / len) * inner;
        const float *gk = inner == 1 ? g + k : g + (k / len) * inner;
        int64_t step = inner == 1 ? 0 : 1;
        for (int64_t i = 0; i < width; i++) gr[i] = xr[i] - yk[i * step];
        td_vexp(gr, gr, width);
        for (int64_t i = 0; i < width; i++) gr[i] *= gk[i * step];
    }
}

td_tensor *td_logsumexp(td_tensor *a, uint32_t axes, int keepdim) {
    if (!a) return td_fail("logsumexp: NULL tensor");
    if (resolve_axes("logsumexp", a, &axes)) return NULL;
    plan p;
    if (plan_reduce(a, axes, &p)) return NULL;
    td_tensor *out = reduced_out(a, axes, keepdim);
    if (out) {
        lse_forward(p.src->data, out->data, p.outer, p.len, p.inner);
        td_node *node = td_record(TD_OP_LOGSUMEXP, out, 1, &p.src);
        if (node) {
            node->ip[0] = p.outer;
            node->ip[1] = p.len;
            node->ip[2] = p.inner;
            td_tensor *alias = td_alias(out);
            td_save(node, 0, alias);
            td_release(alias);
        }
    }
    td_release(p.src);
    return out;
}

int td_bw_logsumexp(td_node *n, td_tensor *gout) {
    td_tensor *in = n->in[0], *gc = td_contiguous(gout);
    td_tensor *gin = gc ? td_new(in->ndim, in->shape) : NULL;
    int rc = -1;
    if (gin) {
        lse_backward(in->data, n->saved[0]->data, gc->data, gin->data, n->ip[0], n->ip[1], n->ip[2]);
        rc = td_accumulate(n, 0, gin);
    }
    td_release(gin);
    td_release(gc);
    return rc;
}

/* ---- max and argmax over one axis ---- */

/* Max of slice o, columns [j0, j0 + w): the first index of the max, NaN
 * winning (torch.max semantics). */
static void max_task(const float *x, float *val, float *idx, int64_t len, int64_t inner, int64_t o,
                     int64_t j0, int64_t w) {
    const float *base = x + o * len * inner + j0;
    if (inner == 1) { /* a vectorized max, then its first position */
        float m = td_row_max(base, len);
        int64_t r = 0;
        while (r < len - 1 && !(base[r] == m || (m != m && base[r] != base[r]))) r++;
        if (val) val[o] = m;
        idx[o] = (float)r;
        return;
    }
    float best[TD_CHUNK];
    int64_t at[TD_CHUNK];
    for (int64_t j = 0; j < w; j++) {
        best[j] = base[j];
        at[j] = 0;
    }
    for (int64_t r = 1; r < len; r++) {
        const float *row = base + r * inner;
        for (int64_t j = 0; j < w; j++)
            if (row[j] > best[j] || (row[j] != row[j] && best[j] == best[j])) {
                best[j] = row[j];
                at[j] = r;
            }
    }
    for (int64_t j = 0; j < w; j++) {
        if (val) val[o * inner + j0 + j] = best[j];
        idx[o * inner + j0 + j] = (float)at[j];
    }
}

static void max_forward(const float *x, float *val, float *idx, int64_t outer, int64_t len, int64_t inner) {
    int nt = td_par_threads(outer * len * inner);
    int64_t w = td_col_width(outer, inner, nt), nchunk = (inner + w - 1) / w;
    #pragma omp parallel for schedule(static) if (nt > 1)
    for (int64_t t = 0; t < outer * nchunk; t++) {
        int64_t o = td_task_slice(t, nchunk), j0 = td_task_col(t, nchunk, w);
        max_task(x, val, idx, len, inner, o, j0, inner - j0 < w ? inner - j0 : w);
    }
}

/* Shared front of max and argmax: validates, plans, runs the kernel. */
static td_tensor *max_common(const char *op, td_tensor *a, int axis, int keepdim, bool values, plan *p,
                             td_tensor **idx) {
    char s[TD_SHAPE_BUF];
    if (!a) return td_fail("%s: NULL tensor", op);
    int ax = td_normalize_axis(axis, a->ndim);
    if (ax < 0) return td_fail("%s: axis %d out of range for %s", op, axis, td_shape_str(a, s));
    if (a->shape[ax] == 0) return td_fail("%s: axis %d of %s is empty", op, ax, td_shape_str(a, s));
    if (plan_reduce(a, 1u << ax, p)) return NULL;
    td_tensor *out = reduced_out(a, 1u << ax, keepdim);
    int64_t nidx = p->outer * p->inner;
    *idx = !out ? NULL : values ? td_new(1, &nidx) : (td_retain(out), out);
    if (*idx) {
        max_forward(p->src->data, values ? out->data : NULL, (*idx)->data, p->outer, p->len, p->inner);
        return out;
    }
    td_release(out);
    td_release(*idx);
    td_release(p->src);
    return NULL;
}

td_tensor *td_max(td_tensor *a, int axis, int keepdim) {
    plan p;
    td_tensor *idx;
    td_tensor *out = max_common("max", a, axis, keepdim, true, &p, &idx);
    if (!out) return NULL;
    td_node *node = td_record(TD_OP_MAX, out, 1, &p.src);
    if (node) {
        node->ip[0] = p.outer;
        node->ip[1] = p.len;
        node->ip[2] = p.inner;
        td_save(node, 0, idx);
    }
    td_release(idx);
    td_release(p.src);
    return out;
}

td_tensor *td_argmax(td_tensor *a, int axis, int keepdim) {
    plan p;
    td_tensor *idx;
    int prev = td_set_grad_enabled(0);
    td_tensor *out = max_common("argmax", a, axis, keepdim, false, &p, &idx);
    td_set_grad_enabled(prev);
    if (!out) return NULL;
    td_release(idx);
    td_release(p.src);
    return out;
}

/* gin [outer, len, inner]: g [outer, inner] at the saved argmax, 0 elsewhere */
int td_bw_max(td_node *n, td_tensor *gout) {
    td_tensor *in = n->in[0], *gc = td_contiguous(gout);
    td_tensor *gin = gc ? td_zeros(in->ndim, in->shape) : NULL;
    int rc = -1;
    if (gin) {
        int64_t outer = n->ip[0], len = n->ip[1], inner = n->ip[2];
        const float *idx = n->saved[0]->data;
        for (int64_t o = 0; o < outer; o++)
            for (int64_t i = 0; i < inner; i++)
                gin->data[(o * len + (int64_t)idx[o * inner + i]) * inner + i] = gc->data[o * inner + i];
        rc = td_accumulate(n, 0, gin);
    }
    td_release(gin);
    td_release(gc);
    return rc;
}
