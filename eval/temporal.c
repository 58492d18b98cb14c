/* Frame-level measurements: MSE/MAE/PSNR, Gaussian-window SSIM and the 3-D spectral
 * high-frequency split (see eval/temporal.h). */
#include "eval/temporal.h"

#include <complex.h>
#include <math.h>
#include <string.h>

#include "ops/ops.h"

double fl_frames_mse(const float *a, const float *b, size_t n)
{
    double s = 0.0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)a[i] - (double)b[i];
        s += d * d;
    }
    return n ? s / (double)n : NAN;
}

double fl_frames_mae(const float *a, const float *b, size_t n)
{
    double s = 0.0;
    for (size_t i = 0; i < n; i++)
        s += fabs((double)a[i] - (double)b[i]);
    return n ? s / (double)n : NAN;
}

double fl_psnr(double mse, double range)
{
    if (isnan(mse))
        return NAN;
    if (mse <= 0.0)
        return FL_PSNR_MAX;
    double p = 10.0 * log10(range * range / mse);
    return p < FL_PSNR_MAX ? p : FL_PSNR_MAX;
}

/* ---- SSIM -------------------------------------------------------------------------- */

fl_status fl_ssim_init(fl_ssim *s, int channels, int height, int width, int win, double sigma, double range,
                       const fl_allocator *alloc, fl_error *err)
{
    memset(s, 0, sizeof *s);
    if (channels < 1 || height < 1 || width < 1)
        return fl_error_set(err, FL_E_SHAPE, "ssim: frame [%d, %d, %d] must not be empty", channels, height,
                            width);
    if (win < 1 || win % 2 == 0)
        return fl_error_set(err, FL_E_INVALID, "ssim: window must be odd and >= 1, got %d", win);
    if (!(sigma > 0.0) || !isfinite(sigma) || !(range > 0.0) || !isfinite(range))
        return fl_error_set(err, FL_E_INVALID, "ssim: sigma and range must be finite and > 0, got %g and %g",
                            sigma, range);
    /* Small latents: the largest odd window that fits, sigma scaled with it, so the
     * window keeps its shape relative to its size. */
    int fit = height < width ? height : width;
    if (fit % 2 == 0)
        fit--;
    if (win > fit) {
        sigma *= (double)fit / (double)win;
        win = fit;
    }
    s->channels = channels;
    s->height = height;
    s->width = width;
    s->win = win;
    s->sigma = sigma;
    s->range = range;
    s->alloc = alloc;
    int wv = width - win + 1;
    s->scratch_len = 5 * (size_t)height * (size_t)wv;
    s->kernel = fl_alloc(alloc, (size_t)win * sizeof(double));
    s->scratch = fl_alloc(alloc, s->scratch_len * sizeof(double));
    if (!s->kernel || !s->scratch) {
        fl_ssim_free(s);
        return fl_error_set(err, FL_E_NOMEM, "ssim: out of memory for a %d x %d frame", height, width);
    }
    double sum = 0.0;
    int r = win / 2;
    for (int i = 0; i < win; i++) {
        double x = (double)(i - r);
        s->kernel[i] = exp(-x * x / (2.0 * sigma * sigma));
        sum += s->kernel[i];
    }
    for (int i = 0; i < win; i++)
        s->kernel[i] /= sum;
    return FL_OK;
}

void fl_ssim_free(fl_ssim *s)
{
    if (s->kernel)
        fl_free(s->alloc, s->kernel, (size_t)s->win * sizeof(double));
    if (s->scratch)
        fl_free(s->alloc, s->scratch, s->scratch_len * sizeof(double));
    s->kernel = NULL;
    s->scratch = NULL;
}

double fl_ssim_frames(fl_ssim *s, const float *a, const float *b)
{
    int h = s->height, w = s->width, k = s->win;
    int wv = w - k + 1, hv = h - k + 1;
    size_t plane = (size_t)h * (size_t)wv;
    double *ha = s->scratch, *hb = ha + plane, *haa = hb + plane, *hbb = haa + plane, *hab = hbb + plane;
    const double *g = s->kernel;
    double c1 = (0.01 * s->range) * (0.01 * s->range), c2 = (0.03 * s->range) * (0.03 * s->range);
    double total = 0.0;
    for (int c = 0; c < s->channels; c++) {
        const float *pa = a + (size_t)c * (size_t)h * (size_t)w, *pb = b + (size_t)c * (size_t)h * (size_t)w;
        /* Horizontal pass of the separable window over the five moments. */
        for (int y = 0; y < h; y++)
            for (int x = 0; x < wv; x++) {
                double sa = 0, sb = 0, saa = 0, sbb = 0, sab = 0;
                for (int i = 0; i < k; i++) {
                    double va = pa[(size_t)y * w + x + i], vb = pb[(size_t)y * w + x + i];
                    sa += g[i] * va;
                    sb += g[i] * vb;
                    saa += g[i] * va * va;
                    sbb += g[i] * vb * vb;
                    sab += g[i] * va * vb;
                }
                size_t o = (size_t)y * wv + x;
                ha[o] = sa;
                hb[o] = sb;
                haa[o] = saa;
                hbb[o] = sbb;
                hab[o] = sab;
            }
        double acc = 0.0;
        for (int y = 0; y < hv; y++)
            for (int x = 0; x < wv; x++) {
                double ma = 0, mb = 0, maa = 0, mbb = 0, mab = 0;
                for (int j = 0; j < k; j++) {
                    size_t o = (size_t)(y + j) * wv + x;
                    ma += g[j] * ha[o];
                    mb += g[j] * hb[o];
                    maa += g[j] * haa[o];
                    mbb += g[j] * hbb[o];
                    mab += g[j] * hab[o];
                }
                double va = maa - ma * ma, vb = mbb - mb * mb, cab = mab - ma * mb;
                acc +=
                    ((2.0 * ma * mb + c1) * (2.0 * cab + c2)) / ((ma * ma + mb * mb + c1) * (va + vb + c2));
            }
        total += acc / ((double)hv * (double)wv);
    }
    return total / (double)s->channels;
}

/* ---- spectral split ---------------------------------------------------------------- */

struct fl_spectral {
    const fl_allocator *alloc;
    fl_backend *be;
    int c, tmax, h, w;
    double cutoff;
    fl_tensor in, out; /* f64 / c128 [C, tmax, H, W] */
    double *fy, *fx;   /* squared normalised frequencies per index, [H], [W] */
};

/* Squared normalised frequency of bin k of an axis of length n (signed bin as numpy's
 * fftfreq * n; 1 = Nyquist). */
static double freq2(int k, int n)
{
    int s = k <= (n - 1) / 2 ? k : k - n;
    double f = (double)s / (0.5 * (double)n);
    return f * f;
}

void fl_spectral_free(fl_spectral *s)
{
    if (!s)
        return;
    fl_tensor_release(&s->in);
    fl_tensor_release(&s->out);
    fl_free(s->alloc, s->fy, (size_t)s->h * sizeof(double));
    fl_free(s->alloc, s->fx, (size_t)s->w * sizeof(double));
    fl_backend_free(s->be);
    fl_free(s->alloc, s, sizeof *s);
}

fl_status fl_spectral_new(int channels, int max_frames, int height, int width, double cutoff,
                          const fl_allocator *alloc, fl_spectral **out, fl_error *err)
{
    *out = NULL;
    if (channels < 1 || max_frames < 1 || height < 1 || width < 1)
        return fl_error_set(err, FL_E_SHAPE, "spectral: window [%d, %d, %d, %d] must not be empty", channels,
                            max_frames, height, width);
    if (!(cutoff > 0.0 && cutoff <= 1.0))
        return fl_error_set(err, FL_E_RANGE, "spectral: cutoff must be in (0, 1], got %g", cutoff);
    fl_spectral *s = fl_calloc(alloc, 1, sizeof *s);
    if (!s)
        return fl_error_set(err, FL_E_NOMEM, "spectral: out of memory");
    s->alloc = alloc;
    s->c = channels;
    s->tmax = max_frames;
    s->h = height;
    s->w = width;
    s->cutoff = cutoff;
    fl_status st = fl_backend_new(&s->be, "cpu", 0, alloc, err);
    int64_t shape[4] = { channels, max_frames, height, width };
    if (!st)
        st = fl_empty(s->be, &s->in, FL_F64, 4, shape, err);
    if (!st)
        st = fl_empty(s->be, &s->out, FL_C128, 4, shape, err);
    if (!st) {
        s->fy = fl_alloc(alloc, (size_t)height * sizeof(double));
        s->fx = fl_alloc(alloc, (size_t)width * sizeof(double));
        if (!s->fy || !s->fx)
            st = fl_error_set(err, FL_E_NOMEM, "spectral: out of memory");
    }
    if (st) {
        fl_spectral_free(s);
        return fl_error_prefix(err, "spectral");
    }
    for (int y = 0; y < height; y++)
        s->fy[y] = freq2(y, height);
    for (int x = 0; x < width; x++)
        s->fx[x] = freq2(x, width);
    *out = s;
    return FL_OK;
}

fl_status fl_spectral_window(fl_spectral *s, const float *const *frames, int n_frames, fl_spectral_split *out,
                             fl_error *err)
{
    out->spatial = out->temporal = out->spatiotemporal = NAN;
    out->energy = 0.0;
    if (n_frames < 1 || n_frames > s->tmax)
        return fl_error_set(err, FL_E_RANGE, "spectral: %d frames, expected 1..%d", n_frames, s->tmax);
    /* Contiguous [C, n, H, W] views at the start of the buffers: a short (trailing) window
     * is transformed at its own length. */
    int64_t shape[4] = { s->c, n_frames, s->h, s->w };
    fl_tensor vin = FL_TENSOR_NULL, vout = FL_TENSOR_NULL;
    fl_status st = fl_tensor_from_storage(&vin, s->in.storage, FL_F64, 4, shape, NULL, 0, err);
    if (!st)
        st = fl_tensor_from_storage(&vout, s->out.storage, FL_C128, 4, shape, NULL, 0, err);
    if (st)
        goto out;
    size_t hw = (size_t)s->h * (size_t)s->w, blk = (size_t)n_frames * hw;
    double *x = fl_tensor_data(&vin);
    for (int c = 0; c < s->c; c++) {
        double mean = 0.0;
        for (int t = 0; t < n_frames; t++)
            for (size_t i = 0; i < hw; i++)
                mean += frames[t][(size_t)c * hw + i];
        mean /= (double)blk;
        for (int t = 0; t < n_frames; t++)
            for (size_t i = 0; i < hw; i++)
                x[(size_t)c * blk + (size_t)t * hw + i] = (double)frames[t][(size_t)c * hw + i] - mean;
    }
    if ((st = fl_fft(s->be, &vout, &vin, 3, err)))
        goto out;
    const double _Complex *X = fl_tensor_data(&vout);
    double cut2 = s->cutoff * s->cutoff, e_all = 0.0, e_sp = 0.0, e_t = 0.0, e_st = 0.0;
    for (int c = 0; c < s->c; c++)
        for (int t = 0; t < n_frames; t++) {
            double ft = freq2(t, n_frames);
            for (int y = 0; y < s->h; y++)
                for (int xx = 0; xx < s->w; xx++) {
                    double _Complex v = X[(size_t)c * blk + (size_t)t * hw + (size_t)y * s->w + xx];
                    double e = creal(v) * creal(v) + cimag(v) * cimag(v);
                    double fs = s->fy[y] + s->fx[xx];
                    e_all += e;
                    if (fs > cut2)
                        e_sp += e;
                    if (ft > cut2)
                        e_t += e;
                    if (fs + ft > cut2)
                        e_st += e;
                }
        }
    out->energy = e_all;
    if (e_all > 0.0) {
        out->spatial = e_sp / e_all;
        out->temporal = e_t / e_all;
        out->spatiotemporal = e_st / e_all;
    }
out:
    fl_tensor_release(&vin);
    fl_tensor_release(&vout);
    return st ? fl_error_prefix(err, "spectral") : FL_OK;
}

void fl_spectral_white(int frames, int height, int width, double cutoff, fl_spectral_split *out)
{
    double cut2 = cutoff * cutoff, n_sp = 0, n_t = 0, n_st = 0;
    for (int t = 0; t < frames; t++)
        for (int y = 0; y < height; y++)
            for (int x = 0; x < width; x++) {
                double ft = freq2(t, frames), fs = freq2(y, height) + freq2(x, width);
                n_sp += fs > cut2;
                n_t += ft > cut2;
                n_st += fs + ft > cut2;
            }
    double n = (double)frames * height * width - 1.0; /* every bin but DC */
    out->spatial = n > 0 ? n_sp / n : NAN;
    out->temporal = n > 0 ? n_t / n : NAN;
    out->spatiotemporal = n > 0 ? n_st / n : NAN;
    out->energy = NAN;
}
