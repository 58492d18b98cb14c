/* Fréchet distance: the float64 mean/co-moment accumulator, its HDF5 storage and the
 * distance through two symmetric eigendecompositions (see eval/fd.h, docs/eval.md). */
#include "eval/fd.h"

#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <cblas.h>
#include <lapacke.h>

#include "core/h5io.h"

/* Rows per update: big enough that dsyrk runs at BLAS speed, small enough that the
 * scratch block stays a few MiB for D in the thousands. */
#define FD_BLOCK 512

#define FD_FORMAT "fifolab.fd_stats"
#define FD_VERSION 1

struct fl_fd_stats {
    const fl_allocator *alloc;
    fl_fd_protocol proto;
    int64_t n;
    double *mean; /* [D] */
    double *m2;   /* [D, D] row-major; only the lower triangle is kept up to date */
    double *blk;  /* [FD_BLOCK, D] + 2 D scratch for add, allocated on first use */
};

static size_t dsq(int64_t d) { return (size_t)d * (size_t)d; }

/* ---- protocol ---------------------------------------------------------------------- */

static int name_ok(const char *s) { return memchr(s, '\0', FL_FD_NAME_MAX) != NULL; }

fl_status fl_fd_protocol_check(const fl_fd_protocol *a, const char *a_name, const fl_fd_protocol *b,
                               const char *b_name, fl_error *err)
{
    if (strcmp(a->extractor, b->extractor) != 0)
        return fl_error_set(err, FL_E_INVALID,
                            "protocol field 'extractor' differs: %s has \"%s\", %s has \"%s\"", a_name,
                            a->extractor, b_name, b->extractor);
    if (strcmp(a->resize, b->resize) != 0)
        return fl_error_set(err, FL_E_INVALID,
                            "protocol field 'resize' differs: %s has \"%s\", %s has \"%s\"", a_name,
                            a->resize, b_name, b->resize);
    const struct {
        const char *field;
        int64_t va, vb;
    } ints[] = { { "clip_len", a->clip_len, b->clip_len },
                 { "samples", a->samples, b->samples },
                 { "dim", a->dim, b->dim } };
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++)
        if (ints[i].va != ints[i].vb)
            return fl_error_set(err, FL_E_INVALID,
                                "protocol field '%s' differs: %s has %" PRId64 ", %s has %" PRId64,
                                ints[i].field, a_name, ints[i].va, b_name, ints[i].vb);
    return FL_OK;
}

static fl_status protocol_valid(const fl_fd_protocol *p, fl_error *err)
{
    if (!name_ok(p->extractor) || !name_ok(p->resize))
        return fl_error_set(err, FL_E_INVALID,
                            "fd protocol: extractor and resize must be strings of "
                            "at most %d bytes",
                            FL_FD_NAME_MAX - 1);
    if (p->dim < 1 || p->dim > FL_FD_DIM_MAX)
        return fl_error_set(err, FL_E_RANGE, "fd protocol: dim must be in [1, %d], got %" PRId64,
                            FL_FD_DIM_MAX, p->dim);
    if (p->clip_len < 0 || p->samples < 0)
        return fl_error_set(err, FL_E_RANGE,
                            "fd protocol: clip_len and samples must be >= 0, got %" PRId64 " and %" PRId64,
                            p->clip_len, p->samples);
    return FL_OK;
}

/* ---- accumulator ------------------------------------------------------------------- */

fl_status fl_fd_stats_new(const fl_fd_protocol *p, const fl_allocator *alloc, fl_fd_stats **out,
                          fl_error *err)
{
    *out = NULL;
    fl_status st = protocol_valid(p, err);
    if (st)
        return st;
    fl_fd_stats *s = fl_calloc(alloc, 1, sizeof *s);
    if (!s)
        return fl_error_set(err, FL_E_NOMEM, "fd stats: out of memory");
    s->alloc = alloc;
    s->proto = *p;
    s->mean = fl_calloc(alloc, (size_t)p->dim, sizeof(double));
    s->m2 = fl_calloc(alloc, dsq(p->dim), sizeof(double));
    if (!s->mean || !s->m2) {
        fl_fd_stats_free(s);
        return fl_error_set(err, FL_E_NOMEM, "fd stats: out of memory for D = %" PRId64, p->dim);
    }
    *out = s;
    return FL_OK;
}

void fl_fd_stats_free(fl_fd_stats *s)
{
    if (!s)
        return;
    size_t d = (size_t)s->proto.dim;
    fl_free(s->alloc, s->mean, d * sizeof(double));
    fl_free(s->alloc, s->m2, d * d * sizeof(double));
    fl_free(s->alloc, s->blk, (FD_BLOCK + 2) * d * sizeof(double));
    fl_free(s->alloc, s, sizeof *s);
}

int64_t fl_fd_stats_count(const fl_fd_stats *s) { return s->n; }
const fl_fd_protocol *fl_fd_stats_protocol(const fl_fd_stats *s) { return &s->proto; }
const double *fl_fd_stats_mean(const fl_fd_stats *s) { return s->mean; }

/* out = the full symmetric matrix whose lower triangle is m (row-major), times scale. */
static void full_from_lower(int64_t d, const double *m, double scale, double *out)
{
    for (int64_t i = 0; i < d; i++)
        for (int64_t j = 0; j <= i; j++) {
            double v = m[i * d + j] * scale;
            out[i * d + j] = v;
            out[j * d + i] = v;
        }
}

void fl_fd_stats_comoment(const fl_fd_stats *s, double *out)
{
    full_from_lower(s->proto.dim, s->m2, 1.0, out);
}

fl_status fl_fd_stats_cov(const fl_fd_stats *s, int ddof, double *out, fl_error *err)
{
    if (ddof != 0 && ddof != 1)
        return fl_error_set(err, FL_E_INVALID, "fd stats cov: ddof must be 0 or 1, got %d", ddof);
    if (s->n <= ddof)
        return fl_error_set(err, FL_E_INVALID,
                            "fd stats cov: %" PRId64 " samples, a covariance with ddof %d needs at least %d",
                            s->n, ddof, ddof + 1);
    full_from_lower(s->proto.dim, s->m2, 1.0 / (double)(s->n - ddof), out);
    return FL_OK;
}

/* Folds a group of nb samples with mean mb and co-moment cb (lower triangle, or NULL when
 * the caller has already added it to s->m2) into s: Chan, Golub & LeVeque's pairwise update
 *   M2 = M2_a + M2_b + delta delta^T na nb / n,  mean = mean_a + delta nb / n. */
static void fold(fl_fd_stats *s, int64_t nb, const double *mb, const double *cb, double *delta)
{
    int64_t d = s->proto.dim, na = s->n, n = na + nb;
    if (cb)
        for (int64_t i = 0; i < d; i++)
            for (int64_t j = 0; j <= i; j++)
                s->m2[i * d + j] += cb[i * d + j];
    for (int64_t j = 0; j < d; j++)
        delta[j] = mb[j] - s->mean[j];
    if (na > 0)
        cblas_dsyr(CblasRowMajor, CblasLower, (int)d, (double)na * (double)nb / (double)n, delta, 1, s->m2,
                   (int)d);
    for (int64_t j = 0; j < d; j++)
        s->mean[j] = na > 0 ? s->mean[j] + delta[j] * ((double)nb / (double)n) : mb[j];
    s->n = n;
}

/* Element (i, j) of a [N, D] / [D] CPU view as double. */
typedef struct rows_view {
    const void *data;
    int f32;
    int64_t n, d, s0, s1;
} rows_view;

static double rv_get(const rows_view *v, int64_t i, int64_t j)
{
    int64_t o = i * v->s0 + j * v->s1;
    return v->f32 ? (double)((const float *)v->data)[o] : ((const double *)v->data)[o];
}

static fl_status add_rows(fl_fd_stats *s, const rows_view *v, fl_error *err)
{
    int64_t d = s->proto.dim;
    /* Check everything first, so a bad row leaves the accumulator as it was. */
    for (int64_t i = 0; i < v->n; i++)
        for (int64_t j = 0; j < d; j++)
            if (!isfinite(rv_get(v, i, j)))
                return fl_error_set(err, FL_E_NUMERIC,
                                    "fd stats add: row %" PRId64 ", column %" PRId64 " is not finite (%g)", i,
                                    j, rv_get(v, i, j));
    if (v->n == 0)
        return FL_OK;
    if (!s->blk) {
        s->blk = fl_alloc(s->alloc, (FD_BLOCK + 2) * (size_t)d * sizeof(double));
        if (!s->blk)
            return fl_error_set(err, FL_E_NOMEM, "fd stats add: out of memory for a block of %d x %" PRId64,
                                FD_BLOCK, d);
    }
    double *y = s->blk, *mb = y + (size_t)FD_BLOCK * (size_t)d, *delta = mb + d;
    for (int64_t r0 = 0; r0 < v->n; r0 += FD_BLOCK) {
        int64_t nb = v->n - r0 < FD_BLOCK ? v->n - r0 : FD_BLOCK;
        for (int64_t j = 0; j < d; j++)
            mb[j] = 0.0;
        for (int64_t i = 0; i < nb; i++)
            for (int64_t j = 0; j < d; j++) {
                double x = rv_get(v, r0 + i, j);
                y[i * d + j] = x;
                mb[j] += x;
            }
        for (int64_t j = 0; j < d; j++)
            mb[j] /= (double)nb;
        for (int64_t i = 0; i < nb; i++)
            for (int64_t j = 0; j < d; j++)
                y[i * d + j] -= mb[j];
        /* Centred block co-moment straight into M2's lower triangle, then the correction. */
        cblas_dsyrk(CblasRowMajor, CblasLower, CblasTrans, (int)d, (int)nb, 1.0, y, (int)d, 1.0, s->m2,
                    (int)d);
        fold(s, nb, mb, NULL, delta);
    }
    return FL_OK;
}

fl_status fl_fd_stats_add(fl_fd_stats *s, const fl_tensor *x, fl_error *err)
{
    char buf[64];
    if (fl_tensor_device(x).kind != FL_DEVICE_CPU || (x->dtype != FL_F32 && x->dtype != FL_F64) ||
        (x->ndim != 1 && x->ndim != 2))
        return fl_error_set(err, x->dtype != FL_F32 && x->dtype != FL_F64 ? FL_E_DTYPE : FL_E_SHAPE,
                            "fd stats add: expected [N, %" PRId64 "] or [%" PRId64
                            "] f32/f64 on the cpu, got %s",
                            s->proto.dim, s->proto.dim, fl_tensor_describe(x, buf, sizeof buf));
    int64_t dcol = x->shape[x->ndim - 1];
    if (dcol != s->proto.dim)
        return fl_error_set(err, FL_E_SHAPE, "fd stats add: expected %" PRId64 " features per row, got %s",
                            s->proto.dim, fl_tensor_describe(x, buf, sizeof buf));
    rows_view v = { fl_tensor_data(x),
                    x->dtype == FL_F32,
                    x->ndim == 2 ? x->shape[0] : 1,
                    dcol,
                    x->ndim == 2 ? x->stride[0] : 0,
                    x->stride[x->ndim - 1] };
    return add_rows(s, &v, err);
}

fl_status fl_fd_stats_add_f64(fl_fd_stats *s, const double *x, int64_t n, fl_error *err)
{
    if (n < 0)
        return fl_error_set(err, FL_E_INVALID, "fd stats add: row count %" PRId64 " < 0", n);
    rows_view v = { x, 0, n, s->proto.dim, s->proto.dim, 1 };
    return add_rows(s, &v, err);
}

fl_status fl_fd_stats_add_f32(fl_fd_stats *s, const float *x, int64_t n, fl_error *err)
{
    if (n < 0)
        return fl_error_set(err, FL_E_INVALID, "fd stats add: row count %" PRId64 " < 0", n);
    rows_view v = { x, 1, n, s->proto.dim, s->proto.dim, 1 };
    return add_rows(s, &v, err);
}

fl_status fl_fd_stats_merge(fl_fd_stats *dst, const fl_fd_stats *src, fl_error *err)
{
    fl_status st = fl_fd_protocol_check(&dst->proto, "the target", &src->proto, "the merged stats", err);
    if (st)
        return fl_error_prefix(err, "fd stats merge");
    if (src->n == 0)
        return FL_OK;
    int64_t d = dst->proto.dim;
    double *delta = fl_alloc(dst->alloc, (size_t)d * sizeof(double));
    if (!delta)
        return fl_error_set(err, FL_E_NOMEM, "fd stats merge: out of memory");
    fold(dst, src->n, src->mean, src->m2, delta);
    fl_free(dst->alloc, delta, (size_t)d * sizeof(double));
    return FL_OK;
}

/* ---- the distance ------------------------------------------------------------------ */

static int all_finite(const double *x, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!isfinite(x[i]))
            return 0;
    return 1;
}

/* Eigenvalues (ascending, into w) of the symmetric d x d matrix a, full storage. With
 * `vectors`, a is overwritten by the eigenvectors: row k of the row-major array is the
 * eigenvector of w[k] (LAPACK's column k in column-major order). Workspace comes from
 * the allocator through the _work entry point, which allocates nothing itself. */
static fl_status sym_eig(int64_t d, double *a, double *w, int vectors, const fl_allocator *al,
                         const char *what, fl_error *err)
{
    lapack_int n = (lapack_int)d, iq = 0;
    double wq = 0.0;
    char jobz = vectors ? 'V' : 'N';
    lapack_int info = LAPACKE_dsyevd_work(LAPACK_COL_MAJOR, jobz, 'L', n, a, n, w, &wq, -1, &iq, -1);
    if (info != 0)
        return fl_error_set(err, FL_E_NUMERIC, "%s: eigendecomposition workspace query failed (info %d)",
                            what, (int)info);
    /* LAPACK's documented minima, in case a query answers less. */
    size_t lwork = (size_t)wq, liwork = (size_t)iq;
    size_t lmin = vectors ? 1 + 6 * (size_t)d + 2 * dsq(d) : 2 * (size_t)d + 1;
    size_t imin = vectors ? 3 + 5 * (size_t)d : 1;
    if (lwork < lmin)
        lwork = lmin;
    if (liwork < imin)
        liwork = imin;
    double *work = fl_alloc(al, lwork * sizeof(double));
    lapack_int *iwork = fl_alloc(al, liwork * sizeof(lapack_int));
    fl_status st = FL_OK;
    if (!work || !iwork)
        st = fl_error_set(err, FL_E_NOMEM, "%s: out of memory for the eigensolver workspace", what);
    else {
        info = LAPACKE_dsyevd_work(LAPACK_COL_MAJOR, jobz, 'L', n, a, n, w, work, (lapack_int)lwork, iwork,
                                   (lapack_int)liwork);
        if (info != 0)
            st = fl_error_set(err, FL_E_NUMERIC, "%s: the eigensolver did not converge (info %d)", what,
                              (int)info);
    }
    fl_free(al, work, lwork * sizeof(double));
    fl_free(al, iwork, liwork * sizeof(lapack_int));
    return st;
}

/* Singular values (descending, into sv) of the d x d matrix g, overwritten. */
static fl_status sing_vals(int64_t d, double *g, double *sv, const fl_allocator *al, fl_error *err)
{
    lapack_int n = (lapack_int)d;
    double wq = 0.0;
    size_t liw = 8 * (size_t)d;
    lapack_int *iwork = fl_alloc(al, liw * sizeof(lapack_int));
    if (!iwork)
        return fl_error_set(err, FL_E_NOMEM, "fd: out of memory for the SVD workspace");
    lapack_int info =
        LAPACKE_dgesdd_work(LAPACK_COL_MAJOR, 'N', n, n, g, n, sv, NULL, 1, NULL, 1, &wq, -1, iwork);
    size_t lwork = (size_t)wq, lmin = 10 * (size_t)d; /* LAPACK: 3 n + max(n, 7 n) */
    if (lwork < lmin)
        lwork = lmin;
    double *work = info == 0 ? fl_alloc(al, lwork * sizeof(double)) : NULL;
    fl_status st = FL_OK;
    if (info != 0)
        st = fl_error_set(err, FL_E_NUMERIC, "fd: SVD workspace query failed (info %d)", (int)info);
    else if (!work)
        st = fl_error_set(err, FL_E_NOMEM, "fd: out of memory for the SVD workspace");
    else if ((info = LAPACKE_dgesdd_work(LAPACK_COL_MAJOR, 'N', n, n, g, n, sv, NULL, 1, NULL, 1, work,
                                         (lapack_int)lwork, iwork)) != 0)
        st = fl_error_set(err, FL_E_NUMERIC, "fd: the SVD did not converge (info %d)", (int)info);
    fl_free(al, work, lwork * sizeof(double));
    fl_free(al, iwork, liw * sizeof(lapack_int));
    return st;
}

/* tr sqrt(S1 S2) for full symmetric PSD s1, s2. With S1 = V1 L1 V1^T, S2 = V2 L2 V2^T
 * (eigh, round-off negatives clamped to 0) and A = S1^(1/2):
 *   A S2 A = (A S2^(1/2)) (A S2^(1/2))^T,  A S2^(1/2) = V1 G V2^T,  G = L1^(1/2) V1^T V2 L2^(1/2),
 * so the eigenvalues of the symmetric A S2 A are the squared singular values of G, and
 * tr sqrt(A S2 A) is their plain sum. Taking them from G instead of from the eigenvalues
 * of A S2 A avoids squaring its condition number: an eigenvalue mu of A S2 A comes with
 * an absolute error of eps |A S2 A|, so sqrt(mu) with eps |A S2 A| / (2 sqrt(mu)); a
 * singular value of G comes with eps |G|. Measured (tests/test_fd.c, docs/eval.md): on
 * covariances with condition numbers to 1e12 the eigenvalue route was 4e-10 off a
 * long-double reference, this one 9e-11; on D = 400 I3D-like features 3e-11 against
 * 1e-13; a rank-one pair 5e-8 against exact. Never a non-symmetric matrix square root. */
static fl_status trace_sqrt_full(int64_t d, const double *s1, const double *s2, const fl_allocator *al,
                                 double *out, fl_error *err)
{
    size_t dd = dsq(d);
    double *e1 = fl_alloc(al, dd * sizeof(double));
    double *e2 = fl_alloc(al, dd * sizeof(double));
    double *g = fl_alloc(al, dd * sizeof(double));
    double *w1 = fl_alloc(al, (size_t)d * sizeof(double));
    double *w2 = fl_alloc(al, (size_t)d * sizeof(double));
    fl_status st = FL_OK;
    if (!e1 || !e2 || !g || !w1 || !w2) {
        st = fl_error_set(err, FL_E_NOMEM, "fd: out of memory for %" PRId64 " x %" PRId64 " matrices", d, d);
        goto out;
    }
    memcpy(e1, s1, dd * sizeof(double));
    memcpy(e2, s2, dd * sizeof(double));
    if ((st = sym_eig(d, e1, w1, 1, al, "fd: sqrt of the first covariance", err)) ||
        (st = sym_eig(d, e2, w2, 1, al, "fd: sqrt of the second covariance", err)))
        goto out;
    /* g = diag(sqrt l1) E1^T E2 diag(sqrt l2) (rows of e1, e2 are the eigenvectors) */
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)d, (int)d, (int)d, 1.0, e1, (int)d, e2, (int)d,
                0.0, g, (int)d);
    for (int64_t i = 0; i < d; i++)
        for (int64_t j = 0; j < d; j++)
            g[i * d + j] *= (w1[i] > 0.0 ? sqrt(w1[i]) : 0.0) * (w2[j] > 0.0 ? sqrt(w2[j]) : 0.0);
    if ((st = sing_vals(d, g, w1, al, err)))
        goto out;
    double tr = 0.0;
    for (int64_t k = d - 1; k >= 0; k--) /* small ones first */
        tr += w1[k];
    *out = tr;
out:
    fl_free(al, e1, dd * sizeof(double));
    fl_free(al, e2, dd * sizeof(double));
    fl_free(al, g, dd * sizeof(double));
    fl_free(al, w1, (size_t)d * sizeof(double));
    fl_free(al, w2, (size_t)d * sizeof(double));
    return st;
}

fl_status fl_fd_trace_sqrt_product(int64_t d, const double *s1, const double *s2, const fl_allocator *alloc,
                                   double *out, fl_error *err)
{
    if (d < 1 || d > FL_FD_DIM_MAX)
        return fl_error_set(err, FL_E_RANGE, "fd: dimension must be in [1, %d], got %" PRId64, FL_FD_DIM_MAX,
                            d);
    size_t dd = dsq(d);
    double *f1 = fl_alloc(alloc, dd * sizeof(double)), *f2 = fl_alloc(alloc, dd * sizeof(double));
    fl_status st = FL_OK;
    if (!f1 || !f2)
        st = fl_error_set(err, FL_E_NOMEM, "fd: out of memory for %" PRId64 " x %" PRId64 " matrices", d, d);
    else {
        full_from_lower(d, s1, 1.0, f1);
        full_from_lower(d, s2, 1.0, f2);
        if (!all_finite(f1, dd) || !all_finite(f2, dd))
            st = fl_error_set(err, FL_E_NUMERIC, "fd: a covariance has a non-finite entry");
        else
            st = trace_sqrt_full(d, f1, f2, alloc, out, err);
    }
    fl_free(alloc, f1, dd * sizeof(double));
    fl_free(alloc, f2, dd * sizeof(double));
    return st;
}

static void add_warning(fl_fd_result *r, unsigned bit, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void add_warning(fl_fd_result *r, unsigned bit, const char *fmt, ...)
{
    r->warnings |= bit;
    size_t len = strlen(r->warning);
    if (len + 3 >= sizeof r->warning)
        return;
    if (len) {
        strcpy(r->warning + len, "; ");
        len += 2;
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->warning + len, sizeof r->warning - len, fmt, ap);
    va_end(ap);
}

static void count_warnings(fl_fd_result *r, int64_t d, int64_t n_a, int64_t n_b)
{
    if (n_a > 0 && n_a < 2 * d)
        add_warning(r, FL_FD_WARN_FEW_A,
                    "a has %" PRId64 " samples for dimension %" PRId64 " (fewer than 2 D = %" PRId64
                    "): its covariance is rank-deficient or noisy and FD is biased upward",
                    n_a, d, 2 * d);
    if (n_b > 0 && n_b < 2 * d)
        add_warning(r, FL_FD_WARN_FEW_B,
                    "b has %" PRId64 " samples for dimension %" PRId64 " (fewer than 2 D = %" PRId64
                    "): its covariance is rank-deficient or noisy and FD is biased upward",
                    n_b, d, 2 * d);
}

/* The distance from full symmetric covariances (already checked finite). */
static fl_status distance_full(int64_t d, const double *mu_a, const double *ca, const double *mu_b,
                               const double *cb, const fl_allocator *al, fl_fd_result *r, fl_error *err)
{
    double tr = 0.0;
    fl_status st = trace_sqrt_full(d, ca, cb, al, &tr, err);
    if (st)
        return st;
    double mt = 0.0, ta = 0.0, tb = 0.0;
    for (int64_t j = 0; j < d; j++) {
        double dm = mu_a[j] - mu_b[j];
        mt += dm * dm;
        ta += ca[j * d + j];
        tb += cb[j * d + j];
    }
    r->mean_term = mt;
    r->tr_sqrt = tr;
    r->trace_term = ta + tb - 2.0 * tr;
    double fd = mt + r->trace_term;
    r->fd = fd > 0.0 ? fd : 0.0; /* round-off may take identical sets a hair below 0 */
    r->dim = d;
    return FL_OK;
}

static void result_clear(fl_fd_result *r)
{
    memset(r, 0, sizeof *r);
    r->fd = r->mean_term = r->trace_term = r->tr_sqrt = NAN;
}

fl_status fl_fd_gaussian(int64_t d, const double *mu_a, const double *cov_a, int64_t n_a, const double *mu_b,
                         const double *cov_b, int64_t n_b, const fl_allocator *alloc, fl_fd_result *r,
                         fl_error *err)
{
    result_clear(r);
    if (d < 1 || d > FL_FD_DIM_MAX)
        return fl_error_set(err, FL_E_RANGE, "fd: dimension must be in [1, %d], got %" PRId64, FL_FD_DIM_MAX,
                            d);
    size_t dd = dsq(d);
    if (!all_finite(mu_a, (size_t)d) || !all_finite(mu_b, (size_t)d))
        return fl_error_set(err, FL_E_NUMERIC, "fd: mean %s has a non-finite entry",
                            all_finite(mu_a, (size_t)d) ? "b" : "a");
    double *fa = fl_alloc(alloc, dd * sizeof(double)), *fb = fl_alloc(alloc, dd * sizeof(double));
    fl_status st = FL_OK;
    if (!fa || !fb)
        st = fl_error_set(err, FL_E_NOMEM, "fd: out of memory for %" PRId64 " x %" PRId64 " matrices", d, d);
    else {
        full_from_lower(d, cov_a, 1.0, fa);
        full_from_lower(d, cov_b, 1.0, fb);
        if (!all_finite(fa, dd) || !all_finite(fb, dd))
            st = fl_error_set(err, FL_E_NUMERIC, "fd: covariance %s has a non-finite entry",
                              all_finite(fa, dd) ? "b" : "a");
        else
            st = distance_full(d, mu_a, fa, mu_b, fb, alloc, r, err);
    }
    fl_free(alloc, fa, dd * sizeof(double));
    fl_free(alloc, fb, dd * sizeof(double));
    if (st)
        return st;
    r->n_a = n_a;
    r->n_b = n_b;
    r->ddof = -1;
    count_warnings(r, d, n_a, n_b);
    return FL_OK;
}

fl_status fl_fd_distance(const fl_fd_stats *a, const fl_fd_stats *b, const fl_fd_opts *opts, fl_fd_result *r,
                         fl_error *err)
{
    result_clear(r);
    int ddof = opts ? opts->ddof : 1;
    if (ddof != 0 && ddof != 1)
        return fl_error_set(err, FL_E_INVALID, "fd: ddof must be 0 or 1, got %d", ddof);
    fl_status st = fl_fd_protocol_check(&a->proto, "a", &b->proto, "b", err);
    if (st)
        return fl_error_prefix(err, "fd");
    if (a->n <= ddof || b->n <= ddof)
        return fl_error_set(err, FL_E_INVALID,
                            "fd: set %s has %" PRId64 " samples; a covariance needs at least %d",
                            a->n <= ddof ? "a" : "b", a->n <= ddof ? a->n : b->n, ddof + 1);
    int64_t d = a->proto.dim;
    size_t dd = dsq(d);
    double *ca = fl_alloc(a->alloc, dd * sizeof(double)), *cb = fl_alloc(a->alloc, dd * sizeof(double));
    if (!ca || !cb)
        st = fl_error_set(err, FL_E_NOMEM, "fd: out of memory for %" PRId64 " x %" PRId64 " matrices", d, d);
    else {
        full_from_lower(d, a->m2, 1.0 / (double)(a->n - ddof), ca);
        full_from_lower(d, b->m2, 1.0 / (double)(b->n - ddof), cb);
        st = distance_full(d, a->mean, ca, b->mean, cb, a->alloc, r, err);
    }
    fl_free(a->alloc, ca, dd * sizeof(double));
    fl_free(a->alloc, cb, dd * sizeof(double));
    if (st)
        return st;
    r->n_a = a->n;
    r->n_b = b->n;
    r->ddof = ddof;
    count_warnings(r, d, a->n, b->n);
    int64_t want = a->proto.samples;
    if (want > 0 && (a->n != want || b->n != want))
        add_warning(r, FL_FD_WARN_SAMPLES,
                    "the protocol fixes %" PRId64 " samples per set, a has %" PRId64 " and b %" PRId64
                    " (FD depends on the sample count)",
                    want, a->n, b->n);
    return FL_OK;
}

/* ---- HDF5 -------------------------------------------------------------------------- */

/* Whether every component of the path exists below loc (H5Lexists needs the parents to
 * exist, so the path is walked one component at a time). */
static int path_exists(hid_t loc, const char *path)
{
    char buf[1024];
    size_t len = strlen(path);
    if (len == 0 || len >= sizeof buf)
        return 0;
    memcpy(buf, path, len + 1);
    for (size_t i = 1; i <= len; i++) {
        if (buf[i] != '/' && buf[i] != '\0')
            continue;
        char c = buf[i];
        buf[i] = '\0';
        htri_t e = -1;
        if (strcmp(buf, "/") != 0) {
            H5E_BEGIN_TRY { e = H5Lexists(loc, buf, H5P_DEFAULT); }
            H5E_END_TRY;
            if (e <= 0)
                return 0;
        }
        buf[i] = c;
    }
    return 1;
}

static herr_t attr_str_write(hid_t obj, const char *name, const char *value)
{
    hid_t t = H5Tcopy(H5T_C_S1), sp = H5Screate(H5S_SCALAR), a = -1;
    herr_t rc = -1;
    if (t >= 0 && sp >= 0 && H5Tset_size(t, H5T_VARIABLE) >= 0 && H5Tset_cset(t, H5T_CSET_UTF8) >= 0 &&
        (a = H5Acreate2(obj, name, t, sp, H5P_DEFAULT, H5P_DEFAULT)) >= 0)
        rc = H5Awrite(a, t, &value);
    if (a >= 0)
        H5Aclose(a);
    if (sp >= 0)
        H5Sclose(sp);
    if (t >= 0)
        H5Tclose(t);
    return rc;
}

static herr_t attr_i64_write(hid_t obj, const char *name, int64_t value)
{
    hid_t sp = H5Screate(H5S_SCALAR), a = -1;
    herr_t rc = -1;
    if (sp >= 0 && (a = H5Acreate2(obj, name, H5T_STD_I64LE, sp, H5P_DEFAULT, H5P_DEFAULT)) >= 0)
        rc = H5Awrite(a, H5T_NATIVE_INT64, &value);
    if (a >= 0)
        H5Aclose(a);
    if (sp >= 0)
        H5Sclose(sp);
    return rc;
}

static herr_t dset_write(hid_t g, const char *name, int rank, const hsize_t *dims, const double *data)
{
    hid_t sp = H5Screate_simple(rank, dims, NULL), ds = -1;
    herr_t rc = -1;
    if (sp >= 0 && (ds = H5Dcreate2(g, name, H5T_IEEE_F64LE, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT)) >= 0)
        rc = H5Dwrite(ds, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, data);
    if (ds >= 0)
        H5Dclose(ds);
    if (sp >= 0)
        H5Sclose(sp);
    return rc;
}

static fl_status save_group(const fl_fd_stats *s, hid_t loc, const char *name, fl_error *err)
{
    int64_t d = s->proto.dim;
    size_t dd = dsq(d);
    double *buf = fl_alloc(s->alloc, dd * sizeof(double));
    if (!buf)
        return fl_error_set(err, FL_E_NOMEM, "%s: out of memory", name);
    fl_status st = FL_OK;
    hid_t lcpl = -1, g = -1;
    herr_t rc = 0;
    H5E_BEGIN_TRY
    {
        if (path_exists(loc, name) && H5Ldelete(loc, name, H5P_DEFAULT) < 0)
            st = fl_error_set(err, FL_E_IO, "%s: cannot replace the existing object", name);
        if (!st &&
            ((lcpl = H5Pcreate(H5P_LINK_CREATE)) < 0 || H5Pset_create_intermediate_group(lcpl, 1) < 0 ||
             (g = H5Gcreate2(loc, name, lcpl, H5P_DEFAULT, H5P_DEFAULT)) < 0))
            st = fl_error_set(err, FL_E_IO, "%s: cannot create the group", name);
        if (!st) {
            hsize_t d1[1] = { (hsize_t)d }, d2[2] = { (hsize_t)d, (hsize_t)d };
            rc |= attr_str_write(g, "format", FD_FORMAT);
            rc |= attr_i64_write(g, "version", FD_VERSION);
            rc |= attr_str_write(g, "extractor", s->proto.extractor);
            rc |= attr_str_write(g, "resize", s->proto.resize);
            rc |= attr_i64_write(g, "clip_len", s->proto.clip_len);
            rc |= attr_i64_write(g, "samples", s->proto.samples);
            rc |= attr_i64_write(g, "dim", d);
            rc |= attr_i64_write(g, "count", s->n);
            rc |= attr_i64_write(g, "cov_ddof", 1);
            rc |= dset_write(g, "mean", 1, d1, s->mean);
            full_from_lower(d, s->m2, 1.0, buf);
            rc |= dset_write(g, "comoment", 2, d2, buf);
            if (s->n >= 2) {
                full_from_lower(d, s->m2, 1.0 / (double)(s->n - 1), buf);
                rc |= dset_write(g, "cov", 2, d2, buf);
            }
            if (rc < 0)
                st = fl_error_set(err, FL_E_IO, "%s: writing the statistics failed", name);
        }
    }
    H5E_END_TRY;
    if (g >= 0)
        H5Gclose(g);
    if (lcpl >= 0)
        H5Pclose(lcpl);
    fl_free(s->alloc, buf, dd * sizeof(double));
    return st;
}

/* Reads string attribute `name` of obj into out (size cap); 0 ok, 1 absent, -1 error
 * (message in err). Takes fixed-length and variable-length strings (h5py writes the latter). */
static int attr_str_read(hid_t obj, const char *what, const char *name, char *out, size_t cap, fl_error *err)
{
    htri_t e;
    H5E_BEGIN_TRY { e = H5Aexists(obj, name); }
    H5E_END_TRY;
    if (e <= 0)
        return 1;
    int rc = -1;
    hid_t a = -1, ft = -1, mt = -1, sp = -1;
    H5E_BEGIN_TRY
    {
        a = H5Aopen(obj, name, H5P_DEFAULT);
        ft = a >= 0 ? H5Aget_type(a) : -1;
        sp = a >= 0 ? H5Aget_space(a) : -1;
        if (ft < 0 || sp < 0 || H5Tget_class(ft) != H5T_STRING || H5Sget_simple_extent_npoints(sp) != 1)
            fl_error_set(err, FL_E_FORMAT, "%s: attribute '%s' is not a single string", what, name);
        else if (H5Tis_variable_str(ft) > 0) {
            char *v = NULL;
            mt = H5Tcopy(H5T_C_S1);
            if (mt >= 0 && H5Tset_size(mt, H5T_VARIABLE) >= 0 && H5Tset_cset(mt, H5Tget_cset(ft)) >= 0 &&
                H5Aread(a, mt, &v) >= 0) {
                if (v && strlen(v) >= cap)
                    fl_error_set(err, FL_E_FORMAT, "%s: attribute '%s' is longer than %zu bytes", what, name,
                                 cap - 1);
                else {
                    snprintf(out, cap, "%s", v ? v : "");
                    rc = 0;
                }
                H5free_memory(v);
            } else
                fl_error_set(err, FL_E_FORMAT, "%s: cannot read attribute '%s'", what, name);
        } else {
            size_t sz = H5Tget_size(ft);
            char tmp[1024];
            if (sz == 0 || sz >= sizeof tmp)
                fl_error_set(err, FL_E_FORMAT, "%s: attribute '%s' has an unreadable size %zu", what, name,
                             sz);
            else {
                mt = H5Tcopy(ft);
                memset(tmp, 0, sizeof tmp);
                if (mt >= 0 && H5Aread(a, mt, tmp) >= 0) {
                    if (strlen(tmp) >= cap)
                        fl_error_set(err, FL_E_FORMAT, "%s: attribute '%s' is longer than %zu bytes", what,
                                     name, cap - 1);
                    else {
                        snprintf(out, cap, "%s", tmp);
                        rc = 0;
                    }
                } else
                    fl_error_set(err, FL_E_FORMAT, "%s: cannot read attribute '%s'", what, name);
            }
        }
    }
    H5E_END_TRY;
    if (mt >= 0)
        H5Tclose(mt);
    if (ft >= 0)
        H5Tclose(ft);
    if (sp >= 0)
        H5Sclose(sp);
    if (a >= 0)
        H5Aclose(a);
    return rc;
}

/* Integer attribute; 0 ok, 1 absent, -1 error. */
static int attr_i64_read(hid_t obj, const char *what, const char *name, int64_t *out, fl_error *err)
{
    htri_t e;
    H5E_BEGIN_TRY { e = H5Aexists(obj, name); }
    H5E_END_TRY;
    if (e <= 0)
        return 1;
    int rc = -1;
    hid_t a = -1, ft = -1, sp = -1;
    H5E_BEGIN_TRY
    {
        a = H5Aopen(obj, name, H5P_DEFAULT);
        ft = a >= 0 ? H5Aget_type(a) : -1;
        sp = a >= 0 ? H5Aget_space(a) : -1;
        if (ft < 0 || sp < 0 || H5Tget_class(ft) != H5T_INTEGER || H5Sget_simple_extent_npoints(sp) != 1 ||
            H5Aread(a, H5T_NATIVE_INT64, out) < 0)
            fl_error_set(err, FL_E_FORMAT, "%s: attribute '%s' is not a single integer", what, name);
        else
            rc = 0;
    }
    H5E_END_TRY;
    if (ft >= 0)
        H5Tclose(ft);
    if (sp >= 0)
        H5Sclose(sp);
    if (a >= 0)
        H5Aclose(a);
    return rc;
}

/* Reads float dataset `name` of g, which must have the given rank and dims (dims[i] < 0:
 * any, written back), into out (NULL: only check the shape). 0 ok, 1 absent, -1 error. */
static int dset_read(hid_t g, const char *what, const char *name, int rank, int64_t *dims, double *out,
                     fl_error *err)
{
    htri_t e;
    H5E_BEGIN_TRY { e = H5Lexists(g, name, H5P_DEFAULT); }
    H5E_END_TRY;
    if (e <= 0)
        return 1;
    int rc = -1;
    hid_t ds = -1, ft = -1, sp = -1;
    H5E_BEGIN_TRY
    {
        hsize_t got[2] = { 0, 0 };
        ds = H5Dopen2(g, name, H5P_DEFAULT);
        ft = ds >= 0 ? H5Dget_type(ds) : -1;
        sp = ds >= 0 ? H5Dget_space(ds) : -1;
        if (ft < 0 || sp < 0)
            fl_error_set(err, FL_E_FORMAT, "%s: '%s' is not a readable dataset", what, name);
        else if (H5Tget_class(ft) != H5T_FLOAT)
            fl_error_set(err, FL_E_FORMAT, "%s: dataset '%s' is not floating point", what, name);
        else if (H5Sget_simple_extent_ndims(sp) != rank || H5Sget_simple_extent_dims(sp, got, NULL) != rank)
            fl_error_set(err, FL_E_FORMAT, "%s: dataset '%s' should have rank %d", what, name, rank);
        else {
            int shape_ok = 1;
            int64_t dims_want[2] = { dims[0], rank == 2 ? dims[1] : 0 };
            for (int i = 0; i < rank; i++) {
                if (dims[i] >= 0 && (int64_t)got[i] != dims[i])
                    shape_ok = 0;
                dims[i] = (int64_t)got[i];
            }
            if (!shape_ok) {
                char gs[64], ws[64];
                if (rank == 1) {
                    snprintf(gs, sizeof gs, "[%" PRId64 "]", (int64_t)got[0]);
                    snprintf(ws, sizeof ws, "[%" PRId64 "]", dims_want[0]);
                } else {
                    snprintf(gs, sizeof gs, "[%" PRId64 ", %" PRId64 "]", (int64_t)got[0], (int64_t)got[1]);
                    snprintf(ws, sizeof ws, "[%" PRId64 ", %" PRId64 "]", dims_want[0], dims_want[1]);
                }
                fl_error_set(err, FL_E_FORMAT, "%s: dataset '%s' has shape %s, expected %s", what, name, gs,
                             ws);
            } else if (out && H5Dread(ds, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, out) < 0)
                fl_error_set(err, FL_E_IO, "%s: reading dataset '%s' failed", what, name);
            else
                rc = 0;
        }
    }
    H5E_END_TRY;
    if (ft >= 0)
        H5Tclose(ft);
    if (sp >= 0)
        H5Sclose(sp);
    if (ds >= 0)
        H5Dclose(ds);
    return rc;
}

static fl_status read_attrs(hid_t obj, const char *what, fl_fd_protocol *p, fl_error *err)
{
    if (attr_str_read(obj, what, "extractor", p->extractor, sizeof p->extractor, err) < 0 ||
        attr_str_read(obj, what, "resize", p->resize, sizeof p->resize, err) < 0 ||
        attr_i64_read(obj, what, "clip_len", &p->clip_len, err) < 0 ||
        attr_i64_read(obj, what, "samples", &p->samples, err) < 0)
        return FL_E_FORMAT;
    return FL_OK;
}

static int is_group(hid_t loc, const char *name)
{
    if (!path_exists(loc, name))
        return 0;
    hid_t g;
    H5E_BEGIN_TRY { g = H5Gopen2(loc, name, H5P_DEFAULT); }
    H5E_END_TRY;
    if (g < 0)
        return 0;
    char fmt[64] = "";
    fl_error e;
    int ok = attr_str_read(g, name, "format", fmt, sizeof fmt, &e) == 0 && strcmp(fmt, FD_FORMAT) == 0;
    H5Gclose(g);
    return ok;
}

static fl_status load_group(hid_t g, const char *name, const fl_fd_protocol *expect,
                            const fl_allocator *alloc, fl_fd_stats **out, fl_error *err)
{
    fl_fd_protocol p;
    memset(&p, 0, sizeof p);
    char fmt[64] = "";
    int64_t version = FD_VERSION, count = -1, ddof = 1, dim = -1;
    int r;
    if ((r = attr_str_read(g, name, "format", fmt, sizeof fmt, err)) < 0)
        return FL_E_FORMAT;
    if (r == 0 && strcmp(fmt, FD_FORMAT) != 0)
        return fl_error_set(err, FL_E_FORMAT, "%s: attribute format is \"%s\", expected \"%s\"", name, fmt,
                            FD_FORMAT);
    if (attr_i64_read(g, name, "version", &version, err) < 0)
        return FL_E_FORMAT;
    if (version != FD_VERSION)
        return fl_error_set(err, FL_E_FORMAT, "%s: format version %" PRId64 ", this build reads %d", name,
                            version, FD_VERSION);
    if (read_attrs(g, name, &p, err) || attr_i64_read(g, name, "dim", &dim, err) < 0 ||
        attr_i64_read(g, name, "cov_ddof", &ddof, err) < 0)
        return FL_E_FORMAT;
    if ((r = attr_i64_read(g, name, "count", &count, err)) < 0)
        return FL_E_FORMAT;
    if (r == 1 && (r = attr_i64_read(g, name, "n", &count, err)) < 0)
        return FL_E_FORMAT;
    if (r == 1)
        return fl_error_set(err, FL_E_FORMAT, "%s: no integer attribute 'count' (or 'n'): the sample count",
                            name);
    if (count < 0)
        return fl_error_set(err, FL_E_FORMAT, "%s: count %" PRId64 " < 0", name, count);
    if (ddof != 0 && ddof != 1)
        return fl_error_set(err, FL_E_FORMAT, "%s: cov_ddof must be 0 or 1, got %" PRId64, name, ddof);
    int64_t md[1] = { dim };
    if ((r = dset_read(g, name, "mean", 1, md, NULL, err)) < 0)
        return FL_E_FORMAT;
    if (r == 1)
        return fl_error_set(err, FL_E_FORMAT, "%s: no dataset 'mean'", name);
    p.dim = md[0];
    fl_status st = protocol_valid(&p, err);
    if (st)
        return fl_error_prefix(err, "%s", name);
    if (expect && (st = fl_fd_protocol_check(expect, "the expected protocol", &p, name, err)))
        return st;
    fl_fd_stats *s = NULL;
    if ((st = fl_fd_stats_new(&p, alloc, &s, err)))
        return st;
    int64_t d = p.dim;
    size_t dd = dsq(d);
    double *buf = fl_alloc(alloc, dd * sizeof(double));
    int64_t cd[2] = { d, d };
    if (!buf) {
        st = fl_error_set(err, FL_E_NOMEM, "%s: out of memory", name);
        goto fail;
    }
    if (dset_read(g, name, "mean", 1, md, s->mean, err) < 0) {
        st = FL_E_FORMAT;
        goto fail;
    }
    double scale = 1.0;
    const char *src = "comoment";
    if ((r = dset_read(g, name, "comoment", 2, cd, buf, err)) == 1) {
        src = "cov"; /* foreign stats: the co-moment is cov * (count - ddof) */
        scale = count > ddof ? (double)(count - ddof) : 0.0;
        r = dset_read(g, name, "cov", 2, cd, buf, err);
        if (r == 1) {
            st = fl_error_set(err, FL_E_FORMAT, "%s: no dataset 'comoment' or 'cov'", name);
            goto fail;
        }
    }
    if (r < 0) {
        st = FL_E_FORMAT;
        goto fail;
    }
    if (!all_finite(s->mean, (size_t)d) || !all_finite(buf, dd)) {
        st = fl_error_set(err, FL_E_NUMERIC, "%s: non-finite values in 'mean' or '%s'", name, src);
        goto fail;
    }
    for (int64_t i = 0; i < d; i++)
        for (int64_t j = 0; j <= i; j++)
            s->m2[i * d + j] = buf[i * d + j] * scale;
    s->n = count;
    fl_free(alloc, buf, dd * sizeof(double));
    *out = s;
    return FL_OK;
fail:
    fl_free(alloc, buf, dd * sizeof(double));
    fl_fd_stats_free(s);
    return st;
}

static fl_status load_named(hid_t loc, const char *name, const fl_fd_protocol *expect,
                            const fl_allocator *alloc, fl_fd_stats **out, fl_error *err)
{
    *out = NULL;
    if (!path_exists(loc, name))
        return fl_error_set(err, FL_E_FORMAT, "%s: no such group", name);
    hid_t g;
    H5E_BEGIN_TRY { g = H5Gopen2(loc, name, H5P_DEFAULT); }
    H5E_END_TRY;
    if (g < 0)
        return fl_error_set(err, FL_E_FORMAT, "%s: not a group", name);
    fl_status st = load_group(g, name, expect, alloc, out, err);
    H5Gclose(g);
    return st;
}

static fl_status save_file(const fl_fd_stats *s, const char *path, const char *group, fl_error *err)
{
    hid_t f = -1;
    H5E_BEGIN_TRY
    {
        if (H5Fis_hdf5(path) > 0)
            f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
        else
            f = H5Fcreate(path, H5F_ACC_EXCL, H5P_DEFAULT, H5P_DEFAULT);
    }
    H5E_END_TRY;
    if (f < 0)
        return fl_error_set(err, FL_E_IO, "%s: cannot open or create for writing", path);
    fl_status st = save_group(s, f, group, err);
    H5E_BEGIN_TRY
    {
        if (H5Fclose(f) < 0 && !st)
            st = fl_error_set(err, FL_E_IO, "closing failed");
    }
    H5E_END_TRY;
    return st ? fl_error_prefix(err, "%s", path) : FL_OK;
}

static fl_status load_file(const char *path, const char *group, const fl_fd_protocol *expect,
                           const fl_allocator *alloc, fl_fd_stats **out, fl_error *err)
{
    *out = NULL;
    hid_t f;
    H5E_BEGIN_TRY { f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT); }
    H5E_END_TRY;
    if (f < 0)
        return fl_error_set(err, FL_E_IO, "%s: cannot open (missing, unreadable or not HDF5)", path);
    fl_status st = load_named(f, group, expect, alloc, out, err);
    H5Fclose(f);
    return st ? fl_error_prefix(err, "%s", path) : FL_OK;
}

/* ---- the public HDF5 entry points, each under fifolab's HDF5 lock (core/h5io.h) ---- */

fl_status fl_fd_stats_save(const fl_fd_stats *s, hid_t loc, const char *name, fl_error *err)
{
    fl_h5_lock();
    fl_status r = save_group(s, loc, name, err);
    fl_h5_unlock();
    return r;
}

fl_status fl_fd_protocol_read_attrs(hid_t obj, const char *what, fl_fd_protocol *p, fl_error *err)
{
    fl_h5_lock();
    fl_status r = read_attrs(obj, what, p, err);
    fl_h5_unlock();
    return r;
}

int fl_fd_stats_is_group(hid_t loc, const char *name)
{
    fl_h5_lock();
    int r = is_group(loc, name);
    fl_h5_unlock();
    return r;
}

fl_status fl_fd_stats_load(hid_t loc, const char *name, const fl_fd_protocol *expect,
                           const fl_allocator *alloc, fl_fd_stats **out, fl_error *err)
{
    fl_h5_lock();
    fl_status r = load_named(loc, name, expect, alloc, out, err);
    fl_h5_unlock();
    return r;
}

fl_status fl_fd_stats_save_file(const fl_fd_stats *s, const char *path, const char *group, fl_error *err)
{
    fl_h5_lock();
    fl_status r = save_file(s, path, group, err);
    fl_h5_unlock();
    return r;
}

fl_status fl_fd_stats_load_file(const char *path, const char *group, const fl_fd_protocol *expect,
                                const fl_allocator *alloc, fl_fd_stats **out, fl_error *err)
{
    fl_h5_lock();
    fl_status r = load_file(path, group, expect, alloc, out, err);
    fl_h5_unlock();
    return r;
}
