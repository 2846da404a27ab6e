"""Heatmap colours, scales, overlays and the PNG writer."""
import io

import numpy as np
import pytest
from PIL import Image

from caffelrp import render


def test_seismic_is_white_at_zero_red_at_plus_scale_blue_at_minus_scale():
    rgb = render.colorize(np.array([[0.0, 2.0, -2.0, 1.0]]), 2.0, "seismic")
    np.testing.assert_allclose(rgb[0], [[1, 1, 1], [1, 0, 0], [0, 0, 1], [1, .5, .5]])


def test_original_map_is_black_yellow_positive_black_blue_negative_clipped():
    rgb = render.colorize(np.array([[0.0, 1.0, 0.5, -0.5, -3.0]]), 1.0, "original")
    np.testing.assert_allclose(rgb[0], [[0, 0, 0], [1, 1, 0], [.5, .5, 0], [0, 0, .5], [0, 0, 1]])


@pytest.mark.parametrize("cmap", sorted(render.COLORMAPS))
def test_every_colour_map_gives_rgb_in_unit_range(cmap):
    values = np.linspace(-3, 3, 61).reshape(1, -1)
    rgb = render.colorize(values, 2.0, cmap)
    assert rgb.shape == (1, 61, 3)
    assert rgb.min() >= 0 and rgb.max() <= 1


def test_unknown_colour_map_is_named():
    with pytest.raises(ValueError, match="unknown colour map 'rainbow'"):
        render.colorize(np.zeros((2, 2)), 1.0, "rainbow")


def test_scale_per_image_and_shared():
    values = np.stack([np.full((2, 2), 1.0), np.full((2, 2), -4.0)])
    np.testing.assert_array_equal(render.heatmap_scale(values, "seismic"), [1, 4])
    np.testing.assert_array_equal(render.heatmap_scale(values, "seismic", shared=True), [4, 4])
    # the original's map scales by the largest positive value only (spec 1.7)
    np.testing.assert_array_equal(render.heatmap_scale(values, "original"), [1, 0])


def test_zero_scale_renders_neutral_colour_without_division_by_zero():
    rgb = render.colorize(np.zeros((3, 3)), 0.0, "seismic")
    assert np.all(rgb == 1.0)


def test_overlay_keeps_the_image_where_relevance_is_zero():
    image = np.random.default_rng(0).uniform(size=(4, 4, 3))
    values = np.zeros((4, 4))
    values[0, 0] = 5.0
    heat = render.colorize(values, 5.0, "seismic")
    out = render.overlay(image, heat, values, 5.0, alpha=0.5)
    grey = image @ np.array([0.299, 0.587, 0.114])
    np.testing.assert_allclose(out[1:, 1:], np.repeat(grey[1:, 1:, None], 3, axis=2))
    np.testing.assert_allclose(out[0, 0], 0.5 * grey[0, 0] + 0.5 * np.array([1, 0, 0]))


def test_pixel_relevance_sums_channels():
    r = np.arange(24, dtype=np.float32).reshape(2, 3, 2, 2)
    np.testing.assert_array_equal(render.pixel_relevance(r), r.sum(axis=1))
    np.testing.assert_array_equal(render.pixel_relevance(r[0]), r[0].sum(axis=0))


@pytest.mark.parametrize("depth", [8, 16])
def test_png_bytes_decode_to_the_same_pixels(depth):
    top = 255 if depth == 8 else 65535
    rgb = np.random.default_rng(1).integers(0, top + 1, (7, 9, 3))
    img = Image.open(io.BytesIO(render.png_bytes(rgb, depth)))
    assert img.size == (9, 7) and img.mode == "RGB"
    expected = rgb if depth == 8 else rgb >> 8      # Pillow reads 16-bit RGB as its high bytes
    np.testing.assert_array_equal(np.asarray(img), expected)


def test_bwr_is_the_default_map_and_seismic_its_alias():
    values = np.array([[0.0, 2.0, -2.0, 1.0]])
    np.testing.assert_array_equal(render.colorize(values, 2.0),
                                  render.colorize(values, 2.0, "bwr"))
    np.testing.assert_array_equal(render.colorize(values, 2.0, "seismic"),
                                  render.colorize(values, 2.0, "bwr"))
    # matplotlib's bwr: white at 0, (1, 0, 0) at +1, (0, 0, 1) at -1, linear in between
    np.testing.assert_allclose(render.colorize(values, 2.0, "bwr")[0],
                               [[1, 1, 1], [1, 0, 0], [0, 0, 1], [1, 0.5, 0.5]], atol=1e-12)
