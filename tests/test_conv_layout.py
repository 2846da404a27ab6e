"""The convolution's one column loop (caffelrp.layers.conv.ColumnLayout): how it splits a batch
into blocks, and every pass that goes through it -- Convolution forward and backward-data,
Deconvolution forward and backward-data -- against float64 restatements of caffe-format.md
§3.1/§3.2, in each way of blocking the batch (one image per block, the whole batch in one block,
blocks of two images under a small column budget).

Tolerance: float32 products over a fan-in of at most 4*3*3 = 36 terms of size ~1 against float64:
relative error 1e-5 of the largest output.
"""
import numpy as np
import pytest

import caffelrp.layers.conv as conv_module
import reference_ops as ref
from caffelrp import winograd
from caffelrp.layers.conv import ColumnLayout
from netutil import layer, make_net, randomize

RTOL = 1e-5

GEOMETRIES = [
    # (convolution_param, description)
    ("num_output: 6 kernel_size: 1", "pointwise"),
    ("num_output: 6 kernel_size: 1 group: 2", "pointwise, groups"),
    ("num_output: 6 kernel_size: 3 pad: 1 stride: 2 group: 2", "3x3 pad stride groups"),
    ("num_output: 4 kernel_h: 2 kernel_w: 3 dilation: 2 pad: 1", "rectangular, dilated"),
]

BATCH, CHANNELS, SIDE = 5, 4, 6


def blocking(monkeypatch, mode, column_rows, spatial):
    """Make ColumnLayout split a batch of 5 the way ``mode`` names."""
    if mode == "per image":
        monkeypatch.setattr(conv_module, "BATCHED_SPATIAL", 0)
    elif mode == "blocks of 2":
        monkeypatch.setattr(conv_module, "COLUMN_BUDGET", 2 * column_rows * spatial * 4 + 1)
    else:
        assert mode == "one block"


EXPECTED_BLOCKS = {"per image": [(i, 1) for i in range(5)], "one block": [(0, 5)],
                   "blocks of 2": [(0, 2), (2, 2), (4, 1)]}


def assert_close(actual, expected):
    expected = np.asarray(expected, np.float64)
    scale = max(np.abs(expected).max(), 1e-30)
    err = np.abs(np.asarray(actual, np.float64) - expected).max() / scale
    assert err <= RTOL, "max relative error %.3g > %.3g" % (err, RTOL)


@pytest.mark.parametrize("mode", sorted(EXPECTED_BLOCKS))
def test_blocks_cover_the_batch_as_the_mode_says(monkeypatch, mode):
    geometry = (3, 3, 1, 1, 1, 1, 1, 1)
    blocking(monkeypatch, mode, CHANNELS * 9, SIDE * SIDE)
    layout = ColumnLayout(geometry, (BATCH, CHANNELS, SIDE, SIDE), (SIDE, SIDE))
    assert layout.blocks() == EXPECTED_BLOCKS[mode]


def test_large_planes_go_one_image_at_a_time():
    # 17 x 17 = 289 output positions > BATCHED_SPATIAL: one product per image however many fit
    layout = ColumnLayout((3, 3, 1, 1, 1, 1, 1, 1), (3, 2, 17, 17), (17, 17))
    assert layout.blocks() == [(0, 1), (1, 1), (2, 1)]


def test_one_block_never_exceeds_the_column_budget_but_holds_one_image(monkeypatch):
    monkeypatch.setattr(conv_module, "COLUMN_BUDGET", 10)   # smaller than one image's columns
    layout = ColumnLayout((3, 3, 1, 1, 1, 1, 1, 1), (3, 2, 5, 5), (5, 5))
    assert layout.blocks() == [(0, 1), (1, 1), (2, 1)]


def _conv_args(lay):
    g = lay.geometry
    return dict(stride=(g.sh, g.sw), pad=(g.ph, g.pw), dilation=(g.dh, g.dw), group=lay.group)


@pytest.mark.parametrize("mode", sorted(EXPECTED_BLOCKS))
@pytest.mark.parametrize("params,what", GEOMETRIES, ids=[g[1] for g in GEOMETRIES])
@pytest.mark.parametrize("kind", ["Convolution", "Deconvolution"])
def test_every_pass_in_every_blocking(tmp_path, monkeypatch, kind, params, what, mode):
    shape = (BATCH, CHANNELS, SIDE, SIDE)
    net = make_net(tmp_path, layer("c", kind, params="convolution_param { %s }" % params), shape)
    weights = randomize(net, seed=7)["c"]
    lay = net.layer("c")
    top_shape = lay.top_shapes[0]
    assert not winograd.applies(lay, shape)    # the im2col path is the one under test
    # the column matrix of the forward's blocks: a convolution's input, a deconvolution's output
    col_shape = shape if kind == "Convolution" else top_shape
    out_hw = top_shape[2:] if kind == "Convolution" else shape[2:]
    blocking(monkeypatch, mode, col_shape[1] * lay.geometry.kh * lay.geometry.kw,
             out_hw[0] * out_hw[1])
    assert ColumnLayout(lay.geometry.args(), (BATCH,) + col_shape[1:], out_hw).blocks() == \
        EXPECTED_BLOCKS[mode]

    rng = np.random.default_rng(9)
    x = rng.standard_normal(shape).astype(np.float32)
    restate = ref.convolution if kind == "Convolution" else ref.deconvolution
    assert_close(net.forward(x)["c"], restate(x, weights[0], weights[1], **_conv_args(lay)))

    # backward-data: the transpose of the layer's linear part, formed in float64 as a matrix
    # whose row k is the restated forward of the k-th unit image
    dy = rng.standard_normal(top_shape).astype(np.float32)
    dx = net.backward({"c": dy})["data"]
    assert dx.shape == shape and dx.dtype == np.float32
    units = np.eye(int(np.prod(shape[1:]))).reshape((-1,) + shape[1:])
    linear = restate(units, weights[0], None, **_conv_args(lay)).reshape(len(units), -1)
    want = (dy.astype(np.float64).reshape(BATCH, -1) @ linear.T).reshape(shape)
    assert_close(dx, want)
