"""Local response normalisation (caffe-format.md §3.5; note alpha is divided by the window size).

Relevance: the original's lrn_backward_type 1 (spec 2.3; not conservative), ACROSS_CHANNELS
only; under the gradient-type formulas the true gradient (the backward).
"""
import numpy as np

from .. import caffe_blas
from ..errors import ArgumentError, UnsupportedLayerError
from ..kernels.lrn import (lrn_across_backward, lrn_across_forward, lrn_within_backward,
                           lrn_within_forward)
from ..kernels.relevance import lrn_relevance
from ..limits import INT_MAX
from ..proto import caffe_pb2
from ..threads import threads_for
from .base import GRADIENT, Layer, register

ACROSS_CHANNELS = caffe_pb2.LRNParameter.ACROSS_CHANNELS


@register("LRN")
class LRN(Layer):
    in_place_allowed = False
    rule_key = "LRN"

    def __init__(self, param, index):
        super().__init__(param, index)
        lp = param.lrn_param
        self.size, self.alpha, self.beta, self.k = lp.local_size, lp.alpha, lp.beta, lp.k
        self.across_channels = lp.norm_region == ACROSS_CHANNELS
        if self.size % 2 == 0:
            raise self.config_error("local_size must be odd, got %d" % self.size)

    def reshape(self, bottom_shapes):
        if len(bottom_shapes[0]) != 4:
            raise self.shape_error("needs a 4-D (N, C, H, W) input, got shape %s"
                                   % (bottom_shapes[0],))
        _, c, h, w = bottom_shapes[0]
        # Caffe's forward pads the squares by local_size - 1: across channels in a blob of
        # C + size - 1 planes (CrossChannelForward_cpu), within a channel by a pooling of pad
        # (size - 1) / 2; past INT_MAX Caffe refuses it (Blob::Reshape), and so do we, at build
        if self.across_channels:
            padded, what = (c + self.size - 1) * h * w, "its padded squares blob"
        else:
            padded, what = max(h, w) + self.size - 1, "its padded plane side"
        if padded > INT_MAX:
            raise self.shape_error("local_size %d: %s would hold %d elements, more than Caffe's "
                                   "INT_MAX; Caffe could not run this layer"
                                   % (self.size, what, padded))
        return [bottom_shapes[0]]

    def forward(self, bottoms):
        if self.across_channels and caffe_blas.active():
            y, self.scale = caffe_blas.lrn_across_forward(self, bottoms[0])
            return [y]
        x = bottoms[0]
        y = np.empty_like(x)
        self.scale = np.empty_like(x)  # kept for the backward passes
        if self.across_channels:
            lrn_across_forward(x, self.size, self.alpha, self.beta, self.k, y, self.scale,
                               threads_for(y.size))
        else:
            lrn_within_forward(x, self.size, self.alpha, self.beta, y, self.scale,
                               threads_for(y.size))
        return [y]

    def backward(self, bottoms, tops, top_diffs):
        x = bottoms[0]
        dx = np.empty(x.shape, dtype=np.float32)
        fn = lrn_across_backward if self.across_channels else lrn_within_backward
        fn(x, tops[0], self.scale, np.ascontiguousarray(top_diffs[0], dtype=np.float32),
           self.size, self.alpha, self.beta, dx, threads_for(dx.size))
        return [dx]

    def relevance(self, rule, bottoms, tops, r_tops):
        if rule == GRADIENT:
            return self.backward(bottoms, tops, r_tops)
        if rule != "relevance":
            raise ArgumentError("unknown LRN behaviour %r" % (rule,))
        return [self.type1_relevance(bottoms[0], r_tops[0])]

    def type1_relevance(self, x, r):
        """lrn_backward_type 1 (spec 2.3), from the forward's scale k + alpha/n * sum x^2."""
        if not self.across_channels:
            raise UnsupportedLayerError("LRN layer '%s': the original's relevance rule (type 1) "
                                        "exists for ACROSS_CHANNELS only" % self.name)
        out = np.empty(x.shape, dtype=np.float32)
        lrn_relevance(np.ascontiguousarray(x, dtype=np.float32),
                      np.ascontiguousarray(self.scale, dtype=np.float32),
                      np.ascontiguousarray(r, dtype=np.float32), self.size, self.alpha,
                      self.beta, self.k, out, threads_for(out.size))
        return out

    def flops(self):
        return 2 * int(np.prod(self.top_shapes[0])) * self.size
