"""Turning an image file into a network input blob (BGR, 0..255, mean subtracted, C x H x W).

Two pipelines:

* ``image_to_blob``: the plain pycaffe-style one (caffe-format.md §4.1) used by ``classify``:
  resize the whole image to the network input, RGB -> BGR, subtract a mean pixel.
* ``toolbox_preprocess``: the LRP Toolbox demonstrator's (spec original-lrp.md §1.6), used by
  ``explain`` and the original-compatible mode: ImageMagick 6 (Q16) resize so that the longer side
  is ``base_size``, the demonstrator's centre crop with edge replication, its mean alignment, BGR.

The ImageMagick resize is emulated in numpy (``imagemagick_resize``): separable windowed filter,
Lanczos (3-lobe sinc-windowed sinc) when shrinking a true-colour image, Mitchell (B = C = 1/3)
when enlarging or for palette images, support scaled by the shrink factor, weights normalised per
output pixel, the two passes in ImageMagick's order with the intermediate image rounded to 16-bit
quanta. Each pass adds a few taps per output pixel (``resize_taps``, cached per size pair; the
kernel ``caffelrp.kernels.resample``), the same sums in the same order as a dense product with
the whole weight matrix, so the same bits. On the public reference images it reproduces the original's input blobs to within float32
rounding (see tests/test_preprocess.py for the bound).
"""
import functools
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from .errors import CaffeLRPError
from .files import file_sha256 as _file_sha256
from .imageio import ImageError, read_rgb  # noqa: F401  (ImageError: re-exported, its old home)
from .kernels.resample import resample_axis
from .threads import threads_for

# The ImageNet mean pixel of the BVLC models, BGR (caffe-format.md §4.1).
BVLC_MEAN_BGR = (104.00699, 116.66877, 122.67891)

QUANTUM_RANGE = 65535.0   # ImageMagick Q16, as the official build links (spec 1.6 step 2)
_EPSILON = 1e-15          # MagickEpsilon of ImageMagick 6


class MeanError(CaffeLRPError):
    """A mean file or mean value cannot be used."""


# ------------------------------------------------------------------------------- reading
def load_rgb(path):
    """The image as float32 H x W x 3 RGB in 0..255 (any 8-bit mode; for ``classify``)."""
    return read_rgb(path, strict=False)[0].astype(np.float32)


@dataclass
class SourceImage:
    """An 8-bit RGB image as read for the toolbox pipeline."""
    path: str
    rgb: np.ndarray          # uint8 (H, W, 3)
    palette: bool = False    # ImageMagick reads palette images as PseudoClass: Mitchell filter


def read_image(path):
    """Read an 8-bit RGB (or palette) image for the toolbox pipeline (caffelrp.imageio).

    Refused with an ImageError naming the file: missing, non-regular or unreadable files, images
    over the pixel limit, grayscale, images with an alpha channel or a transparent palette
    colour, 16-bit and float images, CMYK. The original would convert some of these on its own
    terms (spec 1.6 step 3: grey duplicated, alpha dropped without compositing); caffelrp asks
    for an explicit RGB file instead (issue 4, bad input).
    """
    rgb, palette = read_rgb(path, strict=True)
    return SourceImage(str(path), rgb, palette=palette)


# ------------------------------------------------------------------- ImageMagick resize
def fit_geometry(width, height, base_size):
    """The demonstrator's requested box and ImageMagick's aspect fit into it (spec 1.6 step 2):
    box = round(cols*r) x round(rows*r), r = base / max(cols, rows); then
    s = min(bw/cols, bh/rows) and the size floor(s*cols + 0.5) x floor(s*rows + 0.5), so the long
    side can come out one short (640x426 -> 255x170). Returns (new_width, new_height)."""
    r = base_size / max(width, height)
    bw, bh = np.floor(width * r + 0.5), np.floor(height * r + 0.5)
    s = min(bw / width, bh / height)
    return int(max(np.floor(s * width + 0.5), 1)), int(max(np.floor(s * height + 0.5), 1))


def _lanczos(x):
    # 3-lobe sinc windowed by sinc(x/3); ImageMagick's rational sinc approximation differs from
    # sin(pi x)/(pi x) by < 2.2e-8 relative, far below one Q16 quantum after normalisation
    return np.where(x < 3.0, np.sinc(x) * np.sinc(x / 3.0), 0.0)


def _mitchell(x):
    b = c = 1.0 / 3.0
    inner = ((12 - 9 * b - 6 * c) * x ** 3 + (-18 + 12 * b + 6 * c) * x ** 2 + (6 - 2 * b)) / 6
    outer = ((-b - 6 * c) * x ** 3 + (6 * b + 30 * c) * x ** 2 + (-12 * b - 48 * c) * x
             + (8 * b + 24 * c)) / 6
    return np.where(x < 1.0, inner, np.where(x < 2.0, outer, 0.0))


FILTERS = {"lanczos": (_lanczos, 3.0), "mitchell": (_mitchell, 2.0)}


def _window(n_in, n_out, kernel):
    # ImageMagick's per-output-pixel filter window (resize.c, HorizontalFilter/VerticalFilter)
    function, support = FILTERS[kernel]
    factor = n_out / n_in
    scale = max(1.0 / factor + _EPSILON, 1.0)
    support = scale * support
    bisect = (np.arange(n_out, dtype=np.float64) + 0.5) / factor + _EPSILON
    start = np.maximum(bisect - support + 0.5, 0.0).astype(np.int64)
    stop = np.minimum(bisect + support + 0.5, n_in).astype(np.int64)
    return function, scale, bisect, start, stop


def resize_weights(n_in, n_out, kernel="lanczos"):
    """Dense (n_out, n_in) matrix of ImageMagick's normalised filter weights along one axis (the
    definition; the resize itself uses ``resize_taps``, the same numbers stored sparsely)."""
    function, scale, bisect, start, stop = _window(n_in, n_out, kernel)
    j = np.arange(n_in, dtype=np.float64)
    inside = (j[None, :] >= start[:, None]) & (j[None, :] < stop[:, None])
    weights = np.where(inside, function(np.abs((j[None, :] - bisect[:, None] + 0.5) / scale)), 0.0)
    density = weights.sum(axis=1, keepdims=True)
    density[density == 0] = 1.0
    return weights / density


@functools.lru_cache(maxsize=32)
def resize_taps(n_in, n_out, kernel="lanczos"):
    """``resize_weights`` as taps, bit for bit: output pixel o is the sum over k of
    ``weights[o, k] * input[index[o, k]]``; rows shorter than the widest window are padded with
    zero weights. Cached per (n_in, n_out, kernel): a folder of photos mostly shares one size.
    Read-only arrays."""
    function, scale, bisect, start, stop = _window(n_in, n_out, kernel)
    index = start[:, None] + np.arange(max(int((stop - start).max()), 1))[None, :]
    inside = index < stop[:, None]
    index = np.minimum(index, n_in - 1)
    weights = np.where(inside, function(np.abs((index - bisect[:, None] + 0.5) / scale)), 0.0)
    # the normalisation sums a dense row as resize_weights does: numpy's pairwise sum depends on
    # where the window sits in the row, and the density must round the same way
    dense = np.zeros((n_out, n_in))
    rows = np.broadcast_to(np.arange(n_out)[:, None], index.shape)
    dense[rows[inside], index[inside]] = weights[inside]
    density = dense.sum(axis=1, keepdims=True)
    density[density == 0] = 1.0
    weights = weights / density
    index.flags.writeable = weights.flags.writeable = False
    return index, weights


def _filter_axis(values, axis, taps):
    """One pass of the separable filter along ``axis`` (0 or 1) of float64 (H, W, C) Q16
    values, its result quantized (ImageMagick's ClampToQuantum: clip, round half up).

    The kernel adds the taps in increasing input order from 0, one multiply and one add each (no
    fused multiply-add): the order and rounding of the dense product over the whole axis, whose
    extra terms are exact zeros. So the result is bit for bit the dense einsum's
    (tests/test_preprocess.py compares them)."""
    index, weights = taps
    rows, cols, channels = values.shape
    src = np.ascontiguousarray(values, dtype=np.float64)
    if axis == 0:    # (1, rows, cols*C): each output row a weighted sum of input rows
        out = np.empty((index.shape[0], cols, channels))
        resample_axis(src.reshape(1, rows, -1), index, weights,
                      out.reshape(1, index.shape[0], -1), threads_for(out.size))
    else:
        out = np.empty((rows, index.shape[0], channels))
        resample_axis(src, index, weights, out, threads_for(out.size))
    return out


def imagemagick_resize(q16, width, height, kernel=None, palette=False):
    """Resize float64 (H, W, C) Q16 values (0..65535) as ImageMagick 6 Q16 ``-resize WxH!`` does.

    ``kernel`` None picks ImageMagick's default: Mitchell when enlarging (x_factor * y_factor > 1)
    or for a palette image, else Lanczos. Returns float64 (height, width, C) integer Q16 values.
    """
    rows, cols = q16.shape[:2]
    x_factor, y_factor = width / cols, height / rows
    if kernel is None:
        if x_factor == 1.0 and y_factor == 1.0:
            return q16.copy()
        kernel = "mitchell" if (palette or x_factor * y_factor > 1.0) else "lanczos"
    wx = resize_taps(cols, width, kernel)
    wy = resize_taps(rows, height, kernel)
    if x_factor > y_factor:   # ImageMagick filters the more-enlarged (less-shrunk) axis first
        return _filter_axis(_filter_axis(q16, 1, wx), 0, wy)
    return _filter_axis(_filter_axis(q16, 0, wy), 1, wx)


def toolbox_resize(image, base_size):
    """The demonstrator's resize of an 8-bit image: float64 (h, w, 3) RGB on the 0..255 scale
    (16-bit precision, not integers), longer side ~ base_size."""
    rgb = image.rgb if isinstance(image, SourceImage) else np.asarray(image)
    palette = image.palette if isinstance(image, SourceImage) else False
    rows, cols = rgb.shape[:2]
    width, height = fit_geometry(cols, rows, base_size)
    q16 = rgb.astype(np.float64) * 257.0          # ScaleCharToQuantum for Q16
    resized = imagemagick_resize(q16, width, height, palette=palette)
    return resized / QUANTUM_RANGE * 255.0


# ------------------------------------------------------------------------------- means
@dataclass
class Mean:
    """A mean to subtract, BGR: a (3,) pixel or a (3, Hm, Wm) canvas *as the demonstrator indexes
    it*, i.e. ``canvas[c, hm, wm]`` is the value it subtracts for mean row hm, column wm."""
    values: np.ndarray
    source: str = "BVLC mean pixel"
    sha256: str = None

    def __post_init__(self):
        # every way a mean is unusable (however it was read) is this one MeanError, which the
        # command line reports as a usage error of --mean
        values = np.asarray(self.values)
        if values.size == 0:
            raise MeanError("%s: the mean is empty (shape %s)" % (self.source, values.shape))
        if not np.all(np.abs(values) <= np.finfo(np.float32).max):
            raise MeanError("%s: the mean holds NaN, infinite or out-of-float32 values"
                            % self.source)

    @property
    def is_pixel(self):
        return self.values.ndim == 1

    def describe(self):
        d = {"source": self.source}
        if self.is_pixel:
            d["bgr"] = [float(v) for v in self.values]
        else:
            d["shape"] = list(self.values.shape)
            d["alignment"] = "LRP toolbox demonstrator (channel planes read column-major)"
        if self.sha256:
            d["sha256"] = self.sha256
        return d


def _column_major_planes(vectors, height, width):
    """The demonstrator copies each channel plane into a vector and indexes it as
    [hm + wm * Hm] (README of the reference, 'mean read transposed'): element (hm, wm) of the
    result is vector[hm + wm * height]."""
    return np.ascontiguousarray(vectors.reshape(-1, width, height).transpose(0, 2, 1))


def mean_pixel(bgr):
    values = np.asarray(bgr, dtype=np.float64).reshape(-1)
    if values.shape != (3,):
        raise MeanError("a mean pixel has three values B,G,R, got %d" % values.size)
    return Mean(values, source="pixel %s" % ",".join("%g" % v for v in values))


def read_mean_file(path, kind=1):
    """A mean file as the demonstrator reads it (spec 1.6 step 6). ``kind`` is the config's
    use_mean_file_asbinaryprotoblob: 1 BlobProto with BGR planes, 2 BlobProto with RGB planes
    (reversed on load), 0 text: ``C H W`` then per channel (BGR) the values column by column."""
    from .io.caffemodel import read_mean_binaryproto
    path = str(path)
    if not Path(path).is_file():
        raise MeanError("%s: mean file not found" % path)
    if kind in (1, 2):
        blob = read_mean_binaryproto(path).astype(np.float64)
        if blob.shape[0] != 3:
            raise MeanError("%s: the mean must have 3 channels, found %d" % (path, blob.shape[0]))
        c, h, w = blob.shape
        canvas = _column_major_planes(blob.reshape(c, -1), h, w)
        if kind == 2:
            canvas = canvas[::-1].copy()
        layout = "BGR" if kind == 1 else "RGB"
        return Mean(canvas, source="%s (binaryproto, %s)" % (path, layout),
                    sha256=_file_sha256(path))
    if kind == 0:
        try:
            tokens = Path(path).read_text().split()
            c, h, w = (int(t) for t in tokens[:3])
            values = np.array([float(t) for t in tokens[3:]], dtype=np.float64)
        except (ValueError, UnicodeDecodeError):
            raise MeanError("%s: a text mean file holds 'C H W' and then C*H*W numbers" % path) \
                from None
        if c != 3 or h < 1 or w < 1 or values.size != c * h * w:
            raise MeanError("%s: header says %d x %d x %d (3 channels needed) and %d values follow"
                            % (path, c, h, w, values.size))
        canvas = _column_major_planes(values.reshape(c, -1), h, w)
        return Mean(canvas, source="%s (text, BGR)" % path, sha256=_file_sha256(path))
    raise MeanError("mean file kind must be 0 (text), 1 (binaryproto BGR) or 2 (binaryproto RGB), "
                    "got %r" % kind)


# ------------------------------------------------------------------------ crop and mean
@dataclass
class Preprocessed:
    blob: np.ndarray          # float32 (3, H, W), BGR, mean subtracted: the network input
    as_inputted: np.ndarray   # float64 (H, W, 3) RGB in [0, 1]: the crop before the mean
    resized_hw: tuple         # (rows, cols) after the resize
    info: dict = field(default_factory=dict)


def _axis_indices(length, size, mean_length, crop_long, mean_offset_long):
    """Image and mean indices along one axis of the demonstrator's crop (spec 1.6 step 5)."""
    k = np.arange(size)
    if crop_long:
        return np.clip(mean_offset_long[0] + k, 0, length - 1), mean_offset_long[1] + k
    if length >= size:
        return (length - size) // 2 + k, (mean_length - size) // 2 + k
    offset = (size - length) // 2
    image = np.clip(k - offset, 0, length - 1)   # edge replication; the mean is NOT shifted
    return image, image.copy()


def toolbox_crop(resized, in_h, in_w, base_size, mean):
    """The demonstrator's crop/pad of a resized RGB image (0..255) and its mean subtraction.

    Returns (blob float32 (3, H, W) BGR, as_inputted float64 (H, W, 3) RGB in [0, 1])."""
    hei, wid = resized.shape[:2]
    border = (base_size - max(in_h, in_w)) // 2
    if mean.is_pixel:
        mh, mw = in_h, in_w
        border_mean = 0
    else:
        mh, mw = mean.values.shape[1:]
        border_mean = min((mh - in_h) // 2, (mw - in_w) // 2)
    portrait = hei > wid
    rows, mean_rows = _axis_indices(hei, in_h, mh, portrait, (border, border_mean))
    cols, mean_cols = _axis_indices(wid, in_w, mw, not portrait, (border, border_mean))
    crop = resized[rows[:, None], cols[None, :]]                    # (H, W, 3) RGB
    if mean.is_pixel:
        mean_rgb = mean.values[::-1][None, None, :]
    else:
        if mean_rows.max() >= mh or mean_cols.max() >= mw or min(mean_rows.min(),
                                                                  mean_cols.min()) < 0:
            raise MeanError("%s: the mean canvas %dx%d is too small for a %dx%d input at base "
                            "size %d" % (mean.source, mh, mw, in_h, in_w, base_size))
        canvas = mean.values[:, mean_rows[:, None], mean_cols[None, :]]   # (3, H, W) BGR
        mean_rgb = canvas[::-1].transpose(1, 2, 0)
    blob = (crop - mean_rgb)[:, :, ::-1].transpose(2, 0, 1)
    return np.ascontiguousarray(blob, dtype=np.float32), crop / 255.0


def toolbox_preprocess(image, in_h, in_w, base_size, mean):
    """Image file (or SourceImage) -> the demonstrator's network input (spec 1.6)."""
    if not isinstance(image, SourceImage):
        image = read_image(image)
    rows, cols = image.rgb.shape[:2]
    if rows < in_h and cols < in_w:
        raise ImageError("%s: image is %dx%d, smaller than the network input %dx%d"
                         % (image.path, cols, rows, in_w, in_h))
    if base_size < max(in_h, in_w):
        raise CaffeLRPError("base size %d is smaller than the network input %dx%d"
                            % (base_size, in_w, in_h))
    resized = toolbox_resize(image, base_size)
    blob, as_inputted = toolbox_crop(resized, in_h, in_w, base_size, mean)
    enlarged = resized.shape[0] * resized.shape[1] > rows * cols
    info = {"pipeline": "lrp-toolbox", "resize": "ImageMagick 6 Q16 emulation, %s"
            % ("mitchell" if image.palette or enlarged else "lanczos"),
            "image_hw": [rows, cols], "base_size": base_size,
            "resized_hw": list(resized.shape[:2]), "input_hw": [in_h, in_w],
            "channel_order": "BGR", "mean": mean.describe()}
    return Preprocessed(blob, as_inputted, tuple(resized.shape[:2]), info)


def default_base_size(in_h, in_w):
    """The toolbox's setting: 256 for the 224/227 ImageNet nets; otherwise the same ratio."""
    side = max(in_h, in_w)
    if 224 <= side <= 256:
        return 256
    return int(round(side * 256 / 227))


# ------------------------------------------------------------------------- plain pipeline
def image_to_blob(path, height, width, mean_bgr=BVLC_MEAN_BGR):
    """Resize the whole image to height x width (bilinear), BGR, minus the mean pixel: (3, H, W)."""
    rgb = load_rgb(path)
    img = Image.fromarray(rgb.astype(np.uint8)).resize((width, height), Image.BILINEAR)
    bgr = np.asarray(img, dtype=np.float32)[:, :, ::-1].transpose(2, 0, 1)
    return np.ascontiguousarray(bgr - np.asarray(mean_bgr, np.float32)[:, None, None])


# ------------------------------------------------------------------------- the Python API
def as_mean(mean):
    """A ``Mean`` from what a user may pass: None (the BVLC mean pixel), a Mean, B,G,R as a
    tuple/list/array of 3, a (3, H, W) mean image (BGR, as read from a .binaryproto by
    ``read_mean_binaryproto``; it is aligned as the toolbox aligns it) or the path of a
    .binaryproto / toolbox text mean file."""
    from .errors import ArgumentError
    if mean is None:
        return mean_pixel(BVLC_MEAN_BGR)
    if isinstance(mean, Mean):
        return mean
    if isinstance(mean, (str, Path)):
        kind = 1 if str(mean).lower().endswith((".binaryproto", ".protobin")) else 0
        return read_mean_file(mean, kind)
    values = np.asarray(mean, dtype=np.float64)
    if values.size == 3:
        return mean_pixel(values)
    if values.ndim == 3 and values.shape[0] == 3 and values.size:
        c, h, w = values.shape
        return Mean(_column_major_planes(values.reshape(c, -1), h, w), source="array")
    raise ArgumentError("mean must be B,G,R (3 values), a (3, H, W) BGR mean image or a mean "
                        "file path; got an array of shape %s" % (values.shape,))


def load_image(path, net, mean=None, base_size=None):
    """An image file as the network input, the way ``explain`` feeds it (the LRP Toolbox's
    resize, centre crop and mean, BGR): ``x, geometry = caffelrp.load_image(path, net)``.

    ``x`` is float32 (1, 3, H, W) for ``net.forward(x)`` / ``net.relevance(x)``; ``mean`` as in
    ``as_mean`` (default: the BVLC ImageNet mean pixel); ``base_size`` the longer side after the
    resize (default as explain's). ``geometry`` says how x maps back to the image:
    ``image_hw`` (the file's size), ``resized_hw`` (after the resize: x is its centre crop,
    edge rows/columns repeated where it is smaller than the input), ``input_hw``,
    ``base_size`` and the mean; ``geometry["as_inputted"]`` is the crop itself, RGB in [0, 1]."""
    from .errors import ArgumentError
    shape = net.blob_shapes[net.inputs[0]]
    if len(shape) != 4 or shape[1] != 3:
        raise ArgumentError("load_image needs a net with a 3-channel image input, %s has %s"
                            % (net.inputs[0], shape))
    in_h, in_w = int(shape[2]), int(shape[3])
    base = base_size or default_base_size(in_h, in_w)
    prep = toolbox_preprocess(path, in_h, in_w, base, as_mean(mean))
    geometry = dict(prep.info)
    geometry["as_inputted"] = prep.as_inputted
    return prep.blob[None], geometry


class Transformer:
    """pycaffe's ``caffe.io.Transformer`` for one input, for code written against it: an
    H x W x 3 RGB image in [0, 1] (``caffe.io.load_image``'s) to a C x H x W network input.

        t = caffelrp.Transformer(net, mean=(104, 117, 123))   # the defaults of the BVLC nets:
        x = t.preprocess(image)                               # transpose, RGB -> BGR, x 255

    ``preprocess`` resizes to the input size (bilinear), transposes to C x H x W, swaps the
    channels (``channel_swap``, default (2, 1, 0): RGB -> BGR), multiplies by ``raw_scale``
    (default 255), subtracts ``mean`` (per channel, in the net's channel order, or a C x H x W
    image of the input size) and multiplies by ``input_scale``; ``deprocess`` undoes it. The
    ``set_*`` methods of pycaffe are there too. (``load_image`` gives the toolbox's
    preprocessing instead, which explain and classify use.)"""

    def __init__(self, net, mean=None, channel_swap=(2, 1, 0), raw_scale=255.0,
                 input_scale=None):
        shape = net.blob_shapes[net.inputs[0]]
        self.input_shape = tuple(int(d) for d in shape[1:])
        self.channel_swap = None
        self.mean = None
        self.set_channel_swap(channel_swap)
        self.raw_scale, self.input_scale = raw_scale, input_scale
        self.set_mean(mean)

    def set_channel_swap(self, order):
        from .errors import ArgumentError
        if order is not None and sorted(order) != list(range(self.input_shape[0])):
            raise ArgumentError("channel_swap must be a permutation of 0..%d, got %r"
                                % (self.input_shape[0] - 1, order))
        self.channel_swap = None if order is None else tuple(order)

    def set_raw_scale(self, scale):
        self.raw_scale = scale

    def set_input_scale(self, scale):
        self.input_scale = scale

    def set_mean(self, mean):
        from .errors import ArgumentError
        if mean is None:
            self.mean = None
            return
        m = np.asarray(mean, dtype=np.float32)
        c = self.input_shape[0]
        if m.size == c:
            m = m.reshape(c, 1, 1)
        elif m.shape != self.input_shape:
            raise ArgumentError("mean must have %d values (one per channel) or shape %s, got "
                                "shape %s" % (c, self.input_shape, m.shape))
        self.mean = m

    def preprocess(self, image):
        from .errors import ArgumentError
        img = np.asarray(image, dtype=np.float32)
        c, h, w = self.input_shape
        if img.ndim != 3 or img.shape[2] != c:
            raise ArgumentError("preprocess takes an H x W x %d image, got shape %s"
                                % (c, img.shape))
        if img.shape[:2] != (h, w):
            img = np.stack([np.asarray(Image.fromarray(img[:, :, k], mode="F").resize(
                (w, h), Image.BILINEAR)) for k in range(c)], axis=2)
        x = img.transpose(2, 0, 1)
        if self.channel_swap is not None:
            x = x[list(self.channel_swap)]
        if self.raw_scale is not None:
            x = x * np.float32(self.raw_scale)
        if self.mean is not None:
            x = x - self.mean
        if self.input_scale is not None:
            x = x * np.float32(self.input_scale)
        return np.ascontiguousarray(x, dtype=np.float32)

    def deprocess(self, x):
        x = np.asarray(x, dtype=np.float32).copy()
        if self.input_scale is not None:
            x /= np.float32(self.input_scale)
        if self.mean is not None:
            x += self.mean
        if self.raw_scale is not None:
            x /= np.float32(self.raw_scale)
        if self.channel_swap is not None:
            x = x[np.argsort(self.channel_swap)]
        return x.transpose(1, 2, 0)
