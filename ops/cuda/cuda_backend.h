/* The CUDA backend's constructor, seen by ops.c only when the build found nvcc
 * (FL_HAVE_CUDA). Everything else about it is private to ops/cuda/. */
#ifndef FL_CUDA_BACKEND_H
#define FL_CUDA_BACKEND_H

#include "../backend.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Fills be->vt, be->impl and be->device for GPU `device` (be->alloc is already set by
 * the caller and is used for host-side memory). FL_E_DEVICE with the CUDA error text when
 * no usable GPU is present or `device` is out of range. On error nothing is held. */
fl_status fl_cuda_backend_init(fl_backend *be, int device, fl_error *err);

/* Number of usable CUDA devices (0 when there is no driver or no GPU). */
int fl_cuda_device_count(void);

#ifdef __cplusplus
}
#endif

#endif
