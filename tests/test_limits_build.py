"""Geometry and sizes Caffe could not run are a ShapeError at build time (issue 16)."""
import subprocess
import sys

import numpy as np
import pytest

import caffelrp
from caffelrp.errors import CaffeLRPError, PrototxtError, ShapeError

from netutil import layer, make_net, prototxt
from test_kernel_bounds import subprocess_env


@pytest.mark.parametrize("params, what", [
    ("pooling_param { pool: AVE kernel_size: 1073741825 pad: 1073741824 stride: 1073741823 }",
     "2 \\* pad"),
    ("pooling_param { pool: MAX kernel_size: 3 stride: 2147483648 }", "stride = 2147483648"),
    ("pooling_param { pool: MAX kernel_size: 3 stride: 4294967295 }", "stride = 4294967295"),
    ("pooling_param { pool: AVE kernel_size: 4294967295 pad: 2147483650 }", "kernel_size"),
])
def test_pooling_geometry_caffe_cannot_run(tmp_path, params, what):
    with pytest.raises(ShapeError, match="layer 0 'pool'.*" + what):
        make_net(tmp_path, layer("pool", "Pooling", params=params))


def test_huge_ave_pool_relevance_does_not_crash(tmp_path):
    # the segfault, end to end in a subprocess: a ShapeError at build, no signal
    path = tmp_path / "net.prototxt"
    path.write_text(prototxt(layer("pool", "Pooling", params=(
        "pooling_param { pool: AVE kernel_size: 1073741825 pad: 1073741824 "
        "stride: 1073741823 }")) + layer("ip", "InnerProduct", "pool",
                                         params="inner_product_param { num_output: 3 }"),
        (1, 1, 8, 8)))
    code = ("import caffelrp, numpy as np\n"
            "try:\n"
            "    net = caffelrp.Net(%r, allow_missing_weights=True)\n"
            "    net.relevance(np.ones((1, 1, 8, 8), np.float32), rule='epsilon', target=0)\n"
            "except caffelrp.errors.ShapeError as e:\n"
            "    print('ShapeError')\n" % str(path))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, env=subprocess_env())
    assert proc.returncode == 0 and proc.stdout.strip() == "ShapeError", (proc.returncode,
                                                                          proc.stderr[-2000:])


def test_conv_pad_near_int_max(tmp_path):
    with pytest.raises(ShapeError, match="'conv'.*2 \\* pad"):
        make_net(tmp_path, layer("conv", "Convolution", params=(
            "convolution_param { num_output: 2 kernel_size: 3 pad: 2000000000 "
            "stride: 2000000000 }")))


def test_num_output_beyond_int(tmp_path):
    with pytest.raises(ShapeError, match="'ip'.*num_output = 4000000000"):
        make_net(tmp_path, layer("ip", "InnerProduct",
                                 params="inner_product_param { num_output: 4000000000 }"))


def test_weight_blob_beyond_int_max_elements(tmp_path):
    # 2e9 outputs x 243 inputs: a weight blob Caffe refuses ("blob size exceeds INT_MAX")
    with pytest.raises(ShapeError, match="'ip'.*weight blob 0.*elements"):
        make_net(tmp_path, layer("ip", "InnerProduct",
                                 params="inner_product_param { num_output: 2000000000 }"))


@pytest.mark.parametrize("region, what", [("ACROSS_CHANNELS", "padded squares blob"),
                                           ("WITHIN_CHANNEL", "padded plane side")])
def test_lrn_local_size_whose_padding_caffe_cannot_hold(tmp_path, region, what):
    # 2^31 - 1 fits the int, but Caffe's forward pads the squares by local_size - 1
    with pytest.raises(ShapeError, match="'norm'.*local_size 2147483647: its %s" % what):
        make_net(tmp_path, layer("norm", "LRN", params="lrn_param { local_size: 2147483647 "
                                                       "norm_region: %s }" % region))


def test_lrn_local_size_uint32_max(tmp_path):
    with pytest.raises(ShapeError, match="'norm'.*local_size = 4294967295"):
        make_net(tmp_path, layer("norm", "LRN", params="lrn_param { local_size: 4294967295 }"))


def test_input_dim_beyond_int_max(tmp_path):
    path = tmp_path / "net.prototxt"
    path.write_text('input: "data"\ninput_dim: 1\ninput_dim: 3\ninput_dim: 1000000\n'
                    'input_dim: 1000000\n' + layer("relu", "ReLU"))
    with pytest.raises(ShapeError, match="input 'data'.*3000000000000 elements"):
        caffelrp.Net(str(path))


def test_top_blob_beyond_int_max(tmp_path):
    # a deconvolution blowing a small input up to more than INT_MAX elements: refused at build,
    # not a MemoryError at forward
    with pytest.raises(ShapeError, match="'up'.*top 0.*elements"):
        make_net(tmp_path, layer("up", "Deconvolution", params=(
            "convolution_param { num_output: 1 kernel_size: 1 stride: 100000 }")))


def test_log_base_one(tmp_path):
    with pytest.raises(PrototxtError, match="base 1"):
        make_net(tmp_path, layer("log", "Log", params="log_param { base: 1 }"))


def test_moderate_geometry_still_builds(tmp_path):
    net = make_net(tmp_path, layer("pool", "Pooling",
                                   params="pooling_param { pool: AVE kernel_size: 3 stride: 2 }"))
    assert net.forward(np.ones((2, 3, 9, 9), np.float32))["pool"].shape == (2, 3, 4, 4)
