/* join.c - PLACEHOLDER: not implemented yet; the owner of this family replaces this file. */
#include "internal.h"

td_tensor *td_concat(int n, td_tensor *const *ts, int axis) {
    return td_fail("concat: not implemented yet");
}
td_tensor *td_stack(int n, td_tensor *const *ts, int axis) {
    return td_fail("stack: not implemented yet");
}
td_tensor *td_index_select(td_tensor *a, int axis, td_tensor *index) {
    return td_fail("index_select: not implemented yet");
}
td_tensor *td_gather(td_tensor *a, int axis, td_tensor *index) {
    return td_fail("gather: not implemented yet");
}
td_tensor *td_scatter_add(td_tensor *a, int axis, td_tensor *index, td_tensor *src) {
    return td_fail("scatter_add: not implemented yet");
}
td_tensor *td_one_hot(td_tensor *index, int64_t nclasses) {
    return td_fail("one_hot: not implemented yet");
}
int td_bw_concat(td_node *n, td_tensor *gout) {
    (void)n; (void)gout;
    return td_failc("not implemented yet");
}
int td_bw_index_select(td_node *n, td_tensor *gout) {
    (void)n; (void)gout;
    return td_failc("not implemented yet");
}
int td_bw_gather(td_node *n, td_tensor *gout) {
    (void)n; (void)gout;
    return td_failc("not implemented yet");
}
int td_bw_scatter_add(td_node *n, td_tensor *gout) {
    (void)n; (void)gout;
    return td_failc("not implemented yet");
}
