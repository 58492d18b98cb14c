/* Fréchet distance between sets of feature vectors: a streaming float64 accumulator of
 * mean and covariance under a protocol header, shard merging, HDF5 storage, and the
 * distance through symmetric eigendecompositions (docs/eval.md). */
#ifndef FL_EVAL_FD_H
#define FL_EVAL_FD_H

#include <stdint.h>

#include <hdf5.h>

#include "core/alloc.h"
#include "core/status.h"
#include "core/tensor.h"

/* Ownership: an fl_fd_stats belongs to whoever created it (fl_fd_stats_new / _load) and
 * is released with fl_fd_stats_free; every array handed in stays the caller's and is only
 * read during the call; pointers returned by the accessors belong to the stats and live
 * until it is freed or next changed. The HDF5 functions hold fl_h5_lock (core/h5io.h)
 * while they run, so they may be called beside the run-file writer thread. */

#define FL_FD_NAME_MAX 64
#define FL_FD_DIM_MAX 16384 /* D x D doubles must stay addressable by LAPACK's 32-bit ints */

/* What the features are and how they were made. Two sets are comparable only when every
 * field agrees: merging, loading against an expected protocol and the distance refuse a
 * difference, naming the field. Strings are NUL-terminated, "" when not recorded. */
typedef struct fl_fd_protocol {
    char extractor[FL_FD_NAME_MAX]; /* feature network and layer, "i3d-400-logits" */
    char resize[FL_FD_NAME_MAX];    /* frame preprocessing, "bilinear-224-noaa", "none" */
    int64_t clip_len;               /* frames per clip (1: per-frame features; 0: unknown) */
    int64_t samples;                /* intended samples per set, e.g. 2048 (0: not fixed) */
    int64_t dim;                    /* feature dimension D, 1..FL_FD_DIM_MAX */
} fl_fd_protocol;

/* Compares two protocols: FL_OK when equal, else FL_E_INVALID with "protocol field
 * 'extractor' differs: <a_name> has "i3d", <b_name> has "videomae"". */
fl_status fl_fd_protocol_check(const fl_fd_protocol *a, const char *a_name, const fl_fd_protocol *b,
                               const char *b_name, fl_error *err);

/* ---- the accumulator ------------------------------------------------------------------
 * Holds the count n, the mean and the co-moment M2 = sum (x - mean)(x - mean)^T in
 * float64, updated a block of rows at a time with Chan et al.'s pairwise formula (block
 * mean and centred block co-moment, then a rank-one correction), so features with a large
 * common offset lose no digits to cancellation. Merging two accumulators uses the same
 * formula, so shards merged equal one pass to round-off. */
typedef struct fl_fd_stats fl_fd_stats;

/* A new empty accumulator for features of protocol p (p->dim in 1..FL_FD_DIM_MAX, names
 * NUL-terminated within FL_FD_NAME_MAX). alloc NULL = default. */
fl_status fl_fd_stats_new(const fl_fd_protocol *p, const fl_allocator *alloc, fl_fd_stats **out,
                          fl_error *err);
void fl_fd_stats_free(fl_fd_stats *s); /* s may be NULL */

/* Adds rows: x is [N, D] (or [D], one row) f32 or f64 on the CPU, any strides. A
 * non-finite value is refused (FL_E_NUMERIC naming row and column) before anything is
 * added, so on error the accumulator is unchanged. */
fl_status fl_fd_stats_add(fl_fd_stats *s, const fl_tensor *x, fl_error *err);
/* The same from n contiguous rows of D doubles / floats. */
fl_status fl_fd_stats_add_f64(fl_fd_stats *s, const double *x, int64_t n, fl_error *err);
fl_status fl_fd_stats_add_f32(fl_fd_stats *s, const float *x, int64_t n, fl_error *err);
/* dst += src (protocols must agree; src unchanged). */
fl_status fl_fd_stats_merge(fl_fd_stats *dst, const fl_fd_stats *src, fl_error *err);

int64_t fl_fd_stats_count(const fl_fd_stats *s);
const fl_fd_protocol *fl_fd_stats_protocol(const fl_fd_stats *s);
const double *fl_fd_stats_mean(const fl_fd_stats *s); /* [D] */
/* The covariance M2 / (n - ddof) into out [D, D] (full, symmetric); ddof 0 or 1, and
 * n > ddof, else FL_E_INVALID. */
fl_status fl_fd_stats_cov(const fl_fd_stats *s, int ddof, double *out, fl_error *err);
/* The co-moment M2 into out [D, D] (full, symmetric). */
void fl_fd_stats_comoment(const fl_fd_stats *s, double *out);

/* ---- HDF5 storage ---------------------------------------------------------------------
 * A group `name` below `loc` (a file or group id) holding
 *   attrs     format = "fifolab.fd_stats", version = 1, extractor, resize (strings),
 *             clip_len, samples, dim, count (int64), cov_ddof = 1
 *   mean      [D] f64
 *   comoment  [D, D] f64, the accumulator's M2 (what _load reads back, bit for bit)
 *   cov       [D, D] f64 = comoment / (count - 1), for readers such as h5py (count >= 2)
 * A group already there under that name is replaced. */
fl_status fl_fd_stats_save(const fl_fd_stats *s, hid_t loc, const char *name, fl_error *err);
/* Reads such a group. Also takes foreign statistics: a group with a `mean` [D] dataset, a
 * `cov` [D, D] dataset and an integer attribute `count` (or `n`); protocol attributes it
 * lacks read as "" / 0. expect (may be NULL): the protocol the stats must have, else
 * FL_E_INVALID naming the field. Messages name the group. */
fl_status fl_fd_stats_load(hid_t loc, const char *name, const fl_fd_protocol *expect,
                           const fl_allocator *alloc, fl_fd_stats **out, fl_error *err);
/* The same by file path: _save_file opens the file read-write, creating it when absent;
 * group paths may be nested ("/stats/real"; missing parents are created). */
fl_status fl_fd_stats_save_file(const fl_fd_stats *s, const char *path, const char *group, fl_error *err);
fl_status fl_fd_stats_load_file(const char *path, const char *group, const fl_fd_protocol *expect,
                                const fl_allocator *alloc, fl_fd_stats **out, fl_error *err);
/* Reads the protocol attributes an HDF5 object may carry (extractor, resize: strings;
 * clip_len, samples: integers), e.g. a raw [N, D] feature dataset; absent ones leave
 * their field of p as it was. FL_E_FORMAT naming `what` and the attribute when one has
 * the wrong type. */
fl_status fl_fd_protocol_read_attrs(hid_t obj, const char *what, fl_fd_protocol *p, fl_error *err);
/* Whether `name` below `loc` is a group written by fl_fd_stats_save (attribute format). */
int fl_fd_stats_is_group(hid_t loc, const char *name);

/* ---- the distance ---------------------------------------------------------------------
 *   FD = |mu1 - mu2|^2 + tr S1 + tr S2 - 2 tr sqrt(S1 S2),
 * with tr sqrt(S1 S2) = tr sqrt(A S2 A), A = S1^(1/2): the symmetric eigendecompositions
 * of S1 and S2 (negative eigenvalues from round-off clamped to 0), then tr sqrt(A S2 A)
 * as the sum of the singular values of A S2^(1/2) (whose squares are the eigenvalues of
 * A S2 A; see fd.c for why not those eigenvalues), never a non-symmetric matrix square
 * root. The result is clamped at 0. */
typedef struct fl_fd_opts {
    int ddof; /* covariance estimator 1 / (n - ddof): 1 (default, unbiased) or 0 */
} fl_fd_opts;

#define FL_FD_WARN_FEW_A 1u   /* set a has fewer than 2 D samples */
#define FL_FD_WARN_FEW_B 2u   /* set b likewise */
#define FL_FD_WARN_SAMPLES 4u /* a count differs from the protocol's `samples` */

typedef struct fl_fd_result {
    double fd;         /* the distance, >= 0 */
    double mean_term;  /* |mu1 - mu2|^2 */
    double trace_term; /* tr S1 + tr S2 - 2 tr sqrt(S1 S2) (before clamping the sum) */
    double tr_sqrt;    /* tr sqrt(S1 S2) */
    int64_t n_a, n_b, dim;
    int ddof;
    unsigned warnings; /* FL_FD_WARN_* bits */
    char warning[384]; /* the warnings in words ("" when none), "; " between them */
} fl_fd_result;

/* opts may be NULL (defaults). Protocols must agree; each set needs n > ddof. */
fl_status fl_fd_distance(const fl_fd_stats *a, const fl_fd_stats *b, const fl_fd_opts *opts, fl_fd_result *r,
                         fl_error *err);
/* The same from explicit Gaussians: means [d], covariances [d, d] (full, symmetric,
 * finite; only the lower triangles are read). n_a, n_b are the sample counts behind
 * them, for the warnings (0: unknown, no warning). alloc NULL = default. */
fl_status fl_fd_gaussian(int64_t d, const double *mu_a, const double *cov_a, int64_t n_a, const double *mu_b,
                         const double *cov_b, int64_t n_b, const fl_allocator *alloc, fl_fd_result *r,
                         fl_error *err);
/* tr sqrt(S1 S2) alone for symmetric PSD S1, S2 [d, d] (lower triangles read). */
fl_status fl_fd_trace_sqrt_product(int64_t d, const double *s1, const double *s2, const fl_allocator *alloc,
                                   double *out, fl_error *err);

#endif
