/* io.h - what the I/O files share: a strict JSON parser (for safetensors
 * headers) and atomic file writes (temporary file, fsync, rename). */
#ifndef TIDE_IO_H
#define TIDE_IO_H

#include "internal.h"
#include <stdio.h>

/* ---- JSON (RFC 8259, strict: no trailing commas, no NaN, no comments,
 * no duplicate keys, valid UTF-8 and escapes, depth <= 64) ---- */
typedef enum { JS_NULL, JS_BOOL, JS_NUM, JS_STR, JS_ARR, JS_OBJ } js_type;

typedef struct js_value {
    js_type type;
    int b;                   /* JS_BOOL */
    int is_uint;             /* JS_NUM: a whole number 0..2^63-1 written without '.', 'e' or '-' */
    uint64_t u;              /* JS_NUM when is_uint */
    double d;                /* JS_NUM */
    char *s;                 /* JS_STR: decoded UTF-8, NUL-terminated */
    size_t slen;             /* JS_STR: length in bytes (may hold \u0000) */
    int n;                   /* JS_ARR / JS_OBJ: number of items */
    struct js_value *items;  /* JS_ARR / JS_OBJ */
    char **keys;             /* JS_OBJ: key of each item */
} js_value;

/* Parses text[0..len) (the whole of it, surrounding whitespace allowed).
 * Returns a tree to free with js_free, or NULL with a message in err
 * ("offset 12: expected ':'"). */
js_value *js_parse(const char *text, size_t len, char *err, size_t errlen);
void js_free(js_value *v);
/* The member named key of an object, or NULL. */
const js_value *js_get(const js_value *obj, const char *key);
/* Appends s as a JSON string (quoted, escaped) to a growing buffer. */
typedef struct {
    char *p;
    size_t len, cap;
    int oom;
} js_buf;
void js_put(js_buf *b, const char *s, size_t n);
void js_puts(js_buf *b, const char *s);
void js_put_string(js_buf *b, const char *s, size_t n);

/* ---- atomic writes ---- */
typedef struct {
    FILE *fp;
    char *path;      /* final name */
    char *tmp;       /* temporary name in the same directory */
} td_atomic_file;

/* Opens a temporary file beside path. op names the caller in errors. */
int td_atomic_open(td_atomic_file *a, const char *path, const char *op);
/* fflush, fsync, close and rename over path; on failure removes the temporary. */
int td_atomic_commit(td_atomic_file *a, const char *op);
/* Closes and removes the temporary file (after an error). */
void td_atomic_abort(td_atomic_file *a);

#endif
