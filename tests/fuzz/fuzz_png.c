/* fuzz_png.c - td_png_load on any bytes; a loaded image must hold values in
 * [0,1], and a small one must survive td_png_save and a second load. */
#include "fuzz.h"
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *in = fuzz_file(data, size, "png");
    td_tensor *t = td_png_load(in);
    fuzz_result(t);
    if (!t) return 0;
    if (t->ndim != 3 || (t->shape[0] != 1 && t->shape[0] != 3)) abort();
    for (int64_t i = 0; i < t->numel; i++)
        if (!(t->data[i] >= 0.0f && t->data[i] <= 1.0f)) abort();
    if (t->numel <= 4096) {
        static char out[600];
        snprintf(out, sizeof out, "%s.out.png", in);
        if (td_png_save(out, t) != 0) abort();
        td_tensor *back = td_png_load(out);
        if (!back || back->numel != t->numel || memcmp(back->data, t->data, sizeof(float) * (size_t)t->numel)) abort();
        td_release(back);
        unlink(out);
    }
    td_release(t);
    fuzz_no_leak();
    return 0;
}
