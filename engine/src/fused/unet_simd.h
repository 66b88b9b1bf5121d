/* unet_simd.h - exp and sigmoid for the simd loops of the UNet kernels
 * (unet.c, attention.c). glibc's expf only vectorizes under -ffast-math. */
#ifndef TIDE_UNET_SIMD_H
#define TIDE_UNET_SIMD_H
#include <math.h>
#include <stdint.h>

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-trapping-math")
#endif

/* exp(-a) for a in [0, 80]: Cephes' degree-6 polynomial on -a = k ln2 + r,
 * 2^k from the exponent bits; the result is a normal float.
 *
 * Callers clamp a to [0, 80] first, so that no lane computes a denormal:
 * GCC if-converts a clamp by computing the clamped lanes from a constant,
 * and a clamp of exp's argument at 88 made silu compute z / (1 + e^88) for
 * every lane, a denormal and a microcode assist per vector (15 ns per
 * element instead of 1). */
static inline float td_exp_neg(float a) {
    float x = -a, k = floorf(x * 1.44269504088896341f + 0.5f);
    float r = x - k * 0.693359375f + k * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    union { int32_t i; float f; } s = {.i = ((int32_t)k + 127) << 23};
    return p * s.f;
}

/* exp(-a) for a >= 0 (NaN and a > 80 give 0, below exp(-80) = 1.8e-35). */
static inline float td_exp_neg0(float a) {
    float c = a < 80.0f ? a : 80.0f, e = td_exp_neg(c);
    return a < 80.0f ? e : 0.0f;
}

/* sigmoid from e = exp(-|z|), which never overflows; |z| is clamped at 80,
 * where sigmoid is 1 or 1.8e-35 (its value to float precision, or below it).
 * A NaN z gives 1.8e-35 here; silu and its derivative get the NaN through z. */
static inline float td_sigmoid_simd(float z) {
    float a = fabsf(z);
    a = a < 80.0f ? a : 80.0f;
    float e = td_exp_neg(a), s = 1.0f / (1.0f + e);
    return z >= 0.0f ? s : e * s;
}
#endif
