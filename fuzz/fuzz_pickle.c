/* libFuzzer target: any bytes as data.pkl. The pickle machine runs on them directly, then
 * inside a real torch zip (with four storages, keys "0".."3") so the tensor rebuild logic
 * sees whatever object graph they build. */
#include "fuzz/fuzz_common.h"
#include "models/pickle.h"
#include "tests/ckpt_write.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fl_pickle pk;
    fl_error err;
    fl_pickle_limits lim = { 0 };
    lim.max_objects = 1 << 20;
    if (fl_pickle_load(&pk, data, size, &lim, NULL, &err) == FL_OK)
        fl_pickle_free(&pk);
    else
        return 0; /* the archive would fail the same way */
    wbuf pkl = { 0 }, z = { 0 };
    wb_put(&pkl, data, size);
    if (torch_build(&z, "archive", &pkl, sample()->storages, 4, false, false) == 0) {
        fl_ckpt *c;
        if (fl_ckpt_open_memory(&c, z.p, z.n, "fuzz.pt", NULL, &err) == FL_OK) {
            exercise(c);
            fl_ckpt_close(c);
        }
    }
    wb_free(&pkl);
    wb_free(&z);
    return 0;
}
