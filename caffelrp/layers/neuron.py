"""Elementwise layers (caffe-format.md §3.6): one bottom, one top of the same shape.

``derivative(x, y, dy)`` is dy * f'(x) as Caffe's Backward_cpu computes it (from the bottom x and
where Caffe does, from the top y).

Relevance: ReLU as the composite says ("identity" for the LRP formulas, "deconv" for 26, "guided"
for 166, its gradient for 11 / 99); Dropout passes it unchanged; the other types have no rule.
"""
import numpy as np

from ..errors import ArgumentError
from ..kernels.neuron import relu_backward, relu_forward
from ..threads import threads_for
from .base import GRADIENT, Layer, register


class Neuron(Layer):
    def reshape(self, bottom_shapes):
        return [bottom_shapes[0]]

    def forward(self, bottoms):
        return [np.asarray(self.apply(bottoms[0]), dtype=np.float32)]

    def apply(self, x):
        raise NotImplementedError

    def backward(self, bottoms, tops, top_diffs):
        return [np.asarray(self.derivative(bottoms[0], tops[0], top_diffs[0]), dtype=np.float32)]

    def derivative(self, x, y, dy):
        raise NotImplementedError


@register("ReLU")
class ReLU(Neuron):
    rule_key = "ReLU"

    def __init__(self, param, index):
        super().__init__(param, index)
        self.negative_slope = param.relu_param.negative_slope

    def apply(self, x):
        x = np.ascontiguousarray(x, dtype=np.float32)
        out = np.empty_like(x)
        relu_forward(x.reshape(-1), self.negative_slope, out.reshape(-1), threads_for(x.size))
        return out

    def derivative(self, x, y, dy):
        x = np.ascontiguousarray(x, dtype=np.float32)
        dy = np.ascontiguousarray(dy, dtype=np.float32)
        out = np.empty_like(dy)
        relu_backward(x.reshape(-1), dy.reshape(-1), self.negative_slope, out.reshape(-1),
                      threads_for(x.size))
        return out

    def relevance(self, rule, bottoms, tops, r_tops):
        """"identity": R passes unchanged (LRP's view of the ReLU); "deconv": max(R, 0) (the
        deconvnet, Zeiler & Fergus 2014); "guided": max(R, 0) where the input > 0 (guided
        backprop, Springenberg et al. 2015); ``GRADIENT``: the backward."""
        r = r_tops[0]
        if rule == GRADIENT:
            return self.backward(bottoms, tops, r_tops)
        if rule == "identity":
            return [r]
        if rule == "deconv":
            return [np.maximum(r, np.float32(0))]
        if rule == "guided":
            return [np.where(bottoms[0] > 0, np.maximum(r, 0), np.float32(0)).astype(np.float32)]
        raise ArgumentError("unknown ReLU behaviour %r" % (rule,))


@register("Dropout")
class Dropout(Neuron):
    """Identity at test time: Caffe's dropout is 'inverted', scaling happens in training."""

    def apply(self, x):
        return x.copy()

    def derivative(self, x, y, dy):
        return dy

    def relevance(self, rule, bottoms, tops, r_tops):
        return [r_tops[0]]

    def relevance_text(self, rule):
        return "identity"


@register("Sigmoid")
class Sigmoid(Neuron):
    def apply(self, x):
        # Caffe's CPU code evaluates the logistic function through tanh.
        return 0.5 * np.tanh(0.5 * x) + 0.5

    def derivative(self, x, y, dy):
        return dy * y * (np.float32(1) - y)


@register("TanH")
class TanH(Neuron):
    def apply(self, x):
        return np.tanh(x)

    def derivative(self, x, y, dy):
        return dy * (np.float32(1) - y * y)


@register("AbsVal")
class AbsVal(Neuron):
    in_place_allowed = False

    def apply(self, x):
        return np.abs(x)

    def derivative(self, x, y, dy):
        return dy * np.sign(x)


@register("Power")
class Power(Neuron):
    def __init__(self, param, index):
        super().__init__(param, index)
        pp = param.power_param
        self.power, self.scale, self.shift = pp.power, pp.scale, pp.shift

    def apply(self, x):
        if self.power * self.scale == 0:  # Caffe's constant-output special case
            value = 1.0 if self.power == 0 else self.shift ** self.power
            return np.full_like(x, value)
        y = x
        if self.scale != 1:
            y = y * np.float32(self.scale)
        if self.shift != 0:
            y = y + np.float32(self.shift)
        if self.power != 1:
            y = np.power(y, np.float32(self.power))
        return y if y is not x else x.copy()

    def derivative(self, x, y, dy):
        # d/dx (shift + scale x)^power = power scale (shift + scale x)^(power - 1); Caffe divides
        # y by (shift + scale x) instead, which fails where that is 0
        if self.power * self.scale == 0:
            return np.zeros_like(dy)
        if self.power == 1:
            return dy * np.float32(self.scale)
        base = x * np.float32(self.scale) + np.float32(self.shift)
        factor = np.float32(self.power * self.scale)
        if self.power == 2:
            return dy * factor * base
        return dy * factor * np.power(base, np.float32(self.power - 1))


@register("ELU")
class ELU(Neuron):
    def __init__(self, param, index):
        super().__init__(param, index)
        self.alpha = param.elu_param.alpha

    def apply(self, x):
        return np.where(x > 0, x, np.float32(self.alpha) * np.expm1(np.minimum(x, 0)))

    def derivative(self, x, y, dy):
        return np.where(x > 0, dy, dy * (y + np.float32(self.alpha)))


@register("BNLL")
class BNLL(Neuron):
    def apply(self, x):
        return np.where(x > 0, x + np.log1p(np.exp(-np.abs(x))), np.log1p(np.exp(np.minimum(x, 0))))

    def derivative(self, x, y, dy):
        return dy * (np.float32(0.5) * np.tanh(np.float32(0.5) * x) + np.float32(0.5))


@register("Threshold")
class Threshold(Neuron):
    def __init__(self, param, index):
        super().__init__(param, index)
        self.threshold = param.threshold_param.threshold

    def apply(self, x):
        return (x > self.threshold).astype(np.float32)

    def derivative(self, x, y, dy):
        # a step: zero gradient wherever it exists (Caffe has no backward for it)
        return np.zeros_like(dy)


def _base_log(base):
    return 1.0 if base == -1 else float(np.log(base))


@register("Exp")
class Exp(Neuron):
    def __init__(self, param, index):
        super().__init__(param, index)
        ep = param.exp_param
        if ep.base != -1 and ep.base <= 0:
            raise self.config_error("exp_param.base must be -1 (e) or positive, got %g" % ep.base)
        log_base = _base_log(ep.base)
        self.inner_scale, self.inner_shift = log_base * ep.scale, log_base * ep.shift

    def apply(self, x):
        return np.exp(np.float32(self.inner_shift) + np.float32(self.inner_scale) * x)

    def derivative(self, x, y, dy):
        return dy * y * np.float32(self.inner_scale)


@register("Log")
class Log(Neuron):
    def __init__(self, param, index):
        super().__init__(param, index)
        lp = param.log_param
        if lp.base != -1 and lp.base <= 0:
            raise self.config_error("log_param.base must be -1 (e) or positive, got %g" % lp.base)
        if lp.base == 1:  # Caffe: CHECK(!isinf(1 / log(base)))
            raise self.config_error("log_param.base 1 has no logarithm (1 / log(1) is infinite)")
        self.scale, self.shift = lp.scale, lp.shift
        self.base_scale = 1.0 / _base_log(lp.base)

    def apply(self, x):
        return np.log(np.float32(self.shift) + np.float32(self.scale) * x) * np.float32(
            self.base_scale)

    def derivative(self, x, y, dy):
        return dy * np.float32(self.scale * self.base_scale) / (
            np.float32(self.shift) + np.float32(self.scale) * x)


@register("PReLU")
class PReLU(Neuron):
    def __init__(self, param, index):
        super().__init__(param, index)
        self.channel_shared = param.prelu_param.channel_shared

    def param_shapes(self, bottom_shapes):
        shape = bottom_shapes[0]
        if not 2 <= len(shape) <= 4:
            raise self.shape_error("needs an input with 2 to 4 axes, got shape %s" % (shape,))
        return [()] if self.channel_shared else [(shape[1],)]

    def default_blob(self, index, shape):
        return np.full(shape, 0.25, dtype=np.float32)  # Caffe's PReLU filler default

    def apply(self, x):
        a = self.blobs[0]
        if not self.channel_shared:
            a = a.reshape((1, -1) + (1,) * (x.ndim - 2))
        return np.where(x > 0, x, x * a)

    def derivative(self, x, y, dy):
        a = self.blobs[0]
        if not self.channel_shared:
            a = a.reshape((1, -1) + (1,) * (x.ndim - 2))
        return np.where(x > 0, dy, dy * a)
