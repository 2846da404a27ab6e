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
        cc = rng.normal(size=col.shape).astype(np.float32)
        xbuf, back = guarded(x.shape)
        col2im(cc, n, c, h, w, kh, kw, ph, pw, sh, sw, dh, dw, oh, ow, back, 2)
        assert margins_intact(xbuf)
        # adjoint identity in float64 of float32 data: relative 1e-4 of the terms' magnitude
        lhs = float(np.dot(col.astype(np.float64).ravel(), cc.astype(np.float64).ravel()))
        rhs = float(np.dot(x.astype(np.float64).ravel(), back.astype(np.float64).ravel()))
        assert abs(lhs - rhs) <= 1e-4 * (1 + np.abs(cc).sum())
