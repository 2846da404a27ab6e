"""Caffe-exact mode: the forward products made through a given BLAS library exactly as Caffe 1.0
makes them, and LRN's forward in Caffe's float32 order.

Why: in the edge-replicated bands of padded images, max-pool windows that tie in exact arithmetic
are decided by the last bit of the convolution's sgemm (README "Fidelity"). That bit depends on
the BLAS build, its kernels and how the product is split, so reproducing the original LRP Toolbox
bit for bit needs the same library (Debian 12's OpenBLAS 0.3.21) called with the same arguments
in the same order. This module does that, with ``ctypes``:

- Convolution (``base_conv_layer.cpp`` forward_cpu_gemm + forward_cpu_bias): per image, im2col
  (skipped for 1x1/stride 1/pad 0), then per group one row-major ``cblas_sgemm(NoTrans, NoTrans,
  M = out channels / group, N = OH*OW, K = in channels / group * kh * kw)``; the bias by a second
  sgemm ``(num_output x 1) @ (1 x OH*OW)`` of the bias and a row of ones, beta = 1.
- Deconvolution (backward_cpu_gemm + forward_cpu_bias): per image and group
  ``cblas_sgemm(Trans, NoTrans, kernel_dim, H*W, C_in / group)``, col2im (Caffe's summation
  order), the bias as above.
- InnerProduct (``inner_product_layer.cpp`` Forward_cpu): ``cblas_sgemm(NoTrans, Trans or
  NoTrans, M, N, K)`` and the bias by ``(M x 1) ones @ (1 x N) bias``, beta = 1. Caffe's CPU
  forward uses sgemm at every batch size (its sgemv branch for M == 1 is on the GPU only), so
  ``cblas_sgemv`` is loaded and checked but the forward does not call it.
- LRN ACROSS_CHANNELS (``lrn_layer.cpp`` CrossChannelForward_cpu): scale = k; the squares of one
  image with (size-1)/2 zero channels on each side; channel 0 gets ``cblas_saxpy(alpha/size)`` of
  padded channels 0..size-1; channel c copies channel c-1, adds the head channel c+size-1 and
  subtracts the tail channel c-1 (saxpy with -alpha/size); then y = powf(scale, -beta) * x.

The library's own thread count is set from caffelrp's (``openblas_set_num_threads``) before each
product. Gradients and relevance keep caffelrp's fast kernels: their rounding does not move ties.

Switched on by ``caffelrp.set_caffe_blas(path)``, the environment variable
``CAFFELRP_CAFFE_BLAS`` (read at first use) or the command line's ``--caffe-blas PATH``.
"""
import ctypes
import os

import numpy as np

from .errors import CaffeLRPError
from .threads import get_num_threads

ENV = "CAFFELRP_CAFFE_BLAS"
REQUIRED_SYMBOLS = ("cblas_sgemm", "cblas_sgemv", "cblas_saxpy")
# cblas.h enum values
ROW_MAJOR, NO_TRANS, TRANS = 101, 111, 112
CORE = "Haswell"   # OpenBLAS kernel family of the reference runs (see _load)

_FLOATS = ctypes.POINTER(ctypes.c_float)


class CaffeBlasError(CaffeLRPError):
    """The library given for Caffe-exact mode does not load or lacks a BLAS symbol."""


def _has_avx2_fma():
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "").split()
    except OSError:
        return False
    return "avx2" in flags and "fma" in flags


def _load(path):
    """ctypes.CDLL(path), with a DYNAMIC_ARCH OpenBLAS told to use its Haswell (AVX2+FMA)
    kernels, the ones the reference results were computed with: measured on an AVX-512 machine,
    OpenBLAS 0.3.21 picks its Cooperlake/SkylakeX sgemm, whose last bits differ (CaffeNet
    relevance 2e-2 off the original in the padded bands instead of 5e-6). A user's own
    OPENBLAS_CORETYPE is respected; OpenBLAS reads the variable once, when it loads."""
    if "OPENBLAS_CORETYPE" in os.environ or not _has_avx2_fma():
        return ctypes.CDLL(path)
    os.environ["OPENBLAS_CORETYPE"] = CORE
    try:
        return ctypes.CDLL(path)
    finally:
        del os.environ["OPENBLAS_CORETYPE"]


class _Library:
    def __init__(self, path):
        path = os.fspath(path)
        try:
            self.lib = _load(path)
        except OSError as e:
            raise CaffeBlasError("Caffe-exact BLAS %r does not load: %s" % (path, e)) from None
        missing = [s for s in REQUIRED_SYMBOLS if not hasattr(self.lib, s)]
        if missing:
            raise CaffeBlasError("Caffe-exact BLAS %r lacks %s (a CBLAS library such as "
                                 "OpenBLAS is needed)" % (path, ", ".join(missing)))
        self.path = path
        i, f, p = ctypes.c_int, ctypes.c_float, _FLOATS
        self.sgemm = self.lib.cblas_sgemm
        self.sgemm.argtypes = [i, i, i, i, i, i, f, p, i, p, i, f, p, i]
        self.sgemm.restype = None
        self.saxpy = self.lib.cblas_saxpy
        self.saxpy.argtypes = [i, f, p, i, p, i]
        self.saxpy.restype = None
        self.set_threads = getattr(self.lib, "openblas_set_num_threads", None)
        if self.set_threads is not None:
            self.set_threads.argtypes = [i]
            self.set_threads.restype = None
        self.config = None
        get_config = getattr(self.lib, "openblas_get_config", None)
        if get_config is not None:
            get_config.restype = ctypes.c_char_p
            self.config = get_config().decode("ascii", "replace").strip()

    def follow_thread_count(self):
        if self.set_threads is not None:
            self.set_threads(get_num_threads())


_library = None
_env_read = False


def set_caffe_blas(path):
    """Use the CBLAS library at ``path`` for the forward products, as Caffe 1.0 calls it
    (``None`` switches Caffe-exact mode off). A library that does not load or lacks
    cblas_sgemm / cblas_sgemv / cblas_saxpy is a CaffeBlasError naming it."""
    global _library, _env_read
    _env_read = True  # an explicit choice overrides the environment variable
    _library = None if path is None else _Library(path)


def _current():
    global _env_read
    if not _env_read:
        _env_read = True
        value = os.environ.get(ENV, "").strip()
        if value:
            set_caffe_blas(value)
    return _library


def active():
    """Is Caffe-exact mode on?"""
    return _current() is not None


def describe():
    """The mode for a sidecar: {"mode", "library", "config"}."""
    lib = _current()
    if lib is None:
        return {"mode": "default", "library": None, "config": None}
    return {"mode": "caffe-exact", "library": lib.path, "config": lib.config}


def _ptr(a):
    return a.ctypes.data_as(_FLOATS)


def _sgemm(ta, tb, m, n, k, a, lda, b, ldb, beta, c, ldc):
    """Row-major cblas_sgemm; a, b, c are float32 arrays (or views) starting at the operand."""
    _library.sgemm(ROW_MAJOR, ta, tb, m, n, k, 1.0, _ptr(a), lda, _ptr(b), ldb, beta, _ptr(c),
                   ldc)


def _floats(a):
    return np.ascontiguousarray(a, dtype=np.float32)


def _add_bias(y, bias):
    """Caffe's forward_cpu_bias: y (num_output, S) += bias (num_output x 1) @ ones (1 x S)."""
    o, s = y.shape
    ones = np.ones(s, dtype=np.float32)
    _sgemm(NO_TRANS, NO_TRANS, o, s, 1, bias, 1, ones, s, 1.0, y, s)


def convolution_forward(layer, x):
    """Caffe 1.0's ConvolutionLayer::Forward_cpu for one bottom (N, C, H, W)."""
    lib = _current()
    lib.follow_thread_count()
    from .kernels.im2col import im2col
    g = layer.geometry
    x = _floats(x)
    n, c, h, w = x.shape
    oh, ow = g.conv_out(h, w)
    o, groups = layer.num_output, layer.group
    og, cg = o // groups, c // groups
    kdim = cg * g.kh * g.kw
    spatial = oh * ow
    weights = _floats(layer.blobs[0]).reshape(o, kdim)
    bias = _floats(layer.blobs[1]) if layer.bias_term else None
    y = np.empty((n, o, spatial), dtype=np.float32)
    col = np.empty((c * g.kh * g.kw, spatial), dtype=np.float32)
    for i in range(n):
        if g.is_pointwise:
            cols = x[i].reshape(c, h * w)
        else:
            im2col(x[i:i + 1], *g.args(), oh, ow, col, 1)
            cols = col
        for gi in range(groups):
            _sgemm(NO_TRANS, NO_TRANS, og, spatial, kdim, weights[gi * og:], kdim,
                   cols[gi * kdim:], spatial, 0.0, y[i, gi * og:], spatial)
        if bias is not None:
            _add_bias(y[i], bias)
    return y.reshape(n, o, oh, ow)


def deconvolution_forward(layer, x):
    """Caffe 1.0's DeconvolutionLayer::Forward_cpu for one bottom (N, C, H, W)."""
    lib = _current()
    lib.follow_thread_count()
    from .kernels.im2col import col2im
    g = layer.geometry
    x = _floats(x)
    n, c, h, w = x.shape
    oh, ow = g.deconv_out(h, w)
    o, groups = layer.num_output, layer.group
    cg = c // groups
    kdim = (o // groups) * g.kh * g.kw
    spatial = h * w
    weights = _floats(layer.blobs[0]).reshape(c, kdim)
    bias = _floats(layer.blobs[1]) if layer.bias_term else None
    y = np.empty((n, o, oh, ow), dtype=np.float32)
    col = np.empty((o * g.kh * g.kw, spatial), dtype=np.float32)
    for i in range(n):
        xi = x[i].reshape(c, spatial)
        out = y[i].reshape(o, oh * ow) if g.is_pointwise else col
        for gi in range(groups):
            _sgemm(TRANS, NO_TRANS, kdim, spatial, cg, weights[gi * cg:], kdim, xi[gi * cg:],
                   spatial, 0.0, out[gi * kdim:], spatial)
        if not g.is_pointwise:
            col2im(col, 1, o, oh, ow, *g.args(), h, w, y[i:i + 1], 1)
        if bias is not None:
            _add_bias(y[i].reshape(o, oh * ow), bias)
    return y


def inner_product_forward(layer, x):
    """Caffe 1.0's InnerProductLayer::Forward_cpu; returns the top blob."""
    lib = _current()
    lib.follow_thread_count()
    m = int(np.prod(x.shape[:layer.axis], dtype=np.int64))
    k, nout = layer.k, layer.num_output
    x2 = _floats(x).reshape(m, k)
    weights = _floats(layer.blobs[0])
    y = np.empty((m, nout), dtype=np.float32)
    if layer.transpose:      # weights (K, N)
        _sgemm(NO_TRANS, NO_TRANS, m, nout, k, x2, k, weights, nout, 0.0, y, nout)
    else:                    # weights (N, K)
        _sgemm(NO_TRANS, TRANS, m, nout, k, x2, k, weights, k, 0.0, y, nout)
    if layer.bias_term:
        ones = np.ones(m, dtype=np.float32)
        _sgemm(NO_TRANS, NO_TRANS, m, nout, 1, ones, 1, _floats(layer.blobs[1]), nout, 1.0,
               y, nout)
    return y.reshape(x.shape[:layer.axis] + (nout,))


def lrn_across_forward(layer, x):
    """Caffe 1.0's LRNLayer::CrossChannelForward_cpu; returns (top, scale)."""
    lib = _current()
    lib.follow_thread_count()
    from .kernels.lrn import lrn_power_mul
    x = _floats(x)
    n, c, h, w = x.shape
    hw = h * w
    size = layer.size
    pre = (size - 1) // 2
    aos = np.float32(layer.alpha) / np.float32(size)   # Dtype alpha_over_size = alpha_ / size_
    scale = np.full((n, c, hw), np.float32(layer.k), dtype=np.float32)
    padded = np.zeros((c + size - 1, hw), dtype=np.float32)
    saxpy = lib.saxpy
    for i in range(n):
        np.multiply(x[i].reshape(c, hw), x[i].reshape(c, hw), out=padded[pre:pre + c])
        s = scale[i]
        for cc in range(size):
            saxpy(hw, aos, _ptr(padded[cc]), 1, _ptr(s[0]), 1)
        for cc in range(1, c):
            s[cc] = s[cc - 1]
            saxpy(hw, aos, _ptr(padded[cc + size - 1]), 1, _ptr(s[cc]), 1)
            saxpy(hw, -aos, _ptr(padded[cc - 1]), 1, _ptr(s[cc]), 1)
    scale = scale.reshape(x.shape)
    y = np.empty_like(x)
    lrn_power_mul(scale, x, np.float32(layer.beta), y)
    return y, scale


# --------------------------------------------------------------------------- command line
OPTION_HELP = ("Caffe-exact mode: make the convolution and inner-product forward products with "
               "this CBLAS library (e.g. Debian 12's "
               "/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0) exactly as Caffe "
               "1.0 does, to reproduce the original bit for bit (README 'Fidelity'; default: "
               "$%s, else off)" % ENV)


def add_option(parser, dest="caffe_blas"):
    """The ``--caffe-blas PATH`` option (``dest`` differs between the main parser and a
    subcommand's so that argparse's subparser defaults do not overwrite one another)."""
    parser.add_argument("--caffe-blas", dest=dest, metavar="PATH", help=OPTION_HELP)


def apply_option(args):
    """Switch Caffe-exact mode on if the command line asked for it."""
    for dest in ("caffe_blas", "caffe_blas_main"):
        path = getattr(args, dest, None)
        if path:
            set_caffe_blas(path)
