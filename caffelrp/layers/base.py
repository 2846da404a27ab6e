"""What every layer has: its name, type, parameters, weight blobs, shape inference, forward,
backward and relevance.

A layer type is one class in one module of this package (as in Caffe's src/caffe/layers/). The
network builder creates a layer from its ``LayerParameter`` message, calls ``setup`` with the
bottom shapes (which fixes the weight shapes and gives the top shapes) and then ``forward``;
``backward`` (the gradient, Caffe's ``Backward_cpu``) runs after the forward of the same inputs,
and so does ``relevance`` (LRP), with the rule the composite's table gives the layer type
(``caffelrp.composites``): adding a layer type is one class, in one file.
"""
import numpy as np

from ..errors import PrototxtError, ShapeError, UnsupportedLayerError

_REGISTRY = {}

# The relevance behaviour of the gradient-type formulas (11, 99 and the routing layers of every
# formula): the layer's own ``backward`` carries the relevance, no second copy of it.
GRADIENT = "gradient"


def register(*type_names):
    """Class decorator: make the class the implementation of these Caffe layer types."""
    def wrap(cls):
        for name in type_names:
            _REGISTRY[name] = cls
        return cls
    return wrap


def layer_class(type_name):
    return _REGISTRY.get(type_name)


def supported_types():
    return sorted(_REGISTRY)


class Layer:
    """Base class. Subclasses set ``bottoms_range`` / ``tops_range`` and implement ``reshape``
    and ``forward``; layers with weights implement ``param_shapes``."""

    bottoms_range = (1, 1)       # allowed number of bottoms (min, max); None = unbounded
    tops_range = (1, 1)
    in_place_allowed = True
    is_input = False             # Input-like layers are filled by the network, not run
    # The entry of a composite's table (caffelrp.composites) whose rule this layer type's
    # ``relevance`` receives: "Convolution", "ReLU", ...; None: it takes none (e.g. routing).
    rule_key = None
    # names of the BatchNorm / Scale / Bias layers folded into this one (caffelrp.folding)
    folded_from = ()

    def __init__(self, param, index):
        self.param = param           # the caffe_pb2.LayerParameter
        self.name = param.name
        self.type = param.type
        self.index = index           # Caffe's layer index (implicit Split layers included)
        self._blobs = []             # weight arrays, float32; None: defaults not made yet
        self._param_shapes = []
        self.weights_loaded = False  # from a weights file
        self.weights_assigned = False   # set by assigning layer.blobs

    @property
    def blobs(self):
        """The weight arrays; Caffe's default values are made on first use only (so a net whose
        weights come from a file never allocates them)."""
        if self._blobs is None:
            self._blobs = [self.default_blob(i, s) for i, s in enumerate(self._param_shapes)]
        return self._blobs

    @blobs.setter
    def blobs(self, arrays):
        self._blobs = list(arrays)
        self.weights_assigned = True

    def weight_shapes(self):
        """Shapes of the weight blobs, without making default values."""
        if self._blobs is None:
            return list(self._param_shapes)
        return [tuple(b.shape) for b in self._blobs]

    # -- messages ------------------------------------------------------------------------------
    def describe(self):
        return "layer %d '%s' (%s)" % (self.index, self.name, self.type)

    def config_error(self, what):
        return PrototxtError("%s: %s" % (self.describe(), what))

    def shape_error(self, what):
        return ShapeError("%s: %s" % (self.describe(), what))

    # -- structure -----------------------------------------------------------------------------
    def check_arity(self, n_bottoms, n_tops):
        for what, n, (lo, hi) in (("bottom", n_bottoms, self.bottoms_range),
                                  ("top", n_tops, self.tops_range)):
            if n < lo or (hi is not None and n > hi):
                expected = str(lo) if lo == hi else ("at least %d" % lo if hi is None
                                                     else "%d to %d" % (lo, hi))
                raise self.config_error("takes %s %s blob(s), got %d" % (expected, what, n))

    def param_shapes(self, bottom_shapes):
        """Shapes of the weight blobs this layer owns, given its bottom shapes."""
        return []

    def default_blob(self, index, shape):
        """Value of weight blob ``index`` when no weights file provides it (Caffe's filler default:
        constant 0)."""
        return np.zeros(shape, dtype=np.float32)

    def setup(self, bottom_shapes):
        """Fix the weight shapes on the first call (their default values are made on first use);
        check and return the top shapes."""
        shapes = [tuple(int(d) for d in s) for s in self.param_shapes(bottom_shapes)]
        if self._blobs == [] and not self._param_shapes:   # the first setup
            self._blobs = None if shapes else []     # defaults made lazily (``blobs``)
            self._param_shapes = shapes
        else:
            for i, (blob, shape) in enumerate(zip(self.weight_shapes(), shapes)):
                if blob != shape:
                    raise self.shape_error(
                        "its input now needs weight blob %d of shape %s, but the blob has shape "
                        "%s" % (i, shape, blob))
        self.bottom_shapes = [tuple(s) for s in bottom_shapes]
        self.top_shapes = [tuple(int(d) for d in s) for s in self.reshape(self.bottom_shapes)]
        return self.top_shapes

    def reshape(self, bottom_shapes):
        raise NotImplementedError

    def forward(self, bottoms):
        """Compute the tops (list of float32 arrays) from the bottoms; never modifies a bottom."""
        raise NotImplementedError

    def backward(self, bottoms, tops, top_diffs):
        """Gradient with respect to the bottoms: a list with one float32 array per bottom (None
        for a bottom that takes no gradient, e.g. Crop's reference), given the forward's
        ``bottoms`` and ``tops`` and the gradient of every top (float32, the tops' shapes).

        Runs after the forward pass of the same bottoms: some layers use what their forward kept
        (Pooling MAX its argmax, LRN its scale). Never modifies its arguments."""
        raise UnsupportedLayerError("%s has no backward pass" % self.describe())

    def relevance(self, rule, bottoms, tops, r_tops):
        """LRP: the relevance of every bottom (a list, float32 arrays shaped like the bottoms, None
        for a bottom that receives none) given the forward's ``bottoms`` and ``tops``, the
        relevance of every top, and ``rule``: what the composite's table says for ``rule_key``
        (a ``caffelrp.rules.Rule`` for a linear map, a behaviour name such as "identity", or
        ``GRADIENT``; None when ``rule_key`` is None). Runs after the forward of the same
        bottoms, like ``backward``; never modifies its arguments."""
        raise UnsupportedLayerError("layer %d '%s' of type %s has no relevance rule (the original "
                                    "has none either, spec 2.1)" % (self.index, self.name,
                                                                    self.type))

    def lrp_cache(self):
        """A dict for what the rules derive from this layer's weights (W+, W-, ...), made again
        when the weight arrays are replaced (``Net.load_weights``) or written (``net.params``)."""
        sources = self.blobs
        cache = self.__dict__.get("_lrp_cache")
        if cache is None or len(cache["sources"]) != len(sources) or any(
                a is not b for a, b in zip(cache["sources"], sources)):
            cache = {"sources": tuple(sources)}
            self._lrp_cache = cache
        return cache

    def relevance_text(self, rule):
        """What ``relevance`` applies under ``rule``, for the conservation ledger."""
        if rule is None or rule == GRADIENT:
            return GRADIENT
        return rule if isinstance(rule, str) else repr(rule)

    def flops(self):
        """Multiply-accumulate operations x 2 of one forward pass (for the benchmarks)."""
        return 0


def canonical_axis(layer, axis, rank):
    """Caffe's CanonicalAxisIndex: negative axes count from the end; out of range is an error."""
    if not -rank <= axis < rank:
        raise layer.shape_error("axis %d is out of range for a blob with %d axes" % (axis, rank))
    return axis + rank if axis < 0 else axis


def count(shape, start=0, end=None):
    return int(np.prod(shape[start:end], dtype=np.int64))
