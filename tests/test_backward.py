"""The backward pass against central finite differences of an independent float64 forward pass.

Every layer type of the forward pass is checked in a small net: the gradient caffelrp computes
(float32, Cython kernels and GEMM) for a random weighting of the net output is compared with
central differences of the same weighting computed in float64 by ``reference_forward`` (the
float64 references of tests/reference_ops.py, plus numpy for the element-wise layers). All
perturbations of one image go through the float64 forward as one batch.
"""
import numpy as np
import pytest

import caffelrp
from netutil import layer as L
from netutil import make_net, randomize
import reference_ops as ref

# float32 forward + backward against float64 differences, relative to the largest entry: the
# errors seen are <= 4e-7 (float32 rounding); 1e-5 leaves room for other BLAS builds
TOL = 1e-5
STEP = 1e-6


# ------------------------------------------------------------------ float64 forward pass
def _batch_shape(shape, n):
    return (n,) + tuple(shape[1:])


def _conv_args(layer):
    g = layer.geometry
    return dict(stride=(g.sh, g.sw), pad=(g.ph, g.pw), dilation=(g.dh, g.dw), group=layer.group)


def _broadcast(layer, x, operand, axis):
    operand = np.asarray(operand, np.float64)
    return operand.reshape((1,) * axis + operand.shape + (1,) * (x.ndim - axis - operand.ndim))


def _scale(layer, b):
    x = b[0]
    if len(b) == 2:
        axis = 0 if b[1].ndim == 0 else layer.axis
        y = x * _broadcast(layer, x, b[1], axis)
        return [y + _broadcast(layer, x, layer.blobs[0], axis) if layer.bias_term else y]
    y = x * _broadcast(layer, x, layer.blobs[0], layer.axis)
    return [y + _broadcast(layer, x, layer.blobs[1], layer.axis) if layer.bias_term else y]


def _bias(layer, b):
    x = b[0]
    if len(b) == 2:
        return [x + _broadcast(layer, x, b[1], 0 if b[1].ndim == 0 else layer.axis)]
    return [x + _broadcast(layer, x, layer.blobs[0], layer.axis)]


def _pool(layer, b):
    x = b[0]
    kernel = layer.window(*x.shape[2:])[0]
    method = "MAX" if layer.method == caffelrp.layers.pooling.MAX else "AVE"
    return [ref.pooling(x, method, kernel, layer.pad, layer.stride)]


def _ip(layer, b):
    x = b[0]
    m = int(np.prod(x.shape[:layer.axis]))
    w = np.asarray(layer.weight_matrix(), np.float64)
    y = x.reshape(m, -1) @ w.T
    if layer.bias_term:
        y = y + layer.blobs[1]
    return [y.reshape(x.shape[:layer.axis] + (layer.num_output,))]


def _lrn(layer, b):
    if layer.across_channels:
        return [ref.lrn_across(b[0], layer.size, layer.alpha, layer.beta, layer.k)]
    return [ref.lrn_within(b[0], layer.size, layer.alpha, layer.beta)]


def _power(layer, b):
    pp = layer.param.power_param
    return [(pp.shift + pp.scale * b[0]) ** pp.power]


def _exp(layer, b):
    ep = layer.param.exp_param
    base = np.e if ep.base == -1 else ep.base
    return [base ** (ep.shift + ep.scale * b[0])]


def _log(layer, b):
    lp = layer.param.log_param
    base = np.e if lp.base == -1 else lp.base
    return [np.log(lp.shift + lp.scale * b[0]) / np.log(base)]


def _prelu(layer, b):
    x = b[0]
    a = np.asarray(layer.blobs[0], np.float64)
    if not layer.channel_shared:
        a = a.reshape((1, -1) + (1,) * (x.ndim - 2))
    return [np.where(x > 0, x, a * x)]


def _eltwise(layer, b):
    op = layer.operation
    if op == caffelrp.layers.routing.EltwiseOp.SUM:
        return [sum(c * x for c, x in zip(layer.coeff, b))]
    if op == caffelrp.layers.routing.EltwiseOp.PROD:
        return [np.prod(np.stack(b), axis=0)]
    return [np.max(np.stack(b), axis=0)]


def _slice(layer, b):
    index = [slice(None)] * b[0].ndim
    out = []
    for lo, hi in zip(layer.bounds, layer.bounds[1:]):
        index[layer.axis] = slice(lo, hi)
        out.append(b[0][tuple(index)])
    return out


def _crop(layer, b):
    shape = _batch_shape(layer.top_shapes[0], b[0].shape[0])
    return [b[0][tuple(slice(s, s + n) for s, n in zip(layer.starts, shape))]]


REFERENCE = {
    "Convolution": lambda layer, b: [ref.convolution(x, layer.blobs[0], layer.blobs[1] if
                                                     layer.bias_term else None,
                                                     **_conv_args(layer)) for x in b],
    "Deconvolution": lambda layer, b: [ref.deconvolution(x, layer.blobs[0], layer.blobs[1] if
                                                         layer.bias_term else None,
                                                         **_conv_args(layer)) for x in b],
    "InnerProduct": _ip,
    "Pooling": _pool,
    "LRN": _lrn,
    "ReLU": lambda layer, b: [np.where(b[0] > 0, b[0], layer.negative_slope * b[0])],
    "PReLU": _prelu,
    "ELU": lambda layer, b: [np.where(b[0] > 0, b[0], layer.alpha * np.expm1(b[0]))],
    "Sigmoid": lambda layer, b: [1 / (1 + np.exp(-b[0]))],
    "TanH": lambda layer, b: [np.tanh(b[0])],
    "AbsVal": lambda layer, b: [np.abs(b[0])],
    "Power": _power,
    "BNLL": lambda layer, b: [np.logaddexp(0, b[0])],
    "Threshold": lambda layer, b: [(b[0] > layer.threshold).astype(np.float64)],
    "Exp": _exp,
    "Log": _log,
    "Dropout": lambda layer, b: [b[0]],
    "Split": lambda layer, b: [b[0]] * len(layer.param.top),
    "Flatten": lambda layer, b: [b[0].reshape(_batch_shape(layer.top_shapes[0], len(b[0])))],
    "Reshape": lambda layer, b: [b[0].reshape(_batch_shape(layer.top_shapes[0], len(b[0])))],
    "Concat": lambda layer, b: [np.concatenate(b, axis=layer.axis)],
    "Slice": _slice,
    "Crop": _crop,
    "Softmax": lambda layer, b: [ref.softmax(b[0], axis=layer.axis)],
    "Eltwise": _eltwise,
    "BatchNorm": lambda layer, b: [ref.batch_norm(b[0], layer.blobs[0], layer.blobs[1],
                                                  layer.blobs[2].reshape(-1)[0], layer.eps)],
    "Scale": _scale,
    "Bias": _bias,
}


def reference_forward(net, x):
    """Every blob version (by id) of a float64 forward pass of ``x`` (any batch size)."""
    graph = net.graph()
    values = [None] * len(graph)
    values[graph.inputs[0]] = np.asarray(x, np.float64)
    for step in graph.steps:
        if step.layer.is_input:
            continue
        for t, y in zip(step.tops, REFERENCE[step.layer.type](step.layer,
                                                              [values[b] for b in step.bottoms])):
            values[t] = y
    return values


def finite_difference(net, x, blob_id, weights):
    """d/dx of sum(weights * blob) for one image x (1, C, H, W), float64 central differences."""
    x0 = np.asarray(x, np.float64)[0]
    d = x0.size
    eye = np.eye(d).reshape((d,) + x0.shape)
    batch = np.concatenate([x0 + STEP * eye, x0 - STEP * eye])
    y = reference_forward(net, batch)[blob_id].reshape(2 * d, -1)
    loss = y @ np.asarray(weights, np.float64).reshape(-1)
    return ((loss[:d] - loss[d:]) / (2 * STEP)).reshape(x.shape)


def assert_close(got, expected, tol=TOL):
    scale = np.abs(expected).max()
    assert scale > 0, "the reference gradient is zero: the test checks nothing"
    err = np.abs(got.astype(np.float64) - expected).max()
    assert err <= tol * scale, "max error %.3g, relative %.3g" % (err, err / scale)


# ---------------------------------------------------------------------- layer cases
CONV = "convolution_param { num_output: %d kernel_size: %d %s }"


def conv(name, bottom, out=4, k=3, extra="", top=None):
    return L(name, "Convolution", bottom, top, CONV % (out, k, extra))


CASES = {
    "conv-pad-stride-dilation-group": ((1, 4, 8, 8), conv(
        "c", "data", 6, 3, "pad: 2 stride: 2 dilation: 2 group: 2")),
    "conv-rectangular-kernel": ((1, 3, 6, 7), L("c", "Convolution", params=(
        "convolution_param { num_output: 3 kernel_h: 2 kernel_w: 3 stride_h: 1 stride_w: 2 "
        "pad_h: 1 pad_w: 0 }"))),
    "conv-pointwise-no-bias": ((1, 3, 5, 5), conv("c", "data", 4, 1, "bias_term: false")),
    "conv-two-bottoms-slice-prod": ((1, 4, 6, 6),
                                    L("s", "Slice", "data", ["a", "b"],
                                      "slice_param { axis: 1 }")
                                    + L("c", "Convolution", ["a", "b"], ["ca", "cb"],
                                        CONV % (3, 3, "pad: 1"))
                                    + L("p", "Eltwise", ["ca", "cb"], "p",
                                        "eltwise_param { operation: PROD }")),
    "deconv-stride-pad-group": ((1, 4, 4, 4), L("d", "Deconvolution", params=CONV % (
        4, 3, "stride: 2 pad: 1 group: 2"))),
    "inner-product": ((1, 3, 4, 4), L("ip", "InnerProduct",
                                      params="inner_product_param { num_output: 5 }")),
    "inner-product-transpose": ((1, 2, 3, 3), L("ip", "InnerProduct", params=(
        "inner_product_param { num_output: 4 transpose: true }"))),
    "pool-max-pad-ceil": ((1, 2, 7, 7), L("p", "Pooling", params=(
        "pooling_param { pool: MAX kernel_size: 3 stride: 2 pad: 1 }"))),
    "pool-ave-pad-ceil": ((1, 2, 7, 7), L("p", "Pooling", params=(
        "pooling_param { pool: AVE kernel_size: 3 stride: 2 pad: 1 }"))),
    "pool-max-overlap-no-pad": ((1, 2, 8, 8), L("p", "Pooling", params=(
        "pooling_param { pool: MAX kernel_size: 3 stride: 2 }"))),
    "pool-global-ave": ((1, 3, 5, 5), L("p", "Pooling", params=(
        "pooling_param { pool: AVE global_pooling: true }"))),
    "lrn-across": ((1, 7, 3, 3), L("n", "LRN", params=(
        "lrn_param { local_size: 5 alpha: 0.8 beta: 0.75 k: 2 }"))),
    "lrn-within": ((1, 2, 6, 6), L("n", "LRN", params=(
        "lrn_param { local_size: 3 alpha: 0.9 beta: 0.75 norm_region: WITHIN_CHANNEL }"))),
    "relu-in-place-after-conv": ((1, 3, 6, 6), conv("c", "data", 4, 3)
                                 + L("r", "ReLU", "c", "c")
                                 + L("ip", "InnerProduct", "c", "ip",
                                     "inner_product_param { num_output: 3 }")),
    "relu-negative-slope": ((1, 2, 4, 4), L("r", "ReLU", params=(
        "relu_param { negative_slope: 0.1 }"))),
    "prelu-per-channel": ((1, 3, 4, 4), L("r", "PReLU")),
    "prelu-shared": ((1, 3, 4, 4), L("r", "PReLU", params="prelu_param { channel_shared: true }")),
    "elu": ((1, 2, 4, 4), L("e", "ELU", params="elu_param { alpha: 0.7 }")),
    "sigmoid": ((1, 2, 4, 4), L("s", "Sigmoid")),
    "tanh": ((1, 2, 4, 4), L("t", "TanH")),
    "absval": ((1, 2, 4, 4), L("a", "AbsVal")),
    "power-general": ((1, 2, 4, 4), L("p", "Power", params=(
        "power_param { power: 1.5 scale: 0.5 shift: 4 }"))),
    "power-square": ((1, 2, 4, 4), L("p", "Power", params=(
        "power_param { power: 2 scale: -0.7 shift: 0.3 }"))),
    "power-linear": ((1, 2, 4, 4), L("p", "Power", params="power_param { scale: 3 shift: 1 }")),
    "bnll": ((1, 2, 4, 4), L("b", "BNLL")),
    "exp-base-2": ((1, 2, 4, 4), L("e", "Exp", params=(
        "exp_param { base: 2 scale: 0.5 shift: 0.1 }"))),
    "log-base-10": ((1, 2, 4, 4), L("g", "Log", params=(
        "log_param { base: 10 scale: 0.5 shift: 5 }"))),
    "dropout": ((1, 2, 4, 4), conv("c", "data", 2, 3) + L("d", "Dropout", "c", "c")),
    "split-implicit": ((1, 2, 5, 5), conv("c", "data", 3, 3)
                       + L("t", "TanH", "c", "t")
                       + L("e", "Eltwise", ["c", "t"], "e",
                           "eltwise_param { operation: SUM coeff: 1 coeff: -2 }")),
    "split-explicit": ((1, 2, 5, 5), L("s", "Split", "data", ["s1", "s2"])
                       + L("t", "TanH", "s2", "t")
                       + L("e", "Eltwise", ["s1", "t"], "e")),
    "concat": ((1, 2, 5, 5), conv("a", "data", 2, 3, "pad: 1") + conv("b", "data", 3, 1)
               + L("cat", "Concat", ["a", "b"], "cat")),
    "slice-points-eltwise-max": ((1, 5, 4, 4), L("s", "Slice", "data", ["s1", "s2", "s3"],
                                                 "slice_param { axis: 1 slice_point: 1 "
                                                 "slice_point: 3 }")
                                 + L("m", "Eltwise", ["s2", "s3"], "m",
                                     "eltwise_param { operation: MAX }")
                                 + L("cat", "Concat", ["m", "s1"], "cat")),
    "eltwise-max-three": ((1, 3, 4, 4), conv("a", "data", 2, 1) + conv("b", "data", 2, 1)
                          + conv("c", "data", 2, 1)
                          + L("m", "Eltwise", ["a", "b", "c"], "m",
                              "eltwise_param { operation: MAX }")),
    "flatten-reshape-softmax-axis": ((1, 2, 3, 3), L("f", "Flatten")
                                     + L("ip", "InnerProduct", "f", "ip",
                                         "inner_product_param { num_output: 6 }")
                                     + L("r", "Reshape", "ip", "r",
                                         "reshape_param { shape { dim: 0 dim: -1 dim: 3 } }")
                                     + L("sm", "Softmax", "r", "sm",
                                         "softmax_param { axis: 2 }")),
    "crop": ((1, 2, 7, 7), conv("c", "data", 2, 3, "pad: 1")
             + L("p", "Pooling", "c", "p", "pooling_param { pool: AVE kernel_size: 2 stride: 2 }")
             + L("cr", "Crop", ["c", "p"], "cr", "crop_param { axis: 2 offset: 1 offset: 2 }")),
    "softmax": ((1, 2, 3, 3), L("ip", "InnerProduct",
                                params="inner_product_param { num_output: 5 }")
                + L("sm", "Softmax", "ip", "sm")),
    "batchnorm-scale-bias": ((1, 3, 5, 5), conv("c", "data", 4, 3)
                             + L("bn", "BatchNorm", "c", "c",
                                 "batch_norm_param { use_global_stats: true eps: 0.001 }")
                             + L("sc", "Scale", "c", "c", "scale_param { bias_term: true }")
                             + L("bi", "Bias", "c", "c")),
    "scale-and-bias-from-blobs": ((1, 3, 4, 4), conv("c", "data", 2, 3)
                                  + L("ip", "InnerProduct", "data", "ip",
                                      "inner_product_param { num_output: 2 }")
                                  + L("ip2", "InnerProduct", "data", "ip2",
                                      "inner_product_param { num_output: 2 }")
                                  + L("sc", "Scale", ["c", "ip"], "sc",
                                      "scale_param { axis: 0 bias_term: true }")
                                  + L("bi", "Bias", ["sc", "ip2"], "bi",
                                      "bias_param { axis: 0 }")),
}


def _prepare(tmp_path, name):
    shape, body = CASES[name]
    net = make_net(tmp_path, body, shape)
    randomize(net, seed=3, scale=0.5)
    for layer in (step.layer for step in net.graph().steps):
        if layer.type == "BatchNorm":  # variances must be positive, the normaliser non-zero
            layer.blobs[1][...] = np.abs(layer.blobs[1]) + 0.1
            layer.blobs[2][...] = 0.8
    rng = np.random.default_rng(7)
    x = rng.standard_normal(shape).astype(np.float32)
    return net, x, rng


@pytest.mark.parametrize("name", sorted(CASES))
def test_input_gradient_matches_float64_finite_differences(tmp_path, name):
    net, x, rng = _prepare(tmp_path, name)
    out = net.forward(x)
    (top,) = net.outputs
    weights = rng.standard_normal(out[top].shape).astype(np.float32)
    got = net.backward({top: weights})[net.inputs[0]]
    assert got.dtype == np.float32 and got.shape == x.shape
    assert_close(got, finite_difference(net, x, net.graph().latest(top), weights))


@pytest.mark.parametrize("batched_spatial", [256, 0])
def test_pointwise_convolution_batch_forward_and_backward_per_group(tmp_path, monkeypatch,
                                                                     batched_spatial):
    """1x1 convolutions read the images as their own column matrix (no im2col), in one product
    over the batch (small planes) or image by image (BATCHED_SPATIAL 0): with groups and a batch,
    y = W_g x_g + b and dx = W_g^T dy_g per image, checked in float64."""
    from caffelrp.layers import conv as conv_module
    monkeypatch.setattr(conv_module, "BATCHED_SPATIAL", batched_spatial)
    net = make_net(tmp_path, conv("c", "data", 6, 1, "group: 2"), (3, 4, 5, 5))
    randomize(net, seed=4, scale=0.5)
    rng = np.random.default_rng(8)
    x = rng.standard_normal((3, 4, 5, 5)).astype(np.float32)
    dy = rng.standard_normal((3, 6, 5, 5)).astype(np.float32)
    W, b = (a.astype(np.float64) for a in net.params["c"])
    Wg = W.reshape(2, 3, 2)   # (group, outputs of the group, inputs of the group)
    xg = x.astype(np.float64).reshape(3, 2, 2, 25)
    y_want = np.einsum("goc,ngcp->ngop", Wg, xg).reshape(3, 6, 5, 5) + b[None, :, None, None]
    np.testing.assert_allclose(net.forward(x)["c"], y_want, rtol=1e-5, atol=1e-5)
    dx_want = np.einsum("goc,ngop->ngcp", Wg, dy.astype(np.float64).reshape(3, 2, 3, 25))
    got = net.backward({"c": dy})["data"]
    np.testing.assert_allclose(got, dx_want.reshape(x.shape), rtol=1e-5, atol=1e-5)


def test_every_forward_layer_type_has_a_backward_case():
    covered = {t for shape, body in CASES.values() for t in
               [line.split('"')[1] for line in body.splitlines() if "type:" in line]}
    covered.add("Threshold")  # zero gradient: test_threshold_has_zero_gradient
    forward_types = set(caffelrp.layers.supported_types()) - {"Input"}
    assert forward_types - covered == set()


def test_threshold_has_zero_gradient(tmp_path):
    # a step function: zero wherever the derivative exists (Caffe has no backward for it)
    net = make_net(tmp_path, L("t", "Threshold", params="threshold_param { threshold: 0.1 }"),
                   (1, 2, 3, 3))
    x = np.random.default_rng(0).standard_normal((1, 2, 3, 3)).astype(np.float32)
    net.forward(x)
    assert not net.backward({"t": np.ones((1, 2, 3, 3), np.float32)})["data"].any()


def test_gradient_at_an_inner_blob_is_the_gradient_of_the_net_above_it(tmp_path):
    # "conv1" is rewritten in place by the ReLU; its gradient is reported at the convolution's
    # output (pycaffe's blob.diff), i.e. before the ReLU
    body = (conv("conv1", "data", 3, 3) + L("relu1", "ReLU", "conv1", "conv1")
            + L("ip", "InnerProduct", "conv1", "ip", "inner_product_param { num_output: 4 }"))
    net = make_net(tmp_path, body, (1, 2, 5, 5))
    randomize(net, seed=1)
    x = np.random.default_rng(2).standard_normal((1, 2, 5, 5)).astype(np.float32)
    net.forward(x)
    conv_out = net.layer_top_values(0)[0].astype(np.float64)
    w = np.random.default_rng(3).standard_normal((1, 4))
    grads = net.backward({"ip": w.astype(np.float32)}, blobs=["conv1"])
    ip = net.layer("ip")
    expected = ((w @ np.asarray(ip.blobs[0], np.float64)).reshape(conv_out.shape)
                * (conv_out > 0))
    assert_close(grads["conv1"], expected, tol=1e-6)


def test_batched_gradient_equals_per_image_gradients(tmp_path):
    net, _, _ = _prepare(tmp_path, "conv-pad-stride-dilation-group")
    x = np.random.default_rng(5).standard_normal((5, 4, 8, 8)).astype(np.float32)
    net.forward(x)
    w = np.random.default_rng(6).standard_normal(net.blobs["c"].shape).astype(np.float32)
    batched = net.backward({"c": w})["data"]
    for i in range(5):
        net.forward(x[i:i + 1])
        single = net.backward({"c": w[i:i + 1]})["data"]
        np.testing.assert_allclose(batched[i:i + 1], single, rtol=1e-5, atol=1e-6)


def _directional_check(net, x, output_id, weights, directions=6, seed=0, tol=1e-4):
    """<grad, v> against (L(x + h v) - L(x - h v)) / 2h in float64 for random directions v."""
    rng = np.random.default_rng(seed)
    v = rng.standard_normal((directions,) + x.shape[1:])
    h = 1e-7  # small enough that no ReLU or max-pooling winner changes along v
    x0 = x.astype(np.float64)
    y = reference_forward(net, np.concatenate([x0 + h * v, x0 - h * v]))[output_id]
    loss = y.reshape(2 * directions, -1) @ np.asarray(weights, np.float64).reshape(-1)
    numeric = (loss[:directions] - loss[directions:]) / (2 * h)
    net.forward(x)
    seed_blob = net.graph().name(output_id)
    grad = net.backward({seed_blob: weights})[net.inputs[0]].astype(np.float64)
    analytic = (grad.reshape(1, -1) * v.reshape(directions, -1)).sum(axis=1)
    assert np.abs(analytic - numeric).max() <= tol * np.abs(numeric).max()


@pytest.mark.slow
@pytest.mark.parametrize("model", ["smallnet", "resnet_tiny"])
def test_bundled_small_nets_directional_derivatives(model):
    from conftest import REPO
    net = caffelrp.Net(str(REPO / "models" / model / "deploy.prototxt"),
                       allow_missing_weights=True)
    randomize(net, seed=11, scale=0.3)
    for layer in (step.layer for step in net.graph().steps):
        if layer.type == "BatchNorm":
            layer.blobs[1][...] = np.abs(layer.blobs[1]) + 0.5
            layer.blobs[2][...] = 1.0
    shape = net.blob_shapes[net.inputs[0]]
    x = np.random.default_rng(4).uniform(-1, 1, shape).astype(np.float32)
    from caffelrp.attribution.backward import output_blob
    fid = output_blob(net, "logit")
    weights = np.zeros(net.graph().shape(fid), np.float32)
    weights.reshape(-1)[1] = 1
    _directional_check(net, x, fid, weights)


def test_probability_output_gradient_goes_through_the_softmax(tmp_path):
    net, x, rng = _prepare(tmp_path, "softmax")
    g, info = net.gradient(x, target=2, output="probability")
    weights = np.zeros((1, 5), np.float32)
    weights[0, 2] = 1
    assert_close(g, finite_difference(net, x, net.graph().latest("sm"), weights))
    assert info[0]["classes"] == [2]
    assert info[0]["F"] == pytest.approx(float(net.forward(x)["sm"][0, 2]), rel=1e-6)


def test_gradient_of_logit_and_targets(tmp_path):
    net, _, _ = _prepare(tmp_path, "softmax")
    x = np.random.default_rng(9).standard_normal((3, 2, 3, 3)).astype(np.float32)
    logits = net.forward(x)["sm"]  # ranking
    top2 = np.argsort(-logits, axis=1)[:, :2]
    W = np.asarray(net.layer("ip").blobs[0], np.float64)
    g1, info = net.gradient(x, target="top1")
    for i in range(3):
        assert info[i]["classes"] == [int(top2[i, 0])]
        assert_close(g1[i], W[top2[i, 0]].reshape(2, 3, 3), tol=1e-6)
    g5, info = net.gradient(x, target="top5")
    order = np.argsort(-logits, axis=1)[:, :5]
    for i in range(3):
        assert_close(g5[i], W[order[i]].sum(axis=0).reshape(2, 3, 3), tol=1e-6)
    per_image, info = net.gradient(x, target=[[0], [1, 3], [4]])
    assert [d["classes"] for d in info] == [[0], [1, 3], [4]]
    assert_close(per_image[1], (W[1] + W[3]).reshape(2, 3, 3), tol=1e-6)


def test_gradient_x_input_is_the_product(tmp_path):
    net, x, _ = _prepare(tmp_path, "relu-in-place-after-conv")
    g, _ = net.gradient(x, target=1)
    gx, info = net.gradient_x_input(x, target=1)
    np.testing.assert_array_equal(gx, g * x)
    assert info[0]["method"] == "gradient_x_input"


def test_small_memory_budget_gives_the_same_gradients(tmp_path):
    net, _, _ = _prepare(tmp_path, "relu-in-place-after-conv")
    x = np.random.default_rng(1).standard_normal((7, 3, 6, 6)).astype(np.float32)
    whole, _ = net.gradient(x, target="top1")
    # a budget below one image's needs: one image per batch
    pieces, _ = net.gradient(x, target="top1", memory_budget=1)
    np.testing.assert_allclose(pieces, whole, rtol=1e-5, atol=1e-7)


def test_smoothgrad_is_the_mean_gradient_of_seeded_noisy_copies(tmp_path):
    net, x, _ = _prepare(tmp_path, "relu-in-place-after-conv")
    x = np.concatenate([x, 2 * x])
    attr, info = net.smoothgrad(x, target=0, samples=6, noise=0.2, seed=5)
    again, _ = net.smoothgrad(x, target=0, samples=6, noise=0.2, seed=5, memory_budget=1)
    np.testing.assert_allclose(again, attr, rtol=1e-5, atol=1e-7)  # batching-independent
    for i in range(2):
        sigma = 0.2 * (x[i].max() - x[i].min())
        assert info[i]["sigma"] == pytest.approx(sigma, rel=1e-6)
        rng = np.random.default_rng([5, i])
        noisy = np.stack([x[i] + (rng.standard_normal(x.shape[1:]) * info[i]["sigma"]).astype(
            np.float32) for _ in range(6)])
        expected = net.gradient(noisy, target=0)[0].mean(axis=0)
        np.testing.assert_allclose(attr[i], expected, rtol=1e-5, atol=1e-6)
    other, _ = net.smoothgrad(x, target=0, samples=6, noise=0.2, seed=6)
    assert not np.allclose(other, attr)


def test_formula_11_relevance_is_the_logit_times_the_gradient(tmp_path):
    # LRP's gradient type (11) injects the logit and backpropagates Caffe's gradient
    net, x, _ = _prepare(tmp_path, "relu-in-place-after-conv")
    body = CASES["relu-in-place-after-conv"][1] + L("prob", "Softmax", "ip", "prob")
    net2 = make_net(tmp_path, body, (1, 3, 6, 6), filename="with_softmax.prototxt")
    for name, blobs in net.params.items():
        for mine, theirs in zip(net2.params[name], blobs):
            mine[...] = theirs
    g, info = net2.gradient(x, target="top1")
    r = net2.relevance(x, rule=11, target="top1")
    np.testing.assert_allclose(r, g * np.float32(info[0]["F"]), rtol=1e-4,
                               atol=1e-6 * np.abs(r).max())
