/* idx.c - IDX files (the MNIST format), gzip-compressed or plain (zlib's
 * gzread passes plain files through). Header: two zero bytes, a dtype byte,
 * the number of dims, then each dim as a big-endian uint32; the data follows
 * big-endian, row-major. */
#include "internal.h"
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

typedef struct {
    unsigned code;
    int size;
    const char *name;
} idx_dtype;

static const idx_dtype idx_dtypes[] = {
    {0x08, 1, "ubyte"}, {0x09, 1, "sbyte"}, {0x0B, 2, "short"},
    {0x0C, 4, "int"},   {0x0D, 4, "float"}, {0x0E, 8, "double"},
};

static const idx_dtype *find_dtype(unsigned code) {
    for (size_t i = 0; i < sizeof idx_dtypes / sizeof *idx_dtypes; i++)
        if (idx_dtypes[i].code == code) return &idx_dtypes[i];
    return NULL;
}

/* Reads up to n bytes; returns the count, or -1 (with the error set) when the
 * gzip stream is corrupt or truncated. */
static int64_t gz_read_all(gzFile gz, const char *path, unsigned char *buf, int64_t n) {
    int64_t got = 0;
    while (got < n) {
        unsigned want = (unsigned)(n - got > (1 << 30) ? (1 << 30) : n - got);
        int r = gzread(gz, buf + got, want);
        int err;
        const char *msg = gzerror(gz, &err);
        if (r < 0 || (err != Z_OK && err != Z_STREAM_END)) {
            td_fail("idx: %s: corrupt or truncated gzip data: %s", path, msg ? msg : "read error");
            return -1;
        }
        if (r == 0) break;
        got += r;
    }
    return got;
}

static void dims_str(int ndim, const int64_t *dims, char *buf, size_t len) {
    size_t k = 0;
    buf[0] = '\0';
    for (int i = 0; i < ndim && k < len; i++) k += (size_t)snprintf(buf + k, len - k, i ? "x%lld" : "%lld", (long long)dims[i]);
}

static uint64_t be_uint(const unsigned char *p, int n) {
    uint64_t v = 0;
    for (int i = 0; i < n; i++) v = v << 8 | p[i];
    return v;
}

/* Big-endian values of dtype dt -> float. */
static void idx_convert(const idx_dtype *dt, const unsigned char *src, float *dst, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        const unsigned char *p = src + i * dt->size;
        uint64_t u = be_uint(p, dt->size);
        switch (dt->code) {
        case 0x08: dst[i] = (float)p[0]; break;
        case 0x09: dst[i] = (float)(int8_t)p[0]; break;
        case 0x0B: dst[i] = (float)(int16_t)(uint16_t)u; break;
        case 0x0C: dst[i] = (float)(int32_t)(uint32_t)u; break;
        case 0x0D: { uint32_t b = (uint32_t)u; float f; memcpy(&f, &b, 4); dst[i] = f; break; }
        default: { double d; memcpy(&d, &u, 8); dst[i] = (float)d; break; }
        }
    }
}

/* Header -> dtype, ndim and dims; the data size in bytes. */
static int read_header(gzFile gz, const char *path, const idx_dtype **dt, int *ndim, int64_t *dims, int64_t *nbytes) {
    unsigned char h[4 + 4 * TD_MAX_DIMS];
    int64_t got = gz_read_all(gz, path, h, 4);
    if (got < 0) return -1;
    if (got < 4) return td_failc("idx: %s: file too short for an IDX header (%lld bytes)", path, (long long)got);
    if (h[0] != 0 || h[1] != 0)
        return td_failc("idx: %s: bad magic 0x%02x%02x%02x%02x: not an IDX file", path, h[0], h[1], h[2], h[3]);
    if (!(*dt = find_dtype(h[2])))
        return td_failc("idx: %s: unknown data type 0x%02x (ubyte 0x08, sbyte 0x09, short 0x0B, int 0x0C, float 0x0D, double 0x0E)", path, h[2]);
    *ndim = h[3];
    if (*ndim < 1 || *ndim > TD_MAX_DIMS)
        return td_failc("idx: %s: header has %d dimensions, 1 to %d are supported", path, *ndim, TD_MAX_DIMS);
    got = gz_read_all(gz, path, h + 4, 4 * *ndim);
    if (got < 0) return -1;
    if (got < 4 * *ndim) return td_failc("idx: %s: truncated header: %d dimensions announced, %lld bytes of sizes", path, *ndim, (long long)got);
    int64_t n = (*dt)->size, nonzero = 1; /* strides multiply every nonzero dim, even when one is 0 */
    for (int i = 0; i < *ndim; i++) {
        dims[i] = (int64_t)be_uint(h + 4 + 4 * i, 4);
        if (dims[i] && nonzero > (INT64_C(1) << 40) / dims[i])
            return td_failc("idx: %s: header sizes overflow (dim %d is %lld)", path, i, (long long)dims[i]);
        if (dims[i]) nonzero *= dims[i];
        n *= dims[i];
    }
    *nbytes = n;
    return 0;
}

/* Reads exactly nbytes of data into a buffer that grows with what arrives,
 * so a lying header cannot make us allocate more than the file holds. */
static unsigned char *read_data(gzFile gz, const char *path, int ndim, const int64_t *dims, int64_t nbytes) {
    int64_t cap = nbytes < (1 << 20) ? nbytes + 1 : (1 << 20), have = 0;
    unsigned char *buf = malloc((size_t)cap);
    if (!buf) return td_fail("idx: %s: out of memory", path);
    for (;;) {
        int64_t got = gz_read_all(gz, path, buf + have, cap - have);
        if (got < 0) {
            have = -1;
            break;
        }
        have += got;
        if (have < cap || have > nbytes) break;
        int64_t nc = cap * 2 > nbytes + 1 ? nbytes + 1 : cap * 2;
        unsigned char *p = realloc(buf, (size_t)nc);
        if (!p) {
            td_fail("idx: %s: out of memory for %lld bytes", path, (long long)nc);
            have = -1;
            break;
        }
        buf = p;
        cap = nc;
    }
    char d[128];
    dims_str(ndim, dims, d, sizeof d);
    if (have >= 0 && have < nbytes)
        td_fail("idx: %s: truncated: header says %s, file has %lld bytes of data (needs %lld)", path, d, (long long)have, (long long)nbytes);
    else if (have > nbytes)
        td_fail("idx: %s: more data than the header's %s values (%lld bytes expected)", path, d, (long long)nbytes);
    else if (have == nbytes)
        return buf;
    free(buf);
    return NULL;
}

td_tensor *td_idx_load(const char *path) {
    if (!path) return td_fail("idx: NULL path");
    errno = 0;
    gzFile gz = gzopen(path, "rb");
    if (!gz) return td_fail("idx: %s: cannot open: %s", path, errno ? strerror(errno) : "out of memory");
    gzbuffer(gz, 1 << 17);
    const idx_dtype *dt = NULL;
    int ndim = 0;
    int64_t dims[TD_MAX_DIMS] = {0}, nbytes = 0;
    td_tensor *out = NULL;
    unsigned char *data = NULL;
    if (read_header(gz, path, &dt, &ndim, dims, &nbytes) == 0 && (data = read_data(gz, path, ndim, dims, nbytes))) {
        out = td_new(ndim, dims);
        if (out) idx_convert(dt, data, out->data, out->numel);
    }
    free(data);
    gzclose_r(gz);
    return out;
}
