"""Winograd F(4x4, 3x3) (caffelrp/winograd.py, src/winograd.pyx) against float64 convolutions.

Tolerance, from float32 error growth: a float32 sum of n = 9C products is off by about
eps * sqrt(n) times the sum of the magnitudes of its terms (random rounding errors add up like a
random walk); Winograd's transforms amplify the rounding of the transformed tiles by a constant
(their entries reach 5 in B^T, 8 in A^T, and 1/6, 1/12, 1/24 in G are rounded). So the bound is

    max |y - y64| <= KAPPA * eps32 * sqrt(9 C) * max (|x| * |w|)

over a layer, where |x| * |w| is the convolution of the magnitudes (the scale of the largest
output). Measured over 200 random shapes (batch 1-3, 1-70 channels, sizes 1-30, pad 0-2, inputs
normal, uniform and ReLU-like): KAPPA at most 6.4, median 0.3; im2col + GEMM gives 0.5 at most.
KAPPA = 32 leaves a factor 5. As a fraction of the layer's largest output the error is 2e-6
(median) to 7e-6 (worst) on those shapes and 1e-5 on VGG-16-sized layers (512 channels), against
4e-7 for the GEMM (BENCHMARKS.md "Winograd").
"""
import os
import subprocess
import sys

import numpy as np
import pytest

import caffelrp
from caffelrp import winograd
from caffelrp.kernels.winograd import conv3x3, filters

from netutil import layer, make_net, randomize

EPS32 = float(np.finfo(np.float32).eps)
KAPPA = 32.0


@pytest.fixture(autouse=True)
def winograd_on():
    """Every test starts with Winograd on (the default) and leaves it so."""
    winograd.set_winograd(True)
    yield
    winograd.set_winograd(True)


def correlate64(x, w, ph, pw, oh, ow):
    """float64 y[n, k, i, j] = sum_{c,u,v} x[n, c, i - ph + u, j - pw + v] w[k, c, u, v], reading
    zeros outside x (ph, pw may be negative)."""
    x = np.asarray(x, np.float64)
    w = np.asarray(w, np.float64)
    n, c, h, wd = x.shape
    margin = max(abs(ph), abs(pw)) + oh + ow + 3
    big = np.zeros((n, c, h + 2 * margin, wd + 2 * margin))
    big[:, :, margin:margin + h, margin:margin + wd] = x
    y = np.zeros((n, w.shape[0], oh, ow))
    for u in range(3):
        for v in range(3):
            r0, c0 = margin - ph + u, margin - pw + v
            y += np.einsum("nchw,kc->nkhw", big[:, :, r0:r0 + oh, c0:c0 + ow], w[:, :, u, v])
    return y


def bound(x, w, ph, pw, oh, ow, bias=None):
    """KAPPA * eps32 * sqrt(9 C) * the largest output of the magnitudes (module docstring)."""
    scale = correlate64(np.abs(x), np.abs(w), ph, pw, oh, ow)
    if bias is not None:
        scale += np.abs(np.asarray(bias, np.float64))[None, :, None, None]
    return KAPPA * EPS32 * np.sqrt(9 * x.shape[1]) * scale.max()


def conv_layer(tmp_path, n, c, h, w, k, pad, bias=True, extra=""):
    pads = ("pad: %d" % pad) if np.isscalar(pad) else ("pad_h: %d pad_w: %d" % pad)
    body = layer("conv", "Convolution", params="convolution_param { num_output: %d "
                 "kernel_size: 3 %s bias_term: %s %s }" % (k, pads, str(bias).lower(), extra))
    return make_net(tmp_path, body, input_shape=(n, c, h, w))


def winograd_layer(tmp_path, shape, k, input_seed, weight_seed):
    """A pad-1 3x3 layer with seeded weights, a seeded input of ``shape``, and Winograd on it."""
    net = conv_layer(tmp_path, *shape, k, 1)
    randomize(net, weight_seed)
    x = np.random.default_rng(input_seed).standard_normal(shape).astype(np.float32)
    assert winograd.applies(net.layer("conv"), x.shape)
    return net, x


def random_case(seed):
    rng = np.random.default_rng(seed)
    while True:
        n, c, k = int(rng.integers(1, 4)), int(rng.integers(1, 71)), int(rng.integers(1, 33))
        h, w, pad = int(rng.integers(1, 31)), int(rng.integers(1, 31)), int(rng.integers(0, 3))
        if h + 2 * pad >= 3 and w + 2 * pad >= 3:
            return rng, (n, c, h, w, k, pad)


def inputs(rng, shape, kind):
    if kind == "normal":
        return rng.standard_normal(shape).astype(np.float32)
    return (np.maximum(rng.standard_normal(shape), 0) * 50).astype(np.float32)   # ReLU-like


# ------------------------------------------------------------------ against float64
@pytest.mark.parametrize("seed", range(24))
def test_forward_matches_float64_convolution_on_random_shapes(tmp_path, seed):
    rng, (n, c, h, w, k, pad) = random_case(seed)
    net = conv_layer(tmp_path, n, c, h, w, k, pad)
    conv = net.layer("conv")
    weights = rng.standard_normal((k, c, 3, 3)).astype(np.float32)
    bias = rng.standard_normal(k).astype(np.float32)
    net.params["conv"][0] = weights
    net.params["conv"][1] = bias
    x = inputs(rng, (n, c, h, w), "normal" if seed % 2 else "relu")
    y = winograd.forward(conv, x)     # directly: below MIN_CHANNELS the layer would not use it
    oh, ow = h + 2 * pad - 2, w + 2 * pad - 2
    expected = correlate64(x, weights, pad, pad, oh, ow) + bias[None, :, None, None]
    assert y.shape == expected.shape and y.dtype == np.float32
    assert np.abs(y - expected).max() <= bound(x, weights, pad, pad, oh, ow, bias)


@pytest.mark.parametrize("seed", range(24, 40))
def test_backward_data_matches_float64_transposed_convolution(tmp_path, seed):
    rng, (n, c, h, w, k, pad) = random_case(seed)
    net = conv_layer(tmp_path, n, c, h, w, k, pad)
    conv = net.layer("conv")
    weights = rng.standard_normal((k, c, 3, 3)).astype(np.float32)
    net.params["conv"][0] = weights
    oh, ow = h + 2 * pad - 2, w + 2 * pad - 2
    dy = rng.standard_normal((n, k, oh, ow)).astype(np.float32)
    dx = winograd.backward_data(conv, dy, (n, c, h, w))
    # the adjoint: dx[c, a] = sum_{k,u} dy[k, a + pad - u] w[k, c, u], a correlation of dy with
    # the flipped filter (c, k) and pad 2 - pad
    flipped = weights.transpose(1, 0, 2, 3)[:, :, ::-1, ::-1]
    expected = correlate64(dy, flipped, 2 - pad, 2 - pad, h, w)
    assert np.abs(dx - expected).max() <= bound(dy, flipped, 2 - pad, 2 - pad, h, w)


def test_backward_data_is_the_adjoint_of_the_forward(tmp_path):
    """<dy, conv(x)> = <conv^T(dy), x> in float64 up to the float32 bound of both passes."""
    rng = np.random.default_rng(7)
    net = conv_layer(tmp_path, 2, 24, 13, 10, 20, 1, bias=False)
    conv = net.layer("conv")
    net.params["conv"][0] = rng.standard_normal((20, 24, 3, 3))
    x = rng.standard_normal((2, 24, 13, 10)).astype(np.float32)
    dy = rng.standard_normal((2, 20, 13, 10)).astype(np.float32)
    lhs = np.vdot(dy.astype(np.float64), winograd.forward(conv, x).astype(np.float64))
    rhs = np.vdot(winograd.backward_data(conv, dy, x.shape).astype(np.float64),
                  x.astype(np.float64))
    # each pass is within ~1e-5 of its largest value; the sums over 5200 values cancel little
    assert abs(lhs - rhs) <= 1e-4 * np.sqrt(dy.size) * max(1.0, abs(lhs) / np.sqrt(dy.size))


@pytest.mark.parametrize("pad", [(3, 3), (4, 1), (0, 2), (5, 0)])
def test_pads_above_two_and_unequal_pads(tmp_path, pad):
    """A pad above 2 makes the backward pass crop (pad 2 - pad < 0); outputs larger than the
    input read only padding at their edge tiles."""
    rng = np.random.default_rng(sum(pad))
    n, c, h, w, k = 2, 20, 17, 14, 7
    net = conv_layer(tmp_path, n, c, h, w, k, pad)
    conv = net.layer("conv")
    assert winograd.applies(conv, (n, c, h, w))
    weights = rng.standard_normal((k, c, 3, 3)).astype(np.float32)
    bias = rng.standard_normal(k).astype(np.float32)
    net.params["conv"][0] = weights
    net.params["conv"][1] = bias
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    oh, ow = h + 2 * pad[0] - 2, w + 2 * pad[1] - 2
    y = net.forward(x)["conv"]
    expected = correlate64(x, weights, pad[0], pad[1], oh, ow) + bias[None, :, None, None]
    assert np.abs(y - expected).max() <= bound(x, weights, pad[0], pad[1], oh, ow, bias)
    dy = rng.standard_normal((n, k, oh, ow)).astype(np.float32)
    dx = net.backward({"conv": dy}, blobs=["data"])["data"]
    flipped = weights.transpose(1, 0, 2, 3)[:, :, ::-1, ::-1]
    expected = correlate64(dy, flipped, 2 - pad[0], 2 - pad[1], h, w)
    assert np.abs(dx - expected).max() <= bound(dy, flipped, 2 - pad[0], 2 - pad[1], h, w)


def test_vgg_sized_layer_error_against_float64_and_the_gemm_path(tmp_path):
    """512 -> 512 channels at 14x14, ReLU-like inputs, He-scaled weights (VGG-16's conv5): the
    error as a fraction of the largest output, Winograd 1e-5 measured, the GEMM 4e-7."""
    rng = np.random.default_rng(3)
    net = conv_layer(tmp_path, 1, 512, 14, 14, 512, 1)
    net.params["conv"][0] = rng.standard_normal((512, 512, 3, 3)) * np.sqrt(2 / (9 * 512))
    net.params["conv"][1][...] = 0.01
    x = inputs(rng, (1, 512, 14, 14), "relu")
    expected = correlate64(x, net.params["conv"][0], 1, 1, 14, 14) + 0.01
    largest = np.abs(expected).max()
    fast = net.forward(x)["conv"].copy()
    winograd.set_winograd(False)
    gemm = net.forward(x)["conv"]
    fast_error = np.abs(fast - expected).max() / largest
    gemm_error = np.abs(gemm - expected).max() / largest
    assert fast_error <= 5e-5          # 5x the measured 1e-5; the bound is 1e-4
    assert gemm_error <= 2e-6
    assert fast_error > gemm_error     # the two paths really are different arithmetic


@pytest.mark.parametrize("groups,n,c,k,h,w,pad", [(2, 2, 12, 8, 13, 13, 1),     # CaffeNet conv4
                                                     (3, 1, 9, 6, 16, 18, 0),
                                                     (4, 3, 8, 12, 14, 17, 2)])
def test_grouped_forward_and_backward_data_match_float64_per_group(tmp_path, groups, n, c, k, h,
                                                                    w, pad):
    """Each group's outputs are its own channels' correlation with its own filters (and bias);
    the backward-data pass is that map's adjoint, per group."""
    body = layer("conv", "Convolution", params="convolution_param { num_output: %d "
                 "kernel_size: 3 pad: %d group: %d }" % (k, pad, groups))
    net = make_net(tmp_path, body, input_shape=(n, c, h, w))
    randomize(net, 7)
    conv = net.layer("conv")
    assert winograd.applies(conv, (n, c, h, w))
    weights, bias = net.params["conv"][0], net.params["conv"][1]
    rng = np.random.default_rng(groups)
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    oh, ow = h + 2 * pad - 2, w + 2 * pad - 2
    dy = rng.standard_normal((n, k, oh, ow)).astype(np.float32)
    y = net.forward(x)["conv"]
    dx = winograd.backward_data(conv, dy, (n, c, h, w))
    cg, kg = c // groups, k // groups
    for g in range(groups):
        xs, ks = slice(g * cg, (g + 1) * cg), slice(g * kg, (g + 1) * kg)
        wg = weights[ks]
        expected = correlate64(x[:, xs], wg, pad, pad, oh, ow) + bias[ks][None, :, None, None]
        assert np.abs(y[:, ks] - expected).max() <= bound(x[:, xs], wg, pad, pad, oh, ow,
                                                          bias[ks])
        flipped = wg.transpose(1, 0, 2, 3)[:, :, ::-1, ::-1]
        expected = correlate64(dy[:, ks], flipped, 2 - pad, 2 - pad, h, w)
        assert np.abs(dx[:, xs] - expected).max() <= bound(dy[:, ks], flipped, 2 - pad,
                                                           2 - pad, h, w)


# ------------------------------------------------------------------ dispatch and switches
@pytest.mark.parametrize("params,uses", [
    ("kernel_size: 3 pad: 1", True),
    ("kernel_size: 3 pad: 0", True),
    ("kernel_size: 3 pad: 1 stride: 2", False),
    ("kernel_size: 3 pad: 2 dilation: 2", False),
    ("kernel_size: 3 pad: 1 group: 2", True),       # one call per group
    ("kernel_size: 3 pad: 1 group: 16", True),      # 2 channels per group: MIN_CHANNELS
    ("kernel_size: 3 pad: 1 group: 32", False),     # 1 channel per group
    ("kernel_size: 5 pad: 2", False),
    ("kernel_h: 3 kernel_w: 1 pad: 1", False),
])
def test_applies_to_3x3_stride_1_dilation_1_convolutions(tmp_path, params, uses):
    body = layer("conv", "Convolution", params="convolution_param { num_output: 32 %s }" % params)
    net = make_net(tmp_path, body, input_shape=(1, 32, 20, 20))
    assert winograd.applies(net.layer("conv"), (1, 32, 20, 20)) is uses


def test_not_below_min_channels(tmp_path):
    few = (1, winograd.MIN_CHANNELS - 1, 16, 16)
    net = conv_layer(tmp_path, *few, 4, 1)
    assert not winograd.applies(net.layer("conv"), few)
    enough = (1, winograd.MIN_CHANNELS, 16, 16)
    net = conv_layer(tmp_path, *enough, 4, 1)
    assert winograd.applies(net.layer("conv"), enough)


@pytest.mark.parametrize("shape,uses", [((1, 32, 14, 14), True),      # 16 tiles
                                        ((1, 32, 13, 13), True),      # 16 tiles, edges cut
                                        ((1, 32, 12, 12), False),     # 9 tiles
                                        ((1, 32, 7, 7), False),       # 4 tiles
                                        ((4, 32, 7, 7), False)])      # per image
def test_not_below_min_tiles_per_image(tmp_path, shape, uses):
    """Counted per image: the method does not change with the batch size."""
    net = conv_layer(tmp_path, *shape, 8, 1)
    assert winograd.MIN_TILES == 16
    assert winograd.applies(net.layer("conv"), shape) is uses


def test_switch_turns_it_off_and_the_im2col_path_agrees(tmp_path):
    net, x = winograd_layer(tmp_path, (2, 32, 17, 15), 16, input_seed=11, weight_seed=1)
    fast = net.forward(x)["conv"].copy()
    caffelrp.set_winograd(False)
    assert not winograd.applies(net.layer("conv"), x.shape)
    slow = net.forward(x)["conv"]
    assert not np.array_equal(fast, slow)     # a different computation ...
    # ... of the same convolution, within the float32 bound
    assert np.abs(fast - slow).max() <= bound(x, net.params["conv"][0], 1, 1, 17, 15)


def test_off_in_caffe_exact_mode(tmp_path, monkeypatch):
    from caffelrp import caffe_blas
    net = conv_layer(tmp_path, 1, 32, 16, 16, 4, 1)
    assert winograd.applies(net.layer("conv"), (1, 32, 16, 16))
    monkeypatch.setattr(caffe_blas, "active", lambda: True)
    assert not winograd.applies(net.layer("conv"), (1, 32, 16, 16))


@pytest.mark.parametrize("value,expected", [("0", "False"), ("1", "True"), ("", "True")])
def test_environment_variable(value, expected):
    code = "from caffelrp import winograd; print(winograd.enabled())"
    env = dict(os.environ, CAFFELRP_WINOGRAD=value)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.strip() == expected, out.stderr


def test_bad_environment_value_is_a_caffelrp_error_naming_the_variable():
    code = "from caffelrp import winograd; winograd.enabled()"
    env = dict(os.environ, CAFFELRP_WINOGRAD="yes")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert "WinogradSettingError" in out.stderr and "CAFFELRP_WINOGRAD" in out.stderr


def test_set_winograd_refuses_a_non_switch():
    with pytest.raises(caffelrp.CaffeLRPError, match="True or False"):
        caffelrp.set_winograd("off")


# ------------------------------------------------------------------ filter cache
def test_transformed_filters_follow_weights_written_through_params(tmp_path):
    net, x = winograd_layer(tmp_path, (1, 20, 16, 16), 6, input_seed=2, weight_seed=3)
    net.forward(x)                                # makes the transformed filters
    net.params["conv"][0].data[...] *= 2          # in place, through pycaffe's view
    net.params["conv"][1][...] = 0
    second = net.forward(x)["conv"]               # stale filters would give half of it
    expected = correlate64(x, net.params["conv"][0], 1, 1, 16, 16)
    assert np.abs(second - expected).max() <= bound(x, net.params["conv"][0], 1, 1, 16, 16)


def test_transformed_filters_follow_replaced_weight_arrays(tmp_path):
    """Net.load_weights / assigning layer.blobs replaces the arrays: the cache is remade."""
    rng = np.random.default_rng(4)
    net = conv_layer(tmp_path, 1, 20, 16, 16, 6, 1, bias=False)
    conv = net.layer("conv")
    conv.blobs = [rng.standard_normal((6, 20, 3, 3)).astype(np.float32)]
    x = rng.standard_normal((1, 20, 16, 16)).astype(np.float32)
    assert winograd.applies(conv, x.shape)
    net.forward(x)
    replacement = rng.standard_normal((6, 20, 3, 3)).astype(np.float32)
    conv.blobs = [replacement]
    y = net.forward(x)["conv"]
    assert np.abs(y - correlate64(x, replacement, 1, 1, 16, 16)).max() <= \
        bound(x, replacement, 1, 1, 16, 16)


def test_one_filter_transform_per_weights_array_and_direction(tmp_path):
    net = conv_layer(tmp_path, 1, 20, 16, 16, 6, 1)
    randomize(net, 5)
    conv = net.layer("conv")
    x = np.ones((1, 20, 16, 16), np.float32)
    net.forward(x)
    u = winograd.transformed_filters(conv)
    net.forward(x)
    assert winograd.transformed_filters(conv) is u
    assert u.shape == (36, 6, 20)
    assert winograd.transformed_filters(conv, adjoint=True).shape == (36, 20, 6)


def test_filter_transform_is_g_w_gt_rounded_once():
    """U = G w G^T at the standard points 0, 1, -1, 2, -2, inf, computed in float64: every value
    within half a float32 ulp of the exact one (plus float64's own rounding, 1e-14)."""
    G = np.array([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
                  [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]])
    w = np.random.default_rng(0).standard_normal((70, 3, 3, 3)).astype(np.float32)
    u = np.empty((36, 70, 3), np.float32)
    filters(w, u, False)
    exact = np.einsum("as,kcst,bt->abkc", G, w.astype(np.float64), G).reshape(36, 70, 3)
    half_ulp = 0.5 * np.spacing(np.abs(exact).astype(np.float32)).astype(np.float64)
    assert (np.abs(u - exact) <= half_ulp + 1e-14 * np.abs(exact)).all()
    adjoint = np.empty((36, 3, 70), np.float32)
    filters(w, adjoint, True, 2)
    flipped = w.transpose(1, 0, 2, 3)[:, :, ::-1, ::-1].astype(np.float64)
    exact = np.einsum("as,kcst,bt->abkc", G, flipped, G).reshape(36, 3, 70)
    assert np.abs(adjoint - exact).max() <= np.abs(exact).max() * 2 ** -24 * 1.01


# ------------------------------------------------------------------ threads
@pytest.mark.parametrize("n,c,size,k", [(1, 64, 56, 32),    # many chunks: one per thread
                                        (2, 40, 14, 48),    # few: threads share phases
                                        (3, 17, 23, 5)])    # edge tiles, odd sizes
def test_bit_identical_for_any_thread_count(n, c, size, k):
    rng = np.random.default_rng(c)
    x = rng.standard_normal((n, c, size, size)).astype(np.float32)
    w = rng.standard_normal((k, c, 3, 3)).astype(np.float32)
    b = rng.standard_normal(k).astype(np.float32)
    u = np.empty((36, k, c), np.float32)
    filters(w, u, False)
    tw = (size + 3) // 4
    rows = -(-winograd.CHUNK_TILES // tw)
    outs = []
    for threads in (1, 2, 3, 8):
        y = np.full((n, k, size, size), np.nan, np.float32)
        conv3x3(x, u, b, 1, 1, rows, y, np.empty(threads * 36 * c * rows * tw, np.float32),
                np.empty(threads * 36 * k * rows * tw, np.float32), threads)
        outs.append(y)
    for y in outs[1:]:
        assert np.array_equal(y, outs[0])


def test_kernel_refuses_small_work_buffers():
    x = np.zeros((1, 4, 8, 8), np.float32)
    u = np.zeros((36, 2, 4), np.float32)
    y = np.empty((1, 2, 8, 8), np.float32)
    with pytest.raises(ValueError, match="work buffers"):
        conv3x3(x, u, None, 1, 1, 2, y, np.empty(10, np.float32), np.empty(10, np.float32), 1)
