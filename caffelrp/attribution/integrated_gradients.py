"""Integrated Gradients with a checked completeness error.

Sundararajan, Taly, Yan, "Axiomatic Attribution for Deep Networks" (ICML 2017):

    IG_i(x) = (x_i - x'_i) * integral_0^1 dF(x' + a (x - x'))/dx_i da          (their eq. 1)

with x' a baseline. By completeness (their Prop. 1) sum_i IG_i(x) = F(x) - F(x'); the integral is
approximated by a quadrature rule with m nodes, and the paper advises checking that the sum is
within 5% of F(x) - F(x') and raising m until it is (their section 3). That check is built in:

    error = |sum_i IG_i(x) - (F(x) - F(x'))| / |F(x) - F(x')|

is reported for every image, and ``steps="auto"`` doubles m (from ``start_steps``) until
error <= ``tol`` or m reaches ``max_steps``.

Baselines, in the input's space (the preprocessed blob: BGR, 0..255, minus the mean):

* ``"black"``: the black image in pixel space. Caffe inputs have the mean subtracted, so black is
  0 - mean = **-mean**, not zeros; ``mean`` (the mean pixel or image preprocessing subtracted) is
  required.
* ``"mean"``: the mean image, i.e. all zeros in input space.
* ``"blur"``: the input blurred by a Gaussian of ``blur_sigma`` pixels (default a tenth of the
  larger side), per channel.
* ``"noise"``: uniform noise over the pixel range, 0..255 minus ``mean`` when ``mean`` is given,
  else over each image's own min..max; seeded (``seed``).
* an array: one value, one per channel (C,), an image (C, H, W) or one per image (N, C, H, W).

Rules (``rule``) over a in [0, 1] with m steps: "riemann-left" (a = k/m, k < m), "riemann-right"
(k = 1..m), "riemann-midpoint" ((k + 1/2)/m), "riemann-trapezoid" (k = 0..m, ends weighted 1/2,
m + 1 gradients) and "gauss-legendre" (m Gauss-Legendre nodes). When m doubles, the left, right
and trapezoid rules keep their earlier gradients (the new nodes are the old midpoints); the
midpoint and Gauss-Legendre rules start over, so adaptive runs cost up to about 2 m_final.

The interpolated inputs of all images go through the network together, in batches that fit
``memory_budget`` bytes (``caffelrp.attribution.backward.batch_size``).
"""
import numpy as np

from ..errors import ArgumentError
from .backward import batch_size, input_gradient, output_blob, output_values, single_input
from .gradients import _check_targets, explained

RULES = ("riemann-left", "riemann-right", "riemann-midpoint", "riemann-trapezoid",
         "gauss-legendre")
NESTED = ("riemann-left", "riemann-right", "riemann-trapezoid")
BASELINES = ("black", "mean", "blur", "noise")


def quadrature(rule, m):
    """(nodes a_k in [0, 1], weights w_k summing to 1), float64, of ``rule`` with ``m`` steps."""
    if rule not in RULES:
        raise ArgumentError("rule must be one of %s, got %r" % (", ".join(RULES), rule))
    if m < 1:
        raise ArgumentError("the number of steps must be >= 1, got %r" % (m,))
    k = np.arange(m, dtype=np.float64)
    if rule == "gauss-legendre":
        t, w = np.polynomial.legendre.leggauss(m)
        return (t + 1) / 2, w / 2
    if rule == "riemann-trapezoid":
        w = np.full(m + 1, 1.0 / m)
        w[0] = w[-1] = 0.5 / m
        return np.arange(m + 1, dtype=np.float64) / m, w
    offset = {"riemann-left": 0.0, "riemann-right": 1.0, "riemann-midpoint": 0.5}[rule]
    return (k + offset) / m, np.full(m, 1.0 / m)


# ------------------------------------------------------------------------------ baselines
def _mean_array(mean, x):
    if mean is None:
        return None
    m = np.asarray(mean, dtype=np.float32)
    c = x.shape[1]
    if m.ndim == 1 and m.size == c:
        return m.reshape(1, c, 1, 1)
    if m.ndim == 3 and m.shape == x.shape[1:]:
        return m[None]
    if m.ndim == 4 and m.shape == x.shape:   # one mean per image
        return m
    if m.ndim == 0:
        return m
    raise ArgumentError("mean must be one value per channel (%d), an image %s or one image per input, "
                     "got shape %s (crop a mean image to the input size first)"
                     % (c, tuple(x.shape[1:]), m.shape))


def make_baseline(x, baseline="black", mean=None, seed=0, blur_sigma=None):
    """(x' float32 of x's shape, its name for the report) for a baseline name or array."""
    mean_arr = _mean_array(mean, x)
    if isinstance(baseline, str):
        if baseline == "black":
            if mean_arr is None:
                raise ArgumentError(
                    "baseline='black' needs mean=: Caffe inputs have the mean subtracted, so the "
                    "black image is 0 - mean in input space (pass the mean pixel or image that "
                    "preprocessing subtracted, or baseline='mean' for the all-zero input)")
            return np.ascontiguousarray(np.broadcast_to(-mean_arr, x.shape), np.float32), "black"
        if baseline == "mean":
            return np.zeros(x.shape, np.float32), "mean"
        if baseline == "blur":
            from scipy.ndimage import gaussian_filter
            s = float(blur_sigma) if blur_sigma is not None else max(x.shape[2:]) / 10.0
            out = gaussian_filter(x.astype(np.float64), sigma=(0, 0, s, s), mode="nearest")
            return out.astype(np.float32), "blur(sigma=%g)" % s
        if baseline == "noise":
            out = np.empty(x.shape, np.float32)
            for i in range(x.shape[0]):
                rng = np.random.default_rng([int(seed), i])
                if mean_arr is not None:
                    low, high = -mean_arr, np.float32(255) - mean_arr
                    u = rng.uniform(0.0, 1.0, x.shape[1:])
                    out[i] = (low + (high - low) * u.astype(np.float32)).reshape(x.shape[1:])
                else:
                    out[i] = rng.uniform(x[i].min(), x[i].max(), x.shape[1:])
            return out, "noise(seed=%d)" % int(seed)
        raise ArgumentError("baseline must be one of %s or an array, got %r"
                         % (", ".join(BASELINES), baseline))
    b = np.asarray(baseline, dtype=np.float32)
    if b.ndim == 1 and b.size == x.shape[1]:
        b = b.reshape(1, -1, 1, 1)
    elif b.ndim == 3:
        b = b[None]
    try:
        return np.ascontiguousarray(np.broadcast_to(b, x.shape), np.float32), "array"
    except ValueError:
        raise ArgumentError("a baseline array must be a value, (C,), (C, H, W) or (N, C, H, W) "
                         "fitting the input %s, got shape %s" % (x.shape, b.shape)) from None


# ------------------------------------------------------------------------------ the method
def integrated_gradients(net, x, target="top1", baseline="black", mean=None, steps="auto",
                         tol=0.05, rule="riemann-midpoint", max_steps=1024, start_steps=16,
                         output="logit", memory_budget=None, seed=0, blur_sigma=None):
    """Integrated Gradients of ``x`` (float32 (N, C, H, W), preprocessed); returns (attr float32
    (N, C, H, W), info: one dict per image).

    ``steps``: a number m, or "auto" (m = ``start_steps``, doubled until the completeness error
    is <= ``tol`` or m = ``max_steps``). ``target`` / ``output``: what F is (the pre-softmax
    score of the class ``target`` picks at x by default). ``baseline`` / ``mean`` / ``seed`` /
    ``blur_sigma``: see the module docstring.

    info per image: "method", "classes", "output", "baseline", "rule", "steps" (m used),
    "evaluations" (gradients computed), "F" and "F_x" (F(x)), "F_baseline" (F(x')), "delta"
    (F(x) - F(x')), "attribution_sum" (float64 sum of attr), "absolute_error",
    "completeness_error" (relative, as above), "tol", "converged" (error <= tol).
    """
    if rule not in RULES:
        raise ArgumentError("rule must be one of %s, got %r" % (", ".join(RULES), rule))
    adaptive = isinstance(steps, str)
    if adaptive and steps != "auto":
        raise ArgumentError("steps must be 'auto' or a positive number, got %r" % (steps,))
    if not adaptive and int(steps) < 1:
        raise ArgumentError("steps must be 'auto' or a positive number, got %r" % (steps,))
    if adaptive and (tol is None or tol <= 0 or max_steps < 1 or start_steps < 1):
        raise ArgumentError("steps='auto' needs tol > 0, max_steps >= 1 and start_steps >= 1")
    x = single_input(net, x)
    n = x.shape[0]
    _check_targets(target, n)
    output_id = output_blob(net, output)
    step = batch_size(net, x.shape[1:], memory_budget)
    base, base_name = make_baseline(x, baseline, mean, seed, blur_sigma)
    f_x, classes = explained(net, x, target, output_id, step)
    f_b = np.empty(n, np.float64)
    for lo in range(0, n, step):
        f_b[lo:lo + step], _ = output_values(net, base[lo:lo + step], output_id,
                                             classes=classes[lo:lo + step])
    delta = f_x - f_b
    diff = x - base

    mean_grad = np.zeros(x.shape, np.float64)   # per image: sum_k w_k dF/dx at the nodes
    used = np.zeros(n, np.int64)
    evaluations = np.zeros(n, np.int64)
    attr = np.zeros(x.shape, np.float32)
    sums = np.zeros(n, np.float64)
    errors = np.full(n, np.inf)
    active = list(range(n))
    m = min(int(start_steps), int(max_steps)) if adaptive else int(steps)
    while active:
        images, alphas, weights = [], [], []
        for i in active:
            if rule in NESTED and used[i] and m == 2 * used[i]:
                # the nodes of m are those of m/2 plus the old midpoints (weights halve)
                mean_grad[i] *= 0.5
                a = (2 * np.arange(used[i], dtype=np.float64) + 1) / m
                w = np.full(a.size, 1.0 / m)
            else:
                mean_grad[i] = 0
                a, w = quadrature(rule, m)
            images += [i] * a.size
            alphas.append(a)
            weights.append(w)
        alphas, weights = np.concatenate(alphas), np.concatenate(weights)
        images = np.asarray(images)
        for lo in range(0, images.size, step):
            idx = images[lo:lo + step]
            a = alphas[lo:lo + step].astype(np.float32).reshape(-1, 1, 1, 1)
            points = base[idx] + a * diff[idx]
            grad, _, _ = input_gradient(net, points, output_id, classes=[classes[i] for i in idx])
            for k, i in enumerate(idx):
                mean_grad[i] += weights[lo + k] * grad[k]
        for i in active:
            evaluations[i] += np.count_nonzero(images == i)
            used[i] = m
            attr[i] = (diff[i] * mean_grad[i]).astype(np.float32)
            sums[i] = attr[i].sum(dtype=np.float64)
            errors[i] = _relative_error(sums[i], delta[i])
        if not adaptive:
            break
        active = [i for i in active if errors[i] > tol and used[i] < max_steps]
        m = min(2 * m, int(max_steps))

    info = []
    for i in range(n):
        info.append(dict(
            method="integrated_gradients", classes=[int(c) for c in classes[i]], output=output,
            baseline=base_name, rule=rule, steps=int(used[i]), evaluations=int(evaluations[i]),
            F=float(f_x[i]), F_x=float(f_x[i]), F_baseline=float(f_b[i]), delta=float(delta[i]),
            attribution_sum=float(sums[i]), absolute_error=float(abs(sums[i] - delta[i])),
            completeness_error=float(errors[i]), tol=None if tol is None else float(tol),
            converged=bool(tol is not None and errors[i] <= tol)))
    return attr, info


def _relative_error(total, delta):
    """|sum IG - (F(x) - F(x'))| / |F(x) - F(x')| (0 if both are 0, inf if only delta is)."""
    err = abs(total - delta)
    if delta == 0:
        return 0.0 if err == 0 else float("inf")
    return err / abs(delta)
