"""Command line: ``python -m caffelrp info|classify ...``."""
import argparse
import sys
from pathlib import Path

import numpy as np

from . import __version__
from .errors import CaffeLRPError
from .bundled import BUNDLED, bundled_prototxt, bundled_weights, where_to_get_weights
from .net import Net
from .preprocess import BVLC_MEAN_BGR, image_to_blob

USAGE_ERROR, DATA_ERROR = 2, 1


class UsageError(Exception):
    pass


def resolve_model(model, weights):
    """(prototxt, caffemodel) from a bundled model name or a prototxt path."""
    if model in BUNDLED:
        prototxt = bundled_prototxt(model)
        if weights is None:
            weights = bundled_weights(model)
            if weights is None:
                raise UsageError("--weights is required for %s: %s"
                                 % (model, where_to_get_weights(model)))
        return prototxt, weights
    if not Path(model).is_file():
        raise UsageError("--model must be one of %s or a prototxt file; %s does not exist"
                         % (", ".join(BUNDLED), model))
    return model, weights


def parse_mean(text):
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3:
        raise UsageError("--mean takes three numbers B,G,R, got %r" % text)
    return values


def cmd_info(args):
    net = Net(args.prototxt, args.caffemodel, allow_missing_weights=args.caffemodel is None)
    print("%s: %d layers, inputs %s, outputs %s" % (net.name or args.prototxt, len(net.layers),
                                                     net.inputs, net.outputs))
    print("%5s  %-34s %-14s %-22s %12s" % ("index", "name", "type", "top shape", "parameters"))
    total = 0
    for i, (name, type_) in enumerate(net.layers):
        layer = net.layer(i)
        count = sum(b.size for b in layer.blobs)
        total += count
        shape = "x".join(str(d) for d in layer.top_shapes[0]) if getattr(
            layer, "top_shapes", None) else "input"
        print("%5d  %-34s %-14s %-22s %12s" % (i, name, type_, shape, count or ""))
    print("parameters: %d; forward: %.2f GFLOP per batch of %d" % (
        total, net.flops() / 1e9, net.blob_shapes[net.inputs[0]][0]))
    return 0


def cmd_classify(args):
    prototxt, weights = resolve_model(args.model, args.weights)
    mean = parse_mean(args.mean) if args.mean else BVLC_MEAN_BGR
    labels = Path(args.labels).read_text().splitlines() if args.labels else None
    net = Net(prototxt, weights)
    _, c, h, w = net.blob_shapes[net.inputs[0]]
    failures = 0
    for image in args.images:
        try:
            x = image_to_blob(image, h, w, mean)[None]
        except CaffeLRPError as e:
            print("error: %s" % e, file=sys.stderr)
            failures += 1
            continue
        out = net.forward(x)
        scores = out[args.output or net.outputs[0]][0].reshape(-1)
        top = np.argsort(-scores, kind="stable")[:args.top]
        print(image)
        for k in top:
            label = labels[k] if labels and k < len(labels) else ""
            print("  %5d  %.4f  %s" % (k, scores[k], label))
    return DATA_ERROR if failures else 0


def build_parser():
    parser = argparse.ArgumentParser(prog="python -m caffelrp", description=(
        "Run Caffe models without Caffe and explain their decisions."))
    parser.add_argument("--version", action="version", version="caffelrp " + __version__)
    sub = parser.add_subparsers(dest="command", required=True)

    info = sub.add_parser("info", help="list a network's layers with Caffe's indices and shapes")
    info.add_argument("prototxt")
    info.add_argument("caffemodel", nargs="?")
    info.set_defaults(run=cmd_info)

    classify = sub.add_parser("classify", help="print the top classes for images")
    classify.add_argument("images", nargs="+", metavar="IMAGE")
    classify.add_argument("--model", required=True,
                          help="bundled model (%s) or a deploy.prototxt" % ", ".join(BUNDLED))
    classify.add_argument("--weights", help=".caffemodel (bundled for smallnet)")
    classify.add_argument("--mean", help="mean pixel B,G,R (default: the BVLC ImageNet mean)")
    classify.add_argument("--labels", help="text file with one class name per line")
    classify.add_argument("--top", type=int, default=5, help="number of classes shown")
    classify.add_argument("--output", help="output blob to rank (default: the first output)")
    classify.set_defaults(run=cmd_classify)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except UsageError as e:
        print("error: %s" % e, file=sys.stderr)
        return USAGE_ERROR
    except CaffeLRPError as e:
        print("error: %s" % e, file=sys.stderr)
        return DATA_ERROR
    except BrokenPipeError:  # output piped into head & co.
        sys.stderr.close()
        return 0
