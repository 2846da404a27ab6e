"""One target resolver for every method (issue 12): a flat list is one class per image, a nested
list sums classes per image, every wrong form is a TargetError naming the image and the number of
classes."""
import numpy as np
import pytest

from caffelrp.attribution.targets import TargetError, resolve
from caffelrp.errors import CaffeLRPError

from netutil import layer, make_net, randomize


@pytest.fixture
def net_and_x(tmp_path):
    body = (layer("conv", "Convolution",
                  params="convolution_param { num_output: 3 kernel_size: 3 }")
            + layer("relu", "ReLU", "conv", "conv")
            + layer("fc", "InnerProduct", "conv", "fc", "inner_product_param { num_output: 10 }")
            + layer("prob", "Softmax", "fc", "prob"))
    net = make_net(tmp_path, body, (2, 2, 6, 6))
    randomize(net, seed=3)
    x = np.random.default_rng(4).standard_normal((2, 2, 6, 6)).astype(np.float32)
    return net, x


def test_resolver_forms():
    scores = np.array([[0.1, 0.5, 0.2], [0.7, 0.1, 0.2]])
    assert resolve("top1", scores) == [[1], [0]]
    assert resolve(2, scores) == [[2], [2]]
    assert resolve([2, 0], scores) == [[2], [0]]
    assert resolve([[0, 2], [1]], scores) == [[0, 2], [1]]


@pytest.mark.parametrize("target,message", [
    ([1, 2, 0], "3 classes for 2 image"), ([[1]], "1 class lists for 2 image"),
    ([1, 3], "image 1: class 3 is outside 0..2 .*3 classes"),
    ([[0], [0, -1]], "image 1: class -1"), ([[0], []], "image 1 must be a non-empty"),
    ("top3", "top5"), ([[0], ["a"]], "image 1"), (1.5, "class index")])
def test_resolver_rejects_wrong_forms(target, message):
    with pytest.raises(TargetError, match=message) as info:
        resolve(target, np.zeros((2, 3)))
    assert isinstance(info.value, CaffeLRPError)


@pytest.mark.parametrize("method", ["relevance", "gradient", "smoothgrad", "ig"])
def test_flat_list_is_one_class_per_image_for_every_method(net_and_x, method):
    net, x = net_and_x

    def run(target):
        if method == "relevance":
            return net.relevance(x, rule=0, target=target)
        if method == "gradient":
            return net.gradient(x, target=target)[0]
        if method == "smoothgrad":
            return net.smoothgrad(x, target=target, samples=2)[0]
        return net.integrated_gradients(x, target=target, baseline="mean", steps=4)[0]

    both = run([3, 7])
    np.testing.assert_array_equal(both[0], run([[3], [3]])[0])
    np.testing.assert_array_equal(both[1], run([[7], [7]])[1])
    summed = run([[3, 7], [3, 7]])
    # a sum of two classes is linear in the injected seed: the two single runs add up
    np.testing.assert_allclose(summed, run(3) + run(7), rtol=1e-4,
                               atol=1e-5 * np.abs(summed).max())
    with pytest.raises(TargetError, match="3 classes for 2 image"):
        run([3, 7, 1])
    with pytest.raises(TargetError, match="image 1: class 10 .*10 classes"):
        run([3, 10])
