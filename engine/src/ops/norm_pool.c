/* norm_pool.c - PLACEHOLDER: not implemented yet; the owner of this family replaces this file. */
#include "internal.h"

td_tensor *td_group_norm(td_tensor *x, int groups, td_tensor *w, td_tensor *b, float eps) {
    return td_fail("group_norm: not implemented yet");
}
td_tensor *td_avg_pool2d(td_tensor *x, int kernel, int stride, int pad) {
    return td_fail("avg_pool2d: not implemented yet");
}
td_tensor *td_upsample_nearest2d(td_tensor *x, int scale) {
    return td_fail("upsample_nearest2d: not implemented yet");
}
int td_bw_group_norm(td_node *n, td_tensor *gout) {
    (void)n; (void)gout;
    return td_failc("not implemented yet");
}
int td_bw_avg_pool2d(td_node *n, td_tensor *gout) {
    (void)n; (void)gout;
    return td_failc("not implemented yet");
}
int td_bw_upsample_nearest2d(td_node *n, td_tensor *gout) {
    (void)n; (void)gout;
    return td_failc("not implemented yet");
}
