/* matmul.c - PLACEHOLDER: not implemented yet; the owner of this family replaces this file. */
#include "internal.h"

td_tensor *td_matmul(td_tensor *a, td_tensor *b) {
    return td_fail("matmul: not implemented yet");
}
td_tensor *td_linear(td_tensor *x, td_tensor *w, td_tensor *b) {
    return td_fail("linear: not implemented yet");
}
int td_bw_matmul(td_node *n, td_tensor *gout) {
    (void)n; (void)gout;
    return td_failc("not implemented yet");
}
int td_bw_linear(td_node *n, td_tensor *gout) {
    (void)n; (void)gout;
    return td_failc("not implemented yet");
}
