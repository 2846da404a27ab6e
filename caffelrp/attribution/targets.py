"""Which classes an explanation explains: one resolver for relevance, the gradient, gradient x
input, SmoothGrad, Integrated Gradients and the command line.

``target`` forms (N images, K classes):

* "top5": per image the min(5, K) best classes together (the original's class field -2); "top1";
* an int c: class c for every image;
* a flat list [c_0, ..., c_{N-1}]: class c_i for image i (one entry per image, as Captum takes it);
* a list of N lists [[3, 7], [1]]: per image the sum of its classes.

Anything else -- a flat list of the wrong length, a nested list of the wrong length, a class
outside [0, K), an empty list -- is a ``TargetError`` naming the image and K.

Classes are ranked by one blob for every method (``ranking_blob``): the output of the Softmax
that produces a net output (else the last Softmax), or the explained blob itself if there is none.
"""
import numpy as np

from ..errors import CaffeLRPError


class TargetError(CaffeLRPError, ValueError):
    """A ``target`` that does not fit the batch or the number of classes."""


NAMED = ("top5", "top1")


def _is_class(t):
    return isinstance(t, (int, np.integer)) and not isinstance(t, bool)


def ranking_blob(net, fallback):
    """Blob id whose values rank the classes: see the module docstring."""
    graph = net.graph()
    softmax = [step for step in graph.steps if step.layer.type == "Softmax"]
    if not softmax:
        return fallback
    final = [s for s in softmax if graph.name(s.tops[0]) in net.outputs]
    return (final or softmax)[-1].tops[0]


def check(target, n):
    """Raise ``TargetError`` for a ``target`` whose form does not fit ``n`` images (the class
    range is checked by ``resolve``, once the number of classes is known)."""
    if isinstance(target, str):
        if target not in NAMED:
            raise TargetError("target must be 'top5', 'top1', a class index, one class per image "
                              "or one list of classes per image; got %r" % target)
        return
    if _is_class(target):
        return
    try:
        items = list(target)
    except TypeError:
        raise TargetError("target must be 'top5', 'top1', a class index or a list; got %r"
                          % (target,)) from None
    if len(items) != n:
        kind = "classes" if all(_is_class(t) for t in items) else "class lists"
        raise TargetError("target has %d %s for %d image(s): give one class per image, or one "
                          "list of classes per image (e.g. [[3, 7]] * %d to explain 3 + 7 in "
                          "each)" % (len(items), kind, n, n))
    for i, per in enumerate(items):
        if _is_class(per):
            continue
        try:
            classes = list(per)
        except TypeError:
            raise TargetError("target for image %d must be a class index or a list of them, got "
                              "%r" % (i, per)) from None
        if not classes or not all(_is_class(c) for c in classes):
            raise TargetError("target for image %d must be a non-empty list of class indices, "
                              "got %r" % (i, per))


def per_image(target, lo, hi):
    """The part of ``target`` for images lo..hi-1 (for batching)."""
    if isinstance(target, str) or _is_class(target):
        return target
    return list(target)[lo:hi]


def resolve(target, scores, tie_break=None, first_image=0):
    """Per image, the list of explained class indices. ``scores``: (N, ...) values that rank the
    classes; ``tie_break``: values that order classes whose ranking scores are equal (e.g. softmax
    outputs that underflow to 0 are ordered by the logits, as the original does);
    ``first_image``: the index of image 0 of this batch in the user's batch (for messages)."""
    n = scores.shape[0]
    flat = scores.reshape(n, -1)
    k = flat.shape[1]
    check(target, n)
    if isinstance(target, str):
        m = min(5, k) if target == "top5" else 1
        if tie_break is not None and tie_break.size == flat.size:
            second = -tie_break.reshape(n, -1).astype(np.float64)
            order = np.stack([np.lexsort((second[i], -flat[i].astype(np.float64)))
                              for i in range(n)])
        else:
            order = np.argsort(-flat.astype(np.float64), axis=1, kind="stable")
        return [[int(c) for c in order[i, :m]] for i in range(n)]
    if _is_class(target):
        classes = [[int(target)]] * n
    else:
        classes = [[int(per)] if _is_class(per) else [int(c) for c in per] for per in target]
    for i, per in enumerate(classes):
        for c in per:
            if not 0 <= c < k:
                raise TargetError("target for image %d: class %d is outside 0..%d (the output "
                                  "has %d classes)" % (first_image + i, c, k - 1, k))
    return classes
