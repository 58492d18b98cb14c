/* cmocka suite for core/rng: Philox KATs, layout, distributions, address-not-order. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/rng.h"

/* ---- helpers ------------------------------------------------------------------------ */

/* A tiny independent generator for test plumbing (chunk sizes, shuffles, random
 * counters), so the code under test never decides how it is itself exercised. */
static uint64_t splitmix64(uint64_t *s)
{
    uint64_t z = (*s += UINT64_C(0x9E3779B97F4A7C15));
    z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
    return z ^ (z >> 31);
}

static void *xmalloc(size_t bytes)
{
    void *p = malloc(bytes);
    assert_non_null(p);
    return p;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static int popcount32(uint32_t x)
{
    int c = 0;
    while (x) {
        x &= x - 1;
        c++;
    }
    return c;
}

static int hamming4(const uint32_t a[4], const uint32_t b[4])
{
    return popcount32(a[0] ^ b[0]) + popcount32(a[1] ^ b[1]) + popcount32(a[2] ^ b[2]) +
           popcount32(a[3] ^ b[3]);
}

/* Fails with the numbers in the message, so a failing run says by how much. */
static void check_abs_below(const char *what, double value, double bound)
{
    if (!(fabs(value) < bound))
        fail_msg("%s = %.6g, |.| must be < %.6g", what, value, bound);
    print_message("%s = %.3g (bound %.3g)\n", what, value, bound);
}

typedef struct moments {
    double mean, var, skew, exkurt;
} moments;

static moments sample_moments(const double *x, size_t n)
{
    double s = 0;
    for (size_t i = 0; i < n; i++)
        s += x[i];
    double mean = s / (double)n;
    double m2 = 0, m3 = 0, m4 = 0;
    for (size_t i = 0; i < n; i++) {
        double d = x[i] - mean, d2 = d * d;
        m2 += d2;
        m3 += d2 * d;
        m4 += d2 * d2;
    }
    m2 /= (double)n;
    m3 /= (double)n;
    m4 /= (double)n;
    moments m = {mean, m2, m3 / pow(m2, 1.5), m4 / (m2 * m2) - 3.0};
    return m;
}

static double std_normal_cdf(double x)
{
    return 0.5 * erfc(-x / sqrt(2.0));
}

static double uniform_cdf(double x)
{
    return x < 0 ? 0 : x > 1 ? 1 : x;
}

/* Kolmogorov–Smirnov statistic D = sup |F_n - F|; sorts x in place. */
static double ks_statistic(double *x, size_t n, double (*cdf)(double))
{
    qsort(x, n, sizeof *x, cmp_double);
    double d = 0;
    for (size_t i = 0; i < n; i++) {
        double f = cdf(x[i]);
        double lo = f - (double)i / (double)n;
        double hi = (double)(i + 1) / (double)n - f;
        if (lo > d)
            d = lo;
        if (hi > d)
            d = hi;
    }
    return d;
}

/* Asymptotic KS critical value at alpha = 1e-3: sqrt(-ln(alpha/2) / 2) / sqrt(n). */
static double ks_critical(size_t n)
{
    return sqrt(-log(1e-3 / 2.0) / 2.0) / sqrt((double)n);
}

static double correlation(const double *a, const double *b, size_t n)
{
    double ma = 0, mb = 0;
    for (size_t i = 0; i < n; i++) {
        ma += a[i];
        mb += b[i];
    }
    ma /= (double)n;
    mb /= (double)n;
    double sab = 0, saa = 0, sbb = 0;
    for (size_t i = 0; i < n; i++) {
        double da = a[i] - ma, db = b[i] - mb;
        sab += da * db;
        saa += da * da;
        sbb += db * db;
    }
    return sab / sqrt(saa * sbb);
}

static const fl_rng_addr test_addr = {FL_RNG_STREAM_TEST, 7, 3};

/* ---- Philox itself -------------------------------------------------------------------- */

/* Known answers for philox4x32 with 10 rounds, "counter[4] key[2] -> out[4]".
 * Source: the Random123 distribution's tests/kat_vectors, rows "philox4x32 10", as
 * copied verbatim into DEShawResearch/Random123-Boost libs/random/test/test_philox.cpp
 * (commit 916db91ae4c6fd8324ef054a518851321ab41f91, test_kat_philox4x32), and the same
 * three rows in a second verbatim copy of kat_vectors found by the project's code search.
 * Looked up, not recalled. */
static void test_philox_known_answers(void **state)
{
    (void)state;
    static const struct {
        uint32_t ctr[4], key[2], out[4];
    } kat[] = {
        {{0x00000000, 0x00000000, 0x00000000, 0x00000000},
         {0x00000000, 0x00000000},
         {0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}},
        {{0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff},
         {0xffffffff, 0xffffffff},
         {0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd}},
        {{0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344},
         {0xa4093822, 0x299f31d0},
         {0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}},
    };
    for (size_t i = 0; i < sizeof kat / sizeof kat[0]; i++) {
        uint32_t out[4];
        fl_philox4x32_10(kat[i].ctr, kat[i].key, out);
        for (int j = 0; j < 4; j++)
            if (out[j] != kat[i].out[j])
                fail_msg("kat %zu word %d: got %08x, want %08x", i, j, (unsigned)out[j],
                         (unsigned)kat[i].out[j]);
        /* In-place use (out aliasing ctr) is documented as allowed. */
        uint32_t buf[4] = {kat[i].ctr[0], kat[i].ctr[1], kat[i].ctr[2], kat[i].ctr[3]};
        fl_philox4x32_10(buf, kat[i].key, buf);
        assert_memory_equal(buf, kat[i].out, sizeof buf);
    }
}

/* The π-digits vector again, through the public layout: ctr = {block, step, frame,
 * stream}, key = {seed low, seed high}. Pins the layout that run files depend on. */
static void test_block_layout_matches_kat(void **state)
{
    (void)state;
    fl_rng rng;
    fl_rng_init(&rng, UINT64_C(0x299f31d0a4093822));
    assert_int_equal(rng.key[0], 0xa4093822u);
    assert_int_equal(rng.key[1], 0x299f31d0u);
    fl_rng_addr addr = {.stream = 0x03707344, .frame = 0x13198a2e, .step = 0x85a308d3};
    uint32_t out[4];
    fl_rng_block(&rng, addr, 0x243f6a88, out);
    const uint32_t want[4] = {0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1};
    assert_memory_equal(out, want, sizeof want);
}

static void test_init_splits_seed(void **state)
{
    (void)state;
    fl_rng a, b;
    fl_rng_init(&a, 1);
    fl_rng_init(&b, UINT64_C(1) << 32);
    assert_int_equal(a.key[0], 1);
    assert_int_equal(a.key[1], 0);
    assert_int_equal(b.key[0], 0);
    assert_int_equal(b.key[1], 1);
    uint32_t oa[4], ob[4];
    fl_rng_block(&a, test_addr, 0, oa);
    fl_rng_block(&b, test_addr, 0, ob);
    assert_memory_not_equal(oa, ob, sizeof oa);
}

/* Flipping any single bit of any counter field (block, step, frame, stream) or of the
 * 64-bit seed must change the block, and by avalanche: ~64 of 128 bits flip (sd 5.7).
 * [20, 108] is ±7.8 sd, so a correct Philox never fails it, but a field that is ignored
 * (0 bits) or only weakly mixed does. */
static void test_every_field_and_seed_bit_matters(void **state)
{
    (void)state;
    uint64_t s = 12345;
    for (int trial = 0; trial < 4; trial++) {
        uint64_t seed = splitmix64(&s);
        uint64_t r = splitmix64(&s);
        fl_rng_addr base = {(uint32_t)r, (uint32_t)(r >> 32), (uint32_t)splitmix64(&s)};
        uint32_t block = (uint32_t)splitmix64(&s);
        fl_rng rng;
        fl_rng_init(&rng, seed);
        uint32_t ref[4], out[4];
        fl_rng_block(&rng, base, block, ref);
        for (int field = 0; field < 4; field++) {
            for (int bit = 0; bit < 32; bit++) {
                fl_rng_addr a = base;
                uint32_t blk = block, flip = UINT32_C(1) << bit;
                switch (field) {
                case 0: blk ^= flip; break;
                case 1: a.step ^= flip; break;
                case 2: a.frame ^= flip; break;
                default: a.stream ^= flip; break;
                }
                fl_rng_block(&rng, a, blk, out);
                int h = hamming4(ref, out);
                if (h < 20 || h > 108)
                    fail_msg("counter field %d bit %d: %d output bits changed", field, bit, h);
            }
        }
        for (int bit = 0; bit < 64; bit++) {
            fl_rng other;
            fl_rng_init(&other, seed ^ (UINT64_C(1) << bit));
            fl_rng_block(&other, base, block, out);
            int h = hamming4(ref, out);
            if (h < 20 || h > 108)
                fail_msg("seed bit %d: %d output bits changed", bit, h);
        }
    }
}

static void test_stream_names(void **state)
{
    (void)state;
    assert_string_equal(fl_rng_stream_name(FL_RNG_STREAM_FRAME_NOISE), "frame_noise");
    assert_string_equal(fl_rng_stream_name(FL_RNG_STREAM_SAMPLER), "sampler");
    assert_string_equal(fl_rng_stream_name(FL_RNG_STREAM_FORWARD_NOISE), "forward_noise");
    assert_string_equal(fl_rng_stream_name(FL_RNG_STREAM_MODEL), "model");
    assert_string_equal(fl_rng_stream_name(FL_RNG_STREAM_TEST), "test");
    assert_string_equal(fl_rng_stream_name(0), "stream");
    assert_string_equal(fl_rng_stream_name(6), "stream");
    assert_string_equal(fl_rng_stream_name(UINT32_MAX), "stream");
}

/* ---- the normal and uniform maps ------------------------------------------------------ */

/* The Box–Muller map against an independent spelling of the documented formula, the
 * pairing (w0,w1) -> z0,z1 and (w2,w3) -> z2,z3, and the extreme value. */
static void test_box_muller_map(void **state)
{
    (void)state;
    const double two_pi = 8.0 * atan(1.0);
    uint64_t s = 99;
    for (int t = 0; t < 1000; t++) {
        uint64_t a = splitmix64(&s), b = splitmix64(&s);
        uint32_t w[4] = {(uint32_t)a, (uint32_t)(a >> 32), (uint32_t)b, (uint32_t)(b >> 32)};
        double z[4], want[4];
        fl_rng_words_to_normals(w, z);
        for (int p = 0; p < 2; p++) {
            double u0 = ((double)w[2 * p] + 0.5) / 4294967296.0;
            double u1 = ((double)w[2 * p + 1] + 0.5) / 4294967296.0;
            double r = sqrt(-2.0 * log(u0));
            want[2 * p] = r * cos(two_pi * u1);
            want[2 * p + 1] = r * sin(two_pi * u1);
        }
        for (int j = 0; j < 4; j++)
            if (!(fabs(z[j] - want[j]) <= 1e-12 * (1.0 + fabs(want[j]))))
                fail_msg("words %08x %08x %08x %08x lane %d: got %.17g want %.17g",
                         (unsigned)w[0], (unsigned)w[1], (unsigned)w[2], (unsigned)w[3], j,
                         z[j], want[j]);
        /* Pairs are independent of each other's words. */
        uint32_t w2[4] = {w[0], w[1], w[2] ^ 1u, w[3] ^ 0x80000000u};
        double z2[4];
        fl_rng_words_to_normals(w2, z2);
        assert_memory_equal(z2, z, 2 * sizeof z[0]);
        assert_memory_not_equal(z2 + 2, z + 2, 2 * sizeof z[0]);
    }

    /* Radius word 0 gives u0 = 2^-33, the largest radius; angle word 2^30 puts t half a
     * step past pi/2 (sin = 1 in double), angle word 0 half a step past 0 (cos = 1). */
    const uint32_t wmax[4] = {0, 0, 0, UINT32_C(1) << 30};
    double z[4];
    fl_rng_words_to_normals(wmax, z);
    check_abs_below("z0 - FL_RNG_NORMAL_MAX", z[0] - FL_RNG_NORMAL_MAX, 1e-13);
    check_abs_below("z3 - FL_RNG_NORMAL_MAX", z[3] - FL_RNG_NORMAL_MAX, 1e-13);
    check_abs_below("FL_RNG_NORMAL_MAX - sqrt(66 ln 2)",
                    FL_RNG_NORMAL_MAX - sqrt(66.0 * log(2.0)), 1e-13);
    /* The other end: u0 = 1 - 2^-33 must give a tiny positive radius, not 0 or NaN. */
    const uint32_t wmin[4] = {UINT32_MAX, 0, UINT32_MAX, UINT32_MAX};
    fl_rng_words_to_normals(wmin, z);
    assert_true(z[0] > 1e-6 && z[0] < 1e-4);
    assert_true(isfinite(z[2]) && fabs(z[2]) < 1e-4);
}

/* Element e is lane e % 4 of block e / 4, for normals (f64 and f32) and uniforms, at both
 * ends of the element range. */
static void test_element_layout(void **state)
{
    (void)state;
    fl_rng rng;
    fl_rng_init(&rng, 2024);
    const uint64_t top = FL_RNG_ELEMENTS_MAX;
    const uint64_t es[] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 13, 1000003, top - 5, top - 4, top - 1};
    for (size_t i = 0; i < sizeof es / sizeof es[0]; i++) {
        uint64_t e = es[i];
        uint32_t w[4];
        double z[4], d;
        float f, u;
        fl_rng_block(&rng, test_addr, (uint32_t)(e >> 2), w);
        fl_rng_words_to_normals(w, z);
        fl_rng_normal_f64(&rng, test_addr, e, 1, &d);
        fl_rng_normal(&rng, test_addr, e, 1, &f);
        fl_rng_uniform(&rng, test_addr, e, 1, &u);
        double zd = z[e & 3];
        float zf = (float)zd;
        float uw = (float)(w[e & 3] >> 8) * 0x1p-24f;
        assert_memory_equal(&d, &zd, sizeof d);
        assert_memory_equal(&f, &zf, sizeof f);
        assert_memory_equal(&u, &uw, sizeof u);
    }
    /* A run ending exactly at the limit, and an empty run there, are legal. */
    double tail[7];
    fl_rng_normal_f64(&rng, test_addr, top - 7, 7, tail);
    uint32_t w[4];
    double z[4];
    fl_rng_block(&rng, test_addr, UINT32_MAX, w);
    fl_rng_words_to_normals(w, z);
    assert_memory_equal(tail + 3, z, sizeof z);
    fl_rng_normal_f64(&rng, test_addr, top, 0, NULL);
    fl_rng_normal(&rng, test_addr, top, 0, NULL);
    fl_rng_uniform(&rng, test_addr, top, 0, NULL);
}

/* ---- distributions -------------------------------------------------------------------- */

/* 10^6 normals: the first four moments within 5 standard errors of N(0,1)'s (SE of mean
 * 1/sqrt(n), variance sqrt(2/n), skewness sqrt(6/n), excess kurtosis sqrt(24/n)), every
 * value finite and within FL_RNG_NORMAL_MAX, and a KS test against Phi at alpha = 1e-3.
 * The element range starts unaligned so the partial-block paths are in the sample. */
static void test_normal_distribution(void **state)
{
    (void)state;
    const size_t n = 1000000;
    double *x = xmalloc(n * sizeof *x);
    fl_rng rng;
    fl_rng_init(&rng, UINT64_C(0x0123456789abcdef));
    fl_rng_normal_f64(&rng, test_addr, 3, n, x);
    for (size_t i = 0; i < n; i++)
        if (!(isfinite(x[i]) && fabs(x[i]) <= FL_RNG_NORMAL_MAX))
            fail_msg("element %zu = %.17g outside [-max, max]", i + 3, x[i]);
    moments m = sample_moments(x, n);
    double rn = sqrt((double)n);
    check_abs_below("normal mean", m.mean, 5.0 / rn);
    check_abs_below("normal variance - 1", m.var - 1.0, 5.0 * sqrt(2.0) / rn);
    check_abs_below("normal skewness", m.skew, 5.0 * sqrt(6.0) / rn);
    check_abs_below("normal excess kurtosis", m.exkurt, 5.0 * sqrt(24.0) / rn);
    check_abs_below("normal KS D", ks_statistic(x, n, std_normal_cdf), ks_critical(n));
    free(x);
}

/* 10^6 uniforms: in [0,1) on the 2^-24 grid, mean and variance within 5 SE of 1/2 and
 * 1/12 (SE(var) = sqrt((1/80 - 1/144)/n) = sqrt(1/(180 n))), KS at alpha = 1e-3. */
static void test_uniform_distribution(void **state)
{
    (void)state;
    const size_t n = 1000000;
    float *u = xmalloc(n * sizeof *u);
    double *x = xmalloc(n * sizeof *x);
    fl_rng rng;
    fl_rng_init(&rng, 77);
    fl_rng_uniform(&rng, test_addr, 1, n, u);
    for (size_t i = 0; i < n; i++) {
        if (!(u[i] >= 0.0f && u[i] < 1.0f))
            fail_msg("uniform %zu = %.9g outside [0,1)", i, (double)u[i]);
        double g = (double)u[i] * 16777216.0;
        if (g != floor(g))
            fail_msg("uniform %zu = %.9g not on the 2^-24 grid", i, (double)u[i]);
        x[i] = u[i];
    }
    moments m = sample_moments(x, n);
    double rn = sqrt((double)n);
    check_abs_below("uniform mean - 1/2", m.mean - 0.5, 5.0 * sqrt(1.0 / 12.0) / rn);
    check_abs_below("uniform variance - 1/12", m.var - 1.0 / 12.0, 5.0 * sqrt(1.0 / 180.0) / rn);
    check_abs_below("uniform KS D", ks_statistic(x, n, uniform_cdf), ks_critical(n));
    free(x);
    free(u);
}

/* ---- addressing ----------------------------------------------------------------------- */

enum { CHUNK_N = 100000, CHUNK_FIRST = 5 };

typedef struct chunk {
    size_t start, len;
} chunk;

/* Cuts [0, n) into chunks of random sizes 1..1500 and shuffles their order. */
static chunk *random_chunks(size_t n, uint64_t *s, size_t *count)
{
    chunk *c = xmalloc(n * sizeof *c);
    size_t k = 0;
    for (size_t pos = 0; pos < n; k++) {
        size_t len = 1 + (size_t)(splitmix64(s) % 1500);
        if (len > n - pos)
            len = n - pos;
        c[k].start = pos;
        c[k].len = len;
        pos += len;
    }
    for (size_t i = k; i > 1; i--) {
        size_t j = (size_t)(splitmix64(s) % i);
        chunk t = c[i - 1];
        c[i - 1] = c[j];
        c[j] = t;
    }
    *count = k;
    return c;
}

/* 10^5 elements from one call vs. the same range produced in shuffled, unaligned chunks
 * of random sizes: bit-identical for all three fills. Each chunk is generated into its
 * own buffer of exactly len (+1 guard) so an overrun is caught (by the guard, and by ASan
 * in sanitizer builds) rather than hidden under a later chunk. */
static void test_chunking_is_bit_identical(void **state)
{
    (void)state;
    const size_t n = CHUNK_N;
    fl_rng rng;
    fl_rng_init(&rng, 31337);
    double *ref64 = xmalloc(n * sizeof *ref64), *got64 = xmalloc(n * sizeof *got64);
    float *ref32 = xmalloc(n * sizeof *ref32), *got32 = xmalloc(n * sizeof *got32);
    float *refu = xmalloc(n * sizeof *refu), *gotu = xmalloc(n * sizeof *gotu);
    fl_rng_normal_f64(&rng, test_addr, CHUNK_FIRST, n, ref64);
    fl_rng_normal(&rng, test_addr, CHUNK_FIRST, n, ref32);
    fl_rng_uniform(&rng, test_addr, CHUNK_FIRST, n, refu);
    for (size_t i = 0; i < n; i++) {
        got64[i] = NAN;
        got32[i] = NAN;
        gotu[i] = NAN;
    }
    uint64_t s = 4242;
    size_t count;
    chunk *c = random_chunks(n, &s, &count);
    assert_true(count > 100); /* enough chunks that every alignment case occurs */
    for (size_t k = 0; k < count; k++) {
        size_t len = c[k].len;
        uint64_t e = CHUNK_FIRST + (uint64_t)c[k].start;
        double *b64 = xmalloc((len + 1) * sizeof *b64);
        float *b32 = xmalloc((len + 1) * sizeof *b32);
        float *bu = xmalloc((len + 1) * sizeof *bu);
        b64[len] = -123.0;
        b32[len] = -123.0f;
        bu[len] = -123.0f;
        /* Vary the call order between the fills too. */
        if (k & 1) {
            fl_rng_uniform(&rng, test_addr, e, len, bu);
            fl_rng_normal(&rng, test_addr, e, len, b32);
            fl_rng_normal_f64(&rng, test_addr, e, len, b64);
        } else {
            fl_rng_normal_f64(&rng, test_addr, e, len, b64);
            fl_rng_normal(&rng, test_addr, e, len, b32);
            fl_rng_uniform(&rng, test_addr, e, len, bu);
        }
        if (b64[len] != -123.0 || b32[len] != -123.0f || bu[len] != -123.0f)
            fail_msg("chunk at element %llu, len %zu wrote past its end",
                     (unsigned long long)e, len);
        memcpy(got64 + c[k].start, b64, len * sizeof *b64);
        memcpy(got32 + c[k].start, b32, len * sizeof *b32);
        memcpy(gotu + c[k].start, bu, len * sizeof *bu);
        free(bu);
        free(b32);
        free(b64);
    }
    assert_memory_equal(ref64, got64, n * sizeof *ref64);
    assert_memory_equal(ref32, got32, n * sizeof *ref32);
    assert_memory_equal(refu, gotu, n * sizeof *refu);
    free(c);
    free(gotu);
    free(refu);
    free(got32);
    free(ref32);
    free(got64);
    free(ref64);
}

/* Neighbouring addresses (stream, frame, step, seed low word, seed high word) give
 * sequences that are pairwise uncorrelated: |corr| < 5/sqrt(n) for every pair, and no
 * element equal. This is what makes common random numbers across arms safe. */
static void test_addresses_are_independent(void **state)
{
    (void)state;
    enum { NSEQ = 7 };
    const size_t n = 100000;
    const uint64_t seed = 42;
    struct {
        uint64_t seed;
        fl_rng_addr addr;
    } v[NSEQ] = {
        {seed, {FL_RNG_STREAM_FRAME_NOISE, 10, 20}},
        {seed, {FL_RNG_STREAM_SAMPLER, 10, 20}},
        {seed, {FL_RNG_STREAM_FRAME_NOISE, 11, 20}},
        {seed, {FL_RNG_STREAM_FRAME_NOISE, 10, 21}},
        {seed + 1, {FL_RNG_STREAM_FRAME_NOISE, 10, 20}},
        {seed | (UINT64_C(1) << 32), {FL_RNG_STREAM_FRAME_NOISE, 10, 20}},
        /* Frame and step swapped: the fields must not be interchangeable. */
        {seed, {FL_RNG_STREAM_FRAME_NOISE, 20, 10}},
    };
    double *x[NSEQ];
    for (int i = 0; i < NSEQ; i++) {
        fl_rng rng;
        fl_rng_init(&rng, v[i].seed);
        x[i] = xmalloc(n * sizeof *x[i]);
        fl_rng_normal_f64(&rng, v[i].addr, 0, n, x[i]);
    }
    const double bound = 5.0 / sqrt((double)n);
    for (int i = 0; i < NSEQ; i++) {
        for (int j = i + 1; j < NSEQ; j++) {
            double r = correlation(x[i], x[j], n);
            if (!(fabs(r) < bound))
                fail_msg("sequences %d and %d: corr %.6g, bound %.6g", i, j, r, bound);
            size_t same = 0;
            for (size_t e = 0; e < n; e++)
                same += x[i][e] == x[j][e];
            if (same != 0)
                fail_msg("sequences %d and %d share %zu equal elements", i, j, same);
        }
    }
    /* Same address and seed, fresh fl_rng: the same numbers (nothing advances). */
    fl_rng again;
    fl_rng_init(&again, seed);
    double *y = xmalloc(n * sizeof *y);
    fl_rng_normal_f64(&again, v[0].addr, 0, n, y);
    fl_rng_normal_f64(&again, v[0].addr, 0, n, y);
    assert_memory_equal(y, x[0], n * sizeof *y);
    free(y);
    for (int i = 0; i < NSEQ; i++)
        free(x[i]);
}

/* f32 normals are exactly the f64 normals rounded to float. */
static void test_f32_is_rounded_f64(void **state)
{
    (void)state;
    const size_t n = 100003;
    fl_rng rng;
    fl_rng_init(&rng, 8);
    double *d = xmalloc(n * sizeof *d);
    float *f = xmalloc(n * sizeof *f), *want = xmalloc(n * sizeof *want);
    fl_rng_normal_f64(&rng, test_addr, 2, n, d);
    fl_rng_normal(&rng, test_addr, 2, n, f);
    for (size_t i = 0; i < n; i++)
        want[i] = (float)d[i];
    assert_memory_equal(f, want, n * sizeof *f);
    free(want);
    free(f);
    free(d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_philox_known_answers),
        cmocka_unit_test(test_block_layout_matches_kat),
        cmocka_unit_test(test_init_splits_seed),
        cmocka_unit_test(test_every_field_and_seed_bit_matters),
        cmocka_unit_test(test_stream_names),
        cmocka_unit_test(test_box_muller_map),
        cmocka_unit_test(test_element_layout),
        cmocka_unit_test(test_normal_distribution),
        cmocka_unit_test(test_uniform_distribution),
        cmocka_unit_test(test_chunking_is_bit_identical),
        cmocka_unit_test(test_addresses_are_independent),
        cmocka_unit_test(test_f32_is_rounded_f64),
    };
    return cmocka_run_group_tests_name("rng", tests, NULL, NULL);
}
