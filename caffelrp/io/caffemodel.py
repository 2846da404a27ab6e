"""Reading and writing binary Caffe weight files (.caffemodel) and BlobProto files (.binaryproto).

The reader walks the protobuf wire format itself instead of handing the file to protobuf:

* the float payload of every blob is one packed run of little-endian float32 (caffe-format.md
  §1.1), which is read with ``readinto`` straight into its own aligned numpy array, so nothing is
  decoded element by element and peak memory stays at about the size of the weights;
* protobuf's message-size limit (pitfall P9: VGG-16 is 553 MB) does not apply;
* V2 (``layer``, field 100), V1 (``layers``, field 2) and V0 (the V1 message's field 1) layers are
  all understood, as Caffe's upgrade path would see them (§2.1, Appendix B).

Only what weight loading needs is kept: each layer's name, type and blobs, in file order.
"""
import math
import os
from dataclasses import dataclass, field

import numpy as np

from ..errors import ArgumentError, WeightsError
from ..files import write_atomically  # noqa: F401  (re-exported: the one atomic writer)
from ..proto import caffe_pb2

# Wire types (protobuf encoding).
VARINT, FIXED64, LENGTH_DELIMITED, FIXED32 = 0, 1, 2, 5


def _numbers(message, *fields):
    """The field numbers of ``message`` in the project's caffe.proto (through the generated
    descriptors: the schema is the one source of truth, caffe-format.md §1.3, §1.6, §1.7)."""
    by_name = getattr(caffe_pb2, message).DESCRIPTOR.fields_by_name
    return tuple(by_name[f].number for f in fields)


NET_NAME, NET_LAYER, NET_LAYERS = _numbers("NetParameter", "name", "layer", "layers")
LAYER_NAME, LAYER_TYPE, LAYER_BLOBS = _numbers("LayerParameter", "name", "type", "blobs")
V1_V0LAYER, V1_NAME, V1_TYPE, V1_BLOBS = _numbers("V1LayerParameter", "layer", "name", "type",
                                                  "blobs")
V0_NAME, V0_TYPE, V0_BLOBS = _numbers("V0LayerParameter", "name", "type", "blobs")
BLOB_NUM, BLOB_CHANNELS, BLOB_HEIGHT, BLOB_WIDTH = _numbers("BlobProto", "num", "channels",
                                                            "height", "width")
BLOB_DATA, BLOB_SHAPE, BLOB_DOUBLE_DATA = _numbers("BlobProto", "data", "shape", "double_data")
(SHAPE_DIM,) = _numbers("BlobShape", "dim")

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


@dataclass
class StoredBlob:
    """One parameter blob as stored: its declared shape and its values (flat float32)."""
    shape: tuple
    legacy: bool  # shape came from num/channels/height/width (always 4-D, §2.5)
    data: np.ndarray

    @property
    def count(self):
        return math.prod(int(d) for d in self.shape)   # Python ints: declared dims can be 2^62

    def describe_shape(self):
        """Caffe's way of printing a shape, e.g. ``1 1 4096 9216 (37748736)``."""
        return " ".join(str(d) for d in self.shape) + " (%d)" % self.count


@dataclass
class StoredLayer:
    name: str
    type: str  # V2 type string, V1 enum number as a string ("V1:4"), or V0 type string
    blobs: list = field(default_factory=list)


class _WireReader:
    """Sequential reader of protobuf fields from a binary file, with message-length bookkeeping."""

    def __init__(self, f, path, size):
        self.f = f
        self.path = path
        self.size = size
        self.pos = 0

    def fail(self, what):
        raise WeightsError("%s: %s (at byte %d of %d); the file is truncated or not a Caffe "
                           "binary protobuf file" % (self.path, what, self.pos, self.size))

    def read(self, n):
        data = self.f.read(n)
        if len(data) != n:
            self.pos += len(data)
            self.fail("unexpected end of file while reading %d bytes" % n)
        self.pos += n
        return data

    def read_into(self, array, what):
        view = memoryview(array).cast("B")
        got = self.f.readinto(view)
        while got is not None and got < len(view):  # readinto may return short counts
            more = self.f.readinto(view[got:])
            if not more:
                break
            got += more
        if got != len(view):
            self.pos += got or 0
            self.fail("unexpected end of file inside %s" % what)
        self.pos += got

    def skip(self, n):
        if self.pos + n > self.size:
            self.fail("a field of %d bytes runs past the end of the file" % n)
        self.f.seek(n, os.SEEK_CUR)
        self.pos += n

    def varint(self):
        result = shift = 0
        while True:
            b = self.f.read(1)
            if not b:
                self.fail("unexpected end of file inside a varint")
            self.pos += 1
            byte = b[0]
            result |= (byte & 0x7F) << shift
            if not byte & 0x80:
                if result >> 64:   # protobuf's varints hold 64 bits; 10 bytes can say 70
                    self.fail("malformed varint (a value of more than 64 bits)")
                return result
            shift += 7
            if shift > 63:
                self.fail("malformed varint")

    def fields(self, end):
        """Yield (field number, wire type) until byte offset ``end``; the caller consumes values."""
        while self.pos < end:
            key = self.varint()
            number, wire_type = key >> 3, key & 7
            if number == 0:
                self.fail("field number 0")
            yield number, wire_type
        if self.pos != end:
            self.fail("a field runs past the end of its message")

    def length(self, end):
        n = self.varint()
        if self.pos + n > end:
            self.fail("a length-delimited field of %d bytes runs past the end of its message" % n)
        return n

    def skip_value(self, wire_type, end):
        if wire_type == VARINT:
            self.varint()
        elif wire_type == FIXED64:
            self.skip(8)
        elif wire_type == LENGTH_DELIMITED:
            self.skip(self.length(end))
        elif wire_type == FIXED32:
            self.skip(4)
        else:
            self.fail("unsupported wire type %d (groups are not used by Caffe)" % wire_type)

    def string(self, end):
        raw = self.read(self.length(end))
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            self.fail("a layer name or type is not valid UTF-8")


def _signed64(v):
    return v - (1 << 64) if v >= 1 << 63 else v


def _read_shape(r, end):
    dims = []
    for number, wire_type in r.fields(end):
        if number == SHAPE_DIM and wire_type == LENGTH_DELIMITED:  # packed (the usual form)
            n = r.length(end)
            stop = r.pos + n
            while r.pos < stop:
                dims.append(_signed64(r.varint()))
        elif number == SHAPE_DIM and wire_type == VARINT:  # unpacked: accepted like protobuf does
            dims.append(_signed64(r.varint()))
        else:
            r.skip_value(wire_type, end)
    return tuple(dims)


def _read_packed(r, end, dtype, where):
    """A packed run of floats or doubles, read straight into a new aligned array."""
    n = r.length(end)
    itemsize = np.dtype(dtype).itemsize
    if n % itemsize:
        r.fail("%s: packed data of %d bytes is not a multiple of %d" % (where, n, itemsize))
    arr = np.empty(n // itemsize, dtype=dtype)
    r.read_into(arr, where)
    return arr


def _read_blob(r, end, where):
    legacy_dims = {}
    shape = ()
    chunks = []          # float32 arrays from packed runs, in order
    loose = bytearray()  # unpacked float32 elements
    double_chunks = []
    loose_double = bytearray()
    for number, wire_type in r.fields(end):
        if number in (BLOB_NUM, BLOB_CHANNELS, BLOB_HEIGHT, BLOB_WIDTH) and wire_type == VARINT:
            legacy_dims[number] = _signed64(r.varint())
        elif number == BLOB_SHAPE and wire_type == LENGTH_DELIMITED:
            n = r.length(end)
            shape = _read_shape(r, r.pos + n)
        elif number == BLOB_DATA and wire_type == LENGTH_DELIMITED:
            chunks.append(_read_packed(r, end, "<f4", where))
        elif number == BLOB_DATA and wire_type == FIXED32:
            loose += r.read(4)
        elif number == BLOB_DOUBLE_DATA and wire_type == LENGTH_DELIMITED:
            double_chunks.append(_read_packed(r, end, "<f8", where))
        elif number == BLOB_DOUBLE_DATA and wire_type == FIXED64:
            loose_double += r.read(8)
        else:  # diff, double_diff and unknown fields: not needed for inference
            r.skip_value(wire_type, end)

    if legacy_dims:  # §2.5: any legacy field present -> exactly 4-D, unset ones are 0
        shape = tuple(legacy_dims.get(k, 0) for k in (BLOB_NUM, BLOB_CHANNELS, BLOB_HEIGHT,
                                                       BLOB_WIDTH))
    if loose:
        chunks.append(np.frombuffer(bytes(loose), dtype="<f4").copy())
    if loose_double:
        double_chunks.append(np.frombuffer(bytes(loose_double), dtype="<f8"))
    if double_chunks:  # Caffe uses double_data when it is non-empty
        values = np.concatenate(double_chunks).astype(np.float32)
    elif len(chunks) == 1:
        values = chunks[0]
    elif chunks:
        values = np.concatenate(chunks)
    else:
        values = np.empty(0, dtype=np.float32)
    blob = StoredBlob(shape=shape, legacy=bool(legacy_dims), data=values)
    if any(d < 0 for d in shape):
        raise WeightsError("%s: %s has a negative dimension: %s" % (r.path, where, shape))
    if values.size != blob.count:
        raise WeightsError("%s: %s declares shape %s but holds %d values" % (
            r.path, where, blob.describe_shape(), values.size))
    return blob


def _read_layer(r, end, kind, index):
    """Read one V2/V1 layer message (V0 is nested inside V1)."""
    layer = StoredLayer(name="", type="")
    name_field, type_field, blobs_field = {
        "v2": (LAYER_NAME, LAYER_TYPE, LAYER_BLOBS),
        "v1": (V1_NAME, V1_TYPE, V1_BLOBS),
        "v0": (V0_NAME, V0_TYPE, V0_BLOBS),
    }[kind]
    for number, wire_type in r.fields(end):
        if number == name_field and wire_type == LENGTH_DELIMITED:
            layer.name = r.string(end)
        elif number == type_field and kind == "v1" and wire_type == VARINT:
            layer.type = "V1:%d" % r.varint()
        elif number == type_field and kind != "v1" and wire_type == LENGTH_DELIMITED:
            layer.type = r.string(end)
        elif number == blobs_field and wire_type == LENGTH_DELIMITED:
            n = r.length(end)
            where = "blob %d of layer %d ('%s')" % (len(layer.blobs), index, layer.name)
            layer.blobs.append(_read_blob(r, r.pos + n, where))
        elif kind == "v1" and number == V1_V0LAYER and wire_type == LENGTH_DELIMITED:
            n = r.length(end)
            inner = _read_layer(r, r.pos + n, "v0", index)
            layer.name = layer.name or inner.name
            layer.type = inner.type
            layer.blobs.extend(inner.blobs)
        else:
            r.skip_value(wire_type, end)
    return layer


def read_caffemodel(path):
    """Read a .caffemodel into a list of :class:`StoredLayer` (file order, weights as float32)."""
    path = os.fspath(path)
    try:
        size = os.path.getsize(path)
        f = open(path, "rb", buffering=1 << 16)
    except OSError as e:
        raise WeightsError("cannot open weights file %s: %s" % (path, e.strerror)) from None
    with f:
        if f.read(len(HDF5_SIGNATURE)) == HDF5_SIGNATURE:
            raise WeightsError("%s is an HDF5 Caffe weight file; only binary protobuf "
                               ".caffemodel files are supported" % path)
        f.seek(0)
        if size == 0:
            raise WeightsError("%s: the weights file is empty" % path)
        r = _WireReader(f, path, size)
        layers = []
        for number, wire_type in r.fields(size):
            if number in (NET_LAYER, NET_LAYERS) and wire_type == LENGTH_DELIMITED:
                n = r.length(size)
                kind = "v2" if number == NET_LAYER else "v1"
                layers.append(_read_layer(r, r.pos + n, kind, len(layers)))
            else:
                r.skip_value(wire_type, size)
    if not layers:
        raise WeightsError("%s holds no layers: not a Caffe weights file" % path)
    return layers


def read_blobproto(path):
    """Read a bare serialized BlobProto (a mean ``.binaryproto``) into a :class:`StoredBlob`."""
    path = os.fspath(path)
    try:
        size = os.path.getsize(path)
        f = open(path, "rb")
    except OSError as e:
        raise WeightsError("cannot open %s: %s" % (path, e.strerror)) from None
    with f:
        if size == 0:
            raise WeightsError("%s is empty" % path)
        r = _WireReader(f, path, size)
        return _read_blob(r, size, "the BlobProto")


# ------------------------------------------------------------------------------------ writing
def _varint(n):
    n = int(n)
    if n < 0:
        n += 1 << 64
    out = bytearray()
    while True:
        low = n & 0x7F
        n >>= 7
        if n:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def _field(number, wire_type):
    return _varint((number << 3) | wire_type)


def _bytes_field(number, payload):
    return _field(number, LENGTH_DELIMITED) + _varint(len(payload)) + payload


def _blob_bytes(array, legacy):
    array = np.ascontiguousarray(array, dtype="<f4")
    out = b""
    if legacy:
        if array.ndim > 4:
            raise ArgumentError("a legacy blob has at most 4 dimensions, got %s" % (array.shape,))
        dims = (1,) * (4 - array.ndim) + array.shape  # right-aligned, like Caffe's ShapeEquals
        for number, d in zip((BLOB_NUM, BLOB_CHANNELS, BLOB_HEIGHT, BLOB_WIDTH), dims):
            out += _field(number, VARINT) + _varint(d)
    else:
        shape = b"".join(_varint(d) for d in array.shape)
        out += _bytes_field(BLOB_SHAPE, _bytes_field(SHAPE_DIM, shape))
    return out + _bytes_field(BLOB_DATA, array.tobytes())


def blobproto_bytes(array, legacy=False):
    """Serialize one array as a BlobProto (e.g. a mean file: ``legacy=True``, shape (1,3,H,W))."""
    return _blob_bytes(array, legacy)


def caffemodel_bytes(layers, fmt="v2", name=""):
    """Serialize ``[(layer name, type, [arrays])]`` as a NetParameter.

    ``fmt="v2"``: ``layer`` entries with N-D shapes, as Caffe 1.0 writes them.
    ``fmt="v1"``: ``layers`` entries with the V1 type enum and legacy 4-D dims, as the 2014 BVLC
    model-zoo files are written (caffe-format.md §0).
    """
    from .prototxt import v1_type_number  # local: the table lives with the upgrade rules
    if fmt not in ("v2", "v1"):
        raise ArgumentError("fmt must be 'v2' or 'v1', got %r" % (fmt,))

    body = _bytes_field(NET_NAME, name.encode()) if name else b""
    for layer_name, layer_type, arrays in layers:
        if fmt == "v2":
            msg = _bytes_field(LAYER_NAME, layer_name.encode())
            msg += _bytes_field(LAYER_TYPE, layer_type.encode())
            msg += b"".join(_bytes_field(LAYER_BLOBS, _blob_bytes(a, False)) for a in arrays)
            body += _bytes_field(NET_LAYER, msg)
        else:
            msg = _bytes_field(V1_NAME, layer_name.encode())
            msg += _field(V1_TYPE, VARINT) + _varint(v1_type_number(layer_type))
            msg += b"".join(_bytes_field(V1_BLOBS, _blob_bytes(a, True)) for a in arrays)
            body += _bytes_field(NET_LAYERS, msg)
    return body


def write_caffemodel(path, layers, fmt="v2", name=""):
    """Write ``[(layer name, type, [arrays])]`` to a .caffemodel file (see caffemodel_bytes)."""
    write_atomically(path, caffemodel_bytes(layers, fmt=fmt, name=name))


def read_mean_binaryproto(path):
    """Read a mean ``.binaryproto`` (BlobProto, legacy 1xCxHxW dims) as float32 (C, H, W)."""
    blob = read_blobproto(path)
    shape = blob.shape
    if len(shape) == 4 and shape[0] == 1:
        shape = shape[1:]
    if len(shape) != 3 or blob.count == 0:
        raise WeightsError("%s: a mean file must hold one C x H x W image, found shape %s"
                           % (path, blob.describe_shape()))
    bad = non_finite_count(blob.data)
    if bad:
        raise WeightsError("%s: the mean holds %d non-finite value(s) (NaN or infinity)"
                           % (path, bad))
    return blob.data.reshape(shape)


def non_finite_count(values, chunk=1 << 20):
    """How many NaN / infinite values an array holds (in chunks: no temporary the size of a
    553 MB weights file)."""
    flat = np.asarray(values).reshape(-1)
    parts = (flat[i:i + chunk] for i in range(0, flat.size, chunk))
    return sum(int(part.size - np.count_nonzero(np.isfinite(part))) for part in parts)


__all__ = ["StoredBlob", "StoredLayer", "read_caffemodel", "read_blobproto",
           "read_mean_binaryproto", "non_finite_count", "write_caffemodel", "caffemodel_bytes",
           "blobproto_bytes", "write_atomically"]
