"""Command line: ``python -m caffelrp explain|info|classify ...`` and the LRP Toolbox's own
invocation, ``python -m caffelrp -c CONFIG -f FILELIST [-p PREPENDPATH]``.

Exit codes: 0 everything done; 1 data errors (an image, a weights or mean file that cannot be
used; in a batch the other images are still done and the failures listed at the end); 2 usage
errors (arguments, config file, image list).
"""
import argparse
import hashlib
import io
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from . import __version__
from . import compat
from .errors import CaffeLRPError
from .bundled import BUNDLED, bundled_prototxt, bundled_weights, where_to_get_weights
from .io.caffemodel import write_atomically
from .methods import METHODS, Context, check_lrp_rule
from .net import Net
from .preprocess import (BVLC_MEAN_BGR, MeanError, default_base_size, image_to_blob, mean_pixel,
                         read_image, read_mean_file, toolbox_preprocess)
from .render import COLORMAPS, colorize, heatmap_scale, overlay, pixel_relevance, write_png

USAGE_ERROR, DATA_ERROR = 2, 1


from .limits import UsageError, check_explain_options  # noqa: E402


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


def check_weights(weights):
    if weights is not None and not Path(weights).is_file():
        raise UsageError("--weights %s: no such file" % weights)


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
    check_weights(weights)
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


# ------------------------------------------------------------------------- shared pieces
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".ppm", ".pgm",
                  ".pnm", ".webp"}


class Progress:
    """A one-line progress bar with images/s on stderr, only on a terminal and without --quiet."""

    def __init__(self, total, quiet=False, stream=None):
        self.stream = stream or sys.stderr
        self.enabled = (not quiet) and total > 0 and self.stream.isatty()
        self.total, self.done, self.start = total, 0, time.monotonic()

    def advance(self, n=1):
        self.done += n
        if not self.enabled:
            return
        elapsed = max(time.monotonic() - self.start, 1e-9)
        width = 30
        filled = int(width * self.done / self.total)
        self.stream.write("\r[%s%s] %d/%d images, %.2f images/s " % (
            "#" * filled, "." * (width - filled), self.done, self.total, self.done / elapsed))
        self.stream.flush()

    def close(self):
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()


class Report:
    """Failures and counts of a batch run; prints the summary and returns the exit code."""

    def __init__(self, quiet=False):
        self.quiet = quiet
        self.failures = []          # one-line messages, each naming the file
        self.done = self.skipped = 0
        self.start = time.monotonic()

    def fail(self, message):
        self.failures.append(str(message).replace("\n", " "))

    def finish(self, what, where=None):
        elapsed = time.monotonic() - self.start
        for message in self.failures:
            print("error: %s" % message, file=sys.stderr)
        if not self.quiet:
            rate = self.done / elapsed if elapsed > 0 else 0.0
            parts = ["%s %d image%s in %.1f s (%.2f images/s)" % (
                what, self.done, "" if self.done == 1 else "s", elapsed, rate)]
            if self.skipped:
                parts.append("%d already complete (skipped)" % self.skipped)
            if self.failures:
                parts.append("%d failed (listed above on stderr)" % len(self.failures))
            line = "; ".join(parts)
            print(line + ("; outputs in %s" % where if where and self.done else ""))
        return DATA_ERROR if self.failures else 0


_SHA256 = {}


def file_sha256(path):
    path = os.path.abspath(str(path))
    if path not in _SHA256:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                h.update(chunk)
        _SHA256[path] = h.hexdigest()
    return _SHA256[path]


def npy_bytes(array):
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def load_net(prototxt, weights):
    """The network, with the data errors of its files as CaffeLRPError (exit 1)."""
    return Net(prototxt, weights)


def image_input(net):
    """(H, W) of the net's single 3-channel image input, as the toolbox pipeline needs."""
    shape = net.blob_shapes[net.inputs[0]]
    if len(net.inputs) != 1 or len(shape) != 4 or shape[1] != 3:
        raise UsageError("the network must have one 3-channel image input (N x 3 x H x W), has "
                         "%s" % ", ".join("%s %s" % (n, "x".join(map(str, net.blob_shapes[n])))
                                          for n in net.inputs))
    return int(shape[2]), int(shape[3])


def class_count(net):
    shape = net.blob_shapes[net.outputs[0]]
    return int(np.prod(shape[1:]))


def bounds_for(preps):
    """Network input of a black and a white image per pixel: blob - crop, blob - crop + 255."""
    low = np.stack([p.blob - (p.as_inputted * 255.0)[:, :, ::-1].transpose(2, 0, 1)
                    for p in preps]).astype(np.float32)
    return low, (low + np.float32(255.0)).astype(np.float32)


# ------------------------------------------------------------------------------- explain
def parse_target(text):
    """--class: top5, top1, K, or K1,K2,... (explained together)."""
    t = text.strip().lower()
    if t in ("top5", "top1"):
        return t
    try:
        classes = [int(v) for v in t.split(",")]
    except ValueError:
        raise UsageError("--class takes top5, top1, a class index K or K1,K2,...; got %r"
                         % text) from None
    if any(c < 0 for c in classes):
        raise UsageError("--class: class indices are >= 0, got %r" % text)
    return classes[0] if len(classes) == 1 else classes


def resolve_mean(text):
    """--mean: B,G,R or a mean file (.binaryproto: BGR BlobProto; other files: the toolbox's text
    format). None: the BVLC mean pixel."""
    if text is None:
        return mean_pixel(BVLC_MEAN_BGR)
    if "," in text and not Path(text).exists():
        return mean_pixel(parse_mean(text))
    if not Path(text).is_file():
        raise UsageError("--mean %s: no such file (give a mean file or B,G,R)" % text)
    kind = 1 if text.lower().endswith((".binaryproto", ".protobin")) else 0
    return read_mean_file(text, kind)


def collect_images(paths, report):
    """[(image path, output stem)]: files as given, folders by their image files (sorted, not
    recursive); a missing path is a failure. Stems that repeat get -2, -3, ..."""
    found = []
    for p in paths:
        path = Path(p)
        if path.is_dir():
            files = sorted(f for f in path.iterdir()
                           if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                report.fail("%s: folder holds no image files (%s)"
                            % (p, ", ".join(sorted(IMAGE_SUFFIXES))))
            found.extend(str(f) for f in files)
        elif path.exists():
            found.append(str(path))
        else:
            report.fail("%s: no such file or folder" % p)
    seen, items = {}, []
    for f in found:
        stem = Path(f).stem
        seen[stem] = seen.get(stem, 0) + 1
        items.append((f, stem if seen[stem] == 1 else "%s-%d" % (stem, seen[stem])))
    return items


OUTPUT_SUFFIXES = {"relevance": "_relevance.npy", "heatmap": "_heatmap.png",
                   "overlay": "_overlay.png", "input": "_input.npy", "sidecar": ".json"}


def is_complete(out_dir, stem):
    """The sidecar is written last and lists every output: complete if it and they exist."""
    sidecar = out_dir / (stem + OUTPUT_SUFFIXES["sidecar"])
    try:
        outputs = json.loads(sidecar.read_text())["outputs"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return all((out_dir / name).is_file() for name in outputs.values())


def cmd_explain(args):
    method = METHODS[args.method]
    check_explain_options(args)
    prototxt, weights = resolve_model(args.model, args.weights)
    check_weights(weights)
    target = parse_target(args.target)
    if args.cmap not in COLORMAPS:
        raise UsageError("--cmap must be one of %s" % ", ".join(COLORMAPS))
    if args.batch_size < 1:
        raise UsageError("--batch-size must be >= 1")
    if args.method == "lrp":
        try:
            check_lrp_rule(args.rule)
        except ValueError as e:
            raise UsageError("--rule: %s" % e) from None
    try:
        mean = resolve_mean(args.mean)
    except MeanError as e:
        raise UsageError("--mean: %s" % e) from None
    out_dir = Path(args.out)
    report = Report(args.quiet)
    items = collect_images(args.images, report)

    net = load_net(prototxt, weights)
    in_h, in_w = image_input(net)
    base = args.base_size if args.base_size is not None else default_base_size(in_h, in_w)
    if base < max(in_h, in_w):
        raise UsageError("--base-size %d is smaller than the network input %dx%d"
                         % (base, in_w, in_h))
    k = class_count(net)
    for c in ([target] if isinstance(target, int) else target if isinstance(target, list)
              else []):
        if c >= k:
            raise UsageError("--class %d: out of range, %s has %d classes (0..%d)"
                             % (c, prototxt, k, k - 1))
    out_dir.mkdir(parents=True, exist_ok=True)

    pending = []
    for image, stem in items:
        if args.resume and is_complete(out_dir, stem):
            report.skipped += 1
        else:
            pending.append((image, stem))

    model = {"prototxt": str(prototxt), "prototxt_sha256": file_sha256(prototxt),
             "weights": str(weights) if weights else None,
             "weights_sha256": file_sha256(weights) if weights else None}
    run = {"method": args.method, "parameters": method.parameters(args),
           "target": target, "model": model}
    progress = Progress(len(pending), args.quiet)
    deferred = []        # with --shared-scale: rendered once every image is known
    for start in range(0, len(pending), args.batch_size):
        chunk = pending[start:start + args.batch_size]
        prepared = []
        for image, stem in chunk:
            try:
                prepared.append((image, stem, toolbox_preprocess(
                    read_image(image), in_h, in_w, base, mean)))
            except CaffeLRPError as e:
                report.fail(e)
                progress.advance()
        if not prepared:
            continue
        x = np.stack([p.blob for _, _, p in prepared])
        low, high = bounds_for([p for _, _, p in prepared])
        try:
            result = method.run(net, x, target, args, Context(low, high))
            scores = result.scores
            if scores is None:
                scores = net.forward(x)[net.outputs[0]]
            scores = np.asarray(scores, dtype=np.float32).reshape(len(x), -1)
        except (CaffeLRPError, ValueError) as e:
            for image, _, _ in prepared:
                report.fail("%s: %s" % (image, e))
            progress.advance(len(prepared))
            continue
        for n, (image, stem, prep) in enumerate(prepared):
            try:
                record = write_explanation(out_dir, image, stem, prep, result.values[n],
                                           result.classes[n], scores[n], net.outputs[0],
                                           run, args, defer=args.shared_scale,
                                           info=result.info[n] if result.info else None)
                if args.shared_scale:
                    deferred.append(record)
                else:
                    report.done += 1
            except (OSError, CaffeLRPError) as e:
                report.fail("%s: cannot write the outputs: %s" % (image, e))
            progress.advance()
    if deferred:
        scale = float(max(heatmap_scale(r["values"], args.cmap).max() for r in deferred)) \
            if args.scale is None else args.scale
        for record in deferred:
            try:
                render_and_finish(out_dir, record, scale, args)
                report.done += 1
            except OSError as e:
                report.fail("%s: cannot write the outputs: %s" % (record["image"], e))
    progress.close()
    return report.finish("explained", out_dir)


def write_explanation(out_dir, image, stem, prep, values, classes, scores, output_name, run,
                      args, defer=False, info=None):
    """Write the relevance (and input) arrays now; the PNGs and the sidecar (last) now or, with
    a shared scale, once every image of the run is known."""
    names = {"relevance": stem + OUTPUT_SUFFIXES["relevance"],
             "heatmap": stem + OUTPUT_SUFFIXES["heatmap"],
             "overlay": stem + OUTPUT_SUFFIXES["overlay"]}
    if args.save_input:
        names["input"] = stem + OUTPUT_SUFFIXES["input"]
        write_atomically(out_dir / names["input"], npy_bytes(prep.blob.astype(np.float32)))
    values = np.asarray(values, dtype=np.float32)
    write_atomically(out_dir / names["relevance"], npy_bytes(values))
    order = np.argsort(-scores.astype(np.float64), kind="stable")[:5]
    sidecar = {
        "caffelrp": __version__, "image": {"path": str(image), "sha256": file_sha256(image)},
        "model": run["model"], "method": run["method"], "parameters": run["parameters"],
        "target": run["target"], "classes": [int(c) for c in classes],
        "scores": {"output": output_name,
                   "explained": {str(int(c)): float(scores[c]) for c in classes},
                   "top5": [[int(c), float(scores[c])] for c in order]},
        "relevance_sum": float(values.astype(np.float64).sum()),
        "preprocessing": prep.info, "outputs": names}
    if info:
        sidecar["method_info"] = info
    record = {"image": image, "stem": stem, "sidecar": sidecar,
              "values": pixel_relevance(values), "as_inputted": prep.as_inputted}
    if not defer:
        scale = args.scale if args.scale is not None else float(
            heatmap_scale(record["values"], args.cmap)[0])
        render_and_finish(out_dir, record, scale, args)
    return record


def render_and_finish(out_dir, record, scale, args):
    names = record["sidecar"]["outputs"]
    heat = colorize(record["values"], scale, args.cmap)
    write_png(out_dir / names["heatmap"], heat)
    write_png(out_dir / names["overlay"], overlay(record["as_inputted"], heat, record["values"],
                                                  scale, args.overlay_alpha))
    record["sidecar"]["heatmap"] = {"cmap": args.cmap, "scale": scale,
                                    "shared_scale": bool(args.shared_scale),
                                    "value": "sum over channels"}
    write_atomically(out_dir / (record["stem"] + OUTPUT_SUFFIXES["sidecar"]),
                     (json.dumps(record["sidecar"], indent=1) + "\n").encode())


# ------------------------------------------------------------------ original-compatible mode
def _start_layer(config, net):
    index = config.lastlayerindex
    if index == -2:
        return "highest-ip"
    if index == -1:
        return "below-softmax"
    if index >= len(net.layers):
        raise UsageError("%s: lastlayerindex %d, but the network has %d layers"
                         % (config.where("lastlayerindex"), index, len(net.layers)))
    return index


def cmd_compat(args):
    """``lrp_demo CONFIG FILELIST PREPENDPATH`` (spec 1.1-1.7)."""
    if not args.filelist:
        raise UsageError("-c CONFIG needs -f FILELIST (and optionally -p PREPENDPATH)")
    try:
        config = compat.read_config(args.config)
        entries = compat.read_file_list(args.filelist, args.prepend)
    except compat.ConfigError as e:
        raise UsageError(str(e)) from None
    try:
        check_lrp_rule(config.relpropformulatype)
    except ValueError as e:
        raise UsageError("%s: %s" % (config.where("relpropformulatype"), e)) from None
    try:
        mean = read_mean_file(config.mean_file, config.use_mean_file_asbinaryprotoblob)
    except CaffeLRPError as e:
        raise UsageError("%s: mean_file: %s" % (config.where("mean_file"), e)) from None
    net = load_net(config.param_file, config.model_file)
    in_h, in_w = image_input(net)
    if config.baseimgsize < max(in_h, in_w):
        raise UsageError("%s: baseimgsize %d is smaller than the network input %dx%d"
                         % (config.where("baseimgsize"), config.baseimgsize, in_w, in_h))
    if config.numclasses != class_count(net):
        raise UsageError("%s: numclasses %d, but the network's output %s has %d values per image"
                         % (config.where("numclasses"), config.numclasses, net.outputs[0],
                            class_count(net)))
    start = _start_layer(config, net)
    report = Report(args.quiet)
    progress = Progress(len(entries), args.quiet)

    def run_batch(batch):
        prepared = []
        for entry in batch:
            try:
                if entry.class_field >= config.numclasses:
                    raise CaffeLRPError("%s (%s line %d): class %d out of range, numclasses is %d"
                                        % (entry.path, args.filelist, entry.line,
                                           entry.class_field, config.numclasses))
                out_base = compat.output_base(entry.path, config.standalone_rootpath,
                                              config.standalone_outpath)
                prepared.append((entry, out_base, toolbox_preprocess(
                    read_image(entry.path), in_h, in_w, config.baseimgsize, mean)))
            except CaffeLRPError as e:
                report.fail(e)
                progress.advance()
        if not prepared:
            return
        x = np.stack([p.blob for _, _, p in prepared])
        low, high = bounds_for([p for _, _, p in prepared])
        try:
            from .attribution import relevance
            values = relevance(net, x, rule=config.relpropformulatype, eps=config.epsstab,
                               beta=config.alphabeta_beta,
                               switch_layer=config.auxiliaryvariable_maxlayerindexforflatdistinconv,
                               target=batch[0].target, start=start, bounds=(low, high))
            scores = np.array(net.blobs[net.outputs[0]], dtype=np.float32).reshape(len(x), -1)
        except (CaffeLRPError, ValueError) as e:
            for entry, _, _ in prepared:
                report.fail("%s: %s" % (entry.path, e))
            progress.advance(len(prepared))
            return
        for n, (entry, out_base, prep) in enumerate(prepared):
            try:
                compat.write_outputs(out_base, values[n], scores[n], config.numclasses,
                                     prep.as_inputted)
                report.done += 1
            except OSError as e:
                report.fail("%s: cannot write %s: %s" % (entry.path, out_base, e))
            progress.advance()

    # one target per batch: consecutive entries with the same class field go together
    batch = []
    for entry in entries:
        if batch and (len(batch) == args.batch_size or entry.class_field != batch[0].class_field):
            run_batch(batch)
            batch = []
        batch.append(entry)
    if batch:
        run_batch(batch)
    progress.close()
    return report.finish("explained", config.standalone_outpath)


# -------------------------------------------------------------------------------- parser
def add_explain_parser(sub):
    explain = sub.add_parser(
        "explain", help="heatmaps for images: raw relevance .npy, heatmap and overlay PNGs, a "
                        "JSON sidecar per image",
        description="Explain the network's decision for each image. Preprocessing is the LRP "
                    "Toolbox's (ImageMagick-style resize of the longer side to --base-size, "
                    "centre crop with edge replication, mean subtraction, BGR). Per image "
                    "STEM (the file name without its suffix) it writes STEM_relevance.npy "
                    "(float32 C x H x W, the net's channel order), STEM_heatmap.png, "
                    "STEM_overlay.png, STEM.json (model hashes, method and parameters, "
                    "classes, scores, preprocessing; written last) and with --save-input "
                    "STEM_input.npy. Images must be 8-bit RGB (or palette) files at least as "
                    "large as the network input in one direction; grayscale, alpha and 16-bit "
                    "images are refused with a message.")
    explain.add_argument("images", nargs="+", metavar="IMAGE_OR_FOLDER",
                         help="image files, or folders whose image files are all explained")
    explain.add_argument("--model", required=True,
                         help="bundled model (%s) or a deploy.prototxt" % ", ".join(BUNDLED))
    explain.add_argument("--weights", help=".caffemodel (required except for smallnet)")
    explain.add_argument("--method", choices=sorted(METHODS), default="lrp",
                         help="attribution method (default lrp): " + "; ".join(
                             "%s: %s" % (m.name, m.summary) for m in METHODS.values()))
    explain.add_argument("--class", dest="target", default="top5", metavar="top5|top1|K",
                         help="what to explain: top5 (the 5 best classes together, default, the "
                              "toolbox setting), top1, a class index K or K1,K2,... (together)")
    explain.add_argument("--out", required=True, metavar="DIR", help="output folder")
    explain.add_argument("--mean", metavar="FILE|B,G,R",
                         help="mean to subtract: a .binaryproto (BGR planes, read as the toolbox "
                              "reads it), a toolbox text mean file, or a pixel B,G,R (default: "
                              "the BVLC ImageNet mean pixel %s)"
                              % ",".join("%g" % v for v in BVLC_MEAN_BGR))
    explain.add_argument("--base-size", type=int, metavar="PIXELS",
                         help="longer image side after the resize (the toolbox's baseimgsize; "
                              "default 256 for 224..256-pixel inputs, else the same ratio)")
    explain.add_argument("--batch-size", type=int, default=8,
                         help="images per network pass (default 8)")
    explain.add_argument("--cmap", default="seismic", metavar="NAME",
                         help="heatmap colours: %s (default seismic)" % ", ".join(COLORMAPS))
    explain.add_argument("--shared-scale", action="store_true",
                         help="one colour scale for all images of the run (the largest of "
                              "theirs) instead of one per image")
    explain.add_argument("--scale", type=float,
                         help="fixed value that maps to full colour (overrides the per-image or "
                              "shared scale)")
    explain.add_argument("--overlay-alpha", type=float, default=0.7,
                         help="opacity of the heatmap over the image at full colour (0.7)")
    explain.add_argument("--save-input", action="store_true",
                         help="also write the preprocessed network input (float32 C x H x W)")
    explain.add_argument("--resume", action="store_true",
                         help="skip images whose outputs are complete (sidecar and every file "
                              "it lists)")
    explain.add_argument("--quiet", action="store_true",
                         help="no progress bar and no summary (errors are still printed)")
    for method in METHODS.values():
        method.add_options(explain.add_argument_group("options of --method %s" % method.name))
    explain.set_defaults(run=cmd_explain)


def build_parser():
    parser = argparse.ArgumentParser(
        prog="python -m caffelrp",
        description="Run Caffe models without Caffe and explain their decisions. With -c/-f "
                    "(and no subcommand) it runs as the LRP Toolbox's lrp_demo CONFIG FILELIST "
                    "PREPENDPATH and writes its files: for each image of the list, "
                    "<standalone_outpath>/<path from standalone_rootpath on>_heatmap.png, "
                    "_top10scores.txt, _rawhm.txt, _as_inputted_into_the_dnn.png.",
        epilog="exit codes: 0 done, 1 data errors (images, weights, mean files; other images "
               "are still done), 2 usage errors (arguments, config file, image list)")
    parser.add_argument("--version", action="version", version="caffelrp " + __version__)
    original = parser.add_argument_group("original-compatible mode (lrp_demo)")
    original.add_argument("-c", "--config", metavar="CONFIG",
                          help="the toolbox's config file (all 15 keys; paths in it are "
                               "relative to the working directory, as in the original)")
    original.add_argument("-f", "--filelist", metavar="FILELIST",
                          help="image list: one 'path classfield' per line (-2 top-5, -1 top-1, "
                               "k class k)")
    original.add_argument("-p", "--prepend", metavar="PREPENDPATH", default="./",
                          help="prepended to each listed path as PREPENDPATH/path (default ./)")
    original.add_argument("--batch-size", type=int, default=8,
                          help="images per network pass (default 8; results do not depend on it)")
    original.add_argument("--quiet", action="store_true", help="no progress bar, no summary")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    add_explain_parser(sub)

    info = sub.add_parser("info", help="list a network's layers with Caffe's indices, shapes and "
                                       "parameter counts")
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
    if args.command is None:
        if args.config is None:
            parser.print_usage(sys.stderr)
            print("error: give a command (explain, info, classify) or -c CONFIG -f FILELIST",
                  file=sys.stderr)
            return USAGE_ERROR
        args.run = cmd_compat
    elif args.config is not None or args.filelist is not None:
        print("error: -c/-f (the original-compatible mode) take no subcommand", file=sys.stderr)
        return USAGE_ERROR
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
