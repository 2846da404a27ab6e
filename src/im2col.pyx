# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""im2col / col2im for 2-D convolution with Caffe 1.0 geometry (caffe-format.md §3.1).

Column layout (batch folded into the columns)::

    col[(c*kh + u)*kw + v, n*OH*OW + oh*OW + ow] = x[n, c, oh*sh - ph + u*dh, ow*sw - pw + v*dw]

with positions outside the image reading as 0. The rows of one convolution group
(channels q*Cg .. (q+1)*Cg - 1) are therefore the contiguous row block
[q*Cg*kh*kw, (q+1)*Cg*kh*kw), so a grouped convolution is one GEMM per group:
``y_q[Og, N*OH*OW] = W_q[Og, Cg*kh*kw] @ col[rows of q]``.

``col2im`` is the exact adjoint (transpose) of ``im2col``: it overwrites ``x_out`` with the sum
of all column entries that land on each input position (entries landing in the padding are
dropped). The summation order per input cell is (u, v, oh, ow), the order of Caffe's col2im_cpu.

Both kernels run an OpenMP ``prange`` over the N*C input planes. Every (n, c) plane owns a
disjoint block of ``col`` (rows c*kh*kw.., columns n*OH*OW..) and its own plane of ``x_out``, so
there are no write races and the results do not depend on ``num_threads``.
"""

from cython.parallel cimport prange
from libc.string cimport memcpy, memset

from kernel_limits cimport check_int_range


cdef inline void _valid_range(Py_ssize_t off, Py_ssize_t stride, Py_ssize_t extent,
                              Py_ssize_t n_out, Py_ssize_t* lo, Py_ssize_t* hi) noexcept nogil:
    """Output indices o in [lo, hi) with 0 <= o*stride + off < extent, clamped to [0, n_out]."""
    cdef Py_ssize_t a, b
    if off >= 0:
        a = 0
    else:
        a = (-off + stride - 1) // stride          # ceil(-off / stride), both non-negative
    if extent - 1 - off < 0:
        b = 0
    else:
        b = (extent - 1 - off) // stride + 1       # floor((extent-1-off)/stride) + 1
    if a > n_out:
        a = n_out
    if b > n_out:
        b = n_out
    if b < a:
        b = a
    lo[0] = a
    hi[0] = b


cdef void _im2col_plane(const float* xp, Py_ssize_t H, Py_ssize_t W,
                        Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t ph, Py_ssize_t pw,
                        Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t dh, Py_ssize_t dw,
                        Py_ssize_t OH, Py_ssize_t OW,
                        float* colp, Py_ssize_t ld) noexcept nogil:
    """Fill the kh*kw rows (row stride ld) x OH*OW columns starting at colp from one plane xp."""
    cdef Py_ssize_t u, v, oh, ow, ih, off_w, oh_lo, oh_hi, ow_lo, ow_hi, nvalid
    cdef float* row
    cdef float* dst
    cdef const float* src
    for u in range(kh):
        _valid_range(u * dh - ph, sh, H, OH, &oh_lo, &oh_hi)
        for v in range(kw):
            row = colp + (u * kw + v) * ld
            off_w = v * dw - pw
            _valid_range(off_w, sw, W, OW, &ow_lo, &ow_hi)
            nvalid = ow_hi - ow_lo
            # output rows whose input row lies in the vertical padding: all zero
            if oh_lo > 0:
                memset(row, 0, oh_lo * OW * sizeof(float))
            if oh_hi < OH:
                memset(row + oh_hi * OW, 0, (OH - oh_hi) * OW * sizeof(float))
            if nvalid == 0:
                if oh_hi > oh_lo:
                    memset(row + oh_lo * OW, 0, (oh_hi - oh_lo) * OW * sizeof(float))
                continue
            for oh in range(oh_lo, oh_hi):
                ih = oh * sh - ph + u * dh
                dst = row + oh * OW
                # horizontal padding on both sides
                if ow_lo > 0:
                    memset(dst, 0, ow_lo * sizeof(float))
                if ow_hi < OW:
                    memset(dst + ow_hi, 0, (OW - ow_hi) * sizeof(float))
                # first valid input column: ow_lo*sw + off_w >= 0
                src = xp + ih * W + ow_lo * sw + off_w
                if sw == 1:
                    memcpy(dst + ow_lo, src, nvalid * sizeof(float))
                elif sw == 2:
                    for ow in range(nvalid):
                        dst[ow_lo + ow] = src[2 * ow]
                else:
                    for ow in range(nvalid):
                        dst[ow_lo + ow] = src[ow * sw]


cdef void _col2im_plane(const float* colp, Py_ssize_t ld, Py_ssize_t H, Py_ssize_t W,
                        Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t ph, Py_ssize_t pw,
                        Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t dh, Py_ssize_t dw,
                        Py_ssize_t OH, Py_ssize_t OW, float* xp) noexcept nogil:
    """Overwrite plane xp (H x W) with the adjoint of _im2col_plane applied to colp."""
    cdef Py_ssize_t u, v, oh, ow, ih, off_w, oh_lo, oh_hi, ow_lo, ow_hi, nvalid
    cdef const float* row
    cdef const float* srcc
    cdef float* dst
    memset(xp, 0, H * W * sizeof(float))
    for u in range(kh):
        _valid_range(u * dh - ph, sh, H, OH, &oh_lo, &oh_hi)
        for v in range(kw):
            row = colp + (u * kw + v) * ld
            off_w = v * dw - pw
            _valid_range(off_w, sw, W, OW, &ow_lo, &ow_hi)
            nvalid = ow_hi - ow_lo
            if nvalid == 0:
                continue
            for oh in range(oh_lo, oh_hi):
                ih = oh * sh - ph + u * dh
                srcc = row + oh * OW + ow_lo
                dst = xp + ih * W + ow_lo * sw + off_w
                if sw == 1:
                    for ow in range(nvalid):
                        dst[ow] += srcc[ow]
                else:
                    for ow in range(nvalid):
                        dst[ow * sw] += srcc[ow]


cdef int _check_geometry(Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t ph, Py_ssize_t pw,
                         Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t dh, Py_ssize_t dw,
                         Py_ssize_t OH, Py_ssize_t OW) except -1:
    # Caffe's int range for every value: then u*dh, oh*sh, c*kh*kw*ld ... fit Py_ssize_t
    check_int_range("kernel height", kh, 1)
    check_int_range("kernel width", kw, 1)
    check_int_range("stride height", sh, 1)
    check_int_range("stride width", sw, 1)
    check_int_range("dilation height", dh, 1)
    check_int_range("dilation width", dw, 1)
    check_int_range("pad height", ph, 0)
    check_int_range("pad width", pw, 0)
    check_int_range("output height", OH, 0)
    check_int_range("output width", OW, 0)
    return 0


def _check_col(col_shape, C, N, kh, kw, OH, OW):
    """The column matrix must be (C*kh*kw, N*OH*OW), compared in Python integers (no wrap)."""
    rows, cols = int(C) * int(kh) * int(kw), int(N) * int(OH) * int(OW)
    if col_shape[0] != rows or col_shape[1] != cols:
        raise ValueError("col has shape (%d, %d), expected (%d, %d)"
                         % (col_shape[0], col_shape[1], rows, cols))


def im2col(const float[:, :, :, ::1] x, Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t ph,
           Py_ssize_t pw, Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t dh, Py_ssize_t dw,
           Py_ssize_t OH, Py_ssize_t OW, float[:, ::1] col, int num_threads):
    """im2col(x, kh, kw, ph, pw, sh, sw, dh, dw, OH, OW, col, num_threads) -> None

    x: float32 C-contiguous (N, C, H, W). col: float32 C-contiguous (C*kh*kw, N*OH*OW),
    overwritten completely. OH, OW are given by the caller (Caffe:
    (in + 2*pad - (dil*(k-1)+1)) // stride + 1). num_threads < 1 is treated as 1.
    """
    _check_geometry(kh, kw, ph, pw, sh, sw, dh, dw, OH, OW)
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    _check_col((col.shape[0], col.shape[1]), C, N, kh, kw, OH, OW)
    if num_threads < 1:
        num_threads = 1
    cdef Py_ssize_t P = N * C, p, n, c
    cdef Py_ssize_t ld = N * OH * OW
    cdef Py_ssize_t K = kh * kw
    if P == 0 or col.shape[0] == 0 or col.shape[1] == 0:
        return
    cdef const float* xbase = &x[0, 0, 0, 0]
    cdef float* cbase = &col[0, 0]
    for p in prange(P, nogil=True, schedule='static', num_threads=num_threads):
        n = p // C
        c = p - n * C
        _im2col_plane(xbase + p * H * W, H, W, kh, kw, ph, pw, sh, sw, dh, dw, OH, OW,
                      cbase + c * K * ld + n * OH * OW, ld)


def col2im(const float[:, ::1] col, Py_ssize_t N, Py_ssize_t C, Py_ssize_t H, Py_ssize_t W,
           Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t sh,
           Py_ssize_t sw, Py_ssize_t dh, Py_ssize_t dw, Py_ssize_t OH, Py_ssize_t OW,
           float[:, :, :, ::1] x_out, int num_threads):
    """col2im(col, N, C, H, W, kh, kw, ph, pw, sh, sw, dh, dw, OH, OW, x_out, num_threads) -> None

    The adjoint of im2col: x_out (float32 C-contiguous (N, C, H, W)) is overwritten with, for
    each input position, the sum of the col entries (C*kh*kw, N*OH*OW) that im2col would have
    read from it. num_threads < 1 is treated as 1.
    """
    _check_geometry(kh, kw, ph, pw, sh, sw, dh, dw, OH, OW)
    if (x_out.shape[0] != N or x_out.shape[1] != C or x_out.shape[2] != H
            or x_out.shape[3] != W):
        raise ValueError("x_out has shape (%d, %d, %d, %d), expected (%d, %d, %d, %d)"
                         % (x_out.shape[0], x_out.shape[1], x_out.shape[2], x_out.shape[3],
                            N, C, H, W))
    _check_col((col.shape[0], col.shape[1]), C, N, kh, kw, OH, OW)
    if num_threads < 1:
        num_threads = 1
    cdef Py_ssize_t P = N * C, p, n, c
    cdef Py_ssize_t ld = N * OH * OW
    cdef Py_ssize_t K = kh * kw
    cdef Py_ssize_t HW = H * W
    if P == 0 or HW == 0:
        return
    cdef float* xbase = &x_out[0, 0, 0, 0]
    if ld == 0:
        # no output positions: nothing lands anywhere
        for p in prange(P, nogil=True, schedule='static', num_threads=num_threads):
            memset(xbase + p * HW, 0, HW * sizeof(float))
        return
    cdef const float* cbase = &col[0, 0]
    for p in prange(P, nogil=True, schedule='static', num_threads=num_threads):
        n = p // C
        c = p - n * C
        _col2im_plane(cbase + c * K * ld + n * OH * OW, ld, H, W, kh, kw, ph, pw, sh, sw,
                      dh, dw, OH, OW, xbase + p * HW)
