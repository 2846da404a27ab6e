"""Memory safety of the Cython kernels at geometry near Caffe's int limit (issue 16).

Each kernel writes into an array cut from a larger buffer whose margins hold a sentinel value, so
a write outside the array shows up as a changed margin (not only as a crash). Cases that used to
crash the interpreter run in a subprocess.
"""
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from caffelrp.kernels.im2col import col2im, im2col
from caffelrp.kernels.pooling import ave_pool_forward, pooled_size
from caffelrp.kernels.relevance import ave_pool_relevance

SENTINEL = np.float32(-12345.5)
INT_MAX = 2 ** 31 - 1


def guarded(shape, margin=64):
    """An array of ``shape`` inside a float32 buffer with ``margin`` sentinels either side."""
    n = int(np.prod(shape))
    buf = np.full(n + 2 * margin, SENTINEL, dtype=np.float32)
    return buf, buf[margin:margin + n].reshape(shape)


def margins_intact(buf, margin=64):
    return bool(np.all(buf[:margin] == SENTINEL) and np.all(buf[-margin:] == SENTINEL))


def subprocess_env():
    """The environment of a child Python that imports this caffelrp and the tests' modules."""
    import os
    import caffelrp
    root = str(Path(caffelrp.__file__).resolve().parent.parent)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([root, str(Path(__file__).parent),
                                         env.get("PYTHONPATH", "")])
    return env


def ave_relevance_reference(x, r, k, p, s):
    """The proportional AVE rule in float64, windows clipped to the image (§2.3)."""
    n, c, h, w = x.shape
    oh, ow = r.shape[2:]
    out = np.zeros(x.shape, dtype=np.float64)
    for i in range(oh):
        h0, h1 = max(i * s - p, 0), min(i * s - p + k, h)
        for j in range(ow):
            w0, w1 = max(j * s - p, 0), min(j * s - p + k, w)
            if h0 >= h1 or w0 >= w1:
                continue
            xs = x[:, :, h0:h1, w0:w1].astype(np.float64)
            tot = xs.sum(axis=(2, 3), keepdims=True)
            ratio = np.where(np.abs(tot) >= 1e-6, r[:, :, i:i + 1, j:j + 1] / np.where(
                tot == 0, 1, tot), 1.0)
            out[:, :, h0:h1, w0:w1] += xs * ratio
    return out


def test_ave_relevance_huge_window_no_wrapped_malloc():
    # the prototxt: kernel 2^30+1, pad 2^30, stride 2^30-1 on an 8x8 image; the scratch
    # plane size (2*Hp*Wp + 2*OW)*4 wrapped to 16 bytes and the kernel overran it (segfault):
    # in a subprocess so that a crash fails this test only
    proc = subprocess.run([sys.executable, "-c", "import test_kernel_bounds as t; "
                           "t.huge_window_case(); print('ok')"], capture_output=True, text=True,
                          timeout=120, cwd=str(Path(__file__).parent), env=subprocess_env())
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", (proc.returncode,
                                                                   proc.stderr[-3000:])


def huge_window_case():
    k, p, s = 1073741825, 1073741824, 1073741823
    o = pooled_size(8, k, p, s)
    assert o == 2
    rng = np.random.default_rng(0)
    x = rng.uniform(0.5, 1.5, (1, 2, 8, 8)).astype(np.float32)
    r = rng.uniform(0.5, 1.5, (1, 2, o, o)).astype(np.float32)
    buf, out = guarded(x.shape)
    ave_pool_relevance(x, r, k, k, p, p, s, s, out, 2)
    assert margins_intact(buf)
    # float32 sums of <= 64 terms against float64: relative 1e-5 is ~100 ulp of headroom
    np.testing.assert_allclose(out, ave_relevance_reference(x, r, k, p, s), rtol=1e-5)


def test_ave_relevance_moderate_geometry_correct():
    # the padded scratch path, against the same float64 reference
    rng = np.random.default_rng(1)
    x = rng.uniform(0.5, 1.5, (2, 3, 9, 7)).astype(np.float32)
    for k, p, s in [(3, 1, 2), (4, 2, 1), (5, 0, 3)]:
        oh, ow = pooled_size(9, k, p, s), pooled_size(7, k, p, s)
        r = rng.uniform(0.5, 1.5, (2, 3, oh, ow)).astype(np.float32)
        buf, out = guarded(x.shape)
        ave_pool_relevance(x, r, k, k, p, p, s, s, out, 1)
        assert margins_intact(buf)
        # positive data, float32 sums of <= 25 terms: relative 1e-5 is ~100 ulp of headroom
        np.testing.assert_allclose(out, ave_relevance_reference(x, r, k, p, s), rtol=1e-5)


def test_geometry_beyond_int_is_a_value_error():
    x = np.zeros((1, 1, 4, 4), np.float32)
    y = np.zeros((1, 1, 1, 1), np.float32)
    for bad in (2 ** 31, 2 ** 32 - 1, 2 ** 40):
        with pytest.raises(ValueError, match="kernel height"):
            ave_pool_forward(x, bad, 1, 0, 0, 1, 1, 1, 1, y, 1)
        with pytest.raises(ValueError, match="stride width"):
            ave_pool_relevance(x, y, 1, 1, 0, 0, 1, bad, x.copy(), 1)


def test_col2im_huge_kernel_is_an_error_not_a_hang():
    # C*kh*kw wrapped in 32 bits: col2im then accepted a tiny col and looped ~2^62 times
    code = textwrap.dedent("""
        import numpy as np
        from caffelrp.kernels.im2col import col2im
        k = 2 ** 31 - 1
        col = np.zeros((1, 1), np.float32)
        x = np.zeros((1, 1, 1, 1), np.float32)
        try:
            col2im(col, 1, 1, 1, 1, k, k, 0, 0, 1, 1, 1, 1, 1, 1, x, 1)
        except ValueError as e:
            print("ValueError", e)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, env=subprocess_env())
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("ValueError col has shape"), proc.stdout


def assert_col2im_is_adjoint(cc, x, col, geometry, threads):
    """col2im of ``cc`` into a guarded buffer writes nothing outside it, and is the adjoint of
    the im2col that made ``col`` from ``x``: <col, cc> == <x, col2im cc>."""
    n, c, h, w = x.shape
    xbuf, back = guarded(x.shape)
    col2im(cc, n, c, h, w, *geometry, back, threads)
    assert margins_intact(xbuf)
    # adjoint identity in float64 of float32 data: relative 1e-4 of the terms' magnitude
    lhs = float(np.dot(col.astype(np.float64).ravel(), cc.astype(np.float64).ravel()))
    rhs = float(np.dot(x.astype(np.float64).ravel(), back.astype(np.float64).ravel()))
    assert abs(lhs - rhs) <= 1e-4 * (1 + np.abs(cc).sum())


def test_im2col_col2im_random_geometry_inside_sentinels():
    # random small geometry, col in a guarded buffer: a correct im2col (checked against a
    # direct gather) and adjoint col2im (<im2col x, c> == <x, col2im c>), never a stray write
    rng = np.random.default_rng(2)
    for _ in range(300):
        n, c, h, w = rng.integers(1, 3), rng.integers(1, 3), rng.integers(1, 7), rng.integers(1, 7)
        kh, kw, sh, sw, dh, dw = (int(v) for v in rng.integers(1, 4, 6))
        ph, pw = (int(v) for v in rng.integers(0, 3, 2))
        oh = (h + 2 * ph - (dh * (kh - 1) + 1)) // sh + 1
        ow = (w + 2 * pw - (dw * (kw - 1) + 1)) // sw + 1
        if oh < 1 or ow < 1:
            continue
        x = rng.normal(size=(n, c, h, w)).astype(np.float32)
        buf, col = guarded((c * kh * kw, n * oh * ow))
        im2col(x, kh, kw, ph, pw, sh, sw, dh, dw, oh, ow, col, 2)
        assert margins_intact(buf)
        xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
        for u in range(kh):
            for v in range(kw):
                patch = xp[:, :, u * dh:u * dh + sh * (oh - 1) + 1:sh,
                           v * dw:v * dw + sw * (ow - 1) + 1:sw]
                expect = patch.transpose(1, 0, 2, 3).reshape(c, -1)
                np.testing.assert_array_equal(col[(np.arange(c) * kh + u) * kw + v], expect)
        assert_col2im_is_adjoint(rng.normal(size=col.shape).astype(np.float32), x, col,
                                 (kh, kw, ph, pw, sh, sw, dh, dw, oh, ow), threads=2)


# =========================================================================== random kernel calls
# The kernel fuzz of issue 16: random shapes, operand layouts (transposed, step 2, negative
# strides, padded rows, broadcast) and geometry near 2^31, every output inside a sentinel-guarded
# buffer. Each call gives a clear error (ValueError, OverflowError) or the reference result, and
# never writes outside its output: neither past the buffer nor, for a strided output view, into
# the elements between the ones it owns. Each battery runs in a subprocess (a crash fails the
# test, not the session).
LAYOUTS_2D = ("c", "t", "step2", "neg", "rowpad", "broadcast")


def _layout(rows, cols, layout):
    """(elements of storage, storage -> (rows, cols) view) of a 2-D layout."""
    return {
        "c": (rows * cols, lambda b: b.reshape(rows, cols)),
        "t": (rows * cols, lambda b: b.reshape(cols, rows).T),
        "step2": (rows * 2 * cols, lambda b: b.reshape(rows, 2 * cols)[:, ::2]),
        "neg": (rows * cols, lambda b: b.reshape(rows, cols)[::-1, ::-1]),
        "rowpad": (rows * (cols + 3), lambda b: b.reshape(rows, cols + 3)[:, :cols]),
        # one row repeated (stride 0): only ever an input
        "broadcast": (cols, lambda b: np.broadcast_to(b.reshape(1, cols), (rows, cols))),
    }[layout]


def guarded_2d(rows, cols, layout, rng, margin=64):
    """(buffer, view of shape (rows, cols) with the layout, normal values) inside a buffer whose
    other elements hold the sentinel."""
    size, make = _layout(rows, cols, layout)
    buf = np.full(size + 2 * margin, SENTINEL, np.float32)
    storage = buf[margin:margin + size]
    if layout == "broadcast":
        storage[...] = rng.standard_normal(size)
    else:
        make(storage)[...] = rng.standard_normal((rows, cols))
    return buf, make(storage)


def owned(buf, layout, rows, cols, margin=64):
    """Mask of the buffer elements a (rows, cols) view of this layout covers."""
    size, make = _layout(rows, cols, layout)
    mask = np.zeros(buf.size, bool)
    mask[make(np.arange(buf.size)[margin:margin + size]).ravel()] = True
    return mask


def untouched_outside(buf, layout, rows, cols):
    return bool(np.all(buf[~owned(buf, layout, rows, cols)] == SENTINEL))


def threads(rng):
    """Mostly one thread (OpenMP's start-up dominates these tiny calls), sometimes 2 or 3."""
    return 1 if rng.random() < 0.8 else int(rng.integers(2, 4))


def run_in_subprocess(function_name):
    proc = subprocess.run([sys.executable, "-c", "import test_kernel_bounds as t; t.%s(); "
                           "print('ok')" % function_name], capture_output=True, text=True,
                          timeout=300, cwd=str(Path(__file__).parent), env=subprocess_env())
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), (
        proc.returncode, proc.stdout[-2000:], proc.stderr[-3000:])


def test_matmul_random_layouts_inside_sentinels():
    run_in_subprocess("matmul_battery")


def matmul_battery(cases=400):
    from caffelrp.kernels.gemm import matmul
    rng = np.random.default_rng(16)
    refused = 0
    for _ in range(cases):
        m, k, n = (int(v) for v in rng.integers(0, 40, 3))
        la, lb = rng.choice(LAYOUTS_2D, 2)
        lc = rng.choice(("c", "rowpad", "c", "t", "step2", "neg"))
        _, a = guarded_2d(m, k, la, rng)
        _, b = guarded_2d(k, n, lb, rng)
        accumulate = bool(rng.integers(2))
        cbuf, c = guarded_2d(m, n, lc, rng)
        before = c.astype(np.float64)
        try:
            matmul(a, b, c, threads(rng), accumulate)
        except ValueError as e:
            # an output BLAS cannot write in place (columns not contiguous, rows backwards or
            # overlapping); refused before anything is written
            assert lc in ("t", "step2", "neg") and "output" in str(e), (lc, m, n, e)
            assert np.all(c == before) and untouched_outside(cbuf, lc, m, n)
            refused += 1
            continue
        assert untouched_outside(cbuf, lc, m, n), (la, lb, lc, m, k, n)
        a64, b64 = a.astype(np.float64), b.astype(np.float64)
        want = a64 @ b64 + (before if accumulate else 0)
        # float32 sums of <= 39 products: error <= ~39 ulp of sum |a||b|; 1e-5 leaves headroom
        bound = 1e-5 * (np.abs(a64) @ np.abs(b64) + np.abs(before)) + 1e-30
        assert np.all(np.abs(c - want) <= bound), (la, lb, lc, m, k, n)
    assert refused > 0   # the battery did exercise the refusals


def test_lrp_ratio_kernels_random_strides_inside_sentinels():
    run_in_subprocess("ratio_battery")


def ratio_battery(cases=200):
    # these kernels take any strides (they see inner products transposed): outputs written
    # through strided views must land exactly on the view's elements
    from caffelrp.kernels.lrp_ratios import epsilon_ratio, multiply_into, signed_product
    rng = np.random.default_rng(17)
    writable = ("c", "t", "step2", "neg", "rowpad")
    for _ in range(cases):
        rows, cols = (int(v) for v in rng.integers(0, 12, 2))
        lr, lz, lx, lp = rng.choice(LAYOUTS_2D, 4)
        lo = rng.choice(writable)
        _, r = guarded_2d(rows, cols, lr, rng)
        _, z = guarded_2d(rows, cols, lz, rng)
        obuf, out = guarded_2d(rows, cols, lo, rng)
        eps = float(rng.uniform(0, 1))
        epsilon_ratio(r, z, eps, out, threads(rng))
        assert untouched_outside(obuf, lo, rows, cols)
        z64 = z.astype(np.float64)
        want = np.where(z64 > 0, r / (z64 + eps), np.where(z64 < 0, r / (z64 - eps), r))
        # one float32 division against float64: 2 ulp
        np.testing.assert_allclose(out, want, rtol=3e-7, atol=1e-30)
        _, x = guarded_2d(rows, cols, lx, rng)
        gbuf, g = guarded_2d(rows, cols, lo, rng)
        g0 = g.astype(np.float64)
        multiply_into(x, g, threads(rng))
        assert untouched_outside(gbuf, lo, rows, cols)
        np.testing.assert_allclose(g, g0 * x, rtol=2e-7, atol=1e-30)   # one float32 product
        _, pos = guarded_2d(rows, cols, lp, rng)
        _, neg = guarded_2d(rows, cols, lr, rng)
        sbuf, s = guarded_2d(rows, cols, lo, rng)
        signed_product(x, pos, neg, s, threads(rng))
        assert untouched_outside(sbuf, lo, rows, cols)
        np.testing.assert_allclose(s, np.where(x > 0, x * pos, x * neg), rtol=2e-7, atol=1e-30)


def pool_reference(x, method, kh, kw, ph, pw, sh, sw, oh, ow):
    """Caffe's MAX / AVE pooling in float64 with Python integers (no overflow at 2^31)."""
    n, c, h, w = x.shape
    y = np.zeros((n, c, oh, ow))
    for i in range(oh):
        for j in range(ow):
            h0, w0 = i * sh - ph, j * sw - pw
            if method == "MAX":
                h1, w1 = min(h0 + kh, h), min(w0 + kw, w)
                h0, w0 = max(h0, 0), max(w0, 0)
                y[:, :, i, j] = (x[:, :, h0:h1, w0:w1].max(axis=(2, 3)) if h1 > h0 and w1 > w0
                                 else -np.finfo(np.float32).max)
            else:
                h1, w1 = min(h0 + kh, h + ph), min(w0 + kw, w + pw)
                size = (h1 - h0) * (w1 - w0)
                h0, w0, h1, w1 = max(h0, 0), max(w0, 0), min(h1, h), min(w1, w)
                total = (x[:, :, h0:h1, w0:w1].sum(axis=(2, 3)) if h1 > h0 and w1 > w0
                         else np.zeros((n, c)))
                with np.errstate(divide="ignore", invalid="ignore"):
                    y[:, :, i, j] = total / size   # Caffe: 0/0 = NaN past an unpadded edge
    return y


def _pool_out(size, k, pad, stride, clip):
    out = -((-(size + 2 * pad - k)) // stride) + 1
    if clip and (out - 1) * stride >= size + pad:
        out -= 1
    return out


NEAR_INT_MAX = (2 ** 30, 2 ** 30 + 1, 2 ** 31 - 2, 2 ** 31 - 1, 2 ** 31, 2 ** 32 - 1, 2 ** 32,
                2 ** 62, 2 ** 63 - 1, -1, -(2 ** 31))


def _geometry_value(rng, lo, near=0.35):
    if rng.random() < near:
        return int(rng.choice(NEAR_INT_MAX))
    return int(rng.integers(lo, 5))


def test_pooling_and_im2col_kernels_random_geometry_inside_sentinels():
    run_in_subprocess("geometry_battery")


def geometry_battery():
    pooling_battery()
    im2col_battery()


def im2col_battery(cases=400):
    """im2col / col2im with strides, pads and dilations up to and past 2^31 (small kernels and
    outputs, so the reference stays small): the gather in Python integers, and the adjoint."""
    rng = np.random.default_rng(21)
    ran = refused = 0
    for _ in range(cases):
        n, c = (int(v) for v in rng.integers(1, 3, 2))
        h, w = (int(v) for v in rng.integers(1, 7, 2))
        kh, kw = (int(v) for v in rng.integers(1, 4, 2))
        sh, sw, dh, dw = (_geometry_value(rng, 1, 0.15) for _ in range(4))
        ph, pw = (_geometry_value(rng, 0, 0.15) for _ in range(2))
        valid = min(sh, sw, dh, dw) >= 1 and min(ph, pw) >= 0 and max(
            sh, sw, dh, dw, ph, pw) <= INT_MAX
        oh = (h + 2 * ph - (dh * (kh - 1) + 1)) // sh + 1 if valid else 1
        ow = (w + 2 * pw - (dw * (kw - 1) + 1)) // sw + 1 if valid else 1
        if valid and not (1 <= oh <= 5 and 1 <= ow <= 5):
            continue
        x = rng.standard_normal((n, c, h, w)).astype(np.float32)
        buf, col = guarded((c * kh * kw, n * oh * ow))
        try:
            im2col(x, kh, kw, ph, pw, sh, sw, dh, dw, oh, ow, col, 1)
        except (ValueError, OverflowError):
            assert not valid and margins_intact(buf) and np.all(col == SENTINEL)
            refused += 1
            continue
        assert valid and margins_intact(buf)
        want = np.zeros(col.shape, np.float32)
        for ci in range(c):
            for u in range(kh):
                for v in range(kw):
                    for b in range(n):
                        for i in range(oh):
                            for j in range(ow):
                                r, q = i * sh - ph + u * dh, j * sw - pw + v * dw
                                if 0 <= r < h and 0 <= q < w:
                                    want[(ci * kh + u) * kw + v, (b * oh + i) * ow + j] = \
                                        x[b, ci, r, q]
        np.testing.assert_array_equal(col, want)     # a gather: exact
        assert_col2im_is_adjoint(rng.standard_normal(col.shape).astype(np.float32), x, col,
                                 (kh, kw, ph, pw, sh, sw, dh, dw, oh, ow), threads=1)
        ran += 1
    assert ran > 50 and refused > 20, (ran, refused)   # both kinds of case were exercised


def pooling_battery(cases=500):
    from caffelrp.kernels.pooling import (ave_pool_backward, ave_pool_forward, max_pool_backward,
                                          max_pool_forward)
    rng = np.random.default_rng(18)
    ran = refused = 0
    for _ in range(cases):
        n, c = (int(v) for v in rng.integers(1, 4, 2))
        h, w = (int(v) for v in rng.integers(1, 9, 2))
        kh, kw, sh, sw = (_geometry_value(rng, 1) for _ in range(4))
        ph, pw = (_geometry_value(rng, 0) for _ in range(2))
        valid = (kh >= 1 and kw >= 1 and sh >= 1 and sw >= 1 and ph >= 0 and pw >= 0
                 and max(kh, kw, sh, sw, ph, pw) <= INT_MAX)
        clip = ph > 0 or pw > 0
        oh = _pool_out(h, kh, ph, sh, clip) if valid else 1
        ow = _pool_out(w, kw, pw, sw, clip) if valid else 1
        if valid and not (1 <= oh <= 6 and 1 <= ow <= 6):
            continue          # a blob shape Caffe refuses, or too large for the reference
        x = rng.standard_normal((n, c, h, w)).astype(np.float32)
        ybuf, y = guarded((n, c, oh, ow))
        abuf = np.full(y.size + 128, -7, np.int32)
        argmax = abuf[64:64 + y.size].reshape(y.shape)
        method = "MAX" if rng.integers(2) else "AVE"
        try:
            if method == "MAX":
                max_pool_forward(x, kh, kw, ph, pw, sh, sw, oh, ow, y, argmax, 1)
            else:
                ave_pool_forward(x, kh, kw, ph, pw, sh, sw, oh, ow, y, 1)
        except (ValueError, OverflowError) as e:
            assert not valid, (kh, kw, ph, pw, sh, sw, e)
            assert margins_intact(ybuf) and np.all(y == SENTINEL)
            refused += 1
            continue
        assert valid, (kh, kw, ph, pw, sh, sw)
        assert margins_intact(ybuf) and np.all(abuf[:64] == -7) and np.all(abuf[-64:] == -7)
        # float32 window sums of <= 64 terms (AVE) or exact maxima (MAX)
        np.testing.assert_allclose(y, pool_reference(x, method, kh, kw, ph, pw, sh, sw, oh, ow),
                                   rtol=1e-5, atol=1e-6)
        dy = rng.standard_normal(y.shape).astype(np.float32)
        dbuf, dx = guarded(x.shape)
        if method == "MAX":
            max_pool_backward(dy, argmax, dx, 1)
            want = np.zeros(x.size * 1, np.float64).reshape(n * c, h * w)
            for p in range(n * c):
                for i, a in enumerate(argmax.reshape(n * c, -1)[p]):
                    if a >= 0:
                        want[p, a] += dy.reshape(n * c, -1)[p, i]
            want = want.reshape(x.shape)
        else:
            ave_pool_backward(dy, kh, kw, ph, pw, sh, sw, dx, 1)
            # the exact adjoint: <forward(x), dy> == <x, backward(dy)>
            want = None
            # (windows past an unpadded edge hold NaN and pass nothing back)
            lhs = float(np.nansum(pool_reference(x, "AVE", kh, kw, ph, pw, sh, sw, oh, ow)
                                  * dy.astype(np.float64)))
            rhs = float(np.dot(x.astype(np.float64).ravel(), dx.astype(np.float64).ravel()))
            assert abs(lhs - rhs) <= 1e-4 * (1 + np.abs(x).sum() * np.abs(dy).max())
        assert margins_intact(dbuf)
        if want is not None:
            np.testing.assert_allclose(dx, want, rtol=1e-5, atol=1e-6)   # float32 sums
        ran += 1
    assert ran > 50 and refused > 20, (ran, refused)   # both kinds of case were exercised


def test_contiguous_only_kernels_refuse_other_layouts():
    run_in_subprocess("layout_battery")


def layout_battery():
    # the 4-D kernels read raw C-contiguous planes: a transposed, step-2 or reversed view (input
    # or output) is refused by the typed memoryview before any pointer is formed
    from caffelrp.kernels.lrn import lrn_across_forward
    rng = np.random.default_rng(19)
    x = rng.standard_normal((2, 3, 6, 6)).astype(np.float32)
    views = {"transposed": lambda a: a.transpose(0, 1, 3, 2),
             "step2": lambda a: np.concatenate([a, a], axis=3)[..., ::2],
             "reversed": lambda a: a[:, ::-1]}
    for name, make in views.items():
        bad = make(x.copy())
        ybuf, y = guarded(x.shape)
        sbuf, s = guarded(x.shape)
        for args in ((bad, y, s), (x, make(y.copy()), s)):
            try:
                lrn_across_forward(args[0], 3, 1e-4, 0.75, 2.0, args[1], args[2], 1)
            except ValueError as e:
                assert "contiguous" in str(e), (name, e)
            else:
                raise AssertionError("%s accepted" % name)
            assert margins_intact(ybuf) and margins_intact(sbuf) and np.all(y == SENTINEL)
        buf, out = guarded(x.shape)
        try:
            ave_pool_forward(make(x.copy()), 2, 2, 0, 0, 2, 2, 3, 3, out[:, :, :3, :3].copy(), 1)
        except ValueError as e:
            assert "contiguous" in str(e), (name, e)
        else:
            raise AssertionError("%s accepted by ave_pool_forward" % name)


def lrn_within_clipped(x, size, alpha, beta):
    """WITHIN_CHANNEL LRN in float64, windows clipped to the plane (any local_size)."""
    half = (size - 1) // 2
    sq = np.asarray(x, np.float64) ** 2
    s = np.zeros_like(sq)
    for i in range(x.shape[2]):
        for j in range(x.shape[3]):
            s[:, :, i, j] = sq[:, :, max(i - half, 0):i + half + 1,
                               max(j - half, 0):j + half + 1].sum(axis=(2, 3))
    return x * (1 + alpha / float(size) ** 2 * s) ** -beta


def test_lrn_and_relevance_kernels_random_geometry_inside_sentinels():
    run_in_subprocess("lrn_battery")


def lrn_battery(cases=150):
    from reference_ops import lrn_across
    from caffelrp.kernels.lrn import lrn_across_forward, lrn_within_forward
    from caffelrp.kernels.relevance import lrn_relevance
    rng = np.random.default_rng(20)
    for _ in range(cases):
        n, c, h, w = (int(v) for v in rng.integers(1, 6, 4))
        size = int(rng.choice((1, 3, 5, 2 ** 31 - 1, 2 ** 31 - 3, 2, 0, -1)))
        alpha, beta, k = float(rng.uniform(1e-4, 1)), float(rng.uniform(0.1, 1)), 2.0
        x = rng.standard_normal((n, c, h, w)).astype(np.float32)
        ybuf, y = guarded(x.shape)
        sbuf, s = guarded(x.shape)
        within = bool(rng.integers(2))
        try:
            if within:
                lrn_within_forward(x, size, alpha, beta, y, s, threads(rng))
            else:
                lrn_across_forward(x, size, alpha, beta, k, y, s, threads(rng))
        except ValueError:
            assert size < 1 or size % 2 == 0
            assert np.all(y == SENTINEL) and margins_intact(ybuf)
            continue
        assert margins_intact(ybuf) and margins_intact(sbuf)
        want = (lrn_within_clipped(x, size, alpha, beta) if within
                else lrn_across(x, size, alpha, beta, k))
        # float32 window sums of <= 125 squares, then powf: 1e-5 relative
        np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-6)
        if within:
            continue
        r = rng.standard_normal(x.shape).astype(np.float32)
        obuf, out = guarded(x.shape)
        lrn_relevance(x, s, r, size, alpha, beta, k, out, threads(rng))
        assert margins_intact(obuf) and np.all(np.isfinite(out))
