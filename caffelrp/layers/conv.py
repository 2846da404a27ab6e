"""Convolution and Deconvolution (caffe-format.md §3.1, §3.2): im2col + one GEMM per group.

The batch is folded into the columns of the im2col matrix (columns n*OH*OW + oh*OW + ow), so one
GEMM covers several images; the images are taken in chunks that bound the column matrix.

The gradients are the adjoint maps on the same kernels: a Convolution's is W^T dy (one GEMM per
group and chunk of images) then col2im; a Deconvolution's is im2col of dy then W dcol.

Relevance (a Convolution's): the rule the composite gives (``caffelrp.rules``) works on the
column matrices of the same chunks -- im2col of the input (and of the images the rule asks for,
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

# Upper bound of one im2col matrix, in bytes (chunks of images are sized to stay below it).
COLUMN_BUDGET = 256 << 20
# Output planes of at most one GEMM column block (256 values: 13 x 13, 14 x 14, 7 x 7) are
# multiplied for the whole chunk of images at once: one image's product there is a single block of
# the GEMM kernel, i.e. one thread. Larger planes keep one product per image: they already split
# into blocks for every thread, and batching them would only add the transposed copies of the
# input (1x1) and the output (measured on GoogLeNet's 28 x 28 layers: slower at batch 8).
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
        """Output size of a convolution (floor division, §3.1)."""
        oh = (h + 2 * self.ph - (self.dh * (self.kh - 1) + 1)) // self.sh + 1
        ow = (w + 2 * self.pw - (self.dw * (self.kw - 1) + 1)) // self.sw + 1
        return oh, ow

    def deconv_out(self, h, w):
        """Output size of a deconvolution (§3.2)."""
        oh = self.sh * (h - 1) + self.dh * (self.kh - 1) + 1 - 2 * self.ph
        ow = self.sw * (w - 1) + self.dw * (self.kw - 1) + 1 - 2 * self.pw
        return oh, ow

    def args(self):
        return (self.kh, self.kw, self.ph, self.pw, self.sh, self.sw, self.dh, self.dw)

    @property
    def is_pointwise(self):
        """1x1, stride 1, no pad: the input itself is the column matrix."""
        return (self.kh == self.kw == 1 and self.sh == self.sw == 1 and self.ph == self.pw == 0)


def channels_as_rows(a):
    """(m, C, ...) -> (C, m*...): the column order of a multi-image im2col matrix (image n's
    columns n*P .. (n+1)*P - 1), e.g. of a 1x1 convolution's input or a chunk's output."""
    m, c = a.shape[:2]
    if m == 1:
        return a.reshape(c, -1)
    return np.ascontiguousarray(a.reshape(m, c, -1).transpose(1, 0, 2)).reshape(c, -1)


def images_per_chunk(column_rows, spatial):
    """How many images one im2col matrix of ``column_rows`` x ``spatial`` columns per image may
    hold within ``COLUMN_BUDGET`` (at least one)."""
    return max(1, COLUMN_BUDGET // max(column_rows * spatial * 4, 1))


def _f32(a):
    return np.ascontiguousarray(a, dtype=np.float32)


def conv_relevance(rule, x, W, b, R, geometry, group=1, z=None, cache=None):
    """Relevance of a convolution's input x (N, C, H, W) under ``rule``, for weights W
    (O, C/group, kh, kw), bias b (O,) or None, upper relevance R (N, O, OH, OW), ``geometry`` =
    (kh, kw, ph, pw, sh, sw, dh, dw) and z (N, O, OH, OW), the forward output, or None (the rule
    forms it); ``cache``: the layer's dict for weight parts.

    Images go through in chunks whose column matrix stays within the column budget, so that one
    GEMM covers several images where the layer is small (VGG-16's conv5: 196 columns per image);
    the temporaries live in scratch buffers, consumed by col2im before the next chunk."""
    x = _f32(x)
    R = _f32(R)
    n, c, h, w = x.shape
    o, oh, ow = R.shape[1], R.shape[2], R.shape[3]
    kh, kw = geometry[0], geometry[1]
    cg, og = c // group, o // group
    k = cg * kh * kw
    weights = _f32(W).reshape(o, k)
    maps = [LinearMap(weights[g * og:(g + 1) * og],
                      None if b is None else b[g * og:(g + 1) * og], cache=cache,
                      key=("group", g), use_scratch=True) for g in range(group)]
    images = (x,) + tuple(np.broadcast_to(np.asarray(v, np.float32), x.shape)
                          for v in rule.aux_images(x))
    out = np.empty_like(x)
    threads = get_num_threads()
    nonnegative = not (x < 0).any()    # zero padding keeps the columns so, too
    # 1x1, stride 1, no pad: the images are their own column matrix (no im2col, no col2im)
    pointwise = kh == kw == 1 and geometry[4] == geometry[5] == 1 and \
        geometry[2] == geometry[3] == 0
    chunk = images_per_chunk(c * kh * kw, oh * ow)
    for n0 in range(0, n, chunk):
        m = min(chunk, n - n0)
        cols = []
        for j, image in enumerate(images):
            if pointwise:
                cols.append(channels_as_rows(_f32(image[n0:n0 + m])))
                continue
            col = scratch.take(scratch.COLUMNS if j == 0 else (scratch.COLUMNS, j),
                               (c * kh * kw, m * oh * ow))
            im2col(_f32(image[n0:n0 + m]), *geometry, oh, ow, col, threads_for(col.size))
            cols.append(col)
        r_c = channels_as_rows(R[n0:n0 + m])
        z_c = None if z is None else channels_as_rows(_f32(z[n0:n0 + m]))
        if group == 1:
            rel = rule.conv_columns(cols[0], maps[0], r_c, z_c, tuple(cols[1:]), kh * kw,
                                    nonnegative)
        else:
            rel = scratch.take("lrp-groups", cols[0].shape)
            for g, lin in enumerate(maps):
                rows, outs = slice(g * k, (g + 1) * k), slice(g * og, (g + 1) * og)
                rel[rows] = rule.conv_columns(
                    cols[0][rows], lin, r_c[outs], None if z_c is None else z_c[outs],
                    tuple(col[rows] for col in cols[1:]), kh * kw, nonnegative)
        if pointwise:
            out[n0:n0 + m] = rel.reshape(c, m, h, w).transpose(1, 0, 2, 3)
        else:
            col2im(_f32(rel), m, c, h, w, *geometry, oh, ow, out[n0:n0 + m], threads)
    return out


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


@register("Convolution")
class Convolution(_ConvBase):

    def param_shapes(self, bottom_shapes):
        c = self.check_bottoms(bottom_shapes)[1]
        g = self.geometry
        shapes = [(self.num_output, c // self.group, g.kh, g.kw)]
        return shapes + [(self.num_output,)] if self.bias_term else shapes

    def reshape(self, bottom_shapes):
        n, c, h, w = self.check_bottoms(bottom_shapes)
        oh, ow = self.geometry.conv_out(h, w)
        if oh <= 0 or ow <= 0:
            raise self.shape_error("input %dx%d is too small for a %dx%d kernel (pad %d,%d, "
                                   "dilation %d,%d)" % (h, w, self.geometry.kh, self.geometry.kw,
                                                        self.geometry.ph, self.geometry.pw,
                                                        self.geometry.dh, self.geometry.dw))
        return [(n, self.num_output, oh, ow)] * len(bottom_shapes)

    def forward(self, bottoms):
        if caffe_blas.active():
            return [caffe_blas.convolution_forward(self, x) for x in bottoms]
        # 3x3 stride 1: 4x fewer multiplications by Winograd (caffelrp/winograd.py)
        return [winograd.forward(self, x) if winograd.applies(self, x.shape) else
                self._convolve(x) for x in bottoms]

    def columns(self, x):
        """The im2col matrix of x, (C*kh*kw, N*OH*OW), in a scratch buffer (valid until the next
        call). The forward does not call it for 1x1 convolutions, which read x as it is."""
        g = self.geometry
        n, c, h, w = x.shape
        oh, ow = g.conv_out(h, w)
        col = scratch.take(scratch.COLUMNS, (c * g.kh * g.kw, n * oh * ow))
        im2col(x, *g.args(), oh, ow, col, threads_for(col.size))
        return col

    def _convolve(self, x):
        n, c, h, w = x.shape
        oh, ow = self.geometry.conv_out(h, w)
        o, groups = self.num_output, self.group
        og, k = o // groups, self.blobs[0][0].size
        weights = self.blobs[0].reshape(o, k)
        y = np.empty((n, o, oh * ow), dtype=np.float32)
        chunk = images_per_chunk(k * groups, oh * ow)
        threads = get_num_threads()
        pointwise = self.geometry.is_pointwise
        for n0 in range(0, n, chunk):
            xs = x[n0:n0 + chunk]
            m = xs.shape[0]
            if m > 1 and oh * ow <= BATCHED_SPATIAL:
                # a small layer: one GEMM per group over the whole chunk (the per-image
                # products are too thin to keep the threads busy), then the image-major copy
                cols = channels_as_rows(xs) if pointwise else self.columns(xs)
                out = scratch.take("conv-out", (o, m * oh * ow))
                for gi in range(groups):
                    matmul(weights[gi * og:(gi + 1) * og], cols[gi * k:(gi + 1) * k],
                           out[gi * og:(gi + 1) * og], threads)
                y[n0:n0 + m] = out.reshape(o, m, oh * ow).transpose(1, 0, 2)
                continue
            # a 1x1 convolution reads each image as it is (no transposed copy of the batch)
            col = None if pointwise else self.columns(xs)
            # one GEMM per image and group, written straight into the output: image i's columns
            # are col[:, i*OH*OW:(i+1)*OH*OW]
            for i in range(m):
                cols = xs[i].reshape(c, h * w) if pointwise else \
                    col[:, i * oh * ow:(i + 1) * oh * ow]
                for gi in range(groups):
                    matmul(weights[gi * og:(gi + 1) * og], cols[gi * k:(gi + 1) * k],
                           y[n0 + i, gi * og:(gi + 1) * og], threads)
        if self.bias_term:
            y += self.blobs[1][None, :, None]
        return y.reshape(n, o, oh, ow)

    def backward(self, bottoms, tops, top_diffs):
        return [self._backward_data(dy, x.shape) for x, dy in zip(bottoms, top_diffs)]

    def _backward_data(self, dy, shape):
        """dx = col2im(W^T dy), the transposed convolution of dy."""
        if winograd.applies(self, shape):
            return winograd.backward_data(self, dy, shape)
        g = self.geometry
        n, c, h, w = shape
        oh, ow = g.conv_out(h, w)
        o, groups = self.num_output, self.group
        og, k = o // groups, self.blobs[0][0].size
        weights = self.blobs[0].reshape(o, k)
        dy = np.ascontiguousarray(dy, dtype=np.float32).reshape(n, o, oh * ow)
        dx = np.empty((n, c, h, w), dtype=np.float32)
        threads = get_num_threads()
        if g.is_pointwise and (n == 1 or oh * ow > BATCHED_SPATIAL):
            # 1x1: W^T dy is dx itself, image by image (no col2im, no transpose)
            cg = c // groups
            for i in range(n):
                for gi in range(groups):
                    matmul(weights[gi * og:(gi + 1) * og].T, dy[i, gi * og:(gi + 1) * og],
                           dx[i, gi * cg:(gi + 1) * cg].reshape(cg, h * w), threads)
            return dx
        chunk = images_per_chunk(k * groups, oh * ow)
        for n0 in range(0, n, chunk):
            d = dy[n0:n0 + chunk]
            m = d.shape[0]
            rows = channels_as_rows(d)   # dy in the column layout of the forward's im2col matrix
            col = scratch.take(scratch.COLUMNS, (k * groups, m * oh * ow))
            for gi in range(groups):
                matmul(weights[gi * og:(gi + 1) * og].T, rows[gi * og:(gi + 1) * og],
                       col[gi * k:(gi + 1) * k], threads)
            if g.is_pointwise:   # the column matrix is dx in the channels-as-rows layout
                dx[n0:n0 + m] = col.reshape(c, m, h, w).transpose(1, 0, 2, 3)
            else:
                col2im(col, m, c, h, w, *g.args(), oh, ow, dx[n0:n0 + m],
                       threads_for(m * c * h * w))
        return dx

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
        g = self.geometry
        n, c, h, w = x.shape
        oh, ow = g.deconv_out(h, w)
        groups, o = self.group, self.num_output
        cg = c // groups
        rows = (o // groups) * g.kh * g.kw
        xcols = channels_as_rows(x)
        col = np.empty((o * g.kh * g.kw, n * h * w), dtype=np.float32)
        for gi in range(groups):
            wg = self.blobs[0][gi * cg:(gi + 1) * cg].reshape(cg, rows)
            matmul(wg.T, xcols[gi * cg:(gi + 1) * cg], col[gi * rows:(gi + 1) * rows],
                   get_num_threads())
        y = np.empty((n, o, oh, ow), dtype=np.float32)
        # the deconvolution's input plays the role of a convolution's output of the same geometry
        col2im(col, n, o, oh, ow, *g.args(), h, w, y, get_num_threads())
        if self.bias_term:
            y += self.blobs[1][None, :, None, None]
        return y

    def backward(self, bottoms, tops, top_diffs):
        return [self._backward_data(dy, x.shape) for x, dy in zip(bottoms, top_diffs)]

    def _backward_data(self, dy, shape):
        """dx = W im2col(dy): the convolution of dy with the deconvolution's geometry."""
        g = self.geometry
        n, c, h, w = shape
        _, o, oh, ow = dy.shape
        groups = self.group
        cg = c // groups
        rows = (o // groups) * g.kh * g.kw
        dcol = np.empty((o * g.kh * g.kw, n * h * w), dtype=np.float32)
        im2col(np.ascontiguousarray(dy, dtype=np.float32), *g.args(), h, w, dcol,
               threads_for(dcol.size))
        dxcols = np.empty((c, n * h * w), dtype=np.float32)
        for gi in range(groups):
            wg = self.blobs[0][gi * cg:(gi + 1) * cg].reshape(cg, rows)
            matmul(wg, dcol[gi * rows:(gi + 1) * rows], dxcols[gi * cg:(gi + 1) * cg],
                   get_num_threads())
        if n == 1:
            return dxcols.reshape(shape)
        return np.ascontiguousarray(dxcols.reshape(c, n, h * w).transpose(1, 0, 2)).reshape(shape)

    def flops(self):
        n, c, h, w = self.bottom_shapes[0]
        return 2 * n * c * h * w * self.blobs[0][0].size * len(self.top_shapes)
