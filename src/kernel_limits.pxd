# cython: language_level=3
"""Checks shared by the kernels, run with the GIL before any pointer arithmetic.

Every geometry value (kernel, pad, stride, dilation, output size) must fit Caffe's 32-bit ``int``
(Caffe itself stores them in ``int``); with that bound, every index the kernels form
(``oh*sh - ph + u*dh``, ``(u*kw + v)*ld``, ...) is a product of at most two such values plus
array extents, which fits ``Py_ssize_t`` (64 bits). Buffer sizes the kernels allocate themselves
are computed with ``checked_mul`` so that a product never wraps to a small malloc.
"""

cdef extern from *:
    """
    #include <stdint.h>
    static inline int caffelrp_mul_overflows(Py_ssize_t a, Py_ssize_t b, Py_ssize_t *out) {
        return __builtin_mul_overflow(a, b, out);
    }
    """
    int caffelrp_mul_overflows(Py_ssize_t a, Py_ssize_t b, Py_ssize_t *out) noexcept nogil

cdef enum:
    GEOMETRY_MAX = 2147483647     # INT_MAX: Caffe's int


cdef inline int check_int_range(str what, Py_ssize_t value, Py_ssize_t lo) except -1:
    """``value`` must be in [lo, INT_MAX] (ValueError naming ``what``)."""
    if value < lo or value > GEOMETRY_MAX:
        raise ValueError("%s must be in [%d, %d], got %d" % (what, lo, GEOMETRY_MAX, value))
    return 0


cdef inline Py_ssize_t checked_mul(Py_ssize_t a, Py_ssize_t b) except -1:
    """a * b for non-negative a, b; OverflowError instead of a wrapped product."""
    cdef Py_ssize_t out
    if a < 0 or b < 0 or caffelrp_mul_overflows(a, b, &out):
        raise OverflowError("size %d x %d does not fit a 64-bit index" % (a, b))
    return out


cdef inline Py_ssize_t checked_mul_nogil(Py_ssize_t a, Py_ssize_t b) noexcept nogil:
    """a * b for non-negative a, b, or -1 when the product does not fit (no GIL needed)."""
    cdef Py_ssize_t out
    if a < 0 or b < 0 or caffelrp_mul_overflows(a, b, &out):
        return -1
    return out
