/* Samplers: DDIM(eta), DDPM ancestral and flow Euler as linear per-frame updates (see schedulers/sampler.h). */
#include "schedulers/sampler.h"

#include <math.h>
#include <string.h>

static const char *const sampler_names[] = { "ddim", "ddpm", "euler" };

/* printf arguments for a level, with LVF as its format. %.9g: enough to tell neighbouring
 * timesteps of a 1000-step table apart in a message. */
#define LVF "t=%g (alpha=%.9g, sigma=%.9g)"
#define LVA(l) (l).t, (l).alpha, (l).sigma

const char *fl_sampler_kind_name(fl_sampler_kind k)
{
    return (unsigned)k < 3 ? sampler_names[k] : "?";
}

fl_status fl_sampler_kind_parse(const char *name, fl_sampler_kind *out, fl_error *err)
{
    for (int i = 0; i < 3; i++)
        if (name && strcmp(name, sampler_names[i]) == 0) {
            *out = (fl_sampler_kind)i;
            return FL_OK;
        }
    return fl_error_set(err, FL_E_INVALID, "sampler: unknown value \"%s\"; accepted: ddim, ddpm, euler",
                        name ? name : "(null)");
}

fl_status fl_sampler_check(const fl_sampler *s, fl_error *err)
{
    if (!s)
        return fl_error_set(err, FL_E_INVALID, "sampler: NULL");
    if ((unsigned)s->kind > FL_SAMPLER_EULER)
        return fl_error_set(err, FL_E_INVALID, "sampler: unknown kind %d", (int)s->kind);
    /* eta > 1 would ask for more noise than sigma' holds (a negative variance). */
    if (s->kind == FL_SAMPLER_DDIM && !(s->eta >= 0 && s->eta <= 1))
        return fl_error_set(err, FL_E_RANGE, "sampler.eta: expected 0..1, got %g", s->eta);
    return FL_OK;
}

/* ---- levels and parameterizations ------------------------------------------------------ */

static fl_status check_level(const char *what, fl_level lv, fl_error *err)
{
    if (!(isfinite(lv.t) && isfinite(lv.alpha) && isfinite(lv.sigma)) || lv.alpha < 0 ||
        lv.sigma < 0 || (lv.alpha == 0 && lv.sigma == 0))
        return fl_error_set(err, FL_E_RANGE,
                            "%s " LVF " is not a noise level (finite, alpha >= 0, sigma >= 0, not both 0)",
                            what, LVA(lv));
    return FL_OK;
}

/* The level families a parameterization is defined on (core/denoiser.h). */
static fl_status check_family(const char *what, fl_param p, fl_level lv, fl_error *err)
{
    if (p == FL_PARAM_V) {
        double d = lv.alpha * lv.alpha + lv.sigma * lv.sigma - 1.0;
        if (!(fabs(d) <= FL_LEVEL_TOL))
            return fl_error_set(err, FL_E_RANGE,
                                "%s " LVF ": a v output needs a variance-preserving level "
                                "(alpha^2 + sigma^2 = 1 within %g), here it is 1%+.3g",
                                what, LVA(lv), FL_LEVEL_TOL, d);
    } else if (p == FL_PARAM_FLOW) {
        double d = lv.alpha + lv.sigma - 1.0;
        if (!(fabs(d) <= FL_LEVEL_TOL))
            return fl_error_set(err, FL_E_RANGE,
                                "%s " LVF ": a flow output needs a flow level "
                                "(alpha + sigma = 1 within %g), here it is 1%+.3g",
                                what, LVA(lv), FL_LEVEL_TOL, d);
    }
    return FL_OK;
}

static fl_status check_param(fl_param p, fl_error *err)
{
    if ((unsigned)p > FL_PARAM_FLOW)
        return fl_error_set(err, FL_E_INVALID, "parameterization: unknown value %d", (int)p);
    return FL_OK;
}

/* The maps of fl_param_coefs, for a level already checked. */
static fl_status param_coefs(fl_param p, fl_level lv, const char *what, fl_param_coef *c,
                             fl_error *err)
{
    double a = lv.alpha, s = lv.sigma;
    switch (p) {
    case FL_PARAM_EPS:
        if (!(a > 0))
            return fl_error_set(err, FL_E_RANGE,
                                "%s " LVF ": an eps output at alpha = 0 (pure noise) gives no x0",
                                what, LVA(lv));
        *c = (fl_param_coef){ 1.0 / a, -s / a, 0.0, 1.0 };
        break;
    case FL_PARAM_X0:
        /* sigma = 0: the frame is clean and carries no noise to estimate. */
        *c = s > 0 ? (fl_param_coef){ 0.0, 1.0, 1.0 / s, -a / s } : (fl_param_coef){ 0.0, 1.0, 0.0, 0.0 };
        break;
    case FL_PARAM_V: {
        double nn = a * a + s * s;
        *c = (fl_param_coef){ a / nn, -s / nn, s / nn, a / nn };
        break;
    }
    default: {
        double m = a + s;
        *c = (fl_param_coef){ 1.0 / m, -s / m, 1.0 / m, a / m };
        break;
    }
    }
    return FL_OK;
}

fl_status fl_param_coefs(fl_param p, fl_level lv, fl_param_coef *c, fl_error *err)
{
    fl_status st = check_param(p, err);
    if (!st)
        st = check_level("level", lv, err);
    if (!st)
        st = check_family("level", p, lv, err);
    if (!st)
        st = param_coefs(p, lv, "level", c, err);
    return st;
}

fl_status fl_predict_x0_eps(fl_param p, fl_level lv, const float *x, const float *out, float *x0,
                            float *eps, size_t n, fl_error *err)
{
    fl_param_coef c;
    fl_status st = fl_param_coefs(p, lv, &c, err);
    if (st)
        return st;
    if (n > 0 && (!x || !out))
        return fl_error_set(err, FL_E_INVALID, "predict: %s is NULL", !x ? "x" : "out");
    /* Both estimates are computed before either is stored, so x0/eps may alias x/out. */
    for (size_t i = 0; i < n; i++) {
        double xi = x[i], oi = out[i];
        double x0i = c.x0_x * xi + c.x0_out * oi, ei = c.eps_x * xi + c.eps_out * oi;
        if (x0)
            x0[i] = (float)x0i;
        if (eps)
            eps[i] = (float)ei;
    }
    return FL_OK;
}

fl_status fl_param_from_x0_eps(fl_param p, fl_level lv, const float *x0, const float *eps,
                               float *out, size_t n, fl_error *err)
{
    fl_status st = check_param(p, err);
    if (!st)
        st = check_level("level", lv, err);
    if (!st)
        st = check_family("level", p, lv, err);
    if (st)
        return st;
    if (n > 0 && (!x0 || !eps || !out))
        return fl_error_set(err, FL_E_INVALID, "param output: %s is NULL",
                            !x0 ? "x0" : !eps ? "eps" : "out");
    /* Coefficients on (x0, eps) of each parameterization's definition (core/denoiser.h). */
    double k0, ke;
    switch (p) {
    case FL_PARAM_EPS: k0 = 0.0, ke = 1.0; break;
    case FL_PARAM_X0: k0 = 1.0, ke = 0.0; break;
    case FL_PARAM_V: k0 = -lv.sigma, ke = lv.alpha; break;
    default: k0 = -1.0, ke = 1.0; break;
    }
    for (size_t i = 0; i < n; i++)
        out[i] = (float)(k0 * (double)x0[i] + ke * (double)eps[i]);
    return FL_OK;
}

/* ---- updates ------------------------------------------------------------------------- */

static int same_level(fl_level a, fl_level b)
{
    return a.alpha == b.alpha && a.sigma == b.sigma;
}

/* The checks every update shares: sampler, param, both levels valid and in p's family. */
static fl_status check_common(fl_param p, fl_level from, fl_level to, fl_error *err)
{
    fl_status st = check_param(p, err);
    if (!st)
        st = check_level("sampler: from", from, err);
    if (!st)
        st = check_level("sampler: to", to, err);
    if (!st)
        st = check_family("sampler: from", p, from, err);
    if (!st)
        st = check_family("sampler: to", p, to, err);
    return st;
}

/* Folds an update written on (x, x0_hat, eps_hat, z) into coefficients on (x, out, z). */
static fl_step_coef fold(const fl_param_coef *pc, double kx, double k0, double ke, double kz)
{
    fl_step_coef c;
    c.x = kx + k0 * pc->x0_x + ke * pc->eps_x;
    c.out = k0 * pc->x0_out + ke * pc->eps_out;
    c.z = kz;
    return c;
}

fl_status fl_sampler_coef(const fl_sampler *s, fl_param p, fl_level from, fl_level to,
                          fl_step_coef *c, fl_error *err)
{
    fl_status st = fl_sampler_check(s, err);
    if (!st)
        st = check_common(p, from, to, err);
    if (st)
        return st;
    const char *name = sampler_names[s->kind];
    if (s->kind == FL_SAMPLER_EULER) {
        const fl_level *lv = fabs(from.alpha + from.sigma - 1.0) <= FL_LEVEL_TOL ? &to : &from;
        if (!(fabs(lv->alpha + lv->sigma - 1.0) <= FL_LEVEL_TOL))
            return fl_error_set(err, FL_E_RANGE,
                                "sampler euler: %s " LVF " is not a flow level (alpha + sigma = 1 within %g)",
                                lv == &from ? "from" : "to", LVA(*lv), FL_LEVEL_TOL);
    }
    if (same_level(from, to)) {
        *c = (fl_step_coef){ 1.0, 0.0, 0.0 };
        return FL_OK;
    }
    /* SNR(to) >= SNR(from), i.e. sigma'/alpha' <= sigma/alpha, written without division. */
    if (!(from.alpha * to.sigma <= to.alpha * from.sigma))
        return fl_error_set(err, FL_E_RANGE,
                            "sampler %s: step from " LVF " to " LVF " goes to a noisier level",
                            name, LVA(from), LVA(to));
    if (!(from.sigma > 0))
        return fl_error_set(err, FL_E_RANGE,
                            "sampler %s: from " LVF " is clean; only the identity step (to = from) is allowed, got to " LVF,
                            name, LVA(from), LVA(to));
    if (!(to.alpha > 0))
        return fl_error_set(err, FL_E_RANGE,
                            "sampler %s: to " LVF " is pure noise; only the identity step (to = from) may end there",
                            name, LVA(to));
    fl_param_coef pc;
    st = param_coefs(p, from, "sampler: from", &pc, err);
    if (st)
        return st;
    double a = from.alpha, sg = from.sigma, a2 = to.alpha, s2 = to.sigma;
    /* r = ratio of the noise-to-signal ratios; 1 - r^2 as (1 - r)(1 + r) keeps its digits
     * when the two levels are close. */
    double r = (a * s2) / (a2 * sg);
    double q = (1.0 - r) * (1.0 + r);
    if (q < 0) /* only from rounding: the direction check gives r <= 1 */
        q = 0;
    switch (s->kind) {
    case FL_SAMPLER_DDIM: {
        double eta = s->eta;
        /* s_eta^2 = eta^2 sigma'^2 (1 - r^2); the eps coefficient sqrt(sigma'^2 - s_eta^2). */
        double ke = s2 * sqrt(1.0 - eta * eta * q);
        *c = fold(&pc, 0.0, a2, ke, eta * s2 * sqrt(q));
        break;
    }
    case FL_SAMPLER_DDPM:
        *c = fold(&pc, r * s2 / sg, a2 * q, 0.0, s2 * sqrt(q));
        break;
    default: {
        double d = s2 - sg;
        *c = fold(&pc, 1.0, -d, d, 0.0);
        break;
    }
    }
    return FL_OK;
}

int fl_sampler_needs_noise(const fl_sampler *s, fl_level from, fl_level to)
{
    fl_step_coef c;
    /* The noise coefficient does not depend on the parameterization; x0 is defined on
     * every level, so it never refuses a step the real param would take. */
    return fl_sampler_coef(s, FL_PARAM_X0, from, to, &c, NULL) == FL_OK && c.z > 0;
}

static fl_status apply(const char *what, fl_step_coef c, int identity, const float *x,
                       const float *out, const float *noise, float *x_next, size_t n,
                       fl_error *err)
{
    if (n == 0)
        return FL_OK;
    if (!x || !x_next || (!identity && !out))
        return fl_error_set(err, FL_E_INVALID, "%s: %s is NULL", what,
                            !x ? "x" : !x_next ? "x_next" : "model_out");
    if (c.z > 0 && !noise)
        return fl_error_set(err, FL_E_INVALID, "%s: noise is NULL but the step is stochastic", what);
    if (identity) {
        /* Bit-exact copy: going through x + 0 * out would turn a non-finite output into NaN. */
        if (x_next != x)
            memmove(x_next, x, n * sizeof *x);
        return FL_OK;
    }
    if (c.z > 0)
        for (size_t i = 0; i < n; i++)
            x_next[i] = (float)(c.x * (double)x[i] + c.out * (double)out[i] + c.z * (double)noise[i]);
    else
        for (size_t i = 0; i < n; i++)
            x_next[i] = (float)(c.x * (double)x[i] + c.out * (double)out[i]);
    return FL_OK;
}

fl_status fl_sampler_step(const fl_sampler *s, fl_param p, fl_level from, fl_level to,
                          const float *x, const float *model_out, const float *noise,
                          float *x_next, size_t n, fl_error *err)
{
    fl_step_coef c;
    fl_status st = fl_sampler_coef(s, p, from, to, &c, err);
    if (st)
        return st;
    return apply("sampler", c, same_level(from, to), x, model_out, noise, x_next, n, err);
}

fl_status fl_sampler_invert_coef(fl_param p, fl_level from, fl_level to, fl_step_coef *c,
                                 fl_error *err)
{
    fl_status st = check_common(p, from, to, err);
    if (st)
        return st;
    if (same_level(from, to)) {
        *c = (fl_step_coef){ 1.0, 0.0, 0.0 };
        return FL_OK;
    }
    if (!(from.alpha * to.sigma >= to.alpha * from.sigma))
        return fl_error_set(err, FL_E_RANGE,
                            "sampler invert: step from " LVF " to " LVF " goes to a cleaner level",
                            LVA(from), LVA(to));
    if (p == FL_PARAM_X0 && !(from.sigma > 0))
        return fl_error_set(err, FL_E_RANGE,
                            "sampler invert: from " LVF " is clean, where an x0 output says nothing about eps",
                            LVA(from));
    fl_param_coef pc;
    st = param_coefs(p, from, "sampler invert: from", &pc, err);
    if (st)
        return st;
    *c = fold(&pc, 0.0, to.alpha, to.sigma, 0.0);
    return FL_OK;
}

fl_status fl_sampler_invert(fl_param p, fl_level from, fl_level to, const float *x,
                            const float *model_out, float *x_next, size_t n, fl_error *err)
{
    fl_step_coef c;
    fl_status st = fl_sampler_invert_coef(p, from, to, &c, err);
    if (st)
        return st;
    return apply("sampler invert", c, same_level(from, to), x, model_out, NULL, x_next, n, err);
}
