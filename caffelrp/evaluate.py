"""Judging attributions with numbers: region perturbation (AOPC), pixel flipping, the pointing
game and attribution localisation. The command line is ``caffelrp.evaluate_cli``.

Region perturbation (Samek, Binder, Montavon, Lapuschkin, Mueller, "Evaluating the visualization
of what a deep neural network has learned", IEEE TNNLS 2017, arXiv:1509.06321, section III):
the input is divided into non-overlapping ``region`` x ``region`` squares (9 x 9 in the paper;
the last row / column of squares is smaller where the size is not a multiple), ranked by their
summed attribution (all channels). Most relevant first (MoRF): x_0 = x and x_k is x_{k-1} with the
k-th ranked region replaced by the perturbation, so after k steps the k best regions are gone;
least relevant first (LeRF, their appendix) takes the ranking backwards. With f the explained
class score (the pre-softmax logit by default),

    AOPC = 1/(L+1) < sum_{k=0..L} f(x_0) - f(x_k) >                         (their eq. 12)

with L = ``steps`` (100 in the paper) and <.> the mean over the random repetitions of the noise
(10 in the paper) and over images. ABPC, the area between the LeRF and the MoRF curve, is
1/(L+1) sum_k f(x_k^LeRF) - f(x_k^MoRF) = AOPC_MoRF - AOPC_LeRF per image. A good attribution has
a large AOPC_MoRF, a small AOPC_LeRF and a large ABPC.

Pixel flipping (Bach et al., PLoS ONE 2015; Samek et al. above) is the same protocol on single
pixels, ``fraction`` of the pixels per step.

Perturbations (``perturbation``): "uniform" (the paper's: each value drawn uniformly from the
pixel range, i.e. ``bounds`` = (input of pixel 0, input of pixel 255) = (-mean, 255 - mean), or
each image's own min..max when neither ``bounds`` nor ``mean`` is given), "blur" (the input
blurred by a Gaussian of ``blur_sigma``), "mean" (zeros: the mean image) and "constant" (pixel
value ``value``, i.e. low + value). The noise of image i, repetition r, is drawn from
``numpy.random.default_rng([seed, 1, id_i, r]).random((C, H, W))`` (id_i = ``image_ids[i]``, by
default i) scaled to low..high, and shared by every method and both orders: common random
numbers, so that two methods' difference is not noise. The deterministic perturbations run one
repetition.

All perturbed inputs (every image, method, order, repetition and step) go through the network
in memory-bounded batches (``caffelrp.attribution.backward.batch_size``, the machinery of
Integrated Gradients), never one forward pass per step.

Localisation (Kohlbrenner, Bauer, Nakajima, Binder, Samek, Lapuschkin, "Towards best practice in
explaining neural network decisions with LRP", IJCNN 2020, arXiv:1910.09840, section 4.2): on the
per-pixel attribution (summed over channels) R+ = max(R, 0),

    mu = R_in / R_tot,   mu_w = mu * S_tot / S_box

with R_in the positive attribution inside the object's box(es), R_tot the total, S_box / S_tot
the box and image areas in pixels: mu_w = 1 is chance level. The pointing game (Zhang et al.,
ECCV 2016, used in the same paper) scores 1 when the most relevant pixel lies inside a box
(the first maximum in row-major order), else 0.
"""
from dataclasses import dataclass, field
import math

import numpy as np

from .attribution.backward import batch_size as memory_batch_size
from .attribution.backward import output_blob, output_values, single_input
from .attribution.gradients import _check_targets, explained
from .errors import CaffeLRPError

PERTURBATIONS = ("uniform", "blur", "mean", "constant")
ORDERS = ("morf", "lerf")
# seed-sequence tags that keep the noise and the random attribution in separate streams
NOISE_STREAM, RANDOM_STREAM = 1, 2


class EvaluationError(CaffeLRPError):
    """An argument of the evaluation API does not fit (shapes, names, ranges)."""


@dataclass
class PerturbationCurves:
    """One attribution's perturbation curves.

    ``curves[order]``: float64 (N, R, L+1), f(x_k) for k = 0..L (k = 0 is x itself) per image and
    repetition; ``aopc[order]``: (N,) the AOPC of each image (mean over repetitions); ``abpc``:
    (N,) AOPC_MoRF - AOPC_LeRF (None unless both orders ran); ``f0``: (N,) f(x); ``classes``: the
    explained class(es) per image; ``steps``: L; ``per_step``: units removed per step."""
    curves: dict
    aopc: dict
    abpc: np.ndarray
    f0: np.ndarray
    classes: list
    steps: int
    per_step: int
    repeats: int
    info: dict = field(default_factory=dict)

    def mean_curve(self, order):
        """(L+1,) per step the mean over repetitions and images, and its standard error over
        images."""
        per_image = self.curves[order].mean(axis=1)
        return per_image.mean(axis=0), standard_error(per_image, axis=0)


def standard_error(values, axis=None):
    """Standard error of the mean (sample standard deviation / sqrt(n)); NaN for n < 2."""
    values = np.asarray(values, dtype=np.float64)
    n = values.shape[axis] if axis is not None else values.size
    if n < 2:
        return np.nanmean(values, axis=axis) * np.nan   # the shape of the mean, all NaN
    return values.std(axis=axis, ddof=1) / math.sqrt(n)


# ------------------------------------------------------------------------------- inputs
def pixel_map(attribution, n=None, hw=None):
    """Per-pixel attribution, float64 (N, H, W): an (N, C, H, W) array summed over channels, or
    an (N, H, W) array as it is."""
    a = np.asarray(attribution, dtype=np.float64)
    if a.ndim == 4:
        a = a.sum(axis=1)
    if a.ndim != 3:
        raise EvaluationError("an attribution must be (N, C, H, W) or (N, H, W), got shape %s"
                              % (a.shape,))
    if n is not None and (a.shape[0] != n or (hw is not None and a.shape[1:] != tuple(hw))):
        raise EvaluationError("attribution of shape %s does not fit %d inputs of %s"
                              % (a.shape, n, "x".join(map(str, hw)) if hw else "?"))
    if not np.isfinite(a).all():
        raise EvaluationError("the attribution holds NaN or infinite values")
    return a


def region_labels(height, width, region):
    """(labels int (H, W): the region of every pixel, number of regions) for a grid of
    ``region`` x ``region`` squares, numbered row by row."""
    if int(region) < 1:
        raise EvaluationError("the region size must be >= 1, got %r" % (region,))
    region = int(region)
    rows, cols = -(-height // region), -(-width // region)
    r = np.arange(height) // region
    c = np.arange(width) // region
    return r[:, None] * cols + c[None, :], rows * cols


def ranking(pixel_values, labels, count, order):
    """Region indices sorted by their summed attribution: descending for "morf", ascending for
    "lerf" (ties in region order)."""
    score = np.bincount(labels.ravel(), weights=pixel_values.ravel(), minlength=count)
    if order == "morf":
        return np.argsort(-score, kind="stable")
    if order == "lerf":
        return np.argsort(score, kind="stable")
    raise EvaluationError("order must be one of %s, got %r" % (", ".join(ORDERS), order))


def _bounds(x, bounds, mean):
    """(low, high) float64 (N, C, H, W): the input range the uniform noise is drawn from."""
    if bounds is not None:
        low, high = (np.broadcast_to(np.asarray(b, np.float64), x.shape) for b in bounds)
    elif mean is not None:
        m = np.asarray(mean, np.float64)
        if m.ndim == 1:
            m = m.reshape(1, -1, 1, 1)
        low = np.broadcast_to(-m, x.shape)
        high = low + 255.0
    else:
        flat = x.reshape(x.shape[0], -1).astype(np.float64)
        low = np.broadcast_to(flat.min(axis=1).reshape(-1, 1, 1, 1), x.shape)
        high = np.broadcast_to(flat.max(axis=1).reshape(-1, 1, 1, 1), x.shape)
    return low, high


def uniform_noise(shape, low, high, seed, image_id, repeat):
    """The uniform perturbation of one image and repetition, float32 (C, H, W)."""
    u = np.random.default_rng([int(seed), NOISE_STREAM, int(image_id), int(repeat)]).random(shape)
    return (low + (high - low) * u).astype(np.float32)


def random_attribution(shape, seed=0, image_ids=None):
    """The random baseline: values uniform in [0, 1), float32 ``shape`` (N, C, H, W); image i from
    ``default_rng([seed, 2, image_ids[i]])``, so it does not depend on the batching."""
    shape = tuple(int(s) for s in shape)
    ids = range(shape[0]) if image_ids is None else image_ids
    return np.stack([np.random.default_rng([int(seed), RANDOM_STREAM, int(i)]).random(shape[1:])
                     for i in ids]).astype(np.float32)


# -------------------------------------------------------------------------- the protocol
def _fills(x, perturbation, bounds, mean, value, blur_sigma):
    """Deterministic perturbations (N, C, H, W), or None for "uniform" (drawn per repetition)."""
    if perturbation == "uniform":
        return None
    if perturbation == "mean":
        return np.zeros(x.shape, np.float32)
    if perturbation == "constant":
        low, _ = _bounds(x, bounds, mean)
        return (low + float(value)).astype(np.float32)
    if perturbation == "blur":
        from scipy.ndimage import gaussian_filter
        sigma = float(blur_sigma) if blur_sigma is not None else max(x.shape[2:]) / 10.0
        return gaussian_filter(x.astype(np.float64), sigma=(0, 0, sigma, sigma),
                               mode="nearest").astype(np.float32)
    raise EvaluationError("perturbation must be one of %s, got %r"
                          % (", ".join(PERTURBATIONS), perturbation))


def perturbation_curves(net, x, attribution, target="top1", unit=9, steps=100, per_step=1,
                        repeats=10, perturbation="uniform", orders=ORDERS, seed=0, bounds=None,
                        mean=None, value=0.0, blur_sigma=None, output="logit", memory_budget=None,
                        batch_size=None, image_ids=None, progress=None):
    """The perturbation protocol on squares of ``unit`` pixels, ``per_step`` squares per step
    (``region_perturbation`` and ``pixel_flipping`` are this with the papers' settings).

    ``attribution``: an array (N, C, H, W) / (N, H, W), or {name: array} to evaluate several
    methods with the same noise in one batched run (then a {name: PerturbationCurves} is
    returned). ``batch_size`` overrides the memory-bounded batch size (the results do not depend
    on it). ``progress(done, total)`` is called after every batch of forward passes."""
    x = single_input(net, x)
    n, c, h, w = x.shape
    _check_targets(target, n)
    single = not isinstance(attribution, dict)
    maps = {name: pixel_map(a, n, (h, w))
            for name, a in ({"attribution": attribution} if single else attribution).items()}
    if perturbation not in PERTURBATIONS:
        raise EvaluationError("perturbation must be one of %s, got %r"
                              % (", ".join(PERTURBATIONS), perturbation))
    orders = tuple(orders)
    for o in orders:
        if o not in ORDERS:
            raise EvaluationError("order must be one of %s, got %r" % (", ".join(ORDERS), o))
    if int(steps) < 1 or int(per_step) < 1 or int(repeats) < 1:
        raise EvaluationError("steps, per_step and repeats must be >= 1")
    ids = list(range(n)) if image_ids is None else [int(i) for i in image_ids]
    if len(ids) != n:
        raise EvaluationError("%d image ids for %d images" % (len(ids), n))
    labels, count = region_labels(h, w, unit)
    steps = min(int(steps), -(-count // int(per_step)))
    per_step = int(per_step)
    repeats = int(repeats) if perturbation == "uniform" else 1
    output_id = output_blob(net, output)
    step = int(batch_size) if batch_size else memory_batch_size(net, x.shape[1:], memory_budget)
    f0, classes = explained(net, x, target, output_id, step)
    fills = _fills(x, perturbation, bounds, mean, value, blur_sigma)
    low, high = _bounds(x, bounds, mean) if fills is None else (None, None)
    # pixel indices (flat over H*W) of each square, in square order
    by_label = np.argsort(labels.ravel(), kind="stable")
    members = np.split(by_label, np.cumsum(np.bincount(labels.ravel(), minlength=count))[:-1])

    names = list(maps)
    curves = {name: {o: np.empty((n, repeats, steps + 1)) for o in orders} for name in names}
    for name in names:
        for o in orders:
            curves[name][o][:, :, 0] = f0[:, None]
    sequences = [(i, r, name, o) for i in range(n) for r in range(repeats)
                 for name in names for o in orders]
    total = len(sequences) * steps

    def perturbed_inputs():
        """(sequence, k, x_k) in sequence order; the noise of one (image, repetition) is drawn
        once and shared by every method and order."""
        current = None
        for s, (i, r, name, o) in enumerate(sequences):
            if fills is not None:
                fill = fills[i]
            elif current != (i, r):
                fill = uniform_noise((c, h, w), low[i], high[i], seed, ids[i], r)
                current = (i, r)
            flat_fill = fill.reshape(c, -1)
            order = ranking(maps[name][i], labels, count, o)
            state = x[i].copy()
            flat_state = state.reshape(c, -1)
            for k in range(1, steps + 1):
                chosen = order[(k - 1) * per_step:k * per_step]
                pixels = chosen if unit == 1 else np.concatenate([members[u] for u in chosen])
                flat_state[:, pixels] = flat_fill[:, pixels]
                yield s, k, state

    done = 0
    batch = np.empty((step, c, h, w), np.float32)
    where = []
    for s, k, state in perturbed_inputs():
        batch[len(where)] = state
        where.append((s, k))
        if len(where) == step:
            _forward_batch(net, batch, where, sequences, classes, output_id, curves)
            done += len(where)
            where = []
            if progress is not None:
                progress(done, total)
    if where:
        _forward_batch(net, batch[:len(where)], where, sequences, classes, output_id, curves)
        done += len(where)
        if progress is not None:
            progress(done, total)

    results = {}
    for name in names:
        aopc = {o: (f0[:, None, None] - curves[name][o]).mean(axis=2).mean(axis=1)
                for o in orders}
        abpc = aopc["morf"] - aopc["lerf"] if set(ORDERS) <= set(orders) else None
        results[name] = PerturbationCurves(
            curves[name], aopc, abpc, f0, [[int(v) for v in per] for per in classes], steps,
            per_step, repeats, info={"unit": int(unit), "regions": int(count),
                                     "perturbation": perturbation, "seed": int(seed),
                                     "batch_size": step, "forward_passes": total})
    return results["attribution"] if single else results


def _forward_batch(net, batch, where, sequences, classes, output_id, curves):
    images = [sequences[s][0] for s, _ in where]
    f, _ = output_values(net, batch, output_id, classes=[classes[i] for i in images])
    for (s, k), value in zip(where, f):
        _, r, name, o = sequences[s]
        curves[name][o][sequences[s][0], r, k] = value


def region_perturbation(net, x, attribution, target="top1", region=9, steps=100, repeats=10,
                        perturbation="uniform", orders=ORDERS, seed=0, **kwargs):
    """MoRF / LeRF region perturbation and AOPC (Samek et al. 2017, arXiv:1509.06321): non-
    overlapping ``region`` x ``region`` squares, one more replaced per step, ``steps`` steps,
    ``repeats`` draws of the uniform noise. ``x``: the preprocessed batch (N, C, H, W);
    ``attribution``: (N, C, H, W) / (N, H, W) or {method name: array}; ``target``: the explained
    class(es) as for ``Net.gradient`` (chosen at x); keyword arguments of
    ``perturbation_curves`` (``bounds``, ``mean``, ``value``, ``blur_sigma``, ``output``,
    ``memory_budget``, ``batch_size``, ``image_ids``, ``progress``). Returns PerturbationCurves
    (or a dict of them)."""
    return perturbation_curves(net, x, attribution, target=target, unit=region, steps=steps,
                               per_step=1, repeats=repeats, perturbation=perturbation,
                               orders=orders, seed=seed, **kwargs)


def pixel_flipping(net, x, attribution, target="top1", steps=100, fraction=0.01, repeats=10,
                   perturbation="uniform", orders=ORDERS, seed=0, **kwargs):
    """Pixel flipping: the region protocol on single pixels (all channels of a pixel together),
    ceil(``fraction`` x H x W) pixels per step."""
    if not 0 < float(fraction) <= 1:
        raise EvaluationError("fraction must be in (0, 1], got %r" % (fraction,))
    x = single_input(net, x)
    per_step = max(1, int(math.ceil(float(fraction) * x.shape[2] * x.shape[3])))
    return perturbation_curves(net, x, attribution, target=target, unit=1, steps=steps,
                               per_step=per_step, repeats=repeats, perturbation=perturbation,
                               orders=orders, seed=seed, **kwargs)


# --------------------------------------------------------------------------- localisation
def box_masks(boxes, n, hw):
    """bool (N, H, W) from masks, or from per-image lists of (x0, y0, x1, y1) boxes in input
    pixels (x1, y1 exclusive)."""
    if isinstance(boxes, np.ndarray) and boxes.dtype == bool:
        masks = boxes if boxes.ndim == 3 else boxes[None]
        if masks.shape != (n,) + tuple(hw):
            raise EvaluationError("box masks of shape %s do not fit %d attributions of %s"
                                  % (masks.shape, n, "x".join(map(str, hw))))
        return masks
    boxes = list(boxes)
    if len(boxes) != n:
        raise EvaluationError("%d box lists for %d attributions" % (len(boxes), n))
    masks = np.zeros((n,) + tuple(hw), bool)
    for i, per in enumerate(boxes):
        for b in per:
            x0, y0, x1, y1 = (int(round(float(v))) for v in b[:4])
            masks[i, max(y0, 0):max(y1, 0), max(x0, 0):max(x1, 0)] = True
    return masks


def pointing_game(attribution, boxes):
    """Per image 1.0 if the most relevant pixel (channel sum; the first maximum in row-major
    order) lies inside the boxes, 0.0 if not, NaN without a box or for a constant map.
    ``boxes``: bool masks (N, H, W) or per image a list of (x0, y0, x1, y1) in input pixels."""
    maps = pixel_map(attribution)
    masks = box_masks(boxes, maps.shape[0], maps.shape[1:])
    hits = np.full(maps.shape[0], np.nan)
    for i, (m, mask) in enumerate(zip(maps, masks)):
        if not mask.any() or m.max() == m.min():
            continue
        hits[i] = float(mask.ravel()[int(np.argmax(m.ravel()))])
    return hits


def localisation(attribution, boxes):
    """(mu, mu_w) per image (Kohlbrenner et al., arXiv:1910.09840): the share of the positive
    attribution inside the boxes, and that share times image area / box area (1 = chance).
    NaN without a box or without positive attribution."""
    maps = pixel_map(attribution)
    masks = box_masks(boxes, maps.shape[0], maps.shape[1:])
    mu = np.full(maps.shape[0], np.nan)
    mu_w = np.full(maps.shape[0], np.nan)
    for i, (m, mask) in enumerate(zip(maps, masks)):
        positive = np.maximum(m, 0.0)
        total = positive.sum()
        if not mask.any() or total <= 0:
            continue
        mu[i] = positive[mask].sum() / total
        mu_w[i] = mu[i] * mask.size / mask.sum()
    return mu, mu_w
