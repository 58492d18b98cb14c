/* Unbiased MMD^2 with the cubic polynomial kernel (KID/KVD), whole-set or over subsets;
 * Gram blocks through BLAS, kernel sums in double in a fixed order (see eval/mmd.h). */
#include "eval/mmd.h"

#include <inttypes.h>
#include <math.h>
#include <string.h>

#include <cblas.h>

/* Rows per Gram block: a 256 x 256 block of doubles is 512 KiB, and the dgemm behind it
 * is large enough to run at BLAS speed. */
#define MMD_BLOCK 256

typedef struct mmd_work {
    int64_t d;
    double *a, *b, *g; /* [MMD_BLOCK, d] x 2, [MMD_BLOCK, MMD_BLOCK] */
} mmd_work;

static void gather(const double *src, int64_t d, const int64_t *idx, int64_t first, int64_t count,
                   double *dst)
{
    for (int64_t i = 0; i < count; i++)
        memcpy(dst + i * d, src + (idx ? idx[first + i] : first + i) * d, (size_t)d * sizeof(double));
}

static double kernel(double dot, double inv_d)
{
    double t = dot * inv_d + 1.0;
    return t * t * t;
}

/* sum over i in P, j in Q of k(p_i, q_j); with same = 1 (P and Q the same list) the
 * diagonal is left out and each off-diagonal block is computed once and doubled. */
static double kernel_sum(mmd_work *w, const double *p, const int64_t *ip, int64_t np, const double *q,
                         const int64_t *iq, int64_t nq, int same)
{
    int64_t d = w->d;
    double inv_d = 1.0 / (double)d, total = 0.0;
    for (int64_t r0 = 0; r0 < np; r0 += MMD_BLOCK) {
        int64_t nr = np - r0 < MMD_BLOCK ? np - r0 : MMD_BLOCK;
        gather(p, d, ip, r0, nr, w->a);
        for (int64_t c0 = same ? r0 : 0; c0 < nq; c0 += MMD_BLOCK) {
            int64_t nc = nq - c0 < MMD_BLOCK ? nq - c0 : MMD_BLOCK;
            const double *bq = w->a;
            if (!(same && c0 == r0)) {
                gather(q, d, iq, c0, nc, w->b);
                bq = w->b;
            }
            cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)nr, (int)nc, (int)d, 1.0, w->a, (int)d,
                        bq, (int)d, 0.0, w->g, MMD_BLOCK);
            double s = 0.0;
            for (int64_t i = 0; i < nr; i++)
                for (int64_t j = 0; j < nc; j++)
                    if (!(same && c0 == r0 && i == j))
                        s += kernel(w->g[i * MMD_BLOCK + j], inv_d);
            total += (same && c0 != r0) ? 2.0 * s : s;
        }
    }
    return total;
}

static double estimate(mmd_work *w, const double *x, const int64_t *ix, int64_t m, const double *y,
                       const int64_t *iy, int64_t n)
{
    double kxx = kernel_sum(w, x, ix, m, x, ix, m, 1);
    double kyy = kernel_sum(w, y, iy, n, y, iy, n, 1);
    double kxy = kernel_sum(w, x, ix, m, y, iy, n, 0);
    double dm = (double)m, dn = (double)n;
    return kxx / (dm * (dm - 1.0)) + kyy / (dn * (dn - 1.0)) - 2.0 * kxy / (dm * dn);
}

static uint64_t splitmix64(uint64_t *s)
{
    uint64_t z = (*s += UINT64_C(0x9E3779B97F4A7C15));
    z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
    return z ^ (z >> 31);
}

/* The first k entries of idx become a uniform draw without replacement from 0..n-1
 * (partial Fisher-Yates), from a generator keyed by (seed, subset, set) only, so a
 * subset never depends on the ones drawn before it. Bias of the modulo is below 2^-40
 * for any n a feature set can have. */
static void draw(int64_t *idx, int64_t n, int64_t k, uint64_t seed, int64_t subset, int set)
{
    uint64_t s = seed ^ (UINT64_C(0xD1B54A32D192ED03) * (uint64_t)(2 * subset + set + 1));
    for (int64_t i = 0; i < n; i++)
        idx[i] = i;
    for (int64_t i = 0; i < k; i++) {
        int64_t j = i + (int64_t)(splitmix64(&s) % (uint64_t)(n - i));
        int64_t t = idx[i];
        idx[i] = idx[j];
        idx[j] = t;
    }
}

static fl_status check_set(const double *v, int64_t n, int64_t d, const char *name, fl_error *err)
{
    if (n < 2)
        return fl_error_set(err, FL_E_INVALID,
                            "mmd: set %s has %" PRId64 " samples; the unbiased estimator needs at least 2",
                            name, n);
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < d; j++)
            if (!isfinite(v[i * d + j]))
                return fl_error_set(err, FL_E_NUMERIC,
                                    "mmd: set %s, row %" PRId64 ", column %" PRId64 " is not finite", name, i,
                                    j);
    return FL_OK;
}

fl_status fl_mmd(const double *x, int64_t n_x, const double *y, int64_t n_y, int64_t d,
                 const fl_mmd_opts *opts, const fl_allocator *alloc, fl_mmd_result *r, fl_error *err)
{
    memset(r, 0, sizeof *r);
    r->mmd2 = r->std = NAN;
    fl_mmd_opts o = { 0, 0, 0 };
    if (opts)
        o = *opts;
    if (d < 1 || d > INT32_MAX / MMD_BLOCK)
        return fl_error_set(err, FL_E_RANGE, "mmd: dimension must be in [1, %d], got %" PRId64,
                            INT32_MAX / MMD_BLOCK, d);
    fl_status st;
    if ((st = check_set(x, n_x, d, "a", err)) || (st = check_set(y, n_y, d, "b", err)))
        return st;
    if (o.subsets < 0)
        return fl_error_set(err, FL_E_INVALID, "mmd: subsets must be >= 0, got %" PRId64, o.subsets);
    int64_t m = n_x < n_y ? n_x : n_y;
    if (o.subsets > 0) {
        if (o.subset_size == 0)
            o.subset_size = m < 1000 ? m : 1000;
        if (o.subset_size < 2 || o.subset_size > m)
            return fl_error_set(err, FL_E_RANGE,
                                "mmd: subset_size must be in [2, %" PRId64
                                "] (the smaller set), got %" PRId64,
                                m, o.subset_size);
    }
    mmd_work w = { d, NULL, NULL, NULL };
    size_t rows = (size_t)MMD_BLOCK * (size_t)d * sizeof(double);
    size_t gram = (size_t)MMD_BLOCK * MMD_BLOCK * sizeof(double);
    size_t nidx = o.subsets > 0 ? (size_t)(n_x > n_y ? n_x : n_y) : 0;
    w.a = fl_alloc(alloc, rows);
    w.b = fl_alloc(alloc, rows);
    w.g = fl_alloc(alloc, gram);
    int64_t *ix = nidx ? fl_alloc(alloc, nidx * sizeof(int64_t)) : NULL;
    int64_t *iy = nidx ? fl_alloc(alloc, nidx * sizeof(int64_t)) : NULL;
    if (!w.a || !w.b || !w.g || (nidx && (!ix || !iy))) {
        st = fl_error_set(err, FL_E_NOMEM, "mmd: out of memory for d = %" PRId64, d);
        goto out;
    }
    r->n_x = n_x;
    r->n_y = n_y;
    r->dim = d;
    if (o.subsets == 0) {
        r->mmd2 = estimate(&w, x, NULL, n_x, y, NULL, n_y);
        r->std = 0.0;
    } else {
        /* Two passes over the subset values would need them stored; Welford keeps one. */
        double mean = 0.0, m2 = 0.0;
        for (int64_t s = 0; s < o.subsets; s++) {
            draw(ix, n_x, o.subset_size, o.seed, s, 0);
            draw(iy, n_y, o.subset_size, o.seed, s, 1);
            double v = estimate(&w, x, ix, o.subset_size, y, iy, o.subset_size);
            double delta = v - mean;
            mean += delta / (double)(s + 1);
            m2 += delta * (v - mean);
        }
        r->mmd2 = mean;
        r->std = sqrt(m2 / (double)o.subsets);
        r->subsets = o.subsets;
        r->subset_size = o.subset_size;
    }
    st = FL_OK;
out:
    fl_free(alloc, w.a, rows);
    fl_free(alloc, w.b, rows);
    fl_free(alloc, w.g, gram);
    if (nidx) {
        fl_free(alloc, ix, nidx * sizeof(int64_t));
        fl_free(alloc, iy, nidx * sizeof(int64_t));
    }
    return st;
}
