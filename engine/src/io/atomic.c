/* atomic.c - writes through a temporary file beside the target, fsync and
 * rename, so a killed run leaves either the old file or the new one. */
#define _POSIX_C_SOURCE 200809L
#include "io.h"
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char *dup_str(const char *s) {
    size_t n = strlen(s) + 1;
    char *p = malloc(n);
    if (p) memcpy(p, s, n);
    return p;
}

int td_atomic_open(td_atomic_file *a, const char *path, const char *op) {
    static int counter;
    memset(a, 0, sizeof *a);
    if (!path || !*path) return td_failc("%s: empty file name", op);
    size_t n = strlen(path) + 64;
    a->path = dup_str(path);
    a->tmp = malloc(n);
    if (!a->path || !a->tmp) {
        free(a->path);
        free(a->tmp);
        memset(a, 0, sizeof *a);
        return td_failc("%s: %s: out of memory", op, path);
    }
    snprintf(a->tmp, n, "%s.tmp.%ld.%d", path, (long)getpid(), __atomic_fetch_add(&counter, 1, __ATOMIC_RELAXED));
    int fd = open(a->tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0 || !(a->fp = fdopen(fd, "wb"))) {
        int e = errno;
        if (fd >= 0) {
            close(fd);
            unlink(a->tmp);
        }
        free(a->path);
        free(a->tmp);
        memset(a, 0, sizeof *a);
        return td_failc("%s: %s: cannot create a temporary file: %s", op, path, strerror(e));
    }
    return 0;
}

/* fsync of the directory, so the rename itself survives a crash. */
static void sync_dir(const char *path) {
    char *dir = dup_str(path);
    if (!dir) return;
    char *slash = strrchr(dir, '/');
    if (slash == dir) slash[1] = '\0';
    else if (slash) *slash = '\0';
    int fd = open(slash ? dir : ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
    free(dir);
}

int td_atomic_commit(td_atomic_file *a, const char *op) {
    int failed = fflush(a->fp) != 0 || ferror(a->fp);
    int e = errno;
    if (!failed && fsync(fileno(a->fp)) != 0) {
        failed = 1;
        e = errno;
    }
    if (fclose(a->fp) != 0 && !failed) {
        failed = 1;
        e = errno;
    }
    a->fp = NULL;
    if (!failed && rename(a->tmp, a->path) != 0) {
        failed = 2;
        e = errno;
    }
    if (failed) {
        td_failc("%s: %s: %s: %s", op, a->path, failed == 2 ? "cannot rename the temporary file" : "write failed",
                 strerror(e));
        td_atomic_abort(a);
        return -1;
    }
    sync_dir(a->path);
    free(a->path);
    free(a->tmp);
    a->path = a->tmp = NULL;
    return 0;
}

void td_atomic_abort(td_atomic_file *a) {
    if (a->fp) fclose(a->fp);
    if (a->tmp) unlink(a->tmp);
    free(a->path);
    free(a->tmp);
    memset(a, 0, sizeof *a);
}
