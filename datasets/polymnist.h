/* polymnist.h - builds PolyMNIST (Sutter, Daunhawer and Vogt, "Generalized
 * multimodal ELBO", ICLR 2021) and class-matched pairs of two IDX sets, on
 * top of libtide. Used by the tide-polymnist tool and by
 * tests/c/test_polymnist.c. */
#ifndef TIDE_POLYMNIST_H
#define TIDE_POLYMNIST_H
#include "tide.h"

/* xoshiro256** seeded through splitmix64: the same numbers on every
 * platform and build, whatever tide's own generator does. */
typedef struct {
    uint64_t s[4];
} pm_rng;
void pm_seed(pm_rng *r, uint64_t seed, uint64_t stream);
uint64_t pm_next(pm_rng *r);
uint64_t pm_below(pm_rng *r, uint64_t n); /* uniform in [0, n), n >= 1 */
void pm_shuffle(pm_rng *r, int64_t *a, int64_t n);

/* The message of the last failed pm_ call (tide's own errors included). */
const char *pm_error(void);

#define PM_MAX_MODALITIES 8
#define PM_NSPLITS 3
extern const char *const pm_split_names[PM_NSPLITS]; /* "train", "val", "test" */

typedef struct {
    td_tensor *images;  /* [n, M, 3, h, w], whole numbers 0..255 */
    td_tensor *labels;  /* [n] */
    td_tensor *sources; /* [n, M]: index of each modality's digit in the source set */
    td_tensor *crops;   /* [n, M, 2]: top and left of each modality's crop in its background */
} pm_split;

/* PolyMNIST: images [N,h,w] or [N,1,h,w] (0..255), labels [N] (whole numbers
 * 0..255); m backgrounds [3,H,W] in [0,1] with H >= h, W >= w; sizes: tuples
 * of train, val and test (their sum <= N). The source images are split
 * first (a seeded permutation), then tuples are made inside each split:
 * for every class and modality a random permutation of that class's images,
 * repaired so that the m digits of a tuple are m different images. Modality
 * k of a tuple is a random h x w crop of background k with the colours
 * inverted (255 - c) where the digit is (value / 255 > 0.5).
 * Returns 0, or -1 with pm_error() set. */
int pm_build(const td_tensor *images, const td_tensor *labels, int m, td_tensor *const *backgrounds,
             const int64_t sizes[PM_NSPLITS], uint64_t seed, pm_split out[PM_NSPLITS]);
void pm_split_free(pm_split *s);
/* images and labels as U8, sources and crops as I32. */
int pm_save(const char *path, const pm_split *s, const char *metadata_json);

typedef struct {
    td_tensor *a, *b;   /* [n,1,ha,wa] and [n,1,hb,wb], 0..255 */
    td_tensor *labels;  /* [n] */
    td_tensor *sources; /* [n, 2]: index in set a, index in set b */
} pm_pairs;

/* Pairs of set a and set b with the same class index. Set a is split by
 * sizes as above; set b is split in the same proportions, so no image of b
 * appears in two splits either; within a split and class, the images of b
 * are drawn without replacement. */
int pm_build_pairs(const td_tensor *a_images, const td_tensor *a_labels, const td_tensor *b_images,
                   const td_tensor *b_labels, const int64_t sizes[PM_NSPLITS], uint64_t seed, pm_pairs out[PM_NSPLITS]);
void pm_pairs_free(pm_pairs *p);
int pm_save_pairs(const char *path, const pm_pairs *p, const char *metadata_json);

#endif
