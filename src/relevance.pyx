# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
# distutils: libraries = m
# (-lm: without it the unversioned powf binds to glibc's compat wrapper powf@GLIBC_2.2.5, which
# costs ~25% of the LRN kernel; linked, it is powf@GLIBC_2.27 -> __powf_fma directly)
"""Relevance (LRP) rules of the non-linear layers, as the LRP Toolbox's Caffe release computes
them (original-lrp.md §2.3).

Why a module of its own rather than extending pooling.pyx / lrn.pyx: those two hold Caffe 1.0's
forward passes and their exact adjoints (caffe-format.md §3.3, §3.5), i.e. the network's
semantics; the rules here are the original's relevance redistribution, which is neither (the
LRN rule is not the gradient, the AVE rule does not use 1/pool_size and carries the original's
|S| < 1e-6 quirk). Keeping them apart keeps each file answerable to one spec, and lets the
gradient kernels and these rules change independently.

* ``ave_pool_relevance`` — Pooling AVE::

      S_j = sum of x_i over window j clipped to the image (padding never counted)
      R_i += x_i * (R_j / S_j)   if |S_j| >= 1e-6
      R_i += x_i                 otherwise (the original's quirk, reproduced)

  Window of output (oh, ow): ``[oh*sh - ph, oh*sh - ph + kh)`` clipped to ``[0, H)`` (same for
  w); (OH, OW) are R's trailing dims (Caffe's ceil-mode output size). S_j is a float32 sum in
  row-major order over the window, ``R_j / S_j`` a float32 quotient, ``x_i * (R_j / S_j)`` a
  float32 product, added to R_i in float32 in the order of the window offset (row, then column):
  the operations, and so the results, of caffelrp's former numpy implementation, bit for bit.
  (The original's loops visit the windows in row-major order instead; that differs from this
  order in the last bit of a cell's sum at most.) One (n, c) plane per prange task; with
  overlapping windows the plane is copied into a zero-padded scratch plane so that the loops
  over the output columns need no clipping.

* ``lrn_relevance`` — LRN, lrn_backward_type 1, ACROSS_CHANNELS (p = (n-1)/2, s = the forward's
  scale)::

      R_i[c] = R[c] x_c (k + (alpha/n) x_c^2)^(-beta)
               - (2 alpha beta / n) x_c^2 sum_{c' in [c-p, c+p] ∩ [0, C-1], c' != c} t_c'
      t_c' = x_c' s_c'^(-beta-1) R[c']

  The own term and t are float32 (alpha/n in float32, powf); the window sum of t is a running
  sum over the channels in double (add the entering, subtract the leaving channel, as Caffe's
  LRN kernels do), the own-channel term is taken out of it by subtraction, and the difference of
  the two terms is formed in double and rounded once to float32. 2 alpha beta / n is computed in
  double and rounded to float32. Parallel over (image, block of spatial positions); the running
  sum's rounding error is bounded by ~C * 2^-53 * max|t| along the pixel's channels, far below
  float32 resolution unless t spans more than ~1e8 between channels of one pixel.

All arrays are C-contiguous float32 (N, C, ., .); outputs are overwritten completely, every output
element is produced by one thread in a fixed order, so results do not depend on ``num_threads``.
"""

from cython.parallel cimport prange
from libc.math cimport fabsf, powf
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy, memset

from kernel_limits cimport check_int_range, checked_mul, checked_mul_nogil

cdef enum:
    BLK = 256     # spatial positions per LRN task (one L1-sized strip per channel)


cdef int _check_same(Py_ssize_t* ref, Py_ssize_t* got, str name) except -1:
    cdef int i
    for i in range(4):
        if ref[i] != got[i]:
            raise ValueError("%s has shape (%d, %d, %d, %d), expected (%d, %d, %d, %d)"
                             % (name, got[0], got[1], got[2], got[3],
                                ref[0], ref[1], ref[2], ref[3]))
    return 0


# ------------------------------------------------------------------------------------ AVE pooling

cdef int _ave_rel_plane_disjoint(const float* xp, const float* rp, float* outp, Py_ssize_t H,
                                 Py_ssize_t W, Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t ph,
                                 Py_ssize_t pw, Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t OH,
                                 Py_ssize_t OW) noexcept nogil:
    # Windows that do not overlap (stride >= kernel, or a global pool): every cell receives at
    # most one contribution, so no order of accumulation to keep and no scratch plane needed.
    cdef Py_ssize_t oh, ow, h, w, hs, he, ws, we
    cdef float s, ratio
    memset(outp, 0, H * W * sizeof(float))
    for oh in range(OH):
        hs = oh * sh - ph
        he = hs + kh
        if he > H:
            he = H
        if hs < 0:
            hs = 0
        if hs >= he:
            continue                              # window outside the image: no cells
        for ow in range(OW):
            ws = ow * sw - pw
            we = ws + kw
            if we > W:
                we = W
            if ws < 0:
                ws = 0
            if ws >= we:
                continue
            s = 0.0
            for h in range(hs, he):
                for w in range(ws, we):
                    s = s + xp[h * W + w]
            if fabsf(s) >= <float>1e-6:
                ratio = rp[oh * OW + ow] / s
            else:
                ratio = 1.0                       # original-lrp.md §2.3: adds x_i itself
            for h in range(hs, he):
                for w in range(ws, we):
                    outp[h * W + w] = xp[h * W + w] * ratio
    return 0


cdef int _ave_rel_plane_clipped(const float* xp, const float* rp, float* outp, float* s,
                                float* ratio, Py_ssize_t H, Py_ssize_t W, Py_ssize_t kh,
                                Py_ssize_t kw, Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t sh,
                                Py_ssize_t sw, Py_ssize_t OH, Py_ssize_t OW) noexcept nogil:
    # Overlapping windows whose zero-padded scratch plane would be far larger than the image
    # (kernel and pad near Caffe's int limit): every cell receives its contributions in the
    # order of _ave_rel_plane (windows by descending row, then ascending window column), with
    # the padding cells skipped instead of stored; those are zeros there, which add nothing to
    # S_j and receive nothing, so the results are the same. Work ~ OH*OW*window-in-image.
    cdef Py_ssize_t oh, ow, h, w, u, u0, u1, w0, w1
    memset(outp, 0, H * W * sizeof(float))
    oh = OH - 1
    while oh >= 0:
        u0 = ph - oh * sh
        if u0 < 0:
            u0 = 0
        u1 = H + ph - oh * sh
        if u1 > kh:
            u1 = kh
        # S_j: per window, row-major over its cells in the image
        for ow in range(OW):
            w0 = ow * sw - pw
            w1 = w0 + kw
            if w0 < 0:
                w0 = 0
            if w1 > W:
                w1 = W
            s[ow] = 0.0
            for u in range(u0, u1):
                h = oh * sh - ph + u
                for w in range(w0, w1):
                    s[ow] = s[ow] + xp[h * W + w]
            if fabsf(s[ow]) >= <float>1e-6:
                ratio[ow] = rp[oh * OW + ow] / s[ow]
            else:
                ratio[ow] = 1.0                   # original-lrp.md §2.3: adds x_i itself
        # within one window row a cell hears from several columns ow, in ascending window
        # column v = w + pw - ow*sw, i.e. descending ow: the padded loops' order
        for u in range(u0, u1):
            h = oh * sh - ph + u
            ow = OW - 1
            while ow >= 0:
                w0 = ow * sw - pw
                w1 = w0 + kw
                if w0 < 0:
                    w0 = 0
                if w1 > W:
                    w1 = W
                for w in range(w0, w1):
                    outp[h * W + w] = outp[h * W + w] + xp[h * W + w] * ratio[ow]
                ow -= 1
        oh -= 1
    return 0


cdef int _ave_rel_plane(const float* xp, const float* rp, float* outp, Py_ssize_t H,
                        Py_ssize_t W, Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t ph, Py_ssize_t pw,
                        Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t OH, Py_ssize_t OW,
                        Py_ssize_t Hp, Py_ssize_t Wp) noexcept nogil:
    # The plane is copied into a zero-padded scratch plane covering every window, so that the
    # inner loops run over the output columns without clipping (and vectorise); the zeros add
    # nothing to S_j (the window sum is still row-major over the window) nor to R.
    # Hp, Wp: the scratch plane, sized (with checked products) by ave_pool_relevance
    cdef Py_ssize_t oh, ow, h, u, v
    cdef float* xpad
    cdef float* opad
    cdef float* s
    cdef float* ratio
    cdef const float* row
    cdef const float* rv
    cdef float* orow
    cdef float* orv
    xpad = <float*>malloc((2 * Hp * Wp + 2 * OW) * sizeof(float))
    if xpad == NULL:
        return -1
    opad = xpad + Hp * Wp
    s = opad + Hp * Wp
    ratio = s + OW
    memset(xpad, 0, 2 * Hp * Wp * sizeof(float))
    for h in range(H):
        memcpy(xpad + (h + ph) * Wp + pw, xp + h * W, W * sizeof(float))
    # windows in descending row order, window columns ascending: every cell receives its
    # contributions ordered by (window row u, window column v) ascending, the order of the
    # former numpy implementation, whose results this reproduces bit for bit
    oh = OH - 1
    while oh >= 0:
        for ow in range(OW):
            s[ow] = 0.0
        for u in range(kh):
            row = xpad + (oh * sh + u) * Wp
            for v in range(kw):
                if sw == 1:                       # contiguous: the loop vectorises
                    rv = row + v
                    for ow in range(OW):
                        s[ow] = s[ow] + rv[ow]
                else:
                    for ow in range(OW):
                        s[ow] = s[ow] + row[ow * sw + v]
        for ow in range(OW):
            if fabsf(s[ow]) >= <float>1e-6:
                ratio[ow] = rp[oh * OW + ow] / s[ow]
            else:
                ratio[ow] = 1.0                   # original-lrp.md §2.3: adds x_i itself
        for u in range(kh):
            row = xpad + (oh * sh + u) * Wp
            orow = opad + (oh * sh + u) * Wp
            for v in range(kw):
                if sw == 1:
                    rv = row + v
                    orv = orow + v
                    for ow in range(OW):
                        orv[ow] = orv[ow] + rv[ow] * ratio[ow]
                else:
                    for ow in range(OW):
                        orow[ow * sw + v] = orow[ow * sw + v] + row[ow * sw + v] * ratio[ow]
        oh -= 1
    for h in range(H):
        memcpy(outp + h * W, opad + (h + ph) * Wp + pw, W * sizeof(float))
    free(xpad)
    return 0


def ave_pool_relevance(const float[:, :, :, ::1] x, const float[:, :, :, ::1] r, Py_ssize_t kh,
                       Py_ssize_t kw, Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t sh, Py_ssize_t sw,
                       float[:, :, :, ::1] out, int num_threads):
    """ave_pool_relevance(x, r, kh, kw, ph, pw, sh, sw, out, num_threads) -> None

    x: the pooling's input (N, C, H, W); r: the relevance of its output (N, C, OH, OW);
    out (N, C, H, W) is overwritten with the input relevance (proportional rule, §2.3).
    """
    # Caffe's int range for every value: window arithmetic then fits Py_ssize_t
    check_int_range("kernel height", kh, 1)
    check_int_range("kernel width", kw, 1)
    check_int_range("stride height", sh, 1)
    check_int_range("stride width", sw, 1)
    check_int_range("pad height", ph, 0)
    check_int_range("pad width", pw, 0)
    _check_same(&x.shape[0], &out.shape[0], "out")
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t OH = r.shape[2], OW = r.shape[3]
    if r.shape[0] != N or r.shape[1] != C:
        raise ValueError("r has batch/channel dims (%d, %d), expected (%d, %d)"
                         % (r.shape[0], r.shape[1], N, C))
    check_int_range("output height", OH, 0)
    check_int_range("output width", OW, 0)
    if num_threads < 1:
        num_threads = 1
    cdef Py_ssize_t P = N * C, p, HW = H * W, OHW = OH * OW
    if P == 0 or HW == 0:
        return
    cdef const float* xb = &x[0, 0, 0, 0]
    cdef float* ob = &out[0, 0, 0, 0]
    cdef const float* rb = NULL
    cdef Py_ssize_t failed = 0
    if OHW == 0:
        out[...] = 0
        return
    rb = &r[0, 0, 0, 0]
    cdef bint disjoint = (sh >= kh or OH == 1) and (sw >= kw or OW == 1)
    # the zero-padded scratch plane covers every window: Hp x Wp, checked products (a kernel
    # near 2^30 with a pad near 2^30 would otherwise wrap the malloc size to a few bytes)
    cdef Py_ssize_t Hp = (OH - 1) * sh + kh, Wp = (OW - 1) * sw + kw, HpWp, scratch
    if Hp < H + ph:
        Hp = H + ph
    if Wp < W + pw:
        Wp = W + pw
    HpWp = checked_mul_nogil(Hp, Wp)
    # use it only while it is a small multiple of the image; else the clipped loops
    cdef bint padded = 0 <= HpWp <= 4 * HW + (1 << 20)
    cdef float* sbuf = NULL
    if not disjoint and not padded:
        # s and ratio of the clipped loops, one pair per thread (indexed by the plane's thread)
        sbuf = <float*>malloc(checked_mul(checked_mul(2, OW), P) * sizeof(float))
        if sbuf == NULL:
            raise MemoryError("ave_pool_relevance: cannot allocate %d floats" % (2 * OW * P))
    try:
        for p in prange(P, nogil=True, schedule='static', num_threads=num_threads):
            if disjoint:
                _ave_rel_plane_disjoint(xb + p * HW, rb + p * OHW, ob + p * HW, H, W, kh, kw,
                                        ph, pw, sh, sw, OH, OW)
            elif padded:
                if _ave_rel_plane(xb + p * HW, rb + p * OHW, ob + p * HW, H, W, kh, kw, ph, pw,
                                  sh, sw, OH, OW, Hp, Wp) != 0:
                    failed += 1
            else:
                _ave_rel_plane_clipped(xb + p * HW, rb + p * OHW, ob + p * HW,
                                       sbuf + 2 * OW * p, sbuf + 2 * OW * p + OW, H, W, kh, kw,
                                       ph, pw, sh, sw, OH, OW)
    finally:
        free(sbuf)
    if failed:
        raise MemoryError("ave_pool_relevance: cannot allocate a scratch plane")


# ------------------------------------------------------------------------------------------- LRN

cdef int _lrn_rel_task(const float* xb, const float* sb, const float* rb, float* ob,
                       Py_ssize_t C, Py_ssize_t HW, Py_ssize_t p0, Py_ssize_t p1,
                       Py_ssize_t pre, float aos, float crv, float negbeta, float negbeta1,
                       float k) noexcept nogil:
    cdef double acc[BLK]
    # a channel leaves the window pre steps after it is overwritten; with pre >= C none ever
    # does, and C slots are enough (local_size near 2^31 would ask for 2^30 of them)
    cdef Py_ssize_t c, i, j, cc, L = p1 - p0, R = pre + 1 if pre < C else C
    cdef float xv, tc, own, xx
    # ring[(c % R)*BLK + i] = t of channel c: out[c] is overwritten at step c, but t_c leaves the
    # window only at step c + pre
    cdef float* ring = <float*>malloc(R * BLK * sizeof(float))
    if ring == NULL:
        return -1
    # pass 1: out[c] = t_c = x_c s_c^(-beta-1) R[c]
    for c in range(C):
        for i in range(L):
            j = c * HW + p0 + i
            ob[j] = (xb[j] * powf(sb[j], negbeta1)) * rb[j]
    # window of channel 0 before its entering channel (pre) is added: channels 0..pre-1
    for i in range(L):
        acc[i] = 0.0
    for cc in range(pre):
        if cc >= C:
            break
        for i in range(L):
            acc[i] = acc[i] + <double>ob[cc * HW + p0 + i]
    for c in range(C):
        cc = c + pre                                   # entering channel (not yet overwritten)
        if cc < C:
            for i in range(L):
                acc[i] = acc[i] + <double>ob[cc * HW + p0 + i]
        for i in range(L):
            j = c * HW + p0 + i
            tc = ob[j]
            ring[(c % R) * BLK + i] = tc
            xv = xb[j]
            own = (rb[j] * xv) * powf(k + (aos * xv) * xv, negbeta)
            xx = (crv * xv) * xv
            ob[j] = <float>(<double>own - <double>xx * (acc[i] - <double>tc))
        cc = c - pre                                   # leaving channel
        if cc >= 0:
            for i in range(L):
                acc[i] = acc[i] - <double>ring[(cc % R) * BLK + i]
    free(ring)
    return 0


def lrn_relevance(const float[:, :, :, ::1] x, const float[:, :, :, ::1] scale,
                  const float[:, :, :, ::1] r, int size, float alpha, float beta, float k,
                  float[:, :, :, ::1] out, int num_threads):
    """lrn_relevance(x, scale, r, size, alpha, beta, k, out, num_threads) -> None

    ACROSS_CHANNELS LRN, lrn_backward_type 1 (§2.3). x: the LRN's input, scale: its forward's
    scale (caffelrp.kernels.lrn.lrn_across_forward), r: the relevance of its output, all float32
    (N, C, H, W); out is overwritten. alpha, beta, k are used as float32.
    """
    if size < 1 or size % 2 == 0:
        raise ValueError("LRN local_size must be odd and >= 1, got %d" % size)
    _check_same(&x.shape[0], &scale.shape[0], "scale")
    _check_same(&x.shape[0], &r.shape[0], "r")
    _check_same(&x.shape[0], &out.shape[0], "out")
    if num_threads < 1:
        num_threads = 1
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], HW = x.shape[2] * x.shape[3]
    if N * C * HW == 0:
        return
    # blocks of <= BLK positions, but at least ~4 tasks per thread where the image allows
    cdef Py_ssize_t nblk = (HW + BLK - 1) // BLK, blk
    if N * nblk < 4 * num_threads:
        nblk = (4 * num_threads + N - 1) // N
        if nblk > (HW + 15) // 16:
            nblk = (HW + 15) // 16
    blk = (HW + nblk - 1) // nblk
    nblk = (HW + blk - 1) // blk
    cdef Py_ssize_t T = N * nblk, t, n, b, p0, p1, pre = (size - 1) // 2, img = C * HW
    cdef float aos = alpha / <float>size
    # the numpy original: np.float32(2 * alpha * beta / n) from Python (double) floats
    cdef float crv = <float>(2.0 * <double>alpha * <double>beta / <double>size)
    cdef float negbeta = -beta
    cdef float negbeta1 = -beta - <float>1.0
    cdef const float* xb = &x[0, 0, 0, 0]
    cdef const float* sb = &scale[0, 0, 0, 0]
    cdef const float* rb = &r[0, 0, 0, 0]
    cdef float* ob = &out[0, 0, 0, 0]
    cdef Py_ssize_t failed = 0
    for t in prange(T, nogil=True, schedule='static', num_threads=num_threads):
        n = t // nblk
        b = t - n * nblk
        p0 = b * blk
        p1 = p0 + blk
        if p1 > HW:
            p1 = HW
        if _lrn_rel_task(xb + n * img, sb + n * img, rb + n * img, ob + n * img, C, HW, p0, p1,
                         pre, aos, crv, negbeta, negbeta1, k) != 0:
            failed += 1
    if failed:
        raise MemoryError("lrn_relevance: cannot allocate a scratch buffer")
