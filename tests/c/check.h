/* check.h - the small harness of the C tests: checks, random inputs,
 * finite-difference gradient checks and PyTorch fixtures. */
#ifndef TIDE_CHECK_H
#define TIDE_CHECK_H
#include "tide.h"
#include <stdbool.h>
#include <stdio.h>

extern int check_passed, check_failed;

#define CHECK(cond, ...)                                                        \
    do {                                                                        \
        if (cond) {                                                             \
            check_passed++;                                                     \
        } else {                                                                \
            check_failed++;                                                     \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);                \
            fprintf(stderr, __VA_ARGS__);                                       \
            fprintf(stderr, "\n");                                              \
        }                                                                       \
    } while (0)

/* Prints "N passed, M failed" and returns the exit status. */
int check_summary(void);

/* Uniform values in [lo, hi) from a local generator (not td_rand). */
td_tensor *check_rand(int ndim, const int64_t *shape, float lo, float hi, uint64_t *state);
#define SHAPE(...) ((const int64_t[]){__VA_ARGS__})

/* Values of got against want, elementwise |g - w| <= atol + rtol |w|. */
bool check_close(const char *what, const td_tensor *got, const td_tensor *want, float atol, float rtol);

/* The op under test: builds the output from the inputs. */
typedef td_tensor *(*check_fn)(td_tensor **inputs, void *ctx);

/* Finite-difference check of the gradients of every input that requires
 * grad, through loss = sum(out * r) with random r. Checks at most
 * `max_elems` elements per input (0 = all). */
bool check_grad(const char *what, check_fn fn, void *ctx, int nin, td_tensor **inputs,
                float eps, float atol, float rtol, int max_elems);

/* Bad-input checks: a copy of t's values; that t still holds them (frees
 * snap); that r is NULL and the error message holds every non-NULL needle
 * (releases r). */
float *check_snapshot(const td_tensor *t);
void check_unchanged(const char *what, const td_tensor *t, float *snap);
void check_error(td_tensor *r, const char *what, const char *n1, const char *n2, const char *n3);

/* Fixtures: text files written by tests/fixtures/make_fixtures.py, one tensor
 * per line: "<case> <name> <ndim> <dims...> <values...>". */
typedef struct check_fixture check_fixture;
check_fixture *fixture_load(const char *file); /* file name under tests/fixtures */
td_tensor *fixture_get(check_fixture *f, const char *case_name, const char *tensor_name);
void fixture_free(check_fixture *f);

/* Checks fn against a fixture case: inputs in0..inN-1 (with requires_grad
 * where the fixture has grad_inK), output "out", upstream gradient "gout",
 * expected input gradients "grad_inK". */
bool check_fixture_case(check_fixture *f, const char *case_name, check_fn fn, void *ctx,
                        int nin, float atol, float rtol);

#endif
