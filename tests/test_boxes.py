"""Bounding boxes: VOC/ImageNet XML and CSV parsing, mapping through the toolbox geometry."""
import numpy as np
import pytest
from PIL import Image

from caffelrp.boxes import Box, BoxError, BoxSource, network_mask, read_csv, read_voc_xml
from caffelrp.preprocess import mean_pixel, toolbox_preprocess

VOC = """<annotation>
  <folder>VOC2007</folder>
  <filename>cat.jpg</filename>
  <size><width>300</width><height>100</height><depth>3</depth></size>
  <object>
    <name>cat</name>
    <bndbox><xmin>11</xmin><ymin>21</ymin><xmax>40</xmax><ymax>60</ymax></bndbox>
  </object>
  <object>
    <name>dog</name>
    <bndbox>
      <xmin>100.5</xmin><ymin>1</ymin><xmax>300</xmax><ymax>100</ymax>
    </bndbox>
  </object>
</annotation>
"""


def test_voc_xml(tmp_path):
    path = tmp_path / "cat.xml"
    path.write_text(VOC)
    boxes, size = read_voc_xml(path)
    assert size == (300.0, 100.0)
    # VOC pixels are numbered from 1 and both ends are inside: pixels 11..40 = edges [10, 40)
    assert boxes[0].as_list() == [10.0, 20.0, 40.0, 60.0] and boxes[0].label == "cat"
    assert boxes[1].as_list() == [99.5, 0.0, 300.0, 100.0] and boxes[1].label == "dog"
    assert boxes[1].source == "%s line 11" % path
    source = BoxSource(tmp_path)
    assert source.boxes_for("/somewhere/cat.jpg", (300, 100)) == boxes
    assert source.boxes_for("/somewhere/other.jpg", (300, 100)) == []
    with pytest.raises(BoxError, match=r"cat\.xml: <size> says 300 x 100, but .* is 200 x 100"):
        source.boxes_for("cat.png", (200, 100))


@pytest.mark.parametrize("text, line, message", [
    (VOC.replace("</bndbox>\n  </object>\n  <object>", "\n  </object>\n  <object>"), 8,
     "mismatched tag"),
    (VOC.replace("<xmax>40</xmax>", ""), 7, "<bndbox> has no <xmax>"),
    (VOC.replace("<ymin>1</ymin>", "<ymin>one</ymin>"), 12, "<ymin> must be a number"),
    (VOC.replace("<xmin>11</xmin>", "<xmin>45</xmin>"), 7, "empty box"),
    (VOC.replace("<xmax>300</xmax>", "<xmax>301</xmax>"), 11, "beyond the image size"),
    ('<?xml version="1.0"?>\n<!DOCTYPE a [<!ENTITY e "x">]>\n<annotation/>', 2, "DTD"),
    ("<annotations>\n</annotations>", 1, "expected <annotation>"),
])
def test_malformed_xml_names_file_and_line(tmp_path, text, line, message):
    path = tmp_path / "bad.xml"
    path.write_text(text)
    with pytest.raises(BoxError) as info:
        read_voc_xml(path)
    assert "%s line %d" % (path, line) in str(info.value)
    assert message in str(info.value)


def test_csv(tmp_path):
    path = tmp_path / "boxes.csv"
    path.write_text("image,x0,y0,x1,y1,class\na.jpg,0,0,10,20,cat\n\nb.png,1.5,2,3,4\n"
                    "a.jpg,5,5,6,6,dog\n")
    boxes = read_csv(path)
    assert [b.as_list() for b in boxes["a.jpg"]] == [[0, 0, 10, 20], [5, 5, 6, 6]]
    assert boxes["a.jpg"][1].label == "dog" and boxes["a.jpg"][1].source == "%s line 5" % path
    assert boxes["b.png"][0].as_list() == [1.5, 2, 3, 4]
    source = BoxSource(path)
    assert source.boxes_for("photos/a.jpg") == boxes["a.jpg"]     # matched by file name


@pytest.mark.parametrize("row, message", [
    ("a.jpg,0,0,10", "5 or 6 fields"),
    ("a.jpg,0,zero,10,10", "must be numbers"),
    ("a.jpg,10,0,5,10", "empty box"),
    ("a.jpg,-1,0,5,10", "negative"),
    ("a.jpg,0,0,inf,10", "finite"),
    (",0,0,5,10", "empty image name"),
])
def test_malformed_csv_names_file_and_line(tmp_path, row, message):
    path = tmp_path / "boxes.csv"
    path.write_text("image,x0,y0,x1,y1\nok.jpg,0,0,1,1\n%s\n" % row)
    with pytest.raises(BoxError) as info:
        read_csv(path)
    assert "%s line 3" % path in str(info.value) and message in str(info.value)


def test_missing_box_source():
    with pytest.raises(BoxError, match="no such file or folder"):
        BoxSource("/nonexistent/boxes.csv")


# ------------------------------------------------------------------------------ mapping
def box_image(width, height, box):
    """Black image, white inside the box (continuous edges [x0, x1) x [y0, y1))."""
    rgb = np.zeros((height, width, 3), np.uint8)
    rgb[int(box.y0):int(box.y1), int(box.x0):int(box.x1)] = 255
    return rgb


def preprocessed_white(tmp_path, rgb, in_hw, base):
    path = tmp_path / "img.png"
    Image.fromarray(rgb).save(path)
    prep = toolbox_preprocess(str(path), in_hw[0], in_hw[1], base, mean_pixel((0, 0, 0)))
    return prep.as_inputted[:, :, 0]          # the crop fed to the net, 0..1


def assert_mask_matches_pixels(mask, white, slack=2):
    """The mask agrees with the preprocessed white area except within ``slack`` pixels of its
    edge, where the resize filter blends the two."""
    from scipy.ndimage import binary_dilation, binary_erosion
    inner = binary_erosion(mask, iterations=slack)
    outer = binary_dilation(mask, iterations=slack)
    assert (white[inner] > 0.5).all()
    assert (white[~outer] < 0.5).all()


@pytest.mark.parametrize("size, box", [
    ((400, 300), Box(50, 40, 200, 250)),        # landscape: longer side cropped
    ((300, 420), Box(10, 300, 290, 420)),       # portrait, box at the bottom edge
    ((256, 256), Box(0, 0, 128, 100)),          # square, corner box
])
def test_mask_follows_the_resize_and_crop(tmp_path, size, box):
    width, height = size
    white = preprocessed_white(tmp_path, box_image(width, height, box), (227, 227), 256)
    mask = network_mask([box], (height, width), (227, 227), 256)
    assert mask.any()
    assert_mask_matches_pixels(mask, white)


def test_box_on_the_padded_band_and_outside_the_crop(tmp_path):
    # 300 x 100 -> 256 x 85: 227 rows needed, 71 replicated above and 71 below; 227 of the 256
    # columns kept, from column 14 on (about 16 original pixels cut on the left)
    top = Box(100, 0, 200, 30)                       # touches the top edge: replicated upwards
    white = preprocessed_white(tmp_path, box_image(300, 100, top), (227, 227), 256)
    mask = network_mask([top], (100, 300), (227, 227), 256)
    assert (white[:71, 130:150] > 0.5).all()         # the band shows the box's edge row ...
    assert not mask[:71].any()                       # ... but it is not the object
    assert mask[71:].any()
    assert_mask_matches_pixels(mask[71:71 + 85], white[71:71 + 85])
    # a box left of the crop maps to nothing
    assert not network_mask([Box(0, 10, 12, 90)], (100, 300), (227, 227), 256).any()
    # the union of several boxes
    both = network_mask([top, Box(0, 10, 12, 90)], (100, 300), (227, 227), 256)
    np.testing.assert_array_equal(both, mask)
