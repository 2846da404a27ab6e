"""Layer-wise Relevance Propagation as the LRP Toolbox's Caffe release computes it.

``relevance(net, x, rule=100, eps=1.0, beta=1.0, switch_layer=0, target="top5",
start="highest-ip")`` runs the forward pass, injects the raw output value (logit) of every
explained class at the top of the injection layer (spec 1.5), and walks the layers backwards in
descending Caffe index down to layer 0 (spec 3):

* Convolution / InnerProduct: the rule that ``composites.COMPOSITES`` names for the formula
  and the layer's Caffe index;
* ReLU: as the table says ("identity" for the LRP types, max(R, 0) for 26, max(R, 0) where the
  input > 0 for 166, the gradient for 11/99); Dropout: unchanged;
* Pooling MAX: all relevance of a window to the forward's argmax (first maximum);
* Pooling AVE: proportional to the activations, x_i R_j / S_j with S_j the window sum clipped to
  the image; where |S_j| < 1e-6 the original adds x_i itself (spec 2.3, reproduced); for the
  gradient types (11, 99) Caffe's adjoint (1/pool_size);
* LRN: lrn_backward_type 1 (not conservative, spec 2.3); the true LRN gradient for 11 / 99;
* Split: sum of the tops; Concat: slices.

Every gradient-type behaviour (the table's "gradient"; Split and Concat always) is the layer's own
``backward``, not a second copy here.

Beyond the original: BatchNorm / Scale / Bias layers right after a Convolution or InnerProduct are
folded into it (the rule sees the folded weights and forms z from them); standing alone they
take the convolution rule as per-channel affine maps (their gradient for the gradient types);
Eltwise SUM is a linear map with unit (coeff) weights and takes the table's "Eltwise" rule
(epsilon with the pass's eps for the LRP types, so a join that nearly cancels cannot create
relevance; its gradient for 11 / 99 / 26 / 166); Eltwise MAX gives all to the first maximal
bottom.

Targets (``target``): see ``caffelrp.attribution.targets`` -- "top5" (the original's class field
-2: min(5, K) best classes together), "top1", a class index, one class per image, or one list of
classes per image (their sum). Classes are ranked by the softmax output as the demonstrator does
(by the logits if the net has no Softmax).
"""
from collections import namedtuple

import numpy as np

from ..composites import GRADIENT, Settings, behaviour, resolve, rule_for
from ..errors import UnsupportedLayerError
from ..kernels.relevance import ave_pool_relevance, lrn_relevance
from ..layers.pooling import MAX
from ..layers.routing import EltwiseOp
from ..rules import Backprojection
from .targets import ranking_blob
from .targets import resolve as resolve_targets
from ..threads import threads_for

PASS_THROUGH = {"Dropout"}


def _injection_layer(net, start):
    types = [layer.type for layer in net._layers]
    if start == "highest-ip":
        found = [i for i, t in enumerate(types) if t == "InnerProduct"]
        if not found:
            raise ValueError("start='highest-ip': the network has no InnerProduct layer")
        return found[-1]
    if start == "below-softmax":
        found = [i for i, t in enumerate(types) if t == "Softmax"]
        if not found:
            raise ValueError("start='below-softmax': the network has no Softmax layer")
        return found[0] - 1
    if isinstance(start, (int, np.integer)) and 0 <= start < len(types):
        return int(start)
    if isinstance(start, str):
        for i, layer in enumerate(net._layers):
            if layer.name == start:
                return i
    raise ValueError("start must be 'highest-ip', 'below-softmax', a layer name or a layer index "
                     "in [0, %d), got %r" % (len(types), start))


def _ranking_scores(net, injection_top):
    """The values that rank the classes: the net's ranking Softmax when it ranks the injection
    layer's outputs (same shape), else the injected values themselves."""
    scores = net._values[ranking_blob(net, injection_top)]
    if scores.shape != net._values[injection_top].shape:
        return net._values[injection_top]
    return scores


# ------------------------------------------------------------------------- layer rules
def _pool_geometry(layer, x):
    (kh, kw), (oh, ow) = layer.window(*x.shape[2:])
    return kh, kw, layer.pad[0], layer.pad[1], layer.stride[0], layer.stride[1], oh, ow


def _ave_pool(layer, x, r):
    kh, kw, ph, pw, sh, sw, oh, ow = _pool_geometry(layer, x)
    r = np.ascontiguousarray(r, dtype=np.float32)
    if r.shape != x.shape[:2] + (oh, ow):
        raise ValueError("Pooling layer '%s': relevance of shape %s for an output of shape %s"
                         % (layer.name, r.shape, x.shape[:2] + (oh, ow)))
    # |S| >= 1e-6: share x_i / S_j of R_j; else the original adds x_i itself (spec 2.3)
    out = np.empty(x.shape, dtype=np.float32)
    ave_pool_relevance(np.ascontiguousarray(x, dtype=np.float32), r, kh, kw, ph, pw, sh, sw,
                       out, threads_for(out.size))
    return out


def _lrn(layer, x, r):
    """lrn_backward_type 1 (spec 2.3), ACROSS_CHANNELS only."""
    if not layer.across_channels:
        raise UnsupportedLayerError("LRN layer '%s': the original's relevance rule (type 1) "
                                    "exists for ACROSS_CHANNELS only" % layer.name)
    out = np.empty(x.shape, dtype=np.float32)
    # scale: the forward's k + alpha/n * window sum of x^2
    lrn_relevance(np.ascontiguousarray(x, dtype=np.float32),
                  np.ascontiguousarray(layer.scale, dtype=np.float32),
                  np.ascontiguousarray(r, dtype=np.float32), layer.size, layer.alpha,
                  layer.beta, layer.k, out, threads_for(out.size))
    return out


def _relu(mode, x, r):
    """The ReLU's LRP behaviours ("gradient" is the layer's own backward)."""
    if mode == "identity":
        return r
    if mode == "deconv":
        return np.maximum(r, 0)
    if mode == "guided":
        return np.where(x > 0, np.maximum(r, 0), np.float32(0)).astype(np.float32)
    raise ValueError("unknown ReLU behaviour %r" % mode)


# ------------------------------------------------------------------ affine layers, folding
AFFINE = ("BatchNorm", "Scale", "Bias")


def _channel_affine(layer, channels):
    """(a, c), float32 (channels,), when ``layer`` (BatchNorm / Scale / Bias with its own
    parameters) maps channel k of axis 1 as y = a_k x + c_k; else None."""
    if layer.type == "BatchNorm":
        mean, inv_std = layer.mean_and_inv_std()
        if mean.size != channels:
            return None
        return inv_std, (-mean * inv_std).astype(np.float32)
    if len(layer.param.bottom) != 1 or getattr(layer, "axis", None) != 1:
        return None
    one = np.ones(channels, np.float32)
    if layer.type == "Scale":
        scale = layer.blobs[0].reshape(-1)
        bias = layer.blobs[1].reshape(-1) if layer.bias_term else np.zeros(1, np.float32)
        if scale.size not in (1, channels) or bias.size not in (1, channels):
            return None
        return (scale * one).astype(np.float32), (bias * one).astype(np.float32)
    bias = layer.blobs[0].reshape(-1)
    if bias.size not in (1, channels):
        return None
    return one, (bias * one).astype(np.float32)


def _affine_chains(net):
    """{linear layer index: [indices of the BatchNorm/Scale/Bias layers applied right after it]}.

    A chain continues while the blob has exactly one consumer (fan-out goes through Split layers)
    and that consumer is a per-channel affine layer; LRP then treats the linear layer and its chain
    as one linear layer with folded weights, so the model explains like its folded equivalent."""
    consumers = {}
    for j, bottoms in enumerate(net._bottom_ids):
        for b in bottoms:
            consumers.setdefault(b, []).append(j)
    chains = {}
    for i, layer in enumerate(net._layers):
        if layer.type not in ("Convolution", "InnerProduct") or len(net._top_ids[i]) != 1:
            continue
        top, chain = net._top_ids[i][0], []
        while len(consumers.get(top, ())) == 1:
            j = consumers[top][0]
            nxt = net._layers[j]
            shape = net._blob_shapes[top]
            if nxt.type not in AFFINE or len(net._bottom_ids[j]) != 1 or len(shape) < 2 or \
                    _channel_affine(nxt, shape[1]) is None:
                break
            chain.append(j)
            top = net._top_ids[j][0]
        if chain:
            chains[i] = chain
    return chains


def _weight_cache(layer, sources):
    """A dict on ``layer`` for weight parts and folded weights, reset when any of ``sources``
    (the weight arrays it was made from) is replaced, e.g. by ``Net.load_weights``."""
    cache = getattr(layer, "_lrp_cache", None)
    if cache is None or len(cache["sources"]) != len(sources) or any(
            a is not b for a, b in zip(cache["sources"], sources)):
        cache = {"sources": tuple(sources)}
        layer._lrp_cache = cache
    return cache


def _linear_parameters(net, i, chain):
    """(W, b or None, cache) of linear layer i, with the affine layers of ``chain`` folded in:
    W' = a W (per output row), b' = a b + c (a, c composed along the chain)."""
    layer = net._layers[i]
    W = layer.weight_matrix() if layer.type == "InnerProduct" else layer.blobs[0]
    b = layer.blobs[1] if layer.bias_term else None
    if not chain:
        return W, b, _weight_cache(layer, layer.blobs)
    affine = [net._layers[j] for j in chain]
    cache = _weight_cache(layer, list(layer.blobs) + [w for a in affine for w in a.blobs])
    if "folded" not in cache:
        o = W.shape[0]
        a = np.ones(o, np.float32)
        c = np.zeros(o, np.float32) if b is None else np.asarray(b, np.float32).copy()
        for aff in affine:
            a_k, c_k = _channel_affine(aff, o)
            a, c = a_k * a, a_k * c + c_k
        Wf = (np.asarray(W, np.float32).reshape(o, -1) * a[:, None]).reshape(W.shape)
        cache["folded"] = (np.ascontiguousarray(Wf, dtype=np.float32), c.astype(np.float32))
    Wf, bf = cache["folded"]
    return Wf, bf, cache


def _standalone_affine(layer, x):
    """(a, c) broadcastable against x for a BatchNorm / Scale / Bias layer that is not folded."""
    if layer.type == "BatchNorm":
        mean, inv_std = layer.mean_and_inv_std()
        shape = (1, -1) + (1,) * (x.ndim - 2)
        return inv_std.reshape(shape), (-mean * inv_std).astype(np.float32).reshape(shape)
    if len(layer.param.bottom) != 1:
        raise UnsupportedLayerError("layer %d '%s' (%s) takes its factors from a second bottom "
                                    "blob; caffelrp has no relevance rule for that"
                                    % (layer.index, layer.name, layer.type))
    if layer.type == "Scale":
        return layer.factors([x])
    return np.float32(1), layer.broadcast(x.shape, layer.blobs[0], layer.axis)


def _eltwise_sum(layer, xs, y, r, rule):
    """Eltwise SUM as the linear map y = sum_k c_k x_k with unit (coeff) weights, one map per
    element: the rule sees every element as one "image" of an inner product with K = #bottoms."""
    stacked = np.stack([x.reshape(-1) for x in xs], axis=1)            # (P, K)
    weights = np.asarray(layer.coeff, np.float32).reshape(1, -1)       # (1, K)
    out = rule.dense(stacked, weights, None, r.reshape(-1, 1), z=y.reshape(-1, 1))
    return [np.ascontiguousarray(out[:, k]).reshape(xs[k].shape) for k in range(len(xs))]


def _eltwise_max(layer, xs, y, r):
    """Eltwise MAX: all relevance to the first maximal bottom (like max pooling)."""
    taken = np.zeros(y.shape, dtype=bool)
    out = []
    for x in xs:
        mine = (x == y) & ~taken
        taken |= mine
        out.append(np.where(mine, r, np.float32(0)).astype(np.float32))
    return out


def _linear(layer, x, r, rule, W, b, z, cache):
    if layer.type == "InnerProduct":
        m = int(np.prod(x.shape[:layer.axis]))
        out = rule.dense(x.reshape(m, layer.k), W, b, r.reshape(m, -1),
                         z=None if z is None else z.reshape(m, -1),   # None: a folded chain
                         cache=cache, input_shape=x.shape)
        return out.reshape(x.shape)
    return rule.conv(x, W, b, r, layer.geometry.args(), layer.group, z=z, cache=cache)


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
        raise ValueError("mean must be one value per channel (%d) or an image %s, got shape %s"
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


def _from_backward(layer, rel, values, bottoms, tops, r_tops):
    """The gradient-type behaviour: the layer's own ``backward`` carries the relevance down."""
    diffs = layer.backward([values[b] for b in bottoms], [values[t] for t in tops], r_tops)
    for b, d in zip(bottoms, diffs):
        if d is not None:
            rel[b] = d


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
    relu_mode, pool_mode = behaviour(key, "ReLU"), behaviour(key, "Pooling")
    lrn_mode, output_mode = behaviour(key, "LRN"), behaviour(key, "output")
    net.forward(x)
    values = net._values
    input_id = net._inputs[0][1]
    settings = Settings(eps=eps, beta=beta, switch_layer=switch_layer, gamma=gamma,
                        bounds=_bounds(values[input_id], mean, bounds))
    top = _injection_layer(net, start)
    inj_top = net._top_ids[top][0]
    logits = values[inj_top]
    classes = resolve_targets(target, _ranking_scores(net, inj_top), tie_break=logits)

    rel = {}
    for tid in net._top_ids[top]:
        rel[tid] = np.zeros_like(values[tid])
    flat_r = rel[inj_top].reshape(logits.shape[0], -1)
    flat_l = logits.reshape(logits.shape[0], -1)
    for nidx, per in enumerate(classes):
        for c in per:
            flat_r[nidx, c] = flat_l[nidx, c]
    injected = flat_r.sum(axis=1, dtype=np.float64)

    chains = _affine_chains(net)
    folded = {j: i for i, chain in chains.items() for j in chain}
    ledger = []
    for i in range(top, -1, -1):
        layer = net._layers[i]
        if layer.is_input:
            continue
        tops, bottoms = net._top_ids[i], net._bottom_ids[i]
        if not any(t in rel for t in tops):
            continue  # nothing reached this layer (e.g. a Softmax above the injection)
        r_tops = [rel[t] if t in rel else np.zeros_like(values[t]) for t in tops]
        t = layer.type
        applied = t
        if t in PASS_THROUGH or (t == "Split" and len(tops) == 1) or (
                t == "Concat" and len(bottoms) == 1) or i in folded:
            rel[bottoms[0]] = r_tops[0]
            applied = "folded into layer %d" % folded[i] if i in folded else "identity"
        elif t in ("Split", "Concat"):
            _from_backward(layer, rel, values, bottoms, tops, r_tops)  # routing: its gradient
            applied = "gradient"
        elif t in ("Convolution", "InnerProduct"):
            first = input_id in bottoms
            r = rule_for(key, t, i, first=first, settings=settings)
            chain = chains.get(i, [])
            W, b, cache = _linear_parameters(net, i, chain)
            # a folded chain: z from the folded weights (None: the rule forms it), so that the
            # rule's z+ and z - z+ come from the same float32 weights as in the folded twin
            z = None if chain else values[tops[0]]
            rel[bottoms[0]] = _linear(layer, values[bottoms[0]], r_tops[0], r, W, b, z, cache)
            applied = repr(r) + (" (+%d folded)" % len(chain) if chain else "")
        elif t in AFFINE:
            r = rule_for(key, "Convolution", i, first=input_id in bottoms, settings=settings)
            if isinstance(r, Backprojection):       # the gradient types: the layer's gradient
                _from_backward(layer, rel, values, bottoms, tops, r_tops)
                applied = "gradient"
            else:
                xb = values[bottoms[0]]
                a, c = _standalone_affine(layer, xb)
                rel[bottoms[0]] = r.diagonal(xb, a, c, r_tops[0], values[tops[0]])
                applied = repr(r) + " (per channel)"
        elif t == "Eltwise":
            join = rule_for(key, "Eltwise", i, first=input_id in bottoms, settings=settings)
            xs, y = [values[b] for b in bottoms], values[tops[0]]
            if join == GRADIENT:
                _from_backward(layer, rel, values, bottoms, tops, r_tops)
                applied = "gradient"
            elif layer.operation == EltwiseOp.SUM:
                for b, rb in zip(bottoms, _eltwise_sum(layer, xs, y, r_tops[0], join)):
                    rel[b] = rb
                applied = repr(join) + " (join)"
            elif layer.operation == EltwiseOp.MAX:
                for b, rb in zip(bottoms, _eltwise_max(layer, xs, y, r_tops[0])):
                    rel[b] = rb
                applied = "winner"
            else:
                raise UnsupportedLayerError("layer %d '%s': Eltwise PROD has no relevance rule"
                                            % (layer.index, layer.name))
        elif t == "ReLU":
            if relu_mode == GRADIENT:
                _from_backward(layer, rel, values, bottoms, tops, r_tops)
            else:
                rel[bottoms[0]] = _relu(relu_mode, values[bottoms[0]], r_tops[0])
            applied = relu_mode
        elif t == "Pooling":
            if layer.method == MAX or pool_mode == GRADIENT:   # MAX: to the argmax either way
                _from_backward(layer, rel, values, bottoms, tops, r_tops)
            else:
                rel[bottoms[0]] = _ave_pool(layer, values[bottoms[0]], r_tops[0])
            applied = pool_mode
        elif t == "LRN":
            if lrn_mode == GRADIENT:
                _from_backward(layer, rel, values, bottoms, tops, r_tops)
            else:
                rel[bottoms[0]] = _lrn(layer, values[bottoms[0]], r_tops[0])
            applied = lrn_mode
        else:
            raise UnsupportedLayerError("layer %d '%s' of type %s has no relevance rule (the "
                                        "original has none either, spec 2.1)" % (i, layer.name, t))
        if record:
            ledger.append(LedgerRow(i, layer.name, t, applied, _per_image_sum(r_tops),
                                    _per_image_sum([rel[b] for b in bottoms])))
    out = rel.get(input_id)
    if out is None:
        out = np.zeros_like(values[input_id])
    if output_mode == "channel_norm":
        norm = np.sqrt(np.square(out.astype(np.float64)).sum(axis=1, keepdims=True))
        out = np.broadcast_to(norm, out.shape)
    elif output_mode is not None:
        raise ValueError("unknown output behaviour %r" % output_mode)
    out = np.ascontiguousarray(out, dtype=np.float32)
    blobs = {}
    if record:
        for bid in sorted(rel):   # lowest version of a name first: the producer's output
            blobs.setdefault(net._blob_names[bid], rel[bid])
        blobs[net._blob_names[input_id]] = out
    return RelevanceResult(out, classes, injected, blobs, ledger)
