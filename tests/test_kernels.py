"""Tests of the Cython kernels (caffelrp.kernels.im2col / pooling / lrn).

Every kernel is checked against an independent plain-numpy float64 reference written here from
the Caffe 1.0 semantics (shared/spec/caffe-format.md §3.1, §3.3, §3.5), on small random shapes
that include the awkward geometries (ceil pooling with clipped last windows, kernel < stride,
dilation, 1x1 inputs, asymmetric kernels/strides/pads, C = 1, N > 1). Backward kernels are checked
against central finite differences of the float64 reference or against the exact adjoint
identity, and every kernel must give bit-identical results with 1 and 2 threads.

Tolerances: the kernels compute in float32, the references in float64. A copy (im2col, max
pooling, argmax) must be exact; a short float32 sum or product agrees with float64 to a few ulp,
so rtol = 1e-5 (float32 eps is 1.2e-7) with a small atol for values that cancel to ~0.
"""

import itertools

import numpy as np
import pytest

from caffelrp.kernels import im2col as k_im2col
from caffelrp.kernels import lrn as k_lrn
from caffelrp.kernels import pooling as k_pool

FLT_MAX = float(np.finfo(np.float32).max)
RTOL = 1e-5      # float32 kernel vs float64 reference: a few float32 ulp
THREADS = (1, 2)


def rng(seed):
    return np.random.default_rng(seed)


def rand32(r, shape, lo=-1.0, hi=1.0):
    return r.uniform(lo, hi, size=shape).astype(np.float32)


# ================================================================== references (float64, numpy)

def ref_conv_out(in_, k, pad, stride, dil):
    num = in_ + 2 * pad - (dil * (k - 1) + 1)
    return int(np.trunc(num / stride)) + 1          # C++ integer division truncates


def ref_pooled(in_, k, pad, stride):
    out = int(np.ceil((in_ + 2 * pad - k) / stride)) + 1
    if pad > 0 and (out - 1) * stride >= in_ + pad:
        out -= 1
    return out


def ref_im2col(x, kh, kw, ph, pw, sh, sw, dh, dw, OH, OW):
    """col[(c*kh+u)*kw+v, n*OH*OW + oh*OW + ow] by direct indexing with a validity mask."""
    x = np.asarray(x, np.float64)
    N, C, H, W = x.shape
    out = np.zeros((C, kh, kw, N, OH, OW))
    for u in range(kh):
        ih = np.arange(OH) * sh - ph + u * dh
        for v in range(kw):
            iw = np.arange(OW) * sw - pw + v * dw
            hi = np.nonzero((ih >= 0) & (ih < H))[0]        # output rows inside the image
            wi = np.nonzero((iw >= 0) & (iw < W))[0]
            blk = np.zeros((N, C, OH, OW))
            blk[:, :, hi[:, None], wi[None, :]] = x[:, :, ih[hi][:, None], iw[wi][None, :]]
            out[:, u, v] = blk.transpose(1, 0, 2, 3)
    return out.reshape(C * kh * kw, N * OH * OW)


def ref_col2im(col, N, C, H, W, kh, kw, ph, pw, sh, sw, dh, dw, OH, OW):
    """Scatter-add with np.add.at (independent of the kernel's loop structure)."""
    col = np.asarray(col, np.float64).reshape(C, kh, kw, N, OH, OW)
    x = np.zeros((N, C, H, W))
    for u in range(kh):
        for v in range(kw):
            for oh in range(OH):
                ih = oh * sh - ph + u * dh
                if not 0 <= ih < H:
                    continue
                for ow in range(OW):
                    iw = ow * sw - pw + v * dw
                    if 0 <= iw < W:
                        x[:, :, ih, iw] += col[:, u, v, :, oh, ow].T
    return x


def ref_max_pool(x, kh, kw, ph, pw, sh, sw, OH, OW):
    """Caffe MAX pooling, direct loops; returns (y, argmax) in float64 / int."""
    N, C, H, W = x.shape
    y = np.full((N, C, OH, OW), -FLT_MAX)
    am = np.full((N, C, OH, OW), -1, dtype=np.int64)
    for n, c, oh, ow in itertools.product(range(N), range(C), range(OH), range(OW)):
        hs, ws = oh * sh - ph, ow * sw - pw
        he, we = min(hs + kh, H), min(ws + kw, W)
        hs, ws = max(hs, 0), max(ws, 0)
        best, idx = -FLT_MAX, -1
        for h in range(hs, he):
            for w in range(ws, we):
                if x[n, c, h, w] > best:
                    best, idx = float(x[n, c, h, w]), h * W + w
        y[n, c, oh, ow], am[n, c, oh, ow] = best, idx
    return y, am


def ref_ave_pool(x, kh, kw, ph, pw, sh, sw, OH, OW):
    """Caffe AVE pooling (divisor from the window clipped to [-pad, in+pad)), float64."""
    x = np.asarray(x, np.float64)
    N, C, H, W = x.shape
    y = np.zeros((N, C, OH, OW))
    for oh, ow in itertools.product(range(OH), range(OW)):
        hs, ws = oh * sh - ph, ow * sw - pw
        he, we = min(hs + kh, H + ph), min(ws + kw, W + pw)
        size = (he - hs) * (we - ws)
        hs, ws, he, we = max(hs, 0), max(ws, 0), min(he, H), min(we, W)
        s = x[:, :, hs:max(he, hs), ws:max(we, ws)].sum(axis=(2, 3))
        with np.errstate(invalid="ignore", divide="ignore"):
            y[:, :, oh, ow] = s / size
    return y


def ref_lrn_across(x, size, alpha, beta, k):
    x = np.asarray(x, np.float64)
    C = x.shape[1]
    pre = (size - 1) // 2
    sq = x * x
    scale = np.full_like(x, k)
    for c in range(C):
        lo, hi = max(0, c - pre), min(C, c + pre + 1)
        scale[:, c] += alpha / size * sq[:, lo:hi].sum(axis=1)
    return x * scale ** (-beta), scale


def ref_lrn_within(x, size, alpha, beta):
    x = np.asarray(x, np.float64)
    N, C, H, W = x.shape
    pre = (size - 1) // 2
    sqp = np.pad(x * x, ((0, 0), (0, 0), (pre, pre), (pre, pre)))
    S = np.zeros_like(x)
    for u in range(size):
        for v in range(size):
            S += sqp[:, :, u:u + H, v:v + W]
    scale = 1.0 + alpha / size ** 2 * S
    return x * scale ** (-beta), scale


def fd_grad(f, x, dy, eps=1e-6):
    """Central finite differences of <dy, f(x)> w.r.t. x, in float64."""
    x = np.asarray(x, np.float64).copy()
    g = np.zeros_like(x)
    flat, gf = x.reshape(-1), g.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + eps
        fp = np.sum(dy * f(x))
        flat[i] = old - eps
        fm = np.sum(dy * f(x))
        flat[i] = old
        gf[i] = (fp - fm) / (2 * eps)
    return g


def dense_matrix(f, in_shape):
    """Matrix of a linear map f (float64) by applying it to unit vectors."""
    n = int(np.prod(in_shape))
    cols = []
    for i in range(n):
        e = np.zeros(n)
        e[i] = 1.0
        cols.append(np.asarray(f(e.reshape(in_shape)), np.float64).reshape(-1))
    return np.stack(cols, axis=1)


# ========================================================================= output-size helpers

def test_pooled_size_spec_examples():
    assert k_pool.pooled_size(28, 3, 1, 2) == 15       # Convolution would give 14
    assert k_pool.pooled_size(5, 2, 1, 2) == 3         # ceil gives 4, clipped to 3
    assert k_pool.pooled_size(112, 3, 0, 2) == 56      # floor would give 55
    assert k_pool.pooled_size(112, 3, 1, 2) == 57      # PyTorch default: 56
    assert k_pool.pooled_size(7, 1, 0, 2) == 4
    assert k_pool.pooled_size(32, 1, 0, 2) == 17       # last window outside the image
    assert k_pool.pooled_size(227, 3, 0, 2) == 113
    assert k_pool.pooled_size(55, 3, 0, 2) == 27
    assert k_pool.pooled_size(7, 7, 0, 1) == 1
    assert k_pool.pooled_size(14, 2, 0, 2) == 7


def test_pooled_size_clips_an_unpadded_axis_when_the_other_is_padded():
    # Caffe's Reshape drops a last window starting beyond the image on both axes as soon as
    # pad_h or pad_w is set (found by the kernel fuzz: an AVE window of size 0, NaN)
    assert k_pool.pooled_size(4, 1, 0, 4) == 2               # no padding anywhere: Caffe's 2
    assert k_pool.pooled_size(4, 1, 0, 4, clip=True) == 1    # pad_h > 0: 1
    assert k_pool.pooled_size(4, 1, 0, 4, clip=False) == 2


def test_pooled_size_matches_formula():
    for in_, k, pad, stride in itertools.product(range(1, 20), range(1, 6), range(0, 3),
                                                 range(1, 5)):
        if pad >= k:
            continue
        # including kernels that do not fit (ceil of a negative ratio, as Caffe computes it)
        expect = ref_pooled(in_, k, pad, stride)
        assert k_pool.pooled_size(in_, k, pad, stride) == expect, (in_, k, pad, stride)
        # the last window starts on a real row when pad > 0
        if pad > 0 and expect > 0:
            assert (expect - 1) * stride - pad < in_
    assert k_pool.pooled_size(1, 2, 0, 2) == 1           # ceil(-0.5) + 1: window clipped
    assert k_pool.pooled_size(1, 5, 0, 1) <= 0           # caller must reject


def test_size_helpers_reject_bad_args():
    with pytest.raises(ValueError):
        k_pool.pooled_size(5, 0, 0, 1)
    with pytest.raises(ValueError):
        k_pool.pooled_size(5, 2, 0, 0)


# ======================================================================================= im2col

# (N, C, H, W, kh, kw, ph, pw, sh, sw, dh, dw, extra): extra rows/cols of output beyond the
# natural size (the kernel must zero-fill positions that fall entirely outside the input)
IM2COL_CASES = [
    (2, 3, 7, 6, 3, 3, 1, 1, 1, 1, 1, 1, 0),      # plain 3x3 pad 1, N > 1
    (1, 2, 5, 5, 1, 1, 0, 0, 2, 2, 1, 1, 0),      # kernel < stride
    (1, 3, 6, 6, 2, 2, 0, 0, 3, 3, 1, 1, 0),      # stride > kernel
    (2, 1, 9, 8, 3, 2, 2, 0, 2, 3, 2, 1, 0),      # asymmetric k/p/s/d, C = 1
    (1, 2, 8, 8, 3, 3, 2, 2, 1, 1, 2, 2, 0),      # dilation 2
    (3, 2, 1, 1, 3, 3, 1, 1, 1, 1, 1, 1, 0),      # 1x1 input, pad 1
    (1, 1, 1, 1, 1, 1, 0, 0, 1, 1, 1, 1, 0),      # 1x1 everything
    (2, 4, 11, 13, 5, 3, 2, 1, 3, 2, 1, 2, 0),
    (2, 2, 10, 10, 4, 4, 3, 3, 4, 4, 1, 1, 0),    # large pad and stride
    (1, 2, 2, 2, 3, 3, 0, 0, 2, 2, 1, 1, 0),      # window larger than the input (C++ trunc)
    (1, 2, 5, 7, 3, 3, 1, 1, 1, 1, 1, 1, 2),      # OH/OW beyond the natural size
    (2, 3, 12, 9, 7, 5, 3, 2, 2, 1, 1, 1, 0),
    (1, 2, 6, 9, 1, 1, 0, 0, 1, 1, 1, 1, 0),      # 1x1 conv
    (2, 2, 9, 9, 3, 3, 1, 1, 5, 4, 3, 2, 0),      # stride and dilation mixed
]


def _geom(case):
    N, C, H, W, kh, kw, ph, pw, sh, sw, dh, dw, extra = case
    OH = ref_conv_out(H, kh, ph, sh, dh) + extra
    OW = ref_conv_out(W, kw, pw, sw, dw) + extra
    return N, C, H, W, kh, kw, ph, pw, sh, sw, dh, dw, OH, OW


@pytest.mark.parametrize("case", IM2COL_CASES)
def test_im2col_matches_reference(case):
    N, C, H, W, kh, kw, ph, pw, sh, sw, dh, dw, OH, OW = _geom(case)
    r = rng(1)
    x = rand32(r, (N, C, H, W))
    ref = ref_im2col(x, kh, kw, ph, pw, sh, sw, dh, dw, OH, OW)
    for nt in THREADS:
        col = np.full((C * kh * kw, N * OH * OW), np.nan, np.float32)   # must be overwritten
        k_im2col.im2col(x, kh, kw, ph, pw, sh, sw, dh, dw, OH, OW, col, nt)
        np.testing.assert_array_equal(col, ref)          # a pure copy: exact


@pytest.mark.parametrize("case", IM2COL_CASES)
def test_col2im_matches_reference_and_is_adjoint(case):
    N, C, H, W, kh, kw, ph, pw, sh, sw, dh, dw, OH, OW = _geom(case)
    r = rng(2)
    a = rand32(r, (C * kh * kw, N * OH * OW))
    b = rand32(r, (N, C, H, W))
    ref = ref_col2im(a, N, C, H, W, kh, kw, ph, pw, sh, sw, dh, dw, OH, OW)
    outs = []
    for nt in THREADS:
        x_out = np.full((N, C, H, W), np.nan, np.float32)               # must be overwritten
        k_im2col.col2im(a, N, C, H, W, kh, kw, ph, pw, sh, sw, dh, dw, OH, OW, x_out, nt)
        # sums of at most kh*kw float32 terms of size <= 1: rtol 1e-5, atol for cancellation
        np.testing.assert_allclose(x_out, ref, rtol=RTOL, atol=1e-5)
        outs.append(x_out)
    np.testing.assert_array_equal(outs[0], outs[1])
    # adjoint identity <col2im(a), b> == <a, im2col(b)> (float64 dot of float32 data)
    colb = np.empty_like(a)
    k_im2col.im2col(b, kh, kw, ph, pw, sh, sw, dh, dw, OH, OW, colb, 2)
    lhs = np.dot(outs[0].astype(np.float64).ravel(), b.astype(np.float64).ravel())
    rhs = np.dot(a.astype(np.float64).ravel(), colb.astype(np.float64).ravel())
    scale = np.abs(a).astype(np.float64).sum() + 1.0
    assert abs(lhs - rhs) <= 1e-6 * scale     # only the float32 rounding of col2im's sums


def test_col2im_overwrites_not_accumulates():
    x_out = np.full((1, 1, 3, 3), 5.0, np.float32)
    col = np.zeros((1, 9), np.float32)
    k_im2col.col2im(col, 1, 1, 3, 3, 1, 1, 0, 0, 1, 1, 1, 1, 3, 3, x_out, 1)
    assert not x_out.any()


def test_im2col_conv_gemm_equals_direct_convolution():
    """im2col + GEMM reproduces Caffe's convolution formula (groups: contiguous row blocks)."""
    r = rng(3)
    N, C, H, W, O, g = 2, 4, 7, 6, 6, 2
    kh, kw, ph, pw, sh, sw, dh, dw = 3, 2, 1, 1, 2, 1, 1, 2
    OH, OW = ref_conv_out(H, kh, ph, sh, dh), ref_conv_out(W, kw, pw, sw, dw)
    x = rand32(r, (N, C, H, W))
    w = rand32(r, (O, C // g, kh, kw))
    col = np.empty((C * kh * kw, N * OH * OW), np.float32)
    k_im2col.im2col(x, kh, kw, ph, pw, sh, sw, dh, dw, OH, OW, col, 2)
    Cg, Og, R = C // g, O // g, C // g * kh * kw
    y = np.concatenate([w[q * Og:(q + 1) * Og].reshape(Og, R).astype(np.float64)
                        @ col[q * R:(q + 1) * R] for q in range(g)], axis=0)
    y = y.reshape(O, N, OH, OW).transpose(1, 0, 2, 3)
    ref = np.zeros((N, O, OH, OW))
    xd = x.astype(np.float64)
    for o, i, j in itertools.product(range(O), range(OH), range(OW)):
        q = o // Og
        for c, u, v in itertools.product(range(Cg), range(kh), range(kw)):
            hh, ww = i * sh - ph + u * dh, j * sw - pw + v * dw
            if 0 <= hh < H and 0 <= ww < W:
                ref[:, o, i, j] += w[o, c, u, v] * xd[:, q * Cg + c, hh, ww]
    np.testing.assert_allclose(y, ref, rtol=1e-10, atol=1e-12)   # float64 GEMM on exact copies


def test_im2col_rejects_bad_shapes():
    x = np.zeros((1, 2, 4, 4), np.float32)
    with pytest.raises(ValueError):
        k_im2col.im2col(x, 3, 3, 1, 1, 1, 1, 1, 1, 4, 4, np.zeros((17, 16), np.float32), 1)
    with pytest.raises(ValueError):
        k_im2col.im2col(x, 3, 3, 1, 1, 0, 1, 1, 1, 4, 4, np.zeros((18, 16), np.float32), 1)
    with pytest.raises(ValueError):       # not C-contiguous
        k_im2col.im2col(np.zeros((1, 2, 4, 8), np.float32)[..., ::2], 3, 3, 1, 1, 1, 1, 1, 1,
                        4, 4, np.zeros((18, 16), np.float32), 1)


# ====================================================================================== pooling

# (N, C, H, W, kh, kw, ph, pw, sh, sw)
POOL_CASES = [
    (2, 3, 28, 28, 3, 3, 1, 1, 2, 2),      # -> 15 (last window clipped)
    (1, 2, 5, 5, 2, 2, 1, 1, 2, 2),        # ceil 4 clipped to 3
    (2, 2, 7, 7, 1, 1, 0, 0, 2, 2),        # kernel < stride
    (1, 2, 4, 4, 1, 1, 0, 0, 2, 2),        # kernel < stride, last window empty
    (1, 3, 12, 12, 3, 3, 0, 0, 2, 2),      # ceil overhang without pad
    (2, 1, 9, 7, 3, 2, 1, 0, 2, 3),        # asymmetric, C = 1
    (1, 2, 1, 1, 1, 1, 0, 0, 1, 1),        # 1x1
    (1, 2, 1, 1, 3, 3, 1, 1, 1, 1),        # 1x1 with pad
    (3, 4, 6, 5, 2, 3, 1, 2, 1, 2),
    (1, 2, 13, 13, 3, 3, 1, 1, 3, 3),
    (2, 3, 7, 7, 7, 7, 0, 0, 1, 1),        # global
    (1, 2, 8, 11, 2, 2, 0, 0, 2, 2),       # VGG style
    (2, 2, 10, 6, 4, 2, 2, 1, 3, 1),
]


def _pgeom(case):
    N, C, H, W, kh, kw, ph, pw, sh, sw = case
    return N, C, H, W, kh, kw, ph, pw, sh, sw, ref_pooled(H, kh, ph, sh), ref_pooled(W, kw, pw, sw)


@pytest.mark.parametrize("case", POOL_CASES)
def test_max_pool_forward(case):
    N, C, H, W, kh, kw, ph, pw, sh, sw, OH, OW = _pgeom(case)
    r = rng(4)
    x = rand32(r, (N, C, H, W))
    x[0, 0, :2, :2] = 0.25                       # a tie inside one window
    yref, aref = ref_max_pool(x, kh, kw, ph, pw, sh, sw, OH, OW)
    for nt in THREADS:
        y = np.full((N, C, OH, OW), np.nan, np.float32)
        am = np.full((N, C, OH, OW), 12345, np.int32)
        k_pool.max_pool_forward(x, kh, kw, ph, pw, sh, sw, OH, OW, y, am, nt)
        np.testing.assert_array_equal(y, yref.astype(np.float32))     # max is exact
        np.testing.assert_array_equal(am, aref)


def test_max_pool_first_maximum_wins_and_empty_window():
    x = np.full((1, 1, 4, 4), 7.0, np.float32)   # every window is a tie
    y = np.empty((1, 1, 2, 2), np.float32)
    am = np.empty((1, 1, 2, 2), np.int32)
    k_pool.max_pool_forward(x, 2, 2, 0, 0, 2, 2, 2, 2, y, am, 1)
    assert (y == 7).all()
    np.testing.assert_array_equal(am[0, 0], [[0, 2], [8, 10]])      # top-left cell of each
    # with pad: padding never participates, so even all-negative windows pick a real cell
    x = -np.arange(1, 26, dtype=np.float32).reshape(1, 1, 5, 5)
    y = np.empty((1, 1, 3, 3), np.float32)
    am = np.empty((1, 1, 3, 3), np.int32)
    k_pool.max_pool_forward(x, 2, 2, 1, 1, 2, 2, 3, 3, y, am, 2)
    np.testing.assert_array_equal(am[0, 0], [[0, 1, 3], [5, 6, 8], [15, 16, 18]])
    # NaN is never picked; the max of the other cells is
    x = np.array([[[[np.nan, 1.0], [3.0, np.nan]]]], np.float32)
    y = np.empty((1, 1, 1, 1), np.float32)
    am = np.empty((1, 1, 1, 1), np.int32)
    k_pool.max_pool_forward(x, 2, 2, 0, 0, 1, 1, 1, 1, y, am, 1)
    assert y[0, 0, 0, 0] == 3.0 and am[0, 0, 0, 0] == 2
    # k1 s2 on 4 -> 3 outputs per axis, the last window lies outside: -FLT_MAX, argmax -1
    x = np.ones((1, 1, 4, 4), np.float32)
    y = np.empty((1, 1, 3, 3), np.float32)
    am = np.empty((1, 1, 3, 3), np.int32)
    k_pool.max_pool_forward(x, 1, 1, 0, 0, 2, 2, 3, 3, y, am, 1)
    assert (y[0, 0, 2, :] == -FLT_MAX).all() and (y[0, 0, :, 2] == -FLT_MAX).all()
    assert (am[0, 0, 2, :] == -1).all() and (am[0, 0, :, 2] == -1).all()
    assert (y[0, 0, :2, :2] == 1).all()


@pytest.mark.parametrize("case", POOL_CASES)
def test_max_pool_backward(case):
    N, C, H, W, kh, kw, ph, pw, sh, sw, OH, OW = _pgeom(case)
    r = rng(5)
    # distinct values (a permutation) so that the max is differentiable
    x = (r.permutation(N * C * H * W).reshape(N, C, H, W) * 0.01).astype(np.float32)
    dy = rand32(r, (N, C, OH, OW))
    y = np.empty((N, C, OH, OW), np.float32)
    am = np.empty((N, C, OH, OW), np.int32)
    k_pool.max_pool_forward(x, kh, kw, ph, pw, sh, sw, OH, OW, y, am, 1)
    # reference 1: scatter-add dy to the float64 reference's argmax (np.add.at)
    _, aref = ref_max_pool(x, kh, kw, ph, pw, sh, sw, OH, OW)
    gref = np.zeros(N * C * H * W)
    base = (np.arange(N * C) * H * W)[:, None]
    flat_am, flat_dy = aref.reshape(N * C, -1), dy.reshape(N * C, -1).astype(np.float64)
    ok = flat_am >= 0
    np.add.at(gref, (base + flat_am)[ok], flat_dy[ok])
    gref = gref.reshape(N, C, H, W)
    # reference 2 (small cases): finite differences of the float64 reference forward (values
    # 0.01 apart, eps 1e-4: the max is linear there); an empty window's -FLT_MAX is constant
    if x.size <= 300:
        mask = aref >= 0
        gfd = fd_grad(lambda z: np.where(mask, ref_max_pool(z, kh, kw, ph, pw, sh, sw, OH,
                                                            OW)[0], 0.0),
                      x, np.where(mask, dy, 0.0).astype(np.float64), eps=1e-4)
        # FD of a piecewise-linear map: exact up to float64 rounding (~1e-11 relative)
        np.testing.assert_allclose(gref, gfd, rtol=1e-8, atol=1e-9)
    outs = []
    for nt in THREADS:
        dx = np.full((N, C, H, W), np.nan, np.float32)
        k_pool.max_pool_backward(dy, am, dx, nt)
        # sums of a few float32 terms: rtol 1e-5
        np.testing.assert_allclose(dx, gref, rtol=RTOL, atol=1e-6)
        outs.append(dx)
    np.testing.assert_array_equal(outs[0], outs[1])


def test_max_pool_backward_overlapping_windows_accumulate():
    x = np.zeros((1, 1, 3, 3), np.float32)
    x[0, 0, 1, 1] = 1.0                          # the centre is the max of all four windows
    y = np.empty((1, 1, 2, 2), np.float32)
    am = np.empty((1, 1, 2, 2), np.int32)
    k_pool.max_pool_forward(x, 2, 2, 0, 0, 1, 1, 2, 2, y, am, 1)
    assert (am == 4).all()
    dx = np.full_like(x, 9.0)
    k_pool.max_pool_backward(np.array([[[[1, 2], [3, 4]]]], np.float32), am, dx, 2)
    expect = np.zeros((3, 3), np.float32)
    expect[1, 1] = 10
    np.testing.assert_array_equal(dx[0, 0], expect)


def test_max_pool_backward_rejects_bad_argmax():
    dx = np.zeros((1, 1, 2, 2), np.float32)
    with pytest.raises(ValueError):
        k_pool.max_pool_backward(np.ones((1, 1, 1, 1), np.float32),
                                 np.array([[[[4]]]], np.int32), dx, 1)


@pytest.mark.parametrize("case", POOL_CASES)
def test_ave_pool_forward(case):
    N, C, H, W, kh, kw, ph, pw, sh, sw, OH, OW = _pgeom(case)
    r = rng(6)
    x = rand32(r, (N, C, H, W))
    ref = ref_ave_pool(x, kh, kw, ph, pw, sh, sw, OH, OW)
    outs = []
    for nt in THREADS:
        y = np.full((N, C, OH, OW), 77.0, np.float32)
        k_pool.ave_pool_forward(x, kh, kw, ph, pw, sh, sw, OH, OW, y, nt)
        # float32 sum of <= kh*kw terms in [-1, 1], then one division: rtol 1e-5, atol 1e-6
        np.testing.assert_allclose(y, ref, rtol=RTOL, atol=1e-6)   # NaNs must match too
        outs.append(y)
    np.testing.assert_array_equal(outs[0], outs[1])


def test_ave_pool_divisor_rule():
    # k2 s2 p1 on 5 -> 3: padded cells inside [-1, 6) count in the divisor
    x = np.ones((1, 1, 5, 5), np.float32)
    y = np.empty((1, 1, 3, 3), np.float32)
    k_pool.ave_pool_forward(x, 2, 2, 1, 1, 2, 2, 3, 3, y, 1)
    np.testing.assert_array_equal(y[0, 0], [[0.25, 0.5, 0.5], [0.5, 1, 1], [0.5, 1, 1]])
    # k3 s2 p0 on 6 -> 3 (ceil): the overhang beyond in + pad does NOT count: ones stay ones
    x = np.ones((1, 1, 6, 6), np.float32)
    y = np.empty((1, 1, 3, 3), np.float32)
    k_pool.ave_pool_forward(x, 3, 3, 0, 0, 2, 2, 3, 3, y, 1)
    np.testing.assert_array_equal(y, np.ones_like(y))
    # k3 s2 p1 on 4 -> 2: window 1 covers rows [1, 4) and the padded row 4 (4 < in+pad = 5)
    x = np.ones((1, 1, 4, 4), np.float32)
    y = np.empty((1, 1, 2, 2), np.float32)
    k_pool.ave_pool_forward(x, 3, 3, 1, 1, 2, 2, 2, 2, y, 1)
    np.testing.assert_allclose(y[0, 0], [[4 / 9, 6 / 9], [6 / 9, 1.0]], rtol=1e-7)
    # empty window (pad 0, k1 s2 on 4): 0/0 = NaN as in Caffe
    x = np.ones((1, 1, 4, 4), np.float32)
    y = np.empty((1, 1, 3, 3), np.float32)
    k_pool.ave_pool_forward(x, 1, 1, 0, 0, 2, 2, 3, 3, y, 1)
    assert np.isnan(y[0, 0, 2, :]).all() and np.isnan(y[0, 0, :, 2]).all()
    assert (y[0, 0, :2, :2] == 1).all()


@pytest.mark.parametrize("case", POOL_CASES)
def test_ave_pool_backward_is_exact_adjoint(case):
    N, C, H, W, kh, kw, ph, pw, sh, sw, OH, OW = _pgeom(case)
    r = rng(7)
    dy = rand32(r, (N, C, OH, OW))
    # reference adjoint: transpose of the dense matrix of the float64 reference forward, applied
    # per plane (the forward is the same linear map on every (n, c) plane); NaN rows (empty
    # windows) have no real cells and contribute nothing
    M = dense_matrix(lambda z: ref_ave_pool(z, kh, kw, ph, pw, sh, sw, OH, OW), (1, 1, H, W))
    M = np.nan_to_num(M, nan=0.0)
    ref = (dy.reshape(N * C, OH * OW).astype(np.float64) @ M).reshape(N, C, H, W)
    outs = []
    for nt in THREADS:
        dx = np.full((N, C, H, W), np.nan, np.float32)
        k_pool.ave_pool_backward(dy, kh, kw, ph, pw, sh, sw, dx, nt)
        np.testing.assert_allclose(dx, ref, rtol=RTOL, atol=1e-6)
        outs.append(dx)
    np.testing.assert_array_equal(outs[0], outs[1])
    # adjoint identity with the kernel forward: <ave(x), dy> == <x, ave_T(dy)> (finite windows)
    x = rand32(r, (N, C, H, W))
    y = np.empty((N, C, OH, OW), np.float32)
    k_pool.ave_pool_forward(x, kh, kw, ph, pw, sh, sw, OH, OW, y, 1)
    ok = np.isfinite(y)
    lhs = np.sum(np.where(ok, y, 0).astype(np.float64) * dy)
    rhs = np.sum(x.astype(np.float64) * outs[0])
    assert abs(lhs - rhs) <= 1e-5 * (np.abs(dy).sum() + 1.0)


# ========================================================================================== LRN

# (N, C, H, W, size, alpha, beta, k)
LRN_CASES = [
    (2, 7, 3, 4, 5, 1e-4, 0.75, 1.0),      # zoo values
    (2, 7, 3, 4, 5, 0.9, 0.75, 2.0),       # large alpha: the gradient's second term matters
    (1, 1, 3, 3, 5, 0.5, 0.75, 1.0),       # C = 1
    (2, 3, 5, 5, 3, 1.5, 0.6, 1.0),
    (1, 8, 1, 1, 1, 0.7, 0.75, 1.5),       # 1x1, size 1
    (1, 4, 2, 3, 7, 2.0, 1.25, 0.5),       # size > C
    (1, 3, 17, 19, 5, 0.8, 0.75, 1.0),     # H*W > one 256-position block
]
# Finite differences cost one forward pass per input element: the small planes only (the large
# ones are covered by the adjoint and forward checks).
LRN_FD_CASES = [c for c in LRN_CASES if c[2] * c[3] <= 64]


@pytest.mark.parametrize("case", LRN_CASES)
def test_lrn_across_forward(case):
    N, C, H, W, size, alpha, beta, k = case
    r = rng(8)
    x = rand32(r, (N, C, H, W), -2, 2)
    yref, sref = ref_lrn_across(x, size, np.float32(alpha), np.float32(beta), np.float32(k))
    outs = []
    for nt in THREADS:
        y = np.full_like(x, np.nan)
        s = np.full_like(x, np.nan)
        k_lrn.lrn_across_forward(x, size, alpha, beta, k, y, s, nt)
        # the incremental window sum adds/subtracts <= 2*C float32 terms: rtol 1e-5
        np.testing.assert_allclose(s, sref, rtol=RTOL)
        np.testing.assert_allclose(y, yref, rtol=RTOL, atol=1e-7)
        outs.append((y, s))
    np.testing.assert_array_equal(outs[0][0], outs[1][0])
    np.testing.assert_array_equal(outs[0][1], outs[1][1])


def test_lrn_across_forward_mirrors_caffe_float32_order():
    """scale is bit-identical to Caffe's incremental float32 recurrence (emulated in numpy)."""
    r = rng(9)
    N, C, H, W, size = 2, 9, 4, 5, 5
    alpha, k = np.float32(1e-4), np.float32(1.0)
    x = rand32(r, (N, C, H, W), -30, 30)
    aos = np.float32(alpha / np.float32(size))
    pre = (size - 1) // 2
    sq = x * x                                    # float32
    pad = np.zeros((N, C + size - 1, H, W), np.float32)
    pad[:, pre:pre + C] = sq
    sc = np.empty_like(x)
    first = np.full((N, H, W), k, np.float32)
    for c in range(size):
        first = first + aos * pad[:, c]
    sc[:, 0] = first
    for c in range(1, C):
        cur = sc[:, c - 1] + aos * pad[:, c + size - 1]
        sc[:, c] = cur + (-aos) * pad[:, c - 1]
    y = np.empty_like(x)
    s = np.empty_like(x)
    k_lrn.lrn_across_forward(x, size, float(alpha), 0.75, float(k), y, s, 2)
    np.testing.assert_array_equal(s, sc)
    # powf vs numpy's float32 power may differ by an ulp
    np.testing.assert_allclose(y, np.power(sc, np.float32(-0.75)) * x, rtol=1e-6)


@pytest.mark.parametrize("case", LRN_FD_CASES)
def test_lrn_across_backward(case):
    N, C, H, W, size, alpha, beta, k = case
    r = rng(10)
    x = rand32(r, (N, C, H, W), -2, 2)
    dy = rand32(r, (N, C, H, W))
    a32, b32, k32 = (float(np.float32(v)) for v in (alpha, beta, k))
    gref = fd_grad(lambda z: ref_lrn_across(z, size, a32, b32, k32)[0], x,
                   dy.astype(np.float64))
    y = np.empty_like(x)
    s = np.empty_like(x)
    k_lrn.lrn_across_forward(x, size, alpha, beta, k, y, s, 1)
    outs = []
    for nt in THREADS:
        dx = np.full_like(x, np.nan)
        k_lrn.lrn_across_backward(x, y, s, dy, size, alpha, beta, dx, nt)
        # float32 gradient (two terms that partly cancel) vs float64 FD (error ~1e-9):
        # rtol 1e-4 plus atol 1e-5 * max|g|
        np.testing.assert_allclose(dx, gref, rtol=1e-4, atol=1e-5 * np.abs(gref).max())
        outs.append(dx)
    np.testing.assert_array_equal(outs[0], outs[1])


@pytest.mark.parametrize("case", LRN_CASES)
def test_lrn_within_forward(case):
    N, C, H, W, size, alpha, beta, _ = case
    r = rng(11)
    x = rand32(r, (N, C, H, W), -2, 2)
    yref, sref = ref_lrn_within(x, size, np.float32(alpha), np.float32(beta))
    outs = []
    for nt in THREADS:
        y = np.full_like(x, np.nan)
        s = np.full_like(x, np.nan)
        k_lrn.lrn_within_forward(x, size, alpha, beta, y, s, nt)
        # float32 sum of <= size^2 squares, then scale/shift/powf: rtol 1e-5
        np.testing.assert_allclose(s, sref, rtol=RTOL)
        np.testing.assert_allclose(y, yref, rtol=RTOL, atol=1e-7)
        outs.append((y, s))
    np.testing.assert_array_equal(outs[0][0], outs[1][0])
    np.testing.assert_array_equal(outs[0][1], outs[1][1])


@pytest.mark.parametrize("case", LRN_FD_CASES)
def test_lrn_within_backward(case):
    N, C, H, W, size, alpha, beta, _ = case
    r = rng(12)
    x = rand32(r, (N, C, H, W), -2, 2)
    dy = rand32(r, (N, C, H, W))
    a32, b32 = float(np.float32(alpha)), float(np.float32(beta))
    gref = fd_grad(lambda z: ref_lrn_within(z, size, a32, b32)[0], x, dy.astype(np.float64))
    y = np.empty_like(x)
    s = np.empty_like(x)
    k_lrn.lrn_within_forward(x, size, alpha, beta, y, s, 1)
    outs = []
    for nt in THREADS:
        dx = np.full_like(x, np.nan)
        k_lrn.lrn_within_backward(x, y, s, dy, size, alpha, beta, dx, nt)
        # same tolerance argument as for ACROSS
        np.testing.assert_allclose(dx, gref, rtol=1e-4, atol=1e-5 * np.abs(gref).max())
        outs.append(dx)
    np.testing.assert_array_equal(outs[0], outs[1])


def test_lrn_within_larger_plane_backward_adjoint_of_linearisation():
    """On a plane bigger than the FD cases, check dx against a JVP by finite differences:
    <dx, v> == d/dt <dy, f(x + t v)> at t = 0 (central difference in float64)."""
    r = rng(13)
    N, C, H, W, size, alpha, beta = 1, 2, 17, 19, 5, 0.8, 0.75
    x = rand32(r, (N, C, H, W), -2, 2)
    dy = rand32(r, (N, C, H, W))
    v = rand32(r, (N, C, H, W))
    a32, b32 = float(np.float32(alpha)), float(np.float32(beta))
    for name in ("across", "within"):
        fwd = getattr(k_lrn, "lrn_%s_forward" % name)
        bwd = getattr(k_lrn, "lrn_%s_backward" % name)
        y = np.empty_like(x)
        s = np.empty_like(x)
        if name == "across":
            fwd(x, size, alpha, beta, 1.0, y, s, 2)
            f = lambda z: ref_lrn_across(z, size, a32, b32, 1.0)[0]  # noqa: E731
        else:
            fwd(x, size, alpha, beta, y, s, 2)
            f = lambda z: ref_lrn_within(z, size, a32, b32)[0]  # noqa: E731
        dx = np.empty_like(x)
        bwd(x, y, s, dy, size, alpha, beta, dx, 2)
        eps = 1e-5
        xd, vd = x.astype(np.float64), v.astype(np.float64)
        jvp = (np.sum(dy * f(xd + eps * vd)) - np.sum(dy * f(xd - eps * vd))) / (2 * eps)
        got = np.sum(dx.astype(np.float64) * vd)
        assert abs(got - jvp) <= 1e-4 * np.sum(np.abs(dx) * np.abs(vd)), name


def test_lrn_within_matches_caffe_layer_composition():
    """WITHIN_CHANNEL = Power(x^2) -> AVE pool (k=n, s=1, p=(n-1)/2) -> Power(-beta, alpha, 1)
    -> x * that, using this package's own AVE pooling kernel for the middle step."""
    r = rng(14)
    x = rand32(r, (2, 3, 6, 7), -2, 2)
    size, alpha, beta = 3, np.float32(0.6), np.float32(0.75)
    pooled = np.empty_like(x)
    k_pool.ave_pool_forward(x * x, size, size, 1, 1, 1, 1, 6, 7, pooled, 1)
    sc = alpha * pooled + np.float32(1.0)
    y = np.empty_like(x)
    s = np.empty_like(x)
    k_lrn.lrn_within_forward(x, size, float(alpha), float(beta), y, s, 1)
    np.testing.assert_array_equal(s, sc)
    np.testing.assert_allclose(y, x * np.power(sc, -beta), rtol=1e-6)


def test_lrn_rejects_even_size_and_bad_shapes():
    x = np.zeros((1, 3, 2, 2), np.float32)
    y, s = np.empty_like(x), np.empty_like(x)
    with pytest.raises(ValueError):
        k_lrn.lrn_across_forward(x, 4, 1.0, 0.75, 1.0, y, s, 1)
    with pytest.raises(ValueError):
        k_lrn.lrn_within_forward(x, 2, 1.0, 0.75, y, s, 1)
    with pytest.raises(ValueError):
        k_lrn.lrn_across_forward(x, 5, 1.0, 0.75, 1.0, np.empty((1, 3, 2, 3), np.float32), s, 1)


def test_num_threads_below_one_is_accepted():
    x = rand32(rng(15), (2, 2, 5, 5))
    col = np.empty((2 * 9, 2 * 25), np.float32)
    ref = np.empty_like(col)
    k_im2col.im2col(x, 3, 3, 1, 1, 1, 1, 1, 1, 5, 5, ref, 1)
    k_im2col.im2col(x, 3, 3, 1, 1, 1, 1, 1, 1, 5, 5, col, 0)
    np.testing.assert_array_equal(col, ref)
