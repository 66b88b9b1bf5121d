/* tide-polymnist - builds PolyMNIST or class-matched pairs from IDX files,
 * and draws a grid of PolyMNIST tuples. See datasets/README.md. */
#define _POSIX_C_SOURCE 200809L
#include "polymnist.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char *usage =
    "usage:\n"
    "  tide-polymnist poly  --images IDX --labels IDX --backgrounds A.png,B.png,... --out DIR\n"
    "                       [--seed N] [--sizes TRAIN,VAL,TEST]\n"
    "  tide-polymnist pairs --images IDX --labels IDX --images-b IDX --labels-b IDX --out DIR\n"
    "                       [--seed N] [--sizes TRAIN,VAL,TEST]\n"
    "  tide-polymnist grid  --in FILE.safetensors --out FILE.png [--rows N] [--scale K]\n"
    "poly and pairs write DIR/train.safetensors, DIR/val.safetensors, DIR/test.safetensors\n"
    "(default --seed 1 --sizes 8000,1000,1000).\n";

typedef struct {
    const char *images, *labels, *images_b, *labels_b, *backgrounds, *out, *in;
    uint64_t seed;
    int64_t sizes[PM_NSPLITS];
    int rows, scale;
} options;

static int parse_args(int argc, char **argv, options *o) {
    *o = (options){.seed = 1, .sizes = {8000, 1000, 1000}, .rows = 8, .scale = 2};
    for (int i = 2; i < argc; i += 2) {
        const char *k = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) return fprintf(stderr, "tide-polymnist: %s needs a value\n%s", k, usage), -1;
        if (!strcmp(k, "--images")) o->images = v;
        else if (!strcmp(k, "--labels")) o->labels = v;
        else if (!strcmp(k, "--images-b")) o->images_b = v;
        else if (!strcmp(k, "--labels-b")) o->labels_b = v;
        else if (!strcmp(k, "--backgrounds")) o->backgrounds = v;
        else if (!strcmp(k, "--out")) o->out = v;
        else if (!strcmp(k, "--in")) o->in = v;
        else if (!strcmp(k, "--seed")) o->seed = strtoull(v, NULL, 10);
        else if (!strcmp(k, "--rows")) o->rows = atoi(v);
        else if (!strcmp(k, "--scale")) o->scale = atoi(v);
        else if (!strcmp(k, "--sizes")) {
            long long a, b, c;
            if (sscanf(v, "%lld,%lld,%lld", &a, &b, &c) != 3) return fprintf(stderr, "tide-polymnist: --sizes wants A,B,C\n"), -1;
            o->sizes[0] = a, o->sizes[1] = b, o->sizes[2] = c;
        } else
            return fprintf(stderr, "tide-polymnist: unknown option %s\n%s", k, usage), -1;
    }
    return 0;
}

static const char *base_name(const char *p) {
    const char *s = strrchr(p, '/');
    return s ? s + 1 : p;
}

/* Appends "key":"value" (value escaped) to a JSON object under construction. */
static void meta_put(char *buf, size_t cap, const char *key, const char *val) {
    size_t n = strlen(buf);
    n += (size_t)snprintf(buf + n, cap - n, "%s\"%s\":\"", n > 1 ? "," : "", key);
    for (const char *p = val; *p && n + 8 < cap; p++) {
        if (*p == '"' || *p == '\\') buf[n++] = '\\';
        buf[n++] = (unsigned char)*p < 0x20 ? ' ' : *p;
    }
    snprintf(buf + n, cap - n, "\"");
}

static int load_pair(const char *images, const char *labels, td_tensor **x, td_tensor **y) {
    *x = td_idx_load(images);
    *y = *x ? td_idx_load(labels) : NULL;
    if (!*y) {
        fprintf(stderr, "tide-polymnist: %s\n", td_last_error());
        td_release(*x);
        return -1;
    }
    return 0;
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int cmd_poly(const options *o) {
    if (!o->images || !o->labels || !o->backgrounds || !o->out)
        return fprintf(stderr, "tide-polymnist poly: --images, --labels, --backgrounds and --out are required\n%s", usage), 1;
    double t0 = now();
    td_tensor *x, *y, *bg[PM_MAX_MODALITIES] = {0};
    if (load_pair(o->images, o->labels, &x, &y)) return 1;
    char list[4096], names[1024] = "";
    snprintf(list, sizeof list, "%s", o->backgrounds);
    int m = 0, rc = 0;
    for (char *tok = strtok(list, ","); tok && !rc; tok = strtok(NULL, ",")) {
        if (m == PM_MAX_MODALITIES) {
            fprintf(stderr, "tide-polymnist: more than %d backgrounds\n", PM_MAX_MODALITIES);
            rc = 1;
        } else if (!(bg[m] = td_png_load(tok))) {
            fprintf(stderr, "tide-polymnist: %s\n", td_last_error());
            rc = 1;
        } else {
            size_t n = strlen(names);
            snprintf(names + n, sizeof names - n, "%s%s", m ? "," : "", base_name(tok));
            m++;
        }
    }
    pm_split s[PM_NSPLITS] = {0};
    if (!rc && pm_build(x, y, m, bg, o->sizes, o->seed, s)) {
        fprintf(stderr, "tide-polymnist: %s\n", pm_error());
        rc = 1;
    }
    for (int k = 0; !rc && k < PM_NSPLITS; k++) {
        char path[4096], meta[4096] = "{", num[64];
        snprintf(path, sizeof path, "%s/%s.safetensors", o->out, pm_split_names[k]);
        meta_put(meta, sizeof meta, "format", "polymnist");
        meta_put(meta, sizeof meta, "split", pm_split_names[k]);
        snprintf(num, sizeof num, "%llu", (unsigned long long)o->seed);
        meta_put(meta, sizeof meta, "seed", num);
        snprintf(num, sizeof num, "%lld,%lld,%lld", (long long)o->sizes[0], (long long)o->sizes[1], (long long)o->sizes[2]);
        meta_put(meta, sizeof meta, "sizes", num);
        meta_put(meta, sizeof meta, "source_images", base_name(o->images));
        meta_put(meta, sizeof meta, "backgrounds", names);
        meta_put(meta, sizeof meta, "images", "uint8 0..255 [N,M,3,h,w]: modality m is a crop of background m, inverted where the digit is > 0.5");
        meta_put(meta, sizeof meta, "sources", "index of each modality's digit in source_images");
        meta_put(meta, sizeof meta, "crops", "top, left of each crop in its background");
        strcat(meta, "}");
        if (pm_save(path, &s[k], meta)) {
            fprintf(stderr, "tide-polymnist: %s\n", pm_error());
            rc = 1;
        } else {
            printf("wrote %s: %lld tuples of %d modalities\n", path, (long long)s[k].labels->shape[0], m);
        }
    }
    if (m && !rc) printf("built PolyMNIST in %.1f s\n", now() - t0);
    for (int k = 0; k < PM_NSPLITS; k++) pm_split_free(&s[k]);
    for (int k = 0; k < m; k++) td_release(bg[k]);
    td_release(x);
    td_release(y);
    return rc;
}

static int cmd_pairs(const options *o) {
    if (!o->images || !o->labels || !o->images_b || !o->labels_b || !o->out)
        return fprintf(stderr, "tide-polymnist pairs: --images, --labels, --images-b, --labels-b and --out are required\n%s", usage), 1;
    td_tensor *xa, *ya, *xb, *yb;
    if (load_pair(o->images, o->labels, &xa, &ya)) return 1;
    if (load_pair(o->images_b, o->labels_b, &xb, &yb)) {
        td_release(xa), td_release(ya);
        return 1;
    }
    pm_pairs p[PM_NSPLITS] = {0};
    int rc = 0;
    if (pm_build_pairs(xa, ya, xb, yb, o->sizes, o->seed, p)) {
        fprintf(stderr, "tide-polymnist: %s\n", pm_error());
        rc = 1;
    }
    for (int k = 0; !rc && k < PM_NSPLITS; k++) {
        char path[4096], meta[4096] = "{", num[64];
        snprintf(path, sizeof path, "%s/%s.safetensors", o->out, pm_split_names[k]);
        meta_put(meta, sizeof meta, "format", "pairs");
        meta_put(meta, sizeof meta, "split", pm_split_names[k]);
        snprintf(num, sizeof num, "%llu", (unsigned long long)o->seed);
        meta_put(meta, sizeof meta, "seed", num);
        meta_put(meta, sizeof meta, "source_a", base_name(o->images));
        meta_put(meta, sizeof meta, "source_b", base_name(o->images_b));
        meta_put(meta, sizeof meta, "images", "a, b: uint8 0..255 [N,1,h,w] of the same class");
        meta_put(meta, sizeof meta, "sources", "index in source_a, index in source_b");
        strcat(meta, "}");
        if (pm_save_pairs(path, &p[k], meta)) {
            fprintf(stderr, "tide-polymnist: %s\n", pm_error());
            rc = 1;
        } else {
            printf("wrote %s: %lld pairs\n", path, (long long)p[k].labels->shape[0]);
        }
    }
    for (int k = 0; k < PM_NSPLITS; k++) pm_pairs_free(&p[k]);
    td_release(xa), td_release(ya), td_release(xb), td_release(yb);
    return rc;
}

/* Nearest-neighbour upscaling of [C,H,W] by k. */
static td_tensor *upscale(const td_tensor *g, int k) {
    int64_t c = g->shape[0], h = g->shape[1], w = g->shape[2];
    td_tensor *out = td_empty(3, (int64_t[]){c, h * k, w * k});
    for (int64_t i = 0; out && i < out->numel; i++) {
        int64_t x = i % (w * k), y = i / (w * k) % (h * k), ch = i / (w * k * h * k);
        out->data[i] = g->data[(ch * h + y / k) * w + x / k];
    }
    return out;
}

static int cmd_grid(const options *o) {
    if (!o->in || !o->out) return fprintf(stderr, "tide-polymnist grid: --in and --out are required\n%s", usage), 1;
    td_st_file *f = td_st_open(o->in);
    int64_t shape[TD_MAX_DIMS];
    if (!f) return fprintf(stderr, "tide-polymnist: %s\n", td_last_error()), 1;
    if (td_st_shape(f, "images", shape) != 5) {
        td_st_close(f);
        return fprintf(stderr, "tide-polymnist: %s: no [N,M,3,h,w] tensor \"images\"\n", o->in), 1;
    }
    int64_t rows = o->rows < shape[0] ? o->rows : shape[0];
    td_tensor *t = td_st_get_rows(f, "images", 0, rows), *flat = NULL, *unit = NULL, *grid = NULL, *big = NULL;
    if (t) flat = td_reshape(t, 4, (int64_t[]){rows * shape[1], 3, shape[3], shape[4]});
    if (flat) unit = td_mul_scalar(flat, 1.0f / 255.0f);
    if (unit) grid = td_image_grid(unit, (int)shape[1], 2, 1.0f);
    if (grid) big = o->scale > 1 ? upscale(grid, o->scale) : (td_retain(grid), grid);
    int rc = big && td_png_save(o->out, big) == 0 ? 0 : 1;
    if (rc) fprintf(stderr, "tide-polymnist: %s\n", td_last_error());
    else printf("wrote %s: %lld tuples (rows) x %lld modalities (columns)\n", o->out, (long long)rows, (long long)shape[1]);
    td_release(big), td_release(grid), td_release(unit), td_release(flat), td_release(t);
    td_st_close(f);
    return rc;
}

int main(int argc, char **argv) {
    options o;
    if (argc < 2 || parse_args(argc, argv, &o)) {
        if (argc < 2) fputs(usage, stderr);
        return 2;
    }
    if (!strcmp(argv[1], "poly")) return cmd_poly(&o);
    if (!strcmp(argv[1], "pairs")) return cmd_pairs(&o);
    if (!strcmp(argv[1], "grid")) return cmd_grid(&o);
    fprintf(stderr, "tide-polymnist: unknown command %s\n%s", argv[1], usage);
    return 2;
}
