"""Decoding a rendered heatmap (PNG/JPEG, 8 or 16 bit) back to a signed relevance map.

A colour map sends a value t (in [-1, 1], or [0, 1] for maps of positive values only) to a colour;
decoding sends each pixel to the t whose colour is nearest (Euclidean distance in RGB), found in a
lookup table of ``TABLE_SIZE`` colours per map (a k-d tree). The distance is kept per pixel as the
confidence of the decoding (0: the colour lies on the map); its mean, in 8-bit levels (0..255), is
the map's *decoding residual*. ``cmap="auto"`` decodes with every map and takes the one with the
smallest residual among the maps under which the picture reads as a relevance map, i.e. most pixels
near 0 (median |t| <= ``MAX_TYPICAL``): without that, the grey map would win on every heatmap whose
colours a JPEG or an enlargement has washed out, reading its black (original) or white (seismic)
background as -1 or +1. A picture is refused (a photo, an overlay of a heatmap on a photo) when its
best residual exceeds ``MAX_RESIDUAL`` or when it reads as a relevance map under no map. Measured on
the CaffeNet reference (f0 and f100 maps rendered in original, seismic, gray-red, black-green and
hot, enlarged 1.5x, JPEG quality 75) residual <= 9.4 and median |t| <= 0.06; the two photos residual
16.5 / 35.0, and they and the overlays ``explain`` writes median |t| >= 0.27 under their best map
(grey). Not decodable that way: the noisy f0 map in black-firered (residual 20-23), whose saturated
ramps JPEG's subsampled chroma does not keep. The values come back up to a positive
scale: the renderer's scale is not in the picture.

Maps:

* ``original``: the LRP Toolbox demonstrator's colouring (spec original-lrp.md 1.7): value v of the
  channel mean, m the largest positive value; v >= 0 -> (v/m, v/m, 0), v < 0 -> (0, 0, -v/m), the
  blue *not* clipped. It is decoded exactly, without a table: a pixel's value is the projection on
  the yellow ray ((r + g)/2, up to 1) or minus its blue, whichever is nearer. Where -v/m > 1 the
  demonstrator's 16-bit writer wraps the blue around modulo 2^16 (``compat.heatmap_quanta``): such a
  pixel reads as -(-v/m - 1) and cannot be told from a true one by its colour alone, so the decoder
  takes it at face value (on the public CaffeNet reference 2 of 51529 pixels of one image wrap).
* caffelrp's own maps (``render.COLORMAPS``), by their names, as ``explain`` renders them; where a
  name is also one of the paper maps below, caffelrp's is ``caffelrp-NAME``.
* The maps papers use, built in (matplotlib's segment data; no matplotlib needed): ``seismic``,
  ``bwr``, ``jet``, ``gray`` with the numpy toolbox's convention for signed maps (spec 5.5:
  R / max|R| mapped to (R + 1) / 2 of the map, so 0 is the middle colour) and ``hot`` for positive
  maps (R / max R on the whole map, negative values black).
* Any other matplotlib map by name (``matplotlib:NAME`` or just ``NAME``) when matplotlib is
  installed (``pip install caffelrp[plot]``), with the signed convention.
Maps whose tables coincide (caffelrp's ``seismic`` is matplotlib's ``bwr``) are tried once, under
the first name.
"""
from dataclasses import dataclass, field
import struct
import zlib

import numpy as np

from .errors import CaffeLRPError

TABLE_SIZE = 2049          # colours per lookup table: steps of 1/1024 in t
MAX_RESIDUAL = 12.0        # mean colour distance (8-bit levels) above which nothing fits
MAX_PIXELS = 1 << 26       # 67 M pixels: a larger "heatmap" is refused before it is decompressed
MAX_TYPICAL = 0.15         # a relevance map is sparse: its median |t| lies below this


class DecodeError(CaffeLRPError):
    """A rendered heatmap cannot be read or fits no colour map."""


# --------------------------------------------------------------------------- reading images
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _paeth(a, b, c):
    p = a + b - c
    pa, pb, pc = np.abs(p - a), np.abs(p - b), np.abs(p - c)
    return np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))


def _unfilter(raw, height, stride, bpp):
    """PNG scanline filters (PNG spec 9.2) undone; (height, stride) uint8."""
    rows = np.frombuffer(raw, np.uint8)
    if rows.size != height * (stride + 1):
        raise ValueError("image data holds %d bytes, %d expected"
                         % (rows.size, height * (stride + 1)))
    rows = rows.reshape(height, stride + 1)
    out = np.zeros((height, stride), np.int64)
    prev = np.zeros(stride, np.int64)
    for y in range(height):
        kind, line = rows[y, 0], rows[y, 1:].astype(np.int64)
        if kind == 0:
            cur = line
        elif kind == 2:
            cur = (line + prev) % 256
        elif kind == 1:   # Sub: each byte adds the byte bpp to its left: a cumulative sum per lane
            cur = (np.cumsum(line.reshape(-1, bpp), axis=0) % 256).reshape(-1)
        elif kind in (3, 4):
            cur = np.zeros(stride, np.int64)
            for x in range(0, stride, bpp):
                left = cur[x - bpp:x] if x else np.zeros(bpp, np.int64)
                up = prev[x:x + bpp]
                if kind == 3:
                    pred = (left + up) // 2
                else:
                    upleft = prev[x - bpp:x] if x else np.zeros(bpp, np.int64)
                    pred = _paeth(left, up, upleft)
                cur[x:x + bpp] = (line[x:x + bpp] + pred) % 256
        else:
            raise ValueError("unknown PNG filter type %d in row %d" % (kind, y))
        out[y] = cur
        prev = cur
    return out.astype(np.uint8)


def _read_png_exact(data):
    """Non-interlaced grey/RGB(A) PNGs of 8 or 16 bits at full depth (Pillow cuts 16-bit RGB to
    8 bits). Returns float64 (H, W, 3) in [0, 1], or None for PNGs left to Pillow."""
    pos, chunks = 8, {"IDAT": []}
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        kind = kind.decode("latin-1")
        if kind == "IDAT":
            chunks["IDAT"].append(body)
        else:
            chunks.setdefault(kind, body)
        pos += 12 + length
        if kind == "IEND":
            break
    header = chunks.get("IHDR")
    if header is None or len(header) != 13:
        raise ValueError("no IHDR chunk")
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", header)
    channels = {0: 1, 2: 3, 4: 2, 6: 4}.get(colour)
    if channels is None or depth not in (8, 16) or interlace:
        return None
    if width * height > MAX_PIXELS or not width or not height:
        raise ValueError("%d x %d pixels (at most %d accepted)" % (width, height, MAX_PIXELS))
    bpp = channels * depth // 8
    expected = height * (width * bpp + 1)
    # bounded: a small file cannot inflate to more than the header promises
    raw = zlib.decompressobj().decompress(b"".join(chunks["IDAT"]), expected + 1)
    pixels = _unfilter(raw, height, width * bpp, bpp)
    if depth == 16:
        values = pixels.view(">u2").astype(np.float64) / 65535.0
    else:
        values = pixels.astype(np.float64) / 255.0
    values = values.reshape(height, width, channels)
    if channels in (1, 2):
        return np.repeat(values[..., :1], 3, axis=2)
    return values[..., :3]


def read_rendered(path):
    """A rendered heatmap file as float64 RGB (H, W, 3) in [0, 1] at its full bit depth."""
    import os
    import stat
    path = str(path)
    try:
        mode = os.stat(path).st_mode
        if not stat.S_ISREG(mode) and not stat.S_ISDIR(mode):
            raise DecodeError("%s: not a regular file" % path)
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise DecodeError("%s: no such file" % path) from None
    except IsADirectoryError:
        raise DecodeError("%s: is a directory, not an image" % path) from None
    except OSError as e:
        raise DecodeError("%s: cannot read: %s" % (path, e)) from None
    if data.startswith(_PNG_SIGNATURE):
        try:
            rgb = _read_png_exact(data)
        except (ValueError, zlib.error, struct.error) as e:
            raise DecodeError("%s: cannot decode the PNG file: %s" % (path, e)) from None
        if rgb is not None:
            return rgb
    import io
    from PIL import Image, UnidentifiedImageError
    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.width * img.height > MAX_PIXELS:
                raise DecodeError("%s: %d x %d pixels (at most %d accepted)"
                                  % (path, img.width, img.height, MAX_PIXELS))
            img.load()
            return np.asarray(img.convert("RGB"), dtype=np.float64) / 255.0
    except UnidentifiedImageError:
        raise DecodeError("%s: not an image file (PNG, JPEG, ...) Pillow can read" % path) from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise DecodeError("%s: cannot read image: %s" % (path, e)) from None


# ----------------------------------------------------------------------------- colour maps
def _segments(points, u):
    """Piecewise-linear map through equally spaced colours (matplotlib's listed segment data)."""
    points = np.asarray(points, np.float64)
    knots = np.linspace(0.0, 1.0, len(points))
    return np.stack([np.interp(u, knots, points[:, k]) for k in range(3)], axis=-1)


def _knots(data, u):
    """matplotlib's (x, y0, y1) segment data per channel, continuous maps (y0 == y1)."""
    return np.stack([np.interp(u, [p[0] for p in ch], [p[1] for p in ch]) for ch in data],
                    axis=-1)


# matplotlib's _cm.py data (facts, not code): seismic and bwr as listed colours, jet and hot as
# per-channel breakpoints.
_SEISMIC = ((0.0, 0.0, 0.3), (0.0, 0.0, 1.0), (1.0, 1.0, 1.0), (1.0, 0.0, 0.0), (0.5, 0.0, 0.0))
_BWR = ((0.0, 0.0, 1.0), (1.0, 1.0, 1.0), (1.0, 0.0, 0.0))
_JET = (((0, 0), (0.35, 0), (0.66, 1), (0.89, 1), (1, 0.5)),
        ((0, 0), (0.125, 0), (0.375, 1), (0.64, 1), (0.91, 0), (1, 0)),
        ((0, 0.5), (0.11, 1), (0.34, 1), (0.65, 0), (1, 0)))
_HOT = (((0, 0.0416), (0.365079, 1), (1, 1)),
        ((0, 0), (0.365079, 0), (0.746032, 1), (1, 1)),
        ((0, 0), (0.746032, 0), (1, 1)))


@dataclass
class ColourMap:
    """t values (K,) and their colours (K, 3) in [0, 1]; ``signed``: t spans [-1, 1]."""
    name: str
    t: np.ndarray
    colours: np.ndarray
    signed: bool = True
    _tree: object = field(default=None, repr=False)

    def render(self, t):
        """Colours of values t (any shape; linear interpolation in the table)."""
        t = np.asarray(t, np.float64)
        return np.stack([np.interp(t, self.t, self.colours[:, k]) for k in range(3)], axis=-1)

    def decode(self, rgb):
        """(values, distances) of float RGB (H, W, 3) in [0, 1]; distance in [0, 1] units."""
        if self._tree is None:
            from scipy.spatial import cKDTree
            self._tree = cKDTree(self.colours)
        distance, index = self._tree.query(rgb.reshape(-1, 3))
        return self.t[index].reshape(rgb.shape[:2]), distance.reshape(rgb.shape[:2])


class OriginalMap(ColourMap):
    """The demonstrator's black-yellow / black-blue map, decoded exactly (module docstring)."""

    def __init__(self):
        t = np.linspace(-1.0, 1.0, TABLE_SIZE)
        super().__init__("original", t, self._colour(t))

    @staticmethod
    def _colour(t):
        pos, neg = np.clip(t, 0, 1), np.clip(-t, 0, None)
        return np.stack([pos, pos, neg], axis=-1)

    def render(self, t):
        return self._colour(np.asarray(t, np.float64))

    def decode(self, rgb):
        r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
        yellow = np.clip((r + g) / 2.0, 0.0, 1.0)
        d_yellow = np.sqrt((r - yellow) ** 2 + (g - yellow) ** 2 + b ** 2)
        d_blue = np.sqrt(r ** 2 + g ** 2)          # any blue lies on the (unclipped) map
        on_yellow = d_yellow <= d_blue
        return np.where(on_yellow, yellow, -b), np.where(on_yellow, d_yellow, d_blue)


def _table(name, fn, signed=True):
    t = np.linspace(-1.0 if signed else 0.0, 1.0, TABLE_SIZE)
    return ColourMap(name, t, np.clip(fn(t), 0.0, 1.0), signed)


def _own_maps(taken):
    from .render import COLORMAPS, colorize
    maps = []
    for name in COLORMAPS:
        if name in ("original", "blue-black-yellow"):
            continue   # the demonstrator's map: OriginalMap decodes it exactly
        label = "caffelrp-" + name if name in taken else name
        signed = name != "hot"
        maps.append(_table(label, lambda t, n=name: colorize(t, 1.0, n), signed))
    return maps


def _paper_maps():
    return [_table("seismic", lambda t: _segments(_SEISMIC, (t + 1) / 2)),
            _table("bwr", lambda t: _segments(_BWR, (t + 1) / 2)),
            _table("jet", lambda t: _knots(_JET, (t + 1) / 2)),
            _table("gray", lambda t: np.repeat(((t + 1) / 2)[..., None], 3, axis=-1)),
            _table("hot", lambda t: _knots(_HOT, t), signed=False)]


_MAPS = None


def builtin_maps():
    """{name: ColourMap} of every map tried by ``cmap="auto"``, duplicates removed."""
    global _MAPS
    if _MAPS is None:
        paper = _paper_maps()
        candidates = [OriginalMap()] + paper + _own_maps({m.name for m in paper})
        maps = {}
        for m in candidates:
            if not any(o.colours.shape == m.colours.shape and o.signed == m.signed
                       and np.abs(o.colours - m.colours).max() < 1e-9 for o in maps.values()):
                maps[m.name] = m
        _MAPS = maps
    return _MAPS


ALIASES = {"blue-black-yellow": "original", "caffelrp-seismic": "bwr", "coolwarm-lrp": "bwr"}


def matplotlib_map(name):
    """A matplotlib colour map as a signed table, or a DecodeError naming what is missing."""
    try:
        import matplotlib
    except ImportError:
        raise DecodeError("colour map %r is not built in and matplotlib is not installed (pip "
                          "install caffelrp[plot]); built in: %s"
                          % (name, ", ".join(builtin_maps()))) from None
    try:
        cmap = matplotlib.colormaps[name]
    except KeyError:
        raise DecodeError("unknown colour map %r: not built in (%s) and not a matplotlib map"
                          % (name, ", ".join(builtin_maps()))) from None
    t = np.linspace(-1.0, 1.0, TABLE_SIZE)
    return ColourMap("matplotlib:" + name, t, np.asarray(cmap((t + 1) / 2))[:, :3])


def get_map(name):
    """The ColourMap called ``name`` (built in, an alias, or matplotlib's)."""
    maps = builtin_maps()
    name = ALIASES.get(name, name)
    if name in maps:
        return maps[name]
    if name.startswith("matplotlib:"):
        name = name[len("matplotlib:"):]
    return matplotlib_map(name)


# ----------------------------------------------------------------------------- decoding
@dataclass
class Decoded:
    """A decoded heatmap: ``values`` (H, W) up to a positive scale, ``distance`` (H, W) the colour
    distance of each pixel to the map in 8-bit levels (its confidence, 0 = exact), ``residual`` the
    mean distance, ``residuals`` every tried map's residual (for ``auto``)."""
    values: np.ndarray
    distance: np.ndarray
    cmap: str
    residual: float
    residuals: dict


def decode_heatmap(image, cmap="auto", max_residual=MAX_RESIDUAL, name=None,
                   max_typical=MAX_TYPICAL):
    """Decode a rendered heatmap to signed per-pixel relevance (up to a positive scale).

    ``image``: a file path, or an RGB array (H, W, 3) (uint8, uint16, or floats in [0, 1]).
    ``cmap``: "auto" (every built-in map; the smallest residual wins) or a map name.
    Raises DecodeError when the best map's residual exceeds ``max_residual`` (8-bit levels) or
    when no map reads it as a relevance map (median |t| above ``max_typical``; None: no check).
    """
    if isinstance(image, (str, bytes)) or hasattr(image, "__fspath__"):
        name = name or str(image)
        rgb = read_rendered(image)
    else:
        rgb = _as_unit_rgb(image, name or "<array>")
    name = name or "<array>"
    maps = list(builtin_maps().values()) if cmap == "auto" else [get_map(cmap)]
    colours, inverse = _unique_colours(rgb)
    best, residuals = None, {}
    for m in maps:
        values, distance = m.decode(colours[:, None, :])
        values, distance = values[inverse, 0], distance[inverse, 0] * 255.0
        residuals[m.name] = float(distance.mean())
        typical = float(np.median(np.abs(values)))
        key = (max_typical is not None and typical > max_typical, residuals[m.name], typical)
        if best is None or key < best[0]:
            best = (key, m.name, values.reshape(rgb.shape[:2]), distance.reshape(rgb.shape[:2]))
    (not_sparse, residual, typical), label, values, distance = best
    if residual > max_residual:
        raise DecodeError(
            "%s: fits no colour map (best %s, mean colour distance %.1f of 255 levels; a rendered "
            "heatmap decodes below %.0f): is it a photo or an overlay?%s"
            % (name, label, residual, max_residual,
               "" if cmap == "auto" else " Try --cmap auto."))
    if not_sparse:
        raise DecodeError(
            "%s: fits no colour map as a relevance map (best %s, mean colour distance %.1f of 255 "
            "levels, but its typical pixel reads as %.2f of full scale, where a heatmap's reads "
            "near 0): is it a photo or an overlay?" % (name, label, residual, typical))
    return Decoded(values, distance, label, residual, residuals)


def _unique_colours(rgb):
    """The distinct colours (K, 3) of an image and each pixel's index into them: an 8-bit picture
    has far fewer colours than pixels, so each is looked up once."""
    flat = rgb.reshape(-1, 3)
    colours, inverse = np.unique(flat, axis=0, return_inverse=True)
    return colours, inverse.reshape(-1)


def _as_unit_rgb(image, name):
    a = np.asarray(image)
    if a.ndim != 3 or a.shape[2] not in (3, 4):
        raise DecodeError("%s: a rendered heatmap is (H, W, 3) RGB, got shape %s" % (name, a.shape))
    a = a[..., :3]
    if a.dtype == np.uint8:
        return a.astype(np.float64) / 255.0
    if a.dtype == np.uint16:
        return a.astype(np.float64) / 65535.0
    a = a.astype(np.float64)
    if not np.isfinite(a).all() or a.min() < 0 or a.max() > 1:
        raise DecodeError("%s: float RGB must lie in [0, 1]" % name)
    return a
