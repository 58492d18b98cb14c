/* cmocka suite for core/dtype: dtype table, f16/bf16 conversions (exhaustive), load/store. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <complex.h>
#include <float.h>
#include <math.h>
#include <string.h>

#include "core/dtype.h"

/* gcc's own binary16 (libgcc's soft-float conversions, round to nearest even) is the
 * reference for fl_f32_to_f16; __extension__ keeps -Wpedantic quiet about it in C11. */
__extension__ typedef _Float16 gcc_f16;

/* ---- helpers ------------------------------------------------------------------------ */

static uint64_t splitmix64(uint64_t *s)
{
    uint64_t z = (*s += UINT64_C(0x9E3779B97F4A7C15));
    z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
    return z ^ (z >> 31);
}

static uint32_t f32_bits(float x)
{
    uint32_t u;
    memcpy(&u, &x, 4);
    return u;
}

static float bits_f32(uint32_t u)
{
    float x;
    memcpy(&x, &u, 4);
    return x;
}

static uint16_t ref_f16_bits(float x)
{
    gcc_f16 h = (gcc_f16)x;
    uint16_t u;
    memcpy(&u, &h, 2);
    return u;
}

static float ref_f16_to_f32(uint16_t u)
{
    gcc_f16 h;
    memcpy(&h, &u, 2);
    return (float)h;
}

static int f16_is_nan(uint16_t h) { return (h & 0x7c00u) == 0x7c00u && (h & 0x3ffu); }
static int bf16_is_nan(uint16_t b) { return (b & 0x7f80u) == 0x7f80u && (b & 0x7fu); }

/* Checks fl_f32_to_f16(x) against gcc bit for bit; NaN only for NaN-ness, sign, quietness. */
static void check_f16(float x, const char *what)
{
    uint16_t got = fl_f32_to_f16(x);
    uint32_t xb = f32_bits(x);
    if (isnan(x)) {
        if (!f16_is_nan(got) || (got & 0x200u) == 0 || (got >> 15) != (xb >> 31))
            fail_msg("%s: f32 NaN 0x%08x -> f16 0x%04x, want a quiet NaN of the same sign", what,
                     (unsigned)xb, got);
        return;
    }
    uint16_t want = ref_f16_bits(x);
    if (got != want)
        fail_msg("%s: f32 0x%08x (%.9g) -> f16 0x%04x, gcc says 0x%04x", what, (unsigned)xb,
                 (double)x, got, want);
}

/* Reference f32 -> bf16 written without the add-and-shift trick: the two bf16 values
 * around |x| are compared in double arithmetic (exact here: both neighbours and x have at
 * most 24 significant bits a few binades apart), ties go to the even mantissa. The value
 * above the largest finite bf16 is 2^128, which rounds to infinity. */
static uint16_t ref_bf16_bits(float x)
{
    uint32_t u = f32_bits(x);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    uint32_t mag = u & 0x7fffffffu;
    if (mag == 0x7f800000u)
        return (uint16_t)(sign | 0x7f80u);
    uint16_t lo = (uint16_t)(mag >> 16), hi = (uint16_t)(lo + 1);
    double ax = fabs((double)x);
    double vlo = (double)bits_f32((uint32_t)lo << 16);
    double vhi = hi == 0x7f80u ? ldexp(1.0, 128) : (double)bits_f32((uint32_t)hi << 16);
    double dlo = ax - vlo, dhi = vhi - ax;
    uint16_t r;
    if (dlo < dhi)
        r = lo;
    else if (dhi < dlo)
        r = hi;
    else
        r = (lo & 1u) ? hi : lo;
    return (uint16_t)(sign | r);
}

static void check_bf16(float x, const char *what)
{
    uint16_t got = fl_f32_to_bf16(x);
    uint32_t xb = f32_bits(x);
    if (isnan(x)) {
        if (!bf16_is_nan(got) || (got & 0x40u) == 0 || (got >> 15) != (xb >> 31))
            fail_msg("%s: f32 NaN 0x%08x -> bf16 0x%04x, want a quiet NaN of the same sign", what,
                     (unsigned)xb, got);
        return;
    }
    uint16_t want = ref_bf16_bits(x);
    if (got != want)
        fail_msg("%s: f32 0x%08x (%.9g) -> bf16 0x%04x, reference says 0x%04x", what,
                 (unsigned)xb, (double)x, got, want);
}

/* ---- dtype table ---------------------------------------------------------------------- */

static void test_dtype_sizes_and_names(void **state)
{
    (void)state;
    static const struct {
        fl_dtype t;
        const char *name;
        size_t size;
        int is_float, is_complex;
        fl_dtype real;
    } want[] = {
        { FL_F32, "f32", sizeof(float), 1, 0, FL_F32 },
        { FL_F64, "f64", sizeof(double), 1, 0, FL_F64 },
        { FL_F16, "f16", 2, 1, 0, FL_F16 },
        { FL_BF16, "bf16", 2, 1, 0, FL_BF16 },
        { FL_C64, "c64", sizeof(float _Complex), 0, 1, FL_F32 },
        { FL_C128, "c128", sizeof(double _Complex), 0, 1, FL_F64 },
        { FL_I32, "i32", sizeof(int32_t), 0, 0, FL_I32 },
        { FL_I64, "i64", sizeof(int64_t), 0, 0, FL_I64 },
        { FL_U8, "u8", 1, 0, 0, FL_U8 },
    };
    assert_int_equal(sizeof want / sizeof want[0], FL_DTYPE_COUNT);
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        assert_int_equal(fl_dtype_size(want[i].t), want[i].size);
        assert_string_equal(fl_dtype_name(want[i].t), want[i].name);
        assert_int_equal(!!fl_dtype_is_float(want[i].t), want[i].is_float);
        assert_int_equal(!!fl_dtype_is_complex(want[i].t), want[i].is_complex);
        assert_int_equal(fl_dtype_real_of(want[i].t), want[i].real);
        fl_dtype back = FL_DTYPE_COUNT;
        assert_int_equal(fl_dtype_from_name(want[i].name, &back), 0);
        assert_int_equal(back, want[i].t);
        for (size_t j = 0; j < i; j++)
            assert_string_not_equal(fl_dtype_name(want[i].t), fl_dtype_name(want[j].t));
    }
}

static void test_dtype_invalid(void **state)
{
    (void)state;
    assert_int_equal(fl_dtype_size(FL_DTYPE_COUNT), 0);
    assert_int_equal(fl_dtype_size((fl_dtype)-1), 0);
    assert_int_equal(fl_dtype_size((fl_dtype)1000), 0);
    assert_string_equal(fl_dtype_name(FL_DTYPE_COUNT), "invalid");
    assert_string_equal(fl_dtype_name((fl_dtype)-1), "invalid");
    const char *bad[] = { "", "F32", "f32 ", " f32", "f3", "f322", "float", "invalid", "bf" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        fl_dtype out = FL_C128;
        if (fl_dtype_from_name(bad[i], &out) != -1)
            fail_msg("\"%s\" was accepted as a dtype name", bad[i]);
        assert_int_equal(out, FL_C128); /* untouched */
    }
}

/* ---- f16 ------------------------------------------------------------------------------ */

static void test_f16_roundtrip_exhaustive(void **state)
{
    (void)state;
    for (uint32_t h = 0; h <= 0xffffu; h++) {
        float f = fl_f16_to_f32((uint16_t)h);
        uint16_t back = fl_f32_to_f16(f);
        if (f16_is_nan((uint16_t)h)) {
            if (!isnan(f) || !!signbit(f) != !!(h & 0x8000u))
                fail_msg("f16 NaN 0x%04x widened to %g", (unsigned)h, (double)f);
            if (!f16_is_nan(back) || (back & 0x8000u) != (h & 0x8000u) || !(back & 0x200u))
                fail_msg("f16 NaN 0x%04x came back as 0x%04x", (unsigned)h, back);
            continue;
        }
        /* widening is exact: it agrees with gcc's */
        float want = ref_f16_to_f32((uint16_t)h);
        if (f32_bits(f) != f32_bits(want))
            fail_msg("f16 0x%04x widened to 0x%08x, gcc says 0x%08x", (unsigned)h,
                     (unsigned)f32_bits(f), (unsigned)f32_bits(want));
        if (back != h)
            fail_msg("f16 0x%04x -> %.9g -> 0x%04x", (unsigned)h, (double)f, back);
    }
}

/* Every f16 value, every midpoint between neighbours (a tie: rounds to even), and the
 * f32 values just either side of each midpoint, in both signs. */
static void test_f16_narrowing_values_and_midpoints(void **state)
{
    (void)state;
    for (uint32_t h = 0; h < 0x7c00u; h++) {
        float a = ref_f16_to_f32((uint16_t)h);
        check_f16(a, "f16 value");
        check_f16(-a, "f16 value");
        /* the midpoint to the next f16 up; above 65504 the "next" is 65536 */
        float b = h == 0x7bffu ? 65536.0f : ref_f16_to_f32((uint16_t)(h + 1));
        float mid = (float)(((double)a + (double)b) / 2.0);
        assert_true((double)mid == ((double)a + (double)b) / 2.0); /* exact in f32 */
        float up = nextafterf(mid, INFINITY), down = nextafterf(mid, 0.0f);
        check_f16(mid, "midpoint");
        check_f16(-mid, "midpoint");
        check_f16(up, "above midpoint");
        check_f16(-up, "above midpoint");
        check_f16(down, "below midpoint");
        check_f16(-down, "below midpoint");
        /* ties go to the even neighbour, stated directly as well */
        uint16_t even = (h & 1u) ? (uint16_t)(h + 1) : (uint16_t)h;
        if (fl_f32_to_f16(mid) != even)
            fail_msg("midpoint %.9g above 0x%04x: got 0x%04x, want even 0x%04x", (double)mid,
                     (unsigned)h, fl_f32_to_f16(mid), even);
        if (fl_f32_to_f16(up) != h + 1 || fl_f32_to_f16(down) != h)
            fail_msg("around midpoint %.9g: 0x%04x / 0x%04x", (double)mid, fl_f32_to_f16(up),
                     fl_f32_to_f16(down));
    }
}

static void test_f16_subnormal_range(void **state)
{
    (void)state;
    /* f32 values from below half the smallest f16 subnormal (2^-25) up to the smallest
     * normal (2^-14), 2^14 evenly spaced mantissas per binade, plus random ones */
    uint64_t rng = 99;
    for (int e = -30; e <= -14; e++) {
        for (uint32_t m = 0; m < (1u << 23); m += 1u << 9) {
            float x = ldexpf(1.0f + (float)m / 8388608.0f, e);
            check_f16(x, "subnormal sweep");
            check_f16(-x, "subnormal sweep");
        }
        for (int k = 0; k < 4096; k++) {
            uint32_t m = (uint32_t)(splitmix64(&rng) & 0x7fffffu);
            float x = ldexpf(1.0f + (float)m / 8388608.0f, e);
            check_f16(x, "subnormal random");
        }
    }
    /* f32 subnormals and the exact edges */
    check_f16(bits_f32(1), "smallest f32 subnormal");
    check_f16(bits_f32(0x007fffffu), "largest f32 subnormal");
    check_f16(FLT_MIN, "FLT_MIN");
    assert_int_equal(fl_f32_to_f16(ldexpf(1.0f, -24)), 0x0001);            /* smallest subnormal */
    assert_int_equal(fl_f32_to_f16(ldexpf(1.0f, -25)), 0x0000);            /* tie -> even 0 */
    assert_int_equal(fl_f32_to_f16(nextafterf(ldexpf(1.0f, -25), 1.0f)), 0x0001);
    assert_int_equal(fl_f32_to_f16(-ldexpf(1.0f, -25)), 0x8000);           /* sign kept */
    assert_int_equal(fl_f32_to_f16(ldexpf(3.0f, -25)), 0x0002);            /* 1.5 ulp: tie up */
    assert_int_equal(fl_f32_to_f16(ldexpf(1023.0f, -24)), 0x03ff);         /* largest subnormal */
    assert_int_equal(fl_f32_to_f16(ldexpf(1023.5f, -24)), 0x0400);         /* carries to normal */
    assert_int_equal(fl_f32_to_f16(ldexpf(1.0f, -14)), 0x0400);
}

static void test_f16_specials_and_overflow(void **state)
{
    (void)state;
    assert_int_equal(fl_f32_to_f16(0.0f), 0x0000);
    assert_int_equal(fl_f32_to_f16(-0.0f), 0x8000);
    assert_int_equal(fl_f32_to_f16(INFINITY), 0x7c00);
    assert_int_equal(fl_f32_to_f16(-INFINITY), 0xfc00);
    assert_int_equal(fl_f32_to_f16(65504.0f), 0x7bff);
    assert_int_equal(fl_f32_to_f16(65520.0f), 0x7c00);      /* the overflow threshold: a tie */
    assert_int_equal(fl_f32_to_f16(-65520.0f), 0xfc00);
    assert_int_equal(fl_f32_to_f16(65519.99f), 0x7bff);
    assert_int_equal(fl_f32_to_f16(nextafterf(65520.0f, 0.0f)), 0x7bff);
    assert_int_equal(fl_f32_to_f16(65536.0f), 0x7c00);
    assert_int_equal(fl_f32_to_f16(1e10f), 0x7c00);
    assert_int_equal(fl_f32_to_f16(FLT_MAX), 0x7c00);
    assert_int_equal(fl_f32_to_f16(-FLT_MAX), 0xfc00);
    assert_int_equal(fl_f32_to_f16(1.0f), 0x3c00);
    assert_int_equal(fl_f32_to_f16(-2.0f), 0xc000);
    assert_int_equal(fl_f32_to_f16(0.333251953125f), 0x3555);
    const float specials[] = { 0.0f, -0.0f, INFINITY, -INFINITY, 65519.99f, 65520.0f, FLT_MAX };
    for (size_t i = 0; i < sizeof specials / sizeof specials[0]; i++)
        check_f16(specials[i], "special");
    /* NaNs of every kind stay quiet NaNs with their sign; never infinity */
    const uint32_t nans[] = { 0x7fc00000u, 0xffc00000u, 0x7f800001u, 0xff800001u, 0x7fffffffu,
                              0xffffffffu, 0x7f802000u, 0x7fa00000u, 0x7f801fffu, 0x7f800100u };
    for (size_t i = 0; i < sizeof nans / sizeof nans[0]; i++)
        check_f16(bits_f32(nans[i]), "NaN");
    assert_true(isnan(fl_f16_to_f32(0x7e00)));
    assert_true(isinf(fl_f16_to_f32(0x7c00)) && fl_f16_to_f32(0x7c00) > 0);
    assert_true(isinf(fl_f16_to_f32(0xfc00)) && fl_f16_to_f32(0xfc00) < 0);
    assert_true(signbit(fl_f16_to_f32(0x8000)) && fl_f16_to_f32(0x8000) == 0.0f);
    assert_true(fl_f16_to_f32(0x0001) == ldexpf(1.0f, -24));
    assert_true(fl_f16_to_f32(0x7bff) == 65504.0f);
}

static void test_f16_random(void **state)
{
    (void)state;
    uint64_t rng = 2024;
    for (int i = 0; i < 1000000; i++) {
        uint64_t r = splitmix64(&rng);
        check_f16(bits_f32((uint32_t)r), "random bits");
        /* and random values whose exponent is near the f16 range, where rounding happens */
        uint32_t e = 97u + (uint32_t)((r >> 32) % 48u); /* 2^-30 .. 2^17 */
        uint32_t b = ((uint32_t)(r >> 63) << 31) | (e << 23) | ((uint32_t)(r >> 40) & 0x7fffffu);
        check_f16(bits_f32(b), "random in range");
    }
}

/* ---- bf16 ----------------------------------------------------------------------------- */

static void test_bf16_roundtrip_exhaustive(void **state)
{
    (void)state;
    for (uint32_t b = 0; b <= 0xffffu; b++) {
        float f = fl_bf16_to_f32((uint16_t)b);
        if (f32_bits(f) != b << 16) /* widening is exact: the top half of the f32 */
            fail_msg("bf16 0x%04x widened to 0x%08x", (unsigned)b, (unsigned)f32_bits(f));
        uint16_t back = fl_f32_to_bf16(f);
        if (bf16_is_nan((uint16_t)b)) {
            if (!bf16_is_nan(back) || (back & 0x8000u) != (b & 0x8000u) || !(back & 0x40u))
                fail_msg("bf16 NaN 0x%04x came back as 0x%04x", (unsigned)b, back);
        } else if (back != b) {
            fail_msg("bf16 0x%04x -> %.9g -> 0x%04x", (unsigned)b, (double)f, back);
        }
    }
}

/* Every midpoint between bf16 neighbours, and its f32 neighbours either side. */
static void test_bf16_midpoints(void **state)
{
    (void)state;
    for (uint32_t b = 0; b <= 0xffffu; b++) {
        if ((b & 0x7f80u) == 0x7f80u)
            continue; /* inf/NaN have no midpoint above them */
        uint32_t mid = (b << 16) | 0x8000u;
        check_bf16(bits_f32(mid), "bf16 midpoint");
        check_bf16(bits_f32(mid + 1), "above bf16 midpoint");
        check_bf16(bits_f32(mid - 1), "below bf16 midpoint");
        uint16_t even = (uint16_t)((b & 1u) ? b + 1 : b);
        if (fl_f32_to_bf16(bits_f32(mid)) != even)
            fail_msg("bf16 tie above 0x%04x gave 0x%04x, want 0x%04x", (unsigned)b,
                     fl_f32_to_bf16(bits_f32(mid)), even);
        if (fl_f32_to_bf16(bits_f32(mid + 1)) != (uint16_t)(b + 1) ||
            fl_f32_to_bf16(bits_f32(mid - 1)) != (uint16_t)b)
            fail_msg("around the bf16 midpoint above 0x%04x", (unsigned)b);
    }
}

static void test_bf16_specials(void **state)
{
    (void)state;
    assert_int_equal(fl_f32_to_bf16(0.0f), 0x0000);
    assert_int_equal(fl_f32_to_bf16(-0.0f), 0x8000);
    assert_int_equal(fl_f32_to_bf16(1.0f), 0x3f80);
    assert_int_equal(fl_f32_to_bf16(-3.0f), 0xc040);
    assert_int_equal(fl_f32_to_bf16(INFINITY), 0x7f80);
    assert_int_equal(fl_f32_to_bf16(-INFINITY), 0xff80);
    /* overflow: above the last midpoint rounds to infinity, below stays finite */
    assert_int_equal(fl_f32_to_bf16(FLT_MAX), 0x7f80);
    assert_int_equal(fl_f32_to_bf16(-FLT_MAX), 0xff80);
    assert_int_equal(fl_f32_to_bf16(bits_f32(0x7f7f8000u)), 0x7f80); /* tie, odd below: up */
    assert_int_equal(fl_f32_to_bf16(bits_f32(0x7f7f7fffu)), 0x7f7f);
    /* NaN never becomes infinity, even when only low mantissa bits are set */
    const uint32_t nans[] = { 0x7f800001u, 0xff800001u, 0x7f80ffffu, 0x7f808000u, 0x7fc00000u,
                              0xffc00000u, 0x7fffffffu, 0xffffffffu, 0x7fbfffffu };
    for (size_t i = 0; i < sizeof nans / sizeof nans[0]; i++) {
        check_bf16(bits_f32(nans[i]), "NaN");
        assert_true(isnan(fl_bf16_to_f32(fl_f32_to_bf16(bits_f32(nans[i])))));
    }
    /* subnormals */
    check_bf16(bits_f32(1), "smallest subnormal");
    check_bf16(bits_f32(0x00008000u), "subnormal tie");
    check_bf16(bits_f32(0x00018000u), "subnormal tie odd");
    check_bf16(bits_f32(0x007fffffu), "largest subnormal");
    assert_int_equal(fl_f32_to_bf16(bits_f32(0x007fffffu)), 0x0080); /* carries to normal */
}

static void test_bf16_random(void **state)
{
    (void)state;
    uint64_t rng = 77;
    for (int i = 0; i < 1000000; i++)
        check_bf16(bits_f32((uint32_t)splitmix64(&rng)), "random bits");
}

/* The reference itself must be able to disagree: a truncating or ties-away converter
 * differs from it on known inputs. */
static void test_bf16_reference_sanity(void **state)
{
    (void)state;
    assert_int_equal(ref_bf16_bits(bits_f32(0x3f808000u)), 0x3f80); /* tie, even below */
    assert_int_equal(ref_bf16_bits(bits_f32(0x3f818000u)), 0x3f82); /* tie, odd below */
    assert_int_equal(ref_bf16_bits(bits_f32(0x3f80ffffu)), 0x3f81);
    assert_int_equal(ref_bf16_bits(bits_f32(0xbf818001u)), 0xbf82);
    assert_int_equal(ref_bf16_bits(bits_f32(0x7f7fffffu)), 0x7f80);
    assert_int_equal(ref_f16_bits(65520.0f), 0x7c00);
    assert_int_equal(ref_f16_bits(1.0f + ldexpf(1.0f, -11)), 0x3c00);
    assert_int_equal(ref_f16_bits(1.0f + ldexpf(3.0f, -11)), 0x3c02);
}

static void test_bulk_conversions(void **state)
{
    (void)state;
    enum { N = 4099 };
    static float src[N], back[N];
    static uint16_t h[N];
    uint64_t rng = 5;
    for (int i = 0; i < N; i++)
        src[i] = bits_f32((uint32_t)splitmix64(&rng) & 0xbfffffffu); /* finite, mostly */
    fl_f32_to_f16_n(src, h, N);
    for (int i = 0; i < N; i++)
        assert_int_equal(h[i], fl_f32_to_f16(src[i]));
    fl_f16_to_f32_n(h, back, N);
    for (int i = 0; i < N; i++)
        assert_true(f32_bits(back[i]) == f32_bits(fl_f16_to_f32(h[i])));
    fl_f32_to_bf16_n(src, h, N);
    for (int i = 0; i < N; i++)
        assert_int_equal(h[i], fl_f32_to_bf16(src[i]));
    fl_bf16_to_f32_n(h, back, N);
    for (int i = 0; i < N; i++)
        assert_true(f32_bits(back[i]) == (uint32_t)h[i] << 16);
    fl_f32_to_f16_n(src, h, 0); /* n = 0 touches nothing */
}

/* ---- NaN payloads --------------------------------------------------------------------- */

/* Narrowing an f32 NaN keeps its sign and the top of its payload (f16: f32 bits 21..13 as
 * bits 8..0; bf16: f32 bits 21..16 as bits 5..0) and sets the quiet bit (f16 0x200, bf16
 * 0x40), so it can never become infinity. Widening keeps every bit: the payload moves up,
 * the quiet bit stays where it was, a signalling NaN stays signalling. Hence a quiet
 * f16/bf16 NaN -> f32 -> back is the identity, and a signalling one comes back quieted with
 * its payload. The same holds through double (fl_dtype_load/store, what "cpu-ref"'s
 * conversions use), which quiets on the way but keeps the payload. */
static void test_nan_payloads(void **state)
{
    (void)state;
    /* worked by hand from the bit layouts */
    static const struct {
        uint32_t f32;
        uint16_t f16, bf16;
    } cases[] = {
        { 0x7fc00000u, 0x7e00u, 0x7fc0u }, /* the default quiet NaN */
        { 0xffc00000u, 0xfe00u, 0xffc0u }, /* negative */
        { 0x7fffe000u, 0x7fffu, 0x7fffu }, /* every payload bit f16 can hold */
        { 0x7fffffffu, 0x7fffu, 0x7fffu }, /* ...and the bits below them dropped */
        { 0xffbfe000u, 0xffffu, 0xffffu }, /* signalling, full f16 payload: quieted */
        { 0x7fa5a000u, 0x7f2du, 0x7fe5u }, /* signalling, payload 0x25a000 */
        { 0x7fd55555u, 0x7eaau, 0x7fd5u }, /* alternating bits */
        { 0x7f8a0000u, 0x7e50u, 0x7fcau }, /* signalling, payload in bf16's range */
        { 0xff810000u, 0xfe08u, 0xffc1u }, /* signalling, lowest bf16 payload bit */
        { 0x7f802000u, 0x7e01u, 0x7fc0u }, /* signalling, lowest f16 payload bit */
        { 0x7f800001u, 0x7e00u, 0x7fc0u }, /* signalling, payload below both: quiet NaN, not inf */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        float x = bits_f32(cases[i].f32);
        uint16_t h = fl_f32_to_f16(x), b = fl_f32_to_bf16(x);
        if (h != cases[i].f16 || b != cases[i].bf16)
            fail_msg("f32 NaN 0x%08x -> f16 0x%04x (want 0x%04x), bf16 0x%04x (want 0x%04x)",
                     (unsigned)cases[i].f32, h, cases[i].f16, b, cases[i].bf16);
    }
    /* every f32 NaN, both signs: sign, quiet bit and the kept payload bits */
    for (uint32_t s = 0; s < 2; s++)
        for (uint32_t m = 1; m <= 0x7fffffu; m++) {
            uint32_t u = s << 31 | 0x7f800000u | m;
            float x = bits_f32(u);
            uint16_t h = fl_f32_to_f16(x), b = fl_f32_to_bf16(x);
            uint16_t wh = (uint16_t)(s << 15 | 0x7c00u | 0x200u | ((m >> 13) & 0x1ffu));
            uint16_t wb = (uint16_t)(s << 15 | 0x7f80u | 0x40u | ((m >> 16) & 0x3fu));
            if (h != wh || b != wb)
                fail_msg("f32 NaN 0x%08x -> f16 0x%04x (want 0x%04x), bf16 0x%04x (want 0x%04x)",
                         (unsigned)u, h, wh, b, wb);
            /* a NaN whose payload fits comes back whole from a quiet narrow one */
            if ((m & 0x400000u) && !(m & 0x1fffu) && f32_bits(fl_f16_to_f32(h)) != u)
                fail_msg("f32 NaN 0x%08x -> f16 0x%04x -> 0x%08x", (unsigned)u, h,
                         (unsigned)f32_bits(fl_f16_to_f32(h)));
            if ((m & 0x400000u) && !(m & 0xffffu) && f32_bits(fl_bf16_to_f32(b)) != u)
                fail_msg("f32 NaN 0x%08x -> bf16 0x%04x -> 0x%08x", (unsigned)u, b,
                         (unsigned)f32_bits(fl_bf16_to_f32(b)));
        }
    /* every f16 and bf16 NaN: widening keeps every bit; back is the identity when quiet */
    int quiet16 = 0, quietbf = 0;
    for (uint32_t v = 0; v <= 0xffffu; v++) {
        uint16_t h = (uint16_t)v;
        if (f16_is_nan(h)) {
            uint32_t want = (v & 0x8000u) << 16 | 0x7f800000u | (v & 0x3ffu) << 13;
            float f = fl_f16_to_f32(h);
            uint16_t back = fl_f32_to_f16(f);
            uint16_t back_d;
            fl_dtype_store(FL_F16, &back_d, 0, fl_dtype_load(FL_F16, &h, 0)); /* through double */
            if (f32_bits(f) != want)
                fail_msg("f16 NaN 0x%04x widened to 0x%08x, want 0x%08x", (unsigned)v,
                         (unsigned)f32_bits(f), (unsigned)want);
            if (back != (h | 0x200u) || back_d != (h | 0x200u))
                fail_msg("f16 NaN 0x%04x came back as 0x%04x (through double 0x%04x), want 0x%04x",
                         (unsigned)v, back, back_d, (unsigned)(h | 0x200u));
            quiet16 += back == h;
        }
        if (bf16_is_nan(h)) {
            float f = fl_bf16_to_f32(h);
            uint16_t back = fl_f32_to_bf16(f);
            uint16_t back_d;
            fl_dtype_store(FL_BF16, &back_d, 0, fl_dtype_load(FL_BF16, &h, 0));
            if (f32_bits(f) != v << 16)
                fail_msg("bf16 NaN 0x%04x widened to 0x%08x", (unsigned)v, (unsigned)f32_bits(f));
            if (back != (h | 0x40u) || back_d != (h | 0x40u))
                fail_msg("bf16 NaN 0x%04x came back as 0x%04x (through double 0x%04x), want 0x%04x",
                         (unsigned)v, back, back_d, (unsigned)(h | 0x40u));
            quietbf += back == h;
        }
    }
    assert_int_equal(quiet16, 2 * 512);  /* the quiet half of 2 x 1023 f16 NaNs */
    assert_int_equal(quietbf, 2 * 64);   /* the quiet half of 2 x 127 bf16 NaNs */
    /* the bulk conversions agree bit for bit on NaNs too */
    static const uint32_t nans[] = { 0x7fc00000u, 0xffbfe000u, 0x7fa5a000u, 0x7f800001u, 0xff810000u };
    enum { NN = sizeof nans / sizeof nans[0] };
    float src[NN], back[NN];
    uint16_t h[NN];
    for (int i = 0; i < NN; i++)
        src[i] = bits_f32(nans[i]);
    fl_f32_to_f16_n(src, h, NN);
    fl_f16_to_f32_n(h, back, NN);
    for (int i = 0; i < NN; i++) {
        assert_int_equal(h[i], fl_f32_to_f16(src[i]));
        assert_true(f32_bits(back[i]) == f32_bits(fl_f16_to_f32(h[i])));
    }
    fl_f32_to_bf16_n(src, h, NN);
    fl_bf16_to_f32_n(h, back, NN);
    for (int i = 0; i < NN; i++) {
        assert_int_equal(h[i], fl_f32_to_bf16(src[i]));
        assert_true(f32_bits(back[i]) == (uint32_t)h[i] << 16);
    }
}

/* ---- load / store --------------------------------------------------------------------- */

static void test_load_store_each_dtype(void **state)
{
    (void)state;
    const double vals[] = { 0.0, 1.0, -2.5, 3.0, 100.0, 0.5, -7.0, 42.0 };
    const size_t n = sizeof vals / sizeof vals[0];
    for (int t = 0; t < FL_DTYPE_COUNT; t++) {
        fl_dtype dt = (fl_dtype)t;
        union {
            unsigned char bytes[8 * 16 + 16];
            double align_;
        } buf;
        memset(buf.bytes, 0xA5, sizeof buf.bytes);
        for (size_t i = 0; i < n; i++) {
            double v = vals[i];
            if (dt == FL_U8)
                v = fabs(v);
            fl_dtype_store(dt, buf.bytes, i, v);
        }
        /* nothing written past element n-1 */
        size_t end = n * fl_dtype_size(dt);
        for (size_t k = end; k < sizeof buf.bytes; k++)
            if (buf.bytes[k] != 0xA5)
                fail_msg("%s: store wrote byte %zu past the last element", fl_dtype_name(dt), k);
        for (size_t i = 0; i < n; i++) {
            double v = dt == FL_U8 ? fabs(vals[i]) : vals[i];
            if (dt == FL_I32 || dt == FL_I64 || dt == FL_U8)
                v = trunc(v); /* integers truncate toward zero */
            double got = fl_dtype_load(dt, buf.bytes, i);
            if (got != v)
                fail_msg("%s[%zu]: stored %g, loaded %g", fl_dtype_name(dt), i, v, got);
        }
        /* the in-memory representation is the native one */
        switch (dt) {
        case FL_F32: {
            float f;
            memcpy(&f, buf.bytes + 2 * 4, 4);
            assert_true(f == -2.5f);
            break;
        }
        case FL_F64: {
            double d;
            memcpy(&d, buf.bytes + 2 * 8, 8);
            assert_true(d == -2.5);
            break;
        }
        case FL_F16: {
            uint16_t u;
            memcpy(&u, buf.bytes + 2 * 2, 2);
            assert_int_equal(u, 0xc100);
            break;
        }
        case FL_BF16: {
            uint16_t u;
            memcpy(&u, buf.bytes + 2 * 2, 2);
            assert_int_equal(u, 0xc020);
            break;
        }
        case FL_C64: {
            float c[2];
            memcpy(c, buf.bytes + 2 * 8, 8);
            assert_true(c[0] == -2.5f && c[1] == 0.0f); /* imaginary part zeroed */
            break;
        }
        case FL_C128: {
            double c[2];
            memcpy(c, buf.bytes + 2 * 16, 16);
            assert_true(c[0] == -2.5 && c[1] == 0.0);
            break;
        }
        case FL_I32: {
            int32_t x;
            memcpy(&x, buf.bytes + 6 * 4, 4);
            assert_int_equal(x, -7);
            break;
        }
        case FL_I64: {
            int64_t x;
            memcpy(&x, buf.bytes + 6 * 8, 8);
            assert_int_equal(x, -7);
            break;
        }
        case FL_U8: assert_int_equal(buf.bytes[4], 100); break;
        case FL_DTYPE_COUNT: break;
        }
    }
}

static void test_load_store_rounding(void **state)
{
    (void)state;
    /* narrow types round to nearest */
    uint16_t h = 0;
    fl_dtype_store(FL_F16, &h, 0, 0.1);
    assert_int_equal(h, fl_f32_to_f16(0.1f));
    assert_true(fl_dtype_load(FL_F16, &h, 0) == (double)fl_f16_to_f32(fl_f32_to_f16(0.1f)));
    fl_dtype_store(FL_F16, &h, 0, 1e6);
    assert_int_equal(h, 0x7c00);
    fl_dtype_store(FL_BF16, &h, 0, 1.0 + 1.0 / 256.0); /* tie: even */
    assert_int_equal(h, 0x3f80);
    fl_dtype_store(FL_BF16, &h, 0, -1.0 - 3.0 / 256.0);
    assert_int_equal(h, 0xbf82);
    /* a double just above an f16/bf16 midpoint must not first round onto the midpoint
     * in f32 and then tie to even (double rounding) */
    fl_dtype_store(FL_F16, &h, 0, 1.0 + ldexp(1.0, -11) + ldexp(1.0, -40));
    assert_int_equal(h, 0x3c01);
    fl_dtype_store(FL_F16, &h, 0, -(1.0 + ldexp(1.0, -11) + ldexp(1.0, -40)));
    assert_int_equal(h, 0xbc01);
    fl_dtype_store(FL_F16, &h, 0, 1.0 + ldexp(3.0, -11) - ldexp(1.0, -40));
    assert_int_equal(h, 0x3c01);
    fl_dtype_store(FL_F16, &h, 0, 65520.0 - ldexp(1.0, -30)); /* below the overflow tie */
    assert_int_equal(h, 0x7bff);
    fl_dtype_store(FL_F16, &h, 0, ldexp(1.0, -25) + ldexp(1.0, -60)); /* subnormal tie + */
    assert_int_equal(h, 0x0001);
    fl_dtype_store(FL_BF16, &h, 0, 1.0 + ldexp(1.0, -8) + ldexp(1.0, -40));
    assert_int_equal(h, 0x3f81);
    fl_dtype_store(FL_BF16, &h, 0, 1.0 + ldexp(3.0, -8) - ldexp(1.0, -40));
    assert_int_equal(h, 0x3f81);
    /* exact values stay exact */
    fl_dtype_store(FL_F16, &h, 0, 1.0 + ldexp(1.0, -11));
    assert_int_equal(h, 0x3c00);
    fl_dtype_store(FL_F16, &h, 0, -0.0);
    assert_int_equal(h, 0x8000);
    fl_dtype_store(FL_F16, &h, 0, NAN);
    assert_true(f16_is_nan(h));
    fl_dtype_store(FL_BF16, &h, 0, INFINITY);
    assert_int_equal(h, 0x7f80);
    /* integers truncate toward zero; i64 keeps 2^53 exactly */
    int32_t i = 0;
    fl_dtype_store(FL_I32, &i, 0, 2.9);
    assert_int_equal(i, 2);
    fl_dtype_store(FL_I32, &i, 0, -2.9);
    assert_int_equal(i, -2);
    int64_t l = 0;
    fl_dtype_store(FL_I64, &l, 0, 9007199254740992.0);
    assert_true(l == INT64_C(9007199254740992));
    assert_true(fl_dtype_load(FL_I64, &l, 0) == 9007199254740992.0);
    uint8_t u = 0;
    fl_dtype_store(FL_U8, &u, 0, 255.0);
    assert_int_equal(u, 255);
    /* complex loads return the real part */
    float c[4] = { 1.5f, -9.0f, 2.5f, 7.0f };
    assert_true(fl_dtype_load(FL_C64, c, 1) == 2.5);
    double z[4] = { 1.5, -9.0, 2.5, 7.0 };
    assert_true(fl_dtype_load(FL_C128, z, 1) == 2.5);
}

/* Storing doubles is correctly rounded: against gcc's direct double -> _Float16, and
 * for bf16 against the midpoints between neighbours nudged by far less than a f32 ulp. */
static void test_store_double_random(void **state)
{
    (void)state;
    uint64_t rng = 31337;
    for (int i = 0; i < 200000; i++) {
        uint64_t r = splitmix64(&rng);
        uint16_t h = (uint16_t)(r & 0x7bffu); /* finite f16 magnitude */
        double a = (double)ref_f16_to_f32(h);
        double b = h == 0x7bffu ? 65536.0 : (double)ref_f16_to_f32((uint16_t)(h + 1));
        double v = (a + b) / 2.0;
        switch ((r >> 16) % 4) {
        case 0: v += (b - a) * ldexp(1.0, -(int)(20 + (r >> 20) % 30)); break;
        case 1: v -= (b - a) * ldexp(1.0, -(int)(20 + (r >> 20) % 30)); break;
        case 2: v = a + (b - a) * (double)(r >> 40) / 16777216.0; break;
        default: break;
        }
        if (r >> 63)
            v = -v;
        gcc_f16 want16 = (gcc_f16)v;
        uint16_t want, got;
        memcpy(&want, &want16, 2);
        fl_dtype_store(FL_F16, &got, 0, v);
        if (got != want)
            fail_msg("store f16 %.17g: got 0x%04x, gcc says 0x%04x", v, got, want);

        uint16_t bb = (uint16_t)((r >> 24) % 0x7f7fu); /* finite bf16 magnitude below max */
        double lo = (double)fl_bf16_to_f32(bb), hi = (double)fl_bf16_to_f32((uint16_t)(bb + 1));
        double mid = (lo + hi) / 2.0, eps = (hi - lo) * ldexp(1.0, -(int)(26 + (r >> 8) % 20));
        double sgn = (r >> 62) & 1 ? -1.0 : 1.0;
        uint16_t sb = (r >> 62) & 1 ? 0x8000u : 0;
        uint16_t gb;
        fl_dtype_store(FL_BF16, &gb, 0, sgn * (mid + eps));
        if (gb != (uint16_t)(sb | (bb + 1)))
            fail_msg("store bf16 just above the midpoint over 0x%04x: got 0x%04x", bb, gb);
        fl_dtype_store(FL_BF16, &gb, 0, sgn * (mid - eps));
        if (gb != (uint16_t)(sb | bb))
            fail_msg("store bf16 just below the midpoint over 0x%04x: got 0x%04x", bb, gb);
        fl_dtype_store(FL_BF16, &gb, 0, sgn * mid);
        if (gb != (uint16_t)(sb | ((bb & 1u) ? bb + 1 : bb)))
            fail_msg("store bf16 midpoint over 0x%04x: got 0x%04x", bb, gb);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dtype_sizes_and_names),
        cmocka_unit_test(test_dtype_invalid),
        cmocka_unit_test(test_bf16_reference_sanity),
        cmocka_unit_test(test_f16_roundtrip_exhaustive),
        cmocka_unit_test(test_f16_narrowing_values_and_midpoints),
        cmocka_unit_test(test_f16_subnormal_range),
        cmocka_unit_test(test_f16_specials_and_overflow),
        cmocka_unit_test(test_f16_random),
        cmocka_unit_test(test_bf16_roundtrip_exhaustive),
        cmocka_unit_test(test_bf16_midpoints),
        cmocka_unit_test(test_bf16_specials),
        cmocka_unit_test(test_bf16_random),
        cmocka_unit_test(test_bulk_conversions),
        cmocka_unit_test(test_nan_payloads),
        cmocka_unit_test(test_load_store_each_dtype),
        cmocka_unit_test(test_load_store_rounding),
        cmocka_unit_test(test_store_double_random),
    };
    return cmocka_run_group_tests_name("dtype", tests, NULL, NULL);
}
