"""Pooling (caffe-format.md §3.3): MAX and AVE with Caffe's ceil output size and window rules.

Backward as Caffe's: MAX sends each output's gradient to the argmax its forward recorded (the
first maximum of the window); AVE is the exact adjoint (dy / pool_size to every real cell).

Relevance (spec 2.3): MAX gives all of a window's relevance to the forward's argmax under every
formula (its backward); AVE shares it in proportion to the activations, x_i R_j / S_j with S_j the
window sum clipped to the image, and where |S_j| < 1e-6 the original adds x_i itself (reproduced);
under the gradient-type formulas AVE is its backward (the adjoint 1/pool_size).
"""
import numpy as np

from ..errors import ArgumentError
from ..kernels.pooling import (ave_pool_backward, ave_pool_forward, max_pool_backward,
                               max_pool_forward, pooled_size)
from ..kernels.relevance import ave_pool_relevance
from ..proto import caffe_pb2
from ..threads import threads_for
from .base import GRADIENT, Layer, register

MAX = caffe_pb2.PoolingParameter.MAX
AVE = caffe_pb2.PoolingParameter.AVE


@register("Pooling")
class Pooling(Layer):
    tops_range = (1, 2)  # MAX may have a second top holding the argmax
    in_place_allowed = False
    rule_key = "Pooling"

    def __init__(self, param, index):
        super().__init__(param, index)
        pp = param.pooling_param
        self.method = pp.pool
        if self.method not in (MAX, AVE):
            raise self.config_error("STOCHASTIC pooling has no CPU forward pass in Caffe; only MAX "
                                    "and AVE are supported")
        if len(param.top) == 2 and self.method != MAX:
            raise self.config_error("only MAX pooling may have a second (argmax) top")
        self.global_pooling = pp.global_pooling
        has_size = pp.HasField("kernel_size")
        has_hw = pp.HasField("kernel_h") or pp.HasField("kernel_w")
        if self.global_pooling:
            if has_size or has_hw:
                raise self.config_error("global_pooling takes no kernel size")
            self.kernel = None
        elif has_size and has_hw:
            raise self.config_error("give kernel_size or kernel_h and kernel_w, not both")
        elif has_size:
            self.kernel = (pp.kernel_size, pp.kernel_size)
        elif pp.HasField("kernel_h") and pp.HasField("kernel_w"):
            self.kernel = (pp.kernel_h, pp.kernel_w)
        else:
            raise self.config_error("pooling_param needs kernel_size (or kernel_h and kernel_w) "
                                    "or global_pooling")
        if pp.HasField("pad_h") or pp.HasField("pad_w"):
            if pp.HasField("pad"):
                raise self.config_error("give pad or pad_h and pad_w, not both")
            self.pad = (pp.pad_h, pp.pad_w)
        else:
            self.pad = (pp.pad, pp.pad)
        if pp.HasField("stride_h") or pp.HasField("stride_w"):
            if pp.HasField("stride"):
                raise self.config_error("give stride or stride_h and stride_w, not both")
            self.stride = (pp.stride_h, pp.stride_w)
        else:
            self.stride = (pp.stride, pp.stride)
        if self.global_pooling and (self.pad != (0, 0) or self.stride != (1, 1)):
            raise self.config_error("global pooling needs pad 0 and stride 1")
        if min(self.stride) <= 0:
            raise self.config_error("stride must be positive, got %s" % (self.stride,))
        if self.kernel is not None:
            if min(self.kernel) <= 0:
                raise self.config_error("kernel size must be positive, got %s" % (self.kernel,))
            if self.pad[0] >= self.kernel[0] or self.pad[1] >= self.kernel[1]:
                raise self.config_error("pad %s must be smaller than the kernel %s"
                                        % (self.pad, self.kernel))

    def window(self, h, w):
        """(kernel, pad, stride, output size) for an input of h x w."""
        kernel = (h, w) if self.global_pooling else self.kernel
        clip = any(self.pad)      # Caffe clips both axes when either has padding
        oh = pooled_size(h, kernel[0], self.pad[0], self.stride[0], clip)
        ow = pooled_size(w, kernel[1], self.pad[1], self.stride[1], clip)
        return kernel, (oh, ow)

    def reshape(self, bottom_shapes):
        shape = bottom_shapes[0]
        if len(shape) != 4:
            raise self.shape_error("needs a 4-D (N, C, H, W) input, got shape %s" % (shape,))
        n, c, h, w = shape
        kernel, (oh, ow) = self.window(h, w)
        if oh <= 0 or ow <= 0:
            raise self.shape_error("input %dx%d gives an empty output for kernel %s"
                                   % (h, w, kernel))
        return [(n, c, oh, ow)] * len(self.param.top)

    def forward(self, bottoms):
        x = bottoms[0]
        n, c, h, w = x.shape
        (kh, kw), (oh, ow) = self.window(h, w)
        geometry = (kh, kw, self.pad[0], self.pad[1], self.stride[0], self.stride[1], oh, ow)
        y = np.empty((n, c, oh, ow), dtype=np.float32)
        if self.method == MAX:
            argmax = np.empty((n, c, oh, ow), dtype=np.int32)
            max_pool_forward(x, *geometry, y, argmax, threads_for(y.size))
            self.argmax = argmax  # kept for the backward passes
            return [y, argmax.astype(np.float32)] if len(self.param.top) == 2 else [y]
        ave_pool_forward(x, *geometry, y, threads_for(y.size))
        return [y]

    def backward(self, bottoms, tops, top_diffs):
        x = bottoms[0]
        dy = np.ascontiguousarray(top_diffs[0], dtype=np.float32)  # a second top (argmax): none
        dx = np.empty(x.shape, dtype=np.float32)
        if self.method == MAX:
            max_pool_backward(dy, self.argmax, dx, threads_for(dx.size))
        else:
            (kh, kw), _ = self.window(*x.shape[2:])
            ave_pool_backward(dy, kh, kw, self.pad[0], self.pad[1], self.stride[0],
                              self.stride[1], dx, threads_for(dx.size))
        return [dx]

    def relevance(self, rule, bottoms, tops, r_tops):
        """MAX, or ``GRADIENT``: the backward; AVE under "relevance": the original's rule."""
        if self.method == MAX or rule == GRADIENT:
            return self.backward(bottoms, tops, r_tops)
        if rule != "relevance":
            raise ArgumentError("unknown Pooling behaviour %r" % (rule,))
        return [self.average_relevance(bottoms[0], r_tops[0])]

    def average_relevance(self, x, r):
        """AVE pooling's relevance rule: x_i / S_j of R_j where |S_j| >= 1e-6, else x_i added."""
        (kh, kw), (oh, ow) = self.window(*x.shape[2:])
        r = np.ascontiguousarray(r, dtype=np.float32)
        if r.shape != x.shape[:2] + (oh, ow):
            raise ArgumentError("Pooling layer '%s': relevance of shape %s for an output of shape %s"
                             % (self.name, r.shape, x.shape[:2] + (oh, ow)))
        out = np.empty(x.shape, dtype=np.float32)
        ave_pool_relevance(np.ascontiguousarray(x, dtype=np.float32), r, kh, kw, self.pad[0],
                           self.pad[1], self.stride[0], self.stride[1], out,
                           threads_for(out.size))
        return out

    def flops(self):
        n, c, oh, ow = self.top_shapes[0]
        kh, kw = self.window(*self.bottom_shapes[0][2:])[0]
        return n * c * oh * ow * kh * kw
