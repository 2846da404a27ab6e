"""BatchNorm, Scale and Bias (caffe-format.md §3.9): per-element affine maps y = a x + c.

Relevance: right after a Convolution or InnerProduct they are folded into it before any rule runs
(``Net.folded``); standing alone they take the composite's "Convolution" rule as a per-element
affine map (``Rule.diagonal``), and under the gradient-type formulas they are their gradient.
"""
import numpy as np

from ..errors import UnsupportedLayerError
from .base import GRADIENT, Layer, canonical_axis, register


class _Affine(Layer):
    """What BatchNorm, Scale and Bias share: y = a x + c per element, a and c from the layer's
    own parameters (``affine``) or, per channel of axis 1, ``channel_affine``."""
    # standing alone: the linear layers' rule, applied to the per-element map
    rule_key = "Convolution"

    def affine(self, x):
        """(a, c) broadcastable against x, for the layer's own parameters."""
        raise NotImplementedError

    def channel_affine(self, channels):
        """(a, c), float32 (channels,), when the layer maps channel k of axis 1 as
        y = a_k x + c_k with its own parameters (what folding needs); else None."""
        raise NotImplementedError

    def relevance(self, rule, bottoms, tops, r_tops):
        if rule.is_gradient:
            return self.backward(bottoms, tops, r_tops)
        if len(bottoms) != 1:
            raise UnsupportedLayerError("layer %d '%s' (%s) takes its factors from a second "
                                        "bottom blob; caffelrp has no relevance rule for that"
                                        % (self.index, self.name, self.type))
        a, c = self.affine(bottoms[0])
        return [rule.diagonal(bottoms[0], a, c, r_tops[0], tops[0])]

    def relevance_text(self, rule):
        return GRADIENT if rule.is_gradient else repr(rule) + " (per channel)"


@register("BatchNorm")
class BatchNorm(_Affine):
    """Global-statistics batch normalisation: y = (x - mean) / sqrt(var + eps), no affine part.

    Blob 2 is the moving-average normaliser; mean and variance are the first two blobs divided by
    it, and a stored 0 turns both into 0 (pitfall P6).
    """

    def __init__(self, param, index):
        super().__init__(param, index)
        bp = param.batch_norm_param
        self.eps = bp.eps
        if bp.HasField("use_global_stats") and not bp.use_global_stats:
            raise self.config_error("use_global_stats: false normalises with the statistics of "
                                    "the batch itself (training mode); caffelrp runs nets for "
                                    "inference with the stored statistics")

    def channels(self, shape):
        return shape[1] if len(shape) > 1 else 1

    def param_shapes(self, bottom_shapes):
        c = self.channels(bottom_shapes[0])
        return [(c,), (c,), (1,)]

    def reshape(self, bottom_shapes):
        return [bottom_shapes[0]]

    def mean_and_inv_std(self):
        """Per-channel mean and 1/sqrt(var + eps), float32, as Caffe computes them."""
        factor = self.blobs[2].reshape(-1)[0]
        f = np.float32(0.0 if factor == 0 else 1.0 / factor)
        mean = self.blobs[0] * f
        var = self.blobs[1] * f
        return mean, (np.float32(1.0) / np.sqrt(var + np.float32(self.eps))).astype(np.float32)

    def forward(self, bottoms):
        x = bottoms[0]
        mean, inv_std = self.mean_and_inv_std()
        shape = (1, -1) + (1,) * (x.ndim - 2) if x.ndim > 1 else (-1,)
        return [(x - mean.reshape(shape)) * inv_std.reshape(shape)]

    def backward(self, bottoms, tops, top_diffs):
        x = bottoms[0]
        shape = (1, -1) + (1,) * (x.ndim - 2) if x.ndim > 1 else (-1,)
        return [top_diffs[0] * self.mean_and_inv_std()[1].reshape(shape)]

    def affine(self, x):
        mean, inv_std = self.mean_and_inv_std()
        shape = (1, -1) + (1,) * (x.ndim - 2)
        return inv_std.reshape(shape), (-mean * inv_std).astype(np.float32).reshape(shape)

    def channel_affine(self, channels):
        mean, inv_std = self.mean_and_inv_std()
        if mean.size != channels:
            return None
        return inv_std, (-mean * inv_std).astype(np.float32)


class _Broadcast(_Affine):
    """Shared broadcasting rule of Scale and Bias: the operand covers axes [axis, axis + rank)."""
    bottoms_range = (1, 2)

    def operand_shape(self, x_shape, axis_param, num_axes):
        axis = canonical_axis(self, axis_param, len(x_shape))
        if num_axes < -1:
            raise self.config_error("num_axes must be -1 or non-negative, got %d" % num_axes)
        end = len(x_shape) if num_axes == -1 else axis + num_axes
        if end > len(x_shape):
            raise self.shape_error("axis %d with num_axes %d exceeds the input's %d axes"
                                   % (axis, num_axes, len(x_shape)))
        return axis, tuple(x_shape[axis:end])

    def broadcast(self, x_shape, operand, axis):
        if operand.ndim == 0:
            return operand
        return operand.reshape((1,) * axis + operand.shape + (1,) * (len(x_shape) - axis
                                                                      - operand.ndim))

    def reduce_to_operand(self, d, operand_shape, axis):
        """Sum ``d`` (the input's shape) over the axes the operand is broadcast along."""
        rank = len(operand_shape)
        outer = tuple(range(axis)) + tuple(range(axis + rank, d.ndim))
        return d.sum(axis=outer, dtype=np.float64).astype(np.float32).reshape(operand_shape)

    def check_operand(self, x_shape, operand_shape, axis):
        if tuple(x_shape[axis:axis + len(operand_shape)]) != tuple(operand_shape):
            raise self.shape_error("operand of shape %s does not match input %s at axis %d"
                                   % (operand_shape, x_shape, axis))


@register("Scale")
class Scale(_Broadcast):
    def __init__(self, param, index):
        super().__init__(param, index)
        sp = param.scale_param
        self.bias_term = sp.bias_term

    def param_shapes(self, bottom_shapes):
        sp = self.param.scale_param
        x_shape = bottom_shapes[0]
        if len(bottom_shapes) == 2:
            self.axis = 0 if len(bottom_shapes[1]) == 0 else canonical_axis(self, sp.axis,
                                                                              len(x_shape))
            shape = tuple(bottom_shapes[1])
            return [shape] if self.bias_term else []
        self.axis, shape = self.operand_shape(x_shape, sp.axis, sp.num_axes)
        return [shape, shape] if self.bias_term else [shape]

    def default_blob(self, index, shape):
        value = 1.0 if index == 0 and len(self.param.bottom) == 1 else 0.0  # Caffe's defaults
        if index == 0 and self.param.scale_param.HasField("filler"):
            value = self.param.scale_param.filler.value
        return np.full(shape, value, dtype=np.float32)

    def reshape(self, bottom_shapes):
        scale_shape = bottom_shapes[1] if len(bottom_shapes) == 2 else self.blobs[0].shape
        self.check_operand(bottom_shapes[0], scale_shape, self.axis)
        return [bottom_shapes[0]]

    def factors(self, bottoms):
        """(scale, bias or None) as arrays broadcastable against the input."""
        x = bottoms[0]
        if len(bottoms) == 2:
            scale, bias = bottoms[1], (self.blobs[0] if self.bias_term else None)
        else:
            scale, bias = self.blobs[0], (self.blobs[1] if self.bias_term else None)
        scale = self.broadcast(x.shape, scale, self.axis)
        if bias is not None:
            bias = self.broadcast(x.shape, bias, self.axis)
        return scale, bias

    def forward(self, bottoms):
        scale, bias = self.factors(bottoms)
        y = bottoms[0] * scale
        if bias is not None:
            y += bias
        return [y]

    def affine(self, x):
        return self.factors([x])

    def channel_affine(self, channels):
        if len(self.param.bottom) != 1 or getattr(self, "axis", None) != 1:
            return None
        scale = self.blobs[0].reshape(-1)
        bias = self.blobs[1].reshape(-1) if self.bias_term else np.zeros(1, np.float32)
        if scale.size not in (1, channels) or bias.size not in (1, channels):
            return None
        one = np.ones(channels, np.float32)
        return (scale * one).astype(np.float32), (bias * one).astype(np.float32)

    def backward(self, bottoms, tops, top_diffs):
        dy = top_diffs[0]
        scale, _ = self.factors(bottoms)
        diffs = [dy * scale]
        if len(bottoms) == 2:  # the scale comes from a blob: its gradient too
            x, operand = bottoms
            axis = 0 if operand.ndim == 0 else self.axis
            diffs.append(self.reduce_to_operand(dy * x, operand.shape, axis))
        return diffs


@register("Bias")
class Bias(_Broadcast):
    def param_shapes(self, bottom_shapes):
        bp = self.param.bias_param
        x_shape = bottom_shapes[0]
        if len(bottom_shapes) == 2:
            self.axis = 0 if len(bottom_shapes[1]) == 0 else canonical_axis(self, bp.axis,
                                                                              len(x_shape))
            return []
        self.axis, shape = self.operand_shape(x_shape, bp.axis, bp.num_axes)
        return [shape]

    def default_blob(self, index, shape):
        value = self.param.bias_param.filler.value if self.param.bias_param.HasField(
            "filler") else 0.0
        return np.full(shape, value, dtype=np.float32)

    def reshape(self, bottom_shapes):
        bias_shape = bottom_shapes[1] if len(bottom_shapes) == 2 else self.blobs[0].shape
        self.check_operand(bottom_shapes[0], bias_shape, self.axis)
        return [bottom_shapes[0]]

    def forward(self, bottoms):
        bias = bottoms[1] if len(bottoms) == 2 else self.blobs[0]
        return [bottoms[0] + self.broadcast(bottoms[0].shape, bias, self.axis)]

    def affine(self, x):
        return np.float32(1), self.broadcast(x.shape, self.blobs[0], self.axis)

    def channel_affine(self, channels):
        if len(self.param.bottom) != 1 or getattr(self, "axis", None) != 1:
            return None
        bias = self.blobs[0].reshape(-1)
        if bias.size not in (1, channels):
            return None
        return np.ones(channels, np.float32), (bias * np.ones(channels, np.float32)).astype(
            np.float32)

    def backward(self, bottoms, tops, top_diffs):
        dy = top_diffs[0]
        if len(bottoms) == 1:
            return [dy]
        operand = bottoms[1]
        axis = 0 if operand.ndim == 0 else self.axis
        return [dy, self.reduce_to_operand(dy, operand.shape, axis)]


