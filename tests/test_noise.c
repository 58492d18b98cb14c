/* cmocka suite for schedulers/noise: beta tables, step selection, levels, flow shift, errors. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "schedulers/noise.h"

/* ---- helpers ------------------------------------------------------------------------ */

static void *xmalloc(size_t bytes)
{
    void *p = malloc(bytes);
    assert_non_null(p);
    return p;
}

/* Fails naming the code and message when a call did not fail as documented. */
static void expect_error(fl_status st, const fl_error *err, fl_status code, const char *sub)
{
    if (st != code || err->code != code)
        fail_msg("expected status %d (%s), got %d / err %d: \"%s\"", (int)code, sub, (int)st,
                 (int)err->code, err->msg);
    if (!strstr(err->msg, sub))
        fail_msg("message \"%s\" does not contain \"%s\"", err->msg, sub);
}

static void check_close(const char *what, double got, double want, double tol)
{
    if (!(fabs(got - want) <= tol))
        fail_msg("%s = %.17g, want %.17g (tolerance %.3g)", what, got, want, tol);
}

static void check_rel(const char *what, double got, double want, double rel)
{
    check_close(what, got, want, rel * fabs(want));
}

/* The schedule's abar table, rebuilt here from the textbook formula with the same
 * linspace (a + i*(b - a)/(T - 1)) but written independently of the code under test. */
static double independent_abar(fl_beta_kind kind, int T, double b0, double b1, int t)
{
    double prod = 1.0;
    for (int i = 0; i <= t; i++) {
        double beta;
        if (kind == FL_BETA_COSINE) {
            double h = acos(-1.0) / 2.0;
            double f1 = cos(((double)(i + 1) / T + 0.008) / 1.008 * h);
            double f0 = cos(((double)i / T + 0.008) / 1.008 * h);
            beta = fmin(1.0 - (f1 * f1) / (f0 * f0), 0.999);
        } else if (kind == FL_BETA_SQRT_LINEAR) {
            double r = sqrt(b0) + (sqrt(b1) - sqrt(b0)) * i / (T - 1);
            beta = r * r;
        } else {
            beta = b0 + (b1 - b0) * i / (T - 1);
        }
        prod *= 1.0 - beta;
    }
    return prod;
}

/* ---- names ---------------------------------------------------------------------------- */

/* Every kind's name parses back to the kind; unknown names are refused with the list. */
static void test_names_round_trip(void **state)
{
    (void)state;
    fl_error err;
    for (int k = 0; k < 3; k++) {
        fl_beta_kind b;
        assert_int_equal(fl_beta_kind_parse(fl_beta_kind_name((fl_beta_kind)k), &b, &err), FL_OK);
        assert_int_equal(b, k);
        fl_steps_kind s;
        assert_int_equal(fl_steps_kind_parse(fl_steps_kind_name((fl_steps_kind)k), &s, &err), FL_OK);
        assert_int_equal(s, k);
    }
    assert_string_equal(fl_beta_kind_name(FL_BETA_SQRT_LINEAR), "sqrt_linear");
    assert_string_equal(fl_beta_kind_name((fl_beta_kind)7), "?");
    assert_string_equal(fl_steps_kind_name(FL_STEPS_LDM), "ldm");
    assert_string_equal(fl_steps_kind_name((fl_steps_kind)-1), "?");
    fl_beta_kind b;
    expect_error(fl_beta_kind_parse("scaled", &b, &err), &err, FL_E_INVALID,
                 "noise.beta_schedule: unknown value \"scaled\"; accepted: linear, sqrt_linear, cosine");
    expect_error(fl_beta_kind_parse(NULL, &b, &err), &err, FL_E_INVALID, "(null)");
    fl_steps_kind s;
    expect_error(fl_steps_kind_parse("trailing", &s, &err), &err, FL_E_INVALID,
                 "accepted: uniform, ldm, leading");
}

/* ---- step selection ------------------------------------------------------------------- */

/* VideoCrafter2 / FIFO's S = 64 over T = 1000: numpy round(linspace(0, 999, 64)), every
 * value as numpy gives it. */
static void test_uniform_steps_s64(void **state)
{
    (void)state;
    static const int want[64] = {
        0,   16,  32,  48,  63,  79,  95,  111, 127, 143, 159, 174, 190, 206, 222, 238,
        254, 270, 285, 301, 317, 333, 349, 365, 381, 396, 412, 428, 444, 460, 476, 492,
        507, 523, 539, 555, 571, 587, 603, 618, 634, 650, 666, 682, 698, 714, 729, 745,
        761, 777, 793, 809, 825, 840, 856, 872, 888, 904, 920, 936, 951, 967, 983, 999,
    };
    int ts[64];
    fl_error err;
    assert_int_equal(fl_noise_timesteps(FL_STEPS_UNIFORM, 1000, 64, ts, &err), FL_OK);
    assert_memory_equal(ts, want, sizeof want);
}

/* Exact .5 ties round to even as numpy.round does: 166.5 -> 166, 499.5 -> 500,
 * 832.5 -> 832, 498.5 -> 498; S = 1 is linspace's single point 0; S = T is 0..T-1. */
static void test_uniform_steps_ties_and_ends(void **state)
{
    (void)state;
    fl_error err;
    int ts[1000];
    static const int want7[7] = { 0, 166, 333, 500, 666, 832, 999 };
    assert_int_equal(fl_noise_timesteps(FL_STEPS_UNIFORM, 1000, 7, ts, &err), FL_OK);
    assert_memory_equal(ts, want7, sizeof want7);
    static const int want3[3] = { 0, 498, 997 };
    assert_int_equal(fl_noise_timesteps(FL_STEPS_UNIFORM, 998, 3, ts, &err), FL_OK);
    assert_memory_equal(ts, want3, sizeof want3);
    assert_int_equal(fl_noise_timesteps(FL_STEPS_UNIFORM, 1000, 1, ts, &err), FL_OK);
    assert_int_equal(ts[0], 0);
    assert_int_equal(fl_noise_timesteps(FL_STEPS_UNIFORM, 1000, 1000, ts, &err), FL_OK);
    for (int i = 0; i < 1000; i++)
        assert_int_equal(ts[i], i);
}

/* For every S in 1..T the uniform selection is strictly increasing, starts at 0 and ends
 * at T-1 (S > 1): the duplicate check never fires for valid S, so no S is refused. */
static void test_uniform_steps_never_repeat(void **state)
{
    (void)state;
    static const int Ts[] = { 1000, 999, 17, 2, 1 };
    int *ts = xmalloc(1000 * sizeof *ts);
    fl_error err;
    for (size_t k = 0; k < sizeof Ts / sizeof Ts[0]; k++) {
        int T = Ts[k];
        for (int S = 1; S <= T; S++) {
            if (fl_noise_timesteps(FL_STEPS_UNIFORM, T, S, ts, &err) != FL_OK)
                fail_msg("T=%d S=%d refused: %s", T, S, err.msg);
            assert_int_equal(ts[0], 0);
            if (S > 1)
                assert_int_equal(ts[S - 1], T - 1);
            for (int i = 1; i < S; i++)
                if (ts[i] <= ts[i - 1])
                    fail_msg("T=%d S=%d: ts[%d]=%d after %d", T, S, i, ts[i], ts[i - 1]);
        }
    }
    free(ts);
}

/* LDM's range(0, 1000, 20) + 1 for S = 50: 1, 21, ..., 981, each value literal. */
static void test_ldm_steps_s50(void **state)
{
    (void)state;
    static const int want[50] = {
        1,   21,  41,  61,  81,  101, 121, 141, 161, 181, 201, 221, 241, 261, 281, 301, 321,
        341, 361, 381, 401, 421, 441, 461, 481, 501, 521, 541, 561, 581, 601, 621, 641, 661,
        681, 701, 721, 741, 761, 781, 801, 821, 841, 861, 881, 901, 921, 941, 961, 981,
    };
    int ts[50];
    fl_error err;
    assert_int_equal(fl_noise_timesteps(FL_STEPS_LDM, 1000, 50, ts, &err), FL_OK);
    assert_memory_equal(ts, want, sizeof want);
}

/* S that does not divide T: exactly S timesteps with step T/S (diffusers "leading"),
 * not LDM's ceil(T / (T/S)). ldm: 1, 16, ..., 946 for S = 64; leading (Open-Sora Plan's
 * DDPMScheduler, S = 136): 0, 7, ..., 945. */
static void test_ldm_and_leading_non_divisor(void **state)
{
    (void)state;
    int ts[136];
    fl_error err;
    assert_int_equal(fl_noise_timesteps(FL_STEPS_LDM, 1000, 64, ts, &err), FL_OK);
    assert_int_equal(ts[0], 1);
    assert_int_equal(ts[1], 16);
    assert_int_equal(ts[63], 946);
    assert_int_equal(fl_noise_timesteps(FL_STEPS_LEADING, 1000, 136, ts, &err), FL_OK);
    assert_int_equal(ts[0], 0);
    assert_int_equal(ts[1], 7);
    assert_int_equal(ts[135], 945);
    /* ldm at S = T - 1 (step 1) tops out at T - 1. */
    int *big = xmalloc(1000 * sizeof *big);
    assert_int_equal(fl_noise_timesteps(FL_STEPS_LDM, 1000, 999, big, &err), FL_OK);
    assert_int_equal(big[998], 999);
    /* leading at S = T is every timestep 0..T-1; only ldm's +1 needs S < T. */
    assert_int_equal(fl_noise_timesteps(FL_STEPS_LEADING, 1000, 1000, big, &err), FL_OK);
    assert_int_equal(big[999], 999);
    free(big);
}

/* ---- beta tables ---------------------------------------------------------------------- */

/* VideoCrafter2's schedule (sqrt_linear 0.00085 -> 0.012, T = 1000): abar[0] = 1 - 0.00085
 * = 0.99915, abar[999] = 0.0046601 (the reference's 0.00466), every entry matching the
 * independent product, strictly decreasing in (0, 1). */
static void test_sqrt_linear_table(void **state)
{
    (void)state;
    fl_noise ns;
    fl_error err;
    assert_int_equal(fl_noise_ddpm(&ns, FL_BETA_SQRT_LINEAR, 1000, 0.00085, 0.012, &err), FL_OK);
    assert_int_equal(ns.kind, FL_NOISE_DDPM);
    assert_int_equal(ns.T, 1000);
    check_close("abar[0]", ns.abar[0], 0.99915, 1e-15);
    check_close("abar[999]", ns.abar[999], 0.0046601, 5e-8);
    for (int t = 0; t < 1000; t += 37)
        check_rel("abar[t]", ns.abar[t], independent_abar(FL_BETA_SQRT_LINEAR, 1000, 0.00085, 0.012, t), 1e-12);
    check_rel("abar[999] vs formula", ns.abar[999],
              independent_abar(FL_BETA_SQRT_LINEAR, 1000, 0.00085, 0.012, 999), 1e-12);
    for (int t = 1; t < 1000; t++)
        assert_true(ns.abar[t] < ns.abar[t - 1]);
    assert_true(ns.abar[999] > 0);
    fl_noise_free(&ns);
    assert_null(ns.abar);
}

/* DDPM's linear 1e-4 -> 0.02: abar[0] = 0.9999, abar[999] = 4.0358e-5 (Ho et al.'s
 * schedule), matching the independent product. */
static void test_linear_table(void **state)
{
    (void)state;
    fl_noise ns;
    fl_error err;
    assert_int_equal(fl_noise_ddpm(&ns, FL_BETA_LINEAR, 1000, 1e-4, 0.02, &err), FL_OK);
    check_close("abar[0]", ns.abar[0], 0.9999, 1e-15);
    check_rel("abar[999]", ns.abar[999], 4.0358e-5, 1e-4);
    for (int t = 0; t < 1000; t += 111)
        check_rel("abar[t]", ns.abar[t], independent_abar(FL_BETA_LINEAR, 1000, 1e-4, 0.02, t), 1e-12);
    fl_noise_free(&ns);
    /* T = 1: linspace of one point is beta_start. */
    assert_int_equal(fl_noise_ddpm(&ns, FL_BETA_LINEAR, 1, 0.1, 0.2, &err), FL_OK);
    check_close("abar[0] (T=1)", ns.abar[0], 0.9, 1e-15);
    fl_noise_free(&ns);
}

/* Cosine: strictly decreasing, every entry in (0, 1]; below the clip abar[t] is the
 * closed form f((t+1)/T) / f(0); the last beta is clipped to 0.999. Betas are ignored. */
static void test_cosine_table(void **state)
{
    (void)state;
    fl_noise ns;
    fl_error err;
    assert_int_equal(fl_noise_ddpm(&ns, FL_BETA_COSINE, 1000, 0, 0, &err), FL_OK);
    for (int t = 0; t < 1000; t++) {
        if (!(ns.abar[t] > 0 && ns.abar[t] <= 1))
            fail_msg("abar[%d] = %g not in (0, 1]", t, ns.abar[t]);
        if (t > 0 && !(ns.abar[t] < ns.abar[t - 1]))
            fail_msg("abar[%d] = %.17g not below abar[%d] = %.17g", t, ns.abar[t], t - 1, ns.abar[t - 1]);
    }
    double h = acos(-1.0) / 2.0, f0 = cos(0.008 / 1.008 * h);
    for (int t = 0; t < 998; t += 53) {
        double f = cos(((double)(t + 1) / 1000 + 0.008) / 1.008 * h);
        check_rel("cosine abar[t]", ns.abar[t], (f * f) / (f0 * f0), 1e-9);
    }
    check_rel("clipped last step", ns.abar[999], ns.abar[998] * 0.001, 1e-12);
    check_rel("abar[500]", ns.abar[500], independent_abar(FL_BETA_COSINE, 1000, 0, 0, 500), 1e-12);
    fl_noise_free(&ns);
}

/* ---- levels ---------------------------------------------------------------------------- */

/* DDPM levels are {t, sqrt(abar_t), sqrt(1 - abar_t)} at the selected timesteps, variance
 * preserving, ascending in noise; level_at agrees. */
static void test_ddpm_levels(void **state)
{
    (void)state;
    fl_noise ns;
    fl_error err;
    assert_int_equal(fl_noise_ddpm(&ns, FL_BETA_SQRT_LINEAR, 1000, 0.00085, 0.012, &err), FL_OK);
    fl_level lv[64];
    int ts[64];
    assert_int_equal(fl_noise_levels(&ns, FL_STEPS_UNIFORM, 64, lv, &err), FL_OK);
    assert_int_equal(fl_noise_timesteps(FL_STEPS_UNIFORM, 1000, 64, ts, &err), FL_OK);
    for (int i = 0; i < 64; i++) {
        assert_true(lv[i].t == ts[i]);
        check_close("alpha", lv[i].alpha, sqrt(ns.abar[ts[i]]), 0);
        check_close("sigma", lv[i].sigma, sqrt(1 - ns.abar[ts[i]]), 0);
        check_close("alpha^2 + sigma^2", lv[i].alpha * lv[i].alpha + lv[i].sigma * lv[i].sigma, 1, 1e-15);
        if (i > 0)
            assert_true(lv[i].sigma > lv[i - 1].sigma);
        fl_level at;
        assert_int_equal(fl_noise_level_at(&ns, ts[i], &at, &err), FL_OK);
        assert_memory_equal(&at, &lv[i], sizeof at);
    }
    check_close("levels[0].alpha", lv[0].alpha, sqrt(0.99915), 1e-15);
    assert_int_equal(fl_noise_levels(&ns, FL_STEPS_LDM, 50, lv, &err), FL_OK);
    assert_true(lv[0].t == 1 && lv[49].t == 981);
    fl_noise_free(&ns);
}

/* Flow levels with shift s: sigma_i = s u / (1 + (s-1) u), u = (i+1)/S, alpha = 1 - sigma,
 * t = 1000 sigma. s = 3, S = 4: u = 1/4, 1/2, 3/4, 1 -> sigma = 1/2, 3/4, 9/10, 1. s = 1
 * leaves the grid uniform. The top level is pure noise. */
static void test_flow_levels(void **state)
{
    (void)state;
    fl_noise ns;
    fl_error err;
    assert_int_equal(fl_noise_flow(&ns, 3.0, &err), FL_OK);
    assert_int_equal(ns.kind, FL_NOISE_FLOW);
    assert_null(ns.abar);
    fl_level lv[10];
    assert_int_equal(fl_noise_levels(&ns, FL_STEPS_UNIFORM, 4, lv, &err), FL_OK);
    static const double want[4] = { 0.5, 0.75, 0.9, 1.0 };
    for (int i = 0; i < 4; i++) {
        check_close("sigma", lv[i].sigma, want[i], 1e-15);
        check_close("alpha", lv[i].alpha, 1 - want[i], 1e-15);
        check_close("t", lv[i].t, 1000 * want[i], 1e-12);
    }
    assert_true(lv[3].alpha == 0 && lv[3].sigma == 1 && lv[3].t == 1000);
    fl_noise_free(&ns);
    assert_int_equal(fl_noise_flow(&ns, 1.0, &err), FL_OK);
    assert_int_equal(fl_noise_levels(&ns, FL_STEPS_UNIFORM, 10, lv, &err), FL_OK);
    for (int i = 0; i < 10; i++)
        check_close("unshifted sigma", lv[i].sigma, (i + 1) / 10.0, 1e-15);
    /* level_at: t is 1000 sigma, already shifted. */
    fl_level at;
    assert_int_equal(fl_noise_level_at(&ns, 250, &at, &err), FL_OK);
    assert_true(at.t == 250 && at.alpha == 0.75 && at.sigma == 0.25);
    assert_int_equal(fl_noise_level_at(&ns, 0, &at, &err), FL_OK);
    assert_true(at.t == 0 && at.alpha == 1 && at.sigma == 0);
    fl_noise_free(&ns);
}

/* ---- errors ---------------------------------------------------------------------------- */

/* Each bad input gives its documented code and a message naming the value; a failed
 * constructor leaves the schedule zeroed, so fl_noise_free stays safe. */
static void test_bad_inputs(void **state)
{
    (void)state;
    fl_noise ns;
    fl_error err;
    int ts[8];
    fl_level lv[8];

    memset(&ns, 0x5A, sizeof ns);
    expect_error(fl_noise_ddpm(&ns, FL_BETA_LINEAR, 0, 1e-4, 0.02, &err), &err, FL_E_RANGE,
                 "noise.steps (training timesteps T): expected 1..1000000, got 0");
    assert_null(ns.abar);
    fl_noise_free(&ns);
    expect_error(fl_noise_ddpm(&ns, FL_BETA_LINEAR, 1000001, 1e-4, 0.02, &err), &err, FL_E_RANGE,
                 "got 1000001");
    expect_error(fl_noise_ddpm(&ns, FL_BETA_SQRT_LINEAR, 1000, 0, 0.012, &err), &err, FL_E_RANGE,
                 "noise.beta: expected 0 < start <= end < 1, got start=0, end=0.012");
    expect_error(fl_noise_ddpm(&ns, FL_BETA_LINEAR, 1000, 0.02, 0.01, &err), &err, FL_E_RANGE,
                 "got start=0.02, end=0.01");
    expect_error(fl_noise_ddpm(&ns, FL_BETA_LINEAR, 1000, 0.1, 1.0, &err), &err, FL_E_RANGE, "end=1");
    expect_error(fl_noise_ddpm(&ns, FL_BETA_LINEAR, 1000, NAN, 0.02, &err), &err, FL_E_RANGE, "start=nan");
    expect_error(fl_noise_ddpm(&ns, FL_BETA_LINEAR, 1000, 0.01, INFINITY, &err), &err, FL_E_RANGE, "end=inf");
    expect_error(fl_noise_ddpm(&ns, (fl_beta_kind)9, 1000, 1e-4, 0.02, &err), &err, FL_E_INVALID,
                 "noise.beta_schedule: unknown kind 9");
    assert_null(ns.abar);

    expect_error(fl_noise_flow(&ns, 0, &err), &err, FL_E_RANGE, "noise.shift: expected a finite value > 0, got 0");
    expect_error(fl_noise_flow(&ns, -2, &err), &err, FL_E_RANGE, "got -2");
    expect_error(fl_noise_flow(&ns, NAN, &err), &err, FL_E_RANGE, "got nan");
    expect_error(fl_noise_flow(&ns, INFINITY, &err), &err, FL_E_RANGE, "got inf");

    expect_error(fl_noise_timesteps(FL_STEPS_UNIFORM, 1000, 0, ts, &err), &err, FL_E_RANGE,
                 "sampling steps S: expected 1..T=1000, got 0");
    expect_error(fl_noise_timesteps(FL_STEPS_UNIFORM, 1000, 1001, ts, &err), &err, FL_E_RANGE, "got 1001");
    expect_error(fl_noise_timesteps(FL_STEPS_LDM, 8, 8, ts, &err), &err, FL_E_RANGE,
                 "ldm spacing needs S < T=8 (its +1 offset would reach t=8), got 8");
    expect_error(fl_noise_timesteps(FL_STEPS_UNIFORM, 0, 1, ts, &err), &err, FL_E_RANGE, "got 0");
    expect_error(fl_noise_timesteps((fl_steps_kind)5, 1000, 4, ts, &err), &err, FL_E_INVALID,
                 "noise.spacing: unknown kind 5");

    /* A zeroed schedule is "not built" (FL_NOISE_DDPM with no table). */
    fl_noise zero;
    memset(&zero, 0, sizeof zero);
    expect_error(fl_noise_levels(&zero, FL_STEPS_UNIFORM, 4, lv, &err), &err, FL_E_INVALID,
                 "noise: schedule is not built");
    expect_error(fl_noise_level_at(&zero, 0, lv, &err), &err, FL_E_INVALID, "not built");
    expect_error(fl_noise_levels(NULL, FL_STEPS_UNIFORM, 4, lv, &err), &err, FL_E_INVALID, "not built");

    assert_int_equal(fl_noise_ddpm(&ns, FL_BETA_LINEAR, 8, 1e-4, 0.02, &err), FL_OK);
    expect_error(fl_noise_levels(&ns, FL_STEPS_UNIFORM, 9, lv, &err), &err, FL_E_RANGE,
                 "sampling steps S: expected 1..T=8, got 9");
    expect_error(fl_noise_levels(&ns, FL_STEPS_LDM, 8, lv, &err), &err, FL_E_RANGE, "ldm spacing needs S < T=8");
    expect_error(fl_noise_level_at(&ns, 8, lv, &err), &err, FL_E_RANGE,
                 "noise level: t expected an integer in 0..7, got 8");
    expect_error(fl_noise_level_at(&ns, 2.5, lv, &err), &err, FL_E_RANGE, "got 2.5");
    expect_error(fl_noise_level_at(&ns, -1, lv, &err), &err, FL_E_RANGE, "got -1");
    expect_error(fl_noise_level_at(&ns, NAN, lv, &err), &err, FL_E_RANGE, "got nan");
    fl_noise_free(&ns);

    assert_int_equal(fl_noise_flow(&ns, 3, &err), FL_OK);
    expect_error(fl_noise_levels(&ns, FL_STEPS_LDM, 4, lv, &err), &err, FL_E_INVALID,
                 "noise.spacing: ldm applies to DDPM schedules; a flow schedule takes uniform");
    expect_error(fl_noise_levels(&ns, FL_STEPS_UNIFORM, 0, lv, &err), &err, FL_E_RANGE,
                 "sampling steps S: expected 1..1000000, got 0");
    expect_error(fl_noise_level_at(&ns, 1000.5, lv, &err), &err, FL_E_RANGE,
                 "t expected in [0, 1000] (1000 sigma), got 1000.5");
    fl_noise_free(&ns);

    /* A NULL error record still gets the code. */
    assert_int_equal(fl_noise_flow(&ns, -1, NULL), FL_E_RANGE);
}

/* fl_noise_free on a freed, zeroed or NULL schedule does nothing. */
static void test_free_is_safe(void **state)
{
    (void)state;
    fl_noise ns;
    fl_error err;
    assert_int_equal(fl_noise_ddpm(&ns, FL_BETA_COSINE, 100, 0, 0, &err), FL_OK);
    fl_noise_free(&ns);
    fl_noise_free(&ns);
    fl_noise_free(NULL);
    memset(&ns, 0, sizeof ns);
    fl_noise_free(&ns);
    assert_null(ns.abar);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_names_round_trip),
        cmocka_unit_test(test_uniform_steps_s64),
        cmocka_unit_test(test_uniform_steps_ties_and_ends),
        cmocka_unit_test(test_uniform_steps_never_repeat),
        cmocka_unit_test(test_ldm_steps_s50),
        cmocka_unit_test(test_ldm_and_leading_non_divisor),
        cmocka_unit_test(test_sqrt_linear_table),
        cmocka_unit_test(test_linear_table),
        cmocka_unit_test(test_cosine_table),
        cmocka_unit_test(test_ddpm_levels),
        cmocka_unit_test(test_flow_levels),
        cmocka_unit_test(test_bad_inputs),
        cmocka_unit_test(test_free_is_safe),
    };
    return cmocka_run_group_tests_name("noise", tests, NULL, NULL);
}
