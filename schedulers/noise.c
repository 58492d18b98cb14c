/* Noise schedules: DDPM ᾱ tables, the flow σ grid, and step selection (see schedulers/noise.h). */
#include "schedulers/noise.h"

#include "core/alloc.h"

#include <math.h>
#include <string.h>

/* Nichol & Dhariwal's offset and beta clip (improved-diffusion, LDM make_beta_schedule). */
#define COSINE_S 0.008
#define COSINE_MAX_BETA 0.999
#define FL_PI 3.141592653589793238462643383279502884

static const char *const beta_names[] = { "linear", "sqrt_linear", "cosine" };
static const char *const steps_names[] = { "uniform", "ldm", "leading" };

const char *fl_beta_kind_name(fl_beta_kind k)
{
    return (unsigned)k < 3 ? beta_names[k] : "?";
}

fl_status fl_beta_kind_parse(const char *name, fl_beta_kind *out, fl_error *err)
{
    for (int i = 0; i < 3; i++)
        if (name && strcmp(name, beta_names[i]) == 0) {
            *out = (fl_beta_kind)i;
            return FL_OK;
        }
    return fl_error_set(err, FL_E_INVALID,
                        "noise.beta_schedule: unknown value \"%s\"; accepted: linear, sqrt_linear, cosine",
                        name ? name : "(null)");
}

const char *fl_steps_kind_name(fl_steps_kind k)
{
    return (unsigned)k < 3 ? steps_names[k] : "?";
}

fl_status fl_steps_kind_parse(const char *name, fl_steps_kind *out, fl_error *err)
{
    for (int i = 0; i < 3; i++)
        if (name && strcmp(name, steps_names[i]) == 0) {
            *out = (fl_steps_kind)i;
            return FL_OK;
        }
    return fl_error_set(err, FL_E_INVALID,
                        "noise.spacing: unknown value \"%s\"; accepted: uniform, ldm, leading",
                        name ? name : "(null)");
}

/* numpy.linspace(a, b, num)[i] bit for bit: a + i * ((b - a) / (num - 1)), last point = b.
 * Matching numpy's arithmetic (not a formula that is merely equal on paper) is what makes
 * round() land on the same integers as the Python reference at .5 ties. */
static double linspace_at(double a, double b, int num, int i)
{
    if (num <= 1)
        return a;
    if (i == num - 1)
        return b;
    double step = (b - a) / (double)(num - 1);
    return (double)i * step + a;
}

static double cosine_f(double u)
{
    double c = cos((u + COSINE_S) / (1.0 + COSINE_S) * (FL_PI / 2.0));
    return c * c;
}

fl_status fl_noise_ddpm(fl_noise *ns, fl_beta_kind kind, int T, double beta_start,
                        double beta_end, fl_error *err)
{
    FL_ASSERT(ns != NULL);
    memset(ns, 0, sizeof *ns);
    if ((unsigned)kind > FL_BETA_COSINE)
        return fl_error_set(err, FL_E_INVALID, "noise.beta_schedule: unknown kind %d", (int)kind);
    if (T < 1 || T > FL_NOISE_T_MAX)
        return fl_error_set(err, FL_E_RANGE, "noise.steps (training timesteps T): expected 1..%d, got %d",
                            FL_NOISE_T_MAX, T);
    /* The negated form also refuses NaN. beta_end = 1 would make the last level pure noise
     * (alpha = 0), where an eps model cannot say anything about x0. */
    if (kind != FL_BETA_COSINE &&
        !(beta_start > 0 && beta_start <= beta_end && beta_end < 1 && isfinite(beta_end)))
        return fl_error_set(err, FL_E_RANGE,
                            "noise.beta: expected 0 < start <= end < 1, got start=%g, end=%g",
                            beta_start, beta_end);
    double *abar = fl_alloc(NULL, (size_t)T * sizeof *abar);
    if (!abar)
        return fl_error_set(err, FL_E_NOMEM, "noise: cannot allocate the table of %d timesteps", T);
    /* Cumulative product in timestep order, as numpy.cumprod does, so the table matches the
     * Python references to the last bit or two. */
    double prod = 1.0;
    for (int i = 0; i < T; i++) {
        double beta;
        switch (kind) {
        case FL_BETA_LINEAR:
            beta = linspace_at(beta_start, beta_end, T, i);
            break;
        case FL_BETA_SQRT_LINEAR: {
            double r = linspace_at(sqrt(beta_start), sqrt(beta_end), T, i);
            beta = r * r;
            break;
        }
        default: {
            double u1 = (double)i / T, u2 = (double)(i + 1) / T;
            beta = 1.0 - cosine_f(u2) / cosine_f(u1);
            if (beta > COSINE_MAX_BETA)
                beta = COSINE_MAX_BETA;
            break;
        }
        }
        prod *= 1.0 - beta;
        abar[i] = prod;
    }
    ns->kind = FL_NOISE_DDPM;
    ns->beta = kind;
    ns->T = T;
    ns->beta_start = beta_start;
    ns->beta_end = beta_end;
    ns->abar = abar;
    ns->shift = 1.0;
    return FL_OK;
}

fl_status fl_noise_flow(fl_noise *ns, double shift, fl_error *err)
{
    FL_ASSERT(ns != NULL);
    memset(ns, 0, sizeof *ns);
    if (!(shift > 0) || !isfinite(shift))
        return fl_error_set(err, FL_E_RANGE, "noise.shift: expected a finite value > 0, got %g", shift);
    ns->kind = FL_NOISE_FLOW;
    ns->shift = shift;
    return FL_OK;
}

void fl_noise_free(fl_noise *ns)
{
    if (!ns)
        return;
    if (ns->abar)
        fl_free(NULL, ns->abar, (size_t)ns->T * sizeof *ns->abar);
    memset(ns, 0, sizeof *ns);
}

fl_status fl_noise_timesteps(fl_steps_kind kind, int T, int S, int *ts, fl_error *err)
{
    if ((unsigned)kind > FL_STEPS_LEADING)
        return fl_error_set(err, FL_E_INVALID, "noise.spacing: unknown kind %d", (int)kind);
    if (T < 1 || T > FL_NOISE_T_MAX)
        return fl_error_set(err, FL_E_RANGE, "noise.steps (training timesteps T): expected 1..%d, got %d",
                            FL_NOISE_T_MAX, T);
    if (S < 1 || S > T)
        return fl_error_set(err, FL_E_RANGE, "sampling steps S: expected 1..T=%d, got %d", T, S);
    if (kind == FL_STEPS_LDM && S == T)
        return fl_error_set(err, FL_E_RANGE,
                            "sampling steps S: ldm spacing needs S < T=%d (its +1 offset would reach t=%d), got %d",
                            T, T, S);
    FL_ASSERT(ts != NULL);
    int c = T / S;
    for (int i = 0; i < S; i++) {
        switch (kind) {
        case FL_STEPS_UNIFORM:
            /* rint rounds half to even under the default rounding mode, as numpy.round does. */
            ts[i] = (int)rint(linspace_at(0.0, (double)(T - 1), S, i));
            break;
        case FL_STEPS_LDM:
            ts[i] = i * c + 1;
            break;
        default:
            ts[i] = i * c;
            break;
        }
        if (i > 0 && ts[i] <= ts[i - 1])
            return fl_error_set(err, FL_E_RANGE,
                                "sampling steps S: %s spacing of T=%d in S=%d steps repeats timestep %d",
                                fl_steps_kind_name(kind), T, S, ts[i]);
    }
    return FL_OK;
}

static fl_level ddpm_level(const fl_noise *ns, int t)
{
    double a = ns->abar[t];
    fl_level lv = { (double)t, sqrt(a), sqrt(1.0 - a) };
    return lv;
}

/* A flow level from an already-shifted sigma. alpha is 1 - sigma exactly as the model was
 * trained (x = (1 - sigma) x0 + sigma eps). */
static fl_level flow_level(double sigma)
{
    fl_level lv = { 1000.0 * sigma, 1.0 - sigma, sigma };
    return lv;
}

static fl_status check_noise(const fl_noise *ns, fl_error *err)
{
    if (!ns || (ns->kind == FL_NOISE_DDPM && !ns->abar) || (unsigned)ns->kind > FL_NOISE_FLOW)
        return fl_error_set(err, FL_E_INVALID, "noise: schedule is not built (call fl_noise_ddpm or fl_noise_flow)");
    return FL_OK;
}

fl_status fl_noise_levels(const fl_noise *ns, fl_steps_kind steps, int S, fl_level *levels,
                          fl_error *err)
{
    fl_status st = check_noise(ns, err);
    if (st)
        return st;
    if (ns->kind == FL_NOISE_FLOW) {
        if (steps != FL_STEPS_UNIFORM)
            return fl_error_set(err, FL_E_INVALID,
                                "noise.spacing: %s applies to DDPM schedules; a flow schedule takes uniform",
                                fl_steps_kind_name(steps));
        if (S < 1 || S > FL_NOISE_FLOW_STEPS_MAX)
            return fl_error_set(err, FL_E_RANGE, "sampling steps S: expected 1..%d, got %d",
                                FL_NOISE_FLOW_STEPS_MAX, S);
        FL_ASSERT(levels != NULL);
        double s = ns->shift;
        for (int i = 0; i < S; i++) {
            /* (i + 1) / S, with the top point exactly 1 so the last level is pure noise. */
            double u = i == S - 1 ? 1.0 : (double)(i + 1) / (double)S;
            levels[i] = flow_level(s * u / (1.0 + (s - 1.0) * u));
        }
        return FL_OK;
    }
    if (S < 1 || S > ns->T)
        return fl_error_set(err, FL_E_RANGE, "sampling steps S: expected 1..T=%d, got %d", ns->T, S);
    FL_ASSERT(levels != NULL);
    int *ts = fl_alloc(NULL, (size_t)S * sizeof *ts);
    if (!ts)
        return fl_error_set(err, FL_E_NOMEM, "noise: cannot allocate %d timesteps", S);
    st = fl_noise_timesteps(steps, ns->T, S, ts, err);
    if (!st)
        for (int i = 0; i < S; i++)
            levels[i] = ddpm_level(ns, ts[i]);
    fl_free(NULL, ts, (size_t)S * sizeof *ts);
    return st;
}

fl_status fl_noise_level_at(const fl_noise *ns, double t, fl_level *out, fl_error *err)
{
    fl_status st = check_noise(ns, err);
    if (st)
        return st;
    FL_ASSERT(out != NULL);
    if (ns->kind == FL_NOISE_FLOW) {
        if (!(t >= 0 && t <= 1000))
            return fl_error_set(err, FL_E_RANGE, "noise level: t expected in [0, 1000] (1000 sigma), got %g", t);
        *out = flow_level(t / 1000.0);
        return FL_OK;
    }
    if (!(t >= 0 && t <= ns->T - 1) || t != floor(t))
        return fl_error_set(err, FL_E_RANGE, "noise level: t expected an integer in 0..%d, got %g",
                            ns->T - 1, t);
    *out = ddpm_level(ns, (int)t);
    return FL_OK;
}
