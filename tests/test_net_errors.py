"""Bad prototxts and bad inputs give one clear exception naming the file, layer and problem."""
import numpy as np
import pytest

import caffelrp
from netutil import layer, make_net, prototxt

CONV = layer("conv", "Convolution", params="convolution_param { num_output: 2 kernel_size: 3 }")


def write(tmp_path, text, name="bad.prototxt"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_syntax_error_names_file_line_and_column(tmp_path):
    text = prototxt(CONV) + 'layer {\n  name: "x"\n  type: "ReLU"\n  bottom "conv"\n}\n'
    path = write(tmp_path, text)
    line = text.splitlines().index('  bottom "conv"') + 1
    with pytest.raises(caffelrp.PrototxtError, match=r"bad\.prototxt:%d:\d+" % line):
        caffelrp.Net(path)


def test_unknown_layer_type_names_layer_and_type(tmp_path):
    path = write(tmp_path, prototxt(layer("mystery", "Convolutin")))
    with pytest.raises(caffelrp.UnsupportedLayerError, match="'mystery'.*'Convolutin'"):
        caffelrp.Net(path)


def test_python_layer_is_rejected_with_module_and_class(tmp_path):
    path = write(tmp_path, prototxt(layer("roi", "Python", params=(
        'python_param { module: "roi_data_layer.layer" layer: "RoIDataLayer" }'))))
    with pytest.raises(caffelrp.UnsupportedLayerError, match="roi_data_layer.layer.*RoIDataLayer"):
        caffelrp.Net(path)


def test_training_layers_ask_for_the_deploy_prototxt(tmp_path):
    path = write(tmp_path, prototxt(CONV + layer("loss", "SoftmaxWithLoss",
                                                 bottom=["conv", "data"])))
    with pytest.raises(caffelrp.UnsupportedLayerError, match="deploy prototxt"):
        caffelrp.Net(path)


def test_layers_excluded_from_test_phase_are_dropped(tmp_path):
    body = CONV + ('layer { name: "loss" type: "SoftmaxWithLoss" bottom: "conv" bottom: "data" '
                   'top: "loss" include { phase: TRAIN } }\n')
    net = caffelrp.Net(write(tmp_path, prototxt(body)))
    assert net.layers == [("conv", "Convolution")]


def test_unknown_bottom_is_an_error(tmp_path):
    path = write(tmp_path, prototxt(layer("relu", "ReLU", bottom="nothing", top="r")))
    with pytest.raises(caffelrp.PrototxtError, match="unknown bottom blob 'nothing'.*'relu'"):
        caffelrp.Net(path)


def test_top_produced_twice_is_an_error(tmp_path):
    body = CONV + layer("conv2", "Convolution", bottom="data", top="conv",
                        params="convolution_param { num_output: 2 kernel_size: 3 }")
    with pytest.raises(caffelrp.PrototxtError, match="'conv'.*multiple sources"):
        caffelrp.Net(write(tmp_path, prototxt(body)))


def test_in_place_where_caffe_forbids_it(tmp_path):
    body = CONV + layer("abs", "AbsVal", bottom="conv", top="conv")
    with pytest.raises(caffelrp.PrototxtError, match="'abs'.*in place"):
        caffelrp.Net(write(tmp_path, prototxt(body)))


def test_missing_prototxt_is_a_clear_error(tmp_path):
    with pytest.raises(caffelrp.PrototxtError, match="nothing_here.prototxt"):
        caffelrp.Net(tmp_path / "nothing_here.prototxt")


def test_kernel_larger_than_input_names_the_layer(tmp_path):
    body = layer("conv", "Convolution", params="convolution_param { num_output: 2 kernel_size: 11 }")
    with pytest.raises(caffelrp.ShapeError, match="'conv'.*too small"):
        make_net(tmp_path, body, (1, 3, 5, 5))


@pytest.mark.parametrize("side, params, what", [
    # (5 - 11) / 1 + 1 = -5: Caffe's Blob::Reshape fails its CHECK_GE(shape, 0)
    (5, "kernel_size: 11", "output would be -5x-5, which Caffe refuses"),
    # (1 - 5) / 2 + 1 = -2 + 1 = -1 (C++ truncates -4 / 2 to -2)
    (1, "kernel_size: 5 stride: 2", "output would be -1x-1, which Caffe refuses"),
    # (2 - 3) / 1 + 1 = 0: an empty top in Caffe
    (2, "kernel_size: 3", "output would be 0x0 \\(an empty blob in Caffe"),
    # (1 - 4) / 2 + 1 = -1 + 1 = 0 in C++ (floor division would say -1)
    (1, "kernel_size: 4 stride: 2", "output would be 0x0 \\(an empty blob in Caffe"),
])
def test_convolution_output_size_caffe_cannot_use(tmp_path, side, params, what):
    body = layer("conv", "Convolution", params="convolution_param { num_output: 2 %s }" % params)
    with pytest.raises(caffelrp.ShapeError, match="layer 0 'conv'.*too small.*" + what):
        make_net(tmp_path, body, (1, 3, side, side))


def test_wrong_channel_count_to_forward(tmp_path):
    net = make_net(tmp_path, CONV, (1, 3, 9, 9))
    with pytest.raises(caffelrp.InputShapeError, match=r"\(N, 3, 9, 9\).*'conv'"):
        net.forward(np.zeros((1, 4, 9, 9), np.float32))
    net.forward(np.zeros((1, 3, 9, 9), np.float32))  # the net still works afterwards


def test_wrong_rank_to_forward(tmp_path):
    net = make_net(tmp_path, CONV, (1, 3, 9, 9))
    with pytest.raises(caffelrp.InputShapeError, match="4 axes"):
        net.forward(np.zeros((3, 9, 9), np.float32))


def test_inner_product_input_size_change_is_refused(tmp_path):
    body = layer("fc", "InnerProduct", params="inner_product_param { num_output: 3 }")
    net = make_net(tmp_path, body, (1, 3, 4, 4))
    with pytest.raises(caffelrp.InputShapeError, match="'fc'.*75 features per row.*built for 48"):
        net.forward(np.zeros((1, 3, 5, 5), np.float32))


def test_any_batch_size_and_other_spatial_sizes_for_convolutions(tmp_path):
    net = make_net(tmp_path, CONV, (1, 3, 9, 9))
    assert net.forward(np.zeros((5, 3, 9, 9), np.float32))["conv"].shape == (5, 2, 7, 7)
    assert net.forward(np.zeros((2, 3, 12, 10), np.float32))["conv"].shape == (2, 2, 10, 8)


def test_non_numeric_input(tmp_path):
    net = make_net(tmp_path, CONV, (1, 3, 9, 9))
    with pytest.raises(caffelrp.InputShapeError, match="numeric"):
        net.forward(np.array([["a"]]))
