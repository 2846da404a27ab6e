# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Local Response Normalization (caffe-format.md §3.5), forward and exact backward.

ACROSS_CHANNELS (n = size, odd; pre = (n-1)/2)::

    scale[b,c,h,w] = k + (alpha/n) * sum_{c'=c-pre}^{c+pre} x[b,c',h,w]**2   (zero outside [0,C))
    y = x * scale**(-beta)
    dx = dy * scale**(-beta) - (2*alpha*beta/n) * x * sum_{c' in window(c)} dy*y/scale

The forward mirrors Caffe's CPU float32 arithmetic: alpha/n is computed in float32, the window
sum is built incrementally along the channels (start from k, add alpha/n*x^2 for channels
0..pre, then for each next channel add the entering and subtract the leaving term), and
y = powf(scale, -beta) * x. The backward follows Caffe's CrossChannelBackward_cpu in the same
way (running accumulator of dy*y/scale, 2*alpha*beta/n computed in double then rounded to float).

WITHIN_CHANNEL (k unused)::

    S = sum of x**2 over the n x n window centred at (h, w) (zero padding pre)
    scale = 1 + alpha * (S / n**2)        (Caffe: AVE pooling with divisor n*n, then Power)
    y = x * scale**(-beta)
    dx = dy * scale**(-beta) - (2*alpha*beta/n**2) * x * sum_{(h',w') in window(h,w)} dy*y/scale

(the window is symmetric, so "windows containing (h,w)" = "window centred at (h,w)").
As in Caffe's Power layer, alpha == 0 or beta == 0 make scale**(-beta) exactly 1.

The stored ``scale`` array is what the backward kernels expect. All arrays are C-contiguous
float32 (N, C, H, W). Parallelisation: ACROSS over (n, block of spatial positions), WITHIN over
(n, c) planes; every output element is produced by one thread in a fixed order, so results do
not depend on ``num_threads``.
"""

from cython.parallel cimport prange
from libc.math cimport powf
from libc.stdlib cimport free, malloc

cdef enum:
    BLK = 256     # spatial positions per ACROSS task (one L1-sized strip per channel)


cdef int _check_same(Py_ssize_t* ref, Py_ssize_t* got, str name) except -1:
    cdef int i
    for i in range(4):
        if ref[i] != got[i]:
            raise ValueError("%s has shape (%d, %d, %d, %d), expected (%d, %d, %d, %d)"
                             % (name, got[0], got[1], got[2], got[3],
                                ref[0], ref[1], ref[2], ref[3]))
    return 0


cdef int _check_size(int size) except -1:
    if size < 1 or size % 2 == 0:
        raise ValueError("LRN local_size must be odd and >= 1, got %d" % size)
    return 0


# -------------------------------------------------------------------------------- ACROSS_CHANNELS

cdef void _across_fwd_task(const float* xb, float* yb, float* sb, Py_ssize_t C, Py_ssize_t HW,
                           Py_ssize_t p0, Py_ssize_t p1, Py_ssize_t pre, float aos,
                           float negbeta, float k) noexcept nogil:
    """One image (xb, yb, sb point at its (0,0,0,0)), positions [p0, p1)."""
    cdef Py_ssize_t c, i, head, tail
    cdef float xv
    cdef float* sc
    cdef const float* xh
    cdef const float* xt
    cdef const float* prev
    # channel 0: k + alpha/n * x^2 for real channels 0..pre (padding channels add exactly 0)
    sc = sb + p0
    for i in range(p1 - p0):
        sc[i] = k
    for c in range(pre + 1):
        if c >= C:
            break
        xh = xb + c * HW + p0
        for i in range(p1 - p0):
            xv = xh[i]
            sc[i] = sc[i] + aos * (xv * xv)
    # channels 1..C-1 incrementally: copy previous, add head (c+pre), subtract tail (c-1-pre)
    for c in range(1, C):
        sc = sb + c * HW + p0
        prev = sb + (c - 1) * HW + p0
        head = c + pre
        tail = c - 1 - pre
        for i in range(p1 - p0):
            sc[i] = prev[i]
        if head < C:
            xh = xb + head * HW + p0
            for i in range(p1 - p0):
                xv = xh[i]
                sc[i] = sc[i] + aos * (xv * xv)
        if tail >= 0:
            xt = xb + tail * HW + p0
            for i in range(p1 - p0):
                xv = xt[i]
                sc[i] = sc[i] - aos * (xv * xv)
    # output
    for c in range(C):
        for i in range(p0, p1):
            yb[c * HW + i] = powf(sb[c * HW + i], negbeta) * xb[c * HW + i]


cdef void _across_bwd_task(const float* xb, const float* yb, const float* sb, const float* dyb,
                           float* dxb, Py_ssize_t C, Py_ssize_t HW, Py_ssize_t p0,
                           Py_ssize_t p1, Py_ssize_t pre, float crv,
                           float negbeta) noexcept nogil:
    cdef float accum[BLK]
    cdef Py_ssize_t c, i, j, cc, L = p1 - p0
    cdef float t
    # dx = dy * scale^-beta
    for c in range(C):
        for i in range(p0, p1):
            j = c * HW + i
            dxb[j] = dyb[j] * powf(sb[j], negbeta)
    for i in range(L):
        accum[i] = 0.0
    # padded channels 0..n-2 = real channels -pre..pre-1
    for cc in range(pre):
        if cc >= C:
            break
        for i in range(L):
            j = cc * HW + p0 + i
            accum[i] = accum[i] + (dyb[j] * yb[j]) / sb[j]
    for c in range(C):
        cc = c + pre                                   # entering channel
        if cc < C:
            for i in range(L):
                j = cc * HW + p0 + i
                accum[i] = accum[i] + (dyb[j] * yb[j]) / sb[j]
        for i in range(L):
            j = c * HW + p0 + i
            t = xb[j] * accum[i]
            dxb[j] = dxb[j] + (-crv) * t
        cc = c - pre                                   # leaving channel
        if cc >= 0:
            for i in range(L):
                j = cc * HW + p0 + i
                accum[i] = accum[i] - (dyb[j] * yb[j]) / sb[j]


def lrn_across_forward(const float[:, :, :, ::1] x, int size, float alpha, float beta, float k,
                       float[:, :, :, ::1] y, float[:, :, :, ::1] scale, int num_threads):
    """lrn_across_forward(x, size, alpha, beta, k, y, scale, num_threads) -> None

    ACROSS_CHANNELS LRN. x, y, scale: float32 C-contiguous (N, C, H, W); y and scale are
    overwritten (scale = k + alpha/size * windowed sum of x^2, kept for the backward pass).
    alpha, beta, k are used as float32 (they are float fields in caffe.proto).
    """
    _check_size(size)
    _check_same(&x.shape[0], &y.shape[0], "y")
    _check_same(&x.shape[0], &scale.shape[0], "scale")
    if num_threads < 1:
        num_threads = 1
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], HW = x.shape[2] * x.shape[3]
    if N * C * HW == 0:
        return
    cdef Py_ssize_t nblk = (HW + BLK - 1) // BLK, T = N * nblk, t, n, b, p0, p1
    cdef Py_ssize_t pre = (size - 1) // 2, img = C * HW
    cdef float aos = alpha / <float>size
    cdef float negbeta = -beta
    cdef const float* xb = &x[0, 0, 0, 0]
    cdef float* yb = &y[0, 0, 0, 0]
    cdef float* sb = &scale[0, 0, 0, 0]
    for t in prange(T, nogil=True, schedule='static', num_threads=num_threads):
        n = t // nblk
        b = t - n * nblk
        p0 = b * BLK
        p1 = p0 + BLK
        if p1 > HW:
            p1 = HW
        _across_fwd_task(xb + n * img, yb + n * img, sb + n * img, C, HW, p0, p1, pre, aos,
                         negbeta, k)


def lrn_across_backward(const float[:, :, :, ::1] x, const float[:, :, :, ::1] y,
                        const float[:, :, :, ::1] scale, const float[:, :, :, ::1] dy, int size,
                        float alpha, float beta, float[:, :, :, ::1] dx, int num_threads):
    """lrn_across_backward(x, y, scale, dy, size, alpha, beta, dx, num_threads) -> None

    Exact gradient of lrn_across_forward (Caffe's formula); y and scale are the forward's
    outputs. dx (float32 (N, C, H, W)) is overwritten.
    """
    _check_size(size)
    _check_same(&x.shape[0], &y.shape[0], "y")
    _check_same(&x.shape[0], &scale.shape[0], "scale")
    _check_same(&x.shape[0], &dy.shape[0], "dy")
    _check_same(&x.shape[0], &dx.shape[0], "dx")
    if num_threads < 1:
        num_threads = 1
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], HW = x.shape[2] * x.shape[3]
    if N * C * HW == 0:
        return
    cdef Py_ssize_t nblk = (HW + BLK - 1) // BLK, T = N * nblk, t, n, b, p0, p1
    cdef Py_ssize_t pre = (size - 1) // 2, img = C * HW
    # Caffe: Dtype cache_ratio_value = 2. * alpha_ * beta_ / size_;  (double, then float)
    cdef float crv = <float>(2.0 * <double>alpha * <double>beta / <double>size)
    cdef float negbeta = -beta
    cdef const float* xb = &x[0, 0, 0, 0]
    cdef const float* yb = &y[0, 0, 0, 0]
    cdef const float* sb = &scale[0, 0, 0, 0]
    cdef const float* dyb = &dy[0, 0, 0, 0]
    cdef float* dxb = &dx[0, 0, 0, 0]
    for t in prange(T, nogil=True, schedule='static', num_threads=num_threads):
        n = t // nblk
        b = t - n * nblk
        p0 = b * BLK
        p1 = p0 + BLK
        if p1 > HW:
            p1 = HW
        _across_bwd_task(xb + n * img, yb + n * img, sb + n * img, dyb + n * img,
                         dxb + n * img, C, HW, p0, p1, pre, crv, negbeta)


# --------------------------------------------------------------------------------- WITHIN_CHANNEL

cdef int _within_fwd_plane(const float* xp, float* yp, float* sp, Py_ssize_t H, Py_ssize_t W,
                           Py_ssize_t size, float alpha, float negbeta,
                           bint unit_power) noexcept nogil:
    cdef Py_ssize_t pre = (size - 1) // 2, h, w, hh, ww, hs, he, ws, we, HW = H * W
    cdef float s, avg, sc, xv
    cdef float div = <float>(size * size)
    cdef float* sq = <float*>malloc(HW * sizeof(float))
    if sq == NULL:
        return -1
    for h in range(HW):
        xv = xp[h]
        sq[h] = xv * xv
    for h in range(H):
        hs = h - pre
        if hs < 0:
            hs = 0
        he = h + pre + 1
        if he > H:
            he = H
        for w in range(W):
            ws = w - pre
            if ws < 0:
                ws = 0
            we = w + pre + 1
            if we > W:
                we = W
            s = 0.0
            for hh in range(hs, he):
                for ww in range(ws, we):
                    s = s + sq[hh * W + ww]
            avg = s / div
            sc = alpha * avg + <float>1.0
            sp[h * W + w] = sc
            if unit_power:
                yp[h * W + w] = xp[h * W + w]
            else:
                yp[h * W + w] = xp[h * W + w] * powf(sc, negbeta)
    free(sq)
    return 0


cdef int _within_bwd_plane(const float* xp, const float* yp, const float* sp, const float* dyp,
                           float* dxp, Py_ssize_t H, Py_ssize_t W, Py_ssize_t size, float cr,
                           float negbeta, bint unit_power) noexcept nogil:
    cdef Py_ssize_t pre = (size - 1) // 2, h, w, hh, ww, hs, he, ws, we, HW = H * W, j
    cdef float s
    cdef float* r
    if unit_power:
        for j in range(HW):
            dxp[j] = dyp[j]
        return 0
    r = <float*>malloc(HW * sizeof(float))
    if r == NULL:
        return -1
    for j in range(HW):
        r[j] = (dyp[j] * yp[j]) / sp[j]
    for h in range(H):
        hs = h - pre
        if hs < 0:
            hs = 0
        he = h + pre + 1
        if he > H:
            he = H
        for w in range(W):
            ws = w - pre
            if ws < 0:
                ws = 0
            we = w + pre + 1
            if we > W:
                we = W
            s = 0.0
            for hh in range(hs, he):
                for ww in range(ws, we):
                    s = s + r[hh * W + ww]
            j = h * W + w
            dxp[j] = dyp[j] * powf(sp[j], negbeta) - cr * (xp[j] * s)
    free(r)
    return 0


def lrn_within_forward(const float[:, :, :, ::1] x, int size, float alpha, float beta,
                       float[:, :, :, ::1] y, float[:, :, :, ::1] scale, int num_threads):
    """lrn_within_forward(x, size, alpha, beta, y, scale, num_threads) -> None

    WITHIN_CHANNEL LRN. y and scale (= 1 + alpha * S / size^2) are overwritten.
    """
    _check_size(size)
    _check_same(&x.shape[0], &y.shape[0], "y")
    _check_same(&x.shape[0], &scale.shape[0], "scale")
    if num_threads < 1:
        num_threads = 1
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t P = N * C, p, HW = H * W
    if P * HW == 0:
        return
    cdef bint unit_power = (alpha == 0.0 or beta == 0.0)
    cdef float negbeta = -beta
    cdef const float* xb = &x[0, 0, 0, 0]
    cdef float* yb = &y[0, 0, 0, 0]
    cdef float* sb = &scale[0, 0, 0, 0]
    cdef Py_ssize_t failed = 0
    for p in prange(P, nogil=True, schedule='static', num_threads=num_threads):
        if _within_fwd_plane(xb + p * HW, yb + p * HW, sb + p * HW, H, W, size, alpha,
                             negbeta, unit_power) != 0:
            failed += 1
    if failed:
        raise MemoryError("lrn_within_forward: cannot allocate a scratch plane")


def lrn_within_backward(const float[:, :, :, ::1] x, const float[:, :, :, ::1] y,
                        const float[:, :, :, ::1] scale, const float[:, :, :, ::1] dy, int size,
                        float alpha, float beta, float[:, :, :, ::1] dx, int num_threads):
    """lrn_within_backward(x, y, scale, dy, size, alpha, beta, dx, num_threads) -> None

    Exact gradient of lrn_within_forward; dx (float32 (N, C, H, W)) is overwritten.
    """
    _check_size(size)
    _check_same(&x.shape[0], &y.shape[0], "y")
    _check_same(&x.shape[0], &scale.shape[0], "scale")
    _check_same(&x.shape[0], &dy.shape[0], "dy")
    _check_same(&x.shape[0], &dx.shape[0], "dx")
    if num_threads < 1:
        num_threads = 1
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t P = N * C, p, HW = H * W
    if P * HW == 0:
        return
    cdef bint unit_power = (alpha == 0.0 or beta == 0.0)
    cdef float cr = <float>(2.0 * <double>alpha * <double>beta / (<double>size * size))
    cdef float negbeta = -beta
    cdef const float* xb = &x[0, 0, 0, 0]
    cdef const float* yb = &y[0, 0, 0, 0]
    cdef const float* sb = &scale[0, 0, 0, 0]
    cdef const float* dyb = &dy[0, 0, 0, 0]
    cdef float* dxb = &dx[0, 0, 0, 0]
    cdef Py_ssize_t failed = 0
    for p in prange(P, nogil=True, schedule='static', num_threads=num_threads):
        if _within_bwd_plane(xb + p * HW, yb + p * HW, sb + p * HW, dyb + p * HW, dxb + p * HW,
                             H, W, size, cr, negbeta, unit_power) != 0:
            failed += 1
    if failed:
        raise MemoryError("lrn_within_backward: cannot allocate a scratch plane")


# ------------------------------------------------------------------------------- Caffe-exact mode

def lrn_power_mul(const float[:, :, :, ::1] scale, const float[:, :, :, ::1] x, float beta,
                  float[:, :, :, ::1] y):
    """lrn_power_mul(scale, x, beta, y) -> None

    y = powf(scale, -beta) * x elementwise, as Caffe's caffe_powx (std::pow on floats, i.e.
    powf) followed by caffe_mul; used by caffelrp.caffe_blas after its saxpy window sums.
    """
    _check_same(&x.shape[0], &y.shape[0], "y")
    _check_same(&x.shape[0], &scale.shape[0], "scale")
    cdef Py_ssize_t i, total = x.shape[0] * x.shape[1] * x.shape[2] * x.shape[3]
    if total == 0:
        return
    cdef float negbeta = -beta
    cdef const float* sp = &scale[0, 0, 0, 0]
    cdef const float* xp = &x[0, 0, 0, 0]
    cdef float* yp = &y[0, 0, 0, 0]
    with nogil:
        for i in range(total):
            yp[i] = powf(sp[i], negbeta) * xp[i]
