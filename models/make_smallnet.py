#!/usr/bin/env python3
"""Write the bundled SmallNet files: smallnet.caffemodel, synset10.txt and example.png.

The weights are random, drawn by the rule of the LRP reference outputs (shared/reference/README.md,
"Weight rule"), so that with seed 1 the file is byte-identical to the reference smallnet and
caffelrp's example reproduces the published reference numbers:

    rng    = numpy.random.default_rng(int.from_bytes(sha256(f"{seed}/{layer}/{blob}").digest()[:8], "little"))
    blob 0 = N(0,1) * sqrt(2 / prod(shape[1:]))      (He scaling; fan-in of a 1-D blob is its length)
    blob 1 = N(0,1) * 0.01 + 0.01
    blob k = N(0,1) * 0.01                            (k >= 2)
    drawn in float64, stored as float32

The caffemodel is a NetParameter with current-style `layer` entries (field 100) whose blobs carry
N-D `shape`s; the protobuf wire encoding is written here directly (spec caffe-format.md §1.3 and
Appendix B), so neither Caffe nor generated protobuf code is needed. The encoder also serves the
tests, which write random weights for the bigger bundled nets.

    python3 models/make_smallnet.py                # rewrites models/smallnet/{smallnet.caffemodel,...}
    python3 models/make_smallnet.py --out-dir DIR --seed 2
"""
import argparse
import hashlib
import math
import os

import numpy as np

# (name, type, parameter blob shapes) of every layer, in net order; shapes as Caffe derives them
# from models/smallnet/deploy.prototxt for a 3x64x64 input.
SMALLNET = [
    ("conv1", "Convolution", [(8, 3, 5, 5), (8,)]),
    ("relu1", "ReLU", []),
    ("pool1", "Pooling", []),
    ("conv2", "Convolution", [(16, 8, 3, 3), (16,)]),
    ("relu2", "ReLU", []),
    ("pool2", "Pooling", []),
    ("ip1", "InnerProduct", [(64, 16 * 16 * 16), (64,)]),
    ("relu3", "ReLU", []),
    ("ip2", "InnerProduct", [(10, 64), (10,)]),
    ("prob", "Softmax", []),
]

CLASS_NAMES = [
    "class0 red disc", "class1 green square", "class2 blue triangle", "class3 yellow stripe",
    "class4 cyan ring", "class5 magenta star", "class6 grey cloud", "class7 orange sun",
    "class8 white moon", "class9 black hole",
]


# ------------------------------------------------------------------ protobuf wire encoding
# Every encoder returns a list of byte chunks; big float arrays stay as memoryviews, so a 500 MB
# model is streamed to disk without being copied into one bytes object first.

def varint(n):
    n = int(n)
    if n < 0:  # int32/int64 negatives are ten-byte two's complement varints
        n += 1 << 64
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _length_delimited(field, chunks):
    size = sum(len(c) for c in chunks)
    return [varint(field << 3 | 2) + varint(size)] + chunks


def _string(field, text):
    return _length_delimited(field, [text.encode("utf-8")])


def blob_chunks(array):
    """BlobProto{data = 5 (packed float32), shape = 7 (BlobShape{dim = 1, packed int64})}."""
    data = np.ascontiguousarray(array, dtype="<f4")
    dims = b"".join(varint(d) for d in data.shape)
    return (_length_delimited(5, [memoryview(data).cast("B")])
            + _length_delimited(7, _length_delimited(1, [dims])))


def layer_chunks(name, kind, blobs):
    """LayerParameter{name = 1, type = 2, blobs = 7}."""
    chunks = _string(1, name) + (_string(2, kind) if kind else [])
    for blob in blobs:
        chunks += _length_delimited(7, blob_chunks(blob))
    return chunks


def net_chunks(net_name, layers):
    """NetParameter{name = 1, layer = 100} for (name, type, [arrays]); layers without blobs are left
    out, since a weight file only needs the layers that have parameters."""
    chunks = _string(1, net_name) if net_name else []
    for name, kind, blobs in layers:
        if blobs:
            chunks += _length_delimited(100, layer_chunks(name, kind, blobs))
    return chunks


def write_caffemodel(path, net_name, layers):
    with open(path, "wb") as f:
        f.writelines(net_chunks(net_name, layers))


# ------------------------------------------------------------------ the reference weight rule

def reference_blob(seed, layer, index, shape):
    key = f"{seed}/{layer}/{index}".encode("utf-8")
    rng = np.random.default_rng(int.from_bytes(hashlib.sha256(key).digest()[:8], "little"))
    x = rng.standard_normal(size=tuple(shape))
    if index == 0:
        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else int(shape[0])
        x = x * math.sqrt(2.0 / max(fan_in, 1))
    elif index == 1:
        x = x * 0.01 + 0.01
    else:
        x = x * 0.01
    return x.astype(np.float32)


def smallnet_layers(seed=1):
    return [(name, kind, [reference_blob(seed, name, j, s) for j, s in enumerate(shapes)])
            for name, kind, shapes in SMALLNET]


def smallnet_caffemodel_bytes(seed=1):
    return b"".join(net_chunks("SmallNet", smallnet_layers(seed)))


# ------------------------------------------------------------------ example picture and classes

def draw_example(width=96, height=72):
    """A landscape picture of a few coloured shapes on a diagonal gradient, drawn without any
    randomness so the README's first command always sees the same image."""
    from PIL import Image, ImageDraw

    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    t = (x / (width - 1) + y / (height - 1)) / 2
    sky = np.array([70.0, 130.0, 200.0])
    sand = np.array([230.0, 200.0, 140.0])
    pixels = (sky * (1 - t[..., None]) + sand * t[..., None]).round().astype(np.uint8)
    image = Image.fromarray(pixels, "RGB")
    draw = ImageDraw.Draw(image)
    draw.ellipse((8, 10, 36, 38), fill=(220, 40, 40), outline=(90, 0, 0))
    draw.rectangle((52, 30, 82, 60), fill=(40, 170, 70), outline=(0, 70, 20))
    draw.polygon([(20, 66), (44, 40), (60, 66)], fill=(250, 220, 30))
    draw.line((0, 5, width - 1, 20), fill=(255, 255, 255), width=2)
    return image


def write_all(out_dir, seed=1):
    os.makedirs(out_dir, exist_ok=True)
    write_caffemodel(os.path.join(out_dir, "smallnet.caffemodel"), "SmallNet", smallnet_layers(seed))
    with open(os.path.join(out_dir, "synset10.txt"), "w") as f:
        f.write("\n".join(CLASS_NAMES) + "\n")
    draw_example().save(os.path.join(out_dir, "example.png"))


def main(argv=None):
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out-dir", default=os.path.join(here, "smallnet"))
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    write_all(args.out_dir, args.seed)


if __name__ == "__main__":
    main()
