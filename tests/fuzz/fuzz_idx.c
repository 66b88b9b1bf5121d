/* fuzz_idx.c - td_idx_load on any bytes (plain or gzip). */
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    td_tensor *t = td_idx_load(fuzz_file(data, size, "idx"));
    if (t) {
        int64_t n = 1;
        for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
        if (t->ndim < 1 || t->ndim > TD_MAX_DIMS || n != t->numel) abort();
    }
    fuzz_result(t);
    td_release(t);
    fuzz_no_leak();
    return 0;
}
