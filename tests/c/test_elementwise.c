/* Elementwise ops: PyTorch fixtures, gradient checks with broadcasting and
 * non-contiguous inputs, and error messages. */
#include "check.h"
#include <string.h>

typedef td_tensor *(*bin_fn)(td_tensor *, td_tensor *);
typedef td_tensor *(*un_fn)(td_tensor *);

static td_tensor *apply_binary(td_tensor **in, void *ctx) { return ((bin_fn)ctx)(in[0], in[1]); }
static td_tensor *apply_unary(td_tensor **in, void *ctx) { return ((un_fn)ctx)(in[0]); }
static td_tensor *apply_where(td_tensor **in, void *ctx) {
    td_tensor *zero = td_scalar(0.0f), *c = td_gt(in[0], zero);
    td_tensor *out = td_where(c, in[1], in[2]);
    td_release(zero);
    td_release(c);
    return out;
}
#define SCALAR_FN(name, expr) \
    static td_tensor *name(td_tensor **in, void *ctx) { td_tensor *a = in[0]; return expr; }
SCALAR_FN(add_s, td_add_scalar(a, 2.5f))
SCALAR_FN(mul_s, td_mul_scalar(a, -1.5f))
SCALAR_FN(pow_s, td_pow_scalar(a, 3.0f))
SCALAR_FN(rpow_s, td_rpow_scalar(2.0f, a))
SCALAR_FN(clamp_s, td_clamp(a, -0.5f, 0.7f))
SCALAR_FN(leaky_s, td_leaky_relu(a, 0.2f))

static const struct { const char *name; bin_fn fn; } binaries[] = {
    {"add_bcast", td_add}, {"sub_bcast", td_sub}, {"mul_bcast", td_mul}, {"div_bcast", td_div},
    {"pow", td_pow}, {"maximum", td_maximum}, {"minimum", td_minimum},
};
static const struct { const char *name; un_fn fn; } unaries[] = {
    {"neg", td_neg}, {"exp", td_exp}, {"log", td_log}, {"log1p", td_log1p}, {"expm1", td_expm1},
    {"sqrt", td_sqrt}, {"rsqrt", td_rsqrt}, {"abs", td_abs}, {"square", td_square},
    {"relu", td_relu}, {"sigmoid", td_sigmoid}, {"tanh", td_tanh}, {"softplus", td_softplus},
    {"silu", td_silu}, {"gelu", td_gelu},
};
static const struct { const char *name; check_fn fn; } scalars[] = {
    {"add_scalar", add_s}, {"mul_scalar", mul_s}, {"pow_scalar", pow_s},
    {"rpow_scalar", rpow_s}, {"clamp", clamp_s}, {"leaky_relu", leaky_s},
};

static void test_fixtures(void) {
    check_fixture *f = fixture_load("elementwise.txt");
    for (size_t i = 0; i < sizeof binaries / sizeof *binaries; i++)
        check_fixture_case(f, binaries[i].name, apply_binary, (void *)binaries[i].fn, 2, 1e-5f, 1e-4f);
    for (size_t i = 0; i < sizeof unaries / sizeof *unaries; i++)
        check_fixture_case(f, unaries[i].name, apply_unary, (void *)unaries[i].fn, 1, 1e-5f, 1e-4f);
    for (size_t i = 0; i < sizeof scalars / sizeof *scalars; i++)
        check_fixture_case(f, scalars[i].name, scalars[i].fn, NULL, 1, 1e-5f, 1e-4f);
    check_fixture_case(f, "where", apply_where, NULL, 3, 1e-6f, 1e-5f);
    fixture_free(f);
}

/* Gradient checks on broadcast shapes, with the first input a transposed
 * (non-contiguous) view. */
static void test_gradients(void) {
    uint64_t s = 7;
    for (size_t i = 0; i < sizeof binaries / sizeof *binaries; i++) {
        td_tensor *base = check_rand(2, SHAPE(5, 3), 0.5f, 1.5f, &s);
        td_tensor *a = td_transpose(base, 0, 1); /* [3,5], strided */
        td_tensor *b = check_rand(1, SHAPE(5), 0.6f, 1.4f, &s);
        td_set_requires_grad(a, 1);
        td_set_requires_grad(b, 1);
        td_tensor *in[2] = {a, b};
        check_grad(binaries[i].name, apply_binary, (void *)binaries[i].fn, 2, in, 1e-3f, 2e-3f, 2e-2f, 0);
        td_release(a);
        td_release(b);
        td_release(base);
    }
    for (size_t i = 0; i < sizeof unaries / sizeof *unaries; i++) {
        td_tensor *base = check_rand(2, SHAPE(4, 6), 0.3f, 2.0f, &s);
        td_tensor *a = td_narrow(base, 1, 1, 4);
        td_set_requires_grad(a, 1);
        check_grad(unaries[i].name, apply_unary, (void *)unaries[i].fn, 1, &a, 1e-3f, 2e-3f, 2e-2f, 0);
        td_release(a);
        td_release(base);
    }
    for (size_t i = 0; i < sizeof scalars / sizeof *scalars; i++) {
        td_tensor *a = check_rand(2, SHAPE(3, 4), -1.0f, 1.0f, &s);
        td_set_requires_grad(a, 1);
        check_grad(scalars[i].name, scalars[i].fn, NULL, 1, &a, 1e-3f, 2e-3f, 2e-2f, 0);
        td_release(a);
    }
    td_tensor *w[3] = {check_rand(2, SHAPE(3, 4), -1, 1, &s), check_rand(2, SHAPE(3, 4), -1, 1, &s),
                       check_rand(1, SHAPE(4), -1, 1, &s)};
    td_set_requires_grad(w[1], 1);
    td_set_requires_grad(w[2], 1);
    check_grad("where", apply_where, NULL, 3, w, 1e-3f, 2e-3f, 2e-2f, 0);
    for (int k = 0; k < 3; k++) td_release(w[k]);
}

static void test_errors(void) {
    td_tensor *a = td_zeros(2, SHAPE(128, 784)), *b = td_zeros(2, SHAPE(512, 20));
    td_tensor *c = td_add(a, b);
    CHECK(c == NULL, "add of [128,784] and [512,20] must fail");
    CHECK(strstr(td_last_error(), "add") && strstr(td_last_error(), "[128,784]") &&
              strstr(td_last_error(), "[512,20]"),
          "error names the op and both shapes: %s", td_last_error());
    td_release(a);
    td_release(b);
    td_tensor *huge = td_zeros(3, SHAPE(0, (int64_t)1 << 40, (int64_t)1 << 40));
    CHECK(huge == NULL && strstr(td_last_error(), "too large"), "a shape past 2^48 elements fails: %s",
          td_last_error());
    td_tensor *neg = td_zeros(2, SHAPE(3, -1));
    CHECK(neg == NULL && strstr(td_last_error(), "negative"), "a negative size fails: %s", td_last_error());
}

static void test_comparisons(void) {
    td_tensor *a = td_from_buffer(1, SHAPE(3), (float[]){1, 2, 3});
    td_tensor *b = td_from_buffer(1, SHAPE(3), (float[]){2, 2, 2});
    td_tensor *r[6] = {td_eq(a, b), td_ne(a, b), td_lt(a, b), td_le(a, b), td_gt(a, b), td_ge(a, b)};
    const float want[6][3] = {{0, 1, 0}, {1, 0, 1}, {1, 0, 0}, {1, 1, 0}, {0, 0, 1}, {0, 1, 1}};
    for (int k = 0; k < 6; k++) {
        td_tensor *w = td_from_buffer(1, SHAPE(3), want[k]);
        check_close("comparison", r[k], w, 0, 0);
        td_release(w);
        td_release(r[k]);
    }
    td_release(a);
    td_release(b);
}

int main(void) {
    test_fixtures();
    test_gradients();
    test_errors();
    test_comparisons();
    CHECK(td_live_tensors() == 0, "tensors leaked: %lld live", (long long)td_live_tensors());
    return check_summary();
}
