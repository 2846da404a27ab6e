"""Canonizing a net before any rule runs: BatchNorm / Scale / Bias layers applied right after a
Convolution or InnerProduct are merged into it (``Net.folded``).

LRP rules are defined for linear maps followed by a non-linearity; a BatchNorm between a
convolution and its ReLU is an affine map of the convolution's output, so the pair is one linear
map with folded weights, and the rules explain the model as its folded equivalent (zennit calls
this rewrite a canonizer, ``zennit/canonizers.py``). The gradient and relevance passes walk the
folded layers; ``net.backward`` keeps the original layers (every blob's gradient, as pycaffe).

Folding, per output channel k of the linear layer (W_k its row, b_k its bias):
    y = a_k (W_k x + b_k) + c_k = (a_k W_k) x + (a_k b_k + c_k),
composed along the chain (BatchNorm: a = 1/sqrt(var + eps), c = -mean a; Scale: its scale and
bias; Bias: a = 1), in float32.
"""
import copy

import numpy as np

from .errors import ArgumentError

AFFINE = ("BatchNorm", "Scale", "Bias")
LINEAR = ("Convolution", "InnerProduct")


def affine_chains(graph):
    """{position of a linear layer in ``graph.steps``: [positions of the BatchNorm / Scale / Bias
    layers applied right after it]}.

    A chain continues while the blob has exactly one consumer (fan-out goes through Split layers)
    and that consumer maps each channel of axis 1 affinely with its own parameters."""
    steps = graph.steps
    consumers = {}
    for j, step in enumerate(steps):
        for b in step.bottoms:
            consumers.setdefault(b, []).append(j)
    chains = {}
    for i, step in enumerate(steps):
        if step.layer.type not in LINEAR or len(step.tops) != 1:
            continue
        top, chain = step.tops[0], []
        while len(consumers.get(top, ())) == 1:
            j = consumers[top][0]
            nxt = steps[j].layer
            shape = graph.shape(top)
            if shape is None:
                raise ArgumentError("folding needs the blob shapes: run forward first or declare "
                                    "the input shapes")
            if nxt.type not in AFFINE or len(steps[j].bottoms) != 1 or len(shape) < 2 or \
                    nxt.channel_affine(shape[1]) is None:
                break
            chain.append(j)
            top = steps[j].tops[0]
        if chain:
            chains[i] = chain
    return chains


def weight_sources(graph, chains):
    """The weight arrays a folding is made from (to tell when it is out of date)."""
    return tuple(w for i, chain in sorted(chains.items())
                 for j in [i] + chain for w in graph.steps[j].layer.blobs)


def folded_layer(layer, affine):
    """A copy of linear ``layer`` with the affine layers ``affine`` (in order) folded into its
    weights and bias; ``folded_from`` names them. The original is not changed."""
    W = layer.weight_matrix() if layer.type == "InnerProduct" else layer.blobs[0]
    o = W.shape[0]
    a = np.ones(o, np.float32)
    c = np.asarray(layer.blobs[1], np.float32).copy() if layer.bias_term else \
        np.zeros(o, np.float32)
    for aff in affine:
        a_k, c_k = aff.channel_affine(o)
        a, c = a_k * a, a_k * c + c_k
    Wf = (np.asarray(W, np.float32).reshape(o, -1) * a[:, None]).reshape(W.shape)
    new = copy.copy(layer)
    new.__dict__.pop("_lrp_cache", None)      # weight parts of the original's weights
    new._blobs = [np.ascontiguousarray(Wf, dtype=np.float32), c.astype(np.float32)]
    new._param_shapes = [tuple(b.shape) for b in new._blobs]
    new.bias_term = True
    if layer.type == "InnerProduct":
        new.transpose = False                 # Wf is (num_output, K)
    new.folded_from = [aff.name for aff in affine]
    return new
