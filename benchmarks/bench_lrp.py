"""LRP relevance passes next to the forward pass alone, and the original's per-image times.

    python benchmarks/bench_lrp.py [--repeats 5] [--models caffenet googlenet vgg16]
                                   [--rules 100 2] [--betas 0 1] [--batches 1 8] [--write FILE]

Seeded random (He-scaled) weights, random inputs; medians of ``--repeats`` runs after a warm-up,
all in one process; per model the forward pass and every rule/beta variant at every batch size are
measured in turns (so that the machine's drift meets them alike). The original's times
(TIMINGS.md, batch 1, forward + backward) are quoted next to ours per image.
"""
import argparse

import numpy as np

from common import MODELS, command, emit, input_shape, interleaved_medians, seeded_net

import caffelrp

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
             "Command: `%s` (threads: %d; medians)." % (
                 command(__file__), caffelrp.get_num_threads()), "",
             "| model | batch | rule | beta | forward s | forward + relevance s | ratio | per image s "
             "| per image vs batch %d | original per image s | speed-up vs original |"
             % args.batches[0], "|---|---|---|---|---|---|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as folder:
        for key in args.models:
            net = seeded_net(key, folder)
            c, h, w = input_shape(net)
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
    emit(lines, args.write)


if __name__ == "__main__":
    main()
