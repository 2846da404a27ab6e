"""The LRP rules on whole images through Winograd (``layers.conv.WinogradMap``) for 3x3 stride-1
convolutions, against the float64 reference of test_lrp_rules.py and against the column path
(im2col + GEMM + col2im), and the element-wise helpers of caffelrp.rules on 4-D image batches.

The map is opt-in (``winograd.set_winograd_relevance``): Winograd F(4x4,3x3) rounds about 20x
more than the GEMM, relative to a whole input tile, and the rules that divide by z+ or z amplify
that where z+ is (nearly) zero and its neighbours are not. Held here to the same 1e-4 of the
largest relevance as the column path in test_lrp_rules.py, on the cases where it keeps it
(measured: at most 9e-6 for pads 0 and 1 and epsilon 1): epsilon(0.01) (2-5e-4) and pad 2 with
few inputs per border window (alpha-beta 0.5-1.1) do not, which is why it is off by default."""
import subprocess
import sys

import numpy as np
import pytest

from caffelrp import caffe_blas, rules, winograd
from caffelrp.layers.conv import WinogradMap, conv_relevance
from caffelrp.rules import (IDENTITY, NEGATIVE, POSITIVE, Rule, alpha_beta, epsilon, flat, gamma,
                            w_square, zbox, zplus)

from netutil import layer, make_net, randomize
from test_lrp_rules import close, conv_forward, ref_conv

# (C, H, W, O, pad): 16 or more output tiles of 4x4 per image, so Winograd applies
SHAPES = [(8, 16, 16, 6, 1), (5, 18, 15, 7, 0), (6, 13, 17, 9, 1)]
REFERENCE_CASES = [("epsilon", 1.0, 0.0), ("alpha_beta", 0.0, 0.0), ("alpha_beta", 0.0, 1.0),
                   ("alpha_beta", 0.0, 2.5)]
IMAGE_RULES = [("epsilon(1)", lambda: epsilon(1.0)),
               ("alpha-beta 0", lambda: alpha_beta(beta=0.0)),
               ("alpha-beta 1", lambda: alpha_beta(beta=1.0)), ("z+", zplus),
               ("gamma", lambda: gamma(0.25)), ("gamma no bias", lambda: gamma(0.5, bias=False)),
               ("epsilon gamma-shifted", lambda: epsilon(1.0, rules.gamma_shifted(0.25)))]


@pytest.fixture(autouse=True)
def winograd_on():
    """The Winograd map is opt-in: on for these tests, off after them."""
    winograd.set_winograd(True)
    winograd.set_winograd_relevance(True)
    yield
    winograd.set_winograd(True)
    winograd.set_winograd_relevance(False)


def geometry(pad):
    return (3, 3, pad, pad, 1, 1, 1, 1)


def case(shape, n, signed, seed=0):
    c, h, w, o, pad = shape
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    if not signed:
        x = np.maximum(x, 0)
    W = rng.standard_normal((o, c, 3, 3)).astype(np.float32)
    b = (rng.standard_normal(o) * 0.5).astype(np.float32)
    R = rng.standard_normal((n, o, h + 2 * pad - 2, w + 2 * pad - 2)).astype(np.float32)
    return x, W, b, R, pad


def column_path(rule, x, W, b, R, pad, z=None):
    winograd.set_winograd_relevance(False)
    try:
        return conv_relevance(rule, x, W, b, R, geometry(pad), z=z)
    finally:
        winograd.set_winograd_relevance(True)


def make_rule(name, eps, beta):
    return epsilon(eps) if name == "epsilon" else alpha_beta(beta=beta)


@pytest.mark.parametrize("signed", [False, True])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name,eps,beta", REFERENCE_CASES)
def test_winograd_map_matches_float64_reference(shape, name, eps, beta, signed):
    x, W, b, R, pad = case(shape, 2, signed)
    assert winograd.relevance_applies(geometry(pad), 1, x.shape)
    got = conv_relevance(make_rule(name, eps, beta), x, W, b, R, geometry(pad))
    want = ref_conv(*(a.astype(np.float64) for a in (x, W, b, R)), pad, 1, 1, name, eps, beta)
    assert got.dtype == np.float32 and got.shape == x.shape
    assert close(got, want)


@pytest.mark.parametrize("signed", [False, True])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name,make", IMAGE_RULES)
def test_winograd_map_matches_column_path_on_every_image_rule(shape, name, make, signed):
    x, W, b, R, pad = case(shape, 2, signed, seed=1)
    fast = conv_relevance(make(), x, W, b, R, geometry(pad))
    slow = column_path(make(), x, W, b, R, pad)
    assert not np.array_equal(fast, slow)   # a different computation ...
    assert close(fast, slow.astype(np.float64))   # ... of the same relevance


@pytest.mark.parametrize("name,make", IMAGE_RULES[:5])
def test_winograd_map_takes_the_forward_z(name, make):
    """With z from the forward (the layer's top), as Net.relevance passes it."""
    x, W, b, R, pad = case(SHAPES[0], 3, False, seed=2)
    z = conv_forward(x.astype(np.float64), W.astype(np.float64), b.astype(np.float64), pad, 1,
                     1).astype(np.float32)
    fast = conv_relevance(make(), x, W, b, R, geometry(pad), z=z)
    assert close(fast, column_path(make(), x, W, b, R, pad, z=z).astype(np.float64))


@pytest.mark.parametrize("make", [flat, w_square, lambda: flat(True),
                                  lambda: zbox(-2.0, 2.0)])
def test_rules_that_need_the_columns_keep_the_column_path(make):
    x, W, b, R, pad = case(SHAPES[0], 2, True, seed=3)
    assert not make().on_images
    np.testing.assert_array_equal(conv_relevance(make(), x, W, b, R, geometry(pad)),
                                  column_path(make(), x, W, b, R, pad))


def test_a_users_rule_keeps_the_column_path():
    seen = []

    class Mine(Rule):
        def columns(self, X, lin, R, z=None, aux=(), nonnegative=None):
            seen.append((X.ndim, type(lin).__name__))
            return np.asarray(lin.backward(R) * X, np.float32)

    x, W, b, R, pad = case(SHAPES[0], 1, True, seed=4)
    conv_relevance(Mine(), x, W, b, R, geometry(pad))
    assert seen == [(2, "LinearMap")]


def test_off_with_the_switch_in_caffe_exact_mode_and_below_the_tiles(monkeypatch):
    x, W, b, R, pad = case(SHAPES[0], 1, False)
    assert winograd.relevance_applies(geometry(pad), 1, x.shape)
    winograd.set_winograd(False)
    assert not winograd.relevance_applies(geometry(pad), 1, x.shape)
    winograd.set_winograd(True)
    assert not winograd.relevance_applies(geometry(pad), 2, x.shape)      # groups
    assert not winograd.relevance_applies((3, 3, 1, 1, 2, 2, 1, 1), 1, x.shape)   # stride 2
    assert not winograd.relevance_applies(geometry(pad), 1, (1, 8, 12, 12))   # 9 tiles
    monkeypatch.setattr(caffe_blas, "active", lambda: True)
    assert not winograd.relevance_applies(geometry(pad), 1, x.shape)


def test_off_by_default():
    code = "from caffelrp import winograd; print(winograd.RELEVANCE)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "False"
    with pytest.raises(winograd.WinogradSettingError):
        winograd.set_winograd_relevance("yes")


@pytest.mark.parametrize("name,make", IMAGE_RULES)
def test_windows_of_zeros_stay_exact_zeros(name, make):
    """A dead ReLU region: the GEMM gives z+ = 0 there exactly, Winograd's rounding a residue of
    the tile's other inputs that alpha-beta would divide by (measured without the guard: 1e-1
    of the largest relevance; with it 8e-7)."""
    rng = np.random.default_rng(14)
    x = (np.abs(rng.standard_normal((1, 16, 24, 24))) * 10).astype(np.float32)
    x[:, :, 6:13, 6:13] = 0          # the windows centred at 7..11 hold only zeros
    W = (rng.standard_normal((8, 16, 3, 3)) / 12).astype(np.float32)
    R = rng.random((1, 8, 24, 24)).astype(np.float32)
    fast = conv_relevance(make(), x, W, None, R, geometry(1))
    assert close(fast, column_path(make(), x, W, None, R, 1).astype(np.float64))
    lin = WinogradMap(W, None, geometry(1), x.shape)
    assert (lin.forward(x, POSITIVE)[:, :, 7:12, 7:12] == 0).all()


def test_map_products_are_the_convolution_and_its_transpose():
    x, W, b, R, pad = case(SHAPES[1], 2, True, seed=5)
    lin = WinogradMap(W, b, geometry(pad), x.shape)
    x64, W64 = x.astype(np.float64), W.astype(np.float64)
    for modifier in (IDENTITY, POSITIVE, NEGATIVE):
        Wm = modifier(W).astype(np.float64)
        want = conv_forward(x64, Wm, np.zeros(W.shape[0]), pad, 1, 1)
        got = lin.forward(x, modifier)
        assert got.shape == R.shape and close(got, want)
        # <S, conv(x)> = <conv^T(S), x>: the backward is the adjoint of the forward
        back = lin.backward(R, modifier)
        assert back.shape == x.shape
        lhs = np.vdot(R.astype(np.float64), want)
        rhs = np.vdot(back.astype(np.float64), x64)
        assert abs(lhs - rhs) <= 1e-4 * np.vdot(np.abs(R), np.abs(want))
    assert lin.bias().shape == (1, W.shape[0], 1, 1)
    np.testing.assert_array_equal(lin.bias(POSITIVE).ravel(), np.maximum(b, 0))
    assert WinogradMap(W, None, geometry(pad), x.shape).bias() is None


def test_layer_keeps_the_parts_transformed_filters_with_its_own(tmp_path):
    """Net.relevance hands the layer's Winograd cache to the map: W+'s transformed filters are
    made once and kept next to those of the forward (the same W for the epsilon part)."""
    body = layer("conv", "Convolution", params="convolution_param { num_output: 6 "
                 "kernel_size: 3 pad: 1 }") + layer(
        "ip", "InnerProduct", bottom="conv", params="inner_product_param { num_output: 3 }")
    net = make_net(tmp_path, body, input_shape=(1, 8, 16, 16))
    randomize(net, 1)
    x = np.random.default_rng(6).standard_normal((1, 8, 16, 16)).astype(np.float32)
    first = net.relevance(x, rule=2, beta=1.0, target=0)
    cache = getattr(net.layer("conv"), winograd.CACHE)
    assert ("positive", False) in cache and ("positive", True) in cache
    kept = cache[("positive", True)]
    second = net.relevance(x, rule=2, beta=1.0, target=0)
    assert cache[("positive", True)] is kept
    np.testing.assert_array_equal(first, second)
    winograd.set_winograd_relevance(False)
    columns = net.relevance(x, rule=2, beta=1.0, target=0)
    assert close(first, columns.astype(np.float64))


# ------------------------------------------------------ element-wise helpers on images
def images(seed, shape=(2, 3, 4, 5)):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(shape).astype(np.float32) for _ in range(4)]


def test_times_input_on_images_is_the_product():
    x, g = images(7)[:2]
    want = x.astype(np.float64) * g
    out = rules._times_input(x, g.copy())
    np.testing.assert_allclose(out, want, rtol=1e-6)
    # a non-contiguous batch has no 2-D view: numpy computes the same
    np.testing.assert_allclose(rules._times_input(x[:, :, ::2], g[:, :, ::2].copy()),
                               want[:, :, ::2], rtol=1e-6)


def test_epsilon_ratio_on_images():
    r, z = images(8)[:2]
    z[0, 1, 2, 3] = 0
    z64 = z.astype(np.float64)
    want = np.where(z64 == 0, r, r / np.where(z64 > 0, z64 + 0.5, z64 - 0.5))
    np.testing.assert_allclose(rules._epsilon_ratio(r, z, np.float32(0.5)), want, rtol=1e-6)
    np.testing.assert_allclose(rules._epsilon_ratio(r[..., ::2], z[..., ::2], np.float32(0.5)),
                               want[..., ::2], rtol=1e-6)


@pytest.mark.parametrize("beta", [0.0, 1.0])
def test_alpha_beta_ratios_on_images_take_the_bias_per_channel(beta):
    r, zp, z, _ = images(9)
    bp = np.abs(images(10, (1, 3, 1, 1))[0])
    off = images(11, (1, 3, 1, 1))[0]
    zp64 = zp.astype(np.float64) + bp
    zn64 = z.astype(np.float64) - zp64 - off
    want_p = np.where(zp64 > 0, (1 + beta) * r / np.where(zp64 > 0, zp64, 1), 0)
    want_n = np.where(zn64 < 0, beta * r / np.where(zn64 < 0, zn64, 1), 0)
    sp, sn = rules._alpha_beta_ratios(r, zp.copy(), z, bp, off, np.float32(1 + beta),
                                      np.float32(beta))
    np.testing.assert_allclose(sp, want_p, rtol=1e-5, atol=1e-7)
    if beta == 0:
        assert sn is None
    else:
        np.testing.assert_allclose(sn, want_n, rtol=1e-5, atol=1e-7)


def test_signed_alpha_beta_on_images_uses_the_kernel(monkeypatch):
    """Inputs of both signs: x * pos where x > 0, x * neg elsewhere, by the fused kernel on the
    images' 2-D view (the numpy fallback would give the same values; the call shows which ran)."""
    calls = []
    kernel = rules.signed_product
    monkeypatch.setattr(rules, "signed_product",
                        lambda *a: calls.append(a[0].shape) or kernel(*a))
    x, W, b, R, pad = case(SHAPES[0], 2, True, seed=12)
    conv_relevance(alpha_beta(beta=1.0), x, W, b, R, geometry(pad))
    assert calls == [(2 * x.shape[1], x.shape[2] * x.shape[3])]
