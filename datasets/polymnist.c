/* polymnist.c - see polymnist.h. */
#include "polymnist.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* td_fail is internal to the engine, so this file keeps its own message. */
static _Thread_local char pm_msg[512];
const char *pm_error(void) { return pm_msg; }
#define PM_FAIL(...) (snprintf(pm_msg, sizeof pm_msg, __VA_ARGS__), -1)

const char *const pm_split_names[PM_NSPLITS] = {"train", "val", "test"};

/* ---- random numbers ---- */

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

void pm_seed(pm_rng *r, uint64_t seed, uint64_t stream) {
    uint64_t x = seed ^ (stream * 0xD1B54A32D192ED03ULL);
    for (int i = 0; i < 4; i++) r->s[i] = splitmix64(&x);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t pm_next(pm_rng *r) {
    uint64_t *s = r->s, out = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return out;
}

uint64_t pm_below(pm_rng *r, uint64_t n) {
    uint64_t limit = UINT64_MAX - UINT64_MAX % n, x; /* rejection: no modulo bias */
    do x = pm_next(r);
    while (x >= limit);
    return x % n;
}

void pm_shuffle(pm_rng *r, int64_t *a, int64_t n) {
    for (int64_t i = n - 1; i > 0; i--) {
        int64_t j = (int64_t)pm_below(r, (uint64_t)i + 1), t = a[i];
        a[i] = a[j];
        a[j] = t;
    }
}

/* ---- sources ---- */

typedef struct {
    int64_t n, h, w;
    float *pix;    /* [n, h*w] */
    int *label;    /* [n] */
    int nclass;
} pm_source;

static void source_free(pm_source *s) {
    free(s->pix);
    free(s->label);
}

static int source_load(const char *what, const td_tensor *images, const td_tensor *labels, pm_source *s) {
    memset(s, 0, sizeof *s);
    if (!images || !labels) return PM_FAIL("%s: NULL images or labels", what);
    int nd = images->ndim;
    if (!((nd == 3) || (nd == 4 && images->shape[1] == 1)) || labels->ndim != 1 || labels->shape[0] != images->shape[0])
        return PM_FAIL("%s: images must be [N,h,w] or [N,1,h,w] and labels [N] (got %d-dim images, %d-dim labels)", what, nd,
                       labels->ndim);
    s->n = images->shape[0];
    s->h = images->shape[nd - 2];
    s->w = images->shape[nd - 1];
    s->pix = malloc(sizeof(float) * (size_t)(images->numel + 1));
    float *lab = malloc(sizeof(float) * (size_t)(s->n + 1));
    s->label = malloc(sizeof(int) * (size_t)(s->n + 1));
    if (!s->pix || !lab || !s->label) {
        free(lab);
        source_free(s);
        return PM_FAIL("%s: out of memory", what);
    }
    td_copy_to_buffer(images, s->pix);
    td_copy_to_buffer(labels, lab);
    for (int64_t i = 0; i < s->n; i++) {
        float v = lab[i];
        if (!(v >= 0 && v <= 255 && v == floorf(v))) {
            free(lab);
            source_free(s);
            return PM_FAIL("%s: label %lld is %g, not a class index 0..255", what, (long long)i, v);
        }
        s->label[i] = (int)v;
        if (s->label[i] + 1 > s->nclass) s->nclass = s->label[i] + 1;
    }
    free(lab);
    return 0;
}

/* The indices ids[0..n) grouped by class: members of class c are
 * order[start[c] .. start[c+1]), in the order they come in ids. */
typedef struct {
    int64_t *order, *start;
} pm_classes;

static int group_by_class(const pm_source *s, const int64_t *ids, int64_t n, pm_classes *g) {
    g->order = malloc(sizeof(int64_t) * (size_t)(n + 1));
    g->start = calloc((size_t)s->nclass + 2, sizeof(int64_t));
    int64_t *fill = calloc((size_t)s->nclass + 1, sizeof(int64_t));
    if (!g->order || !g->start || !fill) {
        free(fill);
        return PM_FAIL("polymnist: out of memory");
    }
    for (int64_t i = 0; i < n; i++) g->start[s->label[ids[i]] + 1]++;
    for (int c = 0; c < s->nclass; c++) g->start[c + 1] += g->start[c];
    for (int64_t i = 0; i < n; i++) {
        int c = s->label[ids[i]];
        g->order[g->start[c] + fill[c]++] = ids[i];
    }
    free(fill);
    return 0;
}

static void classes_free(pm_classes *g) {
    free(g->order);
    free(g->start);
}

/* A seeded permutation of the n source images; split k takes the next sizes[k]. */
static int64_t *split_sources(int64_t n, uint64_t seed, uint64_t stream) {
    int64_t *perm = malloc(sizeof(int64_t) * (size_t)(n + 1));
    if (!perm) return NULL;
    for (int64_t i = 0; i < n; i++) perm[i] = i;
    pm_rng r;
    pm_seed(&r, seed, stream);
    pm_shuffle(&r, perm, n);
    return perm;
}

static int check_sizes(const char *what, const int64_t *sizes, int64_t n) {
    int64_t total = 0;
    for (int k = 0; k < PM_NSPLITS; k++) {
        if (sizes[k] < 0) return PM_FAIL("%s: negative split size %lld", what, (long long)sizes[k]);
        total += sizes[k];
    }
    if (total > n)
        return PM_FAIL("%s: splits of %lld + %lld + %lld need %lld source images, the set has %lld", what, (long long)sizes[0],
                       (long long)sizes[1], (long long)sizes[2], (long long)total, (long long)n);
    return 0;
}

/* ---- PolyMNIST ---- */

/* Does value v at position j of modality m repeat a lower modality's? */
static int collides(int64_t *const *P, int m, int64_t j, int64_t v) {
    for (int k = 0; k < m; k++)
        if (P[k][j] == v) return 1;
    return 0;
}

/* P[m][0..n): a random permutation of 0..n-1 where no position repeats the
 * value of a lower modality at that position. */
static int distinct_permutation(pm_rng *r, int64_t *const *P, int m, int64_t n) {
    for (int attempt = 0; attempt < 50; attempt++) {
        for (int64_t j = 0; j < n; j++) P[m][j] = j;
        pm_shuffle(r, P[m], n);
        int64_t budget = 200 * n + 1000;
        for (int64_t j = 0; j < n && budget > 0; j++)
            while (collides(P, m, j, P[m][j]) && budget-- > 0) {
                int64_t q = (int64_t)pm_below(r, (uint64_t)n), a = P[m][j], b = P[m][q];
                if (!collides(P, m, j, b) && (q > j || !collides(P, m, q, a))) {
                    P[m][j] = b;
                    P[m][q] = a;
                }
            }
        if (budget > 0) return 0;
    }
    return -1;
}

typedef struct {
    int m;
    int64_t h, w, H[PM_MAX_MODALITIES], W[PM_MAX_MODALITIES];
    unsigned char *bg[PM_MAX_MODALITIES]; /* [3,H,W] bytes */
} pm_backs;

/* One modality image: crop of background k at (y0, x0), inverted on the digit. */
static void render(const pm_backs *b, int k, const float *digit, int64_t y0, int64_t x0, float *out) {
    int64_t hw = b->h * b->w, HW = b->H[k] * b->W[k];
    for (int c = 0; c < 3; c++)
        for (int64_t y = 0; y < b->h; y++)
            for (int64_t x = 0; x < b->w; x++) {
                int bgv = b->bg[k][c * HW + (y0 + y) * b->W[k] + x0 + x];
                out[c * hw + y * b->w + x] = (float)(digit[y * b->w + x] / 255.0f > 0.5f ? 255 - bgv : bgv);
            }
}

static int alloc_split(pm_split *o, int64_t n, int m, int64_t h, int64_t w) {
    o->images = td_empty(5, (int64_t[]){n, m, 3, h, w});
    o->labels = td_empty(1, (int64_t[]){n});
    o->sources = td_empty(2, (int64_t[]){n, m});
    o->crops = td_empty(3, (int64_t[]){n, m, 2});
    if (o->images && o->labels && o->sources && o->crops) return 0;
    pm_split_free(o);
    return PM_FAIL("polymnist: out of memory for %lld tuples: %s", (long long)n, td_last_error());
}

static int build_split(const pm_source *s, const pm_backs *b, const int64_t *ids, int64_t n, int k, uint64_t seed,
                       pm_split *o) {
    pm_classes g = {0};
    int64_t *P[PM_MAX_MODALITIES] = {0}, *tuples = malloc(sizeof(int64_t) * (size_t)(n + 1));
    int rc = tuples ? group_by_class(s, ids, n, &g) : PM_FAIL("polymnist: out of memory");
    for (int mo = 0; !rc && mo < b->m; mo++)
        if (!(P[mo] = malloc(sizeof(int64_t) * (size_t)(n + 1)))) rc = PM_FAIL("polymnist: out of memory");
    pm_rng r;
    pm_seed(&r, seed, 1 + (uint64_t)k);
    /* per class, one permutation per modality (P[mo] + start[c]) */
    for (int c = 0; !rc && c < s->nclass; c++) {
        int64_t nc = g.start[c + 1] - g.start[c], *seg[PM_MAX_MODALITIES];
        if (nc == 0) continue;
        if (nc < b->m) {
            rc = PM_FAIL("polymnist: class %d has %lld images in split %s; %d modalities need at least %d", c, (long long)nc,
                         pm_split_names[k], b->m, b->m);
            break;
        }
        for (int mo = 0; mo < b->m; mo++) seg[mo] = P[mo] + g.start[c];
        for (int mo = 0; !rc && mo < b->m; mo++)
            if (distinct_permutation(&r, seg, mo, nc))
                rc = PM_FAIL("polymnist: no distinct digits found for class %d in split %s", c, pm_split_names[k]);
    }
    if (!rc) rc = alloc_split(o, n, b->m, b->h, b->w);
    if (!rc) {
        for (int64_t t = 0; t < n; t++) tuples[t] = t; /* position in the class-grouped order */
        pm_shuffle(&r, tuples, n);
        int64_t img = 3 * b->h * b->w;
        for (int64_t t = 0; t < n; t++) {
            int64_t pos = tuples[t];
            int c = s->label[g.order[pos]];
            o->labels->data[t] = (float)c;
            for (int mo = 0; mo < b->m; mo++) {
                int64_t src = g.order[g.start[c] + P[mo][pos]];
                int64_t y0 = (int64_t)pm_below(&r, (uint64_t)(b->H[mo] - b->h + 1));
                int64_t x0 = (int64_t)pm_below(&r, (uint64_t)(b->W[mo] - b->w + 1));
                o->sources->data[t * b->m + mo] = (float)src;
                o->crops->data[(t * b->m + mo) * 2] = (float)y0;
                o->crops->data[(t * b->m + mo) * 2 + 1] = (float)x0;
                render(b, mo, s->pix + src * b->h * b->w, y0, x0, o->images->data + (t * b->m + mo) * img);
            }
        }
    }
    for (int mo = 0; mo < b->m; mo++) free(P[mo]);
    free(tuples);
    classes_free(&g);
    return rc;
}

static int load_backgrounds(int m, td_tensor *const *bgs, int64_t h, int64_t w, pm_backs *b) {
    memset(b, 0, sizeof *b);
    if (m < 1 || m > PM_MAX_MODALITIES || !bgs) return PM_FAIL("polymnist: %d modalities, 1 to %d are supported", m, PM_MAX_MODALITIES);
    b->m = m;
    b->h = h;
    b->w = w;
    for (int k = 0; k < m; k++) {
        const td_tensor *t = bgs[k];
        if (!t || t->ndim != 3 || t->shape[0] != 3 || t->shape[1] < h || t->shape[2] < w)
            return PM_FAIL("polymnist: background %d must be [3,H,W] with H >= %lld and W >= %lld", k, (long long)h, (long long)w);
        b->H[k] = t->shape[1];
        b->W[k] = t->shape[2];
        float *v = malloc(sizeof(float) * (size_t)t->numel);
        b->bg[k] = malloc((size_t)t->numel);
        if (!v || !b->bg[k]) {
            free(v);
            return PM_FAIL("polymnist: out of memory");
        }
        td_copy_to_buffer(t, v);
        for (int64_t i = 0; i < t->numel; i++) {
            float x = v[i] < 0 ? 0 : v[i] > 1 ? 1 : v[i];
            b->bg[k][i] = (unsigned char)lrintf(x * 255.0f);
        }
        free(v);
    }
    return 0;
}

int pm_build(const td_tensor *images, const td_tensor *labels, int m, td_tensor *const *backgrounds,
             const int64_t sizes[PM_NSPLITS], uint64_t seed, pm_split out[PM_NSPLITS]) {
    pm_source s;
    pm_backs b = {0};
    memset(out, 0, sizeof(pm_split) * PM_NSPLITS);
    if (source_load("polymnist", images, labels, &s)) return -1;
    int rc = check_sizes("polymnist", sizes, s.n);
    if (!rc) rc = load_backgrounds(m, backgrounds, s.h, s.w, &b);
    int64_t *perm = rc ? NULL : split_sources(s.n, seed, 0);
    if (!rc && !perm) rc = PM_FAIL("polymnist: out of memory");
    int64_t at = 0;
    for (int k = 0; !rc && k < PM_NSPLITS; at += sizes[k], k++)
        rc = build_split(&s, &b, perm + at, sizes[k], k, seed, &out[k]);
    if (rc)
        for (int k = 0; k < PM_NSPLITS; k++) pm_split_free(&out[k]);
    for (int k = 0; k < b.m; k++) free(b.bg[k]);
    free(perm);
    source_free(&s);
    return rc;
}

void pm_split_free(pm_split *o) {
    td_release(o->images);
    td_release(o->labels);
    td_release(o->sources);
    td_release(o->crops);
    memset(o, 0, sizeof *o);
}

int pm_save(const char *path, const pm_split *o, const char *metadata_json) {
    const char *names[] = {"images", "labels", "sources", "crops"}, *dtypes[] = {"U8", "U8", "I32", "I32"};
    td_tensor *ts[] = {o->images, o->labels, o->sources, o->crops};
    if (td_safetensors_save_as(path, 4, names, ts, dtypes, metadata_json)) return PM_FAIL("%s", td_last_error());
    return 0;
}

/* ---- pairs ---- */

static int build_pair_split(const pm_source *A, const pm_source *B, const int64_t *ida, int64_t na, const int64_t *idb,
                            int64_t nb, int k, uint64_t seed, pm_pairs *o) {
    pm_classes ga = {0}, gb = {0};
    int64_t *tuples = malloc(sizeof(int64_t) * (size_t)(na + 1));
    int rc = tuples ? group_by_class(A, ida, na, &ga) : PM_FAIL("pairs: out of memory");
    if (!rc) rc = group_by_class(B, idb, nb, &gb);
    pm_rng r;
    pm_seed(&r, seed, 200 + (uint64_t)k);
    for (int c = 0; !rc && c < A->nclass; c++) {
        int64_t nac = ga.start[c + 1] - ga.start[c], nbc = c < B->nclass ? gb.start[c + 1] - gb.start[c] : 0;
        if (nbc < nac)
            rc = PM_FAIL("pairs: class %d: split %s has %lld images of set a but only %lld of set b", c, pm_split_names[k],
                         (long long)nac, (long long)nbc);
        else if (nac)
            pm_shuffle(&r, gb.order + gb.start[c], nbc);
    }
    if (!rc) {
        o->a = td_empty(4, (int64_t[]){na, 1, A->h, A->w});
        o->b = td_empty(4, (int64_t[]){na, 1, B->h, B->w});
        o->labels = td_empty(1, (int64_t[]){na});
        o->sources = td_empty(2, (int64_t[]){na, 2});
        if (!o->a || !o->b || !o->labels || !o->sources) rc = PM_FAIL("pairs: out of memory: %s", td_last_error());
    }
    if (!rc) {
        for (int64_t t = 0; t < na; t++) tuples[t] = t;
        pm_shuffle(&r, tuples, na);
        for (int64_t t = 0; t < na; t++) {
            int64_t pos = tuples[t], ia = ga.order[pos];
            int c = A->label[ia];
            int64_t ib = gb.order[gb.start[c] + (pos - ga.start[c])];
            o->labels->data[t] = (float)c;
            o->sources->data[2 * t] = (float)ia;
            o->sources->data[2 * t + 1] = (float)ib;
            memcpy(o->a->data + t * A->h * A->w, A->pix + ia * A->h * A->w, sizeof(float) * (size_t)(A->h * A->w));
            memcpy(o->b->data + t * B->h * B->w, B->pix + ib * B->h * B->w, sizeof(float) * (size_t)(B->h * B->w));
        }
    }
    free(tuples);
    classes_free(&ga);
    classes_free(&gb);
    return rc;
}

int pm_build_pairs(const td_tensor *a_images, const td_tensor *a_labels, const td_tensor *b_images,
                   const td_tensor *b_labels, const int64_t sizes[PM_NSPLITS], uint64_t seed, pm_pairs out[PM_NSPLITS]) {
    pm_source A, B;
    memset(out, 0, sizeof(pm_pairs) * PM_NSPLITS);
    if (source_load("pairs (set a)", a_images, a_labels, &A)) return -1;
    if (source_load("pairs (set b)", b_images, b_labels, &B)) {
        source_free(&A);
        return -1;
    }
    int rc = check_sizes("pairs", sizes, A.n);
    int64_t total = sizes[0] + sizes[1] + sizes[2], bsizes[PM_NSPLITS];
    for (int k = 0; k < PM_NSPLITS; k++) bsizes[k] = total ? B.n * sizes[k] / total : 0;
    int64_t *pa = rc ? NULL : split_sources(A.n, seed, 0), *pb = rc ? NULL : split_sources(B.n, seed, 100);
    if (!rc && (!pa || !pb)) rc = PM_FAIL("pairs: out of memory");
    for (int64_t k = 0, at = 0, bt = 0; !rc && k < PM_NSPLITS; at += sizes[k], bt += bsizes[k], k++)
        rc = build_pair_split(&A, &B, pa + at, sizes[k], pb + bt, bsizes[k], (int)k, seed, &out[k]);
    if (rc)
        for (int k = 0; k < PM_NSPLITS; k++) pm_pairs_free(&out[k]);
    free(pa);
    free(pb);
    source_free(&A);
    source_free(&B);
    return rc;
}

void pm_pairs_free(pm_pairs *p) {
    td_release(p->a);
    td_release(p->b);
    td_release(p->labels);
    td_release(p->sources);
    memset(p, 0, sizeof *p);
}

int pm_save_pairs(const char *path, const pm_pairs *p, const char *metadata_json) {
    const char *names[] = {"a", "b", "labels", "sources"}, *dtypes[] = {"U8", "U8", "U8", "I32"};
    td_tensor *ts[] = {p->a, p->b, p->labels, p->sources};
    if (td_safetensors_save_as(path, 4, names, ts, dtypes, metadata_json)) return PM_FAIL("%s", td_last_error());
    return 0;
}
