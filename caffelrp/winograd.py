"""Winograd F(4x4, 3x3) for 3x3 stride-1 convolutions (Lavin & Gray, CVPR 2016; the kernel and
its matrices: src/winograd.pyx).

4x fewer multiplications than im2col + GEMM, for 3x3 convolutions with stride 1 and dilation 1 (all
of VGG-16's, CaffeNet's conv3-conv5, GoogLeNet's 3x3), any pad and any number of groups (one call
per group), from 2 input channels per group and 16 output tiles of 4x4 per image on (below, im2col
+ GEMM is faster: MIN_CHANNELS, MIN_TILES): the forward and the backward-data pass (the transposed
convolution, which is the same algorithm with the flipped, transposed filter and pad 2 - pad).

Float32 error: about 20x that of the GEMM (measured against float64: 1e-5 of the largest output
of a layer, against 5e-7; tests/test_winograd.py, BENCHMARKS.md "Winograd"), well inside the
forward's 1e-4 bound on the original's logits.

On by default; ``set_winograd(False)`` or ``CAFFELRP_WINOGRAD=0`` (read at first use) switches it
off. Always off in Caffe-exact mode (caffelrp/caffe_blas.py), which must make Caffe's GEMMs in
Caffe's order.

The transformed filters (36 x K x C floats, 4x the weights) are kept on the layer, made on first
use, for the weights array they were made from (``net.params`` writes drop them, as they drop the
LRP caches).
"""
import os

import numpy as np

from . import caffe_blas, scratch
from .errors import CaffeLRPError
from .kernels.winograd import conv3x3, filters
from .threads import get_num_threads

ENV = "CAFFELRP_WINOGRAD"
# Tiles per chunk (rounded up to whole tile rows): each of a chunk's 36 products reads its
# transformed filters (K x C) once, so a chunk needs enough tiles to pay for that read (at 128,
# 64 multiply-adds per byte of filter); few enough that its transformed input and products stay
# near the cache of the thread working on it (2.3 MB for 64 channels in and out). Measured on
# VGG-16's layers at 1 thread, 64 to 512 tiles: within 10 % of each other on every layer, 4 %
# on their sum.
CHUNK_TILES = 128
# With one input channel the 36 products are outer products, slower than im2col's one GEMM
# (measured at 224x224, 32 outputs: 0.90 ms against 0.67); from 2 on Winograd is faster (3
# channels, 64 outputs, VGG-16's conv1_1: 3.7 ms against 5.9).
MIN_CHANNELS = 2
# With few tiles each product is a thin matrix-vector-like product that reads all of its
# transformed filters (4x the weights) for a handful of columns: measured at 1 thread, GoogLeNet's
# 7x7 layers at batch 1 (4 tiles) run 0.78x im2col's speed, 14x14 (16 tiles) 1.7-2.4x, CaffeNet's
# 13x13 conv3 1.3x. Counted per image, so that the method, like the rest of a forward pass, does
# not depend on the batch size (the 7x7 layers would gain at batch 8: 2.0x).
MIN_TILES = 16
INPUT, PRODUCTS = "winograd-input", "winograd-products"
CACHE = "_winograd_filters"   # the layer attribute holding the transformed filters

_enabled = None   # resolved at first use
# The LRP rules' products by Winograd too (``relevance_applies``, ``set_winograd_relevance``):
# off by default. Faster (VGG-16 batch 1: epsilon 1.7x, formula 100 beta 1 1.2x, beta 0 1.06x;
# BENCHMARKS.md), but a rule that divides by z+ or z (alpha-beta, gamma, epsilon with an eps
# small against z) amplifies Winograd's rounding, which is relative to the whole 6x6 input tile
# and not, as the GEMM's is for z+ (a sum of non-negative products), to z+ itself: where z+ is
# exactly or nearly 0 and its neighbours are not, the relevance is off by up to the largest
# relevance (measured: 0.5-1.1 of it at pad 2, against 3e-6 by the GEMM; epsilon(0.01) 2-5e-4,
# against 1e-5). Windows of zeros are set to exact zeros (``layers.conv.WinogradMap``), but
# the nearly zero ones cannot be.
RELEVANCE = False


class WinogradSettingError(CaffeLRPError, ValueError):
    """CAFFELRP_WINOGRAD or set_winograd's argument is not a switch."""


def set_winograd(on):
    """Use Winograd F(4x4,3x3) for 3x3 stride-1 convolutions (default True)."""
    global _enabled
    if not isinstance(on, (bool, np.bool_)) and on not in (0, 1):
        raise WinogradSettingError("set_winograd takes True or False, got %r" % (on,))
    _enabled = bool(on)


def set_winograd_relevance(on):
    """Run the LRP rules' products of 3x3 stride-1 convolutions by Winograd too (default
    False; see ``RELEVANCE`` for what it costs in accuracy). Needs Winograd on."""
    global RELEVANCE
    if not isinstance(on, (bool, np.bool_)) and on not in (0, 1):
        raise WinogradSettingError("set_winograd_relevance takes True or False, got %r" % (on,))
    RELEVANCE = bool(on)


def enabled():
    """Is Winograd on (ignoring Caffe-exact mode)?"""
    global _enabled
    if _enabled is None:
        value = os.environ.get(ENV, "").strip()
        if value not in ("", "0", "1"):
            raise WinogradSettingError("%s must be 0 or 1, got %r" % (ENV, value))
        _enabled = value != "0"
    return _enabled


def shape_applies(geometry, group, input_shape):
    """Does Winograd compute a convolution of this geometry (ConvGeometry) and group count on an
    input of this shape (N, C, H, W)?"""
    return args_apply(geometry.args(), group, input_shape)


def args_apply(args, group, input_shape):
    """``shape_applies`` for the geometry as ConvGeometry.args() gives it, (kh, kw, ph, pw, sh,
    sw, dh, dw)."""
    kh, kw, ph, pw, sh, sw, dh, dw = args
    if not (kh == kw == 3 and sh == sw == 1 and dh == dw == 1):
        return False
    _, c, h, w = input_shape
    oh, ow = h + 2 * ph - 2, w + 2 * pw - 2
    return group >= 1 and c % group == 0 and c // group >= MIN_CHANNELS and oh > 0 and ow > 0 and \
        ((oh + 3) // 4) * ((ow + 3) // 4) >= MIN_TILES


def applies(layer, input_shape):
    """Does this Convolution layer run through Winograd now, on an input of this shape (its
    backward-data pass likewise)?"""
    return (enabled() and not caffe_blas.active() and
            shape_applies(layer.geometry, layer.group, input_shape))


def relevance_applies(args, group, input_shape):
    """Do the LRP rules' products of a convolution of this geometry (ConvGeometry.args()) run
    on whole images through Winograd (``layers.conv.WinogradMap``)? Only when switched on
    (``set_winograd_relevance``), and where the forward would, in one group."""
    return RELEVANCE and enabled() and not caffe_blas.active() and group == 1 and \
        args_apply(args, group, input_shape)


def transformed_filters(layer, adjoint=False, part="all", weights=None):
    """(36, K, C) transformed filters of the layer's weights, or (36, C, K) of the backward-data
    pass with ``adjoint``; kept on the layer for its current weights array. ``part`` names a
    derived weight array (e.g. an LRP rule's W+) given as ``weights``."""
    source = layer.blobs[0]
    cache = getattr(layer, CACHE, None)
    if cache is None or cache["source"] is not source:
        cache = {"source": source}
        setattr(layer, CACHE, cache)
    key = (part, bool(adjoint))
    if key not in cache:
        cache[key] = transform(source if weights is None else weights, adjoint)
    return cache[key]


def transform(weights, adjoint=False):
    """The (36, K, C) transformed filters of weights (K, C, 3, 3), or (36, C, K) with
    ``adjoint`` (the backward-data pass's), a new array."""
    w = np.ascontiguousarray(weights, dtype=np.float32)
    k, c = w.shape[:2]
    u = np.empty((36, c, k) if adjoint else (36, k, c), dtype=np.float32)
    filters(w, u, adjoint, get_num_threads())
    return u


def _run(x, u, bias, ph, pw, out_shape):
    """The kernel on x (N, C, H, W) with filters u (36, K, C) into a new (N, K, OH, OW) array."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    n, c = x.shape[:2]
    k, oh, ow = out_shape[1], out_shape[2], out_shape[3]
    y = np.empty((n, k, oh, ow), dtype=np.float32)
    tiles_per_row = (ow + 3) // 4
    # from the shapes only: the chunks fix the sgemm calls, hence the bits, at any thread count
    rows = max(1, min(n * ((oh + 3) // 4), -(-CHUNK_TILES // tiles_per_row)))
    threads = get_num_threads()
    v = scratch.take(INPUT, (threads * 36 * c * rows * tiles_per_row,))
    m = scratch.take(PRODUCTS, (threads * 36 * k * rows * tiles_per_row,))
    conv3x3(x, u, bias, ph, pw, rows, y, v, m, threads)
    return y


def convolve(x, u, ph, pw, out_shape):
    """x (N, C, H, W) convolved with transformed filters u (``transform``; the adjoint ones for
    a transposed convolution, with pad 2 - pad), no bias: a new (N, K, OH, OW) array."""
    return _run(x, u, None, ph, pw, out_shape)


def _by_groups(layer, x, adjoint, bias, ph, pw, out_shape):
    """``_run`` for each of the layer's groups: group g's slice of x's channels convolved with
    its slice of the filters (kept transformed on the layer per group) into its slice of a new
    output (N, C', OH, OW). One group runs on x as it is."""
    groups = layer.group
    if groups == 1:
        return _run(x, transformed_filters(layer, adjoint), bias, ph, pw, out_shape)
    weights = layer.blobs[0]
    per_filter = weights.shape[0] // groups         # filters (outputs of the forward) per group
    cin, cout = x.shape[1] // groups, out_shape[1] // groups
    y = np.empty(out_shape, dtype=np.float32)
    for g in range(groups):
        u = transformed_filters(layer, adjoint, ("group", g),
                                weights[g * per_filter:(g + 1) * per_filter])
        y[:, g * cout:(g + 1) * cout] = _run(
            x[:, g * cin:(g + 1) * cin], u, None if bias is None else bias[g * cout:(g + 1) * cout],
            ph, pw, (out_shape[0], cout) + tuple(out_shape[2:]))
    return y


def forward(layer, x):
    """The Convolution layer's output for one bottom x (N, C, H, W)."""
    g = layer.geometry
    n, _, h, w = x.shape
    oh, ow = g.conv_out(h, w)
    bias = layer.blobs[1] if layer.bias_term else None
    return _by_groups(layer, x, False, bias, g.ph, g.pw, (n, layer.num_output, oh, ow))


def backward_data(layer, dy, shape):
    """dx (shape) of the Convolution layer for the output gradient dy: the correlation of dy with
    the flipped, transposed filter, padded by 2 - pad (a negative pad crops)."""
    g = layer.geometry
    return _by_groups(layer, dy, True, None, 2 - g.ph, 2 - g.pw, tuple(shape))
