/* libFuzzer target: any bytes as a safetensors file (header parse + validation, loads). */
#include "fuzz/fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fl_ckpt *c;
    fl_error err;
    if (fl_ckpt_open_memory(&c, data, size, "fuzz.safetensors", NULL, &err) == FL_OK) {
        exercise(c);
        fl_ckpt_close(c);
    }
    return 0;
}
