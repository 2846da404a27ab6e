"""caffelrp.kernels.relevance (the original's AVE-pooling and LRN relevance rules, spec
original-lrp.md §2.3) against float64 references.

The references are caffelrp's former vectorised numpy implementations of the two rules (of
caffelrp/attribution/lrp.py, before the rules moved into Cython), run in float64:

* AVE pooling: S_j = sum of x_i over window j clipped to the image; R_i += x_i R_j / S_j where
  |S_j| >= 1e-6 (the threshold as the float32 the original compares against), else R_i += x_i.
* LRN (lrn_backward_type 1, ACROSS_CHANNELS): R_i[c] = R[c] x_c (k + a/n x_c^2)^-b
  - (2ab/n) x_c^2 sum_{c' in window(c), c' != c} x_c' s_c'^(-b-1) R[c'].

Tolerances: the kernels compute in float32 (the LRN window sum in double), the references in
float64. Each output is a short chain of float32 operations, so it agrees with float64 to a few
ulp of the largest term involved: |kernel - reference| <= RTOL * max|terms| with RTOL = 1e-5
(float32 eps is 1.2e-7). For AVE pooling the inputs are non-negative (ReLU outputs, as in real
nets) or small integers, so that S_j has no cancellation error in float32 and the |S| < 1e-6
decision is the same in both. The AVE kernel performs the former float32 numpy code's very
operations in its order, so it is also compared with that code (kept here verbatim) bit for bit.
Every kernel gives bit-identical results with 1, 2 and 3 threads.
"""
import itertools

import numpy as np
import pytest

from caffelrp.kernels.lrn import lrn_across_forward
from caffelrp.kernels.pooling import pooled_size
from caffelrp.kernels.relevance import ave_pool_relevance, lrn_relevance
from netutil import layer, make_net

RTOL = 1e-5
THREADS = (1, 2)
THRESHOLD = float(np.float32(1e-6))   # the original compares a float |S| with 1e-6 as float


def f32(a):
    return np.ascontiguousarray(a, dtype=np.float32)


def max_abs(*arrays):
    return max(float(np.max(np.abs(a))) if a.size else 0.0 for a in arrays)


# ------------------------------------------------------------------ float64 references
def ref_ave_pool(x, r, kh, kw, ph, pw, sh, sw):
    """The former numpy `_ave_pool` of lrp.py, in float64."""
    x = x.astype(np.float64)
    r = r.astype(np.float64)
    n, c, h, w = x.shape
    oh, ow = r.shape[2:]
    # zero padding around the image: padded cells add nothing to the window sums or to R
    ht = max((oh - 1) * sh + kh, h + ph)
    wt = max((ow - 1) * sw + kw, w + pw)
    xp = np.zeros((n, c, ht, wt))
    xp[:, :, ph:ph + h, pw:pw + w] = x
    views = [(slice(u, u + (oh - 1) * sh + 1, sh), slice(v, v + (ow - 1) * sw + 1, sw))
             for u in range(kh) for v in range(kw)]
    s = np.zeros((n, c, oh, ow))
    for hs, ws in views:
        s += xp[:, :, hs, ws]
    big = np.abs(s) >= THRESHOLD
    ratio = np.where(big, r / np.where(big, s, 1), 1.0)
    rp = np.zeros_like(xp)
    for hs, ws in views:
        rp[:, :, hs, ws] += xp[:, :, hs, ws] * ratio
    return rp[:, :, ph:ph + h, pw:pw + w]


def former_ave_pool_float32(x, r, kh, kw, ph, pw, sh, sw):
    """The former numpy `_ave_pool` of lrp.py verbatim, in float32 (the kernel reproduces its
    operations and their order, so it must agree bit for bit)."""
    n, c, h, w = x.shape
    oh, ow = r.shape[2:]
    ht = max((oh - 1) * sh + kh, h + ph)
    wt = max((ow - 1) * sw + kw, w + pw)
    xp = np.zeros((n, c, ht, wt), dtype=np.float32)
    xp[:, :, ph:ph + h, pw:pw + w] = x
    views = [(slice(u, u + (oh - 1) * sh + 1, sh), slice(v, v + (ow - 1) * sw + 1, sw))
             for u in range(kh) for v in range(kw)]
    s = np.zeros((n, c, oh, ow), dtype=np.float32)
    for hs, ws in views:
        s += xp[:, :, hs, ws]
    big = np.abs(s) >= np.float32(1e-6)
    ratio = np.where(big, r / np.where(big, s, 1), np.float32(1)).astype(np.float32)
    rp = np.zeros_like(xp)
    for hs, ws in views:
        rp[:, :, hs, ws] += xp[:, :, hs, ws] * ratio
    return np.ascontiguousarray(rp[:, :, ph:ph + h, pw:pw + w])


def ref_lrn(x, scale, r, size, alpha, beta, k):
    """The former numpy `_lrn` of lrp.py, in float64; returns (own term, cross term)."""
    x, scale, r = (a.astype(np.float64) for a in (x, scale, r))
    alpha, beta, k = (float(np.float32(v)) for v in (alpha, beta, k))
    p = (size - 1) // 2
    own = r * x * np.power(k + (alpha / size) * x * x, -beta)
    t = x * np.power(scale, -beta - 1) * r
    c = x.shape[1]
    tp = np.zeros((x.shape[0], c + 2 * p) + x.shape[2:])
    tp[:, p:p + c] = t
    window = np.zeros(t.shape)
    for d in range(2 * p + 1):
        window += tp[:, d:d + c]
    window -= t
    cross = (2 * alpha * beta / size) * x * x * window
    return own, cross


def lrn_scale(x, size, alpha, beta, k):
    y, s = np.empty_like(x), np.empty_like(x)
    lrn_across_forward(x, size, alpha, beta, k, y, s, 1)
    return s


# ------------------------------------------------------------------ helpers
def pool_case(rng, n, c, h, w, kh, kw, ph, pw, sh, sw, zero_block=True):
    oh, ow = pooled_size(h, kh, ph, sh), pooled_size(w, kw, pw, sw)
    x = np.maximum(rng.standard_normal((n, c, h, w)), 0)        # ReLU output: many zeros
    if zero_block:
        x[:, :, :(h + 1) // 2, :(w + 1) // 2] = 0                 # windows with S = 0
    r = rng.standard_normal((n, c, oh, ow))
    return f32(x), f32(r)


def run_ave(x, r, geom, nt):
    out = np.full(x.shape, np.nan, dtype=np.float32)              # must be overwritten
    ave_pool_relevance(x, r, *geom, out, nt)
    return out


def run_lrn(x, s, r, size, alpha, beta, k, nt):
    out = np.full(x.shape, np.nan, dtype=np.float32)
    lrn_relevance(x, s, r, size, alpha, beta, k, out, nt)
    return out


# ------------------------------------------------------------------ AVE pooling
# (N, C, H, W, kh, kw, ph, pw, sh, sw)
POOL_CASES = [
    (2, 3, 7, 7, 3, 3, 1, 1, 1, 1),       # 3x3 stride 1 pad 1 (GoogLeNet inception pool)
    (1, 4, 9, 8, 2, 2, 0, 0, 3, 3),       # stride > kernel: cells in no window get 0
    (2, 2, 8, 8, 3, 3, 0, 0, 2, 2),       # ceil mode: last window partial (rows 6..7)
    (1, 3, 10, 10, 4, 4, 2, 2, 3, 3),     # padding + ceil-mode partial last window
    (1, 3, 6, 7, 3, 2, 1, 0, 2, 3),       # asymmetric kernel / pad / stride
    (3, 2, 5, 5, 5, 5, 0, 0, 1, 1),       # one window per plane, N = 3
    (1, 5, 7, 7, 7, 7, 0, 0, 1, 1),       # GoogLeNet's final 7x7 AVE pool
    (2, 2, 1, 1, 1, 1, 0, 0, 1, 1),       # 1x1
    (1, 2, 5, 5, 3, 3, 2, 2, 1, 1),       # pad = kernel - 1: corner windows see one cell
]


@pytest.mark.parametrize("case", POOL_CASES)
def test_ave_pool_relevance_matches_float64_reference(case):
    n, c, h, w, *geom = case
    x, r = pool_case(np.random.default_rng(hash(case) % 2**32), n, c, h, w, *geom)
    ref = ref_ave_pool(x, r, *geom)
    for nt in THREADS:
        got = run_ave(x, r, geom, nt)
        assert got.dtype == np.float32 and got.shape == x.shape
        # float32 chain vs float64: a few ulp of the largest value
        assert np.max(np.abs(got - ref)) <= RTOL * max_abs(ref, x), nt


def test_ave_pool_relevance_random_geometries():
    rng = np.random.default_rng(7)
    done = 0
    while done < 40:
        kh, kw = rng.integers(1, 5, size=2)
        ph, pw = rng.integers(0, kh), rng.integers(0, kw)           # Caffe: pad < kernel
        sh, sw = rng.integers(1, 5, size=2)
        h, w = rng.integers(1, 12, size=2)
        if pooled_size(h, kh, ph, sh) < 1 or pooled_size(w, kw, pw, sw) < 1:
            continue
        geom = tuple(int(v) for v in (kh, kw, ph, pw, sh, sw))
        n, c = (int(v) for v in rng.integers(1, 4, size=2))
        x, r = pool_case(rng, n, c, int(h), int(w), *geom, zero_block=bool(done % 2))
        ref = ref_ave_pool(x, r, *geom)
        for nt in THREADS:
            got = run_ave(x, r, geom, nt)
            assert np.max(np.abs(got - ref)) <= RTOL * max_abs(ref, x), (geom, x.shape, nt)
        done += 1


def test_ave_pool_relevance_is_the_former_float32_code_bit_for_bit():
    # same float32 operations in the same order (window sums row-major, contributions added by
    # window offset), so not even the last bit may differ
    rng = np.random.default_rng(13)
    cases = POOL_CASES + [(2, 3, 11, 10, 3, 3, 1, 1, 2, 2), (1, 2, 12, 12, 5, 3, 2, 1, 3, 1)]
    for n, c, h, w, *geom in cases:
        x = f32(rng.standard_normal((n, c, h, w)) * rng.integers(0, 2, size=(n, c, h, w)))
        r = f32(rng.standard_normal((n, c, pooled_size(h, geom[0], geom[2], geom[4]),
                                     pooled_size(w, geom[1], geom[3], geom[5]))))
        want = former_ave_pool_float32(x, r, *geom)
        for nt in THREADS:
            np.testing.assert_array_equal(run_ave(x, r, geom, nt), want, err_msg=str(geom))


def test_ave_pool_relevance_mixed_signs_exact_sums():
    # small integers: every S_j is exact in float32, including exact zeros of non-zero cells,
    # where the original adds the activations themselves
    rng = np.random.default_rng(3)
    x = f32(rng.integers(-3, 4, size=(2, 3, 9, 9)))
    geom = (3, 3, 1, 1, 2, 2)
    r = f32(rng.standard_normal((2, 3, pooled_size(9, 3, 1, 2), pooled_size(9, 3, 1, 2))))
    ref = ref_ave_pool(x, r, *geom)
    got = run_ave(x, r, geom, 2)
    assert np.max(np.abs(got - ref)) <= RTOL * max_abs(ref, x)


def test_ave_pool_relevance_small_sum_adds_activations():
    # 1x1 windows: S_j = x_j; |S| >= 1e-6 (as float32) passes R_j on, below adds x_j (§2.3)
    at = np.float32(1e-6)
    below = np.nextafter(at, np.float32(0))
    x = f32([at, -at, below, -below, 0.0, 2.0]).reshape(1, 1, 1, 6)
    r = f32([5.0, 5.0, 5.0, 5.0, 5.0, 5.0]).reshape(1, 1, 1, 6)
    got = run_ave(x, r, (1, 1, 0, 0, 1, 1), 1).ravel()
    np.testing.assert_array_equal(got[2:5], x.ravel()[2:5])        # the activation itself
    np.testing.assert_allclose(got[[0, 1, 5]], 5.0, rtol=1e-6)      # x * (R / x): two roundings


def test_ave_pool_relevance_conserves_where_sums_are_large():
    # with every |S_j| >= 1e-6 the rule is conservative: sum R_i = sum R_j per plane
    rng = np.random.default_rng(11)
    x = f32(rng.uniform(0.5, 2.0, size=(2, 4, 13, 13)))
    geom = (3, 3, 1, 1, 2, 2)
    oh = pooled_size(13, 3, 1, 2)
    r = f32(rng.standard_normal((2, 4, oh, oh)))
    got = run_ave(x, r, geom, 2)
    np.testing.assert_allclose(got.sum(axis=(2, 3), dtype=np.float64),
                               r.sum(axis=(2, 3), dtype=np.float64), rtol=1e-5, atol=1e-5)


def test_ave_pool_relevance_threads_bit_identical():
    rng = np.random.default_rng(5)
    x, r = pool_case(rng, 3, 7, 15, 13, 3, 3, 1, 1, 2, 2)
    outs = [run_ave(x, r, (3, 3, 1, 1, 2, 2), nt) for nt in (1, 2, 3)]
    for o in outs[1:]:
        np.testing.assert_array_equal(o, outs[0])


def test_ave_pool_relevance_rejects_bad_arguments():
    x = np.zeros((1, 2, 4, 4), np.float32)
    r = np.zeros((1, 2, 2, 2), np.float32)
    with pytest.raises(ValueError):
        ave_pool_relevance(x, r, 0, 2, 0, 0, 2, 2, np.empty_like(x), 1)
    with pytest.raises(ValueError):
        ave_pool_relevance(x, np.zeros((1, 3, 2, 2), np.float32), 2, 2, 0, 0, 2, 2,
                           np.empty_like(x), 1)
    with pytest.raises(ValueError):
        ave_pool_relevance(x, r, 2, 2, 0, 0, 2, 2, np.empty((1, 2, 4, 5), np.float32), 1)


# ------------------------------------------------------------------ LRN
# (N, C, H, W, size): several channel counts against the local sizes 1, 3, 5, incl. C < size
LRN_SHAPES = [(2, 6, 4, 5, 1), (2, 6, 4, 5, 3), (2, 6, 4, 5, 5),
              (1, 1, 3, 3, 5), (1, 2, 3, 3, 5), (1, 3, 3, 3, 5), (3, 4, 2, 3, 3),
              (1, 2, 5, 5, 3), (1, 16, 7, 7, 5), (2, 9, 17, 17, 5), (1, 5, 1, 1, 5)]
LRN_CONSTANTS = [(1e-4, 0.75, 1.0), (0.5, 0.75, 1.0), (2.0, 0.6, 2.0)]   # (alpha, beta, k)


@pytest.mark.parametrize("shape,constants", list(itertools.product(LRN_SHAPES, LRN_CONSTANTS)))
def test_lrn_relevance_matches_float64_reference(shape, constants):
    *dims, size = shape
    alpha, beta, k = constants
    rng = np.random.default_rng(abs(hash((shape, constants))) % 2**32)
    x = f32(rng.standard_normal(dims) * 2)
    r = f32(rng.standard_normal(dims))
    s = lrn_scale(x, size, alpha, beta, k)
    own, cross = ref_lrn(x, s, r, size, alpha, beta, k)
    ref = own - cross
    for nt in THREADS:
        got = run_lrn(x, s, r, size, alpha, beta, k, nt)
        assert got.dtype == np.float32 and got.shape == x.shape
        # a few float32 ulp of the larger of the two terms (they may cancel)
        assert np.max(np.abs(got - ref)) <= RTOL * max_abs(own, cross), nt


def test_lrn_relevance_size_one_is_own_term_only():
    rng = np.random.default_rng(2)
    x, r = f32(rng.standard_normal((2, 3, 4, 4))), f32(rng.standard_normal((2, 3, 4, 4)))
    s = lrn_scale(x, 1, 0.5, 0.75, 1.0)
    got = run_lrn(x, s, r, 1, 0.5, 0.75, 1.0, 1)
    own = (r * x) * np.power(np.float32(1.0) + (np.float32(0.5) / 1) * x * x, np.float32(-0.75))
    # the same float32 operations, no cross term (a cross term would change values by far more);
    # numpy's vectorised float32 power and the kernel's libm powf may round the last bit apart
    # (1 ulp seen with numpy 2.4 on an AVX-512 machine), hence 2 ulp
    np.testing.assert_allclose(got, own, rtol=2.4e-7, atol=0)


def test_lrn_relevance_threads_bit_identical():
    # blocks of positions per task change with the thread count; the values must not
    rng = np.random.default_rng(9)
    x, r = f32(rng.standard_normal((2, 11, 23, 29))), f32(rng.standard_normal((2, 11, 23, 29)))
    s = lrn_scale(x, 5, 0.3, 0.75, 1.5)
    outs = [run_lrn(x, s, r, 5, 0.3, 0.75, 1.5, nt) for nt in (1, 2, 3)]
    for o in outs[1:]:
        np.testing.assert_array_equal(o, outs[0])


def test_lrn_relevance_rejects_bad_arguments():
    x = np.zeros((1, 3, 2, 2), np.float32)
    with pytest.raises(ValueError):
        lrn_relevance(x, x, x, 4, 1e-4, 0.75, 1.0, np.empty_like(x), 1)    # even size
    with pytest.raises(ValueError):
        lrn_relevance(x, x, np.zeros((1, 3, 2, 3), np.float32), 5, 1e-4, 0.75, 1.0,
                      np.empty_like(x), 1)


# ------------------------------------------------------- the layers' own relevance rules
def test_lrp_ave_pool_rule_uses_the_layer_geometry(tmp_path):
    net = make_net(tmp_path, layer("pool", "Pooling", "data", "pool",
                                   "pooling_param { pool: AVE kernel_size: 3 stride: 2 pad: 1 }"),
                   input_shape=(2, 3, 10, 9))
    rng = np.random.default_rng(21)
    x = f32(np.maximum(rng.standard_normal((2, 3, 10, 9)), 0))
    y = net.forward(x)
    y = y if isinstance(y, np.ndarray) else next(iter(y.values()))
    r = f32(rng.standard_normal(y.shape))
    got = net.graph().steps[0].layer.average_relevance(x, r)
    ref = ref_ave_pool(x, r, 3, 3, 1, 1, 2, 2)
    assert got.dtype == np.float32 and got.flags.c_contiguous
    assert np.max(np.abs(got - ref)) <= RTOL * max_abs(ref, x)


def test_lrp_lrn_rule_uses_the_forward_scale(tmp_path):
    net = make_net(tmp_path, layer("norm", "LRN", "data", "norm",
                                   "lrn_param { local_size: 5 alpha: 0.5 beta: 0.75 k: 2 }"),
                   input_shape=(2, 7, 5, 6))
    rng = np.random.default_rng(22)
    x = f32(rng.standard_normal((2, 7, 5, 6)))
    net.forward(x)
    lay = net.graph().steps[0].layer
    r = f32(rng.standard_normal(x.shape))
    got = lay.type1_relevance(x, r)
    own, cross = ref_lrn(x, lay.scale, r, 5, 0.5, 0.75, 2.0)
    assert got.dtype == np.float32
    assert np.max(np.abs(got - (own - cross))) <= RTOL * max_abs(own, cross)
