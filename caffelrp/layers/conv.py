"""Convolution and Deconvolution (caffe-format.md §3.1, §3.2): im2col + one GEMM per group.

Every pass goes through one loop, ``ColumnLayout``: it takes the batch in blocks of images, forms
a block's column matrix (im2col; a 1x1 stride-1 unpadded convolution's images are their own) and
turns a column-layout result back into images (col2im, or the transpose for 1x1). Small output
planes fold several images into the columns of one matrix (columns n*OH*OW + oh*OW + ow), so one
GEMM covers them; the blocks are bounded by the column budget.

``convolve`` (W im2col(x)) is a Convolution's forward and a Deconvolution's backward-data pass;
``convolve_transposed`` (col2im(W^T dy)) a Convolution's backward-data pass and a
Deconvolution's forward. Winograd (3x3 stride 1) and Caffe-exact mode dispatch before the loop.

Relevance (a Convolution's): the rule the composite gives (``caffelrp.rules``) works on the
column matrices of the same blocks -- im2col of the input (and of the images the rule asks for,
e.g. z^B's bounds), the rule per group, col2im of the result (entries in the zero padding are
dropped, as in the original). The rules never see the layout.
"""
import numpy as np

from .. import caffe_blas, scratch, winograd
from ..kernels.gemm import matmul
from ..kernels.im2col import col2im, im2col
from ..rules import LinearMap
from ..threads import get_num_threads, threads_for
from .base import Layer, register

# Upper bound of one im2col matrix, in bytes (blocks of images are sized to stay below it).
COLUMN_BUDGET = 256 << 20
# Output planes of at most one GEMM column block (256 values: 13 x 13, 14 x 14, 7 x 7) are
# multiplied for a whole block of images at once: one image's product there is a single block of
# the GEMM kernel, i.e. one thread. Larger planes keep one product per image: they already split
# into blocks for every thread, and batching them would only add transposed copies of the inputs
# and outputs (measured on GoogLeNet's 28 x 28 layers: slower at batch 8). ColumnLayout.blocks
# decides it for every pass.
BATCHED_SPATIAL = 256


class ConvGeometry:
    """Kernel, stride, pad and dilation of a 2-D convolution, parsed as Caffe parses them."""

    def __init__(self, layer, cp):
        def pair(name, repeated, h_name, w_name, default):
            has_hw = cp.HasField(h_name) or cp.HasField(w_name)
            if has_hw:
                if len(repeated):
                    raise layer.config_error("either %s or %s/%s may be given, not both"
                                             % (name, h_name, w_name))
                return getattr(cp, h_name), getattr(cp, w_name)
            if len(repeated) == 0:
                return default, default
            if len(repeated) == 1:
                return repeated[0], repeated[0]
            if len(repeated) == 2:
                return repeated[0], repeated[1]
            raise layer.config_error("%s given %d times; caffelrp runs 2-D convolutions (1 or 2 "
                                     "values)" % (name, len(repeated)))

        if cp.HasField("kernel_h") or cp.HasField("kernel_w") or len(cp.kernel_size):
            self.kh, self.kw = pair("kernel_size", cp.kernel_size, "kernel_h", "kernel_w", 0)
        else:
            raise layer.config_error("convolution_param needs kernel_size or kernel_h/kernel_w")
        self.sh, self.sw = pair("stride", cp.stride, "stride_h", "stride_w", 1)
        self.ph, self.pw = pair("pad", cp.pad, "pad_h", "pad_w", 0)
        if len(cp.dilation) > 2:
            raise layer.config_error("dilation given %d times; 2-D convolutions take 1 or 2"
                                     % len(cp.dilation))
        dil = list(cp.dilation) or [1]
        self.dh, self.dw = (dil[0], dil[0]) if len(dil) == 1 else (dil[0], dil[1])
        if min(self.kh, self.kw) <= 0:
            raise layer.config_error("filter dimensions must be nonzero, got %dx%d"
                                     % (self.kh, self.kw))
        if min(self.sh, self.sw) <= 0:
            raise layer.config_error("stride must be positive, got %dx%d" % (self.sh, self.sw))
        if min(self.dh, self.dw) <= 0:
            raise layer.config_error("dilation must be positive")

    def conv_out(self, h, w):
        """Output size of a convolution as Caffe computes it (§3.1): (in + 2 pad - extent) /
        stride + 1 with C++ integer division, which truncates toward zero. A kernel that overhangs
        the padded input by less than the stride therefore still gives one output (its window
        reads zeros there), where Python's floor division would give none."""
        def size(n, k, p, s, d):
            span = n + 2 * p - (d * (k - 1) + 1)
            return (span // s if span >= 0 else -(-span // s)) + 1
        return (size(h, self.kh, self.ph, self.sh, self.dh),
                size(w, self.kw, self.pw, self.sw, self.dw))

    def deconv_out(self, h, w):
        """Output size of a deconvolution (§3.2)."""
        oh = self.sh * (h - 1) + self.dh * (self.kh - 1) + 1 - 2 * self.ph
        ow = self.sw * (w - 1) + self.dw * (self.kw - 1) + 1 - 2 * self.pw
        return oh, ow

    def args(self):
        return (self.kh, self.kw, self.ph, self.pw, self.sh, self.sw, self.dh, self.dw)

    @property
    def is_pointwise(self):
        return is_pointwise(self.args())


def is_pointwise(geometry):
    """1x1, stride 1, no pad (``geometry`` = (kh, kw, ph, pw, sh, sw, dh, dw)): the input itself
    is the column matrix, no im2col and no col2im."""
    kh, kw, ph, pw, sh, sw = geometry[:6]
    return kh == kw == 1 and sh == sw == 1 and ph == pw == 0


def channels_as_rows(a, role):
    """(m, C, ...) float32 -> (C, m*...): the column order of a multi-image im2col matrix (image
    n's columns n*P .. (n+1)*P - 1), e.g. of a 1x1 convolution's input or a block's output. One
    image is a view; several are copied into the scratch buffer ``role``."""
    m, c = a.shape[:2]
    if m == 1:
        return a.reshape(c, -1)
    out = scratch.take(role, (c, m, a[0, 0].size))
    out[...] = a.reshape(m, c, -1).transpose(1, 0, 2)
    return out.reshape(c, -1)


def rows_as_channels(rows, out):
    """The inverse of ``channels_as_rows``: (C, m*P) into ``out`` (m, C, ...); nothing to do
    when ``rows`` is already a view of ``out`` (one image)."""
    if np.may_share_memory(rows, out):
        return
    m, c = out.shape[:2]
    out.reshape(m, c, -1)[...] = rows.reshape(c, m, -1).transpose(1, 0, 2)


def rows_buffer(out, role):
    """Where a (C, m*P) result destined for ``out`` (m, C, ...) is formed: ``out`` itself for one
    image, else the scratch buffer ``role`` (``rows_as_channels`` then moves it)."""
    m, c = out.shape[:2]
    if m == 1:
        return out.reshape(c, -1)
    return scratch.take(role, (c, m * out[0, 0].size))


def _f32(a):
    return np.ascontiguousarray(a, dtype=np.float32)


class ColumnLayout:
    """The column matrices of one convolution call, and ``run``, the loop of every pass over a
    convolution (forward, backward-data, relevance; a Deconvolution's two as their adjoints).

    ``geometry`` = (kh, kw, ph, pw, sh, sw, dh, dw), ``shape`` = (N, C, H, W) of the images the
    columns are taken from, ``out_hw`` = (OH, OW), the positions the kernel is applied at. Row
    (c*kh + u)*kw + v of a block's matrix is channel c under kernel tap (u, v); column n*OH*OW + p
    is image n of the block at output position p (caffe-format.md §3.1)."""

    def __init__(self, geometry, shape, out_hw):
        self.args = tuple(int(v) for v in geometry)
        kh, kw = self.args[:2]
        self.n, self.c, self.h, self.w = shape
        self.oh, self.ow = out_hw
        self.spatial = self.oh * self.ow
        self.rows = self.c * kh * kw
        self.pointwise = is_pointwise(self.args)

    def blocks(self):
        """Image ranges (n0, m) that one column matrix covers. Small output planes (at most
        BATCHED_SPATIAL) take as many images as COLUMN_BUDGET allows, so that one GEMM covers
        them; larger ones one image (Caffe's order), whose column and row matrices are views of
        the images wherever the layout allows (no transposed copies)."""
        step = 1
        if self.spatial <= BATCHED_SPATIAL:   # as many as fit COLUMN_BUDGET (at least one)
            step = max(1, COLUMN_BUDGET // max(self.rows * self.spatial * 4, 1))
        return [(n0, min(step, self.n - n0)) for n0 in range(0, self.n, step)]

    def run(self, out, body, images=(), rows=(), result="images"):
        """For each block of ``blocks``: the column matrices of ``images`` (arrays shaped like
        the layout's input), the row matrices (O, m*OH*OW) of ``rows`` (arrays (N, O, OH, OW), or
        None), then ``body(cols, rows, buffer)`` returns the block's result -- in column layout
        (C*kh*kw, m*OH*OW) for ``result="images"``, which ``to_images`` folds into ``out``; in
        row layout (O', m*OH*OW) for ``result="rows"``, transposed into ``out`` (N, O', ...).
        ``buffer()`` is a place to form it: a view of ``out`` where the layout allows, else a
        scratch buffer. Returns ``out``."""
        # the result may take the column buffer when no input columns are alive in it
        result_role = "conv-result" if images else scratch.COLUMNS
        for n0, m in self.blocks():
            block = out[n0:n0 + m]
            cols = [self.columns(a[n0:n0 + m], scratch.COLUMNS if j == 0 else (scratch.COLUMNS, j))
                    for j, a in enumerate(images)]
            row_blocks = [None if a is None else channels_as_rows(_f32(a[n0:n0 + m]), ("rows", j))
                          for j, a in enumerate(rows)]
            if result == "rows":
                got = body(cols, row_blocks, lambda: rows_buffer(block, "conv-out"))
                rows_as_channels(got, block)
            else:
                got = body(cols, row_blocks, lambda: self.result_buffer(block, result_role))
                self.to_images(got, block)
        return out

    def columns(self, images, role=scratch.COLUMNS):
        """The column matrix (C*kh*kw, m*OH*OW) of a block of images (m, C, H, W): im2col into
        the scratch buffer ``role``, or for a pointwise convolution the images themselves."""
        images = _f32(images)
        if self.pointwise:
            return channels_as_rows(images, role)
        col = scratch.take(role, (self.rows, images.shape[0] * self.spatial))
        im2col(images, *self.args, self.oh, self.ow, col, threads_for(col.size))
        return col

    def result_buffer(self, out, role):
        """Where a block's column-layout result destined for ``out`` (m, C, H, W) is formed:
        ``out`` itself for one image of a pointwise convolution, else a scratch buffer."""
        if self.pointwise:
            return rows_buffer(out, role)
        return scratch.take(role, (self.rows, out.shape[0] * self.spatial))

    def to_images(self, cols, out):
        """A block's column-layout result (C*kh*kw, m*OH*OW) back into images ``out``
        (m, C, H, W): col2im (each entry the sum over the windows that hold it; entries in the
        zero padding are dropped), or for a pointwise convolution the transpose."""
        if self.pointwise:
            rows_as_channels(cols, out)
        else:
            col2im(_f32(cols), out.shape[0], self.c, self.h, self.w, *self.args, self.oh,
                   self.ow, out, threads_for(out.size))


def _grouped_matmul(weights, groups, a, out, transposed=False):
    """out = W_g a_g for every group g (W_g^T a_g with ``transposed``), returned: weights (O, K)
    with O/groups rows per group, a and out split into groups along their rows alike."""
    og = weights.shape[0] // groups
    k = weights.shape[1]
    threads = get_num_threads()
    for g in range(groups):
        w = weights[g * og:(g + 1) * og]
        if transposed:
            matmul(w.T, a[g * og:(g + 1) * og], out[g * k:(g + 1) * k], threads)
        else:
            matmul(w, a[g * k:(g + 1) * k], out[g * og:(g + 1) * og], threads)
    return out


def _add_bias(y, bias):
    # over each (N, O) plane as one row: numpy's inner loop then runs over OH*OW, not OW
    n, o, h, w = y.shape
    y.reshape(n, o, h * w)[...] += bias[None, :, None]   # (a batch may be empty)


def convolve(weights, groups, geometry, x, out_hw):
    """W im2col(x) without bias, (N, O, OH, OW): weights (O, C/groups*kh*kw), x (N, C, H, W).
    A Convolution's forward, and a Deconvolution's backward-data pass (its weights read as a
    convolution's, caffe-format.md §3.2)."""
    y = np.empty((x.shape[0], weights.shape[0]) + tuple(out_hw), dtype=np.float32)
    return ColumnLayout(geometry, x.shape, out_hw).run(
        y, lambda cols, rows, buffer: _grouped_matmul(weights, groups, cols[0], buffer()),
        images=(x,), result="rows")


def convolve_transposed(weights, groups, geometry, dy, shape):
    """col2im(W^T dy), shaped ``shape`` (N, C, H, W): the adjoint of ``convolve`` for dy
    (N, O, OH, OW). A Convolution's backward-data pass, and a Deconvolution's forward."""
    return ColumnLayout(geometry, shape, dy.shape[2:]).run(
        np.empty(shape, dtype=np.float32),
        lambda cols, rows, buffer: _grouped_matmul(weights, groups, rows[0], buffer(),
                                                   transposed=True), rows=(dy,))


def conv_relevance(rule, x, W, b, R, geometry, group=1, z=None, cache=None):
    """Relevance of a convolution's input x (N, C, H, W) under ``rule``, for weights W
    (O, C/group, kh, kw), bias b (O,) or None, upper relevance R (N, O, OH, OW), ``geometry`` =
    (kh, kw, ph, pw, sh, sw, dh, dw) and z (N, O, OH, OW), the forward output, or None (the rule
    forms it); ``cache``: the layer's dict for weight parts.

    The rule works on the column matrices of the blocks of ``ColumnLayout`` (several images per
    GEMM where the layer is small: VGG-16's conv5 has 196 columns per image); the temporaries
    live in scratch buffers, consumed by col2im before the next block."""
    x = _f32(x)
    R = _f32(R)
    o = R.shape[1]
    kh, kw = geometry[0], geometry[1]
    og = o // group
    k = (x.shape[1] // group) * kh * kw
    weights = _f32(W).reshape(o, k)
    maps = [LinearMap(weights[g * og:(g + 1) * og],
                      None if b is None else b[g * og:(g + 1) * og], cache=cache,
                      key=("group", g), use_scratch=True) for g in range(group)]
    images = (x,) + tuple(np.broadcast_to(np.asarray(v, np.float32), x.shape)
                          for v in rule.aux_images(x))
    nonnegative = not (x < 0).any()    # zero padding keeps the columns so, too

    def block(cols, rows, buffer):
        (X, *aux), (r_c, z_c) = cols, rows
        if group == 1:
            return rule.conv_columns(X, maps[0], r_c, z_c, tuple(aux), kh * kw, nonnegative)
        rel = buffer()
        for g, lin in enumerate(maps):
            ins, outs = slice(g * k, (g + 1) * k), slice(g * og, (g + 1) * og)
            rel[ins] = rule.conv_columns(X[ins], lin, r_c[outs],
                                         None if z_c is None else z_c[outs],
                                         tuple(a[ins] for a in aux), kh * kw, nonnegative)
        return rel

    return ColumnLayout(geometry, x.shape, R.shape[2:]).run(np.empty_like(x), block,
                                                            images=images, rows=(R, z))


class _ConvBase(Layer):
    bottoms_range = (1, None)
    tops_range = (1, None)
    in_place_allowed = False

    def __init__(self, param, index):
        super().__init__(param, index)
        cp = param.convolution_param
        if not cp.HasField("num_output") or cp.num_output == 0:
            raise self.config_error("convolution_param.num_output must be set and positive")
        if cp.axis != 1:
            raise self.config_error("axis %d: caffelrp runs convolutions over axis 1 only" % cp.axis)
        self.num_output = cp.num_output
        self.group = cp.group
        self.bias_term = cp.bias_term
        self.geometry = ConvGeometry(self, cp)
        if self.group < 1 or self.num_output % self.group:
            raise self.config_error("num_output %d is not divisible by group %d"
                                    % (self.num_output, self.group))

    def check_bottoms(self, bottom_shapes):
        if len(self.param.top) != len(self.param.bottom):
            raise self.config_error("needs one top per bottom, got %d bottoms and %d tops"
                                    % (len(self.param.bottom), len(self.param.top)))
        first = bottom_shapes[0]
        if len(first) != 4:
            raise self.shape_error("needs a 4-D (N, C, H, W) input, got shape %s" % (first,))
        for s in bottom_shapes[1:]:
            if tuple(s) != tuple(first):
                raise self.shape_error("all bottoms must have the same shape, got %s and %s"
                                       % (first, s))
        if first[1] % self.group:
            raise self.shape_error("input channels %d are not divisible by group %d"
                                   % (first[1], self.group))
        return first

    def backward(self, bottoms, tops, top_diffs):
        return [self._backward_data(dy, x.shape) for x, dy in zip(bottoms, top_diffs)]


@register("Convolution")
class Convolution(_ConvBase):

    def param_shapes(self, bottom_shapes):
        c = self.check_bottoms(bottom_shapes)[1]
        g = self.geometry
        shapes = [(self.num_output, c // self.group, g.kh, g.kw)]
        return shapes + [(self.num_output,)] if self.bias_term else shapes

    def reshape(self, bottom_shapes):
        n, c, h, w = self.check_bottoms(bottom_shapes)
        g = self.geometry
        oh, ow = g.conv_out(h, w)
        if oh <= 0 or ow <= 0:
            # Caffe's Blob::Reshape refuses a negative size (CHECK_GE(shape[i], 0)); a zero one
            # makes an empty top, which no later layer can use and caffelrp does not run
            raise self.shape_error(
                "input %dx%d is too small for a %dx%d kernel (pad %d,%d, stride %d,%d, dilation "
                "%d,%d): the output would be %dx%d%s" % (
                    h, w, g.kh, g.kw, g.ph, g.pw, g.sh, g.sw, g.dh, g.dw, oh, ow,
                    ", which Caffe refuses" if min(oh, ow) < 0 else
                    " (an empty blob in Caffe, which caffelrp does not run)"))
        return [(n, self.num_output, oh, ow)] * len(bottom_shapes)

    def forward(self, bottoms):
        if caffe_blas.active():
            return [caffe_blas.convolution_forward(self, x) for x in bottoms]
        # 3x3 stride 1: 4x fewer multiplications by Winograd (caffelrp/winograd.py)
        return [winograd.forward(self, x) if winograd.applies(self, x.shape) else
                self._convolve(x) for x in bottoms]

    def _convolve(self, x):
        y = convolve(self.blobs[0].reshape(self.num_output, -1), self.group,
                     self.geometry.args(), x, self.geometry.conv_out(*x.shape[2:]))
        if self.bias_term:
            _add_bias(y, self.blobs[1])
        return y

    def _backward_data(self, dy, shape):
        """dx = col2im(W^T dy), the transposed convolution of dy."""
        if winograd.applies(self, shape):
            return winograd.backward_data(self, dy, shape)
        return convolve_transposed(self.blobs[0].reshape(self.num_output, -1), self.group,
                                   self.geometry.args(), dy, shape)

    rule_key = "Convolution"

    def relevance(self, rule, bottoms, tops, r_tops):
        """Each bottom's relevance under the linear rule (``conv_relevance``); the gradient
        rule (backprojection: 11, 99, 26, 166) is the backward. A folded layer (``Net.folded``)
        forms z from its folded weights, so the rule's z+ and z - z+ come from the same float32
        weights."""
        if rule.is_gradient:
            return self.backward(bottoms, tops, r_tops)
        W, b = self.blobs[0], self.blobs[1] if self.bias_term else None
        return [conv_relevance(rule, x, W, b, r, self.geometry.args(), self.group,
                               None if self.folded_from else y, self.lrp_cache())
                for x, y, r in zip(bottoms, tops, r_tops)]

    def relevance_text(self, rule):
        return repr(rule) + (" (+%d folded)" % len(self.folded_from) if self.folded_from else "")

    def flops(self):
        n, o, oh, ow = self.top_shapes[0]
        return 2 * n * o * oh * ow * self.blobs[0][0].size * len(self.top_shapes)


@register("Deconvolution")
class Deconvolution(_ConvBase):
    """The adjoint of Convolution: weights (C_in, num_output/group, kh, kw) (pitfall P11)."""

    def param_shapes(self, bottom_shapes):
        c = self.check_bottoms(bottom_shapes)[1]
        g = self.geometry
        shapes = [(c, self.num_output // self.group, g.kh, g.kw)]
        return shapes + [(self.num_output,)] if self.bias_term else shapes

    def reshape(self, bottom_shapes):
        n, c, h, w = self.check_bottoms(bottom_shapes)
        oh, ow = self.geometry.deconv_out(h, w)
        if oh <= 0 or ow <= 0:
            raise self.shape_error("output size %dx%d is not positive" % (oh, ow))
        return [(n, self.num_output, oh, ow)] * len(bottom_shapes)

    def forward(self, bottoms):
        if caffe_blas.active():
            return [caffe_blas.deconvolution_forward(self, x) for x in bottoms]
        return [self._deconvolve(x) for x in bottoms]

    def _deconvolve(self, x):
        # the transposed convolution whose weights are these (C_in, num_output/g, kh, kw): a
        # convolution of num_output channels into C_in of the same geometry (§3.2)
        g = self.geometry
        y = convolve_transposed(self.blobs[0].reshape(x.shape[1], -1), self.group, g.args(), x,
                                (x.shape[0], self.num_output) + g.deconv_out(*x.shape[2:]))
        if self.bias_term:
            _add_bias(y, self.blobs[1])
        return y

    def _backward_data(self, dy, shape):
        """dx = W im2col(dy): the convolution of dy with the deconvolution's geometry."""
        return convolve(self.blobs[0].reshape(shape[1], -1), self.group, self.geometry.args(),
                        dy, shape[2:])

    def flops(self):
        n, c, h, w = self.bottom_shapes[0]
        return 2 * n * c * h * w * self.blobs[0][0].size * len(self.top_shapes)
