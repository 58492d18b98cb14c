/* Matrix products through OpenBLAS: each batch item is one sgemm/dgemm call, with
 * transposed or row-strided operand views passed straight to BLAS (trans flag + leading
 * dimension) and anything else (broadcast rows, arbitrary strides) staged through a
 * contiguous copy. */
#include "cpu_internal.h"

#include <cblas.h>
#include <string.h>


/* How a rows x cols matrix view (the last two dims of t) maps onto BLAS: row-major with
 * leading dimension ld, transposed or not. False if BLAS cannot read it in place. */
static bool blas_layout(const fl_tensor *t, int64_t rows, int64_t cols, CBLAS_TRANSPOSE *trans,
                        int64_t *ld)
{
    int nd = t->ndim;
    int64_t rs = t->stride[nd - 2], cs = t->stride[nd - 1];
    if (cols == 1)
        cs = 1; /* a size-1 dim's stride is never used */
    if (rows == 1)
        rs = cols;
    if (cs == 1 && rs >= (cols > 1 ? cols : 1)) {
        *trans = CblasNoTrans;
        *ld = rs;
        return *ld <= INT32_MAX;
    }
    if (rs == 1 && cs >= (rows > 1 ? rows : 1)) {
        *trans = CblasTrans;
        *ld = cs;
        return *ld <= INT32_MAX;
    }
    return false;
}

/* A contiguous copy of src in host memory taken from be->alloc. */
static fl_status stage(fl_backend *be, const fl_tensor *src, fl_tensor *out, fl_error *err)
{
    fl_status st = fl_tensor_empty(out, src->dtype, src->ndim, src->shape, be->alloc, err);
    if (st)
        return fl_error_prefix(err, "matmul: staging an operand");
    return fl_cpu_fast_copy(be, out, src, err);
}

fl_status fl_cpu_blas_matmul(fl_backend *be, fl_tensor *c, const fl_tensor *a, const fl_tensor *b,
                             double alpha, double beta, fl_error *err)
{
    int nd = c->ndim;
    int64_t M = c->shape[nd - 2], N = c->shape[nd - 1], K = a->shape[nd - 1];
    if (M == 0 || N == 0)
        return FL_OK;
    if (K == 0 || M > INT32_MAX || N > INT32_MAX || K > INT32_MAX)
        return fl_cpu_ref_matmul(be, c, a, b, alpha, beta, err); /* c = beta c, or huge */
    fl_tensor sa = FL_TENSOR_NULL, sb = FL_TENSOR_NULL, sc = FL_TENSOR_NULL;
    const fl_tensor *pa = a, *pb = b;
    fl_tensor *pc = c;
    CBLAS_TRANSPOSE ta, tb, tc;
    int64_t lda, ldb, ldc;
    fl_status st = FL_OK;
    if (!blas_layout(a, M, K, &ta, &lda)) {
        if ((st = stage(be, a, &sa, err)))
            goto out;
        pa = &sa;
        blas_layout(pa, M, K, &ta, &lda);
    }
    if (!blas_layout(b, K, N, &tb, &ldb)) {
        if ((st = stage(be, b, &sb, err)))
            goto out;
        pb = &sb;
        blas_layout(pb, K, N, &tb, &ldb);
    }
    if (!blas_layout(c, M, N, &tc, &ldc) || tc != CblasNoTrans) {
        /* c must be row-major for BLAS: compute into a contiguous copy */
        if (beta != 0.0)
            st = stage(be, c, &sc, err);
        else if (!(st = fl_tensor_empty(&sc, c->dtype, c->ndim, c->shape, be->alloc, err)))
            memset(sc.storage->data, 0, sc.storage->nbytes);
        if (st)
            goto out;
        pc = &sc;
        blas_layout(pc, M, N, &tc, &ldc);
    }
    int64_t batches = fl_cpu_batch_count(c, 2);
    for (int64_t bt = 0; bt < batches; bt++) {
        int64_t oa = fl_cpu_batch_offset(pa, 2, bt), ob = fl_cpu_batch_offset(pb, 2, bt),
                oc = fl_cpu_batch_offset(pc, 2, bt);
        if (c->dtype == FL_F32)
            cblas_sgemm(CblasRowMajor, ta, tb, (int)M, (int)N, (int)K, (float)alpha,
                        (const float *)fl_tensor_data(pa) + oa, (int)lda,
                        (const float *)fl_tensor_data(pb) + ob, (int)ldb, (float)beta,
                        (float *)fl_tensor_data(pc) + oc, (int)ldc);
        else
            cblas_dgemm(CblasRowMajor, ta, tb, (int)M, (int)N, (int)K, alpha,
                        (const double *)fl_tensor_data(pa) + oa, (int)lda,
                        (const double *)fl_tensor_data(pb) + ob, (int)ldb, beta,
                        (double *)fl_tensor_data(pc) + oc, (int)ldc);
    }
    if (pc != c)
        st = fl_cpu_fast_copy(be, c, pc, err);
out:
    fl_tensor_release(&sa);
    fl_tensor_release(&sb);
    fl_tensor_release(&sc);
    return st;
}
