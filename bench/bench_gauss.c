/* Benchmark for the Gaussian testbed: milliseconds per window call of the default model
 * (f = 16, C = 3, 32x32) in each mismatch mode, median of repeats. */
#include <math.h>
#include <stdio.h>
#include <time.h>

#include "core/rng.h"
#include "models/gauss.h"

#include "bench/bench.h"



#define REPS 41

int main(void)
{
    fl_error err;
    fl_gauss_opts o;
    fl_gauss_opts_default(&o);
    enum { MAXN = 64 };
    int n = o.window < MAXN ? o.window : MAXN;
    int64_t shape[4] = { n, o.channels, o.height, o.width };
    fl_tensor x = FL_TENSOR_NULL, out = FL_TENSOR_NULL;
    if (fl_tensor_empty(&x, FL_F32, 4, shape, NULL, &err) ||
        fl_tensor_empty(&out, FL_F32, 4, shape, NULL, &err)) {
        fprintf(stderr, "bench_gauss: %s\n", fl_error_msg(&err));
        return 1;
    }
    fl_rng rng;
    fl_rng_init(&rng, 1);
    fl_rng_normal(&rng, (fl_rng_addr){ FL_RNG_STREAM_TEST, 0, 0 }, 0, (size_t)fl_tensor_numel(&x),
                  fl_tensor_data(&x));
    /* A FIFO-like window: every frame at its own level, from almost clean to almost noise. */
    fl_level lv[MAXN];
    for (int j = 0; j < n; j++) {
        double abar = 1.0 - (j + 0.5) / n;
        lv[j] = (fl_level){ 1000.0 * j / n, sqrt(abar), sqrt(1.0 - abar) };
    }
    for (int mode = FL_GAUSS_EXACT; mode <= FL_GAUSS_MEAN; mode++) {
        o.mismatch = mode;
        fl_denoiser *d = NULL;
        if (fl_gauss_new(&o, &d, &err)) {
            fprintf(stderr, "bench_gauss: %s\n", fl_error_msg(&err));
            return 1;
        }
        double t[REPS];
        for (int r = -3; r < REPS; r++) { /* three warm-up calls */
            double t0 = bench_now();
            if (fl_denoiser_eval(d, &x, lv, NULL, &out, NULL, &err)) {
                fprintf(stderr, "bench_gauss: %s\n", fl_error_msg(&err));
                return 1;
            }
            if (r >= 0)
                t[r] = bench_now() - t0;
        }
        bench_sort(t, REPS);
        printf("gauss %-5s window f=%d C=%d %dx%d: %.3f ms per call (median of %d; min %.3f)\n",
               fl_gauss_mismatch_name(mode), n, o.channels, o.height, o.width, 1e3 * t[REPS / 2], REPS,
               1e3 * t[0]);
        fl_denoiser_free(d);
    }
    fl_tensor_release(&x);
    fl_tensor_release(&out);
    return 0;
}
