"""Which settings made a published heatmap? ``python -m caffelrp reproduce PUBLISHED IMAGE ...``.

Explains IMAGE (``explain``'s preprocessing) with every setting of a sweep (formula x eps x beta x
target), compares each result with PUBLISHED as ``compare`` does and ranks them, best Pearson
first. Default sweep: formulas 0, 2, 100, 102, 104, 11, 26, 166 and the composites epsilon-plus and
epsilon-gamma-box; beta 0 and 1; eps 1 and 0.01; targets top5 and top1 (80 combinations).

Cost: one forward pass serves every setting. The image is repeated once per target and the
targets become per-image class lists, so each relevance pass explains all targets at once
(batched on the compiled core), reusing the forward's activations. A formula that does not read a
parameter (0 ignores beta, 2 ignores eps, 11/26/166 ignore both, the two composites ignore beta)
is run once for it, and that parameter is listed as null in the ranking.
"""
import sys

import numpy as np

from .compare import common_grid, crop, load_map, metrics, parse_crop
from .errors import CaffeLRPError

DEFAULT_RULES = ("0", "2", "100", "102", "104", "11", "26", "166", "epsilon-plus",
                 "epsilon-gamma-box")
DEFAULT_BETAS = (0.0, 1.0)
DEFAULT_EPSS = (1.0, 0.01)
DEFAULT_TARGETS = ("top5", "top1")

# which of (eps, beta) a formula reads (composites.py; the reference README's run-tag table)
_READS = {0: (True, False), 2: (False, True), 11: (False, False), 26: (False, False),
          166: (False, False), 99: (False, False), 22: (False, False),
          "epsilon-plus": (True, False), "epsilon-gamma-box": (True, False),
          "zplus": (False, False), "gamma": (True, False), "epsilon-plus-flat": (True, False)}


def _rule_key(text):
    text = str(text).strip()
    return int(text) if text.lstrip("-").isdigit() else text


def settings(rules, epss, betas, targets):
    """The distinct (rule, eps or None, beta or None) of the sweep, in order, and the targets."""
    out, seen = [], set()
    for rule in (_rule_key(r) for r in rules):
        reads_eps, reads_beta = _READS.get(rule, (True, True))
        for eps in epss:
            for beta in betas:
                s = (rule, eps if reads_eps else None, beta if reads_beta else None)
                if s not in seen:
                    seen.add(s)
                    out.append(s)
    return out


class _ForwardDone:
    """The net with its forward pass already run: relevance passes reuse the activations."""

    def __init__(self, net):
        self._net = net

    def forward(self, x):
        return None

    def __getattr__(self, name):
        return getattr(self._net, name)


def explained_classes(net, x, targets):
    """Per target ("top5", "top1", a class index), the explained class list for image x (batch 1
    of the forward already in ``net``), ranked as the relevance pass ranks them."""
    from .attribution import lrp
    from .attribution.targets import resolve
    top = lrp._injection_layer(net, "highest-ip")
    graph = net.graph()
    inj = graph.steps[top].tops[0]
    scores = lrp._ranking_scores(net, inj)[:1]
    out = []
    for t in targets:
        if isinstance(t, str):
            out.append([int(c) for c in resolve(t, scores, tie_break=graph.value(inj)[:1])[0]])
        else:
            out.append([int(t)])
    return out


def sweep(net, blob, bounds, published, rules=DEFAULT_RULES, epss=DEFAULT_EPSS,
          betas=DEFAULT_BETAS, targets=DEFAULT_TARGETS, switch_layer=0, progress=None,
          search_alignment=False):
    """Rank every setting by its agreement with ``published``.

    ``blob``: the preprocessed input (C, H, W); ``bounds``: (low, high) of it for z^B rules;
    ``published``: a map on the net input's grid, or, with ``search_alignment``, any map in
    which the net input's grid is searched (once, with the mean of every setting's normalised
    relevance as the template: what all settings share, the image's structure, places it).
    Returns (ranking, alignment or None); the ranking holds dicts with rule, eps, beta, target,
    pearson, spearman, ssim, best first."""
    from .attribution import lrp
    rules = [_rule_key(r) for r in rules]
    targets = [_rule_key(t) for t in targets]
    xs = np.repeat(np.asarray(blob, np.float32)[None], len(targets), axis=0)
    low = np.repeat(bounds[0][:1], len(targets), axis=0)
    high = np.repeat(bounds[1][:1], len(targets), axis=0)
    net.forward(xs)                                   # the one forward pass of the sweep
    classes = explained_classes(net, xs, targets)
    shared = _ForwardDone(net)
    maps = []                                         # (row without metrics, per-pixel map)
    todo = settings(rules, epss, betas, targets)
    for i, (rule, eps, beta) in enumerate(todo):
        try:
            result = lrp.relevance_details(
                shared, xs, rule=rule, eps=1.0 if eps is None else eps,
                beta=1.0 if beta is None else beta, switch_layer=switch_layer,
                target=[list(c) for c in classes], bounds=(low, high), record=False)
        except (KeyError, ValueError) as e:
            raise CaffeLRPError("rule %r: %s" % (rule, e)) from None
        for t, target in enumerate(targets):
            maps.append(({"rule": rule, "eps": eps, "beta": beta, "target": target},
                         result.input[t].astype(np.float64).sum(axis=0)))
        if progress:
            progress(i + 1, len(todo))
    placement, grid = None, published
    if search_alignment:
        from .compare import align, antialiased, sample_window
        template = np.mean([m / np.abs(m).max() for _, m in maps if np.abs(m).max() > 0], axis=0)
        placement = align(template, published)
        grid = sample_window(antialiased(published, placement["scale"]), template.shape,
                             placement["scale"], placement["offset"], order=3)
    rows = []
    for row, values in maps:
        m = metrics(values, grid)
        row.update(pearson=m["pearson"], spearman=m["spearman"], ssim=m["ssim"])
        rows.append(row)
    rows.sort(key=lambda r: (-(r["pearson"] if r["pearson"] is not None else -2.0),
                             -(r["spearman"] if r["spearman"] is not None else -2.0)))
    return rows, placement


# ----------------------------------------------------------------------------------- CLI
def _floats(text, what):
    from .cli import UsageError
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values:
        raise UsageError("--%s takes comma-separated numbers, got %r" % (what, text))
    return values


def add_parser(subparsers):
    from .cli import add_model_options
    p = subparsers.add_parser(
        "reproduce", help="find the LRP settings that best reproduce a published heatmap",
        description="Explain IMAGE with every setting of a sweep and rank the settings by their "
                    "agreement (Pearson, then Spearman) with PUBLISHED (a rendered heatmap, "
                    ".npy, sidecar or _rawhm.txt). One forward pass serves every setting; the "
                    "targets of a setting are explained in one batched relevance pass.")
    p.add_argument("published", metavar="PUBLISHED")
    p.add_argument("image", metavar="IMAGE")
    add_model_options(p, weights_help=".caffemodel", base_help="as explain's --base-size")
    p.add_argument("--rules", default=",".join(DEFAULT_RULES),
                   help="formula numbers or rule names (default %s)" % ",".join(DEFAULT_RULES))
    p.add_argument("--betas", default="0,1", help="beta values (default 0,1)")
    p.add_argument("--epss", default="1,0.01", help="eps values (default 1,0.01)")
    p.add_argument("--targets", default="top5,top1",
                   help="top5, top1 or class indices (default top5,top1)")
    p.add_argument("--switch-layer", type=int, default=0, metavar="INDEX",
                   help="aux layer index of formulas 102/104/... (default 0)")
    p.add_argument("--cmap", default="auto", help="colour map of PUBLISHED (default auto)")
    p.add_argument("--align", action="store_true",
                   help="search scale and offset of the net input inside PUBLISHED (once, "
                        "with the mean of all settings' normalised relevance as the template)")
    p.add_argument("--crop", metavar="x0,y0,x1,y1", help="cut PUBLISHED to this box first")
    p.add_argument("--json", metavar="FILE", help="write {ranking, best} as JSON")
    p.add_argument("--top", type=int, default=10, help="ranking lines printed (default 10)")
    p.add_argument("--quiet", action="store_true", help="no progress")
    from . import caffe_blas    # --caffe-blas PATH, applied by cli.main as for explain
    caffe_blas.add_option(p)
    p.set_defaults(run=run)


def run(args):
    from .cli import UsageError, bounds_for, check_class, open_model
    from .compare import ColourMapError, _check_cmap
    from .files import json_bytes, write_atomically
    from .methods import check_lrp_rule
    from .preprocess import read_image, toolbox_preprocess
    rules = [_rule_key(r) for r in args.rules.split(",") if r.strip()]
    for r in rules:
        try:
            check_lrp_rule(r)
        except ValueError as e:
            raise UsageError("--rules: %s" % e) from None
    betas, epss = _floats(args.betas, "betas"), _floats(args.epss, "epss")
    targets = [_rule_key(t) for t in args.targets.split(",") if t.strip()]
    if not rules or not targets or any(isinstance(t, str) and t not in ("top5", "top1")
                                       for t in targets):
        raise UsageError("--targets takes top5, top1 or class indices, got %r" % args.targets)
    try:
        box = parse_crop(args.crop) if args.crop else None
        _check_cmap(args.cmap)
    except (ValueError, ColourMapError) as e:
        raise UsageError(str(e)) from None
    opened = open_model(args)
    net, mean = opened.net, opened.mean
    in_h, in_w = opened.in_h, opened.in_w
    check_class(targets, opened, "--targets")
    published = load_map(args.published, args.cmap)
    pub = crop(published.values, box, args.published) if box else published.values
    prep = toolbox_preprocess(read_image(args.image), in_h, in_w, opened.base, mean)
    low, high = bounds_for([prep])
    if args.align:
        grid = pub
    else:
        _, grid, _ = common_grid(np.zeros((in_h, in_w)), pub, False,
                                 ("the network input", args.published))

    def progress(done, total):
        if not args.quiet and sys.stderr.isatty():
            sys.stderr.write("\r%d/%d relevance passes" % (done, total))
            sys.stderr.flush()
    ranking, placement = sweep(net, prep.blob, (low, high), grid, rules, epss, betas, targets,
                               args.switch_layer, progress, search_alignment=args.align)
    if not args.quiet and sys.stderr.isatty():
        sys.stderr.write("\n")
    if published.decoded is not None:
        print("%s: decoded with colour map %s (residual %.2f of 255 levels)"
              % (args.published, published.decoded.cmap, published.decoded.residual))
    if placement:
        print("aligned: scale %.3f, offset x %.1f y %.1f" % (
            placement["scale"], placement["offset"][0], placement["offset"][1]))
    print("%4s  %-18s %6s %5s %-7s %8s %8s %6s" % ("rank", "rule", "eps", "beta", "target",
                                                    "pearson", "spearman", "ssim"))
    fmt = lambda v, d=3: "-" if v is None else "%.*f" % (d, v)   # noqa: E731
    for k, row in enumerate(ranking[:args.top]):
        print("%4d  %-18s %6s %5s %-7s %8s %8s %6s" % (
            k + 1, row["rule"], fmt(row["eps"], 2), fmt(row["beta"], 0), row["target"],
            fmt(row["pearson"]), fmt(row["spearman"]), fmt(row["ssim"])))
    if args.json:
        write_atomically(args.json, json_bytes({"ranking": ranking, "best": ranking[0]},
                                               args.json))
    return 0
