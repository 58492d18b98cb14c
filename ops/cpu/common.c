/* Helpers shared by the CPU backends: batch addressing and host storage. */
#include "cpu_internal.h"

int64_t fl_cpu_batch_count(const fl_tensor *t, int core_dims)
{
    int64_t n = 1;
    for (int i = 0; i < t->ndim - core_dims; i++)
        n *= t->shape[i];
    return n;
}

int64_t fl_cpu_batch_offset(const fl_tensor *t, int core_dims, int64_t b)
{
    int64_t off = 0;
    for (int i = t->ndim - core_dims - 1; i >= 0; i--) {
        off += (b % t->shape[i]) * t->stride[i];
        b /= t->shape[i];
    }
    return off;
}

fl_status fl_cpu_storage_new(fl_backend *be, size_t nbytes, fl_storage **out, fl_error *err)
{
    *out = fl_storage_new_cpu(be->alloc, nbytes);
    if (!*out)
        return fl_error_set(err, FL_E_NOMEM, "%s: cannot allocate %zu bytes", be->vt->name, nbytes);
    return FL_OK;
}
