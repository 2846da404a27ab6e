"""Layer-wise Relevance Propagation as the LRP Toolbox's Caffe release computes it.

``relevance(net, x, rule=100, eps=1.0, beta=1.0, switch_layer=0, target="top5",
start="highest-ip")`` runs the forward pass, injects the raw output value (logit) of every
explained class at the top of the injection layer (spec 1.5), and walks the layers backwards in
descending Caffe index down to layer 0 (spec 3). Each reached layer gets the rule
``composites.COMPOSITES`` gives its type (its ``rule_key``) at its Caffe index, and its own
``relevance`` (``caffelrp.layers``, next to its forward and backward) carries the relevance down;
every gradient-type behaviour is the layer's own ``backward``. The walk is the one the gradient
uses (``attribution.backward.reverse_walk``), over the layers of ``net.folded()`` (beyond the
original: BatchNorm / Scale / Bias right after a Convolution or InnerProduct are folded into it
before any rule runs).

Targets (``target``): see ``caffelrp.attribution.targets`` -- "top5" (the original's class field
-2: min(5, K) best classes together), "top1", a class index, one class per image, or one list of
classes per image (their sum). Classes are ranked by the softmax output as the demonstrator does
(by the logits if the net has no Softmax).
"""
from collections import namedtuple

import numpy as np

from ..composites import LayerPlace, Settings, behaviour, layer_rule, resolve
from ..errors import ArgumentError
from .backward import reverse_walk, walked_steps
from .targets import ranking_blob
from .targets import resolve as resolve_targets


def _injection_layer(net, start):
    steps = net.graph().steps
    types = [step.layer.type for step in steps]
    if start == "highest-ip":
        found = [i for i, t in enumerate(types) if t == "InnerProduct"]
        if not found:
            raise ArgumentError("start='highest-ip': the network has no InnerProduct layer")
        return found[-1]
    if start == "below-softmax":
        found = [i for i, t in enumerate(types) if t == "Softmax"]
        if not found:
            raise ArgumentError("start='below-softmax': the network has no Softmax layer")
        return found[0] - 1
    if isinstance(start, (int, np.integer)) and 0 <= start < len(types):
        return int(start)
    if isinstance(start, str):
        for i, step in enumerate(steps):
            if step.layer.name == start:
                return i
    raise ArgumentError("start must be 'highest-ip', 'below-softmax', a layer name or a layer index "
                     "in [0, %d), got %r" % (len(types), start))


def _ranking_scores(net, injection_top):
    """The values that rank the classes: the net's ranking Softmax when it ranks the injection
    layer's outputs (same shape), else the injected values themselves."""
    graph = net.graph()
    scores = graph.value(ranking_blob(net, injection_top))
    if scores.shape != graph.value(injection_top).shape:
        return graph.value(injection_top)
    return scores


def _bounds(x, mean, bounds):
    """(low, high) of the input for z^B: ``bounds`` as given, or 0 - mean .. 255 - mean."""
    if bounds is not None:
        low, high = bounds
        return np.asarray(low, np.float32), np.asarray(high, np.float32)
    if mean is None:
        return None
    m = np.asarray(mean, dtype=np.float32)
    c = x.shape[1]
    if m.ndim == 1 and m.size == c:
        m = m.reshape(1, c, 1, 1)
    elif m.ndim == 3 and m.shape == x.shape[1:]:
        m = m[None]
    elif m.ndim != 0:
        raise ArgumentError("mean must be one value per channel (%d) or an image %s, got shape %s"
                         % (c, tuple(x.shape[1:]), m.shape))
    return (np.float32(0) - m).astype(np.float32), (np.float32(255) - m).astype(np.float32)


# ---------------------------------------------------------------------------- the pass
LedgerRow = namedtuple("LedgerRow", "index name type rule relevance_in relevance_out")


class RelevanceResult:
    """One relevance pass, in full.

    ``input``: float32 (N, C, H, W), the relevance of the network input (what ``relevance``
    returns); ``classes``: per image, the explained classes; ``injected``: (N,) the relevance put
    in at the top (sum of the explained logits); ``blobs``: {blob name: relevance} for every blob
    the pass reached (for a blob rewritten by in-place layers, the relevance at the output of the
    layer that produced it); ``ledger``: per layer in the order of the pass, a ``LedgerRow`` with
    the per-image sums of relevance arriving at its tops and leaving through its bottoms, so that
    absorption (bias, stabiliser) and creation (LRN, flat in convolutions) can be located.
    """

    def __init__(self, input, classes, injected, blobs, ledger):
        self.input, self.classes, self.injected = input, classes, injected
        self.blobs, self.ledger = blobs, ledger

    def ledger_text(self, image=0):
        """The ledger of one image as a table."""
        lines = ["%5s  %-28s %-13s %-34s %14s %14s %9s" % (
            "index", "layer", "type", "rule", "R in", "R out", "out/in")]
        for row in self.ledger:
            r_in, r_out = row.relevance_in[image], row.relevance_out[image]
            ratio = "%9.4f" % (r_out / r_in) if r_in != 0 else "%9s" % "-"
            lines.append("%5d  %-28s %-13s %-34s %14.6g %14.6g %s" % (
                row.index, row.name[:28], row.type, row.rule[:34], r_in, r_out, ratio))
        lines.append("injected %.6g, input total %.6g" % (
            self.injected[image], self.input[image].sum(dtype=np.float64)))
        return "\n".join(lines)


def _per_image_sum(arrays):
    total = None
    for a in arrays:
        s = a.reshape(a.shape[0], -1).sum(axis=1, dtype=np.float64)
        total = s if total is None else total + s
    return total


def relevance(net, x, rule=100, eps=1.0, beta=1.0, switch_layer=0, target="top5",
              start="highest-ip", return_classes=False, gamma=0.25, mean=None, bounds=None):
    """Relevance of the net input for ``x`` (float32 (N, C, H, W), as fed to the net).

    ``rule``: the original's formula number or a readable name (``composites.NAMES``,
    ``composites.COMPOSITES``); ``eps`` its epsstab; ``beta`` its alphabeta_beta (alpha = 1 +
    beta); ``switch_layer`` the aux index (used by 102, 104, 114, 54, 56, 58, 60; must be >= 0 for
    them); ``gamma`` the gamma rule's parameter; ``mean`` (the mean preprocessing subtracted, per
    channel or an image) or ``bounds`` = (low, high) for the z^B rule. With ``return_classes`` also
    the explained classes per image.
    """
    result = relevance_details(net, x, rule, eps, beta, switch_layer, target, start, gamma, mean,
                               bounds, record=False)
    return (result.input, result.classes) if return_classes else result.input


def relevance_details(net, x, rule=100, eps=1.0, beta=1.0, switch_layer=0, target="top5",
                      start="highest-ip", gamma=0.25, mean=None, bounds=None, record=True):
    """Like ``relevance``, returning a ``RelevanceResult`` with the relevance of every blob and the
    conservation ledger (``record=False`` skips both)."""
    key = resolve(rule)
    output_mode = behaviour(key, "output")
    net.forward(x)
    graph = net.graph()
    values = [graph.value(v) for v in range(len(graph))]
    input_id = graph.inputs[0]
    settings = Settings(eps=eps, beta=beta, switch_layer=switch_layer, gamma=gamma,
                        bounds=_bounds(values[input_id], mean, bounds))
    top = _injection_layer(net, start)
    inj_top = graph.steps[top].tops[0]
    logits = values[inj_top]
    classes = resolve_targets(target, _ranking_scores(net, inj_top), tie_break=logits)

    seeds = {tid: np.zeros_like(values[tid]) for tid in graph.steps[top].tops}
    flat_r = seeds[inj_top].reshape(logits.shape[0], -1)
    flat_l = logits.reshape(logits.shape[0], -1)
    for nidx, per in enumerate(classes):
        for c in per:
            flat_r[nidx, c] = flat_l[nidx, c]
    injected = flat_r.sum(axis=1, dtype=np.float64)

    ledger = []

    def visit(step, r_tops):
        i, layer, tops, bottoms = step.index, step.layer, step.tops, step.bottoms
        # the layer's own relevance, with the rule the composite gives its type
        rule = layer_rule(key, layer.rule_key, LayerPlace(i, input_id in bottoms), settings)
        r_bottoms = layer.relevance(rule, [values[b] for b in bottoms],
                                    [values[v] for v in tops], r_tops)
        if record:
            ledger.append(LedgerRow(i, layer.name, layer.type, layer.relevance_text(rule),
                                    _per_image_sum(r_tops),
                                    _per_image_sum([r for r in r_bottoms if r is not None])))
        return r_bottoms

    rel = reverse_walk(net, seeds, visit, keep=None if record else {input_id},
                       steps=walked_steps(net, seeds))
    out = rel.get(input_id)
    if out is None:
        out = np.zeros_like(values[input_id])
    if output_mode == "channel_norm":
        norm = np.sqrt(np.square(out.astype(np.float64)).sum(axis=1, keepdims=True))
        out = np.broadcast_to(norm, out.shape)
    elif output_mode is not None:
        raise ArgumentError("unknown output behaviour %r" % output_mode)
    out = np.ascontiguousarray(out, dtype=np.float32)
    blobs = {}
    if record:
        for bid in sorted(rel):   # lowest version of a name first: the producer's output
            blobs.setdefault(graph.name(bid), rel[bid])
        blobs[graph.name(input_id)] = out
    return RelevanceResult(out, classes, injected, blobs, ledger)
