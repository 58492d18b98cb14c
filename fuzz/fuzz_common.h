/* What every checkpoint fuzz target does with an input that opens: list it, load every
 * tensor (and convert the float ones), bind a few names. Crashes and sanitizer reports
 * are the findings; error returns are expected. */
#ifndef FL_FUZZ_COMMON_H
#define FL_FUZZ_COMMON_H

#include <stdint.h>
#include <stdio.h>

#include "models/checkpoint.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static volatile unsigned char fuzz_sink; /* keeps the reads of loaded bytes */

static void exercise(fl_ckpt *c)
{
    static FILE *null;
    if (!null)
        null = fopen("/dev/null", "w");
    if (null)
        fl_ckpt_list(null, c, NULL);
    fl_error err;
    for (size_t i = 0; i < fl_ckpt_count(c); i++) {
        const fl_ckpt_tensor *t = fl_ckpt_at(c, i);
        if (t->nbytes > (1u << 22)) /* zip bombs: a tiny input may declare a huge storage */
            continue;
        fl_tensor x = FL_TENSOR_NULL;
        if (fl_ckpt_load(c, t, &x, &err) == FL_OK) {
            const unsigned char *p = fl_tensor_data(&x);
            for (size_t k = 0; k < fl_tensor_nbytes(&x); k++)
                fuzz_sink ^= p[k];
            fl_tensor_release(&x);
        }
        if (fl_ckpt_load_as(c, t, FL_F32, &x, &err) == FL_OK)
            fl_tensor_release(&x);
        if (fl_ckpt_find(c, t->name) == NULL)
            __builtin_trap(); /* every listed name must be found */
    }
    fl_tensor a = FL_TENSOR_NULL, b = FL_TENSOR_NULL;
    fl_ckpt_want w[] = { { "weight", FL_F32, 2, { 2, 3 }, &a, false }, { "bias", FL_F32, 1, { 4 }, &b, true } };
    const char *allow[] = { "*.num_batches_tracked", NULL };
    fl_bind_options opt = { "a.", allow, true };
    fl_bind_report rep = { 0 };
    if (fl_ckpt_bind(c, w, 2, &opt, &rep, &err) == FL_OK) {
        fl_tensor_release(&a);
        fl_tensor_release(&b);
    }
    fl_bind_report_free(&rep);
}

#endif
