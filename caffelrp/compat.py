"""The LRP Toolbox demonstrator's files: its config format, its image list and its outputs.

Spec: shared/spec/original-lrp.md §1.1-1.8. ``lrp_demo CONFIG FILELIST PREPENDPATH`` becomes
``python -m caffelrp -c CONFIG -f FILELIST [-p PREPENDPATH]`` (cli.py); this module holds the parts
that must match the original byte for byte: the config parser, the list reader, the output names
and the four writers (``_rawhm.txt``, ``_heatmap.png``, ``_top10scores.txt``,
``_as_inputted_into_the_dnn.png``).
"""
from dataclasses import dataclass
import os
import re
from pathlib import Path

import numpy as np

from .errors import CaffeLRPError
from .files import write_atomically
from .render import png_bytes


class ConfigError(CaffeLRPError):
    """The config file or the image list is missing, malformed or incomplete."""


# (key, type, meaning) in the order the demonstrator reads them (spec 1.3); all are mandatory.
CONFIG_KEYS = (
    ("param_file", "file", "deploy .prototxt"),
    ("model_file", "file", ".caffemodel"),
    ("mean_file", "file", "mean image"),
    ("use_mean_file_asbinaryprotoblob", "int", "0 text mean, 1 binaryproto BGR, 2 binaryproto RGB"),
    ("lastlayerindex", "int", "injection layer: -2 highest InnerProduct, -1 below the softmax"),
    ("firstlayerindex", "int", "lowest layer processed (must be 0 for an input heatmap)"),
    ("synsetfile", "file", "class names, one per line"),
    ("baseimgsize", "int", "length of the longer image side after the resize"),
    ("standalone_outpath", "str", "output root directory"),
    ("standalone_rootpath", "str", "path fragment each image path must contain"),
    ("relpropformulatype", "int", "rule selector (formula type)"),
    ("epsstab", "float", "epsilon"),
    ("alphabeta_beta", "float", "beta (alpha = 1 + beta)"),
    ("numclasses", "int", "number of classes"),
    ("auxiliaryvariable_maxlayerindexforflatdistinconv", "int", "switch layer index"),
)

_INT = re.compile(r"[+-]?\d+")
_FLOAT = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|[+-]?(?:inf|nan)", re.I)


@dataclass
class Config:
    path: str
    values: dict     # key -> parsed value
    lines: dict      # key -> 1-based line number of the value

    def __getattr__(self, key):
        try:
            return self.__dict__["values"][key]
        except KeyError:
            raise AttributeError(key) from None

    def where(self, key):
        return "%s:%d" % (self.path, self.lines[key])


def _trim(line):
    # the demonstrator trims blanks and tabs only (not '\r'; '>>' skips it later)
    return line.strip(" \t")


def parse_config_text(text, path="<config>", check_files=True):
    """Parse the demonstrator's config format (spec 1.3): for each key the first line that
    *starts with* it (after trimming blanks and tabs) wins, and its value is the next physical line,
    read as C++ ``>>`` reads it (strings stop at whitespace, ints at the first non-digit).
    Every key is mandatory; errors name the key and the line."""
    lines = [_trim(line) for line in text.split("\n")]
    values, where = {}, {}
    for key, kind, meaning in CONFIG_KEYS:
        found = next((i for i, line in enumerate(lines) if line.startswith(key)), None)
        if found is None:
            raise ConfigError("%s: missing key '%s' (%s)" % (path, key, meaning))
        n = found + 2     # 1-based line number of the value
        if found + 1 >= len(lines):
            raise ConfigError("%s:%d: key '%s' has no value line after it"
                              % (path, found + 1, key))
        tokens = lines[found + 1].split()
        if not tokens:
            raise ConfigError("%s:%d: the value of '%s' (the line after the key) is empty"
                              % (path, n, key))
        token = tokens[0]
        if kind == "int":
            m = _INT.match(token)
            if not m:
                raise ConfigError("%s:%d: the value of '%s' must be an integer, got %r"
                                  % (path, n, key, token))
            value = int(m.group())
        elif kind == "float":
            m = _FLOAT.match(token)
            if not m:
                raise ConfigError("%s:%d: the value of '%s' must be a number, got %r"
                                  % (path, n, key, token))
            value = float(m.group())
        else:
            value = token
            if kind == "file":
                # relative to the working directory, as the demonstrator opens them
                if check_files and not Path(token).is_file():
                    raise ConfigError("%s:%d: '%s' names %s, which is not a file"
                                      % (path, n, key, token))
        values[key], where[key] = value, n
    config = Config(str(path), values, where)
    _check_values(config)
    return config


def _check_values(config):
    if config.use_mean_file_asbinaryprotoblob not in (0, 1, 2):
        raise ConfigError("%s: use_mean_file_asbinaryprotoblob must be 0, 1 or 2, got %d"
                          % (config.where("use_mean_file_asbinaryprotoblob"),
                             config.use_mean_file_asbinaryprotoblob))
    if config.lastlayerindex < -2:
        raise ConfigError("%s: lastlayerindex must be -2, -1 or a layer index, got %d"
                          % (config.where("lastlayerindex"), config.lastlayerindex))
    if config.firstlayerindex != 0:
        # spec 1.5 / 6.2: the heatmap is always read at the input of layer 0; another value
        # returns stale data in the original
        raise ConfigError("%s: firstlayerindex must be 0 (the original reads the heatmap at "
                          "layer 0 whatever this says), got %d"
                          % (config.where("firstlayerindex"), config.firstlayerindex))
    if config.numclasses < 1:
        raise ConfigError("%s: numclasses must be positive, got %d"
                          % (config.where("numclasses"), config.numclasses))
    if config.baseimgsize < 1:
        raise ConfigError("%s: baseimgsize must be positive, got %d"
                          % (config.where("baseimgsize"), config.baseimgsize))
    if config.alphabeta_beta < 0:
        raise ConfigError("%s: alphabeta_beta must be >= 0, got %g"
                          % (config.where("alphabeta_beta"), config.alphabeta_beta))


def read_config(path):
    path = str(path)
    if not os.path.exists(path):
        raise ConfigError("%s: config file not found" % path)
    if not os.path.isfile(path):
        raise ConfigError("%s: the config file must be a regular file" % path)
    try:
        text = Path(path).read_text(errors="replace")
    except OSError as e:
        raise ConfigError("%s: cannot read the config file: %s" % (path, e.strerror)) from None
    return parse_config_text(text, path)


# ------------------------------------------------------------------------------ image list
@dataclass
class ListEntry:
    line: int          # 1-based line in the list
    path: str          # PREPENDPATH + "/" + path as written
    class_field: int   # -2 top-5, >= 0 that class, other negative top-1

    @property
    def target(self):
        if self.class_field == -2:
            return "top5"
        if self.class_field < 0:
            return "top1"
        return self.class_field


def parse_file_list(text, prepend="./", path="<list>"):
    """The demonstrator's image list (spec 1.2): lines of <= 2 characters are skipped; otherwise
    the first whitespace-free token is the image path and the second an integer class field.
    Anything after it is ignored. A missing or non-integer class field is an error naming the line."""
    entries = []
    for n, line in enumerate(text.split("\n"), 1):
        if len(line) <= 2:
            continue
        tokens = line.split()
        if not tokens:
            continue
        if len(tokens) < 2:
            raise ConfigError("%s:%d: no class field after the image path %r (use -2 for the "
                              "top-5 classes, -1 for the top class, k for class k)"
                              % (path, n, tokens[0]))
        m = _INT.match(tokens[1])
        if not m:
            raise ConfigError("%s:%d: the class field must be an integer, got %r"
                              % (path, n, tokens[1]))
        entries.append(ListEntry(n, prepend + "/" + tokens[0], int(m.group())))
    return entries


def read_file_list(path, prepend="./"):
    path = str(path)
    if not os.path.isfile(path):
        raise ConfigError("%s: the image list must be a regular file" % path)
    return parse_file_list(Path(path).read_text(errors="replace"), prepend, path)


def output_base(image_path, rootpath, outpath):
    """``outpath + "/" + image_path[first occurrence of rootpath:]`` (spec 1.7)."""
    pos = image_path.find(rootpath)
    if pos < 0:
        raise CaffeLRPError("%s: standalone_rootpath %r does not occur in the image path"
                            % (image_path, rootpath))
    tail = image_path[pos:]
    # outputs stay inside standalone_outpath: a path that climbs out with ".." is refused
    # (the original would write wherever it points)
    depth = 0
    for part in tail.replace("\\", "/").split("/"):
        depth += -1 if part == ".." else 0 if part in ("", ".") else 1
        if depth < 0:
            raise CaffeLRPError("%s: its outputs would leave standalone_outpath %r (the '..' in "
                                "%r climbs out of it)" % (image_path, outpath, tail))
    return outpath + "/" + tail


# ------------------------------------------------------------------------------- writers
def _g(value):
    """C++ iostream default formatting of a double (6 significant digits, %g)."""
    text = "%g" % value
    return text


def rawhm_text(relevance_bgr):
    """``_rawhm.txt`` (spec 1.7 item 2): "3", "H W", then for R, G, B and each row the W values
    each followed by a space. Input: the relevance of the network input, (3, H, W) BGR."""
    r = np.asarray(relevance_bgr, dtype=np.float32).astype(np.float64)[::-1]
    c, h, w = r.shape
    out = ["%d\n%d %d\n" % (c, h, w)]
    for plane in r:
        for row in plane:
            out.append("".join(_g(v) + " " for v in row) + "\n")
    return "".join(out)


def read_rawhm(path):
    """A ``_rawhm.txt`` back as float64 (3, H, W) in its file order (RGB)."""
    lines = Path(path).read_text().split("\n")
    c = int(lines[0])
    h, w = (int(t) for t in lines[1].split())
    data = np.array([[float(t) for t in lines[2 + i].split()] for i in range(c * h)])
    return data.reshape(c, h, w)


def top10_text(scores, numclasses):
    """``_top10scores.txt``: min(10, numclasses) lines "<class> <score>", best first (spec 1.7)."""
    s = np.asarray(scores, dtype=np.float32).reshape(-1)[:numclasses].astype(np.float64)
    order = np.argsort(-s, kind="stable")[:min(10, numclasses)]
    return "".join("%d %s\n" % (k, _g(s[k])) for k in order)


def heatmap_quanta(relevance_bgr):
    """The demonstrator's heatmap as 16-bit values (H, W, 3) RGB (spec 1.7 item 3): channel mean
    v, m = max(0, max v); v >= 0 -> (v/m, v/m, 0), v < 0 -> (0, 0, -v/m) unclipped; then
    (Quantum)(x * 65535), which wraps around modulo 2^16 where -v/m > 1, as the original's file
    does (checked against its PNGs)."""
    r = np.asarray(relevance_bgr, dtype=np.float32).astype(np.float64)
    v = (r[2] + r[1] + r[0]) / 3.0
    m = max(0.0, float(v.max()))
    if m <= 0:
        return np.zeros(v.shape + (3,), dtype=np.uint16)
    pos = np.where(v >= 0, v / m, 0.0)
    neg = np.where(v < 0, -v / m, 0.0)
    quanta = [np.floor(x * 65535.0).astype(np.int64) % 65536 for x in (pos, pos, neg)]
    return np.stack(quanta, axis=-1).astype(np.uint16)


def as_inputted_quanta(as_inputted):
    """The crop fed to the net (before the mean), [0, 1] RGB, truncated to 16-bit quanta."""
    return np.floor(np.clip(np.asarray(as_inputted, np.float64), 0, 1) * 65535.0).astype(np.uint16)


def write_outputs(base, relevance_bgr, scores, numclasses, as_inputted):
    """Write the four files of ``lrp_demo`` for one image (in its order: heatmap, top10, rawhm,
    as-inputted); parent folders are created. Returns the paths written."""
    Path(base).parent.mkdir(parents=True, exist_ok=True)
    paths = [base + "_heatmap.png", base + "_top10scores.txt", base + "_rawhm.txt",
             base + "_as_inputted_into_the_dnn.png"]
    write_atomically(paths[0], png_bytes(heatmap_quanta(relevance_bgr), 16))
    write_atomically(paths[1], top10_text(scores, numclasses).encode())
    write_atomically(paths[2], rawhm_text(relevance_bgr).encode())
    write_atomically(paths[3], png_bytes(as_inputted_quanta(as_inputted), 16))
    return paths
