"""Object bounding boxes for the localisation metrics of ``python -m caffelrp evaluate``.

Boxes come in original image pixels, from

* PASCAL VOC / ImageNet (ILSVRC) XML annotation files (``<annotation><size><width>..<height>``,
  one ``<object><name>..<bndbox><xmin><ymin><xmax><ymax>`` per box): VOC numbers pixels from 1
  and includes both ends, so pixels xmin..xmax are the box, i.e. the continuous edges
  [xmin - 1, xmax). A folder of them is matched by image file name (``STEM.xml``).
* a CSV file of ``image,x0,y0,x1,y1[,class]`` rows (an optional header line starting with
  ``image``): pixels numbered from 0, x1 / y1 exclusive, i.e. the continuous edges [x0, x1).
  ``image`` is matched against the image's file name (or its path as given).

``network_mask`` maps a box through the toolbox preprocessing (``caffelrp.preprocess``: the
ImageMagick resize of the longer side to ``base_size``, the centre crop, edge replication where
the short side is shorter than the input) to a boolean mask over the network input: a network
pixel is in the box when the centre of the resized pixel it shows lies inside the box. Pixels of
the padded bands (replicated edge rows or columns) belong to no box: they show no object.
"""
import csv
import os
from dataclasses import dataclass
from pathlib import Path
from xml.parsers import expat

import numpy as np

from .errors import CaffeLRPError
from .preprocess import _axis_indices, fit_geometry


class BoxError(CaffeLRPError):
    """An annotation file (XML or CSV) cannot be read or holds a malformed box."""


@dataclass(frozen=True)
class Box:
    """A box in original image pixels as continuous edges: x0 <= x < x1, y0 <= y < y1."""
    x0: float
    y0: float
    x1: float
    y1: float
    label: str = ""
    source: str = ""          # "FILE line N", for messages

    def as_list(self):
        return [self.x0, self.y0, self.x1, self.y1]


# ---------------------------------------------------------------------------------- XML
class _Element:
    def __init__(self, tag, line):
        self.tag, self.line, self.children, self.text = tag, line, [], ""

    def find(self, tag):
        return next((c for c in self.children if c.tag == tag), None)

    def findall(self, tag):
        return [c for c in self.children if c.tag == tag]


def _parse_xml(path, data):
    """A minimal element tree with line numbers (expat; DTDs and entities refused)."""
    parser = expat.ParserCreate()
    root, stack = [], []

    def start(tag, attrs):
        element = _Element(tag, parser.CurrentLineNumber)
        (stack[-1].children if stack else root).append(element)
        stack.append(element)

    def end(tag):
        stack.pop()

    def chars(text):
        if stack:
            stack[-1].text += text

    def doctype(*args):
        raise BoxError("%s line %d: DTDs are not accepted in annotation files"
                       % (path, parser.CurrentLineNumber))

    parser.StartElementHandler, parser.EndElementHandler = start, end
    parser.CharacterDataHandler, parser.StartDoctypeDeclHandler = chars, doctype
    parser.EntityDeclHandler = doctype
    try:
        parser.Parse(data, True)
    except expat.ExpatError as e:
        raise BoxError("%s line %d: malformed XML: %s" % (path, e.lineno,
                                                          expat.ErrorString(e.code))) from None
    if not root:
        raise BoxError("%s line 1: no XML element" % path)
    return root[0]


def _number(path, element, parent, field):
    child = parent.find(field)
    if child is None:
        raise BoxError("%s line %d: <%s> has no <%s>" % (path, parent.line, parent.tag, field))
    try:
        value = float(child.text.strip())
    except ValueError:
        raise BoxError("%s line %d: <%s> must be a number, got %r"
                       % (path, child.line, field, child.text.strip())) from None
    if not np.isfinite(value):
        raise BoxError("%s line %d: <%s> must be finite, got %r" % (path, child.line, field,
                                                                    child.text.strip()))
    return value


def read_voc_xml(path):
    """(boxes, (width, height) or None) of a PASCAL VOC / ImageNet annotation file."""
    path = str(path)
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise BoxError("%s: cannot read: %s" % (path, e.strerror or e)) from None
    root = _parse_xml(path, data)
    if root.tag != "annotation":
        raise BoxError("%s line %d: expected <annotation>, found <%s>"
                       % (path, root.line, root.tag))
    size = None
    size_el = root.find("size")
    if size_el is not None:
        size = (_number(path, root, size_el, "width"), _number(path, root, size_el, "height"))
    boxes = []
    for obj in root.findall("object"):
        box_el = obj.find("bndbox")
        if box_el is None:
            raise BoxError("%s line %d: <object> has no <bndbox>" % (path, obj.line))
        xmin, ymin, xmax, ymax = (_number(path, obj, box_el, f)
                                  for f in ("xmin", "ymin", "xmax", "ymax"))
        name = obj.find("name")
        where = "%s line %d" % (path, box_el.line)
        # VOC: 1-based pixel indices, both ends included
        boxes.append(_checked(Box(xmin - 1, ymin - 1, xmax, ymax,
                                  name.text.strip() if name is not None else "", where), size))
    return boxes, size


def _checked(box, size=None):
    if not (box.x1 > box.x0 and box.y1 > box.y0):
        raise BoxError("%s: empty box (x0 %g, y0 %g, x1 %g, y1 %g): the end must lie beyond the "
                       "start" % (box.source, box.x0, box.y0, box.x1, box.y1))
    if box.x0 < 0 or box.y0 < 0:
        raise BoxError("%s: box starts at a negative coordinate (%g, %g)"
                       % (box.source, box.x0, box.y0))
    if size is not None and (box.x1 > size[0] or box.y1 > size[1]):
        raise BoxError("%s: box reaches (%g, %g), beyond the image size %g x %g"
                       % (box.source, box.x1, box.y1, size[0], size[1]))
    return box


# ---------------------------------------------------------------------------------- CSV
CSV_FIELDS = ("image", "x0", "y0", "x1", "y1")


def read_csv(path):
    """{image name: [Box]} from a CSV of image,x0,y0,x1,y1[,class] rows."""
    path = str(path)
    try:
        with open(path, newline="") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise BoxError("%s: cannot read as CSV: %s" % (path, e)) from None
    boxes = {}
    for line, row in enumerate(rows, 1):
        if not row or all(not cell.strip() for cell in row):
            continue
        if line == 1 and row[0].strip().lower() == "image":
            continue   # header
        if len(row) not in (5, 6):
            raise BoxError("%s line %d: expected image,x0,y0,x1,y1[,class] (5 or 6 fields), got "
                           "%d fields" % (path, line, len(row)))
        try:
            x0, y0, x1, y1 = (float(v) for v in row[1:5])
        except ValueError:
            raise BoxError("%s line %d: x0,y0,x1,y1 must be numbers, got %s"
                           % (path, line, ",".join(row[1:5]))) from None
        if not all(np.isfinite(v) for v in (x0, y0, x1, y1)):
            raise BoxError("%s line %d: coordinates must be finite" % (path, line))
        name = row[0].strip()
        if not name:
            raise BoxError("%s line %d: empty image name" % (path, line))
        label = row[5].strip() if len(row) == 6 else ""
        boxes.setdefault(name, []).append(
            _checked(Box(x0, y0, x1, y1, label, "%s line %d" % (path, line))))
    return boxes


class BoxSource:
    """``--boxes DIR`` (XML files matched by image stem) or ``--boxes FILE.csv``."""

    def __init__(self, location):
        self.location = str(location)
        self.is_dir = Path(self.location).is_dir()
        if not self.is_dir and not Path(self.location).is_file():
            raise BoxError("%s: no such file or folder" % self.location)
        self._csv = None if self.is_dir else read_csv(self.location)

    def boxes_for(self, image_path, image_size=None):
        """[Box] of an image (empty if it has none). ``image_size`` (width, height) is checked
        against the XML's <size>."""
        if self.is_dir:
            xml = Path(self.location) / (Path(image_path).stem + ".xml")
            if not xml.is_file():
                return []
            boxes, size = read_voc_xml(xml)
            if size is not None and image_size is not None and tuple(size) != tuple(
                    float(v) for v in image_size):
                raise BoxError("%s: <size> says %g x %g, but %s is %d x %d"
                               % (xml, size[0], size[1], image_path, image_size[0], image_size[1]))
            return boxes
        for key in (str(image_path), os.path.basename(str(image_path))):
            if key in self._csv:
                return self._csv[key]
        return []


# ------------------------------------------------------------------------------ mapping
def _source_centres(length, resized_length, size, crop_long, border):
    """Per network pixel along one axis: the centre of the original-image pixel span it shows
    (in original pixels) and whether it is real image content (not a replicated pad)."""
    index, _ = _axis_indices(resized_length, size, size, crop_long, (border, 0))
    k = np.arange(size)
    if crop_long:
        real = (border + k >= 0) & (border + k < resized_length)
    elif resized_length >= size:
        real = np.ones(size, bool)
    else:
        offset = (size - resized_length) // 2
        real = (k - offset >= 0) & (k - offset < resized_length)
    return (index + 0.5) * (length / resized_length), real


def network_mask(boxes, image_hw, in_hw, base_size):
    """Boolean (H, W) mask over the network input of the union of ``boxes`` (original pixels)
    for an image of ``image_hw`` = (rows, cols) preprocessed by ``toolbox_preprocess``."""
    rows, cols = image_hw
    in_h, in_w = in_hw
    width, height = fit_geometry(cols, rows, base_size)
    border = (base_size - max(in_h, in_w)) // 2
    portrait = height > width
    cy, real_y = _source_centres(rows, height, in_h, portrait, border)
    cx, real_x = _source_centres(cols, width, in_w, not portrait, border)
    mask = np.zeros((in_h, in_w), bool)
    for b in boxes:
        inside_y = (cy >= b.y0) & (cy < b.y1) & real_y
        inside_x = (cx >= b.x0) & (cx < b.x1) & real_x
        mask |= inside_y[:, None] & inside_x[None, :]
    return mask


def mask_extent(mask):
    """[x0, y0, x1, y1] (network pixels, x1/y1 exclusive) around a mask, or None if empty."""
    ys, xs = np.nonzero(mask)
    if ys.size == 0:
        return None
    return [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]
