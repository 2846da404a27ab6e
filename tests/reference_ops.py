"""Plain float64 numpy versions of Caffe's layers, written for clarity, not speed.

They restate caffe-format.md §3 independently of caffelrp's kernels, so the tests can compare.
"""
import math

import numpy as np


def conv_out(size, k, pad, stride, dilation=1):
    span = size + 2 * pad - (dilation * (k - 1) + 1)
    return int(span / stride) + 1        # C++ integer division truncates toward zero


def pool_out(size, k, pad, stride, clip=None):
    """Caffe's PoolingLayer::Reshape: ``clip`` (default pad > 0) when pad_h or pad_w is set."""
    out = int(math.ceil((size + 2 * pad - k) / stride)) + 1
    if (pad > 0 if clip is None else clip) and (out - 1) * stride >= size + pad:
        out -= 1
    return out


def convolution(x, w, b, stride=(1, 1), pad=(0, 0), dilation=(1, 1), group=1):
    x = np.asarray(x, np.float64)
    w = np.asarray(w, np.float64)
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    og = o // group
    oh = conv_out(h, kh, pad[0], stride[0], dilation[0])
    ow = conv_out(wd, kw, pad[1], stride[1], dilation[1])
    y = np.zeros((n, o, oh, ow))
    for oc in range(o):
        q = oc // og
        for i in range(oh):
            for j in range(ow):
                for u in range(kh):
                    r = i * stride[0] - pad[0] + u * dilation[0]
                    if not 0 <= r < h:
                        continue
                    for v in range(kw):
                        s = j * stride[1] - pad[1] + v * dilation[1]
                        if not 0 <= s < wd:
                            continue
                        y[:, oc, i, j] += x[:, q * cg:(q + 1) * cg, r, s] @ w[oc, :, u, v]
    if b is not None:
        y += np.asarray(b, np.float64)[None, :, None, None]
    return y


def deconvolution(x, w, b, stride=(1, 1), pad=(0, 0), dilation=(1, 1), group=1):
    x = np.asarray(x, np.float64)
    w = np.asarray(w, np.float64)
    n, c, h, wd = x.shape
    _, og, kh, kw = w.shape
    cg = c // group
    o = og * group
    oh = stride[0] * (h - 1) + dilation[0] * (kh - 1) + 1 - 2 * pad[0]
    ow = stride[1] * (wd - 1) + dilation[1] * (kw - 1) + 1 - 2 * pad[1]
    y = np.zeros((n, o, oh, ow))
    for ci in range(c):
        q = ci // cg
        for i in range(h):
            for j in range(wd):
                for u in range(kh):
                    r = i * stride[0] - pad[0] + u * dilation[0]
                    if not 0 <= r < oh:
                        continue
                    for v in range(kw):
                        s = j * stride[1] - pad[1] + v * dilation[1]
                        if not 0 <= s < ow:
                            continue
                        y[:, q * og:(q + 1) * og, r, s] += np.outer(x[:, ci, i, j], w[ci, :, u, v])
    if b is not None:
        y += np.asarray(b, np.float64)[None, :, None, None]
    return y


def pooling(x, method, kernel, pad=(0, 0), stride=(1, 1)):
    x = np.asarray(x, np.float64)
    n, c, h, w = x.shape
    oh = pool_out(h, kernel[0], pad[0], stride[0], any(pad))
    ow = pool_out(w, kernel[1], pad[1], stride[1], any(pad))
    y = np.zeros((n, c, oh, ow))
    for i in range(oh):
        for j in range(ow):
            h0, w0 = i * stride[0] - pad[0], j * stride[1] - pad[1]
            if method == "MAX":
                h1, w1 = min(h0 + kernel[0], h), min(w0 + kernel[1], w)
                h0, w0 = max(h0, 0), max(w0, 0)
                if h1 <= h0 or w1 <= w0:
                    y[:, :, i, j] = -np.finfo(np.float32).max
                else:
                    y[:, :, i, j] = x[:, :, h0:h1, w0:w1].max(axis=(2, 3))
            else:
                h1, w1 = min(h0 + kernel[0], h + pad[0]), min(w0 + kernel[1], w + pad[1])
                size = (h1 - h0) * (w1 - w0)
                h0, w0, h1, w1 = max(h0, 0), max(w0, 0), min(h1, h), min(w1, w)
                y[:, :, i, j] = x[:, :, h0:h1, w0:w1].sum(axis=(2, 3)) / size
    return y


def lrn_across(x, size, alpha, beta, k):
    x = np.asarray(x, np.float64)
    c = x.shape[1]
    half = (size - 1) // 2
    sq = x ** 2
    scale = np.empty_like(x)
    for ch in range(c):
        lo, hi = max(0, ch - half), min(c, ch + half + 1)
        scale[:, ch] = k + alpha / size * sq[:, lo:hi].sum(axis=1)
    return x * scale ** -beta


def lrn_within(x, size, alpha, beta):
    x = np.asarray(x, np.float64)
    n, c, h, w = x.shape
    half = (size - 1) // 2
    padded = np.zeros((n, c, h + 2 * half, w + 2 * half))
    padded[:, :, half:half + h, half:half + w] = x ** 2
    s = np.zeros_like(x)
    for u in range(size):
        for v in range(size):
            s += padded[:, :, u:u + h, v:v + w]
    return x * (1 + alpha / size ** 2 * s) ** -beta


def inner_product(x, w, b):
    x = np.asarray(x, np.float64).reshape(x.shape[0], -1)
    y = x @ np.asarray(w, np.float64).T
    return y + np.asarray(b, np.float64) if b is not None else y


def softmax(x, axis=1):
    x = np.asarray(x, np.float64)
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def batch_norm(x, mean, var, factor, eps):
    f = 0.0 if factor == 0 else 1.0 / factor
    shape = (1, -1) + (1,) * (x.ndim - 2)
    m = (np.asarray(mean, np.float64) * f).reshape(shape)
    v = (np.asarray(var, np.float64) * f).reshape(shape)
    return (np.asarray(x, np.float64) - m) / np.sqrt(v + eps)
