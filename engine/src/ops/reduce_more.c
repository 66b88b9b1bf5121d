/* reduce_more.c - PLACEHOLDER: not implemented yet; the owner of this family replaces this file. */
#include "internal.h"

td_tensor *td_mean(td_tensor *a, uint32_t axes, int keepdim) {
    return td_fail("mean: not implemented yet");
}
td_tensor *td_var(td_tensor *a, uint32_t axes, int correction, int keepdim) {
    return td_fail("var: not implemented yet");
}
td_tensor *td_logsumexp(td_tensor *a, uint32_t axes, int keepdim) {
    return td_fail("logsumexp: not implemented yet");
}
td_tensor *td_max(td_tensor *a, int axis, int keepdim) {
    return td_fail("max: not implemented yet");
}
td_tensor *td_argmax(td_tensor *a, int axis, int keepdim) {
    return td_fail("argmax: not implemented yet");
}
td_tensor *td_softmax(td_tensor *a, int axis) {
    return td_fail("softmax: not implemented yet");
}
td_tensor *td_log_softmax(td_tensor *a, int axis) {
    return td_fail("log_softmax: not implemented yet");
}
int td_bw_logsumexp(td_node *n, td_tensor *gout) {
    (void)n; (void)gout;
    return td_failc("not implemented yet");
}
int td_bw_max(td_node *n, td_tensor *gout) {
    (void)n; (void)gout;
    return td_failc("not implemented yet");
}
int td_bw_softmax(td_node *n, td_tensor *gout) {
    (void)n; (void)gout;
    return td_failc("not implemented yet");
}
int td_bw_log_softmax(td_node *n, td_tensor *gout) {
    (void)n; (void)gout;
    return td_failc("not implemented yet");
}
