/* fuzz_safetensors.c - td_st_open on any bytes; an accepted file must give
 * every tensor it lists, in the shape it states. */
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    td_st_file *f = td_st_open(fuzz_file(data, size, "safetensors"));
    fuzz_result(f);
    if (!f) return 0;
    for (int i = 0; i < td_st_count(f); i++) {
        const char *name = td_st_name(f, i);
        int64_t shape[TD_MAX_DIMS];
        int nd = td_st_shape(f, name, shape);
        if (!name || nd < 0 || !td_st_dtype(f, name)) abort();
        td_tensor *t = td_st_get(f, name);
        if (!t || t->ndim != nd) abort();
        for (int d = 0; d < nd; d++)
            if (t->shape[d] != shape[d]) abort();
        td_release(t);
        if (nd > 0 && shape[0] > 0) {
            td_tensor *r = td_st_get_rows(f, name, shape[0] - 1, 1);
            if (!r) abort();
            td_release(r);
        }
        fuzz_no_leak();
    }
    td_st_metadata(f, "format");
    td_st_close(f);
    fuzz_no_leak();
    return 0;
}
