# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
# distutils: extra_compile_args = -O3 -fopenmp -ffp-contract=off
"""One pass of the separable image resize of ``caffelrp.preprocess`` (ImageMagick's filter).

``resample_axis(src, index, weights, out, num_threads)``: for float64 ``src`` (A, n_in, B) and
taps ``index``/``weights`` (n_out, K), writes ``out`` (A, n_out, B) as

    out[a, o, b] = Q( sum over k = 0 .. K-1 of weights[o, k] * src[a, index[o, k], b] )

with the sum started at 0 and its terms added in increasing k, each a separate multiply and add
in double (``-ffp-contract=off``: never fused into an FMA), and Q ImageMagick's ClampToQuantum
(clip to 0..65535, then floor(v + 0.5)). That is the order and rounding of the dense product with
the whole weight row whose other terms are exact zeros, so the result is bit for bit the dense
resize's (tests/test_preprocess.py). Every output element is written by one thread: the result
does not depend on ``num_threads``.
"""

from cython.parallel cimport prange
from libc.math cimport floor
from libc.stdint cimport int64_t


def resample_axis(const double[:, :, ::1] src, const int64_t[:, ::1] index,
                  const double[:, ::1] weights, double[:, :, ::1] out, int num_threads=1):
    cdef Py_ssize_t A = src.shape[0], n_in = src.shape[1], B = src.shape[2]
    cdef Py_ssize_t n_out = index.shape[0], K = index.shape[1]
    if weights.shape[0] != n_out or weights.shape[1] != K:
        raise ValueError("index and weights must have the same shape")
    if out.shape[0] != A or out.shape[1] != n_out or out.shape[2] != B:
        raise ValueError("out must be (%d, %d, %d)" % (A, n_out, B))
    cdef Py_ssize_t o, k, b, a, t, j
    for o in range(n_out):           # with the GIL, once: no read outside src below
        for k in range(K):
            if index[o, k] < 0 or index[o, k] >= n_in:
                raise ValueError("tap index %d outside 0..%d" % (index[o, k], n_in - 1))
    cdef double w, v, acc
    if B <= 4:
        # a few values per input position (the colour channels of a row, filtered along it):
        # one element at a time, its sum in a register; the same terms in the same order
        for t in prange(A * n_out, nogil=True, schedule="static", num_threads=num_threads):
            a = t // n_out
            o = t - a * n_out
            for b in range(B):
                acc = 0.0
                for k in range(K):
                    acc = acc + weights[o, k] * src[a, index[o, k], b]
                if acc < 0.0:
                    acc = 0.0
                elif acc > 65535.0:
                    acc = 65535.0
                out[a, o, b] = floor(acc + 0.5)
        return
    for t in prange(A * n_out, nogil=True, schedule="static", num_threads=num_threads):
        a = t // n_out
        o = t - a * n_out
        for b in range(B):
            out[a, o, b] = 0.0
        for k in range(K):
            w = weights[o, k]
            j = index[o, k]
            for b in range(B):
                out[a, o, b] = out[a, o, b] + w * src[a, j, b]
        for b in range(B):
            v = out[a, o, b]
            if v < 0.0:
                v = 0.0
            elif v > 65535.0:
                v = 65535.0
            out[a, o, b] = floor(v + 0.5)
