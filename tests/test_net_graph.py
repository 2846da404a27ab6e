"""Net.graph(): the layers in order with the blob versions they read and write (what the
backward and relevance passes walk, instead of Net's private fields)."""
import numpy as np
import pytest

from netutil import layer, make_net, randomize

BODY = (layer("conv", "Convolution", "data", "conv",
              "convolution_param { num_output: 4 kernel_size: 3 }")
        + layer("relu", "ReLU", "conv", "conv")             # in place: a new version of "conv"
        + layer("a", "InnerProduct", "conv", "a", "inner_product_param { num_output: 3 }")
        + layer("b", "InnerProduct", "conv", "b", "inner_product_param { num_output: 3 }")
        + layer("sum", "Eltwise", ["a", "b"], "sum"))


@pytest.fixture
def net(tmp_path):
    net = make_net(tmp_path, BODY, input_shape=(2, 3, 6, 6))
    randomize(net, seed=1)
    return net


def test_steps_are_the_layers_in_caffe_order_with_the_implicit_split(net):
    steps = net.graph().steps
    assert [(s.index, s.layer.name) for s in steps] == [(i, info.name)
                                                       for i, info in enumerate(net.layers)]
    assert [s.layer.type for s in steps] == ["Convolution", "ReLU", "Split", "InnerProduct",
                                             "InnerProduct", "Eltwise"]


def test_an_in_place_layer_writes_a_new_version_of_its_blob(net):
    graph = net.graph()
    conv, relu = graph.steps[0], graph.steps[1]
    assert relu.bottoms == conv.tops and relu.tops != relu.bottoms
    assert graph.versions("conv") == [conv.tops[0], relu.tops[0]]
    assert graph.latest("conv") == relu.tops[0]
    assert {graph.name(v) for v in relu.bottoms + relu.tops} == {"conv"}


def test_values_are_those_of_the_last_forward_pass_every_version_kept(net):
    graph = net.graph()
    assert graph.value(graph.inputs[0]) is None    # no forward yet
    x = np.random.default_rng(2).standard_normal((2, 3, 6, 6)).astype(np.float32)
    out = net.forward(x)
    pre, post = graph.versions("conv")
    assert (graph.value(pre) < 0).any()              # the convolution's output, before the ReLU
    np.testing.assert_array_equal(graph.value(post), np.maximum(graph.value(pre), 0))
    np.testing.assert_array_equal(graph.value(graph.outputs[0]), out["sum"])
    assert graph.shape(post) == (2, 4, 4, 4)


def test_consumers_and_unknown_blobs(net):
    graph = net.graph()
    split = graph.steps[2]
    assert graph.consumers(graph.latest("conv")) == [2]
    assert sorted(graph.consumers(t) for t in split.tops) == [[3], [4]]
    assert len(graph) == 1 + sum(len(s.tops) for s in graph.steps)
    with pytest.raises(KeyError, match="no blob named 'nope'"):
        graph.latest("nope")


def test_the_reverse_walk_visits_reached_layers_last_first_and_keeps_what_is_asked(net):
    """The one reverse pass of the gradient and relevance passes (attribution.backward)."""
    from caffelrp.attribution.backward import reverse_walk
    graph = net.graph()
    net.forward(np.ones((2, 3, 6, 6), np.float32))
    a = graph.latest("a")
    seen = []

    def visit(step, upper):
        seen.append(step.layer.name)
        # a made-up rule: twice the mean of the tops' signals (unreached tops give zeros)
        level = 2 * sum(float(u.mean()) for u in upper)
        return [np.full(graph.shape(b), level, np.float32) for b in step.bottoms]

    got = reverse_walk(net, {a: np.ones((2, 3), np.float32)}, visit, keep={graph.inputs[0], a})
    assert seen == ["a", graph.steps[2].layer.name, "relu", "conv"]   # "sum" and "b" not reached
    assert set(got) == {graph.inputs[0], a}
    np.testing.assert_array_equal(got[graph.inputs[0]], np.full((2, 3, 6, 6), 16, np.float32))
