"""Integrated Gradients: completeness as reported vs as computed here, quadrature rules, adaptive
steps, baselines, batching, and implementation invariance (Sundararajan et al. 2017)."""
import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

import caffelrp
from caffelrp.attribution.integrated_gradients import RULES, quadrature
from conftest import REPO
from netutil import layer as L
from netutil import make_net, randomize

MEAN = np.array([104.00699, 116.66877, 122.67891], np.float32)


def he_weights(net, seed):
    """Seeded He-scaled weights, biases 0.01 (as benchmarks/bench_forward.random_layers)."""
    rng = np.random.default_rng(seed)
    for blobs in net.params.values():
        fan_in = int(np.prod(blobs[0].shape[1:])) if blobs[0].ndim > 1 else blobs[0].size
        blobs[0][...] = rng.standard_normal(blobs[0].shape) * np.sqrt(2.0 / fan_in)
        for b in blobs[1:]:
            b[...] = 0.01


@pytest.fixture(scope="module")
def caffenet():
    net = caffelrp.Net(str(REPO / "models" / "bvlc_reference_caffenet" / "deploy.prototxt"))
    he_weights(net, seed=1)
    return net


@pytest.fixture(scope="module")
def caffenet_images():
    rng = np.random.default_rng(0)
    pixels = rng.uniform(0, 255, (2, 3, 227, 227)).astype(np.float32)
    # smooth images, so that they look a little like photographs to the net
    pixels = gaussian_filter(pixels, sigma=(0, 0, 3, 3)).astype(np.float32)
    return pixels - MEAN.reshape(1, 3, 1, 1)


SMALL = (L("conv1", "Convolution", params="convolution_param { num_output: 4 kernel_size: 3 "
           "pad: 1 }")
         + L("relu1", "ReLU", "conv1", "conv1")
         + L("pool1", "Pooling", "conv1", "pool1",
             "pooling_param { pool: MAX kernel_size: 2 stride: 2 }")
         + L("norm1", "LRN", "pool1", "norm1", "lrn_param { local_size: 3 alpha: 0.5 beta: 0.75 }")
         + L("ip1", "InnerProduct", "norm1", "ip1", "inner_product_param { num_output: 8 }")
         + L("relu2", "ReLU", "ip1", "ip1")
         + L("ip2", "InnerProduct", "ip1", "ip2", "inner_product_param { num_output: 5 }")
         + L("prob", "Softmax", "ip2", "prob"))


@pytest.fixture
def small(tmp_path):
    net = make_net(tmp_path, SMALL, (2, 3, 8, 8))
    randomize(net, seed=2, scale=0.5)
    x = np.random.default_rng(3).uniform(-2, 2, (3, 3, 8, 8)).astype(np.float32)
    return net, x


def independent_error(net, x, attr, baseline, classes, output="ip2"):
    """The completeness error from forward passes done here, one image at a time."""
    errors = []
    for i in range(x.shape[0]):
        net.forward(x[i:i + 1])
        fx = net.blobs[output][0].astype(np.float64)[classes[i]].sum()
        net.forward(baseline[i:i + 1])
        fb = net.blobs[output][0].astype(np.float64)[classes[i]].sum()
        total = attr[i].sum(dtype=np.float64)
        errors.append(abs(total - (fx - fb)) / abs(fx - fb))
    return np.array(errors)


# ------------------------------------------------------------------------- quadrature
@pytest.mark.parametrize("rule", RULES)
def test_rule_weights_sum_to_one_and_integrate_linear_functions(rule):
    a, w = quadrature(rule, 7)
    assert w.sum() == pytest.approx(1.0, abs=1e-14)
    assert np.all((a >= 0) & (a <= 1))
    exact_for_linear = rule in ("riemann-midpoint", "riemann-trapezoid", "gauss-legendre")
    if exact_for_linear:
        assert (w * a).sum() == pytest.approx(0.5, abs=1e-14)


def test_gauss_legendre_is_exact_to_degree_2m_minus_1():
    a, w = quadrature("gauss-legendre", 5)
    for degree in range(10):
        assert (w * a ** degree).sum() == pytest.approx(1.0 / (degree + 1), abs=1e-13)


def test_riemann_nodes():
    assert list(quadrature("riemann-left", 4)[0]) == [0, 0.25, 0.5, 0.75]
    assert list(quadrature("riemann-right", 4)[0]) == [0.25, 0.5, 0.75, 1]
    assert list(quadrature("riemann-midpoint", 4)[0]) == [0.125, 0.375, 0.625, 0.875]
    a, w = quadrature("riemann-trapezoid", 4)
    assert list(a) == [0, 0.25, 0.5, 0.75, 1] and list(w * 4) == [0.5, 1, 1, 1, 0.5]


# ------------------------------------------------------------------------- completeness
@pytest.mark.parametrize("steps", [20, 50, 300])
def test_fixed_steps_report_the_true_completeness_error_small_net(small, steps):
    net, x = small
    attr, info = net.integrated_gradients(x, baseline="mean", steps=steps)
    assert attr.dtype == np.float32 and attr.shape == x.shape
    classes = [d["classes"] for d in info]
    expected = independent_error(net, x, attr, np.zeros_like(x), classes)
    got = np.array([d["completeness_error"] for d in info])
    # float32 forward passes at another batch size: F agrees to float32 rounding
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)
    assert all(d["steps"] == steps and d["evaluations"] == steps for d in info)


@pytest.mark.parametrize("steps", [20, 50, 300])
def test_fixed_steps_report_the_true_completeness_error_caffenet(caffenet, caffenet_images,
                                                                 steps):
    x = caffenet_images[:1]
    attr, info = caffenet.integrated_gradients(x, baseline="black", mean=MEAN, steps=steps)
    black = np.broadcast_to(-MEAN.reshape(1, 3, 1, 1), x.shape).astype(np.float32)
    expected = independent_error(caffenet, x, attr, black, [info[0]["classes"]], output="fc8")
    assert info[0]["completeness_error"] == pytest.approx(expected[0], rel=1e-4, abs=1e-6)
    caffenet.forward(black)
    assert info[0]["F_baseline"] == pytest.approx(
        float(caffenet.blobs["fc8"][0, info[0]["classes"][0]]), rel=1e-5)


def test_adaptive_steps_meet_the_tolerance_caffenet(caffenet, caffenet_images):
    x = caffenet_images
    attr, info = caffenet.integrated_gradients(x, target="top1", baseline="black", mean=MEAN,
                                               steps="auto", tol=0.05,
                                               rule="riemann-midpoint", max_steps=1024)
    black = np.broadcast_to(-MEAN.reshape(1, 3, 1, 1), x.shape).astype(np.float32)
    expected = independent_error(caffenet, x, attr, black, [d["classes"] for d in info],
                                 output="fc8")
    for d, e in zip(info, expected):
        assert d["converged"] and d["completeness_error"] <= 0.05
        assert d["completeness_error"] == pytest.approx(e, rel=1e-4, abs=1e-6)
        assert d["baseline"] == "black" and d["rule"] == "riemann-midpoint"


def test_adaptive_steps_double_until_the_tolerance_small_net(small):
    net, x = small
    attr, info = net.integrated_gradients(x, baseline="mean", steps="auto", tol=0.01,
                                          start_steps=2, rule="riemann-right")
    expected = independent_error(net, x, attr, np.zeros_like(x), [d["classes"] for d in info])
    for d, e in zip(info, expected):
        assert d["steps"] > 2 and d["steps"] & (d["steps"] - 1) == 0  # doubled from 2
        assert d["completeness_error"] <= 0.01
        assert d["completeness_error"] == pytest.approx(e, rel=1e-4, abs=1e-7)


@pytest.mark.parametrize("rule", ["riemann-left", "riemann-right", "riemann-trapezoid"])
def test_doubling_reuses_the_earlier_gradients_of_nested_rules(small, rule):
    net, x = small
    adaptive, info = net.integrated_gradients(x[:1], baseline="mean", steps="auto", tol=1e-12,
                                              start_steps=2, max_steps=32, rule=rule)
    fixed, _ = net.integrated_gradients(x[:1], baseline="mean", steps=32, rule=rule)
    assert info[0]["steps"] == 32 and not info[0]["converged"]
    assert info[0]["evaluations"] == 32 + (rule == "riemann-trapezoid")
    np.testing.assert_allclose(adaptive, fixed, rtol=1e-5, atol=1e-6 * np.abs(fixed).max())


def test_doubling_starts_over_for_midpoint_and_gauss_legendre(small):
    net, x = small
    _, info = net.integrated_gradients(x[:1], baseline="mean", steps="auto", tol=1e-12,
                                       start_steps=4, max_steps=32, rule="gauss-legendre")
    assert info[0]["steps"] == 32 and info[0]["evaluations"] == 4 + 8 + 16 + 32


def test_fixed_steps_equal_the_plain_riemann_sum(small):
    net, x = small
    base = np.random.default_rng(4).uniform(-1, 1, x.shape).astype(np.float32)
    attr, info = net.integrated_gradients(x, baseline=base, steps=10, rule="riemann-midpoint")
    for i in range(x.shape[0]):
        total = np.zeros(x.shape[1:], np.float64)
        for k in range(10):
            point = base[i] + np.float32((k + 0.5) / 10) * (x[i] - base[i])
            g, _ = net.gradient(point[None], target=info[i]["classes"])
            total += g[0]
        np.testing.assert_allclose(attr[i], (x[i] - base[i]) * total / 10, rtol=1e-4,
                                   atol=1e-5 * np.abs(attr[i]).max())


def test_gauss_legendre_beats_riemann_on_a_smooth_net(tmp_path):
    body = (L("conv1", "Convolution", params="convolution_param { num_output: 4 kernel_size: 3 }")
            + L("t", "TanH", "conv1", "t")
            + L("ip", "InnerProduct", "t", "ip", "inner_product_param { num_output: 3 }"))
    net = make_net(tmp_path, body, (1, 3, 6, 6))
    randomize(net, seed=5)
    x = np.random.default_rng(5).uniform(-1, 1, (1, 3, 6, 6)).astype(np.float32)
    _, gl = net.integrated_gradients(x, baseline="mean", steps=8, rule="gauss-legendre")
    _, left = net.integrated_gradients(x, baseline="mean", steps=8, rule="riemann-left")
    assert gl[0]["completeness_error"] < left[0]["completeness_error"] / 10


def test_linear_net_is_exact_with_one_step(tmp_path):
    body = (L("conv1", "Convolution", params="convolution_param { num_output: 4 kernel_size: 3 }")
            + L("ip", "InnerProduct", "conv1", "ip", "inner_product_param { num_output: 3 }"))
    net = make_net(tmp_path, body, (1, 3, 6, 6))
    randomize(net, seed=6)
    x = np.random.default_rng(6).uniform(-1, 1, (2, 3, 6, 6)).astype(np.float32)
    attr, info = net.integrated_gradients(x, baseline="mean", steps=1)
    g, _ = net.gradient(x)
    np.testing.assert_allclose(attr, g * x, rtol=1e-5, atol=1e-6)
    assert all(d["completeness_error"] < 1e-4 for d in info)


def test_probability_output_completeness(small):
    net, x = small
    attr, info = net.integrated_gradients(x, baseline="mean", steps=200, output="probability")
    for i, d in enumerate(info):
        p_x = net.forward(x[i:i + 1])["prob"][0, d["classes"][0]]
        p_b = net.forward(np.zeros_like(x[i:i + 1]))["prob"][0, d["classes"][0]]
        assert d["F_x"] == pytest.approx(float(p_x), rel=1e-5)
        assert d["F_baseline"] == pytest.approx(float(p_b), rel=1e-5)
        assert attr[i].sum(dtype=np.float64) == pytest.approx(d["attribution_sum"])


def test_top5_target_explains_the_sum_of_the_five_best_logits(small):
    net, x = small
    _, info = net.integrated_gradients(x, target="top5", baseline="mean", steps=8)
    logits = net.forward(x)["prob"]
    for i, d in enumerate(info):
        assert sorted(d["classes"]) == sorted(np.argsort(-logits[i])[:5].tolist())
        assert d["F_x"] == pytest.approx(float(net.blobs["ip2"][i].sum(dtype=np.float64)),
                                         rel=1e-5)


def test_memory_budget_does_not_change_the_result(small):
    net, x = small
    whole, _ = net.integrated_gradients(x, baseline="mean", steps=12)
    pieces, _ = net.integrated_gradients(x, baseline="mean", steps=12, memory_budget="1K")
    np.testing.assert_allclose(pieces, whole, rtol=1e-5, atol=1e-7 * np.abs(whole).max())


# ------------------------------------------------------------------------------ baselines
def test_black_baseline_is_minus_the_mean(small):
    net, x = small
    mean = np.array([10.0, 20.0, 30.0], np.float32)
    _, info = net.integrated_gradients(x[:1], baseline="black", mean=mean, steps=4)
    black = -mean.reshape(1, 3, 1, 1) * np.ones((1, 3, 8, 8), np.float32)
    net.forward(black)
    assert info[0]["F_baseline"] == pytest.approx(
        float(net.blobs["ip2"][0, info[0]["classes"][0]]), rel=1e-6)
    # a mean image works the same way
    image = np.random.default_rng(0).uniform(90, 130, (3, 8, 8)).astype(np.float32)
    _, info = net.integrated_gradients(x[:1], baseline="black", mean=image, steps=4)
    net.forward(-image[None])
    assert info[0]["F_baseline"] == pytest.approx(
        float(net.blobs["ip2"][0, info[0]["classes"][0]]), rel=1e-6)


def test_black_baseline_needs_the_mean(small):
    net, x = small
    with pytest.raises(ValueError, match="mean"):
        net.integrated_gradients(x, baseline="black")


def test_mean_baseline_is_zero_in_input_space(small):
    net, x = small
    a, _ = net.integrated_gradients(x, baseline="mean", steps=6)
    b, _ = net.integrated_gradients(x, baseline=0.0, steps=6)
    np.testing.assert_array_equal(a, b)


def test_blur_noise_and_array_baselines(small):
    from caffelrp.attribution.integrated_gradients import make_baseline
    net, x = small
    blurred, name = make_baseline(x, "blur", blur_sigma=2.0)
    assert name == "blur(sigma=2)"
    np.testing.assert_allclose(blurred, gaussian_filter(x.astype(np.float64), (0, 0, 2, 2),
                                                        mode="nearest"), rtol=1e-5, atol=1e-5)
    assert blurred.std() < x.std()
    noise, _ = make_baseline(x, "noise", mean=MEAN, seed=3)
    again, _ = make_baseline(x, "noise", mean=MEAN, seed=3)
    np.testing.assert_array_equal(noise, again)
    low, high = -MEAN.reshape(1, 3, 1, 1), 255 - MEAN.reshape(1, 3, 1, 1)
    assert np.all(noise >= low - 1e-3) and np.all(noise <= high + 1e-3)
    assert not np.array_equal(make_baseline(x, "noise", mean=MEAN, seed=4)[0], noise)
    per_channel, _ = make_baseline(x, np.array([1.0, 2.0, 3.0]))
    assert per_channel[:, 1].min() == per_channel[:, 1].max() == 2.0
    _, info = net.integrated_gradients(x, baseline="blur", steps=4)
    assert info[0]["baseline"].startswith("blur")
    with pytest.raises(ValueError, match="baseline"):
        net.integrated_gradients(x, baseline="white")


def test_bad_arguments(small):
    net, x = small
    with pytest.raises(ValueError, match="rule"):
        net.integrated_gradients(x, baseline="mean", rule="simpson")
    with pytest.raises(ValueError, match="steps"):
        net.integrated_gradients(x, baseline="mean", steps="many")
    with pytest.raises(ValueError, match="target"):
        net.integrated_gradients(x, baseline="mean", target=[[1], [2]])


# --------------------------------------------------------------- implementation invariance
def test_folding_batchnorm_and_scale_into_the_convolution_gives_the_same_ig(tmp_path):
    conv = 'convolution_param { num_output: 4 kernel_size: 3 pad: 1 }'
    head = (L("relu", "ReLU", "conv1", "conv1")
            + L("pool", "Pooling", "conv1", "pool", "pooling_param { pool: AVE kernel_size: 2 "
                "stride: 2 }")
            + L("ip", "InnerProduct", "pool", "ip", "inner_product_param { num_output: 3 }")
            + L("prob", "Softmax", "ip", "prob"))
    with_bn = make_net(tmp_path, L("conv1", "Convolution", params=conv)
                       + L("bn", "BatchNorm", "conv1", "conv1",
                           "batch_norm_param { use_global_stats: true eps: 0.001 }")
                       + L("sc", "Scale", "conv1", "conv1", "scale_param { bias_term: true }")
                       + head, (1, 3, 8, 8), filename="bn.prototxt")
    randomize(with_bn, seed=8)
    bn, sc = with_bn.layer("bn"), with_bn.layer("sc")
    bn.blobs[1][...] = np.abs(bn.blobs[1]) + 0.2
    bn.blobs[2][...] = 2.0
    folded = make_net(tmp_path, L("conv1", "Convolution", params=conv) + head, (1, 3, 8, 8),
                      filename="folded.prototxt")
    # fold here, in float64: y = gamma (W x + b - mu) / sqrt(var + eps) + beta
    w, b = (a.astype(np.float64) for a in with_bn.params["conv1"])
    mu = bn.blobs[0].astype(np.float64) / 2.0
    var = bn.blobs[1].astype(np.float64) / 2.0
    a = sc.blobs[0].astype(np.float64) / np.sqrt(var + np.float64(np.float32(0.001)))
    folded.params["conv1"][0][...] = w * a[:, None, None, None]
    folded.params["conv1"][1][...] = a * (b - mu) + sc.blobs[1]
    for name in ("ip",):
        for mine, theirs in zip(folded.params[name], with_bn.params[name]):
            mine[...] = theirs
    x = np.random.default_rng(9).uniform(-2, 2, (2, 3, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(folded.forward(x)["prob"], with_bn.forward(x)["prob"], rtol=1e-4,
                               atol=1e-6)
    ig_bn, info_bn = with_bn.integrated_gradients(x, target=1, baseline="mean", steps=64)
    ig_f, info_f = folded.integrated_gradients(x, target=1, baseline="mean", steps=64)
    # the same function computed in another order: equal to float32 rounding
    np.testing.assert_allclose(ig_f, ig_bn, rtol=1e-4, atol=1e-4 * np.abs(ig_bn).max())
    for p, q in zip(info_bn, info_f):
        assert p["F_x"] == pytest.approx(q["F_x"], rel=1e-4)
