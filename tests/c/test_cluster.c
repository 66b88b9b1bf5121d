/* Clustering kernels: k-means assignment against brute force, the update,
 * k-means++ seeding, Lloyd and EM on well separated and overlapping blobs
 * against a float64 NumPy reference (tests/fixtures/make_fused.py). */
#include "check.h"
#include <math.h>
#include <string.h>

static check_fixture *fx;

static td_tensor *fget(const char *c, const char *n) {
    td_tensor *t = fixture_get(fx, c, n);
    CHECK(t != NULL, "fixture fused.txt has no %s %s", c, n);
    return t;
}

static void release_all(td_tensor **t, size_t n) {
    for (size_t i = 0; i < n; i++) td_release(t[i]);
}
#define RELEASE(...) release_all((td_tensor *[]){__VA_ARGS__}, sizeof((td_tensor *[]){__VA_ARGS__}) / sizeof(td_tensor *))

/* True when the two labelings are the same partition (up to renaming). */
static bool same_partition(const td_tensor *a, const td_tensor *b, int K) {
    int map[64], back[64];
    for (int k = 0; k < K; k++) map[k] = back[k] = -1;
    for (int64_t i = 0; i < a->numel; i++) {
        int x = (int)a->data[i], y = (int)b->data[i];
        if (x < 0 || x >= K || y < 0 || y >= K) return false;
        if (map[x] < 0 && back[y] < 0) {
            map[x] = y;
            back[y] = x;
        }
        if (map[x] != y || back[y] != x) return false;
    }
    return true;
}

/* Random points and centers; brute force in double. */
static void test_assign_bruteforce(void) {
    uint64_t s = 17;
    const int64_t N = 2500, K = 7, D = 5; /* N > one GEMM block */
    td_tensor *x = check_rand(2, SHAPE(N, D), -3, 3, &s), *c = check_rand(2, SHAPE(K, D), -3, 3, &s);
    double inertia = -1;
    td_tensor *a = td_kmeans_assign(x, c, &inertia);
    CHECK(a && a->ndim == 1 && a->shape[0] == N, "kmeans_assign: [N] indices: %s", td_last_error());
    int64_t wrong = 0;
    double want = 0;
    for (int64_t n = 0; a && n < N; n++) {
        double best = INFINITY;
        int64_t bi = -1;
        for (int64_t k = 0; k < K; k++) {
            double d2 = 0;
            for (int64_t d = 0; d < D; d++) {
                double t = (double)x->data[n * D + d] - c->data[k * D + d];
                d2 += t * t;
            }
            if (d2 < best) {
                best = d2;
                bi = k;
            }
        }
        want += best;
        wrong += a->data[n] != (float)bi;
    }
    CHECK(wrong == 0, "kmeans_assign: %lld of %lld points not at the nearest center", (long long)wrong, (long long)N);
    CHECK(fabs(inertia - want) <= 1e-6 * want, "kmeans_assign: inertia %.9g, brute force %.9g", inertia, want);
    /* non-contiguous x: the same answer */
    td_tensor *xt = td_transpose(x, 0, 1), *xc = td_contiguous(xt), *xv = td_transpose(xc, 0, 1);
    td_tensor *a2 = td_kmeans_assign(xv, c, NULL);
    check_close("kmeans_assign: strided x", a2, a, 0, 0);
    RELEASE(x, c, a, xt, xc, xv, a2);
}

static void test_update(void) {
    td_tensor *x = td_from_buffer(2, SHAPE(5, 2), (float[]){1, 2, 3, 4, 5, 6, 7, 8, -1, 0});
    td_tensor *a = td_from_buffer(1, SHAPE(5), (float[]){0, 2, 0, 2, 2});
    td_tensor *m = td_kmeans_update(x, a, 3);
    CHECK(m && m->shape[0] == 3 && m->shape[1] == 2, "kmeans_update: [K,D]: %s", td_last_error());
    if (m) {
        CHECK(m->data[0] == 3 && m->data[1] == 4, "kmeans_update: mean of cluster 0 is (3,4), got (%g,%g)", m->data[0], m->data[1]);
        CHECK(isnan(m->data[2]) && isnan(m->data[3]), "kmeans_update: an empty cluster is a NaN row");
        CHECK(m->data[4] == 3 && m->data[5] == 4, "kmeans_update: mean of cluster 2 is (3,4), got (%g,%g)", m->data[4], m->data[5]);
    }
    a->data[1] = 3;
    td_tensor *bad = td_kmeans_update(x, a, 3);
    CHECK(!bad && strstr(td_last_error(), "kmeans_update") && strstr(td_last_error(), "assign[1]"),
          "kmeans_update: out-of-range index: %s", td_last_error());
    a->data[1] = 0.5f;
    bad = td_kmeans_update(x, a, 3);
    CHECK(!bad, "kmeans_update: a fractional index fails");
    td_tensor *c3 = td_zeros(2, SHAPE(2, 3));
    bad = td_kmeans_assign(x, c3, NULL);
    CHECK(!bad && strstr(td_last_error(), "[5,2]") && strstr(td_last_error(), "[2,3]"),
          "kmeans_assign: shape message: %s", td_last_error());
    RELEASE(x, a, m, c3);
}

/* Lloyd from the fixture's start: same centers, assignment and inertia as
 * NumPy, and exactly the true partition of the blobs. */
static void test_lloyd_blobs(void) {
    td_tensor *x = fget("blobs", "x"), *labels = fget("blobs", "labels");
    td_tensor *c = td_clone(fget("kmeans", "init")), *a = NULL;
    double inertia = 0;
    for (int it = 0; it < 50; it++) {
        td_release(a);
        a = td_kmeans_assign(x, c, &inertia);
        td_tensor *next = td_kmeans_update(x, a, 3);
        td_release(c);
        c = next;
    }
    check_close("lloyd: centers vs numpy", c, fget("kmeans", "centers"), 1e-5f, 1e-5f);
    check_close("lloyd: assignment vs numpy", a, fget("kmeans", "assign"), 0, 0);
    float want = fget("kmeans", "inertia")->data[0];
    CHECK(fabs(inertia - want) < 1e-4 * want, "lloyd: inertia %g, numpy %g", inertia, want);
    CHECK(same_partition(a, labels, 3), "lloyd: recovers the blobs exactly");
    RELEASE(c, a);
}

/* k-means++ (needs td_rand): rows of x, one per blob, and the same seed
 * gives the same centers. */
static void test_kmeans_pp(void) {
    td_tensor *x = fget("blobs", "x"), *labels = fget("blobs", "labels");
    td_manual_seed(7);
    td_tensor *c = td_kmeans_pp_init(x, 3);
    if (!c && strstr(td_last_error(), "not implemented")) {
        printf("skip kmeans_pp_init: %s\n", td_last_error());
        return;
    }
    CHECK(c && c->shape[0] == 3 && c->shape[1] == 3, "kmeans_pp_init: [K,D]: %s", td_last_error());
    if (!c) return;
    int blob_of[3] = {-1, -1, -1};
    for (int k = 0; k < 3; k++)
        for (int64_t n = 0; n < x->shape[0]; n++)
            if (!memcmp(x->data + n * 3, c->data + k * 3, 3 * sizeof(float))) blob_of[k] = (int)labels->data[n];
    CHECK(blob_of[0] >= 0 && blob_of[1] >= 0 && blob_of[2] >= 0, "kmeans_pp_init: centers are rows of x");
    CHECK(blob_of[0] != blob_of[1] && blob_of[1] != blob_of[2] && blob_of[0] != blob_of[2],
          "kmeans_pp_init: one center per well separated blob (%d %d %d)", blob_of[0], blob_of[1], blob_of[2]);
    td_manual_seed(7);
    td_tensor *c2 = td_kmeans_pp_init(x, 3);
    check_close("kmeans_pp_init: same seed, same centers", c2, c, 0, 0);
    td_tensor *bad = td_kmeans_pp_init(x, 121);
    CHECK(!bad && strstr(td_last_error(), "kmeans_pp_init") && strstr(td_last_error(), "[120,3]"),
          "kmeans_pp_init: k > N: %s", td_last_error());
    RELEASE(c, c2);
}

/* EM from the fixture's start for `iters` steps: the log-likelihood of each
 * step matches NumPy and never decreases (beyond float rounding), the final
 * parameters match. */
static void run_em(const char *cs, td_tensor *x, int iters, float ptol) {
    td_tensor *logits = td_clone(fget(cs, "logits")), *means = td_clone(fget(cs, "means"));
    td_tensor *logvars = td_clone(fget(cs, "logvars")), *want_ll = fget(cs, "loglik");
    bool ok = true, up = true;
    double prev = -INFINITY;
    char what[96];
    for (int it = 0; it < iters && ok; it++) {
        double ll = 0;
        td_tensor *lr = td_gmm_estep(x, logits, means, logvars, &ll);
        td_tensor *r = lr ? td_exp(lr) : NULL;
        ok = r && td_gmm_mstep(x, r, 1e-6f, logits, means, logvars) == 0;
        CHECK(ok, "%s: EM step %d: %s", cs, it, td_last_error());
        double w = want_ll->data[it];
        if (fabs(ll - w) > 1e-5 * fabs(w)) {
            CHECK(false, "%s: log-likelihood at step %d is %.9g, numpy %.9g", cs, it, ll, w);
            ok = false;
        }
        up &= ll >= prev - 1e-6 * fabs(prev);
        prev = ll;
        RELEASE(lr, r);
    }
    CHECK(up, "%s: the EM log-likelihood never decreases", cs);
    snprintf(what, sizeof what, "%s: final logits", cs);
    check_close(what, logits, fget(cs, "final_logits"), ptol, ptol);
    snprintf(what, sizeof what, "%s: final means", cs);
    check_close(what, means, fget(cs, "final_means"), ptol, ptol);
    snprintf(what, sizeof what, "%s: final logvars", cs);
    check_close(what, logvars, fget(cs, "final_logvars"), ptol, ptol);
    RELEASE(logits, means, logvars);
}

static void test_em(void) {
    td_tensor *x = fget("blobs", "x");
    run_em("em", x, 12, 1e-4f);
    run_em("em_overlap", fget("em_overlap", "x"), 25, 2e-3f);
    /* one step in detail: log responsibilities, then the M step */
    td_tensor *logits = td_clone(fget("em", "logits")), *means = td_clone(fget("em", "means"));
    td_tensor *logvars = td_clone(fget("em", "logvars"));
    td_tensor *lr = td_gmm_estep(x, logits, means, logvars, NULL);
    check_close("gmm_estep: log responsibilities vs numpy", lr, fget("em", "log_resp0"), 1e-4f, 1e-4f);
    td_tensor *r = td_exp(lr);
    CHECK(td_gmm_mstep(x, r, 1e-6f, logits, means, logvars) == 0, "gmm_mstep: %s", td_last_error());
    check_close("gmm_mstep: logits vs numpy", logits, fget("em", "logits1"), 1e-5f, 1e-5f);
    check_close("gmm_mstep: means vs numpy", means, fget("em", "means1"), 1e-5f, 1e-5f);
    check_close("gmm_mstep: logvars vs numpy", logvars, fget("em", "logvars1"), 1e-5f, 1e-5f);
    /* the E step agrees with the responsibilities of the fused GMM */
    td_tensor *p = td_gmm_responsibilities(x, logits, means, logvars), *lr2 = td_gmm_estep(x, logits, means, logvars, NULL);
    td_tensor *p2 = td_exp(lr2);
    check_close("gmm_estep: exp(log resp) = gmm_responsibilities", p2, p, 1e-6f, 1e-4f);
    /* after one EM step the responsibilities give the blobs' partition */
    td_tensor *hard = td_gmm_responsibilities(x, logits, means, logvars), *lab = td_empty(1, SHAPE(x->shape[0]));
    for (int64_t n = 0; n < x->shape[0]; n++) {
        int best = 0;
        for (int k = 1; k < 3; k++)
            if (hard->data[n * 3 + k] > hard->data[n * 3 + best]) best = k;
        lab->data[n] = (float)best;
    }
    CHECK(same_partition(lab, fget("blobs", "labels"), 3), "gmm EM: recovers the blobs exactly");
    /* errors */
    r->data[4] = -1.0f;
    CHECK(td_gmm_mstep(x, r, 1e-6f, logits, means, logvars) != 0 && strstr(td_last_error(), "resp[1,1]"),
          "gmm_mstep: negative responsibility: %s", td_last_error());
    td_tensor *m2 = td_zeros(2, SHAPE(3, 2));
    CHECK(td_gmm_mstep(x, r, 1e-6f, logits, m2, logvars) != 0 && strstr(td_last_error(), "[3,2]") &&
              strstr(td_last_error(), "[120,3]"), "gmm_mstep: shape message: %s", td_last_error());
    td_tensor *bad = td_gmm_estep(x, logits, m2, logvars, NULL);
    CHECK(!bad && strstr(td_last_error(), "gmm_estep: gmm_log_joint") && strstr(td_last_error(), "[3,2]"),
          "gmm_estep: shape message: %s", td_last_error());
    RELEASE(logits, means, logvars, lr, r, p, lr2, p2, hard, lab, m2);
}

int main(void) {
    fx = fixture_load("fused.txt");
    test_assign_bruteforce();
    test_update();
    test_lloyd_blobs();
    test_kmeans_pp();
    test_em();
    fixture_free(fx);
    CHECK(td_live_tensors() == 0, "tensors leaked: %lld live", (long long)td_live_tensors());
    return check_summary();
}
