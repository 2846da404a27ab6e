"""LRP rules for linear maps (Convolution, InnerProduct, and per-channel affine maps).

A rule turns (layer input, linear map, upper relevance R) into the relevance of the input. It sees
the layer through a ``LinearMap``: products with the weights W (O, K) or a part of them (W+, W-,
W^2, all-ones) in both directions, and the bias. Every rule works on "columns": an input matrix
X (K, P), the upper relevance R (O, P) and the layer's pre-activation z (O, P, bias included, taken
from the forward pass), where P counts the places the map is applied (images for an inner product,
output positions for a convolution). Its result is the relevance of every column entry, X-shaped;
a convolution folds it back onto the image with col2im (entries in the zero padding are dropped,
as in the original). Rules never know about networks; ``caffelrp.composites`` says which rule a
layer gets.

All arithmetic is float32 with GEMMs (``caffelrp.kernels.gemm.matmul``), like the original.

Epsilon (original formula type 0, spec 2.2 "EPS"):
    z_j = sum_i x_i w_ij + b_j  (bias included),
    s_j = R_j / (z_j + eps) if z_j > 0, R_j / (z_j - eps) if z_j < 0, R_j (undivided) if z_j == 0,
    R_i = x_i sum_j w_ij s_j.

Alpha-beta (original type 2, "AB4"/"ABslow"; parameter beta >= 0, alpha = 1 + beta):
    z+_j = sum_i max(0, x_i w_ij) + max(0, b_j),  z-_j = sum_i min(0, x_i w_ij) + min(0, b_j),
    R_i = sum_j alpha max(0, x_i w_ij) R_j / z+_j  -  beta min(0, x_i w_ij) R_j / z-_j,
    a term whose denominator is not strictly positive (z+) / negative (z-) contributes nothing
    (its products are all zero then). The bias takes its share and never receives relevance.
"""
import numpy as np

from . import scratch
from .kernels.gemm import matmul
from .kernels.im2col import col2im, im2col
from .kernels.lrp_ratios import (alpha_beta_ratios, epsilon_ratio, multiply_into,
                                 signed_product)
from .layers.conv import COLUMN_BUDGET, channels_as_rows
from .threads import get_num_threads, threads_for

WEIGHT_PARTS = ("all", "positive", "negative", "square")


def _f32(a):
    return np.ascontiguousarray(a, dtype=np.float32)


def _gemm_operand(a):
    """``a`` as float32 with contiguous rows or columns (what the GEMM kernel takes)."""
    a = np.asarray(a, dtype=np.float32)
    if a.strides[-1] == 4 or a.strides[0] == 4 or a.size == 0:
        return a
    return np.ascontiguousarray(a)


def _product(a, b, role=None):
    """a @ b, float32, through the OpenMP-split sgemm kernel; into the scratch buffer ``role``
    when one is named (see caffelrp.scratch)."""
    a, b = _gemm_operand(a), _gemm_operand(b)
    shape = (a.shape[0], b.shape[1])
    out = np.empty(shape, dtype=np.float32) if role is None else scratch.take(role, shape)
    matmul(a, b, out, get_num_threads())
    return out


def _image_columns(a):
    """(m, O, OH, OW) -> (O, m*OH*OW), the column order of a multi-image im2col matrix."""
    m, o = a.shape[:2]
    if m == 1:
        return a.reshape(o, -1)
    return np.ascontiguousarray(a.reshape(m, o, -1).transpose(1, 0, 2)).reshape(o, -1)


def _divide_where(r, z, keep):
    """r / z where ``keep``, else 0 (float32)."""
    return np.where(keep, r / np.where(keep, z, np.float32(1)), np.float32(0)).astype(np.float32)


def _is_matrix(*arrays):
    return all(a.ndim == 2 and a.dtype == np.float32 for a in arrays)


def _times_input(X, g):
    """x_i * g_i, written into g (a fresh product) when the fused kernel can."""
    if _is_matrix(X, g) and g.flags.writeable:
        multiply_into(X, g, threads_for(g.size))
        return g
    return (X * g).astype(np.float32, copy=False)


def _epsilon_ratio(R, z, eps):
    """R / (z + eps sign(z)), R itself where z == 0 (spec 2.2 EPS)."""
    if _is_matrix(R, z):
        out = np.empty(R.shape, dtype=np.float32)
        epsilon_ratio(R, z, eps, out, threads_for(out.size))
        return out
    denom = np.where(z > 0, z + eps, np.where(z < 0, z - eps, np.float32(1)))
    return (R / denom).astype(np.float32)


def _alpha_beta_ratios(R, zp, z, bias_p, offset, alpha, beta):
    """(alpha R / z+ where z+ > 0, beta R / z- where z- < 0) with z+ = zp + bias_p and
    z- = z - z+ - offset (see caffelrp.kernels.lrp_ratios); the second is None for beta == 0."""
    rows = R.shape[0]
    if _is_matrix(R, zp) and (z is None or _is_matrix(z)) and zp.flags.writeable:
        bp = np.zeros(rows, np.float32) if bias_p is None else _f32(bias_p.reshape(-1))
        off = np.zeros(rows, np.float32) if offset is None else _f32(offset.reshape(-1))
        sp = np.empty(R.shape, dtype=np.float32)
        sn = np.empty(R.shape, dtype=np.float32) if beta > 0 else sp
        alpha_beta_ratios(R, zp, zp if z is None else z, bp, off, alpha, beta, sp, sn,
                          threads_for(R.size))
        return sp, (sn if beta > 0 else None)
    zp = zp if bias_p is None else zp + bias_p
    sp = alpha * _divide_where(R, zp, zp > 0)
    if beta == 0:
        return sp, None
    zn = z - zp if offset is None else z - zp - offset
    return sp, beta * _divide_where(R, zn, zn < 0)


# ---------------------------------------------------------------------------- linear maps
class LinearMap:
    """The weights W (O, K) and bias b (O,) of one linear map (an inner product, or one group of a
    convolution), as the rules see it: products with W or a part of it, in both directions.

    ``rows_first``: the products are computed as (P, K) @ (K, O) rather than (O, K) @ (K, P), so
    that an inner product at batch 1 (P = 1) runs as a matrix-vector product. ``cache`` (a dict
    owned by the layer, or None) keeps the weight parts between passes: W+ of VGG-16's fc6 costs as
    much to form as one product with it. ``use_scratch``: products asked for with a ``role`` go to
    the scratch buffers (only where the caller consumes them before the next column block, as a
    convolution does with col2im).
    """

    def __init__(self, W, b=None, rows_first=False, cache=None, key=None, use_scratch=False):
        self.W = _f32(W)
        self.b = None if b is None else np.asarray(b, dtype=np.float32).reshape(-1)
        self.rows_first = rows_first
        self.use_scratch = use_scratch
        self._cache = {} if cache is None else cache
        self._key = key
        self.outputs, self.fan_in = self.W.shape

    def weights(self, part="all"):
        if part == "all":
            return self.W
        key = (self._key, part)
        if key not in self._cache:
            if part == "positive":
                value = np.maximum(self.W, np.float32(0))
            elif part == "negative":  # exact: every entry is w or 0
                value = self.W - self.weights("positive")
            elif part == "square":
                value = self.W * self.W
            else:
                raise ValueError("weight part must be one of %s, got %r" % (WEIGHT_PARTS, part))
            self._cache[key] = value
        return self._cache[key]

    def bias(self, part="all"):
        """The bias (or its positive / negative part) as an (O, 1) column, or None."""
        if self.b is None:
            return None
        b = self.b
        if part == "positive":
            b = np.maximum(b, np.float32(0))
        elif part == "negative":
            b = np.minimum(b, np.float32(0))
        return b[:, None]

    def forward(self, X, part="all", role=None):
        """sum_i w_ij x_i for every column of X (K, P): (O, P)."""
        Wp = self.weights(part)
        if self.rows_first:
            return _product(X.T, Wp.T).T
        return _product(Wp, X, role if self.use_scratch else None)

    def backward(self, S, part="all", role=None):
        """sum_j w_ij s_j for every column of S (O, P): (K, P)."""
        Wp = self.weights(part)
        if self.rows_first:
            return _product(S.T, Wp).T
        return _product(Wp.T, S, role if self.use_scratch else None)

    def spread_uniformly(self, S):
        """sum_j s_j, copied to every input of the column: the transposed map with all-ones
        weights, without forming them."""
        col = S.sum(axis=0, dtype=np.float32)
        return np.broadcast_to(col[None, :], (self.fan_in,) + col.shape)

    def square_row_sums(self):
        """sum_i w_ij^2 per output j: (O,)."""
        return self.weights("square").sum(axis=1, dtype=np.float32)


class DiagonalMap:
    """A per-element affine map y = a x + c (BatchNorm, Scale, Bias standing alone): every output
    has exactly one input. a and c broadcast against the data (any layout)."""

    fan_in = 1

    def __init__(self, a, c=None):
        self.a = np.asarray(a, dtype=np.float32)
        self.b = None if c is None else np.asarray(c, dtype=np.float32)

    def weights(self, part="all"):
        if part == "positive":
            return np.maximum(self.a, np.float32(0))
        if part == "negative":
            return np.minimum(self.a, np.float32(0))
        if part == "square":
            return self.a * self.a
        return self.a

    def bias(self, part="all"):
        if self.b is None:
            return None
        if part == "positive":
            return np.maximum(self.b, np.float32(0))
        if part == "negative":
            return np.minimum(self.b, np.float32(0))
        return self.b

    def forward(self, X, part="all", role=None):
        return self.weights(part) * X

    backward = forward

    def spread_uniformly(self, S):
        return S

    def square_row_sums(self):
        return self.weights("square")


def _with_bias(z, lin, part="all"):
    b = lin.bias(part)
    return z if b is None else z + b


# --------------------------------------------------------------------------------- rules
class Rule:
    name = "rule"
    needs_z = False   # whether ``columns`` uses the forward pre-activation z
    is_gradient = False   # the transposed map: a layer may use its own backward instead

    def columns(self, X, lin, R, z=None, aux=(), nonnegative=None):
        """Relevance (K, P) of the column entries X (K, P) of the linear map ``lin`` for the upper
        relevance R (O, P); ``z`` the forward pre-activation (O, P) or None (computed);
        ``aux`` the columns of ``aux_images`` (same layout as X); ``nonnegative`` whether X has
        no negative entry, when the caller knows."""
        raise NotImplementedError

    def aux_images(self, x):
        """Extra arrays shaped like the layer input that the rule needs in column form."""
        return ()

    def diagonal(self, x, a, c, R, z=None):
        """Relevance through a per-element affine map y = a x + c (standalone BatchNorm/Scale)."""
        return self.columns(x, DiagonalMap(a, c), R, z).astype(np.float32, copy=False)

    # -- the two layer shapes ---------------------------------------------------------------
    def dense(self, a, W, b, R, z=None, cache=None, input_shape=None):
        """Inner product: a (N, K) inputs, W (O, K), b (O,) or None, R (N, O), z (N, O) the
        forward output or None -> (N, K). ``input_shape``: the layer input's shape before
        flattening (for rules with ``aux_images``)."""
        a = np.asarray(a, dtype=np.float32)
        lin = LinearMap(W, b, rows_first=True, cache=cache, key="ip")
        shape = a.shape if input_shape is None else input_shape
        # aux images come shaped like ``a`` (parts of it) or like the layer input (z^B bounds)
        aux = tuple((v if v.shape == a.shape else np.broadcast_to(v, shape).reshape(a.shape)).T
                    for v in (np.asarray(v, np.float32) for v in self.aux_images(a)))
        zt = None if z is None else np.asarray(z, dtype=np.float32).T
        out = self.columns(a.T, lin, np.asarray(R, dtype=np.float32).T, zt, aux,
                           not (a < 0).any())
        return _f32(out.T)

    def conv(self, x, W, b, R, geometry, group=1, z=None, cache=None):
        """Convolution: x (N, C, H, W), W (O, C/group, kh, kw), b (O,) or None,
        R (N, O, OH, OW), geometry = (kh, kw, ph, pw, sh, sw, dh, dw), z (N, O, OH, OW) the forward
        output or None -> (N, C, H, W).

        Images go through in chunks whose column matrix stays within the column budget, so that
        one GEMM covers several images where the layer is small (VGG-16's conv5: 196 columns per
        image); the temporaries live in scratch buffers, consumed by col2im before the next chunk.
        """
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
                              for v in self.aux_images(x))
        out = np.empty_like(x)
        threads = get_num_threads()
        nonnegative = not (x < 0).any()    # zero padding keeps the columns so, too
        spatial = oh * ow
        # 1x1, stride 1, no pad: the images are their own column matrix (no im2col, no col2im)
        pointwise = kh == kw == 1 and geometry[4] == geometry[5] == 1 and \
            geometry[2] == geometry[3] == 0
        chunk = max(1, COLUMN_BUDGET // max(c * kh * kw * spatial * 4, 1))
        for n0 in range(0, n, chunk):
            m = min(chunk, n - n0)
            cols = []
            for j, image in enumerate(images):
                if pointwise:
                    cols.append(channels_as_rows(_f32(image[n0:n0 + m])))
                    continue
                col = scratch.take(scratch.COLUMNS if j == 0 else (scratch.COLUMNS, j),
                                   (c * kh * kw, m * spatial))
                im2col(_f32(image[n0:n0 + m]), *geometry, oh, ow, col, threads_for(col.size))
                cols.append(col)
            r_c = _image_columns(R[n0:n0 + m])
            z_c = None if z is None else _image_columns(_f32(z[n0:n0 + m]))
            if group == 1:
                rel = self.conv_columns(cols[0], maps[0], r_c, z_c, tuple(cols[1:]), kh * kw,
                                        nonnegative)
            else:
                rel = scratch.take("lrp-groups", cols[0].shape)
                for g, lin in enumerate(maps):
                    rows, outs = slice(g * k, (g + 1) * k), slice(g * og, (g + 1) * og)
                    rel[rows] = self.conv_columns(
                        cols[0][rows], lin, r_c[outs], None if z_c is None else z_c[outs],
                        tuple(col[rows] for col in cols[1:]), kh * kw, nonnegative)
            if pointwise:
                out[n0:n0 + m] = rel.reshape(c, m, h, w).transpose(1, 0, 2, 3)
            else:
                col2im(_f32(rel), m, c, h, w, *geometry, oh, ow, out[n0:n0 + m], threads)
        return out

    def conv_columns(self, X, lin, R, z, aux, spatial, nonnegative=None):
        """``columns`` for one group of a convolution; ``spatial`` = kh * kw."""
        return self.columns(X, lin, R, z, aux, nonnegative)


class Epsilon(Rule):
    name = "epsilon"
    needs_z = True

    def __init__(self, eps):
        self.eps = np.float32(eps)

    def columns(self, X, lin, R, z=None, aux=(), nonnegative=None):
        if z is None:
            z = _with_bias(lin.forward(X), lin)
        return _times_input(X, lin.backward(_epsilon_ratio(R, z, self.eps), role="lrp-back0"))

    def __repr__(self):
        return "epsilon(%g)" % self.eps


class AlphaBeta(Rule):
    """Alpha-beta with alpha = 1 + beta (the original's convention), or the z+ rule
    (``beta=0, bias=False``: Montavon et al., "Explaining nonlinear classification decisions with
    deep Taylor decomposition", Pattern Recognition 2017)."""
    name = "alpha_beta"
    needs_z = True

    def __init__(self, beta, alpha=None, bias=True):
        beta = float(beta)
        if beta < 0:
            raise ValueError("alpha-beta needs beta >= 0 (the original aborts), got %g" % beta)
        if alpha is None:
            alpha = 1.0 + beta
        if abs(alpha - beta - 1.0) > 1e-6:
            raise ValueError("the original's alpha-beta rule has alpha = 1 + beta; got alpha %g, "
                             "beta %g" % (alpha, beta))
        self.alpha, self.beta = np.float32(alpha), np.float32(beta)
        self.use_bias = bias

    def aux_images(self, x):
        """Inputs of both signs (the first layer): their positive and negative parts, split on
        the image before im2col (fewer entries than in the column matrix)."""
        if not (x < 0).any():
            return ()
        return (np.maximum(x, np.float32(0)), np.minimum(x, np.float32(0)))

    def columns(self, X, lin, R, z=None, aux=(), nonnegative=None):
        if aux:
            nonnegative = False
            xp, xn = aux
        elif nonnegative is None:
            nonnegative = not (X < 0).any()
        if not nonnegative and not aux:
            xp, xn = np.maximum(X, np.float32(0)), np.minimum(X, np.float32(0))
        if nonnegative:   # after a ReLU or pooling: x- = 0, one product fewer
            zp = lin.forward(X, "positive", role="lrp-zplus")
        else:
            zp = lin.forward(xp, "positive", role="lrp-zplus")
            zp += lin.forward(xn, "negative", role="lrp-zminus")
        offset = None
        if self.beta > 0:
            # z- = z - z+: the sum of all products is that of the positive plus the negative
            # ones, and b = b+ + b- -- one product fewer than forming the negative ones again.
            # Without the bias (z+ rule) z- must not contain b-: subtract all of b.
            if z is None:
                z = _with_bias(lin.forward(X), lin)
            if not self.use_bias:
                offset = lin.bias()
        sp, sn = _alpha_beta_ratios(R, zp, z, lin.bias("positive") if self.use_bias else None,
                                    offset, self.alpha, self.beta)
        if nonnegative:
            # R_i = x_i [sum_j w+_ij alpha s+_j - sum_j w-_ij beta s-_j], with w- = w - w+
            if sn is None:
                g = lin.backward(sp, "positive", role="lrp-back0")
            else:
                g = lin.backward(sp + sn, "positive", role="lrp-back0")
                g -= lin.backward(sn, role="lrp-back1")
            return _times_input(X, g)
        # x+ meets w+ s+ and w- s-, x- meets w- s+ and w+ s- (alpha, beta inside s+, s-):
        # R_i = x_i [sum_j w+ s+ - w- s-] for x_i > 0, x_i [sum_j w- s+ - w+ s-] for x_i < 0
        if sn is None:
            pos = lin.backward(sp, "positive", role="lrp-back0")
            neg = lin.backward(sp, "negative", role="lrp-back1")
        else:
            q = lin.backward(sp + sn, "positive", role="lrp-back0")  # w+ s+ + w+ s-
            pos = lin.backward(sn, role="lrp-back1")                 # w s- = w+ s- + w- s-
            np.subtract(q, pos, out=pos)             # w+ s+ - w- s- (uses w- = w - w+)
            neg = lin.backward(sp, role="lrp-back2")
            np.subtract(neg, q, out=neg)             # w- s+ - w+ s-
        if _is_matrix(X, pos, neg):
            signed_product(X, pos, neg, pos, threads_for(pos.size))
            return pos
        return np.where(X > 0, X * pos, X * neg).astype(np.float32)

    def __repr__(self):
        if not self.use_bias and self.beta == 0:
            return "zplus"
        return "alpha_beta(alpha=%g, beta=%g)" % (self.alpha, self.beta)


class Gamma(Rule):
    """Gamma rule (Montavon et al., "Layer-wise relevance propagation: an overview", 2019):
    weights w + gamma w+ (and bias b + gamma b+),
    R_i = x_i sum_j (w_ij + gamma w+_ij) R_j / (z_j + gamma z+_j + eps sign),
    with z+_j = sum_i x_i w+_ij + b+_j. ``gamma = 0`` is the epsilon rule."""
    name = "gamma"
    needs_z = True

    def __init__(self, gamma=0.25, eps=1e-6):
        if gamma < 0:
            raise ValueError("the gamma rule needs gamma >= 0, got %g" % gamma)
        self.gamma, self.eps = np.float32(gamma), np.float32(eps)

    def columns(self, X, lin, R, z=None, aux=(), nonnegative=None):
        if z is None:
            z = _with_bias(lin.forward(X), lin)
        zg = z + self.gamma * _with_bias(lin.forward(X, "positive"), lin, "positive")
        denom = np.where(zg > 0, zg + self.eps, np.where(zg < 0, zg - self.eps, np.float32(1)))
        s = (R / denom).astype(np.float32)
        return X * (lin.backward(s) + self.gamma * lin.backward(s, "positive"))

    def __repr__(self):
        return "gamma(%g)" % self.gamma


class ZBox(Rule):
    """z^B rule for the first layer (spec 2.2 "ZB", Montavon et al. 2017): input x_i bounded by
    low_i <= x_i <= high_i,
    q_ij = x_i w_ij - low_i w+_ij - high_i w-_ij,  z_j = sum_i q_ij + max(0, b_j),
    R_i = sum_j q_ij (|z_j| > 1e-12 ? R_j / z_j : R_j).
    ``low``/``high`` broadcast against the layer input (e.g. -mean and 255 - mean per pixel)."""
    name = "zbox"

    def __init__(self, low, high):
        self.low = np.asarray(low, dtype=np.float32)
        self.high = np.asarray(high, dtype=np.float32)

    def aux_images(self, x):
        return (self.low, self.high)

    def columns(self, X, lin, R, z=None, aux=(), nonnegative=None):
        low, high = aux
        q = lin.forward(X)
        q -= lin.forward(low, "positive")
        q -= lin.forward(high, "negative")
        bias_p = lin.bias("positive")
        if bias_p is not None:
            q = q + bias_p
        big = np.abs(q) > np.float32(1e-12)
        s = np.where(big, R / np.where(big, q, np.float32(1)), R).astype(np.float32)
        return (X * lin.backward(s) - low * lin.backward(s, "positive")
                - high * lin.backward(s, "negative")).astype(np.float32, copy=False)

    def __repr__(self):
        return "zbox"


class Flat(Rule):
    """Flat rule (spec 2.2 FLATip / FLATconv); no input data, no bias.

    InnerProduct: R_i = (1/K) sum_j R_j (K inputs; conservative).
    Convolution: the transposed convolution with every weight 1/(kh*kw) (spatial kernel size
    only), R_i = sum_{j : i in RF(j)} R_j / (kh*kw) -- multiplies the total by C_in/group, as in
    the original.
    """
    name = "flat"

    def __init__(self, conservative=False):
        # conservative: a convolution divides by the whole receptive field (C_in/group * kh*kw),
        # as the flat rule of Kohlbrenner et al. (arXiv:1910.09840) does; the original does not
        self.conservative = conservative

    def columns(self, X, lin, R, z=None, aux=(), nonnegative=None):
        return self._uniform(X, lin, R, lin.fan_in)

    def conv_columns(self, X, lin, R, z, aux, spatial, nonnegative=None):
        return self._uniform(X, lin, R, lin.fan_in if self.conservative else spatial)

    @staticmethod
    def _uniform(X, lin, R, denom):
        spread = lin.spread_uniformly((R / np.float32(denom)).astype(np.float32))
        return np.ascontiguousarray(np.broadcast_to(spread, X.shape), dtype=np.float32)

    def __repr__(self):
        return "flat(conservative)" if self.conservative else "flat"


class WSquare(Rule):
    """w^2 rule (spec 2.2 WSQip / WSQconv): R_i = sum_j w_ij^2 / (sum_k w_kj^2) R_j, the sum over
    the whole kernel of output j (padding entries included); rows with sum <= 0 give nothing.
    No input data, no bias."""
    name = "w_square"

    def columns(self, X, lin, R, z=None, aux=(), nonnegative=None):
        denom = lin.square_row_sums()
        denom = denom[:, None] if np.ndim(denom) == 1 else denom
        s = _divide_where(R, denom, denom > 0)
        return np.broadcast_to(lin.backward(s, "square"), X.shape).astype(np.float32)

    def __repr__(self):
        return "w_square"


class Backprojection(Rule):
    """R_i = sum_j w_ij R_j: the transposed linear map, no input, no bias, no normalisation.
    The original's DECONV (types 26, 166) and the gradient of a linear layer (types 11, 99)."""
    name = "backprojection"
    is_gradient = True

    def columns(self, X, lin, R, z=None, aux=(), nonnegative=None):
        return np.broadcast_to(lin.backward(R), X.shape).astype(np.float32)

    def __repr__(self):
        return "backprojection"


def flat(conservative=False):
    return Flat(conservative)


def w_square():
    return WSquare()


def backprojection():
    return Backprojection()


def epsilon(eps):
    return Epsilon(eps)


def alpha_beta(alpha=None, beta=1.0):
    """alpha_beta(beta=b) or alpha_beta(alpha, beta); alpha must be 1 + beta (the original)."""
    return AlphaBeta(beta, alpha)


def zplus():
    """The z+ rule: positive contributions only, no bias (alpha 1, beta 0 without bias)."""
    return AlphaBeta(0.0, bias=False)


def gamma(value=0.25, eps=1e-6):
    return Gamma(value, eps)


def zbox(low, high):
    return ZBox(low, high)
