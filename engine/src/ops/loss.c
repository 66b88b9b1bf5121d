/* loss.c - losses and log densities. bce_with_logits and cross_entropy are
 * fused ops with their own backward; the others are composites of engine
 * ops, so their gradients come from the ops they are made of. */
#include "broadcast.h"
#include <math.h>
#include <stdio.h>
#include <string.h>
#include "vmath.h"

static bool wants(td_node *n, int k) { return n->in[k] && n->in[k]->requires_grad; }

/* Checks that the n inputs broadcast together; fails naming op and every shape. */
static int check_bcast(const char *op, int n, td_tensor *const *ins) {
    int64_t shape[TD_MAX_DIMS];
    int nd = 0;
    for (int k = 0; k < n; k++) {
        if (!ins[k]) return td_failc("%s: input %d is NULL", op, k);
        if (ins[k]->ndim > nd) nd = ins[k]->ndim;
    }
    for (int d = 0; d < nd; d++) shape[d] = 1;
    for (int k = 0; k < n; k++)
        for (int d = 0, lead = nd - ins[k]->ndim; d < ins[k]->ndim; d++) {
            int64_t s = ins[k]->shape[d], *o = &shape[d + lead];
            if (s == *o || s == 1) continue;
            if (*o != 1) {
                char msg[512] = "", a[TD_SHAPE_BUF];
                for (int j = 0; j < n; j++) {
                    size_t len = strlen(msg);
                    snprintf(msg + len, sizeof msg - len, j ? " and %s" : "%s", td_shape_str(ins[j], a));
                }
                return td_failc("%s: shapes %s do not broadcast (dim %d)", op, msg, d + lead);
            }
            *o = s;
        }
    return 0;
}

/* ---- bce_with_logits ---- */

static inline float sigmoidf(float x) { return td_sigmoidf(x); } /* branch free: vectorizes (vmath.h) */

/* y = max(x, 0) - x t + log1p(exp(-|x|)), x the logits, t the targets
 * (broadcast); stable for any x. */
td_tensor *td_bce_with_logits(td_tensor *logits, td_tensor *target) {
    td_tensor *ins[2] = {logits, target};
    td_bcast bc;
    if (td_broadcast("bce_with_logits", 2, ins, &bc)) return NULL;
    td_tensor *out = td_new(bc.ndim, bc.shape);
    if (!out) return NULL;
    TD_BCAST_LOOP(&bc, out->data, *o = (x > 0.0f ? x : 0.0f) - x * y + log1pf(expf(-fabsf(x))));
    td_record(TD_OP_BCE_WITH_LOGITS, out, 2, ins);
    return out;
}

/* d/dx = g (sigmoid(x) - t), d/dt = -g x; computed in gout's (broadcast)
 * shape, td_accumulate sums them down. */
int td_bw_bce_with_logits(td_node *n, td_tensor *gout) {
    /* gout is often an expanded scalar (from a sum): made contiguous, the
     * loop takes the flat, vectorized path */
    td_tensor *gc = td_contiguous(gout);
    if (!gc) return -1;
    td_tensor *ins[3] = {gc, n->in[0], n->in[1]};
    td_bcast bc;
    int rc = td_broadcast("bce_with_logits backward", 3, ins, &bc);
    for (int k = 0; k < 2 && rc == 0; k++) {
        if (!wants(n, k)) continue;
        td_tensor *g = td_new(bc.ndim, bc.shape);
        if (!g) {
            rc = -1;
            break;
        }
        if (k == 0) TD_BCAST_LOOP(&bc, g->data, *o = x * (sigmoidf(y) - z));
        else TD_BCAST_LOOP(&bc, g->data, *o = -x * y);
        rc = td_accumulate(n, k, g);
        td_release(g);
    }
    td_release(gc);
    return rc;
}

/* ---- cross_entropy ---- */

/* x [B, C], t [B] classes in [0, C) -> y [B] = lse_b - x[b, t_b], with
 * lse_b = logsumexp_c x[b, c] (saved). */
static void cross_entropy_forward(const float *x, const int64_t *t, float *y, float *lse, int64_t B, int64_t C) {
    #pragma omp parallel for if (B * C > TD_PAR_MIN)
    for (int64_t b = 0; b < B; b++) {
        const float *r = x + b * C;
        float m = -INFINITY;
        for (int64_t c = 0; c < C; c++) m = fmaxf(m, r[c]);
        float s = 0.0f;
        #pragma omp simd reduction(+ : s)
        for (int64_t c = 0; c < C; c++) s += expf(r[c] - m);
        lse[b] = m + logf(s);
        y[b] = lse[b] - r[t[b]];
    }
}

/* gy [B] -> gx [B, C] = gy_b (softmax(x_b)_c - [c == t_b]). */
static void cross_entropy_backward(const float *gy, const float *x, const int64_t *t, const float *lse,
                                   float *gx, int64_t B, int64_t C) {
    #pragma omp parallel for if (B * C > TD_PAR_MIN)
    for (int64_t b = 0; b < B; b++) {
        const float *r = x + b * C;
        float *q = gx + b * C;
        for (int64_t c = 0; c < C; c++) q[c] = gy[b] * expf(r[c] - lse[b]);
        q[t[b]] -= gy[b];
    }
}

/* Class indices of target [B] (whole numbers in [0, C)), or NULL and error. */
static int64_t *read_classes(const td_tensor *target, const td_tensor *logits) {
    char a[TD_SHAPE_BUF], b[TD_SHAPE_BUF];
    int64_t B = target->numel, C = logits->shape[1];
    float *v = td_alloc(sizeof(float) * (size_t)(B + 1));
    int64_t *t = td_alloc(sizeof(int64_t) * (size_t)(B + 1));
    if (!v || !t) {
        if (v) td_free(v, sizeof(float) * (size_t)(B + 1));
        if (t) td_free(t, sizeof(int64_t) * (size_t)(B + 1));
        return td_fail("cross_entropy: out of memory for %lld targets", (long long)B);
    }
    td_copy_to_buffer(target, v);
    int64_t bad = -1;
    for (int64_t i = 0; i < B && bad < 0; i++) {
        if (v[i] >= 0.0f && (double)v[i] < (double)C && v[i] == floorf(v[i])) t[i] = (int64_t)v[i];
        else bad = i;
    }
    float badv = bad >= 0 ? v[bad] : 0.0f;
    td_free(v, sizeof(float) * (size_t)(B + 1));
    if (bad < 0) return t;
    td_free(t, sizeof(int64_t) * (size_t)(B + 1));
    return td_fail("cross_entropy: target value %g (element %lld of target %s) is not a class index in "
                   "[0, %lld) for axis 1 of logits %s", badv, (long long)bad, td_shape_str(target, b),
                   (long long)C, td_shape_str(logits, a));
}

td_tensor *td_cross_entropy(td_tensor *logits, td_tensor *target) {
    char a[TD_SHAPE_BUF], b[TD_SHAPE_BUF];
    if (!logits || !target) return td_fail("cross_entropy: NULL argument");
    if (logits->ndim != 2 || target->ndim != 1 || target->shape[0] != logits->shape[0])
        return td_fail("cross_entropy: logits %s and target %s must be [B, C] and [B]", td_shape_str(logits, a),
                       td_shape_str(target, b));
    if (logits->shape[1] < 1 && logits->shape[0] > 0)
        return td_fail("cross_entropy: logits %s have no classes (target %s)", td_shape_str(logits, a),
                       td_shape_str(target, b));
    int64_t B = logits->shape[0], C = logits->shape[1];
    int64_t *t = read_classes(target, logits);
    if (!t) return NULL;
    td_tensor *xc = td_contiguous(logits), *lse = td_new(1, &B);
    td_tensor *out = xc && lse ? td_new(1, &B) : NULL;
    if (out) {
        cross_entropy_forward(xc->data, t, out->data, lse->data, B, C);
        td_node *node = td_record(TD_OP_CROSS_ENTROPY, out, 1, &xc);
        td_tensor *tc = node ? td_new(1, &B) : NULL;
        if (tc) {
            for (int64_t i = 0; i < B; i++) tc->data[i] = (float)t[i];
            td_save(node, 1, tc);
            td_release(tc);
        }
        if (node) td_save(node, 0, lse);
    }
    td_free(t, sizeof(int64_t) * (size_t)(B + 1));
    td_release(lse);
    td_release(xc);
    return out;
}

int td_bw_cross_entropy(td_node *n, td_tensor *gout) {
    td_tensor *x = n->in[0], *lse = n->saved[0], *target = n->saved[1];
    if (!lse || !target) return td_failc("cross_entropy: saved tensors are missing");
    int64_t B = x->shape[0], C = x->shape[1];
    int64_t *t = read_classes(target, x);
    if (!t) return -1;
    td_tensor *gc = td_contiguous(gout);
    td_tensor *gx = gc ? td_new(2, x->shape) : NULL;
    int rc = -1;
    if (gx) {
        cross_entropy_backward(gc->data, x->data, t, lse->data, gx->data, B, C);
        rc = td_accumulate(n, 0, gx);
    }
    td_free(t, sizeof(int64_t) * (size_t)(B + 1));
    td_release(gc);
    td_release(gx);
    return rc;
}

/* ---- composites ---- */

/* Temporaries of a composite, one op per step: a step runs only while all
 * before it succeeded (so the first error message stays), and all are
 * released at the end. */
typedef struct {
    td_tensor *t[16];
    int n;
    bool bad;
} td_steps;

static td_tensor *keep(td_steps *s, td_tensor *t) {
    if (!t) s->bad = true;
    else s->t[s->n++] = t;
    return t;
}

#define STEP(s, expr) ((s)->bad ? NULL : keep((s), (expr)))

/* Returns a new reference to the last step's result and releases the rest. */
static td_tensor *finish(td_steps *s) {
    td_tensor *out = s->bad || !s->n ? NULL : s->t[s->n - 1];
    td_retain(out);
    for (int i = 0; i < s->n; i++) td_release(s->t[i]);
    return out;
}

td_tensor *td_mse_loss(td_tensor *a, td_tensor *b) {
    td_tensor *ins[2] = {a, b};
    if (check_bcast("mse_loss", 2, ins)) return NULL;
    td_steps s = {0};
    td_tensor *d = STEP(&s, td_sub(a, b));
    td_tensor *sq = STEP(&s, td_square(d));
    td_tensor *sum = STEP(&s, td_sum(sq, 0, 0));
    STEP(&s, td_mul_scalar(sum, 1.0f / (float)sq->numel));
    return finish(&s);
}

/* -(x - mu)^2 / (2 sigma^2) - log sigma - log sqrt(2 pi) */
td_tensor *td_normal_log_prob(td_tensor *x, td_tensor *mu, td_tensor *sigma) {
    td_tensor *ins[3] = {x, mu, sigma};
    if (check_bcast("normal_log_prob", 3, ins)) return NULL;
    td_steps s = {0};
    td_tensor *d = STEP(&s, td_sub(x, mu));
    td_tensor *z = STEP(&s, td_div(d, sigma));
    td_tensor *z2 = STEP(&s, td_square(z));
    td_tensor *q = STEP(&s, td_mul_scalar(z2, -0.5f));
    td_tensor *ls = STEP(&s, td_log(sigma));
    td_tensor *r = STEP(&s, td_sub(q, ls));
    STEP(&s, td_add_scalar(r, (float)(-0.5 * log(2.0 * M_PI))));
    return finish(&s);
}

/* -|x - mu| / scale - log(2 scale) */
td_tensor *td_laplace_log_prob(td_tensor *x, td_tensor *mu, td_tensor *scale) {
    td_tensor *ins[3] = {x, mu, scale};
    if (check_bcast("laplace_log_prob", 3, ins)) return NULL;
    td_steps s = {0};
    td_tensor *d = STEP(&s, td_sub(x, mu));
    td_tensor *ad = STEP(&s, td_abs(d));
    td_tensor *r = STEP(&s, td_div(ad, scale));
    td_tensor *ls = STEP(&s, td_log(scale));
    td_tensor *t = STEP(&s, td_add(r, ls));
    td_tensor *nt = STEP(&s, td_neg(t));
    STEP(&s, td_add_scalar(nt, (float)-M_LN2));
    return finish(&s);
}

/* KL(N(mu1, sigma1^2) || N(mu2, sigma2^2)) = (v + d^2 - 1 - log v) / 2 with
 * v = (sigma1 / sigma2)^2 and d = (mu1 - mu2) / sigma2, as torch writes it. */
td_tensor *td_kl_normal(td_tensor *mu1, td_tensor *sigma1, td_tensor *mu2, td_tensor *sigma2) {
    td_tensor *ins[4] = {mu1, sigma1, mu2, sigma2};
    if (check_bcast("kl_normal", 4, ins)) return NULL;
    td_steps s = {0};
    td_tensor *ratio = STEP(&s, td_div(sigma1, sigma2));
    td_tensor *v = STEP(&s, td_square(ratio));
    td_tensor *dm = STEP(&s, td_sub(mu1, mu2));
    td_tensor *d = STEP(&s, td_div(dm, sigma2));
    td_tensor *d2 = STEP(&s, td_square(d));
    td_tensor *vd = STEP(&s, td_add(v, d2));
    td_tensor *lv = STEP(&s, td_log(v));
    td_tensor *t = STEP(&s, td_sub(vd, lv));
    td_tensor *t1 = STEP(&s, td_add_scalar(t, -1.0f));
    STEP(&s, td_mul_scalar(t1, 0.5f));
    return finish(&s);
}

/* ---- rowdist: sum_j |x_j - y_j|^p over the last axis, p = 1 or 2 ---- */

/* The broadcast of x and y [..., n] (last dims equal); fails naming both. */
static int rowdist_bcast(td_tensor *x, td_tensor *y, int p, td_bcast *bc) {
    char sx[TD_SHAPE_BUF], sy[TD_SHAPE_BUF];
    if (!x || !y) return td_failc("rowdist: NULL tensor");
    if (p != 1 && p != 2) return td_failc("rowdist: p must be 1 or 2, got %d", p);
    if (x->ndim < 1 || y->ndim < 1 || x->shape[x->ndim - 1] != y->shape[y->ndim - 1])
        return td_failc("rowdist: x %s, y %s: last dims must be equal", td_shape_str(x, sx), td_shape_str(y, sy));
    td_tensor *ins[2] = {x, y};
    return td_broadcast("rowdist", 2, ins, bc);
}

/* out[r] = sum_j |x[j sx] - y[j sy]|^p for one row of n */
static float rowdist_row(const float *x, const float *y, int64_t n, int64_t sx, int64_t sy, int p) {
    float acc = 0.0f;
    if (sx == 1 && sy == 1) {
        if (p == 1) {
            #pragma omp simd reduction(+ : acc)
            for (int64_t j = 0; j < n; j++) acc += fabsf(x[j] - y[j]);
        } else {
            #pragma omp simd reduction(+ : acc)
            for (int64_t j = 0; j < n; j++) acc += (x[j] - y[j]) * (x[j] - y[j]);
        }
        return acc;
    }
    for (int64_t j = 0; j < n; j++) {
        float d = x[j * sx] - y[j * sy];
        acc += p == 1 ? fabsf(d) : d * d;
    }
    return acc;
}

/* g[j] = s * c * d|d|^p/dd, d = x - y, c = the row's upstream gradient,
 * s = +1 for x, -1 for y; g contiguous [n] */
static void rowdist_grad_row(const float *x, const float *y, int64_t n, int64_t sx, int64_t sy, int p, float c,
                             float *g) {
    if (sx == 1 && sy == 1) {
        if (p == 1) {
            #pragma omp simd
            for (int64_t j = 0; j < n; j++) {
                float d = x[j] - y[j];
                g[j] = d > 0.0f ? c : (d < 0.0f ? -c : 0.0f);
            }
        } else {
            float c2 = 2.0f * c;
            #pragma omp simd
            for (int64_t j = 0; j < n; j++) g[j] = c2 * (x[j] - y[j]);
        }
        return;
    }
    for (int64_t j = 0; j < n; j++) {
        float d = x[j * sx] - y[j * sy];
        g[j] = p == 1 ? (d > 0.0f ? c : (d < 0.0f ? -c : 0.0f)) : 2.0f * c * d;
    }
}

td_tensor *td_rowdist(td_tensor *x, td_tensor *y, int p) {
    td_bcast bc;
    if (rowdist_bcast(x, y, p, &bc)) return NULL;
    int last = bc.ndim - 1;
    int64_t n = bc.shape[last], rows = td_shape_numel(last, bc.shape);
    td_tensor *out = td_new(last, bc.shape);
    if (!out) return NULL;
    float *o = out->data;
    #pragma omp parallel for if (rows * n > TD_PAR_MIN)
    for (int64_t r = 0; r < rows; r++)
        o[r] = rowdist_row(bc.base[0] + td_bcast_offset(&bc, 0, r * n), bc.base[1] + td_bcast_offset(&bc, 1, r * n),
                           n, bc.stride[0][last], bc.stride[1][last], p);
    td_tensor *ins[2] = {x, y};
    td_node *node = td_record(TD_OP_ROWDIST, out, 2, ins);
    if (node) node->ip[0] = p;
    return out;
}

/* gout [...]: dx = gout d|x - y|^p/dx in the broadcast shape [..., n], dy = -dx
 * (each written in one pass; td_accumulate sums broadcast dims down). */
int td_bw_rowdist(td_node *n, td_tensor *gout) {
    td_bcast bc;
    int p = (int)n->ip[0];
    if (rowdist_bcast(n->in[0], n->in[1], p, &bc)) return -1;
    td_tensor *gc = td_contiguous(gout);
    if (!gc) return -1;
    int last = bc.ndim - 1, rc = 0;
    int64_t len = bc.shape[last], rows = td_shape_numel(last, bc.shape);
    const float *gr = gc->data;
    for (int k = 0; k < 2 && rc == 0; k++) {
        if (!wants(n, k)) continue;
        td_tensor *g = td_new(bc.ndim, bc.shape);
        if (!g) {
            rc = -1;
            break;
        }
        float sign = k == 0 ? 1.0f : -1.0f;
        #pragma omp parallel for if (rows * len > TD_PAR_MIN)
        for (int64_t r = 0; r < rows; r++)
            rowdist_grad_row(bc.base[0] + td_bcast_offset(&bc, 0, r * len),
                             bc.base[1] + td_bcast_offset(&bc, 1, r * len), len, bc.stride[0][last],
                             bc.stride[1][last], p, sign * gr[r], g->data + r * len);
        rc = td_accumulate(n, k, g);
        td_release(g);
    }
    td_release(gc);
    return rc;
}
