"""InnerProduct (caffe-format.md §3.4): one GEMM over the flattened trailing axes, forward
and backward (dx = dy W)."""
import numpy as np

from .. import caffe_blas
from ..kernels.gemm import matmul
from ..threads import get_num_threads
from .base import Layer, canonical_axis, count, register


@register("InnerProduct")
class InnerProduct(Layer):
    in_place_allowed = False

    def __init__(self, param, index):
        super().__init__(param, index)
        ip = param.inner_product_param
        if not ip.HasField("num_output") or ip.num_output == 0:
            raise self.config_error("inner_product_param.num_output must be set and positive")
        self.num_output = ip.num_output
        self.bias_term = ip.bias_term
        self.transpose = ip.transpose
        self.axis_param = ip.axis
        self.k = None  # fixed by the first setup, as in Caffe

    def param_shapes(self, bottom_shapes):
        shape = bottom_shapes[0]
        axis = canonical_axis(self, self.axis_param, len(shape))
        k = count(shape, axis)
        if self.k is None:
            self.k = k
        elif k != self.k:
            raise self.shape_error("input of shape %s has %d features per row; this layer was "
                                   "built for %d" % (tuple(shape), k, self.k))
        w = (k, self.num_output) if self.transpose else (self.num_output, k)
        return [w, (self.num_output,)] if self.bias_term else [w]

    def reshape(self, bottom_shapes):
        shape = bottom_shapes[0]
        self.axis = canonical_axis(self, self.axis_param, len(shape))
        return [tuple(shape[:self.axis]) + (self.num_output,)]

    def weight_matrix(self):
        """The weights as (num_output, K), a view."""
        return self.blobs[0].T if self.transpose else self.blobs[0]

    def forward(self, bottoms):
        if caffe_blas.active():
            return [caffe_blas.inner_product_forward(self, bottoms[0])]
        x = bottoms[0]
        m = count(x.shape, 0, self.axis)
        y = np.empty((m, self.num_output), dtype=np.float32)
        matmul(x.reshape(m, self.k), self.weight_matrix().T, y, get_num_threads())
        if self.bias_term:
            y += self.blobs[1]
        return [y.reshape(x.shape[:self.axis] + (self.num_output,))]

    def backward(self, bottoms, tops, top_diffs):
        x = bottoms[0]
        m = count(x.shape, 0, self.axis)
        dy = np.ascontiguousarray(top_diffs[0], dtype=np.float32).reshape(m, self.num_output)
        dx = np.empty((m, self.k), dtype=np.float32)
        matmul(dy, self.weight_matrix(), dx, get_num_threads())
        return [dx.reshape(x.shape)]

    def flops(self):
        return 2 * count(self.bottom_shapes[0], 0, self.axis) * self.k * self.num_output
