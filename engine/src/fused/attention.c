/* attention.c - scaled dot-product attention, softmax(q k^T / sqrt(d)) v,
 * over the last two dims of q [..., L, d], k [..., S, d], v [..., S, dv]
 * (equal leading dims, e.g. [B, heads]), with its backward.
 *
 * Per slice (one (b, head)) and tile of query rows, forward:
 *     P = softmax(scale Q K^T)      [m, S], m rows of the tile
 *     O = P V                       [m, dv]
 * and it saves only the log-sum-exp of each query row (as max + log-sum).
 * The backward recomputes P = exp(scale Q K^T - lse) tile by tile (the
 * flash-attention scheme) instead of keeping [..., L, S]:
 *     dV += P^T dO,  dP = dO V^T,  D_i = sum_j P_ij dP_ij,
 *     dS = scale P (dP - D),  dQ = dS K,  dK += dS^T Q.
 * At the lowest resolution of a UNet (L = S = 49 or 64) a tile is the whole
 * slice and P stays in L1/L2 between the products. Slices go to threads,
 * each running single-threaded sgemm (OpenBLAS' OpenMP build does that
 * inside a parallel region), dynamically: on a shared machine a thread that
 * loses its core does not hold the others up (each slice is computed by one
 * thread, so results do not depend on the schedule). With fewer slices than
 * threads they run in turn on threaded sgemm.
 *
 * q, k, v are read in place when each slice is a row- or column-major
 * matrix (a permuted view such as [B, heads, d, L] -> [B, heads, L, d] is
 * column-major), else through a contiguous copy. */
#include "internal.h"
#include "ops/reduce_kernels.h"
#include "unet_simd.h"
#include <cblas.h>
#include <limits.h>
#include <math.h>
#include <string.h>

#define ATT_TILE 16384 /* floats of one [m, S] tile buffer */
#define ATT_CHUNK 1024 /* float partial sums over at most this many terms */

static bool wants(td_node *n, int k) { return n->in[k] && n->in[k]->requires_grad; }

/* One operand as sgemm reads it: slice i's matrix starts at p + off(i),
 * stored row-major (t = false) or transposed (t = true) with leading dim ld. */
typedef struct {
    const td_tensor *x;
    int64_t ld;
    bool t;
} opnd;

/* Layout of the last two dims of x [..., r, c]; false when neither row- nor
 * column-major. */
static bool layout_of(const td_tensor *x, opnd *o) {
    int d = x->ndim;
    int64_t r = x->shape[d - 2], c = x->shape[d - 1], s0 = x->stride[d - 2], s1 = x->stride[d - 1];
    *o = (opnd){.x = x};
    if ((c <= 1 || s1 == 1) && (r <= 1 || s0 >= c)) {
        o->ld = r <= 1 ? (c > 1 ? c : 1) : s0;
        return true;
    }
    if ((r <= 1 || s0 == 1) && (c <= 1 || s1 >= r)) {
        o->t = true;
        o->ld = c <= 1 ? (r > 1 ? r : 1) : s1;
        return true;
    }
    return false;
}

/* Start of slice i (row-major index over the leading dims). */
static const float *slice_of(const opnd *o, int64_t i) {
    const td_tensor *x = o->x;
    int64_t off = 0;
    for (int d = x->ndim - 3; d >= 0; d--) {
        off += (i % x->shape[d]) * x->stride[d];
        i /= x->shape[d];
    }
    return x->data + off;
}

/* Rows [i0, ...) of a slice: the pointer to pass to sgemm. */
static const float *rows_of(const opnd *o, const float *p, int64_t i0) { return o->t ? p + i0 : p + i0 * o->ld; }

static CBLAS_TRANSPOSE op_of(const opnd *o, bool transposed) {
    return (o->t != transposed) ? CblasTrans : CblasNoTrans;
}

/* C [m, n] (row-major, ldc) = alpha op(A) op(B) + beta C */
static void gemm(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int64_t m, int64_t n, int64_t k, float alpha,
                 const float *A, int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
    cblas_sgemm(CblasRowMajor, ta, tb, (int)m, (int)n, (int)k, alpha, A, (int)lda, B, (int)ldb, beta, C, (int)ldc);
}

typedef struct {
    opnd q, k, v;
    int64_t nbh, L, S, d, dv, tile;
    float scale;
} att_geom;

/* Query rows per tile: the whole slice when [L, S] fits ATT_TILE. */
static int64_t tile_rows(int64_t L, int64_t S) {
    int64_t m = S > 0 ? ATT_TILE / S : L;
    if (m < 16) m = 16;
    return m < L ? m : (L > 0 ? L : 1);
}

/* Threads for the slice loop: 1 when the slices cannot fill them (sgemm
 * then threads itself). */
static int slice_threads(const att_geom *g) {
#ifdef _OPENMP
    int nt = omp_get_max_threads();
    return (g->nbh >= nt && g->nbh * g->L * g->S * (g->d + g->dv) > TD_PAR_MIN) ? nt : 1;
#else
    (void)g;
    return 1;
#endif
}

static int thread_id(void) {
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

/* P [m, S] = softmax of each row of P, in place; st [m, 2] = each row's
 * max and log of the sum of exp(row - max). The log-sum-exp is kept in two
 * parts: exp((s - max) - logsum) in backward is as exact as the forward's
 * P, where exp(s - lse) loses the rounding of lse (1e-5 relative for
 * logits ~ 100, as large as the gradients of peaked rows). */
static void softmax_rows(float *P, float *st, int64_t m, int64_t S) {
    for (int64_t i = 0; i < m; i++) {
        float *row = P + i * S, mx = td_row_max(row, S);
        if (mx == -INFINITY) mx = 0.0f; /* a row of -inf: exp gives 0s (and NaN, as torch) */
        double s = 0.0;
        for (int64_t j0 = 0; j0 < S; j0 += ATT_CHUNK) {
            int64_t e = j0 + ATT_CHUNK < S ? j0 + ATT_CHUNK : S;
            float p = 0.0f;
            #pragma omp simd reduction(+ : p)
            for (int64_t j = j0; j < e; j++) {
                row[j] = td_exp_neg0(mx - row[j]);
                p += row[j];
            }
            s += p;
        }
        float inv = (float)(1.0 / s);
        #pragma omp simd
        for (int64_t j = 0; j < S; j++) row[j] *= inv;
        st[2 * i] = mx;
        st[2 * i + 1] = (float)log(s);
    }
}

/* P [m, S] = exp(P - lse) from the row statistics st [m, 2]. */
static void probs_rows(float *P, const float *st, int64_t m, int64_t S) {
    for (int64_t i = 0; i < m; i++) {
        float *row = P + i * S, mx = st[2 * i], ls = st[2 * i + 1];
        #pragma omp simd
        for (int64_t j = 0; j < S; j++) row[j] = td_exp_neg0((mx - row[j]) + ls);
    }
}

/* dP [m, S] = scale P (dP - D), D = the row sums of P dP. */
static void dscores_rows(const float *P, float *dP, int64_t m, int64_t S, float scale) {
    for (int64_t i = 0; i < m; i++) {
        const float *pr = P + i * S;
        float *dr = dP + i * S;
        double D = 0.0;
        for (int64_t j0 = 0; j0 < S; j0 += ATT_CHUNK) {
            int64_t e = j0 + ATT_CHUNK < S ? j0 + ATT_CHUNK : S;
            float p = 0.0f;
            #pragma omp simd reduction(+ : p)
            for (int64_t j = j0; j < e; j++) p += pr[j] * dr[j];
            D += p;
        }
        float Df = (float)D;
        #pragma omp simd
        for (int64_t j = 0; j < S; j++) dr[j] = scale * pr[j] * (dr[j] - Df);
    }
}

/* The transpose of a slice's [r, c] matrix as a row-major [c, r] one: its
 * own storage when it is column-major, else a copy in buf. sgemm runs
 * Q K^T at half the speed of Q (K^T) with K^T stored (40 vs 66 GFLOP/s for
 * [49,32] x [32,49]: the NT case goes through OpenBLAS' packing). */
static const float *transposed(const opnd *o, const float *p, int64_t r, int64_t c, float *buf, int64_t *ld) {
    if (o->t) {
        *ld = o->ld;
        return p;
    }
    for (int64_t j = 0; j < r; j++)
        for (int64_t t = 0; t < c; t++) buf[t * r + j] = p[j * o->ld + t];
    *ld = r > 0 ? r : 1;
    return buf;
}

/* Per-thread scratch: P, dP [tile, S] and the transposes kt [d, S], vt [dv, S]. */
typedef struct {
    float *P, *dP, *kt, *vt;
} att_bufs;

static size_t att_bufs_floats(const att_geom *g) { return (size_t)((2 * g->tile + g->d + g->dv) * g->S); }

static att_bufs att_bufs_of(const att_geom *g, float *scratch, int tid) {
    float *p = scratch + (size_t)tid * att_bufs_floats(g);
    int64_t t = g->tile * g->S;
    return (att_bufs){.P = p, .dP = p + t, .kt = p + 2 * t, .vt = p + 2 * t + g->d * g->S};
}

/* Forward of slice i: out [L, dv] (contiguous), st [L, 2] (see softmax_rows). */
static void att_slice_forward(const att_geom *g, int64_t i, float *out, float *st, const att_bufs *b) {
    const float *q = slice_of(&g->q, i), *k = slice_of(&g->k, i), *v = slice_of(&g->v, i);
    int64_t ldkt, S = g->S;
    const float *kt = transposed(&g->k, k, S, g->d, b->kt, &ldkt);
    for (int64_t i0 = 0; i0 < g->L; i0 += g->tile) {
        int64_t m = g->L - i0 < g->tile ? g->L - i0 : g->tile;
        gemm(op_of(&g->q, false), CblasNoTrans, m, S, g->d, g->scale, rows_of(&g->q, q, i0), g->q.ld, kt, ldkt,
             0.0f, b->P, S);
        softmax_rows(b->P, st + 2 * i0, m, S);
        gemm(CblasNoTrans, op_of(&g->v, false), m, g->dv, S, 1.0f, b->P, S, v, g->v.ld, 0.0f, out + i0 * g->dv,
             g->dv);
    }
}

/* Backward of slice i: go [L, dv] the output's gradient (contiguous), st
 * [L, 2] the forward's row statistics; dq [L, d], dk [S, d], dv [S, dv]
 * (contiguous, each may be NULL). */
static void att_slice_backward(const att_geom *g, int64_t i, const float *go, const float *st, float *dq,
                               float *dk, float *dv, const att_bufs *b) {
    const float *q = slice_of(&g->q, i), *k = slice_of(&g->k, i), *v = slice_of(&g->v, i);
    int64_t ldkt, ldvt = 1, S = g->S;
    const float *kt = transposed(&g->k, k, S, g->d, b->kt, &ldkt);
    const float *vt = (dq || dk) ? transposed(&g->v, v, S, g->dv, b->vt, &ldvt) : NULL;
    float *P = b->P, *dP = b->dP;
    for (int64_t i0 = 0; i0 < g->L; i0 += g->tile) {
        int64_t m = g->L - i0 < g->tile ? g->L - i0 : g->tile;
        float beta = i0 == 0 ? 0.0f : 1.0f;
        const float *qt = rows_of(&g->q, q, i0), *got = go + i0 * g->dv;
        gemm(op_of(&g->q, false), CblasNoTrans, m, S, g->d, g->scale, qt, g->q.ld, kt, ldkt, 0.0f, P, S);
        probs_rows(P, st + 2 * i0, m, S);
        if (dv) gemm(CblasTrans, CblasNoTrans, S, g->dv, m, 1.0f, P, S, got, g->dv, beta, dv, g->dv);
        if (!dq && !dk) continue;
        gemm(CblasNoTrans, CblasNoTrans, m, S, g->dv, 1.0f, got, g->dv, vt, ldvt, 0.0f, dP, S);
        dscores_rows(P, dP, m, S, g->scale);
        if (dq) gemm(CblasNoTrans, op_of(&g->k, false), m, g->d, S, 1.0f, dP, S, k, g->k.ld, 0.0f, dq + i0 * g->d, g->d);
        if (dk) gemm(CblasTrans, op_of(&g->q, false), S, g->d, m, 1.0f, dP, S, qt, g->q.ld, beta, dk, g->d);
    }
}

/* An empty output: nothing to compute, and all gradients are 0. */
static bool att_empty(const att_geom *g) { return g->nbh == 0 || g->L == 0 || g->dv == 0; }

static int att_forward(const att_geom *g, float *out, float *st) {
    if (att_empty(g)) return 0;
    int nt = slice_threads(g);
    size_t bytes = sizeof(float) * (att_bufs_floats(g) * (size_t)nt + 1);
    float *scratch = td_alloc(bytes);
    if (!scratch) return -1;
    #pragma omp parallel for num_threads(nt) schedule(dynamic, 2) if (nt > 1)
    for (int64_t i = 0; i < g->nbh; i++) {
        att_bufs b = att_bufs_of(g, scratch, thread_id());
        att_slice_forward(g, i, out + i * g->L * g->dv, st + 2 * i * g->L, &b);
    }
    td_free(scratch, bytes);
    return 0;
}

static int att_backward(const att_geom *g, const float *go, const float *st, float *dq, float *dk, float *dv) {
    if (att_empty(g)) {
        if (dq) memset(dq, 0, sizeof(float) * (size_t)(g->nbh * g->L * g->d));
        if (dk) memset(dk, 0, sizeof(float) * (size_t)(g->nbh * g->S * g->d));
        if (dv) memset(dv, 0, sizeof(float) * (size_t)(g->nbh * g->S * g->dv));
        return 0;
    }
    int nt = slice_threads(g);
    size_t bytes = sizeof(float) * (att_bufs_floats(g) * (size_t)nt + 1);
    float *scratch = td_alloc(bytes);
    if (!scratch) return -1;
    #pragma omp parallel for num_threads(nt) schedule(dynamic, 2) if (nt > 1)
    for (int64_t i = 0; i < g->nbh; i++) {
        att_bufs b = att_bufs_of(g, scratch, thread_id());
        att_slice_backward(g, i, go + i * g->L * g->dv, st + 2 * i * g->L, dq ? dq + i * g->L * g->d : NULL,
                           dk ? dk + i * g->S * g->d : NULL, dv ? dv + i * g->S * g->dv : NULL, &b);
    }
    td_free(scratch, bytes);
    return 0;
}

/* Geometry of q, k, v (layouts usable); nbh is the number of slices. */
static void att_geom_of(td_tensor *q, td_tensor *k, td_tensor *v, att_geom *g) {
    int nd = q->ndim;
    *g = (att_geom){.L = q->shape[nd - 2], .S = k->shape[nd - 2], .d = q->shape[nd - 1], .dv = v->shape[nd - 1]};
    g->nbh = 1;
    for (int d = 0; d < nd - 2; d++) g->nbh *= q->shape[d];
    layout_of(q, &g->q);
    layout_of(k, &g->k);
    layout_of(v, &g->v);
    g->tile = tile_rows(g->L, g->S);
    g->scale = (float)(1.0 / sqrt((double)g->d));
}

static int att_check(td_tensor *q, td_tensor *k, td_tensor *v) {
    char a[TD_SHAPE_BUF], b[TD_SHAPE_BUF], c[TD_SHAPE_BUF];
    if (!q || !k || !v) return td_failc("attention: NULL input");
#define ATT_FAIL(why) \
    td_failc("attention: q %s, k %s, v %s: " why, td_shape_str(q, a), td_shape_str(k, b), td_shape_str(v, c))
    if (q->ndim < 2 || k->ndim != q->ndim || v->ndim != q->ndim)
        return ATT_FAIL("need q [..., L, d], k [..., S, d], v [..., S, dv] with the same number of dims");
    int nd = q->ndim;
    for (int d = 0; d < nd - 2; d++)
        if (k->shape[d] != q->shape[d] || v->shape[d] != q->shape[d])
            return ATT_FAIL("the leading dims differ");
    if (k->shape[nd - 1] != q->shape[nd - 1]) return ATT_FAIL("q and k have different head dims");
    if (v->shape[nd - 2] != k->shape[nd - 2]) return ATT_FAIL("k and v have different lengths");
    if (q->shape[nd - 1] == 0 || k->shape[nd - 2] == 0) return ATT_FAIL("empty head dim or key length");
    for (int d = nd - 2; d < nd; d++)
        if (q->shape[d] > INT_MAX / 4 || k->shape[d] > INT_MAX / 4 || v->shape[d] > INT_MAX / 4)
            return ATT_FAIL("a matrix dim is too large for sgemm");
#undef ATT_FAIL
    return 0;
}

/* x itself when sgemm can read its slices, else a contiguous copy. */
static td_tensor *usable(td_tensor *x) {
    opnd o;
    if (layout_of(x, &o)) {
        td_retain(x);
        return x;
    }
    return td_contiguous(x);
}

td_tensor *td_attention(td_tensor *q, td_tensor *k, td_tensor *v) {
    if (att_check(q, k, v)) return NULL;
    td_tensor *ins[3] = {usable(q), usable(k), usable(v)};
    int nd = q->ndim;
    int64_t shape[TD_MAX_DIMS];
    memcpy(shape, q->shape, sizeof(int64_t) * (size_t)nd);
    shape[nd - 1] = v->shape[nd - 1];
    td_tensor *out = NULL, *st = NULL;
    if (ins[0] && ins[1] && ins[2]) {
        att_geom g;
        att_geom_of(ins[0], ins[1], ins[2], &g);
        out = td_new(nd, shape);
        st = out ? td_new(2, (int64_t[]){g.nbh * g.L, 2}) : NULL;
        if (!st || att_forward(&g, out->data, st->data)) {
            td_release(out);
            out = NULL;
        }
    }
    td_node *node = td_record(TD_OP_ATTENTION, out, 3, ins);
    if (node) td_save(node, 0, st);
    td_release(st);
    for (int i = 0; i < 3; i++) td_release(ins[i]);
    return out;
}

int td_bw_attention(td_node *n, td_tensor *gout) {
    att_geom g;
    att_geom_of(n->in[0], n->in[1], n->in[2], &g);
    td_tensor *go = td_contiguous(gout), *gr[3] = {NULL, NULL, NULL};
    int rc = go ? 0 : -1;
    for (int i = 0; i < 3 && !rc; i++)
        if (wants(n, i) && !(gr[i] = td_new(n->in[i]->ndim, n->in[i]->shape))) rc = -1;
    if (!rc)
        rc = att_backward(&g, go->data, n->saved[0]->data, gr[0] ? gr[0]->data : NULL, gr[1] ? gr[1]->data : NULL,
                          gr[2] ? gr[2]->data : NULL);
    for (int i = 0; i < 3 && !rc; i++)
        if (gr[i]) rc = td_accumulate(n, i, gr[i]);
    td_release(go);
    for (int i = 0; i < 3; i++) td_release(gr[i]);
    return rc;
}
