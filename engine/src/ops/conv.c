/* conv.c - PLACEHOLDER: not implemented yet; the owner of this family replaces this file. */
#include "internal.h"

td_tensor *td_conv2d(td_tensor *x, td_tensor *w, td_tensor *b, int stride, int pad) {
    return td_fail("conv2d: not implemented yet");
}
td_tensor *td_conv_transpose2d(td_tensor *x, td_tensor *w, td_tensor *b, int stride, int pad, int output_pad) {
    return td_fail("conv_transpose2d: not implemented yet");
}
int td_bw_conv2d(td_node *n, td_tensor *gout) {
    (void)n; (void)gout;
    return td_failc("not implemented yet");
}
int td_bw_conv_transpose2d(td_node *n, td_tensor *gout) {
    (void)n; (void)gout;
    return td_failc("not implemented yet");
}
