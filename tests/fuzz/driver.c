/* driver.c - a small mutation fuzzer for builds without libFuzzer: runs
 * every seed, then mutated seeds (bit flips, byte values, inserts, deletes,
 * copies, splices, truncation, digit changes) until the time is up. No
 * coverage feedback: it is the smoke test; the real fuzzing is libFuzzer
 * (-DTIDE_FUZZ=ON with clang).
 *
 *   fuzz_X [-seconds S] [-seed N] CORPUS_DIR...
 *
 * On a crash the input is written to ./crash-<pid> before the signal is
 * raised again. */
#include "fuzz.h"
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <time.h>

#define MAX_INPUT (1 << 16)

typedef struct {
    uint8_t *data;
    size_t size;
} blob;

static blob *seeds;
static size_t nseeds;
static uint8_t current[MAX_INPUT];
static size_t current_size;
static uint64_t rng_state = 0x9E3779B97F4A7C15ULL;

static uint64_t next(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}
static size_t below(size_t n) { return n ? (size_t)(next() % n) : 0; }

static void on_crash(int sig) {
    char name[64];
    snprintf(name, sizeof name, "crash-%ld", (long)getpid());
    int fd = open(name, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd >= 0) {
        ssize_t w = write(fd, current, current_size);
        (void)w;
        close(fd);
    }
    static const char msg[] = "fuzz: crashed; input saved as ./crash-<pid>\n";
    ssize_t w = write(2, msg, sizeof msg - 1);
    (void)w;
    signal(sig, SIG_DFL);
    raise(sig);
}

static void add_seed(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return;
    uint8_t *buf = malloc(MAX_INPUT);
    size_t n = fread(buf, 1, MAX_INPUT, f);
    fclose(f);
    seeds = realloc(seeds, sizeof *seeds * (nseeds + 1));
    seeds[nseeds++] = (blob){buf, n};
}

static void load_dir(const char *dir) {
    DIR *d = opendir(dir);
    struct dirent *e;
    char path[4096];
    while (d && (e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        add_seed(path);
    }
    if (d) closedir(d);
}

static void mutate(void) {
    static const uint8_t interesting[] = {0, 1, 0x7F, 0x80, 0xFF, '0', '9', '"', ',', '[', ']', '{', '}', ':', '-'};
    int rounds = 1 + (int)below(4);
    for (int r = 0; r < rounds; r++) {
        size_t at = below(current_size + 1), len = 1 + below(16);
        switch (below(9)) {
        case 0: if (current_size) current[below(current_size)] ^= (uint8_t)(1u << below(8)); break;
        case 1: if (current_size) current[below(current_size)] = (uint8_t)next(); break;
        case 2: if (current_size) current[below(current_size)] = interesting[below(sizeof interesting)]; break;
        case 3: /* insert random bytes */
            if (current_size + len < MAX_INPUT) {
                memmove(current + at + len, current + at, current_size - at);
                for (size_t i = 0; i < len; i++) current[at + i] = (uint8_t)next();
                current_size += len;
            }
            break;
        case 4: /* delete */
            if (at + len <= current_size) {
                memmove(current + at, current + at + len, current_size - at - len);
                current_size -= len;
            }
            break;
        case 5: /* copy a range over another */
            if (current_size > 2 * len) {
                size_t from = below(current_size - len), to = below(current_size - len);
                memmove(current + to, current + from, len);
            }
            break;
        case 6: /* splice the tail of another seed */
            {
                blob *s = &seeds[below(nseeds)];
                size_t from = below(s->size + 1), n = s->size - from;
                if (at + n <= MAX_INPUT) {
                    memcpy(current + at, s->data + from, n);
                    current_size = at + n;
                }
            }
            break;
        case 7: current_size = at; break; /* truncate */
        default: /* change a decimal digit (offsets, lengths, shapes in text) */
            for (size_t i = 0, p = below(current_size + 1); i < current_size; i++) {
                size_t q = (p + i) % current_size;
                if (current[q] >= '0' && current[q] <= '9') {
                    current[q] = (uint8_t)('0' + below(10));
                    break;
                }
            }
            break;
        }
    }
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

int main(int argc, char **argv) {
    double seconds = 2;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-seconds") && i + 1 < argc) seconds = atof(argv[++i]);
        else if (!strcmp(argv[i], "-seed") && i + 1 < argc) rng_state = strtoull(argv[++i], NULL, 10) | 1;
        else load_dir(argv[i]);
    }
    if (!nseeds) {
        fprintf(stderr, "fuzz: no seeds (give corpus directories)\n");
        return 1;
    }
    signal(SIGSEGV, on_crash);
    signal(SIGABRT, on_crash);
    signal(SIGBUS, on_crash);
    signal(SIGFPE, on_crash);
    signal(SIGILL, on_crash);
    double t0 = now();
    long execs = 0;
    for (size_t i = 0; i < nseeds; i++, execs++) {
        memcpy(current, seeds[i].data, current_size = seeds[i].size);
        LLVMFuzzerTestOneInput(current, current_size);
    }
    while (now() - t0 < seconds) {
        for (int k = 0; k < 64; k++, execs++) {
            blob *s = &seeds[below(nseeds)];
            memcpy(current, s->data, current_size = s->size);
            mutate();
            LLVMFuzzerTestOneInput(current, current_size);
        }
    }
    printf("fuzz: %ld executions in %.1f s from %zu seeds, no crash\n", execs, now() - t0, nseeds);
    for (size_t i = 0; i < nseeds; i++) free(seeds[i].data);
    free(seeds);
    return 0;
}
