/* rng.c - PLACEHOLDER: not implemented yet; the owner replaces this file. */
#include "internal.h"
void td_manual_seed(uint64_t seed) { (void)seed; }
uint64_t td_get_seed(void) { return 0; }
td_tensor *td_rand(int ndim, const int64_t *shape) { (void)ndim; (void)shape; return td_fail("rand: not implemented yet"); }
td_tensor *td_randn(int ndim, const int64_t *shape) { (void)ndim; (void)shape; return td_fail("randn: not implemented yet"); }
td_tensor *td_bernoulli(const td_tensor *p) { (void)p; return td_fail("bernoulli: not implemented yet"); }
td_tensor *td_categorical(const td_tensor *probs, int64_t nsamples) { (void)probs; (void)nsamples; return td_fail("categorical: not implemented yet"); }
td_tensor *td_randperm(int64_t n) { (void)n; return td_fail("randperm: not implemented yet"); }
