# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""MAX and AVE pooling with Caffe 1.0 CPU semantics (caffe-format.md §3.3), and their adjoints.

Window of output (oh, ow): ``hstart = oh*sh - ph``, ``wstart = ow*sw - pw``.

* MAX: window clipped to the image ``[max(hstart,0), min(hstart+kh, H))``; start value -FLT_MAX,
  strict ``>`` so the first maximum in row-major order wins and NaN is never picked; padding never
  participates; an empty window keeps -FLT_MAX and argmax -1. argmax = h*W + w within the plane.
* AVE: ``hend = min(hstart+kh, H+ph)``; ``pool_size = (hend-hstart)*(wend-wstart)`` is taken
  BEFORE clipping to the image; then the real cells are summed in float32 (row-major, from 0) and
  divided by pool_size. An empty window with pad 0 gives 0/0 = NaN (or 0/negative = -0.0), as in
  Caffe.

All kernels take C-contiguous float32 (N, C, ., .) arrays, write their outputs completely and run
an OpenMP ``prange`` over the N*C planes; every output plane is written by exactly one thread in a
fixed order, so results do not depend on ``num_threads``.

``pooled_size`` is a pure-Python helper for the output size (a convolution's is
``layers.conv.ConvGeometry.conv_out``).
"""

from cython.parallel cimport prange
from libc.float cimport FLT_MAX
from libc.string cimport memset

from kernel_limits cimport check_int_range


def pooled_size(in_, k, pad, stride, clip=None):
    """Caffe 1.0 pooling output size along one axis (ceil mode, caffe-format.md §3.3).

    ``out = ceil((in + 2*pad - k) / stride) + 1``; then, when the layer has padding, if the last
    window would start in the padding or beyond (``(out-1)*stride >= in + pad``) it is dropped
    (``out -= 1``). Examples: (28, 3, 1, 2) -> 15, (5, 2, 1, 2) -> 3, (112, 3, 0, 2) -> 56,
    (7, 1, 0, 2) -> 4.

    ``clip``: whether that rule applies. Caffe applies it to BOTH axes when pad_h or pad_w is
    non-zero, so a layer passes ``pad_h or pad_w``; it matters on an axis of pad 0 whose kernel
    is smaller than its stride, e.g. (4, 1, 0, 4): 2 windows without the rule (the second starts
    at 4, outside the image), 1 with it. Default: ``pad > 0``.

    The result can be <= 0 when the kernel does not fit (k > in + 2*pad); the caller must reject
    that (Caffe fails on such a blob shape). Raises ValueError only for k < 1, stride < 1 or
    pad < 0.
    """
    in_ = int(in_); k = int(k); pad = int(pad); stride = int(stride)
    if k < 1 or stride < 1 or pad < 0:
        raise ValueError("invalid pooling geometry: k=%d pad=%d stride=%d" % (k, pad, stride))
    num = in_ + 2 * pad - k
    out = -((-num) // stride) + 1       # exact integer ceil division (also for num < 0)
    if (pad > 0 if clip is None else clip) and (out - 1) * stride >= in_ + pad:
        out -= 1
    return out


cdef int _check_geometry(Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t ph, Py_ssize_t pw,
                         Py_ssize_t sh, Py_ssize_t sw) except -1:
    # Caffe's int range for every value: all window arithmetic then fits Py_ssize_t
    check_int_range("kernel height", kh, 1)
    check_int_range("kernel width", kw, 1)
    check_int_range("stride height", sh, 1)
    check_int_range("stride width", sw, 1)
    check_int_range("pad height", ph, 0)
    check_int_range("pad width", pw, 0)
    return 0


cdef int _check_nc(Py_ssize_t N, Py_ssize_t C, Py_ssize_t N2, Py_ssize_t C2, str what) except -1:
    if N != N2 or C != C2:
        raise ValueError("%s: batch/channel dims differ: (%d, %d) vs (%d, %d)"
                         % (what, N, C, N2, C2))
    return 0


# ------------------------------------------------------------------------------------------ MAX

cdef void _max_fwd_plane(const float* xp, Py_ssize_t H, Py_ssize_t W,
                         Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t ph, Py_ssize_t pw,
                         Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t OH, Py_ssize_t OW,
                         float* yp, int* ap) noexcept nogil:
    cdef Py_ssize_t oh, ow, h, w, hs, he, ws, we, best
    cdef float m, val
    for oh in range(OH):
        hs = oh * sh - ph
        he = hs + kh
        if he > H:
            he = H
        if hs < 0:
            hs = 0
        for ow in range(OW):
            ws = ow * sw - pw
            we = ws + kw
            if we > W:
                we = W
            if ws < 0:
                ws = 0
            m = -FLT_MAX
            best = -1
            for h in range(hs, he):
                for w in range(ws, we):
                    val = xp[h * W + w]
                    if val > m:
                        m = val
                        best = h * W + w
            yp[oh * OW + ow] = m
            ap[oh * OW + ow] = <int>best


def max_pool_forward(const float[:, :, :, ::1] x, Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t ph,
                     Py_ssize_t pw, Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t OH, Py_ssize_t OW,
                     float[:, :, :, ::1] y, int[:, :, :, ::1] argmax, int num_threads):
    """max_pool_forward(x, kh, kw, ph, pw, sh, sw, OH, OW, y, argmax, num_threads) -> None

    x float32 (N, C, H, W); y float32 and argmax int32 (N, C, OH, OW), both overwritten.
    argmax[n, c, oh, ow] = h*W + w of the (first) maximum, -1 for an empty window.
    """
    _check_geometry(kh, kw, ph, pw, sh, sw)
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    if (y.shape[0] != N or y.shape[1] != C or y.shape[2] != OH or y.shape[3] != OW
            or argmax.shape[0] != N or argmax.shape[1] != C or argmax.shape[2] != OH
            or argmax.shape[3] != OW):
        raise ValueError("y/argmax must have shape (%d, %d, %d, %d)" % (N, C, OH, OW))
    if H * W > 2147483647:
        raise ValueError("plane too large for int32 argmax")
    if num_threads < 1:
        num_threads = 1
    cdef Py_ssize_t P = N * C, p, HW = H * W, OHW = OH * OW
    if P == 0 or OHW == 0:
        return
    cdef const float* xb = &x[0, 0, 0, 0]
    cdef float* yb = &y[0, 0, 0, 0]
    cdef int* ab = &argmax[0, 0, 0, 0]
    for p in prange(P, nogil=True, schedule='static', num_threads=num_threads):
        _max_fwd_plane(xb + p * HW, H, W, kh, kw, ph, pw, sh, sw, OH, OW,
                       yb + p * OHW, ab + p * OHW)


def max_pool_backward(const float[:, :, :, ::1] dy, const int[:, :, :, ::1] argmax,
                      float[:, :, :, ::1] dx, int num_threads):
    """max_pool_backward(dy, argmax, dx, num_threads) -> None

    dy float32 and argmax int32 (N, C, OH, OW); dx float32 (N, C, H, W) is overwritten with
    zeros plus dy scatter-added to the argmax cell of every window (windows may overlap, so
    several outputs can add to one cell; each plane is done by one thread in row-major output
    order). argmax -1 (empty window) contributes nothing; any other index outside [0, H*W)
    raises ValueError (after the pass; dx content is then unspecified).
    """
    cdef Py_ssize_t N = dx.shape[0], C = dx.shape[1], H = dx.shape[2], W = dx.shape[3]
    cdef Py_ssize_t OH = dy.shape[2], OW = dy.shape[3]
    _check_nc(N, C, dy.shape[0], dy.shape[1], "max_pool_backward dy vs dx")
    if (argmax.shape[0] != dy.shape[0] or argmax.shape[1] != dy.shape[1]
            or argmax.shape[2] != OH or argmax.shape[3] != OW):
        raise ValueError("argmax shape must equal dy shape")
    if num_threads < 1:
        num_threads = 1
    cdef Py_ssize_t P = N * C, p, i, HW = H * W, OHW = OH * OW
    cdef Py_ssize_t bad = 0
    cdef int idx
    cdef float* dxp
    cdef const float* dyp
    cdef const int* ap
    if P == 0 or HW == 0:
        return
    cdef float* dxb = &dx[0, 0, 0, 0]
    cdef const float* dyb = NULL
    cdef const int* ab = NULL
    if OHW > 0:
        dyb = &dy[0, 0, 0, 0]
        ab = &argmax[0, 0, 0, 0]
    for p in prange(P, nogil=True, schedule='static', num_threads=num_threads):
        dxp = dxb + p * HW
        memset(dxp, 0, HW * sizeof(float))
        if OHW > 0:
            dyp = dyb + p * OHW
            ap = ab + p * OHW
            for i in range(OHW):
                idx = ap[i]
                if idx >= 0 and idx < HW:
                    dxp[idx] = dxp[idx] + dyp[i]
                elif idx != -1:
                    bad += 1
    if bad:
        raise ValueError("max_pool_backward: %d argmax entries outside [0, %d)" % (bad, HW))


# ------------------------------------------------------------------------------------------ AVE

cdef void _ave_fwd_plane(const float* xp, Py_ssize_t H, Py_ssize_t W,
                         Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t ph, Py_ssize_t pw,
                         Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t OH, Py_ssize_t OW,
                         float* yp) noexcept nogil:
    cdef Py_ssize_t oh, ow, h, w, hs, he, ws, we, hs0, ws0, pool_size
    cdef float s
    for oh in range(OH):
        hs = oh * sh - ph
        he = hs + kh
        if he > H + ph:
            he = H + ph
        hs0 = hs
        if hs < 0:
            hs = 0
        for ow in range(OW):
            ws = ow * sw - pw
            we = ws + kw
            if we > W + pw:
                we = W + pw
            ws0 = ws
            if ws < 0:
                ws = 0
            pool_size = (he - hs0) * (we - ws0)   # before clipping to the image
            s = 0.0
            for h in range(hs, he if he < H else H):
                for w in range(ws, we if we < W else W):
                    s = s + xp[h * W + w]
            yp[oh * OW + ow] = s / <float>pool_size


cdef void _ave_bwd_plane(const float* dyp, Py_ssize_t H, Py_ssize_t W,
                         Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t ph, Py_ssize_t pw,
                         Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t OH, Py_ssize_t OW,
                         float* dxp) noexcept nogil:
    cdef Py_ssize_t oh, ow, h, w, hs, he, ws, we, hs0, ws0, pool_size, hc, wc
    cdef float g
    memset(dxp, 0, H * W * sizeof(float))
    for oh in range(OH):
        hs = oh * sh - ph
        he = hs + kh
        if he > H + ph:
            he = H + ph
        hs0 = hs
        if hs < 0:
            hs = 0
        hc = he if he < H else H
        for ow in range(OW):
            ws = ow * sw - pw
            we = ws + kw
            if we > W + pw:
                we = W + pw
            ws0 = ws
            if ws < 0:
                ws = 0
            wc = we if we < W else W
            if hs >= hc or ws >= wc:
                continue                          # empty window: nothing to distribute
            pool_size = (he - hs0) * (we - ws0)
            g = dyp[oh * OW + ow] / <float>pool_size
            for h in range(hs, hc):
                for w in range(ws, wc):
                    dxp[h * W + w] = dxp[h * W + w] + g


def ave_pool_forward(const float[:, :, :, ::1] x, Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t ph,
                     Py_ssize_t pw, Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t OH, Py_ssize_t OW,
                     float[:, :, :, ::1] y, int num_threads):
    """ave_pool_forward(x, kh, kw, ph, pw, sh, sw, OH, OW, y, num_threads) -> None

    x float32 (N, C, H, W); y float32 (N, C, OH, OW) overwritten with Caffe's AVE pooling
    (sum over real cells / pool_size, pool_size from the window clipped to [-pad, in+pad)).
    """
    _check_geometry(kh, kw, ph, pw, sh, sw)
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    if y.shape[0] != N or y.shape[1] != C or y.shape[2] != OH or y.shape[3] != OW:
        raise ValueError("y must have shape (%d, %d, %d, %d)" % (N, C, OH, OW))
    if num_threads < 1:
        num_threads = 1
    cdef Py_ssize_t P = N * C, p, HW = H * W, OHW = OH * OW
    if P == 0 or OHW == 0:
        return
    cdef const float* xb = &x[0, 0, 0, 0]
    cdef float* yb = &y[0, 0, 0, 0]
    for p in prange(P, nogil=True, schedule='static', num_threads=num_threads):
        _ave_fwd_plane(xb + p * HW, H, W, kh, kw, ph, pw, sh, sw, OH, OW, yb + p * OHW)


def ave_pool_backward(const float[:, :, :, ::1] dy, Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t ph,
                      Py_ssize_t pw, Py_ssize_t sh, Py_ssize_t sw, float[:, :, :, ::1] dx,
                      int num_threads):
    """ave_pool_backward(dy, kh, kw, ph, pw, sh, sw, dx, num_threads) -> None

    The exact adjoint of ave_pool_forward: dx float32 (N, C, H, W) is overwritten with
    sum over windows containing the cell of dy / pool_size. OH, OW are dy's trailing dims.
    """
    _check_geometry(kh, kw, ph, pw, sh, sw)
    cdef Py_ssize_t N = dx.shape[0], C = dx.shape[1], H = dx.shape[2], W = dx.shape[3]
    cdef Py_ssize_t OH = dy.shape[2], OW = dy.shape[3]
    _check_nc(N, C, dy.shape[0], dy.shape[1], "ave_pool_backward dy vs dx")
    if num_threads < 1:
        num_threads = 1
    cdef Py_ssize_t P = N * C, p, HW = H * W, OHW = OH * OW
    if P == 0 or HW == 0:
        return
    cdef float* dxb = &dx[0, 0, 0, 0]
    cdef const float* dyb = NULL
    if OHW == 0:
        for p in prange(P, nogil=True, schedule='static', num_threads=num_threads):
            memset(dxb + p * HW, 0, HW * sizeof(float))
        return
    dyb = &dy[0, 0, 0, 0]
    for p in prange(P, nogil=True, schedule='static', num_threads=num_threads):
        _ave_bwd_plane(dyb + p * OHW, H, W, kh, kw, ph, pw, sh, sw, OH, OW, dxb + p * HW)
