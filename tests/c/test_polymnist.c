/* PolyMNIST and class-matched pairs (datasets/polymnist.c): the rules of
 * Sutter et al. 2021 checked on every tuple of a synthetic build (same class
 * across modalities, different source digits, disjoint splits, each image
 * recomputed from its crop and digit), determinism for a seed, the file
 * round trip and the errors.
 *
 *   test_polymnist              synthetic data only
 *   test_polymnist --cache DIR  the files datasets/fetch built under DIR;
 *                               exits 77 (skip) when they are not there */
#include "check.h"
#include "polymnist.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Whole numbers 0..255 of a uniform draw. */
static td_tensor *rand_bytes(int ndim, const int64_t *shape, float scale, uint64_t *s) {
    td_tensor *t = check_rand(ndim, shape, 0, 256, s);
    for (int64_t i = 0; i < t->numel; i++) t->data[i] = floorf(t->data[i]) * scale;
    return t;
}

/* What a split must satisfy, given its source set and backgrounds. */
typedef struct {
    const float *pix, *lab; /* source images [N,h,w] (0..255) and labels */
    int64_t n, h, w;
    int m;
    const td_tensor *const *bg; /* [3,H,W] in [0,1] */
    int *used;                  /* per source image: which split used it (-1: none) */
} rules;

/* Checks tuples [t0, t0 + rows) of one split, given as tensors holding those rows. */
static int check_tuples(rules *r, int split, int64_t t0, const td_tensor *images, const td_tensor *labels,
                        const td_tensor *sources, const td_tensor *crops, int64_t *per_modality_count) {
    int bad_label = 0, bad_distinct = 0, bad_split = 0, bad_pixel = 0, bad_crop = 0;
    int64_t rows = labels->shape[0], hw = r->h * r->w;
    for (int64_t t = 0; t < rows; t++) {
        int c = (int)labels->data[t];
        for (int mo = 0; mo < r->m; mo++) {
            int64_t src = (int64_t)sources->data[t * r->m + mo];
            if (src < 0 || src >= r->n) {
                bad_split++;
                continue;
            }
            bad_label += (int)r->lab[src] != c;
            for (int q = 0; q < mo; q++) bad_distinct += (int64_t)sources->data[t * r->m + q] == src;
            /* every source image serves one split only, once per modality */
            if (r->used[src] != -1 && r->used[src] != split) bad_split++;
            r->used[src] = split;
            per_modality_count[src * r->m + mo]++;
            const td_tensor *bg = r->bg[mo];
            int64_t y0 = (int64_t)crops->data[(t * r->m + mo) * 2], x0 = (int64_t)crops->data[(t * r->m + mo) * 2 + 1];
            int64_t H = bg->shape[1], W = bg->shape[2];
            if (y0 < 0 || x0 < 0 || y0 + r->h > H || x0 + r->w > W) {
                bad_crop++;
                continue;
            }
            const float *img = images->data + (t * r->m + mo) * 3 * hw;
            for (int ch = 0; ch < 3; ch++)
                for (int64_t y = 0; y < r->h; y++)
                    for (int64_t x = 0; x < r->w; x++) {
                        float b = roundf(bg->data[(ch * H + y0 + y) * W + x0 + x] * 255.0f);
                        int on = r->pix[src * hw + y * r->w + x] / 255.0f > 0.5f;
                        bad_pixel += img[(ch * r->h + y) * r->w + x] != (on ? 255.0f - b : b);
                    }
        }
    }
    CHECK(bad_label == 0, "split %d, tuples from %lld: %d digits of another class than the tuple's", split, (long long)t0, bad_label);
    CHECK(bad_distinct == 0, "split %d: %d tuples reuse a source digit across modalities", split, bad_distinct);
    CHECK(bad_split == 0, "split %d: %d source digits out of range or shared with another split", split, bad_split);
    CHECK(bad_crop == 0, "split %d: %d crops outside their background", split, bad_crop);
    CHECK(bad_pixel == 0, "split %d: %d pixels differ from crop-inverted-on-the-digit", split, bad_pixel);
    return bad_label + bad_distinct + bad_split + bad_crop + bad_pixel;
}

/* Each source digit of a split serves exactly once in each modality. */
static void check_coverage(const rules *r, const int64_t *count, int split) {
    int bad = 0;
    for (int64_t s = 0; s < r->n; s++)
        if (r->used[s] == split)
            for (int mo = 0; mo < r->m; mo++) bad += count[s * r->m + mo] != 1;
    CHECK(bad == 0, "split %d: %d (digit, modality) pairs not used exactly once", split, bad);
}

static int same_tensor(const td_tensor *a, const td_tensor *b) {
    return a && b && a->numel == b->numel && !memcmp(a->data, b->data, sizeof(float) * (size_t)a->numel);
}

static void test_polymnist_synthetic(void) {
    uint64_t s = 5;
    const int64_t N = 700, h = 10, w = 9, sizes[3] = {500, 100, 100};
    td_tensor *images = rand_bytes(3, SHAPE(N, h, w), 1.0f, &s);
    float lab[700];
    for (int i = 0; i < N; i++) lab[i] = (float)((i * 3) % 7);
    td_tensor *labels = td_from_buffer(1, SHAPE(N), lab), *bg[5];
    for (int k = 0; k < 5; k++) bg[k] = rand_bytes(3, SHAPE(3, 14 + k, 20 - k), 1.0f / 255.0f, &s);
    pm_split a[3], b[3], c[3];
    int rc = pm_build(images, labels, 5, bg, sizes, 42, a);
    CHECK(rc == 0, "pm_build: %s", pm_error());
    if (rc) goto done;
    rules r = {images->data, lab, N, h, w, 5, (const td_tensor *const *)bg, malloc(sizeof(int) * N)};
    int64_t *count = calloc((size_t)(N * 5), sizeof(int64_t));
    for (int i = 0; i < N; i++) r.used[i] = -1;
    for (int k = 0; k < 3; k++) {
        const td_tensor *im = a[k].images;
        CHECK(im->ndim == 5 && im->shape[0] == sizes[k] && im->shape[1] == 5 && im->shape[2] == 3 && im->shape[3] == h &&
                  im->shape[4] == w,
              "split %d images are [%lld,5,3,10,9]", k, (long long)sizes[k]);
        CHECK(a[k].sources->shape[0] == sizes[k] && a[k].sources->shape[1] == 5 && a[k].crops->shape[2] == 2, "split %d: sources, crops", k);
        int bad = 0;
        for (int64_t i = 0; i < im->numel; i++) bad += !(im->data[i] >= 0 && im->data[i] <= 255 && im->data[i] == floorf(im->data[i]));
        CHECK(bad == 0, "split %d: %d values are not whole numbers 0..255", k, bad);
        check_tuples(&r, k, 0, im, a[k].labels, a[k].sources, a[k].crops, count);
        check_coverage(&r, count, k);
    }
    int unused = 0;
    for (int i = 0; i < N; i++) unused += r.used[i] == -1;
    CHECK(unused == 0, "500 + 100 + 100 tuples use all 700 source digits (%d unused)", unused);
    /* the modalities are not one permutation: the partner of a digit varies */
    int same_partner = 0;
    for (int64_t t = 0; t < sizes[0]; t++) same_partner += a[0].sources->data[t * 5 + 1] == a[0].sources->data[t * 5];
    CHECK(same_partner == 0, "modality 1 never repeats modality 0's digit");
    free(r.used);
    free(count);

    CHECK(pm_build(images, labels, 5, bg, sizes, 42, b) == 0, "rebuild: %s", pm_error());
    CHECK(pm_build(images, labels, 5, bg, sizes, 43, c) == 0, "other seed: %s", pm_error());
    for (int k = 0; k < 3; k++) {
        CHECK(same_tensor(a[k].images, b[k].images) && same_tensor(a[k].sources, b[k].sources) &&
                  same_tensor(a[k].crops, b[k].crops) && same_tensor(a[k].labels, b[k].labels),
              "split %d is the same for the same seed", k);
        CHECK(!same_tensor(a[k].sources, c[k].sources) && !same_tensor(a[k].crops, c[k].crops), "split %d differs for another seed", k);
        pm_split_free(&b[k]);
        pm_split_free(&c[k]);
    }

    /* file round trip: U8 images and labels, I32 sources and crops */
    char path[256];
    snprintf(path, sizeof path, "%s/tide-test-polymnist-%ld.safetensors", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp", (long)getpid());
    CHECK(pm_save(path, &a[1], "{\"format\":\"polymnist\"}") == 0, "pm_save: %s", pm_error());
    td_st_file *f = td_st_open(path);
    CHECK(f && !strcmp(td_st_dtype(f, "images"), "U8") && !strcmp(td_st_dtype(f, "sources"), "I32") &&
              !strcmp(td_st_metadata(f, "format"), "polymnist"),
          "saved split: dtypes and metadata: %s", td_last_error());
    if (f) {
        const char *names[] = {"images", "labels", "sources", "crops"};
        td_tensor *want[] = {a[1].images, a[1].labels, a[1].sources, a[1].crops};
        for (int i = 0; i < 4; i++) {
            td_tensor *got = td_st_get(f, names[i]);
            check_close(names[i], got, want[i], 0, 0);
            td_release(got);
        }
        td_st_close(f);
    }
    unlink(path);
    for (int k = 0; k < 3; k++) pm_split_free(&a[k]);

    /* errors */
    const int64_t too_many[3] = {600, 100, 1};
    CHECK(pm_build(images, labels, 5, bg, too_many, 1, a) == -1 && strstr(pm_error(), "701") && strstr(pm_error(), "700"),
          "splits larger than the set: %s", pm_error());
    const int64_t tiny[3] = {600, 90, 10}; /* 10 test digits over 7 classes: some class has fewer than 5 */
    CHECK(pm_build(images, labels, 5, bg, tiny, 1, a) == -1 && strstr(pm_error(), "need at least 5"), "small class: %s", pm_error());
    td_tensor *small = td_zeros(3, SHAPE(3, 9, 30)), *bg2[5] = {bg[0], bg[1], small, bg[3], bg[4]};
    CHECK(pm_build(images, labels, 5, bg2, sizes, 1, a) == -1 && strstr(pm_error(), "background 2"), "small background: %s", pm_error());
    td_release(small);
    lab[3] = 2.5f;
    td_tensor *badlab = td_from_buffer(1, SHAPE(N), lab);
    CHECK(pm_build(images, badlab, 5, bg, sizes, 1, a) == -1 && strstr(pm_error(), "label 3 is 2.5"), "fractional label: %s", pm_error());
    td_release(badlab);
done:
    for (int k = 0; k < 5; k++) td_release(bg[k]);
    td_release(images);
    td_release(labels);
}

static void test_pairs_synthetic(void) {
    uint64_t s = 9;
    const int64_t NA = 300, NB = 900, sizes[3] = {200, 50, 50};
    td_tensor *xa = rand_bytes(4, SHAPE(NA, 1, 6, 6), 1.0f, &s), *xb = rand_bytes(3, SHAPE(NB, 5, 4), 1.0f, &s);
    float la[300], lb[900];
    for (int i = 0; i < NA; i++) la[i] = (float)(i % 3);
    for (int i = 0; i < NB; i++) lb[i] = (float)((i / 7) % 3);
    td_tensor *ya = td_from_buffer(1, SHAPE(NA), la), *yb = td_from_buffer(1, SHAPE(NB), lb);
    pm_pairs p[3], q[3];
    int rc = pm_build_pairs(xa, ya, xb, yb, sizes, 7, p);
    CHECK(rc == 0, "pm_build_pairs: %s", pm_error());
    if (rc == 0) {
        int *ua = malloc(sizeof(int) * NA), *ub = malloc(sizeof(int) * NB);
        for (int i = 0; i < NA; i++) ua[i] = -1;
        for (int i = 0; i < NB; i++) ub[i] = -1;
        int bad = 0, reuse = 0, pix = 0;
        for (int k = 0; k < 3; k++) {
            CHECK(p[k].a->shape[0] == sizes[k] && p[k].a->shape[2] == 6 && p[k].b->shape[1] == 1 && p[k].b->shape[2] == 5 &&
                      p[k].b->shape[3] == 4,
                  "pairs split %d shapes", k);
            for (int64_t t = 0; t < sizes[k]; t++) {
                int64_t ia = (int64_t)p[k].sources->data[2 * t], ib = (int64_t)p[k].sources->data[2 * t + 1];
                int c = (int)p[k].labels->data[t];
                bad += (int)la[ia] != c || (int)lb[ib] != c;
                reuse += (ua[ia] != -1) + (ub[ib] != -1);
                ua[ia] = k;
                ub[ib] = k;
                pix += memcmp(p[k].a->data + t * 36, xa->data + ia * 36, 36 * sizeof(float)) != 0;
                pix += memcmp(p[k].b->data + t * 20, xb->data + ib * 20, 20 * sizeof(float)) != 0;
            }
        }
        CHECK(bad == 0, "%d pairs whose images are not of the pair's class", bad);
        CHECK(reuse == 0, "%d source images used twice or in two splits", reuse);
        CHECK(pix == 0, "%d pair images differ from their sources", pix);
        free(ua);
        free(ub);
        CHECK(pm_build_pairs(xa, ya, xb, yb, sizes, 7, q) == 0, "rebuild pairs: %s", pm_error());
        for (int k = 0; k < 3; k++) {
            CHECK(same_tensor(p[k].sources, q[k].sources) && same_tensor(p[k].b, q[k].b), "pairs split %d repeat for a seed", k);
            pm_pairs_free(&p[k]);
            pm_pairs_free(&q[k]);
        }
    }
    /* set b short of a class */
    for (int i = 0; i < NB; i++) lb[i] = (float)(i % 2);
    td_tensor *yb2 = td_from_buffer(1, SHAPE(NB), lb);
    CHECK(pm_build_pairs(xa, ya, xb, yb2, sizes, 7, p) == -1 && strstr(pm_error(), "class 2"), "b without class 2: %s", pm_error());
    td_release(yb2);
    td_release(xa), td_release(ya), td_release(xb), td_release(yb);
}

/* ---- the cached data set ---- */

static int cache_file(char *buf, size_t n, const char *dir, const char *name) {
    snprintf(buf, n, "%s/%s", dir, name);
    return access(buf, R_OK) == 0;
}

static void test_cache_polymnist(const char *dir) {
    char path[1024];
    cache_file(path, sizeof path, dir, "mnist/images-idx3-ubyte.gz");
    td_tensor *src = td_idx_load(path);
    cache_file(path, sizeof path, dir, "mnist/labels-idx1-ubyte.gz");
    td_tensor *lab = td_idx_load(path);
    CHECK(src && lab && src->shape[0] == 10000 && src->shape[1] == 28 && lab->shape[0] == 10000, "MNIST source: %s", td_last_error());
    td_st_file *f[3] = {0};
    td_tensor *bg[5] = {0};
    const int64_t want_n[3] = {8000, 1000, 1000};
    for (int k = 0; k < 3; k++) {
        snprintf(path, sizeof path, "%s/polymnist/%s.safetensors", dir, pm_split_names[k]);
        f[k] = td_st_open(path);
        CHECK(f[k] != NULL, "open %s: %s", path, td_last_error());
    }
    if (!src || !lab || !f[0] || !f[1] || !f[2]) goto done;
    char list[1024];
    snprintf(list, sizeof list, "%s", td_st_metadata(f[0], "backgrounds") ? td_st_metadata(f[0], "backgrounds") : "");
    int m = 0;
    for (char *tok = strtok(list, ","); tok && m < 5; tok = strtok(NULL, ",")) {
        snprintf(path, sizeof path, "%s/backgrounds/%s", dir, tok);
        bg[m] = td_png_load(path);
        CHECK(bg[m] != NULL, "background %s: %s", path, td_last_error());
        if (bg[m]) m++;
    }
    CHECK(m == 5, "5 backgrounds named in the metadata, got %d", m);
    if (m != 5) goto done;
    rules r = {src->data, lab->data, 10000, 28, 28, 5, (const td_tensor *const *)bg, malloc(sizeof(int) * 10000)};
    int64_t *count = calloc(10000 * 5, sizeof(int64_t));
    for (int i = 0; i < 10000; i++) r.used[i] = -1;
    for (int k = 0; k < 3; k++) {
        int64_t shape[TD_MAX_DIMS];
        int nd = td_st_shape(f[k], "images", shape);
        CHECK(nd == 5 && shape[0] == want_n[k] && shape[1] == 5 && shape[2] == 3 && shape[3] == 28 && shape[4] == 28,
              "%s images are [%lld,5,3,28,28]", pm_split_names[k], (long long)want_n[k]);
        CHECK(!strcmp(td_st_dtype(f[k], "images"), "U8"), "images stored as U8");
        if (nd != 5 || shape[0] != want_n[k]) continue;
        for (int64_t t0 = 0; t0 < want_n[k]; t0 += 1000) {
            td_tensor *im = td_st_get_rows(f[k], "images", t0, 1000), *lb = td_st_get_rows(f[k], "labels", t0, 1000);
            td_tensor *so = td_st_get_rows(f[k], "sources", t0, 1000), *cr = td_st_get_rows(f[k], "crops", t0, 1000);
            if (im && lb && so && cr) check_tuples(&r, k, t0, im, lb, so, cr, count);
            else CHECK(false, "read rows %lld of %s: %s", (long long)t0, pm_split_names[k], td_last_error());
            td_release(im), td_release(lb), td_release(so), td_release(cr);
        }
        check_coverage(&r, count, k);
    }
    int unused = 0;
    for (int i = 0; i < 10000; i++) unused += r.used[i] == -1;
    CHECK(unused == 0, "8000 + 1000 + 1000 tuples use all 10000 MNIST digits (%d unused)", unused);
    free(r.used);
    free(count);
done:
    for (int k = 0; k < 3; k++) td_st_close(f[k]);
    for (int k = 0; k < 5; k++) td_release(bg[k]);
    td_release(src), td_release(lab);
}

static void test_cache_pairs(const char *dir) {
    char pa[1024], pb[1024], la[1024], lb[1024], path[1024];
    if (!cache_file(path, sizeof path, dir, "mnist-fashion/train.safetensors")) {
        printf("SKIP: no %s\n", path);
        return;
    }
    cache_file(pa, sizeof pa, dir, "mnist/images-idx3-ubyte.gz");
    cache_file(la, sizeof la, dir, "mnist/labels-idx1-ubyte.gz");
    cache_file(pb, sizeof pb, dir, "fashion-mnist/train-images-idx3-ubyte.gz");
    cache_file(lb, sizeof lb, dir, "fashion-mnist/train-labels-idx1-ubyte.gz");
    td_tensor *ya = td_idx_load(la), *yb = td_idx_load(lb);
    td_st_file *f = td_st_open(path);
    CHECK(ya && yb && f, "pairs sources and file: %s", td_last_error());
    if (ya && yb && f) {
        td_tensor *labels = td_st_get(f, "labels"), *src = td_st_get(f, "sources");
        int bad = 0;
        for (int64_t t = 0; labels && src && t < labels->shape[0]; t++)
            bad += ya->data[(int64_t)src->data[2 * t]] != labels->data[t] || yb->data[(int64_t)src->data[2 * t + 1]] != labels->data[t];
        CHECK(labels && labels->shape[0] == 8000 && bad == 0, "MNIST x Fashion-MNIST train pairs: %d of another class", bad);
        td_release(labels), td_release(src);
    }
    td_st_close(f);
    td_release(ya), td_release(yb);
}

int main(int argc, char **argv) {
    if (argc == 3 && !strcmp(argv[1], "--cache")) {
        char path[1024];
        if (!cache_file(path, sizeof path, argv[2], "polymnist/test.safetensors")) {
            printf("SKIP: %s is missing; run datasets/fetch to build the data sets\n", path);
            return 77;
        }
        test_cache_polymnist(argv[2]);
        test_cache_pairs(argv[2]);
    } else {
        test_polymnist_synthetic();
        test_pairs_synthetic();
    }
    CHECK(td_live_tensors() == 0, "leaked %lld tensors", (long long)td_live_tensors());
    return check_summary();
}
