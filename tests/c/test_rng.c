/* Random numbers: Philox4x32-10 known answers, determinism for a seed and
 * across thread counts, moments and frequencies, permutations, errors. */
#include "check.h"
#include "internal.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Random123's kat_vectors for philox4x32_10 (counter, key -> output), as
 * copied in DEShawResearch/fs123 core123/ut/ut_philox.cpp. */
static void test_known_answers(void) {
    static const uint32_t kat[3][10] = {
        {0, 0, 0, 0, 0, 0, 0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8},
        {0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff,
         0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd},
        {0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344, 0xa4093822, 0x299f31d0,
         0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1},
    };
    for (int k = 0; k < 3; k++) {
        uint32_t out[4];
        td_philox4x32_10(kat[k], kat[k] + 4, out);
        CHECK(!memcmp(out, kat[k] + 6, sizeof out), "philox4x32_10 vector %d: got %08x %08x %08x %08x", k,
              out[0], out[1], out[2], out[3]);
    }
    /* the stream itself: seed 0, first call -> counter 0, key 0 */
    td_manual_seed(0);
    td_tensor *u = td_rand(1, SHAPE(4));
    for (int k = 0; k < 4; k++)
        CHECK(u && u->data[k] == (float)(kat[0][6 + k] >> 8) * 0x1p-24f, "rand word %d of block 0 of seed 0", k);
    td_release(u);
}

static bool same(const td_tensor *a, const td_tensor *b) {
    return a && b && a->numel == b->numel && !memcmp(a->data, b->data, sizeof(float) * (size_t)a->numel);
}

typedef td_tensor *(*gen_fn)(void);
static td_tensor *gen_rand(void) { return td_rand(2, SHAPE(300, 301)); }
static td_tensor *gen_randn(void) { return td_randn(2, SHAPE(301, 300)); }
static td_tensor *gen_bernoulli(void) {
    td_tensor *p = td_full(1, SHAPE(90001), 0.3f), *t = td_bernoulli(p);
    td_release(p);
    return t;
}
static td_tensor *gen_categorical(void) {
    td_tensor *p = td_from_buffer(2, SHAPE(2, 3), (float[]){1, 2, 3, 0, 1, 1}), *t = td_categorical(p, 50001);
    td_release(p);
    return t;
}
static td_tensor *gen_randperm(void) { return td_randperm(1001); }

/* Same seed -> same numbers, with 1 or 2 threads; the next call differs. */
static void test_determinism(void) {
    static const struct { const char *name; gen_fn fn; } gens[] = {
        {"rand", gen_rand}, {"randn", gen_randn}, {"bernoulli", gen_bernoulli},
        {"categorical", gen_categorical}, {"randperm", gen_randperm},
    };
    int threads = td_get_num_threads();
    for (size_t g = 0; g < sizeof gens / sizeof *gens; g++) {
        td_set_num_threads(1);
        td_manual_seed(42);
        td_tensor *a1 = gens[g].fn(), *a2 = gens[g].fn();
        td_set_num_threads(2);
        td_manual_seed(42);
        td_tensor *b1 = gens[g].fn(), *b2 = gens[g].fn();
        td_manual_seed(43);
        td_tensor *c1 = gens[g].fn();
        CHECK(same(a1, b1) && same(a2, b2), "%s: same seed, 1 vs 2 threads", gens[g].name);
        CHECK(!same(a1, a2), "%s: the second call continues the stream", gens[g].name);
        CHECK(!same(a1, c1), "%s: another seed gives other numbers", gens[g].name);
        td_release(a1);
        td_release(a2);
        td_release(b1);
        td_release(b2);
        td_release(c1);
    }
    td_set_num_threads(threads);
    /* element i depends on (seed, offset, i) only, not on the call's size */
    td_manual_seed(9);
    td_tensor *small = td_randn(1, SHAPE(7));
    td_manual_seed(9);
    td_tensor *big = td_randn(1, SHAPE(100000));
    CHECK(small && big && !memcmp(small->data, big->data, 7 * sizeof(float)), "randn prefix independent of size");
    td_release(small);
    td_release(big);
    CHECK(td_get_seed() == 9, "get_seed returns the seed");
}

/* mean, variance, kurtosis in double */
static void moments(const td_tensor *t, double *mean, double *var, double *kurt) {
    double s = 0, s2 = 0, s4 = 0;
    for (int64_t i = 0; i < t->numel; i++) s += t->data[i];
    *mean = s / (double)t->numel;
    for (int64_t i = 0; i < t->numel; i++) {
        double d = t->data[i] - *mean;
        s2 += d * d;
        s4 += d * d * d * d;
    }
    *var = s2 / (double)t->numel;
    *kurt = s4 / (double)t->numel / (*var * *var);
}

static void test_moments(void) {
    td_manual_seed(123);
    double m, v, k;
    td_tensor *u = td_rand(1, SHAPE(1000000));
    moments(u, &m, &v, &k);
    float lo = 1, hi = 0;
    for (int64_t i = 0; i < u->numel; i++) {
        lo = fminf(lo, u->data[i]);
        hi = fmaxf(hi, u->data[i]);
    }
    CHECK(lo >= 0.0f && hi < 1.0f && lo < 1e-4f && hi > 1.0f - 1e-4f, "rand in [0,1): min %g max %g", lo, hi);
    CHECK(fabs(m - 0.5) < 2e-3 && fabs(v - 1.0 / 12) < 1e-3 && fabs(k - 1.8) < 0.02,
          "uniform moments: mean %g var %g kurtosis %g", m, v, k);
    td_release(u);
    td_tensor *z = td_randn(1, SHAPE(1000000));
    moments(z, &m, &v, &k);
    int64_t within = 0;
    for (int64_t i = 0; i < z->numel; i++) within += fabsf(z->data[i]) < 1.0f;
    CHECK(fabs(m) < 5e-3 && fabs(v - 1.0) < 1e-2 && fabs(k - 3.0) < 0.05, "normal moments: mean %g var %g kurtosis %g",
          m, v, k);
    CHECK(fabs((double)within / 1e6 - 0.682689) < 3e-3, "normal: P(|z| < 1) = %g", (double)within / 1e6);
    td_release(z);
}

static void test_bernoulli(void) {
    td_manual_seed(5);
    int64_t n = 500000;
    td_tensor *p = td_empty(2, SHAPE(n, 2));
    for (int64_t i = 0; i < n; i++) {
        p->data[2 * i] = 0.1f;
        p->data[2 * i + 1] = 0.85f;
    }
    td_tensor *b = td_bernoulli(p);
    double c0 = 0, c1 = 0;
    bool binary = true;
    for (int64_t i = 0; i < n; i++) {
        c0 += b->data[2 * i];
        c1 += b->data[2 * i + 1];
        binary = binary && (b->data[2 * i] == 0 || b->data[2 * i] == 1);
    }
    CHECK(binary, "bernoulli gives 0 or 1");
    CHECK(fabs(c0 / n - 0.1) < 3e-3 && fabs(c1 / n - 0.85) < 3e-3, "bernoulli frequencies %g %g", c0 / n, c1 / n);
    td_release(b);
    td_fill(p, 0.0f);
    b = td_bernoulli(p);
    double s = 0;
    for (int64_t i = 0; i < b->numel; i++) s += b->data[i];
    CHECK(s == 0, "bernoulli(0) is always 0");
    td_release(b);
    td_fill(p, 1.0f);
    b = td_bernoulli(p);
    s = 0;
    for (int64_t i = 0; i < b->numel; i++) s += b->data[i];
    CHECK(s == (double)b->numel, "bernoulli(1) is always 1");
    td_release(b);
    td_release(p);
}

static void test_categorical(void) {
    td_manual_seed(6);
    const float probs[3][4] = {{1, 2, 3, 4}, {0, 5, 0, 5}, {0, 0, 0.25f, 0}};
    td_tensor *p = td_from_buffer(2, SHAPE(3, 4), &probs[0][0]);
    int64_t ns = 200000;
    td_tensor *s = td_categorical(p, ns);
    CHECK(s && s->ndim == 2 && s->shape[0] == 3 && s->shape[1] == ns, "categorical shape [3,%lld]", (long long)ns);
    for (int b = 0; s && b < 3; b++) {
        double cnt[4] = {0}, tot = 0;
        for (int64_t k = 0; k < ns; k++) cnt[(int)s->data[b * ns + k]]++;
        for (int j = 0; j < 4; j++) tot += probs[b][j];
        for (int j = 0; j < 4; j++) {
            double want = probs[b][j] / tot, got = cnt[j] / (double)ns;
            CHECK(probs[b][j] == 0 ? cnt[j] == 0 : fabs(got - want) < 5e-3, "categorical row %d class %d: %g, want %g",
                  b, j, got, want);
        }
    }
    td_release(s);
    td_tensor *v = td_narrow(p, 0, 0, 1), *flat = td_reshape(v, 1, SHAPE(4)), *s1 = td_categorical(flat, 5);
    CHECK(s1 && s1->ndim == 1 && s1->shape[0] == 5, "categorical of [C] gives [nsamples]");
    td_release(s1);
    td_release(flat);
    td_release(v);
    td_release(p);
}

static void test_randperm(void) {
    td_manual_seed(8);
    for (int64_t n = 0; n <= 1000; n += (n < 3 ? 1 : 997)) {
        td_tensor *t = td_randperm(n);
        char *seen = calloc((size_t)n + 1, 1);
        bool ok = t && t->numel == n;
        for (int64_t i = 0; ok && i < n; i++) {
            int64_t v = (int64_t)t->data[i];
            ok = v >= 0 && v < n && (float)v == t->data[i] && !seen[v];
            if (ok) seen[v] = 1;
        }
        CHECK(ok, "randperm(%lld) is a permutation", (long long)n);
        free(seen);
        td_release(t);
    }
    /* position of element 0 over many draws of randperm(4) is uniform */
    int pos[4] = {0};
    for (int r = 0; r < 40000; r++) {
        td_tensor *t = td_randperm(4);
        for (int i = 0; i < 4; i++) pos[i] += t->data[i] == 0.0f;
        td_release(t);
    }
    for (int i = 0; i < 4; i++) CHECK(abs(pos[i] - 10000) < 400, "randperm(4): 0 lands at %d %d times", i, pos[i]);
}

static void test_errors(void) {
    td_tensor *p = td_from_buffer(2, SHAPE(2, 3), (float[]){0.1f, 1.5f, 0, 0, 0, 0});
    td_tensor *b = td_bernoulli(p);
    CHECK(!b && strstr(td_last_error(), "bernoulli") && strstr(td_last_error(), "[2,3]"), "bernoulli p > 1: %s",
          td_last_error());
    td_tensor *c = td_categorical(p, 3); /* row 1 sums to 0 */
    CHECK(!c && strstr(td_last_error(), "categorical") && strstr(td_last_error(), "[2,3]"), "categorical zero row: %s",
          td_last_error());
    p->data[0] = -1;
    c = td_categorical(p, 3);
    CHECK(!c && strstr(td_last_error(), "[2,3]"), "categorical negative: %s", td_last_error());
    td_tensor *p3 = td_ones(3, SHAPE(2, 3, 4));
    c = td_categorical(p3, 3);
    CHECK(!c && strstr(td_last_error(), "[2,3,4]"), "categorical of 3 dims: %s", td_last_error());
    CHECK(!td_randperm(-1) && strstr(td_last_error(), "randperm"), "randperm(-1) fails");
    td_release(p);
    td_release(p3);
}

/* Saving (seed, offset) and restoring it replays the stream exactly. */
static void test_state(void) {
    td_manual_seed(99);
    td_tensor *skip = td_rand(1, SHAPE(37));
    uint64_t seed = td_get_seed(), off = td_rng_offset();
    td_tensor *a = td_randn(2, SHAPE(5, 7));
    td_manual_seed(1); /* move elsewhere */
    td_tensor *other = td_rand(1, SHAPE(3));
    td_rng_set_state(seed, off);
    td_tensor *b = td_randn(2, SHAPE(5, 7));
    check_close("randn after td_rng_set_state", b, a, 0, 0);
    CHECK(td_rng_offset() > off, "drawing advances the offset");
    td_release(skip);
    td_release(a);
    td_release(b);
    td_release(other);
}

int main(void) {
    test_known_answers();
    test_state();
    test_determinism();
    test_moments();
    test_bernoulli();
    test_categorical();
    test_randperm();
    test_errors();
    CHECK(td_live_tensors() == 0, "tensors leaked: %lld live", (long long)td_live_tensors());
    return check_summary();
}
