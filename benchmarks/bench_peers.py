"""caffelrp next to PyTorch, zennit and Captum on the same nets with the same weights, in one run.

    /work/venv-peers/bin/python benchmarks/bench_peers.py [--models caffenet googlenet vgg16]
        [--repeats 5] [--threads 2] [--ig-steps 50] [--skip-ig] [--write FILE]

The peers are benchmark-only dependencies (``pip install caffelrp[bench]`` or a separate venv with
torch, zennit and captum). PyTorch gets each net as a module graph built from caffelrp's own
parsed Caffe definition (Convolution, ReLU, Pooling with Caffe's ceil-mode output size, LRN,
InnerProduct, Concat, Softmax; Dropout, the identity at test time, as an alias) with caffelrp's seeded random weights copied
in, so both run the same arithmetic shapes. Both libraries use ``--threads`` threads. Every
figure is the median of ``--repeats`` runs after one warm-up, per image, caffelrp and its peer
measured in turns.

Rows: forward at batch 1 and 8; the input gradient of the top-1 logit at batch 1; formula 100
(alpha-beta on convolutions, epsilon on inner products) with beta 0 against zennit's
EpsilonPlusFlat and with beta 1 against EpsilonAlpha2Beta1, at batch 1 and 8; the epsilon rule
(formula 0) against Captum's LRP; Integrated Gradients with ``--ig-steps`` fixed steps against
Captum's IntegratedGradients (its default: all steps in one batch). The rules are close, not the
same (zennit's first layer is flat / z^B, caffelrp's composite keeps alpha-beta), so the rows
compare costs of the same kind of pass, not identical numbers.

zennit 0.5 imports torchvision for its ResNet canonizers; where torchvision cannot be loaded
(a CPU torch wheel next to a torchvision built for another one) a stub with the two class names
stands in: nothing here uses them.
"""
import argparse
import importlib
import os
import statistics
import sys
import tempfile
import time
import types

import numpy as np

from common import MEAN_BGR, MODELS, command, emit, load_average, random_input, seeded_net

import caffelrp
from caffelrp.attribution.backward import output_blob
from caffelrp.layers.pooling import MAX


def _import_peers():
    try:
        importlib.import_module("torchvision")
    except Exception:       # no usable torchvision: the names zennit imports, unused here
        stub = types.ModuleType("torchvision")
        models = types.ModuleType("torchvision.models")
        resnet = types.ModuleType("torchvision.models.resnet")
        resnet.Bottleneck = type("Bottleneck", (), {})
        resnet.BasicBlock = type("BasicBlock", (), {})
        stub.models, models.resnet = models, resnet
        sys.modules.update({"torchvision": stub, "torchvision.models": models,
                            "torchvision.models.resnet": resnet})
    import torch
    import captum.attr
    import zennit.composites
    import zennit.attribution
    return torch, captum.attr, zennit


# ---------------------------------------------------------------------- the PyTorch graph
def torch_graph(net, torch):
    """An nn.Module running ``net``'s layers (by top/bottom names) with its weights."""
    nn = torch.nn

    class Concat(nn.Module):
        def forward(self, *xs):
            return torch.cat(xs, dim=1)

    class FlatLinear(nn.Linear):
        """Caffe's InnerProduct: flattens its input (one module, so the LRP hooks see it)."""
        def forward(self, x):
            return super().forward(x.reshape(x.shape[0], -1))

    class Graph(nn.Module):
        def __init__(self):
            super().__init__()
            self.steps = []
            self.mods = nn.ModuleDict()
            for layer, bottoms, tops in zip(net._layers, net._bottom_ids, net._top_ids):
                if layer.is_input:
                    continue
                name = "m%03d" % len(self.steps)
                if layer.type in ("Dropout", "Split"):   # the identity (at test time): aliases
                    self.steps.append((None, list(bottoms), list(tops)))
                    continue
                self.mods[name] = self._module(layer)
                self.steps.append((name, list(bottoms), list(tops)))
            self.input_id = net._inputs[0][1]
            self.output_id = tops[0]

        def _module(self, layer):
            t = layer.type
            if t == "Convolution":
                g = layer.geometry
                w = layer.blobs[0]
                conv = nn.Conv2d(w.shape[1] * layer.group, w.shape[0], (g.kh, g.kw),
                                 stride=(g.sh, g.sw), padding=(g.ph, g.pw),
                                 dilation=(g.dh, g.dw), groups=layer.group,
                                 bias=layer.bias_term)
                conv.weight.data = torch.from_numpy(np.array(w))
                if layer.bias_term:
                    conv.bias.data = torch.from_numpy(np.array(layer.blobs[1]))
                return conv
            if t == "InnerProduct":
                w = layer.weight_matrix()
                lin = FlatLinear(w.shape[1], w.shape[0], bias=layer.bias_term)
                lin.weight.data = torch.from_numpy(np.ascontiguousarray(w))
                if layer.bias_term:
                    lin.bias.data = torch.from_numpy(np.array(layer.blobs[1]))
                return lin
            if t == "ReLU":
                return nn.ReLU()
            if t == "LRN":
                return nn.LocalResponseNorm(layer.size, alpha=layer.alpha, beta=layer.beta,
                                            k=layer.k)
            if t == "Pooling":
                (kh, kw) = layer.window(*layer.bottom_shapes[0][2:])[0]
                if layer.method == MAX:    # Caffe's ceil-mode output size
                    return nn.MaxPool2d((kh, kw), layer.stride, layer.pad, ceil_mode=True)
                return nn.AvgPool2d((kh, kw), layer.stride, layer.pad, ceil_mode=True)
            if t == "Concat":
                return Concat()
            if t == "Softmax":
                return nn.Softmax(dim=1)
            raise NotImplementedError("no PyTorch module for %s" % t)

        def forward(self, x, logits=True):
            values = {self.input_id: x}
            for name, bottoms, tops in self.steps:
                if name is None:
                    values.update((t, values[bottoms[0]]) for t in tops)
                    continue
                module = self.mods[name]
                if logits and isinstance(module, nn.Softmax):
                    return values[bottoms[0]]
                values[tops[0]] = module(*[values[b] for b in bottoms])
            return values[self.output_id]

    return Graph().eval()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--ig-steps", type=int, default=50)
    parser.add_argument("--skip-ig", action="store_true")
    parser.add_argument("--rows", nargs="+", metavar="PREFIX",
                        help="only the rows whose name starts with one of these (e.g. forward "
                        "gradient)")
    parser.add_argument("--write")
    args = parser.parse_args()
    torch, cattr, zennit = _import_peers()
    torch.set_num_threads(args.threads)
    caffelrp.set_num_threads(args.threads)
    loads = [load_average()]
    rows = []
    auto_notes = []
    with tempfile.TemporaryDirectory() as folder:
        for key in args.models:
            net = seeded_net(key, folder)
            model = torch_graph(net, torch)
            for p in model.parameters():
                p.requires_grad_(False)
            x1, x8 = random_input(net, 1, seed=1), random_input(net, 8, seed=8)
            t1, t8 = torch.from_numpy(x1), torch.from_numpy(x8)
            top1 = int(np.argmax(net.forward(x1)[net.outputs[0]]))
            # the same arithmetic: the two nets' logits agree to float32 rounding
            ours = net._values[output_blob(net, "logit")].reshape(-1)
            with torch.no_grad():
                theirs = model(t1).numpy().reshape(-1)
            agreement = float(np.abs(ours - theirs).max() / np.abs(ours).max())
            print("%s: logits agree to %.1e (relative to the largest)" % (key, agreement))

            def torch_forward(t):
                with torch.no_grad():
                    return model(t)

            def torch_gradient(t):
                t = t.clone().requires_grad_(True)
                out = model(t)
                out[:, top1].sum().backward()
                return t.grad

            def zennit_pass(t, composite):
                t = t.clone().requires_grad_(True)
                with zennit.attribution.Gradient(model=model, composite=composite) as attr:
                    out, rel = attr(t, torch.eye(out_classes)[[top1] * t.shape[0]])
                return rel

            out_classes = int(np.prod(net.blob_shapes[net.outputs[0]][1:]))
            captum_lrp = cattr.LRP(model)

            def captum_epsilon(t):
                # Captum has rules for convolutions, pooling and ReLU (and drops every rule after
                # a call); LRN and Concat pass relevance on unchanged, the flattening inner
                # products take epsilon (Captum looks its rules up by exact module type)
                from captum.attr._utils.lrp_rules import EpsilonRule, IdentityRule
                known = (torch.nn.Conv2d, torch.nn.ReLU, torch.nn.MaxPool2d, torch.nn.AvgPool2d)
                for module in model.mods.values():
                    if isinstance(module, torch.nn.Linear):
                        module.rule = EpsilonRule()
                    elif not isinstance(module, known):
                        module.rule = IdentityRule()
                return captum_lrp.attribute(t.clone().requires_grad_(True), target=top1)

            base1 = torch.from_numpy(np.broadcast_to(-MEAN_BGR.reshape(1, 3, 1, 1),
                                                     x1.shape).copy())
            cases = [
                ("forward b1", 1, lambda: net.forward(x1), lambda: torch_forward(t1),
                 "PyTorch"),
                ("forward b8", 8, lambda: net.forward(x8), lambda: torch_forward(t8),
                 "PyTorch"),
                ("gradient b1", 1, lambda: net.gradient(x1, target=top1),
                 lambda: torch_gradient(t1), "PyTorch"),
                ("gradient b8", 8, lambda: net.gradient(x8, target=top1),
                 lambda: torch_gradient(t8), "PyTorch"),
                ("f100 beta 0 b1", 1, lambda: net.relevance(x1, rule=100, beta=0.0, target=top1),
                 lambda: zennit_pass(t1, zennit.composites.EpsilonPlusFlat()),
                 "zennit EpsilonPlusFlat"),
                ("f100 beta 1 b1", 1, lambda: net.relevance(x1, rule=100, beta=1.0, target=top1),
                 lambda: zennit_pass(t1, zennit.composites.EpsilonAlpha2Beta1()),
                 "zennit EpsilonAlpha2Beta1"),
                ("f100 beta 1 b8", 8, lambda: net.relevance(x8, rule=100, beta=1.0, target=top1),
                 lambda: zennit_pass(t8, zennit.composites.EpsilonAlpha2Beta1()),
                 "zennit EpsilonAlpha2Beta1"),
                ("epsilon b1", 1, lambda: net.relevance(x1, rule=0, eps=1.0, target=top1),
                 lambda: captum_epsilon(t1),
                 "Captum LRP"),
            ]

            def ig(steps):
                return net.integrated_gradients(x1, target=top1, baseline="black",
                                                mean=MEAN_BGR, steps=steps, tol=0.05)

            def captum_ig():
                return cattr.IntegratedGradients(model).attribute(
                    t1, baselines=base1, target=top1, n_steps=args.ig_steps)
            auto_row = "IG auto (5 %%) b1 vs %d steps" % args.ig_steps
            if not args.skip_ig:
                cases.append(("IG %d steps b1" % args.ig_steps, 1, lambda: ig(args.ig_steps),
                              captum_ig, "Captum IntegratedGradients"))
                # target 4's second half: steps="auto" to a 5 % completeness error in at most
                # half of Captum's fixed-step time
                cases.append((auto_row, 1, lambda: ig("auto"), captum_ig,
                              "Captum IntegratedGradients"))
            if args.rows:
                cases = [c for c in cases if c[0].startswith(tuple(args.rows))]
            if any(c[0] == auto_row for c in cases):
                info = ig("auto")[1][0]
                auto_notes.append("%s: steps=\"auto\" took m = %d (%d gradients), completeness "
                                  "error %.1f %%" % (key, info["steps"], info["evaluations"],
                                                     100 * info["completeness_error"]))
            for what, batch, mine, theirs, peer in cases:
                mine()
                try:
                    theirs()
                except Exception as e:   # e.g. Captum's LRP on GoogLeNet's branches
                    rows.append((key, what, peer, None, "%s: %s" % (type(e).__name__,
                                                                   str(e)[:60]), agreement))
                    print("%s %s: %s fails: %s" % (key, what, peer, rows[-1][4]), flush=True)
                    continue
                times = ([], [])
                for _ in range(args.repeats):
                    for k, fn in enumerate((mine, theirs)):
                        t = time.perf_counter()
                        fn()
                        times[k].append(time.perf_counter() - t)
                a, b = (statistics.median(t) / batch for t in times)
                rows.append((key, what, peer, a, b, agreement))
                loads.append(load_average())
                print("%s %s: %.1f / %.1f ms = %.2f" % (key, what, 1e3 * a, 1e3 * b, a / b),
                      flush=True)
    lines = ["## caffelrp next to PyTorch / zennit / Captum (issue 17)", "",
             "Command: `%s` with `%s` (torch %s, threads %d; medians of %d in turns, per image; "
             "load average %s during the run)." % (
                 command(__file__), os.path.basename(sys.executable), torch.__version__,
                 args.threads, args.repeats, "/".join("%.1f" % v for v in loads)), "",
             "| model | what | peer | caffelrp ms | peer ms | ratio |", "|---|---|---|---|---|---|"]
    for key, what, peer, a, b, _ in rows:
        if a is None:
            lines.append("| %s | %s | %s | | fails (%s) | |" % (key, what, peer, b))
            continue
        lines.append("| %s | %s | %s | %.1f | %.1f | %s%.2f%s |" % (
            key, what, peer, 1e3 * a, 1e3 * b, "**" if a > b else "", a / b,
            "**" if a > b else ""))
    if auto_notes:
        lines += ["", "IG auto: " + "; ".join(auto_notes) + "."]
    agreements = {key: agreement for key, _, _, _, _, agreement in rows}
    lines += ["", "Same weights, same arithmetic: the logits of the PyTorch graph and of caffelrp "
              "agree to %s (largest difference / largest logit)." % ", ".join(
                  "%s %.0e" % kv for kv in agreements.items()), ""]
    emit(lines, args.write)


if __name__ == "__main__":
    main()
