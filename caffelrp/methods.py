"""The attribution methods ``python -m caffelrp explain --method NAME`` can run: one table.

Each entry is a ``Method``: a name, a line of help, the command-line options it owns
(``add_options(group)``; option names must not clash with other methods'), what it records in the
JSON sidecar (``parameters(args)``) and ``run(net, x, target, args, context)`` which returns an
``Attribution``. ``x`` is the preprocessed batch, float32 (N, C, H, W); ``target`` is "top5",
"top1", a class index or a list of class indices (explained together); ``context`` carries what the
preprocessing knows: ``context.low`` / ``context.high``, float32 (N, C, H, W), the network input of
a black (0) and a white (255) image at every pixel (= -mean and 255 - mean, the mean as subtracted,
in the net's channel order), for z^B bounds and black baselines.

To add a method, write its three functions and register it: ``METHODS["name"] = Method(...)``.
"""
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

from .errors import ArgumentError


@dataclass
class Attribution:
    values: np.ndarray                  # float32 (N, C, H, W), same layout as x
    classes: list                       # per image: the explained class indices
    info: list = field(default_factory=list)   # per image: extra facts for the sidecar (dicts)
    # the first network output for x, (N, K); None: the driver runs a forward pass for it
    scores: Optional[np.ndarray] = None


@dataclass
class Context:
    low: Optional[np.ndarray] = None    # float32 (N, C, H, W): the input value of pixel value 0
    high: Optional[np.ndarray] = None   # float32 (N, C, H, W): the input value of pixel value 255


@dataclass(frozen=True)
class Method:
    name: str
    summary: str
    add_options: Callable        # (argparse group) -> None
    parameters: Callable         # (args) -> dict, recorded in the sidecar
    run: Callable                # (net, x, target, args, context) -> Attribution


# ------------------------------------------------------------------------------------ LRP
# the CLI names of the original's three documented choices, as formula numbers (spec 2.1)
LRP_RULE_NUMBERS = {"composite": 100, "epsilon": 0, "alphabeta": 2, "alpha-beta": 2}


def lrp_rule_names():
    """Readable rule names the installed composites table accepts (for --help)."""
    names = set(LRP_RULE_NUMBERS)
    try:
        from . import composites
        names |= set(getattr(composites, "NAMES", {}))
        names |= {k for k in getattr(composites, "COMPOSITES", {}) if isinstance(k, str)}
    except ImportError:
        pass
    return sorted(names)


def lrp_rule(text):
    """--rule value -> what Net.relevance takes: a formula number, or a readable name."""
    text = str(text).strip()
    if text.lstrip("-").isdigit():
        return int(text)
    return LRP_RULE_NUMBERS.get(text.lower(), text.lower())


def check_lrp_rule(rule):
    """Raise ArgumentError (a ValueError) for a rule the composites table does not know."""
    from . import composites
    resolve = getattr(composites, "resolve", None)
    if resolve is not None:
        try:
            resolve(rule)
        except (KeyError, ValueError) as e:
            raise ArgumentError("unknown LRP rule %r (%s)" % (rule, e)) from None
        except TypeError:
            pass


def _lrp_options(group):
    group.add_argument("--rule", default="composite", type=lrp_rule, metavar="RULE",
                       help="LRP rule: composite (= 100: alpha-beta on convolutions, epsilon on "
                            "inner products; default), epsilon (= 0), alphabeta (= 2), any formula "
                            "number of the original (102, 104, 114, 54, 56, 58, 60, 22, 26, 166, "
                            "11, 99, ...) or a name: %s" % ", ".join(lrp_rule_names()))
    group.add_argument("--eps", type=float, default=1.0,
                       help="epsilon of the epsilon rule (default 1, the toolbox setting)")
    group.add_argument("--beta", type=float, default=1.0,
                       help="beta of alpha-beta, alpha = 1 + beta (default 1)")
    group.add_argument("--gamma", type=float, default=0.25,
                       help="gamma of the gamma rule (composites gamma, epsilon-gamma-box; "
                            "default 0.25)")
    group.add_argument("--switch-layer", type=int, default=0, metavar="INDEX",
                       help="the original's auxiliaryvariable_maxlayerindexforflatdistinconv: "
                            "layers with Caffe index <= INDEX take the lower rule of composites "
                            "102/104/114/54/56/58/60 (default 0)")
    group.add_argument("--start", default="highest-ip",
                       help="injection layer: highest-ip (the original's lastlayerindex -2, "
                            "default), below-softmax (-1), a layer name or index")


def _lrp_parameters(args):
    # every parameter a rule can read; z^B's bounds are the pixel range 0..255 minus the mean
    return {"rule": args.rule, "eps": args.eps, "beta": args.beta, "gamma": args.gamma,
            "switch_layer": args.switch_layer, "start": args.start,
            "zb_bounds": "0 - mean .. 255 - mean per input pixel"}


def _start(text):
    return int(text) if str(text).lstrip("-").isdigit() else text


def _lrp_run(net, x, target, args, context):
    from .attribution.lrp import relevance_details
    kwargs = {}
    if context.low is not None:
        kwargs["bounds"] = (context.low, context.high)    # used by the z^B rules only
    result = relevance_details(net, x, rule=args.rule, eps=args.eps, beta=args.beta,
                               switch_layer=args.switch_layer, target=target,
                               start=_start(args.start), gamma=args.gamma, **kwargs)
    # the forward pass of x is still in the net's blobs (layers above the injection layer are
    # not touched by the relevance pass)
    scores = np.array(net.blobs[net.outputs[0]], dtype=np.float32).reshape(len(x), -1)
    top = result.ledger[0] if result.ledger else None
    injected = None
    if top is not None:   # the relevance put in at the injection layer's top: the logits F
        blob = net.layer_tops(top.index)[0]
        injected = result.blobs[blob].reshape(len(x), -1)
        logits = net.layer_top_values(top.index)[0].reshape(len(x), -1)
    info = []
    for n, per in enumerate(result.classes):
        d = {"injected": {"blob": blob, "total": float(result.injected[n]),
                          "logits": {str(int(c)): float(injected[n, c]) for c in per}}
             if injected is not None else None,
             "ledger": [{"index": row.index, "layer": row.name, "type": row.type,
                         "rule": row.rule, "relevance_in": float(row.relevance_in[n]),
                         "relevance_out": float(row.relevance_out[n])}
                        for row in result.ledger]}
        if injected is not None:
            d["logits"] = logits[n].tolist()     # the classes' tie-break order, not recorded
        info.append(d)
    return Attribution(result.input, [[int(c) for c in per] for per in result.classes],
                       info=info, scores=scores)


METHODS = {
    "lrp": Method("lrp", "Layer-wise Relevance Propagation as the LRP Toolbox (default)",
                  _lrp_options, _lrp_parameters, _lrp_run),
}


# ------------------------------------------------------------------ gradient methods
def _steps(text):
    if str(text).strip().lower() == "auto":
        return "auto"
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        import argparse
        raise argparse.ArgumentTypeError("--steps takes 'auto' or a positive number, got %r"
                                         % text)
    return value


def _gradient_options(group):
    # shared by gradient, gradxinput, smoothgrad and ig (option names are global)
    group.add_argument("--score", choices=("logit", "probability"), default="logit",
                       help="F of the gradient methods: the pre-softmax score of the explained "
                            "classes (default) or their softmax probability")
    group.add_argument("--seed", type=int, default=0,
                       help="noise seed of smoothgrad and of ig's noise baseline (default 0)")


def _no_options(group):
    pass


def _smoothgrad_options(group):
    group.add_argument("--samples", type=int, default=50,
                       help="noisy copies per image (default 50)")
    group.add_argument("--noise", type=float, default=0.15,
                       help="noise standard deviation as a fraction of the pixel range 0..255 "
                            "(default 0.15)")


def _ig_options(group):
    from .attribution.integrated_gradients import BASELINES, RULES
    group.add_argument("--steps", type=_steps, default="auto", metavar="auto|N",
                       help="integration steps m, or auto: double m until the completeness error "
                            "|sum(IG) - (F(x) - F(x'))| / |F(x) - F(x')| <= --tol (default)")
    group.add_argument("--baseline", choices=BASELINES, default="black",
                       help="x': black (pixel value 0, i.e. minus the mean; default), mean (the "
                            "mean image, zeros), blur, noise (uniform over 0..255)")
    group.add_argument("--tol", type=float, default=0.05,
                       help="completeness tolerance of --steps auto (default 0.05)")
    group.add_argument("--max-steps", type=int, default=1024,
                       help="largest m of --steps auto (default 1024)")
    group.add_argument("--quadrature", choices=RULES, default="riemann-midpoint",
                       help="integration rule (default riemann-midpoint)")


def _gradient_parameters(args):
    return {"score": args.score}


def _smoothgrad_parameters(args):
    return {"score": args.score, "samples": args.samples, "noise": args.noise,
            "seed": args.seed}


def _ig_parameters(args):
    return {"score": args.score, "steps": args.steps, "baseline": args.baseline,
            "tol": args.tol, "max_steps": args.max_steps, "quadrature": args.quadrature,
            "seed": args.seed}


def _attribution(values, info, scores=None):
    return Attribution(values, [d["classes"] for d in info], info=info, scores=scores)


def _last_forward_scores(net, x):
    """The first network output for ``x`` if the net's last forward pass was of ``x`` itself (a
    gradient method that took the batch in one piece), else None: the driver would otherwise
    run that forward pass again (a forward is about 40 % of a gradient's time)."""
    if len(net._inputs) != 1:
        return None
    values = net._values
    input_id, output_id = net._inputs[0][1], net._latest[net.outputs[0]]
    if values[input_id] is None or values[output_id] is None:
        return None
    if values[input_id].shape != x.shape or not np.array_equal(values[input_id], x):
        return None
    return np.array(values[output_id], dtype=np.float32).reshape(len(x), -1)


def _gradient_run(net, x, target, args, context):
    from .attribution.gradients import gradient
    return _attribution(*gradient(net, x, target, output=args.score),
                        scores=_last_forward_scores(net, x))


def _gradxinput_run(net, x, target, args, context):
    from .attribution.gradients import gradient_x_input
    return _attribution(*gradient_x_input(net, x, target, output=args.score),
                        scores=_last_forward_scores(net, x))


def _smoothgrad_run(net, x, target, args, context):
    from .attribution.gradients import smoothgrad
    return _attribution(*smoothgrad(net, x, target, samples=args.samples, noise=args.noise,
                                    seed=args.seed, input_range=(0, 255), output=args.score))


def _ig_run(net, x, target, args, context):
    from .attribution.integrated_gradients import integrated_gradients
    mean = None if context.low is None else -context.low   # black = pixel 0 = -mean
    return _attribution(*integrated_gradients(
        net, x, target=target, baseline=args.baseline, mean=mean, steps=args.steps,
        tol=args.tol, rule=args.quadrature, max_steps=args.max_steps, output=args.score,
        seed=args.seed))


METHODS["gradient"] = Method("gradient", "the gradient of F (saliency)", _gradient_options,
                             _gradient_parameters, _gradient_run)
METHODS["gradxinput"] = Method("gradxinput", "gradient x input", _no_options,
                               _gradient_parameters, _gradxinput_run)
METHODS["smoothgrad"] = Method("smoothgrad", "SmoothGrad (Smilkov et al. 2017)",
                               _smoothgrad_options, _smoothgrad_parameters, _smoothgrad_run)
METHODS["ig"] = Method("ig", "Integrated Gradients (Sundararajan et al. 2017) with the "
                             "completeness error in the sidecar", _ig_options, _ig_parameters,
                       _ig_run)
