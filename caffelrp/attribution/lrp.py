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

Targets (``target``): "top5" (the original's class field -2: min(5, K) best classes together),
"top1" (any other negative field), an int class index, or a sequence of class indices (one explanation
of their sum; the same for every image) or a list of such sequences (one per image). Classes are
ranked by the softmax output as the demonstrator does (by the logits if the net has no Softmax).
"""
import numpy as np

from ..composites import behaviour, rule_for, supported_formulas
from ..errors import UnsupportedLayerError
from ..kernels.lrn import lrn_across_backward, lrn_within_backward
from ..kernels.pooling import ave_pool_backward, max_pool_backward
from ..layers.pooling import MAX
from ..threads import threads_for

PASS_THROUGH = {"Dropout"}

# debugging aid: if set, called as _trace(layer_index, {bottom blob id: relevance}) after each layer
_trace = None


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
    raise ValueError("start must be 'highest-ip', 'below-softmax' or a layer index in [0, %d), "
                     "got %r" % (len(types), start))


def _ranking_scores(net, injection_top):
    softmax = [i for i, layer in enumerate(net._layers) if layer.type == "Softmax"]
    if softmax:
        return net._values[net._top_ids[softmax[0]][0]]
    return net._values[injection_top]


def _targets(target, scores):
    """Per image, the list of explained class indices."""
    n = scores.shape[0]
    flat = scores.reshape(n, -1)
    k = flat.shape[1]
    if isinstance(target, str):
        if target not in ("top5", "top1"):
            raise ValueError("target must be 'top5', 'top1', a class index or a list of them, "
                             "got %r" % target)
        m = min(5, k) if target == "top5" else 1
        order = np.argsort(-flat.astype(np.float64), axis=1, kind="stable")
        return [list(order[i, :m]) for i in range(n)]
    if isinstance(target, (int, np.integer)):
        classes = [[int(target)]] * n
    else:
        target = list(target)
        if target and all(isinstance(t, (int, np.integer)) for t in target):
            classes = [[int(t) for t in target]] * n
        else:
            classes = [[int(t) for t in per] for per in target]
            if len(classes) != n:
                raise ValueError("%d target lists for %d images" % (len(classes), n))
    for per in classes:
        for c in per:
            if not 0 <= c < k:
                raise ValueError("class index %d outside [0, %d)" % (c, k))
    return classes


# ------------------------------------------------------------------------- layer rules
def _pool_geometry(layer, x):
    (kh, kw), (oh, ow) = layer.window(*x.shape[2:])
    return kh, kw, layer.pad[0], layer.pad[1], layer.stride[0], layer.stride[1], oh, ow


def _max_pool(layer, x, r):
    out = np.empty_like(x)
    max_pool_backward(np.ascontiguousarray(r, dtype=np.float32), layer.argmax, out,
                      threads_for(out.size))
    return out


def _ave_pool(layer, x, r):
    kh, kw, ph, pw, sh, sw, oh, ow = _pool_geometry(layer, x)
    n, c, h, w = x.shape
    # zero padding around the image: padded cells add nothing to the window sums or to R
    ht = max((oh - 1) * sh + kh, h + ph)
    wt = max((ow - 1) * sw + kw, w + pw)
    xp = np.zeros((n, c, ht, wt), dtype=np.float32)
    xp[:, :, ph:ph + h, pw:pw + w] = x
    views = [(slice(u, u + (oh - 1) * sh + 1, sh), slice(v, v + (ow - 1) * sw + 1, sw))
             for u in range(kh) for v in range(kw)]
    s = np.zeros((n, c, oh, ow), dtype=np.float32)
    for hs, ws in views:
        s += xp[:, :, hs, ws]
    # |S| >= 1e-6: share x_i / S_j of R_j; else the original adds x_i itself (spec 2.3)
    big = np.abs(s) >= np.float32(1e-6)
    ratio = np.where(big, r / np.where(big, s, 1), np.float32(1)).astype(np.float32)
    rp = np.zeros_like(xp)
    for hs, ws in views:
        rp[:, :, hs, ws] += xp[:, :, hs, ws] * ratio
    return np.ascontiguousarray(rp[:, :, ph:ph + h, pw:pw + w])


def _lrn(layer, x, r):
    """lrn_backward_type 1 (spec 2.3), ACROSS_CHANNELS only."""
    if not layer.across_channels:
        raise UnsupportedLayerError("LRN layer '%s': the original's relevance rule (type 1) "
                                    "exists for ACROSS_CHANNELS only" % layer.name)
    n, p = layer.size, (layer.size - 1) // 2
    alpha, beta, k = np.float32(layer.alpha), np.float32(layer.beta), np.float32(layer.k)
    x = x.astype(np.float32)
    scale = layer.scale
    own = r * x * np.power(k + (alpha / n) * x * x, -beta)
    t = x * np.power(scale, -beta - 1) * r              # x_c' s_c'^(-beta-1) R_c'
    c = x.shape[1]
    tp = np.zeros((x.shape[0], c + 2 * p) + x.shape[2:], dtype=np.float64)
    tp[:, p:p + c] = t
    window = np.zeros(t.shape, dtype=np.float64)
    for d in range(2 * p + 1):
        window += tp[:, d:d + c]
    window -= t                                           # c' != c
    cross = np.float32(2 * layer.alpha * layer.beta / n) * x * x * window
    return (own - cross).astype(np.float32)


def _ave_pool_gradient(layer, x, r):
    kh, kw, ph, pw, sh, sw, oh, ow = _pool_geometry(layer, x)
    out = np.empty_like(x, dtype=np.float32)
    ave_pool_backward(np.ascontiguousarray(r, dtype=np.float32), kh, kw, ph, pw, sh, sw, out,
                      threads_for(out.size))
    return out


def _lrn_gradient(layer, x, y, r):
    out = np.empty_like(x, dtype=np.float32)
    fn = lrn_across_backward if layer.across_channels else lrn_within_backward
    fn(np.ascontiguousarray(x, dtype=np.float32), np.ascontiguousarray(y, dtype=np.float32),
       layer.scale, np.ascontiguousarray(r, dtype=np.float32), layer.size, layer.alpha,
       layer.beta, out, threads_for(out.size))
    return out


def _relu(mode, layer, x, r):
    if mode == "identity":
        return r
    if mode == "deconv":
        return np.maximum(r, 0)
    if mode == "guided":
        return np.where(x > 0, np.maximum(r, 0), np.float32(0)).astype(np.float32)
    if mode == "gradient":
        slope = np.float32(layer.negative_slope)
        return np.where(x > 0, r, r * slope).astype(np.float32)
    raise ValueError("unknown ReLU behaviour %r" % mode)


def _linear(net, i, layer, x, r, rule):
    if layer.type == "InnerProduct":
        m = int(np.prod(x.shape[:layer.axis]))
        a = x.reshape(m, layer.k)
        b = layer.blobs[1] if layer.bias_term else None
        out = rule.dense(a, layer.weight_matrix(), b, r.reshape(m, -1))
        return out.reshape(x.shape)
    g = layer.geometry
    b = layer.blobs[1] if layer.bias_term else None
    return rule.conv(x, layer.blobs[0], b, r, g.args(), layer.group)


# ---------------------------------------------------------------------------- the pass
def relevance(net, x, rule=100, eps=1.0, beta=1.0, switch_layer=0, target="top5",
              start="highest-ip", return_classes=False):
    """Relevance of the net input for ``x`` (float32 (N, C, H, W), BGR as fed to the net).

    ``rule``: the original's formula number (see ``composites.COMPOSITES``); ``eps`` its
    epsstab; ``beta`` its alphabeta_beta (alpha = 1 + beta); ``switch_layer`` the aux index
    (used by 102, 104, 114, 54, 56, 58, 60; must be >= 0 for them). With ``return_classes`` also the explained classes per image.
    """
    if rule not in supported_formulas():
        raise ValueError("formula type %r is not supported; supported: %s"
                         % (rule, supported_formulas()))
    relu_mode, pool_mode = behaviour(rule, "ReLU"), behaviour(rule, "Pooling")
    lrn_mode, output_mode = behaviour(rule, "LRN"), behaviour(rule, "output")
    net.forward(x)
    values = net._values
    top = _injection_layer(net, start)
    inj_top = net._top_ids[top][0]
    logits = values[inj_top]
    classes = _targets(target, _ranking_scores(net, inj_top))

    rel = {}
    for tid in net._top_ids[top]:
        rel[tid] = np.zeros_like(values[tid])
    flat_r = rel[inj_top].reshape(logits.shape[0], -1)
    flat_l = logits.reshape(logits.shape[0], -1)
    for nidx, per in enumerate(classes):
        for c in per:
            flat_r[nidx, c] = flat_l[nidx, c]

    for i in range(top, -1, -1):
        layer = net._layers[i]
        if layer.is_input:
            continue
        tops, bottoms = net._top_ids[i], net._bottom_ids[i]
        if not any(t in rel for t in tops):
            continue  # nothing reached this layer (e.g. a Softmax above the injection)
        r_tops = [rel[t] if t in rel else np.zeros_like(values[t]) for t in tops]
        t = layer.type
        if t in PASS_THROUGH or (t == "Split" and len(tops) == 1) or (
                t == "Concat" and len(bottoms) == 1):
            rel[bottoms[0]] = r_tops[0]
        elif t == "Split":
            total = r_tops[0].copy()
            for extra in r_tops[1:]:
                total += extra
            rel[bottoms[0]] = total
        elif t == "Concat":
            offset = 0
            for b in bottoms:
                size = values[b].shape[layer.axis]
                index = [slice(None)] * values[b].ndim
                index[layer.axis] = slice(offset, offset + size)
                rel[b] = np.ascontiguousarray(r_tops[0][tuple(index)])
                offset += size
        elif t in ("Convolution", "InnerProduct"):
            r = rule_for(rule, t, i, eps=eps, beta=beta, switch_layer=switch_layer)
            for b, rt in zip(bottoms, r_tops):
                rel[b] = _linear(net, i, layer, values[b], rt, r)
        elif t == "ReLU":
            rel[bottoms[0]] = _relu(relu_mode, layer, values[bottoms[0]], r_tops[0])
        elif t == "Pooling":
            xb = values[bottoms[0]]
            if layer.method == MAX:
                fn = _max_pool
            else:
                fn = _ave_pool_gradient if pool_mode == "gradient" else _ave_pool
            rel[bottoms[0]] = fn(layer, xb, r_tops[0])
        elif t == "LRN":
            if lrn_mode == "gradient":
                rel[bottoms[0]] = _lrn_gradient(layer, values[bottoms[0]], values[tops[0]],
                                                r_tops[0])
            else:
                rel[bottoms[0]] = _lrn(layer, values[bottoms[0]], r_tops[0])
        else:
            raise UnsupportedLayerError("layer %d '%s' of type %s has no relevance rule in the "
                                        "original (spec 2.1)" % (i, layer.name, t))
        if _trace is not None:
            _trace(i, {b: rel[b] for b in bottoms})
    input_id = net._inputs[0][1]
    out = rel.get(input_id)
    if out is None:
        out = np.zeros_like(values[input_id])
    if output_mode == "channel_norm":
        norm = np.sqrt(np.square(out.astype(np.float64)).sum(axis=1, keepdims=True))
        out = np.broadcast_to(norm, out.shape)
    elif output_mode is not None:
        raise ValueError("unknown output behaviour %r" % output_mode)
    out = np.ascontiguousarray(out, dtype=np.float32)
    return (out, classes) if return_classes else out
