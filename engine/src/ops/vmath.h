/* vmath.h - lets `omp simd` loops call vector versions of expf, logf,
 * log1pf, expm1f and tanhf from glibc's libmvec (x86-64, glibc >= 2.35:
 * the SSE4 / AVX2 / AVX-512 variants, <= 4 ulp; -lm links libmvec as
 * needed). glibc declares them only under -ffast-math; declaring them here
 * keeps IEEE semantics everywhere else. Loops that call these must be
 * branch free (the variants are `notinbranch`): write selects, not ifs.
 * Elsewhere (other libcs, -DTIDE_NO_LIBMVEC) nothing changes: the calls stay
 * scalar. Include after <math.h>. */
#ifndef TIDE_VMATH_H
#define TIDE_VMATH_H
#include <math.h>

#if defined(__x86_64__) && defined(__GLIBC__) && defined(_OPENMP) && !defined(TIDE_NO_LIBMVEC) && \
    (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 35))
#pragma omp declare simd notinbranch
float expf(float);
#pragma omp declare simd notinbranch
float logf(float);
#pragma omp declare simd notinbranch
float log1pf(float);
#pragma omp declare simd notinbranch
float expm1f(float);
#pragma omp declare simd notinbranch
float tanhf(float);
#define TIDE_HAVE_LIBMVEC 1
#endif

/* sigmoid without a branch: e = exp(-|x|) in (0, 1], so nothing overflows. */
static inline float td_sigmoidf(float x) {
    float e = expf(-fabsf(x));
    float r = 1.0f / (1.0f + e);
    return x >= 0.0f ? r : e * r;
}

#endif
