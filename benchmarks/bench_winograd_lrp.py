"""The LRP rules' products by Winograd (``layers.conv.WinogradMap``) against the column path
(im2col + GEMM + col2im), in one process: float32 error against float64 per rule on a 3x3
layer, then whole relevance passes of the BVLC-shaped models with seeded weights, the two
paths called in turns (``interleaved_medians``). The forward uses Winograd on both sides; only
``winograd.RELEVANCE`` differs.

    python benchmarks/bench_winograd_lrp.py [--models vgg16 caffenet] [--batches 1 8]
        [--repeats 5] [--write FILE]
"""
import argparse
import tempfile

import numpy as np

from common import command, emit, interleaved_medians, load_average, write_seeded_weights

import caffelrp
from caffelrp import winograd
from caffelrp.layers.conv import conv_relevance
from caffelrp.rules import alpha_beta, epsilon, gamma, zplus

RULES = [("epsilon(0.01)", lambda: epsilon(0.01)), ("epsilon(1)", lambda: epsilon(1.0)),
         ("alpha-beta beta 0", lambda: alpha_beta(beta=0.0)),
         ("alpha-beta beta 1", lambda: alpha_beta(beta=1.0)), ("z+", zplus),
         ("gamma(0.25)", lambda: gamma(0.25))]
FORMULAS = [("f100 beta 1", dict(rule=100, eps=1.0, beta=1.0)),
            ("f100 beta 0", dict(rule=100, eps=1.0, beta=0.0)),
            ("epsilon (rule 0)", dict(rule=0, eps=1.0))]


def relevance(rule, x, W, b, R, on):
    """The relevance by the Winograd map (``on``) or the column path."""
    winograd.RELEVANCE = on
    try:
        return conv_relevance(rule, x, W, b, R, (3, 3, 1, 1, 1, 1, 1, 1))
    finally:
        winograd.RELEVANCE = False


def error_rows():
    """A VGG-16 conv3-like layer (128 -> 128 channels, 28 x 28, pad 1), He-scaled weights, inputs
    after a ReLU (x >= 0) or signed, R > 0; the reference: ``float64_relevance``."""
    rng = np.random.default_rng(0)
    c, o, h = 128, 128, 28
    W = (rng.standard_normal((o, c, 3, 3)) * np.sqrt(2.0 / (9 * c))).astype(np.float32)
    b = (0.05 * rng.standard_normal(o)).astype(np.float32)
    rows = []
    for signed in (False, True):
        x = rng.standard_normal((1, c, h, h)).astype(np.float32)
        if not signed:
            x = np.maximum(x, 0)
        R = rng.random((1, o, h, h)).astype(np.float32)
        for name, make in RULES:
            want = float64_relevance(make(), x, W, b, R)
            scale = np.abs(want).max()
            errs = [np.abs(relevance(make(), x, W, b, R, on).astype(np.float64) - want).max() /
                    scale for on in (True, False)]
            rows.append("| %s | %s | %.1e | %.1e | %.1f |" % (
                name, "signed" if signed else ">= 0", errs[0], errs[1], errs[0] / errs[1]))
            print(rows[-1], flush=True)
    return rows


def float64_relevance(rule, x, W, b, R):
    """The rule's ``columns`` on float64 column matrices (im2col by numpy), folded back: the
    same formula as the column path with float64 products (the rules' numpy fallbacks round
    their ratios to float32, a relative 6e-8, an order below the float32 column path's error)."""
    from caffelrp import rules as rules_module
    n, c, h, w = x.shape
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (1, 1), (1, 1)))
    cols = np.stack([xp[0, :, u:u + h, v:v + w] for u in range(3) for v in range(3)], 1)
    X = cols.reshape(c * 9, h * w)
    Wm = W.astype(np.float64).reshape(W.shape[0], -1)
    lin = Float64Map(Wm, b.astype(np.float64))
    saved = rules_module._matrices
    rules_module._matrices = lambda *a: None       # numpy's float64 element-wise paths
    try:
        rel = rule.columns(X, lin, R.astype(np.float64).reshape(R.shape[1], -1), None, (),
                           not (x < 0).any())
    finally:
        rules_module._matrices = saved
    out = np.zeros(xp.shape[1:])
    rel = rel.reshape(c, 3, 3, h, w)
    for u in range(3):
        for v in range(3):
            out[:, u:u + h, v:v + w] += rel[:, u, v]
    return out[None, :, 1:1 + h, 1:1 + w]


class Float64Map:
    """``rules.LinearMap``'s protocol in float64 (numpy products), for the reference."""

    def __init__(self, W, b):
        self.W, self.b = W, b

    def weights(self, modifier):
        return modifier.function(self.W)

    def bias(self, modifier=caffelrp.rules.IDENTITY):
        return modifier.function(self.b)[:, None]

    def forward(self, X, modifier=caffelrp.rules.IDENTITY, role=None):
        return self.weights(modifier) @ X

    def backward(self, S, modifier=caffelrp.rules.IDENTITY, role=None):
        return self.weights(modifier).T @ S


def speed_rows(models, batches, repeats):
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for key in models:
            net = caffelrp.Net(*write_seeded_weights(key, folder))
            c, h, w = net.blob_shapes[net.inputs[0]][1:]
            for batch in batches:
                x = np.random.default_rng(batch).uniform(-120, 130, (batch, c, h, w)).astype(
                    np.float32)
                fns = []
                for _, kwargs in FORMULAS:
                    for on in (True, False):
                        def run(on=on, kwargs=kwargs):
                            winograd.RELEVANCE = on
                            try:
                                net.relevance(x, **kwargs)
                            finally:
                                winograd.RELEVANCE = False
                        fns.append(run)
                times = interleaved_medians(fns, repeats)
                for i, (name, _) in enumerate(FORMULAS):
                    t_on, t_off = times[2 * i], times[2 * i + 1]
                    rows.append("| %s | %s | %d | %.3f | %.3f | %.2f |" % (
                        key, name, batch, t_on / batch, t_off / batch, t_off / t_on))
                    print(rows[-1], flush=True)
            del net
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["vgg16", "caffenet"])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-speed", action="store_true")
    parser.add_argument("--write")
    args = parser.parse_args()
    lines = ["Command: `%s` (threads: %d; load average at the start %.1f)." % (
        command(__file__), caffelrp.get_num_threads(), load_average()), "",
        "Float32 error against float64 (largest difference / largest relevance), 128 -> 128 "
        "channels, 28 x 28, pad 1, one image:", "",
        "| rule | inputs | Winograd map | column path | ratio |", "|---|---|---|---|---|"]
    lines += error_rows()
    if not args.no_speed:
        lines += ["", "Relevance per image, s (medians of %d calls in turns; forward by Winograd "
                  "on both sides):" % args.repeats, "",
                  "| model | formula | batch | Winograd map | column path | column / Winograd |",
                  "|---|---|---|---|---|---|"]
        lines += speed_rows(args.models, args.batches, args.repeats)
    lines += ["", "Load average at the end: %.1f." % load_average()]
    emit(lines, args.write)


if __name__ == "__main__":
    main()
