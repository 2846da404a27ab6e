"""Integrated Gradients cost per step next to one forward + backward pass.

    python benchmarks/bench_ig.py [--models caffenet vgg16] [--steps 50] [--repeats 3]
                                  [--threads 2] [--memory-budget 2G] [--write FILE]

Seeded random (He-scaled) weights, one random image, baseline black (= -mean). The reference is
the median time of ``net.gradient`` on one image (forward + backward at batch 1), measured in
turns with IG (5 gradient calls, then one IG run, ``--repeats`` times); IG with m fixed
steps (riemann-midpoint) costs m gradient evaluations plus two forward passes (F(x), F(x')), run
in batches bounded by the memory budget. "ratio" = (IG time / m) / (forward + backward time):
at most 1.2 is the target (the batching works). Peak memory is this process's VmHWM after the run.
"""
import argparse
import os
import tempfile

from common import (MEAN_BGR, MODELS, command, emit, input_shape, interleaved_medians,
                    peak_rss_gb, random_input, seeded_net)

import caffelrp
from caffelrp.attribution.backward import batch_size


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["caffenet", "vgg16"],
                        choices=list(MODELS))
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--memory-budget", default="2G")
    parser.add_argument("--write")
    args = parser.parse_args()
    caffelrp.set_num_threads(args.threads)
    lines = ["## Integrated Gradients (issue 5)", "",
             "Command: `%s` (threads: %d; medians; IG with m = %d riemann-midpoint steps, "
             "baseline black)." % (command(__file__), args.threads, args.steps), "",
             "| model | forward + backward s (batch 1) | IG s | IG per step s | ratio | batch "
             "| completeness error | peak RSS GB |", "|---|---|---|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as folder:
        for key in args.models:
            net = seeded_net(key, folder)
            c, h, w = input_shape(net)
            x = random_input(net)
            result = {}

            def run_fb():
                net.gradient(x, target="top1")

            def run_ig():
                result["info"] = net.integrated_gradients(
                    x, target="top1", baseline="black", mean=MEAN_BGR, steps=args.steps,
                    memory_budget=args.memory_budget)[1]
            t_fb, t_ig = interleaved_medians([run_fb, run_ig], args.repeats, inner=5)
            per_step = t_ig / args.steps
            row = "| %s | %.4f | %.3f | %.4f | %.2f | %d | %.4f | %.2f |" % (
                key, t_fb, t_ig, per_step, per_step / t_fb,
                batch_size(net, (c, h, w), args.memory_budget),
                result["info"][0]["completeness_error"], peak_rss_gb())
            lines.append(row)
            print(row, flush=True)
    emit(lines, args.write)


if __name__ == "__main__":
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    main()
