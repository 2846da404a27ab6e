"""Every size, count and number limit of caffelrp, and the checks that enforce them.

Two kinds of limit (README "Limits" lists each with its default and how to raise it):

* What Caffe 1.0 itself could not run, refused when the network is built (``ShapeError`` naming
  the layer and the value): Caffe keeps kernel, pad, stride, dilation, num_output, group and
  local_size in a 32-bit ``int`` (a prototxt value of 2^31..2^32-1 becomes negative there), forms
  ``in + 2*pad`` in ``int``, and refuses a blob of more than INT_MAX elements (``Blob::Reshape``:
  "blob size exceeds INT_MAX"). These are not adjustable: they are what the format means.
* Bounds on work and memory that protect a run from hostile or mistyped input (image pixels,
  ``--base-size``, Integrated Gradients steps, SmoothGrad samples): a default that real use never
  reaches, and an option (or keyword) to raise it.

Numbers given by a user (eps, beta, scale, ...) must be finite; ``finite`` and ``positive``
raise ``UsageError`` with the option's name.
"""
import math

from .errors import CaffeLRPError, ShapeError

INT_MAX = 2 ** 31 - 1

# -- bounds on work and memory (defaults; each can be raised where it is used) ------------------
MAX_IMAGE_PIXELS = 50_000_000        # width*height read from the image header before decoding
MAX_BASE_SIZE = 8192                 # explain --base-size (pixels of the shorter side)
MAX_IG_STEPS = 100_000               # Integrated Gradients steps / max_steps
MAX_SAMPLES = 100_000                # SmoothGrad samples

# Fields of a layer's parameter message that Caffe reads into an ``int``.
_INT_FIELDS = {
    "kernel_size", "kernel_h", "kernel_w", "pad", "pad_h", "pad_w", "stride", "stride_h",
    "stride_w", "dilation", "num_output", "group", "local_size", "offset", "tiles", "axis",
    "num_axes", "top_k", "new_height", "new_width", "height", "width", "channels",
    "batch_size", "input_dim", "dim", "slice_point", "pooled_h", "pooled_w",
}


class UsageError(CaffeLRPError):
    """An argument (command-line option or keyword) is outside what caffelrp accepts."""


# -- network parameters (checked before a layer object is made) ---------------------------------
def check_layer_param(lp, index, source):
    """Refuse integer fields of layer ``lp`` that do not fit Caffe's int (``ShapeError``)."""
    for field, value in _int_fields(lp):
        if value > INT_MAX or value < -INT_MAX - 1:
            raise ShapeError("%s: layer %d '%s' (%s): %s = %d does not fit Caffe's 32-bit int "
                             "(at most %d); Caffe could not run this layer"
                             % (source, index, lp.name, lp.type, field, value, INT_MAX))


def _int_fields(message):
    for fd, value in message.ListFields():
        repeated = _is_repeated(fd)
        if fd.message_type is not None:
            items = value if repeated else [value]
            for item in items:
                yield from _int_fields(item)
        elif fd.name in _INT_FIELDS and fd.cpp_type in (fd.CPPTYPE_INT32, fd.CPPTYPE_UINT32,
                                                         fd.CPPTYPE_INT64, fd.CPPTYPE_UINT64):
            for v in (value if repeated else [value]):
                yield fd.name, int(v)


def _is_repeated(fd):
    flag = getattr(fd, "is_repeated", None)   # protobuf >= 6; older ones have ``label``
    return bool(flag) if flag is not None else fd.label == fd.LABEL_REPEATED


# -- shapes (checked during shape inference, before anything is allocated) ----------------------
def check_blob_shape(shape, what):
    """A blob Caffe could hold: non-negative dims, at most INT_MAX elements."""
    count = 1
    for d in shape:
        d = int(d)
        if d < 0:
            raise ShapeError("%s has a negative dimension: %s" % (what, tuple(shape)))
        count *= d
    if count > INT_MAX:
        raise ShapeError("%s has shape %s = %d elements; Caffe's blobs hold at most %d "
                         "(Blob::Reshape: blob size exceeds INT_MAX)"
                         % (what, tuple(int(d) for d in shape), count, INT_MAX))


def check_layer_shapes(layer, bottom_shapes):
    """Before ``layer.setup``: its padded extents and weight blobs fit Caffe's int."""
    pads = _pads(layer)
    if pads is not None:
        for shape in bottom_shapes:
            if len(shape) == 4:
                for axis, (extent, pad) in enumerate(zip(shape[2:], pads)):
                    if extent + 2 * pad > INT_MAX:
                        raise ShapeError("%s: input %s + 2 * pad %d = %d does not fit Caffe's "
                                         "32-bit int" % (layer.describe(), ("height", "width")[
                                             axis], pad, extent + 2 * pad))
    try:
        shapes = layer.param_shapes(bottom_shapes)
    except CaffeLRPError:
        return  # setup reports it with its own message
    for i, shape in enumerate(shapes):
        check_blob_shape(shape, "%s: weight blob %d" % (layer.describe(), i))


def check_top_shapes(layer, top_shapes):
    for i, shape in enumerate(top_shapes):
        check_blob_shape(shape, "%s: top %d" % (layer.describe(), i))


def _pads(layer):
    geometry = getattr(layer, "geometry", None)
    if geometry is not None and hasattr(geometry, "ph"):
        return geometry.ph, geometry.pw
    pad = getattr(layer, "pad", None)
    if isinstance(pad, tuple) and len(pad) == 2:
        return pad
    return None


# -- user numbers -------------------------------------------------------------------------------
def finite(value, name):
    """``value`` as a float; UsageError if it is not a finite number."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise UsageError("%s must be a number, got %r" % (name, value)) from None
    if not math.isfinite(v):
        raise UsageError("%s must be a finite number, got %r" % (name, value))
    return v


def in_range(value, name, lo=None, hi=None, lo_open=False, hint=""):
    """A finite number within [lo, hi] (or (lo, hi] with ``lo_open``); UsageError otherwise."""
    v = finite(value, name)
    if lo is not None and (v < lo or (lo_open and v == lo)):
        raise UsageError("%s must be %s %g, got %g%s" % (name, ">" if lo_open else ">=", lo, v,
                                                        hint))
    if hi is not None and v > hi:
        raise UsageError("%s must be <= %g, got %g%s" % (name, hi, v, hint))
    return v


def count_arg(value, name, lo=1, hi=None, hint=""):
    """An integer in [lo, hi]; UsageError otherwise (``hint`` says how to raise ``hi``)."""
    if isinstance(value, bool) or not isinstance(value, (int,)) and not (
            isinstance(value, float) and value.is_integer()):
        try:
            value = int(str(value), 10)
        except ValueError:
            raise UsageError("%s must be an integer, got %r" % (name, value)) from None
    value = int(value)
    if value < lo:
        raise UsageError("%s must be >= %d, got %d" % (name, lo, value))
    if hi is not None and value > hi:
        raise UsageError("%s must be <= %d, got %d%s" % (name, hi, value, hint))
    return value



def limit(name):
    """The bound ``name`` (e.g. "MAX_BASE_SIZE"): environment variable CAFFELRP_<name> if set,
    else the default of this module."""
    import os
    text = os.environ.get("CAFFELRP_" + name)
    if not text:
        return globals()[name]
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise UsageError("CAFFELRP_%s must be a positive integer, got %r" % (name, text))
    return value


def _raise_hint(name):
    return " (the limit; set CAFFELRP_%s to raise it)" % name


# -- the arguments of the library calls and the CLI ---------------------------------------------
def check_lrp_arguments(eps, beta, bounds=None, gamma=None):
    """Net.relevance: finite eps >= 0 and beta >= 0, a (low, high) pair of finite bounds."""
    in_range(eps, "eps", lo=0)
    in_range(beta, "beta", lo=0)
    if gamma is not None:
        in_range(gamma, "gamma", lo=0)
    if bounds is not None:
        check_pair(bounds, "bounds")


def check_pair(pair, name):
    """(low, high): two finite numbers (arrays per channel are allowed for each)."""
    import numpy as np
    try:
        n = len(pair)
    except TypeError:
        n = -1
    if n != 2:
        raise UsageError("%s must be a pair (low, high), got %r" % (name, pair))
    for v in pair:
        try:
            a = np.asarray(v, dtype=np.float64)
        except (TypeError, ValueError):
            raise UsageError("%s must hold numbers, got %r" % (name, pair)) from None
        if not np.all(np.isfinite(a)):
            raise UsageError("%s must be finite, got %r" % (name, pair))


def check_ig_arguments(steps, tol, max_steps):
    cap = limit("MAX_IG_STEPS")
    if not isinstance(steps, str):
        count_arg(steps, "steps", 1, cap, _raise_hint("MAX_IG_STEPS"))
    in_range(tol, "tol", lo=0, lo_open=True)
    count_arg(max_steps, "max_steps", 1, cap, _raise_hint("MAX_IG_STEPS"))


def check_smoothgrad_arguments(samples, noise, input_range=None):
    count_arg(samples, "samples", 1, limit("MAX_SAMPLES"), _raise_hint("MAX_SAMPLES"))
    in_range(noise, "noise", lo=0)
    if input_range is not None:
        check_pair(input_range, "input_range")


def check_explain_options(args):
    """``explain``'s options, before any image is read: usage errors (exit 2), not one failure
    per image. Options a method does not have are skipped."""
    def opt(name):
        return getattr(args, name, None)

    if opt("base_size") is not None:
        count_arg(args.base_size, "--base-size", 1, limit("MAX_BASE_SIZE"),
                  _raise_hint("MAX_BASE_SIZE"))
    if opt("eps") is not None:
        in_range(args.eps, "--eps", lo=0)
    if opt("beta") is not None:
        in_range(args.beta, "--beta", lo=0)
    if opt("samples") is not None:
        count_arg(args.samples, "--samples", 1, limit("MAX_SAMPLES"), _raise_hint("MAX_SAMPLES"))
    if opt("noise") is not None:
        in_range(args.noise, "--noise", lo=0)
    if opt("steps") is not None and not isinstance(args.steps, str):
        count_arg(args.steps, "--steps", 1, limit("MAX_IG_STEPS"), _raise_hint("MAX_IG_STEPS"))
    if opt("tol") is not None:
        in_range(args.tol, "--tol", lo=0, lo_open=True)
    if opt("max_steps") is not None:
        count_arg(args.max_steps, "--max-steps", 1, limit("MAX_IG_STEPS"),
                  _raise_hint("MAX_IG_STEPS"))
    if opt("scale") is not None:
        in_range(args.scale, "--scale", lo=0, lo_open=True)
    if opt("overlay_alpha") is not None:
        in_range(args.overlay_alpha, "--overlay-alpha", lo=0, hi=1)
