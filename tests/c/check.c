/* check.c - see check.h. */
#include "check.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

int check_passed, check_failed;

int check_summary(void) {
    printf("%d passed, %d failed\n", check_passed, check_failed);
    return check_failed ? 1 : 0;
}

static double next_uniform(uint64_t *s) {
    *s = *s * 6364136223846793005ULL + 1442695040888963407ULL;
    return (double)(*s >> 11) / 9007199254740992.0;
}

td_tensor *check_rand(int ndim, const int64_t *shape, float lo, float hi, uint64_t *state) {
    td_tensor *t = td_empty(ndim, shape);
    for (int64_t i = 0; t && i < t->numel; i++)
        t->data[i] = lo + (hi - lo) * (float)next_uniform(state);
    return t;
}

static void shape_str(const td_tensor *t, char *buf, size_t n) {
    size_t k = (size_t)snprintf(buf, n, "[");
    for (int i = 0; i < t->ndim && k < n; i++) k += (size_t)snprintf(buf + k, n - k, i ? ",%lld" : "%lld", (long long)t->shape[i]);
    if (k < n) snprintf(buf + k, n - k, "]");
}

bool check_close(const char *what, const td_tensor *got, const td_tensor *want, float atol, float rtol) {
    char a[128], b[128];
    if (!got || !want) {
        CHECK(false, "%s: missing tensor (got %p, want %p): %s", what, (void *)got, (void *)want, td_last_error());
        return false;
    }
    shape_str(got, a, sizeof a);
    shape_str(want, b, sizeof b);
    if (got->numel != want->numel || strcmp(a, b) != 0) {
        CHECK(false, "%s: shape %s, expected %s", what, a, b);
        return false;
    }
    float *g = malloc(sizeof(float) * (size_t)(got->numel + 1));
    float *w = malloc(sizeof(float) * (size_t)(want->numel + 1));
    td_copy_to_buffer(got, g);
    td_copy_to_buffer(want, w);
    int64_t bad = -1;
    double worst = 0;
    for (int64_t i = 0; i < got->numel; i++) {
        double err = fabs((double)g[i] - w[i]) - (atol + rtol * fabs((double)w[i]));
        if (!(err <= 0) && (bad < 0 || err > worst)) {
            bad = i;
            worst = err;
        }
    }
    if (bad >= 0)
        CHECK(false, "%s %s: element %lld is %.7g, expected %.7g", what, a, (long long)bad, g[bad], w[bad]);
    else
        CHECK(true, "ok");
    free(g);
    free(w);
    return bad < 0;
}

/* Offset of row-major index i in a strided tensor. */
static int64_t offset_of(const td_tensor *t, int64_t i) {
    int64_t off = 0;
    for (int d = t->ndim - 1; d >= 0; d--) {
        off += (i % t->shape[d]) * t->stride[d];
        i /= t->shape[d];
    }
    return off;
}

/* sum(out * r) in double, without recording anything. */
static double weighted_loss(check_fn fn, void *ctx, td_tensor **inputs, const float *r) {
    int prev = td_set_grad_enabled(0);
    td_tensor *out = fn(inputs, ctx);
    td_set_grad_enabled(prev);
    if (!out) return NAN;
    float *v = malloc(sizeof(float) * (size_t)(out->numel + 1));
    td_copy_to_buffer(out, v);
    double s = 0;
    for (int64_t i = 0; i < out->numel; i++) s += (double)v[i] * r[i];
    free(v);
    td_release(out);
    return s;
}

bool check_grad(const char *what, check_fn fn, void *ctx, int nin, td_tensor **inputs,
                float eps, float atol, float rtol, int max_elems) {
    uint64_t state = 1234;
    for (int k = 0; k < nin; k++)
        if (inputs[k] && inputs[k]->requires_grad) td_zero_grad(inputs[k]);
    td_tensor *out = fn(inputs, ctx);
    if (!out) {
        CHECK(false, "%s: forward failed: %s", what, td_last_error());
        return false;
    }
    td_tensor *r = check_rand(out->ndim, out->shape, -1.0f, 1.0f, &state);
    if (td_backward(out, r) != 0) {
        CHECK(false, "%s: backward failed: %s", what, td_last_error());
        td_release(out);
        td_release(r);
        return false;
    }
    bool ok = true;
    for (int k = 0; k < nin && ok; k++) {
        td_tensor *x = inputs[k];
        if (!x || !x->requires_grad) continue;
        td_tensor *g = td_get_grad(x);
        if (!g) {
            CHECK(false, "%s: input %d has no gradient", what, k);
            ok = false;
            break;
        }
        int64_t n = x->numel, step = (max_elems > 0 && n > max_elems) ? n / max_elems : 1;
        for (int64_t i = 0; i < n && ok; i += step) {
            float *p = x->data + offset_of(x, i);
            float orig = *p;
            *p = orig + eps;
            double lp = weighted_loss(fn, ctx, inputs, r->data);
            *p = orig - eps;
            double lm = weighted_loss(fn, ctx, inputs, r->data);
            *p = orig;
            double num = (lp - lm) / (2.0 * eps);
            double ana = g->data[i];
            if (!(fabs(num - ana) <= atol + rtol * fabs(num))) {
                CHECK(false, "%s: d/d input%d[%lld]: analytic %.6g, numeric %.6g", what, k, (long long)i, ana, num);
                ok = false;
            }
        }
        td_release(g);
    }
    if (ok) CHECK(true, "ok");
    td_release(out);
    td_release(r);
    return ok;
}

/* ---- bad inputs ---- */

float *check_snapshot(const td_tensor *t) {
    float *v = malloc(sizeof(float) * (size_t)(t->numel + 1));
    td_copy_to_buffer(t, v);
    return v;
}

void check_unchanged(const char *what, const td_tensor *t, float *snap) {
    float *now = check_snapshot(t);
    CHECK(memcmp(now, snap, sizeof(float) * (size_t)t->numel) == 0, "%s: input changed", what);
    free(now);
    free(snap);
}

void check_error(td_tensor *r, const char *what, const char *n1, const char *n2, const char *n3) {
    const char *e = td_last_error();
    CHECK(r == NULL, "%s must fail", what);
    const char *needles[3] = {n1, n2, n3};
    for (int i = 0; i < 3; i++)
        if (needles[i]) CHECK(strstr(e, needles[i]) != NULL, "%s: message lacks \"%s\": %s", what, needles[i], e);
    td_release(r);
}

/* ---- fixtures ---- */

typedef struct {
    char *case_name, *name;
    td_tensor *t;
} entry;

struct check_fixture {
    entry *e;
    int n, cap;
};

check_fixture *fixture_load(const char *file) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", TIDE_FIXTURES, file);
    FILE *fp = fopen(path, "r");
    if (!fp) {
        CHECK(false, "cannot open fixture %s", path);
        return NULL;
    }
    check_fixture *f = calloc(1, sizeof *f);
    char cname[256], tname[256];
    int ndim;
    while (fscanf(fp, "%255s %255s %d", cname, tname, &ndim) == 3) {
        int64_t shape[TD_MAX_DIMS];
        for (int i = 0; i < ndim; i++) {
            long long s;
            if (fscanf(fp, "%lld", &s) != 1) goto bad;
            shape[i] = s;
        }
        td_tensor *t = td_empty(ndim, shape);
        for (int64_t i = 0; i < t->numel; i++)
            if (fscanf(fp, "%f", &t->data[i]) != 1) goto bad;
        if (f->n == f->cap) {
            f->cap = f->cap ? f->cap * 2 : 64;
            f->e = realloc(f->e, sizeof(entry) * (size_t)f->cap);
        }
        f->e[f->n++] = (entry){strdup(cname), strdup(tname), t};
    }
    fclose(fp);
    return f;
bad:
    CHECK(false, "fixture %s is malformed near case %s tensor %s", path, cname, tname);
    fclose(fp);
    return f;
}

td_tensor *fixture_get(check_fixture *f, const char *case_name, const char *tensor_name) {
    for (int i = 0; f && i < f->n; i++)
        if (!strcmp(f->e[i].case_name, case_name) && !strcmp(f->e[i].name, tensor_name)) return f->e[i].t;
    return NULL;
}

void fixture_free(check_fixture *f) {
    for (int i = 0; f && i < f->n; i++) {
        free(f->e[i].case_name);
        free(f->e[i].name);
        td_release(f->e[i].t);
    }
    if (f) free(f->e);
    free(f);
}

bool check_fixture_case(check_fixture *f, const char *case_name, check_fn fn, void *ctx,
                        int nin, float atol, float rtol) {
    td_tensor *ins[8] = {0};
    char name[64], what[256];
    bool ok = true;
    for (int k = 0; k < nin; k++) {
        snprintf(name, sizeof name, "in%d", k);
        td_tensor *src = fixture_get(f, case_name, name);
        if (!src) {
            CHECK(false, "fixture case %s has no %s", case_name, name);
            ok = false;
            goto done;
        }
        ins[k] = td_clone(src);
        snprintf(name, sizeof name, "grad_in%d", k);
        if (fixture_get(f, case_name, name)) td_set_requires_grad(ins[k], 1);
    }
    td_tensor *out = fn(ins, ctx);
    snprintf(what, sizeof what, "%s: output", case_name);
    ok = check_close(what, out, fixture_get(f, case_name, "out"), atol, rtol);
    td_tensor *gout = fixture_get(f, case_name, "gout");
    if (out && gout && out->requires_grad) {
        if (td_backward(out, gout) != 0) {
            CHECK(false, "%s: backward: %s", case_name, td_last_error());
            ok = false;
        }
        for (int k = 0; k < nin; k++) {
            snprintf(name, sizeof name, "grad_in%d", k);
            td_tensor *want = fixture_get(f, case_name, name);
            if (!want) continue;
            td_tensor *g = td_get_grad(ins[k]);
            snprintf(what, sizeof what, "%s: %s", case_name, name);
            ok = check_close(what, g, want, atol, rtol) && ok;
            td_release(g);
        }
    }
    td_release(out);
done:
    for (int k = 0; k < nin; k++) td_release(ins[k]);
    return ok;
}
