/* `fifolab fd`: the Fréchet distance (or, with --mmd, the unbiased kernel distance)
 * between two sets of feature vectors stored in HDF5 files (eval/fd.h, eval/mmd.h). */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hdf5.h>

#include "core/cli.h"
#include "core/h5io.h"
#include "eval/fd.h"
#include "eval/mmd.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: fifolab fd [options] A.h5:/dataset B.h5:/dataset\n"
               "\n"
               "Frechet distance between two sets of feature vectors, in float64:\n"
               "  |mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2)), covariances 1/(N - ddof),\n"
               "the square root through symmetric eigendecompositions. Each input is an [N, D]\n"
               "float32/float64 dataset, or a group of FD statistics written by fifolab\n"
               "(mean, comoment/cov, count) or by anyone (mean, cov, attribute count).\n"
               "Optional attributes extractor, resize, clip_len, samples must agree.\n"
               "\n"
               "options:\n"
               "  --mmd             the unbiased MMD^2 with KID's kernel (x.y/D + 1)^3 instead\n"
               "                    (needs raw feature datasets; unbiased at any N)\n"
               "  --subsets K       MMD over K random subsets: mean and std (default 0: whole sets)\n"
               "  --subset-size M   samples per subset (default min(N_A, N_B, 1000))\n"
               "  --seed S          subset draw seed (default 0)\n"
               "  --ddof 0|1        FD covariance estimator 1/(N - ddof) (default 1)\n"
               "  -h, --help        show this help\n"
               "\n"
               "Prints the sample counts and the distance; warns when a set has fewer than 2 D\n"
               "samples (FD is then biased upward and unstable). Exit status: 0 done, 1 a\n"
               "file or dataset could not be used, 2 bad usage.\n");
}

/* One input: file + object, opened. */
typedef struct source {
    const char *spec; /* as given, for messages */
    char *file;       /* owned copy of the file part */
    const char *obj;  /* points into file's buffer after the separator */
    hid_t f, ds;
    int is_stats;
    int64_t n, d;
    size_t elem; /* 4 or 8 for raw datasets */
    fl_fd_protocol proto;
} source;

/* "file:/path" split at the last ":/" (paths inside files start with '/'), else at the
 * last ':'. 0 ok, -1 malformed. */
static int split_spec(const char *spec, source *s)
{
    size_t len = strlen(spec);
    s->file = malloc(len + 2);
    if (!s->file)
        return -1;
    memcpy(s->file, spec, len + 1);
    char *sep = NULL;
    for (char *p = s->file; (p = strstr(p, ":/")) != NULL; p++)
        sep = p;
    if (!sep)
        sep = strrchr(s->file, ':');
    if (!sep || sep == s->file || sep[1] == '\0')
        return -1;
    *sep = '\0';
    s->obj = sep + 1;
    return 0;
}

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
        if (strcmp(buf, "/") != 0 && H5Lexists(loc, buf, H5P_DEFAULT) <= 0)
            return 0;
        buf[i] = c;
    }
    return 1;
}

static void source_close(source *s)
{
    if (s->ds >= 0)
        H5Dclose(s->ds);
    if (s->f >= 0)
        H5Fclose(s->f);
    free(s->file);
    s->ds = s->f = -1;
    s->file = NULL;
}

/* Opens and checks one input; on failure prints one line naming it and returns 1. */
static int source_open(source *s)
{
    s->f = H5Fopen(s->file, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (s->f < 0) {
        fprintf(stderr, "fifolab fd: %s: cannot open (missing, unreadable or not HDF5)\n", s->file);
        return 1;
    }
    if (!path_exists(s->f, s->obj)) {
        fprintf(stderr, "fifolab fd: %s: no such dataset or group\n", s->spec);
        return 1;
    }
    memset(&s->proto, 0, sizeof s->proto);
    if (fl_fd_stats_is_group(s->f, s->obj)) {
        s->is_stats = 1;
        return 0;
    }
    s->ds = H5Dopen2(s->f, s->obj, H5P_DEFAULT);
    if (s->ds < 0) {
        fprintf(stderr, "fifolab fd: %s: neither a dataset nor a group of FD statistics\n", s->spec);
        return 1;
    }
    hid_t t = H5Dget_type(s->ds), sp = H5Dget_space(s->ds);
    int rank = sp >= 0 ? H5Sget_simple_extent_ndims(sp) : -1;
    hsize_t dims[2] = { 0, 0 };
    int cls = t >= 0 ? (int)H5Tget_class(t) : -1;
    s->elem = t >= 0 ? H5Tget_size(t) : 0;
    if (rank == 2)
        H5Sget_simple_extent_dims(sp, dims, NULL);
    if (t >= 0)
        H5Tclose(t);
    if (sp >= 0)
        H5Sclose(sp);
    if (cls != H5T_FLOAT || (s->elem != 4 && s->elem != 8)) {
        fprintf(stderr, "fifolab fd: %s: expected float32 or float64 values\n", s->spec);
        return 1;
    }
    if (rank != 2) {
        fprintf(stderr, "fifolab fd: %s: expected a 2-D [N, D] dataset, got rank %d\n", s->spec, rank);
        return 1;
    }
    s->n = (int64_t)dims[0];
    s->d = (int64_t)dims[1];
    if (s->d < 1 || s->d > FL_FD_DIM_MAX) {
        fprintf(stderr, "fifolab fd: %s: feature dimension %" PRId64 " is outside [1, %d]\n", s->spec, s->d,
                FL_FD_DIM_MAX);
        return 1;
    }
    fl_error err;
    fl_error_clear(&err);
    if (fl_fd_protocol_read_attrs(s->ds, s->spec, &s->proto, &err)) {
        fprintf(stderr, "fifolab fd: %s\n", fl_error_msg(&err));
        return 1;
    }
    s->proto.dim = s->d;
    return 0;
}

/* Rows [r0, r0 + nr) of a raw dataset as doubles (HDF5 converts float32). */
static int read_rows(source *s, int64_t r0, int64_t nr, double *out)
{
    hsize_t start[2] = { (hsize_t)r0, 0 }, count[2] = { (hsize_t)nr, (hsize_t)s->d };
    hid_t fs = H5Dget_space(s->ds), ms = H5Screate_simple(2, count, NULL);
    int rc = -1;
    if (fs >= 0 && ms >= 0 && H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, NULL, count, NULL) >= 0 &&
        H5Dread(s->ds, H5T_NATIVE_DOUBLE, ms, fs, H5P_DEFAULT, out) >= 0)
        rc = 0;
    if (ms >= 0)
        H5Sclose(ms);
    if (fs >= 0)
        H5Sclose(fs);
    if (rc)
        fprintf(stderr, "fifolab fd: %s: reading rows %" PRId64 "..%" PRId64 " failed\n", s->spec, r0,
                r0 + nr - 1);
    return rc;
}

/* The FD statistics of an input: loaded, or accumulated from the dataset in row blocks
 * of about 32 MiB so any N fits in memory. */
static int source_stats(source *s, fl_fd_stats **out)
{
    fl_error err;
    fl_error_clear(&err);
    if (s->is_stats) {
        if (fl_fd_stats_load(s->f, s->obj, NULL, NULL, out, &err)) {
            fprintf(stderr, "fifolab fd: %s: %s\n", s->file, fl_error_msg(&err));
            return 1;
        }
        s->n = fl_fd_stats_count(*out);
        s->d = fl_fd_stats_protocol(*out)->dim;
        s->proto = *fl_fd_stats_protocol(*out);
        return 0;
    }
    if (fl_fd_stats_new(&s->proto, NULL, out, &err)) {
        fprintf(stderr, "fifolab fd: %s: %s\n", s->spec, fl_error_msg(&err));
        return 1;
    }
    int64_t block = (INT64_C(1) << 22) / s->d;
    if (block < 1)
        block = 1;
    double *buf = malloc((size_t)block * (size_t)s->d * sizeof(double));
    if (!buf) {
        fprintf(stderr, "fifolab fd: %s: out of memory\n", s->spec);
        return 1;
    }
    int rc = 0;
    for (int64_t r0 = 0; r0 < s->n && !rc; r0 += block) {
        int64_t nr = s->n - r0 < block ? s->n - r0 : block;
        if (read_rows(s, r0, nr, buf))
            rc = 1;
        else if (fl_fd_stats_add_f64(*out, buf, nr, &err)) {
            fprintf(stderr, "fifolab fd: %s: %s (row numbers from %" PRId64 ")\n", s->spec,
                    fl_error_msg(&err), r0);
            rc = 1;
        }
    }
    free(buf);
    return rc;
}

static void describe(const char *label, const source *s)
{
    if (s->is_stats)
        printf("%-6s %s  %" PRId64 " samples, D = %" PRId64 " (FD statistics)\n", label, s->spec, s->n, s->d);
    else
        printf("%-6s %s  %" PRId64 " x %" PRId64 " float%d\n", label, s->spec, s->n, s->d, (int)s->elem * 8);
}

static int run_fd(source *a, source *b, int ddof)
{
    fl_fd_stats *sa = NULL, *sb = NULL;
    int rc = 1;
    if (source_stats(a, &sa) || source_stats(b, &sb))
        goto out;
    if (a->d != b->d) {
        fprintf(stderr, "fifolab fd: dimensions differ: %s has D = %" PRId64 ", %s has D = %" PRId64 "\n",
                a->spec, a->d, b->spec, b->d);
        goto out;
    }
    fl_fd_opts o = { ddof };
    fl_fd_result r;
    fl_error err;
    fl_error_clear(&err);
    if (fl_fd_distance(sa, sb, &o, &r, &err)) {
        fprintf(stderr, "fifolab fd: %s vs %s: %s\n", a->spec, b->spec, fl_error_msg(&err));
        goto out;
    }
    describe("a", a);
    describe("b", b);
    printf("fd     %.10g\n", r.fd);
    printf("  mean term   %.10g\n", r.mean_term);
    printf("  trace term  %.10g  (tr sqrt(S_a S_b) = %.10g; covariances 1/(N - %d))\n", r.trace_term,
           r.tr_sqrt, r.ddof);
    if (r.warnings)
        fprintf(stderr, "fifolab fd: warning: %s\n", r.warning);
    rc = 0;
out:
    fl_fd_stats_free(sa);
    fl_fd_stats_free(sb);
    return rc;
}

static int run_mmd(source *a, source *b, const fl_mmd_opts *o)
{
    source *s[2] = { a, b };
    for (int i = 0; i < 2; i++)
        if (s[i]->is_stats) {
            fprintf(stderr, "fifolab fd: %s: --mmd needs feature vectors, this holds FD statistics\n",
                    s[i]->spec);
            return 1;
        }
    if (a->d != b->d) {
        fprintf(stderr, "fifolab fd: dimensions differ: %s has D = %" PRId64 ", %s has D = %" PRId64 "\n",
                a->spec, a->d, b->spec, b->d);
        return 1;
    }
    fl_error err;
    fl_error_clear(&err);
    if (fl_fd_protocol_check(&a->proto, a->spec, &b->proto, b->spec, &err)) {
        fprintf(stderr, "fifolab fd: %s\n", fl_error_msg(&err));
        return 1;
    }
    double *x[2] = { NULL, NULL };
    int rc = 1;
    for (int i = 0; i < 2; i++) {
        x[i] = malloc((size_t)(s[i]->n ? s[i]->n : 1) * (size_t)s[i]->d * sizeof(double));
        if (!x[i]) {
            fprintf(stderr, "fifolab fd: %s: out of memory for %" PRId64 " x %" PRId64 "\n", s[i]->spec,
                    s[i]->n, s[i]->d);
            goto out;
        }
        if (s[i]->n > 0 && read_rows(s[i], 0, s[i]->n, x[i]))
            goto out;
    }
    fl_mmd_result r;
    if (fl_mmd(x[0], a->n, x[1], b->n, a->d, o, NULL, &r, &err)) {
        fprintf(stderr, "fifolab fd: %s vs %s: %s\n", a->spec, b->spec, fl_error_msg(&err));
        goto out;
    }
    describe("a", a);
    describe("b", b);
    if (r.subsets)
        printf("mmd2   %.10g  (std %.4g over %" PRId64 " subsets of %" PRId64 ")\n", r.mmd2, r.std, r.subsets,
               r.subset_size);
    else
        printf("mmd2   %.10g  (unbiased, whole sets)\n", r.mmd2);
    rc = 0;
out:
    free(x[0]);
    free(x[1]);
    return rc;
}

int fl_cmd_fd(int argc, char **argv)
{
    const char *pos[2] = { NULL, NULL };
    int npos = 0, mmd = 0;
    int64_t ddof = 1, seed = 0;
    fl_mmd_opts mo = { 0, 0, 0 };
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--mmd"))
            mmd = 1;
        else if (!strcmp(a, "--subsets") || !strcmp(a, "--subset-size") || !strcmp(a, "--seed") ||
                 !strcmp(a, "--ddof")) {
            const char *v = i + 1 < argc ? argv[++i] : NULL;
            long long x;
            if (fl_cli_int("fd", a, v, 0, LLONG_MAX, &x))
                return 2;
            if (!strcmp(a, "--subsets"))
                mo.subsets = x;
            else if (!strcmp(a, "--subset-size"))
                mo.subset_size = x;
            else if (!strcmp(a, "--seed"))
                seed = x;
            else if (x > 1) {
                fprintf(stderr, "fifolab fd: --ddof: expected 0 or 1, got %lld\n", x);
                return 2;
            } else
                ddof = x;
        } else if (a[0] == '-' && a[1] != '\0') {
            fprintf(stderr, "fifolab fd: unknown option '%s' (see fifolab fd --help)\n", a);
            return 2;
        } else if (npos < 2)
            pos[npos++] = a;
        else {
            fprintf(stderr, "fifolab fd: unexpected argument '%s'\n", a);
            return 2;
        }
    }
    if (npos != 2) {
        usage(stderr);
        return 2;
    }
    mo.seed = (uint64_t)seed;
    source s[2];
    memset(s, 0, sizeof s);
    for (int i = 0; i < 2; i++) {
        s[i].spec = pos[i];
        s[i].f = s[i].ds = -1;
    }
    for (int i = 0; i < 2; i++)
        if (split_spec(pos[i], &s[i])) {
            fprintf(stderr, "fifolab fd: '%s': expected FILE:/DATASET\n", pos[i]);
            source_close(&s[0]);
            source_close(&s[1]);
            return 2;
        }
    /* fifolab's one HDF5 lock (it also keeps HDF5's own error stack printing off: our
     * errors are one line naming the input). */
    fl_h5_lock();
    int rc = source_open(&s[0]) || source_open(&s[1]) ? 1
             : mmd                                    ? run_mmd(&s[0], &s[1], &mo)
                                                      : run_fd(&s[0], &s[1], (int)ddof);
    source_close(&s[0]);
    source_close(&s[1]);
    fl_h5_unlock();
    fflush(stdout);
    return rc;
}
