"""Layers that move data without arithmetic, plus Softmax and Eltwise (caffe-format.md §3.7-3.10).

Relevance: the routing layers (Split, Concat, Slice, Flatten, Reshape) move it where their
gradient goes (their backward; a Split sums its tops), under every formula. Eltwise SUM is a linear
map with the coeff weights and no bias and takes the composite's "Eltwise" rule (z+, gamma or
epsilon: ``caffelrp.composites``; its gradient for 11, 99, 26, 166); Eltwise MAX gives all to the
first maximal bottom.
"""
import numpy as np

from ..errors import UnsupportedLayerError
from ..proto import caffe_pb2
from .base import GRADIENT, Layer, canonical_axis, count, register
from .inner_product import dense_relevance


class _Routing(Layer):
    """A layer that only moves values: relevance goes where the gradient goes (conservative)."""

    def relevance(self, rule, bottoms, tops, r_tops):
        return self.backward(bottoms, tops, r_tops)


@register("Input")
class Input(Layer):
    """Declares net inputs; the network builder fills its tops."""
    bottoms_range = (0, 0)
    tops_range = (1, None)
    is_input = True

    def reshape(self, bottom_shapes):
        raise AssertionError("Input layers are resolved by the network builder")


@register("Split")
class Split(_Routing):
    tops_range = (1, None)
    in_place_allowed = False

    def reshape(self, bottom_shapes):
        return [bottom_shapes[0]] * len(self.param.top)

    def forward(self, bottoms):
        return [bottoms[0]] * len(self.param.top)  # Caffe's tops share the bottom's memory

    def backward(self, bottoms, tops, top_diffs):
        total = np.array(top_diffs[0], dtype=np.float32)
        for d in top_diffs[1:]:
            total += d
        return [total]


@register("Flatten")
class Flatten(_Routing):
    in_place_allowed = False

    def reshape(self, bottom_shapes):
        shape = bottom_shapes[0]
        fp = self.param.flatten_param
        start = canonical_axis(self, fp.axis, len(shape))
        end = canonical_axis(self, fp.end_axis, len(shape))
        return [tuple(shape[:start]) + (count(shape, start, end + 1),) + tuple(shape[end + 1:])]

    def forward(self, bottoms):
        return [bottoms[0].reshape(self.top_shapes[0])]

    def backward(self, bottoms, tops, top_diffs):
        return [top_diffs[0].reshape(bottoms[0].shape)]


@register("Reshape")
class Reshape(_Routing):
    in_place_allowed = False

    def reshape(self, bottom_shapes):
        shape = tuple(bottom_shapes[0])
        rp = self.param.reshape_param
        rank = len(shape)
        axis = rp.axis
        if axis < 0:
            axis = rank + axis + 1  # -1 means "after the last axis" here
        if not 0 <= axis <= rank:
            raise self.shape_error("reshape_param.axis %d is out of range for shape %s"
                                   % (rp.axis, shape))
        end = rank if rp.num_axes == -1 else axis + rp.num_axes
        if rp.num_axes < -1 or end > rank:
            raise self.shape_error("reshape_param.num_axes %d is out of range for shape %s"
                                   % (rp.num_axes, shape))
        new = []
        infer = None
        for i, d in enumerate(rp.shape.dim):
            if d == 0:
                if axis + i >= rank:
                    raise self.shape_error("dim 0 (copy) at position %d has no input axis" % i)
                new.append(shape[axis + i])
            elif d == -1:
                if infer is not None:
                    raise self.config_error("at most one reshape dimension may be -1")
                infer = len(new)
                new.append(1)
            elif d < -1:
                raise self.config_error("reshape dimension %d is invalid" % d)
            else:
                new.append(int(d))
        full = list(shape[:axis]) + new + list(shape[end:])
        total = count(shape)
        if infer is not None:
            known = count(full)
            if known == 0 or total % known:
                raise self.shape_error("cannot infer the -1 dimension: %d values into %s"
                                       % (total, full))
            full[axis + infer] = total // known
        if count(full) != total:
            raise self.shape_error("cannot reshape %s (%d values) to %s" % (shape, total, full))
        return [tuple(full)]

    def forward(self, bottoms):
        return [bottoms[0].reshape(self.top_shapes[0])]

    def backward(self, bottoms, tops, top_diffs):
        return [top_diffs[0].reshape(bottoms[0].shape)]


@register("Concat")
class Concat(_Routing):
    bottoms_range = (1, None)
    in_place_allowed = False

    def reshape(self, bottom_shapes):
        cp = self.param.concat_param
        if cp.HasField("axis") and cp.HasField("concat_dim"):
            raise self.config_error("give concat_param.axis or concat_dim, not both")
        first = bottom_shapes[0]
        axis = cp.concat_dim if cp.HasField("concat_dim") else cp.axis
        self.axis = canonical_axis(self, axis, len(first))
        total = 0
        for i, s in enumerate(bottom_shapes):
            if len(s) != len(first) or any(a != b for j, (a, b) in enumerate(zip(s, first))
                                           if j != self.axis):
                raise self.shape_error("bottom %d has shape %s, which does not match %s except on "
                                       "axis %d" % (i, s, first, self.axis))
            total += s[self.axis]
        return [tuple(first[:self.axis]) + (total,) + tuple(first[self.axis + 1:])]

    def forward(self, bottoms):
        return [np.concatenate(bottoms, axis=self.axis)]

    def backward(self, bottoms, tops, top_diffs):
        index = [slice(None)] * top_diffs[0].ndim
        diffs, offset = [], 0
        for b in bottoms:
            index[self.axis] = slice(offset, offset + b.shape[self.axis])
            diffs.append(np.ascontiguousarray(top_diffs[0][tuple(index)]))
            offset += b.shape[self.axis]
        return diffs


@register("Slice")
class Slice(_Routing):
    tops_range = (1, None)
    in_place_allowed = False

    def reshape(self, bottom_shapes):
        sp = self.param.slice_param
        if sp.HasField("axis") and sp.HasField("slice_dim"):
            raise self.config_error("give slice_param.axis or slice_dim, not both")
        shape = bottom_shapes[0]
        axis = sp.slice_dim if sp.HasField("slice_dim") else sp.axis
        self.axis = canonical_axis(self, axis, len(shape))
        n_tops, size = len(self.param.top), shape[self.axis]
        if sp.slice_point:
            points = list(sp.slice_point)
            if len(points) != n_tops - 1:
                raise self.config_error("%d slice points for %d tops; need one fewer than tops"
                                        % (len(points), n_tops))
            bounds = [0] + points + [size]
            if any(b <= a for a, b in zip(bounds, bounds[1:])):
                raise self.shape_error("slice points %s must increase strictly within the axis "
                                       "size %d" % (points, size))
        else:
            if size % n_tops:
                raise self.shape_error("axis size %d is not divisible into %d equal slices"
                                       % (size, n_tops))
            bounds = [i * size // n_tops for i in range(n_tops + 1)]
        self.bounds = bounds
        return [tuple(shape[:self.axis]) + (b - a,) + tuple(shape[self.axis + 1:])
                for a, b in zip(bounds, bounds[1:])]

    def forward(self, bottoms):
        index = [slice(None)] * bottoms[0].ndim
        tops = []
        for a, b in zip(self.bounds, self.bounds[1:]):
            index[self.axis] = slice(a, b)
            tops.append(np.ascontiguousarray(bottoms[0][tuple(index)]))
        return tops

    def backward(self, bottoms, tops, top_diffs):
        return [np.concatenate(top_diffs, axis=self.axis)]


@register("Crop")
class Crop(Layer):
    bottoms_range = (2, 2)
    in_place_allowed = False

    def reshape(self, bottom_shapes):
        data, ref = bottom_shapes
        cp = self.param.crop_param
        axis = canonical_axis(self, cp.axis, len(data))
        offsets = list(cp.offset)
        if len(offsets) > 1 and len(offsets) != len(data) - axis:
            raise self.config_error("%d crop offsets given; need 1 or %d" % (len(offsets),
                                                                            len(data) - axis))
        shape, self.starts = list(data), [0] * len(data)
        for i in range(axis, len(data)):
            off = offsets[0] if len(offsets) == 1 else (offsets[i - axis] if offsets else 0)
            if data[i] - off < ref[i]:
                raise self.shape_error("axis %d: offset %d + size %d exceeds %d"
                                       % (i, off, ref[i], data[i]))
            shape[i], self.starts[i] = ref[i], off
        return [tuple(shape)]

    def forward(self, bottoms):
        index = tuple(slice(s, s + n) for s, n in zip(self.starts, self.top_shapes[0]))
        return [np.ascontiguousarray(bottoms[0][index])]

    def backward(self, bottoms, tops, top_diffs):
        dx = np.zeros(bottoms[0].shape, dtype=np.float32)
        dx[tuple(slice(s, s + n) for s, n in zip(self.starts, top_diffs[0].shape))] = top_diffs[0]
        return [dx, None]  # the reference blob gives only its shape


@register("Softmax")
class Softmax(Layer):
    in_place_allowed = False

    def reshape(self, bottom_shapes):
        self.axis = canonical_axis(self, self.param.softmax_param.axis, len(bottom_shapes[0]))
        return [bottom_shapes[0]]

    def forward(self, bottoms):
        x = bottoms[0]
        e = np.exp(x - x.max(axis=self.axis, keepdims=True))
        return [e / e.sum(axis=self.axis, keepdims=True)]

    def backward(self, bottoms, tops, top_diffs):
        y, dy = tops[0], top_diffs[0]
        return [y * (dy - (dy * y).sum(axis=self.axis, keepdims=True))]


EltwiseOp = caffe_pb2.EltwiseParameter


@register("Eltwise")
class Eltwise(Layer):
    bottoms_range = (2, None)
    in_place_allowed = False
    rule_key = "Eltwise"

    def __init__(self, param, index):
        super().__init__(param, index)
        ep = param.eltwise_param
        self.operation = ep.operation
        self.coeff = list(ep.coeff)
        n = len(param.bottom)
        if self.coeff and len(self.coeff) != n:
            raise self.config_error("eltwise_param has %d coeff values for %d bottoms"
                                    % (len(self.coeff), n))
        if self.coeff and self.operation != EltwiseOp.SUM:
            raise self.config_error("coeff is only allowed with operation SUM")
        if not self.coeff:
            self.coeff = [1.0] * n

    def reshape(self, bottom_shapes):
        for i, s in enumerate(bottom_shapes[1:], 1):
            if tuple(s) != tuple(bottom_shapes[0]):
                raise self.shape_error("bottom %d has shape %s, bottom 0 has %s"
                                       % (i, s, bottom_shapes[0]))
        return [bottom_shapes[0]]

    def forward(self, bottoms):
        if self.operation == EltwiseOp.SUM:
            y = np.zeros_like(bottoms[0])
            for c, x in zip(self.coeff, bottoms):
                if c == 1:
                    y += x
                else:
                    y += np.float32(c) * x
            return [y]
        if self.operation == EltwiseOp.PROD:
            y = bottoms[0].copy()
            for x in bottoms[1:]:
                y *= x
            return [y]
        y = bottoms[0].copy()
        for x in bottoms[1:]:
            np.maximum(y, x, out=y)
        return [y]

    def backward(self, bottoms, tops, top_diffs):
        dy = top_diffs[0]
        if self.operation == EltwiseOp.SUM:
            return [dy if c == 1 else dy * np.float32(c) for c in self.coeff]
        if self.operation == EltwiseOp.PROD:
            # the product of the other bottoms (Caffe's stable_prod_grad), exact where some are 0
            diffs = []
            for i in range(len(bottoms)):
                d = dy.copy()
                for j, x in enumerate(bottoms):
                    if j != i:
                        d *= x
                diffs.append(d)
            return diffs
        # MAX: to the bottom Caffe's forward recorded as the maximum; bottoms 0 and 1 compare
        # with '>', so a tie between them goes to bottom 1; later bottoms need to be strictly
        # greater
        winner = np.where(bottoms[0] > bottoms[1], 0, 1).astype(np.int32)
        best = np.maximum(bottoms[0], bottoms[1])
        for k, x in enumerate(bottoms[2:], 2):
            better = x > best
            winner[better] = k
            best = np.where(better, x, best)
        return [np.where(winner == k, dy, np.float32(0)) for k in range(len(bottoms))]

    def relevance(self, rule, bottoms, tops, r_tops):
        if rule == GRADIENT:
            return self.backward(bottoms, tops, r_tops)
        if self.operation == EltwiseOp.SUM:
            return self.join_relevance(rule, bottoms, tops[0], r_tops[0])
        if self.operation == EltwiseOp.MAX:
            return self.winner_relevance(bottoms, tops[0], r_tops[0])
        raise UnsupportedLayerError("layer %d '%s': Eltwise PROD has no relevance rule"
                                    % (self.index, self.name))

    def join_relevance(self, rule, xs, y, r):
        """SUM as the linear map y = sum_k c_k x_k, one map per element: the rule sees every
        element as one "image" of an inner product with K = #bottoms inputs and weights coeff."""
        stacked = np.stack([x.reshape(-1) for x in xs], axis=1)            # (P, K)
        weights = np.asarray(self.coeff, np.float32).reshape(1, -1)        # (1, K)
        out = dense_relevance(rule, stacked, weights, None, r.reshape(-1, 1), z=y.reshape(-1, 1))
        return [np.ascontiguousarray(out[:, k]).reshape(xs[k].shape) for k in range(len(xs))]

    def winner_relevance(self, xs, y, r):
        """MAX: all relevance to the first maximal bottom (like max pooling)."""
        taken = np.zeros(y.shape, dtype=bool)
        out = []
        for x in xs:
            mine = (x == y) & ~taken
            taken |= mine
            out.append(np.where(mine, r, np.float32(0)).astype(np.float32))
        return out

    def relevance_text(self, rule):
        if rule == GRADIENT:
            return GRADIENT
        return repr(rule) + " (join)" if self.operation == EltwiseOp.SUM else "winner"
