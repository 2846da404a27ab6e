"""LRP rules for linear maps (Convolution, InnerProduct, and per-channel affine maps).

A rule turns (layer input, linear map, upper relevance R) into the relevance of the input. It sees
the layer through a ``LinearMap``: products with the weights W (O, K), or with W as a
``Modifier`` changes it (its positive part W+, negative part W-, square, W + gamma W+, or one a
user writes), in both directions, and the bias (modified alike). Every rule works on "columns": an input matrix
X (K, P), the upper relevance R (O, P) and the layer's pre-activation z (O, P, bias included, taken
from the forward pass), where P counts the places the map is applied (images for an inner product,
output positions for a convolution). Its result is the relevance of every column entry, X-shaped.
Rules never know about networks or layouts: the layers form the columns and fold the result
back (``layers.conv.conv_relevance`` with im2col / col2im, ``layers.inner_product.
dense_relevance``), and ``caffelrp.composites`` says which rule a layer gets.

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
from .errors import ArgumentError
from .kernels.gemm import matmul
from .kernels.lrp_ratios import (alpha_beta_ratios, epsilon_ratio, multiply_into,
                                 signed_product)
from .threads import get_num_threads, threads_for

class Modifier:
    """How a rule changes a linear map's parameters: ``modifier(array)`` is the modified weights
    (or bias, or per-element factors), elementwise, float32. ``name`` identifies it: the layers
    keep W' between passes under it (W+ of VGG-16's fc6 costs as much to form as one product
    with it), so two modifiers that compute different things need different names."""

    def __init__(self, name, function):
        self.name, self.function = name, function

    def __call__(self, w):
        return np.asarray(self.function(np.asarray(w, np.float32)), dtype=np.float32)

    def __repr__(self):
        return self.name


IDENTITY = Modifier("identity", lambda w: w)
POSITIVE = Modifier("positive", lambda w: np.maximum(w, np.float32(0)))   # w+
NEGATIVE = Modifier("negative", lambda w: np.minimum(w, np.float32(0)))   # w- (w = w+ + w-)
SQUARE = Modifier("square", lambda w: w * w)


def gamma_shifted(gamma):
    """w + gamma w+ (the gamma rule's weights, Montavon et al. 2019)."""
    g = np.float32(gamma)
    return Modifier("gamma_shifted(%g)" % g, lambda w: w + g * np.maximum(w, np.float32(0)))


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
    convolution), as the rules see it: products with W or W modified (a ``Modifier``), in both
    directions.

    ``rows_first``: the products are computed as (P, K) @ (K, O) rather than (O, K) @ (K, P), so
    that an inner product at batch 1 (P = 1) runs as a matrix-vector product. ``cache`` (a dict
    owned by the layer, or None) keeps the modified weights between passes: W+ of VGG-16's fc6 costs as
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

    def weights(self, modifier=IDENTITY):
        if modifier is IDENTITY:
            return self.W
        key = (self._key, modifier.name)
        if key not in self._cache:
            self._cache[key] = _f32(modifier(self.W))
        return self._cache[key]

    def bias(self, modifier=IDENTITY):
        """The bias, modified, as an (O, 1) column, or None."""
        if self.b is None:
            return None
        return (self.b if modifier is IDENTITY else modifier(self.b))[:, None]

    def forward(self, X, modifier=IDENTITY, role=None):
        """sum_i w'_ij x_i for every column of X (K, P): (O, P)."""
        Wp = self.weights(modifier)
        if self.rows_first:
            return _product(X.T, Wp.T).T
        return _product(Wp, X, role if self.use_scratch else None)

    def backward(self, S, modifier=IDENTITY, role=None):
        """sum_j w'_ij s_j for every column of S (O, P): (K, P)."""
        Wp = self.weights(modifier)
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
        return self.weights(SQUARE).sum(axis=1, dtype=np.float32)


class DiagonalMap:
    """A per-element affine map y = a x + c (BatchNorm, Scale, Bias standing alone): every output
    has exactly one input. a and c broadcast against the data (any layout)."""

    fan_in = 1

    def __init__(self, a, c=None):
        self.a = np.asarray(a, dtype=np.float32)
        self.b = None if c is None else np.asarray(c, dtype=np.float32)

    def weights(self, modifier=IDENTITY):
        return self.a if modifier is IDENTITY else modifier(self.a)

    def bias(self, modifier=IDENTITY):
        if self.b is None:
            return None
        return self.b if modifier is IDENTITY else modifier(self.b)

    def forward(self, X, modifier=IDENTITY, role=None):
        return self.weights(modifier) * X

    backward = forward

    def spread_uniformly(self, S):
        return S

    def square_row_sums(self):
        return self.weights(SQUARE)


def _with_bias(z, lin, modifier=IDENTITY):
    b = lin.bias(modifier)
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

    def conv_columns(self, X, lin, R, z, aux, spatial, nonnegative=None):
        """``columns`` for one group of a convolution; ``spatial`` = kh * kw."""
        return self.columns(X, lin, R, z, aux, nonnegative)


class Epsilon(Rule):
    """The epsilon rule on the linear map with its weights and bias changed by ``weights`` (a
    ``Modifier``; the map itself by default, the original's rule, spec 2.2 "EPS"):
    z'_j = sum_i x_i w'_ij + b'_j,  R_i = x_i sum_j w'_ij s_j,  s_j = R_j / (z'_j + eps sign z'_j)
    (R_j undivided where z'_j == 0). ``gamma_shifted`` weights make it the gamma rule; a user's
    modifier, a rule of their own."""
    name = "epsilon"
    needs_z = True

    def __init__(self, eps, weights=IDENTITY):
        self.eps = np.float32(eps)
        self.weights = weights

    def columns(self, X, lin, R, z=None, aux=(), nonnegative=None):
        w = self.weights
        if z is None or w is not IDENTITY:    # the forward's z is that of the map itself
            z = _with_bias(lin.forward(X, w), lin, w)
        return _times_input(X, lin.backward(_epsilon_ratio(R, z, self.eps), w, role="lrp-back0"))

    def __repr__(self):
        if self.weights is IDENTITY:
            return "epsilon(%g)" % self.eps
        return "epsilon(%g, weights=%r)" % (self.eps, self.weights)


class AlphaBeta(Rule):
    """Alpha-beta with alpha = 1 + beta (the original's convention), or the z+ rule
    (``beta=0, bias=False``: Montavon et al., "Explaining nonlinear classification decisions with
    deep Taylor decomposition", Pattern Recognition 2017)."""
    name = "alpha_beta"
    needs_z = True

    def __init__(self, beta, alpha=None, bias=True):
        beta = float(beta)
        if beta < 0:
            raise ArgumentError("alpha-beta needs beta >= 0 (the original aborts), got %g" % beta)
        if alpha is None:
            alpha = 1.0 + beta
        if abs(alpha - beta - 1.0) > 1e-6:
            raise ArgumentError("the original's alpha-beta rule has alpha = 1 + beta; got alpha %g, "
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
            zp = lin.forward(X, POSITIVE, role="lrp-zplus")
        else:
            zp = lin.forward(xp, POSITIVE, role="lrp-zplus")
            zp += lin.forward(xn, NEGATIVE, role="lrp-zminus")
        offset = None
        if self.beta > 0:
            # z- = z - z+: the sum of all products is that of the positive plus the negative
            # ones, and b = b+ + b- -- one product fewer than forming the negative ones again.
            # Without the bias (z+ rule) z- must not contain b-: subtract all of b.
            if z is None:
                z = _with_bias(lin.forward(X), lin)
            if not self.use_bias:
                offset = lin.bias()
        sp, sn = _alpha_beta_ratios(R, zp, z, lin.bias(POSITIVE) if self.use_bias else None,
                                    offset, self.alpha, self.beta)
        if nonnegative:
            # R_i = x_i [sum_j w+_ij alpha s+_j - sum_j w-_ij beta s-_j], with w- = w - w+
            if sn is None:
                g = lin.backward(sp, POSITIVE, role="lrp-back0")
            else:
                g = lin.backward(sp + sn, POSITIVE, role="lrp-back0")
                g -= lin.backward(sn, role="lrp-back1")
            return _times_input(X, g)
        # x+ meets w+ s+ and w- s-, x- meets w- s+ and w+ s- (alpha, beta inside s+, s-):
        # R_i = x_i [sum_j w+ s+ - w- s-] for x_i > 0, x_i [sum_j w- s+ - w+ s-] for x_i < 0
        if sn is None:
            pos = lin.backward(sp, POSITIVE, role="lrp-back0")
            neg = lin.backward(sp, NEGATIVE, role="lrp-back1")
        else:
            q = lin.backward(sp + sn, POSITIVE, role="lrp-back0")  # w+ s+ + w+ s-
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
    """Gamma rule, generalised to signed inputs and outputs (Montavon et al., "Layer-wise
    relevance propagation: an overview", 2019, §10.2.3, for x >= 0 and z > 0; the sign-aware
    form of zennit's ``rules.Gamma``): an output boosts the contributions of its own sign,

        z_ij = x_i w_ij,  sigma_j = sign(z_j),  z^sigma_ij = max(0, z_ij) (z_j > 0) or
        min(0, z_ij) (z_j < 0),
        R_i = sum_j (z_ij + gamma z^sigma_ij) / d_j R_j,  d_j = sum_i (z_ij + gamma z^sigma_ij) + t_j
        + eps sign(d_j), with t_j = b_j + gamma b^sigma_j (``bias=True``) or 0.

    The denominator has the output's sign and |d_j| >= |z_j| (more so as gamma grows), so a
    neuron whose terms nearly cancel cannot blow up; where z_j > 0 and x >= 0 it is the 2019
    rule, i.e. the epsilon rule on the weights w + gamma w+ (``gamma_shifted``). Outputs with
    z_j == 0 pass nothing. ``bias=False``: the bias takes no share (and cannot give one: with
    the bias in, a bias opposite in sign to z_j hands the inputs more than R_j), so every output's
    relevance reaches the inputs exactly. ``gamma = 0`` is the epsilon rule (bias in)."""
    name = "gamma"
    needs_z = True

    def __init__(self, gamma=0.25, eps=1e-6, bias=True):
        if gamma < 0:
            raise ArgumentError("the gamma rule needs gamma >= 0, got %g" % gamma)
        self.gamma, self.eps, self.use_bias = np.float32(gamma), np.float32(eps), bias

    def columns(self, X, lin, R, z=None, aux=(), nonnegative=None):
        g = self.gamma
        if nonnegative is None:
            nonnegative = not (X < 0).any()
        if z is None:
            z = _with_bias(lin.forward(X), lin)
        if nonnegative:                          # (x w)^+ = x w+
            zp = lin.forward(X, POSITIVE)
        else:                                    # (x w)^+ = x+ w+ + x- w-
            xp, xn = np.maximum(X, np.float32(0)), np.minimum(X, np.float32(0))
            zp = lin.forward(xp, POSITIVE) + lin.forward(xn, NEGATIVE)
        b = lin.bias()
        contributions = z if b is None else z - b     # sum_i z_ij
        # the sign that decides: the output's, or without the bias the products' own sum
        signed = z if self.use_bias else contributions
        positive = signed > 0
        # sum_i z^sigma_ij: the positive products where z_j > 0, the negative ones where z_j < 0
        own = np.where(positive, zp, contributions - zp)
        d = contributions + g * own
        if self.use_bias and b is not None:
            d = d + b + g * np.where(positive, np.maximum(b, np.float32(0)),
                                     np.minimum(b, np.float32(0)))
        d = d + self.eps * np.sign(d)
        keep = (signed != 0) & (d != 0)
        s = _divide_where(R, d, keep)
        sp = np.where(positive, s, np.float32(0)).astype(np.float32)
        sn = (s - sp).astype(np.float32)
        # R_i = x_i [W^T s + gamma (W+^T s+ + W-^T s-)] for x_i > 0, with W+ and W- exchanged
        # for x_i < 0; with W- = W - W+: x_i > 0 meets W^T (s + gamma s-) + gamma W+^T (s+ - s-),
        # x_i < 0 meets W^T (s + gamma s+) - gamma W+^T (s+ - s-)
        shifted = g * lin.backward((sp - sn).astype(np.float32), POSITIVE)
        pos = lin.backward((s + g * sn).astype(np.float32)) + shifted
        if nonnegative:
            return _times_input(X, pos.astype(np.float32))
        neg = lin.backward((s + g * sp).astype(np.float32)) - shifted
        return np.where(X > 0, X * pos, X * neg).astype(np.float32)

    def __repr__(self):
        return "gamma(%g%s)" % (self.gamma, "" if self.use_bias else ", no bias")


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
        q -= lin.forward(low, POSITIVE)
        q -= lin.forward(high, NEGATIVE)
        bias_p = lin.bias(POSITIVE)
        if bias_p is not None:
            q = q + bias_p
        big = np.abs(q) > np.float32(1e-12)
        s = np.where(big, R / np.where(big, q, np.float32(1)), R).astype(np.float32)
        return (X * lin.backward(s) - low * lin.backward(s, POSITIVE)
                - high * lin.backward(s, NEGATIVE)).astype(np.float32, copy=False)

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
        return np.broadcast_to(lin.backward(s, SQUARE), X.shape).astype(np.float32)

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


def epsilon(eps, weights=IDENTITY):
    """The epsilon rule; ``weights``: a ``Modifier`` of the weights and bias (e.g.
    ``Modifier("clipped", lambda w: np.clip(w, -1, 1))``) for a rule of one's own."""
    return Epsilon(eps, weights)


def alpha_beta(alpha=None, beta=1.0):
    """alpha_beta(beta=b) or alpha_beta(alpha, beta); alpha must be 1 + beta (the original)."""
    return AlphaBeta(beta, alpha)


def zplus():
    """The z+ rule: positive contributions only, no bias (alpha 1, beta 0 without bias)."""
    return AlphaBeta(0.0, bias=False)


def gamma(value=0.25, eps=1e-6, bias=True):
    return Gamma(value, eps, bias)


def zbox(low, high):
    return ZBox(low, high)
