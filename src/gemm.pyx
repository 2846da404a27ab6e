# cython: language_level=3
"""Matrix products for the convolution and inner-product layers, split across OpenMP threads.

Each thread calls single-threaded sgemm (scipy's OpenBLAS through scipy.linalg.cython_blas) on
blocks of the output. caffelrp then has one thread pool (OpenMP) instead of two (OpenMP for the
other kernels plus OpenBLAS's own), which on a small machine otherwise fight over the cores: the
pool that just finished keeps spinning while the other one works.

Deterministic for any thread count: the output is cut into blocks (of about COLUMN_BLOCK columns,
or ROW_BLOCK rows when the output is tall and narrow) whose sizes depend on the shapes only; the
threads take whole blocks. Where a product has only a few blocks, they are of (nearly) equal size
and of an even number, so that two threads get equal shares: 729 columns (a 27 x 27 plane) are 4
blocks of 192/192/192/153, not 256/256/217, which left one of two threads a third of the time idle
(``_split``). The threads take the blocks as they come free (a dynamic schedule; the blocks, hence
the bits, stay the same), so a thread that loses its core for a while (the output writer, another
process) does not hold up the rest at the end of the product. Which sgemm call computes an output
element, with which operand shapes, is therefore the same at 1, 2, 3 or 8 threads, and so are its
last bits (OpenBLAS's result for an element depends on where it lies in the call: edge kernels,
blocking). Cost: a single-threaded product is made of several calls instead of one (BENCHMARKS.md,
"determinism").

A single-row product with a large matrix (an inner product like fc6 at batch 1) is a
matrix-vector product, memory-bound: sgemv on fixed column blocks, at any thread count (fc6 at
batch 1: 34 ms, against 131 ms for sgemm, which packs the whole weight matrix first). Below
GEMV_MIN matrix values a single row is an sgemm like any other, so small inner products round
the same alone as in a batch (their completeness checks compare the two).

Not independent of the batch size: OpenBLAS's sgemm gives a row different last bits depending
on how many rows the call has (measured: (m x 4096) @ (4096 x 1000), 220 of row 0's 1000 values
differ between m = 1 and m = 2; (m x 300) @ (300 x 10), 1 value between m = 2 and m = 4), and
sgemv sums in yet another order. An inner product at batch 8 therefore rounds differently from
the same image alone (CaffeNet relevance: 2e-6 relative, 4e-4 absolute). Full invariance would
need one product per image in every inner-product layer (README "Fidelity").

Row-major C = A @ B is computed as the column-major product C^T = B^T A^T, so no data moves.
Sizes are int (BLAS's integer type); pointer offsets are computed in Py_ssize_t.
"""
import numpy as np

from cython.parallel cimport prange
from scipy.linalg.cython_blas cimport sgemm, sgemv

cdef enum:
    COLUMN_BLOCK = 256   # output columns per block at most (split along n)
    ROW_BLOCK = 64       # output rows per block at most (split along m, when m > n)
    BLOCK_ALIGN = 16     # block sizes are multiples of this (one AVX-512 register of floats)
    GEMV_BLOCK = 512     # output values per matrix-vector block (m == 1)
    GEMV_MIN = 1 << 20   # a single row uses sgemv only from this many matrix values (4 MB) on

# BLAS takes int sizes: anything larger is refused rather than wrapped.
cdef Py_ssize_t INT_MAX_SIZE = 2147483647


cdef inline Py_ssize_t _split(Py_ssize_t extent, Py_ssize_t most) noexcept nogil:
    """The block size for cutting ``extent`` into blocks of at most ``most``: as equal as
    BLOCK_ALIGN allows, and an even number of them when there are several but fewer than 8."""
    cdef Py_ssize_t blocks = (extent + most - 1) // most
    if blocks >= 8:     # the last block's shortfall is at most 1/8 of a thread's share
        return most
    if blocks > 1 and blocks % 2:
        blocks += 1
    cdef Py_ssize_t size = (extent + blocks - 1) // blocks
    return min(most, (size + BLOCK_ALIGN - 1) // BLOCK_ALIGN * BLOCK_ALIGN)


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


def _layout(x, str name):
    """(operand, 'n' or 't', leading dimension) for a row-major 2-D float32 operand.

    'n': rows contiguous, 't': columns contiguous (a transposed view). Any other layout
    (negative, zero or overlapping strides, e.g. from np.flipud or broadcasting) is copied to a
    C-contiguous array first: BLAS cannot read it, and an unchecked leading dimension would make
    it read (or for the output write) outside the buffer.
    """
    cdef Py_ssize_t rows = x.shape[0], cols = x.shape[1]
    cdef Py_ssize_t s0 = x.strides[0], s1 = x.strides[1]
    if s1 == 4 and s0 % 4 == 0 and (rows == 1 or s0 >= 4 * cols):
        return x, b'n', max(1, cols if rows == 1 else s0 // 4)
    if s0 == 4 and s1 % 4 == 0 and (cols == 1 or s1 >= 4 * rows):
        return x, b't', max(1, rows if cols == 1 else s1 // 4)
    return np.ascontiguousarray(x), b'n', max(1, cols)


def matmul(const float[:, :] a, const float[:, :] b, float[:, :] c, int num_threads,
           bint accumulate=False):
    """c = a @ b (or c += a @ b); float32 2-D arrays.

    a and b may be any layout (non-contiguous ones are copied); c must have contiguous rows and
    a row stride that neither overlaps nor runs backwards. The result does not depend on
    num_threads (fixed-size blocks, see the module docstring).
    """
    if a.shape[0] > INT_MAX_SIZE or a.shape[1] > INT_MAX_SIZE or b.shape[1] > INT_MAX_SIZE:
        raise ValueError("matmul: dimensions above 2**31-1 are not supported by BLAS")
    cdef int m = a.shape[0], k = a.shape[1], n = b.shape[1]
    if b.shape[0] != k or c.shape[0] != m or c.shape[1] != n:
        raise ValueError("matmul: shapes (%d, %d) @ (%d, %d) -> (%d, %d) do not fit"
                         % (a.shape[0], a.shape[1], b.shape[0], b.shape[1], c.shape[0],
                            c.shape[1]))
    if m == 0 or n == 0:
        return
    cdef Py_ssize_t cs0 = c.strides[0]
    if c.strides[1] != 4 or (m > 1 and (cs0 % 4 != 0 or cs0 < 4 * n)):
        raise ValueError("matmul: the output needs contiguous rows and a positive row stride "
                         "of at least its width (got strides %r for shape (%d, %d))"
                         % ((c.strides[0], c.strides[1]), m, n))
    cdef int ldc = n if m == 1 else <int>(cs0 // 4)
    if k == 0:
        if not accumulate:
            c[:, :] = 0
        return
    a_op, ta_obj, lda_obj = _layout(np.asarray(a), "a")
    b_op, tb_obj, ldb_obj = _layout(np.asarray(b), "b")
    cdef const float[:, :] av = a_op
    cdef const float[:, :] bv = b_op
    cdef char ta = (<bytes>ta_obj)[0], tb = (<bytes>tb_obj)[0]
    cdef int lda = lda_obj, ldb = ldb_obj
    if num_threads < 1:
        num_threads = 1

    cdef float beta = 1.0 if accumulate else 0.0
    cdef const float* pa = &av[0, 0]
    cdef const float* pb = &bv[0, 0]
    cdef float* pc = &c[0, 0]
    cdef Py_ssize_t blocks, i, start, size, block
    cdef int incx = lda if ta == b't' else 1
    if m == 1 and <Py_ssize_t>k * n >= GEMV_MIN:
        # a single row (an inner product at batch 1): memory-bound, matrix-vector products
        block = GEMV_BLOCK
        blocks = (n + block - 1) // block
        for i in prange(blocks, nogil=True, num_threads=num_threads, schedule="dynamic"):
            start = i * block
            size = min(block, n - start)
            _gemv_rm(tb, <int>size, k, pb + (start * ldb if tb == b't' else start), ldb, pa,
                     incx, beta, pc + start)
        return
    cdef bint split_columns = n >= m
    cdef Py_ssize_t extent = n if split_columns else m
    block = _split(extent, COLUMN_BLOCK if split_columns else ROW_BLOCK)
    blocks = (extent + block - 1) // block
    for i in prange(blocks, nogil=True, num_threads=num_threads, schedule="dynamic"):
        start = i * block
        size = min(block, extent - start)
        if split_columns:
            # columns start..start+size of B and C
            _gemm_rm(ta, tb, m, <int>size, k, pa, lda,
                     pb + (start * ldb if tb == b't' else start), ldb, beta, pc + start, ldc)
        else:
            # rows start..start+size of A and C
            _gemm_rm(ta, tb, <int>size, n, k, pa + (start if ta == b't' else start * lda), lda,
                     pb, ldb, beta, pc + start * ldc, ldc)
