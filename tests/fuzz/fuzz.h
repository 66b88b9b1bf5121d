/* fuzz.h - what the fuzz harnesses share: the input goes to a file (the
 * readers take paths), and a run must leave no live tensor behind. */
#ifndef TIDE_FUZZ_H
#define TIDE_FUZZ_H
#define _POSIX_C_SOURCE 200809L
#include "tide.h"
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char fuzz_path[512];
static inline void fuzz_remove_file(void) { unlink(fuzz_path); }

/* A per-process file in /dev/shm (or $TMPDIR, /tmp) holding the input,
 * removed at exit. */
static inline const char *fuzz_file(const uint8_t *data, size_t size, const char *ext) {
    char *path = fuzz_path;
    if (!path[0]) {
        const char *dir = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
        snprintf(path, sizeof fuzz_path, "%s/tide-fuzz-%ld.%s", dir, (long)getpid(), ext);
        atexit(fuzz_remove_file);
    }
    FILE *f = fopen(path, "wb");
    if (!f) abort();
    if (size && fwrite(data, 1, size, f) != size) abort();
    fclose(f);
    return path;
}

/* A failed read must say why. */
static inline void fuzz_result(const void *result) {
    if (!result && !td_last_error()[0]) {
        fprintf(stderr, "fuzz: a reader failed without a message\n");
        abort();
    }
    td_clear_error();
}

/* A run must not leak tensors. */
static inline void fuzz_no_leak(void) {
    if (td_live_tensors() != 0) {
        fprintf(stderr, "fuzz: %lld tensors leaked\n", (long long)td_live_tensors());
        abort();
    }
}
#endif
