/* Shared checks around the denoiser interface (core/denoiser.h). */
#include "core/denoiser.h"

#include <math.h>
#include <string.h>

static const char *const param_names[] = { "eps", "x0", "v", "flow" };

const char *fl_param_name(fl_param p)
{
    return (unsigned)p < 4 ? param_names[p] : "?";
}

fl_status fl_param_parse(const char *name, fl_param *out, fl_error *err)
{
    for (int i = 0; i < 4; i++)
        if (name && strcmp(name, param_names[i]) == 0) {
            *out = (fl_param)i;
            return FL_OK;
        }
    return fl_error_set(err, FL_E_INVALID,
                        "parameterization: unknown value \"%s\"; accepted: eps, x0, v, flow",
                        name ? name : "(null)");
}

static fl_status check_window(const fl_denoiser *d, const fl_tensor *x, const fl_level *levels,
                              const fl_tensor *out, fl_error *err)
{
    const char *m = d->vt->name;
    if (x->dtype != FL_F32 || out->dtype != FL_F32)
        return fl_error_set(err, FL_E_DTYPE, "%s: window and output must be f32", m);
    if (x->ndim != 4 || !fl_tensor_same_shape(x, out))
        return fl_error_set(err, FL_E_SHAPE, "%s: window must be [n, C, H, W] with an output of the same shape", m);
    int64_t n = x->shape[0];
    if (x->shape[1] != d->channels || x->shape[2] != d->height || x->shape[3] != d->width)
        return fl_error_set(err, FL_E_SHAPE,
                            "%s: window frames are %lldx%lldx%lld, the model takes %dx%dx%d", m,
                            (long long)x->shape[1], (long long)x->shape[2], (long long)x->shape[3],
                            d->channels, d->height, d->width);
    if (n < 1 || n > d->window || (n < d->window && !d->accepts_short))
        return fl_error_set(err, FL_E_SHAPE, "%s: window of %lld frames, the model takes %s%d", m,
                            (long long)n, d->accepts_short ? "1 to " : "exactly ", d->window);
    if (!fl_tensor_is_contiguous(x) || !fl_tensor_is_contiguous(out))
        return fl_error_set(err, FL_E_SHAPE, "%s: window and output must be contiguous", m);
    if (x->storage && out->storage && fl_tensor_data(x) == fl_tensor_data(out))
        return fl_error_set(err, FL_E_INVALID, "%s: output must not alias the window", m);
    for (int64_t j = 0; j < n; j++) {
        const fl_level *lv = &levels[j];
        if (!(isfinite(lv->t) && isfinite(lv->alpha) && isfinite(lv->sigma)) || lv->alpha < 0 ||
            lv->sigma < 0 || (lv->alpha == 0 && lv->sigma == 0))
            return fl_error_set(err, FL_E_RANGE,
                                "%s: frame %lld has an invalid noise level (t=%g, alpha=%g, sigma=%g)",
                                m, (long long)j, lv->t, lv->alpha, lv->sigma);
        if (!d->per_frame_t && (lv->alpha != levels[0].alpha || lv->sigma != levels[0].sigma))
            return fl_error_set(err, FL_E_UNSUPPORTED,
                                "%s: frame %lld has its own noise level, but the model takes one level per window",
                                m, (long long)j);
    }
    return FL_OK;
}

/* Runs eval or eval_exact with the caller's scratch arena, or with one of its own that lives
 * for this call only (so a NULL scratch keeps the call reentrant). */
static fl_status run_eval(fl_denoiser *d, int exact, const fl_tensor *x, const fl_level *levels,
                          const int32_t *cond, fl_tensor *out, fl_arena *scratch, fl_error *err)
{
    fl_status st = check_window(d, x, levels, out, err);
    if (st)
        return st;
    fl_arena own;
    if (!scratch) {
        fl_arena_init(&own, NULL, 0);
        scratch = &own;
    }
    st = (exact ? d->vt->eval_exact : d->vt->eval)(d, x, levels, cond, out, scratch, err);
    if (scratch == &own)
        fl_arena_free(&own);
    return st;
}

fl_status fl_denoiser_eval(fl_denoiser *d, const fl_tensor *x, const fl_level *levels,
                           const int32_t *cond, fl_tensor *out, fl_arena *scratch, fl_error *err)
{
    return run_eval(d, 0, x, levels, cond, out, scratch, err);
}

fl_status fl_denoiser_eval_exact(fl_denoiser *d, const fl_tensor *x, const fl_level *levels,
                                 const int32_t *cond, fl_tensor *out, fl_arena *scratch, fl_error *err)
{
    if (!d->vt->eval_exact)
        return fl_error_set(err, FL_E_UNSUPPORTED, "%s: the model cannot give its exact output",
                            d->vt->name);
    return run_eval(d, 1, x, levels, cond, out, scratch, err);
}

void fl_denoiser_free(fl_denoiser *d)
{
    if (d && d->vt->free)
        d->vt->free(d);
}
