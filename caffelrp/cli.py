"""Command line: ``python -m caffelrp explain|info|classify ...`` and the LRP Toolbox's own
invocation, ``python -m caffelrp -c CONFIG -f FILELIST [-p PREPENDPATH]``.

Exit codes: 0 everything done; 1 data errors (an image, a weights or mean file that cannot be
used; in a batch the other images are still done and the failures listed at the end); 2 usage
errors (arguments, config file, image list).
"""
import argparse
import io
import json
import os
import sys
import threading
import time
from collections import namedtuple
from pathlib import Path

import numpy as np

from . import __version__
from . import caffe_blas, compat, distributed, workers, zoo
from .errors import CaffeLRPError
from .bundled import BUNDLED, bundled_prototxt, bundled_weights, where_to_get_weights
from .bundled import class_names as bundled_class_names
from .files import file_sha256, json_bytes, write_atomically
from .methods import METHODS, Context, check_lrp_rule
from .net import Net
from .phases import phase
from . import phases
from .pipeline import OutputWriter, Prefetch
from .threads import ThreadCountError, get_num_threads, set_num_threads
from .limits import UsageError, check_explain_options
from .preprocess import (BVLC_MEAN_BGR, default_base_size, image_to_blob, mean_pixel, read_image,
                         read_mean_file, toolbox_preprocess)
from .render import (COLORMAPS, OVERLAY_CLIP, colorize, heatmap_scale, overlay, overlay_scale,
                     pixel_relevance, write_png)

USAGE_ERROR, DATA_ERROR = 2, 1
INTERRUPTED = 130     # 128 + SIGINT, as shells report a Ctrl-C


def resolve_model(model, weights, verify=True):
    """(prototxt, caffemodel) from a bundled model name or a prototxt path; weights given for a
    named model must be its published file (with ``verify``), fetched ones come from the cache."""
    if model in BUNDLED:
        prototxt = bundled_prototxt(model)
        if weights is not None and verify and Path(weights).is_file():
            zoo.check_named_weights(model, weights)
        if weights is None:
            weights = bundled_weights(model) or zoo.cached_weights(model)
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
    if len(values) != 3 or not all(np.isfinite(values)):
        raise UsageError("--mean takes three finite numbers B,G,R, got %r" % text)
    return values


def resolve_info_model(name):
    """info's argument: a bundled model name or a prototxt path."""
    if name in BUNDLED:
        return bundled_prototxt(name), bundled_weights(name)
    if not Path(name).is_file():
        raise UsageError("info takes one of %s or a prototxt file; %s does not exist"
                         % (", ".join(BUNDLED), name))
    return name, None


def cmd_info(args):
    prototxt, bundled = resolve_info_model(args.prototxt)
    weights = args.caffemodel or bundled
    check_weights(weights)
    net = Net(prototxt, weights, allow_missing_weights=True)
    print("%s: %d layers, inputs %s, outputs %s" % (net.name or prototxt, len(net.layers),
                                                     net.inputs, net.outputs))
    print("%5s  %-34s %-14s %-22s %12s" % ("index", "name", "type", "top shape", "parameters"))
    total = 0
    for i, (name, type_) in enumerate(net.layers):
        layer = net.layer(i)
        count = sum(int(np.prod(s, dtype=np.int64)) for s in layer.weight_shapes())
        total += count
        shape = "x".join(str(d) for d in layer.top_shapes[0]) if getattr(
            layer, "top_shapes", None) else "input"
        print("%5d  %-34s %-14s %-22s %12s" % (i, name, type_, shape, count or ""))
    first = net.blob_shapes[net.inputs[0]]
    if first is None:   # an Input layer without a shape: sizes known once an input arrives
        print("parameters: %d; input shapes not declared (sizes depend on the input)" % total)
    else:
        print("parameters: %d; forward: %.2f GFLOP per batch of %d" % (
            total, net.flops() / 1e9, first[0]))
    print(weights_summary(net, weights))
    return 0


def weights_summary(net, weights):
    """One line: which weights the layers got, and which layers of the file were ignored."""
    with_params = [net.layer(i) for i in range(len(net.layers)) if net.layer(i).weight_shapes()]
    if weights is None:
        return ("weights: none given (structure only; %d layer(s) with parameters would run "
                "with Caffe's default values)" % len(with_params))
    loaded = sum(1 for layer in with_params if layer.weights_loaded)
    line = "weights: %s matched all %d layer(s) with parameters" % (weights, loaded) \
        if loaded == len(with_params) else "weights: %s matched %d of %d layer(s) with " \
        "parameters" % (weights, loaded, len(with_params))
    ignored = net.ignored_weight_layers
    line += "; ignored %d layer(s) of the file%s" % (
        len(ignored), (": " + ", ".join(ignored)) if ignored else "")
    note = weights_note(weights)
    return line + ("; " + note if note else "")


def class_names(prototxt, labels, model=None):
    """Class names: --labels FILE, else a synset/labels file next to the prototxt (one name per
    line; a leading WordNet id such as n01440764, or any id in a synset*.txt, is dropped), else the bundled ImageNet names of
    a bundled ImageNet model; None if there is none."""
    path = Path(labels) if labels else None
    if path is None:
        folder = Path(prototxt).parent
        candidates = sorted(folder.glob("synset*.txt")) + sorted(folder.glob("labels*.txt"))
        if not candidates:
            return bundled_class_names(model) if model else None
        path = candidates[0]
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise UsageError("--labels %s: cannot read it: %s" % (path, e.strerror or e)) from None
    except UnicodeDecodeError:
        raise UsageError("--labels %s: not a text file (one class name per line, UTF-8)"
                         % path) from None
    # a synset file (Caffe's synset_words.txt) starts each line with the class id
    synset = path.name.startswith("synset")
    names = []
    for line in lines:
        first, _, rest = line.strip().partition(" ")
        wnid = len(first) == 9 and first[0] == "n" and first[1:].isdigit()
        names.append(rest.strip() if (wnid or synset) and rest else line.strip())
    return names


CLASSIFY_PIPELINES = ("toolbox", "pycaffe")


def ranked_classes(net, output, scores):
    """Classes by score, best first; ties of a softmax output (probabilities that round to 0 or
    1) broken by its input, the logits, as explain ranks the classes it explains."""
    tie_break = np.zeros_like(scores, dtype=np.float64)
    for i, info in enumerate(net.layers):
        if info.type == "Softmax" and output in net.layer_tops(i):
            logits = np.asarray(net.blobs[net.layer_bottoms(i)[0]]).reshape(-1)
            if logits.size == scores.size:
                tie_break = logits.astype(np.float64)
    return np.lexsort((-tie_break, -scores.astype(np.float64)))


def cmd_classify(args):
    if args.top < 1:
        raise UsageError("--top must be >= 1")
    model = open_model(args)
    net, prototxt, mean = model.net, model.prototxt, model.mean
    in_h, in_w, base = model.in_h, model.in_w, model.base
    names = class_names(prototxt, args.labels, args.model)
    report = Report(quiet=True)
    images = [image for image, _ in collect_images(args.images, report)]
    output = args.output or net.outputs[0]
    if output not in net.outputs and output not in net.blob_shapes:
        raise UsageError("--output %s: the network has no blob of that name (outputs: %s)"
                         % (output, ", ".join(net.outputs)))
    # the pycaffe pipeline subtracts a pixel: the per-channel average of a mean image
    mean_bgr = mean.values if mean.is_pixel else mean.values.reshape(3, -1).mean(axis=1)
    results = []
    if not args.json:
        print("# top %d of %s; preprocessing %s%s" % (
            args.top, output, args.preprocess,
            " (the same as explain)" if args.preprocess == "toolbox" else
            " (bilinear squash to %dx%d, differs from explain)" % (in_w, in_h)))
    for image in images:
        try:
            if args.preprocess == "toolbox":
                x = toolbox_preprocess(read_image(image), in_h, in_w, base, mean).blob[None]
            else:
                x = image_to_blob(image, in_h, in_w, mean_bgr)[None]
        except CaffeLRPError as e:
            report.fail(e)
            continue
        net.forward(x)
        scores = np.asarray(net.blobs[output]).reshape(-1)
        top = ranked_classes(net, output, scores)[:args.top]
        entry = {"image": str(image), "top": [
            {"class": int(k), "name": names[k] if names and k < len(names) else None,
             "score": float(scores[k])} for k in top]}
        results.append(entry)
        if not args.json:
            print(image)
            print("  %4s  %6s  %10s  %s" % ("rank", "class", "score", "name"))
            for rank, t in enumerate(entry["top"], 1):
                print("  %4d  %6d  %10.4g  %s" % (rank, t["class"], t["score"], t["name"] or ""))
    if args.json:
        sys.stdout.write(json_bytes(results, "classify --json").decode())
    for message in report.failures:
        print("error: %s" % message, file=sys.stderr)
    return DATA_ERROR if report.failures else 0


# ------------------------------------------------------------------------- shared pieces
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".ppm", ".pgm",
                  ".pnm", ".webp"}


class Progress:
    """A one-line progress bar on stderr, only on a terminal and without --quiet: drawn at once,
    redrawn every second (elapsed time and ETA keep moving during a long batch) and after each
    image, with the failed images counted apart. While one call explains a whole batch, the bar
    names the images in that call ("working on 9-16"), since a batched pass has no per-image end."""

    def __init__(self, total, quiet=False, stream=None, interval=1.0):
        self.stream = stream or sys.stderr
        isatty = getattr(self.stream, "isatty", None)
        self.enabled = (not quiet) and total > 0 and bool(isatty and isatty())
        self.total, self.done, self.failed, self.start = total, 0, 0, time.monotonic()
        # images handed to a call so far: those not finished are shown as "working on a-b"
        # (the writer thread finishes images while the next call already runs)
        self.started = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ticker = None
        if self.enabled:
            self._draw()
        if interval:
            self.start_clock(interval)

    def start_clock(self, interval=1.0):
        """Redraw every ``interval`` seconds from a thread of its own (once)."""
        if self.enabled and self._ticker is None:
            self._ticker = threading.Thread(target=self._tick, args=(interval,), daemon=True)
            self._ticker.start()

    def _tick(self, interval):
        while not self._stop.wait(interval):
            self._draw()

    def _draw(self):
        with self._lock:
            if self._stop.is_set():
                return
            elapsed = time.monotonic() - self.start
            finished = self.done + self.failed
            width = 30
            filled = int(width * finished / self.total)
            eta = ("ETA %s" % _clock(elapsed / finished * (self.total - finished))
                   if finished else "ETA -")
            rate = self.done / elapsed if elapsed > 0 else 0.0
            failed = ", %d failed" % self.failed if self.failed else ""
            running = min(self.started - finished, self.total - finished)
            working = ("" if running <= 0 else ", working on %d" % (finished + 1) if running == 1
                       else ", working on %d-%d" % (finished + 1, finished + running))
            self.stream.write("\r[%s%s] %d/%d images%s%s, %s elapsed, %s, %.2f images/s " % (
                "#" * filled, "." * (width - filled), finished, self.total, failed, working,
                _clock(elapsed), eta, rate))
            self.stream.flush()

    def working(self, n):
        """n more images go into the call that starts now (cleared image by image by advance)."""
        with self._lock:
            self.started = max(self.started, self.done + self.failed) + n
        if self.enabled:
            self._draw()

    def advance(self, n=1, failed=False):
        with self._lock:
            if failed:
                self.failed += n
            else:
                self.done += n
        if self.enabled:
            self._draw()

    def close(self):
        self._stop.set()
        if self.enabled:
            with self._lock:
                self.stream.write("\n")
                self.stream.flush()


def _clock(seconds):
    seconds = int(round(seconds))
    return "%d:%02d:%02d" % (seconds // 3600, seconds // 60 % 60, seconds % 60) \
        if seconds >= 3600 else "%d:%02d" % (seconds // 60, seconds % 60)


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


def npy_bytes(array):
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def load_net(prototxt, weights):
    """The network, with the data errors of its files as CaffeLRPError (exit 1). The command line
    never runs Caffe's default (zero) weights: a net with parameters needs --weights."""
    with phase("net load"):
        net = Net(prototxt, weights)
    if weights is None:
        with_params = [layer.name for layer in net.layers if net.layer(layer.name).weight_shapes()]
        if with_params:
            raise UsageError("--weights is required: %s has %d layer(s) with parameters (%s) "
                             "and without weights they would all be zero"
                             % (prototxt, len(with_params), ", ".join(with_params[:3])
                                + (", ..." if len(with_params) > 3 else "")))
    return net


def image_input(net):
    """(H, W) of the net's single 3-channel image input, as the toolbox pipeline needs."""
    shape = net.blob_shapes[net.inputs[0]]
    if len(net.inputs) != 1 or shape is None or len(shape) != 4 or shape[1] != 3:
        raise UsageError("the network must have one 3-channel image input of a declared shape "
                         "(N x 3 x H x W), has %s" % ", ".join(
                             "%s %s" % (n, "x".join(map(str, net.blob_shapes[n]))
                                        if net.blob_shapes[n] is not None else "(no shape)")
                             for n in net.inputs))
    return int(shape[2]), int(shape[3])


def toolbox_geometry(net, base_size):
    """(H, W) of the net's image input and the toolbox's base size (--base-size or its
    default)."""
    in_h, in_w = image_input(net)
    base = base_size or default_base_size(in_h, in_w)
    if base < max(in_h, in_w):
        raise UsageError("--base-size %d is smaller than the network input %dx%d"
                         % (base, in_w, in_h))
    return in_h, in_w, base


def class_count(net):
    shape = net.blob_shapes[net.outputs[0]]
    return int(np.prod(shape[1:]))


OpenedModel = namedtuple("OpenedModel", "net prototxt weights mean in_h in_w base classes")


def open_model(args, needs_geometry=True):
    """The net, files, mean and input geometry of --model/--weights/--mean/--base-size: the one
    place explain, classify, evaluate and reproduce open what they run (usage errors exit 2,
    data errors in the files exit 1)."""
    verify = not getattr(args, "no_weights_check", False)
    prototxt, weights = resolve_model(args.model, args.weights, verify)
    check_weights(weights)
    mean = resolve_mean(args.mean)
    net = load_net(prototxt, weights)
    in_h, in_w, base = toolbox_geometry(net, args.base_size) if needs_geometry else (
        None, None, None)
    return OpenedModel(net, prototxt, weights, mean, in_h, in_w, base, class_count(net))


def check_class(target, model, option="--class"):
    """Every class index of a target (K, [K1, K2, ...]; 'top5'/'top1' pass) is one the net has."""
    for c in ([target] if isinstance(target, int) else target if isinstance(target, list)
              else []):
        if not isinstance(c, str) and not 0 <= c < model.classes:
            raise UsageError("%s %d: out of range, %s has %d classes (0..%d)"
                             % (option, c, model.prototxt, model.classes, model.classes - 1))


def add_model_options(parser, weights_help=".caffemodel (required except for smallnet)",
                      base_help="longer image side after the resize (the toolbox's "
                                "baseimgsize; default 256 for 224..256-pixel inputs, else the "
                                "same ratio)"):
    """--model, --weights, --mean and --base-size, as every subcommand that runs a net takes
    them (open_model reads them)."""
    parser.add_argument("--model", required=True,
                        help="bundled model (%s) or a deploy.prototxt" % ", ".join(BUNDLED))
    parser.add_argument("--weights", help=weights_help)
    parser.add_argument("--mean", metavar="FILE|B,G,R",
                        help="mean to subtract: a .binaryproto (BGR planes, read as the toolbox "
                             "reads it), a toolbox text mean file, or a pixel B,G,R (default: "
                             "the BVLC ImageNet mean pixel %s)"
                             % ",".join("%g" % v for v in BVLC_MEAN_BGR))
    parser.add_argument("--base-size", type=int, metavar="PIXELS", help=base_help)


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
    format). None: the BVLC mean pixel. A mean that cannot be used is a usage error."""
    if text is None:
        return mean_pixel(BVLC_MEAN_BGR)
    if "," in text and not Path(text).exists():
        return mean_pixel(parse_mean(text))
    if not Path(text).is_file():
        raise UsageError("--mean %s: no such file (give a mean file or B,G,R)" % text)
    kind = 1 if text.lower().endswith((".binaryproto", ".protobin")) else 0
    try:
        return read_mean_file(text, kind)
    except CaffeLRPError as e:   # corrupt, empty or NaN: all one usage error, as -c/-f's
        raise UsageError("--mean: %s" % e) from None


def collect_images(paths, report):
    """[(image path, output stem)]: files as given, folders by their image files (sorted, not
    recursive); a missing path is a failure. Output stems never collide (``output_stems``)."""
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
    return list(zip(found, output_stems(found)))


def output_stems(paths):
    """One output stem per image path, never two alike (compared case-insensitively, for the
    file systems that do): a stem used once is kept; a repeated stem gets -2, -3, ... skipping any
    name another image has as its own stem (``a.jpg a.png a-2.png`` -> a, a-3, a-2)."""
    def key(name):
        return name.casefold()
    counts = {}
    for p in paths:
        counts[key(Path(p).stem)] = counts.get(key(Path(p).stem), 0) + 1
    taken = {k for k, n in counts.items() if n == 1}
    stems = []
    for p in paths:
        stem = Path(p).stem
        if counts[key(stem)] == 1:
            stems.append(stem)
            continue
        name, k = stem, 1
        while key(name) in taken:
            k += 1
            name = "%s-%d" % (stem, k)
        taken.add(key(name))
        stems.append(name)
    return stems


OUTPUT_SUFFIXES = {"relevance": "_relevance.npy", "heatmap": "_heatmap.png",
                   "overlay": "_overlay.png", "input": "_input.npy", "sidecar": ".json"}


def run_identity(args, method, target, model, base, mean):
    """What made an output file, as the sidecar records it under "run": two runs whose identities
    are equal write the same files for the same image. JSON-normalised so it compares equal to a
    sidecar's copy."""
    mean_identity = mean.describe()
    if "sha256" in mean_identity:   # a mean file: its content, not the path it was given by
        mean_identity.pop("source", None)
    identity = {"caffelrp": __version__, "method": args.method,
                "parameters": method.parameters(args), "target": target,
                "prototxt_sha256": model["prototxt_sha256"],
                "weights_sha256": model["weights_sha256"],
                "preprocessing": {"pipeline": "lrp-toolbox", "base_size": base,
                                  "mean": mean_identity},
                "heatmap": {"cmap": args.cmap, "overlay_alpha": args.overlay_alpha,
                            "scale": ("fixed %r" % args.scale if args.scale is not None else
                                      "shared" if args.shared_scale else "per image")},
                "save_input": bool(args.save_input),
                # Caffe-exact mode moves the last bits (and tied max-pool windows)
                "blas": caffe_blas.describe()}
    return json.loads(json_bytes(identity, "the run identity"))


def identity_differences(stored, current, prefix=""):
    """Keys (dotted) where a stored run identity differs from the current one, with both values."""
    if stored is None and not prefix:
        return ["no 'run' record (made by an older caffelrp)"]
    if not isinstance(stored, dict):
        return ["%s %s here %s" % (prefix or "run", _short(stored), _short(current))]
    out = []
    for k in sorted(set(stored) | set(current)):
        a, b = stored.get(k), current.get(k)
        if a == b:
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            out.extend(identity_differences(a, b, prefix + k + "."))
        else:
            out.append("%s%s %s here %s" % (prefix, k, _short(a), _short(b)))
    return out


def _short(value):
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def read_sidecar(path):
    try:
        sidecar = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return sidecar if isinstance(sidecar, dict) and "outputs" in sidecar else None


def output_status(out_dir, stem, image, identity):
    """None if the outputs of ``image`` under ``stem`` are complete and made by this run's
    identity from this very image; else why they must be (re)done."""
    sidecar = read_sidecar(out_dir / (stem + OUTPUT_SUFFIXES["sidecar"]))
    if sidecar is None:
        return "no complete sidecar"
    try:
        if sidecar["image"]["sha256"] != file_sha256(image):
            return "made from another image (%s)" % sidecar["image"].get("path")
        outputs = dict(sidecar["outputs"])
    except (OSError, KeyError, TypeError, AttributeError):
        return "sidecar does not name its image"
    differences = identity_differences(sidecar.get("run"), identity)
    if differences:
        return "made with other settings: " + "; ".join(differences)
    if not all((out_dir / name).is_file() for name in outputs.values()):
        return "files missing"
    return None


def foreign_sidecars(out_dir, identity):
    """{sidecar name: differences} of the caffelrp sidecars in ``out_dir`` another run made."""
    found = {}
    if not out_dir.is_dir():
        return found
    for path in sorted(out_dir.glob("*" + OUTPUT_SUFFIXES["sidecar"])):
        sidecar = read_sidecar(path)
        if sidecar is None or "caffelrp" not in sidecar:
            continue
        differences = identity_differences(sidecar.get("run"), identity)
        if differences:
            found[path.name] = differences
    return found


SMALLNET_NOTE = ("note: the bundled smallnet has seeded random weights (it shows how caffelrp "
                 "runs, not a trained model): its classes and heatmaps mean nothing")


def weights_note(weights):
    """What the sidecar says about weights that are not a trained model (the bundled smallnet)."""
    bundled = bundled_weights("smallnet")
    if weights is not None and bundled is not None and \
            os.path.abspath(str(weights)) == os.path.abspath(str(bundled)):
        return "seeded random weights (the bundled smallnet example, not a trained model)"
    return None


def check_method_options(args):
    """An option of another --method is a usage error naming the method it belongs to."""
    declared_by = getattr(args, "_method_option_owner", {})
    for dest, flag in sorted(getattr(args, "_given_method_options", {}).items()):
        # a method owns the options of its group and those its parameters record (--seed, --score
        # are declared once and shared by the gradient methods)
        owners = [m.name for m in METHODS.values()
                  if declared_by.get(dest) == m.name or dest in m.parameters(args)]
        if args.method in owners:
            continue
        raise UsageError("%s is an option of --method %s; --method %s does not use it"
                         % (flag, " / ".join(owners) or "?", args.method))


def cmd_explain(args):
    method = METHODS[args.method]
    check_method_options(args)
    check_explain_options(args)
    target = parse_target(args.target)
    if args.cmap not in COLORMAPS:
        raise UsageError("--cmap must be one of %s" % ", ".join(COLORMAPS))
    if args.batch_size < 1:
        raise UsageError("--batch-size must be >= 1")
    if not 0 <= args.clip <= 100:
        raise UsageError("--clip is a percentile in [0, 100] (0: no clipping), got %g" % args.clip)
    if args.method == "lrp":
        try:
            check_lrp_rule(args.rule)
        except ValueError as e:
            raise UsageError("--rule: %s" % e) from None
    opened = open_model(args)
    net, prototxt, weights, mean = opened.net, opened.prototxt, opened.weights, opened.mean
    in_h, in_w, base = opened.in_h, opened.in_w, opened.base
    check_class(target, opened)
    out_dir = Path(args.out)
    report = Report(args.quiet)
    items = collect_images(args.images, report)
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError("--out %s is a file, not a folder" % out_dir)

    with phase("weights digest"):
        model = {"prototxt": str(prototxt), "prototxt_sha256": file_sha256(prototxt),
                 "weights": str(weights) if weights else None,
                 "weights_sha256": file_sha256(weights) if weights else None}
    note = weights_note(weights)
    if note:
        model["note"] = note
        if not args.quiet:
            print(SMALLNET_NOTE, file=sys.stderr)
    identity = run_identity(args, method, target, model, base, mean)
    foreign = foreign_sidecars(out_dir, identity)
    if foreign and not args.resume:
        name, differences = next(iter(foreign.items()))
        raise UsageError(
            "--out %s holds the outputs of another run for %d image(s) (%s: %s); give another "
            "--out, or --resume to redo the images of this run whose outputs differ"
            % (out_dir, len(foreign), name, "; ".join(differences)))
    out_dir.mkdir(parents=True, exist_ok=True)

    pending = []
    for image, stem in items:
        if args.resume and output_status(out_dir, stem, image, identity) is None:
            report.skipped += 1
        else:
            pending.append((image, stem))
    run = {"method": args.method, "parameters": method.parameters(args),
           "target": target, "model": model, "identity": identity,
           "class_names": class_names(prototxt, None, args.model)}
    if args.dask or args.dask_scheduler_file:
        return distributed.explain_on_cluster(args, pending, target, run, out_dir,
                                              (in_h, in_w, base, mean), report)
    geometry = (in_h, in_w, base, mean)
    batches = [pending[start:start + args.batch_size]
               for start in range(0, len(pending), args.batch_size)]
    count = explain_worker_count(args, net, len(batches))
    if count > 1:
        finished = explain_in_workers(net, method, batches, target, args, run, out_dir,
                                      geometry, report, count)
    else:
        finished = explain_in_pipeline(net, method, batches, target, args, run, out_dir,
                                       geometry, report, identity)
    if not finished:
        left = len(pending) - report.done - len(report.failures)
        print("interrupted: %d done, %d left (use --resume)" % (report.done, max(left, 0)),
              file=sys.stderr)
        return INTERRUPTED
    if args.resume and foreign:
        redone = {stem + OUTPUT_SUFFIXES["sidecar"] for _, stem in pending}
        others = sorted(set(foreign) - redone)
        if others:
            print("warning: %s still holds %d sidecar(s) of another run, not among these images "
                  "(e.g. %s)" % (out_dir, len(others), others[0]), file=sys.stderr)
    return report.finish("explained", out_dir)


def explain_in_pipeline(net, method, batches, target, args, run, out_dir, geometry, report,
                        identity):
    """One process, its kernels on every thread, reading ahead and writing behind
    (``pipeline``): False when interrupted."""
    progress = Progress(sum(len(chunk) for chunk in batches), args.quiet)
    deferred = []        # with --shared-scale: rendered once every image is known
    # the next batch is preprocessed and the last one's files are written while a batch runs
    writer = OutputWriter(depth=2 * args.batch_size)
    try:
        with Prefetch(batches, lambda chunk: prepare_batch(chunk, geometry)) as prefetch:
            for chunk, prepared in prefetch:
                explain_batch(net, method, chunk, target, args, run, out_dir, geometry, report,
                              progress, deferred, prepared=prepared, writer=writer)
        writer.close()
        if args.shared_scale and args.scale is None:
            finish_shared_scale(out_dir, deferred, identity, geometry, args, report)
        elif deferred:
            for record in deferred:
                finish_record(out_dir, record, args.scale, args, report)
    except KeyboardInterrupt:
        writer.cancel()      # the file being written is finished (or removed), no other starts
        return False
    finally:
        writer.cancel()      # after close: nothing to do; after an error: stop the thread
        progress.close()
    return True


def worker_count(requested, net, batches, batch_size, shared=False, own_batches=False):
    """How many worker processes share ``batches`` (``--workers``: "auto" or a count; 1: this
    process). ``shared``: --shared-scale, which needs one process; ``own_batches``: the method
    batches its own inputs (ig, smoothgrad), so a worker holds more than ``batch_size``."""
    threads = get_num_threads()
    # Caffe-exact mode's OpenBLAS rounds its products by its own thread count: one-thread
    # workers would not give the bits of a run on `threads` threads
    exact = caffe_blas.active() and threads > 1
    if requested == "auto":
        if shared or exact or batches < 2 * threads:     # too few batches to share
            return 1
        memory = workers.worker_memory(net, max(batch_size, 32) if own_batches else batch_size)
        return workers.auto_count(threads, batches, memory)
    try:
        count = int(requested)
    except ValueError:
        count = 0
    if count < 1:
        raise UsageError("--workers takes a number of processes >= 1 or auto, got %r"
                         % requested)
    if count > 1 and not workers.can_fork():
        raise UsageError("--workers %d needs fork (Linux); give --workers 1" % count)
    if count > 1 and shared:
        raise UsageError("--shared-scale needs every image's relevance in one process; with "
                         "--workers %d give a fixed --scale, or --workers 1" % count)
    if count > 1 and exact:
        raise UsageError("--workers %d with --caffe-blas: that OpenBLAS rounds its products by "
                         "its thread count, and a worker runs one thread, so the files would "
                         "differ from a run with --threads %d; give --workers 1, or --threads 1"
                         % (count, threads))
    return max(1, min(count, batches))


def explain_worker_count(args, net, batches):
    return worker_count(args.workers, net, batches, args.batch_size,
                        shared=args.shared_scale and args.scale is None,
                        own_batches=args.method in PER_IMAGE_METHODS)


def explain_in_workers(net, method, batches, target, args, run, out_dir, geometry, report,
                       count):
    """``explain``'s batches in ``count`` worker processes: False when interrupted."""
    def run_batch(chunk, batch_report, progress):
        explain_batch(net, method, chunk, target, args, run, out_dir, geometry, batch_report,
                      progress, [])
    return in_workers(count, batches, run_batch, report, args.quiet, [out_dir],
                      lambda chunk: [image for image, _ in chunk])


def in_workers(count, batches, run_batch, report, quiet, out_dirs, images):
    """``count`` forked processes, one kernel thread each, take the batches in turn and write
    their files themselves (``workers``); ``run_batch(batch, report, progress)`` runs in a
    worker, ``images(batch)`` names a batch's images. False when interrupted."""
    def work(index):               # in a worker
        done = Report(quiet=True)
        try:
            run_batch(batches[index], done, Progress(0, quiet=True))
        except CaffeLRPError as e:
            done.failures.extend("%s: %s" % (image, e) for image in images(batches[index]))
        return done.done, done.failures

    def names(index):
        first, *rest = images(batches[index])
        return str(first) if not rest else "%s ... %s" % (first, rest[-1])

    failed = {}            # batch -> its failures, listed in image order at the end

    def on_result(index, done, failures):
        report.done += done
        failed[index] = failures
        progress.advance(done)
        if failures:
            progress.advance(len(failures), failed=True)

    progress = Progress(sum(len(batch) for batch in batches), quiet, interval=0)
    try:
        pool = workers.Workers(count, len(batches), work).start()
        progress.start_clock()     # after the fork: the clock's thread is not in the workers
        pool.collect(lambda index: progress.working(len(batches[index])), on_result, names,
                     out_dirs)
    except KeyboardInterrupt:
        return False
    finally:
        progress.close()
        for index in sorted(failed):
            report.failures.extend(failed[index])
    return True


def prepare_batch(chunk, geometry):
    """Read and preprocess (image, stem) pairs: ([(image, stem, prepared input)], [the failures,
    CaffeLRPError naming the image])."""
    in_h, in_w, base, mean = geometry
    prepared, failures = [], []
    for image, stem in chunk:
        try:
            prepared.append((image, stem, toolbox_preprocess(
                read_image(image), in_h, in_w, base, mean)))
        except CaffeLRPError as e:
            failures.append(e)
    return prepared, failures


def _in_order(writer, job, label=""):
    """Run ``job`` behind the compute on the writer thread (in submission order), or now."""
    if writer is None:
        with phase("outputs"):
            job()
    else:
        writer.submit(job, label)


def explain_batch(net, method, chunk, target, args, run, out_dir, geometry, report, progress,
                  deferred, prepared=None, writer=None):
    """Preprocess (unless ``prepared``, ``prepare_batch``'s result, is given), explain and write
    one batch of (image, stem): the unit of work of a local run and of a Dask task alike, so both
    write the same files. With a ``writer`` (``pipeline.OutputWriter``) the files are written and
    the images counted on its thread, in image order; without, before this returns."""
    if prepared is None:
        with phase("preprocess"):
            prepared = prepare_batch(chunk, geometry)
    prepared, failures = prepared
    if failures:
        progress.working(len(failures))

    def failed(failures=failures):
        for e in failures:
            report.fail(e)
            progress.advance(failed=True)
    if failures:
        _in_order(writer, failed)
    if not prepared:
        return
    # the methods that run many inputs per image (and batch those themselves) go image by image,
    # so that the progress bar moves after each image, not once per --batch-size images
    groups = [[p] for p in prepared] if method.name in PER_IMAGE_METHODS else [prepared]
    for group in groups:
        explain_group(net, method, group, target, args, run, out_dir, report, progress,
                      deferred, writer)


PER_IMAGE_METHODS = {"ig", "smoothgrad"}


def explain_group(net, method, prepared, target, args, run, out_dir, report, progress, deferred,
                  writer=None):
    """Explain preprocessed images in one call of the method and write their outputs."""
    x = np.stack([p.blob for _, _, p in prepared])
    low, high = bounds_for([p for _, _, p in prepared])
    try:
        # K1,K2,... is explained together in every image: one class list per image
        batch_target = [target] * len(x) if isinstance(target, list) else target
        progress.working(len(x))
        with phase("method"):
            result = method.run(net, x, batch_target, args, Context(low, high))
            scores = result.scores
            if scores is None:
                scores = net.forward(x)[net.outputs[0]]
        # copies: the writer thread reads them while the next batch reuses the net's buffers
        values = np.array(result.values)
        scores = np.array(scores, dtype=np.float32).reshape(len(x), -1)
    except (CaffeLRPError, ValueError) as e:
        def failed(error=e):
            for image, _, _ in prepared:
                report.fail("%s: %s" % (image, error))
            progress.advance(len(prepared), failed=True)
        _in_order(writer, failed)
        return
    shared = args.shared_scale and args.scale is None
    for n, (image, stem, prep) in enumerate(prepared):
        def write(n=n, image=image, stem=stem, prep=prep):
            try:
                record = write_explanation(out_dir, image, stem, prep, values[n],
                                           result.classes[n], scores[n], net.outputs[0],
                                           run, args, defer=shared,
                                           info=result.info[n] if result.info else None)
                if shared:
                    deferred.append(record)
                else:
                    report.done += 1
                progress.advance()
            except (OSError, CaffeLRPError) as e:
                report.fail("%s: cannot write the outputs: %s" % (image, e))
                progress.advance(failed=True)
        _in_order(writer, write, image)


def finish_record(out_dir, record, scale, args, report):
    try:
        render_and_finish(out_dir, record, scale, args)
        report.done += 1
    except (OSError, CaffeLRPError) as e:
        report.fail("%s: cannot write the outputs: %s" % (record["image"], e))


def finish_shared_scale(out_dir, deferred, identity, geometry, args, report):
    """--shared-scale covers the whole folder: the scale is the largest of this run's images and
    of the earlier ones in ``out_dir`` made with the same settings (read from their stored
    relevance); earlier images whose heatmaps used another scale are re-rendered."""
    new = {r["stem"] for r in deferred}
    earlier = []
    for path in sorted(out_dir.glob("*" + OUTPUT_SUFFIXES["sidecar"])):
        sidecar = read_sidecar(path)
        if sidecar is None or sidecar.get("run") != identity:
            continue
        stem = path.name[:-len(OUTPUT_SUFFIXES["sidecar"])]
        if stem in new:
            continue
        try:
            values = pixel_relevance(np.load(out_dir / sidecar["outputs"]["relevance"],
                                             allow_pickle=False))
        except (OSError, ValueError, KeyError, TypeError) as e:
            report.fail("%s: cannot read its stored relevance for the shared scale: %s"
                        % (path, e))
            continue
        earlier.append({"image": sidecar["image"]["path"], "stem": stem, "sidecar": sidecar,
                        "values": values, "as_inputted": None})
    everything = deferred + earlier
    if not everything:
        return
    scale = float(max(heatmap_scale(r["values"], args.cmap).max() for r in everything))
    for record in deferred:
        finish_record(out_dir, record, scale, args, report)
    in_h, in_w, base, mean = geometry
    for record in earlier:
        if record["sidecar"].get("heatmap", {}).get("scale") == scale:
            continue
        try:   # the overlay needs the input crop again: the preprocessing is cheap
            image = record["image"]
            if file_sha256(image) != record["sidecar"]["image"]["sha256"]:
                raise CaffeLRPError("the image changed since its outputs were written")
            record["as_inputted"] = toolbox_preprocess(read_image(image), in_h, in_w, base,
                                                       mean).as_inputted
            render_and_finish(out_dir, record, scale, args)
        except (OSError, CaffeLRPError) as e:
            report.fail("%s: cannot re-render %s with the shared scale: %s"
                        % (record["image"], record["stem"], e))


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
    info = dict(info or {})
    tie_break = info.pop("logits", None)     # the explained classes' order: the logits break ties
    keys = (np.asarray(tie_break, np.float64) if tie_break is not None
            else np.zeros(len(scores)), scores.astype(np.float64))
    order = np.lexsort((-keys[0], -keys[1]))[:5]
    sidecar = {
        "caffelrp": __version__, "image": {"path": str(image), "sha256": file_sha256(image)},
        "model": run["model"], "method": run["method"], "parameters": run["parameters"],
        "target": run["target"], "classes": [int(c) for c in classes],
        "class_names": {str(int(c)): run["class_names"][c] for c in classes}
        if run.get("class_names") and max(classes) < len(run["class_names"]) else None,
        "scores": {"output": output_name,
                   "explained": {str(int(c)): float(scores[c]) for c in classes},
                   "top5": [[int(c), float(scores[c])] for c in order]},
        "relevance_sum": float(values.astype(np.float64).sum()),
        "preprocessing": prep.info, "outputs": names, "run": run["identity"],
        "blas": caffe_blas.describe()}
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
    o_scale = overlay_scale(record["values"], args.clip) if args.clip else scale
    write_png(out_dir / names["overlay"], overlay(
        record["as_inputted"], colorize(record["values"], o_scale, args.cmap), record["values"],
        o_scale, args.overlay_alpha))
    record["sidecar"]["heatmap"] = {"cmap": args.cmap, "scale": scale,
                                    "shared_scale": bool(args.shared_scale),
                                    "value": "sum over channels", "overlay_scale": o_scale,
                                    "overlay_clip_percentile": args.clip}
    if getattr(args, "original_geometry", False):
        from .geometry import write_original_geometry
        write_original_geometry(out_dir, record, o_scale, args)
    sidecar = out_dir / (record["stem"] + OUTPUT_SUFFIXES["sidecar"])
    write_atomically(sidecar, json_bytes(record["sidecar"], "sidecar %s" % sidecar.name))


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

    # one target per batch: consecutive entries with the same class field go together
    batches, batch = [], []
    for entry in entries:
        if batch and (len(batch) == args.batch_size or entry.class_field != batch[0].class_field):
            batches.append(batch)
            batch = []
        batch.append(entry)
    if batch:
        batches.append(batch)
    if args.dask or args.dask_scheduler_file:
        return distributed.compat_on_cluster(args, batches, config, start, report)
    geometry = (in_h, in_w, mean)
    count = worker_count(args.compat_workers, net, len(batches), args.batch_size)
    if count > 1:
        def run_batch(batch, batch_report, progress):
            compat_batch(net, batch, config, args.filelist, geometry, start, batch_report,
                         progress)
        folders = sorted({os.path.dirname(distributed.compat_output_base(config, entry))
                          for batch in batches for entry in batch})
        if not in_workers(count, batches, run_batch, report, args.quiet, folders,
                          lambda batch: [entry.path for entry in batch]):
            print("interrupted: %d done (outputs in %s)" % (report.done,
                                                            config.standalone_outpath),
                  file=sys.stderr)
            return INTERRUPTED
        return report.finish("explained", config.standalone_outpath)
    progress = Progress(len(entries), args.quiet)
    for batch in batches:
        compat_batch(net, batch, config, args.filelist, geometry, start, report, progress)
    progress.close()
    return report.finish("explained", config.standalone_outpath)


def compat_batch(net, batch, config, filelist, geometry, start, report, progress):
    """Preprocess, explain and write one batch of list entries (one target): the unit of work
    of a local run and of a Dask task alike."""
    in_h, in_w, mean = geometry
    prepared = []
    for entry in batch:
        try:
            if entry.class_field >= config.numclasses:
                raise CaffeLRPError("%s (%s line %d): class %d out of range, numclasses is %d"
                                    % (entry.path, filelist, entry.line,
                                       entry.class_field, config.numclasses))
            try:
                out_base = compat.output_base(entry.path, config.standalone_rootpath,
                                              config.standalone_outpath)
            except CaffeLRPError as e:
                raise CaffeLRPError("%s line %d: %s" % (filelist, entry.line, e)) from None
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


# -------------------------------------------------------------------------------- parser
class _Given(argparse.Action):
    """A stored option that also notes it was given (to refuse options of another --method)."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, values)
        given = dict(getattr(namespace, "_given_method_options", {}))
        given[self.dest] = option_string
        namespace._given_method_options = given


class _GivenOptions:
    """An argument group whose plain (stored) options record that they were given."""

    def __init__(self, group, method, owners):
        self.group, self.method, self.owners = group, method, owners

    def add_argument(self, *flags, **kwargs):
        if kwargs.get("action", "store") == "store":
            kwargs["action"] = _Given
        action = self.group.add_argument(*flags, **kwargs)
        self.owners[action.dest] = self.method
        return action


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
    add_model_options(explain)
    explain.add_argument("--method", choices=sorted(METHODS), default="lrp",
                         help="attribution method (default lrp): " + "; ".join(
                             "%s: %s" % (m.name, m.summary) for m in METHODS.values()))
    explain.add_argument("--class", dest="target", default="top5", metavar="top5|top1|K",
                         help="what to explain: top5 (the 5 best classes together, default, the "
                              "toolbox setting), top1, a class index K or K1,K2,... (together)")
    explain.add_argument("--out", required=True, metavar="DIR", help="output folder")
    explain.add_argument("--batch-size", type=int, default=8,
                         help="images per network pass (default 8); ig and smoothgrad go image "
                              "by image and batch their own inputs. The batch size changes the "
                              "results only by float32 rounding (a BLAS rounds a product by its "
                              "row count: about 1e-6 relative), never the classes or the files' "
                              "layout")
    explain.add_argument("--cmap", default="bwr", metavar="NAME",
                         help="heatmap colours: %s (default bwr; seismic is its older name)"
                         % ", ".join(COLORMAPS))
    explain.add_argument("--shared-scale", action="store_true",
                         help="one colour scale for all images of the --out folder made with "
                              "these settings (the largest of theirs; with --resume earlier "
                              "images are re-rendered) instead of one per image")
    explain.add_argument("--scale", type=float,
                         help="fixed absolute relevance (per pixel, summed over channels) that "
                              "maps to full colour (overrides the per-image or shared scale)")
    explain.add_argument("--overlay-alpha", type=float, default=0.7,
                         help="opacity of the heatmap over the image at full colour (0.7)")
    explain.add_argument("--clip", type=float, default=OVERLAY_CLIP, metavar="PERCENT",
                         help="overlay opacity: the PERCENT percentile of |relevance| gets full "
                              "colour (default %g; 0: the heatmap's own scale, the largest value)"
                              % OVERLAY_CLIP)
    explain.add_argument("--original-geometry", action="store_true",
                         help="also write STEM_heatmap_original.png and STEM_overlay_original.png "
                              "on the original photo's pixels (resize, crop and padding undone)")
    explain.add_argument("--save-input", action="store_true",
                         help="also write the preprocessed network input (float32 C x H x W)")
    explain.add_argument("--resume", action="store_true",
                         help="skip images whose outputs are complete and were made from the "
                              "same image with the same settings (the sidecar's image sha256 "
                              "and 'run'); redo the others. Without it, an --out folder with "
                              "another run's outputs is an error")
    explain.add_argument("--quiet", action="store_true",
                         help="no progress bar and no summary (errors are still printed)")
    caffe_blas.add_option(explain)
    owners = {}
    for method in METHODS.values():
        method.add_options(_GivenOptions(explain.add_argument_group(
            "options of --method %s" % method.name), method.name, owners))
    explain.set_defaults(_method_option_owner=owners)
    zoo.add_weights_check_option(explain)
    explain.add_argument("--workers", default="auto", metavar="N|auto",
                         help="worker processes on this machine, each running the kernels on one "
                              "thread (Linux; the same files as one process). Default auto: one "
                              "per kernel thread (--threads), at most one per batch and as many "
                              "as the available memory holds; 1: one process whose kernels use "
                              "every thread, reading and writing in helper threads")
    distributed.add_options(explain)
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
    original.add_argument("--workers", dest="compat_workers", default="auto", metavar="N|auto",
                          help="worker processes, one kernel thread each (Linux; the same files "
                               "as one process); default auto: one per kernel thread once there "
                               "are two batches each; 1: one process on every thread")
    caffe_blas.add_option(original, dest="caffe_blas_main")
    distributed.add_options(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    add_explain_parser(sub)
    from . import compare, reproduce
    compare.add_parser(sub)
    reproduce.add_parser(sub)
    from . import evaluate_cli   # its module imports this one's helpers
    evaluate_cli.add_parser(sub)

    info = sub.add_parser("info", help="list a network's layers with Caffe's indices, shapes and "
                                       "parameter counts, and how the weights matched")
    info.add_argument("prototxt", metavar="MODEL",
                      help="bundled model (%s) or a deploy.prototxt" % ", ".join(BUNDLED))
    info.add_argument("caffemodel", nargs="?",
                      help=".caffemodel to match against the layers (bundled for smallnet)")
    info.set_defaults(run=cmd_info)

    classify = sub.add_parser(
        "classify", help="print the top classes for images",
        description="Print the top classes of each image. By default the images are "
                    "preprocessed as explain does (the LRP Toolbox's resize, crop and mean), so "
                    "classify and explain agree on the classes; --preprocess pycaffe squashes "
                    "the whole image to the input size (bilinear) as pycaffe's classifier "
                    "examples do.")
    classify.add_argument("images", nargs="+", metavar="IMAGE_OR_FOLDER",
                          help="image files, or folders whose image files are all classified")
    add_model_options(classify, weights_help=".caffemodel (bundled for smallnet)",
                      base_help="with --preprocess toolbox: as for explain")
    classify.add_argument("--preprocess", choices=CLASSIFY_PIPELINES, default="toolbox",
                          help="toolbox: explain's preprocessing (default); pycaffe: the whole "
                               "image resized to the input (bilinear), minus the mean pixel "
                               "(a mean image's per-channel average)")
    classify.add_argument("--labels", help="text file with one class name per line (default: a "
                                           "synset*.txt or labels*.txt next to the prototxt, else the bundled ImageNet names "
                                           "of a named ImageNet model)")
    classify.add_argument("--top", type=int, default=5, help="number of classes shown")
    classify.add_argument("--output", help="output blob to rank (default: the first output)")
    classify.add_argument("--json", action="store_true",
                          help='print one JSON list, an object per image: {"image": PATH, '
                               '"top": [{"class": K, "name": NAME, "score": P}, ...]}')
    zoo.add_weights_check_option(classify)
    classify.set_defaults(run=cmd_classify)
    zoo.add_parser(sub)
    return parser


def check_threads(args):
    """--threads and CAFFELRP_NUM_THREADS, before any work: a bad count (0, -1, 'abc') is one
    usage error, not the default silently nor a failure per image."""
    if getattr(args, "threads", None) is not None:
        try:
            set_num_threads(args.threads)
        except ThreadCountError as e:
            raise UsageError("--threads %d: %s" % (args.threads, e)) from None
    get_num_threads()


def main(argv=None):
    start = time.monotonic()
    try:
        return _main(argv)
    finally:
        phases.write(start, time.monotonic())


def _main(argv):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        if args.config is None:
            parser.print_usage(sys.stderr)
            print("error: give a command (explain, compare, reproduce, info, classify) or "
                  "-c CONFIG -f FILELIST", file=sys.stderr)
            return USAGE_ERROR
        args.run = cmd_compat
    elif args.config is not None or args.filelist is not None:
        print("error: -c/-f (the original-compatible mode) take no subcommand", file=sys.stderr)
        return USAGE_ERROR
    try:
        check_threads(args)
        caffe_blas.apply_option(args)
        return args.run(args)
    except UsageError as e:
        print("error: %s" % e, file=sys.stderr)
        return USAGE_ERROR
    except CaffeLRPError as e:
        print("error: %s" % e, file=sys.stderr)
        return DATA_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return INTERRUPTED
    except BrokenPipeError:  # output piped into head & co.
        sys.stderr.close()
        return 0
