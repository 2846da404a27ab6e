# cython: language_level=3
"""Matrix products for the convolution and inner-product layers, split across OpenMP threads.

Each thread calls single-threaded sgemm (scipy's OpenBLAS through scipy.linalg.cython_blas) on its
own block of the output. caffelrp then has one thread pool (OpenMP) instead of two (OpenMP for the
other kernels plus OpenBLAS's own), which on a small machine otherwise fight over the cores: the
pool that just finished keeps spinning while the other one works.

Row-major C = A @ B is computed as the column-major product C^T = B^T A^T, so no data moves.
"""
from cython.parallel cimport prange
from scipy.linalg.cython_blas cimport sgemm, sgemv


cdef inline void _gemm_rm(char transa, char transb, int m, int n, int k, const float* a, int lda,
                          const float* b, int ldb, float beta, float* c, int ldc) noexcept nogil:
    """Row-major C (m x n) = op(A) (m x k) @ op(B) (k x n) + beta * C."""
    cdef float one = 1.0
    # column-major: C^T (n x m) = op(B)^T (n x k) @ op(A)^T (k x m)
    sgemm(&transb, &transa, &n, &m, &k, &one, <float*>b, &ldb, <float*>a, &lda, &beta, c, &ldc)


cdef inline void _gemv_rm(char tb, int n, int k, const float* b, int ldb, const float* x,
                          int incx, float beta, float* y) noexcept nogil:
    """Row-major y (1 x n) = x (1 x k) @ op(B) (k x n) + beta * y: one matrix-vector product."""
    cdef float one = 1.0
    cdef int inc1 = 1
    cdef char trans
    if tb == b't':   # B's columns are contiguous: the memory is B column-major (k x n)
        trans = b't'
        sgemv(&trans, &k, &n, &one, <float*>b, &ldb, <float*>x, &incx, &beta, y, &inc1)
    else:            # B's rows are contiguous: the memory is B^T column-major (n x k)
        trans = b'n'
        sgemv(&trans, &n, &k, &one, <float*>b, &ldb, <float*>x, &incx, &beta, y, &inc1)


def matmul(const float[:, :] a, const float[:, :] b, float[:, :] c, int num_threads,
           bint accumulate=False):
    """c = a @ b (or c += a @ b); float32 2-D arrays whose rows or columns are contiguous.

    The output is split into column blocks (or row blocks when it is tall and narrow), one sgemm
    per block and thread.
    """
    cdef int m = a.shape[0], k = a.shape[1], n = b.shape[1]
    if b.shape[0] != k or c.shape[0] != m or c.shape[1] != n:
        raise ValueError("matmul: shapes (%d, %d) @ (%d, %d) -> (%d, %d) do not fit"
                         % (a.shape[0], a.shape[1], b.shape[0], b.shape[1], c.shape[0],
                            c.shape[1]))
    if c.strides[1] != 4:
        raise ValueError("matmul: the output rows must be contiguous")
    if m == 0 or n == 0:
        return
    cdef char ta, tb
    cdef int lda, ldb, ldc = c.strides[0] // 4
    # row-major "n": rows contiguous (stride[1] == 4); "t": columns contiguous (a transposed view)
    if a.strides[1] == 4:
        ta, lda = b'n', a.strides[0] // 4
    elif a.strides[0] == 4:
        ta, lda = b't', a.strides[1] // 4
    else:
        raise ValueError("matmul: a must have contiguous rows or columns")
    if b.strides[1] == 4:
        tb, ldb = b'n', b.strides[0] // 4
    elif b.strides[0] == 4:
        tb, ldb = b't', b.strides[1] // 4
    else:
        raise ValueError("matmul: b must have contiguous rows or columns")
    if lda < 1:
        lda = 1
    if ldb < 1:
        ldb = 1
    if ldc < 1:
        ldc = 1
    if k == 0:
        if not accumulate:
            c[:, :] = 0
        return

    cdef float beta = 1.0 if accumulate else 0.0
    cdef const float* pa = &a[0, 0]
    cdef const float* pb = &b[0, 0]
    cdef float* pc = &c[0, 0]
    cdef int blocks, block, i, start, size
    cdef bint split_columns = n >= m
    cdef int extent = n if split_columns else m
    # Blocks of at least 64 columns/rows, a multiple of the thread count when there is enough work.
    blocks = num_threads if extent >= 64 * num_threads else max(1, extent // 64)
    if blocks <= 1 or num_threads <= 1:
        with nogil:
            _gemm_rm(ta, tb, m, n, k, pa, lda, pb, ldb, beta, pc, ldc)
        return
    block = (extent + blocks - 1) // blocks
    cdef int incx = lda if ta == b't' else 1
    if m == 1:
        # a single row (an inner product at batch 1): memory-bound, so matrix-vector products
        for i in prange(blocks, nogil=True, num_threads=num_threads, schedule="static"):
            start = i * block
            size = min(block, extent - start)
            if size > 0:
                _gemv_rm(tb, size, k, pb + (start * ldb if tb == b't' else start), ldb, pa, incx,
                         beta, pc + start)
        return
    for i in prange(blocks, nogil=True, num_threads=num_threads, schedule="static"):
        start = i * block
        size = min(block, extent - start)
        if size > 0:
            if split_columns:
                # columns start..start+size of B and C
                _gemm_rm(ta, tb, m, size, k, pa, lda,
                         pb + (start * ldb if tb == b't' else start), ldb, beta, pc + start, ldc)
            else:
                # rows start..start+size of A and C
                _gemm_rm(ta, tb, size, n, k, pa + (start if ta == b't' else start * lda), lda,
                         pb, ldb, beta, pc + start * ldc, ldc)
