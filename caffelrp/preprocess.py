"""Turning an image file into a network input blob (BGR, 0..255, mean subtracted, N x C x H x W).

This is the plain pycaffe-style pipeline (caffe-format.md §4.1): resize the whole image to the
network input, reorder RGB to BGR, subtract a mean pixel. The LRP toolbox's own pipeline
(ImageMagick resize, centre crop with edge replication, transposed mean image) is added separately.
"""
import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import CaffeLRPError

# The ImageNet mean pixel of the BVLC models, BGR (caffe-format.md §4.1).
BVLC_MEAN_BGR = (104.00699, 116.66877, 122.67891)


class ImageError(CaffeLRPError):
    """An image file cannot be read or used."""


def load_rgb(path):
    """The image as float32 H x W x 3 RGB in 0..255."""
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode not in ("RGB", "L", "RGBA", "P", "CMYK", "I;16", "I", "F", "LA"):
                raise ImageError("%s: unsupported image mode %s" % (path, img.mode))
            if img.mode in ("I;16", "I", "F"):
                raise ImageError("%s: %s images (16-bit or float) are not supported; convert "
                                 "to 8-bit RGB" % (path, img.mode))
            rgb = img.convert("RGB")
    except FileNotFoundError:
        raise ImageError("%s: no such file" % path) from None
    except UnidentifiedImageError:
        raise ImageError("%s: not an image file Pillow can read" % path) from None
    except OSError as e:
        raise ImageError("%s: cannot read image: %s" % (path, e)) from None
    return np.asarray(rgb, dtype=np.float32)


def image_to_blob(path, height, width, mean_bgr=BVLC_MEAN_BGR):
    """Resize the whole image to height x width (bilinear), BGR, minus the mean pixel: (3, H, W)."""
    rgb = load_rgb(path)
    img = Image.fromarray(rgb.astype(np.uint8)).resize((width, height), Image.BILINEAR)
    bgr = np.asarray(img, dtype=np.float32)[:, :, ::-1].transpose(2, 0, 1)
    return np.ascontiguousarray(bgr - np.asarray(mean_bgr, np.float32)[:, None, None])
