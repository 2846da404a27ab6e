"""A heatmap on the network input mapped back onto the original photo (``explain
--original-geometry``), undoing the toolbox pipeline's resize, centre crop and edge padding
(``preprocess.toolbox_crop``, spec original-lrp.md 1.6 step 5).

Along each axis the pipeline maps resized pixel i to input pixel i - offset: on the long axis
offset = (base_size - max(H, W)) // 2 (the crop border), on a short side at least as long as the
input (length - size) // 2, on a shorter one -(size - length) // 2 (the image is centred and the
padding repeats its edge rows, which belong to no photo pixel). A photo pixel's centre maps to the
resized image by the resize factor, then to the input by that offset; the per-pixel values are
sampled there bilinearly. Photo pixels the network did not see (cropped away) get no colour.
"""
import numpy as np


def input_offsets(resized_hw, input_hw, base_size):
    """(row offset, column offset): input index = resized index - offset."""
    (hei, wid), (in_h, in_w) = resized_hw, input_hw
    border = (base_size - max(in_h, in_w)) // 2
    portrait = hei > wid

    def axis(length, size, long_axis):
        if long_axis:
            return border
        if length >= size:
            return (length - size) // 2
        return -((size - length) // 2)
    return axis(hei, in_h, portrait), axis(wid, in_w, not portrait)


def to_original(values, info):
    """Per-pixel values (H, W) on the network input -> (rows, cols) of the original photo, NaN
    where the photo pixel lies outside what the network saw. ``info``: the sidecar's
    ``preprocessing`` (image_hw, resized_hw, input_hw, base_size)."""
    from scipy.ndimage import map_coordinates
    rows, cols = info["image_hw"]
    hei, wid = info["resized_hw"]
    in_h, in_w = info["input_hw"]
    off_y, off_x = input_offsets((hei, wid), (in_h, in_w), info["base_size"])
    ys = (np.arange(rows) + 0.5) * hei / rows - 0.5 - off_y
    xs = (np.arange(cols) + 0.5) * wid / cols - 0.5 - off_x
    # a photo row that fell into the input's replicated padding does not exist: the image part
    # of the input spans resized rows 0..hei-1 only, which the coordinates above already respect
    yy, xx = np.meshgrid(ys, xs, indexing="ij")
    inside = (yy > -0.5) & (yy < in_h - 0.5) & (xx > -0.5) & (xx < in_w - 0.5)
    sampled = map_coordinates(np.asarray(values, np.float64), [np.clip(yy, 0, in_h - 1),
                                                                np.clip(xx, 0, in_w - 1)],
                              order=1, mode="nearest")
    return np.where(inside, sampled, np.nan)


def write_original_geometry(out_dir, record, overlay_scale_value, args):
    """STEM_heatmap_original.png and STEM_overlay_original.png next to the other outputs."""
    from .preprocess import read_image
    from .render import colorize, luma, overlay, write_png
    info = record["sidecar"]["preprocessing"]
    values = to_original(record["values"], info)
    seen = np.isfinite(values)
    filled = np.where(seen, values, 0.0)
    scale = record["sidecar"]["heatmap"]["scale"]
    heat_full = colorize(filled, scale, args.cmap)
    photo = read_image(record["image"]).rgb.astype(np.float64) / 255.0
    over = overlay(photo, colorize(filled, overlay_scale_value, args.cmap), filled,
                   overlay_scale_value, args.overlay_alpha)
    grey = luma(photo)
    heat_full[~seen] = 0.5 * grey[~seen, None]          # unseen: the dimmed photo
    names = record["sidecar"]["outputs"]
    stem = record["stem"]
    names["heatmap_original"] = stem + "_heatmap_original.png"
    names["overlay_original"] = stem + "_overlay_original.png"
    write_png(out_dir / names["heatmap_original"], heat_full)
    write_png(out_dir / names["overlay_original"], over)
