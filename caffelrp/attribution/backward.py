"""The backward pass: gradients of a network output with respect to the input and every blob.

Each layer type's gradient lives with the layer (``Layer.backward``, Caffe's ``Backward_cpu``);
this module walks the graph from the top down as ``Net::Backward`` does: a blob's gradient is the
sum over the layers that read it (implicit Split layers make that explicit), in-place layers get
their own blob versions, and a layer is skipped when none of its tops received a gradient.

The explained quantity F is chosen by ``output``:

* ``"logit"`` (default): the pre-softmax score, i.e. the bottom of the net's Softmax layer (the net
  output itself when there is no Softmax);
* ``"probability"``: the Softmax output;
* a blob name: that blob (its last version, as ``net.blobs`` shows it).

F of an image is the sum of that blob's entries at the explained classes (``target`` as for
``Net.relevance``: "top1", "top5" (their sum), a class index, a list of indices, or one list per
image; classes are ranked by the Softmax output, else by the blob itself).
"""
import numpy as np

from .. import scratch
from ..errors import ArgumentError, NoSuchBlobError
from ..layers.conv import COLUMN_BUDGET
from . import targets as _targets

OUTPUTS = ("logit", "probability")
# Default memory for the batches of a gradient method (interpolated / noisy inputs): 2 GiB.
DEFAULT_MEMORY_BUDGET = 2 << 30
# Largest batch: the GEMMs gain nothing beyond it, while every batch's fresh arrays cost page
# faults in proportion to their size.
MAX_BATCH = 32


# ------------------------------------------------------------------------------ the pass
@scratch.reusing_memory
def reverse_walk(net, seeds, visit, keep=None, steps=None):
    """The one reverse pass over ``net.graph()`` after a forward pass, shared by the gradient
    and the relevance passes: ``seeds`` {blob version: signal (gradient or relevance)}; every
    layer, from the last down to the first, whose tops received a signal is handed to
    ``visit(step, top_signals)`` (a missing top's signal is zeros), which returns one signal per
    bottom (None: that bottom receives nothing). A version read by several layers sums their
    signals (implicit Split layers make that explicit, as in Caffe's ``Net::Backward``).

    Returns {blob version: signal} for the versions in ``keep`` (every one reached if ``keep``
    is None); the signals of versions not kept are dropped once the layer reading them has run,
    so the pass holds only its current frontier. ``steps``: the layers to walk (default the
    net's own; ``walked_steps`` gives the folded net's, which number the blobs alike)."""
    graph = net.graph()
    signals = {v: np.ascontiguousarray(d, dtype=np.float32) for v, d in seeds.items()}
    kept = {v: d for v, d in signals.items() if keep is None or v in keep}
    for step in reversed(graph.steps if steps is None else steps):
        if step.layer.is_input or not any(t in signals for t in step.tops):
            continue
        upper = [signals.pop(t) if t in signals else np.zeros(graph.shape(t), np.float32)
                 for t in step.tops]
        for b, d in zip(step.bottoms, visit(step, upper)):
            if d is None:
                continue
            signals[b] = signals[b] + d if b in signals else d
            if keep is None or b in keep:
                kept[b] = signals[b]
    return kept


def walked_steps(net, seeds):
    """The layers the gradient and relevance passes walk: those of ``net.folded()`` (BatchNorm /
    Scale / Bias merged into the linear layer below them), unless a seed sits on a blob the
    folding removes (e.g. the output of a convolution a BatchNorm normalises), where the net's
    own layers are walked."""
    folded = net.folded()
    steps = folded.graph().steps
    made = set(net.graph().inputs) | {t for step in steps for t in step.tops}
    return steps if all(v in made for v in seeds) else net.graph().steps


def backward(net, seeds, keep=None, steps=None):
    """Backward pass after ``net.forward``: ``seeds`` {blob version: gradient of that version};
    returns {blob version: gradient} for the versions in ``keep`` (every one reached if ``keep``
    is None). Each layer's gradient is its own ``backward`` (Caffe's ``Backward_cpu``);
    ``steps`` as for ``reverse_walk``."""
    graph = net.graph()

    def gradient(step, top_diffs):
        return step.layer.backward([graph.value(b) for b in step.bottoms],
                                   [graph.value(t) for t in step.tops], top_diffs)

    return reverse_walk(net, seeds, gradient, keep, steps)


def backward_by_name(net, diffs, blobs=None):
    """``Net.backward``: ``diffs`` {blob name: gradient} seeds the last version of each name (what
    ``net.blobs`` shows); returns {blob name: gradient} for the net inputs and the names in
    ``blobs`` ("all" for every blob). A name rewritten by in-place layers reports the gradient
    at the output of the layer that produced it, as pycaffe's ``blob.diff`` after ``backward``."""
    graph = net.graph()
    seeds = {}
    for name, d in diffs.items():
        v = graph.latest(name)
        d = np.asarray(d, dtype=np.float32)
        if d.shape != tuple(graph.shape(v)):
            raise ArgumentError("gradient for blob '%s' has shape %s, the blob has %s"
                             % (name, d.shape, tuple(graph.shape(v))))
        seeds[v] = d
    if blobs == "all":
        keep = None
    else:
        wanted = set(net.inputs) | set(blobs or ())
        unknown = sorted(name for name in wanted if not graph.has_blob(name))
        if unknown:
            raise NoSuchBlobError("no blob named %s" % ", ".join(unknown))
        keep = {v for name in wanted for v in graph.versions(name)}
    got = backward(net, seeds, keep)
    out = {}
    for v in sorted(got):  # lowest version of a name first: the producer's output
        out.setdefault(graph.name(v), got[v])
    for name in net.inputs:
        if name not in out:
            out[name] = np.zeros(graph.shape(graph.latest(name)), np.float32)
    return out


# ------------------------------------------------------------------- the explained output
def output_blob(net, output="logit"):
    """Blob version of the explained output (see the module docstring)."""
    graph = net.graph()
    softmax = [step for step in graph.steps if step.layer.type == "Softmax"]
    if output in OUTPUTS:
        if softmax:
            # the Softmax producing a net output if there is one, else the last one
            final = [s for s in softmax if graph.name(s.tops[0]) in net.outputs]
            step = (final or softmax)[-1]
            return step.bottoms[0] if output == "logit" else step.tops[0]
        if output == "probability":
            raise ArgumentError("output='probability': the network has no Softmax layer")
        if len(net.outputs) != 1:
            raise ArgumentError("the network has outputs %s and no Softmax; name the explained blob "
                             "with output=<blob name>" % net.outputs)
        return graph.outputs[0]
    if isinstance(output, str) and graph.has_blob(output):
        return graph.latest(output)
    raise ArgumentError("output must be 'logit', 'probability' or a blob name, got %r" % (output,))


def explained_classes(net, target, output_id):
    """Per image the explained classes, after a forward pass (ranked as ``Net.relevance`` ranks)."""
    # ties of the softmax outputs (underflow to 0) are ordered by the output blob, as LRP does
    graph = net.graph()
    return _targets.resolve(target, graph.value(_targets.ranking_blob(net, output_id)),
                            tie_break=graph.value(output_id))


def _selected(net, output_id, classes):
    """F per image (float64 sum of the output at its classes) and the seed (1 at those entries)."""
    y = net.graph().value(output_id)
    flat = y.reshape(y.shape[0], -1)
    seed = np.zeros(flat.shape, np.float32)
    for n, per in enumerate(classes):
        np.add.at(seed[n], per, np.float32(1))  # a class listed twice counts twice in the sum
    f = (flat.astype(np.float64) * seed).sum(axis=1)
    return f, seed.reshape(y.shape)


def input_gradient(net, x, output_id, classes=None, target="top1"):
    """Forward ``x`` (float32 (N, C, H, W)) and return (dF/dx float32, F float64 (N,), classes):
    the gradient for ``classes`` (per image), or for the classes ``target`` picks at ``x``."""
    net.forward(x)
    if classes is None:
        classes = explained_classes(net, target, output_id)
    f, seed = _selected(net, output_id, classes)
    input_id = net.graph().inputs[0]
    seeds = {output_id: seed}
    grad = backward(net, seeds, keep={input_id}, steps=walked_steps(net, seeds)).get(input_id)
    if grad is None:  # the output does not depend on the input
        grad = np.zeros(x.shape, np.float32)
    return grad, f, classes


def output_values(net, x, output_id, classes=None, target="top1"):
    """(F float64 (N,), classes) from a forward pass of ``x``."""
    net.forward(x)
    if classes is None:
        classes = explained_classes(net, target, output_id)
    return _selected(net, output_id, classes)[0], classes


targets_for = _targets.per_image


def single_input(net, x):
    """``x`` as float32 C-contiguous (N, C, H, W) for a network with one input."""
    if len(net.inputs) != 1:
        raise ArgumentError("gradient methods explain networks with one input; this one has %s"
                         % net.inputs)
    x = net.check_inputs(x)[0]
    if x.ndim != 4:
        raise ArgumentError("the input must be (N, C, H, W), got shape %s" % (x.shape,))
    return x


# ------------------------------------------------------------------------------ batching
def parse_memory(budget):
    """Bytes from an int or a string such as "2G", "512M"."""
    if budget is None:
        return DEFAULT_MEMORY_BUDGET
    if isinstance(budget, str):
        text = budget.strip().upper().rstrip("IB")
        units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
        factor = units.get(text[-1:], 1)
        try:
            return int(float(text[:-1] if text[-1:] in units else text) * factor)
        except ValueError:
            raise ArgumentError("memory_budget must be bytes or a size like '2G', got %r"
                             % budget) from None
    return int(budget)


def batch_size(net, image_shape, memory_budget=None):
    """How many inputs of ``image_shape`` (C, H, W) one forward + backward may take at once so
    that it stays within ``memory_budget`` bytes: every blob version of the forward, as much
    again for the gradients and the layers' scratch, plus the im2col column matrix (bounded by
    the convolution's own chunking); at most ``MAX_BATCH``."""
    budget = parse_memory(memory_budget)
    graph = net.graph()
    shape = graph.shape(graph.inputs[0])
    if shape is None or tuple(shape[1:]) != tuple(image_shape):
        net.reshape([(1,) + tuple(image_shape)])
    shapes = [graph.shape(v) for v in range(len(graph))]
    per_image = sum(int(np.prod(s[1:], dtype=np.int64)) for s in shapes if s) * 4
    return int(min(MAX_BATCH, max(1, (budget - 2 * COLUMN_BUDGET) // (2 * per_image))))
