"""Mutation fuzzing of what a user hands caffelrp: prototxts, caffemodels, mean files and images.

    python -m caffelrp.fuzz --target prototxt|caffemodel|mean|image|all [--cases N]
                            [--seconds S] [--seed K] [--findings DIR] [--engine builtin|atheris]

Each target has a few small valid files (its seeds), mutations that know the format (prototxt
tokens and blocks, protobuf fields and varints, PNG chunks with their CRCs fixed, header
integers) besides plain byte mutations, and a check: the file goes through the public path a
user's file takes (``Net``, ``load_weights``, ``forward``, ``relevance``, ``gradient``;
``--mean``'s resolution; the image reader and the toolbox preprocessing) and may only fail with a
``CaffeLRPError`` (for mean files: only the usage error of ``--mean``); accepted files must give
finite, well-formed results. Anything else is a finding: another exception, a crash (segfault,
abort), a hang, or a memory blow-up (each child runs under an address-space limit, so it is a
MemoryError there, not a machine out of memory).

Built-in engine (default): case ``i`` of seed ``K`` is a pure function of (K, target, i), so a
finding is reproduced from its number alone (``--case i``; ``--replay FILE`` runs a saved one in
this process, with its traceback). Cases run in child processes with faulthandler on; the parent
watches which case a child is on, so a crash or a hang is pinned to its case and a new child
goes on with the next one. ``--engine atheris`` hands the same targets, seeds and mutators to
atheris (coverage-guided libFuzzer; in-process, it stops at the first finding).

The test suite runs a few thousand cases per target with a fixed seed (tests/test_fuzz.py).
"""
import argparse
import io
import json
import os
import random
import re
import select
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

TARGETS = ("prototxt", "caffemodel", "mean", "image")
MAX_CASE_BYTES = 1 << 20

# forward / relevance only on nets this small (elements of all blobs, weights; flops)
RUN_MAX_ELEMENTS = 2_000_000
RUN_MAX_FLOPS = 100_000_000

INTERESTING_INTS = (0, 1, 2, 3, 7, 16, 127, 128, 255, 256, 1023, 65535, 65536, 2 ** 24 + 1,
                    2 ** 30, 2 ** 30 + 1, 2 ** 31 - 2, 2 ** 31 - 1, 2 ** 31, 2 ** 31 + 1,
                    2 ** 32 - 1, 2 ** 32, 2 ** 53 + 1, 2 ** 62, 2 ** 63 - 1, 2 ** 63, 2 ** 64 - 1,
                    -1, -2, -128, -2 ** 31, -2 ** 31 - 1, -2 ** 63)
INTERESTING_NUMBER_TEXT = ("0", "1", "-1", "2", "3", "-0", "0.5", "1e-45", "1e38", "3.5e38",
                           "1e309", "nan", "-nan", "inf", "-inf", "0x10", "010", "1.5",
                           "2147483647", "2147483648", "-2147483649", "4294967295", "4294967296",
                           "9223372036854775807", "9223372036854775808", "18446744073709551615",
                           "18446744073709551616", "1000000", "65537", "1073741825")
INTERESTING_FLOATS = (float("nan"), float("inf"), float("-inf"), -0.0, 1e-45, 3.4e38, -3.4e38,
                      1e-38, 1.0, -1.0)


class Violation(Exception):
    """A property a target checks was broken (an accepted file gave unusable results, a mean file
    failed with another error than --mean's usage error)."""


# ====================================================================== generic byte mutations
def _interesting_int_bytes(rng):
    v = rng.choice(INTERESTING_INTS)
    width = rng.choice((1, 2, 4, 8))
    v &= (1 << (8 * width)) - 1
    return v.to_bytes(width, rng.choice(("little", "big")))


def _position(rng, data, header_bias=True):
    """A position in data; headers (the first 64 bytes) are chosen more often, where formats
    keep their sizes."""
    if header_bias and rng.random() < 0.4:
        return rng.randrange(min(len(data), 64) + 1)
    return rng.randrange(len(data) + 1)


def mutate_bytes(data, rng, seeds):
    """One random byte-level change of ``data`` (bytes -> bytes)."""
    b = bytearray(data)
    if not b:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 16)))
    op = rng.randrange(9)
    i = _position(rng, b)
    if op == 0:                                              # flip a bit
        i = min(i, len(b) - 1)
        b[i] ^= 1 << rng.randrange(8)
    elif op == 1:                                            # an interesting byte
        i = min(i, len(b) - 1)
        b[i] = rng.choice((0, 1, 0x7F, 0x80, 0xFF, rng.randrange(256)))
    elif op == 2:                                            # an interesting integer
        v = _interesting_int_bytes(rng)
        b[i:i + len(v)] = v
    elif op == 3:                                            # insert random bytes
        b[i:i] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 9)))
    elif op == 4:                                            # delete a range
        del b[i:i + rng.randrange(1, 17)]
    elif op == 5:                                            # duplicate a range
        n = rng.randrange(1, 65)
        b[i:i] = b[i:i + n]
    elif op == 6:                                            # truncate
        del b[i:]
    elif op == 7:                                            # splice another seed in
        other = rng.choice(seeds)
        if other:
            j = rng.randrange(len(other))
            b[i:] = other[j:]
    else:                                                    # copy a range elsewhere
        n = rng.randrange(1, 33)
        j = rng.randrange(len(b))
        b[i:i + n] = b[j:j + n]
    return bytes(b)


# ================================================================= protobuf wire format mutations
def _read_varint(data, pos, end):
    result = shift = 0
    while pos < end and shift < 70:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
    return None, pos


def wire_fields(data, start=0, end=None, depth=0, out=None):
    """Every protobuf field that parses in data[start:end]: (start, value start, end, number,
    wire type), recursing into length-delimited values that parse as messages."""
    out = [] if out is None else out
    end = len(data) if end is None else end
    pos = start
    found = []
    while pos < end and len(out) + len(found) < 4096:
        key, value_start = _read_varint(data, pos, end)
        if key is None or key >> 3 == 0:
            break
        wire = key & 7
        if wire == 0:
            v, stop = _read_varint(data, value_start, end)
            if v is None:
                break
        elif wire == 1:
            stop = value_start + 8
        elif wire == 5:
            stop = value_start + 4
        elif wire == 2:
            n, value_start = _read_varint(data, value_start, end)
            if n is None:
                break
            stop = value_start + n
        else:
            break
        if stop > end:
            break
        found.append((pos, value_start, stop, key >> 3, wire))
        pos = stop
    out.extend(found)
    if depth < 6:
        for (_, vs, stop, _, wire) in found:
            if wire == 2 and stop > vs:
                wire_fields(data, vs, stop, depth + 1, out)
    return out


def _varint_bytes(v, overlong=0):
    """The varint of v (mod 2^70), with ``overlong`` redundant zero bytes (valid protobuf)."""
    v &= (1 << 70) - 1
    out = bytearray()
    while True:
        low, v = v & 0x7F, v >> 7
        if not v:
            out.append(low)
            break
        out.append(low | 0x80)
    if overlong:
        out[-1] |= 0x80
        out += b"\x80" * (overlong - 1) + b"\x00"
    return bytes(out)


def _interesting_varint(rng):
    choice = rng.random()
    if choice < 0.1:
        return b"\xff" * 9 + b"\x7f"                    # >= 2^64: 10 bytes, 70 bits
    if choice < 0.15:
        return b"\xff" * 10 + b"\x01"                   # 11 bytes: malformed
    if choice < 0.2:
        return _varint_bytes(rng.randrange(128), overlong=rng.randrange(1, 4))
    return _varint_bytes(rng.choice(INTERESTING_INTS))


def mutate_protobuf(data, rng, seeds):
    """One change that keeps the surrounding protobuf framing: a field's varint value, length
    prefix, key or float payload, or a field deleted, duplicated or inserted."""
    fields = wire_fields(data)
    if not fields:
        return mutate_bytes(data, rng, seeds)
    start, vstart, stop, number, wire = rng.choice(fields)
    key_end = _read_varint(data, start, len(data))[1]
    b = bytearray(data)
    op = rng.randrange(7)
    if op == 0 and wire == 0:                                 # the value of a varint
        b[vstart:stop] = _interesting_varint(rng)
    elif op == 1 and wire == 2:                               # a length prefix
        length = stop - vstart
        new = rng.choice((0, 1, length - 1, length + 1, length * 2, 2 ** 31 - 1, 2 ** 32,
                          2 ** 63))
        b[key_end:vstart] = _varint_bytes(max(new, 0))
    elif op == 2 and wire in (1, 2, 5) and stop - vstart >= 4:   # floats / doubles inside
        width = 8 if wire == 1 else 4
        k = vstart + width * rng.randrange((stop - vstart) // width)
        fmt = "<d" if width == 8 else "<f"
        b[k:k + width] = struct.pack(fmt, rng.choice(INTERESTING_FLOATS))
    elif op == 3:                                             # delete the field
        del b[start:stop]
    elif op == 4:                                             # duplicate the field
        b[stop:stop] = b[start:stop]
    elif op == 5:                                             # another key (number, wire type)
        new_number = rng.choice((number, 1, 2, 3, 4, 5, 6, 7, 8, 50, 100, rng.randrange(1, 200)))
        b[start:key_end] = _varint_bytes((new_number << 3) | rng.randrange(8))
    else:                                                     # a new field before this one
        new_number = rng.choice((1, 2, 3, 4, 5, 7, 8, 100))
        new_wire = rng.choice((0, 0, 2, 5))
        if new_wire == 0:
            payload = _interesting_varint(rng)
        elif new_wire == 5:
            payload = struct.pack("<f", rng.choice(INTERESTING_FLOATS))
        else:
            inner = rng.choice(fields)
            chunk = bytes(b[inner[0]:inner[2]])
            payload = _varint_bytes(len(chunk)) + chunk
        b[start:start] = _varint_bytes((new_number << 3) | new_wire) + payload
    return bytes(b)


# ========================================================================= prototxt mutations
_TOKEN = re.compile(r'#[^\n]*|"(?:[^"\\\n]|\\.)*"|[A-Za-z_][A-Za-z0-9_]*|'
                    r'[-+]?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|\.\d+)|\s+|.', re.S)
_DICTIONARY = None


def prototxt_dictionary():
    """(field names, enum value names, layer type names) of caffe.proto, the words a prototxt is
    made of (one source: the generated descriptors)."""
    global _DICTIONARY
    if _DICTIONARY is None:
        from .layers.base import supported_types
        from .proto import caffe_pb2
        fields, enums = set(), set()
        pending = list(caffe_pb2.DESCRIPTOR.message_types_by_name.values())
        while pending:
            message = pending.pop()
            for fd in message.fields:
                fields.add(fd.name)
                if fd.enum_type is not None:
                    enums.update(v.name for v in fd.enum_type.values)
            pending.extend(message.nested_types)
        _DICTIONARY = (sorted(fields), sorted(enums), sorted(supported_types()) + [
            "Python", "Data", "SoftmaxWithLoss", "Convolutin", ""])
    return _DICTIONARY


def _matching_brace(tokens, i):
    depth = 0
    for j in range(i, len(tokens)):
        if tokens[j] == "{":
            depth += 1
        elif tokens[j] == "}":
            depth -= 1
            if depth == 0:
                return j
    return None


def mutate_prototxt(data, rng, seeds):
    """One change at the level of prototxt tokens, lines or blocks."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return mutate_bytes(data, rng, seeds)
    if rng.random() < 0.08:
        return mutate_bytes(data, rng, seeds)
    tokens = _TOKEN.findall(text)
    if not tokens:
        return mutate_bytes(data, rng, seeds)
    fields, enums, types = prototxt_dictionary()
    words = [i for i, t in enumerate(tokens) if not t.isspace() and not t.startswith("#")]
    op = rng.randrange(10)
    numbers = [i for i in words if re.match(r"[-+]?[\d.]", tokens[i])]
    names = [i for i in words if re.match(r"[A-Za-z_]", tokens[i])]
    strings = [i for i in words if tokens[i].startswith('"')]
    braces = [i for i in words if tokens[i] == "{"]
    if op <= 2 and numbers:                                   # a number
        tokens[rng.choice(numbers)] = rng.choice(INTERESTING_NUMBER_TEXT)
    elif op == 3 and names:                                   # a field or enum name
        tokens[rng.choice(names)] = rng.choice(fields if rng.random() < 0.6 else enums)
    elif op == 4 and strings:                                 # a string: type, blob name
        pool = [tokens[i][1:-1] for i in strings]
        tokens[rng.choice(strings)] = '"%s"' % rng.choice(types if rng.random() < 0.5 else pool)
    elif op == 5 and braces:                                  # a new field in a block
        i = rng.choice(braces)
        value = rng.choice(INTERESTING_NUMBER_TEXT + tuple(enums[:20]) + ('"data"', "true"))
        tokens.insert(i + 1, " %s: %s " % (rng.choice(fields), value))
    elif op == 6 and braces:                                  # duplicate or delete a block
        i = rng.choice(braces)
        j = _matching_brace(tokens, i)
        if j is not None:
            k = i
            while k > 0 and (tokens[k - 1].isspace() or tokens[k - 1] == ":"):
                k -= 1
            k = k - 1 if k > 0 and re.match(r"[A-Za-z_]", tokens[k - 1]) else k
            block = tokens[k:j + 1]
            if rng.random() < 0.5:
                tokens[j + 1:j + 1] = ["\n"] + block
            else:
                del tokens[k:j + 1]
    elif op == 7 and words:                                   # delete or duplicate tokens
        i = rng.choice(words)
        n = rng.randrange(1, 4)
        if rng.random() < 0.5:
            del tokens[i:i + n]
        else:
            tokens[i:i] = tokens[i:i + n]
    elif op == 8:                                             # lines
        lines = "".join(tokens).split("\n")
        i, j = rng.randrange(len(lines)), rng.randrange(len(lines))
        kind = rng.randrange(3)
        if kind == 0:
            del lines[i]
        elif kind == 1:
            lines.insert(i, lines[j])
        else:
            lines[i], lines[j] = lines[j], lines[i]
        return "\n".join(lines).encode()
    else:                                                     # a random symbol
        i = rng.randrange(len(tokens) + 1)
        tokens.insert(i, rng.choice(("{", "}", ":", '"', "\\", "<", ">", ";", "#", "\x00", "é",
                                     "\n")))
    return "".join(tokens).encode("utf-8", "surrogatepass")


def _is_repeated(fd):
    from .limits import _is_repeated as repeated   # the protobuf-version-proof test
    return repeated(fd)


def _scalar_fields(message, out=None, depth=0):
    """(message, field descriptor, index or None) of every set scalar inside message."""
    out = [] if out is None else out
    for fd, value in message.ListFields():
        repeated = _is_repeated(fd)
        if fd.message_type is not None:
            if depth < 8:
                for item in (value if repeated else [value]):
                    _scalar_fields(item, out, depth + 1)
        else:
            out.extend((message, fd, i) for i in (range(len(value)) if repeated else [None]))
    return out


def _messages(message, out=None, depth=0):
    out = [] if out is None else out
    out.append(message)
    for fd, value in message.ListFields():
        if fd.message_type is not None and depth < 8:
            for item in (value if _is_repeated(fd) else [value]):
                _messages(item, out, depth + 1)
    return out


def _random_value(fd, rng, names):
    """A value for a scalar field: interesting numbers, any value of its enum, a blob or type
    name."""
    if fd.enum_type is not None:
        return rng.choice(fd.enum_type.values).number
    if fd.type == fd.TYPE_BOOL:
        return rng.random() < 0.5
    if fd.type == fd.TYPE_STRING:
        return rng.choice(names) if names else "x"
    if fd.cpp_type in (fd.CPPTYPE_FLOAT, fd.CPPTYPE_DOUBLE):
        return rng.choice(INTERESTING_FLOATS + (0.0, 0.5, 2.0, 1e-8, 100.0))
    bits = 64 if fd.cpp_type in (fd.CPPTYPE_INT64, fd.CPPTYPE_UINT64) else 32
    unsigned = fd.cpp_type in (fd.CPPTYPE_UINT32, fd.CPPTYPE_UINT64)
    v = rng.choice(INTERESTING_INTS + tuple(range(-1, 12)))
    lo, hi = (0, 2 ** bits - 1) if unsigned else (-2 ** (bits - 1), 2 ** (bits - 1) - 1)
    return min(max(v, lo), hi)


def mutate_net_message(data, rng, seeds):
    """One change of the parsed NetParameter (a value, a new or removed field, a layer copied,
    removed, moved or retyped, a bottom renamed), printed back as prototxt: deep cases that
    still parse. Text that does not parse gets a token-level change instead."""
    from google.protobuf import text_format
    from .proto import caffe_pb2
    try:
        net = text_format.Parse(data.decode("utf-8"), caffe_pb2.NetParameter())
    except Exception:  # noqa: BLE001 - any text the parser refuses
        return mutate_prototxt(data, rng, seeds)
    _, _, types = prototxt_dictionary()
    layers = net.layer if len(net.layer) else net.layers
    names = [n for lp in layers for n in list(lp.bottom) + list(lp.top)] + list(net.input)
    op = rng.randrange(6)
    try:
        if op <= 1:                                             # change a value
            fields = _scalar_fields(net)
            if fields:
                message, fd, i = rng.choice(fields)
                value = _random_value(fd, rng, names + types if fd.name == "type" else names)
                if i is None:
                    setattr(message, fd.name, value)
                else:
                    getattr(message, fd.name)[i] = value
        elif op == 2:                                           # set a field not set yet
            message = rng.choice(_messages(net))
            fd = rng.choice(message.DESCRIPTOR.fields)
            if fd.message_type is None:
                value = _random_value(fd, rng, names)
                if _is_repeated(fd):
                    getattr(message, fd.name).append(value)
                else:
                    setattr(message, fd.name, value)
            elif _is_repeated(fd):
                getattr(message, fd.name).add()
            else:
                getattr(message, fd.name).SetInParent()
        elif op == 3:                                           # remove a field
            message = rng.choice(_messages(net))
            set_fields = message.ListFields()
            if set_fields:
                fd, value = rng.choice(set_fields)
                if _is_repeated(fd) and len(value) > 1:
                    del value[rng.randrange(len(value))]
                else:
                    message.ClearField(fd.name)
        elif op == 4 and len(layers):                           # copy, drop or move a layer
            i = rng.randrange(len(layers))
            kept = [caffe_pb2.LayerParameter() if layers is net.layer else
                    caffe_pb2.V1LayerParameter() for _ in range(len(layers))]
            for k, lp in enumerate(layers):
                kept[k].CopyFrom(lp)
            kind = rng.randrange(3)
            if kind == 0:
                kept.insert(rng.randrange(len(kept) + 1), kept[i])
            elif kind == 1:
                del kept[i]
            else:
                kept.insert(rng.randrange(len(kept)), kept.pop(i))
            del layers[:]
            for lp in kept:
                layers.add().CopyFrom(lp)
        elif len(net.layer):                                    # another type, same params
            rng.choice(net.layer).type = rng.choice(types)
    except (ValueError, TypeError, AttributeError):  # a value the field cannot hold
        return mutate_prototxt(data, rng, seeds)
    return text_format.MessageToString(net).encode()


# ============================================================================== image mutations
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def mutate_png_chunk(data, rng, seeds):
    """A change inside a PNG chunk (IHDR's size and depth fields most often) with the chunk's
    CRC recomputed, so the change reaches the decoder instead of the CRC check."""
    if not data.startswith(_PNG_SIGNATURE):
        return mutate_bytes(data, rng, seeds)
    chunks, pos = [], 8
    while pos + 8 <= len(data):
        (n,) = struct.unpack(">I", data[pos:pos + 4])
        if pos + 12 + n > len(data):
            break
        chunks.append((pos, n))
        pos += 12 + n
    if not chunks:
        return mutate_bytes(data, rng, seeds)
    pos, n = chunks[0] if rng.random() < 0.5 else rng.choice(chunks)
    kind, payload = data[pos + 4:pos + 8], bytearray(data[pos + 8:pos + 8 + n])
    if kind == b"IHDR" and len(payload) == 13 and rng.random() < 0.7:
        field = rng.randrange(4)
        if field < 2:                                         # width, height
            v = rng.choice((0, 1, 30000, 65535, 65536, 2 ** 31 - 1, 2 ** 31, 2 ** 32 - 1,
                            rng.randrange(1, 4096)))
            payload[4 * field:4 * field + 4] = struct.pack(">I", v & 0xFFFFFFFF)
        else:                                                 # bit depth, colour type
            payload[8 + field - 2] = rng.choice((0, 1, 2, 3, 4, 6, 8, 16, 255))
    elif payload:
        payload = bytearray(mutate_bytes(bytes(payload), rng, seeds))
    chunk = struct.pack(">I", len(payload)) + kind + payload
    chunk += struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)
    return data[:pos] + chunk + data[pos + 12 + n:]


# ================================================================================= the targets
class Context:
    """What a worker keeps between cases: a scratch folder, the options, lazily made inputs."""

    def __init__(self, workdir, options=None):
        self.workdir = Path(workdir)
        self.options = dict(options or {})
        self.cache = {}

    def write(self, name, data):
        path = self.workdir / name
        path.write_bytes(data)
        return str(path)


class Target:
    name = None
    suffix = ".bin"
    stacking = 0.6     # mutations per case: 1 + an exponential number of this rate

    def __init__(self):
        self._seeds = None

    def seeds(self):
        if self._seeds is None:
            self._seeds = self.make_seeds()
        return self._seeds

    def make_seeds(self):
        raise NotImplementedError

    def mutate(self, data, rng, seeds):
        return mutate_bytes(data, rng, seeds)

    def run(self, data, ctx):
        """Raise only CaffeLRPError (or Violation for a broken property) on bad data."""
        raise NotImplementedError


def _finite(array, what):
    import numpy as np
    a = np.asarray(array)
    if a.dtype.kind == "f" and not np.all(np.isfinite(a)):
        raise Violation("%s holds non-finite values" % what)


# -- prototxt --------------------------------------------------------------------------------
_NET_HEADER = 'name: "fuzz"\ninput: "data"\ninput_shape { dim: 2 dim: 4 dim: 8 dim: 8 }\n'


def _layer(name, type_, bottom="data", top=None, params=""):
    bottoms = bottom if isinstance(bottom, (list, tuple)) else [bottom]
    text = 'layer { name: "%s" type: "%s" ' % (name, type_)
    text += "".join('bottom: "%s" ' % b for b in bottoms)
    tops = top if isinstance(top, (list, tuple)) else [top or name]
    text += "".join('top: "%s" ' % t for t in tops)
    return text + params + " }\n"


SEED_NETS = (
    # convolution family, LRN, pooling with padding, inner products, softmax
    _NET_HEADER
    + _layer("conv1", "Convolution", params="convolution_param { num_output: 4 kernel_size: 3 "
             "pad: 1 stride: 1 group: 2 }")
    + _layer("relu1", "ReLU", "conv1", "conv1")
    + _layer("norm1", "LRN", "conv1", params="lrn_param { local_size: 3 alpha: 0.0001 "
             "beta: 0.75 k: 2 }")
    + _layer("pool1", "Pooling", "norm1", params="pooling_param { pool: MAX kernel_size: 3 "
             "stride: 2 pad: 1 }")
    + _layer("ip1", "InnerProduct", "pool1", params="inner_product_param { num_output: 6 }")
    + _layer("ip2", "InnerProduct", "ip1", params="inner_product_param { num_output: 3 }")
    + _layer("prob", "Softmax", "ip2"),
    # a residual block with BatchNorm / Scale, dilation, AVE and global pooling, Eltwise
    _NET_HEADER
    + _layer("conv1", "Convolution", params="convolution_param { num_output: 4 kernel_size: 3 "
             "pad: 2 dilation: 2 bias_term: false }")
    + _layer("bn1", "BatchNorm", "conv1", "conv1", params="batch_norm_param { eps: 1e-5 }")
    + _layer("sc1", "Scale", "conv1", "conv1", params="scale_param { bias_term: true }")
    + _layer("sum", "Eltwise", ["conv1", "data"], params="eltwise_param { operation: SUM }")
    + _layer("max", "Eltwise", ["sum", "data"], params="eltwise_param { operation: MAX }")
    + _layer("pool1", "Pooling", "max", params="pooling_param { pool: AVE kernel_size: 2 "
             "stride: 2 }")
    + _layer("gap", "Pooling", "pool1", params="pooling_param { pool: AVE global_pooling: true }")
    + _layer("ip", "InnerProduct", "gap", params="inner_product_param { num_output: 3 }"),
    # routing layers: Deconvolution, Crop, Concat, Slice, Flatten, Reshape
    _NET_HEADER
    + _layer("up", "Deconvolution", params="convolution_param { num_output: 2 kernel_size: 4 "
             "stride: 2 pad: 1 }")
    + _layer("crop", "Crop", ["up", "data"], params="crop_param { axis: 2 offset: 1 }")
    + _layer("cat", "Concat", ["crop", "data"], params="concat_param { axis: 1 }")
    + _layer("slice", "Slice", "cat", ["s1", "s2"], params="slice_param { axis: 1 "
             "slice_point: 3 }")
    + _layer("flat", "Flatten", "s1")
    + _layer("shape", "Reshape", "s2", params="reshape_param { shape { dim: 0 dim: -1 } }")
    + _layer("join", "Concat", ["flat", "shape"], params="concat_param { axis: 1 }")
    + _layer("ip", "InnerProduct", "join", params="inner_product_param { num_output: 2 }"),
    # element-wise layers
    _NET_HEADER
    + _layer("sig", "Sigmoid") + _layer("tanh", "TanH", "sig") + _layer("abs", "AbsVal", "tanh")
    + _layer("pow", "Power", "abs", params="power_param { power: 2 scale: 0.5 shift: 1 }")
    + _layer("bnll", "BNLL", "pow") + _layer("elu", "ELU", "bnll", params="elu_param { alpha: 1 }")
    + _layer("prelu", "PReLU", "elu") + _layer("exp", "Exp", "prelu", params="exp_param { "
                                                                                 "base: 2 }")
    + _layer("log", "Log", "exp", params="log_param { base: 10 shift: 1 }")
    + _layer("thr", "Threshold", "log", params="threshold_param { threshold: 0.5 }")
    + _layer("drop", "Dropout", "log", params="dropout_param { dropout_ratio: 0.5 }")
    + _layer("bias", "Bias", "drop", params="bias_param { axis: 1 num_axes: 1 }")
    + _layer("lrn", "LRN", "bias", params="lrn_param { local_size: 3 norm_region: "
             "WITHIN_CHANNEL }")
    + _layer("ip", "InnerProduct", "lrn", params="inner_product_param { num_output: 3 }")
    + _layer("prob", "Softmax", "ip"),
    # V1 syntax, input_dim, an Input layer without a shape after it
    'name: "v1"\ninput: "data"\ninput_dim: 1\ninput_dim: 3\ninput_dim: 8\ninput_dim: 8\n'
    'layers { bottom: "data" top: "conv1" name: "conv1" type: CONVOLUTION blobs_lr: 1 '
    'convolution_param { num_output: 2 kernel_size: 3 } }\n'
    'layers { bottom: "conv1" top: "conv1" name: "relu1" type: RELU }\n'
    'layers { bottom: "conv1" top: "pool1" name: "pool1" type: POOLING '
    'pooling_param { pool: MAX kernel_size: 2 stride: 2 } }\n'
    'layers { bottom: "pool1" top: "fc" name: "fc" type: INNER_PRODUCT '
    'inner_product_param { num_output: 4 } }\n'
    'layers { bottom: "fc" top: "prob" name: "prob" type: SOFTMAX }\n',
    # V0 syntax
    'name: "v0"\ninput: "data"\ninput_dim: 1 input_dim: 3 input_dim: 8 input_dim: 8\n'
    'layers { layer { name: "pad1" type: "padding" pad: 1 } bottom: "data" top: "pad1" }\n'
    'layers { layer { name: "conv1" type: "conv" num_output: 2 kernelsize: 3 stride: 1 } '
    'bottom: "pad1" top: "conv1" }\n'
    'layers { layer { name: "pool1" type: "pool" pool: AVE kernelsize: 3 stride: 2 pad: 1 } '
    'bottom: "conv1" top: "pool1" }\n'
    'layers { layer { name: "fc1" type: "innerproduct" num_output: 3 } bottom: "pool1" '
    'top: "fc1" }\n',
    # an Input layer with a shape
    'name: "input"\nlayer { name: "data" type: "Input" top: "data" '
    'input_param { shape { dim: 1 dim: 3 dim: 6 dim: 6 } } }\n'
    + _layer("conv", "Convolution", params="convolution_param { num_output: 2 kernel_size: 3 "
             "stride: 2 }")
    + _layer("ip", "InnerProduct", "conv", params="inner_product_param { num_output: 2 }"),
)


class PrototxtTarget(Target):
    name = "prototxt"
    suffix = ".prototxt"
    stacking = 1.2     # fewer: most nets should still parse

    def make_seeds(self):
        from .bundled import bundled_prototxt
        seeds = [net.encode() for net in SEED_NETS]
        bundled = Path(bundled_prototxt("smallnet"))
        if bundled.is_file():
            seeds.append(bundled.read_bytes())
        return seeds

    def mutate(self, data, rng, seeds):
        return (mutate_net_message if rng.random() < 0.6 else mutate_prototxt)(data, rng, seeds)

    def run(self, data, ctx):
        import numpy as np
        from .errors import CaffeLRPError
        from .net import Net
        rng = np.random.default_rng(len(data))
        net = Net(ctx.write("net.prototxt", data), allow_missing_weights=True)
        shapes = [net.blob_shapes[name] for name in net.inputs]
        if any(s is None for s in shapes):      # an Input layer without a shape
            shapes = [(1, 3, 6, 6)] * len(shapes)
            net.reshape(shapes)
        if not _small_enough(net):
            return
        x = {name: (rng.standard_normal(s) * 50).astype(np.float32)
             for name, s in zip(net.inputs, shapes)}
        for blobs in net.params.values():
            for blob in blobs:
                blob[...] = rng.standard_normal(blob.shape)
        out = net.forward(x)
        for name, value in out.items():
            if value.dtype != np.float32:
                raise Violation("forward output %s has dtype %s" % (name, value.dtype))
        if len(net.inputs) != 1:
            return
        x = x[net.inputs[0]]
        kind = int(rng.integers(4))
        start = "highest-ip" if kind < 2 else len(net.layers) - 1
        try:
            if kind == 3:
                g, _ = net.gradient(x, target="top1")
                if g.shape != x.shape:
                    raise Violation("gradient of shape %s for an input %s" % (g.shape, x.shape))
            else:
                rule = (0, 2, 100, "zplus", "epsilon-gamma-box", 26, 166, 11, 99)[
                    int(rng.integers(9))]
                r = net.relevance(x, rule=rule, target="top1", start=start,
                                  bounds=(-100.0, 100.0) if rule == "epsilon-gamma-box" else None)
                if r.shape != x.shape:
                    raise Violation("relevance of shape %s for an input %s" % (r.shape, x.shape))
        except CaffeLRPError:
            pass


def _small_enough(net):
    import numpy as np
    total = 0
    for shape in net.blob_shapes.values():
        total += int(np.prod(shape, dtype=object)) if shape is not None else 0
    for i in range(len(net.layers)):
        for shape in net.layer(i).weight_shapes():
            total += int(np.prod(shape, dtype=object))
    return total <= RUN_MAX_ELEMENTS and net.flops() <= RUN_MAX_FLOPS


# -- caffemodel ------------------------------------------------------------------------------
CAFFEMODEL_NET = (
    _NET_HEADER
    + _layer("conv1", "Convolution", params="convolution_param { num_output: 4 kernel_size: 3 }")
    + _layer("bn1", "BatchNorm", "conv1", "conv1")
    + _layer("sc1", "Scale", "conv1", "conv1", params="scale_param { bias_term: true }")
    + _layer("prelu1", "PReLU", "conv1", "conv1")
    + _layer("ip1", "InnerProduct", "conv1", params="inner_product_param { num_output: 3 }"))


class CaffemodelTarget(Target):
    name = "caffemodel"
    suffix = ".caffemodel"

    def _weights(self):
        import numpy as np
        rng = np.random.default_rng(0)

        def r(*shape):
            return rng.standard_normal(shape).astype(np.float32)
        return [("conv1", "Convolution", [r(4, 4, 3, 3), r(4)]),
                ("bn1", "BatchNorm", [r(4), np.abs(r(4)) + 1, np.ones(1, np.float32)]),
                ("sc1", "Scale", [r(4), r(4)]),
                ("prelu1", "PReLU", [r(4)]),
                ("ip1", "InnerProduct", [r(3, 144), r(3)])]

    def make_seeds(self):
        from .io.caffemodel import caffemodel_bytes
        weights = self._weights()
        v1 = [w for w in weights if w[1] in ("Convolution", "InnerProduct")]
        return [caffemodel_bytes(weights, fmt="v2", name="fuzz"),
                caffemodel_bytes(v1, fmt="v1", name="fuzz"),
                caffemodel_bytes(weights[:1], fmt="v2")]

    def mutate(self, data, rng, seeds):
        if rng.random() < 0.25:
            return self.rewritten(rng)
        return (mutate_protobuf if rng.random() < 0.75 else mutate_bytes)(data, rng, seeds)

    def rewritten(self, rng):
        """A well-formed file whose content does not fit: a blob dropped, added or reshaped
        (same count, other dims), a layer renamed or retyped, a value NaN; v1 or v2."""
        import numpy as np
        from .io.caffemodel import caffemodel_bytes
        layers = [(name, type_, [a.copy() for a in arrays]) for name, type_, arrays in
                  self._weights()]
        name, type_, arrays = layers[rng.randrange(len(layers))]
        op = rng.randrange(6)
        if op == 0 and arrays:
            del arrays[rng.randrange(len(arrays))]
        elif op == 1:
            arrays.append(np.ones(rng.choice(((1,), (4,), (3, 144), (0,))), np.float32))
        elif op == 2 and arrays:
            k = rng.randrange(len(arrays))
            a = arrays[k].reshape(-1)
            arrays[k] = a.reshape((1,) * rng.randrange(3) + (a.size,))
        elif op == 3:
            layers.append((rng.choice(("conv1", "ip1", "bn1", "CONV1", "")), type_, arrays))
        elif op == 4 and arrays:
            arrays[rng.randrange(len(arrays))].flat[0] = rng.choice(INTERESTING_FLOATS)
        else:
            layers = [(n, rng.choice(("InnerProduct", "Convolution", "Scale", "Python")), a)
                      if n == name else (n, t, a) for n, t, a in layers]
        fmt = "v1" if rng.random() < 0.3 else "v2"
        if fmt == "v1":
            layers = [(n, t, a) for n, t, a in layers if t in ("Convolution", "InnerProduct")]
        try:
            return caffemodel_bytes(layers, fmt=fmt)
        except Exception:  # noqa: BLE001 - e.g. a legacy blob cannot hold more than 4-D
            return caffemodel_bytes(layers[:1])

    def run(self, data, ctx):
        import numpy as np
        from .io.caffemodel import read_caffemodel
        from .net import Net
        path = ctx.write("weights.caffemodel", data)
        for layer in read_caffemodel(path):
            for blob in layer.blobs:
                if blob.data.dtype != np.float32 or blob.data.size != blob.count:
                    raise Violation("layer %r: blob of %d values for shape %s"
                                    % (layer.name, blob.data.size, blob.shape))
        if "prototxt" not in ctx.cache:
            ctx.cache["prototxt"] = ctx.write("caffemodel_net.prototxt", CAFFEMODEL_NET.encode())
        net = Net(ctx.cache["prototxt"], path, allow_missing_weights=True)
        x = np.random.default_rng(1).standard_normal((2, 4, 8, 8)).astype(np.float32)
        for name, blobs in net.params.items():
            for blob in blobs:
                _finite(blob, "the weights of layer %r as loaded" % name)
        net.forward(x)


# -- mean files ------------------------------------------------------------------------------
class MeanTarget(Target):
    """Mean files as --mean (and the -c/-f config) reads them: a .binaryproto BlobProto or the
    toolbox's text format. Every way of being bad is --mean's usage error."""
    name = "mean"

    def make_seeds(self):
        import numpy as np
        from .io.caffemodel import blobproto_bytes
        rng = np.random.default_rng(0)
        mean = (rng.uniform(90, 130, (3, 12, 12))).astype(np.float32)
        text = "3 10 10\n" + " ".join("%.3f" % v for v in mean[:, :10, :10].ravel()) + "\n"
        return [blobproto_bytes(mean[None], legacy=True), blobproto_bytes(mean, legacy=False),
                blobproto_bytes(mean[:, :9, :11][None], legacy=True), text.encode()]

    def mutate(self, data, rng, seeds):
        if data[:1].isdigit():
            return mutate_prototxt(data, rng, seeds)   # numbers and lines of a text mean
        return (mutate_protobuf if rng.random() < 0.7 else mutate_bytes)(data, rng, seeds)

    def run(self, data, ctx):
        import numpy as np
        from .cli import resolve_mean
        from .limits import UsageError
        from .preprocess import SourceImage, toolbox_preprocess
        image = ctx.cache.get("image")
        if image is None:
            image = ctx.cache["image"] = SourceImage("fuzz.png", np.random.default_rng(2).integers(
                0, 256, (10, 14, 3)).astype(np.uint8))
        for suffix in (".binaryproto", ".txt"):
            path = ctx.write("mean" + suffix, data)
            try:
                mean = resolve_mean(path)
            except UsageError:
                continue
            except Exception as e:
                raise Violation("--mean %s: %s instead of a usage error: %s"
                                % (suffix, type(e).__name__, e)) from e
            _finite(mean.values, "an accepted mean")
            prep = toolbox_preprocess(image, 8, 8, 10, mean)
            _finite(prep.blob, "the network input with an accepted mean")


# -- images ----------------------------------------------------------------------------------
class ImageTarget(Target):
    """Image files as explain (strict), classify (lenient) and the toolbox preprocessing read
    them, under a pixel limit (the child's CAFFELRP_MAX_IMAGE_PIXELS)."""
    name = "image"

    def make_seeds(self):
        import numpy as np
        from PIL import Image
        yy, xx = np.mgrid[0:11, 0:13]
        rgb = np.stack([xx * 19, yy * 23, (xx + yy) * 11], axis=-1).astype(np.uint8)
        img = Image.fromarray(rgb, "RGB")
        out = []

        def save(image, fmt, **kw):
            buf = io.BytesIO()
            image.save(buf, fmt, **kw)
            out.append(buf.getvalue())
        save(img, "PNG")
        save(img.convert("P"), "PNG")
        save(img.convert("RGBA"), "PNG")
        save(img.convert("L"), "PNG")
        save(img, "JPEG", quality=90)
        save(img, "JPEG", quality=75, progressive=True)
        save(img.convert("P"), "GIF")
        save(img, "TIFF")
        save(img, "TIFF", compression="tiff_lzw")
        save(img, "TIFF", compression="packbits")
        save(img, "BMP")
        save(img, "PPM")
        return out

    def mutate(self, data, rng, seeds):
        if data.startswith(_PNG_SIGNATURE) and rng.random() < 0.5:
            return mutate_png_chunk(data, rng, seeds)
        return mutate_bytes(data, rng, seeds)

    def run(self, data, ctx):
        import numpy as np
        from .errors import CaffeLRPError
        from .imageio import read_rgb
        from .preprocess import BVLC_MEAN_BGR, mean_pixel, read_image, toolbox_preprocess
        path = ctx.write("image", data)
        try:
            rgb, _ = read_rgb(path, strict=False)   # classify's reader
            if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
                raise Violation("read_rgb gave %s %s" % (rgb.dtype, rgb.shape))
        except CaffeLRPError:
            pass
        image = read_image(path)                   # explain's
        prep = toolbox_preprocess(image, 8, 8, 10, mean_pixel(BVLC_MEAN_BGR))
        _finite(prep.blob, "the network input of an accepted image")


def make_target(name):
    """A target by name, or any Target subclass as ``module:Class`` (importable in the child)."""
    if ":" in name:
        import importlib
        module, cls = name.split(":", 1)
        return getattr(importlib.import_module(module), cls)()
    return {"prototxt": PrototxtTarget, "caffemodel": CaffemodelTarget, "mean": MeanTarget,
            "image": ImageTarget}[name]()


# ================================================================================= the cases
def make_case(target, seed, index):
    """The bytes of case ``index``: a pure function of (seed, target, index). The first cases are
    the seeds themselves."""
    seeds = target.seeds()
    if index < len(seeds):
        return seeds[index]
    rng = random.Random("%s:%s:%d" % (seed, target.name, index))
    data = rng.choice(seeds)
    for _ in range(1 + min(int(rng.expovariate(target.stacking)), 12)):
        data = target.mutate(data, rng, seeds)
    return data[:MAX_CASE_BYTES]


def run_case(target, data, ctx):
    """None if the case behaved, else a finding (dict) for an exception that is not a
    CaffeLRPError, or a broken property."""
    import traceback
    from .errors import CaffeLRPError
    try:
        target.run(data, ctx)
    except CaffeLRPError:
        return None
    except Exception as e:  # noqa: BLE001 - anything else is what a fuzzer looks for
        frames = traceback.extract_tb(e.__traceback__)
        where = frames[-1] if frames else None
        return {"kind": "violation" if isinstance(e, Violation) else "exception",
                "type": type(e).__name__, "message": str(e)[:500],
                "where": "%s:%d" % (Path(where.filename).name, where.lineno) if where else "",
                "traceback": "".join(traceback.format_exception(type(e), e, e.__traceback__))[
                    -4000:]}
    return None


# ================================================================ child processes (isolation)
def _package_root():
    return str(Path(__file__).resolve().parent.parent)


def _worker_main(argv=None):
    """A child: run cases [start, stop) and report on a private pipe, one JSON line per event
    ("case" before each case, "finding", "done"). The library's own output is silenced."""
    import faulthandler
    import logging
    import warnings
    spec = json.loads((argv or sys.argv)[1])
    report = os.fdopen(os.dup(1), "w", buffering=1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    faulthandler.enable(file=sys.stderr, all_threads=False)
    if spec.get("memory_limit"):
        import resource
        limit = int(spec["memory_limit"])
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    warnings.simplefilter("ignore")
    logging.getLogger("caffelrp").setLevel(logging.CRITICAL)
    target = make_target(spec["target"])
    deadline = spec.get("deadline")
    with tempfile.TemporaryDirectory(prefix="caffelrp-fuzz-") as work:
        ctx = Context(work, spec.get("options"))
        for index in range(spec["start"], spec["stop"]):
            if deadline is not None and time.time() >= deadline:
                break
            data = make_case(target, spec["seed"], index)
            report.write(json.dumps({"case": index}) + "\n")
            finding = run_case(target, data, ctx)
            if finding is not None:
                finding["case"] = index
                report.write(json.dumps({"finding": finding}) + "\n")
    report.write(json.dumps({"done": True}) + "\n")
    report.close()


def _child_env(options, pythonpath=()):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (_package_root(), *pythonpath,
                                                    env.get("PYTHONPATH")) if p)
    env["CAFFELRP_NUM_THREADS"] = str(options.get("threads", 1))
    env["CAFFELRP_MAX_IMAGE_PIXELS"] = str(options.get("max_pixels", 1 << 20))
    env["PYTHONFAULTHANDLER"] = "1"
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[name] = str(options.get("threads", 1))
    return env


def run_isolated(target_name, seed, start, stop, deadline=None, case_timeout=60.0,
                 memory_limit=4 << 30, options=None, pythonpath=()):
    """Run cases [start, stop) of a target in child processes. Returns (cases run, findings):
    a child that crashes or hangs is pinned to its case, reported, and replaced by a new child
    that goes on with the next case. ``pythonpath``: folders the children import from (for a
    ``module:Class`` target)."""
    options = dict(options or {})
    findings = []
    next_case, done = start, 0
    while next_case < stop and (deadline is None or time.time() < deadline):
        spec = {"target": target_name, "seed": seed, "start": next_case, "stop": stop,
                "deadline": deadline, "memory_limit": memory_limit, "options": options}
        with tempfile.TemporaryFile() as err:
            proc = subprocess.Popen(
                [sys.executable, "-c", "import sys; from caffelrp.fuzz import _worker_main; "
                 "_worker_main(sys.argv)", json.dumps(spec)],
                stdout=subprocess.PIPE, stderr=err, env=_child_env(options, pythonpath))
            current, finished, hung = None, False, False
            buffer = b""
            last = time.monotonic()
            fd = proc.stdout.fileno()
            while True:
                ready, _, _ = select.select([fd], [], [], 1.0)
                if ready:
                    chunk = os.read(fd, 65536)
                    if not chunk:
                        break
                    buffer += chunk
                    *lines, buffer = buffer.split(b"\n")
                    for line in lines:
                        event = json.loads(line)
                        if "case" in event:
                            if current is not None:
                                done += 1
                            current, last = event["case"], time.monotonic()
                        elif "finding" in event:
                            f = event["finding"]
                            f["target"], f["seed"] = target_name, seed
                            findings.append(f)
                        elif "done" in event:
                            finished = True
                elif current is not None and time.monotonic() - last > case_timeout:
                    hung = True
                    proc.kill()
                    break
            proc.wait()
            proc.stdout.close()
            if current is not None:
                done += 1
            if finished and proc.returncode == 0:
                break
            err.seek(0)
            stderr = err.read().decode("utf-8", "replace")[-4000:]
        if current is None:           # the child failed before its first case
            raise RuntimeError("fuzz worker for %s failed to start (exit %s):\n%s"
                               % (target_name, proc.returncode, stderr))
        findings.append({"target": target_name, "seed": seed, "case": current,
                         "kind": "hang" if hung else "crash",
                         "type": "timeout %gs" % case_timeout if hung else _exit_text(
                             proc.returncode),
                         "message": "", "where": "", "traceback": stderr})
        next_case = current + 1
    return done, findings


def _exit_text(code):
    import signal
    if code is not None and code < 0:
        try:
            return "killed by %s" % signal.Signals(-code).name
        except ValueError:
            return "killed by signal %d" % -code
    return "exit status %s" % code


# ============================================================================ the command line
def signature(finding):
    """Findings with the same signature are the same bug, most likely."""
    detail = finding["where"]
    if finding["kind"] == "violation" or not detail:   # the message, without paths and numbers
        detail = re.sub(r"\S*/\S*|\d+", "#", finding["message"])[:80]
    return "%s %s %s %s" % (finding["target"], finding["kind"], finding["type"], detail)


def save_findings(findings, folder):
    """Each finding's input as a file (``TARGET-seedK-caseN.bin``) plus findings.json."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    targets = {}
    for f in findings:
        target = targets.setdefault(f["target"], make_target(f["target"]))
        name = "%s-seed%s-case%d%s" % (target.name, f["seed"], f["case"], target.suffix)
        (folder / name).write_bytes(make_case(target, f["seed"], f["case"]))
        f["file"] = name
    from .files import json_bytes
    (folder / "findings.json").write_bytes(json_bytes(findings, "findings.json"))


def _replay(target_name, data):
    """Run one input in this process, tracebacks included (no isolation: for debugging)."""
    from .errors import CaffeLRPError
    target = make_target(target_name)
    with tempfile.TemporaryDirectory(prefix="caffelrp-fuzz-") as work:
        try:
            target.run(data, Context(work))
        except CaffeLRPError as e:
            print("fine: %s: %s" % (type(e).__name__, e))
            return 0
    print("fine: accepted")
    return 0


def _run_atheris(target_name, args):
    """Coverage-guided fuzzing of one target with atheris (libFuzzer), our mutators mixed with
    libFuzzer's own. Never returns: libFuzzer exits, writing crash-* files for a finding."""
    import atheris
    from .errors import CaffeLRPError
    target = make_target(target_name)
    seeds = target.seeds()
    corpus = tempfile.mkdtemp(prefix="caffelrp-atheris-%s-" % target_name)
    for i, s in enumerate(seeds):
        Path(corpus, "seed%d" % i).write_bytes(s)
    work = tempfile.mkdtemp(prefix="caffelrp-fuzz-")
    ctx = Context(work)
    os.environ.setdefault("CAFFELRP_MAX_IMAGE_PIXELS", str(args.max_pixels))

    def test_one(data):
        try:
            target.run(bytes(data), ctx)
        except CaffeLRPError:
            pass

    def mutator(data, max_size, seed):
        rng = random.Random(seed)
        if rng.random() < 0.5:
            return atheris.Mutate(data, max_size)
        return target.mutate(bytes(data), rng, seeds)[:max_size]

    findings = Path(args.findings)
    findings.mkdir(parents=True, exist_ok=True)
    argv = [sys.argv[0], corpus, "-seed=%d" % (args.seed + 1), "-max_len=65536",
            "-artifact_prefix=%s/%s-" % (findings, target_name), "-rss_limit_mb=4096",
            "-timeout=%d" % int(args.case_timeout)]
    if args.seconds:
        argv.append("-max_total_time=%d" % max(1, int(args.seconds)))
    if args.cases:
        argv.append("-runs=%d" % args.cases)
    for s in seeds:                 # load every module the target reaches, then instrument them
        try:
            test_one(s)
        except Exception:  # noqa: BLE001 - a finding on a seed shows again under atheris
            pass
    _instrument(atheris, ATHERIS_COVERAGE.get(target_name, ()) + ("caffelrp",))
    atheris.Setup(argv, test_one, custom_mutator=mutator)
    atheris.Fuzz()


# What atheris measures coverage in besides caffelrp: the parsers a target's files go through.
ATHERIS_COVERAGE = {"prototxt": ("google.protobuf.text_format",), "image": ("PIL",)}


def _instrument(atheris, packages):
    """Coverage instrumentation of the loaded Python functions of ``packages`` only
    (atheris.instrument_all would take minutes over numpy, scipy and the rest)."""
    import gc
    import types
    for obj in gc.get_objects():
        if not isinstance(obj, types.FunctionType):
            continue
        module = getattr(obj, "__module__", None) or ""
        if module == __name__ or not any(module == p or module.startswith(p + ".")
                                         for p in packages):
            continue
        try:
            atheris.instrument_func(obj)
        except Exception:  # noqa: BLE001 - a function atheris cannot patch keeps running as is
            pass


def build_parser():
    p = argparse.ArgumentParser(prog="python -m caffelrp.fuzz", description=(
        "Mutation fuzzing of caffelrp's readers: every bad file must give a CaffeLRPError, "
        "never another exception, a crash, a hang or a memory blow-up."))
    p.add_argument("--target", choices=TARGETS + ("all",), default="all")
    p.add_argument("--cases", type=int, default=None,
                   help="cases per target (default: 10000, or unlimited with --seconds)")
    p.add_argument("--seconds", type=float, default=None,
                   help="stop after this many seconds (shared among the targets)")
    p.add_argument("--seed", type=int, default=0, help="the run's seed (default 0)")
    p.add_argument("--start", type=int, default=0, help="first case number (default 0)")
    p.add_argument("--engine", choices=("builtin", "atheris"), default="builtin")
    p.add_argument("--findings", default="fuzz-findings",
                   help="folder for the inputs of findings (default ./fuzz-findings)")
    p.add_argument("--case-timeout", type=float, default=60.0,
                   help="seconds a case may take before it counts as a hang (default 60)")
    p.add_argument("--memory-limit", default="4G",
                   help="address-space limit of each child, e.g. 4G (default); 0: none")
    p.add_argument("--max-pixels", type=int, default=1 << 20,
                   help="image pixel limit during fuzzing (default 1 Mpx: fast decoding)")
    p.add_argument("--threads", type=int, default=1, help="kernel threads per child (default 1)")
    p.add_argument("--case", type=int, default=None,
                   help="run this one case in this process (with --target; no isolation)")
    p.add_argument("--replay", metavar="FILE",
                   help="run this input file in this process (with --target; no isolation)")
    return p


def _bytes_option(text):
    text = str(text).strip().upper()
    factor = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
    return int(float(text.rstrip("KMG")) * factor)


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.replay or args.case is not None:
        if args.target == "all":
            print("error: --replay and --case need one --target", file=sys.stderr)
            return 2
        data = (Path(args.replay).read_bytes() if args.replay
                else make_case(make_target(args.target), args.seed, args.case))
        return _replay(args.target, data)
    targets = TARGETS if args.target == "all" else (args.target,)
    if args.engine == "atheris":
        if len(targets) == 1:
            _run_atheris(targets[0], args)
            return 0
        share = ["--seconds", str(args.seconds / len(targets))] if args.seconds else []
        codes = [subprocess.call([sys.executable, "-m", "caffelrp.fuzz", "--engine", "atheris",
                                  "--target", t, "--seed", str(args.seed), "--findings",
                                  args.findings] + share
                                 + (["--cases", str(args.cases)] if args.cases else []),
                                 env=_child_env({"threads": args.threads,
                                                 "max_pixels": args.max_pixels}))
                 for t in targets]
        return 1 if any(codes) else 0
    cases = args.cases if args.cases is not None else (None if args.seconds else 10000)
    started = time.time()
    deadline_all = started + args.seconds if args.seconds else None
    options = {"threads": args.threads, "max_pixels": args.max_pixels}
    memory = _bytes_option(args.memory_limit) or None
    findings = []
    for k, name in enumerate(targets):
        t0 = time.time()
        deadline = None
        if deadline_all is not None:   # an equal share of the time that is left
            deadline = t0 + (deadline_all - t0) / (len(targets) - k)
        stop = args.start + cases if cases is not None else sys.maxsize
        done, found = run_isolated(name, args.seed, args.start, stop, deadline,
                                   args.case_timeout, memory, options)
        elapsed = time.time() - t0
        print("%-10s %8d cases in %6.1f s (%.0f/s), %d finding(s)"
              % (name, done, elapsed, done / max(elapsed, 1e-9), len(found)), flush=True)
        findings.extend(found)
    if findings:
        save_findings(findings, args.findings)
        groups = {}
        for f in findings:
            groups.setdefault(signature(f), []).append(f["case"])
        print("\n%d finding(s), %d distinct; inputs and tracebacks in %s/findings.json"
              % (len(findings), len(groups), args.findings))
        for sig, case_numbers in sorted(groups.items()):
            print("  %s  (cases %s%s)" % (sig, ", ".join(map(str, case_numbers[:5])),
                                          ", ..." if len(case_numbers) > 5 else ""))
        print("reproduce one: python -m caffelrp.fuzz --target TARGET --seed %d --case N"
              % args.seed)
        return 1
    print("no findings")
    return 0


if __name__ == "__main__":
    sys.exit(main())
