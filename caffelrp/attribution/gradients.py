"""Gradient attributions: the gradient (saliency), gradient x input and SmoothGrad.

Every method returns ``(attr, info)``: ``attr`` float32 (N, C, H, W) in the input's space (the
preprocessed, mean-subtracted blob), ``info`` one dict per image (JSON-ready: "method",
"classes", "output", "F" = the explained output at x, and the method's own fields).

The explained output F and ``target`` follow ``caffelrp.attribution.backward``: the pre-softmax
score of the explained class(es) by default (``output="logit"``), the softmax probability with
``output="probability"``. The inputs go through the network in batches that fit
``memory_budget`` bytes (default 2 GiB; "512M" and the like are accepted).

The original's sensitivity map (relpropformulatype 99) is ``Net.relevance(x, rule=99)``: the
per-pixel channel norm of the logit times this gradient.
"""
import numpy as np

from ..errors import ArgumentError
from .targets import check as check_targets
from .backward import (batch_size, input_gradient, output_blob, output_values, single_input,
                       targets_for)


_check_targets = check_targets


def _gradients(net, x, target, output, memory_budget):
    """(dF/dx float32, F float64 (N,), classes per image) in batches."""
    x = single_input(net, x)
    _check_targets(target, x.shape[0])
    output_id = output_blob(net, output)
    step = batch_size(net, x.shape[1:], memory_budget)
    grad = np.empty(x.shape, np.float32)
    f = np.empty(x.shape[0], np.float64)
    classes = []
    for lo in range(0, x.shape[0], step):
        hi = min(lo + step, x.shape[0])
        grad[lo:hi], f[lo:hi], cls = input_gradient(net, x[lo:hi], output_id,
                                                    target=targets_for(target, lo, hi))
        classes += cls
    return x, grad, f, classes


def explained(net, x, target, output_id, step):
    """(F float64 (N,), classes per image) at ``x`` by forward passes in batches of ``step``."""
    f = np.empty(x.shape[0], np.float64)
    classes = []
    for lo in range(0, x.shape[0], step):
        hi = min(lo + step, x.shape[0])
        f[lo:hi], cls = output_values(net, x[lo:hi], output_id,
                                      target=targets_for(target, lo, hi))
        classes += cls
    return f, classes


def _info(method, classes, output, f, **extra):
    return [dict(method=method, classes=[int(c) for c in cls], output=output, F=float(fn),
                 **extra) for cls, fn in zip(classes, f)]


def gradient(net, x, target="top1", output="logit", memory_budget=None):
    """dF/dx, the saliency map of Simonyan et al. (2014) before taking magnitudes."""
    x, grad, f, classes = _gradients(net, x, target, output, memory_budget)
    return grad, _info("gradient", classes, output, f)


def gradient_x_input(net, x, target="top1", output="logit", memory_budget=None):
    """x * dF/dx, with x the preprocessed (mean-subtracted) input: the first-order share of each
    input value in F relative to the mean image (Shrikumar et al. 2016)."""
    x, grad, f, classes = _gradients(net, x, target, output, memory_budget)
    return grad * x, _info("gradient_x_input", classes, output, f)


def smoothgrad(net, x, target="top1", samples=50, noise=0.15, seed=0, input_range=None,
               output="logit", memory_budget=None):
    """SmoothGrad (Smilkov et al. 2017): the mean of dF/dx over ``samples`` copies of x with
    Gaussian noise of standard deviation sigma = ``noise`` * (x_max - x_min).

    The range is per image (its largest minus its smallest input value) or ``input_range`` =
    (low, high), e.g. (0, 255) for 8-bit pixels; the paper finds noise 0.1-0.2 best. The classes
    are those ``target`` picks at the clean x. The noise of image i comes from its own generator
    ``numpy.random.default_rng([seed, i])``, so results do not depend on the batching."""
    if samples < 1:
        raise ArgumentError("samples must be >= 1, got %r" % (samples,))
    x = single_input(net, x)
    n = x.shape[0]
    _check_targets(target, n)
    output_id = output_blob(net, output)
    step = batch_size(net, x.shape[1:], memory_budget)
    f, classes = explained(net, x, target, output_id, step)
    if input_range is None:
        flat = x.reshape(n, -1).astype(np.float64)
        spread = flat.max(axis=1) - flat.min(axis=1)
    else:
        spread = np.full(n, float(input_range[1]) - float(input_range[0]))
    sigma = float(noise) * spread
    rngs = [np.random.default_rng([int(seed), i]) for i in range(n)]
    total = np.zeros(x.shape, np.float64)
    rows = [(i, s) for i in range(n) for s in range(samples)]
    for lo in range(0, len(rows), step):
        part = rows[lo:lo + step]
        images = [i for i, _ in part]
        batch = np.empty((len(part),) + x.shape[1:], np.float32)
        for k, i in enumerate(images):
            batch[k] = x[i] + (rngs[i].standard_normal(x.shape[1:]) * sigma[i]).astype(
                np.float32)
        grad, _, _ = input_gradient(net, batch, output_id, classes=[classes[i] for i in images])
        for k, i in enumerate(images):
            total[i] += grad[k]
    info = _info("smoothgrad", classes, output, f, samples=int(samples), noise=float(noise),
                 seed=int(seed))
    for entry, s in zip(info, sigma):
        entry["sigma"] = float(s)
    return (total / samples).astype(np.float32), info
