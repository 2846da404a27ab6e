"""``python -m caffelrp evaluate IMAGES... --model M --methods composite,gradient,ig,random``:
the metrics of ``caffelrp.evaluate`` for several attribution methods on the same images.

Per image (in batches of ``--batch-size`` images): the toolbox preprocessing, the explained class
(``--class``, top1 by default) fixed at x for every method, each method's attribution and sanity
figure (LRP: the conserved share of the injected relevance; IG: the completeness error), then the
metrics with all methods in one batched run (common random numbers). Each image's numbers go to
``--out/per_image/STEM.json`` (atomically; ``--resume`` keeps those of the same protocol), and
after every batch ``evaluation.json``, ``table.md``, ``per_image.csv`` and ``curves.png`` (needs
matplotlib: ``pip install caffelrp[plot]``) are rewritten from all of them.
"""
import copy
import csv
import hashlib
import io
import json
import sys
import time
from pathlib import Path

import numpy as np

from . import __version__
from . import evaluate as ev
from .attribution.backward import batch_size, output_blob
from .attribution.gradients import explained
from .boxes import BoxError, BoxSource, mask_extent, network_mask
from .cli import (Report, UsageError, add_model_options, bounds_for, check_class,
                  collect_images, file_sha256, open_model, parse_target)
from .errors import CaffeLRPError
from .files import json_bytes, write_atomically
from .methods import METHODS, Context, check_lrp_rule, lrp_rule
from .preprocess import read_image, toolbox_preprocess

METRICS = ("aopc", "pixel-flipping", "pointing", "localisation")
# evaluate's own options that some explain method also defines: the method's gets a prefix
OWN_OPTIONS = {"--steps": "--ig-steps", "--seed": "--method-seed"}


# ------------------------------------------------------------------------------ methods
class MethodSpec:
    """One entry of --methods: kind "lrp" (with its rule), "table" (a METHODS entry) or
    "random"."""

    def __init__(self, name, kind, rule=None):
        self.name, self.kind, self.rule = name, kind, rule

    def parameters(self, args):
        if self.kind == "random":
            return {"kind": "random", "distribution": "uniform [0, 1) per input value",
                    "seed": args.seed}
        margs = method_args(args)
        if self.kind == "lrp":
            margs.rule = self.rule
            return dict(kind="lrp", **METHODS["lrp"].parameters(margs))
        return dict(kind=self.name, **METHODS[self.name].parameters(margs))


def parse_methods(text):
    """--methods: explain methods (gradient, gradxinput, smoothgrad, ig, lrp), LRP rule names
    (composite, epsilon-plus, ...), lrp:RULE (a formula number or name) and random."""
    specs = []
    for name in (t.strip() for t in text.split(",")):
        if not name:
            continue
        if name == "random":
            spec = MethodSpec(name, "random")
        elif name == "lrp":
            spec = MethodSpec(name, "lrp", None)     # --rule
        elif name in METHODS:
            spec = MethodSpec(name, "table")
        else:
            rule = lrp_rule(name[4:] if name.startswith("lrp:") else name)
            try:
                check_lrp_rule(rule)
            except ValueError as e:
                raise UsageError("--methods: %s is neither a method (%s, random) nor an LRP rule: "
                                 "%s" % (name, ", ".join(sorted(METHODS)), e)) from None
            spec = MethodSpec(name, "lrp", rule)
        if any(s.name == spec.name for s in specs):
            raise UsageError("--methods: %s is listed twice" % name)
        specs.append(spec)
    if not specs:
        raise UsageError("--methods: give at least one method")
    return specs


def method_args(args):
    """The namespace the METHODS table's run functions expect (renamed options put back)."""
    margs = copy.copy(args)
    for original, renamed in args.renamed_options.items():
        setattr(margs, original, getattr(args, renamed))
    return margs


def run_method(spec, net, x, classes, args, context, image_ids):
    """(attribution float32 (N, C, H, W), sanity: {figure name: (N,) values})."""
    target = [[int(c)] for c in classes]      # one class per image (nested: unambiguous)
    if spec.kind == "random":
        return ev.random_attribution(x.shape, args.seed, image_ids), {}
    margs = method_args(args)
    if spec.kind == "lrp":
        from .attribution.lrp import relevance_details
        from .methods import _start
        rule = spec.rule if spec.rule is not None else margs.rule
        result = relevance_details(net, x, rule=rule, eps=margs.eps, beta=margs.beta,
                                   switch_layer=margs.switch_layer, target=target,
                                   start=_start(margs.start), bounds=(context.low, context.high),
                                   record=False)
        # the ledger's two ends (kept without record): the relevance reaching the input over
        # the relevance injected at the top
        total = result.input.reshape(len(x), -1).sum(axis=1, dtype=np.float64)
        injected = np.asarray(result.injected, np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            conservation = np.where(injected != 0, total / injected, np.nan)
        return result.input, {"conservation": conservation}
    result = METHODS[spec.name].run(net, x, target, margs, context)
    sanity = {}
    if result.info and "completeness_error" in result.info[0]:
        sanity["completeness_error"] = np.array([d["completeness_error"] for d in result.info])
    return np.asarray(result.values, np.float32), sanity


# ------------------------------------------------------------------------------ protocol
def protocol(args, specs, prototxt, weights, base, mean, boxes):
    """Everything the numbers depend on (batch sizes do not: they are recorded apart)."""
    p = {"caffelrp": __version__, "metrics": list(args.metrics),
         "score": "pre-softmax logit of the explained class", "target": args.target,
         "model": {"prototxt": str(prototxt), "prototxt_sha256": file_sha256(prototxt),
                   "weights": str(weights) if weights else None,
                   "weights_sha256": file_sha256(weights) if weights else None},
         "preprocessing": {"pipeline": "lrp-toolbox", "base_size": base,
                           "mean": mean.describe()},
         "methods": {s.name: s.parameters(args) for s in specs},
         "seed": args.seed}
    if {"aopc", "pixel-flipping"} & set(args.metrics):
        p["perturbation"] = {
            "kind": args.perturbation, "repeats": args.repeats if args.perturbation == "uniform"
            else 1, "steps": args.steps, "orders": list(ev.ORDERS),
            "noise": "numpy default_rng([seed, 1, image index, repeat]).random, scaled to the "
                     "input of pixel values 0..255" if args.perturbation == "uniform" else None,
            "value": args.value if args.perturbation == "constant" else None,
            "blur_sigma": args.blur_sigma if args.perturbation == "blur" else None,
            "aopc": "1/(L+1) sum_{k=0..L} f(x_0) - f(x_k), mean over repeats (Samek et al. "
                    "2017, arXiv:1509.06321)"}
        if "aopc" in args.metrics:
            p["perturbation"]["region"] = args.region
        if "pixel-flipping" in args.metrics:
            p["perturbation"]["fraction"] = args.fraction
    if {"pointing", "localisation"} & set(args.metrics):
        p["boxes"] = {"source": str(args.boxes), "sha256": file_sha256(args.boxes)
                      if boxes is not None and not boxes.is_dir else None,
                      "mapping": "box centres test through the toolbox resize and crop; padded "
                                 "bands belong to no box",
                      "localisation": "mu = R+_in / R+_tot, mu_w = mu * S_tot / S_box "
                                      "(Kohlbrenner et al., arXiv:1910.09840)"}
    p["image_ids"] = "position in the run's image list (keys the noise and random streams)"
    return p


def digest(p):
    return hashlib.sha256(json.dumps(p, sort_keys=True).encode()).hexdigest()


# --------------------------------------------------------------------------- per batch
class EvalProgress:
    """A progress line on a terminal: images done and the current forward passes."""

    def __init__(self, total, quiet=False, stream=None):
        self.stream = stream or sys.stderr
        self.enabled = (not quiet) and total > 0 and self.stream.isatty()
        self.total, self.done, self.start = total, 0, time.monotonic()
        self.phase = ""

    def show(self, phase=None, done=None, of=None):
        if not self.enabled:
            return
        if phase is not None:
            self.phase = phase
        part = " %s %d/%d" % (self.phase, done, of) if done is not None else " " + self.phase
        elapsed = time.monotonic() - self.start
        self.stream.write("\r%d/%d images, %.0f s;%s\x1b[K" % (self.done, self.total, elapsed,
                                                                part))
        self.stream.flush()

    def advance(self, n):
        self.done += n
        self.show("")

    def close(self):
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()


def _perturbation_metric(metric, net, x, attributions, classes, args, context, ids, step,
                         progress):
    kwargs = dict(target=[[int(c)] for c in classes], steps=args.steps, repeats=args.repeats,
                  perturbation=args.perturbation, seed=args.seed,
                  bounds=(context.low, context.high), value=args.value,
                  blur_sigma=args.blur_sigma, batch_size=step, image_ids=ids,
                  progress=lambda done, total: progress.show(metric, done, total))
    if metric == "aopc":
        return ev.region_perturbation(net, x, attributions, region=args.region, **kwargs)
    return ev.pixel_flipping(net, x, attributions, fraction=args.fraction, **kwargs)


def evaluate_batch(chunk, net, specs, args, in_hw, base, mean, boxes, step, progress, report):
    """Per-image records of one batch of (index, image, stem)."""
    prepared = []
    for index, image, stem in chunk:
        try:
            source = read_image(image)
            prep = toolbox_preprocess(source, in_hw[0], in_hw[1], base, mean)
            box_list = None
            if boxes is not None:
                rows, cols = source.rgb.shape[:2]
                box_list = boxes.boxes_for(image, (cols, rows))
            prepared.append((index, image, stem, prep, box_list))
        except CaffeLRPError as e:
            report.fail(e)
            progress.advance(1)
    if not prepared:
        return []
    x = np.stack([p[3].blob for p in prepared])
    low, high = bounds_for([p[3] for p in prepared])
    context = Context(low, high)
    ids = [p[0] for p in prepared]
    target = parse_target(args.target)
    f0, classes = explained(net, x, target, output_blob(net, "logit"), step)
    classes = [int(per[0]) for per in classes]     # --class is top1 or K: one class each
    attributions, sanity = {}, {}
    for spec in specs:
        progress.show("attribution %s" % spec.name)
        attributions[spec.name], sanity[spec.name] = run_method(spec, net, x, classes, args,
                                                                context, ids)
    records = [{"image": image, "sha256": file_sha256(image), "stem": stem, "index": index,
                "class": int(classes[n]), "score": float(f0[n]), "methods": {
                    s.name: {"sanity": {k: _number(v[n]) for k, v in sanity[s.name].items()}}
                    for s in specs}}
               for n, (index, image, stem, _, _) in enumerate(prepared)]
    for metric, key, abpc in (("aopc", "aopc", "abpc"),
                              ("pixel-flipping", "pixel_flipping", "pixel_flipping_abpc")):
        if metric not in args.metrics:
            continue
        results = _perturbation_metric(metric, net, x, attributions, classes, args, context,
                                       ids, step, progress)
        for name, res in results.items():
            for n, record in enumerate(records):
                m = record["methods"][name]
                m[key + "_morf"] = float(res.aopc["morf"][n])
                m[key + "_lerf"] = float(res.aopc["lerf"][n])
                m[abpc] = float(res.abpc[n])
                m[key + "_curves"] = {o: [round(float(v), 6) for v in
                                          res.curves[o][n].mean(axis=0)] for o in ev.ORDERS}
                record[key + "_steps"] = res.steps
    if {"pointing", "localisation"} & set(args.metrics):
        masks = np.zeros((len(x),) + tuple(in_hw), bool)
        for n, (record, p) in enumerate(zip(records, prepared)):
            box_list = p[4]
            if box_list:
                masks[n] = network_mask(box_list, p[3].info["image_hw"], in_hw, base)
            record["boxes"] = {"count": len(box_list or []), "network_extent": mask_extent(
                masks[n]), "network_pixels": int(masks[n].sum())}
            if not box_list:
                record["boxes"]["skipped"] = "no box for this image"
            elif not masks[n].any():
                record["boxes"]["skipped"] = "its boxes lie outside the network input"
        for name, attr in attributions.items():
            hits = ev.pointing_game(attr, masks)
            mu, mu_w = ev.localisation(attr, masks)
            for n, record in enumerate(records):
                m = record["methods"][name]
                if "pointing" in args.metrics:
                    m["pointing_game"] = _number(hits[n])
                if "localisation" in args.metrics:
                    m["mu"], m["mu_w"] = _number(mu[n]), _number(mu_w[n])
    return records


def _number(v):
    return None if v is None or not np.isfinite(v) else float(v)


# ------------------------------------------------------------------------------ outputs
SCALARS = ("aopc_morf", "aopc_lerf", "abpc", "pixel_flipping_morf", "pixel_flipping_lerf",
           "pixel_flipping_abpc", "pointing_game", "mu", "mu_w")


def _stat(values):
    values = [v for v in values if v is not None and np.isfinite(v)]
    if not values:
        return None
    a = np.asarray(values, np.float64)
    sem = ev.standard_error(a)
    return {"mean": float(a.mean()), "sem": None if not np.isfinite(sem) else float(sem),
            "n": len(values)}


def summarise(records, specs):
    methods = {}
    for s in specs:
        entry = {}
        per = [r["methods"][s.name] for r in records]
        for key in SCALARS:
            if any(key in m for m in per):
                entry[key] = _stat([m.get(key) for m in per])
        sanity = {}
        for m in per:
            for k in m["sanity"]:
                sanity.setdefault(k, []).append(m["sanity"][k])
        entry["sanity"] = {k: _stat(v) for k, v in sanity.items()}
        for key in ("aopc_curves", "pixel_flipping_curves"):
            curves = [m[key] for m in per if key in m]
            if curves:
                entry[key] = {}
                for o in ev.ORDERS:
                    a = np.asarray([c[o] for c in curves], np.float64)
                    sem = ev.standard_error(a, axis=0)
                    entry[key][o] = {"mean": [float(v) for v in a.mean(axis=0)],
                                     "sem": [None if not np.isfinite(v) else float(v)
                                             for v in np.atleast_1d(sem)]}
        methods[s.name] = entry
    return methods


def _fmt(stat):
    if stat is None:
        return "-"
    if stat.get("sem") is None:
        return "%.4g" % stat["mean"]
    return "%.4g ± %.2g" % (stat["mean"], stat["sem"])


def table_md(methods, n_images):
    keys = [k for k in SCALARS if any(k in m for m in methods.values())]
    sanity = sorted({k for m in methods.values() for k in m["sanity"]})
    head = ["method"] + keys + ["sanity: %s" % k for k in sanity]
    lines = ["Mean ± standard error over %d image%s." % (n_images, "" if n_images == 1 else "s"),
             "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, m in methods.items():
        cells = [name] + [_fmt(m.get(k)) for k in keys] + [_fmt(m["sanity"].get(k))
                                                           for k in sanity]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def per_image_csv(records, specs):
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    sanity = sorted({k for r in records for m in r["methods"].values() for k in m["sanity"]})
    writer.writerow(["image", "class", "score", "method"] + list(SCALARS) + sanity)
    for r in records:
        for s in specs:
            m = r["methods"][s.name]
            writer.writerow([r["image"], r["class"], "%.9g" % r["score"], s.name]
                            + ["" if m.get(k) is None else "%.9g" % m[k] for k in SCALARS]
                            + ["" if k not in m["sanity"] else "%.9g" % m["sanity"][k]
                               for k in sanity])
    return buf.getvalue().encode()


def curves_png(methods):
    """curves.png bytes (matplotlib, imported here: an optional extra)."""
    import matplotlib
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    kinds = [k for k in ("aopc_curves", "pixel_flipping_curves")
             if any(k in m for m in methods.values())]
    fig, axes = plt.subplots(len(kinds), 2, figsize=(11, 4 * len(kinds)), squeeze=False)
    for row, kind in enumerate(kinds):
        for col, order in enumerate(ev.ORDERS):
            ax = axes[row][col]
            for name, m in methods.items():
                if kind not in m:
                    continue
                mean = np.asarray(m[kind][order]["mean"])
                sem = np.asarray([np.nan if v is None else v for v in m[kind][order]["sem"]])
                steps = np.arange(mean.size)
                ax.plot(steps, mean, label=name)
                if np.isfinite(sem).any():
                    ax.fill_between(steps, mean - sem, mean + sem, alpha=0.25)
            label = {"morf": "MoRF", "lerf": "LeRF"}[order]
            unit = ("the k regions perturbed" if kind == "aopc_curves"
                    else "k x fraction of the pixels perturbed")
            ax.set_xlabel("perturbation step k (%s, %s)" % (unit, label))
            ax.set_ylabel("f(x_k): logit of the explained class")
            ax.set_title("%s, %s (mean ± 1 s.e. over images)"
                         % ("region perturbation" if kind == "aopc_curves" else "pixel flipping",
                            label))
            ax.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def write_outputs(out_dir, proto, records, specs, skipped, step, announce):
    methods = summarise(records, specs)
    images = []
    for r in records:
        entry = {k: r[k] for k in ("image", "sha256", "class", "score")}
        if "boxes" in r:
            entry["boxes"] = r["boxes"]
        entry["methods"] = {name: {k: v for k, v in m.items() if not k.endswith("_curves")}
                            for name, m in r["methods"].items()}
        images.append(entry)
    document = {"protocol": proto, "methods": methods, "images": images,
                "skipped_for_boxes": skipped, "forward_batch_size": step}
    write_atomically(out_dir / "evaluation.json", json_bytes(document, "evaluation.json"))
    write_atomically(out_dir / "table.md", table_md(methods, len(records)).encode())
    write_atomically(out_dir / "per_image.csv", per_image_csv(records, specs))
    if any(k.endswith("_curves") for m in methods.values() for k in m):
        try:
            write_atomically(out_dir / "curves.png", curves_png(methods))
        except ImportError:
            if announce:    # also with --quiet: an output the user expects is missing
                print("note: curves.png needs matplotlib (pip install caffelrp[plot]); the other "
                      "outputs are written", file=sys.stderr)
            return False
    return True


# -------------------------------------------------------------------------------- run
def _positive(name, value):
    if value < 1:
        raise UsageError("%s must be >= 1, got %r" % (name, value))


def run(args):
    specs = parse_methods(args.methods)
    metrics = list(METRICS) if "all" in args.metric else args.metric
    args.metrics = [m for m in METRICS if m in metrics]
    for name, value in (("--region", args.region), ("--steps", args.steps),
                        ("--repeats", args.repeats), ("--batch-size", args.batch_size)):
        _positive(name, value)
    if not 0 < args.fraction <= 1:
        raise UsageError("--fraction must be in (0, 1], got %r" % args.fraction)
    target = parse_target(args.target)
    if target == "top5" or isinstance(target, list):
        raise UsageError("--class: evaluate explains one class per image: top1 (default) or K")
    boxes = None
    if {"pointing", "localisation"} & set(args.metrics):
        if args.boxes is None:
            raise UsageError("--metric pointing/localisation need --boxes DIR (VOC/ImageNet XML "
                             "files named after the images) or --boxes FILE.csv")
        try:
            boxes = BoxSource(args.boxes)
        except BoxError as e:
            raise UsageError("--boxes: %s" % e) from None
    opened = open_model(args)
    net, prototxt, weights, mean = opened.net, opened.prototxt, opened.weights, opened.mean
    in_h, in_w, base = opened.in_h, opened.in_w, opened.base
    in_hw = (in_h, in_w)
    check_class(target, opened)
    out_dir = Path(args.out)
    report = Report(args.quiet)
    items = collect_images(args.images, report)
    for spec in specs:
        if spec.kind == "lrp" and spec.rule is None:
            try:
                check_lrp_rule(args.rule)
            except ValueError as e:
                raise UsageError("--rule: %s" % e) from None
    proto = protocol(args, specs, prototxt, weights, base, mean, boxes)
    key = digest(proto)
    record_dir = out_dir / "per_image"
    record_dir.mkdir(parents=True, exist_ok=True)

    try:
        step = batch_size(net, (3,) + tuple(in_hw), args.memory_budget)
    except ValueError as e:
        raise UsageError("--memory-budget: %s" % e) from None
    records, pending = {}, []
    for index, (image, stem) in enumerate(items):
        path = record_dir / (stem + ".json")
        if args.resume and path.is_file():
            try:
                record = json.loads(path.read_text())
                if record.get("protocol_sha256") == key and record.get("image") == image:
                    records[index] = record
                    report.skipped += 1
                    continue
            except (OSError, ValueError):
                pass
        pending.append((index, image, stem))

    progress = EvalProgress(len(pending), args.quiet)
    for start in range(0, len(pending), args.batch_size):
        chunk = pending[start:start + args.batch_size]
        try:
            batch_records = evaluate_batch(chunk, net, specs, args, in_hw, base, mean, boxes,
                                           step, progress, report)
        except (CaffeLRPError, ValueError) as e:    # a method or box file failing this batch
            for _, image, _ in chunk:
                report.fail("%s: %s" % (image, e))
            progress.advance(len(chunk))
            continue
        for record in batch_records:
            record["protocol_sha256"] = key
            name = record["stem"] + ".json"
            write_atomically(record_dir / name,
                             json_bytes(record, "per_image/" + name, indent=None))
            records[record["index"]] = record
            report.done += 1
        progress.advance(len(batch_records))
        ordered = [records[i] for i in sorted(records)]
        write_outputs(out_dir, proto, ordered, specs, _skipped(ordered), step, announce=False)
    progress.close()
    ordered = [records[i] for i in sorted(records)]
    if ordered:
        write_outputs(out_dir, proto, ordered, specs, _skipped(ordered), step, announce=True)
        skipped = _skipped(ordered)
        if skipped and not args.quiet:
            print("%d image(s) without a usable box, skipped for pointing/localisation:"
                  % len(skipped), file=sys.stderr)
            for s in skipped:
                print("  %s: %s" % (s["image"], s["reason"]), file=sys.stderr)
    return report.finish("evaluated", out_dir)


def _skipped(records):
    return [{"image": r["image"], "reason": r["boxes"]["skipped"]} for r in records
            if "skipped" in r.get("boxes", {})]


# ------------------------------------------------------------------------------- parser
class _RenamingGroup:
    """An argument group that renames an explain method's options clashing with evaluate's own
    (``--steps`` of ig becomes ``--ig-steps``), remembering dest -> renamed dest."""

    def __init__(self, group, renamed):
        self.group, self.renamed = group, renamed

    def add_argument(self, *names, **kwargs):
        if any(n in OWN_OPTIONS for n in names):
            original = kwargs.get("dest") or names[0].lstrip("-").replace("-", "_")
            names = tuple(OWN_OPTIONS.get(n, n) for n in names)
            kwargs["dest"] = names[0].lstrip("-").replace("-", "_")
            self.renamed[original] = kwargs["dest"]
        return self.group.add_argument(*names, **kwargs)


def add_parser(sub):
    p = sub.add_parser(
        "evaluate", help="compare attribution methods with numbers: AOPC (region perturbation), "
                         "pixel flipping, pointing game, localisation",
        description=__doc__.split("\n\n")[1].replace("\n", " "))
    p.add_argument("images", nargs="+", metavar="IMAGE_OR_FOLDER")
    add_model_options(p, base_help="longer image side after the resize (default as explain)")
    p.add_argument("--methods", default="composite,gradient,random",
                   help="comma-separated: explain methods (%s), LRP rules by name (composite, "
                        "epsilon-plus, epsilon-gamma-box, ...) or as lrp:N / lrp:NAME, and random "
                        "(the seeded uniform baseline); default composite,gradient,random"
                        % ", ".join(sorted(METHODS)))
    p.add_argument("--metric", nargs="+", default=["aopc"],
                   choices=METRICS + ("all",), help="metrics to compute (default aopc)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--class", dest="target", default="top1", metavar="top1|K",
                   help="explained class: top1 (default) or a class index K, the same for every "
                        "method")
    p.add_argument("--region", type=int, default=9, help="aopc: region side in pixels (9)")
    p.add_argument("--steps", type=int, default=100,
                   help="perturbation steps L (100); ig's own --steps is --ig-steps")
    p.add_argument("--repeats", type=int, default=10,
                   help="draws of the uniform noise averaged (10; 1 for the other perturbations)")
    p.add_argument("--perturbation", choices=ev.PERTURBATIONS, default="uniform",
                   help="what replaces a region: uniform noise over the pixel range (the "
                        "paper's, default), blur, mean (the mean image), constant (--value)")
    p.add_argument("--value", type=float, default=0.0,
                   help="--perturbation constant: the pixel value 0..255 (default 0, black)")
    p.add_argument("--blur-sigma", type=float, default=None,
                   help="--perturbation blur: Gaussian sigma in pixels (default a tenth of the "
                        "larger side)")
    p.add_argument("--fraction", type=float, default=0.01,
                   help="pixel-flipping: fraction of the pixels flipped per step (0.01)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the noise and of the random baseline (0); smoothgrad's and "
                        "ig's noise seed is --method-seed")
    p.add_argument("--boxes", metavar="DIR|FILE.csv",
                   help="pointing/localisation: a folder of VOC/ImageNet XML files (STEM.xml) or "
                        "a CSV image,x0,y0,x1,y1[,class] in original pixels (0-based, end "
                        "exclusive)")
    p.add_argument("--batch-size", type=int, default=4,
                   help="images per batch (default 4); the perturbed inputs go through the net "
                        "in batches bounded by --memory-budget")
    p.add_argument("--memory-budget", default="2G",
                   help="memory for one batch of perturbed inputs (default 2G)")
    p.add_argument("--resume", action="store_true",
                   help="keep the images whose per_image/STEM.json has the same protocol")
    p.add_argument("--quiet", action="store_true", help="no progress line and no summary")
    renamed = {}
    for method in METHODS.values():
        method.add_options(_RenamingGroup(
            p.add_argument_group("options of method %s" % method.name), renamed))
    p.set_defaults(run=run, renamed_options=renamed)
    return p
