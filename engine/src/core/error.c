/* error.c - the thread-local error message. */
#include "internal.h"
#include <stdarg.h>
#include <stdio.h>

static _Thread_local char last_error[1024];

const char *td_last_error(void) { return last_error; }

void td_clear_error(void) { last_error[0] = '\0'; }

static void set_error(const char *fmt, va_list ap) {
    vsnprintf(last_error, sizeof last_error, fmt, ap);
}

void *td_fail(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    set_error(fmt, ap);
    va_end(ap);
    return NULL;
}

int td_failc(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    set_error(fmt, ap);
    va_end(ap);
    return -1;
}

char *td_shape_str(const td_tensor *t, char *buf) {
    int n = 0;
    n += snprintf(buf + n, TD_SHAPE_BUF - n, "[");
    for (int i = 0; t && i < t->ndim && n < TD_SHAPE_BUF - 24; i++)
        n += snprintf(buf + n, TD_SHAPE_BUF - n, i ? ",%lld" : "%lld",
                      (long long)t->shape[i]);
    snprintf(buf + n, TD_SHAPE_BUF - n, "]");
    return buf;
}
