"""LRP rules for linear maps (Convolution, InnerProduct), as the LRP Toolbox's Caffe computes them.

A rule turns (layer input, weights W, bias b, upper relevance R) into the relevance of the input.
Every rule works on "columns": an input matrix X (K, P), weights W (O, K), bias b (O,) and the
upper relevance R (O, P), where P counts the places the map is applied (images for an inner
product, images x output positions for a convolution). Its result is the relevance of every column
entry, X (K, P)-shaped; a convolution folds it back onto the image with col2im (entries in the zero
padding are dropped, as in the original).

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
    The beta term is skipped for beta == 0, as in the original's conv implementation.
"""
import numpy as np

from .kernels.gemm import matmul
from .kernels.im2col import col2im, im2col
from .threads import get_num_threads, threads_for


def _mm(a, b):
    out = np.empty((a.shape[0], b.shape[1]), dtype=np.float32)
    matmul(a, b, out, get_num_threads())
    return out


def _f32(a):
    return np.ascontiguousarray(a, dtype=np.float32)


class Rule:
    name = "rule"

    def columns(self, X, W, b, R):
        """Relevance (K, P) of the column entries X (K, P) for W (O, K), b (O,)|None, R (O, P)."""
        raise NotImplementedError

    def conv_columns(self, X, W, b, R, spatial):
        """``columns`` for one group of a convolution; ``spatial`` = kh * kw."""
        return self.columns(X, W, b, R)

    # -- the two layer shapes ---------------------------------------------------------------
    def dense(self, a, W, b, R):
        """Inner product: a (N, K) inputs, W (O, K), b (O,) or None, R (N, O) -> (N, K)."""
        a = _f32(a)
        out = self.columns(_f32(a.T), _f32(W), b, _f32(R.T))
        return _f32(out.T)

    def conv(self, x, W, b, R, geometry, group=1):
        """Convolution: x (N, C, H, W), W (O, C/group, kh, kw), b (O,) or None,
        R (N, O, OH, OW), geometry = (kh, kw, ph, pw, sh, sw, dh, dw) -> (N, C, H, W)."""
        x = _f32(x)
        R = _f32(R)
        n, c, h, w = x.shape
        o, oh, ow = R.shape[1], R.shape[2], R.shape[3]
        kh, kw = geometry[0], geometry[1]
        cg, og = c // group, o // group
        k = cg * kh * kw
        weights = _f32(W).reshape(o, k)
        out = np.empty_like(x)
        threads = get_num_threads()
        for i in range(n):
            col = np.empty((c * kh * kw, oh * ow), dtype=np.float32)
            im2col(x[i:i + 1], *geometry, oh, ow, col, threads_for(col.size))
            rel = np.empty_like(col)
            r_i = R[i].reshape(o, oh * ow)
            for g in range(group):
                bg = None if b is None else b[g * og:(g + 1) * og]
                rel[g * k:(g + 1) * k] = self.conv_columns(col[g * k:(g + 1) * k],
                                                           weights[g * og:(g + 1) * og], bg,
                                                           r_i[g * og:(g + 1) * og], kh * kw)
            col2im(rel, 1, c, h, w, *geometry, oh, ow, out[i:i + 1], threads)
        return out


class Epsilon(Rule):
    name = "epsilon"

    def __init__(self, eps):
        self.eps = np.float32(eps)

    def columns(self, X, W, b, R):
        z = _mm(W, X)
        if b is not None:
            z += np.asarray(b, dtype=np.float32)[:, None]
        denom = np.where(z > 0, z + self.eps, np.where(z < 0, z - self.eps, np.float32(1)))
        s = (R / denom).astype(np.float32)  # z == 0: R passed on undivided
        return X * _mm(W.T, s)

    def __repr__(self):
        return "epsilon(%g)" % self.eps


class AlphaBeta(Rule):
    name = "alpha_beta"

    def __init__(self, beta, alpha=None):
        beta = float(beta)
        if beta < 0:
            raise ValueError("alpha-beta needs beta >= 0 (the original aborts), got %g" % beta)
        if alpha is None:
            alpha = 1.0 + beta
        if abs(alpha - beta - 1.0) > 1e-6:
            raise ValueError("the original's alpha-beta rule has alpha = 1 + beta; got alpha %g, "
                             "beta %g" % (alpha, beta))
        self.alpha, self.beta = np.float32(alpha), np.float32(beta)

    def columns(self, X, W, b, R):
        xp, xn = np.maximum(X, 0), np.minimum(X, 0)
        wp, wn = _f32(np.maximum(W, 0)), _f32(np.minimum(W, 0))
        bias = None if b is None else np.asarray(b, dtype=np.float32)[:, None]
        zp = _mm(wp, xp)
        zp += _mm(wn, xn)
        if bias is not None:
            zp += np.maximum(bias, 0)
        sp = np.where(zp > 0, R / np.where(zp > 0, zp, 1), 0).astype(np.float32)
        out = self.alpha * (xp * _mm(wp.T, sp) + xn * _mm(wn.T, sp))
        if self.beta > 0:
            zn = _mm(wn, xp)
            zn += _mm(wp, xn)
            if bias is not None:
                zn += np.minimum(bias, 0)
            sn = np.where(zn < 0, R / np.where(zn < 0, zn, -1), 0).astype(np.float32)
            out -= self.beta * (xn * _mm(wp.T, sn) + xp * _mm(wn.T, sn))
        return out.astype(np.float32, copy=False)

    def __repr__(self):
        return "alpha_beta(alpha=%g, beta=%g)" % (self.alpha, self.beta)


class Flat(Rule):
    """Flat rule (spec 2.2 FLATip / FLATconv); no input data, no bias.

    InnerProduct: R_i = (1/K) sum_j R_j (K inputs; conservative).
    Convolution: the transposed convolution with every weight 1/(kh*kw) (spatial kernel size
    only), R_i = sum_{j : i in RF(j)} R_j / (kh*kw) -- multiplies the total by C_in/group, as in
    the original.
    """
    name = "flat"

    def columns(self, X, W, b, R):
        return self._uniform(X, R, W.shape[1])

    def conv_columns(self, X, W, b, R, spatial):
        return self._uniform(X, R, spatial)

    @staticmethod
    def _uniform(X, R, denom):
        col = (R.sum(axis=0, dtype=np.float32) / np.float32(denom)).astype(np.float32)
        return np.ascontiguousarray(np.broadcast_to(col[None, :], X.shape), dtype=np.float32)

    def __repr__(self):
        return "flat"


class WSquare(Rule):
    """w^2 rule (spec 2.2 WSQip / WSQconv): R_i = sum_j w_ij^2 / (sum_k w_kj^2) R_j, the sum over
    the whole kernel of output j (padding entries included); rows with sum <= 0 give nothing.
    No input data, no bias."""
    name = "w_square"

    def columns(self, X, W, b, R):
        w2 = _f32(W * W)
        denom = w2.sum(axis=1, dtype=np.float32)
        s = np.where(denom[:, None] > 0, R / np.where(denom > 0, denom, 1)[:, None], 0)
        return _mm(w2.T, _f32(s))

    def __repr__(self):
        return "w_square"


class Backprojection(Rule):
    """R_i = sum_j w_ij R_j: the transposed linear map, no input, no bias, no normalisation.
    The original's DECONV (types 26, 166) and the gradient of a linear layer (types 11, 99)."""
    name = "backprojection"

    def columns(self, X, W, b, R):
        return _mm(_f32(W.T), R)

    def __repr__(self):
        return "backprojection"


def flat():
    return Flat()


def w_square():
    return WSquare()


def backprojection():
    return Backprojection()


def epsilon(eps):
    return Epsilon(eps)


def alpha_beta(alpha=None, beta=1.0):
    """alpha_beta(beta=b) or alpha_beta(alpha, beta); alpha must be 1 + beta (the original)."""
    return AlphaBeta(beta, alpha)
