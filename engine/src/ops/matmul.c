/* matmul.c - matrix products on cblas_sgemm: td_matmul (batch dims
 * broadcast) and td_linear (x W^T + b in one GEMM), with their backward.
 *
 * Operands reach sgemm without a copy whenever their last two strides allow
 * it: a transposed view is passed as CblasTrans. Backward writes straight
 * into a leaf's .grad (beta = 1) when it can, instead of a temporary. */
#include "internal.h"
#include "reduce_kernels.h"
#include <cblas.h>
#include <string.h>

/* One operand of a batched GEMM as sgemm reads it: op(X) is [r, c], stored
 * transposed (t) or not, with leading dimension ld. bstride[d] steps batch
 * dim d of the product; 0 where the operand is broadcast (or, for the
 * result, where products are summed into it). */
typedef struct {
    float *p;
    int64_t r, c, ld;
    bool t;
    int64_t bstride[TD_MAX_DIMS];
} td_mat;

typedef struct {
    int nb;
    int64_t shape[TD_MAX_DIMS];
} td_batch;

static inline int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }

/* Layout of a [r, c] matrix with strides (s0, s1) for sgemm; false when
 * neither row- nor column-major with a valid leading dimension. */
static bool mat_layout(td_mat *m, float *p, int64_t r, int64_t c, int64_t s0, int64_t s1) {
    *m = (td_mat){.p = p, .r = r, .c = c};
    if ((c <= 1 || s1 == 1) && (r <= 1 || s0 >= max64(c, 1))) {
        m->ld = r <= 1 ? max64(c, 1) : s0;
        return true;
    }
    if ((r <= 1 || s0 == 1) && (c <= 1 || s1 >= max64(r, 1))) {
        m->t = true;
        m->ld = c <= 1 ? max64(r, 1) : s1;
        return true;
    }
    return false;
}

/* The last two dims of x as a matrix, batch strides left at 0. */
static bool mat_of(const td_tensor *x, td_mat *m) {
    int d = x->ndim;
    return mat_layout(m, x->data, x->shape[d - 2], x->shape[d - 1], x->stride[d - 2], x->stride[d - 1]);
}

/* Batch strides of x (its dims before the last two) against the batch. */
static void set_bstrides(td_mat *m, const td_tensor *x, const td_batch *bt) {
    int lead = bt->nb - (x->ndim - 2);
    for (int d = 0; d < bt->nb; d++) {
        int j = d - lead;
        m->bstride[d] = (j < 0 || x->shape[j] == 1) ? 0 : x->stride[j];
    }
}

static td_mat mat_t(td_mat m) {
    int64_t r = m.r;
    m.r = m.c;
    m.c = r;
    m.t = !m.t;
    return m;
}

/* C = alpha op(A) op(B) + beta C on one batch element. */
static void gemm1(const td_mat *A, const td_mat *B, const td_mat *C, int64_t oa, int64_t ob, int64_t oc,
                  float beta) {
    float *c = C->p + oc;
    if (C->r == 0 || C->c == 0) return;
    if (A->c == 0) { /* empty inner dim: C = beta C */
        for (int64_t i = 0; i < C->r; i++)
            for (int64_t j = 0; j < C->c; j++) c[i * C->ld + j] = beta == 0.0f ? 0.0f : beta * c[i * C->ld + j];
        return;
    }
    cblas_sgemm(CblasRowMajor, A->t ? CblasTrans : CblasNoTrans, B->t ? CblasTrans : CblasNoTrans,
                (int)C->r, (int)C->c, (int)A->c, 1.0f, A->p + oa, (int)A->ld, B->p + ob, (int)B->ld, beta, c,
                (int)C->ld);
}

static bool all_broadcast(const td_mat *m, const td_batch *bt) {
    for (int d = 0; d < bt->nb; d++)
        if (bt->shape[d] > 1 && m->bstride[d] != 0) return false;
    return true;
}

/* True when the batch of m lies end to end in memory, so the storage
 * matrices (srows rows each) stack into one of batch * srows rows. */
static bool stacks(const td_mat *m, int64_t srows, const td_batch *bt) {
    int64_t want = srows * m->ld;
    for (int d = bt->nb - 1; d >= 0; d--) {
        if (bt->shape[d] == 1) continue;
        if (m->bstride[d] != want) return false;
        want *= bt->shape[d];
    }
    return true;
}

/* Offset of batch element i in m. */
static int64_t boffset(const td_mat *m, const td_batch *bt, int64_t i) {
    int64_t off = 0;
    for (int d = bt->nb - 1; d >= 0; d--) {
        off += (i % bt->shape[d]) * m->bstride[d];
        i /= bt->shape[d];
    }
    return off;
}

/* True when batch element i is the first to reach its (summed) slot of C. */
static bool first_visit(const td_mat *C, const td_batch *bt, int64_t i) {
    for (int d = bt->nb - 1; d >= 0; d--) {
        if (C->bstride[d] == 0 && i % bt->shape[d] != 0) return false;
        i /= bt->shape[d];
    }
    return true;
}

/* C[i] = op(A[i]) op(B[i]) + beta C[i] over the batch; where C is broadcast
 * the products are summed into it (beta applies once). Batches that lie end
 * to end become one GEMM: rows stacked when B is shared, or the inner dim
 * stacked when C is shared (the sum over the batch, as in a weight grad). */
static void gemm_batched(const td_batch *bt, td_mat A, td_mat B, td_mat C, float beta) {
    int64_t nbatch = td_shape_numel(bt->nb, bt->shape);
    if (nbatch == 1) {
        gemm1(&A, &B, &C, 0, 0, 0, beta);
        return;
    }
    if (all_broadcast(&B, bt) && !A.t && stacks(&A, A.r, bt) && stacks(&C, C.r, bt)) {
        A.r *= nbatch;
        C.r *= nbatch;
        gemm1(&A, &B, &C, 0, 0, 0, beta);
        return;
    }
    if (all_broadcast(&C, bt) && A.t && !B.t && stacks(&A, A.c, bt) && stacks(&B, B.r, bt)) {
        A.c *= nbatch;
        B.r *= nbatch;
        gemm1(&A, &B, &C, 0, 0, 0, beta);
        return;
    }
    bool summed = false;
    for (int d = 0; d < bt->nb; d++) summed |= bt->shape[d] > 1 && C.bstride[d] == 0;
    /* small products: one sgemm per thread beats threaded sgemm */
    bool par = !summed && nbatch >= td_get_num_threads() && C.r * C.c * A.c < (1 << 22);
    (void)par;
    #pragma omp parallel for if (par) schedule(static)
    for (int64_t i = 0; i < nbatch; i++) {
        float b = (summed && !first_visit(&C, bt, i)) ? 1.0f : beta;
        gemm1(&A, &B, &C, boffset(&A, bt, i), boffset(&B, bt, i), boffset(&C, bt, i), b);
    }
}

/* A contiguous copy of t, recorded nowhere (for operands sgemm cannot read). */
static td_tensor *dense(td_tensor *t) {
    td_tensor *c = td_new(t->ndim, t->shape);
    if (c && td_copy_(c, t)) {
        td_release(c);
        return NULL;
    }
    return c;
}

/* Hands a gradient from td_grad_dest on: accumulated unless written in place. */
static int grad_done(td_node *n, int i, td_tensor *g, bool direct) {
    int rc = direct ? 0 : td_accumulate(n, i, g);
    td_release(g);
    return rc;
}

static bool wants(td_node *n, int i) { return n->in[i] && n->in[i]->requires_grad; }

/* ---- matmul ---- */

/* Broadcast batch of a [..., n, k] and b [..., k, m]; fails naming both. */
static int matmul_batch(const td_tensor *a, const td_tensor *b, td_batch *bt) {
    char sa[TD_SHAPE_BUF], sb[TD_SHAPE_BUF];
    bt->nb = (a->ndim > b->ndim ? a->ndim : b->ndim) - 2;
    for (int d = 0; d < bt->nb; d++) {
        int ja = d - (bt->nb - (a->ndim - 2)), jb = d - (bt->nb - (b->ndim - 2));
        int64_t x = ja < 0 ? 1 : a->shape[ja], y = jb < 0 ? 1 : b->shape[jb];
        if (x != y && x != 1 && y != 1)
            return td_failc("matmul: %s x %s: batch dims do not broadcast (%lld vs %lld)", td_shape_str(a, sa),
                            td_shape_str(b, sb), (long long)x, (long long)y);
        bt->shape[d] = x == 1 ? y : x;
    }
    return 0;
}

/* t itself (retained) when sgemm can read it, else a contiguous copy. */
static td_tensor *readable(td_tensor *t) {
    td_mat m;
    if (mat_of(t, &m)) {
        td_retain(t);
        return t;
    }
    return dense(t);
}

/* Strides of c against the shape [nd] it broadcasts to (0 on broadcast
 * dims); false when it does not broadcast to that shape. */
static bool bias_strides(const td_tensor *c, int nd, const int64_t *shape, int64_t *st) {
    int lead = nd - c->ndim;
    if (lead < 0) return false;
    for (int d = 0; d < nd; d++) {
        int j = d - lead;
        if (j >= 0 && c->shape[j] != 1 && c->shape[j] != shape[d]) return false;
        st[d] = (j < 0 || c->shape[j] == 1) ? 0 : c->stride[j];
    }
    return true;
}

/* out [rows, m] (contiguous, shape [nd]) = c broadcast (strides st). */
static void fill_bias(float *out, int nd, const int64_t *shape, const float *c, const int64_t *st) {
    int64_t m = shape[nd - 1], rows = td_shape_numel(nd - 1, shape), sm = st[nd - 1];
    #pragma omp parallel for if (rows * m > TD_PAR_MIN)
    for (int64_t r = 0; r < rows; r++) {
        int64_t off = 0, i = r;
        for (int d = nd - 2; d >= 0; d--) {
            off += (i % shape[d]) * st[d];
            i /= shape[d];
        }
        const float *src = c + off;
        float *o = out + r * m;
        if (sm == 1) memcpy(o, src, (size_t)m * sizeof(float));
        else
            for (int64_t j = 0; j < m; j++) o[j] = src[j * sm];
    }
}

/* a @ b (+ c broadcast to the result when c is not NULL: the GEMM adds
 * into the filled output, beta = 1). Recorded as MATMUL with c as input 2. */
static td_tensor *matmul_impl(const char *op, td_tensor *a, td_tensor *b, td_tensor *c) {
    char sa[TD_SHAPE_BUF], sb[TD_SHAPE_BUF], sc[TD_SHAPE_BUF], so[TD_SHAPE_BUF];
    if (!a || !b) return td_fail("%s: NULL tensor", op);
    if (a->ndim < 2 || b->ndim < 2)
        return td_fail("%s: %s x %s: both need at least 2 dims", op, td_shape_str(a, sa), td_shape_str(b, sb));
    int64_t n = a->shape[a->ndim - 2], k = a->shape[a->ndim - 1], m = b->shape[b->ndim - 1];
    if (b->shape[b->ndim - 2] != k)
        return td_fail("%s: %s x %s: inner dims differ (%lld vs %lld)", op, td_shape_str(a, sa),
                       td_shape_str(b, sb), (long long)k, (long long)b->shape[b->ndim - 2]);
    td_batch bt;
    if (matmul_batch(a, b, &bt)) return NULL;
    int64_t shape[TD_MAX_DIMS], cst[TD_MAX_DIMS];
    memcpy(shape, bt.shape, sizeof(int64_t) * (size_t)bt.nb);
    shape[bt.nb] = n;
    shape[bt.nb + 1] = m;
    if (c && !bias_strides(c, bt.nb + 2, shape, cst)) {
        td_tensor tmp = {.ndim = bt.nb + 2};
        memcpy(tmp.shape, shape, sizeof shape);
        return td_fail("%s: %s x %s: addend %s does not broadcast to the product %s", op, td_shape_str(a, sa),
                       td_shape_str(b, sb), td_shape_str(c, sc), td_shape_str(&tmp, so));
    }
    td_tensor *ar = readable(a), *br = ar ? readable(b) : NULL;
    td_tensor *out = br ? td_new(bt.nb + 2, shape) : NULL;
    if (out) {
        if (c) fill_bias(out->data, bt.nb + 2, shape, c->data, cst);
        td_mat A, B, C;
        mat_of(ar, &A);
        mat_of(br, &B);
        mat_of(out, &C);
        set_bstrides(&A, ar, &bt);
        set_bstrides(&B, br, &bt);
        set_bstrides(&C, out, &bt);
        gemm_batched(&bt, A, B, C, c ? 1.0f : 0.0f);
        td_tensor *ins[3] = {a, b, c};
        td_node *node = td_record(TD_OP_MATMUL, out, c ? 3 : 2, ins);
        if (node && ar != a) td_save(node, 0, ar);
        if (node && br != b) td_save(node, 1, br);
    }
    td_release(ar);
    td_release(br);
    return out;
}

td_tensor *td_matmul(td_tensor *a, td_tensor *b) { return matmul_impl("matmul", a, b, NULL); }

td_tensor *td_matmul_add(td_tensor *a, td_tensor *b, td_tensor *c) {
    if (!c) return td_fail("matmul_add: NULL tensor");
    return matmul_impl("matmul_add", a, b, c);
}

/* The gradient of operand i (0: a, 1: b) of a matmul: g [batch, n, m] with
 * the other operand; dA = g B^T, dB = A^T g, summed over broadcast dims. */
static int matmul_grad(td_node *n, int i, const td_batch *bt, const td_mat *G, td_tensor *a, td_tensor *b) {
    float beta;
    bool direct;
    td_tensor *x = i == 0 ? a : b;
    td_tensor *dst = td_grad_dest(n, i, &beta, &direct);
    if (!dst) return -1;
    td_mat A, B, D;
    mat_of(a, &A);
    mat_of(b, &B);
    mat_of(dst, &D);
    set_bstrides(&A, a, bt);
    set_bstrides(&B, b, bt);
    int lead = bt->nb - (x->ndim - 2);
    for (int d = 0; d < bt->nb; d++) {
        int j = d - lead;
        D.bstride[d] = (j < 0 || x->shape[j] == 1) ? 0 : dst->stride[j];
    }
    if (i == 0) gemm_batched(bt, *G, mat_t(B), D, beta);
    else gemm_batched(bt, mat_t(A), *G, D, beta);
    return grad_done(n, i, dst, direct);
}

static void colsum_groups(const float *g, int64_t groups, int64_t rows, int64_t n, int64_t ld, float *db,
                          float beta);

/* The gradient of the addend c of matmul_add: gout summed over c's
 * broadcast dims. When c is [batch..., 1, m] (or [m], [1, m]) with the
 * product's batch dims, column sums of each batch's rows straight into
 * its gradient; otherwise td_accumulate reduces. */
static int addend_grad(td_node *n, td_tensor *gout) {
    td_tensor *c = n->in[2];
    int nd = n->ndim, nb = nd - 2;
    int64_t rows = n->shape[nd - 2], m = n->shape[nd - 1], groups = td_shape_numel(nb, n->shape);
    bool fast = td_is_contiguous(gout) && c->shape[c->ndim - 1] == m && (c->ndim < 2 || c->shape[c->ndim - 2] == 1);
    if (fast && c->ndim <= 2) {
        rows *= groups; /* one bias for every row of every batch */
        groups = 1;
    } else if (fast) {
        fast = c->ndim == nd;
        for (int d = 0; d < nb && fast; d++) fast = c->shape[d] == n->shape[d];
    }
    if (!fast) return td_accumulate(n, 2, gout);
    float beta;
    bool direct;
    td_tensor *dst = td_grad_dest(n, 2, &beta, &direct);
    if (!dst) return -1;
    colsum_groups(gout->data, groups, rows, m, m, dst->data, beta);
    return grad_done(n, 2, dst, direct);
}

int td_bw_matmul(td_node *n, td_tensor *gout) {
    td_tensor *a = n->saved[0] ? n->saved[0] : n->in[0];
    td_tensor *b = n->saved[1] ? n->saved[1] : n->in[1];
    td_batch bt = {.nb = n->ndim - 2};
    memcpy(bt.shape, n->shape, sizeof(int64_t) * (size_t)bt.nb);
    td_tensor *g = readable(gout);
    if (!g) return -1;
    td_mat G;
    mat_of(g, &G);
    set_bstrides(&G, g, &bt);
    int rc = 0;
    if (wants(n, 0)) rc = matmul_grad(n, 0, &bt, &G, a, b);
    if (rc == 0 && wants(n, 1)) rc = matmul_grad(n, 1, &bt, &G, a, b);
    if (rc == 0 && n->nin > 2 && wants(n, 2)) rc = addend_grad(n, gout);
    td_release(g);
    return rc;
}

/* ---- linear ---- */

/* x [..., in] as one [rows, in] matrix (leading dims collapsed); false when
 * the leading dims do not collapse into a single stride. */
static bool rows_of(const td_tensor *x, td_mat *m) {
    int d = x->ndim;
    if (d == 2) return mat_of(x, m);
    int64_t in = x->shape[d - 1], rows = d ? x->numel / (in ? in : 1) : 1;
    if (in == 0) rows = td_shape_numel(d - 1, x->shape);
    if (in > 1 && x->stride[d - 1] != 1) return false;
    int64_t ld = -1, want = 0;
    for (int j = d - 2; j >= 0; j--) {
        if (x->shape[j] == 1) continue;
        if (ld < 0) {
            ld = x->stride[j];
            want = ld;
        }
        if (x->stride[j] != want) return false;
        want *= x->shape[j];
    }
    if (ld < 0) ld = max64(in, 1);
    if (ld < max64(in, 1)) return false;
    *m = (td_mat){.p = x->data, .r = rows, .c = in, .ld = ld};
    return true;
}

static td_tensor *rows_readable(td_tensor *t) {
    td_mat m;
    if (rows_of(t, &m)) {
        td_retain(t);
        return t;
    }
    return dense(t);
}

static int linear_check(const td_tensor *x, const td_tensor *w, const td_tensor *b) {
    char sx[TD_SHAPE_BUF], sw[TD_SHAPE_BUF], sb[TD_SHAPE_BUF];
    if (!x || !w) return td_failc("linear: NULL tensor");
    if (w->ndim != 2) return td_failc("linear: weight %s must be [out, in]", td_shape_str(w, sw));
    if (x->ndim < 1 || x->shape[x->ndim - 1] != w->shape[1])
        return td_failc("linear: x %s, weight %s: in features differ (%lld vs %lld)", td_shape_str(x, sx),
                        td_shape_str(w, sw), (long long)(x->ndim ? x->shape[x->ndim - 1] : 0),
                        (long long)w->shape[1]);
    if (b && (b->ndim != 1 || b->shape[0] != w->shape[0]))
        return td_failc("linear: weight %s, bias %s: bias must be [%lld]", td_shape_str(w, sw),
                        td_shape_str(b, sb), (long long)w->shape[0]);
    return 0;
}

/* out [rows, n] (row stride n) filled with b [n] (stride bs) in every row. */
static void fill_rows(float *out, int64_t rows, int64_t n, const float *b, int64_t bs) {
    #pragma omp parallel for if (rows * n > TD_PAR_MIN)
    for (int64_t i = 0; i < rows; i++) {
        float *o = out + i * n;
        if (bs == 1) memcpy(o, b, (size_t)n * sizeof(float));
        else
            for (int64_t j = 0; j < n; j++) o[j] = b[j * bs];
    }
}

td_tensor *td_linear(td_tensor *x, td_tensor *w, td_tensor *b) {
    if (linear_check(x, w, b)) return NULL;
    int64_t shape[TD_MAX_DIMS];
    memcpy(shape, x->shape, sizeof shape);
    shape[x->ndim - 1] = w->shape[0];
    td_tensor *xr = rows_readable(x), *wr = xr ? readable(w) : NULL;
    td_tensor *out = wr ? td_new(x->ndim, shape) : NULL;
    if (out) {
        td_mat X, W;
        rows_of(xr, &X);
        mat_of(wr, &W);
        td_mat C = {.p = out->data, .r = X.r, .c = W.r, .ld = max64(W.r, 1)};
        if (b) fill_rows(out->data, C.r, C.c, b->data, b->stride[0]);
        td_mat Wt = mat_t(W);
        gemm1(&X, &Wt, &C, 0, 0, 0, b ? 1.0f : 0.0f);
        td_tensor *ins[3] = {x, w, b};
        td_node *node = td_record(TD_OP_LINEAR, out, 3, ins);
        if (node && xr != x) td_save(node, 0, xr);
        if (node && wr != w) td_save(node, 1, wr);
    }
    td_release(xr);
    td_release(wr);
    return out;
}

/* db[b] (+)= column sums of g[b] [rows, n] (row stride ld) for each of
 * `groups` stacked matrices (g[b] = g + b rows ld, db[b] = db + b n): float
 * partial sums of 64 rows (vectorized), added up in double
 * (reduce_kernels.h); tasks are (group, block of columns). */
static void colsum_groups(const float *g, int64_t groups, int64_t rows, int64_t n, int64_t ld, float *db,
                          float beta) {
    enum { BLOCK = 512 };
    int64_t nblk = (n + BLOCK - 1) / BLOCK;
    #pragma omp parallel for schedule(static) if (groups * rows * n > TD_PAR_MIN)
    for (int64_t t = 0; t < groups * nblk; t++) {
        int64_t b = t / nblk, j0 = (t % nblk) * BLOCK, nj = n - j0 < BLOCK ? n - j0 : BLOCK;
        double acc[BLOCK];
        float part[BLOCK], *d = db + b * n + j0;
        memset(acc, 0, sizeof(double) * (size_t)nj);
        td_cols_sum(g + b * rows * ld + j0, rows, ld, nj, acc, part);
        for (int64_t j = 0; j < nj; j++) d[j] = (float)acc[j] + (beta == 0.0f ? 0.0f : d[j]);
    }
}

static void colsum(const float *g, int64_t rows, int64_t n, int64_t ld, float *db, float beta) {
    colsum_groups(g, 1, rows, n, ld, db, beta);
}

/* g [rows, out]: dx = g W, dW = g^T x, db = column sums of g. */
int td_bw_linear(td_node *n, td_tensor *gout) {
    td_tensor *x = n->saved[0] ? n->saved[0] : n->in[0];
    td_tensor *w = n->saved[1] ? n->saved[1] : n->in[1];
    td_tensor *g = rows_readable(gout);
    if (!g) return -1;
    td_mat G, X, W, D;
    rows_of(g, &G);
    rows_of(x, &X);
    mat_of(w, &W);
    float beta;
    bool direct;
    int rc = 0;
    for (int i = 0; i < 3 && rc == 0; i++) {
        if (!wants(n, i)) continue;
        td_tensor *dst = td_grad_dest(n, i, &beta, &direct);
        if (!dst) {
            rc = -1;
            break;
        }
        if (i == 0) {
            D = (td_mat){.p = dst->data, .r = G.r, .c = W.c, .ld = max64(W.c, 1)};
            gemm1(&G, &W, &D, 0, 0, 0, beta);
        } else if (i == 1) {
            D = (td_mat){.p = dst->data, .r = W.r, .c = W.c, .ld = max64(W.c, 1)};
            td_mat Gt = mat_t(G);
            gemm1(&Gt, &X, &D, 0, 0, 0, beta);
        } else if (G.t) {
            td_tensor *gc = dense(g);
            if (gc) colsum(gc->data, G.r, G.c, max64(G.c, 1), dst->data, beta);
            else rc = -1;
            td_release(gc);
        } else {
            colsum(G.p, G.r, G.c, G.ld, dst->data, beta);
        }
        if (rc == 0) rc = grad_done(n, i, dst, direct);
        else td_release(dst);
    }
    td_release(g);
    return rc;
}
