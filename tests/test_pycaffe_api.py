"""The Python API as a pycaffe user expects it (issue 15): keyword forward, blobs and params as
writable numpy arrays, no silent zero weights, the forward state after IG / SmoothGrad, argument
errors as CaffeLRPError."""
import numpy as np
import pytest

import caffelrp
from caffelrp.errors import CaffeLRPError, WeightsError

from netutil import layer, prototxt, randomize

BODY = (layer("conv1", "Convolution", params="convolution_param { num_output: 4 kernel_size: 3 }")
        + layer("relu1", "ReLU", bottom="conv1", top="conv1")
        + layer("fc", "InnerProduct", bottom="conv1", params="inner_product_param { "
                                                             "num_output: 5 }")
        + layer("prob", "Softmax", bottom="fc"))


@pytest.fixture
def proto(tmp_path):
    path = tmp_path / "net.prototxt"
    path.write_text(prototxt(BODY, (2, 3, 6, 6)))
    return str(path)


@pytest.fixture
def net(proto):
    n = caffelrp.Net(proto)
    randomize(n, seed=1, scale=0.3)
    return n


def inputs(seed=0, n=2):
    return np.random.default_rng(seed).normal(0, 1, (n, 3, 6, 6)).astype(np.float32)


def test_a_net_without_weights_is_refused_unless_asked_for(proto):
    net = caffelrp.Net(proto)
    with pytest.raises(WeightsError, match="allow_missing_weights=True"):
        net.forward(inputs())
    allowed = caffelrp.Net(proto, allow_missing_weights=True)
    assert not allowed.forward(inputs())["prob"].std()      # Caffe's zero defaults: uniform


def test_default_weights_are_not_allocated_until_used(tmp_path):
    path = tmp_path / "huge.prototxt"
    path.write_text(prototxt(layer("fc", "InnerProduct", params="inner_product_param { "
                                                               "num_output: 100000 }"),
                             (1, 1, 10, 1000)))
    # 10^9 weights = 4 GB, under Caffe's 2^31-element blob limit (caffelrp.limits) but never made
    net = caffelrp.Net(str(path), allow_missing_weights=True)
    assert net.layer("fc").weight_shapes() == [(100000, 10000), (100000,)]


def test_forward_takes_pycaffe_keywords(net):
    x = inputs()
    positional = net.forward(x)["prob"].copy()
    np.testing.assert_array_equal(net.forward(data=x)["prob"], positional)
    with pytest.raises(CaffeLRPError, match="unknown input"):
        net.forward(image=x)


def test_blobs_and_params_data_are_numpy_arrays(net):
    net.forward(inputs())
    fc = net.blobs["fc"].data
    assert isinstance(fc, np.ndarray) and fc.shape == (2, 5)
    assert float(fc.mean()) == pytest.approx(float(np.asarray(net.blobs["fc"]).mean()))
    w = net.params["fc"][0].data
    assert isinstance(w, np.ndarray) and w.shape == (5, 4 * 4 * 4)


def test_writing_params_data_changes_the_weights_and_what_lrp_derived(net, proto):
    x = inputs(3)
    before = net.relevance(x, rule=2, target="top1")    # alpha-beta keeps W+ between calls
    net.params["conv1"][0].data[...] *= 2
    net.params["fc"][1] = np.full(5, 0.5, np.float32)
    fresh = caffelrp.Net(proto)
    randomize(fresh, seed=1, scale=0.3)
    fresh.params["conv1"][0][...] *= 2
    fresh.params["fc"][1][...] = 0.5
    np.testing.assert_array_equal(net.forward(x)["prob"], fresh.forward(x)["prob"])
    after = net.relevance(x, rule=2, target="top1")
    np.testing.assert_array_equal(after, fresh.relevance(x, rule=2, target="top1"))
    assert not np.array_equal(after, before)
    with pytest.raises(CaffeLRPError, match="shape"):
        net.params["fc"][1] = np.zeros(6, np.float32)


@pytest.mark.parametrize("method", ["integrated_gradients", "smoothgrad"])
def test_ig_and_smoothgrad_give_the_forward_state_back(net, method):
    mine, other = inputs(1), inputs(2)
    want = net.forward(mine)["prob"].copy()
    kwargs = {"steps": 8, "baseline": "mean"} if method == "integrated_gradients" else \
        {"samples": 5}
    getattr(net, method)(other, **kwargs)
    np.testing.assert_array_equal(net.blobs["prob"], want)
    np.testing.assert_array_equal(net.blobs["data"], mine)


@pytest.mark.parametrize("call", [
    lambda net, x: net.relevance(x, target="top7"),
    lambda net, x: net.relevance(x, start="no-such-layer"),
    lambda net, x: net.gradient(x, target=99),
    lambda net, x: net.layer("no-such-layer"),
    lambda net, x: net.forward(),
])
def test_argument_errors_are_caffelrp_errors(net, call):
    with pytest.raises(CaffeLRPError):
        call(net, inputs())
