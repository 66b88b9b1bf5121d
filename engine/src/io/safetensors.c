/* safetensors.c - the safetensors format: an 8-byte little-endian header
 * length N, N bytes of JSON {"name": {"dtype", "shape", "data_offsets":
 * [begin, end]}, "__metadata__": {string: string}}, then the data, each
 * tensor little-endian and row-major at [8 + N + begin, 8 + N + end).
 *
 * The reader trusts nothing: the JSON is parsed strictly, every tensor entry
 * must have exactly the three fields, offsets must tile the data section
 * (contiguous, no overlap, no gap, nothing after), and each size must be
 * numel * dtype size. Tensors are read on demand with pread. */
#define _POSIX_C_SOURCE 200809L
#include "io.h"
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define ST_MAX_HEADER 100000000ULL /* the limit of the reference implementation */

typedef enum { ST_F64, ST_F32, ST_F16, ST_BF16, ST_I64, ST_I32, ST_U8, ST_NDTYPES } st_dtype;
static const char *const dtype_names[ST_NDTYPES] = {"F64", "F32", "F16", "BF16", "I64", "I32", "U8"};
static const int dtype_sizes[ST_NDTYPES] = {8, 4, 2, 2, 8, 4, 1};

static int dtype_of(const char *s) {
    for (int i = 0; i < ST_NDTYPES; i++)
        if (strcmp(s, dtype_names[i]) == 0) return i;
    return -1;
}

/* ---- half precision ---- */

static float f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1F, man = h & 0x3FF, bits;
    if (exp == 0) {
        float f = ldexpf((float)man, -24); /* zero or subnormal */
        return sign ? -f : f;
    }
    bits = exp == 31 ? sign | 0x7F800000u | man << 13 : sign | (exp + 112) << 23 | man << 13;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

/* Round to nearest, ties to even. */
static uint16_t f32_to_f16(float f) {
    uint32_t x, ax;
    memcpy(&x, &f, 4);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000);
    ax = x & 0x7FFFFFFFu;
    if (ax > 0x7F800000u) return sign | 0x7E00;             /* NaN */
    if (ax >= 0x47800000u) return sign | 0x7C00;            /* >= 65536 and inf */
    if (ax < 0x38800000u) {                                 /* below 2^-14: subnormal */
        float af;
        memcpy(&af, &ax, 4);
        return sign | (uint16_t)lrintf(af * 16777216.0f);  /* exact scaling, then RNE */
    }
    uint32_t h = ((ax >> 23) - 112) << 10 | (ax & 0x7FFFFF) >> 13, rem = ax & 0x1FFF;
    if (rem > 0x1000 || (rem == 0x1000 && (h & 1))) h++;   /* may carry into inf: correct */
    return sign | (uint16_t)h;
}

static float bf16_to_f32(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

static uint16_t f32_to_bf16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    if ((x & 0x7FFFFFFFu) > 0x7F800000u) return (uint16_t)((x >> 16) | 0x40);
    return (uint16_t)((x + 0x7FFF + ((x >> 16) & 1)) >> 16);
}

/* ---- little-endian conversions ---- */

static uint64_t le_uint(const unsigned char *p, int n) {
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--) v = v << 8 | p[i];
    return v;
}

static void put_le(unsigned char *p, uint64_t v, int n) {
    for (int i = 0; i < n; i++) p[i] = (unsigned char)(v >> (8 * i));
}

static void decode(int dt, const unsigned char *src, float *dst, int64_t n) {
    int sz = dtype_sizes[dt];
    for (int64_t i = 0; i < n; i++) {
        const unsigned char *p = src + i * sz;
        uint64_t u = le_uint(p, sz);
        switch (dt) {
        case ST_F64: { double d; memcpy(&d, &u, 8); dst[i] = (float)d; break; }
        case ST_F32: { uint32_t b = (uint32_t)u; memcpy(&dst[i], &b, 4); break; }
        case ST_F16: dst[i] = f16_to_f32((uint16_t)u); break;
        case ST_BF16: dst[i] = bf16_to_f32((uint16_t)u); break;
        case ST_I64: dst[i] = (float)(int64_t)u; break;
        case ST_I32: dst[i] = (float)(int32_t)(uint32_t)u; break;
        default: dst[i] = (float)p[0]; break;
        }
    }
}

/* Returns the index of the first value an integer dtype cannot hold, or -1. */
static int64_t encode(int dt, const float *src, unsigned char *dst, int64_t n) {
    int sz = dtype_sizes[dt];
    for (int64_t i = 0; i < n; i++) {
        float v = src[i];
        uint32_t b;
        double d = v;
        switch (dt) {
        case ST_F64: { uint64_t u; memcpy(&u, &d, 8); put_le(dst + i * sz, u, 8); break; }
        case ST_F32: memcpy(&b, &v, 4); put_le(dst + i * sz, b, 4); break;
        case ST_F16: put_le(dst + i * sz, f32_to_f16(v), 2); break;
        case ST_BF16: put_le(dst + i * sz, f32_to_bf16(v), 2); break;
        case ST_I64:
            if (!(d == floor(d) && d >= -9223372036854775808.0 && d < 9223372036854775808.0)) return i;
            put_le(dst + i * sz, (uint64_t)(int64_t)d, 8);
            break;
        case ST_I32:
            if (!(d == floor(d) && d >= -2147483648.0 && d < 2147483648.0)) return i;
            put_le(dst + i * sz, (uint32_t)(int32_t)d, 4);
            break;
        default:
            if (!(d == floor(d) && d >= 0 && d <= 255)) return i;
            dst[i] = (unsigned char)d;
            break;
        }
    }
    return -1;
}

/* ---- reading ---- */

typedef struct {
    char *name;
    int dtype, ndim;
    int64_t shape[TD_MAX_DIMS], numel;
    uint64_t begin, end;
} st_entry;

struct td_st_file {
    char *path;
    int fd;
    uint64_t data_start, data_len;
    int n, nmeta;
    st_entry *e;
    char **mkeys, **mvals;
};

static char *dup_str(const char *s) {
    size_t n = strlen(s) + 1;
    char *p = malloc(n);
    if (p) memcpy(p, s, n);
    return p;
}

/* One tensor entry {"dtype", "shape", "data_offsets"}; fills e (name set). */
static int parse_entry(td_st_file *f, const js_value *v, st_entry *e) {
    const char *p = f->path, *nm = e->name;
    if (v->type != JS_OBJ) return td_failc("safetensors: %s: tensor \"%s\": entry is not an object", p, nm);
    for (int i = 0; i < v->n; i++)
        if (strcmp(v->keys[i], "dtype") && strcmp(v->keys[i], "shape") && strcmp(v->keys[i], "data_offsets"))
            return td_failc("safetensors: %s: tensor \"%s\": unknown field \"%.64s\"", p, nm, v->keys[i]);
    const js_value *dt = js_get(v, "dtype"), *sh = js_get(v, "shape"), *off = js_get(v, "data_offsets");
    if (!dt || !sh || !off) return td_failc("safetensors: %s: tensor \"%s\": needs dtype, shape and data_offsets", p, nm);
    if (dt->type != JS_STR || (e->dtype = dtype_of(dt->s)) < 0)
        return td_failc("safetensors: %s: tensor \"%s\": unsupported dtype %.32s (F64, F32, F16, BF16, I64, I32, U8)", p, nm,
                        dt->type == JS_STR ? dt->s : "(not a string)");
    if (sh->type != JS_ARR || sh->n > TD_MAX_DIMS)
        return td_failc("safetensors: %s: tensor \"%s\": shape must be an array of at most %d sizes", p, nm, TD_MAX_DIMS);
    e->ndim = sh->n;
    uint64_t numel = 1, nonzero = 1; /* strides multiply every nonzero dim, even when one is 0 */
    for (int i = 0; i < sh->n; i++) {
        if (sh->items[i].type != JS_NUM || !sh->items[i].is_uint)
            return td_failc("safetensors: %s: tensor \"%s\": shape entry %d is not a whole number >= 0", p, nm, i);
        uint64_t d = sh->items[i].u;
        if (d && nonzero > (UINT64_C(1) << 62) / d)
            return td_failc("safetensors: %s: tensor \"%s\": shape overflows", p, nm);
        if (d) nonzero *= d;
        numel *= d;
        e->shape[i] = (int64_t)d;
    }
    e->numel = (int64_t)numel;
    if (off->type != JS_ARR || off->n != 2 || off->items[0].type != JS_NUM || !off->items[0].is_uint ||
        off->items[1].type != JS_NUM || !off->items[1].is_uint)
        return td_failc("safetensors: %s: tensor \"%s\": data_offsets must be [begin, end], whole numbers", p, nm);
    e->begin = off->items[0].u;
    e->end = off->items[1].u;
    if (e->end < e->begin || e->end > f->data_len)
        return td_failc("safetensors: %s: tensor \"%s\": data_offsets [%llu, %llu] outside the %llu bytes of data", p, nm,
                        (unsigned long long)e->begin, (unsigned long long)e->end, (unsigned long long)f->data_len);
    if (numel > UINT64_MAX / 8 || e->end - e->begin != numel * (uint64_t)dtype_sizes[e->dtype])
        return td_failc("safetensors: %s: tensor \"%s\": %llu bytes for %llu %s values (%d bytes each)", p, nm,
                        (unsigned long long)(e->end - e->begin), (unsigned long long)numel, dtype_names[e->dtype],
                        dtype_sizes[e->dtype]);
    return 0;
}

static int parse_metadata(td_st_file *f, const js_value *v) {
    if (v->type != JS_OBJ) return td_failc("safetensors: %s: __metadata__ is not an object", f->path);
    f->mkeys = calloc((size_t)v->n + 1, sizeof(char *));
    f->mvals = calloc((size_t)v->n + 1, sizeof(char *));
    if (!f->mkeys || !f->mvals) return td_failc("safetensors: %s: out of memory", f->path);
    for (int i = 0; i < v->n; i++) {
        if (v->items[i].type != JS_STR)
            return td_failc("safetensors: %s: __metadata__ value of \"%.64s\" is not a string", f->path, v->keys[i]);
        f->mkeys[i] = dup_str(v->keys[i]);
        f->mvals[i] = dup_str(v->items[i].s);
        f->nmeta = i + 1;
        if (!f->mkeys[i] || !f->mvals[i]) return td_failc("safetensors: %s: out of memory", f->path);
    }
    return 0;
}

static int cmp_entry(const void *a, const void *b) {
    const st_entry *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    return x->end < y->end ? -1 : x->end > y->end;
}

/* Sorted by offset, the tensors must tile [0, data_len) exactly. */
static int check_tiling(td_st_file *f) {
    qsort(f->e, (size_t)f->n, sizeof *f->e, cmp_entry);
    uint64_t at = 0;
    for (int i = 0; i < f->n; i++) {
        st_entry *e = &f->e[i];
        if (e->begin < at)
            return td_failc("safetensors: %s: tensor \"%s\" at [%llu, %llu] overlaps \"%s\" which ends at %llu", f->path,
                            e->name, (unsigned long long)e->begin, (unsigned long long)e->end, f->e[i - 1].name,
                            (unsigned long long)at);
        if (e->begin > at)
            return td_failc("safetensors: %s: gap of %llu bytes before tensor \"%s\" at offset %llu", f->path,
                            (unsigned long long)(e->begin - at), e->name, (unsigned long long)e->begin);
        at = e->end;
    }
    if (at != f->data_len)
        return td_failc("safetensors: %s: %llu bytes of data after the last tensor", f->path, (unsigned long long)(f->data_len - at));
    return 0;
}

static int parse_header(td_st_file *f, const char *text, size_t len) {
    char err[160];
    js_value *root = js_parse(text, len, err, sizeof err);
    if (!root) return td_failc("safetensors: %s: header is not valid JSON: %s", f->path, err);
    int rc = 0;
    if (root->type != JS_OBJ) rc = td_failc("safetensors: %s: header is not a JSON object", f->path);
    f->e = rc ? NULL : calloc((size_t)root->n + 1, sizeof *f->e);
    if (!rc && !f->e) rc = td_failc("safetensors: %s: out of memory", f->path);
    for (int i = 0; !rc && i < root->n; i++) {
        if (strcmp(root->keys[i], "__metadata__") == 0) {
            rc = parse_metadata(f, &root->items[i]);
            continue;
        }
        st_entry *e = &f->e[f->n];
        if (!(e->name = dup_str(root->keys[i]))) rc = td_failc("safetensors: %s: out of memory", f->path);
        f->n++;
        if (!rc) rc = parse_entry(f, &root->items[i], e);
    }
    js_free(root);
    return rc ? rc : check_tiling(f);
}

void td_st_close(td_st_file *f) {
    if (!f) return;
    if (f->fd >= 0) close(f->fd);
    for (int i = 0; i < f->n; i++) free(f->e[i].name);
    for (int i = 0; i < f->nmeta; i++) {
        free(f->mkeys[i]);
        free(f->mvals[i]);
    }
    free(f->e);
    free(f->mkeys);
    free(f->mvals);
    free(f->path);
    free(f);
}

/* Reads exactly n bytes at off; fails naming the file. */
static int read_at(const td_st_file *f, void *buf, uint64_t n, uint64_t off) {
    unsigned char *p = buf;
    while (n > 0) {
        size_t want = n > (1u << 30) ? (1u << 30) : (size_t)n;
        ssize_t r = pread(f->fd, p, want, (off_t)off);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0)
            return td_failc("safetensors: %s: %s at offset %llu", f->path, r < 0 ? strerror(errno) : "file ends early (changed since open?)",
                            (unsigned long long)off);
        p += r;
        off += (uint64_t)r;
        n -= (uint64_t)r;
    }
    return 0;
}

td_st_file *td_st_open(const char *path) {
    if (!path) return td_fail("safetensors: NULL path");
    td_st_file *f = calloc(1, sizeof *f);
    if (!f || !(f->path = dup_str(path))) {
        free(f);
        return td_fail("safetensors: %s: out of memory", path);
    }
    struct stat st;
    errno = 0;
    f->fd = open(path, O_RDONLY | O_CLOEXEC);
    if (f->fd < 0) {
        td_fail("safetensors: %s: cannot open: %s", path, strerror(errno));
        td_st_close(f);
        return NULL;
    }
    unsigned char h8[8];
    int rc = fstat(f->fd, &st) == 0 && S_ISREG(st.st_mode) ? 0 : td_failc("safetensors: %s: not a regular file", path);
    uint64_t size = rc ? 0 : (uint64_t)st.st_size, hlen = 0;
    if (!rc && size < 8) rc = td_failc("safetensors: %s: %llu bytes, too short for the 8-byte header length", path, (unsigned long long)size);
    else if (!rc && !(rc = read_at(f, h8, 8, 0))) {
        hlen = le_uint(h8, 8);
        if (hlen < 2 || hlen > ST_MAX_HEADER)
            rc = td_failc("safetensors: %s: header length %llu is not sane (2 to %llu bytes)", path, (unsigned long long)hlen, ST_MAX_HEADER);
        else if (hlen > size - 8)
            rc = td_failc("safetensors: %s: header length %llu runs past the end of the file (%llu bytes)", path,
                          (unsigned long long)hlen, (unsigned long long)size);
    }
    char *text = rc ? NULL : malloc((size_t)hlen);
    if (!rc && !text) rc = td_failc("safetensors: %s: out of memory for a %llu-byte header", path, (unsigned long long)hlen);
    if (!rc) {
        f->data_start = 8 + hlen;
        f->data_len = size - 8 - hlen;
        rc = read_at(f, text, hlen, 8);
        if (!rc) rc = parse_header(f, text, (size_t)hlen);
    }
    free(text);
    if (rc) {
        td_st_close(f);
        return NULL;
    }
    return f;
}

int td_st_count(const td_st_file *f) { return f ? f->n : 0; }

const char *td_st_name(const td_st_file *f, int i) {
    if (!f || i < 0 || i >= f->n) return td_fail("safetensors: tensor index %d out of range (%d tensors)", i, f ? f->n : 0);
    return f->e[i].name;
}

static const st_entry *find(const td_st_file *f, const char *name) {
    for (int i = 0; f && name && i < f->n; i++)
        if (strcmp(f->e[i].name, name) == 0) return &f->e[i];
    return NULL;
}

const char *td_st_dtype(const td_st_file *f, const char *name) {
    const st_entry *e = find(f, name);
    return e ? dtype_names[e->dtype] : NULL;
}

int td_st_shape(const td_st_file *f, const char *name, int64_t *shape) {
    const st_entry *e = find(f, name);
    if (!e || !shape) return -1;
    for (int i = 0; i < e->ndim; i++) shape[i] = e->shape[i];
    return e->ndim;
}

const char *td_st_metadata(const td_st_file *f, const char *key) {
    for (int i = 0; f && key && i < f->nmeta; i++)
        if (strcmp(f->mkeys[i], key) == 0) return f->mvals[i];
    return NULL;
}

int td_st_metadata_count(const td_st_file *f) { return f ? f->nmeta : 0; }

const char *td_st_metadata_key(const td_st_file *f, int i) {
    return f && i >= 0 && i < f->nmeta ? f->mkeys[i] : NULL;
}

/* Reads n values from byte offset off (inside the data) into out. */
static int read_values(const td_st_file *f, const st_entry *e, uint64_t off, float *out, int64_t n) {
    int sz = dtype_sizes[e->dtype];
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    if (e->dtype == ST_F32) return read_at(f, out, (uint64_t)n * 4, f->data_start + off);
#endif
    const int64_t chunk = 1 << 16;
    unsigned char *buf = malloc((size_t)(chunk * sz));
    if (!buf) return td_failc("safetensors: %s: out of memory", f->path);
    int rc = 0;
    for (int64_t i = 0; i < n && !rc; i += chunk) {
        int64_t m = n - i < chunk ? n - i : chunk;
        rc = read_at(f, buf, (uint64_t)(m * sz), f->data_start + off + (uint64_t)(i * sz));
        if (!rc) decode(e->dtype, buf, out + i, m);
    }
    free(buf);
    return rc;
}

td_tensor *td_st_get_rows(const td_st_file *f, const char *name, int64_t start, int64_t count) {
    if (!f || !name) return td_fail("safetensors: NULL argument");
    const st_entry *e = find(f, name);
    if (!e) return td_fail("safetensors: %s: no tensor named \"%s\"", f->path, name);
    if (e->ndim == 0 && start == 0 && count == 1) {
        td_tensor *out = td_new(0, NULL);
        if (out && read_values(f, e, e->begin, out->data, 1)) {
            td_release(out);
            return NULL;
        }
        return out;
    }
    if (e->ndim == 0 || start < 0 || count < 0 || start > e->shape[0] || count > e->shape[0] - start)
        return td_fail("safetensors: %s: tensor \"%s\" has %lld rows, rows [%lld, %lld) asked", f->path, name,
                       (long long)(e->ndim ? e->shape[0] : 0), (long long)start, (long long)start + count);
    int64_t shape[TD_MAX_DIMS];
    memcpy(shape, e->shape, sizeof shape);
    shape[0] = count;
    int64_t row = e->shape[0] ? e->numel / e->shape[0] : 0;
    td_tensor *out = td_new(e->ndim, shape);
    if (out && read_values(f, e, e->begin + (uint64_t)(start * row * dtype_sizes[e->dtype]), out->data, count * row)) {
        td_release(out);
        return NULL;
    }
    return out;
}

td_tensor *td_st_get(const td_st_file *f, const char *name) {
    const st_entry *e = find(f, name);
    if (!f || !name || !e) return td_st_get_rows(f, name, 0, 0);
    return td_st_get_rows(f, name, 0, e->ndim ? e->shape[0] : 1);
}

/* ---- writing ---- */

static int check_names(const char *path, int n, const char *const *names, td_tensor *const *ts, const char *const *dtypes) {
    if (n < 0 || (n > 0 && (!names || !ts))) return td_failc("safetensors_save: %s: bad tensor list (n = %d)", path, n);
    for (int i = 0; i < n; i++) {
        if (!names[i] || !*names[i] || !strcmp(names[i], "__metadata__"))
            return td_failc("safetensors_save: %s: tensor %d has no usable name", path, i);
        if (!ts[i]) return td_failc("safetensors_save: %s: tensor \"%s\" is NULL", path, names[i]);
        if (dtypes && dtypes[i] && dtype_of(dtypes[i]) < 0)
            return td_failc("safetensors_save: %s: tensor \"%s\": unknown dtype %s", path, names[i], dtypes[i]);
        for (int j = 0; j < i; j++)
            if (!strcmp(names[i], names[j])) return td_failc("safetensors_save: %s: two tensors named \"%s\"", path, names[i]);
    }
    return 0;
}

static void put_metadata(js_buf *b, const js_value *meta) {
    js_puts(b, "\"__metadata__\":{");
    for (int i = 0; i < meta->n; i++) {
        if (i) js_puts(b, ",");
        js_put_string(b, meta->keys[i], strlen(meta->keys[i]));
        js_puts(b, ":");
        js_put_string(b, meta->items[i].s, meta->items[i].slen);
    }
    js_puts(b, "}");
}

/* The header JSON, padded with spaces to a multiple of 8 bytes. */
static int build_header(js_buf *b, const char *path, int n, const char *const *names, td_tensor *const *ts,
                        const int *dts, const char *metadata) {
    js_value *meta = NULL;
    if (metadata) {
        char err[160];
        meta = js_parse(metadata, strlen(metadata), err, sizeof err);
        if (!meta) return td_failc("safetensors_save: %s: metadata is not valid JSON: %s", path, err);
        int ok = meta->type == JS_OBJ;
        for (int i = 0; ok && i < meta->n; i++) ok = meta->items[i].type == JS_STR;
        if (!ok) {
            js_free(meta);
            return td_failc("safetensors_save: %s: metadata must be a JSON object of string values", path);
        }
    }
    char num[64];
    uint64_t at = 0;
    js_puts(b, "{");
    int had_meta = meta != NULL;
    if (meta) put_metadata(b, meta);
    js_free(meta);
    for (int i = 0; i < n; i++) {
        if (i || had_meta) js_puts(b, ",");
        js_put_string(b, names[i], strlen(names[i]));
        js_puts(b, ":{\"dtype\":\"");
        js_puts(b, dtype_names[dts[i]]);
        js_puts(b, "\",\"shape\":[");
        for (int d = 0; d < ts[i]->ndim; d++) {
            snprintf(num, sizeof num, d ? ",%lld" : "%lld", (long long)ts[i]->shape[d]);
            js_puts(b, num);
        }
        uint64_t end = at + (uint64_t)ts[i]->numel * (uint64_t)dtype_sizes[dts[i]];
        snprintf(num, sizeof num, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)at, (unsigned long long)end);
        js_puts(b, num);
        at = end;
    }
    js_puts(b, "}");
    while (!b->oom && b->len % 8) js_puts(b, " ");
    if (b->oom) return td_failc("safetensors_save: %s: out of memory for the header", path);
    char err[160];
    js_value *check = js_parse(b->p, b->len, err, sizeof err); /* e.g. a name that is not UTF-8 */
    if (!check) return td_failc("safetensors_save: %s: tensor names make an invalid header: %s", path, err);
    js_free(check);
    return 0;
}

static int write_tensor(FILE *fp, const char *path, const char *name, const td_tensor *t, int dt) {
    const int64_t chunk = 1 << 16;
    int sz = dtype_sizes[dt];
    float *vals = td_is_contiguous(t) ? t->data : malloc(sizeof(float) * (size_t)(t->numel + 1));
    unsigned char *buf = malloc((size_t)(chunk * sz));
    int rc = 0;
    if (!vals || !buf) rc = td_failc("safetensors_save: %s: out of memory for tensor \"%s\"", path, name);
    else if (vals != t->data) td_copy_to_buffer(t, vals);
    for (int64_t i = 0; !rc && i < t->numel; i += chunk) {
        int64_t m = t->numel - i < chunk ? t->numel - i : chunk, bad = encode(dt, vals + i, buf, m);
        if (bad >= 0)
            rc = td_failc("safetensors_save: %s: tensor \"%s\" as %s: element %lld is %g, not a whole number in range",
                          path, name, dtype_names[dt], (long long)(i + bad), vals[i + bad]);
        else if (fwrite(buf, (size_t)sz, (size_t)m, fp) != (size_t)m)
            rc = td_failc("safetensors_save: %s: write failed: %s", path, strerror(errno));
    }
    if (vals != t->data) free(vals);
    free(buf);
    return rc;
}

int td_safetensors_save_as(const char *path, int n, const char *const *names, td_tensor *const *tensors,
                           const char *const *dtypes, const char *metadata_json) {
    if (!path) return td_failc("safetensors_save: NULL path");
    if (check_names(path, n, names, tensors, dtypes)) return -1;
    int *dts = malloc(sizeof(int) * (size_t)(n + 1));
    if (!dts) return td_failc("safetensors_save: %s: out of memory", path);
    for (int i = 0; i < n; i++) dts[i] = dtypes && dtypes[i] ? dtype_of(dtypes[i]) : ST_F32;
    js_buf hdr = {0};
    td_atomic_file a;
    int rc = build_header(&hdr, path, n, names, tensors, dts, metadata_json);
    if (!rc) rc = td_atomic_open(&a, path, "safetensors_save");
    if (!rc) {
        unsigned char len8[8];
        put_le(len8, hdr.len, 8);
        if (fwrite(len8, 1, 8, a.fp) != 8 || fwrite(hdr.p, 1, hdr.len, a.fp) != hdr.len)
            rc = td_failc("safetensors_save: %s: write failed: %s", path, strerror(errno));
        for (int i = 0; i < n && !rc; i++) rc = write_tensor(a.fp, path, names[i], tensors[i], dts[i]);
        rc = rc ? (td_atomic_abort(&a), -1) : td_atomic_commit(&a, "safetensors_save");
    }
    free(hdr.p);
    free(dts);
    return rc;
}

int td_safetensors_save(const char *path, int n, const char *const *names, td_tensor *const *tensors,
                        const char *metadata_json) {
    return td_safetensors_save_as(path, n, names, tensors, NULL, metadata_json);
}
