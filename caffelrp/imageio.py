"""The one image reader of caffelrp (explain, -c/-f and classify all read through it).

Before anything is decoded: the path must be a regular file (a FIFO or a device would block or
never end), and the pixel count declared in the header must be within the limit
(``caffelrp.limits.MAX_IMAGE_PIXELS``, 50 Mpx; raise it with the environment variable
``CAFFELRP_MAX_IMAGE_PIXELS`` or the ``max_pixels`` argument). A 29-byte GIF can declare
65535 x 65535 pixels and a 2.6 MB PNG 30000 x 30000: the header check refuses them before Pillow
allocates anything. Whatever goes wrong inside Pillow's decoders on a corrupt file (they raise
OSError, ValueError, SyntaxError, EOFError, struct.error, IndexError, ...) becomes one
``ImageError`` naming the file, so a batch goes on with the next image.
"""
import os
import stat
import warnings

import numpy as np
from PIL import Image, UnidentifiedImageError

from . import limits
from .errors import CaffeLRPError


class ImageError(CaffeLRPError):
    """An image file cannot be used (missing, unreadable, unsupported, too large)."""


def max_image_pixels():
    """The pixel limit in force: CAFFELRP_MAX_IMAGE_PIXELS if set, else the default."""
    text = os.environ.get("CAFFELRP_MAX_IMAGE_PIXELS")
    if text is None or text == "":
        return limits.MAX_IMAGE_PIXELS
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise limits.UsageError("CAFFELRP_MAX_IMAGE_PIXELS must be a positive integer, got %r"
                                % text)
    return value


def _check_regular_file(path):
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise ImageError("%s: no such file" % path) from None
    except PermissionError:
        raise ImageError("%s: permission denied" % path) from None
    except OSError as e:
        raise ImageError("%s: cannot read image: %s" % (path, e.strerror or e)) from None
    if stat.S_ISDIR(st.st_mode):
        raise ImageError("%s: is a directory, not an image" % path)
    if not stat.S_ISREG(st.st_mode):
        raise ImageError("%s: not a regular file (a FIFO, socket or device); give an image file"
                         % path)


def _bit_depths(img):
    """Raw modes of the decoder tiles (e.g. 'RGB;16B' for a 16-bit PNG that Pillow would
    silently cut to 8 bits)."""
    modes = []
    for tile in getattr(img, "tile", None) or []:
        args = tile[3] if len(tile) > 3 else None
        raw = args[0] if isinstance(args, tuple) and args else args
        if isinstance(raw, str):
            modes.append(raw)
    return modes


def _strict_mode_check(path, img):
    """The toolbox pipeline explains 8-bit RGB (or colour palette) images only (issue 4)."""
    mode = img.mode
    if any(";16" in m or m in ("I", "F") for m in _bit_depths(img)) or mode in (
            "I;16", "I;16B", "I;16L", "I", "F"):
        raise ImageError("%s: 16-bit or float image (mode %s); caffelrp explains 8-bit "
                         "RGB images: convert it to 8-bit RGB first" % (path, mode))
    if mode in ("L", "LA", "1", "La"):
        raise ImageError("%s: grayscale image (mode %s); caffelrp explains RGB images: "
                         "convert it to RGB first" % (path, mode))
    if mode in ("RGBA", "RGBa", "PA") or (mode == "P" and "transparency" in img.info):
        raise ImageError("%s: image with an alpha channel (mode %s); flatten it onto a "
                         "background and save it as RGB first" % (path, mode))
    if mode not in ("RGB", "P"):
        raise ImageError("%s: unsupported image mode %s; convert it to 8-bit RGB first"
                         % (path, mode))


def _lenient_mode_check(path, img):
    """classify: any 8-bit mode Pillow converts to RGB."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        raise ImageError("%s: %s images (16-bit or float) are not supported; convert to 8-bit "
                         "RGB" % (path, img.mode))
    if img.mode not in ("RGB", "L", "RGBA", "P", "CMYK", "LA", "1"):
        raise ImageError("%s: unsupported image mode %s" % (path, img.mode))


def read_rgb(path, strict=True, max_pixels=None):
    """(uint8 H x W x 3 RGB array, was-a-palette-image) of the image at ``path``.

    ``strict``: the toolbox pipeline's rules (8-bit RGB or colour palette only; grayscale,
    alpha, 16-bit refused); else any 8-bit mode is converted to RGB (``classify``).
    ``max_pixels``: the limit on width*height (default ``max_image_pixels()``).
    """
    path = str(path)
    limit = max_image_pixels() if max_pixels is None else int(max_pixels)
    _check_regular_file(path)
    try:
        with warnings.catch_warnings():
            # our own limit is checked below; Pillow's bomb warning would only be noise
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            # Pillow's metadata complaints on corrupt files ("Corrupt EXIF data") are not errors
            warnings.simplefilter("ignore", UserWarning)
            with Image.open(path) as img:
                width, height = img.size
                if width * height > limit:
                    raise ImageError(
                        "%s: image declares %d x %d = %d pixels, more than the limit of %d "
                        "(set CAFFELRP_MAX_IMAGE_PIXELS to raise it)"
                        % (path, width, height, width * height, limit))
                if width < 1 or height < 1:
                    raise ImageError("%s: image declares an empty size %d x %d"
                                     % (path, width, height))
                (_strict_mode_check if strict else _lenient_mode_check)(path, img)
                palette = img.mode == "P"
                img.load()
                if strict and palette:
                    pal = img.getpalette() or []
                    if len(pal) >= 3 and all(pal[i] == pal[i + 1] == pal[i + 2]
                                             for i in range(0, len(pal), 3)):
                        raise ImageError("%s: grayscale image (palette of greys); caffelrp "
                                         "explains RGB images: convert it to RGB first" % path)
                rgb = np.asarray(img.convert("RGB"), dtype=np.uint8)
    except CaffeLRPError:
        raise
    except FileNotFoundError:
        raise ImageError("%s: no such file" % path) from None
    except PermissionError:
        raise ImageError("%s: permission denied" % path) from None
    except UnidentifiedImageError:
        raise ImageError("%s: not an image file (or a format Pillow cannot read)" % path) from None
    except Image.DecompressionBombError as e:
        raise ImageError("%s: %s" % (path, e)) from None
    except MemoryError:
        raise ImageError("%s: not enough memory to decode the image" % path) from None
    except Exception as e:  # noqa: BLE001 - corrupt data makes Pillow raise almost anything
        raise ImageError("%s: cannot read image (corrupt or truncated?): %s: %s"
                         % (path, type(e).__name__, e)) from None
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.shape[0] != height or rgb.shape[1] != width:
        raise ImageError("%s: decoded to shape %s, expected %d x %d x 3" % (path, rgb.shape,
                                                                         height, width))
    return rgb, palette
