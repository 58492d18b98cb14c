/* libFuzzer target: any bytes as a PyTorch zip checkpoint (libzip container, data.pkl,
 * storages). */
#include "fuzz/fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fl_ckpt *c;
    fl_error err;
    fl_ckpt_options opt = { 0 };
    opt.max_pickle_bytes = 1 << 20;
    opt.root = size && data[0] & 1 ? "" : NULL; /* both root rules */
    if (fl_ckpt_open_memory(&c, data, size, "fuzz.pt", &opt, &err) == FL_OK) {
        exercise(c);
        fl_ckpt_close(c);
    }
    return 0;
}
