"""Each layer type against a plain float64 numpy restatement of Caffe's semantics.

Tolerance: caffelrp computes in float32 (as Caffe does); relative error against the float64
reference is bounded by the float32 accumulation over the layer's fan-in, ~1e-5 for these sizes.
"""
import numpy as np
import pytest

import reference_ops as ref
from netutil import layer, make_net, randomize

RTOL = 1e-5


def assert_close(actual, expected, rtol=RTOL):
    expected = np.asarray(expected)
    scale = max(np.abs(expected).max(), 1e-30)
    err = np.abs(np.asarray(actual, np.float64) - expected).max() / scale
    assert err <= rtol, "max relative error %.3g > %.3g" % (err, rtol)


def run(net, x):
    out = net.forward(x.astype(np.float32))
    return out


CONV_CASES = [
    # (input shape, conv params, description)
    ((2, 3, 9, 9), "num_output: 4 kernel_size: 3", "plain"),
    ((2, 4, 8, 7), "num_output: 6 kernel_size: 3 pad: 1 stride: 2 group: 2", "groups, pad, stride"),
    ((1, 2, 11, 10), "num_output: 3 kernel_size: 3 dilation: 2 pad: 2", "dilation"),
    ((2, 3, 10, 10), "num_output: 5 kernel_size: 2 stride: 3", "stride > kernel"),
    ((3, 5, 1, 1), "num_output: 4 kernel_size: 1", "1x1 input, pointwise"),
    ((2, 3, 6, 6), "num_output: 4 kernel_size: 1", "pointwise, batch"),
    ((1, 3, 9, 12), "num_output: 2 kernel_h: 3 kernel_w: 5 stride_h: 2 stride_w: 1 pad_h: 1 "
                    "pad_w: 2", "asymmetric _h/_w"),
    ((2, 3, 7, 7), "num_output: 4 kernel_size: 3 bias_term: false", "no bias"),
]


@pytest.mark.parametrize("shape,params,what", CONV_CASES, ids=[c[2] for c in CONV_CASES])
def test_convolution_matches_reference(tmp_path, shape, params, what):
    net = make_net(tmp_path, layer("conv", "Convolution",
                                   params="convolution_param { %s }" % params), shape)
    weights = randomize(net, seed=1)["conv"]
    x = np.random.default_rng(2).standard_normal(shape)
    conv = net.layer("conv")
    g = conv.geometry
    expected = ref.convolution(x, weights[0], weights[1] if conv.bias_term else None,
                               (g.sh, g.sw), (g.ph, g.pw), (g.dh, g.dw), conv.group)
    assert_close(run(net, x)["conv"], expected)


@pytest.mark.parametrize("shape,params,out_hw", [
    # (2 - 3) / 2 + 1: C++ truncates -1 / 2 to 0, one output; Python's floor would say 0 outputs
    ((2, 3, 2, 2), "num_output: 4 kernel_size: 3 stride: 2", (1, 1)),
    # height (4 - 5) / 3 + 1 = 1, width (7 - 3) / 2 + 1 = 3
    ((1, 2, 4, 7), "num_output: 3 kernel_h: 5 kernel_w: 3 stride_h: 3 stride_w: 2", (1, 3)),
    # extent 2 * (3 - 1) + 1 = 5: (3 - 5) / 3 + 1 = 1
    ((2, 2, 3, 3), "num_output: 2 kernel_size: 3 dilation: 2 stride: 3", (1, 1)),
])
def test_kernel_overhanging_the_input_by_less_than_the_stride(tmp_path, shape, params, out_hw):
    """Caffe's output size uses C++ integer division (truncation toward zero): a window that
    overhangs the input by less than the stride is one output, reading zeros beyond the image."""
    net = make_net(tmp_path, layer("conv", "Convolution",
                                   params="convolution_param { %s }" % params), shape)
    weights = randomize(net, seed=11)["conv"]
    conv = net.layer("conv")
    assert net.blob_shapes["conv"] == (shape[0], conv.num_output) + out_hw
    x = np.random.default_rng(12).standard_normal(shape)
    g = conv.geometry
    args = dict(stride=(g.sh, g.sw), pad=(g.ph, g.pw), dilation=(g.dh, g.dw), group=conv.group)
    assert_close(run(net, x)["conv"], ref.convolution(x, weights[0], weights[1], **args))
    # backward-data against the transpose of the float64 map (row k: the k-th unit image's output)
    dy = np.random.default_rng(13).standard_normal((shape[0], conv.num_output) + out_hw)
    units = np.eye(int(np.prod(shape[1:]))).reshape((-1,) + shape[1:])
    linear = ref.convolution(units, weights[0], None, **args).reshape(len(units), -1)
    want = (dy.reshape(shape[0], -1) @ linear.T).reshape(shape)
    assert_close(net.backward({"conv": dy.astype(np.float32)})["data"], want)


DECONV_CASES = [
    ((2, 4, 5, 5), "num_output: 3 kernel_size: 4 stride: 2 pad: 1", "upsampling"),
    ((1, 4, 3, 4), "num_output: 4 kernel_size: 3 group: 2 dilation: 2", "groups, dilation"),
]


@pytest.mark.parametrize("shape,params,what", DECONV_CASES, ids=[c[2] for c in DECONV_CASES])
def test_deconvolution_matches_reference(tmp_path, shape, params, what):
    net = make_net(tmp_path, layer("up", "Deconvolution",
                                   params="convolution_param { %s }" % params), shape)
    weights = randomize(net, seed=3)["up"]
    x = np.random.default_rng(4).standard_normal(shape)
    d = net.layer("up")
    g = d.geometry
    expected = ref.deconvolution(x, weights[0], weights[1], (g.sh, g.sw), (g.ph, g.pw),
                                 (g.dh, g.dw), d.group)
    assert_close(run(net, x)["up"], expected)


POOL_CASES = [
    ((2, 3, 28, 28), "MAX", "kernel_size: 3 stride: 2 pad: 1", "max ceil with pad 28->15"),
    ((1, 2, 5, 5), "MAX", "kernel_size: 2 stride: 2 pad: 1", "max last window clipped 5->3"),
    ((1, 2, 112, 112), "MAX", "kernel_size: 3 stride: 2", "max ceil 112->56"),
    ((2, 3, 7, 7), "MAX", "kernel_size: 1 stride: 2", "max kernel < stride"),
    ((2, 3, 28, 28), "AVE", "kernel_size: 3 stride: 2 pad: 1", "ave divisor with pad"),
    ((1, 2, 13, 13), "AVE", "kernel_size: 3 stride: 2", "ave ceil overhang"),
    ((2, 3, 9, 11), "AVE", "kernel_h: 3 kernel_w: 2 stride_h: 2 stride_w: 3 pad_h: 1 pad_w: 1",
     "ave asymmetric"),
    ((1, 4, 1, 1), "MAX", "kernel_size: 1", "1x1 input"),
    ((1, 2, 6, 4), "AVE", "kernel_h: 3 kernel_w: 1 stride_h: 1 stride_w: 4 pad_h: 1 pad_w: 0",
     "pad_h alone clips the width too"),
]


@pytest.mark.parametrize("shape,method,params,what", POOL_CASES, ids=[c[3] for c in POOL_CASES])
def test_pooling_matches_reference(tmp_path, shape, method, params, what):
    net = make_net(tmp_path, layer("pool", "Pooling",
                                   params="pooling_param { pool: %s %s }" % (method, params)),
                   shape)
    x = np.random.default_rng(5).standard_normal(shape)
    p = net.layer("pool")
    expected = ref.pooling(x, method, p.kernel, p.pad, p.stride)
    assert_close(run(net, x)["pool"], expected)


def test_global_average_pooling_is_the_plane_mean(tmp_path):
    net = make_net(tmp_path, layer("gap", "Pooling",
                                   params="pooling_param { pool: AVE global_pooling: true }"),
                   (2, 3, 7, 5))
    x = np.random.default_rng(6).standard_normal((2, 3, 7, 5))
    out = run(net, x)["gap"]
    assert out.shape == (2, 3, 1, 1)
    assert_close(out[:, :, 0, 0], x.mean(axis=(2, 3)))


def test_max_pooling_first_maximum_wins_and_argmax_top(tmp_path):
    net = make_net(tmp_path, layer("pool", "Pooling", top=["pool", "mask"],
                                   params="pooling_param { pool: MAX kernel_size: 2 stride: 2 }"),
                   (1, 1, 2, 2))
    out = run(net, np.ones((1, 1, 2, 2)))
    assert out["pool"][0, 0, 0, 0] == 1
    assert out["mask"][0, 0, 0, 0] == 0  # row-major first of four equal values


@pytest.mark.parametrize("region,expected_fn", [
    ("ACROSS_CHANNELS", lambda x: ref.lrn_across(x, 5, 1e-1, 0.75, 2.0)),
    ("WITHIN_CHANNEL", lambda x: ref.lrn_within(x, 3, 1e-1, 0.75)),
])
def test_lrn_matches_reference(tmp_path, region, expected_fn):
    size = 5 if region == "ACROSS_CHANNELS" else 3
    net = make_net(tmp_path, layer("norm", "LRN", params=(
        "lrn_param { local_size: %d alpha: 0.1 beta: 0.75 k: 2 norm_region: %s }"
        % (size, region))), (2, 7, 6, 5))
    x = np.random.default_rng(7).standard_normal((2, 7, 6, 5)) * 3
    assert_close(run(net, x)["norm"], expected_fn(x))


@pytest.mark.parametrize("transpose", [False, True])
def test_inner_product_flattens_chw_in_row_major_order(tmp_path, transpose):
    net = make_net(tmp_path, layer("fc", "InnerProduct", params=(
        "inner_product_param { num_output: 7 transpose: %s }" % str(transpose).lower())),
        (3, 4, 2, 5))
    weights = randomize(net, seed=8)["fc"]
    w = weights[0].T if transpose else weights[0]
    x = np.random.default_rng(9).standard_normal((3, 4, 2, 5))
    assert_close(run(net, x)["fc"], ref.inner_product(x, w, weights[1]))


def test_inner_product_axis_2_keeps_leading_axes(tmp_path):
    net = make_net(tmp_path, layer("fc", "InnerProduct", params=(
        "inner_product_param { num_output: 3 axis: 2 }")), (2, 4, 5, 6))
    weights = randomize(net, seed=10)["fc"]
    x = np.random.default_rng(11).standard_normal((2, 4, 5, 6))
    out = run(net, x)["fc"]
    assert out.shape == (2, 4, 3)
    expected = x.reshape(8, 30) @ weights[0].T + weights[1]
    assert_close(out, expected.reshape(2, 4, 3))


NEURONS = [
    ("ReLU", "", lambda x: np.maximum(x, 0)),
    ("ReLU", "relu_param { negative_slope: 0.1 }", lambda x: np.where(x > 0, x, 0.1 * x)),
    ("Sigmoid", "", lambda x: 1 / (1 + np.exp(-x))),
    ("TanH", "", np.tanh),
    ("AbsVal", "", np.abs),
    ("Power", "power_param { power: 2 scale: 0.5 shift: 3 }", lambda x: (3 + 0.5 * x) ** 2),
    ("Dropout", "dropout_param { dropout_ratio: 0.7 }", lambda x: x),
    ("ELU", "elu_param { alpha: 0.5 }", lambda x: np.where(x > 0, x, 0.5 * np.expm1(x))),
    ("BNLL", "", lambda x: np.log1p(np.exp(x))),
    ("Exp", "exp_param { base: 2 scale: 0.5 shift: 1 }", lambda x: 2 ** (1 + 0.5 * x)),
]


@pytest.mark.parametrize("type_,params,fn", NEURONS, ids=[n[0] + str(i) for i, n in
                                                          enumerate(NEURONS)])
def test_elementwise_layers(tmp_path, type_, params, fn):
    net = make_net(tmp_path, layer("f", type_, top="out", params=params), (2, 3, 4, 5))
    x = np.random.default_rng(12).standard_normal((2, 3, 4, 5)) * 2
    assert_close(run(net, x)["out"], fn(x), rtol=2e-6 * 4)


def test_softmax_over_channels(tmp_path):
    net = make_net(tmp_path, layer("prob", "Softmax"), (2, 5, 3, 3))
    x = np.random.default_rng(13).standard_normal((2, 5, 3, 3)) * 10
    assert_close(run(net, x)["prob"], ref.softmax(x, axis=1))


def test_batchnorm_divides_stats_by_the_scale_factor_and_scale_adds_bias(tmp_path):
    body = (layer("bn", "BatchNorm", top="y", params="batch_norm_param { eps: 0.001 }")
            + layer("sc", "Scale", bottom="y", top="y", params="scale_param { bias_term: true }"))
    net = make_net(tmp_path, body, (2, 4, 3, 3))
    rng = np.random.default_rng(14)
    mean, var = rng.standard_normal(4) * 5, rng.random(4) * 10 + 0.1
    gamma, beta = rng.standard_normal(4), rng.standard_normal(4)
    net.params["bn"][0][...] = mean * 7
    net.params["bn"][1][...] = var * 7
    net.params["bn"][2][...] = 7  # moving-average normaliser
    net.params["sc"][0][...] = gamma
    net.params["sc"][1][...] = beta
    x = rng.standard_normal((2, 4, 3, 3))
    expected = (ref.batch_norm(x, mean * 7, var * 7, 7, 0.001) * gamma[None, :, None, None]
                + beta[None, :, None, None])
    assert_close(run(net, x)["y"], expected)


def test_batchnorm_zero_factor_gives_x_over_sqrt_eps(tmp_path):
    net = make_net(tmp_path, layer("bn", "BatchNorm"), (1, 2, 2, 2))
    net.params["bn"][0][...] = 5  # ignored: the factor 0 zeroes mean and variance
    x = np.random.default_rng(15).standard_normal((1, 2, 2, 2))
    assert_close(run(net, x)["bn"], x / np.sqrt(1e-5))


def test_eltwise_sum_prod_max(tmp_path):
    body = (layer("a", "Power", top="a", params="power_param { scale: 2 }")
            + layer("s", "Eltwise", bottom=["data", "a"], top="s",
                    params="eltwise_param { operation: SUM coeff: 0.5 coeff: -1 }")
            + layer("p", "Eltwise", bottom=["data", "a"], top="p",
                    params="eltwise_param { operation: PROD }")
            + layer("m", "Eltwise", bottom=["data", "a"], top="m",
                    params="eltwise_param { operation: MAX }"))
    net = make_net(tmp_path, body, (2, 3, 2, 2))
    x = np.random.default_rng(16).standard_normal((2, 3, 2, 2))
    out = run(net, x)
    assert_close(out["s"], 0.5 * x - 2 * x)
    assert_close(out["p"], 2 * x * x)
    assert_close(out["m"], np.maximum(x, 2 * x))


def test_concat_slice_flatten_reshape(tmp_path):
    body = (layer("sl", "Slice", top=["s1", "s2", "s3"],
                  params="slice_param { axis: 1 slice_point: 1 slice_point: 4 }")
            + layer("cat", "Concat", bottom=["s3", "s1"], top="cat")
            + layer("fl", "Flatten", bottom="s2", top="fl")
            + layer("rs", "Reshape", bottom="cat", top="rs",
                    params="reshape_param { shape { dim: 0 dim: -1 dim: 2 } }"))
    net = make_net(tmp_path, body, (2, 6, 2, 3))
    x = np.random.default_rng(17).standard_normal((2, 6, 2, 3)).astype(np.float32)
    out = run(net, x)
    np.testing.assert_array_equal(net.blobs["cat"], np.concatenate([x[:, 4:], x[:, :1]], 1))
    np.testing.assert_array_equal(out["fl"], x[:, 1:4].reshape(2, -1))
    np.testing.assert_array_equal(out["rs"], net.blobs["cat"].reshape(2, 9, 2))


@pytest.mark.parametrize("slope", [0.0, 0.1])
def test_relu_kernels_are_the_numpy_expressions_bit_for_bit(slope):
    """The threaded ReLU forward / gradient give what np.maximum / np.where gave, also for
    NaN, infinities and signed zeros (+0 for every x <= 0 at slope 0)."""
    from caffelrp.kernels.neuron import relu_backward, relu_forward
    special = np.array([-0.0, 0.0, -2, np.nan, 3, -np.inf, np.inf], np.float32)
    x = np.concatenate([special, np.random.default_rng(1).standard_normal(70001)
                        .astype(np.float32)])
    dy = np.random.default_rng(2).standard_normal(x.size).astype(np.float32)
    s = np.float32(slope)
    want = np.maximum(x, 0) if slope == 0 else np.where(x > 0, x, x * s)
    want_dx = np.where(x > 0, dy, np.float32(0)) if slope == 0 else np.where(x > 0, dy, dy * s)
    for threads in (1, 2):
        out, dx = np.empty_like(x), np.empty_like(x)
        relu_forward(x, slope, out, threads)
        relu_backward(x, dy, slope, dx, threads)
        # exact, with the sign of zero: the bytes are equal
        assert out.tobytes() == want.tobytes()
        assert dx.tobytes() == want_dx.tobytes()
