"""Heatmaps: colour maps, overlays, a shared colour scale, and a small PNG writer.

A relevance map (C, H, W) becomes one value per pixel (the channel sum) and then colours.
``scale`` is the value that maps to full colour; ``heatmap_scale`` computes it per image or, for a
batch rendered on one scale, over all images (``shared=True``).

Colour maps (all take the per-pixel value and the scale):

* ``original``: the C++ demonstrator's (spec 1.7): black -> yellow for positive values,
  black -> blue for negative ones, scaled by the largest *positive* value. The demonstrator does
  not clip the blue side (its PNG writer wraps values > 1 around); here it is clipped to [0, 1].
  ``compat.write_heatmap_png`` writes the demonstrator's exact file.
* ``bwr``: blue (negative) - white (0) - red (positive), symmetric around 0, scaled by the
  largest absolute value: matplotlib's ``bwr``, as most LRP papers use it. ``seismic`` is its
  older caffelrp name, kept as an alias (matplotlib's own ``seismic`` darkens the ends).
* ``gray-red``, ``black-firered``, ``black-green``, ``blue-black-yellow``: the numpy toolbox's
  custom maps (spec 5.5), scaled by ``scale`` instead of their own maximum.
* ``hot``: black - red - yellow - white for the positive part only (negative values are black).
"""
import struct
import zlib

import numpy as np

from .errors import ArgumentError
from .files import write_atomically


def pixel_relevance(relevance, reduce="sum"):
    """(C, H, W) or (N, C, H, W) relevance -> per-pixel values (H, W) / (N, H, W), float64."""
    r = np.asarray(relevance, dtype=np.float64)
    if r.ndim not in (3, 4):
        raise ArgumentError("relevance must be (C, H, W) or (N, C, H, W), got shape %s"
                            % (r.shape,))
    axis = r.ndim - 3
    return r.sum(axis=axis) if reduce == "sum" else r.mean(axis=axis)


def heatmap_scale(values, cmap="bwr", shared=False):
    """Full-colour value per image (array (N,)) from per-pixel values (N, H, W); one common value
    for all images when ``shared``. ``original`` scales by the largest positive value, the others
    by the largest absolute value; 0 where there is nothing to scale (all-black images)."""
    v = np.asarray(values, dtype=np.float64)
    if v.ndim == 2:
        v = v[None]
    flat = v.reshape(v.shape[0], -1)
    if cmap in ("original", "blue-black-yellow", "hot"):
        per = np.maximum(flat.max(axis=1), 0.0)
    else:
        per = np.abs(flat).max(axis=1)
    if shared:
        per = np.full_like(per, per.max() if per.size else 0.0)
    return per


def _unit(values, scale):
    scale = np.asarray(scale, dtype=np.float64)
    safe = np.where(scale > 0, scale, 1.0)
    return np.where(scale > 0, values / safe, 0.0)


def _original(t):
    pos = np.clip(t, 0, 1)
    neg = np.clip(-t, 0, 1)
    return np.stack([pos, pos, neg], axis=-1)


def _bwr(t):
    t = np.clip(t, -1, 1)
    pos, neg = np.clip(t, 0, 1), np.clip(-t, 0, 1)
    # white at 0, pure red at +1, pure blue at -1
    return np.stack([1 - neg, 1 - pos - neg, 1 - pos], axis=-1)


def _gray_red(t):
    t = np.clip(t, -1, 1)
    neg, pos = np.minimum(t, 0), np.maximum(t, 0)
    r = 0.8 + 0.8 * neg + 0.2 * pos
    g = 0.8 + 0.8 * neg - 0.8 * pos
    b = 0.8 - 0.2 * neg - 0.8 * pos
    return np.clip(np.stack([r, g, b], axis=-1), 0, 1)


def _black_firered(t):
    t = np.clip(t, -1, 1)
    pos, neg = np.maximum(t, 0), np.maximum(-t, 0)
    ramp = [np.clip(x, 0, .25) / .25 for x in (pos, pos - .25)] + [np.clip(pos - .5, 0, .5) / .5]
    nramp = [np.clip(x, 0, .25) / .25 for x in (neg, neg - .25)] + [np.clip(neg - .5, 0, .5) / .5]
    return np.stack([ramp[0] + nramp[2], ramp[1] + nramp[1], ramp[2] + nramp[0]], axis=-1)


def _black_green(t):
    t = np.clip(t, -1, 1)
    zero = np.zeros_like(t)
    return np.stack([zero, np.maximum(t, 0), np.maximum(-t, 0)], axis=-1)


def _hot(t):
    t = np.clip(t, 0, 1)
    return np.stack([np.clip(3 * t, 0, 1), np.clip(3 * t - 1, 0, 1), np.clip(3 * t - 2, 0, 1)],
                    axis=-1)


# "seismic": the name caffelrp gave bwr before, kept as an alias
COLORMAPS = {"original": _original, "bwr": _bwr, "seismic": _bwr, "gray-red": _gray_red,
             "black-firered": _black_firered, "black-green": _black_green,
             "blue-black-yellow": _original, "hot": _hot}


def colorize(values, scale, cmap="bwr"):
    """Per-pixel values (H, W) and their full-colour value -> float64 RGB (H, W, 3) in [0, 1]."""
    if cmap not in COLORMAPS:
        raise ArgumentError("unknown colour map %r; choose from %s" % (cmap, ", ".join(COLORMAPS)))
    return COLORMAPS[cmap](_unit(np.asarray(values, dtype=np.float64), scale))


OVERLAY_CLIP = 99.5   # percentile of |value| that gets full opacity in overlays


def overlay_scale(values, clip=OVERLAY_CLIP):
    """Full-opacity value of an overlay: the ``clip`` percentile of |value| (like Captum's
    ``outlier_perc``), not the largest |value|. Relevance maps are heavy-tailed, so scaled by
    their maximum most of an overlay stays grey; with the 99.5th percentile the top 0.5 % of the
    pixels saturate and the rest show in proportion (CaffeNet reference, f100 eps 0.01 beta 1:
    pixels >= 10 levels away from the grey photo 18 % / 13 % -> 40 % / 39 %, see
    tests/test_compare.py). 0 if all zero."""
    a = np.abs(np.asarray(values, np.float64))
    return float(np.percentile(a, clip)) if a.size else 0.0


def luma(image_rgb):
    """The grey value 0.299 R + 0.587 G + 0.114 B (ITU-R BT.601) of (H, W, 3), float64. Summed
    channel by channel rather than by ``@``: a (H, W, 3) @ (3,) product is a BLAS dgemv, which
    wakes numpy's OpenBLAS threads; from explain's writer thread they then spin on the cores
    the next batch's relevance is running on (perf: 2 % of the command's CPU)."""
    rgb = np.asarray(image_rgb, dtype=np.float64)
    return 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]


def overlay(image_rgb, heat_rgb, values, scale, alpha=0.7):
    """The heatmap over a grey version of the image, opaque in proportion to |value| / scale
    (use ``overlay_scale`` for a visible one).

    ``image_rgb``: (H, W, 3) in [0, 1]; ``heat_rgb``: colorize(...) of the same size."""
    grey = luma(image_rgb)
    grey = np.repeat(grey[..., None], 3, axis=-1)
    weight = alpha * np.clip(np.abs(_unit(np.asarray(values, np.float64), scale)), 0, 1)[..., None]
    return (1 - weight) * grey + weight * heat_rgb


# ------------------------------------------------------------------------------- PNG files
def _chunk(kind, data):
    return (struct.pack(">I", len(data)) + kind + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))


# zlib level 2: on 227 x 227 heatmaps and overlays 1.4-1.9x faster than level 3 (1.6-2.1 ms vs
# 2.8-3.1) and 5-9x faster than the default 6, for files 2-9 % larger than level 3's; the writer
# thread shares the cores with the next batch's relevance, so its time is the command's time
PNG_LEVEL = 2


def png_bytes(rgb, depth=8):
    """An RGB PNG (8 or 16 bit) from integer values (H, W, 3) already in 0..2^depth - 1."""
    a = np.asarray(rgb)
    if a.ndim != 3 or a.shape[2] != 3:
        raise ArgumentError("png_bytes takes (H, W, 3), got %s" % (a.shape,))
    h, w = a.shape[:2]
    dtype = ">u2" if depth == 16 else "u1"
    rows = np.ascontiguousarray(a.astype(dtype)).reshape(h, -1).view(np.uint8)
    raw = np.concatenate([np.zeros((h, 1), np.uint8), rows], axis=1)   # filter type 0 per row
    header = struct.pack(">IIBBBBB", w, h, depth, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header)
            + _chunk(b"IDAT", zlib.compress(raw.tobytes(), PNG_LEVEL)) + _chunk(b"IEND", b""))


def to_8bit(rgb01):
    """[0, 1] floats -> uint8, rounded."""
    return np.clip(np.floor(np.asarray(rgb01, np.float64) * 255 + 0.5), 0, 255).astype(np.uint8)


def write_png(path, rgb01):
    """Write [0, 1] RGB floats as an 8-bit PNG, atomically."""
    write_atomically(path, png_bytes(to_8bit(rgb01), 8))
