/* loss.c - PLACEHOLDER: not implemented yet; the owner of this family replaces this file. */
#include "internal.h"

td_tensor *td_bce_with_logits(td_tensor *logits, td_tensor *target) {
    return td_fail("bce_with_logits: not implemented yet");
}
td_tensor *td_mse_loss(td_tensor *a, td_tensor *b) {
    return td_fail("mse_loss: not implemented yet");
}
td_tensor *td_cross_entropy(td_tensor *logits, td_tensor *target) {
    return td_fail("cross_entropy: not implemented yet");
}
td_tensor *td_normal_log_prob(td_tensor *x, td_tensor *mu, td_tensor *sigma) {
    return td_fail("normal_log_prob: not implemented yet");
}
td_tensor *td_laplace_log_prob(td_tensor *x, td_tensor *mu, td_tensor *scale) {
    return td_fail("laplace_log_prob: not implemented yet");
}
td_tensor *td_kl_normal(td_tensor *mu1, td_tensor *sigma1, td_tensor *mu2, td_tensor *sigma2) {
    return td_fail("kl_normal: not implemented yet");
}
int td_bw_bce_with_logits(td_node *n, td_tensor *gout) {
    (void)n; (void)gout;
    return td_failc("not implemented yet");
}
int td_bw_cross_entropy(td_node *n, td_tensor *gout) {
    (void)n; (void)gout;
    return td_failc("not implemented yet");
}
