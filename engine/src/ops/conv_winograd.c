/* conv_winograd.c - 3x3 stride-1 conv2d through Winograd F(m x m, 3x3),
 * m = 2 or 4 (Lavin and Gray, 2016).
 *
 * Each m x m output tile is A^T [(G w G^T) . (B^T d B)] A of its
 * (m + 2)^2 input tile d: (m + 2)^2 products per tile and channel pair
 * instead of 9 m^2 (16 for 4 outputs, 36 for 16), done as (m + 2)^2 GEMMs
 * [co, ci] x [ci, tiles]. The weight gradient is
 * G^T [sum over tiles of (A g A^T) . (B^T d B)] G, the same number of GEMMs
 * with the tiles as inner dim; the input gradient is the same convolution
 * of gout with the weights rotated by 180 degrees and transposed, padded
 * 2 - p.
 *
 * The transforms first split each (padded) image row into its m phases
 * (column mod m): tile tx then starts at element tx of each phase, so every
 * transform is a contiguous vector loop along a row of tiles, and writes
 * its results as contiguous runs. The work goes in chunks whose transformed
 * tiles fit in about WINO_BUDGET bytes (whole images, or tile rows of one),
 * a chunk per thread. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-tree-loop-distribute-patterns")
#endif
#include "conv.h"
#include <string.h>

#define WINO_BUDGET (1 << 20) /* bytes of transformed tiles per chunk */

#define WL 8 /* the transforms run whole blocks of WL tiles along a tile row */

typedef struct {
    int64_t c, h, w, p;     /* input image [c, h, w], zero padding p */
    int64_t oh, ow, th, tw; /* output size, tiles th x tw */
    int64_t m, planes;      /* output tile m x m (2 or 4), (m + 2)^2 transformed planes */
    int64_t n;              /* length of a split phase row: tw rounded up to WL, + WL */
} wino;

/* Test hooks (not in tide.h): the tile size (0 = by shape) and the chunk
 * budget in bytes (0 = WINO_BUDGET), so that small shapes can take every
 * path. */
static int64_t force_tile, force_budget;

void td_conv_set_winograd(int tile, int64_t budget) {
    force_tile = tile == 2 || tile == 4 ? tile : 0;
    force_budget = budget > 0 ? budget : 0;
}

/* F(4x4, 3x3) (36 products per 16 outputs instead of 16 per 4) on wide
 * images, F(2x2, 3x3) below (4x4 tiles of narrow rows leave most of the
 * WL lanes of the transforms idle). */
static int64_t wino_tile(int64_t oh, int64_t ow) {
    if (force_tile) return force_tile;
    return oh >= 8 && ow >= 24 ? 4 : 2;
}

static wino wino_geom(int64_t c, int64_t h, int64_t w, int64_t p) {
    wino g = {c, h, w, p, h + 2 * p - 2, w + 2 * p - 2, 0, 0, 0, 0, 0};
    g.m = wino_tile(g.oh, g.ow);
    g.planes = (g.m + 2) * (g.m + 2);
    g.th = (g.oh + g.m - 1) / g.m;
    g.tw = (g.ow + g.m - 1) / g.m;
    g.n = (g.tw + WL - 1) / WL * WL + WL;
    return g;
}

bool td_wino_applies(int64_t kh, int64_t kw, int64_t stride, int64_t ci, int64_t co) {
    return kh == 3 && kw == 3 && stride == 1 && ci >= 16 && co >= 16;
}

/* Scratch of the transforms, in floats: the split rows of one input plane
 * (m th + 2 rows of m phases) and, for F(4x4), 6 rows of the transform
 * down the columns; or the m^2 output phases. */
static int64_t wino_work(const wino *g) { return (g->m * g->th + 2 + 6 + 1) * g->m * g->n + g->m * g->m * g->n; }

/* Columns of a chunk of nb images of T tiles: the blocks of WL tiles of the
 * last tile row run up to WL - 1 columns past the end. */
static int64_t wino_ld(const wino *g, int64_t nb) { return nb * g->th * g->tw + WL; }

/* ph[r n + k] = row[m k + r - p] for the m phases r and k in [0, n), zero
 * outside [0, w) or when row is NULL: the row goes zero-padded into ph's
 * tail (m n floats of slack after ph), then is dealt out by phase. */
static void split_row(const float *restrict row, int64_t w, int64_t p, int64_t m, int64_t n, float *restrict ph) {
    float *restrict lin = ph + m * n;
    int64_t L = m * n, e = p + w < L ? p + w : L;
    if (!row) {
        for (int64_t k = 0; k < L; k++) ph[k] = 0.0f;
        return;
    }
    for (int64_t q = 0; q < p && q < L; q++) lin[q] = 0.0f;
    for (int64_t q = p; q < e; q++) lin[q] = row[q - p];
    for (int64_t q = e; q < L; q++) lin[q] = 0.0f;
    if (m == 2)
        for (int64_t k = 0; k < n; k++) {
            ph[k] = lin[2 * k];
            ph[n + k] = lin[2 * k + 1];
        }
    else
        for (int64_t k = 0; k < n; k++) {
            ph[k] = lin[4 * k];
            ph[n + k] = lin[4 * k + 1];
            ph[2 * n + k] = lin[4 * k + 2];
            ph[3 * n + k] = lin[4 * k + 3];
        }
}

/* One row of input tiles: r holds the split rows 2ty .. 2ty+3 (row i: even
 * half at r + 2 i n, odd half at r + (2 i + 1) n); q[xi * cs + tx] = the
 * 16 values of B^T d B for tile tx in [0, tw), and junk up to the next
 * multiple of WL. */
static void input_tiles(const float *restrict r, int64_t n, int64_t tw, float *restrict q, int64_t cs) {
    for (int64_t x0 = 0; x0 < tw; x0 += WL) {
        const float *e0 = r + x0, *o0 = e0 + n, *e1 = e0 + 2 * n, *o1 = e0 + 3 * n;
        const float *e2 = e0 + 4 * n, *o2 = e0 + 5 * n, *e3 = e0 + 6 * n, *o3 = e0 + 7 * n;
        float *d = q + x0;
        #pragma omp simd
        for (int x = 0; x < WL; x++) {
            /* B^T down the 4 rows at columns 2x .. 2x+3, then B along each */
            float a0 = e0[x] - e2[x], a1 = o0[x] - o2[x], a2 = e0[x + 1] - e2[x + 1], a3 = o0[x + 1] - o2[x + 1];
            float b0 = e1[x] + e2[x], b1 = o1[x] + o2[x], b2 = e1[x + 1] + e2[x + 1], b3 = o1[x + 1] + o2[x + 1];
            float c0 = e2[x] - e1[x], c1 = o2[x] - o1[x], c2 = e2[x + 1] - e1[x + 1], c3 = o2[x + 1] - o1[x + 1];
            float d0 = e1[x] - e3[x], d1 = o1[x] - o3[x], d2 = e1[x + 1] - e3[x + 1], d3 = o1[x + 1] - o3[x + 1];
            d[0 * cs + x] = a0 - a2;
            d[1 * cs + x] = a1 + a2;
            d[2 * cs + x] = a2 - a1;
            d[3 * cs + x] = a1 - a3;
            d[4 * cs + x] = b0 - b2;
            d[5 * cs + x] = b1 + b2;
            d[6 * cs + x] = b2 - b1;
            d[7 * cs + x] = b1 - b3;
            d[8 * cs + x] = c0 - c2;
            d[9 * cs + x] = c1 + c2;
            d[10 * cs + x] = c2 - c1;
            d[11 * cs + x] = c1 - c3;
            d[12 * cs + x] = d0 - d2;
            d[13 * cs + x] = d1 + d2;
            d[14 * cs + x] = d2 - d1;
            d[15 * cs + x] = d1 - d3;
        }
    }
}

/* V[xi][c][col0 + (ty - ty0) tw + tx] = (B^T d B)[xi] for the 4x4 tiles d
 * of the tile rows [ty0, ty1) of img [c, h, w] padded by p (zero outside);
 * the 16 planes of V are [c, ld]. Tile rows go in order, so each one's
 * junk is overwritten by the next. */
static void input2(const float *img, float *V, int64_t ld, int64_t col0, const wino *g, int64_t ty0,
                       int64_t ty1, float *work) {
    int64_t n = g->n, cs = g->c * ld;
    for (int64_t c = 0; c < g->c; c++) {
        const float *plane = img + c * g->h * g->w;
        for (int64_t y = 2 * ty0; y < 2 * ty1 + 2; y++) {
            int64_t sy = y - g->p, r = y - 2 * ty0;
            split_row(sy >= 0 && sy < g->h ? plane + sy * g->w : NULL, g->w, g->p, g->m, n, work + g->m * r * n);
        }
        for (int64_t ty = ty0; ty < ty1; ty++)
            input_tiles(work + 4 * (ty - ty0) * n, n, g->tw, V + c * ld + col0 + (ty - ty0) * g->tw, cs);
    }
}

/* y (+)= v at y[0], y[2], ... (and w at y[1], y[3], ...) for n pairs, and v
 * alone at y[2n] when odd. */
static void put_pairs(float *restrict y, const float *restrict v, const float *restrict w, int64_t n, bool odd,
                      bool add) {
    if (add)
        for (int64_t x = 0; x < n; x++) {
            y[2 * x] += v[x];
            y[2 * x + 1] += w[x];
        }
    else
        for (int64_t x = 0; x < n; x++) {
            y[2 * x] = v[x];
            y[2 * x + 1] = w[x];
        }
    if (odd) y[2 * n] = (add ? y[2 * n] : 0.0f) + v[n];
}

/* The output rows of the tile rows [ty0, ty1) of out [co, oh, ow] = (or
 * += when add) A^T m A + bias for the tiles m in M[xi][o][col0 + (ty - ty0)
 * tw + tx]; the 16 planes of M are [co, ld]. work holds 4 n. */
static void output2(const float *M, int64_t ld, int64_t col0, float *out, const float *bias, int64_t co,
                        const wino *g, int64_t ty0, int64_t ty1, bool add, float *work) {
    int64_t cs = co * ld, tw = g->tw, n = g->n;
    float *restrict y00 = work, *restrict y01 = work + n, *restrict y10 = work + 2 * n, *restrict y11 = work + 3 * n;
    for (int64_t o = 0; o < co; o++)
        for (int64_t ty = ty0; ty < ty1; ty++) {
            float b = bias ? bias[o] : 0.0f;
            for (int64_t x0 = 0; x0 < tw; x0 += WL) {
                const float *restrict m = M + o * ld + col0 + (ty - ty0) * tw + x0;
                #pragma omp simd
                for (int x = 0; x < WL; x++) {
                    float t0[4], t1[4];
                    for (int j = 0; j < 4; j++) {
                        t0[j] = m[j * cs + x] + m[(4 + j) * cs + x] + m[(8 + j) * cs + x];
                        t1[j] = m[(4 + j) * cs + x] - m[(8 + j) * cs + x] - m[(12 + j) * cs + x];
                    }
                    y00[x0 + x] = t0[0] + t0[1] + t0[2] + b;
                    y01[x0 + x] = t0[1] - t0[2] - t0[3] + b;
                    y10[x0 + x] = t1[0] + t1[1] + t1[2] + b;
                    y11[x0 + x] = t1[1] - t1[2] - t1[3] + b;
                }
            }
            float *d = out + (o * g->oh + 2 * ty) * g->ow;
            put_pairs(d, y00, y01, g->ow / 2, g->ow % 2, add);
            if (2 * ty + 1 < g->oh) put_pairs(d + g->ow, y10, y11, g->ow / 2, g->ow % 2, add);
        }
}

/* Gh[xi][o][col0 + (ty - ty0) tw + tx] = (A g A^T)[xi] for the 2x2 tiles g
 * (zero outside) of the tile rows [ty0, ty1) of gout [co, oh, ow]; the 16
 * planes of Gh are [co, ld]. */
static void grad2(const float *gout, float *Gh, int64_t ld, int64_t col0, int64_t co, const wino *g,
                            int64_t ty0, int64_t ty1, float *work) {
    int64_t cs = co * ld, tw = g->tw, n = g->n;
    for (int64_t o = 0; o < co; o++) {
        const float *plane = gout + o * g->oh * g->ow;
        for (int64_t y = 2 * ty0; y < 2 * ty1; y++) {
            int64_t r = y - 2 * ty0;
            split_row(y < g->oh ? plane + y * g->ow : NULL, g->ow, 0, g->m, n, work + g->m * r * n);
        }
        for (int64_t ty = ty0; ty < ty1; ty++)
            for (int64_t x0 = 0; x0 < tw; x0 += WL) {
                const float *restrict e0 = work + 4 * (ty - ty0) * n + x0, *restrict o0 = e0 + n,
                                      *restrict e1 = o0 + n, *restrict o1 = e1 + n;
                float *restrict q = Gh + o * ld + col0 + (ty - ty0) * tw + x0;
                #pragma omp simd
                for (int x = 0; x < WL; x++) {
                    /* A down the 2 rows, then along: t = (v0, v0 + v1, v0 - v1, -v1) */
                    float t[4][2] = {{e0[x], o0[x]},
                                     {e0[x] + e1[x], o0[x] + o1[x]},
                                     {e0[x] - e1[x], o0[x] - o1[x]},
                                     {-e1[x], -o1[x]}};
                    for (int i = 0; i < 4; i++) {
                        q[(4 * i + 0) * cs + x] = t[i][0];
                        q[(4 * i + 1) * cs + x] = t[i][0] + t[i][1];
                        q[(4 * i + 2) * cs + x] = t[i][0] - t[i][1];
                        q[(4 * i + 3) * cs + x] = -t[i][1];
                    }
                }
            }
    }
}

/* The kernel transforms G [n, 3] of F(2x2, 3x3) (n = 4) and F(4x4, 3x3) (n = 6). */
static const float G2[4][3] = {{1.0f, 0.0f, 0.0f}, {0.5f, 0.5f, 0.5f}, {0.5f, -0.5f, 0.5f}, {0.0f, 0.0f, 1.0f}};
static const float G4[6][3] = {{1.0f / 4, 0.0f, 0.0f},          {-1.0f / 6, -1.0f / 6, -1.0f / 6},
                               {-1.0f / 6, 1.0f / 6, -1.0f / 6}, {1.0f / 24, 1.0f / 12, 1.0f / 6},
                               {1.0f / 24, -1.0f / 12, 1.0f / 6}, {0.0f, 0.0f, 1.0f}};

/* U[xi] = G k G^T (n x n) for every kernel k of w [co, ci, 3, 3]: U [n*n, co, ci];
 * rotated: k = w[o][c] turned by 180 degrees, stored as U [n*n, ci, co]
 * (the weights of the input gradient). */
static void kernel_transforms(const float *w, float *U, int64_t co, int64_t ci, bool rotated, const float (*G)[3],
                              int n) {
    #pragma omp parallel for if (co * ci * n * n > TD_PAR_MIN)
    for (int64_t o = 0; o < co; o++)
        for (int64_t c = 0; c < ci; c++) {
            const float *k = w + (o * ci + c) * 9;
            float g[3][3], t[6][3];
            for (int i = 0; i < 3; i++)
                for (int j = 0; j < 3; j++) g[i][j] = rotated ? k[(2 - i) * 3 + 2 - j] : k[i * 3 + j];
            for (int i = 0; i < n; i++)
                for (int j = 0; j < 3; j++) t[i][j] = G[i][0] * g[0][j] + G[i][1] * g[1][j] + G[i][2] * g[2][j];
            float *u = U + (rotated ? c * co + o : o * ci + c);
            int64_t cs = co * ci;
            for (int i = 0; i < n; i++)
                for (int j = 0; j < n; j++)
                    u[(n * i + j) * cs] = t[i][0] * G[j][0] + t[i][1] * G[j][1] + t[i][2] * G[j][2];
        }
}

/* dw [co, ci, 3, 3] = beta dw + G^T z G for the n x n sums z in Z [n*n, co, ci]. */
static void weight_grads(const float *Z, float *dw, int64_t co, int64_t ci, float beta, const float (*G)[3], int n) {
    int64_t cs = co * ci;
    #pragma omp parallel for if (cs * n * n > TD_PAR_MIN)
    for (int64_t k = 0; k < cs; k++) {
        float t[3][6] = {{0}}; /* t = G^T z */
        for (int a = 0; a < n; a++)
            for (int b = 0; b < n; b++) {
                float z = Z[(n * a + b) * cs + k];
                for (int i = 0; i < 3; i++) t[i][b] += G[a][i] * z;
            }
        float *d = dw + k * 9;
        for (int i = 0; i < 3; i++)
            for (int j = 0; j < 3; j++) {
                float r = 0.0f;
                for (int b = 0; b < n; b++) r += t[i][b] * G[b][j];
                d[i * 3 + j] = (beta == 0.0f ? 0.0f : d[i * 3 + j]) + r;
            }
    }
}

/* ---- F(4x4, 3x3): 6x6 input tiles at stride 4 ----
 * B^T = [4 0 -5 0 1 0; 0 -4 -4 1 1 0; 0 4 -4 -1 1 0; 0 -2 -1 2 1 0;
 *        0 2 -1 -2 1 0; 0 4 0 -5 0 1],
 * G = [1/4 0 0; -1/6 -1/6 -1/6; -1/6 1/6 -1/6; 1/24 1/12 1/6;
 *      1/24 -1/12 1/6; 0 0 1],
 * A^T = [1 1 1 1 1 0; 0 1 -1 2 -2 0; 0 1 1 4 4 0; 0 1 -1 8 -8 1].
 * Rows are split in 4 phases (column mod 4), so that tile tx reads element
 * tx (and tx + 1) of each phase. */

/* o[k * s] = (B^T c)[k] for the 6 values c (the macro keeps it inline in
 * simd loops). */
#define BT6(o, s, c0, c1, c2, c3, c4, c5)                   \
    do {                                                    \
        (o)[0 * (s)] = 4.0f * (c0) - 5.0f * (c2) + (c4);    \
        (o)[1 * (s)] = (c3) + (c4) - 4.0f * ((c1) + (c2));  \
        (o)[2 * (s)] = 4.0f * ((c1) - (c2)) + (c4) - (c3);  \
        (o)[3 * (s)] = 2.0f * ((c3) - (c1)) + (c4) - (c2);  \
        (o)[4 * (s)] = 2.0f * ((c1) - (c3)) + (c4) - (c2);  \
        (o)[5 * (s)] = 4.0f * (c1) - 5.0f * (c3) + (c5);    \
    } while (0)

/* o[k * s] = (A v)[k], k < 6, for the 4 values v (A = (A^T)^T). */
#define A6(o, s, v0, v1, v2, v3)                                    \
    do {                                                            \
        (o)[0 * (s)] = (v0);                                        \
        (o)[1 * (s)] = (v0) + (v1) + (v2) + (v3);                   \
        (o)[2 * (s)] = (v0) - (v1) + (v2) - (v3);                   \
        (o)[3 * (s)] = (v0) + 2.0f * (v1) + 4.0f * (v2) + 8.0f * (v3); \
        (o)[4 * (s)] = (v0) - 2.0f * (v1) + 4.0f * (v2) - 8.0f * (v3); \
        (o)[5 * (s)] = (v3);                                        \
    } while (0)

/* One row of input tiles: r holds the split rows 4ty .. 4ty+5 (row i at
 * r + 4 i n, its phase ph at + ph n); t is scratch of 24 n; q[xi cs + tx]
 * = the 36 values of B^T d B for tile tx (and junk up to a multiple of WL). */
static void input4_tiles(const float *restrict r, int64_t n, int64_t tw, float *restrict t, float *restrict q,
                         int64_t cs) {
    int64_t len = 4 * n;
    #pragma omp simd
    for (int64_t x = 0; x < len; x++)
        BT6(t + x, len, r[x], r[len + x], r[2 * len + x], r[3 * len + x], r[4 * len + x], r[5 * len + x]);
    for (int k = 0; k < 6; k++) {
        const float *p0 = t + k * len, *p1 = p0 + n, *p2 = p1 + n, *p3 = p2 + n;
        float *o = q + 6 * k * cs;
        for (int64_t x0 = 0; x0 < tw; x0 += WL) {
            #pragma omp simd
            for (int64_t x = x0; x < x0 + WL; x++) BT6(o + x, cs, p0[x], p1[x], p2[x], p3[x], p0[x + 1], p1[x + 1]);
        }
    }
}

/* As input2, 6x6 tiles at stride 4: V has 36 planes. */
static void input4(const float *img, float *V, int64_t ld, int64_t col0, const wino *g, int64_t ty0, int64_t ty1,
                   float *work) {
    int64_t n = g->n, cs = g->c * ld, rows = 4 * (ty1 - ty0) + 2;
    float *t = work + rows * 4 * n;
    for (int64_t c = 0; c < g->c; c++) {
        const float *plane = img + c * g->h * g->w;
        for (int64_t r = 0; r < rows; r++) {
            int64_t sy = 4 * ty0 + r - g->p;
            split_row(sy >= 0 && sy < g->h ? plane + sy * g->w : NULL, g->w, g->p, 4, n, work + 4 * r * n);
        }
        for (int64_t ty = ty0; ty < ty1; ty++)
            input4_tiles(work + 16 * (ty - ty0) * n, n, g->tw, t, V + c * ld + col0 + (ty - ty0) * g->tw, cs);
    }
}

/* y (+)= the 4 phases v[l n + x] at y[4 x + l], for the w columns of y. */
static void put_quads(float *restrict y, const float *restrict v, int64_t n, int64_t w, bool add) {
    int64_t q = w / 4;
    for (int64_t x = 0; x < q; x++)
        for (int l = 0; l < 4; l++) y[4 * x + l] = (add ? y[4 * x + l] : 0.0f) + v[l * n + x];
    for (int l = 0; l < w % 4; l++) y[4 * q + l] = (add ? y[4 * q + l] : 0.0f) + v[l * n + q];
}

/* As output2: 4x4 output tiles from the 36 planes of M; work holds 16 n. */
static void output4(const float *M, int64_t ld, int64_t col0, float *out, const float *bias, int64_t co,
                    const wino *g, int64_t ty0, int64_t ty1, bool add, float *work) {
    int64_t cs = co * ld, tw = g->tw, n = g->n;
    float *restrict Y = work; /* [4 rows][4 phases][n] */
    for (int64_t o = 0; o < co; o++)
        for (int64_t ty = ty0; ty < ty1; ty++) {
            float b = bias ? bias[o] : 0.0f;
            for (int64_t x0 = 0; x0 < tw; x0 += WL) {
                const float *restrict m = M + o * ld + col0 + (ty - ty0) * tw + x0;
                #pragma omp simd
                for (int x = 0; x < WL; x++) {
                    float s[4][6];
                    for (int j = 0; j < 6; j++) {
                        float m0 = m[j * cs + x], m1 = m[(6 + j) * cs + x], m2 = m[(12 + j) * cs + x];
                        float m3 = m[(18 + j) * cs + x], m4 = m[(24 + j) * cs + x], m5 = m[(30 + j) * cs + x];
                        s[0][j] = m0 + m1 + m2 + m3 + m4;
                        s[1][j] = m1 - m2 + 2.0f * (m3 - m4);
                        s[2][j] = m1 + m2 + 4.0f * (m3 + m4);
                        s[3][j] = m1 - m2 + 8.0f * (m3 - m4) + m5;
                    }
                    for (int k = 0; k < 4; k++) {
                        float *y = Y + 4 * k * n + x0 + x;
                        y[0] = s[k][0] + s[k][1] + s[k][2] + s[k][3] + s[k][4] + b;
                        y[n] = s[k][1] - s[k][2] + 2.0f * (s[k][3] - s[k][4]) + b;
                        y[2 * n] = s[k][1] + s[k][2] + 4.0f * (s[k][3] + s[k][4]) + b;
                        y[3 * n] = s[k][1] - s[k][2] + 8.0f * (s[k][3] - s[k][4]) + s[k][5] + b;
                    }
                }
            }
            for (int k = 0; k < 4 && 4 * ty + k < g->oh; k++)
                put_quads(out + (o * g->oh + 4 * ty + k) * g->ow, Y + 4 * k * n, n, g->ow, add);
        }
}

/* As grad2: A g A^T (6x6) for the 4x4 tiles g of gout, 36 planes. */
static void grad4(const float *gout, float *Gh, int64_t ld, int64_t col0, int64_t co, const wino *g, int64_t ty0,
                  int64_t ty1, float *work) {
    int64_t cs = co * ld, tw = g->tw, n = g->n, len = 4 * n, rows = 4 * (ty1 - ty0);
    float *t = work + rows * len;
    for (int64_t o = 0; o < co; o++) {
        const float *plane = gout + o * g->oh * g->ow;
        for (int64_t r = 0; r < rows; r++) {
            int64_t y = 4 * ty0 + r;
            split_row(y < g->oh ? plane + y * g->ow : NULL, g->ow, 0, 4, n, work + r * len);
        }
        for (int64_t ty = ty0; ty < ty1; ty++) {
            const float *r = work + 4 * (ty - ty0) * len;
            #pragma omp simd
            for (int64_t x = 0; x < len; x++) A6(t + x, len, r[x], r[len + x], r[2 * len + x], r[3 * len + x]);
            float *q = Gh + o * ld + col0 + (ty - ty0) * tw;
            for (int i = 0; i < 6; i++) {
                const float *p0 = t + i * len, *p1 = p0 + n, *p2 = p1 + n, *p3 = p2 + n;
                float *d = q + 6 * i * cs;
                for (int64_t x0 = 0; x0 < tw; x0 += WL) {
                    #pragma omp simd
                    for (int64_t x = x0; x < x0 + WL; x++) A6(d + x, cs, p0[x], p1[x], p2[x], p3[x]);
                }
            }
        }
    }
}

/* ---- dispatch on the tile size ---- */

static void wino_input(const float *img, float *V, int64_t ld, int64_t col0, const wino *g, int64_t ty0,
                       int64_t ty1, float *work) {
    (g->m == 4 ? input4 : input2)(img, V, ld, col0, g, ty0, ty1, work);
}

static void wino_output(const float *M, int64_t ld, int64_t col0, float *out, const float *bias, int64_t co,
                        const wino *g, int64_t ty0, int64_t ty1, bool add, float *work) {
    (g->m == 4 ? output4 : output2)(M, ld, col0, out, bias, co, g, ty0, ty1, add, work);
}

static void wino_grad_tiles(const float *gout, float *Gh, int64_t ld, int64_t col0, int64_t co, const wino *g,
                            int64_t ty0, int64_t ty1, float *work) {
    (g->m == 4 ? grad4 : grad2)(gout, Gh, ld, col0, co, g, ty0, ty1, work);
}

/* The work goes in chunks of about `tiles` tiles (so that the transformed
 * input and output of a chunk stay in L2): nb whole images, or when an
 * image has more tiles, the tile rows [ty0, ty1) of one image. */
typedef struct {
    int64_t per, parts, count, ld; /* images or tile rows per chunk, chunks per image, chunks, columns */
} chunking;

typedef struct {
    int64_t n0, nb, ty0, ty1, T; /* images [n0, n0 + nb), tile rows, tiles per image */
} chunk;

static chunking wino_chunking(const wino *g, int64_t N, int64_t ch) {
    int64_t budget = force_budget ? force_budget : WINO_BUDGET;
    int64_t tiles = budget / (g->planes * ch * (int64_t)sizeof(float)), T = g->th * g->tw;
    chunking c = {0};
    if (tiles >= T) {
        c.per = tiles / T < N ? tiles / T : N;
        c.parts = 1;
        c.count = (N + c.per - 1) / c.per;
        c.ld = wino_ld(g, c.per);
    } else {
        c.per = tiles / g->tw > 1 ? tiles / g->tw : 1;
        c.parts = (g->th + c.per - 1) / c.per;
        c.count = N * c.parts;
        c.ld = c.per * g->tw + WL;
    }
    return c;
}

static chunk wino_chunk(const chunking *c, const wino *g, int64_t N, int64_t k) {
    chunk r = {0};
    if (c->parts == 1) {
        r.n0 = k * c->per;
        r.nb = N - r.n0 < c->per ? N - r.n0 : c->per;
        r.ty1 = g->th;
    } else {
        r.n0 = k / c->parts;
        r.nb = 1;
        r.ty0 = k % c->parts * c->per;
        r.ty1 = r.ty0 + c->per < g->th ? r.ty0 + c->per : g->th;
    }
    r.T = (r.ty1 - r.ty0) * g->tw;
    return r;
}

/* out [N, co, oh, ow] = (or += when add) x [N, c, h, w] convolved with the
 * transformed weights U [16, co, c], plus bias (or NULL). */
static int wino_conv(const float *x, const float *U, const float *bias, float *out, int64_t N, int64_t co,
                     const wino *g, bool add) {
    int64_t ci = g->c;
    chunking cc = wino_chunking(g, N, ci + co);
    int64_t ld = cc.ld;
    int nt = td_conv_threads(cc.count);
    td_conv_scratch sc;
    if (td_conv_scratch_open(&sc, nt, g->planes * (ci + co) * ld + wino_work(g))) return -1;
    #pragma omp parallel for num_threads(nt) if (nt > 1) schedule(static)
    for (int64_t k = 0; k < cc.count; k++) {
        float *V = td_conv_scratch_mine(&sc), *M = V + g->planes * ci * ld, *wk = M + g->planes * co * ld;
        chunk ck = wino_chunk(&cc, g, N, k);
        int64_t used = ck.nb * ck.T;
        for (int64_t r = 0; r < g->planes * co; r++) /* the junk past the tiles reads finite values */
            memset(M + r * ld + used, 0, (size_t)(ld - used) * sizeof(float));
        for (int64_t b = 0; b < ck.nb; b++)
            wino_input(x + (ck.n0 + b) * ci * g->h * g->w, V, ld, b * ck.T, g, ck.ty0, ck.ty1, wk);
        for (int xi = 0; xi < g->planes; xi++)
            td_conv_gemm(false, false, co, used, ci, U + xi * co * ci, ci, V + xi * ci * ld, ld, 0.0f,
                         M + xi * co * ld, ld);
        for (int64_t b = 0; b < ck.nb; b++)
            wino_output(M, ld, b * ck.T, out + (ck.n0 + b) * co * g->oh * g->ow, bias, co, g, ck.ty0, ck.ty1, add,
                        wk);
    }
    td_conv_scratch_close(&sc);
    return 0;
}

int td_wino_forward(const float *x, const float *w, const float *b, float *out, int64_t N, int64_t ci, int64_t h,
                    int64_t wd, int64_t co, int64_t p) {
    wino g = wino_geom(ci, h, wd, p);
    float *U = td_alloc((size_t)(g.planes * co * ci) * sizeof(float));
    if (!U) return -1;
    kernel_transforms(w, U, co, ci, false, g.m == 4 ? G4 : G2, g.m + 2);
    int rc = wino_conv(x, U, b, out, N, co, &g, false);
    td_free(U, (size_t)(g.planes * co * ci) * sizeof(float));
    return rc;
}

int td_wino_weight_grad(const float *x, const float *gout, float *dw, float beta, int64_t N, int64_t ci, int64_t h,
                        int64_t wd, int64_t co, int64_t p) {
    wino g = wino_geom(ci, h, wd, p);
    chunking cc = wino_chunking(&g, N, ci + co);
    int64_t ld = cc.ld;
    int nt = td_conv_threads(cc.count);
    td_conv_scratch sc;
    td_conv_sum sz;
    float *Z = td_alloc((size_t)(g.planes * co * ci) * sizeof(float));
    int rc = Z ? 0 : -1;
    rc |= td_conv_scratch_open(&sc, nt, g.planes * (ci + co) * ld + wino_work(&g));
    rc |= td_conv_sum_open(&sz, Z, g.planes * co * ci, 0.0f, nt);
    #pragma omp parallel for num_threads(nt) if (nt > 1 && rc == 0) schedule(static)
    for (int64_t k = 0; k < cc.count; k++) {
        if (rc) continue;
        float *V = td_conv_scratch_mine(&sc), *Gh = V + g.planes * ci * ld, *wk = Gh + g.planes * co * ld, zb;
        chunk ck = wino_chunk(&cc, &g, N, k);
        for (int64_t b = 0; b < ck.nb; b++) {
            wino_input(x + (ck.n0 + b) * ci * h * wd, V, ld, b * ck.T, &g, ck.ty0, ck.ty1, wk);
            wino_grad_tiles(gout + (ck.n0 + b) * co * g.oh * g.ow, Gh, ld, b * ck.T, co, &g, ck.ty0, ck.ty1, wk);
        }
        float *z = td_conv_sum_slot(&sz, &zb);
        for (int xi = 0; xi < g.planes; xi++)
            td_conv_gemm(false, true, co, ci, ck.nb * ck.T, Gh + xi * co * ld, ld, V + xi * ci * ld, ld, zb,
                         z + xi * co * ci, ci);
    }
    td_conv_sum_close(&sz, rc == 0);
    if (rc == 0) weight_grads(Z, dw, co, ci, beta, g.m == 4 ? G4 : G2, g.m + 2);
    td_conv_scratch_close(&sc);
    if (Z) td_free(Z, (size_t)(g.planes * co * ci) * sizeof(float));
    return rc ? -1 : 0;
}

int td_wino_input_grad(const float *gout, const float *w, float *dx, float beta, int64_t N, int64_t ci, int64_t h,
                       int64_t wd, int64_t co, int64_t p) {
    wino g = wino_geom(co, h + 2 * p - 2, wd + 2 * p - 2, 2 - p);
    float *U = td_alloc((size_t)(g.planes * co * ci) * sizeof(float));
    if (!U) return -1;
    kernel_transforms(w, U, co, ci, true, g.m == 4 ? G4 : G2, g.m + 2);
    int rc = wino_conv(gout, U, NULL, dx, N, ci, &g, beta != 0.0f);
    td_free(U, (size_t)(g.planes * co * ci) * sizeof(float));
    return rc;
}
