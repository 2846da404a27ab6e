"""LRP relevance passes next to the forward pass alone, and the original's per-image times.

    python benchmarks/bench_lrp.py [--repeats 5] [--models caffenet googlenet vgg16]
                                   [--rules 100 2] [--betas 0 1] [--batches 1 8] [--write FILE]

Seeded random (He-scaled) weights, random inputs; medians of ``--repeats`` runs after a warm-up,
all in one process; per model the forward pass and every rule/beta variant at every batch size are
measured in turns (so that the machine's drift meets them alike). The original's times
(TIMINGS.md, batch 1, forward + backward) are quoted next to ours per image.
"""
import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
sys.path.insert(0, str(REPO))  # run from a checkout without installing

import caffelrp  # noqa: E402
from bench_forward import MODELS, interleaved_medians, random_layers  # noqa: E402
from caffelrp.io.caffemodel import write_caffemodel  # noqa: E402

# ../shared/reference/TIMINGS.md, median fwd + bwd seconds per image (batch 1): beta 0 from the
# clean pass, beta 1 (the demonstrator's shipped setting) from the second pass.
ORIGINAL = {("caffenet", 100, 0): 0.043 + 0.169, ("caffenet", 2, 0): 0.043 + 0.873,
            ("googlenet", 100, 0): 0.088 + 0.409, ("googlenet", 2, 0): 0.088 + 0.434,
            ("vgg16", 100, 0): 0.352 + 2.483, ("vgg16", 2, 0): 0.342 + 3.832,
            ("caffenet", 100, 1): 0.054 + 0.274, ("caffenet", 2, 1): 0.048 + 0.949,
            ("googlenet", 100, 1): 0.115 + 0.649, ("googlenet", 2, 1): 0.085 + 0.570,
            ("vgg16", 100, 1): 0.369 + 3.764, ("vgg16", 2, 1): 0.435 + 5.809}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--rules", nargs="+", type=int, default=[100, 2])
    parser.add_argument("--betas", nargs="+", type=float, default=[0.0, 1.0])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--write")
    args = parser.parse_args()
    import tempfile
    lines = ["## LRP relevance (issue 3)", "",
             "Command: `python benchmarks/bench_lrp.py %s` (threads: %d; medians)." % (
                 " ".join(sys.argv[1:]), caffelrp.get_num_threads()), "",
             "| model | batch | rule | beta | forward s | forward + relevance s | ratio | per image s "
             "| per image vs batch %d | original per image s | speed-up vs original |"
             % args.batches[0], "|---|---|---|---|---|---|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as folder:
        for key in args.models:
            directory, fmt = MODELS[key]
            prototxt = REPO / "models" / directory / "deploy.prototxt"
            weights = Path(folder) / (key + ".caffemodel")
            write_caffemodel(weights, random_layers(caffelrp.Net(prototxt)), fmt=fmt)
            net = caffelrp.Net(prototxt, weights)
            c, h, w = net.blob_shapes[net.inputs[0]][1:]
            variants = [(rule, beta) for rule in args.rules for beta in args.betas]
            cases, runs = [], []   # every batch size and variant in the same turns
            for batch in args.batches:
                x = np.random.default_rng(batch).uniform(-120, 130, (batch, c, h, w)).astype(
                    np.float32)
                cases.append((batch, None))
                runs.append(lambda x=x: net.forward(x))
                for rule, beta in variants:
                    cases.append((batch, (rule, beta)))
                    runs.append(lambda x=x, rule=rule, beta=beta: net.relevance(
                        x, rule=rule, eps=1.0, beta=beta))
            times = dict(zip(cases, interleaved_medians(runs, args.repeats)))
            first = args.batches[0]
            for batch in args.batches:
                t_fwd = times[(batch, None)]
                for rule, beta in variants:
                    t_rel = times[(batch, (rule, beta))]
                    per_image = t_rel / batch
                    orig = ORIGINAL.get((key, rule, beta))
                    row = "| %s | %d | %d | %g | %.4f | %.4f | %.2f | %.4f | %.2f | %s | %s |" % (
                        key, batch, rule, beta, t_fwd, t_rel, t_rel / t_fwd, per_image,
                        per_image / (times[(first, (rule, beta))] / first),
                        "%.3f" % orig if orig else "-",
                        "%.1fx" % (orig / per_image) if orig else "-")
                    lines.append(row)
                    print(row, flush=True)
    text = "\n".join(lines) + "\n"
    print(text)
    if args.write:
        Path(args.write).write_text(text)


if __name__ == "__main__":
    main()
