/* softmax.c - softmax and log-softmax over one axis: stable (the max along
 * the axis is subtracted first), one fused forward and one fused backward.
 * The axis is laid out as [outer, len, inner]; see reduce_kernels.h. */
#include "reduce_kernels.h"

/* ---- rows (inner == 1): one row of len floats ---- */

static void softmax_row(const float *x, float *y, int64_t len) {
    float m = td_row_max(x, len);
    for (int64_t i = 0; i < len; i++) y[i] = x[i] - m;
    td_vexp(y, y, len);
    float inv = (float)(1.0 / td_row_sum(y, len));
    for (int64_t i = 0; i < len; i++) y[i] *= inv;
}

static void log_softmax_row(const float *x, float *y, int64_t len) {
    float m = td_row_max(x, len);
    for (int64_t i = 0; i < len; i++) y[i] = x[i] - m;
    float tmp[TD_CHUNK];
    double s = 0.0;
    for (int64_t i0 = 0; i0 < len; i0 += TD_CHUNK) {
        int64_t w = len - i0 < TD_CHUNK ? len - i0 : TD_CHUNK;
        td_vexp(y + i0, tmp, w);
        s += td_row_sum(tmp, w);
    }
    float ls = (float)log(s);
    for (int64_t i = 0; i < len; i++) y[i] -= ls;
}

/* softmax: gin = y * (g - sum(g * y)) */
static void softmax_row_bw(const float *y, const float *g, float *gin, int64_t len) {
    float d = (float)td_row_dot(g, y, len);
    for (int64_t i = 0; i < len; i++) gin[i] = y[i] * (g[i] - d);
}

/* log_softmax: gin = g - exp(y) * sum(g) */
static void log_softmax_row_bw(const float *y, const float *g, float *gin, int64_t len) {
    float sg = (float)td_row_sum(g, len);
    td_vexp(y, gin, len);
    for (int64_t i = 0; i < len; i++) gin[i] = g[i] - gin[i] * sg;
}

/* nr short rows at once (see td_rows_exp) */
static void softmax_short_rows(const float *x, float *y, int64_t nr, int64_t len, bool log_out) {
    float m[TD_CHUNK], tmp[TD_CHUNK];
    double s[TD_CHUNK];
    td_rows_exp(x, nr, len, m, log_out ? tmp : y, s);
    for (int64_t r = 0; r < nr; r++) {
        const float *xr = x + r * len;
        float *yr = y + r * len;
        if (log_out) {
            float ls = logf((float)s[r]);
            for (int64_t i = 0; i < len; i++) yr[i] = (xr[i] - m[r]) - ls;
        } else {
            float inv = (float)(1.0 / s[r]);
            for (int64_t i = 0; i < len; i++) yr[i] *= inv;
        }
    }
}

/* ---- columns: w <= TD_CHUNK adjacent columns, rows at stride inner ---- */

static void softmax_cols(const float *x, float *y, int64_t len, int64_t inner, int64_t w, bool log_out) {
    float m[TD_CHUNK], tmp[TD_CHUNK], ls[TD_CHUNK];
    double s[TD_CHUNK];
    memset(s, 0, sizeof(double) * (size_t)w);
    td_cols_max(x, len, inner, w, m);
    for (int64_t r = 0; r < len; r++) {
        const float *xr = x + r * inner;
        float *e = log_out ? tmp : y + r * inner;
        for (int64_t j = 0; j < w; j++) e[j] = xr[j] - m[j];
        td_vexp(e, e, w);
        for (int64_t j = 0; j < w; j++) s[j] += e[j];
    }
    for (int64_t j = 0; j < w; j++) ls[j] = log_out ? (float)log(s[j]) : (float)(1.0 / s[j]);
    for (int64_t r = 0; r < len; r++) {
        const float *xr = x + r * inner;
        float *yr = y + r * inner;
        if (log_out)
            for (int64_t j = 0; j < w; j++) yr[j] = (xr[j] - m[j]) - ls[j];
        else
            for (int64_t j = 0; j < w; j++) yr[j] *= ls[j];
    }
}

static void softmax_cols_bw(const float *y, const float *g, float *gin, int64_t len, int64_t inner,
                            int64_t w, bool log_out) {
    double acc[TD_CHUNK];
    float a[TD_CHUNK];
    memset(acc, 0, sizeof(double) * (size_t)w);
    for (int64_t r = 0; r < len; r++) {
        const float *yr = y + r * inner, *gr = g + r * inner;
        if (log_out)
            for (int64_t j = 0; j < w; j++) acc[j] += gr[j];
        else
            for (int64_t j = 0; j < w; j++) acc[j] += (double)gr[j] * yr[j];
    }
    for (int64_t j = 0; j < w; j++) a[j] = (float)acc[j];
    for (int64_t r = 0; r < len; r++) {
        const float *yr = y + r * inner, *gr = g + r * inner;
        float *o = gin + r * inner;
        if (log_out) {
            td_vexp(yr, o, w);
            for (int64_t j = 0; j < w; j++) o[j] = gr[j] - o[j] * a[j];
        } else {
            for (int64_t j = 0; j < w; j++) o[j] = yr[j] * (gr[j] - a[j]);
        }
    }
}

/* ---- drivers: tasks are rows, or (slice, chunk of columns) ---- */

/* x [outer, len, inner] -> y, the same shape */
static void softmax_forward(const float *x, float *y, int64_t outer, int64_t len, int64_t inner, bool log_out) {
    int nt = td_par_threads(outer * len * inner);
    int64_t rb = inner == 1 ? td_short_rows(len) : 0;
    if (rb) {
        #pragma omp parallel for schedule(static) if (nt > 1)
        for (int64_t r0 = 0; r0 < outer; r0 += rb)
            softmax_short_rows(x + r0 * len, y + r0 * len, outer - r0 < rb ? outer - r0 : rb, len, log_out);
        return;
    }
    int64_t w = td_col_width(outer, inner, nt), nchunk = (inner + w - 1) / w;
    #pragma omp parallel for schedule(static) if (nt > 1)
    for (int64_t t = 0; t < outer * nchunk; t++) {
        int64_t o = td_task_slice(t, nchunk), j0 = td_task_col(t, nchunk, w), off = o * len * inner + j0;
        if (inner == 1 && log_out) log_softmax_row(x + off, y + off, len);
        else if (inner == 1) softmax_row(x + off, y + off, len);
        else softmax_cols(x + off, y + off, len, inner, inner - j0 < w ? inner - j0 : w, log_out);
    }
}

/* y the forward output, g the upstream gradient, all [outer, len, inner] */
static void softmax_backward(const float *y, const float *g, float *gin, int64_t outer, int64_t len,
                             int64_t inner, bool log_out) {
    int nt = td_par_threads(outer * len * inner);
    int64_t rb = inner == 1 && log_out ? td_short_rows(len) : 0;
    if (rb) { /* short rows: one exp over a block of rows */
        #pragma omp parallel for schedule(static) if (nt > 1)
        for (int64_t r0 = 0; r0 < outer; r0 += rb) {
            int64_t nr = outer - r0 < rb ? outer - r0 : rb, off = r0 * len;
            td_vexp(y + off, gin + off, nr * len);
            for (int64_t r = 0; r < nr; r++) {
                const float *gr = g + off + r * len;
                float *o = gin + off + r * len, sg = (float)td_row_sum(gr, len);
                for (int64_t i = 0; i < len; i++) o[i] = gr[i] - o[i] * sg;
            }
        }
        return;
    }
    int64_t w = td_col_width(outer, inner, nt), nchunk = (inner + w - 1) / w;
    #pragma omp parallel for schedule(static) if (nt > 1)
    for (int64_t t = 0; t < outer * nchunk; t++) {
        int64_t o = td_task_slice(t, nchunk), j0 = td_task_col(t, nchunk, w), off = o * len * inner + j0;
        if (inner == 1 && log_out) log_softmax_row_bw(y + off, g + off, gin + off, len);
        else if (inner == 1) softmax_row_bw(y + off, g + off, gin + off, len);
        else softmax_cols_bw(y + off, g + off, gin + off, len, inner, inner - j0 < w ? inner - j0 : w, log_out);
    }
}

static td_tensor *softmax_common(const char *op, td_op opnum, td_tensor *a, int axis) {
    char s[TD_SHAPE_BUF];
    if (!a) return td_fail("%s: NULL tensor", op);
    int ax = td_normalize_axis(axis, a->ndim);
    if (ax < 0) return td_fail("%s: axis %d out of range for %s", op, axis, td_shape_str(a, s));
    td_tensor *src = td_contiguous(a);
    td_tensor *out = src ? td_new(a->ndim, a->shape) : NULL;
    if (out) {
        int64_t outer = td_shape_numel(ax, a->shape), len = a->shape[ax];
        int64_t inner = td_shape_numel(a->ndim - ax - 1, a->shape + ax + 1);
        softmax_forward(src->data, out->data, outer, len, inner, opnum == TD_OP_LOG_SOFTMAX);
        td_node *node = td_record(opnum, out, 1, &src);
        if (node) {
            node->ip[0] = outer;
            node->ip[1] = len;
            node->ip[2] = inner;
            td_tensor *alias = td_alias(out);
            td_save(node, 0, alias);
            td_release(alias);
        }
    }
    td_release(src);
    return out;
}

td_tensor *td_softmax(td_tensor *a, int axis) { return softmax_common("softmax", TD_OP_SOFTMAX, a, axis); }

td_tensor *td_log_softmax(td_tensor *a, int axis) {
    return softmax_common("log_softmax", TD_OP_LOG_SOFTMAX, a, axis);
}

static int softmax_bw(td_node *n, td_tensor *gout, bool log_out) {
    td_tensor *gc = td_contiguous(gout);
    td_tensor *gin = gc ? td_new(n->in[0]->ndim, n->in[0]->shape) : NULL;
    int rc = -1;
    if (gin) {
        softmax_backward(n->saved[0]->data, gc->data, gin->data, n->ip[0], n->ip[1], n->ip[2], log_out);
        rc = td_accumulate(n, 0, gin);
    }
    td_release(gin);
    td_release(gc);
    return rc;
}

int td_bw_softmax(td_node *n, td_tensor *gout) { return softmax_bw(n, gout, false); }
int td_bw_log_softmax(td_node *n, td_tensor *gout) { return softmax_bw(n, gout, true); }
