"""InnerProduct (caffe-format.md §3.4): one GEMM over the flattened trailing axes, forward
and backward (dx = dy W), and relevance: the composite's rule on the rows of the flattened input
(``dense_relevance``; the gradient rule is the backward)."""
import numpy as np

from .. import caffe_blas
from ..kernels.gemm import matmul
from ..rules import LinearMap
from ..threads import get_num_threads
from .base import Layer, canonical_axis, count, register


def dense_relevance(rule, a, W, b, R, z=None, cache=None, input_shape=None):
    """Relevance of an inner product's input rows a (N, K) under ``rule``, for weights W (O, K),
    bias b (O,) or None, upper relevance R (N, O) and z (N, O), the forward output, or None (the
    rule forms it) -> (N, K). ``input_shape``: the layer input's shape before flattening (for the
    images a rule asks for, e.g. z^B's bounds, shaped like it). The rule sees the columns
    a^T (K, N); the products run rows first, so that batch 1 is a matrix-vector product."""
    a = np.asarray(a, dtype=np.float32)
    lin = LinearMap(W, b, rows_first=True, cache=cache, key="ip")
    shape = a.shape if input_shape is None else input_shape
    aux = tuple((v if v.shape == a.shape else np.broadcast_to(v, shape).reshape(a.shape)).T
                for v in (np.asarray(v, np.float32) for v in rule.aux_images(a)))
    zt = None if z is None else np.asarray(z, dtype=np.float32).T
    out = rule.columns(a.T, lin, np.asarray(R, dtype=np.float32).T, zt, aux, not (a < 0).any())
    return np.ascontiguousarray(out.T, dtype=np.float32)


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

    rule_key = "InnerProduct"

    def relevance(self, rule, bottoms, tops, r_tops):
        if rule.is_gradient:
            return self.backward(bottoms, tops, r_tops)
        x = bottoms[0]
        m = count(x.shape, 0, self.axis)
        b = self.blobs[1] if self.bias_term else None
        # a folded layer forms z from its folded weights (see Convolution.relevance)
        z = None if self.folded_from else tops[0].reshape(m, -1)
        out = dense_relevance(rule, x.reshape(m, self.k), self.weight_matrix(), b,
                              r_tops[0].reshape(m, -1), z, self.lrp_cache(), x.shape)
        return [out.reshape(x.shape)]

    def relevance_text(self, rule):
        return repr(rule) + (" (+%d folded)" % len(self.folded_from) if self.folded_from else "")

    def flops(self):
        return 2 * count(self.bottom_shapes[0], 0, self.axis) * self.k * self.num_output
