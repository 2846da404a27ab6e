"""The network: layers and named blobs built from a prototxt as Caffe builds them, and its passes.

Construction follows Caffe's ``Net::Init`` (caffe-format.md §2.7): phase/level/stage filtering,
sequential bottom-name resolution, implicit Split layers for blobs read by several layers (so that
layer indices are Caffe's), in-place layers, and shape inference before anything runs. Weights are
matched to layers by name as ``CopyTrainedLayersFrom`` does (§2.6).

Every version of a blob is kept: an in-place ReLU writes a new array under the same name, so the
pre-activation values stay available to the backward and relevance passes. ``net.blobs[name]`` is
the last version, which is what Caffe shows under that name.

Net-level ``input:`` fields declare inputs without creating a layer. Caffe 1.0 would turn them into
an "input" layer at index 0; the LRP toolbox's Caffe (2015) did not, and its layer indices are the
ones the original's config files use, so caffelrp numbers layers like the original.
"""
import copy
import functools
import logging
from collections import namedtuple

import numpy as np

from . import layers as _layers  # noqa: F401  (registers the layer types)
from . import folding, limits, scratch
from .concurrency import net_lock, serialize_methods
from .attribution.lrp import relevance as _lrp_relevance
from .attribution.lrp import relevance_details as _lrp_relevance_details
from .blob import ParamList, blob_view
from .errors import (ArgumentError, CaffeLRPError, InputShapeError, NoSuchBlobError,
                     NoSuchLayerError, PrototxtError, ShapeError, UnsupportedLayerError,
                     WeightsError)
from .io.caffemodel import non_finite_count, read_caffemodel
from .io.prototxt import read_net_prototxt
from .layers.base import layer_class, supported_types
from .proto import caffe_pb2

log = logging.getLogger("caffelrp")

LayerInfo = namedtuple("LayerInfo", "name type")

# One layer of the net, in Caffe's order: its Caffe index, the layer object, and the blob versions
# (ints, see ``Graph``) it reads and writes.
Step = namedtuple("Step", "index layer bottoms tops")

# Layer types of Caffe 1.0 that read data or compute losses: they belong to train/val nets.
_TRAINING_TYPES = {
    "Data", "ImageData", "HDF5Data", "HDF5Output", "WindowData", "DummyData", "Accuracy",
    "SoftmaxWithLoss", "EuclideanLoss", "HingeLoss", "InfogainLoss", "MultinomialLogisticLoss",
    "SigmoidCrossEntropyLoss", "ContrastiveLoss",
}
# Every type string Caffe 1.0 registers (caffe-format.md §1.6).
_CAFFE_TYPES = {
    "AbsVal", "Accuracy", "ArgMax", "BNLL", "BatchNorm", "BatchReindex", "Bias", "Concat",
    "ContrastiveLoss", "Convolution", "Crop", "Data", "Deconvolution", "Dropout", "DummyData",
    "ELU", "Eltwise", "Embed", "EuclideanLoss", "Exp", "Filter", "Flatten", "HDF5Data",
    "HDF5Output", "HingeLoss", "Im2col", "ImageData", "InfogainLoss", "InnerProduct", "Input",
    "LRN", "LSTM", "LSTMUnit", "Log", "MVN", "MemoryData", "MultinomialLogisticLoss", "PReLU",
    "Parameter", "Pooling", "Power", "Python", "RNN", "ReLU", "Reduction", "Reshape", "SPP",
    "Scale", "Sigmoid", "SigmoidCrossEntropyLoss", "Silence", "Slice", "Softmax",
    "SoftmaxWithLoss", "Split", "TanH", "Threshold", "Tile", "WindowData",
}
_INPUT_TYPES = ("Input", "MemoryData")


# ------------------------------------------------------------------------- filtering (§2.7)
def _rule_matches(rule, state):
    if rule.HasField("phase") and rule.phase != state.phase:
        return False
    if rule.HasField("min_level") and state.level < rule.min_level:
        return False
    if rule.HasField("max_level") and state.level > rule.max_level:
        return False
    stages = set(state.stage)
    if any(s not in stages for s in rule.stage):
        return False
    return not any(s in stages for s in rule.not_stage)


def _included(layer, state, source):
    if layer.include and layer.exclude:
        raise PrototxtError("%s: layer '%s' has both include and exclude rules; Caffe allows "
                            "only one kind" % (source, layer.name))
    if layer.include:
        return any(_rule_matches(r, state) for r in layer.include)
    return not any(_rule_matches(r, state) for r in layer.exclude)


# ---------------------------------------------------------------------- implicit splits (§2.7)
def _split_layer_name(blob, producer, top_index):
    return "%s_%s_%d_split" % (blob, producer, top_index)


def _insert_splits(layer_params, input_names, source):
    """Caffe's InsertSplits: a Split layer after every top that more than one layer reads."""
    last_top = {name: (-1, i) for i, name in enumerate(input_names)}
    source_of = {}           # (layer, bottom index) -> (producer layer, top index)
    readers = {}             # (producer layer, top index) -> number of readers
    for i, lp in enumerate(layer_params):
        for j, name in enumerate(lp.bottom):
            if name not in last_top:
                raise PrototxtError("%s: unknown bottom blob '%s' (layer '%s', bottom index %d): "
                                    "no earlier layer or input produces it"
                                    % (source, name, lp.name, j))
            source_of[(i, j)] = last_top[name]
            readers[last_top[name]] = readers.get(last_top[name], 0) + 1
        for j, name in enumerate(lp.top):
            last_top[name] = (i, j)
        for j, weight in enumerate(lp.loss_weight):
            if weight:
                readers[(i, j)] = readers.get((i, j), 0) + 1

    def split(producer_name, blob, top_index, n):
        sp = caffe_pb2.LayerParameter(name=_split_layer_name(blob, producer_name, top_index),
                                      type="Split", bottom=[blob])
        sp.top.extend("%s_%d" % (sp.name, k) for k in range(n))
        return sp

    out = [split("input", name, i, readers[(-1, i)])
           for i, name in enumerate(input_names) if readers.get((-1, i), 0) > 1]
    used = {}
    for i, lp in enumerate(layer_params):
        lp = _copy(lp)
        for j, name in enumerate(lp.bottom):
            src = source_of[(i, j)]
            if readers[src] > 1:
                producer = "input" if src[0] == -1 else layer_params[src[0]].name
                k = used.get(src, 0)
                used[src] = k + 1
                lp.bottom[j] = "%s_%d" % (_split_layer_name(name, producer, src[1]), k)
        out.append(lp)
        for j, name in enumerate(lp.top):
            if readers.get((i, j), 0) > 1:
                out.append(split(lp.name, name, j, readers[(i, j)]))
    return out


def _copy(message):
    clone = type(message)()
    clone.CopyFrom(message)
    return clone


def _argument_errors(method):
    """The API boundary: an argument the passes cannot use reaches the caller as ArgumentError
    (a CaffeLRPError), not as a ValueError/TypeError/KeyError/IndexError from inside them."""
    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        try:
            return method(*args, **kwargs)
        except CaffeLRPError:
            raise
        except (ValueError, TypeError, KeyError, IndexError) as e:
            raise ArgumentError("%s: %s" % (method.__name__, e)) from e
    return wrapper



# ---------------------------------------------------------------------------------- the graph
class Graph:
    """The structure of a net as the passes over it see it (``net.graph()``).

    Every blob *version* has an int id: the net inputs first, then every top in layer order. An
    in-place layer (a ReLU writing its bottom's name) makes a new version of that name, so the
    values before it stay readable. ``steps`` are the layers in Caffe's order, each a ``Step``
    (index, layer, bottom versions, top versions). Values and shapes are read from the net live:
    ``value(v)`` is what the last forward pass wrote (None before one), ``shape(v)`` the shape
    from the last shape inference (None before one).
    """

    def __init__(self, net):
        self._net = net

    @property
    def steps(self):
        return self._net._steps

    @property
    def inputs(self):
        """Versions of the net inputs, in ``net.inputs`` order."""
        return tuple(bid for _, bid, _ in self._net._inputs)

    @property
    def outputs(self):
        """Versions of the net outputs, in ``net.outputs`` order."""
        return tuple(self._net._latest[name] for name in self._net.outputs)

    def __len__(self):
        """The number of blob versions."""
        return len(self._net._blob_names)

    def name(self, version):
        return self._net._blob_names[version]

    def shape(self, version):
        return self._net._blob_shapes[version]

    def value(self, version):
        return self._net._values[version]

    def latest(self, name):
        """The last version of blob ``name`` (what ``net.blobs[name]`` shows)."""
        try:
            return self._net._latest[name]
        except KeyError:
            raise NoSuchBlobError("no blob named %r" % (name,)) from None

    def has_blob(self, name):
        return name in self._net._latest

    def versions(self, name):
        """Every version of blob ``name``, oldest (its producer's output) first."""
        return [v for v, n in enumerate(self._net._blob_names) if n == name]

    def consumers(self, version):
        """Positions in ``steps`` of the layers that read ``version``."""
        return [k for k, step in enumerate(self.steps) if version in step.bottoms]


# ---------------------------------------------------------------------------------- the net
class Net:
    """A Caffe network, ready to run.

    ``Net(prototxt_path, caffemodel_path=None, allow_missing_weights=False)``

    * ``forward(x)``: ``x`` float32 (N, C, H, W), any N; returns {output blob name: array}.
    * ``blobs``: {blob name: array} after a forward pass (the last value written under a name).
    * ``layers``: [(name, type)] in Caffe's order, implicit Split layers included; the position
      in this list is Caffe's layer index.
    * ``params``: {layer name: [weight arrays]} for layers that have weights.
    * ``inputs`` / ``outputs``: blob names (outputs in Caffe's lexicographic order).
    """

    def __init__(self, prototxt_path, caffemodel_path=None, allow_missing_weights=False,
                 phase="TEST", level=0, stages=()):
        self.source = str(prototxt_path)
        net_param = read_net_prototxt(prototxt_path)
        self.name = net_param.name
        state = _copy(net_param.state)
        state.phase = {"TEST": caffe_pb2.TEST, "TRAIN": caffe_pb2.TRAIN}[phase.upper()]
        if level:
            state.level = level
        if stages:
            del state.stage[:]
            state.stage.extend(stages)
        kept = [lp for lp in net_param.layer if _included(lp, state, self.source)]
        input_names, input_shapes = self._net_level_inputs(net_param)
        for lp in kept:
            self._check_type(lp)
        layer_params = _insert_splits(kept, input_names, self.source)
        self._build(layer_params, input_names, input_shapes)
        self.weights_source = None
        self.ignored_weight_layers = []
        self.allow_missing_weights = allow_missing_weights
        self._weights_set_by_user = False
        if caffemodel_path is not None:
            self.load_weights(caffemodel_path, allow_missing=allow_missing_weights)

    # -- construction --------------------------------------------------------------------------
    def _net_level_inputs(self, net_param):
        names = list(net_param.input)
        shapes = []
        if net_param.input_shape:
            if len(net_param.input_shape) != len(names):
                raise PrototxtError("%s: %d input names but %d input_shape entries"
                                    % (self.source, len(names), len(net_param.input_shape)))
            shapes = [tuple(s.dim) for s in net_param.input_shape]
        elif net_param.input_dim:
            dims = list(net_param.input_dim)
            if len(dims) != 4 * len(names):
                raise PrototxtError("%s: %d input names need %d input_dim values, found %d"
                                    % (self.source, len(names), 4 * len(names), len(dims)))
            shapes = [tuple(dims[4 * i:4 * i + 4]) for i in range(len(names))]
        elif names:
            raise PrototxtError("%s: inputs %s have no input_shape or input_dim"
                                % (self.source, names))
        return names, shapes

    def _check_type(self, lp):
        t = lp.type
        where = "%s: layer '%s'" % (self.source, lp.name)
        if t == "Python":
            pp = lp.python_param
            raise UnsupportedLayerError("%s is a Python layer (module '%s', class '%s'); its code "
                                        "cannot be run without Caffe" % (where, pp.module,
                                                                         pp.layer))
        if t in _TRAINING_TYPES:
            raise UnsupportedLayerError("%s has type '%s', which reads training data or computes "
                                        "a loss; use the model's deploy prototxt (with an input "
                                        "declaration) instead" % (where, t))
        if t in _INPUT_TYPES or layer_class(t) is not None:
            return
        if t in _CAFFE_TYPES:
            raise UnsupportedLayerError("%s has type '%s', which caffelrp does not support; "
                                        "supported types: %s" % (where, t,
                                                                 ", ".join(supported_types())))
        raise UnsupportedLayerError("%s has unknown layer type '%s' (not a Caffe 1.0 type; "
                                    "types are case-sensitive)" % (where, t))

    def _build(self, layer_params, input_names, input_shapes):
        self._blob_names = []        # blob id -> name
        self._blob_shapes = []       # blob id -> shape
        latest = {}                  # name -> id of its current version
        self._inputs = []            # (name, blob id, declared shape or None)

        def new_blob(name, shape=None):
            self._blob_names.append(name)
            self._blob_shapes.append(shape)
            latest[name] = len(self._blob_names) - 1
            return latest[name]

        for name, shape in zip(input_names, input_shapes or [None] * len(input_names)):
            self._inputs.append((name, new_blob(name, shape), shape))

        self._layers, self._bottom_ids, self._top_ids = [], [], []
        for index, lp in enumerate(layer_params):
            layer_type = "Input" if lp.type in _INPUT_TYPES else lp.type
            limits.check_layer_param(lp, index, self.source)
            layer = layer_class(layer_type)(lp, index)
            layer.check_arity(len(lp.bottom), len(lp.top))
            bottoms = []
            for j, name in enumerate(lp.bottom):
                if name not in latest:  # resolved by _insert_splits already; kept as a guard
                    raise PrototxtError("%s: unknown bottom blob '%s' (layer '%s')"
                                        % (self.source, name, lp.name))
                bottoms.append(latest[name])
            tops = []
            for j, name in enumerate(lp.top):
                in_place = j < len(lp.bottom) and lp.bottom[j] == name
                if in_place and not layer.in_place_allowed:
                    raise PrototxtError("%s: layer '%s' (%s) cannot run in place (top '%s' is "
                                        "also its bottom)" % (self.source, lp.name, lp.type, name))
                if not in_place and name in latest:
                    raise PrototxtError("%s: top blob '%s' of layer '%s' is produced by multiple "
                                        "sources" % (self.source, name, lp.name))
                tops.append(new_blob(name))
            if layer_type == "Input":
                for k, top in enumerate(tops):
                    self._inputs.append((lp.top[k], top, self._input_layer_shape(lp, k)))
            self._layers.append(layer)
            self._bottom_ids.append(bottoms)
            self._top_ids.append(tops)

        read = {b for ids in self._bottom_ids for b in ids}
        self._latest = latest
        self.outputs = sorted(name for name, bid in latest.items() if bid not in read)
        self.inputs = [name for name, _, _ in self._inputs]
        if not self._inputs:
            raise PrototxtError("%s: the network declares no input (no input: fields and no Input "
                                "layer)" % self.source)
        shapes = [shape for _, _, shape in self._inputs]
        if any(s is None for s in shapes):
            self._shaped = False  # shapes known only when the first input arrives
        else:
            self._infer_shapes(shapes)
        self._values = [None] * len(self._blob_names)
        self._steps = tuple(Step(layer.index, layer, tuple(b), tuple(t)) for layer, b, t in
                            zip(self._layers, self._bottom_ids, self._top_ids))
        self._graph = Graph(self)

    def _input_layer_shape(self, lp, k):
        if lp.type == "MemoryData":
            mp = lp.memory_data_param
            return ((mp.batch_size, mp.channels, mp.height, mp.width) if k == 0
                    else (mp.batch_size,))
        shapes = lp.input_param.shape
        if not shapes:
            return None
        if len(shapes) not in (1, len(lp.top)):
            raise PrototxtError("%s: Input layer '%s' has %d shapes for %d tops"
                                % (self.source, lp.name, len(shapes), len(lp.top)))
        return tuple(shapes[0 if len(shapes) == 1 else k].dim)

    def _infer_shapes(self, input_shapes):
        """Run every layer's setup for these input shapes (Caffe's Reshape pass)."""
        for (name, bid, _), shape in zip(self._inputs, input_shapes):
            limits.check_blob_shape(shape, "%s: input '%s'" % (self.source, name))
            self._blob_shapes[bid] = tuple(shape)
        for layer, bottoms, tops in zip(self._layers, self._bottom_ids, self._top_ids):
            if layer.is_input:
                continue
            limits.check_layer_shapes(layer, [self._blob_shapes[b] for b in bottoms])
            top_shapes = layer.setup([self._blob_shapes[b] for b in bottoms])
            limits.check_top_shapes(layer, top_shapes)
            for bid, shape in zip(tops, top_shapes):
                self._blob_shapes[bid] = shape
        self._shaped = True

    # -- weights -------------------------------------------------------------------------------
    def load_weights(self, caffemodel_path, allow_missing=False):
        """Copy weights from a .caffemodel into layers of the same name (Caffe's rules, §2.6)."""
        if not self._shaped:
            raise WeightsError("%s: the input shapes are not declared, so the weight shapes are "
                               "unknown; declare them (input_shape or an Input layer's shape)"
                               % self.source)
        path = str(caffemodel_path)
        stored = read_caffemodel(path)
        first_by_name = {}
        for layer in self._layers:
            first_by_name.setdefault(layer.name, layer)
        ignored, loaded = [], set()
        for src in stored:
            target = first_by_name.get(src.name)
            if target is None:
                ignored.append(src.name)
                continue
            if len(src.blobs) != len(target.blobs):
                raise WeightsError(
                    "%s: layer '%s' has %d weight blob(s) in the file but the prototxt %s needs %d "
                    "(check bias_term)" % (path, src.name, len(src.blobs), self.source,
                                           len(target.blobs)))
            new_blobs = []
            for j, (blob, current) in enumerate(zip(src.blobs, target.blobs)):
                if not _shape_equals(blob, current.shape):
                    raise WeightsError(
                        "%s: cannot copy weight blob %d of layer '%s': shape mismatch; the file "
                        "has %s, the prototxt %s needs %s (%d)" % (
                            path, j, src.name, blob.describe_shape(), self.source,
                            " ".join(str(d) for d in current.shape), current.size))
                bad = non_finite_count(blob.data)
                if bad:   # Caffe would run them, and every output and heatmap would be NaN
                    raise WeightsError(
                        "%s: weight blob %d of layer '%s' (%s) holds %d non-finite value(s) "
                        "(NaN or infinity); the weights file is corrupt"
                        % (path, j, src.name, target.type, bad))
                new_blobs.append(blob.data.reshape(current.shape))
            target.blobs = new_blobs
            target.weights_loaded = True
            loaded.add(id(target))
        missing = [layer.name for layer in self._layers
                   if layer.weight_shapes() and id(layer) not in loaded]
        if missing and not allow_missing:
            raise WeightsError("%s has no weights for layer(s) %s of %s; pass "
                               "allow_missing_weights=True to run them with Caffe's default "
                               "(zero) weights" % (path, ", ".join(missing), self.source))
        for name in missing:
            log.warning("%s: no weights for layer '%s'; it keeps default values", path, name)
        if ignored:
            log.info("%s: ignored %d layer(s) not in the prototxt: %s", path, len(ignored),
                     ", ".join(ignored))
        self.ignored_weight_layers = ignored
        self.weights_source = path

    # -- running -------------------------------------------------------------------------------
    def _check_inputs(self, x):
        if isinstance(x, dict):
            unknown = set(x) - set(self.inputs)
            if unknown:
                raise InputShapeError("unknown input(s) %s; the network's inputs are %s"
                                      % (sorted(unknown), self.inputs))
            missing = [n for n in self.inputs if n not in x]
            if missing:
                raise InputShapeError("missing input(s) %s" % missing)
            arrays = [x[n] for n in self.inputs]
        else:
            if len(self.inputs) != 1:
                raise InputShapeError("the network has inputs %s: pass a dict {name: array}"
                                      % self.inputs)
            arrays = [x]
        checked = []
        for (name, _, declared), a in zip(self._inputs, arrays):
            try:
                a = np.asarray(a)
            except Exception as e:  # e.g. ragged nested lists
                raise InputShapeError("input '%s' is not an array: %s" % (name, e)) from None
            if a.dtype.kind not in "fiub":
                raise InputShapeError("input '%s' must be numeric, got dtype %s" % (name, a.dtype))
            if declared is not None and a.ndim != len(declared):
                raise InputShapeError("input '%s' must have %d axes %s, got shape %s"
                                      % (name, len(declared), _shape_text(declared), a.shape))
            checked.append(np.ascontiguousarray(a, dtype=np.float32))
        return checked

    def reshape(self, input_shapes):
        """Re-run shape inference for new input shapes (e.g. another batch size)."""
        old = [self._blob_shapes[bid] for _, bid, _ in self._inputs]
        try:
            self._infer_shapes(input_shapes)
        except ShapeError as e:
            if all(s is not None for s in old):
                self._infer_shapes(old)
            expected = ", ".join("'%s' %s" % (n, _shape_text(d)) for n, _, d in self._inputs)
            raise InputShapeError("input shape %s does not fit the network (declared: %s): %s"
                                  % (", ".join(str(tuple(s)) for s in input_shapes), expected,
                                     e)) from None

    def _check_weights_present(self):
        """A net with parameters runs without weights only when asked to (Caffe's defaults are
        mostly zeros: every output and relevance would be 0)."""
        if self.allow_missing_weights or self._weights_set_by_user:
            return
        unset = [layer.name for layer in self._layers if layer.weight_shapes()
                 and not (layer.weights_loaded or layer.weights_assigned)]
        if unset:
            raise WeightsError(
                "%s: no weights for the %d layer(s) with parameters (%s%s): pass a .caffemodel "
                "(Net(prototxt, caffemodel)), set them through net.params, or pass "
                "allow_missing_weights=True to run Caffe's default (mostly zero) weights"
                % (self.source, len(unset), ", ".join(unset[:5]),
                   ", ..." if len(unset) > 5 else ""))

    def _weights_written(self):
        """Called when weights are written through net.params: drop what was derived from them."""
        self._weights_set_by_user = True
        self.__dict__.pop("_folded_cache", None)
        for layer in self._layers:
            layer.__dict__.pop("_lrp_cache", None)
            layer.__dict__.pop("_winograd_filters", None)   # caffelrp.winograd.CACHE

    @scratch.reusing_memory
    def forward(self, x=None, **inputs):
        """Run the network on ``x`` (an array, or {input name: array}), or pycaffe's keyword form
        ``forward(data=x)``; returns {output blob name: array}."""
        if inputs:
            if x is not None:
                raise ArgumentError("forward takes the input positionally or as keywords "
                                    "(forward(data=x)), not both")
            x = inputs
        elif x is None:
            raise ArgumentError("forward needs the input: forward(x) or forward(%s=x)"
                                % (self.inputs[0] if self.inputs else "data"))
        arrays = self._check_inputs(x)
        self._check_weights_present()
        shapes = [a.shape for a in arrays]
        if not self._shaped or shapes != [self._blob_shapes[bid] for _, bid, _ in self._inputs]:
            self.reshape(shapes)
        # the last pass's blobs go now, so that this pass reuses their memory (scratch.reusing)
        self._values = [None] * len(self._blob_names)
        values = [None] * len(self._blob_names)
        for (_, bid, _), a in zip(self._inputs, arrays):
            values[bid] = a
        for layer, bottoms, tops in zip(self._layers, self._bottom_ids, self._top_ids):
            if layer.is_input:
                if layer.type == "MemoryData":  # its label top: zeros
                    for bid in tops[1:]:
                        values[bid] = np.zeros(self._blob_shapes[bid], dtype=np.float32)
                continue
            outs = layer.forward([values[b] for b in bottoms])
            for bid, out in zip(tops, outs):
                values[bid] = out
        self._values = values
        return {name: values[self._latest[name]] for name in self.outputs}

    @_argument_errors
    def relevance(self, x, rule=100, eps=1.0, beta=1.0, switch_layer=0, target="top5",
                  start="highest-ip", gamma=0.25, mean=None, bounds=None):
        """LRP relevance of the input pixels, float32 (N, C, H, W), as the LRP Toolbox computes it.

        ``rule``: the original's ``relpropformulatype`` (0 epsilon, 2 alpha-beta, 100 composite,
        102, 104, 114, 54, 56, 58, 60, 22, 6, 8, 18, 26 deconvnet, 166 guided backprop, 11
        gradient, 99 sensitivity) or a readable name ("epsilon", "alphabeta", "composite", ...,
        and caffelrp's "zplus", "gamma", "epsilon-plus", "epsilon-plus-flat",
        "epsilon-gamma-box"); ``eps``, ``beta`` and ``switch_layer`` are the original's
        ``epsstab``, ``alphabeta_beta`` and ``auxiliaryvariable_maxlayerindexforflatdistinconv``;
        ``gamma`` the gamma rule's parameter; ``mean`` (the mean preprocessing subtracted: per
        channel or an image, in the net's channel order) or ``bounds`` = (low, high) give the
        input range for z^B; ``target`` is "top5", "top1", a class index or one entry per image;
        ``start`` is "highest-ip", "below-softmax", a layer name or a layer index.
        See ``caffelrp.attribution.lrp``; ``relevance_details`` also returns every blob's
        relevance and the conservation ledger.
        """
        limits.check_lrp_arguments(eps, beta, bounds, gamma)
        return _lrp_relevance(self, x, rule=rule, eps=eps, beta=beta, switch_layer=switch_layer,
                              target=target, start=start, gamma=gamma, mean=mean, bounds=bounds)

    @_argument_errors
    def relevance_details(self, x, rule=100, eps=1.0, beta=1.0, switch_layer=0, target="top5",
                          start="highest-ip", gamma=0.25, mean=None, bounds=None):
        """``relevance`` with everything it computed: a ``RelevanceResult`` with ``input`` (what
        ``relevance`` returns), ``classes``, ``injected``, ``blobs`` ({blob name: relevance})
        and ``ledger`` (per layer, the relevance arriving and leaving; ``ledger_text()``)."""
        limits.check_lrp_arguments(eps, beta, bounds, gamma)
        return _lrp_relevance_details(self, x, rule=rule, eps=eps, beta=beta,
                                      switch_layer=switch_layer, target=target, start=start,
                                      gamma=gamma, mean=mean, bounds=bounds)

    # -- introspection -------------------------------------------------------------------------
    def graph(self):
        """The net's ``Graph``: its layers in order with the blob versions they read and write,
        and the values of the last forward pass (what the backward and relevance passes walk)."""
        return self._graph

    def folded(self):
        """This net with every BatchNorm / Scale / Bias layer applied right after a Convolution or
        InnerProduct folded into it (``caffelrp.folding``), as the gradient and relevance passes
        see it; the net itself when there is nothing to fold.

        The folded net is a ``Net`` to inspect or run (``layers``, ``params``, ``forward``): its
        folded layers are copies with the folded weights (``layer.folded_from`` names what they
        absorbed), the others are this net's own layers (the same objects, with their weights and
        what their last forward kept), and its blob versions keep this net's numbering, so its
        steps can walk this net's values. Layer indices are this net's (Caffe's): the folded net's
        ``layers`` skip the folded ones. It is made again when the weights change."""
        graph = self.graph()
        chains = folding.affine_chains(graph)
        if not chains:
            return self
        sources = folding.weight_sources(graph, chains)
        cached = self.__dict__.get("_folded_cache")
        if cached is not None and len(cached[0]) == len(sources) and all(
                a is b for a, b in zip(cached[0], sources)):
            return cached[1]
        absorbed = {j for chain in chains.values() for j in chain}
        layers, bottoms, tops = [], [], []
        for i, step in enumerate(graph.steps):
            if i in absorbed:
                continue
            layer, top = step.layer, step.tops
            if i in chains:
                layer = folding.folded_layer(layer, [graph.steps[j].layer for j in chains[i]])
                top = graph.steps[chains[i][-1]].tops
            layers.append(layer)
            bottoms.append(list(step.bottoms))
            tops.append(list(top))
        twin = copy.copy(self)
        twin.__dict__.pop("_folded_cache", None)
        twin._pass_lock = net_lock(self)    # the twin shares layers (and their forward state)
        twin._layers, twin._bottom_ids, twin._top_ids = layers, bottoms, tops
        twin._blob_shapes = list(self._blob_shapes)
        twin._values = [None] * len(self._blob_names)
        made = set(graph.inputs) | {v for t in tops for v in t}
        twin._latest = {name: v for name, v in self._latest.items() if v in made}
        twin._steps = tuple(Step(layer.index, layer, tuple(b), tuple(t))
                            for layer, b, t in zip(layers, bottoms, tops))
        twin._graph = Graph(twin)
        self._folded_cache = (sources, twin)
        return twin

    def check_inputs(self, x):
        """The input arrays ``forward(x)`` would run (float32, C-contiguous, one per net input),
        or an ``InputShapeError`` naming the input."""
        return self._check_inputs(x)

    @property
    def layers(self):
        return [LayerInfo(layer.name, layer.type) for layer in self._layers]

    def layer(self, name_or_index):
        """The layer object by name (first of that name) or by Caffe index."""
        if isinstance(name_or_index, int):
            return self._layers[name_or_index]
        for layer in self._layers:
            if layer.name == name_or_index:
                return layer
        raise NoSuchLayerError("no layer named %r" % (name_or_index,))

    @property
    def blobs(self):
        """{blob name: Blob} after a forward pass; a Blob is a numpy array whose ``.data`` is
        itself, as in pycaffe."""
        return {name: blob_view(self._values[bid]) for name, bid in self._latest.items()
                if self._values[bid] is not None}

    @property
    def blob_shapes(self):
        return {name: self._blob_shapes[bid] for name, bid in self._latest.items()}

    @property
    def params(self):
        """{layer name: [Blob]} for the layers with weights: views of the weights, so that
        ``net.params["conv1"][0].data[...] = w`` (or ``net.params["conv1"][0] = w``) changes
        them."""
        return {layer.name: ParamList(layer.name, [blob_view(b, self._weights_written)
                                                   for b in layer.blobs])
                for layer in self._layers if layer.weight_shapes()}

    def layer_bottoms(self, index):
        """Names of the blobs layer ``index`` reads."""
        return [self._blob_names[b] for b in self._bottom_ids[index]]

    def layer_tops(self, index):
        return [self._blob_names[b] for b in self._top_ids[index]]

    def layer_top_values(self, index):
        """The arrays layer ``index`` wrote in the last forward pass (before any in-place layer
        after it changed the blob of the same name)."""
        return [self._values[b] for b in self._top_ids[index]]

    def flops(self):
        """Floating-point operations of one forward pass at the current shapes."""
        return sum(layer.flops() for layer in self._layers if not layer.is_input)

    def __repr__(self):
        return "<caffelrp.Net '%s': %d layers, inputs %s, outputs %s>" % (
            self.name, len(self._layers), self.inputs, self.outputs)

    # -- gradients (caffelrp.attribution.backward, .gradients, .integrated_gradients) ----------
    @_argument_errors
    def backward(self, diffs, blobs=None):
        """Gradients after ``forward``: ``diffs`` {blob name: gradient of that blob}; returns
        {blob name: gradient} for the inputs and the names in ``blobs`` ("all": every blob; a
        name rewritten in place reports the gradient at its producer's output, like pycaffe)."""
        from .attribution.backward import backward_by_name
        if any(self._values[bid] is None for _, bid, _ in self._inputs):
            raise ArgumentError("backward needs the values of a forward pass: call "
                                "net.forward(x) first")
        if not isinstance(diffs, dict):
            raise ArgumentError("backward takes {blob name: gradient}, got %s"
                                % type(diffs).__name__)
        return backward_by_name(self, diffs, blobs)

    @_argument_errors
    def gradient(self, x, target="top1", output="logit", memory_budget=None):
        """(dF/dx float32 (N, C, H, W), info per image); F is the pre-softmax score of the
        explained class(es) (``output="probability"``: the softmax output; or a blob name);
        ``target`` as in ``relevance``. See ``caffelrp.attribution.gradients``."""
        from .attribution.gradients import gradient
        return gradient(self, x, target, output, memory_budget)

    @_argument_errors
    def gradient_x_input(self, x, target="top1", output="logit", memory_budget=None):
        """(x * dF/dx, info per image), x the preprocessed input; as ``gradient``."""
        from .attribution.gradients import gradient_x_input
        return gradient_x_input(self, x, target, output, memory_budget)

    @_argument_errors
    def smoothgrad(self, x, target="top1", samples=50, noise=0.15, seed=0, input_range=None,
                   output="logit", memory_budget=None):
        """SmoothGrad (Smilkov et al. 2017): (mean gradient over ``samples`` noisy copies, info);
        noise sigma = ``noise`` * the input range. See ``caffelrp.attribution.gradients``.
        Afterwards ``blobs`` describe the input of the last ``forward`` again, not the noisy
        copies."""
        from .attribution.gradients import smoothgrad
        limits.check_smoothgrad_arguments(samples, noise, input_range)
        return self._keeping_forward_state(lambda: smoothgrad(
            self, x, target, samples, noise, seed, input_range, output, memory_budget))

    @_argument_errors
    def integrated_gradients(self, x, target="top1", baseline="black", mean=None, steps="auto",
                             tol=0.05, rule="riemann-midpoint", max_steps=1024, **options):
        """Integrated Gradients (Sundararajan et al. 2017): (attr float32 (N, C, H, W), info per
        image with the steps used, F(x), F(x') and the completeness error).

        ``baseline="black"`` is the black image in pixel space, -``mean`` in Caffe's
        mean-subtracted input (``mean`` required); "mean" (zeros), "blur", "noise" or an array.
        ``steps``: m or "auto" (double m until the error <= ``tol``, at most ``max_steps``).
        Further ``options``: ``start_steps``, ``output``, ``memory_budget``, ``seed``,
        ``blur_sigma``. See ``caffelrp.attribution.integrated_gradients``. Afterwards ``blobs``
        describe the input of the last ``forward`` again, not the interpolated inputs."""
        from .attribution.integrated_gradients import integrated_gradients
        limits.check_ig_arguments(steps, tol, max_steps)
        return self._keeping_forward_state(lambda: integrated_gradients(
            self, x, target=target, baseline=baseline, mean=mean, steps=steps, tol=tol, rule=rule,
            max_steps=max_steps, **options))

    def _keeping_forward_state(self, run):
        """Run ``run()`` (which feeds the net batches of its own), then give the net back the
        forward state it had: the user's last input run again (so ``blobs`` and ``backward``
        describe it), or no state if there was none."""
        before = [self._values[bid] for _, bid, _ in self._inputs]
        try:
            return run()
        finally:
            if all(v is not None for v in before):
                self.forward(dict(zip(self.inputs, before)) if len(before) > 1 else before[0])
            else:
                self._values = [None] * len(self._blob_names)


def _shape_equals(blob, target_shape):
    """Caffe's Blob::ShapeEquals: legacy 4-D shapes compare right-aligned (§2.5)."""
    if blob.legacy:
        if len(target_shape) > 4:
            return False
        return tuple(blob.shape) == (1,) * (4 - len(target_shape)) + tuple(target_shape)
    return tuple(blob.shape) == tuple(target_shape)


def _shape_text(shape):
    if shape is None:
        return "(any shape)"
    return "(N, " + ", ".join(str(d) for d in shape[1:]) + ")" if len(shape) > 1 else str(shape)


# One net used from several threads: each pass holds the net's lock (caffelrp.concurrency).
serialize_methods(Net, ("load_weights", "reshape", "forward", "folded", "relevance",
                        "relevance_details", "backward", "gradient", "gradient_x_input", "smoothgrad",
                        "integrated_gradients"))
