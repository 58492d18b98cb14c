/* cmocka suite for schedulers/sampler: parameterizations, DDIM/DDPM/Euler updates, inversion, errors. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/rng.h"
#include "schedulers/noise.h"
#include "schedulers/sampler.h"

/* ---- helpers ------------------------------------------------------------------------ */

#define N 4096 /* elements per frame in the deterministic tests */

static void *xmalloc(size_t bytes)
{
    void *p = malloc(bytes);
    assert_non_null(p);
    return p;
}

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

/* Standard normals from the test stream; `frame` tells independent draws apart. */
static void normals(uint32_t frame, float *out, size_t n)
{
    fl_rng rng;
    fl_rng_init(&rng, 20240525);
    fl_rng_addr a = { FL_RNG_STREAM_TEST, frame, 0 };
    fl_rng_normal(&rng, a, 0, n, out);
}

static fl_level lvl(double t, double alpha, double sigma)
{
    fl_level l = { t, alpha, sigma };
    return l;
}

/* A VP level of a given abar, as a DDPM table gives it. */
static fl_level vp(double t, double abar)
{
    return lvl(t, sqrt(abar), sqrt(1 - abar));
}

/* VideoCrafter2's 64 levels (sqrt_linear 0.00085 -> 0.012, uniform spacing). */
static void vc2_levels(fl_level lv[64])
{
    fl_noise ns;
    fl_error err;
    assert_int_equal(fl_noise_ddpm(&ns, FL_BETA_SQRT_LINEAR, 1000, 0.00085, 0.012, &err), FL_OK);
    assert_int_equal(fl_noise_levels(&ns, FL_STEPS_UNIFORM, 64, lv, &err), FL_OK);
    fl_noise_free(&ns);
}

/* Flow levels, shift 3, S steps. */
static void flow_levels(int S, fl_level *lv)
{
    fl_noise ns;
    fl_error err;
    assert_int_equal(fl_noise_flow(&ns, 3.0, &err), FL_OK);
    assert_int_equal(fl_noise_levels(&ns, FL_STEPS_UNIFORM, S, lv, &err), FL_OK);
    fl_noise_free(&ns);
}

/* x = alpha x0 + sigma eps (double, then float), and the model output of param p for it. */
static void make_frame(fl_param p, fl_level lv, const float *x0, const float *eps, float *x,
                       float *out)
{
    fl_error err;
    for (size_t i = 0; i < N; i++)
        x[i] = (float)(lv.alpha * x0[i] + lv.sigma * eps[i]);
    assert_int_equal(fl_param_from_x0_eps(p, lv, x0, eps, out, N, &err), FL_OK);
}

/* Largest |a - b| relative to 1 + |b|, for float results computed from float inputs. */
static double max_err(const float *a, const float *b, size_t n)
{
    double m = 0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)a[i] - (double)b[i]) / (1 + fabs((double)b[i]));
        if (!(e <= m))
            m = isnan(e) ? INFINITY : e;
    }
    return m;
}

static const fl_sampler ddim0 = { FL_SAMPLER_DDIM, 0.0 }, ddim1 = { FL_SAMPLER_DDIM, 1.0 },
                        ddpm = { FL_SAMPLER_DDPM, 0.0 }, euler = { FL_SAMPLER_EULER, 0.0 };
static const fl_param all_params[4] = { FL_PARAM_EPS, FL_PARAM_X0, FL_PARAM_V, FL_PARAM_FLOW };

/* ---- names ---------------------------------------------------------------------------- */

/* Names parse back to their kind; an unknown name is refused listing the accepted ones. */
static void test_names_round_trip(void **state)
{
    (void)state;
    fl_error err;
    for (int k = 0; k < 3; k++) {
        fl_sampler_kind s;
        assert_int_equal(fl_sampler_kind_parse(fl_sampler_kind_name((fl_sampler_kind)k), &s, &err), FL_OK);
        assert_int_equal(s, k);
    }
    assert_string_equal(fl_sampler_kind_name(FL_SAMPLER_EULER), "euler");
    assert_string_equal(fl_sampler_kind_name((fl_sampler_kind)3), "?");
    fl_sampler_kind s;
    expect_error(fl_sampler_kind_parse("heun", &s, &err), &err, FL_E_INVALID,
                 "sampler: unknown value \"heun\"; accepted: ddim, ddpm, euler");
}

/* ---- parameterizations ---------------------------------------------------------------- */

/* At every level of each family the predict map (x, out) -> (x0, eps) is the exact inverse
 * of the frame/output map (x0, eps) -> (x, out) (matrix product = identity to 1e-12), and
 * float buffers survive the eps -> out -> (x0, eps) round trip within float rounding. */
static void test_param_round_trips(void **state)
{
    (void)state;
    fl_level vc2[64], fl[8];
    vc2_levels(vc2);
    flow_levels(8, fl);
    const fl_level vps[] = { vc2[0], vc2[20], vc2[63], vp(0, 0.5), lvl(0, 1, 0), lvl(1000, 0, 1) };
    const fl_level flows[] = { fl[0], fl[3], fl[6], lvl(0, 1, 0) };
    const fl_level general[] = { lvl(0, 2.0, 0.5), lvl(0, 0.3, 3.0) };
    float *x0 = xmalloc(N * sizeof *x0), *eps = xmalloc(N * sizeof *eps), *x = xmalloc(N * sizeof *x),
          *out = xmalloc(N * sizeof *out), *x0b = xmalloc(N * sizeof *x0b), *epsb = xmalloc(N * sizeof *epsb);
    normals(1, x0, N);
    normals(2, eps, N);
    fl_error err;
    for (int pi = 0; pi < 4; pi++) {
        fl_param p = all_params[pi];
        fl_level lv[16];
        size_t nl = 0;
        if (p != FL_PARAM_FLOW)
            for (size_t k = 0; k < sizeof vps / sizeof vps[0]; k++)
                lv[nl++] = vps[k];
        if (p != FL_PARAM_V)
            for (size_t k = 0; k < sizeof flows / sizeof flows[0]; k++)
                lv[nl++] = flows[k];
        if (p == FL_PARAM_EPS || p == FL_PARAM_X0)
            for (size_t k = 0; k < sizeof general / sizeof general[0]; k++)
                lv[nl++] = general[k];
        for (size_t k = 0; k < nl; k++) {
            double a = lv[k].alpha, s = lv[k].sigma;
            if ((p == FL_PARAM_EPS && a == 0) || (p == FL_PARAM_X0 && s == 0))
                continue; /* x0 (resp. eps) is not recoverable there; see test_bad_inputs */
            fl_param_coef c;
            assert_int_equal(fl_param_coefs(p, lv[k], &c, &err), FL_OK);
            /* (x, out) from (x0, eps): x = a x0 + s eps, out = k0 x0 + ke eps. */
            double k0 = p == FL_PARAM_EPS ? 0 : p == FL_PARAM_X0 ? 1 : p == FL_PARAM_V ? -s : -1;
            double ke = p == FL_PARAM_EPS ? 1 : p == FL_PARAM_X0 ? 0 : p == FL_PARAM_V ? a : 1;
            check_close("x0 <- x0", c.x0_x * a + c.x0_out * k0, 1, 1e-12);
            check_close("x0 <- eps", c.x0_x * s + c.x0_out * ke, 0, 1e-12);
            check_close("eps <- x0", c.eps_x * a + c.eps_out * k0, 0, 1e-12);
            check_close("eps <- eps", c.eps_x * s + c.eps_out * ke, 1, 1e-12);
            make_frame(p, lv[k], x0, eps, x, out);
            assert_int_equal(fl_predict_x0_eps(p, lv[k], x, out, x0b, epsb, N, &err), FL_OK);
            /* Float rounding of x and out, amplified by the map's coefficients (the errors
             * measured are about a quarter of this). */
            double amp = 1 + fabs(c.x0_x) + fabs(c.x0_out) + fabs(c.eps_x) + fabs(c.eps_out);
            double tol = 2 * FLT_EPSILON * amp;
            double e0 = max_err(x0b, x0, N), e1 = max_err(epsb, eps, N);
            if (!(e0 <= tol && e1 <= tol))
                fail_msg("param %s level (%g, %g): x0 err %.3g, eps err %.3g, tol %.3g",
                         fl_param_name(p), a, s, e0, e1, tol);
        }
    }
    /* In place: x0 over x and eps over out give the same numbers. */
    fl_level l = vc2[30];
    make_frame(FL_PARAM_V, l, x0, eps, x, out);
    assert_int_equal(fl_predict_x0_eps(FL_PARAM_V, l, x, out, x0b, epsb, N, &err), FL_OK);
    assert_int_equal(fl_predict_x0_eps(FL_PARAM_V, l, x, out, x, out, N, &err), FL_OK);
    assert_memory_equal(x, x0b, N * sizeof *x);
    assert_memory_equal(out, epsb, N * sizeof *out);
    free(x0), free(eps), free(x), free(out), free(x0b), free(epsb);
}

/* ---- DDIM ------------------------------------------------------------------------------ */

/* DDIM(eta = 0) given the exact model output lands on the closed form alpha' x0 + sigma' eps
 * (within 4e-7 relative to 1 + |.|: float rounding of x), for eps, x0 and v outputs, over
 * VideoCrafter2's levels: every step i -> i-1, and from two levels straight to clean. */
static void test_ddim_closed_form(void **state)
{
    (void)state;
    fl_level lv[64];
    vc2_levels(lv);
    float *x0 = xmalloc(N * sizeof *x0), *eps = xmalloc(N * sizeof *eps), *x = xmalloc(N * sizeof *x),
          *out = xmalloc(N * sizeof *out), *got = xmalloc(N * sizeof *got), *want = xmalloc(N * sizeof *want);
    normals(3, x0, N);
    normals(4, eps, N);
    fl_error err;
    const fl_param ps[3] = { FL_PARAM_EPS, FL_PARAM_X0, FL_PARAM_V };
    for (int pi = 0; pi < 3; pi++) {
        for (int i = 1; i <= 64; i++) {
            fl_level from = lv[i < 64 ? i : 63], to = i < 64 ? lv[i - 1] : fl_level_clean();
            if (i == 64 && pi == 0)
                from = lv[10]; /* also a mid level straight to clean */
            make_frame(ps[pi], from, x0, eps, x, out);
            assert_int_equal(fl_sampler_step(&ddim0, ps[pi], from, to, x, out, NULL, got, N, &err), FL_OK);
            for (size_t k = 0; k < N; k++)
                want[k] = (float)(to.alpha * x0[k] + to.sigma * eps[k]);
            double e = max_err(got, want, N);
            if (!(e <= 4e-7))
                fail_msg("param %s, t=%g -> t=%g: max error %.3g", fl_param_name(ps[pi]), from.t, to.t, e);
        }
    }
    free(x0), free(eps), free(x), free(out), free(got), free(want);
}

/* The coefficients agree with VideoCrafter2's ddim_step written out on abar:
 *   x0 = (x - sqrt(1-a) e) / sqrt(a),  s = eta sqrt((1-a')/(1-a)) sqrt(1 - a/a'),
 *   x' = sqrt(a') x0 + sqrt(1 - a' - s^2) e + s z    (eps output),
 * for eta = 0, 0.5, 1 and steps across the table. */
static void test_ddim_matches_vc2_formula(void **state)
{
    (void)state;
    fl_level lv[64];
    vc2_levels(lv);
    fl_error err;
    static const double etas[3] = { 0, 0.5, 1 };
    static const int from_i[5] = { 1, 2, 17, 40, 63 };
    for (int ei = 0; ei < 3; ei++)
        for (int k = 0; k < 5; k++) {
            fl_sampler s = { FL_SAMPLER_DDIM, etas[ei] };
            fl_level from = lv[from_i[k]], to = lv[from_i[k] - 1];
            double a = from.alpha * from.alpha, a2 = to.alpha * to.alpha;
            double sd = etas[ei] * sqrt((1 - a2) / (1 - a)) * sqrt(1 - a / a2);
            double ce = sqrt(1 - a2 - sd * sd);
            fl_step_coef c;
            assert_int_equal(fl_sampler_coef(&s, FL_PARAM_EPS, from, to, &c, &err), FL_OK);
            check_close("ddim x coefficient", c.x, sqrt(a2) / sqrt(a), 1e-12);
            check_close("ddim out coefficient", c.out, -sqrt(a2) * sqrt(1 - a) / sqrt(a) + ce, 1e-12);
            check_close("ddim z coefficient", c.z, sd, 1e-12);
        }
}

/* Identity at to == from (VideoCrafter2's step at index 0): x_next is x bit for bit for
 * every sampler and eta, needs no noise and no model output, and ignores a non-finite one. */
static void test_identity_step(void **state)
{
    (void)state;
    fl_level lv[64], fl[4];
    vc2_levels(lv);
    flow_levels(4, fl);
    float *x = xmalloc(N * sizeof *x), *out = xmalloc(N * sizeof *out), *got = xmalloc(N * sizeof *got);
    normals(5, x, N);
    for (size_t i = 0; i < N; i++)
        out[i] = NAN;
    fl_error err;
    const fl_sampler *ss[4] = { &ddim0, &ddim1, &ddpm, &euler };
    for (int k = 0; k < 4; k++) {
        fl_level l = ss[k] == &euler ? fl[1] : lv[0];
        assert_int_equal(fl_sampler_needs_noise(ss[k], l, l), 0);
        memset(got, 0, N * sizeof *got);
        assert_int_equal(fl_sampler_step(ss[k], FL_PARAM_EPS, l, l, x, out, NULL, got, N, &err), FL_OK);
        assert_memory_equal(got, x, N * sizeof *x);
        memset(got, 0, N * sizeof *got);
        assert_int_equal(fl_sampler_step(ss[k], FL_PARAM_X0, l, l, x, NULL, NULL, got, N, &err), FL_OK);
        assert_memory_equal(got, x, N * sizeof *x);
        fl_step_coef c;
        assert_int_equal(fl_sampler_coef(ss[k], FL_PARAM_X0, l, l, &c, &err), FL_OK);
        assert_true(c.x == 1 && c.out == 0 && c.z == 0);
    }
    /* Even at pure noise with an eps output (where x0 is unknowable) the identity is fine. */
    assert_int_equal(fl_sampler_step(&ddim1, FL_PARAM_EPS, fl[3], fl[3], x, out, NULL, got, N, &err), FL_OK);
    free(x), free(out), free(got);
}

/* To clean, every sampler lands on x0_hat (fl_predict_x0_eps) and draws no noise, even
 * DDPM and DDIM(eta = 1). */
static void test_to_clean_gives_x0(void **state)
{
    (void)state;
    fl_level lv[64], fl[6];
    vc2_levels(lv);
    flow_levels(6, fl);
    float *x = xmalloc(N * sizeof *x), *out = xmalloc(N * sizeof *out), *got = xmalloc(N * sizeof *got),
          *x0 = xmalloc(N * sizeof *x0);
    normals(6, x, N);
    normals(7, out, N);
    fl_error err;
    const fl_sampler *ss[4] = { &ddim0, &ddim1, &ddpm, &euler };
    for (int k = 0; k < 4; k++)
        for (int pi = 0; pi < 4; pi++) {
            fl_param p = all_params[pi];
            int flow = ss[k] == &euler || p == FL_PARAM_FLOW;
            if (flow && p == FL_PARAM_V)
                continue;
            fl_level from = flow ? fl[2] : lv[5];
            fl_level clean = fl_level_clean();
            assert_int_equal(fl_sampler_needs_noise(ss[k], from, clean), 0);
            assert_int_equal(fl_sampler_step(ss[k], p, from, clean, x, out, NULL, got, N, &err), FL_OK);
            assert_int_equal(fl_predict_x0_eps(p, from, x, out, x0, NULL, N, &err), FL_OK);
            double e = max_err(got, x0, N);
            if (!(e <= 4e-7))
                fail_msg("%s, param %s: max |x_next - x0_hat| %.3g", fl_sampler_kind_name(ss[k]->kind),
                         fl_param_name(p), e);
        }
    free(x), free(out), free(got), free(x0);
}

/* DDIM(eta = 0) is invertible step by step: stepping t -> t' and then inverting t' -> t
 * with the same model output returns x within 1e-6 (relative to 1 + |x|), for eps and x0
 * outputs at the ends and the middle of VideoCrafter2's table, and for flow outputs on flow
 * levels. (Not for v: the same v means a different (x0, eps) at t and at t'.) */
static void test_ddim_inversion(void **state)
{
    (void)state;
    fl_level lv[64], fl[8];
    vc2_levels(lv);
    flow_levels(8, fl);
    float *x = xmalloc(N * sizeof *x), *out = xmalloc(N * sizeof *out), *fwd = xmalloc(N * sizeof *fwd),
          *back = xmalloc(N * sizeof *back);
    normals(8, x, N);
    normals(9, out, N);
    fl_error err;
    static const int from_i[4] = { 1, 2, 32, 63 };
    for (int pi = 0; pi < 2; pi++)
        for (int k = 0; k < 4; k++) {
            fl_level from = lv[from_i[k]], to = lv[from_i[k] - 1];
            fl_param p = all_params[pi];
            assert_int_equal(fl_sampler_step(&ddim0, p, from, to, x, out, NULL, fwd, N, &err), FL_OK);
            assert_int_equal(fl_sampler_invert(p, to, from, fwd, out, back, N, &err), FL_OK);
            double e = max_err(back, x, N);
            if (!(e <= 1e-6))
                fail_msg("param %s, t=%g <-> t=%g: max error %.3g", fl_param_name(p), from.t, to.t, e);
        }
    for (int i = 1; i < 7; i++) {
        assert_int_equal(fl_sampler_step(&ddim0, FL_PARAM_FLOW, fl[i], fl[i - 1], x, out, NULL, fwd, N, &err), FL_OK);
        assert_int_equal(fl_sampler_invert(FL_PARAM_FLOW, fl[i - 1], fl[i], fwd, out, back, N, &err), FL_OK);
        double e = max_err(back, x, N);
        if (!(e <= 1e-6))
            fail_msg("flow, sigma=%g <-> %g: max error %.3g", fl[i].sigma, fl[i - 1].sigma, e);
    }
    free(x), free(out), free(fwd), free(back);
}

/* ---- DDPM ------------------------------------------------------------------------------ */

/* DDPM's coefficients are the textbook posterior on abar (x0 output, out = x0):
 *   mean = sqrt(a') b / (1-a) x0 + sqrt(as) (1-a') / (1-a) x,  var = (1-a') / (1-a) b,
 *   as = a / a', b = 1 - as;
 * and DDIM(eta = 1) has the same coefficients, for every param, on VP levels, flow levels
 * and a general (non-normalised) level pair. */
static void test_ddpm_matches_posterior_and_ddim1(void **state)
{
    (void)state;
    fl_level lv[64], fl[8];
    vc2_levels(lv);
    flow_levels(8, fl);
    fl_error err;
    static const int from_i[5] = { 1, 2, 17, 40, 63 };
    for (int k = 0; k < 5; k++) {
        fl_level from = lv[from_i[k]], to = lv[from_i[k] - 1];
        double a = from.alpha * from.alpha, a2 = to.alpha * to.alpha;
        double as = a / a2, b = 1 - as;
        fl_step_coef c;
        assert_int_equal(fl_sampler_coef(&ddpm, FL_PARAM_X0, from, to, &c, &err), FL_OK);
        check_close("ddpm x coefficient", c.x, sqrt(as) * (1 - a2) / (1 - a), 1e-12);
        check_close("ddpm x0 coefficient", c.out, sqrt(a2) * b / (1 - a), 1e-12);
        check_close("ddpm std", c.z, sqrt((1 - a2) / (1 - a) * b), 1e-12);
    }
    struct { fl_level from, to; int vp, flow; } pairs[] = {
        { lv[1], lv[0], 1, 0 },   { lv[33], lv[32], 1, 0 }, { lv[63], lv[62], 1, 0 },
        { lv[50], lv[10], 1, 0 }, { fl[5], fl[4], 0, 1 },   { fl[7], fl[2], 0, 1 },
        { lvl(0, 2.0, 1.0), lvl(0, 1.5, 0.3), 0, 0 },
    };
    for (size_t k = 0; k < sizeof pairs / sizeof pairs[0]; k++)
        for (int pi = 0; pi < 4; pi++) {
            fl_param p = all_params[pi];
            if ((p == FL_PARAM_V && !pairs[k].vp) || (p == FL_PARAM_FLOW && !pairs[k].flow) ||
                (p == FL_PARAM_EPS && pairs[k].from.alpha == 0))
                continue;
            fl_step_coef c1, c2;
            assert_int_equal(fl_sampler_coef(&ddpm, p, pairs[k].from, pairs[k].to, &c1, &err), FL_OK);
            assert_int_equal(fl_sampler_coef(&ddim1, p, pairs[k].from, pairs[k].to, &c2, &err), FL_OK);
            double scale = 1 + fabs(c1.x) + fabs(c1.out);
            check_close("ddpm vs ddim1: x", c1.x, c2.x, 1e-12 * scale);
            check_close("ddpm vs ddim1: out", c1.out, c2.out, 1e-12 * scale);
            check_close("ddpm vs ddim1: z", c1.z, c2.z, 1e-12);
            assert_true(c1.z > 0);
        }
}

typedef struct stats {
    double mean, var;
} stats;

static stats sample_stats(const float *x, size_t n)
{
    double s = 0, ss = 0;
    for (size_t i = 0; i < n; i++)
        s += x[i];
    double m = s / (double)n;
    for (size_t i = 0; i < n; i++)
        ss += (x[i] - m) * (x[i] - m);
    stats r = { m, ss / (double)(n - 1) };
    return r;
}

/* Empirically, over 2^20 normals from the test stream (different ones for each sampler),
 * DDPM and DDIM(eta = 1) outputs for the same x and model output have the closed-form mean
 * cx x + cout out and variance cz^2, within 5 standard errors. */
static void test_ddpm_ddim1_empirical(void **state)
{
    (void)state;
    const size_t n = (size_t)1 << 20;
    fl_level lv[64];
    vc2_levels(lv);
    float *x = xmalloc(n * sizeof *x), *out = xmalloc(n * sizeof *out), *z = xmalloc(n * sizeof *z),
          *y = xmalloc(n * sizeof *y);
    fl_error err;
    static const int from_i[2] = { 2, 45 };
    for (int k = 0; k < 2; k++) {
        fl_level from = lv[from_i[k]], to = lv[from_i[k] - 1];
        for (size_t i = 0; i < n; i++)
            x[i] = 0.75f, out[i] = -0.4f;
        fl_step_coef c;
        assert_int_equal(fl_sampler_coef(&ddpm, FL_PARAM_EPS, from, to, &c, &err), FL_OK);
        double mean = c.x * 0.75 + c.out * -0.4, var = c.z * c.z;
        const fl_sampler *ss[2] = { &ddpm, &ddim1 };
        for (int si = 0; si < 2; si++) {
            assert_int_equal(fl_sampler_needs_noise(ss[si], from, to), 1);
            normals((uint32_t)(100 + 2 * k + si), z, n);
            assert_int_equal(fl_sampler_step(ss[si], FL_PARAM_EPS, from, to, x, out, z, y, n, &err), FL_OK);
            stats st = sample_stats(y, n);
            double se_mean = sqrt(var / (double)n), se_var = var * sqrt(2.0 / (double)(n - 1));
            print_message("%s t=%g->%g: mean %.6g (want %.6g, se %.2g), var %.6g (want %.6g, se %.2g)\n",
                          fl_sampler_kind_name(ss[si]->kind), from.t, to.t, st.mean, mean, se_mean,
                          st.var, var, se_var);
            check_close("sample mean", st.mean, mean, 5 * se_mean);
            check_close("sample variance", st.var, var, 5 * se_var);
        }
    }
    free(x), free(out), free(z), free(y);
}

/* ---- flow Euler ------------------------------------------------------------------------ */

/* On flow levels Euler (x + (sigma' - sigma) u) equals DDIM(eta = 0): same coefficients
 * within 1e-12 and the same outputs within float rounding, for flow, x0 and eps outputs,
 * every step of a shifted 8-step grid and to clean. For a flow output the coefficients
 * are literally {1, sigma' - sigma}. */
static void test_euler_equals_ddim0_on_flow(void **state)
{
    (void)state;
    fl_level fl[8];
    flow_levels(8, fl);
    float *x = xmalloc(N * sizeof *x), *out = xmalloc(N * sizeof *out), *a = xmalloc(N * sizeof *a),
          *b = xmalloc(N * sizeof *b);
    normals(10, x, N);
    normals(11, out, N);
    fl_error err;
    const fl_param ps[3] = { FL_PARAM_FLOW, FL_PARAM_X0, FL_PARAM_EPS };
    for (int pi = 0; pi < 3; pi++)
        for (int i = 0; i < 8; i++) {
            fl_level from = fl[i], to = i > 0 ? fl[i - 1] : fl_level_clean();
            if (ps[pi] == FL_PARAM_EPS && from.alpha == 0)
                continue;
            fl_step_coef ce, cd;
            assert_int_equal(fl_sampler_coef(&euler, ps[pi], from, to, &ce, &err), FL_OK);
            assert_int_equal(fl_sampler_coef(&ddim0, ps[pi], from, to, &cd, &err), FL_OK);
            double scale = 1 + fabs(ce.x) + fabs(ce.out);
            check_close("euler vs ddim0: x", ce.x, cd.x, 1e-12 * scale);
            check_close("euler vs ddim0: out", ce.out, cd.out, 1e-12 * scale);
            assert_true(ce.z == 0 && cd.z == 0);
            if (ps[pi] == FL_PARAM_FLOW) {
                check_close("euler flow: x", ce.x, 1, 1e-15);
                check_close("euler flow: out", ce.out, to.sigma - from.sigma, 1e-15);
            }
            assert_int_equal(fl_sampler_step(&euler, ps[pi], from, to, x, out, NULL, a, N, &err), FL_OK);
            assert_int_equal(fl_sampler_step(&ddim0, ps[pi], from, to, x, out, NULL, b, N, &err), FL_OK);
            double e = max_err(a, b, N);
            if (!(e <= 4e-7))
                fail_msg("param %s, sigma %g -> %g: max error %.3g", fl_param_name(ps[pi]), from.sigma, to.sigma, e);
        }
    free(x), free(out), free(a), free(b);
}

/* ---- noise and aliasing ---------------------------------------------------------------- */

/* needs_noise: DDIM only with eta > 0, DDPM always, Euler never, and none of them into
 * clean, at an identity step, or for a step the sampler refuses. */
static void test_needs_noise(void **state)
{
    (void)state;
    fl_level lv[64], fl[4];
    vc2_levels(lv);
    flow_levels(4, fl);
    fl_sampler half = { FL_SAMPLER_DDIM, 0.5 }, bad = { FL_SAMPLER_DDIM, 2.0 };
    assert_int_equal(fl_sampler_needs_noise(&ddim0, lv[5], lv[4]), 0);
    assert_int_equal(fl_sampler_needs_noise(&half, lv[5], lv[4]), 1);
    assert_int_equal(fl_sampler_needs_noise(&ddim1, lv[5], lv[4]), 1);
    assert_int_equal(fl_sampler_needs_noise(&ddpm, lv[5], lv[4]), 1);
    assert_int_equal(fl_sampler_needs_noise(&ddpm, fl[2], fl[1]), 1);
    assert_int_equal(fl_sampler_needs_noise(&euler, fl[2], fl[1]), 0);
    assert_int_equal(fl_sampler_needs_noise(&ddpm, lv[5], fl_level_clean()), 0);
    assert_int_equal(fl_sampler_needs_noise(&ddpm, lv[4], lv[5]), 0);   /* refused: noisier */
    assert_int_equal(fl_sampler_needs_noise(&bad, lv[5], lv[4]), 0);    /* refused: eta */
    assert_int_equal(fl_sampler_needs_noise(&euler, lv[5], lv[4]), 0);  /* refused: not flow */
    assert_int_equal(fl_sampler_needs_noise(NULL, lv[5], lv[4]), 0);
}

/* x_next may be x or model_out: in-place results equal the out-of-place ones bit for bit
 * (stochastic DDIM, so x, out and noise all matter). */
static void test_in_place(void **state)
{
    (void)state;
    fl_level lv[64];
    vc2_levels(lv);
    float *x = xmalloc(N * sizeof *x), *out = xmalloc(N * sizeof *out), *z = xmalloc(N * sizeof *z),
          *want = xmalloc(N * sizeof *want), *buf = xmalloc(N * sizeof *buf), *buf2 = xmalloc(N * sizeof *buf2);
    normals(12, x, N);
    normals(13, out, N);
    normals(14, z, N);
    fl_error err;
    fl_sampler s = { FL_SAMPLER_DDIM, 0.7 };
    assert_int_equal(fl_sampler_step(&s, FL_PARAM_V, lv[20], lv[19], x, out, z, want, N, &err), FL_OK);
    memcpy(buf, x, N * sizeof *x);
    assert_int_equal(fl_sampler_step(&s, FL_PARAM_V, lv[20], lv[19], buf, out, z, buf, N, &err), FL_OK);
    assert_memory_equal(buf, want, N * sizeof *buf);
    memcpy(buf2, out, N * sizeof *out);
    assert_int_equal(fl_sampler_step(&s, FL_PARAM_V, lv[20], lv[19], x, buf2, z, buf2, N, &err), FL_OK);
    assert_memory_equal(buf2, want, N * sizeof *buf2);
    /* The in-place identity step leaves x as it is. */
    memcpy(buf, x, N * sizeof *x);
    assert_int_equal(fl_sampler_step(&s, FL_PARAM_V, lv[0], lv[0], buf, out, NULL, buf, N, &err), FL_OK);
    assert_memory_equal(buf, x, N * sizeof *x);
    /* n = 0 is a no-op that touches nothing, not even NULL buffers. */
    assert_int_equal(fl_sampler_step(&s, FL_PARAM_V, lv[20], lv[19], NULL, NULL, NULL, NULL, 0, &err), FL_OK);
    free(x), free(out), free(z), free(want), free(buf), free(buf2);
}

/* ---- errors ---------------------------------------------------------------------------- */

/* Every bad input gives its documented code and a message naming the value or levels at
 * fault, and leaves x_next untouched. */
static void test_bad_inputs(void **state)
{
    (void)state;
    enum { M = 16 };
    fl_level lv[64], fl[4];
    vc2_levels(lv);
    flow_levels(4, fl);
    float x[M], out[M], z[M], y[M], sentinel[M];
    for (int i = 0; i < M; i++)
        x[i] = 0.5f, out[i] = 0.25f, z[i] = 1.0f, y[i] = sentinel[i] = 123.0f;
    fl_error err;
    fl_step_coef c;
    fl_param_coef pc;
    const fl_level clean = fl_level_clean();

    /* The sampler itself. */
    fl_sampler s = { FL_SAMPLER_DDIM, 1.5 };
    expect_error(fl_sampler_check(&s, &err), &err, FL_E_RANGE, "sampler.eta: expected 0..1, got 1.5");
    s.eta = -0.1;
    expect_error(fl_sampler_step(&s, FL_PARAM_EPS, lv[3], lv[2], x, out, z, y, M, &err), &err,
                 FL_E_RANGE, "sampler.eta: expected 0..1, got -0.1");
    s.eta = NAN;
    expect_error(fl_sampler_check(&s, &err), &err, FL_E_RANGE, "got nan");
    s.kind = (fl_sampler_kind)7;
    expect_error(fl_sampler_check(&s, &err), &err, FL_E_INVALID, "sampler: unknown kind 7");
    expect_error(fl_sampler_check(NULL, &err), &err, FL_E_INVALID, "sampler: NULL");
    fl_sampler ddpm_bad_eta = { FL_SAMPLER_DDPM, 5.0 }; /* DDPM ignores eta */
    assert_int_equal(fl_sampler_check(&ddpm_bad_eta, &err), FL_OK);

    /* Parameterization. */
    expect_error(fl_sampler_step(&ddim0, (fl_param)9, lv[3], lv[2], x, out, NULL, y, M, &err), &err,
                 FL_E_INVALID, "parameterization: unknown value 9");
    expect_error(fl_param_coefs((fl_param)-1, lv[3], &pc, &err), &err, FL_E_INVALID, "parameterization");

    /* Levels that are not levels. */
    expect_error(fl_sampler_step(&ddim0, FL_PARAM_EPS, lvl(5, NAN, 0.5), lv[2], x, out, NULL, y, M, &err), &err,
                 FL_E_RANGE, "sampler: from t=5 (alpha=nan, sigma=0.5) is not a noise level");
    expect_error(fl_sampler_step(&ddim0, FL_PARAM_EPS, lv[3], lvl(0, 1, -0.1), x, out, NULL, y, M, &err), &err,
                 FL_E_RANGE, "sampler: to t=0 (alpha=1, sigma=-0.1) is not a noise level");
    expect_error(fl_sampler_step(&ddim0, FL_PARAM_EPS, lv[3], lvl(0, 0, 0), x, out, NULL, y, M, &err), &err,
                 FL_E_RANGE, "not both 0");
    expect_error(fl_sampler_step(&ddim0, FL_PARAM_EPS, lvl(INFINITY, 1, 1), lv[2], x, out, NULL, y, M, &err),
                 &err, FL_E_RANGE, "t=inf");
    expect_error(fl_param_coefs(FL_PARAM_X0, lvl(1, -1, 1), &pc, &err), &err, FL_E_RANGE,
                 "level t=1 (alpha=-1, sigma=1) is not a noise level");

    /* Direction, clean and pure-noise rules. */
    expect_error(fl_sampler_step(&ddpm, FL_PARAM_EPS, lv[2], lv[3], x, out, z, y, M, &err), &err, FL_E_RANGE,
                 "sampler ddpm: step from t=32 (alpha=");
    assert_non_null(strstr(err.msg, "to t=48 (alpha="));
    assert_non_null(strstr(err.msg, "goes to a noisier level"));
    expect_error(fl_sampler_step(&ddim0, FL_PARAM_X0, lvl(0, 2, 0), clean, x, out, NULL, y, M, &err), &err,
                 FL_E_RANGE, "sampler ddim: from t=0 (alpha=2, sigma=0) is clean; only the identity step");
    expect_error(fl_sampler_step(&ddim0, FL_PARAM_X0, lvl(1, 0, 2), lvl(2, 0, 1), x, out, NULL, y, M, &err),
                 &err, FL_E_RANGE, "to t=2 (alpha=0, sigma=1) is pure noise");

    /* Parameterization families. */
    expect_error(fl_sampler_step(&ddim0, FL_PARAM_V, fl[2], fl[1], x, out, NULL, y, M, &err), &err, FL_E_RANGE,
                 "a v output needs a variance-preserving level (alpha^2 + sigma^2 = 1 within 1e-06)");
    assert_non_null(strstr(err.msg, "sampler: from t=")); /* flow level 2 is the first non-VP one */
    expect_error(fl_sampler_step(&ddim0, FL_PARAM_FLOW, lv[3], lv[2], x, out, NULL, y, M, &err), &err,
                 FL_E_RANGE, "a flow output needs a flow level (alpha + sigma = 1 within 1e-06)");
    expect_error(fl_sampler_step(&euler, FL_PARAM_X0, lv[3], lv[2], x, out, NULL, y, M, &err), &err, FL_E_RANGE,
                 "sampler euler: from t=48 (alpha=");
    assert_non_null(strstr(err.msg, "is not a flow level"));
    expect_error(fl_sampler_step(&euler, FL_PARAM_X0, fl[2], lv[2], x, out, NULL, y, M, &err), &err, FL_E_RANGE,
                 "sampler euler: to t=32");
    expect_error(fl_sampler_step(&ddim0, FL_PARAM_EPS, fl[3], fl[2], x, out, NULL, y, M, &err), &err, FL_E_RANGE,
                 "sampler: from t=1000 (alpha=0, sigma=1): an eps output at alpha = 0 (pure noise) gives no x0");
    expect_error(fl_predict_x0_eps(FL_PARAM_EPS, fl[3], x, out, y, NULL, M, &err), &err, FL_E_RANGE,
                 "an eps output at alpha = 0");

    /* Buffers. */
    expect_error(fl_sampler_step(&ddim1, FL_PARAM_EPS, lv[3], lv[2], x, out, NULL, y, M, &err), &err,
                 FL_E_INVALID, "sampler: noise is NULL but the step is stochastic");
    expect_error(fl_sampler_step(&ddim0, FL_PARAM_EPS, lv[3], lv[2], NULL, out, NULL, y, M, &err), &err,
                 FL_E_INVALID, "sampler: x is NULL");
    expect_error(fl_sampler_step(&ddim0, FL_PARAM_EPS, lv[3], lv[2], x, NULL, NULL, y, M, &err), &err,
                 FL_E_INVALID, "sampler: model_out is NULL");
    expect_error(fl_sampler_step(&ddim0, FL_PARAM_EPS, lv[3], lv[2], x, out, NULL, NULL, M, &err), &err,
                 FL_E_INVALID, "sampler: x_next is NULL");
    expect_error(fl_predict_x0_eps(FL_PARAM_EPS, lv[3], x, NULL, y, NULL, M, &err), &err, FL_E_INVALID,
                 "predict: out is NULL");
    expect_error(fl_param_from_x0_eps(FL_PARAM_EPS, lv[3], x, NULL, y, M, &err), &err, FL_E_INVALID,
                 "param output: eps is NULL");

    /* Inversion. */
    expect_error(fl_sampler_invert(FL_PARAM_EPS, lv[3], lv[2], x, out, y, M, &err), &err, FL_E_RANGE,
                 "sampler invert: step from t=48");
    assert_non_null(strstr(err.msg, "goes to a cleaner level"));
    expect_error(fl_sampler_invert_coef(FL_PARAM_X0, clean, lv[3], &c, &err), &err, FL_E_RANGE,
                 "sampler invert: from t=0 (alpha=1, sigma=0) is clean, where an x0 output says nothing about eps");
    assert_int_equal(fl_sampler_invert_coef(FL_PARAM_EPS, clean, lv[3], &c, &err), FL_OK);

    /* None of the failures above wrote to y. */
    assert_memory_equal(y, sentinel, sizeof y);
    /* A NULL error record still gets the code. */
    assert_int_equal(fl_sampler_step(&ddim1, FL_PARAM_EPS, lv[3], lv[2], x, out, NULL, y, M, NULL), FL_E_INVALID);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_names_round_trip),
        cmocka_unit_test(test_param_round_trips),
        cmocka_unit_test(test_ddim_closed_form),
        cmocka_unit_test(test_ddim_matches_vc2_formula),
        cmocka_unit_test(test_identity_step),
        cmocka_unit_test(test_to_clean_gives_x0),
        cmocka_unit_test(test_ddim_inversion),
        cmocka_unit_test(test_ddpm_matches_posterior_and_ddim1),
        cmocka_unit_test(test_ddpm_ddim1_empirical),
        cmocka_unit_test(test_euler_equals_ddim0_on_flow),
        cmocka_unit_test(test_needs_noise),
        cmocka_unit_test(test_in_place),
        cmocka_unit_test(test_bad_inputs),
    };
    return cmocka_run_group_tests_name("sampler", tests, NULL, NULL);
}
