/* alloc.c - a caching allocator: freed blocks are kept in per-size free
 * lists and handed out again, so a training loop stops calling malloc after
 * its first step. Sizes are rounded up to size classes (powers of two split
 * in four) so that blocks are reused across slightly different shapes. */
#include "internal.h"
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define NCLASSES 256

typedef struct block { struct block *next; } block;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static block *free_lists[NCLASSES];
static int64_t bytes_in_use, bytes_peak, bytes_cached;

/* Size class of a request and the rounded size it stands for. */
static int size_class(size_t bytes, size_t *rounded) {
    if (bytes < 64) bytes = 64;
    int log2 = 63 - __builtin_clzll((unsigned long long)bytes);
    size_t base = (size_t)1 << log2;
    size_t quarter = base >> 2;
    size_t steps = (bytes - base + quarter - 1) / quarter; /* 0..4 */
    if (steps == 4) { log2++; base <<= 1; quarter <<= 1; steps = 0; }
    *rounded = base + steps * quarter;
    return log2 * 4 + (int)steps;
}

void *td_alloc(size_t bytes) {
    size_t rounded;
    int c = size_class(bytes, &rounded);
    if (c >= NCLASSES) return td_fail("alloc: %zu bytes is too large", bytes);
    pthread_mutex_lock(&lock);
    block *b = free_lists[c];
    if (b) {
        free_lists[c] = b->next;
        bytes_cached -= (int64_t)rounded;
    }
    bytes_in_use += (int64_t)rounded;
    if (bytes_in_use > bytes_peak) bytes_peak = bytes_in_use;
    pthread_mutex_unlock(&lock);
    if (b) return b;
    void *p = NULL;
    if (posix_memalign(&p, 64, rounded) != 0) {
        td_mem_empty_cache();
        if (posix_memalign(&p, 64, rounded) != 0) {
            pthread_mutex_lock(&lock);
            bytes_in_use -= (int64_t)rounded;
            pthread_mutex_unlock(&lock);
            return td_fail("alloc: out of memory for %zu bytes", bytes);
        }
    }
    return p;
}

void td_free(void *p, size_t bytes) {
    if (!p) return;
    size_t rounded;
    int c = size_class(bytes, &rounded);
    block *b = p;
    pthread_mutex_lock(&lock);
    b->next = free_lists[c];
    free_lists[c] = b;
    bytes_in_use -= (int64_t)rounded;
    bytes_cached += (int64_t)rounded;
    pthread_mutex_unlock(&lock);
}

int64_t td_mem_in_use(void) { return bytes_in_use; }
int64_t td_mem_peak(void) { return bytes_peak; }
int64_t td_mem_cached(void) { return bytes_cached; }

void td_mem_reset_peak(void) {
    pthread_mutex_lock(&lock);
    bytes_peak = bytes_in_use;
    pthread_mutex_unlock(&lock);
}

void td_mem_empty_cache(void) {
    pthread_mutex_lock(&lock);
    for (int c = 0; c < NCLASSES; c++) {
        while (free_lists[c]) {
            block *b = free_lists[c];
            free_lists[c] = b->next;
            free(b);
        }
    }
    bytes_cached = 0;
    pthread_mutex_unlock(&lock);
}
