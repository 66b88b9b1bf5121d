/* json.c - a small strict JSON parser (for safetensors headers) and a
 * string escaper. Recursive descent with a depth limit. */
#include "io.h"
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#define JS_MAX_DEPTH 64

typedef struct {
    const char *p, *end, *start;
    char *err;
    size_t errlen;
    int failed;
} js_cur;

static int js_error(js_cur *c, const char *fmt, ...) {
    if (c->failed) return -1;
    c->failed = 1;
    int k = snprintf(c->err, c->errlen, "offset %lld: ", (long long)(c->p - c->start));
    va_list ap;
    va_start(ap, fmt);
    if (k >= 0 && (size_t)k < c->errlen) vsnprintf(c->err + k, c->errlen - (size_t)k, fmt, ap);
    va_end(ap);
    return -1;
}

static void skip_ws(js_cur *c) {
    while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r')) c->p++;
}

static int parse_value(js_cur *c, js_value *v, int depth);

static int expect_word(js_cur *c, const char *w) {
    size_t n = strlen(w);
    if ((size_t)(c->end - c->p) < n || memcmp(c->p, w, n) != 0) return js_error(c, "invalid literal");
    c->p += n;
    return 0;
}

static int hex4(js_cur *c, unsigned *out) {
    if (c->end - c->p < 4) return js_error(c, "truncated \\u escape");
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        char h = c->p[i];
        int d = h >= '0' && h <= '9' ? h - '0' : h >= 'a' && h <= 'f' ? h - 'a' + 10 : h >= 'A' && h <= 'F' ? h - 'A' + 10 : -1;
        if (d < 0) return js_error(c, "bad hex digit in \\u escape");
        v = v * 16 + (unsigned)d;
    }
    c->p += 4;
    *out = v;
    return 0;
}

static size_t put_utf8(char *o, unsigned cp) {
    if (cp < 0x80) { o[0] = (char)cp; return 1; }
    if (cp < 0x800) { o[0] = (char)(0xC0 | cp >> 6); o[1] = (char)(0x80 | (cp & 0x3F)); return 2; }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | cp >> 12); o[1] = (char)(0x80 | ((cp >> 6) & 0x3F)); o[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | cp >> 18); o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3F)); o[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Length of the valid UTF-8 sequence at p (1..4), or 0 if it is invalid. */
static int utf8_len(const unsigned char *p, const unsigned char *end) {
    unsigned char b = p[0];
    int n;
    unsigned cp, min;
    if (b < 0x80) return 1;
    if ((b & 0xE0) == 0xC0) { n = 2; cp = b & 0x1F; min = 0x80; }
    else if ((b & 0xF0) == 0xE0) { n = 3; cp = b & 0x0F; min = 0x800; }
    else if ((b & 0xF8) == 0xF0) { n = 4; cp = b & 0x07; min = 0x10000; }
    else return 0;
    if (end - p < n) return 0;
    for (int i = 1; i < n; i++) {
        if ((p[i] & 0xC0) != 0x80) return 0;
        cp = cp << 6 | (p[i] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
    return n;
}

/* A string at c->p (which is at the opening quote). The decoded text is never
 * longer than the source, so one allocation of the source length suffices. */
static int parse_string(js_cur *c, char **out, size_t *outlen) {
    const char *q = ++c->p;
    while (q < c->end && *q != '"') q += (*q == '\\' && q + 1 < c->end) ? 2 : 1;
    if (q >= c->end) return js_error(c, "unterminated string");
    char *s = malloc((size_t)(q - c->p) + 1);
    if (!s) return js_error(c, "out of memory");
    size_t n = 0;
    while (*c->p != '"') {
        unsigned char ch = (unsigned char)*c->p;
        if (ch < 0x20) { free(s); return js_error(c, "control character in string"); }
        if (ch != '\\') {
            int k = utf8_len((const unsigned char *)c->p, (const unsigned char *)c->end);
            if (!k) { free(s); return js_error(c, "invalid UTF-8 in string"); }
            memcpy(s + n, c->p, (size_t)k);
            n += (size_t)k;
            c->p += k;
            continue;
        }
        c->p++;
        char e = *c->p++;
        const char *simple = strchr("\"\\/bfnrt", e);
        if (e && simple) {
            s[n++] = "\"\\/\b\f\n\r\t"[simple - "\"\\/bfnrt"];
            continue;
        }
        if (e != 'u') { free(s); c->p--; return js_error(c, "bad escape '\\%c'", e); }
        unsigned cp, lo;
        if (hex4(c, &cp)) { free(s); return -1; }
        if (cp >= 0xDC00 && cp <= 0xDFFF) { free(s); return js_error(c, "lone low surrogate"); }
        if (cp >= 0xD800 && cp <= 0xDBFF) {
            if (c->end - c->p < 2 || c->p[0] != '\\' || c->p[1] != 'u') { free(s); return js_error(c, "lone high surrogate"); }
            c->p += 2;
            if (hex4(c, &lo)) { free(s); return -1; }
            if (lo < 0xDC00 || lo > 0xDFFF) { free(s); return js_error(c, "bad low surrogate"); }
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
        }
        n += put_utf8(s + n, cp);
    }
    c->p++;
    s[n] = '\0';
    *out = s;
    *outlen = n;
    return 0;
}

static int parse_number(js_cur *c, js_value *v) {
    const char *s = c->p;
    int neg = 0, frac = 0;
    if (c->p < c->end && *c->p == '-') { neg = 1; c->p++; }
    if (c->p >= c->end || *c->p < '0' || *c->p > '9') return js_error(c, "bad number");
    if (*c->p == '0' && c->p + 1 < c->end && c->p[1] >= '0' && c->p[1] <= '9') return js_error(c, "leading zero in number");
    uint64_t u = 0;
    int overflow = 0;
    while (c->p < c->end && *c->p >= '0' && *c->p <= '9') {
        unsigned d = (unsigned)(*c->p++ - '0');
        if (u > (UINT64_C(0x7FFFFFFFFFFFFFFF) - d) / 10) overflow = 1;
        else u = u * 10 + d;
    }
    if (c->p < c->end && *c->p == '.') {
        frac = 1;
        c->p++;
        if (c->p >= c->end || *c->p < '0' || *c->p > '9') return js_error(c, "digit expected after '.'");
        while (c->p < c->end && *c->p >= '0' && *c->p <= '9') c->p++;
    }
    if (c->p < c->end && (*c->p == 'e' || *c->p == 'E')) {
        frac = 1;
        c->p++;
        if (c->p < c->end && (*c->p == '+' || *c->p == '-')) c->p++;
        if (c->p >= c->end || *c->p < '0' || *c->p > '9') return js_error(c, "digit expected in exponent");
        while (c->p < c->end && *c->p >= '0' && *c->p <= '9') c->p++;
    }
    char buf[64];
    size_t len = (size_t)(c->p - s);
    if (len >= sizeof buf) len = sizeof buf - 1; /* enough digits for a double */
    memcpy(buf, s, len);
    buf[len] = '\0';
    v->type = JS_NUM;
    v->d = strtod(buf, NULL);
    v->is_uint = !neg && !frac && !overflow;
    v->u = v->is_uint ? u : 0;
    return 0;
}

static int push_item(js_cur *c, js_value *v, int *cap, char *key) {
    if (v->n == *cap) {
        int nc = *cap ? *cap * 2 : 4;
        js_value *it = realloc(v->items, sizeof *it * (size_t)nc);
        if (it) v->items = it;
        char **ks = v->type == JS_OBJ ? realloc(v->keys, sizeof *ks * (size_t)nc) : NULL;
        if (ks) v->keys = ks;
        if (!it || (v->type == JS_OBJ && !ks)) { free(key); return js_error(c, "out of memory"); }
        *cap = nc;
    }
    memset(&v->items[v->n], 0, sizeof v->items[0]);
    if (v->type == JS_OBJ) v->keys[v->n] = key;
    v->n++;
    return 0;
}

static int parse_array(js_cur *c, js_value *v, int depth) {
    int cap = 0;
    v->type = JS_ARR;
    c->p++;
    skip_ws(c);
    if (c->p < c->end && *c->p == ']') { c->p++; return 0; }
    for (;;) {
        if (push_item(c, v, &cap, NULL) || parse_value(c, &v->items[v->n - 1], depth + 1)) return -1;
        skip_ws(c);
        if (c->p < c->end && *c->p == ',') { c->p++; continue; }
        if (c->p < c->end && *c->p == ']') { c->p++; return 0; }
        return js_error(c, "expected ',' or ']' in array");
    }
}

static int parse_object(js_cur *c, js_value *v, int depth) {
    int cap = 0;
    v->type = JS_OBJ;
    c->p++;
    skip_ws(c);
    if (c->p < c->end && *c->p == '}') { c->p++; return 0; }
    for (;;) {
        char *key;
        size_t klen;
        skip_ws(c);
        if (c->p >= c->end || *c->p != '"') return js_error(c, "expected a string key");
        const char *kpos = c->p;
        if (parse_string(c, &key, &klen)) return -1;
        if (strlen(key) != klen) { free(key); return js_error(c, "NUL character in key"); }
        if (js_get(v, key)) {
            c->p = kpos;
            js_error(c, "duplicate key \"%.64s\"", key);
            free(key);
            return -1;
        }
        skip_ws(c);
        if (c->p >= c->end || *c->p != ':') { free(key); return js_error(c, "expected ':'"); }
        c->p++;
        if (push_item(c, v, &cap, key) || parse_value(c, &v->items[v->n - 1], depth + 1)) return -1;
        skip_ws(c);
        if (c->p < c->end && *c->p == ',') { c->p++; continue; }
        if (c->p < c->end && *c->p == '}') { c->p++; return 0; }
        return js_error(c, "expected ',' or '}' in object");
    }
}

static int parse_value(js_cur *c, js_value *v, int depth) {
    if (depth > JS_MAX_DEPTH) return js_error(c, "nested deeper than %d", JS_MAX_DEPTH);
    skip_ws(c);
    if (c->p >= c->end) return js_error(c, "unexpected end of text");
    switch (*c->p) {
    case '{': return parse_object(c, v, depth);
    case '[': return parse_array(c, v, depth);
    case '"': v->type = JS_STR; return parse_string(c, &v->s, &v->slen);
    case 't': v->type = JS_BOOL; v->b = 1; return expect_word(c, "true");
    case 'f': v->type = JS_BOOL; v->b = 0; return expect_word(c, "false");
    case 'n': v->type = JS_NULL; return expect_word(c, "null");
    default: return parse_number(c, v);
    }
}

static void free_inner(js_value *v) {
    for (int i = 0; i < v->n; i++) {
        free_inner(&v->items[i]);
        if (v->keys) free(v->keys[i]);
    }
    free(v->items);
    free(v->keys);
    free(v->s);
}

void js_free(js_value *v) {
    if (!v) return;
    free_inner(v);
    free(v);
}

js_value *js_parse(const char *text, size_t len, char *err, size_t errlen) {
    js_cur c = {text, text + len, text, err, errlen, 0};
    js_value *v = calloc(1, sizeof *v);
    if (!v) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    if (parse_value(&c, v, 0) == 0) {
        skip_ws(&c);
        if (c.p != c.end) js_error(&c, "trailing characters after the value");
    }
    if (c.failed) {
        js_free(v);
        return NULL;
    }
    return v;
}

const js_value *js_get(const js_value *obj, const char *key) {
    if (!obj || obj->type != JS_OBJ) return NULL;
    for (int i = 0; i < obj->n; i++)
        if (strcmp(obj->keys[i], key) == 0) return &obj->items[i];
    return NULL;
}

void js_put(js_buf *b, const char *s, size_t n) {
    if (b->oom) return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1) cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = 1;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

void js_puts(js_buf *b, const char *s) { js_put(b, s, strlen(s)); }

void js_put_string(js_buf *b, const char *s, size_t n) {
    js_put(b, "\"", 1);
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        char esc[8];
        if (ch == '"' || ch == '\\') {
            esc[0] = '\\';
            esc[1] = (char)ch;
            js_put(b, esc, 2);
        } else if (ch < 0x20) {
            snprintf(esc, sizeof esc, "\\u%04x", ch);
            js_put(b, esc, 6);
        } else {
            js_put(b, (const char *)&s[i], 1);
        }
    }
    js_put(b, "\"", 1);
}
