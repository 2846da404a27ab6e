"""LRP beyond the original: the gamma, z+ and z^B rules, BatchNorm/Scale folding, Eltwise, the
conservation ledger and per-blob relevance, readable rule names.

Rules are checked against float64 numpy forms that build every product z_ij explicitly; network
behaviour against nets recomposed by hand (the folded twin of a BatchNorm net is written out as its
own prototxt, its weights folded here in float64).
"""
import numpy as np
import pytest

import caffelrp
from caffelrp.errors import UnsupportedLayerError
from caffelrp.layers.conv import conv_relevance
from caffelrp.layers.inner_product import dense_relevance
from caffelrp.layers.pooling import MAX
from caffelrp.rules import gamma, zbox, zplus
from netutil import layer, make_net, randomize
from test_lrp_rules import close, conv_forward, f32


def rel_error(actual, expected):
    expected = np.asarray(expected, np.float64)
    return np.linalg.norm(actual.astype(np.float64) - expected) / np.linalg.norm(expected)


# ------------------------------------------------------------ float64 forms of the rules
def ref_gamma_dense(a, W, b, R, g, eps, bias=True):
    """The generalised gamma rule: each output boosts the products of its own sign (z_j > 0:
    the positive ones, z_j < 0: the negative ones), the bias likewise when it takes a share."""
    z = a[:, :, None] * W.T[None]                                # (N, I, J) products z_ij
    zj = z.sum(axis=1) + (b if bias else 0)                      # the sum whose sign decides
    up = (zj > 0)[:, None, :]
    num = z + g * np.where(up, np.maximum(z, 0), np.minimum(z, 0))
    d = num.sum(axis=1)
    if bias:
        d = d + b + g * np.where(zj > 0, np.maximum(b, 0), np.minimum(b, 0))
    s = np.where(zj != 0, R / (d + eps * np.sign(d)), 0)
    return (num * s[:, None, :]).sum(axis=2)


def ref_zplus_dense(a, W, R):
    z = np.maximum(a[:, :, None] * W.T[None], 0)
    zj = z.sum(axis=1)
    s = np.where(zj > 0, R / np.where(zj > 0, zj, 1), 0)
    return (z * s[:, None, :]).sum(axis=2)


def ref_zbox_dense(a, low, high, W, b, R):
    q = (a[:, :, None] * W.T[None] - low[:, :, None] * np.maximum(W, 0).T[None]
         - high[:, :, None] * np.minimum(W, 0).T[None])
    zj = q.sum(axis=1) + np.maximum(b, 0)
    s = np.where(np.abs(zj) > 1e-12, R / np.where(np.abs(zj) > 1e-12, zj, 1), R)
    return (q * s[:, None, :]).sum(axis=2)


def ref_zbox_conv(x, low, high, W, b, R, pad, stride):
    """Every output position is one small dense z^B layer over its (zero-padded) window."""
    n, c, h, w = x.shape
    o, _, k, _ = W.shape
    _, _, oh, ow = R.shape
    padded = [np.pad(np.broadcast_to(v, x.shape), ((0, 0), (0, 0), (pad, pad), (pad, pad)))
              for v in (x, low, high)]
    out = np.zeros_like(padded[0])
    for i in range(oh):
        for j in range(ow):
            win = (slice(None), slice(None), slice(i * stride, i * stride + k),
                   slice(j * stride, j * stride + k))
            xs, ls, hs = (p[win].reshape(n, -1) for p in padded)
            out[win] += ref_zbox_dense(xs, ls, hs, W.reshape(o, -1), b, R[:, :, i, j]).reshape(
                n, c, k, k)
    return out[:, :, pad:pad + h, pad:pad + w]


def test_gamma_rule_matches_float64_form_and_reduces_to_epsilon():
    rng = np.random.default_rng(21)
    W, b, R = f32(rng.standard_normal((5, 12))), f32(rng.standard_normal(5)), f32(
        rng.standard_normal((3, 5)))
    for a in (f32(np.abs(rng.standard_normal((3, 12)))), f32(rng.standard_normal((3, 12)))):
        for g in (0.0, 0.25, 2.0):
            for bias in (True, False):
                got = dense_relevance(gamma(g, eps=1e-3, bias=bias), a, W, b, R)
                want = ref_gamma_dense(*(v.astype(np.float64) for v in (a, W, b, R)), g, 1e-3,
                                       bias)
                # float32 GEMMs; without the bias and g = 0 the denominator is a plain sum of
                # mixed-sign products (measured 2.3e-5 relative there)
                assert close(got, want, rtol=1e-4), (g, bias)
    np.testing.assert_allclose(dense_relevance(gamma(0.0, eps=0.5), a, W, b, R),
                               dense_relevance(caffelrp.rules.epsilon(0.5), a, W, b, R), rtol=1e-5,
                               atol=1e-6)


def test_gamma_denominator_keeps_the_sign_and_size_of_a_negative_output():
    """z_j < 0 with large positive products: z + gamma z+ (the 2019 form for z > 0) would be
    near 0 or of the other sign; the generalised rule divides by z + gamma z- instead, so the
    total passed on stays R_j (no bias) and every share is bounded."""
    a = f32(np.array([[1.0, 1.0]]))
    W = f32(np.array([[1.0, -1.2]]))                    # z = -0.2, z+ = 1.0: z + 0.25 z+ = 0.05
    R = f32(np.array([[1.0]]))
    got = dense_relevance(gamma(0.25, eps=0.0, bias=False), a, W, None, R)
    # by hand: d = -0.2 + 0.25 * -1.2 = -0.5, R_1 = 1 / -0.5, R_2 = -1.2 * 1.25 / -0.5
    np.testing.assert_allclose(got, [[-2.0, 3.0]], rtol=1e-6)
    assert abs(got.sum() - 1.0) < 1e-6


def test_zplus_takes_positive_contributions_without_bias_and_conserves():
    rng = np.random.default_rng(22)
    a = f32(rng.standard_normal((2, 15)))         # mixed signs: negative x with negative w count
    W, b, R = f32(rng.standard_normal((6, 15))), f32(rng.standard_normal(6) * 5), f32(
        np.abs(rng.standard_normal((2, 6))))
    got = dense_relevance(zplus(), a, W, b, R)
    want = ref_zplus_dense(a.astype(np.float64), W.astype(np.float64), R.astype(np.float64))
    assert close(got, want)
    # the bias takes no share, so every output's relevance reaches the inputs
    np.testing.assert_allclose(got.sum(axis=1), R.sum(axis=1), rtol=1e-5)


def test_zbox_dense_and_conv_match_float64_form():
    rng = np.random.default_rng(23)
    mean = np.array([104.0, 117.0, 123.0])
    x = f32(rng.uniform(0, 255, (2, 3, 7, 7)) - mean[None, :, None, None])
    low = f32(-mean.reshape(1, 3, 1, 1))
    high = f32(255 - mean.reshape(1, 3, 1, 1))
    W, b = f32(rng.standard_normal((4, 3, 3, 3)) * 0.1), f32(rng.standard_normal(4))
    for pad, stride in ((0, 1), (1, 2)):
        oh = (7 + 2 * pad - 3) // stride + 1
        R = f32(rng.standard_normal((2, 4, oh, oh)))
        got = conv_relevance(zbox(low, high), x, W, b, R, (3, 3, pad, pad, stride, stride, 1, 1))
        want = ref_zbox_conv(*(v.astype(np.float64) for v in (x, low, high, W, b, R)), pad,
                             stride)
        assert got.shape == x.shape and close(got, want), (pad, stride)
    a = x.reshape(2, -1)
    Wd, R = f32(rng.standard_normal((5, a.shape[1])) * 0.1), f32(rng.standard_normal((2, 5)))
    lo, hi = (np.broadcast_to(v, x.shape).reshape(2, -1) for v in (low, high))
    got = dense_relevance(zbox(low, high), a, Wd, b[:4].repeat(2)[:5], R, input_shape=x.shape)
    want = ref_zbox_dense(a.astype(np.float64), lo.astype(np.float64), hi.astype(np.float64),
                          Wd.astype(np.float64), b[:4].repeat(2)[:5].astype(np.float64),
                          R.astype(np.float64))
    assert close(got, want)


def test_zbox_conserves_without_bias():
    rng = np.random.default_rng(24)
    x = f32(rng.uniform(-100, 150, (1, 3, 6, 6)))
    W = f32(rng.standard_normal((5, 3, 3, 3)))
    R = f32(rng.standard_normal((1, 5, 4, 4)))
    got = conv_relevance(zbox(-110.0, 160.0), x, W, None, R, (3, 3, 0, 0, 1, 1, 1, 1))
    np.testing.assert_allclose(got.sum(dtype=np.float64), R.sum(dtype=np.float64), rtol=1e-4)


# ------------------------------------------------------------------ z^B in the network
SMALL = (layer("conv1", "Convolution", "data", "conv1",
               "convolution_param { num_output: 4 kernel_size: 3 pad: 1 }")
         + layer("relu1", "ReLU", "conv1", "conv1")
         + layer("pool1", "Pooling", "conv1", "pool1",
                 "pooling_param { pool: MAX kernel_size: 2 stride: 2 }")
         + layer("conv2", "Convolution", "pool1", "conv2",
                 "convolution_param { num_output: 6 kernel_size: 3 }")
         + layer("relu2", "ReLU", "conv2", "conv2")
         + layer("ip", "InnerProduct", "conv2", "ip", "inner_product_param { num_output: 5 }")
         + layer("prob", "Softmax", "ip", "prob"))


def small_net(tmp_path, seed=31, zero_bias=False):
    net = make_net(tmp_path, SMALL, input_shape=(2, 3, 10, 10))
    randomize(net, seed=seed, scale=0.2)
    if zero_bias:
        for blobs in net.params.values():
            blobs[1][...] = 0
    x = f32(np.random.default_rng(seed + 1).uniform(-120, 130, (2, 3, 10, 10)))
    return net, x


def test_zb_formula_types_apply_the_bounds_to_the_first_layer(tmp_path):
    """Type 8: z^B on conv1 (it reads the input) with bounds -mean, 255 - mean, the relevance
    arriving at conv1's top recomposed from the ledger of the same pass."""
    net, x = small_net(tmp_path)
    mean = np.array([104.0, 117.0, 123.0], np.float32)
    with pytest.raises(ValueError, match="mean="):
        net.relevance(x, rule=8)
    got = net.relevance_details(x, rule=8, eps=0.1, mean=mean)
    assert [row.rule for row in got.ledger if row.type == "Convolution"] == [
        "epsilon(0.1)", "zbox"]
    r_conv1 = got.blobs["conv1"]
    low, high = -mean.reshape(1, 3, 1, 1), 255 - mean.reshape(1, 3, 1, 1)
    p = net.params["conv1"]
    want = ref_zbox_conv(x.astype(np.float64), low, high, p[0].astype(np.float64),
                         p[1].astype(np.float64), r_conv1.astype(np.float64), 1, 1)
    assert close(got.input, want)
    # the readable name and explicit bounds give the same pass
    np.testing.assert_array_equal(
        net.relevance(x, rule="epsilon-zb", eps=0.1, bounds=(low, high)), got.input)


# --------------------------------------------------------- conservation of whole networks
@pytest.mark.parametrize("rule,kwargs", [(0, dict(eps=1e-9)), (2, dict(beta=0.0)),
                                         (2, dict(beta=1.0)), ("zplus", {})])
def test_whole_net_conserves_without_biases(tmp_path, rule, kwargs):
    """Zero biases, no stabiliser (or alpha-beta / z+): the input receives exactly the injected
    relevance (1e-4 relative, float32 sums over ~600 products per output)."""
    net, x = small_net(tmp_path, zero_bias=True)
    res = net.relevance_details(x, rule=rule, target="top1", **kwargs)
    np.testing.assert_allclose(res.input.reshape(2, -1).sum(axis=1, dtype=np.float64),
                               res.injected, rtol=1e-4)


# ----------------------------------------------------------------------- ledger, blobs
LRN_NET = (layer("conv1", "Convolution", "data", "conv1",
                 "convolution_param { num_output: 6 kernel_size: 3 }")
           + layer("relu1", "ReLU", "conv1", "conv1")
           + layer("norm1", "LRN", "conv1", "norm1",
                   "lrn_param { local_size: 3 alpha: 0.5 beta: 0.75 }")
           + layer("ca", "Convolution", "norm1", "ca",
                   "convolution_param { num_output: 3 kernel_size: 1 }")
           + layer("cb", "Convolution", "norm1", "cb",
                   "convolution_param { num_output: 3 kernel_size: 1 }")
           + layer("cat", "Concat", ["ca", "cb"], "cat")
           + layer("ip", "InnerProduct", "cat", "ip", "inner_product_param { num_output: 4 }"))


def test_ledger_accounts_for_every_layer(tmp_path):
    net = make_net(tmp_path, LRN_NET, input_shape=(2, 2, 7, 7))
    randomize(net, seed=41, scale=0.5)
    x = f32(np.abs(np.random.default_rng(42).standard_normal((2, 2, 7, 7))))
    res = net.relevance_details(x, rule=100, eps=0.01, beta=1.0, target="top1")
    names = [row.name for row in res.ledger]
    indices = [row.index for row in res.ledger]
    assert indices == sorted(indices, reverse=True)
    assert set(names) == {lay.name for lay in net.layers}       # every layer, Split included
    by_name = {row.name: row for row in res.ledger}
    np.testing.assert_allclose(by_name["ip"].relevance_in, res.injected, rtol=1e-6)
    for row in res.ledger:
        tops, bottoms = net.layer_tops(row.index), net.layer_bottoms(row.index)
        # out is what the bottoms received, summed per image
        got = sum(res.blobs[b].reshape(2, -1).sum(axis=1, dtype=np.float64) for b in bottoms
                  if b not in tops)
        if not any(b in tops for b in bottoms):
            np.testing.assert_allclose(row.relevance_out, got, rtol=1e-6, err_msg=row.name)
    for name in ("relu1", "cat"):            # identity and slicing conserve exactly
        np.testing.assert_allclose(by_name[name].relevance_out, by_name[name].relevance_in,
                                   rtol=1e-6, err_msg=name)
    split = [row for row in res.ledger if row.type == "Split"][0]
    np.testing.assert_allclose(split.relevance_out,
                               by_name["ca"].relevance_out + by_name["cb"].relevance_out,
                               rtol=1e-5)
    # LRN's rule multiplies relevance by the activations (spec 2.3): the ledger shows creation
    lrn = by_name["norm1"]
    assert np.all(np.abs(lrn.relevance_out / lrn.relevance_in - 1) > 1e-3)
    # and the input relevance is the blob 'data' of the same pass
    np.testing.assert_array_equal(res.blobs["data"], res.input)
    np.testing.assert_array_equal(res.input, net.relevance(x, rule=100, eps=0.01, beta=1.0,
                                                           target="top1"))
    text = res.ledger_text(1)
    assert "norm1" in text and "injected" in text


def test_start_by_layer_name(tmp_path):
    net, x = small_net(tmp_path)
    np.testing.assert_array_equal(net.relevance(x, start="ip", target=2),
                                  net.relevance(x, start="highest-ip", target=2))
    with pytest.raises(ValueError, match="layer name"):
        net.relevance(x, start="nosuchlayer")


def test_layer_without_rule_is_named(tmp_path):
    body = (layer("ip1", "InnerProduct", "data", "ip1", "inner_product_param { num_output: 4 }")
            + layer("sig", "Sigmoid", "ip1", "ip1")
            + layer("ip2", "InnerProduct", "ip1", "ip2", "inner_product_param { num_output: 3 }"))
    net = make_net(tmp_path, body, input_shape=(1, 5))
    randomize(net, seed=1)
    with pytest.raises(UnsupportedLayerError, match="layer 1 'sig' of type Sigmoid"):
        net.relevance(np.ones((1, 5), np.float32), rule=0)


def test_flatten_passes_relevance_as_its_gradient(tmp_path):
    """Routing layers (here Flatten) move relevance where their backward moves the gradient: the
    net explains as the same net without them."""
    conv = layer("conv", "Convolution", "data", "conv",
                 "convolution_param { num_output: 3 kernel_size: 3 }")
    ip = "inner_product_param { num_output: 4 }"
    flat = make_net(tmp_path, conv + layer("flat", "Flatten", "conv", "flat")
                    + layer("ip", "InnerProduct", "flat", "ip", ip), input_shape=(2, 2, 5, 5),
                    filename="flat.prototxt")
    plain = make_net(tmp_path, conv + layer("ip", "InnerProduct", "conv", "ip", ip),
                     input_shape=(2, 2, 5, 5), filename="plain.prototxt")
    randomize(flat, seed=5)
    for name in ("conv", "ip"):
        for dst, src in zip(plain.params[name], flat.params[name]):
            dst[...] = src
    x = f32(np.random.default_rng(6).standard_normal((2, 2, 5, 5)))
    np.testing.assert_array_equal(flat.relevance(x, rule=0, target="top1"),
                                  plain.relevance(x, rule=0, target="top1"))


# ------------------------------------------------------------ BatchNorm / Scale / Eltwise
def residual_body(with_bn):
    """conv -> [BN -> Scale] -> ReLU -> conv -> [BN -> Scale] -> + shortcut -> ReLU -> pool -> ip.
    Without BN the convolutions carry the folded weights and a bias."""
    def conv(name, bottom, n, k, pad):
        return layer(name, "Convolution", bottom, name,
                     "convolution_param { num_output: %d kernel_size: %d pad: %d bias_term: %s }"
                     % (n, k, pad, "false" if with_bn else "true"))

    def bn(name, blob):
        if not with_bn:
            return ""
        return (layer("bn_" + name, "BatchNorm", blob, blob,
                      "batch_norm_param { use_global_stats: true }")
                + layer("sc_" + name, "Scale", blob, blob, "scale_param { bias_term: true }"))

    return (conv("c1", "data", 4, 3, 1) + bn("c1", "c1") + layer("r1", "ReLU", "c1", "c1")
            + conv("c2", "c1", 4, 3, 1) + bn("c2", "c2")
            + layer("sum", "Eltwise", ["c1", "c2"], "sum", "eltwise_param { operation: SUM }")
            + layer("r2", "ReLU", "sum", "sum")
            + layer("pool", "Pooling", "sum", "pool",
                    "pooling_param { pool: AVE kernel_size: 2 stride: 2 }")
            + layer("ip", "InnerProduct", "pool", "ip", "inner_product_param { num_output: 5 }"))


def residual_pair(tmp_path):
    """A net with BatchNorm+Scale after each convolution and its folded twin (float64 fold)."""
    bn_net = make_net(tmp_path, residual_body(True), input_shape=(2, 3, 8, 8),
                      filename="bn.prototxt")
    folded = make_net(tmp_path, residual_body(False), input_shape=(2, 3, 8, 8),
                      filename="folded.prototxt")
    rng = np.random.default_rng(51)
    for name in ("c1", "c2"):
        W = bn_net.params[name][0]
        W[...] = rng.standard_normal(W.shape) * 0.3
        mean, var, factor = bn_net.params["bn_" + name]
        mean[...] = rng.standard_normal(mean.shape)
        var[...] = rng.uniform(0.5, 2.0, var.shape) * 4
        factor[...] = 4.0                                   # stored statistics are scaled
        scale, shift = bn_net.params["sc_" + name]
        scale[...] = rng.uniform(-1.5, 1.5, scale.shape)
        shift[...] = rng.standard_normal(shift.shape)
        m, v = mean.astype(np.float64) / 4, var.astype(np.float64) / 4
        a = scale.astype(np.float64) / np.sqrt(v + 1e-5)
        folded.params[name][0][...] = W.astype(np.float64) * a[:, None, None, None]
        folded.params[name][1][...] = shift.astype(np.float64) - m * a
    for dst, src in zip(folded.params["ip"], bn_net.params["ip"]):
        src[...] = rng.standard_normal(src.shape) * 0.5
        dst[...] = src
    x = f32(np.random.default_rng(52).uniform(-120, 130, (2, 3, 8, 8)))
    return bn_net, folded, x


FOLD_RULES = [(0, dict(eps=0.01)), (2, dict(beta=1.0)), (100, dict(beta=1.0)), ("zplus", {}),
              ("gamma", dict(gamma=0.25)), (11, {}), (166, {}),
              ("epsilon-gamma-box", dict(mean=(100., 110., 120.)))]
FOLD_RULES += [(f, dict(mean=(100., 110., 120.)) if f in (6, 8, 18) else {})
               for f in caffelrp.composites.supported_formulas()
               if f not in {r for r, _ in FOLD_RULES}]


@pytest.mark.parametrize("rule,kwargs", FOLD_RULES)
def test_batchnorm_net_explains_like_its_folded_twin(tmp_path, rule, kwargs):
    bn_net, folded, x = residual_pair(tmp_path)
    np.testing.assert_allclose(bn_net.forward(x)["ip"], folded.forward(x)["ip"], rtol=1e-4,
                               atol=1e-4)
    got = bn_net.relevance(x, rule=rule, target="top1", **kwargs)
    want = folded.relevance(x, rule=rule, target="top1", **kwargs)
    # the two nets round differently (weights folded in float32 here, in float64 for the twin),
    # nothing more; gamma's W + gamma W+ doubles that rounding (measured 2.8e-5, 3.6e-5)
    assert rel_error(got, want) <= (5e-5 if rule in ("gamma", "epsilon-gamma-box") else 1e-5)


def test_batchnorm_net_has_the_gradient_of_its_folded_twin(tmp_path):
    bn_net, folded, x = residual_pair(tmp_path)
    got, _ = bn_net.gradient(x, target="top1")
    want, _ = folded.gradient(x, target="top1")
    # chained float32 BatchNorm / Scale backward vs one folded convolution: rounding only
    assert rel_error(got, want) <= 1e-5


def test_folded_net_merges_batchnorm_and_scale_into_the_convolutions(tmp_path):
    bn_net, twin, x = residual_pair(tmp_path)
    folded = bn_net.folded()
    assert [name for name, _ in folded.layers] == [name for name, _ in twin.layers]
    by_name = {step.layer.name: step.layer for step in folded.graph().steps}
    assert by_name["c1"].folded_from == ["bn_c1", "sc_c1"] and by_name["r1"].folded_from == ()
    assert by_name["c2"].index == [n for n, _ in bn_net.layers].index("c2")   # Caffe's index
    for name in ("c1", "c2"):   # float32 fold against the float64 one of the twin
        for got, want in zip(folded.params[name], twin.params[name]):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    # the net's own layers are unchanged; a net with nothing to fold is its own folded net
    assert bn_net.params["c1"][0].shape == (4, 3, 3, 3) and len(bn_net.params["c1"]) == 1
    assert twin.folded() is twin


def test_folded_net_runs_like_the_net(tmp_path):
    bn_net, _, x = residual_pair(tmp_path)
    folded = bn_net.folded()
    want = bn_net.forward(x)["ip"]
    got = folded.forward(x)["ip"]
    # one folded float32 convolution against convolution + BatchNorm + Scale: rounding only
    assert rel_error(got, want) <= 1e-5
    g_net, _ = bn_net.gradient(x, target="top1")
    g_folded, _ = folded.gradient(x, target="top1")
    # both walk the folded layers; only the activations' rounding (ReLU masks) can differ
    assert rel_error(g_net, g_folded) <= 1e-5


@pytest.mark.parametrize("rule,kwargs", FOLD_RULES)
def test_every_rule_explains_the_net_as_its_folded_net(tmp_path, rule, kwargs):
    bn_net, _, x = residual_pair(tmp_path)
    got = bn_net.relevance(x, rule=rule, target="top1", **kwargs)
    want = bn_net.folded().relevance(x, rule=rule, target="top1", **kwargs)
    # the same folded float32 weights; the activations below round differently (folded vs
    # chained BatchNorm in the forward pass), nothing more; gamma's W + gamma W+ amplifies that
    # rounding (its stabiliser is 1e-6), as for the twin above (measured 3.9e-5, 5.2e-5)
    assert rel_error(got, want) <= (1e-4 if rule in ("gamma", "epsilon-gamma-box") else 1e-5)


def test_folded_net_follows_new_weights(tmp_path):
    bn_net, _, x = residual_pair(tmp_path)
    before = bn_net.folded()
    assert bn_net.folded() is before                   # kept while the weights stay
    bn_net.params["sc_c1"][0][...] *= 2                # the Scale doubles c1's folded weights
    after = bn_net.folded()
    assert after is not before
    np.testing.assert_allclose(after.params["c1"][0], 2 * before.params["c1"][0], rtol=1e-6)


def test_eltwise_sum_under_alpha_beta_is_a_zplus_join_and_creates_no_relevance(tmp_path):
    """The folded twin (no biases: zero the shifts), alpha-beta with beta 0: the residual join
    is a linear map with unit weights under z+, alpha-beta's conservative member (issue 12), so
    R_k = x_k^+ R / sum_j x_j^+: all of R where an input is positive, nothing elsewhere."""
    _, folded, x = residual_pair(tmp_path)
    for name in ("c1", "c2", "ip"):
        folded.params[name][1][...] = 0
    res = folded.relevance_details(x, rule=2, beta=0.0, eps=0.5, target="top1")
    assert (np.abs(res.input.reshape(2, -1).sum(axis=1, dtype=np.float64))
            <= np.abs(res.injected) * (1 + 1e-5)).all()
    row = [r for r in res.ledger if r.name == "sum"][0]
    assert "zplus" in row.rule
    assert (np.abs(row.relevance_out) <= np.abs(row.relevance_in) * (1 + 1e-6)).all()
    index = {name: i for i, (name, _) in enumerate(folded.layers)}
    c2 = folded.layer_top_values(index["c2"])[0].astype(np.float64)
    r_sum = res.blobs["sum"].astype(np.float64)
    y = folded.layer_top_values(index["sum"])[0].astype(np.float64)     # relu(c1) + c2
    positive = (y - c2) + np.maximum(c2, 0)                             # relu(c1) + c2^+
    want = np.where(positive > 0, np.maximum(c2, 0) * r_sum / np.where(positive > 0, positive, 1),
                    0)
    # float32 pass vs float64 formula: rounding of one division
    np.testing.assert_allclose(res.blobs["c2"], want, rtol=1e-5, atol=1e-6)


def test_eltwise_max_gives_all_to_the_first_maximum(tmp_path):
    body = (layer("a", "Convolution", "data", "a", "convolution_param { num_output: 2 "
                  "kernel_size: 1 }")
            + layer("b", "Convolution", "data", "b", "convolution_param { num_output: 2 "
                    "kernel_size: 1 }")
            + layer("m", "Eltwise", ["a", "b"], "m", "eltwise_param { operation: MAX }")
            + layer("ip", "InnerProduct", "m", "ip", "inner_product_param { num_output: 3 }"))
    net = make_net(tmp_path, body, input_shape=(1, 2, 3, 3))
    randomize(net, seed=61)
    net.params["b"][0][...] = net.params["a"][0]       # ties everywhere in channel 0 ...
    net.params["b"][1][...] = net.params["a"][1]
    net.params["b"][1][1] += 1.0                       # ... and b wins channel 1
    x = f32(np.random.default_rng(62).standard_normal((1, 2, 3, 3)))
    res = net.relevance_details(x, rule=0, eps=0.1, target=0)
    r_m = res.blobs["m"]
    np.testing.assert_array_equal(res.blobs["a"][:, 0], r_m[:, 0])
    np.testing.assert_array_equal(res.blobs["b"][:, 0], 0)
    np.testing.assert_array_equal(res.blobs["b"][:, 1], r_m[:, 1])
    np.testing.assert_array_equal(res.blobs["a"][:, 1], 0)


def test_standalone_batchnorm_is_a_per_channel_epsilon_layer(tmp_path):
    """A BatchNorm after a ReLU cannot be folded into the convolution below it: it takes the
    convolution's rule as a per-channel map y = a x + c (epsilon: R_x = a x R / (y + eps sign))."""
    body = (layer("c", "Convolution", "data", "c", "convolution_param { num_output: 3 "
                  "kernel_size: 3 }")
            + layer("r", "ReLU", "c", "c")
            + layer("bn", "BatchNorm", "c", "c", "batch_norm_param { use_global_stats: true }")
            + layer("ip", "InnerProduct", "c", "ip", "inner_product_param { num_output: 2 }"))
    net = make_net(tmp_path, body, input_shape=(1, 2, 5, 5))
    randomize(net, seed=71)
    net.params["bn"][1][...] = np.abs(net.params["bn"][1]) + 0.5
    net.params["bn"][2][...] = 1.0
    x = f32(np.random.default_rng(72).standard_normal((1, 2, 5, 5)))
    res = net.relevance_details(x, rule=0, eps=0.1, target=1)
    row = [r for r in res.ledger if r.name == "bn"][0]
    assert "per channel" in row.rule
    mean, var, _ = (b.astype(np.float64) for b in net.params["bn"])
    a = (1 / np.sqrt(var + 1e-5)).reshape(1, 3, 1, 1)
    index = {name: i for i, (name, _) in enumerate(net.layers)}
    c_in = net.layer_top_values(index["r"])[0].astype(np.float64)     # after the ReLU
    y = (c_in - mean.reshape(1, 3, 1, 1)) * a
    # relevance arriving at the BatchNorm's top: epsilon through ip, in float64
    ip_w, ip_b = (b.astype(np.float64) for b in net.params["ip"])
    z = y.reshape(1, -1) @ ip_w.T + ip_b
    r_top = np.zeros_like(z)
    r_top[0, 1] = z[0, 1]
    r_bn_top = (y.reshape(1, -1) * ((r_top / (z + 0.1 * np.sign(z))) @ ip_w)).reshape(y.shape)
    r_bn_in = a * c_in * r_bn_top / (y + 0.1 * np.sign(y))
    np.testing.assert_allclose(row.relevance_out, [r_bn_in.sum()], rtol=1e-4)


def test_resnet_tiny_gets_heatmaps_with_every_rule():
    from pathlib import Path
    prototxt = Path(__file__).resolve().parents[1] / "models" / "resnet_tiny" / "deploy.prototxt"
    net = caffelrp.Net(str(prototxt), allow_missing_weights=True)
    rng = np.random.default_rng(81)
    for name, blobs in net.params.items():
        for b in blobs:
            b[...] = rng.standard_normal(b.shape) * 0.3
        if name.startswith("bn"):
            blobs[1][...] = np.abs(blobs[1]) + 0.5
            blobs[2][...] = 1.0
    x = f32(rng.uniform(-120, 130, (1, 3, 32, 32)))
    for rule in caffelrp.composites.supported_formulas():
        kwargs = dict(mean=(104.0, 117.0, 123.0)) if rule in (6, 8, 18, "epsilon-gamma-box") \
            else {}
        r = net.relevance(x, rule=rule, switch_layer=3, **kwargs)
        assert r.shape == x.shape and np.isfinite(r).all() and np.abs(r).sum() > 0, rule


# ------------------------------------------------------- GoogLeNet: inception routing
def test_googlenet_ledger_conserves_through_inception_routing():
    """The bundled GoogLeNet (seeded He-scaled weights, zero biases), alpha-beta with beta 0:
    every Split, Concat, max pooling, ReLU, Dropout and convolution passes on exactly what it
    receives (1e-4); only LRN and the AVE pools (the original's rules) may change the total. No
    public reference exists for GoogLeNet; this checks the graph walk on 9 inception blocks."""
    from pathlib import Path
    prototxt = Path(__file__).resolve().parents[1] / "models" / "bvlc_googlenet" / \
        "deploy.prototxt"
    net = caffelrp.Net(str(prototxt), allow_missing_weights=True)
    net.reshape([(1, 3, 224, 224)])
    rng = np.random.default_rng(91)
    for blobs in net.params.values():
        fan_in = int(np.prod(blobs[0].shape[1:]))
        blobs[0][...] = rng.standard_normal(blobs[0].shape) * np.sqrt(2.0 / fan_in)
        blobs[1][...] = 0
    x = f32(rng.uniform(-120, 130, (1, 3, 224, 224)))
    res = net.relevance_details(x, rule=2, beta=0.0, target="top5")
    kinds = set()
    for row in res.ledger:
        if row.type == "LRN" or (row.type == "Pooling" and net.layer(row.index).method != MAX):
            continue
        kinds.add(row.type)
        np.testing.assert_allclose(row.relevance_out, row.relevance_in, rtol=1e-4,
                                   err_msg="%d %s" % (row.index, row.name))
    assert {"Split", "Concat", "Pooling", "Convolution", "InnerProduct", "ReLU",
            "Dropout"} <= kinds
    assert np.isfinite(res.input).all()


def test_top5_breaks_softmax_ties_by_logit(shared_reference):
    """smallnet/scooter10: the 5th and 6th softmax outputs underflow to the same value; the
    original explained the class with the larger logit (runs.json), and so does caffelrp."""
    import json
    from pathlib import Path
    folder = shared_reference / "expected" / "smallnet" / "scooter10"
    runs = json.loads((folder / "runs.json").read_text())
    assert runs["prob_5th_equals_6th"]
    repo = Path(__file__).resolve().parents[1] / "models" / "smallnet"
    net = caffelrp.Net(str(repo / "deploy.prototxt"), str(repo / "smallnet.caffemodel"))
    x = np.load(folder / "input.npy").astype(np.float32).reshape(1, 3, 64, 64)
    _, classes = caffelrp.attribution.relevance(net, x, rule=0, target="top5",
                                                return_classes=True)
    want = runs["runs"]["f0_eps1_beta0_aux0"]["explained_classes"]
    assert [int(c) for c in classes[0]] == want
