# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""ReLU forward and gradient (caffe-format.md §3.6) in one threaded pass each.

numpy's ``np.maximum(x, 0)`` and ``np.where(x > 0, dy, 0)`` run on one thread, the second with a
boolean temporary; on CaffeNet's conv1 output at batch 32 (37 MB) they cost as much as a
tenth of the whole gradient. Here:

* ``relu_forward(x, slope, out, num_threads)``: out = x if x > 0 else slope * x
  (Caffe: ``max(x, 0) + slope * min(x, 0)``, the same values: one of the two terms is 0);
* ``relu_backward(x, dy, slope, out, num_threads)``: out = dy if x > 0 else slope * dy
  (Caffe: ``dy * ((x > 0) + slope * (x <= 0))``).

The values are those of the numpy expressions the layer used before, bit for bit: with slope 0 the
forward keeps NaN and gives +0 for every other x <= 0 (as ``np.maximum(x, 0)``); NaN takes the
slope branch elsewhere (NaN > 0 is false), which keeps it NaN in the forward, as in Caffe. The arrays are flat float32 views of the same size; every element is written by one thread.
"""

from cython.parallel cimport prange


def relu_forward(const float[::1] x, float slope, float[::1] out, int num_threads=1):
    cdef Py_ssize_t n = x.shape[0], i
    if out.shape[0] != n:
        raise ValueError("relu_forward: x and out differ in size")
    cdef float v
    if slope == 0:
        for i in prange(n, nogil=True, schedule="static", num_threads=num_threads):
            v = x[i]
            out[i] = v if (v > 0 or v != v) else 0   # NaN kept, -0 and negatives to +0: np.maximum
    else:
        for i in prange(n, nogil=True, schedule="static", num_threads=num_threads):
            v = x[i]
            out[i] = v if v > 0 else slope * v


def relu_backward(const float[::1] x, const float[::1] dy, float slope, float[::1] out,
                  int num_threads=1):
    cdef Py_ssize_t n = x.shape[0], i
    if dy.shape[0] != n or out.shape[0] != n:
        raise ValueError("relu_backward: x, dy and out differ in size")
    if slope == 0:
        for i in prange(n, nogil=True, schedule="static", num_threads=num_threads):
            out[i] = dy[i] if x[i] > 0 else 0
    else:
        for i in prange(n, nogil=True, schedule="static", num_threads=num_threads):
            out[i] = dy[i] if x[i] > 0 else slope * dy[i]
