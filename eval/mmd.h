/* Kernel distance between sets of feature vectors: the unbiased MMD^2 estimator with KID's
 * polynomial kernel k(x, y) = (x.y / d + 1)^3, over the whole sets or KID-style as the
 * mean and spread over random subsets (docs/eval.md). */
#ifndef FL_EVAL_MMD_H
#define FL_EVAL_MMD_H

#include <stdint.h>

#include "core/alloc.h"
#include "core/status.h"

/* Ownership: the inputs stay the caller's and are only read; scratch comes from `alloc`
 * (NULL = default) and is released before returning. No state is kept between calls. */

typedef struct fl_mmd_opts {
    int64_t subsets;     /* 0 (default): one estimate over the whole sets; K > 0: K subsets */
    int64_t subset_size; /* samples drawn without replacement from each set per subset;
                            0: min(n_x, n_y, 1000) (KID's usual size) */
    uint64_t seed;       /* which subsets: the draws depend only on (seed, subset index) */
} fl_mmd_opts;

typedef struct fl_mmd_result {
    double mmd2; /* the unbiased MMD^2 (the mean over subsets); may be slightly < 0 */
    double std;  /* standard deviation over the subsets (1/K, as torch-fidelity's KID); 0 for one estimate */
    int64_t n_x, n_y, dim;
    int64_t subsets;     /* 0 for the whole-set estimate */
    int64_t subset_size; /* 0 for the whole-set estimate */
} fl_mmd_result;

/* x [n_x, d] and y [n_y, d] contiguous rows of doubles, n_x, n_y >= 2, all finite. With
 * m = n_x, n = n_y (or the subset size):
 *   MMD^2 = sum_{i != j} k(x_i, x_j) / (m (m - 1)) + sum_{i != j} k(y_i, y_j) / (n (n - 1))
 *           - 2 sum_{i, j} k(x_i, y_j) / (m n),
 * whose expectation is 0 exactly when x and y come from one distribution. opts may be NULL
 * (whole sets). Errors name the set and row at fault. */
fl_status fl_mmd(const double *x, int64_t n_x, const double *y, int64_t n_y, int64_t d,
                 const fl_mmd_opts *opts, const fl_allocator *alloc, fl_mmd_result *r, fl_error *err);

#endif
